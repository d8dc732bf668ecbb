//! A crash between the journal and sled: what the journal replays, and
//! what it refuses.

use super::*;

#[test]
fn commits_sled_had_not_flushed_are_replayed_from_the_journal()
-> Result<(), Box<dyn std::error::Error>> {
    let crashed = crashed_after_first_commit(|s| {
        s.commit(&[
            entry("tax", 1, &[("finance", 2), ("pbc", 1)]),
            entry("tax", 2, &[("finance", 3)]),
        ])?;
        s.commit(&[entry("pbc", 0, &[("finance", 4)])])
    })?;
    let before = SledStore::open(crashed.path(), true)?;
    let s = &before;
    assert_eq!(s.channel_heads()?.get("tax").map(|h| h.next_seq), Some(3));
    assert_eq!(s.channel_heads()?.get("pbc").map(|h| h.next_seq), Some(1));
    assert_eq!(s.inbox_heads()?.get("finance"), Some(&4));
    let page: Vec<_> = s
        .inbox_page("finance", 0, 10)?
        .iter()
        .map(|i| (i.cursor, i.channel.clone(), i.seq))
        .collect();
    assert_eq!(
        page,
        [
            (1, "tax".to_string(), 0),
            (2, "tax".to_string(), 1),
            (3, "tax".to_string(), 2),
            (4, "pbc".to_string(), 0)
        ]
    );
    assert_eq!(s.message("tax", "m2")?.map(|r| r.seq), Some(2));
    assert_eq!(s.entry("tax", 2)?.map(|e| e.leaf_hash[0]), Some(102));
    let leaf_of_2 = tongbao_proto::merkle::stored_hash_count(2);
    assert_eq!(s.stored_hashes("tax", &[leaf_of_2])?, vec![[102; HASH_LEN]]);
    // The next commit follows the replayed ones, and all survive again.
    s.commit(&[entry("tax", 3, &[("finance", 5)])])?;
    drop(before);
    let s = SledStore::open(crashed.path(), true)?;
    assert_eq!(s.channel_heads()?.get("tax").map(|h| h.next_seq), Some(4));
    assert_eq!(s.inbox_page("finance", 0, 10)?.len(), 5);
    Ok(())
}

#[test]
fn a_saved_checkpoint_is_in_the_journal() -> Result<(), Box<dyn std::error::Error>> {
    // Saved, then the hub dies before sled is flushed again.
    let crashed = crashed_after_first_commit(|s| {
        s.save_checkpoints(&[("tax", "tax checkpoint 1"), ("pbc", "pbc checkpoint 1")])
    })?;
    let s = SledStore::open(crashed.path(), true)?;
    let saved = s.checkpoints()?;
    assert_eq!(
        saved.get("tax").map(String::as_str),
        Some("tax checkpoint 1")
    );
    assert_eq!(
        saved.get("pbc").map(String::as_str),
        Some("pbc checkpoint 1")
    );
    Ok(())
}

#[test]
fn a_flush_cut_short_leaves_no_position_twice() -> Result<(), Box<dyn std::error::Error>> {
    let crashed = crashed_after_first_commit(|s| {
        for seq in 1..4u64 {
            s.commit(&[entry("tax", seq, &[("finance", seq + 1)])])?;
        }
        Ok(())
    })?;
    // The crash came mid-flush: positions 2 and 3 merged into one run
    // had reached sled, the record of the flushed commit had not.
    {
        let db = crate::store::durability::open_sled(crashed.path())?;
        db.open_tree("exchange")?.insert(
            key(INBOX, "finance", Some(3)),
            inbox_run(2, &[(1, "tax"), (2, "tax")]),
        )?;
        db.flush()?;
    }
    let s = SledStore::open(crashed.path(), true)?;
    let cursors = |s: &SledStore| -> Result<Vec<u64>, StoreError> {
        Ok(s.inbox_page("finance", 0, 10)?
            .iter()
            .map(|i| i.cursor)
            .collect())
    };
    assert_eq!(cursors(&s)?, [1, 2, 3, 4]);
    // The replay wrote each commit's run back under its own key: the
    // key the merged run had holds position 3 alone again.
    assert_eq!(
        s.raw_tree()?.get(key(INBOX, "finance", Some(3)))?,
        Some(inbox_run(3, &[(2, "tax")]).into())
    );
    // Runs of different extent over the same positions (as a read
    // beside a merging flush may meet them) still give each once.
    s.raw_tree()?.insert(
        key(INBOX, "finance", Some(3)),
        inbox_run(1, &[(0, "tax"), (1, "tax"), (2, "tax")]),
    )?;
    assert_eq!(cursors(&s)?, [1, 2, 3, 4]);
    assert_eq!(s.inbox_page("finance", 2, 10)?.len(), 2);
    Ok(())
}

#[test]
fn a_flushed_commit_not_yet_recorded_is_replayed_over_what_sled_holds()
-> Result<(), Box<dyn std::error::Error>> {
    let live = tempfile::tempdir()?;
    let crashed = tempfile::tempdir()?;
    let s = SledStore::open_flushing_every(live.path(), true, Duration::from_secs(3600))?;
    let recorded = |dir: &Path| -> Result<u64, Box<dyn std::error::Error>> {
        let db = crate::store::durability::open_sled(dir)?;
        let v = db.open_tree("exchange")?.get(COMMIT_KEY)?;
        Ok(v.map(|v| u64_from(&v)).transpose()?.unwrap_or(0))
    };
    for seq in 0..3u64 {
        s.commit(&[entry("tax", seq, &[("finance", seq + 1)])])?;
    }
    let d = &s.durability;
    d.flush(true, Record::WithNextFlush)?;
    let first = d.applied.load(Ordering::Acquire);
    s.commit(&[entry("tax", 3, &[("finance", 4)])])?;
    // The second flush records the first's commit beside its own writes.
    d.flush(true, Record::WithNextFlush)?;
    // The hub dies here: sled holds all four commits, merged into runs,
    // and names only the first three.
    crate::store::copy_data_dir(live.path(), crashed.path())?;
    drop(s);
    assert_eq!(recorded(crashed.path())?, first);
    assert_eq!(
        recorded(live.path())?,
        first + 1,
        "a closing store records all"
    );
    let s = SledStore::open(crashed.path(), true)?;
    let page: Vec<_> = s
        .inbox_page("finance", 0, 10)?
        .iter()
        .map(|i| (i.cursor, i.seq))
        .collect();
    assert_eq!(page, [(1, 0), (2, 1), (3, 2), (4, 3)]);
    // The message id index held the fourth's pair already; replayed, it
    // is added again, and every id is found at its entry.
    for seq in 0..4u64 {
        let found = s.message("tax", &format!("m{seq}"))?.map(|r| r.seq);
        assert_eq!(found, Some(seq));
    }
    let fp = crate::store::message_index::fingerprint("tax", "m3");
    assert_eq!(s.durability.messages.seqs(fp)?, vec![3]);
    assert_eq!(s.channel_heads()?.get("tax").map(|h| h.next_seq), Some(4));
    assert_eq!(s.inbox_heads()?.get("finance"), Some(&4));
    drop(s);
    assert_eq!(recorded(crashed.path())?, first + 1);
    Ok(())
}

#[test]
fn a_garbled_journal_record_is_refused_at_start() -> Result<(), Box<dyn std::error::Error>> {
    let crashed = crashed_after_first_commit(|s| {
        s.commit(&[entry("tax", 1, &[("finance", 2)])])?;
        s.commit(&[entry("tax", 2, &[("finance", 3)])])
    })?;
    let journal = crashed.path().join("journal");
    // A record whose checksum holds but whose contents do not decode
    // (written by something else): refused, not half applied.
    let file = std::fs::read_dir(&journal)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .max()
        .ok_or("no journal file")?;
    let mut bytes = std::fs::read(&file)?;
    let mut forged = Vec::new();
    crate::store::journal::encode_record(&mut forged, 4, &[9, 0, 0, 0, 1]);
    bytes.extend_from_slice(&forged);
    std::fs::write(&file, &bytes)?;
    match SledStore::open(crashed.path(), true) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("journal record"), "{m}"),
        other => panic!("expected a corrupt journal, got {other:?}"),
    }
    Ok(())
}
