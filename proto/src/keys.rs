// SPDX-License-Identifier: MPL-2.0
//! The swarm's key directory, as `gopswarm init` makes it:
//!
//! ```text
//! DIR/                      0700
//!   trust.json              public keys every part trusts (orchestrator, operators, mergers)
//!   orchestrator.key        0600, the orchestrator's signing key
//!   operators/NAME.key      0600, an operator's key (stream add/remove/handoff, announcements)
//!   mergers/NAME.key        0600, a merger's key (resend requests)
//!   tokens/N.token          0600, one-time enrolment tokens: give one to each new host
//!   hosts/ID.key            0600, a host's key, written by the host when it enrols
//!   srt.passphrase          0600, encrypts partial streams over SRT (hosts and mergers)
//!   broker/ca.pem           the swarm's CA certificate: every part trusts the embedded
//!                           broker's certificate through it
//!   broker/ca.key           0600, the CA's key (signs broker certificates, nothing else)
//!   broker/broker.pem       the embedded broker's TLS certificate (localhost, 127.0.0.1, ::1,
//!                           the names given to `gopswarm init --broker-name`, and the role
//!                           name broker.gopswarm.invalid: see `tls_role`)
//!   broker/broker.key       0600, its key
//!   merger/tls.pem          the mergers' TLS certificate for partial streams over TCP
//!                           (localhost, 127.0.0.1, ::1, `gopswarm init --merger-name` and
//!                           merger.gopswarm.invalid)
//!   merger/tls.key          0600, its key
//! ```
//!
//! A host machine needs only `trust.json`, `srt.passphrase` when it serves SRT, and one token; the orchestrator reads `tokens/` to
//! check enrolments and records the ones used in its state database.

use crate::signed::{
    Principal, Signer, Token, Trust, encode_public, generate, read_key, read_secret, write_key,
    write_secret,
};
use std::path::{Path, PathBuf};

pub const TRUST_FILE: &str = "trust.json";
/// The swarm's SRT passphrase (AES-256 on every SRT partial stream).
pub const SRT_PASSPHRASE_FILE: &str = "srt.passphrase";
/// Names every broker certificate holds: the embedded broker on this machine.
pub const LOCAL_BROKER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
const CA_NAME: &str = "gopswarm swarm CA";
/// The operator and merger names `gopswarm init` uses unless told others.
pub const DEFAULT_OPERATOR: &str = "operator";
pub const DEFAULT_MERGER: &str = "merger";

#[derive(Debug, Clone)]
pub struct KeyDir {
    pub dir: PathBuf,
}

/// A folder only its owner enters: made 0700, or made 0700 again.
fn private_dir(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl KeyDir {
    pub fn new(dir: impl Into<PathBuf>) -> KeyDir {
        KeyDir { dir: dir.into() }
    }

    /// Make a new swarm's keys: the orchestrator's, one operator's, one merger's, the trust
    /// file, and `tokens` enrolment tokens. Refuses a directory that already has a trust file.
    pub fn init(
        dir: impl Into<PathBuf>,
        operator: &str,
        merger: &str,
        tokens: usize,
    ) -> Result<KeyDir, String> {
        let kd = KeyDir::new(dir);
        for name in [operator, merger] {
            if !crate::valid_id(name) {
                return Err(format!("name {name:?}: 1-64 of [A-Za-z0-9._-]"));
            }
        }
        let trust_path = kd.dir.join(TRUST_FILE);
        if trust_path.exists() {
            return Err(format!(
                "{} exists: this directory already holds a swarm's keys (add tokens with --add-tokens)",
                trust_path.display()
            ));
        }
        for sub in ["", "operators", "mergers", "tokens", "hosts"] {
            private_dir(&kd.dir.join(sub))?;
        }
        let orch = generate();
        let op = generate();
        let mg = generate();
        let w = |p: PathBuf, k| write_key(&p, k).map_err(|e| format!("{}: {e}", p.display()));
        w(kd.dir.join("orchestrator.key"), &orch)?;
        w(
            kd.dir.join("operators").join(format!("{operator}.key")),
            &op,
        )?;
        w(kd.dir.join("mergers").join(format!("{merger}.key")), &mg)?;
        let trust = Trust {
            orchestrator: encode_public(&orch.verifying_key()),
            operators: [(operator.to_string(), encode_public(&op.verifying_key()))].into(),
            mergers: [(merger.to_string(), encode_public(&mg.verifying_key()))].into(),
        };
        let text = serde_json::to_string_pretty(&trust).expect("trust serializes") + "\n";
        std::fs::write(&trust_path, text).map_err(|e| format!("{}: {e}", trust_path.display()))?;
        kd.add_srt_passphrase()?;
        kd.make_broker_cert(&[])?;
        kd.make_merger_cert(&[])?;
        kd.add_tokens(tokens)?;
        Ok(kd)
    }

    /// The swarm CA's certificate (what parts trust the embedded broker through), if this
    /// directory has one.
    pub fn broker_ca(&self) -> Option<PathBuf> {
        Some(self.dir.join("broker").join("ca.pem")).filter(|p| p.exists())
    }

    /// The embedded broker's certificate and key.
    pub fn broker_cert(&self) -> Result<(PathBuf, PathBuf), String> {
        let dir = self.dir.join("broker");
        let (cert, key) = (dir.join("broker.pem"), dir.join("broker.key"));
        if !cert.exists() || !key.exists() {
            return Err(format!(
                "{}: no broker certificate (this key directory predates the TLS broker): make \
                 one with `gopswarm init {} --broker-cert`",
                dir.display(),
                self.dir.display()
            ));
        }
        read_secret(&key)?;
        Ok((cert, key))
    }

    /// The mergers' TLS certificate and key (partial streams over TCP).
    pub fn merger_cert(&self) -> Result<(PathBuf, PathBuf), String> {
        let dir = self.dir.join("merger");
        let (cert, key) = (dir.join("tls.pem"), dir.join("tls.key"));
        if !cert.exists() || !key.exists() {
            return Err(format!(
                "{}: no merger TLS certificate (this key directory predates TLS for partial \
                 streams over TCP): make one with `gopswarm init {} --merger-cert \
                 --merger-name NAME`, NAME being what hosts reach the merger at",
                dir.display(),
                self.dir.display()
            ));
        }
        read_secret(&key)?;
        Ok((cert, key))
    }

    /// (Re)make the embedded broker's certificate for [`LOCAL_BROKER_NAMES`] and `names`
    /// (DNS names or IP addresses the parts reach it at), signed by the swarm CA, which is
    /// made first if there is none. Parts that trust the CA trust the new certificate.
    pub fn make_broker_cert(&self, names: &[String]) -> Result<PathBuf, String> {
        self.make_server_cert(
            "broker",
            "broker",
            "gopswarm embedded broker",
            crate::tls_role::BROKER_ROLE,
            names,
        )
    }

    /// (Re)make the mergers' TLS certificate (partial streams over TCP) for
    /// [`LOCAL_BROKER_NAMES`] and `names`, signed by the swarm CA.
    pub fn make_merger_cert(&self, names: &[String]) -> Result<PathBuf, String> {
        self.make_server_cert(
            "merger",
            "tls",
            "gopswarm merger",
            crate::tls_role::MERGER_ROLE,
            names,
        )
    }

    /// A server certificate `sub/stem.pem` (key `sub/stem.key`) signed by the swarm CA, for
    /// the loopback names, `names` and its `role` (see [`crate::tls_role`]).
    fn make_server_cert(
        &self,
        sub: &str,
        stem: &str,
        common_name: &str,
        role: &str,
        names: &[String],
    ) -> Result<PathBuf, String> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let dir = self.dir.join("broker");
        private_dir(&dir)?;
        let err = |what: &str, e: rcgen::Error| format!("{what}: {e}");
        let (ca_pem, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        let ca_key = if ca_key_path.exists() {
            KeyPair::from_pem(&read_secret(&ca_key_path)?).map_err(|e| err("swarm CA key", e))?
        } else {
            let k = KeyPair::generate().map_err(|e| err("swarm CA key", e))?;
            write_secret(&ca_key_path, &k.serialize_pem())
                .map_err(|e| format!("{}: {e}", ca_key_path.display()))?;
            k
        };
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name.push(DnType::CommonName, CA_NAME);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.not_before = rcgen::date_time_ymd(2024, 1, 1);
        ca.not_after = rcgen::date_time_ymd(2124, 1, 1);
        // The same name and key as the CA made before: certificates it signed chain to it.
        let ca_cert = ca.self_signed(&ca_key).map_err(|e| err("swarm CA", e))?;
        if !ca_pem.exists() {
            std::fs::write(&ca_pem, ca_cert.pem())
                .map_err(|e| format!("{}: {e}", ca_pem.display()))?;
        }
        let mut all: Vec<String> = LOCAL_BROKER_NAMES.iter().map(|s| s.to_string()).collect();
        all.push(role.to_string());
        for n in names {
            // DNS names compare without case, and a trailing dot names the same host.
            let dns = n.to_ascii_lowercase();
            if dns
                .trim_end_matches('.')
                .ends_with(crate::tls_role::ROLE_DOMAIN)
            {
                return Err(format!(
                    "{n}: names in {} say which part a certificate is for; gopswarm adds them",
                    crate::tls_role::ROLE_DOMAIN
                ));
            }
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
        let mut params = CertificateParams::new(all).map_err(|e| err("certificate names", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let key = KeyPair::generate().map_err(|e| err("server key", e))?;
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .map_err(|e| err("server certificate", e))?;
        let out = self.dir.join(sub);
        private_dir(&out)?;
        let (cert_path, key_path) = (
            out.join(format!("{stem}.pem")),
            out.join(format!("{stem}.key")),
        );
        let _ = std::fs::remove_file(&key_path);
        write_secret(&key_path, &key.serialize_pem())
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        std::fs::write(&cert_path, cert.pem())
            .map_err(|e| format!("{}: {e}", cert_path.display()))?;
        Ok(cert_path)
    }

    /// A new SRT passphrase (`srt.passphrase`), for a key directory made without one. Never
    /// replaces one: every host and merger must have the same.
    pub fn add_srt_passphrase(&self) -> Result<PathBuf, String> {
        use base64::Engine as _;
        use rand::RngCore as _;
        let path = self.dir.join(SRT_PASSPHRASE_FILE);
        if path.exists() {
            return Err(format!("{} exists already", path.display()));
        }
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        // 43 characters: within SRT's 10-79.
        let text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(secret) + "\n";
        write_secret(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    /// The swarm's SRT passphrase.
    pub fn srt_passphrase(&self) -> Result<String, String> {
        let path = self.dir.join(SRT_PASSPHRASE_FILE);
        if !path.exists() {
            return Err(format!(
                "{}: missing (this key directory predates encrypted SRT): add it with \
                 `gopswarm init {} --add-srt-passphrase` and copy it to the hosts and mergers",
                path.display(),
                self.dir.display()
            ));
        }
        let text = read_secret(&path)?;
        if !(10..=79).contains(&text.len()) {
            return Err(format!(
                "{}: an SRT passphrase has 10 to 79 characters",
                path.display()
            ));
        }
        Ok(text)
    }

    /// A key for another operator or merger: written, and its public half added to the trust
    /// file (parts read the trust file at start: restart the orchestrator for an operator,
    /// the hosts for a merger).
    pub fn add_signer(&self, who: &Principal) -> Result<PathBuf, String> {
        let mut trust = self.trust()?;
        let (map, name) = match who {
            Principal::Operator(n) => (&mut trust.operators, n),
            Principal::Merger(n) => (&mut trust.mergers, n),
            _ => {
                return Err(format!(
                    "{who}: only operators and mergers are added this way"
                ));
            }
        };
        if !crate::valid_id(name) {
            return Err(format!("name {name:?}: 1-64 of [A-Za-z0-9._-]"));
        }
        if map.contains_key(name) {
            return Err(format!("{who} is in the trust file already"));
        }
        let path = self.key_path(who);
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        let key = generate();
        write_key(&path, &key).map_err(|e| format!("{}: {e}", path.display()))?;
        map.insert(name.clone(), encode_public(&key.verifying_key()));
        let text = serde_json::to_string_pretty(&trust).expect("trust serializes") + "\n";
        // Replaced in one rename: a part starting now reads the old file or the new one.
        let trust_path = self.dir.join(TRUST_FILE);
        let tmp = self.dir.join(".trust.json.new");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &trust_path))
            .map_err(|e| format!("{}: {e}", trust_path.display()))?;
        Ok(path)
    }

    /// Write `n` more enrolment tokens; their paths.
    pub fn add_tokens(&self, n: usize) -> Result<Vec<PathBuf>, String> {
        let dir = self.dir.join("tokens");
        private_dir(&dir)?;
        let mut made = Vec::new();
        let mut i = 1;
        while made.len() < n {
            let path = dir.join(format!("{i}.token"));
            i += 1;
            if path.exists() {
                continue;
            }
            write_secret(&path, &(Token::generate().to_text() + "\n"))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            made.push(path);
        }
        Ok(made)
    }

    /// The trust file; refused when others may write it (they could add an operator key).
    pub fn trust(&self) -> Result<Trust, String> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.dir.join(TRUST_FILE);
        let mode = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o022 != 0 {
            return Err(format!(
                "{}: mode {:o}; only its owner may write it (chmod 644)",
                path.display(),
                mode & 0o777
            ));
        }
        Trust::read(&path)
    }

    pub fn key_path(&self, who: &Principal) -> PathBuf {
        match who {
            Principal::Orchestrator => self.dir.join("orchestrator.key"),
            Principal::Operator(n) => self.dir.join("operators").join(format!("{n}.key")),
            Principal::Merger(n) => self.dir.join("mergers").join(format!("{n}.key")),
            Principal::Host(n) => self.dir.join("hosts").join(format!("{n}.key")),
        }
    }

    /// The signer of `who`, from its key file.
    pub fn signer(&self, who: Principal) -> Result<Signer, String> {
        if let Principal::Operator(n) | Principal::Merger(n) | Principal::Host(n) = &who
            && !crate::valid_id(n)
        {
            return Err(format!("{n:?}: a key name is 1-64 of [A-Za-z0-9._-]"));
        }
        let key = read_key(&self.key_path(&who))?;
        Ok(Signer::new(who, key))
    }

    /// The enrolment tokens in `tokens/` (used ones included: the orchestrator's database
    /// says which), with their files.
    pub fn tokens(&self) -> Result<Vec<(PathBuf, Token)>, String> {
        let dir = self.dir.join("tokens");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        let mut tokens = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "token") {
                let text = read_secret(&path)?;
                let token = Token::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                tokens.push((path, token));
            }
        }
        Ok(tokens)
    }

    /// What a provisioner hands a new host instead of this whole directory: a key directory
    /// of its own (`issued/ID/`) with the trust file and, unless the host has its key there
    /// already, a token made for it (`issued/ID/enrol.token`; the same token stays in
    /// `tokens/ID.token` for the orchestrator). A token issued before and not used yet is
    /// handed out again, not a new one.
    pub fn issue_host(&self, host: &str) -> Result<(KeyDir, Option<PathBuf>), String> {
        if !crate::valid_id(host) {
            return Err(format!("host id {host:?}"));
        }
        let issued = KeyDir::new(self.dir.join("issued").join(host));
        private_dir(&issued.dir)?;
        let trust_path = issued.dir.join(TRUST_FILE);
        std::fs::copy(self.dir.join(TRUST_FILE), &trust_path)
            .map_err(|e| format!("{}: {e}", trust_path.display()))?;
        if let Some(ca) = self.broker_ca() {
            let to = issued.dir.join("broker");
            private_dir(&to)?;
            std::fs::copy(&ca, to.join("ca.pem")).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        if self.dir.join(SRT_PASSPHRASE_FILE).exists() {
            let text = self.srt_passphrase()?;
            let to = issued.dir.join(SRT_PASSPHRASE_FILE);
            let _ = std::fs::remove_file(&to);
            write_secret(&to, &(text + "\n")).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        if issued.key_path(&Principal::Host(host.to_string())).exists() {
            return Ok((issued, None));
        }
        let kept = self.dir.join("tokens").join(format!("{host}.token"));
        let handed = issued.dir.join("enrol.token");
        if !kept.exists() {
            private_dir(&self.dir.join("tokens"))?;
            let text = Token::for_host(host)?.to_text() + "\n";
            write_secret(&kept, &text).map_err(|e| format!("{}: {e}", kept.display()))?;
        }
        let _ = std::fs::remove_file(&handed);
        let text = read_secret(&kept)?;
        write_secret(&handed, &(text + "\n")).map_err(|e| format!("{}: {e}", handed.display()))?;
        Ok((issued, Some(handed)))
    }

    /// A new host's key, written where [`KeyDir::signer`] finds it.
    pub fn create_host_key(&self, host: &str) -> Result<Signer, String> {
        private_dir(&self.dir.join("hosts"))?;
        let who = Principal::Host(host.to_string());
        let path = self.key_path(&who);
        let key = generate();
        write_key(&path, &key).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Signer::new(who, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_makes_private_keys_a_trust_file_and_tokens() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("gopswarm-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let kd = KeyDir::init(&dir, "ops", "m1", 3).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("orchestrator.key")), 0o600);
        assert_eq!(mode(&dir.join("tokens/3.token")), 0o600);
        let trust = kd.trust().unwrap();
        let orch = kd.signer(Principal::Orchestrator).unwrap();
        assert_eq!(trust.orchestrator, encode_public(&orch.public()));
        assert!(kd.signer(Principal::Operator("ops".into())).is_ok());
        assert!(kd.signer(Principal::Merger("m1".into())).is_ok());
        assert_eq!(kd.tokens().unwrap().len(), 3);
        assert_eq!(kd.add_tokens(2).unwrap().len(), 2);
        assert_eq!(kd.tokens().unwrap().len(), 5);
        // A host's own directory: the trust file and a token made for it, the same one again
        // until used; none once it has its key.
        let (issued, token) = kd.issue_host("h7").unwrap();
        let token = token.unwrap();
        assert_eq!(issued.trust().unwrap(), trust);
        let t = Token::parse(&read_secret(&token).unwrap()).unwrap();
        assert_eq!(t.host.as_deref(), Some("h7"));
        assert_eq!(kd.tokens().unwrap().len(), 6);
        let (_, again) = kd.issue_host("h7").unwrap();
        assert_eq!(
            Token::parse(&read_secret(&again.unwrap()).unwrap()).unwrap(),
            t
        );
        issued.create_host_key("h7").unwrap();
        assert_eq!(kd.issue_host("h7").unwrap().1, None);
        assert!(
            kd.signer(Principal::Operator("../orchestrator".into()))
                .is_err()
        );
        assert!(
            KeyDir::init(&dir, "ops", "m1", 0).is_err(),
            "never over a swarm"
        );
        // Another operator: its key, and its public half in the trust file.
        let alice = Principal::Operator("alice".into());
        kd.add_signer(&alice).unwrap();
        let t = kd.trust().unwrap();
        let key = kd.signer(alice.clone()).unwrap().public();
        assert_eq!(t.operators["alice"], encode_public(&key));
        assert!(kd.add_signer(&alice).is_err(), "never replaced");
        assert!(kd.add_signer(&Principal::Orchestrator).is_err());
        let h = kd.create_host_key("h1").unwrap();
        let again = kd.signer(Principal::Host("h1".into())).unwrap();
        assert_eq!(h.public(), again.public());
        // A name in the role domain would give one certificate both roles.
        for name in ["merger.gopswarm.invalid", "Broker.GopSwarm.Invalid."] {
            let err = kd.make_broker_cert(&[name.to_string()]).unwrap_err();
            assert!(err.contains("gopswarm adds them"), "{err}");
        }
        kd.make_merger_cert(&["merger.example".to_string()])
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
