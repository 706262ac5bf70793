// SPDX-License-Identifier: MPL-2.0
//! Message decoding: every valid message round-trips; malformed, oversized, wrong-version and
//! mismatched payloads on every topic are refused with a reason, never a panic.

mod common;

use common::mutate;
use gopswarm_proto::*;
use proptest::prelude::*;

fn versions() -> Versions {
    this_build_versions("1.22.0")
}

fn task(stream: &str) -> Task {
    Task {
        stream: stream.into(),
        profile: "p720".into(),
        profile_spec: "h264, bitrate=3000".into(),
        source: "gdp+tcp://127.0.0.1:7100".into(),
        role: TaskRole::Active,
        slot_index: 1,
        slot_count: 3,
        redundancy: 1,
        layout_epoch: 4,
        switch_gop: 12,
        until_gop: None,
        chunk_sink: None,
        gop_ns: 2_000_000_000,
    }
}

fn status() -> TaskStatus {
    TaskStatus {
        stream: "cam1".into(),
        profile: "p720".into(),
        layout_epoch: 4,
        current_gop: Some(11),
        gops_sent: 3,
        ready: true,
        error: None,
    }
}

/// One valid (topic, payload) per topic of the protocol.
fn samples() -> Vec<(String, Vec<u8>)> {
    let h = "host-a".to_string();
    let def = StreamDef {
        id: "cam1".into(),
        source: "gdp+tcp://127.0.0.1:7100".into(),
        profiles: vec![ProfileDef {
            id: "p720".into(),
            spec: "h264".into(),
        }],
        gop_ns: 2_000_000_000,
        redundancy: Some(1),
        slots: None,
        chunk_sink: Some("tcp://127.0.0.1:7400".into()),
        complexity: Some(ContentComplexity {
            si: 55.2,
            ti: 12.5,
            frames: 50,
        }),
    };
    vec![
        (
            Topic::Birth(h.clone()).path(),
            encode(&Birth {
                host: h.clone(),
                seq: 7,
                versions: versions(),
                capabilities: Capabilities {
                    cores: 8,
                    mem_bytes: 1 << 33,
                    codecs: vec!["h264".into()],
                    max_tasks: 2,
                    srt_endpoint: None,
                    ..Default::default()
                },
            }),
        ),
        (
            Topic::Death(h.clone()).path(),
            encode(&Death {
                host: h.clone(),
                seq: 7,
            }),
        ),
        (
            Topic::Heartbeat(h.clone()).path(),
            encode(&Heartbeat {
                host: h.clone(),
                seq: 7,
                metrics: Metrics {
                    cpu_percent: 130.5,
                    encode_fps: 24.0,
                    ..Default::default()
                },
                tasks: vec![status()],
                score: None,
            }),
        ),
        (
            Topic::Assignment(h.clone()).path(),
            encode(&Assignment {
                host: h.clone(),
                revision: 3,
                tasks: vec![task("cam1")],
                orchestrator_epoch: 0,
            }),
        ),
        (
            Topic::Applied(h.clone()).path(),
            encode(&Applied {
                host: h.clone(),
                revision: 3,
                tasks: vec![status()],
            }),
        ),
        (
            Topic::Command(h.clone()).path(),
            encode(&Command {
                id: "c-1".into(),
                epoch: 2,
                kind: CommandKind::Prepare { task: task("cam1") },
            }),
        ),
        (
            Topic::Ack(h.clone()).path(),
            encode(&Ack {
                host: h.clone(),
                id: "c-1".into(),
                ok: true,
                detail: String::new(),
                current_gop: Some(9),
            }),
        ),
        (Topic::StreamDef("cam1".into()).path(), encode(&def)),
        (
            Topic::Layout("cam1".into(), "p720".into()).path(),
            encode(&Layout {
                stream: "cam1".into(),
                profile: "p720".into(),
                history: vec![LayoutEpoch {
                    epoch: 1,
                    from_gop: 3,
                    redundancy: 1,
                    hosts: vec![h.clone(), "host-b".into()],
                    backups: Vec::new(),
                }],
                orchestrator_epoch: 0,
            }),
        ),
        (
            Topic::StreamEnd("cam1".into(), "p720".into()).path(),
            encode(&StreamEnd {
                stream: "cam1".into(),
                profile: "p720".into(),
                host: h.clone(),
                last_gop: 29,
            }),
        ),
        (
            Topic::Resend("cam1".into(), "p720".into()).path(),
            encode(&Resend {
                stream: "cam1".into(),
                profile: "p720".into(),
                gops: vec![4, 5],
            }),
        ),
        (
            Topic::StreamControl.path(),
            encode(&StreamCommand::Add { stream: def }),
        ),
        (
            Topic::StreamControl.path(),
            encode(&StreamCommand::RollingUpdate {
                hosts: vec!["host-a".into()],
            }),
        ),
        (
            Topic::StreamControl.path(),
            encode(&StreamCommand::Announce {
                event: announcement(),
            }),
        ),
        (
            Topic::OrchestratorStatus.path(),
            encode(&OrchestratorStatus {
                online: true,
                epoch: 1,
                versions: versions(),
                holder: String::new(),
            }),
        ),
    ]
}

fn announcement() -> EventAnnouncement {
    EventAnnouncement {
        id: "final".into(),
        stream: Some("cam9".into()),
        start_unix_ms: 1_800_000_000_000,
        duration_s: 7200.0,
        slots: 6,
        expected_viewers: 200_000.0,
    }
}

#[test]
fn bad_operator_commands_are_refused() {
    let topic = Topic::StreamControl.path();
    let bad = [
        StreamCommand::RollingUpdate {
            hosts: vec!["ok".into(), "no/such".into()],
        },
        StreamCommand::Announce {
            event: EventAnnouncement {
                duration_s: -1.0,
                ..announcement()
            },
        },
        StreamCommand::Announce {
            event: EventAnnouncement {
                expected_viewers: f64::NAN,
                ..announcement()
            },
        },
        StreamCommand::Announce {
            event: EventAnnouncement {
                stream: Some("+".into()),
                ..announcement()
            },
        },
    ];
    for cmd in bad {
        let r = decode_publish(&topic, &encode(&cmd)).unwrap_err();
        assert!(matches!(r, Reject::Invalid(_)), "{cmd:?}: {r:?}");
    }
}

#[test]
fn every_topic_round_trips() {
    for (topic, payload) in samples() {
        let decoded = decode_publish(&topic, &payload);
        assert!(decoded.is_ok(), "{topic}: {decoded:?}");
        assert_eq!(Topic::parse(&topic).unwrap().path(), topic);
    }
}

#[test]
fn wrong_version_missing_version_oversized_and_garbage_are_refused() {
    let counters = RejectCounters::default();
    for (topic, payload) in samples() {
        let mut v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        v["v"] = 2.into();
        let r = decode_publish(&topic, &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(r, Reject::WrongVersion(2), "{topic}");
        counters.count(&r);
        v.as_object_mut().unwrap().remove("v");
        let r = decode_publish(&topic, &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(r, Reject::MissingVersion, "{topic}");
        counters.count(&r);
        let r = decode_publish(&topic, b"\xff\x00{garbage").unwrap_err();
        assert!(matches!(r, Reject::Malformed(_)), "{topic}: {r:?}");
        counters.count(&r);
        let big = vec![b' '; MAX_CONTROL_PAYLOAD + 1];
        let r = decode_publish(&topic, &big).unwrap_err();
        assert!(matches!(r, Reject::Oversized(_)), "{topic}: {r:?}");
        counters.count(&r);
    }
    // Chunk topics take bytes, but not beyond the chunk limit.
    let t = Topic::Chunks("cam1".into(), "p720".into()).path();
    assert!(decode_publish(&t, b"anything").is_ok());
    let r = decode_publish(&t, &vec![0u8; MAX_CHUNK_PAYLOAD + 1]).unwrap_err();
    assert!(matches!(r, Reject::Oversized(_)));
    counters.count(&r);
    let s = counters.snapshot();
    let n = samples().len() as u64;
    assert_eq!(s["wrong-version"], 2 * n);
    assert_eq!(s["malformed"], n);
    assert_eq!(s["oversized"], n + 1);
}

#[test]
fn topic_and_body_must_agree_and_ids_must_be_valid() {
    let birth = samples().remove(0).1;
    let r = decode_publish(&Topic::Birth("host-b".into()).path(), &birth).unwrap_err();
    assert!(matches!(r, Reject::Mismatch(_)), "{r:?}");
    for bad in [
        "gopswarm/v1/host/+/birth",
        "gopswarm/v1/host/#/birth",
        "gopswarm/v2/host/a/birth",
        "gopswarm/v1/host/a/b/birth",
        "gopswarm/v1/host//birth",
        "other/thing",
        "",
    ] {
        assert!(
            matches!(decode_publish(bad, &birth), Err(Reject::UnknownTopic(_))),
            "{bad}"
        );
    }
    // A task with its slot outside the slot count is refused.
    let mut a: serde_json::Value = serde_json::from_slice(&samples()[3].1).unwrap();
    a["tasks"][0]["slot_index"] = 5.into();
    let r = decode_publish(&samples()[3].0, &serde_json::to_vec(&a).unwrap()).unwrap_err();
    assert!(matches!(r, Reject::Invalid(_)), "{r:?}");
}

#[test]
fn version_compatibility() {
    let ours = versions();
    assert!(compatible(&ours, &ours).is_ok());
    let mut old = ours.clone();
    old.protocol = 0;
    assert!(compatible(&ours, &old).is_err());
    let mut other = ours.clone();
    other.agent = "0.9.0".into();
    assert!(compatible(&ours, &other).is_err());
    let mut patch = ours.clone();
    patch.agent = format!("{}.99", ours.agent.rsplit_once('.').unwrap().0);
    assert!(compatible(&ours, &patch).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Mutated valid payloads on every topic: decoded or refused, never a panic, and what
    /// decodes still passes its own validation.
    #[test]
    fn mutated_payloads_never_panic(which in 0usize..13, ops in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        let samples = samples();
        let (topic, payload) = &samples[which % samples.len()];
        let mutated = mutate(payload, &ops);
        let _ = decode_publish(topic, &mutated);
    }

    /// Arbitrary bytes on arbitrary topic-shaped strings.
    #[test]
    fn arbitrary_input_never_panics(topic in "(gopswarm/v[0-9]/)?(host|stream|ctl|orchestrator)/[a-z0-9+#/.-]{0,12}/(birth|death|heartbeat|assignment|applied|cmd|ack|def|layout/p|chunks/p|end/p|resend/p|streams|status)", payload in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_publish(&topic, &payload);
    }

    /// JSON of the right shape with random field values.
    #[test]
    fn random_json_values_never_panic(which in 0usize..13, field in "[a-z_]{1,12}", value in prop_oneof![
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
        Just(serde_json::json!([1, "x", null])),
        Just(serde_json::json!({"nested": {"v": 1}})),
    ]) {
        let samples = samples();
        let (topic, payload) = &samples[which % samples.len()];
        let mut v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        v[field.as_str()] = value;
        let _ = decode_publish(topic, &serde_json::to_vec(&v).unwrap());
    }
}

#[test]
fn a_connection_seq_from_the_future_is_refused() {
    let now = unix_micros();
    let death = |seq| {
        encode(&Death {
            host: "h1".into(),
            seq,
        })
    };
    let topic = Topic::Death("h1".into()).path();
    assert!(decode_publish(&topic, &death(now)).is_ok());
    let ahead = now + MAX_SEQ_AHEAD.as_micros() as u64 / 2;
    assert!(decode_publish(&topic, &death(ahead)).is_ok());
    for forged in [now + 2 * MAX_SEQ_AHEAD.as_micros() as u64, u64::MAX] {
        match decode_publish(&topic, &death(forged)) {
            Err(Reject::Invalid(why)) => assert!(why.contains("ahead of this clock"), "{why}"),
            other => panic!("seq {forged} accepted: {other:?}"),
        }
    }
}
