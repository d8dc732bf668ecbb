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
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn files(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        v.sort();
        Ok(v)
    }

    #[test]
    fn records_read_back_in_order_across_reopens() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (j, read) = Journal::open(dir.path(), true, 0)?;
        assert!(read.is_empty());
        for id in 1..=5u64 {
            j.append(id, &vec![id as u8; id as usize * 10])?;
        }
        assert_eq!(j.sync()?, Some(5));
        assert_eq!(j.sync()?, None, "nothing new to write");
        #[cfg(unix)]
        for file in files(dir.path())? {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}: {mode:o}", file.display());
        }
        drop(j);
        let (j, read) = Journal::open(dir.path(), true, 0)?;
        let ids: Vec<u64> = read.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(read[2].payload, vec![3u8; 30]);
        j.append(6, b"six")?;
        j.sync()?;
        drop(j);
        // The database already holds up to 4: only what follows comes back.
        let (j, read) = Journal::open(dir.path(), true, 4)?;
        assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![5, 6]);
        assert_eq!(read[1].payload, b"six");
        drop(j);
        // A database ahead of the journal (it flushed commits the crash
        // kept from the journal, never acknowledged): nothing to replay,
        // and appends continue after the database's last commit.
        let (j, read) = Journal::open(dir.path(), true, 9)?;
        assert!(read.is_empty());
        j.append(10, b"ten")?;
        j.sync()?;
        drop(j);
        let (_, read) = Journal::open(dir.path(), true, 9)?;
        assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![10]);
        Ok(())
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_appends_continue() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (j, _) = Journal::open(dir.path(), true, 0)?;
        for id in 1..=3u64 {
            j.append(id, &[7u8; 100])?;
        }
        j.sync()?;
        drop(j);
        let path = files(dir.path())?.pop().ok_or("no journal file")?;
        let full = std::fs::metadata(&path)?.len();
        // The crash cut the last record in the middle of its payload.
        OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(full - 40)?;
        let (j, read) = Journal::open(dir.path(), true, 0)?;
        assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(
            std::fs::metadata(&path)?.len(),
            full - (HEADER as u64 + 100)
        );
        j.append(3, b"again")?;
        j.sync()?;
        drop(j);
        let (_, read) = Journal::open(dir.path(), true, 0)?;
        assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(read[2].payload, b"again");
        Ok(())
    }

    #[test]
    fn a_flipped_byte_in_the_newest_record_drops_only_that_record() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (j, _) = Journal::open(dir.path(), true, 0)?;
        j.append(1, b"first")?;
        j.append(2, b"second")?;
        j.sync()?;
        drop(j);
        let path = files(dir.path())?.pop().ok_or("no journal file")?;
        let mut bytes = std::fs::read(&path)?;
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes)?;
        let (_, read) = Journal::open(dir.path(), true, 0)?;
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].payload, b"first");
        Ok(())
    }

    /// Five records in one file, and where record `n` (1-based) begins.
    fn five_records(dir: &Path) -> Result<(PathBuf, Vec<usize>), Box<dyn std::error::Error>> {
        let (j, _) = Journal::open(dir, true, 0)?;
        let mut starts = Vec::new();
        let mut at = 0;
        for id in 1..=5u64 {
            starts.push(at);
            let payload = vec![id as u8; 40 + id as usize];
            at += HEADER + payload.len();
            j.append(id, &payload)?;
        }
        j.sync()?;
        drop(j);
        let path = files(dir)?.pop().ok_or("no journal file")?;
        Ok((path, starts))
    }

    #[test]
    fn damage_in_the_middle_of_the_newest_file_refuses_the_start() -> TestResult {
        // Payload, checksum, length and id of record 2 each damaged in
        // turn: records 3 to 5 follow, so it is no torn tail.
        for (what, offset) in [
            ("payload", HEADER + 3),
            ("checksum", 5),
            ("length", 1),
            ("id", 9),
        ] {
            let dir = tempfile::tempdir()?;
            let (path, starts) = five_records(dir.path())?;
            let mut bytes = std::fs::read(&path)?;
            bytes[starts[1] + offset] ^= 0x40;
            std::fs::write(&path, &bytes)?;
            match Journal::open(dir.path(), true, 0) {
                Err(StoreError::Corrupt(m)) => {
                    assert!(
                        m.contains(&format!("unreadable from byte {}", starts[1])),
                        "{what}: {m}"
                    );
                    assert!(
                        m.contains(&format!("commit 3 follows at byte {}", starts[2])),
                        "{what}: {m}"
                    );
                    assert!(m.contains(&path.display().to_string()), "{what}: {m}");
                }
                other => panic!("{what}: expected corruption, got {other:?}"),
            }
            // Nothing was cut: the file is as the damage left it.
            assert_eq!(std::fs::read(&path)?, bytes, "{what}");
        }
        Ok(())
    }

    #[test]
    fn damage_before_records_the_database_holds_is_no_loss() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (path, starts) = five_records(dir.path())?;
        let mut bytes = std::fs::read(&path)?;
        bytes[starts[3] + HEADER] ^= 1;
        std::fs::write(&path, &bytes)?;
        // Record 5 follows the damaged 4, but the database holds it.
        let (_, read) = Journal::open(dir.path(), true, 5)?;
        assert!(read.is_empty());
        // Holding only up to 4, commit 5 would be lost: refused.
        let dir = tempfile::tempdir()?;
        let (path, starts) = five_records(dir.path())?;
        let mut bytes = std::fs::read(&path)?;
        bytes[starts[3] + HEADER] ^= 1;
        std::fs::write(&path, &bytes)?;
        assert!(matches!(
            Journal::open(dir.path(), true, 4),
            Err(StoreError::Corrupt(_))
        ));
        Ok(())
    }

    #[test]
    fn a_torn_tail_names_the_commits_it_cuts() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (path, starts) = five_records(dir.path())?;
        let bytes = std::fs::read(&path)?;
        // Record 5's header whole, its payload cut: commit 5 is named.
        assert_eq!(
            torn_commits(&bytes[..starts[4] + HEADER + 2], starts[4], 4),
            "5"
        );
        // Only part of its header written: the commit after the last.
        assert_eq!(torn_commits(&bytes[..starts[4] + 3], starts[4], 4), "5");
        // A header naming a later commit (a batch of records cut short).
        let mut later = bytes[..starts[4]].to_vec();
        encode_record(&mut later, 7, b"seven");
        later.truncate(later.len() - 2);
        assert_eq!(torn_commits(&later, starts[4], 4), "5..=7");
        Ok(())
    }

    #[test]
    fn record_beyond_finds_only_whole_later_records() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 1, b"one");
        let one = bytes.len();
        encode_record(&mut bytes, 2, b"two");
        assert_eq!(record_beyond(&bytes, 0, 0), Some((one, 2)));
        assert_eq!(record_beyond(&bytes, 0, 2), None, "not a later commit");
        assert_eq!(record_beyond(&bytes, one, 0), None, "none starts after it");
        bytes.pop();
        assert_eq!(record_beyond(&bytes, 0, 0), None, "cut short");
        assert_eq!(record_beyond(&[0u8; 100], 0, 0), None, "zero-filled");
    }

    #[test]
    fn damage_before_newer_files_is_corruption_not_a_tail() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (j, _) = Journal::open(dir.path(), true, 0)?;
        j.append(1, b"one")?;
        j.append(2, b"two")?;
        j.sync()?;
        drop(j);
        // A newer file follows (as after a restart).
        let (j, _) = Journal::open(dir.path(), true, 0)?;
        j.append(3, b"three")?;
        j.sync()?;
        drop(j);
        let oldest = files(dir.path())?.first().cloned().ok_or("no file")?;
        let mut bytes = std::fs::read(&oldest)?;
        bytes[HEADER] ^= 0xff;
        std::fs::write(&oldest, &bytes)?;
        match Journal::open(dir.path(), true, 0) {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("unreadable"), "{m}"),
            other => panic!("expected corruption, got {other:?}"),
        }
        // Once the database holds what the damaged file held, it is no loss.
        let (_, read) = Journal::open(dir.path(), true, 2)?;
        assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![3]);
        Ok(())
    }

    #[test]
    fn an_empty_file_left_by_a_failed_rotation_is_not_a_newer_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (j, _) = Journal::open(dir.path(), true, 0)?;
        for id in 1..=4u64 {
            j.append(id, &[4u8; 50])?;
        }
        j.sync()?;
        drop(j);
        // A rotation at commit 3 created its file and failed; commits 3 and
        // 4 went on in the first file, whose last record the crash tore.
        std::fs::write(dir.path().join(file_name(3)), b"")?;
        let path = dir.path().join(file_name(1));
        let full = std::fs::metadata(&path)?.len();
        OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(full - 10)?;
        let (j, read) = Journal::open(dir.path(), true, 0)?;
        assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(!dir.path().join(file_name(3)).exists());
        j.append(4, b"again")?;
        j.sync()?;
        drop(j);
        let (_, read) = Journal::open(dir.path(), true, 0)?;
        assert_eq!(read.len(), 4);
        Ok(())
    }

    #[test]
    fn commits_missing_between_files_are_corruption() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (j, _) = Journal::open(dir.path(), true, 0)?;
        j.append(1, b"one")?;
        j.append(2, b"two")?;
        j.append(3, b"three")?;
        j.sync()?;
        drop(j);
        // Commit 3 zero-filled (its write never reached the disk), and a
        // later file resumes at 4 as if nothing were missing.
        let oldest = files(dir.path())?.first().cloned().ok_or("no file")?;
        let mut bytes = std::fs::read(&oldest)?;
        let three = bytes.len() - (HEADER + 5);
        bytes[three..].fill(0);
        std::fs::write(&oldest, &bytes)?;
        let mut four = Vec::new();
        encode_record(&mut four, 4, b"four");
        std::fs::write(dir.path().join(file_name(4)), &four)?;
        match Journal::open(dir.path(), true, 0) {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("unreadable"), "{m}"),
            other => panic!("expected corruption, got {other:?}"),
        }
        // A file that skips ahead, whole and checksummed, is no better.
        std::fs::remove_file(&oldest)?;
        match Journal::open(dir.path(), true, 0) {
            Err(StoreError::Corrupt(m)) => {
                assert!(m.contains("commits 1..=3 are missing"), "{m}")
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn after_a_failed_write_nothing_more_is_reported_durable() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (j, _) = Journal::open(dir.path(), true, 0)?;
        j.append(1, b"one")?;
        assert_eq!(j.sync()?, Some(1));
        // The disk refuses the next write.
        {
            let mut files = j.files.lock().map_err(|_| "poisoned")?;
            let path = j.dir.join(file_name(files.current.first));
            files.current.file = File::open(path)?;
        }
        j.append(2, b"two")?;
        assert!(j.sync().is_err());
        // The disk recovers (space freed, say).
        {
            let mut files = j.files.lock().map_err(|_| "poisoned")?;
            let path = j.dir.join(file_name(files.current.first));
            files.current.file = OpenOptions::new().append(true).open(path)?;
        }
        // Commit 2 was taken from the queue when its write failed: no later
        // call may pretend it, or anything after it, is durable.
        match j.append(3, b"three") {
            Err(StoreError::Database(m)) => assert!(m.contains("restart the hub"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(j.sync().is_err());
        drop(j);
        let (_, read) = Journal::open(dir.path(), true, 0)?;
        assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1]);
        Ok(())
    }

    #[test]
    fn missing_commits_are_corruption() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (j, _) = Journal::open(dir.path(), true, 0)?;
        j.append(1, b"one")?;
        j.append(3, b"three")?;
        j.sync()?;
        drop(j);
        match Journal::open(dir.path(), true, 0) {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("commit 3 where commit 2"), "{m}"),
            other => panic!("expected corruption, got {other:?}"),
        }
        let dir = tempfile::tempdir()?;
        let (j, _) = Journal::open(dir.path(), true, 4)?;
        j.append(5, b"five")?;
        j.sync()?;
        drop(j);
        // The database lost commits 3 and 4, which the journal no longer has.
        match Journal::open(dir.path(), true, 2) {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("commits 3..=4 are missing"), "{m}"),
            other => panic!("expected corruption, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn a_close_removes_the_files_only_when_everything_is_flushed() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (j, _) = Journal::open(dir.path(), true, 0)?;
        j.append(1, b"a")?;
        j.append(2, b"b")?;
        j.sync()?;
        // The database holds commit 1 only: commit 2 stays journaled.
        assert!(!j.close(1)?);
        assert_eq!(files(dir.path())?.len(), 1);
        j.append(3, b"c")?;
        // Queued, not yet written: kept as well.
        assert!(!j.close(3)?);
        j.sync()?;
        assert!(j.close(3)?);
        assert!(files(dir.path())?.is_empty());
        match j.append(4, b"d") {
            Err(StoreError::Database(m)) => assert!(m.contains("closed"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(j);
        // The next start continues after the database's last commit.
        let (j, read) = Journal::open(dir.path(), true, 3)?;
        assert!(read.is_empty());
        j.append(4, b"d")?;
        j.sync()?;
        Ok(())
    }

    #[test]
    fn files_are_retired_only_when_all_their_commits_are_flushed() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (j, _) = Journal::open(dir.path(), true, 0)?;
        j.append(1, b"a")?;
        j.sync()?;
        drop(j);
        let (j, _) = Journal::open(dir.path(), true, 0)?;
        j.append(2, b"b")?;
        j.append(3, b"c")?;
        j.sync()?;
        drop(j);
        let (j, read) = Journal::open(dir.path(), true, 0)?;
        assert_eq!(read.len(), 3);
        assert_eq!(j.file_count(), 3);
        j.retire(0)?;
        assert_eq!(files(dir.path())?.len(), 3, "nothing flushed yet");
        j.retire(2)?;
        // The first file (commit 1) goes; the second holds commit 3 too.
        assert_eq!(files(dir.path())?.len(), 2);
        j.retire(3)?;
        assert_eq!(files(dir.path())?.len(), 1, "only the current file is left");
        assert_eq!(j.file_count(), 1);
        Ok(())
    }
}

/// Journal records on arbitrary or damaged bytes: no panic, and what is
/// read is exactly the whole records at the start.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::store::codec::proptests::damaged;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::Index;

    /// Commits with ids counting up from `first` (below u64::MAX, which no
    /// journal reaches), as journal bytes.
    fn journal() -> impl Strategy<Value = (Vec<Record>, Vec<u8>)> {
        let first = prop_oneof![1..5u64, 1..u64::MAX / 2];
        (first, vec(vec(any::<u8>(), 0..40), 0..6)).prop_map(|(first, payloads)| {
            let records: Vec<Record> = (first..)
                .zip(payloads)
                .map(|(id, payload)| Record { id, payload })
                .collect();
            let mut bytes = Vec::new();
            for r in &records {
                encode_record(&mut bytes, r.id, &r.payload);
            }
            (records, bytes)
        })
    }

    proptest! {
        #[test]
        fn records_read_back((records, bytes) in journal()) {
            let (read, used) = decode_records(&bytes);
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(read, records);
        }

        #[test]
        fn damaged_journals_read_without_panic(
            bytes in damaged(journal().prop_map(|(_, bytes)| bytes)),
            from in any::<Index>(),
            after in prop_oneof![0..8u64, any::<u64>()],
        ) {
            let (read, used) = decode_records(&bytes);
            prop_assert!(used <= bytes.len());
            let mut again = Vec::new();
            for r in &read {
                encode_record(&mut again, r.id, &r.payload);
            }
            prop_assert_eq!(&again[..], &bytes[..used]);
            if let Some((at, id)) = record_beyond(&bytes, from.index(bytes.len() + 1), after) {
                prop_assert!(id > after);
                prop_assert!(record_at(&bytes, at).is_some());
            }
            if let Some(last) = read.last().filter(|r| r.id < u64::MAX) {
                let _ = torn_commits(&bytes, used, last.id);
            }
        }
    }
}
