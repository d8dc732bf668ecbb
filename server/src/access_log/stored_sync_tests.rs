//! The writer's syncs on sled's files: rounds nobody waits on write
//! their records unsynced, a round a caller waits on is answered once
//! its records are synced, before the checkpoint's own syncs (a
//! checkpoint that then fails answers nobody wrongly), and a stop syncs
//! and signs everything.

use super::stored_retention_tests::writer;
use super::stored_tests::{LOG, REPLICA, TestResult, call, key, size};
use super::writer::{Queued, Rounds};
use super::*;
use crate::store::{SledStore, Store};
use std::time::Instant;

fn reads(n: usize) -> Vec<Queued> {
    (0..n).map(|i| (call(i), None, Instant::now())).collect()
}

#[test]
fn rounds_nobody_waits_on_are_synced_lazily_and_a_waiter_is_answered_before_the_signing()
-> TestResult {
    let key = key()?;
    let dir = tempfile::tempdir()?;
    let data = tempfile::tempdir()?;
    let sled = Arc::new(SledStore::open(dir.path(), true)?);
    let store: Arc<dyn Store> = sled.clone();
    let files = sled.access_files();
    let origin = origin(LOG, Some(REPLICA));
    let mut w = writer(&store, data.path(), &key, 4096)?;
    // The first records commit signed.
    w.round(reads(1), false).map_err(|(e, _)| e)?;
    let synced = files.record_syncs(&origin)?;
    // Reads only: written, not synced.
    w.round(reads(3), false).map_err(|(e, _)| e)?;
    w.round(reads(2), false).map_err(|(e, _)| e)?;
    assert_eq!(
        files.record_syncs(&origin)?,
        synced,
        "a round nobody waits on synced"
    );
    // A caller waits: answered once the records are synced, though the
    // checkpoint after them fails.
    files.fail_after_commit_point(&origin, "no space left on device")?;
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let batch = vec![(call(9), Some(tx), Instant::now())];
    let failed = w.round(batch, true);
    assert_eq!(files.record_syncs(&origin)?, synced + 1);
    assert_eq!(
        rx.try_recv()?,
        Ok(()),
        "the waiter was not answered durable"
    );
    let (said, waiters) = failed.err().ok_or("the failed checkpoint was not said")?;
    assert!(said.to_string().contains("no space left"), "{said}");
    assert!(waiters.is_empty());
    drop(w);
    drop(store);
    drop(sled);
    // Every record is there at the next start, signed up to the first.
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), true)?);
    assert_eq!(size(&store, &key)?, 7);
    Ok(())
}

#[test]
fn a_stop_syncs_and_signs_what_was_written_lazily() -> TestResult {
    let key = key()?;
    let dir = tempfile::tempdir()?;
    let data = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), true)?);
    {
        let mut w = writer(&store, data.path(), &key, 4096)?;
        w.round(reads(1), false).map_err(|(e, _)| e)?;
        w.round(reads(4), false).map_err(|(e, _)| e)?;
        w.round(Vec::new(), true).map_err(|(e, _)| e)?;
    }
    let signed = store
        .access_log()
        .ok_or("no access log")?
        .access_checkpoint(&origin(LOG, Some(REPLICA)))?
        .as_deref()
        .and_then(crate::store::access_files::layout::signed_size);
    assert_eq!(signed, Some(5));
    assert_eq!(size(&store, &key)?, 5);
    Ok(())
}
