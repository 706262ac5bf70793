// SPDX-License-Identifier: MPL-2.0
//! Families of counters and gauges, stored in prometheus-client types and encoded by its
//! Prometheus text encoder.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::family::Family as PcFamily;
use prometheus_client::metrics::gauge::Gauge as PcGauge;

/// Most series (label value combinations) one family may hold. Label values come from the
/// network (host ids, stream ids); without a cap a misbehaving or hostile publisher could grow
/// the registry, and every scrape, without bound.
pub const MAX_SERIES_PER_FAMILY: usize = 10_000;

/// Why a registry call was refused. Every variant names the metric, so a log line is enough to
/// find the offending call site.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("invalid metric name {0:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidMetricName(String),
    #[error(
        "metric {metric}: invalid label name {label:?}: must match [a-zA-Z_][a-zA-Z0-9_]* \
         and not start with \"__\""
    )]
    InvalidLabelName { metric: String, label: String },
    #[error("metric {metric}: label {label:?} given twice")]
    DuplicateLabel { metric: String, label: String },
    /// Counter names end in `_total`, as they are exposed (prometheus-client adds the suffix
    /// when encoding, so it is taken off before the name is handed over).
    #[error("counter {0:?}: counter names must end in \"_total\"")]
    CounterWithoutTotalSuffix(String),
    #[error("metric {0} is already registered with a different type, help text or label names")]
    Conflict(String),
    #[error("no metric named {0:?} is registered")]
    UnknownMetric(String),
    #[error("metric {metric}: labels {got:?} do not match its label names {expected:?}")]
    LabelMismatch {
        metric: String,
        expected: Vec<String>,
        got: Vec<String>,
    },
    /// A counter set below zero or to NaN, a negative or non-finite counter increment, or a
    /// non-finite gauge delta (which would poison the series for good).
    #[error("metric {metric}: value {value} not allowed here")]
    InvalidValue { metric: String, value: f64 },
    #[error("metric {0}: already {MAX_SERIES_PER_FAMILY} series, new label values refused")]
    TooManySeries(String),
}

/// Locks a mutex even if a thread panicked while holding it: what it guards is a count that is
/// never left half-written, so a poisoned lock must not take metrics down with it.
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

/// A series' labels as prometheus-client encodes them, in the family's label-name order.
type LabelSet = Vec<(String, String)>;
/// `f64` counters: totals mirrored from elsewhere are `u64`s, increments may be fractional.
type CounterSeries = PcFamily<LabelSet, PcCounter<f64, AtomicU64>>;
type GaugeSeries = PcFamily<LabelSet, PcGauge<f64, AtomicU64>>;

#[derive(Debug)]
enum Series {
    Counter(CounterSeries),
    Gauge(GaugeSeries),
}

/// One metric family: its definition and its series.
#[derive(Debug)]
struct Family {
    /// As exposed and as callers know it (counters with `_total`).
    name: String,
    /// As handed to prometheus-client, which adds `_total` to counters itself.
    encoded_name: String,
    help: String,
    label_names: Vec<String>,
    series: Series,
    /// How many series exist; taken while a series is added or removed, so the cap holds
    /// under concurrent updates. Updates of existing series do not touch it.
    count: Mutex<usize>,
}

impl Family {
    fn is_counter(&self) -> bool {
        matches!(self.series, Series::Counter(_))
    }

    fn label_set(&self, values: &[&str]) -> Result<LabelSet, MetricsError> {
        if values.len() != self.label_names.len() {
            return Err(MetricsError::LabelMismatch {
                metric: self.name.clone(),
                expected: self.label_names.clone(),
                got: values.iter().map(|v| v.to_string()).collect(),
            });
        }
        Ok(self
            .label_names
            .iter()
            .zip(values)
            .map(|(n, v)| (n.clone(), v.to_string()))
            .collect())
    }

    /// Orders `name=value` pairs by the family's label names; every name exactly once.
    fn label_set_from_pairs(&self, pairs: &[(&str, &str)]) -> Result<LabelSet, MetricsError> {
        let mismatch = || MetricsError::LabelMismatch {
            metric: self.name.clone(),
            expected: self.label_names.clone(),
            got: pairs.iter().map(|(k, _)| k.to_string()).collect(),
        };
        if pairs.len() != self.label_names.len() {
            return Err(mismatch());
        }
        let mut values: Vec<&str> = Vec::with_capacity(pairs.len());
        for name in &self.label_names {
            let mut matching = pairs.iter().filter(|(k, _)| k == name);
            let (_, value) = matching.next().ok_or_else(mismatch)?;
            if matching.next().is_some() {
                return Err(MetricsError::DuplicateLabel {
                    metric: self.name.clone(),
                    label: name.clone(),
                });
            }
            values.push(value);
        }
        self.label_set(&values)
    }

    fn invalid(&self, value: f64) -> MetricsError {
        MetricsError::InvalidValue {
            metric: self.name.clone(),
            value,
        }
    }

    /// Runs `update` on the series of `labels`, creating it unless the family is full.
    fn with_series<M: Default + Clone, R>(
        &self,
        series: &PcFamily<LabelSet, M>,
        labels: &LabelSet,
        update: impl FnOnce(&M) -> R,
    ) -> Result<R, MetricsError> {
        if let Some(existing) = series.get(labels) {
            return Ok(update(&existing));
        }
        let mut count = lock(&self.count);
        if series.get(labels).is_none() {
            if *count >= MAX_SERIES_PER_FAMILY {
                return Err(MetricsError::TooManySeries(self.name.clone()));
            }
            *count += 1;
        }
        Ok(update(&series.get_or_create(labels)))
    }

    fn set(&self, labels: &LabelSet, value: f64) -> Result<(), MetricsError> {
        match &self.series {
            Series::Counter(s) => {
                // Counters may be set (to mirror totals a host reports), but never to
                // something a counter cannot be.
                if value.is_nan() || value < 0.0 {
                    return Err(self.invalid(value));
                }
                // prometheus-client keeps an f64 counter as its bits in the AtomicU64 it
                // exposes for cases it does not cover itself; mirroring a total is one.
                self.with_series(s, labels, |c| {
                    c.inner().store(value.to_bits(), Ordering::Relaxed)
                })
            }
            Series::Gauge(s) => self.with_series(s, labels, |g| {
                g.set(value);
            }),
        }
    }

    fn add(&self, labels: &LabelSet, delta: f64) -> Result<f64, MetricsError> {
        match &self.series {
            Series::Counter(s) => {
                if !delta.is_finite() || delta < 0.0 {
                    return Err(self.invalid(delta));
                }
                self.with_series(s, labels, |c| c.inc_by(delta) + delta)
            }
            Series::Gauge(s) => {
                if !delta.is_finite() {
                    return Err(self.invalid(delta));
                }
                self.with_series(s, labels, |g| g.inc_by(delta) + delta)
            }
        }
    }

    fn remove(&self, labels: &LabelSet) -> bool {
        let mut count = lock(&self.count);
        let removed = match &self.series {
            Series::Counter(s) => s.remove(labels),
            Series::Gauge(s) => s.remove(labels),
        };
        if removed {
            *count -= 1;
        }
        removed
    }

    fn get(&self, labels: &LabelSet) -> Option<f64> {
        match &self.series {
            Series::Counter(s) => s.get(labels).map(|c| c.get()),
            Series::Gauge(s) => s.get(labels).map(|g| g.get()),
        }
    }
}

/// The families, shared between the [`Registry`] that updates them and the collector that
/// prometheus-client asks for them on each scrape. Ordered by name, so scrapes are diffable.
#[derive(Debug, Default)]
struct Families(RwLock<BTreeMap<String, Arc<Family>>>);

impl Families {
    fn snapshot(&self) -> Vec<Arc<Family>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // The descriptor is written here rather than by `Registry::register`, which would add
        // a full stop to every HELP text; the HELP lines stay as they always were.
        for family in self.snapshot() {
            let metric: &dyn EncodeMetric = match &family.series {
                Series::Counter(s) => s,
                Series::Gauge(s) => s,
            };
            // A family without series is left out rather than rendered as a bare HELP/TYPE
            // pair, as the Go client does.
            if metric.is_empty() {
                continue;
            }
            let series = encoder.encode_descriptor(
                &family.encoded_name,
                &family.help,
                None,
                metric.metric_type(),
            )?;
            metric.encode(series)?;
        }
        Ok(())
    }
}

/// The process's metrics. Share it as `Arc<Registry>`: updates through a [`Counter`] or
/// [`Gauge`] handle touch only their series, and a scrape reads each series once.
#[derive(Debug)]
pub struct Registry {
    families: Arc<Families>,
    encoder: prometheus_client::registry::Registry,
}

impl Default for Registry {
    fn default() -> Registry {
        let families = Arc::new(Families::default());
        let mut encoder = prometheus_client::registry::Registry::default();
        encoder.register_collector(Box::new(families.clone()));
        Registry { families, encoder }
    }
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

    /// Registers (or finds) a counter family. The name must end in `_total` and is exposed as
    /// written.
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
        let encoded_name = name
            .strip_suffix("_total")
            .filter(|base| !base.is_empty())
            .ok_or_else(|| MetricsError::CounterWithoutTotalSuffix(name.to_string()))?;
        self.register(name, encoded_name, help, label_names, || {
            Series::Counter(CounterSeries::default())
        })
        .map(Counter)
    }

    /// Registers (or finds) a gauge family; see [`Registry::counter`] for re-registration.
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        label_names: &[&str],
    ) -> Result<Gauge, MetricsError> {
        self.register(name, name, help, label_names, || {
            Series::Gauge(GaugeSeries::default())
        })
        .map(Gauge)
    }

    fn register(
        &self,
        name: &str,
        encoded_name: &str,
        help: &str,
        label_names: &[&str],
        series: impl FnOnce() -> Series,
    ) -> Result<Arc<Family>, MetricsError> {
        if !valid_metric_name(name) {
            return Err(MetricsError::InvalidMetricName(name.to_string()));
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
        let series = series();
        let mut families = self
            .families
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = families.get(name) {
            let same = existing.is_counter() == matches!(series, Series::Counter(_))
                && existing.help == help
                && existing.label_names.iter().eq(label_names.iter());
            return if same {
                Ok(existing.clone())
            } else {
                Err(MetricsError::Conflict(name.to_string()))
            };
        }
        let family = Arc::new(Family {
            name: name.to_string(),
            encoded_name: encoded_name.to_string(),
            help: help.to_string(),
            label_names: label_names.iter().map(|l| l.to_string()).collect(),
            series,
            count: Mutex::new(0),
        });
        // A family without labels has exactly one series; it exists (at 0) from registration
        // on, as in the Go client, so a counter that never fired still shows up as 0.
        if label_names.is_empty() {
            family.add(&Vec::new(), 0.0)?;
        }
        families.insert(name.to_string(), family.clone());
        Ok(family)
    }

    fn family(&self, name: &str) -> Result<Arc<Family>, MetricsError> {
        self.families
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| MetricsError::UnknownMetric(name.to_string()))
    }

    /// Sets one series of a registered family by name, labels as `(name, value)` pairs in any
    /// order. For counters the value must be ≥ 0 (mirroring a total a host reports).
    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) -> Result<(), MetricsError> {
        let family = self.family(name)?;
        let labels = family.label_set_from_pairs(labels)?;
        family.set(&labels, value)
    }

    /// Current value of one series; `None` if the family or the series does not exist or the
    /// labels do not fit.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = self.family(name).ok()?;
        let labels = family.label_set_from_pairs(labels).ok()?;
        family.get(&labels)
    }

    /// The whole registry in the Prometheus text exposition format 0.0.4 ([`CONTENT_TYPE`]):
    /// families by name, each as `# HELP`, `# TYPE` and its samples.
    ///
    /// [`CONTENT_TYPE`]: crate::CONTENT_TYPE
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and the collector only forwards write errors.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.encoder);
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
        self.0.add(&self.0.label_set(label_values)?, delta)
    }

    /// Sets the total outright, for counters that mirror a total counted elsewhere (a host's
    /// own report). Must be ≥ 0; going down is read by Prometheus as a counter reset.
    pub fn set(&self, label_values: &[&str], value: f64) -> Result<(), MetricsError> {
        self.0.set(&self.0.label_set(label_values)?, value)
    }
}

impl Gauge {
    /// Sets the series with these label values (in label-name order). Any `f64`, NaN and
    /// infinities included, is a valid gauge value.
    pub fn set(&self, label_values: &[&str], value: f64) -> Result<(), MetricsError> {
        self.0.set(&self.0.label_set(label_values)?, value)
    }

    /// Adds a finite `delta` (negative to decrease) and returns the new value.
    pub fn add(&self, label_values: &[&str], delta: f64) -> Result<f64, MetricsError> {
        self.0.add(&self.0.label_set(label_values)?, delta)
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
                Ok(self.0.remove(&self.0.label_set(label_values)?))
            }

            /// Current value of one series, if it exists.
            pub fn get(&self, label_values: &[&str]) -> Option<f64> {
                self.0.get(&self.0.label_set(label_values).ok()?)
            }
        }
    )*};
}

series_access!(Counter, Gauge);

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
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
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
    fn names_help_and_types_are_exposed_as_written() {
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
        // Families by name, each HELP (verbatim: no full stop added) then TYPE then its
        // samples; a counter's name keeps its one `_total`; label names in declared order.
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..2],
            [
                "# HELP gopswarm_handoffs_total GOP-boundary handoffs",
                "# TYPE gopswarm_handoffs_total counter",
            ],
            "{text}"
        );
        lines[2..4].sort_unstable();
        assert_eq!(
            lines[2..4],
            [
                "gopswarm_handoffs_total{stream=\"s0\",profile=\"720p\"} 1.0",
                "gopswarm_handoffs_total{stream=\"s1\",profile=\"1080p\"} 3.0",
            ],
            "{text}"
        );
        assert_eq!(
            lines[4..6],
            [
                "# HELP gopswarm_host_stability_score Stability score 0-100 of a host",
                "# TYPE gopswarm_host_stability_score gauge",
            ],
            "{text}"
        );
        assert_eq!(
            lines[8..],
            [
                "# HELP gopswarm_hosts Hosts in the swarm",
                "# TYPE gopswarm_hosts gauge",
                "gopswarm_hosts 2.0",
            ],
            "{text}"
        );

        // And an independent parser reads the same values and types.
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
            find(&s, "gopswarm_hosts", &[]).unwrap().value,
            Value::Gauge(2.0)
        );
    }

    #[test]
    fn by_name_updates_and_removal() {
        let r = Registry::new();
        let g = r.gauge("g", "a gauge", &["host", "stream"]).unwrap();
        r.counter("c_total", "a counter", &["host"]).unwrap();
        r.set("g", &[("stream", "s"), ("host", "h1")], 5.0).unwrap();
        assert_eq!(r.get("g", &[("host", "h1"), ("stream", "s")]), Some(5.0));
        assert_eq!(g.add(&["h1", "s"], -7.5), Ok(-2.5));
        r.set("c_total", &[("host", "h1")], 2.0).unwrap();
        assert_eq!(r.get("c_total", &[("host", "h1")]), Some(2.0));

        assert_eq!(g.remove(&["h1", "s"]), Ok(true));
        assert_eq!(g.remove(&["h1", "s"]), Ok(false));
        assert_eq!(r.get("g", &[("host", "h1"), ("stream", "s")]), None);
        // A family whose last series left is not rendered at all.
        let text = r.render();
        assert!(!text.contains("# TYPE g "), "{text}");
        assert_eq!(
            find(&scrape(&text), "c_total", &[("host", "h1")])
                .unwrap()
                .value,
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
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                c.inc_by(&["a"], bad),
                Err(MetricsError::InvalidValue { .. })
            ));
        }
        for bad in [-0.5, f64::NAN] {
            assert!(matches!(
                c.set(&["a"], bad),
                Err(MetricsError::InvalidValue { .. })
            ));
        }
        assert_eq!(c.get(&["a"]), None, "refused updates create no series");
        // Mirroring a total, then counting on from it; a lower total is a reset.
        c.set(&["a"], 10.0).unwrap();
        assert_eq!(c.inc(&["a"]), Ok(11.0));
        c.set(&["a"], 4.0).unwrap();
        assert_eq!(c.get(&["a"]), Some(4.0));
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
        for bad in ["requests", "_total"] {
            assert_eq!(
                r.counter(bad, "x", &[]).unwrap_err(),
                MetricsError::CounterWithoutTotalSuffix(bad.into())
            );
        }
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
        assert!(matches!(
            r.set("ok_name", &[], 1.0),
            Err(MetricsError::UnknownMetric(_))
        ));
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
            "# HELP restarts_total restarts\n# TYPE restarts_total counter\nrestarts_total 0.0\n"
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
        assert!(matches!(
            g.set(&["and another"], 1.0),
            Err(MetricsError::TooManySeries(_))
        ));
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
}
