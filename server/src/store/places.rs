//! Where entries are in the segments, a run of entries per sled key.
//!
//! sled 0.34's file grows with the number of keys written far more than
//! with their size (it rewrites whole leaf nodes and keeps the old ones
//! until a segment is half dead), so one key per entry naming its place
//! cost a few hundred bytes of file per message. A flush appends the
//! entries of one channel one after another to one segment, in order of
//! seq, so their places form a run: the segment, the offset of the first
//! record, and each entry's record length and tree-hash length. A run is
//! keyed by its last seq and starts with its first, as inbox runs are: the
//! run holding an entry is the first key at or after its seq that starts
//! at or before it (a crash between a flush's sled writes and its record
//! can leave an older run beside a newer one; both name the same bytes,
//! appended twice).

use super::StoreError;
use super::segments::Place;

/// A run grows no larger than this (a few hundred entries), so that
/// finding one entry decodes little and sled's nodes stay small.
const RUN_BYTES: usize = 1 << 10;

/// The places of consecutive entries of one channel, one after another in
/// one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PlaceRun {
    first: u64,
    segment: u64,
    offset: u64,
    /// Per entry: the record's length and the tree hashes' length.
    sizes: Vec<(u64, u64)>,
    /// The encoded length so far.
    bytes: usize,
    /// Where the next entry's record would begin.
    end: u64,
}

fn varint_len(n: u64) -> usize {
    prost::encoding::encoded_len_varint(n)
}

impl PlaceRun {
    /// A run of the one entry `seq` at `place`.
    pub(super) fn starting(seq: u64, place: Place) -> Self {
        Self {
            first: seq,
            segment: place.segment,
            offset: place.offset,
            sizes: vec![(place.len, place.hashes)],
            bytes: 8
                + varint_len(place.segment)
                + varint_len(place.offset)
                + varint_len(place.len)
                + varint_len(place.hashes),
            end: place.end(),
        }
    }

    /// Adds entry `seq` at `place` if it continues the run (the next seq,
    /// right after the last record in the same segment) and the run stays
    /// within its size; false (and nothing added) otherwise.
    pub(super) fn extend(&mut self, seq: u64, place: Place) -> bool {
        let grown = self.bytes + varint_len(place.len) + varint_len(place.hashes);
        if self.last().checked_add(1) != Some(seq)
            || place.segment != self.segment
            || place.offset != self.end
            || grown > RUN_BYTES
        {
            return false;
        }
        self.sizes.push((place.len, place.hashes));
        self.bytes = grown;
        self.end = place.end();
        true
    }

    /// The seq of the run's first entry.
    pub(super) fn first(&self) -> u64 {
        self.first
    }

    /// The seq of the run's last entry, its key.
    pub(super) fn last(&self) -> u64 {
        self.first + self.sizes.len() as u64 - 1
    }

    /// First seq (8), then varints: segment, offset, and per entry its
    /// record's length and its hashes' length.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes);
        out.extend_from_slice(&self.first.to_be_bytes());
        for n in [self.segment, self.offset] {
            prost::encoding::encode_varint(n, &mut out);
        }
        for (len, hashes) in &self.sizes {
            prost::encoding::encode_varint(*len, &mut out);
            prost::encoding::encode_varint(*hashes, &mut out);
        }
        out
    }

    /// The run stored under the key of seq `last`.
    pub(super) fn decode(last: u64, v: &[u8]) -> Result<Self, StoreError> {
        let mut run: Option<PlaceRun> = None;
        walk(last, v, |seq, place| match run.as_mut() {
            None => run = Some(PlaceRun::starting(seq, place)),
            Some(r) => {
                // Decoded as written: no size cap on what is read.
                r.sizes.push((place.len, place.hashes));
                r.end = place.end();
            }
        })?;
        let mut run = run.ok_or_else(|| bad(last))?;
        run.bytes = v.len();
        Ok(run)
    }

    /// Entry `seq`'s place in the run stored under the key of seq `last`,
    /// if the run holds it: what a lookup needs, read without building the
    /// run (nothing allocated), the whole run still checked.
    pub(super) fn find(last: u64, v: &[u8], seq: u64) -> Result<Option<Place>, StoreError> {
        let mut found = None;
        walk(last, v, |s, place| {
            if s == seq {
                found = Some(place);
            }
        })?;
        Ok(found)
    }

    /// Entry `seq`'s place, if the run holds it.
    #[cfg(test)]
    pub(super) fn place(&self, seq: u64) -> Option<Place> {
        self.places().find(|(s, _)| *s == seq).map(|(_, p)| p)
    }

    /// Every entry's seq and place, in order.
    pub(super) fn places(&self) -> impl Iterator<Item = (u64, Place)> + '_ {
        let mut offset = self.offset;
        // A run's seqs never pass u64::MAX (its last is its key), so none
        // is skipped.
        self.sizes
            .iter()
            .zip(0u64..)
            .filter_map(move |((len, hashes), i)| {
                let place = Place {
                    segment: self.segment,
                    offset,
                    len: *len,
                    hashes: *hashes,
                };
                offset = place.end();
                Some((self.first.checked_add(i)?, place))
            })
    }
}

fn bad(last: u64) -> StoreError {
    StoreError::Corrupt(format!("the places of the entries up to seq {last}"))
}

/// Reads the run stored under the key of seq `last`, giving `each` entry's
/// seq and place in order; refuses a run that does not hold exactly the
/// entries from its first seq to `last`, or holds a length no record has.
fn walk(last: u64, v: &[u8], mut each: impl FnMut(u64, Place)) -> Result<(), StoreError> {
    let (first, mut rest) = v.split_at_checked(8).ok_or_else(|| bad(last))?;
    let first = u64::from_be_bytes(first.try_into().map_err(|_| bad(last))?);
    // Each entry takes two bytes at least: more entries than that is a
    // damaged key or first seq.
    last.checked_sub(first)
        .and_then(|n| n.checked_add(1))
        .filter(|n| usize::try_from(*n).is_ok_and(|n| n <= v.len()))
        .ok_or_else(|| bad(last))?;
    let mut next = || prost::encoding::decode_varint(&mut rest).map_err(|_| bad(last));
    let (segment, mut offset) = (next()?, next()?);
    for seq in first..=last {
        let place = Place {
            segment,
            offset,
            len: next()?,
            hashes: next()?,
        };
        place.check().map_err(|_| bad(last))?;
        offset = place.end();
        each(seq, place);
    }
    if !rest.is_empty() {
        return Err(bad(last));
    }
    Ok(())
}

/// The places in `places` (seq and place, ascending by seq) as runs.
pub(super) fn runs_of_places(places: impl IntoIterator<Item = (u64, Place)>) -> Vec<PlaceRun> {
    let mut out: Vec<PlaceRun> = Vec::new();
    for (seq, place) in places {
        if out.last_mut().is_some_and(|run| run.extend(seq, place)) {
            continue;
        }
        out.push(PlaceRun::starting(seq, place));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Entries appended one after another from `offset`, sizes as given.
    fn laid_out(first: u64, offset: u64, sizes: &[(u64, u64)]) -> Vec<(u64, Place)> {
        let mut at = offset;
        (first..)
            .zip(sizes)
            .map(|(seq, (len, hashes))| {
                let p = Place {
                    segment: 2,
                    offset: at,
                    len: *len,
                    hashes: *hashes,
                };
                at = p.end();
                (seq, p)
            })
            .collect()
    }

    #[test]
    fn a_run_breaks_at_a_gap_a_jump_or_another_segment() {
        let places = laid_out(5, 100, &[(10, 32), (20, 64), (30, 32)]);
        let mut gap = places.clone();
        gap[2].0 = 9;
        assert_eq!(runs_of_places(gap).len(), 2, "a seq skipped");
        let mut jump = places.clone();
        jump[1].1.offset += 1;
        jump[2].1.offset += 1;
        assert_eq!(runs_of_places(jump).len(), 2, "bytes between records");
        let mut other = places.clone();
        other[2].1.segment = 3;
        assert_eq!(runs_of_places(other).len(), 2, "another segment");
        let runs = runs_of_places(places.clone());
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].last(), 7);
        assert_eq!(runs[0].places().collect::<Vec<_>>(), places);
        assert_eq!(runs[0].place(4), None);
        assert_eq!(runs[0].place(8), None);
    }

    #[test]
    fn a_run_stays_within_its_size() {
        let sizes = vec![(1_000, 32); 2_000];
        let runs = runs_of_places(laid_out(0, 0, &sizes));
        assert!(runs.len() > 1);
        for run in &runs {
            assert!(run.encode().len() <= RUN_BYTES);
        }
        let all: Vec<_> = runs.iter().flat_map(|r| r.places()).collect();
        assert_eq!(all, laid_out(0, 0, &sizes));
    }

    #[test]
    fn a_run_under_another_key_or_damaged_is_refused() {
        let run = PlaceRun::starting(
            3,
            Place {
                segment: 1,
                offset: 10,
                len: 5,
                hashes: 32,
            },
        );
        let v = run.encode();
        assert_eq!(PlaceRun::decode(3, &v).ok(), Some(run.clone()));
        assert!(PlaceRun::decode(4, &v).is_err(), "one place short");
        assert!(PlaceRun::decode(2, &v).is_err(), "last before first");
        assert!(PlaceRun::decode(3, &v[..v.len() - 1]).is_err(), "cut short");
        let mut longer = v.clone();
        longer.push(1);
        assert!(
            PlaceRun::decode(3, &longer).is_err(),
            "bytes after the last"
        );
        assert!(PlaceRun::decode(3, &[]).is_err());
    }

    proptest! {
        #[test]
        fn runs_read_back(
            first in prop_oneof![0..5u64, Just(u64::MAX - 600)],
            offset in prop_oneof![0..5u64, Just(1u64 << 40)],
            sizes in vec((0..100_000u64, 0..2_000u64), 1..400),
        ) {
            let places = laid_out(first, offset, &sizes);
            let runs = runs_of_places(places.clone());
            let mut read = Vec::new();
            for run in &runs {
                let decoded = PlaceRun::decode(run.last(), &run.encode())?;
                prop_assert_eq!(&decoded, run);
                read.extend(decoded.places());
            }
            prop_assert_eq!(read, places);
        }

        #[test]
        fn damaged_runs_decode_without_panic(
            v in crate::store::codec::proptests::damaged(Just(
                PlaceRun::starting(7, Place { segment: 1, offset: 9, len: 300, hashes: 64 }).encode(),
            )),
            last in prop_oneof![5..12u64, any::<u64>()],
        ) {
            if let Ok(run) = PlaceRun::decode(last, &v) {
                prop_assert_eq!(run.last(), last);
                prop_assert_eq!(run.places().count() as u64, last - run.first + 1);
            }
        }
    }
}
