//! The hub's configuration file (`hub.toml`).
//!
//! Paths of TLS material are relative to the directory holding the config
//! file, so a config and its certificates move together; the data directory
//! is relative to the working directory, like any database path.

mod store;

pub use store::{Backend, StoreSection};

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("config is not consistent: {0}")]
    Invalid(String),
}

/// Everything `tongbao-hub serve` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    pub hub: HubSection,
    pub tls: TlsSection,
    #[serde(default)]
    pub limits: Limits,
    /// Caps and timers on client connections (`[connections]`).
    #[serde(default)]
    pub connections: ConnectionLimits,
    /// Default acknowledgement deadline per kind, e.g. `early-warning = "2h"`,
    /// and `default` for the rest; a message's own deadline label wins.
    #[serde(default)]
    pub ack_deadlines: AckDeadlines,
    /// Seeds the registry on first start; afterwards the store is the truth.
    #[serde(default)]
    pub units: Vec<UnitSeed>,
    #[serde(default)]
    pub mechanisms: Vec<MechanismSeed>,
    /// The operators and the one role of each (`crate::roles`), read at
    /// every start: the only way an operator gets a role.
    #[serde(default)]
    pub operators: Vec<OperatorSeed>,
    /// The access log's retention and segments (`[access_log]`).
    #[serde(default)]
    pub access_log: crate::access_log::AccessLogConfig,
    /// The Prometheus metrics listener (`[metrics]`).
    #[serde(default)]
    pub metrics: crate::metrics::MetricsSection,
    /// Which store holds the data (`[store]`; sled by default).
    #[serde(default, skip_serializing_if = "StoreSection::is_default")]
    pub store: StoreSection,
    /// Directory of the config file, for resolving relative paths.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// Address to listen on, e.g. "127.0.0.1:7443" (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Database directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Name of this deployment in checkpoints: the signed-note key name and
    /// the prefix of every channel's origin line ("<log_name>/<unit>").
    #[serde(default = "default_log_name")]
    pub log_name: String,
    /// The hub's Ed25519 checkpoint key (PEM); created in the data
    /// directory on first start when not given. Relative to the config file.
    #[serde(default)]
    pub checkpoint_key: Option<PathBuf>,
    /// fsync after every group commit (default). Turn off only to measure
    /// what fsync costs: answered pushes may then be lost on power failure
    /// (not on a process crash).
    #[serde(default = "default_fsync")]
    pub fsync: bool,
    /// Free space (MiB) the hub keeps on the data disk: below it, writes
    /// stop, so that the database can still flush, reads go on and a stop
    /// completes. A start also needs it free, beside the journal to replay.
    #[serde(default = "default_min_free_mib")]
    pub min_free_mib: u64,
}

pub fn default_min_free_mib() -> u64 {
    64
}

fn default_log_name() -> String {
    "tongbao".into()
}

fn default_fsync() -> bool {
    true
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./tongbao-data")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA bundle that client certificates must chain to.
    pub ca: PathBuf,
    /// The hub's own certificate chain and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate revocation list(s) of the CA, PEM; optional.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// Reload the files above within a second of a change (default). When
    /// off, only SIGHUP and `Admin/ReloadTls` reload them, for operators who
    /// stage files and switch at a moment of their choosing; revoked and
    /// expired connections are still closed against the material in use.
    #[serde(default = "default_watch_files")]
    pub watch_files: bool,
}

fn default_watch_files() -> bool {
    true
}

/// Sizes and windows the hub enforces on every message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_subject_bytes: usize,
    pub max_attachments: usize,
    /// Units + mechanisms + offices named in one audience.
    pub max_audience_names: usize,
    pub max_message_id_bytes: usize,
    /// How far a message's creation time may be ahead of the hub's clock.
    pub max_clock_skew_secs: u64,
    /// How old a message may be when first pushed (a retry of an already
    /// appended message is answered whatever its age).
    pub max_message_age_secs: u64,
    pub default_page_size: u32,
    pub max_page_size: u32,
    /// A `Pull` page stops growing past this many bytes (it always holds at
    /// least one entry), so pages of large bodies stay within gRPC limits.
    pub max_page_bytes: usize,
    /// `Subscribe` streams one party may hold open at once, over all its
    /// connections: each costs the hub a task and a buffer.
    pub max_subscriptions_per_party: usize,
    /// Audited entries one audit or statistics query may cover. A period
    /// holding more is refused with the end to ask for instead, never
    /// answered in part: figures are complete or not given.
    pub max_audit_entries: usize,
    /// Audit, statistics and case queries, task, action and warning views
    /// (and offices' proof checks) run at once, each on a thread of its
    /// own away from the exchange.
    pub max_heavy_queries: usize,
    /// Such queries waiting for a thread; one more is refused
    /// `ResourceExhausted` at once.
    pub max_heavy_waiting: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_subject_bytes: 1024,
            max_attachments: 64,
            max_audience_names: 64,
            max_message_id_bytes: 128,
            max_clock_skew_secs: 300,
            max_message_age_secs: 7 * 24 * 3600,
            default_page_size: 100,
            max_page_size: 1000,
            max_page_bytes: 4 << 20,
            max_subscriptions_per_party: 16,
            max_audit_entries: 200_000,
            max_heavy_queries: 2,
            max_heavy_waiting: 16,
        }
    }
}

impl Limits {
    /// Largest request `Exchange`, `Workflow` and `Directory` decode: a
    /// maximal body plus room for every other field (a `PushBatch` counts
    /// whole). Larger requests are refused from their length prefix, with
    /// `ResourceExhausted` naming this limit (`service::refusals`).
    pub fn max_request_bytes(&self) -> usize {
        self.max_body_bytes
            .saturating_mul(2)
            .saturating_add(256 * 1024)
    }
}

/// Caps on client connections and the HTTP/2 timers the hub runs on them.
/// A timer of 0 seconds is off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Established client connections, all parties together.
    pub max_connections: usize,
    /// Established connections per party (the certificate's party URI).
    pub max_connections_per_party: usize,
    /// TLS handshakes in progress at once; further connections are closed
    /// before their handshake.
    pub max_handshakes: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: calls open at once on
    /// one connection. A client queues further calls until one ends.
    pub max_streams_per_connection: u32,
    /// Streams a client may reset before the hub answers them, after which
    /// the connection is closed (HTTP/2 "rapid reset" protection).
    pub max_pending_reset_streams: usize,
    /// The hub pings each connection this often (HTTP/2 PING)...
    pub keepalive_interval_secs: u64,
    /// ...and closes it when a ping is not answered within this time.
    pub keepalive_timeout_secs: u64,
    /// A connection with no open call for this long is closed.
    pub idle_timeout_secs: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_party: 16,
            max_handshakes: 64,
            max_streams_per_connection: 128,
            max_pending_reset_streams: 20,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
            idle_timeout_secs: 300,
        }
    }
}

impl ConnectionLimits {
    /// A cap of 0 would refuse every connection or call: refused at start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_party", self.max_connections_per_party),
            ("max_handshakes", self.max_handshakes),
            (
                "max_streams_per_connection",
                self.max_streams_per_connection as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "connections.{name} = 0 would refuse every client; give at least 1"
                )));
            }
        }
        Ok(())
    }

    /// A timer in seconds, `None` when 0 (off).
    pub fn timer(secs: u64) -> Option<std::time::Duration> {
        (secs > 0).then(|| std::time::Duration::from_secs(secs))
    }
}

/// Acknowledgement deadlines by kind name, as durations ("90s", "30m",
/// "2h", "3d").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct AckDeadlines(pub std::collections::BTreeMap<String, String>);

impl Default for AckDeadlines {
    fn default() -> Self {
        Self(
            [
                ("default", "3d"),
                ("early-warning", "2h"),
                ("lead", "1d"),
                ("escalation", "1d"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
    }
}

/// Parses "90s", "30m", "2h", "3d" into microseconds.
pub fn parse_duration_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1_000_000)
}

impl AckDeadlines {
    /// Checks every name and duration once, at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (kind, d) in &self.0 {
            if kind != "default" && tongbao_proto::kinds::parse(kind).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "ack_deadlines: unknown kind {kind:?}"
                )));
            }
            if parse_duration_micros(d).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "ack_deadlines.{kind} = {d:?} is not a duration like \"90s\", \"30m\", \"2h\", \"3d\""
                )));
            }
        }
        Ok(())
    }

    /// How long recipients have to acknowledge an entry of this kind.
    pub fn for_kind(&self, kind: i32) -> i64 {
        let name = tongbao_proto::kinds::name(kind);
        self.0
            .get(name)
            .or_else(|| self.0.get("default"))
            .and_then(|d| parse_duration_micros(d))
            .unwrap_or(3 * 86_400 * 1_000_000)
    }
}

/// A unit as the config seeds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSeed {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub name_zh: String,
    /// Base64 Ed25519 public signing key.
    pub signing_key: String,
}

/// A mechanism as the config seeds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MechanismSeed {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub name_zh: String,
    pub lead: String,
    pub members: Vec<String>,
}

/// An operator as `[[operators]]` registers it: its certificate's URI
/// (`urn:tongbao:operator:<name>`) and its one role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OperatorSeed {
    pub uri: String,
    pub role: crate::roles::Role,
}

impl HubConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: HubConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        config.ack_deadlines.validate()?;
        config.connections.validate()?;
        config.operator_roles()?;
        config.access_log.validate().map_err(ConfigError::Invalid)?;
        config.store.validate()?;
        if config.limits.max_subscriptions_per_party == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_subscriptions_per_party = 0 would refuse every subscription; give at least 1".into(),
            ));
        }
        if config.limits.max_heavy_queries == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_heavy_queries = 0 would refuse every audit, statistics and case query; give at least 1".into(),
            ));
        }
        if config.limits.max_heavy_queries > 64 || config.limits.max_heavy_waiting > 4096 {
            return Err(ConfigError::Invalid(
                "limits.max_heavy_queries may be at most 64 and limits.max_heavy_waiting at most 4096: each heavy query holds a thread and its queue slot is allocated at start".into(),
            ));
        }
        if config.limits.max_heavy_waiting == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_heavy_waiting = 0 would refuse a query whenever its thread is just finishing another; give at least 1".into(),
            ));
        }
        config.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.store.resolve_paths(&config.base_dir);
        Ok(config)
    }

    /// The registered operators, checked: each an operator URI, given once.
    pub fn operator_roles(&self) -> Result<crate::roles::Operators, ConfigError> {
        crate::roles::Operators::from_seeds(&self.operators)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// A path from the `[tls]` section, resolved against the config's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(extra: &str) -> Result<HubConfig, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let path = dir.path().join("hub.toml");
        let text = format!(
            "[hub]\nlisten = \"127.0.0.1:0\"\n[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n{extra}"
        );
        std::fs::write(&path, text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        HubConfig::load(&path)
    }

    #[test]
    fn connection_limits_default_when_absent_or_partly_given() -> Result<(), ConfigError> {
        let absent = load("")?;
        assert_eq!(absent.connections.max_connections_per_party, 16);
        assert_eq!(absent.limits.max_subscriptions_per_party, 16);
        let partly = load("[connections]\nidle_timeout_secs = 0\n")?;
        assert_eq!(partly.connections.idle_timeout_secs, 0);
        assert_eq!(ConnectionLimits::timer(0), None);
        assert_eq!(partly.connections.max_streams_per_connection, 128);
        Ok(())
    }

    #[test]
    fn operators_are_read_with_their_one_role() -> Result<(), ConfigError> {
        let c = load("[[operators]]\nuri = \"urn:tongbao:operator:alice\"\nrole = \"security\"\n")?;
        let ops = c.operator_roles()?;
        assert_eq!(ops.role("alice"), Some(crate::roles::Role::Security));
        for (extra, words) in [
            (
                "[[operators]]\nuri = \"urn:tongbao:operator:alice\"\nrole = \"system\"\n\
                 [[operators]]\nuri = \"urn:tongbao:operator:alice\"\nrole = \"audit\"\n",
                "urn:tongbao:operator:alice",
            ),
            (
                "[[operators]]\nuri = \"urn:tongbao:operator:bob\"\nrole = \"root\"\n",
                "unknown variant `root`",
            ),
            (
                "[[operators]]\nuri = \"urn:tongbao:operator:bob\"\nrole = [\"system\", \"audit\"]\n",
                "role",
            ),
            (
                "[[operators]]\nuri = \"urn:tongbao:unit:tax\"\nrole = \"system\"\n",
                "urn:tongbao:unit:tax",
            ),
        ] {
            match load(extra) {
                Err(e) => assert!(e.to_string().contains(words), "{e}"),
                Ok(_) => panic!("{extra:?} should be refused"),
            }
        }
        Ok(())
    }

    #[test]
    fn a_cap_of_zero_is_refused_naming_it() {
        for (extra, name) in [
            (
                "[connections]\nmax_handshakes = 0\n",
                "connections.max_handshakes",
            ),
            (
                "[limits]\nmax_subscriptions_per_party = 0\n",
                "limits.max_subscriptions_per_party",
            ),
            (
                "[limits]\nmax_heavy_queries = 0\n",
                "limits.max_heavy_queries",
            ),
            (
                "[limits]\nmax_heavy_queries = 65\n",
                "limits.max_heavy_queries",
            ),
            (
                "[limits]\nmax_heavy_waiting = 0\n",
                "limits.max_heavy_waiting",
            ),
            (
                "[limits]\nmax_heavy_waiting = 1000000\n",
                "limits.max_heavy_waiting",
            ),
        ] {
            match load(extra) {
                Err(ConfigError::Invalid(why)) => assert!(why.contains(name), "{why}"),
                other => panic!("{extra:?} should be refused, got {other:?}"),
            }
        }
    }
}
