//! For offices: the delivery audit per message and the per-unit summary
//! (the hub's `Audit` service). Every receipt shown is checked against the
//! recipient's registered key and the audited entry's leaf hash first.

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

/// The check of each recipient's answer: "verified", "redacted" (exception
/// feedback shown without its free text, which cannot be checked) or null
/// without an answer. An answer that fails its check refuses the call.
async fn answer_checks(s: &AppState, e: &pb::AuditedEntry) -> Result<Vec<Value>, ApiError> {
    let mut checks = Vec::with_capacity(e.recipients.len());
    for r in &e.recipients {
        if r.answer.is_none() {
            checks.push(Value::Null);
            continue;
        }
        match s.client.verify_answer(e, r).await {
            Ok(_) => checks.push("verified".into()),
            Err(ClientError::Redacted { .. }) => checks.push("redacted".into()),
            Err(other) => return Err(other.into()),
        }
    }
    Ok(checks)
}

/// Entries of the office's mechanism with every recipient's state.
pub async fn deliveries(
    State(s): State<AppState>,
    QueryArgs(q): QueryArgs<DeliveriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let r = s.client.audit_deliveries(request_of(q)?).await?;
    let mut entries = Vec::with_capacity(r.entries.len());
    for e in &r.entries {
        entries.push(views::audited(e, &answer_checks(&s, e).await?));
    }
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
