// SPDX-License-Identifier: MPL-2.0
//! `gopswarm demo`: the whole swarm on this machine.

use anyhow::{Context, Result};
use gopswarm::{qa, swarm::demo};
use gopswarm_agents::{daemon, options::seconds};
use std::path::PathBuf;

const DEMO_PROFILE: &str = "h264, width=640, height=360, bitrate=1200, complexity=3";

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
    fn config(self) -> Result<demo::DemoConfig> {
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
        Ok(demo::DemoConfig {
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
    let report = daemon::runtime()?.block_on(demo::run(o.config()?))?;
    print!("{}", demo::format_report(&report));
    let ok = report.passed();
    println!("{}", if ok { "PASS" } else { "FAIL" });
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
