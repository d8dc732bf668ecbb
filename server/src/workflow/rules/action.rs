//! The rules of joint enforcement actions (联合执法行动) against their
//! state: the lead unit proposes; each participant confirms or declines
//! with a reason, and reports its results if it confirmed; the summary
//! goes out once everyone answered and every confirmed participant
//! reported, carrying those entries (checked by
//! `tongbao_proto::workflow::action::verify_action_summary`).

use super::task::require_lead;
use super::*;
use tongbao_proto::pb::ParticipantState;
use tongbao_proto::workflow::action::{check_proposal, verify_action_summary};
use tongbao_proto::workflow::task::check_attachments;

fn action(cx: &StepContext<'_>, id: &str) -> Result<pb::ActionState, WorkflowRefusal> {
    cx.workflows
        .action(id)?
        .ok_or_else(|| NotFound(format!("no joint action {:?} was proposed", shown(id))))
}

fn state_of(p: &pb::ActionParticipant) -> ParticipantState {
    ParticipantState::try_from(p.state).unwrap_or(ParticipantState::Unspecified)
}

fn office_of(a: &pb::ActionState) -> String {
    office_inbox(
        a.proposal
            .as_ref()
            .map(|p| p.mechanism.as_str())
            .unwrap_or_default(),
    )
}

/// Whether a recorded answer or result was signed with a key that does
/// not count at its entry's hub time (so it may be given again).
fn is_stale(
    cx: &StepContext<'_>,
    what: &str,
    pin: &Option<pb::EntryPin>,
) -> Result<bool, WorkflowRefusal> {
    Ok(match pin {
        Some(p) => stale_signature(cx, what, p)?.is_some(),
        None => false,
    })
}

/// A participant's step on an action not yet summarized.
fn participant_step<'a>(
    cx: &StepContext<'_>,
    a: &'a pb::ActionState,
    proposal: Option<&pb::EntryPin>,
) -> Result<&'a pb::ActionParticipant, WorkflowRefusal> {
    let id = shown(&a.action_id);
    let me = a
        .participants
        .iter()
        .find(|p| p.unit == cx.sender)
        .ok_or_else(|| {
            NotAllowed(format!(
                "{} is not a participant of joint action {id:?}",
                cx.sender
            ))
        })?;
    if a.summary.is_some() {
        return Err(WrongState(format!(
            "joint action {id:?} is summarized; it takes no more answers or results"
        )));
    }
    if proposal != a.proposal_entry.as_ref() {
        return Err(Malformed(format!(
            "the step names another entry than joint action {id:?}'s proposal"
        )));
    }
    Ok(me)
}

pub(super) fn check_proposal_step(
    cx: &StepContext<'_>,
    p: &pb::ActionProposal,
) -> Result<(), WorkflowRefusal> {
    check_proposal(cx.message, p).map_err(|e| Malformed(e.to_string()))?;
    require_lead(cx, &p.mechanism, "proposing a joint action")?;
    for u in &p.participants {
        require_member(
            cx,
            &p.mechanism,
            u,
            Malformed,
            "name as participants only units that are members when the action is proposed",
        )?;
    }
    if cx.workflows.action(&p.action_id)?.is_some() {
        return Err(Exists(format!(
            "joint action {:?} was already proposed; choose a new action id",
            shown(&p.action_id)
        )));
    }
    required_recipients(
        "joint action proposal",
        cx.recipients,
        p.participants
            .iter()
            .cloned()
            .chain(std::iter::once(office_inbox(&p.mechanism))),
        cx.sender,
    )
}

pub(super) fn check_answer_step(
    cx: &StepContext<'_>,
    a: &pb::ActionAnswer,
) -> Result<(), WorkflowRefusal> {
    let s = action(cx, &a.action_id)?;
    let me = participant_step(cx, &s, a.proposal.as_ref())?;
    // An answer signed with a key that did not count may be given again.
    if state_of(me) != ParticipantState::NotAnswered && !is_stale(cx, "answer", &me.answer)? {
        return Err(WrongState(format!(
            "{} already answered joint action {:?}",
            cx.sender,
            shown(&a.action_id)
        )));
    }
    if !a.confirm && a.reason.trim().is_empty() {
        return Err(Malformed("declining a joint action needs a reason".into()));
    }
    required_recipients(
        "action answer",
        cx.recipients,
        [s.lead.clone(), office_of(&s)],
        cx.sender,
    )
}

pub(super) fn check_result_step(
    cx: &StepContext<'_>,
    r: &pb::ActionResult,
) -> Result<(), WorkflowRefusal> {
    let s = action(cx, &r.action_id)?;
    let me = participant_step(cx, &s, r.proposal.as_ref())?;
    let id = shown(&r.action_id);
    match state_of(me) {
        ParticipantState::Confirmed => {}
        ParticipantState::Declined => {
            return Err(WrongState(format!(
                "{} declined joint action {id:?}; only confirmed participants report results",
                cx.sender
            )));
        }
        ParticipantState::Reported if is_stale(cx, "result", &me.result)? => {}
        ParticipantState::Reported => {
            return Err(WrongState(format!(
                "{} already reported its results of joint action {id:?}",
                cx.sender
            )));
        }
        _ => {
            return Err(WrongState(format!(
                "{} has not confirmed joint action {id:?}; confirm before reporting results",
                cx.sender
            )));
        }
    }
    let starts = s.proposal.as_ref().map_or(0, |p| p.starts_micros);
    if cx.now_micros < starts {
        return Err(WrongState(format!(
            "joint action {id:?} starts at {}; results come after it started",
            display_micros(starts)
        )));
    }
    if r.text.trim().is_empty() {
        return Err(Malformed("action results need a text".into()));
    }
    check_attachments("action results", &r.attachments).map_err(|e| Malformed(e.to_string()))?;
    required_recipients(
        "action result",
        cx.recipients,
        [s.lead.clone(), office_of(&s)],
        cx.sender,
    )
}

pub(super) fn check_summary_step(
    cx: &StepContext<'_>,
    sm: &pb::ActionSummary,
) -> Result<(), WorkflowRefusal> {
    let s = action(cx, &sm.action_id)?;
    let id = shown(&sm.action_id);
    if cx.sender != s.lead {
        return Err(NotAllowed(format!(
            "joint action {id:?} is summarized by its lead unit {}, not {}",
            s.lead, cx.sender
        )));
    }
    if s.summary.is_some() {
        return Err(WrongState(format!(
            "joint action {id:?} is already summarized"
        )));
    }
    let waiting: Vec<String> = s
        .participants
        .iter()
        .filter_map(|p| match state_of(p) {
            ParticipantState::Confirmed => Some(format!("{} (confirmed, no results)", p.unit)),
            ParticipantState::Declined | ParticipantState::Reported => None,
            _ => Some(format!("{} (not answered)", p.unit)),
        })
        .collect();
    if !waiting.is_empty() {
        return Err(WrongState(format!(
            "a summary is released once every participant answered and every confirmed one reported its results; joint action {id:?} waits for {}",
            waiting.join(", ")
        )));
    }
    for p in &s.participants {
        for (what, pin, again) in [
            ("action answer", &p.answer, "answers"),
            ("action result", &p.result, "reports its results"),
        ] {
            if let Some(pin) = pin
                && let Some(why) = stale_signature(cx, what, pin)?
            {
                return Err(WrongState(format!(
                    "{why}; {} {again} again with its current key before joint action {id:?} is summarized",
                    p.unit
                )));
            }
        }
    }
    if sm.text.trim().is_empty() {
        return Err(Malformed("a summary needs a text".into()));
    }
    same_as_stored(
        cx.store,
        "action proposal",
        sm.proposal.as_ref(),
        s.proposal_entry.as_ref(),
    )?;
    for e in &sm.answers {
        let expected = s
            .participants
            .iter()
            .find(|p| p.unit == e.channel)
            .and_then(|p| p.answer.as_ref());
        same_as_stored(cx.store, "action answer", Some(e), expected)?;
    }
    for e in &sm.results {
        let expected = s
            .participants
            .iter()
            .find(|p| p.unit == e.channel)
            .and_then(|p| p.result.as_ref());
        same_as_stored(cx.store, "action result", Some(e), expected)?;
    }
    let keys = registry_keys(cx.registry);
    verify_action_summary(cx.sender, sm, &keys as &dyn SigningKeys)
        .map_err(|e| Malformed(e.to_string()))?;
    required_recipients(
        "action summary",
        cx.recipients,
        s.participants
            .iter()
            .map(|p| p.unit.clone())
            .chain(std::iter::once(office_of(&s))),
        cx.sender,
    )
}
