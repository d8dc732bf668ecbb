//! Durability: every push the hub answered survives `kill -9` of the hub
//! process, and retried pushes land exactly once.

use std::net::SocketAddr;
use std::time::Duration;
use tongbao_client::{Client, PushReceipt};
use tongbao_tests::{BoxError, HubProcess, Relay, TestPki, TestResult, note, wait_until};

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");

/// A bound that only catches a hang: tests wait for events, never time
/// them.
const HANG: Duration = Duration::from_secs(60);

async fn connect(pki: &TestPki, unit: &str, hub: SocketAddr) -> Result<Client, BoxError> {
    Ok(Client::connect(&pki.unit_config(unit, hub)?).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_pushes_survive_kill_and_retries_land_once() -> TestResult {
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let senders = ["tax", "public-security", "pbc-taiyuan"];
    let per_sender = 150usize;

    // Sign everything up front so a retry after the crash is the same message.
    let mut signed = Vec::new();
    for unit in senders {
        let c = connect(&pki, unit, hub.addr).await?;
        for i in 0..per_sender {
            signed.push((
                unit,
                c.sign(note(&format!("{unit}-{i}")).to_units(["civil-affairs"]))?,
            ));
        }
    }

    // Push concurrently and kill the hub while pushes are in flight.
    let (answered_tx, mut answered_rx) =
        tokio::sync::mpsc::unbounded_channel::<(usize, PushReceipt)>();
    let mut tasks = Vec::new();
    for unit in senders.iter() {
        let c = connect(&pki, unit, hub.addr).await?;
        let mine: Vec<(usize, tongbao_proto::pb::SignedMessage)> = signed
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| s == unit)
            .map(|(i, (_, m))| (i, m.clone()))
            .collect();
        let tx = answered_tx.clone();
        tasks.push(tokio::spawn(async move {
            use futures::StreamExt;
            let mut pending = futures::stream::FuturesUnordered::new();
            for (i, m) in mine {
                let c = c.clone();
                pending.push(async move { (i, c.push_signed(m).await) });
                if pending.len() >= 16
                    && let Some((i, Ok(r))) = pending.next().await
                {
                    let _ = tx.send((i, r));
                }
            }
            while let Some((i, r)) = pending.next().await {
                if let Ok(r) = r {
                    let _ = tx.send((i, r));
                }
            }
        }));
    }
    drop(answered_tx);
    // Let some pushes be answered, then kill without warning.
    let mut answered = Vec::new();
    while answered.len() < 200 {
        match tokio::time::timeout(Duration::from_secs(20), answered_rx.recv()).await? {
            Some(a) => answered.push(a),
            None => break,
        }
    }
    hub.kill()?;
    for t in tasks {
        t.await?;
    }
    while let Ok(a) = answered_rx.try_recv() {
        answered.push(a);
    }
    assert!(answered.len() >= 200, "only {} answered", answered.len());

    // Restart on the same data directory.
    let hub = HubProcess::start(&pki, HUB)?;
    let mut clients = std::collections::BTreeMap::new();
    for unit in senders {
        clients.insert(unit.to_string(), connect(&pki, unit, hub.addr).await?);
    }
    let client_of = |unit: &str| {
        clients
            .get(unit)
            .cloned()
            .ok_or_else(|| format!("no client of {unit}"))
    };
    for (_, r) in &answered {
        let c = client_of(&r.channel)?;
        let e = c.get_entry(&r.channel, r.seq).await?;
        assert_eq!(
            e.leaf_hash.to_vec(),
            r.leaf_hash,
            "entry {}:{} changed after the crash",
            r.channel,
            r.seq
        );
    }
    // Retry everything: answered ones come back as duplicates, the rest land once.
    let mut after_retry = std::collections::BTreeMap::new();
    for (i, (unit, m)) in signed.iter().enumerate() {
        let c = client_of(unit)?;
        let r = c.push_signed(m.clone()).await?;
        if let Some((_, first)) = answered.iter().find(|(j, _)| *j == i) {
            assert!(r.duplicate);
            assert_eq!((r.seq, &r.leaf_hash), (first.seq, &first.leaf_hash));
        }
        after_retry.insert((r.channel.clone(), r.seq), i);
    }
    assert_eq!(
        after_retry.len(),
        signed.len(),
        "a message landed twice or not at all"
    );
    // The recipient's inbox holds each message exactly once, and chains hold.
    let ca = connect(&pki, "civil-affairs", hub.addr).await?;
    let mut seen = std::collections::BTreeSet::new();
    let mut after = 0;
    loop {
        let page = ca.pull(after, 500).await?;
        if page.entries.is_empty() {
            break;
        }
        for e in &page.entries {
            assert!(
                seen.insert((e.channel().to_string(), e.seq())),
                "duplicate delivery"
            );
        }
        after = page.next_after(after);
    }
    assert_eq!(seen.len(), signed.len());
    for unit in senders {
        let c = client_of(unit)?;
        let mut previous = vec![0u8; 32];
        for seq in 0..per_sender as u64 {
            let e = c.get_entry(unit, seq).await?;
            assert_eq!(
                e.entry.previous_leaf_hash, previous,
                "{unit}:{seq} does not chain"
            );
            previous = e.leaf_hash.to_vec();
        }
    }
    hub.kill()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_continues_sequences_and_cursors() -> TestResult {
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    connect(&pki, "tax", hub.addr)
        .await?
        .push(note("before").to_units(["finance"]))
        .await?;
    hub.kill()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = connect(&pki, "tax", hub.addr).await?;
    let r = tax.push(note("after").to_units(["finance"])).await?;
    assert_eq!(r.seq, 1);
    let page = connect(&pki, "finance", hub.addr)
        .await?
        .pull(0, 10)
        .await?;
    let cursors: Vec<u64> = page.entries.iter().map(|e| e.cursor).collect();
    assert_eq!(cursors, [1, 2]);
    hub.kill()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_answered_just_before_a_kill_survive_it() -> TestResult {
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = connect(&pki, "tax", hub.addr).await?;
    for i in 0..3 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    let finance = connect(&pki, "finance", hub.addr).await?;
    let entries = finance.pull(0, 10).await?.entries;
    let first = finance.ack(&entries.iter().collect::<Vec<_>>()).await?;
    assert_eq!(first.newly_acknowledged, 3);
    let (receipt_channel, receipt_seq, _) = first.receipt.clone().ok_or("no receipt")?;
    // Killed at once: the receipt is in the journal, not yet in the database.
    hub.kill()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let finance = connect(&pki, "finance", hub.addr).await?;
    let entries = finance.pull(0, 10).await?.entries;
    assert_eq!(entries.len(), 3, "the acknowledged entries are still there");
    let again = finance.ack(&entries.iter().collect::<Vec<_>>()).await?;
    assert_eq!(again.newly_acknowledged, 0);
    assert!(again.receipt.is_none(), "nothing new to append");
    assert_eq!(again.earlier.len(), 3);
    for (_, by) in &again.earlier {
        assert_eq!(
            (by.channel.as_str(), by.seq),
            (receipt_channel.as_str(), receipt_seq)
        );
    }
    hub.kill()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_survive_kill() -> TestResult {
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = connect(&pki, "tax", hub.addr).await?;
    let mut receipts = Vec::new();
    for i in 0..3u8 {
        // Near the 1 MiB limit: stored outside sled's log, synced separately.
        let body = vec![b'a' + i; 1000 * 1024];
        let draft = tongbao_client::Draft::new(
            tongbao_proto::pb::Kind::Notification,
            format!("big {i}"),
            body,
        );
        receipts.push(tax.push(draft.to_units(["finance"])).await?);
    }
    hub.kill()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let page = connect(&pki, "finance", hub.addr)
        .await?
        .pull(0, 10)
        .await?;
    assert_eq!(page.entries.len(), 3);
    for (i, (e, r)) in page.entries.iter().zip(&receipts).enumerate() {
        assert_eq!(e.leaf_hash.to_vec(), r.leaf_hash);
        assert_eq!(e.message().body, vec![b'a' + i as u8; 1000 * 1024]);
    }
    hub.kill()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_unit_is_refused_and_others_continue() -> TestResult {
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    connect(&pki, "tax", hub.addr)
        .await?
        .push(note("before").to_units(["finance"]))
        .await?;
    hub.kill()?;
    // Suspend tax in the stored registry while the hub is down.
    {
        use tongbao_server::registry::Registry;
        use tongbao_server::store::SledStore;
        let store = SledStore::open(&pki.path().join("data"), true)?;
        let mut registry = Registry::load(&store)?.ok_or("no registry")?;
        registry.units.get_mut("tax").ok_or("no tax")?.suspended = true;
        registry.save(&store)?;
    }
    let hub = HubProcess::start(&pki, HUB)?;
    let e = Client::connect(&pki.unit_config("tax", hub.addr)?)
        .await
        .err()
        .ok_or("suspended unit connected")?;
    assert_eq!(e.code(), Some(tonic::Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("suspended"), "{e}");
    // What it sent before stays readable by its recipients.
    let finance = connect(&pki, "finance", hub.addr).await?;
    assert_eq!(finance.pull(0, 10).await?.entries.len(), 1);
    finance
        .push(note("after").to_units(["civil-affairs"]))
        .await?;
    hub.kill()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_hub_that_is_gone_fails_at_once_and_lands_once_later() -> TestResult {
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    // A retry window far beyond the test's bound: only the hub being
    // unreachable can end the push; waiting for it would be a hang.
    let mut cfg = pki.unit_config("tax", hub.addr)?;
    cfg.push_retry_for = Duration::from_secs(3600);
    let tax = Client::connect(&cfg).await?;
    tax.push(note("before").to_units(["finance"])).await?;
    let signed = tax.sign(note("while the hub is gone").to_units(["finance"]))?;
    hub.kill()?;
    let e = tokio::time::timeout(HANG, tax.push_signed(signed.clone()))
        .await
        .map_err(|_| "the push waited for a hub that was gone")?
        .err()
        .ok_or("a push succeeded with the hub gone")?;
    assert!(
        matches!(e, tongbao_client::ClientError::Connect { .. }),
        "expected cannot reach the hub, got {e}"
    );
    // The same message pushed again once a hub is back lands exactly once.
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = connect(&pki, "tax", hub.addr).await?;
    let first = tax.push_signed(signed.clone()).await?;
    let again = tax.push_signed(signed).await?;
    assert!(!first.duplicate && again.duplicate);
    assert_eq!((first.seq, &first.leaf_hash), (again.seq, &again.leaf_hash));
    hub.kill()?;
    Ok(())
}

/// A push over a connection that went silent (open, never answered) ends
/// within its retry window instead of waiting for an answer forever; the
/// same message pushed again over a working path lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_over_a_silent_connection_gives_up_within_its_window() -> TestResult {
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let relay = Relay::start(hub.addr).await?;
    let mut cfg = pki.unit_config("tax", relay.addr)?;
    cfg.push_retry_for = Duration::from_secs(2);
    let tax = Client::connect(&cfg).await?;
    tax.push(note("before").to_units(["finance"])).await?;
    // A window of 0 still gets its one attempt.
    let mut no_window = cfg.clone();
    no_window.push_retry_for = Duration::ZERO;
    let once = Client::connect(&no_window).await?;
    let one = once.push(note("one attempt").to_units(["finance"])).await?;
    let signed = tax.sign(note("into the silence").to_units(["finance"]))?;
    relay.freeze();
    // Each attempt waits 10 s at most; without that bound the call waits
    // until HTTP/2 keep-alive gives up on the connection, near a minute.
    let outcome = tokio::time::timeout(Duration::from_secs(20), tax.push_signed(signed.clone()))
        .await
        .map_err(|_| "the push waited on a silent connection long past its window")?;
    let e = outcome
        .err()
        .ok_or("a push succeeded over a silent connection")?;
    assert!(e.is_transient(), "{e}");
    let direct = connect(&pki, "tax", hub.addr).await?;
    let landed = direct.push_signed(signed.clone()).await?;
    assert_eq!((one.seq, landed.seq), (1, 2));
    assert!(direct.push_signed(signed).await?.duplicate);
    hub.kill()?;
    Ok(())
}

/// Nothing is readable before it is durable: while a group commit waits
/// for its fsync (held open by a failpoint), its entry is already in the
/// store, yet `Pull` stops at the durable inbox head, `GetEntry` does not
/// find it and the checkpoint does not cover it. Once the push is
/// answered, all three show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_is_not_readable_before_its_commit_is_durable() -> TestResult {
    use tongbao_proto::pb::{self, exchange_client::ExchangeClient, log_client::LogClient};
    let pki = TestPki::generate()?;
    // Each group commit's fsync is held until the test lets it go: the
    // first push's at once, the second's once the test has looked.
    let (hub, holds) = HubProcess::start_holding(&pki, HUB, "before-sync", &[1])?;
    let tax = connect(&pki, "tax", hub.addr).await?;
    let first = tax.push(note("durable").to_units(["finance"])).await?;
    let pending = {
        let tax = tax.clone();
        tokio::spawn(async move { tax.push(note("in flight").to_units(["finance"])).await })
    };
    // The second push is applied, and waits for its fsync.
    wait_until(HANG, "the second push reaches its fsync", || {
        let reached = holds.reached(2);
        async move { Ok(reached) }
    })
    .await?;
    let channel = tongbao_tests::raw_channel(&pki, "finance", hub.addr).await?;
    let mut exchange = ExchangeClient::new(channel.clone());
    let mut log = LogClient::new(channel);
    let pull = |mut exchange: ExchangeClient<_>| async move {
        exchange
            .pull(pb::PullRequest {
                after: 0,
                limit: 10,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    };
    let page = pull(exchange.clone()).await?;
    assert!(
        !pending.is_finished(),
        "the second push was answered before its commit was durable"
    );
    assert_eq!(
        page.deliveries.len(),
        1,
        "served an entry whose commit is not durable"
    );
    assert_eq!(page.head, 1);
    let early = exchange
        .get_entry(pb::GetEntryRequest {
            channel: "tax".into(),
            seq: first.seq + 1,
        })
        .await;
    assert_eq!(early.err().map(|s| s.code()), Some(tonic::Code::NotFound));
    let checkpoint = log
        .get_checkpoint(pb::GetCheckpointRequest {
            channel: "tax".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        checkpoint.size, 1,
        "the checkpoint covers an entry that is not durable"
    );
    holds.release(2)?;
    let second = tokio::time::timeout(HANG, pending).await???;
    assert_eq!(second.seq, first.seq + 1);
    let page = pull(exchange.clone()).await?;
    assert_eq!(page.deliveries.len(), 2);
    exchange
        .get_entry(pb::GetEntryRequest {
            channel: "tax".into(),
            seq: second.seq,
        })
        .await?;
    hub.kill()?;
    Ok(())
}

/// The record boundaries of a journal file (length, checksum, id, payload).
fn journal_records(bytes: &[u8]) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 16) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let mut id = [0u8; 8];
        id.copy_from_slice(&header[8..16]);
        out.push((at, u64::from_le_bytes(id)));
        at += 16 + len;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_inside_the_newest_journal_file_refuses_the_start() -> TestResult {
    let pki = TestPki::generate()?;
    let data = pki.path().join("data");
    // The database is not flushed while the test runs: every answered
    // push is in the journal only.
    let hub = HubProcess::start_at_failpoint(&pki, HUB, "background-flush:600000")?;
    let tax = connect(&pki, "tax", hub.addr).await?;
    let mut answered = Vec::new();
    for i in 0..12 {
        answered.push(
            tax.push(note(&format!("n{i}")).to_units(["finance"]))
                .await?,
        );
    }
    hub.kill()?;
    let newest = std::fs::read_dir(data.join("journal"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .max()
        .ok_or("no journal file")?;
    let mut bytes = std::fs::read(&newest)?;
    let records = journal_records(&bytes);
    assert!(records.len() >= 6, "only {} records", records.len());
    // One byte of a record's payload in the middle of the file.
    let (at, id) = records[records.len() / 2];
    bytes[at + 20] ^= 0x01;
    std::fs::write(&newest, &bytes)?;

    let stderr = HubProcess::refused_start(&pki, HUB, &data)
        .map_err(|e| format!("{e}: commits after {id} were dropped"))?;
    let name = newest.file_name().and_then(|n| n.to_str()).ok_or("name")?;
    for words in [
        "stored data is corrupt",
        name,
        &format!("unreadable from byte {at}"),
        &format!("commit {} follows", id + 1),
    ] {
        assert!(stderr.contains(words), "{stderr:?} should say {words:?}");
    }
    // The refusal changed nothing: the damage mended, every answered push
    // is there.
    bytes[at + 20] ^= 0x01;
    std::fs::write(&newest, &bytes)?;
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = connect(&pki, "tax", hub.addr).await?;
    for r in &answered {
        let e = tax.get_entry(&r.channel, r.seq).await?;
        assert_eq!(e.leaf_hash.to_vec(), r.leaf_hash);
    }
    hub.kill()?;
    Ok(())
}

/// A poisoned lock is fatal, by one rule: the request that meets it is
/// answered `Internal`, and the hub stops in order by itself and exits
/// failing, so that it is restarted on what is on disk. Pushes before it
/// are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_lock_fails_its_request_and_stops_the_hub() -> TestResult {
    let pki = TestPki::generate()?;
    let hub = HubProcess::start_at_failpoint(&pki, HUB, "poison:inbox-heads")?;
    let tax = connect(&pki, "tax", hub.addr).await?;
    tax.push(note("before the poison").to_units(["finance"]))
        .await?;
    let finance = connect(&pki, "finance", hub.addr).await?;
    let e = finance
        .pull(0, 10)
        .await
        .err()
        .ok_or("a pull was served over a poisoned lock")?;
    assert_eq!(
        tongbao_tests::code_of(&e),
        Some(tonic::Code::Internal),
        "{e}"
    );
    assert!(
        e.to_string().contains("the inbox heads lock is poisoned"),
        "{e}"
    );
    let status = hub.wait_exit(Duration::from_secs(20))?;
    assert!(!status.success(), "the hub exited as if stopped on purpose");
    // It stopped in order: a hub without the poison starts on its data.
    let hub = HubProcess::start(&pki, HUB)?;
    let finance = connect(&pki, "finance", hub.addr).await?;
    assert_eq!(finance.pull(0, 10).await?.entries.len(), 1);
    hub.kill()?;
    Ok(())
}
