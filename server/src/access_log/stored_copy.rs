//! This host's copy of the latest signed checkpoint of a log the store
//! keeps (`stored`): written to the data directory after each commit of a
//! checkpoint, and held against the database's at every start.
//!
//! Whoever holds only the database's credentials can roll the log back
//! (delete its newest records, hashes and checkpoint, or put an older
//! signed checkpoint back) without the hub key: each of those leaves a
//! log that checks by itself. The copy on the host that wrote the log is
//! out of their reach, so a database checkpoint smaller than it, or not
//! consistent with it, is refused. A host without a copy (a new host, a
//! data directory rebuilt) accepts the database's with a warning.

use super::stored_check::{StoredScan, StoredTree, place};
use super::{AccessLogError, files};
use crate::store::access::AccessLogRead;
use std::io::Write;
use std::path::Path;
use tongbao_proto::checkpoint::{NoteVerifier, open_checkpoint};
use tongbao_proto::merkle::{check_tree, prove_tree};

/// The copy's file in the data directory (0600).
pub const COPY_FILE: &str = "access-log.checkpoint";

/// Replaces the copy with `note`, durably (a temporary file renamed over it).
pub fn write(data_dir: &Path, note: &str) -> Result<(), AccessLogError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(COPY_FILE);
    let tmp = data_dir.join(format!("{COPY_FILE}.tmp"));
    let io = |p: &Path, e: std::io::Error| AccessLogError::io(p, e);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io(&tmp, e))?;
    file.write_all(note.as_bytes()).map_err(|e| io(&tmp, e))?;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    files::sync_dir(data_dir).map_err(|e| io(data_dir, e))
}

/// Refuses a database checkpoint smaller than this host's copy, or not
/// consistent with it (see the module doc).
pub fn check(
    data_dir: &Path,
    db: &dyn AccessLogRead,
    origin: &str,
    verifier: &NoteVerifier,
    checked: &StoredScan,
) -> Result<(), AccessLogError> {
    let path = data_dir.join(COPY_FILE);
    let note = match std::fs::read_to_string(&path) {
        Ok(note) => note,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                file = %path.display(),
                "no copy of the access log's signed checkpoint on this host (a new host?): the database's is taken as it is"
            );
            return Ok(());
        }
        Err(e) => return Err(AccessLogError::io(&path, e)),
    };
    let refused = |what: String| AccessLogError::Broken {
        segment: place(origin),
        record: None,
        what,
    };
    let (copy, _) = open_checkpoint(&note, verifier, &[]).map_err(|e| {
        refused(format!(
            "this host's copy of the checkpoint ({}) does not verify under the hub key: {e}",
            path.display()
        ))
    })?;
    if copy.origin != origin {
        tracing::warn!(
            file = %path.display(),
            "this host's checkpoint copy is of another access log (the replica was renamed?): not held against the database's"
        );
        return Ok(());
    }
    let (size, root) = match &checked.checkpoint {
        Some((c, _)) => (c.size, c.root),
        None => (0, tongbao_proto::merkle::EMPTY_TREE_ROOT),
    };
    if size < copy.size {
        return Err(refused(format!(
            "the database's signed checkpoint covers {size} records but this host's copy ({}) covers {}: \
             the database was rolled back (restored) or its checkpoint replaced",
            path.display(),
            copy.size
        )));
    }
    let tree = StoredTree { db, origin };
    prove_tree(size, copy.size, &tree)
        .and_then(|proof| check_tree(&proof, size, &root, copy.size, &copy.root))
        .map_err(|e| {
            refused(format!(
                "the database's log is not consistent with this host's checkpoint copy ({}) of size {}: \
                 records it signed were changed ({e})",
                path.display(),
                copy.size
            ))
        })
}
