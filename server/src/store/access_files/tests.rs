//! The sled store's access-log files at the store's boundary: appends
//! and reads round trip; what does not follow the log is refused; a
//! crash's torn write is cut and its lost hashes recomputed; a changed
//! record is named, never cut; a snapshot holds across a removal, and a
//! reader in another process says when retention removed what it reads.

use super::*;
use crate::store::access::AccessLogStore;
use tongbao_proto::canonical::leaf_hash_of_bytes;
use tongbao_proto::merkle::{Frontier, stored_hash_count};

pub(super) type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(super) const ORIGIN: &str = "tongbao/.access-log";

/// Records `from..from + n` of a log whose tree is `tree`, and the
/// stored hashes they add.
pub(super) fn rows(tree: &mut Frontier, n: u64) -> Result<(Vec<AccessRow>, Vec<Hash>), StoreError> {
    let mut rows = Vec::new();
    let mut hashes = Vec::new();
    for _ in 0..n {
        let row = AccessRow {
            n: tree.size(),
            at_micros: 1_000 + tree.size() as i64,
            line: format!("{{\"n\":{},\"pad\":\"{}\"}}", tree.size(), "x".repeat(40)).into_bytes(),
        };
        hashes.extend(
            tree.append(leaf_hash_of_bytes(&row.line))
                .map_err(|e| StoreError::Database(e.to_string()))?,
        );
        rows.push(row);
    }
    Ok((rows, hashes))
}

/// Appends `n` records, signed by a checkpoint note naming their size when `sign`.
pub(super) fn append(files: &AccessFiles, tree: &mut Frontier, n: u64, sign: bool) -> TestResult {
    let first_hash = stored_hash_count(tree.size());
    let (rows, hashes) = rows(tree, n)?;
    let note = match sign {
        true => Some(note(tree)?),
        false => None,
    };
    files.access_append(ORIGIN, &rows, first_hash, &hashes, note.as_deref(), None)?;
    Ok(())
}

/// A signed checkpoint of `tree` (the store reads its size only).
pub(super) fn note(tree: &Frontier) -> Result<String, Box<dyn std::error::Error>> {
    use tongbao_proto::checkpoint::{Checkpoint, NoteSigner, sign_checkpoint};
    let key = tongbao_proto::keys::SigningKey::generate()?;
    let checkpoint = Checkpoint::new(ORIGIN.to_string(), tree.size(), tree.root()?);
    Ok(sign_checkpoint(
        &checkpoint,
        &[NoteSigner::new("tongbao", &key)?],
    )?)
}

pub(super) fn dir_of(store: &Path) -> Result<PathBuf, StoreError> {
    layout::origin_dir(&store.join(layout::ROOT), ORIGIN)
}

#[test]
fn appends_read_back_and_every_file_is_private() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let store = tempfile::tempdir()?;
    let files = AccessFiles::with_file_bound(store.path(), 400);
    let guard = files.access_claim(ORIGIN)?;
    let mut tree = Frontier::default();
    append(&files, &mut tree, 5, true)?;
    append(&files, &mut tree, 7, false)?;
    let extent = files.access_extent(ORIGIN)?;
    assert_eq!(
        (extent.first_kept, extent.next, extent.hashes),
        (Some(0), 12, stored_hash_count(12))
    );
    let read = files.access_records(ORIGIN, 3, 100)?;
    assert_eq!(
        read.iter().map(|r| r.n).collect::<Vec<_>>(),
        (3..12).collect::<Vec<_>>()
    );
    let mut again = Frontier::default();
    let (want, hashes) = rows(&mut again, 12)?;
    assert_eq!(read, want[3..]);
    assert_eq!(
        files.access_hashes(ORIGIN, &[0, 5, 20])?,
        vec![hashes[0], hashes[5], hashes[20]]
    );
    let range = files.access_hash_range(ORIGIN, 10, 1000)?;
    assert_eq!(range.len() as u64, stored_hash_count(12) - 10);
    let signed = files.access_checkpoint(ORIGIN)?.ok_or("no checkpoint")?;
    assert_eq!(layout::signed_size(&signed), Some(5));
    assert_eq!(files.access_first_at(ORIGIN, 0, 12, 1_007)?, Some(7));
    assert_eq!(files.access_first_at(ORIGIN, 0, 7, 1_007)?, None);
    assert_eq!(files.access_origins()?, vec![ORIGIN.to_string()]);
    // A stray file beside the origins' directories is none of them.
    std::fs::write(store.path().join(layout::ROOT).join("notes.txt"), "x")?;
    assert_eq!(files.access_origins()?, vec![ORIGIN.to_string()]);
    // Several record files (a bound of 400 bytes), read across.
    let dir = dir_of(store.path())?;
    assert!(layout::record_files(&dir)?.len() > 1);
    for path in [store.path().join(layout::ROOT), dir.clone()] {
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o700
        );
    }
    for entry in std::fs::read_dir(&dir)? {
        let mode = entry?.metadata()?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    guard.release();
    // Reopened, the log goes on; read in another process, it is the same.
    let files = AccessFiles::with_file_bound(store.path(), 400);
    let _guard = files.access_claim(ORIGIN)?;
    append(&files, &mut tree, 1, true)?;
    let reader = open_read(store.path()).ok_or("no access log to read")?;
    assert_eq!(reader.access_records(ORIGIN, 0, 100)?.len(), 13);
    assert_eq!(reader.access_extent(ORIGIN)?.hashes, stored_hash_count(13));
    Ok(())
}

#[test]
fn what_does_not_follow_the_log_is_refused() -> TestResult {
    let store = tempfile::tempdir()?;
    let files = AccessFiles::new(store.path(), true);
    let mut tree = Frontier::default();
    let (first, hashes) = rows(&mut tree, 3)?;
    let said = files
        .access_append(ORIGIN, &first, 0, &hashes, None, None)
        .err()
        .ok_or("an unclaimed origin was written")?
        .to_string();
    assert!(said.contains("not claimed"), "{said}");
    let guard = files.access_claim(ORIGIN)?;
    let said = files
        .access_claim(ORIGIN)
        .err()
        .ok_or("one origin was claimed twice")?
        .to_string();
    assert!(said.contains("another writer"), "{said}");
    let signed = note(&tree)?;
    files.access_append(ORIGIN, &first, 0, &hashes, Some(&signed), None)?;
    let (next, hashes) = rows(&mut tree, 3)?;
    let first_hash = stored_hash_count(3);
    // A gap in the records, records again, hashes from the wrong place.
    let gap = [next[0].clone(), next[2].clone()];
    let again = &first[1..];
    for (rows, from, what) in [
        (&gap[..], first_hash, "not consecutive"),
        (again, first_hash, "do not follow"),
        (&next[..], first_hash + 1, "would leave a gap"),
        (&next[..], first_hash - 1, "would leave a gap"),
    ] {
        let said = files
            .access_append(ORIGIN, rows, from, &hashes, None, None)
            .err()
            .ok_or(what)?
            .to_string();
        assert!(said.contains(what), "{what}: {said}");
    }
    // Nothing of them was written; the right append still goes.
    files.access_append(ORIGIN, &next, first_hash, &hashes, None, None)?;
    assert_eq!(files.access_extent(ORIGIN)?.next, 6);
    guard.release();
    let _again = files.access_claim(ORIGIN)?;
    Ok(())
}

#[test]
fn a_torn_write_is_cut_and_lost_hashes_are_recomputed_at_the_claim() -> TestResult {
    let store = tempfile::tempdir()?;
    let dir = dir_of(store.path())?;
    let mut tree = Frontier::default();
    {
        let files = AccessFiles::new(store.path(), true);
        let _guard = files.access_claim(ORIGIN)?;
        append(&files, &mut tree, 4, true)?;
        append(&files, &mut tree, 5, false)?;
    }
    let tree_path = dir.join(layout::TREE_FILE);
    let whole = std::fs::read(&tree_path)?;
    // A crash: half a frame after the records, the tree's tail not on disk.
    let (_, last) = layout::record_files(&dir)?.pop().ok_or("no record file")?;
    let records = std::fs::read(&last)?;
    let mut torn = records.clone();
    torn.extend_from_slice(&records[..30]);
    std::fs::write(&last, &torn)?;
    std::fs::write(&tree_path, &whole[..whole.len() - 5 * 32])?;
    // Another process reads it as it is, the lost hashes recomputed.
    let reader = open_read(store.path()).ok_or("no access log")?;
    assert_eq!(reader.access_extent(ORIGIN)?.next, 9);
    assert_eq!(
        reader
            .access_hash_range(ORIGIN, 0, 1000)?
            .into_iter()
            .map(|(_, h)| h)
            .collect::<Vec<_>>(),
        whole
            .chunks(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect::<Vec<_>>()
    );
    let files = AccessFiles::new(store.path(), true);
    let _guard = files.access_claim(ORIGIN)?;
    assert_eq!(std::fs::read(&last)?, records, "the torn frame is cut off");
    assert_eq!(
        std::fs::read(&tree_path)?,
        whole,
        "the lost hashes are back as written"
    );
    append(&files, &mut tree, 1, true)?;
    assert_eq!(files.access_extent(ORIGIN)?.next, 10);
    Ok(())
}

#[test]
fn a_changed_record_the_checkpoint_covers_is_named_and_never_cut() -> TestResult {
    let store = tempfile::tempdir()?;
    let dir = dir_of(store.path())?;
    {
        let files = AccessFiles::new(store.path(), true);
        let _guard = files.access_claim(ORIGIN)?;
        append(&files, &mut Frontier::default(), 6, true)?;
    }
    let (_, path) = layout::record_files(&dir)?.pop().ok_or("no record file")?;
    let mut bytes = std::fs::read(&path)?;
    let frame = bytes.len() / 6;
    // The last record's line changed: within the checkpoint, not a torn write.
    let at = bytes.len() - 3;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes)?;
    let files = AccessFiles::new(store.path(), true);
    let _guard = files.access_claim(ORIGIN)?;
    assert_eq!(std::fs::read(&path)?.len(), bytes.len(), "nothing was cut");
    assert_eq!(files.access_extent(ORIGIN)?.next, 6);
    let said = files
        .access_records(ORIGIN, 0, 10)
        .err()
        .ok_or("a changed record was read")?
        .to_string();
    assert!(
        said.contains("record 5") && said.contains("was changed"),
        "{said}"
    );
    // One in the middle, too.
    bytes[at] ^= 1;
    bytes[2 * frame + 20] ^= 1;
    std::fs::write(&path, &bytes)?;
    let reader = open_read(store.path()).ok_or("no access log")?;
    let said = reader
        .access_records(ORIGIN, 0, 10)
        .err()
        .ok_or("a changed record was read")?
        .to_string();
    assert!(
        said.contains("record 2") && said.contains("was changed"),
        "{said}"
    );
    Ok(())
}

#[test]
fn a_snapshot_holds_across_a_removal_and_another_process_is_told_to_read_again() -> TestResult {
    let store = tempfile::tempdir()?;
    let files = AccessFiles::with_file_bound(store.path(), 100);
    let _guard = files.access_claim(ORIGIN)?;
    let mut tree = Frontier::default();
    for _ in 0..4 {
        append(&files, &mut tree, 3, true)?;
    }
    let dir = dir_of(store.path())?;
    let before = layout::record_files(&dir)?;
    assert!(before.len() >= 3, "{before:?}");
    // A snapshot of this process, begun before the removal of 0..6.
    let snapshot = files.access_snapshot()?;
    assert_eq!(snapshot.access_extent(ORIGIN)?.first_kept, Some(0));
    let first_hash = stored_hash_count(tree.size());
    let (removal, hashes) = rows(&mut tree, 1)?;
    files.access_append(ORIGIN, &removal, first_hash, &hashes, None, Some(6))?;
    let kept = layout::record_files(&dir)?;
    assert!(
        before.iter().all(|f| kept.contains(f)),
        "deleted under a snapshot"
    );
    assert_eq!(snapshot.access_records(ORIGIN, 0, 100)?.len(), 12);
    assert_eq!(files.access_extent(ORIGIN)?.first_kept, Some(6));
    assert_eq!(
        files.access_records(ORIGIN, 0, 1)?.first().map(|r| r.n),
        Some(6)
    );
    // Another process's snapshot, begun before the files go.
    let reader = open_read(store.path()).ok_or("no access log")?;
    let other = reader.snapshot();
    assert_eq!(other.access_extent(ORIGIN)?.first_kept, Some(6));
    drop(snapshot);
    // Let go, the files go at the next commit; the other process's read
    // of them fails, saying why.
    let first_hash = stored_hash_count(tree.size());
    let (removal, hashes) = rows(&mut tree, 1)?;
    files.access_append(ORIGIN, &removal, first_hash, &hashes, None, Some(9))?;
    assert!(layout::record_files(&dir)?.len() < before.len());
    let said = other
        .access_records(ORIGIN, 6, 100)
        .err()
        .ok_or("a removed file was read")?
        .to_string();
    assert!(said.contains(records::REMOVED_WHILE_READING), "{said}");
    assert_eq!(reader.snapshot().access_extent(ORIGIN)?.first_kept, Some(9));
    Ok(())
}
