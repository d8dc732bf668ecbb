//! For offices: the delivery audit per message and the per-unit summary
//! (the hub's `Audit` service). Every answer shown (receipt or exception
//! feedback) is checked as the inbox's entries are first: the recipient's
//! registered key, the audited entry's leaf hash, and the answer's
//! inclusion in a verified checkpoint (one batch of proofs per call).

use crate::error::ApiError;
use crate::extract::QueryArgs;
use crate::routes::AppState;
use crate::views;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use tongbao_client::ClientError;
use tongbao_proto::{kinds, pb};

/// Audited entries of one call, at most.
pub const MAX_AUDIT: u32 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    #[serde(default)]
    mechanism: String,
    #[serde(default)]
    since_micros: i64,
    #[serde(default)]
    until_micros: i64,
    #[serde(default)]
    sender: String,
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    overdue: bool,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

fn request_of(q: DeliveriesQuery) -> Result<pb::ListDeliveriesRequest, ApiError> {
    if q.limit == 0 || q.limit > MAX_AUDIT {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_AUDIT}"
        )));
    }
    let kind = match q.kind.as_deref() {
        Some(k) => kinds::parse(k).ok_or_else(|| {
            ApiError::bad_request(format!("unknown kind {:?}", tongbao_proto::echo::shown(k)))
        })? as i32,
        None => 0,
    };
    let state = match q.state.as_deref() {
        Some(st) => views::STATES
            .iter()
            .find(|(_, n)| *n == st)
            .map(|(v, _)| *v as i32)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown state {:?}; use one of: {}",
                    tongbao_proto::echo::shown(st),
                    views::names(views::STATES)
                ))
            })?,
        None => 0,
    };
    Ok(pb::ListDeliveriesRequest {
        mechanism: q.mechanism,
        since_micros: q.since_micros,
        until_micros: q.until_micros,
        sender: q.sender,
        recipient: q.recipient,
        kind,
        state,
        overdue_only: q.overdue,
        as_of_micros: 0,
        limit: q.limit,
    })
}

/// What `answer_check` says of a state that claims an answer the audit
/// does not show: nothing could be checked.
pub const NO_ANSWER_ENTRY: &str = "unverified: no answer entry";

/// The check of a recipient that shows no answer entry: null while none
/// is due, [`NO_ANSWER_ENTRY`] when the state claims one.
fn without_answer(r: &pb::RecipientDelivery) -> Value {
    let answered = r.state == pb::DeliveryState::Acknowledged as i32
        || r.state == pb::DeliveryState::Exception as i32;
    if answered {
        NO_ANSWER_ENTRY.into()
    } else {
        Value::Null
    }
}

/// The check of each recipient's answer of every entry: "verified",
/// "redacted" (exception feedback shown without its free text, which
/// cannot be checked), [`NO_ANSWER_ENTRY`], or null without an answer.
/// Answers marked verified are proven included together; an answer that
/// fails its check refuses the call.
async fn answer_checks(
    s: &AppState,
    entries: &[pb::AuditedEntry],
) -> Result<Vec<Vec<Value>>, ApiError> {
    let mut checks = Vec::with_capacity(entries.len());
    let mut answers = Vec::new();
    for e in entries {
        let mut of_entry = Vec::with_capacity(e.recipients.len());
        for r in &e.recipients {
            if r.answer.is_none() {
                of_entry.push(without_answer(r));
                continue;
            }
            match s.client.verify_answer(e, r).await {
                Ok(answer) => {
                    answers.push(answer);
                    of_entry.push("verified".into());
                }
                Err(ClientError::Redacted { .. }) => of_entry.push("redacted".into()),
                Err(other) => return Err(other.into()),
            }
        }
        checks.push(of_entry);
    }
    if s.client.verifies_inclusion() && !answers.is_empty() {
        s.client
            .prove_included(&answers.iter().collect::<Vec<_>>())
            .await?;
    }
    Ok(checks)
}

/// Entries of the office's mechanism with every recipient's state.
pub async fn deliveries(
    State(s): State<AppState>,
    QueryArgs(q): QueryArgs<DeliveriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let r = s.client.audit_deliveries(request_of(q)?).await?;
    let checks = answer_checks(&s, &r.entries).await?;
    let entries: Vec<Value> = r
        .entries
        .iter()
        .zip(&checks)
        .map(|(e, check)| views::audited(e, check))
        .collect();
    Ok(Json(json!({
        "entries": entries,
        "as_of": tongbao_client::format_micros(r.as_of_micros),
        "as_of_micros": r.as_of_micros,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitsQuery {
    #[serde(default)]
    mechanism: String,
    #[serde(default)]
    since_micros: i64,
    #[serde(default)]
    until_micros: i64,
}

/// Per-unit counts and times to acknowledge.
pub async fn units(
    State(s): State<AppState>,
    QueryArgs(q): QueryArgs<UnitsQuery>,
) -> Result<Json<Value>, ApiError> {
    let r = s
        .client
        .audit_units(pb::UnitSummaryRequest {
            mechanism: q.mechanism,
            since_micros: q.since_micros,
            until_micros: q.until_micros,
            as_of_micros: 0,
        })
        .await?;
    Ok(Json(json!({
        "units": r.units.iter().map(views::unit_stats).collect::<Vec<_>>(),
        "as_of": tongbao_client::format_micros(r.as_of_micros),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_that_claims_an_answer_it_does_not_show_is_unverified() {
        let of = |state: pb::DeliveryState| {
            without_answer(&pb::RecipientDelivery {
                recipient: "civil-affairs".into(),
                state: state as i32,
                ..Default::default()
            })
        };
        assert_eq!(of(pb::DeliveryState::Acknowledged), NO_ANSWER_ENTRY);
        assert_eq!(of(pb::DeliveryState::Exception), NO_ANSWER_ENTRY);
        assert_eq!(of(pb::DeliveryState::Pending), Value::Null);
        assert_eq!(of(pb::DeliveryState::Fetched), Value::Null);
    }
}
