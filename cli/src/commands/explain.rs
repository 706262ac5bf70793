// SPDX-License-Identifier: MPL-2.0
//! `gopswarm explain`: what the orchestrator thinks of a host and why, and which tasks the host
//! refused or lost to an error. Reads the retained `host/{host}/score` messages (scores, tier,
//! slot allowance and the arithmetic behind them) and `host/{host}/applied` (the host's own
//! report: a task refused for a bad profile carries the parser's reason) from the broker.

use anyhow::{Context, Result, bail};
use gopswarm_agents::{daemon, options::seconds};
use gopswarm_proto::link::{BrokerUrl, Link, LinkEvent, LinkOptions, QoS};
use gopswarm_proto::*;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ExplainOptions {
    /// Host id; all hosts when left out
    host: Option<String>,
    /// MQTT broker; with a password, give it in the environment (`gopswarm acl` writes one).
    /// Default: the orchestrator's embedded broker on this machine (mqtts://127.0.0.1:8883
    /// with swarm keys, logging in with the operator's key; mqtt://127.0.0.1:1883 with
    /// --insecure)
    #[arg(long, env = "GOPSWARM_OPERATOR_BROKER", hide_env_values = true)]
    broker: Option<String>,
    /// Operator whose key logs in to the embedded broker (operators/NAME.key under --keys)
    #[arg(long, env = "GOPSWARM_OPERATOR", default_value = gopswarm_proto::keys::DEFAULT_OPERATOR)]
    operator: String,
    /// Print JSON lines instead of text
    #[arg(long)]
    json: bool,
    /// How long to wait for the retained scores (seconds)
    #[arg(long, default_value_t = 3.0)]
    wait: f64,
    #[command(flatten)]
    keys: gopswarm_agents::options::KeyOptions,
}

pub fn run(o: ExplainOptions) -> Result<()> {
    if let Some(h) = o.host.as_deref().filter(|h| !valid_id(h)) {
        bail!("host id {h:?}: use 1-64 of [A-Za-z0-9._-]");
    }
    let given = o
        .broker
        .as_deref()
        .map(BrokerUrl::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    // Logs in as the operator (the embedded broker admits only the swarm's parts).
    let login = match o.keys.dir()? {
        Some(kd) => Some(
            kd.signer(signed::Principal::Operator(o.operator.clone()))
                .map_err(anyhow::Error::msg)?
                .broker_login(),
        ),
        None => None,
    };
    let broker = o.keys.broker(given.as_ref(), login)?;
    // Only reads: the trust file checks what the orchestrator and the hosts signed.
    let open = match o.keys.dir()? {
        Some(kd) => signed::Open::Verified(Box::new(
            signed::Verifier::new(&kd.trust().map_err(anyhow::Error::msg)?)
                .map_err(anyhow::Error::msg)?,
        )),
        None => signed::Open::Plain,
    };
    daemon::runtime()?.block_on(print_reports(
        broker,
        open,
        o.host,
        o.json,
        seconds(o.wait)?,
    ))
}

/// What the broker holds about one host.
#[derive(Debug, Clone, Default)]
pub struct HostReport {
    pub host: String,
    /// The orchestrator's verdict, once it has scored the host.
    pub score: Option<HostScore>,
    /// Tasks the host refused (bad profile) or that stopped on an error, from its `applied`.
    pub task_errors: Vec<TaskStatus>,
}

/// After the score of a single host, how long to wait for its `applied` (retained messages
/// arrive together right after subscribing; a host that never had a task has none).
const APPLIED_GRACE: Duration = Duration::from_millis(500);

/// Collect the retained scores and task reports of `host` (or of every host) for up to `wait`.
pub async fn fetch(
    broker: BrokerUrl,
    mut open: signed::Open,
    host: Option<&str>,
    wait: Duration,
) -> Result<Vec<HostReport>> {
    let filters = match host {
        Some(h) => {
            if !valid_id(h) {
                bail!("host id {h:?}: use 1-64 of [A-Za-z0-9._-]");
            }
            [
                filters::host(h, "cert"),
                filters::host(h, "score"),
                filters::host(h, "applied"),
            ]
        }
        None => [
            filters::all_hosts("cert"),
            filters::all_hosts("score"),
            filters::all_hosts("applied"),
        ],
    };
    let mut options = LinkOptions::new(broker, &format!("gopswarm-explain-{}", unix_micros()));
    options.subscriptions = filters.into_iter().map(|f| (f, QoS::AtLeastOnce)).collect();
    let mut link = Link::start(options);
    let mut reports: BTreeMap<String, HostReport> = BTreeMap::new();
    let mut deadline = tokio::time::Instant::now() + wait;
    let mut applied_seen = false;
    loop {
        let ev = match tokio::time::timeout_at(deadline, link.events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) | Err(_) => break,
        };
        let LinkEvent::Message(p) = ev else { continue };
        match open.open(&p.topic, &p.payload) {
            Ok(Inbound::Score(s)) => {
                let r = reports.entry(s.host.clone()).or_default();
                r.host = s.host.clone();
                r.score = Some(s);
                if host.is_some() {
                    if applied_seen {
                        break;
                    }
                    deadline = deadline.min(tokio::time::Instant::now() + APPLIED_GRACE);
                }
            }
            Ok(Inbound::Applied(a)) => {
                let r = reports.entry(a.host.clone()).or_default();
                r.host = a.host.clone();
                r.task_errors = a.tasks.into_iter().filter(|t| t.error.is_some()).collect();
                applied_seen = true;
                if host.is_some() && r.score.is_some() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("explain: refused payload on {}: {e}", p.topic),
        }
    }
    let _ = link.client.disconnect().await;
    Ok(reports
        .into_values()
        .filter(|r| r.score.is_some() || !r.task_errors.is_empty())
        .collect())
}

/// The explanation as people read it.
pub fn render(r: &HostReport) -> String {
    let mut out = String::new();
    match &r.score {
        Some(s) => {
            out.push_str(&format!(
                "host {}: tier {} ({} slots), combined {:.1} (stability {:.1}, fitness {:.1})\n",
                s.host, s.tier, s.slots, s.combined, s.stability, s.fitness
            ));
            if let Some(risk) = s.disconnect_risk {
                out.push_str(&format!(
                    "learned disconnect risk next interval: {:.1}%\n",
                    100.0 * risk
                ));
            }
            out.push_str(&s.explanation);
            out.push('\n');
        }
        None => out.push_str(&format!(
            "host {}: no score from the orchestrator yet\n",
            r.host
        )),
    }
    if !r.task_errors.is_empty() {
        out.push_str("tasks refused or stopped by an error:\n");
        for t in &r.task_errors {
            out.push_str(&format!(
                "  {}/{}: {}\n",
                t.stream,
                t.profile,
                t.error.as_deref().unwrap_or_default()
            ));
        }
    }
    out
}

/// One JSON line: the score's fields (as before) plus `task_errors`.
pub fn to_json(r: &HostReport) -> Result<serde_json::Value> {
    let mut v = match &r.score {
        Some(s) => serde_json::to_value(s).context("score as JSON")?,
        None => serde_json::json!({ "host": r.host }),
    };
    v["task_errors"] = serde_json::to_value(&r.task_errors).context("task errors as JSON")?;
    Ok(v)
}

/// Print the reports of `host` (or of every host) as text or JSON lines.
async fn print_reports(
    broker: BrokerUrl,
    open: signed::Open,
    host: Option<String>,
    json: bool,
    wait: Duration,
) -> Result<()> {
    let reports = fetch(broker, open, host.as_deref(), wait).await?;
    if reports.is_empty() {
        return Err(anyhow::anyhow!(
            "no score for {} on the broker within {wait:?} (is the orchestrator running and the host connected?)",
            host.as_deref().unwrap_or("any host")
        ));
    }
    for r in &reports {
        if json {
            println!("{}", to_json(r)?);
        } else {
            println!("{}", render(r));
        }
    }
    Ok(())
}
