//! The embedded default store, on sled 0.34: the [`Store`] contract over
//! the record layout of [`super::codec`], the commit path of
//! [`super::durability`], the entry segments of [`super::segments`] and
//! the cache of [`super::recent`].

use super::audit_index::{Row, audit_key, audit_range};
use super::codec::{
    ANSWER, CHANNEL_HEAD, CHECKPOINT, ENTRY, FETCHED, INBOX, INBOX_HEAD, REGISTRY_KEY, TREE_HASH,
    answer_run, decode_answer, decode_inbox_window, fetched_at, hash_from, inbox_run, key, runs_of,
    sized_runs, split_key, stored_hash_place, u64_from,
};
use super::durability::{Durability, FLUSH_EVERY, Flusher, Record, Write};
use super::entry_record::{decode_entry, entry_offset};
use super::recent::Recent;
use super::segments::Appended;
use super::{
    Answer, ChannelHead, InboxItem, MessageRecord, NewEntry, ScopedEntry, Store, StoreError,
    StoredEntry,
};
use crate::fatal;
use lookup::{entry_place, read_entry_record, read_tree_hashes, rewrite_places};
use message_ids::{message_key, message_value};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tongbao_proto::{HASH_LEN, Hash};

/// Free space kept on the data disk unless the hub's config says
/// otherwise (`[hub] min_free_mib`).
pub const DEFAULT_RESERVE: u64 = 64 << 20;

/// The recent-entries cache's lock, as a poisoned one is reported.
const RECENT: &str = "recent entries cache";

/// sled-backed [`Store`].
pub struct SledStore {
    durability: Arc<Durability>,
    recent: Mutex<Recent>,
    /// The highest inbox position marked fetched, by inbox (loaded on first
    /// use). Each inbox's lock serialises its "fetched" marks so that the
    /// first serving wins, without one inbox's readers waiting for
    /// another's; positions above the mark need no lookup.
    fetched_marks: Mutex<HashMap<String, Arc<Mutex<Option<u64>>>>>,
    flusher: Flusher,
    /// The access log, in files of its own beside sled (see `access_files`).
    access: super::access_files::AccessFiles,
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.flusher.stop();
        // After a failed write (a full disk), sled's own flush on close can
        // wait forever. The database is left as a crash leaves it, which
        // the journal makes safe: the next start replays it.
        if self.durability.journal.is_broken() {
            tracing::warn!(
                "storage failed earlier: the database is closed without its final flush; \
                 the next start replays the journal"
            );
            // Its merges stop first, so that none writes after a reopen;
            // a disk that holds a merge's sync longer is left to it.
            if !self
                .durability
                .messages
                .stop_merges_within(Some(std::time::Duration::from_secs(10)))
            {
                tracing::warn!(
                    "a message id merge did not stop within 10 s of a storage failure; \
                     restart the hub before anything reopens its data directory"
                );
            }
            std::mem::forget(Arc::clone(&self.durability));
            return;
        }
        // The last flush made sled hold every commit: the journal's copy
        // of them goes (a failure only leaves it to the next start).
        if let Err(e) = self.durability.close_journal() {
            tracing::warn!(error = %e, "the journal is kept for the next start");
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

impl SledStore {
    /// The access log's files (tests of what the writer does to them).
    #[cfg(test)]
    pub(crate) fn access_files(&self) -> &super::access_files::AccessFiles {
        &self.access
    }

    /// Opens (or creates) the database in `dir`. With `fsync` false, commits
    /// survive a process crash but not a power loss (benchmarks only).
    pub fn open(dir: &Path, fsync: bool) -> Result<Self, StoreError> {
        Self::open_keeping_free(dir, fsync, DEFAULT_RESERVE)
    }

    /// [`SledStore::open`], keeping `reserve` bytes free on the data disk:
    /// below that, writes stop and reads go on (0: no reserve).
    pub fn open_keeping_free(dir: &Path, fsync: bool, reserve: u64) -> Result<Self, StoreError> {
        let durability = Durability::open(dir, fsync, reserve)?;
        Self::with_flusher(durability, FLUSH_EVERY, fsync)
    }

    /// [`SledStore::open`] with the background flush's period given (tests
    /// that count sled keys flush when they choose).
    #[cfg(test)]
    fn open_flushing_every(dir: &Path, fsync: bool, every: Duration) -> Result<Self, StoreError> {
        Self::with_flusher(Durability::open(dir, fsync, DEFAULT_RESERVE)?, every, fsync)
    }

    /// Upgrades an older storage format in place, then starts the flush;
    /// refuses a message id index that lacks its newest records.
    fn with_flusher(
        durability: Arc<Durability>,
        every: Duration,
        fsync: bool,
    ) -> Result<Self, StoreError> {
        upgrade::upgrade(&durability)?;
        let flusher = Flusher::start(durability.clone(), every)?;
        let store = Self {
            access: super::access_files::AccessFiles::new(&durability.dir, fsync),
            durability,
            recent: Mutex::new(Recent::default()),
            fetched_marks: Mutex::new(HashMap::new()),
            flusher,
        };
        store.check_newest_message_ids()?;
        Ok(store)
    }

    /// Queues one commit's writes in the journal and applies them to the
    /// overlay, where reads see them at once.
    fn commit_ops(&self, ops: Vec<Write>) -> Result<(), StoreError> {
        if self.durability.commit(ops)? {
            self.flusher.wake();
        }
        Ok(())
    }

    /// Splits a raw entry record as [`SledStore::raw_entry_record`] gives
    /// it into the part before the encoded entry and the encoded entry, for
    /// forensic tools and tamper tests only. None for a record taken from
    /// the segments that names a recipient set (format 7).
    #[doc(hidden)]
    pub fn split_entry_record(v: &[u8]) -> Option<(&[u8], &[u8])> {
        entry_offset(v).map(|at| v.split_at(at))
    }

    /// The raw record of an entry (leaf hash, inbox positions, encoded
    /// entry) as format 6 stores it, its recipients put back if it names a
    /// recipient set, for forensic tools and tamper tests only.
    #[doc(hidden)]
    pub fn raw_entry_record(&self, channel: &str, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entry_record(channel, seq)?.map(|v| v.to_vec()))
    }

    /// Where an entry's record is in the segments: the file, the offset
    /// and the length. Pending writes are flushed first. Forensic tools
    /// and tamper tests only.
    #[doc(hidden)]
    pub fn raw_entry_place(
        &self,
        channel: &str,
        seq: u64,
    ) -> Result<Option<(std::path::PathBuf, u64, u64)>, StoreError> {
        self.raw_tree()?;
        let Some(place) = entry_place(&self.durability, channel, seq)? else {
            return Ok(None);
        };
        let file = self.durability.segments.path(place.segment);
        Ok(Some((file, place.offset, place.len)))
    }

    /// Replaces an entry's record, bypassing every rule of the hub (the
    /// record is appended to the segments and sled names it): tamper
    /// tests only.
    #[doc(hidden)]
    pub fn raw_replace_entry_record(
        &self,
        channel: &str,
        seq: u64,
        record: &[u8],
    ) -> Result<(), StoreError> {
        let tree = self.raw_tree()?;
        let hashes = read_tree_hashes(&self.durability, channel, seq)?.unwrap_or_default();
        let place = self.durability.segments.append(&[Appended {
            record,
            hashes: &hashes,
        }])?;
        let place = place
            .first()
            .ok_or_else(|| StoreError::Database("no place for the record".into()))?;
        let place = *place;
        rewrite_places(tree, channel, |places| {
            places.insert(seq, place);
        })
    }

    /// Removes the places of the entries of `channel` whose seq `gone`
    /// picks (the channel's runs rewritten without them), bypassing every
    /// rule of the hub: tamper tests only.
    #[doc(hidden)]
    pub fn raw_remove_entry_places(
        &self,
        channel: &str,
        gone: impl Fn(u64) -> bool,
    ) -> Result<(), StoreError> {
        let tree = self.raw_tree()?;
        rewrite_places(tree, channel, |places| places.retain(|seq, _| !gone(*seq)))
    }

    fn entry_record(&self, channel: &str, seq: u64) -> Result<Option<sled::IVec>, StoreError> {
        read_entry_record(&self.durability, channel, seq)
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

    /// What the runs of `kind` records of `inbox` say of each of `cursors`
    /// (in any order), read by `decode` from the run covering it: one
    /// forward scan over the runs that can cover them all.
    fn runs_covering<T: Clone>(
        &self,
        kind: u8,
        inbox: &str,
        cursors: &[u64],
        decode: impl Fn(&[u8], u64) -> Result<T, StoreError>,
    ) -> Result<Vec<Option<T>>, StoreError> {
        let mut out = vec![None; cursors.len()];
        let mut order: Vec<usize> = (0..cursors.len()).collect();
        order.sort_unstable_by_key(|&i| cursors[i]);
        let (Some(&lo), Some(&hi)) = (order.first(), order.last()) else {
            return Ok(out);
        };
        let (lo, hi) = (cursors[lo], cursors[hi]);
        let mut next = order.into_iter().peekable();
        let (from, to) = (key(kind, inbox, Some(lo)), key(kind, inbox, Some(u64::MAX)));
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
                    out[i] = Some(decode(&v, cursors[i])?);
                }
                next.next();
            }
            if next.peek().is_none() || first > hi {
                break;
            }
        }
        Ok(out)
    }

    /// The last position of the last run of `kind` records of `inbox`.
    fn last_run_end(&self, kind: u8, inbox: &str) -> Result<u64, StoreError> {
        let (lo, hi) = (key(kind, inbox, Some(0)), key(kind, inbox, Some(u64::MAX)));
        let in_overlay = self.durability.overlay_read()?.last_in(&lo, &hi);
        let in_sled = match self.durability.tree.range(lo..=hi).next_back() {
            None => None,
            Some(kv) => Some(kv?.0.to_vec()),
        };
        match in_overlay.max(in_sled) {
            None => Ok(0),
            Some(k) => Ok(split_key(&k)?.1.unwrap_or(0)),
        }
    }

    /// An entry from the cache when it is there, else from its record,
    /// without filling the cache (which serves the subscribers): for
    /// reads that go through history, such as audits.
    fn entry_read(&self, channel: &str, seq: u64) -> Result<Option<Arc<StoredEntry>>, StoreError> {
        if let Some(e) = fatal::lock(&self.recent, RECENT)?.entry(channel, seq) {
            return Ok(Some(e));
        }
        let Some(record) = self.entry_record(channel, seq)? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(decode_entry(channel, seq, &record)?)))
    }

    /// The entry an audit index row of `mechanism` names.
    fn audited_entry(&self, mechanism: &str, row: &Row) -> Result<Arc<StoredEntry>, StoreError> {
        self.entry_read(&row.channel, row.seq)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the audit index of {mechanism} names entry {}:{}, which is missing",
                row.channel, row.seq
            ))
        })
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

impl Store for SledStore {
    fn load_registry_bytes(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.durability.get(REGISTRY_KEY)?.map(|v| v.to_vec()))
    }

    fn save_registry_bytes(&self, registry: &[u8]) -> Result<(), StoreError> {
        self.durability.tree.insert(REGISTRY_KEY, registry)?;
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

    fn refuses_writes(&self) -> bool {
        self.durability.journal.is_broken()
    }

    fn apply(&self, entries: &[NewEntry]) -> Result<(), StoreError> {
        let mut ops: Vec<Write> = Vec::new();
        // Per inbox, the (cursor, seq, channel) this batch adds, ascending.
        let mut added: BTreeMap<&str, Vec<(u64, u64, &str)>> = BTreeMap::new();
        // Held to the commit: a set's first use is journaled before its next.
        let mut sets = self.durability.recipient_sets.assign()?;
        for e in entries {
            let value =
                sets.record(&e.leaf_hash, &e.shared.cursors, &e.shared.encoded, &mut ops)?;
            ops.push((key(ENTRY, &e.channel, Some(e.seq)), value));

            // The seq alone: the digest is the entry's message's.
            ops.push((message_key(&e.channel, &e.message_id), message_value(e.seq)));

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
            // The entry's rows in the audit index, in the same commit as
            // the entry; a row's key is all of it (what the audit reports
            // is read from the entry), filed into runs by the flush.
            for mechanism in &e.audit_scopes {
                ops.push((
                    audit_key(mechanism, e.hub_micros, e.seq, &e.channel),
                    Vec::new(),
                ));
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
                for (at, part) in sized_runs(first, &run) {
                    let last = at + part.len() as u64 - 1;
                    ops.push((key(INBOX, inbox, Some(last)), inbox_run(at, part)));
                }
                rest = next;
            }
            if let Some(head) = cursors.last() {
                ops.push((key(INBOX_HEAD, inbox, None), head.to_be_bytes().to_vec()));
            }
            positions.push((inbox, items));
        }
        self.commit_ops(ops)?;
        sets.committed();
        let mut recent = fatal::lock(&self.recent, RECENT)?;
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
        Ok(())
    }

    fn entry_shared(
        &self,
        channel: &str,
        seq: u64,
    ) -> Result<Option<Arc<StoredEntry>>, StoreError> {
        if let Some(e) = fatal::lock(&self.recent, RECENT)?.entry(channel, seq) {
            return Ok(Some(e));
        }
        let Some(v) = self.entry_record(channel, seq)? else {
            return Ok(None);
        };
        let shared = Arc::new(decode_entry(channel, seq, &v)?);
        fatal::lock(&self.recent, RECENT)?.add_entry(channel, seq, shared.clone(), v.len());
        Ok(Some(shared))
    }

    fn entry(&self, channel: &str, seq: u64) -> Result<Option<StoredEntry>, StoreError> {
        Ok(self.entry_shared(channel, seq)?.map(Arc::unwrap_or_clone))
    }

    fn message(&self, sender: &str, message_id: &str) -> Result<Option<MessageRecord>, StoreError> {
        self.find_message(sender, message_id)
    }

    fn answers(&self, inbox: &str, cursors: &[u64]) -> Result<Vec<Option<Answer>>, StoreError> {
        self.runs_covering(ANSWER, inbox, cursors, |run, _| decode_answer(run))
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
        let slot = {
            let mut all = fatal::lock(&self.fetched_marks, "fetched marks")?;
            match all.get(inbox) {
                Some(slot) => slot.clone(),
                None => all.entry(inbox.to_string()).or_default().clone(),
            }
        };
        let mut slot = fatal::lock(&slot, "fetched marks")?;
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

    fn fetched_many(&self, inbox: &str, cursors: &[u64]) -> Result<Vec<Option<i64>>, StoreError> {
        self.runs_covering(FETCHED, inbox, cursors, |run, cursor| {
            fetched_at(run, cursor)
                .map(|m| m as i64)
                .map_err(|()| StoreError::Corrupt(format!("inbox {inbox}: fetched run")))
        })
    }

    fn audit_scope(
        &self,
        mechanism: &str,
        since: i64,
        until: i64,
        after: Option<&ScopedEntry>,
        limit: usize,
    ) -> Result<Vec<ScopedEntry>, StoreError> {
        let (from, to) = audit_range(mechanism, since, until, after);
        let rows = self.scope_rows(mechanism, &from, &to, limit)?;
        self.audited_rows(mechanism, &rows)
    }

    fn audit_row_past(
        &self,
        mechanism: &str,
        since: i64,
        until: i64,
        skip: usize,
    ) -> Result<Option<i64>, StoreError> {
        let (from, to) = audit_range(mechanism, since, until, None);
        self.row_past(mechanism, from, &to, skip)
    }

    fn stored_hashes(&self, channel: &str, indexes: &[u64]) -> Result<Vec<Hash>, StoreError> {
        let cached: Vec<Option<Hash>> = {
            let r = fatal::lock(&self.recent, RECENT)?;
            indexes.iter().map(|i| r.hash(channel, *i)).collect()
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
                let (seq, at) = stored_hash_place(*i).ok_or_else(missing)?;
                let v = match records.get(&seq) {
                    Some(v) => v.clone(),
                    None => {
                        let v = read_tree_hashes(&self.durability, channel, seq)
                            .map_err(|e| match e {
                                StoreError::Corrupt(m) => StoreError::Corrupt(format!(
                                    "channel {channel}: stored hash {i}: {m}"
                                )),
                                other => other,
                            })?
                            .ok_or_else(missing)?;
                        records.insert(seq, v.clone());
                        v
                    }
                };
                let h = hash_from(v.get(at..at + HASH_LEN).ok_or_else(missing)?)?;
                read.push((*i, h));
                Ok(h)
            })
            .collect();
        if !read.is_empty() {
            let mut r = fatal::lock(&self.recent, RECENT)?;
            for (i, h) in read {
                r.add_hash(channel, i, h);
            }
        }
        out
    }

    fn state_get(&self, space: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_state(space, key)
    }

    fn state_scan_prefix(
        &self,
        space: &str,
        prefix: &[u8],
    ) -> Result<super::state::StateRecords, StoreError> {
        self.scan_state(space, prefix)
    }

    fn state_scan_after(
        &self,
        space: &str,
        after: &[u8],
        limit: usize,
    ) -> Result<super::state::StateRecords, StoreError> {
        self.scan_state_after(space, after, limit)
    }

    fn state_apply(&self, space: &str, batch: &super::StateBatch) -> Result<(), StoreError> {
        self.apply_state(space, batch)
    }

    fn state_sync(&self) -> Result<(), StoreError> {
        self.sync_state()
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

    fn access_log(&self) -> Option<&dyn super::access::AccessLogStore> {
        Some(&self.access)
    }

    fn backup_records(
        &self,
        file: &Path,
        keep_free: u64,
    ) -> Result<super::DumpSummary, StoreError> {
        self.dump_records(file, keep_free)
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
        if let Some(page) = fatal::lock(&self.recent, RECENT)?.inbox_page(inbox, start, limit) {
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
            let last = last.unwrap_or(0);
            // Positions an earlier run gave already are skipped: a flush
            // merging runs, or one a crash cut short, can leave two runs
            // of different extent that hold the same positions. Only the
            // positions the page takes are built.
            let room = limit - out.len();
            let items = decode_inbox_window(inbox, last, &v, expected, room)?;
            let first = u64_from(v.get(..8).unwrap_or_default())?;
            if first > expected {
                return Err(StoreError::Corrupt(format!(
                    "inbox {inbox}: positions {expected}..={} are missing",
                    first - 1
                )));
            }
            expected = expected.max(last.saturating_add(1));
            out.extend(items);
        }
        Ok(out)
    }
}

mod audit_check;
mod audit_read;
mod backup;
mod lookup;
mod message_ids;
mod state;
#[cfg(test)]
mod tests;
mod upgrade;
