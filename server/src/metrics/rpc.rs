//! `tongbao_rpc_requests_total` and `tongbao_rpc_duration_seconds`: a tower
//! layer around the whole gRPC router, like the refusals layer, so every
//! service (health and reflection too) is counted with the status the
//! client finally receives.
//!
//! The method label takes only the methods the hub serves (read from the
//! services' descriptor sets at start), and `other` for any other path: a
//! client cannot grow the metrics by calling made-up paths. The handles of
//! each method are made at its first call, so a call costs a map lookup
//! and a few atomic updates, no allocation.

use super::{HubMetrics, MethodLabel, RpcLabels, code_name};
use http_body::Frame;
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::Code;
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{Bytes, Service};

/// The label of every path the hub does not serve.
const OTHER: &str = "other";

/// One method's handles.
struct MethodMetrics {
    label: String,
    /// Made at the method's first call: uncalled methods show no series.
    seconds: OnceLock<Histogram>,
    /// One counter per gRPC code, made at its first use.
    codes: [OnceLock<Counter>; 17],
}

/// Every method's handles, by request path (`/tongbao.v1.Exchange/Push`).
struct Methods {
    metrics: Arc<HubMetrics>,
    by_path: HashMap<String, MethodMetrics>,
    other: MethodMetrics,
}

impl Methods {
    fn new(metrics: Arc<HubMetrics>, descriptor_sets: &[&[u8]]) -> Self {
        let handles = |label: String| MethodMetrics {
            seconds: OnceLock::new(),
            label,
            codes: Default::default(),
        };
        let mut by_path = HashMap::new();
        for set in descriptor_sets {
            let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(*set) else {
                tracing::warn!(
                    "a service descriptor set does not decode; its calls count as `other`"
                );
                continue;
            };
            for file in &set.file {
                let package = file.package();
                for service in &file.service {
                    for method in &service.method {
                        let label = format!("{package}.{}/{}", service.name(), method.name());
                        by_path.insert(format!("/{label}"), handles(label));
                    }
                }
            }
        }
        let other = handles(OTHER.to_string());
        Self {
            metrics,
            by_path,
            other,
        }
    }

    fn record(&self, path: &str, code: Code, started: Instant) {
        let m = self.by_path.get(path).unwrap_or(&self.other);
        m.seconds
            .get_or_init(|| {
                self.metrics.rpc_seconds.get_or_create_owned(&MethodLabel {
                    method: m.label.clone(),
                })
            })
            .observe(started.elapsed().as_secs_f64());
        if let Some(slot) = m.codes.get(code as usize) {
            slot.get_or_init(|| {
                self.metrics.rpc_requests.get_or_create_owned(&RpcLabels {
                    method: m.label.clone(),
                    code: code_name(code).to_string(),
                })
            })
            .inc();
        }
    }
}

/// Wraps the router: see the module doc.
#[derive(Clone)]
pub struct RpcLayer {
    methods: Arc<Methods>,
}

impl RpcLayer {
    /// Counts the methods of these encoded descriptor sets by name.
    pub fn new(metrics: Arc<HubMetrics>, descriptor_sets: &[&[u8]]) -> Self {
        Self {
            methods: Arc::new(Methods::new(metrics, descriptor_sets)),
        }
    }
}

impl<S> tower_layer::Layer<S> for RpcLayer {
    type Service = Rpcs<S>;

    fn layer(&self, inner: S) -> Rpcs<S> {
        Rpcs {
            inner,
            methods: self.methods.clone(),
        }
    }
}

/// The router with every call counted.
#[derive(Clone)]
pub struct Rpcs<S> {
    inner: S,
    methods: Arc<Methods>,
}

type Counted<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

/// A call not yet counted: counted `Cancelled` if its response is dropped
/// before its status was sent (the client went away).
struct Open {
    methods: Arc<Methods>,
    path: String,
    started: Instant,
    done: bool,
}

impl Open {
    fn finish(&mut self, code: Code) {
        if !self.done {
            self.done = true;
            self.methods.record(&self.path, code, self.started);
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

impl<S, B> Service<Request<B>> for Rpcs<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Counted<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let mut open = Open {
            methods: self.methods.clone(),
            path: request.uri().path().to_string(),
            started: Instant::now(),
            done: false,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(r) => r,
                Err(e) => {
                    open.finish(Code::Unknown);
                    return Err(e);
                }
            };
            let (parts, body) = response.into_parts();
            // A refusal before any message is "trailers-only": in the headers.
            if let Some(code) = status_code(&parts.headers) {
                open.finish(code);
                return Ok(Response::from_parts(parts, body));
            }
            let body = body.map_frame(move |frame: Frame<Bytes>| {
                if let Some(trailers) = frame.trailers_ref() {
                    open.finish(status_code(trailers).unwrap_or(Code::Unknown));
                }
                frame
            });
            Ok(Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// The gRPC status code in these headers, if any.
fn status_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    Some(Code::from_bytes(value.as_bytes()))
}
