// SPDX-License-Identifier: MPL-2.0
//! QA over the sample media: run the local swarm, check the output against the source with
//! ffprobe/ffmpeg, and compare quality and size with a single encode of the same profile.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{media, pipelines};
use gopswarm_agents::pipeline::{self, Outcome};

/// Timestamps must match to within this (containers round to their own timescales).
pub const TIMESTAMP_TOLERANCE_NS: i64 = 500_000;
pub const DEFAULT_PROFILE: &str = "h264, bitrate=3000, complexity=5";
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Debug, Clone)]
pub struct Clip {
    pub name: String,
    pub path: PathBuf,
    pub has_audio: bool,
}

pub const SAMPLE_CLIPS: [&str; 4] = [
    "bigbuckbunny",
    "bikes",
    "carphone_pristine",
    "synthetic-720p25",
];

pub fn clip(name: &str) -> Result<Clip> {
    let path = crate::sample_media_dir()
        .with_context(|| format!("clip {name}"))?
        .join(format!("{name}.mp4"));
    if !path.is_file() {
        anyhow::bail!(
            "clip {name}: {} is missing: run test-media/fetch.sh in a source checkout (it \
             makes test-media/cache/), and set GOPSWARM_MEDIA to that folder when running an \
             installed gopswarm",
            path.display()
        );
    }
    let info = media::stream_info(&path)?;
    Ok(Clip {
        name: name.to_string(),
        path,
        has_audio: info.has_audio,
    })
}

/// Run the local 3-way swarm on a clip; returns the output MP4 and the run's messages.
pub fn swarm(clip: &Clip, out_dir: &Path, vars: &[(&str, &str)]) -> Result<(PathBuf, Outcome)> {
    let prefix = out_dir.join(format!("{}-swarm", clip.name));
    pipeline::prepare_out(&prefix)?;
    let prefix_s = prefix.to_string_lossy().to_string();
    let src = clip.path.to_string_lossy().to_string();
    let mut all: Vec<(&str, &str)> = vec![("SRC", &src), ("OUT", &prefix_s)];
    all.extend_from_slice(vars);
    let name = if clip.has_audio {
        "local-swarm"
    } else {
        "local-swarm-video"
    };
    let outcome = pipelines::play(name, &all, RUN_TIMEOUT)
        .with_context(|| format!("{name} on {}", clip.name))?;
    Ok((PathBuf::from(format!("{prefix_s}.mp4")), outcome))
}

/// The reference: one encoder over the whole clip with the same profile.
pub fn single(clip: &Clip, out_dir: &Path, profile: &str) -> Result<PathBuf> {
    let prefix = out_dir.join(format!("{}-single", clip.name));
    pipeline::prepare_out(&prefix)?;
    let prefix_s = prefix.to_string_lossy().to_string();
    let src = clip.path.to_string_lossy().to_string();
    pipelines::play(
        "single-encode",
        &[("SRC", &src), ("OUT", &prefix_s), ("PROFILE", profile)],
        RUN_TIMEOUT,
    )?;
    Ok(PathBuf::from(format!("{prefix_s}.mp4")))
}

#[derive(Debug, Default)]
pub struct Report {
    pub clip: String,
    pub source_frames: usize,
    pub output_frames: usize,
    /// First timestamp mismatch, if any.
    pub timestamps: Option<String>,
    /// What is wrong with the decode timestamps (DTS not increasing, PTS < DTS, zero-length
    /// samples, decode delay not constant) in the MP4 or the HLS output, if anything.
    pub decode_timing: Option<String>,
    pub decode_errors: String,
    /// Audio offset against video, output minus source, in frames; None without audio.
    pub audio_offset_frames: Option<f64>,
    pub gops_lost: u64,
    pub psnr_swarm: Option<f64>,
    pub psnr_single: Option<f64>,
    pub bytes_swarm: Option<u64>,
    pub bytes_single: Option<u64>,
}

impl Report {
    pub fn frame_exact(&self) -> bool {
        self.source_frames == self.output_frames
            && self.timestamps.is_none()
            && self.decode_timing.is_none()
            && self.decode_errors.is_empty()
            && self.gops_lost == 0
            && self.audio_offset_frames.is_none_or(|o| o.abs() <= 1.0)
    }
    pub fn psnr_delta(&self) -> Option<f64> {
        Some(self.psnr_swarm? - self.psnr_single?)
    }
    pub fn size_delta(&self) -> Option<f64> {
        Some(self.bytes_swarm? as f64 / self.bytes_single? as f64 - 1.0)
    }
    /// Quality within 0.3 dB of the single encode at sizes within 3%.
    pub fn quality_ok(&self) -> Option<bool> {
        Some(self.psnr_delta()? >= -0.3 && self.size_delta()?.abs() <= 0.03)
    }
}

/// The HLS folder the pipelines write beside `OUT.mp4`: `OUT-hls/index.m3u8`.
pub fn hls_beside(mp4: &Path) -> Option<PathBuf> {
    let stem = mp4.file_stem()?.to_string_lossy().to_string();
    let playlist = mp4.with_file_name(format!("{stem}-hls")).join("index.m3u8");
    playlist.is_file().then_some(playlist)
}

/// Decode-timing problems of an output and of the HLS written beside it, if any.
pub fn decode_timing_problem(output: &Path) -> Result<Option<String>> {
    let mut problems = Vec::new();
    for file in std::iter::once(output.to_path_buf()).chain(hls_beside(output)) {
        if let Some(p) = media::decode_timing(&file)?.problem(TIMESTAMP_TOLERANCE_NS) {
            problems.push(format!("{}: {p}", file.display()));
        }
    }
    Ok((!problems.is_empty()).then(|| problems.join("; ")))
}

/// Check a merged output against its source.
pub fn check_output(clip: &Clip, output: &Path, outcome: &Outcome) -> Result<Report> {
    let src_frames = media::video_frames(&clip.path)?;
    let out_frames = media::video_frames(output)?;
    let mut report = Report {
        clip: clip.name.clone(),
        source_frames: src_frames.len(),
        output_frames: out_frames.len(),
        timestamps: media::compare_frames(&src_frames, &out_frames, TIMESTAMP_TOLERANCE_NS).err(),
        decode_timing: decode_timing_problem(output)?,
        decode_errors: media::decode_errors(output)?,
        gops_lost: outcome
            .message("gopswarm-merge-summary")
            .and_then(|s| s.get::<u64>("lost").ok())
            .unwrap_or(0)
            + outcome.count("gopswarm-gap") as u64,
        ..Default::default()
    };
    if clip.has_audio {
        let s = media::stream_info(&clip.path)?;
        let o = media::stream_info(output)?;
        let frame = s.fps.1 as f64 / s.fps.0.max(1) as f64;
        report.audio_offset_frames =
            match (s.audio_start, s.video_start, o.audio_start, o.video_start) {
                (Some(sa), Some(sv), Some(oa), Some(ov)) if o.has_audio => {
                    Some(((oa - ov) - (sa - sv)) / frame)
                }
                _ => Some(f64::INFINITY),
            };
    }
    Ok(report)
}

/// Add quality and size figures against the source and a single encode.
pub fn add_quality(
    report: &mut Report,
    clip: &Clip,
    swarm_out: &Path,
    single_out: &Path,
) -> Result<()> {
    report.psnr_swarm = Some(media::y_psnr(swarm_out, &clip.path)?);
    report.psnr_single = Some(media::y_psnr(single_out, &clip.path)?);
    report.bytes_swarm = Some(media::video_bytes(swarm_out)?);
    report.bytes_single = Some(media::video_bytes(single_out)?);
    Ok(())
}

pub fn print_table(reports: &[Report]) -> usize {
    println!(
        "{:<20} {:>11} {:>10} {:>7} {:>7} {:>9} {:>5} {:>8} {:>8} {:>7} {:>7}  result",
        "clip",
        "frames",
        "timestamps",
        "dts",
        "decode",
        "audio",
        "lost",
        "psnr",
        "single",
        "dB",
        "size"
    );
    let mut failed = 0;
    for r in reports {
        let quality = r.quality_ok();
        let pass = r.frame_exact() && quality != Some(false);
        if !pass {
            failed += 1;
        }
        let opt = |v: Option<f64>, p: usize| v.map(|v| format!("{v:.p$}")).unwrap_or("-".into());
        println!(
            "{:<20} {:>11} {:>10} {:>7} {:>7} {:>9} {:>5} {:>8} {:>8} {:>7} {:>7}  {}",
            r.clip,
            format!("{}/{}", r.output_frames, r.source_frames),
            if r.timestamps.is_none() {
                "exact"
            } else {
                "DIFFER"
            },
            if r.decode_timing.is_none() {
                "rising"
            } else {
                "BROKEN"
            },
            if r.decode_errors.is_empty() {
                "clean"
            } else {
                "ERRORS"
            },
            r.audio_offset_frames
                .map(|o| format!("{o:+.2}f"))
                .unwrap_or("none".into()),
            r.gops_lost,
            opt(r.psnr_swarm, 2),
            opt(r.psnr_single, 2),
            opt(r.psnr_delta(), 2),
            r.size_delta()
                .map(|d| format!("{:+.1}%", d * 100.0))
                .unwrap_or("-".into()),
            if pass { "PASS" } else { "FAIL" }
        );
        if let Some(e) = &r.timestamps {
            println!("    timestamps: {e}");
        }
        if let Some(e) = &r.decode_timing {
            println!("    dts: {e}");
        }
        if !r.decode_errors.is_empty() {
            println!(
                "    decode: {}",
                r.decode_errors.lines().next().unwrap_or("")
            );
        }
    }
    let passed = reports.len() - failed;
    println!("{passed} passed, {failed} failed");
    failed
}
