//! What an origin's directory holds, read without changing it: where its
//! records end, what a crash may have left (a cut last write, hashes not
//! yet on disk), and the tree's hashes a crash cut off, recomputed from
//! the records. The writer repairs from it at its claim (`origin_log`);
//! a reader in another process (`audit-log` beside a running hub) reads
//! through it as it is, the missing hashes held in memory.

use super::frame::{Frame, Frames};
use super::layout::{self, TreeFile};
use super::records::RecordIndex;
use super::view::View;
use crate::store::StoreError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tongbao_proto::Hash;
use tongbao_proto::canonical::leaf_hash_of_bytes;
use tongbao_proto::merkle::{Frontier, stored_hash_count};

/// An origin's directory as found.
pub struct Found {
    pub dir: PathBuf,
    /// Every record file, in order (those wholly before `kept_from` too).
    pub files: Vec<(u64, PathBuf)>,
    pub kept_from: u64,
    pub checkpoint: Option<String>,
    /// The number after the last record.
    pub next: u64,
    /// A write cut short that ends the last file: past the checkpoint,
    /// the writer cuts it off. Within what the checkpoint covers nothing
    /// is cut: the check names what is wrong there.
    pub cut: Option<Cut>,
    /// What `first-commit` holds when it is there (see `layout`).
    pub first_commit: Option<String>,
    /// `kept-from` holds a removal's pending change, which `kept_from`
    /// took or dropped (by where the records end): the writer rewrites it.
    pub kept_pending: bool,
    /// What `kept-from` held before a pending change (as `kept_from`
    /// when none is pending).
    pub kept_before: u64,
}

impl Found {
    /// The files holding records from `kept_from` on.
    pub fn kept_files(&self) -> Vec<(u64, PathBuf)> {
        kept(&self.files, self.kept_from)
    }
}

/// The files of `files` holding records from `kept_from` on.
pub fn kept(files: &[(u64, PathBuf)], kept_from: u64) -> Vec<(u64, PathBuf)> {
    files
        .iter()
        .enumerate()
        .filter(|(i, _)| files.get(i + 1).is_none_or(|(next, _)| *next > kept_from))
        .map(|(_, f)| f.clone())
        .collect()
}

/// Reads the directory `dir` (see [`Found`]).
pub fn find(dir: &Path) -> Result<Found, StoreError> {
    // Read in the reverse of the writer's order (kept-from, records,
    // checkpoint, deletions): a commit between the reads then shows as
    // more records than the checkpoint covers, never fewer.
    let checkpoint = layout::read_text(&dir.join(layout::CHECKPOINT_FILE))?;
    #[cfg(test)]
    tests_hook::reached(tests_hook::Point::AfterCheckpoint);
    let kept = layout::read_kept_from(dir)?;
    #[cfg(test)]
    tests_hook::reached(tests_hook::Point::AfterKeptFrom);
    let first_commit = layout::read_text(&dir.join(layout::FIRST_COMMIT_FILE))?;
    let files = layout::record_files(dir).map_err(|e| layout::io(dir, e))?;
    // A removal committed after `kept-from` was read may have deleted
    // files the list lacks: the records would look missing.
    if layout::read_kept_from(dir)? != kept {
        return Err(StoreError::Unavailable(
            super::records::REMOVED_WHILE_READING.into(),
        ));
    }
    let signed = checkpoint
        .as_deref()
        .and_then(layout::signed_size)
        .unwrap_or(0);
    let (next, cut) = match files.last() {
        None => (kept.kept, None),
        Some((first, path)) => last_file_end(path, *first, signed)?,
    };
    let kept_from = kept.at(next);
    Ok(Found {
        kept_pending: kept.pending.is_some(),
        kept_before: kept.kept,
        dir: dir.to_path_buf(),
        files,
        kept_from,
        checkpoint,
        next,
        cut,
        first_commit,
    })
}

/// A write a crash cut short, to cut off at the claim.
pub struct Cut {
    pub path: PathBuf,
    /// Where the torn frame begins.
    pub at: u64,
    /// The record it would have been.
    pub record: u64,
    /// Whole frames follow it, cut off with it: records no later frame
    /// proves synced (written since the last sync, or in its round).
    pub whole_after: bool,
}

/// Where the records of the last file end: the number after its last
/// record, and the cut to make when a write past the checkpoint (`signed`
/// records) was torn. A bad frame at record `n` is a changed record, never
/// cut, when the checkpoint covers it, or when a whole frame after it says
/// more than `n` records were synced (`frame::durable_after`); a changed
/// one whose length is bad is refused, since nothing after it can be read
/// as its successor. Any other bad frame past the checkpoint is a crash's:
/// a power loss may leave unsynced writes torn with later ones whole.
fn last_file_end(path: &Path, first: u64, signed: u64) -> Result<(u64, Option<Cut>), StoreError> {
    let mut frames = Frames::open(path, 0).map_err(|e| layout::io(path, e))?;
    let mut n = first;
    // What the frames after the first bad one past the checkpoint say
    // (`frame::durable_after`), read once: the marks only grow.
    let mut after: Option<Option<(u64, u64)>> = None;
    loop {
        let at = frames.offset();
        let frame = frames.next_frame().map_err(|e| layout::io(path, e))?;
        let garbled = match frame {
            Frame::End => return Ok((n, None)),
            Frame::Whole { .. } => {
                n += 1;
                continue;
            }
            Frame::Garbled { .. } if n < signed => {
                n += 1;
                continue;
            }
            Frame::Cut if n < signed => return Ok((n, None)),
            Frame::Garbled { .. } => true,
            Frame::Cut => false,
        };
        let said = match after {
            Some(said) => said,
            None => {
                let said = super::frame::durable_after(path, at, n, frames.file_len())
                    .map_err(|e| layout::io(path, e))?;
                *after.insert(said)
            }
        };
        let synced = said.is_some_and(|(last, most)| last > n && most > n);
        match (synced, garbled) {
            (true, true) => n += 1,
            (true, false) => {
                return Err(StoreError::Corrupt(format!(
                    "access log {}: record {n}'s frame at offset {at} cannot be read, but a whole \
                     record's frame after it says record {n} was synced: a changed record, or a \
                     disk that lost a write it said was synced; nothing is cut and the log is not \
                     written; keep the file for audit",
                    path.display()
                )));
            }
            (false, _) => {
                let cut = Cut {
                    path: path.to_path_buf(),
                    at,
                    record: n,
                    whole_after: said.is_some(),
                };
                return Ok((n, Some(cut)));
            }
        }
    }
}

/// The most hashes a reader in another process recomputes in memory
/// (32 MiB): past it, it reads the tree as it is, and the check says
/// what is missing (the hub's start repairs it on disk).
pub const MOST_IN_MEMORY: usize = 1 << 20;

/// The hashes `tree` lacks of the records up to `found.next`, recomputed
/// from the records' lines and given to `sink` a batch at a time (none
/// held here); returns the number of hashes of the file to keep (whole
/// records' only), after which they go, known before the first batch.
pub fn missing_hashes(
    found: &Found,
    tree: &TreeFile,
    index: &RecordIndex,
    mut sink: impl FnMut(u64, Vec<Hash>) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let want = stored_hash_count(found.next);
    if tree.len >= want {
        return Ok(want);
    }
    // The records whose hashes the file holds whole.
    let (mut lo, mut hi) = (0u64, found.next);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match stored_hash_count(mid) <= tree.len {
            true => lo = mid,
            false => hi = mid - 1,
        }
    }
    let hashed = lo;
    let lost = |what: String| {
        StoreError::Corrupt(format!(
            "access log {}: {} holds the hashes of records 0..{hashed} but the log holds {} records, {what}",
            found.dir.display(),
            layout::TREE_FILE,
            found.next
        ))
    };
    if hashed < found.kept_from {
        return Err(lost(format!(
            "and records {hashed}..{} were removed under retention: their hashes are lost",
            found.kept_from
        )));
    }
    let mut frontier =
        Frontier::from_tree(hashed, tree).map_err(|e| lost(format!("and its edge: {e}")))?;
    let files = found.kept_files();
    let keep = stored_hash_count(hashed);
    let mut from = hashed;
    while from < found.next {
        let rows = index.rows(&files, from, found.next, 2048)?;
        let Some(last) = rows.last().map(|r| r.n) else {
            return Err(lost(format!("and record {from} is missing")));
        };
        let mut hashes = Vec::new();
        for row in rows {
            if row.n != from {
                return Err(lost(format!(
                    "and record {from} is missing (record {} follows)",
                    row.n
                )));
            }
            hashes.extend(
                frontier
                    .append(leaf_hash_of_bytes(&row.line))
                    .map_err(|e| lost(e.to_string()))?,
            );
            from += 1;
        }
        sink(keep, hashes)?;
        from = from.max(last + 1);
    }
    Ok(keep)
}

/// A view of the origin's log in `dir` as it is on disk, for a reader
/// that changes nothing: hashes a crash cut off are recomputed in memory.
pub fn view_of(dir: &Path, index: &RecordIndex) -> Result<View, StoreError> {
    let found = find(dir)?;
    let tree = TreeFile::open(&dir.join(layout::TREE_FILE))?;
    let mut extra = Vec::new();
    let recomputed = missing_hashes(&found, &tree, index, |_, batch| {
        extra.extend(batch);
        match extra.len() > MOST_IN_MEMORY {
            true => Err(StoreError::Database(format!(
                "more than {MOST_IN_MEMORY} stored hashes are missing: start the hub to recompute them"
            ))),
            false => Ok(()),
        }
    });
    let (on_disk, extra) = match recomputed {
        Ok(keep) => (keep, extra),
        Err(e @ StoreError::Unavailable(_)) => return Err(e),
        // What the tree holds is read as it is: the check names the rest.
        Err(e) => {
            tracing::debug!(error = %e, "the access log's missing hashes cannot be recomputed");
            (tree.len, Vec::new())
        }
    };
    Ok(View {
        dir: dir.to_path_buf(),
        files: found.kept_files(),
        kept_from: found.kept_from,
        next: found.next,
        tree_on_disk: on_disk,
        hashes: on_disk + extra.len() as u64,
        extra: Arc::new(extra),
        checkpoint: found.checkpoint,
    })
}

/// A test's hook between `find`'s first read and the others.
#[cfg(test)]
pub mod tests_hook {
    use std::cell::RefCell;

    /// Where in `find` a hook runs.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Point {
        AfterCheckpoint,
        AfterKeptFrom,
    }

    type Hook = (Point, Box<dyn FnMut()>);

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = RefCell::new(None);
    }

    /// Runs `hook` after the checkpoint's read in this thread's next `find`.
    pub fn set(hook: impl FnMut() + 'static) {
        set_at(Point::AfterCheckpoint, hook);
    }

    /// Runs `hook` at `point` in this thread's next `find`.
    pub fn set_at(point: Point, hook: impl FnMut() + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some((point, Box::new(hook))));
    }

    pub(super) fn reached(point: Point) {
        let hook = HOOK.with(|h| {
            let mut h = h.borrow_mut();
            match h.as_ref() {
                Some((at, _)) if *at == point => h.take(),
                _ => None,
            }
        });
        if let Some((_, mut hook)) = hook {
            hook();
        }
    }
}
