// SPDX-License-Identifier: MPL-2.0
//! Three encoder-host processes send partial streams over TCP on loopback to a merger process,
//! all started with the shipped pipelines through `pipelines/run`.

use gopswarm_agents::pipeline;
use gopswarm_test_support::e2e::*;
use gopswarm_test_support::{Reaper, free_port};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Start `pipelines/run`; its output goes to `log` (a pipe nobody reads would block it).
fn runner(args: &[String], log: &std::path::Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    Command::new(gopswarm::repo_root().join("pipelines/run"))
        .args(args)
        .current_dir(gopswarm::repo_root())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("pipelines/run starts")
}

/// Whether something listens on 127.0.0.1:`port` (read from /proc, so no connection or bind
/// attempt disturbs the one-connection tcpserversrc).
fn listening(port: u16) -> bool {
    let needle = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&needle) && f[3] == "0A"
        })
}

fn wait(child: &mut Child, limit: Duration, log: &std::path::Path) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            start.elapsed() < limit,
            "process did not finish within {limit:?}; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn hosts_over_tcp_merge_frame_exact() {
    let clip = clip("bikes");
    let out = out_dir("tcp-swarm");
    let prefix = out.join("merged");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut merger_args = vec![
        "merger".to_string(),
        format!("OUT={}", prefix.display()),
        "TIMEOUT=300".into(),
    ];
    for (i, p) in ports.iter().enumerate() {
        merger_args.push(format!("PORT{i}={p}"));
    }
    let logs: Vec<std::path::PathBuf> = (0..4).map(|i| out.join(format!("proc{i}.log"))).collect();
    let mut reaper = Reaper(vec![runner(&merger_args, &logs[0])]);
    for &p in &ports {
        let start = Instant::now();
        while !listening(p) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "merger never listened on {p}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for (i, p) in ports.iter().enumerate() {
        reaper.0.push(runner(
            &[
                "host".into(),
                format!("SRC={}", clip.path.display()),
                format!("PORT={p}"),
                format!("INDEX={i}"),
                format!("HOST=host{i}"),
                "GOP=1000000000".into(),
                "TIMEOUT=300".into(),
            ],
            &logs[i + 1],
        ));
    }
    for (i, log) in logs.iter().enumerate().skip(1) {
        let code = wait(&mut reaper.0[i], Duration::from_secs(300), log);
        assert_eq!(code, 0, "host {} failed", i - 1);
    }
    let code = wait(&mut reaper.0[0], Duration::from_secs(120), &logs[0]);
    assert_eq!(code, 0, "merger failed");

    let output = out.join("merged.mp4");
    let report = qa::check_output(&clip, &output, &pipeline::Outcome::default()).unwrap();
    qa::print_table(std::slice::from_ref(&report));
    assert_frame_exact(&report);
    let hls = out.join("merged-hls/index.m3u8");
    assert_eq!(media::video_frames(&hls).unwrap().len(), 250);
}
