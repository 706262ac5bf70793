// SPDX-License-Identifier: MPL-2.0
//! `gopswarm explain`: a host's scores and the arithmetic behind them.

use anyhow::Result;
use gopswarm_agents::{daemon, options::seconds};

#[derive(clap::Args)]
pub struct ExplainOptions {
    /// Host id; all hosts when left out
    host: Option<String>,
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// Print JSON lines instead of text
    #[arg(long)]
    json: bool,
    /// How long to wait for the retained scores (seconds)
    #[arg(long, default_value_t = 3.0)]
    wait: f64,
}

pub fn run(o: ExplainOptions) -> Result<()> {
    let broker = gopswarm_proto::link::BrokerUrl::parse(&o.broker).map_err(anyhow::Error::msg)?;
    daemon::runtime()?.block_on(gopswarm::swarm::explain::run(
        broker,
        o.host,
        o.json,
        seconds(o.wait)?,
    ))
}
