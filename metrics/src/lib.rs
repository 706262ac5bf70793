// SPDX-License-Identifier: MPL-2.0
//! gopswarm metrics: the process's Prometheus registry and its `/metrics` endpoint.
//!
//! A thin layer over maintained crates: series are stored and encoded by
//! [`prometheus-client`](prometheus_client) (Prometheus text format 0.0.4), and served by
//! [axum] on hyper. What this crate adds is what the swarm needs on top:
//!
//! * [`Registry`]: families are found or registered by name at the call site that updates
//!   them, counters can mirror a total counted elsewhere (a host's own report), families with
//!   labels can drop a series (a host that left), and names come out exactly as written
//!   (`gopswarm_births_total`, HELP text verbatim) so dashboards keep working.
//! * [`serve`]: the endpoint with the bounds a scrape endpoint on the open network needs:
//!   request heads over 8 KiB are refused, a connection gets 5 s all told, at most 64 are
//!   served at once, and [`MetricsServer::shutdown`] stops it gracefully.
//!
//! Host and stream names reach the registry as label values from MQTT messages, i.e. from
//! outside the process, so nothing here panics on odd input: values are escaped by
//! prometheus-client, the number of series per family is capped, and every update reports a
//! [`MetricsError`] instead of asserting.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use gopswarm_metrics::{Registry, serve};
//! use std::sync::Arc;
//!
//! let registry = Arc::new(Registry::new());
//! let stability =
//!     registry.gauge("gopswarm_host_stability_score", "Stability score 0-100 of a host", &["host"])?;
//! stability.set(&["h1"], 87.5)?;
//! let server = serve(registry.clone(), "127.0.0.1:9464".parse()?).await?;
//! tracing::info!("metrics on http://{}/metrics", server.local_addr());
//! // A host that leaves takes its series with it.
//! stability.remove(&["h1"])?;
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod registry;
mod server;

pub use registry::{Counter, Gauge, MAX_SERIES_PER_FAMILY, MetricsError, Registry};
pub use server::{CONTENT_TYPE, Limits, MetricsServer, serve, serve_with};
