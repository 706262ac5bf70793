// SPDX-License-Identifier: MPL-2.0
//! TLS for partial streams over TCP (`stream add --chunks tcp://…`, `merge --listen tcp://…`).
//! With the swarm's keys the merger serves with the mergers' certificate (`merger/tls.pem`,
//! signed by the swarm CA) and a host checks it against the swarm CA (`broker/ca.pem`), the
//! name in the chunk sink and the mergers' role name; with `--insecure` both sides speak
//! plain TCP. Chunks are signed either way: TLS keeps them private.

use anyhow::{Context, Result};
use gopswarm_proto::keys::KeyDir;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

fn certificates(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: certificates", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{}: no certificate", path.display());
    Ok(certs)
}

/// The merger's side: its certificate and key from the key directory.
pub fn server_config(kd: &KeyDir) -> Result<Arc<rustls::ServerConfig>> {
    let (cert, key) = kd.merger_cert().map_err(anyhow::Error::msg)?;
    let key_pem = std::fs::read(&key).with_context(|| format!("{}", key.display()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("{}: private key", key.display()))?
        .with_context(|| format!("{}: no private key", key.display()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certificates(&cert)?, key)
        .context("the merger's TLS certificate")?;
    Ok(Arc::new(config))
}

/// A host's side: the swarm CA is the only root it trusts, and only for a certificate made
/// for the mergers (not the broker's: [`gopswarm_proto::tls_role`]).
pub fn client_config(kd: &KeyDir) -> Result<Arc<rustls::ClientConfig>> {
    let ca = kd.broker_ca().with_context(|| {
        format!(
            "{}: no broker/ca.pem (the swarm CA): partial streams over TCP need it to check the \
             merger",
            kd.dir.display()
        )
    })?;
    let pem = std::fs::read(&ca).with_context(|| format!("{}", ca.display()))?;
    gopswarm_proto::tls_role::client_config(&pem, gopswarm_proto::tls_role::MERGER_ROLE)
        .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))
}

/// A connection a host writes chunks into.
pub type ChunkWriter = Box<dyn Write + Send>;

/// Wrap a connected socket to `host` (the chunk sink's host name or address) in TLS, or not.
pub fn client(
    tls: Option<&Arc<rustls::ClientConfig>>,
    host: &str,
    tcp: TcpStream,
) -> Result<ChunkWriter> {
    let Some(config) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .with_context(|| format!("{host:?} as a TLS server name"))?;
    let conn = rustls::ClientConnection::new(config.clone(), name).context("TLS")?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // The handshake now, so a merger with the wrong certificate is reported as such.
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .with_context(|| format!("TLS handshake with the merger at {host}"))?;
    }
    Ok(Box::new(stream))
}

/// A connection a merger reads chunks from.
pub type ChunkReader = Box<dyn Read + Send>;

/// Wrap an accepted socket in TLS, or not.
pub fn server(tls: Option<&Arc<rustls::ServerConfig>>, tcp: TcpStream) -> Result<ChunkReader> {
    let Some(config) = tls else {
        return Ok(Box::new(tcp));
    };
    let conn = rustls::ServerConnection::new(config.clone()).context("TLS")?;
    Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_reaches_the_merger_over_tls_and_only_with_the_swarm_ca() {
        let dir = std::env::temp_dir().join(format!("gopswarm-chunk-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let kd = KeyDir::init(dir.join("a"), "operator", "merger", 0).unwrap();
        let other = KeyDir::init(dir.join("b"), "operator", "merger", 0).unwrap();
        let server_cfg = server_config(&kd).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let srv = std::thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 0..2 {
                let (tcp, _) = listener.accept().unwrap();
                let mut r = server(Some(&server_cfg), tcp).unwrap();
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                got.push(buf);
            }
            got
        });
        // Another swarm's CA: the handshake fails, nothing is sent.
        let tcp = TcpStream::connect(addr).unwrap();
        let err = client(Some(&client_config(&other).unwrap()), "127.0.0.1", tcp)
            .err()
            .expect("another swarm's CA does not trust this merger");
        assert!(format!("{err:#}").contains("handshake"), "{err:#}");
        let tcp = TcpStream::connect(addr).unwrap();
        let mut w = client(Some(&client_config(&kd).unwrap()), "127.0.0.1", tcp).unwrap();
        w.write_all(b"chunk bytes").unwrap();
        w.flush().unwrap();
        drop(w);
        let got = srv.join().unwrap();
        assert!(got[0].is_empty());
        assert_eq!(got[1], b"chunk bytes");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Both server certificates come from the swarm CA and hold the loopback names: a host
    /// takes only the mergers' for a merger, and a part only the broker's for the broker, so
    /// the holder of one key cannot pose as the other server.
    #[test]
    fn the_broker_and_merger_certificates_do_not_pass_for_each_other() {
        let dir = std::env::temp_dir().join(format!("gopswarm-tls-role-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let kd = KeyDir::init(dir.clone(), "operator", "merger", 0).unwrap();
        let (broker_pem, broker_key) = kd.broker_cert().unwrap();
        let key_pem = std::fs::read(&broker_key).unwrap();
        let broker_server = Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(
                    certificates(&broker_pem).unwrap(),
                    rustls_pemfile::private_key(&mut key_pem.as_slice())
                        .unwrap()
                        .unwrap(),
                )
                .unwrap(),
        );
        let ca = std::fs::read(kd.broker_ca().unwrap()).unwrap();
        let as_broker =
            gopswarm_proto::tls_role::client_config(&ca, gopswarm_proto::tls_role::BROKER_ROLE)
                .unwrap();
        let as_merger = client_config(&kd).unwrap();
        // (server, client, whether the handshake must succeed)
        let cases = [
            (server_config(&kd).unwrap(), as_merger.clone(), true),
            (server_config(&kd).unwrap(), as_broker.clone(), false),
            (broker_server.clone(), as_broker, true),
            (broker_server, as_merger, false),
        ];
        for (k, (server_cfg, client_cfg, ok)) in cases.into_iter().enumerate() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let srv = std::thread::spawn(move || {
                let (tcp, _) = listener.accept().unwrap();
                let mut r = server(Some(&server_cfg), tcp).unwrap();
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            });
            let tcp = TcpStream::connect(addr).unwrap();
            match client(Some(&client_cfg), "127.0.0.1", tcp) {
                Ok(mut w) => {
                    assert!(ok, "case {k}: a certificate of the other role was taken");
                    w.write_all(b"x").unwrap();
                    w.flush().unwrap();
                }
                Err(e) => {
                    assert!(!ok, "case {k}: {e:#}");
                    assert!(format!("{e:#}").contains(".gopswarm.invalid"), "{e:#}");
                }
            }
            let got = srv.join().unwrap();
            assert_eq!(got.is_empty(), !ok, "case {k}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
