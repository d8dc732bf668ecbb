use super::*;
use crate::store::{AnswerKind, NewEntry, SledStore, StoredEntry};
use prost::Message;
use std::cell::Cell;
use tongbao_proto::canonical::leaf_hash;
use tongbao_proto::merkle::stored_hashes_for_record;
use tongbao_proto::pb;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A store holding `n` well-formed entries of channel "tax", and its head.
fn chain(
    n: u64,
) -> Result<(tempfile::TempDir, SledStore, ChannelHead), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), true)?;
    let mut stored: Vec<Hash> = Vec::new();
    let mut previous = GENESIS_PREVIOUS;
    for seq in 0..n {
        let entry = pb::Entry {
            channel: "tax".into(),
            seq,
            previous_leaf_hash: previous.to_vec(),
            ..Default::default()
        };
        let leaf = leaf_hash(&entry);
        let tree_hashes = stored_hashes_for_record(seq, leaf, &stored)?;
        stored.extend(tree_hashes.iter().copied());
        store.commit(&[NewEntry {
            channel: "tax".into(),
            seq,
            message_id: format!("m{seq}"),
            message_digest: [0; 32],
            leaf_hash: leaf,
            hub_micros: 1,
            shared: Arc::new(StoredEntry {
                encoded: entry.encode_to_vec().into(),
                entry,
                leaf_hash: leaf,
                cursors: Vec::new(),
            }),
            answers: Vec::new(),
            answer_kind: AnswerKind::Acknowledged,
            audit_scopes: Vec::new(),
            tree_hashes,
        }])?;
        previous = leaf;
    }
    let head = ChannelHead {
        next_seq: n,
        last_leaf_hash: previous,
        last_hub_micros: 1,
    };
    Ok((dir, store, head))
}

fn heads(head: ChannelHead) -> BTreeMap<String, ChannelHead> {
    BTreeMap::from([("tax".to_string(), head)])
}

#[test]
fn a_stopping_hub_ends_the_check_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), true)?;
    // A channel said to hold entries the store lacks: a check that ran
    // would report them missing; a stopping hub's check never looks.
    let missing = heads(ChannelHead {
        next_seq: 3,
        last_leaf_hash: [0; 32],
        last_hub_micros: 0,
    });
    let ended = check_all(&store, 1, &missing, || true);
    assert!(matches!(ended, Err(Ended::Stopping)), "{ended:?}");
    // Serving, the same check names what it found.
    match check_all(&store, 1, &missing, || false) {
        Err(Ended::Failed(e)) => assert_eq!(e.to_string(), "channel tax: entry 0 is missing"),
        other => return Err(format!("not refused: {other:?}").into()),
    }
    Ok(())
}

#[test]
fn a_pass_goes_on_from_where_the_last_start_stopped() -> TestResult {
    let (_dir, store, head) = chain(25)?;
    // The hub stops after ten entries (asked once before the channel).
    let asked = Cell::new(0);
    let stop_after_ten = || {
        asked.set(asked.get() + 1);
        asked.get() > 10
    };
    let ended = check_all(&store, 1, &heads(head), stop_after_ten);
    assert!(matches!(ended, Err(Ended::Stopping)), "{ended:?}");
    let place = load_place(&store, "tax").ok_or("no place saved")?;
    assert_eq!((place.pass, place.next_seq), (1, 10));
    // The next start checks only the rest, then nothing more in this pass.
    assert_eq!(check_all(&store, 1, &heads(head), || false)?, 15);
    assert_eq!(check_all(&store, 1, &heads(head), || false)?, 0);
    // A new pass checks everything again.
    assert_eq!(check_all(&store, 2, &heads(head), || false)?, 25);
    Ok(())
}

#[test]
fn a_place_that_does_not_chain_is_found() -> TestResult {
    let (_dir, store, head) = chain(25)?;
    save_place(
        &store,
        "tax",
        Place {
            pass: 1,
            next_seq: 10,
            previous: [9; 32],
        },
    );
    match check_all(&store, 1, &heads(head), || false) {
        Err(Ended::Failed(e)) => {
            assert_eq!(
                e.to_string(),
                "channel tax: entry 10 does not chain to entry 9"
            )
        }
        other => return Err(format!("not refused: {other:?}").into()),
    }
    // A place saved at the very end must still be the head's last leaf.
    save_place(
        &store,
        "tax",
        Place {
            pass: 1,
            next_seq: 25,
            previous: [9; 32],
        },
    );
    let ended = check_all(&store, 1, &heads(head), || false);
    assert!(
        matches!(
            ended,
            Err(Ended::Failed(LogError::LeafMismatch { seq: 24, .. }))
        ),
        "{ended:?}"
    );
    Ok(())
}

#[test]
fn entries_checked_before_and_gone_now_are_found() -> TestResult {
    let (_dir, store, head) = chain(25)?;
    assert_eq!(check_all(&store, 1, &heads(head), || false)?, 25);
    let shorter = ChannelHead {
        next_seq: 20,
        ..head
    };
    match check_all(&store, 1, &heads(shorter), || false) {
        Err(Ended::Failed(e)) => assert_eq!(e.to_string(), "channel tax: entry 20 is missing"),
        other => return Err(format!("not refused: {other:?}").into()),
    }
    Ok(())
}

#[test]
fn a_pass_begins_a_day_after_the_last_one_ended() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), true)?;
    let (_stop, serving) = watch::channel(false);
    let (_stop, stopping) = watch::channel(true);
    assert_eq!(begin_pass(&store, true, &serving), Some(1));
    // Going on: the same pass, at every start.
    assert_eq!(begin_pass(&store, true, &serving), Some(1));
    let day_ago = tongbao_proto::now_micros() - PASS_EVERY.as_micros() as i64 - 1_000_000;
    save_pass(
        &store,
        Pass {
            number: 1,
            ended_micros: day_ago,
        },
    );
    assert_eq!(begin_pass(&store, false, &serving), Some(2));
    // Just ended: a running hub's next pass waits, and a stopping hub
    // does not; a start begins the next pass at once.
    save_pass(
        &store,
        Pass {
            number: 2,
            ended_micros: tongbao_proto::now_micros(),
        },
    );
    assert_eq!(begin_pass(&store, false, &stopping), None);
    assert_eq!(load_pass(&store).map(|p| p.number), Some(2));
    assert_eq!(begin_pass(&store, true, &stopping), Some(3));
    Ok(())
}
