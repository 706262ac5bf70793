//! Every subcommand of the CLI explains itself.

use std::process::Command;

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["qa", "--help"],
        vec!["bench", "--help"],
        vec!["chunks", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_gopswarm"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gopswarm"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert!(!out.status.success());
}
