//! The rules of tasks (议定事项 / 督办) against their state: the lead unit
//! assigns (from issued minutes or on its own), reminds, accepts and
//! returns; each assignee reports progress and completion. A task closes
//! only by acceptance, once every assignee reported done.

use super::*;
use tongbao_proto::pb::AssigneeState;
use tongbao_proto::workflow::decode_step;
use tongbao_proto::workflow::task::{
    all_done, check_assignment, check_attachments, check_unit_list,
};

/// Refuses unless the sender is the lead unit of `mechanism`.
pub(super) fn require_lead(
    cx: &StepContext<'_>,
    mechanism: &str,
    what: &str,
) -> Result<(), WorkflowRefusal> {
    let lead = lead_of(cx.registry, mechanism)?;
    if lead == cx.sender {
        Ok(())
    } else {
        Err(NotAllowed(format!(
            "{what} of {mechanism} is for its lead unit {lead}, not {}",
            cx.sender
        )))
    }
}

fn task(cx: &StepContext<'_>, id: &str) -> Result<pb::TaskState, WorkflowRefusal> {
    cx.workflows
        .task(id)?
        .ok_or_else(|| NotFound(format!("no task {:?} was assigned", shown(id))))
}

fn assignment(t: &pb::TaskState) -> pb::TaskAssignment {
    t.assignment.clone().unwrap_or_default()
}

fn state_of(a: &pb::TaskAssignee) -> AssigneeState {
    AssigneeState::try_from(a.state).unwrap_or(AssigneeState::Unspecified)
}

fn office_of(t: &pb::TaskState) -> String {
    office_inbox(&assignment(t).mechanism)
}

/// A step of the lead unit on an open task.
fn lead_step(cx: &StepContext<'_>, id: &str, what: &str) -> Result<pb::TaskState, WorkflowRefusal> {
    let t = task(cx, id)?;
    if cx.sender != t.lead {
        return Err(NotAllowed(format!(
            "{what} task {:?} is for its lead unit {}, not {}",
            shown(id),
            t.lead,
            cx.sender
        )));
    }
    if t.acceptance.is_some() {
        return Err(WrongState(format!(
            "task {:?} is closed: its result was accepted",
            shown(id)
        )));
    }
    Ok(t)
}

pub(super) fn check_assignment_step(
    cx: &StepContext<'_>,
    a: &pb::TaskAssignment,
) -> Result<(), WorkflowRefusal> {
    check_assignment(a).map_err(|e| Malformed(e.to_string()))?;
    require_lead(cx, &a.mechanism, "assigning a task")?;
    for u in &a.assignees {
        require_member(
            cx,
            &a.mechanism,
            u,
            Malformed,
            "assign tasks only to units that are members when the task is assigned",
        )?;
    }
    if a.due_micros <= cx.now_micros {
        return Err(Malformed(format!(
            "the due date {} is not after the assignment's time {}",
            display_micros(a.due_micros),
            display_micros(cx.now_micros)
        )));
    }
    if let Some(pin) = &a.minutes {
        check_minutes(cx, a, pin)?;
    }
    if cx.workflows.task(&a.task_id)?.is_some() {
        return Err(Exists(format!(
            "task {:?} was already assigned; choose a new task id",
            shown(&a.task_id)
        )));
    }
    required_recipients(
        "task assignment",
        cx.recipients,
        a.assignees
            .iter()
            .cloned()
            .chain(std::iter::once(office_inbox(&a.mechanism))),
        cx.sender,
    )
}

/// A task from minutes: the assigning unit sent or was sent the minutes,
/// the pin names the issue the hub recorded for a meeting of the task's
/// mechanism, and the decided item is in the text every attending unit
/// consented to.
fn check_minutes(
    cx: &StepContext<'_>,
    a: &pb::TaskAssignment,
    pin: &pb::EntryPin,
) -> Result<(), WorkflowRefusal> {
    let at = format!("{}:{}", shown(&pin.channel), pin.seq);
    let stored = cx
        .store
        .entry(&pin.channel, pin.seq)?
        .filter(|s| s.leaf_hash.as_slice() == pin.leaf_hash.as_slice())
        .ok_or_else(|| {
            Malformed(format!(
                "minutes entry {at} with that leaf hash does not exist on this hub; name the minutes issue entry"
            ))
        })?;
    // Only a party to the minutes may quote them: else the check below
    // would tell anyone whether a text is in minutes it never received.
    let e = &stored.entry;
    if e.channel != cx.sender && !e.recipients.iter().any(|r| r == cx.sender) {
        return Err(NotAllowed(format!(
            "{} was not sent the minutes {at}; a task from minutes is assigned by a unit they went to",
            cx.sender
        )));
    }
    let issue = match stored.entry.content().map(decode_step) {
        Some(Ok(Step::MinutesIssue(i))) => i,
        Some(Ok(Step::MinutesDraft(d))) => {
            return Err(WrongState(format!(
                "{at} is a minutes draft of meeting {:?}; tasks come from the minutes once issued",
                shown(&d.meeting_id)
            )));
        }
        _ => return Err(Malformed(format!("{at} is not a minutes issue entry"))),
    };
    let m = meeting(cx, &issue.meeting_id)?;
    if m.issue.as_ref() != Some(pin) {
        return Err(WrongState(format!(
            "{at} is not the issue the hub recorded for meeting {:?}",
            shown(&issue.meeting_id)
        )));
    }
    if !proposal(&m).mechanisms.contains(&a.mechanism) {
        return Err(Malformed(format!(
            "the minutes {at} are of a meeting of {}, not of {}",
            proposal(&m).mechanisms.join(" and "),
            shown(&a.mechanism)
        )));
    }
    let keys = registry_keys(cx.registry);
    let minutes = verify_minutes_issue(&stored.entry.channel, &issue, &keys as &dyn SigningKeys)
        .map_err(|e| Malformed(format!("minutes {at}: {e}")))?;
    if !minutes.text.contains(a.decided_item.trim()) {
        return Err(Malformed(format!(
            "the decided item {:?} is not in the text of the minutes {at}; quote it as the minutes word it",
            shown(&a.decided_item)
        )));
    }
    Ok(())
}

pub(super) fn check_report(
    cx: &StepContext<'_>,
    r: &pb::TaskReport,
) -> Result<(), WorkflowRefusal> {
    let t = task(cx, &r.task_id)?;
    let Some(me) = t.assignees.iter().find(|a| a.unit == cx.sender) else {
        return Err(NotAllowed(format!(
            "{} is not an assignee of task {:?} (assignees: {})",
            cx.sender,
            shown(&r.task_id),
            assignment(&t).assignees.join(", ")
        )));
    };
    if t.acceptance.is_some() {
        return Err(WrongState(format!(
            "task {:?} is closed: its result was accepted",
            shown(&r.task_id)
        )));
    }
    if r.assignment != t.assignment_entry {
        return Err(Malformed(format!(
            "the report names another entry than task {:?}'s assignment",
            shown(&r.task_id)
        )));
    }
    if state_of(me) == AssigneeState::Done {
        return Err(WrongState(format!(
            "{} already reported task {:?} done; the lead unit accepts or returns it",
            cx.sender,
            shown(&r.task_id)
        )));
    }
    if r.text.trim().is_empty() {
        return Err(Malformed("a task report needs a text".into()));
    }
    check_attachments("a task report", &r.attachments).map_err(|e| Malformed(e.to_string()))?;
    required_recipients(
        "task report",
        cx.recipients,
        [t.lead.clone(), office_of(&t)],
        cx.sender,
    )
}

pub(super) fn check_reminder(
    cx: &StepContext<'_>,
    r: &pb::TaskReminder,
) -> Result<(), WorkflowRefusal> {
    let t = lead_step(cx, &r.task_id, "reminding (督办) on")?;
    let named: Vec<&pb::TaskAssignee> = if r.units.is_empty() {
        t.assignees
            .iter()
            .filter(|a| state_of(a) != AssigneeState::Done)
            .collect()
    } else {
        check_unit_list("units reminded", &r.units).map_err(|e| Malformed(e.to_string()))?;
        let mut v = Vec::new();
        for u in &r.units {
            let a = t.assignees.iter().find(|a| a.unit == *u).ok_or_else(|| {
                Malformed(format!(
                    "{} is not an assignee of task {:?}",
                    shown(u),
                    shown(&r.task_id)
                ))
            })?;
            if state_of(a) == AssigneeState::Done {
                return Err(WrongState(format!(
                    "{u} already reported task {:?} done; accept or return it instead",
                    shown(&r.task_id)
                )));
            }
            v.push(a);
        }
        v
    };
    if named.is_empty() {
        return Err(WrongState(format!(
            "every assignee reported task {:?} done; accept or return it instead",
            shown(&r.task_id)
        )));
    }
    required_recipients(
        "task reminder",
        cx.recipients,
        named
            .iter()
            .map(|a| a.unit.clone())
            .chain(std::iter::once(office_of(&t))),
        cx.sender,
    )
}

pub(super) fn check_acceptance(
    cx: &StepContext<'_>,
    a: &pb::TaskAcceptance,
) -> Result<(), WorkflowRefusal> {
    let t = lead_step(cx, &a.task_id, "accepting")?;
    if !all_done(&t) {
        let waiting: Vec<String> = t
            .assignees
            .iter()
            .filter(|x| state_of(x) != AssigneeState::Done)
            .map(|x| {
                format!(
                    "{} ({})",
                    x.unit,
                    tongbao_proto::workflow::task::assignee_state_name(x.state)
                )
            })
            .collect();
        return Err(WrongState(format!(
            "a task is closed only once every assignee reported done; task {:?} waits for {}",
            shown(&a.task_id),
            waiting.join(", ")
        )));
    }
    let current: Vec<pb::EntryPin> = t
        .assignees
        .iter()
        .filter_map(|x| x.completion.clone())
        .collect();
    if a.completions != current {
        return Err(Malformed(format!(
            "an acceptance names every assignee's current completion report, in assignee order ({})",
            current
                .iter()
                .map(|p| format!("{}:{}", p.channel, p.seq))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    required_recipients(
        "task acceptance",
        cx.recipients,
        assignment(&t)
            .assignees
            .into_iter()
            .chain(std::iter::once(office_of(&t))),
        cx.sender,
    )
}

pub(super) fn check_return(
    cx: &StepContext<'_>,
    r: &pb::TaskReturn,
) -> Result<(), WorkflowRefusal> {
    let t = lead_step(cx, &r.task_id, "returning")?;
    check_unit_list("units whose part is returned", &r.units)
        .map_err(|e| Malformed(e.to_string()))?;
    for u in &r.units {
        let a = t.assignees.iter().find(|a| a.unit == *u).ok_or_else(|| {
            Malformed(format!(
                "{} is not an assignee of task {:?}",
                shown(u),
                shown(&r.task_id)
            ))
        })?;
        if state_of(a) != AssigneeState::Done {
            return Err(WrongState(format!(
                "{u} has not reported task {:?} done; there is nothing to return (remind it instead)",
                shown(&r.task_id)
            )));
        }
    }
    if r.reason.trim().is_empty() {
        return Err(Malformed(
            "a returned task needs a reason the assignees can act on".into(),
        ));
    }
    required_recipients(
        "task return",
        cx.recipients,
        r.units
            .iter()
            .cloned()
            .chain(std::iter::once(office_of(&t))),
        cx.sender,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SledStore, StoredEntry};
    use crate::workflow::tests::new_entry;
    use prost::Message as _;
    use std::sync::Arc;

    /// A task from minutes pinned to the entry `tax:0` (not minutes),
    /// addressed to `recipients`, assigned by the lead civil-affairs.
    fn from_minutes_addressed_to(
        recipients: &[&str],
    ) -> Result<WorkflowRefusal, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("store"), false)?);
        let mut e = new_entry("tax", 0, "");
        let mut entry = e.shared.entry.clone();
        entry.recipients = recipients.iter().map(|r| r.to_string()).collect();
        e.shared = Arc::new(StoredEntry {
            encoded: entry.encode_to_vec().into(),
            entry,
            leaf_hash: [1; 32],
            cursors: Vec::new(),
        });
        store.commit(&[e])?;
        let workflows = Workflows::open(&store)?;
        let registry = crate::registry::example()?;
        let message = pb::Message::default();
        let cx = StepContext {
            workflows: &workflows,
            registry: &registry,
            store: store.as_ref(),
            sender: "civil-affairs",
            message: &message,
            recipients: &[],
            now_micros: 1,
        };
        let pin = pb::EntryPin {
            channel: "tax".into(),
            seq: 0,
            leaf_hash: vec![1; 32],
        };
        let a = pb::TaskAssignment {
            mechanism: "fund-supervision".into(),
            decided_item: "audit".into(),
            ..Default::default()
        };
        check_minutes(&cx, &a, &pin)
            .err()
            .ok_or_else(|| "an entry that is not minutes passed".into())
    }

    #[test]
    fn only_a_party_to_the_minutes_may_quote_them() -> Result<(), Box<dyn std::error::Error>> {
        let refusal = from_minutes_addressed_to(&["finance"])?;
        assert!(
            matches!(&refusal, NotAllowed(m) if m.contains("was not sent the minutes")),
            "{refusal:?}"
        );
        // Addressed to the assigning unit: the entry itself is judged.
        let refusal = from_minutes_addressed_to(&["civil-affairs"])?;
        assert!(
            matches!(&refusal, Malformed(m) if m.contains("not a minutes issue")),
            "{refusal:?}"
        );
        Ok(())
    }
}
