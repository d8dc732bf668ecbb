//! How the store lays records out as sled keys and values.
//!
//! One tree, keys prefixed by record type. An entry's record (leaf hash,
//! inbox positions, the encoded entry: [`super::entry_record`]) is kept
//! in the entry segments
//! ([`super::segments`]), followed by the Merkle hashes the entry adds to
//! its channel's tree; sled holds their places there, a run of entries
//! per key ([`super::places`]), under [`ENTRY_AT`].
//! Until a flush moves them, a commit's entry record and hashes wait in
//! the overlay (and the journal) under [`ENTRY`] and [`TREE_HASH`]. The
//! audit index's rows are kept in runs by time ([`super::audit_index`]),
//! under [`AUDIT_SCOPE`]. Records that grow with every
//! delivery are kept as runs of inbox positions, so that a message fanned
//! out to 13 units costs one key per inbox per group commit, not one per
//! recipient: an inbox run holds the positions one commit added to an
//! inbox; an answer run, the positions one receipt answered; a fetched run,
//! the positions one page served for the first time. A background flush
//! writes consecutive inbox and fetched runs of one inbox as one. Runs are
//! keyed by their last position and start with their first, so that the
//! run holding a position is the first key at or after it: lookups only
//! ever iterate forwards.

use super::stretches::{self, STRETCHED};
use super::{Answer, AnswerKind, InboxItem, StoreError};
use std::collections::BTreeMap;
use tongbao_proto::{HASH_LEN, Hash};

pub(super) const ENTRY: u8 = b'e';
/// Where entries' records are in the segments (format 4 on; a run of
/// entries per key, keyed by the last seq, from format 5).
pub(super) const ENTRY_AT: u8 = b'p';
pub(super) const INBOX: u8 = b'i';
pub(super) const MESSAGE: u8 = b'm';
pub(super) const CHANNEL_HEAD: u8 = b'c';
pub(super) const INBOX_HEAD: u8 = b'b';
pub(super) const ANSWER: u8 = b'a';
pub(super) const FETCHED: u8 = b'f';
pub(super) const AUDIT_SCOPE: u8 = b'x';
pub(super) const TREE_HASH: u8 = b't';
pub(super) const CHECKPOINT: u8 = b'k';
/// A recipient set's names, by id (format 7: [`super::recipient_sets`]).
pub(super) const RECIPIENT_SET: u8 = b'n';
pub(super) const REGISTRY_KEY: &[u8] = b"r\0registry";
pub(super) const FORMAT_KEY: &[u8] = b"v\0format";
/// The id of the last commit applied, written in the same batch.
pub(super) const COMMIT_KEY: &[u8] = b"v\0commit";
/// The layout of the records in this file. A database written in another
/// layout is refused rather than misread, except [`FORMATS_UPGRADABLE`].
/// Format 8 (this one) keeps the message id records out of sled, in an
/// index of their own ([`super::message_index`]); otherwise it is format
/// 7, which keeps the recipients' names of an entry once per
/// set of recipients, under [`RECIPIENT_SET`], and the entry's record
/// names its set ([`super::recipient_sets`]); records of format 6 read as
/// they are. Format 6 keeps the audit index's rows in runs by time, a few
/// varints a row, and nothing of them in the segments: an audit reads
/// what it reports from the entry a row names ([`super::audit_index`]);
/// and a message id's record holds the entry's seq alone, its message's
/// digest computed again from the entry (formats 2 to 5's records, seq
/// and digest, read as they are). Format 5 kept one sled key per row, its
/// value a copy of what the audit needs of the entry, kept in the
/// segments; it named entries' places in the segments a run of entries
/// per key ([`super::places`]), as format 6 does. Format 4 named each
/// entry's place under a key of its own. Format 3 kept entry records,
/// tree hashes and audit rows in sled; format 2 was format 3 with empty
/// audit rows.
pub(super) const FORMAT: &[u8] = b"8";
/// Message id records in sled.
pub(super) const FORMAT_7: &[u8] = b"7";
/// Format 7 while its message id records move into the index: some are
/// gone from sled already, so a format 7 hub (a rollback) refuses it as a
/// format it does not know; a start of this one goes on with the move.
pub(super) const FORMAT_7_TO_8: &[u8] = b"7>8";
/// Every entry's recipients in its record.
pub(super) const FORMAT_6: &[u8] = b"6";
/// One audit index key per row.
pub(super) const FORMAT_5: &[u8] = b"5";
/// Format 5 while its audit index's rows are gathered into runs: some
/// keys are runs already, which format 5 would misread, so a format 5 hub
/// (a rollback) refuses it as a format it does not know; a start of this
/// one goes on with the upgrade.
pub(super) const FORMAT_5_TO_6: &[u8] = b"5>6";
/// One place key per entry.
pub(super) const FORMAT_4: &[u8] = b"4";
/// Entry records in sled, audit rows filled.
pub(super) const FORMAT_3: &[u8] = b"3";
/// Entry records in sled, audit rows empty.
pub(super) const FORMAT_2: &[u8] = b"2";
/// The older layouts a start upgrades in place: format 2 and 3 by moving
/// the entry records and tree hashes into the segments (format 2's empty
/// audit rows need no filling: format 6 keeps no row contents), format 4
/// by gathering the places into runs, format 5 by gathering the audit
/// index's rows into runs (and a format 5 whose upgrade was cut short
/// by going on with it), format 6 by saying format 7 (its records read
/// as they are), format 7 (and 7>8) by moving the message id records
/// into the index.
pub(super) const FORMATS_UPGRADABLE: [&[u8]; 8] = [
    FORMAT_2,
    FORMAT_3,
    FORMAT_4,
    FORMAT_5,
    FORMAT_5_TO_6,
    FORMAT_6,
    FORMAT_7,
    FORMAT_7_TO_8,
];
/// How many recipient sets are stored (format 7), written with each new
/// one: a start that finds fewer refuses rather than hand out a lost
/// set's id again.
pub(super) const RECIPIENT_SETS_KEY: &[u8] = b"v\0sets";
/// While format 4's places are gathered into runs: the last place key
/// gathered, so that a start that stopped midway goes on after it.
pub(super) const PLACES_GATHERED_KEY: &[u8] = b"v\0places";

pub(super) fn key(kind: u8, name: &str, n: Option<u64>) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + name.len() + 9);
    k.push(kind);
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    if let Some(n) = n {
        k.push(0);
        k.extend_from_slice(&n.to_be_bytes());
    }
    k
}

/// Whether `k` is an entry record's key (`e 0 channel 0 seq`).
pub(super) fn is_entry_key(k: &[u8]) -> bool {
    k.first() == Some(&ENTRY) && k.get(1) == Some(&0)
}

/// The key of the place of the entry whose record key is `k`.
pub(super) fn place_key(k: &[u8]) -> Vec<u8> {
    let mut out = k.to_vec();
    if let Some(kind) = out.first_mut() {
        *kind = ENTRY_AT;
    }
    out
}

/// The key of the record of the entry whose place (or tree hashes) key
/// is `k`.
pub(super) fn record_key(k: &[u8]) -> Vec<u8> {
    let mut out = k.to_vec();
    if let Some(kind) = out.first_mut() {
        *kind = ENTRY;
    }
    out
}

/// The key of the tree hashes of the entry whose record (or place) key is `k`.
pub(super) fn tree_hash_key(k: &[u8]) -> Vec<u8> {
    let mut out = k.to_vec();
    if let Some(kind) = out.first_mut() {
        *kind = TREE_HASH;
    }
    out
}

/// Consecutive stretches `(first, last)` of ascending, distinct positions.
pub(super) fn runs_of(cursors: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &c in cursors {
        match out.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(c) => *last = c,
            _ => out.push((c, c)),
        }
    }
    out
}

/// An answer run: first position (8), kind (1), seq of the answering entry
/// (8), its hub time (8).
pub(super) fn answer_run(first: u64, kind: AnswerKind, seq: u64, hub_micros: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(25);
    v.extend_from_slice(&first.to_be_bytes());
    v.push(u8::from(kind == AnswerKind::Exception));
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&(hub_micros as u64).to_be_bytes());
    v
}

pub(super) fn decode_answer(v: &[u8]) -> Result<Answer, StoreError> {
    if v.len() != 25 {
        return Err(StoreError::Corrupt("answer record".into()));
    }
    Ok(Answer {
        kind: if v[8] == 1 {
            AnswerKind::Exception
        } else {
            AnswerKind::Acknowledged
        },
        seq: u64_from(&v[9..17])?,
        hub_micros: u64_from(&v[17..25])? as i64,
    })
}

/// When a fetched run says `cursor` was first served. A run is its first
/// position (8) and either one time (8) for all its positions, or (once
/// runs are merged) stretches of a count (4) and a time (8).
pub(super) fn fetched_at(v: &[u8], cursor: u64) -> Result<u64, ()> {
    let first = v.get(..8).ok_or(())?;
    let mut at = cursor
        .checked_sub(u64_from(first).map_err(|_| ())?)
        .ok_or(())?;
    if v.len() == 16 {
        return u64_from(&v[8..]).map_err(|_| ());
    }
    for stretch in v.get(8..).ok_or(())?.chunks(12) {
        let (count, micros) = stretch.split_at_checked(4).ok_or(())?;
        let count = u64::from(u32::from_be_bytes(count.try_into().map_err(|_| ())?));
        if at < count {
            return u64_from(micros).map_err(|_| ());
        }
        at -= count;
    }
    Err(())
}

/// A merged run grows no larger than this. sled splits a leaf node by its
/// number of keys (16), not its size, and writes a node over 128 KiB as a
/// blob file of its own at every rewrite: runs of a whole flush at 13
/// recipients (about 15 KiB each) made such nodes, which took a quarter
/// of the data directory.
const MERGED_RUN_BYTES: usize = 4 << 10;
/// Nor holds more positions than this (runs in stretches take a few bytes
/// for a whole batch of positions), so reading one decodes little.
const MERGED_RUN_POSITIONS: u32 = 4 << 10;

/// Consecutive runs of one inbox in `writes` (inbox runs, fetched runs)
/// as one run each (up to [`MERGED_RUN_BYTES`]), the rest as is: how a flush writes them to sled, so
/// that an inbox read at one commit at a time does not leave one key per
/// commit behind. Runs are keyed by their last position, so the merged
/// run takes the key of the last run it absorbs.
pub(super) fn merge_runs(writes: &BTreeMap<Vec<u8>, sled::IVec>) -> Vec<(Vec<u8>, sled::IVec)> {
    /// A run being merged: its key without the position, its last
    /// position, kind and value so far.
    struct Open {
        prefix: Vec<u8>,
        last: u64,
        kind: u8,
        value: Vec<u8>,
    }
    fn close(open: Option<Open>, out: &mut Vec<(Vec<u8>, sled::IVec)>) {
        if let Some(o) = open {
            let mut k = o.prefix;
            k.extend_from_slice(&o.last.to_be_bytes());
            out.push((k, o.value.into()));
        }
    }
    let mut out = Vec::with_capacity(writes.len());
    let mut open: Option<Open> = None;
    for (k, v) in writes {
        let run = match (k.first(), k.len().checked_sub(9)) {
            (Some(&kind), Some(at)) if (kind == INBOX || kind == FETCHED) && k[at] == 0 => {
                match (u64_from(&k[at + 1..]), v.get(..8).map(u64_from)) {
                    (Ok(last), Some(Ok(first))) if first <= last => Some((kind, at, first, last)),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some((kind, at, first, last)) = run else {
            close(open.take(), &mut out);
            out.push((k.clone(), v.clone()));
            continue;
        };
        let prefix = &k[..=at];
        if let Some(o) = open.as_mut()
            && o.kind == kind
            && o.prefix == prefix
            && o.last.checked_add(1) == Some(first)
            && o.value.len() + v.len() <= MERGED_RUN_BYTES
            && append_run(kind, &mut o.value, v, last - first + 1)
        {
            o.last = last;
            continue;
        }
        close(open.take(), &mut out);
        let mut value = Vec::new();
        if kind == FETCHED && v.len() == 16 {
            // One time for all: as a stretch, so that more can follow.
            let Ok(count) = u32::try_from(last - first + 1) else {
                out.push((k.clone(), v.clone()));
                continue;
            };
            value.extend_from_slice(&v[..8]);
            value.extend_from_slice(&count.to_be_bytes());
            value.extend_from_slice(&v[8..]);
        } else {
            value.extend_from_slice(v);
        }
        open = Some(Open {
            prefix: prefix.to_vec(),
            last,
            kind,
            value,
        });
    }
    close(open, &mut out);
    out
}

/// Appends the positions of run `v` (of `count` positions) to the merged
/// run `into`; false if `v` is not a run this can merge.
fn append_run(kind: u8, into: &mut Vec<u8>, v: &[u8], count: u64) -> bool {
    let Ok(count32) = u32::try_from(count) else {
        return false;
    };
    if kind == INBOX {
        let (Some(head), Some(theirs), Some(items)) = (into.get(8..12), v.get(8..12), v.get(12..))
        else {
            return false;
        };
        let head = head.try_into().map(u32::from_be_bytes).unwrap_or(0);
        let theirs = theirs.try_into().map(u32::from_be_bytes).unwrap_or(0);
        // Only runs of one layout merge (a replayed run may be whole).
        let layout = head & STRETCHED;
        let Some(total) = (head & !STRETCHED)
            .checked_add(count32)
            .filter(|n| *n <= MERGED_RUN_POSITIONS && theirs & STRETCHED == layout)
        else {
            return false;
        };
        into[8..12].copy_from_slice(&(total | layout).to_be_bytes());
        into.extend_from_slice(items);
        true
    } else if v.len() == 16 {
        into.extend_from_slice(&count32.to_be_bytes());
        into.extend_from_slice(&v[8..]);
        true
    } else if v.len() > 8 && (v.len() - 8).is_multiple_of(12) {
        into.extend_from_slice(&v[8..]);
        true
    } else {
        false
    }
}

/// `items` (one per position from `first` on) cut into runs of at most
/// [`MERGED_RUN_BYTES`] (a run holds one position at least), as (first
/// position, items): a group commit of hundreds of messages makes one
/// run per inbox otherwise.
pub(super) fn sized_runs<'a, 'b>(
    first: u64,
    items: &'a [(u64, &'b str)],
) -> Vec<(u64, &'a [(u64, &'b str)])> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 12);
    for (i, (_, channel)) in items.iter().enumerate() {
        // At most, as a stretch of its own: count (1), the name's length
        // (up to 3) and the name, the seq (up to 10).
        let len = 14 + channel.len();
        if i > start && bytes + len > MERGED_RUN_BYTES {
            out.push((first + start as u64, &items[start..i]));
            (start, bytes) = (i, 12);
        }
        bytes += len;
    }
    if start < items.len() {
        out.push((first + start as u64, &items[start..]));
    }
    out
}

/// An inbox run: first position (8), count (4, with [`STRETCHED`] set),
/// then the positions' entries as stretches ([`super::stretches`]).
/// Items with a channel name longer than a stretch holds are written out
/// whole ([`inbox_run_whole`]).
pub(super) fn inbox_run(first: u64, items: &[(u64, &str)]) -> Vec<u8> {
    if !stretches::fits(items) {
        return inbox_run_whole(first, items);
    }
    let mut v = Vec::with_capacity(12 + stretches::encoded_len(items));
    v.extend_from_slice(&first.to_be_bytes());
    v.extend_from_slice(&(items.len() as u32 | STRETCHED).to_be_bytes());
    stretches::encode(items, &mut v);
    v
}

/// An inbox run as formats 2 to 4 wrote it (and a dump keeps it): first
/// position (8), count (4), then per position the entry's seq (8), the
/// length of its channel name (2) and the name.
pub(super) fn inbox_run_whole(first: u64, items: &[(u64, &str)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + items.iter().map(|(_, c)| 10 + c.len()).sum::<usize>());
    v.extend_from_slice(&first.to_be_bytes());
    v.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for (seq, channel) in items {
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&(channel.len() as u16).to_be_bytes());
        v.extend_from_slice(channel.as_bytes());
    }
    v
}

/// Positions a run holds at most: more is a damaged count, refused
/// before anything that large is allocated.
const MAX_RUN_POSITIONS: u32 = 1 << 16;

pub(super) fn decode_inbox_run(
    inbox: &str,
    last: u64,
    v: &[u8],
) -> Result<Vec<InboxItem>, StoreError> {
    decode_inbox_window(inbox, last, v, 0, usize::MAX)
}

/// The positions from `from` on, `limit` at most, of the inbox run stored
/// under the key of position `last`. The whole run is checked; only the
/// positions returned are built (a channel name copied for each), so a
/// page of a long run costs its page.
pub(super) fn decode_inbox_window(
    inbox: &str,
    last: u64,
    v: &[u8],
    from: u64,
    limit: usize,
) -> Result<Vec<InboxItem>, StoreError> {
    let bad = || StoreError::Corrupt(format!("inbox {inbox}: run ending at position {last}"));
    let first = u64_from(v.get(..8).ok_or_else(bad)?)?;
    let count = v
        .get(8..12)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(bad)?;
    let stretched = count & STRETCHED != 0;
    let count = count & !STRETCHED;
    // A run holds one position at least: a count of 0 would read as a run
    // of nothing ending where the key says.
    if count == 0
        || first.checked_add(u64::from(count)) != last.checked_add(1)
        || count > MAX_RUN_POSITIONS
    {
        return Err(bad());
    }
    if stretched {
        return stretches::decode_window(&v[12..], first, u64::from(count), from, limit)
            .ok_or_else(bad);
    }
    let mut out = Vec::new();
    let mut rest = &v[12..];
    for cursor in first..=last {
        let (seq, len) = match (rest.get(..8), rest.get(8..10)) {
            (Some(s), Some(l)) => (u64_from(s)?, u16::from_be_bytes([l[0], l[1]]) as usize),
            _ => return Err(bad()),
        };
        let name = rest.get(10..10 + len).ok_or_else(bad)?;
        if cursor >= from && out.len() < limit {
            out.push(InboxItem {
                cursor,
                seq,
                channel: String::from_utf8_lossy(name).into_owned(),
            });
        }
        rest = &rest[10 + len..];
    }
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

pub(super) fn hash_from(bytes: &[u8]) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("hash of {} bytes", bytes.len())))
}

pub(super) fn u64_from(bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("counter of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

/// Splits `kind 0 name 0 n` keys.
pub(super) fn split_key(k: &[u8]) -> Result<(String, Option<u64>), StoreError> {
    let rest = k
        .get(2..)
        .ok_or_else(|| StoreError::Corrupt("short key".into()))?;
    if rest.len() >= 9 && rest[rest.len() - 9] == 0 {
        let name = String::from_utf8_lossy(&rest[..rest.len() - 9]).into_owned();
        Ok((name, Some(u64_from(&rest[rest.len() - 8..])?)))
    } else {
        Ok((String::from_utf8_lossy(rest).into_owned(), None))
    }
}

/// Where stored hash `index` is kept: in the tree-hash record of entry
/// `seq`, at byte `offset` (hash (level, n) is added by entry
/// ((n + 1) << level) - 1, at its level).
pub(super) fn stored_hash_place(index: u64) -> Option<(u64, usize)> {
    let (level, n) = tongbao_proto::merkle::split_stored_hash_index(index);
    let seq = n
        .checked_add(1)
        .and_then(|m| m.checked_shl(level))
        .and_then(|m| m.checked_sub(1))?;
    Some((seq, level as usize * HASH_LEN))
}

/// The record layouts on arbitrary or damaged bytes: no panic, and what is
/// written reads back; merged runs answer every position as the runs they
/// merge did.
#[cfg(test)]
pub(super) mod proptests {
    use super::super::entry_record::{decode_entry, entry_record};
    use super::*;
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use prost::Message as _;
    use tongbao_proto::pb;

    /// Arbitrary bytes, and `valid` bytes with a few bytes changed and
    /// perhaps cut short, so that a decoder gets past its first checks.
    pub(in crate::store) fn damaged(
        valid: impl Strategy<Value = Vec<u8>>,
    ) -> impl Strategy<Value = Vec<u8>> {
        let edits = vec((any::<Index>(), any::<u8>()), 0..4);
        prop_oneof![
            vec(any::<u8>(), 0..200),
            (valid, edits, option::of(any::<Index>())).prop_map(|(mut bytes, edits, cut)| {
                for (at, x) in edits {
                    if !bytes.is_empty() {
                        let i = at.index(bytes.len());
                        bytes[i] ^= x;
                    }
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut.index(bytes.len() + 1));
                }
                bytes
            }),
        ]
    }

    fn position() -> impl Strategy<Value = u64> {
        prop_oneof![0..5u64, Just(u64::MAX - 8), any::<u64>()]
    }

    fn items() -> impl Strategy<Value = Vec<(u64, String)>> {
        vec((any::<u64>(), "[a-z-]{0,12}"), 1..5)
    }

    /// An entry with `recipients` names and `body`, for record tests.
    pub(in crate::store) fn entry_with(recipients: usize, body: Vec<u8>) -> pb::Entry {
        pb::Entry {
            channel: "tax".into(),
            seq: 3,
            recipients: (0..recipients).map(|i| format!("unit-{i}")).collect(),
            message: Some(pb::SignedMessage {
                message: Some(pb::Message {
                    body: body.into(),
                    ..Default::default()
                }),
                signature: None,
            }),
            ..Default::default()
        }
    }

    /// A run: its first position, its items (seq, channel), and the time
    /// its positions were first served.
    type Run = (u64, Vec<(u64, String)>, u64);

    /// One inbox's positions in runs of 1 to 4, some runs apart.
    fn inbox_runs() -> impl Strategy<Value = Vec<Run>> {
        let run = (
            0..2u64,
            vec((any::<u64>(), "[a-z]{1,6}"), 1..5),
            any::<u64>(),
        );
        (0..1000u64, vec(run, 1..8)).prop_map(|(start, runs)| {
            let mut next = start;
            runs.into_iter()
                .map(|(gap, items, time)| {
                    let first = next + gap;
                    next = first + items.len() as u64;
                    (first, items, time)
                })
                .collect()
        })
    }

    /// Items mostly in stretches (consecutive seqs of one channel), as
    /// batches from one sender make them.
    fn batched_items() -> impl Strategy<Value = Vec<(u64, String)>> {
        vec((0..3u64, "[a-c]", 1..6usize), 1..6).prop_map(|stretches| {
            let mut seq = 0;
            let mut out = Vec::new();
            for (gap, channel, n) in stretches {
                seq += gap;
                for _ in 0..n {
                    out.push((seq, channel.clone()));
                    seq += 1;
                }
            }
            out
        })
    }

    #[test]
    fn a_run_of_no_positions_is_refused() {
        // First 5, count 0: the key's last (4) matches `first + count - 1`.
        let mut v = 5u64.to_be_bytes().to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        assert!(decode_inbox_run("tax", 4, &v).is_err(), "whole");
        v[8..12].copy_from_slice(&STRETCHED.to_be_bytes());
        assert!(decode_inbox_run("tax", 4, &v).is_err(), "stretched");
    }

    #[test]
    fn a_run_naming_a_long_channel_is_written_whole() {
        let long = "a".repeat(300);
        let run = inbox_run(1, &[(7, long.as_str())]);
        assert_eq!(run.get(8..12), Some(1u32.to_be_bytes().as_slice()));
        let read = decode_inbox_run("tax", 1, &run).unwrap_or_default();
        assert_eq!(read.first().map(|i| i.channel.len()), Some(300));
    }

    proptest! {
        #[test]
        fn inbox_runs_read_back(first in position(), items in items()) {
            let Some(last) = first.checked_add(items.len() as u64 - 1) else {
                return Ok(());
            };
            let refs: Vec<(u64, &str)> = items.iter().map(|(s, c)| (*s, c.as_str())).collect();
            let read = decode_inbox_run("tax", last, &inbox_run(first, &refs))?;
            let want: Vec<InboxItem> = (first..)
                .zip(&items)
                .map(|(cursor, (seq, channel))| InboxItem { cursor, seq: *seq, channel: channel.clone() })
                .collect();
            prop_assert_eq!(read, want);
        }

        #[test]
        fn whole_and_stretched_runs_read_alike(
            first in position(),
            items in prop_oneof![items(), batched_items()],
        ) {
            let Some(last) = first.checked_add(items.len() as u64 - 1) else {
                return Ok(());
            };
            let refs: Vec<(u64, &str)> = items.iter().map(|(s, c)| (*s, c.as_str())).collect();
            let whole = inbox_run_whole(first, &refs);
            let stretched = inbox_run(first, &refs);
            prop_assert_eq!(
                decode_inbox_run("tax", last, &whole)?,
                decode_inbox_run("tax", last, &stretched)?
            );
            prop_assert!(stretched.len() <= 12 + refs.iter().map(|(_, c)| 14 + c.len()).sum::<usize>());
        }

        #[test]
        fn a_window_is_the_whole_run_cut(
            first in 0..1000u64,
            items in prop_oneof![items(), batched_items()],
            whole in any::<bool>(),
            skip in 0..12u64,
            limit in 0..12usize,
        ) {
            let last = first + items.len() as u64 - 1;
            let refs: Vec<(u64, &str)> = items.iter().map(|(s, c)| (*s, c.as_str())).collect();
            let run = if whole { inbox_run_whole(first, &refs) } else { inbox_run(first, &refs) };
            let from = first + skip;
            let want: Vec<InboxItem> = decode_inbox_run("tax", last, &run)?
                .into_iter()
                .filter(|i| i.cursor >= from)
                .take(limit)
                .collect();
            prop_assert_eq!(decode_inbox_window("tax", last, &run, from, limit)?, want);
            // A damaged tail is refused even when the window ends before it.
            let cut = &run[..run.len() - 1];
            prop_assert!(decode_inbox_window("tax", last, cut, first, 1).is_err());
        }

        #[test]
        fn sized_runs_cover_every_position_once(
            first in 0..1000u64,
            items in vec((any::<u64>(), "[a-z-]{0,40}"), 0..600),
        ) {
            let refs: Vec<(u64, &str)> = items.iter().map(|(s, c)| (*s, c.as_str())).collect();
            let runs = sized_runs(first, &refs);
            let mut next = first;
            let mut seen = Vec::new();
            for (at, part) in &runs {
                prop_assert_eq!(*at, next);
                prop_assert!(!part.is_empty());
                let bytes = inbox_run(*at, part).len();
                prop_assert!(part.len() == 1 || bytes <= MERGED_RUN_BYTES, "{} bytes", bytes);
                next += part.len() as u64;
                seen.extend_from_slice(part);
            }
            prop_assert_eq!(seen, refs);
        }

        #[test]
        fn answer_runs_read_back(first in position(), exception in any::<bool>(), seq in any::<u64>(), hub_micros in any::<i64>()) {
            let kind = if exception { AnswerKind::Exception } else { AnswerKind::Acknowledged };
            let read = decode_answer(&answer_run(first, kind, seq, hub_micros))?;
            prop_assert_eq!(read, Answer { kind, seq, hub_micros });
        }

        #[test]
        fn keys_split_back(kind in any::<u8>(), name in "[^\u{0}]{0,20}", n in option::of(any::<u64>())) {
            prop_assert_eq!(split_key(&key(kind, &name, n))?, (name, n));
        }

        #[test]
        fn damaged_records_decode_without_panic(
            inbox in damaged(items().prop_map(|items| {
                let refs: Vec<(u64, &str)> = items.iter().map(|(s, c)| (*s, c.as_str())).collect();
                inbox_run(7, &refs)
            })),
            last in prop_oneof![7..12u64, any::<u64>()],
            answer in damaged(Just(answer_run(7, AnswerKind::Exception, 9, 11))),
            entry in damaged((vec(any::<u64>(), 0..3), vec(any::<u8>(), 0..20)).prop_map(|(c, body)| {
                entry_record(&[1; 32], c.iter().copied(), &entry_with(c.len(), body).encode_to_vec())
            })),
            fetched in damaged(Just([7u64.to_be_bytes(), 5u64.to_be_bytes()].concat())),
            cursor in prop_oneof![5..12u64, any::<u64>()],
        ) {
            let _ = decode_inbox_run("tax", last, &inbox);
            let _ = decode_answer(&answer);
            let _ = fetched_at(&fetched, cursor);
            if let Ok(e) = decode_entry("tax", 3, &entry) {
                prop_assert_eq!(e.cursors.len(), e.entry.recipients.len());
            }
            let _ = split_key(&entry);
        }

        #[test]
        fn merged_runs_answer_each_position_as_before(
            runs in inbox_runs(),
            whole in vec(any::<bool>(), 8),
        ) {
            let mut writes = BTreeMap::new();
            for ((first, items, time), whole) in runs.iter().zip(whole) {
                let last = first + items.len() as u64 - 1;
                let refs: Vec<(u64, &str)> = items.iter().map(|(s, c)| (*s, c.as_str())).collect();
                // Runs replayed from an older hub's journal are whole.
                let run = if whole { inbox_run_whole(*first, &refs) } else { inbox_run(*first, &refs) };
                writes.insert(key(INBOX, "tax", Some(last)), run.into());
                let fetched = [first.to_be_bytes(), time.to_be_bytes()].concat();
                writes.insert(key(FETCHED, "tax", Some(last)), fetched.into());
            }
            let merged: BTreeMap<Vec<u8>, sled::IVec> = merge_runs(&writes).into_iter().collect();
            prop_assert!(merged.len() <= writes.len());
            for (first, items, time) in &runs {
                for (cursor, (seq, channel)) in (*first..).zip(items) {
                    // The run holding a position is the first key at or after it.
                    let run = |kind| merged.range(key(kind, "tax", Some(cursor))..).next();
                    let Some((k, v)) = run(INBOX) else {
                        return Err(TestCaseError::fail(format!("no inbox run holds {cursor}")));
                    };
                    let (_, last) = split_key(k)?;
                    let read = decode_inbox_run("tax", last.unwrap_or_default(), v)?;
                    let want = InboxItem { cursor, seq: *seq, channel: channel.clone() };
                    prop_assert!(read.contains(&want), "{:?} not in {:?}", want, read);
                    let Some((_, v)) = run(FETCHED) else {
                        return Err(TestCaseError::fail(format!("no fetched run holds {cursor}")));
                    };
                    prop_assert_eq!(fetched_at(v, cursor), Ok(*time));
                }
            }
        }
    }
}
