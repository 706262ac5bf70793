//! `gopswarm explain`: what the orchestrator thinks of a host and why. Reads the retained
//! `host/{host}/score` messages (scores, tier, slot allowance and the arithmetic behind them)
//! from the broker and prints them.

use anyhow::{Context, Result, bail};
use gopswarm_proto::link::{BrokerUrl, Link, LinkEvent, LinkOptions, QoS};
use gopswarm_proto::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// Collect the retained scores of `host` (or of every host) for up to `wait`.
pub async fn fetch(
    broker: BrokerUrl,
    host: Option<&str>,
    wait: Duration,
) -> Result<Vec<HostScore>> {
    let filter = match host {
        Some(h) => {
            if !valid_id(h) {
                bail!("host id {h:?}: use 1-64 of [A-Za-z0-9._-]");
            }
            filters::host(h, "score")
        }
        None => filters::all_hosts("score"),
    };
    let mut options = LinkOptions::new(broker, &format!("gopswarm-explain-{}", unix_micros()));
    options.subscriptions = vec![(filter, QoS::AtLeastOnce)];
    let mut link = Link::start(options);
    let mut scores = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let ev = match tokio::time::timeout_at(deadline, link.events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) | Err(_) => break,
        };
        if let LinkEvent::Message(p) = ev
            && let Ok(Inbound::Score(s)) = decode_publish(&p.topic, &p.payload)
        {
            let single = host.is_some();
            scores.insert(s.host.clone(), s);
            if single {
                break;
            }
        }
    }
    let _ = link.client.disconnect().await;
    Ok(scores.into_values().collect())
}

/// The explanation as people read it.
pub fn render(s: &HostScore) -> String {
    let mut out = format!(
        "host {}: tier {} ({} slots), combined {:.1} (stability {:.1}, fitness {:.1})\n",
        s.host, s.tier, s.slots, s.combined, s.stability, s.fitness
    );
    if let Some(r) = s.disconnect_risk {
        out.push_str(&format!(
            "learned disconnect risk next interval: {:.1}%\n",
            100.0 * r
        ));
    }
    out.push_str(&s.explanation);
    out.push('\n');
    out
}

pub async fn run(
    broker: BrokerUrl,
    host: Option<String>,
    json: bool,
    wait: Duration,
) -> Result<()> {
    let scores = fetch(broker, host.as_deref(), wait).await?;
    if scores.is_empty() {
        return Err(anyhow::anyhow!(
            "no score for {} on the broker within {wait:?} (is the orchestrator running and the host connected?)",
            host.as_deref().unwrap_or("any host")
        ));
    }
    for s in &scores {
        if json {
            println!("{}", serde_json::to_string(s).context("score as JSON")?);
        } else {
            println!("{}", render(s));
        }
    }
    Ok(())
}
