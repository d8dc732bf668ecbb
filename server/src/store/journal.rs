//! The commit journal: what makes a group commit durable.
//!
//! Each commit is appended as one checksummed record and the file is
//! `fdatasync`'d by the thread that answers the pushes, one write and one
//! sync per group commit. The database behind the store applies the same
//! commits in memory and is flushed in the background now and then; after
//! a crash, the records it had not yet flushed are replayed from here. So a
//! commit costs one sequential write, not a database flush.
//!
//! Records are opaque to the journal: it knows commit ids, lengths and
//! checksums, nothing of what the store puts in them. Files are named by
//! their first commit id, and a file is removed once the database has
//! flushed every commit in it.

use super::{StoreError, create_dir_durably, sync_dir};
use crate::fatal;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A file is closed and a new one begun beyond this size, so that flushed
/// commits can be removed a file at a time.
const FILE_BYTES: u64 = 16 << 20;
/// Length, checksum, commit id.
const HEADER: usize = 4 + 4 + 8;
/// No record is this large: a length beyond it is a torn or foreign tail.
const MAX_RECORD: usize = 1 << 30;

/// One journaled commit, as read back at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub payload: Vec<u8>,
}

/// The file commits are currently appended to.
#[derive(Debug)]
struct Current {
    file: File,
    first: u64,
    len: u64,
}

/// Append-only, checksummed commit records in a directory of files.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    fsync: bool,
    /// Records appended but not yet written, in commit order.
    pending: Mutex<Pending>,
    /// The file being written and the closed ones (by first id), oldest
    /// first; one lock so that writes stay in commit order.
    files: Mutex<Files>,
    /// Set by the first failed write or sync, after which nothing more is
    /// accepted: records queued behind a failure are not known to be on
    /// disk, so no later sync may report them durable.
    broken: std::sync::OnceLock<String>,
    /// Bytes to leave free on the disk (0: no check); see [`Journal::keep_free`].
    reserve: u64,
}

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The id of the last record in `bytes`.
    last: Option<u64>,
}

#[derive(Debug)]
struct Files {
    current: Current,
    closed: VecDeque<(u64, PathBuf)>,
    /// Bytes written since free space was last read, and what it was.
    since_check: u64,
    last_free: u64,
    /// The id of the last record written (0: none yet).
    last_written: u64,
}

/// Free space is read again after this much is written (or at every
/// write once it is within a few reserves of the end).
const CHECK_FREE_EVERY: u64 = 1 << 20;

/// A new, empty journal file, readable by the hub's user alone: it holds
/// every message body of its commits.
fn create_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn file_name(first: u64) -> String {
    format!("{first:020}.journal")
}

fn first_id_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".journal")?
        .parse()
        .ok()
}

/// Appends one record (header and payload) to `out`.
pub fn encode_record(out: &mut Vec<u8>, id: u64, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&id.to_le_bytes());
    crc.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The record starting at `at` in `bytes`, if one is whole there with a
/// nonzero id and a good checksum; with the bytes it takes.
fn record_at(bytes: &[u8], at: usize) -> Option<(u64, &[u8])> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let (len, rest) = header.split_at(4);
    let (crc, id_bytes) = rest.split_at(4);
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(crc.try_into().ok()?);
    let id = u64::from_le_bytes(id_bytes.try_into().ok()?);
    if id == 0 || len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    let mut h = crc32fast::Hasher::new();
    h.update(id_bytes);
    h.update(payload);
    (h.finalize() == crc).then_some((id, payload))
}

/// The whole records at the start of `bytes`, and how many bytes they
/// take: reading stops at the first record that is cut short, has a bad
/// checksum or is zero-filled.
fn decode_records(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((id, payload)) = record_at(bytes, at) {
        out.push(Record {
            id,
            payload: payload.to_vec(),
        });
        at += HEADER + payload.len();
    }
    (out, at)
}

/// The first whole, checksummed record that starts after byte `from` of
/// `bytes` and carries a later commit than `after`, as (offset, commit).
/// A tail that a crash tore holds none: a write is cut, not skipped, so
/// a good record beyond unreadable bytes means damage in the middle.
fn record_beyond(bytes: &[u8], from: usize, after: u64) -> Option<(usize, u64)> {
    // No file holds more commits than it has bytes, so an id beyond that
    // is not a header: this keeps the scan to a compare per offset.
    let last_plausible = after.saturating_add(bytes.len() as u64);
    (from + 1..bytes.len().saturating_sub(HEADER - 1)).find_map(|at| {
        let id = u64::from_le_bytes(bytes.get(at + 8..at + HEADER)?.try_into().ok()?);
        if id <= after || id > last_plausible {
            return None;
        }
        record_at(bytes, at).map(|(id, _)| (at, id))
    })
}

/// The commits a torn tail's unreadable bytes had begun: the one after
/// `last` and, where the cut left its header readable, the one it names.
fn torn_commits(bytes: &[u8], used: usize, last: u64) -> String {
    let named = bytes
        .get(used + 8..used + HEADER)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .filter(|id| *id > last + 1 && *id <= last.saturating_add(bytes.len() as u64));
    match named {
        Some(id) => format!("{}..={id}", last + 1),
        None => format!("{}", last + 1),
    }
}

impl Journal {
    /// Opens the journal in `dir` (created if missing) and reads back every
    /// record in it, oldest first. A record cut short or garbled at the end
    /// of the newest file is a write the crash interrupted (never
    /// acknowledged): it is cut off. Anywhere else it is corruption.
    ///
    /// `durable` is the last commit the database holds by itself: the
    /// records after it are returned, and they must continue it without a
    /// gap. Appends continue in a fresh file after the last commit known.
    pub fn open(dir: &Path, fsync: bool, durable: u64) -> Result<(Self, Vec<Record>), StoreError> {
        create_dir_durably(dir)?;
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        let mut emptied = false;
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            let path = item.path();
            let Some(first) = first_id_of(&path) else {
                continue;
            };
            // An empty file holds no commit: one begun by a start or a
            // rotation that wrote nothing after it. Kept, it would pass for
            // a newer file and make the real newest file's torn tail look
            // like damage in the middle.
            if item.metadata()?.len() == 0 {
                std::fs::remove_file(&path)?;
                emptied = true;
                continue;
            }
            found.push((first, path));
        }
        if emptied {
            sync_dir(dir)?;
        }
        found.sort();
        let mut records: Vec<Record> = Vec::new();
        // The newest file's torn tail, cut once everything else checks out.
        let mut torn: Option<(&Path, u64, u64, u64)> = None;
        let mut torn_ids = String::new();
        for (i, (first, path)) in found.iter().enumerate() {
            let mut bytes = Vec::new();
            File::open(path)?.read_to_end(&mut bytes)?;
            let (mut read, used) = decode_records(&bytes);
            let next_first = found.get(i + 1).map(|(f, _)| *f);
            if used < bytes.len() {
                let last = read.last().map_or(first.saturating_sub(1), |r| r.id);
                match next_first {
                    None => {
                        // Commits the database holds are no loss.
                        if let Some((at, id)) = record_beyond(&bytes, used, last.max(durable)) {
                            return Err(StoreError::Corrupt(format!(
                                "journal file {} is unreadable from byte {used}, and commit \
                                 {id} follows at byte {at}: this is damage, not a write \
                                 cut short by a crash",
                                path.display()
                            )));
                        }
                        torn = Some((path, used as u64, bytes.len() as u64, last));
                        torn_ids = torn_commits(&bytes, used, last);
                    }
                    // What is lost there the database holds already.
                    Some(next) if next <= durable + 1 => {}
                    Some(_) => {
                        return Err(StoreError::Corrupt(format!(
                            "journal file {} is unreadable after byte {used} of {}, \
                             and newer journal files follow it",
                            path.display(),
                            bytes.len()
                        )));
                    }
                }
            }
            // Within a file, commits follow one another from its first.
            for (expected, r) in (*first..).zip(read.iter()) {
                if r.id != expected {
                    return Err(StoreError::Corrupt(format!(
                        "journal file {}: commit {} where commit {expected} should be",
                        path.display(),
                        r.id
                    )));
                }
            }
            records.append(&mut read);
        }
        records.retain(|r| r.id > durable);
        // And across files, from the database's last commit on.
        for (expected, r) in (durable + 1..).zip(records.iter()) {
            if r.id != expected {
                return Err(StoreError::Corrupt(format!(
                    "the database holds commits up to {durable} and the journal has commit {} \
                     where commit {expected} should be: commits {expected}..={} are missing",
                    r.id,
                    r.id.saturating_sub(1)
                )));
            }
        }
        if let Some((path, used, len, last)) = torn {
            tracing::warn!(
                file = %path.display(),
                offset = used,
                bytes_cut = len - used,
                last_whole_commit = last,
                commits_cut = %torn_ids,
                "cutting a journal record that a crash left unfinished (never answered)"
            );
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(used)?;
            f.sync_all()?;
        }
        let next_id = records.last().map_or(durable, |r| r.id) + 1;
        let journal = Self::begin(dir, fsync, next_id, found)?;
        Ok((journal, records))
    }

    /// A journal appending to a new file from `next_id`, with `closed`
    /// files (oldest first) still to be retired.
    fn begin(
        dir: &Path,
        fsync: bool,
        next_id: u64,
        closed: Vec<(u64, PathBuf)>,
    ) -> Result<Self, StoreError> {
        let path = dir.join(file_name(next_id));
        let file = create_file(&path)?;
        sync_dir(dir)?;
        let closed = closed.into_iter().filter(|(_, p)| *p != path).collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            fsync,
            pending: Mutex::new(Pending::default()),
            broken: std::sync::OnceLock::new(),
            reserve: 0,
            files: Mutex::new(Files {
                current: Current {
                    file,
                    first: next_id,
                    len: 0,
                },
                closed,
                since_check: 0,
                last_free: u64::MAX,
                last_written: 0,
            }),
        })
    }

    /// Stops appends (as a failed write does) before fewer than `bytes`
    /// would be left free on the journal's disk: the database behind the
    /// journal shares the disk, and once it meets a full disk it fails
    /// reads as well and cannot flush at a stop.
    pub fn keep_free(&mut self, bytes: u64) {
        self.reserve = bytes;
    }

    /// Refuses a write of `len` bytes that would leave less than the
    /// reserve free; reads free space only now and then.
    fn check_free(&self, files: &mut Files, len: u64) -> Result<(), StoreError> {
        if self.reserve == 0 {
            return Ok(());
        }
        files.since_check += len;
        let near = files.last_free < self.reserve.saturating_mul(4);
        if !near && files.since_check < CHECK_FREE_EVERY {
            return Ok(());
        }
        files.since_check = 0;
        files.last_free = match fs2::available_space(&self.dir) {
            Ok(free) => free,
            // Not knowing is no reason to stop: the write itself still
            // fails on a full disk, as before the reserve.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the free space of the journal's disk");
                return Ok(());
            }
        };
        if files.last_free >= self.reserve.saturating_add(len) {
            return Ok(());
        }
        let why = format!(
            "the data disk has {} MiB free, and the hub keeps {} MiB free ([hub] min_free_mib) \
             so that reads and a stop keep working; free space on it",
            files.last_free >> 20,
            self.reserve >> 20
        );
        let _ = self.broken.set(why.clone());
        Err(StoreError::Database(why))
    }

    /// Queues commit `id` to be written by the next [`Journal::sync`].
    /// Ids must be appended in order, one after another.
    pub fn append(&self, id: u64, payload: &[u8]) -> Result<(), StoreError> {
        self.check_broken()?;
        if payload.len() > MAX_RECORD {
            return Err(StoreError::Database(format!(
                "a commit of {} bytes is larger than a journal record may be ({MAX_RECORD} bytes)",
                payload.len()
            )));
        }
        let mut p = fatal::lock(&self.pending, "journal queue")?;
        encode_record(&mut p.bytes, id, payload);
        p.last = Some(id);
        Ok(())
    }

    /// Writes every queued record and makes it durable; returns the id of
    /// the last one written, if any. Callers on several threads are
    /// served one at a time, so when a call returns, every record queued
    /// before it began is durable, whichever call wrote it.
    pub fn sync(&self) -> Result<Option<u64>, StoreError> {
        let mut files = fatal::lock(&self.files, "journal files")?;
        self.check_broken()?;
        let (bytes, last) = {
            let mut p = fatal::lock(&self.pending, "journal queue")?;
            (std::mem::take(&mut p.bytes), p.last.take())
        };
        let Some(last) = last else {
            return Ok(None);
        };
        self.check_free(&mut files, bytes.len() as u64)?;
        let written = files.current.file.write_all(&bytes).and_then(|()| {
            if self.fsync {
                files.current.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            let _ = self
                .broken
                .set(format!("writing commits up to {last} failed: {e}"));
            return Err(e.into());
        }
        files.current.len += bytes.len() as u64;
        files.last_written = last;
        // The records are durable whatever becomes of the rotation: a
        // failed one is tried again after the next write.
        if files.current.len >= FILE_BYTES
            && let Err(e) = self.rotate(&mut files, last + 1)
        {
            tracing::warn!(error = %e, "could not begin a new journal file; the current one grows");
        }
        Ok(Some(last))
    }

    /// Closes the current file and begins one at commit `next`.
    fn rotate(&self, files: &mut Files, next: u64) -> Result<(), StoreError> {
        let path = self.dir.join(file_name(next));
        let file = create_file(&path)?;
        if let Err(e) = sync_dir(&self.dir) {
            // Appends stay in the current file; a start would drop this
            // empty one anyway.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let old = std::mem::replace(
            &mut files.current,
            Current {
                file,
                first: next,
                len: 0,
            },
        );
        files
            .closed
            .push_back((old.first, self.dir.join(file_name(old.first))));
        Ok(())
    }

    /// Whether writes are refused since a failed write (or the reserve).
    pub fn is_broken(&self) -> bool {
        self.broken.get().is_some()
    }

    /// Refuses work after an earlier write or sync failed.
    fn check_broken(&self) -> Result<(), StoreError> {
        match self.broken.get() {
            Some(why) => Err(StoreError::Database(format!(
                "the commit journal refuses writes since an earlier one failed ({why}); \
                 restart the hub, which replays what reached the disk"
            ))),
            None => Ok(()),
        }
    }

    /// Removes the closed files that hold only commits up to `flushed`,
    /// which the database has made durable itself.
    pub fn retire(&self, flushed: u64) -> Result<(), StoreError> {
        let mut files = fatal::lock(&self.files, "journal files")?;
        let Files {
            current, closed, ..
        } = &mut *files;
        let mut removed = false;
        loop {
            // A closed file holds the commits up to the next file's first.
            let next_first = closed.get(1).map_or(current.first, |(first, _)| *first);
            match closed.front() {
                Some((_, path)) if next_first <= flushed + 1 => {
                    std::fs::remove_file(path)?;
                    closed.pop_front();
                    removed = true;
                }
                _ => break,
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// At a clean stop, once the database holds every commit up to
    /// `flushed` durably: removes the files, the current one included,
    /// when they hold nothing later, and refuses appends from then on. A
    /// stopped hub's data directory then holds no second copy of what the
    /// database holds, and its next start replays nothing. True when the
    /// journal was emptied.
    pub fn close(&self, flushed: u64) -> Result<bool, StoreError> {
        self.retire(flushed)?;
        let files = fatal::lock(&self.files, "journal files")?;
        let queued = fatal::lock(&self.pending, "journal queue")?.last.is_some();
        if queued || !files.closed.is_empty() || files.last_written > flushed {
            return Ok(false);
        }
        let _ = self.broken.set("the store is closed".into());
        std::fs::remove_file(self.dir.join(file_name(files.current.first)))?;
        sync_dir(&self.dir)?;
        Ok(true)
    }

    /// How many journal files there are, the current one included.
    #[cfg(test)]
    pub fn file_count(&self) -> usize {
        self.files.lock().map_or(0, |f| f.closed.len() + 1)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
