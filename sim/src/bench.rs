// SPDX-License-Identifier: MPL-2.0
//! Benchmarks of the controller alone (no network): one assignment round places every stream
//! of a large swarm (prepare, ready acks, first layout), as the orchestrator does after a
//! cold start with an empty state.

use gopswarm_orchestrator::controller::{Config, Controller};
use gopswarm_proto::*;
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

/// Place `streams` streams of `slots` slots over a fresh swarm of `hosts`, `repeat` times.
pub fn assignment_rounds(hosts: usize, streams: usize, slots: u32, repeat: usize) -> RoundTimes {
    let mut out = RoundTimes {
        rounds: Vec::new(),
        per_stream: Vec::new(),
        messages_per_round: 0,
    };
    for _ in 0..repeat {
        let mut c = swarm(hosts, 2);
        let round = Instant::now();
        let mut messages = 0;
        for s in 0..streams {
            let t = Instant::now();
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
            let outs = c.take_out();
            messages += outs.len();
            // Every prepared host answers ready.
            for o in outs.iter().filter(|o| o.topic.ends_with("/cmd")) {
                if let Ok(Inbound::Command(h, cmd)) = decode_publish(&o.topic, &o.payload) {
                    c.on_ack(
                        Ack {
                            host: h,
                            id: cmd.id,
                            ok: true,
                            detail: String::new(),
                            current_gop: Some(10),
                        },
                        Instant::now(),
                    );
                }
            }
            messages += c.take_out().len();
            out.per_stream.push(t.elapsed());
        }
        out.rounds.push(round.elapsed());
        out.messages_per_round = messages;
    }
    out.rounds.sort();
    out.per_stream.sort();
    out
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
