//! Storage formats: older ones upgraded at start, others refused, and a
//! damaged database refused without a panic.

use super::*;
use crate::store::audit_index::RUN;
use crate::store::codec::{
    FORMAT, FORMAT_2, FORMAT_4, FORMAT_5, FORMAT_5_TO_6, PLACES_GATHERED_KEY,
};

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
    // And on to format 6: the entries moved into the segments, their
    // places in one run, the rows in one run.
    assert_eq!(s.raw_tree()?.get(FORMAT_KEY)?.as_deref(), Some(FORMAT));
    assert!(keys_of(&s, ENTRY)?.is_empty());
    assert_eq!(keys_of(&s, ENTRY_AT)?.len(), 1);
    assert_eq!(keys_of(&s, AUDIT_SCOPE)?.len(), 1);
    Ok(())
}

/// A format-2 hub that crashed with audited commits in its journal: the
/// replay names their places one key each (as the upgrade expects), and
/// filling the audit rows reads those entries through them.
#[test]
fn a_format_2_directory_with_a_journal_upgrades() -> Result<(), Box<dyn std::error::Error>> {
    let live = tempfile::tempdir()?;
    let crashed = tempfile::tempdir()?;
    {
        let s = SledStore::open(live.path(), true)?;
        for seq in 0..3u64 {
            s.commit(&[audited(
                "tax",
                seq,
                1_000 * (seq as i64 + 1),
                &[("finance", seq + 1)],
            )])?;
        }
    }
    crate::store::copy_data_dir(live.path(), crashed.path())?;
    {
        // The copy as format 2 left it.
        let s = SledStore::open(crashed.path(), true)?;
        let rows = s.audit_scope("fund", 0, i64::MAX, None, 10)?;
        back_to_format_3(&s)?;
        let tree = s.raw_tree()?;
        for r in &rows {
            tree.insert(
                audit_key("fund", r.hub_micros, r.seq, &r.channel),
                b"".as_slice(),
            )?;
        }
        tree.insert(FORMAT_KEY, b"2".as_slice())?;
        tree.flush()?;
    }
    std::fs::remove_dir_all(crashed.path().join("entries"))?;
    // Two more commits, journaled and not yet in sled when the hub died.
    let s = SledStore::open_flushing_every(live.path(), true, Duration::from_secs(3600))?;
    for seq in 3..5u64 {
        s.commit(&[audited(
            "tax",
            seq,
            1_000 * (seq as i64 + 1),
            &[("finance", seq + 1)],
        )])?;
    }
    let expected = s.audit_scope("fund", 0, i64::MAX, None, 10)?;
    let records = (0..5u64)
        .map(|seq| s.raw_entry_record("tax", seq))
        .collect::<Result<Vec<_>, _>>()?;
    let journal = crashed.path().join("journal");
    if journal.exists() {
        std::fs::remove_dir_all(&journal)?;
    }
    crate::store::copy_data_dir(&live.path().join("journal"), &journal)?;
    drop(s);
    let s = SledStore::open(crashed.path(), true)?;
    assert_eq!(s.raw_tree()?.get(FORMAT_KEY)?.as_deref(), Some(FORMAT));
    assert_eq!(s.audit_scope("fund", 0, i64::MAX, None, 10)?, expected);
    assert_eq!(expected.len(), 5);
    // The same records, those moved from format 2 with 8-byte positions.
    let whole = |seq, record: Option<Vec<u8>>| -> Result<Vec<u8>, StoreError> {
        let record = record.unwrap_or_default();
        crate::store::entry_record::whole_record("tax", seq, &record)
    };
    for (seq, record) in (0..5u64).zip(records) {
        let now = whole(seq, s.raw_entry_record("tax", seq)?)?;
        assert_eq!(now, whole(seq, record)?, "entry {seq}");
    }
    assert_eq!(s.entry("tax", 4)?.map(|e| e.cursors), Some(vec![5]));
    Ok(())
}

#[test]
fn a_format_3_directory_moves_its_entries_into_the_segments_at_start()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let all_hashes: Vec<u64> = (0..tongbao_proto::merkle::stored_hash_count(5)).collect();
    let (expected, hashes_before) = {
        let s = SledStore::open(dir.path(), true)?;
        for seq in 0..5u64 {
            s.commit(&[entry("tax", seq, &[("finance", seq + 1), ("pbc", seq + 1)])])?;
        }
        let hashes = s.stored_hashes("tax", &all_hashes)?;
        back_to_format_3(&s)?;
        let records = (0..5u64)
            .map(|seq| s.raw_entry_record("tax", seq))
            .collect::<Result<Vec<_>, _>>()?;
        (records, hashes)
    };
    std::fs::remove_dir_all(dir.path().join("entries"))?;
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.raw_tree()?.get(FORMAT_KEY)?.as_deref(), Some(FORMAT));
    assert!(keys_of(&s, ENTRY)?.is_empty(), "records left in sled");
    assert!(
        keys_of(&s, TREE_HASH)?.is_empty(),
        "tree hashes left in sled"
    );
    // Five places moved four a chunk, gathered four a chunk: two runs.
    assert_eq!(keys_of(&s, ENTRY_AT)?.len(), 2);
    let leaves: Vec<u64> = (0..5)
        .map(tongbao_proto::merkle::stored_hash_count)
        .collect();
    let want: Vec<Hash> = (0..5).map(|seq| [100 + seq as u8; HASH_LEN]).collect();
    assert_eq!(s.stored_hashes("tax", &leaves)?, want);
    // The upper levels moved too.
    assert_eq!(s.stored_hashes("tax", &all_hashes)?, hashes_before);
    for (seq, record) in (0..5u64).zip(&expected) {
        assert_eq!(&s.raw_entry_record("tax", seq)?, record, "entry {seq}");
        let e = s.entry("tax", seq)?.ok_or("entry missing")?;
        assert_eq!(e.cursors, [seq + 1, seq + 1]);
    }
    // Appends go on in format 7, and a restart reads everything back.
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
        Err(StoreError::Format(m)) => assert!(
            m.contains("format 1") && m.contains("upgrades formats 2 to 7, 5>6 and 7>8"),
            "{m}"
        ),
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

/// A format-3 store of `n` audited entries on channel "tax": its records,
/// every tree hash and its audit rows, as they read before the layout
/// went back; its segments are removed.
type Format3 = (Vec<Option<Vec<u8>>>, Vec<Hash>, Vec<ScopedEntry>);

fn format_3_store(dir: &std::path::Path, n: u64) -> Result<Format3, Box<dyn std::error::Error>> {
    let all: Vec<u64> = (0..tongbao_proto::merkle::stored_hash_count(n)).collect();
    let s = SledStore::open(dir, true)?;
    for seq in 0..n {
        let at = 1_000 * (seq as i64 + 1);
        s.commit(&[audited("tax", seq, at, &[("finance", seq + 1)])])?;
    }
    let hashes = s.stored_hashes("tax", &all)?;
    let rows = s.audit_scope("fund", 0, i64::MAX, None, 100)?;
    back_to_format_3(&s)?;
    let records = (0..n)
        .map(|seq| s.raw_entry_record("tax", seq))
        .collect::<Result<Vec<_>, _>>()?;
    drop(s);
    std::fs::remove_dir_all(dir.join("entries"))?;
    Ok((records, hashes, rows))
}

/// Checks a store upgraded from [`format_3_store`] holds all of it, in format 7.
fn check_upgraded(
    s: &SledStore,
    n: u64,
    before: &Format3,
) -> Result<(), Box<dyn std::error::Error>> {
    let (records, hashes, rows) = before;
    assert_eq!(s.raw_tree()?.get(FORMAT_KEY)?.as_deref(), Some(FORMAT));
    assert!(s.raw_tree()?.get(PLACES_GATHERED_KEY)?.is_none());
    assert!(keys_of(s, ENTRY)?.is_empty(), "records left in sled");
    assert!(keys_of(s, TREE_HASH)?.is_empty(), "hashes left in sled");
    for kv in s.raw_tree()?.scan_prefix([AUDIT_SCOPE, 0]) {
        assert_eq!(kv?.1.first(), Some(&RUN), "a row left whole in sled");
    }
    for seq in 0..n {
        assert_eq!(
            &s.raw_entry_record("tax", seq)?,
            &records[seq as usize],
            "{seq}"
        );
    }
    let all: Vec<u64> = (0..tongbao_proto::merkle::stored_hash_count(n)).collect();
    assert_eq!(&s.stored_hashes("tax", &all)?, hashes);
    // The rows of the entries before (a later one may follow), each in
    // one run.
    assert_eq!(&s.audit_scope("fund", 0, i64::MAX, None, rows.len())?, rows);
    let all = s.audit_scope("fund", 0, i64::MAX, None, usize::MAX)?.len();
    assert_eq!(audit_runs_apart(s)?, all as u64);
    Ok(())
}

#[test]
fn an_upgrade_stopped_midway_goes_on_at_the_next_start() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let n = 11; // three chunks of entries, of places and of rows
    let before = format_3_store(dir.path(), n)?;
    // Stopped among the entries, then among the places, then among the
    // rows: each start goes on where the last one stopped. Among the rows
    // the directory says "5>6", which no format 5 hub reads (nor
    // upgrades): some of its keys are runs already.
    for (chunks, stopped_in) in [(0, FORMAT_3), (2, FORMAT_4), (3, FORMAT_5_TO_6)] {
        upgrade::CHUNKS_BEFORE_FAILING.set(Some(chunks));
        let stopped = SledStore::open(dir.path(), true);
        upgrade::CHUNKS_BEFORE_FAILING.set(None);
        match stopped {
            Err(StoreError::Database(m)) => assert!(m.contains("upgrade stopped"), "{m}"),
            other => return Err(format!("expected a stop, got {other:?}").into()),
        }
        let db = crate::store::durability::open_sled(dir.path())?;
        let format = db.open_tree("exchange")?.get(FORMAT_KEY)?;
        assert_eq!(format.as_deref(), Some(stopped_in), "after {chunks} chunks");
    }
    let read_by_format_5 = [FORMAT_2, FORMAT_3, FORMAT_4, FORMAT_5];
    assert!(!read_by_format_5.contains(&FORMAT_5_TO_6));
    let s = SledStore::open(dir.path(), true)?;
    check_upgraded(&s, n, &before)?;
    // And once more after a restart, with appends in format 6.
    s.commit(&[audited("tax", n, 99_000, &[("finance", n + 1)])])?;
    drop(s);
    let s = SledStore::open(dir.path(), true)?;
    check_upgraded(&s, n, &before)?;
    assert_eq!(s.entry("tax", n)?.map(|e| e.cursors), Some(vec![n + 1]));
    Ok(())
}

#[test]
fn an_upgrade_without_room_is_refused_before_anything_changes()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let before = format_3_store(dir.path(), 3)?;
    let reserve = 1 << 20;
    // Room for the reserve, not for the records the upgrade copies.
    crate::store::room::FREE_SPACE.set(Some(reserve + 10));
    let refused = SledStore::open_keeping_free(dir.path(), true, reserve);
    crate::store::room::FREE_SPACE.set(None);
    match refused {
        Err(StoreError::NoRoom(m)) => {
            assert!(m.contains("upgrading its storage format"), "{m}");
            assert!(
                m.contains(&format!("has {} bytes free", reserve + 10)),
                "{m}"
            );
            assert!(m.contains("Nothing was changed"), "{m}");
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    {
        let db = crate::store::durability::open_sled(dir.path())?;
        let tree = db.open_tree("exchange")?;
        assert_eq!(tree.get(FORMAT_KEY)?.as_deref(), Some(FORMAT_3));
        assert_eq!(tree.scan_prefix([ENTRY, 0]).count(), 3, "records moved");
    }
    assert!(!dir.path().join("entries").exists(), "segments written");
    let s = SledStore::open_keeping_free(dir.path(), true, 0)?;
    check_upgraded(&s, 3, &before)
}

#[test]
fn a_dump_says_format_3_and_its_restore_upgrades() -> Result<(), Box<dyn std::error::Error>> {
    let base = tempfile::tempdir()?;
    let file = base.path().join("dump");
    let s = SledStore::open(&base.path().join("a"), true)?;
    for seq in 0..3u64 {
        s.commit(&[audited(
            "tax",
            seq,
            1_000 * (seq as i64 + 1),
            &[("finance", seq + 1)],
        )])?;
    }
    let records = (0..3u64)
        .map(|seq| s.raw_entry_record("tax", seq))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = s.audit_scope("fund", 0, i64::MAX, None, 100)?;
    let summary = s.dump_records(&file, 0)?;
    assert_eq!(summary.storage_format, "3", "the manifest's format");
    let mut said = None;
    crate::store::dump::read_dump(&file, |k, v| {
        if k == FORMAT_KEY {
            said = Some(v.to_vec());
        }
        Ok(())
    })?;
    assert_eq!(said.as_deref(), Some(FORMAT_3), "the dump's format record");
    // Entry records with 8-byte inbox positions, as format 3 wrote them.
    let mut whole = 0;
    crate::store::dump::read_dump(&file, |k, v| {
        if k.first() == Some(&ENTRY) {
            assert_eq!(
                v.get(HASH_LEN..HASH_LEN + 4),
                Some(1u32.to_be_bytes().as_slice())
            );
            whole += 1;
        }
        Ok(())
    })?;
    assert_eq!(whole, 3);
    // The store kept the recipients by set; the dump holds no set.
    assert_eq!(keys_of(&s, crate::store::codec::RECIPIENT_SET)?.len(), 1);
    crate::store::dump::read_dump(&file, |k, _| {
        assert_ne!(k.first(), Some(&crate::store::codec::RECIPIENT_SET));
        assert_ne!(k, crate::store::codec::RECIPIENT_SETS_KEY);
        Ok(())
    })?;
    let restored = base.path().join("b");
    SledStore::restore_records(&file, &restored)?;
    let r = SledStore::open(&restored, true)?;
    assert_eq!(r.raw_tree()?.get(FORMAT_KEY)?.as_deref(), Some(FORMAT));
    for (seq, record) in (0..3u64).zip(&records) {
        let record = record.as_deref().ok_or("no record")?;
        let whole = crate::store::entry_record::whole_record("tax", seq, record)?;
        assert_eq!(r.raw_entry_record("tax", seq)?, Some(whole));
    }
    assert_eq!(r.audit_scope("fund", 0, i64::MAX, None, 100)?, rows);
    Ok(())
}
