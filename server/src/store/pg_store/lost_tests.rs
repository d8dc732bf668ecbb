//! A database that misbehaves behind a TCP relay (`relay`): a COMMIT
//! whose reply is lost, and a database that accepts but stops answering.
//! In both the store must not answer from memory as if it were current.
//! Skipped, saying so, without `TONGBAO_TEST_PG_URL`.

use super::lease::{PROBE_EVERY, PROBE_WAIT};
use super::relay::Relay;
use super::testdb::TestDb;
use super::{Database, PgOptions, PgStore, TlsOptions};
use crate::store::access::{AccessLogStore, AccessRow};
use crate::store::conformance::{TestResult, entry};
use crate::store::{Store, StoreError};
use std::time::{Duration, Instant};

/// A bound that only catches a hang.
const HANG: Duration = Duration::from_secs(60);

fn open_via(relay: &Relay) -> Result<PgStore, StoreError> {
    PgStore::open(&PgOptions {
        database: Database::new(relay.url(), &TlsOptions::default())?,
        pool_size: 2,
        replica: false,
    })
}

/// What the database holds of `inbox` after `after`, read directly.
/// A leader's store on `db`, which has committed one entry (for finance).
fn with_one_entry(db: &TestDb) -> Result<PgStore, StoreError> {
    let leader = PgStore::open(&PgOptions {
        database: Database::new(&db.url(), &TlsOptions::default())?,
        pool_size: 1,
        replica: false,
    })?;
    leader.commit(&[entry("tax", 0, &[("finance", 1)])])?;
    Ok(leader)
}

/// A standby's store on `url` whose calls wait at most 1 s.
fn impatient_standby(url: &str, pool_size: usize) -> Result<std::sync::Arc<PgStore>, StoreError> {
    let mut store = PgStore::open_standby(&PgOptions {
        database: Database::new(url, &TlsOptions::default())?,
        pool_size,
        replica: true,
    })?;
    store.call_wait = Duration::from_secs(1);
    Ok(std::sync::Arc::new(store))
}

fn in_database(db: &TestDb, inbox: &str, after: u64) -> Result<Vec<(u64, u64)>, StoreError> {
    let reader = PgStore::open_standby(&PgOptions {
        database: Database::new(&db.url(), &TlsOptions::default())?,
        pool_size: 1,
        replica: true,
    })?;
    Ok(reader
        .inbox_page(inbox, after, 100)?
        .iter()
        .map(|i| (i.cursor, i.seq))
        .collect())
}

/// Runs `f` on a thread of its own; fails rather than hang.
fn within<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG)
        .map_err(|_| format!("{what}: no answer within {} s", HANG.as_secs()))
}

/// A COMMIT that reached the database but whose reply was lost: the hub
/// refuses writes, and a reader at the end of the kept window is not
/// told it has everything.
#[test]
fn a_commit_whose_reply_was_lost_is_not_hidden_by_the_kept_window() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let relay = Relay::start(&db.url())?;
    let store = open_via(&relay)?;
    store.commit(&[
        entry("tax", 0, &[("finance", 1)]),
        entry("tax", 1, &[("finance", 2), ("police", 1)]),
    ])?;
    assert!(store.inbox_page("finance", 2, 10)?.is_empty());
    relay.lose_next_commit_reply();
    let lost = store.commit(&[entry("tax", 2, &[("finance", 3)])]);
    assert!(lost.is_err(), "the reply never came: {lost:?}");
    assert!(store.refuses_writes());
    assert_eq!(
        in_database(&db, "finance", 2)?,
        [(3, 2)],
        "the commit landed"
    );
    // A reader at the window's end: refused, saying why, not an empty page.
    let page = store.inbox_page("finance", 2, 10);
    assert!(
        matches!(&page, Err(StoreError::Unavailable(m)) if m.contains("positions from 3")),
        "{page:?}"
    );
    // What the hub confirmed is still served, up to the unconfirmed.
    let page = store.inbox_page("finance", 0, 10)?;
    assert_eq!(
        page.iter().map(|i| (i.cursor, i.seq)).collect::<Vec<_>>(),
        [(1, 0), (2, 1)]
    );
    // An inbox the failed commit did not touch keeps its end.
    assert!(store.inbox_page("police", 1, 10)?.is_empty());
    Ok(())
}

/// The leader's database accepts but stops answering (the relay holds
/// every connection open and forwards nothing): the lease's probe gives
/// up after [`PROBE_WAIT`], and from then on the store refuses writes at
/// once, saying why, and refuses the inbox's end rather than answer it
/// from memory.
#[test]
fn a_leader_whose_database_stops_answering_stops_writing_and_says_why() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let relay = Relay::start(&db.url())?;
    let store = std::sync::Arc::new(open_via(&relay)?);
    store.commit(&[
        entry("tax", 0, &[("finance", 1)]),
        entry("tax", 1, &[("finance", 2)]),
    ])?;
    assert!(store.inbox_page("finance", 2, 10)?.is_empty());
    relay.freeze();
    // The probe's bound, with a margin for a loaded machine: a deadline,
    // not a timing.
    let deadline = Instant::now() + PROBE_EVERY + PROBE_WAIT + Duration::from_secs(30);
    while !store.refuses_writes() {
        assert!(
            Instant::now() < deadline,
            "the probe never gave up on a silent database"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let why = format!("did not answer within {} s", PROBE_WAIT.as_secs());
    let writer = store.clone();
    let refused = within("a write after the probe gave up", move || {
        writer.commit(&[entry("tax", 2, &[("finance", 3)])])
    })?;
    assert!(
        matches!(&refused, Err(StoreError::Database(m))
            if m.contains("lost the database connection") && m.contains(&why)),
        "{refused:?}"
    );
    let reader = store.clone();
    let page = within("a read at the inbox's end", move || {
        reader.inbox_page("finance", 2, 10)
    })?;
    assert!(
        matches!(&page, Err(StoreError::Unavailable(m)) if m.contains(&why)),
        "{page:?}"
    );
    // What it committed, it still serves from memory, short of the end.
    let page = store.inbox_page("finance", 0, 1)?;
    assert_eq!(page.iter().map(|i| i.cursor).collect::<Vec<_>>(), [1]);
    // A page from memory that reaches the last kept position would say
    // the inbox ends there: refused too.
    for (after, limit) in [(0, 10), (1, 10), (1, 1)] {
        let page = store.inbox_page("finance", after, limit);
        assert!(
            matches!(&page, Err(StoreError::Unavailable(m)) if m.contains(&why)),
            "after {after}, limit {limit}: {page:?}"
        );
    }
    Ok(())
}

/// A hub stopping while its database stopped answering: the fetched
/// marks still waiting are not written on a write that never ends, so
/// the store's drop (the hub's stop) ends, and the process exits.
#[test]
fn a_store_whose_database_stops_answering_still_drops() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let relay = Relay::start(&db.url())?;
    let store = open_via(&relay)?;
    store.commit(&[entry("tax", 0, &[("finance", 1), ("police", 1)])])?;
    store.mark_fetched("finance", &[1], 1)?;
    relay.freeze();
    // Made after the freeze, before the probe notices: this one is
    // certainly sent to the silent database, by the background write or
    // the drop's.
    store.mark_fetched("police", &[1], 2)?;
    within("the store's drop", move || drop(store))?;
    Ok(())
}

/// Once the lease is lost because the database stopped answering, a
/// waiting fetched mark is dropped, not written: the flush answers at
/// once, saying why.
#[test]
fn marks_waiting_when_the_lease_is_lost_are_dropped_not_written() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let relay = Relay::start(&db.url())?;
    let store = std::sync::Arc::new(open_via(&relay)?);
    store.commit(&[entry("tax", 0, &[("finance", 1)])])?;
    relay.freeze();
    let deadline = Instant::now() + PROBE_EVERY + PROBE_WAIT + Duration::from_secs(30);
    while !store.refuses_writes() {
        assert!(
            Instant::now() < deadline,
            "the probe never gave up on a silent database"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The store refuses new marks now, as it refuses the inbox's end,
    // naming what happened to the database (not another replica); one
    // that was waiting as the lease went is put there directly.
    let why = format!("did not answer within {} s", PROBE_WAIT.as_secs());
    let refused = store.mark_fetched("finance", &[1], 1);
    assert!(
        matches!(&refused, Err(StoreError::Unavailable(m))
            if m.contains("lost the database connection") && m.contains(&why)
                && !m.contains("lease to another replica")),
        "{refused:?}"
    );
    store.marks.add("finance", &[1], 1)?;
    let flusher = store.clone();
    let flushed = within("a flush after the lease was lost", move || {
        flusher.flush_marks()
    })?;
    assert!(
        matches!(&flushed, Err(StoreError::Database(m)) if m.contains(&why)),
        "{flushed:?}"
    );
    assert_eq!(store.marks.read("finance", &[1])?, [None], "dropped");
    within("the store's drop", move || drop(store))?;
    Ok(())
}

/// A standby's store (no lease, so no probe to give up first) in front
/// of a database that stops answering: every call that goes to the
/// database, the access log's appends and snapshot reads (as `audit-log`
/// makes them) and reads past what memory keeps, fails `Unavailable`
/// after the call's bound instead of waiting for ever.
#[test]
fn calls_to_a_database_that_stops_answering_fail_after_the_bound() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let _leader = with_one_entry(&db)?;
    let relay = Relay::start(&db.url())?;
    let store = impatient_standby(relay.url(), 2)?;
    let origin = "hub/.access-log/standby";
    let _guard = store.access_claim(origin)?;
    let row = |n| AccessRow {
        n,
        at_micros: 1,
        line: format!("record {n}").into_bytes(),
    };
    let hash = |n: u8| [n; 32];
    store.access_append(origin, &[row(0)], 0, &[hash(0)], Some("note"), None)?;
    assert_eq!(store.inbox_page("finance", 0, 10)?.len(), 1);
    relay.freeze();
    let unanswered = |r: &Result<(), StoreError>| matches!(r, Err(StoreError::Unavailable(m)) if m == "the database did not answer within 1 s");
    let s = store.clone();
    let appended = within("an access-log append", move || {
        s.access_append(origin, &[row(1)], 1, &[hash(1)], None, None)
    })?;
    assert!(unanswered(&appended), "{appended:?}");
    let s = store.clone();
    let snapshot = within("an access-log snapshot", move || {
        s.access_snapshot()?.access_origins().map(drop)
    })?;
    assert!(unanswered(&snapshot), "{snapshot:?}");
    let s = store.clone();
    let read = within("an access-log read", move || {
        s.access_reads().access_extent(origin).map(drop)
    })?;
    assert!(unanswered(&read), "{read:?}");
    let s = store.clone();
    let page = within("an inbox page", move || {
        s.inbox_page("finance", 0, 10).map(drop)
    })?;
    assert!(unanswered(&page), "{page:?}");
    within("the store's drop", move || drop(store))?;
    Ok(())
}

/// A session of the test database that holds `table` locked until
/// dropped, so that a store's statement on it waits at the database.
struct TableLock {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl TableLock {
    fn take(db: &TestDb, table: &str) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
                .await
                .map_err(super::db)?;
            tokio::spawn(connection);
            client
                .batch_execute(&format!(
                    "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
                ))
                .await
                .map_err(super::db)?;
            Ok::<_, StoreError>(client)
        })?;
        Ok(Self { rt, client })
    }

    fn release(self) -> Result<(), StoreError> {
        self.rt
            .block_on(self.client.batch_execute("COMMIT"))
            .map_err(super::db)
    }
}

/// Waits until the test database has at most `most` sessions besides the
/// checking one; fails if it keeps more.
fn sessions_settle_at(db: &TestDb, most: u32) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let checked = db.execute(&format!(
            "DO $$ BEGIN IF (SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) > {most} \
             THEN RAISE EXCEPTION 'more than {most} sessions stay open'; END IF; END $$"
        ));
        match checked {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A call cut short by the bound while its statement waits at the
/// database leaves its connection out of the pool: the next call, on a
/// pool of one connection, draws a fresh one and answers instead of
/// queueing behind the unanswered statement (and meeting the bound too).
/// Once the database lets the statement finish, the abandoned session
/// ends and none is left inside a transaction.
#[test]
fn a_call_cut_short_never_leaves_its_connection_in_the_pool() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    drop(with_one_entry(&db)?);
    let store = impatient_standby(&db.url(), 1)?;
    let lock = TableLock::take(&db, "registry")?;
    let s = store.clone();
    let cut_short = within("a read of a locked table", move || {
        s.load_registry_bytes().map(drop)
    })?;
    assert!(
        matches!(&cut_short, Err(StoreError::Unavailable(m)) if m == "the database did not answer within 1 s"),
        "{cut_short:?}"
    );
    let s = store.clone();
    let next = within("the next call", move || s.inbox_heads())?;
    assert_eq!(next?.get("finance"), Some(&1));
    lock.release()?;
    let s = store.clone();
    let after = within("a read once the lock is gone", move || {
        s.load_registry_bytes()
    })?;
    after?;
    super::tests::no_session_left_in_a_transaction(&db)?;
    // The store's one pooled connection; the abandoned one is closed.
    sessions_settle_at(&db, 1)?;
    Ok(())
}
