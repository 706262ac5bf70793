// SPDX-License-Identifier: MPL-2.0
//! Benchmarks of the controller alone (no network): one assignment round places every stream
//! of a large swarm (prepare, ready acks, first layout), as the orchestrator does after a
//! cold start with an empty state.

use gopswarm_orchestrator::controller::{Config, Controller};
use gopswarm_proto::signed::{Principal, Signer, Trust, Verifier, encode_public, generate};
use gopswarm_proto::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub struct RoundTimes {
    /// Whole rounds (all streams placed and committed).
    pub rounds: Vec<Duration>,
    /// Single stream placements (add + acks + commit) across all rounds.
    pub per_stream: Vec<Duration>,
    pub messages_per_round: usize,
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn versions() -> Versions {
    this_build_versions("bench")
}

/// A controller with `hosts` live hosts (each takes `tasks_per_host` tasks).
pub fn swarm(hosts: usize, tasks_per_host: u32) -> Controller {
    let now = Instant::now();
    let mut c = Controller::new(Config::default(), versions(), 1);
    for i in 0..hosts {
        c.on_birth(
            Birth {
                host: format!("h{i:05}"),
                seq: 1,
                versions: versions(),
                capabilities: Capabilities {
                    cores: 16,
                    mem_bytes: 1 << 34,
                    codecs: vec!["h264".into()],
                    max_tasks: tasks_per_host,
                    srt_endpoint: None,
                    ..Default::default()
                },
            },
            now,
        );
    }
    c.take_out();
    c
}

/// The keys of a benchmark swarm: the orchestrator's, and one per host, with the verifiers on
/// both sides (every host trusts the orchestrator; the orchestrator knows every host's key).
pub struct Keys {
    orchestrator: Signer,
    hosts: HashMap<String, Signer>,
    at_orchestrator: Verifier,
    at_host: Verifier,
}

impl Keys {
    pub fn new(hosts: usize) -> Keys {
        let orchestrator = Signer::new(Principal::Orchestrator, generate());
        let trust = Trust {
            orchestrator: encode_public(&orchestrator.public()),
            operators: Default::default(),
            mergers: Default::default(),
        };
        let mut at_orchestrator = Verifier::new(&trust).expect("trust");
        let at_host = Verifier::new(&trust).expect("trust");
        let hosts = (0..hosts)
            .map(|i| {
                let id = format!("h{i:05}");
                let s = Signer::new(Principal::Host(id.clone()), generate());
                at_orchestrator.set_host_key(&id, s.public());
                (id, s)
            })
            .collect();
        Keys {
            orchestrator,
            hosts,
            at_orchestrator,
            at_host,
        }
    }
}

/// Place `streams` streams of `slots` slots over a fresh swarm of `hosts`, `repeat` times.
/// With `keys`, as a swarm with signatures runs it: every message the orchestrator publishes
/// is signed, every command is checked where a host would check it, and every ack is signed
/// by its host and checked by the orchestrator. The hosts' part (checking the command,
/// signing the ack) runs on the hosts, in parallel: it is not counted in the round.
pub fn assignment_rounds(
    hosts: usize,
    streams: usize,
    slots: u32,
    repeat: usize,
    mut keys: Option<&mut Keys>,
) -> RoundTimes {
    let mut out = RoundTimes {
        rounds: Vec::new(),
        per_stream: Vec::new(),
        messages_per_round: 0,
    };
    for _ in 0..repeat {
        let mut c = swarm(hosts, 2);
        let round = Instant::now();
        let mut on_hosts = Duration::ZERO;
        let mut messages = 0;
        for s in 0..streams {
            let t = Instant::now();
            let mut stream_on_hosts = Duration::ZERO;
            let def = StreamDef {
                id: format!("s{s:05}"),
                source: "gdp+tcp://127.0.0.1:7000".into(),
                profiles: vec![ProfileDef {
                    id: "p720".into(),
                    spec: "h264, bitrate=3000".into(),
                }],
                gop_ns: 2_000_000_000,
                redundancy: Some(1),
                slots: Some(slots),
                complexity: None,
                chunk_sink: None,
            };
            c.add_stream(def, Instant::now()).expect("stream added");
            let outs = sealed(c.take_out(), keys.as_deref());
            messages += outs.len();
            // Every prepared host answers ready.
            for o in outs.iter().filter(|o| o.topic.ends_with("/cmd")) {
                let host_side = Instant::now();
                let inbound = match keys.as_deref_mut() {
                    Some(k) => k.at_host.open(&o.topic, &o.payload),
                    None => decode_publish(&o.topic, &o.payload),
                };
                if let Ok(Inbound::Command(h, cmd)) = inbound {
                    let ack = Ack {
                        host: h.clone(),
                        id: cmd.id,
                        ok: true,
                        detail: String::new(),
                        current_gop: Some(10),
                    };
                    let ack = match keys.as_deref_mut() {
                        Some(k) => {
                            let t = Topic::Ack(h.clone()).path();
                            let payload = k.hosts[&h].seal(&t, &encode(&ack));
                            stream_on_hosts += host_side.elapsed();
                            match k.at_orchestrator.open(&t, &payload) {
                                Ok(Inbound::Ack(a)) => a,
                                other => panic!("ack of {h}: {other:?}"),
                            }
                        }
                        None => ack,
                    };
                    c.on_ack(ack, Instant::now());
                }
            }
            messages += sealed(c.take_out(), keys.as_deref()).len();
            out.per_stream.push(t.elapsed() - stream_on_hosts);
            on_hosts += stream_on_hosts;
        }
        out.rounds.push(round.elapsed() - on_hosts);
        out.messages_per_round = messages;
    }
    out.rounds.sort();
    out.per_stream.sort();
    out
}

/// What the orchestrator publishes, signed when the swarm has keys.
fn sealed(
    outs: Vec<gopswarm_orchestrator::controller::Out>,
    keys: Option<&Keys>,
) -> Vec<gopswarm_orchestrator::controller::Out> {
    match keys {
        None => outs,
        Some(k) => outs
            .into_iter()
            .map(|mut o| {
                if !o.payload.is_empty() {
                    o.payload = k.orchestrator.seal(&o.topic, &o.payload);
                }
                o
            })
            .collect(),
    }
}

/// Cost of signing and of checking one message, by kind: (kind, bytes of the body, seal, open).
pub fn signature_costs(repeat: usize) -> Vec<(&'static str, usize, Duration, Duration)> {
    let host = Signer::new(Principal::Host("h00001".into()), generate());
    let orchestrator = Signer::new(Principal::Orchestrator, generate());
    let trust = Trust {
        orchestrator: encode_public(&orchestrator.public()),
        operators: Default::default(),
        mergers: Default::default(),
    };
    let task = |i: u32| Task {
        stream: format!("s{i}"),
        profile: "p720".into(),
        profile_spec: "h264, width=1280, height=720, bitrate=3000".into(),
        source: "gdp+tcp://10.0.0.1:7000".into(),
        role: TaskRole::Active,
        slot_index: i % 3,
        slot_count: 3,
        redundancy: 1,
        layout_epoch: 4,
        switch_gop: 1000,
        chunk_sink: None,
        until_gop: None,
        gop_ns: 2_000_000_000,
    };
    let heartbeat = Heartbeat {
        host: "h00001".into(),
        seq: unix_micros(),
        metrics: Metrics::default(),
        tasks: (0..2)
            .map(|i| TaskStatus {
                stream: format!("s{i}"),
                profile: "p720".into(),
                layout_epoch: 4,
                current_gop: Some(1000),
                gops_sent: 500,
                ready: true,
                error: None,
            })
            .collect(),
        score: None,
    };
    let assignment = Assignment {
        host: "h00001".into(),
        revision: 7,
        tasks: (0..2).map(task).collect(),
        orchestrator_epoch: 0,
    };
    let command = Command {
        id: "c-1".into(),
        epoch: 3,
        kind: CommandKind::Commit { task: task(0) },
    };
    let cases: Vec<(&'static str, &Signer, Topic, Vec<u8>)> = vec![
        (
            "heartbeat",
            &host,
            Topic::Heartbeat("h00001".into()),
            encode(&heartbeat),
        ),
        (
            "assignment",
            &orchestrator,
            Topic::Assignment("h00001".into()),
            encode(&assignment),
        ),
        (
            "command",
            &orchestrator,
            Topic::Command("h00001".into()),
            encode(&command),
        ),
    ];
    let mut out = Vec::new();
    for (kind, signer, topic, body) in cases {
        let t = topic.path();
        let mut v = Verifier::new(&trust).expect("trust");
        v.set_host_key("h00001", host.public());
        // Each one its own counter: a command opens once.
        let start = Instant::now();
        let sealed: Vec<Vec<u8>> = (0..repeat).map(|_| signer.seal(&t, &body)).collect();
        let seal = start.elapsed() / repeat as u32;
        let start = Instant::now();
        for payload in &sealed {
            v.open(&t, payload).expect("opens");
        }
        let open = start.elapsed() / repeat as u32;
        out.push((kind, body.len(), seal, open));
    }
    out
}

/// Cost of signing and verifying `bytes` bytes with ed25519 (what signing a chunk of that
/// size would take): (sign, verify).
pub fn chunk_signature_cost(bytes: usize, repeat: usize) -> (Duration, Duration) {
    use ed25519_dalek::{Signer as _, Verifier as _};
    let key = generate();
    let data = vec![0x5au8; bytes];
    let start = Instant::now();
    let mut sig = key.sign(&data);
    for _ in 1..repeat {
        sig = key.sign(&data);
    }
    let sign = start.elapsed() / repeat as u32;
    let public = key.verifying_key();
    let start = Instant::now();
    for _ in 0..repeat {
        public.verify(&data, &sig).expect("verifies");
    }
    (sign, start.elapsed() / repeat as u32)
}

/// Rescore a swarm of `hosts` live hosts (stability, fitness, tier, the scores that changed
/// published), as the orchestrator does once per keep-alive; `repeat` times, sorted. Also,
/// side by side on the same inputs: scoring every host with the arithmetic written out (what
/// each round did before) and without it (what a round does now), one pass each per round.
pub struct RescoreTimes {
    pub rounds: Vec<Duration>,
    pub explained: Vec<Duration>,
    pub quiet: Vec<Duration>,
}

pub fn rescore_rounds(hosts: usize, repeat: usize) -> RescoreTimes {
    let mut c = swarm(hosts, 2);
    let now = Instant::now();
    for i in 0..hosts {
        c.on_heartbeat(
            Heartbeat {
                host: format!("h{i:05}"),
                seq: 1,
                metrics: Metrics {
                    cpu_percent: 30.0 + 50.0 * (i % 7) as f32 / 7.0,
                    encode_fps: 60.0,
                    realtime_fps: 30.0,
                    gops_sent: 100,
                    ..Metrics::default()
                },
                tasks: Vec::new(),
                score: None,
            },
            now,
        );
    }
    c.take_out();
    let inputs: Vec<_> = c
        .hosts
        .values()
        .map(|h| {
            (
                gopswarm_orchestrator::controller::fleet::stability_inputs(h, None),
                gopswarm_orchestrator::controller::fleet::fitness_inputs(h, now),
            )
        })
        .collect();
    let cfg = c.cfg.scores.clone();
    let mut out = RescoreTimes {
        rounds: Vec::with_capacity(repeat),
        explained: Vec::with_capacity(repeat),
        quiet: Vec::with_capacity(repeat),
    };
    for _ in 0..repeat {
        let t = Instant::now();
        c.rescore(now);
        c.take_out();
        out.rounds.push(t.elapsed());
        let t = Instant::now();
        let sum: f64 = inputs
            .iter()
            .map(|(s, f)| {
                gopswarm_orchestrator::score::stability(s, &cfg).score
                    + gopswarm_orchestrator::score::fitness(f, &cfg).score
            })
            .sum();
        out.explained.push(t.elapsed());
        let t = Instant::now();
        let sum_quiet: f64 = inputs
            .iter()
            .map(|(s, f)| {
                gopswarm_orchestrator::score::stability_quiet(s, &cfg).score
                    + gopswarm_orchestrator::score::fitness_quiet(f, &cfg).score
            })
            .sum();
        out.quiet.push(t.elapsed());
        assert_eq!(sum, sum_quiet, "the same scores either way");
    }
    out.rounds.sort();
    out.explained.sort();
    out.quiet.sort();
    out
}
