//! The access log's reads over one origin's files, bounded to a view: the
//! extent and checkpoint as they were when the view was taken, so that a
//! reader sees records, hashes and a checkpoint that belong together
//! whatever the writer appends meanwhile.

use super::layout::{self, TreeFile};
use super::records::RecordIndex;
use crate::store::StoreError;
use crate::store::access::{AccessExtent, AccessRow};
use std::path::PathBuf;
use std::sync::Arc;
use tongbao_proto::Hash;

/// One origin's log as of one moment.
#[derive(Clone, Default)]
pub struct View {
    pub dir: PathBuf,
    /// The record files holding records from `kept_from` on, in order.
    pub files: Vec<(u64, PathBuf)>,
    pub kept_from: u64,
    pub next: u64,
    /// Hashes read from `tree.hashes` (those below it).
    pub tree_on_disk: u64,
    /// Stored hashes in all: `tree_on_disk`, then `extra`.
    pub hashes: u64,
    /// Hashes a crash cut off the file, recomputed (a reader's view only).
    pub extra: Arc<Vec<Hash>>,
    pub checkpoint: Option<String>,
}

impl View {
    pub fn extent(&self) -> AccessExtent {
        AccessExtent {
            first_kept: (self.next > self.kept_from).then_some(self.kept_from),
            next: self.next,
            hashes: self.hashes,
        }
    }

    pub fn records(
        &self,
        index: &RecordIndex,
        from: u64,
        limit: usize,
    ) -> Result<Vec<AccessRow>, StoreError> {
        index.rows(&self.files, from.max(self.kept_from), self.next, limit)
    }

    fn missing(&self, i: u64) -> StoreError {
        StoreError::Corrupt(format!(
            "access log {}: stored hash {i} is missing",
            self.dir.display()
        ))
    }

    pub fn hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, StoreError> {
        let tree = TreeFile::open(&self.dir.join(layout::TREE_FILE))?;
        indexes
            .iter()
            .map(|&i| {
                if i < self.tree_on_disk.min(tree.len) {
                    tree.read_run(i, 1)?.pop().ok_or_else(|| self.missing(i))
                } else {
                    i.checked_sub(self.tree_on_disk)
                        .filter(|_| i < self.hashes)
                        .and_then(|at| self.extra.get(at as usize).copied())
                        .ok_or_else(|| self.missing(i))
                }
            })
            .collect()
    }

    pub fn hash_range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Hash)>, StoreError> {
        let end = self.hashes.min(from.saturating_add(limit as u64));
        if from >= end {
            return Ok(Vec::new());
        }
        let tree = TreeFile::open(&self.dir.join(layout::TREE_FILE))?;
        let on_disk_end = end.min(self.tree_on_disk).min(tree.len);
        let mut out: Vec<(u64, Hash)> = match from < on_disk_end {
            true => (from..)
                .zip(tree.read_run(from, on_disk_end - from)?)
                .collect(),
            false => Vec::new(),
        };
        let mut i = from + out.len() as u64;
        while i < end {
            let Some(h) = i
                .checked_sub(self.tree_on_disk)
                .and_then(|at| self.extra.get(at as usize))
            else {
                break;
            };
            out.push((i, *h));
            i += 1;
        }
        Ok(out)
    }

    pub fn first_at(
        &self,
        index: &RecordIndex,
        from: u64,
        before: u64,
        at_micros: i64,
    ) -> Result<Option<u64>, StoreError> {
        let end = before.min(self.next);
        let mut from = from.max(self.kept_from);
        while from < end {
            let rows = index.rows(&self.files, from, end, 1024)?;
            let Some(last) = rows.last().map(|r| r.n) else {
                return Ok(None);
            };
            if let Some(r) = rows.iter().find(|r| r.at_micros >= at_micros) {
                return Ok(Some(r.n));
            }
            from = last + 1;
        }
        Ok(None)
    }
}
