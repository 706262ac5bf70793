// SPDX-License-Identifier: MPL-2.0
//! `gopswarm simulate` as a user runs it: a small swarm for a day, with the reactive twin, and
//! what it writes.

use std::process::Command;

#[test]
fn simulate_writes_the_report_plots_and_the_placement_noise() {
    let out = std::env::temp_dir().join(format!("gopswarm-simulate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_gopswarm"))
        .args([
            "simulate",
            "--hosts",
            "80",
            "--streams",
            "12",
            "--days",
            "1",
            "--demand",
            "60",
            "--seed",
            "3",
            "--placement-noise",
            "--placement-salt",
            "5",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("Placement noise: the reactive policy run again"),
        "{stdout}"
    );

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| reactive |") && report.contains("| proactive |"));
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("comparison.json")).unwrap())
            .unwrap();
    let noise = &c["placement_noise"];
    assert_eq!(c["config"]["placement_salt"], 5);
    assert_ne!(
        noise["placement_salt"], 5,
        "the twin deals its streams in another order"
    );
    for key in ["streams_worse", "streams_worse_overload"] {
        let n = noise[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {noise}"));
        assert!(n <= 12, "{key} {n}: more streams than the swarm has");
        assert!(c[key].as_u64().unwrap() <= 12);
    }
    assert!(noise["host_hours"].as_f64().unwrap() > 0.0, "{noise}");

    // One row per policy and minute of the day.
    let csv = std::fs::read_to_string(out.join("steps.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 1440);
    for svg in ["demand.svg", "hosts.svg", "overload.svg"] {
        let s = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(
            s.starts_with("<svg") && s.trim_end().ends_with("</svg>"),
            "{svg}"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}
