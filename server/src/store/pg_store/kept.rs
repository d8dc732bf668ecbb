//! What the PostgreSQL store keeps in memory, as the sled store does
//! (`store/recent.rs`): every recipient reads a fresh entry and every
//! client proves it, so without this each of them is a database round
//! trip. Entries and tree hashes never change once committed, so any
//! replica may keep them. An inbox's window of latest positions is filled
//! only by this hub's own commits, and only the lease's holder commits (a
//! hub that loses the lease stops), so the window never misses a position
//! while it is kept; a hub that does not commit reads every page from the
//! database. A group commit that fails may still have landed (its
//! COMMIT's reply lost): the positions it would have added are then
//! unconfirmed, and no page of their inboxes is answered from memory.

use super::{PgStore, read};
use crate::fatal;
use crate::store::recent::Recent;
use crate::store::{InboxItem, NewEntry, StoreError, StoredEntry};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tongbao_proto::Hash;

/// The lock's name, as a poisoned one is reported.
const KEPT: &str = "PostgreSQL store's recent records";

/// The recent records, shared by the store and its commits.
#[derive(Default)]
pub struct Kept {
    recent: Mutex<Recent>,
    /// By inbox, the first position a failed group commit would have
    /// added: whether it landed is for the database to say.
    unconfirmed: Mutex<BTreeMap<String, u64>>,
}

/// A committed entry as it is kept: its channel, seq, decoded entry, and
/// the tree hashes it stored.
pub struct Fresh {
    pub channel: String,
    pub seq: u64,
    pub entry: Arc<StoredEntry>,
    pub tree_hashes: Vec<Hash>,
}

impl Kept {
    /// Keeps what a commit wrote, once it is durable (entries in commit
    /// order, so that each inbox's positions come in ascending order).
    pub fn commit(&self, fresh: &[Fresh]) -> Result<(), StoreError> {
        let mut positions: BTreeMap<&str, Vec<(u64, u64, &str)>> = BTreeMap::new();
        for f in fresh {
            for (inbox, cursor) in f.entry.deliveries() {
                positions
                    .entry(inbox)
                    .or_default()
                    .push((cursor, f.seq, f.channel.as_str()));
            }
        }
        let mut recent = fatal::lock(&self.recent, KEPT)?;
        for (inbox, items) in &positions {
            recent.add_positions(inbox, items);
        }
        for f in fresh {
            recent.add_entry(&f.channel, f.seq, f.entry.clone(), f.entry.encoded.len());
            let first = tongbao_proto::merkle::stored_hash_count(f.seq);
            for (i, h) in f.tree_hashes.iter().enumerate() {
                recent.add_hash(&f.channel, first + i as u64, *h);
            }
        }
        Ok(())
    }

    /// Notes the positions a group commit that failed would have added:
    /// its outcome is unknown (a COMMIT may reach the database and its
    /// reply be lost), and the store refuses writes from now on.
    pub fn failed(&self, entries: &[NewEntry]) -> Result<(), StoreError> {
        let mut unconfirmed = fatal::lock(&self.unconfirmed, KEPT)?;
        for (inbox, cursor) in entries.iter().flat_map(|e| e.shared.deliveries()) {
            let first = unconfirmed.entry(inbox.to_string()).or_insert(cursor);
            *first = (*first).min(cursor);
        }
        Ok(())
    }
}

impl PgStore {
    /// An entry from memory, or read once and kept.
    pub(super) fn kept_entry(
        &self,
        channel: &str,
        seq: u64,
    ) -> Result<Option<Arc<StoredEntry>>, StoreError> {
        if let Some(e) = fatal::lock(&self.kept.recent, KEPT)?.entry(channel, seq) {
            return Ok(Some(e));
        }
        let Some(entry) = self.block(read::entry(self.pool(), channel.to_string(), seq))? else {
            return Ok(None);
        };
        let entry = Arc::new(entry);
        let size = entry.encoded.len();
        fatal::lock(&self.kept.recent, KEPT)?.add_entry(channel, seq, entry.clone(), size);
        Ok(Some(entry))
    }

    /// Stored hashes from memory; those not kept are read in one query,
    /// then kept.
    pub(super) fn kept_hashes(
        &self,
        channel: &str,
        indexes: &[u64],
    ) -> Result<Vec<Hash>, StoreError> {
        let kept: Vec<Option<Hash>> = {
            let r = fatal::lock(&self.kept.recent, KEPT)?;
            indexes.iter().map(|i| r.hash(channel, *i)).collect()
        };
        let missing: Vec<u64> = indexes
            .iter()
            .zip(&kept)
            .filter(|(_, h)| h.is_none())
            .map(|(i, _)| *i)
            .collect();
        if missing.is_empty() {
            return Ok(kept.into_iter().flatten().collect());
        }
        let read = self.block(read::stored_hashes(
            self.pool(),
            channel.to_string(),
            missing.clone(),
        ))?;
        let mut r = fatal::lock(&self.kept.recent, KEPT)?;
        for (i, h) in missing.iter().zip(&read) {
            r.add_hash(channel, *i, *h);
        }
        drop(r);
        let mut read = read.into_iter();
        kept.into_iter()
            .map(|h| {
                h.or_else(|| read.next()).ok_or_else(|| {
                    StoreError::Corrupt(format!("channel {channel}: a stored hash is missing"))
                })
            })
            .collect()
    }

    /// An inbox page from this hub's window of latest positions, or from
    /// the database. A reader at the window's end (a subscriber that
    /// served everything looks once more before it waits) is answered
    /// from memory too, while this hub commits: any later position would
    /// be a later commit of this hub, kept as it commits, before anyone
    /// hears of it. Not once the store refuses writes: a commit whose
    /// reply was lost may have added positions only the database holds,
    /// so the end is read there; and a hub that lost the lease (another
    /// replica may be appending, or the database stopped answering)
    /// refuses every page memory cannot answer, and every page that
    /// reaches the last kept position, rather than answer its end as
    /// current or wait on the database.
    pub(super) fn kept_inbox_page(
        &self,
        inbox: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let unconfirmed = fatal::lock(&self.kept.unconfirmed, KEPT)?
            .get(inbox)
            .copied();
        if let Some(first) = unconfirmed {
            return self.confirmed_page(inbox, after, limit, first);
        }
        if let Some(start) = after.checked_add(1) {
            let kept = fatal::lock(&self.kept.recent, KEPT)?;
            let last = kept.last_position(inbox);
            if let Some(page) = kept.inbox_page(inbox, start, limit) {
                // A page that reaches the last kept position says where
                // the inbox ends, which memory no longer knows.
                let to_end = page.last().map(|i| i.cursor) == last;
                if !to_end || self.lease_gone().is_none() {
                    return Ok(page);
                }
            } else if last == Some(after) && self.lease_gone().is_none() {
                return Ok(Vec::new());
            }
        }
        if let Some(why) = self.lease_gone() {
            return Err(StoreError::Unavailable(format!(
                "{why}; this hub is stopping: read from another replica"
            )));
        }
        self.block(read::inbox_page(
            self.pool(),
            inbox.to_string(),
            after,
            limit,
        ))
    }

    /// A page of an inbox some of whose positions, from `first` on, a
    /// failed group commit would have added: read from the database, and
    /// served up to `first`. A reader that reaches `first` while the
    /// database holds it (the commit landed, its reply lost) is refused:
    /// this hub never confirmed those positions (its tree and inbox heads
    /// do not hold them; the restart does), and an empty page would say
    /// the reader has everything.
    fn confirmed_page(
        &self,
        inbox: &str,
        after: u64,
        limit: usize,
        first: u64,
    ) -> Result<Vec<InboxItem>, StoreError> {
        if let Some(why) = self.lease_gone() {
            return Err(StoreError::Unavailable(format!(
                "{why}; this hub is stopping: read from another replica"
            )));
        }
        let mut page = self.block(read::inbox_page(
            self.pool(),
            inbox.to_string(),
            after,
            limit,
        ))?;
        let landed = page.iter().any(|i| i.cursor >= first);
        page.retain(|i| i.cursor < first);
        if page.is_empty() && landed {
            return Err(StoreError::Unavailable(format!(
                "inbox {inbox}: positions from {first} on are in the database, written by a group \
                 commit whose outcome this hub could not learn (it refuses writes until it is \
                 restarted, and serves them after the restart); read them from another replica, \
                 or after the restart"
            )));
        }
        Ok(page)
    }
}
