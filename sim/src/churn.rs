// SPDX-License-Identifier: MPL-2.0
//! A simulated population of encoder hosts and their churn: who they are, when they drop
//! out, when they come back, and how many GOPs they botch on the way.
//!
//! The swarm simulator drives it one host and one step at a time ([`SimHost::step`]), and
//! [`history`] runs it over days to make labelled training data for the learned stability
//! model (`gopswarm_orchestrator::learn`).
//!
//! The model is deliberately *richer* than what the hand-weighted stability score
//! (`gopswarm_orchestrator::score::stability`) looks at, so that a learned model has something to find
//! and a comparison between the two means something:
//!
//! * every host has a hidden **frailty** (a log-normal multiplier of its hazard and of its GOP
//!   failure rate). Nothing the orchestrator measures shows it directly; only the history
//!   it leaves behind (disconnects per hour online, failed GOPs) does.
//! * the hazard has **interactions** the additive score cannot express: wifi hosts are far
//!   flakier in their local evening (home networks are busy), laptops in the night (lids
//!   close), and a host running its slots above 90% fails more, most of all when its join
//!   benchmark left little headroom.
//! * disconnects are **bursty**: a host that just came back is likelier to drop again soon.
//! * hosts outside the home region live in other time zones, which the orchestrator does not
//!   know, so their evening does not line up with the swarm's clock.
//!
//! All randomness comes from the caller's RNG (and its [`Fate`] draws, where it passes
//! them), so a seeded RNG gives a reproducible run.

pub use gopswarm_orchestrator::learn::{MINUTES_PER_DAY, Sample};
use gopswarm_orchestrator::score::{DeviceClass, NetInterface, StabilityInputs};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Frames per second the reference encode profile needs for real time.
pub const REALTIME_FPS: f64 = 30.0;

/// Length of one GOP in seconds of video: a busy slot encodes one GOP per this many seconds.
pub const GOP_SECONDS: f64 = 2.0;

/// The static attributes of one simulated host, drawn once when it is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostProfile {
    pub device_class: DeviceClass,
    pub interface: NetInterface,
    /// Whether the host sits in the swarm's home region (and time zone).
    pub home_region: bool,
    /// Offset of the host's local clock from the swarm's clock, minutes. Zero at home; the
    /// orchestrator does not know it, it only learns whether the host is at home.
    pub utc_offset_minutes: i32,
    /// True uplink bandwidth, Mbit/s.
    pub bandwidth_mbps: f64,
    /// Typical round trip to the orchestrator on a quiet network, ms.
    pub base_rtt_ms: f64,
    /// Typical jitter (mean absolute deviation of round trips) on a quiet network, ms.
    pub base_jitter_ms: f64,
    /// Processing power: frames per second of the reference profile.
    pub bench_fps: f64,
    /// Frames per second the reference profile needs for real time.
    pub realtime_fps: f64,
    /// How many encode tasks the host runs at once.
    pub capacity_slots: u32,
    /// Hidden multiplier of the disconnect hazard and GOP failure rate (mean 1). Simulator
    /// ground truth: it never reaches [`StabilityInputs`].
    pub frailty: f64,
}

/// What a host did in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepEvent {
    /// Nothing changed: still online, or still away.
    None,
    /// First connection of a new host (its first session).
    Joined,
    /// Dropped out; it will come back after a downtime.
    Disconnected,
    /// Came back after a downtime: a new session.
    Reconnected,
    /// Dropped out and will never come back.
    Left,
}

impl StepEvent {
    /// Whether the host went away in this step (for good or not).
    pub fn is_disconnect(self) -> bool {
        matches!(self, StepEvent::Disconnected | StepEvent::Left)
    }
}

/// What one step produced: the host's event and the GOPs it encoded while online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOutcome {
    pub event: StepEvent,
    /// GOPs finished in this step (failed ones included).
    pub gops_encoded: u64,
    /// GOPs whose encode failed in this step. GOPs lost because the host disconnected are not
    /// counted here: the simulator reassigns those itself.
    pub failed_gops: u64,
}

/// The changing state of one simulated host: whether it is online and the history the
/// orchestrator persists about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    pub online: bool,
    /// Gone for good.
    pub left: bool,
    /// Minutes until an offline host (re)connects.
    pub minutes_until_connect: f64,
    pub sessions: u64,
    pub disconnects: u64,
    pub online_hours: f64,
    pub gops_encoded: u64,
    pub failed_gops: u64,
    /// Disconnects with exponentially fading memory (time constant
    /// [`RECENT_DISCONNECT_MEMORY_MINUTES`]): what makes disconnects bursty.
    pub recent_disconnects: f64,
    /// The join benchmark of the current (or last) session, as measured; `None` before the
    /// first join.
    pub bench_fps_at_join: Option<f64>,
}

/// Time constant of [`HostState::recent_disconnects`], minutes.
pub const RECENT_DISCONNECT_MEMORY_MINUTES: f64 = 180.0;

impl HostState {
    /// A host that is not connected yet and joins after `minutes`.
    pub fn joining_in(minutes: f64) -> HostState {
        HostState {
            online: false,
            left: false,
            minutes_until_connect: minutes.max(0.0),
            sessions: 0,
            disconnects: 0,
            online_hours: 0.0,
            gops_encoded: 0,
            failed_gops: 0,
            recent_disconnects: 0.0,
            bench_fps_at_join: None,
        }
    }
}

/// A step's length in minutes: never negative, 0 for nonsense.
fn step_minutes(dt_minutes: f64) -> f64 {
    if dt_minutes.is_finite() {
        dt_minutes.max(0.0)
    } else {
        0.0
    }
}

/// `recent` disconnects after `dt` minutes of fading memory.
fn faded(recent: f64, dt: f64) -> f64 {
    recent * (-dt / RECENT_DISCONNECT_MEMORY_MINUTES).exp()
}

/// The uniform draws, each in [0, 1), that decide a host's churn for one step: whether it
/// drops out (`drop` below its chance of dropping), when in the step (`moment`), whether it
/// leaves for good (`leave`) and how long it stays away (`downtime`, through the inverse
/// of the downtime distribution).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fate {
    pub drop: f64,
    pub moment: f64,
    pub leave: f64,
    pub downtime: f64,
}

impl Fate {
    /// Always four draws, whatever the host does, so a host's fate stream stays in step
    /// across runs.
    pub fn draw<R: Rng + ?Sized>(rng: &mut R) -> Fate {
        Fate {
            drop: rng.random(),
            moment: rng.random(),
            leave: rng.random(),
            downtime: rng.random(),
        }
    }
}

/// A simulated host: its fixed profile and its changing state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimHost {
    pub profile: HostProfile,
    pub state: HostState,
}

impl SimHost {
    /// A random host that connects on its first step.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> SimHost {
        SimHost {
            profile: HostProfile::random(rng),
            state: HostState::joining_in(0.0),
        }
    }

    /// Chance that [`SimHost::step`] with these arguments has the host drop out (0 for a host
    /// offline or gone): what the step's draw decides, for estimates without its luck.
    pub fn drop_probability(
        &self,
        minute_of_day: usize,
        load_fraction: f64,
        dt_minutes: f64,
    ) -> f64 {
        if self.state.left || !self.state.online {
            return 0.0;
        }
        let dt = step_minutes(dt_minutes);
        let state = HostState {
            recent_disconnects: faded(self.state.recent_disconnects, dt),
            ..self.state.clone()
        };
        disconnect_probability(
            &self.profile,
            &state,
            minute_of_day,
            clamp_fraction(load_fraction),
            dt,
        )
    }

    /// Advances the host by `dt_minutes` starting at `minute_of_day` (swarm clock, 0..1440),
    /// with `load_fraction` of its slots busy (0..1). Cheap: a handful of `exp` calls and
    /// random draws, so the simulator can call it for every host at every step.
    ///
    /// Whether the host drops out is decided from the hazard at the start of the step, so
    /// steps should be short next to the hazard's swings (minutes, not hours).
    pub fn step<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        minute_of_day: usize,
        load_fraction: f64,
        dt_minutes: f64,
    ) -> StepOutcome {
        self.advance(rng, None, minute_of_day, load_fraction, dt_minutes)
    }

    /// [`SimHost::step`] with whether, when and for how long the host drops out decided by
    /// `fate` instead of `rng`. Two runs that give a host the same fates each step see it
    /// drop out at the same moments wherever their hazards agree (common random numbers):
    /// what differs between them is then what their policies did, not which hosts happened
    /// to die. `rng` still draws everything else (GOP failures, join benchmarks).
    pub fn step_with_fate<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        fate: &Fate,
        minute_of_day: usize,
        load_fraction: f64,
        dt_minutes: f64,
    ) -> StepOutcome {
        self.advance(rng, Some(fate), minute_of_day, load_fraction, dt_minutes)
    }

    fn advance<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        fate: Option<&Fate>,
        minute_of_day: usize,
        load_fraction: f64,
        dt_minutes: f64,
    ) -> StepOutcome {
        let dt = step_minutes(dt_minutes);
        let load = clamp_fraction(load_fraction);
        let mut outcome = StepOutcome {
            event: StepEvent::None,
            gops_encoded: 0,
            failed_gops: 0,
        };
        if self.state.left {
            return outcome;
        }
        self.state.recent_disconnects = faded(self.state.recent_disconnects, dt);
        if !self.state.online {
            self.state.minutes_until_connect -= dt;
            if self.state.minutes_until_connect <= 0.0 {
                self.state.online = true;
                self.state.sessions += 1;
                self.state.bench_fps_at_join = Some(measure(rng, self.profile.bench_fps, 0.05));
                outcome.event = if self.state.sessions == 1 {
                    StepEvent::Joined
                } else {
                    StepEvent::Reconnected
                };
            }
            return outcome;
        }

        let p_drop = disconnect_probability(&self.profile, &self.state, minute_of_day, load, dt);
        let drops = match fate {
            Some(f) => f.drop < p_drop,
            None => rng.random_bool(p_drop),
        };
        // A host that drops out was online for a random part of the step.
        let online_minutes = if drops {
            dt * fate.map_or_else(|| rng.random::<f64>(), |f| f.moment)
        } else {
            dt
        };
        self.state.online_hours += online_minutes / 60.0;
        let (encoded, failed) = encode_gops(rng, &self.profile, load, online_minutes);
        self.state.gops_encoded += encoded;
        self.state.failed_gops += failed;
        outcome.gops_encoded = encoded;
        outcome.failed_gops = failed;
        if drops {
            self.state.online = false;
            self.state.disconnects += 1;
            self.state.recent_disconnects += 1.0;
            let p_leave = leave_probability(&self.profile);
            let leaves = match fate {
                Some(f) => f.leave < p_leave,
                None => rng.random_bool(p_leave),
            };
            if leaves {
                self.state.left = true;
                outcome.event = StepEvent::Left;
            } else {
                let mean = mean_downtime_minutes(self.profile.device_class);
                self.state.minutes_until_connect = match fate {
                    Some(f) => exponential_at(f.downtime, mean),
                    None => exponential(rng, mean),
                };
                outcome.event = StepEvent::Disconnected;
            }
        }
        outcome
    }

    /// What the orchestrator knows about this host now; see [`stability_inputs`].
    pub fn stability_inputs<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        minute_of_day: usize,
    ) -> StabilityInputs {
        stability_inputs(&self.profile, &self.state, minute_of_day, rng)
    }
}

impl HostProfile {
    /// Draws a host from the population mix: many laptops and desktops on home networks,
    /// few servers, some embedded boards; the interface and the network follow the device.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> HostProfile {
        use DeviceClass::*;
        use NetInterface::*;
        let device_class = pick(
            rng,
            &[
                (Server, 0.10),
                (Desktop, 0.35),
                (Laptop, 0.40),
                (Embedded, 0.15),
            ],
        );
        let interface = match device_class {
            Server => pick(rng, &[(Ethernet, 0.95), (Wifi, 0.05)]),
            Desktop => pick(rng, &[(Ethernet, 0.65), (Wifi, 0.35)]),
            Laptop => pick(rng, &[(Ethernet, 0.15), (Wifi, 0.75), (Cellular, 0.10)]),
            _ => pick(rng, &[(Ethernet, 0.35), (Wifi, 0.45), (Cellular, 0.20)]),
        };
        let home_region = rng.random_bool(0.7);
        let utc_offset_minutes = if home_region {
            0
        } else {
            let hours = rng.random_range(3..=9) * if rng.random_bool(0.5) { 1 } else { -1 };
            hours * 60
        };
        let (bandwidth_median, jitter_median, access_rtt) = match interface {
            Ethernet => (100.0, 1.5, 2.0),
            Wifi => (35.0, 6.0, 8.0),
            _ => (12.0, 18.0, 35.0),
        };
        let distance_rtt = if home_region {
            rng.random_range(8.0..35.0)
        } else {
            rng.random_range(60.0..180.0)
        };
        let (bench_median, capacity_slots) = match device_class {
            Server => (240.0, 8),
            Desktop => (120.0, 4),
            Laptop => (60.0, 2),
            _ => (24.0, 1),
        };
        // Log-normal with mean 1: exp(N(-s^2/2, s)).
        let frailty_sigma: f64 = 0.8;
        let frailty = (frailty_sigma * standard_normal(rng) - frailty_sigma.powi(2) / 2.0).exp();
        HostProfile {
            device_class,
            interface,
            home_region,
            utc_offset_minutes,
            bandwidth_mbps: log_normal(rng, bandwidth_median, 0.6),
            base_rtt_ms: distance_rtt + log_normal(rng, access_rtt, 0.4),
            base_jitter_ms: log_normal(rng, jitter_median, 0.5),
            bench_fps: log_normal(rng, bench_median, 0.3),
            realtime_fps: REALTIME_FPS,
            capacity_slots,
            frailty,
        }
    }

    /// The host's local time of day in minutes (0..1440) at `minute_of_day` swarm time.
    pub fn local_minute(&self, minute_of_day: usize) -> usize {
        (minute_of_day as i64 + self.utc_offset_minutes as i64).rem_euclid(MINUTES_PER_DAY as i64)
            as usize
    }
}

/// Local evening, 18:00 to 23:30, when home networks are busiest.
fn is_evening(local_minute: usize) -> bool {
    (18 * 60..23 * 60 + 30).contains(&local_minute)
}

/// Local night, 00:30 to 06:30, when laptops go to sleep.
fn is_night(local_minute: usize) -> bool {
    (30..6 * 60 + 30).contains(&local_minute)
}

/// Whether the host's network is congested now: wifi in its local evening.
fn congested(profile: &HostProfile, minute_of_day: usize) -> bool {
    profile.interface == NetInterface::Wifi && is_evening(profile.local_minute(minute_of_day))
}

/// The rate (per hour online) at which the host drops out, given the time of day (swarm
/// clock) and the fraction of its slots that are busy.
///
/// A product of multipliers on a per-device base rate, so that effects compound the way
/// they do in the field (a frail wifi laptop abroad is not merely the sum of its troubles).
pub fn disconnect_hazard_per_hour(
    profile: &HostProfile,
    state: &HostState,
    minute_of_day: usize,
    load_fraction: f64,
) -> f64 {
    let base = match profile.device_class {
        DeviceClass::Server => 0.006,
        DeviceClass::Desktop => 0.02,
        DeviceClass::Laptop => 0.05,
        DeviceClass::Embedded => 0.04,
        DeviceClass::Unknown => 0.03,
    };
    let interface = match profile.interface {
        NetInterface::Ethernet => 1.0,
        NetInterface::Wifi => 1.6,
        NetInterface::Cellular => 2.8,
        NetInterface::Unknown => 1.5,
    };
    let network = (1.0 + (profile.base_rtt_ms - 30.0).max(0.0) / 120.0)
        * (1.0 + profile.base_jitter_ms / 25.0)
        * (1.0 + 2.0 / profile.bandwidth_mbps.max(0.5));
    let region = if profile.home_region { 1.0 } else { 1.2 };
    let local = profile.local_minute(minute_of_day);
    let evening_wifi = if congested(profile, minute_of_day) {
        3.0
    } else {
        1.0
    };
    let sleeping_laptop = if profile.device_class == DeviceClass::Laptop && is_night(local) {
        2.5
    } else {
        1.0
    };
    let load = clamp_fraction(load_fraction);
    let overload = if load > 0.9 {
        // Little headroom in the join benchmark makes a full host run hot.
        let deficit = clamp_fraction(1.0 - profile.bench_fps / (2.0 * profile.realtime_fps));
        2.0 + 2.0 * deficit
    } else {
        1.0 + 0.3 * load
    };
    let burst = 1.0 + 1.5 * state.recent_disconnects;
    base * interface
        * network
        * region
        * evening_wifi
        * sleeping_laptop
        * overload
        * burst
        * profile.frailty
}

/// Probability that an online host drops out within the next `interval_minutes`, at the
/// hazard of the interval's start.
pub fn disconnect_probability(
    profile: &HostProfile,
    state: &HostState,
    minute_of_day: usize,
    load_fraction: f64,
    interval_minutes: f64,
) -> f64 {
    let rate = disconnect_hazard_per_hour(profile, state, minute_of_day, load_fraction);
    clamp_fraction(1.0 - (-rate * interval_minutes.max(0.0) / 60.0).exp())
}

/// Chance that a disconnect is for good: volunteers uninstall, boards get unplugged. Frail
/// hosts are likelier to be abandoned.
fn leave_probability(profile: &HostProfile) -> f64 {
    (0.01 + 0.01 * profile.frailty).min(0.1)
}

/// Mean time an interrupted host stays away, minutes.
fn mean_downtime_minutes(device_class: DeviceClass) -> f64 {
    match device_class {
        DeviceClass::Server => 15.0,
        DeviceClass::Desktop => 45.0,
        DeviceClass::Laptop => 90.0,
        DeviceClass::Embedded => 30.0,
        DeviceClass::Unknown => 60.0,
    }
}

/// Probability that one GOP encode fails: rises with frailty, with a full host, and on
/// embedded boards.
pub fn gop_failure_probability(profile: &HostProfile, load_fraction: f64) -> f64 {
    let overload = if clamp_fraction(load_fraction) > 0.9 {
        4.0
    } else {
        1.0
    };
    let device = if profile.device_class == DeviceClass::Embedded {
        2.0
    } else {
        1.0
    };
    (0.002 * profile.frailty * overload * device).min(0.5)
}

/// GOPs encoded and failed by a host with `load_fraction` of its slots busy for `minutes`.
fn encode_gops<R: Rng + ?Sized>(
    rng: &mut R,
    profile: &HostProfile,
    load_fraction: f64,
    minutes: f64,
) -> (u64, u64) {
    let expected = load_fraction * profile.capacity_slots as f64 * minutes * 60.0 / GOP_SECONDS;
    // Round at random so that short steps still add up to the right count.
    let whole = expected.floor();
    let encoded = whole as u64 + u64::from(rng.random_bool((expected - whole).clamp(0.0, 1.0)));
    let failed = binomial(
        rng,
        encoded,
        gop_failure_probability(profile, load_fraction),
    );
    (encoded, failed)
}

/// What the orchestrator would know about the host at `minute_of_day`: what the host reports
/// (bandwidth, device, interface, region), what the orchestrator measures (round trips,
/// noisy, and worse while the host's wifi is congested), the join benchmark of the current
/// session, and the persisted history. Never the frailty, the time zone, or the hazard.
pub fn stability_inputs<R: Rng + ?Sized>(
    profile: &HostProfile,
    state: &HostState,
    minute_of_day: usize,
    rng: &mut R,
) -> StabilityInputs {
    let congestion = if congested(profile, minute_of_day) {
        2.0
    } else {
        1.0
    };
    let jitter = measure(rng, profile.base_jitter_ms * congestion, 0.25);
    StabilityInputs {
        bandwidth_mbps: Some(measure(rng, profile.bandwidth_mbps, 0.1)),
        // A median of pings lands above the quiet round trip by about the jitter.
        rtt_ms: Some(measure(rng, profile.base_rtt_ms, 0.08) + 0.5 * jitter),
        jitter_ms: Some(jitter),
        device_class: profile.device_class,
        bench_fps: state.bench_fps_at_join,
        realtime_fps: profile.realtime_fps,
        home_region: Some(profile.home_region),
        interface: profile.interface,
        sessions: state.sessions,
        disconnects: state.disconnects,
        online_hours: state.online_hours,
        gops_encoded: state.gops_encoded,
        failed_gops: state.failed_gops,
    }
}

/// The swarm's demand over the day, as the fraction of slots busy: peaks at 20:00 (live
/// events) at 0.85, lowest at 08:00 at 0.25.
pub fn swarm_demand(minute_of_day: usize) -> f64 {
    let from_peak = (minute_of_day as f64 - 20.0 * 60.0) / MINUTES_PER_DAY as f64;
    0.55 + 0.3 * (std::f64::consts::TAU * from_peak).cos()
}

/// Simulated time before the recorded span, so that the first samples already include hosts
/// with a history (minutes).
const WARMUP_MINUTES: f64 = 2.0 * MINUTES_PER_DAY as f64;

/// Simulates `hosts` hosts for `days` in steps of `interval_minutes` and returns one
/// [`Sample`] per online host per interval, host by host, in time order.
///
/// Hosts join at random times between two days before the recorded span and half way
/// through it, so the data mixes veterans with newcomers whose history says little. The
/// busy fraction of a host's slots follows [`swarm_demand`] (each slot busy with that
/// probability). Each host draws from its own seeded stream, so the data for a seed is the
/// same whatever the number of hosts. Nothing is returned for a non-positive span or interval.
pub fn history(seed: u64, hosts: usize, days: f64, interval_minutes: f64) -> Vec<Sample> {
    let mut samples = Vec::new();
    if !(interval_minutes > 0.0 && days > 0.0) {
        return samples;
    }
    let span_minutes = days * MINUTES_PER_DAY as f64;
    let warmup_steps = (WARMUP_MINUTES / interval_minutes).ceil() as usize;
    let recorded_steps = (span_minutes / interval_minutes).ceil() as usize;
    let warmup_minutes = warmup_steps as f64 * interval_minutes;
    for host in 0..hosts {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(host as u64);
        let profile = HostProfile::random(&mut rng);
        let join_after = rng.random_range(0.0..warmup_minutes + span_minutes / 2.0);
        let mut sim = SimHost {
            profile,
            state: HostState::joining_in(join_after),
        };
        for step in 0..warmup_steps + recorded_steps {
            let start_minute = step as f64 * interval_minutes;
            let minute_of_day = (start_minute as usize) % MINUTES_PER_DAY;
            let busy = binomial(
                &mut rng,
                u64::from(sim.profile.capacity_slots),
                swarm_demand(minute_of_day),
            );
            let load_fraction = busy as f64 / f64::from(sim.profile.capacity_slots);
            let recorded = (step >= warmup_steps && sim.state.online)
                .then(|| sim.stability_inputs(&mut rng, minute_of_day));
            let outcome = sim.step(&mut rng, minute_of_day, load_fraction, interval_minutes);
            if let Some(inputs) = recorded {
                samples.push(Sample {
                    host,
                    t_interval: step - warmup_steps,
                    inputs,
                    minute_of_day,
                    load_fraction,
                    label: outcome.event.is_disconnect(),
                });
            }
            if sim.state.left {
                break;
            }
        }
    }
    samples
}

fn clamp_fraction(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// A value as measured: `truth` times log-normal noise of spread `sigma`.
fn measure<R: Rng + ?Sized>(rng: &mut R, truth: f64, sigma: f64) -> f64 {
    truth * (sigma * standard_normal(rng)).exp()
}

fn log_normal<R: Rng + ?Sized>(rng: &mut R, median: f64, sigma: f64) -> f64 {
    median * (sigma * standard_normal(rng)).exp()
}

/// A standard normal draw (Box-Muller), to avoid a distributions crate for two uses.
fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    // 1 - u is in (0, 1], so the logarithm is finite.
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn exponential<R: Rng + ?Sized>(rng: &mut R, mean: f64) -> f64 {
    exponential_at(rng.random::<f64>(), mean)
}

/// The exponential draw with this mean for a uniform `u` in [0, 1).
fn exponential_at(u: f64, mean: f64) -> f64 {
    -mean * (1.0 - u).ln()
}

/// A binomial draw: exact for few trials, Poisson for rare events, normal otherwise. Exact
/// tails do not matter here, speed does (it runs per host per step).
fn binomial<R: Rng + ?Sized>(rng: &mut R, trials: u64, p: f64) -> u64 {
    let p = clamp_fraction(p);
    if trials == 0 || p == 0.0 {
        return 0;
    }
    if trials <= 16 {
        return (0..trials).filter(|_| rng.random_bool(p)).count() as u64;
    }
    let mean = trials as f64 * p;
    let draw = if mean < 20.0 && p < 0.1 {
        // Knuth: count uniforms until their product falls below exp(-mean).
        let limit = (-mean).exp();
        let mut product: f64 = rng.random();
        let mut count = 0u64;
        while product > limit {
            product *= rng.random::<f64>();
            count += 1;
        }
        count as f64
    } else {
        (mean + (mean * (1.0 - p)).sqrt() * standard_normal(rng)).round()
    };
    draw.clamp(0.0, trials as f64) as u64
}

/// Picks one of `choices` with probability proportional to its weight.
fn pick<T: Copy, R: Rng + ?Sized>(rng: &mut R, choices: &[(T, f64)]) -> T {
    let total: f64 = choices.iter().map(|(_, w)| w).sum();
    let mut target = rng.random::<f64>() * total;
    for &(choice, weight) in choices {
        if target < weight {
            return choice;
        }
        target -= weight;
    }
    choices[choices.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn ethernet_desktop() -> HostProfile {
        HostProfile {
            device_class: DeviceClass::Desktop,
            interface: NetInterface::Ethernet,
            home_region: true,
            utc_offset_minutes: 0,
            bandwidth_mbps: 100.0,
            base_rtt_ms: 20.0,
            base_jitter_ms: 1.0,
            bench_fps: 120.0,
            realtime_fps: REALTIME_FPS,
            capacity_slots: 4,
            frailty: 1.0,
        }
    }

    fn online_state() -> HostState {
        HostState {
            online: true,
            sessions: 1,
            ..HostState::joining_in(0.0)
        }
    }

    #[test]
    fn profiles_follow_the_population_mix() {
        let mut r = rng(1);
        let hosts: Vec<HostProfile> = (0..4000).map(|_| HostProfile::random(&mut r)).collect();
        let share = |f: &dyn Fn(&HostProfile) -> bool| {
            hosts.iter().filter(|h| f(h)).count() as f64 / hosts.len() as f64
        };
        assert!((share(&|h| h.device_class == DeviceClass::Laptop) - 0.40).abs() < 0.03);
        assert!((share(&|h| h.home_region) - 0.70).abs() < 0.03);
        let mean_frailty = hosts.iter().map(|h| h.frailty).sum::<f64>() / hosts.len() as f64;
        assert!((mean_frailty - 1.0).abs() < 0.06, "{mean_frailty}");
        for h in &hosts {
            let slots = match h.device_class {
                DeviceClass::Server => 8,
                DeviceClass::Desktop => 4,
                DeviceClass::Laptop => 2,
                _ => 1,
            };
            assert_eq!(h.capacity_slots, slots);
            assert!(h.bandwidth_mbps > 0.0 && h.base_rtt_ms > 0.0 && h.bench_fps > 0.0);
            assert_eq!(h.home_region, h.utc_offset_minutes == 0);
        }
    }

    #[test]
    fn hazard_reacts_to_the_hidden_and_nonlinear_effects() {
        let host = ethernet_desktop();
        let state = online_state();
        let hazard = |p: &HostProfile, s: &HostState, minute: usize, load: f64| {
            disconnect_hazard_per_hour(p, s, minute, load)
        };
        let noon = 12 * 60;
        let evening = 20 * 60;
        let base = hazard(&host, &state, noon, 0.5);

        let wifi = HostProfile {
            interface: NetInterface::Wifi,
            ..host.clone()
        };
        assert!(hazard(&wifi, &state, noon, 0.5) > base);
        assert!(
            hazard(&wifi, &state, evening, 0.5) > 2.5 * hazard(&wifi, &state, noon, 0.5),
            "wifi evenings are bad"
        );
        assert_eq!(
            hazard(&host, &state, evening, 0.5),
            base,
            "ethernet does not care"
        );

        assert!(hazard(&host, &state, noon, 1.0) > 1.5 * hazard(&host, &state, noon, 0.85));

        let frail = HostProfile {
            frailty: 3.0,
            ..host.clone()
        };
        assert!((hazard(&frail, &state, noon, 0.5) / base - 3.0).abs() < 1e-9);

        let just_back = HostState {
            recent_disconnects: 1.0,
            ..state.clone()
        };
        assert!(hazard(&host, &just_back, noon, 0.5) > 2.0 * base, "bursty");

        let far = HostProfile {
            base_rtt_ms: 150.0,
            base_jitter_ms: 20.0,
            ..host.clone()
        };
        assert!(hazard(&far, &state, noon, 0.5) > 1.5 * base);

        // An away host's evening follows its own clock.
        let away_wifi = HostProfile {
            home_region: false,
            utc_offset_minutes: 6 * 60,
            ..wifi.clone()
        };
        assert!(
            hazard(&away_wifi, &state, 14 * 60, 0.5)
                > 2.5 * hazard(&away_wifi, &state, 20 * 60, 0.5)
        );
    }

    #[test]
    fn inputs_never_show_the_frailty() {
        let robust = ethernet_desktop();
        let frail = HostProfile {
            frailty: 5.0,
            ..robust.clone()
        };
        let state = online_state();
        let a = stability_inputs(&robust, &state, 600, &mut rng(7));
        let b = stability_inputs(&frail, &state, 600, &mut rng(7));
        assert_eq!(a, b);
        assert_eq!(a.sessions, 1);
        assert_eq!(a.device_class, DeviceClass::Desktop);
        assert!((a.rtt_ms.unwrap() - 20.5).abs() < 5.0, "{a:?}");
    }

    #[test]
    fn observed_disconnect_rate_matches_the_hazard() {
        // A host that never bursts or leaves: count drops per online hour.
        let host = ethernet_desktop();
        let state = online_state();
        let expected = disconnect_hazard_per_hour(&host, &state, 12 * 60, 0.5);
        let mut sim = SimHost {
            profile: host,
            state,
        };
        let mut r = rng(3);
        let mut drops = 0u64;
        let mut online_hours = 0.0;
        for _ in 0..400_000 {
            sim.state.recent_disconnects = 0.0;
            sim.state.left = false;
            sim.state.online = true;
            let before = sim.state.online_hours;
            let outcome = sim.step(&mut r, 12 * 60, 0.5, 1.0);
            online_hours += sim.state.online_hours - before;
            drops += u64::from(outcome.event.is_disconnect());
        }
        let observed = drops as f64 / online_hours;
        assert!(
            (observed / expected - 1.0).abs() < 0.1,
            "{observed} vs {expected} per hour ({drops} drops)"
        );
    }

    #[test]
    fn drop_probability_is_what_the_step_draws() {
        let host = SimHost {
            profile: HostProfile {
                interface: NetInterface::Wifi,
                ..ethernet_desktop()
            },
            state: HostState {
                recent_disconnects: 2.0,
                ..online_state()
            },
        };
        let evening = 20 * 60;
        let p = host.drop_probability(evening, 0.95, 30.0);
        assert!(p > 0.05 && p < 0.9, "{p}");
        let trials = 20_000;
        let mut r = rng(9);
        let drops = (0..trials)
            .filter(|_| {
                let mut h = host.clone();
                h.step(&mut r, evening, 0.95, 30.0).event.is_disconnect()
            })
            .count();
        let seen = drops as f64 / trials as f64;
        let sd = (p * (1.0 - p) / trials as f64).sqrt();
        assert!((seen - p).abs() < 4.0 * sd, "drew {seen}, expected {p}");
        // Offline or gone: nothing to drop.
        let mut offline = host.clone();
        offline.state.online = false;
        assert_eq!(offline.drop_probability(evening, 0.95, 30.0), 0.0);
    }

    #[test]
    fn the_same_fates_drop_a_host_at_the_same_steps_whatever_else_it_draws() {
        let frail_wifi = SimHost {
            profile: HostProfile {
                device_class: DeviceClass::Laptop,
                interface: NetInterface::Wifi,
                frailty: 4.0,
                ..ethernet_desktop()
            },
            state: HostState::joining_in(0.0),
        };
        // Two runs of one host with different RNGs for everything but churn.
        let run = |seed: u64, with_fate: bool| {
            let mut host = frail_wifi.clone();
            let mut r = rng(seed);
            let mut fates = rng(99);
            let mut events = Vec::new();
            for step in 0..3 * MINUTES_PER_DAY {
                let fate = Fate::draw(&mut fates);
                let outcome = if with_fate {
                    host.step_with_fate(&mut r, &fate, step % MINUTES_PER_DAY, 0.95, 1.0)
                } else {
                    host.step(&mut r, step % MINUTES_PER_DAY, 0.95, 1.0)
                };
                if outcome.event != StepEvent::None {
                    events.push((step, outcome.event));
                }
            }
            (events, host.state.gops_encoded)
        };
        let (a, a_gops) = run(1, true);
        let (b, b_gops) = run(2, true);
        assert!(a.len() >= 6, "a frail laptop drops and comes back: {a:?}");
        assert_eq!(a, b, "same fates, same drops, returns and leave");
        assert_ne!(a_gops, b_gops, "the other draws still differ");
        // Without fates the drops follow the RNG and differ.
        assert_ne!(run(1, false).0, run(2, false).0);

        // A fate's draws map onto the step's chances: a drop below the chance drops.
        let mut host = frail_wifi.clone();
        host.state = online_state();
        let p = host.drop_probability(20 * 60, 0.95, 30.0);
        let fate = |drop: f64| Fate {
            drop,
            moment: 0.5,
            leave: 1.0 - 1e-12,
            downtime: 0.5,
        };
        let mut below = host.clone();
        let out = below.step_with_fate(&mut rng(1), &fate(0.999 * p), 20 * 60, 0.95, 30.0);
        assert_eq!(out.event, StepEvent::Disconnected);
        assert!((below.state.online_hours - host.state.online_hours - 0.25).abs() < 1e-9);
        let mean = mean_downtime_minutes(DeviceClass::Laptop);
        assert!((below.state.minutes_until_connect - mean * 2f64.ln()).abs() < 1e-9);
        let mut above = host.clone();
        let out = above.step_with_fate(&mut rng(1), &fate(1.001 * p), 20 * 60, 0.95, 30.0);
        assert_eq!(out.event, StepEvent::None);
    }

    #[test]
    fn a_host_lives_sessions_and_keeps_its_books() {
        let mut r = rng(11);
        let mut sim = SimHost {
            profile: HostProfile {
                device_class: DeviceClass::Laptop,
                interface: NetInterface::Wifi,
                frailty: 4.0,
                ..ethernet_desktop()
            },
            state: HostState::joining_in(5.0),
        };
        let mut events = Vec::new();
        let mut minutes = 0.0;
        for step in 0..20 * MINUTES_PER_DAY {
            let outcome = sim.step(&mut r, step % MINUTES_PER_DAY, 0.95, 1.0);
            minutes += 1.0;
            if outcome.event != StepEvent::None {
                events.push(outcome.event);
            }
            assert!(outcome.failed_gops <= outcome.gops_encoded);
            if sim.state.left {
                assert_eq!(outcome.event, StepEvent::Left);
                break;
            }
        }
        assert_eq!(events[0], StepEvent::Joined);
        let s = &sim.state;
        assert!(s.disconnects >= 3, "a frail laptop drops: {events:?}");
        assert!(s.sessions >= s.disconnects && s.sessions <= s.disconnects + 1);
        assert!(s.online_hours <= minutes / 60.0);
        assert!(s.gops_encoded > 0 && s.failed_gops > 0);
        assert!(s.failed_gops < s.gops_encoded / 5);
        // Once gone, nothing more happens.
        if s.left {
            let after = sim.clone();
            assert_eq!(sim.step(&mut r, 0, 1.0, 60.0).event, StepEvent::None);
            assert_eq!(sim, after);
        }
    }

    #[test]
    fn history_is_reproducible_and_labelled() {
        let a = history(42, 30, 1.0, 10.0);
        assert_eq!(a, history(42, 30, 1.0, 10.0));
        assert_ne!(a, history(43, 30, 1.0, 10.0));
        // A host's data does not depend on how many hosts come after it.
        let fewer = history(42, 10, 1.0, 10.0);
        assert_eq!(&a[..fewer.len()], &fewer[..]);
        assert!(a.iter().any(|s| s.label) && a.iter().any(|s| !s.label));
        assert!(
            a.iter()
                .all(|s| s.t_interval < 144 && s.minute_of_day < 1440)
        );
        assert!(a.iter().all(|s| (0.0..=1.0).contains(&s.load_fraction)));
        assert!(history(42, 30, 0.0, 10.0).is_empty());
        assert!(history(42, 30, 1.0, 0.0).is_empty());
    }

    #[test]
    fn binomial_draws_have_the_right_mean() {
        let mut r = rng(5);
        for (trials, p) in [(10u64, 0.3), (2400, 0.004), (2400, 0.2)] {
            let n = 4000;
            let mean = (0..n).map(|_| binomial(&mut r, trials, p)).sum::<u64>() as f64 / n as f64;
            let want = trials as f64 * p;
            assert!((mean / want - 1.0).abs() < 0.05, "{trials} x {p}: {mean}");
        }
    }
}
