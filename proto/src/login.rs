// SPDX-License-Identifier: MPL-2.0
//! Who may connect to a swarm's embedded broker, checked with the swarm's keys.
//!
//! A part logs in with its principal as the user name (`orchestrator`, `operator:NAME`,
//! `merger:NAME`, `host:ID`) and, as the password, its signature of
//! [`crate::signed::LOGIN_DOMAIN`] and that name ([`Signer::broker_login`]). A host that is
//! enrolling logs in as `enrol:ID` with a MAC under its one-time token ([`Token::broker_login`]). The password never changes for a key,
//! so the embedded broker takes logins over TLS only; a stolen key is that part, as it is for
//! signed messages.
//!
//! A host may use only its own client ids (`gopswarm-host-ID` and, enrolling,
//! `gopswarm-enrol-ID`); operators and mergers any but those and the orchestrator's
//! (`gopswarm-orchestrator...`). So no key but the orchestrator's takes over another part's
//! MQTT session. Nothing here is
//! an authorization of topics: what a part may publish is checked by the receivers'
//! signatures ([`crate::signed`]) whatever the broker lets through.
//!
//! [`Signer::broker_login`]: crate::signed::Signer::broker_login
//! [`Token::broker_login`]: crate::signed::Token::broker_login

use crate::keys::KeyDir;
use crate::signed::{ENROL_LOGIN_PREFIX, Principal, login_bytes};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use std::collections::HashMap;
use std::sync::RwLock;

/// The keys logins are checked against: the trust file's, and the enrolled hosts' as the
/// orchestrator learns them.
#[derive(Debug)]
pub struct Logins {
    keys: KeyDir,
    trusted: HashMap<Principal, VerifyingKey>,
    hosts: RwLock<HashMap<String, VerifyingKey>>,
}

/// Client ids the orchestrator's sessions use (and nobody else may).
pub const ORCHESTRATOR_CLIENT_PREFIX: &str = "gopswarm-orchestrator";
const HOST_CLIENT_PREFIX: &str = "gopswarm-host-";
const ENROL_CLIENT_PREFIX: &str = "gopswarm-enrol-";

/// A host's main session.
pub fn host_client_id(host: &str) -> String {
    format!("{HOST_CLIENT_PREFIX}{host}")
}

/// A host's session while it enrols.
pub fn enrol_client_id(host: &str) -> String {
    format!("{ENROL_CLIENT_PREFIX}{host}")
}

impl Logins {
    pub fn new(keys: &KeyDir) -> Result<Logins, String> {
        Ok(Logins {
            trusted: keys.trust()?.keys()?,
            keys: keys.clone(),
            hosts: RwLock::new(HashMap::new()),
        })
    }

    /// Let `host` log in with `key` (enrolled, or loaded from the orchestrator's records).
    pub fn set_host_key(&self, host: &str, key: VerifyingKey) {
        self.hosts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(host.to_string(), key);
    }

    /// Whether `user` may connect with `password` as MQTT client `client_id`; the reason if
    /// not.
    pub fn check(&self, client_id: &str, user: &str, password: &str) -> Result<(), String> {
        if let Some(host) = user.strip_prefix(ENROL_LOGIN_PREFIX) {
            if client_id != enrol_client_id(host) {
                return Err(format!("{user} may not use client id {client_id:?}"));
            }
            let tokens = self.keys.tokens()?;
            return if tokens.iter().any(|(_, t)| t.proves_login(host, password)) {
                Ok(())
            } else {
                Err(format!(
                    "{user}: no unused enrolment token proves this login"
                ))
            };
        }
        let who = Principal::parse(user)?;
        let reserved = [
            ORCHESTRATOR_CLIENT_PREFIX,
            HOST_CLIENT_PREFIX,
            ENROL_CLIENT_PREFIX,
        ]
        .iter()
        .any(|p| client_id.starts_with(p));
        let allowed = match &who {
            Principal::Orchestrator => true,
            Principal::Host(h) => client_id == host_client_id(h),
            Principal::Operator(_) | Principal::Merger(_) => !reserved,
        };
        if !allowed {
            return Err(format!("{who} may not use client id {client_id:?}"));
        }
        let key = match &who {
            Principal::Host(h) => self
                .hosts
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(h)
                .copied()
                .ok_or_else(|| format!("{who} is not enrolled"))?,
            other => *self
                .trusted
                .get(other)
                .ok_or_else(|| format!("{who} is not in the trust file"))?,
        };
        let sig: [u8; 64] = B64
            .decode(password)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{who}: password is not a signature"))?;
        key.verify_strict(&login_bytes(user), &Signature::from_bytes(&sig))
            .map_err(|_| format!("{who}: login signature does not verify"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed::{Signer, Token};

    fn swarm(name: &str) -> (KeyDir, Logins) {
        let dir =
            std::env::temp_dir().join(format!("gopswarm-login-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let kd = KeyDir::init(&dir, "ops", "m1", 1).unwrap();
        let logins = Logins::new(&kd).unwrap();
        (kd, logins)
    }

    #[test]
    fn parts_log_in_with_their_keys_and_nothing_else_does() {
        let (kd, logins) = swarm("keys");
        let orch = kd.signer(Principal::Orchestrator).unwrap();
        let (u, p) = orch.broker_login();
        assert_eq!(u, "orchestrator");
        assert_eq!(logins.check("gopswarm-orchestrator", &u, &p), Ok(()));
        let op = kd.signer(Principal::Operator("ops".into())).unwrap();
        let (ou, op_pass) = op.broker_login();
        assert_eq!(logins.check("anything", &ou, &op_pass), Ok(()));
        // Not under the orchestrator's, a host's or an enrolling host's client id.
        for taken in [
            "gopswarm-orchestrator-live",
            "gopswarm-host-h1",
            "gopswarm-enrol-h1",
        ] {
            assert!(logins.check(taken, &ou, &op_pass).is_err(), "{taken}");
        }
        let m1 = kd.signer(Principal::Merger("m1".into())).unwrap();
        let (mu, mp) = m1.broker_login();
        assert_eq!(logins.check("gopswarm-merge-s-p", &mu, &mp), Ok(()));
        assert!(logins.check("gopswarm-orchestrator", &mu, &mp).is_err());
        // Someone else's password, a made-up key, no password, an unknown name.
        assert!(logins.check("x", &u, &op_pass).is_err());
        let fake = Signer::new(Principal::Orchestrator, crate::signed::generate());
        assert!(logins.check("x", &u, &fake.broker_login().1).is_err());
        assert!(logins.check("x", &u, "").is_err());
        assert!(logins.check("x", "operator:eve", &op_pass).is_err());
        assert!(logins.check("x", "", "").is_err());
        // A host once enrolled, and only under its own client id.
        let h = Signer::new(Principal::Host("h1".into()), crate::signed::generate());
        let (hu, hp) = h.broker_login();
        assert!(logins.check(&host_client_id("h1"), &hu, &hp).is_err());
        logins.set_host_key("h1", h.public());
        assert_eq!(logins.check(&host_client_id("h1"), &hu, &hp), Ok(()));
        assert!(logins.check("gopswarm-orchestrator", &hu, &hp).is_err());
        assert!(logins.check(&host_client_id("h2"), &hu, &hp).is_err());
    }

    #[test]
    fn an_enrolling_host_logs_in_with_an_unused_token_only() {
        let (kd, logins) = swarm("enrol");
        let (path, token) = kd.tokens().unwrap().remove(0);
        let (u, p) = token.broker_login("h7");
        assert_eq!(u, "enrol:h7");
        assert_eq!(logins.check(&enrol_client_id("h7"), &u, &p), Ok(()));
        assert!(logins.check(&host_client_id("h7"), &u, &p).is_err());
        // The proof names the host: it does not log in another one.
        assert!(
            logins
                .check(&enrol_client_id("h8"), "enrol:h8", &p)
                .is_err()
        );
        let other = Token::generate();
        let (_, forged) = other.broker_login("h7");
        assert!(logins.check(&enrol_client_id("h7"), &u, &forged).is_err());
        // Used (the orchestrator deletes its file): refused.
        std::fs::remove_file(path).unwrap();
        assert!(logins.check(&enrol_client_id("h7"), &u, &p).is_err());
        // A token made for one host logs in that host only.
        let bound = Token::for_host("h9").unwrap();
        let (_, bp) = bound.broker_login("h9");
        assert!(bound.proves_login("h9", &bp));
        assert!(!bound.proves_login("h8", &bound.broker_login("h8").1));
    }
}
