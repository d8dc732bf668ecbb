//! How many deliveries of a mechanism are overdue now, for the metrics:
//! the audit's own rule (`audit::scan_whole_period`), so the figure an
//! operator alerts on is the one an office's audit shows. Bounded like any
//! audit: only the window asked for is read, and a window holding more
//! than `limits.max_audit_entries` entries is refused from the index's
//! count, never counted in part.

use super::HubState;
use tongbao_proto::pb::DeliveryState;
use tonic::Status;

/// Deliveries to units of the entries of `mechanism` stored since
/// `since_micros` that are past their deadline and still unanswered
/// (pending or fetched) as of `as_of_micros`.
pub fn unanswered_overdue(
    state: &HubState,
    mechanism: &str,
    since_micros: i64,
    as_of_micros: i64,
) -> Result<u64, Status> {
    let mut overdue = 0u64;
    super::audit::scan_whole_period(
        state,
        mechanism,
        since_micros,
        0,
        as_of_micros,
        |_, _, deliveries| {
            overdue += deliveries
                .iter()
                .filter(|d| {
                    d.overdue && matches!(d.state, DeliveryState::Pending | DeliveryState::Fetched)
                })
                .count() as u64;
            Ok(true)
        },
    )?;
    Ok(overdue)
}
