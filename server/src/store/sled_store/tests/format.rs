//! Storage formats: older ones upgraded at start, others refused, and a
//! damaged database refused without a panic.

use super::*;

#[test]
fn a_format_2_directory_gets_its_audit_rows_at_start() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let expected = {
        let s = SledStore::open(dir.path(), true)?;
        for seq in 0..3u64 {
            let at = 1_000 * (seq as i64 + 1);
            s.commit(&[audited("tax", seq, at, &[("finance", seq + 1)])])?;
        }
        let expected = s.audit_scope("fund", 0, i64::MAX, None, 10)?;
        // As format 2 left them: entry records in sled, rows that only
        // name their entries.
        back_to_format_3(&s)?;
        let tree = s.raw_tree()?;
        for r in &expected {
            tree.insert(
                audit_key("fund", r.hub_micros, r.seq, &r.channel),
                b"".as_slice(),
            )?;
        }
        tree.insert(FORMAT_KEY, b"2".as_slice())?;
        tree.flush()?;
        expected
    };
    std::fs::remove_dir_all(dir.path().join("entries"))?;
    assert_eq!(expected.len(), 3);
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.audit_scope("fund", 0, i64::MAX, None, 10)?, expected);
    // And on to format 4: the entries moved into the segments.
    assert_eq!(
        s.raw_tree()?.get(FORMAT_KEY)?.as_deref(),
        Some(b"4".as_slice())
    );
    assert!(keys_of(&s, ENTRY)?.is_empty());
    assert_eq!(keys_of(&s, ENTRY_AT)?.len(), 3);
    // The rows too: sled holds their places.
    for kv in s.raw_tree()?.scan_prefix([AUDIT_SCOPE, 0]) {
        assert_eq!(kv?.1.first(), Some(&0), "a row left whole in sled");
    }
    Ok(())
}

#[test]
fn a_format_3_directory_moves_its_entries_into_the_segments_at_start()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let expected = {
        let s = SledStore::open(dir.path(), true)?;
        for seq in 0..5u64 {
            s.commit(&[entry("tax", seq, &[("finance", seq + 1), ("pbc", seq + 1)])])?;
        }
        back_to_format_3(&s)?;
        (0..5u64)
            .map(|seq| s.raw_entry_record("tax", seq))
            .collect::<Result<Vec<_>, _>>()?
    };
    std::fs::remove_dir_all(dir.path().join("entries"))?;
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(
        s.raw_tree()?.get(FORMAT_KEY)?.as_deref(),
        Some(b"4".as_slice())
    );
    assert!(keys_of(&s, ENTRY)?.is_empty(), "records left in sled");
    assert!(
        keys_of(&s, TREE_HASH)?.is_empty(),
        "tree hashes left in sled"
    );
    assert_eq!(keys_of(&s, ENTRY_AT)?.len(), 5);
    let leaves: Vec<u64> = (0..5)
        .map(tongbao_proto::merkle::stored_hash_count)
        .collect();
    let want: Vec<Hash> = (0..5).map(|seq| [100 + seq as u8; HASH_LEN]).collect();
    assert_eq!(s.stored_hashes("tax", &leaves)?, want);
    for (seq, record) in (0..5u64).zip(&expected) {
        assert_eq!(&s.raw_entry_record("tax", seq)?, record, "entry {seq}");
        let e = s.entry("tax", seq)?.ok_or("entry missing")?;
        assert_eq!(e.cursors, [seq + 1, seq + 1]);
    }
    // Appends go on in format 4, and a restart reads everything back.
    s.commit(&[entry("tax", 5, &[("finance", 6)])])?;
    drop(s);
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.entry("tax", 5)?.map(|e| e.cursors), Some(vec![6]));
    assert_eq!(&s.raw_entry_record("tax", 0)?, &expected[0]);
    Ok(())
}

#[test]
fn data_in_another_format_is_refused() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let s = SledStore::open(dir.path(), true)?;
        s.raw_tree()?.insert(FORMAT_KEY, b"1".as_slice())?;
        s.raw_tree()?.flush()?;
    }
    match SledStore::open(dir.path(), true) {
        Err(StoreError::Format(m)) => assert!(m.contains("format 1"), "{m}"),
        other => return Err(format!("expected refusal, got {other:?}").into()),
    }
    Ok(())
}

/// Bytes flipped across a database of some size: sled panicked on some of
/// them at open (7 of 30 here before the panic was caught).
#[test]
fn a_damaged_database_is_refused_at_open_not_a_panic() -> Result<(), Box<dyn std::error::Error>> {
    let base = tempfile::tempdir()?;
    let orig = base.path().join("orig");
    {
        let s = SledStore::open(&orig, true)?;
        for i in 0..3000u64 {
            s.commit(&[entry("tax", i, &[("finance", i + 1)])])?;
        }
        let t = s.raw_tree()?;
        for i in 0..40u64 {
            t.insert(format!("zz{i}"), vec![i as u8; 100_000])?;
        }
        t.flush()?;
    }
    let len = std::fs::metadata(orig.join("db"))?.len() as usize;
    let mut refused = 0;
    for k in 0..30 {
        let copy = base.path().join(format!("copy{k}"));
        crate::store::copy_data_dir(&orig, &copy)?;
        let mut bytes = std::fs::read(copy.join("db"))?;
        bytes[len * k / 30] ^= 0x55;
        std::fs::write(copy.join("db"), &bytes)?;
        let opened = std::panic::catch_unwind(|| SledStore::open(&copy, true).map(|_| ()));
        match opened {
            Ok(Ok(())) => {}
            Ok(Err(StoreError::Corrupt(m))) => {
                assert!(m.contains("is damaged") && m.contains("backup"), "{m}");
                refused += 1;
            }
            Ok(Err(e)) => return Err(format!("flip at {k}/30: {e}").into()),
            Err(_) => return Err(format!("flip at {k}/30 panicked").into()),
        }
        std::fs::remove_dir_all(&copy)?;
    }
    assert!(
        refused > 0,
        "no flip was refused: the test damaged nothing sled reads"
    );
    Ok(())
}
