//! Older storage formats, upgraded in place at start (after the journal
//! replay, before the store serves): format 2 is format 3 but for its
//! empty audit rows, which format 6 has no use for (it reads what an
//! audit reports from the entries); format 3's entry records and tree
//! hashes move from sled into the entry segments (format 4), then format
//! 4's places, one key per entry, are gathered into runs (format 5), then
//! the audit index's keys, one per row, are gathered into runs (format 6;
//! message id records of older formats read as they are), and format 6
//! says format 7 (its records read as they are; new entries keep their
//! recipients by set), then format 7's message id records move out of
//! sled into their index (format 8).
//! Each step works a chunk at a time and records its format last, so a
//! start that stops midway upgrades again.

use super::super::StoreError;
use super::super::audit_index::{RUN, Row};
use super::super::codec::{
    AUDIT_SCOPE, ENTRY, ENTRY_AT, FORMAT, FORMAT_2, FORMAT_3, FORMAT_4, FORMAT_5, FORMAT_5_TO_6,
    FORMAT_6, FORMAT_7, FORMAT_7_TO_8, FORMAT_KEY, MESSAGE, PLACES_GATHERED_KEY, is_entry_key, key,
    place_key, split_key, tree_hash_key,
};
use super::super::durability::Durability;
use super::super::message_index::pair_of_record;
use super::super::places::runs_of_places;
use super::super::segments::{Appended, Place};
use std::sync::atomic::Ordering;

/// Records per sled batch (and per segment append) of an upgrade (a few
/// in tests, so that an upgrade takes several chunks).
const CHUNK: usize = if cfg!(test) { 4 } else { 10_000 };
/// Bytes of records per chunk at most: a chunk of large entries is cut
/// before [`CHUNK`] records, so memory does not grow with the bodies.
const CHUNK_BYTES: usize = 32 << 20;

/// Takes the records of one chunk from `records`: up to [`CHUNK`] of
/// them, and no more once they reach [`CHUNK_BYTES`].
fn take_chunk(
    records: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for kv in records {
        let (k, v) = kv?;
        bytes += k.len() + v.len();
        chunk.push((k, v));
        if chunk.len() >= CHUNK || bytes >= CHUNK_BYTES {
            break;
        }
    }
    Ok(chunk)
}

#[cfg(test)]
thread_local! {
    /// Chunks an upgrade on this thread moves before it fails as a crash
    /// would stop it (None: it never fails).
    pub(super) static CHUNKS_BEFORE_FAILING: std::cell::Cell<Option<u32>> =
        const { std::cell::Cell::new(None) };
}

/// Fails the upgrade where a test asked it to stop (nothing outside tests).
fn chunk_done() -> Result<(), StoreError> {
    #[cfg(test)]
    if let Some(left) = CHUNKS_BEFORE_FAILING.get() {
        if left == 0 {
            return Err(StoreError::Database("the upgrade stopped (a test)".into()));
        }
        CHUNKS_BEFORE_FAILING.set(Some(left - 1));
    }
    Ok(())
}

/// Brings the data in `durability` to [`FORMAT`], logging each step.
pub(super) fn upgrade(durability: &Durability) -> Result<(), StoreError> {
    if durability.tree.get(FORMAT_KEY)?.as_deref() == Some(FORMAT_2) {
        // Its rows name their entries, all format 6 keeps of a row.
        durability.tree.insert(FORMAT_KEY, FORMAT_3)?;
        durability.make_durable()?;
        tracing::info!(
            dir = %durability.dir.display(),
            "storage format 2 taken as 3: its empty audit rows name their entries, all that is kept of them"
        );
    }
    if durability.tree.get(FORMAT_KEY)?.as_deref() == Some(FORMAT_3) {
        let entries = move_entries_to_segments(durability)?;
        tracing::info!(
            dir = %durability.dir.display(),
            entries,
            "storage format 3 upgraded to 4: moved the entry records into the entry segments"
        );
    }
    if durability.tree.get(FORMAT_KEY)?.as_deref() == Some(FORMAT_4) {
        let (places, runs) = gather_places(durability)?;
        tracing::info!(
            dir = %durability.dir.display(),
            places,
            runs,
            "storage format 4 upgraded to 5: gathered the entries' places into runs"
        );
    }
    durability.place_runs.store(true, Ordering::Release);
    let format = durability.tree.get(FORMAT_KEY)?;
    if format.as_deref() == Some(FORMAT_5) || format.as_deref() == Some(FORMAT_5_TO_6) {
        let (rows, runs) = gather_audit_rows(durability)?;
        tracing::info!(
            dir = %durability.dir.display(),
            rows,
            runs,
            "storage format 5 upgraded to 6: gathered the audit index's rows into runs"
        );
    }
    durability.audit_runs.store(true, Ordering::Release);
    if durability.tree.get(FORMAT_KEY)?.as_deref() == Some(FORMAT_6) {
        // Format 6's records read as they are: only new ones name sets.
        durability.tree.insert(FORMAT_KEY, FORMAT_7)?;
        durability.make_durable()?;
        tracing::info!(
            dir = %durability.dir.display(),
            "storage format 6 upgraded to 7: new entries keep their recipients by set"
        );
    }
    let format = durability.tree.get(FORMAT_KEY)?;
    if format.as_deref() == Some(FORMAT_7) || format.as_deref() == Some(FORMAT_7_TO_8) {
        let records = move_message_records(durability)?;
        tracing::info!(
            dir = %durability.dir.display(),
            records,
            "storage format 7 upgraded to 8: moved the message id records into their index"
        );
    }
    durability.messages_indexed.store(true, Ordering::Release);
    Ok(())
}

/// Format 7 to 8: moves the message id records out of sled into the
/// message id index, a chunk at a time: each chunk is durable in the
/// index before it is removed from sled, so a start that stopped midway
/// finds the rest in sled (and some twice, which the index reads once).
/// Records [`FORMAT_7_TO_8`] durably first, so that a format 7 hub
/// refuses a directory whose records have begun to move, and format 8
/// last. Returns the records moved.
fn move_message_records(durability: &Durability) -> Result<u64, StoreError> {
    if durability.tree.get(FORMAT_KEY)?.as_deref() == Some(FORMAT_7) {
        durability.tree.insert(FORMAT_KEY, FORMAT_7_TO_8)?;
        durability.make_durable()?;
    }
    let end = [MESSAGE, 1];
    let mut from = vec![MESSAGE, 0];
    let mut moved = 0u64;
    loop {
        // On from the last key moved: sled keeps the leaves it emptied.
        let chunk = take_chunk(durability.tree.range(from.as_slice()..&end[..]))?;
        let Some((last, _)) = chunk.last() else {
            break;
        };
        from = [last.as_ref(), &[0]].concat();
        let pairs = chunk
            .iter()
            .map(|(k, v)| pair_of_record(k, v))
            .collect::<Result<Vec<_>, _>>()?;
        durability.messages.add(&pairs)?;
        let mut batch = sled::Batch::default();
        for (k, _) in &chunk {
            batch.remove(k);
        }
        durability.tree.apply_batch(batch)?;
        moved += chunk.len() as u64;
        chunk_done()?;
    }
    durability.tree.insert(FORMAT_KEY, FORMAT)?;
    durability.make_durable()?;
    Ok(moved)
}

/// Format 5 to 6: replaces the audit index's keys, one per row (their
/// values, copies of what the audit needs of the entry or its place in the
/// segments, are dropped), by runs of rows ([`super::super::audit_index`]),
/// a chunk of one mechanism's rows per sled batch
/// ([`Durability::file_audit_rows`]), which
/// removes the keys it gathers: a start that stopped midway finds the keys
/// left and goes on. Records format 6 last and makes it durable; before
/// the first run, records [`FORMAT_5_TO_6`], durably, so that a directory
/// holding runs is never labelled format 5. Returns the rows gathered and
/// the runs made.
fn gather_audit_rows(durability: &Durability) -> Result<(u64, u64), StoreError> {
    if durability.tree.get(FORMAT_KEY)?.as_deref() == Some(FORMAT_5) {
        durability.tree.insert(FORMAT_KEY, FORMAT_5_TO_6)?;
        durability.make_durable()?;
    }
    let end = [AUDIT_SCOPE, 1];
    let mut from = vec![AUDIT_SCOPE, 0];
    let (mut gathered, mut runs) = (0u64, 0u64);
    loop {
        let mut mechanism: Option<String> = None;
        let mut rows = Vec::new();
        for kv in durability.tree.range(from.as_slice()..&end[..]) {
            let (k, v) = kv?;
            // Runs a start that stopped midway made stay as they are.
            if v.first() == Some(&RUN) {
                continue;
            }
            let (theirs, row) = Row::of_key(&k)?;
            if mechanism.get_or_insert_with(|| theirs.clone()) != &theirs {
                break;
            }
            rows.push(row);
            from = [k.as_ref(), &[0]].concat();
            if rows.len() >= CHUNK {
                break;
            }
        }
        let Some(mechanism) = mechanism.filter(|_| !rows.is_empty()) else {
            break;
        };
        gathered += rows.len() as u64;
        runs += durability.file_audit_rows(&mechanism, rows)? as u64;
        chunk_done()?;
    }
    durability.tree.insert(FORMAT_KEY, FORMAT_6)?;
    durability.make_durable()?;
    Ok((gathered, runs))
}

/// Format 4 to 5: replaces each channel's place keys, one per entry, by
/// runs of places ([`super::super::places`]), a chunk per sled batch; each
/// batch names the last key it gathered ([`PLACES_GATHERED_KEY`]), so a
/// start that stopped midway goes on after it. Records format 5 last and
/// makes it durable. Returns the places gathered and the runs made.
fn gather_places(durability: &Durability) -> Result<(u64, u64), StoreError> {
    let end = [ENTRY_AT, 1];
    let mut from = match durability.tree.get(PLACES_GATHERED_KEY)? {
        Some(last) => [last.as_ref(), &[0]].concat(),
        None => vec![ENTRY_AT, 0],
    };
    let (mut places, mut runs) = (0u64, 0u64);
    loop {
        let chunk = take_chunk(durability.tree.range(from.as_slice()..&end[..]))?;
        let Some((last, _)) = chunk.last() else {
            break;
        };
        from = [last.as_ref(), &[0]].concat();
        let mut batch = sled::Batch::default();
        let mut by_channel: Vec<(String, u64, Place)> = Vec::with_capacity(chunk.len());
        for (k, v) in &chunk {
            let (channel, seq) = split_key(k)?;
            let seq = seq.ok_or_else(|| StoreError::Corrupt("a place key without seq".into()))?;
            let place = Place::decode(v).map_err(|_| {
                StoreError::Corrupt(format!(
                    "entry {channel}:{seq}: its place in the entry segments (format 4) is garbled"
                ))
            })?;
            by_channel.push((channel, seq, place));
            batch.remove(k.as_ref());
        }
        for channel in by_channel.chunk_by(|a, b| a.0 == b.0) {
            let Some((name, _, _)) = channel.first() else {
                continue;
            };
            for run in runs_of_places(channel.iter().map(|(_, seq, place)| (*seq, *place))) {
                // Under the key of its last place: inserted after that key's removal.
                batch.insert(key(ENTRY_AT, name, Some(run.last())), run.encode());
                runs += 1;
            }
        }
        places += chunk.len() as u64;
        batch.insert(PLACES_GATHERED_KEY, last.as_ref());
        durability.tree.apply_batch(batch)?;
        chunk_done()?;
    }
    let mut batch = sled::Batch::default();
    batch.insert(FORMAT_KEY, FORMAT_5);
    batch.remove(PLACES_GATHERED_KEY);
    durability.tree.apply_batch(batch)?;
    durability.make_durable()?;
    Ok((places, runs))
}

/// Format 3 to 4: appends each entry record sled holds, and its tree
/// hashes, to the segments (synced), then names their place in sled and
/// removes them there, a chunk per sled batch; records format 4 last and makes it durable. A
/// record moved twice by a start that stopped midway leaves its first
/// copy unnamed. Each entry's place has a key of its own, as format 4
/// had, until [`gather_places`]. Returns the entries moved.
fn move_entries_to_segments(durability: &Durability) -> Result<u64, StoreError> {
    let (from, end) = ([ENTRY, 0], [ENTRY, 1]);
    let mut moved = 0u64;
    loop {
        let chunk = take_chunk(durability.tree.range(from..end))?;
        if chunk.is_empty() {
            break;
        }
        let hashes = chunk
            .iter()
            .map(|(k, _)| Ok(durability.tree.get(tree_hash_key(k))?.unwrap_or_default()))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let appended: Vec<Appended<'_>> = chunk
            .iter()
            .zip(&hashes)
            .map(|((_, record), hashes)| Appended { record, hashes })
            .collect();
        let places = durability.segments.append(&appended)?;
        let mut batch = sled::Batch::default();
        for ((k, _), place) in chunk.iter().zip(places) {
            if is_entry_key(k) {
                batch.insert(place_key(k), place.encode());
                batch.remove(k.as_ref());
                batch.remove(tree_hash_key(k));
            }
        }
        durability.tree.apply_batch(batch)?;
        moved += chunk.len() as u64;
        // Durable before the next chunk: what sled no longer holds is
        // named durably.
        durability.make_durable()?;
        chunk_done()?;
    }
    durability.tree.insert(FORMAT_KEY, FORMAT_4)?;
    durability.make_durable()?;
    Ok(moved)
}
