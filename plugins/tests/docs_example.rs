// SPDX-License-Identifier: MPL-2.0
//! The split-encode-merge example that `gst-inspect-1.0 gopmerge` shows runs as written.

use std::path::PathBuf;
use std::process::Command;

/// Where cargo put this build's plugin (the cdylib next to the test's `deps/` folder).
fn plugin_dir() -> PathBuf {
    gopswarm_test_support::build_dir()
}

/// The example pipeline as gst-inspect-1.0 prints it: from `gst-launch-1.0` to the first line
/// without a continuation.
fn example_from_inspect(work: &std::path::Path) -> String {
    let out = Command::new("gst-inspect-1.0")
        .arg("gopmerge")
        .env("GST_PLUGIN_PATH", plugin_dir())
        .env("GST_REGISTRY", work.join("registry.bin"))
        .output()
        .expect("gst-inspect-1.0 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("gst-launch-1.0"));
    let mut example = String::new();
    for line in lines.by_ref() {
        example.push_str(line);
        example.push('\n');
        if !line.ends_with('\\') {
            break;
        }
    }
    assert!(
        !example.is_empty(),
        "no example in gst-inspect-1.0 gopmerge:\n{text}"
    );
    example
}

#[test]
fn gopmerge_example_pipeline_runs_as_documented() {
    let work = std::env::temp_dir().join(format!("gopswarm-docs-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let example = example_from_inspect(&work);
    assert_eq!(
        example,
        gstgopswarm::SWARM_EXAMPLE,
        "gst-inspect shows the source's example"
    );

    // gst-launch-1.0 1.22 can miss its EOS and wait forever: bounded, exit 124 then.
    let run = Command::new("timeout")
        .args(["120", "sh", "-c"])
        .arg(&example)
        .current_dir(&work)
        .env("GST_PLUGIN_PATH", plugin_dir())
        .env("GST_REGISTRY", work.join("registry.bin"))
        .output()
        .expect("sh runs");
    assert!(
        run.status.success(),
        "example failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    // videotestsrc num-buffers=100: every frame is in the merged MP4.
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            "out.mp4",
        ])
        .current_dir(&work)
        .output()
        .expect("ffprobe runs");
    let frames = String::from_utf8_lossy(&probe.stdout).trim().to_string();
    let _ = std::fs::remove_dir_all(&work);
    assert_eq!(frames, "100", "{}", String::from_utf8_lossy(&probe.stderr));
}
