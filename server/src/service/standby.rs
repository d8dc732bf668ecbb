//! What a standby replica serves: the calls that read what the leader
//! signed (subscriptions, pulls, entries, checkpoints, proofs, the
//! registry), from the database as it is. Every other call, each write
//! among them, is refused here before any handler runs, with the
//! standby's status (`tongbao_proto::replica`), so that clients send it
//! to the leader; nothing is stored. A leader's layer lets every call by.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};

/// The calls a standby serves (gRPC paths); health and reflection too.
pub const SERVED_ON_STANDBY: &[&str] = &[
    "/tongbao.v1.Exchange/Pull",
    "/tongbao.v1.Exchange/Subscribe",
    "/tongbao.v1.Exchange/GetEntry",
    "/tongbao.v1.Exchange/ListUnits",
    "/tongbao.v1.Log/GetLogKey",
    "/tongbao.v1.Log/GetCheckpoint",
    "/tongbao.v1.Log/GetInclusionProof",
    "/tongbao.v1.Log/GetInclusionProofs",
    "/tongbao.v1.Log/GetConsistencyProof",
    "/tongbao.v1.Log/GetLeafHashes",
    "/tongbao.v1.Log/GetKeyRegistry",
    "/tongbao.v1.Directory/MembersAt",
];

/// Services a standby serves whole: they change nothing.
const SERVED_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Whether a standby serves the call at `path`.
pub fn served_on_standby(path: &str) -> bool {
    SERVED_ON_STANDBY.contains(&path) || SERVED_SERVICES.iter().any(|s| path.starts_with(s))
}

/// Tower layer refusing, on a standby, every call it does not serve.
#[derive(Clone, Copy)]
pub struct StandbyLayer {
    standby: bool,
}

impl StandbyLayer {
    pub fn new(standby: bool) -> Self {
        Self { standby }
    }
}

impl<S> tower_layer::Layer<S> for StandbyLayer {
    type Service = Standby<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Standby {
            inner,
            standby: self.standby,
        }
    }
}

/// The services behind [`StandbyLayer`].
#[derive(Clone)]
pub struct Standby<S> {
    inner: S,
    standby: bool,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<Request<Body>> for Standby<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if self.standby && !served_on_standby(request.uri().path()) {
            let refusal = tongbao_proto::replica::standby_refusal().into_http();
            return Box::pin(std::future::ready(Ok(refusal)));
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_serves_reads_and_no_write() {
        for read in [
            "/tongbao.v1.Exchange/Subscribe",
            "/tongbao.v1.Log/GetCheckpoint",
        ] {
            assert!(served_on_standby(read), "{read}");
        }
        for write in [
            "/tongbao.v1.Exchange/Push",
            "/tongbao.v1.Exchange/PushBatch",
            "/tongbao.v1.Exchange/Acknowledge",
            "/tongbao.v1.Log/AddCosignature",
            "/tongbao.v1.Workflow/Submit",
            "/tongbao.v1.Admin/RegisterKey",
            "/tongbao.v1.Exchange/Subscribe/extra",
        ] {
            assert!(!served_on_standby(write), "{write}");
        }
    }
}
