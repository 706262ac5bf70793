// SPDX-License-Identifier: MPL-2.0
//! `gopswarm merge`: the merger of one (stream, profile). Takes the hosts' chunks from MQTT
//! (or from TCP or SRT partial streams), checks each one's signature against its host's
//! certificate, fences them with the layout history (a chunk whose epoch is older than the
//! epoch in force at its GOP is refused: a stale holder adds nothing; so is one from a host
//! that holds no slot at that GOP), drops duplicates, asks hosts to resend GOPs it misses, and
//! runs
//!
//! ```text
//! appsrc ! partialdepay ! gopmerge ! tee ! h264parse ! mp4mux ! filesink
//!                                      tee ! h264parse ! hlssink2
//! ```
//!
//! It ends when a host reports the source's end and every GOP up to it is out (or given up
//! after the latency), and prints a summary: GOPs per host, fenced, duplicates, lost GOPs.

use crate::options::{parse_broker, parse_seconds};
use anyhow::{Context, Result, bail};
use gopswarm_proto::link::{BrokerUrl, Link, LinkEvent, LinkOptions, QoS};
use gopswarm_proto::*;
use gst::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A merger's options: its `gopswarm merge` command line (one definition for parsing and use).
#[derive(Debug, Clone, clap::Args)]
pub struct MergeOptions {
    #[arg(long, value_parser = parse_broker, help = crate::options::BROKER_HELP)]
    pub broker: Option<BrokerUrl>,
    #[arg(long)]
    pub stream: String,
    #[arg(long)]
    pub profile: String,
    /// Output prefix: writes OUT.mp4 and OUT-hls/
    #[arg(long)]
    pub out: PathBuf,
    /// Wait for a missing GOP this many GOPs before reporting it lost
    #[arg(long, default_value_t = 6)]
    pub latency_gops: u64,
    /// Check each GOP before it goes out: none, parse (H.264 structure, SPS size), decode
    /// (parse, then decode with openh264dec: garbage slices are caught; costs about a decoder's
    /// CPU per profile). A GOP that fails is dropped and reported, a good copy takes its place
    #[arg(long, default_value = "decode", value_parser = ["none", "parse", "decode"])]
    pub verify_payload: String,
    /// Finish when nothing arrived for this many seconds
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    pub idle_timeout: Duration,
    /// Write the summary as JSON here
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Also take partial streams over TCP here (tcp://host:port), from any number of hosts:
    /// over TLS with the mergers' certificate (merger/tls.pem under --keys, names from
    /// `gopswarm init --merger-name`), plain with --insecure
    #[arg(long)]
    pub listen: Option<String>,
    /// Call the hosts' SRT listeners for their partial streams (streams added with
    /// --chunks srt; hosts run with --srt-listen), decrypted with srt.passphrase from --keys
    #[arg(long)]
    pub pull_srt: bool,
    /// Serve Prometheus metrics (GOPs in and out, lost, fenced, duplicates) at
    /// http://ADDR/metrics
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    // Progress lines on stderr: on for `gopswarm merge`, off where the caller prints its own.
    #[arg(skip = true)]
    pub progress: bool,
    #[command(flatten)]
    pub keys: crate::options::KeyOptions,
    /// Merger key that signs resend requests (mergers/NAME.key under --keys)
    #[arg(long, default_value = gopswarm_proto::keys::DEFAULT_MERGER)]
    pub merger_name: String,
}

/// The merger's counters as Prometheus metrics.
fn export(
    m: &gopswarm_metrics::Registry,
    stream: &str,
    profile: &str,
    stats: &BTreeMap<String, u64>,
    summary: &MergeSummary,
) -> Result<()> {
    let labels = ["stream", "profile"];
    let values = [stream, profile];
    for (key, name, help) in [
        (
            "gops-out",
            "gopswarm_merge_gops_out_total",
            "GOPs merged into the output",
        ),
        (
            "lost",
            "gopswarm_merge_lost_gops_total",
            "GOPs given up as lost",
        ),
        (
            "chunks-in",
            "gopswarm_merge_chunks_in_total",
            "Chunks taken in",
        ),
        (
            "duplicates",
            "gopswarm_merge_duplicates_total",
            "Duplicate chunks dropped",
        ),
        (
            "corrupt",
            "gopswarm_merge_corrupt_total",
            "Corrupt chunks dropped",
        ),
        (
            "rejected",
            "gopswarm_merge_rejected_total",
            "GOP copies refused: their payload did not parse or decode",
        ),
        (
            "recovered",
            "gopswarm_merge_recovered_total",
            "GOPs recovered from parity",
        ),
        (
            "redundant-used",
            "gopswarm_merge_redundant_used_total",
            "GOPs taken from a redundant copy",
        ),
        (
            "overflow",
            "gopswarm_merge_overflow_total",
            "Chunks dropped to stay within the bytes the merger may hold",
        ),
    ] {
        m.counter(name, help, &labels)?
            .set(&values, stats.get(key).copied().unwrap_or(0) as f64)?;
    }
    // Refused by this daemon before the element, or by the element itself.
    for (key, own, name, help) in [
        (
            "oversized",
            summary.oversized,
            "gopswarm_merge_oversized_total",
            "Chunks refused for being larger than the profile's bitrate allows",
        ),
        (
            "bad-signature",
            summary.bad_signature,
            "gopswarm_merge_bad_signature_total",
            "Chunks refused for a missing or wrong signature",
        ),
        (
            "not-in-layout",
            summary.not_in_layout,
            "gopswarm_merge_not_in_layout_total",
            "Chunks refused from a host that does not hold their GOP's slot",
        ),
        (
            "too-far-ahead",
            summary.too_far_ahead,
            "gopswarm_merge_too_far_ahead_total",
            "Chunks refused for a GOP too far past the newest one taken",
        ),
    ] {
        let total = own + stats.get(key).copied().unwrap_or(0);
        m.counter(name, help, &labels)?.set(&values, total as f64)?;
    }
    m.counter(
        "gopswarm_merge_fenced_stale_total",
        "Chunks refused for a stale layout epoch",
        &labels,
    )?
    .set(&values, summary.fenced_stale as f64)?;
    Ok(())
}

/// Call a host's SRT listener and feed its partial stream to `tx`, reconnecting until `stop`.
fn pull_srt(
    host: String,
    endpoint: String,
    tx: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    passphrase: Option<String>,
) {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        // The endpoint came in a host's birth: parsed strictly, the pipeline built from typed
        // elements (a crafted endpoint cannot add elements).
        let endpoint = match gopswarm_proto::check_srt_endpoint(&endpoint) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("merge: {host}: {e}");
                return;
            }
        };
        let caller = || -> Result<(gst::Pipeline, gst_app::AppSink)> {
            use crate::pipeline::make;
            let src = make(
                "srtsrc",
                &[
                    (
                        "uri",
                        format!("srt://{}:{}?mode=caller", endpoint.host, endpoint.port).to_value(),
                    ),
                    ("latency", 200i32.to_value()),
                ],
            )?;
            crate::pipeline::srt_encryption(&src, passphrase.as_deref());
            let out = make("appsink", &[("sync", false.to_value())])?;
            let pipeline = crate::pipeline::chain(&[src, out.clone()])?;
            Ok((pipeline, crate::pipeline::downcast(&out)))
        };
        while !stop.load(Ordering::Relaxed) {
            let (pipeline, sink) = match caller() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("merge: SRT pipeline for {host}: {e:#}");
                    return;
                }
            };
            let _ = pipeline.set_state(gst::State::Playing);
            let mut deframer = gopswarm_chunk::Deframer::default();
            let bus = pipeline.bus().unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) {
                    if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                        deframer.push(map.as_slice());
                    }
                    while let Some(c) = deframer.next_chunk() {
                        if tx.send(c.into_bytes()).is_err() {
                            let _ = pipeline.set_state(gst::State::Null);
                            return;
                        }
                    }
                } else if sink.is_eos() || bus.pop_filtered(&[gst::MessageType::Error]).is_some() {
                    break;
                }
            }
            let _ = pipeline.set_state(gst::State::Null);
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

/// Accept partial streams over TCP (over TLS with `tls`); every complete chunk goes to `tx`.
fn listen_tcp(
    addr: &str,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    tx: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
) -> Result<()> {
    let addr = addr
        .strip_prefix("tcp://")
        .with_context(|| format!("--listen {addr:?}: expected tcp://host:port"))?;
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let peer = conn.peer_addr().map_or("?".to_string(), |a| a.to_string());
            // A thread per connection, so a bounded number of them; and a client that says
            // nothing (no TLS handshake, no chunk) for longer than any GOP is let go.
            if open.load(std::sync::atomic::Ordering::Relaxed) >= MAX_TCP_CONNECTIONS {
                tracing::warn!(
                    "merge: partial stream from {peer} refused: {MAX_TCP_CONNECTIONS} connections open"
                );
                continue;
            }
            let _ = conn.set_read_timeout(Some(TCP_IDLE_TIMEOUT));
            let Ok(mut conn) = crate::chunk_tls::server(tls.as_ref(), conn) else {
                continue;
            };
            let tx = tx.clone();
            let open = open.clone();
            open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::thread::spawn(move || {
                use std::io::Read;
                struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>);
                impl Drop for Counted {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                let _counted = Counted(open);
                let mut deframer = gopswarm_chunk::Deframer::default();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) => break,
                        Err(e) => {
                            // A host that went away, or a client that does not speak TLS.
                            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                                tracing::warn!("merge: partial stream from {peer}: {e}");
                            }
                            break;
                        }
                        Ok(n) => {
                            deframer.push(&buf[..n]);
                            while let Some(c) = deframer.next_chunk() {
                                if tx.send(c.into_bytes()).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
                let s = deframer.stats();
                if s.corrupt > 0 || s.bytes_skipped > 0 {
                    tracing::warn!(
                        "merge: a TCP partial stream had {} corrupt chunks, {} bytes skipped",
                        s.corrupt,
                        s.bytes_skipped
                    );
                }
            });
        }
    });
    Ok(())
}

/// Partial streams over TCP open at once, at most (hosts of every stream this merger takes).
const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP partial stream silent this long is closed: longer than the longest GOP a stream may
/// have, so a live host always sends within it (and reconnects if it was closed).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(2 * (MAX_GOP_NS / 1_000_000_000));

/// GOPs past the next one to output that a chunk may be for.
const MAX_AHEAD_GOPS: u64 = 128;
/// A GOP's chunk may be this many times what the profile's bitrate gives a GOP (keyframes,
/// rate control overshoot, framing) ...
const CHUNK_BYTES_MARGIN: u64 = 8;
/// ... and never less than this.
const MIN_MAX_CHUNK_BYTES: u64 = 1024 * 1024;

/// The largest chunk a profile can honestly produce for a GOP: its bitrate over the GOP plus
/// the decoder buffer (an IDR may fill it), times a margin. 0 (no limit beyond the wire
/// format's) for plain CRF, which has no bitrate cap, and for a profile not found.
fn max_chunk_bytes(def: &StreamDef, profile: &str) -> u64 {
    use gstgopswarm::profile::RateControl;
    let Some(spec) = def.profiles.iter().find(|p| p.id == profile) else {
        return 0;
    };
    match crate::pipeline::check_profile(&spec.spec) {
        Ok(p) if p.bitrate > 0 && p.rate_control != RateControl::Crf => {
            let span_ns = u128::from(def.gop_ns) + u128::from(p.vbv_buffer_ms) * 1_000_000;
            let bytes = u128::from(p.bitrate) * 125 * span_ns / 1_000_000_000;
            u64::try_from(bytes.saturating_mul(u128::from(CHUNK_BYTES_MARGIN)))
                .unwrap_or(u64::MAX)
                .max(MIN_MAX_CHUNK_BYTES)
        }
        _ => 0,
    }
}

/// Who a chunk the layout allows came from.
#[derive(Debug, PartialEq, Eq)]
enum Sender {
    /// A host of the layout, for a GOP its slot encodes.
    Slot,
    /// A redundant copy from a host the layout does not name: a backup (copy-only bronze
    /// host, not in layouts). Used only when the primary is missing or fails its check, and
    /// never taken as the GOP being here (the merger still asks for the primary).
    Backup,
}

/// Whether `host` encodes GOP `g` in layout epoch `e`: as the primary (GOP mod slots, as
/// `gopselect` deals them) or as one of the `redundancy` copies (the slots after it).
fn encodes(e: &LayoutEpoch, g: u64, host: &str, primary_only: bool) -> bool {
    let slots = e.hosts.len() as u64;
    if slots == 0 {
        return false;
    }
    let owner = g % slots;
    let copies = if primary_only {
        0
    } else {
        u64::from(e.redundancy).min(slots - 1)
    };
    (0..=copies).any(|j| e.hosts[((owner + j) % slots) as usize] == host)
}

/// Whether the layout lets a chunk's host send it: a primary GOP only from the host of the
/// slot it falls to in the layout in force at it; a redundant copy from a host holding one of
/// its copy slots, or from a host the layout does not name (a backup); parity only over GOPs
/// its sender encodes as the primary, each in the layout in force at that GOP (a rebuilt GOP
/// goes out at once, as a primary would: a copy holder must not stand in for the primary that
/// way; the swarm's hosts send no parity, `gst-launch-1.0` pipelines do). `payload` is the
/// chunk's (for a parity chunk's members).
fn may_send(
    layout: &Layout,
    header: &gopswarm_chunk::ChunkHeader,
    payload: &[u8],
) -> Result<Sender, &'static str> {
    let host = header.host_id.as_str();
    let g = header.gop_index;
    let in_force = layout.epoch_at(g).ok_or("before the layout")?;
    if header.is_parity() {
        if header.is_redundant() {
            return Err("marked both parity and a redundant copy");
        }
        let (info, _) =
            gopswarm_chunk::ParityInfo::decode(payload).map_err(|_| "unreadable parity")?;
        for &(m, _) in &info.members {
            let e = layout
                .epoch_at(m)
                .ok_or("parity over a GOP before the layout")?;
            if !encodes(e, m, host, true) {
                return Err("parity over a GOP it does not encode");
            }
        }
        return Ok(Sender::Slot);
    }
    if header.is_redundant() {
        let slots = in_force.hosts.len() as u64;
        return if !in_force.hosts.iter().any(|h| h == host) {
            // A host outside the layout: only a backup the epoch names for this GOP's slot.
            let named = slots > 0
                && in_force
                    .backups
                    .iter()
                    .any(|b| b.host == host && u64::from(b.slot) == g % slots);
            if named {
                Ok(Sender::Backup)
            } else {
                Err("not a backup of the GOP's slot")
            }
        } else if encodes(in_force, g, host, false) {
            Ok(Sender::Slot)
        } else {
            Err("holds no copy slot of the GOP")
        };
    }
    if encodes(in_force, g, host, true) {
        Ok(Sender::Slot)
    } else if in_force.hosts.iter().any(|h| h == host) {
        Err("the GOP falls to another slot")
    } else {
        Err("holds no slot")
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct MergeSummary {
    pub stream: String,
    pub profile: String,
    pub first_gop: Option<u64>,
    pub last_gop: Option<u64>,
    pub chunks_in: u64,
    pub gops_by_host: BTreeMap<String, u64>,
    pub fenced_stale: u64,
    pub duplicates: u64,
    pub corrupt: u64,
    pub resend_requests: u64,
    pub lost_gops: Vec<u64>,
    /// Copies of GOPs the merger refused because their payload did not parse or decode.
    pub rejected: Vec<RejectedGop>,
    /// gopmerge's own counters.
    pub merger: BTreeMap<String, u64>,
    pub layout_epochs: u64,
    pub mp4: PathBuf,
    pub hls: PathBuf,
    pub rejected_payloads: u64,
    /// Chunks larger than the profile's bitrate allows for a GOP (with a wide margin).
    pub oversized: u64,
    /// Chunks for GOPs too far past the output (forged or from a runaway host).
    pub too_far_ahead: u64,
    /// Chunks refused for a missing or wrong signature (or from a host not enrolled).
    pub bad_signature: u64,
    /// Chunks refused because their host does not hold their GOP's slot in the layout.
    pub not_in_layout: u64,
    /// Every chunk that went into the merger, in arrival order.
    pub chunks: Vec<ChunkSeen>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RejectedGop {
    pub gop: u64,
    pub host: String,
    /// `invalid-payload` or `undecodable`.
    pub reason: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkSeen {
    pub gop: u64,
    pub host: String,
    pub epoch: u64,
    pub frames: u32,
    pub short: bool,
}

struct Merger {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    merge: gst::Element,
}

impl Merger {
    fn start(
        out: &std::path::Path,
        start_gop: u64,
        latency: u64,
        gop_ns: u64,
        max_chunk_bytes: u64,
        verify_payload: &str,
    ) -> Result<Merger> {
        crate::pipeline::prepare_out(out)?;
        let mp4 = format!("{}.mp4", out.display());
        let hls = format!("{}-hls", out.display());
        use crate::pipeline::{chain, make};
        let src = make(
            "appsrc",
            &[
                ("is-live", false.to_value()),
                ("max-bytes", 0u64.to_value()),
                (
                    "caps",
                    gst::Caps::new_empty_simple("application/x-gopswarm-stream").to_value(),
                ),
            ],
        )?;
        src.set_property_from_str("format", "time");
        let merge = make(
            "gopmerge",
            &[
                ("inputs-by-host", true.to_value()),
                ("start-gop", start_gop.to_value()),
                ("latency", latency.to_value()),
                ("max-ahead-gops", MAX_AHEAD_GOPS.to_value()),
                ("max-chunk-bytes", max_chunk_bytes.to_value()),
            ],
        )?;
        // A GOP whose payload does not decode is dropped and reported (`gopswarm-rejected`, and
        // a gap unless a redundant copy is good) instead of reaching the outputs.
        merge.set_property_from_str("verify-payload", verify_payload);
        let tee = make("tee", &[])?;
        let pipeline = chain(&[
            src.clone(),
            make("partialdepay", &[])?,
            merge.clone(),
            tee.clone(),
        ])
        .context("merger pipeline")?;
        let mp4_sink = make("filesink", &[("location", mp4.to_value())])?;
        mp4_sink.set_property_from_str("buffer-mode", "unbuffered");
        let mp4_branch = [
            make("queue", &[])?,
            make("h264parse", &[])?,
            // Fragmented: after a crash (SIGKILL) the file plays up to the last whole fragment
            // instead of having no `moov` at all. A fragment closes at a keyframe once this
            // long has passed: two GOPs, so a GOP a little longer than the grid (29.97 fps on
            // a 2 s grid) is never split. Unbuffered, so what was muxed is in the file.
            make(
                "mp4mux",
                &[(
                    "fragment-duration",
                    (u32::try_from(gop_ns.saturating_mul(2) / 1_000_000).unwrap_or(u32::MAX))
                        .max(1)
                        .to_value(),
                )],
            )?,
            mp4_sink,
        ];
        let hls_branch = [
            make("queue", &[])?,
            make("h264parse", &[])?,
            make(
                "hlssink2",
                &[
                    (
                        "target-duration",
                        ((gop_ns / 1_000_000_000).max(1) as u32).to_value(),
                    ),
                    ("playlist-length", 0u32.to_value()),
                    ("max-files", 0u32.to_value()),
                    ("location", format!("{hls}/segment%05d.ts").to_value()),
                    ("playlist-location", format!("{hls}/index.m3u8").to_value()),
                ],
            )?,
        ];
        for branch in [&mp4_branch[..], &hls_branch[..]] {
            pipeline.add_many(branch).context("merger outputs")?;
            gst::Element::link_many(branch).context("merger outputs")?;
            tee.link(&branch[0]).context("merger outputs")?;
        }
        let src = crate::pipeline::downcast::<gst_app::AppSrc>(&src);
        pipeline.set_state(gst::State::Playing)?;
        Ok(Merger {
            pipeline,
            src,
            merge,
        })
    }

    fn stats(&self) -> BTreeMap<String, u64> {
        let st = self.merge.property::<gst::Structure>("stats");
        st.iter()
            .filter_map(|(k, v)| v.get::<u64>().ok().map(|v| (k.to_string(), v)))
            .collect()
    }
}

/// Run until the stream ended (or `shutdown`), then finalize the outputs.
pub async fn run(
    opts: MergeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<MergeSummary> {
    crate::pipeline::init();
    let (seal, mut open) = opts
        .keys
        .seal_and_open(gopswarm_proto::signed::Principal::Merger(
            opts.merger_name.clone(),
        ))?;
    let broker = opts
        .keys
        .broker(opts.broker.as_ref(), seal.broker_login())?;
    let mut options = LinkOptions::new(
        broker,
        &format!("gopswarm-merge-{}-{}", opts.stream, opts.profile),
    );
    options.manual_acks = true;
    options.subscriptions = ["chunks", "layout", "end"]
        .iter()
        .map(|l| {
            (
                filters::stream(&opts.stream, l, &opts.profile),
                QoS::AtLeastOnce,
            )
        })
        .chain([
            (
                Topic::StreamDef(opts.stream.clone()).path(),
                QoS::AtLeastOnce,
            ),
            // Certificates first: their retained copies arrive before the births they check.
            (filters::all_hosts("cert"), QoS::AtLeastOnce),
            (filters::all_hosts("death"), QoS::AtLeastOnce),
            (filters::all_hosts("birth"), QoS::AtLeastOnce),
        ])
        .collect();
    // Retained births that came before their host's certificate (the broker need not send
    // retained messages in subscription order): opened again once it arrives.
    let mut before_cert: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
    let mut link = Link::start(options);
    let (tcp_tx, mut tcp_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    if let Some(addr) = &opts.listen {
        let tls = match opts.keys.dir()? {
            Some(kd) => Some(crate::chunk_tls::server_config(&kd)?),
            None => None,
        };
        listen_tcp(addr, tls, tcp_tx.clone())?;
    }
    let srt_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let srt_passphrase = if opts.pull_srt {
        opts.keys.srt_passphrase()?
    } else {
        None
    };
    let mut srt_endpoints: BTreeMap<String, String> = BTreeMap::new();
    // Latest birth seq per host: a death of an older connection is stale (the orchestrator
    // applies the same rule), and must not make the merger stop waiting for a live host.
    let mut birth_seq: BTreeMap<String, u64> = BTreeMap::new();
    let mut srt_pulled: BTreeSet<String> = BTreeSet::new();
    let rejects = RejectCounters::default();
    let mut refusals = RefusalLog::new("merge");
    let chunk_topic = Topic::Chunks(opts.stream.clone(), opts.profile.clone()).path();
    let mut summary = MergeSummary {
        stream: opts.stream.clone(),
        profile: opts.profile.clone(),
        mp4: PathBuf::from(format!("{}.mp4", opts.out.display())),
        hls: PathBuf::from(format!("{}-hls", opts.out.display())),
        ..Default::default()
    };
    let mut layout: Option<Layout> = None;
    let mut gop_ns: u64 = 0;
    let mut chunk_limit: u64 = 0;
    let mut frontier: Option<u64> = None;
    let mut merger: Option<Merger> = None;
    let mut seen: HashSet<(String, u64, bool)> = HashSet::new();
    let mut have: BTreeSet<u64> = BTreeSet::new();
    let mut primaries: BTreeSet<u64> = BTreeSet::new();
    let mut asked: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut end_gop: Option<u64> = None;
    let mut end_seen_at: Option<Instant> = None;
    let mut last_arrival: Option<Instant> = None;
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut last_report = Instant::now();
    let registry = std::sync::Arc::new(gopswarm_metrics::Registry::new());
    // Serves until the merger returns (dropped with it).
    let _metrics_server = match opts.metrics_listen {
        Some(addr) => {
            let server = gopswarm_metrics::serve(registry.clone(), addr).await?;
            let bound = server.local_addr();
            tracing::info!("merge: Prometheus metrics on http://{bound}/metrics");
            Some(server)
        }
        None => None,
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                refusals.flush();
                if let Some(m) = &merger {
                    let bus = m.pipeline.bus().expect("a pipeline has a bus");
                    while let Some(msg) = bus.pop() {
                        if take_bus_message(&msg, &mut summary)? {
                            bail!("merger pipeline ended before its input");
                        }
                    }
                }
                if opts.metrics_listen.is_some()
                    && let Some(m) = &merger
                    && let Err(e) = export(&registry, &opts.stream, &opts.profile, &m.stats(), &summary)
                {
                    tracing::error!("merge: metrics: {e:#}");
                }
                let Some(l) = &layout else { continue };
                let Some(first) = l.history.first() else { continue };
                if gop_ns == 0 { continue }
                let gop_dur = Duration::from_nanos(gop_ns);
                // Missing GOPs with later ones here: ask the hosts again (once per GOP time).
                if let Some(&top) = have.iter().next_back() {
                    let missing: Vec<u64> = (first.from_gop..top.saturating_sub(1))
                        .filter(|g| !have.contains(g))
                        .filter(|g| asked.get(g).is_none_or(|t| t.elapsed() > gop_dur))
                        .take(64)
                        .collect();
                    if !missing.is_empty() {
                        for g in &missing {
                            asked.insert(*g, Instant::now());
                        }
                        summary.resend_requests += 1;
                        let msg = Resend { stream: opts.stream.clone(), profile: opts.profile.clone(), gops: missing };
                        let topic = Topic::Resend(opts.stream.clone(), opts.profile.clone()).path();
                        let payload = seal.seal(&topic, encode(&msg));
                        let _ = link.client.publish(topic, QoS::AtLeastOnce, false, payload).await;
                    }
                }
                if opts.progress && last_report.elapsed() > Duration::from_secs(5) {
                    last_report = Instant::now();
                    eprintln!("merge {}/{}: {} GOPs in (up to {}), {} fenced, {} duplicates",
                        opts.stream, opts.profile, have.len(), crate::daemon::number_or_dash(have.iter().next_back()), summary.fenced_stale, summary.duplicates);
                }
                let complete = end_gop.is_some_and(|e| (first.from_gop..=e).all(|g| have.contains(&g)));
                let waited = end_seen_at.is_some_and(|t| t.elapsed() > gop_dur * opts.latency_gops as u32 + Duration::from_secs(2));
                let idle = last_arrival.is_some_and(|t| t.elapsed() > opts.idle_timeout);
                if complete || waited || idle {
                    if idle && end_gop.is_none() {
                        eprintln!("merge: nothing for {:?}; finishing", opts.idle_timeout);
                    }
                    break;
                }
            }
            Some(bytes) = tcp_rx.recv() => held.push(bytes),
            ev = link.events.recv() => {
                let Some(ev) = ev else { break };
                let LinkEvent::Message(p) = ev else { continue };
                let mut opened = open.open(&p.topic, &p.payload);
                if let Err(Reject::BadSignature(why)) = &opened
                    && why.ends_with("is not enrolled")
                    && let Some(Topic::Birth(h)) = Topic::parse(&p.topic)
                    && (before_cert.len() < 1024 || before_cert.contains_key(&h))
                {
                    before_cert.insert(h, (p.topic.clone(), p.payload.to_vec()));
                }
                if let Ok(Inbound::Cert(c)) = &opened
                    && let Some((topic, payload)) = before_cert.remove(&c.host)
                    && let Ok(Inbound::Birth(b)) = open.open(&topic, &payload)
                {
                    opened = Ok(Inbound::Birth(b));
                }
                match opened {
                    Ok(Inbound::Layout(l)) => {
                        // Longer histories only, and none from an orchestrator a standby has
                        // taken over from (fencing).
                        // A newer orchestrator's layout wins whatever its length.
                        if layout.as_ref().is_none_or(|old| {
                            old.orchestrator_epoch < l.orchestrator_epoch
                                || (old.orchestrator_epoch == l.orchestrator_epoch
                                    && old.history.len() <= l.history.len())
                        }) {
                            summary.layout_epochs = l.history.len() as u64;
                            layout = Some(l);
                        }
                    }
                    Ok(Inbound::StreamDef(d)) => {
                        gop_ns = d.gop_ns;
                        chunk_limit = max_chunk_bytes(&d, &opts.profile);
                    }
                    Ok(Inbound::Birth(b)) => {
                        let seq = birth_seq.entry(b.host.clone()).or_insert(b.seq);
                        *seq = (*seq).max(b.seq);
                        if let Some(e) = b.capabilities.srt_endpoint {
                            srt_endpoints.insert(b.host, e);
                        }
                    }
                    Ok(Inbound::Death(d)) if birth_seq.get(&d.host).is_some_and(|&live| d.seq < live) => {
                        tracing::info!("merge: ignoring stale death of {} (seq {} < live seq {})", d.host, d.seq, birth_seq[&d.host]);
                    }
                    Ok(Inbound::Death(d)) => {
                        // A dead host sends nothing more: settle its GOPs now (copies or gaps).
                        if let Some(m) = &merger
                            && summary.gops_by_host.keys().any(|h| h.split(' ').next() == Some(d.host.as_str()))
                        {
                            tracing::info!("merge: {} died; not waiting for it", d.host);
                            m.merge.emit_by_name::<()>("end-input", &[&d.host]);
                        }
                    }
                    // Only a host of the stream's layout reports its end.
                    Ok(Inbound::StreamEnd(e)) if layout.as_ref().is_none_or(|l| !l.history.iter().any(|x| x.hosts.contains(&e.host))) => {
                        let reject = Reject::Invalid(format!("stream end from {}, a host not in the layout", e.host));
                        rejects.count(&reject);
                        refusals.refused(&p.topic, &reject);
                    }
                    Ok(Inbound::StreamEnd(e)) => {
                        end_gop = Some(end_gop.map_or(e.last_gop, |g: u64| g.max(e.last_gop)));
                        end_seen_at.get_or_insert_with(Instant::now);
                    }
                    Ok(Inbound::Chunk { bytes, .. }) => held.push(bytes),
                    Ok(_) => {}
                    Err(reject) => {
                        rejects.count(&reject);
                        refusals.refused(&p.topic, &reject);
                    }
                }
                // Acknowledge only once handled (held chunks are handled below).
                let _ = link.client.ack(&p).await;
            }
        }
        // Chunks go in once the layout (and so the start GOP) is known.
        let Some(l) = &layout else { continue };
        if opts.pull_srt {
            for h in l.history.iter().flat_map(|e| e.hosts.iter()) {
                if !srt_pulled.contains(h)
                    && let Some(e) = srt_endpoints.get(h)
                {
                    tracing::info!("merge: pulling {h}'s partial stream from {e}");
                    pull_srt(
                        h.clone(),
                        e.clone(),
                        tcp_tx.clone(),
                        srt_stop.clone(),
                        srt_passphrase.clone(),
                    );
                    srt_pulled.insert(h.clone());
                }
            }
        }
        if gop_ns == 0 || l.history.is_empty() {
            continue;
        }
        if merger.is_none() {
            let first = &l.history[0];
            let latency = gop_ns.saturating_mul(opts.latency_gops);
            merger = Some(Merger::start(
                &opts.out,
                first.from_gop,
                latency,
                gop_ns,
                chunk_limit,
                &opts.verify_payload,
            )?);
            summary.first_gop = Some(first.from_gop);
        }
        let m = merger.as_ref().unwrap();
        if let Ok(next) = u64::try_from(m.merge.property::<i64>("next-gop")) {
            // Repeats of GOPs already out are dropped by gopmerge as late.
            seen.retain(|(_, g, _)| *g >= next);
        }
        for bytes in held.drain(..) {
            // Bounds first, before anything is recorded: a forged chunk must not make a real
            // one look like a repeat.
            if chunk_limit > 0 && bytes.len() as u64 > chunk_limit {
                summary.oversized += 1;
                tracing::warn!(
                    "merge: chunk of {} bytes over the profile's {chunk_limit}: refused",
                    bytes.len()
                );
                continue;
            }
            let header = match gopswarm_chunk::parse_ref(&bytes) {
                Ok((h, _)) => h,
                Err(e) => {
                    summary.corrupt += 1;
                    tracing::warn!("merge: corrupt chunk refused: {e}");
                    continue;
                }
            };
            // Everything that needs no signature check first: a flood of chunks that fail
            // them costs no hashing, and nothing is recorded before the signature holds.
            if header.stream_id != opts.stream || header.profile_id != opts.profile {
                summary.not_in_layout += 1;
                let reject = Reject::Invalid(format!(
                    "a chunk of {}/{} from {}",
                    header.stream_id, header.profile_id, header.host_id
                ));
                rejects.count(&reject);
                refusals.refused(&chunk_topic, &reject);
                continue;
            }
            let g = header.gop_index;
            let Some(in_force) = l.epoch_at(g) else {
                continue;
            };
            // The window follows the newest GOP taken (the first chunk sets it), so a merger
            // started late takes the GOPs of now.
            if frontier.is_some_and(|f: u64| g > f.saturating_add(MAX_AHEAD_GOPS)) {
                summary.too_far_ahead += 1;
                continue;
            }
            if header.epoch < in_force.epoch {
                summary.fenced_stale += 1;
                tracing::info!(
                    "merge: GOP {g} from {} refused: epoch {} < {} in force",
                    header.host_id,
                    header.epoch,
                    in_force.epoch
                );
                continue;
            }
            let parity_payload = if header.is_parity() {
                gopswarm_chunk::parse(&bytes)
                    .map(|(c, _)| c.payload().to_vec())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let sender = match may_send(l, &header, &parity_payload) {
                Ok(s) => s,
                Err(why) => {
                    // A chunk of a newer layout than this merger has is asked for again once
                    // it arrives; an enrolled host without the slot adds nothing.
                    summary.not_in_layout += 1;
                    let reject = Reject::Invalid(format!(
                        "GOP {g} from {}: {why} (layout epoch {})",
                        header.host_id, in_force.epoch
                    ));
                    rejects.count(&reject);
                    refusals.refused(&chunk_topic, &reject);
                    continue;
                }
            };
            // Whichever transport brought it: signed by the host it names, then as the
            // encoder made it (parity was computed over those bytes).
            let bytes = match open.open_chunk(bytes) {
                Ok(b) => b,
                Err(reject) => {
                    summary.bad_signature += 1;
                    rejects.count(&reject);
                    refusals.refused(&chunk_topic, &reject);
                    continue;
                }
            };
            // Only a chunk from a slot of the layout moves the window.
            if sender == Sender::Slot {
                frontier = frontier.max(Some(g));
            }
            let key = (header.host_id.clone(), g, header.is_redundant());
            // Drop exact repeats (QoS 1 redelivery, resends) and a second primary; a primary
            // still goes in after a redundant copy (gopmerge prefers it), and a redundant copy
            // after a primary (gopmerge uses it if the primary's payload fails its check).
            let repeat = !seen.insert(key);
            let redundant_after_any = header.is_redundant() && have.contains(&g);
            let primary_again = !header.is_redundant() && primaries.contains(&g);
            if !header.is_parity() && (repeat || primary_again) {
                summary.duplicates += 1;
                continue;
            }
            if !header.is_parity() && !redundant_after_any {
                // A backup's copy does not count as the GOP being here: the primary is still
                // asked for.
                if sender == Sender::Slot {
                    have.insert(g);
                }
                let who = if header.is_redundant() {
                    format!("{} (redundant)", header.host_id)
                } else {
                    primaries.insert(g);
                    header.host_id.clone()
                };
                *summary.gops_by_host.entry(who.clone()).or_default() += 1;
                summary.chunks.push(ChunkSeen {
                    gop: g,
                    host: who,
                    epoch: header.epoch,
                    frames: header.frame_count,
                    short: header.flags & gopswarm_chunk::flags::SHORT != 0,
                });
            }
            summary.chunks_in += 1;
            last_arrival = Some(Instant::now());
            if m.src
                .push_buffer(gst::Buffer::from_mut_slice(bytes))
                .is_err()
            {
                bail!("merger pipeline stopped");
            }
        }
    }
    srt_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    summary.rejected_payloads = rejects.total();
    if let Some(m) = merger {
        let _ = m.src.end_of_stream();
        let bus = m.pipeline.bus().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else {
                continue;
            };
            if take_bus_message(&msg, &mut summary)? {
                break;
            }
        }
        summary.merger = m.stats();
        summary.last_gop = have.iter().next_back().copied();
        m.pipeline.set_state(gst::State::Null)?;
    }
    let _ = link.client.disconnect().await;
    Ok(summary)
}

/// Take in a message of the merger pipeline's bus: a lost or refused GOP goes into the
/// summary, an error ends the run. Returns whether it was the end of the stream. The bus is
/// read all along: messages left on it (the sinks post some for every segment) would stay in
/// memory for as long as the merger runs.
fn take_bus_message(msg: &gst::Message, summary: &mut MergeSummary) -> Result<bool> {
    match msg.view() {
        gst::MessageView::Eos(_) => return Ok(true),
        gst::MessageView::Error(e) => bail!("merger: {} ({:?})", e.error(), e.debug()),
        gst::MessageView::Element(e) => {
            if let Some(s) = e.structure()
                && s.name() == "gopswarm-gap"
                && let Ok(g) = s.get::<u64>("gop")
            {
                summary.lost_gops.push(g);
            }
            if let Some(s) = e.structure()
                && s.name() == "gopswarm-rejected"
            {
                let text = |k: &str| s.get::<String>(k).unwrap_or_default();
                let rejected = RejectedGop {
                    gop: s.get::<u64>("gop").unwrap_or_default(),
                    host: text("host"),
                    reason: text("reason"),
                    detail: text("detail"),
                };
                tracing::warn!(
                    "merge: GOP {} from {} refused ({}): {}",
                    rejected.gop,
                    rejected.host,
                    rejected.reason,
                    rejected.detail
                );
                summary.rejected.push(rejected);
            }
        }
        _ => {}
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(gop: u64, host: &str, flags: u8) -> gopswarm_chunk::ChunkHeader {
        gopswarm_chunk::ChunkHeader {
            gop_index: gop,
            host_id: host.into(),
            flags,
            ..Default::default()
        }
    }

    #[test]
    fn a_primary_gop_comes_only_from_the_host_of_its_slot() {
        use gopswarm_chunk::flags::{PARITY, REDUNDANT};
        let layout = Layout {
            stream: "s".into(),
            profile: "p".into(),
            history: vec![LayoutEpoch {
                epoch: 4,
                from_gop: 10,
                redundancy: 1,
                hosts: vec!["a".into(), "b".into(), "c".into()],
                backups: vec![BackupSlot {
                    slot: 1,
                    host: "z".into(),
                }],
            }],
            orchestrator_epoch: 0,
        };
        let send = |g: u64, host: &str, flags: u8| may_send(&layout, &header(g, host, flags), &[]);
        // GOP 13: slot 1 (b), its copy on slot 2 (c).
        assert_eq!(send(13, "b", 0), Ok(Sender::Slot));
        assert_eq!(send(13, "a", 0), Err("the GOP falls to another slot"));
        assert_eq!(send(13, "z", 0), Err("holds no slot"));
        assert_eq!(send(13, "c", REDUNDANT), Ok(Sender::Slot));
        assert_eq!(
            send(13, "a", REDUNDANT),
            Err("holds no copy slot of the GOP")
        );
        // A backup is named by the epoch for one slot (z for slot 1: GOP 13, not 14), and
        // a host neither in the layout nor named sends no copy.
        assert_eq!(send(13, "z", REDUNDANT), Ok(Sender::Backup));
        assert_eq!(
            send(14, "z", REDUNDANT),
            Err("not a backup of the GOP's slot")
        );
        assert_eq!(
            send(13, "y", REDUNDANT),
            Err("not a backup of the GOP's slot")
        );
        assert_eq!(send(9, "b", 0), Err("before the layout"));
        assert_eq!(
            send(13, "b", PARITY | REDUNDANT),
            Err("marked both parity and a redundant copy")
        );
        // Parity: only over GOPs its sender encodes as the primary (b: 13 and 16, not 12, the
        // copy of a's).
        let parity = |members: &[u64]| {
            gopswarm_chunk::ParityInfo {
                k: members.len() as u8,
                m: 1,
                index: 0,
                members: members.iter().map(|&g| (g, 5)).collect(),
            }
            .encode(b"shard")
        };
        let p_header = header(13, "b", PARITY);
        assert_eq!(
            may_send(&layout, &p_header, &parity(&[13, 16])),
            Ok(Sender::Slot)
        );
        for members in [&[12, 13][..], &[13, 14]] {
            assert_eq!(
                may_send(&layout, &p_header, &parity(members)),
                Err("parity over a GOP it does not encode")
            );
        }
        assert_eq!(
            may_send(&layout, &header(13, "z", PARITY), &parity(&[13])),
            Err("parity over a GOP it does not encode")
        );
        assert_eq!(
            may_send(&layout, &p_header, b"junk"),
            Err("unreadable parity")
        );
        let empty = Layout {
            history: vec![LayoutEpoch {
                hosts: vec![],
                ..layout.history[0].clone()
            }],
            ..layout.clone()
        };
        assert_eq!(
            may_send(&empty, &header(13, "b", 0), &[]),
            Err("holds no slot")
        );
    }
}
