//! Retention of a log the store keeps, a chunk a round, on both stores
//! (PostgreSQL's skipped without `TONGBAO_TEST_PG_URL`): a
//! removal cut off after its first chunk verifies and goes on at the next
//! start; the last day written stays; records removed without a removal
//! record are still refused. The writer's rounds are driven here one by
//! one, as its thread runs them, so each round's removal is seen.

use super::stored::{Setup, StoredWriter};
use super::stored_check::check;
use super::stored_tests::{
    Db, Key, LOG, REPLICA, TestResult, access, call, key, on_each_store, open, write,
};
use super::writer::{Queued, Rounds, Signer};
use super::*;
use crate::store::Store;
use std::time::Instant;

pub(super) const DAY: i64 = 86_400_000_000;

/// A writer of the tests' origin as a start makes it (the origin claimed,
/// the start's check passed), removing `chunk` records a commit at most.
pub(super) fn writer(
    store: &Arc<dyn Store>,
    data: &Path,
    key: &Key,
    chunk: u64,
) -> Result<StoredWriter, Box<dyn std::error::Error>> {
    writer_days_ahead(store, data, key, chunk, 0)
}

/// [`writer`] with the hub's time `days` ahead.
pub(super) fn writer_days_ahead(
    store: &Arc<dyn Store>,
    data: &Path,
    key: &Key,
    chunk: u64,
    days: i64,
) -> Result<StoredWriter, Box<dyn std::error::Error>> {
    let db = access(store)?;
    let origin = origin(LOG, Some(REPLICA));
    let signer = Signer::new(key.signing()?, LOG, origin.clone())?;
    let guard = db.access_claim(&origin)?;
    let checked = check(db.access_reads(), &origin, &key.verifier, false)?;
    Ok(StoredWriter::new(Setup {
        store: store.clone(),
        guard,
        checked,
        signer,
        config: AccessLogConfig::default(),
        clock_offset_micros: days * DAY,
        copy_dir: Some(data.to_path_buf()),
        remove_chunk: chunk,
    }))
}

/// One round of `w` taking `records`.
pub(super) fn round(w: &mut StoredWriter, records: Vec<AccessRecord>) -> TestResult {
    let batch: Vec<Queued> = records
        .into_iter()
        .map(|r| (r, None, Instant::now()))
        .collect();
    w.round(batch, false).map_err(|(e, _)| e)?;
    Ok(())
}

/// `n` calls `days` days ahead of now.
fn calls_ahead(n: usize, days: i64) -> Vec<AccessRecord> {
    (0..n)
        .map(|i| {
            let mut r = call(i);
            r.at_micros += days * DAY;
            r
        })
        .collect()
}

/// `n` calls of one UTC day `days_ago` days back.
pub(super) fn old_calls(n: usize, days_ago: i64) -> Vec<AccessRecord> {
    let day_starts = (tongbao_proto::now_micros() - days_ago * DAY).div_euclid(DAY) * DAY;
    (0..n)
        .map(|i| {
            let mut r = call(i);
            r.at_micros = day_starts + 1_000 + i as i64;
            r
        })
        .collect()
}

/// (records removed, records in the log) as `audit-log verify` finds them.
pub(super) fn verified(
    store: &Arc<dyn Store>,
    key: &Key,
) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let db = access(store)?;
    let scanned = check(
        &*db.access_snapshot()?,
        &origin(LOG, Some(REPLICA)),
        &key.verifier,
        true,
    )?;
    Ok((scanned.removed, scanned.size))
}

/// What the removal records name, in order: (first, count).
fn removals(store: &Arc<dyn Store>) -> Result<Vec<(u64, u64)>, Box<dyn std::error::Error>> {
    let filter = export::Filter {
        method: Some("retention".into()),
        ..export::Filter::default()
    };
    Ok(stored_read::query(
        access(store)?.access_reads(),
        &origin(LOG, Some(REPLICA)),
        &filter,
    )?
    .into_iter()
    .filter_map(|r| r.removed.map(|s| (s.first, s.count)))
    .collect())
}

#[test]
fn a_removal_cut_off_after_its_first_chunk_verifies_and_goes_on_at_the_next_start() -> TestResult {
    on_each_store(a_removal_cut_off_after_its_first_chunk_verifies_and_goes_on_at_the_next_start_on)
}

fn a_removal_cut_off_after_its_first_chunk_verifies_and_goes_on_at_the_next_start_on(
    db: &Db,
) -> TestResult {
    let key = key()?;
    let leader = db.leader()?;
    let data = tempfile::tempdir()?;

    // A day past retention that is the last written stays.
    let mut w = writer(&leader, data.path(), &key, 4)?;
    round(&mut w, old_calls(10, 200))?;
    assert_eq!(verified(&leader, &key)?, (0, 10));
    drop(w);

    // The next start's first round removes one chunk of the day, with the
    // removal record naming it, and the process dies there.
    let mut w = writer(&leader, data.path(), &key, 4)?;
    round(&mut w, (0..3).map(call).collect())?;
    drop(w);
    assert_eq!(verified(&leader, &key)?, (4, 14));
    assert_eq!(removals(&leader)?, vec![(0, 4)]);

    // The next start goes on, a chunk a round, up to the day's end.
    let mut w = writer(&leader, data.path(), &key, 4)?;
    round(&mut w, Vec::new())?;
    assert_eq!(verified(&leader, &key)?, (8, 15));
    round(&mut w, Vec::new())?;
    assert_eq!(verified(&leader, &key)?, (10, 16));
    // Then nothing is past retention: the round removes nothing more.
    round(&mut w, Vec::new())?;
    assert_eq!(verified(&leader, &key)?, (10, 16));
    drop(w);
    assert_eq!(removals(&leader)?, vec![(0, 4), (4, 4), (8, 2)]);

    // A hub's start accepts it, and its stop signs all of it.
    write(
        &*open(&leader, tempfile::tempdir()?.path(), &key, REPLICA)?,
        1,
    )?;
    assert_eq!(verified(&leader, &key)?, (10, 17));

    // Records removed by hand, with no removal record naming them, are
    // refused by verify (a start reads no record its checkpoint covers).
    match db {
        Db::Pg(pg) => pg.execute("DELETE FROM access_record WHERE n < 12")?,
        Db::Sled(dir) => {
            use crate::store::access_files::layout;
            let root = dir.path().join(layout::ROOT);
            let origin_dir = layout::origin_dir(&root, &origin(LOG, Some(REPLICA)))?;
            std::fs::write(origin_dir.join(layout::KEPT_FROM_FILE), "12")?;
        }
    }
    let said = verified(&leader, &key)
        .err()
        .ok_or("records removed without a removal record passed")?
        .to_string();
    assert!(
        said.contains("the first record kept is 12 but removal records account for records 0..10"),
        "{said}"
    );
    Ok(())
}

#[test]
fn a_large_day_is_removed_at_most_a_chunk_a_commit_and_ends_where_the_next_day_begins() -> TestResult
{
    on_each_store(
        a_large_day_is_removed_at_most_a_chunk_a_commit_and_ends_where_the_next_day_begins_on,
    )
}

fn a_large_day_is_removed_at_most_a_chunk_a_commit_and_ends_where_the_next_day_begins_on(
    db: &Db,
) -> TestResult {
    let key = key()?;
    let leader = db.leader()?;
    let data = tempfile::tempdir()?;
    // Two old days, 7 and 3 records, then today's.
    let mut records = old_calls(7, 300);
    records.extend(old_calls(3, 250));
    records.extend((0..2).map(call));
    let mut w = writer(&leader, data.path(), &key, 5)?;
    round(&mut w, records)?;
    for _ in 0..4 {
        round(&mut w, Vec::new())?;
    }
    drop(w);
    // The first day in a chunk of 5 and the rest of it; the second day,
    // smaller than a chunk, whole: no chunk crosses a day's end.
    assert_eq!(removals(&leader)?, vec![(0, 5), (5, 2), (7, 3)]);
    assert_eq!(verified(&leader, &key)?, (10, 15));
    Ok(())
}

#[test]
fn a_log_whose_first_removal_record_was_removed_in_turn_verifies() -> TestResult {
    on_each_store(a_log_whose_first_removal_record_was_removed_in_turn_verifies_on)
}

fn a_log_whose_first_removal_record_was_removed_in_turn_verifies_on(db: &Db) -> TestResult {
    let key = key()?;
    let leader = db.leader()?;
    let data = tempfile::tempdir()?;
    // Records 0..3 of a day long gone and record 3 of today: 0..3 go,
    // named by removal record 4 (of today).
    let mut records = old_calls(3, 400);
    records.push(call(0));
    let mut w = writer(&leader, data.path(), &key, 16)?;
    round(&mut w, records)?;
    drop(w);
    assert_eq!(removals(&leader)?, vec![(0, 3)]);
    assert_eq!(verified(&leader, &key)?, (3, 5));

    // 200 days on, today's records go, that removal record with them,
    // named by removal record 6.
    let mut w = writer_days_ahead(&leader, data.path(), &key, 16, 200)?;
    round(&mut w, calls_ahead(1, 200))?;
    drop(w);
    assert_eq!(removals(&leader)?, vec![(3, 2)]);
    assert_eq!(verified(&leader, &key)?, (5, 7));
    // A start accepts it (the writer's start check) and so does verify.
    let mut w = writer_days_ahead(&leader, data.path(), &key, 16, 200)?;
    round(&mut w, calls_ahead(1, 200))?;
    drop(w);
    assert_eq!(verified(&leader, &key)?, (5, 8));

    // Records deleted by hand, with no removal record naming them, are
    // still refused: one past the kept removal's end, then that removal
    // record too.
    let Db::Pg(pg) = db else {
        return Ok(());
    };
    pg.execute("DELETE FROM access_record WHERE n = 5")?;
    let said = verified(&leader, &key)
        .err()
        .ok_or("a record removed past the removal records passed")?
        .to_string();
    assert!(
        said.contains("the first record kept is 6 but removal records account for records 3..5"),
        "{said}"
    );
    pg.execute("DELETE FROM access_record WHERE n = 6")?;
    let said = verified(&leader, &key)
        .err()
        .ok_or("records removed with no removal record kept passed")?
        .to_string();
    assert!(
        said.contains("the first record kept is 7 but removal records account for records 0..0"),
        "{said}"
    );
    Ok(())
}

#[test]
fn a_record_of_a_future_time_holds_retention_back_and_is_warned_of_once() -> TestResult {
    on_each_store(a_record_of_a_future_time_holds_retention_back_and_is_warned_of_once_on)
}

fn a_record_of_a_future_time_holds_retention_back_and_is_warned_of_once_on(db: &Db) -> TestResult {
    let key = key()?;
    let leader = db.leader()?;
    let data = tempfile::tempdir()?;
    // Record 0 of a year ahead (a clock set wrong once), then records of
    // a day long past retention.
    let mut records = calls_ahead(1, 365);
    records.extend(old_calls(3, 400));
    records.push(call(0));
    let mut w = writer(&leader, data.path(), &key, 16)?;
    round(&mut w, records)?;
    assert!(w.warned_of_future());
    drop(w);
    // Nothing is removed, the old day included; a log of no such record
    // gives no warning.
    assert_eq!(removals(&leader)?, Vec::<(u64, u64)>::new());
    assert_eq!(verified(&leader, &key)?, (0, 5));
    let other_db = db.fresh()?;
    let other = other_db.leader()?;
    let mut w = writer(&other, data.path(), &key, 16)?;
    let mut records = old_calls(3, 400);
    records.push(call(0));
    round(&mut w, records)?;
    assert!(!w.warned_of_future());
    drop(w);
    assert_eq!(removals(&other)?, vec![(0, 3)]);
    Ok(())
}
