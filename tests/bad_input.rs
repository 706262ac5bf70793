// SPDX-License-Identifier: MPL-2.0
//! Bad input: a clear error, a non-zero exit, never a hang, nothing else lost.

use gopswarm_agents::pipeline;
use gopswarm_test_support::e2e::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn runner(args: &[&str]) -> (i32, String, Duration) {
    let start = Instant::now();
    let out = Command::new(gopswarm::repo_root().join("pipelines/run"))
        .args(args)
        .current_dir(gopswarm::repo_root())
        .output()
        .expect("pipelines/run starts");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
        start.elapsed(),
    )
}

fn media(name: &str) -> String {
    gopswarm::media_dir()
        .join(name)
        .to_string_lossy()
        .to_string()
}

#[test]
fn corrupt_source_stops_with_the_decoder_error() {
    let out = out_dir("corrupt");
    let prefix = out.join("c").to_string_lossy().to_string();
    let src = media("corrupt.mp4");
    let (code, stderr, took) = runner(&[
        "local-swarm",
        &format!("SRC={src}"),
        &format!("OUT={prefix}"),
        "TIMEOUT=120",
    ]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("ERROR: from element") && stderr.contains("avdec_h264"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // In-process the same pipeline returns the error.
    let err = pipelines::play(
        "local-swarm",
        &[("SRC", &src), ("OUT", &prefix)],
        Duration::from_secs(120),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("avdec_h264"), "{err:#}");
}

#[test]
fn truncated_source_fails_fast() {
    let out = out_dir("truncated");
    let prefix = out.join("t").to_string_lossy().to_string();
    let src = media("truncated.mp4");
    let err = pipelines::play(
        "local-swarm-video",
        &[("SRC", &src), ("OUT", &prefix)],
        Duration::from_secs(60),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("no playable streams"),
        "{err:#}"
    );
    let (code, stderr, took) = runner(&[
        "local-swarm-video",
        &format!("SRC={src}"),
        &format!("OUT={prefix}"),
        "TIMEOUT=120",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no playable streams"), "{stderr}");
    // gst-launch-1.0 1.22 sometimes keeps running after a preroll error: the runner ends it.
    assert!(took < Duration::from_secs(40), "took {took:?}");
}

#[test]
fn runner_rejects_missing_files_and_unknown_variables() {
    let (code, stderr, _) = runner(&["local-swarm", "SRC=no/such/file.mp4", "OUT=target/e2e/x"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no/such/file.mp4"), "{stderr}");
    let (code, stderr, _) = runner(&["local-swarm", "OUT=target/e2e/x"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("SRC"), "{stderr}");
    let (code, stderr, _) = runner(&[
        "local-swarm",
        &format!("SRC={}", media("bikes.mp4")),
        "OUT=target/e2e/x",
        "COLOUR=blue",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("COLOUR"), "{stderr}");
    let (code, _, _) = runner(&["no-such-pipeline"]);
    assert_eq!(code, 2);
}

#[test]
fn corrupt_and_truncated_partial_streams_lose_only_the_damaged_gops() {
    let out = out_dir("corrupt-chunks");
    let clip = clip("bikes");
    let src = clip.path.to_string_lossy().to_string();
    // One host encodes every GOP into a file.
    let file = out.join("all.gsw");
    let file_s = file.to_string_lossy().to_string();
    pipelines::play(
        "host-file",
        &[
            ("SRC", &src),
            ("OUT", &file_s),
            ("INDEX", "0"),
            ("COUNT", "1"),
            ("GOP", "1000000000"),
        ],
        Duration::from_secs(300),
    )
    .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let mut d = gopswarm_chunk::Deframer::default();
    d.push(&bytes);
    let mut offsets = Vec::new();
    let mut pos = 0;
    while let Some(c) = d.next_chunk() {
        offsets.push((pos, c.bytes().len()));
        pos += c.bytes().len();
    }
    assert_eq!(offsets.len(), 10);
    // Flip a byte inside chunk 3, cut chunk 6 short, insert garbage before chunk 8.
    bytes[offsets[3].0 + offsets[3].1 / 2] ^= 0x5a;
    let (c6, l6) = offsets[6];
    let (c8, _) = offsets[8];
    let mut damaged = bytes[..c6 + l6 / 2].to_vec();
    damaged.extend_from_slice(&bytes[c6 + l6..c8]);
    damaged.extend_from_slice(b"\xffGSWC garbage that looks like the start of a chunk");
    damaged.extend_from_slice(&bytes[c8..]);
    let bad = out.join("damaged.gsw");
    std::fs::write(&bad, damaged).unwrap();

    let mp4 = out.join("merged.mp4");
    let desc = format!(
        "filesrc location={} ! partialdepay name=d ! gopmerge start-gop=0 ! h264parse ! mp4mux ! filesink location={}",
        bad.display(),
        mp4.display()
    );
    let pipeline = pipeline::parse(&desc).unwrap();
    let outcome = pipeline::play(&pipeline, Duration::from_secs(120)).unwrap();
    let mut gaps: Vec<u64> = outcome
        .messages
        .iter()
        .filter(|s| s.name() == "gopswarm-gap")
        .map(|s| s.get::<u64>("gop").unwrap())
        .collect();
    gaps.sort();
    assert_eq!(gaps, vec![3, 6]);
    assert!(outcome.count("gopswarm-depay-resync") >= 2);
    assert_eq!(media::decode_errors(&mp4).unwrap(), "");
    assert_eq!(
        media::decode_timing(&mp4)
            .unwrap()
            .problem(qa::TIMESTAMP_TOLERANCE_NS),
        None
    );
    assert_eq!(media::video_frames(&mp4).unwrap().len(), 250 - 2 * 25);
}
