//! One mutual-TLS connection to the hub, and the reload that replaces it
//! (with the signing key) when the client's files change.

use crate::{ClientConfig, ClientError};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tongbao_proto::keys::SigningKey;
use tongbao_proto::pb::audit_client::AuditClient;
use tongbao_proto::pb::exchange_client::ExchangeClient;
use tongbao_proto::pb::log_client::LogClient;
use tongbao_proto::pb::workflow_client::WorkflowClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Largest response the client accepts (a page of large entries).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// One connection to the hub, made with one certificate.
pub(super) struct Conn {
    pub(super) channel: Channel,
    pub(super) rpc: ExchangeClient<Channel>,
    pub(super) audit: AuditClient<Channel>,
    pub(super) log: LogClient<Channel>,
    pub(super) workflow: WorkflowClient<Channel>,
    /// The hub's certificate (DER) as seen by this connection's handshake,
    /// and the CA certificates it was checked with: proof bundles carry them.
    pub(super) hub_certificate: Vec<u8>,
    pub(super) ca_certificates: Vec<Vec<u8>>,
}

/// What a reload replaces: the connection and the signing key, with the
/// fingerprint of the files they were made from. Calls take the current
/// connection each time, so a switch never interrupts a call in flight.
pub(super) struct Live {
    pub(super) config: ClientConfig,
    pub(super) conn: RwLock<Arc<Conn>>,
    pub(super) signer: RwLock<Option<Arc<SigningKey>>>,
    /// Fingerprint of the files of the last reload attempted.
    pub(super) seen: std::sync::Mutex<tongbao_proto::Hash>,
    /// Serializes reloads.
    pub(super) reloading: tokio::sync::Mutex<()>,
    /// Successful reloads so far (the connection's generation).
    pub(super) generation: std::sync::atomic::AtomicU64,
}

/// How often a client checks its certificate, key and signing key files.
const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The files a client's identity is made of, hashed.
pub(super) fn material_fingerprint(config: &ClientConfig) -> tongbao_proto::Hash {
    let mut all = Vec::new();
    for path in [Some(&config.ca), Some(&config.cert), Some(&config.key)]
        .into_iter()
        .chain(std::iter::once(config.signing_key.as_ref()))
        .flatten()
    {
        let bytes = std::fs::read(path).unwrap_or_default();
        all.extend_from_slice(&tongbao_proto::canonical::sha256(&bytes));
    }
    tongbao_proto::canonical::sha256(&all)
}

pub(super) fn load_signer(config: &ClientConfig) -> Result<Option<Arc<SigningKey>>, ClientError> {
    match &config.signing_key {
        Some(p) => {
            let pem = String::from_utf8_lossy(&read_file("signing key", p)?).into_owned();
            Ok(Some(Arc::new(SigningKey::from_pem(&pem)?)))
        }
        None => Ok(None),
    }
}

/// Checks the certificate with a handshake, then opens a connection.
pub(super) async fn open_conn(config: &ClientConfig) -> Result<Conn, ClientError> {
    let ca = read_file("CA certificate", &config.ca)?;
    let cert = read_file("certificate", &config.cert)?;
    let key = read_file("TLS key", &config.key)?;
    let connect_err = |reason: String| ClientError::Connect {
        hub: config.hub.clone(),
        reason,
    };
    let hub_certificate = crate::probe::probe(config, &ca, &cert, &key).await?;
    let ca_certificates = crate::hub_cert::certificates_from_pem(&ca).unwrap_or_default();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(config.server_name.clone());
    let channel = Channel::from_shared(config.hub.clone())
        .map_err(|e| connect_err(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| connect_err(e.to_string()))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| connect_err(error_chain(&e)))?;
    Ok(Conn {
        log: LogClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
        audit: AuditClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
        rpc: ExchangeClient::new(channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
        workflow: WorkflowClient::new(channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
        channel,
        hub_certificate,
        ca_certificates,
    })
}

/// Reloads the client's material whenever its files change, for as long
/// as a clone of the client lives.
pub(super) async fn watch_material(live: std::sync::Weak<Live>) {
    loop {
        tokio::time::sleep(RELOAD_CHECK_EVERY).await;
        let Some(live) = live.upgrade() else {
            return;
        };
        if let Err(e) = live.reload(false).await {
            tracing::warn!(error = %e, "certificate or key files changed but cannot be used; keeping the current ones");
        }
    }
}

impl Live {
    pub(super) fn conn(&self) -> Arc<Conn> {
        match self.conn.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Reloads when the files changed (or always, if `force`). Returns
    /// whether a new connection is now in use.
    pub(super) async fn reload(&self, force: bool) -> Result<bool, ClientError> {
        let _one = self.reloading.lock().await;
        let print = material_fingerprint(&self.config);
        {
            let Ok(mut seen) = self.seen.lock() else {
                return Ok(false);
            };
            if !force && *seen == print {
                return Ok(false);
            }
            *seen = print;
        }
        let signer = load_signer(&self.config)?;
        let conn = open_conn(&self.config).await?;
        if let Ok(mut c) = self.conn.write() {
            *c = Arc::new(conn);
        }
        if let Ok(mut s) = self.signer.write() {
            *s = signer;
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(cert = %self.config.cert.display(), "client certificate and keys reloaded; new calls use the new connection");
        Ok(true)
    }
}

pub(super) fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::File {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
