// SPDX-License-Identifier: MPL-2.0
//! A standby orchestrator: it follows the swarm's retained desired state on the broker
//! (births, deaths, certificates, assignments, scores, stream definitions, layouts) without
//! publishing anything, and takes over when the leader goes.
//!
//! # Lease and fencing
//!
//! The leader keeps a retained [`Lease`] on `orchestrator/lease` (its name, its epoch, a
//! time to live) and publishes it again every keep-alive; its last will on
//! `orchestrator/death` names the same name and epoch. A standby takes over when that will
//! arrives (a leader killed is noticed after the broker's 1.5 keep-alives), when the leader
//! leaves cleanly (it publishes the same death), or when no renewal came for the lease's time
//! to live (a leader hung but still connected). Taking over means: the state it followed
//! becomes its own (nothing is re-dealt: the same hosts, assignment revisions and layouts), and
//! it leads with an epoch above every epoch it saw. Hosts refuse commands and assignments of
//! an older epoch, and the merger refuses layouts of one, so a leader that comes back after a
//! standby took over cannot change anything; it sees the newer lease and exits (fenced).
//!
//! MQTT has no compare-and-set: two standbys that claim at once may pick the same epoch. The
//! lower name wins the tie; the other sees the winner's lease and exits.

use crate::controller::{HostRecord, ProfileState, StreamRecord};
use crate::store::Store;
use gopswarm_proto::link::{BrokerUrl, Link, LinkEvent, LinkOptions};
use gopswarm_proto::signed::{Open, Principal};
use gopswarm_proto::*;
use rumqttc::QoS;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a start without a lease on the broker waits for retained messages before it
/// leads (the broker sends them right after the subscription; this covers a slow one).
pub const SETTLE: Duration = Duration::from_millis(500);

/// A lease's time to live for a keep-alive: three renewals may be missed before a standby
/// takes over from a leader that is still connected.
pub fn lease_ttl(keepalive: Duration) -> Duration {
    keepalive * 3
}

/// The retained desired state of the swarm, as a standby follows it.
#[derive(Debug, Default)]
pub struct Mirror {
    births: BTreeMap<String, Birth>,
    deaths: BTreeMap<String, Death>,
    assignments: BTreeMap<String, Assignment>,
    scores: BTreeMap<String, HostScore>,
    pub certs: BTreeMap<String, HostCert>,
    defs: BTreeMap<String, StreamDef>,
    layouts: BTreeMap<(String, String), Layout>,
    /// The leader's lease and when it was last heard.
    pub lease: Option<(Lease, Instant)>,
    /// (holder, epoch) of orchestrators known to be gone.
    gone: Vec<(String, u64)>,
    /// Highest orchestrator epoch heard of (lease, status, death, commands).
    pub max_epoch: u64,
    /// Highest counter of a message signed by the orchestrator key: a standby taking over
    /// signs above it.
    pub max_counter: u64,
    /// Streams removed by a signed operator command whose definition's clear has not come yet.
    removed: BTreeSet<String>,
}

/// Removed streams remembered until their clear comes, at most; past that some are forgotten
/// (their clear is then refused as unsigned, which changes nothing).
const REMOVED_KEPT: usize = 1024;

/// Whether this instance should lead now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Another orchestrator leads (its name and epoch).
    Follow(String, u64),
    /// Lead: no live leader (why).
    Lead(String),
    /// Not yet known (waiting for retained messages or for a first lease).
    Wait,
}

impl Mirror {
    /// Take in a decoded, checked message.
    pub fn on(&mut self, inbound: Inbound, now: Instant) {
        match inbound {
            Inbound::Birth(b) => {
                self.births.insert(b.host.clone(), b);
            }
            Inbound::Death(d) => {
                self.deaths.insert(d.host.clone(), d);
            }
            Inbound::Assignment(a) => {
                self.max_epoch = self.max_epoch.max(a.orchestrator_epoch);
                if self
                    .assignments
                    .get(&a.host)
                    .is_none_or(|old| old.revision <= a.revision)
                {
                    self.assignments.insert(a.host.clone(), a);
                }
            }
            Inbound::Score(s) => {
                self.scores.insert(s.host.clone(), s);
            }
            Inbound::Cert(c) => {
                self.certs.insert(c.host.clone(), c);
            }
            Inbound::StreamDef(d) => {
                self.removed.remove(&d.id);
                self.defs.insert(d.id.clone(), d);
            }
            // A clear (an empty retained payload) carries no signature: the standby never
            // forgets a host's tasks, score or certificate for one (the orchestrator never
            // clears those), and forgets a stream on its operator's signed removal instead.
            Inbound::StreamCommand(StreamCommand::Remove { id }) => {
                self.defs.remove(&id);
                self.layouts.retain(|(st, _), _| *st != id);
                self.removed.insert(id);
                if self.removed.len() > REMOVED_KEPT {
                    self.removed.pop_first();
                }
            }
            Inbound::Layout(l) => {
                self.max_epoch = self.max_epoch.max(l.orchestrator_epoch);
                self.layouts
                    .insert((l.stream.clone(), l.profile.clone()), l);
            }
            Inbound::Command(_, c) => self.max_epoch = self.max_epoch.max(c.epoch),
            Inbound::OrchestratorStatus(s) => self.max_epoch = self.max_epoch.max(s.epoch),
            Inbound::OrchestratorDeath(s) => {
                self.max_epoch = self.max_epoch.max(s.epoch);
                self.gone.push((s.holder, s.epoch));
            }
            Inbound::Lease(l) => {
                self.max_epoch = self.max_epoch.max(l.epoch);
                self.lease = Some((l, now));
            }
            _ => {}
        }
    }

    /// Should `me` lead? `since`: when the link came up; `wait_for_leader`: how long a start
    /// with no lease on the broker waits for one (a standby started beside its leader).
    pub fn verdict(
        &self,
        me: &str,
        now: Instant,
        since: Instant,
        wait_for_leader: Duration,
    ) -> Verdict {
        match &self.lease {
            Some((l, _)) if l.holder == me => Verdict::Lead(format!(
                "the lease (epoch {}) is this orchestrator's own",
                l.epoch
            )),
            Some((l, _)) if self.gone.contains(&(l.holder.clone(), l.epoch)) => Verdict::Lead(
                format!("orchestrator {} (epoch {}) is gone", l.holder, l.epoch),
            ),
            Some((l, heard)) => {
                let ttl = Duration::from_millis(l.ttl_ms);
                if now.duration_since(*heard) >= ttl {
                    Verdict::Lead(format!(
                        "orchestrator {} (epoch {}) did not renew its lease for {ttl:?}",
                        l.holder, l.epoch
                    ))
                } else {
                    Verdict::Follow(l.holder.clone(), l.epoch)
                }
            }
            None if now.duration_since(since) >= wait_for_leader => Verdict::Lead(format!(
                "no orchestrator holds the lease after {wait_for_leader:?}"
            )),
            None => Verdict::Wait,
        }
    }

    /// The followed state as the controller's records: every host with its assignment
    /// (same revision and tasks) and presence, every stream with its layouts. A host's tier
    /// comes from its retained score, so a takeover swaps no slot holder out.
    pub fn records(&self, versions: &Versions) -> (Vec<HostRecord>, Vec<StreamRecord>) {
        let mut ids: Vec<&String> = self.births.keys().chain(self.assignments.keys()).collect();
        ids.sort();
        ids.dedup();
        let hosts = ids
            .into_iter()
            .map(|id| {
                let mut h = HostRecord::new(id);
                if let Some(b) = self.births.get(id) {
                    h.seq = b.seq;
                    h.alive = self.deaths.get(id).is_none_or(|d| d.seq < b.seq);
                    h.incompatible = compatible(versions, &b.versions).err();
                    h.versions = Some(b.versions.clone());
                    h.capabilities = Some(b.capabilities.clone());
                }
                if let Some(a) = self.assignments.get(id) {
                    h.revision = a.revision;
                    h.tasks = a.tasks.clone();
                }
                h.tier = self.scores.get(id).and_then(|s| match s.tier.as_str() {
                    "gold" => Some(crate::score::Tier::Gold),
                    "silver" => Some(crate::score::Tier::Silver),
                    "bronze" => Some(crate::score::Tier::Bronze),
                    _ => None,
                });
                h
            })
            .collect();
        let streams = self
            .defs
            .values()
            .map(|d| StreamRecord {
                def: d.clone(),
                profiles: d
                    .profiles
                    .iter()
                    .map(|p| {
                        let history = self
                            .layouts
                            .get(&(d.id.clone(), p.id.clone()))
                            .map(|l| l.history.clone())
                            .unwrap_or_default();
                        (
                            p.id.clone(),
                            ProfileState {
                                spec: p.spec.clone(),
                                history,
                                op: None,
                            },
                        )
                    })
                    .collect(),
            })
            .collect();
        (hosts, streams)
    }

    /// Check and take in one publish; the orchestrator's own counters are remembered.
    pub fn take(
        &mut self,
        open: &mut Open,
        topic: &str,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), Reject> {
        let inbound = open.open(topic, payload)?;
        match &inbound {
            // The clear that follows a signed removal.
            Inbound::StreamDefCleared(s) if self.removed.remove(s) => return Ok(()),
            Inbound::AssignmentCleared(_)
            | Inbound::ScoreCleared(_)
            | Inbound::CertCleared(_)
            | Inbound::StreamDefCleared(_) => return Err(Reject::Unsigned),
            _ => {}
        }
        if let Some((Principal::Orchestrator, _, n)) =
            open.verifier().and_then(|v| v.last_accepted().cloned())
        {
            self.max_counter = self.max_counter.max(n);
        }
        self.on(inbound, now);
        Ok(())
    }
}

/// What [`follow`] ends with: the state it followed, and why this orchestrator leads now.
pub struct Followed {
    pub mirror: Mirror,
    /// Another orchestrator led last: its state on the broker is newer than this one's store
    /// ([`adopt`] it).
    pub adopt: bool,
    pub why: String,
}

/// Follow the swarm until this orchestrator should lead; `None` if `shutdown` came first.
/// Nothing is published meanwhile. Operator commands are checked (their counters kept) but
/// not carried out: the leader does that.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    broker: BrokerUrl,
    client_id: &str,
    name: &str,
    keepalive: Duration,
    wait_for_leader: Duration,
    open: &mut Open,
    store: &Store,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Option<Followed> {
    let mut o = LinkOptions::new(broker, &format!("{client_id}-standby"));
    o.keep_alive = keepalive;
    o.clean_session = true;
    o.subscriptions = subscriptions()
        .into_iter()
        .map(|t| (t, QoS::AtLeastOnce))
        .collect();
    let mut link = Link::start(o);
    let mut mirror = Mirror::default();
    let mut since: Option<Instant> = None;
    let mut connected = false;
    let mut following: Option<(String, u64)> = None;
    let mut refusals = RefusalLog::new("standby orchestrator");
    // Retained births that came before their host's certificate (the broker need not keep
    // the order of the filters): opened again when it arrives.
    let mut before_cert: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let verdict = loop {
        tokio::select! {
            _ = &mut shutdown => {
                let _ = link.client.disconnect().await;
                return None;
            }
            _ = tick.tick() => {
                let Some(since) = since.filter(|_| connected) else { continue };
                match mirror.verdict(name, Instant::now(), since, wait_for_leader) {
                    Verdict::Lead(why) => break why,
                    Verdict::Follow(holder, epoch) => {
                        if following.as_ref() != Some(&(holder.clone(), epoch)) {
                            tracing::info!("standing by: orchestrator {holder} leads (epoch {epoch})");
                            following = Some((holder, epoch));
                        }
                    }
                    Verdict::Wait => {}
                }
            }
            ev = link.events.recv() => match ev {
                Some(LinkEvent::Connected { .. }) => {
                    connected = true;
                    since.get_or_insert_with(Instant::now);
                    // Silence while we were away says nothing about the leader.
                    if let Some((_, heard)) = mirror.lease.as_mut() {
                        *heard = Instant::now();
                    }
                }
                Some(LinkEvent::Disconnected { error, .. }) => {
                    connected = false;
                    tracing::warn!("standby: broker connection lost ({error})");
                }
                Some(LinkEvent::Message(p)) => {
                    let topic = Topic::parse(&p.topic);
                    let is_operator = matches!(topic, Some(Topic::StreamControl));
                    let result = mirror.take(open, &p.topic, &p.payload, Instant::now());
                    match (&topic, &result) {
                        (Some(Topic::Birth(h)), Err(Reject::BadSignature(why))) if why.contains("not enrolled") && before_cert.len() < 10_000 => {
                            before_cert.insert(h.clone(), (p.topic.clone(), p.payload.to_vec()));
                            continue;
                        }
                        (Some(Topic::Cert(h)), Ok(())) => {
                            if let Some((t, payload)) = before_cert.remove(h)
                                && let Err(reject) = mirror.take(open, &t, &payload, Instant::now())
                            {
                                refusals.refused(&t, &reject);
                            }
                        }
                        _ => {}
                    }
                    match result {
                        Ok(()) if is_operator => {
                            if let Some((who, topic, n)) = open.verifier().and_then(|v| v.last_accepted().cloned())
                                && let Err(e) = store.save_counter(&who.to_string(), &topic, n)
                            {
                                tracing::error!("state store: counter: {e:#}");
                            }
                        }
                        Ok(()) => {}
                        Err(reject) => refusals.refused(&p.topic, &reject),
                    }
                }
                None => return None,
            }
        }
    };
    refusals.flush();
    let _ = link.client.disconnect().await;
    let adopt = mirror.lease.as_ref().is_some_and(|(l, _)| l.holder != name);
    Some(Followed {
        mirror,
        adopt,
        why: verdict,
    })
}

/// Make the followed state this orchestrator's own: hosts and streams replaced by the
/// mirror's (a host's score history kept where the store has one), enrolments recorded.
pub fn adopt(store: &Store, mirror: &Mirror, versions: &Versions) -> anyhow::Result<()> {
    let (mut hosts, streams) = mirror.records(versions);
    let loaded = store.load()?;
    let mut old: BTreeMap<String, HostRecord> = loaded
        .hosts
        .into_iter()
        .map(|h| (h.id.clone(), h))
        .collect();
    for h in &mut hosts {
        if let Some(o) = old.remove(&h.id) {
            h.history = o.history;
            h.births = o.births;
            h.deaths = o.deaths;
        }
    }
    let mut host_rows: Vec<(&str, Option<&HostRecord>)> =
        hosts.iter().map(|h| (h.id.as_str(), Some(h))).collect();
    host_rows.extend(old.keys().map(|id| (id.as_str(), None)));
    let kept: std::collections::BTreeSet<&str> =
        streams.iter().map(|s| s.def.id.as_str()).collect();
    let mut stream_rows: Vec<(&str, Option<&StreamRecord>)> = streams
        .iter()
        .map(|s| (s.def.id.as_str(), Some(s)))
        .collect();
    stream_rows.extend(
        loaded
            .streams
            .iter()
            .filter(|s| !kept.contains(s.def.id.as_str()))
            .map(|s| (s.def.id.as_str(), None)),
    );
    store.save(loaded.epoch, loaded.next_cmd, &host_rows, &stream_rows)?;
    for c in mirror.certs.values() {
        store.adopt_enrolment(&c.host, &c.key, &c.token)?;
    }
    Ok(())
}

/// What a standby subscribes to: the lease and the orchestrator's presence first (the broker
/// sends retained messages filter by filter: a start learns at once whether another leads),
/// then the retained desired state, and commands (their epochs and counters).
pub fn subscriptions() -> Vec<String> {
    let mut s: Vec<String> = [
        Topic::OrchestratorLease,
        Topic::OrchestratorDeath,
        Topic::OrchestratorStatus,
    ]
    .iter()
    .map(Topic::path)
    .collect();
    // Certificates before births: a birth is checked with the key its host's certificate
    // carries.
    s.extend(
        ["cert", "birth", "death", "assignment", "score", "cmd"]
            .iter()
            .map(|l| filters::all_hosts(l)),
    );
    s.push(filters::all_streams("def"));
    s.push(filters::stream("+", "layout", "+"));
    s.push(Topic::StreamControl.path());
    s
}

/// Whether a lease another orchestrator published fences `me` at `epoch` (a newer epoch, or
/// the same one and a lower name).
pub fn fenced_by(lease: &Lease, me: &str, epoch: u64) -> bool {
    lease.holder != me && (lease.epoch > epoch || (lease.epoch == epoch && *lease.holder < *me))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_def(id: &str) -> StreamDef {
        StreamDef {
            id: id.into(),
            source: "gdp+tcp://127.0.0.1:7000".into(),
            profiles: vec![ProfileDef {
                id: "p".into(),
                spec: "h264".into(),
            }],
            gop_ns: 1_000_000_000,
            redundancy: Some(1),
            slots: Some(2),
            chunk_sink: None,
            complexity: None,
        }
    }

    fn lease(holder: &str, epoch: u64) -> Lease {
        Lease {
            holder: holder.into(),
            epoch,
            ttl_ms: 3000,
            renewed_ms: 0,
        }
    }

    #[test]
    fn a_standby_follows_a_live_lease_and_leads_when_it_goes() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(6);
        let mut m = Mirror::default();
        assert_eq!(m.verdict("b", t0, t0, wait), Verdict::Wait);
        assert!(matches!(
            m.verdict("b", t0 + wait, t0, wait),
            Verdict::Lead(_)
        ));
        m.on(Inbound::Lease(lease("a", 4)), t0);
        assert_eq!(
            m.verdict("b", t0 + Duration::from_secs(1), t0, wait),
            Verdict::Follow("a".into(), 4)
        );
        // Not renewed for its ttl: lead.
        let v = m.verdict("b", t0 + Duration::from_secs(3), t0, wait);
        assert!(
            matches!(&v, Verdict::Lead(why) if why.contains("did not renew")),
            "{v:?}"
        );
        // Renewed, then its will: lead at once.
        m.on(Inbound::Lease(lease("a", 4)), t0 + Duration::from_secs(2));
        let dead = |epoch| OrchestratorStatus {
            online: false,
            epoch,
            versions: this_build_versions("1.22.0"),
            holder: "a".into(),
        };
        m.on(Inbound::OrchestratorDeath(dead(3)), t0);
        assert!(
            matches!(
                m.verdict("b", t0 + Duration::from_secs(3), t0, wait),
                Verdict::Follow(..)
            ),
            "an older death says nothing"
        );
        m.on(Inbound::OrchestratorDeath(dead(4)), t0);
        let v = m.verdict("b", t0 + Duration::from_secs(3), t0, wait);
        assert!(
            matches!(&v, Verdict::Lead(why) if why.contains("gone")),
            "{v:?}"
        );
        assert_eq!(m.max_epoch, 4);
        // Its own lease from a previous run: lead.
        m.on(Inbound::Lease(lease("b", 5)), t0);
        assert!(matches!(m.verdict("b", t0, t0, wait), Verdict::Lead(_)));
    }

    #[test]
    fn newer_epochs_and_lower_names_fence() {
        assert!(fenced_by(&lease("b", 5), "a", 4));
        assert!(!fenced_by(&lease("b", 3), "a", 4));
        assert!(fenced_by(&lease("a", 4), "b", 4));
        assert!(!fenced_by(&lease("b", 4), "a", 4));
        assert!(!fenced_by(&lease("a", 9), "a", 4), "its own lease");
    }

    #[test]
    fn records_keep_revisions_tasks_layouts_presence_and_tiers() {
        let t0 = Instant::now();
        let versions = this_build_versions("1.22.0");
        let mut m = Mirror::default();
        let birth = |h: &str, seq| Birth {
            host: h.into(),
            seq,
            versions: versions.clone(),
            capabilities: Capabilities::default(),
        };
        m.on(Inbound::Birth(birth("h1", 10)), t0);
        m.on(Inbound::Birth(birth("h2", 20)), t0);
        m.on(
            Inbound::Death(Death {
                host: "h2".into(),
                seq: 20,
            }),
            t0,
        );
        m.on(
            Inbound::Death(Death {
                host: "h1".into(),
                seq: 9,
            }),
            t0,
        );
        for rev in [3, 7, 5] {
            m.on(
                Inbound::Assignment(Assignment {
                    host: "h1".into(),
                    revision: rev,
                    tasks: Vec::new(),
                    orchestrator_epoch: 2,
                }),
                t0,
            );
        }
        m.on(
            Inbound::Score(HostScore {
                host: "h1".into(),
                stability: 90.0,
                fitness: 90.0,
                combined: 90.0,
                tier: "gold".into(),
                slots: 2,
                explanation: String::new(),
                disconnect_risk: None,
                at_ms: 0,
            }),
            t0,
        );
        m.on(Inbound::StreamDef(stream_def("cam")), t0);
        let history = vec![LayoutEpoch {
            epoch: 1,
            from_gop: 0,
            redundancy: 1,
            hosts: vec!["h1".into(), "h2".into()],
            backups: Vec::new(),
        }];
        m.on(
            Inbound::Layout(Layout {
                stream: "cam".into(),
                profile: "p".into(),
                history: history.clone(),
                orchestrator_epoch: 3,
            }),
            t0,
        );
        let (hosts, streams) = m.records(&versions);
        let h1 = hosts.iter().find(|h| h.id == "h1").unwrap();
        let h2 = hosts.iter().find(|h| h.id == "h2").unwrap();
        assert!(h1.alive, "a death of an older connection");
        assert!(!h2.alive);
        assert_eq!(h1.revision, 7, "the newest revision");
        assert_eq!(h1.tier, Some(crate::score::Tier::Gold));
        assert_eq!(streams[0].profiles["p"].history, history);
        assert_eq!(m.max_epoch, 3);
    }

    /// Clears carry no signature: a forged one must not make a standby forget a host's tasks,
    /// score or certificate, or a stream; a stream goes on its operator's signed removal, and
    /// the clear that follows it is taken quietly.
    #[test]
    fn unsigned_clears_change_nothing_a_signed_removal_does() {
        let t0 = Instant::now();
        let mut m = Mirror::default();
        let mut open = Open::Plain;
        m.on(
            Inbound::Assignment(Assignment {
                host: "h1".into(),
                revision: 4,
                tasks: Vec::new(),
                orchestrator_epoch: 1,
            }),
            t0,
        );
        m.on(Inbound::StreamDef(stream_def("cam")), t0);
        m.on(Inbound::StreamDef(stream_def("keep")), t0);
        for topic in [
            Topic::Assignment("h1".into()),
            Topic::Score("h1".into()),
            Topic::Cert("h1".into()),
            Topic::StreamDef("cam".into()),
        ] {
            assert_eq!(
                m.take(&mut open, &topic.path(), b"", t0),
                Err(Reject::Unsigned),
                "{topic:?}"
            );
        }
        assert_eq!(m.assignments["h1"].revision, 4);
        assert!(m.defs.contains_key("cam"));
        m.on(
            Inbound::StreamCommand(StreamCommand::Remove { id: "cam".into() }),
            t0,
        );
        assert!(!m.defs.contains_key("cam"));
        assert_eq!(
            m.take(&mut open, &Topic::StreamDef("cam".into()).path(), b"", t0),
            Ok(()),
            "the clear after the removal"
        );
        assert_eq!(
            m.take(&mut open, &Topic::StreamDef("keep".into()).path(), b"", t0),
            Err(Reject::Unsigned)
        );
        assert!(m.defs.contains_key("keep"));
    }
}
