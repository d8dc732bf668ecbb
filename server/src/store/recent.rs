//! Recently committed records kept in memory.
//!
//! Fresh entries are read by every recipient and proved by every client,
//! and subscribers follow the newest positions of their inboxes, so the
//! store keeps these decoded rather than reading them back from sled.

use super::{InboxItem, StoredEntry};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tongbao_proto::Hash;

/// Bytes of recently committed entries kept decoded in memory, counted by
/// their encoding (the decoded entries weigh about as much again). Counting
/// both at this bound kept fewer entries than publishers have in flight,
/// and subscribers fell behind to disk (BENCHMARKS.md, "sled's cache at
/// 16 MiB").
const ENTRY_CACHE_BYTES: usize = 16 << 20;
/// Merkle hashes kept in memory.
const HASH_CACHE_LEN: usize = 1 << 17;
/// Latest positions of each inbox kept in memory, so that a subscriber
/// following its inbox reads its next page without a database lookup.
pub(super) const INBOX_CACHE_LEN: usize = 4096;

/// Records that never change once committed, kept in memory: fresh entries
/// are read by every recipient and proved by every client, so each is
/// decoded once and its tree hashes are not looked up again.
#[derive(Default)]
pub(super) struct Recent {
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
    pub(super) fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        self.names.insert(n.clone());
        n
    }

    pub(super) fn entry(&self, channel: &str, seq: u64) -> Option<Arc<StoredEntry>> {
        self.entries.get(channel)?.get(&seq).cloned()
    }

    pub(super) fn hash(&self, channel: &str, index: u64) -> Option<Hash> {
        self.hashes.get(channel)?.get(&index).copied()
    }

    pub(super) fn add_entry(
        &mut self,
        channel: &str,
        seq: u64,
        entry: Arc<StoredEntry>,
        size: usize,
    ) {
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
    pub(super) fn add_positions(&mut self, inbox: &str, items: &[(u64, u64, &str)]) {
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
    pub(super) fn inbox_page(
        &self,
        inbox: &str,
        start: u64,
        limit: usize,
    ) -> Option<Vec<InboxItem>> {
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

    /// The latest position kept of `inbox`, if any is.
    pub(super) fn last_position(&self, inbox: &str) -> Option<u64> {
        self.inboxes
            .get(inbox)?
            .back()
            .map(|(cursor, _, _)| *cursor)
    }

    pub(super) fn add_hash(&mut self, channel: &str, index: u64, hash: Hash) {
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
