//! The access log as earlier hubs kept it: files in the data directory
//! (`files`), on sled and on PostgreSQL alike (there lost with the
//! replica's host). The first start of this hub moves them into the
//! store, which keeps the log now.
//!
//! The files are checked first, whole (as `tongbao-hub audit-log verify`
//! does), then moved in order a chunk of records at a time, each chunk
//! one commit of its records, its stored hashes and a checkpoint over
//! the chunk's end, signed here: a store never holds a checkpoint over
//! more than it holds, so a crash inside a chunk leaves a tail the
//! store's repair cuts. The last commit carries the files' own signed
//! checkpoint (files a crash left unsigned are signed as checked, since a
//! log in the store always has a checkpoint); then the directory is
//! renamed ([`MOVED_DIR`]) and kept for the operator. A move cut short
//! goes on at the next start from what the store holds, once the tree
//! there agrees with the files' up to it; a store already holding
//! another log under the origin is refused.

use super::check::scan;
use super::files::{self, TreeFile};
use super::stored_check::{CHUNK, StoredTree};
use super::writer::Signer;
use super::{AccessLogError, export};
use crate::store::access::{AccessLogStore, AccessRow};
use std::path::{Path, PathBuf};
use tongbao_proto::Hash;
use tongbao_proto::checkpoint::NoteVerifier;
use tongbao_proto::merkle::{HashReader, MerkleError, stored_hash_count, tree_hash};

/// What the directory is renamed to once moved.
pub const MOVED_DIR: &str = "access-log.moved";

fn refused(dir: &Path, why: impl std::fmt::Display) -> AccessLogError {
    AccessLogError::Closed(format!(
        "cannot move the access log files of an earlier version in {} into the store: {why}; \
         the hub does not start without them (see docs/access-log.md, \"Upgrading\")",
        dir.display()
    ))
}

/// The files' stored hashes: `tree.hashes`, then those the check computed
/// for records a crash left unhashed.
struct FileTree {
    file: Option<TreeFile>,
    on_disk: u64,
    unhashed: Vec<Hash>,
}

impl HashReader for FileTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MerkleError> {
        indexes
            .iter()
            .map(|&i| match (&self.file, i < self.on_disk) {
                (Some(f), true) => f.read_hashes(&[i]).map(|mut h| h.remove(0)),
                _ => usize::try_from(i - self.on_disk)
                    .ok()
                    .and_then(|at| self.unhashed.get(at).copied())
                    .ok_or_else(|| MerkleError::Reader(format!("hash {i} is missing"))),
            })
            .collect()
    }
}

/// Moves `<data_dir>/access-log` into the store under `origin`, when it is
/// there (see the module doc). The caller holds the origin's guard.
pub(super) fn move_files(
    data_dir: &Path,
    db: &dyn AccessLogStore,
    signer: &Signer,
    verifier: &NoteVerifier,
) -> Result<(), AccessLogError> {
    let origin = signer.origin();
    let dir = data_dir.join(files::DIR);
    if !dir.is_dir() {
        return Ok(());
    }
    let scanned = scan(&dir, verifier, origin).map_err(|e| refused(&dir, e))?;
    let size = scanned.size;
    let on_disk = stored_hash_count(scanned.hashed);
    let tree_path = dir.join(files::TREE_FILE);
    let tree = FileTree {
        file: match on_disk {
            0 => None,
            _ => Some(TreeFile::open(&tree_path).map_err(|e| AccessLogError::io(&tree_path, e))?),
        },
        on_disk,
        unhashed: scanned.unhashed.clone(),
    };
    // Segments whose removal record was written before a crash left them
    // are removed: their records are not moved.
    let unfinished: Vec<(u64, u64)> = scanned
        .segments
        .iter()
        .filter(|s| scanned.unfinished_removals.contains(&s.path))
        .map(|s| (s.name.first, s.name.first + s.count))
        .collect();
    // Files a crash left without any checkpoint are signed as checked: a
    // log in the store always has one (`stored_check`).
    let note = match &scanned.checkpoint {
        Some((_, note)) => Some(note.clone()),
        None if size > 0 => Some(signer.sign(size, tree_hash(size, &tree)?)?),
        None => None,
    };
    let done = moved_so_far(db, origin, size, &tree).map_err(|e| refused(&dir, e))?;
    if done > 0 {
        tracing::warn!(dir = %dir.display(), records = done, "going on with a move of the access log into the store cut short");
    }
    let mut mover = Mover {
        db,
        origin,
        tree: &tree,
        signer,
        size,
        note: note.as_deref(),
        next: done,
        rows: Vec::new(),
    };
    let first_file = scanned.segments.first().map_or(size, |s| s.name.first);
    // Records removed under retention: their hashes only.
    while mover.next < first_file.min(size) {
        let end = (mover.next + CHUNK as u64).min(first_file);
        mover.commit(end)?;
    }
    export::for_each_record(data_dir, |line, r| {
        if r.n < mover.next || r.n >= size {
            return Ok(r.n < size);
        }
        if !unfinished.iter().any(|(a, b)| (*a..*b).contains(&r.n)) {
            mover.rows.push(AccessRow {
                n: r.n,
                at_micros: r.at_micros,
                line: line.as_bytes().to_vec(),
            });
        }
        if mover.rows.len() >= tests_hook::chunk() {
            mover.commit(r.n + 1)?;
        }
        Ok(true)
    })?;
    if mover.next < size || note.is_some() {
        mover.commit(size)?;
    }
    let moved = unused_name(data_dir);
    std::fs::rename(&dir, &moved).map_err(|e| AccessLogError::io(&dir, e))?;
    files::sync_dir(data_dir).map_err(|e| AccessLogError::io(data_dir, e))?;
    tracing::info!(
        records = size,
        kept_in = %moved.display(),
        "the access log files of an earlier version are moved into the store"
    );
    Ok(())
}

/// `access-log.moved`, or the first `access-log.moved.N` not taken.
fn unused_name(data_dir: &Path) -> PathBuf {
    let mut path = data_dir.join(MOVED_DIR);
    let mut n = 2;
    while path.exists() {
        path = data_dir.join(format!("{MOVED_DIR}.{n}"));
        n += 1;
    }
    path
}

/// How many of the files' records the store already holds (a move cut
/// short): its stored hashes must be those of a whole prefix of them, and
/// its tree the files' up to it.
fn moved_so_far(
    db: &dyn AccessLogStore,
    origin: &str,
    size: u64,
    tree: &FileTree,
) -> Result<u64, String> {
    let extent = db.access_extent(origin).map_err(|e| e.to_string())?;
    if extent.hashes == 0 && extent.next == 0 {
        return Ok(0);
    }
    let (mut lo, mut hi) = (0u64, size);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if stored_hash_count(mid) < extent.hashes {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let other = || {
        format!(
            "the store already holds another access log under {origin} ({} records); \
             move the directory aside and keep it for audit",
            extent.next
        )
    };
    if stored_hash_count(lo) != extent.hashes || extent.next > lo {
        return Err(other());
    }
    let theirs = tree_hash(
        lo,
        &StoredTree {
            db: db.access_reads(),
            origin,
        },
    )
    .map_err(|e| e.to_string())?;
    let ours = tree_hash(lo, tree).map_err(|e| e.to_string())?;
    if theirs != ours {
        return Err(other());
    }
    Ok(lo)
}

struct Mover<'a> {
    db: &'a dyn AccessLogStore,
    origin: &'a str,
    tree: &'a FileTree,
    signer: &'a Signer,
    /// The files' records: the commit ending there carries `note`.
    size: u64,
    /// The files' own signed checkpoint.
    note: Option<&'a str>,
    /// The first record not yet moved.
    next: u64,
    rows: Vec<AccessRow>,
}

impl Mover<'_> {
    /// Commits the rows gathered and the hashes of records `next..end`.
    fn commit(&mut self, end: u64) -> Result<(), AccessLogError> {
        let first_hash = stored_hash_count(self.next);
        let indexes: Vec<u64> = (first_hash..stored_hash_count(end)).collect();
        let hashes = self.tree.read_hashes(&indexes)?;
        // A chunk before the last is signed over its own end: the files'
        // checkpoint covers records the store does not hold yet.
        let note = match end >= self.size {
            true => self.note.map(str::to_string),
            false if end > 0 => Some(self.signer.sign(end, tree_hash(end, self.tree)?)?),
            false => None,
        };
        self.db.access_append(
            self.origin,
            &std::mem::take(&mut self.rows),
            first_hash,
            &hashes,
            note.as_deref(),
            None,
        )?;
        self.next = end;
        tests_hook::chunk_committed()
    }
}

#[cfg(not(test))]
mod tests_hook {
    use super::{AccessLogError, CHUNK};

    pub(super) fn chunk() -> usize {
        CHUNK
    }

    pub(super) fn chunk_committed() -> Result<(), AccessLogError> {
        Ok(())
    }
}

/// A test's move in small chunks, cut short after some of them.
#[cfg(test)]
pub(super) mod tests_hook {
    use super::{AccessLogError, CHUNK};
    use std::cell::Cell;

    thread_local! {
        static CHUNK_SIZE: Cell<Option<usize>> = const { Cell::new(None) };
        static STOP_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// This thread's moves commit chunks of `size` records, the move
    /// failing after `stop_after` of them.
    pub fn set(size: Option<usize>, stop_after: Option<usize>) {
        CHUNK_SIZE.set(size);
        STOP_AFTER.set(stop_after);
    }

    pub(super) fn chunk() -> usize {
        CHUNK_SIZE.get().unwrap_or(CHUNK)
    }

    pub(super) fn chunk_committed() -> Result<(), AccessLogError> {
        match STOP_AFTER.get() {
            Some(n) if n <= 1 => {
                STOP_AFTER.set(None);
                Err(AccessLogError::Closed("a test cut the move short".into()))
            }
            Some(n) => {
                STOP_AFTER.set(Some(n - 1));
                Ok(())
            }
            None => Ok(()),
        }
    }
}
