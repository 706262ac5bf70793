// SPDX-License-Identifier: MPL-2.0
//! The learned disconnect model ([`gopswarm_orchestrator::learn`]) against the hand-weighted
//! stability score, on simulated hosts ([`crate::churn::history`]) the model never saw; and
//! the tests of training on simulated history.

use crate::churn::history;
use anyhow::bail;
use gopswarm_orchestrator::learn::{Sample, auc, train};
use gopswarm_orchestrator::score::{ScoreConfig, stability};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Interval of the history [`compare`] trains and evaluates on, minutes.
pub const COMPARE_INTERVAL_MINUTES: f64 = 10.0;

/// Share of hosts [`compare`] holds out for evaluation.
pub const HELD_OUT_FRACTION: f64 = 0.3;

/// The learned model against the hand-weighted score on hosts the model never saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub train_samples: usize,
    pub test_samples: usize,
    /// Disconnects among the test samples.
    pub positives_test: usize,
    /// ROC AUC of the learned model's disconnect probability on the held-out hosts.
    pub auc_learned: f64,
    /// ROC AUC of `100 - stability score` on the same samples.
    pub auc_hand: f64,
    /// Wall-clock time of [`train`], seconds (for reports; varies run to run).
    pub train_seconds: f64,
}

/// Simulates `hosts` hosts for `days` ([`history`] with [`COMPARE_INTERVAL_MINUTES`]),
/// trains on [`HELD_OUT_FRACTION`]'s complement of the hosts and scores both predictors on
/// the rest. The split is by host, not by sample: samples of one host are correlated
/// (same profile, growing history), and a model must predict hosts it has not met.
pub fn compare(seed: u64, hosts: usize, days: f64) -> anyhow::Result<Comparison> {
    if hosts < 4 {
        bail!("comparing needs at least 4 hosts to split into training and held-out hosts");
    }
    let samples = history(seed, hosts, days, COMPARE_INTERVAL_MINUTES);
    let mut host_order: Vec<usize> = (0..hosts).collect();
    // A different stream from the hosts' own draws, so the split is independent of them.
    let mut split_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    host_order.shuffle(&mut split_rng);
    let held_out_count = ((hosts as f64 * HELD_OUT_FRACTION).round() as usize).clamp(1, hosts - 1);
    let mut held_out = vec![false; hosts];
    for &host in &host_order[..held_out_count] {
        held_out[host] = true;
    }
    let (test, train_set): (Vec<Sample>, Vec<Sample>) =
        samples.into_iter().partition(|s| held_out[s.host]);
    let started = std::time::Instant::now();
    let model = train(&train_set)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let labels: Vec<bool> = test.iter().map(|s| s.label).collect();
    let positives_test = labels.iter().filter(|&&l| l).count();
    if positives_test == 0 || positives_test == labels.len() {
        bail!(
            "the {} held-out samples have {positives_test} disconnects: too few hosts or days \
             to evaluate",
            labels.len()
        );
    }
    let learned: Vec<f64> = test.iter().map(|s| model.predict_disconnect(s)).collect();
    let config = ScoreConfig::default();
    let hand: Vec<f64> = test
        .iter()
        .map(|s| 100.0 - stability(&s.inputs, &config).score)
        .collect();
    Ok(Comparison {
        train_samples: train_set.len(),
        test_samples: test.len(),
        positives_test,
        auc_learned: auc(&learned, &labels),
        auc_hand: auc(&hand, &labels),
        train_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gopswarm_orchestrator::learn::{FEATURE_NAMES, Model};
    use gopswarm_orchestrator::score::StabilityInputs;
    use std::sync::OnceLock;

    /// A small history and a model trained on it, shared by the tests (training is the slow
    /// part in a debug build).
    fn trained() -> &'static (Vec<Sample>, Model) {
        static TRAINED: OnceLock<(Vec<Sample>, Model)> = OnceLock::new();
        TRAINED.get_or_init(|| {
            let samples = history(7, 30, 2.0, COMPARE_INTERVAL_MINUTES);
            let model = train(&samples).expect("trains");
            (samples, model)
        })
    }

    #[test]
    fn learned_model_beats_chance_and_the_hand_score_on_held_out_hosts() {
        let c = compare(3, 100, 2.0).expect("compares");
        assert!(c.positives_test >= 100, "{c:?}");
        assert!(c.train_samples > c.test_samples, "{c:?}");
        assert!(
            c.auc_hand > 0.6,
            "the hand score is a sensible predictor: {c:?}"
        );
        assert!(c.auc_learned > 0.7, "{c:?}");
        assert!(c.auc_learned >= c.auc_hand, "{c:?}");
    }

    /// The full-size comparison for the record:
    /// `cargo test --release -p gopswarm-sim full_size_comparison -- --ignored --nocapture`
    #[test]
    #[ignore = "a minute in release mode; run it by hand"]
    fn full_size_comparison() {
        let c = compare(1, 1000, 7.0).expect("compares");
        println!("1000 hosts x 7 days, 10-minute intervals: {c:#?}");
        assert!(c.auc_learned > c.auc_hand && c.auc_hand > 0.5, "{c:?}");
    }

    #[test]
    fn training_is_deterministic_per_seed() {
        let (samples, model) = trained();
        assert_eq!(samples, &history(7, 30, 2.0, COMPARE_INTERVAL_MINUTES));
        assert_ne!(samples, &history(8, 30, 2.0, COMPARE_INTERVAL_MINUTES));
        let some = &samples[..1500];
        let again = train(some).unwrap();
        assert_eq!(again, train(some).unwrap());
        assert_ne!(&again, model, "but it does learn from the data");
    }

    #[test]
    fn learned_probabilities_are_calibrated_on_the_training_data() {
        let (samples, model) = trained();
        let rate = samples.iter().filter(|s| s.label).count() as f64 / samples.len() as f64;
        let mean = samples
            .iter()
            .map(|s| model.predict_disconnect(s))
            .sum::<f64>()
            / samples.len() as f64;
        assert!(
            (mean / rate - 1.0).abs() < 0.05,
            "mean {mean} vs rate {rate}"
        );
        // It learned the obvious: a history of disconnects is bad news.
        let weight = |name: &str| model.weights().find(|(n, _)| *n == name).unwrap().1;
        assert!(weight("log_disconnect_rate") > 0.0);
    }

    #[test]
    fn model_survives_a_serde_round_trip() {
        let (samples, model) = trained();
        let json = serde_json::to_string(model).unwrap();
        let back: Model = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, model);
        for s in samples.iter().take(500) {
            assert_eq!(back.predict_disconnect(s), model.predict_disconnect(s));
        }
    }

    #[test]
    fn a_stored_model_of_another_feature_set_or_with_bad_numbers_is_refused() {
        let (_, model) = trained();
        let mut value = serde_json::to_value(model).unwrap();
        value["features"][0] = "bandwidth".into();
        let err = serde_json::from_value::<Model>(value.clone()).unwrap_err();
        assert!(err.to_string().contains("retrain"), "{err}");
        value["features"] = serde_json::to_value(&FEATURE_NAMES[..]).unwrap();
        let good = value.clone();
        value["weights"] = serde_json::json!(["1.0"]);
        let err = serde_json::from_value::<Model>(value).unwrap_err();
        assert!(err.to_string().contains("features"), "{err}");
        let mut value = good;
        value["intercept"] = "NaN".into();
        let err = serde_json::from_value::<Model>(value).unwrap_err();
        assert!(err.to_string().contains("not a finite number"), "{err}");
    }

    #[test]
    fn bad_training_data_is_an_error_not_a_panic() {
        let err = train(&[]).unwrap_err().to_string();
        assert!(err.contains("no samples"), "{err}");
        let (samples, _) = trained();
        let mut calm: Vec<Sample> = samples.iter().take(200).cloned().collect();
        calm.iter_mut().for_each(|s| s.label = false);
        let err = train(&calm).unwrap_err().to_string();
        assert!(
            err.contains("all 200 samples are without a disconnect"),
            "{err}"
        );
        calm.iter_mut().for_each(|s| s.label = true);
        let err = train(&calm).unwrap_err().to_string();
        assert!(err.contains("all 200 samples are disconnects"), "{err}");
        assert!(compare(1, 3, 1.0).is_err());
    }

    #[test]
    fn unmeasured_and_nonsense_inputs_give_a_probability() {
        let (_, model) = trained();
        let mut inputs = StabilityInputs {
            realtime_fps: 30.0,
            ..Default::default()
        };
        let p = model.disconnect_probability(&inputs, 0, 0.0);
        assert!(
            p > 0.0 && p < 0.2,
            "a new, unmeasured host is no disaster: {p}"
        );
        inputs.rtt_ms = Some(f64::NAN);
        inputs.bandwidth_mbps = Some(f64::INFINITY);
        inputs.online_hours = f64::NAN;
        let p = model.disconnect_probability(&inputs, 99_999, f64::NAN);
        assert!(p > 0.0 && p < 1.0, "{p}");
    }
}
