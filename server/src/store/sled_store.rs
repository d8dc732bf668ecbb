//! The embedded default store, on sled 0.34.
//!
//! One tree, keys prefixed by record type, so that a whole group commit is a
//! single atomic `apply_batch`. sled's own flush uses `sync_file_range` and
//! never syncs blob files (large values), which survives a process crash but
//! not a power loss; [`SledStore::make_durable`] adds the missing fsyncs.

use super::{
    Answer, AnswerKind, ChannelHead, InboxItem, MessageRecord, NewEntry, ScopedEntry, Store,
    StoreError, StoredEntry,
};
use crate::registry::Registry;
use prost::Message as _;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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

/// Bytes of recently committed entries kept decoded in memory.
const ENTRY_CACHE_BYTES: usize = 16 << 20;
/// Merkle hashes kept in memory.
const HASH_CACHE_LEN: usize = 1 << 17;
/// sled's page cache (its default, 1 GiB, would let memory grow with the data).
const SLED_CACHE_BYTES: u64 = 64 << 20;

/// Records that never change once committed, kept in memory: fresh entries
/// are read by every recipient and proved by every client, so each is
/// decoded once and its tree hashes are not looked up again.
#[derive(Default)]
struct Recent {
    /// By channel, then seq (lookups by `&str` allocate nothing).
    entries: HashMap<String, HashMap<u64, Arc<StoredEntry>>>,
    entry_order: VecDeque<(String, u64, usize)>,
    entry_bytes: usize,
    /// By channel, then stored-hash index.
    hashes: HashMap<String, HashMap<u64, Hash>>,
    hash_order: VecDeque<(String, u64)>,
}

impl Recent {
    fn entry(&self, channel: &str, seq: u64) -> Option<Arc<StoredEntry>> {
        self.entries.get(channel)?.get(&seq).cloned()
    }

    fn hash(&self, channel: &str, index: u64) -> Option<Hash> {
        self.hashes.get(channel)?.get(&index).copied()
    }

    fn add_entry(&mut self, channel: &str, seq: u64, entry: Arc<StoredEntry>, size: usize) {
        let of_channel = match self.entries.get_mut(channel) {
            Some(m) => m,
            None => self.entries.entry(channel.to_string()).or_default(),
        };
        if of_channel.insert(seq, entry).is_none() {
            self.entry_order.push_back((channel.to_string(), seq, size));
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

    fn add_hash(&mut self, channel: &str, index: u64, hash: Hash) {
        let of_channel = match self.hashes.get_mut(channel) {
            Some(m) => m,
            None => self.hashes.entry(channel.to_string()).or_default(),
        };
        if of_channel.insert(index, hash).is_none() {
            self.hash_order.push_back((channel.to_string(), index));
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
    db: sled::Db,
    tree: sled::Tree,
    db_file: File,
    dir: PathBuf,
    synced_blobs: Mutex<HashSet<OsString>>,
    fsync: bool,
    recent: Mutex<Recent>,
    /// Serialises "fetched" marks so that the first serving wins without a
    /// compare-and-swap per record.
    fetched_lock: Mutex<()>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("dir", &self.dir)
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

/// `kind 0 channel 0 seq 0 recipient`: per (entry, recipient) records.
fn delivery_key(kind: u8, channel: &str, seq: u64, recipient: Option<&str>) -> Vec<u8> {
    let mut k = key(kind, channel, Some(seq));
    k.push(0);
    if let Some(r) = recipient {
        k.extend_from_slice(r.as_bytes());
    }
    k
}

fn decode_answer(v: &[u8]) -> Result<Answer, StoreError> {
    if v.len() != 17 {
        return Err(StoreError::Corrupt("answer record".into()));
    }
    Ok(Answer {
        kind: if v[0] == 1 {
            AnswerKind::Exception
        } else {
            AnswerKind::Acknowledged
        },
        seq: u64_from(&v[1..9])?,
        hub_micros: u64_from(&v[9..17])? as i64,
    })
}

/// An entry record: leaf hash, then the encoded entry.
fn decode_entry(channel: &str, seq: u64, v: &[u8]) -> Result<StoredEntry, StoreError> {
    if v.len() < HASH_LEN {
        return Err(StoreError::Corrupt(format!("entry {channel}:{seq}")));
    }
    let entry = pb::Entry::decode(&v[HASH_LEN..])
        .map_err(|e| StoreError::Corrupt(format!("entry {channel}:{seq}: {e}")))?;
    Ok(StoredEntry {
        entry,
        leaf_hash: hash_from(&v[..HASH_LEN])?,
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
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
            .map_err(|e| {
                StoreError::Database(format!("cannot open database in {}: {e}", dir.display()))
            })?;
        let tree = db.open_tree("exchange").map_err(db_err)?;
        let db_file = File::open(dir.join("db"))?;
        // The directory entries of the files sled just created must be durable too.
        sync_dir(dir)?;
        Ok(Self {
            db,
            tree,
            db_file,
            dir: dir.to_path_buf(),
            synced_blobs: Mutex::new(HashSet::new()),
            fsync,
            recent: Mutex::new(Recent::default()),
            fetched_lock: Mutex::new(()),
        })
    }

    /// The underlying tree, for forensic tools and tamper tests only:
    /// writing through it bypasses every rule of the hub.
    #[doc(hidden)]
    pub fn raw_tree(&self) -> &sled::Tree {
        &self.tree
    }

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
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

impl Store for SledStore {
    fn load_registry(&self) -> Result<Option<Registry>, StoreError> {
        match self.tree.get(REGISTRY_KEY).map_err(db_err)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("registry: {e}"))),
        }
    }

    fn save_registry(&self, registry: &Registry) -> Result<(), StoreError> {
        let v = serde_json::to_vec(registry).map_err(|e| StoreError::Database(e.to_string()))?;
        self.tree.insert(REGISTRY_KEY, v).map_err(db_err)?;
        self.make_durable()
    }

    fn channel_heads(&self) -> Result<BTreeMap<String, ChannelHead>, StoreError> {
        let mut out = BTreeMap::new();
        for kv in self.tree.scan_prefix([CHANNEL_HEAD, 0]) {
            let (k, v) = kv.map_err(db_err)?;
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
        for kv in self.tree.scan_prefix([INBOX_HEAD, 0]) {
            let (k, v) = kv.map_err(db_err)?;
            let (name, _) = split_key(&k)?;
            out.insert(name, u64_from(&v)?);
        }
        Ok(out)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.make_durable()
    }

    fn apply(&self, entries: &[NewEntry]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut inbox_heads: BTreeMap<&str, u64> = BTreeMap::new();
        for e in entries {
            let mut value = Vec::with_capacity(HASH_LEN + e.encoded.len());
            value.extend_from_slice(&e.leaf_hash);
            value.extend_from_slice(&e.encoded);
            batch.insert(key(ENTRY, &e.channel, Some(e.seq)), value);

            let mut msg_key = key(MESSAGE, &e.channel, None);
            msg_key.push(0);
            msg_key.extend_from_slice(e.message_id.as_bytes());
            let mut rec = Vec::with_capacity(8 + HASH_LEN);
            rec.extend_from_slice(&e.seq.to_be_bytes());
            rec.extend_from_slice(&e.message_digest);
            batch.insert(msg_key, rec);

            let mut head = Vec::with_capacity(8 + HASH_LEN + 8);
            head.extend_from_slice(&(e.seq + 1).to_be_bytes());
            head.extend_from_slice(&e.leaf_hash);
            head.extend_from_slice(&(e.hub_micros as u64).to_be_bytes());
            batch.insert(key(CHANNEL_HEAD, &e.channel, None), head);

            for (channel, seq) in &e.answers {
                let mut v = Vec::with_capacity(17);
                v.push(u8::from(e.answer_kind == AnswerKind::Exception));
                v.extend_from_slice(&e.seq.to_be_bytes());
                v.extend_from_slice(&(e.hub_micros as u64).to_be_bytes());
                batch.insert(delivery_key(ANSWER, channel, *seq, Some(&e.channel)), v);
            }
            let first = tongbao_proto::merkle::stored_hash_count(e.seq);
            for (i, h) in e.tree_hashes.iter().enumerate() {
                batch.insert(
                    key(TREE_HASH, &e.channel, Some(first + i as u64)),
                    h.to_vec(),
                );
            }
            for mechanism in &e.audit_scopes {
                let mut k = key(AUDIT_SCOPE, mechanism, Some(e.hub_micros as u64));
                k.push(0);
                k.extend_from_slice(&e.seq.to_be_bytes());
                k.extend_from_slice(e.channel.as_bytes());
                batch.insert(k, Vec::new());
            }
            for (inbox, cursor) in &e.deliveries {
                let mut v = Vec::with_capacity(8 + e.channel.len());
                v.extend_from_slice(&e.seq.to_be_bytes());
                v.extend_from_slice(e.channel.as_bytes());
                batch.insert(key(INBOX, inbox, Some(*cursor)), v);
                let h = inbox_heads.entry(inbox).or_default();
                *h = (*h).max(*cursor);
            }
        }
        for (inbox, cursor) in inbox_heads {
            batch.insert(key(INBOX_HEAD, inbox, None), cursor.to_be_bytes().to_vec());
        }
        self.tree.apply_batch(batch).map_err(db_err)?;
        if let Ok(mut recent) = self.recent.lock() {
            for e in entries {
                recent.add_entry(&e.channel, e.seq, e.shared.clone(), e.encoded.len());
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
        let Some(v) = self
            .tree
            .get(key(ENTRY, channel, Some(seq)))
            .map_err(db_err)?
        else {
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
        let Some(v) = self.tree.get(k).map_err(db_err)? else {
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

    fn answer(
        &self,
        channel: &str,
        seq: u64,
        recipient: &str,
    ) -> Result<Option<Answer>, StoreError> {
        match self
            .tree
            .get(delivery_key(ANSWER, channel, seq, Some(recipient)))
            .map_err(db_err)?
        {
            None => Ok(None),
            Some(v) => decode_answer(&v).map(Some),
        }
    }

    fn answers(&self, channel: &str, seq: u64) -> Result<Vec<(String, Answer)>, StoreError> {
        let prefix = delivery_key(ANSWER, channel, seq, None);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&prefix) {
            let (k, v) = kv.map_err(db_err)?;
            let recipient = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((recipient, decode_answer(&v)?));
        }
        Ok(out)
    }

    fn mark_fetched(
        &self,
        served: &[(String, u64, String)],
        hub_micros: i64,
    ) -> Result<(), StoreError> {
        // First serving wins; later ones leave the record alone. The lock
        // makes check-then-write atomic among the hub's readers, the only
        // writers of these records.
        let _guard = self
            .fetched_lock
            .lock()
            .map_err(|_| StoreError::Database("fetched lock poisoned".into()))?;
        let mut batch = sled::Batch::default();
        let mut any = false;
        for (channel, seq, recipient) in served {
            let k = delivery_key(FETCHED, channel, *seq, Some(recipient));
            if !self.tree.contains_key(&k).map_err(db_err)? {
                batch.insert(k, (hub_micros as u64).to_be_bytes().to_vec());
                any = true;
            }
        }
        if any {
            self.tree.apply_batch(batch).map_err(db_err)?;
        }
        Ok(())
    }

    fn fetched(&self, channel: &str, seq: u64) -> Result<Vec<(String, i64)>, StoreError> {
        let prefix = delivery_key(FETCHED, channel, seq, None);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&prefix) {
            let (k, v) = kv.map_err(db_err)?;
            let recipient = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((recipient, u64_from(&v)? as i64));
        }
        Ok(out)
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
        for kv in self.tree.range(from..to).take(limit) {
            let (k, _) = kv.map_err(db_err)?;
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
        let out = indexes
            .iter()
            .zip(cached)
            .map(|(i, c)| {
                if let Some(h) = c {
                    return Ok(h);
                }
                let v = self
                    .tree
                    .get(key(TREE_HASH, channel, Some(*i)))
                    .map_err(db_err)?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "channel {channel}: stored hash {i} is missing"
                        ))
                    })?;
                let h = hash_from(&v)?;
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
        for kv in self.tree.scan_prefix([CHECKPOINT, 0]) {
            let (k, v) = kv.map_err(db_err)?;
            let (name, _) = split_key(&k)?;
            out.insert(name, String::from_utf8_lossy(&v).into_owned());
        }
        Ok(out)
    }

    fn save_checkpoint(&self, channel: &str, note: &str) -> Result<(), StoreError> {
        self.tree
            .insert(key(CHECKPOINT, channel, None), note.as_bytes())
            .map_err(db_err)?;
        self.make_durable()
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
        let from = key(INBOX, inbox, Some(start));
        let to = key(INBOX, inbox, Some(u64::MAX));
        let mut out = Vec::new();
        for kv in self.tree.range(from..=to).take(limit) {
            let (k, v) = kv.map_err(db_err)?;
            let (_, cursor) = split_key(&k)?;
            if v.len() < 8 {
                return Err(StoreError::Corrupt(format!("inbox {inbox} position")));
            }
            out.push(InboxItem {
                cursor: cursor.unwrap_or(0),
                seq: u64_from(&v[..8])?,
                channel: String::from_utf8_lossy(&v[8..]).into_owned(),
            });
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
            ..Default::default()
        };
        NewEntry {
            channel: channel.into(),
            seq,
            message_id: format!("m{seq}"),
            message_digest: [seq as u8; HASH_LEN],
            leaf_hash: [seq as u8 + 100; HASH_LEN],
            hub_micros: seq as i64,
            encoded: e.encode_to_vec(),
            shared: Arc::new(StoredEntry {
                entry: e.clone(),
                leaf_hash: [seq as u8 + 100; HASH_LEN],
            }),
            deliveries: inboxes
                .iter()
                .map(|(i, c)| ((*i).to_string(), *c))
                .collect(),
            answers: Vec::new(),
            answer_kind: AnswerKind::Acknowledged,
            audit_scopes: Vec::new(),
            tree_hashes: vec![[seq as u8 + 100; HASH_LEN]],
        }
    }

    /// sled releases its file lock when its background flusher lets go of
    /// the database, a moment after the handle is dropped.
    fn reopen(dir: &Path) -> Result<SledStore, StoreError> {
        let mut tries = 0;
        loop {
            match SledStore::open(dir, true) {
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
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
        let s = reopen(dir.path())?;
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

    #[test]
    fn first_serving_wins_and_fresh_entries_read_back_alike()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let s = SledStore::open(dir.path(), false)?;
        s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
        let served = [("tax".to_string(), 0, "finance".to_string())];
        s.mark_fetched(&served, 10)?;
        s.mark_fetched(&served, 20)?;
        assert_eq!(s.fetched("tax", 0)?, vec![("finance".to_string(), 10)]);
        // From memory (just committed) and from disk (after reopening): the same.
        let cached = s.entry("tax", 0)?.map(|e| (e.entry, e.leaf_hash));
        drop(s);
        let s = reopen(dir.path())?;
        assert_eq!(s.entry("tax", 0)?.map(|e| (e.entry, e.leaf_hash)), cached);
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
}
