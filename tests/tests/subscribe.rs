//! Live delivery: a subscription sees every entry of its inbox once, in
//! order, across broken connections, and a subscriber that does not read
//! loses nothing.

use futures::StreamExt;
use std::collections::BTreeSet;
use std::time::Duration;
use tongbao_client::Client;
use tongbao_tests::{Relay, TestHub, TestResult, note};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_resumes_after_connection_loss_without_gaps_or_duplicates() -> TestResult {
    let t = TestHub::start().await?;
    let relay = Relay::start(t.addr).await?;
    let cfg = t.pki.unit_config("civil-affairs", relay.addr)?;
    let subscriber = Client::connect(&cfg).await?;
    let mut stream = Box::pin(subscriber.subscribe(0));
    let tax = t.unit("tax").await?;

    let total = 300u64;
    let pusher = tokio::spawn(async move {
        for i in 0..total {
            tax.push(note(&format!("n{i}")).to_units(["civil-affairs"]))
                .await?;
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok::<_, tongbao_client::ClientError>(tax)
    });

    let mut seen = Vec::new();
    let mut cuts = 0;
    while (seen.len() as u64) < total {
        let e = tokio::time::timeout(WAIT, stream.next())
            .await?
            .ok_or("subscription ended")??;
        seen.push((e.cursor, e.seq(), e.message().subject.clone()));
        // Break the connection several times mid-stream.
        if seen.len() % 70 == 0 {
            relay.cut_all();
            cuts += 1;
        }
    }
    let tax = pusher.await??;
    assert!(cuts >= 4);
    assert!(
        relay.connections() > cuts,
        "the subscriber never reconnected"
    );
    let cursors: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        cursors,
        (1..=total).collect::<Vec<_>>(),
        "gap or duplicate in cursors"
    );
    let seqs: Vec<u64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(seqs, (0..total).collect::<Vec<_>>());
    // Nothing more arrives before a marker pushed after a last reconnect:
    // no duplicate.
    relay.cut_all();
    let marker = tax.push(note("marker").to_units(["civil-affairs"])).await?;
    let e = tokio::time::timeout(WAIT, stream.next())
        .await?
        .ok_or("subscription ended")??;
    assert_eq!((e.cursor, e.seq()), (total + 1, marker.seq));
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_from_a_cursor_resumes_where_the_caller_left_off() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    for i in 0..10 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    let finance = t.unit("finance").await?;
    let mut stream = Box::pin(finance.subscribe(6));
    let mut subjects = Vec::new();
    for _ in 0..4 {
        let e = tokio::time::timeout(WAIT, stream.next())
            .await?
            .ok_or("ended")??;
        subjects.push(e.message().subject.clone());
    }
    assert_eq!(subjects, ["n6", "n7", "n8", "n9"]);
    // Live: a new entry arrives without polling.
    tax.push(note("live").to_units(["finance"])).await?;
    let e = tokio::time::timeout(WAIT, stream.next())
        .await?
        .ok_or("ended")??;
    assert_eq!((e.cursor, e.message().subject.as_str()), (11, "live"));
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_loses_nothing() -> TestResult {
    let t = TestHub::start().await?;
    let finance = t.unit("finance").await?;
    let mut stream = Box::pin(finance.subscribe(0));
    let tax = t.unit("tax").await?;
    // Push far more than any buffer on the way while the subscriber sleeps.
    let total = 1500u64;
    let mut pushes = futures::stream::iter(0..total)
        .map(|i| {
            let tax = tax.clone();
            async move { tax.push(note(&format!("n{i}")).to_units(["finance"])).await }
        })
        .buffer_unordered(32);
    while let Some(r) = pushes.next().await {
        r?;
    }
    let mut seqs = BTreeSet::new();
    let mut last_cursor = 0;
    for _ in 0..total {
        let e = tokio::time::timeout(WAIT, stream.next())
            .await?
            .ok_or("ended")??;
        assert_eq!(e.cursor, last_cursor + 1);
        last_cursor = e.cursor;
        assert!(seqs.insert(e.seq()), "duplicate {}", e.seq());
    }
    assert_eq!(seqs.len() as u64, total);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_shutdown_ends_subscriptions_cleanly() -> TestResult {
    let t = TestHub::start().await?;
    let finance = t.unit("finance").await?;
    let mut stream = Box::pin(finance.subscribe(0));
    // The subscription is open: it has delivered.
    let tax = t.unit("tax").await?;
    tax.push(note("live").to_units(["finance"])).await?;
    tokio::time::timeout(WAIT, stream.next())
        .await?
        .ok_or("subscription ended")??;
    // Must not hang on the open stream.
    tokio::time::timeout(Duration::from_secs(10), t.stop()).await??;
    Ok(())
}

/// A hub (or a path) that alters one entry it serves: a subscription
/// hands over the entries before it, verified together, then ends with
/// the altered one's failed check, and nothing after it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_delivery_ends_the_subscription_after_the_entries_before_it() -> TestResult {
    use tongbao_client::ClientError;
    use tongbao_tests::{HubProcess, TestPki};
    const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");
    let pki = TestPki::generate()?;
    let data = pki.path().join("data");
    {
        let hub = HubProcess::start_on(&pki, HUB, &data)?;
        let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
        let drafts = (0..40).map(|i| note(&format!("n{i}")).to_units(["finance"]));
        for r in tax.push_batch(drafts.collect()).await? {
            r?;
        }
        hub.kill()?;
    }
    // Position 30 is served with a changed body, its signature kept.
    let hub = HubProcess::start_with_env(
        &pki,
        HUB,
        &data,
        &[("TONGBAO_FAILPOINT", "alter-delivery:30")],
    )?;
    let finance = Client::connect(&pki.unit_config("finance", hub.addr)?).await?;
    let mut stream = Box::pin(finance.subscribe(0));
    let mut cursors = Vec::new();
    let failure = loop {
        match tokio::time::timeout(WAIT, stream.next())
            .await?
            .ok_or("the subscription ended without the failure")?
        {
            Ok(e) => cursors.push(e.cursor),
            Err(e) => break e,
        }
    };
    assert_eq!(cursors, (1..30).collect::<Vec<_>>());
    assert!(
        matches!(&failure, ClientError::Integrity { channel, seq: 29, reason }
            if channel == "tax" && reason.contains("signature")),
        "{failure:?}"
    );
    assert!(
        tokio::time::timeout(WAIT, stream.next()).await?.is_none(),
        "entries arrived after the failed check"
    );
    // A page read over the altered position fails the same way.
    let refused = finance.pull(20, 20).await;
    assert!(
        matches!(&refused, Err(ClientError::Integrity { seq: 29, .. })),
        "{refused:?}"
    );
    hub.kill()
}
