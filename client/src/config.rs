//! `client.toml`: where the hub is and which files prove who we are.

use crate::ClientError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tongbao_proto::identity::Principal;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hub: String,
    #[serde(default = "default_server_name")]
    server_name: String,
    identity: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    signing_key: Option<PathBuf>,
    #[serde(default)]
    hub_key: Option<String>,
    #[serde(default)]
    trust_state: Option<PathBuf>,
    #[serde(default = "yes")]
    verify_inclusion: bool,
    #[serde(default)]
    push_retry_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

fn default_server_name() -> String {
    "localhost".into()
}

/// A departmental system's connection settings. Paths in the file are
/// relative to the file's directory.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Hub URL, e.g. `https://127.0.0.1:7443`.
    pub hub: String,
    /// Name the hub's certificate must carry.
    pub server_name: String,
    /// Who this client is (must match the certificate's SAN URI).
    pub identity: Principal,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Ed25519 signing key (PEM); units need it to push.
    pub signing_key: Option<PathBuf>,
    /// The hub's checkpoint key (signed-note vkey). When absent, the key
    /// the hub presents first is pinned in the trust state.
    pub hub_key: Option<String>,
    /// Where the last verified checkpoint of each channel is kept
    /// (default: `trust-state.json` beside the config file).
    pub trust_state: PathBuf,
    /// Check every delivered entry's inclusion in a verified checkpoint
    /// (default). Pages are checked before they are returned; a live
    /// subscription hands entries over at once and checks them in batches
    /// right after, ending with an error if one is not included.
    pub verify_inclusion: bool,
    /// How long an interrupted push is repeated (same message id) while the
    /// hub is reachable, e.g. across a certificate switch. A hub that
    /// cannot be reached at all fails the push at once, whatever this says;
    /// an attempt that gets no answer within 10 s counts as interrupted.
    /// `push_retry_ms` in the file; default 5 s.
    pub push_retry_for: std::time::Duration,
}

impl ClientConfig {
    /// The default of [`ClientConfig::push_retry_for`].
    pub const DEFAULT_PUSH_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

    /// Reads a `client.toml`.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        Ok(Self {
            hub: raw.hub,
            server_name: raw.server_name,
            identity: Principal::from_uri(&raw.identity).map_err(|e| bad(e.to_string()))?,
            ca: resolve(raw.ca),
            cert: resolve(raw.cert),
            key: resolve(raw.key),
            signing_key: raw.signing_key.map(resolve),
            hub_key: raw.hub_key,
            trust_state: resolve(
                raw.trust_state
                    .unwrap_or_else(|| PathBuf::from("trust-state.json")),
            ),
            verify_inclusion: raw.verify_inclusion,
            push_retry_for: raw
                .push_retry_ms
                .map(std::time::Duration::from_millis)
                .unwrap_or(Self::DEFAULT_PUSH_RETRY),
        })
    }

    /// The same settings pointed at another hub address (tests, failover).
    pub fn with_hub(mut self, hub: impl Into<String>) -> Self {
        self.hub = hub.into();
        self
    }
}
