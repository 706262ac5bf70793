// SPDX-License-Identifier: MPL-2.0
//! `gopmerge verify-payload`: real H.264 GOPs with one forged chunk (valid CRC, payload damaged)
//! through the merger's outputs (appsink, fragmented MP4, HLS). The bad GOP is reported lost or
//! replaced by a good redundant copy, every other GOP comes out byte-exact, the outputs decode.

use gopswarm_chunk::{ChunkHeader, FrameRecord, encode_frames, flags, frame_flags};
use gopswarm_test_support::init;
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const FRAME: u64 = 40_000_000;
const GOP_FRAMES: u64 = 10;
const GOP: u64 = FRAME * GOP_FRAMES;

/// A GOP as encoded: its frames' Annex-B bytes and whether each is a keyframe.
type Gop = Vec<(Vec<u8>, bool)>;

/// `gops` GOPs of real H.264 (x264, no B-frames) at `width` x `height`.
fn encode(gops: u64, width: i32, height: i32) -> Vec<Gop> {
    init();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers={} pattern=ball ! video/x-raw,format=I420,width={width},height={height},framerate=25/1 \
         ! x264enc key-int-max={GOP_FRAMES} bframes=0 speed-preset=ultrafast \
         ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=out sync=false",
        gops * GOP_FRAMES
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut out: Vec<Gop> = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let b = sample.buffer().unwrap();
        let key = !b.flags().contains(gst::BufferFlags::DELTA_UNIT);
        if key {
            out.push(Vec::new());
        }
        out.last_mut()
            .expect("the stream opens with a keyframe")
            .push((b.map_readable().unwrap().to_vec(), key));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(out.len() as u64, gops);
    out
}

fn caps(width: i32, height: i32) -> String {
    format!(
        "video/x-h264, stream-format=(string)byte-stream, alignment=(string)au, width=(int){width}, height=(int){height}, framerate=(fraction)25/1"
    )
}

fn chunk(gop: u64, frames: &Gop, host: &str, redundant: bool, codec: &str) -> Vec<u8> {
    let records: Vec<FrameRecord> = frames
        .iter()
        .enumerate()
        .map(|(i, (data, key))| FrameRecord {
            pts_offset: Some((i as u64 * FRAME) as i64),
            dts_offset: Some((i as u64 * FRAME) as i64),
            duration: Some(FRAME),
            flags: if *key { 0 } else { frame_flags::DELTA },
            data: data.clone(),
        })
        .collect();
    let header = ChunkHeader {
        flags: if redundant { flags::REDUNDANT } else { 0 },
        gop_index: gop,
        start_ns: gop * GOP,
        duration_ns: GOP,
        frame_count: records.len() as u32,
        epoch: 1,
        stream_id: "s".into(),
        profile_id: "p".into(),
        host_id: host.into(),
        codec: codec.into(),
        ..Default::default()
    };
    // The CRC is over the forged payload: it proves nothing about who made it.
    gopswarm_chunk::serialize(&header, &encode_frames(&records)).unwrap()
}

/// Every frame of `gop` with garbage slice data (see `garbage_slices`), one seed throughout.
fn garbage_slices(gop: &Gop) -> Gop {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    gop.iter()
        .map(|(data, key)| (gopswarm_test_support::garbage_slices(data, &mut seed), *key))
        .collect()
}

struct Merged {
    /// Output frames' bytes, in order.
    frames: Vec<Vec<u8>>,
    gaps: Vec<(u64, String)>,
    rejected: Vec<(u64, String, String)>,
    stats: gst::Structure,
    error: Option<String>,
    mp4: PathBuf,
    hls: PathBuf,
}

/// appsrc ! gopmerge ! tee ! (appsink) (h264parse ! mp4mux ! filesink) (h264parse ! hlssink2),
/// the merger daemon's outputs.
fn merge(name: &str, chunks: Vec<Vec<u8>>, verify: &str) -> Merged {
    init();
    let dir = std::env::temp_dir().join(format!("gopmerge-verify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("hls")).unwrap();
    let mp4 = dir.join("out.mp4");
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps={} ! gopmerge name=m verify-payload={verify} ! tee name=t \
         t. ! queue ! appsink name=out sync=false wait-on-eos=false \
         t. ! queue ! h264parse ! mp4mux fragment-duration=400 ! filesink location={} \
         t. ! queue ! h264parse ! hlssink2 target-duration=1 playlist-length=0 max-files=0 \
              location={}/segment%05d.ts playlist-location={}/index.m3u8",
        gstgopswarm::PARTIAL_CAPS_NAME,
        mp4.display(),
        dir.join("hls").display(),
        dir.join("hls").display(),
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let merger = pipeline.by_name("m").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    for c in chunks {
        let _ = src.push_buffer(gst::Buffer::from_slice(c));
    }
    let _ = src.end_of_stream();
    let bus = pipeline.bus().unwrap();
    let (mut gaps, mut rejected, mut error) = (Vec::new(), Vec::new(), None);
    let mut frames = Vec::new();
    loop {
        while let Some(s) = sink.try_pull_sample(gst::ClockTime::ZERO) {
            frames.push(s.buffer().unwrap().map_readable().unwrap().to_vec());
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(30)) else {
            panic!("the merger neither finished nor failed within 30 s");
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                error = Some(format!(
                    "{}: {}",
                    e.src().map(|s| s.name()).unwrap_or_default(),
                    e.error()
                ));
                break;
            }
            gst::MessageView::Element(_) => {
                let s = msg.structure().unwrap();
                let gop = s.get::<u64>("gop").unwrap_or(u64::MAX);
                let reason = s.get::<String>("reason").unwrap_or_default();
                match s.name().as_str() {
                    "gopswarm-gap" => gaps.push((gop, reason)),
                    "gopswarm-rejected" => {
                        rejected.push((gop, reason, s.get::<String>("host").unwrap()))
                    }
                    _ => (),
                }
            }
            _ => (),
        }
    }
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::ZERO) {
        frames.push(s.buffer().unwrap().map_readable().unwrap().to_vec());
    }
    let stats = merger.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    Merged {
        frames,
        gaps,
        rejected,
        stats,
        error,
        mp4,
        hls: dir.join("hls"),
    }
}

/// ffmpeg's complaints decoding `path` (empty: clean), and the frames it decoded.
fn ffmpeg_decode(path: &Path) -> (String, u64) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg runs");
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count() as u64;
    (
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
        frames,
    )
}

/// The merger's outputs hold exactly the good GOPs, byte for byte, and decode cleanly.
fn assert_outputs(m: &Merged, gops: &[Gop], expected: &[u64]) {
    assert_eq!(m.error, None, "the merger must not fail");
    let want: Vec<Vec<u8>> = expected
        .iter()
        .flat_map(|&g| gops[g as usize].iter().map(|(d, _)| d.clone()))
        .collect();
    assert_eq!(m.frames.len(), want.len(), "frames out");
    assert!(m.frames == want, "every good GOP byte-exact");
    let (errors, frames) = ffmpeg_decode(&m.mp4);
    assert_eq!(errors, "", "the MP4 decodes without errors");
    assert_eq!(frames, want.len() as u64, "frames in the MP4");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&m.hls)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ts"))
        .collect();
    segments.sort();
    assert!(!segments.is_empty(), "HLS segments written");
    let mut hls_frames = 0;
    for s in &segments {
        let (errors, frames) = ffmpeg_decode(s);
        assert_eq!(errors, "", "{} decodes without errors", s.display());
        hls_frames += frames;
    }
    assert_eq!(hls_frames, want.len() as u64, "frames in the HLS segments");
}

fn stat(m: &Merged, key: &str) -> u64 {
    m.stats.get::<u64>(key).unwrap()
}

/// Each damaged variant of GOP 2 of 5, sent as the only copy: dropped, a gap, the rest exact.
#[test]
fn a_gop_whose_payload_is_damaged_is_a_reported_gap_and_the_output_goes_on() {
    let gops = encode(5, 320, 240);
    let other = encode(1, 352, 288).remove(0);
    let codec = caps(320, 240);
    let variants: Vec<(&str, Gop, &str, &str)> = vec![
        (
            "garbage-slices",
            garbage_slices(&gops[2]),
            "decode",
            "undecodable",
        ),
        (
            "truncated",
            gops[2]
                .iter()
                .map(|(d, k)| (d[..d.len() / 3].to_vec(), *k))
                .collect(),
            "decode",
            "undecodable",
        ),
        (
            "other-resolution",
            other.clone(),
            "parse",
            "invalid-payload",
        ),
        ("other-resolution", other, "decode", "invalid-payload"),
        (
            "zero-length",
            gops[2].iter().map(|(_, k)| (Vec::new(), *k)).collect(),
            "parse",
            "invalid-payload",
        ),
        (
            "not-annex-b",
            gops[2]
                .iter()
                .map(|(d, k)| (d.iter().map(|b| b | 0x80).collect(), *k))
                .collect(),
            "parse",
            "invalid-payload",
        ),
    ];
    for (name, bad, verify, reason) in variants {
        let chunks = (0..5u64)
            .map(|g| {
                if g == 2 {
                    chunk(g, &bad, "forger", false, &codec)
                } else {
                    chunk(g, &gops[g as usize], "host-a", false, &codec)
                }
            })
            .collect();
        let m = merge(&format!("{name}-{verify}"), chunks, verify);
        assert_eq!(
            m.rejected,
            vec![(2, reason.to_string(), "forger".to_string())],
            "{name} ({verify})"
        );
        assert_eq!(m.gaps, vec![(2, reason.to_string())], "{name} ({verify})");
        assert_eq!(stat(&m, "lost"), 1, "{name}");
        assert_eq!(stat(&m, "rejected"), 1, "{name}");
        assert_eq!(stat(&m, "gops-out"), 4, "{name}");
        assert_outputs(&m, &gops, &[0, 1, 3, 4]);
    }
}

/// A good redundant copy of the damaged GOP takes its place: nothing is lost.
#[test]
fn a_good_redundant_copy_replaces_a_damaged_gop() {
    let gops = encode(4, 320, 240);
    let codec = caps(320, 240);
    let mut chunks: Vec<Vec<u8>> = (0..4u64)
        .map(|g| {
            if g == 1 {
                chunk(g, &garbage_slices(&gops[1]), "forger", false, &codec)
            } else {
                chunk(g, &gops[g as usize], "host-a", false, &codec)
            }
        })
        .collect();
    chunks.insert(2, chunk(1, &gops[1], "host-b", true, &codec));
    let m = merge("redundant", chunks, "decode");
    assert_eq!(
        m.rejected,
        vec![(1, "undecodable".to_string(), "forger".to_string())]
    );
    assert_eq!(m.gaps, vec![]);
    assert_eq!(stat(&m, "lost"), 0);
    assert_eq!(stat(&m, "rejected"), 1);
    assert_eq!(stat(&m, "redundant-used"), 1);
    assert_outputs(&m, &gops, &[0, 1, 2, 3]);
}

/// Real 720p GOPs pass every check (no false refusals); prints the CPU time each check costs
/// (one decode of each GOP for `decode`).
#[test]
fn real_720p_gops_pass_every_check_and_the_cost_is_printed() {
    let gops = encode(10, 1280, 720);
    let codec = caps(1280, 720);
    let chunks: Vec<Vec<u8>> = (0..gops.len() as u64)
        .map(|g| chunk(g, &gops[g as usize], "host-a", false, &codec))
        .collect();
    let mut cpu = Vec::new();
    for verify in ["none", "parse", "decode"] {
        let before = cpu_time();
        let m = merge(&format!("cost-{verify}"), chunks.clone(), verify);
        cpu.push((verify, cpu_time() - before));
        assert_outputs(&m, &gops, &(0..gops.len() as u64).collect::<Vec<_>>());
        assert_eq!(stat(&m, "rejected"), 0, "real GOPs pass the {verify} check");
    }
    let frames = (gops.len() as u64 * GOP_FRAMES) as f64;
    for (verify, t) in cpu {
        println!(
            "verify-payload={verify}: {:.1} ms CPU per 720p frame (whole pipeline)",
            t * 1000.0 / frames
        );
    }
}

/// This process's CPU time (user + system), in seconds.
fn cpu_time() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}
