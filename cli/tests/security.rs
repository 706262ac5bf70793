// SPDX-License-Identifier: MPL-2.0
//! Attacks on a running swarm, replayed from a client on the broker, must be refused or
//! contained with the output still frame-exact: forged control without the swarm's keys
//! (deaths, births, drains, assignments, stream removal, enrolment, certificates), pipeline
//! injection through every string that reaches a daemon from the network even when signed
//! with a stolen key, chunk floods, garbage H.264, a burst of births, and a killed merger.

use gopswarm_proto::signed::{Principal, Signer, Token, generate};
use gopswarm_proto::*;
use gopswarm_test_support::swarm::*;
use std::path::Path;
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
    let out = gopswarm_in(&swarm.dir)
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

    // 2. The same stream published on the control topic, signed with the operator's key (a
    //    stolen key, or a buggy tool): the orchestrator still refuses it.
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
    let t = Topic::StreamControl.path();
    let signed = by_operator(&swarm.dir, &t, encode(&StreamCommand::Add { stream: evil }));
    swarm.obs.publish(&t, signed, false);

    // 3. A real assignment of host-0, forged with an injected source and signed with the
    //    orchestrator's key: the host refuses it.
    let mut forged = serde_json::to_value(&real).unwrap();
    forged["tasks"][0]["source"] = injected_source(&secret, &leaks[2], real_port).into();
    forged["v"] = PROTOCOL_VERSION.into();
    let t = Topic::Assignment(host_id(0)).path();
    let body = serde_json::to_vec(&forged).unwrap();
    let signed = signed_by(&swarm.dir, Principal::Orchestrator, &t, body);
    swarm.obs.publish(&t, signed, false);

    // 4. host-0's real birth, forged with an SRT endpoint that carries launch syntax and
    //    signed with host-0's key: the merger (pulling over SRT) and the orchestrator refuse it.
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
    let t = Topic::Birth(host_id(0)).path();
    let body = serde_json::to_vec(&forged).unwrap();
    let signed = signed_by(&swarm.dir, Principal::Host(host_id(0)), &t, body);
    swarm.obs.publish(&t, signed, false);

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

/// Forged chunks, then floods. Forged: a real GOP's old frames relabelled for a GOP not
/// encoded yet with a recomputed CRC (before signatures, the output took them and dropped the
/// real GOP as a duplicate), unsigned, signed with a made-up key, signed by an enrolled host
/// that holds no slot, signed by the host of the GOP's copy slot as a primary, as parity that
/// rebuilds it, marked parity and redundant at once, and for another profile: all refused, the
/// real GOP kept and credited to its host. Floods,
/// signed with stolen host keys, so they pass the signature check: 10,000 small chunks for
/// far-future GOPs and three 30 MiB chunks (under the wire limit of 32 MiB) for the next GOPs.
/// The merger's memory stays put, nothing real is displaced, and the output is frame-exact.
#[test]
fn forged_and_flooding_chunks_leave_the_merger_bounded_and_the_output_exact() {
    let _serial = serial();
    let mut swarm = Swarm::start(
        "security-chunk-flood",
        SwarmOptions {
            // host-3 is enrolled and holds no slot of the stream.
            hosts: 4,
            ..SwarmOptions::default()
        },
    );
    swarm
        .obs
        .wait_for("a few GOPs merged", Duration::from_secs(30), |o| {
            o.chunks().len() >= 6
        });
    let layout = swarm.obs.layout().unwrap();
    let outsider = (0..4)
        .map(host_id)
        .find(|h| !layout.history.iter().any(|e| e.hosts.contains(h)))
        .expect("a host without a slot");
    let (_, real) = swarm.obs.chunks().last().cloned().unwrap();
    let real_frames = {
        let seen = swarm.obs.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.topic.contains("/chunks/"))
            .filter_map(|s| gopswarm_chunk::parse_owned(s.payload.clone()).ok())
            .find(|c| c.header == real)
            .map(|c| c.payload().to_vec())
            .unwrap()
    };
    let before = rss(swarm.merger.pid());
    let topic = Topic::Chunks(STREAM.into(), PROFILE.into()).path();
    let forge = |gop: u64, host: &str, payload: &[u8]| {
        let header = gopswarm_chunk::ChunkHeader {
            gop_index: gop,
            start_ns: real.start_ns + (gop - real.gop_index) * real.duration_ns,
            host_id: host.into(),
            flags: 0,
            fec_k: 0,
            fec_m: 0,
            ..real.clone()
        };
        gopswarm_chunk::serialize(&header, payload).unwrap()
    };
    let target = swarm.obs.current_gop().unwrap() + 3;
    let slots = &layout.epoch_at(target).unwrap().hosts;
    let holder = slots[(target % slots.len() as u64) as usize].clone();
    let neighbour = slots[((target + 1) % slots.len() as u64) as usize].clone();
    let made_up = Signer::new(Principal::Host(holder.clone()), generate());
    // Parity (k = 1) that rebuilds the forged chunk, sent by the host holding the GOP's copy
    // slot, and marked both parity and redundant by the outsider.
    let parity = |host: &str, flags: u8| {
        let data = forge(target, host, &real_frames);
        let shard = gopswarm_chunk::make_parity(&[&data], 1).unwrap().remove(0);
        let info = gopswarm_chunk::ParityInfo {
            k: 1,
            m: 1,
            index: 0,
            members: vec![(target, data.len() as u32)],
        };
        let header = gopswarm_chunk::ChunkHeader {
            gop_index: target,
            host_id: host.into(),
            flags,
            fec_k: 1,
            fec_m: 1,
            ..real.clone()
        };
        gopswarm_chunk::serialize(&header, &info.encode(&shard)).unwrap()
    };
    use gopswarm_chunk::flags::{PARITY, REDUNDANT};
    let mut other_profile = gopswarm_chunk::parse_ref(&forge(target, &holder, &real_frames))
        .unwrap()
        .0;
    other_profile.profile_id = "other".into();
    for forged in [
        // Refused for the signature.
        forge(target, &holder, &real_frames),
        made_up
            .sign_chunk(forge(target, &holder, &real_frames))
            .unwrap(),
        // Refused by the layout, signature or not.
        signed_chunk(&swarm.dir, forge(target, &outsider, &real_frames)),
        signed_chunk(&swarm.dir, forge(target, &neighbour, &real_frames)),
        signed_chunk(&swarm.dir, parity(&neighbour, PARITY)),
        signed_chunk(&swarm.dir, parity(&outsider, PARITY | REDUNDANT)),
        signed_chunk(
            &swarm.dir,
            gopswarm_chunk::serialize(&other_profile, &real_frames).unwrap(),
        ),
    ] {
        swarm.obs.publish(&topic, forged, false);
    }
    let small = vec![0x5a; 4096];
    for i in 0..10_000u64 {
        let host = host_id((i % 3) as usize);
        let chunk = signed_chunk(&swarm.dir, forge(real.gop_index + 1_000 + i, &host, &small));
        swarm.obs.publish(&topic, chunk, false);
    }
    let big = vec![0xa5; 30 * 1024 * 1024];
    for i in 1..=3u64 {
        let chunk = signed_chunk(&swarm.dir, forge(real.gop_index + 2 + i, &host_id(0), &big));
        swarm.obs.publish(&topic, chunk, false);
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
    assert_eq!(summary["bad_signature"], 2, "{summary:#}");
    assert_eq!(summary["not_in_layout"], 5, "{summary:#}");
    assert_eq!(summary["merger"]["recovered"], 0, "{summary:#}");
    assert!(
        summary["gops_by_host"].get(&outsider).is_none(),
        "{summary:#}"
    );
    let taken: Vec<_> = summary["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["gop"] == target)
        .collect();
    // The primary from its holder, a copy (redundancy 1) from the copy slot's host.
    assert!(
        taken.iter().any(|c| c["host"] == holder.as_str())
            && taken.iter().all(|c| c["host"] == holder.as_str()
                || c["host"] == format!("{neighbour} (redundant)").as_str()),
        "GOP {target}: {taken:?}"
    );
    assert_eq!(summary["oversized"], 3, "{summary:#}");
    // The broker may drop part of a flood a busy subscriber cannot take as fast (mosquitto's
    // queue per client): what reached the merger was refused, none of it went out.
    assert!(
        summary["too_far_ahead"].as_u64().unwrap() >= 1_000,
        "{summary:#}"
    );
    assert!(
        summary["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["gop"].as_u64().unwrap() < real.gop_index + 1_000),
        "{summary:#}"
    );
}

/// A forged primary chunk (valid CRC, headers kept, slice data garbage, signed with its host's
/// stolen key) for a GOP not encoded yet: the merger refuses it, takes the redundant copy, and the output stays frame-exact.
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
    let layout = swarm.obs.layout().unwrap();
    let slots = &layout.epoch_at(target).unwrap().hosts;
    let mut header = real.header.clone();
    header.start_ns += (target - header.gop_index) * header.duration_ns;
    header.gop_index = target;
    // From the host whose slot the GOP falls to (the merger takes it from no other).
    header.host_id = slots[(target % slots.len() as u64) as usize].clone();
    header.flags &= !gopswarm_chunk::flags::SIGNED;
    let mut frames = gopswarm_chunk::decode_frames(real.payload()).unwrap();
    for f in &mut frames {
        f.data = gopswarm_test_support::garbage_slices(&f.data, &mut 0x2545_f491_4f6c_dd1du64);
    }
    // Signed with the holder's stolen key: only the payload check stands in the way.
    let forged = signed_chunk(
        &swarm.dir,
        gopswarm_chunk::serialize(&header, &gopswarm_chunk::encode_frames(&frames)).unwrap(),
    );
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

/// 10,000 births in a burst, each signed with a key its sender made up (nobody without an
/// enrolment token gets a certificate), and 1,000 heartbeats signed with a real host's stolen
/// key: the orchestrator refuses the births and the heartbeats over that host's rate, stays
/// responsive (a stream added right after is taken, its definition published, within 2 s),
/// places the new stream only on enrolled hosts, keeps the real hosts alive, exits on SIGTERM,
/// and the running stream stays frame-exact.
#[test]
fn a_burst_of_ten_thousand_births_does_not_wedge_the_orchestrator() {
    let _serial = serial();
    let metrics = free_port();
    let mut swarm = Swarm::start(
        "security-birth-burst",
        SwarmOptions {
            duration_s: 24.0,
            // One enrolled host left free for the new stream.
            hosts: 4,
            orchestrator_args: vec!["--metrics-listen".into(), format!("127.0.0.1:{metrics}")],
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
    let forgers: Vec<Signer> = (0..10_000u64)
        .map(|i| Signer::new(Principal::Host(format!("forged-{i}")), generate()))
        .collect();
    for (i, forger) in forgers.iter().enumerate() {
        let host = format!("forged-{i}");
        birth["host"] = host.clone().into();
        birth["seq"] = (i + 1).into();
        let t = Topic::Birth(host).path();
        let payload = forger.seal(&t, &serde_json::to_vec(&birth).unwrap());
        swarm.obs.publish(&t, payload, false);
    }
    // A host whose key was stolen (or a broken host) floods its heartbeats: well signed, so
    // past its burst they are refused as over its rate, and no other host's allowance shrinks.
    let heartbeat = swarm
        .obs
        .decoded()
        .into_iter()
        .rev()
        .find_map(|(_, m)| match m {
            Inbound::Heartbeat(h) if h.host == host_id(0) => Some(h),
            _ => None,
        })
        .expect("a heartbeat of host-0");
    let t = Topic::Heartbeat(host_id(0)).path();
    let stolen = swarm_keys(&swarm.dir)
        .signer(Principal::Host(host_id(0)))
        .expect("host-0's key");
    let body = encode(&heartbeat);
    for _ in 0..1_000 {
        swarm.obs.publish(&t, stolen.seal(&t, &body), false);
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
    let st = gopswarm_in(&swarm.dir)
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
    // Every forged birth was refused, and counted, and the flood past host-0's burst of 200
    // (and its 20 a second while the flood lasted).
    let counted = |prefix: &str| -> f64 {
        http_get(metrics, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    swarm.obs.wait_for(
        "10,000 births refused and 750 heartbeats over the rate counted",
        Duration::from_secs(20),
        |_| {
            counted("gopswarm_rejected_payloads_by_reason_total{reason=\"bad-signature\"} ")
                >= 10_000.0
                && counted("gopswarm_rejected_payloads_by_reason_total{reason=\"rate-limited\"} ")
                    >= 750.0
        },
    );
    // The new stream went to an enrolled host, never to a forged one: whom the orchestrator
    // asked to prepare it.
    let prepared = |o: &Observer| -> Vec<String> {
        o.decoded()
            .into_iter()
            .filter_map(|(_, m)| match m {
                Inbound::Command(h, c) => match c.kind {
                    CommandKind::Prepare { task } if task.stream == "late" => Some(h),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    };
    swarm
        .obs
        .wait_for("the new stream placed", Duration::from_secs(20), |o| {
            !prepared(o).is_empty()
        });
    let placed = prepared(&swarm.obs);
    assert!(
        placed.iter().all(|h| h.starts_with("host-")),
        "placed on {placed:?}"
    );
    // The real hosts stayed alive through it (no slot moved).
    assert_eq!(
        swarm.obs.layout_epochs(),
        1,
        "a real host was declared dead"
    );
    let log = std::fs::read_to_string(swarm.dir.join("orchestrator.log")).unwrap();
    assert!(log.contains("is not enrolled"), "{log}");
    assert!(
        log.matches("refused payload").count() < 200,
        "the flood flooded the log"
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

/// Control messages forged by a client on the broker that has no key of the swarm, each of
/// which took the swarm over before signatures: a retained death (seq 2^64-1) and a birth with
/// a huge seq for a live host; a Drain with a huge orchestrator epoch and a retained empty
/// assignment with a huge revision, unsigned and signed with a made-up "orchestrator" key; a
/// stream removal without the operator's key; a host nobody enrolled; an enrolment with a
/// made-up token; a self-made certificate. And one with a stolen key: the victim's own key on
/// a death from the future. All refused and counted; no slot moves, nothing is lost.
#[test]
fn forged_control_without_the_keys_changes_nothing() {
    let _serial = serial();
    let mut swarm = Swarm::start(
        "security-forged-control",
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
    let fake_orchestrator = Signer::new(Principal::Orchestrator, generate());
    let fake_operator = Signer::new(Principal::Operator("operator".into()), generate());
    let publish = |t: &Topic, payload: Vec<u8>, retain: bool| {
        swarm.obs.publish(&t.path(), payload, retain);
    };
    let both = |t: &Topic, who: &Signer, body: Vec<u8>, retain: bool| {
        publish(t, body.clone(), retain);
        publish(t, who.seal(&t.path(), &body), retain);
    };
    // Presence.
    let death = Topic::Death(victim.clone());
    let forged_death = encode(&Death {
        host: victim.clone(),
        seq: u64::MAX,
    });
    publish(&death, forged_death.clone(), true);
    let mut birth = swarm
        .obs
        .births()
        .into_iter()
        .rfind(|b| b.host == victim)
        .unwrap();
    birth.seq = u64::MAX / 2;
    publish(&Topic::Birth(victim.clone()), encode(&birth), true);
    // A drain of host-0's slot from an "orchestrator" of a later epoch, and an empty
    // assignment with a huge revision.
    let drain = gopswarm_proto::Command {
        id: "forged-drain".into(),
        epoch: u64::MAX / 2,
        kind: CommandKind::Drain {
            stream: STREAM.into(),
            profile: PROFILE.into(),
            last_gop: 0,
        },
    };
    both(
        &Topic::Command(host_id(0)),
        &fake_orchestrator,
        encode(&drain),
        false,
    );
    let empty = Assignment {
        host: host_id(0),
        revision: u64::MAX / 2,
        tasks: Vec::new(),
        orchestrator_epoch: 0,
    };
    both(
        &Topic::Assignment(host_id(0)),
        &fake_orchestrator,
        encode(&empty),
        true,
    );
    // Stream removal without the operator's key.
    both(
        &Topic::StreamControl,
        &fake_operator,
        encode(&StreamCommand::Remove { id: STREAM.into() }),
        false,
    );
    // A host nobody enrolled, an enrolment with a made-up token, a self-made certificate.
    let intruder = Signer::new(Principal::Host("intruder".into()), generate());
    let t = Topic::Birth("intruder".into());
    let mut intruder_birth = birth.clone();
    intruder_birth.host = "intruder".into();
    intruder_birth.seq = 1;
    publish(&t, intruder.seal(&t.path(), &encode(&intruder_birth)), true);
    let enrol = Token::generate().enrol("intruder", &intruder.public());
    publish(&Topic::Enrol("intruder".into()), encode(&enrol), false);
    let cert = HostCert {
        host: "intruder".into(),
        key: gopswarm_proto::signed::encode_public(&intruder.public()),
        enrolled_ms: 1,
        token: String::new(),
    };
    let t = Topic::Cert("intruder".into());
    publish(&t, fake_orchestrator.seal(&t.path(), &encode(&cert)), true);
    // A stolen host key: the victim's own, on a death from the future.
    let stolen = signed_by(
        &swarm.dir,
        Principal::Host(victim.clone()),
        &death.path(),
        forged_death,
    );
    publish(&death, stolen, true);

    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        swarm.obs.layout_epochs(),
        1,
        "a forged message moved a slot"
    );
    for p in swarm.hosts.iter_mut() {
        assert!(p.alive(), "{} died", p.name);
    }
    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
    let log = |name: &str| std::fs::read_to_string(swarm.dir.join(format!("{name}.log"))).unwrap();
    let orchestrator = log("orchestrator");
    for (what, expected) in [
        ("not signed", 3),
        ("does not verify", 1),
        ("host:intruder is not enrolled", 1),
        ("unknown enrolment token", 1),
        ("ahead of this clock", 1),
    ] {
        let n = orchestrator.matches(what).count();
        assert!(
            n >= expected,
            "orchestrator: {n} x {what:?}, expected {expected}:\n{orchestrator}"
        );
    }
    assert!(
        !orchestrator.contains(&format!("host {victim} died")),
        "{orchestrator}"
    );
    assert!(
        !orchestrator.contains("host intruder enrolled"),
        "{orchestrator}"
    );
    let host0 = log(&host_id(0));
    assert!(
        host0.matches("not signed").count() >= 2 && host0.matches("does not verify").count() >= 2,
        "host-0 did not refuse the forged drain and assignment:\n{host0}"
    );
    assert!(!host0.contains("forged-drain"), "{host0}");
    // The merger learns host keys only from the orchestrator's certificates.
    assert!(
        log("merger").contains("does not verify"),
        "the merger took a self-made certificate"
    );
    // Keys as a new host leaves them: its own private, its token used up.
    use std::os::unix::fs::PermissionsExt as _;
    let keys = swarm_keys(&swarm.dir);
    let key = keys.key_path(&Principal::Host(host_id(0)));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        keys.tokens().unwrap().len(),
        0,
        "enrolment tokens left behind"
    );
}
