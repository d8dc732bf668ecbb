//! The connection to the hub and the calls a departmental system makes.

use crate::push_queue::{self, Answer, PushQueue, Waiting};
use crate::trust::{TrustState, keep_evidence};
use crate::verify::{Claimed, KeyRing, VerifiedEntry, signing_key_of, verify_entry};
use crate::{ClientConfig, ClientError, Draft};
use futures::{FutureExt, Stream};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tongbao_proto::checkpoint::{NoteVerifier, open_checkpoint};
use tongbao_proto::identity::Principal;
use tongbao_proto::keys::SigningKey;
use tongbao_proto::merkle::{check_record, check_records, check_tree};
use tongbao_proto::pb::audit_client::AuditClient;
use tongbao_proto::pb::exchange_client::ExchangeClient;
use tongbao_proto::pb::log_client::LogClient;
use tongbao_proto::pb::workflow_client::WorkflowClient;
use tongbao_proto::{now_micros, pb};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Largest response the client accepts (a page of large entries).
const MAX_RESPONSE_BYTES: usize = 64 << 20;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Longest one attempt of a repeated call waits for an answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a delivered entry may wait for its inclusion check, at most.
/// Each subscription waits a share of it of its own choosing, at least
/// three quarters, so that units served together (all sent the same
/// entries at the same moment) do not all ask for their proofs at once.
const INCLUSION_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Entries checked together, at most: as many as one call of proofs
/// covers, so that a busy subscription asks once a second, not once per
/// few hundred entries (each check also fetches and may save checkpoints).
const INCLUSION_BATCH: usize = tongbao_proto::merkle::MAX_LEAVES_PER_CALL;
/// Deliveries a subscription verifies together, at most: those that had
/// arrived when it turned to the stream.
const SUBSCRIPTION_BATCH: usize = 64;

/// A running inclusion check: its outcome and the entries it covered.
type InclusionProof = tokio::task::JoinHandle<(Result<(), ClientError>, InclusionBacklog)>;

/// Entries handed to a subscriber whose inclusion is not checked yet.
#[derive(Default)]
struct InclusionBacklog {
    entries: Vec<pb::EntryPin>,
    since: Option<std::time::Instant>,
}

impl InclusionBacklog {
    fn push(&mut self, e: pb::EntryPin) {
        self.since.get_or_insert_with(std::time::Instant::now);
        self.entries.push(e);
    }
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// When the oldest entry waiting is due for its check, checking every
    /// `every`.
    fn deadline(&self, every: Duration) -> tokio::time::Instant {
        let since = self.since.unwrap_or_else(std::time::Instant::now);
        (since + every).into()
    }
    /// Takes back entries whose check could not be completed.
    fn restore(&mut self, earlier: InclusionBacklog) {
        self.since = match (earlier.since, self.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut entries = earlier.entries;
        entries.append(&mut self.entries);
        self.entries = entries;
    }
    fn due(&self, every: Duration) -> bool {
        self.entries.len() >= INCLUSION_BATCH || self.since.is_some_and(|t| t.elapsed() >= every)
    }

    /// This subscription's wait before a check: between three quarters
    /// of [`INCLUSION_CHECK_EVERY`] and all of it.
    fn check_every() -> Duration {
        let mut byte = [0u8; 1];
        // Without randomness every subscription waits the longest.
        let share =
            match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte) {
                Ok(()) => 0.75 + f64::from(byte[0]) / 1024.0,
                Err(_) => 1.0,
            };
        INCLUSION_CHECK_EVERY.mul_f64(share)
    }
}

/// The hub's durable answer to a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReceipt {
    pub channel: String,
    pub seq: u64,
    pub leaf_hash: Vec<u8>,
    pub recipients: Vec<String>,
    /// The message id had been appended before; nothing new was written.
    pub duplicate: bool,
    pub message_id: String,
}

impl PushReceipt {
    fn new(r: pb::PushResponse, message_id: String) -> Self {
        Self {
            channel: r.channel,
            seq: r.seq,
            leaf_hash: r.leaf_hash,
            recipients: r.recipients,
            duplicate: r.duplicate,
            message_id,
        }
    }
}

/// What the hub did with a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckOutcome {
    /// Where the receipt was appended (channel, seq, leaf hash); None when
    /// every entry had been acknowledged before and nothing was appended.
    pub receipt: Option<(String, u64, Vec<u8>)>,
    /// Entries this receipt newly acknowledged.
    pub newly_acknowledged: u32,
    /// Entries acknowledged before: (entry, earlier receipt).
    pub earlier: Vec<(pb::EntryRef, pb::EntryRef)>,
}

/// Why [`Client::process`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError<E> {
    /// The handler failed on this entry; it was not acknowledged.
    #[error("handler failed on entry {channel}:{seq}: {error}")]
    Handler { channel: String, seq: u64, error: E },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A checkpoint this client verified: signed by the pinned hub key and
/// consistent with every checkpoint of the channel it verified before.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedCheckpoint {
    pub channel: String,
    /// The checkpoint's origin line, `<hub log name>/<channel>`.
    pub origin: String,
    pub size: u64,
    pub root: tongbao_proto::Hash,
    /// The signed note, as the hub served it.
    pub note: String,
}

/// One page of an inbox.
#[derive(Debug, Clone)]
pub struct Page {
    pub entries: Vec<VerifiedEntry>,
    /// Cursor of the inbox's newest entry when the page was read.
    pub head: u64,
}

impl Page {
    /// The cursor to pass as `after` for the next page.
    pub fn next_after(&self, after: u64) -> u64 {
        self.entries.last().map(|e| e.cursor).unwrap_or(after)
    }
}

/// A connected client. Cheap to clone; clones share the connection, and a
/// reload (new certificate, key or signing key) switches them all.
#[derive(Clone)]
pub struct Client {
    live: Arc<Live>,
    trust: Arc<tokio::sync::Mutex<TrustState>>,
    trust_path: std::path::PathBuf,
    hub_key: Option<String>,
    verify_inclusion: bool,
    identity: Principal,
    keys: Arc<RwLock<KeyRing>>,
    /// Pushes of concurrent callers waiting to go out together.
    pushes: Arc<PushQueue>,
}

/// A call slot of the push queue held by a caller sending its own push.
/// When it is let go (the push answered, or the caller gave up waiting),
/// the pushes that queued meanwhile go out on it.
struct PushSlot<'a>(&'a Client);

impl Drop for PushSlot<'_> {
    fn drop(&mut self) {
        if let Some(batch) = self.0.pushes.next() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let client = self.0.clone();
                    rt.spawn(async move { client.send_pushes(batch).await });
                }
                // No runtime to send on: the callers of `batch` are told
                // their push was interrupted, and the slot is freed.
                Err(_) => self.0.pushes.release(),
            }
        }
    }
}

/// The slot a `send_pushes` task holds: freed if the task is dropped
/// before it finished (the runtime shutting down, a panic).
struct SendingSlot {
    pushes: Arc<PushQueue>,
    finished: bool,
}

impl Drop for SendingSlot {
    fn drop(&mut self) {
        if !self.finished {
            self.pushes.release();
        }
    }
}

/// One connection to the hub, made with one certificate.
struct Conn {
    channel: Channel,
    rpc: ExchangeClient<Channel>,
    audit: AuditClient<Channel>,
    log: LogClient<Channel>,
    workflow: WorkflowClient<Channel>,
    /// The hub's certificate (DER) as seen by this connection's handshake,
    /// and the CA certificates it was checked with: proof bundles carry them.
    hub_certificate: Vec<u8>,
    ca_certificates: Vec<Vec<u8>>,
}

/// What a reload replaces: the connection and the signing key, with the
/// fingerprint of the files they were made from. Calls take the current
/// connection each time, so a switch never interrupts a call in flight.
struct Live {
    config: ClientConfig,
    conn: RwLock<Arc<Conn>>,
    signer: RwLock<Option<Arc<SigningKey>>>,
    /// Fingerprint of the files of the last reload attempted.
    seen: std::sync::Mutex<tongbao_proto::Hash>,
    /// Serializes reloads.
    reloading: tokio::sync::Mutex<()>,
    /// Successful reloads so far (the connection's generation).
    generation: std::sync::atomic::AtomicU64,
}

/// How often a client checks its certificate, key and signing key files.
const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Longest a subscription waits for a handshake that checks whether it
/// can resume.
const PROBE_WITHIN: Duration = Duration::from_secs(10);

/// What to do after a call failed.
enum NextStep {
    /// Repeat it: the connection was switched, or the hub is there and
    /// the failure was transient.
    Retry,
    /// The hub does not answer at all (this error says how): waiting is
    /// worth it only for callers that live long (subscriptions).
    HubUnreachable(ClientError),
    /// Repeating cannot help.
    GiveUp,
}

/// The files a client's identity is made of, hashed.
fn material_fingerprint(config: &ClientConfig) -> tongbao_proto::Hash {
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

fn load_signer(config: &ClientConfig) -> Result<Option<Arc<SigningKey>>, ClientError> {
    match &config.signing_key {
        Some(p) => {
            let pem = String::from_utf8_lossy(&read_file("signing key", p)?).into_owned();
            Ok(Some(Arc::new(SigningKey::from_pem(&pem)?)))
        }
        None => Ok(None),
    }
}

/// Checks the certificate with a handshake, then opens a connection.
async fn open_conn(config: &ClientConfig) -> Result<Conn, ClientError> {
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
async fn watch_material(live: std::sync::Weak<Live>) {
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
    fn conn(&self) -> Arc<Conn> {
        match self.conn.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Reloads when the files changed (or always, if `force`). Returns
    /// whether a new connection is now in use.
    async fn reload(&self, force: bool) -> Result<bool, ClientError> {
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

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::File {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A fresh message id: time plus randomness, unique without coordination.
pub(crate) fn new_message_id() -> String {
    use ring::rand::SecureRandom;
    let mut r = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut r);
    format!("{}-{}", now_micros(), hex::encode(r))
}

impl Client {
    /// Connects to the hub with the config's certificate and loads the
    /// signing key and the registry's public keys.
    pub async fn connect(config: &ClientConfig) -> Result<Self, ClientError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let seen = material_fingerprint(config);
        let signer = load_signer(config)?;
        let conn = open_conn(config).await?;
        let trust = TrustState::load(&config.trust_state)?;
        let live = Arc::new(Live {
            config: config.clone(),
            conn: RwLock::new(Arc::new(conn)),
            signer: RwLock::new(signer),
            seen: std::sync::Mutex::new(seen),
            reloading: tokio::sync::Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(watch_material(Arc::downgrade(&live)));
        let client = Self {
            live,
            trust: Arc::new(tokio::sync::Mutex::new(trust)),
            trust_path: config.trust_state.clone(),
            hub_key: config.hub_key.clone(),
            verify_inclusion: config.verify_inclusion,
            identity: config.identity.clone(),
            keys: Arc::new(RwLock::new(KeyRing::default())),
            pushes: Arc::new(PushQueue::default()),
        };
        client.refresh_keys().await?;
        Ok(client)
    }

    /// Re-reads the certificate, key and signing key files now and, if they
    /// changed, switches every clone of this client to a new connection
    /// made with them (calls in flight finish on the old one). The files
    /// are also checked every second without being asked. Returns whether
    /// the client switched; on error the current material stays in use.
    pub async fn reload(&self) -> Result<bool, ClientError> {
        self.live.reload(false).await
    }

    /// The signing key file of the config, if any.
    pub(crate) fn signing_key_file(&self) -> Option<std::path::PathBuf> {
        self.live.config.signing_key.clone()
    }

    /// Signs from now on with this key (after a rotation), and takes the
    /// key files as they are now as seen.
    pub(crate) fn use_signing_key(&self, key: Arc<SigningKey>) {
        if let Ok(mut s) = self.live.signer.write() {
            *s = Some(key);
        }
        if let Ok(mut seen) = self.live.seen.lock() {
            *seen = material_fingerprint(&self.live.config);
        }
    }

    /// How many times this client switched to new material.
    pub fn reloads(&self) -> u64 {
        self.live.generation()
    }

    /// The gRPC channel of the current connection, for services this
    /// library does not wrap.
    pub fn channel(&self) -> Channel {
        self.live.conn().channel.clone()
    }

    fn rpc(&self) -> ExchangeClient<Channel> {
        self.live.conn().rpc.clone()
    }

    fn audit(&self) -> AuditClient<Channel> {
        self.live.conn().audit.clone()
    }

    fn log(&self) -> LogClient<Channel> {
        self.live.conn().log.clone()
    }

    pub(crate) fn workflow_rpc(&self) -> WorkflowClient<Channel> {
        self.live.conn().workflow.clone()
    }

    /// Whether a failed call is worth repeating: the error is transient,
    /// or the client switched connections meanwhile, or its files changed.
    /// A refused certificate is confirmed with a fresh handshake (given at
    /// most `probe_within`), so a revoked client gets "certificate revoked"
    /// instead of retrying; a hub that does not answer at all is reported
    /// apart, for callers that should not wait for it.
    async fn worth_retrying(
        &self,
        e: &ClientError,
        generation: u64,
        probe_within: Duration,
    ) -> Result<NextStep, ClientError> {
        if self.live.generation() != generation {
            return Ok(NextStep::Retry);
        }
        if !e.is_transient() && !matches!(e, ClientError::CertificateRefused { .. }) {
            return Ok(NextStep::GiveUp);
        }
        if self.live.reload(false).await.unwrap_or(false) {
            return Ok(NextStep::Retry);
        }
        let config = &self.live.config;
        let ca = read_file("CA certificate", &config.ca)?;
        let cert = read_file("certificate", &config.cert)?;
        let key = read_file("TLS key", &config.key)?;
        let probed =
            tokio::time::timeout(probe_within, crate::probe::probe(config, &ca, &cert, &key))
                .await
                .unwrap_or_else(|_| {
                    Err(ClientError::Connect {
                        hub: config.hub.clone(),
                        reason: format!("no answer within {probe_within:?}"),
                    })
                });
        match probed {
            Err(refused @ ClientError::CertificateRefused { .. }) => Err(refused),
            // Only a hub that does not even accept TCP is gone; a handshake
            // that failed otherwise (files being replaced, load) is retried.
            Err(unreachable @ ClientError::Connect { .. }) if e.is_transient() => {
                if crate::probe::accepts_tcp(config, probe_within).await {
                    Ok(NextStep::Retry)
                } else {
                    Ok(NextStep::HubUnreachable(unreachable))
                }
            }
            _ if e.is_transient() => Ok(NextStep::Retry),
            _ => Ok(NextStep::GiveUp),
        }
    }

    /// Whether entries handed over are first proven in a checkpoint.
    pub(crate) fn verifies_inclusion(&self) -> bool {
        self.verify_inclusion
    }

    /// Who this client is.
    pub fn identity(&self) -> &Principal {
        &self.identity
    }

    /// The hub's certificate (DER) this client saw on its current
    /// connection.
    pub fn hub_certificate(&self) -> Vec<u8> {
        self.live.conn().hub_certificate.clone()
    }

    /// The CA certificates (DER) of this client's configuration.
    pub fn ca_certificates(&self) -> Vec<Vec<u8>> {
        self.live.conn().ca_certificates.clone()
    }

    /// The registry: units with their keys, mechanisms with their members.
    pub async fn list_units(&self) -> Result<pb::ListUnitsResponse, ClientError> {
        Ok(self
            .rpc()
            .list_units(pb::ListUnitsRequest {})
            .await?
            .into_inner())
    }

    async fn refresh_keys(&self) -> Result<(), ClientError> {
        let units = self.list_units().await?;
        if let Ok(mut k) = self.keys.write() {
            *k = KeyRing::from_registry(&units);
        }
        Ok(())
    }

    /// The key and unit id that sign this client's messages.
    fn signing_identity(&self) -> Result<(Arc<SigningKey>, &str), ClientError> {
        let signer = self.live.signer.read().ok().and_then(|s| s.clone());
        match (signer, &self.identity) {
            (Some(signer), Principal::Unit(unit)) => Ok((signer, unit)),
            _ => Err(ClientError::NoSigningKey),
        }
    }

    /// Signs a draft as this unit, without sending it.
    pub fn sign(&self, draft: Draft) -> Result<pb::SignedMessage, ClientError> {
        let (signer, unit) = self.signing_identity()?;
        let id = draft.message_id.clone().unwrap_or_else(new_message_id);
        Ok(signer.sign_message(draft.into_message(unit, id, now_micros())))
    }

    /// Signs and pushes a draft; returns once the hub has made it durable.
    /// Interrupted pushes are repeated with the same message id (the hub
    /// answers a repeat with the original receipt, `duplicate: true`). If
    /// the hub refuses the signing key for its interval (it was retired
    /// meanwhile, say by a rotation), the key files are re-read and the same
    /// message is signed again with the current key, once.
    pub async fn push(&self, draft: Draft) -> Result<PushReceipt, ClientError> {
        let signed = self.sign(draft)?;
        match self.push_signed(signed.clone()).await {
            Err(refused @ ClientError::SigningKeyRefused { .. }) => {
                // Another process (or an operator) may have replaced the key file.
                let _ = self.live.reload(false).await;
                let (signer, _) = self.signing_identity()?;
                match resign_after_refusal(&signed, &refused, &signer, now_micros()) {
                    Some(again) => self.push_signed(again).await,
                    None => Err(refused),
                }
            }
            other => other,
        }
    }

    /// Pushes an already signed message, repeating it across interruptions
    /// and reconnects while the hub is reachable (for up to
    /// `push_retry_for` of the config): the message id makes it idempotent.
    /// If the hub cannot be reached at all, fails at once with
    /// [`ClientError::Connect`]; pushing the same message later is safe.
    /// Pushes made while several others of this client are in flight go
    /// out together in one `PushBatch`, each answered as `Push` would be.
    /// A push whose caller stops waiting may still be appended (as an
    /// interrupted one may): push the same signed message again, not a new
    /// draft, to have it once.
    pub async fn push_signed(&self, signed: pb::SignedMessage) -> Result<PushReceipt, ClientError> {
        let message_id = signed
            .message
            .as_ref()
            .map(|m| m.message_id.clone())
            .unwrap_or_default();
        // What the message adds to a `PushBatchRequest` (field 1).
        let size = prost::encoding::message::encoded_len(1, &signed);
        if size > push_queue::BATCH_BYTES {
            return self.push_alone(signed, message_id).await;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        if let Some(mine) = self
            .pushes
            .start_or_queue(Waiting::new(signed, size, reply))
        {
            // A slot was free: this push goes at once, from here, without a
            // hop to another task.
            let _slot = PushSlot(self);
            return self.push_alone(mine.signed, message_id).await;
        }
        match answer.await {
            Ok(Answer::Done(r)) => r.map(|r| PushReceipt::new(r, message_id)),
            Ok(Answer::Alone(signed)) => self.push_alone(*signed, message_id).await,
            Err(_) => Err(ClientError::Connect {
                hub: self.live.config.hub.clone(),
                reason: "the push was interrupted (the runtime is shutting down); \
                         pushing the same message again is safe"
                    .into(),
            }),
        }
    }

    /// One `Push` call for one message, repeated while plausible.
    async fn push_alone(
        &self,
        signed: pb::SignedMessage,
        message_id: String,
    ) -> Result<PushReceipt, ClientError> {
        Ok(PushReceipt::new(self.push_call(signed).await?, message_id))
    }

    async fn push_call(&self, signed: pb::SignedMessage) -> Result<pb::PushResponse, ClientError> {
        let request = pb::PushRequest {
            message: Some(signed),
        };
        self.repeat_while_plausible("push", || {
            let mut rpc = self.rpc();
            let request = request.clone();
            async move { rpc.push(request).await }
        })
        .await
    }

    /// Sends queued pushes, then whatever queued meanwhile, until none wait.
    async fn send_pushes(self, mut batch: Vec<Waiting>) {
        let mut slot = SendingSlot {
            pushes: self.pushes.clone(),
            finished: false,
        };
        loop {
            self.send_push_batch(batch).await;
            match self.pushes.next() {
                Some(next) => batch = next,
                None => break,
            }
        }
        // `next` freed the slot.
        slot.finished = true;
    }

    /// One call for the pushes of `batch`: `Push` for one, `PushBatch` for
    /// more, each answered to its waiting caller.
    async fn send_push_batch(&self, mut batch: Vec<Waiting>) {
        if batch.len() == 1
            && let Some(w) = batch.pop()
        {
            let _ = w.reply.send(Answer::Done(self.push_call(w.signed).await));
            return;
        }
        let (messages, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|w| (w.signed, w.reply)).unzip();
        let request = pb::PushBatchRequest { messages };
        let answered = self
            .repeat_while_plausible("push", || {
                let mut rpc = self.rpc();
                let request = request.clone();
                async move { rpc.push_batch(request).await }
            })
            .await;
        let results = match answered {
            Ok(r) if r.results.len() == replies.len() => r.results,
            // A different count: every message goes again on its own.
            Ok(_) => Vec::new(),
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Answer::Done(Err(e.clone())));
                }
                return;
            }
        };
        let mut results = results.into_iter();
        for (signed, reply) in request.messages.into_iter().zip(replies) {
            let answer = match results.next() {
                Some(pb::PushResult {
                    response: Some(r),
                    code: 0,
                    ..
                }) => Answer::Done(Ok(r)),
                Some(r) if r.code != 0 => {
                    let code = tonic::Code::from(r.code);
                    let refused = ClientError::from(tonic::Status::new(code, r.message));
                    // A refused signing key is told by `Push`'s metadata,
                    // which a batch's result does not carry, and a
                    // transient refusal is repeated by `Push`: both go alone.
                    if code == tonic::Code::Unauthenticated || refused.is_transient() {
                        Answer::Alone(Box::new(signed))
                    } else {
                        Answer::Done(Err(refused))
                    }
                }
                _ => Answer::Alone(Box::new(signed)),
            };
            let _ = reply.send(answer);
        }
    }

    /// Runs an idempotent call, repeating it across interruptions and
    /// reconnects while the hub is reachable, for up to `push_retry_for`.
    /// A hub that does not accept connections at all fails it at once.
    async fn repeat_while_plausible<T, F, Fut>(
        &self,
        what: &'static str,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = std::time::Instant::now() + self.live.config.push_retry_for;
        let mut backoff = Duration::from_millis(50);
        loop {
            let generation = self.live.generation();
            // An attempt that gets no answer at all (a connection that went
            // silent) counts as interrupted: the hub is probed, and the
            // call repeated or given up, instead of waiting forever.
            // Not cut to what is left of the window: a window of 0 still
            // means one whole attempt.
            let e = match tokio::time::timeout(ATTEMPT_TIMEOUT, call()).await {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(status)) => ClientError::from(status),
                Err(_) => ClientError::Connect {
                    hub: self.live.config.hub.clone(),
                    reason: format!("no answer to the {what} within {ATTEMPT_TIMEOUT:?}"),
                },
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(e);
            }
            match self.worth_retrying(&e, generation, left).await? {
                NextStep::Retry => {}
                NextStep::HubUnreachable(unreachable) => return Err(unreachable),
                NextStep::GiveUp => return Err(e),
            }
            tracing::debug!(error = %e, what, "call interrupted; repeating it");
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Signs and pushes many drafts in one call; one result per draft, in
    /// order. Each is appended exactly as by [`Client::push`].
    pub async fn push_batch(
        &self,
        drafts: Vec<Draft>,
    ) -> Result<Vec<Result<PushReceipt, ClientError>>, ClientError> {
        let signed = drafts
            .into_iter()
            .map(|d| self.sign(d))
            .collect::<Result<Vec<_>, _>>()?;
        self.push_signed_batch(signed).await
    }

    /// Pushes already signed messages in one call (safe to repeat: message
    /// ids make each idempotent). The outer error is the call's; the inner
    /// ones are each message's.
    pub async fn push_signed_batch(
        &self,
        messages: Vec<pb::SignedMessage>,
    ) -> Result<Vec<Result<PushReceipt, ClientError>>, ClientError> {
        let ids: Vec<String> = messages
            .iter()
            .map(|m| {
                m.message
                    .as_ref()
                    .map(|m| m.message_id.clone())
                    .unwrap_or_default()
            })
            .collect();
        let r = self
            .rpc()
            .push_batch(pb::PushBatchRequest { messages })
            .await?
            .into_inner();
        if r.results.len() != ids.len() {
            return Err(ClientError::Rejected {
                code: tonic::Code::Internal,
                message: format!(
                    "the hub answered {} of {} messages",
                    r.results.len(),
                    ids.len()
                ),
            });
        }
        Ok(r.results
            .into_iter()
            .zip(ids)
            .map(|(result, message_id)| match result.response {
                Some(r) if result.code == 0 => Ok(PushReceipt::new(r, message_id)),
                _ => Err(ClientError::Rejected {
                    code: tonic::Code::from(result.code),
                    message: result.message,
                }),
            })
            .collect())
    }

    /// A page of this client's inbox after `after` (0 = from the start).
    pub async fn pull(&self, after: u64, limit: u32) -> Result<Page, ClientError> {
        let r = self
            .rpc()
            .pull(pb::PullRequest {
                inbox: String::new(),
                after,
                limit,
            })
            .await?
            .into_inner();
        let (entries, failed) = self.verify_deliveries(r.deliveries).await;
        if let Some(e) = failed {
            return Err(e);
        }
        if self.verify_inclusion {
            self.prove_included(&entries.iter().collect::<Vec<_>>())
                .await?;
        }
        Ok(Page {
            entries,
            head: r.head,
        })
    }

    /// One entry by position, if this client may see it.
    pub async fn get_entry(&self, channel: &str, seq: u64) -> Result<VerifiedEntry, ClientError> {
        let r = self
            .rpc()
            .get_entry(pb::GetEntryRequest {
                channel: channel.to_string(),
                seq,
            })
            .await?
            .into_inner();
        let entry = self
            .verify_delivery(pb::Delivery {
                entry: r.entry,
                leaf_hash: r.leaf_hash,
                cursor: 0,
                ..Default::default()
            })
            .await?;
        if self.verify_inclusion {
            self.prove_included(&[&entry]).await?;
        }
        Ok(entry)
    }

    /// Proves entries are in their channels as of verified checkpoints:
    /// one checkpoint and one batch of proofs per channel.
    pub async fn prove_included(&self, entries: &[&VerifiedEntry]) -> Result<(), ClientError> {
        let pins: Vec<pb::EntryPin> = entries.iter().map(|e| e.pin()).collect();
        self.prove_pins(&pins).await
    }

    /// [`Client::prove_included`] by position and leaf hash: one
    /// multiproof per channel (per `MAX_LEAVES_PER_CALL` entries).
    async fn prove_pins(&self, pins: &[pb::EntryPin]) -> Result<(), ClientError> {
        let mut by_channel: std::collections::BTreeMap<&str, Vec<(u64, tongbao_proto::Hash)>> =
            Default::default();
        for e in pins {
            let leaf = e
                .leaf_hash
                .as_slice()
                .try_into()
                .map_err(|_| ClientError::Integrity {
                    channel: e.channel.clone(),
                    seq: e.seq,
                    reason: format!("leaf hash of {} bytes, not 32", e.leaf_hash.len()),
                })?;
            by_channel
                .entry(e.channel.as_str())
                .or_default()
                .push((e.seq, leaf));
        }
        for (channel, mut leaves) in by_channel {
            // A multiproof takes each position once, in order.
            leaves.sort_unstable();
            leaves.dedup();
            if let Some(w) = leaves
                .windows(2)
                .find(|w| matches!(w, [a, b] if a.0 == b.0))
            {
                return Err(ClientError::Integrity {
                    channel: channel.to_string(),
                    seq: w.first().map_or(0, |e| e.0),
                    reason: "two different leaf hashes for one position".into(),
                });
            }
            let cp = self.checkpoint(channel).await?;
            for chunk in leaves.chunks(tongbao_proto::merkle::MAX_LEAVES_PER_CALL) {
                let r = self
                    .log()
                    .get_inclusion_proofs(pb::GetInclusionProofsRequest {
                        channel: channel.to_string(),
                        seqs: chunk.iter().map(|e| e.0).collect(),
                        tree_size: cp.size,
                        multiproof: true,
                    })
                    .await?
                    .into_inner();
                let (first, last) = match (chunk.first(), chunk.last()) {
                    (Some(f), Some(l)) => (f.0, l.0),
                    _ => continue,
                };
                let fail = |why: String| ClientError::Integrity {
                    channel: channel.to_string(),
                    seq: first,
                    reason: format!(
                        "not included in the verified checkpoint of size {} (one multiproof for {} entries, seqs {first}..={last}): {why}",
                        cp.size,
                        chunk.len(),
                    ),
                };
                let to_hashes = |v: Vec<Vec<u8>>| {
                    v.into_iter()
                        .map(tongbao_proto::Hash::try_from)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| fail("a proof hash is not 32 bytes".into()))
                };
                // A hub without multiproofs ignores the flag and answers
                // one audit path per seq: check those instead.
                if r.multiproof.is_empty() && r.proofs.len() == chunk.len() {
                    for (&(seq, leaf), p) in chunk.iter().zip(r.proofs) {
                        if p.seq != seq {
                            return Err(fail(format!("asked for seq {seq}, got {}", p.seq)));
                        }
                        check_record(&to_hashes(p.proof)?, cp.size, &cp.root, seq, &leaf)
                            .map_err(|e| fail(format!("seq {seq}: {e}")))?;
                    }
                    continue;
                }
                check_records(&to_hashes(r.multiproof)?, cp.size, &cp.root, chunk)
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Verifies a delivery, fetching the registry again once if the
    /// signature names a key not seen yet (a rotation).
    pub async fn verify_delivery(&self, d: pb::Delivery) -> Result<VerifiedEntry, ClientError> {
        let p = self.prepare_delivery(d).await?;
        verify_entry(p.entry, &p.leaf_hash, p.cursor, &p.key)
    }

    /// Verifies deliveries in order, every entry's key first, then the
    /// signatures in one batch. Returns the entries before the first that
    /// fails, and why it fails.
    async fn verify_deliveries(
        &self,
        deliveries: Vec<pb::Delivery>,
    ) -> (Vec<VerifiedEntry>, Option<ClientError>) {
        let mut claimed = Vec::with_capacity(deliveries.len());
        let mut unprepared = None;
        for d in deliveries {
            match self.prepare_delivery(d).await {
                Ok(c) => claimed.push(c),
                Err(e) => {
                    unprepared = Some(e);
                    break;
                }
            }
        }
        let (verified, failed) = crate::verify::verify_entries(claimed);
        (verified, failed.or(unprepared))
    }

    /// Every check of [`Client::verify_delivery`] before the signature and
    /// leaf hash: the decoded entry with the registered key it must verify
    /// under.
    async fn prepare_delivery(&self, mut d: pb::Delivery) -> Result<Claimed, ClientError> {
        let integrity = |reason: String| ClientError::Integrity {
            channel: String::new(),
            seq: 0,
            reason,
        };
        let entry = d
            .take_entry()
            .map_err(|e| {
                integrity(format!(
                    "delivery at cursor {}: undecodable entry: {e}",
                    d.cursor
                ))
            })?
            .ok_or_else(|| integrity(format!("delivery at cursor {} without entry", d.cursor)))?;
        let (unit, key_id) = signing_key_of(&entry).ok_or_else(|| ClientError::Integrity {
            channel: entry.channel.clone(),
            seq: entry.seq,
            reason: "entry without signature".into(),
        })?;
        let mut found = self.registered_key(unit, key_id);
        if found.is_none() {
            self.refresh_keys().await?;
            found = self.registered_key(unit, key_id);
        }
        let (key, validity) = found.ok_or_else(|| ClientError::Integrity {
            channel: entry.channel.clone(),
            seq: entry.seq,
            reason: format!(
                "signed with key {key_id}, which the registry does not list for unit {unit}"
            ),
        })?;
        if let Some(message) = entry.message.as_ref().and_then(|m| m.message.as_ref())
            && let Err(e) = validity.check_message(unit, key_id, message)
        {
            return Err(ClientError::Integrity {
                channel: entry.channel.clone(),
                seq: entry.seq,
                reason: format!(
                    "signed outside its key's interval: {}",
                    describe_validity(&e)
                ),
            });
        }
        Ok(Claimed {
            entry,
            leaf_hash: d.leaf_hash,
            cursor: d.cursor,
            key,
        })
    }

    /// Acknowledges entries with one receipt signed by this unit's key. The
    /// hub appends it to this unit's channel; acknowledging an entry again
    /// changes nothing.
    pub async fn ack(&self, entries: &[&VerifiedEntry]) -> Result<AckOutcome, ClientError> {
        self.ack_pins(entries.iter().map(|e| e.pin()).collect())
            .await
    }

    /// [`Client::ack`] by position and leaf hash.
    pub async fn ack_pins(&self, pins: Vec<pb::EntryPin>) -> Result<AckOutcome, ClientError> {
        self.ack_signed(self.sign_receipt(pins)?).await
    }

    /// Sends an already signed receipt; repeating it changes nothing.
    /// Interrupted calls are repeated like pushes.
    pub async fn ack_signed(&self, signed: pb::SignedMessage) -> Result<AckOutcome, ClientError> {
        let request = pb::AcknowledgeRequest {
            receipt: Some(signed),
        };
        let r = self
            .repeat_while_plausible("acknowledge", || {
                let mut rpc = self.rpc();
                let request = request.clone();
                async move { rpc.acknowledge(request).await }
            })
            .await?;
        Ok(AckOutcome {
            receipt: (!r.channel.is_empty()).then_some((r.channel, r.seq, r.leaf_hash)),
            newly_acknowledged: r.newly_acknowledged,
            earlier: r
                .earlier
                .into_iter()
                .filter_map(|e| Some((e.entry?, e.receipt?)))
                .collect(),
        })
    }

    /// A signed receipt for pinned entries, addressed to their senders.
    pub fn sign_receipt(&self, pins: Vec<pb::EntryPin>) -> Result<pb::SignedMessage, ClientError> {
        let senders: std::collections::BTreeSet<String> =
            pins.iter().map(|p| p.channel.clone()).collect();
        let draft = Draft::new(
            pb::Kind::Receipt,
            format!("receipt for {} entries", pins.len()),
            Vec::new(),
        )
        .to_units(senders);
        let (signer, unit) = self.signing_identity()?;
        let mut message = draft.into_message(unit, new_message_id(), now_micros());
        message.acknowledgement = Some(pb::Acknowledgement { entries: pins });
        Ok(signer.sign_message(message))
    }

    /// Runs `handler` on every entry of the inbox from `after`, live, and
    /// acknowledges each entry only after the handler returned `Ok`
    /// (receipts are batched: up to 256 entries, or whatever arrived
    /// within 50 ms). Stops at the first handler error, leaving that entry
    /// unacknowledged, or when the subscription fails for good.
    pub async fn process<F, Fut, E>(
        &self,
        after: u64,
        mut handler: F,
    ) -> Result<(), ProcessError<E>>
    where
        F: FnMut(VerifiedEntry) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
    {
        use futures::StreamExt;
        const BATCH: usize = 256;
        const LINGER: Duration = Duration::from_millis(50);
        let mut stream = Box::pin(self.subscribe(after));
        let mut pending: Vec<pb::EntryPin> = Vec::new();
        loop {
            let next = if pending.is_empty() {
                stream.next().await
            } else {
                match tokio::time::timeout(LINGER, stream.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        self.ack_pins(std::mem::take(&mut pending)).await?;
                        continue;
                    }
                }
            };
            let Some(entry) = next else {
                if !pending.is_empty() {
                    self.ack_pins(pending).await?;
                }
                return Ok(());
            };
            let entry = entry?;
            let pin = entry.pin();
            if let Err(error) = handler(entry).await {
                if !pending.is_empty() {
                    self.ack_pins(std::mem::take(&mut pending)).await?;
                }
                return Err(ProcessError::Handler {
                    channel: pin.channel,
                    seq: pin.seq,
                    error,
                });
            }
            pending.push(pin);
            if pending.len() >= BATCH {
                self.ack_pins(std::mem::take(&mut pending)).await?;
            }
        }
    }

    /// For an office: entries of its mechanism with every recipient's state.
    pub async fn audit_deliveries(
        &self,
        request: pb::ListDeliveriesRequest,
    ) -> Result<pb::ListDeliveriesResponse, ClientError> {
        Ok(self.audit().list_deliveries(request).await?.into_inner())
    }

    /// For an office: per-unit counts and acknowledgement times.
    pub async fn audit_units(
        &self,
        request: pb::UnitSummaryRequest,
    ) -> Result<pb::UnitSummaryResponse, ClientError> {
        Ok(self.audit().unit_summary(request).await?.into_inner())
    }

    /// Checks an answer shown by the audit: the receipt (or exception
    /// feedback) verifies under the recipient's registered key, sits in the
    /// recipient's channel, and names exactly the audited entry's leaf hash.
    pub async fn verify_answer(
        &self,
        audited: &pb::AuditedEntry,
        delivery: &pb::RecipientDelivery,
    ) -> Result<VerifiedEntry, ClientError> {
        let entry = delivery
            .answer
            .clone()
            .ok_or_else(|| ClientError::Integrity {
                channel: audited.channel.clone(),
                seq: audited.seq,
                reason: format!("no answer from {} to verify", delivery.recipient),
            })?;
        let answer = self
            .verify_delivery(pb::Delivery {
                entry: Some(entry),
                leaf_hash: delivery.answer_leaf_hash.clone(),
                cursor: 0,
                ..Default::default()
            })
            .await?;
        let pin = pb::EntryPin {
            channel: audited.channel.clone(),
            seq: audited.seq,
            leaf_hash: audited.leaf_hash.clone(),
        };
        if answer.channel() != delivery.recipient
            || !crate::verify::answers_pin(answer.message(), &pin)
        {
            return Err(ClientError::Integrity {
                channel: answer.channel().to_string(),
                seq: answer.seq(),
                reason: format!(
                    "this answer of {} does not name entry {}:{} with leaf hash {}",
                    delivery.recipient,
                    pin.channel,
                    pin.seq,
                    hex::encode(&pin.leaf_hash)
                ),
            });
        }
        Ok(answer)
    }

    /// The hub's checkpoint key: from the config, else pinned in the trust
    /// state on first use.
    async fn hub_verifier(&self, trust: &mut TrustState) -> Result<NoteVerifier, ClientError> {
        let vkey = match (&self.hub_key, &trust.hub_key) {
            (Some(k), _) | (None, Some(k)) => k.clone(),
            (None, None) => {
                let k = self
                    .log()
                    .get_log_key(pb::GetLogKeyRequest {})
                    .await?
                    .into_inner()
                    .vkey;
                trust.hub_key = Some(k.clone());
                trust.save_off_runtime(&self.trust_path).await?;
                k
            }
        };
        NoteVerifier::from_vkey(&vkey).map_err(|e| ClientError::Checkpoint {
            channel: String::new(),
            reason: format!("hub key {vkey:?}: {e}"),
        })
    }

    /// The latest checkpoint of a channel, verified: signed by the hub key
    /// and proven to extend the last checkpoint this client verified (kept
    /// in the trust state). A rollback or fork is refused and the two
    /// signed checkpoints are kept as evidence.
    pub async fn checkpoint(&self, channel: &str) -> Result<VerifiedCheckpoint, ClientError> {
        let note = self
            .log()
            .get_checkpoint(pb::GetCheckpointRequest {
                channel: channel.to_string(),
            })
            .await?
            .into_inner()
            .note;
        self.accept_checkpoint(channel, note).await
    }

    async fn accept_checkpoint(
        &self,
        channel: &str,
        note: String,
    ) -> Result<VerifiedCheckpoint, ClientError> {
        let refuse = |reason: String| ClientError::Checkpoint {
            channel: channel.to_string(),
            reason,
        };
        let mut trust = self.trust.lock().await;
        let verifier = self.hub_verifier(&mut trust).await?;
        let (cp, _) = open_checkpoint(&note, &verifier, &[]).map_err(|e| refuse(e.to_string()))?;
        let origin = format!("{}/{channel}", verifier.name());
        if cp.origin != origin {
            return Err(refuse(format!(
                "origin {:?}, expected {origin:?}",
                cp.origin
            )));
        }
        let verified = VerifiedCheckpoint {
            channel: channel.to_string(),
            origin: cp.origin.clone(),
            size: cp.size,
            root: cp.root,
            note: note.clone(),
        };
        let Some(trusted) = trust.trusted(channel).cloned() else {
            trust.remember(channel, cp.size, &cp.root, &note);
            trust.save_off_runtime(&self.trust_path).await?;
            return Ok(verified);
        };
        use base64::Engine;
        let trusted_root: tongbao_proto::Hash = base64::engine::general_purpose::STANDARD
            .decode(&trusted.root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| refuse("the trust state holds a malformed root".into()))?;
        let evidence = || {
            keep_evidence(&self.trust_path, channel, &trusted.note, &note)
                .display()
                .to_string()
        };
        if cp.size < trusted.size {
            return Err(ClientError::Rollback {
                channel: channel.to_string(),
                trusted_size: trusted.size,
                served_size: cp.size,
                evidence: evidence(),
            });
        }
        let consistent = if cp.size == trusted.size {
            cp.root == trusted_root
        } else {
            let proof = self
                .log()
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    channel: channel.to_string(),
                    old_size: trusted.size,
                    new_size: cp.size,
                })
                .await?
                .into_inner()
                .proof;
            let proof: Option<Vec<tongbao_proto::Hash>> =
                proof.into_iter().map(|h| h.try_into().ok()).collect();
            proof.is_some_and(|p| {
                check_tree(&p, cp.size, &cp.root, trusted.size, &trusted_root).is_ok()
            })
        };
        if !consistent {
            return Err(ClientError::Fork {
                channel: channel.to_string(),
                trusted_size: trusted.size,
                served_size: cp.size,
                evidence: evidence(),
            });
        }
        if cp.size > trusted.size {
            trust.remember(channel, cp.size, &cp.root, &note);
            trust.save_off_runtime(&self.trust_path).await?;
        }
        Ok(verified)
    }

    /// Cosigns the latest checkpoint of this unit's own channel, after
    /// verifying it extends every checkpoint of the channel this client saw:
    /// from then on, even the hub's operator cannot rewrite the unit's
    /// history without the unit's key. Returns the note with the
    /// cosignatures it now carries.
    pub async fn cosign_own_channel(&self) -> Result<String, ClientError> {
        let (signer, unit) = self.signing_identity()?;
        let cp = self.checkpoint(unit).await?;
        let checkpoint =
            tongbao_proto::checkpoint::Checkpoint::new(cp.origin.clone(), cp.size, cp.root);
        let cosigner = tongbao_proto::checkpoint::Cosigner::new(unit, &signer).map_err(|e| {
            ClientError::Checkpoint {
                channel: unit.to_string(),
                reason: e.to_string(),
            }
        })?;
        let seconds = u64::try_from(now_micros() / 1_000_000).unwrap_or(0);
        let line = cosigner
            .cosign(&checkpoint, seconds)
            .map_err(|e| ClientError::Checkpoint {
                channel: unit.to_string(),
                reason: e.to_string(),
            })?;
        Ok(self
            .log()
            .add_cosignature(pb::AddCosignatureRequest {
                channel: unit.to_string(),
                size: cp.size,
                cosignature: line,
            })
            .await?
            .into_inner()
            .note)
    }

    /// The hub key this client checks checkpoints with (pinning it if new).
    pub async fn pinned_hub_key(&self) -> Result<String, ClientError> {
        let mut trust = self.trust.lock().await;
        Ok(self.hub_verifier(&mut trust).await?.to_vkey())
    }

    /// The hub-signed registry of signing keys, checked against the hub key.
    pub async fn key_registry(&self) -> Result<String, ClientError> {
        let note = self
            .log()
            .get_key_registry(pb::GetKeyRegistryRequest {})
            .await?
            .into_inner()
            .note;
        let mut trust = self.trust.lock().await;
        let hub = self.hub_verifier(&mut trust).await?;
        tongbao_proto::checkpoint::open_note(&note, &[hub]).map_err(|e| {
            ClientError::Checkpoint {
                channel: String::new(),
                reason: format!("key registry: {e}"),
            }
        })?;
        Ok(note)
    }

    /// An inclusion proof for a given tree size.
    pub(crate) async fn inclusion_proof(
        &self,
        channel: &str,
        seq: u64,
        tree_size: u64,
    ) -> Result<Vec<tongbao_proto::Hash>, ClientError> {
        let r = self
            .log()
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                channel: channel.to_string(),
                seq,
                tree_size,
            })
            .await?
            .into_inner();
        let proof: Option<Vec<tongbao_proto::Hash>> =
            r.proof.into_iter().map(|h| h.try_into().ok()).collect();
        proof.ok_or_else(|| ClientError::Integrity {
            channel: channel.to_string(),
            seq,
            reason: "malformed inclusion proof".into(),
        })
    }

    /// Proves that an entry is in its channel as of a verified checkpoint:
    /// nobody, the hub's operator included, can later drop or alter it
    /// without this client (or anyone holding the checkpoint) noticing.
    pub async fn prove_inclusion(
        &self,
        entry: &VerifiedEntry,
    ) -> Result<VerifiedCheckpoint, ClientError> {
        let cp = self.checkpoint(entry.channel()).await?;
        let fail = |reason: String| ClientError::Integrity {
            channel: entry.channel().to_string(),
            seq: entry.seq(),
            reason,
        };
        if entry.seq() >= cp.size {
            return Err(fail(format!(
                "not yet covered by the channel's checkpoint (size {}); retry in a second",
                cp.size
            )));
        }
        let proof = self
            .inclusion_proof(entry.channel(), entry.seq(), cp.size)
            .await?;
        check_record(&proof, cp.size, &cp.root, entry.seq(), &entry.leaf_hash).map_err(|e| {
            fail(format!(
                "not included in the checkpoint of size {}: {e}",
                cp.size
            ))
        })?;
        Ok(cp)
    }

    /// A unit's public key by id, with the interval it may sign in, as the
    /// last registry read lists it.
    fn registered_key(
        &self,
        unit: &str,
        key_id: &str,
    ) -> Option<(Arc<[u8]>, tongbao_proto::keys::KeyValidity)> {
        self.keys
            .read()
            .ok()
            .and_then(|k| k.lookup(unit, key_id).map(|(key, v)| (key.clone(), v)))
    }

    /// This client's inbox from `after`, then live. Reconnects with backoff
    /// and resumes from the last delivered cursor, so every entry arrives
    /// exactly once and in order. Ends with an error only when retrying
    /// cannot help (refused certificate, permission, failed verification).
    pub fn subscribe(
        &self,
        after: u64,
    ) -> impl Stream<Item = Result<VerifiedEntry, ClientError>> + Send + 'static {
        let (tx, rx) = mpsc::channel(64);
        let client = self.clone();
        tokio::spawn(async move { client.run_subscription(after, tx).await });
        ReceiverStream::new(rx)
    }

    /// Starts proving the inclusion of the entries handed over so far,
    /// beside the subscription: deliveries keep flowing while it runs.
    fn start_proof(&self, backlog: &mut InclusionBacklog) -> InclusionProof {
        let entries = std::mem::take(backlog);
        let client = self.clone();
        tokio::spawn(async move {
            let proved = client.prove_pins(&entries.entries).await;
            (proved, entries)
        })
    }

    /// Whether a subscription may resume after `status`; if not, the
    /// reason has been handed to the subscriber.
    async fn may_resume(
        &self,
        e: ClientError,
        generation: u64,
        tx: &mpsc::Sender<Result<VerifiedEntry, ClientError>>,
    ) -> bool {
        let last = match self.worth_retrying(&e, generation, PROBE_WITHIN).await {
            Ok(NextStep::Retry | NextStep::HubUnreachable(_)) => {
                tracing::debug!(error = %e, "subscription interrupted; resuming");
                return true;
            }
            Ok(NextStep::GiveUp) => e,
            Err(refused) => refused,
        };
        let _ = tx.send(Err(last)).await;
        false
    }

    async fn run_subscription(
        self,
        mut cursor: u64,
        tx: mpsc::Sender<Result<VerifiedEntry, ClientError>>,
    ) {
        let mut backoff = Duration::from_millis(100);
        let mut unchecked = InclusionBacklog::default();
        let check_every = InclusionBacklog::check_every();
        // At most one inclusion check runs at a time; it outlives reconnects.
        let mut proving: Option<InclusionProof> = None;
        loop {
            let generation = self.live.generation();
            let opened = self
                .rpc()
                .subscribe(pb::SubscribeRequest {
                    inbox: String::new(),
                    after: cursor,
                })
                .await;
            match opened {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    // The end of the stream or its error, met while taking
                    // what had already arrived; handled after those.
                    let mut held = None;
                    loop {
                        let check_due = unchecked.deadline(check_every);
                        let next = if let Some(h) = held.take() {
                            h
                        } else {
                            tokio::select! {
                                n = stream.message() => n,
                                _ = tx.closed() => return,
                                done = async {
                                    match proving.as_mut() {
                                        Some(p) => p.await,
                                        None => std::future::pending().await,
                                    }
                                } => {
                                    proving = None;
                                    let failed = match done {
                                        Ok((Ok(()), _)) => continue,
                                        Ok((Err(e), entries)) => {
                                            // A connection lost mid-proof proves nothing either
                                            // way: the entries wait for the next attempt.
                                            if e.is_transient() {
                                                unchecked.restore(entries);
                                            }
                                            e
                                        }
                                        Err(e) => ClientError::Integrity {
                                            channel: String::new(),
                                            seq: 0,
                                            reason: format!("the inclusion check stopped: {e}"),
                                        },
                                    };
                                    if self.may_resume(failed, generation, &tx).await {
                                        break;
                                    }
                                    return;
                                }
                                _ = tokio::time::sleep_until(check_due),
                                    if !unchecked.is_empty() && proving.is_none() =>
                                {
                                    proving = Some(self.start_proof(&mut unchecked));
                                    continue;
                                }
                            }
                        };
                        match next {
                            Ok(Some(d)) => {
                                backoff = Duration::from_millis(100);
                                // What has arrived behind it is verified with
                                // it, the signatures in one batch.
                                let mut batch = vec![d];
                                while batch.len() < SUBSCRIPTION_BATCH {
                                    match stream.message().now_or_never() {
                                        Some(Ok(Some(d))) => batch.push(d),
                                        Some(end) => {
                                            held = Some(end);
                                            break;
                                        }
                                        None => break,
                                    }
                                }
                                skip_delivered(&mut batch, cursor);
                                let (verified, failed) = self.verify_deliveries(batch).await;
                                for v in verified {
                                    cursor = v.cursor;
                                    if self.verify_inclusion {
                                        unchecked.push(v.pin());
                                    }
                                    if tx.send(Ok(v)).await.is_err() {
                                        return;
                                    }
                                }
                                if let Some(e) = failed {
                                    let _ = tx.send(Err(e)).await;
                                    return;
                                }
                                if unchecked.due(check_every) && proving.is_none() {
                                    proving = Some(self.start_proof(&mut unchecked));
                                }
                            }
                            Ok(None) => break,
                            Err(status) => {
                                if !self.may_resume(status.into(), generation, &tx).await {
                                    return;
                                }
                                break;
                            }
                        }
                    }
                }
                Err(status) => {
                    if !self.may_resume(status.into(), generation, &tx).await {
                        return;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tx.closed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Drops the deliveries at or below a position already handed over (the
/// overlap of a reconnect, or a hub repeating itself), each compared with
/// the last one kept, so that none is handed over twice or out of order.
fn skip_delivered(batch: &mut Vec<pb::Delivery>, after: u64) {
    let mut last = after;
    batch.retain(|d| {
        let fresh = d.cursor > last;
        if fresh {
            last = d.cursor;
        }
        fresh
    });
}

/// The same content signed again with `current` after the hub refused
/// `signed` for its key's interval, stamped no earlier than the interval
/// the refusal names; None when signing again cannot help (the refused key
/// is still the current one and the stamp is not the problem).
pub(crate) fn resign_after_refusal(
    signed: &pb::SignedMessage,
    refused: &ClientError,
    current: &SigningKey,
    now: i64,
) -> Option<pb::SignedMessage> {
    let ClientError::SigningKeyRefused {
        refusal,
        key_id,
        boundary_micros,
        ..
    } = refused
    else {
        return None;
    };
    let signed_with = signed.signature.as_ref().map(|s| s.key_id.as_str())?;
    if signed_with != key_id {
        return None;
    }
    let mut content = signed.message.clone()?;
    let same_key = current.key_id() == key_id;
    match refusal {
        crate::KeyRefusal::Retired if same_key => return None,
        crate::KeyRefusal::Retired => content.created_micros = content.created_micros.max(now),
        crate::KeyRefusal::NotYetValid => {
            // A clock behind the hub's: stamp the message from the key's start.
            let stamp = content.created_micros.max(now).max(*boundary_micros);
            if same_key && stamp == content.created_micros {
                return None;
            }
            content.created_micros = stamp;
        }
    }
    Some(current.sign_message(content))
}

/// A key-interval refusal with readable times.
pub(crate) fn describe_validity(e: &tongbao_proto::keys::ValidityError) -> String {
    use tongbao_proto::keys::ValidityError;
    match e {
        ValidityError::NotYetValid {
            unit,
            key_id,
            from_micros,
        } => format!(
            "key {key_id} of {unit} is valid only from {}",
            crate::format_micros(*from_micros)
        ),
        ValidityError::Retired {
            unit,
            key_id,
            until_micros,
        } => format!(
            "key {key_id} of {unit} was retired at {}",
            crate::format_micros(*until_micros)
        ),
    }
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
    use crate::KeyRefusal;

    #[test]
    fn a_position_repeated_or_out_of_order_is_not_handed_over() {
        let at = |cursors: &[u64]| -> Vec<pb::Delivery> {
            cursors
                .iter()
                .map(|&cursor| pb::Delivery {
                    cursor,
                    ..Default::default()
                })
                .collect()
        };
        let kept = |mut batch: Vec<pb::Delivery>, after| {
            skip_delivered(&mut batch, after);
            batch.iter().map(|d| d.cursor).collect::<Vec<_>>()
        };
        assert_eq!(kept(at(&[5, 6, 5, 7, 3]), 4), [5, 6, 7]);
        assert_eq!(kept(at(&[5, 6, 5, 7, 3]), 6), [7]);
        assert_eq!(kept(at(&[2, 3]), 3), Vec::<u64>::new());
    }

    #[test]
    fn subscriptions_wait_for_their_inclusion_checks_apart() {
        let waits: std::collections::BTreeSet<Duration> =
            (0..32).map(|_| InclusionBacklog::check_every()).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= INCLUSION_CHECK_EVERY.mul_f64(0.75) && *w <= INCLUSION_CHECK_EVERY),
            "{waits:?}"
        );
        // 32 draws of 256 values: all alike would mean no spreading at all.
        assert!(waits.len() > 1, "{waits:?}");
    }

    fn refused(refusal: KeyRefusal, key: &SigningKey, boundary: i64) -> ClientError {
        ClientError::SigningKeyRefused {
            refusal,
            key_id: key.key_id().to_string(),
            boundary_micros: boundary,
            message: String::new(),
        }
    }

    fn message(created: i64) -> pb::Message {
        pb::Message {
            message_id: "m".into(),
            sender: "tax".into(),
            created_micros: created,
            ..Default::default()
        }
    }

    #[test]
    fn a_retired_key_is_replaced_by_the_current_one_never_by_itself()
    -> Result<(), Box<dyn std::error::Error>> {
        let old = SigningKey::generate()?;
        let new = SigningKey::generate()?;
        let signed = old.sign_message(message(100));
        let why = refused(KeyRefusal::Retired, &old, 150);
        let again = resign_after_refusal(&signed, &why, &new, 200).ok_or("not re-signed")?;
        assert_eq!(
            again.signature.as_ref().map(|s| s.key_id.as_str()),
            Some(new.key_id())
        );
        let content = again.message.ok_or("no content")?;
        assert_eq!(
            (content.message_id.as_str(), content.created_micros),
            ("m", 200)
        );
        // Still the refused key: signing again cannot help.
        assert!(resign_after_refusal(&signed, &why, &old, 200).is_none());
        // A refusal about another key says nothing about this message.
        let other = refused(KeyRefusal::Retired, &new, 150);
        assert!(resign_after_refusal(&signed, &other, &new, 200).is_none());
        Ok(())
    }

    #[test]
    fn a_key_not_yet_valid_restamps_from_its_start() -> Result<(), Box<dyn std::error::Error>> {
        let key = SigningKey::generate()?;
        let signed = key.sign_message(message(100));
        let why = refused(KeyRefusal::NotYetValid, &key, 300);
        let again = resign_after_refusal(&signed, &why, &key, 200).ok_or("not re-signed")?;
        assert_eq!(again.message.map(|m| m.created_micros), Some(300));
        // Already stamped at or after the start: the hub's clock is the problem.
        let late = key.sign_message(message(300));
        assert!(resign_after_refusal(&late, &why, &key, 200).is_none());
        Ok(())
    }
}
