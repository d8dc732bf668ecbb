//! The embedded default store, on sled 0.34.
//!
//! One tree, keys prefixed by record type. Records that grow with every
//! delivery are kept as runs of inbox positions, so that a message fanned
//! out to 13 units costs one key per inbox per group commit, not one per
//! recipient: an inbox run holds the positions one commit added to an
//! inbox; an answer run, the positions one receipt answered; a fetched run,
//! the positions one page served for the first time. A background flush
//! writes consecutive inbox and fetched runs of one inbox as one. Runs are
//! keyed by their last position and start with their first, so that the
//! run holding a position is the first key at or after it: lookups only
//! ever iterate forwards.
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
//! not journaled: they reach disk with the next flush.

use super::journal::Journal;
use super::overlay::{Kv, Newest, Overlay};
use super::{
    Answer, AnswerKind, ChannelHead, InboxItem, MessageRecord, NewEntry, ScopedEntry, Store,
    StoreError, StoredEntry, create_dir_durably, sync_dir,
};
use crate::registry::Registry;
use prost::Message as _;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::Duration;
use tongbao_proto::{HASH_LEN, Hash, pb};

const ENTRY: u8 = b'e';
const INBOX: u8 = b'i';
const MESSAGE: u8 = b'm';
const CHANNEL_HEAD: u8 = b'c';
const INBOX_HEAD: u8 = b'b';
const ANSWER: u8 = b'a';
const FETCHED: u8 = b'f';
const AUDIT_SCOPE: u8 = b'x';
const TREE_HASH: u8 = b't';
const CHECKPOINT: u8 = b'k';
const REGISTRY_KEY: &[u8] = b"r\0registry";
const FORMAT_KEY: &[u8] = b"v\0format";
/// The id of the last commit applied, written in the same batch.
const COMMIT_KEY: &[u8] = b"v\0commit";
/// The layout of the records in this file. A database written in another
/// layout is refused rather than misread.
const FORMAT: &[u8] = b"2";

/// Bytes of recently committed entries kept decoded in memory.
const ENTRY_CACHE_BYTES: usize = 16 << 20;
/// Merkle hashes kept in memory.
const HASH_CACHE_LEN: usize = 1 << 17;
/// Latest positions of each inbox kept in memory, so that a subscriber
/// following its inbox reads its next page without a database lookup.
const INBOX_CACHE_LEN: usize = 4096;
/// sled's page cache (its default, 1 GiB, would let memory grow with the data).
const SLED_CACHE_BYTES: u64 = 64 << 20;
/// How often sled is flushed in the background, which bounds how much of
/// the journal a restart replays and how much the overlay holds. Often
/// enough that each flush is a short burst (a second's worth at 500
/// messages/s took 60–100 ms of a core, and pushes queued behind it).
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Bytes of writes in the overlay that start a flush before its time.
const FLUSH_BYTES: usize = 32 << 20;

/// Records that never change once committed, kept in memory: fresh entries
/// are read by every recipient and proved by every client, so each is
/// decoded once and its tree hashes are not looked up again.
#[derive(Default)]
struct Recent {
    /// Channel and inbox names, each allocated once: the orders below
    /// hold one per record kept.
    names: HashSet<Arc<str>>,
    /// By channel, then seq (lookups by `&str` allocate nothing).
    entries: HashMap<Arc<str>, HashMap<u64, Arc<StoredEntry>>>,
    entry_order: VecDeque<(Arc<str>, u64, usize)>,
    entry_bytes: usize,
    /// By channel, then stored-hash index.
    hashes: HashMap<Arc<str>, HashMap<u64, Hash>>,
    hash_order: VecDeque<(Arc<str>, u64)>,
    /// By inbox, its latest positions in order without a gap: (cursor,
    /// channel, seq). Every commit adds its positions here, so the newest
    /// is the inbox's head.
    inboxes: HashMap<Arc<str>, VecDeque<KeptPosition>>,
}

/// An inbox position kept in memory: (cursor, channel, seq).
type KeptPosition = (u64, Arc<str>, u64);

impl Recent {
    /// The one shared copy of a name.
    fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        self.names.insert(n.clone());
        n
    }

    fn entry(&self, channel: &str, seq: u64) -> Option<Arc<StoredEntry>> {
        self.entries.get(channel)?.get(&seq).cloned()
    }

    fn hash(&self, channel: &str, index: u64) -> Option<Hash> {
        self.hashes.get(channel)?.get(&index).copied()
    }

    fn add_entry(&mut self, channel: &str, seq: u64, entry: Arc<StoredEntry>, size: usize) {
        let name = self.name(channel);
        let of_channel = self.entries.entry(name.clone()).or_default();
        if of_channel.insert(seq, entry).is_none() {
            self.entry_order.push_back((name, seq, size));
            self.entry_bytes += size;
        }
        while self.entry_bytes > ENTRY_CACHE_BYTES {
            let Some((old, seq, size)) = self.entry_order.pop_front() else {
                break;
            };
            if let Some(m) = self.entries.get_mut(&old) {
                m.remove(&seq);
            }
            self.entry_bytes -= size;
        }
    }

    /// Adds an inbox's new positions, ascending. A position that does not
    /// follow the newest one kept starts the inbox's window afresh, so the
    /// window never has a gap.
    fn add_positions(&mut self, inbox: &str, items: &[(u64, u64, &str)]) {
        let items: Vec<(u64, u64, Arc<str>)> = items
            .iter()
            .map(|&(cursor, seq, channel)| (cursor, seq, self.name(channel)))
            .collect();
        let inbox = self.name(inbox);
        let kept = self.inboxes.entry(inbox).or_default();
        for (cursor, seq, channel) in items {
            if kept
                .back()
                .is_some_and(|(last, _, _)| last.checked_add(1) != Some(cursor))
            {
                kept.clear();
            }
            kept.push_back((cursor, channel, seq));
            if kept.len() > INBOX_CACHE_LEN {
                kept.pop_front();
            }
        }
    }

    /// Up to `limit` positions of `inbox` from `start`, when the window
    /// kept holds `start` (it then holds every later one).
    fn inbox_page(&self, inbox: &str, start: u64, limit: usize) -> Option<Vec<InboxItem>> {
        let kept = self.inboxes.get(inbox)?;
        let first = kept.front()?.0;
        let last = kept.back()?.0;
        if start < first || start > last {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        Some(
            kept.range(from..)
                .take(limit)
                .map(|(cursor, channel, seq)| InboxItem {
                    cursor: *cursor,
                    channel: channel.to_string(),
                    seq: *seq,
                })
                .collect(),
        )
    }

    fn add_hash(&mut self, channel: &str, index: u64, hash: Hash) {
        let name = self.name(channel);
        let of_channel = self.hashes.entry(name.clone()).or_default();
        if of_channel.insert(index, hash).is_none() {
            self.hash_order.push_back((name, index));
        }
        while self.hash_order.len() > HASH_CACHE_LEN {
            if let Some((old, index)) = self.hash_order.pop_front()
                && let Some(m) = self.hashes.get_mut(&old)
            {
                m.remove(&index);
            }
        }
    }
}

/// sled-backed [`Store`].
pub struct SledStore {
    durability: Arc<Durability>,
    /// Held while a commit is applied and journaled, so that commit ids,
    /// overlay writes and journal records follow one order.
    apply_lock: Mutex<()>,
    recent: Mutex<Recent>,
    /// The highest inbox position marked fetched, by inbox (loaded on first
    /// use). Each inbox's lock serialises its "fetched" marks so that the
    /// first serving wins, without one inbox's readers waiting for
    /// another's; positions above the mark need no lookup.
    fetched_marks: Mutex<HashMap<String, Arc<Mutex<Option<u64>>>>>,
    flusher: Flusher,
}

/// The data and what makes it durable, shared by the store and its
/// background flusher.
struct Durability {
    db: sled::Db,
    tree: sled::Tree,
    /// Applied writes sled does not hold yet; read before sled.
    overlay: RwLock<Overlay>,
    /// One flush at a time, and what the flushes have made durable.
    flushing: Mutex<Flushed>,
    db_file: File,
    dir: PathBuf,
    synced_blobs: Mutex<HashSet<OsString>>,
    fsync: bool,
    journal: Journal,
    /// The id of the last commit applied (to the overlay); changed only
    /// under the overlay's write lock, so a frozen overlay knows its last commit.
    applied: AtomicU64,
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
enum Record {
    WithNextFlush,
    AtOnce,
}

/// The thread that flushes sled in the background and retires the journal
/// files it made redundant; stopped (after a last flush) when the store is
/// dropped, so that the database can be reopened at once.
struct Flusher {
    /// Asks for a flush before its time; dropped to stop the thread.
    wake: Option<mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.flusher.wake.take();
        if let Some(t) = self.flusher.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("dir", &self.durability.dir)
            .finish_non_exhaustive()
    }
}

fn db_err(e: sled::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn key(kind: u8, name: &str, n: Option<u64>) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + name.len() + 9);
    k.push(kind);
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    if let Some(n) = n {
        k.push(0);
        k.extend_from_slice(&n.to_be_bytes());
    }
    k
}

/// Consecutive stretches `(first, last)` of ascending, distinct positions.
fn runs_of(cursors: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &c in cursors {
        match out.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(c) => *last = c,
            _ => out.push((c, c)),
        }
    }
    out
}

/// An answer run: first position (8), kind (1), seq of the answering entry
/// (8), its hub time (8).
fn answer_run(first: u64, kind: AnswerKind, seq: u64, hub_micros: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(25);
    v.extend_from_slice(&first.to_be_bytes());
    v.push(u8::from(kind == AnswerKind::Exception));
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&(hub_micros as u64).to_be_bytes());
    v
}

fn decode_answer(v: &[u8]) -> Result<Answer, StoreError> {
    if v.len() != 25 {
        return Err(StoreError::Corrupt("answer record".into()));
    }
    Ok(Answer {
        kind: if v[8] == 1 {
            AnswerKind::Exception
        } else {
            AnswerKind::Acknowledged
        },
        seq: u64_from(&v[9..17])?,
        hub_micros: u64_from(&v[17..25])? as i64,
    })
}

/// When a fetched run says `cursor` was first served. A run is its first
/// position (8) and either one time (8) for all its positions, or (once
/// runs are merged) stretches of a count (4) and a time (8).
fn fetched_at(v: &[u8], cursor: u64) -> Result<u64, ()> {
    let first = v.get(..8).ok_or(())?;
    let mut at = cursor
        .checked_sub(u64_from(first).map_err(|_| ())?)
        .ok_or(())?;
    if v.len() == 16 {
        return u64_from(&v[8..]).map_err(|_| ());
    }
    for stretch in v.get(8..).ok_or(())?.chunks(12) {
        let (count, micros) = stretch.split_at_checked(4).ok_or(())?;
        let count = u64::from(u32::from_be_bytes(count.try_into().map_err(|_| ())?));
        if at < count {
            return u64_from(micros).map_err(|_| ());
        }
        at -= count;
    }
    Err(())
}

/// Consecutive runs of one inbox in `writes` (inbox runs, fetched runs)
/// as one run each, the rest as is: how a flush writes them to sled, so
/// that an inbox read at one commit at a time does not leave one key per
/// commit behind. Runs are keyed by their last position, so the merged
/// run takes the key of the last run it absorbs.
fn merge_runs(writes: &BTreeMap<Vec<u8>, sled::IVec>) -> Vec<(Vec<u8>, sled::IVec)> {
    /// A run being merged: its key without the position, its last
    /// position, kind and value so far.
    struct Open {
        prefix: Vec<u8>,
        last: u64,
        kind: u8,
        value: Vec<u8>,
    }
    fn close(open: Option<Open>, out: &mut Vec<(Vec<u8>, sled::IVec)>) {
        if let Some(o) = open {
            let mut k = o.prefix;
            k.extend_from_slice(&o.last.to_be_bytes());
            out.push((k, o.value.into()));
        }
    }
    let mut out = Vec::with_capacity(writes.len());
    let mut open: Option<Open> = None;
    for (k, v) in writes {
        let run = match (k.first(), k.len().checked_sub(9)) {
            (Some(&kind), Some(at)) if (kind == INBOX || kind == FETCHED) && k[at] == 0 => {
                match (u64_from(&k[at + 1..]), v.get(..8).map(u64_from)) {
                    (Ok(last), Some(Ok(first))) if first <= last => Some((kind, at, first, last)),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some((kind, at, first, last)) = run else {
            close(open.take(), &mut out);
            out.push((k.clone(), v.clone()));
            continue;
        };
        let prefix = &k[..=at];
        if let Some(o) = open.as_mut()
            && o.kind == kind
            && o.prefix == prefix
            && o.last.checked_add(1) == Some(first)
            && append_run(kind, &mut o.value, v, last - first + 1)
        {
            o.last = last;
            continue;
        }
        close(open.take(), &mut out);
        let mut value = Vec::new();
        if kind == FETCHED && v.len() == 16 {
            // One time for all: as a stretch, so that more can follow.
            let Ok(count) = u32::try_from(last - first + 1) else {
                out.push((k.clone(), v.clone()));
                continue;
            };
            value.extend_from_slice(&v[..8]);
            value.extend_from_slice(&count.to_be_bytes());
            value.extend_from_slice(&v[8..]);
        } else {
            value.extend_from_slice(v);
        }
        open = Some(Open {
            prefix: prefix.to_vec(),
            last,
            kind,
            value,
        });
    }
    close(open, &mut out);
    out
}

/// Appends the positions of run `v` (of `count` positions) to the merged
/// run `into`; false if `v` is not a run this can merge.
fn append_run(kind: u8, into: &mut Vec<u8>, v: &[u8], count: u64) -> bool {
    let Ok(count32) = u32::try_from(count) else {
        return false;
    };
    if kind == INBOX {
        let (Some(head), Some(items)) = (into.get(8..12), v.get(12..)) else {
            return false;
        };
        let Some(total) = head
            .try_into()
            .ok()
            .map(u32::from_be_bytes)
            .and_then(|n| n.checked_add(count32))
        else {
            return false;
        };
        into[8..12].copy_from_slice(&total.to_be_bytes());
        into.extend_from_slice(items);
        true
    } else if v.len() == 16 {
        into.extend_from_slice(&count32.to_be_bytes());
        into.extend_from_slice(&v[8..]);
        true
    } else if v.len() > 8 && (v.len() - 8).is_multiple_of(12) {
        into.extend_from_slice(&v[8..]);
        true
    } else {
        false
    }
}

/// An inbox run: first position (8), count (4), then per position the
/// entry's seq (8), the length of its channel name (2) and the name.
fn inbox_run(first: u64, items: &[(u64, &str)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + items.iter().map(|(_, c)| 10 + c.len()).sum::<usize>());
    v.extend_from_slice(&first.to_be_bytes());
    v.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for (seq, channel) in items {
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&(channel.len() as u16).to_be_bytes());
        v.extend_from_slice(channel.as_bytes());
    }
    v
}

fn decode_inbox_run(inbox: &str, last: u64, v: &[u8]) -> Result<Vec<InboxItem>, StoreError> {
    let bad = || StoreError::Corrupt(format!("inbox {inbox}: run ending at position {last}"));
    let first = u64_from(v.get(..8).ok_or_else(bad)?)?;
    let count = v
        .get(8..12)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(bad)?;
    if first.checked_add(u64::from(count)) != last.checked_add(1) {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut rest = &v[12..];
    for i in 0..u64::from(count) {
        let (seq, len) = match (rest.get(..8), rest.get(8..10)) {
            (Some(s), Some(l)) => (u64_from(s)?, u16::from_be_bytes([l[0], l[1]]) as usize),
            _ => return Err(bad()),
        };
        let name = rest.get(10..10 + len).ok_or_else(bad)?;
        out.push(InboxItem {
            cursor: first + i,
            seq,
            channel: String::from_utf8_lossy(name).into_owned(),
        });
        rest = &rest[10 + len..];
    }
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// An entry record: leaf hash, the number of recipients (4), each
/// recipient's inbox position (8 each), then the encoded entry.
fn entry_record(
    leaf_hash: &Hash,
    cursors: impl ExactSizeIterator<Item = u64>,
    encoded: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(HASH_LEN + 4 + 8 * cursors.len() + encoded.len());
    v.extend_from_slice(leaf_hash);
    v.extend_from_slice(&(cursors.len() as u32).to_be_bytes());
    for c in cursors {
        v.extend_from_slice(&c.to_be_bytes());
    }
    v.extend_from_slice(encoded);
    v
}

/// Where the encoded entry starts in an entry record.
fn entry_offset(v: &[u8]) -> Option<usize> {
    let n = v.get(HASH_LEN..HASH_LEN + 4)?;
    let n = u32::from_be_bytes(n.try_into().ok()?) as usize;
    let at = HASH_LEN + 4 + 8 * n;
    (at <= v.len()).then_some(at)
}

fn decode_entry(channel: &str, seq: u64, v: &[u8]) -> Result<StoredEntry, StoreError> {
    let at =
        entry_offset(v).ok_or_else(|| StoreError::Corrupt(format!("entry {channel}:{seq}")))?;
    let entry = pb::Entry::decode(&v[at..])
        .map_err(|e| StoreError::Corrupt(format!("entry {channel}:{seq}: {e}")))?;
    let cursors = v[HASH_LEN + 4..at]
        .chunks_exact(8)
        .map(u64_from)
        .collect::<Result<Vec<_>, _>>()?;
    if cursors.len() != entry.recipients.len() {
        return Err(StoreError::Corrupt(format!(
            "entry {channel}:{seq}: {} inbox positions for {} recipients",
            cursors.len(),
            entry.recipients.len()
        )));
    }
    Ok(StoredEntry {
        entry,
        leaf_hash: hash_from(&v[..HASH_LEN])?,
        encoded: prost::bytes::Bytes::copy_from_slice(&v[at..]),
        cursors,
    })
}

fn hash_from(bytes: &[u8]) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("hash of {} bytes", bytes.len())))
}

fn u64_from(bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("counter of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
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

/// Splits `kind 0 name 0 n` keys.
fn split_key(k: &[u8]) -> Result<(String, Option<u64>), StoreError> {
    let rest = k
        .get(2..)
        .ok_or_else(|| StoreError::Corrupt("short key".into()))?;
    if rest.len() >= 9 && rest[rest.len() - 9] == 0 {
        let name = String::from_utf8_lossy(&rest[..rest.len() - 9]).into_owned();
        Ok((name, Some(u64_from(&rest[rest.len() - 8..])?)))
    } else {
        Ok((String::from_utf8_lossy(rest).into_owned(), None))
    }
}

impl SledStore {
    /// Opens (or creates) the database in `dir`. With `fsync` false, commits
    /// survive a process crash but not a power loss (benchmarks only).
    pub fn open(dir: &Path, fsync: bool) -> Result<Self, StoreError> {
        Self::open_flushing_every(dir, fsync, FLUSH_EVERY)
    }

    /// [`SledStore::open`] with the background flush's period given (tests
    /// that count sled keys flush when they choose).
    fn open_flushing_every(dir: &Path, fsync: bool, every: Duration) -> Result<Self, StoreError> {
        create_dir_durably(dir)?;
        wait_for_lock(&dir.join("db"))?;
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
            .map_err(|e| {
                StoreError::Database(format!("cannot open database in {}: {e}", dir.display()))
            })?;
        let tree = db.open_tree("exchange").map_err(db_err)?;
        match tree.get(FORMAT_KEY).map_err(db_err)? {
            Some(v) if v.as_ref() == FORMAT => {}
            None if tree.is_empty() => {
                tree.insert(FORMAT_KEY, FORMAT).map_err(db_err)?;
            }
            found => {
                return Err(StoreError::Format(format!(
                    "the data in {} is in storage format {}, and this hub reads only format {}; \
                     start it on an empty data directory",
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
        let flushed = match tree.get(COMMIT_KEY).map_err(db_err)? {
            Some(v) => u64_from(&v)?,
            None => 0,
        };
        let (journal, unflushed) = Journal::open(&dir.join("journal"), fsync, flushed)?;
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
            applied: AtomicU64::new(applied),
        });
        durability.flush(false, Record::AtOnce)?;
        let flusher = Flusher::start(durability.clone(), every)?;
        Ok(Self {
            durability,
            apply_lock: Mutex::new(()),
            recent: Mutex::new(Recent::default()),
            fetched_marks: Mutex::new(HashMap::new()),
            flusher,
        })
    }

    /// Queues one commit's writes in the journal and applies them to the
    /// overlay, where reads see them at once.
    fn commit_ops(&self, ops: Vec<Write>) -> Result<(), StoreError> {
        let _order = self
            .apply_lock
            .lock()
            .map_err(|_| StoreError::Database("store poisoned".into()))?;
        let d = &self.durability;
        let id = d.applied.load(Ordering::Acquire) + 1;
        let record = encode_ops(&ops);
        let full = {
            // Locked before the append, so that a journaled commit always
            // reaches the overlay and its id is never handed out twice.
            let mut o = d.overlay()?;
            d.journal.append(id, &record)?;
            for (k, v) in ops {
                o.put(k, v.into());
            }
            d.applied.store(id, Ordering::Release);
            o.active_bytes() >= FLUSH_BYTES
        };
        if full && let Some(wake) = &self.flusher.wake {
            let _ = wake.try_send(());
        }
        Ok(())
    }

    /// Splits a raw entry record into the part before the encoded entry and
    /// the encoded entry, for forensic tools and tamper tests only.
    #[doc(hidden)]
    pub fn split_entry_record(v: &[u8]) -> Option<(&[u8], &[u8])> {
        entry_offset(v).map(|at| v.split_at(at))
    }

    /// The run of `kind` records of `inbox` that covers `cursor`: the first
    /// run ending at or after it, if it starts at or before it.
    fn run_covering(
        &self,
        kind: u8,
        inbox: &str,
        cursor: u64,
    ) -> Result<Option<sled::IVec>, StoreError> {
        let (lo, hi) = (
            key(kind, inbox, Some(cursor)),
            key(kind, inbox, Some(u64::MAX)),
        );
        let Some(kv) = self.durability.scan(&lo, Bound::Included(&hi)).next() else {
            return Ok(None);
        };
        let (_, v) = kv?;
        let first = v
            .get(..8)
            .ok_or_else(|| StoreError::Corrupt(format!("inbox {inbox}: short run")))?;
        Ok((u64_from(first)? <= cursor).then_some(v))
    }

    /// The last position of the last run of `kind` records of `inbox`.
    fn last_run_end(&self, kind: u8, inbox: &str) -> Result<u64, StoreError> {
        let (lo, hi) = (key(kind, inbox, Some(0)), key(kind, inbox, Some(u64::MAX)));
        let in_overlay = self.durability.overlay_read()?.last_in(&lo, &hi);
        let in_sled = match self.durability.tree.range(lo..=hi).next_back() {
            None => None,
            Some(kv) => Some(kv.map_err(db_err)?.0.to_vec()),
        };
        match in_overlay.max(in_sled) {
            None => Ok(0),
            Some(k) => Ok(split_key(&k)?.1.unwrap_or(0)),
        }
    }

    /// The underlying tree, for forensic tools and tamper tests only:
    /// writing through it bypasses every rule of the hub. Pending writes
    /// are flushed into it first, so it holds everything committed.
    #[doc(hidden)]
    pub fn raw_tree(&self) -> Result<&sled::Tree, StoreError> {
        self.durability.flush(true, Record::AtOnce)?;
        Ok(&self.durability.tree)
    }
}

impl Durability {
    /// sled flush, then fsync of the log file and of any new blob files.
    fn make_durable(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(db_err)?;
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
        let mut synced = self
            .synced_blobs
            .lock()
            .map_err(|_| StoreError::Database("blob sync state poisoned".into()))?;
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
    fn overlay(&self) -> Result<std::sync::RwLockWriteGuard<'_, Overlay>, StoreError> {
        self.overlay
            .write()
            .map_err(|_| StoreError::Database("store overlay poisoned".into()))
    }

    fn overlay_read(&self) -> Result<std::sync::RwLockReadGuard<'_, Overlay>, StoreError> {
        self.overlay
            .read()
            .map_err(|_| StoreError::Database("store overlay poisoned".into()))
    }

    /// The newest value of `key`: the overlay's, else sled's.
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        let frozen = match self.overlay_read()?.get(key) {
            Ok(v) => return Ok(Some(v)),
            Err(frozen) => frozen,
        };
        if let Some(v) = frozen.get(key) {
            return Ok(Some(v.clone()));
        }
        self.tree.get(key).map_err(db_err)
    }

    /// Keys from `lo` up to `hi`, ascending, newest values. The overlay is
    /// read before sled: a write a flush moves meanwhile is seen on one
    /// side or the other.
    fn scan<'a>(
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
            .map(|kv| kv.map_err(db_err));
        poisoned
            .into_iter()
            .chain(Newest::new(pending.into_iter().map(Ok), sled))
    }

    /// Keys starting with `[kind, 0]`.
    fn scan_kind(&self, kind: u8) -> impl Iterator<Item = Result<Kv, StoreError>> + use<'_> {
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
    fn flush(&self, merge: bool, record: Record) -> Result<(), StoreError> {
        let mut flushed = self
            .flushing
            .lock()
            .map_err(|_| StoreError::Database("store flush poisoned".into()))?;
        let frozen = {
            let mut o = self.overlay()?;
            o.freeze(self.applied.load(Ordering::Acquire))
        };
        if let Some(frozen) = &frozen {
            self.journal.sync()?;
            if merge {
                for (k, v) in merge_runs(&frozen.writes) {
                    self.tree.insert(k, v).map_err(db_err)?;
                }
            } else {
                for (k, v) in frozen.writes.iter() {
                    self.tree.insert(k.as_slice(), v.clone()).map_err(db_err)?;
                }
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

    /// Names `commit` as the last one sled holds (durable with the next sync).
    fn record(&self, commit: u64) -> Result<(), StoreError> {
        self.tree
            .insert(COMMIT_KEY, commit.to_be_bytes().to_vec())
            .map_err(db_err)?;
        Ok(())
    }
}

impl Flusher {
    fn start(durability: Arc<Durability>, every: Duration) -> Result<Self, StoreError> {
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("tongbao-flush".into())
            .spawn(move || {
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
                    if let Err(e) = durability.flush(true, record) {
                        tracing::warn!(error = %e, "background flush of the database failed");
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

/// One key and the value a commit writes under it.
type Write = (Vec<u8>, Vec<u8>);

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

impl Store for SledStore {
    fn load_registry(&self) -> Result<Option<Registry>, StoreError> {
        match self.durability.get(REGISTRY_KEY)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("registry: {e}"))),
        }
    }

    fn save_registry(&self, registry: &Registry) -> Result<(), StoreError> {
        let v = serde_json::to_vec(registry).map_err(|e| StoreError::Database(e.to_string()))?;
        self.durability
            .tree
            .insert(REGISTRY_KEY, v)
            .map_err(db_err)?;
        self.durability.make_durable()
    }

    fn channel_heads(&self) -> Result<BTreeMap<String, ChannelHead>, StoreError> {
        let mut out = BTreeMap::new();
        for kv in self.durability.scan_kind(CHANNEL_HEAD) {
            let (k, v) = kv?;
            let (name, _) = split_key(&k)?;
            if v.len() != 8 + HASH_LEN + 8 {
                return Err(StoreError::Corrupt(format!("head of channel {name}")));
            }
            out.insert(
                name,
                ChannelHead {
                    next_seq: u64_from(&v[..8])?,
                    last_leaf_hash: hash_from(&v[8..8 + HASH_LEN])?,
                    last_hub_micros: u64_from(&v[8 + HASH_LEN..])? as i64,
                },
            );
        }
        Ok(out)
    }

    fn inbox_heads(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut out = BTreeMap::new();
        for kv in self.durability.scan_kind(INBOX_HEAD) {
            let (k, v) = kv?;
            let (name, _) = split_key(&k)?;
            out.insert(name, u64_from(&v)?);
        }
        Ok(out)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.durability.journal.sync().map(|_| ())
    }

    fn apply(&self, entries: &[NewEntry]) -> Result<(), StoreError> {
        let mut ops: Vec<Write> = Vec::new();
        // Per inbox, the (cursor, seq, channel) this batch adds, ascending.
        let mut added: BTreeMap<&str, Vec<(u64, u64, &str)>> = BTreeMap::new();
        for e in entries {
            let value = entry_record(
                &e.leaf_hash,
                e.shared.cursors.iter().copied(),
                &e.shared.encoded,
            );
            ops.push((key(ENTRY, &e.channel, Some(e.seq)), value));

            let mut msg_key = key(MESSAGE, &e.channel, None);
            msg_key.push(0);
            msg_key.extend_from_slice(e.message_id.as_bytes());
            let mut rec = Vec::with_capacity(8 + HASH_LEN);
            rec.extend_from_slice(&e.seq.to_be_bytes());
            rec.extend_from_slice(&e.message_digest);
            ops.push((msg_key, rec));

            let mut head = Vec::with_capacity(8 + HASH_LEN + 8);
            head.extend_from_slice(&(e.seq + 1).to_be_bytes());
            head.extend_from_slice(&e.leaf_hash);
            head.extend_from_slice(&(e.hub_micros as u64).to_be_bytes());
            ops.push((key(CHANNEL_HEAD, &e.channel, None), head));

            let mut answered = e.answers.clone();
            answered.sort_unstable();
            answered.dedup();
            // A unit answers from its own inbox, named as its channel.
            for (first, last) in runs_of(&answered) {
                ops.push((
                    key(ANSWER, &e.channel, Some(last)),
                    answer_run(first, e.answer_kind, e.seq, e.hub_micros),
                ));
            }
            // The hashes a record adds (levels 0, 1, …), under the record.
            ops.push((
                key(TREE_HASH, &e.channel, Some(e.seq)),
                e.tree_hashes.concat(),
            ));
            for mechanism in &e.audit_scopes {
                let mut k = key(AUDIT_SCOPE, mechanism, Some(e.hub_micros as u64));
                k.push(0);
                k.extend_from_slice(&e.seq.to_be_bytes());
                k.extend_from_slice(e.channel.as_bytes());
                ops.push((k, Vec::new()));
            }
            for (inbox, cursor) in e.shared.deliveries() {
                added
                    .entry(inbox)
                    .or_default()
                    .push((cursor, e.seq, &e.channel));
            }
        }
        let mut positions = Vec::with_capacity(added.len());
        for (inbox, mut items) in added {
            items.sort_unstable_by_key(|(c, _, _)| *c);
            let cursors: Vec<u64> = items.iter().map(|(c, _, _)| *c).collect();
            let mut rest = items.as_slice();
            for (first, last) in runs_of(&cursors) {
                let (run, next) = rest.split_at(((last - first) as usize + 1).min(rest.len()));
                let run: Vec<(u64, &str)> = run.iter().map(|(_, s, c)| (*s, *c)).collect();
                ops.push((key(INBOX, inbox, Some(last)), inbox_run(first, &run)));
                rest = next;
            }
            if let Some(head) = cursors.last() {
                ops.push((key(INBOX_HEAD, inbox, None), head.to_be_bytes().to_vec()));
            }
            positions.push((inbox, items));
        }
        self.commit_ops(ops)?;
        if let Ok(mut recent) = self.recent.lock() {
            for (inbox, items) in &positions {
                recent.add_positions(inbox, items);
            }
            for e in entries {
                recent.add_entry(&e.channel, e.seq, e.shared.clone(), e.shared.encoded.len());
                let first = tongbao_proto::merkle::stored_hash_count(e.seq);
                for (i, h) in e.tree_hashes.iter().enumerate() {
                    recent.add_hash(&e.channel, first + i as u64, *h);
                }
            }
        }
        Ok(())
    }

    fn entry_shared(
        &self,
        channel: &str,
        seq: u64,
    ) -> Result<Option<Arc<StoredEntry>>, StoreError> {
        if let Some(e) = self.recent.lock().ok().and_then(|r| r.entry(channel, seq)) {
            return Ok(Some(e));
        }
        let Some(v) = self.durability.get(&key(ENTRY, channel, Some(seq)))? else {
            return Ok(None);
        };
        let shared = Arc::new(decode_entry(channel, seq, &v)?);
        if let Ok(mut r) = self.recent.lock() {
            r.add_entry(channel, seq, shared.clone(), v.len());
        }
        Ok(Some(shared))
    }

    fn entry(&self, channel: &str, seq: u64) -> Result<Option<StoredEntry>, StoreError> {
        Ok(self.entry_shared(channel, seq)?.map(Arc::unwrap_or_clone))
    }

    fn message(&self, sender: &str, message_id: &str) -> Result<Option<MessageRecord>, StoreError> {
        let mut k = key(MESSAGE, sender, None);
        k.push(0);
        k.extend_from_slice(message_id.as_bytes());
        let Some(v) = self.durability.get(&k)? else {
            return Ok(None);
        };
        if v.len() != 8 + HASH_LEN {
            return Err(StoreError::Corrupt(format!(
                "message record {sender}/{message_id}"
            )));
        }
        Ok(Some(MessageRecord {
            seq: u64_from(&v[..8])?,
            message_digest: hash_from(&v[8..])?,
        }))
    }

    fn answers(&self, inbox: &str, cursors: &[u64]) -> Result<Vec<Option<Answer>>, StoreError> {
        let mut out = vec![None; cursors.len()];
        let mut order: Vec<usize> = (0..cursors.len()).collect();
        order.sort_unstable_by_key(|&i| cursors[i]);
        let (Some(&lo), Some(&hi)) = (order.first(), order.last()) else {
            return Ok(out);
        };
        let (lo, hi) = (cursors[lo], cursors[hi]);
        // One forward scan over the runs that can cover [lo, hi].
        let mut next = order.into_iter().peekable();
        let (from, to) = (
            key(ANSWER, inbox, Some(lo)),
            key(ANSWER, inbox, Some(u64::MAX)),
        );
        for kv in self.durability.scan(&from, Bound::Included(&to)) {
            let (k, v) = kv?;
            let last = split_key(&k)?.1.unwrap_or(0);
            let first = u64_from(
                v.get(..8)
                    .ok_or_else(|| StoreError::Corrupt(format!("inbox {inbox}: short run")))?,
            )?;
            while let Some(&i) = next.peek() {
                if cursors[i] > last {
                    break;
                }
                if cursors[i] >= first {
                    out[i] = Some(decode_answer(&v)?);
                }
                next.next();
            }
            if next.peek().is_none() || first > hi {
                break;
            }
        }
        Ok(out)
    }

    fn mark_fetched(
        &self,
        inbox: &str,
        cursors: &[u64],
        hub_micros: i64,
    ) -> Result<(), StoreError> {
        // First serving wins; later ones leave the record alone. The lock
        // makes check-then-write atomic among the hub's readers, the only
        // writers of these records.
        let poisoned = || StoreError::Database("fetched marks poisoned".into());
        let slot = {
            let mut all = self.fetched_marks.lock().map_err(|_| poisoned())?;
            match all.get(inbox) {
                Some(slot) => slot.clone(),
                None => all.entry(inbox.to_string()).or_default().clone(),
            }
        };
        let mut slot = slot.lock().map_err(|_| poisoned())?;
        let mark = match *slot {
            Some(m) => m,
            None => self.last_run_end(FETCHED, inbox)?,
        };
        let mut fresh = Vec::with_capacity(cursors.len());
        for &c in cursors {
            // Below the mark only when a reader went back (or skipped ahead).
            if c > mark || self.run_covering(FETCHED, inbox, c)?.is_none() {
                fresh.push(c);
            }
        }
        fresh.sort_unstable();
        fresh.dedup();
        // Each run stands on its own, so no batch is needed: sled's batches
        // each write out its log buffer, plain inserts do not.
        for (first, last) in runs_of(&fresh) {
            let mut v = Vec::with_capacity(16);
            v.extend_from_slice(&first.to_be_bytes());
            v.extend_from_slice(&(hub_micros as u64).to_be_bytes());
            self.durability
                .overlay()?
                .put(key(FETCHED, inbox, Some(last)), v.into());
        }
        *slot = Some(fresh.last().copied().unwrap_or(0).max(mark));
        Ok(())
    }

    fn fetched(&self, inbox: &str, cursor: u64) -> Result<Option<i64>, StoreError> {
        self.run_covering(FETCHED, inbox, cursor)?
            .map(|v| fetched_at(&v, cursor).map(|m| m as i64))
            .transpose()
            .map_err(|()| StoreError::Corrupt(format!("inbox {inbox}: fetched run")))
    }

    fn audit_scope(
        &self,
        mechanism: &str,
        since: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<ScopedEntry>, StoreError> {
        let from = key(AUDIT_SCOPE, mechanism, Some(since.max(0) as u64));
        let to = key(AUDIT_SCOPE, mechanism, Some(until.max(0) as u64));
        let base = key(AUDIT_SCOPE, mechanism, None).len() + 1;
        let mut out = Vec::new();
        for kv in self
            .durability
            .scan(&from, Bound::Excluded(&to))
            .take(limit)
        {
            let (k, _) = kv?;
            // After the base: hub micros (8), 0, seq (8), channel.
            if k.len() < base + 17 {
                return Err(StoreError::Corrupt("audit index key".into()));
            }
            out.push(ScopedEntry {
                hub_micros: u64_from(&k[base..base + 8])? as i64,
                seq: u64_from(&k[base + 9..base + 17])?,
                channel: String::from_utf8_lossy(&k[base + 17..]).into_owned(),
            });
        }
        Ok(out)
    }

    fn stored_hashes(&self, channel: &str, indexes: &[u64]) -> Result<Vec<Hash>, StoreError> {
        let cached: Vec<Option<Hash>> = match self.recent.lock() {
            Ok(r) => indexes.iter().map(|i| r.hash(channel, *i)).collect(),
            Err(_) => vec![None; indexes.len()],
        };
        let mut read = Vec::new();
        let mut records: HashMap<u64, sled::IVec> = HashMap::new();
        let out = indexes
            .iter()
            .zip(cached)
            .map(|(i, c)| {
                if let Some(h) = c {
                    return Ok(h);
                }
                let missing = || {
                    StoreError::Corrupt(format!("channel {channel}: stored hash {i} is missing"))
                };
                // Hash (level, n) was added by record ((n + 1) << level) - 1.
                let (level, n) = tongbao_proto::merkle::split_stored_hash_index(*i);
                let seq = n
                    .checked_add(1)
                    .and_then(|m| m.checked_shl(level))
                    .and_then(|m| m.checked_sub(1))
                    .ok_or_else(missing)?;
                let v = match records.get(&seq) {
                    Some(v) => v.clone(),
                    None => {
                        let v = self
                            .durability
                            .get(&key(TREE_HASH, channel, Some(seq)))?
                            .ok_or_else(missing)?;
                        records.insert(seq, v.clone());
                        v
                    }
                };
                let at = level as usize * HASH_LEN;
                let h = hash_from(v.get(at..at + HASH_LEN).ok_or_else(missing)?)?;
                read.push((*i, h));
                Ok(h)
            })
            .collect();
        if !read.is_empty()
            && let Ok(mut r) = self.recent.lock()
        {
            for (i, h) in read {
                r.add_hash(channel, i, h);
            }
        }
        out
    }

    fn checkpoints(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let mut out = BTreeMap::new();
        for kv in self.durability.scan_kind(CHECKPOINT) {
            let (k, v) = kv?;
            let (name, _) = split_key(&k)?;
            out.insert(name, String::from_utf8_lossy(&v).into_owned());
        }
        Ok(out)
    }

    fn save_checkpoints(&self, notes: &[(&str, &str)]) -> Result<(), StoreError> {
        // One journaled commit for all of them, like any commit: a sled
        // flush per channel each second held the pushes' journal syncs up
        // behind its disk writes, and a journal sync per channel would
        // queue them behind one sync per channel. A sync returns once
        // everything journaled before it is durable, whichever thread's
        // sync wrote it.
        if notes.is_empty() {
            return Ok(());
        }
        self.commit_ops(
            notes
                .iter()
                .map(|(channel, note)| (key(CHECKPOINT, channel, None), note.as_bytes().to_vec()))
                .collect(),
        )?;
        self.sync()
    }

    fn inbox_page(
        &self,
        inbox: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let Some(start) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        if let Some(page) = self
            .recent
            .lock()
            .ok()
            .and_then(|r| r.inbox_page(inbox, start, limit))
        {
            return Ok(page);
        }
        let mut out = Vec::new();
        // The first run ending at or after `start` holds it (runs are
        // contiguous); later runs follow in order. A gap means records were
        // removed: say so rather than skip positions.
        let mut expected = start;
        let (from, to) = (
            key(INBOX, inbox, Some(start)),
            key(INBOX, inbox, Some(u64::MAX)),
        );
        for kv in self.durability.scan(&from, Bound::Included(&to)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let (_, last) = split_key(&k)?;
            let items = decode_inbox_run(inbox, last.unwrap_or(0), &v)?;
            if let Some(first) = items.first().map(|i| i.cursor)
                && first > expected
            {
                return Err(StoreError::Corrupt(format!(
                    "inbox {inbox}: positions {expected}..={} are missing",
                    first - 1
                )));
            }
            // Positions an earlier run gave already are skipped: a flush
            // merging runs, or one a crash cut short, can leave two runs
            // of different extent that hold the same positions.
            let from = expected;
            expected = expected.max(last.unwrap_or(0).saturating_add(1));
            let room = limit - out.len();
            out.extend(items.into_iter().filter(|i| i.cursor >= from).take(room));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(channel: &str, seq: u64, inboxes: &[(&str, u64)]) -> NewEntry {
        let e = pb::Entry {
            channel: channel.into(),
            seq,
            recipients: inboxes.iter().map(|(i, _)| (*i).to_string()).collect(),
            ..Default::default()
        };
        NewEntry {
            channel: channel.into(),
            seq,
            message_id: format!("m{seq}"),
            message_digest: [seq as u8; HASH_LEN],
            leaf_hash: [(seq as u8).wrapping_add(100); HASH_LEN],
            hub_micros: seq as i64,
            shared: Arc::new(StoredEntry {
                encoded: e.encode_to_vec().into(),
                entry: e.clone(),
                leaf_hash: [(seq as u8).wrapping_add(100); HASH_LEN],
                cursors: inboxes.iter().map(|(_, c)| *c).collect(),
            }),
            answers: Vec::new(),
            answer_kind: AnswerKind::Acknowledged,
            audit_scopes: Vec::new(),
            tree_hashes: vec![[(seq as u8).wrapping_add(100); HASH_LEN]],
        }
    }

    #[test]
    fn commits_survive_reopen_with_heads_and_pages() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let s = SledStore::open(dir.path(), true)?;
            s.commit(&[
                entry("tax", 0, &[("finance", 1)]),
                entry("tax", 1, &[("finance", 2), ("office:x", 1)]),
            ])?;
            s.commit(&[entry("pbc", 0, &[("finance", 3)])])?;
        }
        let s = SledStore::open(dir.path(), true)?;
        let heads = s.channel_heads()?;
        assert_eq!(
            heads.get("tax").map(|h| (h.next_seq, h.last_leaf_hash[0])),
            Some((2, 101))
        );
        assert_eq!(s.inbox_heads()?.get("finance"), Some(&3));
        let page = s.inbox_page("finance", 1, 10)?;
        let got: Vec<_> = page
            .iter()
            .map(|i| (i.cursor, i.channel.as_str(), i.seq))
            .collect();
        assert_eq!(got, [(2, "tax", 1), (3, "pbc", 0)]);
        assert_eq!(s.inbox_page("finance", u64::MAX, 10)?, vec![]);
        assert_eq!(s.message("tax", "m1")?.map(|r| r.seq), Some(1));
        assert_eq!(s.message("tax", "m9")?, None);
        assert_eq!(s.entry("tax", 1)?.map(|e| e.leaf_hash[0]), Some(101));
        assert!(s.entry("tax", 2)?.is_none());
        Ok(())
    }

    /// A data directory as a crash leaves it: sled flushed after the first
    /// commit (tax 0 to finance 1) and no later, the journal holding the
    /// commits `later` made after it. Returns the crashed directory.
    fn crashed_after_first_commit(
        later: impl FnOnce(&SledStore) -> Result<(), StoreError>,
    ) -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
        let live = tempfile::tempdir()?;
        let crashed = tempfile::tempdir()?;
        {
            let s = SledStore::open(live.path(), true)?;
            s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
        }
        crate::store::copy_data_dir(live.path(), crashed.path())?;
        later(&SledStore::open(live.path(), true)?)?;
        let journal = crashed.path().join("journal");
        std::fs::remove_dir_all(&journal)?;
        crate::store::copy_data_dir(&live.path().join("journal"), &journal)?;
        Ok(crashed)
    }

    #[test]
    fn commits_sled_had_not_flushed_are_replayed_from_the_journal()
    -> Result<(), Box<dyn std::error::Error>> {
        let crashed = crashed_after_first_commit(|s| {
            s.commit(&[
                entry("tax", 1, &[("finance", 2), ("pbc", 1)]),
                entry("tax", 2, &[("finance", 3)]),
            ])?;
            s.commit(&[entry("pbc", 0, &[("finance", 4)])])
        })?;
        let before = SledStore::open(crashed.path(), true)?;
        let s = &before;
        assert_eq!(s.channel_heads()?.get("tax").map(|h| h.next_seq), Some(3));
        assert_eq!(s.channel_heads()?.get("pbc").map(|h| h.next_seq), Some(1));
        assert_eq!(s.inbox_heads()?.get("finance"), Some(&4));
        let page: Vec<_> = s
            .inbox_page("finance", 0, 10)?
            .iter()
            .map(|i| (i.cursor, i.channel.clone(), i.seq))
            .collect();
        assert_eq!(
            page,
            [
                (1, "tax".to_string(), 0),
                (2, "tax".to_string(), 1),
                (3, "tax".to_string(), 2),
                (4, "pbc".to_string(), 0)
            ]
        );
        assert_eq!(s.message("tax", "m2")?.map(|r| r.seq), Some(2));
        assert_eq!(s.entry("tax", 2)?.map(|e| e.leaf_hash[0]), Some(102));
        let leaf_of_2 = tongbao_proto::merkle::stored_hash_count(2);
        assert_eq!(s.stored_hashes("tax", &[leaf_of_2])?, vec![[102; HASH_LEN]]);
        // The next commit follows the replayed ones, and all survive again.
        s.commit(&[entry("tax", 3, &[("finance", 5)])])?;
        drop(before);
        let s = SledStore::open(crashed.path(), true)?;
        assert_eq!(s.channel_heads()?.get("tax").map(|h| h.next_seq), Some(4));
        assert_eq!(s.inbox_page("finance", 0, 10)?.len(), 5);
        Ok(())
    }

    #[test]
    fn a_saved_checkpoint_is_in_the_journal() -> Result<(), Box<dyn std::error::Error>> {
        // Saved, then the hub dies before sled is flushed again.
        let crashed = crashed_after_first_commit(|s| {
            s.save_checkpoints(&[("tax", "tax checkpoint 1"), ("pbc", "pbc checkpoint 1")])
        })?;
        let s = SledStore::open(crashed.path(), true)?;
        let saved = s.checkpoints()?;
        assert_eq!(
            saved.get("tax").map(String::as_str),
            Some("tax checkpoint 1")
        );
        assert_eq!(
            saved.get("pbc").map(String::as_str),
            Some("pbc checkpoint 1")
        );
        Ok(())
    }

    #[test]
    fn a_flush_cut_short_leaves_no_position_twice() -> Result<(), Box<dyn std::error::Error>> {
        let crashed = crashed_after_first_commit(|s| {
            for seq in 1..4u64 {
                s.commit(&[entry("tax", seq, &[("finance", seq + 1)])])?;
            }
            Ok(())
        })?;
        // The crash came mid-flush: positions 2 and 3 merged into one run
        // had reached sled, the record of the flushed commit had not.
        {
            let db = sled::Config::new().path(crashed.path()).open()?;
            db.open_tree("exchange")?.insert(
                key(INBOX, "finance", Some(3)),
                inbox_run(2, &[(1, "tax"), (2, "tax")]),
            )?;
            db.flush()?;
        }
        let s = SledStore::open(crashed.path(), true)?;
        let cursors = |s: &SledStore| -> Result<Vec<u64>, StoreError> {
            Ok(s.inbox_page("finance", 0, 10)?
                .iter()
                .map(|i| i.cursor)
                .collect())
        };
        assert_eq!(cursors(&s)?, [1, 2, 3, 4]);
        // The replay wrote each commit's run back under its own key: the
        // key the merged run had holds position 3 alone again.
        assert_eq!(
            s.raw_tree()?.get(key(INBOX, "finance", Some(3)))?,
            Some(inbox_run(3, &[(2, "tax")]).into())
        );
        // Runs of different extent over the same positions (as a read
        // beside a merging flush may meet them) still give each once.
        s.raw_tree()?.insert(
            key(INBOX, "finance", Some(3)),
            inbox_run(1, &[(0, "tax"), (1, "tax"), (2, "tax")]),
        )?;
        assert_eq!(cursors(&s)?, [1, 2, 3, 4]);
        assert_eq!(s.inbox_page("finance", 2, 10)?.len(), 2);
        Ok(())
    }

    #[test]
    fn a_flushed_commit_not_yet_recorded_is_replayed_over_what_sled_holds()
    -> Result<(), Box<dyn std::error::Error>> {
        let live = tempfile::tempdir()?;
        let crashed = tempfile::tempdir()?;
        let s = SledStore::open_flushing_every(live.path(), true, Duration::from_secs(3600))?;
        let recorded = |dir: &Path| -> Result<u64, Box<dyn std::error::Error>> {
            let db = sled::Config::new().path(dir).open()?;
            let v = db.open_tree("exchange")?.get(COMMIT_KEY)?;
            Ok(v.map(|v| u64_from(&v)).transpose()?.unwrap_or(0))
        };
        for seq in 0..3u64 {
            s.commit(&[entry("tax", seq, &[("finance", seq + 1)])])?;
        }
        let d = &s.durability;
        d.flush(true, Record::WithNextFlush)?;
        let first = d.applied.load(Ordering::Acquire);
        s.commit(&[entry("tax", 3, &[("finance", 4)])])?;
        // The second flush records the first's commit beside its own writes.
        d.flush(true, Record::WithNextFlush)?;
        // The hub dies here: sled holds all four commits, merged into runs,
        // and names only the first three.
        crate::store::copy_data_dir(live.path(), crashed.path())?;
        drop(s);
        assert_eq!(recorded(crashed.path())?, first);
        assert_eq!(
            recorded(live.path())?,
            first + 1,
            "a closing store records all"
        );
        let s = SledStore::open(crashed.path(), true)?;
        let page: Vec<_> = s
            .inbox_page("finance", 0, 10)?
            .iter()
            .map(|i| (i.cursor, i.seq))
            .collect();
        assert_eq!(page, [(1, 0), (2, 1), (3, 2), (4, 3)]);
        assert_eq!(s.channel_heads()?.get("tax").map(|h| h.next_seq), Some(4));
        assert_eq!(s.inbox_heads()?.get("finance"), Some(&4));
        drop(s);
        assert_eq!(recorded(crashed.path())?, first + 1);
        Ok(())
    }

    #[test]
    fn runs_of_many_commits_become_one_key_when_flushed() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        // No background flush before the one this test asks for.
        let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
        for seq in 0..5u64 {
            s.commit(&[entry("tax", seq, &[("finance", seq + 1), ("pbc", seq + 1)])])?;
        }
        s.mark_fetched("finance", &[1, 2], 10)?;
        s.mark_fetched("finance", &[3], 20)?;
        s.mark_fetched("finance", &[4, 5], 30)?;
        s.commit(&[entry("tax", 5, &[("finance", 6)])])?;
        s.commit(&[entry("tax", 6, &[("finance", 7)])])?;
        // Position 6 is skipped: fetched runs on either side stay apart.
        s.mark_fetched("finance", &[7], 40)?;
        let keys_of = |tree: &sled::Tree, kind: u8, inbox: &str| {
            tree.scan_prefix(key(kind, inbox, Some(0)).split_at(2 + inbox.len() + 1).0)
                .count()
        };
        let check = |s: &SledStore| -> Result<(), Box<dyn std::error::Error>> {
            let page: Vec<(u64, u64)> = s
                .inbox_page("finance", 0, 7)?
                .iter()
                .map(|i| (i.cursor, i.seq))
                .collect();
            assert_eq!(page, (1..=7).map(|c| (c, c - 1)).collect::<Vec<_>>());
            assert_eq!(s.inbox_page("finance", 3, 2)?.len(), 2);
            assert_eq!(s.inbox_page("pbc", 0, 100)?.len(), 5);
            let times: Vec<Option<i64>> = (1..=7)
                .map(|c| s.fetched("finance", c))
                .collect::<Result<_, _>>()?;
            assert_eq!(
                times,
                [
                    Some(10),
                    Some(10),
                    Some(20),
                    Some(30),
                    Some(30),
                    None,
                    Some(40)
                ]
            );
            Ok(())
        };
        check(&s)?;
        assert_eq!(s.fetched("finance", 8)?, None);
        let tree = s.raw_tree()?;
        assert_eq!(
            keys_of(tree, INBOX, "finance"),
            1,
            "seven commits, one inbox run"
        );
        assert_eq!(keys_of(tree, INBOX, "pbc"), 1);
        assert_eq!(
            keys_of(tree, FETCHED, "finance"),
            2,
            "split where position 6 is missing"
        );
        check(&s)?;
        // A later page continues after the merged runs.
        s.commit(&[entry("tax", 7, &[("finance", 8)])])?;
        s.mark_fetched("finance", &[8], 50)?;
        assert_eq!(s.fetched("finance", 8)?, Some(50));
        drop(s);
        let s = SledStore::open(dir.path(), true)?;
        check(&s)?;
        assert_eq!(s.inbox_page("finance", 7, 10)?.len(), 1);
        assert_eq!(s.fetched("finance", 8)?, Some(50));
        Ok(())
    }

    #[test]
    fn an_inverted_audit_window_holds_nothing() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
        let mut e = entry("tax", 0, &[("finance", 1)]);
        e.hub_micros = 1_500;
        e.audit_scopes = vec!["fund".into()];
        s.commit(&[e])?;
        // Once from the overlay, once from sled.
        for _ in 0..2 {
            assert_eq!(s.audit_scope("fund", 1_000, 2_000, 10)?.len(), 1);
            assert!(s.audit_scope("fund", 2_000, 1_000, 10)?.is_empty());
            assert!(s.audit_scope("fund", 1_500, 1_500, 10)?.is_empty());
            s.raw_tree()?;
        }
        Ok(())
    }

    #[test]
    fn a_garbled_journal_record_is_refused_at_start() -> Result<(), Box<dyn std::error::Error>> {
        let crashed = crashed_after_first_commit(|s| {
            s.commit(&[entry("tax", 1, &[("finance", 2)])])?;
            s.commit(&[entry("tax", 2, &[("finance", 3)])])
        })?;
        let journal = crashed.path().join("journal");
        // A record whose checksum holds but whose contents do not decode
        // (written by something else): refused, not half applied.
        let file = std::fs::read_dir(&journal)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .max()
            .ok_or("no journal file")?;
        let mut bytes = std::fs::read(&file)?;
        let mut forged = Vec::new();
        super::super::journal::encode_record(&mut forged, 4, &[9, 0, 0, 0, 1]);
        bytes.extend_from_slice(&forged);
        std::fs::write(&file, &bytes)?;
        match SledStore::open(crashed.path(), true) {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("journal record"), "{m}"),
            other => panic!("expected a corrupt journal, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn first_serving_wins_and_fresh_entries_read_back_alike()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let s = SledStore::open(dir.path(), false)?;
        s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
        s.mark_fetched("finance", &[1], 10)?;
        s.mark_fetched("finance", &[1], 20)?;
        assert_eq!(s.fetched("finance", 1)?, Some(10));
        assert_eq!(s.fetched("finance", 2)?, None);
        // From memory (just committed) and from disk (after reopening): the same.
        let cached = s
            .entry("tax", 0)?
            .map(|e| (e.entry, e.leaf_hash, e.cursors));
        drop(s);
        let s = SledStore::open(dir.path(), true)?;
        assert_eq!(
            s.entry("tax", 0)?
                .map(|e| (e.entry, e.leaf_hash, e.cursors)),
            cached
        );
        assert_eq!(s.fetched("finance", 1)?, Some(10));
        assert_eq!(s.stored_hashes("tax", &[0])?, vec![[100; HASH_LEN]]);
        Ok(())
    }

    #[test]
    fn inbox_names_that_prefix_each_other_stay_apart() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let s = SledStore::open(dir.path(), false)?;
        s.commit(&[entry("tax", 0, &[("fin", 1), ("finance", 1)])])?;
        assert_eq!(s.inbox_page("fin", 0, 10)?.len(), 1);
        assert_eq!(s.inbox_page("finance", 0, 10)?.len(), 1);
        Ok(())
    }

    /// Pages start anywhere inside a commit's run and stop at the limit.
    #[test]
    fn pages_cut_through_runs_of_several_commits() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let s = SledStore::open(dir.path(), false)?;
        s.commit(&[
            entry("tax", 0, &[("finance", 1)]),
            entry("tax", 1, &[("finance", 2)]),
            entry("pbc", 0, &[("finance", 3)]),
        ])?;
        s.commit(&[
            entry("tax", 2, &[("finance", 4)]),
            entry("tax", 3, &[("finance", 5)]),
        ])?;
        for after in 0..6u64 {
            for limit in 1..7usize {
                let got: Vec<u64> = s
                    .inbox_page("finance", after, limit)?
                    .iter()
                    .map(|i| i.cursor)
                    .collect();
                let want: Vec<u64> = (after + 1..=5).take(limit).collect();
                assert_eq!(got, want, "after {after}, limit {limit}");
            }
        }
        let items = s.inbox_page("finance", 2, 2)?;
        assert_eq!(
            items
                .iter()
                .map(|i| (i.channel.as_str(), i.seq))
                .collect::<Vec<_>>(),
            [("pbc", 0), ("tax", 2)]
        );
        Ok(())
    }

    /// Answers and fetched marks cover exactly the positions recorded, and
    /// a later serving never moves the first one.
    #[test]
    fn answer_and_fetched_runs_cover_exactly_their_positions()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let s = SledStore::open(dir.path(), false)?;
        let mut receipt = entry("finance", 0, &[]);
        receipt.answers = vec![5, 2, 3, 7];
        receipt.hub_micros = 42;
        s.commit(&[receipt])?;
        for (cursor, answered) in [
            (1, false),
            (2, true),
            (3, true),
            (4, false),
            (5, true),
            (6, false),
            (7, true),
            (8, false),
        ] {
            let a = s.answer("finance", cursor)?;
            assert_eq!(a.is_some(), answered, "cursor {cursor}");
            if let Some(a) = a {
                assert_eq!(
                    (a.seq, a.hub_micros, a.kind),
                    (0, 42, AnswerKind::Acknowledged)
                );
            }
        }
        assert_eq!(s.answer("fin", 2)?, None);
        // In bulk, in any order, the same outcomes.
        let asked = [8, 7, 1, 2, 5, 3, 3, 4, 6];
        let bulk: Vec<bool> = s
            .answers("finance", &asked)?
            .iter()
            .map(Option::is_some)
            .collect();
        assert_eq!(
            bulk,
            [false, true, false, true, true, true, true, false, false]
        );
        assert!(s.answers("finance", &[])?.is_empty());
        // Served 3..5, then 1..6 again after a reconnect, then 9 (skipping).
        s.mark_fetched("finance", &[3, 4, 5], 10)?;
        s.mark_fetched("finance", &[1, 2, 3, 4, 5, 6], 20)?;
        s.mark_fetched("finance", &[9], 30)?;
        s.mark_fetched("finance", &[7, 8], 40)?;
        let got: Vec<Option<i64>> = (1..=10)
            .map(|c| s.fetched("finance", c))
            .collect::<Result<_, _>>()?;
        assert_eq!(
            got,
            [
                Some(20),
                Some(20),
                Some(10),
                Some(10),
                Some(10),
                Some(20),
                Some(40),
                Some(40),
                Some(30),
                None
            ]
        );
        Ok(())
    }

    #[test]
    fn data_in_another_format_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let s = SledStore::open(dir.path(), true)?;
            s.raw_tree()?.insert(FORMAT_KEY, b"1".as_slice())?;
            s.raw_tree()?.flush()?;
        }
        match SledStore::open(dir.path(), true) {
            Err(StoreError::Format(m)) => assert!(m.contains("format 1"), "{m}"),
            other => return Err(format!("expected refusal, got {other:?}").into()),
        }
        Ok(())
    }

    /// Many small commits to several inboxes: every position is found from
    /// every starting point, whatever node boundaries the runs fall on.
    #[test]
    fn every_position_is_found_among_many_small_runs() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let s = SledStore::open(dir.path(), false)?;
        let inboxes = ["finance", "fin", "tax", "political-legal"];
        let mut next = [0u64; 4];
        let mut seq = 0;
        let mut marked = 0;
        for round in 0..1500u64 {
            let mut batch = Vec::new();
            for _ in 0..(round % 3 + 1) {
                let mut to = Vec::new();
                for (i, inbox) in inboxes.iter().enumerate() {
                    if !(seq + i as u64).is_multiple_of(5) {
                        next[i] += 1;
                        to.push((*inbox, next[i]));
                    }
                }
                batch.push(entry("pbc", seq, &to));
                seq += 1;
            }
            s.commit(&batch)?;
            let served: Vec<u64> = (marked + 1..=next[0]).collect();
            s.mark_fetched("finance", &served, round as i64)?;
            marked = next[0];
        }
        for (i, inbox) in inboxes.iter().enumerate() {
            for after in 0..next[i] {
                let page = s.inbox_page(inbox, after, 2)?;
                let got: Vec<u64> = page.iter().map(|p| p.cursor).collect();
                let want: Vec<u64> = (after + 1..=next[i]).take(2).collect();
                assert_eq!(got, want, "{inbox} after {after}");
            }
        }
        for c in 1..=next[0] {
            assert!(s.fetched("finance", c)?.is_some(), "fetched {c}");
        }
        Ok(())
    }

    /// A reader following an inbox while commits and fetched marks keep
    /// landing sees every position once, in order, as subscribers do. (With
    /// runs keyed by their first position, found by iterating backwards,
    /// sled 0.34 now and then returned an earlier run under concurrent
    /// writes and a subscriber skipped a run.)
    #[test]
    fn a_reader_following_an_inbox_during_commits_misses_nothing()
    -> Result<(), Box<dyn std::error::Error>> {
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir()?;
        let s = Arc::new(SledStore::open(dir.path(), false)?);
        let head = Arc::new(AtomicU64::new(0));
        const LAST: u64 = 10_000;
        let writer = {
            let (s, head) = (s.clone(), head.clone());
            std::thread::spawn(move || -> Result<(), StoreError> {
                let mut cursor = 0;
                let mut seq = 0;
                while cursor < LAST {
                    let n = (seq % 3 + 1).min(LAST - cursor);
                    let batch: Vec<NewEntry> = (0..n)
                        .map(|i| {
                            entry(
                                "pbc",
                                seq + i,
                                &[("finance", cursor + i + 1), ("tax", cursor + i + 1)],
                            )
                        })
                        .collect();
                    s.apply(&batch)?;
                    seq += n;
                    cursor += n;
                    head.store(cursor, Ordering::Release);
                }
                Ok(())
            })
        };
        let marker = {
            let (s, head) = (s.clone(), head.clone());
            std::thread::spawn(move || -> Result<(), StoreError> {
                let mut marked = 0;
                while marked < LAST {
                    let to = head.load(Ordering::Acquire);
                    let served: Vec<u64> = (marked + 1..=to).collect();
                    s.mark_fetched("tax", &served, 1)?;
                    marked = to;
                }
                Ok(())
            })
        };
        let mut cursor = 0;
        while cursor < LAST {
            let durable = head.load(Ordering::Acquire);
            for item in s.inbox_page("finance", cursor, 128)? {
                if item.cursor > durable {
                    break;
                }
                assert_eq!(item.cursor, cursor + 1, "after {cursor}");
                // Position c holds entry c - 1 of pbc, as written.
                assert_eq!((item.channel.as_str(), item.seq), ("pbc", item.cursor - 1));
                cursor = item.cursor;
            }
        }
        writer.join().map_err(|_| "writer panicked")??;
        marker.join().map_err(|_| "marker panicked")??;
        Ok(())
    }

    /// Each record's Merkle hashes are kept under the record; every stored
    /// hash index finds its own after a restart (no cache).
    #[test]
    fn stored_hashes_are_found_under_their_records() -> Result<(), Box<dyn std::error::Error>> {
        use tongbao_proto::merkle::{split_stored_hash_index, stored_hash_count};
        let dir = tempfile::tempdir()?;
        {
            let s = SledStore::open(dir.path(), true)?;
            let batch: Vec<NewEntry> = (0..13u64)
                .map(|seq| {
                    let mut e = entry("tax", seq, &[]);
                    let k = stored_hash_count(seq + 1) - stored_hash_count(seq);
                    e.tree_hashes = (0..k).map(|l| [(seq * 10 + l) as u8; HASH_LEN]).collect();
                    e
                })
                .collect();
            s.commit(&batch)?;
        }
        let s = SledStore::open(dir.path(), true)?;
        let all: Vec<u64> = (0..stored_hash_count(13)).rev().collect();
        let got = s.stored_hashes("tax", &all)?;
        for (i, h) in all.iter().zip(got) {
            let (level, n) = split_stored_hash_index(*i);
            let seq = ((n + 1) << level) - 1;
            assert_eq!(
                h,
                [(seq * 10 + u64::from(level)) as u8; HASH_LEN],
                "index {i}"
            );
        }
        assert!(s.stored_hashes("tax", &[stored_hash_count(13)]).is_err());
        Ok(())
    }

    /// A removed inbox run is reported, not skipped.
    #[test]
    fn pages_from_the_latest_positions_in_memory_match_the_database()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let total = INBOX_CACHE_LEN as u64 + 600;
        let pages_of = |s: &SledStore| -> Result<Vec<Vec<InboxItem>>, StoreError> {
            let mut pages = Vec::new();
            for after in [0, 1, 500, 599, 600, 601, total - 100, total - 1, total] {
                pages.push(s.inbox_page("finance", after, 300)?);
            }
            pages.push(s.inbox_page("pbc", total / 3 - 5, 300)?);
            Ok(pages)
        };
        let live = {
            let s = SledStore::open(dir.path(), false)?;
            let mut seq = 0;
            // Commits of 1 to 7 entries, some to another inbox too.
            while seq < total {
                let batch: Vec<NewEntry> = (seq..(seq + 1 + seq % 7).min(total))
                    .map(|q| {
                        let mut to = vec![("finance", q + 1)];
                        if q % 3 == 0 {
                            to.push(("pbc", q / 3 + 1));
                        }
                        entry("tax", q, &to)
                    })
                    .collect();
                seq += batch.len() as u64;
                s.commit(&batch)?;
            }
            pages_of(&s)?
        };
        // Reopened: nothing in memory, every page read from the database.
        let read = pages_of(&SledStore::open(dir.path(), false)?)?;
        let cursors = |pages: &[Vec<InboxItem>]| -> Vec<Vec<(u64, String, u64)>> {
            pages
                .iter()
                .map(|p| {
                    p.iter()
                        .map(|i| (i.cursor, i.channel.clone(), i.seq))
                        .collect()
                })
                .collect()
        };
        assert_eq!(cursors(&live), cursors(&read));
        // The pages are what was committed: position p holds seq p - 1.
        assert_eq!(live[3].first().map(|i| (i.cursor, i.seq)), Some((600, 599)));
        assert_eq!(live[3].len(), 300);
        assert_eq!(live[7].len(), 1);
        assert!(live[8].is_empty());
        Ok(())
    }

    #[test]
    fn a_removed_inbox_run_is_reported() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let s = SledStore::open(dir.path(), false)?;
        // Flushed one commit at a time, so that each is a run of its own.
        s.commit(&[
            entry("tax", 0, &[("finance", 1)]),
            entry("tax", 1, &[("finance", 2)]),
        ])?;
        s.raw_tree()?;
        s.commit(&[entry("tax", 2, &[("finance", 3)])])?;
        s.raw_tree()?;
        s.commit(&[entry("tax", 3, &[("finance", 4)])])?;
        s.raw_tree()?
            .remove(key(INBOX, "finance", Some(3)))?
            .ok_or("no run ends at position 3")?;
        s.raw_tree()?.flush()?;
        // The running store still serves what it committed from memory;
        // the next start reads what the disk holds.
        assert_eq!(s.inbox_page("finance", 0, 10)?.len(), 4);
        drop(s);
        let s = SledStore::open(dir.path(), false)?;
        for after in [0, 1, 2] {
            match s.inbox_page("finance", after, 10) {
                Err(StoreError::Corrupt(m)) => assert!(m.contains("positions"), "{m}"),
                other => return Err(format!("after {after}: expected a gap, got {other:?}").into()),
            }
        }
        assert_eq!(s.inbox_page("finance", 3, 10)?.len(), 1);
        Ok(())
    }
}
