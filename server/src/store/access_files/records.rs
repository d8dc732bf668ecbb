//! Reading records out of an origin's record files by number: each file
//! holds consecutive records from the one its name gives, so record `n`
//! is in the last file starting at or before it, at a position found by
//! walking its frames. Walks leave marks (the offset of every
//! [`STEP`]th frame) so that a reader going on, or coming back, starts
//! near where it asks instead of at the file's start: a file is read
//! whole once, not once a page.

use super::frame::{Frame, Frames};
use super::layout::io;
use crate::store::StoreError;
use crate::store::access::AccessRow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Frames between two marks.
const STEP: u64 = 256;

/// What a reader says when retention removed a file it was to read (a
/// reader in another process, which cannot hold retention back).
pub const REMOVED_WHILE_READING: &str =
    "access log records were removed under retention while reading: run the command again";

/// The marks of one file: `offsets[k]` is where frame `k * STEP` begins;
/// the frames before `count` (ending at `end`) were walked.
#[derive(Default)]
struct Marks {
    offsets: Vec<u64>,
    count: u64,
    end: u64,
}

/// The marks of every file walked (see the module doc). The lock is
/// held only to look marks up and to add what a walk found, never while
/// a file is read: readers of other files, or of the same, go on.
#[derive(Default)]
pub struct RecordIndex {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    files: HashMap<PathBuf, Marks>,
    /// Counts forgets: a walk begun before one adds nothing it found.
    forgets: u64,
}

/// What a walk found past the marks it began with.
struct Found {
    /// (k, offset of frame `k * STEP`).
    offsets: Vec<(usize, u64)>,
    count: u64,
    end: u64,
}

impl RecordIndex {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Database("the access log's read index is poisoned".into()))
    }

    /// Forgets a file cut or removed: its marks no longer hold.
    pub fn forget(&self, path: &Path) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.files.remove(path);
            inner.forgets += 1;
        }
    }

    /// Adds what a walk begun at `forgets` found, unless a file was
    /// forgotten meanwhile (its marks may be of a file since cut).
    fn add(&self, path: &Path, forgets: u64, found: Found) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner.forgets != forgets {
            return Ok(());
        }
        let marks = inner.files.entry(path.to_path_buf()).or_default();
        for (k, offset) in found.offsets {
            if k == marks.offsets.len() {
                marks.offsets.push(offset);
            }
        }
        if found.count > marks.count {
            marks.count = found.count;
            marks.end = found.end;
        }
        Ok(())
    }

    /// Up to `limit` records numbered `from..to`, in order, from `files`
    /// (first record, path; in order). A record not in the files is not
    /// returned (readers check); a frame that does not read is named.
    pub fn rows(
        &self,
        files: &[(u64, PathBuf)],
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<AccessRow>, StoreError> {
        let mut out = Vec::new();
        let start = files
            .iter()
            .rposition(|(first, _)| *first <= from)
            .unwrap_or(0);
        for (i, (first, path)) in files.iter().enumerate().skip(start) {
            let file_end = files.get(i + 1).map_or(to, |(next, _)| (*next).min(to));
            if *first >= to || out.len() >= limit {
                break;
            }
            let wanted = from.max(*first);
            if wanted >= file_end {
                continue;
            }
            self.walk(path, *first, wanted - first, file_end - first, |row| {
                out.push(row);
                out.len() < limit
            })?;
        }
        Ok(out)
    }

    /// Calls `each` with the records at positions `from..to` of the file
    /// `path` (its first record `first`), until it returns false or the
    /// file ends.
    fn walk(
        &self,
        path: &Path,
        first: u64,
        from: u64,
        to: u64,
        each: impl FnMut(AccessRow) -> bool,
    ) -> Result<(), StoreError> {
        let (forgets, pos, offset, marked) = {
            let inner = self.lock()?;
            let none = Marks::default();
            let marks = inner.files.get(path).unwrap_or(&none);
            let (pos, offset) = if from < marks.count {
                let k = (from / STEP) as usize;
                (
                    (k as u64) * STEP,
                    marks.offsets.get(k).copied().unwrap_or(0),
                )
            } else {
                (marks.count, marks.end)
            };
            (inner.forgets, pos, offset, marks.offsets.len())
        };
        let mut found = Found {
            offsets: Vec::new(),
            count: 0,
            end: 0,
        };
        let result = Self::walk_from(
            path,
            first,
            (pos, offset, marked),
            (from, to),
            &mut found,
            each,
        );
        self.add(path, forgets, found)?;
        result
    }

    /// [`Self::walk`] from position `pos` at `offset`, the marks then
    /// numbering `marked`, what it finds past them noted in `found`.
    fn walk_from(
        path: &Path,
        first: u64,
        (mut pos, offset, marked): (u64, u64, usize),
        (from, to): (u64, u64),
        found: &mut Found,
        mut each: impl FnMut(AccessRow) -> bool,
    ) -> Result<(), StoreError> {
        let mut frames = match Frames::open(path, offset) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Unavailable(REMOVED_WHILE_READING.into()));
            }
            Err(e) => return Err(io(path, e)),
        };
        while pos < to {
            let at = frames.offset();
            let n = first + pos;
            let frame = frames.next_frame().map_err(|e| io(path, e))?;
            let end = match &frame {
                Frame::Whole { end, .. } | Frame::Garbled { end } => *end,
                Frame::End => return Ok(()),
                Frame::Cut => {
                    return Err(StoreError::Corrupt(format!(
                        "access log record {n} in {}: its frame's length is wrong or the file ends inside it: the file was cut or changed",
                        path.display()
                    )));
                }
            };
            let k = (pos / STEP) as usize;
            if pos % STEP == 0 && k >= marked {
                found.offsets.push((k, at));
            }
            if pos + 1 > found.count {
                found.count = pos + 1;
                found.end = end;
            }
            let row = match frame {
                Frame::Whole { row, .. } => row,
                _ if pos < from => {
                    pos += 1;
                    continue;
                }
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "access log record {n} in {}: its checksum fails: the record was changed",
                        path.display()
                    )));
                }
            };
            pos += 1;
            if pos > from && !each(row) {
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read of the index while another walk is inside a file goes on:
    /// the lock is not held while a file is read (with it held, this
    /// nested read would wait for ever).
    #[test]
    fn a_walk_holds_no_lock_while_it_reads() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("records");
        let mut bytes = Vec::new();
        for n in 0..600u64 {
            let row = AccessRow {
                n,
                at_micros: n as i64,
                line: format!("line {n}").into_bytes(),
            };
            super::super::frame::encode(&row, n, &mut bytes);
        }
        std::fs::write(&path, &bytes)?;
        let index = RecordIndex::default();
        let files = vec![(0u64, path.clone())];
        let mut nested = Vec::new();
        index.walk(&path, 0, 0, 600, |row| {
            if row.n == 300 {
                nested = index.rows(&files, 550, 600, 100).unwrap_or_default();
            }
            true
        })?;
        assert_eq!(
            nested.iter().map(|r| r.n).collect::<Vec<_>>(),
            (550..600).collect::<Vec<_>>()
        );
        // The marks both walks left still find records where they are.
        let again = index.rows(&files, 257, 260, 10)?;
        assert_eq!(
            again.iter().map(|r| r.n).collect::<Vec<_>>(),
            vec![257, 258, 259]
        );
        Ok(())
    }
}
