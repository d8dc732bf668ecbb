//! A replica's standby: the wait of a hub (`[store] replica = true`) for
//! the database lease another replica holds.
//!
//! A standby opens nothing and does not listen on the gRPC port, so that
//! clients fail over to the leader by a refused connection. Its metrics
//! listener says what it is (`GET /health`: NOT_SERVING, "standby: waiting
//! for the lease"; `tongbao_replica_leader 0`), on the address the hub
//! keeps once it leads. With the lease it hands that address over and the
//! hub starts as any hub does, on the database as it is then.

use crate::HubConfig;
use crate::hub::HubError;
use crate::store::pg_store::lease::Wait;
use crate::store::pg_store::{Database, Lease};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a standby's open scrapes may finish before the hub starts.
const HANDOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a standby does not serve, as its health says.
pub const WAITING: &str = "standby: waiting for the lease";

/// Takes the lease of `database` at once if it is free;
/// otherwise waits as a standby until this hub holds it (Some), or `stop`
/// resolves first (None). A standby's metrics listener bound on port 0
/// keeps its port: `config` is updated to it.
pub async fn standby(
    config: &mut HubConfig,
    database: &Database,
    stop: impl Future<Output = ()>,
) -> Result<Option<Lease>, HubError> {
    if let Some(lease) = Lease::try_now(database).await? {
        return Ok(Some(lease));
    }
    let (shutdown, shutdown_rx) = watch::channel(false);
    let listener = if config.metrics.enabled {
        let listen_error = |source| HubError::Listen {
            addr: config.metrics.listen,
            source,
        };
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
    match config.metrics.enabled {
        true => println!("tongbao-hub standby; metrics on {}", config.metrics.listen),
        false => println!("tongbao-hub standby"),
    }
    tracing::info!("{WAITING}");
    let outcome = tokio::select! {
        lease = Lease::acquire(database, Wait::Standby) => Some(lease),
        () = stop => None,
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
    Ok(outcome.transpose()?)
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
