// SPDX-License-Identifier: MPL-2.0
//! Faults in the data plane: a swarm member dies mid-stream (with and without redundancy), and
//! chunks are lost in transport (recovered from Reed-Solomon parity).

use gopswarm_agents::pipeline;
use gopswarm_test_support::e2e::*;
use gst::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const GOP_1S: &str = "1000000000";
const TIMEOUT: Duration = Duration::from_secs(600);

/// The element of `factory` in `pipeline` whose `host-id` is `host`.
fn payloader(pipeline: &gst::Pipeline, host: &str) -> gst::Element {
    pipeline
        .iterate_recurse()
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| {
            e.factory().is_some_and(|f| f.name() == "partialpay")
                && e.property::<String>("host-id") == host
        })
        .unwrap_or_else(|| panic!("no partialpay for {host}"))
}

/// Make `host` die at GOP `from`: from its first chunk of that GOP on nothing leaves it, and its
/// connection to the merger closes (EOS), as when a host process is killed. Returns the GOPs
/// that were cut off.
fn kill_at(pipeline: &gst::Pipeline, host: &str, from: u64) -> Arc<Mutex<Vec<u64>>> {
    let pay = payloader(pipeline, host);
    let src = pay.static_pad("src").unwrap();
    let peer = src.peer().unwrap();
    let cut = Arc::new(Mutex::new(Vec::new()));
    let dead = Arc::new(AtomicBool::new(false));
    let cut2 = cut.clone();
    // A killed host sends nothing more at all: after death its events are swallowed too.
    // (Sticky events pushed at an EOS'd peer would return EOS upstream through the tee and stop
    // the shared source for every branch, which no real host death can do to other hosts.)
    src.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            if info.event().is_some() {
                return if dead.load(Ordering::SeqCst) {
                    gst::PadProbeReturn::Handled
                } else {
                    gst::PadProbeReturn::Ok
                };
            }
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let header = gopswarm_chunk::parse(&buffer.map_readable().unwrap())
                .unwrap()
                .0
                .header;
            if header.gop_index < from && !dead.load(Ordering::SeqCst) {
                return gst::PadProbeReturn::Ok;
            }
            if !header.is_parity() {
                cut2.lock().unwrap().push(header.gop_index);
            }
            if !dead.swap(true, Ordering::SeqCst) {
                peer.send_event(gst::event::Eos::new());
            }
            gst::PadProbeReturn::Drop
        },
    );
    cut
}

fn local_swarm(
    clip: &qa::Clip,
    out: &std::path::Path,
    vars: &[(&str, &str)],
) -> (gst::Pipeline, std::path::PathBuf) {
    let prefix = out.join(&clip.name);
    pipeline::prepare_out(&prefix).unwrap();
    let prefix_s = prefix.to_string_lossy().to_string();
    let src = clip.path.to_string_lossy().to_string();
    let mut all = vec![("SRC", src.as_str()), ("OUT", prefix_s.as_str())];
    all.extend_from_slice(vars);
    let words = pipelines::load("local-swarm-video")
        .unwrap()
        .expand(&all)
        .unwrap();
    (
        pipeline::parse_words(&words).unwrap(),
        std::path::PathBuf::from(format!("{prefix_s}.mp4")),
    )
}

#[test]
fn redundancy_one_survives_a_member_dying_at_a_random_gop() {
    redundancy_death(None);
}

/// The earliest death: on the member's first primary GOP, after only its copy of GOP 0 went out.
#[test]
fn redundancy_one_survives_a_member_dying_on_its_first_primary_gop() {
    redundancy_death(Some(1));
}

fn redundancy_death(forced: Option<u64>) {
    let clip = clip("bikes"); // 10 s: ten 1 s GOPs
    let out = out_dir(&format!("redundancy-death-{forced:?}"));
    let (pipeline, output) = local_swarm(&clip, &out, &[("GOP", GOP_1S), ("REDUNDANCY", "1")]);
    let (mut rng, seed) = Rng::from_time();
    // GOPSWARM_DEATH_GOP replays a failing run.
    let death = forced
        .or_else(|| {
            std::env::var("GOPSWARM_DEATH_GOP")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1 + rng.below(7));
    println!("seed {seed}: branch1 dies at GOP {death}");
    let cut = kill_at(&pipeline, "branch1", death);
    let outcome = pipeline::play(&pipeline, TIMEOUT).unwrap();
    assert!(!cut.lock().unwrap().is_empty(), "the branch did die");

    let report = qa::check_output(&clip, &output, &outcome).unwrap();
    qa::print_table(std::slice::from_ref(&report));
    println!(
        "merge summary: {:?}",
        outcome.message("gopswarm-merge-summary")
    );
    assert_frame_exact(&report);
    let summary = outcome.message("gopswarm-merge-summary").unwrap();
    assert_eq!(summary.get::<u64>("lost").unwrap(), 0);
    assert_eq!(summary.get::<u64>("gops-out").unwrap(), 10);
    // The dead branch was primary for every GOP k >= death with k % 3 == 1: copies stood in.
    let orphaned = (death..10).filter(|k| k % 3 == 1).count() as u64;
    assert_eq!(summary.get::<u64>("redundant-used").unwrap(), orphaned);
}

#[test]
fn without_redundancy_lost_gops_are_bounded_reported_and_what_ffprobe_finds_missing() {
    let clip = clip("bikes");
    let out = out_dir("no-redundancy-death");
    let (pipeline, output) = local_swarm(&clip, &out, &[("GOP", GOP_1S)]);
    let death = 4;
    kill_at(&pipeline, "branch1", death);
    let outcome = pipeline::play(&pipeline, TIMEOUT).unwrap();

    let expected_lost: Vec<u64> = (death..10).filter(|k| k % 3 == 1).collect(); // 4 and 7
    let mut reported: Vec<u64> = outcome
        .messages
        .iter()
        .filter(|s| s.name() == "gopswarm-gap")
        .map(|s| s.get::<u64>("gop").unwrap())
        .collect();
    reported.sort();
    assert_eq!(reported, expected_lost);

    // ffprobe: exactly the frames of those GOPs are missing, nothing else, and it decodes.
    assert_eq!(media::decode_errors(&output).unwrap(), "");
    assert_eq!(
        media::decode_timing(&output)
            .unwrap()
            .problem(qa::TIMESTAMP_TOLERANCE_NS),
        None
    );
    let src: Vec<i64> = media::video_frames(&clip.path)
        .unwrap()
        .iter()
        .map(|f| f.ts_ns)
        .collect();
    let got: Vec<i64> = media::video_frames(&output)
        .unwrap()
        .iter()
        .map(|f| f.ts_ns)
        .collect();
    let gop_of = |ts: i64| (ts / 1_000_000_000) as u64;
    let missing_gops: std::collections::BTreeSet<u64> = src
        .iter()
        .filter(|ts| !got.iter().any(|g| (g - **ts).abs() < 500_000))
        .map(|&ts| gop_of(ts))
        .collect();
    assert_eq!(missing_gops.into_iter().collect::<Vec<_>>(), expected_lost);
    assert_eq!(got.len(), src.len() - 25 * expected_lost.len());
}

/// Encode bikes on three hosts (compressed-domain selection: its keyframes are off the grid, so
/// this also runs the pre-roll path) into partial stream files with parity.
fn host_files(out: &std::path::Path, fec: (&str, &str)) -> Vec<std::path::PathBuf> {
    let clip = clip("bikes");
    let src = clip.path.to_string_lossy().to_string();
    (0..3)
        .map(|i| {
            let file = out.join(format!("host{i}.gsw"));
            let file_s = file.to_string_lossy().to_string();
            let index = i.to_string();
            let host = format!("host{i}");
            pipelines::play(
                "host-file",
                &[
                    ("SRC", &src),
                    ("OUT", &file_s),
                    ("INDEX", &index),
                    ("HOST", &host),
                    ("GOP", GOP_1S),
                    ("FEC_K", fec.0),
                    ("FEC_M", fec.1),
                ],
                TIMEOUT,
            )
            .unwrap();
            file
        })
        .collect()
}

/// Merge partial stream files into an H.264 elementary stream; returns its bytes and the run.
fn merge_files(
    files: &[std::path::PathBuf],
    out: &std::path::Path,
) -> (Vec<u8>, pipeline::Outcome) {
    let mut desc = String::new();
    for (i, f) in files.iter().enumerate() {
        desc.push_str(&format!(
            "filesrc location={} ! partialdepay ! m.sink_{i} ",
            f.display()
        ));
    }
    desc.push_str(&format!(
        "gopmerge name=m ! filesink location={}",
        out.display()
    ));
    let outcome = pipeline::play(&pipeline::parse(&desc).unwrap(), TIMEOUT).unwrap();
    (std::fs::read(out).unwrap(), outcome)
}

#[test]
fn hosts_over_files_merge_frame_exact_and_parity_rebuilds_lost_chunks_byte_identically() {
    let out = out_dir("fec");
    let files = host_files(&out, ("2", "1"));

    // The hosts' partial streams merge into the source's exact frames.
    let clip = clip("bikes");
    let mp4 = out.join("merged");
    let ins: Vec<String> = files
        .iter()
        .map(|f| f.to_string_lossy().to_string())
        .collect();
    let mp4_s = mp4.to_string_lossy().to_string();
    let outcome = pipelines::play(
        "merge-files",
        &[
            ("IN0", &ins[0]),
            ("IN1", &ins[1]),
            ("IN2", &ins[2]),
            ("OUT", &mp4_s),
        ],
        TIMEOUT,
    )
    .unwrap();
    let report = qa::check_output(&clip, &out.join("merged.mp4"), &outcome).unwrap();
    assert_frame_exact(&report);

    let (complete, full_run) = merge_files(&files, &out.join("complete.h264"));
    assert_eq!(
        full_run
            .message("gopswarm-merge-summary")
            .unwrap()
            .get::<u64>("recovered")
            .unwrap(),
        0
    );

    // Drop one data chunk of every parity group (a different position each time).
    let mut dropped = 0;
    let lossy: Vec<std::path::PathBuf> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut d = gopswarm_chunk::Deframer::default();
            d.push(&std::fs::read(f).unwrap());
            let mut chunks = Vec::new();
            while let Some(c) = d.next_chunk() {
                chunks.push(c);
            }
            let mut kept = Vec::new();
            let mut group = Vec::new();
            for c in chunks {
                if c.header.is_parity() {
                    let victim = (dropped + i) % group.len();
                    for (j, g) in group.drain(..).enumerate() {
                        if j != victim {
                            kept.push(g);
                        } else {
                            dropped += 1;
                        }
                    }
                    kept.push(c);
                } else {
                    group.push(c);
                }
            }
            assert!(
                group.is_empty(),
                "every data chunk belongs to a parity group"
            );
            let path = out.join(format!("lossy{i}.gsw"));
            let bytes: Vec<u8> = kept.iter().flat_map(|c| c.bytes().to_vec()).collect();
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    assert!(dropped >= 4, "dropped {dropped} chunks");

    let (rebuilt, lossy_run) = merge_files(&lossy, &out.join("rebuilt.h264"));
    let summary = lossy_run.message("gopswarm-merge-summary").unwrap();
    assert_eq!(summary.get::<u64>("recovered").unwrap(), dropped as u64);
    assert_eq!(summary.get::<u64>("lost").unwrap(), 0);
    assert!(
        complete == rebuilt,
        "output with losses differs from the loss-free output"
    );
}
