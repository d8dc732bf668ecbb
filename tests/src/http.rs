//! A plain HTTP/1.1 client (hyper) for tests of the agent's API, and a
//! loopback webhook receiver that checks the agent's HMAC signature.

use crate::BoxError;
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::mpsc;

/// Starts an agent for `client` on 127.0.0.1 port 0, its token in
/// `dir/NAME-token`, and a caller holding that token.
pub async fn start_agent(
    client: tongbao_client::Client,
    dir: &std::path::Path,
    name: &str,
    webhook: Option<tongbao_agent::WebhookConfig>,
) -> Result<(tongbao_agent::Agent, AgentHttp), BoxError> {
    start_agent_with(client, dir, name, |c| c.webhook = webhook).await
}

/// [`start_agent`] with a config adjusted by `edit`.
pub async fn start_agent_with(
    client: tongbao_client::Client,
    dir: &std::path::Path,
    name: &str,
    edit: impl FnOnce(&mut tongbao_agent::AgentConfig),
) -> Result<(tongbao_agent::Agent, AgentHttp), BoxError> {
    let token_file = dir.join(format!("{name}-token"));
    let mut config = tongbao_agent::AgentConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        token_file: token_file.clone(),
        max_request_bytes: tongbao_agent::AgentConfig::DEFAULT_MAX_REQUEST_BYTES,
        max_streams: tongbao_agent::AgentConfig::DEFAULT_MAX_STREAMS,
        webhook: None,
    };
    edit(&mut config);
    let agent = tongbao_agent::Agent::start(client, config).await?;
    let token = std::fs::read_to_string(&token_file)?.trim().to_string();
    let http = AgentHttp::new(agent.addr(), token);
    Ok((agent, http))
}

/// Calls one agent, with or without its token.
#[derive(Clone)]
pub struct AgentHttp {
    pub addr: SocketAddr,
    pub token: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// An answer: status and the raw body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (Null when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl AgentHttp {
    pub fn new(addr: SocketAddr, token: String) -> Self {
        Self {
            addr,
            token,
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// A request with an optional `Authorization` value and body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Answer, BoxError> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(a) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, a);
        }
        let response = self
            .http
            .request(request.body(Full::new(Bytes::from(body)))?)
            .await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes().to_vec();
        Ok(Answer { status, body })
    }

    pub async fn get(&self, path: &str) -> Result<Answer, BoxError> {
        let auth = format!("Bearer {}", self.token);
        self.raw(Method::GET, path, Some(&auth), Vec::new()).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Answer, BoxError> {
        let auth = format!("Bearer {}", self.token);
        self.raw(
            Method::POST,
            path,
            Some(&auth),
            body.to_string().into_bytes(),
        )
        .await
    }

    /// `GET /v1/events?after=AFTER`, left open: the status, and the
    /// response whose body is the stream (dropping it closes the stream).
    pub async fn open_events(
        &self,
        after: u64,
    ) -> Result<hyper::Response<hyper::body::Incoming>, BoxError> {
        let request = hyper::Request::get(format!("http://{}/v1/events?after={after}", self.addr))
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .body(Full::new(Bytes::new()))?;
        Ok(self.http.request(request).await?)
    }

    /// The first `entry` event of `GET /v1/events?after=AFTER`, as JSON.
    pub async fn first_event(&self, after: u64) -> Result<Value, BoxError> {
        let response = self.open_events(after).await?;
        if response.status() != StatusCode::OK {
            return Err(format!("events answered {}", response.status()).into());
        }
        let mut body = response.into_body();
        let mut text = String::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
            // One event is complete at its blank line.
            if let Some(end) = text.find("\n\n") {
                let event = &text[..end];
                if event.lines().any(|l| l == "event: entry") {
                    let data = event
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .ok_or("an entry event without data")?;
                    return Ok(serde_json::from_str(data)?);
                }
                text.drain(..end + 2);
            }
        }
        Err("the event stream ended without an entry".into())
    }
}

/// A loopback webhook receiver: checks each delivery's signature with
/// `key`, answers 500 to the first `fail_first` good deliveries, and
/// passes the others on.
pub struct Receiver {
    pub addr: SocketAddr,
    pub deliveries: mpsc::Receiver<Value>,
    /// Deliveries refused for their signature.
    pub refused: Arc<AtomicU32>,
    /// Deliveries answered 500 on purpose, so far.
    pub failed: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ReceiverState {
    key: Arc<Vec<u8>>,
    tx: mpsc::Sender<Value>,
    fail_first: u32,
    failed: Arc<AtomicU32>,
    refused: Arc<AtomicU32>,
}

async fn receive(
    axum::extract::State(s): axum::extract::State<ReceiverState>,
    headers: hyper::HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if tongbao_agent::signature::verify(
        &s.key,
        &header(tongbao_agent::signature::TIMESTAMP_HEADER),
        &header(tongbao_agent::signature::SIGNATURE_HEADER),
        &body,
        now,
    )
    .is_err()
    {
        s.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if s.failed.load(Ordering::SeqCst) < s.fail_first {
        s.failed.fetch_add(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    v["delivery_header"] = header(tongbao_agent::signature::DELIVERY_HEADER).into();
    let _ = s.tx.send(v).await;
    StatusCode::OK
}

impl Receiver {
    pub async fn start(key: &[u8], fail_first: u32) -> Result<Self, BoxError> {
        let (tx, deliveries) = mpsc::channel(64);
        let refused = Arc::new(AtomicU32::new(0));
        let failed = Arc::new(AtomicU32::new(0));
        let state = ReceiverState {
            key: Arc::new(key.to_vec()),
            tx,
            fail_first,
            failed: failed.clone(),
            refused: refused.clone(),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            deliveries,
            refused,
            failed,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
