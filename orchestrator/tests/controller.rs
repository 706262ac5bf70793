// SPDX-License-Identifier: MPL-2.0
//! The swarm controller as a state machine: what it publishes for births, deaths, missed
//! heartbeats, acks and handoffs, read back through the protocol decoder.

use gopswarm_orchestrator::controller::{Config, Controller, Out};
use gopswarm_orchestrator::store::Store;
use gopswarm_proto::*;
use std::time::{Duration, Instant};

fn versions() -> Versions {
    this_build_versions("1.22.0")
}

fn birth(host: &str, seq: u64) -> Birth {
    Birth {
        host: host.into(),
        seq,
        versions: versions(),
        capabilities: Capabilities {
            cores: 4,
            mem_bytes: 1 << 32,
            codecs: vec!["h264".into()],
            max_tasks: 1,
            srt_endpoint: None,
            ..Default::default()
        },
    }
}

fn stream(slots: u32, r: u32) -> StreamDef {
    StreamDef {
        id: "cam1".into(),
        source: "gdp+tcp://127.0.0.1:7100".into(),
        profiles: vec![ProfileDef {
            id: "p360".into(),
            spec: "h264, width=640, height=360".into(),
        }],
        gop_ns: 1_000_000_000,
        redundancy: Some(r),
        slots: Some(slots),
        complexity: None,
        chunk_sink: None,
    }
}

fn decoded(outs: &[Out]) -> Vec<Inbound> {
    outs.iter()
        .filter(|o| !o.payload.is_empty())
        .map(|o| decode_publish(&o.topic, &o.payload).expect("controller output decodes"))
        .collect()
}

fn commands(outs: &[Out]) -> Vec<(String, Command)> {
    decoded(outs)
        .into_iter()
        .filter_map(|m| match m {
            Inbound::Command(h, c) => Some((h, c)),
            _ => None,
        })
        .collect()
}

fn layouts(outs: &[Out]) -> Vec<Layout> {
    decoded(outs)
        .into_iter()
        .filter_map(|m| match m {
            Inbound::Layout(l) => Some(l),
            _ => None,
        })
        .collect()
}

fn assignments(outs: &[Out]) -> Vec<Assignment> {
    decoded(outs)
        .into_iter()
        .filter_map(|m| match m {
            Inbound::Assignment(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn ack(host: &str, id: &str, gop: u64) -> Ack {
    Ack {
        host: host.into(),
        id: id.into(),
        ok: true,
        detail: String::new(),
        current_gop: Some(gop),
    }
}

fn heartbeat(host: &str, seq: u64, gop: u64) -> Heartbeat {
    Heartbeat {
        host: host.into(),
        seq,
        metrics: Metrics::default(),
        tasks: vec![TaskStatus {
            stream: "cam1".into(),
            profile: "p360".into(),
            layout_epoch: 1,
            current_gop: Some(gop),
            gops_sent: 0,
            ready: true,
            error: None,
        }],
        score: None,
    }
}

/// Three hosts, one stream started: returns the controller at layout epoch 1 from GOP 9.
fn started(r: u32) -> (Controller, Instant) {
    let t0 = Instant::now();
    let mut c = Controller::new(Config::default(), versions(), 1);
    for (i, h) in ["a", "b", "c", "d"].iter().enumerate() {
        c.on_birth(birth(h, 100 + i as u64), t0);
    }
    c.add_stream(stream(3, r), t0).unwrap();
    let outs = c.take_out();
    let prepares = commands(&outs);
    assert_eq!(prepares.len(), 3, "one prepare per chosen host");
    for (i, (h, cmd)) in prepares.iter().enumerate() {
        assert!(matches!(cmd.kind, CommandKind::Prepare { .. }));
        c.on_ack(ack(h, &cmd.id, 5 + i as u64), t0);
    }
    let outs = c.take_out();
    let l = layouts(&outs);
    assert_eq!(l.len(), 1);
    let e = &l[0].history[0];
    assert_eq!(
        (e.epoch, e.from_gop),
        (1, 9),
        "furthest host at GOP 7 + margin 2"
    );
    assert_eq!(e.hosts, ["a", "b", "c"]);
    let commits = commands(&outs);
    assert_eq!(commits.len(), 3);
    for (_, cmd) in &commits {
        let CommandKind::Commit { task } = &cmd.kind else {
            panic!("{cmd:?}")
        };
        assert_eq!(
            (task.layout_epoch, task.switch_gop, task.slot_count),
            (1, 9, 3)
        );
        assert_eq!(task.role, TaskRole::Active);
    }
    (c, t0)
}

/// The holders of `started` report GOP 12, then b (slot 1) dies: epoch 2 from GOP 14.
fn b_dies_at_gop_12(c: &mut Controller, t0: Instant) {
    for (h, s) in [("a", 100), ("b", 101), ("c", 102)] {
        c.on_heartbeat(heartbeat(h, s, 12), t0);
    }
    c.on_death(
        Death {
            host: "b".into(),
            seq: 101,
        },
        t0,
    );
}

#[test]
fn stream_start_prepares_then_commits_one_layout() {
    let (c, _) = started(1);
    assert_eq!(c.stats.layouts, 1);
    assert!(c.hosts["d"].tasks.is_empty(), "a fourth host stays free");
}

#[test]
fn death_re_deals_slots_and_stale_death_is_ignored() {
    let (mut c, t0) = started(1);
    // Death of an older connection of b: ignored.
    c.on_death(
        Death {
            host: "b".into(),
            seq: 50,
        },
        t0,
    );
    assert!(c.take_out().is_empty());
    assert_eq!(c.stats.stale_deaths, 1);
    b_dies_at_gop_12(&mut c, t0);
    let outs = c.take_out();
    let l = layouts(&outs);
    let e = l[0].history.last().unwrap();
    assert_eq!((e.epoch, e.from_gop), (2, 14));
    assert_eq!(e.hosts, ["a", "c"]);
    assert_eq!(e.redundancy, 1);
    let a = assignments(&outs);
    let b = a.iter().find(|a| a.host == "b").unwrap();
    assert!(
        b.tasks.is_empty(),
        "the dead host's desired state is emptied"
    );
    let cc = a.iter().find(|a| a.host == "c").unwrap();
    assert_eq!((cc.tasks[0].slot_index, cc.tasks[0].slot_count), (1, 2));
}

#[test]
fn missed_heartbeats_kill_within_one_and_a_half_keepalives() {
    let (mut c, t0) = started(0);
    let ka = c.cfg.keepalive;
    for (h, s) in [("a", 100), ("b", 101), ("c", 102), ("d", 103)] {
        c.on_heartbeat(heartbeat(h, s, 10), t0);
    }
    let t1 = t0 + ka;
    for (h, s) in [("a", 100), ("b", 101), ("d", 103)] {
        c.on_heartbeat(heartbeat(h, s, 11), t1);
    }
    c.tick(t0 + ka * 3 / 2 - Duration::from_millis(1));
    assert_eq!(c.stats.deaths, 0);
    c.tick(t0 + ka * 3 / 2 + Duration::from_millis(101));
    assert_eq!(c.stats.deaths, 1);
    assert!(!c.hosts["c"].alive);
    let l = layouts(&c.take_out());
    assert_eq!(l[0].history.last().unwrap().hosts, ["a", "b"]);
}

#[test]
fn planned_handoff_commits_new_host_then_drains_old_one() {
    let (mut c, t0) = started(0);
    for (h, s) in [("a", 100), ("b", 101), ("c", 102)] {
        c.on_heartbeat(heartbeat(h, s, 20), t0);
    }
    c.take_out();
    let to = c.start_handoff("cam1", "p360", "b", None, t0).unwrap();
    assert_eq!(to, "d");
    let outs = c.take_out();
    let cmds = commands(&outs);
    assert_eq!(cmds.len(), 1);
    let (h, prep) = &cmds[0];
    assert_eq!(h, "d");
    c.on_ack(ack("d", &prep.id, 20), t0);
    let outs = c.take_out();
    assert!(
        layouts(&outs).is_empty(),
        "no layout before the new host confirms"
    );
    let cmds = commands(&outs);
    let (h, commit) = &cmds[0];
    assert_eq!(h, "d");
    let CommandKind::Commit { task } = &commit.kind else {
        panic!()
    };
    assert_eq!(
        (task.switch_gop, task.layout_epoch, task.slot_index),
        (22, 2, 1)
    );
    // Duplicate delivery of the prepare ack changes nothing.
    c.on_ack(ack("d", &prep.id, 20), t0);
    assert!(c.take_out().is_empty());
    c.on_ack(ack("d", &commit.id, 21), t0);
    let outs = c.take_out();
    let l = layouts(&outs);
    let e = l[0].history.last().unwrap();
    assert_eq!((e.epoch, e.from_gop), (2, 22));
    assert_eq!(e.hosts, ["a", "d", "c"]);
    let drains: Vec<_> = commands(&outs)
        .into_iter()
        .filter(|(_, c)| matches!(c.kind, CommandKind::Drain { .. }))
        .collect();
    assert_eq!(drains.len(), 1);
    assert_eq!(drains[0].0, "b");
    assert!(matches!(
        drains[0].1.kind,
        CommandKind::Drain { last_gop: 21, .. }
    ));
    assert_eq!(c.stats.handoffs_done, 1);
    // The old host's task stays while it still runs it (flushing its last GOP)...
    c.on_heartbeat(heartbeat("b", 101, 22), t0);
    assert!(assignments(&c.take_out()).is_empty());
    // ...and goes once the host reports it finished.
    let mut done = heartbeat("b", 101, 22);
    done.tasks.clear();
    c.on_heartbeat(done, t0);
    let a = assignments(&c.take_out());
    assert!(a.iter().any(|a| a.host == "b" && a.tasks.is_empty()));
}

#[test]
fn late_commit_moves_the_switch_later_and_unready_host_is_aborted() {
    let (mut c, t0) = started(0);
    for (h, s) in [("a", 100), ("b", 101), ("c", 102)] {
        c.on_heartbeat(heartbeat(h, s, 20), t0);
    }
    c.take_out();
    c.start_handoff("cam1", "p360", "a", Some("d"), t0).unwrap();
    let prep = commands(&c.take_out()).remove(0).1;
    c.on_ack(ack("d", &prep.id, 20), t0);
    let commit = commands(&c.take_out()).remove(0).1;
    // The ack says d is already at GOP 23, past k = 22: commit again further ahead.
    c.on_ack(ack("d", &commit.id, 23), t0);
    let outs = c.take_out();
    assert!(layouts(&outs).is_empty());
    let (_, again) = commands(&outs).remove(0);
    let CommandKind::Commit { task } = &again.kind else {
        panic!()
    };
    assert_eq!(task.switch_gop, 25);
    c.on_ack(ack("d", &again.id, 23), t0);
    let l = layouts(&c.take_out());
    assert_eq!(l[0].history.last().unwrap().from_gop, 25);
    assert_eq!(c.handoffs.last().unwrap().retries, 1);

    // A host that never gets ready: aborted at the deadline, the old host keeps the slot.
    c.on_birth(birth("e", 200), t0);
    c.take_out();
    c.start_handoff("cam1", "p360", "b", Some("e"), t0).unwrap();
    c.take_out();
    let late = t0 + c.cfg.prepare_timeout + Duration::from_millis(1);
    for (h, s) in [("a", 100), ("b", 101), ("c", 102), ("d", 103), ("e", 200)] {
        c.on_heartbeat(heartbeat(h, s, 30), late);
    }
    c.tick(late);
    let outs = c.take_out();
    assert!(
        commands(&outs)
            .iter()
            .any(|(h, cmd)| h == "e" && matches!(cmd.kind, CommandKind::Abort { .. }))
    );
    assert_eq!(c.stats.handoffs_aborted, 1);
    assert!(
        c.streams["cam1"].profiles["p360"]
            .history
            .last()
            .unwrap()
            .hosts
            .contains(&"b".to_string())
    );
}

#[test]
fn incompatible_host_never_gets_a_slot() {
    let t0 = Instant::now();
    let mut c = Controller::new(Config::default(), versions(), 1);
    let mut old = birth("old", 1);
    old.versions.protocol = 0;
    c.on_birth(old, t0);
    let mut other = birth("other", 1);
    other.versions.agent = "9.0.0".into();
    c.on_birth(other, t0);
    c.on_birth(birth("good", 1), t0);
    c.add_stream(stream(3, 0), t0).unwrap();
    let outs = c.take_out();
    let hosts: Vec<String> = commands(&outs).into_iter().map(|(h, _)| h).collect();
    assert_eq!(hosts, ["good"]);
    assert_eq!(c.stats.refused_incompatible, 2);
    assert!(
        c.start_handoff("cam1", "p360", "good", Some("old"), t0)
            .is_err()
    );
}

#[test]
fn restart_from_the_store_keeps_assignments_and_reassigns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let (mut c, t0) = started(1);
    let store = Store::open(&path).unwrap();
    let (hosts, streams) = c.take_dirty();
    let hosts: Vec<_> = hosts.iter().map(|h| (h.as_str(), c.hosts.get(h))).collect();
    let streams: Vec<_> = streams
        .iter()
        .map(|s| (s.as_str(), c.streams.get(s)))
        .collect();
    store.save(c.epoch, c.next_cmd, &hosts, &streams).unwrap();
    let before: Vec<(String, u64)> = c
        .hosts
        .values()
        .map(|h| (h.id.clone(), h.revision))
        .collect();
    drop(store);

    let store = Store::open(&path).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.epoch, 1);
    let t1 = t0 + Duration::from_secs(60);
    let mut c2 = Controller::new(Config::default(), versions(), loaded.epoch + 1);
    c2.restore(loaded.hosts, loaded.streams, loaded.next_cmd, t1);
    let outs = c2.take_out();
    // Same desired state republished, same revisions, no command, no new layout epoch.
    assert!(commands(&outs).is_empty());
    let after: Vec<(String, u64)> = c2
        .hosts
        .values()
        .map(|h| (h.id.clone(), h.revision))
        .collect();
    assert_eq!(before, after);
    assert_eq!(layouts(&outs)[0].history.len(), 1);
    // Hosts keep heartbeating: nobody dies, nothing moves.
    for i in 1..=10 {
        let t = t1 + Duration::from_millis(500 * i);
        for (h, s) in [("a", 100), ("b", 101), ("c", 102), ("d", 103)] {
            c2.on_heartbeat(heartbeat(h, s, 30 + i), t);
        }
        c2.tick(t);
    }
    assert_eq!(c2.stats.deaths, 0);
    assert!(commands(&c2.take_out()).is_empty());
}

#[test]
fn measured_complexity_and_free_hosts_size_the_swarm() {
    use gopswarm_orchestrator::controller::{Level, Sizing};
    let s = Sizing::default();
    let c = |si, ti| ContentComplexity { si, ti, frames: 50 };
    assert_eq!(s.plan(&c(30.0, 5.0), 10), (2, 1, Level::Low));
    assert_eq!(s.plan(&c(90.0, 18.0), 10), (3, 1, Level::Medium));
    assert_eq!(s.plan(&c(218.0, 17.0), 10), (4, 1, Level::High));
    assert_eq!(s.plan(&c(90.0, 63.0), 10), (4, 1, Level::High));
    // Too few hosts: fewer slots, no redundancy when no host would be left free.
    assert_eq!(s.plan(&c(218.0, 17.0), 3), (3, 0, Level::High));
    assert_eq!(s.plan(&c(218.0, 17.0), 1), (1, 0, Level::High));

    // Through the controller: a high-complexity stream without slots gets four hosts, r=1.
    let t0 = Instant::now();
    let mut ctl = Controller::new(Config::default(), versions(), 1);
    for i in 0..6 {
        ctl.on_birth(birth(&format!("h{i}"), 1), t0);
    }
    let mut def = stream(1, 0);
    def.slots = None;
    def.redundancy = None;
    def.complexity = Some(c(218.0, 17.0));
    ctl.add_stream(def, t0).unwrap();
    let outs = ctl.take_out();
    let prepares = commands(&outs);
    assert_eq!(prepares.len(), 4);
    for (i, (h, cmd)) in prepares.iter().enumerate() {
        ctl.on_ack(ack(h, &cmd.id, 3 + i as u64), t0);
    }
    let l = layouts(&ctl.take_out());
    assert_eq!(l[0].history[0].hosts.len(), 4);
    assert_eq!(l[0].history[0].redundancy, 1);
    // Decided once and kept in the stream definition.
    assert_eq!(ctl.streams["cam1"].def.slots, Some(4));
}

#[test]
fn a_layout_grows_by_several_hosts_in_one_epoch_or_by_those_ready_at_the_deadline() {
    let (mut c, t0) = started(0);
    // Only the prepare deadline runs out here, no host's heartbeats.
    c.cfg.dead_after = Duration::from_secs(3600);
    for (i, h) in ["e", "f"].iter().enumerate() {
        c.on_birth(birth(h, 200 + i as u64), t0);
    }
    b_dies_at_gop_12(&mut c, t0);
    let _ = c.take_out();
    let hosts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Bad newcomers change nothing: a holder, a duplicate, an unknown host.
    for bad in [&["d", "a"][..], &["d", "d"], &["zz"], &[]] {
        assert!(
            c.grow_by("cam1", "p360", &hosts(bad), t0).is_err(),
            "{bad:?}"
        );
        assert!(!c.busy("cam1", "p360"));
        assert!(c.take_out().is_empty(), "{bad:?} published something");
    }

    c.grow_by("cam1", "p360", &hosts(&["d", "e", "f"]), t0)
        .unwrap();
    let cmds = commands(&c.take_out());
    let prepared: Vec<&str> = cmds.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(prepared, ["d", "e", "f"]);
    for (i, (h, cmd)) in cmds.iter().enumerate() {
        let CommandKind::Prepare { task } = &cmd.kind else {
            panic!("{cmd:?}")
        };
        assert_eq!((task.slot_index, task.slot_count), (2 + i as u32, 5));
        c.on_ack(ack(h, &cmd.id, 13), t0);
        let outs = c.take_out();
        if i < 2 {
            assert!(layouts(&outs).is_empty(), "a layout before all were ready");
        } else {
            let l = layouts(&outs);
            assert_eq!(l.len(), 1, "one epoch for all three");
            let e = l[0].history.last().unwrap();
            assert_eq!(e.hosts, ["a", "c", "d", "e", "f"]);
            assert_eq!((e.epoch, e.from_gop), (3, 15));
        }
    }
    assert!(!c.busy("cam1", "p360"));

    // Two newcomers, one never ready: at the deadline the layout takes the other.
    c.on_death(
        Death {
            host: "e".into(),
            seq: 200,
        },
        t0,
    );
    c.on_death(
        Death {
            host: "f".into(),
            seq: 201,
        },
        t0,
    );
    c.on_birth(birth("g", 300), t0);
    c.on_birth(birth("h", 301), t0);
    let _ = c.take_out();
    c.grow_by("cam1", "p360", &hosts(&["g", "h"]), t0).unwrap();
    let cmds = commands(&c.take_out());
    let (h, cmd) = cmds.iter().find(|(h, _)| h == "g").unwrap();
    c.on_ack(ack(h, &cmd.id, 16), t0);
    assert!(layouts(&c.take_out()).is_empty());
    c.tick(t0 + c.cfg.prepare_timeout + Duration::from_secs(1));
    let l = layouts(&c.take_out());
    let e = l[0].history.last().unwrap();
    assert_eq!(e.hosts, ["a", "c", "d", "g"]);
    assert!(c.hosts["h"].tasks.is_empty(), "the late host is left out");
}

#[test]
fn several_slots_move_in_one_epoch_or_not_at_all() {
    let (mut c, t0) = started(0);
    c.cfg.dead_after = Duration::from_secs(3600);
    for (i, h) in ["e", "f"].iter().enumerate() {
        c.on_birth(birth(h, 200 + i as u64), t0);
    }
    for (h, s) in [("a", 100), ("b", 101), ("c", 102)] {
        c.on_heartbeat(heartbeat(h, s, 12), t0);
    }
    let _ = c.take_out();
    let swap = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    // Refused, nothing published: not a holder, a holder as target, one slot given twice.
    for bad in [
        &[("d", "e")][..],
        &[("a", "b")],
        &[("a", "d"), ("a", "e")],
        &[("a", "d"), ("c", "d")],
        &[],
    ] {
        assert!(
            c.replace_holders("cam1", "p360", &swap(bad), t0).is_err(),
            "{bad:?}"
        );
        assert!(!c.busy("cam1", "p360"));
        assert!(c.take_out().is_empty(), "{bad:?} published something");
    }

    c.replace_holders("cam1", "p360", &swap(&[("a", "d"), ("c", "e")]), t0)
        .unwrap();
    let cmds = commands(&c.take_out());
    let prepared: Vec<(&str, u32)> = cmds
        .iter()
        .map(|(h, cmd)| match &cmd.kind {
            CommandKind::Prepare { task } => (h.as_str(), task.slot_index),
            k => panic!("{k:?}"),
        })
        .collect();
    assert_eq!(
        prepared,
        [("d", 0), ("e", 2)],
        "each in its predecessor's slot"
    );
    c.on_ack(ack("d", &cmds[0].1.id, 13), t0);
    assert!(
        layouts(&c.take_out()).is_empty(),
        "not before both are ready"
    );
    c.on_ack(ack("e", &cmds[1].1.id, 13), t0);
    let outs = c.take_out();
    let l = layouts(&outs);
    assert_eq!(l.len(), 1, "one switch for both");
    let e = l[0].history.last().unwrap();
    assert_eq!(e.hosts, ["d", "b", "e"]);
    assert_eq!((e.epoch, e.from_gop), (2, 15));
    // The predecessors encode up to the GOP before the switch and then stop.
    let a = assignments(&outs);
    for old in ["a", "c"] {
        let t = &a.iter().find(|x| x.host == old).unwrap().tasks[0];
        assert_eq!(t.until_gop, Some(14), "{old}");
    }
    assert_eq!(c.stats.slots_moved_together, 2);
    assert!(!c.busy("cam1", "p360"));

    // One newcomer never ready: at the deadline nothing moves and the holder keeps its slot.
    for (h, s) in [("d", 103), ("b", 101), ("e", 200)] {
        c.on_heartbeat(heartbeat(h, s, 16), t0);
    }
    let _ = c.take_out();
    c.replace_holders("cam1", "p360", &swap(&[("b", "f")]), t0)
        .unwrap();
    let _ = c.take_out();
    c.tick(t0 + c.cfg.prepare_timeout + Duration::from_secs(1));
    assert!(layouts(&c.take_out()).is_empty());
    assert!(!c.busy("cam1", "p360"));
    assert!(
        c.hosts["f"].tasks.is_empty(),
        "the late newcomer is released"
    );
    assert_eq!(c.hosts["b"].tasks.len(), 1, "the holder keeps its slot");
    assert_eq!(
        c.streams["cam1"].profiles["p360"]
            .history
            .last()
            .unwrap()
            .hosts,
        ["d", "b", "e"]
    );
}

#[test]
fn a_layout_shrunk_by_a_death_grows_back_with_a_prepared_host() {
    let (mut c, t0) = started(0);
    for (h, s) in [("a", 100), ("b", 101), ("c", 102), ("d", 103)] {
        c.on_heartbeat(heartbeat(h, s, 12), t0);
    }
    c.on_death(
        Death {
            host: "b".into(),
            seq: 101,
        },
        t0,
    );
    let _ = c.take_out();
    assert_eq!(
        c.streams["cam1"].profiles["p360"]
            .history
            .last()
            .unwrap()
            .hosts,
        ["a", "c"]
    );
    let to = c.grow("cam1", "p360", None, t0).unwrap();
    assert_eq!(to, "d");
    assert!(
        c.grow("cam1", "p360", None, t0).is_err(),
        "one operation at a time"
    );
    let outs = c.take_out();
    let cmds = commands(&outs);
    assert_eq!(cmds.len(), 1, "only the new host is prepared: {cmds:?}");
    assert!(
        layouts(&outs).is_empty(),
        "nothing changes before it is ready"
    );
    let (h, cmd) = &cmds[0];
    assert_eq!(h, "d");
    c.on_ack(ack("d", &cmd.id, 13), t0);
    let outs = c.take_out();
    let l = layouts(&outs);
    let e = l[0].history.last().unwrap();
    assert_eq!(e.hosts, ["a", "c", "d"]);
    assert_eq!(
        (e.epoch, e.from_gop),
        (3, 15),
        "furthest host at GOP 13 + margin 2"
    );
    let commits = commands(&outs);
    assert_eq!(commits.len(), 3, "every holder moves to the new layout");
    for (_, cmd) in commits {
        let CommandKind::Commit { task } = cmd.kind else {
            panic!()
        };
        assert_eq!((task.slot_count, task.switch_gop), (3, 15));
    }
}

#[test]
fn a_layout_short_of_its_slots_regrows_by_itself_once_a_host_is_free() {
    let (mut c, t0) = started(0);
    let after = c.cfg.regrow_after.expect("on by default");
    let beat = |c: &mut Controller, at: Instant, gop: u64| {
        for (h, s) in [("a", 100), ("c", 102), ("d", 103)] {
            c.on_heartbeat(heartbeat(h, s, gop), at);
        }
    };
    b_dies_at_gop_12(&mut c, t0);
    c.tick(t0);
    let _ = c.take_out();
    let hosts_now = |c: &Controller| {
        c.streams["cam1"].profiles["p360"]
            .history
            .last()
            .unwrap()
            .hosts
            .clone()
    };
    assert_eq!(hosts_now(&c), ["a", "c"]);
    // Short, with d free, but not for long enough yet.
    let t1 = t0 + after - Duration::from_secs(1);
    beat(&mut c, t1, 13);
    c.tick(t1);
    assert!(commands(&c.take_out()).is_empty(), "grown too early");
    let t2 = t0 + after + Duration::from_secs(1);
    beat(&mut c, t2, 14);
    c.tick(t2);
    let cmds = commands(&c.take_out());
    assert_eq!(cmds.len(), 1, "only the newcomer is prepared: {cmds:?}");
    assert_eq!(cmds[0].0, "d");
    c.on_ack(ack("d", &cmds[0].1.id, 14), t2);
    let outs = c.take_out();
    let l = layouts(&outs);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].history.last().unwrap().hosts, ["a", "c", "d"]);
    // Whole again: a new free host and more ticks grow nothing.
    c.on_birth(birth("e", 104), t2);
    let t3 = t2 + after * 4;
    beat(&mut c, t3, 20);
    c.on_heartbeat(heartbeat("e", 104, 20), t3);
    c.tick(t3);
    assert!(commands(&c.take_out()).is_empty());
    assert_eq!(hosts_now(&c), ["a", "c", "d"]);
}

/// A newcomer that never gets ready: the layout stays as it is (no new epoch with the same
/// hosts), the newcomer is released, and the next try waits twice as long.
#[test]
fn a_regrow_whose_newcomer_is_never_ready_changes_nothing_and_backs_off() {
    let (mut c, t0) = started(0);
    let after = c.cfg.regrow_after.unwrap();
    let prepare = c.cfg.prepare_timeout;
    // The holders past the re-deal's switch GOP (14).
    let beat = |c: &mut Controller, at: Instant| {
        for (h, s) in [("a", 100), ("c", 102), ("d", 103)] {
            c.on_heartbeat(heartbeat(h, s, 20), at);
        }
    };
    b_dies_at_gop_12(&mut c, t0);
    c.tick(t0);
    let _ = c.take_out();
    let prepares = |outs: &[Out]| -> Vec<String> {
        commands(outs)
            .into_iter()
            .filter(|(_, cmd)| matches!(cmd.kind, CommandKind::Prepare { .. }))
            .map(|(h, _)| h)
            .collect()
    };
    let t1 = t0 + after + Duration::from_secs(1);
    beat(&mut c, t1);
    c.tick(t1);
    assert_eq!(prepares(&c.take_out()), ["d"], "the first try");
    // d never acks: at the prepare deadline nothing is committed.
    let t2 = t1 + prepare + Duration::from_secs(1);
    beat(&mut c, t2);
    c.tick(t2);
    let outs = c.take_out();
    assert!(
        layouts(&outs).is_empty(),
        "a layout epoch with the same hosts"
    );
    assert!(!c.busy("cam1", "p360"));
    assert!(c.hosts["d"].tasks.is_empty(), "the newcomer is released");
    assert_eq!(
        c.streams["cam1"].profiles["p360"].history.len(),
        2,
        "start and re-deal only"
    );
    // The second try comes twice the wait after the first one's deadline, not before.
    let t3 = t1 + prepare + after * 2 - Duration::from_secs(1);
    beat(&mut c, t3);
    c.tick(t3);
    assert!(prepares(&c.take_out()).is_empty(), "tried again too soon");
    let t4 = t1 + prepare + after * 2 + Duration::from_secs(1);
    beat(&mut c, t4);
    c.tick(t4);
    assert_eq!(prepares(&c.take_out()), ["d"], "the second try");
}

#[test]
fn regrowing_is_off_when_the_config_says_never() {
    let (mut c, t0) = started(0);
    c.cfg.regrow_after = None;
    c.on_death(
        Death {
            host: "b".into(),
            seq: 101,
        },
        t0,
    );
    let _ = c.take_out();
    for secs in [0, 30, 600] {
        let t = t0 + Duration::from_secs(secs);
        for (h, s) in [("a", 100), ("c", 102), ("d", 103)] {
            c.on_heartbeat(heartbeat(h, s, 12 + secs), t);
        }
        c.tick(t);
    }
    let outs = c.take_out();
    let prepares: Vec<_> = commands(&outs)
        .into_iter()
        .filter(|(_, cmd)| matches!(cmd.kind, CommandKind::Prepare { .. }))
        .collect();
    assert!(prepares.is_empty(), "{prepares:?}");
    assert!(layouts(&outs).is_empty());
    assert_eq!(
        c.streams["cam1"].profiles["p360"]
            .history
            .last()
            .unwrap()
            .hosts,
        ["a", "c"]
    );
}

fn birth_with_encoder(host: &str, seq: u64, x264: &str) -> Birth {
    let mut b = birth(host, seq);
    b.versions.encoders.insert("h264".into(), x264.into());
    b
}

#[test]
fn one_profile_never_mixes_encoder_versions() {
    let t0 = Instant::now();
    let mut c = Controller::new(Config::default(), versions(), 1);
    // The newer encoder host is first in placement order (ties go by id).
    c.on_birth(birth_with_encoder("a", 100, "x264enc 1.24.0"), t0);
    c.on_birth(birth_with_encoder("b", 101, "x264enc 1.22.0"), t0);
    c.on_birth(birth_with_encoder("c", 102, "x264enc 1.24.0"), t0);
    c.on_birth(birth_with_encoder("d", 103, "x264enc 1.22.0"), t0);
    c.on_birth(birth_with_encoder("e", 104, "x264enc 1.22.0"), t0);
    c.add_stream(stream(2, 0), t0).unwrap();
    let outs = c.take_out();
    let prepared: Vec<String> = commands(&outs).into_iter().map(|(h, _)| h).collect();
    assert_eq!(
        prepared,
        ["a", "c"],
        "a new layout takes hosts of one encoder version"
    );
    for (h, cmd) in commands(&outs) {
        c.on_ack(ack(&h, &cmd.id, 5), t0);
    }
    let _ = c.take_out();
    // A handoff may only go to a host of the same version.
    let err = c
        .start_handoff("cam1", "p360", "a", Some("b"), t0)
        .unwrap_err();
    assert!(
        err.contains("x264enc 1.22.0") && err.contains("x264enc 1.24.0"),
        "{err}"
    );
    assert!(
        c.start_handoff("cam1", "p360", "a", None, t0).is_err(),
        "no 1.24 spare left"
    );
    assert_eq!(
        c.encoder_of("b", "cam1", "p360").as_deref(),
        Some("x264enc 1.22.0")
    );
    // A 1.24 spare joins: the handoff finds it.
    c.on_birth(birth_with_encoder("f", 105, "x264enc 1.24.0"), t0);
    assert_eq!(c.start_handoff("cam1", "p360", "a", None, t0).unwrap(), "f");
}

#[test]
fn host_history_samples_are_labelled_by_deaths_and_persisted() {
    let t0 = Instant::now();
    let mut c = Controller::new(Config::default(), versions(), 1);
    c.on_birth(birth("a", 100), t0);
    c.on_birth(birth("b", 101), t0);
    c.rescore(t0);
    assert!(c.take_samples().is_empty(), "intervals just opened");
    c.on_death(
        Death {
            host: "b".into(),
            seq: 101,
        },
        t0 + Duration::from_secs(60),
    );
    let later = t0 + c.cfg.history_interval;
    c.rescore(later);
    let samples = c.take_samples();
    let label = |h: &str| samples.iter().find(|s| s.host == h).map(|s| s.label);
    assert_eq!(label("a"), Some(false));
    assert_eq!(label("b"), Some(true), "b died in its interval");
    assert!(samples.iter().all(|s| s.inputs.sessions == 1));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    store.append_samples(&samples).unwrap();
    store.append_samples(&samples[..1]).unwrap();
    let back = store.load_samples().unwrap();
    assert_eq!(back.len(), 3);
    assert_eq!(back[..2], samples[..]);
}

#[test]
fn holders_must_reach_a_layout_before_it_is_changed_again() {
    let (mut c, t0) = started(0);
    // Acks said GOPs 5-7; the layout starts at GOP 9.
    assert!(!c.holders_reached_layout("cam1", "p360"));
    for (h, s) in [("a", 100), ("b", 101)] {
        c.on_heartbeat(heartbeat(h, s, 9), t0);
    }
    assert!(
        !c.holders_reached_layout("cam1", "p360"),
        "c is still before GOP 9"
    );
    c.on_heartbeat(heartbeat("c", 102, 10), t0);
    assert!(c.holders_reached_layout("cam1", "p360"));
}

/// Hosts a, b on x264 1.22 hold a 2-slot profile; the given others are free.
fn two_holders_on_old_encoder(others: &[(&str, &str)]) -> (Controller, Instant) {
    let t0 = Instant::now();
    let mut c = Controller::new(Config::default(), versions(), 1);
    c.on_birth(birth_with_encoder("a", 100, "x264enc 1.22.0"), t0);
    c.on_birth(birth_with_encoder("b", 101, "x264enc 1.22.0"), t0);
    c.add_stream(stream(2, 0), t0).unwrap();
    for (h, cmd) in commands(&c.take_out()) {
        c.on_ack(ack(&h, &cmd.id, 5), t0);
    }
    assert_eq!(layouts(&c.take_out())[0].history[0].hosts, ["a", "b"]);
    for (i, (h, v)) in others.iter().enumerate() {
        c.on_birth(birth_with_encoder(h, 200 + i as u64, v), t0);
    }
    for h in ["a", "b"] {
        c.on_heartbeat(heartbeat(h, if h == "a" { 100 } else { 101 }, 8), t0);
    }
    let _ = c.take_out();
    (c, t0)
}

#[test]
fn emptying_a_host_migrates_the_whole_profile_to_the_new_encoder_in_one_epoch() {
    let (mut c, t0) =
        two_holders_on_old_encoder(&[("c", "x264enc 1.24.0"), ("d", "x264enc 1.24.0")]);
    c.cordon("a", true);
    assert_eq!(c.move_off("a", t0), Ok(1), "the slot is on its way");
    let outs = c.take_out();
    let prepared: Vec<String> = commands(&outs).into_iter().map(|(h, _)| h).collect();
    assert_eq!(prepared, ["c", "d"], "both updated hosts are prepared");
    assert!(
        layouts(&outs).is_empty(),
        "nothing switches before they are ready"
    );
    assert_eq!(c.move_off("a", t0), Ok(1), "one operation at a time");
    assert!(c.take_out().is_empty());
    for (h, cmd) in commands(&outs) {
        c.on_ack(ack(&h, &cmd.id, 9), t0);
    }
    let outs = c.take_out();
    let e = layouts(&outs)[0].history.last().unwrap().clone();
    assert_eq!(e.hosts, ["c", "d"], "one epoch, only new-version hosts");
    assert_eq!((e.epoch, e.from_gop), (2, 11));
    let mut drains = Vec::new();
    for (h, cmd) in commands(&outs) {
        if let CommandKind::Drain { last_gop, .. } = cmd.kind {
            drains.push((h, last_gop));
        }
    }
    drains.sort();
    assert_eq!(
        drains,
        [("a".to_string(), 10), ("b".to_string(), 10)],
        "both old holders encode up to the GOP before the switch"
    );
    // Once the host stops reporting the task, it is empty.
    let mut hb = heartbeat("a", 100, 11);
    hb.tasks.clear();
    c.on_heartbeat(hb, t0);
    assert_eq!(c.move_off("a", t0), Ok(0));
    assert!(
        !c.free_hosts().any(|h| h == "a"),
        "a cordoned host takes no new slot while it waits for its update"
    );
}

#[test]
fn emptying_a_host_without_a_spare_deals_its_slot_to_the_other_holders() {
    let (mut c, t0) = two_holders_on_old_encoder(&[("c", "x264enc 1.24.0")]);
    c.cordon("a", true);
    assert_eq!(c.move_off("a", t0), Ok(1));
    let outs = c.take_out();
    let e = layouts(&outs)[0].history.last().unwrap().clone();
    assert_eq!(
        e.hosts,
        ["b"],
        "no compatible spare and too few updated hosts: shrink"
    );
    assert_eq!(e.from_gop, 10, "furthest holder at GOP 8 + margin 2");
    let drains: Vec<_> = commands(&outs)
        .into_iter()
        .filter_map(|(h, cmd)| match cmd.kind {
            CommandKind::Drain { last_gop, .. } => Some((h, last_gop)),
            _ => None,
        })
        .collect();
    assert_eq!(drains, [("a".to_string(), 9)]);
    // The last holder cannot leave while no host can take its profile over.
    c.on_heartbeat(heartbeat("b", 101, 10), t0);
    c.cordon("b", true);
    c.cordon("c", true);
    let err = c.move_off("b", t0).unwrap_err();
    assert!(err.contains("last holder"), "{err}");
    assert!(c.take_out().is_empty(), "nothing moved");
    // Once the updated host may take slots, the profile moves over to it whole.
    c.cordon("c", false);
    assert_eq!(c.move_off("b", t0), Ok(1));
    let prepared: Vec<String> = commands(&c.take_out())
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    assert_eq!(prepared, ["c"]);
}

/// (host, slot, epoch, switch GOP, until GOP) of every copy-only task in `outs`' assignments.
fn backups_in(outs: &[Out]) -> Vec<(String, u32, u64, u64, Option<u64>)> {
    let mut v: Vec<_> = assignments(outs)
        .into_iter()
        .flat_map(|a| {
            a.tasks
                .into_iter()
                .filter(|t| t.role == TaskRole::Copy)
                .map(move |t| {
                    assert_eq!(t.redundancy, 0, "one copy per GOP");
                    (
                        a.host.clone(),
                        t.slot_index,
                        t.layout_epoch,
                        t.switch_gop,
                        t.until_gop,
                    )
                })
        })
        .collect();
    v.sort();
    v
}

#[test]
fn bronze_hosts_back_up_every_slot_and_follow_the_layout() {
    use gopswarm_orchestrator::score::Tier;
    let (mut c, t0) = started(0);
    for (i, h) in ["e", "f", "g"].iter().enumerate() {
        c.on_birth(birth(h, 110 + i as u64), t0);
    }
    for h in ["d", "e", "f"] {
        c.hosts.get_mut(h).unwrap().tier = Some(Tier::Bronze);
    }
    c.hosts.get_mut("g").unwrap().tier = Some(Tier::Silver);
    let _ = c.take_out();

    c.assign_backups();
    let outs = c.take_out();
    assert_eq!(
        backups_in(&outs),
        [
            ("d".into(), 0, 1, 9, None),
            ("e".into(), 1, 1, 9, None),
            ("f".into(), 2, 1, 9, None),
        ],
        "each slot of epoch 1 backed up by a bronze host; silver g keeps its room for primaries"
    );
    assert!(c.hosts["g"].tasks.is_empty());
    assert!(
        commands(&outs).is_empty(),
        "backups travel in assignments only"
    );
    // The layout names them (the merger takes copies only from named backups), with no new
    // epoch.
    let named = |outs: &[Out]| -> Vec<Vec<(u32, String)>> {
        let l = layouts(outs).pop().expect("the layout, published again");
        l.history
            .iter()
            .map(|e| e.backups.iter().map(|b| (b.slot, b.host.clone())).collect())
            .collect()
    };
    assert_eq!(
        named(&outs),
        [vec![(0, "d".into()), (1, "e".into()), (2, "f".into())]]
    );
    assert_eq!(c.stats.backups_given, 3);
    c.assign_backups();
    assert!(
        c.take_out().is_empty(),
        "nothing changes while the layout holds"
    );

    // b (slot 1) dies: epoch 2 from GOP 14 over a and c.
    b_dies_at_gop_12(&mut c, t0);
    let _ = c.take_out();
    c.assign_backups();
    let outs = c.take_out();
    assert_eq!(
        backups_in(&outs),
        [
            ("d".into(), 0, 2, 14, None),
            ("e".into(), 1, 2, 14, None),
            // Slot 2 is gone from epoch 2: f keeps copying it up to the switch.
            ("f".into(), 2, 1, 9, Some(13)),
        ]
    );
    assert_eq!(
        named(&outs),
        [
            vec![(0, "d".into()), (1, "e".into()), (2, "f".into())],
            vec![(0, "d".into()), (1, "e".into())]
        ],
        "epoch 1 keeps its backups; epoch 2 names the ones re-pointed at it"
    );
    assert_eq!(c.stats.backups_taken, 1);

    // e climbs to silver: its backup is taken back so it can hold a primary.
    c.hosts.get_mut("e").unwrap().tier = Some(Tier::Silver);
    c.assign_backups();
    let outs = c.take_out();
    let a = assignments(&outs);
    let e = a
        .iter()
        .find(|a| a.host == "e")
        .expect("e's assignment changes");
    assert!(e.tasks.is_empty());
    assert!(
        backups_in(&outs).is_empty(),
        "no bronze host has room for slot 1: f still drains"
    );
    assert_eq!(named(&outs)[1], [(0, "d".into())], "e is no longer named");
    assert_eq!(c.stats.backups_taken, 2);

    // Emptying a bronze host (update, deprovision) takes its backup at once.
    assert_eq!(c.move_off("d", t0), Ok(0));
    assert!(c.hosts["d"].tasks.is_empty());
    assert_eq!(c.stats.backups_taken, 3);
}

/// `started(0)` with e and f joined and d, e, f bronze, each backing up one slot: no host
/// is free.
fn every_slot_backed_up() -> (Controller, Instant) {
    use gopswarm_orchestrator::score::Tier;
    let (mut c, t0) = started(0);
    for (i, h) in ["e", "f"].iter().enumerate() {
        c.on_birth(birth(h, 110 + i as u64), t0);
    }
    for h in ["d", "e", "f"] {
        c.hosts.get_mut(h).unwrap().tier = Some(Tier::Bronze);
    }
    c.assign_backups();
    let _ = c.take_out();
    assert_eq!(c.stats.backups_given, 3);
    assert_eq!(
        c.free_hosts().count(),
        0,
        "every host holds a slot or a backup"
    );
    (c, t0)
}

#[test]
fn a_backup_gives_way_to_a_primary_that_finds_no_free_host() {
    let (mut c, t0) = every_slot_backed_up();
    // a's slot must move and no host is free: d's backup gives way.
    let to = c
        .start_handoff("cam1", "p360", "a", None, t0)
        .expect("a backup host takes the slot");
    assert_eq!(to, "d");
    let outs = c.take_out();
    let d = &c.hosts["d"].tasks;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].role, TaskRole::Standby, "d prepares as the primary");
    let prepares: Vec<String> = commands(&outs)
        .into_iter()
        .filter(|(_, cmd)| matches!(cmd.kind, CommandKind::Prepare { .. }))
        .map(|(h, _)| h)
        .collect();
    assert_eq!(prepares, ["d"]);
    let d_assignment = assignments(&outs)
        .into_iter()
        .find(|a| a.host == "d")
        .expect("d's backup is taken back on the wire");
    assert!(d_assignment.tasks.is_empty());
    assert_eq!(c.stats.backups_taken, 1);
    // e and f still back up slots 1 and 2.
    for (h, slot) in [("e", 1), ("f", 2)] {
        let t = &c.hosts[h].tasks;
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].role, t[0].slot_index), (TaskRole::Copy, slot), "{h}");
    }
}

#[test]
fn only_live_backup_hosts_in_service_give_way() {
    let (mut c, t0) = every_slot_backed_up();
    c.hosts.get_mut("d").unwrap().cordoned = true;
    c.hosts.get_mut("e").unwrap().alive = false;
    assert_eq!(
        c.start_handoff("cam1", "p360", "a", None, t0),
        Ok("f".into())
    );
    assert_eq!(c.stats.backups_taken, 1);
    assert_eq!(
        c.hosts["d"].tasks[0].role,
        TaskRole::Copy,
        "cordoned d keeps its copy"
    );
}

#[test]
fn the_state_database_and_a_folder_made_for_it_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/state.redb");
    Store::open(&path).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    // An existing database made readable by others is made private again.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Store::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn dead_hosts_with_nothing_to_do_are_forgotten_the_others_kept() {
    let (mut c, t0) = started(1);
    let seq = |h: &str| c.hosts[h].seq;
    let seqs: Vec<(&str, u64)> = ["a", "b", "c"].iter().map(|h| (*h, seq(h))).collect();
    // a, b and c (the layout) keep beating; d (a spare, no task) falls silent and dies.
    let beat = |c: &mut Controller, at: Instant| {
        for (h, s) in &seqs {
            c.on_heartbeat(heartbeat(h, *s, 20), at);
        }
        c.tick(at);
    };
    beat(&mut c, t0 + Duration::from_secs(10));
    assert!(!c.hosts["d"].alive);
    assert!(c.hosts.contains_key("d"), "forgotten at once");
    c.take_dirty();
    let mut at = t0 + Duration::from_secs(10);
    let end = t0 + c.cfg.forget_dead_after + Duration::from_secs(20);
    while at < end {
        at += Duration::from_secs(1);
        beat(&mut c, at);
    }
    assert!(!c.hosts.contains_key("d"), "a dead spare is kept for good");
    for h in ["a", "b", "c"] {
        assert!(c.hosts[h].alive, "{h} died");
    }
    let (dirty, _) = c.take_dirty();
    assert!(dirty.contains(&"d".to_string()), "the store is not told");
}

#[test]
fn a_forgotten_host_leaves_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let (c, _) = started(1);
    store
        .save(
            1,
            1,
            &[("a", c.hosts.get("a")), ("d", c.hosts.get("d"))],
            &[],
        )
        .unwrap();
    store.save(1, 1, &[("d", None)], &[]).unwrap();
    let ids: Vec<String> = store
        .load()
        .unwrap()
        .hosts
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(ids, ["a"]);
}
