//! For units: the workflow steps waiting on this unit, minutes drafts it
//! has not answered (会签) and joint drafts it has not co-signed (联合署名).
//! The hub's state says which are open; what is shown comes from the
//! signed draft entry, read and verified by the library, and must be the
//! very entry the state pins.

use crate::api::scan::{self, DEFAULT_SCAN};
use crate::error::ApiError;
use crate::extract::QueryArgs;
use crate::routes::AppState;
use crate::views;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use tongbao_client::{ClientError, VerifiedEntry};
use tongbao_proto::pb::{self, workflow_step::Step};
use tongbao_proto::workflow::decode_step;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingQuery {
    #[serde(default = "default_scan")]
    scan: u64,
}

fn default_scan() -> u64 {
    DEFAULT_SCAN
}

/// Minutes drafts and joint drafts among the newest inbox entries that
/// still wait for this unit's answer or co-signature.
pub async fn pending(
    State(s): State<AppState>,
    QueryArgs(q): QueryArgs<PendingQuery>,
) -> Result<Json<Value>, ApiError> {
    let me = scan::own_unit(&s)?;
    let (steps, scanned_after) = scan::recent_steps(&s, q.scan).await?;
    let meetings = scan::distinct_newest(steps.iter().filter_map(|st| match st {
        Step::MinutesDraft(d) => Some(d.meeting_id.clone()),
        _ => None,
    }));
    let notices = scan::distinct_newest(steps.iter().filter_map(|st| match st {
        Step::JointDraft(d) => Some(d.notice_id.clone()),
        _ => None,
    }));
    let mut minutes = Vec::new();
    for id in meetings.iter().rev() {
        if let Some(v) = open_minutes(&s, &me, id).await? {
            minutes.push(v);
        }
    }
    let mut joint = Vec::new();
    for id in notices.iter().rev() {
        if let Some(v) = open_joint(&s, &me, id).await? {
            joint.push(v);
        }
    }
    Ok(Json(json!({
        "unit": me,
        "minutes": minutes,
        "joint_notices": joint,
        "scanned_after": scanned_after,
    })))
}

/// The pinned entry, read and verified, refused unless it is the entry
/// the pin names (same leaf hash).
pub async fn pinned_entry(s: &AppState, pin: &pb::EntryPin) -> Result<VerifiedEntry, ApiError> {
    let e = s.client.get_entry(&pin.channel, pin.seq).await?;
    if e.leaf_hash.as_slice() != pin.leaf_hash.as_slice() {
        return Err(mismatch(&e, "its leaf hash differs from the workflow state's pin").into());
    }
    Ok(e)
}

/// A verification failure: the hub's workflow state and the signed entry
/// it names disagree.
pub fn mismatch(e: &VerifiedEntry, reason: &str) -> ClientError {
    ClientError::Integrity {
        channel: e.channel().to_string(),
        seq: e.seq(),
        reason: reason.to_string(),
    }
}

/// The meeting's current draft, when this unit attends and has not
/// answered it.
async fn open_minutes(s: &AppState, me: &str, id: &str) -> Result<Option<Value>, ApiError> {
    let m = s.client.meeting(id).await?;
    let waiting = m.stage == pb::MeetingStage::MinutesDrafted as i32
        && m.answers
            .iter()
            .any(|a| a.unit == me && a.state == pb::AnswerState::NotAnswered as i32);
    let Some(pin) = m.current_draft.as_ref().filter(|_| waiting) else {
        return Ok(None);
    };
    let e = pinned_entry(s, pin).await?;
    let draft = minutes_draft(e.message(), id, &m.proposer).ok_or_else(|| {
        mismatch(
            &e,
            "it is not a minutes draft of this meeting by its proposer",
        )
    })?;
    let p = m.proposal.unwrap_or_default();
    Ok(Some(json!({
        "meeting_id": id,
        "title": p.title,
        "mechanisms": p.mechanisms,
        "proposer": m.proposer,
        "revision": draft.revision,
        "text": draft.text,
        "draft": views::entry(&e),
        "not_answered": not_answered(&m.answers),
    })))
}

/// Attending units that have not answered the current draft.
pub fn not_answered(answers: &[pb::AttendeeAnswer]) -> Vec<String> {
    answers
        .iter()
        .filter(|a| a.state == pb::AnswerState::NotAnswered as i32)
        .map(|a| a.unit.clone())
        .collect()
}

/// The notice's draft, when this unit is a named co-issuer that has not
/// co-signed and the notice has not gone out.
async fn open_joint(s: &AppState, me: &str, id: &str) -> Result<Option<Value>, ApiError> {
    let n = s.client.joint_notice(id).await?;
    let waiting = n.release.is_none() && n.not_signed.iter().any(|u| u == me);
    let Some(pin) = n.draft.as_ref().filter(|_| waiting) else {
        return Ok(None);
    };
    let e = pinned_entry(s, pin).await?;
    // What is shown is what the drafter signed, not the hub's summary.
    let content = joint_draft(e.message(), id, &n.drafter)
        .ok_or_else(|| mismatch(&e, "it is not a joint draft of this notice by its drafter"))?;
    if !content.co_issuers.iter().any(|u| u == me) {
        return Ok(None);
    }
    let a = content.audience.clone().unwrap_or_default();
    Ok(Some(json!({
        "notice_id": id,
        "kind": tongbao_proto::kinds::name(e.message().kind),
        "drafter": n.drafter,
        "title": content.title,
        "text": content.text,
        "mechanism": content.mechanism,
        "co_issuers": content.co_issuers,
        "not_signed": n.not_signed,
        "audience": { "units": a.units, "mechanisms": a.mechanisms, "offices": a.offices, "leading_group": a.leading_group },
        "case_id": content.case_id,
        "draft": views::entry(&e),
    })))
}

/// The minutes draft a message carries, if it is one of meeting `id`
/// signed by its proposer.
fn minutes_draft(m: &pb::Message, id: &str, proposer: &str) -> Option<pb::MinutesDraft> {
    match decode_step(m) {
        Ok(Step::MinutesDraft(d)) if d.meeting_id == id && m.sender == proposer => Some(d),
        _ => None,
    }
}

/// The content a message drafts, if it is a joint draft of notice `id`
/// signed by its drafter.
fn joint_draft(m: &pb::Message, id: &str, drafter: &str) -> Option<pb::JointContent> {
    match decode_step(m) {
        Ok(Step::JointDraft(d)) if d.notice_id == id && m.sender == drafter => {
            Some(d.content.unwrap_or_default())
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tongbao_proto::pb::Kind;
    use tongbao_proto::workflow::{CONTENT_TYPE, encode_step};

    /// A message carrying `step` as `kind`, in the name of `sender`.
    pub fn step_message(sender: &str, kind: Kind, step: Step) -> pb::Message {
        pb::Message {
            sender: sender.into(),
            kind: kind as i32,
            content_type: CONTENT_TYPE.into(),
            body: encode_step(step).into(),
            ..Default::default()
        }
    }

    fn draft(id: &str) -> Step {
        Step::MinutesDraft(pb::MinutesDraft {
            meeting_id: id.into(),
            revision: 1,
            text: "Agreed.".into(),
            supersedes: None,
        })
    }

    #[test]
    fn only_the_proposers_draft_of_this_meeting_counts() {
        let good = step_message("civil-affairs", Kind::Minutes, draft("m-1"));
        assert!(minutes_draft(&good, "m-1", "civil-affairs").is_some());
        assert!(minutes_draft(&good, "m-2", "civil-affairs").is_none());
        assert!(minutes_draft(&good, "m-1", "tax").is_none());
        let issue = step_message(
            "civil-affairs",
            Kind::Minutes,
            Step::MinutesIssue(pb::MinutesIssue {
                meeting_id: "m-1".into(),
                ..Default::default()
            }),
        );
        assert!(minutes_draft(&issue, "m-1", "civil-affairs").is_none());
        let mut plain = good.clone();
        plain.content_type = "text/plain".into();
        assert!(minutes_draft(&plain, "m-1", "civil-affairs").is_none());
    }

    #[test]
    fn only_the_drafters_draft_of_this_notice_counts() {
        let content = pb::JointContent {
            title: "Foundation Y".into(),
            ..Default::default()
        };
        let step = Step::JointDraft(pb::JointDraft {
            notice_id: "n-1".into(),
            content: Some(content.clone()),
        });
        let good = step_message("finance", Kind::JointNotice, step.clone());
        assert_eq!(joint_draft(&good, "n-1", "finance"), Some(content));
        assert!(joint_draft(&good, "n-2", "finance").is_none());
        assert!(joint_draft(&good, "n-1", "tax").is_none());
        // A joint draft cannot ride on a minutes entry.
        let wrong_kind = step_message("finance", Kind::Minutes, step);
        assert!(joint_draft(&wrong_kind, "n-1", "finance").is_none());
    }
}
