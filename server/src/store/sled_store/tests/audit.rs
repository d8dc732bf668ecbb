//! The audit index: rows in their period, each reported from its own entry.

use super::*;
use crate::store::audit_index::{RUN, Row, rows_of};
use crate::store::codec::{FORMAT, FORMAT_5};

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
fn a_period_is_counted_from_the_overlay_and_from_sled() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
    crate::store::conformance::audit_rows_past(&s)?;
    s.raw_tree()?;
    crate::store::conformance::rows_past_are_counted(&s)?;
    // Half filed, half waiting: each row counted once.
    s.commit(&[audited("tax", 20, 100, &[("police", 21)])])?;
    assert_eq!(s.audit_row_past("fund", 0, i64::MAX, 30)?, Some(100));
    assert_eq!(s.audit_row_past("fund", 0, i64::MAX, 31)?, None);
    Ok(())
}

/// The counts of `model`'s rows, in windows across the runs.
fn counted_as_modelled(
    s: &SledStore,
    model: &[(i64, u64, &str)],
) -> Result<(), Box<dyn std::error::Error>> {
    crate::store::conformance::counted_as_modelled(
        s,
        model,
        &[(0, i64::MAX), (50, 250), (105, 106), (300, i64::MAX)],
    )
}

#[test]
fn a_count_crosses_runs_and_rows_waiting_among_them() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
    let mut model: Vec<(i64, u64, &str)> = Vec::new();
    let mut position = 0;
    let mut next = |channel: &'static str, seq: u64, at: i64, model: &mut Vec<_>| {
        position += 1;
        model.push((at, seq, channel));
        audited(channel, seq, at, &[("pbc", position)])
    };
    // A flush each: three runs, one after another.
    for (round, channel) in ["tax", "finance", "police"].into_iter().enumerate() {
        let entries: Vec<NewEntry> = (0..10u64)
            .map(|seq| {
                next(
                    channel,
                    seq,
                    100 * round as i64 + 10 * seq as i64 + 5,
                    &mut model,
                )
            })
            .collect();
        s.commit(&entries)?;
        s.raw_tree()?;
    }
    assert!(keys_of(&s, AUDIT_SCOPE)?.len() >= 3, "three runs");
    counted_as_modelled(&s, &model)?;
    // Rows waiting in the overlay among the filed ones (a clock set back),
    // some at the very times of filed rows.
    let waiting: Vec<NewEntry> = (0..12u64)
        .map(|seq| next("customs", seq, 25 * seq as i64 + 5, &mut model))
        .collect();
    s.commit(&waiting)?;
    counted_as_modelled(&s, &model)?;
    // Filed into the runs: the same counts.
    s.raw_tree()?;
    counted_as_modelled(&s, &model)
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
    // One more row, filed by a flush of its own: a second run.
    s.commit(&[audited("tax", 11, 20_000, &[("finance", 12)])])?;
    assert_eq!(keys_of(&s, AUDIT_SCOPE)?.len(), 2);
    // Only the period's runs are read: with the later run garbled, the
    // period reads the same, and a period holding it says it is corrupt.
    let before = s.audit_scope("fund", 3_000, 6_000, None, 100)?;
    let tree = s.raw_tree()?;
    let garbled = audit_key("fund", 20_000, 11, "tax");
    let run = tree.get(&garbled)?.ok_or("no second run")?;
    tree.insert(&garbled, &run[..run.len() - 1])?;
    tree.flush()?;
    let s = {
        drop(s);
        SledStore::open(dir.path(), true)?
    };
    assert_eq!(s.audit_scope("fund", 3_000, 6_000, None, 100)?, before);
    match s.audit_scope("fund", 0, i64::MAX, None, 100) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("garbled"), "{m}"),
        other => return Err(format!("expected corruption, got {other:?}").into()),
    }
    // What a row reports is read from its entry: with the entries' places
    // gone, the audit says the entry is missing rather than serve the row.
    s.raw_remove_entry_places("tax", |_| true)?;
    let s = {
        drop(s);
        SledStore::open(dir.path(), true)?
    };
    match s.audit_scope("fund", 3_000, 6_000, None, 100) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("entry tax:2"), "{m}"),
        other => return Err(format!("expected corruption, got {other:?}").into()),
    }
    Ok(())
}

/// A flush files an entry's rows as one run per mechanism, a few bytes a
/// row, and appends nothing of them to the segments; a new store reads
/// them back from their entries.
#[test]
fn audit_rows_are_runs_and_nothing_in_the_segments() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let rows = {
        let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
        for seq in 0..20u64 {
            let mut e = audited(
                "tax",
                seq,
                1_000 + seq as i64,
                &[("finance", seq + 1), ("pbc", seq + 1)],
            );
            e.audit_scopes = vec!["fund".into(), "other".into()];
            s.commit(&[e])?;
        }
        let tree = s.raw_tree()?;
        let runs: Vec<(sled::IVec, sled::IVec)> = tree
            .scan_prefix([AUDIT_SCOPE, 0])
            .collect::<Result<_, _>>()?;
        assert_eq!(runs.len(), 2, "one run per mechanism");
        for (_, v) in &runs {
            assert_eq!(v.first(), Some(&RUN));
            // The first row names its channel; the others, a few bytes each.
            assert!(v.len() <= 12 + 19 * 4, "{} bytes", v.len());
        }
        // The segment holds the entries and their hashes, nothing more.
        let (file, offset, len) = s.raw_entry_place("tax", 19)?.ok_or("no place")?;
        let hashes = 32 * tree_hashes(19).len() as u64;
        assert_eq!(std::fs::metadata(&file)?.len(), offset + len + hashes);
        [
            s.audit_scope("fund", 0, i64::MAX, None, 100)?,
            s.audit_scope("other", 0, i64::MAX, None, 100)?,
        ]
    };
    assert_eq!(rows[0].len(), 20);
    assert_eq!(rows[0], rows[1]);
    assert_eq!(
        rows[0][3].deliveries,
        [("finance".into(), 4), ("pbc".into(), 4)]
    );
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.audit_scope("fund", 0, i64::MAX, None, 100)?, rows[0]);
    // A chunk at a time, within a run.
    let mut read = Vec::new();
    let mut after: Option<ScopedEntry> = None;
    loop {
        let chunk = s.audit_scope("fund", 0, i64::MAX, after.as_ref(), 3)?;
        let Some(last) = chunk.last() else { break };
        after = Some(last.clone());
        read.extend(chunk);
    }
    assert_eq!(read, rows[0]);
    Ok(())
}

/// Rows filed before or among rows already filed (a hub clock set back,
/// a journal replayed over a flush that reached sled) rewrite the runs
/// they fall within, or make runs of their own between runs: runs never
/// overlap, every row is read once, in order.
#[test]
fn rows_filed_among_earlier_runs_keep_runs_apart() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
    for seq in 0..5u64 {
        s.commit(&[audited(
            "tax",
            seq,
            1_000 * (seq as i64 + 1),
            &[("finance", seq + 1)],
        )])?;
    }
    s.raw_tree()?;
    // Another channel's entries, at times among those filed and after.
    s.commit(&[audited("fee", 0, 2_500, &[("finance", 6)])])?;
    s.commit(&[audited("fee", 1, 6_000, &[("finance", 7)])])?;
    // Read while pending in the overlay, then from sled.
    let want = [1_000, 2_000, 2_500, 3_000, 4_000, 5_000, 6_000];
    for _ in 0..2 {
        let rows = s.audit_scope("fund", 0, i64::MAX, None, 100)?;
        let times: Vec<i64> = rows.iter().map(|r| r.hub_micros).collect();
        assert_eq!(times, want);
        assert_eq!(rows[2].channel, "fee");
        let firsts = s.audit_scope("fund", 2_000, 5_000, None, 2)?;
        assert_eq!(
            firsts.iter().map(|r| r.hub_micros).collect::<Vec<_>>(),
            [2_000, 2_500]
        );
        s.raw_tree()?;
    }
    let tree = s.raw_tree()?;
    let mut last: Option<Row> = None;
    let mut filed = 0;
    for kv in tree.scan_prefix([AUDIT_SCOPE, 0]) {
        let (k, v) = kv?;
        let rows = rows_of(&k, &v)?;
        assert!(rows.first() > last.as_ref(), "runs overlap");
        filed += rows.len();
        last = rows.last().cloned();
    }
    assert_eq!(filed, 7);
    // Filing the same rows again (a replay) files each once.
    let again: Vec<Row> = tree
        .scan_prefix([AUDIT_SCOPE, 0])
        .map(|kv| {
            let (k, v) = kv?;
            rows_of(&k, &v)
        })
        .collect::<Result<Vec<Vec<Row>>, StoreError>>()?
        .concat();
    s.durability.file_audit_rows("fund", again)?;
    assert_eq!(s.audit_scope("fund", 0, i64::MAX, None, 100)?.len(), 7);
    Ok(())
}

/// `verify-data`'s check of the rows: each names an entry that is there,
/// at the row's time; a row that does not, or a run that does not decode,
/// is a failure named, and the check goes on.
#[test]
fn rows_naming_no_entry_or_another_time_are_found() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), true)?;
    for seq in 0..3u64 {
        let at = 1_000 * (seq as i64 + 1);
        s.commit(&[audited("tax", seq, at, &[("finance", seq + 1)])])?;
    }
    let checked = s.check_audit_rows()?;
    assert_eq!(
        (checked.rows, checked.failures.len()),
        (3, 0),
        "{checked:?}"
    );
    let tree = s.raw_tree()?;
    let row = |hub_micros, seq: u64| Row {
        hub_micros,
        seq,
        channel: "tax".into(),
    };
    // Entry 1 filed again at another time, and an entry that was never
    // appended, in another mechanism.
    s.durability
        .file_audit_rows("other", vec![row(1_500, 1), row(9_000, 50)])?;
    // And a run garbled.
    tree.insert(audit_key("third", 5, 0, "tax"), [RUN, 0xff].as_slice())?;
    let checked = s.check_audit_rows()?;
    assert_eq!(checked.rows, 5);
    let failures = checked.failures.join("\n");
    assert_eq!(checked.failures.len(), 3, "{failures}");
    assert!(
        failures.contains("tax:1 for mechanism other is filed at another time"),
        "{failures}"
    );
    assert!(
        failures.contains("tax:50 for mechanism other names an entry that is missing"),
        "{failures}"
    );
    assert!(failures.contains("garbled"), "{failures}");
    Ok(())
}

/// Format 5's audit index, one key per row, gathered into runs at start.
#[test]
fn a_format_5_directory_gathers_its_audit_rows_into_runs() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let rows = {
        let s = SledStore::open(dir.path(), true)?;
        for seq in 0..10u64 {
            let mut e = audited(
                "tax",
                seq,
                1_000 * (seq as i64 + 1),
                &[("finance", seq + 1)],
            );
            e.audit_scopes = vec!["fund".into(), "other".into()];
            s.commit(&[e])?;
        }
        let rows = s.audit_scope("fund", 0, i64::MAX, None, 100)?;
        back_to_rows_whole(&s)?;
        s.raw_tree()?.insert(FORMAT_KEY, FORMAT_5)?;
        s.raw_tree()?.flush()?;
        assert_eq!(keys_of(&s, AUDIT_SCOPE)?.len(), 20);
        rows
    };
    // Without room: refused, naming what it rewrites, nothing changed.
    let reserve = 1 << 20;
    crate::store::room::FREE_SPACE.set(Some(reserve));
    let refused = SledStore::open_keeping_free(dir.path(), true, reserve);
    crate::store::room::FREE_SPACE.set(None);
    match refused {
        Err(StoreError::NoRoom(m)) => {
            assert!(m.contains("of audit index keys it writes again"), "{m}")
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    let s = SledStore::open_keeping_free(dir.path(), true, 0)?;
    assert_eq!(s.raw_tree()?.get(FORMAT_KEY)?.as_deref(), Some(FORMAT));
    // Ten rows a mechanism, four a chunk in tests: runs only, every row
    // once.
    for kv in s.raw_tree()?.scan_prefix([AUDIT_SCOPE, 0]) {
        assert_eq!(kv?.1.first(), Some(&RUN));
    }
    assert_eq!(s.audit_scope("fund", 0, i64::MAX, None, 100)?, rows);
    assert_eq!(s.audit_scope("other", 0, i64::MAX, None, 100)?, rows);
    assert_eq!(audit_runs_apart(&s)?, 20);
    Ok(())
}

/// What each row reports is its own entry's, read from the segments: rows
/// of two channels interleaved in time, rows whose seqs skip entries left
/// out of the audit, rows whose entries lie in several runs of places
/// (flushed apart), read whole and a chunk at a time, then again after
/// the index is laid out as format 5 kept it and upgraded at start. An
/// audit that shared one channel's lookup with a row of the other, or
/// took a neighbour's record in a run, would report the wrong sender,
/// message id, leaf hash or deliveries.
#[test]
fn rows_of_interleaved_channels_read_their_own_entries() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut want = Vec::new();
    {
        let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
        for seq in 0..12u64 {
            for (channel, inbox, offset) in [("tax", "finance", 0), ("fee", "pbc", 5)] {
                let at = 10 * seq as i64 + offset;
                let e = if seq % 4 == 3 {
                    // Not audited: the rows' seqs skip it, its place stays
                    // in the run among theirs.
                    entry(channel, seq, &[(inbox, seq + 1)])
                } else {
                    let e = audited(channel, seq, at, &[(inbox, seq + 1), ("office", seq)]);
                    let row = Row {
                        hub_micros: at as u64,
                        seq,
                        channel: channel.into(),
                    };
                    want.push(crate::store::audit_index::scoped_entry(row, &e.shared));
                    e
                };
                s.commit(&[e])?;
            }
            if seq == 5 {
                // Entries 0 to 5 and 6 to 11 in runs of places apart.
                s.raw_tree()?;
            }
        }
    }
    let read_all = |s: &SledStore| -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(s.audit_scope("fund", 0, i64::MAX, None, 100)?, want);
        let mut chunks = Vec::new();
        let mut after: Option<ScopedEntry> = None;
        loop {
            let chunk = s.audit_scope("fund", 0, i64::MAX, after.as_ref(), 5)?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.clone());
            chunks.extend(chunk);
        }
        assert_eq!(chunks, want);
        Ok(())
    };
    // A new store: nothing cached, every entry read from its record.
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.raw_tree()?.scan_prefix([ENTRY_AT, 0]).count(), 4);
    read_all(&s)?;
    back_to_rows_whole(&s)?;
    s.raw_tree()?.insert(FORMAT_KEY, FORMAT_5)?;
    s.raw_tree()?.flush()?;
    drop(s);
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.raw_tree()?.get(FORMAT_KEY)?.as_deref(), Some(FORMAT));
    read_all(&s)?;
    Ok(())
}

/// A place that names another entry's record (a garbled run of places)
/// is refused by the audit, naming both entries, rather than reported as
/// the row's entry.
#[test]
fn a_row_whose_place_names_another_entry_is_refused() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let s = SledStore::open(dir.path(), true)?;
        for seq in 0..4u64 {
            s.commit(&[audited(
                "tax",
                seq,
                1_000 * (seq as i64 + 1),
                &[("finance", seq + 1)],
            )])?;
        }
        rewrite_places(s.raw_tree()?, "tax", |places| {
            if let (Some(one), Some(two)) = (places.get(&1).copied(), places.get(&2).copied()) {
                places.insert(1, two);
                places.insert(2, one);
            }
        })?;
    }
    let s = SledStore::open(dir.path(), true)?;
    // Rows before the swapped ones read as they were.
    assert_eq!(seqs(&s.audit_scope("fund", 0, 2_000, None, 10)?), [0]);
    match s.audit_scope("fund", 0, i64::MAX, None, 10) {
        // Whichever of the two is read first.
        Err(StoreError::Corrupt(m)) => assert!(
            m.contains("names entry tax:1, but the record read for it is entry tax:2")
                || m.contains("names entry tax:2, but the record read for it is entry tax:1"),
            "{m}"
        ),
        other => return Err(format!("expected corruption, got {other:?}").into()),
    }
    Ok(())
}

/// An audit and `verify-data` read sled's runs with rewrites held off
/// (see [`crate::store::audit_index::Rewrites`]).
#[test]
fn audits_read_runs_with_rewrites_held_off() -> Result<(), Box<dyn std::error::Error>> {
    use crate::store::audit_index::HELD;
    let dir = tempfile::tempdir()?;
    let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
    s.commit(&[audited("tax", 0, 1_000, &[("finance", 1)])])?;
    s.raw_tree()?;
    HELD.set(None);
    assert_eq!(s.audit_scope("fund", 0, i64::MAX, None, 10)?.len(), 1);
    assert_eq!(HELD.get(), Some(true), "an audit read without the lock");
    HELD.set(None);
    assert_eq!(s.check_audit_rows()?.rows, 1);
    assert_eq!(HELD.get(), Some(true), "verify-data read without the lock");
    Ok(())
}

/// A run that does not decode stops no flush of rows after it, and
/// `verify-data` names it; a row at or before its key (after the run
/// before it) fails the flush, naming it, and stays in the journal and
/// the overlay: filed around the garbled run, it made runs within its
/// span, and audits of periods that reached it answered without its rows.
/// Every audit of a period that reaches it fails.
#[test]
fn a_garbled_run_fails_audits_that_reach_it_and_flushes_within_it()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
    for seq in 0..3u64 {
        let at = 1_000 * (seq as i64 + 1);
        s.commit(&[audited("tax", seq, at, &[("finance", seq + 1)])])?;
    }
    // One run, 1000..=3000, garbled.
    let garbled = audit_key("fund", 3_000, 2, "tax");
    let tree = s.raw_tree()?;
    assert_eq!(keys_of(&s, AUDIT_SCOPE)?, [garbled.as_slice()]);
    tree.insert(garbled.as_slice(), [RUN, 0xff].as_slice())?;
    // After it: flushed.
    s.commit(&[audited("tax", 3, 4_000, &[("finance", 4)])])?;
    assert_eq!(keys_of(&s, AUDIT_SCOPE)?.len(), 2);
    let checked = s.check_audit_rows()?;
    assert_eq!(checked.rows, 1);
    assert_eq!(checked.failures.len(), 1, "{:?}", checked.failures);
    assert!(
        checked.failures[0].contains("the run ending at tax:2 is garbled"),
        "{:?}",
        checked.failures
    );
    // Within its span: committed, but no flush files it.
    s.commit(&[audited("tax", 4, 2_500, &[("finance", 5)])])?;
    s.commit(&[audited("tax", 5, 2_600, &[("finance", 6)])])?;
    match s.raw_tree() {
        Err(StoreError::Corrupt(m)) => assert!(
            m.contains("the run ending at tax:2 is garbled") && m.contains(&hex::encode(&garbled)),
            "{m}"
        ),
        other => return Err(format!("expected the garbled run, got {other:?}").into()),
    }
    assert!(matches!(s.check_audit_rows(), Err(StoreError::Corrupt(_))));
    assert_eq!(tree.get(&garbled)?.as_deref(), Some([RUN, 0xff].as_slice()));
    assert_eq!(tree.scan_prefix([AUDIT_SCOPE, 0]).count(), 2);
    let times = |since, until| -> Result<Vec<i64>, StoreError> {
        let rows = s.audit_scope("fund", since, until, None, 10)?;
        Ok(rows.iter().map(|r| r.hub_micros).collect())
    };
    assert_eq!(times(3_001, i64::MAX)?, [4_000]);
    // Every period that reaches the garbled run fails: none answers with
    // the rows it held left out (1000 and 2000 are in no other run).
    let first_page = || -> Result<Vec<i64>, StoreError> {
        let rows = s.audit_scope("fund", 0, i64::MAX, None, 1)?;
        Ok(rows.iter().map(|r| r.hub_micros).collect())
    };
    let wrong = [
        ("0..MAX", times(0, i64::MAX)),
        ("0..2000", times(0, 2_000)),
        ("2000..2600", times(2_000, 2_600)),
        ("a first page of 1", first_page()),
    ]
    .into_iter()
    .filter_map(|(period, read)| match read {
        Err(StoreError::Corrupt(m)) if m.contains("garbled") => None,
        other => Some(format!("{period}: {other:?}")),
    })
    .collect::<Vec<_>>();
    if !wrong.is_empty() {
        return Err(format!("expected the garbled run, got {wrong:?}").into());
    }
    Ok(())
}

/// `verify-data` reads runs a chunk at a time and lets rewrites in
/// between: a rewrite that cuts the runs anew can move rows it has
/// counted into a run it reads later. Each is counted once: here the two
/// runs are rewritten after the first is read, with rows early in the
/// first, so that the first's last rows move into the second.
#[test]
fn verify_data_counts_rows_a_rewrite_moves_between_chunks_once()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
    let row = |hub_micros: u64, seq: u64| Row {
        hub_micros,
        seq,
        channel: "tax".into(),
    };
    s.durability
        .file_audit_rows("fund", (1..=500).map(|t| row(t, 0)).collect())?;
    let runs = |s: &SledStore| -> Result<Vec<Vec<Row>>, StoreError> {
        s.durability
            .tree
            .scan_prefix([AUDIT_SCOPE, 0])
            .map(|kv| {
                let (k, v) = kv?;
                rows_of(&k, &v)
            })
            .collect()
    };
    let before = runs(&s)?;
    assert_eq!(before.len(), 2, "{} runs", before.len());
    let first_last = before[0].last().cloned().ok_or("an empty run")?;
    let mut rewrites = 0;
    let checked = s.check_audit_rows_in_chunks(1, || {
        rewrites += 1;
        if rewrites > 1 {
            return Ok(());
        }
        // Early in the first run, and within the second.
        let mut new: Vec<Row> = (1..=20).map(|t| row(t, 1)).collect();
        new.push(row(499, 1));
        s.durability.file_audit_rows("fund", new).map(|_| ())
    })?;
    let after = runs(&s)?;
    // The first run's last rows moved into the second.
    assert!(after[0].last() < Some(&first_last), "not cut anew");
    assert!(after[1].contains(&first_last));
    // The first run as it was, then the second's rows past it: the 500
    // rows, and the one filed within the second.
    assert_eq!(checked.rows, 501, "{:?}", checked.failures.first());
    Ok(())
}
