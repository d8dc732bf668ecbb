//! Live delivery by server-sent events: `GET /v1/events?after=CURSOR`
//! streams each verified entry of the inbox as an `entry` event whose id is
//! its cursor, so a reconnecting reader (`Last-Event-ID`) resumes without
//! gaps or duplicates. A failure that retrying cannot mend ends the stream
//! with one `error` event in the agent's error shape.

use crate::error::ApiError;
use crate::extract::QueryArgs;
use crate::routes::AppState;
use crate::views;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use std::convert::Infallible;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    after: u64,
}

/// Where to start: `Last-Event-ID` (a reconnect) wins over `after`.
fn start_after(headers: &HeaderMap, after: u64) -> Result<u64, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(after),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                ApiError::bad_request("Last-Event-ID must be an inbox cursor (a number)")
            }),
    }
}

fn event_of(item: Result<tongbao_client::VerifiedEntry, tongbao_client::ClientError>) -> Event {
    match item {
        Ok(e) => Event::default()
            .event("entry")
            .id(e.cursor.to_string())
            .data(views::entry(&e).to_string()),
        Err(e) => {
            let e = ApiError::from(e);
            Event::default()
                .event("error")
                .data(serde_json::json!({ "error": e.message, "code": e.code }).to_string())
        }
    }
}

pub async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    QueryArgs(q): QueryArgs<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = start_after(&headers, q.after)?;
    // Held by the stream: freed when the reader goes.
    let permit = s.stream_permit()?;
    let mut failed = false;
    let stream = s
        .client
        .subscribe(after)
        // The error event is the last one.
        .take_while(move |item| {
            let go_on = !failed;
            failed |= item.is_err();
            futures::future::ready(go_on)
        })
        .map(move |item| {
            let _held = &permit;
            Ok(event_of(item))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
