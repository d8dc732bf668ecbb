//! The standard gRPC health service (`grpc.health.v1.Health`), per service.
//!
//! Every service, and the server as a whole (the empty name), is SERVING
//! while the hub runs. While the store refuses writes (its journal failed a
//! write or the data disk reached `[hub] min_free_mib`; only a restart ends
//! it) the services that write (Exchange, Workflow, Admin) and the server
//! as a whole are NOT_SERVING; the read-only ones (Log, Audit, Directory)
//! stay SERVING, since reads of what is durable go on. From the moment a
//! shutdown begins every service is NOT_SERVING, and open `Watch` streams
//! receive that, then end, so that they never hold the shutdown up.
//!
//! A replica's standby serves reads only (`service/standby.rs`): the
//! services it serves no call of (Workflow, Admin, Audit) are NOT_SERVING
//! there; Exchange (subscriptions, pulls, entries), Log, Directory and the
//! server as a whole are SERVING, but NOT_SERVING as long as it may not
//! serve (`freshness.rs`: not refreshed for too long, or the database
//! unfit).

use crate::freshness::Freshness;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tongbao_proto::pb;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Services that only read: still SERVING while writes are refused.
const READING: [&str; 3] = [
    pb::log_server::SERVICE_NAME,
    pb::audit_server::SERVICE_NAME,
    pb::directory_server::SERVICE_NAME,
];

/// Services that write, and the server as a whole ("").
const WRITING: [&str; 4] = [
    "",
    pb::exchange_server::SERVICE_NAME,
    pb::workflow_server::SERVICE_NAME,
    pb::admin_server::SERVICE_NAME,
];

/// How often the store is asked whether it refuses writes.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Marks every service SERVING (before the server starts).
pub async fn serving(reporter: &HealthReporter) {
    for name in READING.iter().chain(WRITING.iter()) {
        reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
}

/// Services a standby serves no call of.
const NOT_ON_STANDBY: [&str; 3] = [
    pb::workflow_server::SERVICE_NAME,
    pb::admin_server::SERVICE_NAME,
    pb::audit_server::SERVICE_NAME,
];

/// The services a standby serves calls of, and the server as a whole.
const SERVED_ON_STANDBY: [&str; 4] = [
    "",
    pb::exchange_server::SERVICE_NAME,
    pb::log_server::SERVICE_NAME,
    pb::directory_server::SERVICE_NAME,
];

/// Marks the services a standby does not serve NOT_SERVING.
pub async fn standby(reporter: &HealthReporter) {
    for name in NOT_ON_STANDBY {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
}

/// Follows the store and the shutdown signal until shutdown: see the
/// module doc.
pub async fn follow(
    mut reporter: HealthReporter,
    store: Arc<dyn Store>,
    freshness: Option<Arc<Freshness>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refusing = false;
    let mut stale = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if let Some(freshness) = &freshness {
            let now = freshness.why_not_serving().is_some();
            if now != stale {
                stale = now;
                let status = match now {
                    true => ServingStatus::NotServing,
                    false => ServingStatus::Serving,
                };
                for name in SERVED_ON_STANDBY {
                    reporter.set_service_status(name, status).await;
                }
            }
            continue;
        }
        let now = store.refuses_writes();
        if now != refusing {
            refusing = now;
            let status = if now {
                tracing::error!(
                    "the store refuses writes: Exchange, Workflow and Admin report NOT_SERVING"
                );
                ServingStatus::NotServing
            } else {
                ServingStatus::Serving
            };
            for name in WRITING {
                reporter.set_service_status(name, status).await;
            }
        }
    }
    drop(store);
    for name in READING.iter().chain(WRITING.iter()) {
        reporter
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
    // Ends the Watch streams (each has seen NOT_SERVING first).
    for name in READING.iter().chain(WRITING.iter()) {
        reporter.clear_service_status(name).await;
    }
}
