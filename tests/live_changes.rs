// SPDX-License-Identifier: MPL-2.0
//! Assignments and profiles changed while PLAYING: the change lands on the chosen GOP, no
//! frame lost or duplicated.

use gopswarm_agents::pipeline;
use gopswarm_test_support::e2e::*;
use gst::prelude::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const GOP: u64 = 1_000_000_000;

fn elements(pipeline: &gst::Pipeline, factory: &str) -> Vec<gst::Element> {
    let mut v: Vec<gst::Element> = pipeline
        .iterate_recurse()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.factory().is_some_and(|f| f.name() == factory))
        .collect();
    v.sort_by_key(|e| e.name().to_string());
    v
}

/// The branch (0..3) an element belongs to, from the host id of the partialpay after it.
fn branch_of(e: &gst::Element, pipeline: &gst::Pipeline) -> usize {
    // Walk downstream until a partialpay.
    let mut cur = e.clone();
    loop {
        if cur.factory().is_some_and(|f| f.name() == "partialpay") {
            let host: String = cur.property("host-id");
            return host.trim_start_matches("branch").parse().unwrap();
        }
        let peer = cur.static_pad("src").unwrap().peer().unwrap();
        cur = peer.parent_element().unwrap();
        assert!(
            cur.parent()
                .is_some_and(|p| &p == pipeline.upcast_ref::<gst::Object>())
        );
    }
}

/// GOP -> (host, epoch, payload bytes) of every chunk reaching the merger.
type ChunkLog = Arc<Mutex<BTreeMap<u64, (String, u64, usize)>>>;

fn record_chunks(pipeline: &gst::Pipeline) -> ChunkLog {
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let merger = &elements(pipeline, "gopmerge")[0];
    for pad in merger.sink_pads() {
        let seen = seen.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                let (c, _) = gopswarm_chunk::parse(&b.map_readable().unwrap()).unwrap();
                seen.lock().unwrap().insert(
                    c.header.gop_index,
                    (c.header.host_id.clone(), c.header.epoch, c.payload().len()),
                );
            }
            gst::PadProbeReturn::Ok
        });
    }
    seen
}

#[test]
fn three_way_to_two_way_and_bitrate_change_land_on_their_gops() {
    let clip = clip("bikes");
    let out = out_dir("live-reassign");
    let prefix_path = out.join("bikes");
    pipeline::prepare_out(&prefix_path).unwrap();
    let prefix = prefix_path.to_string_lossy().to_string();
    let src = clip.path.to_string_lossy().to_string();
    let words = pipelines::load("local-swarm-video")
        .unwrap()
        .expand(&[
            ("SRC", &src),
            ("OUT", &prefix),
            ("GOP", "1000000000"),
            ("PROFILE", "h264, bitrate=150, complexity=3"),
        ])
        .unwrap();
    let pipeline = pipeline::parse_words(&words).unwrap();
    let chunks = record_chunks(&pipeline);

    // Schedule both changes while GOP 1 plays: the swarm shrinks at GOP 4, the bitrate cap
    // rises at GOP 6.
    let selectors = elements(&pipeline, "gopselect");
    let encoders = elements(&pipeline, "profileenc");
    let tee = pipeline.by_name("t").unwrap();
    let scheduled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (sel, enc, p2) = (selectors.clone(), encoders.clone(), pipeline.clone());
    tee.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let pts = info
                .buffer()
                .and_then(|b| b.pts())
                .map(|t| t.nseconds())
                .unwrap_or(0);
            if pts >= GOP && !scheduled.swap(true, std::sync::atomic::Ordering::SeqCst) {
                for s in &sel {
                    let assignment = match branch_of(s, &p2) {
                        0 => "assignment, index=0, count=2, epoch=2, switch-gop=4",
                        1 => "assignment, index=1, count=2, epoch=2, switch-gop=4",
                        _ => "assignment, gops=none, epoch=2, switch-gop=4",
                    };
                    s.set_property_from_str("assignment", assignment);
                }
                for e in &enc {
                    e.set_property("switch-gop", 6i64);
                    e.set_property(
                        "profile",
                        gst::Structure::builder("h264")
                            .field("bitrate", 1500)
                            .field("complexity", 3)
                            .build(),
                    );
                }
            }
            gst::PadProbeReturn::Ok
        });

    let outcome = pipeline::play(&pipeline, Duration::from_secs(300)).unwrap();
    let output = std::path::PathBuf::from(format!("{prefix}.mp4"));
    let report = qa::check_output(&clip, &output, &outcome).unwrap();
    assert_frame_exact(&report);

    let chunks = chunks.lock().unwrap();
    for (gop, (host, epoch, _)) in chunks.iter() {
        let expected = if *gop < 4 {
            (format!("branch{}", gop % 3), 0)
        } else {
            (format!("branch{}", gop % 2), 2)
        };
        assert_eq!((host.clone(), *epoch), expected, "GOP {gop}");
    }
    assert_eq!(chunks.len(), 10);
    // Bitrate: every GOP from 6 on is bigger than every GOP of 2..6 (the cap was binding).
    let before = (2..6).map(|g| chunks[&g].2).max().unwrap();
    let after = (6..10).map(|g| chunks[&g].2).min().unwrap();
    assert!(
        after > before * 3 / 2,
        "GOP sizes before {before} after {after}"
    );
    let applied: Vec<u64> = outcome
        .messages
        .iter()
        .filter(|s| s.name() == "gopswarm-profile-applied")
        .map(|s| s.get::<u64>("gop").unwrap())
        .filter(|&g| g > 0)
        .collect();
    assert!(
        applied.iter().all(|&g| g >= 6),
        "profile applied at GOPs {applied:?}"
    );
    // Keyframes exactly on every GOP boundary.
    let frames = media::video_frames(&output).unwrap();
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.key, i % 25 == 0, "frame {i}");
    }
}

#[test]
fn resolution_change_lands_on_the_chosen_gop() {
    let clip = clip("bikes");
    let out = out_dir("live-resolution");
    let ts = out.join("bikes.ts");
    let mut desc = format!(
        "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 max-errors=0 ! tee name=t ",
        clip.path.display()
    );
    for i in 0..3 {
        desc.push_str(&format!(
            "t. ! gopselect slot-index={i} slot-count=3 gop-duration={GOP} ! queue \
             ! profileenc name=enc{i} profile=\"h264, bitrate=800, complexity=3\" \
             ! partialpay host-id=branch{i} ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! m.sink_{i} "
        ));
    }
    desc.push_str(&format!(
        "gopmerge name=m ! h264parse ! mpegtsmux ! filesink location={}",
        ts.display()
    ));
    let pipeline = pipeline::parse(&desc).unwrap();
    for i in 0..3 {
        let e = pipeline.by_name(&format!("enc{i}")).unwrap();
        e.set_property("switch-gop", 5i64);
    }
    let (p2, done) = (
        pipeline.clone(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    pipeline
        .by_name("t")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let pts = info
                .buffer()
                .and_then(|b| b.pts())
                .map(|t| t.nseconds())
                .unwrap_or(0);
            if pts >= GOP && !done.swap(true, std::sync::atomic::Ordering::SeqCst) {
                for i in 0..3 {
                    p2.by_name(&format!("enc{i}"))
                        .unwrap()
                        .set_property_from_str(
                            "profile",
                            "h264, width=320, height=136, bitrate=800, complexity=3",
                        );
                }
            }
            gst::PadProbeReturn::Ok
        });
    let outcome = pipeline::play(&pipeline, Duration::from_secs(300)).unwrap();
    assert_eq!(outcome.count("gopswarm-gap"), 0);
    assert_eq!(media::decode_errors(&ts).unwrap(), "");
    assert_eq!(
        media::decode_timing(&ts)
            .unwrap()
            .problem(qa::TIMESTAMP_TOLERANCE_NS),
        None
    );

    // Every frame is there with the source's timestamps, and the size changes exactly at GOP 5.
    let src = media::video_frames(&clip.path).unwrap();
    let got = media::video_frames(&ts).unwrap();
    media::compare_frames(&src, &got, qa::TIMESTAMP_TOLERANCE_NS).unwrap();
    let widths = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=width",
            "-of",
            "csv=p=0",
        ])
        .arg(&ts)
        .output()
        .unwrap();
    let widths: Vec<u32> = String::from_utf8_lossy(&widths.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    assert_eq!(widths.len(), 250);
    for (i, w) in widths.iter().enumerate() {
        assert_eq!(*w, if i < 125 { 640 } else { 320 }, "frame {i}");
    }
}
