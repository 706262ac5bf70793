// SPDX-License-Identifier: MPL-2.0
//! `gopswarm init`: a swarm's keys on disk as the docs describe them, private from the first
//! byte, and nothing secret printed.

use gopswarm_test_support::swarm::BIN;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

fn init(args: &[&str]) -> String {
    let out = Command::new(BIN).arg("init").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_private_keys_tokens_and_a_trust_file_and_prints_no_secret() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("init-keys");
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let mut printed = init(&[d, "--tokens", "2"]);
    printed += &init(&[d, "--add-tokens", "1"]);
    printed += &init(&[d, "--token-for", "host-9"]);
    printed += &init(&[d, "--add-operator", "alice"]);
    for p in ["", "tokens", "operators", "mergers", "issued/host-9"] {
        assert_eq!(mode(&dir.join(p)), 0o700, "{p}");
    }
    let secrets = [
        "orchestrator.key",
        "operators/operator.key",
        "operators/alice.key",
        "mergers/merger.key",
        "tokens/1.token",
        "tokens/2.token",
        "tokens/3.token",
        "tokens/host-9.token",
        "issued/host-9/enrol.token",
        "srt.passphrase",
        "issued/host-9/srt.passphrase",
    ];
    for s in secrets {
        assert_eq!(mode(&dir.join(s)), 0o600, "{s}");
        let text = std::fs::read_to_string(dir.join(s)).unwrap();
        let secret = text.trim().split(['.', '@']).nth(1).unwrap_or(text.trim());
        assert!(!printed.contains(secret), "{s} printed");
    }
    let trust: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("trust.json")).unwrap()).unwrap();
    assert!(trust["operators"]["alice"].is_string(), "{trust}");
    assert!(trust["mergers"]["merger"].is_string(), "{trust}");
    assert!(dir.join("issued/host-9/trust.json").exists());
    // An SRT passphrase is added to an older key directory once, never replaced.
    std::fs::remove_file(dir.join("srt.passphrase")).unwrap();
    printed += &init(&[d, "--add-srt-passphrase"]);
    assert_eq!(mode(&dir.join("srt.passphrase")), 0o600);
    let passphrase = std::fs::read_to_string(dir.join("srt.passphrase")).unwrap();
    assert!(!printed.contains(passphrase.trim()));
    let again = Command::new(BIN)
        .args(["init", d, "--add-srt-passphrase"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert_eq!(
        std::fs::read_to_string(dir.join("srt.passphrase")).unwrap(),
        passphrase
    );
    // Never over an existing swarm.
    let again = Command::new(BIN).args(["init", d]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a swarm's keys"));
    // A daemon without keys says what to do.
    let out = Command::new(BIN)
        .args(["host", "--id", "h1", "--broker", "mqtt://127.0.0.1:1"])
        .env_remove("GOPSWARM_KEYS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gopswarm init DIR"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
