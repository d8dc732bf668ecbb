//! A running hub: opens the store, seeds the registry, starts the appender,
//! the TLS accept loop and the gRPC server, and stops them in order.

use crate::access_log::{AccessLog, AccessRecord, RecordKind};
use crate::admin_audit::{AdminAudit, AdminAuditError};
use crate::admission::{CallTracking, Subscriptions};
use crate::appender::{AppendStats, Appender};
use crate::channel_log::{LogError, Logs, load_key, load_or_create_key};
use crate::config::{ConfigError, ConnectionLimits, HubConfig};
use crate::inboxes::InboxWatch;
use crate::registry::Registry;
use crate::service::{
    AccessLayer, AdminService, AuditService, DirectoryService, ExchangeService, HubState,
    LogService, RefusalsLayer, RequestLimits, StandbyLayer, WorkflowService,
};
use crate::store::{Store, StoreError};
use crate::tls::{ReloadOutcome, TlsError, TlsFiles, TlsReloader, accept_loop};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tongbao_proto::pb::admin_server::AdminServer;
use tongbao_proto::pb::audit_server::AuditServer;
use tongbao_proto::pb::directory_server::DirectoryServer;
use tongbao_proto::pb::exchange_server::ExchangeServer;
use tongbao_proto::pb::log_server::LogServer;
use tongbao_proto::pb::workflow_server::WorkflowServer;
use tonic::server::NamedService;
use tonic::transport::Server;

mod serve;
mod standby;
mod tasks;

pub use serve::{Hangup, serve_until_signal};
pub(crate) use serve::{next_hangup, reload_on_hangup};

/// Why the hub could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("refusing to start: {0}")]
    Log(#[from] LogError),
    #[error("cannot open the workflow state: {0}")]
    Workflow(#[from] crate::workflow::WorkflowRefusal),
    #[error("refusing to start: {0}")]
    AdminAudit(#[from] AdminAuditError),
    #[error("refusing to start: {0}")]
    AccessLog(#[from] crate::access_log::AccessLogError),
    #[error("gRPC server failed: {0}")]
    Server(String),
    #[error("cannot start the signature verifier thread: {0}")]
    Verifier(std::io::Error),
    #[error("cannot start the threads of heavy queries: {0}")]
    HeavyPool(std::io::Error),
    #[error("cannot start the check of every stored entry: {0}")]
    FullCheck(std::io::Error),
    /// Stopped in order after a lock was found poisoned or the stored
    /// data altered (see `fatal`).
    #[error("{0}")]
    Fatal(crate::fatal::Stop),
}

/// Handle of a started hub.
pub struct Hub {
    addr: SocketAddr,
    /// Where `GET /metrics` is served (None when `[metrics]` is off).
    metrics_addr: Option<SocketAddr>,
    stats: Arc<AppendStats>,
    shutdown: watch::Sender<bool>,
    tls: Arc<TlsReloader>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    appender: std::thread::JoinHandle<()>,
    /// The check of every entry stored before the start (`full_check`);
    /// a standby, which serves what the leader checks, runs none.
    full_check: Option<std::thread::JoinHandle<()>>,
    /// Signs the last checkpoints at shutdown.
    logs: Arc<Logs>,
    /// Stopped after the server: its last records are written and signed.
    access_log: Arc<AccessLog>,
    /// Kept so that shutdown can wait for every other holder to let go:
    /// the database is closed (and its lock released) before it returns.
    store: Arc<dyn Store>,
}

impl Hub {
    /// Starts a hub from its configuration; returns once it is listening.
    pub async fn start(config: &HubConfig) -> Result<Self, HubError> {
        Self::start_holding(config, None).await
    }

    /// As [`Hub::start`], on PostgreSQL with the database `lease` a
    /// replica's standby got (None: the store takes it, or refuses).
    pub async fn start_holding(
        config: &HubConfig,
        lease: Option<crate::store::pg_store::Lease>,
    ) -> Result<Self, HubError> {
        Self::start_as(config, Role::Leader(lease)).await
    }

    async fn start_as(config: &HubConfig, role: Role) -> Result<Self, HubError> {
        let standby = matches!(role, Role::Standby(_));
        // Both tonic's client side and rustls helpers may look for a process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let operators = config.operator_roles()?;
        if operators.is_empty() {
            tracing::warn!(
                "hub.toml registers no [[operators]]: every operator certificate is refused"
            );
        }
        for role in crate::roles::Role::ALL {
            let names: Vec<&str> = operators.with_role(role).collect();
            tracing::info!(%role, operators = ?names, "operators registered");
        }
        let data_dir = &config.hub.data_dir;
        let mut phases = StartPhases::new();
        // The store creates the data directory (0700, durably).
        let (store, followed) = match role {
            Role::Leader(lease) => (
                config.store.open_holding(
                    data_dir,
                    config.hub.fsync,
                    config.hub.min_free_mib.saturating_mul(1 << 20),
                    lease,
                )?,
                None,
            ),
            Role::Standby(database) => (config.store.open_standby(data_dir)?, Some(*database)),
        };
        phases.done("store_open");
        let registry = match Registry::load(store.as_ref())? {
            Some(r) if standby => r,
            None if standby => {
                return Err(HubError::Store(StoreError::Format(
                    "no registry stored yet: a standby serves once a leader has started".into(),
                )));
            }
            Some(r) => {
                if Registry::from_seeds(&config.units, &config.mechanisms)
                    .ok()
                    .as_ref()
                    != Some(&r)
                {
                    tracing::warn!(
                        "the [[units]] and [[mechanisms]] of the config differ from the stored registry; \
                         the stored registry is used (the config seeds the first start only)"
                    );
                }
                r
            }
            None => {
                let r = Registry::from_seeds(&config.units, &config.mechanisms)?;
                r.save(store.as_ref())?;
                tracing::info!(
                    units = r.units.len(),
                    mechanisms = r.mechanisms.len(),
                    "registry seeded from config"
                );
                r
            }
        };
        let registry = match standby {
            true => registry,
            false => finish_pending_rotations(store.as_ref(), registry)?,
        };
        let registry = Arc::new(RwLock::new(registry));
        phases.done("registry");
        // A standby's inboxes start empty: its first refresh serves what
        // the stored checkpoints cover.
        let inboxes = Arc::new(match standby {
            true => InboxWatch::default(),
            false => InboxWatch::new(store.inbox_heads()?),
        });
        phases.done("inbox_heads");
        let heads = store.channel_heads()?;
        phases.done("channel_heads");
        let key_path = match &config.hub.checkpoint_key {
            Some(p) => config.resolve(p),
            None => data_dir.join("checkpoint.key"),
        };
        let key = match standby {
            true => load_key(&key_path)?.ok_or_else(|| LogError::Key {
                path: key_path.display().to_string(),
                reason: "missing: a standby never creates the hub's key; copy the leader's \
                         checkpoint key here (mode 0600)"
                    .into(),
            })?,
            false => load_or_create_key(&key_path)?,
        };
        let logs = Arc::new(match standby {
            true => Logs::open_following(store.clone(), key, &config.hub.log_name)?,
            false => Logs::open(store.clone(), key, &config.hub.log_name, &heads)?,
        });
        tracing::info!(
            vkey = %logs.verifier()?.to_vkey(),
            checked_ms = phases.done("channel_checkpoints_and_tails"),
            "every channel matches its checkpoint, and every entry after it its leaf hash"
        );
        let workflows = Arc::new(match standby {
            true => crate::workflow::Workflows::unopened(&store)?,
            false => crate::workflow::Workflows::open(&store)?,
        });
        retire_old_workflow_dir(data_dir);
        phases.done("workflow");
        let (appender, appender_thread) = Appender::start(
            store.clone(),
            registry.clone(),
            inboxes.clone(),
            logs.clone(),
        )?;
        let stats = appender.stats.clone();
        let metrics = Arc::new(crate::metrics::HubMetrics::new(&stats.commits, !standby));

        let tls = TlsReloader::new(
            TlsFiles {
                ca: config.resolve(&config.tls.ca),
                cert: config.resolve(&config.tls.cert),
                key: config.resolve(&config.tls.key),
                crl: config.tls.crl.as_ref().map(|p| config.resolve(p)),
            },
            config.connections.clone(),
        )?;
        // A standby serves what is stored now before it listens, then
        // follows; a start that cannot has bound no port yet, so it can be
        // tried again on the same addresses.
        let following = match followed {
            Some(database) => Some(
                standby::Follower::first_refresh(
                    config, database, &store, &registry, &logs, &inboxes, &tls,
                )
                .await?,
            ),
            None => None,
        };
        let freshness = following.as_ref().map(|f| f.freshness.clone());
        // A standby writes no trail: an earlier version's file waits in the
        // data directory until this replica leads.
        let admin_audit = Arc::new(match standby {
            true => AdminAudit::open_following(store.clone(), data_dir)?,
            false => AdminAudit::open_as(store.clone(), data_dir, config.store.replica_name())?,
        });
        let access_log = AccessLog::open_in(
            &store,
            data_dir,
            &config.access_log,
            load_or_create_key(&key_path)?,
            (&config.hub.log_name, config.store.replica_name()),
        )?;
        phases.done("access_log");
        admin_audit.include_in(access_log.clone());
        let listener = TcpListener::bind(config.hub.listen)
            .await
            .map_err(|source| HubError::Listen {
                addr: config.hub.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| HubError::Listen {
            addr: config.hub.listen,
            source,
        })?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let state = Arc::new(HubState {
            store: store.clone(),
            registry,
            appender,
            inboxes,
            limits: config.limits.clone(),
            deadlines: config.ack_deadlines.clone(),
            subscriptions: Subscriptions::new(config.limits.max_subscriptions_per_party),
            logs: logs.clone(),
            shutdown: shutdown_rx.clone(),
            workflows,
            tls: tls.clone(),
            admin_audit,
            pki_dir: config.base_dir.clone(),
            verifier: crate::verifier::Verifier::start().map_err(HubError::Verifier)?,
            heavy: crate::heavy::HeavyPool::start(
                config.limits.max_heavy_queries,
                config.limits.max_heavy_waiting,
            )
            .map_err(HubError::HeavyPool)?,
            operators,
            principals: Default::default(),
            backup: crate::backup::BackupSource {
                data_dir: data_dir.clone(),
                checkpoint_key: key_path.clone(),
                hub_key: Some(logs.verifier()?.to_vkey()),
                keep_free: config.hub.min_free_mib.saturating_mul(2 << 20),
            },
            metrics: metrics.clone(),
            standby,
            freshness: freshness.clone(),
        });
        let (streams_tx, streams_rx) = mpsc::channel(64);
        let handshakes = access_log.clone();
        tokio::spawn(accept_loop(
            listener,
            tls.clone(),
            streams_tx,
            shutdown_rx.clone(),
            Arc::new(move |peer, reason| {
                handshakes.record(AccessRecord {
                    at_micros: handshakes.now_micros(),
                    kind: RecordKind::Handshake,
                    peer: peer.to_string(),
                    code: tonic::Code::Unauthenticated as i32,
                    message: reason,
                    ..AccessRecord::default()
                })
            }),
        ));
        tokio::spawn(tasks::tls_watch(
            tls.clone(),
            config.tls.watch_files,
            ConnectionLimits::timer(config.connections.idle_timeout_secs),
            shutdown_rx.clone(),
        ));
        let (health, health_service) = tonic_health::server::health_reporter();
        crate::health::serving(&health).await;
        if standby {
            crate::health::standby(&health).await;
        }
        tokio::spawn(crate::health::follow(
            health,
            store.clone(),
            freshness.clone(),
            shutdown_rx.clone(),
        ));
        // v1 and, for older tools (grpcurl before 1.8.8), v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tongbao_proto::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_error =
            |e| HubError::Server(format!("cannot build the reflection service: {e}"));
        let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
        let reflection = reflection().build_v1().map_err(reflection_error)?;
        let metrics_addr = crate::metrics::start(
            &config.metrics,
            &metrics,
            &state,
            data_dir,
            shutdown_rx.clone(),
        )
        .await?;
        // Each service's request limit, from the one table its refusal names.
        let limits = RequestLimits::new(&config.limits);
        let max = |name| limits.of(name).0;
        let audit = AuditServer::new(AuditService::new(state.clone()))
            .max_decoding_message_size(max(AuditServer::<AuditService>::NAME));
        let log = LogServer::new(LogService::new(state.clone()))
            .max_decoding_message_size(max(LogServer::<LogService>::NAME));
        let workflow = WorkflowServer::new(WorkflowService::new(state.clone()))
            .max_decoding_message_size(max(WorkflowServer::<WorkflowService>::NAME));
        let admin = AdminServer::new(AdminService::new(state.clone()))
            .max_decoding_message_size(max(AdminServer::<AdminService>::NAME));
        let directory = DirectoryServer::new(DirectoryService::new(state.clone()))
            .max_decoding_message_size(max(DirectoryServer::<DirectoryService>::NAME));
        match following {
            Some(following) => following.follow(config, shutdown_rx.clone())?,
            None => {
                tokio::spawn(tasks::checkpoint_cadence(logs.clone(), shutdown_rx.clone()));
            }
        }
        let exchange = ExchangeServer::new(ExchangeService::new(state))
            .max_decoding_message_size(max(ExchangeServer::<ExchangeService>::NAME))
            .max_encoding_message_size(usize::MAX);
        tokio::spawn(tasks::expiry_watch(
            config.base_dir.clone(),
            shutdown_rx.clone(),
        ));
        let mut stop = shutdown_rx;
        let caps = &config.connections;
        let connections = tls.connections().clone();
        let find_connection = Arc::new(move |peer| connections.activity(peer));
        let server = tokio::spawn(
            Server::builder()
                .max_concurrent_streams(caps.max_streams_per_connection)
                .http2_max_pending_accept_reset_streams(Some(caps.max_pending_reset_streams))
                .http2_keepalive_interval(ConnectionLimits::timer(caps.keepalive_interval_secs))
                .http2_keepalive_timeout(ConnectionLimits::timer(caps.keepalive_timeout_secs))
                // Outermost: records the status each caller finally gets.
                .layer(AccessLayer::new(access_log.clone()))
                // Counts every call with the status the client receives:
                // outside the refusals layer, which may rewrite it.
                .layer(crate::metrics::RpcLayer::new(
                    metrics,
                    &[
                        tongbao_proto::pb::FILE_DESCRIPTOR_SET,
                        tonic_health::pb::FILE_DESCRIPTOR_SET,
                        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                    ],
                ))
                // Every response's status passes through it (see its module);
                // it covers the call tracking's refusals too.
                .layer(RefusalsLayer::new(limits))
                .layer(CallTracking::new(find_connection))
                // Innermost: a standby's refusals of writes are recorded
                // and counted as every other status.
                .layer(StandbyLayer::new(standby, freshness))
                .add_service(health_service)
                .add_service(reflection)
                .add_service(reflection_v1alpha)
                .add_service(exchange)
                .add_service(audit)
                .add_service(log)
                .add_service(workflow)
                .add_service(admin)
                .add_service(directory)
                .serve_with_incoming_shutdown(ReceiverStream::new(streams_rx), async move {
                    let _ = stop.changed().await;
                }),
        );
        tracing::info!(%addr, data_dir = %data_dir.display(), standby, "hub listening");
        tracing::info!(phases_ms = ?phases.ms, "start-up took");
        // After the server: the start does not wait for it (see `full_check`).
        let full_check = match standby {
            true => None,
            false => Some(
                crate::full_check::start(store.clone(), heads, shutdown.subscribe())
                    .map_err(HubError::FullCheck)?,
            ),
        };
        Ok(Self {
            addr,
            metrics_addr,
            stats,
            shutdown,
            tls,
            server,
            appender: appender_thread,
            full_check,
            logs,
            access_log,
            store,
        })
    }

    /// Re-reads the TLS files now (as SIGHUP and `Admin/ReloadTls` do).
    pub fn reload_tls(&self) -> Result<ReloadOutcome, TlsError> {
        self.tls.reload()
    }

    /// Client connections open now, by party URI.
    pub fn open_connections(&self) -> Result<Vec<String>, crate::fatal::Poisoned> {
        self.tls.connections().parties()
    }

    /// TLS handshakes in progress now.
    pub fn handshakes_in_progress(&self) -> usize {
        self.tls.connections().handshakes_in_progress()
    }

    /// The address the hub listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The metrics listener's address (useful with port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Group-commit counters.
    pub fn stats(&self) -> Arc<AppendStats> {
        self.stats.clone()
    }

    /// The access log writer's rounds so far.
    pub fn access_log_rounds(&self) -> crate::access_log::RoundCounts {
        self.access_log.rounds()
    }

    /// Stops accepting, ends streams, lets in-flight RPCs finish, then stops
    /// the appender after its last batch is durable.
    pub async fn shutdown(self) -> Result<(), HubError> {
        self.stop(None).await
    }

    /// As [`Hub::shutdown`], but connections whose calls have not ended
    /// within `wait` are closed (a standby taking over: the leader it
    /// becomes must not wait for a client that stopped reading).
    pub async fn shutdown_within(self, wait: std::time::Duration) -> Result<(), HubError> {
        self.stop(Some(wait)).await
    }

    async fn stop(self, wait: Option<std::time::Duration>) -> Result<(), HubError> {
        let _ = self.shutdown.send(true);
        let mut server = self.server;
        let served = match wait {
            None => server.await,
            Some(wait) => match tokio::time::timeout(wait, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    match self.tls.connections().close_all() {
                        Ok(closed) => tracing::warn!(
                            closed,
                            "calls still open at shutdown; their connections closed"
                        ),
                        Err(e) => {
                            tracing::error!(error = %e, "calls still open at shutdown; closing their connections failed")
                        }
                    }
                    match tokio::time::timeout(wait, &mut server).await {
                        Ok(served) => served,
                        Err(_) => {
                            server.abort();
                            return Err(HubError::Server(format!(
                                "the server did not stop within {} s of closing its connections",
                                wait.as_secs()
                            )));
                        }
                    }
                }
            },
        };
        let served = served.map_err(|e| HubError::Server(e.to_string()))?;
        served.map_err(|e| HubError::Server(e.to_string()))?;
        // It sees the signal between two entries.
        if let Some(full_check) = self.full_check {
            tokio::task::spawn_blocking(move || full_check.join())
                .await
                .map_err(|e| HubError::Server(e.to_string()))?
                .map_err(|_| HubError::Server("the check of every entry panicked".into()))?;
        }
        // Every call has ended: its last records are written and signed.
        let access_log = self.access_log;
        tokio::task::spawn_blocking(move || access_log.stop())
            .await
            .map_err(|e| HubError::Server(e.to_string()))?;
        // The server (and with it every Appender handle) is gone: the writer drains and exits.
        tokio::task::spawn_blocking(move || self.appender.join())
            .await
            .map_err(|e| HubError::Server(e.to_string()))?
            .map_err(|_| HubError::Server("appender thread panicked".into()))?;
        // Every append is durable: checkpoints over all of it leave the
        // next start no tail to check.
        let logs = self.logs;
        match tokio::task::spawn_blocking(move || logs.refresh_all()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "no last checkpoint at shutdown; the next start checks the entries after the previous one")
            }
            Err(e) => tracing::warn!(error = %e, "no last checkpoint at shutdown"),
        }
        // Tasks that saw the shutdown signal drop their handles a moment later.
        let store = self.store;
        let deadline = tokio::time::Instant::now() + STORE_RELEASE_WAIT;
        while Arc::strong_count(&store) > 1 {
            if tokio::time::Instant::now() >= deadline {
                return Err(HubError::Server(format!(
                    "the store is still in use {} s after shutdown; the database stays open",
                    STORE_RELEASE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The last handle: dropping it flushes and closes the database.
        tokio::task::spawn_blocking(move || drop(store))
            .await
            .map_err(|e| HubError::Server(e.to_string()))?;
        Ok(())
    }
}

/// How a hub starts.
enum Role {
    /// The one that writes and signs: with the lease a standby got, or
    /// None (the store takes it, or refuses).
    Leader(Option<crate::store::pg_store::Lease>),
    /// A replica's standby on this database.
    Standby(Box<crate::store::pg_store::Database>),
}

/// Applies the key rotations a crash left between their append and the
/// registry change (or drops those never appended), before anything is
/// served: the old key is never in force after its announcement.
fn finish_pending_rotations(
    store: &dyn Store,
    mut registry: Registry,
) -> Result<Registry, HubError> {
    if registry.pending_rotations.is_empty() {
        return Ok(registry);
    }
    let done = registry.finish_pending_rotations(|p| {
        let digest = (!p.message_digest.is_empty()).then_some(p.message_digest.as_slice());
        crate::service::appended_at(store, &p.unit, &p.message_id, digest)
    })?;
    registry.save(store)?;
    for line in done {
        tracing::warn!("finished an interrupted key rotation: {line}");
    }
    Ok(registry)
}

/// How long each step of the start took, in ms, for the log: steps whose
/// cost grows with the data show there first.
struct StartPhases {
    ms: Vec<(&'static str, u64)>,
    last: std::time::Instant,
}

impl StartPhases {
    fn new() -> Self {
        Self {
            ms: Vec::new(),
            last: std::time::Instant::now(),
        }
    }

    /// Records the step that ends now; returns its ms.
    fn done(&mut self, step: &'static str) -> u64 {
        let now = std::time::Instant::now();
        let ms = now.duration_since(self.last).as_millis() as u64;
        self.ms.push((step, ms));
        self.last = now;
        ms
    }
}

/// How long shutdown waits for the tasks still holding the store.
const STORE_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Removes the workflow database earlier hubs kept (`<data dir>/workflow`),
/// whose state the store now holds, rebuilt from the entries on the first
/// start without it. Only an index of the entries: nothing is lost.
fn retire_old_workflow_dir(data_dir: &std::path::Path) {
    let old = data_dir.join("workflow");
    if !old.is_dir() {
        return;
    }
    match std::fs::remove_dir_all(&old) {
        Ok(()) => tracing::info!(
            dir = %old.display(),
            "removed the old workflow database: its state is rebuilt in the store"
        ),
        Err(e) => tracing::warn!(
            dir = %old.display(),
            error = %e,
            "cannot remove the old workflow database (no longer used); remove it by hand"
        ),
    }
}
