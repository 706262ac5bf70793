// SPDX-License-Identifier: MPL-2.0
//! `gopswarm host`: an encoder host. Joins the swarm over MQTT (retained birth, last-will
//! death with a per-connection seq), takes its retained assignment and the orchestrator's
//! commands, runs one GStreamer pipeline per task built from the plugin's elements
//!
//! ```text
//! tcpclientsrc ! gdpdepay ! h264parse ! gopselect ! queue ! profileenc ! partialpay ! appsink
//! ```
//!
//! applies slot and epoch changes at GOP boundaries through `gopselect`'s atomic `assignment`
//! property (the pipeline never restarts), publishes its chunks on the stream's chunk topic,
//! keeps the last GOPs to answer the merger's resend requests, and reports heartbeats with
//! metrics and what it applied.

use crate::options::{parse_broker, parse_seconds};
use anyhow::{Context, Result, anyhow, bail};
use gopswarm_proto::link::{BrokerUrl, Link, LinkEvent, LinkOptions, Presence, QoS};
use gopswarm_proto::signed::{Open, Seal};
use gopswarm_proto::*;
use gst::prelude::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub mod quality;

/// A host's options: its `gopswarm host` command line (one definition for parsing and use).
#[derive(Debug, Clone, clap::Args)]
pub struct HostOptions {
    /// Host id (1-64 of [A-Za-z0-9._-])
    #[arg(long)]
    pub id: String,
    #[arg(long, value_parser = parse_broker, help = crate::options::BROKER_HELP)]
    pub broker: Option<BrokerUrl>,
    /// MQTT keep-alive; heartbeats go out twice per interval (seconds)
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    pub keepalive: Duration,
    /// Tasks (stream profiles) this host takes at once
    #[arg(long, default_value_t = 1)]
    pub max_tasks: u32,
    /// Recent GOPs kept per task for the merger's resend requests
    #[arg(long, default_value_t = 16)]
    pub cache_gops: usize,
    /// Test hook: advertise another agent version (version fencing).
    #[arg(long, hide = true)]
    pub advertise_version: Option<String>,
    /// Serve partial streams of tasks with chunk sink `srt` as an SRT listener here
    /// (srt://ip:port), encrypted with srt.passphrase from --keys; announced in the host's
    /// birth
    #[arg(long)]
    pub srt_listen: Option<String>,
    /// Test hook: after the first commit, hear nothing more from the orchestrator (a host cut
    /// off from the control plane that keeps encoding with a stale epoch).
    #[arg(long, hide = true)]
    pub freeze_after_commit: bool,
    /// Device class for the stability score: server, desktop, laptop, embedded
    #[arg(long)]
    pub device_class: Option<String>,
    /// Network interface for the stability score: ethernet, wifi, cellular
    #[arg(long)]
    pub interface: Option<String>,
    /// Region the host runs in (compared with the orchestrator's --region)
    #[arg(long)]
    pub region: Option<String>,
    /// Uplink bandwidth, Mbit/s, for the stability score
    #[arg(long)]
    pub bandwidth_mbps: Option<f64>,
    /// Profile of the encode benchmark run at join (repeatable; default: a 640x360 H.264
    /// reference profile)
    #[arg(long = "bench-profile")]
    pub bench_profiles: Vec<String>,
    /// Frames encoded per benchmark profile at join (0: no benchmark)
    #[arg(long, default_value_t = 90)]
    pub bench_frames: u32,
    /// Test hook: frames reach this host's pipelines no faster than this (a slow host).
    #[arg(long, hide = true)]
    pub throttle_fps: Option<f64>,
    /// Test hook: advertise another encoder library version (`codec=version`).
    #[arg(long, hide = true)]
    pub advertise_encoder: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9101)
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Measure the PSNR of every N-th GOP this host encodes against the decoded source
    /// (the orchestrator's fitness score uses it; 0: never)
    #[arg(long, default_value_t = 10)]
    pub psnr_every: u64,
    #[command(flatten)]
    pub keys: crate::options::KeyOptions,
    /// One-time enrolment token file (tokens/N.token of `gopswarm init`): a host without a key
    /// makes one under --keys hosts/, proves it holds the token, and waits for the
    /// orchestrator's certificate; the file is deleted once used
    #[arg(long, value_name = "FILE")]
    pub enrol_token: Option<std::path::PathBuf>,
}

/// Reference profile of the join benchmark when none is given.
pub const DEFAULT_BENCH_PROFILE: &str = "h264, width=640, height=360, bitrate=1500";
/// Frame rate the benchmark's reference source runs at (its real time).
const BENCH_FPS: f64 = 30.0;

/// Where a chunk goes.
enum Dest {
    Mqtt(String),
    Tcp(String),
    /// The host's own SRT listener (the merger calls it).
    Srt,
}

/// The host's SRT server: `appsrc ! srtsink mode=listener`, AES-256 with the swarm's SRT
/// passphrase (a caller without it is refused by SRT). Every caller (merger) gets the partial
/// streams from the moment it connects; earlier GOPs come by resend requests.
struct SrtServer {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
}

impl SrtServer {
    fn start(endpoint: &str, passphrase: Option<&str>) -> Result<SrtServer> {
        let endpoint = gopswarm_proto::check_srt_endpoint(endpoint)
            .map_err(|e| anyhow!("--srt-listen: {e}"))?;
        use crate::pipeline::make;
        let src = make(
            "appsrc",
            &[
                ("is-live", true.to_value()),
                ("block", false.to_value()),
                ("max-bytes", 64_000_000u64.to_value()),
                (
                    "caps",
                    gst::Caps::new_empty_simple("application/x-gopswarm-stream").to_value(),
                ),
            ],
        )?;
        src.set_property_from_str("format", "bytes");
        let sink = make(
            "srtsink",
            &[
                // The mode goes in the URI: srtsink 1.22 ignores a `mode` property set after it.
                (
                    "uri",
                    format!("srt://{}:{}?mode=listener", endpoint.host, endpoint.port).to_value(),
                ),
                ("wait-for-connection", false.to_value()),
                ("sync", false.to_value()),
                ("latency", 200i32.to_value()),
            ],
        )?;
        crate::pipeline::srt_encryption(&sink, passphrase);
        let pipeline =
            crate::pipeline::chain(&[src.clone(), sink]).context("SRT server pipeline")?;
        let src = crate::pipeline::downcast::<gst_app::AppSrc>(&src);
        pipeline
            .set_state(gst::State::Playing)
            .context("starting the SRT listener")?;
        Ok(SrtServer { pipeline, src })
    }
}

impl Drop for SrtServer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// A chunk out of a task's pipeline.
struct ChunkOut {
    stream: String,
    profile: String,
    bytes: Vec<u8>,
}

struct Runner {
    task: Task,
    pipeline: gst::Pipeline,
    select: gst::Element,
    /// EOS sent by us (drain finished) rather than the source's end.
    finishing: bool,
    ended: bool,
    error: Option<String>,
    gops_sent: u64,
    last_gop_sent: Option<u64>,
    cache: VecDeque<(u64, Vec<u8>)>,
    /// When the source moved past each recent GOP (for the per-GOP latency).
    gop_ends: VecDeque<(u64, Instant)>,
    last_current: Option<u64>,
    /// frames-in when the source first moved past the drained slot's last GOP.
    drain_mark: Option<u64>,
    /// frames-in at the last heartbeat, while frames flow.
    frames_at_beat: Option<u64>,
    quality: Option<quality::QualitySampler>,
}

/// Frames to let through after a drained slot's last GOP (gopselect's default max-reorder).
const DRAIN_REORDER_FRAMES: u64 = 16;

/// `gopselect`'s atomic `assignment` for a task.
fn assignment_for(task: &Task) -> gst::Structure {
    let assignment = gst::Structure::builder("assignment");
    match task.role {
        TaskRole::Standby => assignment.field("gops", "none").build(),
        TaskRole::Active | TaskRole::Copy => assignment
            .field("index", task.slot_index)
            .field("count", task.slot_count)
            .field("redundancy", task.redundancy)
            .field("copy-only", task.role == TaskRole::Copy)
            .field("epoch", task.layout_epoch)
            .field("switch-gop", task.switch_gop)
            // An empty set: the slots rule, not an earlier explicit set.
            .field("gops", "")
            .build(),
    }
}

impl Runner {
    fn start(
        task: &Task,
        host: &str,
        tx: mpsc::UnboundedSender<ChunkOut>,
        throttle_fps: Option<f64>,
        psnr_every: u64,
    ) -> Result<Runner> {
        // The source and the profile come from the network: both parsed strictly here (a bad
        // one refuses the task), and the pipeline is built from typed elements.
        let source = gopswarm_proto::check_source(&task.source).map_err(|e| anyhow!(e))?;
        let profile = crate::pipeline::check_profile(&task.profile_spec).map_err(|e| anyhow!(e))?;
        use crate::pipeline::make;
        let mut elements = vec![
            make(
                "tcpclientsrc",
                &[
                    ("host", source.host_name().to_value()),
                    ("port", i32::from(source.port).to_value()),
                ],
            )?,
            make("gdpdepay", &[])?,
            make("h264parse", &[])?,
            crate::pipeline::caps_filter(
                gst::Caps::builder("video/x-h264")
                    .field("alignment", "au")
                    .build(),
            )?,
        ];
        // A slow host: every frame waits before selection, so the host falls behind real time.
        if let Some(fps) = throttle_fps.filter(|f| *f > 0.0) {
            elements.push(make(
                "identity",
                &[("sleep-time", ((1e6 / fps) as u32).to_value())],
            )?);
        }
        let select = make("gopselect", &[("gop-duration", task.gop_ns.to_value())])?;
        let enc = make(
            "profileenc",
            &[("profile", profile.to_structure().to_value())],
        )?;
        let pay = make(
            "partialpay",
            &[
                ("stream-id", task.stream.to_value()),
                ("profile-id", task.profile.to_value()),
                ("host-id", host.to_value()),
            ],
        )?;
        let out = make("appsink", &[("sync", false.to_value())])?;
        elements.extend([
            select.clone(),
            make(
                "queue",
                &[
                    ("max-size-buffers", 0u32.to_value()),
                    ("max-size-bytes", 0u32.to_value()),
                    ("max-size-time", 10_000_000_000u64.to_value()),
                ],
            )?,
            enc,
            pay,
            out.clone(),
        ]);
        let pipeline = crate::pipeline::chain(&elements).context("host pipeline")?;
        let sink = crate::pipeline::downcast::<gst_app::AppSink>(&out);
        let (stream, profile) = (task.stream.clone(), task.profile.clone());
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(buf) = sample.buffer()
                        && let Ok(map) = buf.map_readable()
                    {
                        let _ = tx.send(ChunkOut {
                            stream: stream.clone(),
                            profile: profile.clone(),
                            bytes: map.to_vec(),
                        });
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let r = Runner {
            task: task.clone(),
            pipeline,
            select,
            finishing: false,
            ended: false,
            error: None,
            gops_sent: 0,
            last_gop_sent: None,
            cache: VecDeque::new(),
            gop_ends: VecDeque::new(),
            last_current: None,
            drain_mark: None,
            frames_at_beat: None,
            quality: (psnr_every > 0).then(|| quality::QualitySampler::new(psnr_every)),
        };
        if let Some(q) = &r.quality {
            q.attach(&r.select.static_pad("src").unwrap());
        }
        r.select.set_property("assignment", assignment_for(task));
        r.pipeline
            .set_state(gst::State::Playing)
            .context("starting the host pipeline")?;
        Ok(r)
    }

    fn current_gop(&self) -> Option<u64> {
        let st = self.select.property::<gst::Structure>("stats");
        st.get::<i64>("current-gop")
            .ok()
            .filter(|g| *g >= 0)
            .map(|g| g as u64)
    }

    /// Frame rate of the task's source (0 until caps are known).
    fn source_fps(&self) -> f64 {
        self.select
            .static_pad("sink")
            .and_then(|p| p.current_caps())
            .and_then(|c| {
                c.structure(0)
                    .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
            })
            .filter(|f| f.denom() > 0)
            .map_or(0.0, |f| f.numer() as f64 / f.denom() as f64)
    }

    fn frames_in(&self) -> u64 {
        let st = self.select.property::<gst::Structure>("stats");
        st.get::<u64>("frames-in").unwrap_or(0)
    }

    /// Apply a new desired task for this (stream, profile) at its GOP boundary.
    fn apply(&mut self, task: &Task) {
        if *task == self.task {
            return;
        }
        let only_until_changed = Task {
            until_gop: task.until_gop,
            ..self.task.clone()
        } == *task;
        if only_until_changed && let Some(last) = task.until_gop {
            self.select.set_property(
                "assignment",
                gst::Structure::builder("assignment")
                    .field("gops", "none")
                    .field("switch-gop", last + 1)
                    .build(),
            );
        } else {
            self.select.set_property("assignment", assignment_for(task));
        }
        self.task = task.clone();
    }

    fn status(&self) -> TaskStatus {
        let current = self.current_gop();
        TaskStatus {
            stream: self.task.stream.clone(),
            profile: self.task.profile.clone(),
            layout_epoch: self.task.layout_epoch,
            current_gop: current,
            gops_sent: self.gops_sent,
            ready: current.is_some() && self.error.is_none(),
            error: self.error.clone(),
        }
    }

    fn stop(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

struct Agent {
    id: String,
    opts_cache_gops: usize,
    runners: BTreeMap<(String, String), Runner>,
    tx: mpsc::UnboundedSender<ChunkOut>,
    applied_revision: u64,
    /// The tasks of the assignment applied last.
    applied_tasks: Vec<Task>,
    orchestrator_epoch: u64,
    acks: HashMap<String, Ack>,
    /// Prepare commands waiting for their pipeline to be ready.
    pending_ready: Vec<(String, (String, String))>,
    seq: u64,
    rejects: RejectCounters,
    out: Vec<(String, Vec<u8>, bool)>,
    cpu: CpuMeter,
    max_tasks: u32,
    psnr_every: u64,
    freeze_after_commit: bool,
    frozen: bool,
    /// Connections to mergers that take partial streams over TCP.
    tcp: HashMap<String, crate::chunk_tls::ChunkWriter>,
    /// TLS for them: `Ok(None)` with `--insecure`, an error for a key directory without the
    /// swarm CA (chunks are then not sent over TCP at all, never in plaintext).
    chunk_tls: Result<Option<std::sync::Arc<rustls::ClientConfig>>, String>,
    srt: Option<SrtServer>,
    /// Drained tasks already finished (stream, profile, epoch): never restarted.
    finished: std::collections::HashSet<(String, String, u64)>,
    throttle_fps: Option<f64>,
    /// The orchestrator's latest verdict on this host, echoed in heartbeats.
    score: Option<ScoreEcho>,
    /// Tasks that stopped on an error, since start (failed GOPs of the history).
    failed_tasks: u64,
    gops_sent_total: u64,
    metrics: std::sync::Arc<gopswarm_metrics::Registry>,
    /// Recent tasks refused for a bad profile, newest last, with the reason in `error`:
    /// reported in the retained `applied` (what `gopswarm explain` shows).
    refused: Vec<TaskStatus>,
    /// Tasks refused for a bad profile, since start.
    refused_total: u64,
    /// A refusal not yet in the retained `applied`.
    refused_unpublished: bool,
}

/// Refused tasks kept for `applied` and `gopswarm explain`.
const REFUSED_KEPT: usize = 16;

impl Agent {
    fn publish<M: Message>(&mut self, topic: Topic, msg: &M, retain: bool) {
        self.out.push((topic.path(), encode(msg), retain));
    }

    fn ack(&mut self, id: &str, ok: bool, detail: &str, gop: Option<u64>) {
        let ack = Ack {
            host: self.id.clone(),
            id: id.to_string(),
            ok,
            detail: detail.to_string(),
            current_gop: gop,
        };
        self.acks.insert(id.to_string(), ack.clone());
        if self.acks.len() > 4096 {
            self.acks.clear();
        }
        self.publish(Topic::Ack(self.id.clone()), &ack, false);
    }

    /// A task whose profile the encoder would refuse is refused here, with the parser's reason:
    /// never started on a default profile, never taking the host's good tasks down with it.
    fn check_task(&mut self, task: &Task) -> Result<()> {
        let Err(reason) = crate::pipeline::check_profile(&task.profile_spec) else {
            return Ok(());
        };
        self.refused_total += 1;
        tracing::error!(
            "{}: task {}/{}: {reason}",
            self.id,
            task.stream,
            task.profile
        );
        self.refused
            .retain(|t| (&t.stream, &t.profile) != (&task.stream, &task.profile));
        if self.refused.len() >= REFUSED_KEPT {
            self.refused.remove(0);
        }
        self.refused.push(TaskStatus {
            stream: task.stream.clone(),
            profile: task.profile.clone(),
            layout_epoch: task.layout_epoch,
            current_gop: None,
            gops_sent: 0,
            ready: false,
            error: Some(reason.clone()),
        });
        self.refused_unpublished = true;
        bail!(reason)
    }

    /// The retained reported state: the tasks it runs and those it refused.
    fn publish_applied(&mut self) {
        self.refused_unpublished = false;
        let applied = Applied {
            host: self.id.clone(),
            revision: self.applied_revision,
            tasks: self
                .runners
                .values()
                .map(Runner::status)
                .chain(self.refused.iter().cloned())
                .collect(),
        };
        self.publish(Topic::Applied(self.id.clone()), &applied, true);
    }

    fn ensure(&mut self, task: &Task) -> Result<()> {
        self.check_task(task)?;
        let key = (task.stream.clone(), task.profile.clone());
        self.refused
            .retain(|t| (&t.stream, &t.profile) != (&task.stream, &task.profile));
        if task.until_gop.is_some()
            && self.finished.contains(&(
                task.stream.clone(),
                task.profile.clone(),
                task.layout_epoch,
            ))
        {
            return Ok(());
        }
        if let Some(r) = self.runners.get_mut(&key) {
            if r.error.is_none() && !r.ended {
                r.apply(task);
                return Ok(());
            }
            r.stop();
            self.runners.remove(&key);
        }
        if self.runners.len() >= self.max_tasks as usize {
            bail!("host is full ({} tasks)", self.max_tasks);
        }
        let r = Runner::start(
            task,
            &self.id,
            self.tx.clone(),
            self.throttle_fps,
            self.psnr_every,
        )?;
        tracing::info!(
            "{}: task {}/{} started ({:?}, slot {}/{}, epoch {}, from GOP {})",
            self.id,
            task.stream,
            task.profile,
            task.role,
            task.slot_index,
            task.slot_count,
            task.layout_epoch,
            task.switch_gop
        );
        self.runners.insert(key, r);
        Ok(())
    }

    fn drop_task(&mut self, stream: &str, profile: &str) {
        if let Some(r) = self
            .runners
            .remove(&(stream.to_string(), profile.to_string()))
        {
            r.stop();
            tracing::info!("{}: task {stream}/{profile} stopped", self.id);
        }
    }

    fn on_assignment(&mut self, a: Assignment) {
        if self.frozen {
            return;
        }
        // Fencing: a leader a standby has taken over from may still publish for a moment.
        if a.orchestrator_epoch < self.orchestrator_epoch {
            tracing::warn!(
                "{}: assignment revision {} of orchestrator epoch {} refused: epoch {} leads",
                self.id,
                a.revision,
                a.orchestrator_epoch,
                self.orchestrator_epoch
            );
            return;
        }
        // A newer orchestrator's assignment applies whatever its revision: it may repeat a
        // revision the replaced leader used after the standby's last look.
        let newer = a.orchestrator_epoch > self.orchestrator_epoch;
        self.orchestrator_epoch = a.orchestrator_epoch;
        if a.revision <= self.applied_revision && (!newer || a.tasks == self.applied_tasks) {
            return;
        }
        let wanted: Vec<(String, String)> = a
            .tasks
            .iter()
            .map(|t| (t.stream.clone(), t.profile.clone()))
            .collect();
        // A draining task finishes on its own (its last GOP is still in the encoder).
        let gone: Vec<(String, String)> = self
            .runners
            .iter()
            .filter(|(k, r)| !wanted.contains(k) && r.task.until_gop.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for (s, p) in gone {
            self.drop_task(&s, &p);
        }
        for t in &a.tasks {
            if let Err(e) = self.ensure(t) {
                tracing::error!("{}: task {}/{}: {e:#}", self.id, t.stream, t.profile);
            }
        }
        self.applied_revision = a.revision;
        self.applied_tasks = a.tasks;
        self.publish_applied();
    }

    fn on_command(&mut self, cmd: Command) {
        if self.frozen {
            return;
        }
        if self.freeze_after_commit && matches!(cmd.kind, CommandKind::Commit { .. }) {
            tracing::warn!("{}: test hook: frozen after this commit", self.id);
            self.frozen = true;
        }
        if let Some(ack) = self.acks.get(&cmd.id).cloned() {
            // A duplicate (QoS 1 redelivery): same answer, nothing done twice.
            self.publish(Topic::Ack(self.id.clone()), &ack, false);
            return;
        }
        if cmd.epoch < self.orchestrator_epoch {
            self.ack(&cmd.id, false, "command of an older orchestrator", None);
            return;
        }
        self.orchestrator_epoch = cmd.epoch;
        match cmd.kind {
            CommandKind::Prepare { task } => match self.ensure(&task) {
                Ok(()) => self
                    .pending_ready
                    .push((cmd.id, (task.stream.clone(), task.profile.clone()))),
                Err(e) => self.refuse_command(&cmd.id, &e),
            },
            CommandKind::Commit { task } => {
                let key = (task.stream.clone(), task.profile.clone());
                match self.ensure(&task) {
                    Ok(()) => {
                        let gop = self.runners.get(&key).and_then(Runner::current_gop);
                        self.ack(&cmd.id, true, "", gop);
                    }
                    Err(e) => self.refuse_command(&cmd.id, &e),
                }
            }
            CommandKind::Abort { stream, profile } => {
                self.drop_task(&stream, &profile);
                self.ack(&cmd.id, true, "", None);
            }
            CommandKind::Drain {
                stream,
                profile,
                last_gop,
            } => {
                let key = (stream, profile);
                let gop = match self.runners.get_mut(&key) {
                    Some(r) => {
                        let t = Task {
                            until_gop: Some(last_gop),
                            ..r.task.clone()
                        };
                        r.apply(&t);
                        r.current_gop()
                    }
                    None => None,
                };
                self.ack(&cmd.id, true, "", gop);
            }
            CommandKind::Ping => self.ack(&cmd.id, true, "pong", None),
        }
    }

    /// A command the host cannot carry out: acked with the reason; a refused profile also goes
    /// into the retained `applied`.
    fn refuse_command(&mut self, id: &str, e: &anyhow::Error) {
        self.ack(id, false, &format!("{e:#}"), None);
        if self.refused_unpublished {
            self.publish_applied();
        }
    }

    /// Bus messages, readiness, drains that are done, latency bookkeeping.
    fn poll_runners(&mut self) {
        let mut ends = Vec::new();
        for (key, r) in self.runners.iter_mut() {
            let bus = r.pipeline.bus().unwrap();
            while let Some(msg) = bus.pop() {
                match msg.view() {
                    gst::MessageView::Error(e) => {
                        let text = format!("{} ({:?})", e.error(), e.debug());
                        tracing::error!("task {}/{}: {text}", key.0, key.1);
                        if r.error.is_none() {
                            self.failed_tasks += 1;
                        }
                        r.error = Some(text);
                    }
                    gst::MessageView::Eos(_) => {
                        r.ended = true;
                        if !r.finishing {
                            ends.push((key.clone(), r.current_gop()));
                        }
                    }
                    _ => {}
                }
            }
            let current = r.current_gop();
            if current != r.last_current {
                if let Some(prev) = r.last_current {
                    r.gop_ends.push_back((prev, Instant::now()));
                    if r.gop_ends.len() > 64 {
                        r.gop_ends.pop_front();
                    }
                }
                r.last_current = current;
            }
            if let (Some(u), Some(g)) = (r.task.until_gop, current)
                && g > u
                && !r.finishing
            {
                // Past the last GOP of a drained slot. Frames displayed before the next GOP's
                // keyframe may still follow it in decode order (gopselect passes up to
                // max-reorder of them): wait for those, then EOS pushes the encoder's tail out.
                let frames = r.frames_in();
                let mark = *r.drain_mark.get_or_insert(frames);
                if frames >= mark + DRAIN_REORDER_FRAMES {
                    r.finishing = true;
                    r.pipeline.send_event(gst::event::Eos::new());
                }
            }
        }
        for ((s, p), last) in ends {
            if let Some(last_gop) = last {
                let end = StreamEnd {
                    stream: s.clone(),
                    profile: p.clone(),
                    host: self.id.clone(),
                    last_gop,
                };
                self.publish(Topic::StreamEnd(s.clone(), p.clone()), &end, false);
            }
            tracing::info!("{}: source of {s}/{p} ended", self.id);
        }
        let mut still = Vec::new();
        for (id, key) in std::mem::take(&mut self.pending_ready) {
            match self.runners.get(&key) {
                Some(r) if r.error.is_some() => {
                    let e = r.error.clone().unwrap();
                    self.ack(&id, false, &e, None);
                }
                Some(r) => match r.current_gop() {
                    Some(g) => self.ack(&id, true, "ready", Some(g)),
                    None => still.push((id, key)),
                },
                None => self.ack(&id, false, "task dropped", None),
            }
        }
        self.pending_ready = still;
    }

    /// Account for a chunk the encoder produced, sign it, keep it for resends, and say where it
    /// goes.
    fn on_chunk(&mut self, c: ChunkOut, seal: &Seal) -> Option<(Dest, Vec<u8>)> {
        let key = (c.stream.clone(), c.profile.clone());
        let (header, _) = match gopswarm_chunk::parse_ref(&c.bytes) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("own chunk unreadable: {e}");
                return None;
            }
        };
        let dest = self.dest(&c.stream, &c.profile);
        if let Some(r) = self.runners.get(&key)
            && let Some(q) = &r.quality
        {
            q.on_chunk(header.gop_index, &c.bytes);
        }
        let bytes = match seal.seal_chunk(c.bytes) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(
                    "{}: own chunk of GOP {} not signed: {e}",
                    self.id,
                    header.gop_index
                );
                return None;
            }
        };
        self.gops_sent_total += 1;
        if let Some(r) = self.runners.get_mut(&key) {
            r.gops_sent += 1;
            r.last_gop_sent = Some(header.gop_index);
            r.cache.push_back((header.gop_index, bytes.clone()));
            while r.cache.len() > self.opts_cache_gops {
                r.cache.pop_front();
            }
        }
        Some((dest, bytes))
    }

    fn dest(&self, stream: &str, profile: &str) -> Dest {
        let sink = self
            .runners
            .get(&(stream.to_string(), profile.to_string()))
            .and_then(|r| r.task.chunk_sink.clone());
        match sink.as_deref() {
            Some("srt") => Dest::Srt,
            // Checked on receipt; parsed again here so only host and port are used.
            Some(s) => match gopswarm_proto::endpoint::Endpoint::parse(
                s,
                &[gopswarm_proto::endpoint::Scheme::Tcp],
            ) {
                Ok(e) => Dest::Tcp(format!("{}:{}", e.host, e.port)),
                Err(e) => {
                    tracing::warn!("{}: chunk sink refused: {e}", self.id);
                    Dest::Mqtt(Topic::Chunks(stream.to_string(), profile.to_string()).path())
                }
            },
            None => Dest::Mqtt(Topic::Chunks(stream.to_string(), profile.to_string()).path()),
        }
    }

    /// Send a chunk to a merger over TCP, over TLS with the swarm's keys (connecting, or
    /// reconnecting once, as needed).
    fn send_tcp(&mut self, addr: &str, bytes: &[u8]) {
        let tls = match &self.chunk_tls {
            Ok(tls) => tls.clone(),
            Err(e) => {
                tracing::warn!("{}: chunk for merger {addr} not sent: {e}", self.id);
                return;
            }
        };
        for attempt in 0..2 {
            if !self.tcp.contains_key(addr) {
                // A name or an IP literal (the chunk sink was parsed strictly on receipt).
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let conn = std::net::ToSocketAddrs::to_socket_addrs(addr)
                    .map_err(anyhow::Error::from)
                    .and_then(|mut a| a.next().context("no address"))
                    .and_then(|a| {
                        let tcp = std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1))?;
                        tcp.set_write_timeout(Some(Duration::from_secs(2)))?;
                        tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
                        crate::chunk_tls::client(tls.as_ref(), host, tcp)
                    });
                match conn {
                    Ok(stream) => {
                        self.tcp.insert(addr.to_string(), stream);
                    }
                    Err(e) => {
                        tracing::warn!("{}: merger {addr}: {e:#}", self.id);
                        return;
                    }
                }
            }
            let stream = self.tcp.get_mut(addr).unwrap();
            match stream.write_all(bytes).and_then(|()| stream.flush()) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!("{}: merger {addr} (attempt {attempt}): {e}", self.id);
                    self.tcp.remove(addr);
                }
            }
        }
    }

    fn heartbeat(&mut self) -> Heartbeat {
        let (cpu, dt) = self.cpu.sample();
        // Speed against real time over the pipelines that ran the whole interval: a task
        // that starts, ends or errs in it would read as a host falling behind.
        let (mut dt_frames, mut realtime_fps) = (0u64, 0f64);
        for r in self.runners.values_mut() {
            let frames = r.frames_in();
            let live = !r.ended && !r.finishing && r.error.is_none() && frames > 0;
            if live && let Some(prev) = r.frames_at_beat {
                dt_frames += frames.saturating_sub(prev);
                realtime_fps += r.source_fps();
            }
            r.frames_at_beat = live.then_some(frames);
        }
        let latency = self
            .runners
            .values()
            .filter_map(|r| {
                let g = r.last_gop_sent?;
                let ended = r.gop_ends.iter().find(|(k, _)| *k == g)?.1;
                Some(ended.elapsed().as_secs_f32() * 1000.0)
            })
            .fold(0f32, f32::max);
        Heartbeat {
            host: self.id.clone(),
            seq: self.seq,
            metrics: Metrics {
                cpu_percent: cpu,
                mem_bytes: rss_bytes(),
                net_rx_bytes: net_bytes().0,
                net_tx_bytes: net_bytes().1,
                encode_fps: if dt > 0.0 { dt_frames as f32 / dt } else { 0.0 },
                gop_latency_ms: latency,
                dropped_frames: self
                    .runners
                    .values()
                    .map(|r| {
                        r.pipeline
                            .by_name("pay")
                            .map(|p| p.property::<gst::Structure>("stats"))
                            .and_then(|s| s.get::<u64>("dropped-frames").ok())
                            .unwrap_or(0)
                    })
                    .sum(),
                rejected_payloads: self.rejects.total(),
                realtime_fps: realtime_fps as f32,
                failed_gops: self.failed_tasks,
                gops_sent: self.gops_sent_total,
                psnr_db: {
                    let samples: Vec<f64> = self
                        .runners
                        .values()
                        .filter_map(|r| r.quality.as_ref())
                        .filter_map(|q| q.latest.lock().unwrap().map(|(_, db)| db))
                        .collect();
                    (!samples.is_empty())
                        .then(|| (samples.iter().sum::<f64>() / samples.len() as f64) as f32)
                },
            },
            tasks: self.runners.values().map(Runner::status).collect(),
            score: self.score.clone(),
        }
    }

    /// Mirror the heartbeat into the Prometheus registry.
    fn export(&self, hb: &Heartbeat) -> Result<()> {
        let m = &self.metrics;
        let x = &hb.metrics;
        let mut gauges = vec![
            (
                "gopswarm_host_cpu_percent",
                "Process CPU, percent of one core",
                x.cpu_percent as f64,
            ),
            (
                "gopswarm_host_rss_bytes",
                "Resident memory of the host process",
                x.mem_bytes as f64,
            ),
            (
                "gopswarm_host_encode_fps",
                "Frames per second through the host's pipelines",
                x.encode_fps as f64,
            ),
            (
                "gopswarm_host_realtime_fps",
                "Frames per second its tasks need for real time",
                x.realtime_fps as f64,
            ),
            (
                "gopswarm_host_gop_latency_ms",
                "Last GOP: source end to chunk out",
                x.gop_latency_ms as f64,
            ),
            (
                "gopswarm_host_tasks",
                "Tasks the host runs",
                hb.tasks.len() as f64,
            ),
        ];
        if let Some(db) = x.psnr_db {
            gauges.push((
                "gopswarm_host_psnr_db",
                "Sampled luma PSNR of its output against the decoded source",
                db as f64,
            ));
        }
        if let Some(s) = &hb.score {
            gauges.push((
                "gopswarm_host_stability_score",
                "Stability score the orchestrator gave this host (0-100)",
                s.stability,
            ));
            gauges.push((
                "gopswarm_host_fitness_score",
                "Fitness score the orchestrator gave this host (0-100)",
                s.fitness,
            ));
        }
        for (name, help, v) in gauges {
            m.gauge(name, help, &[])?.set(&[], v)?;
        }
        for (name, help, v) in [
            ("gopswarm_host_gops_sent_total", "GOPs sent", x.gops_sent),
            (
                "gopswarm_host_failed_tasks_total",
                "Tasks stopped by an error",
                x.failed_gops,
            ),
            (
                "gopswarm_host_rejected_payloads_total",
                "Payloads refused",
                x.rejected_payloads,
            ),
            (
                "gopswarm_host_dropped_frames_total",
                "Frames partialpay dropped",
                x.dropped_frames,
            ),
        ] {
            m.counter(name, help, &[])?.set(&[], v as f64)?;
        }
        m.counter(
            "gopswarm_host_refused_tasks_total",
            "Tasks refused for a profile the encoder would refuse",
            &[],
        )?
        .set(&[], self.refused_total as f64)?;
        Ok(())
    }
}

struct CpuMeter {
    last_ticks: u64,
    last_at: Instant,
}

impl CpuMeter {
    fn ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime is the 14th field.
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        num(11) + num(12)
    }

    /// CPU percent of one core since the last sample, and the seconds elapsed.
    fn sample(&mut self) -> (f32, f32) {
        let ticks = Self::ticks();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f32;
        let dt = self.last_at.elapsed().as_secs_f32();
        let cpu = if dt > 0.0 {
            (ticks.saturating_sub(self.last_ticks)) as f32 / hz / dt * 100.0
        } else {
            0.0
        };
        self.last_ticks = ticks;
        self.last_at = Instant::now();
        (cpu, dt)
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64
}

fn net_bytes() -> (u64, u64) {
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    dev.lines().skip(2).fold((0, 0), |(rx, tx), line| {
        let f: Vec<&str> = line
            .split_once(':')
            .map(|x| x.1)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        (rx + n(0), tx + n(8))
    })
}

/// Encoder library of each codec found: its element and plugin version.
fn encoder_versions() -> BTreeMap<String, String> {
    [
        ("h264", "x264enc"),
        ("h265", "x265enc"),
        ("vp9", "vp9enc"),
        ("av1", "av1enc"),
    ]
    .iter()
    .filter_map(|(codec, factory)| {
        let f = gst::ElementFactory::find(factory)?;
        let version = f
            .plugin()
            .map(|p| p.version().to_string())
            .unwrap_or_default();
        Some((codec.to_string(), format!("{factory} {version}")))
    })
    .collect()
}

/// The join benchmark: encode `frames` frames of a test pattern at 30 fps per profile, as
/// fast as the host can; frames per second of wall time.
pub fn join_benchmark(profiles: &[String], frames: u32) -> Vec<BenchResult> {
    if frames == 0 {
        return Vec::new();
    }
    profiles
        .iter()
        .filter_map(|spec| {
            let run = || -> Result<f64> {
                let profile = crate::pipeline::check_profile(spec).map_err(|e| anyhow!(e))?;
                let pipeline = crate::pipeline::parse(&format!(
                    "videotestsrc num-buffers={frames} pattern=ball \
                     ! video/x-raw,width=1280,height=720,framerate=30/1 \
                     ! profileenc name=enc ! fakesink sync=false"
                ))?;
                pipeline
                    .by_name("enc")
                    .unwrap()
                    .set_property("profile", profile.to_structure());
                let started = Instant::now();
                crate::pipeline::play(&pipeline, Duration::from_secs(60))?;
                Ok(frames as f64 / started.elapsed().as_secs_f64().max(1e-6))
            };
            match run() {
                Ok(fps) => Some(BenchResult {
                    profile: spec.clone(),
                    fps,
                    realtime_fps: BENCH_FPS,
                }),
                Err(e) => {
                    tracing::warn!("join benchmark of {spec:?} failed: {e:#}");
                    None
                }
            }
        })
        .collect()
}

fn capabilities(max_tasks: u32) -> Capabilities {
    let codecs = [
        ("h264", "x264enc"),
        ("h265", "x265enc"),
        ("vp9", "vp9enc"),
        ("av1", "av1enc"),
    ]
    .iter()
    .filter(|(_, f)| gst::ElementFactory::find(f).is_some())
    .map(|(c, _)| c.to_string())
    .collect();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    Capabilities {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        mem_bytes: mem,
        codecs,
        max_tasks,
        srt_endpoint: None,
        ..Default::default()
    }
}

/// How this host signs and checks messages; enrols first when it has a token and no key yet.
/// `None`: shut down while waiting for the certificate.
async fn keys(
    opts: &HostOptions,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<Option<(Seal, Open)>> {
    use gopswarm_proto::signed::{Principal, Token, Verifier, read_secret};
    let Some(kd) = opts.keys.dir()? else {
        if opts.enrol_token.is_some() {
            bail!("--enrol-token needs --keys (the trust file to check the certificate with)");
        }
        return Ok(Some((Seal::Plain, Open::Plain)));
    };
    let trust = kd.trust().map_err(anyhow::Error::msg)?;
    let who = Principal::Host(opts.id.clone());
    let key_path = kd.key_path(&who);
    // A host restarted after enrolling: its key is there, the token used and gone (a config
    // file may still name it).
    let token = match &opts.enrol_token {
        Some(path) if key_path.exists() && !path.exists() => {
            tracing::info!(
                "{}: enrolled before (key {}); token {} used up",
                opts.id,
                key_path.display(),
                path.display()
            );
            None
        }
        other => other.clone(),
    };
    let signer = if key_path.exists() {
        kd.signer(who).map_err(anyhow::Error::msg)?
    } else if token.is_some() {
        kd.create_host_key(&opts.id).map_err(anyhow::Error::msg)?
    } else {
        bail!(
            "host {} has no key ({}): give it an enrolment token with --enrol-token FILE (from              `gopswarm init`)",
            opts.id,
            key_path.display()
        );
    };
    let mut verifier = Verifier::new(&trust).map_err(anyhow::Error::msg)?;
    if let Some(path) = &token {
        let token = Token::parse(&read_secret(path).map_err(anyhow::Error::msg)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if !enrol(opts, &token, &signer, &mut verifier, shutdown).await? {
            return Ok(None);
        }
        // The orchestrator may have deleted it already (one key directory for both).
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(
                "{}: enrolled, but could not delete the used token {}: {e}",
                opts.id,
                path.display()
            );
        }
    }
    Ok(Some((
        Seal::Signed(Box::new(signer)),
        Open::Verified(Box::new(verifier)),
    )))
}

/// Ask the orchestrator for a certificate until it answers (every 2 s: it may start later).
/// False when shut down first.
async fn enrol(
    opts: &HostOptions,
    token: &gopswarm_proto::signed::Token,
    signer: &gopswarm_proto::signed::Signer,
    verifier: &mut gopswarm_proto::signed::Verifier,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<bool> {
    let key = gopswarm_proto::signed::encode_public(&signer.public());
    // Logs in with the token: the host's key is not enrolled yet.
    let broker = opts
        .keys
        .broker(opts.broker.as_ref(), Some(token.broker_login(&opts.id)))?;
    let mut options = LinkOptions::new(broker, &gopswarm_proto::login::enrol_client_id(&opts.id));
    options.keep_alive = opts.keepalive;
    options.subscriptions = vec![(filters::host(&opts.id, "cert"), QoS::AtLeastOnce)];
    options.clean_session = true;
    let mut link = Link::start(options);
    let mut refusals = RefusalLog::new(&opts.id);
    let request = encode(&token.enrol(&opts.id, &signer.public()));
    let mut again = tokio::time::interval(Duration::from_secs(2));
    let enrolled = loop {
        tokio::select! {
            _ = shutdown.as_mut() => break false,
            _ = again.tick() => {
                tracing::info!("{}: enrolling with token {}", opts.id, token.id);
                let _ = link.client.publish(Topic::Enrol(opts.id.clone()).path(), QoS::AtLeastOnce, false, request.clone()).await;
            }
            ev = link.events.recv() => match ev {
                Some(LinkEvent::Message(p)) => match verifier.open(&p.topic, &p.payload) {
                    Ok(Inbound::Cert(c)) if c.host == opts.id && c.key == key => {
                        tracing::info!("{}: enrolled; the orchestrator certified this host's key", opts.id);
                        break true;
                    }
                    // An older certificate (a key this host replaced): wait for ours.
                    Ok(_) => {}
                    Err(e) => refusals.refused(&p.topic, &e),
                },
                Some(_) => {}
                None => bail!("enrolment: the broker link ended"),
            }
        }
    };
    let _ = link.client.disconnect().await;
    Ok(enrolled)
}

/// Run the host until `shutdown` resolves.
pub async fn run(opts: HostOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    crate::pipeline::init();
    if !valid_id(&opts.id) {
        bail!("host id {:?}: use 1-64 of [A-Za-z0-9._-]", opts.id);
    }
    // No keys and no --insecure: say so now, not after the join benchmark.
    if opts.keys.keys.is_none() && !opts.keys.insecure {
        opts.keys.dir()?;
    }
    let mut versions = this_build_versions(&gst::version_string());
    if let Some(v) = &opts.advertise_version {
        versions.agent = v.clone();
    }
    versions.encoders = encoder_versions();
    for pin in &opts.advertise_encoder {
        let (codec, version) = pin
            .split_once('=')
            .with_context(|| format!("--advertise-encoder {pin:?}: expected codec=version"))?;
        versions
            .encoders
            .insert(codec.to_string(), version.to_string());
    }
    let mut caps = capabilities(opts.max_tasks);
    caps.device_class = opts.device_class.clone();
    caps.interface = opts.interface.clone();
    caps.region = opts.region.clone();
    caps.bandwidth_mbps = opts.bandwidth_mbps;
    let profiles = if opts.bench_profiles.is_empty() {
        vec![DEFAULT_BENCH_PROFILE.to_string()]
    } else {
        opts.bench_profiles.clone()
    };
    let frames = opts.bench_frames;
    caps.bench = tokio::task::spawn_blocking(move || join_benchmark(&profiles, frames)).await?;
    for b in &caps.bench {
        tracing::info!(
            "{}: join benchmark {:.1} fps ({})",
            opts.id,
            b.fps,
            b.profile
        );
    }
    let metrics = std::sync::Arc::new(gopswarm_metrics::Registry::new());
    // Serves until the host returns (dropped with it).
    let _metrics_server = match opts.metrics_listen {
        Some(addr) => {
            let server = gopswarm_metrics::serve(metrics.clone(), addr).await?;
            let bound = server.local_addr();
            tracing::info!("{}: Prometheus metrics on http://{bound}/metrics", opts.id);
            Some(server)
        }
        None => None,
    };
    let srt = match &opts.srt_listen {
        Some(e) => Some(SrtServer::start(e, opts.keys.srt_passphrase()?.as_deref())?),
        None => None,
    };
    caps.srt_endpoint = opts.srt_listen.clone();
    tokio::pin!(shutdown);
    let Some((seal, mut open)) = keys(&opts, &mut shutdown).await? else {
        return Ok(());
    };
    let seal = std::sync::Arc::new(seal);
    let (host, v2, c2) = (opts.id.clone(), versions.clone(), caps.clone());
    let host2 = opts.id.clone();
    let broker = opts
        .keys
        .broker(opts.broker.as_ref(), seal.broker_login())?;
    let mut options = LinkOptions::new(broker, &gopswarm_proto::login::host_client_id(&opts.id));
    options.keep_alive = opts.keepalive;
    // Anybody can ask for resends: when behind, those are dropped (the merger asks again),
    // never an assignment or a command.
    options.droppable = Some(|topic| matches!(Topic::parse(topic), Some(Topic::Resend(..))));
    options.subscriptions = vec![
        (filters::host(&opts.id, "assignment"), QoS::AtLeastOnce),
        (filters::host(&opts.id, "cmd"), QoS::AtLeastOnce),
        (filters::host(&opts.id, "score"), QoS::AtLeastOnce),
        // Our own certificate: whether the orchestrator still knows the key we sign with.
        (filters::host(&opts.id, "cert"), QoS::AtLeastOnce),
        (format!("{ROOT}/stream/+/resend/+"), QoS::AtLeastOnce),
    ];
    let (birth_topic, death_topic) = (
        Topic::Birth(opts.id.clone()).path(),
        Topic::Death(opts.id.clone()).path(),
    );
    let (seal_b, seal_d, bt, dt) = (
        seal.clone(),
        seal.clone(),
        birth_topic.clone(),
        death_topic.clone(),
    );
    options.presence = Some(Presence {
        birth_topic,
        death_topic,
        birth: Box::new(move |seq| {
            let birth = Birth {
                host: host.clone(),
                seq,
                versions: v2.clone(),
                capabilities: c2.clone(),
            };
            seal_b.seal(&bt, encode(&birth))
        }),
        // Signed now, at connect: the broker publishes it for us when we are gone.
        death: Box::new(move |seq| {
            let death = Death {
                host: host2.clone(),
                seq,
            };
            seal_d.seal(&dt, encode(&death))
        }),
    });
    let mut link = Link::start(options);
    let (tx, mut chunks) = mpsc::unbounded_channel();
    let mut agent = Agent {
        id: opts.id.clone(),
        opts_cache_gops: opts.cache_gops,
        runners: BTreeMap::new(),
        tx,
        applied_revision: 0,
        applied_tasks: Vec::new(),
        orchestrator_epoch: 0,
        acks: HashMap::new(),
        pending_ready: Vec::new(),
        seq: 0,
        rejects: RejectCounters::default(),
        out: Vec::new(),
        cpu: CpuMeter {
            last_ticks: CpuMeter::ticks(),
            last_at: Instant::now(),
        },
        max_tasks: opts.max_tasks,
        freeze_after_commit: opts.freeze_after_commit,
        frozen: false,
        tcp: HashMap::new(),
        chunk_tls: match opts.keys.dir()? {
            Some(kd) => crate::chunk_tls::client_config(&kd)
                .map(Some)
                .map_err(|e| format!("{e:#}")),
            None => Ok(None),
        },
        srt,
        finished: Default::default(),
        throttle_fps: opts.throttle_fps,
        psnr_every: opts.psnr_every,
        score: None,
        failed_tasks: 0,
        gops_sent_total: 0,
        metrics,
        refused: Vec::new(),
        refused_total: 0,
        refused_unpublished: false,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut beat = tokio::time::interval(opts.keepalive / 2);
    let mut refusals = RefusalLog::new(&opts.id);
    // The key this host signs with, and whether the orchestrator's certificate names it (None:
    // no certificate seen yet). Without one the orchestrator refuses everything this host
    // sends (its enrolment records lost, or the key replaced): say so instead of running deaf.
    let own_key = match seal.as_ref() {
        Seal::Signed(s) => Some(gopswarm_proto::signed::encode_public(&s.public())),
        Seal::Plain => None,
    };
    let mut certified: Option<bool> = None;
    let cert_deadline = Instant::now() + Duration::from_secs(10);
    let mut cert_warned = false;
    loop {
        if own_key.is_some()
            && certified.is_none()
            && !cert_warned
            && Instant::now() > cert_deadline
        {
            cert_warned = true;
            tracing::error!(
                "{}: no certificate for this host's key on the broker after 10 s; the orchestrator refuses what it sends until it is enrolled again (gopswarm init DIR --token-for {})",
                agent.id,
                agent.id
            );
        }
        let mut raw: Vec<(Dest, Vec<u8>)> = Vec::new();
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => agent.poll_runners(),
            _ = beat.tick() => {
                let hb = agent.heartbeat();
                if let Err(e) = agent.export(&hb) {
                    tracing::error!("{}: metrics: {e:#}", agent.id);
                }
                agent.publish(Topic::Heartbeat(agent.id.clone()), &hb, false);
            }
            Some(c) = chunks.recv() => {
                if let Some(p) = agent.on_chunk(c, &seal) { raw.push(p); }
            }
            ev = link.events.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    LinkEvent::Connected { seq, session_present } => {
                        tracing::info!("{}: connected (seq {seq}, session present {session_present})", agent.id);
                        agent.seq = seq;
                    }
                    LinkEvent::Disconnected { error, retry_in } => {
                        tracing::warn!("{}: broker connection lost ({error}); retry in {retry_in:?}", agent.id);
                    }
                    LinkEvent::Message(p) => match open.open(&p.topic, &p.payload) {
                        Ok(Inbound::Assignment(a)) if a.host == agent.id => agent.on_assignment(a),
                        Ok(Inbound::AssignmentCleared(_)) => {}
                        Ok(Inbound::Command(h, c)) if h == agent.id => agent.on_command(c),
                        Ok(Inbound::Cert(c)) if c.host == agent.id => {
                            let ours = own_key.as_deref() == Some(c.key.as_str());
                            if !ours && own_key.is_some() {
                                tracing::error!("{}: the orchestrator certifies another key for this host, so it refuses what this host sends; enrol again with a token made for it (gopswarm init DIR --token-for {})", agent.id, agent.id);
                            }
                            certified = Some(ours);
                        }
                        Ok(Inbound::Score(s)) if s.host == agent.id => {
                            agent.score = Some(ScoreEcho { stability: s.stability, fitness: s.fitness, tier: s.tier });
                        }
                        Ok(Inbound::Resend(r)) => {
                            if let Some(run) = agent.runners.get(&(r.stream.clone(), r.profile.clone())) {
                                for (g, bytes) in &run.cache {
                                    if r.gops.contains(g) {
                                        raw.push((agent.dest(&r.stream, &r.profile), bytes.clone()));
                                    }
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(reject) => {
                            agent.rejects.count(&reject);
                            refusals.refused(&p.topic, &reject);
                        }
                    },
                }
            }
        }
        // Retire pipelines whose drain finished.
        let done: Vec<(String, String)> = agent
            .runners
            .iter()
            .filter(|(_, r)| r.finishing && r.ended)
            .map(|(k, _)| k.clone())
            .collect();
        for (s, p) in done {
            let epoch = agent.runners[&(s.clone(), p.clone())].task.layout_epoch;
            agent.finished.insert((s.clone(), p.clone(), epoch));
            agent.drop_task(&s, &p);
        }
        for (topic, payload, retain) in std::mem::take(&mut agent.out) {
            let payload = seal.seal(&topic, payload);
            let _ = link
                .client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await;
        }
        for (dest, payload) in raw {
            match dest {
                Dest::Mqtt(topic) => {
                    let _ = link
                        .client
                        .publish(topic, QoS::AtLeastOnce, false, payload)
                        .await;
                }
                Dest::Tcp(addr) => agent.send_tcp(&addr, &payload),
                Dest::Srt => match &agent.srt {
                    Some(srv) => {
                        let _ = srv.src.push_buffer(gst::Buffer::from_mut_slice(payload));
                    }
                    None => tracing::error!(
                        "{}: a task sends chunks over SRT but the host has no --srt-listen",
                        agent.id
                    ),
                },
            }
        }
    }
    for r in agent.runners.values() {
        r.stop();
    }
    let _ = link.client.disconnect().await;
    Ok(())
}
