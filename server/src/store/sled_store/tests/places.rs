//! Entries' places a run at a time (format 5): one sled key per channel
//! per flush, every entry found through it, garbled runs reported, and
//! format 4's one key per entry gathered at start, also after a start
//! that stopped midway; format 4's inbox runs, written out whole, read
//! beside format 5's stretches.

use super::*;
use crate::store::codec::{
    FORMAT, FORMAT_4, PLACES_GATHERED_KEY, decode_inbox_run, inbox_run_whole, split_key,
};
use crate::store::places::PlaceRun;

/// `n` entries of "tax", committed `per_commit` at a time.
fn filled(dir: &std::path::Path, n: u64, per_commit: u64) -> Result<SledStore, StoreError> {
    // Flushed when a test says (`raw_tree`), not by the clock.
    let s = SledStore::open_flushing_every(dir, true, std::time::Duration::from_secs(3600))?;
    let mut seq = 0;
    while seq < n {
        let batch: Vec<NewEntry> = (seq..n.min(seq + per_commit))
            .map(|q| entry("tax", q, &[("finance", q + 1)]))
            .collect();
        seq += batch.len() as u64;
        s.commit(&batch)?;
    }
    Ok(s)
}

/// Every entry of "tax" below `n` reads back, with its leaf hash, and
/// none at `n`.
fn check_entries(s: &SledStore, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    for seq in 0..n {
        let e = s.entry("tax", seq)?.ok_or(format!("entry {seq} missing"))?;
        assert_eq!(e.entry.seq, seq);
        assert_eq!(e.cursors, [seq + 1]);
    }
    assert!(s.entry("tax", n)?.is_none());
    let leaves: Vec<u64> = (0..n)
        .map(tongbao_proto::merkle::stored_hash_count)
        .collect();
    let want: Vec<Hash> = (0..n)
        .map(|seq| [(seq as u8).wrapping_add(100); HASH_LEN])
        .collect();
    assert_eq!(s.stored_hashes("tax", &leaves)?, want);
    Ok(())
}

#[test]
fn a_flush_names_a_channels_entries_with_one_key() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let s = filled(dir.path(), 100, 10)?;
        // Ten commits, one flush (`raw_tree` flushes): one run.
        assert_eq!(keys_of(&s, ENTRY_AT)?.len(), 1);
        s.commit(&[entry("tax", 100, &[("finance", 101)])])?;
        assert_eq!(keys_of(&s, ENTRY_AT)?.len(), 2, "a run per flush");
    }
    // Read back by a new store: from the segments, not a cache.
    let s = SledStore::open(dir.path(), true)?;
    check_entries(&s, 101)
}

#[test]
fn a_garbled_run_is_corruption_naming_the_entry() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let s = filled(dir.path(), 3, 3)?;
        let tree = s.raw_tree()?;
        let (k, v) = tree.scan_prefix([ENTRY_AT, 0]).next().ok_or("no run")??;
        // One byte short: the last entry's lengths are cut.
        tree.insert(k, &v[..v.len() - 1])?;
        tree.flush()?;
    }
    let s = SledStore::open(dir.path(), true)?;
    match s.entry("tax", 1) {
        Err(StoreError::Corrupt(m)) => {
            assert!(m.contains("entry tax:1") && m.contains("garbled"), "{m}")
        }
        other => return Err(format!("expected corruption, got {other:?}").into()),
    }
    Ok(())
}

#[test]
fn an_entry_replaced_alone_leaves_the_others_of_its_run() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let s = filled(dir.path(), 5, 5)?;
    let mut changed = s.raw_entry_record("tax", 4)?.ok_or("no record")?;
    changed[0] ^= 1;
    // The last of the run (its key), then one inside it.
    s.raw_replace_entry_record("tax", 4, &changed)?;
    s.raw_replace_entry_record("tax", 2, &changed)?;
    drop(s);
    let s = SledStore::open(dir.path(), true)?;
    for seq in [0, 1, 3] {
        assert_eq!(s.entry("tax", seq)?.map(|e| e.entry.seq), Some(seq));
    }
    assert_eq!(s.raw_entry_record("tax", 4)?, Some(changed.clone()));
    assert_eq!(s.raw_entry_record("tax", 2)?, Some(changed));
    Ok(())
}

/// Lays a store's places out as format 4 did: one key per entry, its
/// place alone; the store is to be dropped after.
fn back_to_format_4(s: &SledStore) -> Result<(), Box<dyn std::error::Error>> {
    let tree = s.raw_tree()?;
    let runs = tree
        .scan_prefix([ENTRY_AT, 0])
        .collect::<Result<Vec<_>, _>>()?;
    for (k, v) in runs {
        let (channel, last) = split_key(&k)?;
        tree.remove(&k)?;
        for (seq, place) in PlaceRun::decode(last.ok_or("no seq")?, &v)?.places() {
            tree.insert(key(ENTRY_AT, &channel, Some(seq)), place.encode())?;
        }
    }
    // Inbox runs written out whole, as format 4 wrote them.
    let inbox_runs = tree
        .scan_prefix([INBOX, 0])
        .collect::<Result<Vec<_>, _>>()?;
    for (k, v) in inbox_runs {
        let (inbox, last) = split_key(&k)?;
        let items = decode_inbox_run(&inbox, last.ok_or("no end")?, &v)?;
        let whole: Vec<(u64, &str)> = items.iter().map(|i| (i.seq, i.channel.as_str())).collect();
        tree.insert(k, inbox_run_whole(u64_from(&v[..8])?, &whole))?;
    }
    tree.insert(FORMAT_KEY, FORMAT_4)?;
    tree.flush()?;
    Ok(())
}

/// Every position of "finance" up to `n` reads back, delivering entry
/// position - 1 of "tax".
fn check_inbox(s: &SledStore, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let page = s.inbox_page("finance", 0, 1000)?;
    let got: Vec<(u64, u64)> = page.iter().map(|i| (i.cursor, i.seq)).collect();
    let want: Vec<(u64, u64)> = (1..=n).map(|c| (c, c - 1)).collect();
    assert_eq!(got, want);
    assert!(page.iter().all(|i| i.channel == "tax"));
    Ok(())
}

#[test]
fn a_format_4_directory_gathers_its_places_into_runs_at_start()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        // Three flushes: places in three stretches of the segment.
        let s = filled(dir.path(), 6, 2)?;
        s.raw_tree()?;
        s.commit(&[entry("tax", 6, &[("finance", 7)])])?;
        s.raw_tree()?;
        s.commit(&[entry("tax", 7, &[("finance", 8)])])?;
        back_to_format_4(&s)?;
        assert_eq!(keys_of(&s, ENTRY_AT)?.len(), 8);
    }
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.raw_tree()?.get(FORMAT_KEY)?.as_deref(), Some(FORMAT));
    assert!(s.raw_tree()?.get(PLACES_GATHERED_KEY)?.is_none());
    // Eight places, four a chunk in tests, each chunk contiguous: two runs.
    assert_eq!(keys_of(&s, ENTRY_AT)?.len(), 2);
    check_entries(&s, 8)?;
    // Whole inbox runs read as before; new ones are stretches beside them.
    check_inbox(&s, 8)?;
    s.commit(&[entry("tax", 8, &[("finance", 9)])])?;
    drop(s);
    let s = SledStore::open(dir.path(), true)?;
    check_entries(&s, 9)?;
    check_inbox(&s, 9)
}

#[test]
fn a_gathering_stopped_midway_goes_on_at_the_next_start() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    {
        let s = filled(dir.path(), 11, 11)?;
        back_to_format_4(&s)?;
    }
    upgrade::CHUNKS_BEFORE_FAILING.set(Some(1));
    let stopped = SledStore::open(dir.path(), true);
    upgrade::CHUNKS_BEFORE_FAILING.set(None);
    match stopped {
        Err(StoreError::Database(m)) => assert!(m.contains("upgrade stopped"), "{m}"),
        other => return Err(format!("expected a stop, got {other:?}").into()),
    }
    {
        // Half gathered: the format still says 4, the marker where it stopped.
        let db = crate::store::durability::open_sled(dir.path())?;
        let tree = db.open_tree("exchange")?;
        assert_eq!(tree.get(FORMAT_KEY)?.as_deref(), Some(FORMAT_4));
        let marker = tree.get(PLACES_GATHERED_KEY)?.ok_or("no marker")?;
        assert_eq!(split_key(&marker)?, ("tax".to_string(), Some(7)));
        assert_eq!(tree.scan_prefix([ENTRY_AT, 0]).count(), 2 + 3);
    }
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(s.raw_tree()?.get(FORMAT_KEY)?.as_deref(), Some(FORMAT));
    assert_eq!(keys_of(&s, ENTRY_AT)?.len(), 3);
    check_entries(&s, 11)?;
    check_inbox(&s, 11)
}

#[test]
fn a_format_4_journal_replays_as_format_4_then_gathers() -> Result<(), Box<dyn std::error::Error>> {
    // A format-4 hub crashed with commits sled had not flushed: the replay
    // names their places one key each, as the gathering expects.
    let crashed = crashed_after_first_commit(|s| {
        s.commit(&[entry("tax", 1, &[("finance", 2)])])?;
        s.commit(&[entry("tax", 2, &[("finance", 3)])])?;
        s.sync()
    })?;
    {
        let db = crate::store::durability::open_sled(crashed.path())?;
        let tree = db.open_tree("exchange")?;
        let runs = tree
            .scan_prefix([ENTRY_AT, 0])
            .collect::<Result<Vec<_>, _>>()?;
        for (k, v) in runs {
            let (channel, last) = split_key(&k)?;
            tree.remove(&k)?;
            for (seq, place) in PlaceRun::decode(last.ok_or("no seq")?, &v)?.places() {
                tree.insert(key(ENTRY_AT, &channel, Some(seq)), place.encode())?;
            }
        }
        tree.insert(FORMAT_KEY, FORMAT_4)?;
        db.flush()?;
    }
    let s = SledStore::open(crashed.path(), true)?;
    assert_eq!(s.raw_tree()?.get(FORMAT_KEY)?.as_deref(), Some(FORMAT));
    assert_eq!(s.channel_heads()?.get("tax").map(|h| h.next_seq), Some(3));
    check_entries(&s, 3)?;
    check_inbox(&s, 3)
}

#[test]
fn a_garbled_format_4_place_is_refused_naming_its_entry() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    {
        let s = filled(dir.path(), 3, 3)?;
        back_to_format_4(&s)?;
        let tree = s.raw_tree()?;
        tree.insert(key(ENTRY_AT, "tax", Some(1)), b"\xff".as_slice())?;
        tree.flush()?;
    }
    match SledStore::open(dir.path(), true) {
        Err(StoreError::Corrupt(m)) => {
            assert!(m.contains("entry tax:1") && m.contains("garbled"), "{m}")
        }
        other => return Err(format!("expected corruption, got {other:?}").into()),
    }
    Ok(())
}

#[test]
fn a_format_4_upgrade_without_room_says_it_rewrites_places()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let s = filled(dir.path(), 3, 3)?;
        back_to_format_4(&s)?;
    }
    let reserve = 1 << 20;
    crate::store::room::FREE_SPACE.set(Some(reserve));
    let refused = SledStore::open_keeping_free(dir.path(), true, reserve);
    crate::store::room::FREE_SPACE.set(None);
    match refused {
        Err(StoreError::NoRoom(m)) => {
            assert!(
                m.contains("of entries' places and audit index keys it writes again"),
                "{m}"
            );
            assert!(!m.contains("copies"), "{m}");
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    let s = SledStore::open_keeping_free(dir.path(), true, 0)?;
    check_entries(&s, 3)
}

#[test]
fn an_entry_below_the_head_without_a_place_is_corruption() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    {
        let s = filled(dir.path(), 3, 3)?;
        s.raw_remove_entry_places("tax", |seq| seq == 1)?;
        s.raw_tree()?.flush()?;
    }
    // A new store: nothing cached.
    let s = SledStore::open(dir.path(), true)?;
    for seq in [0, 2] {
        assert_eq!(s.entry("tax", seq)?.map(|e| e.entry.seq), Some(seq));
    }
    match s.entry("tax", 1) {
        Err(StoreError::Corrupt(m)) => {
            assert!(m.contains("entry tax:1") && m.contains("missing"), "{m}")
        }
        other => return Err(format!("expected corruption, got {other:?}").into()),
    }
    let leaf = tongbao_proto::merkle::stored_hash_count(1);
    match s.stored_hashes("tax", &[leaf]) {
        Err(StoreError::Corrupt(m)) => assert!(
            m.contains("channel tax") && m.contains("stored hash") && m.contains("missing"),
            "{m}"
        ),
        other => return Err(format!("expected corruption, got {other:?}").into()),
    }
    // At and past the head, absence is no damage.
    assert!(s.entry("tax", 3)?.is_none());
    Ok(())
}
