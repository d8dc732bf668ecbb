//! The idempotency index (format 8): a message id's record holds the seq
//! alone, the digest computed again from the entry, and after the flush
//! lives in the message id index, not in sled; a seq the index gives whose
//! entry carries another id is passed over; format 7's records (format 5's
//! whole ones too) move into the index at start; a dump writes every
//! record whole.

use super::*;
use crate::store::codec::{FORMAT, FORMAT_7, FORMAT_7_TO_8, MESSAGE};
use crate::store::conformance::message;
use crate::store::message_index::fingerprint;
use tongbao_proto::canonical::message_digest;

#[test]
fn a_record_is_in_the_index_not_in_sled_and_the_digest_comes_from_the_entry()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        // Flushed only when the test asks.
        let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
        s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
        // Before the flush: in the overlay, the seq as a varint.
        let k = key_of("tax", "m0");
        assert_eq!(
            s.durability.get_applied(&k)?.as_deref(),
            Some([0].as_slice())
        );
        s.commit(&[entry("tax", 1, &[("finance", 2)])])?;
        let tree = s.raw_tree()?;
        assert_eq!(tree.scan_prefix([MESSAGE, 0]).count(), 0, "none in sled");
        let fp = fingerprint("tax", "m1");
        assert_eq!(s.durability.messages.seqs(fp)?, vec![1]);
    }
    // A new store: the digest read from the entry's record, not a cache.
    let s = SledStore::open(dir.path(), true)?;
    let m = s.message("tax", "m1")?.ok_or("no record")?;
    assert_eq!(
        (m.seq, m.message_digest),
        (1, message_digest(&message("tax", 1)))
    );
    assert_eq!(s.message("tax", "m2")?, None);
    Ok(())
}

/// The index gives what a fingerprint may name: a seq whose entry
/// carries another id, or that is past the channel's end (another
/// sender's id with the same fingerprint), is not the record, and the
/// seq whose entry carries the id is found among them.
#[test]
fn seqs_whose_entries_carry_another_id_are_passed_over() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), true)?;
    s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
    s.commit(&[entry("tax", 1, &[("finance", 2)])])?;
    s.raw_tree()?;
    let index = &s.durability.messages;
    index.add(&[
        (fingerprint("tax", "m7"), 0),
        (fingerprint("tax", "m7"), 99),
        (fingerprint("tax", "m1"), 0),
    ])?;
    assert_eq!(s.message("tax", "m7")?, None);
    assert_eq!(s.message("tax", "m1")?.map(|m| m.seq), Some(1));
    assert_eq!(index.seqs(fingerprint("tax", "m1"))?, vec![0, 1]);
    Ok(())
}

/// Format 7 kept the records in sled (some of them whole, as format 5
/// wrote them): a start moves them into the index, a chunk at a time; a
/// start that stops midway leaves the directory saying 7>8, which a
/// format 7 hub does not read, and the next start goes on.
#[test]
fn format_7_records_move_into_the_index() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let n = 10u64;
    {
        let s = SledStore::open(dir.path(), true)?;
        for seq in 0..n {
            s.commit(&[entry("tax", seq, &[("finance", seq + 1)])])?;
        }
        let tree = s.raw_tree()?;
        for seq in 0..n {
            let v = if seq == 3 {
                [seq.to_be_bytes().as_slice(), &[7; HASH_LEN]].concat()
            } else {
                super::super::message_ids::message_value(seq)
            };
            tree.insert(key_of("tax", &format!("m{seq}")), v)?;
        }
        tree.insert(FORMAT_KEY, FORMAT_7)?;
        tree.flush()?;
    }
    std::fs::remove_dir_all(dir.path().join("message-ids"))?;
    upgrade::CHUNKS_BEFORE_FAILING.set(Some(1));
    let stopped = SledStore::open(dir.path(), true);
    upgrade::CHUNKS_BEFORE_FAILING.set(None);
    match stopped {
        Err(StoreError::Database(m)) => assert!(m.contains("upgrade stopped"), "{m}"),
        other => return Err(format!("expected a stop, got {other:?}").into()),
    }
    {
        let db = crate::store::durability::open_sled(dir.path())?;
        let tree = db.open_tree("exchange")?;
        assert_eq!(tree.get(FORMAT_KEY)?.as_deref(), Some(FORMAT_7_TO_8));
        // Two chunks of 4 moved, 2 records left.
        assert_eq!(tree.scan_prefix([MESSAGE, 0]).count(), 2);
    }
    let s = SledStore::open(dir.path(), true)?;
    let tree = s.raw_tree()?;
    assert_eq!(tree.get(FORMAT_KEY)?.as_deref(), Some(FORMAT));
    assert_eq!(tree.scan_prefix([MESSAGE, 0]).count(), 0);
    for seq in 0..n {
        let m = s.message("tax", &format!("m{seq}"))?.ok_or("no record")?;
        // Format 5's digest too is the entry's now.
        assert_eq!(
            (m.seq, m.message_digest),
            (seq, message_digest(&message("tax", seq)))
        );
    }
    assert_eq!(s.message("tax", &format!("m{n}"))?, None);
    Ok(())
}

#[test]
fn a_dump_holds_records_whole_and_its_restore_reads_them() -> Result<(), Box<dyn std::error::Error>>
{
    let base = tempfile::tempdir()?;
    let file = base.path().join("dump");
    let s = SledStore::open(&base.path().join("a"), true)?;
    for seq in 0..3 {
        s.commit(&[entry("tax", seq, &[("finance", seq + 1)])])?;
    }
    s.dump_records(&file, 0)?;
    let mut records = Vec::new();
    crate::store::dump::read_dump(&file, |k, v| {
        if k.first() == Some(&b'm') {
            records.push(v.to_vec());
        }
        Ok(())
    })?;
    let want: Vec<Vec<u8>> = (0..3u64)
        .map(|seq| {
            [
                seq.to_be_bytes().as_slice(),
                &message_digest(&message("tax", seq)),
            ]
            .concat()
        })
        .collect();
    assert_eq!(records, want, "seq and digest, as format 3 kept them");
    let restored = base.path().join("b");
    SledStore::restore_records(&file, &restored)?;
    let r = SledStore::open(&restored, true)?;
    for seq in 0..3 {
        assert_eq!(
            r.message("tax", &format!("m{seq}"))?,
            s.message("tax", &format!("m{seq}"))?
        );
    }
    Ok(())
}

/// The key of a message id's record.
fn key_of(sender: &str, message_id: &str) -> Vec<u8> {
    super::super::message_ids::message_key(sender, message_id)
}

/// `verify-data`'s check: every entry's message id has its record, and
/// the runs read whole; a lost record and a damaged run are named.
#[test]
fn a_lost_record_and_a_damaged_run_are_found() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let n = 12u64;
    {
        let s = SledStore::open(dir.path(), true)?;
        // 9 flushed (a roll: 8 or more), then 3 that stay in the log.
        for seq in 0..n {
            s.commit(&[entry("tax", seq, &[("finance", seq + 1)])])?;
            if seq == 8 {
                s.raw_tree()?;
            }
        }
        s.raw_tree()?;
        assert_eq!(s.check_message_ids()?, Vec::<String>::new());
    }
    let index = dir.path().join("message-ids");
    let runs: Vec<_> = std::fs::read_dir(&index)?
        .filter_map(|f| f.ok().map(|f| f.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("run-"))
        })
        .collect();
    let run = runs.first().ok_or("no run written")?;
    let mut bytes = std::fs::read(run)?;
    // The first record's seq: the run opens, its records' checksum fails.
    bytes[24 + 15] ^= 1;
    std::fs::write(run, &bytes)?;
    let s = SledStore::open(dir.path(), true)?;
    let failures = s.check_message_ids()?;
    assert!(
        failures
            .iter()
            .any(|f| f.contains("its records are damaged")),
        "{failures:?}"
    );
    drop(s);
    // Lost: the runs gone, the log (the newest records) kept.
    for run in &runs {
        std::fs::remove_file(run)?;
    }
    let s = SledStore::open(dir.path(), true)?;
    let failures = s.check_message_ids()?;
    assert!(
        !failures.is_empty() && failures.len() < n as usize,
        "{failures:?}"
    );
    assert!(failures[0].contains("channel tax: entry 0's message id has no record"));
    assert!(!failures.iter().any(|f| f.contains("entry 11")));
    Ok(())
}

/// A start refuses an index without the newest entry's record: the index
/// gone whole, or its log.
#[test]
fn a_start_refuses_an_index_without_the_newest_records() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let s = SledStore::open(dir.path(), true)?;
        for seq in 0..3 {
            s.commit(&[entry("tax", seq, &[("finance", seq + 1)])])?;
        }
    }
    let index = dir.path().join("message-ids");
    let kept = tempfile::tempdir()?;
    crate::store::copy_data_dir(&index, kept.path())?;
    for lost in ["message-ids", "message-ids/log"] {
        let path = dir.path().join(lost);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        match SledStore::open(dir.path(), true) {
            Err(StoreError::Corrupt(m)) => assert!(
                m.contains("lacks the record of entry tax:2, its channel's newest"),
                "{m}"
            ),
            other => return Err(format!("{lost}: expected a refusal, got {other:?}").into()),
        }
        std::fs::remove_dir_all(&index)?;
        crate::store::copy_data_dir(kept.path(), &index)?;
    }
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.message("tax", "m2")?.map(|r| r.seq), Some(2));
    Ok(())
}
