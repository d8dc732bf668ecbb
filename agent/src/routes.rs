//! The routes the agent serves, in one table: the router is built from it
//! and the OpenAPI document is checked against it, so neither can name a
//! route the other lacks.

use crate::api::{audit, inbox, meetings, messages, pending, workflow};
use crate::error::ApiError;
use crate::token::Token;
use crate::webhook;
use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};
use std::sync::Arc;
use tongbao_client::Client;

/// What every handler reaches.
#[derive(Clone)]
pub struct AppState {
    pub client: Client,
    pub webhook: Option<Arc<webhook::Status>>,
    /// Open event streams and waiting long polls, bounded.
    pub streams: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// A place for one more event stream or long poll, or 429.
    pub fn stream_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                "the agent's bound on open event streams and long polls is reached (--max-streams); close one or retry later",
            )
        })
    }
}

/// One route: method, path (OpenAPI's `{param}` syntax, as axum's) and
/// whether it is served without the token.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub public: bool,
    handler: MethodRouter<AppState>,
}

fn route(method: Method, path: &'static str, handler: MethodRouter<AppState>) -> Route {
    Route {
        method,
        path,
        public: false,
        handler,
    }
}

/// Every route of the API.
pub fn table() -> Vec<Route> {
    vec![
        Route {
            public: true,
            ..route(Method::GET, "/openapi.json", get(openapi))
        },
        Route {
            public: true,
            ..route(Method::GET, "/console/", get(crate::console::index))
        },
        Route {
            public: true,
            ..route(
                Method::GET,
                "/console/console.js",
                get(crate::console::script),
            )
        },
        Route {
            public: true,
            ..route(
                Method::GET,
                "/console/console.css",
                get(crate::console::style),
            )
        },
        route(Method::GET, "/v1/party", get(inbox::party)),
        route(Method::POST, "/v1/messages", post(messages::send)),
        route(Method::POST, "/v1/feedback", post(messages::feedback)),
        route(Method::GET, "/v1/inbox", get(inbox::page)),
        route(
            Method::GET,
            "/v1/entries/{channel}/{seq}",
            get(inbox::entry),
        ),
        route(Method::POST, "/v1/acknowledge", post(inbox::acknowledge)),
        route(Method::GET, "/v1/events", get(crate::sse::events)),
        route(Method::GET, "/v1/audit/deliveries", get(audit::deliveries)),
        route(Method::GET, "/v1/audit/units", get(audit::units)),
        route(
            Method::POST,
            "/v1/meetings/{meeting_id}/minutes-answer",
            post(workflow::answer_minutes),
        ),
        route(
            Method::POST,
            "/v1/joint-notices/{notice_id}/co-sign",
            post(workflow::co_sign),
        ),
        route(Method::GET, "/v1/workflow/pending", get(pending::pending)),
        route(
            Method::GET,
            "/v1/workflow/meetings",
            get(meetings::meetings),
        ),
        route(Method::GET, "/v1/liaisons", get(meetings::liaisons)),
        route(Method::GET, "/v1/webhook", get(webhook_status)),
        route(Method::POST, "/v1/webhook/resume", post(webhook_resume)),
    ]
}

/// The router: token-checked routes, public routes, a JSON 404, and the
/// request size limit.
pub fn router(state: AppState, token: Token, max_request_bytes: usize) -> Router {
    let (public, private): (Vec<_>, Vec<_>) = table().into_iter().partition(|r| r.public);
    let mut open = Router::new();
    for r in public {
        open = open.route(r.path, r.handler);
    }
    let mut guarded = Router::new();
    for r in private {
        guarded = guarded.route(r.path, r.handler);
    }
    let guarded = guarded.route_layer(axum::middleware::from_fn_with_state(
        token,
        crate::token::require,
    ));
    open.merge(guarded)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_route",
        "no such route; GET /openapi.json lists them",
    )
}

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::openapi::DOCUMENT,
    )
}

fn no_webhook() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_webhook",
        "this agent has no webhook (start it with --webhook-url)",
    )
}

async fn webhook_status(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let status = s.webhook.as_ref().ok_or_else(no_webhook)?;
    Ok(Json(json!(status.snapshot())))
}

async fn webhook_resume(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let status = s.webhook.as_ref().ok_or_else(no_webhook)?;
    Ok(Json(json!({ "resumed": status.resume() })))
}
