//! Where an entry's record and tree hashes are found: in the overlay
//! while a commit waits there, else at the place sled names in the
//! segments. Kept apart from the store's operations because every read of
//! an entry, the upgrade and the tamper helpers share it, and because what
//! a lookup that finds nothing means (absence or damage) is decided here.

use super::super::StoreError;
use super::super::codec::{CHANNEL_HEAD, ENTRY, ENTRY_AT, TREE_HASH, key, split_key, u64_from};
use super::super::durability::Durability;
use super::super::places::{PlaceRun, runs_of_places};
use super::super::segments::Place;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Rewrites `channel`'s runs of places as `change` leaves them, each
/// entry's place as lookups found it (the first run at or after it that
/// holds it): for tamper tests.
pub(super) fn rewrite_places(
    tree: &sled::Tree,
    channel: &str,
    change: impl FnOnce(&mut BTreeMap<u64, Place>),
) -> Result<(), StoreError> {
    let mut prefix = key(ENTRY_AT, channel, None);
    prefix.push(0);
    let mut places = BTreeMap::new();
    let runs = tree.scan_prefix(&prefix).collect::<Result<Vec<_>, _>>()?;
    for (k, v) in runs {
        let last = split_key(&k)?.1.unwrap_or_default();
        for (s, p) in PlaceRun::decode(last, &v)?.places() {
            places.entry(s).or_insert(p);
        }
        tree.remove(k)?;
    }
    change(&mut places);
    for run in runs_of_places(places) {
        tree.insert(key(ENTRY_AT, channel, Some(run.last())), run.encode())?;
    }
    Ok(())
}

/// The record of an entry: from the overlay while a commit's record waits
/// there, else from sled (format 3, before the upgrade), else from the
/// place in the segments sled names; with its recipients put back if it
/// names a recipient set, as format 6 kept it.
pub(super) fn read_entry_record(
    durability: &Durability,
    channel: &str,
    seq: u64,
) -> Result<Option<sled::IVec>, StoreError> {
    let record = key(ENTRY, channel, Some(seq));
    let sets = &durability.recipient_sets;
    // Put back as the segment is read, so that the record is copied once
    // more only when it names a set.
    let Some(v) = located(durability, channel, seq, &record, |place| {
        let v = durability.segments.read(place)?;
        Ok(match sets.expand(channel, seq, &v)? {
            Cow::Borrowed(_) => v,
            Cow::Owned(whole) => whole,
        })
    })?
    else {
        return Ok(None);
    };
    // A record still in the overlay names its set too (one from the
    // segments is whole by now: this reads its count and returns it).
    Ok(Some(match sets.expand(channel, seq, &v)? {
        Cow::Borrowed(_) => v,
        Cow::Owned(whole) => whole.into(),
    }))
}

/// The tree hashes entry `seq` added (levels 0, 1, …), found as its
/// record is.
pub(super) fn read_tree_hashes(
    durability: &Durability,
    channel: &str,
    seq: u64,
) -> Result<Option<sled::IVec>, StoreError> {
    let hashes = key(TREE_HASH, channel, Some(seq));
    located(durability, channel, seq, &hashes, |place| {
        durability.segments.read_hashes(place)
    })
}

/// What `pending` names in the overlay (or in sled, before format 4),
/// else what `read` takes from entry `seq`'s place in the segments. An
/// entry below the channel's head in sled that neither holds is
/// corruption, not absence: sled's head alone would not say a record is
/// gone.
fn located(
    durability: &Durability,
    channel: &str,
    seq: u64,
    pending: &[u8],
    read: impl Fn(Place) -> Result<Vec<u8>, StoreError>,
) -> Result<Option<sled::IVec>, StoreError> {
    // Twice at most: a flush writes sled's heads before the places (one
    // key at a time, in key order) and leaves its records in the overlay
    // until all are written, so a head that covers `seq` means the record
    // is found on the second look, in the overlay or at its place.
    for _ in 0..2 {
        if let Some(v) = durability.get(pending)? {
            return Ok(Some(v));
        }
        if let Some(place) = entry_place(durability, channel, seq)? {
            let v = read(place).map_err(|e| of_entry(e, channel, seq))?;
            return Ok(Some(v.into()));
        }
        if !below_head_in_sled(durability, channel, seq)? {
            return Ok(None);
        }
    }
    Err(StoreError::Corrupt(format!(
        "entry {channel}:{seq}: its place in the entry segments is missing, \
         below the channel's head"
    )))
}

/// Whether sled's head of `channel` covers `seq` once entries' places are
/// in runs (an upgrade in progress is not checked).
fn below_head_in_sled(
    durability: &Durability,
    channel: &str,
    seq: u64,
) -> Result<bool, StoreError> {
    if !durability.place_runs.load(Ordering::Acquire) {
        return Ok(false);
    }
    let Some(head) = durability.tree.get(key(CHANNEL_HEAD, channel, None))? else {
        return Ok(false);
    };
    let next_seq = head
        .get(..8)
        .ok_or_else(|| StoreError::Corrupt(format!("head of channel {channel}")))?;
    Ok(seq < u64_from(next_seq)?)
}

/// Where sled says entry `seq`'s record is in the segments: in the first
/// run of places at or after it that holds it (see [`super::super::places`]).
/// Until an older format's upgrade is done, each entry's place has a key
/// of its own (the journal replay writes them so).
pub(super) fn entry_place(
    durability: &Durability,
    channel: &str,
    seq: u64,
) -> Result<Option<Place>, StoreError> {
    if !durability.place_runs.load(Ordering::Acquire) {
        let Some(at) = durability.tree.get(key(ENTRY_AT, channel, Some(seq)))? else {
            return Ok(None);
        };
        return Place::decode(&at).map(Some).map_err(|_| {
            StoreError::Corrupt(format!(
                "entry {channel}:{seq}: its place in the entry segments is garbled"
            ))
        });
    }
    first_holding(durability, channel, seq, |last, v| {
        PlaceRun::find(last, v, seq)
    })
}

/// The run of places that holds entry `seq`, found as [`entry_place`]
/// finds its place, for readers of many entries of a channel (an audit):
/// the run serves the entries after `seq` too. None before the places
/// are in runs (an upgrade from format 3 in progress), or when no run
/// holds it (a commit still in the overlay, or a place missing).
pub(super) fn entry_place_run(
    durability: &Durability,
    channel: &str,
    seq: u64,
) -> Result<Option<PlaceRun>, StoreError> {
    if !durability.place_runs.load(Ordering::Acquire) {
        return Ok(None);
    }
    first_holding(durability, channel, seq, |last, v| {
        Ok(Some(PlaceRun::decode(last, v)?).filter(|run| run.first() <= seq))
    })
}

/// What `found` reads of the first run of places at or after entry `seq`
/// that holds it (`found` answers None for a run that does not); a run
/// that does not decode is garbled.
fn first_holding<T>(
    durability: &Durability,
    channel: &str,
    seq: u64,
    found: impl Fn(u64, &[u8]) -> Result<Option<T>, StoreError>,
) -> Result<Option<T>, StoreError> {
    let garbled = || {
        StoreError::Corrupt(format!(
            "entry {channel}:{seq}: its place in the entry segments is garbled"
        ))
    };
    let (lo, hi) = (
        key(ENTRY_AT, channel, Some(seq)),
        key(ENTRY_AT, channel, Some(u64::MAX)),
    );
    for kv in durability.tree.range(lo..=hi) {
        let (k, v) = kv?;
        let last = split_key(&k)?.1.ok_or_else(garbled)?;
        if let Some(t) = found(last, &v).map_err(|_| garbled())? {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// A segment's corruption, naming the entry it hit.
fn of_entry(e: StoreError, channel: &str, seq: u64) -> StoreError {
    match e {
        StoreError::Corrupt(m) => StoreError::Corrupt(format!("entry {channel}:{seq}: {m}")),
        other => other,
    }
}
