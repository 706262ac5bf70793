// SPDX-License-Identifier: MPL-2.0
//! `gopswarm`: the command line of the gopswarm live-encoding swarm. Argument parsing and
//! dispatch only: the daemons (source, host, merge) are in `gopswarm-agents`, the
//! orchestrator in `gopswarm-orchestrator`, the CLI's own commands in `gopswarm::commands`.

use anyhow::Result;
use clap::{Parser, Subcommand};
use gopswarm::commands::{
    self, acl::AclOptions, bench::BenchOptions, bench_control::BenchControlOptions,
    chunks::ChunksOptions, control::RollingUpdateOptions, control::StreamOptions,
    demo::DemoOptions, explain::ExplainOptions, init::InitOptions, launch::LaunchOptions,
    learn::LearnOptions, orchestrator::OrchestratorOptions, qa::QaOptions,
    simulate::SimulateOptions, soak::SoakOptions,
};
use gopswarm::config;
use gopswarm_agents::{daemon, host, merge::MergeOptions, source};

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
    log_format: daemon::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gst-launch-1.0 pipeline description (what `pipelines/run` uses): PLAYING at
    /// once, the first SIGINT or SIGTERM sends EOS so files are finished, exit 0 after EOS
    /// and 1 on the first error. Unlike gst-launch-1.0 1.22 it cannot miss the pipeline's EOS
    /// through the PAUSED-to-PLAYING race of GstBin.
    Launch(LaunchOptions),
    /// List, describe, print and run the pipelines/NAME.pipeline descriptions (what
    /// `pipelines/run` wraps)
    Pipeline(gopswarm::pipelines::command::PipelineArgs),
    /// Run the local 3-way swarm on the sample media and check every output against its source
    /// (frame count, timestamps, decode errors, audio sync, Y-PSNR and size against a single
    /// encode). Prints a PASS/FAIL table; exits non-zero when a clip fails.
    Qa(QaOptions),
    /// Benchmarks: CPU of the 3-way swarm against a single encoder (with the ideal for the case,
    /// and again with every chunk signed and checked as hosts and mergers do), and the
    /// throughput of the chunk path alone. Measured side by side in one run.
    Bench(BenchOptions),
    /// Print the chunk headers of a partial stream file (what partialpay wrote).
    Chunks(ChunksOptions),
    /// Control-plane benchmarks: the orchestrator's assignment round and its per-keep-alive
    /// rescoring for a large simulated swarm (p50/p99), and control messages per second
    /// through mosquitto and the embedded broker on loopback.
    BenchControl(BenchControlOptions),
    /// The whole swarm on this machine: embedded MQTT broker, orchestrator, a live-looped
    /// sample clip, encoder host processes and the merger. Kills a host part-way, performs a
    /// planned handoff later, prints progress and a summary, and checks the output with ffprobe.
    Demo(DemoOptions),
    /// A long run of the whole swarm (every part its own process, keys, TLS broker,
    /// redundancy) with hosts killed and started again on a schedule: samples every process's
    /// memory, then checks that no GOP was lost, that the output is frame-exact and that no
    /// process that ran throughout grew after the warm-up. Writes soak.json, rss.svg and
    /// summary.txt; exits 1 on FAIL. One hour by default.
    Soak(SoakOptions),
    /// Serve a clip as a live, looped mezzanine over TCP (GDP) for the hosts.
    Source(source::SourceOptions),
    /// Print a host's scores and tier with the inputs and arithmetic behind them (from the
    /// orchestrator's retained score messages), and the tasks the host refused (bad profile,
    /// with the reason) or lost to an error (from its retained applied message).
    ///
    /// stability = 100 x (0.25 network + 0.10 device + 0.20 power + 0.05 region + 0.10
    /// interface + 0.30 history); fitness = 100 x compatible x (0.4 speed + 0.3 headroom + 0.3
    /// quality); combined = 0.5 stability + 0.5 fitness; tiers gold > 90, silver > 70, else
    /// bronze, with 5 points of hysteresis. The orchestrator's --scores and --tiers change them.
    Explain(ExplainOptions),
    /// Simulate the swarm (simulated clock, the real controller, churn, daily demand with
    /// events) under the reactive and the proactive policy; writes a report with plots.
    Simulate(SimulateOptions),
    /// Train the learned disconnect model on the host history in the orchestrator's state
    /// database; prints its held-out AUC next to the stability score's and writes the model.
    Learn(LearnOptions),
    /// Run an encoder host: joins the swarm over MQTT and encodes what it is assigned.
    Host(host::HostOptions),
    /// Run the orchestrator: registry, swarm controller, handoffs. Embeds an MQTT broker unless
    /// --broker names one.
    Orchestrator(OrchestratorOptions),
    /// Update hosts one at a time, lowest fitness first, without stopping any output: the
    /// orchestrator empties each by GOP-boundary handoff and runs its update hook.
    RollingUpdate(RollingUpdateOptions),
    /// Merge one stream profile from the hosts' chunks into MP4 and HLS.
    Merge(MergeOptions),
    /// Streams: add, remove, hand a slot over (published to the orchestrator over MQTT).
    Stream(StreamOptions),
    /// A new swarm's keys: the orchestrator's, an operator's and a merger's signing keys, the
    /// trust file of their public keys, and one-time enrolment tokens for hosts. Every part
    /// then runs with --keys DIR (or GOPSWARM_KEYS): control messages are signed, and unsigned
    /// or badly signed ones are counted and ignored. Prints where the files went, never a key.
    Init(InitOptions),
    /// Credentials and per-role access control for an external broker: with --mosquitto, a
    /// password file, an ACL file and a mosquitto.conf snippet (no anonymous clients), and
    /// one broker URL per identity (orchestrator, merger, operators, each host) in files only
    /// their owner reads. Prints where the files went, never a password.
    Acl(AclOptions),
}

/// The roles that run as daemons: they take `--config FILE.toml`, `--print-config` and a
/// `GOPSWARM_<ROLE>_<FLAG>` environment variable for every flag (see `gopswarm::config`).
const ROLES: &[&str] = &["orchestrator", "host", "merge", "source"];

fn main() -> Result<()> {
    let cli = config::parse::<Cli>(ROLES);
    daemon::set_log_format(cli.log_format);
    match cli.command {
        Command::Launch(o) => commands::launch::run(o),
        Command::Pipeline(args) => std::process::exit(args.run()),
        Command::Qa(o) => commands::qa::run(o),
        Command::Bench(o) => commands::bench::run(o),
        Command::Chunks(o) => commands::chunks::run(o),
        Command::BenchControl(o) => commands::bench_control::run(o),
        Command::Demo(o) => commands::demo::run(o),
        Command::Soak(o) => commands::soak::run(o),
        Command::Init(o) => commands::init::run(o),
        Command::Source(o) => {
            daemon::init_logging();
            daemon::return_freed_memory_periodically();
            source::serve(&o, true)
        }
        Command::Explain(o) => commands::explain::run(o),
        Command::Simulate(o) => commands::simulate::run(o),
        Command::Learn(o) => commands::learn::run(o),
        Command::Host(o) => {
            daemon::init_logging();
            daemon::runtime()?.block_on(host::run(o, daemon::interrupted()))
        }
        Command::Orchestrator(o) => commands::orchestrator::run(o),
        Command::RollingUpdate(o) => commands::control::rolling_update(o),
        Command::Merge(o) => commands::merge::run(o),
        Command::Stream(o) => commands::control::stream(o),
        Command::Acl(o) => commands::acl::run(o),
    }
}
