// SPDX-License-Identifier: MPL-2.0
//! The swarm controller: host registry, slot assignment, failure handling and the GOP-boundary
//! handoff protocol, as a pure state machine. It takes decoded messages and clock ticks and
//! returns the messages to publish; the service (`crate::service`) does the I/O and the store.
//!
//! # Layouts and epochs
//!
//! Each (stream, profile) has a layout history: epoch `e` from GOP `k` on, slot `i` held by
//! host `hosts[i]`, redundancy `r`. Every change makes a new epoch that starts at a GOP at
//! least `switch_margin_gops` ahead of every involved host, so every host applies it at the
//! same GOP boundary. Hosts stamp the epoch on their chunks; the merger refuses chunks whose
//! epoch is older than the epoch in force at their GOP (a stale holder cannot add anything).
//!
//! # Start and planned handoff
//!
//! Prepare (the new host runs its pipeline in standby and acks with the GOP it is at) → commit
//! (the new host takes the slot from GOP `k`, acks while still before `k`) → drain (the old
//! host stops after `k - 1`). The old host is told to stop only after the new one confirmed
//! in time; a new host that is not ready before the deadline is aborted and the old one keeps
//! going; a commit ack that comes too late moves `k` later with a new epoch.
//!
//! # Failure
//!
//! A death (last will with the live connection's seq) or missed heartbeats (`dead_after`)
//! re-deals the host's slots over the surviving holders from the next safe GOP. With
//! redundancy the dead host's GOPs up to then come from the redundant copies; without it
//! they are lost, bounded by detection time + margin, and reported by the merger.
//!
//! # Where the code is
//!
//! This file holds the [`Controller`] state, its configuration and the entry points the
//! service calls (messages in, ticks, streams added and removed, messages out). The rest is
//! split by concern: [`hosts`] (registry and presence), [`layouts`] (placement and layout
//! changes), [`handoff`] (the GOP-boundary handoff) and [`fleet`] (host scores, tiers, peer
//! swaps and backups).

pub mod fleet;
mod handoff;
mod hosts;
mod layouts;

use gopswarm_proto::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Config {
    /// Host heartbeat / MQTT keep-alive interval.
    pub keepalive: Duration,
    /// A host silent this long is dead (default 1.5 x keepalive).
    pub dead_after: Duration,
    /// GOPs between the furthest involved host and a switch GOP.
    pub switch_margin_gops: u64,
    /// After our own reconnect to the broker: how long hosts get to reconnect (their
    /// backoff tops out at 5 s) before silence counts again.
    pub reconnect_grace: Duration,
    /// How long a prepared host may take to ack ready.
    pub prepare_timeout: Duration,
    /// How long a commit may wait for its ack.
    pub commit_timeout: Duration,
    /// Hosts per profile when the stream does not say and carries no complexity.
    pub default_slots: u32,
    pub default_redundancy: u32,
    /// Swarm sizing from content complexity.
    pub sizing: Sizing,
    /// Score reference points and weights.
    pub scores: crate::score::ScoreConfig,
    /// Tier thresholds and hysteresis.
    pub tiers: crate::score::TierConfig,
    /// The swarm's home region (hosts elsewhere score lower on region).
    pub home_region: Option<String>,
    /// Hand a slot holder's slots to the best spare when it falls to bronze.
    pub peer_swap: bool,
    /// Slots moved by peer swapping per scoring round, at most.
    pub max_swaps_per_round: usize,
    /// Give spare bronze hosts backup roles: a copy-only task per slot of the layouts in
    /// force, so a primary's death loses none of its GOPs before the re-deal.
    pub backup_copies: bool,
    /// Length of one host history sample (the learned model predicts a disconnect within
    /// one such interval); zero: no samples.
    pub history_interval: Duration,
    /// A dead host with no task and no place in a layout is forgotten after this long (its
    /// record, score and history), so forged or long-gone hosts do not pile up.
    pub forget_dead_after: Duration,
    /// A layout left with fewer slots than its stream plans (its holders died or were moved
    /// off) grows back onto a free host once it has been short this long; `None`: never (the
    /// simulator's scaler grows layouts itself).
    pub regrow_after: Option<Duration>,
}

/// Complexity level of a stream's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Low,
    Medium,
    High,
}

/// How the swarm controller sizes a stream from its measured complexity and the free hosts.
/// Thresholds are P.910 SI/TI on the 8-bit luma scale of the sampled (downscaled) frames.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Sizing {
    /// Below both: low complexity.
    pub si_low: f64,
    pub ti_low: f64,
    /// Above either: high complexity.
    pub si_high: f64,
    pub ti_high: f64,
    /// Hosts per profile for low, medium and high complexity.
    pub slots: [u32; 3],
    /// Redundant copies when there are hosts enough for it; 0 on a swarm too small to keep
    /// one free host besides the slots (an encoder fleet running at its limit).
    pub redundancy: u32,
}

impl Default for Sizing {
    fn default() -> Self {
        // Calibrated on the sample clips (320x180 luma): bigbuckbunny SI 76 TI 18 and carphone
        // SI 92 TI 9 are medium; the synthetic zone plate and snow (SI 218) and bikes (TI 63)
        // are high.
        Sizing {
            si_low: 50.0,
            ti_low: 10.0,
            si_high: 150.0,
            ti_high: 40.0,
            slots: [2, 3, 4],
            redundancy: 1,
        }
    }
}

impl Sizing {
    pub fn level(&self, c: &ContentComplexity) -> Level {
        if c.si > self.si_high || c.ti > self.ti_high {
            Level::High
        } else if c.si < self.si_low && c.ti < self.ti_low {
            Level::Low
        } else {
            Level::Medium
        }
    }

    /// (slots, redundancy, level) for a stream of complexity `c` with `free` hosts available.
    pub fn plan(&self, c: &ContentComplexity, free: usize) -> (u32, u32, Level) {
        let level = self.level(c);
        let want = self.slots[level as usize];
        let slots = want.min(free.max(1) as u32);
        let redundancy = if slots >= 2 && free > slots as usize {
            self.redundancy.min(slots - 1)
        } else {
            0
        };
        (slots, redundancy, level)
    }
}

impl Default for Config {
    fn default() -> Self {
        let keepalive = Duration::from_secs(2);
        Config {
            keepalive,
            dead_after: keepalive * 3 / 2,
            switch_margin_gops: 2,
            reconnect_grace: Duration::from_secs(6),
            prepare_timeout: Duration::from_secs(20),
            commit_timeout: Duration::from_secs(5),
            default_slots: 3,
            default_redundancy: 0,
            sizing: Sizing::default(),
            scores: Default::default(),
            tiers: Default::default(),
            home_region: None,
            peer_swap: true,
            max_swaps_per_round: 2,
            backup_copies: false,
            history_interval: Duration::from_secs(600),
            forget_dead_after: Duration::from_secs(3600),
            regrow_after: Some(Duration::from_secs(10)),
        }
    }
}

/// A message to publish (QoS 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Out {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// What the registry keeps of a host (persisted).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRecord {
    pub id: String,
    pub seq: u64,
    pub alive: bool,
    pub versions: Option<Versions>,
    pub capabilities: Option<Capabilities>,
    /// Why it may not take slots.
    pub incompatible: Option<String>,
    pub revision: u64,
    pub tasks: Vec<Task>,
    pub applied_revision: u64,
    pub births: u64,
    pub deaths: u64,
    #[serde(skip)]
    pub last_seen: Option<Instant>,
    #[serde(skip)]
    pub status: BTreeMap<(String, String), TaskStatus>,
    #[serde(skip)]
    pub metrics: Metrics,
    /// What the stability score remembers of the host (persisted).
    #[serde(default)]
    pub history: fleet::HostHistory,
    /// Current tier (persisted: hysteresis continues across orchestrator restarts).
    #[serde(default)]
    pub tier: Option<crate::score::Tier>,
    #[serde(skip)]
    pub live: fleet::LiveStats,
    /// Takes no new slot: it is being emptied for an update or a deprovision.
    #[serde(skip)]
    pub cordoned: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileState {
    pub spec: String,
    pub history: Vec<LayoutEpoch>,
    #[serde(skip)]
    pub op: Option<Op>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamRecord {
    pub def: StreamDef,
    pub profiles: BTreeMap<String, ProfileState>,
}

/// An operation in flight on a (stream, profile).
#[derive(Debug, Clone)]
pub enum Op {
    /// A new layout over `hosts`: waiting for the prepared ones to be ready. The first
    /// layout, a growth (the holders count as ready), a replacement of some holders (the
    /// others count as ready), or a migration of the whole profile to hosts of another encoder
    /// version; `leaving` (the replaced holders) drain once it is committed.
    Start {
        hosts: Vec<String>,
        ready: BTreeMap<String, u64>,
        deadline: Instant,
        leaving: Vec<String>,
    },
    /// Planned move of one slot.
    Handoff(Handoff),
}

#[derive(Debug, Clone)]
pub struct Handoff {
    pub from: String,
    pub to: String,
    pub slot: u32,
    pub stage: HandoffStage,
    pub deadline: Instant,
    pub started: Instant,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HandoffStage {
    Preparing { cmd: String },
    Committing { cmd: String, epoch: u64, k: u64 },
}

/// A finished handoff, for reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HandoffRecord {
    pub stream: String,
    pub profile: String,
    pub from: String,
    pub to: String,
    pub epoch: u64,
    pub switch_gop: u64,
    /// GOP the new host was at when it was asked to prepare.
    pub decided_at_gop: Option<u64>,
    pub retries: u32,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ControllerStats {
    pub births: u64,
    pub deaths: u64,
    pub stale_deaths: u64,
    pub missed_heartbeats: u64,
    pub layouts: u64,
    pub handoffs_done: u64,
    /// Slots that changed host in a switch of several at once (a replacement of holders or a
    /// migration), not by a handoff each.
    pub slots_moved_together: u64,
    pub handoffs_aborted: u64,
    pub handoff_retries: u64,
    pub commands: u64,
    pub refused_incompatible: u64,
    pub peer_swaps: u64,
    /// Backup (copy-only) tasks given to bronze hosts, and taken back.
    pub backups_given: u64,
    pub backups_taken: u64,
}

pub struct Controller {
    pub cfg: Config,
    pub versions: Versions,
    /// Orchestrator epoch: increases at every start, carried by commands.
    pub epoch: u64,
    pub hosts: BTreeMap<String, HostRecord>,
    /// Hosts that can take a task: best tier first, then least loaded, then id.
    free: BTreeSet<(u8, usize, String)>,
    indexed_load: HashMap<String, (u8, usize)>,
    /// Round-trip probes in flight: command id -> (host, sent at).
    pub(crate) pings: HashMap<String, (String, Instant)>,
    /// Learned disconnect model, when one is loaded.
    pub disconnect_model: Option<crate::learn::Model>,
    pub(crate) samples_out: Vec<fleet::HistorySample>,
    pub streams: BTreeMap<String, StreamRecord>,
    pub next_cmd: u64,
    pub stats: ControllerStats,
    pub handoffs: Vec<HandoffRecord>,
    /// Commands waiting for acks: id -> (host, stream, profile).
    pending: HashMap<String, (String, String, String)>,
    /// Hosts and streams whose persisted record changed since the last `take_dirty`.
    dirty_hosts: BTreeSet<String>,
    dirty_streams: BTreeSet<String>,
    out: Vec<Out>,
    /// Layouts short of their planned slots: when the next growth may be tried, and how
    /// many tries found no host ready (each doubles the wait).
    regrow: HashMap<(String, String), layouts::Regrow>,
}

impl Controller {
    pub fn new(cfg: Config, versions: Versions, epoch: u64) -> Self {
        Controller {
            cfg,
            versions,
            epoch,
            hosts: BTreeMap::new(),
            free: BTreeSet::new(),
            indexed_load: HashMap::new(),
            pings: HashMap::new(),
            disconnect_model: None,
            samples_out: Vec::new(),
            streams: BTreeMap::new(),
            next_cmd: 0,
            stats: ControllerStats::default(),
            handoffs: Vec::new(),
            pending: HashMap::new(),
            dirty_hosts: BTreeSet::new(),
            dirty_streams: BTreeSet::new(),
            out: Vec::new(),
            regrow: HashMap::new(),
        }
    }

    /// Restore persisted state. Hosts get a full `dead_after` of grace from `now`: a restart
    /// reassigns nothing by itself. Retained assignments and layouts are published again
    /// (unchanged revisions: hosts ignore them).
    pub fn restore(
        &mut self,
        hosts: Vec<HostRecord>,
        streams: Vec<StreamRecord>,
        next_cmd: u64,
        now: Instant,
    ) {
        self.next_cmd = next_cmd;
        for mut h in hosts {
            h.last_seen = Some(now);
            let id = h.id.clone();
            self.hosts.insert(id.clone(), h);
            self.reindex(&id);
        }
        for s in streams {
            self.streams.insert(s.def.id.clone(), s);
        }
        self.republish();
    }

    /// Our own link to the broker was down: silence in that time says nothing about the hosts,
    /// and they come back on their own backoff. Give every live host `reconnect_grace` plus a
    /// full `dead_after` from `now`.
    pub fn grace(&mut self, now: Instant) {
        let until = now + self.cfg.reconnect_grace;
        for h in self.hosts.values_mut().filter(|h| h.alive) {
            h.last_seen = Some(until);
        }
    }

    /// Publish every retained desired state again (after a restart of ours or the broker's).
    pub fn republish(&mut self) {
        let ids: Vec<String> = self.hosts.keys().cloned().collect();
        for id in ids {
            if self.hosts[&id].revision > 0 {
                self.publish_assignment(&id);
            }
        }
        let keys: Vec<(String, String)> = self
            .streams
            .iter()
            .flat_map(|(s, r)| r.profiles.keys().map(move |p| (s.clone(), p.clone())))
            .collect();
        for (s, p) in keys {
            self.publish_layout(&s, &p);
        }
        let defs: Vec<StreamDef> = self.streams.values().map(|s| s.def.clone()).collect();
        for d in defs {
            self.emit(Topic::StreamDef(d.id.clone()), encode(&d), true);
        }
    }

    /// Messages to go out with the next [`Controller::take_out`] (ones kept back).
    pub fn out_extend(&mut self, outs: impl IntoIterator<Item = Out>) {
        self.out.extend(outs);
    }

    pub fn take_out(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    /// Hosts whose record changed (or was forgotten) and streams that changed since the last
    /// call.
    pub fn take_dirty(&mut self) -> (Vec<String>, Vec<String>) {
        (
            std::mem::take(&mut self.dirty_hosts).into_iter().collect(),
            std::mem::take(&mut self.dirty_streams)
                .into_iter()
                .collect(),
        )
    }

    pub(crate) fn emit(&mut self, topic: Topic, payload: Vec<u8>, retain: bool) {
        self.out.push(Out {
            topic: topic.path(),
            payload,
            retain,
        });
    }

    fn publish_assignment(&mut self, host: &str) {
        let h = &self.hosts[host];
        let msg = Assignment {
            host: host.to_string(),
            revision: h.revision,
            tasks: h.tasks.clone(),
            orchestrator_epoch: self.epoch,
        };
        self.emit(Topic::Assignment(host.to_string()), encode(&msg), true);
    }

    fn publish_layout(&mut self, stream: &str, profile: &str) {
        let history = self.streams[stream].profiles[profile].history.clone();
        if history.is_empty() {
            return;
        }
        let msg = Layout {
            stream: stream.to_string(),
            profile: profile.to_string(),
            history,
            orchestrator_epoch: self.epoch,
        };
        self.emit(
            Topic::Layout(stream.to_string(), profile.to_string()),
            encode(&msg),
            true,
        );
    }

    fn command(&mut self, host: &str, stream: &str, profile: &str, kind: CommandKind) -> String {
        self.next_cmd += 1;
        let id = format!("o{}-c{}", self.epoch, self.next_cmd);
        let cmd = Command {
            id: id.clone(),
            epoch: self.epoch,
            kind,
        };
        self.stats.commands += 1;
        self.pending.insert(
            id.clone(),
            (host.to_string(), stream.to_string(), profile.to_string()),
        );
        self.emit(Topic::Command(host.to_string()), encode(&cmd), false);
        id
    }

    /// Replace (or remove, with `None`) a host's task for (stream, profile) and publish the
    /// new desired state.
    pub(crate) fn set_task(&mut self, host: &str, stream: &str, profile: &str, task: Option<Task>) {
        let h = self.hosts.get_mut(host).expect("known host");
        h.tasks
            .retain(|t| !(t.stream == stream && t.profile == profile));
        // A standby task travels in its Prepare command only: it is transient (committed or
        // aborted within the prepare timeout), and a host that restarts meanwhile simply
        // lets the prepare time out. It still counts in the host's load.
        let standby = task.as_ref().is_some_and(|t| t.role == TaskRole::Standby);
        if let Some(t) = task {
            h.tasks.push(t);
        }
        h.revision += 1;
        self.dirty_hosts.insert(host.to_string());
        if !standby {
            self.publish_assignment(host);
        }
        self.reindex(host);
    }

    fn task_of(&self, host: &str, stream: &str, profile: &str) -> Option<&Task> {
        self.hosts
            .get(host)?
            .tasks
            .iter()
            .find(|t| t.stream == stream && t.profile == profile)
    }

    pub(crate) fn make_task(
        &self,
        stream: &str,
        profile: &str,
        role: TaskRole,
        e: &LayoutEpoch,
        slot: u32,
    ) -> Task {
        let s = &self.streams[stream];
        Task {
            stream: stream.to_string(),
            profile: profile.to_string(),
            profile_spec: s.profiles[profile].spec.clone(),
            source: s.def.source.clone(),
            role,
            slot_index: slot,
            slot_count: e.hosts.len() as u32,
            redundancy: e.redundancy,
            layout_epoch: e.epoch,
            switch_gop: e.from_gop,
            until_gop: None,
            chunk_sink: s.def.chunk_sink.clone(),
            gop_ns: s.def.gop_ns,
        }
    }

    /// Add (or redefine) a stream: pick hosts, prepare them, commit the first layout when
    /// they are ready.
    pub fn add_stream(&mut self, def: StreamDef, now: Instant) -> Result<(), String> {
        def.validate()?;
        if self.streams.contains_key(&def.id) {
            return Err(format!("stream {} exists", def.id));
        }
        let profiles = def
            .profiles
            .iter()
            .map(|p| {
                (
                    p.id.clone(),
                    ProfileState {
                        spec: p.spec.clone(),
                        history: Vec::new(),
                        op: None,
                    },
                )
            })
            .collect();
        self.emit(Topic::StreamDef(def.id.clone()), encode(&def), true);
        self.dirty_streams.insert(def.id.clone());
        self.streams.insert(
            def.id.clone(),
            StreamRecord {
                def: def.clone(),
                profiles,
            },
        );
        for p in &def.profiles {
            self.start_profile(&def.id, &p.id, now);
        }
        Ok(())
    }

    pub fn remove_stream(&mut self, id: &str) {
        let Some(s) = self.streams.remove(id) else {
            return;
        };
        for p in s.profiles.keys() {
            let holders: Vec<String> = self
                .hosts
                .values()
                .filter(|h| h.tasks.iter().any(|t| t.stream == id && t.profile == *p))
                .map(|h| h.id.clone())
                .collect();
            for h in holders {
                self.set_task(&h, id, p, None);
            }
        }
        self.emit(Topic::StreamDef(id.to_string()), Vec::new(), true);
        self.dirty_streams.insert(id.to_string());
    }

    /// Forget dead hosts that hold nothing and are in no layout or operation, dead for
    /// `forget_dead_after`. Returns how many.
    fn forget_dead_hosts(&mut self, now: Instant) -> usize {
        let in_use: BTreeSet<&str> = self
            .streams
            .values()
            .flat_map(|s| s.profiles.values())
            .flat_map(|p| {
                let layout = p.history.iter().flat_map(|e| e.hosts.iter());
                let op: Vec<&String> = match &p.op {
                    Some(Op::Start {
                        hosts,
                        ready,
                        leaving,
                        ..
                    }) => hosts.iter().chain(ready.keys()).chain(leaving).collect(),
                    Some(Op::Handoff(h)) => vec![&h.from, &h.to],
                    None => Vec::new(),
                };
                layout.chain(op).map(String::as_str)
            })
            .collect();
        let forget: Vec<String> = self
            .hosts
            .values()
            .filter(|h| {
                !h.alive
                    && h.tasks.is_empty()
                    && !in_use.contains(h.id.as_str())
                    && h.last_seen.is_some_and(|t| {
                        now.saturating_duration_since(t) > self.cfg.forget_dead_after
                    })
            })
            .map(|h| h.id.clone())
            .collect();
        for id in &forget {
            self.hosts.remove(id);
            self.dirty_hosts.insert(id.clone());
        }
        forget.len()
    }

    /// Clock tick: forgotten hosts, missed heartbeats, operation deadlines.
    pub fn tick(&mut self, now: Instant) {
        let forgotten = self.forget_dead_hosts(now);
        if forgotten > 0 {
            tracing::info!(
                "forgot {forgotten} hosts dead for over {:?} with nothing to do",
                self.cfg.forget_dead_after
            );
        }
        let silent: Vec<String> = self
            .hosts
            .values()
            .filter(|h| {
                h.alive
                    && h.last_seen
                        .is_some_and(|t| now.saturating_duration_since(t) > self.cfg.dead_after)
            })
            .map(|h| h.id.clone())
            .collect();
        for h in silent {
            tracing::warn!(
                "host {h} missed its heartbeats for {:?}: dead",
                self.cfg.dead_after
            );
            self.stats.missed_heartbeats += 1;
            self.host_lost(&h, now);
        }
        let keys: Vec<(String, String)> = self
            .streams
            .iter()
            .flat_map(|(s, r)| r.profiles.keys().map(move |p| (s.clone(), p.clone())))
            .collect();
        for (s, p) in keys {
            match self.streams[&s].profiles[&p].op.clone() {
                Some(Op::Start { deadline, .. }) if now >= deadline => {
                    self.try_commit_start(&s, &p, now, true);
                    if let Some(Op::Start { hosts, .. }) = self.streams[&s].profiles[&p].op.clone()
                    {
                        // Nobody was ready: forget them and try again with whoever is free.
                        for h in hosts {
                            self.set_task(&h, &s, &p, None);
                        }
                        self.end_op(&s, &p);
                        self.try_start_waiting(now);
                    }
                }
                Some(Op::Handoff(ho)) if now >= ho.deadline => match ho.stage {
                    HandoffStage::Preparing { .. } => {
                        self.abort_handoff(&s, &p, "new host not ready in time")
                    }
                    HandoffStage::Committing { .. } => {
                        self.stats.handoff_retries += 1;
                        self.commit_handoff(&s, &p, ho, now);
                    }
                },
                _ => {}
            }
        }
        self.regrow_short_layouts(now);
    }

    /// The operation on (stream, profile) is over, whatever its outcome.
    pub(super) fn end_op(&mut self, stream: &str, profile: &str) {
        if let Some(ps) = self
            .streams
            .get_mut(stream)
            .and_then(|s| s.profiles.get_mut(profile))
        {
            ps.op = None;
        }
    }

    /// Whether any operation is in flight on (stream, profile).
    pub fn busy(&self, stream: &str, profile: &str) -> bool {
        self.streams
            .get(stream)
            .and_then(|s| s.profiles.get(profile))
            .is_some_and(|p| p.op.is_some())
    }
}
