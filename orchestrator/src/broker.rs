// SPDX-License-Identifier: MPL-2.0
//! The embedded MQTT broker (rumqttd): the zero-setup default of `gopswarm orchestrator` and
//! `gopswarm demo`. MQTT 3.1.1 on one port; retained messages and last wills work; no
//! persistence (parts re-publish their retained state after a broker restart).

use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Start rumqttd on `listen` in its own thread (its `start()` blocks) and wait until it
/// accepts connections.
pub fn start_embedded(listen: SocketAddr) -> Result<()> {
    let payload = gopswarm_proto::MAX_PACKET;
    let cfg = serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 20010,
            "max_outgoing_packet_count": 200,
            // A segment must hold the largest chunk.
            "max_segment_size": 2 * payload,
            "max_segment_count": 4,
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
    let cfg: rumqttd::Config = serde_json::from_value(cfg).context("broker config")?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(cfg);
            if let Err(e) = broker.start() {
                tracing::error!("embedded broker stopped: {e}");
            }
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if accepts_mqtt(listen) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("embedded broker did not listen on {listen} within 10 s")
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
