// SPDX-License-Identifier: MPL-2.0
//! Attacks on a running swarm, replayed from an anonymous client on the broker, must be
//! refused or contained with the output still frame-exact. This file grows with issue 18; today:
//! pipeline injection through every string that reaches a daemon from the network (a stream's
//! `source`, a task's `source`, a birth's `srt_endpoint`) and through `gopswarm stream add`.
//! Before the fix each of these made a daemon copy a local file elsewhere.

use gopswarm_proto::*;
use gopswarm_test_support::swarm::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A `gdp+tcp://` source whose host carries launch syntax that copies `secret` to `leak`,
/// then connects to the real source so the pipeline would still look healthy.
fn injected_source(secret: &Path, leak: &Path, real_port: u16) -> String {
    format!(
        "gdp+tcp://127.0.0.1 port={real_port} ! fakesink filesrc location={} ! filesink location={} tcpclientsrc host=127.0.0.1:{real_port}",
        secret.display(),
        leak.display()
    )
}

#[test]
fn pipeline_injection_through_network_strings_is_refused() {
    let _serial = serial();
    let mut swarm = Swarm::start(
        "security-injection",
        SwarmOptions {
            srt_chunks: true,
            duration_s: 20.0,
            ..SwarmOptions::default()
        },
    );
    swarm
        .obs
        .wait_for("a few GOPs encoded", Duration::from_secs(30), |o| {
            o.current_gop().is_some_and(|g| g >= 2)
        });
    let secret = swarm.dir.join("secret.txt");
    std::fs::write(&secret, "the swarm's secret\n").unwrap();
    let leaks: Vec<_> = (0..4)
        .map(|i| swarm.dir.join(format!("leak-{i}.txt")))
        .collect();
    let real = swarm.obs.assignments(&host_id(0)).last().cloned().unwrap();
    let real_port: u16 = real.tasks[0]
        .source
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // 1. The operator's own tool refuses it with the parser's reason, before publishing.
    let out = Command::new(BIN)
        .args([
            "stream",
            "--broker",
            &swarm.broker.url(),
            "add",
            "--id",
            "evil",
        ])
        .args(["--source", &injected_source(&secret, &leaks[0], real_port)])
        .args(["--profile", &format!("p={SPEC}"), "--no-measure"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "stream add accepted an injected source"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("source: endpoint"), "{err}");

    // 2. The same stream published raw on the control topic: the orchestrator refuses it.
    let evil = StreamDef {
        id: "evil".into(),
        source: injected_source(&secret, &leaks[1], real_port),
        profiles: vec![ProfileDef {
            id: "p".into(),
            spec: SPEC.into(),
        }],
        gop_ns: 2_000_000_000,
        redundancy: Some(0),
        slots: Some(1),
        chunk_sink: None,
        complexity: None,
    };
    swarm.obs.publish(
        &Topic::StreamControl.path(),
        encode(&StreamCommand::Add { stream: evil }),
        false,
    );

    // 3. A real assignment of host-0, forged with an injected source: the host refuses it.
    let mut forged = serde_json::to_value(&real).unwrap();
    forged["tasks"][0]["source"] = injected_source(&secret, &leaks[2], real_port).into();
    forged["v"] = PROTOCOL_VERSION.into();
    swarm.obs.publish(
        &Topic::Assignment(host_id(0)).path(),
        serde_json::to_vec(&forged).unwrap(),
        false,
    );

    // 4. host-0's real birth, forged with an SRT endpoint that carries launch syntax: the
    //    merger (pulling over SRT) and the orchestrator refuse it.
    let birth = swarm
        .obs
        .births()
        .into_iter()
        .rfind(|b| b.host == host_id(0))
        .unwrap();
    let endpoint = birth.capabilities.srt_endpoint.clone().unwrap();
    let mut forged = serde_json::to_value(&birth).unwrap();
    forged["capabilities"]["srt_endpoint"] = format!(
        "{endpoint} ! fakesink filesrc location={} ! filesink location={} srtsrc uri={endpoint}",
        secret.display(),
        leaks[3].display()
    )
    .into();
    forged["v"] = PROTOCOL_VERSION.into();
    swarm.obs.publish(
        &Topic::Birth(host_id(0)).path(),
        serde_json::to_vec(&forged).unwrap(),
        false,
    );

    std::thread::sleep(Duration::from_secs(3));
    for p in swarm.hosts.iter_mut() {
        assert!(p.alive(), "{} died", p.name);
    }
    assert!(swarm.orchestrator.alive(), "orchestrator died");
    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
    for leak in &leaks {
        assert!(!leak.exists(), "{} was written", leak.display());
    }
    assert_eq!(swarm.obs.layout_epochs(), 1, "an attack changed the layout");
    let took_evil = swarm.obs.decoded().iter().any(
        |(_, m)| matches!(m, Inbound::Assignment(a) if a.tasks.iter().any(|t| t.stream == "evil")),
    );
    assert!(!took_evil, "the orchestrator placed the injected stream");

    // Each refusal is logged with the reason where it was refused.
    let log = |name: &str| std::fs::read_to_string(swarm.dir.join(format!("{name}.log"))).unwrap();
    let orchestrator = log("orchestrator");
    assert!(
        orchestrator.contains("source: endpoint")
            && orchestrator.contains("SRT endpoint: endpoint"),
        "orchestrator did not say why it refused:\n{orchestrator}"
    );
    assert!(
        log(&host_id(0)).contains("source: endpoint"),
        "host-0 did not say why it refused the forged assignment"
    );
    assert!(
        log("merger").contains("SRT endpoint: endpoint"),
        "the merger did not say why it refused the forged birth"
    );
}

/// A SIGKILLed merger leaves files that play: the MP4 is fragmented (one fragment per GOP) and
/// every HLS segment in the playlist was written whole.
#[test]
fn merger_killed_at_any_moment_leaves_playable_files() {
    let _serial = serial();
    let mut swarm = Swarm::start(
        "security-merger-sigkill",
        SwarmOptions {
            gop_s: 1.0,
            latency_gops: 2,
            duration_s: 60.0,
            ..SwarmOptions::default()
        },
    );
    // Redundancy 1: two chunks per GOP on the wire.
    swarm
        .obs
        .wait_for("eight GOPs encoded", Duration::from_secs(40), |o| {
            o.chunks().len() >= 8 * 2
        });
    // Mid-GOP, so a fragment or a segment is being written.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(swarm.merger.alive(), "the merger ended before the kill");
    swarm.merger.kill();
    assert!(
        !swarm.dir.join("summary.json").exists(),
        "the merger finished before the kill"
    );
    let mp4 = swarm.dir.join("out.mp4");
    let frames = gopswarm::media::video_frames(&mp4).unwrap();
    assert!(
        frames.len() >= 25 * 3,
        "only {} frames play after the kill",
        frames.len()
    );
    let errors = gopswarm::media::decode_errors(&mp4).unwrap();
    assert!(errors.is_empty(), "the killed merger's MP4: {errors}");
    let hls = swarm.dir.join("out-hls");
    let playlist = std::fs::read_to_string(hls.join("index.m3u8")).unwrap();
    let segments: Vec<&str> = playlist
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(segments.len() >= 2, "{playlist}");
    for s in segments {
        let errors = gopswarm::media::decode_errors(&hls.join(s)).unwrap();
        assert!(errors.is_empty(), "segment {s}: {errors}");
    }
}

/// Resident memory of a process, in bytes.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// Chunk floods with valid CRCs: 10,000 small chunks for far-future GOPs and three 30 MiB
/// chunks (under the wire limit of 32 MiB) for the next GOPs. The merger's memory stays put,
/// nothing real is displaced, and the output is frame-exact.
#[test]
fn chunk_floods_leave_the_merger_bounded_and_the_output_exact() {
    let _serial = serial();
    let mut swarm = Swarm::start("security-chunk-flood", SwarmOptions::default());
    swarm
        .obs
        .wait_for("a few GOPs merged", Duration::from_secs(30), |o| {
            o.chunks().len() >= 6
        });
    let (_, real) = swarm.obs.chunks().last().cloned().unwrap();
    let before = rss(swarm.merger.pid());
    let topic = Topic::Chunks(STREAM.into(), PROFILE.into()).path();
    let forge = |gop: u64, host: &str, payload: &[u8]| {
        let header = gopswarm_chunk::ChunkHeader {
            gop_index: gop,
            host_id: host.into(),
            flags: 0,
            fec_k: 0,
            fec_m: 0,
            ..real.clone()
        };
        gopswarm_chunk::serialize(&header, payload).unwrap()
    };
    let small = vec![0x5a; 4096];
    for i in 0..10_000u64 {
        let host = host_id((i % 3) as usize);
        swarm.obs.publish(
            &topic,
            forge(real.gop_index + 1_000 + i, &host, &small),
            false,
        );
    }
    let big = vec![0xa5; 30 * 1024 * 1024];
    for i in 1..=3u64 {
        swarm.obs.publish(
            &topic,
            forge(real.gop_index + 2 + i, &host_id(0), &big),
            false,
        );
    }
    std::thread::sleep(Duration::from_secs(5));
    let after = rss(swarm.merger.pid());
    let grown = after.saturating_sub(before);
    assert!(
        grown < 20 * 1024 * 1024,
        "the merger grew by {} MiB ({before} -> {after} bytes)",
        grown / (1024 * 1024)
    );
    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
    assert_eq!(summary["oversized"], 3, "{summary:#}");
    assert!(
        summary["too_far_ahead"].as_u64().unwrap() >= 9_000,
        "{summary:#}"
    );
}

/// A forged primary chunk (valid CRC, headers kept, slice data garbage) for a GOP not encoded
/// yet: the merger refuses it, takes the redundant copy, and the output stays frame-exact.
/// Before the check the garbage reached the MP4 and the HLS segments.
#[test]
fn garbage_h264_in_a_valid_chunk_is_refused_and_the_redundant_copy_used() {
    let _serial = serial();
    let mut swarm = Swarm::start("security-garbage-gop", SwarmOptions::default());
    swarm.obs.wait_for(
        "a primary chunk on the wire",
        Duration::from_secs(40),
        |o| o.chunks().iter().any(|(_, h)| !h.is_redundant()),
    );
    let real = {
        let seen = swarm.obs.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.topic.contains("/chunks/"))
            .filter_map(|s| gopswarm_chunk::parse_owned(s.payload.clone()).ok())
            .find(|c| !c.header.is_redundant() && !c.header.is_parity())
            .unwrap()
    };
    let target = swarm.obs.current_gop().unwrap() + 2;
    let mut header = real.header.clone();
    header.start_ns += (target - header.gop_index) * header.duration_ns;
    header.gop_index = target;
    let mut frames = gopswarm_chunk::decode_frames(real.payload()).unwrap();
    for f in &mut frames {
        f.data = gopswarm_test_support::garbage_slices(&f.data, &mut 0x2545_f491_4f6c_dd1du64);
    }
    let forged =
        gopswarm_chunk::serialize(&header, &gopswarm_chunk::encode_frames(&frames)).unwrap();
    swarm.obs.publish(
        &Topic::Chunks(header.stream_id.clone(), header.profile_id.clone()).path(),
        forged,
        false,
    );
    let summary = swarm.finish();
    let rejected = summary["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{summary:#}");
    assert_eq!(rejected[0]["gop"].as_u64(), Some(target), "{summary:#}");
    assert_eq!(rejected[0]["reason"], "undecodable", "{summary:#}");
    assert_eq!(
        summary["merger"]["rejected"].as_u64(),
        Some(1),
        "{summary:#}"
    );
    assert!(summary["merger"]["redundant-used"].as_u64().unwrap() >= 1);
    assert_frame_exact(&swarm, &summary);
    let hls = swarm.dir.join("out-hls");
    let playlist = std::fs::read_to_string(hls.join("index.m3u8")).unwrap();
    for s in playlist
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let errors = gopswarm::media::decode_errors(&hls.join(s)).unwrap();
        assert!(errors.is_empty(), "segment {s}: {errors}");
    }
}

/// 10,000 births in a burst (an anonymous client on the broker): the orchestrator stays
/// responsive (a stream added right after is taken, its definition published, within 2 s),
/// keeps the real hosts alive (their heartbeats go first), exits on SIGTERM, and the running
/// stream stays frame-exact. (Where the new stream is placed is for host authentication:
/// today a forged host may be picked.)
#[test]
fn a_burst_of_ten_thousand_births_does_not_wedge_the_orchestrator() {
    let _serial = serial();
    let mut swarm = Swarm::start(
        "security-birth-burst",
        SwarmOptions {
            duration_s: 24.0,
            ..SwarmOptions::default()
        },
    );
    swarm
        .obs
        .wait_for("a few GOPs merged", Duration::from_secs(30), |o| {
            o.chunks().len() >= 4
        });
    let source = real_source(&swarm);
    let real = swarm.obs.births().into_iter().next().unwrap();
    let mut birth = serde_json::to_value(&real).unwrap();
    birth["v"] = PROTOCOL_VERSION.into();
    for i in 0..10_000u64 {
        let host = format!("forged-{i}");
        birth["host"] = host.clone().into();
        birth["seq"] = (i + 1).into();
        swarm.obs.publish(
            &Topic::Birth(host).path(),
            serde_json::to_vec(&birth).unwrap(),
            false,
        );
    }
    // A client of its own, subscribed to that one topic, so the flood queued for the test's
    // observer does not delay what it sees.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let port = swarm.broker.port;
    std::thread::spawn(move || {
        use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
        let (client, mut connection) =
            Client::new(MqttOptions::new("watch-late", "127.0.0.1", port), 16);
        client
            .subscribe(Topic::StreamDef("late".into()).path(), QoS::AtLeastOnce)
            .unwrap();
        for ev in connection.iter() {
            match ev {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = seen_tx.send(false);
                }
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    let _ = seen_tx.send(true);
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    assert_eq!(
        seen_rx.recv_timeout(Duration::from_secs(10)),
        Ok(false),
        "not subscribed"
    );
    let st = Command::new(BIN)
        .args([
            "stream",
            "--broker",
            &swarm.broker.url(),
            "add",
            "--id",
            "late",
        ])
        .args(["--source", &source])
        .args(["--profile", &format!("p={SPEC}"), "--no-measure"])
        .args(["--slots", "1", "--redundancy", "0"])
        .status()
        .unwrap();
    assert!(st.success());
    // The broker has the command (PUBACK): from here the orchestrator's answer is timed.
    let accepted = std::time::Instant::now();
    let got = seen_rx.recv_timeout(Duration::from_secs(30));
    let answered = accepted.elapsed();
    assert_eq!(got, Ok(true), "no definition of the new stream within 30 s");
    assert!(
        answered < Duration::from_secs(2),
        "the orchestrator took the stream {answered:?} after the broker had it"
    );
    // The real hosts stayed alive through it (no slot moved), and the link was saturated.
    assert_eq!(
        swarm.obs.layout_epochs(),
        1,
        "a real host was declared dead"
    );
    let log = std::fs::read_to_string(swarm.dir.join("orchestrator.log")).unwrap();
    assert!(
        log.contains("incoming messages arrive faster than they are handled"),
        "the burst never filled the orchestrator's queue"
    );
    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
    swarm.orchestrator.signal(libc::SIGTERM);
    let exit = swarm.orchestrator.wait(Duration::from_secs(10));
    assert!(exit.success(), "orchestrator: {exit}");
}

/// The source address of the running test stream.
fn real_source(swarm: &Swarm) -> String {
    swarm.obs.assignments(&host_id(0)).last().unwrap().tasks[0]
        .source
        .clone()
}

/// Forged presence with a connection seq from the future: a retained death with seq 2^64-1
/// for a live host and a birth with a huge seq. Both are refused (seqs are connect times), so
/// the live host keeps its slots, its seq is untouched (no lock-out), and nothing is lost.
#[test]
fn forged_presence_with_a_future_seq_changes_nothing() {
    let _serial = serial();
    let mut swarm = Swarm::start(
        "security-forged-presence",
        SwarmOptions {
            duration_s: 20.0,
            ..SwarmOptions::default()
        },
    );
    swarm
        .obs
        .wait_for("a few GOPs merged", Duration::from_secs(30), |o| {
            o.chunks().len() >= 4
        });
    let victim = host_id(1);
    swarm.obs.publish(
        &Topic::Death(victim.clone()).path(),
        encode(&Death {
            host: victim.clone(),
            seq: u64::MAX,
        }),
        true,
    );
    let mut birth = swarm
        .obs
        .births()
        .into_iter()
        .rfind(|b| b.host == victim)
        .unwrap();
    birth.seq = u64::MAX / 2;
    swarm
        .obs
        .publish(&Topic::Birth(victim.clone()).path(), encode(&birth), true);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        swarm.obs.layout_epochs(),
        1,
        "a forged death re-dealt slots"
    );
    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
    let log = std::fs::read_to_string(swarm.dir.join("orchestrator.log")).unwrap();
    assert_eq!(
        log.matches("ahead of this clock").count(),
        2,
        "the orchestrator did not refuse both"
    );
    assert!(!log.contains(&format!("host {victim} died")), "{log}");
}
