//! Entry records and their tree hashes in the segments: sled holds only
//! their places (a run per flush), a clean
//! stop leaves no journal behind, and damaged or missing segments are
//! reported, not read around.

use super::*;

#[test]
fn entries_are_in_the_segments_and_sled_holds_their_places()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let s = SledStore::open(dir.path(), true)?;
        s.commit(&[
            entry("tax", 0, &[("finance", 1)]),
            entry("tax", 1, &[("finance", 2), ("pbc", 1)]),
        ])?;
        s.commit(&[entry("tax", 2, &[("finance", 3)])])?;
        assert!(keys_of(&s, ENTRY)?.is_empty(), "a record in sled");
        assert!(keys_of(&s, TREE_HASH)?.is_empty(), "tree hashes in sled");
        let tree = s.raw_tree()?;
        // Runs of places, one per flush (two commits: one or two flushes).
        let mut places = 0;
        for kv in tree.scan_prefix([ENTRY_AT, 0]) {
            let (k, v) = kv?;
            let last = crate::store::codec::split_key(&k)?.1.ok_or("no seq")?;
            let run = crate::store::places::PlaceRun::decode(last, &v)?;
            let count = run.places().count();
            assert!(
                v.len() <= 12 + 3 * count,
                "{count} places in {} bytes",
                v.len()
            );
            places += count;
        }
        assert_eq!(places, 3);
        assert!(keys_of(&s, ENTRY_AT)?.len() <= 2);
    }
    // Read back by a new store: from the segments, not a cache.
    let s = SledStore::open(dir.path(), true)?;
    for seq in 0..3 {
        let e = s.entry("tax", seq)?.ok_or("entry missing")?;
        assert_eq!(e.leaf_hash[0], 100 + seq as u8);
        assert_eq!(e.entry.seq, seq);
    }
    assert_eq!(s.entry("tax", 1)?.map(|e| e.cursors), Some(vec![2, 1]));
    assert!(s.entry("tax", 3)?.is_none());
    // Each entry's leaf hash (level 0), stored after its record.
    let leaves: Vec<u64> = (0..3)
        .map(tongbao_proto::merkle::stored_hash_count)
        .collect();
    assert_eq!(
        s.stored_hashes("tax", &leaves)?,
        [[100; HASH_LEN], [101; HASH_LEN], [102; HASH_LEN]]
    );
    Ok(())
}

#[test]
fn a_clean_stop_leaves_no_journal_and_a_crash_keeps_it() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let journal_files = || -> Result<usize, std::io::Error> {
        Ok(std::fs::read_dir(dir.path().join("journal"))?.count())
    };
    let s = SledStore::open(dir.path(), true)?;
    s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
    // Open: the commit is journaled.
    assert_eq!(journal_files()?, 1);
    let crashed = tempfile::tempdir()?;
    crate::store::copy_data_dir(dir.path(), crashed.path())?;
    drop(s);
    assert_eq!(journal_files()?, 0, "sled holds it all");
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.entry("tax", 0)?.map(|e| e.cursors), Some(vec![1]));
    s.commit(&[entry("tax", 1, &[("finance", 2)])])?;
    drop(s);
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.channel_heads()?.get("tax").map(|h| h.next_seq), Some(2));
    // The copy taken while it ran replays the commit from its journal.
    let s = SledStore::open(crashed.path(), true)?;
    assert_eq!(s.entry("tax", 0)?.map(|e| e.cursors), Some(vec![1]));
    Ok(())
}

#[test]
fn a_changed_byte_in_a_segment_is_read_as_it_is() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (file, offset, len) = {
        let s = SledStore::open(dir.path(), true)?;
        s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
        s.raw_entry_place("tax", 0)?.ok_or("no place")?
    };
    // The leaf hash at the start of the record: what the checks above the
    // store compare the entry with, so nothing here may repair it.
    let mut bytes = std::fs::read(&file)?;
    assert!(bytes.len() as u64 >= offset + len);
    bytes[offset as usize] ^= 0x01;
    std::fs::write(&file, &bytes)?;
    let s = SledStore::open(dir.path(), true)?;
    let e = s.entry("tax", 0)?.ok_or("entry missing")?;
    assert_eq!(e.leaf_hash[0], 100 ^ 0x01);
    Ok(())
}

#[test]
fn a_missing_or_short_segment_is_corruption_naming_the_entry()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (file, offset, _) = {
        let s = SledStore::open(dir.path(), true)?;
        s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
        s.raw_entry_place("tax", 0)?.ok_or("no place")?
    };
    // Cut short inside the record.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)?
        .set_len(offset + 3)?;
    let s = SledStore::open(dir.path(), true)?;
    match s.entry("tax", 0) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("entry tax:0"), "{m}"),
        other => return Err(format!("expected corruption, got {other:?}").into()),
    }
    drop(s);
    std::fs::remove_file(&file)?;
    let s = SledStore::open(dir.path(), true)?;
    match s.entry("tax", 0) {
        Err(StoreError::Corrupt(m)) => {
            assert!(
                m.contains("entry tax:0") && m.contains("cannot be opened"),
                "{m}"
            )
        }
        other => return Err(format!("expected corruption, got {other:?}").into()),
    }
    Ok(())
}
