//! A replica's standby: a hub (`[store] replica = true`) while another
//! replica holds the database lease.
//!
//! A standby serves reads (`Hub::start_standby`: subscriptions, pulls,
//! entries, checkpoints and proofs, up to the latest checkpoint the
//! leader signed, refreshed at each of its notices) and refuses every
//! write, so that clients send writes to the leader. When it gets the
//! lease it ends its subscriptions (clients resume by cursor on any
//! replica), lets go of its ports, and the hub starts as leader as any
//! hub does, on the database as it is then, on the same addresses.
//!
//! A standby that cannot serve yet (no leader ever brought the database
//! to its schema and stored a registry, or the hub's key is missing: a
//! standby never creates it) tries again every [`START_AGAIN`]; until
//! then it waits without serving, as
//! standbys of earlier versions did: its metrics listener says what it is
//! (`GET /health`: NOT_SERVING, "standby: waiting for the lease";
//! `tongbao_replica_leader 0`) and the gRPC port stays closed.

use crate::HubConfig;
use crate::hub::{Hangup, Hub, HubError, next_hangup, reload_on_hangup};
use crate::store::StoreError;
use crate::store::pg_store::lease::Wait;
use crate::store::pg_store::{Database, Lease};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a standby's open scrapes may finish before the hub starts.
const HANDOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a standby does not serve, as its health says.
pub const WAITING: &str = "standby: waiting for the lease";

/// Takes the lease of `database` at once if it is free;
/// otherwise serves reads as a standby (or, when it cannot, waits without
/// serving) until this hub holds it (Some), or `stop` resolves first
/// (None). Listeners bound on port 0 keep their ports: `config` is
/// updated to them. While serving, each `hangup` (SIGHUP) reloads the TLS
/// material, as on the leader.
pub async fn standby(
    config: &mut HubConfig,
    database: &Database,
    stop: impl Future<Output = ()>,
    hangup: &mut Option<Hangup>,
) -> Result<Option<Lease>, HubError> {
    if let Some(lease) = Lease::try_now(database).await? {
        return Ok(Some(lease));
    }
    // One wait for the lease throughout, whether serving or not.
    let lease = Lease::acquire(database, Wait::Standby);
    tokio::pin!(stop, lease);
    let mut first = true;
    loop {
        match Hub::start_standby(config, database).await {
            Ok(hub) => return serve_reads(config, hub, stop, lease, hangup).await,
            Err(e) => {
                tracing::warn!(error = %e, "standby: cannot serve reads; waiting for the lease without serving, and trying again every {} s", START_AGAIN.as_secs());
            }
        }
        match wait_unserved(config, &mut stop, &mut lease, first).await? {
            Unserved::Lease(lease) => return Ok(Some(lease)),
            Unserved::Stopped => return Ok(None),
            Unserved::TryAgain => first = false,
        }
    }
}

/// How often a standby that cannot serve tries again to start serving.
pub const START_AGAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// How a wait without serving ended.
enum Unserved {
    Lease(Lease),
    Stopped,
    TryAgain,
}

/// Serves reads with `hub` until the lease comes, `stop`, or a fatal
/// condition; then stops it, its ports free for the leader.
async fn serve_reads(
    config: &mut HubConfig,
    hub: Hub,
    mut stop: Pin<&mut impl Future<Output = ()>>,
    mut lease: Pin<&mut impl Future<Output = Result<Lease, StoreError>>>,
    hangup: &mut Option<Hangup>,
) -> Result<Option<Lease>, HubError> {
    config.hub.listen = hub.addr();
    let mut ports = vec![hub.addr()];
    match hub.metrics_addr() {
        Some(metrics) => {
            config.metrics.listen = metrics;
            ports.push(metrics);
            println!(
                "tongbao-hub standby listening on {}; metrics on {metrics}",
                hub.addr()
            );
        }
        None => println!("tongbao-hub standby listening on {}", hub.addr()),
    }
    tracing::info!(addr = %hub.addr(), "standby: serving reads; writes go to the leader");
    let fatal = crate::fatal::requested();
    tokio::pin!(fatal);
    let outcome = loop {
        tokio::select! {
            lease = lease.as_mut() => break lease.map(Some).map_err(HubError::from),
            () = stop.as_mut() => break Ok(None),
            fatal = &mut fatal => break Err(HubError::Fatal(fatal)),
            () = next_hangup(hangup) => reload_on_hangup(&hub),
        }
    };
    // Bounded: a client that stops reading never keeps the leader from
    // starting.
    hub.shutdown_within(HANDOVER_WAIT).await?;
    if matches!(outcome, Ok(Some(_))) {
        for port in ports {
            wait_free(port).await;
        }
    }
    outcome
}

/// Waits (at most [`HANDOVER_WAIT`]) until `addr` can be bound again.
async fn wait_free(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
    while TcpListener::bind(addr).await.is_err() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits for the lease without serving: only the metrics listener, saying
/// so, on the address the hub keeps once it leads.
async fn wait_unserved(
    config: &mut HubConfig,
    stop: &mut Pin<&mut impl Future<Output = ()>>,
    lease: &mut Pin<&mut impl Future<Output = Result<Lease, StoreError>>>,
    first: bool,
) -> Result<Unserved, HubError> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let listener = if config.metrics.enabled {
        let listen_error = |source| HubError::Listen {
            addr: config.metrics.listen,
            source,
        };
        // A start just tried may still be letting go of the port.
        wait_free(config.metrics.listen).await;
        let listener = TcpListener::bind(config.metrics.listen)
            .await
            .map_err(listen_error)?;
        config.metrics.listen = listener.local_addr().map_err(listen_error)?;
        Some(listener)
    } else {
        None
    };
    let served = listener.map(|l| tokio::spawn(serve(l, shutdown_rx)));
    // One machine-readable line, as `listening on` is once it leads.
    if first {
        match config.metrics.enabled {
            true => println!("tongbao-hub standby; metrics on {}", config.metrics.listen),
            false => println!("tongbao-hub standby"),
        }
        tracing::info!("{WAITING}");
    }
    let outcome = tokio::select! {
        lease = lease.as_mut() => lease.map(Unserved::Lease),
        () = stop.as_mut() => Ok(Unserved::Stopped),
        () = tokio::time::sleep(START_AGAIN) => Ok(Unserved::TryAgain),
    };
    // The listener lets go of its port before the hub binds it again; a
    // scraper's open connection does not hold the takeover up.
    let _ = shutdown.send(true);
    if let Some(mut served) = served
        && tokio::time::timeout(HANDOVER_WAIT, &mut served)
            .await
            .is_err()
    {
        served.abort();
        let _ = served.await;
    }
    Ok(outcome?)
}

/// Serves a standby's `GET /metrics` and `GET /health` until `shutdown`.
async fn serve(listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the standby's metrics listener failed");
    }
}

async fn metrics() -> Response {
    match crate::metrics::standby_text() {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
            .into_response(),
    }
}

async fn health() -> Response {
    crate::metrics::health_answer(false, "standby", Some(WAITING))
}
