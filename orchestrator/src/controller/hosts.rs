// SPDX-License-Identifier: MPL-2.0
//! Hosts and presence: what the registry keeps of a host, births, deaths (last wills and
//! missed heartbeats), heartbeats, cordons, the free-host index used for placement, and what
//! becomes of a lost host's slots.

use super::*;

impl HostRecord {
    pub fn new(id: &str) -> Self {
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

    pub(super) fn gop(&self, stream: &str, profile: &str) -> Option<u64> {
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

    /// Its tier's place in placement order (1 gold .. 3 bronze; a host not scored yet counts
    /// as silver).
    pub(super) fn placement_rank(&self) -> u8 {
        self.tier.map_or(2, crate::score::Tier::rank)
    }

    /// Room for another task within what its tier allows.
    pub(super) fn can_take(&self, tiers: &crate::score::TierConfig) -> bool {
        let max = match self.tier {
            Some(t) => tiers.slots(t, self.max_tasks()),
            None => self.max_tasks(),
        } as usize;
        self.alive && self.incompatible.is_none() && !self.cordoned && self.load() < max
    }
}

impl Controller {
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
            let rank = h.placement_rank();
            self.free.insert((rank, h.load(), host.to_string()));
            self.indexed_load.insert(host.to_string(), (rank, h.load()));
        }
    }

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

    /// A host is gone: re-deal its slots over the survivors from the next safe GOP.
    pub(super) fn host_lost(&mut self, host: &str, now: Instant) {
        let h = self.hosts.get_mut(host).expect("known host");
        h.alive = false;
        h.deaths += 1;
        h.status.clear();
        self.stats.deaths += 1;
        self.dirty_hosts.insert(host.to_string());
        // Its commands will never be acked: forget them, so they do not pile up over deaths.
        self.pending.retain(|_, (h, ..)| h != host);
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

    /// Stop (or resume) giving `host` new slots.
    pub fn cordon(&mut self, host: &str, on: bool) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.cordoned = on;
            self.reindex(host);
        }
    }
}
