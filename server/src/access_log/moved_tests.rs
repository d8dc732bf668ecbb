//! A move of an earlier version's files into sled's store cut inside a
//! chunk (its tree written, its frames not synced, or one torn) goes on
//! at the next start and verifies: no chunk commits a checkpoint over
//! more than the store holds, so the store's repair cuts the tail.

use super::stored_tests::{Db, LOG, REPLICA, TestResult, files_log, key, open, size, write};
use super::*;
use crate::store::access_files::layout;

/// Moves 8 records of old files in chunks of 3, cut short after the
/// first, then leaves what a crash inside the second would: `leave`
/// changes the origin's directory in the store.
fn cut_inside_a_chunk(leave: impl Fn(&Path) -> TestResult) -> TestResult {
    let key = key()?;
    let data = tempfile::tempdir()?;
    files_log(data.path(), &key, 8)?;
    let db = Db::Sled(tempfile::tempdir()?);
    let Db::Sled(store_dir) = &db else {
        return Err("not sled".into());
    };
    let origin = origin(LOG, Some(REPLICA));
    let dir = layout::origin_dir(&store_dir.path().join(layout::ROOT), &origin)?;
    {
        let leader = db.leader()?;
        moved::tests_hook::set(Some(3), Some(1));
        let cut = open(&leader, data.path(), &key, REPLICA);
        moved::tests_hook::set(None, None);
        assert!(cut.is_err(), "the move was not cut short");
    }
    let signed = layout::read_text(&dir.join(layout::CHECKPOINT_FILE))?
        .as_deref()
        .and_then(layout::signed_size);
    assert_eq!(signed, Some(3), "a chunk's checkpoint covers it only");
    leave(&dir)?;
    let leader = db.leader()?;
    write(&*open(&leader, data.path(), &key, REPLICA)?, 1)?;
    assert_eq!(size(&leader, &key)?, 9);
    assert!(data.path().join(moved::MOVED_DIR).is_dir());
    Ok(())
}

/// The old files' stored hashes of records 3..6 (a chunk's, written to
/// the store's tree before its frames).
fn next_chunks_hashes(dir: &Path) -> TestResult {
    use tongbao_proto::merkle::stored_hash_count;
    let tree = dir.join(layout::TREE_FILE);
    let mut bytes = std::fs::read(&tree)?;
    let more = (stored_hash_count(6) - stored_hash_count(3)) as usize;
    bytes.extend(std::iter::repeat_n(7u8, more * tongbao_proto::HASH_LEN));
    std::fs::write(&tree, bytes)?;
    Ok(())
}

#[test]
fn a_move_cut_after_a_chunks_tree_before_its_frames_goes_on() -> TestResult {
    cut_inside_a_chunk(next_chunks_hashes)
}

#[test]
fn a_move_cut_inside_a_chunks_frame_goes_on() -> TestResult {
    cut_inside_a_chunk(|dir| {
        next_chunks_hashes(dir)?;
        let (_, last) = layout::record_files(dir)?.pop().ok_or("no record file")?;
        let mut bytes = std::fs::read(&last)?;
        let frame = bytes.len() / 3;
        let torn = bytes[..frame / 2].to_vec();
        bytes.extend_from_slice(&torn);
        std::fs::write(&last, bytes)?;
        Ok(())
    })
}
