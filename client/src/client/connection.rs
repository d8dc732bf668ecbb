//! One mutual-TLS connection to one of the hub's replicas, the reload that
//! replaces it (with the signing key) when the client's files change, and
//! the failover that replaces it with one to another replica.
//!
//! Replicas are tried in rounds: each listed hub at most once, in the
//! config's order, starting after the one that failed. A hub that refuses
//! this client's certificate ends a round (it answered; the others share
//! its CA and CRL); one that cannot be reached or cuts the handshake is
//! passed over.

use crate::error::HubFailure;
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

/// One connection to one hub, made with one certificate.
pub(crate) struct Conn {
    /// Which hub of the config's list this is connected to, and its URL.
    pub(crate) hub: usize,
    pub(crate) url: String,
    pub(super) channel: Channel,
    pub(crate) rpc: ExchangeClient<Channel>,
    pub(crate) audit: AuditClient<Channel>,
    pub(crate) log: LogClient<Channel>,
    pub(crate) workflow: WorkflowClient<Channel>,
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
    /// Every hub of the config, in order.
    pub(super) hubs: Vec<String>,
    pub(super) conn: RwLock<Arc<Conn>>,
    pub(super) signer: RwLock<Option<Arc<SigningKey>>>,
    /// Fingerprint of the files of the last reload attempted.
    pub(super) seen: std::sync::Mutex<tongbao_proto::Hash>,
    /// Serializes reloads and failovers.
    pub(super) reloading: tokio::sync::Mutex<()>,
    /// Connections switched to so far, by reload or failover (the
    /// connection's generation).
    pub(super) generation: std::sync::atomic::AtomicU64,
    /// Successful reloads so far.
    pub(super) reloads: std::sync::atomic::AtomicU64,
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

/// The order of a round over `n` hubs that starts at hub `start`.
pub(super) fn round_from(start: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (start + i) % n.max(1))
}

/// Opens a connection to the first hub of `order` that can be used,
/// giving the round at most `within`. When none can, the error names each
/// hub tried and why (or is the one hub's own error).
pub(super) async fn open_first(
    config: &ClientConfig,
    hubs: &[String],
    order: impl Iterator<Item = usize>,
    within: Option<Duration>,
    mut failures: Vec<HubFailure>,
) -> Result<Conn, ClientError> {
    let deadline = within.map(|w| tokio::time::Instant::now() + w);
    for i in order {
        let Some(url) = hubs.get(i) else { continue };
        let left = deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
        let e = match left {
            Some(left) if left.is_zero() => ClientError::Connect {
                hub: url.clone(),
                reason: "not tried: the retry window ended".into(),
            },
            Some(left) => match tokio::time::timeout(left, open_conn(config, i, url)).await {
                Ok(opened) => match opened {
                    Ok(conn) => return Ok(conn),
                    Err(e) => e,
                },
                Err(_) => ClientError::Connect {
                    hub: url.clone(),
                    reason: format!("no answer within {left:?}"),
                },
            },
            None => match open_conn(config, i, url).await {
                Ok(conn) => return Ok(conn),
                Err(e) => e,
            },
        };
        if !matches!(e, ClientError::Connect { .. }) {
            // Refused or misconfigured: another replica would say the same.
            return Err(e);
        }
        failures.push(HubFailure::new(url, &e));
    }
    match failures.as_slice() {
        [only] => Err(ClientError::Connect {
            hub: only.hub.clone(),
            reason: only.reason.clone(),
        }),
        _ => Err(ClientError::NoHubAnswers { failures }),
    }
}

/// Checks the certificate with a handshake, then opens a connection to
/// hub `index` of the config, at `url`.
pub(super) async fn open_conn(
    config: &ClientConfig,
    index: usize,
    url: &str,
) -> Result<Conn, ClientError> {
    let ca = read_file("CA certificate", &config.ca)?;
    let cert = read_file("certificate", &config.cert)?;
    let key = read_file("TLS key", &config.key)?;
    let connect_err = |reason: String| ClientError::Connect {
        hub: url.to_string(),
        reason,
    };
    let hub_certificate = crate::probe::probe(config, url, &ca, &cert, &key).await?;
    let ca_certificates = crate::hub_cert::certificates_from_pem(&ca).unwrap_or_default();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(config.server_name.clone());
    let channel = Channel::from_shared(url.to_string())
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
        hub: index,
        url: url.to_string(),
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
        // The hub in use first, then its replicas.
        let order = round_from(self.conn().hub, self.hubs.len());
        let conn = open_first(&self.config, &self.hubs, order, None, Vec::new()).await?;
        self.install(Arc::new(conn));
        if let Ok(mut s) = self.signer.write() {
            *s = signer;
        }
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(cert = %self.config.cert.display(), "client certificate and keys reloaded; new calls use the new connection");
        Ok(true)
    }

    /// Makes `conn` the connection every clone calls through from now on.
    pub(super) fn install(&self, conn: Arc<Conn>) {
        if let Ok(mut c) = self.conn.write() {
            *c = conn;
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// After the hub in use failed as `failure` says (on the connection of
    /// `generation`): switches to the next replica that can be used, in
    /// one round over the others, given at most `within`. Ok when a
    /// connection other than the failed one is in use now (this round's,
    /// or one a concurrent caller switched to); the error names every hub.
    pub(super) async fn fail_over(
        &self,
        generation: u64,
        failure: &ClientError,
        within: Duration,
    ) -> Result<(), ClientError> {
        let _one = self.reloading.lock().await;
        if self.generation() != generation {
            return Ok(());
        }
        let failed = self.conn();
        let others =
            round_from(failed.hub + 1, self.hubs.len()).take(self.hubs.len().saturating_sub(1));
        let tried = vec![HubFailure::new(&failed.url, failure)];
        let conn = open_first(&self.config, &self.hubs, others, Some(within), tried).await?;
        tracing::warn!(failed = %failed.url, error = %failure, now = %conn.url, "hub unreachable; failing over to another replica");
        self.install(Arc::new(conn));
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_tries_each_hub_once_starting_where_asked() {
        assert_eq!(round_from(0, 3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(round_from(2, 3).collect::<Vec<_>>(), [2, 0, 1]);
        // After the last hub failed: the others, the first one first.
        assert_eq!(round_from(3, 3).take(2).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(round_from(1, 1).collect::<Vec<_>>(), [0]);
    }
}
