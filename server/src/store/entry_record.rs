//! An entry's record in the segments: its leaf hash, where it sits in
//! each recipient's inbox, and the encoded entry, served as it is.
//!
//! Formats 2 to 5 (and the PostgreSQL store) kept each inbox position as
//! 8 bytes: 104 bytes an entry at 13 recipients, where positions below
//! a few million take 3 as varints. Format 6 writes them as varints,
//! with a flag in the count; records of the older layout read as they
//! are, and a dump writes every record in it ([`whole_record`]), as
//! format 3 kept them.

use super::codec::{hash_from, u64_from};
use super::{StoreError, StoredEntry};
use prost::Message as _;
use tongbao_proto::{HASH_LEN, Hash, pb};

/// Set in a record's count (the 4 bytes after the leaf hash) when its
/// inbox positions are varints; never set by the older layout (no entry
/// has 2^31 recipients).
const POSITIONS_VARINT: u32 = 1 << 31;

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

/// The inbox positions an entry record holds, in either layout, and
/// where its encoded entry starts.
fn positions(v: &[u8]) -> Option<(Vec<u64>, usize)> {
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
        return Some((cursors.ok()?, HASH_LEN + 4 + len));
    }
    let n = (n & !POSITIONS_VARINT) as usize;
    // A varint takes a byte at least: a larger count is damage, refused
    // before anything that large is allocated.
    if n > rest.len() {
        return None;
    }
    let mut cursors = Vec::with_capacity(n);
    for _ in 0..n {
        cursors.push(prost::encoding::decode_varint(&mut rest).ok()?);
    }
    Some((cursors, v.len() - rest.len()))
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
