// SPDX-License-Identifier: MPL-2.0
//! `gopswarm bench-control`: the control plane's benchmarks.

use anyhow::Result;

#[derive(clap::Args)]
pub struct BenchControlOptions {
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
}

pub fn run(o: BenchControlOptions) -> Result<()> {
    gopswarm::bench_control::print_assignment(o.hosts, o.streams, o.slots, o.rounds);
    gopswarm::bench_control::print_rescore(o.hosts, o.rounds);
    gopswarm::bench_control::print_throughput(o.messages)
}
