//! Each channel as a verifiable log: RFC 6962 Merkle hashes kept with the
//! stored-hash index, and checkpoints signed by the hub's key.
//!
//! The hub must never sign two inconsistent checkpoints for one channel:
//! the latest signed checkpoint is stored durably before it is served, a
//! new one is signed only after checking it extends the previous one, and
//! at start-up every channel is checked against its stored checkpoint
//! before anything is served.
//!
//! Start-up checks only what no checkpoint covers, so that its cost does
//! not grow with history: each checkpoint's signature, origin and root
//! over the stored tree, and every entry after it (the tail), chained from
//! the last leaf the checkpoint proves. The covered entries are checked
//! one by one after the hub serves (`full_check`) and offline by
//! `verify-data`, both with [`check_entries_deep`].

mod follow;

use crate::fatal::{self, Poisoned};
use crate::store::{ChannelHead, Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tongbao_proto::Hash;
use tongbao_proto::canonical::{GENESIS_PREVIOUS, leaf_hash};
use tongbao_proto::checkpoint::{
    Checkpoint, KeyType, NoteError, NoteSigner, NoteVerifier, open_checkpoint, sign_checkpoint,
    verify_cosignature,
};
use tongbao_proto::keys::SigningKey;
use tongbao_proto::merkle::{
    HashReader, MerkleError, check_record, check_tree, prove_record, prove_tree, stored_hash_index,
    stored_hashes_for_record, tree_hash,
};

/// The locks of the latest checkpoints and of the durable sizes, as a
/// poisoned one is reported.
const CHECKPOINTS: &str = "latest checkpoints";
const DURABLE: &str = "durable sizes";

/// Why a channel's log cannot be trusted or served.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    #[error(transparent)]
    Poisoned(#[from] Poisoned),
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error(
        "channel {channel}: the stored checkpoint covers {checkpoint_size} entries but only {stored_size} are stored; entries were removed"
    )]
    Truncated {
        channel: String,
        checkpoint_size: u64,
        stored_size: u64,
    },
    #[error(
        "channel {channel}: the stored entries no longer match the signed checkpoint of size {size} (stored size {stored_size}); the data was altered"
    )]
    Fork {
        channel: String,
        size: u64,
        stored_size: u64,
    },
    #[error(
        "channel {channel}: entry {seq} does not match its recorded leaf hash; the data was altered"
    )]
    LeafMismatch { channel: String, seq: u64 },
    #[error("channel {channel}: entry {seq} does not chain to entry {prev}")]
    BrokenChain {
        channel: String,
        seq: u64,
        prev: u64,
    },
    #[error("channel {channel}: entry {seq} is missing")]
    MissingEntry { channel: String, seq: u64 },
    #[error(
        "channel {channel}: the Merkle hashes stored with entry {seq} are not those its leaf hash and the earlier ones make; the data was altered"
    )]
    TreeMismatch { channel: String, seq: u64 },
    #[error("channel {0} has no checkpoint yet")]
    NoCheckpoint(String),
    #[error("the latest checkpoint of {channel} has size {latest}, not {size}; cosign the latest")]
    StaleCheckpoint {
        channel: String,
        latest: u64,
        size: u64,
    },
    #[error("cosignature refused: {0}")]
    CosignatureRefused(String),
    #[error("checkpoint key {path}: {reason}")]
    Key { path: String, reason: String },
}

/// Reads a channel's stored hashes, preferring ones not yet committed.
pub struct ChannelHashes<'a> {
    pub store: &'a dyn Store,
    pub channel: &'a str,
    pub pending: Option<&'a HashMap<u64, Hash>>,
}

impl HashReader for ChannelHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MerkleError> {
        let mut out = vec![[0u8; 32]; indexes.len()];
        let mut missing = Vec::new();
        let mut slots = Vec::new();
        for (slot, index) in indexes.iter().enumerate() {
            match self.pending.and_then(|p| p.get(index)) {
                Some(h) => out[slot] = *h,
                None => {
                    missing.push(*index);
                    slots.push(slot);
                }
            }
        }
        if !missing.is_empty() {
            let found = self
                .store
                .stored_hashes(self.channel, &missing)
                .map_err(|e| MerkleError::Reader(e.to_string()))?;
            for (slot, h) in slots.into_iter().zip(found) {
                out[slot] = h;
            }
        }
        Ok(out)
    }
}

/// Loads the hub's checkpoint key, creating it on first start.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, LogError> {
    let err = |reason: String| LogError::Key {
        path: path.display().to_string(),
        reason,
    };
    if let Some(key) = load_key(path)? {
        return Ok(key);
    }
    let key = SigningKey::generate().map_err(|e| err(e.to_string()))?;
    tongbao_proto::secret_file::create_new(path, key.to_pem().as_bytes())
        .map_err(|e| err(e.to_string()))?;
    Ok(key)
}

/// The hub's signing key at `path`, or None when there is none. A
/// standby only loads it: a key it created would be one no other replica
/// has, so it would serve a log key under which nothing is signed.
pub fn load_key(path: &Path) -> Result<Option<SigningKey>, LogError> {
    let err = |reason: String| LogError::Key {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(pem) => SigningKey::from_pem(&pem)
            .map(Some)
            .map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e.to_string())),
    }
}

/// A signed checkpoint and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub note: String,
    pub checkpoint: Checkpoint,
}

/// The channels' logs: proofs come from the store, checkpoints from here.
pub struct Logs {
    store: Arc<dyn Store>,
    key: SigningKey,
    name: String,
    latest: Mutex<HashMap<String, SignedCheckpoint>>,
    /// Sizes known durable: only these are ever signed. A standby's are
    /// its latest checkpoints' sizes: it serves nothing past them.
    durable: Mutex<HashMap<String, u64>>,
    /// False on a standby, which signs nothing (`channel_log/follow.rs`).
    signs: bool,
}

impl Logs {
    /// Checks every channel's stored checkpoint against its stored tree,
    /// and every entry no checkpoint covers (see the module doc); refuses
    /// (with the channel and what failed) on any difference.
    pub fn open(
        store: Arc<dyn Store>,
        key: SigningKey,
        name: &str,
        heads: &BTreeMap<String, ChannelHead>,
    ) -> Result<Self, LogError> {
        let logs = Self {
            store,
            key,
            name: name.to_string(),
            latest: Mutex::new(HashMap::new()),
            durable: Mutex::new(heads.iter().map(|(c, h)| (c.clone(), h.next_seq)).collect()),
            signs: true,
        };
        let verifier = logs.verifier()?;
        let mut latest = HashMap::new();
        for (channel, note) in logs.store.checkpoints()? {
            let stored_size = heads.get(&channel).map_or(0, |h| h.next_seq);
            let checkpoint =
                check_checkpoint(logs.store.as_ref(), &verifier, &channel, &note, stored_size)?;
            latest.insert(channel, SignedCheckpoint { note, checkpoint });
        }
        for (channel, head) in heads {
            let covered = latest.get(channel).map(|s| &s.checkpoint);
            check_tail(logs.store.as_ref(), channel, head, covered)?;
        }
        *fatal::lock(&logs.latest, CHECKPOINTS)? = latest;
        Ok(logs)
    }
}

/// A channel's stored checkpoint is signed by `verifier`'s key, names the
/// channel, and its root is the root of the stored tree at its size.
pub fn check_checkpoint(
    store: &dyn Store,
    verifier: &NoteVerifier,
    channel: &str,
    note: &str,
    stored_size: u64,
) -> Result<Checkpoint, LogError> {
    let (checkpoint, _) = open_checkpoint(note, verifier, &[])?;
    if stored_size < checkpoint.size {
        return Err(LogError::Truncated {
            channel: channel.to_string(),
            checkpoint_size: checkpoint.size,
            stored_size,
        });
    }
    let reader = ChannelHashes {
        store,
        channel,
        pending: None,
    };
    let root = tree_hash(checkpoint.size, &reader)?;
    if root != checkpoint.root || checkpoint.origin != format!("{}/{channel}", verifier.name()) {
        return Err(LogError::Fork {
            channel: channel.to_string(),
            size: checkpoint.size,
            stored_size,
        });
    }
    Ok(checkpoint)
}

/// Every entry of a channel recomputes to its stored leaf hash, which is
/// the leaf of its tree, and chains to the previous one; and the Merkle
/// hashes stored with each are recomputed from the leaf hashes: with them
/// checked in order, a checkpoint's root over the stored hashes is the
/// root over the entries. `also` runs after each entry (to stop early, by
/// an error).
pub fn check_entries_deep<E: From<LogError>>(
    store: &dyn Store,
    channel: &str,
    head: &ChannelHead,
    mut also: impl FnMut(u64) -> Result<(), E>,
) -> Result<(), E> {
    check_entries_deep_from(store, channel, head, 0, GENESIS_PREVIOUS, |seq, _| {
        also(seq)
    })
}

/// [`check_entries_deep`] from entry `from` on, the first chaining to
/// `previous` (the leaf hash of entry `from - 1`, as an earlier check
/// found it); `also` gets each entry's leaf hash.
pub fn check_entries_deep_from<E: From<LogError>>(
    store: &dyn Store,
    channel: &str,
    head: &ChannelHead,
    from: u64,
    previous: Hash,
    mut also: impl FnMut(u64, Hash) -> Result<(), E>,
) -> Result<(), E> {
    check_range_with(store, channel, head, from, previous, |seq, leaf| {
        check_stored_hashes(store, channel, seq, leaf)?;
        also(seq, leaf)
    })
}

/// The entries of a channel that its latest checkpoint `covered` does
/// not cover, each checked as [`check_entries_deep`] does, the first chained
/// from the checkpoint's last leaf, proved included under its root.
pub fn check_tail(
    store: &dyn Store,
    channel: &str,
    head: &ChannelHead,
    covered: Option<&Checkpoint>,
) -> Result<(), LogError> {
    let (from, previous) = match covered {
        Some(c) if c.size > 0 => (c.size, last_covered_leaf(store, channel, c)?),
        _ => (0, GENESIS_PREVIOUS),
    };
    check_range_with(store, channel, head, from, previous, |seq, leaf| {
        check_stored_hashes(store, channel, seq, leaf)
    })
}

/// The leaf hash of the last entry `checkpoint` covers, from the stored
/// tree, proved to be that leaf under the checkpoint's root.
fn last_covered_leaf(
    store: &dyn Store,
    channel: &str,
    checkpoint: &Checkpoint,
) -> Result<Hash, LogError> {
    let seq = checkpoint.size - 1;
    let altered = || LogError::LeafMismatch {
        channel: channel.to_string(),
        seq,
    };
    let reader = ChannelHashes {
        store,
        channel,
        pending: None,
    };
    let leaf = *store
        .stored_hashes(channel, &[stored_hash_index(0, seq)])?
        .first()
        .ok_or_else(altered)?;
    let proof = prove_record(checkpoint.size, seq, &reader)?;
    check_record(&proof, checkpoint.size, &checkpoint.root, seq, &leaf).map_err(|_| altered())?;
    Ok(leaf)
}

/// Entries `from..head.next_seq`, the first chaining to `previous`; the
/// last one's leaf hash must be the head's.
fn check_range_with<E: From<LogError>>(
    store: &dyn Store,
    channel: &str,
    head: &ChannelHead,
    from: u64,
    mut previous: Hash,
    mut also: impl FnMut(u64, Hash) -> Result<(), E>,
) -> Result<(), E> {
    for seq in from..head.next_seq {
        let computed = check_entry(store, channel, seq, &previous)?;
        also(seq, computed)?;
        previous = computed;
    }
    if head.next_seq > 0 && head.last_leaf_hash != previous {
        return Err(LogError::LeafMismatch {
            channel: channel.to_string(),
            seq: head.next_seq - 1,
        }
        .into());
    }
    Ok(())
}

/// The Merkle hashes stored with entry `seq` are those its leaf hash and
/// the earlier stored hashes make.
fn check_stored_hashes(
    store: &dyn Store,
    channel: &str,
    seq: u64,
    leaf: Hash,
) -> Result<(), LogError> {
    let tree = || LogError::TreeMismatch {
        channel: channel.to_string(),
        seq,
    };
    let reader = ChannelHashes {
        store,
        channel,
        pending: None,
    };
    // A store that cannot be read is not data found altered.
    let expected = stored_hashes_for_record(seq, leaf, &reader).map_err(|e| match e {
        MerkleError::Reader(why) => LogError::Store(StoreError::Database(why)),
        _ => tree(),
    })?;
    let first = stored_hash_index(0, seq);
    let indexes: Vec<u64> = (first..first + expected.len() as u64).collect();
    let stored = store.stored_hashes(channel, &indexes)?;
    if stored != expected {
        return Err(tree());
    }
    Ok(())
}

/// One entry recomputes to its stored leaf hash, which is the leaf of its
/// tree, and chains to `previous`; returns its leaf hash.
fn check_entry(
    store: &dyn Store,
    channel: &str,
    seq: u64,
    previous: &Hash,
) -> Result<Hash, LogError> {
    let stored = store
        .entry(channel, seq)?
        .ok_or_else(|| LogError::MissingEntry {
            channel: channel.to_string(),
            seq,
        })?;
    let computed = leaf_hash(&stored.entry);
    let in_tree = store.stored_hashes(channel, &[stored_hash_index(0, seq)])?;
    if computed != stored.leaf_hash
        || in_tree.first() != Some(&computed)
        || stored.entry.seq != seq
        || stored.entry.channel != channel
    {
        return Err(LogError::LeafMismatch {
            channel: channel.to_string(),
            seq,
        });
    }
    if stored.entry.previous_leaf_hash != *previous {
        return Err(LogError::BrokenChain {
            channel: channel.to_string(),
            seq,
            prev: seq.saturating_sub(1),
        });
    }
    Ok(computed)
}

impl Logs {
    /// The note key name of this hub's checkpoints.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The origin line of a channel's checkpoints.
    pub fn origin(&self, channel: &str) -> String {
        format!("{}/{channel}", self.name)
    }

    /// The verifier key auditors and clients pin.
    pub fn verifier(&self) -> Result<NoteVerifier, LogError> {
        Ok(NoteVerifier::new(
            &self.name,
            KeyType::Ed25519,
            self.key.public_key(),
        )?)
    }

    pub fn reader<'a>(&'a self, channel: &'a str) -> ChannelHashes<'a> {
        ChannelHashes {
            store: self.store.as_ref(),
            channel,
            pending: None,
        }
    }

    /// The latest signed checkpoint of a channel, signing a new one first
    /// if the channel grew past it. A new checkpoint is signed only if it
    /// provably extends the previous one, and stored before it is returned.
    pub fn checkpoint(&self, channel: &str) -> Result<SignedCheckpoint, LogError> {
        let mut latest = self.latest()?;
        let Some(signed) = self.sign_next(channel, &latest)? else {
            return latest
                .get(channel)
                .cloned()
                .ok_or_else(|| LogError::NoCheckpoint(channel.to_string()));
        };
        if let Err(e) = self.store.save_checkpoints(&[(channel, &signed.note)]) {
            // A store that refuses writes (a full disk) still holds the
            // latest stored checkpoint: readers keep that one; the new one,
            // never served, is simply not kept.
            return match latest.get(channel) {
                Some(stored) => {
                    tracing::warn!(channel, error = %e, "serving the latest stored checkpoint: a new one cannot be stored");
                    Ok(stored.clone())
                }
                None => Err(e.into()),
            };
        }
        latest.insert(channel.to_string(), signed.clone());
        Ok(signed)
    }

    fn latest(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<String, SignedCheckpoint>>, LogError> {
        Ok(fatal::lock(&self.latest, CHECKPOINTS)?)
    }

    /// A signed checkpoint of the channel's durable size, if that is past
    /// the latest one (which it must provably extend); not stored yet.
    fn sign_next(
        &self,
        channel: &str,
        latest: &HashMap<String, SignedCheckpoint>,
    ) -> Result<Option<SignedCheckpoint>, LogError> {
        if !self.signs {
            return Ok(None);
        }
        let size = self.durable_size(channel)?;
        let previous = latest.get(channel);
        if previous.is_some_and(|p| p.checkpoint.size >= size) {
            return Ok(None);
        }
        let reader = self.reader(channel);
        let root = tree_hash(size, &reader)?;
        if let Some(previous) = previous {
            let old = &previous.checkpoint;
            let proof = prove_tree(size, old.size, &reader)?;
            check_tree(&proof, size, &root, old.size, &old.root).map_err(|_| LogError::Fork {
                channel: channel.to_string(),
                size: old.size,
                stored_size: size,
            })?;
        }
        let checkpoint = Checkpoint::new(self.origin(channel), size, root);
        let signer = NoteSigner::new(&self.name, &self.key)?;
        let note = sign_checkpoint(&checkpoint, &[signer])?;
        Ok(Some(SignedCheckpoint { note, checkpoint }))
    }

    /// Records that a channel's first `size` entries are durable (called by
    /// the appender after each group commit).
    pub fn advance(&self, channel: &str, size: u64) -> Result<(), Poisoned> {
        let mut d = fatal::lock(&self.durable, DURABLE)?;
        let s = d.entry(channel.to_string()).or_default();
        *s = (*s).max(size);
        Ok(())
    }

    /// How many entries of a channel are durable.
    pub fn durable_size(&self, channel: &str) -> Result<u64, Poisoned> {
        let d = fatal::lock(&self.durable, DURABLE)?;
        Ok(d.get(channel).copied().unwrap_or(0))
    }

    /// Each channel's durable size and the size of its latest signed
    /// checkpoint (0 without one), for the metrics.
    pub fn sizes(&self) -> Result<Vec<(String, u64, u64)>, Poisoned> {
        let durable: Vec<(String, u64)> = fatal::lock(&self.durable, DURABLE)?
            .iter()
            .map(|(c, s)| (c.clone(), *s))
            .collect();
        let latest = fatal::lock(&self.latest, CHECKPOINTS)?;
        Ok(durable
            .into_iter()
            .map(|(c, size)| {
                let signed = latest.get(&c).map_or(0, |s| s.checkpoint.size);
                (c, size, signed)
            })
            .collect())
    }

    /// Signs an arbitrary statement of the hub with the checkpoint key.
    pub fn sign_statement(&self, text: &str) -> Result<String, LogError> {
        let signer = NoteSigner::new(&self.name, &self.key)?;
        Ok(tongbao_proto::checkpoint::sign_note(text, &[signer])?)
    }

    /// Adds a unit's cosignature to the latest checkpoint of its channel:
    /// verified under the unit's key, appended to the stored note.
    pub fn add_cosignature(
        &self,
        channel: &str,
        size: u64,
        line: &str,
        unit_key: &[u8],
    ) -> Result<String, LogError> {
        let mut latest = self.latest()?;
        let Some(current) = latest.get(channel).cloned() else {
            return Err(LogError::NoCheckpoint(channel.to_string()));
        };
        if current.checkpoint.size != size {
            return Err(LogError::StaleCheckpoint {
                channel: channel.to_string(),
                latest: current.checkpoint.size,
                size,
            });
        }
        let cosigner = NoteVerifier::new(channel, KeyType::CosignatureV1, unit_key)?;
        verify_cosignature(&current.checkpoint, line, &cosigner)
            .map_err(|e| LogError::CosignatureRefused(e.to_string()))?;
        let line = format!("{}\n", line.trim_end_matches('\n'));
        // One cosignature per unit: a newer one replaces it.
        let prefix = format!("\u{2014} {channel} ");
        let mut note: String = current
            .note
            .lines()
            .filter(|l| !l.starts_with(&prefix))
            .map(|l| format!("{l}\n"))
            .collect();
        note.push_str(&line);
        self.store.save_checkpoints(&[(channel, &note)])?;
        latest.insert(
            channel.to_string(),
            SignedCheckpoint {
                note: note.clone(),
                checkpoint: current.checkpoint,
            },
        );
        Ok(note)
    }

    /// Signs a new checkpoint for every channel that grew (the cadence
    /// task), and stores them all as one commit: one journal sync a
    /// second, however many channels grew. A channel that cannot be
    /// signed is logged and left out; the first such error is returned
    /// once the others are stored.
    pub fn refresh_all(&self) -> Result<usize, LogError> {
        let channels: Vec<String> = fatal::lock(&self.durable, DURABLE)?
            .keys()
            .cloned()
            .collect();
        let mut latest = self.latest()?;
        let mut fresh = Vec::new();
        // A channel that cannot be signed (a fork, a read error) must not
        // keep the others from their checkpoints: it is reported after.
        let mut failed = None;
        for channel in channels {
            match self.sign_next(&channel, &latest) {
                Ok(Some(signed)) => fresh.push((channel, signed)),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(channel = %channel, error = %e, "cannot sign a checkpoint");
                    failed.get_or_insert(e);
                }
            }
        }
        let notes: Vec<(&str, &str)> = fresh
            .iter()
            .map(|(c, s)| (c.as_str(), s.note.as_str()))
            .collect();
        self.store.save_checkpoints(&notes)?;
        let signed = fresh.len();
        latest.extend(fresh);
        match failed {
            Some(e) => Err(e),
            None => Ok(signed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AnswerKind, NewEntry, SledStore, StoredEntry};
    use prost::Message;
    use tongbao_proto::pb;

    #[test]
    fn the_checkpoint_key_is_created_private_and_kept() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("checkpoint.key");
        let made = load_or_create_key(&path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{mode:o}");
        }
        assert_eq!(load_or_create_key(&path)?.key_id(), made.key_id());
        Ok(())
    }

    #[test]
    fn one_channel_that_cannot_be_signed_does_not_hold_up_the_others()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(SledStore::open(dir.path(), true)?);
        let leaf = [7u8; 32];
        let entry = pb::Entry {
            channel: "tax".into(),
            ..Default::default()
        };
        store.commit(&[NewEntry {
            channel: "tax".into(),
            seq: 0,
            message_id: "m0".into(),
            message_digest: [0; 32],
            leaf_hash: leaf,
            hub_micros: 1,
            shared: Arc::new(StoredEntry {
                encoded: entry.encode_to_vec().into(),
                entry,
                leaf_hash: leaf,
                cursors: Vec::new(),
            }),
            answers: Vec::new(),
            answer_kind: AnswerKind::Acknowledged,
            audit_scopes: Vec::new(),
            tree_hashes: vec![leaf],
        }])?;
        let logs = Logs::open(
            store.clone(),
            SigningKey::generate()?,
            "hub.example",
            &BTreeMap::new(),
        )?;
        logs.advance("tax", 1)?;
        // Said to be durable, but none of its hashes is stored.
        logs.advance("pbc", 1)?;
        assert!(logs.refresh_all().is_err());
        let saved = store.checkpoints()?;
        assert!(saved.contains_key("tax"), "{saved:?}");
        assert!(!saved.contains_key("pbc"));
        assert_eq!(logs.durable_size("tax")?, 1);
        assert_eq!(logs.checkpoint("tax")?.checkpoint.size, 1);
        Ok(())
    }
}
