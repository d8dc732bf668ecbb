//! A one-off TLS handshake before the gRPC connection is made.
//!
//! Under TLS 1.3 the hub checks the client certificate after the client
//! believes the handshake is done, and the refusal (a TLS alert) can be
//! lost in the gRPC stack as "connection closed". This probe completes a
//! handshake, speaks the first bytes of HTTP/2 and reads the hub's answer:
//! a server preface means accepted, an alert says exactly why not. It also
//! keeps the hub's certificate, for proof bundles.

use crate::error::tls_alert;
use crate::{ClientConfig, ClientError};
use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codegen::http::Uri;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn probe(
    config: &ClientConfig,
    hub: &str,
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
) -> Result<Vec<u8>, ClientError> {
    let fail = |reason: String| ClientError::Connect {
        hub: hub.to_string(),
        reason,
    };
    let uri: Uri = hub.parse().map_err(|e| fail(format!("not a URL: {e}")))?;
    let host = uri.host().ok_or_else(|| fail("URL has no host".into()))?;
    let port = uri.port_u16().unwrap_or(443);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        roots
            .add(c.map_err(|e| fail(format!("CA file: {e}")))?)
            .map_err(|e| fail(format!("CA file: {e}")))?;
    }
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("certificate file: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| fail(format!("key file: {e}")))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| fail(e.to_string()))?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| fail(format!("certificate and key do not match: {e}")))?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(config.server_name.clone())
        .map_err(|e| fail(format!("server_name: {e}")))?;
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                refusal(&e).unwrap_or_else(|| fail(format!("TLS handshake failed: {e}")))
            })?;
        stream
            .write_all(H2_PREFACE)
            .await
            .map_err(|e| refusal(&e).unwrap_or_else(|| fail(e.to_string())))?;
        // The hub's certificate, which certifies its checkpoint key.
        let hub_certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default();
        let mut buf = [0u8; 64];
        match stream.read(&mut buf).await {
            Ok(0) => Err(ClientError::CertificateRefused {
                reason: "the hub closed the connection right after the handshake".into(),
            }),
            Ok(_) => Ok(hub_certificate),
            Err(e) => Err(refusal(&e).unwrap_or_else(|| fail(e.to_string()))),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, work)
        .await
        .map_err(|_| fail("no answer within 10 s".into()))?
}

fn refusal(e: &std::io::Error) -> Option<ClientError> {
    tls_alert(e).map(|reason| ClientError::CertificateRefused { reason })
}

/// True when the hub's address accepts a TCP connection within `within`:
/// the hub process is there, whatever its TLS says. Tells "the hub is
/// gone" apart from a handshake that failed for another reason.
pub(crate) async fn accepts_tcp(hub: &str, within: Duration) -> bool {
    let Ok(uri) = hub.parse::<Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let port = uri.port_u16().unwrap_or(443);
    matches!(
        tokio::time::timeout(
            within,
            tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        )
        .await,
        Ok(Ok(_))
    )
}
