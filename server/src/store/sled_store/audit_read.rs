//! An audit's rows read with their entries, a run of places at a time.
//!
//! Format 6's rows name their entries and keep nothing else, so an audit
//! reads each row's entry record. Rows of one channel in a period are
//! mostly consecutive seqs: their places are in one run of places, their
//! records one after another in one segment. Looking each place up on its
//! own (a sled range read and a run decoded a row) and reading each record
//! on its own (two system calls a row) made audits two to four times
//! slower than format 5's copies of the rows. Here the run found for one
//! row of a channel serves the rows after it, records that lie together
//! are read in one read, and only what the audit reports is decoded
//! ([`super::super::audited_entry`]).

use super::super::StoreError;
use super::super::audit_index::{Row, filed_rows, rows_of, scoped_entry};
use super::super::audited_entry::audited;
use super::super::segments::Place;
use super::super::{ScopedEntry, StoredEntry};
use super::lookup::{entry_place_run, read_entry_record};
use super::{RECENT, SledStore};
use crate::fatal;
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

/// Records at most this far apart (other entries, tree hashes) are read
/// in one read: a few kilobytes more cost less than another read.
const GAP_BYTES: u64 = 4 << 10;
/// One read spans no more than this (a single larger record is read alone).
const SPAN_BYTES: u64 = 1 << 20;
/// Rows counted at a time when a period is measured: a count holds at
/// most this many rows (and as many from the overlay), whatever its period.
#[cfg(not(test))]
const COUNT_CHUNK: usize = 4096;
/// Small in tests, so that a count crosses chunks.
#[cfg(test)]
const COUNT_CHUNK: usize = 7;

/// The places of one run, the run's first seq first: a row's place is one
/// index away.
struct KnownPlaces {
    first: u64,
    places: Vec<Place>,
}

impl KnownPlaces {
    fn place(&self, seq: u64) -> Option<Place> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        self.places.get(i).copied()
    }
}

impl SledStore {
    /// Up to `limit` rows of `mechanism`'s index with keys in [from, to),
    /// in key order: the rows waiting in the overlay (a key each, so the
    /// first `limit` keys are enough), then sled's runs. A row a flush
    /// files meanwhile is seen on one side or both (once in the result).
    pub(super) fn scope_rows(
        &self,
        mechanism: &str,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let mut rows: Vec<Row> = Vec::new();
        for (k, v) in self
            .durability
            .overlay_read()?
            .range_first(from, Bound::Excluded(to), limit)
        {
            rows.extend(rows_of(&k, &v)?);
        }
        let d = &self.durability;
        rows.extend(filed_rows(
            &d.tree,
            &d.rewrites,
            mechanism,
            (from, to),
            limit,
        )?);
        // Only the window's rows, whatever a key held: a chunk never steps
        // back before `from`.
        rows.retain(|r| {
            let k = r.key(mechanism);
            k.as_slice() >= from && k.as_slice() < to
        });
        rows.sort_unstable();
        rows.dedup();
        rows.truncate(limit);
        Ok(rows)
    }

    /// The hub time of the row after the first `skip` with keys in [from,
    /// to), counted a chunk of rows at a time, no entry read.
    pub(super) fn row_past(
        &self,
        mechanism: &str,
        mut from: Vec<u8>,
        to: &[u8],
        mut skip: usize,
    ) -> Result<Option<i64>, StoreError> {
        loop {
            let rows = self.scope_rows(mechanism, &from, to, COUNT_CHUNK)?;
            if let Some(past) = rows.get(skip) {
                return Ok(Some(past.hub_micros as i64));
            }
            let Some(last) = rows.last().filter(|_| rows.len() == COUNT_CHUNK) else {
                return Ok(None);
            };
            skip -= rows.len();
            // The first key after the last row's.
            from = last.key(mechanism);
            from.push(0);
        }
    }

    /// What an audit of `mechanism` reports of each of `rows`, in order,
    /// read from the entries they name.
    pub(super) fn audited_rows(
        &self,
        mechanism: &str,
        rows: &[Row],
    ) -> Result<Vec<ScopedEntry>, StoreError> {
        let d = &self.durability;
        // Entries the cache holds are decoded already; one lock for all.
        let cached: Vec<Option<Arc<StoredEntry>>> = {
            let recent = fatal::lock(&self.recent, RECENT)?;
            rows.iter()
                .map(|r| recent.entry(&r.channel, r.seq))
                .collect()
        };
        let mut out: Vec<Option<ScopedEntry>> = Vec::with_capacity(rows.len());
        // The last run of places found, by channel (rows of channels
        // interleaved keep theirs).
        let mut known: HashMap<&str, KnownPlaces> = HashMap::new();
        let mut wanted: Vec<(usize, Place)> = Vec::new();
        for (i, (row, cached)) in rows.iter().zip(cached).enumerate() {
            if let Some(entry) = cached {
                out.push(Some(scoped_entry(row.clone(), &entry)));
                continue;
            }
            let mut place = known
                .get(row.channel.as_str())
                .and_then(|k| k.place(row.seq));
            if place.is_none()
                && let Some(run) = entry_place_run(d, &row.channel, row.seq)?
            {
                let k = KnownPlaces {
                    first: run.first(),
                    places: run.places().map(|(_, p)| p).collect(),
                };
                place = k.place(row.seq);
                known.insert(&row.channel, k);
            }
            match place {
                Some(place) => {
                    wanted.push((i, place));
                    out.push(None);
                }
                None => {
                    // A commit still in the overlay, a directory before
                    // format 4's upgrade, or a place missing: the lookup
                    // of one entry says which.
                    let record = read_entry_record(d, &row.channel, row.seq)?
                        .ok_or_else(|| missing(mechanism, row))?;
                    out.push(Some(audited(mechanism, row, &record)?));
                }
            }
        }
        wanted.sort_unstable_by_key(|(_, p)| (p.segment, p.offset));
        for span in spans(&wanted) {
            let (segment, start, end) = span.bounds;
            let bytes = d
                .segments
                .read_span(segment, start, end - start)
                .map_err(|e| of_audit(e, mechanism))?;
            for &(i, place) in span.places {
                let row = &rows[i];
                let record = place
                    .offset
                    .checked_sub(start)
                    .and_then(|at| usize::try_from(at).ok())
                    .and_then(|at| bytes.get(at..at.checked_add(usize::try_from(place.len).ok()?)?))
                    .ok_or_else(|| missing(mechanism, row))?;
                let record = d.recipient_sets.expand(&row.channel, row.seq, record)?;
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(audited(mechanism, row, &record)?);
                }
            }
        }
        out.into_iter()
            .zip(rows)
            .map(|(e, row)| e.ok_or_else(|| missing(mechanism, row)))
            .collect()
    }
}

/// Places (sorted by segment and offset) that one read covers, and that
/// read: (segment, first byte, byte past the last record).
struct Span<'a> {
    bounds: (u64, u64, u64),
    places: &'a [(usize, Place)],
}

/// `wanted` (sorted by segment and offset) cut into reads: records in one
/// segment at most [`GAP_BYTES`] apart, up to [`SPAN_BYTES`] a read.
fn spans(wanted: &[(usize, Place)]) -> Vec<Span<'_>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(&(_, first)) = wanted.get(from) {
        let (start, mut end) = (first.offset, first.offset.saturating_add(first.len));
        let mut to = from + 1;
        while let Some(&(_, p)) = wanted.get(to) {
            let p_end = p.offset.saturating_add(p.len);
            if p.segment != first.segment
                || p.offset > end.saturating_add(GAP_BYTES)
                || p_end.max(end) - start > SPAN_BYTES
            {
                break;
            }
            end = end.max(p_end);
            to += 1;
        }
        out.push(Span {
            bounds: (first.segment, start, end),
            places: &wanted[from..to],
        });
        from = to;
    }
    out
}

/// A row whose entry is not there.
fn missing(mechanism: &str, row: &Row) -> StoreError {
    StoreError::Corrupt(format!(
        "the audit index of {mechanism} names entry {}:{}, which is missing",
        row.channel, row.seq
    ))
}

/// A segment's corruption met by an audit, naming the audit.
fn of_audit(e: StoreError, mechanism: &str) -> StoreError {
    match e {
        StoreError::Corrupt(m) => {
            StoreError::Corrupt(format!("reading the entries audited by {mechanism}: {m}"))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u64, offset: u64, len: u64) -> (usize, Place) {
        (
            0,
            Place {
                segment,
                offset,
                len,
                hashes: 32,
            },
        )
    }

    /// Records together are one read; a gap, another segment or the span's
    /// bound begin another; a record larger than the bound is read alone.
    #[test]
    fn records_that_lie_together_are_one_read() {
        let wanted = [
            at(1, 0, 100),
            at(1, 132, 100),
            at(1, 132 + 132 + GAP_BYTES, 100),
            at(2, 0, 100),
            at(2, 200, SPAN_BYTES),
            at(2, 200 + SPAN_BYTES + 32, 10),
        ];
        let bounds: Vec<(u64, u64, u64)> = spans(&wanted).iter().map(|s| s.bounds).collect();
        assert_eq!(
            bounds,
            [
                (1, 0, 232),
                (1, 264 + GAP_BYTES, 364 + GAP_BYTES),
                (2, 0, 100),
                (2, 200, 200 + SPAN_BYTES),
                (2, 232 + SPAN_BYTES, 242 + SPAN_BYTES),
            ]
        );
    }
}
