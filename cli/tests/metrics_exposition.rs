// SPDX-License-Identifier: MPL-2.0
//! The Prometheus exposition of the orchestrator, a host and a merger stays what dashboards
//! expect: every metric family with its type, label names and HELP text, scraped over HTTP
//! from real processes in a running swarm and compared with `metrics_exposition.txt`.
//!
//! Each line of that file is `ROLE NAME TYPE [LABELS] HELP`. Families that appear only in some
//! runs (a host's jitter once it has two round trips, rollout and scaler gauges with a
//! provisioner) start with `?`: they may be missing, but when exposed must match. After an
//! intended change (a new metric, a reworded HELP), regenerate the file with
//! `GOPSWARM_BLESS=1 cargo test -p gopswarm --test metrics_exposition`, mark the optional
//! families again and review the diff.

use gopswarm_test_support::swarm::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// One family as exposed: `# TYPE`, `# HELP` and the label names its samples carry.
#[derive(Debug, Default, PartialEq, Eq)]
struct Family {
    kind: String,
    help: String,
    labels: BTreeSet<String>,
}

/// Families by name, read strictly from the text format: a sample without a TYPE line, or a
/// family with two different TYPE lines, fails the test.
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.into()).or_default().help = help.into();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE without a type");
            let f = out.entry(name.into()).or_default();
            assert!(f.kind.is_empty(), "two TYPE lines for {name}");
            f.kind = kind.into();
        } else if line.starts_with('#') {
            continue;
        } else {
            let name_end = line.find(['{', ' ']).expect("sample without a value");
            let name = &line[..name_end];
            let f = out
                .get_mut(name)
                .unwrap_or_else(|| panic!("sample {name} before its TYPE line:\n{text}"));
            if line[name_end..].starts_with('{') {
                let set = &line[name_end + 1..line.rfind('}').expect("unclosed label set")];
                // Label values here are host, stream and profile ids: no quotes or commas.
                for pair in set.split(',').filter(|p| !p.is_empty()) {
                    let (k, _) = pair.split_once('=').expect("label without '='");
                    f.labels.insert(k.into());
                }
            }
        }
    }
    out
}

fn render(role: &str, families: &BTreeMap<String, Family>) -> String {
    families
        .iter()
        .map(|(name, f)| {
            let labels: Vec<&str> = f.labels.iter().map(String::as_str).collect();
            format!(
                "{role} {name} {} [{}] {}\n",
                f.kind,
                labels.join(","),
                f.help
            )
        })
        .collect()
}

/// `GET /metrics` over a plain socket: the status line and the body.
fn scrape(port: u16) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// Scrapes `port` until the families of `role` in `golden` are all exposed (some appear only
/// after the first heartbeat or round-trip probe), or `timeout`; the last scrape's families.
fn wait_for_families(
    role: &str,
    port: u16,
    golden: &str,
    timeout: Duration,
) -> BTreeMap<String, Family> {
    let wanted: BTreeSet<&str> = golden
        .lines()
        .filter_map(|l| l.strip_prefix(role)?.strip_prefix(' ')?.split(' ').next())
        .collect();
    let golden_label_count = |name: &str| golden_label_count(golden, role, name);
    let until = Instant::now() + timeout;
    loop {
        let seen = match scrape(port) {
            Some((status, body)) => {
                assert!(status.starts_with("HTTP/1.1 200"), "{role}: {status}");
                families(&body)
            }
            None => BTreeMap::new(),
        };
        let complete = wanted.iter().all(|w| {
            seen.get(*w)
                .is_some_and(|f| f.labels.len() == golden_label_count(w))
        });
        if complete || Instant::now() > until {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// How many label names the golden file gives `role`'s family `name` (a labelled family is
/// complete only once a sample with its labels is out).
fn golden_label_count(golden: &str, role: &str, name: &str) -> usize {
    golden
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(5, ' ');
            (parts.next() == Some(role) && parts.next() == Some(name)).then(|| {
                let labels = parts.nth(1).unwrap_or("[]");
                labels
                    .trim_matches(['[', ']'])
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .count()
            })
        })
        .unwrap_or(0)
}

#[test]
fn orchestrator_host_and_merger_expose_the_same_metric_families() {
    let _serial = serial();
    let golden_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/metrics_exposition.txt");
    let bless = std::env::var_os("GOPSWARM_BLESS").is_some();
    let golden = std::fs::read_to_string(&golden_path).unwrap_or_default();

    let (orch_port, host_port, merge_port) = (free_port(), free_port(), free_port());
    let mut swarm = Swarm::start(
        "metrics-exposition",
        SwarmOptions {
            hosts: 2,
            slots: 2,
            redundancy: 0,
            gop_s: 1.0,
            duration_s: 30.0,
            orchestrator_args: vec!["--metrics-listen".into(), format!("127.0.0.1:{orch_port}")],
            host_args: vec![(
                0,
                vec!["--metrics-listen".into(), format!("127.0.0.1:{host_port}")],
            )],
            merger_args: vec!["--metrics-listen".into(), format!("127.0.0.1:{merge_port}")],
            ..Default::default()
        },
    );
    if bless {
        // Give the optional families their chance to show up.
        std::thread::sleep(Duration::from_secs(20));
    }
    let budget = Duration::from_secs(40);
    let mut exposed = String::new();
    for (role, port) in [
        ("orchestrator", orch_port),
        ("host", host_port),
        ("merger", merge_port),
    ] {
        exposed += &render(role, &wait_for_families(role, port, &golden, budget));
    }
    swarm.finish();

    if bless {
        std::fs::write(&golden_path, &exposed).unwrap();
        return;
    }
    let known: BTreeSet<&str> = golden
        .lines()
        .map(|l| l.strip_prefix('?').unwrap_or(l))
        .collect();
    let required: BTreeSet<&str> = golden.lines().filter(|l| !l.starts_with('?')).collect();
    let got: BTreeSet<&str> = exposed.lines().collect();
    let diff: Vec<String> = required
        .difference(&got)
        .map(|l| format!("- {l}"))
        .chain(got.difference(&known).map(|l| format!("+ {l}")))
        .collect();
    assert!(
        diff.is_empty(),
        "exposed metric families differ from {}:\n{}",
        golden_path.display(),
        diff.join("\n")
    );
}
