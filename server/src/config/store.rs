//! The `[store]` section of `hub.toml`: which store holds the hub's data.
//! sled (the default) keeps it in the data directory; PostgreSQL on a
//! database server, so that hubs survive the loss of their own disk.

use super::ConfigError;
use crate::access_log::{MAX_REPLICA_NAME, valid_replica_name};
use crate::store::pg_store::{Database, Lease, TlsOptions};
use crate::store::{PgOptions, PgStore, SledStore, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most connections one hub keeps to the database.
pub const MAX_POOL_SIZE: usize = 64;

/// Which store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Sled,
    Postgres,
}

/// `[store]`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    #[serde(default)]
    pub backend: Backend,
    /// PostgreSQL's connection string (`host=... port=... user=...
    /// dbname=...` or `postgresql://...`); may hold a password, so it is
    /// never printed.
    #[serde(default)]
    pub url: Option<String>,
    /// Connections to the database (default 8, at most [`MAX_POOL_SIZE`]).
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// This hub is one of several replicas on the database: while another
    /// holds the lease it waits as a standby instead of refusing to start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replica: bool,
    /// This replica's name, given with `replica = true`: each replica signs
    /// its own access log under an origin naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_name: Option<String>,
    /// The CA that signed the database server's certificate: with it every
    /// connection is TLS, verified (see `pg_store::tls` for the rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate for PostgreSQL's `cert` authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// Its key, readable by its owner alone (0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Clear text over TCP to a host that is not loopback, knowingly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_plaintext: bool,
    /// How often a standby reads what moved without a notice from the
    /// leader, in ms (default 1000): a safety net for a lost notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_refresh_ms: Option<u64>,
}

impl std::fmt::Debug for StoreSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSection")
            .field("backend", &self.backend)
            .field("url", &self.url.as_ref().map(|_| "(not shown)"))
            .field("pool_size", &self.pool_size)
            .field("replica", &self.replica)
            .field("replica_name", &self.replica_name)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("standby_refresh_ms", &self.standby_refresh_ms)
            .finish()
    }
}

impl StoreSection {
    /// Sled with nothing else given: written as no section at all.
    pub fn is_default(&self) -> bool {
        self.backend == Backend::Sled
            && self.url.is_none()
            && self.pool_size.is_none()
            && !self.replica
            && self.replica_name.is_none()
            && !self.has_tls_settings()
            && self.standby_refresh_ms.is_none()
    }

    fn has_tls_settings(&self) -> bool {
        self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.allow_plaintext
    }

    /// Resolves the TLS files against `base` (the config's directory), as
    /// the `[tls]` section's are.
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.tls_ca, &mut self.tls_cert, &mut self.tls_key]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// The database of `backend = "postgres"`, reached as the TLS settings
    /// say (refused when they would send clear text over a network).
    pub fn database(&self) -> Result<Database, StoreError> {
        Database::new(
            self.url.as_deref().unwrap_or_default(),
            &TlsOptions {
                ca: self.tls_ca.clone(),
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                allow_plaintext: self.allow_plaintext,
            },
        )
    }

    /// How often a standby refreshes without a notice.
    pub fn standby_refresh(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.standby_refresh_ms.unwrap_or(1000).max(10))
    }

    /// The replica's name when this hub is one; a hub on its own has none.
    pub fn replica_name(&self) -> Option<&str> {
        match self.replica {
            true => self.replica_name.as_deref(),
            false => None,
        }
    }

    /// The database a replica waits on, when this hub is one.
    pub fn replica_database(&self) -> Result<Option<Database>, StoreError> {
        match self.backend {
            Backend::Postgres if self.replica => self.database().map(Some),
            _ => Ok(None),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        match self.backend {
            Backend::Sled
                if self.url.is_some()
                    || self.pool_size.is_some()
                    || self.replica
                    || self.has_tls_settings() =>
            {
                invalid(
                    "[store] url, pool_size, replica and the tls_* settings are for backend = \"postgres\"; the sled store lives in [hub] data_dir",
                )
            }
            Backend::Postgres if self.url.as_deref().is_none_or(str::is_empty) => {
                invalid("[store] backend = \"postgres\" needs url = \"host=... dbname=...\"")
            }
            Backend::Postgres if self.pool_size.is_some_and(|n| n == 0 || n > MAX_POOL_SIZE) => {
                invalid("[store] pool_size must be between 1 and 64")
            }
            _ => self.validate_replica_name(),
        }
    }

    /// A replica needs a name for its access log; only a replica has one.
    fn validate_replica_name(&self) -> Result<(), ConfigError> {
        match (self.replica, self.replica_name.as_deref()) {
            (true, None) => Err(ConfigError::Invalid(
                "[store] replica = true needs replica_name = \"...\" (this replica's own, e.g. \"hub-a\"): it names the replica's access log".into(),
            )),
            (true, Some(name)) if !valid_replica_name(name) => Err(ConfigError::Invalid(format!(
                "[store] replica_name {:?} must be 1 to {MAX_REPLICA_NAME} characters of a-z, 0-9 and -",
                tongbao_proto::echo::shown(name)
            ))),
            (false, Some(_)) => Err(ConfigError::Invalid(
                "[store] replica_name is only for replica = true".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Opens the configured store; sled's in `data_dir`, keeping
    /// `reserve` bytes free on its disk; PostgreSQL's taking its lease
    /// (refused while another hub holds it).
    pub fn open(
        &self,
        data_dir: &Path,
        fsync: bool,
        reserve: u64,
    ) -> Result<Arc<dyn Store>, StoreError> {
        self.open_holding(data_dir, fsync, reserve, None)
    }

    /// A standby's store, on the database of a replica (see
    /// [`PgStore::open_standby`]).
    pub fn open_standby(&self, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
        crate::store::create_dir_durably(data_dir)?;
        Ok(Arc::new(PgStore::open_standby(&self.pg_options()?)?))
    }

    /// The store, opened to read (no lease, no writes), when it keeps
    /// the access log (PostgreSQL); None for sled, whose access log is in
    /// the data directory: the auditor's commands read it.
    pub fn open_reader(&self) -> Result<Option<Arc<dyn Store>>, StoreError> {
        Ok(match self.backend {
            Backend::Sled => None,
            Backend::Postgres => Some(Arc::new(PgStore::open_standby(&self.pg_options()?)?)),
        })
    }

    fn pg_options(&self) -> Result<PgOptions, StoreError> {
        Ok(PgOptions {
            database: self.database()?,
            pool_size: self.pool_size.unwrap_or(8),
            replica: self.replica,
        })
    }

    /// As [`StoreSection::open`], PostgreSQL's with the `lease` a standby
    /// already holds.
    pub fn open_holding(
        &self,
        data_dir: &Path,
        fsync: bool,
        reserve: u64,
        lease: Option<Lease>,
    ) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self.backend {
            Backend::Sled => Arc::new(SledStore::open_keeping_free(data_dir, fsync, reserve)?),
            Backend::Postgres => {
                // The data directory still holds the checkpoint key (and
                // an earlier version's access log, moved in at start).
                crate::store::create_dir_durably(data_dir)?;
                Arc::new(PgStore::open_holding(&self.pg_options()?, lease)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StoreSection, Box<dyn std::error::Error>> {
        let s: StoreSection = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn the_store_is_sled_unless_postgres_is_given_whole() -> Result<(), Box<dyn std::error::Error>>
    {
        assert_eq!(parse("")?.backend, Backend::Sled);
        let pg = parse("backend = \"postgres\"\nurl = \"host=db password=hunter2\"\n")?;
        assert_eq!(pg.backend, Backend::Postgres);
        assert!(
            pg.replica_database()?.is_none(),
            "not a replica unless it says so"
        );
        let replica = parse(
            "backend = \"postgres\"\nurl = \"host=db\"\nreplica = true\nreplica_name = \"hub-a\"\n",
        )?;
        assert!(
            replica.replica_database().is_err(),
            "host=db is not loopback: refused in clear text"
        );
        assert_eq!(replica.replica_name(), Some("hub-a"));
        assert_eq!(
            pg.replica_name(),
            None,
            "a hub on its own has no replica name"
        );
        assert!(
            !format!("{pg:?}").contains("hunter2"),
            "the url is never printed"
        );
        let too_long = format!(
            "backend = \"postgres\"\nurl = \"host=db\"\nreplica = true\nreplica_name = \"{}\"\n",
            "a".repeat(MAX_REPLICA_NAME + 1)
        );
        for bad in [
            "backend = \"postgres\"\n",
            "backend = \"postgres\"\nurl = \"\"\n",
            "backend = \"postgres\"\nurl = \"host=db\"\npool_size = 0\n",
            "backend = \"postgres\"\nurl = \"host=db\"\npool_size = 65\n",
            "url = \"host=db\"\n",
            "backend = \"mysql\"\n",
            "replica = true\n",
            "backend = \"postgres\"\nurl = \"host=db\"\nreplica = \"yes\"\n",
            "backend = \"postgres\"\nurl = \"host=db\"\nreplica = true\n",
            "backend = \"postgres\"\nurl = \"host=db\"\nreplica = true\nreplica_name = \"\"\n",
            "backend = \"postgres\"\nurl = \"host=db\"\nreplica = true\nreplica_name = \"Hub-A\"\n",
            "backend = \"postgres\"\nurl = \"host=db\"\nreplica = true\nreplica_name = \"a/b\"\n",
            too_long.as_str(),
            "backend = \"postgres\"\nurl = \"host=db\"\nreplica_name = \"hub-a\"\n",
            "backend = \"postgres\"\nurl = \"host=db\"\nuser = \"x\"\n",
            "tls_ca = \"ca.pem\"\n",
            "allow_plaintext = true\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn the_tls_settings_reach_the_database_resolved_beside_the_config()
    -> Result<(), Box<dyn std::error::Error>> {
        let pg = "backend = \"postgres\"\nurl = \"host=db.example\"\n";
        let mut tls = parse(&format!("{pg}tls_ca = \"db-ca.pem\"\n"))?;
        tls.resolve_paths(Path::new("/etc/tongbao"));
        assert_eq!(
            tls.tls_ca.as_deref(),
            Some(Path::new("/etc/tongbao/db-ca.pem"))
        );
        // The CA is read as the store opens: a missing one is named.
        let e = tls.database().err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("/etc/tongbao/db-ca.pem")),
            "{e:?}"
        );
        let refused = parse(pg)?.database().err().map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("allow_plaintext")),
            "{refused:?}"
        );
        let allowed = parse(&format!("{pg}allow_plaintext = true\n"))?;
        assert!(allowed.database().is_ok_and(|d| !d.uses_tls()));
        assert!(!allowed.is_default());
        Ok(())
    }
}
