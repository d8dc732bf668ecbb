//! Filing rows among runs already filed, and reading runs while they are
//! rewritten.

use super::*;

fn row(hub_micros: u64) -> Row {
    Row {
        hub_micros,
        seq: hub_micros,
        channel: "tax".into(),
    }
}

/// Files `rows` in "fund" with a lock of their own: the runs written.
fn file(tree: &sled::Tree, rows: Vec<Row>) -> Result<usize, StoreError> {
    file_rows(tree, &Rewrites::default(), "fund", rows)
}

fn tree() -> Result<sled::Tree, StoreError> {
    let db = sled::Config::new().temporary(true).open()?;
    Ok(db.open_tree("exchange")?)
}

/// Every (key, value) of `tree`.
fn all(tree: &sled::Tree) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
    Ok(tree.iter().collect::<Result<_, _>>()?)
}

/// The rows of every run, in key order, checked apart (each run's
/// rows after the previous run's).
fn rows_apart(tree: &sled::Tree) -> Result<Vec<Row>, StoreError> {
    let mut out: Vec<Row> = Vec::new();
    for (k, v) in all(tree)? {
        let rows = rows_of(&k, &v)?;
        assert!(rows.first() > out.last(), "runs overlap at {rows:?}");
        out.extend(rows);
    }
    Ok(out)
}

/// Runs over 1000..=5000, then a row within one of them and a row
/// after all: only the run the first falls within is rewritten; a row
/// in a gap, and one before every run, touch no run. Filing every
/// row after the highest one filed (a clock set back, channels pinned
/// at their last time) rewrote every run in between.
#[test]
fn only_the_runs_a_row_falls_within_are_rewritten() -> Result<(), StoreError> {
    let tree = tree()?;
    for times in [
        [1_000, 1_500],
        [2_000, 2_800],
        [3_000, 3_500],
        [4_000, 5_000],
    ] {
        file(&tree, times.iter().map(|t| row(*t)).collect())?;
    }
    let before = all(&tree)?;
    assert_eq!(before.len(), 4);
    assert_eq!(file(&tree, vec![row(2_500), row(9_000)])?, 2);
    let after = all(&tree)?;
    assert_eq!(after.len(), 5);
    // Runs 1, 3 and 4 untouched, byte for byte; run 2 holds 2500.
    for i in [0, 2, 3] {
        assert_eq!(after[i], before[i], "run {i}");
    }
    assert_eq!(after[1].0, before[1].0);
    assert_eq!(
        rows_of(&after[1].0, &after[1].1)?,
        [2_000, 2_500, 2_800].map(row)
    );
    // In the gap after run 2, and before every run: runs of their own.
    file(&tree, vec![row(2_900), row(500)])?;
    let gaps = all(&tree)?;
    assert_eq!(gaps.len(), 7);
    for run in &after {
        assert!(gaps.contains(run), "a run rewritten");
    }
    let want = [
        500, 1_000, 1_500, 2_000, 2_500, 2_800, 2_900, 3_000, 3_500, 4_000, 5_000, 9_000,
    ];
    assert_eq!(rows_apart(&tree)?, want.map(row));
    // Within the second run and the last but one: the runs between
    // untouched.
    let middle = all(&tree)?[2..5].to_vec();
    assert_eq!(file(&tree, vec![row(1_200), row(4_500)])?, 2);
    for run in &middle {
        assert!(all(&tree)?.contains(run), "a run between rewritten");
    }
    let want = [
        500, 1_000, 1_200, 1_500, 2_000, 2_500, 2_800, 2_900, 3_000, 3_500, 4_000, 4_500, 5_000,
        9_000,
    ];
    assert_eq!(rows_apart(&tree)?, want.map(row));
    // Rows already filed, within runs and between them, filed once.
    file(&tree, want.map(row).to_vec())?;
    assert_eq!(rows_apart(&tree)?, want.map(row));
    Ok(())
}

/// A rewrite waits until a read of runs lets go: a read sees the runs
/// as they were or as they are, never half rewritten.
#[test]
fn a_rewrite_waits_for_a_read_of_runs() -> Result<(), StoreError> {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let tree = tree()?;
    let rewrites = Arc::new(Rewrites::default());
    for times in [[1_000, 1_500], [2_000, 2_800]] {
        file_rows(&tree, &rewrites, "fund", times.map(row).to_vec())?;
    }
    let before = all(&tree)?;
    let still = rewrites.hold_still()?;
    let writer = {
        let (tree, rewrites) = (tree.clone(), rewrites.clone());
        std::thread::spawn(move || file_rows(&tree, &rewrites, "fund", vec![row(2_500)]))
    };
    // Until the writer waits for the lock (a waiting writer holds new
    // readers off); the deadline only catches a writer that never does.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rewrites.0.try_read().is_ok() {
        assert!(Instant::now() < deadline, "the rewrite never waited");
        std::thread::yield_now();
    }
    assert_eq!(all(&tree)?, before, "rewritten under a read");
    drop(still);
    let written = writer
        .join()
        .map_err(|_| StoreError::Database("the writer panicked".into()))??;
    assert_eq!(written, 1);
    assert_eq!(
        rows_apart(&tree)?,
        [1_000, 1_500, 2_000, 2_500, 2_800].map(row)
    );
    Ok(())
}

/// A read holds rewrites off, a rewrite's batch holds reads off, and
/// runs inserted after the others take no lock.
#[test]
fn reads_and_rewrites_take_the_lock() -> Result<(), StoreError> {
    let tree = tree()?;
    let rewrites = Rewrites::default();
    HELD.set(None);
    file_rows(&tree, &rewrites, "fund", [1_000, 2_000].map(row).to_vec())?;
    assert_eq!(HELD.get(), None, "a plain insert took the lock");
    file_rows(&tree, &rewrites, "fund", vec![row(1_500)])?;
    assert_eq!(HELD.get(), Some(true), "a rewrite without the lock");
    HELD.set(None);
    let (from, to) = audit_range("fund", 0, i64::MAX, None);
    filed_rows(&tree, &rewrites, "fund", (&from, &to), 10)?;
    assert_eq!(HELD.get(), Some(true), "a read without the lock");
    Ok(())
}

/// Runs that overlap (as a read might see them half rewritten): each
/// row is taken once and counted once, so the read goes on until it
/// has `limit` rows. Counting every row read stopped after the second
/// run with 6 rows of the 7 asked for, which an audit takes for the
/// end of its period.
#[test]
fn a_read_takes_and_counts_each_row_once() -> Result<(), StoreError> {
    let tree = tree()?;
    for rows in [1..=5, 1..=6, 7..=10] {
        let rows: Vec<Row> = rows.map(row).collect();
        for (last, value) in runs(&rows) {
            tree.insert(last.key("fund"), value)?;
        }
    }
    let (from, to) = audit_range("fund", 0, i64::MAX, None);
    let read = filed_rows(&tree, &Rewrites::default(), "fund", (&from, &to), 7)?;
    assert_eq!(read, (1..=10).map(row).collect::<Vec<_>>());
    Ok(())
}

/// A run that does not decode fails the filing of a row after the run
/// before it and at or before its key, naming the key, and nothing is
/// written: its first row cannot be known, so a run filed there could
/// lie within it and a read would stop short of its rows. Rows before
/// the run before it, within that run, and after the garbled one are
/// filed as ever. Filing them around it made runs that overlapped it.
#[test]
fn a_garbled_run_fails_only_rows_that_could_fall_within_it() -> Result<(), StoreError> {
    let tree = tree()?;
    for times in [[1_000, 2_000], [3_000, 4_000], [5_000, 6_000]] {
        file(&tree, times.map(row).to_vec())?;
    }
    let garbled = row(4_000).key("fund");
    tree.insert(garbled.as_slice(), [RUN, 0xff].as_slice())?;
    for times in [
        vec![2_500],
        vec![3_000],
        vec![4_000],
        vec![1_500, 3_500],
        vec![3_500, 7_000],
    ] {
        let before = all(&tree)?;
        match file(&tree, times.iter().map(|t| row(*t)).collect()) {
            Err(StoreError::Corrupt(m)) => assert!(
                m.contains("garbled") && m.contains(&hex::encode(&garbled)),
                "{times:?}: {m}"
            ),
            other => panic!("{times:?}: expected the garbled run, got {other:?}"),
        }
        assert_eq!(all(&tree)?, before, "{times:?} wrote");
    }
    // Before the first run, within it, between the garbled run and the
    // next, after all.
    assert_eq!(file(&tree, vec![row(500)])?, 1);
    assert_eq!(file(&tree, [1_500, 4_500, 7_000].map(row).to_vec())?, 3);
    assert_eq!(tree.get(&garbled)?.as_deref(), Some([RUN, 0xff].as_slice()));
    let keys: Vec<sled::IVec> = tree.iter().keys().collect::<Result<_, _>>()?;
    let want: Vec<Vec<u8>> = [500, 2_000, 4_000, 4_500, 6_000, 7_000]
        .map(|t| row(t).key("fund"))
        .to_vec();
    assert_eq!(keys, want);
    let run = |t: u64| -> Result<Vec<Row>, StoreError> {
        let k = row(t).key("fund");
        let v = tree.get(&k)?.ok_or(StoreError::Corrupt("gone".into()))?;
        rows_of(&k, &v)
    };
    assert_eq!(run(2_000)?, [1_000, 1_500, 2_000].map(row));
    assert_eq!(run(6_000)?, [5_000, 6_000].map(row));
    // A garbled first run: every row up to its key fails.
    let first = self::tree()?;
    first.insert(row(2_000).key("fund"), [RUN, 0xff].as_slice())?;
    assert!(matches!(
        file(&first, vec![row(1)]),
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(file(&first, vec![row(2_001)])?, 1);
    Ok(())
}

/// Filing rows in batches in any order keeps runs apart and every row
/// once, whatever falls within, between, before or after runs.
#[test]
fn batches_in_any_order_keep_runs_apart() -> Result<(), StoreError> {
    use proptest::prelude::*;
    use proptest::test_runner::{TestRng, TestRunner};
    // The same cases every run, so that a failure shows again.
    let config = ProptestConfig::with_cases(32);
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let batches = proptest::collection::vec(proptest::collection::vec(0..400u64, 1..60), 1..6);
    runner
        .run(&batches, |batches| {
            let tree = tree().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut want: Vec<Row> = Vec::new();
            for batch in batches {
                let rows: Vec<Row> = batch.into_iter().map(row).collect();
                want.extend(rows.iter().cloned());
                file(&tree, rows).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            want.sort_unstable();
            want.dedup();
            let read = rows_apart(&tree).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(read, want);
            Ok(())
        })
        .map_err(|e| StoreError::Database(e.to_string()))
}
