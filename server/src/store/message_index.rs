//! The message id index (storage format 8): for each (sender, message id)
//! a push used, the seq of the entry in the sender's channel that carried
//! it, kept in files of its own beside sled.
//!
//! Why not in sled: one key per message made sled's page table grow a
//! page per 8–17 messages, and sled replays everything written since its
//! last open, so a start after ten million messages took over 3 s and
//! 300 MiB before it served. Here a start reads a log of at most
//! [`ROLL`] pairs, and each run's filter and stretch starts
//! ([`run`]): about 1.3 bytes a message.
//!
//! The index maps a 64-bit fingerprint of (sender, message id) to seqs;
//! it is a hint, and the caller reads the entry a seq names to confirm
//! that it carries that id (two ids may share a fingerprint, and then
//! both seqs are given). Pairs are written by the store's flush, durably
//! before the flush records its commit: a log appended and synced per
//! flush, rolled into a sorted run every [`ROLL`] pairs, and runs merged
//! [`FAN_IN`] of a size at a time, so there are a few runs of each size
//! and a look-up asks each of them. Merges run in a thread of their own,
//! so a flush never waits on one (at 100M messages a merge reads and
//! writes hundreds of MiB), and only when the disk keeps twice the
//! store's reserve free after it. A crash between two steps leaves a pair
//! in two places, never in none; equal pairs are kept once when read or
//! merged.

mod run;

use super::codec::u64_from;
use super::{StoreError, create_dir_durably, sync_dir};
use crate::fatal;
use run::Run;
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// Pairs in the log before they are rolled into a run, give or take a
/// flush's (a few in tests, so that tests roll and merge).
const ROLL: usize = if cfg!(test) { 8 } else { 1 << 16 };
/// Runs of one size merged into one.
const FAN_IN: usize = 4;
const LOG: &str = "log";
const LOG_FRAME_HEADER: usize = 8;

/// The fingerprint of `message_id` among `sender`'s: the first 8 bytes
/// of the SHA-256 of sender, a 0 byte, message id (sender names hold no 0).
pub(super) fn fingerprint(sender: &str, message_id: &str) -> u64 {
    fingerprint_of(&[sender.as_bytes(), &[0], message_id.as_bytes()])
}

fn fingerprint_of(parts: &[&[u8]]) -> u64 {
    let h = tongbao_proto::canonical::sha256_of_parts(parts);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_be_bytes(b)
}

/// The pair a message id record (key and value, as a commit writes it or
/// formats 2 to 5 kept it, seq then digest) stands for in the index.
pub(super) fn pair_of_record(k: &[u8], v: &[u8]) -> Result<Pair, StoreError> {
    let bad = || StoreError::Corrupt("a message id record".into());
    // The key is kind, 0, sender, 0, message id: the fingerprint's input.
    let named = k.get(2..).ok_or_else(bad)?;
    let seq = if v.len() == 8 + tongbao_proto::HASH_LEN {
        u64_from(&v[..8])?
    } else {
        let mut rest = v;
        let seq = prost::encoding::decode_varint(&mut rest).map_err(|_| bad())?;
        if !rest.is_empty() {
            return Err(bad());
        }
        seq
    };
    Ok((fingerprint_of(&[named]), seq))
}

/// A (fingerprint, seq) pair.
pub(super) type Pair = (u64, u64);

/// The index, opened from its directory.
pub(super) struct MessageIndex {
    shared: Arc<Shared>,
    /// The log: the flush's alone.
    writer: Mutex<Writer>,
    merger: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What the flush and the merging thread share.
struct Shared {
    dir: PathBuf,
    fsync: bool,
    /// The store's reserve (`[hub] min_free_mib`): a merge leaves twice
    /// this free on the disk.
    reserve: u64,
    pairs: RwLock<Pairs>,
    next_run: AtomicU64,
    merges: Mutex<Merges>,
    /// Wakes the merging thread, and whoever waits for it to settle.
    wake: Condvar,
    /// Set when the index closes: a merge under way stops early.
    stop: AtomicBool,
}

/// Whether the merging thread has work, is at it, or should stop.
#[derive(Default)]
struct Merges {
    wanted: bool,
    running: bool,
    stop: bool,
}

struct Writer {
    log: File,
    /// The log's length: whole frames only.
    len: u64,
    /// Set when a failed append could not be cut off: a frame appended
    /// after it would be lost at the next open, so none is.
    broken: bool,
}

/// What look-ups read: the log's pairs, and the runs.
#[derive(Default)]
struct Pairs {
    fresh: BTreeSet<Pair>,
    runs: Vec<Arc<Run>>,
}

fn run_name(number: u64) -> String {
    format!("run-{number:016x}")
}

fn run_number(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("run-")?;
    (hex.len() == 16).then_some(())?;
    u64::from_str_radix(hex, 16).ok()
}

/// The size class of a run of `count` pairs: runs of one class are merged.
fn class(count: u64) -> u32 {
    let mut class = 0;
    let mut bound = (ROLL * FAN_IN) as u64;
    while count >= bound {
        class += 1;
        bound = bound.saturating_mul(FAN_IN as u64);
    }
    class
}

#[cfg(test)]
thread_local! {
    /// Set by a test: the next append on this thread writes half its frame
    /// and fails, as a full disk would stop it.
    static TEAR_NEXT_APPEND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tears an append where a test asked (nothing outside tests).
fn torn_in_tests(_log: &mut File, _frame: &[u8]) -> std::io::Result<()> {
    #[cfg(test)]
    if TEAR_NEXT_APPEND.replace(false) {
        _log.write_all(&_frame[.._frame.len() / 2])?;
        return Err(std::io::Error::other("torn (a test)"));
    }
    Ok(())
}

/// One appended batch: count, CRC-32 of the pairs, the pairs.
fn frame(pairs: &[Pair]) -> Vec<u8> {
    let mut body = Vec::with_capacity(pairs.len() * 16);
    for (fp, seq) in pairs {
        body.extend_from_slice(&fp.to_be_bytes());
        body.extend_from_slice(&seq.to_be_bytes());
    }
    let mut out = Vec::with_capacity(LOG_FRAME_HEADER + body.len());
    out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The pairs of the whole frames at the start of `bytes`, and how many
/// bytes they take: a frame cut short or damaged ends the log (a flush
/// that did not finish, whose commits the journal replays).
fn read_frames(bytes: &[u8]) -> (Vec<Pair>, usize) {
    let (mut pairs, mut at) = (Vec::new(), 0);
    while let Some(header) = bytes.get(at..at + LOG_FRAME_HEADER) {
        let n = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let start = at + LOG_FRAME_HEADER;
        let Some(body) = n
            .checked_mul(16)
            .and_then(|len| bytes.get(start..start + len))
        else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        for record in body.chunks_exact(16) {
            let (fp, seq) = record.split_at(8);
            let word = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
            pairs.push((word(fp), word(seq)));
        }
        at = start + body.len();
    }
    (pairs, at)
}

impl MessageIndex {
    /// Opens (or creates) the index in `dir`, whose merges leave twice
    /// `reserve` bytes free on its disk. A log's damaged tail is cut off;
    /// a run that does not open refuses the start.
    pub(super) fn open(dir: &Path, fsync: bool, reserve: u64) -> Result<Self, StoreError> {
        create_dir_durably(dir)?;
        let mut runs = Vec::new();
        let mut next_run = 0;
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A run not finished: its pairs are still where they were.
                std::fs::remove_file(item.path())?;
            } else if let Some(number) = run_number(&name) {
                runs.push((number, Arc::new(Run::open(&item.path())?)));
                next_run = next_run.max(number.saturating_add(1));
            }
        }
        runs.sort_unstable_by_key(|(number, _)| *number);
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut log = options.open(dir.join(LOG))?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        let (fresh, whole) = read_frames(&bytes);
        if whole < bytes.len() {
            log.set_len(whole as u64)?;
            log.sync_all()?;
        }
        sync_dir(dir)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            fsync,
            reserve,
            pairs: RwLock::new(Pairs {
                fresh: fresh.into_iter().collect(),
                runs: runs.into_iter().map(|(_, run)| run).collect(),
            }),
            next_run: AtomicU64::new(next_run),
            // Runs left unmerged are merged after the next roll: an open
            // that rolls nothing (verify-data, a backup, a start with
            // little to replay) merges nothing.
            merges: Mutex::new(Merges::default()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let merging = shared.clone();
        let merger = std::thread::Builder::new()
            .name("message-id-merges".into())
            .spawn(move || merging.merge_when_asked())?;
        Ok(Self {
            shared,
            writer: Mutex::new(Writer {
                log,
                len: whole as u64,
                broken: false,
            }),
            merger: Mutex::new(Some(merger)),
        })
    }

    /// The seqs `fp` may name, ascending, each once.
    pub(super) fn seqs(&self, fp: u64) -> Result<Vec<u64>, StoreError> {
        // The log's pairs and the runs as one roll or merge left them; the
        // runs are read after the lock is let go (a run a merge removes
        // meanwhile stays readable through its open file).
        let (mut out, runs) = {
            let pairs = fatal::read(&self.shared.pairs, "message id index")?;
            let fresh: Vec<u64> = pairs
                .fresh
                .range((fp, 0)..=(fp, u64::MAX))
                .map(|(_, seq)| *seq)
                .collect();
            (fresh, pairs.runs.clone())
        };
        for run in &runs {
            run.seqs(fp, &mut out)?;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Adds `pairs`, durably (with fsync) before it returns; rolls the
    /// log into a run when it is full, and merges runs.
    pub(super) fn add(&self, pairs: &[Pair]) -> Result<(), StoreError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut writer = fatal::lock(&self.writer, "message id index")?;
        if writer.broken {
            return Err(StoreError::Database(
                "the message id log could not be cut back after a failed write; restart the hub"
                    .into(),
            ));
        }
        let frame = frame(pairs);
        let written = torn_in_tests(&mut writer.log, &frame)
            .and_then(|()| writer.log.write_all(&frame))
            .and_then(|()| {
                if self.shared.fsync {
                    writer.log.sync_data()
                } else {
                    Ok(())
                }
            });
        if let Err(e) = written {
            // A frame cut short would end the log at the next open, and
            // every frame after it with it: cut it off, or append no more.
            let at = writer.len;
            writer.broken = writer.log.set_len(at).is_err();
            return Err(StoreError::Database(format!(
                "cannot append to the message id log: {e}"
            )));
        }
        writer.len += frame.len() as u64;
        let full = {
            let mut all = fatal::write(&self.shared.pairs, "message id index")?;
            all.fresh.extend(pairs.iter().copied());
            all.fresh.len() >= ROLL
        };
        if full {
            self.roll(&mut writer)?;
            // The pairs are durable: merges are an optimisation, and what
            // keeps them from running never fails a flush.
            self.shared.ask_to_merge();
        }
        Ok(())
    }

    /// Writes the log's pairs as a run, then empties the log.
    fn roll(&self, writer: &mut Writer) -> Result<(), StoreError> {
        let shared = &self.shared;
        let fresh: Vec<Pair> = fatal::read(&shared.pairs, "message id index")?
            .fresh
            .iter()
            .copied()
            .collect();
        let path = shared.new_run_path();
        let run = Run::write(
            &path,
            fresh.len() as u64,
            fresh.into_iter().map(Ok),
            shared.fsync,
        )?;
        sync_dir(&shared.dir)?;
        {
            let mut all = fatal::write(&shared.pairs, "message id index")?;
            all.runs.push(Arc::new(run));
            all.fresh.clear();
        }
        writer.log.set_len(0)?;
        writer.len = 0;
        writer.log.sync_all()?;
        Ok(())
    }

    /// Reads every run whole against its checksum; returns the pairs
    /// held (one kept twice counts twice).
    pub(super) fn check(&self) -> Result<u64, StoreError> {
        self.shared.check()
    }

    /// Waits until the merging thread has nothing left to do (tests).
    #[cfg(test)]
    pub(super) fn settle(&self) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut merges = fatal::lock(&self.shared.merges, "message id merges")?;
        while (merges.wanted || merges.running) && !merges.stop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::Database("the merges did not settle".into()));
            }
            merges = self
                .shared
                .wake
                .wait_timeout(merges, left)
                .map_err(|_| StoreError::Database("the merges' lock is poisoned".into()))?
                .0;
        }
        Ok(())
    }

    /// Pairs held, counting one kept twice (tests, and the start's log).
    #[cfg(test)]
    pub(super) fn len(&self) -> Result<u64, StoreError> {
        let all = fatal::read(&self.shared.pairs, "message id index")?;
        Ok(all.fresh.len() as u64 + all.runs.iter().map(|r| r.count()).sum::<u64>())
    }

    /// Runs on disk (tests).
    #[cfg(test)]
    fn run_count(&self) -> Result<usize, StoreError> {
        Ok(fatal::read(&self.shared.pairs, "message id index")?
            .runs
            .len())
    }
}

impl MessageIndex {
    /// Stops the merging thread and waits for it; a merge under way is cut
    /// short, its inputs kept. Also before the store is left unclosed
    /// after a failed write (`SledStore`'s drop), so that no merge of
    /// this index writes after a reopen of its directory.
    pub(super) fn stop_merges(&self) {
        self.stop_merges_within(None);
    }

    /// [`MessageIndex::stop_merges`], waiting at most `limit` (a failing
    /// disk can hold a merge's sync for ever); returns whether it stopped.
    pub(super) fn stop_merges_within(&self, limit: Option<std::time::Duration>) -> bool {
        self.shared.stop.store(true, Ordering::Release);
        if let Ok(mut merges) = self.shared.merges.lock() {
            merges.stop = true;
        }
        self.shared.wake.notify_all();
        let merger = match self.merger.lock() {
            Ok(mut m) => m.take(),
            Err(_) => None,
        };
        let Some(merger) = merger else {
            return true;
        };
        if let Some(limit) = limit {
            let deadline = std::time::Instant::now() + limit;
            while !merger.is_finished() {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        if merger.join().is_err() {
            tracing::error!("message id index: the merging thread panicked");
        }
        true
    }
}

impl Drop for MessageIndex {
    fn drop(&mut self) {
        self.stop_merges();
    }
}

impl Shared {
    fn new_run_path(&self) -> PathBuf {
        let number = self.next_run.fetch_add(1, Ordering::AcqRel);
        self.dir.join(run_name(number))
    }

    /// Never fails the flush that asks: a poisoned lock is reported as
    /// every one is (`fatal`), and merges stop.
    fn ask_to_merge(&self) {
        let Ok(mut merges) = fatal::lock(&self.merges, "message id merges") else {
            return;
        };
        merges.wanted = true;
        drop(merges);
        self.wake.notify_all();
    }

    /// The merging thread: merges whenever a roll asks, until stopped. A
    /// merge that fails (a damaged run, a full disk) leaves more runs to
    /// ask, and is tried again at the next roll.
    fn merge_when_asked(&self) {
        loop {
            {
                let Ok(mut merges) = fatal::lock(&self.merges, "message id merges") else {
                    return;
                };
                while !merges.wanted && !merges.stop {
                    merges = match self.wake.wait(merges) {
                        Ok(m) => m,
                        Err(_) => {
                            drop(fatal::lock(&self.merges, "message id merges"));
                            return;
                        }
                    };
                }
                if merges.stop {
                    return;
                }
                merges.wanted = false;
                merges.running = true;
            }
            let merged = self.merge();
            if let Ok(mut merges) = self.merges.lock() {
                merges.running = false;
            }
            self.wake.notify_all();
            match merged {
                Err(_) if self.stop.load(Ordering::Acquire) => return,
                Err(e) => tracing::error!(
                    dir = %self.dir.display(),
                    error = %e,
                    "message id index: cannot merge runs; they stay and look-ups ask each; \
                     if the error names a run, run verify-data on a stopped hub"
                ),
                Ok(()) => {}
            }
        }
    }

    /// Merges [`FAN_IN`] runs of the smallest size class that has as many,
    /// until no class has, or until the disk has no room for the next.
    fn merge(&self) -> Result<(), StoreError> {
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let runs = fatal::read(&self.pairs, "message id index")?.runs.clone();
            let mut classes: Vec<(u32, usize)> = runs
                .iter()
                .enumerate()
                .map(|(i, r)| (class(r.count()), i))
                .collect();
            classes.sort_unstable();
            let Some(group) = classes
                .chunk_by(|a, b| a.0 == b.0)
                .find(|g| g.len() >= FAN_IN)
            else {
                return Ok(());
            };
            let chosen: Vec<Arc<Run>> = group[..FAN_IN]
                .iter()
                .map(|(_, i)| runs[*i].clone())
                .collect();
            if !self.room_to_merge(&chosen)? {
                return Ok(());
            }
            let merged = self.merge_runs(&chosen)?;
            {
                let mut all = fatal::write(&self.pairs, "message id index")?;
                all.runs
                    .retain(|r| !chosen.iter().any(|c| Arc::ptr_eq(r, c)));
                all.runs.push(Arc::new(merged));
            }
            for run in &chosen {
                std::fs::remove_file(run.path())?;
            }
            sync_dir(&self.dir)?;
        }
    }

    /// Whether merging `runs` leaves twice the reserve free: the merged
    /// run takes about what its inputs do until they are removed, and the
    /// store's other writes go on meanwhile, which the journal refuses
    /// once the reserve itself is reached (a backup keeps twice the
    /// reserve for the same reason). With no reserve, no check.
    fn room_to_merge(&self, runs: &[Arc<Run>]) -> Result<bool, StoreError> {
        if self.reserve == 0 {
            return Ok(true);
        }
        let mut needed = self.reserve.saturating_mul(2);
        for run in runs {
            needed = needed.saturating_add(std::fs::metadata(run.path())?.len());
        }
        let free = match fs2::available_space(&self.dir) {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(
                    dir = %self.dir.display(),
                    error = %e,
                    "message id index: runs left unmerged, the disk's free space cannot be read"
                );
                return Ok(false);
            }
        };
        if free < needed {
            tracing::warn!(
                dir = %self.dir.display(),
                free_mib = free >> 20,
                needed_mib = needed.div_ceil(1 << 20),
                "message id index: runs left unmerged, the disk has no room to merge them and keep \
                 twice [hub] min_free_mib free; look-ups ask more runs until space is freed"
            );
        }
        Ok(free >= needed)
    }

    fn merge_runs(&self, runs: &[Arc<Run>]) -> Result<Run, StoreError> {
        let total = runs.iter().map(|r| r.count()).sum();
        let mut inputs: Vec<_> = runs.iter().map(|r| r.pairs().peekable()).collect();
        let stop = &self.stop;
        let mut since_stop_check = 0u32;
        let merged = std::iter::from_fn(move || {
            since_stop_check += 1;
            if since_stop_check == 1 << 16 {
                since_stop_check = 0;
                if stop.load(Ordering::Acquire) {
                    return Some(Err(StoreError::Database("the index is closing".into())));
                }
            }
            // The smallest next pair among the inputs (an error first).
            let mut best: Option<(usize, Pair)> = None;
            for (i, input) in inputs.iter_mut().enumerate() {
                match input.peek() {
                    Some(Ok(p)) if best.is_none_or(|(_, b)| *p < b) => best = Some((i, *p)),
                    Some(Err(_)) => return input.next(),
                    _ => {}
                }
            }
            let (i, _) = best?;
            inputs[i].next()
        });
        let path = self.new_run_path();
        let run = Run::write(&path, total, merged, self.fsync)?;
        sync_dir(&self.dir)?;
        Ok(run)
    }

    fn check(&self) -> Result<u64, StoreError> {
        let (fresh, runs) = {
            let all = fatal::read(&self.pairs, "message id index")?;
            (all.fresh.len() as u64, all.runs.clone())
        };
        let mut pairs = fresh;
        for run in runs {
            for pair in run.pairs() {
                pair?;
                pairs += 1;
            }
        }
        Ok(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn seqs_of(index: &MessageIndex, fp: u64) -> Vec<u64> {
        index.seqs(fp).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whatever was added is found again, through rolls and merges and
    /// after reopening, against a plain map; and runs stay few.
    #[test]
    fn everything_added_is_found_after_rolls_merges_and_reopening()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut want: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        let index = MessageIndex::open(dir.path(), true, 0)?;
        for batch in 0..60u64 {
            let pairs: Vec<Pair> = (0..5)
                .map(|i| {
                    let n = batch * 5 + i;
                    // Some fingerprints shared, as two ids' may be.
                    ((n % 97).wrapping_mul(0x9E37_79B9_7F4A_7C15), n)
                })
                .collect();
            index.add(&pairs)?;
            for (fp, seq) in pairs {
                want.entry(fp).or_default().insert(seq);
            }
        }
        index.settle()?;
        assert!(index.run_count()? < 3 * FAN_IN, "runs stay few");
        let check = |index: &MessageIndex| {
            for (fp, seqs) in &want {
                assert_eq!(
                    seqs_of(index, *fp),
                    seqs.iter().copied().collect::<Vec<_>>()
                );
            }
            assert!(seqs_of(index, 12345).is_empty());
        };
        check(&index);
        drop(index);
        let index = MessageIndex::open(dir.path(), true, 0)?;
        check(&index);
        assert_eq!(index.len()?, 300);
        Ok(())
    }

    /// The log's damaged or cut tail is dropped at open; the frames before
    /// it stay; a leftover temporary run is removed.
    #[test]
    fn a_damaged_log_tail_is_cut_and_what_came_before_stays()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let index = MessageIndex::open(dir.path(), true, 0)?;
        index.add(&[(1, 10), (2, 20)])?;
        index.add(&[(3, 30)])?;
        drop(index);
        let log = dir.path().join(LOG);
        let whole = std::fs::read(&log)?;
        let mut bytes = whole.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&log, &bytes)?;
        std::fs::write(dir.path().join("run-0000000000000009.tmp"), b"half")?;
        let index = MessageIndex::open(dir.path(), true, 0)?;
        assert_eq!(seqs_of(&index, 2), vec![20]);
        assert!(
            seqs_of(&index, 3).is_empty(),
            "the damaged frame is dropped"
        );
        assert!(!dir.path().join("run-0000000000000009.tmp").exists());
        // The cut log takes new frames after its whole ones.
        index.add(&[(3, 31)])?;
        drop(index);
        let index = MessageIndex::open(dir.path(), true, 0)?;
        assert_eq!(
            (seqs_of(&index, 1), seqs_of(&index, 3)),
            (vec![10], vec![31])
        );
        drop(index);
        // Cut inside the second frame's header, inside its pairs, and
        // inside the first frame's header.
        for (keep, left) in [(44, 40), (50, 40), (3, 0)] {
            std::fs::write(&log, &whole[..keep])?;
            let reopened = MessageIndex::open(dir.path(), true, 0)?;
            assert!(seqs_of(&reopened, 3).is_empty());
            assert_eq!(seqs_of(&reopened, 2).len(), left / 40);
            assert_eq!(std::fs::metadata(&log)?.len() as usize, left);
        }
        Ok(())
    }

    /// Tears the append of (2, 20), which fails; appends (2, 20) and
    /// (3, 30) again; reopens the index.
    fn tear_an_append_then_reopen(
        dir: &Path,
        index: MessageIndex,
    ) -> Result<MessageIndex, Box<dyn std::error::Error>> {
        TEAR_NEXT_APPEND.set(true);
        assert!(matches!(
            index.add(&[(2, 20)]),
            Err(StoreError::Database(_))
        ));
        index.add(&[(2, 20)])?;
        index.add(&[(3, 30)])?;
        drop(index);
        Ok(MessageIndex::open(dir, true, 0)?)
    }

    /// A failed append is cut off, so the frames after it survive a
    /// restart (a flush retried after a full disk).
    #[test]
    fn a_torn_append_is_cut_off_and_later_frames_stay() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let index = MessageIndex::open(dir.path(), true, 0)?;
        index.add(&[(1, 10)])?;
        let index = tear_an_append_then_reopen(dir.path(), index)?;
        assert_eq!(
            (seqs_of(&index, 1), seqs_of(&index, 2), seqs_of(&index, 3)),
            (vec![10], vec![20], vec![30])
        );
        Ok(())
    }

    /// The same after a roll emptied the log: the cut is at its new end.
    #[test]
    fn a_torn_append_after_a_roll_is_cut_off_too() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let index = MessageIndex::open(dir.path(), true, 0)?;
        let rolled: Vec<Pair> = (0..ROLL as u64).map(|i| (100 + i, i)).collect();
        index.add(&rolled)?;
        assert_eq!(std::fs::metadata(dir.path().join(LOG))?.len(), 0);
        let index = tear_an_append_then_reopen(dir.path(), index)?;
        assert_eq!(
            (seqs_of(&index, 100), seqs_of(&index, 2), seqs_of(&index, 3)),
            (vec![0], vec![20], vec![30])
        );
        Ok(())
    }

    /// A crash between a roll's run and the log's emptying, or between a
    /// merge's run and the removal of its inputs, keeps pairs twice:
    /// look-ups give each seq once, and the next merge keeps one.
    #[test]
    fn pairs_kept_twice_read_once() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let index = MessageIndex::open(dir.path(), true, 0)?;
        let pairs: Vec<Pair> = (0..ROLL as u64).map(|i| (i % 3, i)).collect();
        let log_bytes = frame(&pairs);
        index.add(&pairs)?;
        assert_eq!(index.run_count()?, 1);
        drop(index);
        // As if the log had not been emptied.
        std::fs::write(dir.path().join(LOG), &log_bytes)?;
        let index = MessageIndex::open(dir.path(), true, 0)?;
        let want: Vec<u64> = (0..ROLL as u64).filter(|i| i % 3 == 1).collect();
        assert_eq!(seqs_of(&index, 1), want);
        // Three more rolls merge all four runs, the twice-kept pairs once.
        for round in 0..3u64 {
            let more: Vec<Pair> = (0..ROLL as u64).map(|i| (100 + round, i)).collect();
            index.add(&more)?;
        }
        index.settle()?;
        assert_eq!(index.run_count()?, 1);
        assert_eq!(index.len()?, 4 * ROLL as u64);
        assert_eq!(seqs_of(&index, 1), want);
        Ok(())
    }

    /// Merges wait while they would eat into the reserve; an open merges
    /// nothing (an offline tool writes nothing here), and the runs left
    /// unmerged are merged after the next roll that finds room.
    #[test]
    fn merges_keep_the_reserve_free_and_resume_after_a_roll()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let index = MessageIndex::open(dir.path(), true, u64::MAX / 4)?;
        for round in 0..FAN_IN as u64 {
            let pairs: Vec<Pair> = (0..ROLL as u64).map(|i| (i, round * 100 + i)).collect();
            index.add(&pairs)?;
        }
        index.settle()?;
        assert_eq!(index.run_count()?, FAN_IN, "no room: not merged");
        assert_eq!(seqs_of(&index, 3), vec![3, 103, 203, 303]);
        drop(index);
        let index = MessageIndex::open(dir.path(), true, 0)?;
        index.settle()?;
        assert_eq!(index.run_count()?, FAN_IN, "an open merges nothing");
        let more: Vec<Pair> = (0..ROLL as u64).map(|i| (i, 400 + i)).collect();
        index.add(&more)?;
        index.settle()?;
        assert_eq!(
            index.run_count()?,
            2,
            "four merged into one, the new one beside"
        );
        assert_eq!(seqs_of(&index, 3), vec![3, 103, 203, 303, 403]);
        assert_eq!(index.len()?, ((FAN_IN + 1) * ROLL) as u64);
        Ok(())
    }

    /// Once merges are stopped (a store left unclosed), adds and rolls go
    /// on and nothing is merged.
    #[test]
    fn stopped_merges_leave_adds_alone() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let index = MessageIndex::open(dir.path(), true, 0)?;
        index.stop_merges();
        for round in 0..FAN_IN as u64 {
            let pairs: Vec<Pair> = (0..ROLL as u64).map(|i| (i, round * 100 + i)).collect();
            index.add(&pairs)?;
        }
        index.settle()?;
        assert_eq!(index.run_count()?, FAN_IN);
        assert_eq!(seqs_of(&index, 5), vec![5, 105, 205, 305]);
        Ok(())
    }

    /// A merge that fails (a run damaged after the start) is logged and
    /// leaves the flush, and every pair the runs still give, alone.
    #[test]
    fn a_failed_merge_fails_no_add() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let index = MessageIndex::open(dir.path(), true, 0)?;
        let first: Vec<Pair> = (0..ROLL as u64).map(|i| (1 << 40 | i, i)).collect();
        index.add(&first)?;
        // Damage the first run's first seq: its checksum no longer holds,
        // which only reading it whole (a merge) notices.
        let run = dir.path().join(run_name(0));
        let mut bytes = std::fs::read(&run)?;
        bytes[run::HEADER as usize + 15] ^= 0xff;
        std::fs::write(&run, &bytes)?;
        for round in 1..FAN_IN as u64 {
            let pairs: Vec<Pair> = (0..ROLL as u64).map(|i| (1000 + i, round)).collect();
            index.add(&pairs)?;
        }
        index.settle()?;
        assert_eq!(
            index.run_count()?,
            FAN_IN,
            "the merge failed, its inputs stay"
        );
        index.add(&[(5000, 1)])?;
        assert_eq!(seqs_of(&index, 5000), vec![1]);
        assert_eq!(seqs_of(&index, 1001), vec![1, 2, 3]);
        Ok(())
    }

    /// A damaged run refuses the start (its pairs cannot be vouched for).
    #[test]
    fn a_damaged_run_refuses_the_start() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let index = MessageIndex::open(dir.path(), true, 0)?;
        let pairs: Vec<Pair> = (0..ROLL as u64).map(|i| (i, i)).collect();
        index.add(&pairs)?;
        drop(index);
        let run = dir.path().join(run_name(0));
        let bytes = std::fs::read(&run)?;
        std::fs::write(&run, &bytes[..bytes.len() - 3])?;
        assert!(matches!(
            MessageIndex::open(dir.path(), true, 0),
            Err(StoreError::Corrupt(_))
        ));
        Ok(())
    }

    #[test]
    fn a_record_stands_for_its_fingerprint_and_seq() -> Result<(), Box<dyn std::error::Error>> {
        let k = super::super::codec::key(super::super::codec::MESSAGE, "unit", None);
        let k = [k, vec![0], b"m-1".to_vec()].concat();
        let fp = fingerprint("unit", "m-1");
        assert_eq!(pair_of_record(&k, &[0x96, 0x01])?, (fp, 150));
        let whole = [7u64.to_be_bytes().to_vec(), vec![9; 32]].concat();
        assert_eq!(pair_of_record(&k, &whole)?, (fp, 7));
        for bad in [&[0x96, 0x01, 0][..], &[0x96], &[0; 39]] {
            assert!(matches!(
                pair_of_record(&k, bad),
                Err(StoreError::Corrupt(_))
            ));
        }
        assert!(pair_of_record(b"m", &[1]).is_err());
        Ok(())
    }

    #[test]
    fn fingerprints_tell_senders_apart() -> Result<(), Box<dyn std::error::Error>> {
        assert_ne!(fingerprint("a", "bc"), fingerprint("ab", "c"));
        assert_eq!(fingerprint("民政厅", "m-1"), fingerprint("民政厅", "m-1"));
        // Pinned: the fingerprint is on disk, and must not change.
        let h = tongbao_proto::canonical::sha256(b"unit\0m-1");
        assert_eq!(fingerprint("unit", "m-1").to_be_bytes(), h[..8]);
        Ok(())
    }
}
