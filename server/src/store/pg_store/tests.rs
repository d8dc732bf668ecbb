//! The store contract on PostgreSQL (skipped, saying so, without
//! `TONGBAO_TEST_PG_URL`), and the refusals the database itself enforces.

use super::testdb::TestDb;
use super::{Database, PgOptions, PgStore, TlsOptions};
use crate::store::conformance::{TestResult, appends_read_back, audit_rows_past, entry};
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// The test database, over its Unix socket (clear text, as allowed there).
pub(super) fn database(url: &str) -> Result<Database, StoreError> {
    Database::new(url, &TlsOptions::default())
}

pub(super) fn open(db: &TestDb) -> Result<PgStore, StoreError> {
    PgStore::open(&PgOptions {
        database: database(&db.url())?,
        pool_size: 4,
        replica: false,
    })
}

#[test]
fn the_store_contract_holds_on_postgres() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    appends_read_back(&open(&db)?)?;
    let counted = TestDb::create()?.ok_or("the test database went away")?;
    audit_rows_past(&open(&counted)?)?;
    // Reopened (the schema already there), everything reads back.
    let store = open(&db)?;
    assert_eq!(
        store.channel_heads()?.get("tax").map(|h| h.next_seq),
        Some(2)
    );
    assert!(store.entry("tax", 1)?.is_some());
    Ok(())
}

#[test]
fn state_records_hold_on_postgres() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let store: Arc<dyn Store> = Arc::new(open(&db)?);
    crate::store::state::tests::state_records_hold(store, |s| {
        drop(s);
        Ok(Arc::new(open(&db)?))
    })
}

#[test]
fn a_batch_that_does_not_continue_its_channel_changes_nothing() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    // The first store keeps finance 1 in its window, as it committed it.
    let mut first = Some(open(&db)?);
    if let Some(store) = &first {
        store.commit(&[entry("tax", 0, &[("finance", 1)])])?;
        assert!(!store.refuses_writes());
    }
    // Another writer's view: tax:0 again, and a gap (tax:2); the second
    // on a store of its own, since a store commits nothing after a failure.
    for stale in [
        entry("tax", 0, &[("police", 1), ("finance", 2)]),
        entry("tax", 2, &[("police", 1), ("finance", 2)]),
    ] {
        let store = match first.take() {
            Some(store) => store,
            None => open(&db)?,
        };
        let refused = store.commit(&[entry("finance", 0, &[]), stale]);
        assert!(
            matches!(&refused, Err(StoreError::Database(m)) if m.contains("another writer")),
            "{refused:?}"
        );
        assert!(
            store.entry("finance", 0)?.is_none(),
            "nothing of the batch stays"
        );
        assert!(!store.inbox_heads()?.contains_key("police"));
        assert!(store.refuses_writes(), "a failed group commit is reported");
        assert_eq!(store.channel_heads()?.len(), 1);
        // The failed commit did not land, but the hub cannot tell that
        // from one whose reply was lost or that lands later: the end of
        // an inbox it would have grown is refused, never answered empty.
        for (inbox, after, first) in [("police", 0, 1), ("finance", 1, 2)] {
            let end = store.inbox_page(inbox, after, 10);
            let why = format!("inbox {inbox}: positions from {first} on were written");
            assert!(
                matches!(&end, Err(StoreError::Unavailable(m)) if m.starts_with(&why)),
                "{end:?}"
            );
        }
        let page = store.inbox_page("finance", 0, 10)?;
        assert_eq!(page.iter().map(|i| i.cursor).collect::<Vec<_>>(), [1]);
    }
    no_session_left_in_a_transaction(&db)
}

/// Once a group commit failed, its positions may or may not be stored: a
/// later commit reusing them would be hidden for good, so none is taken
/// until the hub restarts.
#[test]
fn a_store_commits_nothing_after_a_failed_commit() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let store = open(&db)?;
    store.commit(&[entry("tax", 0, &[("finance", 1)])])?;
    let stale = store.commit(&[entry("tax", 0, &[("finance", 2)])]);
    assert!(stale.is_err(), "{stale:?}");
    // What would continue the channel, reusing the failed commit's position.
    let refused = store.commit(&[entry("tax", 1, &[("finance", 2)])]);
    assert!(
        matches!(&refused, Err(StoreError::Database(m)) if m == super::AFTER_FAILED),
        "{refused:?}"
    );
    assert_eq!(
        store.channel_heads()?.get("tax").map(|h| h.next_seq),
        Some(1)
    );
    drop(store);
    // A restart commits again.
    let store = open(&db)?;
    store.commit(&[entry("tax", 1, &[("finance", 2)])])?;
    assert_eq!(store.inbox_page("finance", 1, 10)?.len(), 1);
    Ok(())
}

/// Waits until no session of the test database is inside a transaction
/// (a failed commit's connection is closed, not pooled with its
/// transaction open); fails if one stays.
pub(super) fn no_session_left_in_a_transaction(db: &TestDb) -> TestResult {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let checked = db.execute(
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND state LIKE 'idle in transaction%') \
             THEN RAISE EXCEPTION 'a session is left inside a transaction'; END IF; END $$",
        );
        match checked {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

#[test]
fn a_message_id_is_stored_once_per_sender() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let store = open(&db)?;
    store.commit(&[entry("tax", 0, &[])])?;
    let mut again = entry("tax", 1, &[]);
    again.message_id = "m0".into();
    assert!(
        store.commit(&[again]).is_err(),
        "the unique constraint holds"
    );
    assert_eq!(
        store.channel_heads()?.get("tax").map(|h| h.next_seq),
        Some(1)
    );
    assert_eq!(store.message("tax", "m0")?.map(|m| m.seq), Some(0));
    // The statements behind the failed one, COMMIT included, wrote nothing.
    assert!(store.entry("tax", 1)?.is_none());
    db.execute(
        "DO $$ BEGIN IF (SELECT count(*) FROM entries) <> 1 OR \
         (SELECT next_seq FROM channel_heads WHERE channel = 'tax') <> 1 \
         THEN RAISE EXCEPTION 'a failed group commit left rows'; END IF; END $$",
    )?;
    no_session_left_in_a_transaction(&db)
}

#[test]
fn a_database_that_cannot_be_reached_is_reported_not_waited_on() -> TestResult {
    // Port 1 on loopback: nothing listens there.
    let opened = PgStore::open(&PgOptions {
        database: database("host=127.0.0.1 port=1 user=tongbao password=secret-word dbname=x")?,
        pool_size: 1,
        replica: false,
    });
    let Err(e) = opened else {
        panic!("a store opened on a closed port");
    };
    let text = e.to_string();
    assert!(text.contains("PostgreSQL"), "{text}");
    assert!(!text.contains("secret-word"), "{text}");
    let bad = database("host=127.0.0.1 port=notaport");
    assert!(matches!(bad, Err(StoreError::Database(m)) if m.contains("[store] url")));
    Ok(())
}

#[test]
fn one_hub_serves_a_database_at_a_time() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let first = open(&db)?;
    let second = open(&db);
    assert!(
        matches!(&second, Err(StoreError::Database(m)) if m.contains("another hub")),
        "{second:?}"
    );
    drop(first);
    // Released as the first store closes.
    open(&db)?;
    Ok(())
}

#[test]
fn the_hub_does_not_back_up_a_database() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("store.dump");
    let refused = open(&db)?.backup_records(&file, 0);
    assert!(
        matches!(&refused, Err(StoreError::Database(m)) if m.contains("own tools")),
        "{refused:?}"
    );
    assert!(!file.exists());
    Ok(())
}

#[test]
fn a_database_a_newer_hub_upgraded_is_refused() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    drop(open(&db)?);
    db.execute("INSERT INTO schema_version (version) VALUES (999)")?;
    let refused = open(&db);
    assert!(
        matches!(&refused, Err(StoreError::Format(m)) if m.contains("schema version 999")),
        "{refused:?}"
    );
    Ok(())
}

#[test]
fn a_removed_inbox_row_is_reported_not_skipped() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let store = open(&db)?;
    store.commit(&[
        entry("tax", 0, &[("finance", 1)]),
        entry("tax", 1, &[("finance", 2)]),
        entry("tax", 2, &[("finance", 3)]),
    ])?;
    db.execute("DELETE FROM inbox WHERE inbox = 'finance' AND position = 2")?;
    // The hub that committed them serves them from memory; a hub reading
    // the database (here the same, reopened) finds the gap.
    drop(store);
    let store = open(&db)?;
    let page = store.inbox_page("finance", 0, 10);
    assert!(
        matches!(&page, Err(StoreError::Corrupt(m)) if m.contains("2..=2")),
        "{page:?}"
    );
    Ok(())
}

#[test]
fn a_store_whose_lease_moved_on_writes_nothing_more() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let store = open(&db)?;
    store.commit(&[entry("tax", 0, &[("finance", 1)])])?;
    store.save_checkpoints(&[("tax", "note 1")])?;
    // Another replica took over: it raised the epoch.
    db.execute("UPDATE lease SET epoch = epoch + 1")?;
    let lost = |r: Result<(), StoreError>| matches!(&r, Err(StoreError::Database(m)) if m.contains("lost the database lease"));
    assert!(lost(store.commit(&[entry("tax", 1, &[("finance", 2)])])));
    assert!(lost(store.save_checkpoints(&[("tax", "note 2")])));
    assert!(lost(store.save_registry_bytes(b"registry")));
    // A delivery's mark is refused as a read is, for the same reason.
    let refused = store.mark_fetched("finance", &[1], 7);
    assert!(
        matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("lost the database lease")),
        "{refused:?}"
    );
    let mut batch = crate::store::StateBatch::default();
    batch.insert(b"k", b"v");
    assert!(lost(store.state_apply("workflow", &batch)));
    assert!(store.refuses_writes(), "the fenced store says so");
    // Nothing of it reached the database.
    assert_eq!(
        store.channel_heads()?.get("tax").map(|h| h.next_seq),
        Some(1)
    );
    assert!(store.entry("tax", 1)?.is_none());
    assert_eq!(
        store.checkpoints()?.get("tax").map(String::as_str),
        Some("note 1")
    );
    assert_eq!(store.load_registry_bytes()?, None);
    assert_eq!(store.fetched("finance", 1)?, None);
    assert_eq!(store.state_get("workflow", b"k")?, None);
    Ok(())
}

#[test]
fn a_standby_takes_the_lease_when_the_leader_lets_go() -> TestResult {
    use super::lease::{Lease, Wait};
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let first = open(&db)?;
    first.commit(&[entry("tax", 0, &[])])?;
    let rt = tokio::runtime::Runtime::new()?;
    let url = database(&db.url())?;
    let standby = rt.spawn(async move { Lease::acquire(&url, Wait::Standby).await });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !standby.is_finished(),
        "the lease is held: the standby waits"
    );
    drop(first);
    let lease = rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(30), standby).await
    })???;
    let second = PgStore::open_holding(
        &PgOptions {
            database: database(&db.url())?,
            pool_size: 2,
            replica: false,
        },
        Some(lease),
    )?;
    // It continues the database as the first left it, and writes.
    assert_eq!(
        second.channel_heads()?.get("tax").map(|h| h.next_seq),
        Some(1)
    );
    second.commit(&[entry("tax", 1, &[])])?;
    // While it holds the lease, a hub that is no replica is refused.
    assert!(
        matches!(open(&db), Err(StoreError::Database(m)) if m.contains("another hub")),
        "one leader at a time"
    );
    Ok(())
}

#[test]
fn a_new_leader_reads_what_the_earlier_one_committed() -> TestResult {
    use tongbao_proto::merkle::stored_hash_count;
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let first = open(&db)?;
    first.commit(&[
        entry("tax", 0, &[("finance", 1)]),
        entry("tax", 1, &[("finance", 2)]),
    ])?;
    drop(first);
    // The second keeps only what it commits itself: the rest is read
    // from the database, in one page and one list of hashes with its own.
    let second = open(&db)?;
    second.commit(&[entry("tax", 2, &[("finance", 3)])])?;
    let cursors = |page: Vec<crate::store::InboxItem>| -> Vec<u64> {
        page.iter().map(|i| i.cursor).collect()
    };
    assert_eq!(cursors(second.inbox_page("finance", 0, 10)?), [1, 2, 3]);
    assert_eq!(cursors(second.inbox_page("finance", 1, 1)?), [2]);
    assert_eq!(cursors(second.inbox_page("finance", 2, 10)?), [3]);
    assert!(second.inbox_page("finance", 3, 10)?.is_empty());
    let hashes = second.stored_hashes(
        "tax",
        &[
            stored_hash_count(2),
            stored_hash_count(0),
            stored_hash_count(1),
        ],
    )?;
    assert_eq!(hashes, [[102; 32], [100; 32], [101; 32]]);
    for seq in 0..3 {
        let read = second.entry("tax", seq)?.map(|e| e.leaf_hash);
        assert_eq!(read, Some([100 + seq as u8; 32]));
    }
    assert!(second.entry("tax", 3)?.is_none());
    // A hash that was never stored is reported, kept ones beside it or not.
    let missing = second.stored_hashes("tax", &[stored_hash_count(2), stored_hash_count(7)]);
    assert!(
        matches!(&missing, Err(StoreError::Corrupt(m)) if m.contains("missing")),
        "{missing:?}"
    );
    Ok(())
}

/// A fetched mark commits without waiting for the WAL flush; that
/// setting is its transaction's alone, never the connection's, which the
/// next group commit may use.
#[test]
fn a_fetched_mark_leaves_the_connection_synchronous() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    // One connection: the mark and everything after it share it.
    let store = PgStore::open(&PgOptions {
        database: database(&db.url())?,
        pool_size: 1,
        replica: false,
    })?;
    store.commit(&[entry("tax", 0, &[("finance", 1)])])?;
    store.mark_fetched("finance", &[1], 7)?;
    // Written by this flush or by the background one it waits for.
    store.flush_marks()?;
    assert_eq!(
        stored_marks(&db, "finance", &[1])?,
        [Some(7)],
        "the mark was written"
    );
    assert_eq!(store.fetched("finance", 1)?, Some(7));
    let pool = store.pool();
    let setting: String = store.block(async move {
        let c = pool.get().await.map_err(super::db)?;
        let row = c
            .query_one("SHOW synchronous_commit", &[])
            .await
            .map_err(super::db)?;
        row.try_get(0).map_err(super::db)
    })?;
    assert_eq!(setting, "on", "the mark's setting outlived its transaction");
    Ok(())
}

/// A reader at the end of the kept window is answered from memory, and
/// a later commit's positions are there for it at once.
#[test]
fn a_reader_at_the_window_end_sees_the_next_commit() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let store = open(&db)?;
    store.commit(&[
        entry("tax", 0, &[("finance", 1)]),
        entry("tax", 1, &[("finance", 2)]),
    ])?;
    assert!(store.inbox_page("finance", 2, 10)?.is_empty());
    store.commit(&[entry("tax", 2, &[("finance", 3)])])?;
    let page = store.inbox_page("finance", 2, 10)?;
    assert_eq!(
        page.iter().map(|i| (i.cursor, i.seq)).collect::<Vec<_>>(),
        vec![(3, 2)]
    );
    // A reopened store keeps nothing yet: it reads the database.
    drop(store);
    let store = open(&db)?;
    assert_eq!(store.inbox_page("finance", 1, 10)?.len(), 2);
    assert!(store.inbox_page("finance", 3, 10)?.is_empty());
    Ok(())
}

fn standby(db: &TestDb) -> Result<PgStore, StoreError> {
    PgStore::open_standby(&PgOptions {
        database: database(&db.url())?,
        pool_size: 2,
        replica: true,
    })
}

/// What the database holds of `inbox`'s marks (a standby's store, whose
/// own memory holds none), waiting for them until a deadline that only
/// catches a hang.
fn stored_marks(db: &TestDb, inbox: &str, cursors: &[u64]) -> Result<Vec<Option<i64>>, StoreError> {
    let reader = standby(db)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let marks = reader.fetched_many(inbox, cursors)?;
        if marks.iter().all(Option::is_some) || std::time::Instant::now() >= deadline {
            return Ok(marks);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Fetched marks wait in memory and go to the database together, in the
/// background: read back at once, first serving winning before and after.
#[test]
fn fetched_marks_are_written_together_first_serving_winning() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let store = open(&db)?;
    store.mark_fetched("finance", &[1, 2], 7)?;
    store.mark_fetched("finance", &[2, 3], 9)?;
    store.mark_fetched("police", &[1], 8)?;
    assert_eq!(
        store.fetched_many("finance", &[3, 2, 1, 4])?,
        [Some(9), Some(7), Some(7), None]
    );
    // Written without being asked to, all of them.
    assert_eq!(
        stored_marks(&db, "finance", &[1, 2, 3])?,
        [Some(7), Some(7), Some(9)]
    );
    assert_eq!(stored_marks(&db, "police", &[1])?, [Some(8)]);
    // A later serving of a written position changes nothing.
    store.mark_fetched("finance", &[1], 11)?;
    assert_eq!(
        store.fetched("finance", 1)?,
        Some(7),
        "the database's is the first"
    );
    store.flush_marks()?;
    assert_eq!(store.fetched("finance", 1)?, Some(7));
    assert_eq!(stored_marks(&db, "finance", &[1])?, [Some(7)]);
    Ok(())
}

/// An orderly stop writes the waiting marks before it lets go of the lease.
#[test]
fn waiting_fetched_marks_survive_an_orderly_stop() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let store = open(&db)?;
    for cursor in 1..=50 {
        store.mark_fetched("finance", &[cursor], 100 + cursor as i64)?;
    }
    drop(store);
    let store = open(&db)?;
    let cursors: Vec<u64> = (1..=50).collect();
    let expected: Vec<Option<i64>> = (1..=50).map(|c| Some(100 + c)).collect();
    assert_eq!(store.fetched_many("finance", &cursors)?, expected);
    Ok(())
}

/// A standby's mark written first stays the first serving: the leader's
/// later mark of the same position, waiting or written, does not replace it.
#[test]
fn a_standby_s_earlier_mark_wins_over_the_leader_s() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let leader = open(&db)?;
    let standby = standby(&db)?;
    standby.mark_fetched("finance", &[1], 5)?;
    // Written by this flush or by the background one it waits for.
    standby.flush_marks()?;
    assert_eq!(stored_marks(&db, "finance", &[1])?, [Some(5)]);
    leader.mark_fetched("finance", &[1, 2], 9)?;
    assert_eq!(leader.fetched_many("finance", &[1, 2])?, [Some(5), Some(9)]);
    leader.flush_marks()?;
    assert_eq!(stored_marks(&db, "finance", &[1, 2])?, [Some(5), Some(9)]);
    Ok(())
}

/// Marks waiting when another replica takes the lease are never written:
/// the fenced hub's write fails whole, and later marks are refused.
#[test]
fn a_fenced_hub_s_waiting_marks_are_not_written() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let store = open(&db)?;
    // Another replica took over: it raised the epoch, before the flush.
    store.mark_fetched("finance", &[1], 7)?;
    let flushed = {
        db.execute("UPDATE lease SET epoch = epoch + 1")?;
        store.flush_marks()
    };
    if flushed.is_ok() {
        // The background flush wrote it before the epoch moved: then a
        // mark made now must be refused by the fence.
        store.mark_fetched("finance", &[2], 8)?;
        let refused = store.flush_marks();
        assert!(
            matches!(&refused, Err(StoreError::Database(m)) if m.contains("lost the database lease")),
            "{refused:?}"
        );
        assert_eq!(store.fetched("finance", 2)?, None, "dropped, not written");
    } else {
        assert!(
            matches!(&flushed, Err(StoreError::Database(m)) if m.contains("lost the database lease")),
            "{flushed:?}"
        );
        assert_eq!(store.fetched("finance", 1)?, None, "dropped, not written");
    }
    let refused = store.mark_fetched("finance", &[3], 9);
    assert!(
        matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("lost the database lease")),
        "{refused:?}"
    );
    Ok(())
}
