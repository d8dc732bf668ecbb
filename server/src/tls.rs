//! TLS: the hub's rustls configuration and its own accept loop.
//!
//! Tonic's built-in TLS cannot check CRLs or reload material, so the hub
//! builds its rustls `ServerConfig` itself (TLS 1.3 only, client certificate
//! required, chained to the exchange CA, checked against the CRL) and feeds
//! finished `TlsStream`s to tonic. Handshakes run in their own tasks with a
//! timeout so one slow client cannot stall the accept loop.

use rustls::ServerConfig;
use rustls::crypto::ring;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tongbao_proto::identity::{IdError, Principal};

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS configuration rejected: {0}")]
    Config(String),
}

fn read_err(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Loads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err("certificates", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err("certificates", path, e))?;
    if certs.is_empty() {
        return Err(read_err("certificates", path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| read_err("private key", path, e))
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| read_err("CRL", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err("CRL", path, e))
}

/// The hub's TLS material, by path.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: Option<PathBuf>,
}

/// Builds the rustls server configuration from files.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in load_certs(&files.ca)? {
        roots
            .add(ca)
            .map_err(|e| read_err("CA certificate", &files.ca, e))?;
    }
    let crls = match &files.crl {
        Some(p) => load_crls(p)?,
        None => Vec::new(),
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TCP connections, runs each handshake in its own task, and hands
/// established streams to the gRPC server until shutdown.
pub async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    streams: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // serve_with_incoming ignores tonic's own nodelay setting.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "set_nodelay failed");
        }
        let acceptor = acceptor.clone();
        let streams = streams.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = streams.send(Ok(tls)).await;
                }
                Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Why a verified certificate does not name a Tongbao party.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("no client certificate was presented")]
    NoCertificate,
    #[error("client certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("client certificate carries no Tongbao SAN URI (urn:tongbao:...)")]
    NoIdentity,
    #[error("client certificate carries more than one Tongbao SAN URI")]
    AmbiguousIdentity,
    #[error(transparent)]
    BadIdentity(#[from] IdError),
}

/// The party named by a (chain-verified) client certificate's SAN URI.
pub fn peer_principal(leaf: &CertificateDer<'_>) -> Result<Principal, PeerError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| PeerError::Unparsable(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PeerError::Unparsable(e.to_string()))?
        .ok_or(PeerError::NoIdentity)?;
    let mut found = None;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && uri.starts_with("urn:tongbao:")
        {
            if found.is_some() {
                return Err(PeerError::AmbiguousIdentity);
            }
            found = Some(Principal::from_uri(uri)?);
        }
    }
    found.ok_or(PeerError::NoIdentity)
}
