//! The trail as earlier hubs kept it: `admin-audit.jsonl` in the data
//! directory, one record a line, written beside the store.
//!
//! The first start of this hub moves the file's records into the store,
//! in order, then renames the file (`.moved`), so they are never moved
//! twice; a move cut short goes on at the next start (records are keyed
//! by seq, so moving one again changes nothing). A move of more than one
//! batch is marked under way in the store (the `moving` key) from its
//! first batch to its last: a start that finds the mark without the file
//! (another replica took over from one killed mid-move) appends a record
//! of the hub naming the unfinished move before anything else, so the
//! trail never goes on silently cut short; the file's owner then keeps
//! its file aside. A file that is not part
//! of the stored trail (another replica's, from before they shared one)
//! is kept aside (`.kept`) and a record pinning its last hash is appended
//! to the trail, so that nothing of it is lost or silently changed.
//!
//! A backup writes the stored trail in this same format, which a restore
//! moves in again.

use super::chain::{Beyond, Tip, walk};
use super::{AdminAuditError, AuditRecord, MOVING_KEY, SPACE, append, put};
use crate::store::{Store, sync_dir};
use serde::{Deserialize, Serialize};
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

/// A move under way, as its first batch stores it under the `moving`
/// key: the file's count of records and last hash, how many records the
/// store held before it, and the moving replica's name when it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Moving {
    pub count: u64,
    pub last_hash: String,
    pub from: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

impl Moving {
    pub(super) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn of(&self, file: &Tip) -> bool {
        self.count == file.count && self.last_hash == file.last_hash
    }
}

/// The move another start left under way, if any.
fn moving(store: &dyn Store) -> Result<Option<Moving>, AdminAuditError> {
    store
        .state_get(SPACE, MOVING_KEY)?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|_| {
                AdminAuditError::broken_in_store(0, "its key of a move under way cannot be read")
            })
        })
        .transpose()
}

/// Moves the records of the file in `data_dir`, if there is one, into the
/// stored trail (see the module's doc).
pub(super) fn move_into(
    store: &dyn Store,
    data_dir: &Path,
    replica: Option<&str>,
) -> Result<(), AdminAuditError> {
    let path = data_dir.join(ADMIN_AUDIT_FILE);
    let file = match present(&path)? {
        true => Some(read_file(&path, |_| Ok(()))?),
        false => None,
    };
    let under_way = moving(store)?;
    let ours = match (&under_way, &file) {
        (Some(m), Some(f)) => m.of(f),
        _ => false,
    };
    if let Some(m) = under_way.as_ref().filter(|_| !ours) {
        pin_incomplete(store, m)?;
    }
    let Some(file) = file else {
        return Ok(());
    };
    let stored = super::chain::tip(store)?;
    let mut at_stored = None;
    read_file(&path, |r| {
        if r.seq == stored.count {
            at_stored = Some(r.hash);
        }
        Ok(())
    })?;
    if stored.count == 0 || at_stored.as_deref() == Some(stored.last_hash.as_str()) {
        let m = Moving {
            count: file.count,
            last_hash: file.last_hash.clone(),
            from: stored.count,
            replica: replica.map(str::to_string),
        };
        copy_rest(store, &path, stored.count, &m, ours)?;
        let moved = set_aside(&path, "moved")?;
        tracing::info!(
            records = file.count.saturating_sub(stored.count),
            file = %moved.display(),
            "admin audit trail moved into the store"
        );
    } else if !ours
        && file.count < stored.count
        && super::chain::hash_at(store, file.count)?.as_deref() == Some(file.last_hash.as_str())
    {
        // Moved before; only the rename was left to do.
        set_aside(&path, "moved")?;
    } else {
        keep_aside(store, &path, &file, ours)?;
    }
    Ok(())
}

/// Copies the file's records after `after` into the store, a batch at a
/// time. A move of more than one batch is marked under way by its first
/// and done by its last, so that a start that finds it unfinished without
/// the file says so in the trail rather than continue a trail cut short.
fn copy_rest(
    store: &dyn Store,
    path: &Path,
    after: u64,
    m: &Moving,
    mut marked: bool,
) -> Result<(), AdminAuditError> {
    let mark = m.encode();
    let mut batch = Vec::with_capacity(MOVE_BATCH);
    read_file(path, |r| {
        if r.seq > after {
            batch.push(r);
        }
        if batch.len() == MOVE_BATCH {
            put(store, &batch, (!marked).then_some(Some(mark.as_slice())))?;
            marked = true;
            batch.clear();
        }
        Ok(())
    })?;
    put(store, &batch, marked.then_some(None))?;
    let last = batch.last().map_or(after, |r| r.seq);
    super::durable(store, last)
}

/// Pins, by a record of the hub, a move another start left unfinished
/// (its file is not here), in the batch that clears the mark: the trail
/// says where it was cut short, and the file's owner keeps its file aside
/// when it starts.
fn pin_incomplete(store: &dyn Store, m: &Moving) -> Result<(), AdminAuditError> {
    // Nothing is appended to a trail whose start would be refused.
    let moved = super::chain::check(store)?.count.saturating_sub(m.from);
    let whose = match &m.replica {
        Some(name) => format!("replica {:?}", super::capped(name, 64)),
        None => "another data directory".to_string(),
    };
    let record = append(
        store,
        crate::pki::index::HUB_PARTY,
        "incomplete-admin-trail-move",
        &format!(
            "a move of {whose}'s {ADMIN_AUDIT_FILE} ({} records ending {}) \
             did not finish: moved {moved}; the rest is only in that file",
            m.count, m.last_hash
        ),
        0,
        "pinned",
        Some(None),
    )?;
    tracing::warn!(
        records = m.count,
        moved,
        pinned_as = record.seq,
        "a move of another data directory's admin audit trail into the store did not finish; \
         pinned in the trail, which goes on after what was moved"
    );
    Ok(())
}

/// Pins a file that is not part of the stored trail by a record of the
/// trail, then renames it: a start cut short in between pins it twice,
/// never not at all. `ours`: the file's own move was left under way, and
/// the pin ends it.
fn keep_aside(
    store: &dyn Store,
    path: &Path,
    file: &Tip,
    ours: bool,
) -> Result<(), AdminAuditError> {
    // Nothing is appended to a trail whose start would be refused.
    super::chain::check(store)?;
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
        ours.then_some(None),
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

/// Writes the trail into `to` (a new file, 0600, written a record at a
/// time) in the file format, each record as the store encodes it: the
/// stored records, or, where an earlier hub's file in `data_dir` holds
/// the stored trail and more (a move not run or cut short), that file's
/// records. Refuses when the two diverge. Returns how many.
pub fn write_jsonl(store: &dyn Store, data_dir: &Path, to: &Path) -> Result<u64, AdminAuditError> {
    let path = data_dir.join(ADMIN_AUDIT_FILE);
    let from_file = match check_file(data_dir)? {
        Some(file) => file_holds_more(store, &path, &file)?,
        None => false,
    };
    let mut failed = None;
    let mut count = 0;
    let written = tongbao_proto::secret_file::create_new_streamed(to, |out| {
        let mut line = |r: &AuditRecord| -> Result<(), AdminAuditError> {
            let bytes = super::chain::encode(r)?;
            out.write_all(&bytes)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| io(to, e))
        };
        let exported = match from_file {
            true => read_file(&path, |r| line(&r)),
            // The hub may append meanwhile: up to the head read first.
            false => walk(store, Beyond::Left, line),
        };
        match exported {
            Ok(tip) => {
                count = tip.count;
                Ok(())
            }
            Err(e) => {
                failed = Some(e);
                Err(std::io::Error::other("the trail could not be read"))
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    written.map_err(|e| io(to, e))?;
    Ok(count)
}

/// Whether the file holds the stored trail and more (then it is the
/// trail to export), or the store holds the file's records (then the
/// store is); refuses when they diverge.
fn file_holds_more(store: &dyn Store, path: &Path, file: &Tip) -> Result<bool, AdminAuditError> {
    let stored = super::chain::tip(store)?;
    if file.count <= stored.count
        && super::chain::hash_at(store, file.count)?.as_deref() == Some(file.last_hash.as_str())
    {
        return Ok(false);
    }
    let mut at_stored = (stored.count == 0).then(|| super::chain::GENESIS.to_string());
    read_file(path, |r| {
        if r.seq == stored.count {
            at_stored = Some(r.hash);
        }
        Ok(())
    })?;
    if at_stored.as_deref() == Some(stored.last_hash.as_str()) {
        return Ok(true);
    }
    Err(AdminAuditError::Diverged {
        file: path.to_path_buf(),
    })
}
