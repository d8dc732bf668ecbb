//! `tongbao agent`: one local service per party (unit or office) that
//! holds the party's keys and trust state through the client library and
//! offers them to departmental systems in any language over HTTP/JSON on
//! a loopback address: send (the agent signs), inbox pages, one entry,
//! acknowledgement and exception feedback, live delivery by server-sent
//! events and signed webhooks, the office's delivery audit, and the
//! workflow steps. Everything it hands out was verified by the library
//! (signature, leaf hash, inclusion in a verified checkpoint).
//!
//! Callers prove they are the party's own system with a bearer token kept
//! in a 0600 file; the HTTP API is described in `openapi.json` (served at
//! `GET /openapi.json`) and docs/agent.md.
#![forbid(unsafe_code)]

mod api;
mod console;
pub mod error;
mod extract;
pub mod openapi;
mod proven;
pub mod routes;
mod secret;
pub mod signature;
mod sse;
mod token;
mod views;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use tongbao_client::Client;
pub use webhook::WebhookConfig;

/// Errors starting an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{what} file {path}: {reason}")]
    Secret {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("webhook URL {0}")]
    WebhookUrl(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
}

/// How an agent serves.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where to listen; loopback unless the operator decides otherwise.
    pub listen: SocketAddr,
    /// The bearer token's file (0600; made if missing).
    pub token_file: PathBuf,
    /// Largest request body accepted (413 beyond).
    pub max_request_bytes: usize,
    /// Event streams and waiting long polls open at once (429 beyond).
    pub max_streams: usize,
    pub webhook: Option<WebhookConfig>,
}

impl AgentConfig {
    /// Room for a message of the hub's largest body (1 MiB) in base64
    /// with its JSON around it.
    pub const DEFAULT_MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;
    /// Each stream holds a subscription at the hub.
    pub const DEFAULT_MAX_STREAMS: usize = 64;
}

/// A running agent.
pub struct Agent {
    addr: SocketAddr,
    token_created: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    webhook: Option<tokio::task::JoinHandle<()>>,
}

impl Agent {
    /// Reads (or makes) the token, starts the webhook delivery if
    /// configured, and serves the API.
    pub async fn start(client: Client, config: AgentConfig) -> Result<Self, AgentError> {
        let (secret, token_created) = secret::load_or_create(&config.token_file, "token")?;
        let hook = config.webhook.map(webhook::Webhook::new).transpose()?;
        let state = routes::AppState {
            client: client.clone(),
            webhook: hook.as_ref().map(|h| h.status.clone()),
            streams: std::sync::Arc::new(tokio::sync::Semaphore::new(config.max_streams)),
        };
        let app = routes::router(state, token::Token::new(secret), config.max_request_bytes);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| AgentError::Listen {
                addr: config.listen,
                reason: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| AgentError::Listen {
            addr: config.listen,
            reason: e.to_string(),
        })?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the agent's listener failed");
            }
        });
        let webhook = hook.map(|h| tokio::spawn(h.run(client)));
        Ok(Self {
            addr,
            token_created,
            stop: Some(stop),
            server,
            webhook,
        })
    }

    /// The address the API is served on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the token file was made by this start.
    pub fn token_created(&self) -> bool {
        self.token_created
    }

    /// Waits until the server stops (it stops only on `shutdown` or a
    /// listener failure).
    pub async fn wait(&mut self) {
        let _ = (&mut self.server).await;
    }

    /// Stops serving (open event streams are closed) and stops the webhook.
    pub async fn shutdown(mut self) {
        if let Some(w) = self.webhook.take() {
            w.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Event streams never end on their own: give them a moment, then cut.
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(w) = &self.webhook {
            w.abort();
        }
    }
}
