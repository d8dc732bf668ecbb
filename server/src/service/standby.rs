//! What a standby replica serves: the calls that read what the leader
//! signed (subscriptions, pulls, entries, checkpoints, proofs, the
//! registry), from the database as it is. It signs nothing: the signed
//! key-registry note (`GetKeyRegistry`) comes from the leader. Every other call, each write
//! among them, is refused here before any handler runs, with the
//! standby's status (`tongbao_proto::replica`), so that clients send it
//! to the leader; nothing is stored. A leader's layer lets every call by.

use crate::freshness::Freshness;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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

/// Whether the call at `path` reads the database (health and reflection
/// do not): a standby that may not serve refuses it.
fn reads_the_database(path: &str) -> bool {
    !SERVED_SERVICES.iter().any(|s| path.starts_with(s))
}

/// Tower layer refusing, on a standby, every call it does not serve, and
/// every read while it may not serve (`freshness.rs`).
#[derive(Clone)]
pub struct StandbyLayer {
    standby: bool,
    freshness: Option<Arc<Freshness>>,
}

impl StandbyLayer {
    pub fn new(standby: bool, freshness: Option<Arc<Freshness>>) -> Self {
        Self { standby, freshness }
    }
}

impl<S> tower_layer::Layer<S> for StandbyLayer {
    type Service = Standby<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Standby {
            inner,
            standby: self.standby,
            freshness: self.freshness.clone(),
        }
    }
}

/// The services behind [`StandbyLayer`].
#[derive(Clone)]
pub struct Standby<S> {
    inner: S,
    standby: bool,
    freshness: Option<Arc<Freshness>>,
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
        let path = request.uri().path();
        if self.standby && !served_on_standby(path) {
            let refusal = tongbao_proto::replica::standby_refusal().into_http();
            return Box::pin(std::future::ready(Ok(refusal)));
        }
        let unfit = match &self.freshness {
            Some(f) if reads_the_database(path) => f.why_not_serving(),
            _ => None,
        };
        if let Some(why) = unfit {
            let refusal = tongbao_proto::replica::standby_unavailable(why).into_http();
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
            "/tongbao.v1.Log/GetKeyRegistry",
            "/tongbao.v1.Exchange/Subscribe/extra",
        ] {
            assert!(!served_on_standby(write), "{write}");
        }
    }

    /// Every method a standby serves: it reads what the leader signed
    /// and signs nothing.
    const READS: &[&str] = &[
        "Exchange/Pull",
        "Exchange/Subscribe",
        "Exchange/GetEntry",
        "Exchange/ListUnits",
        "Log/GetLogKey",
        "Log/GetCheckpoint",
        "Log/GetInclusionProof",
        "Log/GetInclusionProofs",
        "Log/GetConsistencyProof",
        "Log/GetLeafHashes",
        "Directory/MembersAt",
    ];

    /// Every method a standby refuses: it writes, signs, or reads what a
    /// standby does not follow (workflow state, audits, the trail).
    const REFUSED: &[&str] = &[
        "Exchange/Push",
        "Exchange/PushBatch",
        "Exchange/Acknowledge",
        "Log/AddCosignature",
        "Log/GetKeyRegistry",
        "Audit/ListDeliveries",
        "Audit/UnitSummary",
        "Admin/RegisterKey",
        "Admin/RetireKey",
        "Admin/SuspendUnit",
        "Admin/ReinstateUnit",
        "Admin/AddMember",
        "Admin/ReloadTls",
        "Admin/ListExpiring",
        "Admin/ListAudit",
        "Admin/Backup",
        "Directory/RotateKey",
        "Workflow/Submit",
        "Workflow/GetMeeting",
        "Workflow/GetJointNotice",
        "Workflow/ListLiaisons",
        "Workflow/ComputeStatistics",
        "Workflow/ShowCase",
        "Workflow/ShowOrganization",
        "Workflow/GetWarning",
        "Workflow/ListWarnings",
        "Workflow/GetTask",
        "Workflow/ListTasks",
        "Workflow/GetAction",
        "Workflow/ListActions",
    ];

    /// A new RPC cannot reach a standby unclassified: each method of the
    /// protocol is in exactly one of the tables above, and the layer
    /// serves exactly the reads.
    #[test]
    fn every_method_is_classified_for_a_standby() -> Result<(), prost::DecodeError> {
        let set = <prost_types::FileDescriptorSet as prost::Message>::decode(
            tongbao_proto::pb::FILE_DESCRIPTOR_SET,
        )?;
        let mut seen = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let short = format!("{}/{}", service.name(), method.name());
                    let path = format!("/{}.{short}", file.package());
                    let read = READS.contains(&short.as_str());
                    let refused = REFUSED.contains(&short.as_str());
                    assert!(read != refused, "{path}: classify it in READS or REFUSED");
                    assert_eq!(served_on_standby(&path), read, "{path}");
                    seen.push(short);
                }
            }
        }
        for listed in READS.iter().chain(REFUSED) {
            assert!(
                seen.iter().any(|s| s == listed),
                "{listed} is in no service"
            );
        }
        assert_eq!(seen.len(), READS.len() + REFUSED.len());
        Ok(())
    }
}
