//! The trail as earlier hubs kept it: `admin-audit.jsonl` in the data
//! directory, one record a line, written beside the store.
//!
//! The first start of this hub moves the file's records into the store,
//! in order, then renames the file (`.moved`), so they are never moved
//! twice; a move cut short goes on at the next start (records are keyed
//! by seq, so moving one again changes nothing). A file that is not part
//! of the stored trail (another replica's, from before they shared one)
//! is kept aside (`.kept`) and a record pinning its last hash is appended
//! to the trail, so that nothing of it is lost or silently changed.
//!
//! A backup writes the stored trail in this same format, which a restore
//! moves in again.

use super::chain::{Beyond, Tip, walk};
use super::{AdminAuditError, AuditRecord, append, put};
use crate::store::{Store, sync_dir};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The file's name in the data directory, and in a backup.
pub const ADMIN_AUDIT_FILE: &str = "admin-audit.jsonl";
/// Records moved into the store per batch.
const MOVE_BATCH: usize = 256;

fn io(path: &Path, e: impl std::fmt::Display) -> AdminAuditError {
    AdminAuditError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Reads the file's whole records in order, checking their chain; a torn
/// last line (a crash during a write) is left out with a warning.
/// Returns the file's tip.
pub(super) fn read_file(
    path: &Path,
    mut visit: impl FnMut(AuditRecord) -> Result<(), AdminAuditError>,
) -> Result<Tip, AdminAuditError> {
    let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut tip = Tip::default();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(|e| io(path, e))? == 0 {
            return Ok(tip);
        }
        let last = reader.fill_buf().map_err(|e| io(path, e))?.is_empty();
        let broken = |reason: String| AdminAuditError::Broken {
            place: path.display().to_string(),
            record: tip.count + 1,
            reason,
        };
        let record: AuditRecord = match serde_json::from_str(line.trim_end_matches('\n')) {
            Ok(r) => r,
            Err(_) if last => {
                tracing::warn!(path = %path.display(), "leaving out a torn last record of the admin audit trail");
                return Ok(tip);
            }
            Err(e) => return Err(broken(e.to_string())),
        };
        if let Some(reason) = tip.refuses(&record) {
            return Err(broken(reason.into()));
        }
        tip.advance(&record);
        visit(record)?;
    }
}

/// The file's tip, checked, when `data_dir` still holds one.
pub fn check_file(data_dir: &Path) -> Result<Option<Tip>, AdminAuditError> {
    let path = data_dir.join(ADMIN_AUDIT_FILE);
    if !present(&path)? {
        return Ok(None);
    }
    read_file(&path, |_| Ok(())).map(Some)
}

fn present(path: &Path) -> Result<bool, AdminAuditError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(path, e)),
    }
}

/// Moves the records of the file in `data_dir`, if there is one, into the
/// stored trail (see the module's doc).
pub(super) fn move_into(store: &dyn Store, data_dir: &Path) -> Result<(), AdminAuditError> {
    let path = data_dir.join(ADMIN_AUDIT_FILE);
    if !present(&path)? {
        return Ok(());
    }
    let stored = super::chain::tip(store)?;
    let mut at_stored = None;
    let file = read_file(&path, |r| {
        if r.seq == stored.count {
            at_stored = Some(r.hash);
        }
        Ok(())
    })?;
    if stored.count == 0 || at_stored.as_deref() == Some(stored.last_hash.as_str()) {
        let mut batch = Vec::with_capacity(MOVE_BATCH);
        read_file(&path, |r| {
            if r.seq > stored.count {
                batch.push(r);
            }
            if batch.len() == MOVE_BATCH {
                put(store, &batch)?;
                batch.clear();
            }
            Ok(())
        })?;
        put(store, &batch)?;
        store.state_sync()?;
        let moved = set_aside(&path, "moved")?;
        tracing::info!(
            records = file.count.saturating_sub(stored.count),
            file = %moved.display(),
            "admin audit trail moved into the store"
        );
    } else if file.count < stored.count
        && super::chain::hash_at(store, file.count)?.as_deref() == Some(file.last_hash.as_str())
    {
        // Moved before; only the rename was left to do.
        set_aside(&path, "moved")?;
    } else {
        keep_aside(store, &path, &file)?;
    }
    Ok(())
}

/// Pins a file that is not part of the stored trail by a record of the
/// trail, then renames it: a start cut short in between pins it twice,
/// never not at all.
fn keep_aside(store: &dyn Store, path: &Path, file: &Tip) -> Result<(), AdminAuditError> {
    let kept = free_name(path, "kept")?;
    let kept_name = kept
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    append(
        store,
        crate::pki::index::HUB_PARTY,
        "keep-aside-admin-trail",
        &format!(
            "{ADMIN_AUDIT_FILE} of this hub's data directory ({} records, last hash {}) \
             is not part of the stored trail; kept as {kept_name}",
            file.count, file.last_hash
        ),
        0,
        "kept aside",
    )?;
    rename(path, &kept)?;
    tracing::warn!(
        file = %kept.display(),
        records = file.count,
        "this data directory's admin audit trail is not part of the stored trail; \
         kept aside, and its last hash recorded in the trail"
    );
    Ok(())
}

/// Renames `path` to the first free `NAME.SUFFIX`, `NAME.SUFFIX.2`, ...
fn set_aside(path: &Path, suffix: &str) -> Result<PathBuf, AdminAuditError> {
    let to = free_name(path, suffix)?;
    rename(path, &to)?;
    Ok(to)
}

fn free_name(path: &Path, suffix: &str) -> Result<PathBuf, AdminAuditError> {
    let base = format!("{}.{suffix}", path.display());
    for n in 1..=100 {
        let name = if n == 1 {
            PathBuf::from(&base)
        } else {
            PathBuf::from(format!("{base}.{n}"))
        };
        if !present(&name)? {
            return Ok(name);
        }
    }
    Err(io(
        path,
        format!("{base} .. {base}.100 all exist; move them away"),
    ))
}

fn rename(from: &Path, to: &Path) -> Result<(), AdminAuditError> {
    std::fs::rename(from, to).map_err(|e| io(from, e))?;
    if let Some(dir) = from.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Writes the trail into `to` (a new file, 0600) in the file format: the
/// stored records, or, for a data directory an earlier hub left whose
/// file was never moved, that file's whole records. Returns how many.
pub fn write_jsonl(store: &dyn Store, data_dir: &Path, to: &Path) -> Result<u64, AdminAuditError> {
    let mut text = Vec::new();
    let count = match check_file(data_dir)? {
        Some(tip) => {
            read_file(&data_dir.join(ADMIN_AUDIT_FILE), |r| {
                let line = serde_json::to_vec(&r).map_err(|e| io(to, e))?;
                text.extend_from_slice(&line);
                text.push(b'\n');
                Ok(())
            })?;
            tip.count
        }
        None => {
            // The hub may append meanwhile: up to the head read first.
            walk(store, Beyond::Left, |_, bytes| {
                text.extend_from_slice(bytes);
                text.push(b'\n');
                Ok(())
            })?
            .count
        }
    };
    tongbao_proto::secret_file::create_new(to, &text).map_err(|e| io(to, e))?;
    Ok(count)
}
