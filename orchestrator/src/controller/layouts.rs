// SPDX-License-Identifier: MPL-2.0
//! Layouts and placement: which hosts a (stream, profile) gets, preparing newcomers and
//! committing a layout at a safe GOP, growing, shrinking, migrating to another encoder
//! version and emptying a host.

use super::*;

/// A layout change that brings in new hosts (see `Controller::prepare_newcomers`).
struct Newcomers {
    /// The layout to commit, newcomers included.
    layout: Vec<String>,
    /// Redundancy the newcomers' standby tasks carry.
    redundancy: u32,
    /// Each newcomer with its slot in `layout`.
    slots: Vec<(usize, String)>,
    /// Holders that count as ready already, at the GOP each is at.
    ready: BTreeMap<String, u64>,
    /// Holders that drain once the layout commits.
    leaving: Vec<String>,
}

/// A layout short of its planned slots (see `Controller::regrow_short_layouts`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Regrow {
    /// No growth is tried before this.
    next_try: Instant,
    /// Growths tried since the layout last grew.
    tries: u32,
    /// Its slots when last seen.
    slots: usize,
}

/// The wait between growths that found no host ready doubles up to this many times.
const REGROW_MAX_DOUBLINGS: u32 = 5;

impl Controller {
    /// Up to `n` hosts for new slots of (stream, profile), in placement order, that run the
    /// same encoder library as the profile's holders (or, for a new layout, as the first host
    /// picked): GOPs of one profile must all come from one encoder version. The free hosts
    /// come first; when they are too few, live bronze hosts in service that hold only backup
    /// copies, whose backups are taken back. A backup gives way to a primary: a slot with no
    /// host loses its GOPs for sure, a slot without a backup only if its primary fails.
    pub(super) fn pick_hosts(
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
    pub(super) fn on_one_encoder<'a>(
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

    /// The codec of a profile: the first word of its spec (`h264, bitrate=...`).
    pub(super) fn codec_of(&self, stream: &str, profile: &str) -> Option<String> {
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
    pub(super) fn holders_encoder(&self, stream: &str, profile: &str) -> Option<Option<String>> {
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

    /// Slots and redundancy of a stream: what its definition says, else what its measured
    /// complexity and the free hosts call for, else the defaults.
    pub(super) fn wanted_slots(&self, stream: &str) -> (usize, u32) {
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

    pub(super) fn start_profile(&mut self, stream: &str, profile: &str, now: Instant) {
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
    pub(super) fn prepare_layout(
        &mut self,
        stream: &str,
        profile: &str,
        hosts: &[String],
        leaving: Vec<String>,
        now: Instant,
    ) {
        self.prepare_newcomers(
            stream,
            profile,
            Newcomers {
                layout: hosts.to_vec(),
                redundancy: 0,
                slots: hosts.iter().cloned().enumerate().collect(),
                ready: BTreeMap::new(),
                leaving,
            },
            now,
        );
    }

    /// Put each newcomer in standby on its slot of the new layout and make the profile's
    /// operation a start of that layout, committed once every newcomer is ready. The one
    /// path by which a layout change brings in new hosts (a new layout, growth, moving
    /// several slots at once).
    fn prepare_newcomers(&mut self, stream: &str, profile: &str, n: Newcomers, now: Instant) {
        let standby = LayoutEpoch {
            epoch: 0,
            from_gop: 0,
            redundancy: n.redundancy,
            hosts: n.layout.clone(),
            backups: Vec::new(),
        };
        for (slot, host) in &n.slots {
            self.prepare_standby(stream, profile, &standby, host, *slot as u32);
        }
        self.streams
            .get_mut(stream)
            .unwrap()
            .profiles
            .get_mut(profile)
            .unwrap()
            .op = Some(Op::Start {
            hosts: n.layout,
            ready: n.ready,
            deadline: now + self.cfg.prepare_timeout,
            leaving: n.leaving,
        });
    }

    /// Give `host` a standby task on `slot` of `standby` and send it the prepare command;
    /// returns the command's id.
    pub(super) fn prepare_standby(
        &mut self,
        stream: &str,
        profile: &str,
        standby: &LayoutEpoch,
        host: &str,
        slot: u32,
    ) -> String {
        let task = self.make_task(stream, profile, TaskRole::Standby, standby, slot);
        self.set_task(host, stream, profile, Some(task.clone()));
        self.command(host, stream, profile, CommandKind::Prepare { task })
    }

    /// Running holders that count as ready for a new layout, at the GOP each is at.
    fn holders_at(&self, stream: &str, profile: &str, holders: &[String]) -> BTreeMap<String, u64> {
        holders
            .iter()
            .map(|h| (h.clone(), self.hosts[h].gop(stream, profile).unwrap_or(0)))
            .collect()
    }

    /// Profiles that found no host when added get one as hosts arrive.
    pub(super) fn try_start_waiting(&mut self, now: Instant) {
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

    pub(super) fn switch_gop_for(&self, stream: &str, profile: &str, hosts: &[String]) -> u64 {
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
    pub(super) fn try_commit_start(
        &mut self,
        stream: &str,
        profile: &str,
        now: Instant,
        deadline: bool,
    ) {
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
                self.end_op(stream, profile);
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
        let unchanged = self.streams[stream].profiles[profile]
            .history
            .last()
            .is_some_and(|e| e.hosts == chosen);
        if unchanged {
            // A growth whose newcomers all missed the deadline: the layout stays as it is,
            // with no new epoch.
            self.end_op(stream, profile);
            return;
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
        self.end_op(stream, profile);
        let _ = now;
    }

    /// Record and publish a new layout epoch from GOP `k`, and give every holder its task.
    pub(super) fn new_layout(
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
            backups: Vec::new(),
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

    /// The layout in force of a started (stream, profile) with no operation in flight: what a
    /// handoff or a growth starts from.
    pub(super) fn idle_layout(&self, stream: &str, profile: &str) -> Result<LayoutEpoch, String> {
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
    pub(super) fn target_host(
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

    /// Grow back every running layout that has fewer slots than its stream plans (a holder
    /// died and the re-deal left its slots to the survivors) onto free hosts, one slot per
    /// layout per tick, once it has been short `regrow_after`. Without this a swarm that
    /// loses hosts one by one ends on one host however many come back. A growth whose
    /// newcomer is not ready in time doubles the wait before the next.
    pub(super) fn regrow_short_layouts(&mut self, now: Instant) {
        let Some(after) = self.cfg.regrow_after else {
            return;
        };
        let mut short = Vec::new();
        for (s, rec) in &self.streams {
            for (p, ps) in &rec.profiles {
                let Some(cur) = ps.history.last() else {
                    continue;
                };
                let (planned, _) = self.wanted_slots(s);
                if !cur.hosts.is_empty() && cur.hosts.len() < planned {
                    short.push((s.clone(), p.clone(), cur.hosts.len(), ps.op.is_some()));
                }
            }
        }
        let keep: BTreeSet<(String, String)> = short
            .iter()
            .map(|(s, p, ..)| (s.clone(), p.clone()))
            .collect();
        self.regrow.retain(|k, _| keep.contains(k));
        for (s, p, slots, busy) in short {
            // Only a free host of a tier as good as the holders' weakest takes the slot: the
            // stream runs on the survivors, and a weaker host (a bronze one that backs up
            // slots of silver holders) would make a worse primary than none. And only once
            // every holder has reached the layout in force, as for any change of the layout.
            let weakest = self.streams[&s].profiles[&p]
                .history
                .last()
                .into_iter()
                .flat_map(|e| e.hosts.iter())
                .filter_map(|h| self.hosts.get(h))
                .map(HostRecord::placement_rank)
                .max()
                .unwrap_or(0);
            let candidates: Vec<String> = self
                .free
                .iter()
                .filter(|(rank, ..)| *rank <= weakest)
                .map(|(_, _, id)| id.clone())
                .collect();
            let blocked = busy || candidates.is_empty() || !self.holders_reached_layout(&s, &p);
            let entry = self.regrow.entry((s.clone(), p.clone())).or_insert(Regrow {
                next_try: now + after,
                tries: 0,
                slots,
            });
            if slots > entry.slots {
                // The last growth worked: the next slot may follow at once.
                entry.tries = 0;
                entry.next_try = now;
            } else if slots < entry.slots {
                // Another death: its re-deal settles first.
                entry.next_try = entry.next_try.max(now + after);
            }
            entry.slots = slots;
            if blocked || now < entry.next_try {
                continue;
            }
            // If this one's newcomer is not ready by the prepare deadline, the next try waits
            // twice as long as the last wait (a growth that works resets it above).
            entry.tries += 1;
            let wait = after * (1 << entry.tries.min(REGROW_MAX_DOUBLINGS));
            entry.next_try = now + self.cfg.prepare_timeout + wait;
            // The first candidate in placement order that may hold the slot (same encoder as
            // the holders, not a holder already).
            let mut why = String::new();
            for to in &candidates {
                match self.grow(&s, &p, Some(to), now) {
                    Ok(to) => {
                        tracing::info!("{s}/{p}: regrowing a slot lost earlier onto {to}");
                        why.clear();
                        break;
                    }
                    Err(e) => why = e,
                }
            }
            if !why.is_empty() {
                tracing::debug!("{s}/{p}: cannot regrow yet: {why}");
            }
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
        let ready = self.holders_at(stream, profile, &cur.hosts);
        self.prepare_newcomers(
            stream,
            profile,
            Newcomers {
                layout: hosts,
                redundancy: 0,
                slots: newcomers
                    .iter()
                    .cloned()
                    .enumerate()
                    .map(|(k, to)| (cur.hosts.len() + k, to))
                    .collect(),
                ready,
                leaving: Vec::new(),
            },
            now,
        );
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
        let staying: Vec<String> = hosts
            .iter()
            .filter(|h| cur.hosts.contains(h))
            .cloned()
            .collect();
        let ready = self.holders_at(stream, profile, &staying);
        self.prepare_newcomers(
            stream,
            profile,
            Newcomers {
                layout: hosts,
                redundancy: cur.redundancy,
                slots: newcomers,
                ready,
                leaving,
            },
            now,
        );
        tracing::info!(
            "{stream}/{profile}: moving {} slots in one epoch: {swaps:?}",
            swaps.len()
        );
        Ok(())
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
}
