//! Inbox, answer and fetched runs: one key per inbox per commit, merged
//! by the flush, and every position found once.

use super::*;

#[test]
fn runs_of_many_commits_become_one_key_when_flushed() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // No background flush before the one this test asks for.
    let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
    for seq in 0..5u64 {
        s.commit(&[entry("tax", seq, &[("finance", seq + 1), ("pbc", seq + 1)])])?;
    }
    s.mark_fetched("finance", &[1, 2], 10)?;
    s.mark_fetched("finance", &[3], 20)?;
    s.mark_fetched("finance", &[4, 5], 30)?;
    s.commit(&[entry("tax", 5, &[("finance", 6)])])?;
    s.commit(&[entry("tax", 6, &[("finance", 7)])])?;
    // Position 6 is skipped: fetched runs on either side stay apart.
    s.mark_fetched("finance", &[7], 40)?;
    let keys_of = |tree: &sled::Tree, kind: u8, inbox: &str| {
        tree.scan_prefix(key(kind, inbox, Some(0)).split_at(2 + inbox.len() + 1).0)
            .count()
    };
    let check = |s: &SledStore| -> Result<(), Box<dyn std::error::Error>> {
        let page: Vec<(u64, u64)> = s
            .inbox_page("finance", 0, 7)?
            .iter()
            .map(|i| (i.cursor, i.seq))
            .collect();
        assert_eq!(page, (1..=7).map(|c| (c, c - 1)).collect::<Vec<_>>());
        assert_eq!(s.inbox_page("finance", 3, 2)?.len(), 2);
        assert_eq!(s.inbox_page("pbc", 0, 100)?.len(), 5);
        let times: Vec<Option<i64>> = (1..=7)
            .map(|c| s.fetched("finance", c))
            .collect::<Result<_, _>>()?;
        assert_eq!(
            times,
            [
                Some(10),
                Some(10),
                Some(20),
                Some(30),
                Some(30),
                None,
                Some(40)
            ]
        );
        Ok(())
    };
    check(&s)?;
    assert_eq!(s.fetched("finance", 8)?, None);
    let tree = s.raw_tree()?;
    assert_eq!(
        keys_of(tree, INBOX, "finance"),
        1,
        "seven commits, one inbox run"
    );
    assert_eq!(keys_of(tree, INBOX, "pbc"), 1);
    assert_eq!(
        keys_of(tree, FETCHED, "finance"),
        2,
        "split where position 6 is missing"
    );
    check(&s)?;
    // A later page continues after the merged runs.
    s.commit(&[entry("tax", 7, &[("finance", 8)])])?;
    s.mark_fetched("finance", &[8], 50)?;
    assert_eq!(s.fetched("finance", 8)?, Some(50));
    drop(s);
    let s = SledStore::open(dir.path(), true)?;
    check(&s)?;
    assert_eq!(s.inbox_page("finance", 7, 10)?.len(), 1);
    assert_eq!(s.fetched("finance", 8)?, Some(50));
    Ok(())
}

#[test]
fn fetched_times_are_read_in_one_pass() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
    s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
    s.commit(&[entry("tax", 1, &[("finance", 2)])])?;
    s.commit(&[entry("tax", 2, &[("finance", 3)])])?;
    s.mark_fetched("finance", &[1, 2], 50)?;
    s.mark_fetched("finance", &[3], 60)?;
    for _ in 0..2 {
        assert_eq!(
            s.fetched_many("finance", &[4, 3, 1, 2])?,
            [None, Some(60), Some(50), Some(50)]
        );
        assert_eq!(s.fetched_many("tax", &[1])?, [None]);
        s.raw_tree()?;
    }
    Ok(())
}

#[test]
fn first_serving_wins_and_fresh_entries_read_back_alike() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), false)?;
    s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
    s.mark_fetched("finance", &[1], 10)?;
    s.mark_fetched("finance", &[1], 20)?;
    assert_eq!(s.fetched("finance", 1)?, Some(10));
    assert_eq!(s.fetched("finance", 2)?, None);
    // From memory (just committed) and from disk (after reopening): the same.
    let cached = s
        .entry("tax", 0)?
        .map(|e| (e.entry, e.leaf_hash, e.cursors));
    drop(s);
    let s = SledStore::open(dir.path(), true)?;
    assert_eq!(
        s.entry("tax", 0)?
            .map(|e| (e.entry, e.leaf_hash, e.cursors)),
        cached
    );
    assert_eq!(s.fetched("finance", 1)?, Some(10));
    assert_eq!(s.stored_hashes("tax", &[0])?, vec![[100; HASH_LEN]]);
    Ok(())
}

#[test]
fn inbox_names_that_prefix_each_other_stay_apart() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), false)?;
    s.commit(&[entry("tax", 0, &[("fin", 1), ("finance", 1)])])?;
    assert_eq!(s.inbox_page("fin", 0, 10)?.len(), 1);
    assert_eq!(s.inbox_page("finance", 0, 10)?.len(), 1);
    Ok(())
}

/// Pages start anywhere inside a commit's run and stop at the limit.
#[test]
fn pages_cut_through_runs_of_several_commits() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), false)?;
    s.commit(&[
        entry("tax", 0, &[("finance", 1)]),
        entry("tax", 1, &[("finance", 2)]),
        entry("pbc", 0, &[("finance", 3)]),
    ])?;
    s.commit(&[
        entry("tax", 2, &[("finance", 4)]),
        entry("tax", 3, &[("finance", 5)]),
    ])?;
    for after in 0..6u64 {
        for limit in 1..7usize {
            let got: Vec<u64> = s
                .inbox_page("finance", after, limit)?
                .iter()
                .map(|i| i.cursor)
                .collect();
            let want: Vec<u64> = (after + 1..=5).take(limit).collect();
            assert_eq!(got, want, "after {after}, limit {limit}");
        }
    }
    let items = s.inbox_page("finance", 2, 2)?;
    assert_eq!(
        items
            .iter()
            .map(|i| (i.channel.as_str(), i.seq))
            .collect::<Vec<_>>(),
        [("pbc", 0), ("tax", 2)]
    );
    Ok(())
}

/// Answers and fetched marks cover exactly the positions recorded, and
/// a later serving never moves the first one.
#[test]
fn answer_and_fetched_runs_cover_exactly_their_positions() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), false)?;
    let mut receipt = entry("finance", 0, &[]);
    receipt.answers = vec![5, 2, 3, 7];
    receipt.hub_micros = 42;
    s.commit(&[receipt])?;
    for (cursor, answered) in [
        (1, false),
        (2, true),
        (3, true),
        (4, false),
        (5, true),
        (6, false),
        (7, true),
        (8, false),
    ] {
        let a = s.answer("finance", cursor)?;
        assert_eq!(a.is_some(), answered, "cursor {cursor}");
        if let Some(a) = a {
            assert_eq!(
                (a.seq, a.hub_micros, a.kind),
                (0, 42, AnswerKind::Acknowledged)
            );
        }
    }
    assert_eq!(s.answer("fin", 2)?, None);
    // In bulk, in any order, the same outcomes.
    let asked = [8, 7, 1, 2, 5, 3, 3, 4, 6];
    let bulk: Vec<bool> = s
        .answers("finance", &asked)?
        .iter()
        .map(Option::is_some)
        .collect();
    assert_eq!(
        bulk,
        [false, true, false, true, true, true, true, false, false]
    );
    assert!(s.answers("finance", &[])?.is_empty());
    // Served 3..5, then 1..6 again after a reconnect, then 9 (skipping).
    s.mark_fetched("finance", &[3, 4, 5], 10)?;
    s.mark_fetched("finance", &[1, 2, 3, 4, 5, 6], 20)?;
    s.mark_fetched("finance", &[9], 30)?;
    s.mark_fetched("finance", &[7, 8], 40)?;
    let got: Vec<Option<i64>> = (1..=10)
        .map(|c| s.fetched("finance", c))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        got,
        [
            Some(20),
            Some(20),
            Some(10),
            Some(10),
            Some(10),
            Some(20),
            Some(40),
            Some(40),
            Some(30),
            None
        ]
    );
    Ok(())
}

/// Many small commits to several inboxes: every position is found from
/// every starting point, whatever node boundaries the runs fall on.
#[test]
fn every_position_is_found_among_many_small_runs() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), false)?;
    let inboxes = ["finance", "fin", "tax", "political-legal"];
    let mut next = [0u64; 4];
    let mut seq = 0;
    let mut marked = 0;
    for round in 0..1500u64 {
        let mut batch = Vec::new();
        for _ in 0..(round % 3 + 1) {
            let mut to = Vec::new();
            for (i, inbox) in inboxes.iter().enumerate() {
                if !(seq + i as u64).is_multiple_of(5) {
                    next[i] += 1;
                    to.push((*inbox, next[i]));
                }
            }
            batch.push(entry("pbc", seq, &to));
            seq += 1;
        }
        s.commit(&batch)?;
        let served: Vec<u64> = (marked + 1..=next[0]).collect();
        s.mark_fetched("finance", &served, round as i64)?;
        marked = next[0];
    }
    for (i, inbox) in inboxes.iter().enumerate() {
        for after in 0..next[i] {
            let page = s.inbox_page(inbox, after, 2)?;
            let got: Vec<u64> = page.iter().map(|p| p.cursor).collect();
            let want: Vec<u64> = (after + 1..=next[i]).take(2).collect();
            assert_eq!(got, want, "{inbox} after {after}");
        }
    }
    for c in 1..=next[0] {
        assert!(s.fetched("finance", c)?.is_some(), "fetched {c}");
    }
    Ok(())
}

/// A reader following an inbox while commits and fetched marks keep
/// landing sees every position once, in order, as subscribers do. (With
/// runs keyed by their first position, found by iterating backwards,
/// sled 0.34 now and then returned an earlier run under concurrent
/// writes and a subscriber skipped a run.)
#[test]
fn a_reader_following_an_inbox_during_commits_misses_nothing()
-> Result<(), Box<dyn std::error::Error>> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir()?;
    let s = Arc::new(SledStore::open(dir.path(), false)?);
    let head = Arc::new(AtomicU64::new(0));
    const LAST: u64 = 10_000;
    let writer = {
        let (s, head) = (s.clone(), head.clone());
        std::thread::spawn(move || -> Result<(), StoreError> {
            let mut cursor = 0;
            let mut seq = 0;
            while cursor < LAST {
                let n = (seq % 3 + 1).min(LAST - cursor);
                let batch: Vec<NewEntry> = (0..n)
                    .map(|i| {
                        entry(
                            "pbc",
                            seq + i,
                            &[("finance", cursor + i + 1), ("tax", cursor + i + 1)],
                        )
                    })
                    .collect();
                s.apply(&batch)?;
                seq += n;
                cursor += n;
                head.store(cursor, Ordering::Release);
            }
            Ok(())
        })
    };
    let marker = {
        let (s, head) = (s.clone(), head.clone());
        std::thread::spawn(move || -> Result<(), StoreError> {
            let mut marked = 0;
            while marked < LAST {
                let to = head.load(Ordering::Acquire);
                let served: Vec<u64> = (marked + 1..=to).collect();
                s.mark_fetched("tax", &served, 1)?;
                marked = to;
            }
            Ok(())
        })
    };
    let mut cursor = 0;
    while cursor < LAST {
        let durable = head.load(Ordering::Acquire);
        for item in s.inbox_page("finance", cursor, 128)? {
            if item.cursor > durable {
                break;
            }
            assert_eq!(item.cursor, cursor + 1, "after {cursor}");
            // Position c holds entry c - 1 of pbc, as written.
            assert_eq!((item.channel.as_str(), item.seq), ("pbc", item.cursor - 1));
            cursor = item.cursor;
        }
    }
    writer.join().map_err(|_| "writer panicked")??;
    marker.join().map_err(|_| "marker panicked")??;
    Ok(())
}

/// A removed inbox run is reported, not skipped.
#[test]
fn pages_from_the_latest_positions_in_memory_match_the_database()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let total = INBOX_CACHE_LEN as u64 + 600;
    let pages_of = |s: &SledStore| -> Result<Vec<Vec<InboxItem>>, StoreError> {
        let mut pages = Vec::new();
        for after in [0, 1, 500, 599, 600, 601, total - 100, total - 1, total] {
            pages.push(s.inbox_page("finance", after, 300)?);
        }
        pages.push(s.inbox_page("pbc", total / 3 - 5, 300)?);
        Ok(pages)
    };
    let live = {
        let s = SledStore::open(dir.path(), false)?;
        let mut seq = 0;
        // Commits of 1 to 7 entries, some to another inbox too.
        while seq < total {
            let batch: Vec<NewEntry> = (seq..(seq + 1 + seq % 7).min(total))
                .map(|q| {
                    let mut to = vec![("finance", q + 1)];
                    if q % 3 == 0 {
                        to.push(("pbc", q / 3 + 1));
                    }
                    entry("tax", q, &to)
                })
                .collect();
            seq += batch.len() as u64;
            s.commit(&batch)?;
        }
        pages_of(&s)?
    };
    // Reopened: nothing in memory, every page read from the database.
    let read = pages_of(&SledStore::open(dir.path(), false)?)?;
    let cursors = |pages: &[Vec<InboxItem>]| -> Vec<Vec<(u64, String, u64)>> {
        pages
            .iter()
            .map(|p| {
                p.iter()
                    .map(|i| (i.cursor, i.channel.clone(), i.seq))
                    .collect()
            })
            .collect()
    };
    assert_eq!(cursors(&live), cursors(&read));
    // The pages are what was committed: position p holds seq p - 1.
    assert_eq!(live[3].first().map(|i| (i.cursor, i.seq)), Some((600, 599)));
    assert_eq!(live[3].len(), 300);
    assert_eq!(live[7].len(), 1);
    assert!(live[8].is_empty());
    Ok(())
}

#[test]
fn a_removed_inbox_run_is_reported() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), false)?;
    // Flushed one commit at a time, so that each is a run of its own.
    s.commit(&[
        entry("tax", 0, &[("finance", 1)]),
        entry("tax", 1, &[("finance", 2)]),
    ])?;
    s.raw_tree()?;
    s.commit(&[entry("tax", 2, &[("finance", 3)])])?;
    s.raw_tree()?;
    s.commit(&[entry("tax", 3, &[("finance", 4)])])?;
    s.raw_tree()?
        .remove(key(INBOX, "finance", Some(3)))?
        .ok_or("no run ends at position 3")?;
    s.raw_tree()?.flush()?;
    // The running store still serves what it committed from memory;
    // the next start reads what the disk holds.
    assert_eq!(s.inbox_page("finance", 0, 10)?.len(), 4);
    drop(s);
    let s = SledStore::open(dir.path(), false)?;
    for after in [0, 1, 2] {
        match s.inbox_page("finance", after, 10) {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("positions"), "{m}"),
            other => return Err(format!("after {after}: expected a gap, got {other:?}").into()),
        }
    }
    assert_eq!(s.inbox_page("finance", 3, 10)?.len(), 1);
    Ok(())
}

/// A flush merges an inbox's runs only up to a size, so that no sled node
/// of runs grows into a blob file; every position still reads back.
#[test]
fn merged_runs_stop_at_their_size() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open_flushing_every(dir.path(), true, Duration::from_secs(3600))?;
    for seq in 0..1000u64 {
        s.commit(&[entry("tax", seq, &[("finance", seq + 1)])])?;
    }
    let tree = s.raw_tree()?;
    let runs: Vec<sled::IVec> = tree
        .scan_prefix(b"i\0finance\0")
        .values()
        .collect::<Result<_, _>>()?;
    // 1000 positions of 13 bytes: more than one run, none much over 4 KiB.
    assert!(runs.len() > 1, "one run of {} bytes", runs[0].len());
    assert!(runs.iter().all(|r| r.len() <= 4 << 10), "a run too large");
    let page = s.inbox_page("finance", 0, 2000)?;
    assert_eq!(page.len(), 1000);
    assert!(
        page.iter()
            .zip(1..)
            .all(|(i, c)| i.cursor == c && i.seq == c - 1)
    );
    Ok(())
}

/// One commit of many positions to an inbox is kept as several runs of a
/// bounded size, and reads back whole.
#[test]
fn a_large_commit_is_cut_into_sized_runs() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), true)?;
    let batch: Vec<NewEntry> = (0..5000u64)
        .map(|seq| entry("tax", seq, &[("finance", seq + 1)]))
        .collect();
    s.commit(&batch)?;
    let runs: Vec<sled::IVec> = s
        .raw_tree()?
        .scan_prefix(b"i\0finance\0")
        .values()
        .collect::<Result<_, _>>()?;
    // One stretch would hold them all in a few bytes: cut by positions.
    assert!(runs.len() > 1);
    assert!(runs.iter().all(|r| r.len() <= 4 << 10), "a run too large");
    drop(s);
    let s = SledStore::open(dir.path(), true)?;
    let page = s.inbox_page("finance", 0, 6000)?;
    assert_eq!(page.len(), 5000);
    assert!(
        page.iter()
            .zip(1..)
            .all(|(i, c)| i.cursor == c && i.seq == c - 1)
    );
    assert_eq!(s.inbox_page("finance", 500, 3)?.len(), 3);
    Ok(())
}
