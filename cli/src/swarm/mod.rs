// SPDX-License-Identifier: MPL-2.0
//! The swarm commands of the CLI: the demo that runs every role on this machine, complexity
//! measurement, explanations of scores, the disconnect model, the simulator's report. The
//! roles themselves (source, host, merger) are in `gopswarm-agents`.

pub mod complexity;
pub mod demo;
pub mod explain;
pub mod learn;
pub mod simulate;
pub mod timeline;

pub use gopswarm_agents::daemon::{LogFormat, number_or_dash, set_log_format};
pub use gopswarm_agents::pipeline::check_profile;
