//! gRPC services. This is the only layer that speaks tonic: it
//! authenticates the caller from its certificate, calls the domain modules
//! and maps their errors to statuses an engineer can act on.

mod access;
mod access_targets;
mod acknowledge;
mod admin;
mod audit;
mod backup;
mod exchange;
mod log_service;
mod organizations;
mod overdue;
mod push;
mod read;
mod refusals;
mod standby;
mod tasks;
mod workflow;

pub use access::AccessLayer;
pub use admin::{AdminService, DirectoryService, appended_at};
pub use audit::AuditService;
pub use exchange::ExchangeService;
pub use log_service::LogService;
pub use overdue::unanswered_overdue;
pub use refusals::{RefusalsLayer, RequestLimits};
pub use standby::{SERVED_ON_STANDBY, StandbyLayer};
pub use workflow::WorkflowService;

use crate::appender::{AppendError, Appender};
use crate::config::{AckDeadlines, Limits};
use crate::registry::Registry;
use crate::store::{Store, StoreError};
use crate::tls::peer_principal;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;
use tongbao_proto::identity::Principal;
use tonic::{Request, Status};

use crate::inboxes::InboxWatch;

/// What every service handler shares.
pub struct HubState {
    pub store: Arc<dyn Store>,
    pub registry: Arc<RwLock<Registry>>,
    pub appender: Appender,
    pub inboxes: Arc<InboxWatch>,
    pub limits: Limits,
    pub deadlines: AckDeadlines,
    /// Open `Subscribe` streams per party, capped.
    pub subscriptions: crate::admission::Subscriptions,
    pub logs: Arc<crate::channel_log::Logs>,
    pub shutdown: watch::Receiver<bool>,
    /// The mechanisms' workflow state (meetings, joint notices, liaisons).
    pub workflows: Arc<crate::workflow::Workflows>,
    /// The live TLS material and open connections (reload, close).
    pub tls: Arc<crate::tls::TlsReloader>,
    /// Durable record of every admin action.
    pub admin_audit: Arc<crate::admin_audit::AdminAudit>,
    /// Where the CA index lives (the config's directory).
    pub pki_dir: std::path::PathBuf,
    /// Verifies pushed messages' signatures in batches.
    pub verifier: crate::verifier::Verifier,
    /// Runs audits, statistics and case queries away from the exchange.
    pub heavy: crate::heavy::HeavyPool,
    /// The registered operators and their roles (`[[operators]]`).
    pub operators: crate::roles::Operators,
    /// What `Admin/Backup` copies besides the store.
    pub backup: crate::backup::BackupSource,
    /// Counters the handlers move (pushes by outcome); see `crate::metrics`.
    pub metrics: Arc<crate::metrics::HubMetrics>,
    /// Callers' parties by certificate, parsed once per certificate.
    pub principals: crate::certificate_cache::CertificateCache<Principal>,
    /// A replica's standby: it serves reads only (`service/standby.rs`).
    pub standby: bool,
    /// A standby's freshness: whether it may serve now (None: a leader).
    pub freshness: Option<Arc<crate::freshness::Freshness>>,
}

impl HubState {
    /// The caller, from its TLS certificate, checked against the registry.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let certs = request.peer_certs().ok_or_else(|| {
            Status::unauthenticated(
                "no client certificate on this connection; connect with mutual TLS",
            )
        })?;
        let leaf = certs.first().ok_or_else(|| {
            Status::unauthenticated(
                "no client certificate on this connection; connect with mutual TLS",
            )
        })?;
        let principal = self
            .principals
            .get_or(leaf.as_ref(), || peer_principal(leaf))
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        // Operators are registered with their roles, not in the store's
        // registry: an operator certificate alone is no one.
        if let Principal::Operator(name) = &principal {
            if self.operators.role(name).is_none() {
                return Err(Status::unauthenticated(
                    crate::roles::RoleError::Unregistered(name.clone()).to_string(),
                ));
            }
            return Ok(principal);
        }
        let registry = self.registry()?;
        if !registry.knows(&principal) {
            return Err(Status::unauthenticated(format!(
                "the certificate names {principal}, which this hub's registry does not know; ask an operator to register it"
            )));
        }
        if let Principal::Unit(id) = &principal
            && registry.unit(id).is_some_and(|u| u.suspended)
        {
            return Err(Status::permission_denied(format!(
                "unit {id} is suspended; ask the mechanism's office or an operator to reinstate it"
            )));
        }
        Ok(principal)
    }

    /// The caller as a unit, for operations only units may perform.
    pub fn authenticate_unit<T>(&self, request: &Request<T>, what: &str) -> Result<String, Status> {
        match self.authenticate(request)? {
            Principal::Unit(id) => Ok(id),
            other => Err(Status::permission_denied(format!(
                "{other} cannot {what}; only member units can"
            ))),
        }
    }

    /// Runs a heavy query on the pool (see [`crate::heavy`]).
    pub async fn heavy<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce() -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        self.heavy.run(what, f).await.map_err(heavy_status)?
    }

    pub fn registry(&self) -> Result<std::sync::RwLockReadGuard<'_, Registry>, Status> {
        crate::fatal::read(&self.registry, "registry").map_err(Status::from)
    }
}

fn heavy_status(e: crate::heavy::HeavyRefusal) -> Status {
    match e {
        crate::heavy::HeavyRefusal::Busy { .. } => Status::resource_exhausted(e.to_string()),
        crate::heavy::HeavyRefusal::Failed { .. } => {
            tracing::error!(error = %e, "heavy query failed");
            Status::internal(e.to_string())
        }
    }
}

/// The one answer for a workflow that does not exist and for one the
/// caller may not see: a different answer would tell any party which ids
/// exist. `seen_by` says who sees it, so an entitled caller can act.
pub(crate) fn not_seen(what: &str, id: &str, seen_by: &str, who: &Principal) -> Status {
    Status::not_found(format!(
        "no {what} {:?} that {who} may see (a {what} is seen by {seen_by})",
        tongbao_proto::echo::shown(id)
    ))
}

pub(crate) fn storage_status(e: StoreError) -> Status {
    tracing::error!(error = %e, "storage error");
    match e {
        StoreError::Poisoned(p) => p.into(),
        StoreError::Corrupt(_) => Status::data_loss(format!(
            "storage error: {e}; report this to the hub's operators"
        )),
        StoreError::Unavailable(_) => Status::unavailable(e.to_string()),
        _ => Status::internal(format!("storage error: {e}")),
    }
}

/// What every appending call answers: the entry's position, once durable.
impl From<crate::appender::Appended> for tongbao_proto::pb::PushResponse {
    fn from(appended: crate::appender::Appended) -> Self {
        Self {
            channel: appended.channel,
            seq: appended.seq,
            leaf_hash: appended.leaf_hash.to_vec(),
            duplicate: appended.duplicate,
            recipients: appended.recipients,
        }
    }
}

impl From<AppendError> for Status {
    fn from(e: AppendError) -> Self {
        if let AppendError::Storage(f) = &e
            && let Some(p) = f.poisoned()
        {
            return p.into();
        }
        match &e {
            AppendError::Audience(_) => Status::invalid_argument(e.to_string()),
            AppendError::IdReused { .. } => Status::already_exists(e.to_string()),
            AppendError::UnknownSender(_) => Status::unauthenticated(e.to_string()),
            AppendError::Storage(_) | AppendError::Closed => Status::unavailable(e.to_string()),
            AppendError::AlreadyAnswered { .. } => Status::failed_precondition(e.to_string()),
        }
    }
}
