// SPDX-License-Identifier: MPL-2.0
//! Every subcommand of the CLI explains itself.

use std::process::Command;

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["qa", "--help"],
        vec!["bench", "--help"],
        vec!["chunks", "--help"],
        vec!["demo", "--help"],
        vec!["source", "--help"],
        vec!["host", "--help"],
        vec!["orchestrator", "--help"],
        vec!["merge", "--help"],
        vec!["stream", "--help"],
        vec!["stream", "add", "--help"],
        vec!["stream", "handoff", "--help"],
        vec!["bench-control", "--help"],
        vec!["explain", "--help"],
        vec!["simulate", "--help"],
        vec!["learn", "--help"],
        vec!["rolling-update", "--help"],
        vec!["stream", "announce", "--help"],
        vec!["launch", "--help"],
        vec!["pipeline", "--help"],
        vec!["pipeline", "run", "--help"],
        vec!["pipeline", "print", "--help"],
        vec!["pipeline", "list", "--help"],
        vec!["pipeline", "describe", "--help"],
        vec!["acl", "--help"],
        vec!["soak", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_gopswarm"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gopswarm"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn bad_arguments_get_a_clear_error() {
    // A broker URL that is not one, an id that cannot be a topic level: refused before any I/O.
    for (args, want) in [
        (
            vec!["host", "--id", "a/b", "--broker", "mqtt://127.0.0.1:1"],
            "host id",
        ),
        (
            vec!["explain", "a/b", "--broker", "mqtt://127.0.0.1:1"],
            "host id",
        ),
        (
            vec![
                "orchestrator",
                "--broker",
                "mqtt://127.0.0.1:1",
                "--tiers",
                r#"{"gold":50,"silver":80}"#,
            ],
            "silver < gold",
        ),
        (vec!["host", "--id", "a", "--broker", "http://x"], "scheme"),
        (
            vec![
                "stream",
                "--broker",
                "mqtt://127.0.0.1:1",
                "add",
                "--id",
                "s",
                "--source",
                "x",
                "--profile",
                "nospec",
            ],
            "ID=SPEC",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_gopswarm"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn an_unreachable_broker_is_named() {
    // Nothing listens on port 1: the command fails at once and says which broker.
    for args in [
        vec![
            "stream",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--insecure",
            "remove",
            "--id",
            "s",
        ],
        vec![
            "rolling-update",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--insecure",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_gopswarm"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("broker mqtt://127.0.0.1:1: ") && err.contains("refused"),
            "{args:?}: {err}"
        );
    }
}
