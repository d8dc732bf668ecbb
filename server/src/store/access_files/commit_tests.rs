//! A commit's point and what follows it: a removal takes effect with its
//! records or not at all, whatever a crash cuts; a failure after the
//! point is said as such (never answered durable, never tried again); a
//! first commit cut short is undone, but nothing past it; a reader in
//! another process never sees fewer records than the checkpoint it read.

use super::tests::{ORIGIN, TestResult, append, dir_of, note, rows};
use super::*;
use crate::store::access::AccessLogStore;
use tongbao_proto::merkle::{Frontier, stored_hash_count};

/// A log of 12 signed records in several files, claimed.
fn twelve(store: &Path) -> Result<(AccessFiles, Box<dyn OriginGuard>, Frontier), StoreError> {
    let files = AccessFiles::with_file_bound(store, 100);
    let guard = files.access_claim(ORIGIN)?;
    let mut tree = Frontier::default();
    for _ in 0..4 {
        append(&files, &mut tree, 3, true).map_err(|e| StoreError::Database(e.to_string()))?;
    }
    Ok((files, guard, tree))
}

/// Appends one record removing those before `before`, signed when `sign`.
fn removal(
    files: &AccessFiles,
    tree: &mut Frontier,
    before: u64,
    sign: bool,
) -> Result<(), StoreError> {
    let first_hash = stored_hash_count(tree.size());
    let (rows, hashes) = rows(tree, 1)?;
    let signed = match sign {
        true => Some(note(tree).map_err(|e| StoreError::Database(e.to_string()))?),
        false => None,
    };
    let removing = Some(before);
    files.access_append(
        ORIGIN,
        &rows,
        first_hash,
        &hashes,
        signed.as_deref(),
        removing,
    )
}

#[test]
fn a_removal_cut_off_after_its_records_took_effect_with_them() -> TestResult {
    let store = tempfile::tempdir()?;
    let (files, guard, mut tree) = twelve(store.path())?;
    // Stopped right after the records' sync (at the checkpoint), as a
    // crash would.
    files.fail_after_commit_point(ORIGIN, "a crash")?;
    let said = removal(&files, &mut tree, 6, true)
        .err()
        .ok_or("the tail did not fail")?;
    assert!(matches!(said, StoreError::Committed(_)), "{said}");
    guard.release();
    drop(files);
    let files = AccessFiles::with_file_bound(store.path(), 100);
    let reader = open_read(store.path()).ok_or("no access log")?;
    assert_eq!(reader.access_extent(ORIGIN)?.first_kept, Some(6));
    let _guard = files.access_claim(ORIGIN)?;
    let extent = files.access_extent(ORIGIN)?;
    assert_eq!((extent.first_kept, extent.next), (Some(6), 13));
    assert_eq!(
        std::fs::read_to_string(dir_of(store.path())?.join(layout::KEPT_FROM_FILE))?,
        "6"
    );
    // The next removal goes on from where this one ended.
    removal(&files, &mut tree, 9, true)?;
    assert_eq!(files.access_extent(ORIGIN)?.first_kept, Some(9));
    Ok(())
}

#[test]
fn a_removal_whose_records_a_crash_cut_is_dropped_for_good() -> TestResult {
    let store = tempfile::tempdir()?;
    let dir = dir_of(store.path())?;
    let (files, guard, mut tree) = twelve(store.path())?;
    let before = tree.clone();
    {
        // Held, the removed files stay, as before a crash they would.
        let _snapshot = files.access_snapshot()?;
        removal(&files, &mut tree, 6, false)?;
    }
    guard.release();
    drop(files);
    // The crash's state: `kept-from` written, the removal record torn.
    std::fs::write(dir.join(layout::KEPT_FROM_FILE), "0 6@13")?;
    let (_, last) = layout::record_files(&dir)?.pop().ok_or("no record file")?;
    let bytes = std::fs::read(&last)?;
    std::fs::write(&last, &bytes[..bytes.len() - 5])?;
    let reader = open_read(store.path()).ok_or("no access log")?;
    assert_eq!(reader.access_extent(ORIGIN)?.first_kept, Some(0));
    let files = AccessFiles::with_file_bound(store.path(), 100);
    let _guard = files.access_claim(ORIGIN)?;
    let extent = files.access_extent(ORIGIN)?;
    assert_eq!((extent.first_kept, extent.next), (Some(0), 12));
    // Records reaching 13 again do not take the dropped removal.
    let mut tree = before;
    append(&files, &mut tree, 2, true)?;
    assert_eq!(files.access_extent(ORIGIN)?.first_kept, Some(0));
    let read: Vec<u64> = files
        .access_records(ORIGIN, 0, 100)?
        .iter()
        .map(|r| r.n)
        .collect();
    assert_eq!(read, (0..14).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn a_failure_after_a_first_commit_point_is_not_answered_and_undone_at_the_claim() -> TestResult {
    let store = tempfile::tempdir()?;
    let files = AccessFiles::new(store.path(), true);
    let guard = files.access_claim(ORIGIN)?;
    files.fail_after_commit_point(ORIGIN, "no space left on device")?;
    let mut tree = Frontier::default();
    let said = append(&files, &mut tree, 5, true)
        .err()
        .ok_or("a commit whose checkpoint failed went through")?;
    let said = said
        .downcast_ref::<StoreError>()
        .ok_or("not a store error")?;
    assert!(matches!(said, StoreError::Committed(_)), "{said}");
    // It takes no more until claimed anew.
    assert!(append(&files, &mut tree, 1, true).is_err());
    guard.release();
    drop(files);
    let files = AccessFiles::new(store.path(), true);
    let _guard = files.access_claim(ORIGIN)?;
    assert_eq!(files.access_extent(ORIGIN)?.next, 0);
    append(&files, &mut Frontier::default(), 3, true)?;
    assert_eq!(files.access_extent(ORIGIN)?.next, 3);
    Ok(())
}

#[test]
fn a_first_commit_marker_never_erases_more_than_its_commit() -> TestResult {
    let store = tempfile::tempdir()?;
    let dir = dir_of(store.path())?;
    let (files, guard, _) = twelve(store.path())?;
    guard.release();
    drop(files);
    // A marker left over a log of 12 records whose checkpoint is gone.
    std::fs::remove_file(dir.join(layout::CHECKPOINT_FILE))?;
    for marked in ["3", ""] {
        std::fs::write(dir.join(layout::FIRST_COMMIT_FILE), marked)?;
        let files = AccessFiles::with_file_bound(store.path(), 100);
        let said = files
            .access_claim(ORIGIN)
            .err()
            .ok_or("a log past its first commit was claimed")?
            .to_string();
        assert!(said.contains(layout::FIRST_COMMIT_FILE), "{said}");
        let reader = open_read(store.path()).ok_or("no access log")?;
        assert_eq!(reader.access_records(ORIGIN, 0, 100)?.len(), 12);
    }
    Ok(())
}

#[test]
fn a_reader_never_sees_fewer_records_than_the_checkpoint_it_read() -> TestResult {
    let store = tempfile::tempdir()?;
    let dir = dir_of(store.path())?;
    let (files, guard, mut tree) = twelve(store.path())?;
    let signed_before = tree.size();
    // Between the reader's first read and the rest, a commit begins a
    // new file and signs it.
    scan::tests_hook::set(move || {
        let _keep = &guard;
        if let Err(e) = append(&files, &mut tree, 3, true) {
            panic!("the commit between the reads failed: {e}");
        }
    });
    let found = scan::find(&dir)?;
    let signed = found
        .checkpoint
        .as_deref()
        .and_then(layout::signed_size)
        .ok_or("no checkpoint")?;
    assert!(signed >= signed_before);
    assert!(
        found.next >= signed,
        "{} records, {signed} signed",
        found.next
    );
    Ok(())
}

#[test]
fn records_appended_lazily_are_synced_by_the_next_durable_append_or_file() -> TestResult {
    let store = tempfile::tempdir()?;
    let files = AccessFiles::with_file_bound(store.path(), 600);
    let _guard = files.access_claim(ORIGIN)?;
    let mut tree = Frontier::default();
    // The first commit is never lazy: it is signed.
    let (first, hashes) = rows(&mut tree, 2)?;
    files.access_append_lazily(ORIGIN, &first, 0, &hashes)?;
    assert_eq!(files.record_syncs(ORIGIN)?, 1);
    append(&files, &mut tree, 1, true)?;
    let synced = files.record_syncs(ORIGIN)?;
    let lazily = |tree: &mut Frontier| -> TestResult {
        let first_hash = stored_hash_count(tree.size());
        let (more, hashes) = rows(tree, 1)?;
        files.access_append_lazily(ORIGIN, &more, first_hash, &hashes)?;
        Ok(())
    };
    lazily(&mut tree)?;
    assert_eq!(files.record_syncs(ORIGIN)?, synced, "a lazy append synced");
    // A durable append of nothing syncs them; then there is nothing to sync.
    let first_hash = stored_hash_count(tree.size());
    files.access_append(ORIGIN, &[], first_hash, &[], None, None)?;
    assert_eq!(files.record_syncs(ORIGIN)?, synced + 1);
    files.access_append(ORIGIN, &[], first_hash, &[], None, None)?;
    assert_eq!(files.record_syncs(ORIGIN)?, synced + 1);
    // Beginning a file syncs the one before (its sync covers only itself).
    let before = layout::record_files(&dir_of(store.path())?)?.len();
    while layout::record_files(&dir_of(store.path())?)?.len() == before {
        lazily(&mut tree)?;
    }
    assert_eq!(files.record_syncs(ORIGIN)?, synced + 2);
    assert_eq!(files.access_extent(ORIGIN)?.next, tree.size());
    Ok(())
}

/// Records 0..2 signed, 2..5 synced after, 5..8 written lazily (never
/// synced); the claim released. The last record file's path and bytes,
/// and one frame's length (all eight are alike).
fn synced_then_lazy(store: &Path) -> Result<(PathBuf, Vec<u8>, usize), Box<dyn std::error::Error>> {
    {
        let files = AccessFiles::new(store, true);
        let _guard = files.access_claim(ORIGIN)?;
        let mut tree = Frontier::default();
        append(&files, &mut tree, 2, true)?;
        append(&files, &mut tree, 3, false)?;
        let (lazy, hashes) = rows(&mut tree, 3)?;
        files.access_append_lazily(ORIGIN, &lazy, stored_hash_count(5), &hashes)?;
    }
    let (_, path) = layout::record_files(&dir_of(store)?)?
        .pop()
        .ok_or("no record file")?;
    let bytes = std::fs::read(&path)?;
    let frame = bytes.len() / 8;
    Ok((path, bytes, frame))
}

#[test]
fn a_bad_frame_a_later_frame_says_was_synced_is_never_cut() -> TestResult {
    let store = tempfile::tempdir()?;
    let (path, bytes, frame) = synced_then_lazy(store.path())?;
    // Record 2's length made impossible: record 5's frame says 5 were synced.
    let mut changed = bytes.clone();
    changed[2 * frame + 3] = 0xff;
    std::fs::write(&path, &changed)?;
    let said = AccessFiles::new(store.path(), true)
        .access_claim(ORIGIN)
        .err()
        .ok_or("a log whose synced record cannot be read was claimed")?
        .to_string();
    assert!(
        said.contains("record 2") && said.contains("says record 2 was synced"),
        "{said}"
    );
    assert_eq!(std::fs::read(&path)?, changed, "something was cut");
    // Record 3's line changed: a changed record, named by reads, not cut.
    let mut changed = bytes.clone();
    changed[4 * frame - 5] ^= 1;
    std::fs::write(&path, &changed)?;
    let files = AccessFiles::new(store.path(), true);
    let _guard = files.access_claim(ORIGIN)?;
    assert_eq!(files.access_extent(ORIGIN)?.next, 8);
    let said = files
        .access_records(ORIGIN, 3, 1)
        .err()
        .ok_or("a changed record was read")?
        .to_string();
    assert!(
        said.contains("record 3") && said.contains("checksum fails"),
        "{said}"
    );
    assert_eq!(std::fs::read(&path)?, changed, "something was cut");
    Ok(())
}

#[test]
fn a_torn_write_with_unsynced_frames_after_it_is_cut_and_kept_aside() -> TestResult {
    let store = tempfile::tempdir()?;
    let (path, bytes, frame) = synced_then_lazy(store.path())?;
    let aside = path.with_file_name(layout::cut_off_name(6));
    // Record 6's line torn, 7 whole after it: a power loss may leave
    // unsynced writes so; 7 says only 5 were synced.
    let mut torn = bytes.clone();
    torn[7 * frame - 5] ^= 1;
    std::fs::write(&path, &torn)?;
    {
        let files = AccessFiles::new(store.path(), true);
        let _guard = files.access_claim(ORIGIN)?;
        assert_eq!(files.access_extent(ORIGIN)?.next, 6);
        assert_eq!(std::fs::read(&path)?, bytes[..6 * frame]);
        assert_eq!(std::fs::read(&aside)?, torn[6 * frame..]);
        // The log goes on from record 6.
        let mut tree = Frontier::default();
        rows(&mut tree, 6)?;
        append(&files, &mut tree, 1, true)?;
        assert_eq!(files.access_extent(ORIGIN)?.next, 7);
    }
    // Record 5's length torn, 6 and 7 whole after it: cut at 5.
    let store = tempfile::tempdir()?;
    let (path, bytes, frame) = synced_then_lazy(store.path())?;
    let mut torn = bytes.clone();
    torn[5 * frame + 3] = 0xff;
    std::fs::write(&path, &torn)?;
    let files = AccessFiles::new(store.path(), true);
    drop(files.access_claim(ORIGIN)?);
    assert_eq!(files.access_extent(ORIGIN)?.next, 5);
    assert_eq!(std::fs::read(&path)?, bytes[..5 * frame]);
    let aside = path.with_file_name(layout::cut_off_name(5));
    assert_eq!(std::fs::read(&aside)?, torn[5 * frame..]);
    // Torn again at the same record: the bytes kept aside first stay.
    let files = AccessFiles::new(store.path(), true);
    let guard = files.access_claim(ORIGIN)?;
    let mut tree = Frontier::default();
    rows(&mut tree, 5)?;
    append(&files, &mut tree, 2, false)?;
    guard.release();
    let mut again = std::fs::read(&path)?;
    again[5 * frame + 3] = 0xfe;
    std::fs::write(&path, &again)?;
    drop(AccessFiles::new(store.path(), true).access_claim(ORIGIN)?);
    assert_eq!(std::fs::read(&aside)?, torn[5 * frame..]);
    assert_eq!(
        std::fs::read(aside.with_file_name(format!("{}.1", layout::cut_off_name(5))))?,
        again[5 * frame..]
    );
    // A torn last frame alone is cut (and kept aside too).
    let store = tempfile::tempdir()?;
    let (path, bytes, frame) = synced_then_lazy(store.path())?;
    std::fs::write(&path, &bytes[..bytes.len() - 7])?;
    let files = AccessFiles::new(store.path(), true);
    drop(files.access_claim(ORIGIN)?);
    assert_eq!(files.access_extent(ORIGIN)?.next, 7);
    assert_eq!(std::fs::read(&path)?, bytes[..7 * frame]);
    Ok(())
}

#[test]
fn a_tree_lost_whole_is_recomputed_in_batches_as_written() -> TestResult {
    let store = tempfile::tempdir()?;
    let dir = dir_of(store.path())?;
    {
        let files = AccessFiles::new(store.path(), true);
        let _guard = files.access_claim(ORIGIN)?;
        let mut tree = Frontier::default();
        append(&files, &mut tree, 1, true)?;
        append(&files, &mut tree, 4500, false)?;
    }
    let tree_path = dir.join(layout::TREE_FILE);
    let whole = std::fs::read(&tree_path)?;
    // More than two batches of records lost their hashes.
    std::fs::write(&tree_path, &whole[..32 * 3 + 7])?;
    let reader = open_read(store.path()).ok_or("no access log")?;
    assert_eq!(
        reader.access_extent(ORIGIN)?.hashes,
        stored_hash_count(4501)
    );
    let files = AccessFiles::new(store.path(), true);
    let _guard = files.access_claim(ORIGIN)?;
    assert_eq!(std::fs::read(&tree_path)?, whole);
    Ok(())
}

/// A commit of hashes alone that removes records (an earlier version's
/// files moved in, their records all removed): its `kept-from` is its
/// commit point, so a start with no record file still finds it.
#[test]
fn a_removal_without_records_holds_across_a_restart() -> TestResult {
    let store = tempfile::tempdir()?;
    let files = AccessFiles::with_file_bound(store.path(), 100);
    let guard = files.access_claim(ORIGIN)?;
    let mut tree = Frontier::default();
    let (_, hashes) = rows(&mut tree, 5)?;
    files.access_append(ORIGIN, &[], 0, &hashes, None, Some(5))?;
    guard.release();
    drop(files);
    let files = AccessFiles::with_file_bound(store.path(), 100);
    let _guard = files.access_claim(ORIGIN)?;
    let extent = files.access_extent(ORIGIN)?;
    assert_eq!(
        (extent.first_kept, extent.next, extent.hashes),
        (None, 5, stored_hash_count(5))
    );
    Ok(())
}

/// A removal that commits and deletes files while a reader lists them:
/// the reader says to run again, never reports the records missing.
#[test]
fn a_reader_racing_a_removal_says_to_run_again() -> TestResult {
    let store = tempfile::tempdir()?;
    let dir = dir_of(store.path())?;
    let (files, guard, mut tree) = twelve(store.path())?;
    scan::tests_hook::set_at(scan::tests_hook::Point::AfterKeptFrom, move || {
        let _keep = &guard;
        if let Err(e) = removal(&files, &mut tree, 9, true) {
            panic!("the removal between the reads failed: {e}");
        }
    });
    match scan::find(&dir) {
        Err(StoreError::Unavailable(m)) => {
            assert!(m.contains(records::REMOVED_WHILE_READING), "{m}");
        }
        Err(e) => return Err(e.into()),
        Ok(found) => panic!(
            "read records from {} with files from {:?}",
            found.kept_from,
            found.files.first().map(|(n, _)| n)
        ),
    }
    Ok(())
}

/// A first commit whose records begin past 0 (an earlier version's
/// files moved in after a removal) and that a crash cut before its
/// checkpoint is undone at the claim, as one from record 0 is.
#[test]
fn a_first_commit_from_past_record_0_cut_short_is_undone() -> TestResult {
    let store = tempfile::tempdir()?;
    let files = AccessFiles::with_file_bound(store.path(), 100);
    let guard = files.access_claim(ORIGIN)?;
    let mut tree = Frontier::default();
    let (all, hashes) = rows(&mut tree, 6)?;
    let signed = note(&tree).map_err(|e| StoreError::Database(e.to_string()))?;
    files.fail_after_commit_point(ORIGIN, "a crash")?;
    let said = files
        .access_append(ORIGIN, &all[3..], 0, &hashes, Some(&signed), None)
        .err()
        .ok_or("the tail did not fail")?;
    assert!(matches!(said, StoreError::Committed(_)), "{said}");
    guard.release();
    drop(files);
    let files = AccessFiles::with_file_bound(store.path(), 100);
    let _guard = files.access_claim(ORIGIN)?;
    let extent = files.access_extent(ORIGIN)?;
    assert_eq!(
        (extent.first_kept, extent.next, extent.hashes),
        (None, 0, 0)
    );
    Ok(())
}

#[test]
fn with_fsync_off_no_frame_says_it_was_synced() -> TestResult {
    let store = tempfile::tempdir()?;
    {
        let files = AccessFiles::new(store.path(), false);
        let _guard = files.access_claim(ORIGIN)?;
        let mut tree = Frontier::default();
        append(&files, &mut tree, 2, true)?;
        append(&files, &mut tree, 3, false)?;
        append(&files, &mut tree, 3, false)?;
    }
    let (_, path) = layout::record_files(&dir_of(store.path())?)?
        .pop()
        .ok_or("no record file")?;
    let mut bytes = std::fs::read(&path)?;
    let frame = bytes.len() / 8;
    // Record 2's length bad, 3..8 whole after it: with fsync on it would
    // be proven synced and refused; off, nothing was, and it is cut.
    bytes[2 * frame + 3] = 0xff;
    std::fs::write(&path, &bytes)?;
    let files = AccessFiles::new(store.path(), false);
    drop(files.access_claim(ORIGIN)?);
    assert_eq!(files.access_extent(ORIGIN)?.next, 2);
    Ok(())
}

#[test]
fn a_changed_record_proven_synced_is_kept_and_a_tear_after_it_cut() -> TestResult {
    let store = tempfile::tempdir()?;
    let (path, bytes, frame) = synced_then_lazy(store.path())?;
    // Record 3's line changed (record 5 says 5 were synced), 6's torn.
    let mut changed = bytes.clone();
    changed[4 * frame - 5] ^= 1;
    changed[7 * frame - 5] ^= 1;
    std::fs::write(&path, &changed)?;
    let files = AccessFiles::new(store.path(), true);
    drop(files.access_claim(ORIGIN)?);
    assert_eq!(files.access_extent(ORIGIN)?.next, 6);
    assert_eq!(std::fs::read(&path)?, changed[..6 * frame]);
    assert_eq!(
        std::fs::read(path.with_file_name(layout::cut_off_name(6)))?,
        changed[6 * frame..]
    );
    Ok(())
}

#[test]
fn numbers_past_any_record_s_are_no_record_file_nor_kept_from() -> TestResult {
    let store = tempfile::tempdir()?;
    let (path, _, _) = synced_then_lazy(store.path())?;
    let dir = dir_of(store.path())?;
    std::fs::write(dir.join(layout::records_name(u64::MAX)), b"x")?;
    assert_eq!(layout::record_files(&dir)?, vec![(0, path)]);
    std::fs::write(dir.join(layout::KEPT_FROM_FILE), u64::MAX.to_string())?;
    assert!(layout::read_kept_from(&dir).is_err());
    Ok(())
}
