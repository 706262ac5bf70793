// SPDX-License-Identifier: MPL-2.0
//! Walk-forward backtests of the load [`Forecaster`] on synthetic demand traces
//! ([`crate::traces`]): the forecaster against the last-value forecast, and the tests that
//! hold it to the product's acceptance criteria.

use crate::traces::Trace;
use gopswarm_orchestrator::forecast::{Exog, ForecastConfig, Forecaster};
use serde::{Deserialize, Serialize};

/// Walk-forward evaluation of a [`Forecaster`] against the last-value forecast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backtest {
    pub horizon: usize,
    /// Forecasts that entered the MAPEs (targets with a non-negligible load).
    pub points: usize,
    pub mape_model: f64,
    /// MAPE of predicting the last observed value.
    pub mape_naive: f64,
    /// `1 - mape_model / mape_naive`: the share of the naive error the model removes.
    pub improvement: f64,
    /// Model forecasts, aligned with `actual`: one per target step from `warmup + horizon` on.
    pub predicted: Vec<f64>,
    pub actual: Vec<f64>,
}

/// Walk-forward backtest with the default model settings for the trace's season.
///
/// At every step `t` the forecaster observes `t`'s load; from `warmup_steps` on it then forecasts
/// `t + horizon`, given that step's announced audience (announcements are known in advance),
/// and the naive forecaster predicts the load at `t`. Both use exactly the loads up to `t`.
pub fn backtest(trace: &Trace, horizon: usize, warmup_steps: usize) -> Backtest {
    let cfg = ForecastConfig {
        steps_per_day: trace.steps_per_day,
        horizon,
        ..ForecastConfig::default()
    };
    backtest_with(trace, cfg, warmup_steps)
}

/// [`backtest`] with explicit forecaster settings (`cfg.horizon` is the horizon tested).
pub fn backtest_with(trace: &Trace, cfg: ForecastConfig, warmup_steps: usize) -> Backtest {
    let mut forecaster = Forecaster::new(cfg);
    let horizon = forecaster.config().horizon;
    let steps = trace.len();
    let exog = |step: usize| Exog {
        expected_viewers: trace.expected_viewers.get(step).copied().unwrap_or(0.0),
    };
    let mut predicted = Vec::new();
    let mut naive = Vec::new();
    let mut actual = Vec::new();
    for step in 0..steps {
        forecaster.observe(trace.load[step], &exog(step));
        let target = step + horizon;
        if step >= warmup_steps && target < steps {
            predicted.push(forecaster.forecast(horizon, &exog(target)));
            naive.push(trace.load[step]);
            actual.push(trace.load[target]);
        }
    }
    // Percentage errors explode on near-empty steps (a quiet stream at night); such steps are
    // left out of both MAPEs alike.
    let mean_actual = actual.iter().sum::<f64>() / actual.len().max(1) as f64;
    let epsilon = (1e-3 * mean_actual).max(1e-9);
    let (mut model_sum, mut naive_sum, mut points) = (0.0, 0.0, 0);
    for ((predicted, naive), actual) in predicted.iter().zip(&naive).zip(&actual) {
        if *actual > epsilon {
            model_sum += (predicted - actual).abs() / actual;
            naive_sum += (naive - actual).abs() / actual;
            points += 1;
        }
    }
    let mape_model = model_sum / points.max(1) as f64;
    let mape_naive = naive_sum / points.max(1) as f64;
    let improvement = if mape_naive > 0.0 {
        1.0 - mape_model / mape_naive
    } else {
        0.0
    };
    Backtest {
        horizon,
        points,
        mape_model,
        mape_naive,
        improvement,
        predicted,
        actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::{TraceConfig, generate};
    use gopswarm_orchestrator::forecast::percentage_error;

    const HORIZON: usize = 10;

    fn default_trace(seed: u64) -> Trace {
        generate(&TraceConfig {
            seed,
            ..TraceConfig::default()
        })
    }

    fn exog(trace: &Trace, step: usize) -> Exog {
        Exog {
            expected_viewers: trace.expected_viewers[step],
        }
    }

    /// Product acceptance criterion: at a 10-minute horizon the model removes at least a fifth
    /// of the last-value forecast's error on the default traces (2 days of warm-up, 2 scored).
    #[test]
    fn beats_the_last_value_forecast_by_a_fifth() {
        let (mut model, mut naive) = (0.0, 0.0);
        for seed in 1..=5 {
            let trace = default_trace(seed);
            let result = backtest(&trace, HORIZON, 2 * trace.steps_per_day);
            eprintln!(
                "seed {seed}: MAPE model {:.4} naive {:.4} improvement {:.3}",
                result.mape_model, result.mape_naive, result.improvement
            );
            assert_eq!(result.points, 2 * trace.steps_per_day - HORIZON);
            assert!(result.predicted.iter().all(|p| p.is_finite() && *p >= 0.0));
            assert!(result.improvement > 0.15, "seed {seed}: {result:?}");
            model += result.mape_model;
            naive += result.mape_naive;
        }
        let improvement = 1.0 - model / naive;
        eprintln!("all seeds: improvement {improvement:.3}");
        assert!(improvement >= 0.2, "improvement {improvement}");
    }

    #[test]
    fn feedback_follows_a_level_shift() {
        let mut adaptive_total = 0.0;
        let mut fixed_total = 0.0;
        for seed in 1..=2 {
            let mut trace = default_trace(seed);
            // Demand grows by 30% from the third day on.
            let shift_from = 2 * trace.steps_per_day;
            for step in shift_from..trace.len() {
                trace.load[step] *= 1.3;
                trace.event_load[step] *= 1.3;
            }
            let cfg = ForecastConfig {
                steps_per_day: trace.steps_per_day,
                ..ForecastConfig::default()
            };
            let adaptive = backtest_with(&trace, cfg.clone(), shift_from);
            let fixed = backtest_with(
                &trace,
                ForecastConfig {
                    adapt: false,
                    ..cfg
                },
                shift_from,
            );
            eprintln!(
                "seed {seed}: MAPE with feedback {:.4}, without {:.4}, naive {:.4}",
                adaptive.mape_model, fixed.mape_model, adaptive.mape_naive
            );
            adaptive_total += adaptive.mape_model;
            fixed_total += fixed.mape_model;
        }
        assert!(
            adaptive_total < 0.85 * fixed_total,
            "{adaptive_total} vs {fixed_total}"
        );
    }

    /// Every announced event of five traces, forecast 10 steps before it starts for its fifth
    /// minute (once the forecaster has a day of history and has seen an earlier event): the
    /// announcement lifts the forecast by about the announced load and brings it much closer
    /// to what happens. Early estimates of the load per viewer are rough (a small event barely
    /// stands out of the background noise), so the size is checked over all events together.
    #[test]
    fn scheduled_event_is_forecast_before_it_starts() {
        let load_per_viewer = TraceConfig::default().load_per_viewer;
        let (mut lift, mut announced, mut with_error, mut without_error) = (0.0, 0.0, 0.0, 0.0);
        let mut events = 0;
        for seed in 1..=5 {
            let trace = default_trace(seed);
            let mut forecaster = Forecaster::new(ForecastConfig::default());
            let mut next = 0;
            for event in trace.events.iter().skip(1) {
                let fifth_minute = event.start_step + 4;
                let Some(made_at) = event.start_step.checked_sub(HORIZON) else {
                    continue;
                };
                if made_at < trace.steps_per_day.max(next)
                    || trace.expected_viewers[made_at] > 0.0
                    || fifth_minute >= trace.len()
                {
                    continue;
                }
                while next <= made_at {
                    forecaster.observe(trace.load[next], &exog(&trace, next));
                    next += 1;
                }
                let with_event = forecaster.forecast(HORIZON + 4, &exog(&trace, fifth_minute));
                let without_event = forecaster.forecast(HORIZON + 4, &Exog::default());
                let actual = trace.load[fifth_minute];
                eprintln!(
                    "seed {seed}, event at step {}: forecast {with_event:.0} (without the \
                     announcement {without_event:.0}), actual {actual:.0}",
                    event.start_step
                );
                assert!(with_event > without_event);
                lift += with_event - without_event;
                announced += trace.expected_viewers[fifth_minute] * load_per_viewer;
                with_error += (with_event - actual).abs();
                without_error += (without_event - actual).abs();
                events += 1;
            }
        }
        eprintln!(
            "{events} events: lift {lift:.0} for {announced:.0} announced; \
             absolute error {with_error:.0} with the announcement, {without_error:.0} without"
        );
        assert!(events >= 10, "only {events} events checked");
        assert!(
            (0.6..1.4).contains(&(lift / announced)),
            "{lift} vs {announced}"
        );
        assert!(
            with_error < 0.6 * without_error,
            "{with_error} vs {without_error}"
        );
    }

    #[test]
    fn scores_exactly_the_forecasts_it_hands_out() {
        let trace = default_trace(4);
        let mut forecaster = Forecaster::new(ForecastConfig::default());
        let memory = forecaster.config().error_memory_steps;
        let mut handed_out = vec![None; trace.len() + HORIZON];
        let (mut scored, mut mape, mut signed) = (0u64, 0.0, 0.0);
        for step in 0..trace.len() {
            let actual = trace.load[step];
            if let Some(forecast) = handed_out[step] {
                scored += 1;
                let rate = (1.0 / scored as f64).max(1.0 / memory);
                mape += rate * (percentage_error(forecast, actual) - mape);
                signed += rate * (actual - forecast - signed);
            }
            forecaster.observe(actual, &exog(&trace, step));
            if step + HORIZON < trace.len() {
                handed_out[step + HORIZON] =
                    Some(forecaster.forecast(HORIZON, &exog(&trace, step + HORIZON)));
            }
        }
        let stats = forecaster.stats();
        assert_eq!(stats.observed, trace.len() as u64);
        assert_eq!(stats.scored, scored);
        assert!(
            (stats.mape_recent - mape).abs() < 1e-9,
            "{stats:?} vs {mape}"
        );
        assert!(
            (stats.signed_error_recent - signed).abs() < 1e-6,
            "{stats:?} vs {signed}"
        );
        // It learned roughly what a viewer costs (the truth is 0.0015 on average).
        assert!((0.00075..0.00225).contains(&stats.per_viewer), "{stats:?}");
    }

    /// Asked for horizons other than the one it scores itself at, the forecaster still beats
    /// the last value.
    #[test]
    fn other_horizons_beat_the_last_value_too() {
        let trace = default_trace(6);
        let warmup = 2 * trace.steps_per_day;
        let horizons = [1, 5, 30];
        let mut forecaster = Forecaster::new(ForecastConfig::default());
        let mut model = [0.0; 3];
        let mut naive = [0.0; 3];
        for step in 0..trace.len() - 30 {
            forecaster.observe(trace.load[step], &exog(&trace, step));
            if step < warmup {
                continue;
            }
            for (index, steps_ahead) in horizons.into_iter().enumerate() {
                let target = step + steps_ahead;
                let actual = trace.load[target];
                let forecast = forecaster.forecast(steps_ahead, &exog(&trace, target));
                model[index] += (forecast - actual).abs() / actual;
                naive[index] += (trace.load[step] - actual).abs() / actual;
            }
        }
        for (index, steps_ahead) in horizons.into_iter().enumerate() {
            let ratio = model[index] / naive[index];
            eprintln!("{steps_ahead} steps ahead: MAPE model / naive {ratio:.3}");
            assert!(ratio < 1.0, "{steps_ahead} steps ahead: {ratio}");
        }
    }
}
