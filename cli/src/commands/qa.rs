// SPDX-License-Identifier: MPL-2.0
//! `gopswarm qa`: the local 3-way swarm on the sample media, every output checked.

use crate::qa;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct QaOptions {
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
}

/// Prints the PASS/FAIL table; exits 1 when a clip fails.
pub fn run(o: QaOptions) -> Result<()> {
    let QaOptions {
        clips,
        out,
        profile,
        no_quality,
        plot,
    } = o;
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
                let swarm_series = crate::plot::series(
                    &output,
                    &clip.path,
                    gop_s,
                    &out.join(format!("{name}-swarm")),
                )?;
                let single_series = crate::plot::series(
                    &single,
                    &clip.path,
                    gop_s,
                    &out.join(format!("{name}-single")),
                )?;
                let svg_path = out.join(format!("{name}-gops.svg"));
                std::fs::write(
                    &svg_path,
                    crate::plot::svg(
                        &format!("{name}: bitrate and Y-PSNR per 2 s GOP, profile \"{profile}\""),
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
    Ok(())
}
