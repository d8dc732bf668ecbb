//! One origin's log as its writer holds it: repaired at the claim from
//! what a crash left, then appended to, one commit a call.
//!
//! A commit appends the stored hashes to `tree.hashes` (not synced: a
//! start recomputes what a crash cut off), then the records' frames to
//! the current record file, synced: the records are the commit point.
//! A checkpoint given is written after the tree is synced (a start reads
//! the checkpoint's tree from the file), replacing the last one
//! atomically. A removal commits `kept-from` (after the tree is synced:
//! the removed records' hashes then stand alone), then deletes the record
//! files wholly before it, unless a snapshot of this process is held (its
//! reads may still need them): those wait for a later commit.
//!
//! A lazy append (records no caller waits on) writes its frames unsynced;
//! the next append that is not lazy, rows or none, syncs them with its
//! own (and beginning a record file syncs the one before), so a
//! checkpoint never covers records not yet durable. Each frame says how
//! many records were synced before it was written (`frame`): the claim
//! tells a torn write from a changed record by it (`scan`).

use super::layout::{self, TreeFile, io};
use super::records::RecordIndex;
use super::scan::{self, Found};
use super::view::View;
use crate::store::StoreError;
use crate::store::access::AccessRow;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tongbao_proto::Hash;
use tongbao_proto::merkle::stored_hash_count;

/// A record file is ended once it passes this size; the next commit
/// begins a new one.
pub const FILE_BOUND: u64 = 64 << 20;

pub struct OriginLog {
    origin: String,
    /// [`FILE_BOUND`], but in tests of several files.
    file_bound: u64,
    dir: PathBuf,
    fsync: bool,
    /// Record files from `kept_from` on, in order.
    files: Vec<(u64, PathBuf)>,
    /// The last record file, open to append, and its length.
    current: Option<(File, u64)>,
    kept_from: u64,
    next: u64,
    hashes: u64,
    tree: File,
    checkpoint: Option<String>,
    /// Files removed under retention, deleted once no snapshot holds.
    pending: Vec<PathBuf>,
    /// Records were written lazily and are not yet synced.
    unsynced: bool,
    /// The number after the last record synced: each frame carries it
    /// (see `frame`), and `written` becomes it at a sync.
    durable: u64,
    /// The number after the last record written.
    written: u64,
    /// How many times record files were synced (tests of lazy syncs).
    #[cfg(test)]
    pub record_syncs: u64,
    /// Why a commit failed: the log takes no more until claimed anew
    /// (the claim repairs what the failure left).
    failed: Option<String>,
    /// A test's failure of the next checkpoint's write, after its commit's point.
    #[cfg(test)]
    pub fail_tail: Option<String>,
}

/// The number of records whose stored hashes number `hashes`, if whole.
fn size_of(hashes: u64) -> Option<u64> {
    let (mut lo, mut hi) = (0u64, hashes);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match stored_hash_count(mid) < hashes {
            true => lo = mid + 1,
            false => hi = mid,
        }
    }
    (stored_hash_count(lo) == hashes).then_some(lo)
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path, e)),
        _ => Ok(()),
    }
}

impl OriginLog {
    /// Opens `origin`'s log under `root` for writing (creating it), and
    /// repairs what a crash left (see `scan`).
    pub fn open(
        root: &Path,
        origin: &str,
        (fsync, file_bound): (bool, u64),
        index: &RecordIndex,
        held: bool,
    ) -> Result<Self, StoreError> {
        let dir = layout::origin_dir(root, origin)?;
        layout::create_dir(&dir)?;
        let origin_file = dir.join(layout::ORIGIN_FILE);
        if !origin_file.exists() {
            layout::replace(&origin_file, origin.as_bytes(), fsync)?;
        }
        let mut found = scan::find(&dir)?;
        if let Some(marked) = &found.first_commit {
            if found.checkpoint.is_none() {
                Self::undo_first_commit(&found, marked, index)?;
            }
            remove(&dir.join(layout::FIRST_COMMIT_FILE))?;
            layout::sync_dir(&dir)?;
            found = scan::find(&dir)?;
        }
        if found.kept_pending {
            // A removal's change taken or dropped: said plainly, so that
            // later records reaching its end do not take a dropped one.
            let kept = layout::KeptFrom {
                kept: found.kept_from,
                pending: None,
            };
            layout::replace(
                &dir.join(layout::KEPT_FROM_FILE),
                kept.text().as_bytes(),
                fsync,
            )?;
        }
        if let Some(cut) = &found.cut {
            Self::cut_off(cut, fsync)?;
            index.forget(&cut.path);
        }
        let tree_path = dir.join(layout::TREE_FILE);
        let hashes = Self::repair_tree(&found, &tree_path, index, fsync)?;
        let files = found.kept_files();
        let mut log = Self {
            origin: origin.to_string(),
            file_bound,
            current: None,
            kept_from: found.kept_from,
            next: found.next,
            hashes,
            tree: layout::open_append(&tree_path)?,
            checkpoint: found.checkpoint.clone(),
            pending: found
                .files
                .iter()
                .filter(|f| !files.contains(f))
                .map(|(_, p)| p.clone())
                .collect(),
            files,
            dir,
            fsync,
            failed: None,
            // What an earlier process wrote may not be on disk yet.
            unsynced: true,
            durable: 0,
            written: found.next,
            #[cfg(test)]
            record_syncs: 0,
            #[cfg(test)]
            fail_tail: None,
        };
        if let Some((_, path)) = log.files.last() {
            let file = layout::open_append(path)?;
            let len = file.metadata().map_err(|e| io(path, e))?.len();
            log.current = Some((file, len));
        }
        log.sync_records()?;
        log.delete_pending(index, held)?;
        Ok(log)
    }

    /// Cuts off a write a crash tore, the bytes cut kept aside in
    /// `cut-off-<record>` for audit (see `scan::Cut`).
    fn cut_off(cut: &scan::Cut, fsync: bool) -> Result<(), StoreError> {
        use std::io::{Read, Seek, SeekFrom};
        let path = &cut.path;
        let mut tail = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(cut.at))?;
                f.read_to_end(&mut tail)
            })
            .map_err(|e| io(path, e))?;
        // An earlier cut at the same record is kept too.
        let name = layout::cut_off_name(cut.record);
        let mut aside = path.with_file_name(&name);
        for k in 1.. {
            if !aside.exists() {
                break;
            }
            aside = path.with_file_name(format!("{name}.{k}"));
        }
        layout::replace(&aside, &tail, fsync)?;
        tracing::warn!(
            file = %path.display(),
            offset = cut.at,
            record = cut.record,
            whole_frames_after = cut.whole_after,
            kept_aside = %aside.display(),
            "cutting off a write of the access log a crash tore"
        );
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        f.set_len(cut.at)
            .and_then(|()| f.sync_data())
            .map_err(|e| io(path, e))
    }

    /// Removes the records of a first commit a crash cut short before its
    /// checkpoint (nobody was answered for them), and only those: the
    /// marker names where that commit ended, and a log going on past it
    /// is refused, never erased.
    fn undo_first_commit(
        found: &Found,
        marked: &str,
        index: &RecordIndex,
    ) -> Result<(), StoreError> {
        let marker = found.dir.join(layout::FIRST_COMMIT_FILE);
        let end: u64 = marked.trim().parse().map_err(|_| {
            StoreError::Corrupt(format!(
                "{} holds {:?}, not the record its commit ended at: remove it if the log's records are to stay",
                marker.display(),
                tongbao_proto::echo::shown(marked.trim())
            ))
        })?;
        // Records kept from past 0 before this commit are an earlier
        // commit's (its own removal, moving old files in, may set more).
        if found.next > end || found.kept_before > 0 {
            return Err(StoreError::Corrupt(format!(
                "{} marks a first commit ending at record {end}, but the log holds records {}..{} and no checkpoint: \
                 nothing is removed; remove {} if the records are to stay",
                marker.display(),
                found.kept_from,
                found.next,
                layout::FIRST_COMMIT_FILE
            )));
        }
        tracing::warn!(dir = %found.dir.display(), records = found.next, "removing the access log's first records, whose commit a crash cut short");
        for (_, path) in &found.files {
            remove(path)?;
            index.forget(path);
        }
        remove(&found.dir.join(layout::TREE_FILE))?;
        remove(&found.dir.join(layout::KEPT_FROM_FILE))
    }

    /// Cuts `tree.hashes` to the records' hashes, or completes it with
    /// those a crash cut off (recomputed from the records); their number.
    fn repair_tree(
        found: &Found,
        path: &Path,
        index: &RecordIndex,
        fsync: bool,
    ) -> Result<u64, StoreError> {
        let tree = TreeFile::open(path)?;
        let want = stored_hash_count(found.next);
        if tree.len == want {
            return Ok(want);
        }
        if tree.len > want {
            // Hashes of records a crash cut short go; never those the
            // checkpoint covers (records missing there are for the check
            // to name, and their hashes its evidence).
            let signed = found.checkpoint.as_deref().and_then(layout::signed_size);
            let keep = want.max(signed.map_or(0, stored_hash_count).min(tree.len));
            let file = layout::open_append(path)?;
            file.set_len(keep * tongbao_proto::HASH_LEN as u64)
                .map_err(|e| io(path, e))?;
            return Ok(keep);
        }
        // Streamed to the file a batch at a time: a log of any size.
        let file = layout::open_append(path)?;
        let mut cut_to: Option<u64> = None;
        let mut added = 0u64;
        let keep = scan::missing_hashes(found, &tree, index, |keep, batch| {
            if cut_to.is_none() {
                file.set_len(keep * tongbao_proto::HASH_LEN as u64)
                    .map_err(|e| io(path, e))?;
                cut_to = Some(keep);
            }
            let mut bytes = Vec::with_capacity(batch.len() * tongbao_proto::HASH_LEN);
            batch.iter().for_each(|h| bytes.extend_from_slice(h));
            added += batch.len() as u64;
            (&file).write_all(&bytes).map_err(|e| io(path, e))
        })?;
        if cut_to.is_none() {
            file.set_len(keep * tongbao_proto::HASH_LEN as u64)
                .map_err(|e| io(path, e))?;
        }
        if added > 0 {
            tracing::warn!(
                hashes = added,
                "recomputed access log hashes a crash cut off"
            );
        }
        if fsync {
            file.sync_data().map_err(|e| io(path, e))?;
        }
        Ok(keep + added)
    }

    /// The log as it is now.
    pub fn view(&self) -> View {
        View {
            dir: self.dir.clone(),
            files: self.files.clone(),
            kept_from: self.kept_from,
            next: self.next,
            tree_on_disk: self.hashes,
            hashes: self.hashes,
            extra: Arc::default(),
            checkpoint: self.checkpoint.clone(),
        }
    }

    fn refuse(&self, what: String) -> StoreError {
        StoreError::Database(format!("access log {}: {what}", self.origin))
    }

    /// Appends one commit (see the module doc and `AccessLogStore::access_append`).
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        rows: &[AccessRow],
        first_hash: u64,
        hashes: &[Hash],
        checkpoint: Option<&str>,
        remove_before: Option<u64>,
        index: &RecordIndex,
        held: bool,
    ) -> Result<(), StoreError> {
        let to_commit = (rows, first_hash, hashes);
        self.commit(to_commit, checkpoint, remove_before, false, index, held)
    }

    /// Appends records nobody waits on, unsynced (see the module doc); as
    /// `append` while the log has no checkpoint (its first commit).
    pub fn append_lazily(
        &mut self,
        rows: &[AccessRow],
        first_hash: u64,
        hashes: &[Hash],
        index: &RecordIndex,
        held: bool,
    ) -> Result<(), StoreError> {
        let lazy = self.checkpoint.is_some();
        self.commit((rows, first_hash, hashes), None, None, lazy, index, held)
    }

    fn commit(
        &mut self,
        (rows, first_hash, hashes): (&[AccessRow], u64, &[Hash]),
        checkpoint: Option<&str>,
        remove_before: Option<u64>,
        lazy: bool,
        index: &RecordIndex,
        held: bool,
    ) -> Result<(), StoreError> {
        if let Some(why) = &self.failed {
            return Err(self.refuse(format!(
                "an earlier commit failed ({why}): it takes no more until claimed again"
            )));
        }
        let (kept_from, next) = self.check(rows, first_hash, hashes)?;
        let result = self.write(
            rows,
            hashes,
            (checkpoint, remove_before, lazy),
            (kept_from, next),
            index,
            held,
        );
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    /// Refuses what would not leave a whole log; where the records stored
    /// will begin and end after the commit.
    fn check(
        &self,
        rows: &[AccessRow],
        first_hash: u64,
        hashes: &[Hash],
    ) -> Result<(u64, u64), StoreError> {
        if first_hash != self.hashes {
            return Err(self.refuse(format!(
                "the tree holds {} stored hashes: an append from hash {first_hash} would leave a gap or write over it",
                self.hashes
            )));
        }
        let tree_size = size_of(self.hashes).unwrap_or(self.next);
        let end = size_of(first_hash + hashes.len() as u64).ok_or_else(|| {
            self.refuse(format!(
                "{} hashes from {first_hash} do not end at a record's",
                hashes.len()
            ))
        })?;
        let stored = self.next > self.kept_from;
        let Some((first, last)) = rows.first().zip(rows.last()) else {
            return match (end > tree_size, stored) {
                (true, true) => Err(self.refuse(format!(
                    "hashes of records {tree_size}..{end} without the records, after records stored"
                ))),
                // Records removed under retention: their hashes alone.
                (true, false) => Ok((end, end)),
                (false, _) => Ok((self.kept_from, self.next)),
            };
        };
        if rows.iter().zip(first.n..).any(|(r, n)| r.n != n) {
            return Err(self.refuse(format!(
                "the records given from {} on are not consecutive",
                first.n
            )));
        }
        let starts = match stored {
            true => first.n == self.next,
            false => first.n >= tree_size.max(self.next),
        };
        if !starts || last.n + 1 != end {
            return Err(self.refuse(format!(
                "records {}..={} with hashes of records {tree_size}..{end} do not follow the log, which goes on at record {}",
                first.n, last.n, self.next
            )));
        }
        Ok((if stored { self.kept_from } else { first.n }, end))
    }

    fn write(
        &mut self,
        rows: &[AccessRow],
        hashes: &[Hash],
        (checkpoint, remove_before, lazy): (Option<&str>, Option<u64>, bool),
        (mut kept_from, next): (u64, u64),
        index: &RecordIndex,
        held: bool,
    ) -> Result<(), StoreError> {
        let tree_path = self.dir.join(layout::TREE_FILE);
        if self.checkpoint.is_none() && !rows.is_empty() {
            layout::replace(
                &self.dir.join(layout::FIRST_COMMIT_FILE),
                next.to_string().as_bytes(),
                self.fsync,
            )?;
        }
        if !hashes.is_empty() {
            let mut bytes = Vec::with_capacity(hashes.len() * tongbao_proto::HASH_LEN);
            hashes.iter().for_each(|h| bytes.extend_from_slice(h));
            self.tree.write_all(&bytes).map_err(|e| io(&tree_path, e))?;
        }
        if let Some(before) = remove_before {
            kept_from = kept_from.max(before.min(next));
        }
        if kept_from != self.kept_from {
            // The removal commits with the records (see `layout::KeptFrom`);
            // the hashes of the records it removes are durable before.
            if self.fsync {
                self.tree.sync_data().map_err(|e| io(&tree_path, e))?;
            }
            // With no records to carry it, this replace is the commit point.
            let kept = match rows.is_empty() {
                true => layout::KeptFrom {
                    kept: kept_from,
                    pending: None,
                },
                false => layout::KeptFrom {
                    kept: self.kept_from,
                    pending: Some((kept_from, next)),
                },
            };
            layout::replace(
                &self.dir.join(layout::KEPT_FROM_FILE),
                kept.text().as_bytes(),
                self.fsync,
            )?;
        }
        if let Some(first) = rows.first() {
            // A log with no record stored begins a file at its first
            // record: a file holds consecutive records only.
            let stored = self.next > self.kept_from;
            if !stored
                || self
                    .current
                    .as_ref()
                    .is_none_or(|(_, len)| *len >= self.file_bound)
            {
                self.begin_file(first.n)?;
            }
            let mut frames = Vec::new();
            rows.iter()
                .for_each(|r| super::frame::encode(r, self.durable, &mut frames));
            let path = self.current_path();
            let Some((file, len)) = self.current.as_mut() else {
                return Err(StoreError::Database("no record file is open".into()));
            };
            file.write_all(&frames).map_err(|e| io(&path, e))?;
            *len += frames.len() as u64;
            self.unsynced = true;
            self.written = next;
        }
        if !lazy {
            self.sync_records()?;
        }
        // Committed: the records are durable, and with them the removal.
        self.hashes += hashes.len() as u64;
        self.next = next;
        if kept_from != self.kept_from {
            self.kept_from = kept_from;
            let kept = scan::kept(&self.files, kept_from);
            let gone = self.files.iter().filter(|f| !kept.contains(f));
            self.pending.extend(gone.map(|(_, p)| p.clone()));
            self.files = kept;
        }
        self.write_tail(checkpoint, index, held)
            .map_err(|e| StoreError::Committed(e.to_string()))
    }

    /// What follows a commit's point: the checkpoint (after the tree it
    /// covers is synced) and the deletions retention let go.
    fn write_tail(
        &mut self,
        checkpoint: Option<&str>,
        index: &RecordIndex,
        held: bool,
    ) -> Result<(), StoreError> {
        if let Some(note) = checkpoint {
            #[cfg(test)]
            if let Some(why) = self.fail_tail.take() {
                return Err(StoreError::Database(why));
            }
            if self.fsync {
                let tree_path = self.dir.join(layout::TREE_FILE);
                self.tree.sync_data().map_err(|e| io(&tree_path, e))?;
            }
            layout::replace(
                &self.dir.join(layout::CHECKPOINT_FILE),
                note.as_bytes(),
                self.fsync,
            )?;
            self.checkpoint = Some(note.to_string());
            remove(&self.dir.join(layout::FIRST_COMMIT_FILE))?;
        }
        self.delete_pending(index, held)
    }

    fn current_path(&self) -> PathBuf {
        self.files
            .last()
            .map_or_else(|| self.dir.clone(), |(_, p)| p.clone())
    }

    /// Syncs the records written lazily, if any: the commit point.
    fn sync_records(&mut self) -> Result<(), StoreError> {
        if !self.unsynced {
            return Ok(());
        }
        if self.fsync {
            let path = self.current_path();
            if let Some((file, _)) = &self.current {
                file.sync_data().map_err(|e| io(&path, e))?;
                #[cfg(test)]
                {
                    self.record_syncs += 1;
                }
            }
            // Only a sync makes records durable: with fsync off, none is.
            self.durable = self.written;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Begins a record file at record `first`, the last one synced first
    /// (a sync of the new one does not cover it).
    fn begin_file(&mut self, first: u64) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        self.sync_records()?;
        let path = self.dir.join(layout::records_name(first));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        // Only an empty one (a crash between its creation and its first
        // records) may be there already.
        if file.metadata().map_err(|e| io(&path, e))?.len() != 0 {
            return Err(self.refuse(format!(
                "{} holds records already: the log's files do not follow one another",
                path.display()
            )));
        }
        self.files.retain(|(f, _)| *f != first);
        if self.fsync {
            layout::sync_dir(&self.dir)?;
        }
        self.files.push((first, path));
        self.current = Some((file, 0));
        Ok(())
    }

    /// Deletes the files retention removed, unless a snapshot is `held`.
    pub fn delete_pending(&mut self, index: &RecordIndex, held: bool) -> Result<(), StoreError> {
        if held || self.pending.is_empty() {
            return Ok(());
        }
        for path in std::mem::take(&mut self.pending) {
            remove(&path)?;
            index.forget(&path);
        }
        if self.fsync {
            layout::sync_dir(&self.dir)?;
        }
        Ok(())
    }
}
