// SPDX-License-Identifier: MPL-2.0
//! The control plane end to end, against a real mosquitto: host death with and without
//! redundancy, planned handoffs, broker and orchestrator restarts, a standby orchestrator
//! taking over (and fencing the leader it replaced), a stale-epoch host, bad payloads on every
//! topic, an incompatible host. Outputs are checked with ffprobe/ffmpeg,
//! and what happened with the messages seen on the wire.

use gopswarm_proto::signed::Principal;
use gopswarm_proto::*;
use gopswarm_test_support::swarm::*;
use std::time::{Duration, Instant};

#[test]
fn host_killed_mid_gop_with_redundancy_loses_nothing() {
    let _serial = serial();
    let mut swarm = Swarm::start("kill-r1", SwarmOptions::default());
    swarm
        .obs
        .wait_for("a few GOPs merged", Duration::from_secs(30), |o| {
            o.chunks().len() >= 6
        });
    let victim_slot = 1;
    let victim = swarm.obs.layout().unwrap().history[0].hosts[victim_slot].clone();
    let killed_at = swarm.kill_mid_gop(&victim);
    swarm
        .obs
        .wait_for("the re-deal", Duration::from_secs(10), |o| {
            o.layout_epochs() >= 2
        });
    let (_, seen_at) = swarm
        .obs
        .layout_times()
        .into_iter()
        .find(|(e, _)| *e == 2)
        .unwrap();
    let detect = seen_at.duration_since(killed_at);
    let limit = Duration::from_secs_f64(1.5 * swarm.opts.keepalive_s);
    assert!(
        detect <= limit,
        "re-deal {detect:?} after the kill (limit {limit:?})"
    );
    let l = swarm.obs.layout().unwrap();
    assert!(!l.history[1].hosts.contains(&victim));
    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
    eprintln!("death to new layout: {detect:?}");
}

#[test]
fn host_killed_without_redundancy_loses_only_reported_gops() {
    let _serial = serial();
    let mut swarm = Swarm::start(
        "kill-r0",
        SwarmOptions {
            redundancy: 0,
            ..Default::default()
        },
    );
    swarm
        .obs
        .wait_for("a few GOPs merged", Duration::from_secs(30), |o| {
            o.chunks().len() >= 4
        });
    let victim = swarm.obs.layout().unwrap().history[0].hosts[1].clone();
    swarm.kill_mid_gop(&victim);
    let summary = swarm.finish();
    let c = check_output(&swarm.dir, &summary, swarm.opts.gop_s);
    let lost: Vec<u64> = summary["lost_gops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_u64().unwrap())
        .collect();
    // Bounded: the victim's GOPs between its death and the switch GOP (margin 2): at most one
    // in three GOPs over ~3 GOPs.
    assert!(!lost.is_empty() && lost.len() <= 2, "lost {lost:?}");
    assert_eq!(
        lost, c.missing_gops,
        "reported gaps must be what ffprobe finds missing"
    );
    assert_eq!(c.frames, c.expected - lost.len() * 50, "{c:?}");
    assert!(c.decode_errors.is_empty(), "{c:?}");
    assert_eq!(c.decode_timing, None, "{c:?}");
}

/// Handoffs in a row: 15 in the suite, more with `GOPSWARM_TEST_HANDOFFS=50` (about 4 s each).
#[test]
fn planned_handoffs_in_a_row_land_on_their_committed_gops() {
    let _serial = serial();
    let handoffs: usize = std::env::var("GOPSWARM_TEST_HANDOFFS")
        .ok()
        .map(|v| v.parse().expect("GOPSWARM_TEST_HANDOFFS: a number"))
        .unwrap_or(15);
    let budget_s = 4.0 * handoffs as f64 + 20.0;
    let mut swarm = Swarm::start(
        "handoffs",
        SwarmOptions {
            hosts: 4,
            slots: 2,
            redundancy: 0,
            gop_s: 1.0,
            duration_s: budget_s + 20.0,
            latency_gops: 8,
            ..Default::default()
        },
    );
    let mut requested = 0;
    let mut last_request = Instant::now() - Duration::from_secs(60);
    let deadline = Instant::now() + Duration::from_secs_f64(budget_s);
    while swarm.obs.layout_epochs() < handoffs + 1 {
        assert!(
            Instant::now() < deadline,
            "only {} layouts after {requested} requests",
            swarm.obs.layout_epochs()
        );
        let epochs = swarm.obs.layout_epochs();
        // One at a time: ask once the previous one landed; ask again while it is refused
        // (the last holder still drains its final GOP, the orchestrator is busy).
        if epochs == requested + 1 || last_request.elapsed() > Duration::from_secs(2) {
            let l = swarm.obs.layout().unwrap();
            let from = l.history.last().unwrap().hosts[requested % 2].clone();
            let cmd = StreamCommand::Handoff {
                stream: STREAM.into(),
                profile: PROFILE.into(),
                from_host: from,
                to_host: None,
            };
            let t = Topic::StreamControl.path();
            let signed = by_operator(&swarm.dir, &t, encode(&cmd));
            swarm.obs.publish(&t, signed, false);
            if epochs == requested + 1 {
                requested += 1;
            }
            last_request = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Stop the source early: EOS reaches hosts and merger.
    swarm.source.signal(libc::SIGINT);
    swarm.source.kill();
    let summary = swarm.finish();
    let layout = swarm.obs.layout().unwrap();
    assert!(layout.history.len() > handoffs, "{}", layout.history.len());
    // Every GOP's primary came from the host the layout in force at that GOP names.
    for c in summary["chunks"].as_array().unwrap() {
        let g = c["gop"].as_u64().unwrap();
        let host = c["host"].as_str().unwrap();
        let e = layout.epoch_at(g).unwrap();
        let holder = &e.hosts[(g % e.hosts.len() as u64) as usize];
        assert_eq!(
            host, holder,
            "GOP {g}: from {host}, layout epoch {} says {holder}",
            e.epoch
        );
        assert_eq!(c["epoch"].as_u64().unwrap(), e.epoch, "GOP {g}");
    }
    let check = check_output(&swarm.dir, &summary, swarm.opts.gop_s);
    assert_eq!(check.bad_steps, 0, "{check:?}");
    assert!(check.decode_errors.is_empty(), "{check:?}");
    assert_eq!(check.decode_timing, None, "{check:?}");
    assert!(check.missing_gops.is_empty(), "{check:?}");
}

#[test]
fn broker_restart_mid_stream_loses_and_duplicates_nothing() {
    let _serial = serial();
    let mut swarm = Swarm::start("broker-restart", SwarmOptions::default());
    swarm
        .obs
        .wait_for("a few GOPs merged", Duration::from_secs(30), |o| {
            o.chunks().len() >= 6
        });
    let epochs_before = swarm.obs.layout_epochs();
    swarm.broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    swarm.broker.restart();
    let summary = swarm.finish();
    let c = assert_frame_exact(&swarm, &summary);
    // Nobody was declared dead for the outage: the layout did not change.
    assert_eq!(swarm.obs.layout_epochs(), epochs_before);
    // Reconnected with backoff, once each: no storm (mosquitto's own log).
    for i in 0..swarm.opts.hosts {
        let n = swarm
            .broker
            .connects(&format!("gopswarm-host-{}", host_id(i)));
        assert!((2..=3).contains(&n), "host-{i} connected {n} times");
    }
    let n = swarm.broker.connects("gopswarm-orchestrator");
    assert!((2..=3).contains(&n), "orchestrator connected {n} times");
    eprintln!(
        "broker restart: {} frames, {} resend requests, {} duplicates dropped",
        c.frames, summary["resend_requests"], summary["duplicates"]
    );
}

/// The newest assignment revision seen for each of the first `hosts` hosts.
fn newest_revisions(o: &Observer, hosts: usize) -> Vec<u64> {
    (0..hosts)
        .map(|i| {
            o.assignments(&host_id(i))
                .iter()
                .map(|a| a.revision)
                .max()
                .unwrap_or(0)
        })
        .collect()
}

#[test]
fn orchestrator_restart_keeps_assignments() {
    let _serial = serial();
    let mut swarm = Swarm::start("orchestrator-restart", SwarmOptions::default());
    swarm
        .obs
        .wait_for("a few GOPs merged", Duration::from_secs(30), |o| {
            o.chunks().len() >= 4
        });
    let revisions = |o: &Observer| newest_revisions(o, 3);
    let before = revisions(&swarm.obs);
    swarm.orchestrator.signal(libc::SIGKILL);
    swarm.orchestrator.kill();
    std::thread::sleep(Duration::from_secs(2));
    let args = swarm.orchestrator_args();
    swarm.orchestrator = Proc::spawn(&swarm.dir, "orchestrator-2", &args);
    // It is back (its retained status says online with a new epoch) ...
    swarm
        .obs
        .wait_for("orchestrator epoch 2", Duration::from_secs(15), |o| {
            o.decoded().iter().any(
                |(_, m)| matches!(m, Inbound::OrchestratorStatus(s) if s.online && s.epoch == 2),
            )
        });
    std::thread::sleep(Duration::from_secs(4));
    // ... and changed nobody's assignment.
    assert_eq!(revisions(&swarm.obs), before);
    assert_eq!(swarm.obs.layout_epochs(), 1);
    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
    assert_eq!(
        swarm.obs.layout_epochs(),
        1,
        "no reassignment without cause"
    );
}

#[test]
fn standby_takes_over_from_a_killed_leader_keeping_every_assignment() {
    let _serial = serial();
    let mut swarm = Swarm::start(
        "standby",
        SwarmOptions {
            duration_s: 50.0,
            ..Default::default()
        },
    );
    let keepalive = Duration::from_secs_f64(swarm.opts.keepalive_s);
    // A standby beside the leader: its own name and state, the same broker and keys.
    let standby_args = |name: &str, standby: bool| {
        let mut a = orchestrator_args(&swarm.dir.join(name), &swarm.broker, swarm.opts.keepalive_s);
        a.extend(["--name".into(), name.into()]);
        if standby {
            a.push("--standby".into());
        }
        a
    };
    let mut standby = Proc::spawn(&swarm.dir, "orchestrator-b", &standby_args("b", true));
    let log = |name: &str| {
        std::fs::read_to_string(swarm.dir.join(format!("{name}.log"))).unwrap_or_default()
    };
    let wait_log = |name: &str, text: &str, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !log(name).contains(text) {
            assert!(Instant::now() < deadline, "{what}:\n{}", log(name));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_log(
        "orchestrator-b",
        "standing by: orchestrator main leads",
        "the standby never followed",
    );
    swarm
        .obs
        .wait_for("a few GOPs merged", Duration::from_secs(30), |o| {
            o.chunks().len() >= 4
        });
    let revisions = |o: &Observer| newest_revisions(o, 3);
    let before = revisions(&swarm.obs);
    let layout_before = swarm.obs.layout().unwrap();
    let killed_at = Instant::now();
    swarm.orchestrator.signal(libc::SIGKILL);
    swarm.orchestrator.kill();
    let lease_b = |o: &Observer| {
        o.decoded().into_iter().find_map(|(at, m)| match m {
            Inbound::Lease(l) if l.holder == "b" => Some((at, l)),
            _ => None,
        })
    };
    swarm.obs.wait_for(
        "the standby's lease",
        3 * keepalive + Duration::from_secs(5),
        |o| lease_b(o).is_some(),
    );
    let (at, lease) = lease_b(&swarm.obs).unwrap();
    let takeover = at.duration_since(killed_at);
    assert!(
        takeover <= 3 * keepalive,
        "the standby took over {takeover:?} after the kill (limit 3 keep-alives, {:?})",
        3 * keepalive
    );
    assert!(lease.epoch > layout_before.orchestrator_epoch, "{lease:?}");
    // A few keep-alives later: nobody's assignment changed, the layout is the same.
    std::thread::sleep(4 * keepalive);
    assert_eq!(
        revisions(&swarm.obs),
        before,
        "no reassignment without cause"
    );
    let layout_after = swarm.obs.layout().unwrap();
    assert_eq!(layout_after.history, layout_before.history);
    assert_eq!(
        layout_after.orchestrator_epoch, lease.epoch,
        "republished by the new leader"
    );
    // The old leader, started again, finds the standby leading and stands by itself.
    let old = Proc::spawn(
        &swarm.dir,
        "orchestrator-main-again",
        &swarm.orchestrator_args(),
    );
    wait_log(
        "orchestrator-main-again",
        "standing by: orchestrator b leads",
        "the old leader did not stand by",
    );
    // The new leader frozen (SIGSTOP) while the old one stands by: the broker drops it after
    // 1.5 keep-alives, and its will hands the lease back.
    standby.signal(libc::SIGSTOP);
    let frozen_at = Instant::now();
    let lease_main = |o: &Observer| {
        o.decoded().into_iter().find_map(|(at, m)| match m {
            Inbound::Lease(l) if l.holder == "main" && l.epoch > lease.epoch => Some((at, l)),
            _ => None,
        })
    };
    swarm.obs.wait_for(
        "the lease back with main",
        3 * keepalive + Duration::from_secs(5),
        |o| lease_main(o).is_some(),
    );
    let (at, lease3) = lease_main(&swarm.obs).unwrap();
    // A frozen leader keeps its connection: the lease's time to live (3 keep-alives) or the
    // broker's keep-alive check, whichever is first, plus a check interval and delivery.
    let second = at.duration_since(frozen_at);
    let limit = 3 * keepalive + Duration::from_millis(500);
    assert!(
        second <= limit,
        "took the lease back {second:?} after the freeze (limit {limit:?})"
    );
    // Woken up, the frozen leader finds itself fenced and exits, having changed nothing.
    std::thread::sleep(keepalive);
    let woken_at = Instant::now();
    standby.signal(libc::SIGCONT);
    let st = standby.wait(Duration::from_secs(15));
    assert!(!st.success(), "a fenced orchestrator exits with an error");
    assert!(
        log("orchestrator-b").contains("fenced: orchestrator main leads"),
        "{}",
        log("orchestrator-b")
    );
    std::thread::sleep(keepalive);
    let stale: Vec<String> = swarm
        .obs
        .decoded()
        .into_iter()
        .filter(|(at, _)| *at > woken_at)
        .filter_map(|(_, m)| match m {
            Inbound::Assignment(a) if a.orchestrator_epoch <= lease.epoch => Some(format!("{a:?}")),
            Inbound::Layout(l) if l.orchestrator_epoch <= lease.epoch => Some(format!("{l:?}")),
            Inbound::Command(_, c) if c.epoch <= lease.epoch => Some(format!("{c:?}")),
            _ => None,
        })
        .collect();
    assert!(stale.is_empty(), "the fenced leader published {stale:?}");
    // It may renew its lease once more before it sees the newer one (a held leader renews);
    // the leader then puts its own back: the last lease seen is the leader's.
    let last_lease = swarm
        .obs
        .decoded()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Inbound::Lease(l) => Some(l),
            _ => None,
        })
        .next_back()
        .unwrap();
    assert_eq!(
        (last_lease.holder.as_str(), last_lease.epoch),
        ("main", lease3.epoch),
        "the retained lease is the leader's"
    );
    assert_eq!(
        revisions(&swarm.obs),
        before,
        "no reassignment without cause"
    );
    // The leader acts: a host killed is re-dealt by it, and redundancy covers its GOPs.
    let victim = layout_before.history[0].hosts[1].clone();
    swarm.kill_mid_gop(&victim);
    swarm
        .obs
        .wait_for("the re-deal", Duration::from_secs(10), |o| {
            o.layout_epochs() >= 2
        });
    let l = swarm.obs.layout().unwrap();
    assert!(!l.history.last().unwrap().hosts.contains(&victim));
    assert_eq!(l.orchestrator_epoch, lease3.epoch);
    swarm.orchestrator = old;
    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
    eprintln!(
        "standby took over {takeover:?} after the leader's SIGKILL; the old leader {second:?} after the standby's freeze"
    );
}

#[test]
fn stale_epoch_host_is_fenced_by_the_merger() {
    let _serial = serial();
    // As many hosts as slots, so the frozen one holds a slot whichever order they joined
    // in; the spare it hands off to joins after the first layout.
    let mut swarm = Swarm::start(
        "stale-epoch",
        SwarmOptions {
            hosts: 3,
            slots: 3,
            redundancy: 0,
            host_args: vec![(0, vec!["--freeze-after-commit".into()])],
            // Room after the handoff for the frozen host's next GOPs: adding the spare and the
            // handoff can take 20 s on a loaded machine, and a 30 s stream then ended first.
            duration_s: 50.0,
            ..Default::default()
        },
    );
    swarm
        .obs
        .wait_for("a few GOPs merged", Duration::from_secs(30), |o| {
            o.chunks().len() >= 3
        });
    let l = swarm.obs.layout().unwrap();
    assert!(l.history[0].hosts.contains(&host_id(0)), "{l:?}");
    swarm.add_host(3, &[]);
    let cmd = StreamCommand::Handoff {
        stream: STREAM.into(),
        profile: PROFILE.into(),
        from_host: host_id(0),
        to_host: Some(host_id(3)),
    };
    let t = Topic::StreamControl.path();
    let signed = by_operator(&swarm.dir, &t, encode(&cmd));
    swarm.obs.publish(&t, signed, false);
    swarm
        .obs
        .wait_for("the handoff", Duration::from_secs(20), |o| {
            o.layout_epochs() >= 2
        });
    let k = swarm.obs.layout().unwrap().history[1].from_gop;
    // The frozen host never heard of it and goes on with epoch 1 past k ...
    swarm
        .obs
        .wait_for("stale chunks on the wire", Duration::from_secs(30), |o| {
            o.chunks()
                .iter()
                .any(|(_, h)| h.host_id == host_id(0) && h.gop_index >= k && h.epoch == 1)
        });
    let summary = swarm.finish();
    // ... and the merger refused every one of them.
    assert!(
        summary["fenced_stale"].as_u64().unwrap() >= 1,
        "{summary:#}"
    );
    for c in summary["chunks"].as_array().unwrap() {
        let g = c["gop"].as_u64().unwrap();
        if g >= k {
            assert_ne!(
                c["host"].as_str().unwrap(),
                host_id(0),
                "GOP {g} from the stale host"
            );
        }
    }
    assert_frame_exact(&swarm, &summary);
}

#[test]
fn bad_payloads_on_every_topic_change_nothing() {
    let _serial = serial();
    let mut swarm = Swarm::start("bad-payloads", SwarmOptions::default());
    swarm
        .obs
        .wait_for("a few GOPs merged", Duration::from_secs(30), |o| {
            o.chunks().len() >= 4
        });
    let h = host_id(0);
    let topics = [
        Topic::Birth(h.clone()),
        Topic::Death(h.clone()),
        Topic::Heartbeat(h.clone()),
        Topic::Assignment(h.clone()),
        Topic::Applied(h.clone()),
        Topic::Command(h.clone()),
        Topic::Ack(h.clone()),
        Topic::StreamDef(STREAM.into()),
        Topic::Layout(STREAM.into(), PROFILE.into()),
        Topic::Chunks(STREAM.into(), PROFILE.into()),
        Topic::StreamEnd(STREAM.into(), PROFILE.into()),
        Topic::Resend(STREAM.into(), PROFILE.into()),
        Topic::StreamControl,
        Topic::OrchestratorStatus,
    ];
    let oversized = format!(
        "{{\"v\":1,\"pad\":\"{}\"}}",
        "x".repeat(MAX_CONTROL_PAYLOAD + 10)
    );
    let payloads: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        br#"{"v":99,"host":"host-0","seq":1}"#.to_vec(),
        br#"{"host":"host-0","seq":1}"#.to_vec(),
        oversized.into_bytes(),
        br#"{"v":1,"host":"someone-else","seq":1}"#.to_vec(),
        (0..=255u8).collect(),
    ];
    for t in &topics {
        for p in &payloads {
            swarm.obs.publish(&t.path(), p.clone(), false);
        }
    }
    // A well-formed death of an old connection, signed by host-0 (its will of back then,
    // replayed): stale, must not kill host-0.
    let t = Topic::Death(h.clone()).path();
    let old_will = encode(&Death {
        host: h.clone(),
        seq: 1,
    });
    swarm.obs.publish(
        &t,
        signed_by(&swarm.dir, Principal::Host(h.clone()), &t, old_will),
        false,
    );
    std::thread::sleep(Duration::from_secs(3));
    for p in swarm.hosts.iter_mut() {
        assert!(p.alive(), "{} died", p.name);
    }
    assert!(swarm.orchestrator.alive(), "orchestrator died");
    assert_eq!(swarm.obs.layout_epochs(), 1, "bad input changed the layout");
    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
    assert!(
        summary["rejected_payloads"].as_u64().unwrap() >= 5,
        "{summary:#}"
    );
    assert!(summary["corrupt"].as_u64().unwrap() >= 1, "{summary:#}");
    let log = std::fs::read_to_string(swarm.dir.join("orchestrator.log")).unwrap();
    let refused = log.matches("refused payload").count();
    // Six topics the orchestrator listens to (birth, death, heartbeat, applied, ack, ctl) x
    // the payloads that cannot decode: more than the log shows one by one in 10 s.
    assert!(
        refused >= RefusalLog::PER_WINDOW as usize,
        "orchestrator refused {refused} payloads"
    );
    assert!(log.contains("stale death"), "stale death not reported");
    // The merger too: it kept waiting for host-0, whose GOPs all came.
    let merger_log = std::fs::read_to_string(swarm.dir.join("merger.log")).unwrap();
    assert!(
        merger_log.contains("ignoring stale death of host-0"),
        "the merger took a stale death for real"
    );
    // host-0 counted what it refused and says so in its heartbeats.
    let counted = swarm.obs.decoded().iter().any(|(_, m)| {
        matches!(m, Inbound::Heartbeat(h) if h.host == host_id(0) && h.metrics.rejected_payloads >= 10)
    });
    assert!(
        counted,
        "host-0 heartbeats do not count its refused payloads"
    );
}

#[test]
fn incompatible_host_never_gets_a_slot() {
    let _serial = serial();
    let mut swarm = Swarm::start(
        "incompatible",
        SwarmOptions {
            hosts: 2,
            slots: 2,
            redundancy: 0,
            duration_s: 14.0,
            host_args: vec![(1, vec!["--advertise-version".into(), "9.9.0".into()])],
            ..Default::default()
        },
    );
    let l = swarm.obs.layout().unwrap();
    assert_eq!(l.history[0].hosts, vec![host_id(0)]);
    let summary = swarm.finish();
    assert!(
        swarm
            .obs
            .assignments(&host_id(1))
            .iter()
            .all(|a| a.tasks.is_empty())
    );
    assert!(
        !summary["gops_by_host"]
            .as_object()
            .unwrap()
            .contains_key(&host_id(1))
    );
    assert_frame_exact(&swarm, &summary);
}

#[test]
fn chunks_over_tcp_with_a_host_killed() {
    let _serial = serial();
    let mut swarm = Swarm::start(
        "tcp-chunks",
        SwarmOptions {
            tcp_chunks: true,
            ..Default::default()
        },
    );
    swarm.obs.wait_for("layout", Duration::from_secs(30), |o| {
        o.layout_epochs() >= 1
    });
    std::thread::sleep(Duration::from_secs(8));
    // The merger's listener speaks TLS with the mergers' certificate, which openssl checks
    // against the swarm CA ...
    let sink = swarm
        .obs
        .decoded()
        .into_iter()
        .find_map(|(_, m)| match m {
            Inbound::StreamDef(d) => d.chunk_sink,
            _ => None,
        })
        .expect("a TCP chunk sink");
    let port = sink.rsplit(':').next().unwrap().to_string();
    let ca = swarm_keys(&swarm.dir).broker_ca().expect("swarm CA");
    let s_client = std::process::Command::new("openssl")
        .args(["s_client", "-brief", "-verify_return_error", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-CAfile")
        .arg(&ca)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&s_client.stderr).to_string()
        + &String::from_utf8_lossy(&s_client.stdout);
    assert!(
        text.contains("Verification: OK") && text.contains("gopswarm merger"),
        "openssl s_client against the merger:\n{text}"
    );
    // ... and a client that does not is cut off.
    {
        use std::io::Write;
        let mut plain = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        let _ = plain.write_all(b"not TLS, not a chunk\r\n\r\n");
    }
    // A part that dials the merger's port as its broker (traffic redirected there) refuses the
    // mergers' certificate before it sends its login: it is not the broker's.
    {
        let keys = swarm_keys(&swarm.dir);
        let operator = keys
            .signer(gopswarm_proto::signed::Principal::Operator(
                gopswarm_proto::keys::DEFAULT_OPERATOR.into(),
            ))
            .unwrap();
        let url = gopswarm_proto::link::BrokerUrl::parse(&format!("mqtts://127.0.0.1:{port}"))
            .unwrap()
            .for_swarm(Some(&ca), Some(operator.broker_login()))
            .unwrap();
        let (_client, mut conn) = rumqttc::Client::new(url.mqtt_options("posing-test"), 4);
        let first = conn.recv_timeout(Duration::from_secs(5));
        let text = format!("{first:?}");
        assert!(
            text.contains("broker.gopswarm.invalid"),
            "the merger's certificate passed for the broker's: {text}"
        );
    }
    let victim = swarm.obs.layout().unwrap().history[0].hosts[1].clone();
    swarm.kill_mid_gop(&victim);
    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
    // Everything came over TCP: no chunk crossed the broker.
    assert!(swarm.obs.chunks().is_empty());
    assert!(summary["chunks_in"].as_u64().unwrap() >= 10, "{summary:#}");
    let merger_log = std::fs::read_to_string(swarm.dir.join("merger.log")).unwrap();
    assert!(
        merger_log.contains("partial stream from 127.0.0.1"),
        "the plain client was not refused:\n{merger_log}"
    );
}

/// A CA and a server certificate for 127.0.0.1, made with openssl.
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let st = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=gopswarm test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
}

#[test]
fn tls_broker_with_credentials() {
    let _serial = serial();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("control-tls");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let st = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(dir.join("passwd"))
        .args(["swarm", "s3cret"])
        .status()
        .unwrap();
    assert!(st.success());
    let port = free_port();
    // Listening is asserted by `with_config`; dropping the broker stops it.
    let _broker = Mosquitto::with_config(
        &dir,
        port,
        format!(
            "per_listener_settings false\nallow_anonymous false\npassword_file {d}/passwd\n\
             listener {port} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n\
             persistence false\nuser root\nlog_dest file {d}/mosquitto.log\nconnection_messages true\n",
            d = dir.display()
        ),
    );
    let ca = dir.join("ca.crt");
    let url = format!("mqtts://swarm:s3cret@127.0.0.1:{port}?ca={}", ca.display());
    let bad = format!("mqtts://swarm:wrong@127.0.0.1:{port}?ca={}", ca.display());
    let orch = Proc::spawn(
        &dir,
        "orchestrator",
        &[
            "orchestrator".into(),
            "--broker".into(),
            url.clone(),
            "--state".into(),
            dir.join("state.redb").display().to_string(),
            "--keepalive".into(),
            "1".into(),
        ],
    );
    let host = Proc::spawn(
        &dir,
        "host-0",
        &[
            "host".into(),
            "--id".into(),
            "host-0".into(),
            "--broker".into(),
            url.clone(),
            "--keepalive".into(),
            "1".into(),
        ],
    );
    let intruder = Proc::spawn(
        &dir,
        "intruder",
        &[
            "host".into(),
            "--id".into(),
            "intruder".into(),
            "--broker".into(),
            bad,
            "--keepalive".into(),
            "1".into(),
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    // A stream added over TLS with credentials reaches the orchestrator, which sends a Prepare
    // to the one host it knows; the host's ack comes back (it cannot reach the source given
    // here, so the ack says why). The host with a wrong password never joined.
    let st = std::process::Command::new(BIN)
        .env("GOPSWARM_KEYS", swarm_keys(&dir).dir)
        .args([
            "stream",
            "--broker",
            &url,
            "add",
            "--id",
            "cam1",
            "--source",
            "gdp+tcp://127.0.0.1:9",
            "--profile",
            "p=h264",
            "--slots",
            "2",
            "--redundancy",
            "0",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let log =
        |name: &str| std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !log("orchestrator").contains("host-0 cannot prepare cam1/p") {
        assert!(
            Instant::now() < deadline,
            "no prepare/ack round trip over TLS:\n{}\n{}",
            log("host-0"),
            log("orchestrator")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(log("orchestrator").contains("stream cam1 added"));
    assert!(
        !log("intruder").contains("connected (seq"),
        "{}",
        log("intruder")
    );
    assert!(!log("orchestrator").contains("intruder"));
    drop((orch, host, intruder));
}

#[test]
fn late_merger_gets_missed_gops_resent_from_the_hosts() {
    let _serial = serial();
    let mut swarm = Swarm::start(
        "late-merger",
        SwarmOptions {
            // The first chunks leave the hosts about 3 GOPs after the first layout GOP.
            merger_delay_s: 14.0,
            duration_s: 36.0,
            ..Default::default()
        },
    );
    let summary = swarm.finish();
    let layout = swarm.obs.layout().unwrap();
    // Output starts at the first layout GOP even though the merger came up GOPs later.
    assert_eq!(
        summary["first_gop"].as_u64(),
        Some(layout.history[0].from_gop)
    );
    assert!(
        summary["resend_requests"].as_u64().unwrap() >= 1,
        "{summary:#}"
    );
    assert_frame_exact(&swarm, &summary);
}

#[test]
fn chunks_over_srt_with_a_host_killed() {
    let _serial = serial();
    let mut swarm = Swarm::start(
        "srt-chunks",
        SwarmOptions {
            srt_chunks: true,
            ..Default::default()
        },
    );
    std::thread::sleep(Duration::from_secs(8));
    // The streams are encrypted: a caller without the swarm's SRT passphrase gets nothing, one
    // with it gets chunks (gst-launch-1.0's srtsrc, beside the merger).
    let endpoint = swarm
        .obs
        .births()
        .iter()
        .find_map(|b| b.capabilities.srt_endpoint.clone())
        .unwrap();
    let passphrase = swarm_keys(&swarm.dir).srt_passphrase().unwrap();
    let eavesdrop = |name: &str, passphrase: Option<&str>| {
        let out = swarm.dir.join(name);
        let mut args = vec![
            "5".to_string(),
            "gst-launch-1.0".into(),
            "-q".into(),
            "srtsrc".into(),
            format!("uri={endpoint}?mode=caller"),
        ];
        if let Some(p) = passphrase {
            args.extend([format!("passphrase={p}"), "pbkeylen=32".into()]);
        }
        args.extend([
            "!".into(),
            "filesink".into(),
            format!("location={}", out.display()),
        ]);
        std::process::Command::new("timeout")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut callers = [
        eavesdrop("srt-without-passphrase.bin", None),
        eavesdrop("srt-with-passphrase.bin", Some(&passphrase)),
    ];
    for c in &mut callers {
        c.wait().unwrap();
    }
    let size = |n: &str| std::fs::metadata(swarm.dir.join(n)).map_or(0, |m| m.len());
    assert_eq!(size("srt-without-passphrase.bin"), 0);
    let with = std::fs::read(swarm.dir.join("srt-with-passphrase.bin")).unwrap_or_default();
    let mut d = gopswarm_chunk::Deframer::default();
    d.push(&with);
    let first = d
        .next_chunk()
        .expect("a chunk for the caller with the passphrase");
    assert!(first.header.is_signed());
    let victim = swarm.obs.layout().unwrap().history[0].hosts[1].clone();
    swarm.kill_mid_gop(&victim);
    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
    // The partial streams came over SRT only, none over the broker.
    assert!(swarm.obs.chunks().is_empty());
    let log = std::fs::read_to_string(swarm.dir.join("merger.log")).unwrap();
    assert!(
        log.contains("pulling host-0's partial stream from srt://"),
        "{log}"
    );
}
