// SPDX-License-Identifier: MPL-2.0
//! No silent fallback for a bad `profileenc` profile, with real processes and a real
//! mosquitto: `gopswarm stream add` refuses it with the parser's message and publishes nothing;
//! a host that gets one on the wire (bypassing the CLI) refuses the task with the reason (acked,
//! in its retained `applied`, counted in its metrics, shown by `gopswarm explain`) and keeps
//! encoding its good stream frame-exactly.

use gopswarm_proto::signed::Principal;
use gopswarm_proto::*;
use gopswarm_test_support::swarm::*;
use std::time::Duration;

const BAD_SPEC: &str = "h264, bitrate=999999";
const BAD_REASON: &str = "field 'bitrate' = 999999 is out of range 16..=100000 kbit/s";

fn stream_add(dir: &std::path::Path, broker: &str, profile: &str) -> std::process::Output {
    gopswarm_in(dir)
        .args([
            "stream",
            "--broker",
            broker,
            "add",
            "--id",
            STREAM,
            "--source",
            "gdp+tcp://127.0.0.1:9",
            "--profile",
            profile,
            "--slots",
            "1",
            "--redundancy",
            "0",
        ])
        .output()
        .unwrap()
}

fn stream_commands(obs: &Observer) -> Vec<StreamCommand> {
    obs.decoded()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Inbound::StreamCommand(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn stream_add_refuses_a_bad_profile_and_publishes_nothing() {
    let _serial = serial();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bad-profile-add");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let broker = Mosquitto::start(&dir);
    let obs = Observer::start(broker.port);
    // The observer is subscribed once it sees its own probe.
    let probe = format!("{ROOT}/test/probe");
    obs.wait_for(
        "the observer's subscription",
        Duration::from_secs(10),
        |o| {
            o.publish(&probe, b"1".to_vec(), false);
            std::thread::sleep(Duration::from_millis(100));
            o.seen.lock().unwrap().iter().any(|s| s.topic == probe)
        },
    );
    for (profile, message) in [
        (
            format!("p1={BAD_SPEC}"),
            format!("--profile p1: profile \"{BAD_SPEC}\" refused: {BAD_REASON}"),
        ),
        (
            "p1=nvh264, bitrate=500".to_string(),
            "unknown codec 'nvh264' (the structure name must be one of h264, h265, vp9, av1)"
                .to_string(),
        ),
        (
            "p1=h264, bitrat=500".to_string(),
            "unknown field 'bitrat' (known: width, height, framerate, bitrate,".to_string(),
        ),
    ] {
        let out = stream_add(&dir, &broker.url(), &profile);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{profile}: {stderr}");
        assert!(stderr.contains(&message), "{profile}: {stderr}");
    }
    // A good profile goes through the same path and arrives: the refused ones would have.
    let good = stream_add(&dir, &broker.url(), &format!("{PROFILE}={SPEC}"));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    obs.wait_for("the good stream add", Duration::from_secs(10), |o| {
        !stream_commands(o).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let commands = stream_commands(&obs);
    assert_eq!(commands.len(), 1, "{commands:?}");
    let StreamCommand::Add { stream } = &commands[0] else {
        panic!("{commands:?}")
    };
    assert_eq!(stream.profiles[0].spec, SPEC);
}

#[test]
fn host_refuses_a_bad_profile_from_the_wire_and_keeps_its_good_stream() {
    let _serial = serial();
    let metrics_port = free_port();
    let mut swarm = Swarm::start(
        "bad-profile-host",
        SwarmOptions {
            hosts: 1,
            slots: 1,
            redundancy: 0,
            duration_s: 16.0,
            host_args: vec![(
                0,
                vec![
                    "--metrics-listen".into(),
                    format!("127.0.0.1:{metrics_port}"),
                ],
            )],
            ..Default::default()
        },
    );
    let h = host_id(0);
    swarm
        .obs
        .wait_for("a few GOPs merged", Duration::from_secs(30), |o| {
            o.chunks().len() >= 2
        });
    let good = swarm
        .obs
        .assignments(&h)
        .into_iter()
        .max_by_key(|a| a.revision)
        .expect("host-0's assignment");
    let good_task = good.tasks[0].clone();
    let bad_task = |profile: &str| Task {
        profile: profile.into(),
        profile_spec: BAD_SPEC.into(),
        ..good_task.clone()
    };
    // As the orchestrator would send it: a prepare command of the orchestrator in force...
    let epoch = swarm
        .obs
        .decoded()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Inbound::OrchestratorStatus(s) => Some(s.epoch),
            _ => None,
        })
        .max()
        .expect("the orchestrator's status");
    let cmd = gopswarm_proto::Command {
        id: "bad-profile-1".into(),
        epoch,
        kind: CommandKind::Prepare {
            task: bad_task("badcmd"),
        },
    };
    // As a buggy orchestrator would send them: signed with its key.
    let orchestrator =
        |t: &Topic, body| signed_by(&swarm.dir, Principal::Orchestrator, &t.path(), body);
    let t = Topic::Command(h.clone());
    swarm
        .obs
        .publish(&t.path(), orchestrator(&t, encode(&cmd)), false);
    // ...and an assignment that keeps the good task and adds a bad one.
    let mut assignment = good.clone();
    assignment.revision += 1000;
    assignment.tasks.push(bad_task("badwire"));
    let t = Topic::Assignment(h.clone());
    swarm
        .obs
        .publish(&t.path(), orchestrator(&t, encode(&assignment)), false);

    let refusal = format!("profile \"{BAD_SPEC}\" refused: {BAD_REASON}");
    swarm
        .obs
        .wait_for("the refusal's ack", Duration::from_secs(10), |o| {
            o.decoded()
                .iter()
                .any(|(_, m)| matches!(m, Inbound::Ack(a) if a.id == "bad-profile-1"))
        });
    let ack = swarm
        .obs
        .decoded()
        .into_iter()
        .find_map(|(_, m)| match m {
            Inbound::Ack(a) if a.id == "bad-profile-1" => Some(a),
            _ => None,
        })
        .unwrap();
    assert!(!ack.ok, "{ack:?}");
    assert_eq!(ack.detail, refusal);
    swarm.obs.wait_for(
        "the applied state with both refusals",
        Duration::from_secs(10),
        |o| {
            o.decoded().iter().any(|(_, m)| {
                matches!(m, Inbound::Applied(a) if a.revision == assignment.revision
                    && ["badcmd", "badwire"].iter().all(|p| a.tasks.iter().any(|t| {
                        t.profile == *p && t.error.as_deref() == Some(refusal.as_str())
                    }))
                    && a.tasks.iter().any(|t| t.profile == PROFILE && t.error.is_none()))
            })
        },
    );
    // Counted in the host's metrics (exported with each heartbeat).
    swarm
        .obs
        .wait_for("the refusals counted", Duration::from_secs(10), |_| {
            http_get(metrics_port, "/metrics").contains("gopswarm_host_refused_tasks_total 2")
        });
    // Shown by `gopswarm explain`.
    let out = gopswarm_in(&swarm.dir)
        .args(["explain", &h, "--broker", &swarm.broker.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("host host-0: tier"), "{text}");
    for p in ["badcmd", "badwire"] {
        assert!(
            text.contains(&format!("  {STREAM}/{p}: {refusal}")),
            "{p} missing from:\n{text}"
        );
    }
    let out = gopswarm_in(&swarm.dir)
        .args(["explain", &h, "--broker", &swarm.broker.url(), "--json"])
        .output()
        .unwrap();
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["task_errors"].as_array().unwrap().len(), 2, "{line}");
    assert!(line["stability"].is_number(), "{line}");

    // The good stream never stopped: every GOP merged, frame-exact.
    assert!(swarm.hosts[0].alive(), "host-0 died");
    let summary = swarm.finish();
    let c = check_output(&swarm.dir, &summary, swarm.opts.gop_s);
    assert_eq!(c.frames, c.expected, "{c:?}\n{summary:#}");
    assert_eq!(c.bad_steps, 0, "{c:?}");
    assert!(c.missing_gops.is_empty(), "{c:?}");
    assert!(
        summary["lost_gops"].as_array().unwrap().is_empty(),
        "{summary:#}"
    );
    let log = std::fs::read_to_string(swarm.dir.join("host-0.log")).unwrap();
    assert!(
        log.contains(&format!("task {STREAM}/badwire: {refusal}")),
        "{log}"
    );
}
