//! What can go wrong for a departmental system, in words it can act on.

use std::path::PathBuf;
use tonic::Code;

/// Errors of the client library.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("client config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("cannot read {what} from {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot reach the hub at {hub}: {reason}")]
    Connect { hub: String, reason: String },
    /// Every hub of the config was tried, in one round, and none could be
    /// used: each with why (a config with one hub says [`ClientError::Connect`]).
    #[error("cannot reach any of the {} hubs: {}", .failures.len(), describe_failures(.failures))]
    NoHubAnswers { failures: Vec<HubFailure> },
    /// The hub refused this client's certificate during the TLS handshake
    /// (TLS 1.3 reports it on the first call).
    #[error(
        "the hub refused this client's certificate: {reason}; ask an operator for a valid certificate"
    )]
    CertificateRefused { reason: String },
    /// The hub answered with an error status.
    #[error("hub refused the request ({code:?}): {message}")]
    Rejected { code: Code, message: String },
    /// The hub refused a signature because its key may not sign at that
    /// time. Read from the hub's refusal metadata, not from its wording.
    #[error("hub refused the signature (Unauthenticated): {message}")]
    SigningKeyRefused {
        refusal: KeyRefusal,
        key_id: String,
        /// The key's start (not yet valid) or end (retired), unix micros.
        boundary_micros: i64,
        message: String,
    },
    /// Something the hub delivered does not verify: never trust it.
    #[error("entry {channel}:{seq} failed verification: {reason}")]
    Integrity {
        channel: String,
        seq: u64,
        reason: String,
    },
    /// The hub served a checkpoint smaller than one this client verified.
    #[error(
        "channel {channel}: the hub served a checkpoint of size {served_size}, smaller than size {trusted_size} verified earlier (rollback); both are kept in {evidence}"
    )]
    Rollback {
        channel: String,
        trusted_size: u64,
        served_size: u64,
        evidence: String,
    },
    /// The hub served a checkpoint that does not extend the verified one.
    #[error(
        "channel {channel}: the checkpoint of size {served_size} does not extend the checkpoint of size {trusted_size} verified earlier (fork); both are kept in {evidence}"
    )]
    Fork {
        channel: String,
        trusted_size: u64,
        served_size: u64,
        evidence: String,
    },
    #[error("checkpoint of channel {channel} refused: {reason}")]
    Checkpoint { channel: String, reason: String },
    #[error(
        "this client has no signing key (signing_key in client.toml); only units with a key can push"
    )]
    NoSigningKey,
    #[error(transparent)]
    Key(#[from] tongbao_proto::keys::KeyError),
    /// A workflow step cannot be taken from the workflow's current state.
    #[error("{0}")]
    Workflow(String),
    /// An audited answer shown without its free text (exception feedback
    /// not addressed to the office): it no longer matches its signature,
    /// so what it names cannot be checked here.
    #[error(
        "the answer {channel}:{seq} is shown without its free text (it was not addressed to this office), so it cannot be checked against its signature; its problem code is as the hub read it"
    )]
    Redacted { channel: String, seq: u64 },
}

/// One hub of a round that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFailure {
    pub hub: String,
    /// Short: its first 160 characters.
    pub reason: String,
}

impl HubFailure {
    /// The failure of `hub`: the reason of a connect error, else the error.
    pub(crate) fn new(hub: &str, e: &ClientError) -> Self {
        let reason = match e {
            ClientError::Connect { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        let reason = match reason.char_indices().nth(160) {
            Some((cut, _)) => format!("{}...", &reason[..cut]),
            None => reason,
        };
        Self {
            hub: hub.to_string(),
            reason,
        }
    }
}

fn describe_failures(failures: &[HubFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("{}: {}", f.hub, f.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why the hub refused a signing key, as its refusal metadata says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// The key was retired before the message was signed or received.
    Retired,
    /// The key's interval had not begun when the message was signed.
    NotYetValid,
}

impl KeyRefusal {
    fn from_metadata(value: &str) -> Option<Self> {
        match value {
            tongbao_proto::keys::REFUSAL_KEY_RETIRED => Some(Self::Retired),
            tongbao_proto::keys::REFUSAL_KEY_NOT_YET_VALID => Some(Self::NotYetValid),
            _ => None,
        }
    }
}

impl ClientError {
    /// The gRPC status code this error corresponds to: the hub's own, or
    /// `Unauthenticated` for a refused certificate.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Rejected { code, .. } => Some(*code),
            Self::CertificateRefused { .. } | Self::SigningKeyRefused { .. } => {
                Some(Code::Unauthenticated)
            }
            _ => None,
        }
    }

    /// True when retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::NoHubAnswers { .. } => true,
            Self::Rejected { code, message } => {
                matches!(
                    code,
                    Code::Unavailable
                        | Code::Unknown
                        | Code::Cancelled
                        | Code::DeadlineExceeded
                        | Code::Aborted
                ) || (*code == Code::Internal && message.starts_with(H2_BROKEN))
            }
            _ => false,
        }
    }
}

/// How tonic reports an HTTP/2 connection broken under a call (a hub
/// killed mid-stream): `Internal`, though no hub said anything.
const H2_BROKEN: &str = "h2 protocol error";

/// Finds a TLS alert the hub sent, anywhere in an error's source chain.
/// The TLS stack reports it only as text ("received fatal alert: X").
pub(crate) fn tls_alert(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if let Some(i) = text.find(ALERT_PREFIX) {
            let name: String = text[i + ALERT_PREFIX.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            return Some(describe_alert(&name));
        }
        current = e.source();
    }
    None
}

const ALERT_PREFIX: &str = "received fatal alert: ";

fn describe_alert(name: &str) -> String {
    let what = match name {
        "CertificateExpired" => "certificate expired (or not yet valid)",
        "CertificateRevoked" => "certificate revoked",
        "UnknownCA" => "certificate not issued by the exchange CA",
        "CertificateRequired" => "no client certificate presented",
        "BadCertificate" => "certificate invalid",
        "UnsupportedCertificate" => "certificate not usable for client authentication",
        "AccessDenied" => "access denied",
        _ => "TLS handshake refused",
    };
    format!("{what} (TLS alert {name})")
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        if let Some(reason) = tls_alert(&status) {
            return Self::CertificateRefused { reason };
        }
        let meta = |key: &str| {
            status
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if let Some(refusal) =
            meta(tongbao_proto::keys::REFUSAL_METADATA).and_then(|v| KeyRefusal::from_metadata(&v))
        {
            return Self::SigningKeyRefused {
                refusal,
                key_id: meta(tongbao_proto::keys::REFUSAL_KEY_ID_METADATA).unwrap_or_default(),
                boundary_micros: meta(tongbao_proto::keys::REFUSAL_BOUNDARY_METADATA)
                    .and_then(|b| b.parse().ok())
                    .unwrap_or_default(),
                message: status.message().to_string(),
            };
        }
        Self::Rejected {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_transient_and_a_hubs_internal_error_is_not() {
        let rejected = |code, message: &str| ClientError::Rejected {
            code,
            message: message.into(),
        };
        assert!(rejected(Code::Internal, "h2 protocol error: http2 error").is_transient());
        assert!(!rejected(Code::Internal, "storage error: disk").is_transient());
        assert!(!rejected(Code::InvalidArgument, "h2 protocol error").is_transient());
    }

    #[test]
    fn every_hub_is_named_with_a_short_reason() {
        let long = ClientError::Connect {
            hub: "https://a:1".into(),
            reason: "é".repeat(1000),
        };
        let failures = vec![
            HubFailure::new("https://a:1", &long),
            HubFailure::new(
                "https://b:1",
                &ClientError::Connect {
                    hub: "https://b:1".into(),
                    reason: "Connection refused (os error 111)".into(),
                },
            ),
        ];
        assert_eq!(failures[0].reason.chars().count(), 163);
        let e = ClientError::NoHubAnswers { failures };
        assert!(e.is_transient());
        let text = e.to_string();
        assert!(
            text.starts_with("cannot reach any of the 2 hubs: https://a:1: ")
                && text.ends_with("; https://b:1: Connection refused (os error 111)"),
            "{text}"
        );
    }
}
