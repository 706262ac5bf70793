// SPDX-License-Identifier: MPL-2.0
//! Proactive balancing: move slots off hosts before their forecast load overloads them.
//!
//! One policy, two drivers: the simulator (`gopswarm-sim`, its proactive policy) measures it
//! on a thousand simulated hosts, the live service ([`crate::service`]) runs it on the live
//! forecasts, the announced events and the hosts' heartbeats. Both hand it what they know of
//! the hosts ([`HostLoad`]: capacity, load now, load planned for the horizon) and a
//! [`Swarm`] that lists slots and hands them off through the controller's GOP-boundary
//! handoff; it returns the moves it made and why ([`Move`], [`Reason`]).
//!
//! - [`Balancer::balance`]: a host whose planned load crosses `move_above` of its capacity
//!   hands its biggest slots to the hosts with the most planned room; failing room for a
//!   slot's planned load, a host overloaded now (or hot in a surprise the forecast missed)
//!   still moves it where it fits now.
//! - [`Balancer::shed_risky`]: the hosts likeliest to drop out hand slots to safe hosts that
//!   stay within the target utilisation: the swarm's spare room sits where failures are.
//! - [`planned_load`], [`event_sized_load`]: the load a stream is planned for (the highest
//!   its forecaster expects over the horizon, never below now) and the load its layout is
//!   sized for ahead of an announced event.

use crate::controller::Controller;
use crate::forecast::{Exog, ForecastConfig, Forecaster};
use gopswarm_proto::{EventAnnouncement, TaskRole};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

/// Thresholds of the balancer (fractions of a host's capacity).
#[derive(Debug, Clone)]
pub struct BalanceConfig {
    /// A host whose planned load crosses this fraction of its capacity sheds slots; a host
    /// takes a slot only while it stays under it.
    pub move_above: f64,
    /// Slots of risky hosts go only to safe hosts that stay under this fraction.
    pub target_utilisation: f64,
    /// Slots moved off hot hosts per round at most.
    pub max_moves: usize,
    /// Slots handed off risky hosts per round at most (they are not overloaded: no hurry).
    pub max_sheds: usize,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            move_above: 0.9,
            target_utilisation: 0.8,
            max_moves: 60,
            max_sheds: 20,
        }
    }
}

/// What the balancer knows of one host; `planned` and `now` follow its moves.
#[derive(Debug, Clone, Default)]
pub struct HostLoad {
    pub id: String,
    /// Capacity in the units of the loads.
    pub capacity: f64,
    /// Load its slots are planned to carry at the horizon (forecast, announced events).
    pub planned: f64,
    /// Load it carries now.
    pub now: f64,
    /// May take a slot (online, not draining).
    pub takes_slots: bool,
    /// May hand slots off (online or draining).
    pub sheds_slots: bool,
    /// Among the likeliest to drop out: spare room, and sheds its slots.
    pub risky: bool,
    /// Its chance of dropping out (orders the risky hosts).
    pub risk: f64,
}

/// One active slot of a host.
#[derive(Debug, Clone)]
pub struct Slot {
    pub stream: String,
    pub profile: String,
    /// Load it is planned to carry.
    pub planned: f64,
    /// Load it carries now.
    pub now: f64,
    /// Hosts of its layout (a target must not be one of them).
    pub holders: BTreeSet<String>,
}

/// Why a slot moved.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// Its host's planned load crossed `move_above` of its capacity.
    Forecast { planned: f64, capacity: f64 },
    /// No host had room for its planned load, but its host is overloaded now (or hot in a
    /// surprise): moved where it fits now.
    LoadNow { now: f64, capacity: f64 },
    /// Its host is among the likeliest to drop out.
    Risky { risk: f64 },
    /// Its host is being emptied.
    Drain,
}

/// One slot handed off.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub stream: String,
    pub profile: String,
    pub from: String,
    pub to: String,
    /// The slot's planned load and its load now.
    pub planned: f64,
    pub now: f64,
    pub reason: Reason,
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} {} -> {} (slot load {:.2} planned, {:.2} now): ",
            self.stream, self.profile, self.from, self.to, self.planned, self.now
        )?;
        match &self.reason {
            Reason::Forecast { planned, capacity } => write!(
                f,
                "forecast load {planned:.2} of capacity {capacity:.2} on {}",
                self.from
            ),
            Reason::LoadNow { now, capacity } => write!(
                f,
                "load now {now:.2} of capacity {capacity:.2} on {}, no room for the forecast",
                self.from
            ),
            Reason::Risky { risk } => write!(f, "{} may drop out (risk {risk:.3})", self.from),
            Reason::Drain => write!(f, "{} is being emptied", self.from),
        }
    }
}

impl Reason {
    /// Short name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Forecast { .. } => "forecast",
            Reason::LoadNow { .. } => "load-now",
            Reason::Risky { .. } => "risky",
            Reason::Drain => "drain",
        }
    }
}

/// The swarm the balancer acts on: hosts are indexes into its [`HostLoad`]s.
pub trait Swarm {
    /// Hosts that may take a slot now, in the controller's placement order.
    fn free_hosts(&self) -> Vec<usize>;
    /// Active slots of host `i` that are not on their way out.
    fn slots(&self, i: usize) -> Vec<Slot>;
    /// Whether an operation is in flight on (stream, profile).
    fn busy(&self, stream: &str, profile: &str) -> bool;
    /// Start the handoff; false if the controller refused it.
    fn hand_off(&mut self, mv: &Move) -> bool;
}

/// The candidate with the most room, that room at least `cost`; safe hosts before risky
/// ones, which are the swarm's spare room. `room(j)` is `None` for a host that may not take
/// the slot; among equals the last candidate wins.
pub fn roomiest(
    candidates: impl IntoIterator<Item = usize>,
    room: impl Fn(usize) -> Option<f64>,
    risky: impl Fn(usize) -> bool,
    cost: f64,
) -> Option<usize> {
    candidates
        .into_iter()
        .filter_map(|j| room(j).map(|r| (j, r)))
        .filter(|(_, room)| *room >= cost)
        .max_by(|a, b| (!risky(a.0)).cmp(&!risky(b.0)).then(a.1.total_cmp(&b.1)))
        .map(|(j, _)| j)
}

/// [`roomiest`] over `hosts`: among `free`, those that take slots, hold no slot of the
/// layout and are `admit`ted, by their room below `ceiling` of their capacity with `load`.
fn roomiest_of(
    hosts: &[HostLoad],
    free: &[usize],
    load: impl Fn(&HostLoad) -> f64,
    cost: f64,
    holders: &BTreeSet<String>,
    ceiling: f64,
    admit: impl Fn(&HostLoad) -> bool,
) -> Option<usize> {
    roomiest(
        free.iter().copied(),
        |j| {
            let h = &hosts[j];
            (h.takes_slots && !holders.contains(&h.id) && admit(h))
                .then(|| ceiling * h.capacity - load(h))
        },
        |j| hosts[j].risky,
        cost,
    )
}

/// One round of the policy over `hosts`; the moves it made are in `moves`.
pub struct Balancer<'a> {
    pub cfg: &'a BalanceConfig,
    pub hosts: &'a mut [HostLoad],
    /// Demand is above what the forecast said for now (a burst nobody announced): hot hosts
    /// also move slots on their load now.
    pub surprised: bool,
    pub moves: Vec<Move>,
}

impl<'a> Balancer<'a> {
    pub fn new(cfg: &'a BalanceConfig, hosts: &'a mut [HostLoad]) -> Self {
        Balancer {
            cfg,
            hosts,
            surprised: false,
            moves: Vec::new(),
        }
    }

    /// The host with the most planned room under `move_above` for `cost` more, whose
    /// capacity up to `move_above` holds at least `min_share`.
    pub fn target(
        &self,
        swarm: &impl Swarm,
        cost: f64,
        min_share: f64,
        holders: &BTreeSet<String>,
    ) -> Option<usize> {
        let move_above = self.cfg.move_above;
        roomiest_of(
            self.hosts,
            &swarm.free_hosts(),
            |h| h.planned,
            cost,
            holders,
            move_above,
            |h| move_above * h.capacity >= min_share,
        )
    }

    /// Move slots off hosts whose planned load crosses `move_above` of their capacity, the
    /// hottest first and their biggest slots first. Returns the planned load above the
    /// thresholds that found no host with room: capacity the swarm lacks where it is needed.
    pub fn balance(&mut self, swarm: &mut impl Swarm) -> f64 {
        let move_above = self.cfg.move_above;
        let mut hot: Vec<(usize, f64)> = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.sheds_slots && h.planned > move_above * h.capacity)
            .map(|(i, h)| (i, h.planned - move_above * h.capacity))
            .collect();
        hot.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut moves = 0;
        let mut unplaced = 0.0;
        for (i, mut excess) in hot {
            let mut slots = swarm.slots(i);
            slots.sort_by(|a, b| b.planned.total_cmp(&a.planned));
            for slot in slots {
                if excess <= 0.0 || moves >= self.cfg.max_moves {
                    break;
                }
                let reason = Reason::Forecast {
                    planned: self.hosts[i].planned,
                    capacity: self.hosts[i].capacity,
                };
                if self.move_slot(swarm, i, &slot, reason) {
                    excess -= slot.planned;
                    moves += 1;
                }
            }
            unplaced += excess.max(0.0);
        }
        unplaced
    }

    /// Hand `slot` from host `i` to the host with the most planned room for it. Failing one,
    /// a host overloaded now (or above `move_above` in a surprise) moves it where it fits
    /// now: better than staying.
    pub fn move_slot(
        &mut self,
        swarm: &mut impl Swarm,
        i: usize,
        slot: &Slot,
        why: Reason,
    ) -> bool {
        if swarm.busy(&slot.stream, &slot.profile) {
            return false;
        }
        let (cap, now) = (self.hosts[i].capacity, self.hosts[i].now);
        let (j, why) = match self.target(swarm, slot.planned, 0.0, &slot.holders) {
            Some(j) => (j, why),
            None if now > cap || (self.surprised && now > self.cfg.move_above * cap) => {
                let found = roomiest_of(
                    self.hosts,
                    &swarm.free_hosts(),
                    |h| h.now,
                    slot.now,
                    &slot.holders,
                    self.cfg.move_above,
                    |_| true,
                );
                match found {
                    Some(j) => (j, Reason::LoadNow { now, capacity: cap }),
                    None => return false,
                }
            }
            None => return false,
        };
        self.hand_off(swarm, i, j, slot, why)
    }

    /// Hand slots off the risky hosts, riskiest first and their smallest slots first (a
    /// death costs each slot its GOPs whatever it carries), to safe hosts that stay within
    /// the target utilisation (a full host drops out more).
    pub fn shed_risky(&mut self, swarm: &mut impl Swarm) {
        let mut risky: Vec<usize> = (0..self.hosts.len())
            .filter(|&i| self.hosts[i].risky)
            .collect();
        risky.sort_by(|&a, &b| self.hosts[b].risk.total_cmp(&self.hosts[a].risk));
        let mut moves = 0;
        for i in risky {
            let mut slots = swarm.slots(i);
            slots.sort_by(|a, b| a.planned.total_cmp(&b.planned));
            for slot in slots {
                if moves >= self.cfg.max_sheds {
                    return;
                }
                if swarm.busy(&slot.stream, &slot.profile) {
                    continue;
                }
                let Some(j) = roomiest_of(
                    self.hosts,
                    &swarm.free_hosts(),
                    |h| h.planned,
                    slot.planned,
                    &slot.holders,
                    self.cfg.target_utilisation,
                    |h| !h.risky,
                ) else {
                    continue;
                };
                let why = Reason::Risky {
                    risk: self.hosts[i].risk,
                };
                if self.hand_off(swarm, i, j, &slot, why) {
                    moves += 1;
                }
            }
        }
    }

    /// Hand `slot` from host `i` to host `j`; the planned and current loads follow.
    fn hand_off(
        &mut self,
        swarm: &mut impl Swarm,
        i: usize,
        j: usize,
        slot: &Slot,
        reason: Reason,
    ) -> bool {
        let mv = Move {
            stream: slot.stream.clone(),
            profile: slot.profile.clone(),
            from: self.hosts[i].id.clone(),
            to: self.hosts[j].id.clone(),
            planned: slot.planned,
            now: slot.now,
            reason,
        };
        if !swarm.hand_off(&mv) {
            return false;
        }
        self.hosts[i].planned -= slot.planned;
        self.hosts[j].planned += slot.planned;
        self.hosts[i].now -= slot.now;
        self.hosts[j].now += slot.now;
        self.moves.push(mv);
        true
    }
}

/// The load a stream is planned for: the highest its forecaster expects over the next
/// `horizon` steps, never below `now`. `viewers_at(h)` is the audience announced `h` steps
/// ahead; until the stream's own events taught its forecaster what a viewer costs, an
/// announced audience costs `per_viewer` (what other events taught) on top of the
/// background.
pub fn planned_load(
    f: &Forecaster,
    now: f64,
    horizon: usize,
    viewers_at: impl Fn(usize) -> f64,
    per_viewer: f64,
) -> f64 {
    let own_learnt = f.stats().per_viewer > 0.0;
    let ahead = (1..=horizon)
        .map(|h| {
            let viewers = viewers_at(h);
            let own = f.forecast(
                h,
                &Exog {
                    expected_viewers: viewers,
                },
            );
            if viewers > 0.0 && !own_learnt {
                let background = f.forecast(
                    h,
                    &Exog {
                        expected_viewers: 0.0,
                    },
                );
                own.max(background + per_viewer * viewers)
            } else {
                own
            }
        })
        .fold(0.0, f64::max);
    ahead.max(now)
}

/// The load a stream's layout is sized for when `announced` viewers are announced within
/// the lead time (`running` of them watching now): the background forecast at the horizon
/// plus what those viewers cost, never below `planned`. A viewer costs `per_viewer` (the
/// dearest seen) until an event of the stream's own runs with no bigger audience
/// announced; from then on what its forecaster learnt of it.
pub fn event_sized_load(
    f: &Forecaster,
    planned: f64,
    horizon: usize,
    announced: f64,
    running: f64,
    per_viewer: f64,
) -> f64 {
    if announced <= 0.0 {
        return planned;
    }
    let background = f.forecast(
        horizon,
        &Exog {
            expected_viewers: 0.0,
        },
    );
    let per_viewer = if running >= announced && f.stats().per_viewer > 0.0 {
        f.stats().per_viewer
    } else {
        per_viewer
    };
    planned.max(background + per_viewer * announced)
}

/// The live policy: a forecaster per stream fed once per forecast step with the stream's
/// load (its slots), the announced events, and one balancing round on the controller.
///
/// Units are slots: a task costs one slot of its host's capacity (what its tier allows)
/// now, more when the host's heartbeats say it does not keep up; an announced event of a
/// stream carries `slots` of load from its start, spread over the stream's layout.
pub struct LiveBalancer {
    pub cfg: BalanceConfig,
    step: Duration,
    horizon: usize,
    forecast: ForecastConfig,
    forecasters: BTreeMap<String, Forecaster>,
    announced: Vec<EventAnnouncement>,
    /// Moves made since the start, by reason.
    pub moves_total: BTreeMap<&'static str, u64>,
}

impl LiveBalancer {
    pub fn new(cfg: BalanceConfig, step: Duration, horizon: usize) -> Self {
        let step_s = step.as_secs_f64().max(0.001);
        LiveBalancer {
            cfg,
            step,
            horizon: horizon.max(1),
            forecast: ForecastConfig {
                steps_per_day: ((86_400.0 / step_s) as usize).max(2),
                horizon: horizon.max(1),
                ..Default::default()
            },
            forecasters: BTreeMap::new(),
            announced: Vec::new(),
            moves_total: BTreeMap::new(),
        }
    }

    /// An operator announced an event (replaces an earlier one of the same id).
    pub fn announce(&mut self, a: EventAnnouncement) {
        self.announced.retain(|x| x.id != a.id);
        self.announced.push(a);
    }

    /// Slots and viewers announced for `stream` at unix time `t_ms`.
    fn announced_at(&self, stream: &str, t_ms: u64) -> (f64, f64) {
        self.announced
            .iter()
            .filter(|a| {
                a.stream.as_deref() == Some(stream)
                    && t_ms >= a.start_unix_ms
                    && t_ms < a.end_unix_ms()
            })
            .fold((0.0, 0.0), |(s, v), a| {
                (s + a.slots as f64, v + a.expected_viewers)
            })
    }

    /// Per (stream, profile): slots of its current layout.
    fn layouts(c: &Controller) -> BTreeMap<(String, String), usize> {
        c.streams
            .iter()
            .flat_map(|(s, r)| {
                r.profiles.iter().filter_map(move |(p, ps)| {
                    ps.history
                        .last()
                        .map(|e| ((s.clone(), p.clone()), e.hosts.len()))
                })
            })
            .collect()
    }

    /// Learn this step's loads, plan each stream's load at the horizon and balance the
    /// hosts on it. Returns the moves started.
    pub fn step(&mut self, c: &mut Controller, now: Instant, now_ms: u64) -> Vec<Move> {
        let step_ms = self.step.as_millis() as u64;
        self.announced.retain(|a| now_ms < a.end_unix_ms());
        let layouts = Self::layouts(c);
        let mut stream_now: BTreeMap<String, f64> = BTreeMap::new();
        for ((s, _), n) in &layouts {
            *stream_now.entry(s.clone()).or_default() += *n as f64;
        }
        self.forecasters.retain(|s, _| stream_now.contains_key(s));
        let mut planned_per_slot: BTreeMap<String, f64> = BTreeMap::new();
        for (s, &load) in &stream_now {
            let (_, viewers_now) = self.announced_at(s, now_ms);
            let cfg = &self.forecast;
            let f = self
                .forecasters
                .entry(s.clone())
                .or_insert_with(|| Forecaster::new(cfg.clone()));
            f.observe(
                load,
                &Exog {
                    expected_viewers: viewers_now,
                },
            );
            let f = &self.forecasters[s];
            let planned = planned_load(
                f,
                load,
                self.horizon,
                |h| self.announced_at(s, now_ms + step_ms * h as u64).1,
                0.0,
            );
            // An announced event carries its slots of load: the most over the horizon.
            let event = (0..=self.horizon)
                .map(|h| self.announced_at(s, now_ms + step_ms * h as u64).0)
                .fold(0.0, f64::max);
            planned_per_slot.insert(s.clone(), planned.max(event) / load.max(1.0));
        }
        let (mut hosts, ids) = live_hosts(c, &planned_per_slot);
        let mut swarm = LiveSwarm {
            c,
            ids,
            planned_per_slot: &planned_per_slot,
            now,
        };
        let mut b = Balancer::new(&self.cfg, &mut hosts);
        b.balance(&mut swarm);
        for mv in &b.moves {
            *self.moves_total.entry(mv.reason.kind()).or_default() += 1;
            tracing::info!("proactive move: {mv}");
        }
        b.moves
    }
}

/// A host's load now: its tasks, scaled up when its heartbeats say it encodes slower than
/// real time.
fn load_now(h: &crate::controller::HostRecord) -> f64 {
    let m = &h.metrics;
    let lag = if m.encode_fps > 0.0 && m.realtime_fps > m.encode_fps {
        (m.realtime_fps / m.encode_fps) as f64
    } else {
        1.0
    };
    h.tasks.len() as f64 * lag
}

/// The live hosts as the balancer sees them, and their ids by index.
fn live_hosts(
    c: &Controller,
    planned_per_slot: &BTreeMap<String, f64>,
) -> (Vec<HostLoad>, Vec<String>) {
    let mut hosts = Vec::new();
    let mut ids = Vec::new();
    for h in c.hosts.values().filter(|h| h.alive) {
        let capacity = match h.tier {
            Some(t) => c.cfg.tiers.slots(t, h.max_tasks()),
            None => h.max_tasks(),
        } as f64;
        let planned = h
            .tasks
            .iter()
            .filter(|t| t.role == TaskRole::Active)
            .map(|t| planned_per_slot.get(&t.stream).copied().unwrap_or(1.0))
            .sum();
        hosts.push(HostLoad {
            id: h.id.clone(),
            capacity,
            planned,
            now: load_now(h),
            takes_slots: h.incompatible.is_none() && !h.cordoned,
            sheds_slots: true,
            risky: false,
            risk: 0.0,
        });
        ids.push(h.id.clone());
    }
    (hosts, ids)
}

/// The controller as a [`Swarm`].
struct LiveSwarm<'a> {
    c: &'a mut Controller,
    ids: Vec<String>,
    planned_per_slot: &'a BTreeMap<String, f64>,
    now: Instant,
}

impl Swarm for LiveSwarm<'_> {
    fn free_hosts(&self) -> Vec<usize> {
        self.c
            .free_hosts()
            .filter_map(|id| self.ids.iter().position(|x| x == id))
            .collect()
    }

    fn slots(&self, i: usize) -> Vec<Slot> {
        let Some(h) = self.c.hosts.get(&self.ids[i]) else {
            return Vec::new();
        };
        h.tasks
            .iter()
            .filter(|t| t.role == TaskRole::Active && t.until_gop.is_none())
            .map(|t| {
                let holders = self
                    .c
                    .streams
                    .get(&t.stream)
                    .and_then(|s| s.profiles.get(&t.profile))
                    .and_then(|p| p.history.last())
                    .map(|e| e.hosts.iter().cloned().collect())
                    .unwrap_or_default();
                Slot {
                    stream: t.stream.clone(),
                    profile: t.profile.clone(),
                    planned: self.planned_per_slot.get(&t.stream).copied().unwrap_or(1.0),
                    now: 1.0,
                    holders,
                }
            })
            .collect()
    }

    fn busy(&self, stream: &str, profile: &str) -> bool {
        self.c.busy(stream, profile)
    }

    fn hand_off(&mut self, mv: &Move) -> bool {
        match self
            .c
            .start_handoff(&mv.stream, &mv.profile, &mv.from, Some(&mv.to), self.now)
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("proactive move {}/{} refused: {e}", mv.stream, mv.profile);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Config;
    use gopswarm_proto::*;

    fn birth(c: &mut Controller, host: &str, max_tasks: u32, t0: Instant) {
        c.on_birth(
            Birth {
                host: host.into(),
                seq: 1,
                versions: this_build_versions("1.22.0"),
                capabilities: Capabilities {
                    max_tasks,
                    codecs: vec!["h264".into()],
                    ..Default::default()
                },
            },
            t0,
        );
        // Scored gold: it may hold all its slots (a new host holds one until scored).
        c.hosts.get_mut(host).unwrap().tier = Some(crate::score::Tier::Gold);
        c.reindex(host);
    }

    /// The hosts ack every command at once, until quiet.
    fn pump(c: &mut Controller, now: Instant) {
        for _ in 0..16 {
            let outs = c.take_out();
            if outs.is_empty() {
                return;
            }
            for o in outs {
                if let Ok(Inbound::Command(host, cmd)) = decode_publish(&o.topic, &o.payload) {
                    let ack = Ack {
                        host,
                        id: cmd.id,
                        ok: true,
                        detail: String::new(),
                        current_gop: Some(0),
                    };
                    c.on_ack(ack, now);
                }
            }
        }
    }

    fn stream(id: &str, slots: u32) -> StreamDef {
        StreamDef {
            id: id.into(),
            source: "gdp+tcp://127.0.0.1:9".into(),
            profiles: vec![ProfileDef {
                id: "main".into(),
                spec: "h264".into(),
            }],
            gop_ns: 1_000_000_000,
            redundancy: Some(0),
            slots: Some(slots),
            complexity: None,
            chunk_sink: None,
        }
    }

    /// Two small hosts hold both slots of `s1`; a big host joins empty.
    fn swarm() -> (Controller, Instant) {
        let t0 = Instant::now();
        let mut c = Controller::new(Config::default(), this_build_versions("1.22.0"), 1);
        birth(&mut c, "small-a", 2, t0);
        birth(&mut c, "small-b", 2, t0);
        c.add_stream(stream("s1", 2), t0).unwrap();
        pump(&mut c, t0);
        birth(&mut c, "big", 8, t0);
        pump(&mut c, t0);
        assert!(!c.busy("s1", "main"));
        (c, t0)
    }

    fn slots_on(c: &Controller, host: &str) -> usize {
        c.hosts[host]
            .tasks
            .iter()
            .filter(|t| t.role == TaskRole::Active && t.until_gop.is_none())
            .count()
    }

    #[test]
    fn an_announced_event_moves_a_slot_off_a_host_it_would_overload_before_it_starts() {
        let (mut c, t0) = swarm();
        let mut b = LiveBalancer::new(BalanceConfig::default(), Duration::from_secs(1), 10);
        // Nothing announced: 1 slot on a host of 2 is under 90 %, nothing moves.
        assert!(b.step(&mut c, t0, 1_000_000).is_empty());
        // An event of 6 slots on s1 in 5 s: each of its 2 slots will carry 3 on hosts of 2.
        b.announce(EventAnnouncement {
            id: "final".into(),
            stream: Some("s1".into()),
            start_unix_ms: 1_005_000,
            duration_s: 60.0,
            slots: 6,
            expected_viewers: 0.0,
        });
        let moves = b.step(&mut c, t0, 1_001_000);
        assert_eq!(
            moves.len(),
            1,
            "one handoff at a time per stream: {moves:?}"
        );
        let mv = &moves[0];
        assert_eq!((mv.stream.as_str(), mv.to.as_str()), ("s1", "big"));
        assert!(mv.from.starts_with("small-"), "{mv:?}");
        assert_eq!(
            mv.reason,
            Reason::Forecast {
                planned: 3.0,
                capacity: 2.0
            }
        );
        assert!(c.busy("s1", "main"), "the handoff is under way");
        pump(&mut c, t0);
        assert_eq!(slots_on(&c, "big"), 1);
        assert_eq!(slots_on(&c, &mv.from), 0);
        assert_eq!(b.moves_total.get("forecast"), Some(&1));
    }

    #[test]
    fn without_a_forecast_overload_nothing_moves() {
        let (mut c, t0) = swarm();
        let mut b = LiveBalancer::new(BalanceConfig::default(), Duration::from_secs(1), 10);
        // An event beyond the horizon (10 steps of 1 s) and one of another stream.
        for (id, stream, start) in [("later", "s1", 1_020_000), ("other", "s9", 1_002_000)] {
            b.announce(EventAnnouncement {
                id: id.into(),
                stream: Some(stream.into()),
                start_unix_ms: start,
                duration_s: 60.0,
                slots: 6,
                expected_viewers: 0.0,
            });
        }
        for k in 0..5 {
            assert!(b.step(&mut c, t0, 1_000_000 + 1000 * k).is_empty());
        }
        assert_eq!(slots_on(&c, "big"), 0);
    }

    /// A swarm of plain vectors: every handoff is accepted.
    struct Fake {
        free: Vec<usize>,
        slots: Vec<Vec<Slot>>,
        handed: Vec<(String, String)>,
    }

    impl Swarm for Fake {
        fn free_hosts(&self) -> Vec<usize> {
            self.free.clone()
        }
        fn slots(&self, i: usize) -> Vec<Slot> {
            self.slots[i].clone()
        }
        fn busy(&self, _: &str, _: &str) -> bool {
            false
        }
        fn hand_off(&mut self, mv: &Move) -> bool {
            self.handed.push((mv.stream.clone(), mv.to.clone()));
            true
        }
    }

    fn host(id: &str, capacity: f64, planned: f64, now: f64) -> HostLoad {
        HostLoad {
            id: id.into(),
            capacity,
            planned,
            now,
            takes_slots: true,
            sheds_slots: true,
            ..Default::default()
        }
    }

    fn slot(stream: &str, planned: f64, now: f64, holders: &[&str]) -> Slot {
        Slot {
            stream: stream.into(),
            profile: "main".into(),
            planned,
            now,
            holders: holders.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn the_biggest_slots_of_a_host_whose_forecast_crosses_the_threshold_go_to_the_roomiest() {
        // Host 0 is planned at 5 of 4 (fine now at 2); hosts 1 and 2 have room, 2 the most
        // but it already holds a slot of `x`.
        let mut hosts = vec![
            host("hot", 4.0, 5.0, 2.0),
            host("roomy", 4.0, 1.0, 1.0),
            host("roomier", 8.0, 0.0, 0.0),
        ];
        let mut swarm = Fake {
            free: vec![0, 1, 2],
            slots: vec![
                vec![
                    slot("x", 2.5, 1.0, &["hot", "roomier"]),
                    slot("y", 1.5, 0.5, &["hot"]),
                    slot("z", 1.0, 0.5, &["hot"]),
                ],
                vec![],
                vec![],
            ],
            handed: Vec::new(),
        };
        let cfg = BalanceConfig::default();
        let mut b = Balancer::new(&cfg, &mut hosts);
        let unplaced = b.balance(&mut swarm);
        // 5 - 0.9 * 4 = 1.4 over: x (2.5) goes to `roomy`, the only one with room for it
        // that does not hold x, and that is enough.
        assert_eq!(swarm.handed, [("x".to_string(), "roomy".to_string())]);
        assert_eq!(unplaced, 0.0);
        assert_eq!(b.moves[0].reason.kind(), "forecast");
        assert!((hosts[0].planned - 2.5).abs() < 1e-9);
        assert!((hosts[1].planned - 3.5).abs() < 1e-9);
        assert!((hosts[0].now - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_host_overloaded_now_with_no_room_for_the_forecast_moves_where_the_slot_fits_now() {
        let mut hosts = vec![host("hot", 2.0, 4.0, 2.5), host("other", 2.0, 1.8, 0.5)];
        let mut swarm = Fake {
            free: vec![1],
            slots: vec![vec![slot("x", 2.0, 1.0, &["hot"])], vec![]],
            handed: Vec::new(),
        };
        let cfg = BalanceConfig::default();
        let mut b = Balancer::new(&cfg, &mut hosts);
        let unplaced = b.balance(&mut swarm);
        assert_eq!(swarm.handed, [("x".to_string(), "other".to_string())]);
        assert_eq!(
            b.moves[0].reason,
            Reason::LoadNow {
                now: 2.5,
                capacity: 2.0
            }
        );
        // Its forecast still does not fit anywhere: the swarm lacks that much room.
        assert!((unplaced - (4.0 - 1.8 - 2.0)).abs() < 1e-9, "{unplaced}");
    }
}
