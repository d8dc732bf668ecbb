//! Verifiable channels: signed checkpoints, inclusion and consistency
//! proofs, and a hub that stops on tampered data: at start for what no
//! checkpoint covers, by its background check for the rest.

use std::time::Duration;
use tongbao_proto::checkpoint::{NoteVerifier, open_checkpoint};
use tongbao_proto::merkle::{check_record, check_records, check_tree};
use tongbao_proto::pb::{self, log_client::LogClient};
use tongbao_proto::{Hash, canonical};
use tongbao_tests::{
    BoxError, HubProcess, StoppedAt, TestHub, TestPki, TestResult, note, raw_channel,
};
use tonic::Code;

fn hash(v: &[u8]) -> Result<Hash, BoxError> {
    Ok(v.try_into()?)
}

fn proof(v: &[Vec<u8>]) -> Result<Vec<Hash>, BoxError> {
    v.iter().map(|h| hash(h)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_is_provably_in_a_signed_checkpoint() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    for i in 0..20 {
        let to = if i % 3 == 0 {
            "civil-affairs"
        } else {
            "finance"
        };
        tax.push(note(&format!("n{i}")).to_units([to])).await?;
    }
    let mut log = LogClient::new(raw_channel(&t.pki, "finance", t.addr).await?);
    let key = log.get_log_key(pb::GetLogKeyRequest {}).await?.into_inner();
    let verifier = NoteVerifier::from_vkey(&key.vkey)?;
    // pki init pinned this very key in every client.toml.
    let pinned = t.pki.unit_config("finance", t.addr)?.hub_key;
    assert_eq!(pinned.as_deref(), Some(key.vkey.as_str()));
    let cp = log
        .get_checkpoint(pb::GetCheckpointRequest {
            channel: "tax".into(),
        })
        .await?
        .into_inner();
    let (first, _) = open_checkpoint(&cp.note, &verifier, &[])?;
    assert_eq!((first.size, first.origin.as_str()), (20, "tongbao/tax"));

    let finance = t.unit("finance").await?;
    for e in finance.pull(0, 100).await?.entries {
        let p = log
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                channel: "tax".into(),
                seq: e.seq(),
                tree_size: 0,
            })
            .await?
            .into_inner();
        // The proof is for the checkpoint it comes with, and for the leaf
        // the client computes itself from the entry.
        let (c, _) = open_checkpoint(&p.checkpoint, &verifier, &[])?;
        assert_eq!(c.size, p.tree_size);
        assert_eq!(canonical::leaf_hash(&e.entry), e.leaf_hash);
        check_record(&proof(&p.proof)?, c.size, &c.root, e.seq(), &e.leaf_hash)?;
        // A proof for another position does not verify this leaf.
        assert!(
            check_record(
                &proof(&p.proof)?,
                c.size,
                &c.root,
                e.seq() ^ 1,
                &e.leaf_hash
            )
            .is_err()
        );
    }

    // The channel grows; the new checkpoint provably extends the first.
    for i in 20..27 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    let c = log
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            channel: "tax".into(),
            old_size: first.size,
            new_size: 0,
        })
        .await?
        .into_inner();
    let (second, _) = open_checkpoint(&c.checkpoint, &verifier, &[])?;
    assert_eq!(second.size, 27);
    check_tree(
        &proof(&c.proof)?,
        second.size,
        &second.root,
        first.size,
        &first.root,
    )?;
    let mut forked = first.root;
    forked[0] ^= 1;
    assert!(
        check_tree(
            &proof(&c.proof)?,
            second.size,
            &second.root,
            first.size,
            &forked
        )
        .is_err()
    );

    // Leaf hashes of a range match the entries.
    let leaves = log
        .get_leaf_hashes(pb::GetLeafHashesRequest {
            channel: "tax".into(),
            start: 1,
            count: 2,
        })
        .await?
        .into_inner();
    assert_eq!(
        leaves.leaf_hashes,
        [
            tax.get_entry("tax", 1).await?.leaf_hash.to_vec(),
            tax.get_entry("tax", 2).await?.leaf_hash.to_vec()
        ]
    );

    // Refusals.
    let err = log
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            channel: "tax".into(),
            seq: 0,
            tree_size: 0,
        })
        .await
        .err()
        .ok_or("proof of an entry finance may not see")?;
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let err = log
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            channel: "tax".into(),
            old_size: 5,
            new_size: 999,
        })
        .await
        .err()
        .ok_or("proof to a size that does not exist")?;
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
    let err = log
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            channel: "tax".into(),
            old_size: 9,
            new_size: 5,
        })
        .await
        .err()
        .ok_or("shrinking proof")?;
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
    let err = log
        .get_checkpoint(pb::GetCheckpointRequest {
            channel: "nobody".into(),
        })
        .await
        .err()
        .ok_or("checkpoint of a missing channel")?;
    assert_eq!(err.code(), Code::NotFound, "{err}");
    t.stop().await
}

/// A request for inclusion proofs of `seqs` in `tax` at `tree_size`.
fn proofs_of(seqs: &[u64], tree_size: u64, multiproof: bool) -> pb::GetInclusionProofsRequest {
    pb::GetInclusionProofsRequest {
        channel: "tax".into(),
        seqs: seqs.to_vec(),
        tree_size,
        multiproof,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_multiproof_proves_many_entries_and_bad_requests_are_refused() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    // Seq 0 is for civil-affairs only; 1..12 for finance.
    tax.push(note("n0").to_units(["civil-affairs"])).await?;
    for i in 1..12 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    let mut log = LogClient::new(raw_channel(&t.pki, "finance", t.addr).await?);
    let key = log.get_log_key(pb::GetLogKeyRequest {}).await?.into_inner();
    let verifier = NoteVerifier::from_vkey(&key.vkey)?;
    let cp = log
        .get_checkpoint(pb::GetCheckpointRequest {
            channel: "tax".into(),
        })
        .await?
        .into_inner();
    let (cp, _) = open_checkpoint(&cp.note, &verifier, &[])?;
    assert_eq!(cp.size, 12);
    // Entries past the checkpoint exist but are not in its tree.
    for i in 12..14 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }

    let finance = t.unit("finance").await?;
    let seqs = [1, 2, 3, 4, 5, 9, 11];
    let mut leaves = Vec::new();
    for &seq in &seqs {
        leaves.push((seq, finance.get_entry("tax", seq).await?.leaf_hash));
    }
    let r = log
        .get_inclusion_proofs(proofs_of(&seqs, cp.size, true))
        .await?
        .into_inner();
    assert!(r.proofs.is_empty(), "per-seq proofs sent with a multiproof");
    let multiproof = proof(&r.multiproof)?;
    check_records(&multiproof, cp.size, &cp.root, &leaves)?;
    // Fewer hashes than the seven audit paths together.
    let per_seq = log
        .get_inclusion_proofs(proofs_of(&seqs, cp.size, false))
        .await?
        .into_inner();
    assert!(per_seq.multiproof.is_empty());
    let paths: usize = per_seq.proofs.iter().map(|p| p.proof.len()).sum();
    assert!(multiproof.len() < paths, "{} vs {paths}", multiproof.len());
    // Tampered in transit: any hash changed, dropped or added is refused.
    for i in 0..multiproof.len() {
        let mut bad = multiproof.clone();
        bad[i][7] ^= 1;
        assert!(check_records(&bad, cp.size, &cp.root, &leaves).is_err());
        let mut short = multiproof.clone();
        short.remove(i);
        assert!(check_records(&short, cp.size, &cp.root, &leaves).is_err());
    }
    let mut long = multiproof.clone();
    long.push(cp.root);
    assert!(check_records(&long, cp.size, &cp.root, &leaves).is_err());

    // Unsorted and repeated seqs: the multiproof's order is the caller's job.
    for bad in [&[4, 2][..], &[3, 3], &[]] {
        let err = log
            .get_inclusion_proofs(proofs_of(bad, cp.size, true))
            .await
            .err()
            .ok_or("multiproof of badly ordered seqs")?;
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err}");
    }
    let err = log
        .get_inclusion_proofs(proofs_of(&[5, 2], cp.size, true))
        .await
        .err()
        .ok_or("multiproof of unsorted seqs")?;
    assert!(err.message().contains("strictly increasing"), "{err}");
    // Beyond the tree, beyond the channel, or not one's own: the same
    // answer as per-seq proofs give.
    for (bad, code) in [
        (&[3, 12][..], Code::OutOfRange),
        (&[3, 999], Code::NotFound),
        (&[0, 3], Code::PermissionDenied),
    ] {
        for multiproof in [false, true] {
            let err = log
                .get_inclusion_proofs(proofs_of(bad, cp.size, multiproof))
                .await
                .err()
                .ok_or("proof of an entry outside the tree")?;
            assert_eq!(err.code(), code, "{bad:?} multiproof={multiproof}: {err}");
        }
    }
    let err = log
        .get_inclusion_proofs(proofs_of(&[3], 999, true))
        .await
        .err()
        .ok_or("multiproof for a size that does not exist")?;
    assert_eq!(err.code(), Code::OutOfRange, "{err}");

    // The client proves a whole page with multiproofs, and entries in any
    // order, repeats included.
    let page = finance.pull(0, 100).await?;
    assert_eq!(page.entries.len(), 13);
    let (e2, e9) = (&page.entries[1], &page.entries[8]);
    finance.prove_included(&[e9, e2, e9]).await?;
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_on_a_cadence_and_survive_restart() -> TestResult {
    const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = tongbao_client::Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    for i in 0..5 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    let mut log = LogClient::new(raw_channel(&pki, "finance", hub.addr).await?);
    let vkey = log
        .get_log_key(pb::GetLogKeyRequest {})
        .await?
        .into_inner()
        .vkey;
    // Nobody asks for a checkpoint: the cadence signs size 5 by itself.
    // What the hub stored shows it (asked, the hub would sign one there and
    // then). Its database is read with the hub stopped, so the hub is
    // stopped and started again on the same data until the cadence has run.
    let mut hub = hub;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        hub.kill()?;
        if stored_checkpoint_size(&pki, "tax")? == Some(5) {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err("the cadence never signed a checkpoint of size 5".into());
        }
        hub = HubProcess::start(&pki, HUB)?;
    }
    let hub = HubProcess::start(&pki, HUB)?;
    let mut log = LogClient::new(raw_channel(&pki, "finance", hub.addr).await?);
    let again = log
        .get_log_key(pb::GetLogKeyRequest {})
        .await?
        .into_inner()
        .vkey;
    assert_eq!(vkey, again, "the hub key changed across a restart");
    let cp = log
        .get_checkpoint(pb::GetCheckpointRequest {
            channel: "tax".into(),
        })
        .await?
        .into_inner();
    assert_eq!(cp.size, 5);
    hub.kill()?;
    Ok(())
}

/// Starts the hub on tampered data and expects it to stop, failing, at
/// the moment docs/operations.md ("Starting and stopping") says: at start
/// for what no checkpoint covers (and for a checkpoint the stored tree
/// does not match), while serving (the background check of every entry)
/// for entries a checkpoint covers; with a message naming what failed.
fn stops_the_hub(pki: &TestPki, at: StoppedAt, words: &[&str]) -> TestResult {
    let stopped = HubProcess::stopped_by_itself(
        pki,
        env!("CARGO_BIN_EXE_tongbao-test-hub"),
        &pki.path().join("data"),
        Duration::from_secs(60),
    )?;
    assert_eq!(stopped.at, at, "{:?}", stopped.stderr);
    for w in words {
        assert!(
            stopped.stderr.contains(w),
            "{:?} should say {w:?}",
            stopped.stderr
        );
    }
    Ok(())
}

/// A stopped hub's data with 4 entries in tax's channel, checkpointed.
async fn checkpointed_data() -> Result<TestPki, BoxError> {
    const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = tongbao_client::Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    for i in 0..4 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    let mut log = LogClient::new(raw_channel(&pki, "finance", hub.addr).await?);
    log.get_checkpoint(pb::GetCheckpointRequest {
        channel: "tax".into(),
    })
    .await?;
    hub.kill()?;
    Ok(pki)
}

/// The size of the checkpoint a stopped hub stored for `channel`.
fn stored_checkpoint_size(pki: &TestPki, channel: &str) -> Result<Option<u64>, BoxError> {
    use tongbao_server::store::Store;
    let store = tongbao_server::store::SledStore::open(&pki.path().join("data"), true)?;
    let Some(note) = store.checkpoints()?.remove(channel) else {
        return Ok(None);
    };
    let text = tongbao_proto::checkpoint::parse_note(&note)?.text;
    Ok(Some(
        tongbao_proto::checkpoint::Checkpoint::parse_body(&text)?.size,
    ))
}

/// Edits the stored data of a stopped hub directly.
fn tamper(
    pki: &TestPki,
    edit: impl FnOnce(&tongbao_server::store::SledStore) -> TestResult,
) -> TestResult {
    let store = tongbao_server::store::SledStore::open(&pki.path().join("data"), true)?;
    edit(&store)?;
    store.raw_tree()?.flush()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_body_stops_the_hub() -> TestResult {
    let pki = checkpointed_data().await?;
    tamper(&pki, |s| rewrite_body(s, "tax", 2))?;
    stops_the_hub(
        &pki,
        StoppedAt::WhileServing,
        &["background check", "channel tax", "entry 2", "altered"],
    )
}

/// One byte of an entry's record changed in its segment file, as a disk
/// or an intruder would change it: the background check finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_byte_in_an_entry_segment_stops_the_hub() -> TestResult {
    let pki = checkpointed_data().await?;
    let (file, offset, len) = {
        let store = tongbao_server::store::SledStore::open(&pki.path().join("data"), true)?;
        store.raw_entry_place("tax", 2)?.ok_or("no place")?
    };
    let mut bytes = std::fs::read(&file)?;
    let record = bytes
        .get_mut(offset as usize..(offset + len) as usize)
        .ok_or("the place is beyond the segment")?;
    // The subject "n2": still a well-formed entry, saying something else.
    let at = record
        .windows(2)
        .position(|w| w == b"n2")
        .ok_or("the subject is not in the record")?;
    record[at] ^= 0x01;
    std::fs::write(&file, &bytes)?;
    stops_the_hub(
        &pki,
        StoppedAt::WhileServing,
        &["background check", "channel tax", "entry 2", "altered"],
    )
}

/// One recipient's name changed in the recipient set the database keeps
/// once for every entry sent to it: each such entry now reads as sent to
/// someone else, which its leaf hash refutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_recipient_set_stops_the_hub() -> TestResult {
    let pki = checkpointed_data().await?;
    tamper(&pki, |s| {
        // The set's bytes: field 4 of the entry, "finance" alone.
        let set = [&[0x22, 7][..], b"finance"].concat();
        let tree = s.raw_tree()?;
        let key = tree
            .iter()
            .find_map(|kv| kv.ok().filter(|(_, v)| v.as_ref() == set.as_slice()))
            .ok_or("no recipient set of finance")?
            .0;
        tree.insert(key, [&[0x22, 7][..], b"fimance"].concat())?;
        Ok(())
    })?;
    stops_the_hub(
        &pki,
        StoppedAt::WhileServing,
        &["background check", "channel tax", "entry 0", "altered"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_entries_stop_the_hub() -> TestResult {
    let pki = checkpointed_data().await?;
    tamper(&pki, |s| {
        // The records only: each place keeps its own tree hashes.
        let a = s.raw_entry_record("tax", 1)?.ok_or("no entry")?;
        let b = s.raw_entry_record("tax", 2)?.ok_or("no entry")?;
        s.raw_replace_entry_record("tax", 1, &b)?;
        s.raw_replace_entry_record("tax", 2, &a)?;
        Ok(())
    })?;
    stops_the_hub(&pki, StoppedAt::WhileServing, &["channel tax", "entry 1"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_entry_stops_the_hub() -> TestResult {
    let pki = checkpointed_data().await?;
    tamper(&pki, |s| {
        // Its place only: the channel's runs of places rewritten without it.
        s.raw_remove_entry_places("tax", |seq| seq == 1)?;
        Ok(())
    })?;
    // The entry's place names its tree hashes too: without them the
    // stored tree no longer matches the checkpoint, which the start checks.
    stops_the_hub(
        &pki,
        StoppedAt::Start,
        &["refusing to start", "channel tax", "stored hash", "missing"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_channel_stops_the_hub() -> TestResult {
    let pki = checkpointed_data().await?;
    tamper(&pki, |s| {
        let tree = s.raw_tree()?;
        // Drop the last entry and rewind the channel head to entry 2, as a
        // careful operator rewriting history would.
        let prev = s.raw_entry_record("tax", 2)?.ok_or("no entry")?;
        s.raw_remove_entry_places("tax", |seq| seq >= 3)?;
        let mut head = 3u64.to_be_bytes().to_vec();
        head.extend_from_slice(&prev[..32]);
        head.extend_from_slice(&0u64.to_be_bytes());
        tree.insert(b"c\0tax", head)?;
        Ok(())
    })?;
    stops_the_hub(
        &pki,
        StoppedAt::Start,
        &[
            "refusing to start",
            "channel tax",
            "covers 4 entries",
            "only 3",
        ],
    )
}

/// Rewrites the body of `channel`'s entry `seq` in a stopped hub's store,
/// keeping its recorded leaf hash.
fn rewrite_body(store: &tongbao_server::store::SledStore, channel: &str, seq: u64) -> TestResult {
    use prost::Message;
    let v = store.raw_entry_record(channel, seq)?.ok_or("no entry")?;
    let (before, encoded) =
        tongbao_server::store::SledStore::split_entry_record(&v).ok_or("bad record")?;
    let mut entry = pb::Entry::decode(encoded)?;
    if let Some(m) = entry.message.as_mut().and_then(|m| m.message.as_mut()) {
        m.body = b"rewritten history".to_vec().into();
    }
    let mut value = before.to_vec();
    value.extend(entry.encode_to_vec());
    store.raw_replace_entry_record(channel, seq, &value)?;
    Ok(())
}

/// Entries after the latest stored checkpoint (as a crash between an
/// append and the next checkpoint leaves them) are checked at start: the
/// hub serves on them untouched, and refuses to start once one of them
/// was altered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_tail_is_refused_at_start() -> TestResult {
    use tongbao_server::store::Store;
    const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");
    let pki = checkpointed_data().await?;
    let data = pki.path().join("data");
    let older = {
        let store = tongbao_server::store::SledStore::open(&data, true)?;
        store.checkpoints()?.remove("tax").ok_or("no checkpoint")?
    };
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = tongbao_client::Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    for i in 4..6 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    hub.kill()?;
    let keep_older = |s: &tongbao_server::store::SledStore| -> TestResult {
        s.save_checkpoints(&[("tax", &older)])?;
        Ok(())
    };
    tamper(&pki, keep_older)?;
    assert_eq!(stored_checkpoint_size(&pki, "tax")?, Some(4));
    // Untouched, the tail 4..6 checks out and is served.
    let hub = HubProcess::start(&pki, HUB)?;
    let mut log = LogClient::new(raw_channel(&pki, "finance", hub.addr).await?);
    let cp = log
        .get_checkpoint(pb::GetCheckpointRequest {
            channel: "tax".into(),
        })
        .await?
        .into_inner();
    assert_eq!(cp.size, 6);
    hub.kill()?;
    tamper(&pki, |s| {
        keep_older(s)?;
        rewrite_body(s, "tax", 5)
    })?;
    stops_the_hub(
        &pki,
        StoppedAt::Start,
        &["refusing to start", "channel tax", "entry 5", "altered"],
    )
}

/// The background check that finds an altered entry turns health to
/// NOT_SERVING as the hub stops, and the process exits failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_check_stops_serving_on_altered_data() -> TestResult {
    use futures::StreamExt;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let pki = checkpointed_data().await?;
    tamper(&pki, |s| rewrite_body(s, "tax", 2))?;
    // Held before it looks: the hub serves on the altered data meanwhile.
    let (hub, holds) = HubProcess::start_holding(
        &pki,
        env!("CARGO_BIN_EXE_tongbao-test-hub"),
        "full-check",
        &[],
    )?;
    let mut health = HealthClient::new(raw_channel(&pki, "finance", hub.addr).await?);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(
        watch.next().await.ok_or("no status")??.status,
        ServingStatus::Serving as i32
    );
    holds.release(1)?;
    let mut seen = Vec::new();
    // NOT_SERVING, then the stream ends (or is cut by the stop).
    while let Some(Ok(update)) = watch.next().await {
        seen.push(update.status);
    }
    assert_eq!(
        seen.last(),
        Some(&(ServingStatus::NotServing as i32)),
        "{seen:?}"
    );
    let status = hub.wait_exit(Duration::from_secs(60))?;
    assert!(!status.success(), "{status:?}");
    Ok(())
}

/// A unit's inbox with records removed on disk: the hub does not skip the
/// missing positions silently; `Pull` and `Subscribe` answer `DataLoss`
/// naming them, for a gap and for missing last positions (the positions
/// before the gap are still served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_inbox_record_is_reported_not_skipped() -> TestResult {
    use tongbao_proto::pb::exchange_client::ExchangeClient;
    let pki = checkpointed_data().await?;
    tamper(&pki, |s| {
        // Inbox runs are keyed `i 0 inbox 0 last-position` and hold their
        // first position (8), a count (4), then their positions' entries
        // (as docs/operations.md's storage formats say; written out whole,
        // per position the entry's seq (8), channel name length (2) and
        // name, they read as the formats before 5 wrote them). However the
        // four pushes were stored, rewrite them as single-position runs
        // and leave out position 2 (inside) and 4 (the last).
        use tongbao_server::store::Store;
        let items: Vec<Vec<u8>> = s
            .inbox_page("finance", 0, 10)?
            .iter()
            .map(|i| {
                let mut v = i.seq.to_be_bytes().to_vec();
                v.extend_from_slice(&(i.channel.len() as u16).to_be_bytes());
                v.extend_from_slice(i.channel.as_bytes());
                v
            })
            .collect();
        let tree = s.raw_tree()?;
        let prefix = b"i\0finance\0".to_vec();
        for kv in tree.scan_prefix(&prefix) {
            tree.remove(kv?.0)?;
        }
        assert_eq!(items.len(), 4, "four positions stored");
        for position in [1u64, 3] {
            let mut k = prefix.clone();
            k.extend_from_slice(&position.to_be_bytes());
            let mut v = position.to_be_bytes().to_vec();
            v.extend_from_slice(&1u32.to_be_bytes());
            v.extend_from_slice(&items[position as usize - 1]);
            tree.insert(k, v)?;
        }
        Ok(())
    })?;
    let hub = HubProcess::start(&pki, env!("CARGO_BIN_EXE_tongbao-test-hub"))?;
    let mut exchange = ExchangeClient::new(raw_channel(&pki, "finance", hub.addr).await?);
    let page = exchange
        .pull(pb::PullRequest {
            after: 0,
            limit: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(page.deliveries.len(), 1);
    let refused = exchange
        .pull(pb::PullRequest {
            after: 1,
            ..Default::default()
        })
        .await
        .err()
        .ok_or("a page across the gap was served")?;
    assert_eq!(refused.code(), Code::DataLoss, "{refused:?}");
    assert!(refused.message().contains("positions 2..=2"), "{refused:?}");
    let mut stream = exchange
        .subscribe(pb::SubscribeRequest {
            after: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message()).await?;
    assert_eq!(ended.err().map(|s| s.code()), Some(Code::DataLoss));
    // Past the last stored run, below the durable head: no page at all, and
    // neither a reader that believes it is done nor one that waits forever.
    let refused = exchange
        .pull(pb::PullRequest {
            after: 3,
            ..Default::default()
        })
        .await
        .err()
        .ok_or("an empty page below the durable head was served")?;
    assert_eq!(refused.code(), Code::DataLoss, "{refused:?}");
    assert!(refused.message().contains("positions 4..=4"), "{refused:?}");
    let mut stream = exchange
        .subscribe(pb::SubscribeRequest {
            after: 3,
            ..Default::default()
        })
        .await?
        .into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message()).await?;
    assert_eq!(ended.err().map(|s| s.code()), Some(Code::DataLoss));
    hub.kill()?;
    Ok(())
}
