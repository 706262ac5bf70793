// SPDX-License-Identifier: MPL-2.0
//! `gopswarm merge`: the merger daemon (`gopswarm-agents`), its summary printed at the end.

use anyhow::{Context, Result};
use gopswarm_agents::{daemon, merge};

/// Runs until the stream ended or a signal; prints the summary as JSON (and writes it to
/// `--summary`).
pub fn run(o: merge::MergeOptions) -> Result<()> {
    daemon::init_logging();
    let path = o.summary.clone();
    let s = daemon::runtime()?.block_on(merge::run(o, daemon::interrupted()))?;
    let json = serde_json::to_string_pretty(&s)?;
    println!("{json}");
    if let Some(path) = path {
        std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
