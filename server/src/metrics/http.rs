//! The metrics listener: `GET /metrics` in the OpenMetrics text format,
//! and `GET /health` (whether this hub serves, for a load balancer or a
//! probe that cannot speak mTLS gRPC), plain HTTP on its own address,
//! apart from the exchange's mTLS port. Anything else is 404; it stops
//! with the hub.

use super::{HubMetrics, Sources};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The OpenMetrics text format, which Prometheus asks for first.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a scrape reads.
struct Scraped {
    metrics: Arc<HubMetrics>,
    sources: Sources,
}

/// Serves `GET /metrics` on `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<HubMetrics>,
    sources: Sources,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/health", get(health))
        .with_state(Arc::new(Scraped { metrics, sources }));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the metrics listener failed; metrics are no longer served");
    }
}

/// `GET /health` of a serving hub: 200 while it serves writes, 503
/// (naming why) while its store refuses them or once it is stopping. A
/// replica's standby serving reads answers 200, role "standby", or 503
/// while it may not serve (`freshness.rs`).
async fn health(State(scraped): State<Arc<Scraped>>) -> Response {
    let Some(state) = scraped.sources.state.upgrade() else {
        return health_answer(false, "leader", Some("the hub is stopping"));
    };
    if state.standby {
        let why = state.freshness.as_ref().and_then(|f| f.why_not_serving());
        return health_answer(why.is_none(), "standby", why.as_deref());
    }
    let refusing = tokio::task::spawn_blocking(move || state.store.refuses_writes()).await;
    match refusing {
        Ok(false) => health_answer(true, "leader", None),
        Ok(true) | Err(_) => health_answer(false, "leader", Some("the store refuses writes")),
    }
}

/// A `GET /health` answer: `{"status": "SERVING" | "NOT_SERVING", "role":
/// ..., "reason": ...}`, 200 when serving, 503 otherwise.
pub fn health_answer(serving: bool, role: &str, reason: Option<&str>) -> Response {
    let mut body = serde_json::json!({
        "status": if serving { "SERVING" } else { "NOT_SERVING" },
        "role": role,
    });
    if let Some(reason) = reason {
        body["reason"] = reason.into();
    }
    let code = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

async fn scrape(State(scraped): State<Arc<Scraped>>) -> Response {
    // File and lock reads: off the async workers.
    let encoded =
        tokio::task::spawn_blocking(move || scraped.metrics.encode(&scraped.sources)).await;
    match encoded {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Ok(Err(_)) | Err(_) => {
            tracing::error!("encoding the metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed\n",
            )
                .into_response()
        }
    }
}
