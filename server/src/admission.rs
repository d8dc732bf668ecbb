//! Admission of calls: the open calls of each connection (for the idle
//! timeout), the answer given on a connection refused after its handshake,
//! and the cap on `Subscribe` streams per party.
//!
//! Connections themselves are capped where they are accepted (`tls`, which
//! creates an [`Activity`] for each); the [`CallTracking`] layer sits
//! between tonic's transport and the services, where each call is seen
//! with the connection it came on.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::{Bytes, Service};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The counters here only add and subtract under their lock, so a panic
/// elsewhere cannot leave them half-changed: a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the hub tracks of one connection handed to the gRPC server.
pub struct Activity {
    /// Set when the connection was refused after its handshake: every call
    /// on it is answered with this, until it is closed.
    refusal: Option<String>,
    /// Calls open now, and since when none has been.
    streams: Mutex<(usize, Instant)>,
}

impl Activity {
    pub fn admitted() -> Arc<Self> {
        Arc::new(Self {
            refusal: None,
            streams: Mutex::new((0, Instant::now())),
        })
    }

    pub fn refused(why: String) -> Arc<Self> {
        Arc::new(Self {
            refusal: Some(why),
            streams: Mutex::new((0, Instant::now())),
        })
    }

    /// How long the connection has had no open call; `None` while one is open.
    pub fn idle_for(&self) -> Option<Duration> {
        let streams = lock(&self.streams);
        (streams.0 == 0).then(|| streams.1.elapsed())
    }

    fn open_stream(self: &Arc<Self>) -> StreamGuard {
        lock(&self.streams).0 += 1;
        StreamGuard(self.clone())
    }
}

/// One open call; dropped with the response body, when the call ends
/// whichever side ends it.
struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut streams = lock(&self.0.streams);
        streams.0 = streams.0.saturating_sub(1);
        if streams.0 == 0 {
            streams.1 = Instant::now();
        }
    }
}

/// Finds the connection of a call by the peer's address.
pub type FindConnection = Arc<dyn Fn(SocketAddr) -> Option<Arc<Activity>> + Send + Sync>;

/// Tower layer that counts each connection's open calls and answers the
/// calls of refused connections.
#[derive(Clone)]
pub struct CallTracking {
    connections: FindConnection,
}

impl CallTracking {
    pub fn new(connections: FindConnection) -> Self {
        Self { connections }
    }
}

impl<S> tower_layer::Layer<S> for CallTracking {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Tracked {
            inner,
            connections: self.connections.clone(),
        }
    }
}

/// The services behind [`CallTracking`].
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    connections: FindConnection,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<http::Request<Body>> for Tracked<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let activity = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.get_ref().remote_addr())
            .and_then(|peer| (self.connections)(peer));
        if let Some(why) = activity.as_ref().and_then(|a| a.refusal.clone()) {
            return Box::pin(std::future::ready(Ok(
                Status::resource_exhausted(why).into_http()
            )));
        }
        let guard = activity.map(|a| a.open_stream());
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| {
                Body::new(GuardedBody {
                    body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// A response body that holds its call's [`StreamGuard`].
struct GuardedBody {
    body: Body,
    _guard: Option<StreamGuard>,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "{party} already has {open} open subscriptions (limits.max_subscriptions_per_party); close one or reuse it"
)]
pub struct TooManySubscriptions {
    pub party: String,
    pub open: usize,
}

/// Open `Subscribe` streams per party, capped.
#[derive(Clone)]
pub struct Subscriptions {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Subscriptions {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for one more subscription of `party`, held until the stream
    /// ends.
    pub fn open(&self, party: &str) -> Result<SubscriptionSlot, TooManySubscriptions> {
        let mut open = lock(&self.open);
        let count = open.entry(party.to_string()).or_insert(0);
        if *count >= self.max {
            return Err(TooManySubscriptions {
                party: party.to_string(),
                open: *count,
            });
        }
        *count += 1;
        Ok(SubscriptionSlot {
            party: party.to_string(),
            open: self.open.clone(),
        })
    }

    /// Open subscriptions per party (as named to `open`), for the metrics.
    pub fn open_by_party(&self) -> Vec<(String, usize)> {
        lock(&self.open)
            .iter()
            .map(|(p, n)| (p.clone(), *n))
            .collect()
    }
}

/// One open subscription; frees its slot when dropped.
pub struct SubscriptionSlot {
    party: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.party) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.party);
            }
        }
    }
}
