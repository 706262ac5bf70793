// SPDX-License-Identifier: MPL-2.0
//! Per-host message rates. A host's messages are checked for their signature first (a forger
//! must not spend a real host's allowance), then each enrolled host may send `per_second`
//! messages a second on average with bursts of `burst`; the rest are counted as refused and
//! dropped, so one compromised or broken host cannot keep the service loop busy. Deaths are
//! never limited: the broker publishes them, and a lost death is a lost slot.

use gopswarm_proto::{Inbound, Reject};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// Messages a host may send: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// A host sends a heartbeat per keep-alive, and a birth, an `applied` and a few acks per
/// change of its tasks: 20 a second, 200 at once, is far above what a host with dozens of
/// slots needs at a layout change.
pub const DEFAULT_HOST_RATE: HostRate = HostRate {
    per_second: NonZeroU32::new(20).unwrap(),
    burst: NonZeroU32::new(200).unwrap(),
};

impl Default for HostRate {
    fn default() -> Self {
        DEFAULT_HOST_RATE
    }
}

pub struct HostLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl HostLimiter {
    pub fn new(rate: HostRate) -> Self {
        let quota = Quota::per_second(rate.per_second).allow_burst(rate.burst);
        HostLimiter {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
        }
    }

    /// `msg` if its sender is within its rate (or it is not a host's own message), else the
    /// refusal to count.
    pub fn admit(&self, msg: Inbound) -> Result<Inbound, Reject> {
        let host = match &msg {
            Inbound::Birth(b) => &b.host,
            Inbound::Heartbeat(h) => &h.host,
            Inbound::Applied(a) => &a.host,
            Inbound::Ack(a) => &a.host,
            _ => return Ok(msg),
        };
        match self.limiter.check_key(host) {
            Ok(()) => Ok(msg),
            Err(_) => Err(Reject::RateLimited(format!("host {host}"))),
        }
    }

    /// Forget hosts whose allowance is full again (they sent nothing lately), so forged or
    /// departed ids do not pile up.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Hosts with an allowance in use.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gopswarm_proto::{Ack, Death};

    fn ack(host: &str) -> Inbound {
        Inbound::Ack(Ack {
            host: host.into(),
            id: "c".into(),
            ok: true,
            detail: String::new(),
            current_gop: None,
        })
    }

    #[test]
    fn a_flooding_host_is_cut_to_its_burst_and_others_keep_theirs() {
        let limiter = HostLimiter::new(HostRate {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(10).unwrap(),
        });
        let admitted = (0..1000)
            .filter(|_| limiter.admit(ack("flood")).is_ok())
            .count();
        // The burst, and at most one more if a second went by.
        assert!((10..=11).contains(&admitted), "{admitted}");
        assert!(matches!(
            limiter.admit(ack("flood")),
            Err(Reject::RateLimited(_))
        ));
        assert!(
            limiter.admit(ack("quiet")).is_ok(),
            "another host's allowance"
        );
        // Deaths and messages that are not a host's own pass whatever the rate.
        for _ in 0..100 {
            let death = Inbound::Death(Death {
                host: "flood".into(),
                seq: 1,
            });
            assert!(limiter.admit(death).is_ok());
        }
        assert_eq!(limiter.tracked(), 2);
    }
}
