// SPDX-License-Identifier: MPL-2.0
//! Rolling updates and live scaling: the parts of the orchestrator that call a
//! [`Provisioner`].
//!
//! A **rolling update** takes the hosts one at a time, lowest fitness first: it cordons the
//! host (no new slots), empties it without stopping any output ([`Controller::move_off`]: a
//! GOP-boundary handoff to a spare of the same encoder version, else a migration of the whole
//! profile to hosts already on the new version in one epoch, else the other holders take the
//! slot over), runs the update hook, waits for the host to be born again, and goes on.
//!
//! The **scaler** provisions hosts before the predicted demand (the live forecast plus the
//! announced events, over the forecast horizon) crosses `scale_up_above` of the capacity, and
//! empties and deprovisions the hosts it started when demand and forecast stay below
//! `scale_down_below` of it.
//!
//! Provisioners block (they run processes and hooks), so they run on a thread of their own;
//! their results come back through a channel.

use crate::controller::Controller;
use crate::provision::Provisioner;
use gopswarm_proto::EventAnnouncement;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What to ask of the provisioner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    Provision(String),
    Deprovision(String),
    Update(String),
}

impl Job {
    pub fn host(&self) -> &str {
        match self {
            Job::Provision(h) | Job::Deprovision(h) | Job::Update(h) => h,
        }
    }
}

/// A finished job and how it went.
pub type JobDone = (Job, Result<(), String>);

/// A provisioner on its own thread.
pub struct Worker {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Worker {
    /// Start the thread; finished jobs arrive on the returned receiver.
    pub fn start(
        mut provisioner: Box<dyn Provisioner>,
    ) -> (Worker, tokio::sync::mpsc::UnboundedReceiver<JobDone>) {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("provisioner".into())
            .spawn(move || {
                // Ends when the worker is dropped; dropping the provisioner stops what it
                // started (the local spawner's hosts).
                for job in rx {
                    let result = match &job {
                        Job::Provision(h) => provisioner.provision(h),
                        Job::Deprovision(h) => provisioner.deprovision(h),
                        Job::Update(h) => provisioner.update(h),
                    }
                    .map_err(|e| format!("{e:#}"));
                    if done_tx.send((job, result)).is_err() {
                        break;
                    }
                }
            })
            .expect("provisioner thread");
        (Worker { jobs }, done_rx)
    }

    pub fn submit(&self, job: Job) {
        tracing::info!("provisioner: {job:?}");
        let _ = self.jobs.send(job);
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Cordoned; its slots are moving off.
    Draining { since: Instant },
    /// The hook runs; then the host must be born again.
    Updating {
        since: Instant,
        births_before: u64,
        hook_done: bool,
    },
}

/// A rolling update in progress.
#[derive(Debug)]
pub struct Rollout {
    remaining: Vec<String>,
    current: Option<(String, Phase)>,
    /// Longest a host may take to empty, and to come back after its update.
    pub timeout: Duration,
    pub updated: Vec<String>,
    pub failed: Vec<(String, String)>,
}

impl Rollout {
    /// Update `hosts` (all known live hosts when empty).
    pub fn new(c: &Controller, hosts: &[String], timeout: Duration) -> Rollout {
        let remaining = if hosts.is_empty() {
            c.hosts
                .values()
                .filter(|h| h.alive)
                .map(|h| h.id.clone())
                .collect()
        } else {
            hosts.to_vec()
        };
        tracing::info!("rolling update of {remaining:?}");
        Rollout {
            remaining,
            current: None,
            timeout,
            updated: Vec::new(),
            failed: Vec::new(),
        }
    }

    pub fn finished(&self) -> bool {
        self.remaining.is_empty() && self.current.is_none()
    }

    pub fn remaining(&self) -> usize {
        self.remaining.len() + usize::from(self.current.is_some())
    }

    /// The host whose turn is next: dead ones first (nothing to drain), then the lowest
    /// fitness, then the id.
    fn next_host(&mut self, c: &Controller) -> Option<String> {
        let key = |id: &String| {
            let h = c.hosts.get(id);
            let alive = h.is_some_and(|h| h.alive);
            let fitness = h
                .and_then(|h| h.live.fitness.as_ref())
                .map_or(0.0, |f| f.score);
            (alive, (fitness * 1000.0) as i64, id.clone())
        };
        let i = (0..self.remaining.len()).min_by_key(|&i| key(&self.remaining[i]))?;
        Some(self.remaining.remove(i))
    }

    /// Advance; returns the job to hand to the provisioner, if one is due.
    pub fn step(&mut self, c: &mut Controller, now: Instant) -> Option<Job> {
        if self.current.is_none() {
            let host = self.next_host(c)?;
            c.cordon(&host, true);
            tracing::info!("rolling update: emptying {host}");
            self.current = Some((host, Phase::Draining { since: now }));
        }
        let (host, phase) = self.current.clone()?;
        match phase {
            Phase::Draining { since } => {
                let left = match c.move_off(&host, now) {
                    Ok(n) => n,
                    Err(why) => {
                        tracing::debug!("rolling update: {host}: {why}");
                        usize::MAX
                    }
                };
                if left == 0 {
                    let births_before = c.hosts.get(&host).map_or(0, |h| h.births);
                    self.current = Some((
                        host.clone(),
                        Phase::Updating {
                            since: now,
                            births_before,
                            hook_done: false,
                        },
                    ));
                    tracing::info!("rolling update: {host} is empty; updating it");
                    return Some(Job::Update(host));
                }
                if now.saturating_duration_since(since) > self.timeout {
                    self.fail(c, &host, "its slots could not move off in time");
                }
            }
            Phase::Updating {
                since,
                births_before,
                hook_done,
            } => {
                let back = c
                    .hosts
                    .get(&host)
                    .is_some_and(|h| h.alive && h.births > births_before);
                if hook_done && back {
                    c.cordon(&host, false);
                    let version = c.hosts[&host]
                        .versions
                        .as_ref()
                        .map(|v| format!("{} {:?}", v.agent, v.encoders))
                        .unwrap_or_default();
                    tracing::info!("rolling update: {host} is back on {version}");
                    self.updated.push(host);
                    self.current = None;
                } else if now.saturating_duration_since(since) > self.timeout {
                    self.fail(c, &host, "it did not come back in time");
                }
            }
        }
        None
    }

    fn fail(&mut self, c: &mut Controller, host: &str, why: &str) {
        tracing::error!("rolling update: {host} skipped: {why}");
        c.cordon(host, false);
        self.failed.push((host.to_string(), why.to_string()));
        self.current = None;
    }

    /// The provisioner finished a job of this rollout.
    pub fn on_job_done(&mut self, c: &mut Controller, job: &Job, result: &Result<(), String>) {
        let Job::Update(host) = job else { return };
        let Some((current, Phase::Updating { hook_done, .. })) = self.current.as_mut() else {
            return;
        };
        if current != host {
            return;
        }
        match result {
            Ok(()) => *hook_done = true,
            Err(e) => {
                let host = host.clone();
                self.fail(c, &host, &format!("update hook: {e}"));
            }
        }
    }
}

/// Thresholds of the live scaler (fractions of the capacity in slots).
#[derive(Debug, Clone)]
pub struct ScalerConfig {
    pub scale_up_above: f64,
    /// Provision for the predicted demand to sit at this fraction of the capacity.
    pub target_utilisation: f64,
    pub scale_down_below: f64,
    /// Hosts in the swarm at most (provisioned or not).
    pub max_hosts: usize,
    /// Slots one provisioned host is expected to bring until it says.
    pub slots_per_host: f64,
    /// Quiet time after a scale-up before a scale-down, and the longest a provisioned host
    /// may take to join before it no longer counts as coming.
    pub cooldown: Duration,
    pub boot_timeout: Duration,
    /// Prefix of the ids of the hosts it provisions.
    pub id_prefix: String,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        ScalerConfig {
            scale_up_above: 0.85,
            target_utilisation: 0.8,
            scale_down_below: 0.75,
            max_hosts: 64,
            slots_per_host: 1.0,
            cooldown: Duration::from_secs(300),
            boot_timeout: Duration::from_secs(120),
            id_prefix: "auto".into(),
        }
    }
}

/// What the scaler saw and did in one round (logged, exported as metrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScaleRound {
    pub demand: f64,
    pub capacity: f64,
    /// Highest predicted demand over the horizon, announced events included.
    pub predicted_peak: f64,
    /// Hosts provisioned but not yet joined, counted in the capacity.
    pub booting: usize,
    pub provisioned: Vec<String>,
    pub draining: Vec<String>,
}

/// Provisions ahead of predicted demand, deprovisions what it started when demand falls.
#[derive(Debug)]
pub struct Scaler {
    pub cfg: ScalerConfig,
    announced: Vec<EventAnnouncement>,
    /// Hosts this scaler started: id -> when (booting until born).
    started: BTreeMap<String, Instant>,
    /// Hosts being emptied before their deprovision.
    retiring: BTreeMap<String, Instant>,
    /// Hosts handed to the provisioner to stop, until they are gone.
    stopping: BTreeMap<String, Instant>,
    next_id: u64,
    last_up: Option<Instant>,
    pub provisioned_total: u64,
    pub deprovisioned_total: u64,
}

impl Scaler {
    pub fn new(cfg: ScalerConfig) -> Scaler {
        Scaler {
            cfg,
            announced: Vec::new(),
            started: BTreeMap::new(),
            retiring: BTreeMap::new(),
            stopping: BTreeMap::new(),
            next_id: 1,
            last_up: None,
            provisioned_total: 0,
            deprovisioned_total: 0,
        }
    }

    /// An operator announced an event (replaces an earlier announcement of the same id).
    pub fn announce(&mut self, a: EventAnnouncement) {
        tracing::info!(
            "event {} announced: {} slots, {} viewers, from {} for {} s",
            a.id,
            a.slots,
            a.expected_viewers,
            a.start_unix_ms,
            a.duration_s
        );
        self.announced.retain(|x| x.id != a.id);
        self.announced.push(a);
    }

    /// Announced slots and viewers at unix time `t_ms`, of events whose stream is not running
    /// yet (a running one's slots are in the demand already).
    pub fn announced_at(&self, c: &Controller, t_ms: u64) -> (f64, f64) {
        self.announced
            .iter()
            .filter(|a| {
                t_ms >= a.start_unix_ms
                    && t_ms < a.end_unix_ms()
                    && !a.stream.as_ref().is_some_and(|s| c.streams.contains_key(s))
            })
            .fold((0.0, 0.0), |(slots, viewers), a| {
                (slots + a.slots as f64, viewers + a.expected_viewers)
            })
    }

    /// One round: `predicted(h)` is the forecast demand `h` steps ahead (announced viewers
    /// included); `step` is the forecast step. Returns the jobs to run.
    pub fn step(
        &mut self,
        c: &mut Controller,
        now: Instant,
        now_ms: u64,
        horizon: usize,
        step: Duration,
        predicted: impl Fn(usize, f64) -> f64,
    ) -> (Vec<Job>, ScaleRound) {
        let mut jobs = Vec::new();
        let (demand, capacity_live) = c.demand_and_capacity();
        // Started hosts that joined stop booting; those that never joined stop counting.
        self.started.retain(|id, at| {
            let joined = c.hosts.get(id).is_some_and(|h| h.alive);
            joined || now.saturating_duration_since(*at) < self.cfg.boot_timeout
        });
        self.stopping.retain(|id, at| {
            c.hosts.get(id).is_some_and(|h| h.alive)
                && now.saturating_duration_since(*at) < self.cfg.boot_timeout
        });
        let booting = self
            .started
            .keys()
            .filter(|id| !c.hosts.get(*id).is_some_and(|h| h.alive))
            .count();
        let capacity = capacity_live + booting as f64 * self.cfg.slots_per_host;
        let mut peak = demand;
        for h in 1..=horizon {
            let t_ms = now_ms + (step.as_millis() as u64) * h as u64;
            let (slots, viewers) = self.announced_at(c, t_ms);
            peak = peak.max(predicted(h, viewers) + slots);
        }
        let mut round = ScaleRound {
            demand,
            capacity,
            predicted_peak: peak,
            booting,
            ..Default::default()
        };
        let hosts_now = c.hosts.values().filter(|h| h.alive).count() + booting;
        if peak > self.cfg.scale_up_above * capacity {
            let wanted = peak / self.cfg.target_utilisation - capacity;
            let n = (wanted / self.cfg.slots_per_host).ceil().max(1.0) as usize;
            let n = n.min(self.cfg.max_hosts.saturating_sub(hosts_now));
            for _ in 0..n {
                let id = loop {
                    let id = format!("{}-{}", self.cfg.id_prefix, self.next_id);
                    self.next_id += 1;
                    if !c.hosts.contains_key(&id) && !self.started.contains_key(&id) {
                        break id;
                    }
                };
                self.started.insert(id.clone(), now);
                self.provisioned_total += 1;
                round.provisioned.push(id.clone());
                jobs.push(Job::Provision(id));
            }
            if n > 0 {
                self.last_up = Some(now);
                tracing::info!(
                    "scaler: predicted peak {peak:.1} slots over {capacity:.1} of capacity; provisioning {:?}",
                    round.provisioned
                );
            }
            // Hosts on their way out are welcome to stay.
            for id in std::mem::take(&mut self.retiring).into_keys() {
                c.cordon(&id, false);
            }
        } else if peak < self.cfg.scale_down_below * capacity
            && self.retiring.is_empty()
            && self
                .last_up
                .is_none_or(|t| now.saturating_duration_since(t) > self.cfg.cooldown)
        {
            // One host at a time, the least loaded of those it started, if the rest still
            // holds the peak under the target.
            let spare = capacity - self.cfg.slots_per_host;
            if peak <= self.cfg.target_utilisation * spare
                && let Some(id) = c
                    .hosts
                    .values()
                    .filter(|h| h.alive && self.owns(&h.id) && !self.stopping.contains_key(&h.id))
                    .min_by_key(|h| (h.tasks.len(), h.id.clone()))
                    .map(|h| h.id.clone())
            {
                c.cordon(&id, true);
                self.retiring.insert(id.clone(), now);
                tracing::info!("scaler: predicted peak {peak:.1} of {capacity:.1}: retiring {id}");
            }
        }
        // Retiring hosts: empty by handoff, then deprovision.
        for (id, since) in self.retiring.clone() {
            let left = c.move_off(&id, now).unwrap_or(usize::MAX);
            if left == 0 {
                self.retiring.remove(&id);
                self.started.remove(&id);
                self.stopping.insert(id.clone(), now);
                self.deprovisioned_total += 1;
                round.draining.push(id.clone());
                jobs.push(Job::Deprovision(id));
            } else if now.saturating_duration_since(since) > self.cfg.boot_timeout {
                tracing::warn!("scaler: {id} could not be emptied; it stays");
                self.retiring.remove(&id);
                c.cordon(&id, false);
            }
        }
        (jobs, round)
    }

    /// Whether this scaler started `id` (ids with its prefix count too: it restarts with
    /// the orchestrator, its hosts do not).
    fn owns(&self, id: &str) -> bool {
        self.started.contains_key(id)
            || id
                .strip_prefix(&self.cfg.id_prefix)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|n| n.parse::<u64>().is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Config;
    use gopswarm_proto::*;

    fn controller(hosts: &[(&str, f64)]) -> (Controller, Instant) {
        let t0 = Instant::now();
        let mut c = Controller::new(Config::default(), this_build_versions("1.22.0"), 1);
        for (i, (h, fitness)) in hosts.iter().enumerate() {
            c.on_birth(
                Birth {
                    host: h.to_string(),
                    seq: i as u64 + 1,
                    versions: this_build_versions("1.22.0"),
                    capabilities: Capabilities {
                        max_tasks: 1,
                        codecs: vec!["h264".into()],
                        ..Default::default()
                    },
                },
                t0,
            );
            c.hosts.get_mut(*h).unwrap().live.fitness = Some(crate::score::Explained {
                name: "fitness",
                terms: Vec::new(),
                gate: 1.0,
                gate_reason: None,
                score: *fitness,
            });
        }
        (c, t0)
    }

    #[test]
    fn rolling_update_takes_the_lowest_fitness_first_and_waits_for_the_rebirth() {
        let (mut c, t0) = controller(&[("a", 80.0), ("b", 40.0), ("c", 95.0)]);
        let mut r = Rollout::new(&c, &[], Duration::from_secs(60));
        // Idle hosts are empty at once: the hook runs for the weakest.
        assert_eq!(r.step(&mut c, t0), Some(Job::Update("b".into())));
        assert!(c.hosts["b"].cordoned, "no new slots while it updates");
        assert_eq!(r.step(&mut c, t0), None, "one host at a time");
        r.on_job_done(&mut c, &Job::Update("b".into()), &Ok(()));
        assert_eq!(r.step(&mut c, t0), None, "not back yet");
        c.on_death(
            Death {
                host: "b".into(),
                seq: 2,
            },
            t0,
        );
        let mut back = Birth {
            host: "b".into(),
            seq: 10,
            versions: this_build_versions("1.22.0"),
            capabilities: Capabilities {
                max_tasks: 1,
                ..Default::default()
            },
        };
        back.versions.encoders.insert("h264".into(), "next".into());
        c.on_birth(back, t0);
        assert_eq!(r.step(&mut c, t0), None, "b is done");
        assert_eq!(r.updated, ["b"]);
        assert_eq!(r.step(&mut c, t0), Some(Job::Update("a".into())));
        assert!(!c.hosts["b"].cordoned);
        // A failing hook skips the host and the update goes on.
        r.on_job_done(&mut c, &Job::Update("a".into()), &Err("exit 1".into()));
        assert_eq!(r.failed.len(), 1);
        assert!(!c.hosts["a"].cordoned);
        assert_eq!(r.step(&mut c, t0), Some(Job::Update("c".into())));
        // A host that never comes back is given up after the timeout.
        assert_eq!(r.step(&mut c, t0 + Duration::from_secs(61)), None);
        assert!(r.finished());
        assert_eq!(r.failed.len(), 2);
    }

    #[test]
    fn scaler_provisions_ahead_of_an_announced_event_and_counts_booting_hosts() {
        let (mut c, t0) = controller(&[("a", 90.0), ("b", 90.0)]);
        let mut s = Scaler::new(ScalerConfig {
            max_hosts: 5,
            ..Default::default()
        });
        let step = Duration::from_secs(1);
        let flat = |_h: usize, _v: f64| 0.0;
        // Nothing runs, nothing announced: no action (nothing of its own to retire either).
        let (jobs, round) = s.step(&mut c, t0, 1_000_000, 30, step, flat);
        assert!(jobs.is_empty(), "{jobs:?}");
        assert_eq!((round.demand, round.capacity), (0.0, 2.0));
        // An event of 3 slots in 20 s, inside the 30-step horizon: peak 3 over capacity 2
        // -> 3 / 0.8 - 2 = 1.75 -> 2 hosts.
        s.announce(EventAnnouncement {
            id: "final".into(),
            stream: Some("final".into()),
            start_unix_ms: 1_020_000,
            duration_s: 600.0,
            slots: 3,
            expected_viewers: 0.0,
        });
        let (jobs, round) = s.step(&mut c, t0, 1_000_000, 30, step, flat);
        assert_eq!(round.predicted_peak, 3.0);
        assert_eq!(
            jobs,
            [
                Job::Provision("auto-1".into()),
                Job::Provision("auto-2".into())
            ]
        );
        // They count as capacity while they boot: no second wave.
        let (jobs, round) = s.step(&mut c, t0, 1_001_000, 30, step, flat);
        assert!(jobs.is_empty(), "{jobs:?}");
        assert_eq!((round.booting, round.capacity), (2, 4.0));
        // They join; the event is cancelled and demand stays low: after the cooldown the
        // scaler empties and gives back one of its own hosts at a time, never host a or b.
        for (i, id) in ["auto-1", "auto-2"].iter().enumerate() {
            c.on_birth(
                Birth {
                    host: id.to_string(),
                    seq: 50 + i as u64,
                    versions: this_build_versions("1.22.0"),
                    capabilities: Capabilities {
                        max_tasks: 1,
                        ..Default::default()
                    },
                },
                t0,
            );
        }
        s.announced.clear();
        let later = t0 + s.cfg.cooldown + Duration::from_secs(1);
        let (jobs, round) = s.step(&mut c, later, 1_400_000, 30, step, flat);
        assert_eq!((round.capacity, round.booting), (4.0, 0));
        assert_eq!(jobs, [Job::Deprovision("auto-1".into())]);
        assert!(c.hosts["auto-1"].cordoned);
        c.on_death(
            Death {
                host: "auto-1".into(),
                seq: 50,
            },
            later,
        );
        let (jobs, _) = s.step(&mut c, later, 1_401_000, 30, step, flat);
        assert_eq!(jobs, [Job::Deprovision("auto-2".into())]);
        let (jobs, _) = s.step(&mut c, later, 1_402_000, 30, step, flat);
        assert!(jobs.is_empty(), "only hosts it started: {jobs:?}");
        assert_eq!(s.deprovisioned_total, 2);
        // An event outside the horizon does not count yet.
        let (slots, _) = s.announced_at(&c, 1_000_000 + 31_000 + 600_000);
        assert_eq!(slots, 0.0);
    }
}
