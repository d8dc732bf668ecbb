//! The access log kept by the store: on both stores (sled always, the
//! test PostgreSQL with `TONGBAO_TEST_PG_URL`), files of an earlier
//! version moved in, a cut move resumed, retention; on PostgreSQL, what
//! needs the database (another process's store, tampering by SQL, a
//! refused commit): written, checked at start, exported and verified
//! from the database; tampering named; one writer per origin.

use super::export::verify_export;
use super::stored_check::check;
use super::*;
use crate::store::access::{AccessLogStore, AccessRow};
use crate::store::pg_store::testdb::TestDb;
use crate::store::pg_store::{Database, TlsOptions};
use crate::store::{PgOptions, PgStore, Store};
use tongbao_proto::checkpoint::{NoteSigner, NoteVerifier};
use tongbao_proto::merkle::{HashReader, stored_hash_count, stored_hash_index};

pub(super) type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(super) const LOG: &str = "tongbao";
pub(super) const REPLICA: &str = "hub-a";

pub(super) fn options(db: &TestDb) -> Result<PgOptions, Box<dyn std::error::Error>> {
    Ok(PgOptions {
        database: Database::new(&db.url(), &TlsOptions::default())?,
        pool_size: 4,
        replica: true,
    })
}

/// The leader's store (it brings the schema up), or a standby's.
pub(super) fn store(
    db: &TestDb,
    leader: bool,
) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
    Ok(match leader {
        true => Arc::new(PgStore::open(&options(db)?)?),
        false => Arc::new(PgStore::open_standby(&options(db)?)?),
    })
}

/// A store a test runs on: sled in a directory of its own, or a
/// database of the test PostgreSQL.
pub(super) enum Db {
    Sled(tempfile::TempDir),
    Pg(TestDb),
}

impl Db {
    /// sled always; PostgreSQL when `TONGBAO_TEST_PG_URL` names one.
    pub(super) fn each() -> Result<Vec<Db>, Box<dyn std::error::Error>> {
        let mut out = vec![Db::Sled(tempfile::tempdir()?)];
        out.extend(TestDb::create()?.map(Db::Pg));
        Ok(out)
    }

    /// Another, empty store of the same kind.
    pub(super) fn fresh(&self) -> Result<Db, Box<dyn std::error::Error>> {
        Ok(match self {
            Db::Sled(_) => Db::Sled(tempfile::tempdir()?),
            Db::Pg(_) => Db::Pg(TestDb::create()?.ok_or("no test database")?),
        })
    }

    /// The store a hub writes through (PostgreSQL's leader).
    pub(super) fn leader(&self) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
        Ok(match self {
            Db::Sled(dir) => Arc::new(crate::store::SledStore::open(dir.path(), true)?),
            Db::Pg(db) => store(db, true)?,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Db::Sled(_) => "sled",
            Db::Pg(_) => "PostgreSQL",
        }
    }
}

/// The test PostgreSQL's new database, for a test that needs it whole;
/// None, saying the test is skipped, without `TONGBAO_TEST_PG_URL`.
pub(super) fn pg_only() -> Result<Option<TestDb>, crate::store::StoreError> {
    let db = TestDb::create()?;
    if db.is_none() {
        eprintln!("skipped: this test needs PostgreSQL (TONGBAO_TEST_PG_URL)");
    }
    Ok(db)
}

/// Runs `test` on every store of [`Db::each`], naming the one that fails.
pub(super) fn on_each_store(test: impl Fn(&Db) -> TestResult) -> TestResult {
    for db in Db::each()? {
        test(&db).map_err(|e| format!("on {}: {e}", db.name()))?;
    }
    Ok(())
}

pub(super) fn access(
    store: &Arc<dyn Store>,
) -> Result<&dyn AccessLogStore, Box<dyn std::error::Error>> {
    Ok(store
        .access_log()
        .ok_or("the store does not keep the access log")?)
}

pub(super) fn call(i: usize) -> AccessRecord {
    AccessRecord {
        at_micros: tongbao_proto::now_micros(),
        caller: "urn:tongbao:unit:tax".into(),
        method: format!("/m/{i}"),
        ..AccessRecord::default()
    }
}

pub(super) struct Key {
    pub(super) pem: String,
    pub(super) verifier: NoteVerifier,
}

impl Key {
    pub(super) fn signing(&self) -> Result<SigningKey, AccessLogError> {
        SigningKey::from_pem(&self.pem).map_err(|e| AccessLogError::Closed(e.to_string()))
    }
}

pub(super) fn key() -> Result<Key, Box<dyn std::error::Error>> {
    let key = SigningKey::generate()?;
    let verifier = NoteSigner::new(LOG, &key)?.verifier()?;
    Ok(Key {
        pem: key.to_pem(),
        verifier,
    })
}

pub(super) fn open(
    store: &Arc<dyn Store>,
    data: &Path,
    key: &Key,
    replica: &str,
) -> Result<Arc<AccessLog>, AccessLogError> {
    AccessLog::open_in(
        store,
        data,
        &AccessLogConfig::default(),
        key.signing()?,
        (LOG, Some(replica)),
    )
}

/// `n` more records, every third waited for; then stopped (signed).
pub(super) fn write(log: &AccessLog, n: usize) -> TestResult {
    for i in 0..n {
        match i % 3 {
            0 => log
                .record_durably(call(i))
                .wait_blocking()
                .map_err(|e| e.to_string())?,
            _ => log.record(call(i)),
        }
    }
    log.stop();
    Ok(())
}

/// The export of `origin`, as `audit-log export --config` writes it (in
/// one snapshot), read back.
pub(super) fn stored_export(
    db: &dyn AccessLogStore,
    origin: &str,
    verifier: Option<&NoteVerifier>,
    since_micros: Option<i64>,
) -> Result<export::Export, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    let snapshot = db.access_snapshot()?;
    let written = stored_read::export_to(&mut out, &*snapshot, origin, verifier, since_micros)?;
    let export: export::Export = serde_json::from_slice(&out)?;
    assert_eq!(written, export.records.len());
    Ok(export)
}

pub(super) fn size(store: &Arc<dyn Store>, key: &Key) -> Result<u64, Box<dyn std::error::Error>> {
    Ok(check(
        access(store)?.access_reads(),
        &origin(LOG, Some(REPLICA)),
        &key.verifier,
        true,
    )?
    .size)
}

#[test]
fn a_stored_log_outlives_its_data_directory_and_verifies_from_another_store() -> TestResult {
    let Some(db) = super::stored_tests::pg_only()? else {
        return Ok(());
    };
    let key = key()?;
    let leader = store(&db, true)?;
    let data = tempfile::tempdir()?;
    write(&*open(&leader, data.path(), &key, REPLICA)?, 10)?;
    // Nothing in the data directory: the log is in the database.
    assert!(!data.path().join(files::DIR).exists());
    drop(data);
    // Reopened from another data directory, it goes on from record 10.
    let data = tempfile::tempdir()?;
    write(&*open(&leader, data.path(), &key, REPLICA)?, 5)?;
    // Another replica's store (a standby's) reads and verifies it.
    let other = store(&db, false)?;
    assert_eq!(size(&other, &key)?, 15);
    let origin = origin(LOG, Some(REPLICA));
    let exported = stored_export(access(&other)?, &origin, Some(&key.verifier), None)?;
    assert_eq!(exported.records.len(), 15);
    let verified = verify_export(&serde_json::to_string(&exported)?, &key.verifier)?;
    assert_eq!((verified.records, verified.origin), (15, origin.clone()));
    assert_eq!(
        stored_read::origins(access(&other)?, LOG)?,
        vec![origin.clone()]
    );
    // A standby records its own calls, under its own origin.
    write(&*open(&other, data.path(), &key, "hub-b")?, 2)?;
    assert_eq!(
        stored_read::origins(access(&other)?, LOG)?,
        vec![origin, super::origin(LOG, Some("hub-b"))]
    );
    Ok(())
}

#[test]
fn a_second_writer_of_one_origin_is_refused() -> TestResult {
    let Some(db) = super::stored_tests::pg_only()? else {
        return Ok(());
    };
    let key = key()?;
    let leader = store(&db, true)?;
    let standby = store(&db, false)?;
    let data = tempfile::tempdir()?;
    let first = open(&leader, data.path(), &key, REPLICA)?;
    let e = open(&standby, data.path(), &key, REPLICA)
        .err()
        .ok_or("two processes write one origin")?;
    assert!(
        e.to_string()
            .contains("another hub process is writing the access log"),
        "{e}"
    );
    // Another origin is another log.
    write(&*open(&standby, data.path(), &key, "hub-b")?, 1)?;
    // Once the first stops, the origin is free.
    write(&first, 3)?;
    write(&*open(&standby, data.path(), &key, REPLICA)?, 1)?;
    assert_eq!(size(&standby, &key)?, 4);
    Ok(())
}

/// Records `from..from + n` of the log, as a writer that crashed before
/// its next checkpoint leaves them (straight through the boundary).
fn append_unsigned(db: &dyn AccessLogStore, key: &Key, n: u64) -> TestResult {
    let origin = origin(LOG, Some(REPLICA));
    let scanned = check(db.access_reads(), &origin, &key.verifier, true)?;
    let mut frontier = scanned.frontier;
    let first_hash = stored_hash_count(frontier.size());
    let (mut rows, mut hashes) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let mut record = call(0);
        record.n = frontier.size();
        let line = record.to_line()?;
        hashes.extend(frontier.append(record::leaf_of_line(&line))?);
        rows.push(AccessRow {
            n: record.n,
            at_micros: record.at_micros,
            line: line.into_bytes(),
        });
    }
    let guard = db.access_claim(&origin)?;
    db.access_append(&origin, &rows, first_hash, &hashes, None, None)?;
    guard.release();
    Ok(())
}

#[test]
fn tampered_records_and_hashes_are_named_at_start_and_by_verify() -> TestResult {
    let Some(pg) = super::stored_tests::pg_only()? else {
        return Ok(());
    };
    let key = key()?;
    let leader = store(&pg, true)?;
    let data = tempfile::tempdir()?;
    write(&*open(&leader, data.path(), &key, REPLICA)?, 8)?;
    append_unsigned(access(&leader)?, &key, 4)?;
    assert_eq!(size(&leader, &key)?, 12);
    let verify = || size(&leader, &key).err().map(|e| e.to_string());
    let start = || {
        open(&leader, data.path(), &key, REPLICA)
            .err()
            .map(|e| e.to_string())
    };

    // A record after the checkpoint changed: the start checks it.
    pg.execute(
        "UPDATE access_record SET line = convert_to(replace(convert_from(line, 'UTF8'), '/m/0', '/m/9'), 'UTF8') WHERE n = 10",
    )?;
    for said in [verify(), start()] {
        let said = said.ok_or("a changed record passed")?;
        assert!(
            said.contains("record 10") && said.contains("the record was changed"),
            "{said}"
        );
    }
    pg.execute(
        "UPDATE access_record SET line = convert_to(replace(convert_from(line, 'UTF8'), '/m/9', '/m/0'), 'UTF8') WHERE n = 10",
    )?;
    assert_eq!(size(&leader, &key)?, 12);

    // A record the checkpoint covers changed: verify names it.
    pg.execute(
        "UPDATE access_record SET line = convert_to(replace(convert_from(line, 'UTF8'), '/m/3', '/m/4'), 'UTF8') WHERE n = 3",
    )?;
    let said = verify().ok_or("a changed record passed")?;
    assert!(
        said.contains("record 3") && said.contains("changed"),
        "{said}"
    );
    pg.execute(
        "UPDATE access_record SET line = convert_to(replace(convert_from(line, 'UTF8'), '/m/4', '/m/3'), 'UTF8') WHERE n = 3",
    )?;

    // A stored hash below the checkpoint's right edge changed: verify
    // names it (a start reads the edge only, as on the files).
    pg.execute("UPDATE access_hash SET hash = sha256(hash) WHERE idx = 2")?;
    let said = verify().ok_or("a changed hash passed")?;
    assert!(
        said.contains("record 1") && said.contains("altered"),
        "{said}"
    );
    pg.execute("UPDATE access_hash SET hash = sha256(hash) WHERE idx = 2")?;
    // One on the edge: the start refuses too.
    let edge = stored_hash_index(3, 0);
    pg.execute(&format!(
        "UPDATE access_hash SET hash = sha256(hash) WHERE idx = {edge}"
    ))?;
    for said in [verify(), start()] {
        let said = said.ok_or("a changed hash passed")?;
        assert!(said.contains("altered"), "{said}");
    }
    Ok(())
}

#[test]
fn a_cut_tail_and_a_removed_record_are_named() -> TestResult {
    let Some(pg) = super::stored_tests::pg_only()? else {
        return Ok(());
    };
    let key = key()?;
    let leader = store(&pg, true)?;
    let data = tempfile::tempdir()?;
    write(&*open(&leader, data.path(), &key, REPLICA)?, 8)?;
    let verify = || size(&leader, &key).err().map(|e| e.to_string());
    let start = || {
        open(&leader, data.path(), &key, REPLICA)
            .err()
            .map(|e| e.to_string())
    };

    pg.execute("DELETE FROM access_record WHERE n = 5")?;
    let said = verify().ok_or("a removed record passed")?;
    assert!(said.contains("record 5 was removed"), "{said}");

    // The last records gone (with their hashes): the checkpoint counts them.
    pg.execute(&format!(
        "DELETE FROM access_record WHERE n >= 5; DELETE FROM access_hash WHERE idx >= {}",
        stored_hash_count(5)
    ))?;
    for said in [verify(), start()] {
        let said = said.ok_or("a cut log passed")?;
        assert!(said.contains("records 5..8 were removed"), "{said}");
    }
    // Records gone, their hashes left.
    pg.execute("DELETE FROM access_checkpoint")?;
    pg.execute("DELETE FROM access_record WHERE n >= 3")?;
    for said in [verify(), start()] {
        let said = said.ok_or("a cut log passed")?;
        assert!(said.contains("the last records were removed"), "{said}");
    }
    Ok(())
}

/// A files log of `n` records of the replica in `data`, as an earlier
/// version left it: each a microsecond after the one before (so that a
/// time splits them).
pub(super) fn files_log(data: &Path, key: &Key, n: usize) -> TestResult {
    let records = (0..n)
        .map(|i| {
            let mut record = call(i);
            record.at_micros = record.at_micros.saturating_add(i as i64);
            record
        })
        .collect();
    super::old_files_tests::old_log(data, &key.signing()?, Some(REPLICA), records)?;
    Ok(())
}

#[test]
fn files_of_an_earlier_version_are_moved_in_once() -> TestResult {
    on_each_store(files_of_an_earlier_version_are_moved_in_once_on)
}

fn files_of_an_earlier_version_are_moved_in_once_on(db: &Db) -> TestResult {
    let key = key()?;
    let data = tempfile::tempdir()?;
    files_log(data.path(), &key, 9)?;
    let before = super::old_files_tests::export(data.path(), None, None)?;
    let leader = db.leader()?;
    write(&*open(&leader, data.path(), &key, REPLICA)?, 3)?;
    assert!(!data.path().join(files::DIR).exists());
    assert!(data.path().join(moved::MOVED_DIR).is_dir());
    assert_eq!(size(&leader, &key)?, 12);
    let after = stored_export(
        access(&leader)?,
        &origin(LOG, Some(REPLICA)),
        Some(&key.verifier),
        None,
    )?;
    let lines = |e: &export::Export| e.records.iter().map(|r| r.line.clone()).collect::<Vec<_>>();
    assert_eq!(lines(&after)[..9], lines(&before)[..]);

    // Another log's files under the same origin are refused, named.
    let other = tempfile::tempdir()?;
    files_log(other.path(), &key, 2)?;
    let said = open(&leader, other.path(), &key, REPLICA)
        .err()
        .ok_or("another log's files were moved in")?
        .to_string();
    assert!(
        said.contains(&other.path().join(files::DIR).display().to_string())
            && said.contains("already holds another access log"),
        "{said}"
    );
    Ok(())
}

#[test]
fn a_move_cut_short_goes_on_at_the_next_start() -> TestResult {
    on_each_store(a_move_cut_short_goes_on_at_the_next_start_on)
}

fn a_move_cut_short_goes_on_at_the_next_start_on(db: &Db) -> TestResult {
    let key = key()?;
    let data = tempfile::tempdir()?;
    files_log(data.path(), &key, 7)?;
    let leader = db.leader()?;
    // What a move killed after its first chunk leaves: records 0..4, their
    // hashes, the files' checkpoint.
    let dir = data.path().join(files::DIR);
    let origin = origin(LOG, Some(REPLICA));
    let mut rows = Vec::new();
    export::for_each_record(data.path(), |line, r| {
        rows.push(AccessRow {
            n: r.n,
            at_micros: r.at_micros,
            line: line.as_bytes().to_vec(),
        });
        Ok(rows.len() < 4)
    })?;
    let tree = files::TreeFile::open(&dir.join(files::TREE_FILE))?;
    let hashes = tree.read_hashes(&(0..stored_hash_count(4)).collect::<Vec<_>>())?;
    let note = std::fs::read_to_string(dir.join(files::CHECKPOINT_FILE))?;
    let db = access(&leader)?;
    let guard = db.access_claim(&origin)?;
    db.access_append(&origin, &rows, 0, &hashes, Some(&note), None)?;
    guard.release();
    // The start refuses nothing: the move goes on from record 4.
    write(&*open(&leader, data.path(), &key, REPLICA)?, 1)?;
    assert_eq!(size(&leader, &key)?, 8);
    assert!(data.path().join(moved::MOVED_DIR).is_dir());
    Ok(())
}

#[test]
fn retention_removes_whole_old_days_with_a_removal_record_and_keeps_their_hashes() -> TestResult {
    on_each_store(retention_removes_whole_old_days_with_a_removal_record_and_keeps_their_hashes_on)
}

fn retention_removes_whole_old_days_with_a_removal_record_and_keeps_their_hashes_on(
    on: &Db,
) -> TestResult {
    let key = key()?;
    let leader = on.leader()?;
    let data = tempfile::tempdir()?;
    let day = 86_400_000_000i64;
    let now = tongbao_proto::now_micros();
    let log = open(&leader, data.path(), &key, REPLICA)?;
    for (i, days_ago) in [200, 200, 200, 100, 100].into_iter().enumerate() {
        let mut record = call(i);
        record.at_micros = now - days_ago * day + i as i64;
        log.record(record);
    }
    write(&log, 1)?;
    // The next start removes the day 200 days ago, and only it.
    write(&*open(&leader, data.path(), &key, REPLICA)?, 1)?;
    let db = access(&leader)?;
    let origin = origin(LOG, Some(REPLICA));
    let scanned = check(db.access_reads(), &origin, &key.verifier, true)?;
    assert_eq!((scanned.removed, scanned.size), (3, 8));
    let removal = stored_read::query(db.access_reads(), &origin, &export::Filter::default())?
        .into_iter()
        .find(|r| r.kind == RecordKind::Removal)
        .ok_or("no removal record")?;
    let removed = removal.removed.ok_or("the removal names nothing")?;
    assert_eq!((removed.first, removed.count), (0, 3));
    // Every checkpoint still verifies: exports of what is kept verify.
    let exported = stored_export(db, &origin, Some(&key.verifier), None)?;
    assert_eq!(exported.records.len(), 5);
    verify_export(&serde_json::to_string(&exported)?, &key.verifier)?;

    // Records removed without a removal record are named.
    let Db::Pg(pg) = on else {
        return Ok(());
    };
    pg.execute("DELETE FROM access_record WHERE n = 3")?;
    let said = check(db.access_reads(), &origin, &key.verifier, true)
        .err()
        .ok_or("a removal without its record passed")?
        .to_string();
    assert!(
        said.contains("the first record kept is 4 but removal records account for records 0..3"),
        "{said}"
    );
    Ok(())
}

#[test]
fn a_failed_commit_is_tried_once_more_and_a_second_failure_closes_the_log() -> TestResult {
    let Some(pg) = super::stored_tests::pg_only()? else {
        return Ok(());
    };
    let key = key()?;
    let leader = store(&pg, true)?;
    let data = tempfile::tempdir()?;
    // The first insert of a record fails; every later one passes.
    pg.execute(
        "CREATE SEQUENCE tongbao_test_once; \
         CREATE FUNCTION tongbao_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF nextval('tongbao_test_once') = 1 THEN RAISE EXCEPTION 'test: refused once'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER tongbao_test_refuse BEFORE INSERT ON access_record \
         FOR EACH ROW EXECUTE FUNCTION tongbao_test_refuse();",
    )?;
    write(&*open(&leader, data.path(), &key, REPLICA)?, 3)?;
    assert_eq!(size(&leader, &key)?, 3);
    // Refused for good: the waiting call hears why, and so does every later one.
    pg.execute(
        "CREATE OR REPLACE FUNCTION tongbao_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'test: refused'; END $$;",
    )?;
    let log = open(&leader, data.path(), &key, REPLICA)?;
    let said = log
        .record_durably(call(0))
        .wait_blocking()
        .err()
        .ok_or("a record the database refused was answered durable")?;
    assert!(said.contains("test: refused"), "{said}");
    assert!(
        log.failed()
            .is_some_and(|why| why.contains("test: refused"))
    );
    log.stop();
    assert_eq!(size(&leader, &key)?, 3);
    Ok(())
}

/// On sled, the log's files: a changed byte in a record the checkpoint
/// covers is named by the check; a last file cut inside what the
/// checkpoint covers is not cut further at the start (nor the hashes of
/// what it covers), and refused.
#[test]
fn on_sled_a_changed_or_cut_record_file_is_named_and_refused() -> TestResult {
    use crate::store::access_files::layout;
    let key = key()?;
    let dir = tempfile::tempdir()?;
    let data = tempfile::tempdir()?;
    let origin = origin(LOG, Some(REPLICA));
    let files = layout::origin_dir(&dir.path().join(layout::ROOT), &origin)?;
    {
        let leader: Arc<dyn Store> = Arc::new(crate::store::SledStore::open(dir.path(), true)?);
        write(&*open(&leader, data.path(), &key, REPLICA)?, 8)?;
    }
    let (_, path) = layout::record_files(&files)?
        .pop()
        .ok_or("no record file")?;
    let original = std::fs::read(&path)?;
    let reopened = || -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
        Ok(Arc::new(crate::store::SledStore::open(dir.path(), true)?))
    };
    // Record 3's line: the third frame's, a byte into it.
    let frames: Vec<usize> = {
        let mut at = 0;
        let mut starts = Vec::new();
        while at < original.len() {
            starts.push(at);
            let len = u32::from_le_bytes([
                original[at],
                original[at + 1],
                original[at + 2],
                original[at + 3],
            ]);
            at += 8 + len as usize;
        }
        starts
    };
    let mut changed = original.clone();
    changed[frames[3] + 30] ^= 1;
    std::fs::write(&path, &changed)?;
    let store = reopened()?;
    let said = size(&store, &key)
        .err()
        .ok_or("a changed record passed")?
        .to_string();
    assert!(
        said.contains("record 3") && said.contains("changed"),
        "{said}"
    );
    drop(store);
    // Cut inside record 5: within the checkpoint (of 8), so nothing is
    // cut at the start, which refuses the log as shorter than signed.
    std::fs::write(&path, &original[..frames[5] + 10])?;
    let store = reopened()?;
    let said = open(&store, data.path(), &key, REPLICA)
        .err()
        .ok_or("a cut log started")?
        .to_string();
    assert!(
        said.contains("record 5") && said.contains("were removed"),
        "{said}"
    );
    assert_eq!(std::fs::metadata(&path)?.len() as usize, frames[5] + 10);
    let said = size(&store, &key)
        .err()
        .ok_or("a cut log verified")?
        .to_string();
    assert!(said.contains("were removed"), "{said}");
    Ok(())
}

/// A sled hub's data directory of an earlier version (the store and the
/// old `access-log/` in one directory) is moved in at the first start,
/// and verifies after, whole.
#[test]
fn on_sled_an_earlier_versions_data_directory_is_moved_in_at_start() -> TestResult {
    let key = key()?;
    let data = tempfile::tempdir()?;
    files_log(data.path(), &key, 6)?;
    let before = super::old_files_tests::export(data.path(), None, None)?;
    let leader: Arc<dyn Store> = Arc::new(crate::store::SledStore::open(data.path(), true)?);
    write(&*open(&leader, data.path(), &key, REPLICA)?, 2)?;
    assert!(!data.path().join(files::DIR).exists());
    assert!(data.path().join(moved::MOVED_DIR).is_dir());
    assert_eq!(size(&leader, &key)?, 8);
    drop(leader);
    // Read as `audit-log` reads it, beside no hub: the store's files.
    let reader = crate::store::access_files::open_read(data.path()).ok_or("no store files")?;
    let origin = origin(LOG, Some(REPLICA));
    let checked = check(&*reader.snapshot(), &origin, &key.verifier, true)?;
    assert_eq!(checked.size, 8);
    let mut out = Vec::new();
    stored_read::export_to(
        &mut out,
        &*reader.snapshot(),
        &origin,
        Some(&key.verifier),
        None,
    )?;
    let after: export::Export = serde_json::from_slice(&out)?;
    let lines = |e: &export::Export| e.records.iter().map(|r| r.line.clone()).collect::<Vec<_>>();
    assert_eq!(lines(&after)[..6], lines(&before)[..]);
    Ok(())
}
