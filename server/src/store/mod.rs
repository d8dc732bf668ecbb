//! Storage behind a narrow trait.
//!
//! Everything above this module asks for channels, inboxes and the registry
//! in domain words; nothing above it knows which database holds them, so a
//! replicated backend can replace the embedded one. Implementations must
//! make [`Store::apply`] atomic (all of a batch or none of it) and
//! [`Store::sync`] durable (on disk, fsync'd) before it returns.

pub mod access;
pub mod access_files;
mod audit_index;
mod audited_entry;
mod codec;
#[cfg(test)]
mod conformance;
mod dump;
mod durability;
mod entry_record;
mod journal;
mod message_index;
mod overlay;
pub mod pg_store;
mod places;
mod recent;
mod recipient_sets;
mod room;
mod segments;
mod sled_store;
pub mod state;
mod stretches;

pub use dump::{ChannelCopy, DumpSummary};
pub use pg_store::{PgOptions, PgStore};
pub use sled_store::SledStore;
pub use state::{StateBatch, StateRecords, StateTree, StateValue};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tongbao_proto::{Hash, pb};

/// Why the store failed. Any of these means the hub cannot promise
/// durability any more; the appender stops accepting writes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A refusal described in words (the commit journal's refusals, a
    /// registry that cannot be encoded).
    #[error("database error: {0}")]
    Database(String),
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("database error: cannot open database in {}: {source}", .dir.display())]
    Open {
        dir: std::path::PathBuf,
        source: sled::Error,
    },
    /// A thread panicked holding one of the store's locks: the hub stops.
    #[error(transparent)]
    Poisoned(#[from] crate::fatal::Poisoned),
    #[error("i/o error making data durable: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Format(String),
    /// Too little free space on the data disk to start safely.
    #[error("not enough free space: {0}")]
    NoRoom(String),
    /// The store cannot take this now, but may soon (a bound reached while
    /// the database takes no writes): the caller may try again elsewhere.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A commit went through (its records are durable) but what follows
    /// its point failed (the access log's checkpoint, a deletion): not
    /// to be answered durable, nor tried again; the log takes no more
    /// until claimed anew.
    #[error("committed, but what follows the commit failed: {0}")]
    Committed(String),
}

/// The tip of one channel, as appends need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelHead {
    pub next_seq: u64,
    pub last_leaf_hash: Hash,
    pub last_hub_micros: i64,
}

/// One entry to append, with everything derived from it precomputed by
/// the appender.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub channel: String,
    pub seq: u64,
    pub message_id: String,
    /// The canonical digest of the entry's message: what
    /// [`Store::message`] returns for its id (a store may keep it, or
    /// compute it again from the entry).
    pub message_digest: Hash,
    pub leaf_hash: Hash,
    pub hub_micros: i64,
    /// The entry, encoded and decoded, with every recipient's inbox
    /// position: what is stored, and what its readers (one per recipient)
    /// get without reading it back.
    pub shared: Arc<StoredEntry>,
    /// Positions in the sender's own inbox of the entries this one answers
    /// (a receipt or exception feedback), none answered before.
    pub answers: Vec<u64>,
    pub answer_kind: AnswerKind,
    /// Mechanisms whose office audits this entry.
    pub audit_scopes: Vec<String>,
    /// Merkle hashes this leaf adds to its channel's tree, stored from
    /// stored-hash index `stored_hash_count(seq)` on (the leaf hash first).
    pub tree_hashes: Vec<Hash>,
}

/// How a recipient answered an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    Acknowledged,
    Exception,
}

/// A recipient's answer to an entry: the entry that answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub kind: AnswerKind,
    /// Position of the receipt or feedback in the recipient's channel.
    pub seq: u64,
    pub hub_micros: i64,
}

/// A row of a mechanism's audit index: an entry with what the office's
/// audit needs of it, so that audits read their period's rows and not
/// whole entries (the sled store reads these fields from the entry's
/// record, its body skipped; the PostgreSQL store keeps them in the row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedEntry {
    pub hub_micros: i64,
    pub channel: String,
    pub seq: u64,
    pub leaf_hash: Hash,
    pub sender: String,
    pub kind: i32,
    pub message_id: String,
    /// The acknowledgement deadline the sender labelled the entry with; 0
    /// for none (the hub's deadline for its kind applies).
    pub ack_deadline_micros: i64,
    /// (inbox, position) of every recipient, as [`StoredEntry::deliveries`].
    pub deliveries: Vec<(String, u64)>,
}

/// An entry read back, with the leaf hash recorded when it was appended
/// and where it sits in each recipient's inbox.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    pub entry: pb::Entry,
    pub leaf_hash: Hash,
    /// The protobuf encoding of `entry`, as stored: served as it is.
    pub encoded: prost::bytes::Bytes,
    /// The inbox cursor of each of `entry.recipients`, in the same order:
    /// answers and "fetched" marks are kept per inbox position.
    pub cursors: Vec<u64>,
}

impl StoredEntry {
    /// (inbox, position) for every recipient.
    pub fn deliveries(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entry
            .recipients
            .iter()
            .map(String::as_str)
            .zip(self.cursors.iter().copied())
    }

    /// The position of this entry in `recipient`'s inbox, if it was
    /// addressed to it.
    pub fn cursor_of(&self, recipient: &str) -> Option<u64> {
        self.deliveries()
            .find(|(inbox, _)| *inbox == recipient)
            .map(|(_, cursor)| cursor)
    }
}

/// What the idempotency index remembers of a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRecord {
    pub seq: u64,
    pub message_digest: Hash,
}

/// One position of an inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxItem {
    pub cursor: u64,
    pub channel: String,
    pub seq: u64,
}

/// The storage contract of the hub.
pub trait Store: Send + Sync + 'static {
    /// The stored registry, as its owner encoded it, or None before the
    /// first start.
    fn load_registry_bytes(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the stored registry, durably.
    fn save_registry_bytes(&self, registry: &[u8]) -> Result<(), StoreError>;
    /// The tip of every channel that has entries.
    fn channel_heads(&self) -> Result<BTreeMap<String, ChannelHead>, StoreError>;
    /// The last cursor of every inbox that has entries.
    fn inbox_heads(&self) -> Result<BTreeMap<String, u64>, StoreError>;
    /// Appends entries, their inbox positions and idempotency records,
    /// atomically but not yet durably: readers must not be told of them
    /// before [`Store::sync`] returns.
    fn apply(&self, entries: &[NewEntry]) -> Result<(), StoreError>;
    /// Makes everything applied so far durable (on disk, fsync'd).
    fn sync(&self) -> Result<(), StoreError>;
    /// Whether the store refuses writes now (its journal failed a write,
    /// or the disk reached the reserve), until a restart; read by health
    /// and the metrics.
    fn refuses_writes(&self) -> bool {
        false
    }
    /// Whether the stored schema is still the one this hub reads (a
    /// standby checks it at each refresh: a newer leader may migrate it).
    fn check_schema(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// [`Store::apply`] then [`Store::sync`].
    fn commit(&self, entries: &[NewEntry]) -> Result<(), StoreError> {
        self.apply(entries)?;
        self.sync()
    }
    fn entry(&self, channel: &str, seq: u64) -> Result<Option<StoredEntry>, StoreError>;
    /// The same, shared: fresh entries come from memory without a copy.
    fn entry_shared(
        &self,
        channel: &str,
        seq: u64,
    ) -> Result<Option<Arc<StoredEntry>>, StoreError> {
        Ok(self.entry(channel, seq)?.map(Arc::new))
    }
    fn message(&self, sender: &str, message_id: &str) -> Result<Option<MessageRecord>, StoreError>;
    /// [`Store::message`] of several (sender, message id) at once, in the
    /// order asked: the writer asks for a whole batch's together (one
    /// round trip on a database server instead of one per push).
    fn messages(&self, asked: &[(&str, &str)]) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        asked
            .iter()
            .map(|(sender, message_id)| self.message(sender, message_id))
            .collect()
    }
    /// Up to `limit` inbox positions strictly after `after`, in order.
    fn inbox_page(
        &self,
        inbox: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxItem>, StoreError>;
    /// How the owner of `inbox` answered the entries at `cursors` (in any
    /// order), one outcome per cursor.
    fn answers(&self, inbox: &str, cursors: &[u64]) -> Result<Vec<Option<Answer>>, StoreError>;
    /// [`Store::answers`] of several (inbox, cursors) at once, in the
    /// order asked (a batch's receipts, asked together as [`Store::messages`]).
    fn answers_of(&self, asked: &[(&str, &[u64])]) -> Result<Vec<Vec<Option<Answer>>>, StoreError> {
        asked
            .iter()
            .map(|(inbox, cursors)| self.answers(inbox, cursors))
            .collect()
    }
    /// How the owner of `inbox` answered the entry at `cursor`, if it did.
    fn answer(&self, inbox: &str, cursor: u64) -> Result<Option<Answer>, StoreError> {
        Ok(self.answers(inbox, &[cursor])?.pop().flatten())
    }
    /// Records the first time the owner of `inbox` was served each of
    /// `cursors` (ascending). Not synced: an observation, not a promise.
    fn mark_fetched(&self, inbox: &str, cursors: &[u64], hub_micros: i64)
    -> Result<(), StoreError>;
    /// When the owner of `inbox` was first served the entry at `cursor`.
    fn fetched(&self, inbox: &str, cursor: u64) -> Result<Option<i64>, StoreError>;
    /// When the owner of `inbox` was first served each of `cursors` (in
    /// any order), one time per cursor.
    fn fetched_many(&self, inbox: &str, cursors: &[u64]) -> Result<Vec<Option<i64>>, StoreError> {
        cursors.iter().map(|c| self.fetched(inbox, *c)).collect()
    }
    /// Up to `limit` rows of a mechanism's audit index with hub time in
    /// [since, until), oldest first; after the row `after` (one a previous
    /// call returned) when given, so that a period is read a chunk at a time.
    fn audit_scope(
        &self,
        mechanism: &str,
        since: i64,
        until: i64,
        after: Option<&ScopedEntry>,
        limit: usize,
    ) -> Result<Vec<ScopedEntry>, StoreError>;
    /// The hub time of the row that follows the first `skip` rows of a
    /// mechanism's audit index with hub time in [since, until), or `None`
    /// when the period holds no more: read from the index alone, no entry,
    /// so that a period too large to audit is refused before any of it is
    /// resolved.
    fn audit_row_past(
        &self,
        mechanism: &str,
        since: i64,
        until: i64,
        skip: usize,
    ) -> Result<Option<i64>, StoreError>;
    /// Stored Merkle hashes of a channel's tree, one per index, in order.
    fn stored_hashes(&self, channel: &str, indexes: &[u64]) -> Result<Vec<Hash>, StoreError>;
    /// The latest signed checkpoint (a signed note) of every channel.
    fn checkpoints(&self) -> Result<BTreeMap<String, String>, StoreError>;
    /// Records channels' latest signed checkpoints (channel, note),
    /// durably and as one commit, before any is served to anyone.
    fn save_checkpoints(&self, notes: &[(&str, &str)]) -> Result<(), StoreError>;
    /// The state record `key` of `space` (see [`state`]).
    fn state_get(&self, space: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every state record of `space` whose key starts with `prefix`, in
    /// key order.
    fn state_scan_prefix(&self, space: &str, prefix: &[u8]) -> Result<StateRecords, StoreError>;
    /// At most `limit` state records of `space` whose keys sort after
    /// `after`, in key order: a space read a bounded piece at a time,
    /// every key of it seen, whatever it starts with.
    fn state_scan_after(
        &self,
        space: &str,
        after: &[u8],
        limit: usize,
    ) -> Result<StateRecords, StoreError>;
    /// Applies a batch of puts and removes to `space` atomically: all of
    /// it or none. Durable once [`Store::state_sync`] returns.
    fn state_apply(&self, space: &str, batch: &StateBatch) -> Result<(), StoreError>;
    /// Makes every state record applied so far durable.
    fn state_sync(&self) -> Result<(), StoreError>;
    /// The access log's storage when this store keeps it (both stores
    /// do: see [`access`]; sled in files of its own, [`access_files`]).
    fn access_log(&self) -> Option<&dyn access::AccessLogStore> {
        None
    }
    /// Writes every record, as of one commit, to `file` (created new,
    /// 0600) while the hub serves, stopping before less than `keep_free`
    /// bytes would be left on its disk: the store's part of a backup. A
    /// store on a database server is backed up with that database's own
    /// tools.
    fn backup_records(&self, file: &Path, keep_free: u64) -> Result<DumpSummary, StoreError> {
        let _ = (file, keep_free);
        Err(StoreError::Database(
            "this store is backed up with its database's own tools, not by the hub".into(),
        ))
    }
}

/// Makes a directory's own entry in its parent durable (with what was
/// written in it, for files created or removed there).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Creates `dir` and any missing parents, each one's entry durable in its
/// own parent, so that a power loss cannot take away a directory whose
/// files were already reported durable.
pub(crate) fn create_dir_durably(dir: &Path) -> Result<(), StoreError> {
    if dir.exists() {
        warn_if_shared(dir);
        // A start that crashed after creating it may not have synced its
        // entry: sync it again. Best effort: a directory an operator made
        // may sit in a parent the hub cannot read.
        if let Err(e) = sync_dir(parent_of(dir)) {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot sync the directory's parent");
        }
        return Ok(());
    }
    // The nearest existing ancestor, and the directories to create below it.
    let mut missing = vec![dir];
    let mut existing = parent_of(dir);
    while !existing.exists() {
        missing.push(existing);
        existing = parent_of(existing);
    }
    // Private: the data directory holds every message, and sled makes
    // its files with the default mode, reachable only through here.
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| {
        StoreError::Database(format!(
            "cannot create the directory {}: {e}",
            dir.display()
        ))
    })?;
    sync_dir(existing)?;
    // Each created directory holds the next one's entry.
    for created in missing.iter().skip(1) {
        sync_dir(created)?;
    }
    Ok(())
}

/// Warns when an existing data directory is open to other users: the
/// hub makes its own 0700, but one an operator made is left as it is.
fn warn_if_shared(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the data directory is open to other users; chmod 700 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// The directory holding `dir`'s entry (`.` for a single relative name).
fn parent_of(dir: &Path) -> &Path {
    dir.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Copies a stopped hub's data directory, as a backup (or an attacker)
/// would: for crash and tamper tests only, which need a directory as it
/// was at one moment.
#[doc(hidden)]
pub fn copy_data_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for item in std::fs::read_dir(from)? {
        let item = item?;
        let target = to.join(item.file_name());
        if item.file_type()?.is_dir() {
            copy_data_dir(&item.path(), &target)?;
        } else {
            std::fs::copy(item.path(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_is_created_with_its_missing_parents() -> Result<(), StoreError> {
        let base = tempfile::tempdir()?;
        let dir = base.path().join("a/b/data");
        create_dir_durably(&dir)?;
        assert!(dir.is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{mode:o}");
        }
        // Existing: nothing to do, nothing refused.
        create_dir_durably(&dir)?;
        // A file where a parent should be is refused, not ignored.
        std::fs::write(base.path().join("file"), b"")?;
        assert!(create_dir_durably(&base.path().join("file/data")).is_err());
        Ok(())
    }
}
