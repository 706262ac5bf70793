//! gopswarm orchestrator: the swarm controller ([`controller`]), its state store ([`store`]),
//! the embedded MQTT broker ([`broker`]) and the process that ties them to MQTT ([`service`]);
//! swarm intelligence: host scores and tiers ([`score`], [`fleet`]), load forecasts
//! ([`forecast`] on [`traces`]), a learned disconnect model ([`learn`] on [`churn`]),
//! provisioners ([`provision`]) and the simulator ([`sim`]). Prometheus metrics are
//! exported into a `gopswarm_metrics::Registry`.

pub mod bench;
pub mod broker;
pub mod churn;
pub mod controller;
pub mod fleet;
pub mod forecast;
pub mod learn;
pub mod provision;
pub mod rollout;
pub mod score;
pub mod service;
pub mod sim;
pub mod store;
pub mod traces;

pub use controller::{Config, Controller};
