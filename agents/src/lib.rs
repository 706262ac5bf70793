// SPDX-License-Identifier: MPL-2.0
//! The gopswarm daemons that run on machines, one module per role. The `gopswarm` command
//! line parses each role's options (a `clap::Args` struct next to the role) and calls `run`.
//!
//! - [`source`]: serves a clip as a live, looped mezzanine over TCP (GDP), so every host that
//!   connects sees the same running time for the same frame and agrees on the GOP grid.
//! - [`host`]: an encoder host; joins the swarm over MQTT, encodes the GOPs of the slots it is
//!   assigned and publishes them as chunks, answers resend requests, reports heartbeats.
//! - [`merge`]: the merger of one (stream, profile); fences, orders and merges the hosts'
//!   chunks back into one stream, written as MP4 and HLS, and reports what it lost.
//!
//! Shared by the roles: [`pipeline`] (GStreamer pipelines with the gopswarm plugin registered
//! statically), [`daemon`] (logging, signals, runtime) and [`options`] (value parsers of the
//! command-line options).

pub mod chunk_tls;
pub mod daemon;
pub mod host;
pub mod merge;
pub mod options;
pub mod pipeline;
pub mod source;
