// SPDX-License-Identifier: MPL-2.0
//! `gopswarm learn`: train the learned disconnect model on the host history the
//! orchestrator persisted, report its AUC against the hand-weighted stability score on hosts
//! held out of training, and write the model for `gopswarm orchestrator --disconnect-model`.

use anyhow::{Context, Result, bail};
use gopswarm_orchestrator::controller::fleet::HistorySample;
use gopswarm_orchestrator::learn;
use gopswarm_orchestrator::learn::Sample;
use gopswarm_orchestrator::score::{ScoreConfig, stability};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct LearnOptions {
    /// State database of the orchestrator
    #[arg(long, default_value = "gopswarm-state.redb")]
    state: PathBuf,
    /// Where to write the model (JSON)
    #[arg(long, default_value = "disconnect-model.json")]
    out: PathBuf,
}

pub fn run(o: LearnOptions) -> Result<()> {
    let r = train_and_write(&o.state, &o.out)?;
    println!("{}", serde_json::to_string_pretty(&r)?);
    println!("model written to {}", o.out.display());
    Ok(())
}

/// Held-out evaluation of a model trained on the other hosts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub samples: usize,
    pub hosts: usize,
    pub disconnects: usize,
    pub held_out_hosts: usize,
    /// `None` when the held-out hosts have only one kind of label.
    pub auc_learned: Option<f64>,
    pub auc_hand: Option<f64>,
}

fn to_samples(history: &[HistorySample]) -> Vec<Sample> {
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    history
        .iter()
        .enumerate()
        .map(|(t, h)| {
            let next = ids.len();
            let host = *ids.entry(h.host.as_str()).or_insert(next);
            Sample {
                host,
                t_interval: t,
                inputs: h.inputs.clone(),
                minute_of_day: h.minute_of_day,
                load_fraction: h.load_fraction,
                label: h.label,
            }
        })
        .collect()
}

/// Train on every sample; evaluate on every third host held out of a first training.
pub fn train(history: &[HistorySample]) -> Result<(learn::Model, Report)> {
    let samples = to_samples(history);
    let hosts = samples.iter().map(|s| s.host).max().map_or(0, |m| m + 1);
    let disconnects = samples.iter().filter(|s| s.label).count();
    if samples.is_empty() {
        bail!(
            "no host history recorded yet (the orchestrator records one sample per host every 10 minutes)"
        );
    }
    let (test, train): (Vec<Sample>, Vec<Sample>) =
        samples.iter().cloned().partition(|s| s.host % 3 == 2);
    let mut report = Report {
        samples: samples.len(),
        hosts,
        disconnects,
        held_out_hosts: hosts / 3,
        auc_learned: None,
        auc_hand: None,
    };
    let labels: Vec<bool> = test.iter().map(|s| s.label).collect();
    if labels.iter().any(|l| *l)
        && labels.iter().any(|l| !*l)
        && let Ok(m) = learn::train(&train)
    {
        let learned: Vec<f64> = test.iter().map(|s| m.predict_disconnect(s)).collect();
        let cfg = ScoreConfig::default();
        let hand: Vec<f64> = test
            .iter()
            .map(|s| 100.0 - stability(&s.inputs, &cfg).score)
            .collect();
        report.auc_learned = Some(learn::auc(&learned, &labels));
        report.auc_hand = Some(learn::auc(&hand, &labels));
    }
    let model = learn::train(&samples).context("training on all samples")?;
    Ok((model, report))
}

/// Train on the history in the state database at `state` and write the model to `out`.
pub fn train_and_write(state: &Path, out: &Path) -> Result<Report> {
    let store = gopswarm_orchestrator::store::Store::open(state)?;
    let history = store.load_samples()?;
    let (model, report) = train(&history)?;
    std::fs::write(out, serde_json::to_vec_pretty(&model)?)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(report)
}

/// A model `gopswarm learn` wrote, for `gopswarm orchestrator --disconnect-model`.
pub fn load_model(path: &Path) -> Result<learn::Model> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a disconnect model", path.display()))
}
