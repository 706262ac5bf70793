// SPDX-License-Identifier: MPL-2.0
//! `gopswarm pipeline` and its wrapper `pipelines/run`: the shipped pipelines print the same
//! gst-launch-1.0 lines as the former bash+Python runner, and runs end with the documented exit
//! status (EOS, watchdog, killed, hung launcher, usage errors).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo().join("cli/tests/fixtures").join(name)).unwrap()
}

/// `gopswarm pipeline ARGS` as pipelines/run calls it.
fn pipeline(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gopswarm"));
    cmd.arg("pipeline")
        .arg("--dir")
        .arg(dir)
        .args(["--runner-name", "pipelines/run"])
        .args(args)
        .env_remove("PIPELINES_LAUNCHER");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A folder of test pipelines.
fn scratch(test: &str, pipelines: &[(&str, &str)]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pipeline-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in pipelines {
        std::fs::write(dir.join(format!("{name}.pipeline")), body).unwrap();
    }
    dir
}

fn timed(mut cmd: Command) -> (Output, Duration) {
    let start = Instant::now();
    let out = cmd.output().unwrap();
    (out, start.elapsed())
}

#[test]
fn shipped_pipelines_print_what_the_bash_runner_printed() {
    let expected = fixture("pipelines-print.txt");
    let mut lines = expected.lines().filter(|l| !l.starts_with('#'));
    let mut cases = 0;
    while let Some(command) = lines.next() {
        let args = shlex::split(command.strip_prefix("$ ").unwrap()).unwrap();
        assert_eq!(args[0], "--print");
        let want = lines.next().unwrap();
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args[0] = "print";
        let out = pipeline(&repo().join("pipelines"), &args).output().unwrap();
        assert!(out.status.success(), "{command}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("{want}\n"), "{command}");
        cases += 1;
    }
    assert!(cases >= 13);
    // Every shipped pipeline is among them.
    for entry in std::fs::read_dir(repo().join("pipelines")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if let Some(name) = file.strip_suffix(".pipeline") {
            assert!(
                expected.contains(&format!("$ --print {name} ")),
                "{name} has no fixture"
            );
        }
    }
}

#[test]
fn wrapper_lists_and_describes_as_before() {
    let run = |args: &[&str]| {
        let out = Command::new(repo().join("pipelines/run"))
            .args(args)
            .env_remove("PIPELINES_LAUNCHER")
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    assert_eq!(
        run(&["--list"]),
        (Some(0), fixture("pipelines-list.txt"), String::new())
    );
    assert_eq!(
        run(&["--help", "host"]),
        (Some(0), fixture("pipelines-help-host.txt"), String::new())
    );
    let (code, out, _) = run(&["selftest", "FRAMES=3", "--help"]);
    assert_eq!(
        (code, out),
        (Some(0), fixture("pipelines-help-selftest.txt"))
    );
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("pipelines/run — run a gst-launch-1.0 pipeline"),
        "{out}"
    );
    assert_eq!(run(&[]).0, Some(2));
    assert_eq!(run(&["--frobnicate"]).0, Some(2));
    let (code, _, err) = run(&["no-such"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("no pipeline 'no-such'") && err.contains("selftest"),
        "{err}"
    );
}

#[test]
fn values_with_spaces_reach_the_element_whole_and_output_folders_are_made() {
    let dir = scratch(
        "spaces",
        &[(
            "gray",
            "# Writes FRAMES 16x16 grey frames.\n# FRAMES: frames (default: 3)\n\
             # OUT: output prefix (required)\n\
             videotestsrc num-buffers=${FRAMES} \\\n\
             \x20 ! video/x-raw,format=GRAY8,width=16,height=16 \\\n\
             \x20 ! filesink location=${OUT}.raw\n",
        )],
    );
    let out_prefix = dir.join("a folder/with 'quotes' and ${OUT}/x");
    let (out, _) = timed(pipeline(
        &dir,
        &[
            "run",
            "gray",
            "FRAMES=5",
            &format!("OUT={}", out_prefix.display()),
        ],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let raw = PathBuf::from(format!("{}.raw", out_prefix.display()));
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 5 * 16 * 16);
    assert!(text(&out.stderr).contains("'gray' finished"));
}

#[test]
fn usage_errors_exit_2_before_anything_runs() {
    let dir = scratch(
        "usage",
        &[
            (
                "undeclared",
                "# Uses a variable it does not declare.\nfakesrc num-buffers=${N} ! fakesink\n",
            ),
            (
                "twice",
                "# Declares twice.\n# N: n (default: 1)\n# N: n (default: 2)\nfakesrc ! fakesink\n",
            ),
            (
                "input",
                "# Reads.\n# SRC: input (required)\n# LOG_DIR: logs (default: logs)\nfilesrc location=${SRC} ! fakesink\n",
            ),
        ],
    );
    for (args, want) in [
        (
            vec!["run", "undeclared"],
            "uses ${N} but its header does not declare it",
        ),
        (vec!["print", "twice"], "variable N declared twice"),
        (vec!["run", "input"], "pipeline 'input' needs SRC=..."),
        (
            vec!["run", "input", "SRC=no/such.mp4"],
            "SRC: input file 'no/such.mp4' does not exist",
        ),
        (
            vec!["run", "input", "SRC=/dev/null", "TIMEOUT=5 m"],
            "TIMEOUT must be a duration",
        ),
        (
            vec!["run", "input", "SRC=x", "src=y"],
            "unknown variable 'src'",
        ),
        (vec!["run", "../input"], "no pipeline '../input'"),
    ] {
        let out = pipeline(&dir, &args).current_dir(&dir).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!dir.join("logs").exists(), "{args:?} made LOG_DIR");
    }
    // The launcher is checked too: no silent fallback on a misspelt one.
    let out = pipeline(&dir, &["run", "input", "SRC=/dev/null"])
        .env("PIPELINES_LAUNCHER", "gst-launch")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn run_with(dir: &Path, launcher: &str, args: &[&str]) -> (Output, Duration) {
    let mut cmd = pipeline(dir, args);
    cmd.env("PIPELINES_LAUNCHER", launcher);
    timed(cmd)
}

#[test]
fn watchdog_stops_an_endless_pipeline_with_eos_and_exit_124() {
    let dir = repo().join("pipelines");
    for launcher in ["gopswarm", "gst-launch-1.0"] {
        let (out, took) = run_with(
            &dir,
            launcher,
            &["run", "selftest", "FRAMES=-1", "TIMEOUT=1.5s"],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(124), "{launcher}: {err}");
        assert!(
            err.contains("timed out after 1.5s (watchdog TIMEOUT=1.5s); stopped with EOS"),
            "{err}"
        );
        // EOS reached the sink: the launcher finished normally after the interrupt.
        assert!(
            text(&out.stdout).contains("Got EOS"),
            "{launcher}: {}",
            text(&out.stdout)
        );
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(9),
            "{launcher}: {took:?}"
        );
    }
}

#[test]
fn watchdog_kills_a_pipeline_that_does_not_stop_on_eos_with_exit_137() {
    // identity sleeps 30 s per buffer: EOS cannot get through within the 10 s grace.
    let dir = scratch(
        "stuck",
        &[(
            "stuck",
            "# Stuck.\nvideotestsrc ! identity sleep-time=30000000 ! fakesink\n",
        )],
    );
    for launcher in ["gopswarm", "gst-launch-1.0"] {
        let (out, took) = run_with(&dir, launcher, &["run", "stuck", "TIMEOUT=1"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(137), "{launcher}: {err}");
        assert!(
            err.contains("did not stop on EOS within 10s; killed"),
            "{err}"
        );
        assert!(
            took >= Duration::from_secs(11) && took < Duration::from_secs(20),
            "{launcher}: {took:?}"
        );
    }
}

#[test]
fn a_stock_launcher_hanging_after_its_error_is_killed() {
    // A gst-launch-1.0 that reports an error and never exits, as 1.22's sometimes does.
    let dir = scratch("hang", &[]);
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("gst-launch-1.0");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'Setting pipeline to PAUSED ...'\n\
         echo 'ERROR: from element /GstPipeline:pipeline0: it broke.' >&2\nexec sleep 60\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut cmd = pipeline(&repo().join("pipelines"), &["run", "selftest"]);
    cmd.env("PIPELINES_LAUNCHER", "gst-launch-1.0")
        .env("PATH", path);
    let (out, took) = timed(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ERROR: from element /GstPipeline:pipeline0: it broke."),
        "{err}"
    );
    assert!(
        err.contains("reported an error and then did not exit within 3s; killed"),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "{took:?}"
    );
}
