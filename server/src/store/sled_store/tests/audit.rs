//! The audit index: rows in their period, read without the entries.

use super::*;

#[test]
fn an_inverted_audit_window_holds_nothing() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
    let mut e = entry("tax", 0, &[("finance", 1)]);
    e.hub_micros = 1_500;
    e.audit_scopes = vec!["fund".into()];
    s.commit(&[e])?;
    // Once from the overlay, once from sled.
    for _ in 0..2 {
        assert_eq!(s.audit_scope("fund", 1_000, 2_000, None, 10)?.len(), 1);
        assert!(s.audit_scope("fund", 2_000, 1_000, None, 10)?.is_empty());
        assert!(s.audit_scope("fund", 1_500, 1_500, None, 10)?.is_empty());
        s.raw_tree()?;
    }
    Ok(())
}

#[test]
fn the_audit_index_holds_what_was_appended_and_a_query_reads_only_its_period()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
    for seq in 0..10u64 {
        let at = 1_000 * (seq as i64 + 1);
        s.commit(&[audited(
            "tax",
            seq,
            at,
            &[("finance", seq + 1), ("pbc", seq + 1)],
        )])?;
    }
    // Outside every office's scope: no row.
    s.commit(&[entry("tax", 10, &[("finance", 11)])])?;
    // Once from the overlay, once from sled.
    for _ in 0..2 {
        let rows = s.audit_scope("fund", 3_000, 6_000, None, 100)?;
        assert_eq!(seqs(&rows), [2, 3, 4]);
        let r = &rows[0];
        assert_eq!(
            (r.hub_micros, r.channel.as_str(), r.sender.as_str()),
            (3_000, "tax", "tax")
        );
        assert_eq!(
            (r.message_id.as_str(), r.kind, r.ack_deadline_micros),
            ("m2", pb::Kind::EarlyWarning as i32, 7_000)
        );
        assert_eq!(r.leaf_hash, [102; HASH_LEN]);
        assert_eq!(
            r.deliveries,
            [("finance".to_string(), 3), ("pbc".to_string(), 3)]
        );
        // A chunk at a time: after a row, the rows that follow it.
        assert_eq!(seqs(&s.audit_scope("fund", 3_000, 6_000, Some(r), 1)?), [3]);
        assert!(
            s.audit_scope("fund", 3_000, 6_000, rows.last(), 10)?
                .is_empty()
        );
        assert_eq!(s.audit_scope("fund", 0, i64::MAX, None, 100)?.len(), 10);
        assert!(s.audit_scope("other", 0, i64::MAX, None, 100)?.is_empty());
        s.raw_tree()?;
    }
    // Only the period's rows are read, and never an entry: with every entry
    // record gone and a row outside the period garbled, the period reads
    // the same, and a period holding the garbled row says it is corrupt.
    let before = s.audit_scope("fund", 3_000, 6_000, None, 100)?;
    let tree = s.raw_tree()?;
    let places = tree
        .scan_prefix([ENTRY_AT, 0])
        .keys()
        .collect::<Result<Vec<_>, _>>()?;
    assert!(!places.is_empty(), "no places to remove");
    for k in places {
        tree.remove(k)?;
    }
    tree.insert(audit_key("fund", 8_000, 7, "tax"), b"garbled".as_slice())?;
    tree.flush()?;
    let s = {
        drop(s);
        SledStore::open(dir.path(), true)?
    };
    // The entries are gone indeed: an entry below the head without a
    // place is corruption.
    assert!(
        matches!(s.entry("tax", 0), Err(StoreError::Corrupt(_))),
        "{:?}",
        s.entry("tax", 0)
    );
    assert_eq!(s.audit_scope("fund", 3_000, 6_000, None, 100)?, before);
    assert!(matches!(
        s.audit_scope("fund", 0, i64::MAX, None, 100),
        Err(StoreError::Corrupt(_))
    ));
    Ok(())
}

/// A row is kept in the segments, once for the rows of one entry in its
/// mechanisms' indexes; sled holds its key and place. A row whose bytes
/// are gone from the segment is reported, not skipped.
#[test]
fn audit_rows_are_in_the_segments_once_per_entry() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (rows, file) = {
        let s = SledStore::open(dir.path(), true)?;
        let mut e = audited("tax", 0, 1_000, &[("finance", 1), ("pbc", 1)]);
        e.audit_scopes = vec!["fund".into(), "other".into()];
        s.commit(&[e])?;
        let rows = [
            s.audit_scope("fund", 0, i64::MAX, None, 10)?,
            s.audit_scope("other", 0, i64::MAX, None, 10)?,
        ];
        let tree = s.raw_tree()?;
        let values: Vec<sled::IVec> = tree
            .scan_prefix([AUDIT_SCOPE, 0])
            .values()
            .collect::<Result<_, _>>()?;
        assert_eq!(values.len(), 2);
        assert_eq!(values[0], values[1], "one row for both");
        assert_eq!(values[0].first(), Some(&0), "a place, not the row");
        assert!(values[0].len() <= 9, "{} bytes", values[0].len());
        let (file, _, _) = s.raw_entry_place("tax", 0)?.ok_or("no place")?;
        (rows, file)
    };
    assert_eq!(rows[0].len(), 1);
    assert_eq!(rows[0], rows[1]);
    assert_eq!(
        rows[0][0].deliveries,
        [("finance".into(), 1), ("pbc".into(), 1)]
    );
    // Read back from the segment by a new store.
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.audit_scope("fund", 0, i64::MAX, None, 10)?, rows[0]);
    drop(s);
    // The row was appended after the entry: cut the segment before it.
    let len = std::fs::metadata(&file)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)?
        .set_len(len - 10)?;
    let s = SledStore::open(dir.path(), true)?;
    assert!(matches!(
        s.audit_scope("fund", 0, i64::MAX, None, 10),
        Err(StoreError::Corrupt(_))
    ));
    Ok(())
}

#[test]
fn an_audit_row_changed_in_its_segment_is_found_against_its_entry()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let s = SledStore::open(dir.path(), true)?;
        for seq in 0..3u64 {
            let at = 1_000 * (seq as i64 + 1);
            s.commit(&[audited("tax", seq, at, &[("finance", seq + 1)])])?;
        }
    }
    let s = SledStore::open(dir.path(), true)?;
    let checked = s.check_audit_rows()?;
    assert_eq!(
        (checked.rows, checked.failures.len()),
        (3, 0),
        "{checked:?}"
    );
    // One recipient's inbox position in the second row, changed on disk;
    // the row still decodes, and an audit serves it as stored.
    let (_, row) = s
        .raw_tree()?
        .scan_prefix([AUDIT_SCOPE, 0])
        .nth(1)
        .ok_or("no second row")??;
    let place = crate::store::codec::place_of_row(&row)?.ok_or("row not in a segment")?;
    drop(s);
    let path = dir
        .path()
        .join("entries")
        .join(format!("{:08}.segment", place.segment));
    let mut bytes = std::fs::read(&path)?;
    let last = (place.offset + place.len - 1) as usize;
    bytes[last] ^= 0x01; // the last varint of the row: the position
    std::fs::write(&path, &bytes)?;
    let s = SledStore::open(dir.path(), true)?;
    let served = s.audit_scope("fund", 0, i64::MAX, None, 10)?;
    let want = vec![("finance".to_string(), 2)];
    assert_ne!(
        served[1].deliveries, want,
        "the change did not reach the row"
    );
    let checked = s.check_audit_rows()?;
    assert_eq!(checked.rows, 3);
    match checked.failures.as_slice() {
        [one] => assert!(
            one.contains("tax:1") && one.contains("differs from what its entry says"),
            "{one}"
        ),
        other => return Err(format!("expected one failure, got {other:?}").into()),
    }
    Ok(())
}
