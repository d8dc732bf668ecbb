//! The stored trail read back: its head, its tip, pages of it, and the
//! check of its whole hash chain.
//!
//! Records are read a block at a time (at most 256 keys in key order,
//! one bounded scan), so neither a page nor the check at start holds the
//! trail in memory.

use super::{AdminAuditError, AuditRecord, HEAD_KEY, MOVING_KEY, Page, RECORD, SPACE, record_key};
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

/// The seq a key names, if it is a record's key.
fn seq_of(key: &[u8]) -> Option<u64> {
    match key.split_first() {
        Some((&RECORD, seq)) => <[u8; 8]>::try_from(seq).ok().map(u64::from_be_bytes),
        _ => None,
    }
}

/// The trail's own keys that are not records.
fn known(key: &[u8]) -> bool {
    key == HEAD_KEY || key == MOVING_KEY
}

/// Decodes stored record `seq`, refusing bytes that are not the record's
/// own encoding: the hash covers the fields only, so extra fields or
/// other spacing would pass it yet not be the record a backup writes.
fn decode(seq: u64, bytes: &[u8]) -> Result<AuditRecord, AdminAuditError> {
    let record: AuditRecord = serde_json::from_slice(bytes)
        .map_err(|e| AdminAuditError::broken_in_store(seq, e.to_string()))?;
    if record.seq != seq {
        return Err(AdminAuditError::broken_in_store(
            seq,
            format!("it is stored as record {seq} and says {}", record.seq),
        ));
    }
    if encode(&record)? != bytes {
        return Err(AdminAuditError::broken_in_store(
            seq,
            "its stored bytes are not the record's own encoding",
        ));
    }
    Ok(record)
}

/// A record's stored bytes: compact JSON, its fields in order.
pub(super) fn encode(record: &AuditRecord) -> Result<Vec<u8>, AdminAuditError> {
    serde_json::to_vec(record).map_err(|e| {
        AdminAuditError::Store(crate::store::StoreError::Format(format!(
            "cannot encode admin trail record {}: {e}",
            record.seq
        )))
    })
}

/// Why a key stored after the head refuses the trail.
fn beyond(key: &[u8], count: u64) -> AdminAuditError {
    match seq_of(key) {
        Some(seq) => AdminAuditError::broken_in_store(
            seq,
            format!("it is stored beyond the trail's head, which counts {count} records"),
        ),
        None => stray(count + 1, key),
    }
}

/// A key of the trail's space that names nothing the trail keeps.
fn stray(at: u64, key: &[u8]) -> AdminAuditError {
    AdminAuditError::broken_in_store(
        at,
        format!(
            "a key of {} bytes that names no record is stored in its space",
            key.len()
        ),
    )
}

/// The stored trail's tip, its last record checked against its hash,
/// and nothing stored after it: a head lost or lowered would otherwise
/// have the next append overwrite records.
pub(super) fn tip(store: &dyn Store) -> Result<Tip, AdminAuditError> {
    let count = head(store)?;
    if let Some((key, _)) = store
        .state_scan_after(SPACE, &record_key(count), 1)?
        .first()
    {
        return Err(beyond(key, count));
    }
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

/// Checks the whole stored chain, from the first record to the head, and
/// that nothing is stored after it; returns its tip.
pub fn check(store: &dyn Store) -> Result<Tip, AdminAuditError> {
    walk(store, Beyond::Refused, |_| Ok(()))
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
/// record to `visit` in order. Every key of the space is read, a block at
/// a time in key order, so that a key that names no record, or a record
/// however far beyond the head, is caught.
pub(super) fn walk(
    store: &dyn Store,
    beyond_head: Beyond,
    mut visit: impl FnMut(&AuditRecord) -> Result<(), AdminAuditError>,
) -> Result<Tip, AdminAuditError> {
    let count = head(store)?;
    let mut tip = Tip::default();
    let mut after = Vec::new();
    'blocks: loop {
        let rows = store.state_scan_after(SPACE, &after, BLOCK as usize)?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        after.clone_from(last);
        for (key, bytes) in rows {
            if known(&key) {
                continue;
            }
            match seq_of(&key) {
                Some(seq) if seq > count && beyond_head == Beyond::Left => break 'blocks,
                Some(seq) if seq <= count => {
                    if seq != tip.count + 1 {
                        return Err(missing(tip.count + 1));
                    }
                    let record = decode(seq, &bytes)?;
                    if let Some(reason) = tip.refuses(&record) {
                        return Err(AdminAuditError::broken_in_store(seq, reason));
                    }
                    visit(&record)?;
                    tip.advance(&record);
                }
                Some(_) => return Err(beyond(&key, count)),
                None => return Err(stray(tip.count + 1, &key)),
            }
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
    let mut from = record_key(after).to_vec();
    let mut full = false;
    'blocks: while next <= count && page.records.len() < limit {
        let want = (limit - page.records.len()).min(BLOCK as usize);
        let rows = store.state_scan_after(SPACE, &from, want)?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        from.clone_from(last);
        for (key, value) in rows {
            match seq_of(&key) {
                Some(seq) if seq > count => break 'blocks,
                Some(seq) if seq == next => {}
                Some(_) => return Err(missing(next)),
                None => return Err(stray(next, &key)),
            }
            if !page.records.is_empty() && bytes + value.len() > max_bytes {
                full = true;
                break 'blocks;
            }
            bytes += value.len();
            page.records.push(decode(next, &value)?);
            next += 1;
        }
    }
    if !full && page.records.len() < limit && next <= count {
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
