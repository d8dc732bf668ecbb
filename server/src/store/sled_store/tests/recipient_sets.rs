//! Recipient sets in the store (format 7): kept once, written with the
//! first record that names them, read back into format 6's records, and
//! a record whose set is gone refused.

use super::*;
use crate::store::codec::{FORMAT, FORMAT_6, RECIPIENT_SET, RECIPIENT_SETS_KEY};

/// The bytes of entry `seq`'s record at its place in the segments.
fn stored_bytes(s: &SledStore, seq: u64) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let (file, offset, len) = s.raw_entry_place("tax", seq)?.ok_or("no place")?;
    let bytes = std::fs::read(file)?;
    let at = usize::try_from(offset)?;
    Ok(bytes
        .get(at..at + usize::try_from(len)?)
        .ok_or("place past the segment")?
        .to_vec())
}

const THREE: [&str; 3] = ["finance", "pbc", "police"];

fn to_three(seq: u64) -> NewEntry {
    let inboxes: Vec<(&str, u64)> = THREE.iter().map(|u| (*u, seq + 1)).collect();
    entry("tax", seq, &inboxes)
}

#[test]
fn a_set_is_stored_once_and_records_read_as_format_6() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), true)?;
    for seq in 0..4 {
        s.commit(&[to_three(seq)])?;
    }
    s.commit(&[entry("tax", 4, &[("finance", 5)])])?;
    assert_eq!(
        keys_of(&s, RECIPIENT_SET)?.len(),
        2,
        "two sets of recipients"
    );
    for seq in 0..4 {
        let e = to_three(seq);
        let inline = crate::store::entry_record::entry_record_compact(
            &e.leaf_hash,
            &e.shared.cursors,
            &e.shared.encoded,
        );
        assert_eq!(s.raw_entry_record("tax", seq)?, Some(inline.clone()));
        // What the segments hold lacks the names, less the set's reference.
        let names: usize = THREE.iter().map(|u| 2 + u.len()).sum();
        assert_eq!(stored_bytes(&s, seq)?.len(), inline.len() - names + 2);
    }
    drop(s);
    let s = SledStore::open(dir.path(), true)?;
    for seq in 0..4 {
        let e = s.entry("tax", seq)?.ok_or("entry missing")?;
        assert_eq!(e.entry.recipients, THREE);
        assert_eq!(e.encoded, to_three(seq).shared.encoded);
    }
    // The sets were read at open: the next use adds none.
    s.commit(&[to_three(5)])?;
    assert_eq!(keys_of(&s, RECIPIENT_SET)?.len(), 2);
    Ok(())
}

#[test]
fn a_set_first_used_by_a_replayed_commit_survives_a_crash() -> Result<(), Box<dyn std::error::Error>>
{
    let crashed = crashed_after_first_commit(|s| s.commit(&[to_three(1), to_three(2)]))?;
    let s = SledStore::open(crashed.path(), true)?;
    for seq in 1..3 {
        let e = s.entry("tax", seq)?.ok_or("entry missing")?;
        assert_eq!(e.entry.recipients, THREE);
    }
    assert_eq!(keys_of(&s, RECIPIENT_SET)?.len(), 2);
    Ok(())
}

/// The store with entry tax:0 to finance (set 0) and tax:1 to three
/// (set 1), its last set then removed from sled and `tamper` run there.
fn two_sets_then(
    tamper: impl FnOnce(&sled::Tree) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), true)?;
    s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
    s.commit(&[to_three(1)])?;
    let last = keys_of(&s, RECIPIENT_SET)?.pop().ok_or("no set")?;
    let tree = s.raw_tree()?;
    tree.remove(last)?;
    tamper(tree)?;
    tree.flush()?;
    drop(s);
    Ok(dir)
}

#[test]
fn a_missing_set_refuses_the_start() -> Result<(), Box<dyn std::error::Error>> {
    let dir = two_sets_then(|_| Ok(()))?;
    match SledStore::open(dir.path(), true) {
        Err(StoreError::Corrupt(m)) => {
            assert!(
                m.contains("2 recipient sets were written but 1 found"),
                "{m}"
            )
        }
        other => return Err(format!("expected corruption, got {:?}", other.is_ok()).into()),
    }
    Ok(())
}

#[test]
fn a_record_whose_set_is_gone_is_refused_as_corrupt() -> Result<(), Box<dyn std::error::Error>> {
    // Its count lowered too, as if the set had never been written.
    let dir = two_sets_then(|tree| {
        tree.insert(RECIPIENT_SETS_KEY, 1u64.to_be_bytes().as_slice())?;
        Ok(())
    })?;
    let s = SledStore::open(dir.path(), true)?;
    assert!(s.entry("tax", 0)?.is_some(), "the other set still reads");
    match s.entry("tax", 1) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("recipient set 1"), "{m}"),
        other => return Err(format!("expected corruption, got {other:?}").into()),
    }
    Ok(())
}

#[test]
fn a_format_6_directory_reads_as_it_is_and_says_format_7() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let records = {
        let s = SledStore::open(dir.path(), true)?;
        for seq in 0..3 {
            s.commit(&[to_three(seq)])?;
        }
        // Back to format 6: every record inline, no set stored.
        let records = (0..3)
            .map(|seq| s.raw_entry_record("tax", seq))
            .collect::<Result<Vec<_>, _>>()?;
        for (seq, record) in (0..3).zip(&records) {
            s.raw_replace_entry_record("tax", seq, record.as_deref().ok_or("no record")?)?;
        }
        for k in keys_of(&s, RECIPIENT_SET)? {
            s.raw_tree()?.remove(k)?;
        }
        s.raw_tree()?.remove(RECIPIENT_SETS_KEY)?;
        s.raw_tree()?.insert(FORMAT_KEY, FORMAT_6)?;
        s.raw_tree()?.flush()?;
        records
    };
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.raw_tree()?.get(FORMAT_KEY)?.as_deref(), Some(FORMAT));
    for (seq, record) in (0..3).zip(&records) {
        assert_eq!(&s.raw_entry_record("tax", seq)?, record);
        assert_eq!(stored_bytes(&s, seq)?, record.clone().unwrap_or_default());
    }
    // New entries name a set.
    s.commit(&[to_three(3)])?;
    assert_eq!(keys_of(&s, RECIPIENT_SET)?.len(), 1);
    assert!(stored_bytes(&s, 3)?.len() < s.raw_entry_record("tax", 3)?.unwrap_or_default().len());
    Ok(())
}

#[test]
fn a_record_still_in_the_overlay_reads_whole() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open_flushing_every(dir.path(), true, std::time::Duration::from_secs(3600))?;
    let e = to_three(0);
    s.commit(std::slice::from_ref(&e))?;
    let inline = crate::store::entry_record::entry_record_compact(
        &e.leaf_hash,
        &e.shared.cursors,
        &e.shared.encoded,
    );
    let pending = s.durability.get(&key(ENTRY, "tax", Some(0)))?;
    assert!(
        pending.is_some_and(|v| v.len() < inline.len()),
        "in the overlay, by set"
    );
    // Read as a reader past the entry cache reads it.
    assert_eq!(
        s.entry_record("tax", 0)?.as_deref(),
        Some(inline.as_slice())
    );
    Ok(())
}
