//! gopswarm orchestrator: the swarm controller ([`controller`]), its state store ([`store`]),
//! the embedded MQTT broker ([`broker`]) and the process that ties them to MQTT ([`service`]).

pub mod bench;
pub mod broker;
pub mod controller;
pub mod fleet;
pub mod metrics;
pub mod provision;
pub mod score;
pub mod service;
pub mod store;

pub use controller::{Config, Controller};
