// SPDX-License-Identifier: MPL-2.0
//! Log output as log shippers and pipes see it: no ANSI colours when stderr is not a terminal,
//! `--log-format json` writes one JSON object per line, and a clean run of the embedded broker
//! (start, a client connecting and leaving, shutdown) logs no error.

use gopswarm_test_support::swarm::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `gopswarm [format args] orchestrator` on its embedded broker, lets `gopswarm explain`
/// connect and leave, stops it with SIGTERM; its stderr.
fn orchestrator_stderr(name: &str, format_args: &[&str]) -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("logging-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut child = gopswarm_in(&dir)
        .args(format_args)
        .args([
            "orchestrator",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--state",
            &dir.join("state.redb").display().to_string(),
        ])
        .env_remove("RUST_LOG")
        .env_remove("GOPSWARM_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr as it comes (no probing of the port: a bare TCP connect is an error there).
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let mut log = log.lock().unwrap();
                log.push_str(&line.unwrap());
                log.push('\n');
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.lock().unwrap().contains("connected to the broker") {
        assert!(Instant::now() < deadline, "not up: {}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    // A client that connects and disconnects cleanly (the broker's router drops its link),
    // over TLS with the operator's login, as the swarm's keys make the embedded broker.
    let explain = gopswarm_in(&dir)
        .args([
            "explain",
            "--broker",
            &format!("mqtts://127.0.0.1:{port}"),
            "--wait",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!explain.status.success(), "no host, no score");
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "orchestrator exit {status:?}");
    log.lock().unwrap().clone()
}

#[test]
fn text_logs_to_a_pipe_have_no_colours_and_no_broker_errors() {
    let _serial = serial();
    let log = orchestrator_stderr("text", &[]);
    assert!(log.contains("connected to the broker"), "{log}");
    assert!(!log.contains('\x1b'), "ANSI escape in piped logs:\n{log}");
    assert!(
        !log.contains("ERROR"),
        "a clean run logged an error:\n{log}"
    );
    assert!(!log.contains("router-drop"), "{log}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let _serial = serial();
    let log = orchestrator_stderr("json", &["--log-format", "json"]);
    let mut messages = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        assert_ne!(v["level"], "ERROR", "{line}");
        messages.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    for expected in ["embedded MQTT broker on", "connected to the broker"] {
        assert!(messages.iter().any(|m| m.contains(expected)), "{log}");
    }
    assert!(!log.contains('\x1b'), "{log}");
}
