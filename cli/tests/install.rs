// SPDX-License-Identifier: MPL-2.0
//! An installed `gopswarm` works away from the source tree: the binary copied into a fresh
//! prefix (what `cargo install --path cli --root PREFIX` makes), run from another folder with
//! no GST_PLUGIN_PATH and no cargo environment, finds its data next to itself
//! (PREFIX/share/gopswarm/...) and runs the demo; where the data is missing it says what and
//! how to get it instead of reaching into the source tree.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The tests one at a time: a binary being copied in one test is open for writing, and a
/// process another test forks then would make exec of the copy fail (ETXTBSY).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A prefix with bin/gopswarm, a work folder outside it, the prefix.
fn install(name: &str) -> (PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("gopswarm-install-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let prefix = root.join("prefix");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_gopswarm"), prefix.join("bin/gopswarm")).unwrap();
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    (prefix, work)
}

/// The installed binary, run in `work` with a bare environment: PATH (for ffprobe), HOME and a
/// GStreamer registry of its own.
fn run(prefix: &Path, work: &Path, args: &[&str]) -> Output {
    Command::new(prefix.join("bin/gopswarm"))
        .args(args)
        .current_dir(work)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", work)
        .env("GST_REGISTRY", work.join("gst-registry.bin"))
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn source_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn installed_binary_finds_its_data_next_to_it_and_never_in_the_source_tree() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (prefix, work) = install("data");
    // Nothing installed beside it: clear errors, though the source tree has both.
    let out = run(&prefix, &work, &["pipeline", "list"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("share/gopswarm/pipelines") && t.contains("GOPSWARM_PIPELINES"),
        "{t}"
    );
    let out = run(&prefix, &work, &["demo", "--duration", "4"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("synthetic-720p25")
            && t.contains("test-media/fetch.sh")
            && t.contains("GOPSWARM_MEDIA"),
        "{t}"
    );
    // The pipelines installed beside it.
    let share = prefix.join("share/gopswarm");
    std::fs::create_dir_all(share.join("pipelines")).unwrap();
    for e in std::fs::read_dir(source_tree().join("pipelines")).unwrap() {
        let e = e.unwrap();
        if e.path().extension().is_some_and(|x| x == "pipeline") {
            std::fs::copy(e.path(), share.join("pipelines").join(e.file_name())).unwrap();
        }
    }
    let out = run(&prefix, &work, &["pipeline", "list"]);
    let t = text(&out);
    assert!(out.status.success() && t.contains("local-swarm"), "{t}");
    std::fs::remove_dir_all(prefix.parent().unwrap()).unwrap();
}

/// The demo from an installed binary: host and merger processes it starts are the same binary
/// with the gopswarm elements registered statically, no plugin path needed.
#[test]
fn installed_binary_runs_the_demo_from_another_folder() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let clip = gopswarm::media_dir().join("synthetic-720p25.mp4");
    assert!(
        clip.is_file(),
        "{} is missing: run test-media/fetch.sh",
        clip.display()
    );
    let (prefix, work) = install("demo");
    let media = prefix.join("share/gopswarm/media");
    std::fs::create_dir_all(&media).unwrap();
    std::os::unix::fs::symlink(&clip, media.join("synthetic-720p25.mp4")).unwrap();
    let out = run(
        &prefix,
        &work,
        &[
            "demo",
            "--duration",
            "30",
            "--kill-at",
            "10",
            "--handoff-at",
            "18",
        ],
    );
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("PASS"),
        "the installed demo failed:\n{t}"
    );
    // Its report: a host killed, a planned handoff, and the frames of most of the 30 s merged.
    assert!(
        t.contains("killed: host-") && t.contains("handoff: host-"),
        "{t}"
    );
    let frames: u64 = t
        .split_once("out/demo/demo.mp4 (")
        .and_then(|(_, rest)| rest.split_once(" frames"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame count in:\n{t}"));
    assert!(frames >= 25 * 10, "the demo merged {frames} frames:\n{t}");
    assert!(work.join("out/demo/demo.mp4").is_file(), "{t}");
    std::fs::remove_dir_all(prefix.parent().unwrap()).unwrap();
}
