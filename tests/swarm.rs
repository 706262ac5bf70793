// SPDX-License-Identifier: MPL-2.0
//! The local 3-way swarm (r=0, and r=1) on every sample clip: frame-exact against the source, checked
//! with ffprobe and ffmpeg; on the synthetic feed and bikes also quality and size against a
//! single encode of the same profile.

use gopswarm_test_support::e2e::*;

fn swarm_on(name: &str, with_quality: bool) -> qa::Report {
    let clip = clip(name);
    let out = out_dir(&format!("swarm-{name}"));
    let (output, outcome) = qa::swarm(&clip, &out, &[("PROFILE", qa::DEFAULT_PROFILE)]).unwrap();
    let mut report = qa::check_output(&clip, &output, &outcome).unwrap();
    assert_frame_exact(&report);
    // The HLS rendition decodes too.
    let playlist = out.join(format!("{name}-swarm-hls/index.m3u8"));
    assert_eq!(
        media::decode_errors(&playlist).unwrap(),
        "",
        "HLS output decodes"
    );
    assert_eq!(
        media::video_frames(&playlist).unwrap().len(),
        report.source_frames,
        "HLS output has every frame"
    );
    if with_quality {
        let single = qa::single(&clip, &out, qa::DEFAULT_PROFILE).unwrap();
        qa::add_quality(&mut report, &clip, &output, &single).unwrap();
        qa::print_table(std::slice::from_ref(&report));
        let db = report.psnr_delta().unwrap();
        let size = report.size_delta().unwrap();
        assert!(
            db >= -0.3,
            "{name}: Y-PSNR {db:+.2} dB against a single encode"
        );
        assert!(
            size.abs() <= 0.03,
            "{name}: size {:+.1}% against a single encode",
            size * 100.0
        );
    } else {
        qa::print_table(std::slice::from_ref(&report));
    }
    report
}

#[test]
fn bigbuckbunny_with_audio_is_frame_exact() {
    let r = swarm_on("bigbuckbunny", false);
    assert!(r.audio_offset_frames.is_some(), "audio kept");
}

#[test]
fn carphone_ntsc_rate_is_frame_exact() {
    swarm_on("carphone_pristine", false);
}

#[test]
fn bikes_b_frames_frame_exact_and_quality() {
    swarm_on("bikes", true);
}

#[test]
fn synthetic_feed_frame_exact_and_quality() {
    let r = swarm_on("synthetic-720p25", true);
    assert!(r.audio_offset_frames.is_some(), "audio kept");
}

/// With redundancy 1 every GOP comes twice (primary and copy, from different branches); the
/// merger keeps one. Frame-exact and in decode order on every sample clip.
#[test]
fn every_sample_clip_with_redundancy_one_is_frame_exact_in_decode_order() {
    for name in qa::SAMPLE_CLIPS {
        let clip = clip(name);
        let out = out_dir(&format!("swarm-r1-{name}"));
        let (output, outcome) = qa::swarm(
            &clip,
            &out,
            &[("PROFILE", qa::DEFAULT_PROFILE), ("REDUNDANCY", "1")],
        )
        .unwrap();
        let report = qa::check_output(&clip, &output, &outcome).unwrap();
        qa::print_table(std::slice::from_ref(&report));
        assert_frame_exact(&report);
        let summary = outcome.message("gopswarm-merge-summary").unwrap();
        let dropped =
            summary.get::<u64>("duplicates").unwrap() + summary.get::<u64>("late").unwrap();
        assert!(
            dropped > 0,
            "{name}: the copies arrived and were dropped ({summary:?})"
        );
    }
}
