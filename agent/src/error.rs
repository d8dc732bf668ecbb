//! The one shape every refusal of the agent takes, `{"error", "code"}`,
//! and the one table from the hub's gRPC statuses to HTTP statuses, so a
//! departmental system reads the hub's reason the same way everywhere.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tongbao_client::ClientError;
use tonic::Code;

/// Bytes of the longest `error` text the agent sends back.
const MAX_ERROR_BYTES: usize = 1024;

/// A refusal: an HTTP status, a stable machine-readable code and a short
/// message an engineer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The message as it may be sent back: at most `MAX_ERROR_BYTES`.
    pub fn capped_message(&self) -> std::borrow::Cow<'_, str> {
        tongbao_proto::echo::capped(&self.message, MAX_ERROR_BYTES)
    }

    /// A request the agent itself finds malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.capped_message(), "code": self.code });
        (self.status, axum::Json(body)).into_response()
    }
}

/// The HTTP status and code of a hub refusal with this gRPC status.
pub fn http_of_grpc(code: Code) -> (StatusCode, &'static str) {
    match code {
        Code::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_argument"),
        Code::OutOfRange => (StatusCode::BAD_REQUEST, "out_of_range"),
        Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
        Code::FailedPrecondition => (StatusCode::CONFLICT, "failed_precondition"),
        Code::Aborted => (StatusCode::CONFLICT, "aborted"),
        // The hub refused this party's key or certificate: the caller's
        // token was fine, so not 401.
        Code::Unauthenticated => (StatusCode::FORBIDDEN, "unauthenticated"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
        Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
        _ => (StatusCode::BAD_GATEWAY, "hub_error"),
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        let (status, code) = match &e {
            ClientError::Rejected { code, .. } => http_of_grpc(*code),
            ClientError::SigningKeyRefused { .. } | ClientError::CertificateRefused { .. } => {
                http_of_grpc(Code::Unauthenticated)
            }
            ClientError::Connect { .. } | ClientError::NoHubAnswers { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "hub_unreachable")
            }
            // What the hub served does not verify: never hand it over.
            ClientError::Integrity { .. }
            | ClientError::Rollback { .. }
            | ClientError::Fork { .. }
            | ClientError::Checkpoint { .. }
            | ClientError::Redacted { .. } => (StatusCode::BAD_GATEWAY, "verification_failed"),
            ClientError::NoSigningKey => (StatusCode::FORBIDDEN, "no_signing_key"),
            ClientError::Workflow(_) => (StatusCode::CONFLICT, "workflow"),
            ClientError::Key(_) | ClientError::Config { .. } | ClientError::File { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "agent_error")
            }
        };
        Self::new(status, code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_refusals_keep_their_reason_and_map_to_4xx() {
        let e = ApiError::from(ClientError::Rejected {
            code: Code::InvalidArgument,
            message: "unknown unit \"nobody\"".into(),
        });
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code, "invalid_argument");
        assert!(e.message.contains("unknown unit"), "{}", e.message);
        let e = ApiError::from(ClientError::Rejected {
            code: Code::PermissionDenied,
            message: "no".into(),
        });
        assert_eq!(e.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn a_failed_verification_is_a_gateway_error_not_a_client_error() {
        let e = ApiError::from(ClientError::Integrity {
            channel: "tax".into(),
            seq: 3,
            reason: "bad signature".into(),
        });
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.code, "verification_failed");
    }
}
