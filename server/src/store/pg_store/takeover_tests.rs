//! A takeover against an earlier leader's write in flight (the fence):
//! it waits and names what it waits for, and a stop meanwhile gives it up
//! without raising an epoch behind it (skipped, saying so, without
//! `TONGBAO_TEST_PG_URL`).

use super::Database;
use super::db as db_error;
use super::lease::{Abandon, Lease, Wait, blocking_sessions};
use super::testdb::TestDb;
use super::tests::{database, open};
use crate::store::StoreError;
use crate::store::conformance::TestResult;
use std::time::{Duration, Instant};

/// A database whose first leader has stopped, with an earlier leader's
/// write still in flight (the lease row held `FOR SHARE` by `writer`,
/// in a transaction left open), and a `watcher` connection outside any
/// transaction (within one, pg_stat_activity stays as first read).
struct HeldLeaseRow {
    rt: tokio::runtime::Runtime,
    url: Database,
    writer: tokio_postgres::Client,
    watcher: tokio_postgres::Client,
}

impl HeldLeaseRow {
    fn new(db: &TestDb) -> Result<Self, Box<dyn std::error::Error>> {
        drop(open(db)?);
        let rt = tokio::runtime::Runtime::new()?;
        let url = database(&db.url())?;
        let connect = || async {
            let (client, connection) = url.connect(&url.config(), Duration::from_secs(10)).await?;
            tokio::spawn(connection);
            Ok::<_, StoreError>(client)
        };
        let writer = rt.block_on(connect())?;
        rt.block_on(writer.batch_execute("BEGIN; SELECT epoch FROM lease WHERE id = 1 FOR SHARE"))
            .map_err(db_error)?;
        let watcher = rt.block_on(connect())?;
        Ok(Self {
            rt,
            url,
            writer,
            watcher,
        })
    }

    fn epoch(&self) -> Result<i64, StoreError> {
        self.rt
            .block_on(
                self.watcher
                    .query_one("SELECT epoch FROM lease WHERE id = 1", &[]),
            )
            .and_then(|row| row.try_get(0))
            .map_err(db_error)
    }

    /// The session whose statement is the takeover's UPDATE, with the
    /// further condition `and` (empty for any, running or done).
    fn update_session(&self, and: &str) -> Result<Option<i32>, StoreError> {
        let sql = format!(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND query LIKE 'UPDATE lease SET epoch%' {and}"
        );
        self.rt
            .block_on(self.watcher.query_opt(&sql, &[]))
            .and_then(|row| row.map(|r| r.try_get(0)).transpose())
            .map_err(db_error)
    }

    /// The session of the takeover's UPDATE once it waits on the row lock.
    fn waiting_update(&self) -> Result<i32, Box<dyn std::error::Error>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(pid) = self.update_session(WAITS)? {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                return Err("no waiting takeover".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The lease, taken as a standby that got it would (the lock, no
    /// epoch raised yet), and what gives its takeover up.
    fn lease(&self) -> Result<(Lease, Abandon), StoreError> {
        let lease = self.rt.block_on(Lease::acquire(&self.url, Wait::Refuse))?;
        let abandon = lease.abandon_handle();
        Ok((lease, abandon))
    }

    /// The earlier leader's write ends.
    fn commit(&self) -> Result<(), StoreError> {
        self.rt
            .block_on(self.writer.batch_execute("COMMIT"))
            .map_err(db_error)
    }
}

/// Of a session waiting on a lock.
const WAITS: &str = "AND wait_event_type = 'Lock'";

/// A takeover waits for an earlier leader's write in flight (the fence),
/// and while it waits it can name the session it waits for.
#[test]
fn a_takeover_waits_for_a_write_in_flight_and_names_its_session() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let held = HeldLeaseRow::new(&db)?;
    let blocker_pid: i32 = held
        .rt
        .block_on(held.writer.query_one("SELECT pg_backend_pid()", &[]))
        .and_then(|row| row.try_get(0))
        .map_err(db_error)?;
    let (lease, _) = held.lease()?;
    let taking = {
        let url = held.url.clone();
        held.rt.spawn(async move {
            let epoch = lease
                .take_over_warning_every(&url, Duration::from_millis(50))
                .await;
            (lease, epoch)
        })
    };
    let waiting_pid = held.waiting_update()?;
    assert_eq!(
        held.rt
            .block_on(blocking_sessions(&held.url, waiting_pid))?,
        [blocker_pid]
    );
    // Several warnings have passed; it still waits for the write.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!taking.is_finished(), "the fence holds the takeover back");
    held.commit()?;
    let (_lease, epoch) = held
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), taking).await })??;
    assert!(epoch? >= 2, "the epoch was raised past the first leader's");
    Ok(())
}

/// A takeover given up while it waits (the process stops) cancels its
/// UPDATE at the database: the earlier leader's write ends, and no epoch
/// is raised behind it.
#[test]
fn a_takeover_given_up_while_it_waits_raises_no_epoch() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let held = HeldLeaseRow::new(&db)?;
    let before = held.epoch()?;
    let (lease, abandon) = held.lease()?;
    let taking = {
        let url = held.url.clone();
        held.rt.spawn(async move {
            let epoch = lease.take_over(&url).await;
            (lease, epoch)
        })
    };
    held.waiting_update()?;
    abandon.now();
    // The lease is kept alive: only the cancel ends the UPDATE.
    let (_lease, given_up) = held
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), taking).await })??;
    let said = given_up.err().ok_or("the takeover went on")?.to_string();
    assert!(said.contains("the epoch was not raised"), "{said}");
    // Cancelled, not ended (ending the session is the last resort).
    assert!(!said.contains("session was ended"), "{said}");
    assert_eq!(
        held.update_session(WAITS)?,
        None,
        "the takeover's UPDATE still waits at the database"
    );
    held.commit()?;
    assert_eq!(held.epoch()?, before, "an epoch was raised behind the stop");
    Ok(())
}

/// A takeover given up before it began (a stop during the migration)
/// sends no UPDATE at all: none waits, and no epoch is raised later.
#[test]
fn a_takeover_given_up_before_it_began_sends_nothing() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let held = HeldLeaseRow::new(&db)?;
    let before = held.epoch()?;
    let (lease, abandon) = held.lease()?;
    abandon.now();
    let said = held
        .rt
        .block_on(lease.take_over(&held.url))
        .err()
        .ok_or("the takeover went on")?
        .to_string();
    assert!(said.contains("the epoch was not raised"), "{said}");
    assert!(abandon.gave_up());
    // No session's statement is the UPDATE, running or done.
    assert_eq!(held.update_session("")?, None, "an UPDATE was sent");
    held.commit()?;
    // Time for a queued UPDATE to run, were there one.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(held.epoch()?, before, "an epoch was raised behind the stop");
    drop(lease);
    Ok(())
}
