//! What makes the store's commits durable: the commit journal, the
//! overlay and the background flush into sled.
//!
//! A group commit is made durable by the commit journal ([`super::journal`]),
//! not by flushing sled: its writes are one journal record, written and
//! fdatasync'd per commit, and applied to an in-memory overlay that reads
//! consult before sled. Every 100 ms a background flush moves the overlay
//! into sled, makes sled durable and retires the journal files it covers;
//! at start the commits sled had not flushed are replayed from the journal.
//! sled's own flush uses `sync_file_range` and never syncs blob files
//! (large values), which survives a process crash but not a power loss;
//! [`Durability::make_durable`] adds the missing fsyncs. Fetched marks are
//! not journaled: they reach disk with the next flush. A flush appends the
//! entry records among its writes to the entry segments
//! ([`super::segments`]) and syncs them before sled names their places,
//! and files the audit index's rows among them into runs
//! ([`super::audit_index`]).

use super::audit_index::{Rewrites, Row, file_rows};
use super::codec::{
    AUDIT_SCOPE, COMMIT_KEY, ENTRY_AT, FORMAT, FORMAT_5, FORMAT_5_TO_6, FORMAT_6, FORMAT_7,
    FORMAT_7_TO_8, FORMAT_KEY, FORMATS_UPGRADABLE, MESSAGE, RECIPIENT_SET, RECIPIENT_SETS_KEY,
    TREE_HASH, is_entry_key, key, merge_runs, place_key, record_key, split_key, u64_from,
};
use super::journal::Journal;
use super::message_index::{MessageIndex, pair_of_record};
use super::overlay::{Kv, Newest, Overlay};
use super::places::runs_of_places;
use super::recipient_sets::RecipientSets;
use super::room::{check_room_to_start, check_room_to_upgrade};
use super::segments::{Appended, Place, Segments};
use super::{StoreError, create_dir_durably, sync_dir};
use crate::fatal;
use sled::IVec;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::Duration;

/// sled's page cache (its default, 1 GiB, would let memory grow with the
/// data). sled counts nodes as they are on disk, which in memory weigh
/// more; at 64 MiB the hub passed 256 MiB by a million messages. 16 was
/// no slower over 100,000 and more, a few per cent slower in 20,000-message
/// runs at 13 recipients (BENCHMARKS.md, "sled's cache at 16 MiB").
const SLED_CACHE_BYTES: u64 = 16 << 20;
/// How often sled is flushed in the background, which bounds how much of
/// the journal a restart replays and how much the overlay holds. Often
/// enough that each flush is a short burst (a second's worth at 500
/// messages/s took 60–100 ms of a core, and pushes queued behind it).
pub(super) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Bytes of writes in the overlay that start a flush before its time.
const FLUSH_BYTES: usize = 32 << 20;

/// The data and what makes it durable, shared by the store and its
/// background flusher.
pub(super) struct Durability {
    db: sled::Db,
    pub(super) tree: sled::Tree,
    /// The state records of every space (see [`super::state`]), keyed by
    /// space, 0, key; written by sled batches, durable by
    /// [`Durability::make_durable`], never journaled.
    pub(super) state: sled::Tree,
    /// Held while a commit is applied and journaled, so that commit ids,
    /// overlay writes and journal records follow one order.
    apply_lock: Mutex<()>,
    /// Applied writes sled does not hold yet; read before sled.
    overlay: RwLock<Overlay>,
    /// One flush at a time, and what the flushes have made durable.
    flushing: Mutex<Flushed>,
    db_file: File,
    pub(super) dir: PathBuf,
    synced_blobs: Mutex<HashSet<OsString>>,
    fsync: bool,
    pub(super) journal: Journal,
    /// The entries' records, which sled names by place.
    pub(super) segments: Segments,
    /// The id of the last commit applied (to the overlay); changed only
    /// under the overlay's write lock, so a frozen overlay knows its last commit.
    pub(super) applied: AtomicU64,
    /// Whether sled names entries' places a run at a time (format 5): until
    /// an older format's upgrade, a flush names them one key each, as the
    /// upgrade expects.
    pub(super) place_runs: AtomicBool,
    /// Whether a flush files the audit index's rows into runs (format 6):
    /// until an older format's upgrade, it writes them one key each, as
    /// that format did, and the upgrade gathers them.
    pub(super) audit_runs: AtomicBool,
    /// Keeps reads of the audit index's runs apart from their rewrites.
    pub(super) rewrites: Rewrites,
    /// The recipient sets entry records name (format 7), read at open.
    pub(super) recipient_sets: RecipientSets,
    /// The message id records (format 8), out of sled.
    pub(super) messages: MessageIndex,
    /// Whether a flush moves message id records into [`Self::messages`]
    /// (format 8): until a format 7 directory's upgrade, they stay in
    /// sled, and the upgrade moves them.
    pub(super) messages_indexed: AtomicBool,
}

/// How far sled holds the commits durably, and how far its record of that
/// (`COMMIT_KEY`) does. A background flush records the previous flush's
/// commit beside its own writes, so that one sled sync a flush suffices;
/// the commits in between are replayed from the journal after a crash,
/// which rewrites what sled already holds.
#[derive(Default)]
struct Flushed {
    /// The last commit whose writes sled holds durably.
    durable: u64,
    /// The last commit `COMMIT_KEY` durably names; the journal keeps every
    /// later one.
    recorded: u64,
}

/// When a flush records the commit it flushed: with the next flush (one
/// sled sync each), or at once (a second sync), so that a start needs no
/// replay of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Record {
    WithNextFlush,
    AtOnce,
}

/// The thread that flushes sled in the background and retires the journal
/// files it made redundant; stopped (after a last flush) when the store is
/// dropped, so that the database can be reopened at once.
pub(super) struct Flusher {
    /// Asks for a flush before its time; dropped to stop the thread.
    wake: Option<mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long opening waits for another holder of the database lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Waits (up to [`LOCK_WAIT`]) until nobody holds sled's lock on `db`: a
/// store just dropped, in this process or a hub that is exiting, lets go a
/// moment later, once sled's background writes finish. Past the wait, sled's
/// own open reports who holds it.
fn wait_for_lock(db: &Path) -> Result<(), StoreError> {
    let file = match File::open(db) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let start = std::time::Instant::now();
    loop {
        match file.try_lock() {
            // Dropping `file` releases the probe's own lock.
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(()),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
}

/// Opens sled in `dir`, once no store just dropped still holds it
/// ([`wait_for_lock`]). sled 0.34 panics on some damaged files (its
/// snapshot code: "tried to serialize Uninitialized") instead of returning
/// an error; such a panic refuses the start as corrupt data, with a
/// message, instead of ending the process with a backtrace.
pub(super) fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    wait_for_lock(&dir.join("db"))?;
    let opened = quietly_catching_panics(|| {
        sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
    });
    match opened {
        Ok(db) => db.map_err(|source| StoreError::Open {
            dir: dir.to_path_buf(),
            source,
        }),
        Err(why) => Err(StoreError::Corrupt(format!(
            "the database in {} is damaged and cannot be read (sled: {why}); \
             restore the data directory from a backup",
            dir.display()
        ))),
    }
}

/// Runs `f`, turning a panic on this thread into `Err(its message)`; the
/// panic is not printed (other threads' panics are, as before).
fn quietly_catching_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let previous: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
        Arc::from(std::panic::take_hook());
    let here = std::thread::current().id();
    let others = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != here {
            others(info);
        }
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| previous(info)));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

impl Durability {
    /// Opens (or creates) the database in `dir` and replays the commits the
    /// journal holds and sled does not.
    /// `reserve` bytes are kept free on the disk ([`Journal::keep_free`]),
    /// and must be free at start beside the journal that is replayed.
    pub(super) fn open(dir: &Path, fsync: bool, reserve: u64) -> Result<Arc<Self>, StoreError> {
        create_dir_durably(dir)?;
        check_room_to_start(dir, reserve)?;
        let db = open_sled(dir)?;
        let tree = db.open_tree("exchange")?;
        let state = db.open_tree("state")?;
        let (mut place_runs, mut audit_runs, mut messages_indexed) = (true, true, true);
        match tree.get(FORMAT_KEY)? {
            // The store upgrades formats 2 to 7, and 5>6 and 7>8 (upgrades
            // that stopped midway), once the journal is replayed; format 6
            // reads as format 7 (the upgrade writes the format record alone).
            Some(v) if v.as_ref() == FORMAT => {}
            Some(v) if [FORMAT_6, FORMAT_7, FORMAT_7_TO_8].contains(&v.as_ref()) => {
                check_room_to_upgrade(dir, &tree, &v, reserve)?;
                messages_indexed = false;
            }
            Some(v) if FORMATS_UPGRADABLE.contains(&v.as_ref()) => {
                check_room_to_upgrade(dir, &tree, &v, reserve)?;
                place_runs = v.as_ref() == FORMAT_5 || v.as_ref() == FORMAT_5_TO_6;
                (audit_runs, messages_indexed) = (false, false);
            }
            None if tree.is_empty() => {
                tree.insert(FORMAT_KEY, FORMAT)?;
            }
            found => {
                return Err(StoreError::Format(format!(
                    "the data in {} is in storage format {}, and this hub reads only format {} \
                     (and upgrades formats 2 to 7, 5>6 and 7>8); start it on an empty data directory",
                    dir.display(),
                    found
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                        .unwrap_or_else(|| "1".into()),
                    String::from_utf8_lossy(FORMAT)
                )));
            }
        }
        let db_file = File::open(dir.join("db"))?;
        // The directory entries of the files sled just created must be durable too.
        sync_dir(dir)?;
        let flushed = match tree.get(COMMIT_KEY)? {
            Some(v) => u64_from(&v)?,
            None => 0,
        };
        let segments = Segments::open(&dir.join("entries"), fsync)?;
        let messages = MessageIndex::open(&dir.join("message-ids"), fsync, reserve)?;
        let (mut journal, unflushed) = Journal::open(&dir.join("journal"), fsync, flushed)?;
        journal.keep_free(reserve);
        // Commits the journal made durable but sled had not flushed: all
        // decoded before any is applied, then written to sled as one batch.
        let mut overlay = Overlay::default();
        let mut applied = flushed;
        for record in unflushed {
            for (k, v) in decode_ops(&record.payload)? {
                overlay.put(k, v.into());
            }
            applied = record.id;
        }
        let durability = Arc::new(Durability {
            db,
            tree,
            state,
            apply_lock: Mutex::new(()),
            overlay: RwLock::new(overlay),
            flushing: Mutex::new(Flushed {
                durable: flushed,
                recorded: flushed,
            }),
            db_file,
            dir: dir.to_path_buf(),
            synced_blobs: Mutex::new(HashSet::new()),
            fsync,
            journal,
            segments,
            applied: AtomicU64::new(applied),
            place_runs: AtomicBool::new(place_runs),
            audit_runs: AtomicBool::new(audit_runs),
            rewrites: Rewrites::default(),
            recipient_sets: RecipientSets::default(),
            messages,
            messages_indexed: AtomicBool::new(messages_indexed),
        });
        durability.flush(false, Record::AtOnce)?;
        // After the replay's flush: sled holds every set a record names.
        let count = durability.get(RECIPIENT_SETS_KEY)?;
        durability
            .recipient_sets
            .load(count.as_deref(), durability.scan_kind(RECIPIENT_SET))?;
        Ok(durability)
    }

    /// Queues one commit's writes in the journal and applies them to the
    /// overlay, where reads see them at once. True when the overlay holds
    /// enough to flush before its time.
    pub(super) fn commit(&self, ops: Vec<Write>) -> Result<bool, StoreError> {
        let _order = fatal::lock(&self.apply_lock, "store")?;
        let id = self.applied.load(Ordering::Acquire) + 1;
        let record = encode_ops(&ops);
        // Locked before the append, so that a journaled commit always
        // reaches the overlay and its id is never handed out twice.
        let mut o = self.overlay()?;
        self.journal.append(id, &record)?;
        for (k, v) in ops {
            o.put(k, v.into());
        }
        self.applied.store(id, Ordering::Release);
        Ok(o.active_bytes() >= FLUSH_BYTES)
    }

    /// sled flush, then fsync of the log file and of any new blob files.
    pub(super) fn make_durable(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        if !self.fsync {
            return Ok(());
        }
        self.db_file.sync_data()?;
        self.sync_new_blobs()
    }

    fn sync_new_blobs(&self) -> Result<(), StoreError> {
        let blobs = self.dir.join("blobs");
        let Ok(read) = std::fs::read_dir(&blobs) else {
            return Ok(());
        };
        let mut synced = fatal::lock(&self.synced_blobs, "blob sync state")?;
        let mut any = false;
        let mut present = HashSet::new();
        for item in read {
            let item = item?;
            let name = item.file_name();
            if !synced.contains(&name) {
                // A blob may be removed by sled's GC between listing and opening.
                if let Ok(f) = File::open(item.path()) {
                    f.sync_data()?;
                    any = true;
                }
            }
            present.insert(name);
        }
        if any {
            sync_dir(&blobs)?;
        }
        *synced = present;
        Ok(())
    }
    pub(super) fn overlay(&self) -> Result<std::sync::RwLockWriteGuard<'_, Overlay>, StoreError> {
        Ok(fatal::write(&self.overlay, "store overlay")?)
    }

    pub(super) fn overlay_read(
        &self,
    ) -> Result<std::sync::RwLockReadGuard<'_, Overlay>, StoreError> {
        Ok(fatal::read(&self.overlay, "store overlay")?)
    }

    /// The newest value of `key`: the overlay's, else sled's.
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        if let Some(v) = self.get_applied(key)? {
            return Ok(Some(v));
        }
        self.tree.get(key).map_err(StoreError::from)
    }

    /// Keys from `lo` up to `hi`, ascending, newest values. The overlay is
    /// read before sled: a write a flush moves meanwhile is seen on one
    /// side or the other.
    pub(super) fn scan<'a>(
        &'a self,
        lo: &[u8],
        hi: Bound<&[u8]>,
    ) -> impl Iterator<Item = Result<Kv, StoreError>> + use<'a> {
        // An inverted range holds nothing (and would panic the overlay's map).
        let hi = match hi {
            Bound::Included(h) if h < lo => Bound::Excluded(lo),
            Bound::Excluded(h) if h < lo => Bound::Excluded(lo),
            other => other,
        };
        let (pending, poisoned) = match self.overlay_read() {
            Ok(o) => (o.range(lo, hi), None),
            Err(e) => (Vec::new(), Some(Err(e))),
        };
        let hi = match hi {
            Bound::Included(h) => Bound::Included(h.to_vec()),
            Bound::Excluded(h) => Bound::Excluded(h.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let sled = self
            .tree
            .range::<Vec<u8>, _>((Bound::Included(lo.to_vec()), hi))
            .map(|kv| kv.map_err(StoreError::from));
        poisoned
            .into_iter()
            .chain(Newest::new(pending.into_iter().map(Ok), sled))
    }

    /// Keys starting with `[kind, 0]`.
    pub(super) fn scan_kind(
        &self,
        kind: u8,
    ) -> impl Iterator<Item = Result<Kv, StoreError>> + use<'_> {
        self.scan(&[kind, 0], Bound::Excluded(&[kind, 1]))
    }

    /// Moves the overlay's writes into sled, makes sled durable and retires
    /// the journal files it made redundant. The writes go in one by one
    /// (a sled batch would stop every reader while it is applied), each
    /// commit's after its journal record is durable: a crash mid-flush
    /// leaves sled with parts of journaled commits only, which the replay
    /// at start writes again in full. A flushed commit is recorded only
    /// once all of it is durable: with the next flush's writes, or `AtOnce`
    /// by a sync of its own (see [`Flushed`]).
    ///
    /// With `merge`, consecutive runs are written as one (see
    /// [`merge_runs`]). The flush of replayed commits at start does not
    /// merge: each of their runs then overwrites the key it had, including
    /// the last key of a merged run the crash left behind, so no two runs
    /// of different extent end up holding the same positions.
    pub(super) fn flush(&self, merge: bool, record: Record) -> Result<(), StoreError> {
        let mut flushed = fatal::lock(&self.flushing, "store flush")?;
        self.flush_holding(&mut flushed, merge, record)
    }

    /// Flushes everything applied so far into sled, then runs `read` on
    /// sled's tree and the last commit it holds, with flushes held off:
    /// meanwhile commits go on into the journal and the overlay, and sled's
    /// tree changes only by a registry save (one key, either version whole)
    /// and never by a commit, so `read` sees the store exactly as it was at
    /// that commit. A backup reads its copy so.
    pub(super) fn read_still<T>(
        &self,
        read: impl FnOnce(&sled::Tree, u64) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut flushed = fatal::lock(&self.flushing, "store flush")?;
        self.flush_holding(&mut flushed, true, Record::AtOnce)?;
        read(&self.tree, flushed.recorded)
    }

    fn flush_holding(
        &self,
        flushed: &mut Flushed,
        merge: bool,
        record: Record,
    ) -> Result<(), StoreError> {
        let frozen = {
            let mut o = self.overlay()?;
            o.freeze(self.applied.load(Ordering::Acquire))
        };
        if let Some(frozen) = &frozen {
            self.journal.sync()?;
            let writes = if merge {
                merge_runs(&frozen.writes)
            } else {
                frozen
                    .writes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            let (writes, rows) = self.audit_rows(writes)?;
            // Durable before the flush is recorded, like the segments.
            let writes = self.index_messages(writes)?;
            for (k, v) in self.place_records(writes)? {
                self.tree.insert(k, v)?;
            }
            // After the entries they name.
            for (mechanism, rows) in rows {
                self.file_audit_rows(&mechanism, rows)?;
            }
        }
        // What sled held durably before this flush may be recorded with it.
        let unrecorded = (flushed.durable > flushed.recorded).then_some(flushed.durable);
        if frozen.is_none() && unrecorded.is_none() {
            return Ok(());
        }
        if let Some(commit) = unrecorded {
            self.record(commit)?;
        }
        self.make_durable()?;
        if let Some(commit) = unrecorded {
            flushed.recorded = commit;
        }
        if let Some(frozen) = frozen {
            flushed.durable = frozen.commit;
            self.overlay()?.thaw();
        }
        if record == Record::AtOnce && flushed.durable > flushed.recorded {
            self.record(flushed.durable)?;
            self.make_durable()?;
            flushed.recorded = flushed.durable;
        }
        self.journal.retire(flushed.recorded)
    }

    /// Files `rows` into `mechanism`'s runs ([`file_rows`]) with their
    /// rewrites held apart from reads. Returns the runs written.
    pub(super) fn file_audit_rows(
        &self,
        mechanism: &str,
        rows: Vec<Row>,
    ) -> Result<usize, StoreError> {
        file_rows(&self.tree, &self.rewrites, mechanism, rows)
    }

    /// `writes` without the audit index's rows, and those rows by
    /// mechanism, to be filed into runs (format 6); before an older
    /// format's upgrade, the rows stay among the writes, one key each.
    fn audit_rows(
        &self,
        writes: Vec<(Vec<u8>, IVec)>,
    ) -> Result<(FlushWrites, RowsByMechanism), StoreError> {
        let mut rows: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        if !self.audit_runs.load(Ordering::Acquire) {
            return Ok((writes, rows));
        }
        let mut rest = Vec::with_capacity(writes.len());
        for (k, v) in writes {
            if k.first() == Some(&AUDIT_SCOPE) && k.get(1) == Some(&0) {
                let (mechanism, row) = Row::of_key(&k)?;
                rows.entry(mechanism).or_default().push(row);
            } else {
                rest.push((k, v));
            }
        }
        Ok((rest, rows))
    }

    /// `writes` without the message id records, which are added to the
    /// index (format 8); before a format 7 directory's upgrade, they stay.
    fn index_messages(&self, writes: FlushWrites) -> Result<FlushWrites, StoreError> {
        if !self.messages_indexed.load(Ordering::Acquire) {
            return Ok(writes);
        }
        let mut pairs = Vec::new();
        let mut rest = Vec::with_capacity(writes.len());
        for (k, v) in writes {
            if k.first() == Some(&MESSAGE) && k.get(1) == Some(&0) {
                pairs.push(pair_of_record(&k, &v)?);
            } else {
                rest.push((k, v));
            }
        }
        self.messages.add(&pairs)?;
        Ok(rest)
    }

    /// The newest value of `key` in the overlay, not looking in sled (the
    /// message id records of format 8, which sled does not hold).
    pub(super) fn get_applied(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        let frozen = match self.overlay_read()?.get(key) {
            Ok(v) => return Ok(Some(v)),
            Err(frozen) => frozen,
        };
        Ok(frozen.get(key).cloned())
    }

    /// `writes` with every entry record (and the tree hashes of its
    /// entry) replaced by its place in the segments, where they are
    /// appended (and synced) first: sled never names a place that is not
    /// on disk.
    fn place_records(
        &self,
        mut writes: Vec<(Vec<u8>, IVec)>,
    ) -> Result<Vec<(Vec<u8>, IVec)>, StoreError> {
        if !writes.iter().any(|(k, _)| is_entry_key(k)) {
            return Ok(writes);
        }
        // Each entry's hashes, by the entry's key, taken out of the writes.
        let entries: HashSet<Vec<u8>> = writes
            .iter()
            .filter(|(k, _)| is_entry_key(k))
            .map(|(k, _)| k.clone())
            .collect();
        let mut hashes: HashMap<Vec<u8>, IVec> = HashMap::new();
        writes.retain(|(k, v)| {
            let entry = record_key(k);
            if k.first() == Some(&TREE_HASH) && entries.contains(&entry) {
                hashes.insert(entry, v.clone());
                return false;
            }
            true
        });
        // What to append, and for each write, which of them it becomes
        // the place of.
        let mut appended: Vec<Appended<'_>> = Vec::new();
        let mut index: Vec<Option<usize>> = Vec::with_capacity(writes.len());
        for (k, v) in &writes {
            if is_entry_key(k) {
                index.push(Some(appended.len()));
                appended.push(Appended {
                    record: v,
                    hashes: hashes.get(k).map_or(&[], |h| h.as_ref()),
                });
            } else {
                index.push(None);
            }
        }
        let places = self.segments.append(&appended)?;
        drop(appended);
        let runs = self.place_runs.load(Ordering::Acquire);
        // Each channel's entries in order of seq, with their places.
        let mut entry_places: Vec<(String, u64, Place)> = Vec::new();
        let mut out = Vec::with_capacity(writes.len());
        for ((k, v), at) in writes.into_iter().zip(index) {
            let Some(at) = at else {
                out.push((k, v));
                continue;
            };
            let place = *places.get(at).ok_or_else(|| {
                StoreError::Database("the segments gave fewer places than records".into())
            })?;
            if runs {
                let (channel, seq) = split_key(&k)?;
                let seq =
                    seq.ok_or_else(|| StoreError::Corrupt("an entry key without seq".into()))?;
                entry_places.push((channel, seq, place));
            } else {
                out.push((place_key(&k), place.encode().into()));
            }
        }
        // Writes are in key order: a channel's entries are together, by seq.
        for channel in entry_places.chunk_by(|a, b| a.0 == b.0) {
            let Some((name, _, _)) = channel.first() else {
                continue;
            };
            for run in runs_of_places(channel.iter().map(|(_, seq, place)| (*seq, *place))) {
                out.push((key(ENTRY_AT, name, Some(run.last())), run.encode().into()));
            }
        }
        Ok(out)
    }

    /// At a clean stop, after the last flush: removes the journal when the
    /// database holds everything in it (see [`Journal::close`]).
    pub(super) fn close_journal(&self) -> Result<bool, StoreError> {
        let flushed = fatal::lock(&self.flushing, "store flush")?;
        self.journal.close(flushed.recorded)
    }

    /// Names `commit` as the last one sled holds (durable with the next sync).
    fn record(&self, commit: u64) -> Result<(), StoreError> {
        self.tree
            .insert(COMMIT_KEY, commit.to_be_bytes().to_vec())?;
        Ok(())
    }
}

impl Flusher {
    /// Asks for a flush before its time (none if one is already asked for).
    pub(super) fn wake(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }

    /// Stops the thread after a last flush.
    pub(super) fn stop(&mut self) {
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub(super) fn start(durability: Arc<Durability>, every: Duration) -> Result<Self, StoreError> {
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("tongbao-flush".into())
            .spawn(move || {
                let mut last_failure: Option<String> = None;
                loop {
                    let last_round = matches!(
                        woken.recv_timeout(every),
                        Err(mpsc::RecvTimeoutError::Disconnected)
                    );
                    // The journal keeps every commit until a flush succeeds.
                    // The last one records all it flushed, so that the next
                    // start replays nothing.
                    let record = if last_round {
                        Record::AtOnce
                    } else {
                        Record::WithNextFlush
                    };
                    if !last_round {
                        crate::failpoint::pause("background-flush");
                    }
                    match durability.flush(true, record) {
                        // The same failure ten times a second says nothing
                        // new: logged when it begins or changes.
                        Err(e) => {
                            let text = e.to_string();
                            if last_failure.as_ref() != Some(&text) {
                                tracing::warn!(error = %text, "background flush of the database failed");
                                last_failure = Some(text);
                            }
                        }
                        Ok(()) => last_failure = None,
                    }
                    if last_round {
                        return;
                    }
                }
            })?;
        Ok(Self {
            wake: Some(wake),
            thread: Some(thread),
        })
    }
}

/// The writes a flush moves into sled, in key order.
type FlushWrites = Vec<(Vec<u8>, IVec)>;
/// The audit index's rows a flush files, by mechanism.
type RowsByMechanism = BTreeMap<String, Vec<Row>>;

/// One key and the value a commit writes under it.
pub(super) type Write = (Vec<u8>, Vec<u8>);

/// One commit's records, as the journal keeps them.
fn encode_ops(ops: &[Write]) -> Vec<u8> {
    let size: usize = ops.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for (k, v) in ops {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

fn decode_ops(bytes: &[u8]) -> Result<Vec<Write>, StoreError> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], StoreError> {
        let (head, tail) = rest
            .split_at_checked(n)
            .ok_or_else(|| StoreError::Corrupt("a journal record is cut short".into()))?;
        *rest = tail;
        Ok(head)
    }
    fn len(rest: &mut &[u8]) -> Result<usize, StoreError> {
        let b: [u8; 4] = take(rest, 4)?.try_into().unwrap_or_default();
        Ok(u32::from_le_bytes(b) as usize)
    }
    let mut rest = bytes;
    let count = len(&mut rest)?;
    let mut ops = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let n = len(&mut rest)?;
        let k = take(&mut rest, n)?.to_vec();
        let n = len(&mut rest)?;
        let v = take(&mut rest, n)?.to_vec();
        ops.push((k, v));
    }
    if !rest.is_empty() {
        return Err(StoreError::Corrupt(
            "a journal record has bytes after its last write".into(),
        ));
    }
    Ok(ops)
}

/// A commit's records on arbitrary or damaged bytes: no panic, and one
/// encoding per commit.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::store::codec::proptests::damaged;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn ops() -> impl Strategy<Value = Vec<Write>> {
        vec((vec(any::<u8>(), 0..20), vec(any::<u8>(), 0..40)), 0..5)
    }

    proptest! {
        #[test]
        fn ops_read_back(ops in ops()) {
            prop_assert_eq!(decode_ops(&encode_ops(&ops))?, ops);
        }

        #[test]
        fn damaged_ops_decode_without_panic(bytes in damaged(ops().prop_map(|o| encode_ops(&o)))) {
            if let Ok(ops) = decode_ops(&bytes) {
                prop_assert_eq!(encode_ops(&ops), bytes);
            }
        }
    }
}
