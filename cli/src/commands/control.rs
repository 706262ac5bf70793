// SPDX-License-Identifier: MPL-2.0
//! `gopswarm stream` and `gopswarm rolling-update`: commands to the orchestrator, published
//! on its control topic over MQTT.

use anyhow::{Context, Result};
use gopswarm_agents::{daemon, options::seconds};
use gopswarm_proto::{EventAnnouncement, Message, ProfileDef, StreamCommand, StreamDef};
use std::time::Duration;

/// Who signs the command: an operator key of the swarm's key directory.
#[derive(clap::Args)]
struct Signing {
    #[command(flatten)]
    keys: gopswarm_agents::options::KeyOptions,
    /// Operator whose key (operators/NAME.key under --keys) signs the command
    #[arg(long, env = "GOPSWARM_OPERATOR", default_value = gopswarm_proto::keys::DEFAULT_OPERATOR)]
    operator: String,
}

impl Signing {
    fn seal(&self) -> Result<gopswarm_proto::signed::Seal> {
        use gopswarm_proto::signed::{Principal, Seal};
        Ok(match self.keys.dir()? {
            Some(kd) => Seal::Signed(Box::new(
                kd.signer(Principal::Operator(self.operator.clone()))
                    .map_err(anyhow::Error::msg)?,
            )),
            None => Seal::Plain,
        })
    }
}

/// How long a command waits for the broker to take it.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct StreamOptions {
    /// MQTT broker; with a password, give it in the environment (`gopswarm acl` writes one).
    /// Default: the orchestrator's embedded broker on this machine (mqtts://127.0.0.1:8883
    /// with swarm keys, logging in with the operator's key; mqtt://127.0.0.1:1883 with
    /// --insecure)
    #[arg(long, env = "GOPSWARM_OPERATOR_BROKER", hide_env_values = true)]
    broker: Option<String>,
    #[command(flatten)]
    signing: Signing,
    #[command(subcommand)]
    op: StreamOp,
}

#[derive(clap::Subcommand)]
enum StreamOp {
    /// Add a stream
    Add {
        #[arg(long)]
        id: String,
        /// Source URL (gdp+tcp://host:port from `gopswarm source`)
        #[arg(long)]
        source: String,
        /// Profile as ID=SPEC (SPEC: profileenc profile), repeatable
        #[arg(long = "profile", required = true)]
        profiles: Vec<String>,
        /// GOP duration, seconds
        #[arg(long, default_value_t = 2.0)]
        gop: f64,
        /// Redundant copies per GOP (default: the orchestrator decides)
        #[arg(long)]
        redundancy: Option<u32>,
        /// Hosts per profile (default: the orchestrator decides from the measured complexity)
        #[arg(long)]
        slots: Option<u32>,
        /// Do not sample the source for its complexity (SI/TI)
        #[arg(long)]
        no_measure: bool,
        /// Chunk transport instead of MQTT: tcp://host:port (hosts push to a merger listening
        /// there) or srt (hosts serve SRT, the merger pulls)
        #[arg(long)]
        chunks: Option<String>,
    },
    /// Remove a stream
    Remove {
        #[arg(long)]
        id: String,
    },
    /// Announce an event: proactive balancing moves slots off hosts it would overload before
    /// it starts, and the scaler (orchestrator --autoscale) provisions hosts for it ahead
    Announce {
        /// Event id
        #[arg(long)]
        id: String,
        /// The stream that will carry it (its slots count as demand once it runs)
        #[arg(long)]
        stream: Option<String>,
        /// Seconds from now until it starts
        #[arg(long = "in")]
        starts_in: f64,
        /// How long it lasts, seconds
        #[arg(long)]
        duration: f64,
        /// Encoding slots it needs (profiles x slots)
        #[arg(long)]
        slots: u32,
        /// Expected audience
        #[arg(long, default_value_t = 0.0)]
        viewers: f64,
    },
    /// Move a host's slot to another host at a GOP boundary
    Handoff {
        #[arg(long)]
        stream: String,
        #[arg(long)]
        profile: String,
        #[arg(long)]
        from: String,
        /// Target host (default: the least loaded free host)
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct RollingUpdateOptions {
    /// MQTT broker; with a password, give it in the environment (`gopswarm acl` writes one).
    /// Default: the orchestrator's embedded broker on this machine (mqtts://127.0.0.1:8883
    /// with swarm keys, logging in with the operator's key; mqtt://127.0.0.1:1883 with
    /// --insecure)
    #[arg(long, env = "GOPSWARM_OPERATOR_BROKER", hide_env_values = true)]
    broker: Option<String>,
    #[command(flatten)]
    signing: Signing,
    /// Host to update (repeatable; default: every live host)
    #[arg(long = "host")]
    hosts: Vec<String>,
}

pub fn stream(o: StreamOptions) -> Result<()> {
    let cmd = match o.op {
        StreamOp::Add {
            id,
            source,
            profiles,
            gop,
            redundancy,
            slots,
            no_measure,
            chunks,
        } => {
            let profiles = profiles
                .iter()
                .map(|p| {
                    let (id, spec) = p
                        .split_once('=')
                        .with_context(|| format!("--profile {p:?}: expected ID=SPEC"))?;
                    gopswarm_agents::pipeline::check_profile(spec)
                        .map_err(|e| anyhow::anyhow!("--profile {id}: {e}"))?;
                    Ok(ProfileDef {
                        id: id.into(),
                        spec: spec.into(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let mut stream = StreamDef {
                id,
                source,
                profiles,
                gop_ns: seconds(gop)?.as_nanos() as u64,
                redundancy,
                slots,
                complexity: None,
                chunk_sink: chunks,
            };
            // Refused before anything connects to the source.
            stream
                .validate()
                .map_err(|e| anyhow::anyhow!("stream refused: {e}"))?;
            if !no_measure && (slots.is_none() || redundancy.is_none()) {
                let c = crate::complexity::measure(&stream.source, 50, 5, Duration::from_secs(30))?;
                eprintln!(
                    "{}: SI {:.1}, TI {:.1} over {} sampled frames",
                    stream.id, c.si, c.ti, c.frames
                );
                stream.complexity = Some(c);
            }
            stream
                .validate()
                .map_err(|e| anyhow::anyhow!("stream refused: {e}"))?;
            StreamCommand::Add { stream }
        }
        StreamOp::Remove { id } => StreamCommand::Remove { id },
        StreamOp::Announce {
            id,
            stream,
            starts_in,
            duration,
            slots,
            viewers,
        } => {
            anyhow::ensure!(
                starts_in.is_finite() && starts_in >= 0.0,
                "--in {starts_in}: seconds from now until the event starts, 0 or more"
            );
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as u64;
            StreamCommand::Announce {
                event: EventAnnouncement {
                    id,
                    stream,
                    start_unix_ms: now_ms.saturating_add((starts_in * 1000.0) as u64),
                    duration_s: duration,
                    slots,
                    expected_viewers: viewers,
                },
            }
        }
        StreamOp::Handoff {
            stream,
            profile,
            from,
            to,
        } => StreamCommand::Handoff {
            stream,
            profile,
            from_host: from,
            to_host: to,
        },
    };
    send(o.broker.as_deref(), &o.signing, &cmd)
}

pub fn rolling_update(o: RollingUpdateOptions) -> Result<()> {
    send(
        o.broker.as_deref(),
        &o.signing,
        &StreamCommand::RollingUpdate { hosts: o.hosts },
    )
}

/// Validate a command and publish it; returns once the broker has it.
fn send(broker: Option<&str>, signing: &Signing, cmd: &StreamCommand) -> Result<()> {
    cmd.validate()
        .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
    let seal = signing.seal()?;
    let topic = gopswarm_proto::Topic::StreamControl.path();
    let given = broker
        .map(gopswarm_proto::link::BrokerUrl::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let url = signing.keys.broker(given.as_ref(), seal.broker_login())?;
    // Named without credentials.
    let broker = format!(
        "{}://{}:{}",
        if url.tls { "mqtts" } else { "mqtt" },
        url.host,
        url.port
    );
    daemon::runtime()?
        .block_on(gopswarm_proto::link::publish_once(
            &url,
            &format!("gopswarm-ctl-{}", std::process::id()),
            &topic,
            seal.seal(&topic, gopswarm_proto::encode(cmd)),
            PUBLISH_TIMEOUT,
        ))
        .map_err(|e| anyhow::anyhow!("broker {broker}: {e}"))
}
