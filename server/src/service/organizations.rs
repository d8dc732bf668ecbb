//! What a party may see about an organization: the entries naming it (by
//! credit code) that it sent or was addressed, and the joint warnings
//! about it it took part in. An office sees what was addressed to it and
//! the warnings of its own mechanism, with who has not answered.

use super::HubState;
use super::workflow::{refusal_status, visible_entries};
use tongbao_proto::credit_code;
use tongbao_proto::identity::Principal;
use tongbao_proto::pb;
use tonic::Status;

/// Warnings one `ListWarnings` answers with, at most.
pub const MAX_LISTED_WARNINGS: usize = 1000;

/// Refuses a credit code that is not one, saying what is wrong.
pub(crate) fn check_code(code: &str) -> Result<(), Status> {
    credit_code::check(code).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Entries naming an organization that `who` sent or received, from the
/// organization index (caught up first), in hub-time order.
pub(crate) fn organization_entries(
    state: &HubState,
    who: &Principal,
    code: &str,
) -> Result<Vec<pb::GetEntryResponse>, Status> {
    let workflows = &state.workflows;
    workflows
        .index_cases(state.store.as_ref())
        .map_err(refusal_status)?;
    let positions = workflows
        .organization_positions(code)
        .map_err(refusal_status)?;
    visible_entries(state, who, positions)
}

/// How `who` takes part in a warning, if at all.
#[derive(PartialEq)]
enum Part {
    /// The issuer, or the office of the warning's mechanism: sees all.
    Whole,
    /// A unit the warning was delivered to.
    Member(String),
}

fn part_of(who: &Principal, w: &pb::WarningState) -> Option<Part> {
    match who {
        Principal::Office(m) if *m == w.mechanism => Some(Part::Whole),
        Principal::Unit(u) if *u == w.issuer => Some(Part::Whole),
        Principal::Unit(u) if w.answers.iter().any(|a| a.unit == *u) => {
            Some(Part::Member(u.clone()))
        }
        _ => None,
    }
}

/// The warning as `who` may see it: a member sees another member's
/// measures only when that answer was addressed to it too.
fn shown_to(
    state: &HubState,
    part: &Part,
    mut w: pb::WarningState,
) -> Result<pb::WarningState, Status> {
    let Part::Member(me) = part else {
        return Ok(w);
    };
    for a in &mut w.answers {
        if a.unit == *me {
            continue;
        }
        let addressed = match &a.answer {
            Some(p) => state
                .store
                .entry(&p.channel, p.seq)
                .map_err(super::storage_status)?
                .is_some_and(|s| s.entry.recipients.iter().any(|r| r == me)),
            None => false,
        };
        if !addressed {
            a.answer = None;
            a.measures.clear();
            a.reason.clear();
        }
    }
    Ok(w)
}

/// One warning, for its issuer, the units it went to and its office.
pub(crate) fn warning_view(
    state: &HubState,
    who: &Principal,
    id: &str,
) -> Result<pb::WarningState, Status> {
    let unseen = || {
        super::not_seen(
            "warning",
            id,
            "its issuer, the members it went to and its mechanism's office",
            who,
        )
    };
    let w = state
        .workflows
        .warning(id)
        .map_err(refusal_status)?
        .ok_or_else(unseen)?;
    let part = part_of(who, &w).ok_or_else(unseen)?;
    shown_to(state, &part, w)
}

/// The warnings `who` took part in (an office: its mechanism's), of one
/// organization or all, in hub-time order.
pub(crate) fn list_warnings(
    state: &HubState,
    who: &Principal,
    req: &pb::ListWarningsRequest,
) -> Result<Vec<pb::WarningState>, Status> {
    if !matches!(who, Principal::Office(_) | Principal::Unit(_)) {
        return Err(Status::permission_denied(format!(
            "warnings are seen by member units and offices, not by {who}"
        )));
    }
    let code = (!req.credit_code.is_empty()).then_some(req.credit_code.as_str());
    let keep =
        |w: &pb::WarningState| part_of(who, w).is_some() && !(req.active_only && w.lift.is_some());
    let mut found = state
        .workflows
        .warnings(code, keep, MAX_LISTED_WARNINGS)
        .map_err(refusal_status)?
        .ok_or_else(|| {
            Status::resource_exhausted(format!(
                "more than {MAX_LISTED_WARNINGS} warnings match; name an organization (credit code) or ask for active ones only"
            ))
        })?;
    found.sort_by(|a, b| (a.hub_micros, &a.warning_id).cmp(&(b.hub_micros, &b.warning_id)));
    found
        .into_iter()
        .map(|w| match part_of(who, &w) {
            Some(part) => shown_to(state, &part, w),
            None => Ok(w),
        })
        .collect()
}
