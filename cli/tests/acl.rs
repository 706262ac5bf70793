// SPDX-License-Identifier: MPL-2.0
//! `gopswarm acl --mosquitto` against a real mosquitto with `allow_anonymous false`: the
//! password file it writes is one mosquitto accepts, anonymous clients stay out, every role can
//! do its job and no more (mosquitto drops an unauthorised publish silently under MQTT 3.1.1,
//! so each refusal is shown by a subscriber that gets the allowed message and not the forbidden
//! one), and a whole swarm runs frame-exact with each process on its own credentials.

use gopswarm_proto::link::BrokerUrl;
use gopswarm_proto::{Topic, filters};
use gopswarm_test_support::swarm::*;
use rumqttc::{Client, Event, Packet, QoS};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a message that is allowed may take to arrive.
const DELIVERY: Duration = Duration::from_secs(5);

/// Run `gopswarm acl --mosquitto` for these hosts into DIR/acl; the credentials by username.
fn generate(dir: &Path, hosts: &[&str], port: u16) -> BTreeMap<String, String> {
    let mut cmd = Command::new(BIN);
    cmd.args(["acl", "--mosquitto", "--out"])
        .arg(dir.join("acl"))
        .args(["--broker-port", &port.to_string()]);
    for h in hosts {
        cmd.args(["--host", h]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let creds = credentials(dir);
    let printed = String::from_utf8_lossy(&out.stdout);
    for url in creds.values() {
        let password = BrokerUrl::parse(url).unwrap().password.unwrap();
        assert!(!printed.contains(&password), "a password on stdout");
    }
    assert!(printed.contains("credentials"), "{printed}");
    creds
}

fn credentials(dir: &Path) -> BTreeMap<String, String> {
    let creds = dir.join("acl/credentials");
    std::fs::read_dir(&creds)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let user = path.file_stem().unwrap().to_string_lossy().into_owned();
            let url = std::fs::read_to_string(&path).unwrap().trim().to_string();
            (user, url)
        })
        .collect()
}

/// mosquitto with the generated snippet (no anonymous clients, the password and ACL files)
/// and a loopback listener; every decision it takes goes to DIR/mosquitto.log.
fn broker(dir: &Path, port: u16) -> Mosquitto {
    let snippet = std::fs::read_to_string(dir.join("acl/mosquitto.conf")).unwrap();
    Mosquitto::with_config(
        dir,
        port,
        format!(
            "{snippet}listener {port} 127.0.0.1\npersistence false\nuser root\n\
             log_dest file {}\nlog_type all\nconnection_messages true\n",
            dir.join("mosquitto.log").display()
        ),
    )
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("acl-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A test client: connected, subscribed, and the messages it receives.
struct Peer {
    client: Client,
    rx: mpsc::Receiver<(String, Vec<u8>)>,
}

impl Peer {
    /// Connect with `url`'s credentials and subscribe to `subs`; the CONNACK refusal, if any.
    fn connect(url: &str, id: &str, subs: &[String]) -> Result<Peer, String> {
        let url = BrokerUrl::parse(url).unwrap();
        let mut opts = url.mqtt_options(id);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(opts, 64);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (tx, rx) = mpsc::channel();
        let c2 = client.clone();
        let subs = subs.to_vec();
        std::thread::spawn(move || {
            // mosquitto grants a subscription the ACL forbids under MQTT 3.1.1 (and then
            // delivers nothing on it): a SUBACK only says the broker has it.
            let mut pending_subacks = subs.len();
            for ev in connection.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // One SUBSCRIBE each, answered in order.
                        for s in &subs {
                            c2.try_subscribe(s, QoS::AtLeastOnce).unwrap();
                        }
                        if subs.is_empty() {
                            let _ = ready_tx.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        pending_subacks -= 1;
                        if pending_subacks == 0 {
                            let _ = ready_tx.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        match ready_rx.recv_timeout(DELIVERY) {
            Ok(Ok(())) => Ok(Peer { client, rx }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("no answer from the broker".into()),
        }
    }

    fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .unwrap();
    }

    /// Messages until `payload` arrives (bounded), that one included.
    fn until(&self, payload: &str) -> Vec<(String, String)> {
        let deadline = Instant::now() + DELIVERY;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (t, p) = self
                .rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{payload:?} did not arrive; got {got:?}"));
            let p = String::from_utf8_lossy(&p).into_owned();
            let done = p == payload;
            got.push((t, p));
            if done {
                return got;
            }
        }
    }

    /// Whatever else arrives within a moment.
    fn rest(&self) -> Vec<(String, String)> {
        let mut got = Vec::new();
        while let Ok((t, p)) = self.rx.recv_timeout(Duration::from_millis(500)) {
            got.push((t, String::from_utf8_lossy(&p).into_owned()));
        }
        got
    }
}

/// The forbidden message went first and the allowed one after it, on one connection: a
/// subscriber that got the allowed one and not the forbidden one had it dropped by the broker.
fn only_allowed_arrives(sub: &Peer, allowed: &str, forbidden: &str) {
    let mut got = sub.until(allowed);
    got.extend(sub.rest());
    assert!(
        !got.iter().any(|(_, p)| p == forbidden),
        "{forbidden:?} got through: {got:?}"
    );
}

fn denied_publishes(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("mosquitto.log"))
        .unwrap_or_default()
        .matches("Denied PUBLISH")
        .count()
}

#[test]
fn files_and_anonymous_clients() {
    let dir = fresh_dir("files");
    let port = free_port();
    let creds = generate(&dir, &["host-0", "host-1"], port);
    let users: Vec<&str> = creds.keys().map(String::as_str).collect();
    assert_eq!(
        users,
        ["host-0", "host-1", "merger", "operator", "orchestrator"]
    );
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.join("acl/credentials")), 0o700);
    for user in creds.keys() {
        assert_eq!(mode(dir.join(format!("acl/credentials/{user}.url"))), 0o600);
    }
    let passwd = std::fs::read_to_string(dir.join("acl/passwd")).unwrap();
    assert!(passwd.lines().all(|l| l.contains(":$7$")), "{passwd}");
    for url in creds.values() {
        assert!(url.starts_with("mqtt://") && url.ends_with(&format!("@127.0.0.1:{port}")));
        let pw = BrokerUrl::parse(url).unwrap().password.unwrap();
        assert!(pw.len() >= 43, "{pw}");
        assert!(!passwd.contains(&pw));
    }
    // Run again with one more host: the others keep their passwords, the new one gets one.
    let again = generate(&dir, &["host-0", "host-1", "host-2"], port);
    assert_eq!(again.len(), 6);
    for (user, url) in &creds {
        assert_eq!(&again[user], url, "{user} got a new password");
    }

    let _broker = broker(&dir, port);
    // Every identity gets in with the hash this crate wrote (mosquitto checks it).
    for (user, url) in &again {
        Peer::connect(url, &format!("test-{user}"), &[])
            .unwrap_or_else(|e| panic!("{user} refused: {e}"));
    }
    let anonymous = Peer::connect(&format!("mqtt://127.0.0.1:{port}"), "test-anon", &[]);
    let err = anonymous.err().expect("anonymous client let in");
    assert!(
        err.contains("NotAuthorized") || err.contains("BadUserNamePassword"),
        "{err}"
    );
    let wrong = Peer::connect(
        &format!("mqtt://host-0:not-the-password@127.0.0.1:{port}"),
        "test-wrong",
        &[],
    );
    assert!(wrong.is_err(), "a wrong password let in");
}

#[test]
fn each_role_does_its_job_and_no_more() {
    let dir = fresh_dir("roles");
    let port = free_port();
    let creds = generate(&dir, &["host-0", "host-1"], port);
    let _broker = broker(&dir, port);
    let peer = |user: &str, subs: &[String]| {
        Peer::connect(&creds[user], &format!("test-{user}-{}", subs.len()), subs).unwrap()
    };
    let orchestrator = peer(
        "orchestrator",
        &[filters::all_hosts("birth"), Topic::StreamControl.path()],
    );
    let host0 = peer("host-0", &[]);
    let host1 = peer("host-1", &[filters::host("host-1", "assignment")]);
    let operator = peer("operator", &[]);
    let chunks = filters::stream("cam1", "chunks", "p360");
    let merger = peer("merger", std::slice::from_ref(&chunks));
    let nosy = peer("operator", std::slice::from_ref(&chunks));

    // A host writes its own birth, not another host's.
    host0.publish(&Topic::Birth("host-1".into()).path(), "forged birth");
    host0.publish(&Topic::Birth("host-0".into()).path(), "own birth");
    only_allowed_arrives(&orchestrator, "own birth", "forged birth");

    // Only the orchestrator writes assignments.
    let assignment = Topic::Assignment("host-1".into()).path();
    host0.publish(&assignment, "forged assignment");
    operator.publish(&assignment, "operator assignment");
    orchestrator.publish(&assignment, "real assignment");
    let mut got = host1.until("real assignment");
    got.extend(host1.rest());
    assert_eq!(got.len(), 1, "{got:?}");

    // Only operators write stream commands.
    host0.publish(&Topic::StreamControl.path(), "host's stream command");
    merger.publish(&Topic::StreamControl.path(), "merger's stream command");
    operator.publish(&Topic::StreamControl.path(), "operator's stream command");
    let mut got = orchestrator.until("operator's stream command");
    got.extend(orchestrator.rest());
    assert_eq!(got.len(), 1, "{got:?}");

    // The merger reads chunks; an operator does not, and cannot write them either.
    operator.publish(&chunks, "operator's chunk");
    host0.publish(&chunks, "chunk");
    assert_eq!(merger.until("chunk").len(), 1);
    assert!(merger.rest().is_empty());
    assert!(nosy.rest().is_empty());

    // Each refusal above is one of mosquitto's own.
    assert_eq!(denied_publishes(&dir), 6);
}

/// Every message the parts exchange gets from its writer to each of its readers, each reader
/// subscribed as the part is (`agents/src/host.rs`, `merge.rs`, the orchestrator's two
/// connections, `gopswarm explain`): the ACL leaves out nothing the protocol needs.
#[test]
fn every_message_of_the_protocol_gets_through() {
    let dir = fresh_dir("protocol");
    let port = free_port();
    let creds = generate(&dir, &["host-0"], port);
    let _broker = broker(&dir, port);
    let stream = |leaf: &str| filters::stream("cam1", leaf, "p360");
    let peers: BTreeMap<&str, Peer> = [
        (
            "host-0",
            vec![
                filters::host("host-0", "assignment"),
                filters::host("host-0", "cmd"),
                filters::host("host-0", "score"),
                filters::host("host-0", "cert"),
                filters::stream("+", "resend", "+"),
            ],
        ),
        (
            "merger",
            vec![
                stream("chunks"),
                stream("layout"),
                stream("end"),
                Topic::StreamDef("cam1".into()).path(),
                filters::all_hosts("cert"),
                filters::all_hosts("death"),
                filters::all_hosts("birth"),
            ],
        ),
        (
            "orchestrator",
            vec![
                filters::all_hosts("birth"),
                filters::all_hosts("death"),
                filters::all_hosts("heartbeat"),
                filters::all_hosts("applied"),
                filters::all_hosts("ack"),
                filters::all_hosts("enrol"),
                Topic::StreamControl.path(),
            ],
        ),
        (
            "operator",
            vec![
                filters::all_hosts("score"),
                filters::all_hosts("applied"),
                filters::all_hosts("cert"),
                Topic::OrchestratorStatus.path(),
            ],
        ),
    ]
    .into_iter()
    .map(|(user, subs)| {
        let peer = Peer::connect(&creds[user], &format!("test-{user}"), &subs).unwrap();
        (user, peer)
    })
    .collect();
    let host = |leaf: &str| filters::host("host-0", leaf);
    for (writer, topic, readers) in [
        ("host-0", host("birth"), &["orchestrator", "merger"][..]),
        ("host-0", host("death"), &["orchestrator", "merger"]),
        ("host-0", host("heartbeat"), &["orchestrator"]),
        ("host-0", host("applied"), &["orchestrator", "operator"]),
        ("host-0", host("ack"), &["orchestrator"]),
        ("host-0", host("enrol"), &["orchestrator"]),
        ("host-0", stream("chunks"), &["merger"]),
        ("host-0", stream("end"), &["merger"]),
        ("orchestrator", host("assignment"), &["host-0"]),
        ("orchestrator", host("cmd"), &["host-0"]),
        ("orchestrator", host("score"), &["host-0", "operator"]),
        (
            "orchestrator",
            host("cert"),
            &["host-0", "merger", "operator"],
        ),
        (
            "orchestrator",
            Topic::StreamDef("cam1".into()).path(),
            &["merger"],
        ),
        ("orchestrator", stream("layout"), &["merger"]),
        (
            "orchestrator",
            Topic::OrchestratorStatus.path(),
            &["operator"],
        ),
        ("merger", stream("resend"), &["host-0"]),
        ("operator", Topic::StreamControl.path(), &["orchestrator"]),
    ] {
        let payload = format!("{writer} on {topic}");
        peers[writer].publish(&topic, &payload);
        for r in readers {
            peers[r].until(&payload);
        }
    }
    assert_eq!(denied_publishes(&dir), 0);
}

/// A small real swarm, each process on its generated credentials given in the environment
/// (never on a command line), against the ACL'd broker: output frame-exact, and no publish of
/// any part refused (the ACL covers everything the parts do).
#[test]
fn swarm_on_generated_credentials_is_frame_exact() {
    let _serial = serial();
    let dir = fresh_dir("swarm");
    let hosts = ["host-0", "host-1"];
    let port = free_port();
    let creds = generate(&dir, &hosts, port);
    let _broker = broker(&dir, port);
    let spawn = |name: &str, env: &str, user: &str, args: &[String]| {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = gopswarm_in(&dir)
            .args(args)
            .env(env, &creds[user])
            .env("RUST_LOG", "info,rumqttc=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Proc {
            name: name.into(),
            child: Some(child),
        }
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let gop_s = 2.0;
    let _orchestrator = spawn(
        "orchestrator",
        "GOPSWARM_ORCHESTRATOR_BROKER",
        "orchestrator",
        &[
            "orchestrator".into(),
            "--state".into(),
            dir.join("state.redb").display().to_string(),
            "--keepalive".into(),
            "1".into(),
        ],
    );
    let source_port = free_port();
    let _source = Proc::spawn(
        &dir,
        "source",
        &[
            "source".into(),
            "--clip".into(),
            clip().display().to_string(),
            "--port".into(),
            source_port.to_string(),
            "--duration".into(),
            "16".into(),
        ],
    );
    assert!(wait_port(source_port, Duration::from_secs(10)));
    let watch = Peer::connect(
        &creds["operator"],
        "test-watch",
        &[
            filters::all_hosts("birth"),
            filters::stream("+", "layout", "+"),
        ],
    )
    .unwrap();
    let _hosts: Vec<Proc> = hosts
        .iter()
        .map(|h| {
            spawn(
                h,
                "GOPSWARM_HOST_BROKER",
                h,
                &s(&["host", "--id", h, "--keepalive", "1", "--enrol-token"])
                    .into_iter()
                    .chain([swarm_keys(&dir).add_tokens(1).unwrap()[0]
                        .display()
                        .to_string()])
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let mut born = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while born.len() < hosts.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let (topic, _) = watch.rx.recv_timeout(left).expect("host births");
        if let Some(Topic::Birth(h)) = Topic::parse(&topic) {
            born.insert(h);
        }
    }
    let mut merger = spawn(
        "merger",
        "GOPSWARM_MERGE_BROKER",
        "merger",
        &[
            "merge".into(),
            "--stream".into(),
            STREAM.into(),
            "--profile".into(),
            PROFILE.into(),
            "--out".into(),
            dir.join("out").display().to_string(),
            "--summary".into(),
            dir.join("summary.json").display().to_string(),
            "--latency-gops".into(),
            "6".into(),
            "--idle-timeout".into(),
            "20".into(),
        ],
    );
    let st = gopswarm_in(&dir)
        .env("GOPSWARM_OPERATOR_BROKER", &creds["operator"])
        .args([
            "stream",
            "add",
            "--id",
            STREAM,
            "--source",
            &format!("gdp+tcp://127.0.0.1:{source_port}"),
            "--profile",
            &format!("{PROFILE}={SPEC}"),
            "--gop",
            &gop_s.to_string(),
            "--redundancy",
            "0",
            "--slots",
            "2",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "gopswarm stream add failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (topic, _) = watch.rx.recv_timeout(left).expect("a layout");
        if matches!(Topic::parse(&topic), Some(Topic::Layout(..))) {
            break;
        }
    }
    let st = merger.wait(Duration::from_secs(16 + 90));
    assert!(st.success(), "merger failed: see {}", dir.display());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let c = check_output(&dir, &summary, gop_s);
    assert!(c.frames > 0 && c.frames == c.expected, "{c:?}\n{summary:#}");
    assert_eq!(c.bad_steps, 0, "{c:?}");
    assert!(c.decode_errors.is_empty(), "{c:?}");
    assert_eq!(c.decode_timing, None, "{c:?}");
    assert!(
        summary["lost_gops"].as_array().unwrap().is_empty(),
        "{summary:#}"
    );
    assert_eq!(
        denied_publishes(&dir),
        0,
        "the ACL refused a part's publish: see {}/mosquitto.log",
        dir.display()
    );
}
