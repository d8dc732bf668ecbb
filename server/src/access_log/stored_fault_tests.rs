//! The access log kept by the store, against what only someone with the
//! database (or a database that lost a session) can do to it, on the test
//! PostgreSQL (skipped, saying so, without `TONGBAO_TEST_PG_URL`): rows of
//! another writer where a commit goes, an origin lock lost under the
//! writer, a checkpoint removed, an older checkpoint put back; and files
//! of an earlier version moved in before they were ever signed.

use super::stored_tests::{LOG, REPLICA, TestResult, access, call, key, open, size, store, write};
use super::*;
use crate::store::pg_store::testdb::TestDb;
use tongbao_proto::merkle::stored_hash_count;

/// The origin of the tests' log, as SQL quotes it.
fn quoted_origin() -> String {
    format!("'{}'", origin(LOG, Some(REPLICA)).replace('\'', "''"))
}

#[test]
fn rows_of_another_writer_where_a_commit_goes_close_the_log_and_nothing_is_answered_durable()
-> TestResult {
    let Some(pg) = super::stored_tests::pg_only()? else {
        return Ok(());
    };
    let key = key()?;
    let leader = store(&pg, true)?;
    let data = tempfile::tempdir()?;
    write(&*open(&leader, data.path(), &key, REPLICA)?, 3)?;
    let log = open(&leader, data.path(), &key, REPLICA)?;
    // Record 3 and every stored hash it adds, written by someone else.
    let o = quoted_origin();
    pg.execute(&format!(
        "INSERT INTO access_record (origin, n, at_micros, line) VALUES ({o}, 3, 0, 'not ours'); \
         INSERT INTO access_hash (origin, idx, hash) \
         SELECT {o}, i, sha256('not ours') FROM generate_series({}, {}) AS i",
        stored_hash_count(3),
        stored_hash_count(4) - 1
    ))?;
    let said = log
        .record_durably(call(0))
        .wait_blocking()
        .err()
        .ok_or("a record another writer's rows stand in for was answered durable")?;
    assert!(said.contains("another writer was seen"), "{said}");
    assert!(
        log.failed()
            .is_some_and(|why| why.contains("another writer was seen"))
    );
    log.stop();
    // The others' rows are all there is of record 3: without them, the
    // log is the 3 records written before.
    pg.execute(&format!(
        "DELETE FROM access_record WHERE origin = {o} AND n >= 3; \
         DELETE FROM access_hash WHERE origin = {o} AND idx >= {}",
        stored_hash_count(3)
    ))?;
    assert_eq!(size(&leader, &key)?, 3);
    Ok(())
}

#[test]
fn a_writer_whose_origin_lock_was_lost_stops_and_writes_nothing_more() -> TestResult {
    let Some(pg) = super::stored_tests::pg_only()? else {
        return Ok(());
    };
    let key = key()?;
    let leader = store(&pg, true)?;
    let data = tempfile::tempdir()?;
    let log = open(&leader, data.path(), &key, REPLICA)?;
    log.record_durably(call(0))
        .wait_blocking()
        .map_err(|e| e.to_string())?;
    // The guard's session ends (as at a database restart or an idle
    // timeout); waited for until its backend is gone.
    pg.execute(
        "DO $$ DECLARE p int; BEGIN \
         SELECT pid INTO p FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND classid = x'616c6f67'::int::oid \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()); \
         IF p IS NULL THEN RAISE EXCEPTION 'no origin lock is held'; END IF; \
         IF NOT pg_terminate_backend(p, 60000) THEN RAISE EXCEPTION 'the guard did not end'; END IF; \
         END $$;",
    )?;
    let said = log
        .record_durably(call(1))
        .wait_blocking()
        .err()
        .ok_or("a writer without its origin lock went on writing")?;
    assert!(said.contains("origin lock was lost"), "{said}");
    log.record(call(2));
    log.stop();
    assert_eq!(size(&leader, &key)?, 1);
    Ok(())
}

#[test]
fn records_whose_checkpoint_was_removed_are_refused_at_start_and_by_verify() -> TestResult {
    let Some(pg) = super::stored_tests::pg_only()? else {
        return Ok(());
    };
    let key = key()?;
    let leader = store(&pg, true)?;
    let data = tempfile::tempdir()?;
    // The first record is signed in its own commit, before it is answered.
    let log = open(&leader, data.path(), &key, REPLICA)?;
    log.record_durably(call(0))
        .wait_blocking()
        .map_err(|e| e.to_string())?;
    let db = access(&leader)?;
    let o = origin(LOG, Some(REPLICA));
    assert!(db.access_checkpoint(&o)?.is_some());
    write(&log, 4)?;
    pg.execute("DELETE FROM access_checkpoint")?;
    let verify = size(&leader, &key)
        .err()
        .ok_or("records without a checkpoint verified")?
        .to_string();
    // On this host and on a new one (no copy of the checkpoint).
    let elsewhere = tempfile::tempdir()?;
    for said in [
        verify,
        open(&leader, data.path(), &key, REPLICA)
            .err()
            .ok_or("a start accepted records without a checkpoint")?
            .to_string(),
        open(&leader, elsewhere.path(), &key, REPLICA)
            .err()
            .ok_or("a new host accepted records without a checkpoint")?
            .to_string(),
    ] {
        assert!(
            said.contains("5 records but no signed checkpoint: removed?"),
            "{said}"
        );
    }
    Ok(())
}

#[test]
fn a_database_rolled_back_to_an_older_checkpoint_is_refused_where_a_newer_copy_is_kept()
-> TestResult {
    let Some(pg) = super::stored_tests::pg_only()? else {
        return Ok(());
    };
    let key = key()?;
    let leader = store(&pg, true)?;
    let data = tempfile::tempdir()?;
    let db = access(&leader)?;
    let o = origin(LOG, Some(REPLICA));
    write(&*open(&leader, data.path(), &key, REPLICA)?, 3)?;
    let older = db.access_checkpoint(&o)?.ok_or("no checkpoint")?;
    write(&*open(&leader, data.path(), &key, REPLICA)?, 3)?;
    let copy = std::fs::read_to_string(data.path().join(stored_copy::COPY_FILE))?;
    assert_eq!(Some(copy), db.access_checkpoint(&o)?);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join(stored_copy::COPY_FILE))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // Records 3..6 removed and the checkpoint of size 3 put back: the
    // database alone holds a log that checks.
    let q = quoted_origin();
    pg.execute(&format!(
        "DELETE FROM access_record WHERE origin = {q} AND n >= 3; \
         DELETE FROM access_hash WHERE origin = {q} AND idx >= {}; \
         UPDATE access_checkpoint SET note = $note${older}$note$ WHERE origin = {q}",
        stored_hash_count(3)
    ))?;
    assert_eq!(size(&leader, &key)?, 3);
    let said = open(&leader, data.path(), &key, REPLICA)
        .err()
        .ok_or("a rolled back database was accepted beside a newer copy")?
        .to_string();
    assert!(
        said.contains("covers 3 records but this host's copy")
            && said.contains("covers 6")
            && said.contains("rolled back"),
        "{said}"
    );
    // A new host has no copy: it takes the database's, with a warning.
    let elsewhere = tempfile::tempdir()?;
    write(&*open(&leader, elsewhere.path(), &key, REPLICA)?, 1)?;
    assert_eq!(size(&leader, &key)?, 4);
    Ok(())
}

#[test]
fn a_database_holding_another_log_than_this_hosts_copy_signed_is_refused() -> TestResult {
    let (Some(first), Some(second)) = (TestDb::create()?, TestDb::create()?) else {
        return Ok(());
    };
    let key = key()?;
    let data = tempfile::tempdir()?;
    write(
        &*open(&store(&first, true)?, data.path(), &key, REPLICA)?,
        2,
    )?;
    // Another database, with a longer log under the same origin and key.
    let other = store(&second, true)?;
    write(
        &*open(&other, tempfile::tempdir()?.path(), &key, REPLICA)?,
        5,
    )?;
    let said = open(&other, data.path(), &key, REPLICA)
        .err()
        .ok_or("a log this host's copy does not extend was accepted")?
        .to_string();
    assert!(
        said.contains("not consistent with this host's checkpoint copy"),
        "{said}"
    );
    Ok(())
}

#[test]
fn files_a_crash_left_unsigned_are_moved_in_with_a_checkpoint() -> TestResult {
    super::stored_tests::on_each_store(|db| {
        let key = key()?;
        let data = tempfile::tempdir()?;
        super::stored_tests::files_log(data.path(), &key, 4)?;
        // As a files writer killed before its first checkpoint leaves them.
        std::fs::remove_file(data.path().join(files::DIR).join(files::CHECKPOINT_FILE))?;
        let leader = db.leader()?;
        write(&*open(&leader, data.path(), &key, REPLICA)?, 1)?;
        assert_eq!(size(&leader, &key)?, 5);
        Ok(())
    })
}

#[test]
fn a_retention_read_that_fails_leaves_the_log_writing_and_is_tried_again_later() -> TestResult {
    use super::stored_retention_tests::{old_calls, round, verified, writer};
    use super::writer::Rounds;
    use tongbao_proto::merkle::stored_hash_index;
    let Some(pg) = super::stored_tests::pg_only()? else {
        return Ok(());
    };
    let key = key()?;
    let leader = store(&pg, true)?;
    let data = tempfile::tempdir()?;
    // Records 0..10 of a day past retention, then 10..15 of today, signed
    // by a stopping round (which applies no retention).
    let mut w = writer(&leader, data.path(), &key, 64)?;
    round(&mut w, old_calls(10, 200))?;
    let today: Vec<_> = (0..5)
        .map(|i| (call(i), None, std::time::Instant::now()))
        .collect();
    w.round(today, true).map_err(|(e, _)| e)?;
    drop(w);
    // The stored hash of records 8..10, which the removal's root needs
    // and the start check does not (the checkpoint's right edge is
    // 0..8, 8..12, 12..14, 14), made unreadable.
    let idx = stored_hash_index(1, 4);
    let o = quoted_origin();
    pg.execute(&format!(
        "CREATE TABLE kept_hash AS SELECT * FROM access_hash WHERE origin = {o} AND idx = {idx}; \
         DELETE FROM access_hash WHERE origin = {o} AND idx = {idx}"
    ))?;
    // The start's retention fails to read: the round's record is written
    // and the next round's too.
    let mut w = writer(&leader, data.path(), &key, 64)?;
    round(&mut w, vec![call(0)])?;
    round(&mut w, vec![call(1)])?;
    drop(w);
    pg.execute("INSERT INTO access_hash SELECT * FROM kept_hash")?;
    assert_eq!(verified(&leader, &key)?, (0, 17));
    // The next retention time removes them.
    let mut w = writer(&leader, data.path(), &key, 64)?;
    round(&mut w, Vec::new())?;
    drop(w);
    assert_eq!(verified(&leader, &key)?, (10, 18));
    Ok(())
}
