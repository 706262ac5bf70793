//! Library behind the `gopswarm` command: media checks, the shipped pipelines, QA and benchmarks.

pub mod bench;
pub mod bench_control;
pub mod config;
pub mod launch;
pub mod media;
pub mod pipelines;
pub mod player;
pub mod plot;
pub mod qa;
pub mod run;
pub mod swarm;

use std::path::PathBuf;

/// Repository root (where `pipelines/` and `test-media/` live).
pub fn repo_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

pub fn media_dir() -> PathBuf {
    repo_root().join("test-media/cache")
}
