// SPDX-License-Identifier: MPL-2.0
//! Per-GOP bitrate and quality of the swarm against a single encode, as an SVG picture.

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// Per-GOP figures of one encode.
#[derive(Debug, Clone, Default)]
pub struct GopSeries {
    pub kbps: Vec<f64>,
    pub psnr_y: Vec<f64>,
}

/// Bytes per GOP (kbit/s over the GOP) from ffprobe's packets.
fn gop_kbps(path: &Path, gop_s: f64) -> Result<Vec<f64>> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,size",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .context("ffprobe")?;
    let mut bytes: Vec<f64> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut it = line.split(',');
        let (Some(t), Some(s)) = (it.next(), it.next()) else {
            continue;
        };
        let (Ok(t), Ok(s)) = (t.parse::<f64>(), s.trim().parse::<f64>()) else {
            continue;
        };
        let g = (t / gop_s + 1e-6).floor().max(0.0) as usize;
        if bytes.len() <= g {
            bytes.resize(g + 1, 0.0);
        }
        bytes[g] += s;
    }
    Ok(bytes.iter().map(|b| b * 8.0 / gop_s / 1000.0).collect())
}

/// Mean Y-PSNR per GOP against the reference, from ffmpeg's per-frame psnr stats.
fn gop_psnr(
    distorted: &Path,
    reference: &Path,
    frames_per_gop: f64,
    stats: &Path,
) -> Result<Vec<f64>> {
    let r = crate::media::stream_info(reference)?;
    let filter = format!(
        "[0:v]scale={}:{}:flags=bicubic,settb=AVTB,setpts=PTS-STARTPTS[d];\
         [1:v]settb=AVTB,setpts=PTS-STARTPTS[r];[d][r]psnr=stats_file={}",
        r.width,
        r.height,
        stats.display()
    );
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(distorted)
        .arg("-i")
        .arg(reference)
        .args(["-lavfi", &filter, "-f", "null", "-"])
        .status()?;
    anyhow::ensure!(status.success(), "ffmpeg psnr failed");
    let text = std::fs::read_to_string(stats)?;
    let mut sums: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        let n = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("n:"))
            .and_then(|v| v.parse::<f64>().ok());
        let y = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("psnr_y:"))
            .and_then(|v| v.parse::<f64>().ok().or(Some(100.0)));
        if let (Some(n), Some(y)) = (n, y) {
            let g = ((n - 1.0) / frames_per_gop).floor() as usize;
            if sums.len() <= g {
                sums.resize(g + 1, (0.0, 0.0));
            }
            sums[g].0 += y.min(100.0);
            sums[g].1 += 1.0;
        }
    }
    Ok(sums.iter().map(|(s, c)| s / c.max(1.0)).collect())
}

pub fn series(encoded: &Path, source: &Path, gop_s: f64, work: &Path) -> Result<GopSeries> {
    let info = crate::media::stream_info(source)?;
    let fps = info.fps.0 as f64 / info.fps.1.max(1) as f64;
    let stats = work.with_extension("psnr.log");
    Ok(GopSeries {
        kbps: gop_kbps(encoded, gop_s)?,
        psnr_y: gop_psnr(encoded, source, fps * gop_s, &stats)?,
    })
}

/// Two panels: kbit/s per GOP (bars) and Y-PSNR per GOP (lines), swarm against single encode.
pub fn svg(title: &str, swarm: &GopSeries, single: &GopSeries) -> String {
    let (w, panel_h, left, top) = (900.0, 220.0, 60.0, 40.0);
    let n = swarm.kbps.len().max(single.kbps.len()).max(1);
    let plot_w = w - left - 20.0;
    let step = plot_w / n as f64;
    let max_kbps = swarm
        .kbps
        .iter()
        .chain(&single.kbps)
        .cloned()
        .fold(1.0, f64::max)
        * 1.1;
    let all_psnr: Vec<f64> = swarm.psnr_y.iter().chain(&single.psnr_y).cloned().collect();
    let lo = all_psnr
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min)
        .floor()
        - 1.0;
    let hi = all_psnr
        .iter()
        .cloned()
        .fold(f64::NEG_INFINITY, f64::max)
        .ceil()
        + 1.0;
    let h = top + 2.0 * panel_h + 90.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="20" font-size="15">{title}</text>"#
    );
    // Bitrate panel.
    let y0 = top + panel_h;
    let _ = writeln!(
        s,
        r#"<text x="5" y="{}" >kbit/s</text><line x1="{left}" y1="{y0}" x2="{}" y2="{y0}" stroke="black"/>"#,
        top + 10.0,
        w - 20.0
    );
    for (series, colour, offset) in [(&single.kbps, "#9aa", 0.1), (&swarm.kbps, "#c33", 0.5)] {
        for (g, v) in series.iter().enumerate() {
            let bh = v / max_kbps * (panel_h - 20.0);
            let x = left + g as f64 * step + step * offset;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{colour}"/>"#,
                y0 - bh,
                step * 0.38
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="{}" fill="#555">max {:.0} kbit/s</text>"##,
        top + 10.0,
        max_kbps / 1.1
    );
    // PSNR panel.
    let top2 = y0 + 40.0;
    let y1 = top2 + panel_h;
    let _ = writeln!(
        s,
        r#"<text x="5" y="{}">Y-PSNR dB</text><line x1="{left}" y1="{y1}" x2="{}" y2="{y1}" stroke="black"/>"#,
        top2 + 10.0,
        w - 20.0
    );
    for v in [lo, (lo + hi) / 2.0, hi] {
        let y = y1 - (v - lo) / (hi - lo) * panel_h;
        let _ = writeln!(s, r##"<text x="20" y="{y:.1}" fill="#555">{v:.1}</text>"##);
    }
    for (series, colour) in [(&single.psnr_y, "#699"), (&swarm.psnr_y, "#c33")] {
        let points: Vec<String> = series
            .iter()
            .enumerate()
            .map(|(g, v)| {
                format!(
                    "{:.1},{:.1}",
                    left + (g as f64 + 0.5) * step,
                    y1 - (v - lo) / (hi - lo) * panel_h
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            points.join(" ")
        );
    }
    let ly = y1 + 30.0;
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{}" width="12" height="12" fill="#c33"/><text x="{}" y="{ly}">3-way swarm</text>"##,
        ly - 10.0,
        left + 18.0
    );
    let _ = writeln!(
        s,
        r##"<rect x="{}" y="{}" width="12" height="12" fill="#9aa"/><text x="{}" y="{ly}">single encoder, same profile</text>"##,
        left + 140.0,
        ly - 10.0,
        left + 158.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{ly}">x axis: GOP index (0..{})</text>"#,
        left + 400.0,
        n - 1
    );
    s.push_str("</svg>\n");
    s
}
