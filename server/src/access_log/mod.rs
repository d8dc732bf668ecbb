//! The access log: a record of every gRPC call, refused TLS handshake,
//! operator action and retention removal, kept as a verifiable log.
//!
//! Accountability between departments needs to know who read or wrote
//! what, and that nobody, the hub's operators included, removed or changed
//! that record afterwards. So the records form an RFC 6962 tree (the rules
//! of `tongbao_proto::merkle`, as the channels) with checkpoints signed by
//! the hub's checkpoint key; at every start the hub checks the latest
//! checkpoint against the stored tree and every record after it against
//! the tree, and refuses to start on a mismatch (`tongbao-hub audit-log
//! verify` checks every record).
//!
//! The store keeps the log on both backends (`store::access`): sled in
//! files of its own in its directory (`store::access_files`), PostgreSQL
//! in the database, so that a replica's log outlives its host. One
//! thread writes it with group commit (`writer`, `stored`), one set of
//! rules checks it (`stored_check`), and the `tongbao-hub audit-log`
//! commands read it (`stored_read`), each in one snapshot, sled's through
//! the store's read-only reader beside the running hub. An earlier
//! version's files (`files`, read by `check` and `export`) are moved in
//! once (`moved`). Exports of either are written by one loop as they are
//! read (`export_write`). `docs/access-log.md` sets out the format and
//! the rules.

mod check;
pub mod export;
pub mod export_write;
pub mod files;
pub mod moved;
pub mod record;
mod stored;
pub mod stored_check;
mod stored_copy;
pub mod stored_read;
mod writer;

pub use check::{
    MAX_REPLICA_NAME, Scanned, SegmentState, origin, origin_replica, read_checkpoint, scan,
    stored_origin, valid_replica_name,
};
pub use record::{AccessRecord, RecordKind, RemovedSegment};
pub use writer::{Durable, RoundCounts};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tongbao_proto::checkpoint::NoteError;
use tongbao_proto::keys::SigningKey;
pub use tongbao_proto::merkle::Frontier;
use tongbao_proto::merkle::MerkleError;

/// Why the access log cannot be opened, trusted or written.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("access log {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(
        "access log {segment}{}: {what}",
        .record.map(|n| format!(", record {n}")).unwrap_or_default()
    )]
    Broken {
        segment: String,
        record: Option<u64>,
        what: String,
    },
    #[error("access log tree: {0}")]
    Merkle(#[from] MerkleError),
    #[error("access log checkpoint: {0}")]
    Note(#[from] NoteError),
    #[error("the access log is not writable: {0}")]
    Closed(String),
    #[error("access log: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot write the access log export: {0}")]
    Write(String),
}

impl AccessLogError {
    pub(crate) fn io(path: &Path, e: impl ToString) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

/// `[access_log]` of hub.toml.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// Days a record is kept at least; at least [`MIN_RETENTION_DAYS`].
    pub retention_days: u32,
    /// Records per segment of an earlier version's files: still accepted
    /// in hub.toml, no longer used (the store sizes its own files).
    pub segment_records: u64,
}

/// The shortest retention the hub accepts (等保 level 3 asks 180 days).
pub const MIN_RETENTION_DAYS: u32 = 180;

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            retention_days: MIN_RETENTION_DAYS,
            segment_records: 1_000_000,
        }
    }
}

impl AccessLogConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.retention_days < MIN_RETENTION_DAYS {
            return Err(format!(
                "access_log.retention_days is {}; records must be kept at least {MIN_RETENTION_DAYS} days",
                self.retention_days
            ));
        }
        if self.segment_records == 0 {
            return Err("access_log.segment_records must be at least 1".into());
        }
        Ok(())
    }
}

/// The open access log of a running hub; records go to its writer thread.
pub struct AccessLog {
    writer: writer::Handle,
    clock_offset_micros: i64,
}

impl AccessLog {
    /// Opens the access log where `store` keeps it (PostgreSQL in the
    /// database, sled in files of its own in its directory): the log's
    /// origin is claimed for this process first (refused while another
    /// holds it), files of an earlier version in `<data_dir>/access-log`
    /// are moved in, and what the store holds is checked.
    pub fn open_in(
        store: &Arc<dyn crate::store::Store>,
        data_dir: &Path,
        config: &AccessLogConfig,
        key: SigningKey,
        (log_name, replica): (&str, Option<&str>),
    ) -> Result<Arc<Self>, AccessLogError> {
        let db = store.access_log().ok_or_else(|| {
            AccessLogError::Closed("this store does not keep the access log".into())
        })?;
        config
            .validate()
            .map_err(|e| AccessLogError::Closed(format!("refusing the configuration: {e}")))?;
        let signer = writer::Signer::new(key, log_name, origin(log_name, replica))?;
        let verifier = signer.verifier()?;
        let guard = db.access_claim(signer.origin())?;
        moved::move_files(data_dir, db, &signer, &verifier)?;
        let checked = stored_check::check(db.access_reads(), signer.origin(), &verifier, false)?;
        // A log in the data directory itself needs no copy there.
        let copy_dir = (!db.in_data_dir()).then(|| data_dir.to_path_buf());
        if let Some(dir) = &copy_dir {
            stored_copy::check(dir, db.access_reads(), signer.origin(), &verifier, &checked)?;
        }
        let clock_offset_micros = crate::failpoint::access_log_clock_offset_micros();
        let writer = writer::Handle::spawn(stored::StoredWriter::new(stored::Setup {
            store: store.clone(),
            guard,
            checked,
            signer,
            config: config.clone(),
            clock_offset_micros,
            copy_dir,
            remove_chunk: stored::REMOVE_CHUNK,
        }))?;
        Ok(Arc::new(Self {
            writer,
            clock_offset_micros,
        }))
    }

    /// The hub's time for records, µs (shifted only by a test hub's failpoint).
    pub fn now_micros(&self) -> i64 {
        tongbao_proto::now_micros().saturating_add(self.clock_offset_micros)
    }

    /// Records a read: durable within a second.
    pub fn record(&self, record: AccessRecord) {
        self.writer.submit(record, None);
    }

    /// Records a write: the answer resolves once the record is durable.
    pub fn record_durably(&self, record: AccessRecord) -> Durable {
        self.writer.submit_durable(record)
    }

    /// The writer's rounds so far (for benchmarks).
    pub fn rounds(&self) -> RoundCounts {
        self.writer.rounds()
    }

    /// Why the log cannot be written, once its writer failed: the hub
    /// then answers no call, since it could not record it.
    pub fn failed(&self) -> Option<String> {
        self.writer.failed()
    }

    /// Writes what waits, syncs, signs a last checkpoint and stops the writer.
    pub fn stop(&self) {
        self.writer.stop();
    }
}

#[cfg(test)]
mod moved_tests;
#[cfg(test)]
mod old_files_tests;
#[cfg(test)]
mod stored_fault_tests;
#[cfg(test)]
mod stored_read_tests;
#[cfg(test)]
mod stored_retention_tests;
#[cfg(test)]
mod stored_sync_tests;
#[cfg(test)]
mod stored_tests;
