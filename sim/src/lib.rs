// SPDX-License-Identifier: MPL-2.0
//! gopswarm swarm simulator and benchmarks. It drives the real orchestrator
//! (`gopswarm_orchestrator`) and is never imported by it:
//!
//! - [`sim`]: the discrete-event swarm simulator and the reactive and proactive policies it
//!   compares (`gopswarm simulate`);
//! - [`churn`]: simulated hosts that join, drop out, come back and leave, and the host
//!   history ([`churn::history`]) the learned disconnect model is tested on;
//! - [`traces`]: seeded synthetic demand traces (daily cycle, events, bursts);
//! - [`backtest`]: walk-forward backtests of the load forecaster on those traces;
//! - [`learn_compare`]: the learned disconnect model against the hand score on held-out
//!   simulated hosts;
//! - [`bench`]: control-plane benchmarks (`gopswarm bench-control`).

pub mod backtest;
pub mod bench;
pub mod churn;
pub mod learn_compare;
pub mod sim;
pub mod traces;
