//! Records every gRPC call in the access log (see `access_log`).
//!
//! A tower layer around the whole router, outside the refusals layer, so
//! it sees the status each caller finally gets, for every method of every
//! service, refusals before any handler included. It notes who called
//! (the certificate's party and serial, read once per certificate), the
//! method, its targets (`access_targets`), the outcome, the bytes each way
//! and the duration. A write's answer is held until its record is durable;
//! a read's record is written when its answer ends (a stream's, when the
//! stream ends or the client goes away).

use super::access_targets::{MAX_CAPTURED_BYTES, Spec, spec_of, targets};
use crate::access_log::{AccessLog, AccessRecord, RecordKind};
use crate::certificate_cache::CertificateCache;
use http_body::Frame;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{self, HeaderMap};
use tonic::codegen::{Bytes, Service};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// A certificate's party URI and serial.
type Named = (Arc<str>, Arc<str>);

/// Caller and serial by certificate (DER), so each is parsed once.
#[derive(Default)]
struct Callers(CertificateCache<Named>);

impl Callers {
    fn of(&self, der: &[u8]) -> Named {
        let named = self.0.get_or(der, || {
            let leaf = rustls_pki_types::CertificateDer::from(der);
            let caller = crate::tls::peer_principal(&leaf)
                .map(|p| p.uri())
                .unwrap_or_else(|e| format!("(unnamed: {e})"));
            let serial = crate::tls::certificate_serial(&leaf).unwrap_or_default();
            Ok::<Named, std::convert::Infallible>((caller.into(), serial.into()))
        });
        match named {
            Ok(n) => n,
            Err(never) => match never {},
        }
    }
}

/// Wraps the router: see the module doc.
#[derive(Clone)]
pub struct AccessLayer {
    log: Arc<AccessLog>,
    callers: Arc<Callers>,
}

impl AccessLayer {
    pub fn new(log: Arc<AccessLog>) -> Self {
        Self {
            log,
            callers: Arc::default(),
        }
    }
}

impl<S> tower_layer::Layer<S> for AccessLayer {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded {
            inner,
            layer: self.clone(),
        }
    }
}

/// The router with every call recorded.
#[derive(Clone)]
pub struct Recorded<S> {
    inner: S,
    layer: AccessLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// What the request body showed: its size, and its first bytes when the
/// method's targets are in it.
#[derive(Default)]
struct Tally {
    bytes: AtomicU64,
    captured: Mutex<Vec<u8>>,
}

impl Tally {
    fn note(&self, data: &Bytes, capture: bool) {
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        if capture {
            let mut c = self
                .captured
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if c.len() + data.len() <= MAX_CAPTURED_BYTES {
                c.extend_from_slice(data);
            }
        }
    }

    fn captured(&self) -> Vec<u8> {
        std::mem::take(
            &mut self
                .captured
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// A call being answered: its record so far.
struct Call {
    record: AccessRecord,
    spec: Spec,
    started: Instant,
    request: Arc<Tally>,
}

impl Call {
    /// The record once the answer is known.
    fn finish(
        mut self,
        code: i32,
        message: String,
        response_bytes: u64,
        response: &[u8],
    ) -> AccessRecord {
        self.record.code = code;
        self.record.message = message;
        self.record.request_bytes = self.request.bytes.load(Ordering::Relaxed);
        self.record.response_bytes = response_bytes;
        self.record.duration_micros =
            u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if self.spec.request || self.spec.response {
            self.record.targets = targets(&self.record.method, &self.request.captured(), response);
        }
        self.record
    }
}

/// The gRPC status in headers or trailers: code and (for a refusal) message.
fn status_in(headers: &HeaderMap) -> Option<(i32, String)> {
    let code = headers.get("grpc-status")?;
    if code.as_bytes() == b"0" {
        return Some((0, String::new()));
    }
    let status = Status::from_header_map(headers)?;
    Some((status.code() as i32, status.message().to_string()))
}

impl<S> Service<http::Request<Body>> for Recorded<S>
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
        let started = Instant::now();
        let log = self.layer.log.clone();
        if let Some(why) = log.failed() {
            return Box::pin(std::future::ready(Ok(Status::unavailable(format!(
                "the hub cannot record calls in its access log, so it answers none: {why}"
            ))
            .into_http())));
        }
        let method = request.uri().path().to_string();
        let spec = spec_of(&method);
        let info = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        let peer = info
            .and_then(|i| i.get_ref().remote_addr())
            .map(|a| a.to_string())
            .unwrap_or_default();
        let (caller, serial) = info
            .and_then(|i| i.peer_certs())
            .and_then(|certs| certs.first().map(|c| self.layer.callers.of(c.as_ref())))
            .unwrap_or_else(|| ("(no certificate)".into(), "".into()));
        let tally = Arc::new(Tally::default());
        let call = Call {
            record: AccessRecord {
                at_micros: log.now_micros(),
                kind: RecordKind::Call,
                peer,
                caller: caller.to_string(),
                serial: serial.to_string(),
                method,
                ..AccessRecord::default()
            },
            spec,
            started,
            request: tally.clone(),
        };
        let request = request.map(|body| {
            Body::new(CountedRequest {
                body,
                tally,
                capture: spec.request,
            })
        });
        let answer = self.inner.call(request);
        Box::pin(async move {
            let (parts, body) = answer.await?.into_parts();
            let in_headers = status_in(&parts.headers);
            if !spec.write {
                let body = RecordedBody {
                    body,
                    call: Some(call),
                    in_headers,
                    bytes: 0,
                    captured: Vec::new(),
                    log,
                };
                return Ok(http::Response::from_parts(parts, Body::new(body)));
            }
            // A write: the whole (unary) answer, then its record, durably.
            let (data, trailers, outcome) = match body.collect().await {
                Ok(c) => {
                    let trailers = c.trailers().cloned();
                    let outcome = in_headers
                        .or_else(|| trailers.as_ref().and_then(status_in))
                        .unwrap_or((2, "the answer ended without a status".into()));
                    (c.to_bytes(), trailers, outcome)
                }
                Err(status) => (
                    Bytes::new(),
                    None,
                    (status.code() as i32, status.message().to_string()),
                ),
            };
            let record = call.finish(outcome.0, outcome.1, data.len() as u64, &data);
            if let Err(why) = log.record_durably(record).wait().await {
                return Ok(Status::unavailable(format!(
                    "the call was carried out but its access-log record could not be made durable: {why}"
                ))
                .into_http());
            }
            let mut frames = Vec::with_capacity(2);
            if !data.is_empty() {
                frames.push(Ok::<_, Status>(Frame::data(data)));
            }
            if let Some(t) = trailers {
                frames.push(Ok(Frame::trailers(t)));
            }
            let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
            Ok(http::Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// A request body that counts (and for some methods keeps) its bytes.
struct CountedRequest {
    body: Body,
    tally: Arc<Tally>,
    capture: bool,
}

impl http_body::Body for CountedRequest {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.tally.note(data, self.capture);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A read's answer: recorded when it ends, however it ends.
struct RecordedBody {
    body: Body,
    call: Option<Call>,
    in_headers: Option<(i32, String)>,
    bytes: u64,
    captured: Vec<u8>,
    log: Arc<AccessLog>,
}

impl RecordedBody {
    fn record(&mut self, code: i32, message: String) {
        if let Some(call) = self.call.take() {
            let captured = std::mem::take(&mut self.captured);
            self.log
                .record(call.finish(code, message, self.bytes, &captured));
        }
    }
}

impl http_body::Body for RecordedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                    let capture = self.call.as_ref().is_some_and(|c| c.spec.response);
                    if capture && self.captured.len() + data.len() <= MAX_CAPTURED_BYTES {
                        self.captured.extend_from_slice(data);
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    let (code, message) = status_in(trailers)
                        .unwrap_or((2, "the answer ended without a status".into()));
                    self.record(code, message);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let (code, message) = (status.code() as i32, status.message().to_string());
                self.record(code, message);
            }
            Poll::Ready(None) => {
                let (code, message) = self
                    .in_headers
                    .take()
                    .unwrap_or((2, "the answer ended without a status".into()));
                self.record(code, message);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for RecordedBody {
    fn drop(&mut self) {
        if self.call.is_some() {
            let (code, message) = self.in_headers.take().unwrap_or((
                tonic::Code::Cancelled as i32,
                "the call ended before its answer did (the client went away)".into(),
            ));
            self.record(code, message);
        }
    }
}
