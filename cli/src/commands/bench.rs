// SPDX-License-Identifier: MPL-2.0
//! `gopswarm bench`: CPU of the swarm against a single encoder, and the chunk path's throughput.

use crate::{bench, qa};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct BenchOptions {
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
}

pub fn run(o: BenchOptions) -> Result<()> {
    let BenchOptions {
        clip,
        out,
        profile,
        redundancy,
        repeat,
    } = o;
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
        ("3-way swarm, signed chunks", c.signed),
    ] {
        println!("{name:<28} {:>9.2} {:>9.2}", cost.cpu, cost.wall);
    }
    println!(
        "swarm/single cpu {:.3}  ideal {:.3}  overhead vs ideal {:+.1}%",
        c.ratio(),
        c.ideal_ratio(),
        c.overhead() * 100.0
    );
    println!(
        "signed swarm/single cpu {:.3}  change from signing {:+.2}%",
        c.signed_ratio(),
        (c.signed_ratio() / c.ratio() - 1.0) * 100.0
    );
    eprintln!("measuring the chunk path ({repeat} passes)");
    let t = bench::chunk_path_throughput(&clip, repeat)?;
    println!(
        "chunk path: {:.1} MB/s, {} chunks, {:.0} us cpu per chunk",
        t.mb_per_s(),
        t.chunks,
        t.cpu_us_per_chunk()
    );
    Ok(())
}
