// SPDX-License-Identifier: MPL-2.0
//! Network endpoints that travel in messages (a stream's source, a host's SRT listener, a
//! merger's chunk sink), parsed strictly: a scheme from an allow-list, a host that is an IP
//! literal or a DNS name, a port, and nothing else (no user, path, query or fragment). What a
//! daemon connects to is built from these typed parts, never by pasting the string into a
//! pipeline description, so a crafted URL cannot add elements to a pipeline.

use std::fmt;
use std::net::IpAddr;

/// Longest endpoint accepted, in bytes.
pub const MAX_ENDPOINT_LEN: usize = 256;

/// The schemes gopswarm speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `gdp+tcp://`: the GDP-framed H.264 feed of `gopswarm source`.
    GdpTcp,
    /// `srt://`: a host's SRT listener serving its partial streams.
    Srt,
    /// `tcp://`: a merger listening for partial streams.
    Tcp,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::GdpTcp => "gdp+tcp",
            Scheme::Srt => "srt",
            Scheme::Tcp => "tcp",
        }
    }

    fn from_str(s: &str) -> Option<Scheme> {
        [Scheme::GdpTcp, Scheme::Srt, Scheme::Tcp]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// Where an endpoint lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointHost {
    Ip(IpAddr),
    /// A DNS name: letters, digits and hyphens in dot-separated labels (RFC 1123).
    Name(String),
}

impl fmt::Display for EndpointHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointHost::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            EndpointHost::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            EndpointHost::Name(n) => f.write_str(n),
        }
    }
}

/// A parsed endpoint: `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub host: EndpointHost,
    pub port: u16,
}

impl Endpoint {
    /// Parse `s`, accepting only the `allowed` schemes. The error says what is wrong.
    pub fn parse(s: &str, allowed: &[Scheme]) -> Result<Endpoint, String> {
        let expected = || {
            allowed
                .iter()
                .map(|a| format!("{}://host:port", a.as_str()))
                .collect::<Vec<_>>()
                .join(" or ")
        };
        if s.len() > MAX_ENDPOINT_LEN {
            return Err(format!(
                "endpoint of {} bytes (at most {MAX_ENDPOINT_LEN})",
                s.len()
            ));
        }
        // Only visible ASCII: no spaces, quotes or control characters reach any parser.
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!("endpoint {s:?}: character {c:?} not allowed"));
        }
        let url = url::Url::parse(s).map_err(|e| format!("endpoint {s:?}: {e}"))?;
        let scheme = Scheme::from_str(url.scheme())
            .filter(|x| allowed.contains(x))
            .ok_or_else(|| {
                format!(
                    "endpoint {s:?}: scheme not allowed, expected {}",
                    expected()
                )
            })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("endpoint {s:?}: credentials are not allowed in it"));
        }
        if !(url.path().is_empty() || url.path() == "/") {
            return Err(format!(
                "endpoint {s:?}: a path is not allowed, expected {}",
                expected()
            ));
        }
        if let Some(q) = url.query() {
            return Err(format!(
                "endpoint {s:?}: parameter {q:?} not allowed, expected {}",
                expected()
            ));
        }
        if url.fragment().is_some() {
            return Err(format!("endpoint {s:?}: a fragment is not allowed"));
        }
        let host = match url.host() {
            Some(url::Host::Ipv4(a)) => EndpointHost::Ip(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => EndpointHost::Ip(IpAddr::V6(a)),
            Some(url::Host::Domain(d)) => match d.parse::<IpAddr>() {
                Ok(a) => EndpointHost::Ip(a),
                Err(_) if valid_dns_name(d) => EndpointHost::Name(d.to_ascii_lowercase()),
                Err(_) => {
                    return Err(format!(
                        "endpoint {s:?}: host {d:?} is not an IP or DNS name"
                    ));
                }
            },
            None => {
                return Err(format!(
                    "endpoint {s:?} has no host, expected {}",
                    expected()
                ));
            }
        };
        let port = url
            .port()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("endpoint {s:?} has no port, expected {}", expected()))?;
        Ok(Endpoint { scheme, host, port })
    }

    /// The host as a socket API or GStreamer's `host` property takes it (IPv6 unbracketed).
    pub fn host_name(&self) -> String {
        match &self.host {
            EndpointHost::Ip(a) => a.to_string(),
            EndpointHost::Name(n) => n.clone(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

fn valid_dns_name(d: &str) -> bool {
    d.len() <= 253
        && d.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: &[Scheme] = &[Scheme::GdpTcp, Scheme::Srt, Scheme::Tcp];

    #[test]
    fn plain_endpoints_parse() {
        let e = Endpoint::parse("gdp+tcp://127.0.0.1:7100", ALL).unwrap();
        assert_eq!(e.scheme, Scheme::GdpTcp);
        assert_eq!(e.host, EndpointHost::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(e.port, 7100);
        assert_eq!(e.to_string(), "gdp+tcp://127.0.0.1:7100");
        let e = Endpoint::parse("srt://[::1]:9000", ALL).unwrap();
        assert_eq!(e.host_name(), "::1");
        assert_eq!(e.to_string(), "srt://[::1]:9000");
        let e = Endpoint::parse("tcp://Merger-1.example.org:7000/", ALL).unwrap();
        assert_eq!(e.host, EndpointHost::Name("merger-1.example.org".into()));
    }

    #[test]
    fn pipeline_syntax_and_extras_are_refused_with_the_reason() {
        for (s, why) in [
            (
                "gdp+tcp://127.0.0.1 port=1 ! fakesink filesrc location=/etc/passwd ! filesink location=/tmp/x tcpclientsrc host=127.0.0.1:7000",
                "not allowed",
            ),
            ("gdp+tcp://a!b:7000", "not an IP or DNS name"),
            ("gdp+tcp://a\"b:7000", "not an IP or DNS name"),
            ("srt://127.0.0.1:9000?mode=listener", "parameter"),
            ("srt://127.0.0.1:9000?passphrase=x", "parameter"),
            ("tcp://user:pw@127.0.0.1:7000", "credentials"),
            ("tcp://127.0.0.1:7000/x", "path"),
            ("tcp://127.0.0.1:7000#f", "fragment"),
            ("tcp://127.0.0.1", "no port"),
            ("tcp://127.0.0.1:0", "no port"),
            ("file:///etc/passwd", "scheme"),
            ("http://127.0.0.1:80", "scheme"),
            ("tcp://-bad.example:1", "not an IP or DNS name"),
            ("127.0.0.1:7000", ""),
        ] {
            let e = Endpoint::parse(s, ALL).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
        let long = format!("tcp://{}.example:1", "a".repeat(300));
        assert!(Endpoint::parse(&long, ALL).unwrap_err().contains("at most"));
        let e = Endpoint::parse("srt://127.0.0.1:9000", &[Scheme::Tcp]).unwrap_err();
        assert!(e.contains("expected tcp://host:port"), "{e}");
    }

    proptest! {
        // Whatever parses prints back to a string that parses to the same endpoint and holds
        // only characters that cannot start a new element or property in a launch line.
        #[test]
        fn anything_accepted_is_canonical_and_inert(s in "[ -~]{0,80}") {
            if let Ok(e) = Endpoint::parse(&s, ALL) {
                let printed = e.to_string();
                prop_assert_eq!(Endpoint::parse(&printed, ALL).unwrap(), e.clone());
                prop_assert!(printed.bytes().all(|b| b.is_ascii_alphanumeric() || b"+:/.[]-".contains(&b)), "{}", printed);
            }
        }
    }
}
