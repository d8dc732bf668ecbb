//! Caps on connections, handshakes, streams and subscriptions, and the
//! idle-connection timeout: each limit, what a client over it sees, and
//! that the room comes back once something closes.

use std::time::Duration;
use tongbao_proto::pb;
use tongbao_proto::pb::exchange_client::ExchangeClient;
use tongbao_tests::{TestHub, TestResult, note, raw_channel, refused, wait_until};
use tonic::Code;
use tonic::transport::Channel;

/// Only catches hangs: every wait below ends on an event.
const WAIT: Duration = Duration::from_secs(20);

async fn exchange(
    t: &TestHub,
    unit: &str,
) -> Result<ExchangeClient<Channel>, tongbao_tests::BoxError> {
    Ok(ExchangeClient::new(
        raw_channel(&t.pki, unit, t.addr).await?,
    ))
}

async fn subscribe(
    client: &mut ExchangeClient<Channel>,
) -> Result<tonic::Streaming<pb::Delivery>, tonic::Status> {
    let request = pb::SubscribeRequest {
        after: 0,
        ..Default::default()
    };
    Ok(client.subscribe(request).await?.into_inner())
}

/// The next delivery of a stream, within [`WAIT`].
async fn next_delivery(
    stream: &mut tonic::Streaming<pb::Delivery>,
) -> Result<pb::Delivery, tongbao_tests::BoxError> {
    Ok(tokio::time::timeout(WAIT, stream.message())
        .await??
        .ok_or("the subscription ended")?)
}

/// Subscribes once the hub has room again (it frees a slot when it sees
/// a stream end), retrying while refused for the cap; fails after [`WAIT`].
async fn subscribe_when_room(
    client: &ExchangeClient<Channel>,
) -> Result<tonic::Streaming<pb::Delivery>, tongbao_tests::BoxError> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match subscribe(&mut client.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(s)
                if s.code() == Code::ResourceExhausted
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => return Err(s.into()),
        }
    }
}

/// Open connections of a unit, as the hub counts them.
fn connections_of(t: &TestHub, unit: &str) -> usize {
    let uri = format!("urn:tongbao:unit:{unit}");
    t.hub
        .as_ref()
        .and_then(|h| h.open_connections().ok())
        .map_or(0, |open| open.iter().filter(|p| **p == uri).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_per_connection_cap_wait_until_one_ends() -> TestResult {
    let t = TestHub::start_with(|c| c.connections.max_streams_per_connection = 2).await?;
    let mut finance = exchange(&t, "finance").await?;
    let mut first = subscribe(&mut finance).await?;
    let mut second = subscribe(&mut finance).await?;
    // The hub announced 2 concurrent streams: the client's HTTP/2 layer
    // holds the third call back instead of sending it.
    let mut third_client = finance.clone();
    let third = tokio::spawn(async move { subscribe(&mut third_client).await });

    t.unit("tax")
        .await?
        .push(note("n0").to_units(["finance"]))
        .await?;
    assert_eq!(next_delivery(&mut first).await?.cursor, 1);
    assert_eq!(next_delivery(&mut second).await?.cursor, 1);
    assert!(
        !third.is_finished(),
        "a third stream was opened on a connection limited to 2"
    );

    // Ending one stream lets the queued call through.
    drop(first);
    let mut third = tokio::time::timeout(WAIT, third).await???;
    assert_eq!(next_delivery(&mut third).await?.cursor, 1);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_over_the_per_party_cap_are_refused_until_one_closes() -> TestResult {
    let t = TestHub::start_with(|c| c.limits.max_subscriptions_per_party = 2).await?;
    let mut finance = exchange(&t, "finance").await?;
    let first = subscribe(&mut finance).await?;
    // The second on its own connection: the cap is per party, not per connection.
    let mut other_connection = exchange(&t, "finance").await?;
    let second = subscribe(&mut other_connection).await?;

    let status = subscribe(&mut finance)
        .await
        .err()
        .ok_or("a third subscription was admitted over a cap of 2")?;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains(
            "unit finance already has 2 open subscriptions (limits.max_subscriptions_per_party)"
        ),
        "{status:?}"
    );
    // Another party is not affected.
    let _tax = subscribe(&mut exchange(&t, "tax").await?).await?;

    // Closing a stream frees its slot once the hub sees it end.
    drop(first);
    let reopened = subscribe_when_room(&finance).await?;

    // A client that goes away (its connection closed) frees its slot too.
    drop(second);
    drop(other_connection);
    let _again = subscribe_when_room(&finance).await?;
    drop(reopened);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_party_cap_are_refused_while_others_connect() -> TestResult {
    let t = TestHub::start_with(|c| c.connections.max_connections_per_party = 2).await?;
    let first = t.unit("tax").await?;
    let second = t.unit("tax").await?;
    assert_eq!(connections_of(&t, "tax"), 2);

    // The handshake succeeds; the first call is answered with the reason.
    refused(
        t.unit("tax").await,
        Code::ResourceExhausted,
        "urn:tongbao:unit:tax already has 2 open connections (connections.max_connections_per_party)",
    );
    let mut raw = exchange(&t, "tax").await?;
    let status = raw
        .list_units(pb::ListUnitsRequest::default())
        .await
        .err()
        .ok_or("a third connection of tax was served")?;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(connections_of(&t, "tax"), 2);

    // Another party still connects.
    t.unit("finance").await?.list_units().await?;

    // Once a connection of tax closes, tax connects again.
    drop(first);
    wait_until(WAIT, "the closed connection is gone", || async {
        Ok(connections_of(&t, "tax") < 2)
    })
    .await?;
    // (Asked until accepted: right after a close the hub may still hold a
    // refused connection's record for the same loopback port; see the
    // issue note on connections tracked by peer address.)
    wait_until(WAIT, "tax connects again", || async {
        Ok(match t.unit("tax").await {
            Ok(c) => c.list_units().await.is_ok(),
            Err(_) => false,
        })
    })
    .await?;
    drop(second);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_total_cap_are_refused() -> TestResult {
    let t = TestHub::start_with(|c| c.connections.max_connections = 2).await?;
    let _tax = t.unit("tax").await?;
    let _finance = t.unit("finance").await?;
    refused(
        t.unit("civil-affairs").await,
        Code::ResourceExhausted,
        "the hub already has 2 open connections (connections.max_connections)",
    );
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_handshake_cap_are_closed_before_the_handshake() -> TestResult {
    let t = TestHub::start_with(|c| c.connections.max_handshakes = 1).await?;
    let hub = t.hub.as_ref().ok_or("no hub")?;
    // A client that connects and never says hello holds the only slot.
    let silent = tokio::net::TcpStream::connect(t.addr).await?;
    wait_until(WAIT, "the silent handshake has started", || async {
        Ok(hub.handshakes_in_progress() == 1)
    })
    .await?;
    let err = t
        .unit("tax")
        .await
        .err()
        .ok_or("connected while the only handshake slot was taken")?;
    assert!(err.is_transient(), "{err}");

    drop(silent);
    wait_until(WAIT, "the silent handshake has ended", || async {
        Ok(hub.handshakes_in_progress() == 0)
    })
    .await?;
    t.unit("tax").await?.list_units().await?;
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_open_calls_is_closed_after_the_idle_timeout() -> TestResult {
    let t = TestHub::start_with(|c| c.connections.idle_timeout_secs = 1).await?;
    // A subscription keeps its connection busy, however quiet.
    let mut finance = exchange(&t, "finance").await?;
    let mut subscription = subscribe(&mut finance).await?;
    let mut tax = exchange(&t, "tax").await?;
    tax.list_units(pb::ListUnitsRequest::default()).await?;

    wait_until(WAIT, "the idle connection of tax is closed", || async {
        Ok(connections_of(&t, "tax") == 0)
    })
    .await?;
    // Finance's connection was older, so it would have gone first.
    assert_eq!(connections_of(&t, "finance"), 1);
    t.unit("tax")
        .await?
        .push(note("n0").to_units(["finance"]))
        .await?;
    assert_eq!(next_delivery(&mut subscription).await?.cursor, 1);

    // The client's channel connects again for its next call.
    tax.list_units(pb::ListUnitsRequest::default()).await?;
    t.stop().await
}
