//! Commits read back: heads, pages, entries and stored hashes, across
//! reopens; the store contract.

use super::*;

#[test]
fn commits_survive_reopen_with_heads_and_pages() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let s = SledStore::open(dir.path(), true)?;
        s.commit(&[
            entry("tax", 0, &[("finance", 1)]),
            entry("tax", 1, &[("finance", 2), ("office:x", 1)]),
        ])?;
        s.commit(&[entry("pbc", 0, &[("finance", 3)])])?;
    }
    let s = SledStore::open(dir.path(), true)?;
    let heads = s.channel_heads()?;
    assert_eq!(
        heads.get("tax").map(|h| (h.next_seq, h.last_leaf_hash[0])),
        Some((2, 101))
    );
    assert_eq!(s.inbox_heads()?.get("finance"), Some(&3));
    let page = s.inbox_page("finance", 1, 10)?;
    let got: Vec<_> = page
        .iter()
        .map(|i| (i.cursor, i.channel.as_str(), i.seq))
        .collect();
    assert_eq!(got, [(2, "tax", 1), (3, "pbc", 0)]);
    assert_eq!(s.inbox_page("finance", u64::MAX, 10)?, vec![]);
    assert_eq!(s.message("tax", "m1")?.map(|r| r.seq), Some(1));
    assert_eq!(s.message("tax", "m9")?, None);
    assert_eq!(s.entry("tax", 1)?.map(|e| e.leaf_hash[0]), Some(101));
    assert!(s.entry("tax", 2)?.is_none());
    Ok(())
}

/// Each record's Merkle hashes are kept under the record; every stored
/// hash index finds its own after a restart (no cache).
#[test]
fn stored_hashes_are_found_under_their_records() -> Result<(), Box<dyn std::error::Error>> {
    use tongbao_proto::merkle::{split_stored_hash_index, stored_hash_count};
    let dir = tempfile::tempdir()?;
    {
        let s = SledStore::open(dir.path(), true)?;
        let batch: Vec<NewEntry> = (0..13u64)
            .map(|seq| {
                let mut e = entry("tax", seq, &[]);
                let k = stored_hash_count(seq + 1) - stored_hash_count(seq);
                e.tree_hashes = (0..k).map(|l| [(seq * 10 + l) as u8; HASH_LEN]).collect();
                e
            })
            .collect();
        s.commit(&batch)?;
    }
    let s = SledStore::open(dir.path(), true)?;
    let all: Vec<u64> = (0..stored_hash_count(13)).rev().collect();
    let got = s.stored_hashes("tax", &all)?;
    for (i, h) in all.iter().zip(got) {
        let (level, n) = split_stored_hash_index(*i);
        let seq = ((n + 1) << level) - 1;
        assert_eq!(
            h,
            [(seq * 10 + u64::from(level)) as u8; HASH_LEN],
            "index {i}"
        );
    }
    assert!(s.stored_hashes("tax", &[stored_hash_count(13)]).is_err());
    Ok(())
}

#[test]
fn the_store_contract_holds_on_sled() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    crate::store::conformance::appends_read_back(&SledStore::open(dir.path(), true)?)
}

/// Format 6 writes an entry's inbox positions as varints (the count's top
/// bit says so), a byte or two each here instead of 8.
#[test]
fn entry_records_hold_positions_as_varints() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), true)?;
    let e = entry("tax", 0, &[("finance", 1), ("pbc", 300)]);
    let encoded = e.shared.encoded.len();
    s.commit(&[e])?;
    let record = s.raw_entry_record("tax", 0)?.ok_or("no record")?;
    assert_eq!(
        record.get(HASH_LEN..HASH_LEN + 4),
        Some((2u32 | 1 << 31).to_be_bytes().as_slice())
    );
    assert_eq!(record.len(), HASH_LEN + 4 + 1 + 2 + encoded);
    let (_, entry) = SledStore::split_entry_record(&record).ok_or("no split")?;
    assert_eq!(entry.len(), encoded);
    drop(s);
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.entry("tax", 0)?.map(|e| e.cursors), Some(vec![1, 300]));
    Ok(())
}
