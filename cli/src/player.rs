// SPDX-License-Identifier: MPL-2.0
//! What a real browser player does with an HLS output: hls.js in headless Chromium, driven by
//! the harness in `tests/player/` (`play.mjs`, pinned by its `package-lock.json`). Test support,
//! reused by every check that needs a viewer's view (dropped frames, decode errors, stalls).
//!
//! Needs Node.js, Debian's `chromium` and `npm ci --prefix tests/player` (`scripts/test.sh` sets
//! all three up). By hand:
//! `node tests/player/play.mjs --root DIR --playlist PATH/index.m3u8`.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One hls.js `ERROR` event.
#[derive(Debug, Clone, Deserialize)]
pub struct PlayerError {
    #[serde(rename = "type")]
    pub kind: String,
    pub details: String,
    pub fatal: bool,
}

/// An `HTMLMediaElement` error (the browser's decoder or demuxer gave up).
#[derive(Debug, Clone, Deserialize)]
pub struct MediaError {
    pub code: u32,
    pub message: String,
}

/// What the player did, read from the page when playback ended (or the harness gave up).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Playback {
    /// `getVideoPlaybackQuality().droppedVideoFrames`.
    pub dropped: u64,
    /// `getVideoPlaybackQuality().totalVideoFrames`.
    pub total: u64,
    pub corrupted: u64,
    /// `webkitDecodedFrameCount`.
    pub decoded: Option<u64>,
    pub errors: Vec<PlayerError>,
    pub media_errors: Vec<MediaError>,
    /// `waiting` events after playback started.
    pub stalls: u64,
    pub started: bool,
    pub ended: bool,
    pub fatal: bool,
    pub timed_out: bool,
    pub current_time: f64,
    pub duration: Option<f64>,
    pub hls_version: String,
    /// The page's last console lines.
    pub console: Vec<String>,
}

/// hls.js error details that mean the browser could not take or decode the media.
const DECODE_ERROR_DETAILS: [&str; 6] = [
    "bufferAppendError",
    "bufferAddCodecError",
    "bufferIncompatibleCodecsError",
    "fragParsingError",
    "fragDecryptError",
    "remuxAllocError",
];

impl Playback {
    /// Decode errors: media element errors, corrupted frames, and hls.js errors where the
    /// browser refused or could not parse the media.
    pub fn decode_errors(&self) -> usize {
        self.media_errors.len()
            + self.corrupted as usize
            + self
                .errors
                .iter()
                .filter(|e| DECODE_ERROR_DETAILS.contains(&e.details.as_str()))
                .count()
    }

    pub fn summary(&self) -> String {
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|e| format!("{}{}", e.details, if e.fatal { " (fatal)" } else { "" }))
            .collect();
        format!(
            "hls.js {}: {} of {} frames dropped, {} decoded, {} decode errors, {} stalls, played {:.2} of {} s, {}; hls.js errors: [{}]",
            self.hls_version,
            self.dropped,
            self.total,
            self.decoded.map_or("?".into(), |d| d.to_string()),
            self.decode_errors(),
            self.stalls,
            self.current_time,
            self.duration.map_or("?".into(), |d| format!("{d:.2}")),
            if self.ended {
                "ended"
            } else if self.timed_out {
                "TIMED OUT"
            } else {
                "stopped"
            },
            errors.join(", ")
        )
    }
}

/// The harness folder.
pub fn harness_dir() -> PathBuf {
    crate::repo_root().join("tests/player")
}

/// Whether the harness can run here; what is missing otherwise.
pub fn check_installed() -> Result<()> {
    let dir = harness_dir();
    if !dir.join("node_modules/hls.js/dist/hls.min.js").is_file()
        || !dir.join("node_modules/puppeteer-core").is_dir()
    {
        bail!(
            "the player harness is not installed: run npm ci --prefix {}",
            dir.display()
        );
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).is_file() {
        bail!("no Chromium at {chromium}: apt-get install chromium (or set CHROMIUM)");
    }
    Command::new("node")
        .arg("--version")
        .output()
        .context("node is not installed")?;
    Ok(())
}

/// Play `playlist` (an HLS playlist on disk) to its end with hls.js in headless Chromium,
/// serving its folder's parent on a loopback port. Gives up after `timeout`.
pub fn play_hls(playlist: &Path, timeout: Duration) -> Result<Playback> {
    check_installed()?;
    let playlist = playlist
        .canonicalize()
        .with_context(|| format!("no playlist at {}", playlist.display()))?;
    let dir = playlist.parent().context("playlist without a folder")?;
    let root = dir.parent().unwrap_or(dir);
    let rel = playlist.strip_prefix(root)?.to_string_lossy().to_string();
    // The harness stops itself at `timeout`; a node or Chromium that hangs past that (and a
    // grace for start and shutdown) is killed here, so a test never waits forever.
    let scratch = std::env::temp_dir().join(format!(
        "gopswarm-player-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&scratch)?;
    let (stdout_path, stderr_path) = (scratch.join("stdout"), scratch.join("stderr"));
    let mut child = Command::new("node")
        .arg(harness_dir().join("play.mjs"))
        .arg("--root")
        .arg(root)
        .arg("--playlist")
        .arg(&rel)
        .arg("--timeout")
        .arg(timeout.as_secs().max(1).to_string())
        .stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()
        .context("starting node tests/player/play.mjs")?;
    let deadline = std::time::Instant::now() + timeout + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&scratch);
            bail!("the player harness hung past {timeout:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&scratch);
    if !status.success() {
        bail!("the player harness failed ({status}): {}", stderr.trim());
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no result from the player harness: {stdout}"))?;
    serde_json::from_str(line).with_context(|| format!("player result {line}"))
}
