//! `gopswarm`: the command line of the gopswarm live-encoding swarm.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

use gopswarm::{bench, qa, run};

#[derive(Parser)]
#[command(
    name = "gopswarm",
    version,
    about = "gopswarm live-encoding swarm: QA, benchmarks and tools"
)]
struct Cli {
    /// Log lines on stderr as text (colours only on a terminal) or as JSON lines for log
    /// shippers; also passed to the processes it starts
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "GOPSWARM_LOG_FORMAT"
    )]
    log_format: gopswarm::swarm::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gst-launch-1.0 pipeline description (what `pipelines/run` uses): PLAYING at
    /// once, the first SIGINT or SIGTERM sends EOS so files are finished, exit 0 after EOS
    /// and 1 on the first error. Unlike gst-launch-1.0 1.22 it cannot miss the pipeline's EOS
    /// through the PAUSED-to-PLAYING race of GstBin.
    Launch {
        /// The pipeline, as gst-launch-1.0 takes it, e.g. videotestsrc num-buffers=50 ! fakesink
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        description: Vec<String>,
    },
    /// Run the local 3-way swarm on the sample media and check every output against its source
    /// (frame count, timestamps, decode errors, audio sync, Y-PSNR and size against a single
    /// encode). Prints a PASS/FAIL table; exits non-zero when a clip fails.
    Qa {
        /// Clips from test-media/cache (default: all sample clips)
        #[arg(long, value_delimiter = ',')]
        clips: Vec<String>,
        /// Where outputs go
        #[arg(long, default_value = "out/qa")]
        out: PathBuf,
        /// profileenc profile
        #[arg(long, default_value = qa::DEFAULT_PROFILE)]
        profile: String,
        /// Skip the single-encode reference and the PSNR/size comparison
        #[arg(long)]
        no_quality: bool,
        /// Also draw per-GOP bitrate and Y-PSNR, swarm against single encode, as OUT/CLIP-gops.svg
        #[arg(long)]
        plot: bool,
    },
    /// Benchmarks: CPU of the 3-way swarm against a single encoder (with the ideal for the case),
    /// and the throughput of the chunk path alone. Measured side by side in one run.
    Bench {
        #[arg(long, default_value = "synthetic-720p25")]
        clip: String,
        #[arg(long, default_value = "out/bench")]
        out: PathBuf,
        #[arg(long, default_value = qa::DEFAULT_PROFILE)]
        profile: String,
        /// Redundant copies per GOP in the swarm run
        #[arg(long, default_value_t = 0)]
        redundancy: u32,
        /// Passes over the clip for the chunk-path throughput
        #[arg(long, default_value_t = 5)]
        repeat: u32,
    },
    /// Print the chunk headers of a partial stream file (what partialpay wrote).
    Chunks { file: PathBuf },
    /// Control-plane benchmarks: the orchestrator's assignment round and its per-keep-alive
    /// rescoring for a large simulated swarm (p50/p99), and control messages per second
    /// through mosquitto and the embedded broker on loopback.
    BenchControl {
        #[arg(long, default_value_t = 10_000)]
        hosts: usize,
        #[arg(long, default_value_t = 2_000)]
        streams: usize,
        #[arg(long, default_value_t = 3)]
        slots: u32,
        /// Rounds to time
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Messages per broker throughput run
        #[arg(long, default_value_t = 50_000)]
        messages: usize,
    },
    /// The whole swarm on this machine: embedded MQTT broker, orchestrator, a live-looped
    /// sample clip, encoder host processes and the merger. Kills a host part-way, performs a
    /// planned handoff later, prints progress and a summary, and checks the output with ffprobe.
    Demo {
        /// Clip name in test-media/cache or a path (H.264 MP4)
        #[arg(long, default_value = "synthetic-720p25")]
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
    },
    /// Serve a clip as a live, looped mezzanine over TCP (GDP) for the hosts.
    Source {
        /// H.264 MP4 clip
        #[arg(long)]
        clip: PathBuf,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long)]
        port: u16,
        /// Seconds of stream to serve (the clip loops), then EOS
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
    },
    /// Print a host's scores and tier with the inputs and arithmetic behind them (from the
    /// orchestrator's retained score messages), and the tasks the host refused (bad profile,
    /// with the reason) or lost to an error (from its retained applied message).
    ///
    /// stability = 100 x (0.25 network + 0.10 device + 0.20 power + 0.05 region + 0.10
    /// interface + 0.30 history); fitness = 100 x compatible x (0.4 speed + 0.3 headroom + 0.3
    /// quality); combined = 0.5 stability + 0.5 fitness; tiers gold > 90, silver > 70, else
    /// bronze, with 5 points of hysteresis. The orchestrator's --scores and --tiers change them.
    Explain {
        /// Host id; all hosts when left out
        host: Option<String>,
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        /// Print JSON lines instead of text
        #[arg(long)]
        json: bool,
        /// How long to wait for the retained scores (seconds)
        #[arg(long, default_value_t = 3.0)]
        wait: f64,
    },
    /// Simulate the swarm (simulated clock, the real controller, churn, daily demand with
    /// events) under the reactive and the proactive policy; writes a report with plots.
    Simulate {
        /// Hosts that exist (provisioned or in the pool)
        #[arg(long, default_value_t = 1000)]
        hosts: usize,
        #[arg(long, default_value_t = 300)]
        streams: usize,
        /// Simulated days (the first half is warm-up for the forecasters)
        #[arg(long, default_value_t = 4)]
        days: u32,
        /// Mean demand, encoding slots
        #[arg(long, default_value_t = 1100.0)]
        demand: f64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Steps (minutes) the proactive policy looks ahead
        #[arg(long, default_value_t = 10)]
        horizon: usize,
        /// Minutes a provisioned host takes to join
        #[arg(long, default_value_t = 5.0)]
        boot_minutes: f64,
        /// No host drops out (only the demand moves)
        #[arg(long)]
        no_churn: bool,
        /// Also run the reactive policy a second time with the streams' first layouts dealt in
        /// another order, to show how far per-stream losses move on where slots land alone
        #[arg(long)]
        placement_noise: bool,
        /// Order in which the streams' first layouts are dealt: 0 by stream id, else shuffled
        /// with this seed (both policies; the twin of --placement-noise uses another)
        #[arg(long, default_value_t = 0)]
        placement_salt: u64,
        /// Output directory: report.md, comparison.json, demand.svg, hosts.svg, overload.svg
        #[arg(long, default_value = "out/sim")]
        out: PathBuf,
    },
    /// Train the learned disconnect model on the host history in the orchestrator's state
    /// database; prints its held-out AUC next to the stability score's and writes the model.
    Learn {
        /// State database of the orchestrator
        #[arg(long, default_value = "gopswarm-state.redb")]
        state: PathBuf,
        /// Where to write the model (JSON)
        #[arg(long, default_value = "disconnect-model.json")]
        out: PathBuf,
    },
    /// Run an encoder host: joins the swarm over MQTT and encodes what it is assigned.
    Host(gopswarm::swarm::host::HostOptions),
    /// Run the orchestrator: registry, swarm controller, handoffs. Embeds an MQTT broker unless
    /// --broker names one.
    Orchestrator {
        /// External broker (mqtt:// or mqtts://, with user:pass@); default: embedded rumqttd
        #[arg(long)]
        broker: Option<String>,
        /// Where the embedded broker listens
        #[arg(long, default_value = "127.0.0.1:1883")]
        listen: String,
        /// State database (survives restarts)
        #[arg(long, default_value = "gopswarm-state.redb")]
        state: PathBuf,
        /// Heartbeat interval hosts use; a host silent 1.5 x this long is dead (seconds)
        #[arg(long, default_value_t = 2.0)]
        keepalive: f64,
        /// GOPs between the furthest host and a switch GOP
        #[arg(long, default_value_t = 2)]
        switch_margin: u64,
        /// Swarm sizing from content complexity, JSON, any of: si_low, ti_low, si_high,
        /// ti_high (P.910 SI/TI at 320x180), slots ([low, medium, high]), redundancy.
        /// Default: {"si_low":50,"ti_low":10,"si_high":150,"ti_high":40,"slots":[2,3,4],"redundancy":1}
        #[arg(long)]
        sizing: Option<String>,
        /// Tier thresholds on the combined score, JSON, any of: gold, silver, hysteresis,
        /// stability_weight. Default: {"gold":90,"silver":70,"hysteresis":5,"stability_weight":0.5}
        #[arg(long)]
        tiers: Option<String>,
        /// Score reference points and weights, JSON (see `gopswarm explain --help`)
        #[arg(long)]
        scores: Option<String>,
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
        /// Seconds after a scale-up before the scaler may scale down
        #[arg(long, default_value_t = 300.0)]
        scale_cooldown: f64,
        /// Longest a host may take to empty, and to come back, in a rolling update (seconds)
        #[arg(long, default_value_t = 120.0)]
        rollout_timeout: f64,
    },
    /// Update hosts one at a time, lowest fitness first, without stopping any output: the
    /// orchestrator empties each by GOP-boundary handoff and runs its update hook.
    RollingUpdate {
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        /// Host to update (repeatable; default: every live host)
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Merge one stream profile from the hosts' chunks into MP4 and HLS.
    Merge {
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        #[arg(long)]
        stream: String,
        #[arg(long)]
        profile: String,
        /// Output prefix: writes OUT.mp4 and OUT-hls/
        #[arg(long)]
        out: PathBuf,
        /// Wait for a missing GOP this many GOPs before reporting it lost
        #[arg(long, default_value_t = 6)]
        latency_gops: u64,
        /// Finish when nothing arrived for this many seconds
        #[arg(long, default_value_t = 30.0)]
        idle_timeout: f64,
        /// Write the summary as JSON here
        #[arg(long)]
        summary: Option<PathBuf>,
        /// Also take partial streams over TCP here (tcp://host:port), from any number of hosts
        #[arg(long)]
        listen: Option<String>,
        /// Call the hosts' SRT listeners for their partial streams (streams added with
        /// --chunks srt; hosts run with --srt-listen)
        #[arg(long)]
        pull_srt: bool,
        /// Serve Prometheus metrics (GOPs in and out, lost, fenced, duplicates) at
        /// http://ADDR/metrics
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Streams: add, remove, hand a slot over (published to the orchestrator over MQTT).
    Stream {
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        #[command(subcommand)]
        op: StreamOp,
    },
}

const DEMO_PROFILE: &str = "h264, width=640, height=360, bitrate=1200, complexity=3";

#[derive(Subcommand)]
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
    /// Announce an event: the scaler (orchestrator --autoscale) provisions for it ahead
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

fn secs(s: f64) -> Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(s).map_err(|e| anyhow::anyhow!("{s} s: {e}"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn broker_url(s: &str) -> Result<gopswarm_proto::link::BrokerUrl> {
    gopswarm_proto::link::BrokerUrl::parse(s).map_err(anyhow::Error::msg)
}

/// Publish one control message and wait until the broker has it.
fn publish_control(broker: &str, payload: Vec<u8>) -> Result<()> {
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    let b = broker_url(broker)?;
    runtime()?.block_on(async move {
        let o = b.mqtt_options(&format!("gopswarm-ctl-{}", std::process::id()));
        let (client, mut el) = AsyncClient::new(o, 8);
        client
            .publish(
                gopswarm_proto::Topic::StreamControl.path(),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => anyhow::bail!("broker {broker}: {e}"),
                Err(_) => anyhow::bail!("broker {broker}: no PUBACK within 10 s"),
            }
        }
        let _ = client.disconnect().await;
        Ok(())
    })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    gopswarm::swarm::set_log_format(cli.log_format);
    match cli.command {
        Command::Launch { description } => {
            let status = gopswarm::launch::run(&description)?;
            std::process::exit(status);
        }
        Command::Qa {
            clips,
            out,
            profile,
            no_quality,
            plot,
        } => {
            let names: Vec<String> = if clips.is_empty() {
                qa::SAMPLE_CLIPS.iter().map(|s| s.to_string()).collect()
            } else {
                clips
            };
            let mut reports = Vec::new();
            for (i, name) in names.iter().enumerate() {
                eprintln!("[{}/{}] {name}: swarm", i + 1, names.len());
                let clip = qa::clip(name)?;
                let (output, outcome) = qa::swarm(&clip, &out, &[("PROFILE", profile.as_str())])?;
                let mut report = qa::check_output(&clip, &output, &outcome)?;
                if !no_quality {
                    eprintln!("[{}/{}] {name}: single encode and PSNR", i + 1, names.len());
                    let single = qa::single(&clip, &out, &profile)?;
                    qa::add_quality(&mut report, &clip, &output, &single)?;
                    if plot {
                        let gop_s = 2.0;
                        let swarm_series = gopswarm::plot::series(
                            &output,
                            &clip.path,
                            gop_s,
                            &out.join(format!("{name}-swarm")),
                        )?;
                        let single_series = gopswarm::plot::series(
                            &single,
                            &clip.path,
                            gop_s,
                            &out.join(format!("{name}-single")),
                        )?;
                        let svg_path = out.join(format!("{name}-gops.svg"));
                        std::fs::write(
                            &svg_path,
                            gopswarm::plot::svg(
                                &format!(
                                    "{name}: bitrate and Y-PSNR per 2 s GOP, profile \"{profile}\""
                                ),
                                &swarm_series,
                                &single_series,
                            ),
                        )?;
                        eprintln!("wrote {}", svg_path.display());
                    }
                }
                reports.push(report);
            }
            let failed = qa::print_table(&reports);
            if failed > 0 {
                std::process::exit(1);
            }
        }
        Command::Bench {
            clip,
            out,
            profile,
            redundancy,
            repeat,
        } => {
            let clip = qa::clip(&clip)?;
            eprintln!(
                "measuring decode, single encode and 3-way swarm on {}",
                clip.name
            );
            let c = bench::swarm_cost(&clip, &out, &profile, redundancy)?;
            println!(
                "clip {} profile \"{profile}\" redundancy {redundancy}",
                clip.name
            );
            println!("{:<28} {:>9} {:>9}", "run", "cpu s", "wall s");
            for (name, cost) in [
                ("decode only", c.decode),
                ("single encode", c.single),
                ("3-way swarm", c.swarm),
            ] {
                println!("{name:<28} {:>9.2} {:>9.2}", cost.cpu, cost.wall);
            }
            println!(
                "swarm/single cpu {:.3}  ideal {:.3}  overhead vs ideal {:+.1}%",
                c.ratio(),
                c.ideal_ratio(),
                c.overhead() * 100.0
            );
            eprintln!("measuring the chunk path ({repeat} passes)");
            let t = bench::chunk_path_throughput(&clip, repeat)?;
            println!(
                "chunk path: {:.1} MB/s, {} chunks, {:.0} us cpu per chunk",
                t.mb_per_s(),
                t.chunks,
                t.cpu_us_per_chunk()
            );
        }
        Command::Chunks { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut deframer = gopswarm_chunk::Deframer::default();
            deframer.push(&bytes);
            let mut chunks = Vec::new();
            while let Some(c) = deframer.next_chunk() {
                chunks.push(c);
            }
            chunks.extend(deframer.finish());
            println!(
                "{:>6} {:>8} {:>12} {:>7} {:>6} {:>9} {:>7}  host/profile",
                "gop", "kind", "start s", "frames", "epoch", "bytes", "reorder"
            );
            for c in &chunks {
                let h = &c.header;
                let kind = if h.is_parity() {
                    "parity"
                } else if h.is_redundant() {
                    "copy"
                } else {
                    "primary"
                };
                println!(
                    "{:>6} {:>8} {:>12.3} {:>7} {:>6} {:>9} {:>7}  {}/{}",
                    h.gop_index,
                    kind,
                    h.start_ns as f64 / 1e9,
                    h.frame_count,
                    h.epoch,
                    c.bytes().len(),
                    h.reorder_frames.map_or("-".into(), |r| r.to_string()),
                    h.host_id,
                    h.profile_id
                );
            }
            let s = deframer.stats();
            println!(
                "{} chunks; {} bytes skipped, {} corrupt",
                s.chunks, s.bytes_skipped, s.corrupt
            );
        }
        Command::BenchControl {
            hosts,
            streams,
            slots,
            rounds,
            messages,
        } => {
            gopswarm::bench_control::print_assignment(hosts, streams, slots, rounds);
            gopswarm::bench_control::print_rescore(hosts, rounds);
            gopswarm::bench_control::print_throughput(messages)?;
        }
        Command::Demo {
            clip,
            out,
            duration,
            hosts,
            spares,
            redundancy,
            gop,
            profile,
            kill_at,
            handoff_at,
            handoffs,
            keepalive,
        } => {
            gopswarm::swarm::init_logging_quiet();
            let clip = if std::path::Path::new(&clip).exists() {
                PathBuf::from(clip)
            } else {
                qa::clip(&clip)?.path
            };
            let opts = gopswarm::swarm::demo::DemoOptions {
                clip,
                out,
                duration: secs(duration)?,
                hosts,
                spares,
                redundancy,
                gop: secs(gop)?,
                profile,
                kill_at: (kill_at >= 0.0).then(|| secs(kill_at)).transpose()?,
                handoff_at: (handoff_at >= 0.0).then(|| secs(handoff_at)).transpose()?,
                handoffs,
                keepalive: secs(keepalive)?,
            };
            let report = runtime()?.block_on(gopswarm::swarm::demo::run(opts))?;
            print!("{}", gopswarm::swarm::demo::format_report(&report));
            let ok = report.passed();
            println!("{}", if ok { "PASS" } else { "FAIL" });
            if !ok {
                std::process::exit(1);
            }
        }
        Command::Source {
            clip,
            host,
            port,
            duration,
        } => {
            gopswarm::swarm::init_logging();
            gopswarm::swarm::source::serve(
                &gopswarm::swarm::source::SourceOptions {
                    clip: &clip,
                    listen_host: &host,
                    port,
                    duration: secs(duration)?,
                },
                true,
            )?;
        }
        Command::Host(opts) => {
            gopswarm::swarm::init_logging();
            runtime()?.block_on(gopswarm::swarm::host::run(
                opts,
                gopswarm::swarm::interrupted(),
            ))?;
        }
        Command::Orchestrator {
            broker,
            listen,
            state,
            keepalive,
            switch_margin,
            sizing,
            tiers,
            scores,
            region,
            no_peer_swap,
            backup_copies,
            metrics_listen,
            disconnect_model,
            provision_hook,
            spawn_host_args,
            autoscale,
            max_hosts,
            forecast_step,
            forecast_horizon,
            scale_cooldown,
            rollout_timeout,
        } => {
            gopswarm::swarm::init_logging();
            run::init();
            let broker_text = match broker {
                Some(b) => b,
                None => {
                    let addr: std::net::SocketAddr = listen.parse().context("--listen")?;
                    gopswarm_orchestrator::broker::start_embedded(addr)?;
                    tracing::info!("embedded MQTT broker on mqtt://{addr}");
                    format!("mqtt://{addr}")
                }
            };
            let broker = broker_url(&broker_text)?;
            let provisioner: Box<dyn gopswarm_orchestrator::provision::Provisioner> =
                match provision_hook {
                    Some(command) => Box::new(gopswarm_orchestrator::provision::CommandHook {
                        command,
                        broker: broker_text.clone(),
                        timeout: secs(rollout_timeout)?,
                    }),
                    None => {
                        let mut spawner = gopswarm_orchestrator::provision::LocalSpawner::new(
                            std::env::current_exe().context("this program's path")?,
                            broker_text.clone(),
                            spawn_host_args,
                        );
                        // Host logs and pid files next to the state.
                        let dir = state
                            .parent()
                            .unwrap_or(std::path::Path::new("."))
                            .join("hosts");
                        std::fs::create_dir_all(&dir)
                            .with_context(|| format!("creating {}", dir.display()))?;
                        spawner.log_dir = Some(dir);
                        Box::new(spawner)
                    }
                };
            let scaler = autoscale.then(|| gopswarm_orchestrator::rollout::ScalerConfig {
                max_hosts,
                cooldown: std::time::Duration::from_secs_f64(scale_cooldown.max(0.0)),
                ..Default::default()
            });
            let keepalive = secs(keepalive)?;
            let cfg = gopswarm_orchestrator::Config {
                keepalive,
                dead_after: keepalive * 3 / 2,
                switch_margin_gops: switch_margin,
                sizing: match sizing {
                    Some(j) => serde_json::from_str(&j).context("--sizing")?,
                    None => Default::default(),
                },
                tiers: match tiers {
                    Some(j) => serde_json::from_str(&j).context("--tiers")?,
                    None => Default::default(),
                },
                scores: match scores {
                    Some(j) => serde_json::from_str(&j).context("--scores")?,
                    None => Default::default(),
                },
                home_region: region,
                peer_swap: !no_peer_swap,
                backup_copies,
                ..Default::default()
            };
            cfg.tiers
                .validate()
                .map_err(anyhow::Error::msg)
                .context("--tiers")?;
            runtime()?.block_on(gopswarm_orchestrator::service::Service::run(
                gopswarm_orchestrator::service::ServiceOptions {
                    broker,
                    state,
                    cfg,
                    client_id: "gopswarm-orchestrator".into(),
                    gstreamer_version: gst::version_string().to_string(),
                    metrics_listen,
                    disconnect_model: disconnect_model
                        .as_deref()
                        .map(gopswarm::swarm::learn::load_model)
                        .transpose()?,
                    provisioner: Some(provisioner),
                    scaler,
                    forecast_step: secs(forecast_step)?,
                    forecast_horizon: forecast_horizon.max(1),
                    rollout_timeout: secs(rollout_timeout)?,
                },
                gopswarm::swarm::interrupted(),
                None,
            ))?;
        }
        Command::Merge {
            broker,
            stream,
            profile,
            out,
            latency_gops,
            idle_timeout,
            summary,
            listen,
            pull_srt,
            metrics_listen,
        } => {
            gopswarm::swarm::init_logging();
            let opts = gopswarm::swarm::merge::MergeOptions {
                metrics_listen,
                broker: broker_url(&broker)?,
                stream,
                profile,
                out,
                latency_gops,
                idle_timeout: secs(idle_timeout)?,
                progress: true,
                listen,
                pull_srt,
            };
            let s = runtime()?.block_on(gopswarm::swarm::merge::run(
                opts,
                gopswarm::swarm::interrupted(),
            ))?;
            let json = serde_json::to_string_pretty(&s)?;
            println!("{json}");
            if let Some(path) = summary {
                std::fs::write(&path, &json)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Simulate {
            hosts,
            streams,
            days,
            demand,
            seed,
            horizon,
            boot_minutes,
            no_churn,
            placement_noise,
            placement_salt,
            out,
        } => {
            let defaults = gopswarm_orchestrator::sim::SimConfig::default();
            let cfg = gopswarm_orchestrator::sim::SimConfig {
                seed,
                hosts,
                streams,
                trace: gopswarm_orchestrator::traces::TraceConfig {
                    seed,
                    days,
                    base: demand,
                    ..defaults.trace.clone()
                },
                warmup_days: days as f64 / 2.0,
                horizon,
                boot_minutes,
                churn: !no_churn,
                placement_salt,
                ..defaults
            };
            let c = gopswarm::swarm::simulate::run(cfg, placement_noise, &out)?;
            print!("{}", gopswarm::swarm::simulate::report(&c));
            println!("report, plots and JSON in {}", out.display());
        }
        Command::Learn { state, out } => {
            let r = gopswarm::swarm::learn::run(&state, &out)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            println!("model written to {}", out.display());
        }
        Command::Explain {
            host,
            broker,
            json,
            wait,
        } => {
            runtime()?.block_on(gopswarm::swarm::explain::run(
                broker_url(&broker)?,
                host,
                json,
                secs(wait)?,
            ))?;
        }
        Command::Stream { broker, op } => {
            use gopswarm_proto::{Message, ProfileDef, StreamCommand, StreamDef};
            let cmd = match op {
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
                            gopswarm::swarm::check_profile(spec)
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
                        gop_ns: secs(gop)?.as_nanos() as u64,
                        redundancy,
                        slots,
                        complexity: None,
                        chunk_sink: chunks,
                    };
                    if !no_measure && (slots.is_none() || redundancy.is_none()) {
                        let c = gopswarm::swarm::complexity::measure(
                            &stream.source,
                            50,
                            5,
                            std::time::Duration::from_secs(30),
                        )?;
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
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_millis() as u64;
                    StreamCommand::Announce {
                        event: gopswarm_proto::EventAnnouncement {
                            id,
                            stream,
                            start_unix_ms: now_ms + (starts_in.max(0.0) * 1000.0) as u64,
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
            cmd.validate()
                .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
            publish_control(&broker, gopswarm_proto::encode(&cmd))?;
        }
        Command::RollingUpdate { broker, hosts } => {
            let cmd = gopswarm_proto::StreamCommand::RollingUpdate { hosts };
            gopswarm_proto::Message::validate(&cmd).map_err(|e| anyhow::anyhow!("refused: {e}"))?;
            publish_control(&broker, gopswarm_proto::encode(&cmd))?;
        }
    }
    Ok(())
}
