// SPDX-License-Identifier: MPL-2.0
//! A learned stability model: logistic regression of "will this host disconnect within the
//! next interval?" on what the orchestrator knows about the host, the time of day and its
//! load, trained on the host history the orchestrator records ([`Sample`]; `gopswarm learn`
//! trains on it). The simulator crate (`gopswarm-sim`) makes synthetic history to test it on.
//!
//! The hand-weighted stability score (`crate::score::stability`) is additive and ignores the
//! clock and the load, so it cannot express that a wifi host is worse in the evening or that
//! a full, underpowered host runs hot. The features here add those interactions; [`auc`]
//! measures on held-out hosts whether learning buys anything over the hand score (the
//! simulator's `learn_compare` does that on simulated hosts).
//!
//! The fit is done by `linfa-logistic` (L-BFGS on the L2-penalised log loss). The model keeps
//! its own named, standardised coefficients rather than linfa's fitted type: the persisted
//! form stays the same across linfa versions, reads as a table of weights (for `explain`),
//! and a prediction is one dot product with no allocation.

use crate::score::{DeviceClass, NetInterface, StabilityInputs};
use anyhow::{Context, bail};
use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use std::f64::consts::TAU;

/// Names of the model's features, in the order of [`features`]. A persisted model records
/// them, so a model from another feature set is refused at load rather than misread.
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "log_bandwidth",
    "bandwidth_unknown",
    "rtt_ms",
    "rtt_unknown",
    "log_jitter",
    "jitter_unknown",
    "log_power",
    "power_unknown",
    "server",
    "desktop",
    "laptop",
    "embedded",
    "ethernet",
    "wifi",
    "cellular",
    "home_region",
    "other_region",
    "log_sessions",
    "log_disconnects",
    "log_online_hours",
    "log_disconnect_rate",
    "log_gop_failure_rate",
    "day_sin",
    "day_cos",
    "half_day_sin",
    "half_day_cos",
    "load",
    "full",
    "full_x_power_deficit",
    "home_wifi_x_day_sin",
    "home_wifi_x_day_cos",
    "home_wifi_x_half_day_sin",
    "home_wifi_x_half_day_cos",
    "home_laptop_x_day_sin",
    "home_laptop_x_day_cos",
    "home_laptop_x_half_day_sin",
    "home_laptop_x_half_day_cos",
];

/// Number of features.
pub const FEATURE_COUNT: usize = 37;

/// L2 penalty on the (standardised) weights. The log loss is summed over samples, so this is
/// small next to it for any real data set; it only keeps weights finite when a feature
/// separates the labels perfectly in a small sample.
const L2_PENALTY: f64 = 1.0;

/// L-BFGS iterations at most. Started from the base rate on standardised features, the fit
/// meets the gradient tolerance in a few dozen.
const MAX_ITERATIONS: u64 = 100;

/// Norm of the log-loss gradient, per sample, at which the fit counts as converged. Tighter
/// tolerances move the mean training log loss by less than 1e-5 and cost several times the
/// iterations (measured on simulated histories of 25k to 140k samples).
const GRADIENT_TOLERANCE_PER_SAMPLE: f64 = 1e-4;

/// Minutes in a day: the period of the time-of-day features.
pub const MINUTES_PER_DAY: usize = 1440;

/// One training example: an online host at the start of an interval, what the orchestrator
/// knew about it then, and whether it dropped out during the interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub host: usize,
    /// Index of the interval since the start of the recorded span.
    pub t_interval: usize,
    pub inputs: StabilityInputs,
    /// Swarm clock at the start of the interval, 0..1440.
    pub minute_of_day: usize,
    /// Fraction of the host's slots that were busy.
    pub load_fraction: f64,
    /// The host disconnected (or left) during the interval.
    pub label: bool,
}

/// A value that was measured and is a number; NaN and infinities count as unmeasured, as in
/// the hand score.
fn known(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite())
}

/// An optional measurement as (value, unknown flag). An unknown value is NaN here and
/// becomes the training mean when standardised, so it counts as an average host, as the hand
/// score's neutral values do; the flag lets the model learn otherwise where the training
/// data has unknowns.
fn measured(value: Option<f64>, transform: impl Fn(f64) -> f64) -> (f64, f64) {
    match known(value) {
        Some(v) => (transform(v), 0.0),
        None => (f64::NAN, 1.0),
    }
}

fn flag(condition: bool) -> f64 {
    if condition { 1.0 } else { 0.0 }
}

/// The raw (unstandardised) features of a host at `minute_of_day` (swarm clock) with
/// `load_fraction` of its slots busy, named by [`FEATURE_NAMES`]. Heavy-tailed quantities
/// enter as logarithms, so that a tenfold change means the same everywhere on the scale.
/// Unmeasured values are NaN (see [`Model`] for how they are used).
pub fn features(
    inputs: &StabilityInputs,
    minute_of_day: usize,
    load_fraction: f64,
) -> [f64; FEATURE_COUNT] {
    let (log_bandwidth, bandwidth_unknown) = measured(inputs.bandwidth_mbps, |b| b.max(0.1).ln());
    let (rtt, rtt_unknown) = measured(inputs.rtt_ms, |r| r.max(0.0));
    let (log_jitter, jitter_unknown) = measured(inputs.jitter_ms, |j| j.max(0.0).ln_1p());
    let power_ratio = known(inputs.bench_fps)
        .filter(|_| inputs.realtime_fps > 0.0)
        .map(|fps| fps.max(0.0) / inputs.realtime_fps);
    let (log_power, power_unknown) = measured(power_ratio, |p| p.max(0.01).ln());
    // Power below twice real time leaves little headroom for a full host (as the hand score's
    // power margin assumes); an unknown benchmark counts as average.
    let power_deficit = power_ratio.map_or(0.5, |p| (1.0 - p / 2.0).clamp(0.0, 1.0));

    let device = inputs.device_class;
    let interface = inputs.interface;
    let home = inputs.home_region == Some(true);

    // Same prior as the hand score's history term: a host without history is neither perfect
    // nor hopeless.
    let online_hours = inputs.online_hours.max(0.0);
    let disconnect_rate = (inputs.disconnects as f64 + 0.2) / (online_hours + 2.0);
    let gop_failure_rate = (inputs.failed_gops as f64 + 1.0) / (inputs.gops_encoded as f64 + 200.0);

    let angle = TAU * (minute_of_day % MINUTES_PER_DAY) as f64 / MINUTES_PER_DAY as f64;
    let day = [
        angle.sin(),
        angle.cos(),
        (2.0 * angle).sin(),
        (2.0 * angle).cos(),
    ];
    let load = if load_fraction.is_nan() {
        0.0
    } else {
        load_fraction.clamp(0.0, 1.0)
    };
    let full = flag(load > 0.9);
    // The swarm clock is the host's local clock only in the home region, so the daily
    // rhythm of home networks and sleeping laptops is only learnable there.
    let home_wifi = flag(home && interface == NetInterface::Wifi);
    let home_laptop = flag(home && device == DeviceClass::Laptop);

    [
        log_bandwidth,
        bandwidth_unknown,
        rtt,
        rtt_unknown,
        log_jitter,
        jitter_unknown,
        log_power,
        power_unknown,
        flag(device == DeviceClass::Server),
        flag(device == DeviceClass::Desktop),
        flag(device == DeviceClass::Laptop),
        flag(device == DeviceClass::Embedded),
        flag(interface == NetInterface::Ethernet),
        flag(interface == NetInterface::Wifi),
        flag(interface == NetInterface::Cellular),
        flag(home),
        flag(inputs.home_region == Some(false)),
        (inputs.sessions as f64).ln_1p(),
        (inputs.disconnects as f64).ln_1p(),
        online_hours.ln_1p(),
        disconnect_rate.ln(),
        gop_failure_rate.ln(),
        day[0],
        day[1],
        day[2],
        day[3],
        load,
        full,
        full * power_deficit,
        home_wifi * day[0],
        home_wifi * day[1],
        home_wifi * day[2],
        home_wifi * day[3],
        home_laptop * day[0],
        home_laptop * day[1],
        home_laptop * day[2],
        home_laptop * day[3],
    ]
}

/// A feature value in standard deviations from the training mean; an unknown value is at
/// the mean.
fn standardised(value: f64, mean: f64, scale: f64) -> f64 {
    if value.is_finite() {
        (value - mean) / scale
    } else {
        0.0
    }
}

/// A trained disconnect model: logistic regression on standardised features. An unmeasured
/// input sits at the training mean, so a host nobody has measured yet is predicted like an
/// average host of its kind, not like one with a perfect (or hopeless) network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredModel", into = "StoredModel")]
pub struct Model {
    /// [`FEATURE_NAMES`] at training time.
    features: Vec<String>,
    /// Training mean and standard deviation of each feature.
    means: Vec<f64>,
    scales: Vec<f64>,
    /// Weight of each standardised feature, and the intercept (log odds of an average host).
    weights: Vec<f64>,
    intercept: f64,
}

/// The persisted form of a [`Model`], checked on the way in.
///
/// Numbers are kept as decimal strings. serde_json, without its `float_roundtrip` feature
/// (which this workspace does not enable), may read a number back one unit in the last place
/// off; Rust's own parser reads the shortest decimal Rust printed back to the same bits. So a
/// stored model predicts exactly what it predicted before it was stored.
#[derive(Serialize, Deserialize)]
struct StoredModel {
    features: Vec<String>,
    means: Vec<String>,
    scales: Vec<String>,
    weights: Vec<String>,
    intercept: String,
}

fn to_decimal(value: &f64) -> String {
    format!("{value:?}")
}

fn from_decimals(what: &str, decimals: &[String]) -> Result<Vec<f64>, String> {
    decimals
        .iter()
        .map(|d| {
            d.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("stability model: {what} holds {d:?}, not a finite number"))
        })
        .collect()
}

impl From<Model> for StoredModel {
    fn from(model: Model) -> StoredModel {
        let decimals = |values: &[f64]| values.iter().map(to_decimal).collect();
        StoredModel {
            means: decimals(&model.means),
            scales: decimals(&model.scales),
            weights: decimals(&model.weights),
            intercept: to_decimal(&model.intercept),
            features: model.features,
        }
    }
}

impl TryFrom<StoredModel> for Model {
    type Error = String;

    fn try_from(stored: StoredModel) -> Result<Model, String> {
        if stored.features != FEATURE_NAMES {
            return Err(format!(
                "stability model was trained on features {:?}, this build computes {:?}: retrain it",
                stored.features, FEATURE_NAMES
            ));
        }
        let means = from_decimals("means", &stored.means)?;
        let scales = from_decimals("scales", &stored.scales)?;
        let weights = from_decimals("weights", &stored.weights)?;
        let intercept = from_decimals("intercept", std::slice::from_ref(&stored.intercept))?[0];
        let lengths = [means.len(), scales.len(), weights.len()];
        if lengths.iter().any(|&n| n != FEATURE_COUNT) {
            return Err(format!(
                "stability model has {lengths:?} means/scales/weights for {FEATURE_COUNT} features"
            ));
        }
        if scales.iter().any(|&s| s <= 0.0) {
            return Err("stability model has a non-positive feature scale".into());
        }
        Ok(Model {
            features: stored.features,
            means,
            scales,
            weights,
            intercept,
        })
    }
}

impl Model {
    /// Probability that the host disconnects within one interval (of the length the training
    /// history used) from `minute_of_day` (swarm clock) on, with `load_fraction` of its slots
    /// busy.
    pub fn disconnect_probability(
        &self,
        inputs: &StabilityInputs,
        minute_of_day: usize,
        load_fraction: f64,
    ) -> f64 {
        let raw = features(inputs, minute_of_day, load_fraction);
        let log_odds = raw
            .iter()
            .zip(&self.means)
            .zip(&self.scales)
            .zip(&self.weights)
            .map(|(((&x, &mean), &scale), weight)| weight * standardised(x, mean, scale))
            .sum::<f64>()
            + self.intercept;
        1.0 / (1.0 + (-log_odds).exp())
    }

    /// [`Model::disconnect_probability`] of a training or test sample.
    pub fn predict_disconnect(&self, sample: &Sample) -> f64 {
        self.disconnect_probability(&sample.inputs, sample.minute_of_day, sample.load_fraction)
    }

    /// Each feature's weight on the standardised scale (change of log odds per standard
    /// deviation), comparable across features: what the model learned, for `explain`.
    pub fn weights(&self) -> impl Iterator<Item = (&str, f64)> {
        self.features
            .iter()
            .map(String::as_str)
            .zip(self.weights.iter().copied())
    }

    /// Log odds of disconnecting for a host with average features.
    pub fn intercept(&self) -> f64 {
        self.intercept
    }
}

/// Fits the disconnect model to `samples` (each labelled with whether the host disconnected
/// during its interval). Fails, rather than returning a meaningless model, when there is
/// nothing to learn from: no samples, or samples of one label only.
pub fn train(samples: &[Sample]) -> anyhow::Result<Model> {
    if samples.is_empty() {
        bail!("cannot train the stability model on no samples");
    }
    let positives = samples.iter().filter(|s| s.label).count();
    if positives == 0 || positives == samples.len() {
        bail!(
            "cannot train the stability model: all {} samples are {}; it needs hosts that \
             disconnected and hosts that did not",
            samples.len(),
            if positives == 0 {
                "without a disconnect"
            } else {
                "disconnects"
            }
        );
    }
    let rows = samples.len();
    let mut x = Array2::<f64>::zeros((rows, FEATURE_COUNT));
    for (mut row, sample) in x.rows_mut().into_iter().zip(samples) {
        let raw = features(&sample.inputs, sample.minute_of_day, sample.load_fraction);
        row.assign(&ndarray::aview1(&raw));
    }
    // Statistics over the known values of each feature; unknown (NaN) values then sit at the
    // mean, 0 after standardisation.
    let stats: Vec<(f64, f64)> = x
        .columns()
        .into_iter()
        .map(|column| {
            let known: Vec<f64> = column.iter().copied().filter(|v| v.is_finite()).collect();
            if known.is_empty() {
                return (0.0, 1.0);
            }
            let count = known.len() as f64;
            let mean = known.iter().sum::<f64>() / count;
            let variance = known.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count;
            // A constant feature carries nothing; scale 1 leaves it at 0 after centring.
            (
                mean,
                if variance > 1e-18 {
                    variance.sqrt()
                } else {
                    1.0
                },
            )
        })
        .collect();
    let (means, scales): (Vec<f64>, Vec<f64>) = stats.into_iter().unzip();
    for mut row in x.rows_mut() {
        for (column, v) in row.iter_mut().enumerate() {
            *v = standardised(*v, means[column], scales[column]);
        }
    }
    let labels: Array1<bool> = samples.iter().map(|s| s.label).collect();
    // Start from the base rate rather than from even odds: with disconnects rare, most of the
    // solver's first iterations would otherwise go to finding the intercept. linfa models the
    // more frequent label, so its intercept starts at the log odds of that one.
    let majority = positives.max(rows - positives) as f64;
    let minority = positives.min(rows - positives) as f64;
    let mut start = Array1::<f64>::zeros(FEATURE_COUNT + 1);
    start[FEATURE_COUNT] = (majority / minority).ln();
    let fitted = LogisticRegression::default()
        .initial_params(start)
        .alpha(L2_PENALTY)
        .max_iterations(MAX_ITERATIONS)
        .gradient_tolerance(GRADIENT_TOLERANCE_PER_SAMPLE * rows as f64)
        .fit(&DatasetBase::new(x, labels))
        .context("fitting the stability model (logistic regression) failed")?;
    // linfa models the probability of its "positive" class, which is whichever label is
    // more frequent (here: no disconnect), so flip the sign to model a disconnect.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    let weights: Vec<f64> = fitted.params().iter().map(|w| sign * w).collect();
    let intercept = sign * fitted.intercept();
    if !weights.iter().chain([&intercept]).all(|w| w.is_finite()) {
        bail!("fitting the stability model diverged (non-finite weights)");
    }
    Ok(Model {
        features: FEATURE_NAMES.iter().map(|n| n.to_string()).collect(),
        means,
        scales,
        weights,
        intercept,
    })
}

/// Area under the ROC curve of `scores` (higher: more likely `true`) against `labels`: the
/// chance that a random positive scores above a random negative, ties counting half.
/// Computed from ranks (Mann-Whitney U) in O(n log n), tied scores sharing their mean rank.
///
/// NaN when there are no positives or no negatives (it is undefined then). NaN scores sort
/// above every number and do not tie with each other. Panics if the slices differ in length,
/// which is a bug in the caller.
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    assert_eq!(
        scores.len(),
        labels.len(),
        "auc: {} scores for {} labels",
        scores.len(),
        labels.len()
    );
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut positive_rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // Ranks start+1 ..= end share their mean.
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        let tied_positives = order[start..end].iter().filter(|&&i| labels[i]).count();
        positive_rank_sum += mean_rank * tied_positives as f64;
        start = end;
    }
    let p = positives as f64;
    (positive_rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// AUC by comparing every positive with every negative.
    fn auc_by_pairs(scores: &[f64], labels: &[bool]) -> f64 {
        let mut wins = 0.0;
        let mut pairs = 0.0;
        for (s_pos, _) in scores.iter().zip(labels).filter(|(_, l)| **l) {
            for (s_neg, _) in scores.iter().zip(labels).filter(|(_, l)| !**l) {
                pairs += 1.0;
                if s_pos > s_neg {
                    wins += 1.0;
                } else if s_pos == s_neg {
                    wins += 0.5;
                }
            }
        }
        wins / pairs
    }

    #[test]
    fn auc_of_hand_computed_cases() {
        // Perfect, reversed, and no information at all.
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]), 1.0);
        assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]), 0.0);
        assert_eq!(auc(&[0.5; 4], &[false, true, false, true]), 0.5);
        // Positives 0.35 and 0.8, negatives 0.1 and 0.4: 0.35 beats 0.1 but not 0.4, 0.8
        // beats both: 3 of 4 pairs.
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            0.75
        );
        // Ties: positives {0.5, 0.9}, negatives {0.5, 0.2}: 0.5 (tie) + 1 + 1 + 1 of 4.
        assert_eq!(
            auc(&[0.5, 0.5, 0.2, 0.9], &[true, false, false, true]),
            0.875
        );
        // Undefined without both labels.
        assert!(auc(&[0.1, 0.2], &[true, true]).is_nan());
        assert!(auc(&[0.1, 0.2], &[false, false]).is_nan());
        assert!(auc(&[], &[]).is_nan());
    }

    #[test]
    fn auc_by_ranks_equals_auc_by_pairs() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..50 {
            let n = rng.random_range(2..60);
            // Coarse scores so that there are many ties.
            let scores: Vec<f64> = (0..n).map(|_| rng.random_range(0..8) as f64).collect();
            let labels: Vec<bool> = (0..n).map(|_| rng.random_bool(0.3)).collect();
            let by_ranks = auc(&scores, &labels);
            if labels.iter().all(|&l| l) || labels.iter().all(|&l| !l) {
                assert!(by_ranks.is_nan());
            } else {
                assert!((by_ranks - auc_by_pairs(&scores, &labels)).abs() < 1e-12);
            }
        }
    }

    #[test]
    #[should_panic(expected = "auc: 2 scores for 1 labels")]
    fn auc_refuses_mismatched_lengths() {
        auc(&[0.1, 0.2], &[true]);
    }
}
