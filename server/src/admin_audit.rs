//! The admin audit trail: who did what to the registry or the hub's TLS
//! material, when, and with what outcome (refusals included).
//!
//! Admin actions are rare, so the trail is a plain append-only file of
//! JSON lines beside the store, written and `fdatasync`ed one record at a
//! time. Each record carries the hash of the previous one, so removing or
//! editing a record breaks the chain and the hub refuses to start.

use crate::fatal::Poisoned;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
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

struct Inner {
    file: std::fs::File,
    records: Vec<AuditRecord>,
}

/// The open trail.
pub struct AdminAudit {
    path: PathBuf,
    inner: Mutex<Inner>,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AdminAudit {
    /// Opens (or creates) the trail in `data_dir`, checking the chain. A
    /// torn last line (crash during a write) is cut off with a warning.
    pub fn open(data_dir: &Path) -> Result<Self, AdminAuditError> {
        let path = data_dir.join(ADMIN_AUDIT_FILE);
        let io = |e: std::io::Error| AdminAuditError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut records: Vec<AuditRecord> = Vec::new();
        let mut good_len: u64 = 0;
        if path.exists() {
            let reader = std::io::BufReader::new(std::fs::File::open(&path).map_err(io)?);
            let lines: Vec<String> = reader.lines().collect::<Result<_, _>>().map_err(io)?;
            let text_len = std::fs::metadata(&path).map_err(io)?.len();
            let count = lines.len();
            for (i, line) in lines.into_iter().enumerate() {
                let broken = |reason: String| AdminAuditError::Broken {
                    path: path.clone(),
                    line: i + 1,
                    reason,
                };
                let record: AuditRecord = match serde_json::from_str(&line) {
                    Ok(r) => r,
                    Err(_) if i + 1 == count => {
                        tracing::warn!(path = %path.display(), "cutting off a torn last record of the admin audit trail");
                        break;
                    }
                    Err(e) => return Err(broken(e.to_string())),
                };
                let previous = records.last().map(|r| r.hash.as_str()).unwrap_or(GENESIS);
                if record.previous_hash != previous || record.seq != records.len() as u64 + 1 {
                    return Err(broken("the hash chain or numbering is broken".into()));
                }
                if record.compute_hash() != record.hash {
                    return Err(broken("the record does not match its hash".into()));
                }
                good_len += line.len() as u64 + 1;
                records.push(record);
            }
            if good_len < text_len {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io)?;
                f.set_len(good_len).map_err(io)?;
                f.sync_data().map_err(io)?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        Ok(Self {
            path,
            inner: Mutex::new(Inner { file, records }),
        })
    }

    /// Appends a record durably; returns it.
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
            seq: inner.records.len() as u64 + 1,
            at_micros: tongbao_proto::now_micros(),
            actor: actor.to_string(),
            action: action.to_string(),
            detail: detail.to_string(),
            code,
            outcome: outcome.to_string(),
            previous_hash: inner
                .records
                .last()
                .map(|r| r.hash.clone())
                .unwrap_or_else(|| GENESIS.to_string()),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        let mut line = serde_json::to_string(&record).map_err(|e| io(e.to_string()))?;
        line.push('\n');
        inner
            .file
            .write_all(line.as_bytes())
            .and_then(|()| inner.file.sync_data())
            .map_err(|e| io(e.to_string()))?;
        inner.records.push(record.clone());
        Ok(record)
    }

    /// Records with seq > `after`, at most `limit`.
    pub fn list(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, Poisoned> {
        let inner = crate::fatal::lock(&self.inner, "admin audit trail")?;
        Ok(inner
            .records
            .iter()
            .skip(usize::try_from(after).unwrap_or(usize::MAX))
            .take(limit)
            .cloned()
            .collect())
    }
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
        assert_eq!(trail.list(0, 10)?.len(), 2);
        trail.record("urn:tongbao:operator:ops", "reload-tls", "", 0, "done")?;
        assert_eq!(trail.list(1, 10)?.first().map(|r| r.seq), Some(2));
        drop(trail);
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(&path, text.replace("suspend-unit", "reinstate-unit"))?;
        assert!(matches!(
            AdminAudit::open(dir.path()),
            Err(AdminAuditError::Broken { line: 1, .. })
        ));
        Ok(())
    }
}
