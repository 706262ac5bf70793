// SPDX-License-Identifier: MPL-2.0
//! Checks on media files with tools nobody here wrote: ffprobe and ffmpeg.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// One decoded video frame as ffprobe sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Presentation time in ns (best-effort timestamp, edit lists applied).
    pub ts_ns: i64,
    pub key: bool,
    pub pict_type: String,
}

#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    pub width: u32,
    pub height: u32,
    pub fps: (u32, u32),
    pub video_start: Option<f64>,
    pub audio_start: Option<f64>,
    pub audio_duration: Option<f64>,
    pub has_audio: bool,
}

fn ffprobe_json(args: &[&str], path: &Path) -> Result<Value> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .output()
        .context("running ffprobe (is ffmpeg installed?)")?;
    if !out.status.success() {
        bail!(
            "ffprobe failed on {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn ratio(s: &str) -> Option<(i64, i64)> {
    let (a, b) = s.split_once('/')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn num(v: &Value) -> Option<f64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_f64())
}

/// Every video frame of the first video stream, in presentation order.
pub fn video_frames(path: &Path) -> Result<Vec<Frame>> {
    let v = ffprobe_json(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=time_base:frame=best_effort_timestamp,key_frame,pict_type",
        ],
        path,
    )?;
    let tb = v["streams"][0]["time_base"]
        .as_str()
        .and_then(ratio)
        .context("no video time base")?;
    let mut frames: Vec<Frame> = v["frames"]
        .as_array()
        .context("no frames")?
        .iter()
        .filter_map(|f| {
            let ts = f["best_effort_timestamp"].as_i64()?;
            Some(Frame {
                ts_ns: ((ts as i128 * tb.0 as i128 * 1_000_000_000) / tb.1 as i128) as i64,
                key: f["key_frame"].as_i64() == Some(1),
                pict_type: f["pict_type"].as_str().unwrap_or("?").to_string(),
            })
        })
        .collect();
    frames.sort_by_key(|f| f.ts_ns);
    Ok(frames)
}

pub fn stream_info(path: &Path) -> Result<StreamInfo> {
    let v = ffprobe_json(
        &[
            "-show_entries",
            "stream=codec_type,width,height,r_frame_rate,start_time,duration",
        ],
        path,
    )?;
    let mut info = StreamInfo::default();
    for s in v["streams"].as_array().context("no streams")? {
        match s["codec_type"].as_str() {
            Some("video") if info.width == 0 => {
                info.width = s["width"].as_u64().unwrap_or(0) as u32;
                info.height = s["height"].as_u64().unwrap_or(0) as u32;
                let (n, d) = s["r_frame_rate"].as_str().and_then(ratio).unwrap_or((0, 1));
                info.fps = (n as u32, d as u32);
                info.video_start = num(&s["start_time"]);
            }
            Some("audio") if !info.has_audio => {
                info.has_audio = true;
                info.audio_start = num(&s["start_time"]);
                info.audio_duration = num(&s["duration"]);
            }
            _ => (),
        }
    }
    Ok(info)
}

/// Decode the whole file with ffmpeg; returns ffmpeg's error output (empty when clean).
pub fn decode_errors(path: &Path) -> Result<String> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .context("running ffmpeg")?;
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() && text.is_empty() {
        text = format!("ffmpeg exited with {}", out.status);
    }
    Ok(text)
}

/// Average Y-PSNR (dB) of `distorted` against `reference`, frame by frame from the start of
/// each; `distorted` is scaled to the reference size when they differ.
pub fn y_psnr(distorted: &Path, reference: &Path) -> Result<f64> {
    let r = stream_info(reference)?;
    let filter = format!(
        "[0:v]scale={}:{}:flags=bicubic,settb=AVTB,setpts=PTS-STARTPTS[d];\
         [1:v]settb=AVTB,setpts=PTS-STARTPTS[r];[d][r]psnr",
        r.width, r.height
    );
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "info", "-i"])
        .arg(distorted)
        .arg("-i")
        .arg(reference)
        .args(["-lavfi", &filter, "-f", "null", "-"])
        .output()
        .context("running ffmpeg psnr")?;
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("PSNR y:"))
        .with_context(|| format!("no PSNR in ffmpeg output: {}", text.trim()))?;
    let y = line
        .split("y:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("PSNR line without y:")?;
    if y == "inf" {
        return Ok(f64::INFINITY);
    }
    Ok(y.parse()?)
}

/// Size of the first video stream's packets in bytes (container overhead excluded).
pub fn video_bytes(path: &Path) -> Result<u64> {
    let v = ffprobe_json(
        &["-select_streams", "v:0", "-show_entries", "packet=size"],
        path,
    )?;
    Ok(v["packets"]
        .as_array()
        .context("no packets")?
        .iter()
        .filter_map(|p| num(&p["size"]))
        .map(|s| s as u64)
        .sum())
}

/// Decode timing of the first video stream, packet by packet in file (decode) order: what MP4,
/// MPEG-TS and browsers (MSE) require of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodeTiming {
    pub packets: usize,
    /// Packets whose DTS is not greater than the previous packet's.
    pub non_increasing_dts: usize,
    /// Packets shown before they are decoded (PTS < DTS).
    pub pts_before_dts: usize,
    /// Packets (MP4 samples) of zero or unknown duration.
    pub zero_duration: usize,
    /// Decode delay (PTS - DTS, ns) of every keyframe, in file order.
    pub key_delays_ns: Vec<i64>,
    /// The first packet with a problem, for the message.
    pub first_problem: Option<String>,
}

impl DecodeTiming {
    /// None when DTS strictly increase, PTS >= DTS, no packet lasts zero and every keyframe has
    /// the same decode delay (within `tolerance_ns`, for container rounding); else what is wrong.
    pub fn problem(&self, tolerance_ns: i64) -> Option<String> {
        let mut wrong = Vec::new();
        if self.packets == 0 {
            wrong.push("no video packets".to_string());
        }
        if self.non_increasing_dts > 0 {
            wrong.push(format!("{} non-increasing DTS", self.non_increasing_dts));
        }
        if self.pts_before_dts > 0 {
            wrong.push(format!("{} with PTS < DTS", self.pts_before_dts));
        }
        if self.zero_duration > 0 {
            wrong.push(format!("{} of zero or no duration", self.zero_duration));
        }
        let (lo, hi) = (
            self.key_delays_ns.iter().min().copied().unwrap_or(0),
            self.key_delays_ns.iter().max().copied().unwrap_or(0),
        );
        if hi - lo > tolerance_ns {
            wrong.push(format!(
                "keyframe decode delay varies from {:.3} to {:.3} s",
                lo as f64 / 1e9,
                hi as f64 / 1e9
            ));
        }
        if wrong.is_empty() {
            return None;
        }
        let mut text = format!(
            "{} of {} packets: {}",
            wrong.len(),
            self.packets,
            wrong.join(", ")
        );
        if let Some(first) = &self.first_problem {
            text.push_str(&format!(" (first: {first})"));
        }
        Some(text)
    }
}

/// Every packet of the first video stream as ffprobe reads it (an MP4, a TS file, or an HLS
/// playlist with all its segments).
pub fn decode_timing(path: &Path) -> Result<DecodeTiming> {
    let v = ffprobe_json(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=time_base:packet=pts,dts,duration,flags",
        ],
        path,
    )?;
    decode_timing_of(&v)
}

/// [`decode_timing`] of ffprobe's JSON (`streams[0].time_base`, `packets[]`).
pub fn decode_timing_of(v: &Value) -> Result<DecodeTiming> {
    let tb = v["streams"][0]["time_base"]
        .as_str()
        .and_then(ratio)
        .context("no video time base")?;
    let ns = |t: i64| ((t as i128 * tb.0 as i128 * 1_000_000_000) / tb.1 as i128) as i64;
    let mut t = DecodeTiming::default();
    let mut prev_dts: Option<i64> = None;
    for (i, packet) in v["packets"]
        .as_array()
        .context("no packets")?
        .iter()
        .enumerate()
    {
        t.packets += 1;
        let pts = packet["pts"].as_i64().map(ns);
        let dts = packet["dts"].as_i64().map(ns);
        let mut problem = None;
        match (dts, prev_dts) {
            (Some(d), Some(prev)) if d <= prev => {
                t.non_increasing_dts += 1;
                problem = Some("DTS not increasing");
            }
            (None, _) => {
                t.non_increasing_dts += 1;
                problem = Some("no DTS");
            }
            _ => (),
        }
        if let (Some(p), Some(d)) = (pts, dts)
            && p < d
        {
            t.pts_before_dts += 1;
            problem = problem.or(Some("PTS < DTS"));
        }
        // ffprobe leaves out a duration it does not know; a sample of zero or unknown length is
        // one a player cannot place.
        if packet["duration"].as_i64().is_none_or(|d| d <= 0) {
            t.zero_duration += 1;
            problem = problem.or(Some("zero or unknown duration"));
        }
        if packet["flags"].as_str().is_some_and(|f| f.starts_with('K'))
            && let (Some(p), Some(d)) = (pts, dts)
        {
            t.key_delays_ns.push(p - d);
        }
        if let Some(what) = problem
            && t.first_problem.is_none()
        {
            t.first_problem = Some(format!(
                "packet {i}: {what}, pts {} dts {} previous dts {}",
                fmt_s(pts),
                fmt_s(dts),
                fmt_s(prev_dts)
            ));
        }
        prev_dts = dts.or(prev_dts);
    }
    Ok(t)
}

fn fmt_s(t: Option<i64>) -> String {
    t.map_or("none".into(), |t| format!("{:.6} s", t as f64 / 1e9))
}

/// Compare two frame lists: same count and every timestamp within `tolerance_ns`.
pub fn compare_frames(source: &[Frame], output: &[Frame], tolerance_ns: i64) -> Result<(), String> {
    if source.len() != output.len() {
        return Err(format!(
            "{} frames in the source, {} in the output",
            source.len(),
            output.len()
        ));
    }
    let base_s = source.first().map(|f| f.ts_ns).unwrap_or(0);
    let base_o = output.first().map(|f| f.ts_ns).unwrap_or(0);
    for (i, (s, o)) in source.iter().zip(output).enumerate() {
        let (ds, dout) = (s.ts_ns - base_s, o.ts_ns - base_o);
        if (ds - dout).abs() > tolerance_ns {
            return Err(format!(
                "frame {i}: source at {:.6} s, output at {:.6} s",
                ds as f64 / 1e9,
                dout as f64 / 1e9
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(packets: &[(i64, i64, Option<i64>, &str)]) -> DecodeTiming {
        let packets: Vec<Value> = packets
            .iter()
            .map(|&(pts, dts, duration, flags)| {
                let mut p = serde_json::json!({"pts": pts, "dts": dts, "flags": flags});
                if let Some(d) = duration {
                    p["duration"] = d.into();
                }
                p
            })
            .collect();
        decode_timing_of(&serde_json::json!({
            "streams": [{"time_base": "1/25"}],
            "packets": packets,
        }))
        .unwrap()
    }

    #[test]
    fn one_encoders_decode_order_passes() {
        // I0 P3 B2 B1 | I4 ...: DTS two frames behind, one decode delay.
        let t = timing(&[
            (0, -2, Some(1), "K_"),
            (3, -1, Some(1), "__"),
            (2, 0, Some(1), "__"),
            (1, 1, Some(1), "__"),
            (4, 2, Some(1), "K_"),
            (5, 3, Some(1), "__"),
        ]);
        assert_eq!(t.problem(0), None, "{t:?}");
        assert_eq!(t.key_delays_ns, vec![80_000_000, 80_000_000]);
    }

    #[test]
    fn every_kind_of_broken_decode_order_is_reported() {
        // What the swarm's joins looked like: DTS repeated at a keyframe three frames early.
        let t = timing(&[
            (0, -2, Some(1), "K_"),
            (2, -1, Some(1), "__"),
            (1, 0, Some(1), "__"),
            (3, 0, Some(1), "K_"),
        ]);
        assert_eq!(t.non_increasing_dts, 1);
        let p = t.problem(0).unwrap();
        assert!(p.contains("1 non-increasing DTS"), "{p}");
        assert!(p.contains("keyframe decode delay varies"), "{p}");
        assert!(p.contains("packet 3"), "{p}");

        let t = timing(&[(0, 0, Some(1), "K_"), (1, 2, Some(1), "__")]);
        assert_eq!(t.pts_before_dts, 1);
        assert!(t.problem(0).unwrap().contains("PTS < DTS"));

        let t = timing(&[(0, 0, Some(0), "K_"), (1, 1, None, "__")]);
        assert_eq!(t.zero_duration, 2);
        assert!(t.problem(0).unwrap().contains("2 of zero or no duration"));
    }
}
