// SPDX-License-Identifier: MPL-2.0
//! Host scores: the encoder state evaluator's **fitness** (can this host encode well right
//! now?) and the **stability** score (will this host stay with us?), the **tiers** they put a
//! host in, and the arithmetic behind each, for `gopswarm explain`.
//!
//! Every term maps one measured input onto 0..1 with a documented ramp, is weighted, and the
//! weighted sum (weights add up to 1) is scaled to 0..100. Unknown inputs take a neutral
//! value that is said so in the explanation, so a host is never scored on a guess silently.
//!
//! # Fitness (0-100)
//! ```text
//! speed    = busy host: clamp((keep_up - keep_up_floor) / (keep_up_full - keep_up_floor), 0, 1)
//!            idle host: clamp((bench_fps / realtime_fps - 1) / (speed_target - 1), 0, 1)
//! headroom = 1 - clamp(max(cpu_used, mem_used), 0, 1)
//! quality  = clamp((psnr_db - psnr_floor) / (psnr_good - psnr_floor), 0, 1)
//! fitness  = 100 * compatible * (w_speed*speed + w_headroom*headroom + w_quality*quality)
//! ```
//! A live host cannot encode faster than its source delivers, so a busy host's speed is how
//! well it keeps up: `keep_up` is the median over recent heartbeats of frames through its
//! pipelines per second over the frames per second its sources need. An idle host is judged
//! on its join benchmark's margin over real time.
//! `compatible` is 0 when the host's versions differ from the swarm's (or from the encoder
//! library of the other hosts of its profile), else 1.
//!
//! # Stability (0-100)
//! ```text
//! network   = 0.4*clamp(bandwidth/bandwidth_good) + 0.35*(1 - clamp((rtt - rtt_good)/(rtt_bad - rtt_good)))
//!             + 0.25*(1 - clamp(jitter/jitter_bad))
//! device    = server 1, desktop 0.8, laptop 0.6, embedded 0.4 (unknown 0.5)
//! power     = clamp(bench_fps / (power_margin * realtime_fps))
//! region    = 1 in the swarm's home region, 0.7 elsewhere (unknown 0.85)
//! interface = ethernet 1, wifi 0.6, cellular 0.4 (unknown 0.7)
//! history   = 0.6*exp(-disconnects_per_hour * history_horizon_h) + 0.4*(1 - clamp(failed_gops/gops * 20))
//!             where disconnects_per_hour = (disconnects + 0.2) / (online_hours + 2)
//! stability = 100 * sum(weight * term)
//! ```
//! The history prior (0.2 disconnects in 2 hours) keeps a new host from scoring as if it were
//! perfectly reliable or hopeless before anything is known about it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of machine a host is (reported by the host at join).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceClass {
    Server,
    Desktop,
    Laptop,
    Embedded,
    #[default]
    Unknown,
}

/// The network interface a host reaches the swarm over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetInterface {
    Ethernet,
    Wifi,
    Cellular,
    #[default]
    Unknown,
}

impl std::str::FromStr for DeviceClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "server" => DeviceClass::Server,
            "desktop" => DeviceClass::Desktop,
            "laptop" => DeviceClass::Laptop,
            "embedded" => DeviceClass::Embedded,
            "unknown" => DeviceClass::Unknown,
            _ => {
                return Err(format!(
                    "unknown device class {s:?} (server|desktop|laptop|embedded)"
                ));
            }
        })
    }
}

impl std::str::FromStr for NetInterface {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ethernet" => NetInterface::Ethernet,
            "wifi" => NetInterface::Wifi,
            "cellular" => NetInterface::Cellular,
            "unknown" => NetInterface::Unknown,
            _ => return Err(format!("unknown interface {s:?} (ethernet|wifi|cellular)")),
        })
    }
}

/// Inputs of the stability score. `None`: not measured yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StabilityInputs {
    /// Uplink bandwidth the host reports, Mbit/s.
    pub bandwidth_mbps: Option<f64>,
    /// Round-trip time the orchestrator measures over MQTT (median of recent pings), ms.
    pub rtt_ms: Option<f64>,
    /// Mean absolute deviation of those round trips, ms.
    pub jitter_ms: Option<f64>,
    pub device_class: DeviceClass,
    /// Encode benchmark the host ran at join: frames per second of the reference profile.
    pub bench_fps: Option<f64>,
    /// Frames per second the reference profile needs for real time.
    pub realtime_fps: f64,
    /// Whether the host is in the swarm's home region (`None`: it did not say).
    pub home_region: Option<bool>,
    pub interface: NetInterface,
    /// History, persisted across restarts.
    pub sessions: u64,
    pub disconnects: u64,
    pub online_hours: f64,
    pub gops_encoded: u64,
    pub failed_gops: u64,
}

/// Inputs of the fitness score. `None`: not measured yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FitnessInputs {
    /// Keep-up ratio of a busy host: frames through / frames real time needs.
    pub speed_ratio: Option<f64>,
    /// Join benchmark: frames per second over the profile's real time.
    pub bench_ratio: Option<f64>,
    /// CPU use, fraction of the whole machine (0..1).
    pub cpu_used: Option<f64>,
    /// Memory use, fraction of the machine's memory.
    pub mem_used: Option<f64>,
    /// Sampled PSNR of its output against the decoded input, dB.
    pub psnr_db: Option<f64>,
    /// Why its versions do not fit (swarm or profile peers), if they do not.
    pub incompatible: Option<String>,
}

/// Reference points and weights of both scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScoreConfig {
    pub speed_target: f64,
    pub keep_up_floor: f64,
    pub keep_up_full: f64,
    pub psnr_floor: f64,
    pub psnr_good: f64,
    pub w_speed: f64,
    pub w_headroom: f64,
    pub w_quality: f64,
    pub bandwidth_good_mbps: f64,
    pub rtt_good_ms: f64,
    pub rtt_bad_ms: f64,
    pub jitter_bad_ms: f64,
    pub power_margin: f64,
    pub history_horizon_h: f64,
    pub w_network: f64,
    pub w_device: f64,
    pub w_power: f64,
    pub w_region: f64,
    pub w_interface: f64,
    pub w_history: f64,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig {
            speed_target: 1.5,
            keep_up_floor: 0.8,
            keep_up_full: 0.95,
            psnr_floor: 30.0,
            psnr_good: 45.0,
            w_speed: 0.4,
            w_headroom: 0.3,
            w_quality: 0.3,
            bandwidth_good_mbps: 20.0,
            rtt_good_ms: 10.0,
            rtt_bad_ms: 200.0,
            jitter_bad_ms: 50.0,
            power_margin: 2.0,
            history_horizon_h: 4.0,
            w_network: 0.25,
            w_device: 0.10,
            w_power: 0.20,
            w_region: 0.05,
            w_interface: 0.10,
            w_history: 0.30,
        }
    }
}

/// One weighted term of a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Term {
    pub name: &'static str,
    /// The inputs and the ramp, in words and numbers.
    pub arithmetic: String,
    /// 0..1.
    pub value: f64,
    pub weight: f64,
}

/// A score with the arithmetic that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explained {
    pub name: &'static str,
    pub terms: Vec<Term>,
    /// Multiplies the weighted sum (0 for an incompatible host).
    pub gate: f64,
    pub gate_reason: Option<String>,
    pub score: f64,
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} = {:.1}", self.name, self.score)?;
        for t in &self.terms {
            writeln!(
                f,
                "  {:<10} {:.3} x weight {:.2} = {:5.1} points   [{}]",
                t.name,
                t.value,
                t.weight,
                100.0 * t.value * t.weight,
                t.arithmetic
            )?;
        }
        let sum: f64 = self.terms.iter().map(|t| t.value * t.weight).sum();
        write!(f, "  sum {:.1}", 100.0 * sum)?;
        if let Some(why) = &self.gate_reason {
            write!(f, " x gate {:.0} ({why})", self.gate)?;
        }
        write!(f, " = {:.1}", self.score)
    }
}

fn clamp01(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// Without an explanation the terms carry no text at all (the fixed ones included).
fn quiet_if(mut terms: Vec<Term>, explain: bool) -> Vec<Term> {
    if !explain {
        for t in &mut terms {
            t.arithmetic.clear();
        }
    }
    terms
}

fn finish(
    name: &'static str,
    terms: Vec<Term>,
    gate: f64,
    gate_reason: Option<String>,
) -> Explained {
    let sum: f64 = terms.iter().map(|t| t.value * t.weight).sum();
    Explained {
        name,
        terms,
        gate,
        gate_reason,
        score: (100.0 * gate * sum).clamp(0.0, 100.0),
    }
}

/// The text of a term's arithmetic, built only when the score is to be explained: float
/// formatting was most of the cost of rescoring a large swarm every keep-alive.
macro_rules! why {
    ($explain:expr, $($arg:tt)*) => {
        if $explain { format!($($arg)*) } else { String::new() }
    };
}

/// The encoder state evaluator's fitness of a host, with the arithmetic of every term.
pub fn fitness(i: &FitnessInputs, c: &ScoreConfig) -> Explained {
    fitness_with(i, c, true)
}

/// The same fitness without the arithmetic texts (what rescoring keeps).
pub fn fitness_quiet(i: &FitnessInputs, c: &ScoreConfig) -> Explained {
    fitness_with(i, c, false)
}

fn fitness_with(i: &FitnessInputs, c: &ScoreConfig, explain: bool) -> Explained {
    let known = |v: Option<f64>| v.filter(|x| x.is_finite());
    let speed = match (known(i.speed_ratio), known(i.bench_ratio)) {
        (Some(r), _) => (
            clamp01((r - c.keep_up_floor) / (c.keep_up_full - c.keep_up_floor)),
            why!(
                explain,
                "keeps up {:.0}% of real time: ({r:.3} - {}) / ({} - {})",
                100.0 * r,
                c.keep_up_floor,
                c.keep_up_full,
                c.keep_up_floor
            ),
        ),
        (None, Some(b)) => (
            clamp01((b - 1.0) / (c.speed_target - 1.0)),
            why!(
                explain,
                "idle; join benchmark {b:.2}x real time: ({b:.2} - 1) / ({} - 1)",
                c.speed_target
            ),
        ),
        (None, None) => (0.5, "no encode yet: neutral 0.5".to_string()),
    };
    let headroom = match (i.cpu_used, i.mem_used) {
        (None, None) => (0.5, "no resource report yet: neutral 0.5".to_string()),
        (cpu, mem) => {
            let cpu = cpu.unwrap_or(0.0);
            let mem = mem.unwrap_or(0.0);
            let used = cpu.max(mem);
            (
                1.0 - clamp01(used),
                why!(
                    explain,
                    "1 - max(cpu {:.0}%, mem {:.0}%)",
                    100.0 * cpu,
                    100.0 * mem
                ),
            )
        }
    };
    let quality = match known(i.psnr_db) {
        Some(p) => (
            clamp01((p - c.psnr_floor) / (c.psnr_good - c.psnr_floor)),
            why!(
                explain,
                "PSNR {p:.2} dB: ({p:.2} - {}) / ({} - {})",
                c.psnr_floor,
                c.psnr_good,
                c.psnr_floor
            ),
        ),
        None => (0.5, "no PSNR sample yet: neutral 0.5".to_string()),
    };
    let terms = vec![
        Term {
            name: "speed",
            arithmetic: speed.1,
            value: speed.0,
            weight: c.w_speed,
        },
        Term {
            name: "headroom",
            arithmetic: headroom.1,
            value: headroom.0,
            weight: c.w_headroom,
        },
        Term {
            name: "quality",
            arithmetic: quality.1,
            value: quality.0,
            weight: c.w_quality,
        },
    ];
    let (gate, why) = match &i.incompatible {
        Some(why) => (0.0, Some(why!(explain, "incompatible: {why}"))),
        None => (1.0, None),
    };
    finish("fitness", quiet_if(terms, explain), gate, why)
}

/// The stability score of a host, with the arithmetic of every term.
pub fn stability(i: &StabilityInputs, c: &ScoreConfig) -> Explained {
    stability_with(i, c, true)
}

/// The same stability without the arithmetic texts (what rescoring keeps).
pub fn stability_quiet(i: &StabilityInputs, c: &ScoreConfig) -> Explained {
    stability_with(i, c, false)
}

fn stability_with(i: &StabilityInputs, c: &ScoreConfig, explain: bool) -> Explained {
    let known = |v: Option<f64>| v.filter(|x| x.is_finite());
    let bw = known(i.bandwidth_mbps)
        .map(|b| {
            (
                clamp01(b / c.bandwidth_good_mbps),
                why!(explain, "{b:.1} Mbit/s / {}", c.bandwidth_good_mbps),
            )
        })
        .unwrap_or((0.5, "bandwidth unknown: 0.5".into()));
    let rtt = known(i.rtt_ms)
        .map(|r| {
            (
                1.0 - clamp01((r - c.rtt_good_ms) / (c.rtt_bad_ms - c.rtt_good_ms)),
                why!(
                    explain,
                    "rtt {r:.1} ms: 1 - ({r:.1} - {}) / ({} - {})",
                    c.rtt_good_ms,
                    c.rtt_bad_ms,
                    c.rtt_good_ms
                ),
            )
        })
        .unwrap_or((0.5, "rtt unmeasured: 0.5".into()));
    let jit = known(i.jitter_ms)
        .map(|j| {
            (
                1.0 - clamp01(j / c.jitter_bad_ms),
                why!(
                    explain,
                    "jitter {j:.1} ms: 1 - {j:.1} / {}",
                    c.jitter_bad_ms
                ),
            )
        })
        .unwrap_or((0.5, "jitter unmeasured: 0.5".into()));
    let network = 0.4 * bw.0 + 0.35 * rtt.0 + 0.25 * jit.0;
    let device = match i.device_class {
        DeviceClass::Server => 1.0,
        DeviceClass::Desktop => 0.8,
        DeviceClass::Laptop => 0.6,
        DeviceClass::Embedded => 0.4,
        DeviceClass::Unknown => 0.5,
    };
    let power = match known(i.bench_fps) {
        Some(fps) if i.realtime_fps > 0.0 => (
            clamp01(fps / (c.power_margin * i.realtime_fps)),
            why!(
                explain,
                "join benchmark {fps:.1} fps / ({} x {:.1} fps real time)",
                c.power_margin,
                i.realtime_fps
            ),
        ),
        _ => (0.5, "no join benchmark: 0.5".into()),
    };
    let region = match i.home_region {
        Some(true) => (1.0, "home region"),
        Some(false) => (0.7, "other region"),
        None => (0.85, "region unknown"),
    };
    let interface = match i.interface {
        NetInterface::Ethernet => 1.0,
        NetInterface::Wifi => 0.6,
        NetInterface::Cellular => 0.4,
        NetInterface::Unknown => 0.7,
    };
    let per_hour = (i.disconnects as f64 + 0.2) / (i.online_hours.max(0.0) + 2.0);
    let survive = (-per_hour * c.history_horizon_h).exp();
    let fail_frac = if i.gops_encoded > 0 {
        i.failed_gops as f64 / i.gops_encoded as f64
    } else {
        0.0
    };
    let gop_ok = 1.0 - clamp01(fail_frac * 20.0);
    let history = 0.6 * survive + 0.4 * gop_ok;
    let terms = vec![
        Term {
            name: "network",
            arithmetic: why!(
                explain,
                "0.4 x {:.3} ({}) + 0.35 x {:.3} ({}) + 0.25 x {:.3} ({})",
                bw.0,
                bw.1,
                rtt.0,
                rtt.1,
                jit.0,
                jit.1
            ),
            value: network,
            weight: c.w_network,
        },
        Term {
            name: "device",
            arithmetic: why!(explain, "{:?}", i.device_class).to_lowercase(),
            value: device,
            weight: c.w_device,
        },
        Term {
            name: "power",
            arithmetic: power.1,
            value: power.0,
            weight: c.w_power,
        },
        Term {
            name: "region",
            arithmetic: region.1.into(),
            value: region.0,
            weight: c.w_region,
        },
        Term {
            name: "interface",
            arithmetic: why!(explain, "{:?}", i.interface).to_lowercase(),
            value: interface,
            weight: c.w_interface,
        },
        Term {
            name: "history",
            arithmetic: why!(
                explain,
                "{} sessions, {} disconnects in {:.1} h online: rate ({} + 0.2) / ({:.1} + 2) = {per_hour:.3}/h, \
                 0.6 x exp(-{per_hour:.3} x {}) = {:.3}; {} of {} GOPs failed: 0.4 x {gop_ok:.3}",
                i.sessions,
                i.disconnects,
                i.online_hours,
                i.disconnects,
                i.online_hours,
                c.history_horizon_h,
                0.6 * survive,
                i.failed_gops,
                i.gops_encoded
            ),
            value: history,
            weight: c.w_history,
        },
    ];
    finish("stability", quiet_if(terms, explain), 1.0, None)
}

/// A resource allocation tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Above the top threshold: full slots, primary roles, first pick.
    Gold,
    /// Above the middle threshold: half its slots, primary roles, picked after gold.
    Silver,
    /// Below: one slot, picked after every gold and silver host (so in practice only when
    /// none is free); a slot holder that falls here is swapped out.
    Bronze,
}

impl Tier {
    /// 1 (best) .. 3, for metrics.
    pub fn rank(self) -> u8 {
        match self {
            Tier::Gold => 1,
            Tier::Silver => 2,
            Tier::Bronze => 3,
        }
    }
}

/// Tier thresholds on the combined score, with hysteresis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TierConfig {
    /// Gold above this.
    pub gold: f64,
    /// Silver above this; below it a slot holder is swapped out.
    pub silver: f64,
    /// A host changes tier only once it is this many points past the threshold: scores that
    /// wobble around a threshold do not move hosts (and their slots) back and forth.
    pub hysteresis: f64,
    /// Weight of stability in the combined score (the rest is fitness).
    pub stability_weight: f64,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig {
            gold: 90.0,
            silver: 70.0,
            hysteresis: 5.0,
            stability_weight: 0.5,
        }
    }
}

impl TierConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=100.0).contains(&self.silver)
            || !(0.0..=100.0).contains(&self.gold)
            || self.silver >= self.gold
        {
            return Err(format!(
                "tier thresholds must satisfy 0 <= silver < gold <= 100 (got silver {}, gold {})",
                self.silver, self.gold
            ));
        }
        if !(0.0..=20.0).contains(&self.hysteresis) || !(0.0..=1.0).contains(&self.stability_weight)
        {
            return Err("hysteresis must be 0..20 points and stability_weight 0..1".into());
        }
        Ok(())
    }

    pub fn combined(&self, stability: f64, fitness: f64) -> f64 {
        self.stability_weight * stability + (1.0 - self.stability_weight) * fitness
    }

    /// The tier without history.
    pub fn plain(&self, score: f64) -> Tier {
        if score > self.gold {
            Tier::Gold
        } else if score > self.silver {
            Tier::Silver
        } else {
            Tier::Bronze
        }
    }

    /// The tier of a host that was in `previous`: it moves only when the score is past the
    /// threshold by the hysteresis band.
    pub fn next(&self, previous: Option<Tier>, score: f64) -> Tier {
        let plain = self.plain(score);
        let Some(prev) = previous else {
            return plain;
        };
        match plain.cmp(&prev) {
            std::cmp::Ordering::Equal => prev,
            // Better tier (lower ordinal): must clear the threshold of the tier it enters by h.
            std::cmp::Ordering::Less => {
                let t = if plain == Tier::Gold {
                    self.gold
                } else {
                    self.silver
                };
                if score > t + self.hysteresis {
                    plain
                } else if prev == Tier::Bronze
                    && plain == Tier::Gold
                    && score > self.silver + self.hysteresis
                {
                    Tier::Silver
                } else {
                    prev
                }
            }
            // Worse tier: must fall below the threshold it leaves by h.
            std::cmp::Ordering::Greater => {
                let t = if prev == Tier::Gold {
                    self.gold
                } else {
                    self.silver
                };
                if score <= t - self.hysteresis {
                    if plain == Tier::Bronze
                        && prev == Tier::Gold
                        && score > self.silver - self.hysteresis
                    {
                        Tier::Silver
                    } else {
                        plain
                    }
                } else {
                    prev
                }
            }
        }
    }

    /// Slots a host of `tier` may hold out of its `max_tasks`.
    pub fn slots(&self, tier: Tier, max_tasks: u32) -> u32 {
        match tier {
            Tier::Gold => max_tasks.max(1),
            Tier::Silver => max_tasks.div_ceil(2).max(1),
            Tier::Bronze => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_host() -> StabilityInputs {
        StabilityInputs {
            bandwidth_mbps: Some(100.0),
            rtt_ms: Some(5.0),
            jitter_ms: Some(0.5),
            device_class: DeviceClass::Server,
            bench_fps: Some(240.0),
            realtime_fps: 30.0,
            home_region: Some(true),
            interface: NetInterface::Ethernet,
            sessions: 20,
            disconnects: 0,
            online_hours: 500.0,
            gops_encoded: 100_000,
            failed_gops: 0,
        }
    }

    #[test]
    fn stability_of_a_perfect_host_is_near_100_and_terms_add_up() {
        let e = stability(&good_host(), &ScoreConfig::default());
        assert!(e.score > 97.0, "{e}");
        let sum: f64 = e.terms.iter().map(|t| t.weight).sum();
        assert!((sum - 1.0).abs() < 1e-9, "weights add up to 1");
        let recomputed: f64 = 100.0 * e.terms.iter().map(|t| t.value * t.weight).sum::<f64>();
        assert!((recomputed - e.score).abs() < 1e-9);
    }

    #[test]
    fn stability_worked_example() {
        // A wifi laptop abroad with a shaky link and a record of dropping out.
        let i = StabilityInputs {
            bandwidth_mbps: Some(10.0),        // 0.5
            rtt_ms: Some(105.0),               // 1 - 95/190 = 0.5
            jitter_ms: Some(25.0),             // 0.5
            device_class: DeviceClass::Laptop, // 0.6
            bench_fps: Some(30.0),             // 30 / 60 = 0.5
            realtime_fps: 30.0,
            home_region: Some(false),      // 0.7
            interface: NetInterface::Wifi, // 0.6
            sessions: 5,
            disconnects: 4,
            online_hours: 8.0, // rate 4.2/10 = 0.42/h; exp(-1.68) = 0.18637
            gops_encoded: 1000,
            failed_gops: 25, // 2.5% x 20 = 0.5 -> 0.5
        };
        let e = stability(&i, &ScoreConfig::default());
        let history = 0.6 * (-0.42f64 * 4.0).exp() + 0.4 * 0.5;
        let want = 100.0
            * (0.25 * 0.5 + 0.10 * 0.6 + 0.20 * 0.5 + 0.05 * 0.7 + 0.10 * 0.6 + 0.30 * history);
        assert!((e.score - want).abs() < 1e-9, "{} vs {want}\n{e}", e.score);
        let text = e.to_string();
        assert!(text.contains("rtt 105.0 ms"), "{text}");
        assert!(text.contains("4 disconnects in 8.0 h"), "{text}");
    }

    #[test]
    fn each_input_moves_stability_the_right_way() {
        let c = ScoreConfig::default();
        let base = stability(&good_host(), &c).score;
        let mut worse = Vec::new();
        let mut h = good_host();
        h.rtt_ms = Some(150.0);
        worse.push(("rtt", h));
        let mut h = good_host();
        h.jitter_ms = Some(40.0);
        worse.push(("jitter", h));
        let mut h = good_host();
        h.bandwidth_mbps = Some(3.0);
        worse.push(("bandwidth", h));
        let mut h = good_host();
        h.device_class = DeviceClass::Embedded;
        worse.push(("device", h));
        let mut h = good_host();
        h.bench_fps = Some(20.0);
        worse.push(("power", h));
        let mut h = good_host();
        h.home_region = Some(false);
        worse.push(("region", h));
        let mut h = good_host();
        h.interface = NetInterface::Cellular;
        worse.push(("interface", h));
        let mut h = good_host();
        h.disconnects = 30;
        worse.push(("disconnects", h));
        let mut h = good_host();
        h.failed_gops = 2_000;
        worse.push(("failed gops", h));
        for (what, h) in worse {
            let s = stability(&h, &c).score;
            assert!(s < base - 0.5, "{what}: {s} !< {base}");
        }
    }

    #[test]
    fn a_new_host_scores_neutral_not_perfect() {
        let e = stability(
            &StabilityInputs {
                realtime_fps: 30.0,
                ..Default::default()
            },
            &ScoreConfig::default(),
        );
        assert!((40.0..70.0).contains(&e.score), "{e}");
        assert!(e.to_string().contains("unmeasured"));
    }

    #[test]
    fn fitness_formula_and_gate() {
        let c = ScoreConfig::default();
        let i = FitnessInputs {
            speed_ratio: Some(0.875), // (0.875 - 0.8) / 0.15 = 0.5
            bench_ratio: Some(4.0),
            cpu_used: Some(0.6),
            mem_used: Some(0.2), // headroom 0.4
            psnr_db: Some(39.0), // 9/15 = 0.6
            incompatible: None,
        };
        let e = fitness(&i, &c);
        let want = 100.0 * (0.4 * 0.5 + 0.3 * 0.4 + 0.3 * 0.6);
        assert!((e.score - want).abs() < 1e-9, "{e}");
        // Keeping up with less than 80% of real time: no speed points at all.
        let slow = fitness(
            &FitnessInputs {
                speed_ratio: Some(0.7),
                ..i.clone()
            },
            &c,
        );
        // Idle: the join benchmark's margin decides ((1.25 - 1) / 0.5 = 0.5).
        let idle = fitness(
            &FitnessInputs {
                speed_ratio: None,
                bench_ratio: Some(1.25),
                ..i.clone()
            },
            &c,
        );
        assert!((idle.terms[0].value - 0.5).abs() < 1e-9, "{idle}");
        assert_eq!(slow.terms[0].value, 0.0);
        let bad = fitness(
            &FitnessInputs {
                incompatible: Some("x264 164 vs 163".into()),
                ..i
            },
            &c,
        );
        assert_eq!(bad.score, 0.0);
        assert!(bad.to_string().contains("incompatible: x264 164 vs 163"));
    }

    #[test]
    fn quiet_scores_equal_explained_ones_without_the_texts() {
        let c = ScoreConfig::default();
        let mut laptop = good_host();
        laptop.device_class = DeviceClass::Laptop;
        laptop.rtt_ms = None;
        laptop.disconnects = 7;
        for i in [good_host(), laptop, StabilityInputs::default()] {
            let (loud, quiet) = (stability(&i, &c), stability_quiet(&i, &c));
            assert_eq!(loud.score, quiet.score);
            assert!(loud.terms.iter().all(|t| !t.arithmetic.is_empty()));
            assert!(quiet.terms.iter().all(|t| t.arithmetic.is_empty()));
        }
        let busy = FitnessInputs {
            speed_ratio: Some(1.2),
            cpu_used: Some(0.7),
            psnr_db: Some(38.0),
            ..FitnessInputs::default()
        };
        let broken = FitnessInputs {
            incompatible: Some("x264 163 vs 164".into()),
            ..FitnessInputs::default()
        };
        for i in [busy, broken, FitnessInputs::default()] {
            let (loud, quiet) = (fitness(&i, &c), fitness_quiet(&i, &c));
            assert_eq!(loud.score, quiet.score);
            assert_eq!(loud.gate, quiet.gate);
            assert!(quiet.terms.iter().all(|t| t.arithmetic.is_empty()));
        }
    }

    #[test]
    fn nan_inputs_do_not_poison_a_score() {
        let c = ScoreConfig::default();
        let mut h = good_host();
        h.rtt_ms = Some(f64::NAN);
        h.bandwidth_mbps = Some(f64::INFINITY);
        let e = stability(&h, &c);
        assert!(
            e.score.is_finite() && (0.0..=100.0).contains(&e.score),
            "{e}"
        );
        assert!(
            e.score < stability(&good_host(), &c).score,
            "NaN is unknown, not perfect"
        );
    }

    #[test]
    fn tiers_with_hysteresis_do_not_flap() {
        let t = TierConfig::default();
        assert_eq!(t.plain(95.0), Tier::Gold);
        assert_eq!(t.plain(80.0), Tier::Silver);
        assert_eq!(t.plain(60.0), Tier::Bronze);
        // Wobbling around 70 keeps a silver host silver, and a bronze host bronze.
        let mut tier = Some(Tier::Silver);
        for s in [71.0, 68.0, 72.0, 66.0, 69.9, 73.0] {
            tier = Some(t.next(tier, s));
            assert_eq!(tier, Some(Tier::Silver), "score {s}");
        }
        assert_eq!(t.next(Some(Tier::Silver), 64.9), Tier::Bronze);
        let mut tier = Some(Tier::Bronze);
        for s in [71.0, 74.9, 68.0] {
            tier = Some(t.next(tier, s));
            assert_eq!(tier, Some(Tier::Bronze), "score {s}");
        }
        assert_eq!(t.next(Some(Tier::Bronze), 75.1), Tier::Silver);
        // A jump over two tiers lands where the band allows.
        assert_eq!(t.next(Some(Tier::Bronze), 92.0), Tier::Silver);
        assert_eq!(t.next(Some(Tier::Bronze), 96.0), Tier::Gold);
        assert_eq!(t.next(Some(Tier::Gold), 67.0), Tier::Silver);
        assert_eq!(t.next(Some(Tier::Gold), 50.0), Tier::Bronze);
        assert_eq!(t.next(None, 50.0), Tier::Bronze);
        // Flips counted over a noisy score series: bounded by the band.
        let mut tier = None;
        let mut flips = 0;
        for k in 0..1000 {
            let s = 70.0 + 4.0 * ((k as f64) * 0.7).sin();
            let n = t.next(tier, s);
            if tier.is_some_and(|p| p != n) {
                flips += 1;
            }
            tier = Some(n);
        }
        assert_eq!(flips, 0);
    }

    #[test]
    fn tier_slots_and_validation() {
        let t = TierConfig::default();
        assert_eq!(t.slots(Tier::Gold, 4), 4);
        assert_eq!(t.slots(Tier::Silver, 4), 2);
        assert_eq!(t.slots(Tier::Silver, 3), 2);
        assert_eq!(t.slots(Tier::Bronze, 4), 1);
        assert!(t.validate().is_ok());
        assert!(
            TierConfig {
                silver: 95.0,
                ..t.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            TierConfig {
                hysteresis: 50.0,
                ..t
            }
            .validate()
            .is_err()
        );
    }
}
