//! The client handle: who it is, the connection it calls through, the
//! registry keys it verifies with. What it does is spread over the files
//! of `client/` (and `bundle.rs`, `lifecycle.rs`, `workflow.rs`), each
//! extending [`Client`].

mod acknowledged;
mod audit;
mod behind;
mod connection;
mod inbox;
mod proofs;
mod push;
mod read;
mod retry;
mod subscription;

pub use inbox::{AckOutcome, Page};
pub use proofs::VerifiedCheckpoint;
pub use push::PushReceipt;
pub(crate) use push::position;
pub(crate) use read::hub_read;
pub use subscription::ProcessError;

use crate::push_queue::PushQueue;
use crate::trust::TrustState;
use crate::verify::KeyRing;
use crate::{ClientConfig, ClientError};
use connection::{Live, load_signer, material_fingerprint, open_first, round_from, watch_material};
use std::sync::{Arc, RwLock};
use tongbao_proto::identity::Principal;
use tongbao_proto::keys::SigningKey;
use tongbao_proto::pb::exchange_client::ExchangeClient;
use tongbao_proto::pb::log_client::LogClient;
use tongbao_proto::pb::workflow_client::WorkflowClient;
use tongbao_proto::{now_micros, pb};
use tonic::transport::Channel;

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
    /// Each channel's size as pushes acknowledged it (the behind rule).
    acknowledged: Arc<acknowledged::Acknowledged>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// A fresh message id: time plus randomness, unique without coordination.
pub(crate) fn new_message_id() -> String {
    use ring::rand::SecureRandom;
    let mut r = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut r);
    format!("{}-{}", now_micros(), hex::encode(r))
}

impl Client {
    /// Connects to the first hub of the config that can be used (in the
    /// order listed) with the config's certificate, and loads the signing
    /// key and the registry's public keys.
    pub async fn connect(config: &ClientConfig) -> Result<Self, ClientError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let seen = material_fingerprint(config);
        let signer = load_signer(config)?;
        let hubs = config.hubs();
        let conn = open_first(config, &hubs, round_from(0, hubs.len()), None, Vec::new()).await?;
        let trust = TrustState::load(&config.trust_state)?;
        let live = Arc::new(Live {
            config: config.clone(),
            hubs,
            conn: RwLock::new(Arc::new(conn)),
            signer: RwLock::new(signer),
            seen: std::sync::Mutex::new(seen),
            reloading: tokio::sync::Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
            reloads: std::sync::atomic::AtomicU64::new(0),
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
            acknowledged: Arc::default(),
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
        self.live.reloads.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The URL of the hub (of the config's `hubs`) this client calls now.
    pub fn hub(&self) -> String {
        self.live.conn().url.clone()
    }

    /// The gRPC channel of the connection in use now, for services this
    /// library does not wrap: to the first hub of the config that
    /// answered, or the replica the client failed over to since. Calls
    /// made through it get no failover, no retry and no per-attempt
    /// timeout: a caller that needs them takes a new channel after an
    /// error (this method again), and bounds its own calls.
    pub fn channel(&self) -> Channel {
        self.live.conn().channel.clone()
    }

    fn rpc(&self) -> ExchangeClient<Channel> {
        self.live.conn().rpc.clone()
    }

    fn log(&self) -> LogClient<Channel> {
        self.live.conn().log.clone()
    }

    pub(crate) fn workflow_rpc(&self) -> WorkflowClient<Channel> {
        self.live.conn().workflow.clone()
    }

    /// Whether entries handed over are first proven in a checkpoint.
    pub fn verifies_inclusion(&self) -> bool {
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
        hub_read!(self, rpc.list_units(pb::ListUnitsRequest {})).await
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
