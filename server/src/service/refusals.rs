//! The last word on the status of every response, for every service.
//!
//! A tower layer around the whole gRPC router, so no handler (present or
//! future) and no part of tonic is left out:
//! - a status message longer than [`MAX_STATUS_MESSAGE_BYTES`] is cut to
//!   it, whatever wrote it (handlers already shorten the values they echo
//!   with [`tongbao_proto::echo::shown`]; this is the backstop that keeps
//!   every refusal within standard clients' metadata limits);
//! - tonic's `OUT_OF_RANGE "decoded message length too large"` becomes
//!   `RESOURCE_EXHAUSTED` naming the service's limit and its setting. It is
//!   mapped here because tonic refuses from the length prefix, before the
//!   body is buffered (a check in the codec would come after), and the
//!   codec, built by generated code, cannot know the configured limits.

use crate::config::Limits;
use http_body::Frame;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tongbao_proto::echo::{MAX_STATUS_MESSAGE_BYTES, capped};
use tongbao_proto::pb;
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{Bytes, Service};
use tonic::{Code, Status};

/// tonic's default request limit, kept for the services with small requests.
const GRPC_DEFAULT_LIMIT: usize = 4 << 20;

/// How tonic's own size refusal begins (see `tonic::codec::decode`).
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// The largest request each service decodes, and the setting behind it.
/// `PushBatch` shares `Exchange`'s: a request is held whole before it is
/// decoded, so the limit bounds what one call pins in memory, and a batch
/// of large messages is refused with advice to split it rather than let in.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    configured: usize,
}

impl RequestLimits {
    pub fn new(limits: &Limits) -> Self {
        Self {
            configured: limits.max_request_bytes(),
        }
    }

    /// The limit of the service of this full name (`tongbao.v1.Exchange`),
    /// and where it comes from.
    pub fn of(&self, service: &str) -> (usize, &'static str) {
        match service {
            pb::exchange_server::SERVICE_NAME
            | pb::workflow_server::SERVICE_NAME
            | pb::directory_server::SERVICE_NAME => {
                (self.configured, "2 × limits.max_body_bytes + 256 KiB")
            }
            _ => (GRPC_DEFAULT_LIMIT, "gRPC's usual limit; not configurable"),
        }
    }

    /// The refusal of a request of `found` bytes to `path`
    /// (`/tongbao.v1.Exchange/PushBatch`).
    fn refusal(&self, path: &str, found: Option<&str>) -> Status {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let (limit, setting) = self.of(service);
        let short = service.rsplit('.').next().unwrap_or(service);
        let size = found.map_or_else(
            || "the request is too large".to_string(),
            |n| format!("the request is {n} bytes"),
        );
        let advice = if method == "PushBatch" {
            "; the messages of a PushBatch count together: send them in smaller batches"
        } else {
            ""
        };
        Status::resource_exhausted(format!(
            "{size}; {short} accepts at most {limit} bytes per request ({setting}){advice}"
        ))
    }
}

/// Wraps the router: see the module doc.
#[derive(Debug, Clone)]
pub struct RefusalsLayer {
    limits: Arc<RequestLimits>,
}

impl RefusalsLayer {
    pub fn new(limits: RequestLimits) -> Self {
        Self {
            limits: Arc::new(limits),
        }
    }
}

impl<S> tower_layer::Layer<S> for RefusalsLayer {
    type Service = Refusals<S>;

    fn layer(&self, inner: S) -> Refusals<S> {
        Refusals {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// The router with every response's status settled.
#[derive(Debug, Clone)]
pub struct Refusals<S> {
    inner: S,
    limits: Arc<RequestLimits>,
}

type Settled<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S, B> Service<Request<B>> for Refusals<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Settled<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // A cheap clone (shared bytes): the path names the refused service.
        let uri = request.uri().clone();
        let limits = self.limits.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let (mut parts, body) = response.await?.into_parts();
            // A refusal before any message is "trailers-only": in the headers.
            settle(&mut parts.headers, Some((uri.path(), &limits)));
            let body = body.map_frame(|frame: Frame<Bytes>| match frame.into_trailers() {
                Ok(mut trailers) => {
                    settle(&mut trailers, None);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            });
            Ok(Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// Rewrites the status in `headers` when it is tonic's size refusal (with
/// the request's path and the limits) or its message is too long. Cheap
/// for every other response: two header lookups.
fn settle(headers: &mut HeaderMap, request: Option<(&str, &RequestLimits)>) {
    let Some(code) = headers.get(GRPC_STATUS) else {
        return;
    };
    let out_of_range = code.as_bytes() == b"11";
    let long = headers
        .get(GRPC_MESSAGE)
        .is_some_and(|m| m.len() > MAX_STATUS_MESSAGE_BYTES);
    if !out_of_range && !long {
        return;
    }
    // Decoded from these two headers only: details and metadata stay as sent.
    let mut sent = HeaderMap::new();
    for name in [GRPC_STATUS, GRPC_MESSAGE] {
        if let Some(v) = headers.get(name) {
            sent.insert(name, v.clone());
        }
    }
    let Some(status) = Status::from_header_map(&sent) else {
        return;
    };
    let message = status.message();
    let settled = match (message.strip_prefix(TONIC_TOO_LARGE), request) {
        (Some(rest), Some((path, limits))) if status.code() == Code::OutOfRange => {
            limits.refusal(path, rest.split(' ').next())
        }
        _ => Status::new(
            status.code(),
            capped(message, MAX_STATUS_MESSAGE_BYTES).into_owned(),
        ),
    };
    let mut written = HeaderMap::new();
    if settled.add_header(&mut written).is_err() {
        // Unreachable for percent-encoded text; never send the long original.
        headers.remove(GRPC_MESSAGE);
        return;
    }
    for name in [GRPC_STATUS, GRPC_MESSAGE] {
        match written.remove(name) {
            Some(v) => headers.insert(name, v),
            None => headers.remove(name),
        };
    }
}

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(status: &Status, path: Option<&str>) -> Result<Status, String> {
        let mut h = HeaderMap::new();
        status.add_header(&mut h).map_err(|e| e.to_string())?;
        let limits = RequestLimits::new(&Limits::default());
        settle(&mut h, path.map(|p| (p, &limits)));
        Status::from_header_map(&h).ok_or_else(|| "no status left".to_string())
    }

    #[test]
    fn long_messages_are_cut_and_short_ones_left_alone() -> Result<(), String> {
        for code in [Code::InvalidArgument, Code::OutOfRange, Code::Internal] {
            let long = Status::new(code, format!("refused {}", "税".repeat(10_000)));
            let s = settled(&long, Some("/tongbao.v1.Log/GetEntries"))?;
            assert_eq!(s.code(), code);
            assert!(s.message().len() <= MAX_STATUS_MESSAGE_BYTES);
            assert!(s.message().starts_with("refused 税") && s.message().ends_with('…'));
        }
        let short = Status::out_of_range("checkpoint size 12 is beyond the channel's 3");
        let s = settled(&short, Some("/tongbao.v1.Log/GetCheckpoint"))?;
        assert_eq!((s.code(), s.message()), (short.code(), short.message()));
        Ok(())
    }

    #[test]
    fn tonics_size_refusal_names_the_services_limit() -> Result<(), String> {
        let configured = Limits::default().max_request_bytes();
        let tonic = Status::out_of_range(format!(
            "{TONIC_TOO_LARGE}3000000 bytes, the limit is: {configured} bytes"
        ));
        for (path, words) in [
            ("/tongbao.v1.Exchange/Push", "Exchange accepts at most"),
            ("/tongbao.v1.Exchange/PushBatch", "smaller batches"),
            (
                "/tongbao.v1.Log/GetEntries",
                "Log accepts at most 4194304 bytes",
            ),
        ] {
            let s = settled(&tonic, Some(path))?;
            assert_eq!(s.code(), Code::ResourceExhausted, "{path}");
            assert!(
                s.message().starts_with("the request is 3000000 bytes"),
                "{}",
                s.message()
            );
            assert!(s.message().contains(words), "{path}: {}", s.message());
        }
        // In trailers (no request at hand) only the length is bounded.
        assert_eq!(settled(&tonic, None)?.code(), Code::OutOfRange);
        Ok(())
    }
}
