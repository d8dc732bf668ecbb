//! The admin audit trail: who did what to the registry or the hub's TLS
//! material, when, and with what outcome (refusals included).
//!
//! Admin actions are rare, so the trail is a plain append-only file of
//! JSON lines beside the store, written and `fdatasync`ed one record at a
//! time. Each record carries the hash of the previous one, so removing or
//! editing a record breaks the chain and the hub refuses to start.
//!
//! The trail is also part of the access log: each record is copied there
//! as a record of kind `admin` (see [`AdminAudit::include_in`]), so one
//! verifiable log holds every call and every admin action.

use crate::fatal::Poisoned;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tongbao_proto::canonical::sha256;

/// File name of the trail inside the data directory.
pub const ADMIN_AUDIT_FILE: &str = "admin-audit.jsonl";

/// Why the trail could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum AdminAuditError {
    #[error("admin audit trail {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(
        "admin audit trail {path} is broken at line {line}: {reason}; restore it from a backup and report the incident"
    )]
    Broken {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(transparent)]
    Poisoned(#[from] Poisoned),
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
/// Every this many records, the open trail remembers where one begins,
/// so that a page is found without holding the records in memory.
const STRIDE: u64 = 256;

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

struct Inner {
    file: std::fs::File,
    /// Records in the trail (the last seq).
    count: u64,
    /// The last record's hash, which the next one chains to.
    last_hash: String,
    /// Bytes of whole records in the file.
    len: u64,
    /// `starts[i]` is where record `i * STRIDE + 1` begins.
    starts: Vec<u64>,
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
    path: PathBuf,
    inner: Mutex<Inner>,
    /// The access log that receives a copy of every record, once attached.
    access: std::sync::OnceLock<std::sync::Arc<crate::access_log::AccessLog>>,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AdminAudit {
    /// Opens (or creates, 0600) the trail in `data_dir`, checking the
    /// chain. A torn last line (crash during a write) is cut off with a
    /// warning.
    pub fn open(data_dir: &Path) -> Result<Self, AdminAuditError> {
        let path = data_dir.join(ADMIN_AUDIT_FILE);
        let io = |e: std::io::Error| AdminAuditError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut inner = Inner {
            file: open_private_append(&path).map_err(io)?,
            count: 0,
            last_hash: GENESIS.to_string(),
            len: 0,
            starts: Vec::new(),
        };
        let text_len = inner.file.metadata().map_err(io)?.len();
        let mut reader = std::io::BufReader::new(std::fs::File::open(&path).map_err(io)?);
        let mut line = String::new();
        loop {
            line.clear();
            let read = reader.read_line(&mut line).map_err(io)?;
            if read == 0 {
                break;
            }
            let last = reader.fill_buf().map_err(io)?.is_empty();
            let broken = |reason: String| AdminAuditError::Broken {
                path: path.clone(),
                line: inner.count as usize + 1,
                reason,
            };
            let record: AuditRecord = match serde_json::from_str(line.trim_end_matches('\n')) {
                Ok(r) => r,
                Err(_) if last => {
                    tracing::warn!(path = %path.display(), "cutting off a torn last record of the admin audit trail");
                    break;
                }
                Err(e) => return Err(broken(e.to_string())),
            };
            if record.previous_hash != inner.last_hash || record.seq != inner.count + 1 {
                return Err(broken("the hash chain or numbering is broken".into()));
            }
            if record.compute_hash() != record.hash {
                return Err(broken("the record does not match its hash".into()));
            }
            inner.note(record.hash, read as u64);
        }
        if inner.len < text_len {
            inner.file.set_len(inner.len).map_err(io)?;
            inner.file.sync_data().map_err(io)?;
        }
        Ok(Self {
            path,
            inner: Mutex::new(inner),
            access: std::sync::OnceLock::new(),
        })
    }

    /// Copies every record from now on into the access log, as a record of
    /// kind `admin`. It is handed over at once and made durable by the
    /// same group commit as the admin call's own record (admin changes are
    /// writes: their answer waits for it), which the writer takes after it.
    pub fn include_in(&self, log: std::sync::Arc<crate::access_log::AccessLog>) {
        let _ = self.access.set(log);
    }

    /// Appends a record durably, `detail` and `outcome` cut to
    /// [`MAX_FIELD_BYTES`]; returns it.
    pub fn record(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        code: i32,
        outcome: &str,
    ) -> Result<AuditRecord, AdminAuditError> {
        let io = |reason: String| AdminAuditError::Io {
            path: self.path.clone(),
            reason,
        };
        let mut inner = crate::fatal::lock(&self.inner, "admin audit trail")?;
        let mut record = AuditRecord {
            seq: inner.count + 1,
            at_micros: tongbao_proto::now_micros(),
            actor: capped(actor, MAX_FIELD_BYTES).into_owned(),
            action: capped(action, MAX_FIELD_BYTES).into_owned(),
            detail: capped(detail, MAX_FIELD_BYTES).into_owned(),
            code,
            outcome: capped(outcome, MAX_FIELD_BYTES).into_owned(),
            previous_hash: inner.last_hash.clone(),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        let mut line = serde_json::to_string(&record).map_err(|e| io(e.to_string()))?;
        line.push('\n');
        let written = inner
            .file
            .write_all(line.as_bytes())
            .and_then(|()| inner.file.sync_data());
        if let Err(e) = written {
            // Whatever part of the line reached the file goes, so that the
            // next record follows the last whole one (and the offsets hold).
            let len = inner.len;
            let _ = inner
                .file
                .set_len(len)
                .and_then(|()| inner.file.sync_data());
            return Err(io(e.to_string()));
        }
        inner.note(record.hash.clone(), line.len() as u64);
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
    /// least one record when any follows). Read from the file, not memory.
    pub fn list(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Page, AdminAuditError> {
        let io = |e: std::io::Error| AdminAuditError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let (count, len, from_seq, from) = {
            let inner = crate::fatal::lock(&self.inner, "admin audit trail")?;
            let stride = usize::try_from(after / STRIDE).unwrap_or(usize::MAX);
            let from = inner.starts.get(stride).copied();
            (inner.count, inner.len, after / STRIDE * STRIDE, from)
        };
        let Some(from) = from.filter(|_| after < count && limit > 0) else {
            return Ok(Page::default());
        };
        let mut file = std::fs::File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(from)).map_err(io)?;
        // Only whole records, as they were when the lock was held.
        let mut reader = std::io::BufReader::new(file.take(len - from));
        let mut page = Page::default();
        let mut seq = from_seq;
        let mut bytes = 0;
        let mut line = String::new();
        while seq < count {
            line.clear();
            if reader.read_line(&mut line).map_err(io)? == 0 {
                break;
            }
            seq += 1;
            if seq <= after {
                continue;
            }
            if page.records.len() == limit
                || (!page.records.is_empty() && bytes + line.len() > max_bytes)
            {
                page.more = true;
                break;
            }
            bytes += line.len();
            let record = serde_json::from_str(line.trim_end_matches('\n')).map_err(|e| {
                AdminAuditError::Broken {
                    path: self.path.clone(),
                    line: seq as usize,
                    reason: e.to_string(),
                }
            })?;
            page.records.push(record);
        }
        Ok(page)
    }
}

impl Inner {
    /// Takes note of a whole record of `bytes` just read or written.
    fn note(&mut self, hash: String, bytes: u64) {
        if self.count.is_multiple_of(STRIDE) {
            self.starts.push(self.len);
        }
        self.count += 1;
        self.len += bytes;
        self.last_hash = hash;
    }
}

/// Opens `path` for appending, creating it readable by the hub's user
/// alone: the trail names parties and what they asked.
fn open_private_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_survives_reopen_and_edits_are_caught() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let trail = AdminAudit::open(dir.path())?;
        trail.record(
            "urn:tongbao:operator:ops",
            "suspend-unit",
            "unit tax",
            0,
            "done",
        )?;
        trail.record("urn:tongbao:unit:tax", "suspend-unit", "unit tax", 7, "no")?;
        drop(trail);
        // A torn write at the end is cut off.
        let path = dir.path().join(ADMIN_AUDIT_FILE);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
        f.write_all(b"{\"seq\":3,")?;
        drop(f);
        let trail = AdminAudit::open(dir.path())?;
        assert_eq!(trail.list(0, 10, 1 << 20)?.records.len(), 2);
        trail.record("urn:tongbao:operator:ops", "reload-tls", "", 0, "done")?;
        assert_eq!(
            trail.list(1, 10, 1 << 20)?.records.first().map(|r| r.seq),
            Some(2)
        );
        drop(trail);
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(&path, text.replace("suspend-unit", "reinstate-unit"))?;
        assert!(matches!(
            AdminAudit::open(dir.path()),
            Err(AdminAuditError::Broken { line: 1, .. })
        ));
        Ok(())
    }

    #[test]
    fn large_fields_are_cut_and_the_file_is_private() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let trail = AdminAudit::open(dir.path())?;
        let huge = "x".repeat(4 << 20);
        let r = trail.record("urn:tongbao:unit:tax", "suspend-unit", &huge, 7, &huge)?;
        assert!(r.detail.len() <= MAX_FIELD_BYTES && r.detail.ends_with('…'));
        assert!(r.outcome.len() <= MAX_FIELD_BYTES);
        let path = dir.path().join(ADMIN_AUDIT_FILE);
        let meta = std::fs::metadata(&path)?;
        assert!(
            meta.len() < 4 * MAX_FIELD_BYTES as u64,
            "{} bytes",
            meta.len()
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // The cut record chains and reads back like any other.
        drop(trail);
        let trail = AdminAudit::open(dir.path())?;
        assert_eq!(trail.list(0, 10, 1 << 20)?.records, vec![r]);
        Ok(())
    }

    #[test]
    fn capped_cuts_on_a_character_boundary() {
        assert_eq!(capped("short", 64), "short");
        let cut = capped("通报通报通报", 8);
        assert!(cut.len() <= 8 && cut.ends_with('…'), "{cut}");
        assert_eq!(cut, "通…");
    }

    #[test]
    fn pages_are_read_from_the_file_by_count_and_bytes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let trail = AdminAudit::open(dir.path())?;
        let total = 2 * STRIDE + 37;
        for i in 0..total {
            trail.record(
                "urn:tongbao:operator:ops",
                "reload-tls",
                &format!("n{i}"),
                0,
                "done",
            )?;
        }
        // Reopened, pages begin anywhere, strides and their edges included.
        drop(trail);
        let trail = AdminAudit::open(dir.path())?;
        for after in [0, 1, STRIDE - 1, STRIDE, STRIDE + 1, 2 * STRIDE, total - 1] {
            let page = trail.list(after, 5, 1 << 20)?;
            let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
            let want: Vec<u64> = (after + 1..=total).take(5).collect();
            assert_eq!(seqs, want, "after {after}");
            assert_eq!(page.more, after + 5 < total, "after {after}");
            assert_eq!(page.records[0].detail, format!("n{after}"));
        }
        let end = trail.list(total, 5, 1 << 20)?;
        assert!(end.records.is_empty() && !end.more);
        // A byte budget smaller than a record still gives one record.
        let one = trail.list(0, 100, 1)?;
        assert_eq!((one.records.len(), one.more), (1, true));
        // Walking the pages gives every record once, in order.
        let mut after = 0;
        let mut seen = 0;
        loop {
            let page = trail.list(after, 1000, 4096)?;
            for r in &page.records {
                seen += 1;
                assert_eq!(r.seq, seen);
            }
            after = page.records.last().map_or(after, |r| r.seq);
            if !page.more {
                break;
            }
        }
        assert_eq!(seen, total);
        Ok(())
    }
}
