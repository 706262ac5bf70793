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
    pub history: crate::fleet::HostHistory,
    /// Current tier (persisted: hysteresis continues across orchestrator restarts).
    #[serde(default)]
    pub tier: Option<crate::score::Tier>,
    #[serde(skip)]
    pub live: crate::fleet::LiveStats,
    /// Takes no new slot: it is being emptied for an update or a deprovision.
    #[serde(skip)]
    pub cordoned: bool,
}

impl HostRecord {
    fn new(id: &str) -> Self {
        HostRecord {
            id: id.to_string(),
            seq: 0,
            alive: false,
            versions: None,
            capabilities: None,
            incompatible: None,
            revision: 0,
            tasks: Vec::new(),
            applied_revision: 0,
            births: 0,
            deaths: 0,
            last_seen: None,
            status: BTreeMap::new(),
            metrics: Metrics::default(),
            history: Default::default(),
            tier: None,
            live: Default::default(),
            cordoned: false,
        }
    }

    fn gop(&self, stream: &str, profile: &str) -> Option<u64> {
        self.status
            .get(&(stream.to_string(), profile.to_string()))
            .and_then(|s| s.current_gop)
    }

    pub fn load(&self) -> usize {
        self.tasks.len()
    }

    pub fn max_tasks(&self) -> u32 {
        self.capabilities.as_ref().map_or(1, |c| c.max_tasks.max(1))
    }

    /// Room for another task within what its tier allows.
    fn can_take(&self, tiers: &crate::score::TierConfig) -> bool {
        let max = match self.tier {
            Some(t) => tiers.slots(t, self.max_tasks()),
            None => self.max_tasks(),
        } as usize;
        self.alive && self.incompatible.is_none() && !self.cordoned && self.load() < max
    }
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
    pub(crate) samples_out: Vec<crate::fleet::HistorySample>,
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

    pub fn take_out(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

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

    /// Up to `n` hosts for new slots of (stream, profile), in placement order, that run the
    /// same encoder library as the profile's holders (or, for a new layout, as the first host
    /// picked): GOPs of one profile must all come from one encoder version. The free hosts
    /// come first; when they are too few, live bronze hosts in service that hold only backup
    /// copies, whose backups are taken back. A backup gives way to a primary: a slot with no
    /// host loses its GOPs for sure, a slot without a backup only if its primary fails.
    fn pick_hosts(
        &mut self,
        stream: &str,
        profile: &str,
        n: usize,
        exclude: &BTreeSet<&str>,
    ) -> Vec<String> {
        let holders = self.holders_encoder(stream, profile);
        let free = self
            .free
            .iter()
            .map(|(_, _, id)| id.as_str())
            .filter(|id| !exclude.contains(id));
        let mut picked = self.on_one_encoder(stream, profile, n, holders.clone(), free);
        if picked.len() < n {
            let want =
                holders.or_else(|| picked.first().map(|h| self.encoder_of(h, stream, profile)));
            let backup_only = self
                .hosts
                .iter()
                .filter(|(id, h)| {
                    !h.tasks.is_empty()
                        && h.tasks.iter().all(|t| t.role == TaskRole::Copy)
                        && h.alive
                        && !h.cordoned
                        && h.incompatible.is_none()
                        && !exclude.contains(id.as_str())
                        && !picked.contains(id)
                })
                .map(|(id, _)| id.as_str());
            let more = self.on_one_encoder(stream, profile, n - picked.len(), want, backup_only);
            for host in more {
                self.take_backups(&host, stream, profile);
                picked.push(host);
            }
        }
        picked
    }

    /// Up to `n` of `candidates` that run encoder `want` for the profile (`None`: the first
    /// candidate's).
    fn on_one_encoder<'a>(
        &self,
        stream: &str,
        profile: &str,
        n: usize,
        mut want: Option<Option<String>>,
        candidates: impl Iterator<Item = &'a str>,
    ) -> Vec<String> {
        let mut picked = Vec::new();
        for id in candidates {
            if picked.len() >= n {
                break;
            }
            let theirs = self.encoder_of(id, stream, profile);
            match &want {
                Some(w) if *w != theirs => continue,
                Some(_) => {}
                None => want = Some(theirs),
            }
            picked.push(id.to_string());
        }
        picked
    }

    /// Take back every backup copy `host` holds, so it can take a primary of
    /// (stream, profile).
    fn take_backups(&mut self, host: &str, stream: &str, profile: &str) {
        for (s, p) in self.drop_backups(host) {
            tracing::info!(
                "backup: {s}/{p} on {host} gives way to a primary of {stream}/{profile}"
            );
        }
    }

    /// Drop every backup copy `host` holds (a backup holds nothing the output needs); the
    /// (stream, profile) of each.
    fn drop_backups(&mut self, host: &str) -> Vec<(String, String)> {
        let copies: Vec<(String, String)> = self.hosts[host]
            .tasks
            .iter()
            .filter(|t| t.role == TaskRole::Copy)
            .map(|t| (t.stream.clone(), t.profile.clone()))
            .collect();
        for (s, p) in &copies {
            self.set_task(host, s, p, None);
            self.stats.backups_taken += 1;
        }
        copies
    }

    /// The codec of a profile: the first word of its spec (`h264, bitrate=...`).
    fn codec_of(&self, stream: &str, profile: &str) -> Option<String> {
        let spec = &self.streams.get(stream)?.profiles.get(profile)?.spec;
        spec.split(',').next().map(|c| c.trim().to_string())
    }

    /// The encoder library a host runs for a profile's codec (`None`: it did not say).
    pub fn encoder_of(&self, host: &str, stream: &str, profile: &str) -> Option<String> {
        let codec = self.codec_of(stream, profile)?;
        self.hosts
            .get(host)?
            .versions
            .as_ref()?
            .encoders
            .get(&codec)
            .cloned()
    }

    /// The encoder library the current holders of a profile run, if it has holders.
    fn holders_encoder(&self, stream: &str, profile: &str) -> Option<Option<String>> {
        let e = self
            .streams
            .get(stream)?
            .profiles
            .get(profile)?
            .history
            .last()?;
        let first = e
            .hosts
            .iter()
            .find(|h| self.hosts.get(*h).is_some_and(|r| r.alive))?;
        Some(self.encoder_of(first, stream, profile))
    }

    /// Why `host` may not take a slot of (stream, profile) next to its holders, if it may not.
    pub fn encoder_mismatch(&self, host: &str, stream: &str, profile: &str) -> Option<String> {
        let want = self.holders_encoder(stream, profile)?;
        let theirs = self.encoder_of(host, stream, profile);
        (want != theirs).then(|| {
            format!(
                "host {host} encodes with {} but {stream}/{profile} is encoded with {}",
                theirs.as_deref().unwrap_or("an unreported encoder"),
                want.as_deref().unwrap_or("an unreported encoder")
            )
        })
    }

    /// Hosts with room, in placement order (best tier, least loaded, id).
    pub fn free_hosts(&self) -> impl Iterator<Item = &str> {
        self.free.iter().map(|(_, _, id)| id.as_str())
    }

    /// Keep the free-host index in step with `host`.
    pub(crate) fn reindex(&mut self, host: &str) {
        if let Some((rank, load)) = self.indexed_load.remove(host) {
            self.free.remove(&(rank, load, host.to_string()));
        }
        if let Some(h) = self.hosts.get(host)
            && h.can_take(&self.cfg.tiers)
        {
            let rank = h.tier.map_or(2, crate::score::Tier::rank);
            self.free.insert((rank, h.load(), host.to_string()));
            self.indexed_load.insert(host.to_string(), (rank, h.load()));
        }
    }

    // ---- inputs --------------------------------------------------------------------------

    pub fn on_birth(&mut self, b: Birth, now: Instant) {
        let compat = compatible(&self.versions, &b.versions).err();
        let h = self
            .hosts
            .entry(b.host.clone())
            .or_insert_with(|| HostRecord::new(&b.host));
        if b.seq < h.seq {
            return; // an older connection's retained birth
        }
        let fresh_connection = b.seq > h.seq || !h.alive;
        h.seq = b.seq;
        h.alive = true;
        h.last_seen = Some(now);
        h.versions = Some(b.versions);
        h.capabilities = Some(b.capabilities);
        if let Some(why) = &compat
            && h.incompatible.is_none()
        {
            tracing::warn!("host {} is incompatible: {why}; it gets no slot", b.host);
            self.stats.refused_incompatible += 1;
        }
        h.incompatible = compat;
        if fresh_connection {
            h.births += 1;
            self.stats.births += 1;
        }
        self.dirty_hosts.insert(b.host.clone());
        if fresh_connection {
            self.hosts.get_mut(&b.host).unwrap().live.joined = Some(now);
        }
        self.rescore_host(&b.host, now);
        self.reindex(&b.host);
        if self.hosts[&b.host].incompatible.is_some() && !self.hosts[&b.host].tasks.is_empty() {
            // Never leave a slot with a host that cannot hold it.
            self.host_lost(&b.host, now);
        }
        self.try_start_waiting(now);
    }

    pub fn on_death(&mut self, d: Death, now: Instant) {
        let Some(h) = self.hosts.get(&d.host) else {
            return;
        };
        if d.seq < h.seq || !h.alive {
            if d.seq < h.seq {
                self.stats.stale_deaths += 1;
                tracing::info!(
                    "ignoring stale death of {} (seq {} < live seq {})",
                    d.host,
                    d.seq,
                    h.seq
                );
            }
            return;
        }
        tracing::warn!("host {} died (last will, seq {})", d.host, d.seq);
        self.host_lost(&d.host, now);
    }

    pub fn on_heartbeat(&mut self, hb: Heartbeat, now: Instant) {
        let Some(h) = self.hosts.get_mut(&hb.host) else {
            return;
        };
        if hb.seq < h.seq || !h.alive {
            // A heartbeat from an older connection, or of a host we buried: it must be born
            // again (its birth is retained; a reconnect publishes a new one).
            return;
        }
        if let Some(prev) = h.last_seen {
            // Online time, counting at most one heartbeat gap (silence is not uptime).
            let gap = now.saturating_duration_since(prev).min(self.cfg.dead_after);
            h.history.online_secs += gap.as_secs_f64();
        }
        h.history.count(&hb.metrics);
        h.live.observe_speed(&hb.metrics, now);
        h.last_seen = Some(now);
        h.metrics = hb.metrics;
        let reported: BTreeSet<(String, String)> = hb
            .tasks
            .iter()
            .map(|t| (t.stream.clone(), t.profile.clone()))
            .collect();
        for t in hb.tasks {
            h.status.insert((t.stream.clone(), t.profile.clone()), t);
        }
        self.cleanup_drained(&hb.host, &reported);
    }

    pub fn on_applied(&mut self, a: Applied) {
        if let Some(h) = self.hosts.get_mut(&a.host) {
            h.applied_revision = a.revision;
            for t in a.tasks {
                h.status.insert((t.stream.clone(), t.profile.clone()), t);
            }
            self.dirty_hosts.insert(a.host.clone());
        }
    }

    pub fn on_ack(&mut self, ack: Ack, now: Instant) {
        if let Some((host, sent)) = self.pings.remove(&ack.id) {
            if host == ack.host
                && let Some(h) = self.hosts.get_mut(&host)
            {
                h.live.rtt.push(now.saturating_duration_since(sent));
            }
            return;
        }
        let Some((host, stream, profile)) = self.pending.remove(&ack.id) else {
            return; // duplicate or unknown: handled already
        };
        if host != ack.host {
            return;
        }
        if let (Some(g), Some(h)) = (ack.current_gop, self.hosts.get_mut(&host)) {
            let key = (stream.clone(), profile.clone());
            let st = h.status.entry(key).or_insert_with(|| TaskStatus {
                stream: stream.clone(),
                profile: profile.clone(),
                layout_epoch: 0,
                current_gop: None,
                gops_sent: 0,
                ready: false,
                error: None,
            });
            st.current_gop = Some(st.current_gop.map_or(g, |c| c.max(g)));
        }
        let Some(ps) = self
            .streams
            .get_mut(&stream)
            .and_then(|s| s.profiles.get_mut(&profile))
        else {
            return;
        };
        match ps.op.clone() {
            Some(Op::Start {
                hosts,
                mut ready,
                deadline,
                leaving,
            }) if hosts.contains(&host) => {
                if ack.ok {
                    ready.insert(host, ack.current_gop.unwrap_or(0));
                    ps.op = Some(Op::Start {
                        hosts,
                        ready,
                        deadline,
                        leaving,
                    });
                    self.try_commit_start(&stream, &profile, now, false);
                } else {
                    tracing::warn!("{host} cannot prepare {stream}/{profile}: {}", ack.detail);
                }
            }
            Some(Op::Handoff(ho)) if ho.to == host => match &ho.stage {
                HandoffStage::Preparing { cmd } if *cmd == ack.id => {
                    if ack.ok {
                        self.commit_handoff(&stream, &profile, ho, now);
                    } else {
                        self.abort_handoff(&stream, &profile, &ack.detail);
                    }
                }
                HandoffStage::Committing { cmd, k, .. } if *cmd == ack.id => {
                    let k = *k;
                    match ack.current_gop {
                        Some(g) if ack.ok && g < k => self.finish_handoff(&stream, &profile, ho),
                        _ => {
                            // Too late for k (or refused): the old host still holds the slot;
                            // commit again further ahead.
                            self.stats.handoff_retries += 1;
                            if let Some(rec) = self.handoffs.last_mut()
                                && rec.stream == stream
                            {
                                rec.retries += 1;
                            }
                            self.commit_handoff(&stream, &profile, ho, now);
                        }
                    }
                }
                _ => {}
            },
            _ => {}
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

    /// Slots and redundancy of a stream: what its definition says, else what its measured
    /// complexity and the free hosts call for, else the defaults.
    fn wanted_slots(&self, stream: &str) -> (usize, u32) {
        let def = &self.streams[stream].def;
        let planned = def
            .complexity
            .as_ref()
            .map(|c| self.cfg.sizing.plan(c, self.free.len()));
        let n = def
            .slots
            .or(planned.map(|p| p.0))
            .unwrap_or(self.cfg.default_slots)
            .max(1) as usize;
        let r = def
            .redundancy
            .or(planned.map(|p| p.1))
            .unwrap_or(self.cfg.default_redundancy);
        (n, r)
    }

    fn start_profile(&mut self, stream: &str, profile: &str, now: Instant) {
        let (n, r) = self.wanted_slots(stream);
        // Decided once: later placements (and a restart) keep this size.
        let def = &mut self.streams.get_mut(stream).unwrap().def;
        def.slots.get_or_insert(n as u32);
        def.redundancy.get_or_insert(r);
        self.dirty_streams.insert(stream.to_string());
        if let Some(c) = &self.streams[stream].def.complexity {
            tracing::info!(
                "{stream}: complexity SI {:.1} TI {:.1} ({:?}) -> {n} slots, redundancy {r}",
                c.si,
                c.ti,
                self.cfg.sizing.level(c)
            );
        }
        let hosts = self.pick_hosts(stream, profile, n, &BTreeSet::new());
        if hosts.is_empty() {
            tracing::warn!("{stream}/{profile}: no free compatible host yet; waiting");
            return;
        }
        self.prepare_layout(stream, profile, &hosts, Vec::new(), now);
    }

    /// Prepare `hosts` (standby on the stream) for a new layout of only them, committed once
    /// they are all ready; `leaving` (the current holders of a migration) drain then.
    fn prepare_layout(
        &mut self,
        stream: &str,
        profile: &str,
        hosts: &[String],
        leaving: Vec<String>,
        now: Instant,
    ) {
        let standby = LayoutEpoch {
            epoch: 0,
            from_gop: 0,
            redundancy: 0,
            hosts: hosts.to_vec(),
        };
        for (i, h) in hosts.iter().enumerate() {
            let task = self.make_task(stream, profile, TaskRole::Standby, &standby, i as u32);
            self.set_task(h, stream, profile, Some(task.clone()));
            self.command(h, stream, profile, CommandKind::Prepare { task });
        }
        self.streams
            .get_mut(stream)
            .unwrap()
            .profiles
            .get_mut(profile)
            .unwrap()
            .op = Some(Op::Start {
            hosts: hosts.to_vec(),
            ready: BTreeMap::new(),
            deadline: now + self.cfg.prepare_timeout,
            leaving,
        });
    }

    /// Profiles that found no host when added get one as hosts arrive.
    fn try_start_waiting(&mut self, now: Instant) {
        let waiting: Vec<(String, String)> = self
            .streams
            .iter()
            .flat_map(|(s, r)| {
                r.profiles
                    .iter()
                    .filter(|(_, p)| p.history.is_empty() && p.op.is_none())
                    .map(move |(p, _)| (s.clone(), p.clone()))
            })
            .collect();
        for (s, p) in waiting {
            self.start_profile(&s, &p, now);
        }
    }

    fn switch_gop_for(&self, stream: &str, profile: &str, hosts: &[String]) -> u64 {
        let furthest = hosts
            .iter()
            .filter_map(|h| self.hosts.get(h).and_then(|r| r.gop(stream, profile)))
            .max()
            .unwrap_or(0);
        let last_from = self.streams[stream].profiles[profile]
            .history
            .last()
            .map_or(0, |e| e.from_gop + 1);
        (furthest + self.cfg.switch_margin_gops).max(last_from)
    }

    /// Commit the first layout over the ready hosts (all of them, or at the deadline those
    /// that made it).
    fn try_commit_start(&mut self, stream: &str, profile: &str, now: Instant, deadline: bool) {
        let Some(Op::Start {
            hosts,
            ready,
            leaving,
            ..
        }) = self.streams[stream].profiles[profile].op.clone()
        else {
            return;
        };
        let all_ready = ready.len() == hosts.len();
        if !leaving.is_empty() && !all_ready {
            // A migration goes whole or not at all: the old holders keep the profile.
            if deadline {
                tracing::warn!(
                    "{stream}/{profile}: new layout {hosts:?} not ready in time; the holders keep it"
                );
                let holding: Vec<String> = self.streams[stream].profiles[profile]
                    .history
                    .last()
                    .map(|e| e.hosts.clone())
                    .unwrap_or_default();
                for h in hosts.iter().filter(|h| !holding.contains(h)) {
                    self.set_task(h, stream, profile, None);
                }
                self.streams
                    .get_mut(stream)
                    .unwrap()
                    .profiles
                    .get_mut(profile)
                    .unwrap()
                    .op = None;
            }
            return;
        }
        if !(all_ready || (deadline && !ready.is_empty())) {
            return;
        }
        let chosen: Vec<String> = hosts
            .iter()
            .filter(|h| ready.contains_key(*h))
            .cloned()
            .collect();
        for h in hosts.iter().filter(|h| !ready.contains_key(*h)) {
            tracing::warn!("{h} not ready for {stream}/{profile} in time; left out");
            self.set_task(h, stream, profile, None);
        }
        let (_, r) = self.wanted_slots(stream);
        self.stats.slots_moved_together +=
            leaving.iter().filter(|h| !chosen.contains(h)).count() as u64;
        let everyone: Vec<String> = chosen.iter().chain(&leaving).cloned().collect();
        let k = self.switch_gop_for(stream, profile, &everyone);
        self.new_layout(stream, profile, chosen.clone(), r, k);
        for h in leaving.iter().filter(|h| !chosen.contains(h)) {
            if self.hosts.get(h).is_some_and(|r| r.alive) {
                self.drain_task(h, stream, profile, k - 1);
            }
        }
        self.streams
            .get_mut(stream)
            .unwrap()
            .profiles
            .get_mut(profile)
            .unwrap()
            .op = None;
        let _ = now;
    }

    /// Record and publish a new layout epoch from GOP `k`, and give every holder its task.
    fn new_layout(
        &mut self,
        stream: &str,
        profile: &str,
        hosts: Vec<String>,
        r: u32,
        k: u64,
    ) -> u64 {
        let ps = self
            .streams
            .get_mut(stream)
            .unwrap()
            .profiles
            .get_mut(profile)
            .unwrap();
        let epoch = ps.history.last().map_or(1, |e| e.epoch + 1);
        let e = LayoutEpoch {
            epoch,
            from_gop: k,
            redundancy: r.min(hosts.len().saturating_sub(1) as u32),
            hosts: hosts.clone(),
        };
        ps.history.push(e.clone());
        self.stats.layouts += 1;
        self.dirty_streams.insert(stream.to_string());
        self.publish_layout(stream, profile);
        for (i, h) in hosts.iter().enumerate() {
            let task = self.make_task(stream, profile, TaskRole::Active, &e, i as u32);
            self.set_task(h, stream, profile, Some(task.clone()));
            self.command(h, stream, profile, CommandKind::Commit { task });
        }
        tracing::info!(
            "{stream}/{profile}: layout epoch {epoch} from GOP {k}: {hosts:?} r={}",
            e.redundancy
        );
        epoch
    }

    /// A host is gone: re-deal its slots over the survivors from the next safe GOP.
    fn host_lost(&mut self, host: &str, now: Instant) {
        let h = self.hosts.get_mut(host).expect("known host");
        h.alive = false;
        h.deaths += 1;
        h.status.clear();
        self.stats.deaths += 1;
        self.dirty_hosts.insert(host.to_string());
        let held: Vec<Task> = std::mem::take(&mut self.hosts.get_mut(host).unwrap().tasks);
        if !held.is_empty() {
            let h = self.hosts.get_mut(host).unwrap();
            h.revision += 1;
            self.publish_assignment(host);
        }
        self.reindex(host);
        // Operations the host took part in.
        let keys: Vec<(String, String)> = self
            .streams
            .iter()
            .flat_map(|(s, r)| r.profiles.keys().map(move |p| (s.clone(), p.clone())))
            .collect();
        for (s, p) in keys {
            match self.streams[&s].profiles[&p].op.clone() {
                Some(Op::Handoff(ho)) if ho.to == host => {
                    self.abort_handoff(&s, &p, "new host died");
                }
                Some(Op::Handoff(ho)) if ho.from == host => {
                    // The new host is prepared: let the rest of the swarm re-deal without
                    // the old one, then cancel the handoff (the new host stays free).
                    self.abort_handoff(&s, &p, "old host died");
                }
                Some(Op::Start {
                    hosts,
                    mut ready,
                    deadline,
                    leaving,
                }) if hosts.contains(&host.to_string()) => {
                    let hosts: Vec<String> = hosts.into_iter().filter(|h| h != host).collect();
                    ready.remove(host);
                    self.streams
                        .get_mut(&s)
                        .unwrap()
                        .profiles
                        .get_mut(&p)
                        .unwrap()
                        .op = if hosts.is_empty() {
                        None
                    } else {
                        Some(Op::Start {
                            hosts,
                            ready,
                            deadline,
                            leaving,
                        })
                    };
                    self.try_commit_start(&s, &p, now, false);
                }
                _ => {}
            }
        }
        for t in held {
            let Some(cur) = self
                .streams
                .get(&t.stream)
                .and_then(|s| s.profiles.get(&t.profile))
                .and_then(|p| p.history.last().cloned())
            else {
                continue;
            };
            if !cur.hosts.iter().any(|x| x == host) {
                continue;
            }
            let survivors: Vec<String> = cur.hosts.iter().filter(|x| *x != host).cloned().collect();
            if survivors.is_empty() {
                tracing::error!(
                    "{}/{}: its last host {host} died; the stream stalls until a host joins",
                    t.stream,
                    t.profile
                );
                let ps = self
                    .streams
                    .get_mut(&t.stream)
                    .unwrap()
                    .profiles
                    .get_mut(&t.profile)
                    .unwrap();
                ps.history.clear();
                self.try_start_waiting(now);
                continue;
            }
            let k = self.switch_gop_for(&t.stream, &t.profile, &survivors);
            self.new_layout(&t.stream, &t.profile, survivors, cur.redundancy, k);
        }
    }

    /// The layout in force of a started (stream, profile) with no operation in flight: what a
    /// handoff or a growth starts from.
    fn idle_layout(&self, stream: &str, profile: &str) -> Result<LayoutEpoch, String> {
        let ps = self
            .streams
            .get(stream)
            .and_then(|s| s.profiles.get(profile))
            .ok_or_else(|| format!("no stream {stream}/{profile}"))?;
        if ps.op.is_some() {
            return Err(format!("{stream}/{profile}: an operation is in flight"));
        }
        ps.history
            .last()
            .cloned()
            .ok_or_else(|| "stream not started".to_string())
    }

    /// Whether every live holder of (stream, profile) has reached the first GOP of the layout
    /// in force. Until then a host still has that layout's assignment pending, and gopselect
    /// keeps one pending assignment: a drain sent now would replace it and the host would
    /// skip its GOPs of the new layout.
    pub fn holders_reached_layout(&self, stream: &str, profile: &str) -> bool {
        let Some(e) = self
            .streams
            .get(stream)
            .and_then(|s| s.profiles.get(profile))
            .and_then(|p| p.history.last())
        else {
            return false;
        };
        e.hosts.iter().all(|h| {
            self.hosts
                .get(h)
                .is_none_or(|r| !r.alive || r.gop(stream, profile).is_some_and(|g| g >= e.from_gop))
        })
    }

    /// The host a new slot of (stream, profile) goes to: `to` if it may take it (room in its
    /// tier, not a holder of `cur` already, the holders' encoder version), else the best free
    /// host that may, else a backup-only bronze host whose backups it takes back (see
    /// `pick_hosts`): call it only to place the slot.
    fn target_host(
        &mut self,
        stream: &str,
        profile: &str,
        cur: &LayoutEpoch,
        to: Option<&str>,
    ) -> Result<String, String> {
        let exclude: BTreeSet<&str> = cur.hosts.iter().map(String::as_str).collect();
        match to {
            Some(t) => {
                let h = self
                    .hosts
                    .get(t)
                    .ok_or_else(|| format!("unknown host {t}"))?;
                if !h.can_take(&self.cfg.tiers) || exclude.contains(t) {
                    return Err(format!("host {t} cannot take a slot"));
                }
                if let Some(why) = self.encoder_mismatch(t, stream, profile) {
                    return Err(why);
                }
                Ok(t.to_string())
            }
            None => self
                .pick_hosts(stream, profile, 1, &exclude)
                .pop()
                .ok_or_else(|| "no free compatible host".to_string()),
        }
    }

    /// Add a slot to a running (stream, profile): prepare `to` (or the best free host), then
    /// commit a layout with one more host at a safe GOP. A layout that shrank after host
    /// deaths grows back this way. The running holders count as ready already; if the new
    /// host is not ready in time the layout stays as it is.
    pub fn grow(
        &mut self,
        stream: &str,
        profile: &str,
        to: Option<&str>,
        now: Instant,
    ) -> Result<String, String> {
        let cur = self.idle_layout(stream, profile)?;
        let to = self.target_host(stream, profile, &cur, to)?;
        self.grow_by(stream, profile, std::slice::from_ref(&to), now)?;
        Ok(to)
    }

    /// Add a slot for each of `newcomers` to a running (stream, profile) in one epoch:
    /// prepare them all, then commit one layout with all of them at a safe GOP. A layout
    /// that must grow by tens of slots before an event gets there in one switch instead of
    /// one switch per host (each must wait for every holder to reach the last). The running
    /// holders count as ready already; at the prepare deadline the layout takes the
    /// newcomers that made it. Every newcomer must be free, not a holder, and on the
    /// holders' encoder version; otherwise nothing changes.
    pub fn grow_by(
        &mut self,
        stream: &str,
        profile: &str,
        newcomers: &[String],
        now: Instant,
    ) -> Result<(), String> {
        let cur = self.idle_layout(stream, profile)?;
        if newcomers.is_empty() {
            return Err(format!("{stream}/{profile}: no host to grow by"));
        }
        let mut hosts = cur.hosts.clone();
        for to in newcomers {
            let checked = LayoutEpoch {
                hosts: hosts.clone(),
                ..cur.clone()
            };
            self.target_host(stream, profile, &checked, Some(to))?;
            hosts.push(to.clone());
        }
        let standby = LayoutEpoch {
            epoch: 0,
            from_gop: 0,
            redundancy: 0,
            hosts: hosts.clone(),
        };
        for (k, to) in newcomers.iter().enumerate() {
            let index = (cur.hosts.len() + k) as u32;
            let task = self.make_task(stream, profile, TaskRole::Standby, &standby, index);
            self.set_task(to, stream, profile, Some(task.clone()));
            self.command(to, stream, profile, CommandKind::Prepare { task });
        }
        let ready: BTreeMap<String, u64> = cur
            .hosts
            .iter()
            .map(|h| (h.clone(), self.hosts[h].gop(stream, profile).unwrap_or(0)))
            .collect();
        self.streams
            .get_mut(stream)
            .unwrap()
            .profiles
            .get_mut(profile)
            .unwrap()
            .op = Some(Op::Start {
            hosts,
            ready,
            deadline: now + self.cfg.prepare_timeout,
            leaving: Vec::new(),
        });
        tracing::info!(
            "{stream}/{profile}: growing to {} slots with {newcomers:?}",
            cur.hosts.len() + newcomers.len()
        );
        Ok(())
    }

    /// Move several slots of a running (stream, profile) in one epoch: each `(from, to)` gives
    /// `from`'s slot to `to`. The newcomers are prepared; once every one is ready, one layout
    /// with each in its predecessor's place is committed at a safe GOP and the predecessors
    /// drain before it. All or nothing: if a newcomer is not ready by the prepare deadline the
    /// layout stays as it is. Balancing a hot profile this way takes one switch, not one
    /// handoff after another (each waiting for the last to land).
    pub fn replace_holders(
        &mut self,
        stream: &str,
        profile: &str,
        swaps: &[(String, String)],
        now: Instant,
    ) -> Result<(), String> {
        let cur = self.idle_layout(stream, profile)?;
        if swaps.is_empty() {
            return Err(format!("{stream}/{profile}: no slot to move"));
        }
        let mut hosts = cur.hosts.clone();
        let mut taken = cur.hosts.clone();
        let mut leaving = Vec::new();
        let mut newcomers = Vec::new();
        for (from, to) in swaps {
            let slot = hosts
                .iter()
                .position(|h| h == from)
                .filter(|_| !leaving.contains(from))
                .ok_or_else(|| format!("{from} holds no slot of {stream}/{profile} to give"))?;
            let checked = LayoutEpoch {
                hosts: taken.clone(),
                ..cur.clone()
            };
            self.target_host(stream, profile, &checked, Some(to))?;
            hosts[slot] = to.clone();
            taken.push(to.clone());
            leaving.push(from.clone());
            newcomers.push((slot, to.clone()));
        }
        let standby = LayoutEpoch {
            epoch: 0,
            from_gop: 0,
            redundancy: cur.redundancy,
            hosts: hosts.clone(),
        };
        for (slot, to) in &newcomers {
            let task = self.make_task(stream, profile, TaskRole::Standby, &standby, *slot as u32);
            self.set_task(to, stream, profile, Some(task.clone()));
            self.command(to, stream, profile, CommandKind::Prepare { task });
        }
        let ready: BTreeMap<String, u64> = hosts
            .iter()
            .filter(|h| cur.hosts.contains(h))
            .map(|h| (h.clone(), self.hosts[h].gop(stream, profile).unwrap_or(0)))
            .collect();
        self.streams
            .get_mut(stream)
            .unwrap()
            .profiles
            .get_mut(profile)
            .unwrap()
            .op = Some(Op::Start {
            hosts,
            ready,
            deadline: now + self.cfg.prepare_timeout,
            leaving,
        });
        tracing::info!(
            "{stream}/{profile}: moving {} slots in one epoch: {swaps:?}",
            swaps.len()
        );
        Ok(())
    }

    /// Stop (or resume) giving `host` new slots.
    pub fn cordon(&mut self, host: &str, on: bool) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.cordoned = on;
            self.reindex(host);
        }
    }

    /// Move a whole (stream, profile) to free hosts of another encoder version in one epoch:
    /// prepare them, commit a layout of only them at a safe GOP, and drain the old holders
    /// before it. It needs at least as many such hosts as hold the profile now (up to the
    /// stream's planned slots); the hosts of the version with the most of them are taken.
    pub fn migrate(
        &mut self,
        stream: &str,
        profile: &str,
        now: Instant,
    ) -> Result<Vec<String>, String> {
        let cur = self.idle_layout(stream, profile)?;
        let planned = self.streams[stream]
            .def
            .slots
            .map_or(cur.hosts.len(), |n| n as usize)
            .max(cur.hosts.len());
        let theirs = self.holders_encoder(stream, profile).flatten();
        let mut by_version: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
        for id in self.free_hosts() {
            let version = self.encoder_of(id, stream, profile);
            if version != theirs && !cur.hosts.iter().any(|h| h == id) {
                by_version.entry(version).or_default().push(id.to_string());
            }
        }
        let Some((version, mut hosts)) = by_version
            .into_iter()
            .max_by_key(|(_, hosts)| hosts.len())
            .filter(|(_, hosts)| hosts.len() >= cur.hosts.len())
        else {
            return Err(format!(
                "{stream}/{profile}: fewer than {} free hosts share an encoder version other than its holders'",
                cur.hosts.len()
            ));
        };
        hosts.truncate(planned);
        self.prepare_layout(stream, profile, &hosts, cur.hosts.clone(), now);
        tracing::info!(
            "{stream}/{profile}: migrating from {:?} to {hosts:?} ({})",
            cur.hosts,
            version.as_deref().unwrap_or("unreported encoder")
        );
        Ok(hosts)
    }

    /// Deal `host`'s slot of (stream, profile) over the other holders from a safe GOP; the
    /// host keeps encoding up to the GOP before it.
    pub fn shrink(&mut self, stream: &str, profile: &str, host: &str) -> Result<(), String> {
        let cur = self.idle_layout(stream, profile)?;
        if !cur.hosts.iter().any(|h| h == host) {
            return Err(format!("{host} holds no slot of {stream}/{profile}"));
        }
        if cur.hosts.len() < 2 {
            return Err(format!("{host} is the last holder of {stream}/{profile}"));
        }
        let rest: Vec<String> = cur.hosts.iter().filter(|h| *h != host).cloned().collect();
        let k = self.switch_gop_for(stream, profile, &cur.hosts).max(1);
        self.new_layout(stream, profile, rest, cur.redundancy, k);
        self.drain_task(host, stream, profile, k - 1);
        Ok(())
    }

    /// Empty `host` without stopping any output: each slot it holds goes, by handoff, to a
    /// free host of the profile's encoder version; else the whole profile migrates to free
    /// hosts of another version; else the other holders take the slot over. One operation per
    /// profile at a time: call again until it returns 0 (tasks the host still holds). An
    /// error says why a slot cannot move now.
    pub fn move_off(&mut self, host: &str, now: Instant) -> Result<usize, String> {
        let Some(h) = self.hosts.get(host) else {
            return Ok(0);
        };
        if !h.alive {
            return Ok(0);
        }
        // A backup holds nothing the output needs: it goes at once.
        self.drop_backups(host);
        let h = &self.hosts[host];
        let held: Vec<(String, String)> = h
            .tasks
            .iter()
            .filter(|t| t.role == TaskRole::Active && t.until_gop.is_none())
            .map(|t| (t.stream.clone(), t.profile.clone()))
            .collect();
        let mut stuck = None;
        for (stream, profile) in held {
            if self.busy(&stream, &profile) || !self.holders_reached_layout(&stream, &profile) {
                continue;
            }
            let moved = self
                .start_handoff(&stream, &profile, host, None, now)
                .map(|_| ())
                .or_else(|_| self.migrate(&stream, &profile, now).map(|_| ()))
                .or_else(|_| self.shrink(&stream, &profile, host));
            if let Err(why) = moved {
                stuck = Some(why);
            }
        }
        match stuck {
            Some(why) => Err(why),
            None => Ok(self.hosts[host].tasks.len()),
        }
    }

    /// Start a planned handoff of `from`'s slot to `to` (or to the least loaded free host).
    pub fn start_handoff(
        &mut self,
        stream: &str,
        profile: &str,
        from: &str,
        to: Option<&str>,
        now: Instant,
    ) -> Result<String, String> {
        let cur = self.idle_layout(stream, profile)?;
        let slot = cur
            .hosts
            .iter()
            .position(|h| h == from)
            .ok_or_else(|| format!("{from} holds no slot of {stream}/{profile}"))?
            as u32;
        let to = self.target_host(stream, profile, &cur, to)?;
        let standby = LayoutEpoch {
            epoch: cur.epoch,
            from_gop: 0,
            redundancy: cur.redundancy,
            hosts: cur.hosts.clone(),
        };
        let task = self.make_task(stream, profile, TaskRole::Standby, &standby, slot);
        self.set_task(&to, stream, profile, Some(task.clone()));
        let cmd = self.command(&to, stream, profile, CommandKind::Prepare { task });
        let decided_at_gop = self.hosts[from].gop(stream, profile);
        self.handoffs.push(HandoffRecord {
            stream: stream.to_string(),
            profile: profile.to_string(),
            from: from.to_string(),
            to: to.clone(),
            epoch: 0,
            switch_gop: 0,
            decided_at_gop,
            retries: 0,
        });
        let ps = self
            .streams
            .get_mut(stream)
            .unwrap()
            .profiles
            .get_mut(profile)
            .unwrap();
        ps.op = Some(Op::Handoff(Handoff {
            from: from.to_string(),
            to: to.clone(),
            slot,
            stage: HandoffStage::Preparing { cmd },
            deadline: now + self.cfg.prepare_timeout,
            started: now,
        }));
        tracing::info!("{stream}/{profile}: handoff of slot {slot} {from} -> {to} prepared");
        Ok(to)
    }

    fn commit_handoff(&mut self, stream: &str, profile: &str, ho: Handoff, now: Instant) {
        let cur = self.streams[stream].profiles[profile]
            .history
            .last()
            .cloned()
            .expect("started");
        let mut hosts = cur.hosts.clone();
        hosts[ho.slot as usize] = ho.to.clone();
        let k = self.switch_gop_for(stream, profile, &[ho.from.clone(), ho.to.clone()]);
        // Only the new host hears of it now; the layout and the old host's drain follow its ack.
        let epoch = cur.epoch + 1;
        let e = LayoutEpoch {
            epoch,
            from_gop: k,
            redundancy: cur.redundancy,
            hosts,
        };
        let task = self.make_task(stream, profile, TaskRole::Active, &e, ho.slot);
        // Keep the layout of the prepared task's stream untouched until confirmed.
        let cmd = self.command(
            &ho.to,
            stream,
            profile,
            CommandKind::Commit { task: task.clone() },
        );
        let ps = self
            .streams
            .get_mut(stream)
            .unwrap()
            .profiles
            .get_mut(profile)
            .unwrap();
        ps.op = Some(Op::Handoff(Handoff {
            stage: HandoffStage::Committing { cmd, epoch, k },
            deadline: now + self.cfg.commit_timeout,
            ..ho
        }));
        // Desired state of the new host (retained) only after the commit; a restart of it
        // before the ack re-reads its Standby task and the handoff times out safely.
    }

    fn finish_handoff(&mut self, stream: &str, profile: &str, ho: Handoff) {
        let HandoffStage::Committing { epoch, k, .. } = ho.stage else {
            return;
        };
        let cur = self.streams[stream].profiles[profile]
            .history
            .last()
            .cloned()
            .expect("started");
        let mut hosts = cur.hosts.clone();
        hosts[ho.slot as usize] = ho.to.clone();
        let e = LayoutEpoch {
            epoch,
            from_gop: k,
            redundancy: cur.redundancy,
            hosts: hosts.clone(),
        };
        let ps = self
            .streams
            .get_mut(stream)
            .unwrap()
            .profiles
            .get_mut(profile)
            .unwrap();
        ps.history.push(e.clone());
        ps.op = None;
        self.stats.layouts += 1;
        self.stats.handoffs_done += 1;
        self.dirty_streams.insert(stream.to_string());
        self.publish_layout(stream, profile);
        // Every holder moves to the new epoch at k (same slots); the new host is committed
        // already, the old one drains after k - 1.
        for (i, h) in hosts.iter().enumerate() {
            let task = self.make_task(stream, profile, TaskRole::Active, &e, i as u32);
            if *h == ho.to {
                self.set_task(h, stream, profile, Some(task));
            } else {
                self.set_task(h, stream, profile, Some(task.clone()));
                self.command(h, stream, profile, CommandKind::Commit { task });
            }
        }
        self.drain_task(&ho.from, stream, profile, k - 1);
        if let Some(rec) = self
            .handoffs
            .iter_mut()
            .rev()
            .find(|r| r.stream == stream && r.profile == profile && r.to == ho.to)
        {
            rec.epoch = epoch;
            rec.switch_gop = k;
        }
        tracing::info!(
            "{stream}/{profile}: slot {} {} -> {} at GOP {k} (epoch {epoch})",
            ho.slot,
            ho.from,
            ho.to
        );
    }

    /// `host` keeps its task of (stream, profile) up to `last_gop` and then lets it go.
    pub(crate) fn drain_task(&mut self, host: &str, stream: &str, profile: &str, last_gop: u64) {
        if let Some(mut old) = self.task_of(host, stream, profile).cloned() {
            old.until_gop = Some(last_gop);
            self.set_task(host, stream, profile, Some(old));
            self.command(
                host,
                stream,
                profile,
                CommandKind::Drain {
                    stream: stream.to_string(),
                    profile: profile.to_string(),
                    last_gop,
                },
            );
        }
    }

    fn abort_handoff(&mut self, stream: &str, profile: &str, why: &str) {
        let Some(Op::Handoff(ho)) = self.streams[stream].profiles[profile].op.clone() else {
            return;
        };
        tracing::warn!(
            "{stream}/{profile}: handoff {} -> {} aborted: {why}; the old host keeps the slot",
            ho.from,
            ho.to
        );
        self.stats.handoffs_aborted += 1;
        self.streams
            .get_mut(stream)
            .unwrap()
            .profiles
            .get_mut(profile)
            .unwrap()
            .op = None;
        if self.hosts.get(&ho.to).is_some_and(|h| h.alive) {
            self.set_task(&ho.to, stream, profile, None);
            self.command(
                &ho.to,
                stream,
                profile,
                CommandKind::Abort {
                    stream: stream.to_string(),
                    profile: profile.to_string(),
                },
            );
        }
        if let Some(pos) = self.handoffs.iter().rposition(|r| {
            r.stream == stream && r.profile == profile && r.to == ho.to && r.switch_gop == 0
        }) {
            self.handoffs.remove(pos);
        }
    }

    /// Drop a drained task once the host no longer runs it (its last GOP is out).
    fn cleanup_drained(&mut self, host: &str, reported: &BTreeSet<(String, String)>) {
        let done: Vec<(String, String)> = self.hosts[host]
            .tasks
            .iter()
            .filter(|t| {
                // Gone from the host's report: it drained and flushed its last GOP.
                t.until_gop.is_some() && !reported.contains(&(t.stream.clone(), t.profile.clone()))
            })
            .map(|t| (t.stream.clone(), t.profile.clone()))
            .collect();
        for (s, p) in done {
            self.set_task(host, &s, &p, None);
        }
    }

    /// Clock tick: missed heartbeats, operation deadlines.
    pub fn tick(&mut self, now: Instant) {
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
                        self.streams
                            .get_mut(&s)
                            .unwrap()
                            .profiles
                            .get_mut(&p)
                            .unwrap()
                            .op = None;
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
    }

    /// Whether any operation is in flight on (stream, profile).
    pub fn busy(&self, stream: &str, profile: &str) -> bool {
        self.streams
            .get(stream)
            .and_then(|s| s.profiles.get(profile))
            .is_some_and(|p| p.op.is_some())
    }
}
