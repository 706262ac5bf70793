// SPDX-License-Identifier: MPL-2.0
//! The swarm's view of its hosts: what the controller measures and remembers of each host
//! (round trips over MQTT, encode speed, history), their scores and tiers
//! ([`crate::score`]), and peer swapping: a slot holder that falls to bronze has its slots
//! handed to the best spare by the controller's GOP-boundary handoff.

use super::{Controller, HostRecord};
use crate::score::{self, Explained, FitnessInputs, StabilityInputs, Tier};
use gopswarm_proto::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Round trips kept per host.
const RTT_WINDOW: usize = 16;
/// Encode-speed samples (heartbeats) kept per host; the fitness uses their median so one
/// heartbeat that straddles a task start does not move a host.
const SPEED_WINDOW: usize = 5;
/// Heartbeats with work a host needs before it can be swapped out for being slow.
const MIN_SPEED_SAMPLES: usize = 3;
/// How long a host's measured speed outweighs its join benchmark once it is idle again: a
/// host swapped out for being slow is not the first pick for the next slot.
const SPEED_MEMORY: Duration = Duration::from_secs(600);

/// What the stability score remembers of a host, persisted across orchestrator restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostHistory {
    pub online_secs: f64,
    pub gops: u64,
    pub failed_gops: u64,
    /// The host's own counters at its last heartbeat (they restart with the host process).
    last_gops_counter: u64,
    last_failed_counter: u64,
}

impl HostHistory {
    /// Add what a heartbeat's counters moved by since the last one.
    pub fn count(&mut self, m: &Metrics) {
        let delta = |now: u64, last: u64| if now >= last { now - last } else { now };
        self.gops += delta(m.gops_sent, self.last_gops_counter);
        self.failed_gops += delta(m.failed_gops, self.last_failed_counter);
        self.last_gops_counter = m.gops_sent;
        self.last_failed_counter = m.failed_gops;
    }
}

/// Round-trip times of the orchestrator's pings (command → ack through the broker).
#[derive(Debug, Clone, Default)]
pub struct RttWindow {
    samples: VecDeque<f64>,
}

impl RttWindow {
    pub fn push(&mut self, rtt: Duration) {
        self.samples.push_back(rtt.as_secs_f64() * 1000.0);
        if self.samples.len() > RTT_WINDOW {
            self.samples.pop_front();
        }
    }

    /// Median, ms.
    pub fn median_ms(&self) -> Option<f64> {
        median(self.samples.iter().copied())
    }

    /// Mean absolute deviation from the median, ms.
    pub fn jitter_ms(&self) -> Option<f64> {
        let m = self.median_ms()?;
        if self.samples.len() < 2 {
            return None;
        }
        Some(self.samples.iter().map(|x| (x - m).abs()).sum::<f64>() / self.samples.len() as f64)
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

fn median(it: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = it.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One interval of a host's life for the learned disconnect model: what the orchestrator
/// knew at its start and whether the host disconnected before its end. Persisted in the
/// state store; `gopswarm learn` trains on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistorySample {
    pub host: String,
    /// Start of the interval, ms since the Unix epoch.
    pub at_ms: u64,
    pub inputs: StabilityInputs,
    /// UTC minute of the day at the start.
    pub minute_of_day: usize,
    /// Tasks over the tasks it may hold.
    pub load_fraction: f64,
    pub label: bool,
}

/// A sample waiting for its interval to end.
#[derive(Debug, Clone)]
pub struct OpenSample {
    pub started: Instant,
    pub sample: HistorySample,
    pub deaths_at_start: u64,
}

fn utc_minute_of_day() -> usize {
    ((unix_micros() / 60_000_000) % 1440) as usize
}

/// Live measurements of a host (not persisted).
#[derive(Debug, Clone, Default)]
pub struct LiveStats {
    pub rtt: RttWindow,
    /// Frames through / frames real time needs, per heartbeat with work.
    speed: VecDeque<(Instant, f64)>,
    pub joined: Option<Instant>,
    pub last_swap: Option<Instant>,
    pub stability: Option<Explained>,
    pub fitness: Option<Explained>,
    pub combined: f64,
    /// What the last scoring saw (its explanation is rebuilt from these on demand) and the
    /// tier before it.
    pub scored_inputs: Option<(StabilityInputs, FitnessInputs)>,
    pub previous_tier: Option<Tier>,
    /// Last published score (to publish again only on change).
    published: Option<(String, i64, i64)>,
    /// The history sample of the current interval.
    pub open_sample: Option<OpenSample>,
    /// Disconnect probability from the learned model, if one is loaded.
    pub disconnect_risk: Option<f64>,
}

impl LiveStats {
    pub fn observe_speed(&mut self, m: &Metrics, now: Instant) {
        if m.realtime_fps > 0.0 && m.encode_fps.is_finite() {
            self.speed
                .push_back((now, (m.encode_fps / m.realtime_fps).min(2.0) as f64));
            if self.speed.len() > SPEED_WINDOW {
                self.speed.pop_front();
            }
        }
    }

    /// Median keep-up ratio of the recent heartbeats with work, once there are enough of
    /// them to judge.
    pub fn speed_ratio(&self, now: Instant) -> Option<f64> {
        if self.speed.len() < MIN_SPEED_SAMPLES
            || self
                .speed
                .back()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > SPEED_MEMORY)
        {
            return None;
        }
        median(self.speed.iter().map(|(_, r)| *r))
    }

    pub fn speed_samples(&self) -> usize {
        self.speed.len()
    }
}

/// The score inputs the controller has for a host.
pub fn stability_inputs(h: &HostRecord, home_region: Option<&str>) -> StabilityInputs {
    let caps = h.capabilities.clone().unwrap_or_default();
    let bench = caps.bench.first();
    StabilityInputs {
        bandwidth_mbps: caps.bandwidth_mbps,
        rtt_ms: h.live.rtt.median_ms(),
        jitter_ms: h.live.rtt.jitter_ms(),
        device_class: caps
            .device_class
            .as_deref()
            .and_then(|d| d.parse().ok())
            .unwrap_or_default(),
        bench_fps: bench.map(|b| b.fps),
        realtime_fps: bench.map_or(30.0, |b| b.realtime_fps),
        home_region: match (caps.region.as_deref(), home_region) {
            (Some(r), Some(home)) => Some(r == home),
            _ => None,
        },
        interface: caps
            .interface
            .as_deref()
            .and_then(|i| i.parse().ok())
            .unwrap_or_default(),
        sessions: h.births,
        disconnects: h.deaths,
        online_hours: h.history.online_secs / 3600.0,
        gops_encoded: h.history.gops,
        failed_gops: h.history.failed_gops,
    }
}

pub fn fitness_inputs(h: &HostRecord, now: Instant) -> FitnessInputs {
    let caps = h.capabilities.clone().unwrap_or_default();
    let m = &h.metrics;
    let cores = caps.cores.max(1) as f64;
    let bench = caps.bench.first();
    FitnessInputs {
        speed_ratio: h.live.speed_ratio(now),
        bench_ratio: bench
            .filter(|b| b.realtime_fps > 0.0)
            .map(|b| b.fps / b.realtime_fps),
        cpu_used: h.last_seen.map(|_| m.cpu_percent as f64 / (100.0 * cores)),
        mem_used: (caps.mem_bytes > 0 && h.last_seen.is_some())
            .then(|| m.mem_bytes as f64 / caps.mem_bytes as f64),
        psnr_db: m.psnr_db.map(f64::from),
        incompatible: h.incompatible.clone(),
    }
}

impl Controller {
    /// Slots the streams hold now, and slots the live hosts' tiers allow (cordoned hosts, being
    /// emptied for an update or a deprovision, take none).
    pub fn demand_and_capacity(&self) -> (f64, f64) {
        let demand: usize = self
            .streams
            .values()
            .flat_map(|s| s.profiles.values())
            .filter_map(|p| p.history.last())
            .map(|e| e.hosts.len())
            .sum();
        let capacity: u32 = self
            .hosts
            .values()
            .filter(|h| h.alive && h.incompatible.is_none() && !h.cordoned)
            .map(|h| match h.tier {
                Some(t) => self.cfg.tiers.slots(t, h.max_tasks()),
                None => h.max_tasks(),
            })
            .sum();
        (demand as f64, capacity as f64)
    }

    fn live_hosts(&self) -> Vec<String> {
        self.hosts
            .values()
            .filter(|h| h.alive)
            .map(|h| h.id.clone())
            .collect()
    }

    /// Send a round-trip probe to every live host (a `ping` command; its ack closes the
    /// round trip). Probes that never come back are forgotten at the next round.
    pub fn probe(&mut self, now: Instant) {
        self.pings.clear();
        let live = self.live_hosts();
        for host in live {
            self.next_cmd += 1;
            let id = format!("o{}-p{}", self.epoch, self.next_cmd);
            let cmd = Command {
                id: id.clone(),
                epoch: self.epoch,
                kind: CommandKind::Ping,
            };
            self.pings.insert(id, (host.clone(), now));
            self.emit(Topic::Command(host), encode(&cmd), false);
        }
    }

    /// Score one host and move its tier (with hysteresis). Only the numbers: the arithmetic
    /// behind them is written out when a score is published or explained.
    pub(crate) fn rescore_host(&mut self, host: &str, now: Instant) {
        let home = self.cfg.home_region.clone();
        let Some(h) = self.hosts.get(host) else {
            return;
        };
        let stability_in = stability_inputs(h, home.as_deref());
        let fitness_in = fitness_inputs(h, now);
        let st = score::stability_quiet(&stability_in, &self.cfg.scores);
        let fit = score::fitness_quiet(&fitness_in, &self.cfg.scores);
        let tiers = &self.cfg.tiers;
        let combined = tiers.combined(st.score, fit.score);
        let previous = h.tier;
        let tier = tiers.next(previous, combined);
        let load_fraction = h.load() as f64 / h.max_tasks().max(1) as f64;
        let risk = self
            .disconnect_model
            .as_ref()
            .map(|m| m.disconnect_probability(&stability_in, utc_minute_of_day(), load_fraction));
        let h = self.hosts.get_mut(host).unwrap();
        h.live.disconnect_risk = risk;
        if previous != Some(tier) {
            tracing::info!(
                "host {host}: tier {} -> {tier:?} (score {combined:.1})",
                previous.map_or_else(|| "-".to_string(), |t| format!("{t:?}"))
            );
        }
        h.tier = Some(tier);
        h.live.stability = Some(st);
        h.live.fitness = Some(fit);
        h.live.combined = combined;
        h.live.scored_inputs = Some((stability_in, fitness_in));
        h.live.previous_tier = previous;
        self.reindex(host);
    }

    /// The tier arithmetic of a host's last scoring.
    fn tier_note(&self, h: &HostRecord) -> String {
        let tiers = &self.cfg.tiers;
        let (st, fit) = (
            h.live.stability.as_ref().map_or(0.0, |e| e.score),
            h.live.fitness.as_ref().map_or(0.0, |e| e.score),
        );
        let name =
            |t: Option<Tier>| t.map_or("none".to_string(), |t| format!("{t:?}").to_lowercase());
        format!(
            "combined = {:.2} x stability {st:.1} + {:.2} x fitness {fit:.1} = {:.1}; \
             thresholds gold > {}, silver > {} (hysteresis {} points); previous tier {}; now {} \
             ({} of {} slots)",
            tiers.stability_weight,
            1.0 - tiers.stability_weight,
            h.live.combined,
            tiers.gold,
            tiers.silver,
            tiers.hysteresis,
            name(h.live.previous_tier),
            name(h.tier),
            h.tier.map_or(0, |t| tiers.slots(t, h.max_tasks())),
            h.max_tasks(),
        )
    }

    /// Score every live host, publish the scores that changed, and swap out slot holders
    /// that fell to bronze. Call once per keep-alive.
    pub fn rescore(&mut self, now: Instant) {
        let live = self.live_hosts();
        for host in &live {
            self.rescore_host(host, now);
            self.publish_score(host);
        }
        self.record_history(now);
        if self.cfg.peer_swap {
            self.swap_out_weak(now);
        }
        if self.cfg.backup_copies {
            self.assign_backups();
        }
    }

    /// Close the history samples whose interval ended (labelled by whether the host died
    /// in it) and open the next for every live host.
    fn record_history(&mut self, now: Instant) {
        let interval = self.cfg.history_interval;
        if interval.is_zero() {
            return;
        }
        let home = self.cfg.home_region.clone();
        let ids: Vec<String> = self.hosts.keys().cloned().collect();
        for id in ids {
            let h = self.hosts.get_mut(&id).unwrap();
            if let Some(open) = &h.live.open_sample
                && now.saturating_duration_since(open.started) >= interval
            {
                let mut done = h.live.open_sample.take().unwrap();
                done.sample.label = h.deaths > done.deaths_at_start;
                self.samples_out.push(done.sample);
            }
            let h = &self.hosts[&id];
            if h.alive && h.live.open_sample.is_none() {
                let sample = HistorySample {
                    host: id.clone(),
                    at_ms: unix_micros() / 1000,
                    inputs: stability_inputs(h, home.as_deref()),
                    minute_of_day: utc_minute_of_day(),
                    load_fraction: h.load() as f64 / h.max_tasks().max(1) as f64,
                    label: false,
                };
                let deaths = h.deaths;
                self.hosts.get_mut(&id).unwrap().live.open_sample = Some(OpenSample {
                    started: now,
                    sample,
                    deaths_at_start: deaths,
                });
            }
        }
    }

    /// History samples closed since the last call (for the state store).
    pub fn take_samples(&mut self) -> Vec<HistorySample> {
        std::mem::take(&mut self.samples_out)
    }

    fn publish_score(&mut self, host: &str) {
        let Some(h) = self.hosts.get(host) else {
            return;
        };
        let (Some(tier), Some(st), Some(fit)) = (h.tier, &h.live.stability, &h.live.fitness) else {
            return;
        };
        // Compared before the message (and its explanation) is built: most rounds change nothing.
        let key = (
            format!("{tier:?}").to_lowercase(),
            st.score.round() as i64,
            fit.score.round() as i64,
        );
        if h.live.published.as_ref() == Some(&key) {
            return;
        }
        let Some(msg) = self.host_score(host) else {
            return;
        };
        self.hosts.get_mut(host).unwrap().live.published = Some(key);
        self.emit(Topic::Score(host.to_string()), encode(&msg), true);
    }

    /// The score message of a host (what `gopswarm explain` prints).
    pub fn host_score(&self, host: &str) -> Option<HostScore> {
        let h = self.hosts.get(host)?;
        let (st, fit) = (h.live.stability.as_ref()?, h.live.fitness.as_ref()?);
        let tier = h.tier?;
        let (stability_in, fitness_in) = h.live.scored_inputs.as_ref()?;
        // The same functions on the same inputs as the scoring, now with their arithmetic.
        let (st_explained, fit_explained) = (
            score::stability(stability_in, &self.cfg.scores),
            score::fitness(fitness_in, &self.cfg.scores),
        );
        Some(HostScore {
            host: host.to_string(),
            stability: st.score,
            fitness: fit.score,
            combined: h.live.combined.clamp(0.0, 100.0),
            tier: format!("{tier:?}").to_lowercase(),
            slots: self.cfg.tiers.slots(tier, h.max_tasks()),
            explanation: format!("{st_explained}\n{fit_explained}\n{}", self.tier_note(h)),
            disconnect_risk: h.live.disconnect_risk,
            at_ms: unix_micros() / 1000,
        })
    }

    /// Slot holders in bronze hand one slot each (per round, up to `max_swaps_per_round`) to
    /// the best spare of a better tier. Hysteresis in the tiers keeps a host that wobbles
    /// around the threshold where it is; a host is judged on its speed only once it has
    /// `MIN_SPEED_SAMPLES` heartbeats with work.
    fn swap_out_weak(&mut self, now: Instant) {
        let mut weak: Vec<(f64, String)> = self
            .hosts
            .values()
            .filter(|h| h.alive && h.tier == Some(Tier::Bronze) && !h.tasks.is_empty())
            .filter(|h| h.live.speed_samples() >= MIN_SPEED_SAMPLES)
            .map(|h| (h.live.combined, h.id.clone()))
            .collect();
        weak.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut swaps = 0;
        for (_, host) in weak {
            if swaps >= self.cfg.max_swaps_per_round {
                break;
            }
            let slots: Vec<(String, String)> = self.hosts[&host]
                .tasks
                .iter()
                .filter(|t| t.role == TaskRole::Active && t.until_gop.is_none())
                .map(|t| (t.stream.clone(), t.profile.clone()))
                .collect();
            for (stream, profile) in slots {
                if self.busy(&stream, &profile) || !self.holders_reached_layout(&stream, &profile) {
                    continue;
                }
                let holders: BTreeSet<String> = self.streams[&stream].profiles[&profile]
                    .history
                    .last()
                    .map(|e| e.hosts.iter().cloned().collect())
                    .unwrap_or_default();
                let spare = self
                    .free_hosts()
                    .find(|id| {
                        !holders.contains(*id)
                            && self.hosts[*id].tier.is_some_and(|t| t < Tier::Bronze)
                            && self.encoder_mismatch(id, &stream, &profile).is_none()
                    })
                    .map(str::to_string);
                let Some(spare) = spare else {
                    tracing::warn!(
                        "host {host} is bronze but no better spare is free for {stream}/{profile}"
                    );
                    continue;
                };
                match self.start_handoff(&stream, &profile, &host, Some(&spare), now) {
                    Ok(to) => {
                        tracing::info!(
                            "peer swap: {stream}/{profile} slot of {host} (score {:.1}) -> {to} (score {:.1})",
                            self.hosts[&host].live.combined,
                            self.hosts[&to].live.combined
                        );
                        self.stats.peer_swaps += 1;
                        self.hosts.get_mut(&host).unwrap().live.last_swap = Some(now);
                        swaps += 1;
                    }
                    Err(e) => tracing::warn!("peer swap of {host}: {e}"),
                }
                if swaps >= self.cfg.max_swaps_per_round {
                    break;
                }
            }
        }
    }

    /// Bronze hosts take the backup role: every slot of a layout in force gets a copy-only
    /// task on a spare bronze host that runs the profile's encoder version, so a primary's
    /// death loses none of its GOPs before the re-deal. A backup follows its layout: a new
    /// epoch re-points it at the same slot from the epoch's first GOP (it covers the old
    /// slot until then); when its slot is gone it drains at that GOP. A backup whose host
    /// left bronze or was cordoned is taken back: the host is free for primary roles or for
    /// its update. Call once per scoring round.
    pub fn assign_backups(&mut self) {
        let backups: Vec<(String, Task)> = self
            .hosts
            .values()
            .flat_map(|h| {
                h.tasks
                    .iter()
                    .filter(|t| t.role == TaskRole::Copy && t.until_gop.is_none())
                    .map(|t| (h.id.clone(), t.clone()))
            })
            .collect();
        // Slots of each layout in force that have a backup.
        let mut covered: BTreeSet<(String, String, u32)> = BTreeSet::new();
        for (host, t) in backups {
            let in_force = self
                .streams
                .get(&t.stream)
                .and_then(|s| s.profiles.get(&t.profile))
                .and_then(|p| p.history.last().cloned());
            let h = &self.hosts[&host];
            let role_kept = h.alive && !h.cordoned && h.tier == Some(Tier::Bronze);
            let Some(e) = in_force.filter(|_| role_kept) else {
                self.name_backup(&t.stream, &t.profile, t.slot_index, &host, false);
                self.set_task(&host, &t.stream, &t.profile, None);
                self.stats.backups_taken += 1;
                continue;
            };
            if (t.slot_index as usize) >= e.hosts.len() {
                // Its slot is gone in the new epoch: cover the old one up to the switch.
                let last = e.from_gop.saturating_sub(1);
                self.drain_task(&host, &t.stream, &t.profile, last);
                self.stats.backups_taken += 1;
                continue;
            }
            if t.layout_epoch != e.epoch {
                self.name_backup(&t.stream, &t.profile, t.slot_index, &host, true);
                let task = self.backup_task(&t.stream, &t.profile, &e, t.slot_index);
                self.set_task(&host, &t.stream, &t.profile, Some(task));
            }
            covered.insert((t.stream, t.profile, t.slot_index));
        }
        let layouts: Vec<(String, String, LayoutEpoch)> = self
            .streams
            .iter()
            .flat_map(|(s, r)| {
                r.profiles
                    .iter()
                    .filter(|(_, p)| p.op.is_none())
                    .filter_map(|(p, ps)| {
                        ps.history.last().map(|e| (s.clone(), p.clone(), e.clone()))
                    })
            })
            .collect();
        // Bronze hosts with room, in placement order; a bronze host holds one task, so each
        // is used once. Collected once: a round scans the free hosts once, not per slot.
        let mut spares: Vec<String> = self
            .free_hosts()
            .filter(|id| self.hosts[*id].tier == Some(Tier::Bronze))
            .map(str::to_string)
            .collect();
        for (stream, profile, e) in layouts {
            for slot in 0..e.hosts.len() as u32 {
                if spares.is_empty() {
                    return;
                }
                if covered.contains(&(stream.clone(), profile.clone(), slot)) {
                    continue;
                }
                let Some(i) = spares.iter().position(|id| {
                    !self.hosts[id]
                        .tasks
                        .iter()
                        .any(|t| t.stream == stream && t.profile == profile)
                        && self.encoder_mismatch(id, &stream, &profile).is_none()
                }) else {
                    break;
                };
                let spare = spares.remove(i);
                tracing::info!("backup: {stream}/{profile} slot {slot} copied by {spare}");
                // Named in the layout first: the merger takes copies only from named backups.
                self.name_backup(&stream, &profile, slot, &spare, true);
                let task = self.backup_task(&stream, &profile, &e, slot);
                self.set_task(&spare, &stream, &profile, Some(task));
                self.stats.backups_given += 1;
            }
        }
    }

    /// Name `host` as the backup of `slot` in the layout in force, or (`named` false) stop
    /// naming it there, and publish the layout if that changed it. Earlier epochs keep the
    /// backups they had: the merger checks a copy against the epoch of its GOP.
    fn name_backup(&mut self, stream: &str, profile: &str, slot: u32, host: &str, named: bool) {
        let Some(e) = self
            .streams
            .get_mut(stream)
            .and_then(|s| s.profiles.get_mut(profile))
            .and_then(|p| p.history.last_mut())
        else {
            return;
        };
        let b = BackupSlot {
            slot,
            host: host.to_string(),
        };
        let before = e.backups.len();
        if named {
            if e.backups.contains(&b) {
                return;
            }
            e.backups.push(b);
        } else {
            e.backups.retain(|x| x.host != host);
            if e.backups.len() == before {
                return;
            }
        }
        self.dirty_streams.insert(stream.to_string());
        self.publish_layout(stream, profile);
    }

    /// A copy-only task of one slot: one copy per GOP, whatever the layout's redundancy.
    fn backup_task(&self, stream: &str, profile: &str, e: &LayoutEpoch, slot: u32) -> Task {
        let mut task = self.make_task(stream, profile, TaskRole::Copy, e, slot);
        task.redundancy = 0;
        task
    }
}

impl Controller {
    /// Take back every backup copy `host` holds, so it can take a primary of
    /// (stream, profile).
    pub(super) fn take_backups(&mut self, host: &str, stream: &str, profile: &str) {
        for (s, p) in self.drop_backups(host) {
            tracing::info!(
                "backup: {s}/{p} on {host} gives way to a primary of {stream}/{profile}"
            );
        }
    }

    /// Drop every backup copy `host` holds (a backup holds nothing the output needs); the
    /// (stream, profile) of each.
    pub(super) fn drop_backups(&mut self, host: &str) -> Vec<(String, String)> {
        let copies: Vec<(String, String, u32)> = self.hosts[host]
            .tasks
            .iter()
            .filter(|t| t.role == TaskRole::Copy)
            .map(|t| (t.stream.clone(), t.profile.clone(), t.slot_index))
            .collect();
        for (s, p, slot) in &copies {
            self.name_backup(s, p, *slot, host, false);
            self.set_task(host, s, p, None);
            self.stats.backups_taken += 1;
        }
        copies.into_iter().map(|(s, p, _)| (s, p)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_median_and_jitter() {
        let mut w = RttWindow::default();
        assert_eq!(w.median_ms(), None);
        for ms in [10, 12, 11, 50, 9] {
            w.push(Duration::from_millis(ms));
        }
        assert_eq!(w.median_ms(), Some(11.0));
        // |10-11| + |12-11| + 0 + |50-11| + |9-11| = 43, / 5
        assert!((w.jitter_ms().unwrap() - 8.6).abs() < 1e-9);
        for _ in 0..40 {
            w.push(Duration::from_millis(1));
        }
        assert_eq!(w.len(), RTT_WINDOW);
        assert_eq!(w.median_ms(), Some(1.0));
    }

    #[test]
    fn history_counts_across_host_restarts() {
        let mut h = HostHistory::default();
        let m = |gops, failed| Metrics {
            gops_sent: gops,
            failed_gops: failed,
            ..Default::default()
        };
        h.count(&m(10, 0));
        h.count(&m(25, 1));
        // The host process restarted: its counters start again from zero.
        h.count(&m(4, 0));
        assert_eq!(h.gops, 29);
        assert_eq!(h.failed_gops, 1);
    }

    #[test]
    fn speed_is_a_median_of_heartbeats_with_work() {
        let mut l = LiveStats::default();
        let t0 = Instant::now();
        let m = |fps: f32, rt: f32| Metrics {
            encode_fps: fps,
            realtime_fps: rt,
            ..Default::default()
        };
        l.observe_speed(&m(0.0, 0.0), t0); // idle: not a sample
        assert_eq!(l.speed_samples(), 0);
        l.observe_speed(&m(10.0, 30.0), t0);
        l.observe_speed(&m(10.0, 30.0), t0);
        assert_eq!(
            l.speed_ratio(t0),
            None,
            "two heartbeats are too few to judge"
        );
        for fps in [30.0, 29.0, 12.0, 30.0, 31.0] {
            l.observe_speed(&m(fps, 30.0), t0);
        }
        // One heartbeat that straddled a task start does not count.
        assert!((l.speed_ratio(t0).unwrap() - 1.0).abs() < 1e-6);
        // Idle again: the measured speed counts for a while, then the benchmark again.
        l.observe_speed(&m(0.0, 0.0), t0);
        assert!(l.speed_ratio(t0 + Duration::from_secs(60)).is_some());
        assert_eq!(l.speed_ratio(t0 + SPEED_MEMORY * 2), None);
    }
}
