//! Workflow steps a unit takes through the agent: consent to (or object
//! to) the current minutes of a meeting, and co-sign a joint notice. The
//! client library checks what it signs against the workflow's entries.

use crate::error::ApiError;
use crate::extract::{JsonBody, PathArgs};
use crate::routes::AppState;
use crate::views;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinutesAnswer {
    consent: bool,
    #[serde(default)]
    comments: String,
}

/// Consent to, or object to, the meeting's current minutes draft.
pub async fn answer_minutes(
    State(s): State<AppState>,
    PathArgs(meeting_id): PathArgs<String>,
    JsonBody(a): JsonBody<MinutesAnswer>,
) -> Result<Json<Value>, ApiError> {
    let r = s
        .client
        .answer_current_minutes(&meeting_id, a.consent, &a.comments)
        .await?;
    Ok(Json(views::push_receipt(&r)))
}

/// Co-sign a joint notice this unit is named co-issuer of.
pub async fn co_sign(
    State(s): State<AppState>,
    PathArgs(notice_id): PathArgs<String>,
) -> Result<Json<Value>, ApiError> {
    let r = s.client.co_sign(&notice_id).await?;
    Ok(Json(views::push_receipt(&r)))
}
