// SPDX-License-Identifier: MPL-2.0
//! `gopswarm demo`: the whole swarm on one machine. Embedded MQTT broker and orchestrator (in
//! this process), a live-looped sample clip served by `gopswarm source`, encoder hosts as
//! separate `gopswarm host` processes, and the merger. Part-way through it SIGKILLs a host
//! and later asks for a planned handoff; it prints progress while it runs and a summary at the
//! end, and checks the output with ffprobe.

mod timeline;

use crate::loopback::{free_port, wait_listen};
use crate::{media, qa};
use anyhow::{Context, Result, bail};
use gopswarm_agents::daemon::{self, number_or_dash};
use gopswarm_agents::merge::{self, MergeOptions, MergeSummary};
use gopswarm_agents::options::seconds;
use gopswarm_orchestrator::controller::{Config, HandoffRecord};
use gopswarm_orchestrator::service::{Service, ServiceOptions};
use gopswarm_proto::keys::{DEFAULT_MERGER, DEFAULT_OPERATOR, KeyDir};
use gopswarm_proto::link::{BrokerUrl, Link, LinkOptions, QoS};
use gopswarm_proto::signed::{Principal, Signer};
use gopswarm_proto::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DEMO_PROFILE: &str = "h264, width=640, height=360, bitrate=1200, complexity=3";

#[derive(clap::Args)]
pub struct DemoOptions {
    /// H.264 MP4 to loop as the live source: a path, or the name of a sample clip in the
    /// sample media folder (GOPSWARM_MEDIA, <bin>/../share/gopswarm/media when installed,
    /// test-media/cache of the source checkout; test-media/fetch.sh makes them)
    #[arg(long, env = "GOPSWARM_DEMO_CLIP", default_value = "synthetic-720p25")]
    clip: String,
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
    /// Seconds of live stream
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Hosts holding slots
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Extra hosts waiting for work (the planned handoff goes to one)
    #[arg(long, default_value_t = 1)]
    spares: usize,
    #[arg(long, default_value_t = 1)]
    redundancy: u32,
    /// GOP duration, seconds
    #[arg(long, default_value_t = 2.0)]
    gop: f64,
    #[arg(long, default_value = DEMO_PROFILE)]
    profile: String,
    /// SIGKILL a host after this many seconds (negative: never)
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
    kill_at: f64,
    /// Ask for a planned handoff after this many seconds (negative: never)
    #[arg(long, default_value_t = 35.0, allow_negative_numbers = true)]
    handoff_at: f64,
    /// Planned handoffs to perform, one after the other
    #[arg(long, default_value_t = 1)]
    handoffs: usize,
    /// MQTT keep-alive and heartbeat interval, seconds
    #[arg(long, default_value_t = 2.0)]
    keepalive: f64,
}

impl DemoOptions {
    /// The run the flags describe (negative times: never).
    fn config(self) -> Result<DemoConfig> {
        let clip = if std::path::Path::new(&self.clip).exists() {
            PathBuf::from(self.clip)
        } else {
            qa::clip(&self.clip)
                .with_context(|| {
                    format!(
                        "--clip {}: no such file; as a sample clip's name (pass a path to an \
                         H.264 MP4 otherwise)",
                        self.clip
                    )
                })?
                .path
        };
        let at = |s: f64| (s >= 0.0).then(|| seconds(s)).transpose();
        Ok(DemoConfig {
            clip,
            out: self.out,
            duration: seconds(self.duration)?,
            hosts: self.hosts,
            spares: self.spares,
            redundancy: self.redundancy,
            gop: seconds(self.gop)?,
            profile: self.profile,
            kill_at: at(self.kill_at)?,
            handoff_at: at(self.handoff_at)?,
            handoffs: self.handoffs,
            keepalive: seconds(self.keepalive)?,
        })
    }
}

/// Prints the report and PASS or FAIL; exits 1 on FAIL.
pub fn run(o: DemoOptions) -> Result<()> {
    daemon::init_logging_quiet();
    let report = daemon::runtime()?.block_on(run_swarm(o.config()?))?;
    print!("{}", format_report(&report));
    let ok = report.passed();
    println!("{}", if ok { "PASS" } else { "FAIL" });
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// One demo run: the options with the clip found and times as durations (`None`: never).
pub struct DemoConfig {
    pub clip: PathBuf,
    pub out: PathBuf,
    pub duration: Duration,
    pub hosts: usize,
    pub spares: usize,
    pub redundancy: u32,
    pub gop: Duration,
    pub profile: String,
    pub kill_at: Option<Duration>,
    pub handoff_at: Option<Duration>,
    /// Planned handoffs to perform, one after the other, from `handoff_at` on.
    pub handoffs: usize,
    pub keepalive: Duration,
}

/// Child processes that die with the demo.
pub struct Children(pub Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn spawn_logged(name: &str, args: &[String], log_dir: &Path) -> Result<Child> {
    let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
    Command::new(std::env::current_exe()?)
        .args(args)
        .env("RUST_LOG", "info,rumqttc=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {name}"))
}

#[derive(Debug)]
pub struct DemoReport {
    pub merge: MergeSummary,
    pub handoffs: Vec<HandoffRecord>,
    pub killed: Option<String>,
    pub frames: u64,
    pub expected_frames: u64,
    /// ffmpeg's error output decoding the MP4 (empty when clean).
    pub decode_errors: String,
    /// Frame timestamps not 1/fps after the previous one.
    pub timestamp_gaps: usize,
    /// What is wrong with the decode timestamps of the MP4 or the HLS output, if anything.
    pub decode_timing: Option<String>,
}

impl DemoReport {
    /// Every frame of every merged GOP, on time, decodable, in decode order players accept.
    pub fn passed(&self) -> bool {
        self.frames == self.expected_frames
            && self.frames > 0
            && self.timestamp_gaps == 0
            && self.decode_timing.is_none()
            && self.decode_errors.trim().is_empty()
            && self.merge.lost_gops.is_empty()
    }
}

/// Run the swarm the config describes, to the end of the stream, and check its output.
pub async fn run_swarm(opts: DemoConfig) -> Result<DemoReport> {
    gopswarm_agents::pipeline::init();
    if !opts.clip.exists() {
        bail!(
            "clip {} not found (run test-media/fetch.sh)",
            opts.clip.display()
        );
    }
    std::fs::create_dir_all(&opts.out)?;
    let logs = opts.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let state = opts.out.join("state.redb");
    let _ = std::fs::remove_file(&state);

    // A new swarm's keys for every run: signed control from the first message.
    let keys_dir = opts.out.join("keys");
    let _ = std::fs::remove_dir_all(&keys_dir);
    let keys = KeyDir::init(
        &keys_dir,
        DEFAULT_OPERATOR,
        DEFAULT_MERGER,
        opts.hosts + opts.spares,
    )
    .map_err(anyhow::Error::msg)?;
    let operator = keys
        .signer(Principal::Operator(DEFAULT_OPERATOR.into()))
        .map_err(anyhow::Error::msg)?;
    let key_options = gopswarm_agents::options::KeyOptions {
        keys: Some(keys_dir.clone()),
        insecure: false,
    };
    eprintln!("demo: swarm keys in {}", keys_dir.display());

    let broker_port = free_port()?;
    let source_port = free_port()?;
    let (broker_url, logins) = crate::commands::orchestrator::start_embedded_broker(
        Some(&format!("127.0.0.1:{broker_port}")),
        &key_options,
    )?;
    eprintln!("demo: embedded MQTT broker on {broker_url} (TLS, swarm logins only)");

    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = Config {
        keepalive: opts.keepalive,
        dead_after: opts.keepalive * 3 / 2,
        ..Config::default()
    };
    let orchestrator = tokio::spawn(Service::run(
        ServiceOptions {
            broker: BrokerUrl::parse(&broker_url).map_err(anyhow::Error::msg)?,
            logins,
            state: state.clone(),
            cfg,
            client_id: "gopswarm-orchestrator".into(),
            gstreamer_version: gst::version_string().to_string(),
            metrics_listen: None,
            disconnect_model: None,
            provisioner: None,
            scaler: None,
            forecast_step: gopswarm_orchestrator::service::DEFAULT_FORECAST_STEP,
            forecast_horizon: gopswarm_orchestrator::service::DEFAULT_FORECAST_HORIZON,
            rollout_timeout: std::time::Duration::from_secs(120),
            proactive: Some(Default::default()),
            keys: Some(keys.clone()),
            name: "main".into(),
            standby: false,
            host_rate: Default::default(),
        },
        async {
            let _ = stop_rx.await;
        },
        Some(ready_tx),
    ));
    let service: Service = ready_rx.await.context("orchestrator did not start")?;

    let mut children = Children(Vec::new());
    let total = opts.duration;
    children.0.push((
        "source".into(),
        spawn_logged(
            "source",
            &[
                "source".into(),
                "--clip".into(),
                opts.clip.display().to_string(),
                "--port".into(),
                source_port.to_string(),
                "--duration".into(),
                total.as_secs_f64().to_string(),
            ],
            &logs,
        )?,
    ));
    // Let the source listen before hosts connect.
    wait_listen(source_port, Duration::from_secs(10))?;
    let host_ids: Vec<String> = (0..opts.hosts + opts.spares)
        .map(|i| format!("host-{}", (b'a' + i as u8) as char))
        .collect();
    for (i, id) in host_ids.iter().enumerate() {
        children.0.push((
            id.clone(),
            spawn_logged(
                id,
                &[
                    "host".into(),
                    "--id".into(),
                    id.clone(),
                    "--broker".into(),
                    broker_url.clone(),
                    "--keepalive".into(),
                    opts.keepalive.as_secs_f64().to_string(),
                    "--keys".into(),
                    keys_dir.display().to_string(),
                    "--enrol-token".into(),
                    keys_dir
                        .join("tokens")
                        .join(format!("{}.token", i + 1))
                        .display()
                        .to_string(),
                ],
                &logs,
            )?,
        ));
    }
    eprintln!(
        "demo: source {} for {:.0} s on port {source_port}; hosts {}",
        opts.clip.display(),
        total.as_secs_f64(),
        host_ids.join(", ")
    );
    // Wait for the hosts' births, then add the stream through MQTT like any client would.
    let t0 = Instant::now();
    while service
        .controller
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .hosts
        .len()
        < host_ids.len()
    {
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("hosts did not join within 20 s (see {})", logs.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One control connection for the whole demo, as an operator's console would keep.
    let mut control = LinkOptions::new(
        key_options.broker(
            Some(&BrokerUrl::parse(&broker_url).map_err(anyhow::Error::msg)?),
            Some(operator.broker_login()),
        )?,
        "gopswarm-demo-ctl",
    );
    control.keep_alive = Duration::from_secs(5);
    let mut ctl = Link::start(control);
    let def = StreamDef {
        id: "demo".into(),
        source: format!("gdp+tcp://127.0.0.1:{source_port}"),
        profiles: vec![ProfileDef {
            id: "p360".into(),
            spec: opts.profile.clone(),
        }],
        gop_ns: opts.gop.as_nanos() as u64,
        redundancy: Some(opts.redundancy),
        slots: Some(opts.hosts as u32),
        complexity: None,
        chunk_sink: None,
    };
    send(&ctl, &operator, &StreamCommand::Add { stream: def }).await?;
    let merge_task = tokio::spawn(merge::run(
        MergeOptions {
            metrics_listen: None,
            broker: Some(BrokerUrl::parse(&broker_url).map_err(anyhow::Error::msg)?),
            stream: "demo".into(),
            profile: "p360".into(),
            out: opts.out.join("demo"),
            latency_gops: opts.hosts as u64 + 3,
            idle_timeout: Duration::from_secs(30),
            summary: None,
            progress: false,
            listen: None,
            pull_srt: false,
            verify_payload: "decode".into(),
            keys: key_options.clone(),
            merger_name: DEFAULT_MERGER.into(),
        },
        std::future::pending::<()>(),
    ));

    let start = Instant::now();
    let mut killed: Option<String> = None;
    let mut kill_gop: Option<u64> = None;
    let mut handed = 0usize;
    let mut last_handoff = Instant::now();
    let mut last_progress = Instant::now();
    while !merge_task.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Only (re)connection news on this link: nothing to act on, but it must not fill up.
        while ctl.events.try_recv().is_ok() {}
        let el = start.elapsed();
        let (layout, alive) = {
            let c = service
                .controller
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let layout = c
                .streams
                .get("demo")
                .and_then(|s| s.profiles.get("p360"))
                .and_then(|p| p.history.last().cloned());
            let alive = c.hosts.values().filter(|h| h.alive).count();
            (layout, alive)
        };
        if let (Some(at), None, Some(l)) = (opts.kill_at, &killed, &layout)
            && el >= at
        {
            let victim = l.hosts[l.hosts.len() / 2].clone();
            kill_gop = service
                .controller
                .lock()
                .unwrap()
                .hosts
                .get(&victim)
                .and_then(|h| h.status.values().filter_map(|t| t.current_gop).max());
            if let Some((_, child)) = children.0.iter_mut().find(|(n, _)| *n == victim) {
                // SIGKILL: no goodbye, the broker publishes the last will.
                child.kill()?;
                eprintln!("demo: {:>5.1} s  SIGKILL {victim}", el.as_secs_f64());
                killed = Some(victim);
            }
        }
        let landed = service
            .controller
            .lock()
            .unwrap()
            .handoffs
            .iter()
            .filter(|h| h.switch_gop > 0)
            .count();
        // One handoff at a time: the next once the previous landed; a refused one (the last
        // holder still drains its final GOP) is asked again after 2 s.
        if let (Some(at), Some(l)) = (opts.handoff_at, &layout)
            && el >= at
            && handed < opts.handoffs
            && (landed == handed || last_handoff.elapsed() > Duration::from_secs(2))
            && !(landed < handed && last_handoff.elapsed() < Duration::from_secs(2))
        {
            if landed == handed {
                handed += 1;
            }
            last_handoff = Instant::now();
            let from = l.hosts[(handed - 1) % l.hosts.len()].clone();
            let handoff = StreamCommand::Handoff {
                stream: "demo".into(),
                profile: "p360".into(),
                from_host: from.clone(),
                to_host: None,
            };
            send(&ctl, &operator, &handoff).await?;
            eprintln!(
                "demo: {:>5.1} s  planned handoff {handed}/{} requested: {from} -> a spare host",
                el.as_secs_f64(),
                opts.handoffs
            );
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            match &layout {
                Some(l) => eprintln!(
                    "demo: {:>5.1} s  layout epoch {} from GOP {}: {} (r={}), {alive} hosts alive",
                    el.as_secs_f64(),
                    l.epoch,
                    l.from_gop,
                    l.hosts.join(" "),
                    l.redundancy
                ),
                None => eprintln!("demo: {:>5.1} s  preparing hosts", el.as_secs_f64()),
            }
        }
        if el > total + Duration::from_secs(120) {
            bail!("demo did not finish in time");
        }
    }
    let summary = merge_task.await??;
    std::fs::write(
        opts.out.join("merge-summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let (handoffs, history) = {
        let c = service
            .controller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let history: Vec<(u64, u64, Vec<String>)> = c
            .streams
            .get("demo")
            .and_then(|s| s.profiles.get("p360"))
            .map(|p| {
                p.history
                    .iter()
                    .map(|e| (e.epoch, e.from_gop, e.hosts.clone()))
                    .collect()
            })
            .unwrap_or_default();
        (c.handoffs.clone(), history)
    };
    std::fs::write(
        opts.out.join("timeline.svg"),
        timeline::svg(
            &format!(
                "gopswarm demo: {} hosts, r={}, {} s GOPs: which host's GOP reached the merger",
                opts.hosts,
                opts.redundancy,
                opts.gop.as_secs_f64()
            ),
            &summary,
            &history,
            killed.as_deref().map(|k| (k, kill_gop)),
        ),
    )?;
    let _ = stop_tx.send(());
    let _ = orchestrator.await;
    drop(children);

    let mp4 = summary.mp4.clone();
    let frames = media::video_frames(&mp4)?;
    let decode_errors = media::decode_errors(&mp4)?;
    let decode_timing = qa::decode_timing_problem(&mp4)?;
    let gop_frames = {
        let info = media::stream_info(&opts.clip)?;
        (opts.gop.as_secs_f64() * info.fps.0 as f64 / info.fps.1 as f64).round() as u64
    };
    let info = media::stream_info(&opts.clip)?;
    let frame_ns = 1_000_000_000i64 * info.fps.1 as i64 / info.fps.0 as i64;
    let timestamp_gaps = frames
        .windows(2)
        .filter(|w| (w[1].ts_ns - w[0].ts_ns - frame_ns).abs() > 1_000_000)
        .count();
    let expected = match (summary.first_gop, summary.last_gop) {
        (Some(a), Some(b)) => (b - a + 1) * gop_frames,
        _ => 0,
    };
    let report = DemoReport {
        frames: frames.len() as u64,
        expected_frames: expected,
        decode_errors,
        timestamp_gaps,
        decode_timing,
        merge: summary,
        handoffs,
        killed,
    };
    std::fs::write(opts.out.join("summary.txt"), format_report(&report))?;
    Ok(report)
}

pub fn format_report(r: &DemoReport) -> String {
    let mut s = String::new();
    let m = &r.merge;
    s += &format!(
        "stream {}/{}: GOPs {}..{}\n",
        m.stream,
        m.profile,
        number_or_dash(m.first_gop),
        number_or_dash(m.last_gop)
    );
    s += "GOPs per host:\n";
    for (h, n) in &m.gops_by_host {
        s += &format!("  {h:<24} {n}\n");
    }
    if let Some(k) = &r.killed {
        s += &format!("killed: {k}\n");
    }
    for h in &r.handoffs {
        s += &format!(
            "handoff: {} -> {} at GOP {} (epoch {}, decided at GOP {}, {} retries)\n",
            h.from,
            h.to,
            h.switch_gop,
            h.epoch,
            number_or_dash(h.decided_at_gop),
            h.retries
        );
    }
    let mut lat: Vec<u64> = r
        .handoffs
        .iter()
        .filter(|h| h.switch_gop > 0)
        .filter_map(|h| h.decided_at_gop.map(|d| h.switch_gop.saturating_sub(d)))
        .collect();
    lat.sort();
    if !lat.is_empty() {
        s += &format!(
            "decision-to-switch: median {} GOPs, max {} GOPs over {} handoffs\n",
            lat[lat.len() / 2],
            lat[lat.len() - 1],
            lat.len()
        );
    }
    s += &format!(
        "layout epochs: {}; fenced stale chunks: {}; duplicates dropped: {}; resend requests: {}\n",
        m.layout_epochs, m.fenced_stale, m.duplicates, m.resend_requests
    );
    s += &format!("lost GOPs: {:?}\n", m.lost_gops);
    s += &format!(
        "output: {} ({} frames, {} expected, {} timestamp gaps, DTS: {}, decode: {}), {}/index.m3u8\n",
        m.mp4.display(),
        r.frames,
        r.expected_frames,
        r.timestamp_gaps,
        r.decode_timing.as_deref().unwrap_or("increasing"),
        if r.decode_errors.trim().is_empty() {
            "clean"
        } else {
            "ERRORS"
        },
        m.hls.display()
    );
    if let Some(dir) = m.mp4.parent() {
        s += &format!("timeline: {}\n", dir.join("timeline.svg").display());
    }
    s
}

/// A stream command to the orchestrator, on the topic `gopswarm stream` publishes to.
/// Publish `cmd` signed by `operator` on the operators' topic, as `gopswarm stream` does.
pub async fn send(ctl: &Link, operator: &Signer, cmd: &StreamCommand) -> Result<()> {
    let topic = Topic::StreamControl.path();
    let payload = operator.seal(&topic, &encode(cmd));
    ctl.client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_prints_numbers_not_options() {
        let handoff = |decided_at_gop| HandoffRecord {
            stream: "demo".into(),
            profile: "p360".into(),
            from: "host-1".into(),
            to: "host-4".into(),
            epoch: 3,
            switch_gop: 13,
            decided_at_gop,
            retries: 0,
        };
        let report = DemoReport {
            merge: MergeSummary {
                stream: "demo".into(),
                profile: "p360".into(),
                first_gop: Some(0),
                last_gop: None,
                ..Default::default()
            },
            handoffs: vec![handoff(Some(11)), handoff(None)],
            killed: None,
            frames: 0,
            expected_frames: 0,
            decode_errors: String::new(),
            timestamp_gaps: 0,
            decode_timing: None,
        };
        let text = format_report(&report);
        assert!(text.contains("stream demo/p360: GOPs 0..-\n"), "{text}");
        assert!(text.contains("decided at GOP 11,"), "{text}");
        assert!(text.contains("decided at GOP -,"), "{text}");
        assert!(!text.contains("Some(") && !text.contains("None"), "{text}");
    }
}
