//! `client.toml`: where the hub is and which files prove who we are.
//!
//! A hub that runs as several replicas is listed as `hubs = [...]`; the
//! client fails over between them (see `client/connection.rs`). The rules
//! on that list live here, so a config that breaks them never connects.

use crate::ClientError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tongbao_proto::identity::Principal;
use tonic::codegen::http::Uri;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    hub: Option<String>,
    #[serde(default)]
    hubs: Option<Vec<String>>,
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
    /// Hub URL, e.g. `https://127.0.0.1:7443`: `hub` in the file, or the
    /// first of `hubs`.
    pub hub: String,
    /// The other replicas of the same hub, in the order `hubs` lists them
    /// after the first (empty with `hub = ...`). See
    /// [`ClientConfig::hubs`].
    pub other_hubs: Vec<String>,
    /// Name the hub's certificate must carry (every replica's).
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
    /// How long an interrupted push is repeated (same message id) while a
    /// hub is reachable, e.g. across a certificate switch or a failover,
    /// and how long a replica that is behind is waited for. A push no hub
    /// accepts a connection for fails at once, whatever this says; an
    /// attempt that gets no answer within 10 s counts as interrupted.
    /// `push_retry_ms` in the file; default 5 s.
    pub push_retry_for: std::time::Duration,
}

impl ClientConfig {
    /// The default of [`ClientConfig::push_retry_for`].
    pub const DEFAULT_PUSH_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
    /// Most hubs `hubs` may list.
    pub const MAX_HUBS: usize = 8;

    /// Reads a `client.toml`.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let listed = match (raw.hub, raw.hubs) {
            (Some(hub), None) => vec![hub],
            (None, Some(hubs)) => hubs,
            (Some(_), Some(_)) => {
                return Err(bad(
                    "both `hub` and `hubs` are set: give `hub = \"https://...\"` for one hub, or `hubs = [...]` for its replicas".into(),
                ));
            }
            (None, None) => {
                return Err(bad(
                    "no hub: set `hub = \"https://...\"`, or `hubs = [...]` for a hub with replicas"
                        .into(),
                ));
            }
        };
        let (hub, other_hubs) = check_hubs(listed).map_err(bad)?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        Ok(Self {
            hub,
            other_hubs,
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

    /// The same settings pointed at one other hub address (tests).
    pub fn with_hub(mut self, hub: impl Into<String>) -> Self {
        self.hub = hub.into();
        self.other_hubs.clear();
        self
    }

    /// The same settings with these replicas, in this order, checked as
    /// `hubs` in the file is.
    pub fn with_hubs<I, S>(mut self, hubs: I) -> Result<Self, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let (hub, others) =
            check_hubs(hubs.into_iter().map(Into::into).collect()).map_err(|reason| {
                ClientError::Config {
                    path: PathBuf::from("(hubs given in code)"),
                    reason,
                }
            })?;
        self.hub = hub;
        self.other_hubs = others;
        Ok(self)
    }

    /// Every hub of the config, in order: `hub`, then `other_hubs`.
    pub fn hubs(&self) -> Vec<String> {
        std::iter::once(self.hub.clone())
            .chain(self.other_hubs.iter().cloned())
            .collect()
    }
}

/// The rules of `hubs`: 1 to [`ClientConfig::MAX_HUBS`] distinct https
/// URLs with a host. Returns the first and the others.
fn check_hubs(mut hubs: Vec<String>) -> Result<(String, Vec<String>), String> {
    if hubs.is_empty() {
        return Err("`hubs` is empty: list 1 to 8 hub URLs".into());
    }
    if hubs.len() > ClientConfig::MAX_HUBS {
        return Err(format!(
            "`hubs` lists {} hubs; at most {} are allowed",
            hubs.len(),
            ClientConfig::MAX_HUBS
        ));
    }
    for (i, hub) in hubs.iter().enumerate() {
        check_url(hub).map_err(|why| format!("hub {} ({}): {why}", i + 1, shown(hub)))?;
        if hubs[..i].contains(hub) {
            return Err(format!("hub {} ({}) is listed twice", i + 1, shown(hub)));
        }
    }
    let first = hubs.remove(0);
    Ok((first, hubs))
}

/// Why a hub URL cannot be used, if it cannot.
fn check_url(hub: &str) -> Result<(), String> {
    let uri: Uri = hub.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("not an https:// URL (the hub speaks TLS only)".into());
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(())
}

/// A URL as an error may show it: at most 80 characters.
fn shown(hub: &str) -> String {
    if hub.chars().count() <= 80 {
        format!("{hub:?}")
    } else {
        format!("{:?}...", hub.chars().take(80).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REST: &str =
        "identity = \"urn:tongbao:unit:tax\"\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n";

    fn load(hubs: &str) -> Result<ClientConfig, ClientError> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::Config {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?;
        let path = dir.path().join("client.toml");
        std::fs::write(&path, format!("{hubs}\n{REST}")).map_err(|e| ClientError::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        ClientConfig::load(&path)
    }

    fn refused(hubs: &str, words: &str) {
        match load(hubs) {
            Err(ClientError::Config { reason, .. }) => {
                assert!(reason.contains(words), "{hubs}: {reason}");
            }
            other => panic!("{hubs}: expected a config error naming {words:?}, got {other:?}"),
        }
    }

    #[test]
    fn one_hub_or_a_list_of_replicas() -> Result<(), ClientError> {
        let one = load("hub = \"https://a:7443\"")?;
        assert_eq!(one.hubs(), ["https://a:7443"]);
        let three =
            load("hubs = [\"https://a:7443\", \"https://b:7443\", \"https://[::1]:7443\"]")?;
        assert_eq!(three.hub, "https://a:7443");
        assert_eq!(three.other_hubs, ["https://b:7443", "https://[::1]:7443"]);
        // Pointing at one hub drops the replicas.
        assert_eq!(three.with_hub("https://c:1").hubs(), ["https://c:1"]);
        Ok(())
    }

    #[test]
    fn a_hub_list_that_breaks_a_rule_is_refused_naming_the_fields() {
        refused(
            "hub = \"https://a:1\"\nhubs = [\"https://b:1\"]",
            "both `hub` and `hubs`",
        );
        refused("", "no hub");
        refused("hubs = []", "`hubs` is empty");
        let nine: Vec<String> = (0..9).map(|i| format!("\"https://h{i}:1\"")).collect();
        refused(
            &format!("hubs = [{}]", nine.join(", ")),
            "lists 9 hubs; at most 8",
        );
        refused(
            "hubs = [\"https://a:1\", \"a b\"]",
            "hub 2 (\"a b\"): not a URL",
        );
        refused("hubs = [\"http://a:1\"]", "not an https:// URL");
        refused("hub = \"https:///x\"", "hub 1");
        refused(
            "hubs = [\"https://a:1\", \"https://a:1\"]",
            "hub 2 (\"https://a:1\") is listed twice",
        );
        let long = format!("hub = \"{}\"", "x".repeat(10_000));
        match load(&long) {
            Err(e) => assert!(e.to_string().len() < 400, "{e}"),
            Ok(_) => panic!("a 10,000-character hub was accepted"),
        }
    }

    #[test]
    fn hubs_given_in_code_follow_the_same_rules() -> Result<(), ClientError> {
        let c = load("hub = \"https://a:1\"")?;
        assert!(c.clone().with_hubs(Vec::<String>::new()).is_err());
        let two = c.with_hubs(["https://b:1", "https://c:1"])?;
        assert_eq!(two.hubs(), ["https://b:1", "https://c:1"]);
        Ok(())
    }
}
