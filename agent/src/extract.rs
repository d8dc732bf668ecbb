//! Reading requests: JSON bodies, query strings and path parameters whose
//! refusals take the agent's error shape, never echoing much of the input.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// Bytes of a parser's complaint repeated back (it may quote the input).
const SHOWN_BYTES: usize = 200;

fn shown(text: &str) -> String {
    tongbao_proto::echo::capped(text, SHOWN_BYTES).into_owned()
}

/// A JSON request body; too large is 413, malformed is 400 `bad_json`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is larger than the agent accepts (--max-request-bytes)",
                )
            } else {
                ApiError::bad_request(shown(&r.body_text()))
            }
        })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!(
                    "the request body is not the JSON this call takes: {}",
                    shown(&e.to_string())
                ),
            )
        })
    }
}

/// A query string; malformed is 400 `bad_query`.
pub struct QueryArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryArgs(q.0))
            .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", shown(&r.body_text())))
    }
}

/// Path parameters; malformed is 400 `bad_path`.
pub struct PathArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathArgs(p.0))
            .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "bad_path", shown(&r.body_text())))
    }
}
