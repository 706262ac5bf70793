// SPDX-License-Identifier: MPL-2.0
//! What a viewer sees: the swarm's HLS output played by hls.js in headless Chromium (the harness
//! in `tests/player/`), against one encoder's output of the same clip played the same way.
//! Decode timestamps that collide at GOP joins make the browser drop frames; these tests fail
//! if the swarm drops more than one encoder does, or if the browser reports a decode error.

use gopswarm::{media, player, qa};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

const CLIP: &str = "synthetic-720p25";
/// The synthetic clip: 60 s at 25 fps.
const CLIP_FRAMES: u64 = 1500;
const PLAY_TIMEOUT: Duration = Duration::from_secs(150);

/// One test at a time, encode and playback: the browser gets the machine, so dropped frames
/// measure the stream, not a neighbour test.
static PLAYER: Mutex<()> = Mutex::new(());
static BASELINE: OnceLock<player::Playback> = OnceLock::new();

fn out_dir(name: &str) -> PathBuf {
    gopswarm_test_support::out_dir(&format!("player/{name}"))
}

fn play(playlist: &Path) -> player::Playback {
    let p = player::play_hls(playlist, PLAY_TIMEOUT)
        .unwrap_or_else(|e| panic!("playing {}: {e:#}", playlist.display()));
    println!("{}: {}", playlist.display(), p.summary());
    p
}

fn assert_decode_timing(file: &Path) {
    let t = media::decode_timing(file).unwrap();
    assert_eq!(
        t.problem(qa::TIMESTAMP_TOLERANCE_NS),
        None,
        "{}: decode timestamps",
        file.display()
    );
}

/// One encoder over the whole clip (the same profile and grid as the swarm), its MP4 remuxed
/// with the source's audio into 2 s HLS segments by ffmpeg, played once.
fn baseline() -> &'static player::Playback {
    BASELINE.get_or_init(|| {
        let clip = qa::clip(CLIP).unwrap();
        let dir = out_dir("single");
        let mp4 = qa::single(&clip, &dir, qa::DEFAULT_PROFILE).unwrap();
        assert_decode_timing(&mp4);
        let hls = dir.join("single-hls");
        std::fs::create_dir_all(&hls).unwrap();
        let st = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(&mp4)
            .arg("-i")
            .arg(&clip.path)
            .args(["-map", "0:v", "-map", "1:a", "-c", "copy", "-f", "hls"])
            .args(["-hls_time", "2", "-hls_playlist_type", "vod"])
            .arg("-hls_segment_filename")
            .arg(hls.join("segment%05d.ts"))
            .arg(hls.join("index.m3u8"))
            .status()
            .unwrap();
        assert!(st.success(), "ffmpeg remux of the single encode");
        let p = play(&hls.join("index.m3u8"));
        assert!(p.ended && !p.fatal, "single encode: {}", p.summary());
        p
    })
}

fn assert_no_worse_than_one_encoder(what: &str, p: &player::Playback, base: &player::Playback) {
    assert!(p.started && p.ended && !p.fatal, "{what}: {}", p.summary());
    assert_eq!(p.decode_errors(), 0, "{what}: {}", p.summary());
    assert!(
        p.dropped <= base.dropped,
        "{what}: {} frames dropped where one encoder's output drops {}: {}",
        p.dropped,
        base.dropped,
        p.summary()
    );
}

#[test]
fn three_way_swarm_hls_plays_with_no_more_dropped_frames_than_one_encoder() {
    let _one_at_a_time = PLAYER.lock().unwrap_or_else(|e| e.into_inner());
    let clip = qa::clip(CLIP).unwrap();
    let dir = out_dir("swarm");
    let (mp4, outcome) = qa::swarm(&clip, &dir, &[]).unwrap();
    assert_eq!(outcome.count("gopswarm-gap"), 0);
    let playlist = qa::hls_beside(&mp4).expect("the local swarm writes HLS beside its MP4");
    assert_decode_timing(&mp4);
    assert_decode_timing(&playlist);

    let base = baseline();
    let p = play(&playlist);
    assert_no_worse_than_one_encoder("3-way swarm", &p, base);
    assert!(
        p.total + 2 >= CLIP_FRAMES && base.total + 2 >= CLIP_FRAMES,
        "frames the player saw: swarm {}, single {}",
        p.total,
        base.total
    );
}

/// `gopswarm demo` (separate host processes over MQTT, a host killed, a planned handoff),
/// shortened to 30 s: its HLS output in the browser.
#[test]
fn demo_hls_plays_with_no_more_dropped_frames_than_one_encoder() {
    let _one_at_a_time = PLAYER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = out_dir("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_gopswarm"))
        .args([
            "demo",
            "--duration",
            "30",
            "--kill-at",
            "10",
            "--handoff-at",
            "18",
        ])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success() && text.contains("PASS"),
        "demo failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let playlist = dir.join("demo-hls/index.m3u8");
    assert_decode_timing(&dir.join("demo.mp4"));
    let frames = media::video_frames(&dir.join("demo.mp4")).unwrap().len() as u64;
    assert!(frames >= 25 * 10, "the demo merged {frames} frames");
    assert_decode_timing(&playlist);

    let base = baseline();
    let p = play(&playlist);
    assert_no_worse_than_one_encoder("demo", &p, base);
    assert!(
        p.total + 2 >= frames,
        "the player saw {} of the {frames} frames merged: {}",
        p.total,
        p.summary()
    );
}
