//! Prometheus metrics for the orchestrator and the encoder hosts.
//!
//! Two halves:
//!
//! * [`Registry`]: a small thread-safe store of metric families (counters and gauges with
//!   label names) that the controller and the service update as hosts come, go and report.
//!   It renders itself in the Prometheus text exposition format 0.0.4 ([`Registry::render`]).
//! * [`serve`]: a deliberately tiny HTTP/1.1 server on tokio that answers `GET /metrics` with
//!   that rendering. A full HTTP stack would be the only reason to pull hyper or axum into the
//!   orchestrator, and a scrape endpoint needs one request per connection, no keep-alive and no
//!   request bodies, so a hand-written, strictly bounded reader is smaller and easier to audit.
//!
//! Host names and stream names reach the registry as label values from MQTT messages, i.e. from
//! outside the orchestrator, so nothing here panics on odd input: names are checked when a
//! family is registered, label values are escaped when rendered, the number of series per
//! family is capped, and every update reports a [`MetricsError`] instead of asserting.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use gopswarm_orchestrator::metrics::{Registry, serve};
//! use std::sync::Arc;
//!
//! let registry = Arc::new(Registry::new());
//! let stability =
//!     registry.gauge("gopswarm_host_stability_score", "Stability score 0-100 of a host", &["host"])?;
//! stability.set(&["h1"], 87.5)?;
//! let (bound, _server) = serve(registry.clone(), "127.0.0.1:9464".parse()?).await?;
//! tracing::info!("metrics on http://{bound}/metrics");
//! // A host that leaves takes its series with it.
//! stability.remove(&["h1"])?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Most series (label value combinations) one family may hold. Label values come from the
/// network (host ids, stream ids); without a cap a misbehaving or hostile publisher could grow
/// the registry, and every scrape, without bound.
pub const MAX_SERIES_PER_FAMILY: usize = 10_000;

/// The `Content-Type` of the text exposition format 0.0.4, as Prometheus expects it.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Kind of a metric family. Only the two kinds the swarm needs; histograms and summaries would
/// need bucket bookkeeping nobody asks for yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// Monotonic total; its name must end in `_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// Why a registry call was refused. Every variant names the metric, so a log line is enough to
/// find the offending call site.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricsError {
    /// Metric names must match `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    InvalidMetricName(String),
    /// Label names must match `[a-zA-Z_][a-zA-Z0-9_]*` and not start with `__` (reserved).
    InvalidLabelName { metric: String, label: String },
    /// The same label name twice in one family or one update.
    DuplicateLabel { metric: String, label: String },
    /// Counter names end in `_total` (the 0.0.4 convention, and what PromQL users expect).
    CounterWithoutTotalSuffix(String),
    /// The name is already registered with another type, help text or label names.
    Conflict(String),
    /// No family of that name (by-name calls only).
    UnknownMetric(String),
    /// The label values given do not match the family's label names.
    LabelMismatch {
        metric: String,
        expected: Vec<String>,
        got: Vec<String>,
    },
    /// A counter set below zero or to NaN, a negative or non-finite counter increment, or a
    /// non-finite gauge delta (which would poison the series for good).
    InvalidValue { metric: String, value: f64 },
    /// The family already holds [`MAX_SERIES_PER_FAMILY`] series.
    TooManySeries(String),
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsError::InvalidMetricName(n) => {
                write!(
                    f,
                    "invalid metric name {n:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*"
                )
            }
            MetricsError::InvalidLabelName { metric, label } => write!(
                f,
                "metric {metric}: invalid label name {label:?}: must match [a-zA-Z_][a-zA-Z0-9_]* \
                 and not start with \"__\""
            ),
            MetricsError::DuplicateLabel { metric, label } => {
                write!(f, "metric {metric}: label {label:?} given twice")
            }
            MetricsError::CounterWithoutTotalSuffix(n) => {
                write!(f, "counter {n:?}: counter names must end in \"_total\"")
            }
            MetricsError::Conflict(n) => write!(
                f,
                "metric {n} is already registered with a different type, help text or label names"
            ),
            MetricsError::UnknownMetric(n) => write!(f, "no metric named {n:?} is registered"),
            MetricsError::LabelMismatch {
                metric,
                expected,
                got,
            } => write!(
                f,
                "metric {metric}: labels {got:?} do not match its label names {expected:?}"
            ),
            MetricsError::InvalidValue { metric, value } => {
                write!(f, "metric {metric}: value {value} not allowed here")
            }
            MetricsError::TooManySeries(n) => write!(
                f,
                "metric {n}: already {MAX_SERIES_PER_FAMILY} series, new label values refused"
            ),
        }
    }
}

impl std::error::Error for MetricsError {}

/// Locks a mutex even if a thread panicked while holding it: the guarded data are plain numbers
/// that are never left half-written, so a poisoned lock must not take metrics down with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// One metric family: its definition and its series, keyed by label values in the order of
/// `label_names`. A `BTreeMap` so that rendering order is deterministic (diffable scrapes,
/// stable tests) without sorting on every scrape.
#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: MetricType,
    label_names: Vec<String>,
    series: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl Family {
    fn check_values(&self, values: &[&str]) -> Result<Vec<String>, MetricsError> {
        if values.len() != self.label_names.len() {
            return Err(MetricsError::LabelMismatch {
                metric: self.name.clone(),
                expected: self.label_names.clone(),
                got: values.iter().map(|v| v.to_string()).collect(),
            });
        }
        Ok(values.iter().map(|v| v.to_string()).collect())
    }

    /// Orders `name=value` pairs by the family's label names; every name exactly once.
    fn values_from_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<String>, MetricsError> {
        let mismatch = || MetricsError::LabelMismatch {
            metric: self.name.clone(),
            expected: self.label_names.clone(),
            got: pairs.iter().map(|(k, _)| k.to_string()).collect(),
        };
        if pairs.len() != self.label_names.len() {
            return Err(mismatch());
        }
        let mut values: Vec<Option<String>> = vec![None; self.label_names.len()];
        for (key, value) in pairs {
            let idx = self
                .label_names
                .iter()
                .position(|n| n == key)
                .ok_or_else(mismatch)?;
            if values[idx].is_some() {
                return Err(MetricsError::DuplicateLabel {
                    metric: self.name.clone(),
                    label: key.to_string(),
                });
            }
            values[idx] = Some(value.to_string());
        }
        // Same length and no duplicates, so every slot is filled.
        Ok(values.into_iter().flatten().collect())
    }

    fn invalid(&self, value: f64) -> MetricsError {
        MetricsError::InvalidValue {
            metric: self.name.clone(),
            value,
        }
    }

    fn set(&self, key: Vec<String>, value: f64) -> Result<(), MetricsError> {
        // Counters may be set (to mirror totals a host reports), but never to something a
        // counter cannot be.
        if self.kind == MetricType::Counter && (value.is_nan() || value < 0.0) {
            return Err(self.invalid(value));
        }
        let mut series = lock(&self.series);
        if let Some(slot) = series.get_mut(&key) {
            *slot = value;
            return Ok(());
        }
        if series.len() >= MAX_SERIES_PER_FAMILY {
            return Err(MetricsError::TooManySeries(self.name.clone()));
        }
        series.insert(key, value);
        Ok(())
    }

    fn add(&self, key: Vec<String>, delta: f64) -> Result<f64, MetricsError> {
        let ok = match self.kind {
            MetricType::Counter => delta.is_finite() && delta >= 0.0,
            MetricType::Gauge => delta.is_finite(),
        };
        if !ok {
            return Err(self.invalid(delta));
        }
        let mut series = lock(&self.series);
        if let Some(slot) = series.get_mut(&key) {
            *slot += delta;
            return Ok(*slot);
        }
        if series.len() >= MAX_SERIES_PER_FAMILY {
            return Err(MetricsError::TooManySeries(self.name.clone()));
        }
        series.insert(key, delta);
        Ok(delta)
    }

    fn remove(&self, key: &[String]) -> bool {
        lock(&self.series).remove(key).is_some()
    }

    fn get(&self, key: &[String]) -> Option<f64> {
        lock(&self.series).get(key).copied()
    }

    fn render_into(&self, out: &mut String) {
        let series = lock(&self.series);
        // Like the Go client: a family without series is left out rather than rendered as a
        // bare HELP/TYPE pair.
        if series.is_empty() {
            return;
        }
        if !self.help.is_empty() {
            let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(&self.help));
        }
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind.as_str());
        for (values, value) in series.iter() {
            out.push_str(&self.name);
            if !values.is_empty() {
                out.push('{');
                for (i, (name, v)) in self.label_names.iter().zip(values).enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(name);
                    out.push_str("=\"");
                    escape_label_value_into(v, out);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            format_value_into(*value, out);
            out.push('\n');
        }
    }
}

/// Escapes a label value as the text format requires: backslash, double quote and line feed.
/// Everything else (UTF-8 included) is written as is.
fn escape_label_value_into(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text escapes only backslash and line feed (quotes stay literal, per the format).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Writes a sample value the way Go's `ParseFloat` (and so Prometheus) reads it: `NaN`, `+Inf`,
/// `-Inf`, plain decimals for everyday magnitudes and exponent notation for the rest, so that a
/// byte counter near 1e20 does not render as a 21-digit string. Rust's float formatting is the
/// shortest representation that reads back to the same `f64`, so nothing is lost.
fn format_value_into(value: f64, out: &mut String) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let magnitude = value.abs();
        if magnitude == 0.0 || (1e-6..1e16).contains(&magnitude) {
            let _ = write!(out, "{value}");
        } else {
            let _ = write!(out, "{value:e}");
        }
    }
}

/// Thread-safe store of metric families. Share it as `Arc<Registry>`; updates through a
/// [`Counter`]/[`Gauge`] handle lock only that family, and a scrape holds each family's lock
/// just long enough to format it.
#[derive(Debug, Default)]
pub struct Registry {
    families: RwLock<BTreeMap<String, Arc<Family>>>,
}

/// Handle to a counter family, cheap to clone; updates skip the by-name lookup.
#[derive(Clone, Debug)]
pub struct Counter(Arc<Family>);

/// Handle to a gauge family, cheap to clone; updates skip the by-name lookup.
#[derive(Clone, Debug)]
pub struct Gauge(Arc<Family>);

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers (or finds) a counter family. The name must end in `_total`.
    ///
    /// Registering the same name again with the same help and label names returns a handle to
    /// the existing family, so independent modules can each ask for the metric they update; a
    /// different definition under the same name is a [`MetricsError::Conflict`].
    pub fn counter(
        &self,
        name: &str,
        help: &str,
        label_names: &[&str],
    ) -> Result<Counter, MetricsError> {
        self.register(name, help, MetricType::Counter, label_names)
            .map(Counter)
    }

    /// Registers (or finds) a gauge family; see [`Registry::counter`] for re-registration.
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        label_names: &[&str],
    ) -> Result<Gauge, MetricsError> {
        self.register(name, help, MetricType::Gauge, label_names)
            .map(Gauge)
    }

    fn register(
        &self,
        name: &str,
        help: &str,
        kind: MetricType,
        label_names: &[&str],
    ) -> Result<Arc<Family>, MetricsError> {
        if !valid_metric_name(name) {
            return Err(MetricsError::InvalidMetricName(name.to_string()));
        }
        if kind == MetricType::Counter && !name.ends_with("_total") {
            return Err(MetricsError::CounterWithoutTotalSuffix(name.to_string()));
        }
        for (i, label) in label_names.iter().enumerate() {
            if !valid_label_name(label) {
                return Err(MetricsError::InvalidLabelName {
                    metric: name.to_string(),
                    label: label.to_string(),
                });
            }
            if label_names[..i].contains(label) {
                return Err(MetricsError::DuplicateLabel {
                    metric: name.to_string(),
                    label: label.to_string(),
                });
            }
        }
        let mut families = self
            .families
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = families.get(name) {
            let same = existing.kind == kind
                && existing.help == help
                && existing.label_names.iter().eq(label_names.iter());
            return if same {
                Ok(existing.clone())
            } else {
                Err(MetricsError::Conflict(name.to_string()))
            };
        }
        // A family without labels has exactly one series; it exists (at 0) from registration on,
        // as in the Go client, so a counter that never fired still shows up as 0.
        let mut series = BTreeMap::new();
        if label_names.is_empty() {
            series.insert(Vec::new(), 0.0);
        }
        let family = Arc::new(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            label_names: label_names.iter().map(|l| l.to_string()).collect(),
            series: Mutex::new(series),
        });
        families.insert(name.to_string(), family.clone());
        Ok(family)
    }

    fn family(&self, name: &str) -> Result<Arc<Family>, MetricsError> {
        self.families
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| MetricsError::UnknownMetric(name.to_string()))
    }

    /// Type of a registered family, if any.
    pub fn metric_type(&self, name: &str) -> Option<MetricType> {
        self.family(name).ok().map(|f| f.kind)
    }

    /// Sets one series of a registered family by name, labels as `(name, value)` pairs in any
    /// order. For counters the value must be ≥ 0 (mirroring a total a host reports).
    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) -> Result<(), MetricsError> {
        let family = self.family(name)?;
        let key = family.values_from_pairs(labels)?;
        family.set(key, value)
    }

    /// Adds `delta` to one series (created at 0 if new) and returns the new value. Counters
    /// take only finite deltas ≥ 0; gauges any finite delta.
    pub fn add(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        delta: f64,
    ) -> Result<f64, MetricsError> {
        let family = self.family(name)?;
        let key = family.values_from_pairs(labels)?;
        family.add(key, delta)
    }

    /// Drops one series (e.g. a host that left the swarm); `Ok(false)` if it was not there.
    pub fn remove(&self, name: &str, labels: &[(&str, &str)]) -> Result<bool, MetricsError> {
        let family = self.family(name)?;
        let key = family.values_from_pairs(labels)?;
        Ok(family.remove(&key))
    }

    /// Current value of one series; `None` if the family or the series does not exist or the
    /// labels do not fit.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = self.family(name).ok()?;
        let key = family.values_from_pairs(labels).ok()?;
        family.get(&key)
    }

    /// The whole registry in the Prometheus text exposition format 0.0.4: families by name,
    /// series by label values, each family as `# HELP`, `# TYPE` and its samples.
    pub fn render(&self) -> String {
        // Clone the family list so the registry lock is not held while formatting; a family
        // registered meanwhile simply shows up in the next scrape.
        let families: Vec<Arc<Family>> = self
            .families
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut out = String::new();
        for family in families {
            family.render_into(&mut out);
        }
        out
    }
}

impl Counter {
    /// Adds 1 to the series with these label values (in label-name order).
    pub fn inc(&self, label_values: &[&str]) -> Result<f64, MetricsError> {
        self.inc_by(label_values, 1.0)
    }

    /// Adds a finite `delta` ≥ 0 and returns the new total.
    pub fn inc_by(&self, label_values: &[&str], delta: f64) -> Result<f64, MetricsError> {
        let key = self.0.check_values(label_values)?;
        self.0.add(key, delta)
    }

    /// Sets the total outright, for counters that mirror a total counted elsewhere (a host's
    /// own report). Must be ≥ 0; going down is read by Prometheus as a counter reset.
    pub fn set(&self, label_values: &[&str], value: f64) -> Result<(), MetricsError> {
        let key = self.0.check_values(label_values)?;
        self.0.set(key, value)
    }
}

impl Gauge {
    /// Sets the series with these label values (in label-name order). Any `f64`, NaN and
    /// infinities included, is a valid gauge value.
    pub fn set(&self, label_values: &[&str], value: f64) -> Result<(), MetricsError> {
        let key = self.0.check_values(label_values)?;
        self.0.set(key, value)
    }

    /// Adds a finite `delta` (negative to decrease) and returns the new value.
    pub fn add(&self, label_values: &[&str], delta: f64) -> Result<f64, MetricsError> {
        let key = self.0.check_values(label_values)?;
        self.0.add(key, delta)
    }

    pub fn inc(&self, label_values: &[&str]) -> Result<f64, MetricsError> {
        self.add(label_values, 1.0)
    }

    pub fn dec(&self, label_values: &[&str]) -> Result<f64, MetricsError> {
        self.add(label_values, -1.0)
    }
}

/// What both handle types do to one series of their family.
macro_rules! series_access {
    ($($handle:ty),*) => {$(
        impl $handle {
            /// Drops one series (e.g. a host that left); `Ok(false)` if it was not there.
            pub fn remove(&self, label_values: &[&str]) -> Result<bool, MetricsError> {
                let key = self.0.check_values(label_values)?;
                Ok(self.0.remove(&key))
            }

            /// Current value of one series, if it exists.
            pub fn get(&self, label_values: &[&str]) -> Option<f64> {
                let key = self.0.check_values(label_values).ok()?;
                self.0.get(&key)
            }
        }
    )*};
}

series_access!(Counter, Gauge);

/// Bounds of the HTTP endpoint. Private so that tests can shrink the timeout; production uses
/// [`Limits::DEFAULT`] through [`serve`].
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Whole-connection deadline: reading the request, writing the answer and draining. One
    /// deadline rather than a per-read timeout, so a client trickling a byte at a time cannot
    /// hold a slot any longer than one that sends nothing.
    deadline: Duration,
    /// Largest request head (request line plus headers) read before giving up with 431.
    max_head: usize,
    /// Connections served at once; the next ones wait in the kernel's accept queue.
    max_connections: usize,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        deadline: Duration::from_secs(5),
        max_head: 8 * 1024,
        max_connections: 64,
    };
}

/// How long, at most, the server keeps reading after it answered. See [`drain`].
const DRAIN_TIME: Duration = Duration::from_millis(200);
/// How many bytes, at most, the server reads after it answered.
const DRAIN_BYTES: usize = 64 * 1024;

/// Serves `GET /metrics` (and `HEAD /metrics`) from `registry` on `addr` until the returned task
/// is aborted or dropped with the runtime.
///
/// Returns the address actually bound (useful with port 0) and the accept loop's task. Each
/// connection gets one request and one answer (`Connection: close`); malformed requests get
/// 400, unknown paths 404, other methods 405, request heads over 8 KiB 431, and clients that do
/// not finish within 5 s are dropped. At most 64 connections are served at once. Errors on one
/// connection never reach the others or the accept loop. Aborting the returned task also aborts
/// the connections in flight.
pub async fn serve(
    registry: Arc<Registry>,
    addr: SocketAddr,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    serve_with(registry, addr, Limits::DEFAULT).await
}

async fn serve_with(
    registry: Arc<Registry>,
    addr: SocketAddr,
    limits: Limits,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the metrics endpoint on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tracing::info!("metrics endpoint listening on http://{bound}/metrics");
    let task = tokio::spawn(accept_loop(listener, registry, limits));
    Ok((bound, task))
}

async fn accept_loop(listener: TcpListener, registry: Arc<Registry>, limits: Limits) {
    // Connections live in a JoinSet owned by this task: its size is the concurrency bound, a
    // panicking connection is contained in its own task, and aborting the loop aborts them all.
    let mut connections = JoinSet::new();
    loop {
        if connections.len() >= limits.max_connections {
            // Full: stop accepting until one finishes; the deadline guarantees one will.
            if let Some(Err(e)) = connections.join_next().await {
                log_join_error(&e);
            }
            continue;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let registry = registry.clone();
                    connections.spawn(async move {
                        let outcome =
                            tokio::time::timeout(limits.deadline, handle(stream, &registry, limits))
                                .await;
                        match outcome {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!("metrics: connection from {peer}: {e}"),
                            Err(_) => tracing::debug!("metrics: connection from {peer} timed out"),
                        }
                    });
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning, and
                    // keep serving once the pressure is gone.
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = joined {
                    log_join_error(&e);
                }
            }
        }
    }
}

fn log_join_error(e: &tokio::task::JoinError) {
    if e.is_panic() {
        tracing::error!("metrics: a connection task panicked: {e}");
    }
}

/// What the request head asked for, reduced to what the endpoint distinguishes.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics { head_only: bool },
    NotFound { head_only: bool },
    MethodNotAllowed,
    Malformed,
    TooLarge,
}

/// Reads the request head (up to the blank line) within `max_head` bytes. Anything after the
/// head is not read: GET carries no body and the connection closes after one answer.
async fn read_head(stream: &mut TcpStream, max_head: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    const CHUNK: usize = 1024;
    let mut chunk = [0u8; CHUNK];
    loop {
        let room = max_head + 1 - buf.len();
        let n = stream.read(&mut chunk[..room.min(CHUNK)]).await?;
        if n == 0 {
            // Closed before finishing the head: nothing to answer.
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // Search only where a terminator can newly appear: the old tail plus the new bytes.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf[from..]) {
            buf.truncate(from + end);
            if buf.len() > max_head {
                return Ok(None);
            }
            return Ok(Some(buf));
        }
        if buf.len() > max_head {
            return Ok(None);
        }
    }
}

/// Length of the head including its terminating blank line (`\r\n\r\n`, or a bare `\n\n` from
/// hand-typed requests), if the buffer holds it.
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if buf[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

fn parse_head(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else {
        return Request::Malformed;
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let Some(request_line) = lines.next() else {
        return Request::Malformed;
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Request::Malformed;
    }
    // Header contents are irrelevant here, but each line must at least look like a header.
    for line in lines.filter(|l| !l.is_empty()) {
        match line.split_once(':') {
            Some((name, _)) if !name.is_empty() && !name.contains([' ', '\t']) => {}
            _ => return Request::Malformed,
        }
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::MethodNotAllowed,
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path == "/metrics" {
        Request::Metrics { head_only }
    } else {
        Request::NotFound { head_only }
    }
}

async fn handle(mut stream: TcpStream, registry: &Registry, limits: Limits) -> std::io::Result<()> {
    let request = match read_head(&mut stream, limits.max_head).await? {
        Some(head) => parse_head(&head),
        None => Request::TooLarge,
    };
    let response = match request {
        Request::Metrics { head_only } => {
            response("200 OK", CONTENT_TYPE, registry.render(), head_only, None)
        }
        Request::NotFound { head_only } => response(
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found; metrics are at /metrics\n".to_string(),
            head_only,
            None,
        ),
        Request::MethodNotAllowed => response(
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "method not allowed\n".to_string(),
            false,
            Some("Allow: GET, HEAD\r\n"),
        ),
        Request::Malformed => response(
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".to_string(),
            false,
            None,
        ),
        Request::TooLarge => response(
            "431 Request Header Fields Too Large",
            "text/plain; charset=utf-8",
            "request header too large\n".to_string(),
            false,
            None,
        ),
    };
    stream.write_all(&response).await?;
    stream.shutdown().await?;
    drain(&mut stream).await;
    Ok(())
}

fn response(
    status: &str,
    content_type: &str,
    body: String,
    head_only: bool,
    extra_header: Option<&str>,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{}\r\n",
        body.len(),
        extra_header.unwrap_or("")
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Reads and discards what the client still sends after the answer, briefly. Closing a socket
/// with unread input makes the kernel send a reset, which can destroy the answer before the
/// client has read it (an oversized head is the typical case); after our FIN, a well-behaved
/// client closes at once and this returns immediately.
async fn drain(stream: &mut TcpStream) {
    let until = Instant::now() + DRAIN_TIME;
    let mut sink = [0u8; 4096];
    let mut total = 0;
    while total < DRAIN_BYTES {
        match tokio::time::timeout_at(until, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_parse::{Scrape, Value};

    fn scrape(text: &str) -> Scrape {
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("prometheus-parse failed")
    }

    fn find<'a>(
        s: &'a Scrape,
        metric: &str,
        labels: &[(&str, &str)],
    ) -> Option<&'a prometheus_parse::Sample> {
        s.samples.iter().find(|x| {
            x.metric == metric
                && x.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
        })
    }

    /// Strict reader of one rendered label set (`{a="x",b="y"}`), unescaping values; written
    /// here because prometheus-parse splits on ',' and '=' and does not unescape, so it cannot
    /// check escaping of arbitrary values on its own.
    fn parse_labels(line: &str) -> (String, Vec<(String, String)>) {
        let brace = line.find('{').expect("no label set");
        let name = line[..brace].to_string();
        let mut chars = line[brace + 1..].chars();
        let mut labels = Vec::new();
        loop {
            let mut key = String::new();
            for c in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            assert_eq!(
                chars.next(),
                Some('"'),
                "label value must open with a quote"
            );
            let mut value = String::new();
            loop {
                match chars.next().expect("unterminated label value") {
                    '\\' => match chars.next().expect("dangling escape") {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => panic!("unknown escape \\{c}"),
                    },
                    '"' => break,
                    '\n' => panic!("raw newline inside a label value"),
                    c => value.push(c),
                }
            }
            labels.push((key, value));
            match chars.next() {
                Some(',') => continue,
                Some('}') => break,
                other => panic!("unexpected {other:?} after label value"),
            }
        }
        assert!(
            chars.as_str().starts_with(' '),
            "value must follow the label set"
        );
        (name, labels)
    }

    #[test]
    fn render_parses_with_independent_parser() {
        let r = Registry::new();
        let stability = r
            .gauge(
                "gopswarm_host_stability_score",
                "Stability score 0-100 of a host",
                &["host"],
            )
            .unwrap();
        let handoffs = r
            .counter(
                "gopswarm_handoffs_total",
                "GOP-boundary handoffs",
                &["stream", "profile"],
            )
            .unwrap();
        let hosts = r
            .gauge("gopswarm_hosts", "Hosts in the swarm", &[])
            .unwrap();
        stability.set(&["h2"], 42.0).unwrap();
        stability.set(&["h1"], 87.5).unwrap();
        handoffs.inc(&["s1", "1080p"]).unwrap();
        handoffs.inc_by(&["s1", "1080p"], 2.0).unwrap();
        handoffs.inc(&["s0", "720p"]).unwrap();
        hosts.set(&[], 2.0).unwrap();

        let text = r.render();
        let s = scrape(&text);
        assert_eq!(s.samples.len(), 5, "{text}");
        assert_eq!(
            s.docs
                .get("gopswarm_host_stability_score")
                .map(String::as_str),
            Some("Stability score 0-100 of a host")
        );
        assert_eq!(
            find(&s, "gopswarm_host_stability_score", &[("host", "h1")])
                .unwrap()
                .value,
            Value::Gauge(87.5)
        );
        assert_eq!(
            find(&s, "gopswarm_host_stability_score", &[("host", "h2")])
                .unwrap()
                .value,
            Value::Gauge(42.0)
        );
        assert_eq!(
            find(
                &s,
                "gopswarm_handoffs_total",
                &[("stream", "s1"), ("profile", "1080p")]
            )
            .unwrap()
            .value,
            Value::Counter(3.0)
        );
        assert_eq!(
            find(
                &s,
                "gopswarm_handoffs_total",
                &[("stream", "s0"), ("profile", "720p")]
            )
            .unwrap()
            .value,
            Value::Counter(1.0)
        );
        assert_eq!(
            find(&s, "gopswarm_hosts", &[]).unwrap().value,
            Value::Gauge(2.0)
        );

        // Exact text: families by name, series by label values, label names in declared order.
        let expected = "\
# HELP gopswarm_handoffs_total GOP-boundary handoffs
# TYPE gopswarm_handoffs_total counter
gopswarm_handoffs_total{stream=\"s0\",profile=\"720p\"} 1
gopswarm_handoffs_total{stream=\"s1\",profile=\"1080p\"} 3
# HELP gopswarm_host_stability_score Stability score 0-100 of a host
# TYPE gopswarm_host_stability_score gauge
gopswarm_host_stability_score{host=\"h1\"} 87.5
gopswarm_host_stability_score{host=\"h2\"} 42
# HELP gopswarm_hosts Hosts in the swarm
# TYPE gopswarm_hosts gauge
gopswarm_hosts 2
";
        assert_eq!(text, expected);
        // Deterministic: the same state renders the same bytes.
        assert_eq!(r.render(), text);
    }

    #[test]
    fn by_name_api_and_remove() {
        let r = Registry::new();
        r.gauge("g", "a gauge", &["host", "stream"]).unwrap();
        r.counter("c_total", "a counter", &["host"]).unwrap();
        r.set("g", &[("stream", "s"), ("host", "h1")], 5.0).unwrap();
        assert_eq!(r.get("g", &[("host", "h1"), ("stream", "s")]), Some(5.0));
        assert_eq!(
            r.add("g", &[("host", "h1"), ("stream", "s")], -7.5),
            Ok(-2.5)
        );
        assert_eq!(r.add("c_total", &[("host", "h1")], 1.0), Ok(1.0));
        assert_eq!(r.add("c_total", &[("host", "h1")], 1.0), Ok(2.0));
        assert_eq!(r.metric_type("c_total"), Some(MetricType::Counter));
        assert_eq!(r.metric_type("g"), Some(MetricType::Gauge));
        assert_eq!(r.metric_type("nope"), None);

        assert_eq!(r.remove("g", &[("host", "h1"), ("stream", "s")]), Ok(true));
        assert_eq!(r.remove("g", &[("host", "h1"), ("stream", "s")]), Ok(false));
        assert_eq!(r.get("g", &[("host", "h1"), ("stream", "s")]), None);
        // A family whose last series left is not rendered at all.
        let s = scrape(&r.render());
        assert!(s.samples.iter().all(|x| x.metric != "g"));
        assert!(!r.render().contains("# TYPE g "));
        assert_eq!(
            find(&s, "c_total", &[("host", "h1")]).unwrap().value,
            Value::Counter(2.0)
        );

        assert!(matches!(
            r.set("missing", &[], 1.0),
            Err(MetricsError::UnknownMetric(_))
        ));
        assert!(matches!(
            r.set("g", &[("host", "h1")], 1.0),
            Err(MetricsError::LabelMismatch { .. })
        ));
        assert!(matches!(
            r.set("g", &[("host", "h1"), ("other", "x")], 1.0),
            Err(MetricsError::LabelMismatch { .. })
        ));
        assert!(matches!(
            r.set("g", &[("host", "h1"), ("host", "h2")], 1.0),
            Err(MetricsError::DuplicateLabel { .. })
        ));
    }

    #[test]
    fn handles_check_labels_and_values() {
        let r = Registry::new();
        let c = r.counter("jobs_total", "jobs", &["host"]).unwrap();
        let g = r.gauge("temp", "temperature", &["host"]).unwrap();
        assert!(matches!(
            c.inc(&[]),
            Err(MetricsError::LabelMismatch { .. })
        ));
        assert!(matches!(
            c.inc(&["a", "b"]),
            Err(MetricsError::LabelMismatch { .. })
        ));
        assert!(matches!(
            c.inc_by(&["a"], -1.0),
            Err(MetricsError::InvalidValue { .. })
        ));
        assert!(matches!(
            c.inc_by(&["a"], f64::NAN),
            Err(MetricsError::InvalidValue { .. })
        ));
        assert!(matches!(
            c.inc_by(&["a"], f64::INFINITY),
            Err(MetricsError::InvalidValue { .. })
        ));
        assert!(matches!(
            c.set(&["a"], -0.5),
            Err(MetricsError::InvalidValue { .. })
        ));
        assert!(matches!(
            c.set(&["a"], f64::NAN),
            Err(MetricsError::InvalidValue { .. })
        ));
        assert_eq!(c.get(&["a"]), None, "refused updates create no series");
        c.set(&["a"], 10.0).unwrap();
        assert_eq!(c.inc(&["a"]), Ok(11.0));
        assert_eq!(c.remove(&["a"]), Ok(true));
        assert_eq!(c.get(&["a"]), None);

        assert_eq!(g.inc(&["h"]), Ok(1.0));
        assert_eq!(g.dec(&["h"]), Ok(0.0));
        assert_eq!(g.dec(&["h"]), Ok(-1.0));
        assert!(matches!(
            g.add(&["h"], f64::NAN),
            Err(MetricsError::InvalidValue { .. })
        ));
        g.set(&["nan"], f64::NAN).unwrap();
        g.set(&["pinf"], f64::INFINITY).unwrap();
        g.set(&["ninf"], f64::NEG_INFINITY).unwrap();
        g.set(&["big"], 1.5e20).unwrap();
        g.set(&["small"], 2.5e-9).unwrap();
        g.set(&["neg"], -3.25).unwrap();
        let text = r.render();
        assert!(text.contains("temp{host=\"nan\"} NaN\n"), "{text}");
        assert!(text.contains("temp{host=\"pinf\"} +Inf\n"), "{text}");
        assert!(text.contains("temp{host=\"ninf\"} -Inf\n"), "{text}");
        assert!(text.contains("temp{host=\"big\"} 1.5e20\n"), "{text}");
        let s = scrape(&text);
        let value = |host: &str| match find(&s, "temp", &[("host", host)]).unwrap().value {
            Value::Gauge(v) => v,
            ref other => panic!("not a gauge: {other:?}"),
        };
        assert!(value("nan").is_nan());
        assert_eq!(value("pinf"), f64::INFINITY);
        assert_eq!(value("ninf"), f64::NEG_INFINITY);
        assert_eq!(value("big"), 1.5e20);
        assert_eq!(value("small"), 2.5e-9);
        assert_eq!(value("neg"), -3.25);
        assert_eq!(value("h"), -1.0);
    }

    #[test]
    fn names_are_validated() {
        let r = Registry::new();
        for bad in ["", "1abc", "a-b", "a b", "héllo", "a.b"] {
            assert_eq!(
                r.gauge(bad, "x", &[]).unwrap_err(),
                MetricsError::InvalidMetricName(bad.to_string())
            );
        }
        for good in ["a", "_a", ":a", "a:b_c9", "ABC"] {
            r.gauge(good, "x", &[]).unwrap();
        }
        assert_eq!(
            r.counter("requests", "x", &[]).unwrap_err(),
            MetricsError::CounterWithoutTotalSuffix("requests".into())
        );
        for bad in ["", "1a", "a:b", "__reserved", "a-b", "ü"] {
            assert!(
                matches!(
                    r.gauge("ok_name", "x", &[bad]),
                    Err(MetricsError::InvalidLabelName { .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            r.gauge("ok_name", "x", &["host", "host"]),
            Err(MetricsError::DuplicateLabel { .. })
        ));
        // Errors read well in logs.
        let msg = r.gauge("a-b", "x", &[]).unwrap_err().to_string();
        assert!(msg.contains("a-b") && msg.contains("[a-zA-Z_:]"), "{msg}");
        // Nothing half-registered.
        assert_eq!(r.metric_type("ok_name"), None);
    }

    #[test]
    fn reregistration_is_idempotent_or_a_conflict() {
        let r = Registry::new();
        let a = r.gauge("g", "help", &["host"]).unwrap();
        let b = r.gauge("g", "help", &["host"]).unwrap();
        a.set(&["h"], 1.0).unwrap();
        assert_eq!(b.get(&["h"]), Some(1.0), "both handles share one family");
        assert_eq!(
            r.gauge("g", "other help", &["host"]).unwrap_err(),
            MetricsError::Conflict("g".into())
        );
        assert_eq!(
            r.gauge("g", "help", &["stream"]).unwrap_err(),
            MetricsError::Conflict("g".into())
        );
        r.counter("g_total", "help", &[]).unwrap();
        assert_eq!(
            r.gauge("g_total", "help", &[]).unwrap_err(),
            MetricsError::Conflict("g_total".into())
        );
    }

    #[test]
    fn unlabelled_families_start_at_zero() {
        let r = Registry::new();
        r.counter("restarts_total", "restarts", &[]).unwrap();
        r.gauge("unused", "labelled, no series yet", &["host"])
            .unwrap();
        assert_eq!(r.get("restarts_total", &[]), Some(0.0));
        assert_eq!(
            r.render(),
            "# HELP restarts_total restarts\n# TYPE restarts_total counter\nrestarts_total 0\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let r = Registry::new();
        let g = r
            .gauge("esc", "line one\nback\\slash \"quoted\"", &["v", "w"])
            .unwrap();
        let tricky = [
            "plain",
            "quote\"inside",
            "back\\slash",
            "new\nline",
            "\\\"\n\\n",
            "trailing\\",
            "ünïcødé ✓",
            "brace}comma,equals=",
            "",
        ];
        for (i, v) in tricky.iter().enumerate() {
            g.set(&[v, &i.to_string()], i as f64).unwrap();
        }
        let text = r.render();
        // Every sample stays on one line.
        assert_eq!(text.lines().count(), 2 + tricky.len(), "{text}");
        assert!(
            text.starts_with("# HELP esc line one\\nback\\\\slash \"quoted\"\n"),
            "{text}"
        );

        // Round trip through a strict reader: every value comes back byte for byte.
        let mut seen = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, labels) = parse_labels(line);
            assert_eq!(name, "esc");
            assert_eq!(labels[0].0, "v");
            assert_eq!(labels[1].0, "w");
            let idx: usize = labels[1].1.parse().unwrap();
            assert_eq!(labels[0].1, tricky[idx], "value {idx} changed");
            let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert_eq!(value, idx as f64);
            seen.push(idx);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..tricky.len()).collect::<Vec<_>>());

        // prometheus-parse keeps escapes as written (it does not unescape) and splits label sets
        // on ',' and '='; for values without those it must see the escaped text, one sample each.
        let s = scrape(&text);
        for (i, v) in tricky.iter().enumerate() {
            if v.contains([',', '=', '}']) {
                continue;
            }
            let mut escaped = String::new();
            escape_label_value_into(v, &mut escaped);
            let idx = i.to_string();
            let sample = find(&s, "esc", &[("v", &escaped), ("w", &idx)])
                .unwrap_or_else(|| panic!("value {v:?} not found as {escaped:?}"));
            assert_eq!(sample.value, Value::Gauge(i as f64));
        }
    }

    #[test]
    fn series_per_family_are_capped() {
        let r = Registry::new();
        let g = r.gauge("many", "x", &["id"]).unwrap();
        for i in 0..MAX_SERIES_PER_FAMILY {
            g.set(&[&i.to_string()], 1.0).unwrap();
        }
        assert_eq!(
            g.set(&["one more"], 1.0),
            Err(MetricsError::TooManySeries("many".into()))
        );
        assert!(matches!(
            g.inc(&["one more"]),
            Err(MetricsError::TooManySeries(_))
        ));
        // Existing series still update, and room frees up on remove.
        g.set(&["0"], 2.0).unwrap();
        g.remove(&["1"]).unwrap();
        g.set(&["one more"], 1.0).unwrap();
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        let r = Arc::new(Registry::new());
        let c = r.counter("hits_total", "x", &["t"]).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.inc(&["shared"]).unwrap();
                        c.inc(&[&t.to_string()]).unwrap();
                        let _ = r.render();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(&["shared"]), Some(4000.0));
        for t in 0..4 {
            assert_eq!(c.get(&[&t.to_string()]), Some(1000.0));
        }
    }

    #[test]
    fn request_heads_are_parsed_strictly() {
        let p = |s: &str| parse_head(s.as_bytes());
        let get = Request::Metrics { head_only: false };
        assert_eq!(p("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), get);
        assert_eq!(p("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), get);
        assert_eq!(p("GET /metrics HTTP/1.1\n\n"), get);
        assert_eq!(
            p("HEAD /metrics HTTP/1.1\r\n\r\n"),
            Request::Metrics { head_only: true }
        );
        assert_eq!(
            p("GET / HTTP/1.1\r\n\r\n"),
            Request::NotFound { head_only: false }
        );
        assert_eq!(
            p("GET /metrics/ HTTP/1.1\r\n\r\n"),
            Request::NotFound { head_only: false }
        );
        assert_eq!(
            p("POST /metrics HTTP/1.1\r\n\r\n"),
            Request::MethodNotAllowed
        );
        for bad in [
            "\r\n\r\n",
            "GET\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET /metrics HTTP/2.0\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "get /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1 extra\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(p(bad), Request::Malformed, "{bad:?}");
        }
        assert_eq!(
            parse_head(b"GET /\xff HTTP/1.1\r\n\r\n"),
            Request::Malformed
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    /// A raw HTTP exchange: status code, headers (lower-cased names) and body.
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Reply> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
            .await
            .map_err(|_| std::io::Error::other("reply timed out"))??;
        let text = String::from_utf8(raw).map_err(std::io::Error::other)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other(format!("no head in {text:?}")))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().map_err(std::io::Error::other)?;
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header without colon");
                (n.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        Ok(Reply {
            status,
            headers,
            body: body.to_string(),
        })
    }

    async fn get_metrics(addr: SocketAddr) -> Reply {
        exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n",
        )
        .await
        .expect("GET /metrics failed")
    }

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let registry = Arc::new(Registry::new());
        let g = registry
            .gauge(
                "gopswarm_host_stability_score",
                "Stability score 0-100 of a host",
                &["host"],
            )
            .unwrap();
        let (addr, server) = serve(registry.clone(), loopback()).await.unwrap();
        assert_ne!(addr.port(), 0);

        g.set(&["h1"], 87.5).unwrap();
        let reply = get_metrics(addr).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some(CONTENT_TYPE));
        assert_eq!(reply.header("connection"), Some("close"));
        assert_eq!(
            reply.header("content-length"),
            Some(reply.body.len().to_string().as_str())
        );
        assert_eq!(reply.body, registry.render());
        let s = scrape(&reply.body);
        assert_eq!(
            find(&s, "gopswarm_host_stability_score", &[("host", "h1")])
                .unwrap()
                .value,
            Value::Gauge(87.5)
        );

        // A value set just before the next scrape is in it; a removed host is gone.
        g.set(&["h2"], 12.0).unwrap();
        g.remove(&["h1"]).unwrap();
        let s = scrape(&get_metrics(addr).await.body);
        assert_eq!(
            find(&s, "gopswarm_host_stability_score", &[("host", "h2")])
                .unwrap()
                .value,
            Value::Gauge(12.0)
        );
        assert!(find(&s, "gopswarm_host_stability_score", &[("host", "h1")]).is_none());

        // HEAD: same headers, no body.
        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        assert_eq!(
            head.header("content-length"),
            Some(registry.render().len().to_string().as_str())
        );

        server.abort();
    }

    #[tokio::test]
    async fn wrong_path_and_method() {
        let (addr, server) = serve(Arc::new(Registry::new()), loopback()).await.unwrap();
        let reply = exchange(addr, b"GET /other HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(reply.status, 404);
        assert_eq!(reply.header("connection"), Some("close"));
        let reply = exchange(addr, b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        assert_eq!(reply.status, 404);
        let reply = exchange(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(reply.status, 405);
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
        // Empty registry: 200 with an empty body.
        let reply = get_metrics(addr).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-length"), Some("0"));
        server.abort();
    }

    #[tokio::test]
    async fn bad_requests_do_not_hurt_the_server() {
        let registry = Arc::new(Registry::new());
        let g = registry.gauge("up", "x", &[]).unwrap();
        let (addr, server) = serve(registry.clone(), loopback()).await.unwrap();

        // Garbage.
        let reply = exchange(addr, b"\x00\x01\x02 not http at all\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(reply.status, 400);
        // Binary garbage without a head terminator, then the client hangs up.
        {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&[0xff; 100]).await.unwrap();
        }
        // A TLS ClientHello-like prefix, then a half-close: closed with no answer, at once.
        {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00])
                .await
                .unwrap();
            s.shutdown().await.unwrap();
            let mut buf = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
            assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        }
        // Connect and close at once.
        drop(TcpStream::connect(addr).await.unwrap());

        // Oversized head: 16 KiB of headers, no terminator within 8 KiB.
        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while big.len() < 16 * 1024 {
            big.extend_from_slice(
                b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        big.extend_from_slice(b"\r\n");
        let reply = exchange(addr, &big).await.unwrap();
        assert_eq!(reply.status, 431);
        // Oversized request line with no newline at all.
        let long_line = vec![b'A'; 20 * 1024];
        let reply = exchange(addr, &long_line).await.unwrap();
        assert_eq!(reply.status, 431);
        // Exactly at the limit still works.
        let mut fits = b"GET /metrics HTTP/1.1\r\nX-Fill: ".to_vec();
        fits.resize(Limits::DEFAULT.max_head - 4, b'a');
        fits.extend_from_slice(b"\r\n\r\n");
        assert_eq!(fits.len(), Limits::DEFAULT.max_head);
        assert_eq!(exchange(addr, &fits).await.unwrap().status, 200);

        g.set(&[], 1.0).unwrap();
        let reply = get_metrics(addr).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            find(&scrape(&reply.body), "up", &[]).unwrap().value,
            Value::Gauge(1.0)
        );
        assert!(!server.is_finished());
        server.abort();
    }

    #[tokio::test]
    async fn slow_clients_time_out_and_do_not_block_others() {
        let limits = Limits {
            deadline: Duration::from_millis(300),
            max_head: 8 * 1024,
            max_connections: 2,
        };
        let registry = Arc::new(Registry::new());
        registry
            .gauge("up", "x", &[])
            .unwrap()
            .set(&[], 1.0)
            .unwrap();
        let (addr, server) = serve_with(registry, loopback(), limits).await.unwrap();

        // One client that sends half a request and stalls.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
            .await
            .unwrap();
        // Others are still served meanwhile (one slot left).
        assert_eq!(get_metrics(addr).await.status, 200);
        // The stalled one is closed after the deadline, with nothing written.
        let started = Instant::now();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf))
            .await
            .expect("slow client was never closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() < Duration::from_secs(2));

        // Fill both slots with idle clients: a third waits for a slot instead of failing,
        // and is answered once the idle ones time out.
        let idle_a = TcpStream::connect(addr).await.unwrap();
        let idle_b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let reply = get_metrics(addr).await;
        assert_eq!(reply.status, 200);
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "third connection was not held back: {:?}",
            started.elapsed()
        );
        drop((idle_a, idle_b));
        server.abort();
    }

    #[tokio::test]
    async fn many_concurrent_scrapes() {
        let registry = Arc::new(Registry::new());
        let g = registry.gauge("g", "x", &["i"]).unwrap();
        for i in 0..100 {
            g.set(&[&i.to_string()], i as f64).unwrap();
        }
        let (addr, server) = serve(registry.clone(), loopback()).await.unwrap();
        let mut clients = JoinSet::new();
        for _ in 0..100 {
            clients.spawn(async move { get_metrics(addr).await });
        }
        let expected = registry.render();
        while let Some(reply) = clients.join_next().await {
            let reply = reply.unwrap();
            assert_eq!(reply.status, 200);
            assert_eq!(reply.body, expected);
        }
        server.abort();
    }

    #[tokio::test]
    async fn aborting_the_server_frees_the_port() {
        let (addr, server) = serve(Arc::new(Registry::new()), loopback()).await.unwrap();
        server.abort();
        let _ = server.await;
        // Connecting now fails (or is reset) instead of hanging.
        let result = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(result.is_err());
        // And serving on a taken port is a clear error, not a panic.
        let listener = std::net::TcpListener::bind(loopback()).unwrap();
        let taken = listener.local_addr().unwrap();
        let err = serve(Arc::new(Registry::new()), taken).await.unwrap_err();
        assert!(err.to_string().contains("metrics endpoint"), "{err}");
    }
}
