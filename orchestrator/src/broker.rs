// SPDX-License-Identifier: MPL-2.0
//! The embedded MQTT broker (rumqttd): the zero-setup default of `gopswarm orchestrator` and
//! `gopswarm demo`. MQTT 3.1.1 on one port; retained messages and last wills work; no
//! persistence (parts re-publish their retained state after a broker restart).
//!
//! With the swarm's keys it speaks TLS only (the certificate `gopswarm init` made, under the
//! swarm CA) and admits only the swarm's parts, each logging in with its key
//! ([`gopswarm_proto::login`]); with `--insecure` it is plain and anonymous.

use anyhow::{Context, Result, bail};
use gopswarm_proto::login::Logins;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// TLS and logins of the embedded broker.
pub struct BrokerSecurity {
    /// Certificate chain and key (PEM) it serves.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA the certificate chains to (to check it is up).
    pub ca: PathBuf,
    pub logins: Arc<Logins>,
    /// A login of the swarm's (the orchestrator's) to check it is up.
    pub probe_login: (String, String),
}

/// Where a part on this machine reaches a broker listening on `listen` (a wildcard address
/// is reached on loopback).
pub fn local_address(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, listen.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listen.port()))
        }
        _ => listen,
    }
}

/// Bytes and segments each control subscription filter of the embedded broker keeps.
const CONTROL_SEGMENT_BYTES: usize = 2 * 1024;
// rumqttd panics on segments under 1 KiB.
const _: () = assert!(CONTROL_SEGMENT_BYTES >= 1024);
const CONTROL_SEGMENTS: usize = 3;
/// The chunk topics of every stream and profile, and what their filters keep.
const CHUNK_FILTER: &str = "gopswarm/v1/stream/+/chunks/+";
const CHUNK_SEGMENT_BYTES: usize = 4 * 1024 * 1024;
const CHUNK_SEGMENTS: usize = 2;
/// What the heartbeat filter keeps: a burst from hundreds of hosts at once (a heartbeat is
/// about 1.5 KB). Heartbeats never stop, so the log fills and evicts within minutes.
const HEARTBEAT_SEGMENT_BYTES: usize = 256 * 1024;
const HEARTBEAT_SEGMENTS: usize = 4;

/// Filters with logs of their own size: (filter, segment bytes, segments).
fn custom_segments() -> Vec<(String, usize, usize)> {
    vec![
        (
            CHUNK_FILTER.to_string(),
            CHUNK_SEGMENT_BYTES,
            CHUNK_SEGMENTS,
        ),
        (
            gopswarm_proto::filters::all_hosts("heartbeat"),
            HEARTBEAT_SEGMENT_BYTES,
            HEARTBEAT_SEGMENTS,
        ),
    ]
}

/// Start rumqttd on `listen` in its own thread (its `start()` blocks) and wait until it
/// accepts connections: plain and anonymous, or with `security` TLS and the swarm's logins.
pub fn start_embedded(listen: SocketAddr, security: Option<BrokerSecurity>) -> Result<()> {
    let payload = gopswarm_proto::MAX_PACKET;
    let cfg = serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 20010,
            "max_outgoing_packet_count": 200,
            // The router keeps each subscription filter's recent messages in memory, in up
            // to `max_segment_count` segments that close at `max_segment_size` bytes. A stored
            // message is a slice of the publisher's read buffer and keeps that whole 10 KiB
            // block alive (rumqtt issue 1001), so a filter that carries a few hundred bytes a
            // minute (a host's score, its commands) pinned tens of KiB per message and never
            // reached the byte limit that evicts: the broker grew for hours. Control filters
            // therefore keep only a few KiB of messages. A burst of more than that on one
            // filter in one instant (births or acks of dozens of hosts at once) can be skipped
            // for a reader that is behind: such swarms run mosquitto (docs/security.md).
            "max_segment_size": CONTROL_SEGMENT_BYTES,
            "max_segment_count": CONTROL_SEGMENTS,
            // Chunks through the broker (`--chunks mqtt`) are large and come fast: their
            // filters keep a few seconds of them, so a merger that stalls briefly loses none.
            // Heartbeats come from every host all the time: a burst is kept whole (a skipped
            // one can make a host look dead), and the log still evicts within minutes.
            "custom_segment": custom_segments()
                .into_iter()
                .map(|(filter, bytes, count)| {
                    (filter, serde_json::json!({
                        "max_segment_size": bytes,
                        "max_segment_count": count,
                    }))
                })
                .collect::<serde_json::Map<_, _>>(),
        },
        "v4": { "1": {
            "name": "v4-1",
            "listen": listen.to_string(),
            "next_connection_delay_ms": 1,
            "connections": {
                "connection_timeout_ms": 60000,
                "max_payload_size": payload,
                "max_inflight_count": 200,
                "dynamic_filters": true,
            }
        }}
    });
    let mut cfg: rumqttd::Config = serde_json::from_value(cfg).context("broker config")?;
    let mut probe = None;
    if let Some(sec) = security {
        let server = cfg
            .v4
            .as_mut()
            .and_then(|v4| v4.get_mut("1"))
            .context("broker config: no server")?;
        server.tls = Some(rumqttd::TlsConfig::Rustls {
            capath: None,
            certpath: sec.cert.display().to_string(),
            keypath: sec.key.display().to_string(),
        });
        let logins = sec.logins.clone();
        server.set_auth_handler(move |client_id: String, user: String, password: String| {
            let verdict = logins.check(&client_id, &user, &password);
            if let Err(why) = &verdict {
                tracing::warn!("embedded broker: login of {client_id:?} refused: {why}");
            }
            std::future::ready(verdict.is_ok())
        });
        probe = Some((sec.ca, sec.probe_login));
    }
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(cfg);
            if let Err(e) = broker.start() {
                tracing::error!("embedded broker stopped: {e}");
            }
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let local = local_address(listen);
    while Instant::now() < deadline {
        let up = match &probe {
            Some((ca, login)) => accepts_mqtts(local, ca, login)?,
            None => accepts_mqtt(local),
        };
        if up {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("embedded broker did not listen on {listen} within 10 s")
}

/// Whether an MQTT session over TLS opens on `addr` with `login`, trusting `ca`. On a thread
/// of its own: the client runs its own runtime, and the caller may be inside one (the demo).
fn accepts_mqtts(addr: SocketAddr, ca: &std::path::Path, login: &(String, String)) -> Result<bool> {
    let ca = std::fs::read(ca).with_context(|| format!("{}", ca.display()))?;
    let login = login.clone();
    std::thread::spawn(move || tls_session_opens(addr, ca, &login))
        .join()
        .map_err(|_| anyhow::anyhow!("broker probe panicked"))?
}

/// Up, not up yet, or up with a certificate its own parts refuse (an error that says so).
fn tls_session_opens(addr: SocketAddr, ca: Vec<u8>, login: &(String, String)) -> Result<bool> {
    let mut o = rumqttc::MqttOptions::new(
        format!("gopswarm-broker-probe-{}", std::process::id()),
        addr.ip().to_string(),
        addr.port(),
    );
    o.set_credentials(&login.0, &login.1);
    // The same check every part makes (the swarm CA and the broker's role), before the login
    // goes out: a server that took the port first with another swarm certificate gets none.
    let tls = gopswarm_proto::tls_role::client_config(&ca, gopswarm_proto::tls_role::BROKER_ROLE)
        .map_err(anyhow::Error::msg)?;
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ));
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = rumqttc::Client::new(o, 4);
    let up = match connection.recv_timeout(Duration::from_secs(2)) {
        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => true,
        Ok(Err(rumqttc::ConnectionError::Tls(e))) => bail!(
            "TLS to the embedded broker at {addr}: {e} (its certificate must name the address \
             parts reach it at, and the broker's role: gopswarm init DIR --broker-cert \
             --broker-name NAME)"
        ),
        _ => false,
    };
    if up {
        let _ = client.disconnect();
        // Let the DISCONNECT go out before the connection is dropped.
        let _ = connection.recv_timeout(Duration::from_millis(200));
    }
    Ok(up)
}

/// Whether an MQTT session opens on `addr`: CONNECT, CONNACK accepted, DISCONNECT. A bare TCP
/// connect that closes without CONNECT makes rumqttd log an ERROR on every start.
fn accepts_mqtt(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    // MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, keep-alive 10 s, empty
    // client id (the broker assigns one).
    const CONNECT: [u8; 14] = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 0];
    const DISCONNECT: [u8; 2] = [0xE0, 0];
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut connack = [0u8; 4];
    let ok = s.write_all(&CONNECT).is_ok()
        && s.read_exact(&mut connack).is_ok()
        && connack[0] == 0x20
        && connack[3] == 0;
    // The broker closes the session first: closing it from here races the router's own
    // clean-up (an ERROR "no-connection ... already gone").
    if s.write_all(&DISCONNECT).is_ok() {
        let _ = s.read(&mut connack);
    }
    ok
}

#[cfg(test)]
mod segment_tests {
    use super::*;
    use gopswarm_proto::Topic;

    /// The filters with logs of their own cover the topics they are for: their levels are
    /// those of the topic with wildcards for the stream, profile or host.
    #[test]
    fn custom_filters_cover_their_topics() {
        let topics = [
            Topic::Chunks("cam-1".into(), "p720".into()).path(),
            Topic::Heartbeat("host-7".into()).path(),
        ];
        let custom = custom_segments();
        assert_eq!(custom.len(), topics.len());
        for ((filter, ..), path) in custom.iter().zip(&topics) {
            let levels: Vec<&str> = path.split('/').collect();
            let f: Vec<&str> = filter.split('/').collect();
            assert_eq!(levels.len(), f.len(), "{path} against {filter}");
            for (level, f) in levels.iter().zip(&f) {
                assert!(*f == "+" || f == level, "{path} against {filter}");
            }
        }
    }
}
