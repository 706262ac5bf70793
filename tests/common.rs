//! Shared helpers for the end-to-end tests.

use std::path::PathBuf;

pub use gopswarm::{media, pipelines, qa, run};

/// A fresh output directory for one test under `target/e2e/`.
pub fn out_dir(test: &str) -> PathBuf {
    let dir = gopswarm::repo_root().join("target/e2e").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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

/// A small deterministic random source (tests print their seed).
pub struct Rng(u64);

impl Rng {
    pub fn from_time() -> (Rng, u64) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        (Rng(seed), seed)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
