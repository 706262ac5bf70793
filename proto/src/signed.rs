// SPDX-License-Identifier: MPL-2.0
//! Signed control messages: who may publish what, proven with ed25519, whatever the broker lets
//! through.
//!
//! # Envelope
//!
//! A signed payload is a JSON object `{"by": SIGNER, "n": COUNTER, "sig": BASE64, "body": BODY}`
//! where `BODY` is the message exactly as [`crate::encode`] wrote it. The signature covers
//! [`DOMAIN`], the topic, the signer, the counter and the body's bytes as they appear in the
//! envelope, so nothing is re-serialized to check it and a message cannot be moved to another
//! topic.
//!
//! # Signers
//!
//! | signer | signs |
//! |---|---|
//! | `orchestrator` | assignment, cmd, score, cert, stream def, layout, orchestrator status |
//! | `operator:NAME` | `ctl/streams` (stream add/remove/handoff, announcements, rolling updates) |
//! | `merger:NAME` | resend |
//! | `host:ID` | its birth, death (signed at connect, as the broker's last will), heartbeat, applied, ack, and the stream ends it reports |
//!
//! Host keys are not in the trust file: a host enrols with a one-time token ([`crate::Enrol`]),
//! and the orchestrator answers with a [`crate::HostCert`] it signs. [`Open`] learns host keys
//! from those certificates.
//!
//! # Counters
//!
//! `n` is the signer's clock in microseconds since the Unix epoch, and always one more than
//! the last it used: it increases without being stored. A receiver refuses, per signer and
//! topic, a counter below one it has already accepted (a replay of an older message; the same
//! counter again is the broker redelivering it), one more than [`MAX_CLOCK_SKEW`] ahead of its
//! own clock, and on topics whose messages are not retained, one older than that.
//!
//! # Chunks
//!
//! Chunks are binary and not enveloped: the host daemon appends a signature to each one (chunk
//! format version 3, [`Signer::sign_chunk`]) over [`CHUNK_DOMAIN`] and every chunk byte before
//! it, whatever transport carries it (MQTT, TCP, SRT). The merger checks it with the host's
//! certified key and strips it ([`Verifier::open_chunk`]) before the chunk reaches `gopmerge`.
//! Chunks carry no counter: a replayed chunk is a duplicate the merger drops, or of an older
//! layout epoch, which it fences.
//!
//! An enrolment is not signed either: its proof is a MAC under the token.

use crate::{Inbound, Reject, Topic, decode_publish, unix_micros};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Prefix of every signed byte string: a signature of this protocol means nothing elsewhere.
pub const DOMAIN: &[u8] = b"gopswarm/v1 signed message\0";
/// Put before the user name a broker login signs (see [`crate::login`]).
pub const LOGIN_DOMAIN: &[u8] = b"gopswarm/v1 broker login\0";
/// User name prefix of a host that logs in to enrol.
pub const ENROL_LOGIN_PREFIX: &str = "enrol:";

pub(crate) fn login_bytes(user: &str) -> Vec<u8> {
    let mut m = LOGIN_DOMAIN.to_vec();
    m.extend_from_slice(user.as_bytes());
    m
}

/// Put before the bytes of a chunk its signature covers.
pub const CHUNK_DOMAIN: &[u8] = b"gopswarm/v1 signed chunk\0";
/// How far apart the clocks of a swarm may be (counters are clock readings).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(600);
/// Envelope bytes on top of the body.
const MAX_ENVELOPE_OVERHEAD: usize = 512;

/// Who signed a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    Orchestrator,
    Operator(String),
    Merger(String),
    Host(String),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Orchestrator => f.write_str("orchestrator"),
            Principal::Operator(n) => write!(f, "operator:{n}"),
            Principal::Merger(n) => write!(f, "merger:{n}"),
            Principal::Host(n) => write!(f, "host:{n}"),
        }
    }
}

impl Principal {
    pub fn parse(s: &str) -> Result<Principal, String> {
        let named = |name: &str| {
            if crate::valid_id(name) {
                Ok(name.to_string())
            } else {
                Err(format!("signer name {name:?}"))
            }
        };
        match s.split_once(':') {
            None if s == "orchestrator" => Ok(Principal::Orchestrator),
            Some(("operator", n)) => Ok(Principal::Operator(named(n)?)),
            Some(("merger", n)) => Ok(Principal::Merger(named(n)?)),
            Some(("host", n)) => Ok(Principal::Host(named(n)?)),
            _ => Err(format!(
                "signer {:?} (orchestrator, operator:NAME, merger:NAME or host:ID)",
                s.chars().take(80).collect::<String>()
            )),
        }
    }
}

/// Who may sign what arrives on `topic`; `None` for what is not enveloped.
enum Expected {
    Orchestrator,
    AnyOperator,
    AnyMerger,
    Host(String),
    /// A host, the one the body names (checked after decoding).
    AnyHost,
}

fn expected(topic: &Topic) -> Option<Expected> {
    Some(match topic {
        Topic::Birth(h)
        | Topic::Death(h)
        | Topic::Heartbeat(h)
        | Topic::Applied(h)
        | Topic::Ack(h) => Expected::Host(h.clone()),
        Topic::Assignment(_)
        | Topic::Command(_)
        | Topic::Score(_)
        | Topic::Cert(_)
        | Topic::StreamDef(_)
        | Topic::Layout(..)
        | Topic::OrchestratorStatus
        | Topic::OrchestratorDeath
        | Topic::OrchestratorLease => Expected::Orchestrator,
        Topic::StreamControl => Expected::AnyOperator,
        Topic::Resend(..) => Expected::AnyMerger,
        Topic::StreamEnd(..) => Expected::AnyHost,
        Topic::Chunks(..) | Topic::Enrol(_) => return None,
    })
}

/// Messages that are not retained: besides being newer than the last one, they must be recent.
fn ephemeral(topic: &Topic) -> bool {
    matches!(
        topic,
        Topic::Heartbeat(_)
            | Topic::Command(_)
            | Topic::Ack(_)
            | Topic::StreamControl
            | Topic::Resend(..)
            | Topic::StreamEnd(..)
    )
}

/// Retained state a publisher clears with an empty payload: an empty payload carries no claim
/// (nothing acts on a clear), so it passes unsigned.
fn clearable(topic: &Topic) -> bool {
    matches!(
        topic,
        Topic::Assignment(_) | Topic::StreamDef(_) | Topic::Score(_) | Topic::Cert(_)
    )
}

fn signed_bytes(topic: &str, by: &str, n: u64, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + topic.len() + by.len() + body.len() + 10);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(topic.as_bytes());
    m.push(0);
    m.extend_from_slice(by.as_bytes());
    m.push(0);
    m.extend_from_slice(&n.to_be_bytes());
    m.extend_from_slice(body);
    m
}

// ---------------------------------------------------------------------------------------------
// Keys

/// A new random signing key.
pub fn generate() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

pub fn encode_public(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

pub fn parse_public(s: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = B64
        .decode(s.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("public key: not 32 bytes of base64")?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("public key: {e}"))
}

/// Write a secret (key or token) to a new file that only its owner can read, from its first
/// byte on. An existing file is never overwritten.
pub fn write_secret(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// Read a secret file; refused when group or others may read it (as ssh does).
pub fn read_secret(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: mode {mode:o}; a secret must be readable by its owner only (chmod 600)",
            path.display()
        ));
    }
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub fn write_key(path: &Path, key: &SigningKey) -> std::io::Result<()> {
    write_secret(path, &format!("{}\n", B64.encode(key.to_bytes())))
}

pub fn read_key(path: &Path) -> Result<SigningKey, String> {
    let text = read_secret(path)?;
    let bytes: [u8; 32] = B64
        .decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            format!(
                "{}: not a gopswarm key (32 bytes of base64)",
                path.display()
            )
        })?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// The public keys every part of a swarm trusts (`trust.json` of `gopswarm init`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    pub orchestrator: String,
    #[serde(default)]
    pub operators: BTreeMap<String, String>,
    #[serde(default)]
    pub mergers: BTreeMap<String, String>,
}

impl Trust {
    pub fn read(path: &Path) -> Result<Trust, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let t: Trust =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        t.keys().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(t)
    }

    /// Every key, parsed.
    pub(crate) fn keys(&self) -> Result<HashMap<Principal, VerifyingKey>, String> {
        let mut keys = HashMap::new();
        keys.insert(Principal::Orchestrator, parse_public(&self.orchestrator)?);
        for (n, k) in &self.operators {
            let p = Principal::Operator(n.clone());
            keys.insert(p.clone(), parse_public(k).map_err(|e| format!("{p}: {e}"))?);
        }
        for (n, k) in &self.mergers {
            let p = Principal::Merger(n.clone());
            keys.insert(p.clone(), parse_public(k).map_err(|e| format!("{p}: {e}"))?);
        }
        for p in keys.keys() {
            if let Principal::Operator(n) | Principal::Merger(n) = p
                && !crate::valid_id(n)
            {
                return Err(format!("signer name {n:?}"));
            }
        }
        Ok(keys)
    }
}

// ---------------------------------------------------------------------------------------------
// Enrolment

/// The bytes an enrolment proof covers: the host and the key it enrols.
pub fn enrol_proof_input(host: &str, key: &str) -> Vec<u8> {
    let mut m = b"gopswarm/v1 enrol\0".to_vec();
    m.extend_from_slice(host.as_bytes());
    m.push(0);
    m.extend_from_slice(key.as_bytes());
    m
}

/// A one-time enrolment token: `ID.SECRET`, or `ID.SECRET@HOST` for one made for a host (the
/// id is sent, the secret never is). A token for nobody in particular enrols a new host id; a
/// host that is enrolled already gets a new key only with a token made for it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    secret: Vec<u8>,
    pub host: Option<String>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.id)
    }
}

impl Token {
    pub fn generate() -> Token {
        let id: [u8; 6] = rand::random();
        Token {
            id: id.iter().map(|b| format!("{b:02x}")).collect(),
            secret: rand::random::<[u8; 32]>().to_vec(),
            host: None,
        }
    }

    /// A token that enrols `host` only, also when it is enrolled already (a new key).
    pub fn for_host(host: &str) -> Result<Token, String> {
        if !crate::valid_id(host) {
            return Err(format!("host id {host:?}"));
        }
        Ok(Token {
            host: Some(host.to_string()),
            ..Token::generate()
        })
    }

    pub fn parse(s: &str) -> Result<Token, String> {
        let (s, host) = match s.trim().split_once('@') {
            Some((t, h)) if crate::valid_id(h) => (t, Some(h.to_string())),
            Some(_) => return Err("enrolment token: bad host after @".into()),
            None => (s.trim(), None),
        };
        let (id, secret) = s.split_once('.').ok_or("enrolment token: not ID.SECRET")?;
        let secret = B64
            .decode(secret)
            .map_err(|_| "enrolment token: secret not base64")?;
        if !crate::valid_id(id) || secret.len() < 16 {
            return Err("enrolment token: malformed".into());
        }
        Ok(Token {
            id: id.to_string(),
            secret,
            host,
        })
    }

    pub fn to_text(&self) -> String {
        let base = format!("{}.{}", self.id, B64.encode(&self.secret));
        match &self.host {
            Some(h) => format!("{base}@{h}"),
            None => base,
        }
    }

    fn mac(&self) -> Hmac<sha2::Sha256> {
        Hmac::new_from_slice(&self.secret).expect("HMAC takes any key length")
    }

    /// The enrolment message of `host` with its signing key.
    pub fn enrol(&self, host: &str, key: &VerifyingKey) -> crate::Enrol {
        let key = encode_public(key);
        let mut mac = self.mac();
        mac.update(&enrol_proof_input(host, &key));
        crate::Enrol {
            host: host.to_string(),
            key,
            token_id: self.id.clone(),
            proof: B64.encode(mac.finalize().into_bytes()),
        }
    }

    /// The MQTT login of `host` while it enrols with this token: user `enrol:HOST`, password
    /// `ID.MAC` (the secret never goes over the wire).
    pub fn broker_login(&self, host: &str) -> (String, String) {
        let user = format!("{ENROL_LOGIN_PREFIX}{host}");
        let mut mac = self.mac();
        mac.update(&login_bytes(&user));
        let proof = B64.encode(mac.finalize().into_bytes());
        (user, format!("{}.{proof}", self.id))
    }

    /// Whether `password` is this token's login for `host` (constant time).
    pub fn proves_login(&self, host: &str, password: &str) -> bool {
        let Some((id, proof)) = password.split_once('.') else {
            return false;
        };
        let Ok(proof) = B64.decode(proof) else {
            return false;
        };
        if id != self.id || self.host.as_deref().is_some_and(|h| h != host) {
            return false;
        }
        let mut mac = self.mac();
        mac.update(&login_bytes(&format!("{ENROL_LOGIN_PREFIX}{host}")));
        mac.verify_slice(&proof).is_ok()
    }

    /// Whether `e` was made with this token (constant time).
    pub fn proves(&self, e: &crate::Enrol) -> bool {
        let Ok(proof) = B64.decode(&e.proof) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(&enrol_proof_input(&e.host, &e.key));
        e.token_id == self.id && mac.verify_slice(&proof).is_ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Sealing and opening

/// Signs what one part publishes.
pub struct Signer {
    by: String,
    key: SigningKey,
    last: AtomicU64,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({})", self.by)
    }
}

impl Signer {
    pub fn new(who: Principal, key: SigningKey) -> Signer {
        Signer {
            by: who.to_string(),
            key,
            last: AtomicU64::new(0),
        }
    }

    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The next counter: this clock, or one more than the last if the clock has not moved on.
    fn next(&self) -> u64 {
        let now = unix_micros();
        let prev = self
            .last
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                Some(now.max(l.saturating_add(1)))
            })
            .unwrap_or(0);
        now.max(prev.saturating_add(1))
    }

    /// Counters from here on are above `n`: a standby taking over signs after the last
    /// counter it saw from the leader it replaces, whatever the two clocks say.
    pub fn advance_past(&self, n: u64) {
        self.last.fetch_max(n, Ordering::SeqCst);
    }

    /// `body` (a JSON message from [`crate::encode`]) in a signed envelope for `topic`.
    pub fn seal(&self, topic: &str, body: &[u8]) -> Vec<u8> {
        self.seal_with(topic, body, self.next())
    }

    /// With a chosen counter (tests of replay protection).
    pub fn seal_with(&self, topic: &str, body: &[u8], n: u64) -> Vec<u8> {
        let sig = self.key.sign(&signed_bytes(topic, &self.by, n, body));
        let mut out = Vec::with_capacity(body.len() + 160);
        out.extend_from_slice(b"{\"by\":");
        out.extend_from_slice(&serde_json::to_vec(&self.by).expect("a string serializes"));
        out.extend_from_slice(format!(",\"n\":{n},\"sig\":\"").as_bytes());
        out.extend_from_slice(B64.encode(sig.to_bytes()).as_bytes());
        out.extend_from_slice(b"\",\"body\":");
        out.extend_from_slice(body);
        out.push(b'}');
        out
    }

    /// The MQTT login of this part at a swarm's embedded broker: its name, and its signature
    /// of [`LOGIN_DOMAIN`] and that name. It does not change, so it is only as secret as the
    /// connection: the embedded broker takes it over TLS only.
    pub fn broker_login(&self) -> (String, String) {
        let sig = self.key.sign(&login_bytes(&self.by));
        (self.by.clone(), B64.encode(sig.to_bytes()))
    }

    /// Append this host's signature to a chunk it produced (see [`CHUNK_DOMAIN`]).
    pub fn sign_chunk(&self, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        let (header, _) = gopswarm_chunk::parse_ref(&bytes).map_err(|e| e.to_string())?;
        let own = Principal::Host(header.host_id.clone()).to_string();
        if own != self.by {
            return Err(format!("{} may not sign a chunk of {own}", self.by));
        }
        gopswarm_chunk::add_signature(bytes, |covered| {
            self.key.sign(&chunk_signed_bytes(covered)).to_bytes()
        })
        .map_err(|e| e.to_string())
    }
}

fn chunk_signed_bytes(covered: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHUNK_DOMAIN.len() + covered.len());
    m.extend_from_slice(CHUNK_DOMAIN);
    m.extend_from_slice(covered);
    m
}

/// How a part publishes: signed, or plain in a swarm run with `--insecure`.
#[derive(Debug)]
pub enum Seal {
    Plain,
    Signed(Box<Signer>),
}

impl Seal {
    /// An empty body (clearing a retained message) stays empty: there is nothing to sign.
    pub fn seal(&self, topic: &str, body: Vec<u8>) -> Vec<u8> {
        match self {
            Seal::Signed(s) if !body.is_empty() => s.seal(topic, &body),
            _ => body,
        }
    }

    /// The login at a swarm's embedded broker ([`Signer::broker_login`]); none without keys.
    pub fn broker_login(&self) -> Option<(String, String)> {
        match self {
            Seal::Signed(s) => Some(s.broker_login()),
            Seal::Plain => None,
        }
    }

    /// A chunk as it goes to a merger: signed, or as the encoder made it.
    pub fn seal_chunk(&self, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        match self {
            Seal::Signed(s) => s.sign_chunk(bytes),
            Seal::Plain => Ok(bytes),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    by: std::borrow::Cow<'a, str>,
    n: u64,
    #[serde(borrow)]
    sig: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    body: &'a serde_json::value::RawValue,
}

/// Checks what one part receives: the signer may publish on the topic, the signature holds,
/// the counter is new.
#[derive(Debug, Default)]
pub struct Verifier {
    keys: HashMap<Principal, VerifyingKey>,
    /// Highest counter accepted, per signer and topic.
    last: HashMap<(Principal, String), u64>,
    accepted: Option<(Principal, String, u64)>,
}

impl Verifier {
    pub fn new(trust: &Trust) -> Result<Verifier, String> {
        Ok(Verifier {
            keys: trust.keys()?,
            last: HashMap::new(),
            accepted: None,
        })
    }

    /// Trust `key` for `host` (from its certificate, or the orchestrator's enrolment records).
    pub fn set_host_key(&mut self, host: &str, key: VerifyingKey) {
        let p = Principal::Host(host.to_string());
        if self.keys.get(&p) != Some(&key) {
            // A new key starts its own counters.
            self.last.retain(|(who, _), _| who != &p);
        }
        self.keys.insert(p, key);
    }

    pub fn host_key(&self, host: &str) -> Option<&VerifyingKey> {
        self.keys.get(&Principal::Host(host.to_string()))
    }

    pub fn forget_host(&mut self, host: &str) {
        let p = Principal::Host(host.to_string());
        self.keys.remove(&p);
        self.last.retain(|(who, _), _| who != &p);
    }

    /// Check and decode what arrived on `topic`.
    pub fn open(&mut self, topic: &str, payload: &[u8]) -> Result<Inbound, Reject> {
        let parsed = Topic::parse(topic)
            .ok_or_else(|| Reject::UnknownTopic(topic.chars().take(200).collect()))?;
        let Some(want) = expected(&parsed) else {
            return decode_publish(topic, payload);
        };
        if payload.is_empty() && clearable(&parsed) {
            return decode_publish(topic, payload);
        }
        if payload.len() > crate::MAX_CONTROL_PAYLOAD + MAX_ENVELOPE_OVERHEAD {
            return Err(Reject::Oversized(payload.len()));
        }
        let env: Envelope = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => {
                // A plain message (from a part run with --insecure, or a forger).
                return Err(match serde_json::from_slice::<serde_json::Value>(payload) {
                    Ok(v) if v.get("sig").is_none() => Reject::Unsigned,
                    _ => Reject::Malformed(format!("signed envelope: {e}")),
                });
            }
        };
        let by = Principal::parse(&env.by).map_err(Reject::BadSignature)?;
        let allowed = match (&want, &by) {
            (Expected::Orchestrator, Principal::Orchestrator)
            | (Expected::AnyOperator, Principal::Operator(_))
            | (Expected::AnyMerger, Principal::Merger(_))
            | (Expected::AnyHost, Principal::Host(_)) => true,
            (Expected::Host(h), Principal::Host(signer)) => h == signer,
            _ => false,
        };
        if !allowed {
            return Err(Reject::BadSignature(format!(
                "{by} may not publish on {topic}"
            )));
        }
        let key = self.keys.get(&by).ok_or_else(|| {
            Reject::BadSignature(match &by {
                Principal::Host(_) => format!("{by} is not enrolled"),
                _ => format!("{by} is not in the trust file"),
            })
        })?;
        let now = unix_micros();
        let skew = MAX_CLOCK_SKEW.as_micros() as u64;
        if env.n > now.saturating_add(skew) {
            return Err(Reject::Replayed(format!(
                "counter {} is more than {} s ahead of this clock",
                env.n,
                MAX_CLOCK_SKEW.as_secs()
            )));
        }
        if ephemeral(&parsed) && env.n < now.saturating_sub(skew) {
            return Err(Reject::Replayed(format!(
                "{by} on {topic}: {} s old",
                (now - env.n) / 1_000_000
            )));
        }
        let sig: [u8; 64] = B64
            .decode(env.sig.as_bytes())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Reject::BadSignature("signature: not 64 bytes of base64".into()))?;
        let body = env.body.get().as_bytes();
        key.verify_strict(
            &signed_bytes(topic, &env.by, env.n, body),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| Reject::BadSignature(format!("{by} on {topic}: does not verify")))?;
        let slot = (by, topic.to_string());
        if let Some(&last) = self.last.get(&slot) {
            // The same counter again is the broker redelivering: fine for retained state
            // (idempotent, and sent again on every subscribe), not for a command or a
            // request, which would be carried out twice.
            let replay = env.n < last || (env.n == last && ephemeral(&parsed));
            if replay {
                return Err(Reject::Replayed(format!(
                    "{} on {topic}: counter {} after {last}",
                    slot.0, env.n
                )));
            }
        }
        let inbound = decode_publish(topic, body)?;
        if let (Inbound::StreamEnd(e), Principal::Host(signer)) = (&inbound, &slot.0)
            && &e.host != signer
        {
            return Err(Reject::BadSignature(format!(
                "{} reports the end for host {}",
                slot.0, e.host
            )));
        }
        if let Inbound::Cert(c) = &inbound {
            let key = parse_public(&c.key).map_err(Reject::Invalid)?;
            self.set_host_key(&c.host, key);
        }
        self.accepted = Some((slot.0.clone(), slot.1.clone(), env.n));
        self.last.insert(slot, env.n);
        Ok(inbound)
    }

    /// Check a chunk's signature against its host's certified key; the chunk without it.
    pub fn open_chunk(&self, bytes: Vec<u8>) -> Result<Vec<u8>, Reject> {
        let (header, covered, sig) = gopswarm_chunk::signature(&bytes).map_err(|e| match e {
            gopswarm_chunk::ChunkError::NotSigned => Reject::Unsigned,
            e => Reject::Malformed(format!("chunk: {e}")),
        })?;
        let who = Principal::Host(header.host_id.clone());
        let key = self
            .keys
            .get(&who)
            .ok_or_else(|| Reject::BadSignature(format!("{who} is not enrolled")))?;
        key.verify_strict(&chunk_signed_bytes(covered), &Signature::from_bytes(sig))
            .map_err(|_| {
                Reject::BadSignature(format!(
                    "chunk of GOP {} from {who}: does not verify",
                    header.gop_index
                ))
            })?;
        gopswarm_chunk::strip_signature(bytes).map_err(|e| Reject::Malformed(format!("chunk: {e}")))
    }

    /// Signer, topic and counter of the last message [`Verifier::open`] accepted (what a part
    /// persists to keep refusing replays across its restarts).
    pub fn last_accepted(&self) -> Option<&(Principal, String, u64)> {
        self.accepted.as_ref()
    }

    /// The highest counter accepted from `who` on `topic` before a restart.
    pub fn restore_counter(&mut self, who: Principal, topic: &str, n: u64) {
        let e = self.last.entry((who, topic.to_string())).or_insert(n);
        *e = (*e).max(n);
    }
}

/// The body of a signed envelope, unchecked; a plain payload as it is. For observers and
/// diagnostics that print what went over the wire: never act on it.
pub fn body_unchecked(payload: &[u8]) -> &[u8] {
    serde_json::from_slice::<Envelope>(payload)
        .map(|e| e.body.get().as_bytes())
        .unwrap_or(payload)
}

/// How a part receives: verified, or decoded as it comes with `--insecure`.
#[derive(Debug)]
pub enum Open {
    Plain,
    Verified(Box<Verifier>),
}

impl Open {
    pub fn open(&mut self, topic: &str, payload: &[u8]) -> Result<Inbound, Reject> {
        match self {
            Open::Plain => decode_publish(topic, payload),
            Open::Verified(v) => v.open(topic, payload),
        }
    }

    /// A chunk for `gopmerge`: verified and stripped, or with `--insecure` stripped unchecked
    /// (a swarm that does not sign cannot tell a forged chunk).
    pub fn open_chunk(&self, bytes: Vec<u8>) -> Result<Vec<u8>, Reject> {
        match self {
            Open::Plain => gopswarm_chunk::strip_signature(bytes)
                .map_err(|e| Reject::Malformed(format!("chunk: {e}"))),
            Open::Verified(v) => v.open_chunk(bytes),
        }
    }

    pub fn verifier(&mut self) -> Option<&mut Verifier> {
        match self {
            Open::Plain => None,
            Open::Verified(v) => Some(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn swarm() -> (Signer, Signer, Verifier) {
        let orch = Signer::new(Principal::Orchestrator, generate());
        let op = Signer::new(Principal::Operator("ops".into()), generate());
        let trust = Trust {
            orchestrator: encode_public(&orch.public()),
            operators: BTreeMap::from([("ops".into(), encode_public(&op.public()))]),
            mergers: BTreeMap::new(),
        };
        let v = Verifier::new(&trust).unwrap();
        (orch, op, v)
    }

    fn remove(id: &str) -> Vec<u8> {
        encode(&StreamCommand::Remove { id: id.into() })
    }

    fn chunk_of(host: &str, gop: u64) -> Vec<u8> {
        let header = gopswarm_chunk::ChunkHeader {
            gop_index: gop,
            duration_ns: 1_000_000_000,
            frame_count: 1,
            epoch: 3,
            stream_id: "cam".into(),
            profile_id: "hd".into(),
            host_id: host.into(),
            codec: "video/x-h264".into(),
            ..Default::default()
        };
        gopswarm_chunk::serialize(&header, b"frames of a GOP").unwrap()
    }

    #[test]
    fn a_chunk_opens_only_with_its_hosts_key_and_unchanged() {
        let (_, _, mut v) = swarm();
        let h1 = Signer::new(Principal::Host("h1".into()), generate());
        let h2 = Signer::new(Principal::Host("h2".into()), generate());
        let plain = chunk_of("h1", 5);
        let signed = h1.sign_chunk(plain.clone()).unwrap();
        // Not enrolled yet.
        assert!(
            matches!(v.open_chunk(signed.clone()), Err(Reject::BadSignature(w)) if w.contains("not enrolled"))
        );
        v.set_host_key("h1", h1.public());
        v.set_host_key("h2", h2.public());
        assert_eq!(
            v.open_chunk(signed.clone()).unwrap(),
            plain,
            "stripped to the encoder's bytes"
        );
        assert_eq!(v.open_chunk(plain.clone()), Err(Reject::Unsigned));
        // Any byte changed, in the payload or the signature; a CRC fixed up changes nothing.
        for i in [signed.len() - 30, signed.len() - 1] {
            let mut bad = signed.clone();
            bad[i] ^= 1;
            assert!(v.open_chunk(bad).is_err(), "flip at {i}");
        }
        // Another enrolled host can neither sign in h1's name nor pass its chunk off as h1's.
        assert!(h2.sign_chunk(plain.clone()).is_err());
        let theirs = h2.sign_chunk(chunk_of("h2", 5)).unwrap();
        let mut relabelled = chunk_of("h1", 5);
        let sig_of_h2 = &theirs[theirs.len() - gopswarm_chunk::SIGNATURE_LEN..];
        relabelled =
            gopswarm_chunk::add_signature(relabelled, |_| sig_of_h2.try_into().unwrap()).unwrap();
        assert!(matches!(
            v.open_chunk(relabelled),
            Err(Reject::BadSignature(_))
        ));
        // A control-message signature over the same bytes is not a chunk signature.
        let cross = gopswarm_chunk::add_signature(plain.clone(), |covered| {
            h1.key
                .sign(&signed_bytes("x", "host:h1", 1, covered))
                .to_bytes()
        })
        .unwrap();
        assert!(matches!(v.open_chunk(cross), Err(Reject::BadSignature(_))));
        // Without keys (--insecure) a signed chunk is stripped, unchecked.
        assert_eq!(Open::Plain.open_chunk(signed).unwrap(), plain);
    }

    #[test]
    fn a_sealed_message_opens_and_anything_changed_does_not() {
        let (_, op, mut v) = swarm();
        let t = Topic::StreamControl.path();
        let sealed = op.seal(&t, &remove("cam1"));
        assert!(matches!(
            v.open(&t, &sealed),
            Ok(Inbound::StreamCommand(StreamCommand::Remove { .. }))
        ));
        let tampered = String::from_utf8(sealed.clone())
            .unwrap()
            .replace("cam1", "cam2");
        assert!(matches!(
            v.open(&t, tampered.as_bytes()),
            Err(Reject::BadSignature(_))
        ));
        assert_eq!(v.open(&t, &remove("cam1")), Err(Reject::Unsigned));
    }

    #[test]
    fn signers_publish_only_on_their_topics() {
        let (orch, op, mut v) = swarm();
        let t = Topic::StreamControl.path();
        assert!(matches!(
            v.open(&t, &orch.seal(&t, &remove("a"))),
            Err(Reject::BadSignature(_))
        ));
        let death = Topic::Death("h1".into()).path();
        let body = encode(&Death {
            host: "h1".into(),
            seq: 1,
        });
        assert!(matches!(
            v.open(&death, &op.seal(&death, &body)),
            Err(Reject::BadSignature(_))
        ));
        // A host not enrolled.
        let h1 = Signer::new(Principal::Host("h1".into()), generate());
        let r = v.open(&death, &h1.seal(&death, &body)).unwrap_err();
        assert!(r.to_string().contains("not enrolled"), "{r}");
        v.set_host_key("h1", h1.public());
        assert!(v.open(&death, &h1.seal(&death, &body)).is_ok());
        // Another host's key, on h1's topic.
        let h2 = Signer::new(Principal::Host("h2".into()), generate());
        v.set_host_key("h2", h2.public());
        assert!(matches!(
            v.open(&death, &h2.seal(&death, &body)),
            Err(Reject::BadSignature(_))
        ));
        // Moved to another topic.
        let sealed = h1.seal(&death, &body);
        let birth = Topic::Death("h2".into()).path();
        assert!(v.open(&birth, &sealed).is_err());
    }

    #[test]
    fn older_counters_future_counters_and_stale_commands_are_refused() {
        let (_, op, mut v) = swarm();
        let t = Topic::StreamControl.path();
        let now = unix_micros();
        assert!(v.open(&t, &op.seal_with(&t, &remove("a"), now)).is_ok());
        // A command carried out once: the same one again, or an older one, is a replay.
        assert!(matches!(
            v.open(&t, &op.seal_with(&t, &remove("a"), now)),
            Err(Reject::Replayed(_))
        ));
        assert!(matches!(
            v.open(&t, &op.seal_with(&t, &remove("a"), now - 1)),
            Err(Reject::Replayed(_))
        ));
        let ahead = now + MAX_CLOCK_SKEW.as_micros() as u64 + 60_000_000;
        assert!(matches!(
            v.open(&t, &op.seal_with(&t, &remove("a"), ahead)),
            Err(Reject::Replayed(_))
        ));
        let mut fresh = swarm().2;
        let old = now - MAX_CLOCK_SKEW.as_micros() as u64 - 60_000_000;
        let r = fresh.open(&t, &op.seal_with(&t, &remove("a"), old));
        assert!(
            r.is_err(),
            "a stale command (to a part that never saw a newer one)"
        );
    }

    #[test]
    fn a_certificate_teaches_the_host_key() {
        let (orch, _, mut v) = swarm();
        let host = Signer::new(Principal::Host("h9".into()), generate());
        let cert = HostCert {
            host: "h9".into(),
            key: encode_public(&host.public()),
            enrolled_ms: 1,
            token: String::new(),
        };
        let t = Topic::Cert("h9".into()).path();
        assert!(matches!(
            v.open(&t, &orch.seal(&t, &encode(&cert))),
            Ok(Inbound::Cert(_))
        ));
        let end = StreamEnd {
            stream: "s".into(),
            profile: "p".into(),
            host: "h9".into(),
            last_gop: 3,
        };
        let te = Topic::StreamEnd("s".into(), "p".into()).path();
        assert!(v.open(&te, &host.seal(&te, &encode(&end))).is_ok());
        // A host reporting another host's end.
        let other = StreamEnd {
            host: "h1".into(),
            ..end
        };
        assert!(matches!(
            v.open(&te, &host.seal(&te, &encode(&other))),
            Err(Reject::BadSignature(_))
        ));
        // A self-made certificate (not the orchestrator's) teaches nothing.
        let forged = host.seal(&t, &encode(&cert));
        assert!(v.open(&t, &forged).is_err());
    }

    #[test]
    fn enrolment_proofs_need_the_token_and_bind_the_key() {
        let token = Token::generate();
        let key = generate();
        let e = token.enrol("h1", &key.verifying_key());
        assert!(e.validate().is_ok());
        assert!(token.proves(&e));
        assert!(Token::parse(&token.to_text()).unwrap().proves(&e));
        assert!(!Token::generate().proves(&e));
        let other_key = Enrol {
            key: encode_public(&generate().verifying_key()),
            ..e.clone()
        };
        assert!(!token.proves(&other_key));
        let other_host = Enrol {
            host: "h2".into(),
            ..e
        };
        assert!(!token.proves(&other_host));
    }

    #[test]
    fn secrets_are_private_from_the_first_byte_and_checked_on_read() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("gopswarm-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.key");
        let key = generate();
        write_key(&path, &key).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_key(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(write_key(&path, &generate()).is_err(), "never overwritten");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_key(&path).unwrap_err().contains("chmod 600"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
