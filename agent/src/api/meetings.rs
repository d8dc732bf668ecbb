//! For offices: the mechanism's meetings with who has not answered the
//! current minutes draft, and the liaison directory (联络员). Each meeting
//! is shown from its signed proposal, and each answer counted only after
//! its signed entry was read, verified and found to answer that draft.

use crate::api::pending::{mismatch, not_answered, pinned_entry};
use crate::api::scan::{self, DEFAULT_SCAN};
use crate::error::ApiError;
use crate::extract::QueryArgs;
use crate::routes::AppState;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use tongbao_client::format_micros;
use tongbao_proto::pb::{self, workflow_step::Step};
use tongbao_proto::workflow::decode_step;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeetingsQuery {
    #[serde(default = "default_scan")]
    scan: u64,
}

fn default_scan() -> u64 {
    DEFAULT_SCAN
}

/// The meeting a step belongs to, if it is a meeting step.
fn meeting_of(step: &Step) -> Option<&str> {
    match step {
        Step::MeetingProposal(p) => Some(&p.meeting_id),
        Step::AgendaItem(a) => Some(&a.meeting_id),
        Step::AgendaSettlement(a) => Some(&a.meeting_id),
        Step::MinutesDraft(d) => Some(&d.meeting_id),
        Step::MinutesAnswer(a) => Some(&a.meeting_id),
        Step::MinutesIssue(i) => Some(&i.meeting_id),
        _ => None,
    }
}

/// Meetings named by the newest inbox entries, newest first.
pub async fn meetings(
    State(s): State<AppState>,
    QueryArgs(q): QueryArgs<MeetingsQuery>,
) -> Result<Json<Value>, ApiError> {
    let office = scan::own_office(&s)?;
    let (steps, scanned_after) = scan::recent_steps(&s, q.scan).await?;
    let ids = scan::distinct_newest(
        steps
            .iter()
            .filter_map(|st| meeting_of(st).map(String::from)),
    );
    let mut out = Vec::with_capacity(ids.len());
    for id in ids.iter().rev() {
        out.push(meeting(&s, id).await?);
    }
    Ok(Json(json!({
        "office": office,
        "meetings": out,
        "scanned_after": scanned_after,
    })))
}

fn stage_name(stage: i32) -> &'static str {
    match pb::MeetingStage::try_from(stage) {
        Ok(pb::MeetingStage::AgendaOpen) => "agenda-open",
        Ok(pb::MeetingStage::AgendaSettled) => "agenda-settled",
        Ok(pb::MeetingStage::MinutesDrafted) => "minutes-drafted",
        Ok(pb::MeetingStage::MinutesIssued) => "minutes-issued",
        _ => "unknown",
    }
}

fn answer_name(state: i32) -> &'static str {
    match pb::AnswerState::try_from(state) {
        Ok(pb::AnswerState::NotAnswered) => "not-answered",
        Ok(pb::AnswerState::Consented) => "consented",
        Ok(pb::AnswerState::Objected) => "objected",
        _ => "unknown",
    }
}

/// One meeting: the signed proposal, the stage, and every attending
/// unit's answer to the current draft, each answer entry checked.
async fn meeting(s: &AppState, id: &str) -> Result<Value, ApiError> {
    let m = s.client.meeting(id).await?;
    let pin = m.proposal_entry.clone().unwrap_or_default();
    let e = pinned_entry(s, &pin).await?;
    let proposal = proposal_of(e.message(), id, &m.proposer)
        .ok_or_else(|| mismatch(&e, "it is not this meeting's proposal by its proposer"))?;
    let mut answers = Vec::with_capacity(m.answers.len());
    for a in &m.answers {
        answers.push(checked_answer(s, id, m.current_draft.as_ref(), a).await?);
    }
    Ok(json!({
        "meeting_id": id,
        "title": proposal.title,
        "mechanisms": proposal.mechanisms,
        "attending_units": proposal.attending_units,
        "date": format_micros(proposal.date_micros),
        "proposer": m.proposer,
        "stage": stage_name(m.stage),
        "revision": m.current_revision,
        "draft": m.current_draft.as_ref().map(crate::views::pin),
        "answers": answers,
        "not_answered": not_answered(&m.answers),
        "issue": m.issue.as_ref().map(crate::views::pin),
    }))
}

/// An attending unit's answer; a recorded answer is shown only once its
/// entry is this unit's signed answer to the current draft, as recorded.
async fn checked_answer(
    s: &AppState,
    id: &str,
    draft: Option<&pb::EntryPin>,
    a: &pb::AttendeeAnswer,
) -> Result<Value, ApiError> {
    let Some(pin) = a.answer.as_ref() else {
        return Ok(json!({ "unit": a.unit, "state": answer_name(a.state), "answer": null }));
    };
    let e = pinned_entry(s, pin).await?;
    let holds = answer_holds(e.message(), id, draft, a);
    if !holds {
        return Err(mismatch(
            &e,
            "it is not the recorded answer of this unit to the current draft",
        )
        .into());
    }
    Ok(json!({
        "unit": a.unit,
        "state": answer_name(a.state),
        "answer": crate::views::pin(pin),
        "comments": a.comments,
        "hub_time": format_micros(e.entry.hub_micros),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiaisonsQuery {
    #[serde(default)]
    mechanism: String,
}

/// The liaison directory: every member unit's current liaison, each from
/// its signed liaison-change entry.
pub async fn liaisons(
    State(s): State<AppState>,
    QueryArgs(q): QueryArgs<LiaisonsQuery>,
) -> Result<Json<Value>, ApiError> {
    scan::own_office(&s)?;
    let r = s.client.liaisons(&q.mechanism).await?;
    let mut units = Vec::with_capacity(r.units.len());
    for u in &r.units {
        units.push(match &u.current {
            Some(rec) => json!({ "unit": u.unit, "current": checked_liaison(&s, rec).await?, "changes": u.history.len() }),
            None => json!({ "unit": u.unit, "current": null, "changes": 0 }),
        });
    }
    Ok(Json(json!({ "mechanism": r.mechanism, "units": units })))
}

async fn checked_liaison(s: &AppState, rec: &pb::LiaisonRecord) -> Result<Value, ApiError> {
    let pin = rec.entry.clone().unwrap_or_default();
    let e = pinned_entry(s, &pin).await?;
    let l = liaison_of(e.message(), &rec.unit)
        .ok_or_else(|| mismatch(&e, "it is not a liaison change of this unit"))?;
    Ok(json!({
        "name": l.name,
        "title": l.title,
        "contact": l.contact,
        "entry": crate::views::pin(&pin),
        "hub_time": format_micros(e.entry.hub_micros),
    }))
}

/// The proposal a message carries, if it proposes meeting `id` and is
/// signed by its proposer.
fn proposal_of(m: &pb::Message, id: &str, proposer: &str) -> Option<pb::MeetingProposal> {
    match decode_step(m) {
        Ok(Step::MeetingProposal(p)) if p.meeting_id == id && m.sender == proposer => Some(p),
        _ => None,
    }
}

/// Whether a message is `a.unit`'s answer to `draft` of meeting `id`,
/// consenting exactly when the state records a consent.
fn answer_holds(
    m: &pb::Message,
    id: &str,
    draft: Option<&pb::EntryPin>,
    a: &pb::AttendeeAnswer,
) -> bool {
    match decode_step(m) {
        Ok(Step::MinutesAnswer(x)) => {
            x.meeting_id == id
                && m.sender == a.unit
                && x.draft.as_ref() == draft
                && x.consent == (a.state == pb::AnswerState::Consented as i32)
        }
        _ => false,
    }
}

/// The liaison a message reports, if it is a liaison change of `unit`.
fn liaison_of(m: &pb::Message, unit: &str) -> Option<pb::LiaisonChange> {
    match decode_step(m) {
        Ok(Step::LiaisonChange(l)) if m.sender == unit => Some(l),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pending::tests::step_message;
    use tongbao_proto::pb::Kind;

    fn pin(seq: u64) -> pb::EntryPin {
        pb::EntryPin {
            channel: "civil-affairs".into(),
            seq,
            leaf_hash: vec![7; 32],
        }
    }

    fn answer(unit: &str, consent: bool, draft: u64) -> pb::Message {
        step_message(
            unit,
            Kind::MinutesConsent,
            Step::MinutesAnswer(pb::MinutesAnswer {
                meeting_id: "m-1".into(),
                draft: Some(pin(draft)),
                consent,
                comments: String::new(),
            }),
        )
    }

    fn recorded(unit: &str, state: pb::AnswerState) -> pb::AttendeeAnswer {
        pb::AttendeeAnswer {
            unit: unit.into(),
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn an_answer_counts_only_as_recorded_on_the_current_draft() {
        let current = pin(4);
        let now = Some(&current);
        let consented = recorded("tax", pb::AnswerState::Consented);
        assert!(answer_holds(
            &answer("tax", true, 4),
            "m-1",
            now,
            &consented
        ));
        // Another unit's entry, an earlier draft, another meeting, or an
        // objection recorded as a consent: refused.
        assert!(!answer_holds(
            &answer("finance", true, 4),
            "m-1",
            now,
            &consented
        ));
        assert!(!answer_holds(
            &answer("tax", true, 2),
            "m-1",
            now,
            &consented
        ));
        assert!(!answer_holds(
            &answer("tax", true, 4),
            "m-2",
            now,
            &consented
        ));
        assert!(!answer_holds(
            &answer("tax", false, 4),
            "m-1",
            now,
            &consented
        ));
        let objected = recorded("tax", pb::AnswerState::Objected);
        assert!(answer_holds(
            &answer("tax", false, 4),
            "m-1",
            now,
            &objected
        ));
    }

    #[test]
    fn a_proposal_and_a_liaison_count_only_from_their_own_sender() {
        let proposal = step_message(
            "civil-affairs",
            Kind::MeetingProposal,
            Step::MeetingProposal(pb::MeetingProposal {
                meeting_id: "m-1".into(),
                ..Default::default()
            }),
        );
        assert!(proposal_of(&proposal, "m-1", "civil-affairs").is_some());
        assert!(proposal_of(&proposal, "m-1", "tax").is_none());
        assert!(proposal_of(&proposal, "m-9", "civil-affairs").is_none());
        let change = step_message(
            "tax",
            Kind::LiaisonChange,
            Step::LiaisonChange(pb::LiaisonChange {
                name: "Wang Li".into(),
                ..Default::default()
            }),
        );
        assert!(liaison_of(&change, "tax").is_some());
        assert!(liaison_of(&change, "finance").is_none());
        assert!(liaison_of(&proposal, "civil-affairs").is_none());
    }
}
