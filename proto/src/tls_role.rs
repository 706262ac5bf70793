// SPDX-License-Identifier: MPL-2.0
//! Which swarm server a TLS certificate belongs to. The swarm CA signs two kinds of server
//! certificate, the broker's and the mergers', both for the loopback names and whatever names
//! `gopswarm init` was given. Checking the chain and the name a part dialled would take either
//! for the other, so a merger's key could pose as the broker and collect the parts' logins.
//! Each certificate therefore also names its role ([`BROKER_ROLE`], [`MERGER_ROLE`], in the
//! reserved `.invalid` domain, which no resolver answers), and a part checks that role too.

use rumqttc::tokio_rustls::rustls;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// The domain of the role names, which a name given to `gopswarm init` may not be in.
pub const ROLE_DOMAIN: &str = ".gopswarm.invalid";
/// The name only the broker's certificate holds.
pub const BROKER_ROLE: &str = "broker.gopswarm.invalid";
/// The name only the mergers' certificate holds.
pub const MERGER_ROLE: &str = "merger.gopswarm.invalid";

/// A client that trusts only the CA certificates in `ca_pem` and only a server certificate
/// that also holds `role`.
pub fn client_config(ca_pem: &[u8], role: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut found = 0;
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let cert = cert.map_err(|e| format!("CA certificates: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA certificate: {e}"))?;
        found += 1;
    }
    if found == 0 {
        return Err("no CA certificate in the PEM".into());
    }
    let inner = WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| format!("certificate verifier: {e}"))?;
    let role = ServerName::try_from(role.to_string()).map_err(|e| format!("{role}: {e}"))?;
    let verifier = Arc::new(RoleVerifier { inner, role });
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

/// WebPKI verification for the name dialled, then again for the role.
#[derive(Debug)]
struct RoleVerifier {
    inner: Arc<WebPkiServerVerifier>,
    role: ServerName<'static>,
}

impl ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.role, ocsp_response, now)
            .map_err(|_| {
                rustls::Error::General(format!(
                    "the server's certificate is from the swarm CA but not for {} (a \
                     certificate made for another part of the swarm, or one made before \
                     certificates named their role: make it again with `gopswarm init`)",
                    self.role.to_str()
                ))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
