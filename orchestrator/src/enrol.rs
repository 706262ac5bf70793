// SPDX-License-Identifier: MPL-2.0
//! Host enrolment: a new host proves it holds a one-time token from `gopswarm init` and gets a
//! certificate for its key. The token is the operator's permission for one identity: a fresh
//! token also re-enrols a known host with a new key (how a host key is rotated).

use crate::store::Store;
use gopswarm_proto::keys::KeyDir;
use gopswarm_proto::{Enrol, HostCert};

/// The certificate for `e`, recorded in `store`; or why not.
pub fn decide(keys: &KeyDir, store: &Store, e: &Enrol, now_ms: u64) -> Result<HostCert, String> {
    let tokens = keys.tokens()?;
    let token = tokens
        .iter()
        .find(|t| t.id == e.token_id)
        .ok_or_else(|| format!("unknown enrolment token {}", e.token_id))?;
    if !token.proves(e) {
        return Err(format!(
            "the proof does not verify with token {} (wrong secret, or host or key changed)",
            e.token_id
        ));
    }
    let db = |e: anyhow::Error| format!("state database: {e:#}");
    let current = store
        .host_keys()
        .map_err(db)?
        .into_iter()
        .find(|(h, _)| h == &e.host)
        .map(|(_, k)| k);
    match store.token_used_by(&e.token_id).map_err(db)? {
        // The same enrolment again (the host did not hear the certificate): answer again.
        Some(h) if h == e.host && current.as_deref() == Some(e.key.as_str()) => {}
        Some(h) => return Err(format!("token {} was used by host {h}", e.token_id)),
        None => {
            if current.as_deref().is_some_and(|k| k != e.key) {
                tracing::warn!(
                    "host {} enrols with a new key (token {})",
                    e.host,
                    e.token_id
                );
            }
            store.enrol(&e.host, &e.key, &e.token_id).map_err(db)?;
        }
    }
    Ok(HostCert {
        host: e.host.clone(),
        key: e.key.clone(),
        enrolled_ms: now_ms,
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
        let tokens = kd.tokens().unwrap();
        let (k1, k2) = (generate().verifying_key(), generate().verifying_key());
        let e = tokens[0].enrol("h1", &k1);
        let cert = decide(&kd, &store, &e, 5).unwrap();
        assert_eq!(cert.key, e.key);
        // Heard twice: the same answer.
        assert!(decide(&kd, &store, &e, 6).is_ok());
        // The used token for another host, or another key.
        let err = decide(&kd, &store, &tokens[0].enrol("h2", &k2), 7).unwrap_err();
        assert!(err.contains("used by host h1"), "{err}");
        assert!(decide(&kd, &store, &tokens[0].enrol("h1", &k2), 7).is_err());
        // A forged proof, an unknown token.
        let forged = Enrol {
            token_id: tokens[1].id.clone(),
            ..tokens[0].enrol("h3", &k2)
        };
        assert!(decide(&kd, &store, &forged, 8).is_err());
        let unknown = gopswarm_proto::signed::Token::generate().enrol("h3", &k2);
        assert!(
            decide(&kd, &store, &unknown, 8)
                .unwrap_err()
                .contains("unknown")
        );
        // A fresh token rotates h1's key.
        assert!(decide(&kd, &store, &tokens[1].enrol("h1", &k2), 9).is_ok());
        let keys = store.host_keys().unwrap();
        assert_eq!(
            keys,
            vec![("h1".to_string(), tokens[1].enrol("h1", &k2).key)]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
