//! The views of tasks and joint actions each party is entitled to: the
//! lead unit, the units named (assignees, participants) and the office of
//! the mechanism see a task's or action's state; each lists its own, a
//! page at a time. A task's status is computed at the hub's time of the
//! answer, so an office sees a task become overdue without a new entry.
//!
//! A party sees an entry only if it sent it or was addressed: the lead
//! and the office (addressed by every step) see the whole state, while an
//! assignee or participant sees the pins, counts and reasons of other
//! units' entries only where those entries were addressed to it.

use super::workflow::refusal_status;
use super::{HubState, storage_status};
use tongbao_proto::echo::shown;
use tongbao_proto::identity::{Principal, office_inbox};
use tongbao_proto::pb::{self, ParticipantState, TaskStatus};
use tongbao_proto::workflow::task::status_at;
use tonic::Status;

/// Tasks or actions per page when the request names no limit.
pub const DEFAULT_PAGE: u32 = 100;
/// Most tasks or actions one page holds.
pub const MAX_PAGE: u32 = 500;

fn page_limit(asked: u32) -> Result<usize, Status> {
    match asked {
        0 => Ok(DEFAULT_PAGE as usize),
        n if n <= MAX_PAGE => Ok(n as usize),
        n => Err(Status::invalid_argument(format!(
            "limit {n} is more than a page holds ({MAX_PAGE}); page with `after`"
        ))),
    }
}

fn check_after(after: &str) -> Result<(), Status> {
    if after.len() > 64 {
        return Err(Status::invalid_argument(
            "`after` is a task or action id of at most 64 characters",
        ));
    }
    Ok(())
}

/// Whether `who` sees a workflow of `mechanism` led by `lead` naming `units`.
fn entitled(who: &Principal, mechanism: &str, lead: &str, units: &[String]) -> bool {
    match who {
        Principal::Office(m) => m == mechanism,
        Principal::Unit(u) => u == lead || units.contains(u),
        _ => false,
    }
}

/// The index a caller lists from, and the mechanism it narrows to.
fn lister(who: &Principal, mechanism: &str) -> Result<(String, Option<String>), Status> {
    let narrow = (!mechanism.is_empty()).then(|| mechanism.to_string());
    match who {
        Principal::Office(m) if narrow.as_ref().is_none_or(|n| n == m) => {
            Ok((office_inbox(m), None))
        }
        Principal::Office(m) => Err(Status::permission_denied(format!(
            "the office of {m} lists its own mechanism's tasks and actions, not those of {:?}",
            shown(mechanism)
        ))),
        Principal::Unit(u) => Ok((u.clone(), narrow)),
        other => Err(Status::permission_denied(format!(
            "tasks and joint actions are listed by units and offices, not by {other}"
        ))),
    }
}

/// A task's state as shown at `now`: with its status.
fn shown_task(mut t: pb::TaskState, now: i64) -> pb::TaskState {
    t.status = status_at(&t, now) as i32;
    t.as_of_micros = now;
    t
}

/// An action's state as shown: with who has not answered or reported.
fn shown_action(mut a: pb::ActionState) -> pb::ActionState {
    let of = |s: ParticipantState| -> Vec<String> {
        a.participants
            .iter()
            .filter(|p| p.state == s as i32)
            .map(|p| p.unit.clone())
            .collect()
    };
    a.not_answered = of(ParticipantState::NotAnswered);
    a.not_reported = of(ParticipantState::Confirmed);
    a
}

pub(super) fn get_task(
    state: &HubState,
    who: &Principal,
    id: &str,
) -> Result<pb::TaskState, Status> {
    let unseen = || super::not_seen("task", id, "its lead unit, assignees and office", who);
    let t = state
        .workflows
        .task(id)
        .map_err(refusal_status)?
        .ok_or_else(unseen)?;
    let a = t.assignment.clone().unwrap_or_default();
    if !entitled(who, &a.mechanism, &t.lead, &a.assignees) {
        return Err(unseen());
    }
    task_shown_to(state, who, shown_task(t, tongbao_proto::now_micros()))
}

pub(super) fn list_tasks(
    state: &HubState,
    who: &Principal,
    req: &pb::ListTasksRequest,
) -> Result<pb::ListTasksResponse, Status> {
    let (party, narrow) = lister(who, &req.mechanism)?;
    let limit = page_limit(req.limit)?;
    check_after(&req.after)?;
    let wanted = TaskStatus::try_from(req.status).unwrap_or(TaskStatus::Unspecified);
    let ids = state
        .workflows
        .task_ids_of(&party, &req.after, limit)
        .map_err(refusal_status)?;
    let now = tongbao_proto::now_micros();
    let mut tasks = Vec::new();
    for id in &ids {
        let Some(t) = state.workflows.task(id).map_err(refusal_status)? else {
            continue;
        };
        let t = task_shown_to(state, who, shown_task(t, now))?;
        let mechanism = t.assignment.as_ref().map(|a| a.mechanism.as_str());
        let in_mechanism = narrow.as_deref().is_none_or(|n| Some(n) == mechanism);
        let in_status = wanted == TaskStatus::Unspecified || t.status == wanted as i32;
        if in_mechanism && in_status {
            tasks.push(t);
        }
    }
    Ok(pb::ListTasksResponse {
        tasks,
        next_after: next_after(&ids, limit),
    })
}

/// Where the next page starts: the last id read, when the page was full
/// (filters may leave fewer entries in it than were read).
fn next_after(ids: &[String], limit: usize) -> String {
    if ids.len() == limit {
        ids.last().cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

pub(super) fn get_action(
    state: &HubState,
    who: &Principal,
    id: &str,
) -> Result<pb::ActionState, Status> {
    let unseen = || {
        super::not_seen(
            "joint action",
            id,
            "its lead unit, participants and office",
            who,
        )
    };
    let a = state
        .workflows
        .action(id)
        .map_err(refusal_status)?
        .ok_or_else(unseen)?;
    let p = a.proposal.clone().unwrap_or_default();
    if !entitled(who, &p.mechanism, &a.lead, &p.participants) {
        return Err(unseen());
    }
    action_shown_to(state, who, shown_action(a))
}

pub(super) fn list_actions(
    state: &HubState,
    who: &Principal,
    req: &pb::ListActionsRequest,
) -> Result<pb::ListActionsResponse, Status> {
    let (party, narrow) = lister(who, &req.mechanism)?;
    let limit = page_limit(req.limit)?;
    check_after(&req.after)?;
    let ids = state
        .workflows
        .action_ids_of(&party, &req.after, limit)
        .map_err(refusal_status)?;
    let mut actions = Vec::new();
    for id in &ids {
        let Some(a) = state.workflows.action(id).map_err(refusal_status)? else {
            continue;
        };
        let mechanism = a.proposal.as_ref().map(|p| p.mechanism.as_str());
        if narrow.as_deref().is_none_or(|n| Some(n) == mechanism) {
            actions.push(action_shown_to(state, who, shown_action(a))?);
        }
    }
    Ok(pb::ListActionsResponse {
        actions,
        next_after: next_after(&ids, limit),
    })
}

/// The unit viewing a workflow led by `lead` whose view is narrowed: an
/// assignee or participant. The lead and offices see every step.
fn narrowed<'a>(who: &'a Principal, lead: &str) -> Option<&'a str> {
    match who {
        Principal::Unit(u) if u != lead => Some(u.as_str()),
        _ => None,
    }
}

/// Whether the entry at `pin` was sent by `me` or addressed to it.
fn addressed(state: &HubState, pin: &Option<pb::EntryPin>, me: &str) -> Result<bool, Status> {
    let Some(p) = pin else {
        return Ok(false);
    };
    Ok(state
        .store
        .entry(&p.channel, p.seq)
        .map_err(storage_status)?
        .is_some_and(|s| s.entry.channel == me || s.entry.recipients.iter().any(|r| r == me)))
}

/// The task as `who` may see it. An assignee sees of another assignee's
/// part only its state and the entries addressed to it (a reminder or
/// return naming both); reports go to the lead and the office alone. Its
/// task-wide reminder count is its own; the count of returns is cleared.
/// Once accepted, the acceptance (addressed to every assignee) names each
/// completion report, so those pins stay.
fn task_shown_to(
    state: &HubState,
    who: &Principal,
    mut t: pb::TaskState,
) -> Result<pb::TaskState, Status> {
    let Some(me) = narrowed(who, &t.lead) else {
        return Ok(t);
    };
    let accepted = t.acceptance.is_some();
    let mut own_reminders = 0;
    for a in &mut t.assignees {
        if a.unit == me {
            own_reminders = a.reminders;
            continue;
        }
        a.reports = 0;
        a.reminders = 0;
        if !addressed(state, &a.last_report, me)? {
            a.last_report = None;
        }
        if !accepted && !addressed(state, &a.completion, me)? {
            a.completion = None;
        }
        if !addressed(state, &a.last_reminder, me)? {
            a.last_reminder = None;
        }
        if !addressed(state, &a.last_return, me)? {
            a.last_return = None;
            a.return_reason.clear();
        }
    }
    t.reminders = own_reminders;
    t.returns = 0;
    Ok(t)
}

/// The action as `who` may see it. Answers and results go to the lead and
/// the office; a participant sees another's answer, decline reason and
/// results only where addressed to it, or all once the summary (sent to
/// every participant, embedding them) is out.
fn action_shown_to(
    state: &HubState,
    who: &Principal,
    mut a: pb::ActionState,
) -> Result<pb::ActionState, Status> {
    let Some(me) = narrowed(who, &a.lead) else {
        return Ok(a);
    };
    if a.summary.is_some() {
        return Ok(a);
    }
    for p in a.participants.iter_mut().filter(|p| p.unit != me) {
        if !addressed(state, &p.answer, me)? {
            p.answer = None;
            p.reason.clear();
        }
        if !addressed(state, &p.result, me)? {
            p.result = None;
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_bounded_and_offices_list_their_own() {
        assert_eq!(page_limit(0).ok(), Some(DEFAULT_PAGE as usize));
        assert_eq!(page_limit(MAX_PAGE).ok(), Some(MAX_PAGE as usize));
        assert_eq!(
            page_limit(MAX_PAGE + 1).map_err(|s| s.code()).err(),
            Some(tonic::Code::InvalidArgument)
        );
        let office = Principal::Office("fund-supervision".into());
        assert!(lister(&office, "").is_ok());
        assert!(lister(&office, "joint-enforcement").is_err());
        assert!(lister(&Principal::Operator("op".into()), "").is_err());
        assert_eq!(next_after(&["a".into(), "b".into()], 2), "b");
        assert_eq!(next_after(&["a".into()], 2), "");
    }
}
