// SPDX-License-Identifier: MPL-2.0
//! Running pipelines in-process: the agents' pipeline helpers, and the shipped pipelines.

pub use gopswarm_agents::pipeline::*;

use anyhow::Result;
use std::time::Duration;

/// Load a shipped pipeline, expand it, and play it.
pub fn shipped(name: &str, vars: &[(&str, &str)], timeout: Duration) -> Result<Outcome> {
    let words = crate::pipelines::load(name)?.expand(vars)?;
    let pipeline = parse_words(&words)?;
    play(&pipeline, timeout)
}
