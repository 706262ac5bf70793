// SPDX-License-Identifier: MPL-2.0
//! `gopswarm orchestrator`: the orchestrator service, configured from its flags.

use crate::config;
use anyhow::{Context, Result};
use gopswarm_agents::{daemon, options::seconds};
use gopswarm_orchestrator::controller::Sizing;
use gopswarm_orchestrator::provision::{CommandHook, LocalSpawner, Provisioner};
use gopswarm_orchestrator::score::{ScoreConfig, TierConfig};
use gopswarm_orchestrator::service::{Service, ServiceOptions};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct OrchestratorOptions {
    /// External broker (mqtt:// or mqtts://, with user:pass@); default: embedded rumqttd
    #[arg(long)]
    broker: Option<String>,
    /// Where the embedded broker listens. With swarm keys it speaks TLS only and admits only
    /// the swarm's parts, each logging in with its key (default 127.0.0.1:8883); with
    /// --insecure it is plain and anonymous (default 127.0.0.1:1883)
    #[arg(long)]
    listen: Option<String>,
    /// State database (survives restarts)
    #[arg(long, default_value = "gopswarm-state.redb")]
    state: PathBuf,
    /// This orchestrator's name in the leader lease; every orchestrator of a swarm needs its
    /// own (letters, digits, '-', '_')
    #[arg(long, default_value = DEFAULT_NAME)]
    name: String,
    /// Run as a standby beside a leading orchestrator (needs --broker, the broker both use):
    /// follow the swarm's state and take over, keeping every assignment, when the leader's
    /// will arrives or its lease goes 3 keep-alives without renewal. A leader that comes back
    /// finds itself fenced and exits; start it again to stand by
    #[arg(long)]
    standby: bool,
    #[command(flatten)]
    keys: gopswarm_agents::options::KeyOptions,
    /// Heartbeat interval hosts use; a host silent 1.5 x this long is dead (seconds)
    #[arg(long, default_value_t = 2.0)]
    keepalive: f64,
    /// GOPs between the furthest host and a switch GOP
    #[arg(long, default_value_t = 2)]
    switch_margin: u64,
    /// Messages a second each enrolled host may send on average (births, heartbeats, acks,
    /// applied); the rest are counted as refused (gopswarm_rejected_payloads_total) and dropped
    #[arg(long, default_value_t = gopswarm_orchestrator::rate::DEFAULT_HOST_RATE.per_second)]
    host_rate: std::num::NonZeroU32,
    /// Messages a host may send at once above its rate
    #[arg(long, default_value_t = gopswarm_orchestrator::rate::DEFAULT_HOST_RATE.burst)]
    host_burst: std::num::NonZeroU32,
    /// A layout with fewer slots than its stream plans (holders died or were moved off) grows
    /// back onto a free host after it has been short this long (seconds; 0: never, it stays
    /// on the survivors)
    #[arg(long, default_value_t = 10.0)]
    regrow_after: f64,
    /// Swarm sizing from content complexity, JSON (a [sizing] table in --config), any of:
    /// si_low, ti_low, si_high, ti_high (P.910 SI/TI at 320x180), slots ([low, medium, high]),
    /// redundancy. Default:
    /// {"si_low":50,"ti_low":10,"si_high":150,"ti_high":40,"slots":[2,3,4],"redundancy":1}
    #[arg(long, value_name = config::JSON, value_parser = config::strict_json::<Sizing>)]
    sizing: Option<Sizing>,
    /// Tier thresholds on the combined score, JSON (a [tiers] table in --config), any of:
    /// gold, silver, hysteresis, stability_weight. Default:
    /// {"gold":90,"silver":70,"hysteresis":5,"stability_weight":0.5}
    #[arg(long, value_name = config::JSON, value_parser = tiers)]
    tiers: Option<TierConfig>,
    /// Score reference points and weights, JSON (a [scores] table in --config; see
    /// `gopswarm explain --help`)
    #[arg(long, value_name = config::JSON, value_parser = config::strict_json::<ScoreConfig>)]
    scores: Option<ScoreConfig>,
    /// The swarm's home region (hosts in another region score lower)
    #[arg(long)]
    region: Option<String>,
    /// Do not hand the slots of hosts that fall to bronze to better spares
    #[arg(long)]
    no_peer_swap: bool,
    /// Give spare bronze hosts backup roles: each slot of every layout gets a copy-only
    /// task on one, so a primary's death loses none of its GOPs before the re-deal
    #[arg(long)]
    backup_copies: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9100)
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Learned disconnect model from `gopswarm learn`: each host's score carries its
    /// predicted disconnect risk
    #[arg(long)]
    disconnect_model: Option<PathBuf>,
    /// Operator script that starts, stops and updates hosts: called as
    /// `CMD provision|deprovision|update HOST-ID` with GOPSWARM_BROKER set. Default: this
    /// machine spawns `gopswarm host` processes
    #[arg(long)]
    provision_hook: Option<String>,
    /// Extra argument for the hosts this machine spawns (repeatable)
    #[arg(long = "spawn-host-arg", allow_hyphen_values = true)]
    spawn_host_args: Vec<String>,
    /// Provision hosts ahead of the predicted demand and announced events; drain and
    /// deprovision the ones it started when demand falls below 75% of capacity
    #[arg(long)]
    autoscale: bool,
    /// Hosts in the swarm at most when scaling
    #[arg(long, default_value_t = 64)]
    max_hosts: usize,
    /// Step of the live demand forecast, seconds
    #[arg(long, default_value_t = 60.0)]
    forecast_step: f64,
    /// Steps ahead the forecast (and the scaler) looks
    #[arg(long, default_value_t = 10)]
    forecast_horizon: usize,
    /// Do not move slots off hosts before their forecast load overloads them. By default,
    /// once per forecast step, a host whose load planned for the horizon (each stream's
    /// forecast, announced events of its streams) crosses 90% of its capacity hands slots
    /// off at a GOP boundary to hosts with room
    #[arg(long)]
    no_proactive: bool,
    /// Seconds after a scale-up before the scaler may scale down
    #[arg(long, default_value_t = 300.0)]
    scale_cooldown: f64,
    /// Longest a host may take to empty, and to come back, in a rolling update (seconds)
    #[arg(long, default_value_t = 120.0)]
    rollout_timeout: f64,
}

/// The name of an orchestrator started without `--name`.
const DEFAULT_NAME: &str = "main";

impl OrchestratorOptions {
    /// The service's options from the flags: every flag maps into them here and nowhere else.
    /// `broker` is the broker the service and the hosts it starts connect to.
    /// Values clap cannot check alone, refused before anything starts.
    fn check(&self) -> Result<()> {
        seconds(self.scale_cooldown).context("--scale-cooldown")?;
        // The lease lives 3 keep-alives, within what the protocol allows (10 minutes).
        anyhow::ensure!(
            self.keepalive > 0.0 && self.keepalive <= 120.0,
            "--keepalive {}: between 0 and 120 seconds",
            self.keepalive
        );
        anyhow::ensure!(
            (0.0..=86400.0).contains(&self.regrow_after),
            "--regrow-after {}: between 0 (never) and 86400 seconds",
            self.regrow_after
        );
        anyhow::ensure!(
            gopswarm_proto::valid_id(&self.name),
            "--name {:?}: letters, digits, '-' and '_' only",
            self.name
        );
        anyhow::ensure!(
            !self.standby || self.broker.is_some(),
            "--standby needs --broker: the broker the leader uses (an embedded broker stops \
             with its orchestrator, so a standby could not take over from it)"
        );
        seconds(self.forecast_step).context("--forecast-step")?;
        anyhow::ensure!(
            self.forecast_horizon >= 1,
            "--forecast-horizon 0: the forecast must look at least 1 step ahead"
        );
        Ok(())
    }

    fn service_options(self, broker: String) -> Result<ServiceOptions> {
        let broker_url =
            gopswarm_proto::link::BrokerUrl::parse(&broker).map_err(anyhow::Error::msg)?;
        let keepalive = seconds(self.keepalive)?;
        let cfg = gopswarm_orchestrator::controller::Config {
            keepalive,
            dead_after: keepalive * 3 / 2,
            switch_margin_gops: self.switch_margin,
            sizing: self.sizing.unwrap_or_default(),
            tiers: self.tiers.unwrap_or_default(),
            scores: self.scores.unwrap_or_default(),
            home_region: self.region,
            peer_swap: !self.no_peer_swap,
            backup_copies: self.backup_copies,
            regrow_after: (self.regrow_after != 0.0)
                .then(|| seconds(self.regrow_after))
                .transpose()
                .context("--regrow-after")?,
            ..Default::default()
        };
        let rollout_timeout = seconds(self.rollout_timeout)?;
        let keys = self.keys.dir()?;
        let provisioner: Box<dyn Provisioner> = match self.provision_hook {
            Some(command) => Box::new(CommandHook {
                command,
                broker: broker.clone(),
                timeout: rollout_timeout,
                keys: keys.clone(),
            }),
            None => {
                let mut spawner = LocalSpawner::new(
                    std::env::current_exe().context("this program's path")?,
                    broker.clone(),
                    self.spawn_host_args,
                );
                // Host logs and pid files next to the state.
                let dir = self.state.parent().unwrap_or(Path::new(".")).join("hosts");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                spawner.log_dir = Some(dir);
                spawner.keys = keys.clone();
                Box::new(spawner)
            }
        };
        let cooldown = seconds(self.scale_cooldown).context("--scale-cooldown")?;
        let scaler = self
            .autoscale
            .then(|| gopswarm_orchestrator::rollout::ScalerConfig {
                max_hosts: self.max_hosts,
                cooldown,
                ..Default::default()
            });
        Ok(ServiceOptions {
            broker: broker_url,
            state: self.state,
            cfg,
            client_id: if self.name == DEFAULT_NAME {
                gopswarm_proto::login::ORCHESTRATOR_CLIENT_PREFIX.to_string()
            } else {
                format!(
                    "{}-{}",
                    gopswarm_proto::login::ORCHESTRATOR_CLIENT_PREFIX,
                    self.name
                )
            },
            gstreamer_version: gst::version_string().to_string(),
            metrics_listen: self.metrics_listen,
            disconnect_model: self
                .disconnect_model
                .as_deref()
                .map(super::learn::load_model)
                .transpose()?,
            provisioner: Some(provisioner),
            scaler,
            forecast_step: seconds(self.forecast_step)?,
            forecast_horizon: self.forecast_horizon,
            rollout_timeout,
            proactive: (!self.no_proactive).then(Default::default),
            keys,
            logins: None,
            name: self.name,
            standby: self.standby,
            host_rate: gopswarm_orchestrator::rate::HostRate {
                per_second: self.host_rate,
                burst: self.host_burst,
            },
        })
    }
}

/// The embedded broker: TLS with the swarm's logins, or with `--insecure` plain and anonymous.
/// Returns the URL parts on this machine reach it at, and the logins the service keeps up to
/// date as hosts enrol.
pub fn start_embedded_broker(
    listen: Option<&str>,
    keys: &gopswarm_agents::options::KeyOptions,
) -> Result<(
    String,
    Option<std::sync::Arc<gopswarm_proto::login::Logins>>,
)> {
    use gopswarm_orchestrator::broker::{BrokerSecurity, local_address, start_embedded};
    let kd = keys.dir()?;
    let default = if kd.is_some() {
        "127.0.0.1:8883"
    } else {
        "127.0.0.1:1883"
    };
    let addr: std::net::SocketAddr = listen.unwrap_or(default).parse().context("--listen")?;
    let local = local_address(addr);
    match kd {
        Some(kd) => {
            let (cert, key) = kd.broker_cert().map_err(anyhow::Error::msg)?;
            let ca = kd
                .broker_ca()
                .with_context(|| format!("{}: no broker/ca.pem", kd.dir.display()))?;
            let logins = std::sync::Arc::new(
                gopswarm_proto::login::Logins::new(&kd).map_err(anyhow::Error::msg)?,
            );
            let probe_login = kd
                .signer(gopswarm_proto::signed::Principal::Orchestrator)
                .map_err(anyhow::Error::msg)?
                .broker_login();
            start_embedded(
                addr,
                Some(BrokerSecurity {
                    cert,
                    key,
                    ca,
                    logins: logins.clone(),
                    probe_login,
                }),
            )?;
            tracing::info!("embedded MQTT broker on mqtts://{addr} (TLS, swarm logins only)");
            Ok((format!("mqtts://{local}"), Some(logins)))
        }
        None => {
            start_embedded(addr, None)?;
            tracing::info!("embedded MQTT broker on mqtt://{addr} (plain, anonymous: --insecure)");
            Ok((format!("mqtt://{local}"), None))
        }
    }
}

/// `--tiers`: its JSON, thresholds in order.
fn tiers(json: &str) -> Result<TierConfig, String> {
    let t: TierConfig = config::strict_json(json)?;
    t.validate()?;
    Ok(t)
}

/// Runs the orchestrator (and the embedded broker, unless `--broker` names one) until a signal.
pub fn run(mut o: OrchestratorOptions) -> Result<()> {
    daemon::init_logging();
    o.check()?;
    gopswarm_agents::pipeline::init();
    let mut logins = None;
    let broker = match o.broker.take() {
        Some(b) => b,
        None => {
            let (url, l) = start_embedded_broker(o.listen.as_deref(), &o.keys)?;
            logins = l;
            url
        }
    };
    let mut options = o.service_options(broker)?;
    options.logins = logins;
    daemon::runtime()?.block_on(Service::run(options, daemon::interrupted(), None))
}
