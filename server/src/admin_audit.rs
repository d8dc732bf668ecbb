//! The admin audit trail: who did what to the registry or the hub's TLS
//! material, when, and with what outcome (refusals included).
//!
//! The trail lives in the store, as state records of its own space, so
//! that replicas on one database share one trail and a takeover continues
//! it, and a backup of the store's records carries it. Each record
//! carries the hash of the previous one, so removing or editing a record
//! breaks the chain and the hub refuses to start (see [`chain`]). Earlier
//! hubs kept it in a file beside the store; the first start moves that
//! file's records in (see [`legacy`]).
//!
//! The trail is also part of the access log: each record is copied there
//! as a record of kind `admin` (see [`AdminAudit::include_in`]), so one
//! verifiable log holds every call and every admin action.

mod chain;
mod legacy;
#[cfg(test)]
mod tests;

use crate::fatal::Poisoned;
use crate::store::{StateBatch, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tongbao_proto::canonical::sha256;

pub use chain::{Tip, check};
pub use legacy::{ADMIN_AUDIT_FILE, check_file, write_jsonl};

/// The store's space holding the trail: a record under `r` and its seq
/// (8 bytes, big-endian), and under [`HEAD_KEY`] the count of records.
pub const SPACE: &str = "admin-trail";
/// The key of the trail's head: how many records it holds (8 bytes,
/// big-endian), written in the same batch as the last of them, so that
/// a removed last record is caught too.
const HEAD_KEY: &[u8] = b"head";
/// The key of a move under way: while an earlier hub's file is moved in,
/// the file's count of records and last hash (see [`legacy`]).
const MOVING_KEY: &[u8] = b"moving";
/// First byte of a record's key.
const RECORD: u8 = b'r';

/// Why the trail could not be opened, moved or written.
#[derive(Debug, thiserror::Error)]
pub enum AdminAuditError {
    #[error("admin audit trail: {0}")]
    Store(#[from] StoreError),
    #[error("admin audit trail {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(
        "admin audit trail {place} is broken at record {record}: {reason}; restore it from a backup and report the incident"
    )]
    Broken {
        /// "in the store", or the file of an earlier hub.
        place: String,
        record: u64,
        reason: String,
    },
    /// The file of an earlier hub and the stored trail hold different
    /// records: neither can stand for the trail.
    #[error(
        "admin audit trail: {file} and the stored trail diverge; start the hub once (it keeps the file aside, pinned in the trail) and try again"
    )]
    Diverged { file: PathBuf },
    /// A record is in the trail but could not be made durable: the hub
    /// stops (see [`crate::fatal::not_durable`]).
    #[error(
        "admin audit trail: record {seq} is in the trail but could not be made durable ({reason}); the hub is stopping"
    )]
    NotDurable { seq: u64, reason: String },
    #[error(transparent)]
    Poisoned(#[from] Poisoned),
}

impl AdminAuditError {
    fn broken_in_store(record: u64, reason: impl Into<String>) -> Self {
        Self::Broken {
            place: "in the store".into(),
            record,
            reason: reason.into(),
        }
    }
}

/// One recorded action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: u64,
    pub at_micros: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
    /// gRPC status code; 0 = done.
    pub code: i32,
    pub outcome: String,
    pub previous_hash: String,
    pub hash: String,
}

impl AuditRecord {
    fn compute_hash(&self) -> String {
        let body = serde_json::json!([
            self.seq,
            self.at_micros,
            self.actor,
            self.action,
            self.detail,
            self.code,
            self.outcome,
            self.previous_hash
        ]);
        hex::encode(sha256(body.to_string().as_bytes()))
    }
}

/// Longest `detail` or `outcome` a record keeps, in bytes: a request can
/// carry megabytes in a field, and the trail must not grow with them.
pub const MAX_FIELD_BYTES: usize = 1024;

/// `value` cut to at most `max` bytes on a character boundary, marked
/// with "…" where it was cut.
pub fn capped(value: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if value.len() <= max {
        return value.into();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end]).into()
}

/// The key of record `seq`.
fn record_key(seq: u64) -> [u8; 9] {
    let mut key = [RECORD; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// One page of the trail.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<AuditRecord>,
    /// More records follow the last one returned.
    pub more: bool,
}

/// The open trail.
pub struct AdminAudit {
    store: Arc<dyn Store>,
    /// One append at a time: each continues the tip the last one left.
    writing: Mutex<()>,
    /// The access log that receives a copy of every record, once attached.
    access: std::sync::OnceLock<Arc<crate::access_log::AccessLog>>,
}

impl AdminAudit {
    /// Opens the trail in `store`, first moving in the records of an
    /// earlier hub's file in `data_dir` (once), then checking the whole
    /// chain: a broken one refuses the start, naming the record.
    pub fn open(store: Arc<dyn Store>, data_dir: &Path) -> Result<Self, AdminAuditError> {
        Self::open_as(store, data_dir, None)
    }

    /// As [`AdminAudit::open`], for the replica named `replica` (its
    /// `[store] replica_name`): a move of its file that another replica
    /// finds cut short names it.
    pub fn open_as(
        store: Arc<dyn Store>,
        data_dir: &Path,
        replica: Option<&str>,
    ) -> Result<Self, AdminAuditError> {
        legacy::move_into(store.as_ref(), data_dir, replica)?;
        let tip = check(store.as_ref())?;
        tracing::debug!(records = tip.count, "admin audit trail checked");
        Ok(Self {
            store,
            writing: Mutex::new(()),
            access: std::sync::OnceLock::new(),
        })
    }

    /// The trail as a replica's standby opens it: the whole chain checked,
    /// but an earlier hub's file in `data_dir` left where it is (its chain
    /// checked, a broken one logged): moving it in is a write, which only
    /// the lease's holder makes, so this replica moves it once it leads
    /// ([`AdminAudit::open_as`] at that start). A standby appends nothing.
    pub fn open_following(store: Arc<dyn Store>, data_dir: &Path) -> Result<Self, AdminAuditError> {
        match check_file(data_dir) {
            Ok(Some(file)) => tracing::info!(
                records = file.count,
                "standby: {ADMIN_AUDIT_FILE} of an earlier version stays in the data directory; \
                 it is moved into the store when this replica leads"
            ),
            Ok(None) => {}
            Err(e) => tracing::error!(
                error = %e,
                "standby: serving reads, but {ADMIN_AUDIT_FILE} of an earlier version is broken: \
                 this replica's start as leader is refused until it is restored from a backup"
            ),
        }
        let tip = check(store.as_ref())?;
        tracing::debug!(records = tip.count, "admin audit trail checked");
        Ok(Self {
            store,
            writing: Mutex::new(()),
            access: std::sync::OnceLock::new(),
        })
    }

    /// Copies every record from now on into the access log, as a record of
    /// kind `admin`. It is handed over at once and made durable by the
    /// same group commit as the admin call's own record (admin changes are
    /// writes: their answer waits for it), which the writer takes after it.
    pub fn include_in(&self, log: Arc<crate::access_log::AccessLog>) {
        let _ = self.access.set(log);
    }

    /// Appends a record durably, `detail` and `outcome` cut to
    /// [`MAX_FIELD_BYTES`]; returns it. It continues the tip as the store
    /// holds it now, so a replica that took over continues the trail its
    /// predecessor left.
    pub fn record(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        code: i32,
        outcome: &str,
    ) -> Result<AuditRecord, AdminAuditError> {
        let _one = crate::fatal::lock(&self.writing, "admin audit trail")?;
        let record = append(
            self.store.as_ref(),
            actor,
            action,
            detail,
            code,
            outcome,
            None,
        )?;
        if let Some(log) = self.access.get() {
            log.record(crate::access_log::AccessRecord {
                at_micros: log.now_micros(),
                kind: crate::access_log::RecordKind::Admin,
                caller: record.actor.clone(),
                method: record.action.clone(),
                targets: [format!("admin-trail:{}", record.seq), record.detail.clone()]
                    .into_iter()
                    .filter(|t| !t.is_empty())
                    .collect(),
                code: record.code,
                message: record.outcome.clone(),
                ..Default::default()
            });
        }
        Ok(record)
    }

    /// Records with seq > `after`: at most `limit`, and no more than
    /// `max_bytes` of record text once one is taken (a page holds at
    /// least one record when any follows). Read from the store a block of
    /// records at a time, never the whole trail.
    pub fn list(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Page, AdminAuditError> {
        chain::page(self.store.as_ref(), after, limit, max_bytes)
    }
}

/// Moves the records of the file an earlier hub left in `data_dir` into
/// the stored trail, once (see [`legacy`]); a restore does, as a start.
pub fn move_in(store: &dyn Store, data_dir: &Path) -> Result<(), AdminAuditError> {
    legacy::move_into(store, data_dir, None)
}

/// Checks the stored trail's whole chain, and the file an earlier hub
/// left in `data_dir` if it is still there (`verify-data`, a restore);
/// returns how many records the store holds.
pub fn verify(store: &dyn Store, data_dir: &Path) -> Result<u64, AdminAuditError> {
    let tip = check(store)?;
    check_file(data_dir)?;
    Ok(tip.count)
}

/// Appends a record to the trail in `store` (its record and the moved
/// head in one batch, with `moving` as [`put`] takes it), durably.
fn append(
    store: &dyn Store,
    actor: &str,
    action: &str,
    detail: &str,
    code: i32,
    outcome: &str,
    moving: Option<Option<&[u8]>>,
) -> Result<AuditRecord, AdminAuditError> {
    let tip = chain::tip(store)?;
    let mut record = AuditRecord {
        seq: tip.count + 1,
        at_micros: tongbao_proto::now_micros(),
        actor: capped(actor, MAX_FIELD_BYTES).into_owned(),
        action: capped(action, MAX_FIELD_BYTES).into_owned(),
        detail: capped(detail, MAX_FIELD_BYTES).into_owned(),
        code,
        outcome: capped(outcome, MAX_FIELD_BYTES).into_owned(),
        previous_hash: tip.last_hash,
        hash: String::new(),
    };
    record.hash = record.compute_hash();
    put(store, std::slice::from_ref(&record), moving)?;
    durable(store, record.seq)?;
    Ok(record)
}

/// Makes the records applied so far durable. A failure leaves record
/// `seq` visible yet not durable, which no answer can take back: the hub
/// stops, as it does when a workflow's state falls behind its log, and
/// starts again from what the store holds.
fn durable(store: &dyn Store, seq: u64) -> Result<(), AdminAuditError> {
    let failed = if crate::failpoint::fail_once("admin-trail-sync") {
        Err(StoreError::Database("failpoint admin-trail-sync".into()))
    } else {
        store.state_sync()
    };
    failed.map_err(|e| {
        let e = AdminAuditError::NotDurable {
            seq,
            reason: e.to_string(),
        };
        crate::fatal::not_durable(e.to_string());
        e
    })
}

/// Writes `records` (consecutive, continuing the stored tip) and the head
/// after the last, with `moving` (the key of a move under way: Some(Some)
/// puts it, Some(None) removes it) as one batch; durable at the next
/// `state_sync`.
fn put(
    store: &dyn Store,
    records: &[AuditRecord],
    moving: Option<Option<&[u8]>>,
) -> Result<(), AdminAuditError> {
    let mut batch = StateBatch::default();
    for r in records {
        batch.insert(record_key(r.seq), chain::encode(r)?);
    }
    if let Some(last) = records.last() {
        batch.insert(HEAD_KEY, last.seq.to_be_bytes());
    }
    match moving {
        Some(Some(value)) => batch.insert(MOVING_KEY, value),
        Some(None) => batch.remove(MOVING_KEY),
        None => {}
    }
    if !batch.is_empty() {
        store.state_apply(SPACE, &batch)?;
    }
    Ok(())
}
