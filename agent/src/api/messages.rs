//! `POST /v1/messages` (the agent signs with the party's key and pushes)
//! and `POST /v1/feedback` (exception feedback instead of a receipt).

use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::routes::AppState;
use crate::views;
use axum::Json;
use axum::extract::State;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use tongbao_client::Draft;
use tongbao_proto::{kinds, pb};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AudienceIn {
    units: Vec<String>,
    mechanisms: Vec<String>,
    offices: Vec<String>,
    leading_group: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsIn {
    sharing: Option<String>,
    priority: Option<String>,
    /// RFC 3339.
    ack_deadline: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRefIn {
    channel: String,
    seq: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ReferencesIn {
    case_id: Option<String>,
    reply_to: Option<EntryRefIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    kind: String,
    #[serde(default)]
    audience: AudienceIn,
    subject: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    labels: LabelsIn,
    #[serde(default)]
    references: ReferencesIn,
}

fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    tongbao_proto::echo::shown(s)
}

fn kind_of(name: &str) -> Result<pb::Kind, ApiError> {
    let pushable = || {
        kinds::pushable()
            .filter(|k| *k != "exception-feedback")
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kinds::parse(name) {
        Some(pb::Kind::ExceptionFeedback) => Err(ApiError::bad_request(
            "exception feedback is sent with POST /v1/feedback, which names the entry it answers",
        )),
        Some(k) if kinds::is_pushable(k as i32) => Ok(k),
        Some(_) => Err(ApiError::bad_request(format!(
            "kind {name:?} is a workflow step or written by its own call; this call sends: {}",
            pushable()
        ))),
        None => Err(ApiError::bad_request(format!(
            "unknown kind {:?}; use one of: {}",
            shown(name),
            pushable()
        ))),
    }
}

fn body_of(text: Option<String>, b64: Option<String>) -> Result<Vec<u8>, ApiError> {
    match (text, b64) {
        (Some(t), None) => Ok(t.into_bytes()),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map_err(|e| ApiError::bad_request(format!("body_base64 is not standard base64: {e}"))),
        (None, None) => Err(ApiError::bad_request(
            "give the body as \"body\" (text) or \"body_base64\"",
        )),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give either \"body\" or \"body_base64\", not both",
        )),
    }
}

fn named<T: Copy>(table: &[(T, &'static str)], what: &str, name: &str) -> Result<T, ApiError> {
    table
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(v, _)| *v)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown {what} {:?}; use one of: {}",
                shown(name),
                views::names(table)
            ))
        })
}

fn labels_of(l: LabelsIn) -> Result<pb::Labels, ApiError> {
    let mut labels = pb::Labels::default();
    if let Some(s) = l.sharing {
        labels.sharing = named(views::SHARING, "sharing", &s)? as i32;
    }
    if let Some(p) = l.priority {
        labels.priority = named(views::PRIORITY, "priority", &p)? as i32;
    }
    if let Some(d) = l.ack_deadline {
        let t = time::OffsetDateTime::parse(&d, &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "ack_deadline {:?} is not an RFC 3339 time like 2026-12-01T08:00:00Z",
                    shown(&d)
                ))
            })?;
        labels.ack_deadline_micros = i64::try_from(t.unix_timestamp_nanos() / 1000)
            .map_err(|_| ApiError::bad_request("ack_deadline is out of range"))?;
    }
    Ok(labels)
}

fn draft_of(r: SendRequest) -> Result<Draft, ApiError> {
    let kind = kind_of(&r.kind)?;
    let a = r.audience;
    if a.units.is_empty() && a.mechanisms.is_empty() && a.offices.is_empty() && !a.leading_group {
        return Err(ApiError::bad_request(
            "name an audience: \"audience\": {\"units\": [...], \"mechanisms\": [...], \"offices\": [...], \"leading_group\": true}",
        ));
    }
    let mut draft = Draft::new(kind, r.subject, body_of(r.body, r.body_base64)?)
        .with_labels(labels_of(r.labels)?)
        .to_units(a.units);
    draft.audience.mechanisms = a.mechanisms;
    draft.audience.offices = a.offices;
    draft.audience.leading_group = a.leading_group;
    if let Some(c) = r.content_type {
        draft = draft.with_content_type(c);
    }
    if let Some(id) = r.message_id {
        draft = draft.with_id(id);
    }
    if let Some(c) = r.references.case_id {
        draft = draft.with_case(c);
    }
    if let Some(to) = r.references.reply_to {
        draft = draft.in_reply_to(to.channel, to.seq);
    }
    Ok(draft)
}

/// Signs and pushes; answers once the hub made the entry durable.
pub async fn send(
    State(s): State<AppState>,
    JsonBody(request): JsonBody<SendRequest>,
) -> Result<Json<Value>, ApiError> {
    let draft = draft_of(request)?;
    let receipt = s.client.push(draft).await?;
    Ok(Json(views::push_receipt(&receipt)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    channel: String,
    seq: u64,
    problem: String,
    #[serde(default)]
    text: String,
}

/// Exception feedback (异常反馈) on an entry of this party's inbox, sent
/// to the entry's sender instead of a receipt.
pub async fn feedback(
    State(s): State<AppState>,
    JsonBody(r): JsonBody<FeedbackRequest>,
) -> Result<Json<Value>, ApiError> {
    let problem = named(views::PROBLEMS, "problem", &r.problem)?;
    let entry = s.client.get_entry(&r.channel, r.seq).await?;
    let receipt = s
        .client
        .push(Draft::exception(&entry, problem, r.text))
        .await?;
    Ok(Json(views::push_receipt(&receipt)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<Draft, ApiError> {
        let r: SendRequest =
            serde_json::from_str(json).map_err(|e| ApiError::bad_request(e.to_string()))?;
        draft_of(r)
    }

    #[test]
    fn a_full_request_becomes_the_draft_it_names() -> Result<(), ApiError> {
        let d = request(
            r#"{"kind":"lead","audience":{"units":["public-security"],"offices":["fund-supervision"]},
                "subject":"s","body_base64":"AAEC","labels":{"priority":"urgent","sharing":"not-shared",
                "ack_deadline":"2026-12-01T00:00:00Z"},"references":{"case_id":"c-1","reply_to":{"channel":"tax","seq":4}}}"#,
        )?;
        assert_eq!(d.kind, pb::Kind::Lead as i32);
        assert_eq!(d.body, vec![0, 1, 2]);
        assert_eq!(d.audience.units, ["public-security"]);
        assert_eq!(d.audience.offices, ["fund-supervision"]);
        assert_eq!(d.labels.priority, pb::Priority::Urgent as i32);
        assert_eq!(d.labels.sharing, pb::SharingCondition::NotShared as i32);
        assert_eq!(d.labels.ack_deadline_micros, 1_796_083_200_000_000);
        let refs = d.references.unwrap_or_default();
        assert_eq!(refs.case_id, "c-1");
        assert_eq!(
            refs.reply_to.map(|r| (r.channel, r.seq)),
            Some(("tax".into(), 4))
        );
        Ok(())
    }

    #[test]
    fn kinds_bodies_audiences_and_labels_are_checked_before_signing() {
        for bad in [
            r#"{"kind":"receipt","audience":{"units":["tax"]},"subject":"s","body":""}"#,
            r#"{"kind":"minutes","audience":{"units":["tax"]},"subject":"s","body":""}"#,
            r#"{"kind":"exception-feedback","audience":{"units":["tax"]},"subject":"s","body":""}"#,
            r#"{"kind":"gossip","audience":{"units":["tax"]},"subject":"s","body":""}"#,
            r#"{"kind":"lead","subject":"s","body":""}"#,
            r#"{"kind":"lead","audience":{"units":["tax"]},"subject":"s"}"#,
            r#"{"kind":"lead","audience":{"units":["tax"]},"subject":"s","body":"","body_base64":""}"#,
            r#"{"kind":"lead","audience":{"units":["tax"]},"subject":"s","body_base64":"!!"}"#,
            r#"{"kind":"lead","audience":{"units":["tax"]},"subject":"s","body":"","labels":{"priority":"soon"}}"#,
            r#"{"kind":"lead","audience":{"units":["tax"]},"subject":"s","body":"","labels":{"ack_deadline":"tomorrow"}}"#,
        ] {
            let e = request(bad).err();
            assert!(
                e.as_ref()
                    .is_some_and(|e| e.status == axum::http::StatusCode::BAD_REQUEST),
                "{bad} gave {e:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused_not_ignored() {
        let r: Result<SendRequest, _> = serde_json::from_str(
            r#"{"kind":"lead","audience":{"units":["tax"]},"subject":"s","body":"","classification":"secret"}"#,
        );
        assert!(r.is_err());
    }
}
