// SPDX-License-Identifier: MPL-2.0
//! The shipped pipelines on sample media, checked with ffprobe/ffmpeg through the `gopswarm`
//! library's QA.

pub use crate::{Rng, out_dir};
pub use gopswarm::{media, pipelines, qa};

/// A sample clip by name, with what QA knows about it.
pub fn clip(name: &str) -> qa::Clip {
    qa::clip(name).unwrap_or_else(|e| panic!("{e:#} (run test-media/fetch.sh)"))
}

/// Assert a merged output is frame-exact against its source and print the report.
pub fn assert_frame_exact(report: &qa::Report) {
    assert_eq!(
        report.output_frames, report.source_frames,
        "{}: frame count",
        report.clip
    );
    assert_eq!(report.timestamps, None, "{}: timestamps", report.clip);
    assert_eq!(
        report.decode_timing, None,
        "{}: decode timestamps (DTS increasing, PTS >= DTS, no zero-length sample, one decode delay)",
        report.clip
    );
    assert_eq!(
        report.decode_errors, "",
        "{}: ffmpeg decode errors",
        report.clip
    );
    assert_eq!(report.gops_lost, 0, "{}: GOPs lost", report.clip);
    if let Some(offset) = report.audio_offset_frames {
        assert!(
            offset.abs() <= 1.0,
            "{}: audio off by {offset} frames",
            report.clip
        );
    }
}
