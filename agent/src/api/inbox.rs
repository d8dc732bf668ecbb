//! The inbox: pages (with an optional long-poll wait), one entry, and
//! acknowledgement with one signed receipt. Every entry is verified by the
//! client library (signature, leaf hash, inclusion) before it is shown.

use crate::error::ApiError;
use crate::extract::{JsonBody, PathArgs, QueryArgs};
use crate::routes::AppState;
use crate::views;
use axum::Json;
use axum::extract::State;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// Entries of one page, at most (the hub's `max_page_size`).
pub const MAX_PAGE: u32 = 1000;
/// Entries one acknowledgement names, at most.
pub const MAX_ACK_ENTRIES: usize = 100;
/// Longest long-poll wait.
pub const MAX_WAIT_MS: u64 = 30_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: u32,
    /// Long poll: when the page would be empty, wait this long for an entry.
    #[serde(default)]
    wait_ms: u64,
}

fn default_limit() -> u32 {
    100
}

/// A page of the inbox after a cursor.
pub async fn page(
    State(s): State<AppState>,
    QueryArgs(q): QueryArgs<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.limit == 0 || q.limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    if q.wait_ms > MAX_WAIT_MS {
        return Err(ApiError::bad_request(format!(
            "wait_ms must be at most {MAX_WAIT_MS}"
        )));
    }
    let mut page = s.client.pull(q.after, q.limit).await?;
    if page.entries.is_empty() && q.wait_ms > 0 {
        let _permit = s.stream_permit()?;
        // Woken by the first new entry (or the wait running out), then
        // read as a page like any other.
        let mut live = Box::pin(s.client.subscribe(q.after));
        let _ = tokio::time::timeout(Duration::from_millis(q.wait_ms), live.next()).await;
        drop(live);
        page = s.client.pull(q.after, q.limit).await?;
    }
    Ok(Json(json!({
        "entries": page.entries.iter().map(views::entry).collect::<Vec<_>>(),
        "next_after": page.next_after(q.after),
        "head": page.head,
    })))
}

/// One entry by channel and sequence number.
pub async fn entry(
    State(s): State<AppState>,
    PathArgs((channel, seq)): PathArgs<(String, u64)>,
) -> Result<Json<Value>, ApiError> {
    let e = s.client.get_entry(&channel, seq).await?;
    Ok(Json(views::entry(&e)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRef {
    channel: String,
    seq: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    entries: Vec<EntryRef>,
}

/// Acknowledges entries: each is read and verified first, then one receipt
/// signed by this unit names them all (position and leaf hash).
pub async fn acknowledge(
    State(s): State<AppState>,
    JsonBody(r): JsonBody<AckRequest>,
) -> Result<Json<Value>, ApiError> {
    if r.entries.is_empty() || r.entries.len() > MAX_ACK_ENTRIES {
        return Err(ApiError::bad_request(format!(
            "name 1 to {MAX_ACK_ENTRIES} entries as {{\"channel\", \"seq\"}}"
        )));
    }
    let mut verified = Vec::with_capacity(r.entries.len());
    for e in &r.entries {
        verified.push(s.client.get_entry(&e.channel, e.seq).await?);
    }
    let outcome = s.client.ack(&verified.iter().collect::<Vec<_>>()).await?;
    Ok(Json(views::ack_outcome(&outcome)))
}

/// Who this agent speaks for.
pub async fn party(State(s): State<AppState>) -> Json<Value> {
    let identity = s.client.identity();
    let (kind, id) = match identity {
        tongbao_proto::identity::Principal::Unit(u) => ("unit", u.as_str()),
        tongbao_proto::identity::Principal::Office(m) => ("office", m.as_str()),
        tongbao_proto::identity::Principal::Operator(o) => ("operator", o.as_str()),
        tongbao_proto::identity::Principal::LeadingGroup => ("leading-group", ""),
    };
    Json(json!({ "identity": identity.uri(), "kind": kind, "id": id }))
}
