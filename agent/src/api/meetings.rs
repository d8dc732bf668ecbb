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
    let proposal = match decode_step(e.message()) {
        Ok(Step::MeetingProposal(p)) if p.meeting_id == id && e.message().sender == m.proposer => p,
        _ => return Err(mismatch(&e, "it is not this meeting's proposal by its proposer").into()),
    };
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
    let holds = match decode_step(e.message()) {
        Ok(Step::MinutesAnswer(x)) => {
            x.meeting_id == id
                && e.message().sender == a.unit
                && x.draft.as_ref() == draft
                && x.consent == (a.state == pb::AnswerState::Consented as i32)
        }
        _ => false,
    };
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
    let l = match decode_step(e.message()) {
        Ok(Step::LiaisonChange(l)) if e.message().sender == rec.unit => l,
        _ => return Err(mismatch(&e, "it is not a liaison change of this unit").into()),
    };
    Ok(json!({
        "name": l.name,
        "title": l.title,
        "contact": l.contact,
        "entry": crate::views::pin(&pin),
        "hub_time": format_micros(e.entry.hub_micros),
    }))
}
