// SPDX-License-Identifier: MPL-2.0
//! A reconnecting MQTT link on rumqttc.
//!
//! What rumqttc 0.25 leaves to its user, done here:
//! - reconnect with exponential backoff and full jitter (rumqttc retries at once, in a loop);
//! - subscriptions restored after a session loss (ConnAck with `session_present = false`, e.g.
//!   after a broker restart without persistence);
//! - Sparkplug-style presence: a fresh per-connection `seq` for every connection, the last will
//!   (death) re-armed with it before each reconnect, and the birth published on every ConnAck;
//! - packet size limits raised for chunks ([`crate::MAX_PACKET`]);
//! - manual acks, so a QoS 1 message is acknowledged only after the part handled it.

use rand::Rng;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Quality of service of subscriptions and publishes (rumqttc's).
pub use rumqttc::QoS;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM CA certificates to trust for `mqtts://` (from `?ca=PATH`); default: the system's.
    pub ca: Option<Vec<u8>>,
    /// TLS that trusts only the swarm CA and a certificate made for the swarm's broker
    /// ([`BrokerUrl::for_swarm`]); it replaces `ca`.
    pub swarm_tls: Option<std::sync::Arc<rumqttc::tokio_rustls::rustls::ClientConfig>>,
}

impl BrokerUrl {
    /// `mqtt://[user:pass@]host[:port]` or `mqtts://...[?ca=PATH]` (default ports 1883 and
    /// 8883; `ca`: a PEM file of CA certificates to trust instead of the system's).
    pub fn parse(s: &str) -> Result<BrokerUrl, String> {
        let url = url::Url::parse(s).map_err(|e| format!("broker URL {s:?}: {e}"))?;
        let tls = match url.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(format!(
                    "broker URL scheme {other:?}: use mqtt:// or mqtts://"
                ));
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("broker URL {s:?} has no host"))?
            .to_string();
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        let username = (!url.username().is_empty()).then(|| url.username().to_string());
        let password = url.password().map(str::to_string);
        let mut ca = None;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "ca" => {
                    let pem = std::fs::read(v.as_ref())
                        .map_err(|e| format!("broker URL: CA file {v}: {e}"))?;
                    ca = Some(pem);
                }
                other => return Err(format!("broker URL: unknown parameter {other:?}")),
            }
        }
        if ca.is_some() && !tls {
            return Err("broker URL: ca= needs mqtts://".into());
        }
        Ok(BrokerUrl {
            host,
            port,
            tls,
            username,
            password,
            ca,
            swarm_tls: None,
        })
    }

    /// As a part of a swarm with keys reaches it. Over TLS with no `?ca=`, it trusts only the
    /// swarm CA `ca`, so the broker is the swarm's own, and only then logs in with `login`
    /// (unless the URL names a user): a key's login, which never changes, goes to no other
    /// broker, and never over plain MQTT, where anyone on the path could read and replay it.
    /// A broker with a certificate from elsewhere is named with `?ca=` (and its own user).
    pub fn for_swarm(
        mut self,
        ca: Option<&std::path::Path>,
        login: Option<(String, String)>,
    ) -> Result<BrokerUrl, String> {
        if !self.tls || self.ca.is_some() {
            return Ok(self);
        }
        let Some(ca) = ca else {
            return Ok(self);
        };
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        self.swarm_tls = Some(
            crate::tls_role::client_config(&pem, crate::tls_role::BROKER_ROLE)
                .map_err(|e| format!("{}: {e}", ca.display()))?,
        );
        if self.username.is_none()
            && let Some((user, password)) = login
        {
            self.username = Some(user);
            self.password = Some(password);
        }
        Ok(self)
    }

    /// The rumqttc options to reach this broker (transport and credentials).
    pub fn mqtt_options(&self, client_id: &str) -> MqttOptions {
        let mut mqtt = MqttOptions::new(client_id, &self.host, self.port);
        if let Some(u) = &self.username {
            mqtt.set_credentials(u, self.password.clone().unwrap_or_default());
        }
        if self.tls {
            mqtt.set_transport(match (&self.swarm_tls, &self.ca) {
                (Some(config), _) => rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(config.clone()),
                ),
                (None, Some(ca)) => rumqttc::Transport::tls(ca.clone(), None, None),
                (None, None) => rumqttc::Transport::tls_with_default_config(),
            });
        }
        mqtt
    }
}

/// Presence of a part: birth published at every connection, death as the last will.
pub struct Presence {
    pub birth_topic: String,
    pub death_topic: String,
    /// Birth payload for a connection seq.
    pub birth: Box<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
    /// Death payload for a connection seq.
    pub death: Box<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
}

pub struct LinkOptions {
    pub broker: BrokerUrl,
    pub client_id: String,
    pub keep_alive: Duration,
    pub subscriptions: Vec<(String, QoS)>,
    pub presence: Option<Presence>,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Messages the part handles itself may be acked late (at-least-once).
    pub manual_acks: bool,
    /// Topics whose messages may be dropped when the owner is behind (periodic ones, or ones
    /// anybody can flood); the others wait in order. None: nothing is dropped.
    pub droppable: Option<fn(&str) -> bool>,
    /// Start without a session and leave none on the broker (a short-lived link).
    pub clean_session: bool,
}

impl LinkOptions {
    pub fn new(broker: BrokerUrl, client_id: &str) -> Self {
        LinkOptions {
            broker,
            client_id: client_id.to_string(),
            keep_alive: Duration::from_secs(2),
            subscriptions: Vec::new(),
            presence: None,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            manual_acks: false,
            droppable: None,
            clean_session: false,
        }
    }
}

/// What the link tells its owner.
#[derive(Debug)]
pub enum LinkEvent {
    /// Connected (the birth, if any, is already queued). `seq` is this connection's number.
    Connected {
        session_present: bool,
        seq: u64,
    },
    /// Lost the connection; the link retries after `retry_in`.
    Disconnected {
        error: String,
        retry_in: Duration,
    },
    Message(Publish),
}

#[derive(Debug, Default)]
pub struct LinkStats {
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    pub resubscribes: AtomicU64,
    /// Messages on droppable topics dropped because the owner was behind (a flood).
    pub dropped: AtomicU64,
    /// Most events waiting in the backlog at once.
    pub backlog_max: AtomicU64,
}

/// A running link: publish through `client`, receive from `events`.
pub struct Link {
    pub client: AsyncClient,
    pub events: mpsc::Receiver<LinkEvent>,
    pub stats: Arc<LinkStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Exponential backoff with full jitter: a random delay in [min, min(max, min * 2^attempt)].
pub fn backoff_delay(min: Duration, max: Duration, attempt: u32, rng: &mut impl Rng) -> Duration {
    let cap = min
        .saturating_mul(1u32 << attempt.min(20))
        .min(max)
        .max(min);
    let span = (cap - min).as_micros() as u64;
    min + Duration::from_micros(if span == 0 {
        0
    } else {
        rng.random_range(0..=span)
    })
}

fn next_seq(last: &AtomicU64) -> u64 {
    let now = crate::unix_micros();
    let mut prev = last.load(Ordering::Relaxed);
    loop {
        let seq = now.max(prev + 1);
        match last.compare_exchange(prev, seq, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return seq,
            Err(p) => prev = p,
        }
    }
}

fn arm_will(opts: &mut MqttOptions, presence: &Presence, seq: u64) {
    opts.set_last_will(LastWill::new(
        &presence.death_topic,
        (presence.death)(seq),
        QoS::AtLeastOnce,
        true,
    ));
}

impl Link {
    /// Start the link on the current tokio runtime.
    pub fn start(options: LinkOptions) -> Link {
        let mut mqtt = options.broker.mqtt_options(&options.client_id);
        mqtt.set_keep_alive(options.keep_alive)
            .set_max_packet_size(crate::MAX_PACKET, crate::MAX_PACKET)
            .set_clean_session(options.clean_session)
            .set_manual_acks(options.manual_acks)
            .set_inflight(100);
        let last_seq = Arc::new(AtomicU64::new(0));
        let first_seq = next_seq(&last_seq);
        if let Some(p) = &options.presence {
            arm_will(&mut mqtt, p, first_seq);
        }
        let (client, eventloop) = AsyncClient::new(mqtt, 1024);
        let (tx, rx) = mpsc::channel(EVENTS_QUEUED);
        let stats = Arc::new(LinkStats::default());
        let (droppable, manual_acks) = (options.droppable, options.manual_acks);
        let task = tokio::spawn(drive(
            eventloop,
            client.clone(),
            options,
            Queues {
                events: tx,
                backlog: VecDeque::new(),
                droppable,
                manual_acks,
                reported: None,
            },
            stats.clone(),
            last_seq,
            first_seq,
        ));
        Link {
            client,
            events: rx,
            stats,
            task,
        }
    }
}

/// Events the owner has not taken yet, at most, before the backlog starts.
const EVENTS_QUEUED: usize = 1024;

/// The link's side of its queue. The event loop never waits on its owner: stopping reads
/// from the socket would miss keep-alives and, with an owner waiting to publish, deadlock
/// both. When the owner falls behind, a message on a droppable topic (periodic, or open to a
/// flood: heartbeats, resend requests) is dropped and counted; everything else (connection
/// changes, assignments, commands, births) waits in an ordered backlog, never lost.
struct Queues {
    events: mpsc::Sender<LinkEvent>,
    backlog: VecDeque<LinkEvent>,
    droppable: Option<fn(&str) -> bool>,
    manual_acks: bool,
    reported: Option<std::time::Instant>,
}

impl Queues {
    /// Hand the backlog over while the owner has room; Err once the owner is gone.
    fn flush(&mut self) -> Result<(), ()> {
        while let Some(ev) = self.backlog.pop_front() {
            match self.events.try_send(ev) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(ev)) => {
                    self.backlog.push_front(ev);
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
            }
        }
        Ok(())
    }

    /// Give `ev` to the owner, in order after the backlog; Err once the owner is gone.
    fn push(&mut self, ev: LinkEvent, client: &AsyncClient, stats: &LinkStats) -> Result<(), ()> {
        self.flush()?;
        let ev = if self.backlog.is_empty() {
            match self.events.try_send(ev) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
                Err(mpsc::error::TrySendError::Full(ev)) => ev,
            }
        } else {
            ev
        };
        if let LinkEvent::Message(p) = &ev
            && self.droppable.is_some_and(|f| f(&p.topic))
        {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            if self.manual_acks {
                // Dropped is handled: unacked, the broker would stop sending.
                let _ = client.try_ack(p);
            }
            self.report(stats);
            return Ok(());
        }
        self.backlog.push_back(ev);
        stats
            .backlog_max
            .fetch_max(self.backlog.len() as u64, Ordering::Relaxed);
        self.report(stats);
        Ok(())
    }

    /// At most one warning a second while the owner is behind.
    fn report(&mut self, stats: &LinkStats) {
        let now = std::time::Instant::now();
        if self
            .reported
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.reported = Some(now);
            tracing::warn!(
                "incoming messages arrive faster than they are handled: {} waiting, {} dropped so far",
                self.backlog.len(),
                stats.dropped.load(Ordering::Relaxed)
            );
        }
    }
}

async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    options: LinkOptions,
    mut queues: Queues,
    stats: Arc<LinkStats>,
    last_seq: Arc<AtomicU64>,
    mut seq: u64,
) {
    let mut attempt = 0u32;
    let mut leaving = false;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    loop {
        if queues.flush().is_err() {
            return;
        }
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                attempt = 0;
                stats.connects.fetch_add(1, Ordering::Relaxed);
                if !ack.session_present && !options.subscriptions.is_empty() {
                    stats.resubscribes.fetch_add(1, Ordering::Relaxed);
                    let filters = options
                        .subscriptions
                        .iter()
                        .map(|(t, q)| rumqttc::SubscribeFilter::new(t.clone(), *q));
                    // try_* : the event loop is this task, awaiting a full channel would deadlock.
                    if let Err(e) = client.try_subscribe_many(filters) {
                        tracing::warn!("resubscribe: {e}");
                    }
                }
                if let Some(p) = &options.presence
                    && let Err(e) =
                        client.try_publish(&p.birth_topic, QoS::AtLeastOnce, true, (p.birth)(seq))
                {
                    tracing::warn!("birth: {e}");
                }
                let ev = LinkEvent::Connected {
                    session_present: ack.session_present,
                    seq,
                };
                if queues.push(ev, &client, &stats).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if queues.push(LinkEvent::Message(p), &client, &stats).is_err() {
                    return;
                }
            }
            // Our own disconnect (shutdown): the link ends once it is sent, never reconnecting
            // (a reconnect racing the process exit leaves the broker a half-open connection
            // that it reports as an error).
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => leaving = true,
            Ok(_) => {}
            Err(_) if leaving => return,
            Err(e) => {
                stats.disconnects.fetch_add(1, Ordering::Relaxed);
                let delay =
                    backoff_delay(options.backoff_min, options.backoff_max, attempt, &mut rng);
                attempt = attempt.saturating_add(1);
                // The next connection is a new one: new seq, will re-armed with it.
                seq = next_seq(&last_seq);
                if let Some(p) = &options.presence {
                    arm_will(&mut eventloop.mqtt_options, p, seq);
                }
                let ev = LinkEvent::Disconnected {
                    error: e.to_string(),
                    retry_in: delay,
                };
                if queues.push(ev, &client, &stats).is_err() {
                    return;
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Publish one message with QoS 1 on a connection of its own and return once the broker has
/// acknowledged it (PUBACK), or fail after `timeout`. For one-shot commands (`gopswarm
/// stream ...`); a part that stays connected uses a [`Link`]. The error says what went wrong
/// with the broker (refused, unreachable, no PUBACK in time), without naming it.
pub async fn publish_once(
    broker: &BrokerUrl,
    client_id: &str,
    topic: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<(), String> {
    let mut mqtt = broker.mqtt_options(client_id);
    mqtt.set_max_packet_size(crate::MAX_PACKET, crate::MAX_PACKET);
    let (client, mut eventloop) = AsyncClient::new(mqtt, 8);
    // Queued now, sent by the event loop once connected.
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                return Err(format!("no PUBACK within {} s", timeout.as_secs_f64()));
            }
        }
    }
    // A clean DISCONNECT, so the broker does not log a lost client; the message is in already.
    if client.disconnect().await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let mut rng = rand::rng();
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 0..40 {
            let cap = (min * 2u32.pow(attempt.min(20))).min(max);
            for _ in 0..50 {
                let d = backoff_delay(min, max, attempt, &mut rng);
                assert!(
                    d >= min && d <= cap,
                    "attempt {attempt}: {d:?} not in [{min:?}, {cap:?}]"
                );
            }
        }
        // Jitter: delays of one attempt differ (no synchronized reconnect storm).
        let ds: std::collections::HashSet<_> = (0..20)
            .map(|_| backoff_delay(min, max, 6, &mut rng))
            .collect();
        assert!(ds.len() > 10, "{ds:?}");
    }

    #[test]
    fn seq_strictly_increases() {
        let last = AtomicU64::new(0);
        let mut prev = 0;
        for _ in 0..1000 {
            let s = next_seq(&last);
            assert!(s > prev);
            prev = s;
        }
    }

    #[test]
    fn broker_urls() {
        let u = BrokerUrl::parse("mqtts://alice:secret@broker.local").unwrap();
        assert!(u.tls);
        assert_eq!(u.port, 8883);
        assert_eq!(u.username.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        let u = BrokerUrl::parse("mqtt://127.0.0.1:1999").unwrap();
        assert!(!u.tls);
        assert_eq!(u.port, 1999);
        assert!(BrokerUrl::parse("http://x").is_err());
        assert!(
            BrokerUrl::parse("mqtts://x?ca=/nonexistent.pem")
                .unwrap_err()
                .contains("CA file")
        );
        assert!(BrokerUrl::parse("mqtt://x?frob=1").is_err());
        assert!(BrokerUrl::parse("not a url").is_err());
    }

    #[tokio::test]
    async fn publish_once_names_what_went_wrong() {
        // Nothing listens: the connection is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let broker = BrokerUrl::parse(&format!("mqtt://127.0.0.1:{port}")).unwrap();
        let e = publish_once(&broker, "t", "t", vec![1], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.contains("refused"), "{e}");
        // Something listens but never answers: the timeout, in seconds.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let broker = BrokerUrl::parse(&format!("mqtt://{}", silent.local_addr().unwrap())).unwrap();
        let start = std::time::Instant::now();
        let e = publish_once(&broker, "t", "t", vec![1], Duration::from_millis(500))
            .await
            .unwrap_err();
        assert_eq!(e, "no PUBACK within 0.5 s");
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    /// One MQTT packet from `r`: (first byte, body).
    fn read_packet(r: &mut impl std::io::Read) -> (u8, Vec<u8>) {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).unwrap();
        let first = b[0];
        let (mut len, mut shift) = (0usize, 0);
        loop {
            r.read_exact(&mut b).unwrap();
            len |= ((b[0] & 0x7f) as usize) << shift;
            shift += 7;
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        (first, body)
    }

    #[tokio::test]
    async fn publish_once_returns_after_the_puback() {
        use std::io::Write;
        // A broker of one connection: CONNACK, then the PUBLISH it got, acknowledged.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let broker = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let (connect, _) = read_packet(&mut s);
            assert_eq!(connect >> 4, 1, "CONNECT first");
            s.write_all(&[0x20, 0x02, 0x00, 0x00]).unwrap();
            let (publish, body) = read_packet(&mut s);
            assert_eq!(publish >> 4, 3, "then PUBLISH");
            assert_eq!((publish >> 1) & 3, 1, "QoS 1");
            let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
            let topic = String::from_utf8(body[2..2 + topic_len].to_vec()).unwrap();
            let pkid = [body[2 + topic_len], body[3 + topic_len]];
            let payload = body[4 + topic_len..].to_vec();
            s.write_all(&[0x40, 0x02, pkid[0], pkid[1]]).unwrap();
            let (disconnect, _) = read_packet(&mut s);
            (topic, payload, disconnect >> 4)
        });
        let url = BrokerUrl::parse(&format!("mqtt://{addr}")).unwrap();
        publish_once(&url, "t", "a/b", b"hello".to_vec(), Duration::from_secs(5))
            .await
            .unwrap();
        let (topic, payload, last) = broker.join().unwrap();
        assert_eq!(topic, "a/b");
        assert_eq!(payload, b"hello");
        assert_eq!(last, 14, "a clean DISCONNECT at the end");
    }
}
