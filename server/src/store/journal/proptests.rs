//! Journal records on arbitrary or damaged bytes: no panic, and what is
//! read is exactly the whole records at the start.

use super::*;
use crate::store::codec::proptests::damaged;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Commits with ids counting up from `first` (below u64::MAX, which no
/// journal reaches), as journal bytes.
fn journal() -> impl Strategy<Value = (Vec<Record>, Vec<u8>)> {
    let first = prop_oneof![1..5u64, 1..u64::MAX / 2];
    (first, vec(vec(any::<u8>(), 0..40), 0..6)).prop_map(|(first, payloads)| {
        let records: Vec<Record> = (first..)
            .zip(payloads)
            .map(|(id, payload)| Record { id, payload })
            .collect();
        let mut bytes = Vec::new();
        for r in &records {
            encode_record(&mut bytes, r.id, &r.payload);
        }
        (records, bytes)
    })
}

proptest! {
    #[test]
    fn records_read_back((records, bytes) in journal()) {
        let (read, used) = decode_records(&bytes);
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(read, records);
    }

    #[test]
    fn damaged_journals_read_without_panic(
        bytes in damaged(journal().prop_map(|(_, bytes)| bytes)),
        from in any::<Index>(),
        after in prop_oneof![0..8u64, any::<u64>()],
    ) {
        let (read, used) = decode_records(&bytes);
        prop_assert!(used <= bytes.len());
        let mut again = Vec::new();
        for r in &read {
            encode_record(&mut again, r.id, &r.payload);
        }
        prop_assert_eq!(&again[..], &bytes[..used]);
        if let Some((at, id)) = record_beyond(&bytes, from.index(bytes.len() + 1), after) {
            prop_assert!(id > after);
            prop_assert!(record_at(&bytes, at).is_some());
        }
        if let Some(last) = read.last().filter(|r| r.id < u64::MAX) {
            let _ = torn_commits(&bytes, used, last.id);
        }
    }
}
