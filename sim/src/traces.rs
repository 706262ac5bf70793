// SPDX-License-Identifier: MPL-2.0
//! Seeded synthetic encoding-demand traces for the swarm simulator and the forecast backtests.
//!
//! We have no production demand data, yet the forecaster and the capacity planner must be judged
//! against something that behaves like a live-streaming platform: a daily cycle with a sharp
//! prime-time peak and a night trough, a weekly swell towards the weekend, correlated
//! minute-to-minute wander, announced events (matches, concerts) whose audience is only roughly
//! known in advance, and bursts nobody announced. Every trace is a pure function of its
//! [`TraceConfig`], so a failing simulation or backtest can be replayed exactly.
//!
//! Each ingredient (noise, events, surprise spikes) draws from its own random stream, so turning
//! one of them off leaves the others bit-for-bit identical; tests use that to isolate an effect.

use serde::{Deserialize, Serialize};

const SECONDS_PER_DAY: f64 = 86_400.0;

/// Random stream ids: one per ingredient, so that changing one ingredient's settings does not
/// reshuffle the others.
const RNG_STREAM_NOISE: u64 = 1;
const RNG_STREAM_EVENTS: u64 = 2;
const RNG_STREAM_SPIKES: u64 = 3;

/// Noise deeper than this would flip the load's sign; real demand never drops below a tenth of
/// its expectation within a minute, so the correlated noise is floored here.
const NOISE_FLOOR: f64 = -0.9;

/// Scheduled events start on the quarter hour, like broadcast slots do.
const EVENT_START_GRANULARITY_S: f64 = 900.0;
/// Window of the day (hours) in which scheduled events start: matches and shows are afternoon
/// and evening programming.
const EVENT_START_HOURS: (f64, f64) = (12.0, 22.0);

/// Unannounced bursts (a clip going viral, a streamer's surprise appearance) rise within a few
/// minutes and fade over tens of minutes.
const SPIKE_RISE_S: (f64, f64) = (120.0, 360.0);
const SPIKE_DECAY_S: (f64, f64) = (900.0, 2700.0);
/// A spike's tail is cut once it is this small relative to its peak.
const SPIKE_TAIL_CUTOFF: f64 = 0.01;

/// Spread (log-normal sigma) of stream popularity in [`Trace::split`]: a few channels draw most
/// of the audience, as on every real platform.
const STREAM_POPULARITY_SPREAD: f64 = 0.9;
/// Each split stream's own relative noise and its correlation time: a single channel wanders
/// more than the platform total, whose streams partly average each other out.
const STREAM_NOISE: f64 = 0.08;
const STREAM_NOISE_CORR_S: f64 = 600.0;

/// Everything that shapes a synthetic trace. Amounts are in encoding slots, fractions are
/// relative to `base`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TraceConfig {
    /// Seed of every random choice: same config, same trace.
    pub seed: u64,
    /// Seconds per step.
    pub step_s: u32,
    /// Trace length in days.
    pub days: u32,
    /// Mean demand in encoding slots.
    pub base: f64,
    /// Relative depth of the daily cycle: the evening peak sits at `base * (1 + daily_amplitude)`
    /// (before the weekly factor); the trough is shallower but wider.
    pub daily_amplitude: f64,
    /// Local hour (0..24) of the prime-time peak.
    pub peak_hour: f64,
    /// Relative swing of the weekly cycle, highest on Saturday evening.
    pub weekly_amplitude: f64,
    /// Day of week of the trace's first day, 0 = Monday.
    pub start_weekday: u32,
    /// Standard deviation of the multiplicative, AR(1)-correlated noise (fraction of the load).
    pub noise: f64,
    /// Correlation time of that noise in seconds: audiences drift, they do not jump.
    pub noise_corr_s: f64,
    /// Mean number of scheduled events per day (Poisson).
    pub events_per_day: f64,
    /// Range of an event's announced audience; drawn log-uniformly (small events are common).
    pub event_viewers: (f64, f64),
    /// Range of an event's duration in seconds.
    pub event_duration_s: (f64, f64),
    /// Seconds an event's load takes to ramp up at its start and down at its end.
    pub event_ramp_s: f64,
    /// How far an event's real audience strays from the announcement: its effect is the
    /// announced one times a factor drawn from `1 ± event_effect_spread`.
    pub event_effect_spread: f64,
    /// Encoding slots per viewer of an event (renditions and extra ingest fan-out).
    pub load_per_viewer: f64,
    /// Mean number of unannounced bursts per day (Poisson).
    pub surprise_spikes_per_day: f64,
    /// Range of a burst's peak height, as a fraction of `base`.
    pub surprise_size: (f64, f64),
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            seed: 1,
            step_s: 60,
            days: 4,
            base: 600.0,
            daily_amplitude: 0.45,
            peak_hour: 21.0,
            weekly_amplitude: 0.08,
            start_weekday: 0,
            noise: 0.04,
            noise_corr_s: 300.0,
            events_per_day: 1.5,
            event_viewers: (20_000.0, 150_000.0),
            event_duration_s: (5_400.0, 9_000.0),
            event_ramp_s: 300.0,
            event_effect_spread: 0.3,
            load_per_viewer: 0.0015,
            surprise_spikes_per_day: 0.5,
            surprise_size: (0.1, 0.35),
        }
    }
}

/// An event announced ahead of time: a forecaster may use it before it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledEvent {
    /// First step of the event.
    pub start_step: usize,
    /// Length of the event in steps (its ramps included). An event may run past the trace's
    /// end; the trace simply stops.
    pub duration_steps: usize,
    /// Audience announced for the event. The load it really adds differs by a random factor.
    pub expected_viewers: f64,
}

impl ScheduledEvent {
    /// One past the event's last step.
    pub fn end_step(&self) -> usize {
        self.start_step + self.duration_steps
    }

    /// Whether the event is running at `step`.
    pub fn is_active_at(&self, step: usize) -> bool {
        step >= self.start_step && step < self.end_step()
    }
}

/// A demand trace: one load value per step plus what was announced about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Seconds per step.
    pub step_s: u32,
    /// Steps per day: the season length a forecaster should use.
    pub steps_per_day: usize,
    /// Demand in encoding slots per step; never negative.
    pub load: Vec<f64>,
    /// Announced events, ordered by start.
    pub events: Vec<ScheduledEvent>,
    /// Per step: sum of the announced audiences of the events running then (0 when none). This
    /// is what a forecaster may be told about the future.
    pub expected_viewers: Vec<f64>,
    /// Per step: the part of `load` the events really caused (noise included). Ground truth for
    /// analysis and for [`Trace::split`]; a forecaster must not see it.
    pub event_load: Vec<f64>,
}

impl Trace {
    /// Number of steps.
    pub fn len(&self) -> usize {
        self.load.len()
    }

    /// Whether the trace has no steps.
    pub fn is_empty(&self) -> bool {
        self.load.is_empty()
    }

    /// The same trace with its load multiplied by `factor` (a non-finite or negative factor
    /// counts as 0). Announced audiences are kept: viewers stay viewers, so a forecaster simply
    /// learns a different load per viewer.
    pub fn scaled(&self, factor: f64) -> Trace {
        let factor = non_negative(factor);
        Trace {
            step_s: self.step_s,
            steps_per_day: self.steps_per_day,
            load: self.load.iter().map(|load| load * factor).collect(),
            events: self.events.clone(),
            expected_viewers: self.expected_viewers.clone(),
            event_load: self.event_load.iter().map(|load| load * factor).collect(),
        }
    }

    /// Splits the trace into `n` per-stream traces whose loads sum to this one's at every step.
    ///
    /// Streams get log-normally spread popularity shares and each wanders with its own
    /// correlated noise around its share (the shares are renormalised every step so the total
    /// is preserved). Each scheduled event belongs to a single stream, picked with probability
    /// proportional to popularity, so only that stream sees the event's load and announcement.
    /// Deterministic in `seed`.
    pub fn split(&self, n: usize, seed: u64) -> Vec<Trace> {
        if n == 0 {
            return Vec::new();
        }
        let steps = self.len();
        let mut rng = SeededRng::new(seed, 0);
        let popularity: Vec<f64> = (0..n)
            .map(|_| (STREAM_POPULARITY_SPREAD * rng.normal()).exp())
            .collect();
        let owner_of_event: Vec<usize> = self
            .events
            .iter()
            .map(|_| rng.weighted_index(&popularity))
            .collect();

        let corr_steps = STREAM_NOISE_CORR_S / f64::from(self.step_s.max(1));
        let mut stream_noise: Vec<Ar1> = (0..n)
            .map(|_| Ar1::new(STREAM_NOISE, corr_steps, &mut rng))
            .collect();

        let mut streams: Vec<Trace> = (0..n)
            .map(|stream| Trace {
                step_s: self.step_s,
                steps_per_day: self.steps_per_day,
                load: vec![0.0; steps],
                events: self
                    .events
                    .iter()
                    .zip(&owner_of_event)
                    .filter(|(_, owner)| **owner == stream)
                    .map(|(event, _)| event.clone())
                    .collect(),
                expected_viewers: vec![0.0; steps],
                event_load: vec![0.0; steps],
            })
            .collect();

        // The event part of the load goes to the events' owners, shared among overlapping events
        // in proportion to their announced audiences.
        for (event, &owner) in self.events.iter().zip(&owner_of_event) {
            for step in event.start_step..event.end_step().min(steps) {
                let announced_total = self.expected_viewers[step];
                let share = if announced_total > 0.0 {
                    event.expected_viewers / announced_total
                } else {
                    0.0
                };
                let stream = &mut streams[owner];
                stream.expected_viewers[step] += event.expected_viewers;
                stream.event_load[step] += share * self.event_load[step];
            }
        }

        let mut weights = vec![0.0; n];
        for step in 0..steps {
            for ((weight, noise), share) in weights
                .iter_mut()
                .zip(stream_noise.iter_mut())
                .zip(&popularity)
            {
                *weight = share * (1.0 + noise.step(&mut rng).max(NOISE_FLOOR));
            }
            let weight_sum: f64 = weights.iter().sum();
            let background = (self.load[step] - self.event_load[step]).max(0.0);
            for (stream, weight) in streams.iter_mut().zip(&weights) {
                stream.load[step] = background * weight / weight_sum + stream.event_load[step];
            }
        }
        streams
    }
}

/// Generates the trace `cfg` describes. Nonsensical settings are sanitised rather than
/// rejected (negative amounts count as 0, reversed ranges are swapped, a zero step counts as one
/// second) so a simulator sweep never dies on a corner of its parameter space.
pub fn generate(cfg: &TraceConfig) -> Trace {
    let step_s = cfg.step_s.max(1);
    let step_s_f = f64::from(step_s);
    let steps_per_day = ((SECONDS_PER_DAY / step_s_f).round() as usize).max(1);
    let steps = steps_per_day * cfg.days as usize;
    let base = non_negative(cfg.base);

    let daily = daily_profile(steps_per_day, cfg.peak_hour);
    // Keeps the trough above zero whatever the configured amplitude.
    let daily_amplitude = non_negative(cfg.daily_amplitude).min(0.95);
    let weekly_amplitude = non_negative(cfg.weekly_amplitude).min(0.5);
    let mut background: Vec<f64> = (0..steps)
        .map(|step| {
            let day = step as f64 / steps_per_day as f64 + f64::from(cfg.start_weekday % 7);
            base * (1.0 + daily_amplitude * daily[step % steps_per_day])
                * weekly_factor(day, weekly_amplitude)
        })
        .collect();
    add_surprise_spikes(&mut background, cfg, base, step_s_f);

    let mut event_rng = SeededRng::new(cfg.seed, RNG_STREAM_EVENTS);
    let (events, effect_factors) = schedule_events(cfg, steps_per_day, steps, &mut event_rng);
    let ramp_steps = (non_negative(cfg.event_ramp_s) / step_s_f).round().max(1.0);
    let load_per_viewer = non_negative(cfg.load_per_viewer);
    let mut expected_viewers = vec![0.0; steps];
    let mut event_load = vec![0.0; steps];
    for (event, factor) in events.iter().zip(&effect_factors) {
        for offset in 0..event.duration_steps {
            let step = event.start_step + offset;
            if step >= steps {
                break;
            }
            // Audiences trickle in over the first minutes and leave over the last ones.
            let ramp = ((offset + 1) as f64 / ramp_steps)
                .min((event.duration_steps - offset) as f64 / ramp_steps)
                .min(1.0);
            expected_viewers[step] += event.expected_viewers;
            event_load[step] += event.expected_viewers * load_per_viewer * factor * ramp;
        }
    }

    let mut noise_rng = SeededRng::new(cfg.seed, RNG_STREAM_NOISE);
    let mut noise = Ar1::new(
        non_negative(cfg.noise),
        non_negative(cfg.noise_corr_s) / step_s_f,
        &mut noise_rng,
    );
    let mut load = vec![0.0; steps];
    for step in 0..steps {
        let factor = 1.0 + noise.step(&mut noise_rng).max(NOISE_FLOOR);
        event_load[step] *= factor;
        load[step] = background[step] * factor + event_load[step];
    }

    Trace {
        step_s,
        steps_per_day,
        load,
        events,
        expected_viewers,
        event_load,
    }
}

/// The daily cycle, one value per step, zero mean and peaking at exactly 1: a broad day/night
/// swing (lowest eight hours after the peak, before dawn) plus a narrow prime-time bump. A pure
/// sinusoid would make the evening rise far too gentle and the peak far too wide, which would
/// flatter any forecaster.
fn daily_profile(steps_per_day: usize, peak_hour: f64) -> Vec<f64> {
    const TROUGH_AFTER_PEAK_H: f64 = 8.0;
    const DAY_NIGHT_WEIGHT: f64 = 0.6;
    const PRIME_TIME_WEIGHT: f64 = 0.9;
    /// Von Mises concentration of the prime-time bump: about 1.5 h either side of the peak.
    const PRIME_TIME_CONCENTRATION: f64 = 6.0;
    let peak_hour = if peak_hour.is_finite() {
        peak_hour
    } else {
        21.0
    };
    let tau = std::f64::consts::TAU;
    let raw: Vec<f64> = (0..steps_per_day)
        .map(|step| {
            let hour = (step as f64 + 0.5) * 24.0 / steps_per_day as f64;
            let day_night = -(tau * (hour - peak_hour - TROUGH_AFTER_PEAK_H) / 24.0).cos();
            let prime_time =
                (PRIME_TIME_CONCENTRATION * ((tau * (hour - peak_hour) / 24.0).cos() - 1.0)).exp();
            DAY_NIGHT_WEIGHT * day_night + PRIME_TIME_WEIGHT * prime_time
        })
        .collect();
    let mean = raw.iter().sum::<f64>() / raw.len() as f64;
    let peak = raw
        .iter()
        .map(|value| value - mean)
        .fold(f64::MIN, f64::max);
    let scale = if peak > 0.0 { 1.0 / peak } else { 0.0 };
    raw.iter().map(|value| (value - mean) * scale).collect()
}

/// Weekly swell: `1 + amplitude` on Saturday evening, `1 - amplitude` midweek. `day` counts
/// from Monday 00:00.
fn weekly_factor(day: f64, amplitude: f64) -> f64 {
    const BUSIEST_DAY: f64 = 5.8;
    1.0 + amplitude * (std::f64::consts::TAU * (day - BUSIEST_DAY) / 7.0).cos()
}

/// Adds the unannounced bursts to the background load.
fn add_surprise_spikes(background: &mut [f64], cfg: &TraceConfig, base: f64, step_s: f64) {
    let steps = background.len();
    if steps == 0 {
        return;
    }
    let mut rng = SeededRng::new(cfg.seed, RNG_STREAM_SPIKES);
    let days = steps as f64 * step_s / SECONDS_PER_DAY;
    let count = rng.poisson(non_negative(cfg.surprise_spikes_per_day) * days);
    let (size_lo, size_hi) = ordered(cfg.surprise_size);
    for _ in 0..count {
        let start = ((rng.unit() * steps as f64) as usize).min(steps - 1);
        let peak = base * rng.uniform(size_lo, size_hi);
        let rise_steps = (rng.uniform(SPIKE_RISE_S.0, SPIKE_RISE_S.1) / step_s).max(1.0);
        let decay_steps = (rng.uniform(SPIKE_DECAY_S.0, SPIKE_DECAY_S.1) / step_s).max(1.0);
        for (offset, load) in background[start..].iter_mut().enumerate() {
            let offset = offset as f64;
            let height = if offset < rise_steps {
                (offset + 1.0) / rise_steps
            } else {
                (-(offset - rise_steps) / decay_steps).exp()
            };
            if height < SPIKE_TAIL_CUTOFF {
                break;
            }
            *load += peak * height;
        }
    }
}

/// Draws the scheduled events, ordered by start, with each one's hidden effect factor.
fn schedule_events(
    cfg: &TraceConfig,
    steps_per_day: usize,
    steps: usize,
    rng: &mut SeededRng,
) -> (Vec<ScheduledEvent>, Vec<f64>) {
    let step_s = SECONDS_PER_DAY / steps_per_day as f64;
    let (viewers_lo, viewers_hi) = ordered(cfg.event_viewers);
    let (viewers_lo, viewers_hi) = (non_negative(viewers_lo), non_negative(viewers_hi));
    let (duration_lo, duration_hi) = ordered(cfg.event_duration_s);
    let spread = non_negative(cfg.event_effect_spread).min(1.0);
    let mut drawn = Vec::new();
    for day in 0..cfg.days as usize {
        for _ in 0..rng.poisson(non_negative(cfg.events_per_day)) {
            let start_s = (rng.uniform(EVENT_START_HOURS.0, EVENT_START_HOURS.1) * 3600.0
                / EVENT_START_GRANULARITY_S)
                .round()
                * EVENT_START_GRANULARITY_S;
            let start_step = day * steps_per_day + (start_s / step_s).round() as usize;
            let duration_steps = (non_negative(rng.uniform(duration_lo, duration_hi)) / step_s)
                .round()
                .max(1.0) as usize;
            // Log-uniform: many modest events, a few huge ones.
            let expected_viewers = if viewers_lo > 0.0 {
                viewers_lo * (viewers_hi / viewers_lo).powf(rng.unit())
            } else {
                rng.uniform(viewers_lo, viewers_hi)
            };
            let factor = rng.uniform(1.0 - spread, 1.0 + spread);
            if start_step < steps {
                drawn.push((
                    ScheduledEvent {
                        start_step,
                        duration_steps,
                        expected_viewers,
                    },
                    factor,
                ));
            }
        }
    }
    drawn.sort_by_key(|(event, _)| event.start_step);
    drawn.into_iter().unzip()
}

fn non_negative(value: f64) -> f64 {
    if value.is_finite() {
        value.max(0.0)
    } else {
        0.0
    }
}

fn ordered((a, b): (f64, f64)) -> (f64, f64) {
    let (a, b) = (finite_or_zero(a), finite_or_zero(b));
    if a <= b { (a, b) } else { (b, a) }
}

fn finite_or_zero(value: f64) -> f64 {
    if value.is_finite() { value } else { 0.0 }
}

/// Stationary AR(1) process: standard deviation `sigma`, correlation decaying by `1/e` every
/// `corr_steps` steps.
#[derive(Debug, Clone)]
struct Ar1 {
    persistence: f64,
    innovation_sd: f64,
    value: f64,
}

impl Ar1 {
    fn new(sigma: f64, corr_steps: f64, rng: &mut SeededRng) -> Self {
        let persistence = if corr_steps > 0.0 {
            (-1.0 / corr_steps).exp()
        } else {
            0.0
        };
        Ar1 {
            persistence,
            innovation_sd: sigma * (1.0 - persistence * persistence).sqrt(),
            // Start in the stationary distribution so the first day is not calmer than the rest.
            value: sigma * rng.normal(),
        }
    }

    fn step(&mut self, rng: &mut SeededRng) -> f64 {
        self.value = self.persistence * self.value + self.innovation_sd * rng.normal();
        self.value
    }
}

/// SplitMix64: tiny, fast and statistically sound for simulation. Our own rather than a crate's
/// so that a trace depends on its seed alone, never on a dependency's version.
#[derive(Debug, Clone)]
struct SeededRng {
    state: u64,
}

impl SeededRng {
    fn new(seed: u64, stream: u64) -> Self {
        let mut rng = SeededRng {
            state: seed ^ stream.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03),
        };
        rng.next_u64();
        rng
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let radius = (-2.0 * (1.0 - self.unit()).ln()).sqrt();
        radius * (std::f64::consts::TAU * self.unit()).cos()
    }

    fn poisson(&mut self, mean: f64) -> usize {
        if mean <= 0.0 || !mean.is_finite() {
            return 0;
        }
        if mean > 30.0 {
            // Normal approximation: exact enough for counts this large, and bounded in time.
            return (mean + mean.sqrt() * self.normal()).round().max(0.0) as usize;
        }
        let threshold = (-mean).exp();
        let mut count = 0;
        let mut product = self.unit();
        while product > threshold {
            count += 1;
            product *= self.unit();
        }
        count
    }

    /// Index drawn with probability proportional to `weights` (all assumed non-negative).
    fn weighted_index(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut target = self.unit() * total;
        for (index, weight) in weights.iter().enumerate() {
            if target < *weight {
                return index;
            }
            target -= weight;
        }
        weights.len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        let cfg = TraceConfig::default();
        let first = generate(&cfg);
        assert_eq!(first, generate(&cfg));
        let other = generate(&TraceConfig { seed: 2, ..cfg });
        assert_ne!(first.load, other.load);
    }

    #[test]
    fn shape_and_bounds() {
        for seed in 0..5 {
            let cfg = TraceConfig {
                seed,
                ..TraceConfig::default()
            };
            let trace = generate(&cfg);
            assert_eq!(trace.steps_per_day, 1440);
            assert_eq!(trace.len(), 4 * 1440);
            assert_eq!(trace.expected_viewers.len(), trace.len());
            assert!(
                trace
                    .load
                    .iter()
                    .all(|load| load.is_finite() && *load >= 0.0)
            );
            let mean = trace.load.iter().sum::<f64>() / trace.len() as f64;
            assert!((mean - cfg.base).abs() < 0.25 * cfg.base, "mean {mean}");
            // Prime time is busier than the small hours on every day.
            for day in 0..4 {
                let at = |hour: usize| trace.load[day * 1440 + hour * 60];
                assert!(at(21) > 1.3 * at(5), "day {day}: {} vs {}", at(21), at(5));
            }
        }
    }

    #[test]
    fn events_show_up_in_the_load() {
        let cfg = TraceConfig {
            seed: 7,
            events_per_day: 2.0,
            ..TraceConfig::default()
        };
        let with_events = generate(&cfg);
        let without_events = generate(&TraceConfig {
            events_per_day: 0.0,
            ..cfg.clone()
        });
        assert!(!with_events.events.is_empty());
        assert!(without_events.events.is_empty());
        let ramp_steps = (cfg.event_ramp_s / f64::from(cfg.step_s)) as usize;
        for event in &with_events.events {
            let plateau = event.start_step + ramp_steps..event.end_step() - ramp_steps;
            // Steps where only this event runs: there its own effect factor bounds the extra load.
            let alone = |step: &usize| {
                *step < with_events.len()
                    && with_events
                        .events
                        .iter()
                        .filter(|e| e.is_active_at(*step))
                        .count()
                        == 1
            };
            for step in plateau.filter(alone) {
                let extra = with_events.load[step] - without_events.load[step];
                // Same noise stream in both traces, so the difference is the event alone.
                assert!((extra - with_events.event_load[step]).abs() < 1e-9);
                let announced = with_events.expected_viewers[step] * cfg.load_per_viewer;
                assert!(
                    extra > 0.5 * announced,
                    "step {step}: {extra} vs {announced}"
                );
                assert!(
                    extra < 1.6 * announced,
                    "step {step}: {extra} vs {announced}"
                );
            }
            assert!(with_events.expected_viewers[event.start_step] >= event.expected_viewers);
        }
        for step in 0..with_events.len() {
            if with_events.expected_viewers[step] == 0.0 {
                assert_eq!(with_events.load[step], without_events.load[step]);
            }
        }
    }

    #[test]
    fn scaled_and_split_preserve_totals() {
        let trace = generate(&TraceConfig::default());
        let half = trace.scaled(0.5);
        assert!((half.load[100] - 0.5 * trace.load[100]).abs() < 1e-9);
        assert!(trace.scaled(f64::NAN).load.iter().all(|load| *load == 0.0));

        let streams = trace.split(8, 3);
        assert_eq!(streams.len(), 8);
        assert_eq!(streams, trace.split(8, 3));
        for step in (0..trace.len()).step_by(7) {
            let sum: f64 = streams.iter().map(|stream| stream.load[step]).sum();
            assert!((sum - trace.load[step]).abs() < 1e-6 * trace.load[step].max(1.0));
            let viewers: f64 = streams.iter().map(|s| s.expected_viewers[step]).sum();
            assert!((viewers - trace.expected_viewers[step]).abs() < 1e-6);
        }
        let events: usize = streams.iter().map(|stream| stream.events.len()).sum();
        assert_eq!(events, trace.events.len());
        assert!(
            streams
                .iter()
                .all(|s| s.load.iter().all(|load| *load >= 0.0))
        );
        assert!(trace.split(0, 1).is_empty());
    }

    #[test]
    fn odd_settings_do_not_panic() {
        let trace = generate(&TraceConfig {
            step_s: 0,
            days: 1,
            base: -5.0,
            noise: f64::NAN,
            event_viewers: (1e5, 0.0),
            surprise_size: (0.5, -1.0),
            ..TraceConfig::default()
        });
        assert_eq!(trace.steps_per_day, 86_400);
        assert!(
            trace
                .load
                .iter()
                .all(|load| load.is_finite() && *load >= 0.0)
        );
        assert!(
            generate(&TraceConfig {
                days: 0,
                ..TraceConfig::default()
            })
            .is_empty()
        );
    }
}
