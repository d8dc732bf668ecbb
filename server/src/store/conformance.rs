//! The [`Store`] contract as tests, for every backend: each function takes
//! a fresh store and checks one part of the contract through the trait
//! alone (the sled and PostgreSQL stores' tests call them).

use super::{AnswerKind, NewEntry, Store, StoredEntry};
use prost::Message as _;
use std::sync::Arc;
use tongbao_proto::canonical::message_digest;
use tongbao_proto::{HASH_LEN, pb};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The message of entry `seq` of `channel`: sent by the channel's unit,
/// message id `m{seq}`.
pub fn message(channel: &str, seq: u64) -> pb::Message {
    pb::Message {
        sender: channel.into(),
        message_id: format!("m{seq}"),
        ..Default::default()
    }
}

/// An entry of `channel` delivered to `inboxes` at the given positions.
pub fn entry(channel: &str, seq: u64, inboxes: &[(&str, u64)]) -> NewEntry {
    let e = pb::Entry {
        channel: channel.into(),
        seq,
        recipients: inboxes.iter().map(|(i, _)| (*i).to_string()).collect(),
        hub_micros: seq as i64 + 1,
        message: Some(pb::SignedMessage {
            message: Some(message(channel, seq)),
            signature: None,
        }),
        ..Default::default()
    };
    let leaf = [(seq as u8).wrapping_add(100); HASH_LEN];
    NewEntry {
        channel: channel.into(),
        seq,
        message_id: format!("m{seq}"),
        message_digest: message_digest(&message(channel, seq)),
        leaf_hash: leaf,
        hub_micros: seq as i64 + 1,
        shared: Arc::new(StoredEntry {
            encoded: e.encode_to_vec().into(),
            entry: e.clone(),
            leaf_hash: leaf,
            cursors: inboxes.iter().map(|(_, c)| *c).collect(),
        }),
        answers: Vec::new(),
        answer_kind: AnswerKind::Acknowledged,
        audit_scopes: Vec::new(),
        tree_hashes: vec![leaf],
    }
}

/// Appends, then reads back entries, heads, inboxes, messages, answers,
/// fetched marks, stored hashes, audit rows, checkpoints and the registry.
pub fn appends_read_back(store: &dyn Store) -> TestResult {
    assert!(store.channel_heads()?.is_empty());
    assert_eq!(store.load_registry_bytes()?, None);
    let mut first = entry("tax", 0, &[("finance", 1), ("police", 1)]);
    first.audit_scopes = vec!["fund".into()];
    store.commit(&[first, entry("tax", 1, &[("finance", 2)])])?;
    let mut receipt = entry("finance", 0, &[]);
    receipt.answers = vec![2, 1, 2];
    receipt.answer_kind = AnswerKind::Exception;
    store.commit(&[receipt])?;

    let heads = store.channel_heads()?;
    assert_eq!(heads.get("tax").map(|h| h.next_seq), Some(2));
    assert_eq!(heads.get("tax").map(|h| h.last_hub_micros), Some(2));
    assert_eq!(heads.get("finance").map(|h| h.next_seq), Some(1));
    let inboxes = store.inbox_heads()?;
    assert_eq!(inboxes.get("finance"), Some(&2));
    assert_eq!(inboxes.get("police"), Some(&1));

    let e = store.entry("tax", 1)?.ok_or("entry tax:1 is missing")?;
    assert_eq!((e.entry.seq, e.cursors.clone()), (1, vec![2]));
    assert_eq!(e.leaf_hash, [101; HASH_LEN]);
    assert!(store.entry("tax", 2)?.is_none());
    let m = store.message("tax", "m1")?.ok_or("message m1 is missing")?;
    assert_eq!(
        (m.seq, m.message_digest),
        (1, message_digest(&message("tax", 1)))
    );
    assert!(store.message("finance", "m1")?.is_none());

    let page = store.inbox_page("finance", 0, 10)?;
    let got: Vec<(u64, &str, u64)> = page
        .iter()
        .map(|i| (i.cursor, i.channel.as_str(), i.seq))
        .collect();
    assert_eq!(got, vec![(1, "tax", 0), (2, "tax", 1)]);
    assert_eq!(store.inbox_page("finance", 1, 10)?.len(), 1);
    assert_eq!(store.inbox_page("finance", 0, 1)?.len(), 1);
    assert!(store.inbox_page("finance", u64::MAX, 10)?.is_empty());

    let answers = store.answers("finance", &[2, 3, 1])?;
    assert_eq!(answers.len(), 3);
    assert!(answers[1].is_none());
    let a = answers[0].clone().ok_or("position 2 unanswered")?;
    assert_eq!((a.kind, a.seq, a.hub_micros), (AnswerKind::Exception, 0, 1));

    // Asked together, as the writer asks for a batch: the same answers,
    // in the order asked, repeats and misses included.
    let asked = [
        ("tax", "m1"),
        ("finance", "m1"),
        ("tax", "m0"),
        ("tax", "m1"),
    ];
    let together = store.messages(&asked)?;
    let alone: Vec<_> = asked
        .iter()
        .map(|(s, m)| store.message(s, m))
        .collect::<Result<_, _>>()?;
    assert_eq!(together, alone);
    assert_eq!(
        together
            .iter()
            .map(|m| m.map(|m| m.seq))
            .collect::<Vec<_>>(),
        vec![Some(1), None, Some(0), Some(1)]
    );
    assert!(store.messages(&[])?.is_empty());
    let asked: [(&str, &[u64]); 4] = [
        ("finance", &[2, 3, 1, 2]),
        ("police", &[1]),
        ("finance", &[]),
        ("tax", &[1]),
    ];
    let together = store.answers_of(&asked)?;
    for ((inbox, cursors), got) in asked.iter().zip(&together) {
        assert_eq!(got, &store.answers(inbox, cursors)?, "{inbox} {cursors:?}");
    }
    assert_eq!(together[0].iter().filter(|a| a.is_some()).count(), 3);
    assert_eq!(together.len(), 4);
    assert!(store.answers_of(&[])?.is_empty());

    store.mark_fetched("police", &[1], 50)?;
    store.mark_fetched("police", &[1], 99)?;
    assert_eq!(store.fetched("police", 1)?, Some(50), "first serving wins");
    assert_eq!(store.fetched_many("police", &[2, 1])?, vec![None, Some(50)]);

    assert_eq!(store.stored_hashes("tax", &[0])?, vec![[100; HASH_LEN]]);
    assert!(
        store.stored_hashes("tax", &[99]).is_err(),
        "a missing hash is an error"
    );

    let rows = store.audit_scope("fund", 0, i64::MAX, None, 10)?;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].channel.as_str(), rows[0].seq), ("tax", 0));
    assert!(store.audit_scope("fund", 5, i64::MAX, None, 10)?.is_empty());
    assert!(
        store
            .audit_scope("fund", 0, i64::MAX, rows.first(), 10)?
            .is_empty()
    );

    store.save_checkpoints(&[("tax", "note 2"), ("finance", "note 1")])?;
    store.save_checkpoints(&[("tax", "note 3")])?;
    let cps = store.checkpoints()?;
    assert_eq!(cps.get("tax").map(String::as_str), Some("note 3"));
    assert_eq!(cps.len(), 2);

    store.save_registry_bytes(b"one")?;
    store.save_registry_bytes(b"two")?;
    assert_eq!(store.load_registry_bytes()?, Some(b"two".to_vec()));
    Ok(())
}

/// Files rows of mechanism `fund` for entries 0..20 of two channels (hub
/// time seq + 1, so the two channels' rows share each time) and a few of
/// another mechanism; [`rows_past_are_counted`] then checks the counts.
pub fn audit_rows_past(store: &dyn Store) -> TestResult {
    for (channel, inbox) in [("tax", "police"), ("finance", "pbc")] {
        let entries: Vec<NewEntry> = (0..20)
            .map(|seq| {
                let mut e = entry(channel, seq, &[(inbox, seq + 1)]);
                e.audit_scopes = vec![if seq % 4 == 3 { "other" } else { "fund" }.into()];
                e
            })
            .collect();
        store.commit(&entries)?;
    }
    rows_past_are_counted(store)
}

/// [`Store::audit_row_past`] against the rows sorted here by (hub time,
/// seq, channel), for windows and skips on both sides of every count.
pub fn rows_past_are_counted(store: &dyn Store) -> TestResult {
    let mut rows: Vec<(i64, u64, &str)> = Vec::new();
    for channel in ["tax", "finance"] {
        rows.extend(
            (0..20u64)
                .filter(|s| s % 4 != 3)
                .map(|s| (s as i64 + 1, s, channel)),
        );
    }
    counted_as_modelled(
        store,
        &rows,
        &[
            (0, i64::MAX),
            (0, 1),
            (1, 2),
            (3, 17),
            (17, 3),
            (5, 5),
            (21, i64::MAX),
        ],
    )?;
    for (since, until) in [(0, i64::MAX), (3, 17)] {
        assert_eq!(store.audit_row_past("nobody", since, until, 0)?, None);
    }
    assert_eq!(store.audit_row_past("other", 0, i64::MAX, 9)?, Some(20));
    assert_eq!(store.audit_row_past("other", 0, i64::MAX, 10)?, None);
    Ok(())
}

/// [`Store::audit_row_past`] of mechanism `fund` against `rows` (hub time,
/// seq, channel; any order) sorted as the index keys them, for each
/// window and every skip up to past its end.
pub fn counted_as_modelled(
    store: &dyn Store,
    rows: &[(i64, u64, &str)],
    windows: &[(i64, i64)],
) -> TestResult {
    let mut rows = rows.to_vec();
    rows.sort_unstable();
    for &(since, until) in windows {
        let within: Vec<i64> = rows
            .iter()
            .map(|r| r.0)
            .filter(|at| (since..until).contains(at))
            .collect();
        for skip in 0..=within.len() + 2 {
            assert_eq!(
                store.audit_row_past("fund", since, until, skip)?,
                within.get(skip).copied(),
                "fund in [{since}, {until}) past {skip}"
            );
        }
    }
    Ok(())
}
