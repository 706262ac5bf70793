// SPDX-License-Identifier: MPL-2.0
//! The orchestrator process: MQTT link + controller + state store.

use crate::controller::{Config, Controller, Out};
use crate::store::Store;
use anyhow::Result;
use gopswarm_proto::link::{BrokerUrl, Link, LinkEvent, LinkOptions, Presence};
use gopswarm_proto::signed::{Open, Principal, Seal, Verifier};
use gopswarm_proto::*;
use rumqttc::QoS;
use std::path::PathBuf;
use std::sync::PoisonError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct ServiceOptions {
    pub broker: BrokerUrl,
    pub state: PathBuf,
    pub cfg: Config,
    pub client_id: String,
    pub gstreamer_version: String,
    /// Serve Prometheus metrics here.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Learned disconnect model (from `gopswarm learn`).
    pub disconnect_model: Option<crate::learn::Model>,
    /// Starts, stops and updates hosts (scaling, rolling updates); none: neither is possible.
    pub provisioner: Option<Box<dyn crate::provision::Provisioner>>,
    /// Scale the swarm on the forecast (needs a provisioner).
    pub scaler: Option<crate::rollout::ScalerConfig>,
    /// Step and horizon (in steps) of the live demand forecast.
    pub forecast_step: Duration,
    pub forecast_horizon: usize,
    /// Longest a host may take to empty, and to come back, during a rolling update.
    pub rollout_timeout: Duration,
    /// Move slots off hosts before their forecast load (rising demand, announced events)
    /// overloads them, once per forecast step ([`crate::proactive`]); none: off.
    pub proactive: Option<crate::proactive::BalanceConfig>,
    /// The swarm's keys (`gopswarm init`): sign what goes out, check what comes in, enrol
    /// hosts. None: `--insecure`, nothing signed or checked.
    pub keys: Option<gopswarm_proto::keys::KeyDir>,
    /// The embedded broker's logins: taught every enrolled host's key. None: no embedded
    /// broker, or one without logins (`--insecure`).
    pub logins: Option<Arc<gopswarm_proto::login::Logins>>,
    /// This orchestrator's name in the lease (`--name`): unique among a swarm's
    /// orchestrators.
    pub name: String,
    /// Start as a standby: follow the swarm and lead only when the leader goes, or when no
    /// leader showed up for a lease's time to live. Otherwise lead at start unless another
    /// orchestrator holds a live lease ([`crate::standby`]).
    pub standby: bool,
    /// How many messages each host may send ([`crate::rate`]).
    pub host_rate: crate::rate::HostRate,
}

/// Step of the live demand forecast by default (the forecaster's season is a day of these).
pub const DEFAULT_FORECAST_STEP: Duration = Duration::from_secs(60);
/// Steps ahead the live forecast looks by default.
pub const DEFAULT_FORECAST_HORIZON: usize = 10;

/// The swarm's demand forecast, fed once per [`FORECAST_STEP`]; its predictions and its own
/// error are exported.
pub struct LiveForecast {
    forecaster: crate::forecast::Forecaster,
    horizon: usize,
}

impl Default for LiveForecast {
    fn default() -> Self {
        LiveForecast::new(DEFAULT_FORECAST_STEP, DEFAULT_FORECAST_HORIZON)
    }
}

impl LiveForecast {
    pub fn new(step: Duration, horizon: usize) -> Self {
        let step_s = step.as_secs_f64().max(0.001);
        LiveForecast {
            forecaster: crate::forecast::Forecaster::new(crate::forecast::ForecastConfig {
                steps_per_day: ((86_400.0 / step_s) as usize).max(2),
                horizon,
                ..Default::default()
            }),
            horizon,
        }
    }

    /// Demand `h` steps ahead with `viewers` announced for then.
    pub fn predict(&self, h: usize, viewers: f64) -> f64 {
        self.forecaster.forecast(
            h,
            &crate::forecast::Exog {
                expected_viewers: viewers,
            },
        )
    }

    /// Observe the demand now (with the audience announced for now) and export the forecast.
    pub fn step(
        &mut self,
        m: &gopswarm_metrics::Registry,
        c: &Controller,
        viewers_now: f64,
    ) -> Result<()> {
        let (demand, capacity) = c.demand_and_capacity();
        self.forecaster.observe(
            demand,
            &crate::forecast::Exog {
                expected_viewers: viewers_now,
            },
        );
        let predicted = self.predict(self.horizon, 0.0);
        let st = self.forecaster.stats();
        for (name, help, v) in [
            (
                "gopswarm_demand_slots",
                "Slots the streams' layouts hold",
                demand,
            ),
            (
                "gopswarm_capacity_slots",
                "Slots the live hosts' tiers allow",
                capacity,
            ),
            (
                "gopswarm_forecast_demand_slots",
                "Demand the forecaster expects one horizon ahead (announced events aside)",
                predicted,
            ),
            (
                "gopswarm_forecast_mape_recent",
                "Recent mean absolute percentage error of the forecast one horizon ahead",
                st.mape_recent,
            ),
            (
                "gopswarm_forecast_bias_slots",
                "Bias correction the forecaster applies (from its own errors)",
                st.bias,
            ),
        ] {
            m.gauge(name, help, &[])?.set(&[], v)?;
        }
        m.counter(
            "gopswarm_forecast_scored_total",
            "Forecasts scored against what arrived",
            &[],
        )?
        .set(&[], st.scored as f64)?;
        Ok(())
    }
}

/// Mirror the controller into Prometheus metrics (called once per scoring round).
pub fn export_metrics(
    m: &gopswarm_metrics::Registry,
    c: &Controller,
    rejects: &RejectCounters,
) -> Result<()> {
    let host_gauges = [
        ("gopswarm_host_stability_score", "Stability score 0-100"),
        (
            "gopswarm_host_fitness_score",
            "Fitness score 0-100 (encoder state evaluator)",
        ),
        (
            "gopswarm_host_combined_score",
            "Score the tiers are cut on, 0-100",
        ),
        (
            "gopswarm_host_tier",
            "Resource allocation tier: 1 gold, 2 silver, 3 bronze",
        ),
        (
            "gopswarm_host_slots_allowed",
            "Slots the host's tier allows",
        ),
        ("gopswarm_host_tasks", "Tasks the host holds"),
        (
            "gopswarm_host_rtt_ms",
            "Median round trip orchestrator-host over MQTT",
        ),
        (
            "gopswarm_host_jitter_ms",
            "Mean absolute deviation of the round trips",
        ),
        (
            "gopswarm_host_keep_up_ratio",
            "Frames through over frames real time needs (median)",
        ),
        ("gopswarm_host_alive", "1 while the host is connected"),
        (
            "gopswarm_host_disconnect_risk",
            "Learned probability of a disconnect within the next history interval",
        ),
    ];
    for (name, help) in host_gauges {
        m.gauge(name, help, &["host"])?;
    }
    for h in c.hosts.values() {
        let l = [("host", h.id.as_str())];
        if let Some(s) = c.host_score(&h.id) {
            m.set("gopswarm_host_stability_score", &l, s.stability)?;
            m.set("gopswarm_host_fitness_score", &l, s.fitness)?;
            m.set("gopswarm_host_combined_score", &l, s.combined)?;
            m.set("gopswarm_host_slots_allowed", &l, s.slots as f64)?;
        }
        if let Some(t) = h.tier {
            m.set("gopswarm_host_tier", &l, t.rank() as f64)?;
        }
        m.set("gopswarm_host_tasks", &l, h.tasks.len() as f64)?;
        m.set("gopswarm_host_alive", &l, if h.alive { 1.0 } else { 0.0 })?;
        if let Some(r) = h.live.rtt.median_ms() {
            m.set("gopswarm_host_rtt_ms", &l, r)?;
        }
        if let Some(j) = h.live.rtt.jitter_ms() {
            m.set("gopswarm_host_jitter_ms", &l, j)?;
        }
        if let Some(r) = h.live.disconnect_risk {
            m.set("gopswarm_host_disconnect_risk", &l, r)?;
        }
        if let Some(k) = h.live.speed_ratio(Instant::now()) {
            m.set("gopswarm_host_keep_up_ratio", &l, k)?;
        }
    }
    let st = &c.stats;
    for (name, help, v) in [
        ("gopswarm_births_total", "Host connections seen", st.births),
        (
            "gopswarm_deaths_total",
            "Hosts lost (will or silence)",
            st.deaths,
        ),
        ("gopswarm_layouts_total", "Layout epochs made", st.layouts),
        (
            "gopswarm_handoffs_total",
            "Handoffs completed",
            st.handoffs_done,
        ),
        (
            "gopswarm_slots_moved_together_total",
            "Slots moved to other hosts by one switch of several (replacement or migration)",
            st.slots_moved_together,
        ),
        (
            "gopswarm_handoffs_aborted_total",
            "Handoffs aborted",
            st.handoffs_aborted,
        ),
        (
            "gopswarm_peer_swaps_total",
            "Handoffs started by peer swapping",
            st.peer_swaps,
        ),
        (
            "gopswarm_backups_given_total",
            "Backup (copy-only) tasks given to bronze hosts",
            st.backups_given,
        ),
        (
            "gopswarm_backups_taken_total",
            "Backup tasks taken back (host left bronze, emptied, or slot gone)",
            st.backups_taken,
        ),
        ("gopswarm_commands_total", "Commands sent", st.commands),
        (
            "gopswarm_rejected_payloads_total",
            "Payloads the orchestrator refused",
            rejects.total(),
        ),
    ] {
        m.counter(name, help, &[])?.set(&[], v as f64)?;
    }
    let by_reason = m.counter(
        "gopswarm_rejected_payloads_by_reason_total",
        "Payloads the orchestrator refused, by reason (unsigned, bad-signature, replayed, rate-limited...)",
        &["reason"],
    )?;
    for (reason, n) in rejects.snapshot() {
        by_reason.set(&[reason], n as f64)?;
    }
    Ok(())
}

/// A view of the controller for the process that runs the service (demo summary, status).
pub type Shared = Arc<Mutex<Controller>>;

pub struct Service {
    pub controller: Shared,
    pub rejects: Arc<RejectCounters>,
}

async fn publish_all(link: &Link, seal: &Seal, outs: Vec<Out>) {
    for o in outs {
        let payload = if o.payload.is_empty() {
            // Clearing a retained message: nothing to sign.
            o.payload
        } else {
            seal.seal(&o.topic, o.payload)
        };
        if let Err(e) = link
            .client
            .publish(o.topic, QoS::AtLeastOnce, o.retain, payload)
            .await
        {
            tracing::error!("publish: {e}");
        }
    }
}

/// What each broker connection dropped or kept waiting while the service was behind.
fn link_metrics(
    m: &gopswarm_metrics::Registry,
    links: &[(&str, &gopswarm_proto::link::LinkStats)],
) -> Result<()> {
    use std::sync::atomic::Ordering;
    for (name, stats) in links {
        m.counter(
            "gopswarm_orchestrator_link_dropped_total",
            "Heartbeats dropped because the orchestrator was behind (a flood)",
            &["connection"],
        )?
        .set(&[name], stats.dropped.load(Ordering::Relaxed) as f64)?;
        m.gauge(
            "gopswarm_orchestrator_link_backlog_max",
            "Most messages that waited at once because the orchestrator was behind",
            &["connection"],
        )?
        .set(&[name], stats.backlog_max.load(Ordering::Relaxed) as f64)?;
    }
    Ok(())
}

fn must_save_first(topic: &str) -> bool {
    matches!(
        Topic::parse(topic),
        Some(Topic::Assignment(_) | Topic::Layout(..) | Topic::Command(_) | Topic::StreamDef(_))
    )
}

fn persist(store: &Store, c: &mut Controller) {
    let (hosts, streams) = c.take_dirty();
    let hosts: Vec<_> = hosts.iter().map(|h| (h.as_str(), c.hosts.get(h))).collect();
    let streams: Vec<_> = streams
        .iter()
        .map(|s| (s.as_str(), c.streams.get(s)))
        .collect();
    if let Err(e) = store.save(c.epoch, c.next_cmd, &hosts, &streams) {
        tracing::error!("state store: {e:#}");
    }
}

impl Service {
    /// Open the state, connect, and run until `shutdown` resolves.
    pub async fn run(
        opts: ServiceOptions,
        shutdown: impl std::future::Future<Output = ()>,
        ready: Option<tokio::sync::oneshot::Sender<Service>>,
    ) -> Result<()> {
        let store = Store::open(&opts.state)?;
        let versions = this_build_versions(&opts.gstreamer_version);
        let (seal, mut open) = match &opts.keys {
            Some(kd) => {
                let signer = kd
                    .signer(Principal::Orchestrator)
                    .map_err(anyhow::Error::msg)?;
                let trust = kd.trust().map_err(anyhow::Error::msg)?;
                let mut v = Verifier::new(&trust).map_err(anyhow::Error::msg)?;
                if trust.orchestrator != gopswarm_proto::signed::encode_public(&signer.public()) {
                    anyhow::bail!(
                        "{}: the orchestrator key is not the one trust.json names",
                        kd.dir.display()
                    );
                }
                for (host, key) in store.host_keys()? {
                    match gopswarm_proto::signed::parse_public(&key) {
                        Ok(k) => v.set_host_key(&host, k),
                        Err(e) => tracing::error!("state: key of host {host}: {e}"),
                    }
                }
                // Operator commands already carried out stay carried out after a restart.
                for (who, topic, n) in store.counters()? {
                    if let Ok(p) = Principal::parse(&who) {
                        v.restore_counter(p, &topic, n);
                    }
                }
                (Arc::new(Some(signer)), Open::Verified(Box::new(v)))
            }
            None => (Arc::new(None), Open::Plain),
        };
        // Over TLS with the swarm's keys: trusts the swarm CA, logs in with its key.
        let broker = match &opts.keys {
            Some(kd) => opts
                .broker
                .clone()
                .for_swarm(
                    kd.broker_ca().as_deref(),
                    seal.as_ref().as_ref().map(|s| s.broker_login()),
                )
                .map_err(anyhow::Error::msg)?,
            None => opts.broker.clone(),
        };
        tokio::pin!(shutdown);
        // Lead only when no other orchestrator does: follow the leader until it goes.
        let wait_for_leader = if opts.standby {
            crate::standby::lease_ttl(opts.cfg.keepalive)
        } else {
            crate::standby::SETTLE
        };
        let Some(followed) = crate::standby::follow(
            broker.clone(),
            &opts.client_id,
            &opts.name,
            opts.cfg.keepalive,
            wait_for_leader,
            &mut open,
            &store,
            shutdown.as_mut(),
        )
        .await
        else {
            return Ok(());
        };
        if followed.adopt {
            crate::standby::adopt(&store, &followed.mirror, &versions)?;
        }
        if let Some(s) = seal.as_ref() {
            s.advance_past(followed.mirror.max_counter);
        }
        let seal = Arc::new(match Arc::try_unwrap(seal) {
            Ok(Some(s)) => Seal::Signed(Box::new(s)),
            Ok(None) => Seal::Plain,
            Err(_) => anyhow::bail!("the orchestrator's signer is still shared"),
        });
        if let Some(l) = &opts.logins {
            for (host, key) in store.host_keys()? {
                if let Ok(k) = gopswarm_proto::signed::parse_public(&key) {
                    l.set_host_key(&host, k);
                }
            }
        }
        let loaded = store.load()?;
        let epoch = loaded.epoch.max(followed.mirror.max_epoch) + 1;
        let mut c = Controller::new(opts.cfg.clone(), versions.clone(), epoch);
        c.disconnect_model = opts.disconnect_model.clone();
        let restored = (loaded.hosts.len(), loaded.streams.len());
        c.restore(
            loaded.hosts,
            loaded.streams,
            loaded.next_cmd,
            Instant::now(),
        );
        tracing::info!(
            "orchestrator {} leads at epoch {epoch} ({}): {} hosts, {} streams {}",
            opts.name,
            followed.why,
            restored.0,
            restored.1,
            if followed.adopt {
                "taken over from the broker's retained state".to_string()
            } else {
                format!("restored from {}", opts.state.display())
            }
        );
        // Persist the new epoch right away: commands of this run carry it.
        if let Err(e) = store.save(epoch, c.next_cmd, &[], &[]) {
            tracing::error!("state store: {e:#}");
        }
        let controller: Shared = Arc::new(Mutex::new(c));
        let rejects = Arc::new(RejectCounters::default());
        if let Some(tx) = ready {
            let _ = tx.send(Service {
                controller: controller.clone(),
                rejects: rejects.clone(),
            });
        }

        let status_body = {
            let (versions, name) = (versions.clone(), opts.name.clone());
            move |online: bool| {
                encode(&OrchestratorStatus {
                    online,
                    epoch,
                    versions: versions.clone(),
                    holder: name.clone(),
                })
            }
        };
        let status = |topic: Topic, online: bool| {
            let seal = seal.clone();
            let body = status_body.clone();
            move |_seq: u64| seal.seal(&topic.path(), body(online))
        };
        let lease = || Out {
            topic: Topic::OrchestratorLease.path(),
            payload: encode(&Lease {
                holder: opts.name.clone(),
                epoch,
                ttl_ms: crate::standby::lease_ttl(opts.cfg.keepalive).as_millis() as u64,
                renewed_ms: unix_ms(),
            }),
            retain: true,
        };
        let mut options = LinkOptions::new(broker.clone(), &opts.client_id);
        options.keep_alive = opts.cfg.keepalive;
        options.subscriptions = ["birth", "death", "enrol"]
            .iter()
            .map(|l| (filters::all_hosts(l), QoS::AtLeastOnce))
            .collect();
        // Liveness and the operator on a connection of their own: the broker queues per
        // connection, so a burst of births (a fleet reconnecting, or a flood) cannot hold up
        // heartbeats, acks and stream commands behind it.
        let mut live = LinkOptions::new(broker, &format!("{}-live", opts.client_id));
        live.keep_alive = opts.cfg.keepalive;
        // The lease and the status here too: a leader hears its own renewals back (and another
        // leader's) without waiting behind a burst of births.
        let lease_filters = [
            Topic::OrchestratorLease.path(),
            Topic::OrchestratorStatus.path(),
        ];
        live.subscriptions = ["heartbeat", "applied", "ack"]
            .iter()
            .map(|l| (filters::all_hosts(l), QoS::AtLeastOnce))
            .chain([(Topic::StreamControl.path(), QoS::AtLeastOnce)])
            .chain(lease_filters.iter().map(|t| (t.clone(), QoS::AtLeastOnce)))
            .collect();
        // Heartbeats come again within a keep-alive: when behind, drop them, not the acks and
        // commands.
        live.droppable = Some(|topic| matches!(Topic::parse(topic), Some(Topic::Heartbeat(_))));
        let mut live_link = Link::start(live);
        options.presence = Some(Presence {
            birth_topic: Topic::OrchestratorStatus.path(),
            // Its own topic: the will is signed at connect, before the birth, and on the
            // status topic it would look like a replay of an older status.
            death_topic: Topic::OrchestratorDeath.path(),
            birth: Box::new(status(Topic::OrchestratorStatus, true)),
            death: Box::new(status(Topic::OrchestratorDeath, false)),
        });
        let mut link = Link::start(options);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        // Scores, round-trip probes and metrics once per keep-alive.
        let mut scoring = tokio::time::interval(opts.cfg.keepalive);
        // After a stall (a frozen process), one round, not a burst of the missed ones.
        scoring.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut forecast_tick = tokio::time::interval(opts.forecast_step);
        let mut live_forecast = LiveForecast::new(opts.forecast_step, opts.forecast_horizon);
        // The provisioner's thread; without one, a channel that never delivers.
        let (worker, mut jobs_done, _no_worker) = match opts.provisioner {
            Some(p) => {
                let (w, rx) = crate::rollout::Worker::start(p);
                (Some(w), rx, None)
            }
            None => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (None, rx, Some(tx))
            }
        };
        let mut rollout: Option<crate::rollout::Rollout> = None;
        let mut scaler = opts.scaler.clone().map(crate::rollout::Scaler::new);
        let mut balancer = opts.proactive.clone().map(|cfg| {
            crate::proactive::LiveBalancer::new(cfg, opts.forecast_step, opts.forecast_horizon)
        });
        if scaler.is_some() && worker.is_none() {
            anyhow::bail!("scaling needs a provisioner");
        }
        let registry = Arc::new(gopswarm_metrics::Registry::new());
        let metrics_server = match opts.metrics_listen {
            Some(addr) => {
                let server = gopswarm_metrics::serve(registry.clone(), addr).await?;
                tracing::info!(
                    "Prometheus metrics on http://{}/metrics",
                    server.local_addr()
                );
                Some(server)
            }
            None => None,
        };
        // Connected means both connections are up: without the second one no heartbeat
        // arrives, and every host would be declared dead.
        let (mut main_up, mut live_up, mut connected) = (false, false, false);
        let mut refusals = RefusalLog::new("orchestrator");
        let limiter = crate::rate::HostLimiter::new(opts.host_rate);
        let mut pruned = Instant::now();
        let mut tokens = opts.keys.clone().map(crate::enrol::Tokens::new);
        // Another orchestrator's lease that fences this one.
        let mut fenced: Option<Lease> = None;
        // When this leader last heard its own lease back from the broker. Not heard for 1.5
        // keep-alives (frozen, or cut off from the broker: the broker may have sent our will,
        // and a standby may lead), it holds every action (`held`: since when, this clock's
        // ms; outputs kept back) and goes on renewing. The broker delivers one topic's messages
        // in order: once a renewal made after the hold began comes back, any lease a standby
        // published before it has arrived first, and fenced us. So that echo ends the hold.
        let hold_after = opts.cfg.keepalive * 3 / 2;
        // By the renewal's own time (this clock), not by when it arrived: a process frozen
        // with its echo in a socket buffer must not take the echo for news.
        let mut lease_heard_ms = unix_ms();
        let mut held: Option<u64> = None;
        let mut held_back: Vec<Out> = Vec::new();
        loop {
            let outs = tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    let mut c = controller.lock().unwrap_or_else(PoisonError::into_inner);
                    let now = Instant::now();
                    if held.is_none() && lease_lapsed(lease_heard_ms, hold_after) {
                        held = Some(unix_ms());
                    }
                    if pruned.elapsed() >= Duration::from_secs(10) {
                        limiter.prune();
                        pruned = Instant::now();
                    }
                    if connected && held.is_none() {
                        c.tick(now);
                        if let (Some(r), Some(w)) = (rollout.as_mut(), worker.as_ref()) {
                            if let Some(job) = r.step(&mut c, now) {
                                w.submit(job);
                            }
                            if r.finished() {
                                tracing::info!(
                                    "rolling update done: {} updated, {} skipped {:?}",
                                    r.updated.len(),
                                    r.failed.len(),
                                    r.failed
                                );
                                rollout_metrics(&registry, r);
                                rollout = None;
                            }
                        }
                    }
                    persist(&store, &mut c);
                    c.take_out()
                }
                _ = scoring.tick() => {
                    refusals.flush();
                    let mut c = controller.lock().unwrap_or_else(PoisonError::into_inner);
                    if connected && held.is_none() {
                        let now = Instant::now();
                        c.rescore(now);
                        c.probe(now);
                    }
                    if let Err(e) = store.append_samples(&c.take_samples()) {
                        tracing::error!("state store: history samples: {e:#}");
                    }
                    if let Err(e) = export_metrics(&registry, &c, &rejects) {
                        tracing::error!("metrics: {e:#}");
                    }
                    if let Err(e) = link_metrics(&registry, &[("main", &link.stats), ("live", &live_link.stats)]) {
                        tracing::error!("metrics: {e:#}");
                    }
                    persist(&store, &mut c);
                    let mut outs = c.take_out();
                    // The lease, renewed every keep-alive (held or not).
                    outs.push(lease());
                    outs
                }
                _ = forecast_tick.tick() => {
                    let mut c = controller.lock().unwrap_or_else(PoisonError::into_inner);
                    let now_ms = unix_ms();
                    let viewers_now = scaler.as_ref().map_or(0.0, |s| s.announced_at(&c, now_ms).1);
                    if let Err(e) = live_forecast.step(&registry, &c, viewers_now) {
                        tracing::error!("metrics: {e:#}");
                    }
                    if let (Some(s), Some(w), true) = (scaler.as_mut(), worker.as_ref(), connected) {
                        let (jobs, round) = s.step(
                            &mut c,
                            Instant::now(),
                            now_ms,
                            opts.forecast_horizon,
                            opts.forecast_step,
                            |h, viewers| live_forecast.predict(h, viewers),
                        );
                        for job in jobs {
                            w.submit(job);
                        }
                        if let Err(e) = scaler_metrics(&registry, s, &round) {
                            tracing::error!("metrics: {e:#}");
                        }
                    }
                    if let (Some(b), true) = (balancer.as_mut(), connected) {
                        b.step(&mut c, Instant::now(), now_ms);
                        if let Err(e) = proactive_metrics(&registry, b) {
                            tracing::error!("metrics: {e:#}");
                        }
                    }
                    c.take_out()
                }
                Some((job, result)) = jobs_done.recv() => {
                    let mut c = controller.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Err(e) = &result {
                        tracing::error!("provisioner: {job:?} failed: {e}");
                    }
                    if let Some(r) = rollout.as_mut() {
                        r.on_job_done(&mut c, &job, &result);
                    }
                    c.take_out()
                }
                ev = async {
                    tokio::select! {
                        biased;
                        ev = live_link.events.recv() => match ev {
                            Some(LinkEvent::Message(p)) => Ok(LinkEvent::Message(p)),
                            Some(LinkEvent::Disconnected { error, .. }) => Err(Some(Err(error))),
                            Some(LinkEvent::Connected { .. }) => Err(Some(Ok(()))),
                            None => Err(None),
                        },
                        ev = link.events.recv() => ev.ok_or(None),
                    }
                } => {
                    // Err(None): a link ended (shutting down); Err(Some(..)): the second
                    // connection came up or went down.
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(None) => break,
                        Err(Some(Ok(()))) => {
                            tracing::info!("connected to the broker for heartbeats and commands");
                            // Also over a session an older build made (which did not have
                            // these subscriptions): the lease is how this leader knows it is one.
                            for t in &lease_filters {
                                if let Err(e) = live_link.client.subscribe(t.clone(), QoS::AtLeastOnce).await {
                                    tracing::error!("subscribing to {t}: {e}");
                                }
                            }
                            live_up = true;
                            connected = main_up && live_up;
                            // Heartbeats missed while it was down are not deaths.
                            controller.lock().unwrap_or_else(PoisonError::into_inner).grace(Instant::now());
                            continue;
                        }
                        Err(Some(Err(error))) => {
                            tracing::warn!("broker connection for heartbeats and commands lost ({error})");
                            live_up = false;
                            connected = false;
                            continue;
                        }
                    };
                    match ev {
                        LinkEvent::Connected { session_present, .. } => {
                            tracing::info!("connected to the broker (session present: {session_present})");
                            main_up = true;
                            connected = main_up && live_up;
                            controller.lock().unwrap_or_else(PoisonError::into_inner).grace(Instant::now());
                            let mut outs = vec![lease()];
                            if !session_present {
                                // The broker lost its retained state (restart without
                                // persistence): publish every desired state again.
                                let mut c = controller.lock().unwrap_or_else(PoisonError::into_inner);
                                c.republish();
                                outs.extend(c.take_out());
                                outs.extend(certificates(&store, opts.keys.is_some()));
                            }
                            outs
                        }
                        LinkEvent::Disconnected { error, retry_in } => {
                            main_up = false;
                            connected = false;
                            tracing::warn!("broker connection lost ({error}); retrying in {retry_in:?}");
                            Vec::new()
                        }
                        LinkEvent::Message(p) => {
                            let now = Instant::now();
                            let mut c = controller.lock().unwrap_or_else(PoisonError::into_inner);
                            match open.open(&p.topic, &p.payload).and_then(|m| limiter.admit(m)) {
                                Ok(Inbound::Enrol(e)) => match (tokens.as_mut(), open.verifier()) {
                                    (Some(tokens), Some(v)) => match crate::enrol::decide(tokens, &store, &e, unix_ms()) {
                                        Ok(cert) => {
                                            tracing::info!("host {} enrolled (token {})", e.host, e.token_id);
                                            if let Ok(k) = gopswarm_proto::signed::parse_public(&cert.key) {
                                                v.set_host_key(&cert.host, k);
                                                if let Some(l) = &opts.logins {
                                                    l.set_host_key(&cert.host, k);
                                                }
                                            }
                                            c.emit(Topic::Cert(cert.host.clone()), encode(&cert), true);
                                        }
                                        Err(why) => {
                                            let reject = Reject::BadSignature(format!("enrolment of host {}: {why}", e.host));
                                            rejects.count(&reject);
                                            refusals.refused(&p.topic, &reject);
                                        }
                                    },
                                    _ => tracing::warn!("host {} asks to enrol, but this orchestrator runs --insecure", e.host),
                                },
                                Ok(Inbound::Lease(l)) => {
                                    if crate::standby::fenced_by(&l, &opts.name, epoch) {
                                        fenced = Some(l);
                                        break;
                                    }
                                    if l.holder == opts.name && l.epoch == epoch {
                                        lease_heard_ms = lease_heard_ms.max(l.renewed_ms);
                                        if held.is_some_and(|since| l.renewed_ms >= since) {
                                            tracing::info!("own lease heard back, no other orchestrator leads: acting again");
                                            held = None;
                                            // Silence while held says nothing about the hosts.
                                            c.grace(now);
                                            c.out_extend(std::mem::take(&mut held_back));
                                        }
                                    } else if l.holder != opts.name && l.epoch < epoch {
                                        // A leader we replaced, still renewing: put ours back.
                                        c.out_extend([lease()]);
                                    }
                                }
                                Ok(Inbound::OrchestratorStatus(s)) if s.online && s.holder != opts.name && s.epoch < epoch => {
                                    // A leader we replaced reconnected (its status is sent
                                    // at connect): say again who leads.
                                    c.out_extend([Out {
                                        topic: Topic::OrchestratorStatus.path(),
                                        payload: status_body(true),
                                        retain: true,
                                    }]);
                                }
                                Ok(Inbound::Birth(b)) => c.on_birth(b, now),
                                Ok(Inbound::Death(d)) => c.on_death(d, now),
                                Ok(Inbound::Heartbeat(h)) => c.on_heartbeat(h, now),
                                Ok(Inbound::Applied(a)) => c.on_applied(a),
                                Ok(Inbound::Ack(a)) => c.on_ack(a, now),
                                Ok(Inbound::StreamCommand(cmd)) => {
                                    if let Some((who, topic, n)) = open.verifier().and_then(|v| v.last_accepted().cloned())
                                        && let Err(e) = store.save_counter(&who.to_string(), &topic, n)
                                    {
                                        tracing::error!("state store: counter: {e:#}");
                                    }
                                    match cmd {
                                    StreamCommand::Add { stream } => {
                                        let id = stream.id.clone();
                                        match c.add_stream(stream, now) {
                                            Ok(()) => tracing::info!("stream {id} added"),
                                            Err(e) => tracing::warn!("stream {id} refused: {e}"),
                                        }
                                    }
                                    StreamCommand::Remove { id } => c.remove_stream(&id),
                                    StreamCommand::Handoff { stream, profile, from_host, to_host } => {
                                        if let Err(e) = c.start_handoff(&stream, &profile, &from_host, to_host.as_deref(), now) {
                                            tracing::warn!("handoff refused: {e}");
                                        }
                                    }
                                    StreamCommand::RollingUpdate { hosts } => {
                                        if worker.is_none() {
                                            tracing::warn!("rolling update refused: no update hook (--provision-hook) or host spawner");
                                        } else if rollout.is_some() {
                                            tracing::warn!("rolling update refused: one is in progress");
                                        } else {
                                            let r = crate::rollout::Rollout::new(&c, &hosts, opts.rollout_timeout);
                                            rollout_metrics(&registry, &r);
                                            rollout = Some(r);
                                        }
                                    }
                                    StreamCommand::Announce { event } => {
                                        if let Some(b) = balancer.as_mut() {
                                            b.announce(event.clone());
                                        }
                                        match scaler.as_mut() {
                                            Some(s) => s.announce(event),
                                            None if balancer.is_some() => tracing::info!("event {} announced: slots move ahead of it (scaling is off)", event.id),
                                            None => tracing::warn!("event {} announced, but scaling (--autoscale) and proactive balancing are off", event.id),
                                        }
                                    }
                                }},
                                Ok(_) => {}
                                Err(reject) => {
                                    rejects.count(&reject);
                                    refusals.refused(&p.topic, &reject);
                                }
                            }
                            // Saved before anything hosts act on goes out (below), else by the
                            // next tick: a burst of births is one commit, not one per message.
                            c.take_out()
                        }
                    }
                }
            };
            if held.is_none() && lease_lapsed(lease_heard_ms, hold_after) {
                held = Some(unix_ms());
            }
            let outs = if held.is_some() {
                // Only the lease goes out while held.
                let (renewals, rest): (Vec<Out>, Vec<Out>) = outs
                    .into_iter()
                    .partition(|o| o.topic == Topic::OrchestratorLease.path());
                held_back.extend(rest);
                renewals
            } else {
                outs
            };
            // What hosts act on (assignments with their revisions, layouts, commands) is saved
            // before it goes out: after a crash the restored state is never behind the hosts.
            if outs.iter().any(|o| must_save_first(&o.topic)) {
                persist(
                    &store,
                    &mut controller.lock().unwrap_or_else(PoisonError::into_inner),
                );
            }
            publish_all(&link, &seal, outs).await;
        }
        persist(
            &store,
            &mut controller.lock().unwrap_or_else(PoisonError::into_inner),
        );
        if let Some(l) = &fenced {
            // Another orchestrator leads: say nothing more (its status and lease stand).
            let _ = link.client.disconnect().await;
            let _ = live_link.client.disconnect().await;
            anyhow::bail!(
                "fenced: orchestrator {} leads at epoch {} (this one had epoch {epoch}); start this \
                 one again to stand by",
                l.holder,
                l.epoch
            );
        }
        // Leave cleanly: mark offline, and hand over to a standby at once (the will covers
        // crashes).
        for topic in [Topic::OrchestratorStatus, Topic::OrchestratorDeath] {
            let off = seal.seal(&topic.path(), status_body(false));
            let _ = link
                .client
                .publish(topic.path(), QoS::AtLeastOnce, true, off)
                .await;
        }
        let _ = link.client.disconnect().await;
        let _ = live_link.client.disconnect().await;
        if let Some(server) = metrics_server {
            server.shutdown().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }
}

/// Whether this leader's own lease, last heard back renewed at `heard_ms`, has gone unheard
/// for longer than `after` (it says so once per lapse).
fn lease_lapsed(heard_ms: u64, after: Duration) -> bool {
    let unheard = Duration::from_millis(unix_ms().saturating_sub(heard_ms));
    let lapsed = unheard > after;
    if lapsed {
        tracing::warn!(
            "own lease not heard back for {unheard:?}: holding every action until it is (a broker \
             ACL that refuses orchestrator/lease keeps it so: run `gopswarm acl` again)"
        );
    }
    lapsed
}

/// Every enrolled host's certificate, to publish again (the broker lost its retained
/// messages, or this is a start).
fn certificates(store: &Store, signed: bool) -> Vec<Out> {
    if !signed {
        return Vec::new();
    }
    let tokens = store.host_tokens().unwrap_or_default();
    match store.host_keys() {
        Ok(keys) => keys
            .into_iter()
            .map(|(host, key)| Out {
                topic: Topic::Cert(host.clone()).path(),
                payload: encode(&HostCert {
                    token: tokens.get(&host).cloned().unwrap_or_default(),
                    host,
                    key,
                    enrolled_ms: unix_ms(),
                }),
                retain: true,
            })
            .collect(),
        Err(e) => {
            tracing::error!("state store: host keys: {e:#}");
            Vec::new()
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn rollout_metrics(m: &gopswarm_metrics::Registry, r: &crate::rollout::Rollout) {
    let res = (|| -> Result<()> {
        m.gauge(
            "gopswarm_rollout_remaining_hosts",
            "Hosts the rolling update has still to update",
            &[],
        )?
        .set(&[], r.remaining() as f64)?;
        m.gauge(
            "gopswarm_rollout_updated_hosts",
            "Hosts the last rolling update updated",
            &[],
        )?
        .set(&[], r.updated.len() as f64)?;
        m.gauge(
            "gopswarm_rollout_failed_hosts",
            "Hosts the last rolling update skipped",
            &[],
        )?
        .set(&[], r.failed.len() as f64)?;
        Ok(())
    })();
    if let Err(e) = res {
        tracing::error!("metrics: {e:#}");
    }
}

fn proactive_metrics(
    m: &gopswarm_metrics::Registry,
    b: &crate::proactive::LiveBalancer,
) -> Result<()> {
    let moves = m.counter(
        "gopswarm_proactive_moves_total",
        "Slots the proactive balancer handed off, by reason",
        &["reason"],
    )?;
    for (reason, n) in &b.moves_total {
        moves.set(&[reason], *n as f64)?;
    }
    Ok(())
}

fn scaler_metrics(
    m: &gopswarm_metrics::Registry,
    s: &crate::rollout::Scaler,
    round: &crate::rollout::ScaleRound,
) -> Result<()> {
    for (name, help, v) in [
        (
            "gopswarm_scaler_predicted_peak_slots",
            "Highest demand predicted over the horizon, announced events included",
            round.predicted_peak,
        ),
        (
            "gopswarm_scaler_booting_hosts",
            "Hosts provisioned that have not joined yet",
            round.booting as f64,
        ),
    ] {
        m.gauge(name, help, &[])?.set(&[], v)?;
    }
    for (name, help, v) in [
        (
            "gopswarm_scaler_provisioned_total",
            "Hosts the scaler provisioned",
            s.provisioned_total,
        ),
        (
            "gopswarm_scaler_deprovisioned_total",
            "Hosts the scaler drained and deprovisioned",
            s.deprovisioned_total,
        ),
    ] {
        m.counter(name, help, &[])?.set(&[], v as f64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gopswarm_metrics::Registry;

    fn birth(host: &str, seq: u64) -> Birth {
        Birth {
            host: host.into(),
            seq,
            versions: this_build_versions("1.22.0"),
            capabilities: Capabilities {
                cores: 4,
                max_tasks: 2,
                ..Default::default()
            },
        }
    }

    #[test]
    fn scores_demand_and_forecast_reach_the_metrics() {
        let t0 = Instant::now();
        let mut c = Controller::new(Config::default(), this_build_versions("1.22.0"), 1);
        for (i, h) in ["a", "b", "c"].iter().enumerate() {
            c.on_birth(birth(h, 10 + i as u64), t0);
        }
        c.add_stream(
            StreamDef {
                id: "cam1".into(),
                source: "gdp+tcp://127.0.0.1:7100".into(),
                profiles: vec![ProfileDef {
                    id: "p".into(),
                    spec: "h264".into(),
                }],
                gop_ns: 1_000_000_000,
                redundancy: Some(0),
                slots: Some(2),
                complexity: None,
                chunk_sink: None,
            },
            t0,
        )
        .unwrap();
        for o in c.take_out() {
            if let Ok(Inbound::Command(h, cmd)) = decode_publish(&o.topic, &o.payload) {
                c.on_ack(
                    Ack {
                        host: h,
                        id: cmd.id,
                        ok: true,
                        detail: String::new(),
                        current_gop: Some(3),
                    },
                    t0,
                );
            }
        }
        c.rescore(t0);
        let m = Registry::new();
        export_metrics(&m, &c, &RejectCounters::default()).unwrap();
        let mut f = LiveForecast::default();
        f.step(&m, &c, 0.0).unwrap();
        assert_eq!(m.get("gopswarm_demand_slots", &[]), Some(2.0));
        // Three silver hosts (new, neutral scores): half of 2 tasks each.
        let tiers: Vec<f64> = ["a", "b", "c"]
            .iter()
            .map(|h| m.get("gopswarm_host_tier", &[("host", h)]).unwrap())
            .collect();
        let slots: f64 = ["a", "b", "c"]
            .iter()
            .map(|h| {
                m.get("gopswarm_host_slots_allowed", &[("host", h)])
                    .unwrap()
            })
            .sum();
        assert_eq!(
            m.get("gopswarm_capacity_slots", &[]),
            Some(slots),
            "tiers {tiers:?}"
        );
        assert_eq!(m.get("gopswarm_forecast_demand_slots", &[]), Some(2.0));
        let text = m.render();
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("prometheus text parses");
        let stability = parsed
            .samples
            .iter()
            .filter(|s| s.metric == "gopswarm_host_stability_score")
            .count();
        assert_eq!(stability, 3, "{text}");
        assert_eq!(m.get("gopswarm_layouts_total", &[]), Some(1.0));
    }
}
