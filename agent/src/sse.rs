//! Live delivery by server-sent events: `GET /v1/events?after=CURSOR`
//! streams each verified entry of the inbox, once its inclusion is proven
//! (`proven.rs`), as an `entry` event whose id is its cursor, so a
//! reconnecting reader (`Last-Event-ID`) resumes without gaps or
//! duplicates. A failure that retrying cannot mend ends the stream with
//! one `error` event in the agent's error shape.

use crate::error::ApiError;
use crate::extract::QueryArgs;
use crate::proven::{self, Live};
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

fn event_of(item: Live<tongbao_client::VerifiedEntry>) -> Event {
    match item {
        Live::Entry(e) => Event::default()
            .event("entry")
            .id(e.cursor.to_string())
            .data(views::entry(&e).to_string()),
        Live::Ended(e) | Live::Refused(e) => error_event(&ApiError::from(e)),
    }
}

/// The last event of a stream: the error JSON, capped as every refusal is.
fn error_event(e: &ApiError) -> Event {
    Event::default()
        .event("error")
        .data(serde_json::json!({ "error": e.capped_message(), "code": e.code }).to_string())
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
    let stream = proven::live(&s.client, after)
        // The error event is the last one.
        .take_while(move |item| {
            let go_on = !failed;
            failed |= !matches!(item, Live::Entry(_));
            futures::future::ready(go_on)
        })
        .map(move |item| {
            let _held = &permit;
            Ok(event_of(item))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn the_error_event_caps_the_hubs_message() -> Result<(), Box<dyn std::error::Error>> {
        let huge = "x".repeat(100_000);
        let e = ApiError::from(tongbao_client::ClientError::Rejected {
            code: tonic::Code::InvalidArgument,
            message: huge,
        });
        let sse = Sse::new(futures::stream::iter([Ok::<_, Infallible>(error_event(
            &e,
        ))]));
        let body = sse.into_response().into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&body);
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .ok_or("no data line")?;
        let v: serde_json::Value = serde_json::from_str(data)?;
        let shown = v["error"].as_str().ok_or("no error text")?;
        assert!(shown.len() <= 1024, "{} bytes echoed", shown.len());
        assert!(shown.starts_with("hub refused the request"), "{shown}");
        assert_eq!(v["code"], "invalid_argument");
        Ok(())
    }
}
