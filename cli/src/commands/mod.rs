// SPDX-License-Identifier: MPL-2.0
//! The CLI's own commands, one module each: its options (one `clap::Args` struct) and what it
//! does. The daemons' options live next to the daemons, in `gopswarm-agents`.

pub mod acl;
pub mod bench;
pub mod bench_control;
pub mod chunks;
pub mod control;
pub mod demo;
pub mod explain;
pub mod init;
pub mod launch;
pub mod learn;
pub mod merge;
pub mod orchestrator;
pub mod qa;
pub mod simulate;
pub mod soak;
