//! `gopswarm`: the command line of the gopswarm live-encoding swarm.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

use gopswarm::{bench, qa};

#[derive(Parser)]
#[command(
    name = "gopswarm",
    version,
    about = "gopswarm live-encoding swarm: QA, benchmarks and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
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
                "{:>6} {:>8} {:>12} {:>7} {:>6} {:>9}  host/profile",
                "gop", "kind", "start s", "frames", "epoch", "bytes"
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
                    "{:>6} {:>8} {:>12.3} {:>7} {:>6} {:>9}  {}/{}",
                    h.gop_index,
                    kind,
                    h.start_ns as f64 / 1e9,
                    h.frame_count,
                    h.epoch,
                    c.bytes().len(),
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
    }
    Ok(())
}
