//! Finding a party's open workflows: the hub lists no meetings or notices
//! by party, so the agent reads the newest entries of the party's inbox
//! (each verified by the library) and takes the ids their steps name.

use crate::error::ApiError;
use crate::routes::AppState;
use axum::http::StatusCode;
use tongbao_proto::identity::Principal;
use tongbao_proto::pb::workflow_step::Step;
use tongbao_proto::workflow::{CONTENT_TYPE, decode_step};

/// Inbox entries one call reads, by default and at most.
pub const DEFAULT_SCAN: u64 = 1000;
pub const MAX_SCAN: u64 = 10_000;
/// Distinct meetings or notices one call looks up at the hub, at most.
pub const MAX_IDS: usize = 100;

/// The workflow steps among the newest `scan` entries of the inbox, oldest
/// first, with the cursor the scan started after.
pub async fn recent_steps(s: &AppState, scan: u64) -> Result<(Vec<Step>, u64), ApiError> {
    if scan == 0 || scan > MAX_SCAN {
        return Err(ApiError::bad_request(format!(
            "scan must be 1 to {MAX_SCAN} (inbox entries read, newest first)"
        )));
    }
    // Inbox cursors are dense (1..=head), so the newest `scan` entries
    // follow head - scan.
    let head = s.client.pull(0, 1).await?.head;
    let start = head.saturating_sub(scan);
    let mut after = start;
    let mut steps = Vec::new();
    while after < head {
        let page = s
            .client
            .pull(
                after,
                (head - after).min(crate::api::inbox::MAX_PAGE as u64) as u32,
            )
            .await?;
        if page.entries.is_empty() {
            break;
        }
        after = page.next_after(after);
        for e in page.entries.iter().filter(|e| e.cursor <= head) {
            if e.message().content_type == CONTENT_TYPE
                && let Ok(step) = decode_step(e.message())
            {
                steps.push(step);
            }
        }
    }
    Ok((steps, start))
}

/// Ids without repeats, each at its last appearance, oldest first; at
/// most [`MAX_IDS`], the newest kept.
pub fn distinct_newest(ids: impl DoubleEndedIterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = ids
        .rev()
        .filter(|id| seen.insert(id.clone()))
        .take(MAX_IDS)
        .collect();
    out.reverse();
    out
}

/// This agent's unit, or 403 `units_only` for another party.
pub fn own_unit(s: &AppState) -> Result<String, ApiError> {
    match s.client.identity() {
        Principal::Unit(u) => Ok(u.clone()),
        other => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "units_only",
            format!("this call is for a unit's agent; this agent speaks for {other}"),
        )),
    }
}

/// This agent's office (its mechanism), or 403 `offices_only`.
pub fn own_office(s: &AppState) -> Result<String, ApiError> {
    match s.client.identity() {
        Principal::Office(m) => Ok(m.clone()),
        other => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "offices_only",
            format!("this call is for an office's agent; this agent speaks for {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kept_once_newest_last_and_bounded() {
        let ids = ["a", "b", "a", "c"].map(String::from);
        assert_eq!(distinct_newest(ids.into_iter()), ["b", "a", "c"]);
        let many = (0..MAX_IDS + 5).map(|i| i.to_string());
        let kept = distinct_newest(many);
        assert_eq!(kept.len(), MAX_IDS);
        assert_eq!(kept.first().map(String::as_str), Some("5"));
    }
}
