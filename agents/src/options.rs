// SPDX-License-Identifier: MPL-2.0
//! Value parsers shared by the roles' command-line options.

use gopswarm_proto::link::BrokerUrl;
use std::time::Duration;

/// `--broker`: mqtt://[user:pass@]host:port or mqtts://...
pub fn parse_broker(s: &str) -> Result<BrokerUrl, String> {
    BrokerUrl::parse(s)
}

/// A duration given in seconds (fractions allowed), as every time flag takes it.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s} s: {e}"))
}

/// Seconds as a duration, for values that came in as numbers.
pub fn seconds(s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| anyhow::anyhow!("{s} s: {e}"))
}
