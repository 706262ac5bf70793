// SPDX-License-Identifier: MPL-2.0
//! `gopswarm learn`: the learned disconnect model, trained on the orchestrator's host history.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct LearnOptions {
    /// State database of the orchestrator
    #[arg(long, default_value = "gopswarm-state.redb")]
    state: PathBuf,
    /// Where to write the model (JSON)
    #[arg(long, default_value = "disconnect-model.json")]
    out: PathBuf,
}

pub fn run(o: LearnOptions) -> Result<()> {
    let r = gopswarm::swarm::learn::run(&o.state, &o.out)?;
    println!("{}", serde_json::to_string_pretty(&r)?);
    println!("model written to {}", o.out.display());
    Ok(())
}
