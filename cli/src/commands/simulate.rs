// SPDX-License-Identifier: MPL-2.0
//! `gopswarm simulate`: the swarm on a simulated clock, reactive against proactive policy.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SimulateOptions {
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
}

pub fn run(o: SimulateOptions) -> Result<()> {
    let defaults = gopswarm_sim::sim::SimConfig::default();
    let cfg = gopswarm_sim::sim::SimConfig {
        seed: o.seed,
        hosts: o.hosts,
        streams: o.streams,
        trace: gopswarm_sim::traces::TraceConfig {
            seed: o.seed,
            days: o.days,
            base: o.demand,
            ..defaults.trace.clone()
        },
        warmup_days: o.days as f64 / 2.0,
        horizon: o.horizon,
        boot_minutes: o.boot_minutes,
        churn: !o.no_churn,
        placement_salt: o.placement_salt,
        ..defaults
    };
    let c = gopswarm::swarm::simulate::run(cfg, o.placement_noise, &o.out)?;
    print!("{}", gopswarm::swarm::simulate::report(&c));
    println!("report, plots and JSON in {}", o.out.display());
    Ok(())
}
