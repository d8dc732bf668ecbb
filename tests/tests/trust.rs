//! Client-side verification of channels: inclusion in verified checkpoints,
//! and a hub that rolls back or forks a channel is caught by its clients.

use tongbao_client::{Client, ClientError};
use tongbao_tests::{HubProcess, TestHub, TestPki, TestResult, copy_dir, note};

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_entries_are_proven_in_verified_checkpoints() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    for i in 0..6 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    let finance = t.unit("finance").await?;
    let page = finance.pull(0, 10).await?;
    for e in &page.entries {
        let cp = finance.prove_inclusion(e).await?;
        assert_eq!((cp.channel.as_str(), cp.size), ("tax", 6));
    }
    // The trust state now holds size 6; growth is accepted with a proof.
    let state = tongbao_client::trust::TrustState::load(
        &t.pki.path().join("units/finance/trust-state.json"),
    )?;
    assert_eq!(state.trusted("tax").map(|c| c.size), Some(6));
    assert!(state.hub_key.is_some());
    tax.push(note("later").to_units(["finance"])).await?;
    let last = finance.pull(6, 10).await?.entries.remove(0);
    assert_eq!(finance.prove_inclusion(&last).await?.size, 7);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_serving_an_older_or_forked_channel_is_caught() -> TestResult {
    let pki = TestPki::generate()?;
    let data = pki.path().join("data");
    let old_copy = pki.path().join("data-at-5");

    // Five entries; keep a copy of the data as it was then.
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    for i in 0..5 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    hub.kill()?;
    copy_dir(&data, &old_copy)?;

    // Five more; finance verifies the channel at size 10.
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    for i in 5..10 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    let finance = Client::connect(&pki.unit_config("finance", hub.addr)?).await?;
    assert_eq!(finance.checkpoint("tax").await?.size, 10);
    hub.kill()?;

    // The operator brings back the old copy: a rollback.
    let hub = HubProcess::start_on(&pki, HUB, &old_copy)?;
    let finance = Client::connect(&pki.unit_config("finance", hub.addr)?).await?;
    match finance.checkpoint("tax").await {
        Err(ClientError::Rollback {
            trusted_size: 10,
            served_size: 5,
            evidence,
            ..
        }) => {
            let text = std::fs::read_to_string(&evidence)?;
            assert!(
                text.contains("tongbao/tax\n10\n") && text.contains("tongbao/tax\n5\n"),
                "{text}"
            );
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    // ...and writes a different history on it: a fork.
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    for i in 0..7 {
        tax.push(note(&format!("other {i}")).to_units(["finance"]))
            .await?;
    }
    let err = finance
        .checkpoint("tax")
        .await
        .err()
        .ok_or("fork accepted")?;
    assert!(
        matches!(
            err,
            ClientError::Fork {
                trusted_size: 10,
                served_size: 12,
                ..
            }
        ),
        "{err}"
    );
    // The trust state still holds the honest checkpoint.
    let state = tongbao_client::trust::TrustState::load(
        &pki.path().join("units/finance/trust-state.json"),
    )?;
    assert_eq!(state.trusted("tax").map(|c| c.size), Some(10));
    hub.kill()?;
    Ok(())
}
