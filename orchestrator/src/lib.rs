// SPDX-License-Identifier: MPL-2.0
//! gopswarm orchestrator: the swarm controller ([`controller`]), its state store ([`store`]),
//! the embedded MQTT broker ([`broker`]), the process that ties them to MQTT ([`service`]) and
//! the lease a standby takes over by ([`standby`]);
//! swarm intelligence: host scores and tiers ([`score`], [`controller::fleet`]), load forecasts
//! ([`forecast`]), a learned disconnect model ([`learn`]), provisioners ([`provision`]),
//! scaling and rollouts ([`rollout`]), proactive balancing on the forecast ([`proactive`]).
//! Prometheus metrics are exported into a `gopswarm_metrics::Registry`.
//!
//! The simulator, synthetic traces, benchmarks and backtests live in the `gopswarm-sim` crate,
//! which drives this one; nothing here imports it (checked by `tests/structure.rs`).

pub mod broker;
pub mod controller;
pub mod enrol;
pub mod forecast;
pub mod learn;
pub mod proactive;
pub mod provision;
pub mod rate;
pub mod rollout;
pub mod score;
pub mod service;
pub mod standby;
pub mod store;
