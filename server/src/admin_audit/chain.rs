//! The stored trail read back: its head, its tip, pages of it, and the
//! check of its whole hash chain.
//!
//! Records are read a block at a time (the 256 records whose keys share
//! all but their last byte, one prefix scan), so neither a page nor the
//! check at start holds the trail in memory.

use super::{AdminAuditError, AuditRecord, HEAD_KEY, Page, SPACE, record_key};
use crate::store::Store;

/// The `previous_hash` of the first record.
pub(super) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Records in one block (one prefix scan).
const BLOCK: u64 = 256;

/// Where a trail ends: its count of records and the last one's hash,
/// which the next record chains to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tip {
    pub count: u64,
    pub last_hash: String,
}

impl Default for Tip {
    fn default() -> Self {
        Self {
            count: 0,
            last_hash: GENESIS.to_string(),
        }
    }
}

impl Tip {
    /// Why `record` cannot be the next record after this tip, if it
    /// cannot.
    pub(super) fn refuses(&self, record: &AuditRecord) -> Option<&'static str> {
        if record.seq != self.count + 1 || record.previous_hash != self.last_hash {
            Some("the hash chain or numbering is broken")
        } else if record.compute_hash() != record.hash {
            Some("the record does not match its hash")
        } else {
            None
        }
    }

    /// Moves past `record`, one [`Tip::refuses`] accepted.
    pub(super) fn advance(&mut self, record: &AuditRecord) {
        self.count = record.seq;
        self.last_hash.clone_from(&record.hash);
    }
}

/// How many records the stored trail holds.
fn head(store: &dyn Store) -> Result<u64, AdminAuditError> {
    match store.state_get(SPACE, HEAD_KEY)? {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| AdminAuditError::broken_in_store(0, "its head is not a count of records")),
    }
}

fn decode(seq: u64, bytes: &[u8]) -> Result<AuditRecord, AdminAuditError> {
    let record: AuditRecord = serde_json::from_slice(bytes)
        .map_err(|e| AdminAuditError::broken_in_store(seq, e.to_string()))?;
    if record.seq != seq {
        return Err(AdminAuditError::broken_in_store(
            seq,
            format!("it is stored as record {seq} and says {}", record.seq),
        ));
    }
    Ok(record)
}

/// The stored trail's tip, its last record checked against its hash.
pub(super) fn tip(store: &dyn Store) -> Result<Tip, AdminAuditError> {
    let count = head(store)?;
    if count == 0 {
        return Ok(Tip::default());
    }
    let bytes = store
        .state_get(SPACE, &record_key(count))?
        .ok_or_else(|| AdminAuditError::broken_in_store(count, "the last record is missing"))?;
    let last = decode(count, &bytes)?;
    if last.compute_hash() != last.hash {
        return Err(AdminAuditError::broken_in_store(
            count,
            "the record does not match its hash",
        ));
    }
    Ok(Tip {
        count,
        last_hash: last.hash,
    })
}

/// The stored records of block `block`, (seq, bytes) in order.
fn block(store: &dyn Store, block: u64) -> Result<Vec<(u64, Vec<u8>)>, AdminAuditError> {
    let first = block.saturating_mul(BLOCK);
    let prefix = &record_key(first)[..8];
    store
        .state_scan_prefix(SPACE, prefix)?
        .into_iter()
        .map(|(key, value)| {
            let seq = <[u8; 8]>::try_from(key.get(1..).unwrap_or_default())
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    AdminAuditError::broken_in_store(first, "a key that names no record")
                })?;
            Ok((seq, value))
        })
        .collect()
}

/// Checks the whole stored chain, from the first record to the head, and
/// that nothing is stored after it; returns its tip.
pub fn check(store: &dyn Store) -> Result<Tip, AdminAuditError> {
    walk(store, Beyond::Refused, |_, _| Ok(()))
}

/// What a walk does with records stored after the head it read first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Beyond {
    /// The trail stands still (a start, an offline check): none may be.
    Refused,
    /// The hub serves: they are appends made during the walk.
    Left,
}

/// Checks the stored chain up to the head as [`check`], handing each
/// record (and its stored bytes) to `visit` in order.
pub(super) fn walk(
    store: &dyn Store,
    beyond: Beyond,
    mut visit: impl FnMut(&AuditRecord, &[u8]) -> Result<(), AdminAuditError>,
) -> Result<Tip, AdminAuditError> {
    let count = head(store)?;
    let mut tip = Tip::default();
    // The block after the head's too: a record stored beyond it is caught.
    for b in 0..=(count / BLOCK + 1) {
        for (seq, bytes) in block(store, b)? {
            if seq > count && beyond == Beyond::Left {
                break;
            }
            if seq > count {
                return Err(AdminAuditError::broken_in_store(
                    seq,
                    format!("it lies beyond the trail's last record, {count}"),
                ));
            }
            if seq != tip.count + 1 {
                return Err(missing(tip.count + 1));
            }
            let record = decode(seq, &bytes)?;
            if let Some(reason) = tip.refuses(&record) {
                return Err(AdminAuditError::broken_in_store(seq, reason));
            }
            visit(&record, &bytes)?;
            tip.advance(&record);
        }
    }
    if tip.count != count {
        return Err(missing(tip.count + 1));
    }
    Ok(tip)
}

fn missing(seq: u64) -> AdminAuditError {
    AdminAuditError::broken_in_store(seq, "the record is missing")
}

/// Records with seq > `after`, as [`super::AdminAudit::list`] gives them.
pub(super) fn page(
    store: &dyn Store,
    after: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<Page, AdminAuditError> {
    let count = head(store)?;
    let mut page = Page::default();
    if after >= count || limit == 0 {
        return Ok(page);
    }
    let mut next = after + 1;
    let mut bytes = 0;
    let mut full = false;
    'blocks: for b in (next / BLOCK)..=(count / BLOCK) {
        for (seq, value) in block(store, b)? {
            if seq < next {
                continue;
            }
            if seq > count {
                break 'blocks;
            }
            if seq != next {
                return Err(missing(next));
            }
            if page.records.len() == limit
                || (!page.records.is_empty() && bytes + value.len() > max_bytes)
            {
                full = true;
                break 'blocks;
            }
            bytes += value.len();
            page.records.push(decode(seq, &value)?);
            next += 1;
        }
    }
    if !full && next <= count {
        return Err(missing(next));
    }
    page.more = next <= count;
    Ok(page)
}

/// The hash of stored record `seq` (the genesis hash for 0), if stored.
pub(super) fn hash_at(store: &dyn Store, seq: u64) -> Result<Option<String>, AdminAuditError> {
    if seq == 0 {
        return Ok(Some(GENESIS.to_string()));
    }
    store
        .state_get(SPACE, &record_key(seq))?
        .map(|bytes| decode(seq, &bytes).map(|r| r.hash))
        .transpose()
}
