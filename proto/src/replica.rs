//! How a standby replica of the hub refuses a write, so that a client in
//! any language sends it to the leader instead: status `UNAVAILABLE`,
//! message [`STANDBY_REFUSAL`], and response metadata
//! [`REPLICA_METADATA`] = [`REPLICA_STANDBY`] (docs/protocol.md).

/// gRPC metadata key naming the role of the replica that refused a call.
pub const REPLICA_METADATA: &str = "tongbao-replica";
/// [`REPLICA_METADATA`] value: a standby, which serves reads only.
pub const REPLICA_STANDBY: &str = "standby";
/// The status message of a standby's refusal.
pub const STANDBY_REFUSAL: &str = "standby replica: writes go to the leader";

/// The status message (`UNAVAILABLE`) with which a standby that stops ends
/// its subscriptions: it is about to take over (or to shut down), so a
/// client resumes by cursor there, rather than leave it for another
/// replica.
pub const STANDBY_ENDS: &str = "standby replica stopping (taking over or shutting down): resume from your cursor on any replica";

/// Whether `status` is a standby's refusal of a write.
pub fn refused_by_standby(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && status
            .metadata()
            .get(REPLICA_METADATA)
            .is_some_and(|v| v.as_bytes() == REPLICA_STANDBY.as_bytes())
}

/// A standby's refusal of a write.
pub fn standby_refusal() -> tonic::Status {
    standby_unavailable(STANDBY_REFUSAL)
}

/// A standby's refusal saying `why`: a write, or any call while it may
/// not serve (its view of the database is stale or unfit); clients go on
/// to another replica.
pub fn standby_unavailable(why: impl Into<String>) -> tonic::Status {
    let mut status = tonic::Status::unavailable(why);
    status.metadata_mut().insert(
        REPLICA_METADATA,
        tonic::metadata::MetadataValue::from_static(REPLICA_STANDBY),
    );
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_standby_refusal_is_one() {
        assert!(refused_by_standby(&standby_refusal()));
        assert!(!refused_by_standby(&tonic::Status::unavailable(
            STANDBY_REFUSAL
        )));
        let mut other = tonic::Status::internal(STANDBY_REFUSAL);
        other.metadata_mut().insert(
            REPLICA_METADATA,
            tonic::metadata::MetadataValue::from_static(REPLICA_STANDBY),
        );
        assert!(!refused_by_standby(&other));
    }
}
