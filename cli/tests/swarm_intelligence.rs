// SPDX-License-Identifier: MPL-2.0
//! Swarm intelligence end to end, against a real mosquitto: a host made slow falls to bronze
//! and its slot moves to a better spare by a GOP-boundary handoff with nothing lost; the
//! score and its arithmetic are on the wire and printed by `gopswarm explain`; hosts and the
//! orchestrator serve Prometheus metrics.

use gopswarm_proto::*;
use gopswarm_test_support::swarm::*;
use std::process::Command;
use std::time::Duration;

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
    let out = gopswarm_in(&swarm.dir)
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

    // Hosts sample the PSNR of what they encode against the decoded source; the score's
    // quality term uses it.
    let psnr = |swarm: &Swarm| -> Vec<f32> {
        swarm
            .obs
            .decoded()
            .into_iter()
            .filter_map(|(_, m)| match m {
                Inbound::Heartbeat(hb) if hb.host == host_id(1) => hb.metrics.psnr_db,
                _ => None,
            })
            .collect()
    };
    swarm
        .obs
        .wait_for("a PSNR sample from host-1", Duration::from_secs(20), |_| {
            !psnr(&swarm).is_empty()
        });
    let samples = psnr(&swarm);
    assert!(
        samples.iter().all(|db| (28.0..70.0).contains(db)),
        "{samples:?}"
    );
    swarm.obs.wait_for(
        "a score whose quality term uses the sample",
        Duration::from_secs(10),
        |_| {
            scores_of(&swarm, &host_id(1))
                .iter()
                .any(|s| s.explanation.contains("quality") && s.explanation.contains(" dB: ("))
        },
    );

    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
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
    use gopswarm_orchestrator::controller::fleet::HistorySample;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("learn-cli");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.redb");
    // Simulated host history stands in for weeks of a real swarm's.
    let history: Vec<HistorySample> = gopswarm_sim::churn::history(5, 45, 2.0, 10.0)
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

/// The encoder a host announced in its newest birth at or before `at`.
fn encoder_at(
    births: &[(std::time::Instant, Birth)],
    host: &str,
    at: std::time::Instant,
) -> String {
    births
        .iter()
        .rfind(|(t, b)| b.host == host && *t <= at)
        .and_then(|(_, b)| b.versions.encoders.get("h264").cloned())
        .unwrap_or_default()
}

#[test]
fn rolling_update_of_every_host_keeps_the_output_frame_exact() {
    let _serial = serial();
    let name = "rolling-update";
    let dir = swarm_dir(name);
    // The update hook stands in for a package upgrade: it stops the host and starts it again
    // announcing the next encoder library.
    let hook = std::env::temp_dir().join(format!("gopswarm-update-hook-{}.sh", std::process::id()));
    std::fs::write(
        &hook,
        format!(
            r#"#!/bin/sh
verb=$1; id=$2; dir={dir}
[ "$verb" = update ] || {{ echo "unexpected verb $verb" >&2; exit 1; }}
echo "$id" >> "$dir/update-order"
pid=$(cat "$dir/$id.pid")
kill -TERM "$pid" 2>/dev/null
i=0
while [ -e /proc/$pid ] && ! grep -q '^State:.*Z' /proc/$pid/status 2>/dev/null && [ $i -lt 100 ]; do
  sleep 0.1; i=$((i+1))
done
# The keys the orchestrator hands this host (its own directory, a token made for it).
{bin} host --id "$id" --broker "$GOPSWARM_BROKER" --keepalive 1 --advertise-encoder h264=x264-next \
  ${{GOPSWARM_ENROL_TOKEN:+--enrol-token "$GOPSWARM_ENROL_TOKEN"}} \
  --device-class server --interface ethernet --bandwidth-mbps 1000 \
  > "$dir/$id-updated.log" 2>&1 < /dev/null &
echo $! > "$dir/$id.pid"
"#,
            dir = dir.display(),
            bin = BIN
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut swarm = Swarm::start(
        name,
        SwarmOptions {
            hosts: 3,
            slots: 2,
            redundancy: 0,
            gop_s: 1.0,
            duration_s: 60.0,
            latency_gops: 12,
            host_args: (0..3)
                .map(|i| {
                    let mut a = server_args();
                    a.extend(["--advertise-encoder".into(), "h264=x264-old".into()]);
                    (i, a)
                })
                .collect(),
            orchestrator_args: vec![
                "--provision-hook".into(),
                hook.display().to_string(),
                "--rollout-timeout".into(),
                "40".into(),
                "--no-peer-swap".into(),
            ],
            ..Default::default()
        },
    );
    let _cleanup = KillPidFiles(vec![swarm.dir.clone()]);
    for (i, h) in swarm.hosts.iter().enumerate() {
        std::fs::write(
            swarm.dir.join(format!("{}.pid", host_id(i))),
            h.pid().to_string(),
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(4));
    let st = gopswarm_in(&swarm.dir)
        .args(["rolling-update", "--broker", &swarm.broker.url()])
        .status()
        .unwrap();
    assert!(st.success());
    swarm.obs.wait_for(
        "every host back on the new encoder",
        Duration::from_secs(50),
        |o| {
            (0..3).all(|i| {
                o.births().iter().any(|b| {
                    b.host == host_id(i)
                        && b.versions.encoders.get("h264").map(String::as_str) == Some("x264-next")
                })
            })
        },
    );
    let order = std::fs::read_to_string(swarm.dir.join("update-order")).unwrap();
    let mut updated: Vec<&str> = order.lines().collect();
    assert_eq!(updated.len(), 3, "each host updated once: {order}");
    updated.sort();
    assert_eq!(updated, ["host-0", "host-1", "host-2"]);

    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
    // No layout ever mixed encoder versions, and the profile ends on the new one.
    let births: Vec<(std::time::Instant, Birth)> = swarm
        .obs
        .decoded()
        .into_iter()
        .filter_map(|(t, m)| match m {
            Inbound::Birth(b) => Some((t, b)),
            _ => None,
        })
        .collect();
    let layout = swarm.obs.layout().unwrap();
    let times = swarm.obs.layout_times();
    assert!(layout.history.len() >= 2, "{layout:?}");
    for e in &layout.history {
        let (_, at) = times.iter().find(|(x, _)| *x == e.epoch).unwrap();
        let versions: std::collections::BTreeSet<String> = e
            .hosts
            .iter()
            .map(|h| encoder_at(&births, h, *at))
            .collect();
        assert_eq!(
            versions.len(),
            1,
            "epoch {} mixes {versions:?}: {e:?}",
            e.epoch
        );
    }
    let last = layout.history.last().unwrap();
    let (_, at) = times.iter().find(|(x, _)| *x == last.epoch).unwrap();
    assert_eq!(
        encoder_at(&births, &last.hosts[0], *at),
        "x264-next",
        "{layout:?}"
    );
    let _ = std::fs::remove_file(&hook);
}

fn layout_of(swarm: &Swarm, stream: &str) -> Option<Layout> {
    swarm
        .obs
        .decoded()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Inbound::Layout(l) if l.stream == stream => Some(l),
            _ => None,
        })
        .next_back()
}

#[test]
fn an_announced_event_provisions_hosts_before_it_starts() {
    let _serial = serial();
    let mut orchestrator_args: Vec<String> = [
        "--autoscale",
        "--max-hosts",
        "4",
        "--forecast-step",
        "1",
        "--forecast-horizon",
        "30",
        "--spawn-host-arg=--keepalive",
        "--spawn-host-arg=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    orchestrator_args.extend(
        server_args()
            .into_iter()
            .map(|a| format!("--spawn-host-arg={a}")),
    );
    let mut swarm = Swarm::start(
        "autoscale",
        SwarmOptions {
            hosts: 2,
            slots: 1,
            redundancy: 0,
            gop_s: 1.0,
            duration_s: 50.0,
            latency_gops: 12,
            host_args: (0..2).map(|i| (i, server_args())).collect(),
            orchestrator_args,
            ..Default::default()
        },
    );
    let _cleanup = KillPidFiles(vec![swarm.dir.join("hosts")]);
    let auto_births = |swarm: &Swarm| -> Vec<(std::time::Instant, String)> {
        let mut seen: Vec<(std::time::Instant, String)> = Vec::new();
        for (t, m) in swarm.obs.decoded() {
            if let Inbound::Birth(b) = m
                && b.host.starts_with("auto-")
                && !seen.iter().any(|(_, h)| *h == b.host)
            {
                seen.push((t, b.host));
            }
        }
        seen
    };
    // One slot in use of two: the scaler leaves the swarm alone.
    std::thread::sleep(Duration::from_secs(5));
    assert!(auto_births(&swarm).is_empty(), "{:?}", auto_births(&swarm));

    // The final: 2 more slots in 25 s.
    let lead = Duration::from_secs(25);
    let starts_at = std::time::Instant::now() + lead;
    let st = gopswarm_in(&swarm.dir)
        .args(["stream", "--broker", &swarm.broker.url(), "announce"])
        .args(["--id", "final", "--stream", "final", "--in", "25"])
        .args(["--duration", "120", "--slots", "2", "--viewers", "50000"])
        .status()
        .unwrap();
    assert!(st.success());
    swarm
        .obs
        .wait_for("provisioned hosts joining", Duration::from_secs(20), |o| {
            o.births()
                .iter()
                .filter(|b| b.host.starts_with("auto-"))
                .count()
                >= 2
        });
    let joined = auto_births(&swarm);
    // Peak 1 + 2 slots over a capacity of 2: 3 / 0.8 - 2 = 1.75, so two hosts (one more if a
    // host of the swarm was given up meanwhile: on a starved machine a missed heartbeat takes
    // its capacity away; the exact arithmetic is unit-tested in rollout.rs).
    assert!((2..=3).contains(&joined.len()), "{joined:?}");
    for (t, h) in &joined {
        assert!(*t < starts_at, "{h} joined after the event started");
    }

    // The event starts on time: its stream finds the hosts ready.
    std::thread::sleep(starts_at.saturating_duration_since(std::time::Instant::now()));
    let source = swarm.obs.assignments(&host_id(0))[0].tasks[0]
        .source
        .clone();
    let st = gopswarm_in(&swarm.dir)
        .args(["stream", "--broker", &swarm.broker.url(), "add"])
        .args(["--id", "final", "--source", &source])
        .args(["--profile", &format!("{PROFILE}={SPEC}")])
        .args([
            "--gop",
            "1",
            "--slots",
            "2",
            "--redundancy",
            "0",
            "--no-measure",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let added = std::time::Instant::now();
    swarm
        .obs
        .wait_for("the event's layout", Duration::from_secs(20), |_| {
            layout_of(&swarm, "final").is_some()
        });
    let layout = layout_of(&swarm, "final").unwrap();
    let hosts = &layout.history[0].hosts;
    assert_eq!(hosts.len(), 2, "{layout:?}");
    assert!(
        hosts.iter().any(|h| h.starts_with("auto-")),
        "the provisioned hosts carry the event: {layout:?}"
    );
    eprintln!(
        "hosts joined {:?} before the event; its layout came {:?} after the stream was added",
        joined
            .iter()
            .map(|(t, _)| starts_at.saturating_duration_since(*t))
            .collect::<Vec<_>>(),
        added.elapsed()
    );
    // The stream that ran all along is untouched.
    let summary = swarm.finish();
    assert_frame_exact(&swarm, &summary);
}

#[test]
fn bronze_backups_cover_a_killed_primary_and_own_no_gop() {
    let _serial = serial();
    // Tiers on stability alone (no CPU-dependent fitness): wired servers in the home region
    // score about 88 (silver), embedded cellular hosts abroad on 1 Mbit/s about 65 (bronze).
    let weak: Vec<String> = [
        "--device-class",
        "embedded",
        "--interface",
        "cellular",
        "--bandwidth-mbps",
        "1",
        "--region",
        "far",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut home = server_args();
    home.extend(["--region".to_string(), "home".to_string()]);
    let mut swarm = Swarm::start(
        "backups",
        SwarmOptions {
            hosts: 2,
            slots: 2,
            redundancy: 0,
            duration_s: 40.0,
            host_args: vec![(0, home.clone()), (1, home)],
            orchestrator_args: vec![
                "--backup-copies".into(),
                "--region".into(),
                "home".into(),
                "--tiers".into(),
                r#"{"gold":95,"silver":76,"hysteresis":2,"stability_weight":1.0}"#.into(),
            ],
            ..Default::default()
        },
    );
    swarm.add_host(2, &weak);
    swarm.add_host(3, &weak);
    let copies_from = |o: &Observer, host: &str| {
        o.chunks()
            .iter()
            .filter(|(_, h)| h.host_id == host && h.is_redundant())
            .count()
    };
    swarm.obs.wait_for(
        "both bronze hosts sending copies",
        Duration::from_secs(40),
        |o| copies_from(o, &host_id(2)) > 0 && copies_from(o, &host_id(3)) > 0,
    );
    // The layout names them, one per slot: the merger takes copies from named backups only.
    let named: Vec<(u32, String)> = swarm
        .obs
        .layout()
        .unwrap()
        .history
        .last()
        .unwrap()
        .backups
        .iter()
        .map(|b| (b.slot, b.host.clone()))
        .collect();
    let mut hosts: Vec<&str> = named.iter().map(|(_, h)| h.as_str()).collect();
    hosts.sort();
    assert_eq!(hosts, [host_id(2), host_id(3)], "backups named: {named:?}");
    let victim = swarm.obs.layout().unwrap().history.last().unwrap().hosts[0].clone();
    swarm.kill_mid_gop(&victim);
    swarm.obs.wait_for(
        "the re-deal without the victim",
        Duration::from_secs(10),
        |o| {
            o.layout()
                .is_some_and(|l| !l.history.last().unwrap().hosts.contains(&victim))
        },
    );

    let summary = swarm.finish();
    assert!(
        summary["lost_gops"].as_array().unwrap().is_empty(),
        "a backup covered the victim's GOPs: {summary:#}"
    );
    assert_frame_exact(&swarm, &summary);
    assert!(
        summary["merger"]["redundant-used"].as_u64().unwrap() >= 1,
        "the victim's last GOPs came from its backup: {summary:#}"
    );
    // Bronze hosts were never trusted with a GOP of their own.
    for (_, h) in swarm.obs.chunks() {
        if h.host_id == host_id(2) || h.host_id == host_id(3) {
            assert!(
                h.is_redundant(),
                "{} sent GOP {} as primary",
                h.host_id,
                h.gop_index
            );
        }
    }
    let scores = scores_of(&swarm, &host_id(2));
    assert!(
        scores.iter().all(|s| s.tier == "bronze"),
        "host-2 scores: {scores:?}"
    );
}

/// Two hosts of 2 slots hold the stream's 2 slots; a host of 8 joins empty. Every host is
/// gold at once (so it may hold all its slots) and nobody swaps peers: only the proactive
/// balancer may move a slot. An event of 6 slots on the stream is announced `lead` ahead:
/// each of its 2 slots will then carry 3 on hosts of 2.
fn announce_an_overloading_event(name: &str, extra: &[&str]) -> (Swarm, std::time::Instant) {
    let orchestrator_args: Vec<String> = [
        "--forecast-step",
        "1",
        "--forecast-horizon",
        "10",
        "--tiers",
        r#"{"gold":0.001,"silver":0,"hysteresis":0}"#,
        "--no-peer-swap",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    let small = |i: usize| {
        let mut a = server_args();
        a.extend(["--max-tasks".to_string(), "2".to_string()]);
        (i, a)
    };
    let mut swarm = Swarm::start(
        name,
        SwarmOptions {
            hosts: 2,
            slots: 2,
            redundancy: 0,
            gop_s: 1.0,
            duration_s: 30.0,
            // A starved machine misses heartbeats: a host given up would move slots too.
            keepalive_s: 2.0,
            latency_gops: 12,
            host_args: vec![small(0), small(1)],
            orchestrator_args,
            ..Default::default()
        },
    );
    let mut big = server_args();
    big.extend(["--max-tasks".to_string(), "8".to_string()]);
    swarm.add_host(2, &big);
    // Scored (gold) and a few forecast steps with nothing announced: nothing moves.
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        !layout_of(&swarm, STREAM)
            .unwrap()
            .history
            .iter()
            .any(|e| e.hosts.contains(&host_id(2))),
        "a slot moved with nothing announced"
    );
    let lead_s = 8;
    let starts_at = std::time::Instant::now() + Duration::from_secs(lead_s);
    let st = gopswarm_in(&swarm.dir)
        .args(["stream", "--broker", &swarm.broker.url(), "announce"])
        .args([
            "--id",
            "final",
            "--stream",
            STREAM,
            "--in",
            &lead_s.to_string(),
        ])
        .args(["--duration", "60", "--slots", "6"])
        .status()
        .unwrap();
    assert!(st.success());
    (swarm, starts_at)
}

/// When the big host took its first GOP of the stream (the switch of the first layout
/// epoch that holds it), by the observer's clock.
fn big_host_took_a_slot(swarm: &Swarm) -> Option<std::time::Instant> {
    swarm.obs.decoded().into_iter().find_map(|(t, m)| match m {
        Inbound::Layout(l)
            if l.stream == STREAM && l.history.iter().any(|e| e.hosts.contains(&host_id(2))) =>
        {
            Some(t)
        }
        _ => None,
    })
}

#[test]
fn an_announced_event_moves_slots_off_hosts_it_would_overload_before_it_starts() {
    let _serial = serial();
    let (mut swarm, starts_at) = announce_an_overloading_event("proactive", &[]);
    swarm
        .obs
        .wait_for("a slot on the big host", Duration::from_secs(8), |_| {
            big_host_took_a_slot(&swarm).is_some()
        });
    let moved_at = big_host_took_a_slot(&swarm).unwrap();
    assert!(
        moved_at < starts_at,
        "the slot moved {:?} after the event started",
        moved_at - starts_at
    );
    let layout = layout_of(&swarm, STREAM).unwrap();
    let last = &layout.history.last().unwrap().hosts;
    assert!(last.contains(&host_id(2)), "{layout:?}");
    assert_eq!(last.len(), 2, "a handoff, not a growth: {layout:?}");
    // The move and its forecast numbers are in the orchestrator's log.
    let log: String = ["orchestrator.log", "orchestrator.out"]
        .iter()
        .map(|f| std::fs::read_to_string(swarm.dir.join(f)).unwrap_or_default())
        .collect();
    assert!(
        log.contains("proactive move") && log.contains("forecast load 3.00 of capacity 2.00"),
        "orchestrator log:\n{log}"
    );
    eprintln!(
        "slot moved {:?} before the event",
        starts_at.saturating_duration_since(moved_at)
    );
    let summary = swarm.finish();
    let check = check_output(&swarm.dir, &summary, swarm.opts.gop_s);
    assert_eq!(check.frames, check.expected, "{check:?}\n{summary:#}");
    assert_eq!(check.decode_timing, None, "{check:?}");
    assert!(
        summary["lost_gops"].as_array().unwrap().is_empty(),
        "{summary:#}"
    );
}

#[test]
fn with_no_proactive_an_announced_event_moves_nothing() {
    let _serial = serial();
    let (mut swarm, starts_at) = announce_an_overloading_event("no-proactive", &["--no-proactive"]);
    std::thread::sleep(starts_at.saturating_duration_since(std::time::Instant::now()));
    std::thread::sleep(Duration::from_secs(3));
    let log: String = ["orchestrator.log", "orchestrator.out"]
        .iter()
        .map(|f| std::fs::read_to_string(swarm.dir.join(f)).unwrap_or_default())
        .collect();
    assert!(!log.contains("proactive move"), "orchestrator log:\n{log}");
    assert_eq!(
        big_host_took_a_slot(&swarm),
        None,
        "orchestrator log:\n{log}"
    );
    let summary = swarm.finish();
    let check = check_output(&swarm.dir, &summary, swarm.opts.gop_s);
    assert_eq!(check.frames, check.expected, "{check:?}\n{summary:#}");
}
