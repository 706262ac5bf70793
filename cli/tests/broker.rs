// SPDX-License-Identifier: MPL-2.0
//! The orchestrator's embedded broker with the swarm's keys: TLS only, under the swarm CA
//! (checked with `openssl s_client`), and only the swarm's parts get in, each with its key. A
//! new host enrols (logging in with its token) and joins (logging in with its key); plain MQTT,
//! anonymous clients, forged logins, a host's or an operator's key under the orchestrator's
//! or another host's client id, and a client that does not trust the swarm CA are all turned
//! away.

use gopswarm_proto::signed::{Principal, Signer, generate};
use gopswarm_proto::{Inbound, Topic, filters};
use gopswarm_test_support::free_port;
use gopswarm_test_support::swarm::*;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use std::time::{Duration, Instant};

/// Whether a session opens: CONNACK within 3 s (a refused login or TLS handshake closes the
/// connection instead).
fn connects(o: MqttOptions) -> Option<(Client, rumqttc::Connection)> {
    let (client, mut conn) = Client::new(o, 16);
    match conn.recv_timeout(Duration::from_secs(3)) {
        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => Some((client, conn)),
        _ => None,
    }
}

fn tls_options(port: u16, client_id: &str, ca: Option<Vec<u8>>) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_transport(match ca {
        Some(ca) => rumqttc::Transport::tls(ca, None, None),
        None => rumqttc::Transport::tls_with_default_config(),
    });
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

/// An orchestrator with its embedded broker on `port`, the swarm's keys in `dir`.
fn embedded_orchestrator(dir: &std::path::Path, port: u16) -> Proc {
    Proc::spawn(
        dir,
        "orchestrator",
        &[
            "orchestrator".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--state".into(),
            dir.join("state.redb").display().to_string(),
        ],
    )
}

#[test]
fn embedded_broker_takes_only_the_swarms_parts_over_tls() {
    let dir = swarm_dir("embedded-broker");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keys = swarm_keys(&dir);
    let ca_path = keys.broker_ca().unwrap();
    let ca = std::fs::read(&ca_path).unwrap();
    let port = free_port();
    let mut orchestrator = embedded_orchestrator(&dir, port);
    let operator = keys
        .signer(Principal::Operator(
            gopswarm_proto::keys::DEFAULT_OPERATOR.into(),
        ))
        .unwrap();
    let (user, password) = operator.broker_login();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (client, mut conn) = loop {
        let mut o = tls_options(port, "test-operator", Some(ca.clone()));
        o.set_credentials(&user, &password);
        if let Some(c) = connects(o) {
            break c;
        }
        assert!(orchestrator.alive(), "the orchestrator exited");
        assert!(
            Instant::now() < deadline,
            "no TLS session with the operator's login"
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // A tool nobody here wrote checks the certificate chain against the swarm CA.
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-CAfile", ca_path.to_str().unwrap()])
        .args(["-verify_return_error", "-verify_ip", "127.0.0.1", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Verification: OK"), "{said}");

    // Turned away: plain MQTT on the TLS port, TLS without a login, a made-up key under the
    // operator's name, a login without a password, and a client that does not trust the CA.
    assert!(connects(MqttOptions::new("plain", "127.0.0.1", port)).is_none());
    assert!(connects(tls_options(port, "anonymous", Some(ca.clone()))).is_none());
    let forger = Signer::new(Principal::Operator("operator".into()), generate());
    let mut o = tls_options(port, "forged", Some(ca.clone()));
    let (u, p) = forger.broker_login();
    o.set_credentials(u, p);
    assert!(connects(o).is_none());
    let mut o = tls_options(port, "no-password", Some(ca.clone()));
    o.set_credentials(&user, "");
    assert!(connects(o).is_none());
    let mut o = tls_options(port, "untrusting", None);
    o.set_credentials(&user, &password);
    assert!(connects(o).is_none());

    // A new host enrols with its token and joins with its key: its certificate and its birth
    // reach the operator's session.
    client
        .subscribe(filters::all_hosts("birth"), QoS::AtLeastOnce)
        .unwrap();
    client
        .subscribe(filters::all_hosts("cert"), QoS::AtLeastOnce)
        .unwrap();
    let _host = Proc::spawn(
        &dir,
        "host-0",
        &[
            "host".into(),
            "--id".into(),
            "host-0".into(),
            "--broker".into(),
            format!("mqtts://127.0.0.1:{port}"),
        ],
    );
    let mut verifier = gopswarm_proto::signed::Verifier::new(&keys.trust().unwrap()).unwrap();
    let (mut cert, mut birth) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(cert && birth) && Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            conn.recv_timeout(Duration::from_millis(500))
        {
            match verifier.open(&p.topic, &p.payload) {
                Ok(Inbound::Cert(c)) if c.host == "host-0" => cert = true,
                Ok(Inbound::Birth(b)) if b.host == "host-0" => birth = true,
                _ => {}
            }
        }
    }
    assert!(cert && birth, "enrolled: {cert}, born: {birth}");

    // Its key logs in only under its own client id: not as the orchestrator's session, which
    // it would otherwise take over.
    let host_key = keys.signer(Principal::Host("host-0".into())).unwrap();
    let (hu, hp) = host_key.broker_login();
    let mut o = tls_options(port, "gopswarm-orchestrator", Some(ca.clone()));
    o.set_credentials(&hu, &hp);
    assert!(connects(o).is_none());
    // Nor does the operator's key take the orchestrator's or a host's session.
    for taken in ["gopswarm-orchestrator-live", "gopswarm-host-host-0"] {
        let mut o = tls_options(port, taken, Some(ca.clone()));
        o.set_credentials(&user, &password);
        assert!(connects(o).is_none(), "{taken}");
    }
    // The orchestrator is still up and in charge: its retained status says online.
    client
        .subscribe(Topic::OrchestratorStatus.path(), QoS::AtLeastOnce)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut online = false;
    while !online && Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            conn.recv_timeout(Duration::from_millis(500))
            && let Ok(Inbound::OrchestratorStatus(s)) = verifier.open(&p.topic, &p.payload)
        {
            online = s.online;
        }
    }
    assert!(online, "orchestrator status");
    let log = std::fs::read_to_string(dir.join("orchestrator.log")).unwrap();
    assert!(log.contains("host:host-0 may not use client id"), "{log}");
    orchestrator.kill();
}

/// The embedded broker keeps only a few KiB of each slow filter's messages (each stored message
/// pins its sender's 10 KiB read block), but a burst of heartbeats on the filter the
/// orchestrator reads them through, as a swarm's hosts send when they all come back at once,
/// reaches a subscriber whole: none is skipped.
#[test]
fn a_burst_of_heartbeats_reaches_a_subscriber_whole() {
    let dir = swarm_dir("embedded-broker-burst");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keys = swarm_keys(&dir);
    let ca = std::fs::read(keys.broker_ca().unwrap()).unwrap();
    let port = free_port();
    let mut orchestrator = embedded_orchestrator(&dir, port);
    let (user, password) = keys
        .signer(Principal::Operator(
            gopswarm_proto::keys::DEFAULT_OPERATOR.into(),
        ))
        .unwrap()
        .broker_login();
    let mut session = |id: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut o = tls_options(port, id, Some(ca.clone()));
            o.set_credentials(&user, &password);
            o.set_inflight(100);
            if let Some(c) = connects(o) {
                return c;
            }
            assert!(orchestrator.alive(), "the orchestrator exited");
            assert!(Instant::now() < deadline, "no session for {id}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let (watch, mut watch_conn) = session("test-watch");
    watch
        .subscribe(filters::all_hosts("heartbeat"), QoS::AtLeastOnce)
        .unwrap();
    while !matches!(
        watch_conn.recv_timeout(Duration::from_secs(5)),
        Ok(Ok(Event::Incoming(Packet::SubAck(_))))
    ) {}
    const HOSTS: usize = 50;
    const EACH: usize = 6;
    let (burst, mut burst_conn) = session("test-burst");
    // About the size of a real heartbeat.
    let payload = vec![b'x'; 1500];
    let sender = std::thread::spawn(move || {
        for i in 0..HOSTS * EACH {
            let topic = Topic::Heartbeat(format!("burst-{}", i % HOSTS)).path();
            burst
                .publish(topic, QoS::AtLeastOnce, false, payload.clone())
                .unwrap();
        }
        burst
    });
    let pump = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let _ = burst_conn.recv_timeout(Duration::from_millis(200));
        }
    });
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < HOSTS * EACH && Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::Publish(_)))) =
            watch_conn.recv_timeout(Duration::from_millis(500))
        {
            got += 1;
        }
    }
    let _burst = sender.join().unwrap();
    assert_eq!(got, HOSTS * EACH, "heartbeats of the burst that arrived");
    orchestrator.kill();
    drop(pump);
    let log = std::fs::read_to_string(dir.join("orchestrator.log")).unwrap();
    assert!(
        !log.contains("jumping to head"),
        "the broker skipped messages"
    );
}
