//! The bearer token every API call carries: `Authorization: Bearer TOKEN`,
//! compared in constant time so the comparison leaks nothing of it.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The token callers must present.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    pub fn new(secret: Vec<u8>) -> Self {
        Self(secret.into())
    }

    /// True when an `Authorization` header value carries this token.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(given) = authorization.and_then(|v| v.strip_prefix(b"Bearer ")) else {
            return false;
        };
        // Lengths differ: refused without comparing (the length is no secret).
        given.ct_eq(&self.0).into()
    }
}

/// Refuses, with 401, a request without the token.
pub async fn require(State(token): State<Token>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !token.admits(given) {
        let mut refused = axum::response::IntoResponse::into_response(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "give the agent's token as `Authorization: Bearer TOKEN` (the token file's path is printed when the agent starts)",
        ));
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return refused;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_is_admitted() {
        let t = Token::new(b"0123456789abcdef".to_vec());
        assert!(t.admits(Some(b"Bearer 0123456789abcdef")));
        assert!(!t.admits(None));
        assert!(!t.admits(Some(b"0123456789abcdef")));
        assert!(!t.admits(Some(b"Bearer 0123456789abcdeF")));
        assert!(!t.admits(Some(b"Bearer 0123456789abcde")));
        assert!(!t.admits(Some(b"Bearer 0123456789abcdef0")));
        assert!(!t.admits(Some(b"Basic 0123456789abcdef")));
    }
}
