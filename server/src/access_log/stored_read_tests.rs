//! Reading a log the store keeps beside its running writer, on both
//! stores (PostgreSQL's skipped without `TONGBAO_TEST_PG_URL`): a
//! verify whose reads are interleaved with a retention removal and
//! appends reads one snapshot; exports larger than a page are whole, in
//! order, and the same bytes as the files' export of the same records.

use super::export::{Export, verify_export};
use super::export_write::PAGE;
use super::stored_check::check;
use super::stored_retention_tests::{old_calls, round, verified, writer};
use super::stored_tests::{
    Db, LOG, REPLICA, TestResult, access, call, files_log, key, on_each_store, open, store,
    stored_export,
};
use super::*;
use crate::store::StoreError;
use crate::store::access::{AccessExtent, AccessLogRead, AccessRow};
use std::cell::Cell;
use tongbao_proto::Hash;

type Between<'a> = Box<dyn FnOnce() -> Result<(), String> + 'a>;

/// Reads through `reads`, and runs `between` once, before the read that
/// follows the first `after` reads: a writer's commit between two reads.
struct Interleaved<'a> {
    reads: &'a dyn AccessLogRead,
    done: Cell<usize>,
    after: usize,
    between: Cell<Option<Between<'a>>>,
    outcome: Cell<Option<Result<(), String>>>,
}

impl<'a> Interleaved<'a> {
    fn new(reads: &'a dyn AccessLogRead, after: usize, between: Between<'a>) -> Self {
        Self {
            reads,
            done: Cell::new(0),
            after,
            between: Cell::new(Some(between)),
            outcome: Cell::new(None),
        }
    }

    fn step(&self) {
        if self.done.get() == self.after
            && let Some(between) = self.between.take()
        {
            self.outcome.set(Some(between()));
        }
        self.done.set(self.done.get() + 1);
    }

    /// What `between` came to; an error when it never ran.
    fn outcome(&self) -> Result<(), String> {
        self.outcome
            .take()
            .unwrap_or_else(|| Err("the commit between reads never ran".into()))
    }
}

impl AccessLogRead for Interleaved<'_> {
    fn access_checkpoint(&self, origin: &str) -> Result<Option<String>, StoreError> {
        self.step();
        self.reads.access_checkpoint(origin)
    }

    fn access_extent(&self, origin: &str) -> Result<AccessExtent, StoreError> {
        self.step();
        self.reads.access_extent(origin)
    }

    fn access_records(
        &self,
        origin: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<AccessRow>, StoreError> {
        self.step();
        self.reads.access_records(origin, from, limit)
    }

    fn access_hashes(&self, origin: &str, indexes: &[u64]) -> Result<Vec<Hash>, StoreError> {
        self.step();
        self.reads.access_hashes(origin, indexes)
    }

    fn access_hash_range(
        &self,
        origin: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        self.step();
        self.reads.access_hash_range(origin, from, limit)
    }

    fn access_first_at(
        &self,
        origin: &str,
        from: u64,
        before: u64,
        at_micros: i64,
    ) -> Result<Option<u64>, StoreError> {
        self.step();
        self.reads.access_first_at(origin, from, before, at_micros)
    }

    fn access_origins(&self) -> Result<Vec<String>, StoreError> {
        self.step();
        self.reads.access_origins()
    }
}

/// A writer of chunks of 4 that has written an old day of 10 records and
/// today's 3 (signed in that first commit), and removed records 0..4.
fn begun(
    store: &Arc<dyn crate::store::Store>,
    data: &Path,
    key: &super::stored_tests::Key,
) -> Result<super::stored::StoredWriter, Box<dyn std::error::Error>> {
    let mut w = writer(store, data, key, 4)?;
    let mut records = old_calls(10, 200);
    records.extend((0..3).map(call));
    round(&mut w, records)?;
    Ok(w)
}

#[test]
fn a_verify_beside_a_removal_and_appends_reads_one_snapshot() -> TestResult {
    on_each_store(a_verify_beside_a_removal_and_appends_reads_one_snapshot_on)
}

fn a_verify_beside_a_removal_and_appends_reads_one_snapshot_on(db: &Db) -> TestResult {
    let key = key()?;
    let leader = db.leader()?;
    let data = tempfile::tempdir()?;
    let db = access(&leader)?;
    let o = origin(LOG, Some(REPLICA));
    let mut w = begun(&leader, data.path(), &key)?;
    assert_eq!(verified(&leader, &key)?, (4, 14));

    // Between the checkpoint and extent and the records, the writer
    // appends 3 records and removes 4..8. Read as the store is at each
    // read, the records the extent promised are gone: the verify fails
    // (as it did before it read in one snapshot).
    let torn = Interleaved::new(
        db.access_reads(),
        2,
        Box::new(|| round(&mut w, (0..3).map(call).collect()).map_err(|e| e.to_string())),
    );
    let said = check(&torn, &o, &key.verifier, true)
        .err()
        .ok_or("reads outside a snapshot did not see the removal")?
        .to_string();
    torn.outcome()?;
    drop(torn);
    assert!(said.contains("record 4 was removed"), "{said}");

    // In one snapshot, the same interleaving (appends, and 8..10 removed)
    // is not seen: the log verifies as it was at the first read.
    let snapshot = db.access_snapshot()?;
    let held = Interleaved::new(
        &*snapshot,
        2,
        Box::new(|| round(&mut w, (0..3).map(call).collect()).map_err(|e| e.to_string())),
    );
    let scanned = check(&held, &o, &key.verifier, true)?;
    held.outcome()?;
    drop(held);
    drop(snapshot);
    assert_eq!((scanned.removed, scanned.size), (8, 18));
    drop(w);
    assert_eq!(verified(&leader, &key)?, (10, 22));
    Ok(())
}

#[test]
fn an_export_beside_a_removal_is_whole_as_of_its_snapshot() -> TestResult {
    on_each_store(an_export_beside_a_removal_is_whole_as_of_its_snapshot_on)
}

fn an_export_beside_a_removal_is_whole_as_of_its_snapshot_on(db: &Db) -> TestResult {
    let key = key()?;
    let leader = db.leader()?;
    let data = tempfile::tempdir()?;
    let db = access(&leader)?;
    let o = origin(LOG, Some(REPLICA));
    let mut w = begun(&leader, data.path(), &key)?;
    // Between the extent and the records, 4..8 are removed: in one
    // snapshot the export still begins at record 4.
    let snapshot = db.access_snapshot()?;
    let held = Interleaved::new(
        &*snapshot,
        2,
        Box::new(|| round(&mut w, Vec::new()).map_err(|e| e.to_string())),
    );
    let mut out = Vec::new();
    let written = stored_read::export_to(&mut out, &held, &o, Some(&key.verifier), None)?;
    held.outcome()?;
    drop(held);
    drop(snapshot);
    drop(w);
    assert_eq!(verified(&leader, &key)?.0, 8, "4..8 were removed meanwhile");
    let export: Export = serde_json::from_slice(&out)?;
    let checked = verify_export(&String::from_utf8(out)?, &key.verifier)?;
    assert_eq!(checked.records, written);
    assert_eq!(written as u64, checked.checkpoint_size - 4);
    let first = export.records.first().ok_or("an empty export")?;
    assert_eq!(AccessRecord::from_line(&first.line)?.n, 4);
    Ok(())
}

#[test]
fn exports_of_the_same_records_from_files_and_from_the_store_are_the_same_bytes() -> TestResult {
    on_each_store(exports_of_the_same_records_from_files_and_from_the_store_are_the_same_bytes_on)
}

fn exports_of_the_same_records_from_files_and_from_the_store_are_the_same_bytes_on(
    db: &Db,
) -> TestResult {
    let key = key()?;
    let data = tempfile::tempdir()?;
    // More than two pages.
    let n = 2 * PAGE + 3;
    files_log(data.path(), &key, n)?;
    let files_bytes = |since: Option<i64>| -> Result<Vec<u8>, AccessLogError> {
        let mut out = Vec::new();
        export::export_to(&mut out, data.path(), None, since)?;
        Ok(out)
    };
    let files_whole = files_bytes(None)?;
    let middle = {
        let export: Export = serde_json::from_slice(&files_whole)?;
        let line = &export.records.get(PAGE + 7).ok_or("too few records")?.line;
        AccessRecord::from_line(line)?.at_micros
    };
    let files_since = files_bytes(Some(middle))?;
    let files_none = files_bytes(Some(i64::MAX))?;

    // Moved into the database as they are (no record added, no new
    // checkpoint): the store's export is the same, byte for byte.
    let leader = db.leader()?;
    open(&leader, data.path(), &key, REPLICA)?.stop();
    assert!(data.path().join(moved::MOVED_DIR).is_dir());
    let db = access(&leader)?;
    let o = origin(LOG, Some(REPLICA));
    let stored_bytes = |since: Option<i64>| -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let mut out = Vec::new();
        let snapshot = db.access_snapshot()?;
        stored_read::export_to(&mut out, &*snapshot, &o, Some(&key.verifier), since)?;
        Ok(out)
    };
    assert!(
        stored_bytes(None)? == files_whole,
        "the whole exports differ"
    );
    assert!(
        stored_bytes(Some(middle))? == files_since,
        "the exports since a time differ"
    );
    assert!(
        stored_bytes(Some(i64::MAX))? == files_none,
        "the empty exports differ"
    );

    // The format is the one the export always had, whole and in order.
    for bytes in [&files_whole, &files_since, &files_none] {
        let export: Export = serde_json::from_slice(bytes)?;
        assert_eq!(
            serde_json::to_string_pretty(&export)?.as_bytes(),
            &bytes[..]
        );
    }
    let whole: Export = serde_json::from_slice(&files_whole)?;
    let numbers = whole
        .records
        .iter()
        .map(|r| AccessRecord::from_line(&r.line).map(|r| r.n))
        .collect::<Result<Vec<_>, _>>()?;
    assert_eq!(numbers, (0..n as u64).collect::<Vec<_>>());
    let text = String::from_utf8(files_whole)?;
    assert_eq!(verify_export(&text, &key.verifier)?.records, n);
    let since: Export = serde_json::from_slice(&files_since)?;
    assert_eq!(since.records.len(), n - (PAGE + 7));
    let none: Export = serde_json::from_slice(&files_none)?;
    assert!(none.records.is_empty());
    // The test's own helper reads the same export.
    assert_eq!(stored_export(db, &o, None, None)?.records.len(), n);
    Ok(())
}

#[test]
fn an_unreadable_record_past_the_checkpoint_fails_no_export() -> TestResult {
    let Some(pg) = super::stored_tests::pg_only()? else {
        return Ok(());
    };
    let key = key()?;
    let leader = store(&pg, true)?;
    let data = tempfile::tempdir()?;
    let log = open(&leader, data.path(), &key, REPLICA)?;
    for i in 0..3 {
        log.record_durably(call(i))
            .wait_blocking()
            .map_err(|e| e.to_string())?;
    }
    log.stop();
    // A row past the checkpoint of 3 that no record reading accepts.
    let o = origin(LOG, Some(REPLICA));
    pg.execute(&format!(
        "INSERT INTO access_record (origin, n, at_micros, line) VALUES ('{o}', 3, 0, 'not a record')"
    ))?;
    let export = stored_export(access(&leader)?, &o, Some(&key.verifier), None)?;
    assert_eq!(export.records.len(), 3);
    Ok(())
}
