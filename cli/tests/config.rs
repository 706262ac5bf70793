// SPDX-License-Identifier: MPL-2.0
//! The roles' configuration through the real binary: the example configs in config/, and the
//! precedence flag > environment > file > default.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROLES: [&str; 4] = ["orchestrator", "host", "merge", "source"];

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gopswarm-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// `gopswarm ARGS` with no GOPSWARM_* variable but those given.
fn gopswarm(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gopswarm"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GOPSWARM_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

/// The effective options `--print-config` prints: key -> (value, where it came from).
fn effective(args: &[&str], env: &[(&str, &str)]) -> Vec<(String, String, String)> {
    let out = gopswarm(args, env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|l| {
            if let Some(unset) = l.strip_suffix(" (not set)") {
                let key = unset.trim_start_matches("# ");
                return Some((key.into(), String::new(), "not set".into()));
            }
            if l.starts_with('#') {
                return None;
            }
            let (kv, source) = l.rsplit_once("  # ").expect("key = value  # source");
            let (k, v) = kv.split_once(" = ").expect("key = value");
            Some((k.into(), v.into(), source.into()))
        })
        .collect()
}

fn get<'a>(options: &'a [(String, String, String)], key: &str) -> (&'a str, &'a str) {
    let (_, v, s) = options
        .iter()
        .find(|(k, _, _)| k == key)
        .unwrap_or_else(|| panic!("no {key} in {options:?}"));
    (v, s)
}

#[test]
fn every_example_config_loads_and_sets_every_option() {
    for role in ROLES {
        let path = examples().join(format!("{role}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        // As shipped: loads, and what it sets comes from it.
        let shipped = effective(
            &[role, "--config", path.to_str().unwrap(), "--print-config"],
            &[],
        );
        assert!(
            shipped.iter().any(|(_, _, s)| s.starts_with("file ")),
            "{role}: {shipped:?}"
        );
        // With the commented-out example values switched on, every option comes from the file:
        // an option the example does not show, or shows with a value its flag refuses, fails.
        let all: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    }) =>
                {
                    format!("{rest}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        let full = tmp(&format!("{role}-all.toml"));
        std::fs::write(&full, all).unwrap();
        let options = effective(
            &[role, "--config", full.to_str().unwrap(), "--print-config"],
            &[],
        );
        assert!(options.len() >= 4, "{role}: {options:?}");
        for (key, value, source) in &options {
            assert!(
                source.starts_with("file "),
                "config/{role}.toml does not show --{key} (it came from: {source}, {value})"
            );
        }
    }
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let file = tmp("precedence.toml");
    std::fs::write(&file, "id = \"from-file\"\nkeepalive = 5\nmax-tasks = 3\n").unwrap();
    let f = file.to_str().unwrap();
    let base = ["host", "--config", f, "--print-config"];

    let o = effective(&base, &[]);
    assert_eq!(get(&o, "keepalive"), ("5", format!("file {f}").as_str()));
    assert_eq!(get(&o, "cache-gops"), ("16", "default"));

    let env = [
        ("GOPSWARM_HOST_KEEPALIVE", "7"),
        ("GOPSWARM_HOST_CACHE_GOPS", "4"),
    ];
    let o = effective(&base, &env);
    assert_eq!(get(&o, "keepalive"), ("7", "env GOPSWARM_HOST_KEEPALIVE"));
    assert_eq!(get(&o, "cache-gops"), ("4", "env GOPSWARM_HOST_CACHE_GOPS"));
    assert_eq!(get(&o, "max-tasks"), ("3", format!("file {f}").as_str()));

    let mut flags = base.to_vec();
    flags.extend(["--keepalive", "9", "--id", "from-flag"]);
    let o = effective(&flags, &env);
    assert_eq!(get(&o, "keepalive"), ("9", "flag"));
    assert_eq!(get(&o, "id"), ("\"from-flag\"", "flag"));
    assert_eq!(get(&o, "cache-gops"), ("4", "env GOPSWARM_HOST_CACHE_GOPS"));

    // The file itself can come from the environment.
    let o = effective(&["host", "--print-config"], &[("GOPSWARM_HOST_CONFIG", f)]);
    assert_eq!(
        get(&o, "id"),
        ("\"from-file\"", format!("file {f}").as_str())
    );
}

#[test]
fn the_file_reaches_the_role() {
    // The host checks its id before any I/O: an id from the file is the one it checks.
    let file = tmp("bad-id.toml");
    std::fs::write(&file, "id = \"a/b\"\nbroker = \"mqtt://127.0.0.1:1\"\n").unwrap();
    let out = gopswarm(&["host", "--config", file.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("host id"), "{err}");
    // A JSON flag as a table: the orchestrator's tier thresholds, checked as --tiers is.
    std::fs::write(&file, "[tiers]\ngold = 50\nsilver = 80\n").unwrap();
    let out = gopswarm(&["orchestrator", "--config", file.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2)
            && err.contains("key `tiers`")
            && err.contains("silver < gold"),
        "{err}"
    );
    // Environment for a switch.
    let o = effective(
        &["orchestrator", "--print-config"],
        &[("GOPSWARM_ORCHESTRATOR_AUTOSCALE", "true")],
    );
    assert_eq!(
        get(&o, "autoscale"),
        ("true", "env GOPSWARM_ORCHESTRATOR_AUTOSCALE")
    );
}

#[test]
fn bad_config_files_fail_naming_the_file_and_the_key() {
    let file = tmp("bad.toml");
    let f = file.to_str().unwrap().to_string();
    for (role, text, want) in [
        (
            "host",
            "id = \"h\"\nmax-task = 2\n",
            "unknown key `max-task`",
        ),
        (
            "host",
            "id = \"h\"\nmax-tasks = \"two\"\n",
            "key `max-tasks`: invalid value 'two'",
        ),
        (
            "host",
            "id = \"h\"\nkeepalive = true\n",
            "key `keepalive`: expects a string or a number",
        ),
        (
            "host",
            "id = \"h\"\nbench-profile = \"h264\"\n",
            "key `bench-profile`: expects an array",
        ),
        (
            "merge",
            "pull-srt = \"yes\"\n",
            "key `pull-srt`: expects true or false",
        ),
        (
            "orchestrator",
            "[sizing]\nsi_lo = 3\n",
            "unknown key `si_lo`",
        ),
        (
            "orchestrator",
            "sizing = 3\n",
            "key `sizing`: expects a table",
        ),
        ("orchestrator", "keepalive = \n", "config file"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = gopswarm(&[role, "--config", &f], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(want) && err.contains(&f), "{text}: {err}");
    }
    let out = gopswarm(&["host", "--config", "no-such-file.toml"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("no-such-file.toml"),
        "{err}"
    );
}
