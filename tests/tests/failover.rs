//! Failover between replicas of the hub (`hubs = [...]` in client.toml):
//! a hub that is gone is passed over, a subscription resumes on another
//! replica with no gap and no duplicate (also when the hub in use accepts
//! connections but never answers), and a replica that is behind, whether
//! seen in a checkpoint or in a push's answer, is passed over for one
//! that is not, or refused as a rollback.
//!
//! The replicas here are hubs on copies of one sled data directory (a
//! copy taken when a hub is killed continues it; one taken earlier is
//! behind), so the suite runs on the sled store only, like `trust`.

use futures::StreamExt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tongbao_client::proto::pb;
use tongbao_client::{Client, ClientConfig, ClientError};
use tongbao_tests::{BoxError, HubProcess, TestHub, TestPki, TestResult, copy_dir, note};

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");

/// A bound that only catches a hang: tests wait for events, never time
/// them.
const HANG: Duration = Duration::from_secs(60);

fn url(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

/// A loopback address where nothing listens: a port that was bound and
/// closed (a replica that is down, or a standby).
fn dead_hub() -> Result<String, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(url(listener.local_addr()?))
}

/// `unit`'s config with these hubs, in this order.
fn config(pki: &TestPki, unit: &str, hubs: &[String]) -> Result<ClientConfig, BoxError> {
    Ok(pki
        .unit_config(unit, SocketAddr::from(([127, 0, 0, 1], 0)))?
        .with_hubs(hubs.iter().cloned())?)
}

/// Where a [`Front`] sends the connections it accepts.
#[derive(Clone, Copy)]
enum Route {
    /// Dropped at once: nothing serves this address yet.
    Closed,
    /// Relayed to a hub.
    To(SocketAddr),
    /// Held open without a byte of answer: a hub that accepts TCP and
    /// never answers (hung, or a half-dead host).
    Silent,
}

/// A replica's address known before the replica runs: a TCP front on
/// port 0 that drops every connection until it is pointed at a hub.
struct Front {
    addr: SocketAddr,
    route: tokio::sync::watch::Sender<Route>,
    task: tokio::task::JoinHandle<()>,
}

impl Front {
    async fn start() -> Result<Self, BoxError> {
        Self::start_on("127.0.0.1:0".parse()?).await
    }

    /// A front on `addr` (a port reserved earlier, where nothing listened
    /// until now: a standby that just took over).
    async fn start_on(addr: SocketAddr) -> Result<Self, BoxError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (route, watching) = tokio::sync::watch::channel(Route::Closed);
        let task = tokio::spawn(async move {
            // Silent connections live as long as the front.
            let mut held = Vec::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let hub = match *watching.borrow() {
                    Route::Closed => continue,
                    Route::Silent => {
                        held.push(inbound);
                        continue;
                    }
                    Route::To(hub) => hub,
                };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(hub).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Self { addr, route, task })
    }

    fn point_at(&self, hub: SocketAddr) {
        self.route.send_replace(Route::To(hub));
    }

    /// New connections are held and never answered; open ones go on.
    fn go_silent(&self) {
        self.route.send_replace(Route::Silent);
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_is_down_is_passed_over_for_the_next() -> TestResult {
    let t = TestHub::start().await?;
    let (dead, live) = (dead_hub()?, url(t.addr));
    let hubs = [dead.clone(), live.clone()];
    let tax = Client::connect(&config(&t.pki, "tax", &hubs)?).await?;
    assert_eq!(tax.hub(), live, "the client names the hub it uses");
    let finance = Client::connect(&config(&t.pki, "finance", &hubs)?).await?;
    let mut inbox = Box::pin(finance.subscribe(0));

    let pushed = tax
        .push(note("over the live hub").to_units(["finance"]))
        .await?;
    assert_eq!((pushed.channel.as_str(), pushed.seq), ("tax", 0));
    let page = finance.pull(0, 10).await?;
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].message().subject, "over the live hub");
    let live_entry = tokio::time::timeout(HANG, inbox.next())
        .await?
        .ok_or("the subscription ended")??;
    assert_eq!(live_entry.message().subject, "over the live hub");
    assert_eq!(finance.hub(), live);

    // No hub answers: the error names each with its reason.
    let other_dead = dead_hub()?;
    let e = Client::connect(&config(&t.pki, "tax", &[dead.clone(), other_dead.clone()])?)
        .await
        .err()
        .ok_or("connected with every hub down")?;
    match &e {
        ClientError::NoHubAnswers { failures } => {
            let named: Vec<&str> = failures.iter().map(|f| f.hub.as_str()).collect();
            assert_eq!(named, [dead.as_str(), other_dead.as_str()]);
            assert!(
                failures
                    .iter()
                    .all(|f| !f.reason.is_empty() && f.reason.len() < 200)
            );
        }
        other => return Err(format!("expected no hub answers, got {other}").into()),
    }
    let text = e.to_string();
    assert!(
        text.contains("cannot reach any of the 2 hubs") && text.contains(&dead),
        "{text}"
    );
    // One hub that is down says so as before.
    let e = Client::connect(&config(&t.pki, "tax", &[dead])?)
        .await
        .err();
    assert!(matches!(e, Some(ClientError::Connect { .. })), "{e:?}");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resumes_on_another_replica_with_no_gap_and_no_duplicate() -> TestResult {
    let pki = TestPki::generate()?;
    let first = HubProcess::start(&pki, HUB)?;
    let second_front = Front::start().await?;
    let hubs = [url(first.addr), url(second_front.addr)];
    let tax = Client::connect(&config(&pki, "tax", &hubs)?).await?;
    let finance = Client::connect(&config(&pki, "finance", &hubs)?).await?;
    let mut inbox = Box::pin(finance.subscribe(0));
    // Connected to the first replica, idle until after it died.
    let reader = Client::connect(&config(&pki, "finance", &hubs)?).await?;
    let mut expected = Vec::new();
    let mut received = Vec::new();
    for i in 0..10 {
        let subject = format!("before {i}");
        tax.push(note(&subject).to_units(["finance"])).await?;
        expected.push(subject);
    }
    while received.len() < 5 {
        let e = tokio::time::timeout(HANG, inbox.next())
            .await?
            .ok_or("the subscription ended")??;
        received.push((e.cursor, e.message().subject.clone()));
    }

    // The first replica dies mid-subscription; the second takes over on
    // its data as it was at that moment, with the same keys.
    let first_addr = first.addr;
    first.kill()?;
    let copied = pki.path().join("data-second");
    copy_dir(&pki.path().join("data"), &copied)?;
    let second = HubProcess::start_on(&pki, HUB, &copied)?;
    second_front.point_at(second.addr);

    for i in 0..10 {
        let subject = format!("after {i}");
        let r =
            tokio::time::timeout(HANG, tax.push(note(&subject).to_units(["finance"]))).await??;
        assert_eq!(r.seq, 10 + i, "the channel continues on the second replica");
        expected.push(subject);
    }
    assert_eq!(tax.hub(), url(second_front.addr));
    // A read on the dead replica's connection is made again on the other.
    assert_eq!(reader.hub(), url(first_addr));
    let page = tokio::time::timeout(HANG, reader.pull(0, 100)).await??;
    assert_eq!(page.entries.len(), 20);
    assert_eq!(reader.hub(), url(second_front.addr));
    while received.len() < expected.len() {
        let e = tokio::time::timeout(HANG, inbox.next())
            .await?
            .ok_or("the subscription ended")??;
        received.push((e.cursor, e.message().subject.clone()));
    }
    let subjects: Vec<&String> = received.iter().map(|(_, s)| s).collect();
    assert_eq!(subjects, expected.iter().collect::<Vec<_>>());
    assert!(
        received.windows(2).all(|w| w[0].0 < w[1].0),
        "cursors go forward: {received:?}"
    );
    assert_eq!(finance.hub(), url(second_front.addr));
    // The next entry handed over is the next one pushed: none came twice.
    tax.push(note("last").to_units(["finance"])).await?;
    let next = tokio::time::timeout(HANG, inbox.next())
        .await?
        .ok_or("the subscription ended")??;
    assert_eq!(next.message().subject, "last");
    // Receipts go to the replica in use too.
    let acked = finance.ack(&[&next]).await?;
    assert_eq!(acked.newly_acknowledged, 1);
    second.kill()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_wait_out_a_takeover_within_the_window_and_fail_after_it() -> TestResult {
    let pki = TestPki::generate()?;
    let first = HubProcess::start(&pki, HUB)?;
    // The standby's address: nothing listens there until it takes over.
    let standby: SocketAddr = dead_hub()?.trim_start_matches("https://").parse()?;
    let hubs = [url(first.addr), url(standby)];
    let mut waiting = config(&pki, "tax", &hubs)?;
    waiting.push_retry_for = HANG;
    let tax = Client::connect(&waiting).await?;
    tax.push(note("before").to_units(["finance"])).await?;
    let mut reading = config(&pki, "finance", &hubs)?;
    reading.push_retry_for = HANG;
    let finance = Client::connect(&reading).await?;

    // The leader dies; for a moment no replica accepts a connection. A
    // push and a read made now wait for the next leader instead of failing.
    first.kill()?;
    let push = tokio::spawn({
        let tax = tax.clone();
        async move { tax.push(note("during").to_units(["finance"])).await }
    });
    let pull = tokio::spawn({
        let finance = finance.clone();
        async move { finance.pull(0, 10).await }
    });
    let copied = pki.path().join("data-standby");
    copy_dir(&pki.path().join("data"), &copied)?;
    let second = HubProcess::start_on(&pki, HUB, &copied)?;
    let front = Front::start_on(standby).await?;
    front.point_at(second.addr);
    let pushed = tokio::time::timeout(HANG, push).await???;
    assert_eq!((pushed.channel.as_str(), pushed.seq), ("tax", 1));
    let page = tokio::time::timeout(HANG, pull).await???;
    assert!(!page.entries.is_empty(), "read on the new leader");
    assert_eq!(tax.hub(), url(standby));

    // When no replica comes back within the window, the call fails after
    // it, naming every hub.
    let mut short = config(&pki, "tax", &hubs)?;
    short.push_retry_for = Duration::from_millis(300);
    let impatient = Client::connect(&short).await?;
    second.kill()?;
    drop(front);
    let failed =
        tokio::time::timeout(HANG, impatient.push(note("nobody").to_units(["finance"]))).await?;
    match failed {
        Err(ClientError::NoHubAnswers { failures }) => assert_eq!(failures.len(), 2),
        other => return Err(format!("expected no hub answers, got {other:?}").into()),
    }
    Ok(())
}

/// The checkpoint of tax's channel kept in a trust state file.
fn trusted_size(path: &Path) -> Result<Option<u64>, BoxError> {
    let state = tongbao_client::trust::TrustState::load(path)?;
    Ok(state.trusted("tax").map(|c| c.size))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_is_behind_is_passed_over_or_refused_as_a_rollback() -> TestResult {
    let pki = TestPki::generate()?;
    let data = pki.path().join("data");
    let older = pki.path().join("data-behind");

    // Three entries; keep a copy of the data as it was then.
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    for i in 0..3 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    hub.kill()?;
    copy_dir(&data, &older)?;

    // Three more; finance verifies the channel at size 6.
    let ahead = HubProcess::start(&pki, HUB)?;
    let tax = Client::connect(&pki.unit_config("tax", ahead.addr)?).await?;
    for i in 3..6 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    let behind = HubProcess::start_on(&pki, HUB, &older)?;
    let trust = pki.path().join("units/finance/trust-state.json");
    {
        let finance = Client::connect(&config(&pki, "finance", &[url(ahead.addr)])?).await?;
        assert_eq!(finance.checkpoint("tax").await?.size, 6);
    }
    assert_eq!(trusted_size(&trust)?, Some(6));

    // Behind first in the list: it answers, but its checkpoint is older;
    // the client continues on the replica that is not behind.
    let both = [url(behind.addr), url(ahead.addr)];
    let finance = Client::connect(&config(&pki, "finance", &both)?).await?;
    assert_eq!(finance.hub(), url(behind.addr));
    let cp = tokio::time::timeout(HANG, finance.checkpoint("tax")).await??;
    assert_eq!(cp.size, 6);
    assert_eq!(finance.hub(), url(ahead.addr));
    let page = finance.pull(0, 10).await?;
    assert_eq!(
        page.entries.len(),
        6,
        "read on the replica that is not behind"
    );
    let evidence = trust.with_extension("evidence");
    assert!(
        !evidence.exists(),
        "passing a replica over is not a rollback"
    );

    // Only the replica that is behind: a rollback, the trusted checkpoint
    // kept, the evidence kept.
    let mut only_behind = config(&pki, "finance", &[url(behind.addr)])?;
    only_behind.push_retry_for = Duration::from_millis(200);
    let finance = Client::connect(&only_behind).await?;
    expect_rollback(finance.checkpoint("tax").await)?;
    assert_eq!(trusted_size(&trust)?, Some(6));

    // Both listed but the one ahead gone: no replica extends the trusted
    // checkpoint within the retry window.
    ahead.kill()?;
    let mut both_config = config(&pki, "finance", &both)?;
    both_config.push_retry_for = Duration::from_millis(300);
    let finance = Client::connect(&both_config).await?;
    expect_rollback(tokio::time::timeout(HANG, finance.checkpoint("tax")).await?)?;
    assert_eq!(trusted_size(&trust)?, Some(6));
    // A pull on it is refused too, never handed over on the older history.
    let pulled = tokio::time::timeout(HANG, finance.pull(0, 10)).await?;
    assert!(
        matches!(pulled, Err(ClientError::Rollback { .. })),
        "{pulled:?}"
    );
    behind.kill()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_opened_on_a_hub_that_never_answers_fails_over() -> TestResult {
    let pki = TestPki::generate()?;
    let first = HubProcess::start(&pki, HUB)?;
    let hanging = Front::start().await?;
    hanging.point_at(first.addr);
    let second_front = Front::start().await?;
    let hubs = [url(hanging.addr), url(second_front.addr)];
    let finance = Client::connect(&config(&pki, "finance", &hubs)?).await?;
    assert_eq!(finance.hub(), url(hanging.addr));

    // The first replica dies; its address still accepts connections but
    // never answers. The second takes over on its data.
    hanging.go_silent();
    first.kill()?;
    let copied = pki.path().join("data-second");
    copy_dir(&pki.path().join("data"), &copied)?;
    let second = HubProcess::start_on(&pki, HUB, &copied)?;
    second_front.point_at(second.addr);

    // The subscription's first open meets the silent hub: it gives up on
    // it after the per-attempt bound and continues on the second.
    let mut inbox = Box::pin(finance.subscribe(0));
    let tax = Client::connect(&config(&pki, "tax", &[url(second_front.addr)])?).await?;
    tax.push(note("after the hang").to_units(["finance"]))
        .await?;
    let delivered = tokio::time::timeout(HANG, inbox.next())
        .await?
        .ok_or("the subscription ended")??;
    assert_eq!(delivered.message().subject, "after the hang");
    assert_eq!(finance.hub(), url(second_front.addr));
    second.kill()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_answered_below_what_was_acknowledged_is_passed_over_or_refused() -> TestResult {
    let pki = TestPki::generate()?;
    let data = pki.path().join("data");
    let older = pki.path().join("data-behind");

    // Three entries; keep a copy of the data as it was then.
    let hub = HubProcess::start(&pki, HUB)?;
    {
        let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
        for i in 0..3 {
            tax.push(note(&format!("n{i}")).to_units(["finance"]))
                .await?;
        }
    }
    hub.kill()?;
    copy_dir(&data, &older)?;

    // Tax pushes through a replica that is ahead: seqs 3 to 5 are
    // acknowledged, to two clients of the unit.
    let ahead = HubProcess::start(&pki, HUB)?;
    let front = Front::start().await?;
    front.point_at(ahead.addr);
    let other = Front::start().await?;
    let tax = Client::connect(&config(&pki, "tax", &[url(front.addr), url(other.addr)])?).await?;
    let alone = Client::connect(&config(&pki, "tax", &[url(front.addr)])?).await?;
    for i in 3..5 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    assert_eq!(alone.push(note("n5").to_units(["finance"])).await?.seq, 5);

    // The replica at the front is now one on the older data (behind);
    // the other address serves the data as the first left it.
    ahead.kill()?;
    let behind = HubProcess::start_on(&pki, HUB, &older)?;
    front.point_at(behind.addr);
    let continued = pki.path().join("data-continued");
    copy_dir(&data, &continued)?;
    let next = HubProcess::start_on(&pki, HUB, &continued)?;
    other.point_at(next.addr);

    // The behind replica appends the next push at 3: not taken. The same
    // message goes to the other replica, which continues the channel.
    let pushed = tokio::time::timeout(HANG, tax.push(note("n6").to_units(["finance"]))).await??;
    assert_eq!(
        (pushed.seq, pushed.duplicate),
        (6, false),
        "appended after what was acknowledged"
    );
    assert_eq!(tax.hub(), url(other.addr));
    let evidence = pki.path().join("units/tax/trust-state.evidence");
    assert!(
        !evidence.exists(),
        "passing a replica over is not a rollback"
    );

    // With no other replica to go to: refused as a rollback, with both
    // answers kept as evidence.
    let refused = tokio::time::timeout(HANG, alone.push(note("n7").to_units(["finance"]))).await?;
    match refused {
        Err(ClientError::Rollback {
            trusted_size: 6,
            served_size: 5,
            evidence,
            ..
        }) => {
            let text = std::fs::read_to_string(&evidence)?;
            assert!(
                text.contains("up to seq 5") && text.contains("at seq 4"),
                "{text}"
            );
        }
        other => return Err(format!("expected a rollback from 6 to 5, got {other:?}").into()),
    }
    behind.kill()?;
    next.kill()?;
    Ok(())
}

/// A behind replica keeps what it appended: a push it appended behind,
/// sent to it again (through another address of the same hub, as to
/// replicas sharing one database; with the other replica down; by the
/// caller after the rollback), is answered `duplicate` at that position,
/// and is refused as a rollback all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_answered_where_a_behind_replica_appended_it_is_refused() -> TestResult {
    let pki = TestPki::generate()?;
    let data = pki.path().join("data");
    let older = pki.path().join("data-behind");
    let hub = HubProcess::start(&pki, HUB)?;
    {
        let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
        for i in 0..3 {
            tax.push(note(&format!("n{i}")).to_units(["finance"]))
                .await?;
        }
    }
    hub.kill()?;
    copy_dir(&data, &older)?;

    // Two clients of tax see seqs 3 and 4, and 5, acknowledged.
    let ahead = HubProcess::start(&pki, HUB)?;
    let (one, two) = (Front::start().await?, Front::start().await?);
    one.point_at(ahead.addr);
    two.point_at(ahead.addr);
    let window = |mut c: ClientConfig| {
        c.push_retry_for = Duration::from_secs(1);
        c
    };
    let shared = Client::connect(&window(config(
        &pki,
        "tax",
        &[url(one.addr), url(two.addr)],
    )?))
    .await?;
    let down =
        Client::connect(&window(config(&pki, "tax", &[url(one.addr), dead_hub()?])?)).await?;
    for i in 3..5 {
        shared
            .push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    assert_eq!(down.push(note("n5").to_units(["finance"])).await?.seq, 5);

    // Both addresses now lead to one hub on the older data.
    ahead.kill()?;
    let behind = HubProcess::start_on(&pki, HUB, &older)?;
    one.point_at(behind.addr);
    two.point_at(behind.addr);

    // (a) Appended at 3, then answered as a repeat at 3 by the "other
    // replica": a rollback, not a receipt.
    let pushed = tokio::time::timeout(HANG, shared.push(note("n6").to_units(["finance"]))).await?;
    rolled_back(pushed, 5, 4)?;

    // (b) The other replica down: the same hub is asked again.
    let signed = down.sign(note("n7").to_units(["finance"]))?;
    let pushed = tokio::time::timeout(HANG, down.push_signed(signed.clone())).await?;
    rolled_back(pushed, 6, 5)?;

    // (c) The caller pushes the same message again after the rollback.
    let again = tokio::time::timeout(HANG, down.push_signed(signed)).await?;
    rolled_back(again, 6, 5)?;
    behind.kill()?;
    Ok(())
}

/// Workflow steps and receipts are appended to the unit's channel as
/// pushes are: their positions count as acknowledged, and one appended
/// below what was acknowledged is refused as a rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_and_receipts_are_held_to_the_behind_rule() -> TestResult {
    let pki = TestPki::generate()?;
    let data = pki.path().join("data");
    let older = pki.path().join("data-behind");
    let hub = HubProcess::start(&pki, HUB)?;
    let pin = {
        let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
        for i in 0..3 {
            tax.push(note(&format!("n{i}")).to_units(["finance"]))
                .await?;
        }
        let finance = Client::connect(&pki.unit_config("finance", hub.addr)?).await?;
        let r = finance.push(note("for tax").to_units(["tax"])).await?;
        pb::EntryPin {
            channel: r.channel,
            seq: r.seq,
            leaf_hash: r.leaf_hash,
        }
    };
    hub.kill()?;
    copy_dir(&data, &older)?;

    // Only a receipt (3) and two steps (4, 5) acknowledged to this client.
    let ahead = HubProcess::start(&pki, HUB)?;
    let front = Front::start().await?;
    front.point_at(ahead.addr);
    let tax = Client::connect(&config(&pki, "tax", &[url(front.addr)])?).await?;
    let receipt = tax.sign_receipt(vec![pin])?;
    let acked = tax.ack_signed(receipt.clone()).await?;
    assert_eq!(acked.receipt.map(|r| r.1), Some(3));
    let fund = ["fund-supervision".to_string()];
    let liaison = || {
        tax.report_liaison(
            &fund,
            pb::LiaisonChange {
                name: "Li Ming".into(),
                title: "Chief".into(),
                contact: "0351-1".into(),
            },
        )
    };
    for seq in [4, 5] {
        assert_eq!(liaison().await?.seq, seq);
    }

    ahead.kill()?;
    let behind = HubProcess::start_on(&pki, HUB, &older)?;
    front.point_at(behind.addr);
    let pushed = tax.push(note("n3").to_units(["finance"])).await;
    rolled_back(pushed, 6, 4)?;
    rolled_back(tax.ack_signed(receipt).await, 6, 5)?;
    rolled_back(liaison().await, 6, 6)?;
    behind.kill()?;
    Ok(())
}

/// `r` is a rollback from `trusted` entries to `served`.
fn rolled_back<T: std::fmt::Debug>(
    r: Result<T, ClientError>,
    trusted: u64,
    served: u64,
) -> TestResult {
    match r {
        Err(ClientError::Rollback {
            trusted_size,
            served_size,
            ..
        }) if (trusted_size, served_size) == (trusted, served) => Ok(()),
        other => {
            Err(format!("expected a rollback from {trusted} to {served}, got {other:?}").into())
        }
    }
}

fn expect_rollback<T: std::fmt::Debug>(r: Result<T, ClientError>) -> TestResult {
    match r {
        Err(ClientError::Rollback {
            trusted_size: 6,
            served_size: 3,
            evidence,
            ..
        }) => {
            let text = std::fs::read_to_string(&evidence)?;
            assert!(
                text.contains("tongbao/tax\n6\n") && text.contains("tongbao/tax\n3\n"),
                "{text}"
            );
            Ok(())
        }
        other => Err(format!("expected a rollback from 6 to 3, got {other:?}").into()),
    }
}
