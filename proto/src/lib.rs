// SPDX-License-Identifier: MPL-2.0
//! The gopswarm control plane protocol: versioned MQTT topics and typed messages shared by the
//! orchestrator, the encoder hosts and the merger, plus [`link`], a reconnecting MQTT link.
//!
//! # Topics (protocol version 1)
//!
//! | topic | from → to | retained | payload |
//! |---|---|---|---|
//! | `gopswarm/v1/host/{host}/birth` | host → all | yes | [`Birth`] |
//! | `gopswarm/v1/host/{host}/death` | broker (last will) → all | yes | [`Death`] |
//! | `gopswarm/v1/host/{host}/heartbeat` | host → orchestrator | no | [`Heartbeat`] |
//! | `gopswarm/v1/host/{host}/assignment` | orchestrator → host | yes | [`Assignment`] (desired state) |
//! | `gopswarm/v1/host/{host}/applied` | host → orchestrator | yes | [`Applied`] (reported state) |
//! | `gopswarm/v1/host/{host}/cmd` | orchestrator → host | no | [`Command`] |
//! | `gopswarm/v1/host/{host}/ack` | host → orchestrator | no | [`Ack`] |
//! | `gopswarm/v1/host/{host}/score` | orchestrator → host, operators | yes | [`HostScore`] |
//! | `gopswarm/v1/host/{host}/enrol` | new host → orchestrator | no | [`Enrol`] (token proof, unsigned) |
//! | `gopswarm/v1/host/{host}/cert` | orchestrator → all | yes | [`HostCert`] (the host's key) |
//! | `gopswarm/v1/stream/{stream}/def` | orchestrator → all | yes | [`StreamDef`] |
//! | `gopswarm/v1/stream/{stream}/layout/{profile}` | orchestrator → merger | yes | [`Layout`] |
//! | `gopswarm/v1/stream/{stream}/chunks/{profile}` | host → merger | no | a `gopswarm-chunk` chunk |
//! | `gopswarm/v1/stream/{stream}/end/{profile}` | host → merger | no | [`StreamEnd`] |
//! | `gopswarm/v1/stream/{stream}/resend/{profile}` | merger → hosts | no | [`Resend`] |
//! | `gopswarm/v1/ctl/streams` | CLI → orchestrator | no | [`StreamCommand`] |
//! | `gopswarm/v1/orchestrator/status` | orchestrator | yes | [`OrchestratorStatus`] |
//! | `gopswarm/v1/orchestrator/death` | broker (last will) or orchestrator leaving | yes | [`OrchestratorStatus`] (offline) |
//! | `gopswarm/v1/orchestrator/lease` | leading orchestrator → standbys | yes | [`Lease`] |
//!
//! Every JSON payload carries `"v": 1`. [`decode_publish`] is the one entry point for everything
//! a part receives: it checks the topic, the size, the version and the content, and answers a
//! [`Reject`] (counted by [`RejectCounters`]) instead of ever panicking. In a swarm with keys
//! every payload but chunks and enrolments is wrapped in a signed envelope ([`signed`]), and
//! [`signed::Open`] checks the signer, the signature and the counter before decoding.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod endpoint;
pub mod keys;
pub mod link;
pub mod login;
pub mod signed;
pub mod tls_role;

use endpoint::{Endpoint, Scheme};

/// The protocol version this build speaks; the `v` field of every JSON payload.
pub const PROTOCOL_VERSION: u32 = 1;
/// Topic root of this protocol version.
pub const ROOT: &str = "gopswarm/v1";
/// Largest JSON control payload accepted.
pub const MAX_CONTROL_PAYLOAD: usize = 64 * 1024;
/// Largest chunk payload accepted over MQTT (a GOP of a high-bitrate profile fits).
pub const MAX_CHUNK_PAYLOAD: usize = 32 * 1024 * 1024;
/// MQTT packet size limit the parts configure (chunk plus topic and headers).
pub const MAX_PACKET: usize = MAX_CHUNK_PAYLOAD + 64 * 1024;
/// Longest GOP a stream may have (ns): a minute, far above any live use.
pub const MAX_GOP_NS: u64 = 60_000_000_000;
/// Highest GOP index a message may name: GStreamer properties take it as a signed 64-bit.
pub const MAX_GOP_INDEX: u64 = i64::MAX as u64;
/// Longest host, stream or profile id.
pub const MAX_ID_LEN: usize = 64;

/// Whether `id` can name a host, stream or profile: 1 to 64 of `[A-Za-z0-9._-]`, so it is one
/// MQTT topic level and never a wildcard.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A topic of the protocol, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    Birth(String),
    Death(String),
    Heartbeat(String),
    Assignment(String),
    Applied(String),
    Command(String),
    Ack(String),
    Score(String),
    Enrol(String),
    Cert(String),
    StreamDef(String),
    Layout(String, String),
    Chunks(String, String),
    StreamEnd(String, String),
    Resend(String, String),
    StreamControl,
    OrchestratorStatus,
    OrchestratorDeath,
    OrchestratorLease,
}

impl Topic {
    pub fn path(&self) -> String {
        match self {
            Topic::Birth(h) => format!("{ROOT}/host/{h}/birth"),
            Topic::Death(h) => format!("{ROOT}/host/{h}/death"),
            Topic::Heartbeat(h) => format!("{ROOT}/host/{h}/heartbeat"),
            Topic::Assignment(h) => format!("{ROOT}/host/{h}/assignment"),
            Topic::Applied(h) => format!("{ROOT}/host/{h}/applied"),
            Topic::Command(h) => format!("{ROOT}/host/{h}/cmd"),
            Topic::Ack(h) => format!("{ROOT}/host/{h}/ack"),
            Topic::Score(h) => format!("{ROOT}/host/{h}/score"),
            Topic::Enrol(h) => format!("{ROOT}/host/{h}/enrol"),
            Topic::Cert(h) => format!("{ROOT}/host/{h}/cert"),
            Topic::StreamDef(s) => format!("{ROOT}/stream/{s}/def"),
            Topic::Layout(s, p) => format!("{ROOT}/stream/{s}/layout/{p}"),
            Topic::Chunks(s, p) => format!("{ROOT}/stream/{s}/chunks/{p}"),
            Topic::StreamEnd(s, p) => format!("{ROOT}/stream/{s}/end/{p}"),
            Topic::Resend(s, p) => format!("{ROOT}/stream/{s}/resend/{p}"),
            Topic::StreamControl => format!("{ROOT}/ctl/streams"),
            Topic::OrchestratorStatus => format!("{ROOT}/orchestrator/status"),
            Topic::OrchestratorDeath => format!("{ROOT}/orchestrator/death"),
            Topic::OrchestratorLease => format!("{ROOT}/orchestrator/lease"),
        }
    }

    /// Parse a topic name; `None` for anything outside this protocol version (including other
    /// versions' roots and ids that are not [`valid_id`]).
    pub fn parse(topic: &str) -> Option<Topic> {
        let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let id = |s: &str| valid_id(s).then(|| s.to_string());
        Some(match parts.as_slice() {
            ["host", h, "birth"] => Topic::Birth(id(h)?),
            ["host", h, "death"] => Topic::Death(id(h)?),
            ["host", h, "heartbeat"] => Topic::Heartbeat(id(h)?),
            ["host", h, "assignment"] => Topic::Assignment(id(h)?),
            ["host", h, "applied"] => Topic::Applied(id(h)?),
            ["host", h, "cmd"] => Topic::Command(id(h)?),
            ["host", h, "ack"] => Topic::Ack(id(h)?),
            ["host", h, "score"] => Topic::Score(id(h)?),
            ["host", h, "enrol"] => Topic::Enrol(id(h)?),
            ["host", h, "cert"] => Topic::Cert(id(h)?),
            ["stream", s, "def"] => Topic::StreamDef(id(s)?),
            ["stream", s, "layout", p] => Topic::Layout(id(s)?, id(p)?),
            ["stream", s, "chunks", p] => Topic::Chunks(id(s)?, id(p)?),
            ["stream", s, "end", p] => Topic::StreamEnd(id(s)?, id(p)?),
            ["stream", s, "resend", p] => Topic::Resend(id(s)?, id(p)?),
            ["ctl", "streams"] => Topic::StreamControl,
            ["orchestrator", "status"] => Topic::OrchestratorStatus,
            ["orchestrator", "death"] => Topic::OrchestratorDeath,
            ["orchestrator", "lease"] => Topic::OrchestratorLease,
            _ => return None,
        })
    }
}

/// Subscription filters.
pub mod filters {
    use super::ROOT;
    pub fn all_hosts(leaf: &str) -> String {
        format!("{ROOT}/host/+/{leaf}")
    }
    pub fn host(host: &str, leaf: &str) -> String {
        format!("{ROOT}/host/{host}/{leaf}")
    }
    pub fn all_streams(leaf: &str) -> String {
        format!("{ROOT}/stream/+/{leaf}")
    }
    pub fn stream(stream: &str, leaf: &str, profile: &str) -> String {
        format!("{ROOT}/stream/{stream}/{leaf}/{profile}")
    }
}

/// Software versions a host or orchestrator runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    /// gopswarm agent version (semver).
    pub agent: String,
    /// Highest protocol version spoken.
    pub protocol: u32,
    /// Chunk wire format version.
    pub chunk_format: u8,
    pub gstreamer: String,
    /// Encoder libraries by codec (`h264` → `x264enc 1.22.0`): hosts that contribute GOPs
    /// to one profile must agree on the entry of its codec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encoders: BTreeMap<String, String>,
}

/// What a host can do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    pub cores: u32,
    pub mem_bytes: u64,
    /// Profile codecs it can encode (`h264`, `h265`, `vp9`, `av1`).
    pub codecs: Vec<String>,
    /// Tasks it takes at once.
    pub max_tasks: u32,
    /// Where the host serves its partial streams over SRT (listener), `srt://ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srt_endpoint: Option<String>,
    /// `server`, `desktop`, `laptop`, `embedded` (stability score input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_class: Option<String>,
    /// `ethernet`, `wifi`, `cellular`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Uplink bandwidth the host has, Mbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mbps: Option<f64>,
    /// Encode benchmark run at join: frames per second per profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bench: Vec<BenchResult>,
}

/// One profile of the join benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// `profileenc` profile spec that was encoded.
    pub profile: String,
    pub fps: f64,
    /// Frames per second that profile needs for real time.
    pub realtime_fps: f64,
}

/// Retained on `host/{host}/birth` at every (re)connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Birth {
    pub host: String,
    /// Per-connection sequence number: strictly increasing across the host's connections.
    pub seq: u64,
    pub versions: Versions,
    pub capabilities: Capabilities,
}

/// Retained last will on `host/{host}/death`, carrying the seq of the connection that died.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Death {
    pub host: String,
    pub seq: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Process CPU, percent of one core.
    pub cpu_percent: f32,
    pub mem_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub encode_fps: f32,
    /// Time from a GOP's last source frame to its chunk being sent (last GOP).
    pub gop_latency_ms: f32,
    pub dropped_frames: u64,
    /// Payloads this part refused (malformed, oversized, wrong version, ...), since start.
    #[serde(default)]
    pub rejected_payloads: u64,
    /// Frames per second the host's tasks need for real time (their sources' rates).
    #[serde(default)]
    pub realtime_fps: f32,
    /// GOPs that failed to encode or to go out, since start.
    #[serde(default)]
    pub failed_gops: u64,
    #[serde(default)]
    pub gops_sent: u64,
    /// Sampled PSNR of the output against the decoded input, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psnr_db: Option<f32>,
}

/// What a host does for one (stream, profile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub stream: String,
    pub profile: String,
    /// Layout epoch the host applies (or has scheduled).
    pub layout_epoch: u64,
    /// GOP the source is at on this host, once it has seen frames.
    pub current_gop: Option<u64>,
    pub gops_sent: u64,
    /// Pipeline running and pre-rolled (source frames flowing).
    pub ready: bool,
    /// Error that stops the task, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub host: String,
    pub seq: u64,
    pub metrics: Metrics,
    pub tasks: Vec<TaskStatus>,
    /// The score the orchestrator last gave this host, echoed (what it is judged by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<ScoreEcho>,
}

/// A host's score as the host repeats it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreEcho {
    pub stability: f64,
    pub fitness: f64,
    pub tier: String,
}

/// Retained on `host/{host}/score`: the host's scores, tier, slot allowance, and the
/// arithmetic behind them (`gopswarm explain` prints it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostScore {
    pub host: String,
    pub stability: f64,
    pub fitness: f64,
    pub combined: f64,
    pub tier: String,
    /// Slots the tier allows out of the host's `max_tasks`.
    pub slots: u32,
    /// Human-readable arithmetic, one block per score, and the tier decision.
    pub explanation: String,
    /// Probability of a disconnect within the next interval from the learned model, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_risk: Option<f64>,
    /// Milliseconds since the Unix epoch when computed.
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskRole {
    /// Encode the slot's GOPs from `switch_gop` on.
    Active,
    /// Run and pre-roll the pipeline, encode nothing (ready to take over).
    Standby,
    /// Encode the slot's GOPs from `switch_gop` on as redundant copies only: a backup that
    /// owns no GOP (the merger uses a copy only where the primary is missing), given to
    /// hosts of the lowest tier.
    Copy,
}

/// One (stream, profile) slot given to a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub stream: String,
    pub profile: String,
    /// `profileenc` profile (GstStructure syntax).
    pub profile_spec: String,
    /// Source URL: `gdp+tcp://host:port` from `gopswarm source` (checked by [`check_source`]).
    pub source: String,
    pub role: TaskRole,
    pub slot_index: u32,
    pub slot_count: u32,
    pub redundancy: u32,
    /// Epoch of the stream layout this slot belongs to; stamped on every chunk.
    pub layout_epoch: u64,
    /// First GOP of this layout.
    pub switch_gop: u64,
    /// Where to send chunks (`None`: MQTT; `tcp://host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_sink: Option<String>,
    /// Last GOP this host encodes for the slot (set when the slot moves to another host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_gop: Option<u64>,
    pub gop_ns: u64,
}

/// Retained desired state of one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub host: String,
    /// Increases with every change of this host's assignment.
    pub revision: u64,
    pub tasks: Vec<Task>,
    /// Epoch of the orchestrator that made it: hosts refuse assignments of an orchestrator
    /// older than one they have heard from (a leader a standby has taken over from).
    #[serde(default)]
    pub orchestrator_epoch: u64,
}

/// Retained reported state: the assignment revision the host applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub host: String,
    pub revision: u64,
    pub tasks: Vec<TaskStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CommandKind {
    /// Start the task's pipeline in standby and ack once pre-rolled (with the current GOP).
    Prepare { task: Task },
    /// Take the slot from `task.switch_gop` on (the task carries the new layout epoch).
    Commit { task: Task },
    /// Forget a prepared task.
    Abort { stream: String, profile: String },
    /// Stop encoding the stream after `last_gop` (inclusive), then drop the task.
    Drain {
        stream: String,
        profile: String,
        last_gop: u64,
    },
    /// Ack at once: the orchestrator's round-trip-time probe (through the broker).
    Ping,
}

/// A command to one host. Handlers are idempotent: a repeated id gets the same ack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub id: String,
    /// Orchestrator epoch (increases at every orchestrator start): commands of older
    /// orchestrators are refused.
    pub epoch: u64,
    #[serde(flatten)]
    pub kind: CommandKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub host: String,
    pub id: String,
    pub ok: bool,
    pub detail: String,
    pub current_gop: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileDef {
    pub id: String,
    pub spec: String,
}

/// A stream the swarm encodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamDef {
    pub id: String,
    pub source: String,
    pub profiles: Vec<ProfileDef>,
    pub gop_ns: u64,
    /// Redundant copies per GOP; `None`: the swarm controller decides.
    pub redundancy: Option<u32>,
    /// Hosts per profile; `None`: the swarm controller decides.
    pub slots: Option<u32>,
    /// Where hosts send chunks: `None` for MQTT (`stream/{s}/chunks/{p}`), `tcp://host:port`
    /// of a merger listening for partial streams, or `srt`: every host serves its partial
    /// stream as an SRT listener (its birth's `srt_endpoint`) and the merger calls it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_sink: Option<String>,
    /// Content complexity measured from the source (`gopswarm stream add` samples it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity: Option<ContentComplexity>,
}

/// ITU-T P.910 spatial and temporal information of sampled source frames (luma, 8-bit scale):
/// SI = max over frames of the standard deviation of the Sobel-filtered frame, TI = max over
/// frames of the standard deviation of the difference to the previous frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ContentComplexity {
    pub si: f64,
    pub ti: f64,
    /// Frames sampled.
    pub frames: u32,
}

/// One epoch of a (stream, profile) layout: which host holds which slot from `from_gop` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutEpoch {
    pub epoch: u64,
    pub from_gop: u64,
    pub redundancy: u32,
    /// Host of slot i.
    pub hosts: Vec<String>,
    /// Backup hosts of this epoch (copy-only tasks on spare hosts, `--backup-copies`): the
    /// merger takes a redundant copy from a host outside `hosts` only if it is named here
    /// for the slot the GOP falls to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupSlot>,
}

/// A backup host of one slot of a layout epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSlot {
    pub slot: u32,
    pub host: String,
}

/// Retained layout history of a (stream, profile), oldest first (the merger fences with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub stream: String,
    pub profile: String,
    pub history: Vec<LayoutEpoch>,
    /// Epoch of the orchestrator that published it: the merger refuses layouts of an
    /// orchestrator older than one it has heard from.
    #[serde(default)]
    pub orchestrator_epoch: u64,
}

impl Layout {
    /// The layout epoch in force at GOP `gop`.
    pub fn epoch_at(&self, gop: u64) -> Option<&LayoutEpoch> {
        self.history.iter().rev().find(|e| e.from_gop <= gop)
    }
}

/// A host reached the end of the source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEnd {
    pub stream: String,
    pub profile: String,
    pub host: String,
    /// Last GOP of the source.
    pub last_gop: u64,
}

/// The merger asks the hosts for GOPs it misses (hosts keep their recent chunks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resend {
    pub stream: String,
    pub profile: String,
    pub gops: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum StreamCommand {
    Add {
        stream: StreamDef,
    },
    Remove {
        id: String,
    },
    /// Move the slot a host holds to another host at a GOP boundary.
    Handoff {
        stream: String,
        profile: String,
        from_host: String,
        to_host: Option<String>,
    },
    /// Update these hosts (every live host when empty) one at a time through the
    /// orchestrator's update hook, emptying each by handoff first.
    RollingUpdate {
        #[serde(default)]
        hosts: Vec<String>,
    },
    /// A scheduled event: the scaler provisions for it before it starts.
    Announce {
        event: EventAnnouncement,
    },
}

/// An event an operator announces ahead of time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventAnnouncement {
    pub id: String,
    /// The stream that will carry it, if known: once it runs, its slots count as demand.
    #[serde(default)]
    pub stream: Option<String>,
    pub start_unix_ms: u64,
    pub duration_s: f64,
    /// Encoding slots it will need (its profiles times their slots).
    pub slots: u32,
    /// Expected audience (the forecaster learns the load per viewer from past events).
    #[serde(default)]
    pub expected_viewers: f64,
}

/// The longest event an announcement may describe (a week): longer ones are refused, so the
/// end time never overflows.
pub const MAX_EVENT_DURATION_S: f64 = 7.0 * 24.0 * 3600.0;

impl EventAnnouncement {
    /// When it ends, in Unix milliseconds (saturating: a start near `u64::MAX` from the network
    /// never overflows).
    pub fn end_unix_ms(&self) -> u64 {
        self.start_unix_ms
            .saturating_add((self.duration_s.clamp(0.0, MAX_EVENT_DURATION_S) * 1000.0) as u64)
    }
}

/// A new host asks to join: its public key, and proof that it holds a one-time enrolment
/// token (`gopswarm init` makes them) without sending the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrol {
    pub host: String,
    /// The host's ed25519 public key (base64).
    pub key: String,
    /// Which token (its public half).
    pub token_id: String,
    /// HMAC-SHA256 of [`signed::enrol_proof_input`] under the token's secret (base64).
    pub proof: String,
}

/// Retained on `host/{host}/cert`, signed by the orchestrator: the key the host signs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostCert {
    pub host: String,
    /// ed25519 public key (base64).
    pub key: String,
    /// Milliseconds since the Unix epoch when enrolled.
    pub enrolled_ms: u64,
    /// Id of the enrolment token the host used: a standby orchestrator records it as used.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrchestratorStatus {
    pub online: bool,
    pub epoch: u64,
    pub versions: Versions,
    /// Name of the orchestrator instance (`--name`); empty from builds before standbys.
    #[serde(default)]
    pub holder: String,
}

/// Retained on `orchestrator/lease`: which orchestrator leads, at which epoch. The leader
/// publishes it again every keep-alive; a standby takes over (with a higher epoch) when the
/// leader's will arrives or no renewal came for `ttl_ms`. Hosts and the merger refuse what an
/// orchestrator of an older epoch sends (fencing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    pub epoch: u64,
    /// A standby takes over when no renewal came for this long.
    pub ttl_ms: u64,
    /// When it was renewed (milliseconds since the Unix epoch, the leader's clock): the
    /// leader judges by it whether its renewals still get through.
    pub renewed_ms: u64,
}

/// A message body of this protocol.
pub trait Message: Serialize + DeserializeOwned {
    /// Content checks beyond the JSON shape.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

fn check_ids(ids: &[&str]) -> Result<(), String> {
    match ids.iter().find(|i| !valid_id(i)) {
        Some(bad) => Err(format!("invalid id {bad:?}")),
        None => Ok(()),
    }
}

fn check_task(t: &Task) -> Result<(), String> {
    check_ids(&[&t.stream, &t.profile])?;
    if t.slot_count == 0 || t.slot_index >= t.slot_count {
        return Err(format!("slot {} of {}", t.slot_index, t.slot_count));
    }
    if t.redundancy >= t.slot_count {
        return Err(format!(
            "redundancy {} with {} slots",
            t.redundancy, t.slot_count
        ));
    }
    if !(1_000_000..=MAX_GOP_NS).contains(&t.gop_ns) {
        return Err(format!("gop_ns {}", t.gop_ns));
    }
    check_source(&t.source)?;
    check_chunk_sink(&t.chunk_sink)
}

fn check_chunk_sink(sink: &Option<String>) -> Result<(), String> {
    match sink.as_deref() {
        None | Some("srt") => Ok(()),
        Some(s) => Endpoint::parse(s, &[Scheme::Tcp]).map(|_| ()).map_err(|e| {
            format!("chunk sink: {e} (tcp://host:port pushes to a merger; srt: hosts serve, the merger pulls)")
        }),
    }
}

/// A stream's source: the `gdp+tcp://host:port` feed of `gopswarm source`.
pub fn check_source(source: &str) -> Result<Endpoint, String> {
    Endpoint::parse(source, &[Scheme::GdpTcp]).map_err(|e| format!("source: {e}"))
}

/// A host's SRT listener: `srt://host:port`.
pub fn check_srt_endpoint(endpoint: &str) -> Result<Endpoint, String> {
    Endpoint::parse(endpoint, &[Scheme::Srt]).map_err(|e| format!("SRT endpoint: {e}"))
}

fn check_status(t: &TaskStatus) -> Result<(), String> {
    check_ids(&[&t.stream, &t.profile])
}

/// How far ahead of this machine's clock a connection seq (unix microseconds at connect) may
/// be: clocks of a swarm agree to well within this.
pub const MAX_SEQ_AHEAD: std::time::Duration = std::time::Duration::from_secs(600);

/// A connection seq is the unix time in microseconds at connect (or one more than the last):
/// one from the future is forged. Accepting it would let a forged death (seq 2^64-1) bury a
/// live host, or a forged birth lock the host out until its clock got there.
fn check_seq(seq: u64) -> Result<(), String> {
    let limit = unix_micros().saturating_add(MAX_SEQ_AHEAD.as_micros() as u64);
    if seq > limit {
        return Err(format!(
            "connection seq {seq} is more than {} s ahead of this clock",
            MAX_SEQ_AHEAD.as_secs()
        ));
    }
    Ok(())
}

impl Message for Birth {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.host])?;
        check_seq(self.seq)?;
        match &self.capabilities.srt_endpoint {
            Some(e) => check_srt_endpoint(e).map(|_| ()),
            None => Ok(()),
        }
    }
}
impl Message for Death {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.host])?;
        check_seq(self.seq)
    }
}
impl Message for Heartbeat {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.host])?;
        check_seq(self.seq)?;
        self.tasks.iter().try_for_each(check_status)
    }
}
impl Message for Assignment {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.host])?;
        self.tasks.iter().try_for_each(check_task)
    }
}
impl Message for Applied {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.host])?;
        self.tasks.iter().try_for_each(check_status)
    }
}
impl Message for Command {
    fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > 128 {
            return Err("command id".into());
        }
        match &self.kind {
            CommandKind::Prepare { task } | CommandKind::Commit { task } => check_task(task),
            CommandKind::Abort { stream, profile }
            | CommandKind::Drain {
                stream, profile, ..
            } => check_ids(&[stream, profile]),
            CommandKind::Ping => Ok(()),
        }
    }
}
impl Message for Ack {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.host])
    }
}
impl Message for StreamDef {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.id])?;
        if self.profiles.is_empty() {
            return Err("no profiles".into());
        }
        for p in &self.profiles {
            check_ids(&[&p.id])?;
        }
        if !(100_000_000..=MAX_GOP_NS).contains(&self.gop_ns) {
            return Err(format!(
                "gop_ns {}: a GOP lasts 100 ms to {} s",
                self.gop_ns,
                MAX_GOP_NS / 1_000_000_000
            ));
        }
        check_source(&self.source)?;
        if self.slots == Some(0) {
            return Err("0 slots".into());
        }
        check_chunk_sink(&self.chunk_sink)?;
        if let Some(c) = &self.complexity
            && !(c.si.is_finite() && c.ti.is_finite() && c.si >= 0.0 && c.ti >= 0.0)
        {
            return Err("complexity out of range".into());
        }
        Ok(())
    }
}
impl Message for Layout {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.stream, &self.profile])?;
        let ordered = self
            .history
            .windows(2)
            .all(|w| w[0].epoch < w[1].epoch && w[0].from_gop <= w[1].from_gop);
        if !ordered {
            return Err("layout history out of order".into());
        }
        if self.history.iter().any(|e| e.from_gop > MAX_GOP_INDEX) {
            return Err("layout GOP index out of range".into());
        }
        Ok(())
    }
}
impl Message for StreamEnd {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.stream, &self.profile, &self.host])
    }
}
impl Message for Resend {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.stream, &self.profile])?;
        if self.gops.len() > 1024 {
            return Err("too many GOPs".into());
        }
        Ok(())
    }
}
impl Message for StreamCommand {
    fn validate(&self) -> Result<(), String> {
        match self {
            StreamCommand::Add { stream } => stream.validate(),
            StreamCommand::Remove { id } => check_ids(&[id]),
            StreamCommand::Handoff {
                stream,
                profile,
                from_host,
                to_host,
            } => {
                check_ids(&[stream, profile, from_host])?;
                to_host.as_deref().map_or(Ok(()), |h| check_ids(&[h]))
            }
            StreamCommand::RollingUpdate { hosts } => {
                check_ids(&hosts.iter().map(String::as_str).collect::<Vec<_>>())
            }
            StreamCommand::Announce { event } => {
                check_ids(&[&event.id])?;
                if let Some(s) = &event.stream {
                    check_ids(&[s])?;
                }
                if !(event.duration_s.is_finite()
                    && event.duration_s > 0.0
                    && event.duration_s <= MAX_EVENT_DURATION_S)
                {
                    return Err(format!(
                        "event duration {} s (must be above 0 and at most {MAX_EVENT_DURATION_S} s)",
                        event.duration_s
                    ));
                }
                if !(event.expected_viewers.is_finite() && event.expected_viewers >= 0.0) {
                    return Err(format!("expected viewers {}", event.expected_viewers));
                }
                Ok(())
            }
        }
    }
}
impl Message for OrchestratorStatus {
    fn validate(&self) -> Result<(), String> {
        if self.holder.is_empty() {
            Ok(())
        } else {
            check_ids(&[&self.holder])
        }
    }
}
impl Message for Lease {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.holder])?;
        if !(100..=600_000).contains(&self.ttl_ms) {
            return Err(format!("lease ttl {} ms", self.ttl_ms));
        }
        Ok(())
    }
}
fn check_key(key: &str) -> Result<(), String> {
    signed::parse_public(key).map(|_| ())
}
impl Message for Enrol {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.host, &self.token_id])?;
        check_key(&self.key)?;
        if self.proof.len() > 64 {
            return Err("enrolment proof too long".into());
        }
        Ok(())
    }
}
impl Message for HostCert {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.host])?;
        check_key(&self.key)
    }
}
impl Message for HostScore {
    fn validate(&self) -> Result<(), String> {
        check_ids(&[&self.host])?;
        for v in [self.stability, self.fitness, self.combined] {
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("score {v} outside 0..100"));
            }
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// Serialize a message with its version field.
pub fn encode<T: Message>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(&EnvelopeOut {
        v: PROTOCOL_VERSION,
        body: msg,
    })
    .expect("protocol messages serialize")
}

/// Why a received payload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    #[error("topic outside protocol v1: {0:?}")]
    UnknownTopic(String),
    #[error("payload of {0} bytes over the limit")]
    Oversized(usize),
    #[error("payload is not a JSON object: {0}")]
    Malformed(String),
    #[error("no protocol version field")]
    MissingVersion,
    #[error("protocol version {0} not supported (this build speaks {PROTOCOL_VERSION})")]
    WrongVersion(u64),
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("topic and payload disagree: {0}")]
    Mismatch(String),
    #[error("not signed (this swarm signs its control messages)")]
    Unsigned,
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("replayed: {0}")]
    Replayed(String),
    /// Well signed, but its sender is over its message rate.
    #[error("over the rate limit: {0}")]
    RateLimited(String),
}

/// Decode a JSON control payload: size, version, shape, content.
pub fn decode<T: Message>(payload: &[u8]) -> Result<T, Reject> {
    if payload.len() > MAX_CONTROL_PAYLOAD {
        return Err(Reject::Oversized(payload.len()));
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| Reject::Malformed(e.to_string()))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| Reject::Malformed("not an object".into()))?;
    match obj.remove("v") {
        None => return Err(Reject::MissingVersion),
        Some(v) => match v.as_u64() {
            Some(v) if v == PROTOCOL_VERSION as u64 => {}
            Some(v) => return Err(Reject::WrongVersion(v)),
            None => return Err(Reject::Malformed(format!("version field {v}"))),
        },
    }
    let msg: T = serde_json::from_value(value).map_err(|e| Reject::Invalid(e.to_string()))?;
    msg.validate().map_err(Reject::Invalid)?;
    Ok(msg)
}

/// Everything a part can receive, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Birth(Birth),
    Death(Death),
    Heartbeat(Heartbeat),
    Assignment(Assignment),
    /// An empty retained payload: the retained message was cleared.
    AssignmentCleared(String),
    Applied(Applied),
    Command(String, Command),
    Ack(Ack),
    StreamDef(StreamDef),
    StreamDefCleared(String),
    Layout(Layout),
    /// Raw chunk bytes (their own format checks them: CRC, version, lengths).
    Chunk {
        stream: String,
        profile: String,
        bytes: Vec<u8>,
    },
    StreamEnd(StreamEnd),
    Resend(Resend),
    StreamCommand(StreamCommand),
    OrchestratorStatus(OrchestratorStatus),
    OrchestratorDeath(OrchestratorStatus),
    Lease(Lease),
    Score(HostScore),
    ScoreCleared(String),
    Enrol(Enrol),
    Cert(HostCert),
    CertCleared(String),
}

fn same(what: &str, topic_id: &str, body_id: &str) -> Result<(), Reject> {
    if topic_id == body_id {
        Ok(())
    } else {
        Err(Reject::Mismatch(format!(
            "{what} {body_id:?} on the topic of {topic_id:?}"
        )))
    }
}

/// Decode whatever arrived on `topic`. Never panics; every refusal says why.
pub fn decode_publish(topic: &str, payload: &[u8]) -> Result<Inbound, Reject> {
    let parsed = Topic::parse(topic)
        .ok_or_else(|| Reject::UnknownTopic(topic.chars().take(200).collect::<String>()))?;
    Ok(match parsed {
        Topic::Birth(h) => {
            let m: Birth = decode(payload)?;
            same("host", &h, &m.host)?;
            Inbound::Birth(m)
        }
        Topic::Death(h) => {
            let m: Death = decode(payload)?;
            same("host", &h, &m.host)?;
            Inbound::Death(m)
        }
        Topic::Heartbeat(h) => {
            let m: Heartbeat = decode(payload)?;
            same("host", &h, &m.host)?;
            Inbound::Heartbeat(m)
        }
        Topic::Assignment(h) if payload.is_empty() => Inbound::AssignmentCleared(h),
        Topic::Assignment(h) => {
            let m: Assignment = decode(payload)?;
            same("host", &h, &m.host)?;
            Inbound::Assignment(m)
        }
        Topic::Applied(h) => {
            let m: Applied = decode(payload)?;
            same("host", &h, &m.host)?;
            Inbound::Applied(m)
        }
        Topic::Command(h) => Inbound::Command(h, decode(payload)?),
        Topic::Ack(h) => {
            let m: Ack = decode(payload)?;
            same("host", &h, &m.host)?;
            Inbound::Ack(m)
        }
        Topic::StreamDef(s) if payload.is_empty() => Inbound::StreamDefCleared(s),
        Topic::StreamDef(s) => {
            let m: StreamDef = decode(payload)?;
            same("stream", &s, &m.id)?;
            Inbound::StreamDef(m)
        }
        Topic::Layout(s, p) => {
            let m: Layout = decode(payload)?;
            same("stream", &s, &m.stream)?;
            same("profile", &p, &m.profile)?;
            Inbound::Layout(m)
        }
        Topic::Chunks(stream, profile) => {
            if payload.len() > MAX_CHUNK_PAYLOAD {
                return Err(Reject::Oversized(payload.len()));
            }
            Inbound::Chunk {
                stream,
                profile,
                bytes: payload.to_vec(),
            }
        }
        Topic::StreamEnd(s, p) => {
            let m: StreamEnd = decode(payload)?;
            same("stream", &s, &m.stream)?;
            same("profile", &p, &m.profile)?;
            Inbound::StreamEnd(m)
        }
        Topic::Resend(s, p) => {
            let m: Resend = decode(payload)?;
            same("stream", &s, &m.stream)?;
            same("profile", &p, &m.profile)?;
            Inbound::Resend(m)
        }
        Topic::StreamControl => Inbound::StreamCommand(decode(payload)?),
        Topic::OrchestratorStatus => Inbound::OrchestratorStatus(decode(payload)?),
        Topic::OrchestratorDeath => Inbound::OrchestratorDeath(decode(payload)?),
        Topic::OrchestratorLease => Inbound::Lease(decode(payload)?),
        Topic::Enrol(h) => {
            let m: Enrol = decode(payload)?;
            same("host", &h, &m.host)?;
            Inbound::Enrol(m)
        }
        Topic::Cert(h) if payload.is_empty() => Inbound::CertCleared(h),
        Topic::Cert(h) => {
            let m: HostCert = decode(payload)?;
            same("host", &h, &m.host)?;
            Inbound::Cert(m)
        }
        Topic::Score(h) if payload.is_empty() => Inbound::ScoreCleared(h),
        Topic::Score(h) => {
            let m: HostScore = decode(payload)?;
            same("host", &h, &m.host)?;
            Inbound::Score(m)
        }
    })
}

/// Logs refused payloads without letting a flood flood the log: the first
/// [`RefusalLog::PER_WINDOW`] of each 10 s are logged one by one, the rest as one count when
/// the next window starts. (Every refusal is counted by [`RejectCounters`] either way.)
#[derive(Debug)]
pub struct RefusalLog {
    who: String,
    window_start: std::time::Instant,
    logged: u32,
    suppressed: u64,
}

impl RefusalLog {
    pub const PER_WINDOW: u32 = 20;
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

    pub fn new(who: &str) -> RefusalLog {
        RefusalLog {
            who: who.to_string(),
            window_start: std::time::Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }

    /// Log the count of what was not logged, once the window is over (call it periodically:
    /// a flood that stops is summed up too).
    pub fn flush(&mut self) {
        if self.window_start.elapsed() >= Self::WINDOW {
            if self.suppressed > 0 {
                tracing::warn!(
                    "{}: {} more payloads refused in the last {} s (not logged one by one)",
                    self.who,
                    self.suppressed,
                    Self::WINDOW.as_secs()
                );
            }
            self.window_start = std::time::Instant::now();
            self.logged = 0;
            self.suppressed = 0;
        }
    }

    pub fn refused(&mut self, topic: &str, reject: &Reject) {
        self.flush();
        if self.logged < Self::PER_WINDOW {
            self.logged += 1;
            let topic: String = topic.chars().take(200).collect();
            tracing::warn!("{}: refused payload on {topic}: {reject}", self.who);
        } else {
            self.suppressed += 1;
        }
    }
}

/// Counts of refused payloads, by reason (exported as metrics, logged).
#[derive(Debug, Default)]
pub struct RejectCounters {
    pub unknown_topic: AtomicU64,
    pub oversized: AtomicU64,
    pub malformed: AtomicU64,
    pub wrong_version: AtomicU64,
    pub invalid: AtomicU64,
    pub unsigned: AtomicU64,
    pub bad_signature: AtomicU64,
    pub replayed: AtomicU64,
    pub rate_limited: AtomicU64,
}

impl RejectCounters {
    pub fn count(&self, reject: &Reject) {
        let c = match reject {
            Reject::UnknownTopic(_) => &self.unknown_topic,
            Reject::Oversized(_) => &self.oversized,
            Reject::Malformed(_) => &self.malformed,
            Reject::MissingVersion | Reject::WrongVersion(_) => &self.wrong_version,
            Reject::Invalid(_) | Reject::Mismatch(_) => &self.invalid,
            Reject::Unsigned => &self.unsigned,
            Reject::BadSignature(_) => &self.bad_signature,
            Reject::Replayed(_) => &self.replayed,
            Reject::RateLimited(_) => &self.rate_limited,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        BTreeMap::from([
            ("unknown-topic", self.unknown_topic.load(Ordering::Relaxed)),
            ("oversized", self.oversized.load(Ordering::Relaxed)),
            ("malformed", self.malformed.load(Ordering::Relaxed)),
            ("wrong-version", self.wrong_version.load(Ordering::Relaxed)),
            ("invalid", self.invalid.load(Ordering::Relaxed)),
            ("unsigned", self.unsigned.load(Ordering::Relaxed)),
            ("bad-signature", self.bad_signature.load(Ordering::Relaxed)),
            ("replayed", self.replayed.load(Ordering::Relaxed)),
            ("rate-limited", self.rate_limited.load(Ordering::Relaxed)),
        ])
    }
}

/// Versions of this build.
pub fn this_build_versions(gstreamer: &str) -> Versions {
    Versions {
        agent: env!("CARGO_PKG_VERSION").to_string(),
        protocol: PROTOCOL_VERSION,
        chunk_format: 1,
        gstreamer: gstreamer.to_string(),
        encoders: BTreeMap::new(),
    }
}

/// Whether a host with `theirs` can take slots from an orchestrator with `ours`: same
/// protocol and chunk format, same agent major version (and minor, while major is 0).
pub fn compatible(ours: &Versions, theirs: &Versions) -> Result<(), String> {
    if theirs.protocol != ours.protocol {
        return Err(format!(
            "protocol {} (need {})",
            theirs.protocol, ours.protocol
        ));
    }
    if theirs.chunk_format != ours.chunk_format {
        return Err(format!(
            "chunk format {} (need {})",
            theirs.chunk_format, ours.chunk_format
        ));
    }
    let key = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
        let major = it.next()??;
        let minor = it.next()??;
        Some(if major == 0 { (0, minor) } else { (major, 0) })
    };
    match (key(&ours.agent), key(&theirs.agent)) {
        (Some(a), Some(b)) if a == b => Ok(()),
        _ => Err(format!("agent {} (need {}.x)", theirs.agent, ours.agent)),
    }
}

/// Microseconds since the Unix epoch: a connection seq that keeps increasing across restarts.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
