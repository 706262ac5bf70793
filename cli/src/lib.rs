// SPDX-License-Identifier: MPL-2.0
//! Library behind the `gopswarm` command. [`commands`]: one module per command of the CLI's
//! own (its `clap::Args` options and what it does; the daemons are in `gopswarm-agents`).
//! The parts those commands and the tests share, one job each: media checks ([`media`]), the
//! shipped pipelines ([`pipelines`]), QA ([`qa`]), benchmarks ([`bench`]), content complexity
//! ([`complexity`]), plots ([`plot`]), the browser player ([`player`]), `--config` files
//! ([`config`]), the pipeline launcher ([`launch`]) and loopback ports ([`loopback`]).

pub mod bench;
pub mod commands;
pub mod complexity;
pub mod config;
pub mod launch;
pub mod loopback;
pub mod media;
pub mod pipelines;
pub mod player;
pub mod plot;
pub mod qa;

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// The source tree this crate was compiled in, for tests and benchmarks that work in it. The
/// `gopswarm` binary never uses it: an installed binary has no source tree, it finds its data
/// with [`pipelines_dir`] and [`sample_media_dir`].
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// The sample media of the source tree (test-media/cache), for tests; see [`repo_root`].
pub fn media_dir() -> PathBuf {
    repo_root().join("test-media/cache")
}

/// The folder of the shipped `NAME.pipeline` files, found at run time: `GOPSWARM_PIPELINES`,
/// else `<bin>/../share/gopswarm/pipelines` (an installed binary), else `pipelines/` of the
/// source checkout whose `target/` holds the binary.
pub fn pipelines_dir() -> Result<PathBuf> {
    data_dir(
        "GOPSWARM_PIPELINES",
        "pipelines",
        "pipelines",
        "the shipped pipelines",
    )
}

/// The folder of the sample clips (`NAME.mp4`), found at run time: `GOPSWARM_MEDIA`, else
/// `<bin>/../share/gopswarm/media` (an installed binary), else `test-media/cache/` of the
/// source checkout whose `target/` holds the binary. test-media/fetch.sh fills it.
pub fn sample_media_dir() -> Result<PathBuf> {
    data_dir(
        "GOPSWARM_MEDIA",
        "media",
        "test-media/cache",
        "the sample media (made by test-media/fetch.sh in a source checkout)",
    )
}

/// The first of: the folder `env` names (which must exist), `<bin>/../share/gopswarm/<share>`,
/// `<checkout>/<in_tree>` when the binary is in `<checkout>/target/`. An error lists where it
/// looked and how to point at the folder.
fn data_dir(env: &str, share: &str, in_tree: &str, what: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(env) {
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            bail!("{env}={} is not a folder ({what})", dir.display());
        }
        return Ok(dir);
    }
    let exe = std::env::current_exe()
        .and_then(|e| e.canonicalize())
        .map_err(|e| anyhow::anyhow!("this program's path: {e}"))?;
    let mut tried = Vec::new();
    if let Some(bin) = exe.parent() {
        tried.push(bin.join("../share/gopswarm").join(share));
    }
    if let Some(checkout) = exe
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "target"))
        .and_then(Path::parent)
    {
        tried.push(checkout.join(in_tree));
    }
    if let Some(dir) = tried.iter().find(|d| d.is_dir()) {
        return Ok(dir.clone());
    }
    let looked: Vec<String> = tried.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "{what}: no folder found (looked in {}); set {env} to it",
        looked.join(", ")
    )
}
