//! An entry's record in the segments: its leaf hash, where it sits in
//! each recipient's inbox, and the encoded entry, served as it is.
//!
//! Formats 2 to 5 (and the PostgreSQL store) kept each inbox position as
//! 8 bytes: 104 bytes an entry at 13 recipients, where positions below
//! a few million take 3 as varints. Format 6 writes them as varints,
//! with a flag in the count; records of the older layout read as they
//! are, and a dump writes every record in it ([`whole_record`]), as
//! format 3 kept them.
//!
//! Format 7 keeps the recipients' names of most entries once, in a
//! recipient set ([`super::recipient_sets`]): 185 bytes of a 13-recipient
//! entry's 637. Such a record names the set and where its bytes were cut
//! from the encoded entry; [`with_recipients`] puts them back, so every
//! other reader sees a format 6 record, byte for byte.

use super::codec::{hash_from, u64_from};
use super::{StoreError, StoredEntry};
use prost::Message as _;
use std::borrow::Cow;
use std::ops::Range;
use tongbao_proto::{HASH_LEN, Hash, pb};

/// Set in a record's count (the 4 bytes after the leaf hash) when its
/// inbox positions are varints; never set by the older layout (no entry
/// has 2^31 recipients).
const POSITIONS_VARINT: u32 = 1 << 31;
/// Set in a record's count, beside [`POSITIONS_VARINT`], when the entry's
/// recipients are kept in a recipient set (format 7): after the positions
/// come the set's id and the offset in the encoded entry where the set's
/// bytes were cut out, both varints.
const NAMES_BY_SET: u32 = 1 << 30;

/// An entry record as formats 2 to 5 wrote it (and a dump and the
/// PostgreSQL store keep it): leaf hash, the number of recipients (4),
/// each recipient's inbox position (8 each), then the encoded entry.
pub(super) fn entry_record(
    leaf_hash: &Hash,
    cursors: impl ExactSizeIterator<Item = u64>,
    encoded: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(HASH_LEN + 4 + 8 * cursors.len() + encoded.len());
    v.extend_from_slice(leaf_hash);
    v.extend_from_slice(&(cursors.len() as u32).to_be_bytes());
    for c in cursors {
        v.extend_from_slice(&c.to_be_bytes());
    }
    v.extend_from_slice(encoded);
    v
}

/// An entry record as format 6 writes it: leaf hash, the number of
/// recipients (4, with [`POSITIONS_VARINT`] set), each recipient's inbox
/// position as a varint, then the encoded entry.
pub(super) fn entry_record_compact(leaf_hash: &Hash, cursors: &[u64], encoded: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HASH_LEN + 4 + 10 * cursors.len() + encoded.len());
    v.extend_from_slice(leaf_hash);
    v.extend_from_slice(&(cursors.len() as u32 | POSITIONS_VARINT).to_be_bytes());
    for c in cursors {
        prost::encoding::encode_varint(*c, &mut v);
    }
    v.extend_from_slice(encoded);
    v
}

/// An entry record with its recipients in a recipient set (format 7):
/// [`entry_record_compact`]'s layout with [`NAMES_BY_SET`] set, then
/// `set` and where `cut` starts as varints, then `encoded` without the
/// bytes of `cut` (the set's).
pub(super) fn entry_record_with_set(
    leaf_hash: &Hash,
    cursors: &[u64],
    set: u32,
    encoded: &[u8],
    cut: Range<usize>,
) -> Vec<u8> {
    let mut v = Vec::with_capacity(HASH_LEN + 4 + 10 * cursors.len() + 10 + encoded.len());
    v.extend_from_slice(leaf_hash);
    let count = cursors.len() as u32 | POSITIONS_VARINT | NAMES_BY_SET;
    v.extend_from_slice(&count.to_be_bytes());
    for c in cursors {
        prost::encoding::encode_varint(*c, &mut v);
    }
    prost::encoding::encode_varint(u64::from(set), &mut v);
    prost::encoding::encode_varint(cut.start as u64, &mut v);
    v.extend_from_slice(encoded.get(..cut.start).unwrap_or_default());
    v.extend_from_slice(encoded.get(cut.end..).unwrap_or_default());
    v
}

/// How an entry record is laid out: its inbox positions, where they end,
/// the recipient set it names and where that set's bytes go (format 7),
/// and where its encoded entry starts.
struct Layout {
    cursors: Vec<u64>,
    positions_end: usize,
    set: Option<(u32, usize)>,
    at: usize,
}

/// The layout of an entry record, in any format; None when damaged.
fn layout(v: &[u8]) -> Option<Layout> {
    let n = v.get(HASH_LEN..HASH_LEN + 4)?;
    let n = u32::from_be_bytes(n.try_into().ok()?);
    let mut rest = &v[HASH_LEN + 4..];
    if n & POSITIONS_VARINT == 0 {
        let len = (n as usize).checked_mul(8)?;
        let whole = rest.get(..len)?;
        let cursors = whole
            .chunks_exact(8)
            .map(u64_from)
            .collect::<Result<_, _>>();
        let at = HASH_LEN + 4 + len;
        return Some(Layout {
            cursors: cursors.ok()?,
            positions_end: at,
            set: None,
            at,
        });
    }
    let n = (n & !(POSITIONS_VARINT | NAMES_BY_SET)) as usize;
    // A varint takes a byte at least: a larger count is damage, refused
    // before anything that large is allocated.
    if n > rest.len() {
        return None;
    }
    let mut cursors = Vec::with_capacity(n);
    for _ in 0..n {
        cursors.push(prost::encoding::decode_varint(&mut rest).ok()?);
    }
    let positions_end = v.len() - rest.len();
    let mut set = None;
    if u32::from_be_bytes(v[HASH_LEN..HASH_LEN + 4].try_into().ok()?) & NAMES_BY_SET != 0 {
        let id = u32::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?;
        let cut_at = usize::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?;
        if cut_at > rest.len() {
            return None;
        }
        set = Some((id, cut_at));
    }
    Some(Layout {
        cursors,
        positions_end,
        set,
        at: v.len() - rest.len(),
    })
}

/// The inbox positions an entry record holds, in either layout, and
/// where its encoded entry starts; None for a record that names a
/// recipient set ([`with_recipients`] makes it whole first).
fn positions(v: &[u8]) -> Option<(Vec<u64>, usize)> {
    let l = layout(v)?;
    l.set.is_none().then_some((l.cursors, l.at))
}

/// `v` as format 6 keeps it: a record that names a recipient set with the
/// set's bytes (`set` finds them by id) put back where they were cut; any
/// other record as it is.
pub(super) fn with_recipients<'a>(
    channel: &str,
    seq: u64,
    v: &'a [u8],
    set: impl FnOnce(u32) -> Option<std::sync::Arc<[u8]>>,
) -> Result<Cow<'a, [u8]>, StoreError> {
    let count = v
        .get(HASH_LEN..HASH_LEN + 4)
        .and_then(|n| n.try_into().ok())
        .map(u32::from_be_bytes);
    if count.is_none_or(|n| n & POSITIONS_VARINT == 0 || n & NAMES_BY_SET == 0) {
        return Ok(Cow::Borrowed(v));
    }
    let damaged = || StoreError::Corrupt(format!("entry {channel}:{seq}"));
    let l = layout(v).ok_or_else(damaged)?;
    let (id, cut_at) = l.set.ok_or_else(damaged)?;
    let names = set(id).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "entry {channel}:{seq} names recipient set {id}, which the store does not hold"
        ))
    })?;
    let (before, after) = v[l.at..].split_at(cut_at);
    let mut out = Vec::with_capacity(v.len() + names.len());
    out.extend_from_slice(&v[..HASH_LEN]);
    let count = count.unwrap_or_default() & !NAMES_BY_SET;
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&v[HASH_LEN + 4..l.positions_end]);
    out.extend_from_slice(before);
    out.extend_from_slice(&names);
    out.extend_from_slice(after);
    Ok(Cow::Owned(out))
}

/// Where the encoded entry starts in an entry record.
pub(super) fn entry_offset(v: &[u8]) -> Option<usize> {
    positions(v).map(|(_, at)| at)
}

/// An entry record in the older layout ([`entry_record`]), whichever it
/// is in: what a dump writes.
pub(super) fn whole_record(channel: &str, seq: u64, v: &[u8]) -> Result<Vec<u8>, StoreError> {
    let (cursors, at) =
        positions(v).ok_or_else(|| StoreError::Corrupt(format!("entry {channel}:{seq}")))?;
    let leaf_hash = hash_from(&v[..HASH_LEN])?;
    Ok(entry_record(&leaf_hash, cursors.into_iter(), &v[at..]))
}

/// An entry record's leaf hash, its inbox positions and its encoded entry,
/// in either layout: what readers that decode only part of the entry
/// (an audit) start from.
pub(super) fn split_record<'a>(
    channel: &str,
    seq: u64,
    v: &'a [u8],
) -> Result<(Hash, Vec<u64>, &'a [u8]), StoreError> {
    let (cursors, at) =
        positions(v).ok_or_else(|| StoreError::Corrupt(format!("entry {channel}:{seq}")))?;
    let leaf_hash = v
        .get(..HASH_LEN)
        .ok_or_else(|| StoreError::Corrupt(format!("entry {channel}:{seq}")))?;
    Ok((hash_from(leaf_hash)?, cursors, &v[at..]))
}

pub(super) fn decode_entry(channel: &str, seq: u64, v: &[u8]) -> Result<StoredEntry, StoreError> {
    let (leaf_hash, cursors, encoded) = split_record(channel, seq, v)?;
    let entry = pb::Entry::decode(encoded)
        .map_err(|e| StoreError::Corrupt(format!("entry {channel}:{seq}: {e}")))?;
    if cursors.len() != entry.recipients.len() {
        return Err(StoreError::Corrupt(format!(
            "entry {channel}:{seq}: {} inbox positions for {} recipients",
            cursors.len(),
            entry.recipients.len()
        )));
    }
    Ok(StoredEntry {
        entry,
        leaf_hash,
        encoded: prost::bytes::Bytes::copy_from_slice(encoded),
        cursors,
    })
}

/// Both layouts on arbitrary or damaged bytes: no panic; what is written
/// reads back alike, and a compact record made whole is the older
/// layout's record.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::store::codec::proptests::{damaged, entry_with};
    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn both_layouts_read_back_alike(
            hash in any::<Hash>(),
            cursors in vec(prop_oneof![0..300u64, any::<u64>()], 0..15),
            body in vec(any::<u8>(), 0..50),
        ) {
            let entry = entry_with(cursors.len(), body);
            let encoded = entry.encode_to_vec();
            let whole = entry_record(&hash, cursors.iter().copied(), &encoded);
            let compact = entry_record_compact(&hash, &cursors, &encoded);
            prop_assert!(compact.len() <= whole.len() + 2 * cursors.len());
            for record in [&whole, &compact] {
                let read = decode_entry("tax", 3, record)?;
                prop_assert_eq!(&read.entry, &entry);
                prop_assert_eq!(read.leaf_hash, hash);
                prop_assert_eq!(&read.encoded[..], &encoded[..]);
                prop_assert_eq!(&read.cursors, &cursors);
                prop_assert_eq!(entry_offset(record), Some(record.len() - encoded.len()));
                prop_assert_eq!(&whole_record("tax", 3, record)?, &whole);
            }
        }

        #[test]
        fn damaged_compact_records_decode_without_panic(
            record in damaged((vec(any::<u64>(), 0..4), vec(any::<u8>(), 0..20)).prop_map(|(c, body)| {
                entry_record_compact(&[1; 32], &c, &entry_with(c.len(), body).encode_to_vec())
            })),
        ) {
            if let Ok(e) = decode_entry("tax", 3, &record) {
                prop_assert_eq!(e.cursors.len(), e.entry.recipients.len());
            }
            let _ = whole_record("tax", 3, &record);
            let _ = entry_offset(&record);
        }
    }
}
