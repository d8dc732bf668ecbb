//! A group commit that landed in the database but whose reply was lost
//! (`pg-commit-reply-lost` failpoint: the store reports the commit failed
//! after it committed, as when the COMMIT's reply never arrives). The hub
//! cannot tell what the database holds: it must not leave a subscriber
//! waiting at an inbox's end it no longer knows, and a subscriber that
//! resumes elsewhere gets every entry once, in order.

use crate::clients::{config_of_all, library_subscriber, reserved_addr, said};
use crate::common::*;
use crate::standby_limits::{raw_subscription, until_it_ends};
use tongbao_server::failpoint::ENV;
use tongbao_server::store::pg_store::LOST_REPLY_POINT;
use tongbao_tests::HubProcess;

/// The failpoint: the second group commit's reply is lost (the first
/// lands and is answered, so that a subscriber is seen waiting first).
fn second_reply_lost() -> String {
    format!("{LOST_REPLY_POINT}:fail-at:2")
}

/// A PKI whose hub runs on its own (not a replica) on a test database;
/// None (skipped, saying so) without a test server.
fn alone_pki() -> Result<Option<TestPki>, BoxError> {
    let Some(db) = TestDb::create()? else {
        eprintln!("skipped: TONGBAO_TEST_PG_URL is not set (the store is PostgreSQL's)");
        return Ok(None);
    };
    let mut pki = TestPki::generate_on_sled()?;
    pki.use_postgres(&db.url(), 4)?;
    pki.pg = Some(db);
    Ok(Some(pki))
}

/// A hub on its own keeps serving reads after a failed group commit,
/// refusing writes until restarted. A subscriber already waiting at the
/// end of an inbox that commit touched is woken and ends `UNAVAILABLE`,
/// naming the positions the hub could not confirm, instead of waiting
/// until the restart for a position this hub will never publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_subscriber_waiting_when_a_commit_s_reply_is_lost_ends_saying_why()
-> TestResult {
    let Some(pki) = alone_pki()? else {
        return Ok(());
    };
    let hub = HubProcess::start_at_failpoint(&pki, HUB, &second_reply_lost())?;
    let mut stream = raw_subscription(&pki, hub.addr).await?;
    let tax = Client::connect(&config(pki.path(), "tax", hub.addr)?).await?;
    tax.push(note("answered").to_units([RECIPIENT])).await?;
    // Delivered: the subscription goes on to wait at the inbox's end.
    let first = tokio::time::timeout(HANG, stream.message())
        .await
        .map_err(|_| "the first entry was never delivered")??
        .ok_or("the subscription ended")?;
    assert_eq!(first.cursor, 1);
    let lost = tax.push(note("reply lost").to_units([RECIPIENT])).await;
    assert!(
        lost.is_err(),
        "a push whose reply was lost was acknowledged"
    );
    let status = tokio::time::timeout(HANG, until_it_ends(stream))
        .await
        .map_err(|_| "the subscription still waits at the end after the reply was lost")?
        .ok_or("the subscription ended without a status")?;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("positions from 2 on were written by a group commit"),
        "{status:?}"
    );
    Ok(())
}

/// A leader whose commit's reply is lost stops (a replica's failed write)
/// and a standby takes over. The client library, listing both, retries
/// the push there (it lands once: it had landed) and resumes its
/// subscription there from its cursor: every entry once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
pub(crate) async fn a_subscriber_resumes_without_a_gap_after_the_leader_lost_a_commit_s_reply()
-> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let addrs = [reserved_addr()?, reserved_addr()?];
    let point = second_reply_lost();
    let mut a = Replica::spawn_with(
        &pki,
        "data-a",
        &addrs[0].to_string(),
        &[(ENV, point.as_str())],
    )?;
    assert!(!a.started().await?, "{}", a.stderr());
    let mut b = Replica::spawn_on(&pki, "data-b", &addrs[1].to_string())?;
    assert!(b.started().await?, "{}", b.stderr());
    let reader = Client::connect(&config_of_all(pki.path(), RECIPIENT, &addrs)?).await?;
    let (want, wanted) = watch::channel(0);
    let subscription = tokio::spawn(said(library_subscriber(reader, wanted)));
    let tax = Client::connect(&config_of_all(pki.path(), "tax", &addrs)?).await?;
    let mut acked = Vec::new();
    for i in 0..3 {
        let draft = note(&format!("lost reply {i}"))
            .to_units([RECIPIENT])
            .with_id(format!("lost-reply-{i}"));
        let receipt = tokio::time::timeout(HANG, tax.push(draft))
            .await
            .map_err(|_| format!("push {i} hung"))??;
        acked.push(receipt);
    }
    assert!(!a.exited().await?.success(), "{}", a.stderr());
    assert!(
        a.stderr()
            .contains("stopped: a write to the database failed"),
        "{}",
        a.stderr()
    );
    wait_until(HANG, "the standby takes over", || {
        let leads = b.leads();
        async move { Ok(leads) }
    })
    .await?;
    assert!(
        acked[1].duplicate,
        "the retried push had landed: {:?}",
        acked[1]
    );
    want.send(acked.len())?;
    let got = tokio::time::timeout(HANG, subscription)
        .await
        .map_err(|_| "the subscription never got every entry")???;
    let expected: Vec<(String, u64)> = acked.iter().map(|r| (r.channel.clone(), r.seq)).collect();
    assert_eq!(got, expected);
    Ok(())
}
