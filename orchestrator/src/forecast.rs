// SPDX-License-Identifier: MPL-2.0
//! Load prediction that learns from its own mistakes.
//!
//! The swarm has to start encoders before demand arrives, so it needs the load a few minutes
//! ahead. The product requirement is that predicted and actual load are compared and that the
//! prediction adjusts itself from its own error. [`Forecaster`] does that in three layers:
//!
//! 1. **A seasonal model** of the background load: Holt-Winters (level, damped trend, daily
//!    season). The season is a cyclic piecewise-linear curve through one point per hour rather
//!    than one value per step: a day or two of minute-level history is mostly noise, and hourly
//!    points average it away while still following the prime-time ramp. Until a season point
//!    has seen enough days it is the plain average of all of them instead of an exponential one,
//!    because early on every day of history counts.
//! 2. **An event term**: announced events (matches, concerts) come with an expected audience.
//!    The load per announced viewer is learned online, as a long-run average for events that
//!    have not started yet and per running event once it shows its real pull (announcements are
//!    only roughly right). A scheduled spike is therefore predicted before it arrives, and
//!    events do not leak into the seasonal model.
//! 3. **Feedback from its own errors**: every forecast made at the configured horizon is kept
//!    until its target step arrives and is then scored. From those scores the forecaster learns
//!    its bias and how much of the current deviation from the model will still be there at the
//!    horizon (audiences drift, so deviations persist for a while), and it runs a bank of
//!    candidate models side by side (smoothing settings, additive or multiplicative season),
//!    answering with whichever has erred least recently. Nothing has to be tuned per stream
//!    or per host, and a stream whose demand grows or shrinks is followed within hours.
//!
//! Each step costs O(candidates) with no allocation after the first day, so a simulator can
//! run a thousand forecasters over days of one-minute steps.

use serde::{Deserialize, Serialize};

/// What is known in advance about a step: the announced audience of the events running then.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Exog {
    /// Sum of the announced audiences of the events scheduled at that step; 0 when none.
    pub expected_viewers: f64,
}

/// Settings of a [`Forecaster`]. The defaults suit one-minute steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ForecastConfig {
    /// Season length in steps (one day).
    pub steps_per_day: usize,
    /// Steps ahead the caller mostly asks for. Forecasts at this horizon are scored and drive
    /// the feedback; other horizons are answered too, with the corrections scaled to them.
    pub horizon: usize,
    /// Points of the piecewise-linear daily season (24 = one per hour).
    pub season_buckets: usize,
    /// Level smoothing per step. Centre of the candidate bank when `adapt` is on. Small (hours)
    /// on purpose: the season carries the daily cycle and the error model the minutes-long
    /// wander, so the level only has to follow day-to-day drift and should not chase noise.
    pub alpha: f64,
    /// Trend smoothing per step.
    pub beta: f64,
    /// Season smoothing per day: the share of a season point replaced by each new day once the
    /// point has seen `1 / gamma` days (before that, all days seen count alike).
    pub gamma: f64,
    /// Season as factors of the level (demand that grows keeps its daily shape in proportion)
    /// rather than offsets. With `adapt` on, both kinds run and the better one answers.
    pub multiplicative_season: bool,
    /// Trend damping per step: a trend measured over minutes must not be extrapolated for hours.
    pub trend_damping: f64,
    /// Steps at the start of an announced event during which its audience is still arriving:
    /// they teach neither the event term nor the level.
    pub event_ramp_steps: usize,
    /// Feedback on: candidate bank, bias and persistence correction. Off leaves the single
    /// configured model, which is what the feedback is measured against.
    pub adapt: bool,
    /// Memory, in steps, of the error statistics that drive the feedback.
    pub error_memory_steps: f64,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        ForecastConfig {
            steps_per_day: 1440,
            horizon: 10,
            season_buckets: 24,
            alpha: 0.003,
            beta: 0.002,
            gamma: 0.2,
            multiplicative_season: true,
            trend_damping: 0.98,
            event_ramp_steps: 5,
            adapt: true,
            error_memory_steps: 720.0,
        }
    }
}

/// What the forecaster knows about itself, for logs and the simulator's decision records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ForecastStats {
    /// Steps observed.
    pub observed: u64,
    /// Forecasts at the configured horizon whose target has arrived and been scored.
    pub scored: u64,
    /// Recent mean absolute percentage error of those forecasts (exponentially weighted over
    /// `error_memory_steps`).
    pub mape_recent: f64,
    /// Recent mean signed error (actual - forecast) of those forecasts, in load units: close to
    /// 0 when the bias correction does its job.
    pub signed_error_recent: f64,
    /// Bias correction currently added at the configured horizon, in load units.
    pub bias: f64,
    /// Share of the current deviation from the model expected to remain at the horizon.
    pub persistence: f64,
    /// Smoothing parameters of the model currently answering.
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    /// Whether the model currently answering has a multiplicative season.
    pub multiplicative: bool,
    /// Learned load per announced viewer (long-run average over events; 0 before any).
    pub per_viewer: f64,
}

/// Multipliers of the configured smoothing parameters that make up the candidate bank (the
/// configured value first): wide enough to cover a calm stream and a jumpy one, few enough to
/// stay cheap. Each combination runs with both season kinds. The trend smoothing is not varied:
/// in backtests the choice never mattered, while every candidate costs time on every step.
const ALPHA_FACTORS: [f64; 3] = [1.0, 1.0 / 3.0, 3.0];
const GAMMA_FACTORS: [f64; 2] = [1.0, 2.5];

/// Smoothing of the slow deviation: about half an hour, longer than the audience's
/// minute-to-minute wander, shorter than the daily cycle.
const SLOW_DEVIATION_RATE: f64 = 1.0 / 30.0;
/// Persistence estimates are kept within this range: beyond it a noisy regression would
/// amplify deviations rather than carry them forward.
const PERSISTENCE_LIMIT: f64 = 1.0;
/// Ridge added to the persistence regression, relative to the deviations' variance: keeps the
/// solution sane while the two deviations are nearly collinear (right after start-up) or flat.
const PERSISTENCE_RIDGE: f64 = 1e-3;
/// Percentage errors are capped here when scoring, so one near-empty step cannot dominate the
/// recent error of a model.
const MAX_SCORED_APE: f64 = 10.0;
/// Floor of a multiplicative season factor, so a near-empty night never divides by zero.
const MIN_SEASON_FACTOR: f64 = 0.05;
/// Weight below which the first day left a season point unobserved (an event covered it); such
/// points are interpolated from their neighbours.
const MIN_SEASON_WEIGHT: f64 = 0.5;

/// Rate at which the long-run load per viewer follows new event observations once it has seen
/// `1 / rate` of them (before that it is their plain average): a few events' worth.
const PER_VIEWER_RATE: f64 = 0.01;
/// Weight, in steps, of the long-run load per viewer when estimating a running event's own:
/// a single minute of a running event is too noisy to overrule what past events taught.
const RUNNING_EVENT_PRIOR_STEPS: f64 = 15.0;
/// Level and season hold still during an announced event, but at most for this fraction of a
/// day (as a divisor): an announcement that never ends (a caller passing a constant audience)
/// must not freeze the background for good.
const MAX_EVENT_HOLD_PER_DAY: usize = 4;
/// A change of the announced audience by more than this fraction (another event starting or
/// ending) restarts the ramp guard.
const AUDIENCE_CHANGE: f64 = 0.2;

/// Seasonal load forecaster with an event term and feedback from its own errors; see the module
/// documentation. Feed it every step in order with [`Forecaster::observe`], ask with
/// [`Forecaster::forecast`].
#[derive(Debug, Clone)]
pub struct Forecaster {
    cfg: ForecastConfig,
    grid: SeasonGrid,
    /// Sum of the damped trend factors over the configured horizon.
    damped_horizon: f64,
    /// The first season's (load, viewers), kept until the models are initialised from it.
    history: Vec<(f64, f64)>,
    candidates: Vec<Candidate>,
    /// Weight the observed steps have put on each season point (the same for every candidate).
    season_weight: Vec<f64>,
    /// Index of the candidate answering.
    best: usize,
    events: EventModel,
    observed: u64,
    last_actual: f64,
    last_viewers: f64,
    /// Forecasts handed out for the next `horizon` steps, by step modulo horizon.
    pending: Vec<PendingForecast>,
    scored: u64,
    mape_recent: f64,
    signed_error_recent: f64,
}

impl Forecaster {
    /// A forecaster with `cfg`, sanitised: zero lengths count as 1, rates out of range fall back
    /// to the defaults or are clamped.
    pub fn new(cfg: ForecastConfig) -> Self {
        let cfg = sanitised(cfg);
        Forecaster {
            grid: SeasonGrid {
                steps_per_day: cfg.steps_per_day,
                buckets: cfg.season_buckets,
            },
            damped_horizon: damped_steps(cfg.trend_damping, cfg.horizon),
            history: Vec::with_capacity(cfg.steps_per_day),
            candidates: Vec::new(),
            season_weight: Vec::new(),
            best: 0,
            events: EventModel::default(),
            observed: 0,
            last_actual: 0.0,
            last_viewers: 0.0,
            pending: vec![PendingForecast::default(); cfg.horizon],
            scored: 0,
            mape_recent: 0.0,
            signed_error_recent: 0.0,
            cfg,
        }
    }

    /// The settings in use (after sanitising).
    pub fn config(&self) -> &ForecastConfig {
        &self.cfg
    }

    /// Takes the load of the next step and what was announced for it (call it once per step,
    /// in order): scores the forecasts made `horizon` steps ago for this step, learns from
    /// them, then updates the models.
    /// A non-finite load counts as a repeat of the last one, a negative one as 0.
    pub fn observe(&mut self, actual: f64, exog_now: &Exog) {
        let actual = if actual.is_finite() {
            actual.max(0.0)
        } else {
            self.last_actual
        };
        let viewers = non_negative(exog_now.expected_viewers);
        let step = self.observed as usize;
        let slot = step % self.cfg.horizon;

        self.score(slot, actual, viewers);
        if self.candidates.is_empty() {
            self.history.push((actual, viewers));
            if self.history.len() >= self.cfg.steps_per_day {
                self.initialise();
            }
        } else {
            self.learn(step, actual, viewers, true);
        }
        self.last_actual = actual;
        self.last_viewers = viewers;
        self.observed += 1;
        self.remember_forecast(step, slot);
    }

    /// Load expected `steps_ahead` steps after the last observed one, given what is announced
    /// for that step. Never negative, always finite. Until a full season has been observed it
    /// is the last value, as is `steps_ahead == 0`.
    pub fn forecast(&self, steps_ahead: usize, exog_at_target: &Exog) -> f64 {
        let Some(candidate) = self.candidates.get(self.best) else {
            return self.last_actual;
        };
        if steps_ahead == 0 {
            return self.last_actual;
        }
        let target = self.grid.point(self.last_step() + steps_ahead);
        let mut forecast =
            candidate.seasonal_forecast(damped_steps(self.cfg.trend_damping, steps_ahead), target);
        if self.cfg.adapt {
            forecast +=
                candidate
                    .errors
                    .correction(candidate.deviation, steps_ahead, self.cfg.horizon);
        }
        let viewers = non_negative(exog_at_target.expected_viewers);
        if viewers > 0.0 {
            forecast += self.events.coefficient(self.last_viewers > 0.0) * viewers;
        }
        if forecast.is_finite() {
            forecast.max(0.0)
        } else {
            self.last_actual
        }
    }

    /// Its recent accuracy at the configured horizon and the state of its adaptation.
    pub fn stats(&self) -> ForecastStats {
        let answering = self.candidates.get(self.best);
        let (bias, persistence) = match answering {
            Some(candidate) if self.cfg.adapt => {
                (candidate.errors.bias, candidate.errors.persistence[0])
            }
            _ => (0.0, 0.0),
        };
        ForecastStats {
            observed: self.observed,
            scored: self.scored,
            mape_recent: self.mape_recent,
            signed_error_recent: self.signed_error_recent,
            bias,
            persistence,
            alpha: answering.map_or(self.cfg.alpha, |c| c.alpha),
            beta: answering.map_or(self.cfg.beta, |c| c.beta),
            gamma: answering.map_or(self.cfg.gamma, |c| c.gamma),
            multiplicative: answering.map_or(self.cfg.multiplicative_season, |c| c.multiplicative),
            per_viewer: self.events.per_viewer,
        }
    }

    /// Index of the last observed step (only meaningful once one has been observed).
    fn last_step(&self) -> usize {
        (self.observed as usize).saturating_sub(1)
    }

    /// Scores the forecasts (the one handed out and every candidate's) made for this step.
    fn score(&mut self, slot: usize, actual: f64, viewers: f64) {
        let pending = self.pending[slot];
        if !pending.valid {
            return;
        }
        let event = pending.event_load(viewers);
        let forecast = (pending.without_event + event).max(0.0);
        self.scored += 1;
        let rate = (1.0 / self.scored as f64).max(1.0 / self.cfg.error_memory_steps);
        self.mape_recent += rate * (percentage_error(forecast, actual) - self.mape_recent);
        self.signed_error_recent += rate * (actual - forecast - self.signed_error_recent);
        let (memory, adapt) = (self.cfg.error_memory_steps, self.cfg.adapt);
        for candidate in &mut self.candidates {
            candidate.score(slot, actual, event, memory, adapt);
        }
    }

    /// Updates the event term and every candidate with one observed step. `live` is false while
    /// replaying the first season, whose season shape the candidates already start from.
    fn learn(&mut self, step: usize, actual: f64, viewers: f64, live: bool) {
        let point = self.grid.point(step);
        let damping = self.cfg.trend_damping;
        let answering = &self.candidates[self.best];
        if viewers > 0.0 && !self.events.running {
            // An event starts: the background it stands on is what the model expects plus the
            // part of its recent slow deviation that the error model says persists. Frozen for
            // the event, since from now on deviations mix event and background.
            self.events.background_offset =
                answering.errors.persistence[1].max(0.0) * answering.deviation[1];
        }
        let expected_background =
            answering.seasonal_forecast(damping, point) + self.events.background_offset;
        let event_load = self.events.learn(
            actual,
            viewers,
            expected_background,
            self.cfg.event_ramp_steps,
        );
        let hold_limit = self.cfg.steps_per_day / MAX_EVENT_HOLD_PER_DAY;
        match event_load {
            // Background only (or an announcement running so long that it must be part of the
            // background): every part of every model learns from it.
            Some(event_load) if viewers <= 0.0 || self.events.steps_running >= hold_limit => {
                let season_inverse_weight = live.then(|| {
                    self.season_weight[point.lower] += 1.0 - point.upper_weight;
                    self.season_weight[point.upper] += point.upper_weight;
                    (
                        1.0 / self.season_weight[point.lower].max(1.0),
                        1.0 / self.season_weight[point.upper].max(1.0),
                    )
                });
                for candidate in &mut self.candidates {
                    candidate.update(actual - event_load, point, damping, season_inverse_weight);
                }
            }
            // During an event, level and season hold still and the event term alone learns:
            // if both learned, whatever the event term misjudged would leak into the background,
            // the background would then explain the event away and the event term would learn
            // ever smaller events. The deviation is still tracked for the error model.
            Some(event_load) => {
                for candidate in &mut self.candidates {
                    candidate.hold(damping, Some((actual - event_load, point)));
                }
            }
            // The event's audience is still arriving: the step cannot be split into event and
            // background, so it is skipped like a missing one.
            None => {
                for candidate in &mut self.candidates {
                    candidate.hold(damping, None);
                }
            }
        }
        if (step + 1).is_multiple_of(self.cfg.steps_per_day) {
            self.candidates
                .iter_mut()
                .for_each(Candidate::recentre_season);
        }
        if live && self.cfg.adapt {
            self.best = self
                .candidates
                .iter()
                .enumerate()
                .filter(|(_, candidate)| candidate.scored > 0.0)
                .min_by(|(_, a), (_, b)| a.recent_ape.total_cmp(&b.recent_ape))
                .map_or(self.best, |(index, _)| index);
        }
    }

    /// Keeps the forecasts for `step + horizon` so they can be scored when it arrives. They are
    /// exactly what [`Forecaster::forecast`] answers for that horizon now.
    fn remember_forecast(&mut self, step: usize, slot: usize) {
        if self.candidates.is_empty() {
            self.pending[slot] = PendingForecast {
                valid: true,
                without_event: self.last_actual,
                ..PendingForecast::default()
            };
            return;
        }
        let horizon = self.cfg.horizon;
        let target = self.grid.point(step + horizon);
        let adapt = self.cfg.adapt;
        for candidate in &mut self.candidates {
            let correction = if adapt {
                candidate
                    .errors
                    .correction(candidate.deviation, horizon, horizon)
            } else {
                0.0
            };
            candidate.pending[slot] = CandidatePending {
                valid: true,
                seasonal: candidate.seasonal_forecast(self.damped_horizon, target),
                deviation: candidate.deviation,
                correction,
            };
        }
        let answering = &self.candidates[self.best].pending[slot];
        self.pending[slot] = PendingForecast {
            valid: true,
            without_event: answering.seasonal + answering.correction,
            event_running: self.last_viewers > 0.0,
            coefficient_running: self.events.coefficient(true),
            coefficient_new: self.events.coefficient(false),
        };
    }

    /// Builds the candidate bank from the first season: level and season from the steps without
    /// events (events would otherwise be baked into the season), then a replay of that season
    /// to settle level, trend and the event term as if the models had run all along.
    fn initialise(&mut self) {
        let history = std::mem::take(&mut self.history);
        let buckets = self.cfg.season_buckets;
        let quiet = |(_, viewers): &&(f64, f64)| *viewers <= 0.0;
        let quiet_steps = history.iter().filter(quiet).count();
        let level = if quiet_steps > 0 {
            history
                .iter()
                .filter(quiet)
                .map(|(load, _)| load)
                .sum::<f64>()
                / quiet_steps as f64
        } else {
            history.iter().map(|(load, _)| load).sum::<f64>() / history.len().max(1) as f64
        };
        let mut sums = vec![0.0; buckets];
        let mut weights = vec![0.0; buckets];
        for (step, (load, viewers)) in history.iter().enumerate() {
            if *viewers > 0.0 {
                continue;
            }
            let point = self.grid.point(step);
            sums[point.lower] += (1.0 - point.upper_weight) * (load - level);
            weights[point.lower] += 1.0 - point.upper_weight;
            sums[point.upper] += point.upper_weight * (load - level);
            weights[point.upper] += point.upper_weight;
        }
        let additive_season = fill_gaps(&sums, &weights);
        self.season_weight = weights;

        let steps_per_bucket = self.cfg.steps_per_day as f64 / buckets as f64;
        // A multiplicative season needs a positive level to be relative to.
        let kinds = if !self.cfg.adapt || level <= 0.0 {
            vec![self.cfg.multiplicative_season && level > 0.0]
        } else {
            vec![
                self.cfg.multiplicative_season,
                !self.cfg.multiplicative_season,
            ]
        };
        let cfg = &self.cfg;
        let mut candidates = Vec::new();
        for multiplicative in kinds {
            let season: Vec<f64> = if multiplicative {
                additive_season
                    .iter()
                    .map(|offset| 1.0 + offset / level)
                    .collect()
            } else {
                additive_season.clone()
            };
            for (alpha, beta, gamma) in bank_settings(cfg) {
                candidates.push(Candidate {
                    alpha,
                    beta,
                    gamma,
                    gamma_per_weight: gamma / steps_per_bucket,
                    multiplicative,
                    level,
                    trend: 0.0,
                    season: season.clone(),
                    deviation: [0.0; 2],
                    errors: ErrorModel::default(),
                    recent_ape: 0.0,
                    scored: 0.0,
                    pending: vec![CandidatePending::default(); cfg.horizon],
                });
            }
        }
        self.candidates = candidates;
        // Until the candidates have been scored, the configured one answers.
        self.best = 0;
        for (step, (load, viewers)) in history.iter().enumerate() {
            self.learn(step, *load, *viewers, false);
        }
    }
}

/// (alpha, beta, gamma) of each candidate of one season kind, the configured setting first.
fn bank_settings(cfg: &ForecastConfig) -> Vec<(f64, f64, f64)> {
    if !cfg.adapt {
        return vec![(cfg.alpha, cfg.beta, cfg.gamma)];
    }
    let mut settings = Vec::new();
    for alpha in ALPHA_FACTORS {
        for gamma in GAMMA_FACTORS {
            settings.push((
                (cfg.alpha * alpha).min(1.0),
                cfg.beta,
                (cfg.gamma * gamma).min(1.0),
            ));
        }
    }
    settings
}

/// Position of a step on the piecewise-linear season: the two points around it and the weight
/// of the upper one.
#[derive(Debug, Clone, Copy)]
struct SeasonPoint {
    lower: usize,
    upper: usize,
    upper_weight: f64,
}

#[derive(Debug, Clone, Copy)]
struct SeasonGrid {
    steps_per_day: usize,
    buckets: usize,
}

impl SeasonGrid {
    fn point(&self, step: usize) -> SeasonPoint {
        let phase = step % self.steps_per_day;
        // Point i sits at the centre of bucket i (i + 0.5 in bucket units), step p at the centre
        // of its own interval.
        let position = (phase as f64 + 0.5) * self.buckets as f64 / self.steps_per_day as f64 - 0.5;
        let floor = position.floor();
        let lower = (floor as isize).rem_euclid(self.buckets as isize) as usize;
        SeasonPoint {
            lower,
            upper: (lower + 1) % self.buckets,
            upper_weight: position - floor,
        }
    }
}

/// Exponentially weighted least squares of the error a forecast made at the horizon turned out
/// to have, against the model's deviations when it was made:
/// `error ≈ bias + fast * deviation + slow * smoothed deviation`. The two deviations separate
/// wander that fades within minutes from a misjudged level or season that lasts; each gets its
/// own persistence. Early on the statistics are plain averages, later they forget old samples.
#[derive(Debug, Clone, Default)]
struct ErrorModel {
    samples: f64,
    /// Means of the fast deviation, the slow one and the error.
    mean: [f64; 3],
    /// Second moments: fast², slow², fast·slow, fast·error, slow·error.
    moments: [f64; 5],
    bias: f64,
    /// Persistence of the fast and the slow deviation.
    persistence: [f64; 2],
}

impl ErrorModel {
    fn learn(&mut self, deviation: [f64; 2], error: f64, memory: f64) {
        self.samples += 1.0;
        let rate = (1.0 / self.samples).max(1.0 / memory);
        let [fast, slow] = deviation;
        for (mean, value) in self.mean.iter_mut().zip([fast, slow, error]) {
            *mean += rate * (value - *mean);
        }
        let products = [
            fast * fast,
            slow * slow,
            fast * slow,
            fast * error,
            slow * error,
        ];
        for (moment, value) in self.moments.iter_mut().zip(products) {
            *moment += rate * (value - *moment);
        }
        let [mean_fast, mean_slow, mean_error] = self.mean;
        let var_fast = self.moments[0] - mean_fast * mean_fast;
        let var_slow = self.moments[1] - mean_slow * mean_slow;
        let cov_fast_slow = self.moments[2] - mean_fast * mean_slow;
        let cov_fast_error = self.moments[3] - mean_fast * mean_error;
        let cov_slow_error = self.moments[4] - mean_slow * mean_error;
        let ridge = PERSISTENCE_RIDGE * (var_fast + var_slow) + 1e-12;
        let (a, b, c) = (var_fast + ridge, cov_fast_slow, var_slow + ridge);
        let determinant = a * c - b * b;
        self.persistence = if determinant > 0.0 {
            [
                (c * cov_fast_error - b * cov_slow_error) / determinant,
                (a * cov_slow_error - b * cov_fast_error) / determinant,
            ]
            .map(|value| value.clamp(-PERSISTENCE_LIMIT, PERSISTENCE_LIMIT))
        } else {
            [0.0, 0.0]
        };
        self.bias = mean_error - self.persistence[0] * mean_fast - self.persistence[1] * mean_slow;
    }

    /// Correction for a forecast `steps_ahead` steps out. The regression was fitted at
    /// `horizon` only, so other horizons are extrapolated from what must hold at distance 0,
    /// where the best forecast is the observation itself (full weight on the fast deviation,
    /// none on the slow one, no bias): the fast deviation decays geometrically from 1 to its
    /// fitted persistence, the slow one and the bias (mostly lag) grow linearly to theirs and
    /// are not extrapolated beyond it.
    fn correction(&self, deviation: [f64; 2], steps_ahead: usize, horizon: usize) -> f64 {
        let [fast, slow] = self.persistence;
        if steps_ahead == horizon {
            return self.bias + fast * deviation[0] + slow * deviation[1];
        }
        let ratio = steps_ahead as f64 / horizon as f64;
        let fast = fast.signum() * fast.abs().powf(ratio);
        let ramp = ratio.min(1.0);
        ramp * (self.bias + slow * deviation[1]) + fast * deviation[0]
    }
}

/// A candidate's forecast at the configured horizon waiting for its target step: its seasonal
/// part, the deviations when it was made and the correction it got.
#[derive(Debug, Clone, Copy, Default)]
struct CandidatePending {
    valid: bool,
    seasonal: f64,
    deviation: [f64; 2],
    correction: f64,
}

/// One Holt-Winters model of the bank.
#[derive(Debug, Clone)]
struct Candidate {
    alpha: f64,
    beta: f64,
    /// Season smoothing per day, and per unit of weight a step puts on a season point.
    gamma: f64,
    gamma_per_weight: f64,
    /// Season as factors of the level rather than offsets from it.
    multiplicative: bool,
    level: f64,
    trend: f64,
    season: Vec<f64>,
    /// Observation minus model right after the last update, as is and smoothed: what may
    /// persist to the horizon.
    deviation: [f64; 2],
    errors: ErrorModel,
    /// Recent absolute percentage error of its corrected forecasts, to choose among candidates.
    recent_ape: f64,
    scored: f64,
    pending: Vec<CandidatePending>,
}

impl Candidate {
    fn season_at(&self, point: SeasonPoint) -> f64 {
        self.season[point.lower] * (1.0 - point.upper_weight)
            + self.season[point.upper] * point.upper_weight
    }

    /// Background load (no event, no correction) at `target`, `damped_steps` worth of trend
    /// after the last update.
    fn seasonal_forecast(&self, damped_steps: f64, target: SeasonPoint) -> f64 {
        let level = self.level + self.trend * damped_steps;
        if self.multiplicative {
            level * self.season_at(target)
        } else {
            level + self.season_at(target)
        }
    }

    /// One Holt-Winters step on the background load (the load minus the event term).
    /// `season_inverse_weight` is `None` when the season must not learn, else the inverse of the
    /// weight each of the two season points around the step has accumulated: until a point has
    /// seen `1 / gamma` days it moves to the plain average of everything it has seen.
    fn update(
        &mut self,
        background: f64,
        point: SeasonPoint,
        damping: f64,
        season_inverse_weight: Option<(f64, f64)>,
    ) {
        let season = self.season_at(point);
        let previous_level = self.level;
        let deseasonalised = if self.multiplicative {
            background / season.max(MIN_SEASON_FACTOR)
        } else {
            background - season
        };
        self.level =
            self.alpha * deseasonalised + (1.0 - self.alpha) * (self.level + damping * self.trend);
        self.trend =
            self.beta * (self.level - previous_level) + (1.0 - self.beta) * damping * self.trend;
        if let Some((inverse_lower, inverse_upper)) = season_inverse_weight {
            let season_error = if !self.multiplicative {
                background - self.level - season
            } else if self.level > 0.0 {
                background / self.level - season
            } else {
                0.0
            };
            let lower_gain = self.gamma_per_weight.max(inverse_lower) * (1.0 - point.upper_weight);
            let upper_gain = self.gamma_per_weight.max(inverse_upper) * point.upper_weight;
            self.season[point.lower] += lower_gain * season_error;
            self.season[point.upper] += upper_gain * season_error;
        }
        self.track_deviation(background, point);
    }

    /// Carries level and trend over a step they must not learn from; `observed` is the
    /// background seen then, if it is known, to keep tracking the deviation.
    fn hold(&mut self, damping: f64, observed: Option<(f64, SeasonPoint)>) {
        self.level += damping * self.trend;
        self.trend *= damping;
        match observed {
            Some((background, point)) => self.track_deviation(background, point),
            None => self.deviation[0] = 0.0,
        }
    }

    fn track_deviation(&mut self, background: f64, point: SeasonPoint) {
        let deviation = background - self.seasonal_forecast(0.0, point);
        self.deviation = [
            deviation,
            self.deviation[1] + SLOW_DEVIATION_RATE * (deviation - self.deviation[1]),
        ];
    }

    /// Hands the season's mean over to the level: the two can drift against each other without
    /// changing any forecast, and a centred season keeps `level` meaningful.
    fn recentre_season(&mut self) {
        let mean = self.season.iter().sum::<f64>() / self.season.len() as f64;
        if !self.multiplicative {
            self.season.iter_mut().for_each(|value| *value -= mean);
            self.level += mean;
        } else if mean > 0.0 {
            self.season.iter_mut().for_each(|value| *value /= mean);
            self.level *= mean;
            self.trend *= mean;
        }
    }

    /// Scores the candidate's forecast for this step: teaches its error model and updates its
    /// recent error.
    fn score(&mut self, slot: usize, actual: f64, event: f64, memory: f64, adapt: bool) {
        let pending = self.pending[slot];
        if !pending.valid {
            return;
        }
        let uncorrected = pending.seasonal + event;
        if adapt {
            self.errors
                .learn(pending.deviation, actual - uncorrected, memory);
        }
        let forecast = (uncorrected + pending.correction).max(0.0);
        self.scored += 1.0;
        let rate = (1.0 / self.scored).max(1.0 / memory);
        self.recent_ape += rate * (percentage_error(forecast, actual) - self.recent_ape);
    }
}

/// Online estimate of the load an announced viewer brings.
#[derive(Debug, Clone, Default)]
struct EventModel {
    /// Correction of the expected background during the running event (see `Forecaster::learn`).
    background_offset: f64,
    /// Long-run load per announced viewer, from the weighted moments below.
    per_viewer: f64,
    observations: f64,
    load_times_viewers: f64,
    viewers_squared: f64,
    /// Whether an announced event runs at the last observed step.
    running: bool,
    /// Steps since it started (or since the announced audience last changed a lot).
    steps_running: usize,
    last_viewers: f64,
    /// What the running event has shown of its own load per viewer, once past its ramp.
    running_fit: Option<RunningEvent>,
}

/// Load per viewer of the running event: its own observations, shrunk towards what past events
/// taught.
#[derive(Debug, Clone, Copy)]
struct RunningEvent {
    prior: f64,
    sum: f64,
    count: f64,
}

impl RunningEvent {
    fn per_viewer(&self) -> f64 {
        (self.prior * RUNNING_EVENT_PRIOR_STEPS + self.sum)
            / (RUNNING_EVENT_PRIOR_STEPS + self.count)
    }
}

impl EventModel {
    /// Load per announced viewer for a target step, given whether an event runs now (if so, the
    /// target most likely belongs to it).
    fn coefficient(&self, event_running_now: bool) -> f64 {
        let coefficient = match (event_running_now, self.running_fit) {
            (true, Some(running)) => running.per_viewer(),
            _ => self.per_viewer,
        };
        coefficient.max(0.0)
    }

    /// Learns from a step with `actual` load, announced `viewers` and the background the model
    /// expected. Returns the event load to remove before the background models learn, or
    /// `None` while an event's audience is still arriving and the step cannot be split.
    fn learn(
        &mut self,
        actual: f64,
        viewers: f64,
        background: f64,
        ramp_steps: usize,
    ) -> Option<f64> {
        if viewers <= 0.0 {
            self.running = false;
            self.running_fit = None;
            self.last_viewers = 0.0;
            return Some(0.0);
        }
        let audience_changed =
            (viewers - self.last_viewers).abs() > AUDIENCE_CHANGE * viewers.max(self.last_viewers);
        if !self.running || audience_changed {
            self.steps_running = 0;
        } else {
            self.steps_running += 1;
        }
        self.running = true;
        self.last_viewers = viewers;
        if self.steps_running < ramp_steps {
            return None;
        }
        let event_load = actual - background;
        let observed_per_viewer = event_load / viewers;
        // Least squares of event load on audience, exponentially weighted: a big event shows
        // its per-viewer load far more clearly above the background noise than a small one,
        // so it weighs more.
        self.observations += 1.0;
        let rate = (1.0 / self.observations).max(PER_VIEWER_RATE);
        self.load_times_viewers += rate * (event_load * viewers - self.load_times_viewers);
        self.viewers_squared += rate * (viewers * viewers - self.viewers_squared);
        self.per_viewer = self.load_times_viewers / self.viewers_squared;
        let prior = self.per_viewer;
        let running = self.running_fit.get_or_insert(RunningEvent {
            prior,
            sum: 0.0,
            count: 0.0,
        });
        running.sum += observed_per_viewer;
        running.count += 1.0;
        Some(self.coefficient(true) * viewers)
    }
}

/// The forecast handed out for the step `horizon` ahead, kept until that step arrives. Its
/// event part depends on the target's announced audience, which the forecaster itself only
/// learns then.
#[derive(Debug, Clone, Copy, Default)]
struct PendingForecast {
    valid: bool,
    without_event: f64,
    event_running: bool,
    coefficient_running: f64,
    coefficient_new: f64,
}

impl PendingForecast {
    fn event_load(&self, viewers: f64) -> f64 {
        if viewers <= 0.0 {
            0.0
        } else if self.event_running {
            self.coefficient_running * viewers
        } else {
            self.coefficient_new * viewers
        }
    }
}

/// Season point averages from weighted sums; points no quiet step touched (an event covered
/// them) are interpolated around the cycle from their nearest observed neighbours.
fn fill_gaps(sums: &[f64], weights: &[f64]) -> Vec<f64> {
    let buckets = sums.len();
    let observed: Vec<usize> = (0..buckets)
        .filter(|&bucket| weights[bucket] >= MIN_SEASON_WEIGHT)
        .collect();
    let mut season = vec![0.0; buckets];
    for &bucket in &observed {
        season[bucket] = sums[bucket] / weights[bucket];
    }
    for (index, &from) in observed.iter().enumerate() {
        let to = observed[(index + 1) % observed.len()];
        let gap = match (to + buckets - from) % buckets {
            0 => buckets,
            gap => gap,
        };
        for offset in 1..gap {
            let fraction = offset as f64 / gap as f64;
            season[(from + offset) % buckets] =
                season[from] * (1.0 - fraction) + season[to] * fraction;
        }
    }
    season
}

/// Sum of the trend damping factors over `steps` steps: how far a damped trend carries.
fn damped_steps(damping: f64, steps: usize) -> f64 {
    if damping >= 1.0 {
        steps as f64
    } else {
        let steps = i32::try_from(steps).unwrap_or(i32::MAX);
        damping * (1.0 - damping.powi(steps)) / (1.0 - damping)
    }
}

/// Absolute percentage error, capped (an empty actual would make it infinite): how the
/// forecaster scores its own forecasts (`ForecastStats::mape_recent`).
pub fn percentage_error(forecast: f64, actual: f64) -> f64 {
    ((forecast - actual).abs() / actual.max(f64::MIN_POSITIVE)).min(MAX_SCORED_APE)
}

fn sanitised(cfg: ForecastConfig) -> ForecastConfig {
    let default = ForecastConfig::default();
    let steps_per_day = cfg.steps_per_day.max(1);
    let in_unit = |value: f64, fallback: f64| {
        if value.is_finite() {
            value.clamp(0.0, 1.0)
        } else {
            fallback
        }
    };
    let positive_rate = |value: f64, fallback: f64| {
        if value.is_finite() && value > 0.0 {
            value.min(1.0)
        } else {
            fallback
        }
    };
    ForecastConfig {
        steps_per_day,
        horizon: cfg.horizon.max(1),
        season_buckets: cfg.season_buckets.clamp(1, steps_per_day),
        alpha: positive_rate(cfg.alpha, default.alpha),
        beta: in_unit(cfg.beta, default.beta),
        gamma: positive_rate(cfg.gamma, default.gamma),
        multiplicative_season: cfg.multiplicative_season,
        trend_damping: in_unit(cfg.trend_damping, default.trend_damping),
        event_ramp_steps: cfg.event_ramp_steps,
        adapt: cfg.adapt,
        error_memory_steps: if cfg.error_memory_steps.is_finite() {
            cfg.error_memory_steps.max(1.0)
        } else {
            default.error_memory_steps
        },
    }
}

fn non_negative(value: f64) -> f64 {
    if value.is_finite() {
        value.max(0.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HORIZON: usize = 10;

    /// An announcement that never ends must not freeze the background model.
    #[test]
    fn never_ending_announcement_does_not_freeze_the_forecast() {
        let mut forecaster = Forecaster::new(ForecastConfig {
            steps_per_day: 100,
            ..ForecastConfig::default()
        });
        let always = Exog {
            expected_viewers: 1000.0,
        };
        for step in 0..1000 {
            let load = if step < 300 { 100.0 } else { 200.0 };
            forecaster.observe(load, &always);
        }
        let forecast = forecaster.forecast(HORIZON, &always);
        assert!((forecast - 200.0).abs() < 10.0, "{forecast}");
    }

    #[test]
    fn odd_inputs_give_finite_non_negative_forecasts() {
        let mut forecaster = Forecaster::new(ForecastConfig {
            steps_per_day: 0,
            horizon: 0,
            season_buckets: 0,
            alpha: f64::NAN,
            gamma: -1.0,
            trend_damping: 7.0,
            error_memory_steps: f64::INFINITY,
            ..ForecastConfig::default()
        });
        let odd = [f64::NAN, -5.0, 0.0, f64::INFINITY, 1e300, 3.0];
        for (step, load) in odd.iter().cycle().take(200).enumerate() {
            let viewers = if step % 7 == 0 { f64::NAN } else { step as f64 };
            forecaster.observe(
                *load,
                &Exog {
                    expected_viewers: viewers,
                },
            );
            for steps_ahead in [0, 1, 10, 1000] {
                let forecast = forecaster.forecast(
                    steps_ahead,
                    &Exog {
                        expected_viewers: -1.0,
                    },
                );
                assert!(forecast.is_finite() && forecast >= 0.0, "{forecast}");
            }
        }

        let mut idle = Forecaster::new(ForecastConfig {
            steps_per_day: 60,
            ..ForecastConfig::default()
        });
        assert_eq!(idle.forecast(10, &Exog::default()), 0.0);
        for _ in 0..500 {
            idle.observe(0.0, &Exog::default());
        }
        assert_eq!(
            idle.forecast(
                10,
                &Exog {
                    expected_viewers: 1e6
                }
            ),
            0.0
        );
        assert!(idle.stats().mape_recent.is_finite());
    }
}
