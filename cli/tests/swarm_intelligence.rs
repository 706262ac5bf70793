//! Swarm intelligence end to end, against a real mosquitto: a host made slow falls to bronze
//! and its slot moves to a better spare by a GOP-boundary handoff with nothing lost; the
//! score and its arithmetic are on the wire and printed by `gopswarm explain`; hosts and the
//! orchestrator serve Prometheus metrics.

mod swarm_harness;

use gopswarm_proto::*;
use std::process::Command;
use std::time::Duration;
use swarm_harness::*;

fn scores_of(swarm: &Swarm, host: &str) -> Vec<HostScore> {
    swarm
        .obs
        .decoded()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Inbound::Score(s) if s.host == host => Some(s),
            _ => None,
        })
        .collect()
}

fn server_args() -> Vec<String> {
    [
        "--device-class",
        "server",
        "--interface",
        "ethernet",
        "--bandwidth-mbps",
        "1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn slow_host_is_swapped_out_by_handoff_and_nothing_is_lost() {
    let _serial = serial();
    let slow_metrics = free_port();
    let mut swarm = Swarm::start(
        "slow-host",
        SwarmOptions {
            hosts: 2,
            slots: 2,
            redundancy: 0,
            gop_s: 1.0,
            duration_s: 40.0,
            latency_gops: 12,
            // host-0 takes frames at 17 fps from a 25 fps source: 68% of real time. The
            // others say they are wired servers: their scores keep a margin above the
            // silver threshold on a loaded test machine.
            host_args: vec![
                (
                    0,
                    vec![
                        "--throttle-fps".into(),
                        "17".into(),
                        "--metrics-listen".into(),
                        format!("127.0.0.1:{slow_metrics}"),
                    ],
                ),
                (1, server_args()),
            ],
            ..Default::default()
        },
    );
    let first = swarm.obs.layout().unwrap().history[0].clone();
    assert!(first.hosts.contains(&host_id(0)), "{first:?}");
    // A spare joins after the first layout.
    swarm.add_host(2, &server_args());
    swarm.obs.wait_for(
        "the slow host's slot moved to the spare",
        Duration::from_secs(45),
        |o| {
            o.layout().is_some_and(|l| {
                let last = l.history.last().unwrap();
                last.hosts.contains(&host_id(2)) && !last.hosts.contains(&host_id(0))
            })
        },
    );
    let layout = swarm.obs.layout().unwrap();
    let swap = layout.history.last().unwrap().clone();
    assert_eq!(layout.history.len(), 2, "one swap, no storm: {layout:?}");
    assert_eq!(swap.hosts.len(), 2);
    assert!(
        swap.hosts.contains(&host_id(1)),
        "the healthy host kept its slot"
    );

    // Why, on the wire: host-0 went bronze on its speed, host-2 was silver or better.
    let slow = scores_of(&swarm, &host_id(0));
    let bronze = slow
        .iter()
        .find(|s| s.tier == "bronze")
        .unwrap_or_else(|| panic!("no bronze score for host-0: {slow:?}"));
    assert!(
        bronze.explanation.contains("keeps up"),
        "{}",
        bronze.explanation
    );
    assert!(bronze.combined <= 65.0, "{bronze:?}");
    let spare = scores_of(&swarm, &host_id(2));
    assert!(
        spare.iter().any(|s| s.tier != "bronze"),
        "spare scores: {spare:?}"
    );
    let out = Command::new(BIN)
        .args(["explain", &host_id(0), "--broker", &swarm.broker.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("host host-0: tier bronze"), "{text}");
    for line in [
        "stability =",
        "fitness =",
        "network",
        "history",
        "speed",
        "combined =",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    // The host's own metrics carry the score the orchestrator gave it.
    let page = http_get(slow_metrics, "/metrics");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("gopswarm_host_fitness_score "), "{page}");
    assert!(page.contains("gopswarm_host_encode_fps "), "{page}");

    let summary = swarm.finish();
    let check = check_output(&swarm.dir, &summary, swarm.opts.gop_s);
    assert_eq!(check.frames, check.expected, "{check:?}\n{summary:#}");
    assert_eq!(check.bad_steps, 0, "{check:?}");
    assert!(check.decode_errors.is_empty(), "{check:?}");
    assert!(
        summary["lost_gops"].as_array().unwrap().is_empty(),
        "{summary:#}"
    );
    // The slow host contributed only GOPs before the switch.
    let switch = swap.from_gop;
    for (_, h) in swarm.obs.chunks() {
        if h.host_id == host_id(0) {
            assert!(
                h.gop_index < switch,
                "host-0 sent GOP {} after the switch at {switch}",
                h.gop_index
            );
        }
    }
}

#[test]
fn learn_trains_on_persisted_history_and_reports_held_out_auc() {
    use gopswarm_orchestrator::fleet::HistorySample;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("learn-cli");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.redb");
    // Simulated host history stands in for weeks of a real swarm's.
    let history: Vec<HistorySample> = gopswarm_orchestrator::churn::history(5, 45, 2.0, 10.0)
        .into_iter()
        .map(|s| HistorySample {
            host: format!("h{}", s.host),
            at_ms: s.t_interval as u64 * 600_000,
            inputs: s.inputs,
            minute_of_day: s.minute_of_day,
            load_fraction: s.load_fraction,
            label: s.label,
        })
        .collect();
    let store = gopswarm_orchestrator::store::Store::open(&state).unwrap();
    store.append_samples(&history).unwrap();
    drop(store);
    let model = dir.join("model.json");
    let out = Command::new(BIN)
        .args(["learn", "--state"])
        .arg(&state)
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(text.split("model written").next().unwrap()).unwrap();
    assert_eq!(json["samples"].as_u64().unwrap() as usize, history.len());
    let learned = json["auc_learned"].as_f64().unwrap();
    let hand = json["auc_hand"].as_f64().unwrap();
    assert!(learned > 0.6 && hand > 0.5, "{json}");
    // The orchestrator takes the model.
    let m: gopswarm_orchestrator::learn::Model =
        serde_json::from_slice(&std::fs::read(&model).unwrap()).unwrap();
    let p = m.disconnect_probability(&history[0].inputs, 600, 0.5);
    assert!((0.0..=1.0).contains(&p));
    // An empty state is a clear error.
    let empty = Command::new(BIN)
        .args(["learn", "--state"])
        .arg(dir.join("empty.redb"))
        .arg("--out")
        .arg(dir.join("m2.json"))
        .output()
        .unwrap();
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no host history"));
}
