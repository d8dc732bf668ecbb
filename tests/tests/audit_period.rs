//! The office's audit and statistics over a period: complete figures, or a
//! refusal saying the period is too large and what to ask for instead;
//! never figures counted from part of the period.

use std::collections::BTreeMap;
use tongbao_client::{Client, ClientError};
use tongbao_proto::pb;
use tongbao_server::workflow::STATISTICS_SETTLE_MICROS;
use tongbao_tests::{
    BoxError, HubProcess, TestHub, TestPki, TestResult, members_of, note, refused,
};
use tonic::Code;

const FUND: &str = "fund-supervision";
/// The cap the tests set: small, instead of pushing 200,000 messages.
const CAP: usize = 50;

/// Pushes `n` notifications from `from` to the mechanism, all accepted.
async fn push_n(from: &Client, n: usize, tag: &str) -> TestResult {
    let drafts = (0..n)
        .map(|i| note(&format!("fund check {tag} {i}")).to_mechanism(FUND))
        .collect();
    for r in from.push_batch(drafts).await? {
        r?;
    }
    Ok(())
}

/// Sent and received per unit.
fn figures(units: &[pb::UnitStats]) -> BTreeMap<String, (u64, u64)> {
    units
        .iter()
        .map(|u| (u.unit.clone(), (u.sent, u.received)))
        .collect()
}

/// The number a refusal gives after `words` (an end, a limit).
fn suggested(e: &ClientError, words: &str) -> Result<i64, BoxError> {
    let text = e.to_string();
    let at = text
        .find(words)
        .ok_or_else(|| format!("no {words:?} in {text:?}"))?;
    let digits: String = text[at + words.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Ok(digits.parse()?)
}

async fn wait_until_past(micros: i64) {
    while tongbao_proto::now_micros() <= micros {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_over_the_cap_is_refused_and_one_under_it_is_complete() -> TestResult {
    let t = TestHub::start_with(|c| c.limits.max_audit_entries = CAP).await?;
    let others = members_of(FUND).len() as u64 - 1;
    let since = tongbao_proto::now_micros();
    let civil = t.unit("civil-affairs").await?;
    push_n(&civil, CAP - 1, "a").await?;
    let under = tongbao_proto::now_micros() + 1;
    wait_until_past(under).await;
    // One at a time: entries of one commit share a hub time.
    push_n(&civil, 1, "b").await?;
    push_n(&civil, 1, "c").await?;
    let over = tongbao_proto::now_micros() + 1;
    let office = Client::connect(&t.pki.office_config(FUND, t.addr)?).await?;

    // Just under the cap: every entry counted.
    let summary = office
        .audit_units(pb::UnitSummaryRequest {
            until_micros: under,
            ..Default::default()
        })
        .await?;
    let f = figures(&summary.units);
    assert_eq!(f["civil-affairs"].0, CAP as u64 - 1);
    let received: u64 = f.values().map(|(_, r)| r).sum();
    assert_eq!(received, (CAP as u64 - 1) * others);
    let listed = office
        .audit_deliveries(pb::ListDeliveriesRequest {
            until_micros: under,
            limit: 1000,
            ..Default::default()
        })
        .await?;
    assert_eq!(listed.entries.len(), CAP - 1);

    // Over it: refused, saying why and what to ask instead, for the
    // summary and for a listing that would come back short...
    let whole = office.audit_units(pb::UnitSummaryRequest::default()).await;
    let Err(e) = &whole else {
        return Err(format!("a period over the cap was answered: {whole:?}").into());
    };
    for words in ["more than 50 audited entries", "ask for a shorter period"] {
        assert!(e.to_string().contains(words), "{e} should say {words:?}");
    }
    assert_eq!(e.code(), Some(Code::ResourceExhausted), "{e}");
    refused(
        office
            .audit_deliveries(pb::ListDeliveriesRequest {
                limit: 1000,
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
        "ask for a shorter period",
    );
    // ...while a listing filled within the cap is whole as it is.
    let first = office
        .audit_deliveries(pb::ListDeliveriesRequest {
            limit: 10,
            ..Default::default()
        })
        .await?;
    assert_eq!(first.entries.len(), 10);
    // The suggested end holds the cap (each entry has a time of its own).
    let until = suggested(e, "until_micros ")?;
    let capped = office
        .audit_units(pb::UnitSummaryRequest {
            until_micros: until,
            ..Default::default()
        })
        .await?;
    assert_eq!(figures(&capped.units)["civil-affairs"].0, CAP as u64);

    // Statistics come from the same records, under the same rule.
    wait_until_past(over + STATISTICS_SETTLE_MICROS).await;
    let report = office.compute_statistics("", since, under, 0).await?;
    let sent: u64 = report.messages.iter().map(|c| c.count).sum();
    assert_eq!(sent, CAP as u64 - 1);
    refused(
        office.compute_statistics("", since, over, 0).await,
        Code::ResourceExhausted,
        "ask for a shorter period",
    );
    t.stop().await
}

/// The audit index is written in the same commit as its entries: a hub
/// killed without warning answers the same figures after its restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_figures_survive_a_killed_hub() -> TestResult {
    const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let civil = Client::connect(&pki.unit_config("civil-affairs", hub.addr)?).await?;
    push_n(&civil, 20, "k").await?;
    let finance = Client::connect(&pki.unit_config("finance", hub.addr)?).await?;
    let page = finance.pull(0, 100).await?;
    assert_eq!(page.entries.len(), 20);
    finance
        .ack(&page.entries.iter().collect::<Vec<_>>())
        .await?;
    let asked = pb::UnitSummaryRequest {
        as_of_micros: tongbao_proto::now_micros(),
        ..Default::default()
    };
    let office = Client::connect(&pki.office_config(FUND, hub.addr)?).await?;
    let before = office.audit_units(asked.clone()).await?;
    let f = figures(&before.units);
    assert_eq!(f["civil-affairs"].0, 20);
    let finance_row = before
        .units
        .iter()
        .find(|u| u.unit == "finance")
        .ok_or("no finance row")?;
    assert_eq!((finance_row.received, finance_row.acknowledged), (20, 20));
    hub.kill()?;

    let hub = HubProcess::start(&pki, HUB)?;
    let office = Client::connect(&pki.office_config(FUND, hub.addr)?).await?;
    assert_eq!(office.audit_units(asked).await?.units, before.units);
    let listed = office
        .audit_deliveries(pb::ListDeliveriesRequest {
            limit: 100,
            ..Default::default()
        })
        .await?;
    assert_eq!(listed.entries.len(), 20);
    hub.kill()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_listing_past_the_page_bytes_is_refused_with_a_limit_that_fits() -> TestResult {
    let t = TestHub::start_with(|c| c.limits.max_page_bytes = 4_000).await?;
    push_n(&t.unit("civil-affairs").await?, 30, "p").await?;
    let office = Client::connect(&t.pki.office_config(FUND, t.addr)?).await?;
    let refusal = office
        .audit_deliveries(pb::ListDeliveriesRequest {
            limit: 100,
            ..Default::default()
        })
        .await;
    let Err(e) = &refusal else {
        return Err(format!("a listing past the page bytes was answered: {refusal:?}").into());
    };
    assert_eq!(e.code(), Some(Code::ResourceExhausted), "{e}");
    let fits = u32::try_from(suggested(e, "limit of at most ")?)?;
    let page = office
        .audit_deliveries(pb::ListDeliveriesRequest {
            limit: fits,
            ..Default::default()
        })
        .await?;
    assert_eq!(page.entries.len(), fits as usize);
    t.stop().await
}

/// Audits run as heavy work, on threads of their own behind a bounded
/// queue: while one is held running (a failpoint) the exchange goes on, a
/// query past the queue is refused at once naming the limits, and the held
/// and queued ones answer once let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_queries_are_bounded_and_do_not_hold_the_exchange() -> TestResult {
    use tongbao_tests::wait_until;
    const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");
    const HANG: std::time::Duration = std::time::Duration::from_secs(60);
    let pki = TestPki::generate()?;
    pki.edit_hub_toml("max_heavy_queries = 2", "max_heavy_queries = 1")?;
    pki.edit_hub_toml("max_heavy_waiting = 16", "max_heavy_waiting = 1")?;
    // The second query to run (the queued one) is let go at once.
    let (hub, holds) = HubProcess::start_holding(&pki, HUB, "heavy-work", &[2])?;
    let civil = Client::connect(&pki.unit_config("civil-affairs", hub.addr)?).await?;
    push_n(&civil, 5, "h").await?;
    let office = Client::connect(&pki.office_config(FUND, hub.addr)?).await?;
    let summary =
        |office: Client| async move { office.audit_units(pb::UnitSummaryRequest::default()).await };
    let held = tokio::spawn(summary(office.clone()));
    wait_until(HANG, "the first audit holds the heavy thread", || {
        let reached = holds.reached(1);
        async move { Ok(reached) }
    })
    .await?;

    // The exchange goes on while the heavy thread is held.
    push_n(&civil, 3, "during").await?;
    let finance = Client::connect(&pki.unit_config("finance", hub.addr)?).await?;
    assert_eq!(finance.pull(0, 100).await?.entries.len(), 8);

    // One more fits in the queue; the other is refused at once.
    let a = tokio::spawn(summary(office.clone()));
    let b = tokio::spawn(summary(office.clone()));
    let (first_done, other) = match futures::future::select(a, b).await {
        futures::future::Either::Left((r, other)) => (r?, other),
        futures::future::Either::Right((r, other)) => (r?, other),
    };
    refused(
        first_done,
        Code::ResourceExhausted,
        "limits.max_heavy_queries",
    );
    assert!(!held.is_finished(), "the held audit answered while held");

    holds.release(1)?;
    let held = held.await??;
    let queued = other.await??;
    assert_eq!(figures(&held.units)["civil-affairs"].0, 8);
    assert_eq!(figures(&queued.units), figures(&held.units));
    // Drained, it serves again.
    holds.release(3)?;
    assert_eq!(summary(office).await?.units, held.units);
    hub.kill()?;
    Ok(())
}
