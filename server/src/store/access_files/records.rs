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

/// The marks of every file walked (see the module doc).
#[derive(Default)]
pub struct RecordIndex {
    files: Mutex<HashMap<PathBuf, Marks>>,
}

impl RecordIndex {
    /// Forgets a file cut or removed: its marks no longer hold.
    pub fn forget(&self, path: &Path) {
        if let Ok(mut files) = self.files.lock() {
            files.remove(path);
        }
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
        mut each: impl FnMut(AccessRow) -> bool,
    ) -> Result<(), StoreError> {
        let mut files = self
            .files
            .lock()
            .map_err(|_| StoreError::Database("the access log's read index is poisoned".into()))?;
        let marks = files.entry(path.to_path_buf()).or_default();
        let (mut pos, offset) = if from < marks.count {
            let k = (from / STEP) as usize;
            (
                (k as u64) * STEP,
                marks.offsets.get(k).copied().unwrap_or(0),
            )
        } else {
            (marks.count, marks.end)
        };
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
            if pos % STEP == 0 && (pos / STEP) as usize == marks.offsets.len() {
                marks.offsets.push(at);
            }
            if pos == marks.count {
                marks.count += 1;
                marks.end = end;
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
