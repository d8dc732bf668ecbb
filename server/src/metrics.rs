//! The hub's Prometheus metrics, served on a listener of their own
//! (`[metrics]`, default `127.0.0.1:9464`, plain HTTP for a local scraper)
//! so that scraping never competes with the exchange's mTLS port.
//!
//! What moves with the traffic is counted where it happens, with atomics
//! and no allocation on the hot path: RPCs by method and code (the tower
//! layer of [`rpc`]), pushes by outcome (the push handlers), group commits
//! and fsyncs (the appender, through [`CommitTimes`] in its stats). What
//! describes the hub's state is read when scraped ([`sampled`]): cheap,
//! bounded reads only; the overdue deliveries (an audit scan) and the CA
//! index are sampled by a background task, one scan at a time.
//! Every metric is described in docs/operations.md.

mod http;
mod rpc;
mod sampled;

pub use http::{CONTENT_TYPE, health_answer, serve};
pub use rpc::RpcLayer;
pub use sampled::{Sources, sample_in_background};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// `[metrics]` of hub.toml: where the metrics are served, if at all.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve the metrics (default true).
    pub enabled: bool,
    /// Plain HTTP address of `GET /metrics` (port 0 picks a free one).
    pub listen: SocketAddr,
    /// How far back (days) the overdue deliveries are counted; bounded by
    /// `limits.max_audit_entries` like any audit.
    pub overdue_window_days: u32,
    /// Seconds between two samples of the overdue deliveries and of the CA
    /// index's certificates.
    pub sample_every_secs: u64,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            // Loopback only, on the port usual for exporters of this kind.
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            overdue_window_days: 30,
            sample_every_secs: 60,
        }
    }
}

impl MetricsSection {
    /// The `[metrics]` that `pki init` writes beside a hub listening on
    /// `listen`: the default, but on a free port when the hub's own port is
    /// chosen freely (port 0), so that hubs set up that way (tests, trials)
    /// run side by side.
    pub fn beside(listen: SocketAddr) -> Self {
        let mut section = Self::default();
        if listen.port() == 0 {
            section.listen.set_port(0);
        }
        section
    }
}

/// Binds the metrics listener (if `[metrics] enabled`) and starts serving
/// it and the background sampler; returns the bound address.
pub async fn start(
    config: &MetricsSection,
    metrics: &Arc<HubMetrics>,
    state: &Arc<crate::service::HubState>,
    data_dir: &std::path::Path,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<SocketAddr>, crate::HubError> {
    if !config.enabled {
        tracing::info!("metrics are off ([metrics] enabled = false)");
        return Ok(None);
    }
    let listen_error = |source| crate::HubError::Listen {
        addr: config.listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    tokio::spawn(serve(
        listener,
        metrics.clone(),
        Sources {
            state: Arc::downgrade(state),
            data_dir: data_dir.to_path_buf(),
        },
        shutdown.clone(),
    ));
    tokio::spawn(sample_in_background(
        metrics.clone(),
        state.clone(),
        config.clone(),
        shutdown,
    ));
    tracing::info!(%addr, "metrics listening (GET /metrics, plain HTTP)");
    Ok(Some(addr))
}

/// The labels of an RPC's counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

/// The label of an RPC's duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

/// The label of a push's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// Group-commit and fsync latencies, recorded by the appender's syncer:
/// a member of its stats so that the writer needs no other handle.
#[derive(Debug, Clone)]
pub struct CommitTimes {
    /// Entries made durable by one fsync.
    pub group_entries: Histogram,
    /// From a batch's start to its answer being durable.
    pub group_seconds: Histogram,
    /// One `Store::sync` (the journal's write and fdatasync).
    pub fsync_seconds: Histogram,
}

impl Default for CommitTimes {
    fn default() -> Self {
        Self {
            group_entries: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            group_seconds: Histogram::new(latency_buckets()),
            fsync_seconds: Histogram::new(latency_buckets()),
        }
    }
}

/// From 100 µs to about 3 s, doubling.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 16)
}

/// How a pushed message ended, as counted by `tongbao_pushes_total`.
#[derive(Debug, Clone, Copy)]
pub enum PushOutcome {
    Appended,
    Duplicate,
    /// Refused with this gRPC code (checks, signature, storage).
    Refused(tonic::Code),
}

/// Every metric the hub registers, and what samples its state.
pub struct HubMetrics {
    registry: Registry,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_seconds: Family<MethodLabel, Histogram>,
    /// One counter per outcome, made (and shown, at 0) from the start: no
    /// lookup per push.
    push_counters: Vec<Counter>,
    sampled: sampled::Gauges,
}

impl std::fmt::Debug for HubMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubMetrics").finish_non_exhaustive()
    }
}

/// `appended`, `duplicate`, then one per refusal code (index = code + 2).
const PUSH_OUTCOMES: usize = 2 + 17;

impl HubMetrics {
    /// Registers every metric; `commits` are the appender's histograms.
    pub fn new(commits: &CommitTimes, leader: bool) -> Self {
        let mut registry = Registry::default();
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            "tongbao_rpc_requests",
            "gRPC calls answered, by method and status code",
            rpc_requests.clone(),
        );
        let rpc_seconds = Family::<MethodLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "tongbao_rpc_duration_seconds",
            "Time from a gRPC call's request to its status (a stream's whole life)",
            rpc_seconds.clone(),
        );
        let pushes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "tongbao_pushes",
            "Pushed messages by outcome: appended, duplicate, or the refusal's gRPC code",
            pushes.clone(),
        );
        let push_counters = (0..PUSH_OUTCOMES)
            .map(|i| {
                let outcome = match i {
                    0 => "appended".to_string(),
                    1 => "duplicate".to_string(),
                    n => code_name(tonic::Code::from_i32(n as i32 - 2)).to_string(),
                };
                pushes.get_or_create_owned(&OutcomeLabel { outcome })
            })
            .collect();
        registry.register(
            "tongbao_group_commit_entries",
            "Entries made durable by one group commit (one fsync)",
            commits.group_entries.clone(),
        );
        registry.register(
            "tongbao_group_commit_duration_seconds",
            "Time from a batch's start to its entries being durable",
            commits.group_seconds.clone(),
        );
        registry.register(
            "tongbao_fsync_duration_seconds",
            "Time of one sync of the commit journal (write and fdatasync)",
            commits.fsync_seconds.clone(),
        );
        let sampled = sampled::Gauges::register(&mut registry);
        register_replica_leader(&mut registry, i64::from(leader));
        Self {
            registry,
            rpc_requests,
            rpc_seconds,
            push_counters,
            sampled,
        }
    }

    /// Counts one pushed message's outcome.
    pub fn push(&self, outcome: PushOutcome) {
        let i = match outcome {
            PushOutcome::Appended => 0,
            PushOutcome::Duplicate => 1,
            PushOutcome::Refused(code) => (code as usize).saturating_add(2),
        };
        if let Some(counter) = self.push_counters.get(i) {
            counter.inc();
        }
    }

    /// Counts a push's answer (`Push`, or one result of `PushBatch`).
    pub fn push_answered<T>(
        &self,
        answer: &Result<T, tonic::Status>,
        duplicate: impl Fn(&T) -> bool,
    ) {
        self.push(match answer {
            Ok(r) if duplicate(r) => PushOutcome::Duplicate,
            Ok(_) => PushOutcome::Appended,
            Err(status) => PushOutcome::Refused(status.code()),
        });
    }

    /// The metrics in the OpenMetrics text format, the sampled ones read
    /// from `sources` now.
    pub fn encode(&self, sources: &Sources) -> Result<String, std::fmt::Error> {
        // A poisoned lock stops the hub (`crate::fatal`); this scrape fails.
        let _one = crate::fatal::lock(&self.sampled.scrape, "metrics scrape")
            .map_err(|_| std::fmt::Error)?;
        self.sampled.refresh(sources);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `tongbao_replica_leader`: 1 on the hub that writes (the leader of its
/// database, or a hub on its own), 0 on a standby.
fn register_replica_leader(registry: &mut Registry, value: i64) {
    let leader = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    leader.set(value);
    registry.register(
        "tongbao_replica_leader",
        "1 on the hub that writes; 0 on a replica's standby (which serves reads only, or waits)",
        leader,
    );
}

/// What a standby's `GET /metrics` shows: that it is one.
pub fn standby_text() -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    register_replica_leader(&mut registry, 0);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// A gRPC code as Prometheus label value, e.g. `InvalidArgument`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}
