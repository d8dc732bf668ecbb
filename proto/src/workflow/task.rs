//! The rules of tasks (议定事项 / 督办) that hold whoever checks them: the
//! shape of an assignment and of a report's attachments, and a task's
//! status at a given time, which the hub shows the office and any party
//! can recompute from the same state and time.
//!
//! Who may take each step (the lead unit, an assignee) is judged against
//! the registry and the task's state by the hub.

use super::{WorkflowError, check_workflow_id, malformed};
use crate::HASH_LEN;
use crate::echo::shown;
use crate::pb::{self, AssigneeState, TaskStatus};
use std::collections::BTreeSet;

/// Most attachment digests one report, result or plan names.
pub const MAX_STEP_ATTACHMENTS: usize = 32;

/// Checks a step's attachment digests: each names a file (1 to 255
/// bytes) and a 32-byte SHA-256; at most [`MAX_STEP_ATTACHMENTS`].
pub fn check_attachments(what: &str, list: &[pb::AttachmentDigest]) -> Result<(), WorkflowError> {
    if list.len() > MAX_STEP_ATTACHMENTS {
        return Err(malformed(format!(
            "{what} names {} attachment digests; at most {MAX_STEP_ATTACHMENTS}",
            list.len()
        )));
    }
    for a in list {
        check_attachment(what, a)?;
    }
    Ok(())
}

/// Checks one attachment digest.
pub fn check_attachment(what: &str, a: &pb::AttachmentDigest) -> Result<(), WorkflowError> {
    if a.name.is_empty() || a.name.len() > 255 {
        return Err(malformed(format!(
            "every attachment of {what} needs a name of 1 to 255 bytes"
        )));
    }
    if a.sha256.len() != HASH_LEN {
        return Err(malformed(format!(
            "attachment {:?} of {what}: sha256 must be {HASH_LEN} bytes, got {}",
            shown(&a.name),
            a.sha256.len()
        )));
    }
    Ok(())
}

/// Checks units named by a step: at least one, each once, none empty.
pub fn check_unit_list(what: &str, units: &[String]) -> Result<(), WorkflowError> {
    let distinct: BTreeSet<&String> = units.iter().collect();
    if distinct.is_empty() || distinct.len() != units.len() || units.iter().any(|u| u.is_empty()) {
        return Err(malformed(format!(
            "name the {what}, each once (at least one)"
        )));
    }
    Ok(())
}

/// The shape of an assignment, before the hub judges its sender, its
/// assignees' membership and its minutes: an id, a title, the expected
/// result, assignees each once, a due date, and a decided item exactly
/// when minutes are named.
pub fn check_assignment(a: &pb::TaskAssignment) -> Result<(), WorkflowError> {
    check_workflow_id("task id", &a.task_id)?;
    if a.title.trim().is_empty() || a.expected_result.trim().is_empty() {
        return Err(malformed("a task needs a title and an expected result"));
    }
    check_unit_list("assignee units", &a.assignees)?;
    if a.due_micros <= 0 {
        return Err(malformed("a task needs a due date"));
    }
    match (&a.minutes, a.decided_item.trim().is_empty()) {
        (Some(_), true) => Err(malformed(
            "a task from minutes names the decided item, as the minutes' text quotes it",
        )),
        (None, false) => Err(malformed(
            "a decided item comes from minutes: name the minutes issue entry too",
        )),
        _ => Ok(()),
    }
}

fn assignee_state(a: &pb::TaskAssignee) -> AssigneeState {
    AssigneeState::try_from(a.state).unwrap_or(AssigneeState::Unspecified)
}

/// True when every assignee's current report is a completion.
pub fn all_done(t: &pb::TaskState) -> bool {
    !t.assignees.is_empty()
        && t.assignees
            .iter()
            .all(|a| assignee_state(a) == AssigneeState::Done)
}

/// A task's status at `now` (unix µs): closed once accepted; done when
/// every assignee reported done; overdue when its due date passed before
/// that; otherwise in progress once anyone reported (or a part was
/// returned), else open.
pub fn status_at(t: &pb::TaskState, now: i64) -> TaskStatus {
    if t.acceptance.is_some() {
        return TaskStatus::Closed;
    }
    if all_done(t) {
        return TaskStatus::Done;
    }
    let due = t.assignment.as_ref().map_or(0, |a| a.due_micros);
    if due > 0 && now > due {
        return TaskStatus::Overdue;
    }
    let started = t
        .assignees
        .iter()
        .any(|a| assignee_state(a) != AssigneeState::NotStarted);
    if started {
        TaskStatus::InProgress
    } else {
        TaskStatus::Open
    }
}

/// The stable name of a status, for people and JSON.
pub fn status_name(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Unspecified => "unspecified",
        TaskStatus::Open => "open",
        TaskStatus::InProgress => "in-progress",
        TaskStatus::Done => "done",
        TaskStatus::Overdue => "overdue",
        TaskStatus::Closed => "closed",
    }
}

/// Parses a status name.
pub fn parse_status(name: &str) -> Option<TaskStatus> {
    [
        TaskStatus::Open,
        TaskStatus::InProgress,
        TaskStatus::Done,
        TaskStatus::Overdue,
        TaskStatus::Closed,
    ]
    .into_iter()
    .find(|s| status_name(*s) == name)
}

/// The stable name of an assignee's state.
pub fn assignee_state_name(state: i32) -> &'static str {
    match AssigneeState::try_from(state).unwrap_or(AssigneeState::Unspecified) {
        AssigneeState::Unspecified => "unspecified",
        AssigneeState::NotStarted => "not-started",
        AssigneeState::InProgress => "in-progress",
        AssigneeState::Done => "done",
        AssigneeState::Returned => "returned",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignee(unit: &str, state: AssigneeState) -> pb::TaskAssignee {
        pb::TaskAssignee {
            unit: unit.into(),
            state: state as i32,
            ..Default::default()
        }
    }

    fn task(states: &[AssigneeState], due: i64) -> pb::TaskState {
        pb::TaskState {
            assignment: Some(pb::TaskAssignment {
                due_micros: due,
                ..Default::default()
            }),
            assignees: states
                .iter()
                .enumerate()
                .map(|(i, s)| assignee(&format!("u{i}"), *s))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn status_follows_reports_due_date_and_acceptance() {
        use AssigneeState::*;
        let open = task(&[NotStarted, NotStarted], 100);
        assert_eq!(status_at(&open, 50), TaskStatus::Open);
        assert_eq!(status_at(&open, 100), TaskStatus::Open);
        assert_eq!(status_at(&open, 101), TaskStatus::Overdue);
        let going = task(&[InProgress, NotStarted], 100);
        assert_eq!(status_at(&going, 50), TaskStatus::InProgress);
        assert_eq!(status_at(&going, 101), TaskStatus::Overdue);
        let returned = task(&[Returned, Done], 100);
        assert_eq!(status_at(&returned, 50), TaskStatus::InProgress);
        // Done before (or after) the due date is done, not overdue.
        let done = task(&[Done, Done], 100);
        assert_eq!(status_at(&done, 101), TaskStatus::Done);
        let mut closed = done.clone();
        closed.acceptance = Some(pb::EntryPin::default());
        assert_eq!(status_at(&closed, 101), TaskStatus::Closed);
        for s in [
            TaskStatus::Open,
            TaskStatus::InProgress,
            TaskStatus::Done,
            TaskStatus::Overdue,
            TaskStatus::Closed,
        ] {
            assert_eq!(parse_status(status_name(s)), Some(s));
        }
    }

    #[test]
    fn an_assignment_names_what_is_expected_of_whom_by_when() {
        let good = pb::TaskAssignment {
            task_id: "t-1".into(),
            mechanism: "m".into(),
            title: "Check org X's accounts".into(),
            expected_result: "A report".into(),
            assignees: vec!["tax".into(), "finance".into()],
            due_micros: 10,
            ..Default::default()
        };
        assert!(check_assignment(&good).is_ok());
        let mut twice = good.clone();
        twice.assignees.push("tax".into());
        assert!(check_assignment(&twice).is_err());
        let mut nobody = good.clone();
        nobody.assignees.clear();
        assert!(check_assignment(&nobody).is_err());
        let mut item_only = good.clone();
        item_only.decided_item = "item".into();
        assert!(check_assignment(&item_only).is_err());
        let mut minutes_only = good.clone();
        minutes_only.minutes = Some(pb::EntryPin::default());
        assert!(check_assignment(&minutes_only).is_err());
        let mut no_due = good;
        no_due.due_micros = 0;
        assert!(check_assignment(&no_due).is_err());
    }

    #[test]
    fn attachments_are_named_digests_and_bounded() {
        let a = pb::AttachmentDigest {
            name: "report.pdf".into(),
            sha256: vec![1; 32],
            ..Default::default()
        };
        assert!(check_attachments("a report", std::slice::from_ref(&a)).is_ok());
        let short = pb::AttachmentDigest {
            sha256: vec![1; 31],
            ..a.clone()
        };
        assert!(check_attachments("a report", &[short]).is_err());
        let many = vec![a; MAX_STEP_ATTACHMENTS + 1];
        assert!(check_attachments("a report", &many).is_err());
    }
}
