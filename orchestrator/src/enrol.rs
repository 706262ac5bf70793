// SPDX-License-Identifier: MPL-2.0
//! Host enrolment: a new host proves it holds a one-time token from `gopswarm init` and gets a
//! certificate for its key. A token for nobody in particular enrols a new host id; a host that
//! is enrolled already gets a new key (rotation) only with a token made for it
//! (`gopswarm init DIR --token-for ID`), so no spare token can take over a known host.

use crate::store::Store;
use gopswarm_proto::keys::KeyDir;
use gopswarm_proto::signed::Token;
use gopswarm_proto::{Enrol, HostCert};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The tokens of `tokens/`, read again at most once a second and only for an id not known
/// yet: a flood of enrolments with made-up tokens costs no disk reads.
pub struct Tokens {
    keys: KeyDir,
    cached: Vec<(PathBuf, Token)>,
    loaded: Option<Instant>,
}

impl Tokens {
    pub fn new(keys: KeyDir) -> Tokens {
        Tokens {
            keys,
            cached: Vec::new(),
            loaded: None,
        }
    }

    fn find(&mut self, id: &str) -> Result<Option<(PathBuf, Token)>, String> {
        let hit = |c: &[(PathBuf, Token)]| c.iter().find(|(_, t)| t.id == id).cloned();
        if let Some(found) = hit(&self.cached) {
            return Ok(Some(found));
        }
        if self
            .loaded
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Ok(None);
        }
        self.cached = self.keys.tokens()?;
        self.loaded = Some(Instant::now());
        Ok(hit(&self.cached))
    }
}

/// The certificate for `e`, recorded in `store` (its token file deleted); or why not.
pub fn decide(
    tokens: &mut Tokens,
    store: &Store,
    e: &Enrol,
    now_ms: u64,
) -> Result<HostCert, String> {
    let (path, token) = tokens
        .find(&e.token_id)?
        .ok_or_else(|| format!("unknown enrolment token {}", e.token_id))?;
    if !token.proves(e) {
        return Err(format!(
            "the proof does not verify with token {} (wrong secret, or host or key changed)",
            e.token_id
        ));
    }
    if let Some(h) = &token.host
        && h != &e.host
    {
        return Err(format!("token {} is for host {h}", e.token_id));
    }
    let db = |e: anyhow::Error| format!("state database: {e:#}");
    let current = store.host_key(&e.host).map_err(db)?;
    match store.token_used_by(&e.token_id).map_err(db)? {
        // The same enrolment again (the host did not hear the certificate): answer again.
        Some(h) if h == e.host && current.as_deref() == Some(e.key.as_str()) => {}
        Some(h) => return Err(format!("token {} was used by host {h}", e.token_id)),
        None => {
            if current.as_deref().is_some_and(|k| k != e.key) {
                if token.host.is_none() {
                    return Err(format!(
                        "host {} is enrolled with another key; a new key needs a token made for \
                         it (gopswarm init DIR --token-for {})",
                        e.host, e.host
                    ));
                }
                tracing::warn!(
                    "host {} enrols with a new key (token {})",
                    e.host,
                    e.token_id
                );
            }
            store.enrol(&e.host, &e.key, &e.token_id).map_err(db)?;
            // Used up: the database keeps the record, the secret goes.
            if let Err(err) = std::fs::remove_file(&path)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("used token {}: {err}", path.display());
            }
        }
    }
    Ok(HostCert {
        host: e.host.clone(),
        key: e.key.clone(),
        enrolled_ms: now_ms,
        token: e.token_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gopswarm_proto::signed::generate;

    #[test]
    fn a_token_enrols_once_and_only_with_its_proof() {
        let dir = std::env::temp_dir().join(format!("gopswarm-enrol-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let kd = KeyDir::init(dir.join("keys"), "operator", "merger", 2).unwrap();
        let store = Store::open(&dir.join("state.redb")).unwrap();
        let mut tokens = Tokens::new(kd.clone());
        let t: Vec<Token> = kd.tokens().unwrap().into_iter().map(|(_, t)| t).collect();
        let (k1, k2) = (generate().verifying_key(), generate().verifying_key());
        let e = t[0].enrol("h1", &k1);
        let cert = decide(&mut tokens, &store, &e, 5).unwrap();
        assert_eq!(cert.key, e.key);
        assert_eq!(
            kd.tokens().unwrap().len(),
            1,
            "the used token's file is gone"
        );
        // Heard twice: the same answer.
        assert!(decide(&mut tokens, &store, &e, 6).is_ok());
        // The used token for another host, or another key.
        let err = decide(&mut tokens, &store, &t[0].enrol("h2", &k2), 7).unwrap_err();
        assert!(err.contains("used by host h1"), "{err}");
        assert!(decide(&mut tokens, &store, &t[0].enrol("h1", &k2), 7).is_err());
        // A forged proof, an unknown token.
        let forged = Enrol {
            token_id: t[1].id.clone(),
            ..t[0].enrol("h3", &k2)
        };
        assert!(decide(&mut tokens, &store, &forged, 8).is_err());
        let unknown = Token::generate().enrol("h3", &k2);
        let err = decide(&mut tokens, &store, &unknown, 8).unwrap_err();
        assert!(err.contains("unknown"), "{err}");
        // A spare token cannot give the enrolled h1 a new key; one made for h1 can.
        let err = decide(&mut tokens, &store, &t[1].enrol("h1", &k2), 9).unwrap_err();
        assert!(err.contains("--token-for h1"), "{err}");
        let (_, for_h1) = kd.issue_host("h1").unwrap();
        let for_h1 =
            Token::parse(&gopswarm_proto::signed::read_secret(&for_h1.unwrap()).unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(decide(&mut tokens, &store, &for_h1.enrol("h2", &k2), 9).is_err());
        assert!(decide(&mut tokens, &store, &for_h1.enrol("h1", &k2), 9).is_ok());
        assert_eq!(
            store.host_key("h1").unwrap(),
            Some(for_h1.enrol("h1", &k2).key)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
