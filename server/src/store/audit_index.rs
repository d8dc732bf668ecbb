//! A mechanism's audit index in sled: rows in runs by time (format 6).
//!
//! A row names an entry an office audits: its hub time, channel and seq,
//! under the mechanism, so that an audit period is one key range. Format 5
//! kept one sled key per row (about 45 bytes, two rows a message at 13
//! recipients) and a copy of what the audit needs of the entry in the
//! segments; sled's file grows with the keys written far more than with
//! their size, and the copy repeated the entry's recipients. Format 6 keeps
//! the rows a flush files for one mechanism in runs of up to a kilobyte,
//! a few varints a row, and nothing else: what an audit reports of a row
//! is read from the entry it names (the entry's bytes are the signed ones,
//! so the row can no longer differ from them).
//!
//! A run is keyed by its last row's key, as inbox runs are by their last
//! position, and runs never overlap: filing rows that fall within an
//! existing run (a hub clock set back, a journal replayed over a flush
//! that had reached sled) rewrites that run with them, in one sled batch,
//! and rows that fall between runs make runs of their own, cut before the
//! next run. So the runs of a period are the keys from
//! its start on, in order, and a run's rows all come after the previous
//! run's. Until a flush files them, a commit's rows wait in the overlay
//! (and the journal) one key each, with an empty value.

use super::codec::{AUDIT_SCOPE, hash_from, key, u64_from};
use super::{ScopedEntry, StoreError, StoredEntry};
use crate::fatal;
use prost::Message as _;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The first byte of a run's value: never the first byte of a row format
/// 3 kept whole (an encoded row starts with a nonzero tag, and 1 is no
/// valid tag), nor of format 4 and 5's row places (0).
pub(super) const RUN: u8 = 1;
/// A run grows no larger than this (about a hundred rows), so that sled's
/// nodes stay small and a period's first run decodes little.
const RUN_BYTES: usize = 1 << 10;
/// The longest channel name a run holds (the policy allows far shorter).
const MAX_NAME: usize = 255;

/// Keeps reads of sled's runs apart from their rewrites. sled 0.34's
/// iterator is no snapshot (it walks a copy of a leaf, then seeks past the
/// last key it gave), so a read walking runs while a batch removes some
/// and inserts their rows cut at other keys could miss rows or see some
/// twice. A rewrite's batch holds this for writing, a read of runs for
/// reading. Runs inserted between others need no lock: they hide no row
/// filed before, and their rows wait in the overlay until they are in.
#[derive(Debug, Default)]
pub(super) struct Rewrites(RwLock<()>);

/// The lock's name, as a poisoned one is reported.
const REWRITES: &str = "audit index runs";

impl Rewrites {
    /// Holds rewrites off while runs are read.
    pub(super) fn hold_still(&self) -> Result<RwLockReadGuard<'_, ()>, StoreError> {
        let still = fatal::read(&self.0, REWRITES)?;
        #[cfg(test)]
        HELD.set(Some(self.0.try_write().is_err()));
        Ok(still)
    }

    /// Waits until no read holds still, and holds reads off.
    fn rewrite(&self) -> Result<RwLockWriteGuard<'_, ()>, StoreError> {
        let alone = fatal::write(&self.0, REWRITES)?;
        #[cfg(test)]
        HELD.set(Some(self.0.try_read().is_err()));
        Ok(alone)
    }
}

#[cfg(test)]
thread_local! {
    /// Whether the last read or rewrite of runs on this thread had the
    /// lock as it needs it (tests of the lock only).
    pub(super) static HELD: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// One row of a mechanism's audit index; ordered as its key is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Row {
    pub hub_micros: u64,
    pub seq: u64,
    pub channel: String,
}

impl Row {
    /// The row's key in `mechanism`'s index.
    pub(super) fn key(&self, mechanism: &str) -> Vec<u8> {
        let mut k = key(AUDIT_SCOPE, mechanism, Some(self.hub_micros));
        k.push(0);
        k.extend_from_slice(&self.seq.to_be_bytes());
        k.extend_from_slice(self.channel.as_bytes());
        k
    }

    /// The mechanism and the row of an audit index key.
    pub(super) fn of_key(k: &[u8]) -> Result<(String, Row), StoreError> {
        let (mechanism, hub_micros, seq, channel) = audit_key_parts(k)?;
        Ok((
            mechanism,
            Row {
                hub_micros: hub_micros as u64,
                seq,
                channel,
            },
        ))
    }
}

/// The first key past every row of `mechanism`.
pub(super) fn mechanism_end(mechanism: &str) -> Vec<u8> {
    let mut k = key(AUDIT_SCOPE, mechanism, None);
    k.push(1);
    k
}

/// Builds one run: rows ascending and distinct, each as its hub time's
/// step from the previous row's (the first: the time itself), its seq, and
/// its channel's index among the names the run has named so far (the
/// name itself, after its length, when it is new).
struct RunWriter {
    value: Vec<u8>,
    names: Vec<String>,
    last: Option<Row>,
}

impl RunWriter {
    fn new() -> Self {
        Self {
            value: vec![RUN],
            names: Vec::new(),
            last: None,
        }
    }

    /// Adds `row` unless the run is full (a run takes one row at least).
    fn push(&mut self, row: &Row) -> bool {
        // Rows come ascending (callers sort them), so the step is never
        // negative.
        let step = row
            .hub_micros
            .saturating_sub(self.last.as_ref().map_or(0, |r| r.hub_micros));
        let known = self.names.iter().position(|n| *n == row.channel);
        let index = known.unwrap_or(self.names.len()) as u64;
        let mut bytes = Vec::with_capacity(24);
        prost::encoding::encode_varint(step, &mut bytes);
        prost::encoding::encode_varint(row.seq, &mut bytes);
        prost::encoding::encode_varint(index, &mut bytes);
        if known.is_none() {
            prost::encoding::encode_varint(row.channel.len() as u64, &mut bytes);
            bytes.extend_from_slice(row.channel.as_bytes());
        }
        if self.last.is_some() && self.value.len() + bytes.len() > RUN_BYTES {
            return false;
        }
        self.value.extend_from_slice(&bytes);
        if known.is_none() {
            self.names.push(row.channel.clone());
        }
        self.last = Some(row.clone());
        true
    }
}

/// `rows` (ascending, distinct) as runs: (the last row, the run's value).
/// A row naming a channel longer than a run holds is left out of runs and
/// returned alone with an empty value, as a commit's pending row is.
pub(super) fn runs(rows: &[Row]) -> Vec<(Row, Vec<u8>)> {
    let mut out = Vec::new();
    let mut w = RunWriter::new();
    for row in rows {
        if row.channel.len() > MAX_NAME {
            // The run so far ends before it, so that none spans it.
            let full = std::mem::replace(&mut w, RunWriter::new());
            if let Some(last) = full.last {
                out.push((last, full.value));
            }
            out.push((row.clone(), Vec::new()));
            continue;
        }
        if !w.push(row) {
            let full = std::mem::replace(&mut w, RunWriter::new());
            if let Some(last) = full.last {
                out.push((last, full.value));
            }
            w.push(row);
        }
    }
    if let Some(last) = w.last {
        out.push((last, w.value));
    }
    out
}

/// The rows of the run stored under `last`'s key; the whole run checked
/// (rows ascending, the last one its key's).
fn decode_run(last: &Row, v: &[u8]) -> Result<Vec<Row>, StoreError> {
    let bad = || {
        StoreError::Corrupt(format!(
            "audit index: the run ending at {}:{} is garbled",
            last.channel, last.seq
        ))
    };
    let mut rest = v.strip_prefix(&[RUN]).ok_or_else(bad)?;
    let mut names: Vec<String> = Vec::new();
    let mut out: Vec<Row> = Vec::new();
    while !rest.is_empty() {
        let mut next = || prost::encoding::decode_varint(&mut rest).map_err(|_| bad());
        let step = next()?;
        let seq = next()?;
        let index = next()?;
        let hub_micros = out
            .last()
            .map_or(Some(step), |r| r.hub_micros.checked_add(step))
            .ok_or_else(bad)?;
        let channel = match names.get(index as usize) {
            Some(name) => name.clone(),
            None if index == names.len() as u64 => {
                let len = next()? as usize;
                if len > MAX_NAME {
                    return Err(bad());
                }
                let (name, tail) = rest.split_at_checked(len).ok_or_else(bad)?;
                rest = tail;
                let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
                names.push(name.clone());
                name
            }
            None => return Err(bad()),
        };
        let row = Row {
            hub_micros,
            seq,
            channel,
        };
        if out.last().is_some_and(|r| *r >= row) {
            return Err(bad());
        }
        out.push(row);
    }
    if out.last() != Some(last) {
        return Err(bad());
    }
    Ok(out)
}

/// The rows sled (or the overlay) holds under `k`: a run's, or the one
/// row of a pending key (and of format 3 to 5's keys, one a row, until
/// their upgrade gathers them).
pub(super) fn rows_of(k: &[u8], v: &[u8]) -> Result<Vec<Row>, StoreError> {
    let (_, row) = Row::of_key(k)?;
    if v.first() == Some(&RUN) {
        decode_run(&row, v)
    } else {
        Ok(vec![row])
    }
}

/// Files `rows` (of one mechanism, in any order) into its runs in `tree`,
/// and returns the runs written.
/// A run is rewritten only when some new row falls within it (between its
/// first row and its last, and keys of one row each, as an upgrade
/// gathers them, when a new row is theirs): all of them, with their new
/// rows, in one sled batch, so that runs never overlap and rows already
/// filed are filed once. Rows between runs (and after every run, the usual
/// case) make runs of their own, cut before the next run's first row, and
/// leave the runs around them as they are: after a hub clock set back,
/// each flush would otherwise rewrite every run between its earliest row
/// and its latest.
///
/// A run that does not decode fails the filing, naming its key, when a
/// new row lies after the run before it and at or before its key: its
/// first row cannot be known, so such a row could land within it, and a
/// read of runs ([`filed_rows`]) would then stop short of it and answer
/// without its rows. Rows elsewhere never meet it.
pub(super) fn file_rows(
    tree: &sled::Tree,
    rewrites: &Rewrites,
    mechanism: &str,
    mut rows: Vec<Row>,
) -> Result<usize, StoreError> {
    rows.sort_unstable();
    rows.dedup();
    let end = mechanism_end(mechanism);
    let mut batch = sled::Batch::default();
    let mut rewritten = false;
    let mut written: Vec<(Row, Vec<u8>)> = Vec::new();
    // Rows to cut into runs together: new ones and those of the runs they
    // fall within, with no run left as it is among them.
    let mut pending: Vec<Row> = Vec::new();
    let cut = |pending: &mut Vec<Row>, written: &mut Vec<(Row, Vec<u8>)>| {
        pending.sort_unstable();
        pending.dedup();
        written.extend(runs(pending));
        pending.clear();
    };
    let mut rest = rows.as_slice();
    // Past the last run looked at: each run is looked at once.
    let mut from: Vec<u8> = Vec::new();
    while let Some(first) = rest.first() {
        let seek = first.key(mechanism).max(from.clone());
        // Runs between the last one looked at and the next row are left
        // as they are: the rows so far are cut before them.
        if !pending.is_empty()
            && seek > from
            && tree
                .range(from.clone()..seek.clone())
                .next()
                .transpose()?
                .is_some()
        {
            cut(&mut pending, &mut written);
        }
        // The first run ending at or after the next row.
        let Some(kv) = tree.range(seek..end.clone()).next() else {
            pending.extend_from_slice(rest);
            break;
        };
        let (k, v) = kv?;
        from = [k.as_ref(), &[0]].concat();
        // The next row lies after the run before this one and at or
        // before its key: a run that does not decode is no place to file
        // it around (see above).
        let theirs = rows_of(&k, &v).map_err(|e| match e {
            StoreError::Corrupt(why) => StoreError::Corrupt(format!(
                "{why} (key {}), and a row to file lies at or before it: flushes fail until \
                 it is restored",
                hex::encode(&k)
            )),
            e => e,
        })?;
        let (Some(lo), Some(hi)) = (theirs.first(), theirs.last()) else {
            return Err(StoreError::Corrupt("audit index: an empty run".into()));
        };
        // Rows before the run, in the gap since the last one.
        let gap = rest.partition_point(|r| r < lo);
        pending.extend_from_slice(&rest[..gap]);
        rest = &rest[gap..];
        let within = rest.partition_point(|r| r <= hi);
        if within == 0 {
            // No row falls within the run: it is left as it is.
            cut(&mut pending, &mut written);
            continue;
        }
        // The run is rewritten with the rows that fall within it.
        pending.extend(theirs);
        pending.extend_from_slice(&rest[..within]);
        batch.remove(k);
        rewritten = true;
        rest = &rest[within..];
    }
    cut(&mut pending, &mut written);
    let filed = written.len();
    if rewritten {
        for (last, value) in written {
            // After the removal of the same key, if any: the insert wins.
            batch.insert(last.key(mechanism), value);
        }
        let _alone = rewrites.rewrite()?;
        tree.apply_batch(batch)?;
    } else {
        for (last, value) in written {
            tree.insert(last.key(mechanism), value)?;
        }
    }
    Ok(filed)
}

/// The rows sled's runs hold in [`from`, `to`) of `mechanism`'s index, in
/// order: `limit` at least when there are (the last run read is read
/// whole). Runs are keyed by their last row and never overlap: the
/// period's first run is the first key at or after its start, and each
/// run's rows follow the previous run's. Read with rewrites held off
/// ([`Rewrites`]); a row not past the greatest one taken is skipped and
/// not counted, so that runs seen to overlap could never end the read
/// with fewer than `limit` rows (which an audit would take for the end of
/// its period).
pub(super) fn filed_rows(
    tree: &sled::Tree,
    rewrites: &Rewrites,
    mechanism: &str,
    (from, to): (&[u8], &[u8]),
    limit: usize,
) -> Result<Vec<Row>, StoreError> {
    let _still = rewrites.hold_still()?;
    let mut out: Vec<Row> = Vec::new();
    for kv in tree.range(from..mechanism_end(mechanism).as_slice()) {
        let (k, v) = kv?;
        let run = rows_of(&k, &v)?;
        if run
            .first()
            .is_none_or(|r| r.key(mechanism).as_slice() >= to)
        {
            break;
        }
        for row in run {
            let at = row.key(mechanism);
            if at.as_slice() >= from && at.as_slice() < to && out.last().is_none_or(|r| *r < row) {
                out.push(row);
            }
        }
        // A run ending past the period is its last (the next one's rows
        // all come later): no more is read.
        if out.len() >= limit || k.as_ref() >= to {
            break;
        }
    }
    Ok(out)
}

/// What an audit reports of `row`, read from its entry.
pub(super) fn scoped_entry(row: Row, stored: &StoredEntry) -> ScopedEntry {
    let message = stored
        .entry
        .message
        .as_ref()
        .and_then(|m| m.message.as_ref());
    ScopedEntry {
        hub_micros: row.hub_micros as i64,
        channel: row.channel,
        seq: row.seq,
        leaf_hash: stored.leaf_hash,
        sender: message.map(|m| m.sender.clone()).unwrap_or_default(),
        kind: message.map(|m| m.kind).unwrap_or_default(),
        message_id: message.map(|m| m.message_id.clone()).unwrap_or_default(),
        ack_deadline_micros: message
            .and_then(|m| m.labels)
            .map(|l| l.ack_deadline_micros)
            .unwrap_or(0),
        deliveries: stored
            .deliveries()
            .map(|(inbox, cursor)| (inbox.to_string(), cursor))
            .collect(),
    }
}

/// An audit index row whole: what the office's audit needs of an entry
/// (its key holds the mechanism, hub time, seq and channel), as formats 3
/// to 5 kept each row, as a dump keeps it and as the PostgreSQL store
/// keeps it.
#[derive(Clone, PartialEq, prost::Message)]
struct AuditRow {
    #[prost(bytes = "vec", tag = "1")]
    leaf_hash: Vec<u8>,
    #[prost(string, tag = "2")]
    sender: String,
    #[prost(int32, tag = "3")]
    kind: i32,
    #[prost(string, tag = "4")]
    message_id: String,
    #[prost(int64, tag = "5")]
    ack_deadline_micros: i64,
    #[prost(string, repeated, tag = "6")]
    recipients: Vec<String>,
    #[prost(uint64, repeated, tag = "7")]
    cursors: Vec<u64>,
}

/// The key of an entry's row in a mechanism's audit index: mechanism, hub
/// time, then 0, seq (8) and channel, so that a period is one key range.
pub(super) fn audit_key(mechanism: &str, hub_micros: i64, seq: u64, channel: &str) -> Vec<u8> {
    let mut k = key(AUDIT_SCOPE, mechanism, Some(hub_micros.max(0) as u64));
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(channel.as_bytes());
    k
}

/// The keys of a mechanism's audit rows with hub time in [since, until),
/// after the row `after` when given: (first key, key past the last).
pub(super) fn audit_range(
    mechanism: &str,
    since: i64,
    until: i64,
    after: Option<&ScopedEntry>,
) -> (Vec<u8>, Vec<u8>) {
    let from = match after {
        Some(row) => {
            // The first key after the row's.
            let mut k = audit_key(mechanism, row.hub_micros, row.seq, &row.channel);
            k.push(0);
            k
        }
        None => key(AUDIT_SCOPE, mechanism, Some(since.max(0) as u64)),
    };
    (from, key(AUDIT_SCOPE, mechanism, Some(until.max(0) as u64)))
}

/// (mechanism, hub time, seq, channel) of an audit index key.
pub(super) fn audit_key_parts(k: &[u8]) -> Result<(String, i64, u64, String), StoreError> {
    let bad = || StoreError::Corrupt("audit index key".into());
    let rest = k.get(2..).ok_or_else(bad)?;
    // Mechanism ids hold no 0 byte; after the mechanism's: hub micros (8),
    // 0, seq (8), channel.
    let at = rest.iter().position(|b| *b == 0).ok_or_else(bad)?;
    let (Some(micros), Some(seq), Some(channel)) = (
        rest.get(at + 1..at + 9),
        rest.get(at + 10..at + 18),
        rest.get(at + 18..),
    ) else {
        return Err(bad());
    };
    Ok((
        String::from_utf8_lossy(&rest[..at]).into_owned(),
        u64_from(micros)? as i64,
        u64_from(seq)?,
        String::from_utf8_lossy(channel).into_owned(),
    ))
}

/// An entry's audit index row whole ([`AuditRow`]).
pub(super) fn audit_row(stored: &StoredEntry) -> Vec<u8> {
    let message = stored
        .entry
        .message
        .as_ref()
        .and_then(|m| m.message.as_ref());
    AuditRow {
        leaf_hash: stored.leaf_hash.to_vec(),
        sender: message.map(|m| m.sender.clone()).unwrap_or_default(),
        kind: message.map(|m| m.kind).unwrap_or_default(),
        message_id: message.map(|m| m.message_id.clone()).unwrap_or_default(),
        ack_deadline_micros: message
            .and_then(|m| m.labels)
            .map(|l| l.ack_deadline_micros)
            .unwrap_or(0),
        recipients: stored.entry.recipients.clone(),
        cursors: stored.cursors.clone(),
    }
    .encode_to_vec()
}

pub(super) fn decode_audit_row(k: &[u8], v: &[u8]) -> Result<ScopedEntry, StoreError> {
    let (_, hub_micros, seq, channel) = audit_key_parts(k)?;
    let bad = |why: &str| StoreError::Corrupt(format!("audit row of {channel}:{seq}: {why}"));
    let row = AuditRow::decode(v).map_err(|e| bad(&e.to_string()))?;
    if row.recipients.len() != row.cursors.len() {
        return Err(bad("recipients and positions differ in number"));
    }
    let leaf_hash = hash_from(&row.leaf_hash).map_err(|_| bad("no leaf hash"))?;
    Ok(ScopedEntry {
        hub_micros,
        leaf_hash,
        sender: row.sender,
        kind: row.kind,
        message_id: row.message_id,
        ack_deadline_micros: row.ack_deadline_micros,
        deliveries: row.recipients.into_iter().zip(row.cursors).collect(),
        seq,
        channel,
    })
}

/// Runs on arbitrary or damaged bytes: no panic, and what is written
/// reads back, cut into runs within their size.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::store::codec::proptests::damaged;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn rows() -> impl Strategy<Value = Vec<Row>> {
        vec(
            (
                prop_oneof![0..3_000u64, any::<u64>()],
                prop_oneof![0..50u64, any::<u64>()],
                "[a-d]{1,3}",
            ),
            1..300,
        )
        .prop_map(|rows| {
            let mut rows: Vec<Row> = rows
                .into_iter()
                .map(|(hub_micros, seq, channel)| Row {
                    hub_micros,
                    seq,
                    channel,
                })
                .collect();
            rows.sort_unstable();
            rows.dedup();
            rows
        })
    }

    proptest! {
        #[test]
        fn runs_read_back(rows in rows()) {
            let mut read = Vec::new();
            for (last, value) in runs(&rows) {
                prop_assert!(value.len() <= RUN_BYTES, "{} bytes", value.len());
                read.extend(rows_of(&last.key("fund"), &value)?);
            }
            prop_assert_eq!(read, rows);
        }

        #[test]
        fn damaged_runs_decode_without_panic(
            value in damaged(rows().prop_map(|rows| {
                runs(&rows).into_iter().next().map(|(_, v)| v).unwrap_or_default()
            })),
            hub_micros in 0..3_000u64,
        ) {
            let last = Row { hub_micros, seq: 1, channel: "a".into() };
            if let Ok(rows) = rows_of(&last.key("fund"), &value) {
                prop_assert_eq!(rows.last(), Some(&last));
                prop_assert!(rows.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }

    #[test]
    fn a_long_channel_name_is_a_row_of_its_own() {
        let long = Row {
            hub_micros: 5,
            seq: 1,
            channel: "a".repeat(300),
        };
        let rows = vec![
            Row {
                hub_micros: 1,
                seq: 0,
                channel: "a".into(),
            },
            long.clone(),
        ];
        let cut = runs(&rows);
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[1], (long, Vec::new()));
    }
}

#[cfg(test)]
mod filing;
