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
    // The key pinned in client.toml is used; nothing is learned from the hub.
    assert!(state.hub_key.is_none());
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
    // Reading the forked channel fails too: every page is checked.
    let err = finance
        .pull(0, 100)
        .await
        .err()
        .ok_or("forked entries delivered")?;
    assert!(matches!(err, ClientError::Fork { .. }), "{err}");
    // A live subscription hands entries over, then checks them: it ends
    // with the fork within a couple of seconds.
    let mut live = Box::pin(finance.subscribe(0));
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        use futures::StreamExt;
        while let Some(item) = live.next().await {
            if let Err(e) = item {
                return Some(e);
            }
        }
        None
    })
    .await?;
    assert!(
        matches!(outcome, Some(ClientError::Fork { .. })),
        "{outcome:?}"
    );
    // The trust state still holds the honest checkpoint.
    let state = tongbao_client::trust::TrustState::load(
        &pki.path().join("units/finance/trust-state.json"),
    )?;
    assert_eq!(state.trusted("tax").map(|c| c.size), Some(10));
    hub.kill()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_cosigns_its_own_channel_and_everyone_can_check_it() -> TestResult {
    use tongbao_proto::checkpoint::{KeyType, NoteVerifier, open_checkpoint};
    use tongbao_proto::keys::SigningKey;
    use tongbao_proto::pb::{self, log_client::LogClient};
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    for i in 0..3 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    let note_text = tax.cosign_own_channel().await?;
    // Anyone fetching the checkpoint gets the cosignature with it.
    let mut log = LogClient::new(tongbao_tests::raw_channel(&t.pki, "finance", t.addr).await?);
    let served = log
        .get_checkpoint(pb::GetCheckpointRequest {
            channel: "tax".into(),
        })
        .await?
        .into_inner()
        .note;
    assert_eq!(served, note_text);
    let hub = NoteVerifier::from_vkey(
        &log.get_log_key(pb::GetLogKeyRequest {})
            .await?
            .into_inner()
            .vkey,
    )?;
    let tax_key = SigningKey::from_pem(&std::fs::read_to_string(t.pki.signing_key_path("tax"))?)?;
    let cosigner = NoteVerifier::new("tax", KeyType::CosignatureV1, tax_key.public_key())?;
    let (cp, verified) = open_checkpoint(&served, &hub, &[cosigner])?;
    assert_eq!(cp.size, 3);
    assert!(
        verified
            .iter()
            .any(|v| v.name == "tax" && v.timestamp.is_some()),
        "{verified:?}"
    );

    // Only the unit itself cosigns its channel, with its own key, the latest size.
    let line = tongbao_proto::checkpoint::Cosigner::new("tax", &SigningKey::generate()?)?
        .cosign(&cp, 1)?;
    let mut raw_tax = LogClient::new(tongbao_tests::raw_channel(&t.pki, "tax", t.addr).await?);
    let err = raw_tax
        .add_cosignature(pb::AddCosignatureRequest {
            channel: "tax".into(),
            size: 3,
            cosignature: line,
        })
        .await
        .err()
        .ok_or("forged cosignature accepted")?;
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let mut raw_fin = LogClient::new(tongbao_tests::raw_channel(&t.pki, "finance", t.addr).await?);
    let real = tongbao_proto::checkpoint::Cosigner::new("tax", &tax_key)?.cosign(&cp, 2)?;
    let err = raw_fin
        .add_cosignature(pb::AddCosignatureRequest {
            channel: "tax".into(),
            size: 3,
            cosignature: real.clone(),
        })
        .await
        .err()
        .ok_or("another unit cosigned tax's channel")?;
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    let err = raw_tax
        .add_cosignature(pb::AddCosignatureRequest {
            channel: "tax".into(),
            size: 2,
            cosignature: real,
        })
        .await
        .err()
        .ok_or("stale cosignature accepted")?;
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_hub_key_the_first_one_is_pinned() -> TestResult {
    let t = TestHub::start().await?;
    t.unit("tax")
        .await?
        .push(note("n").to_units(["finance"]))
        .await?;
    let mut cfg = t.pki.unit_config("finance", t.addr)?;
    let configured = cfg.hub_key.take().ok_or("pki init wrote no hub_key")?;
    cfg.trust_state = t.pki.path().join("tofu-trust.json");
    let finance = Client::connect(&cfg).await?;
    finance.pull(0, 10).await?;
    let state = tongbao_client::trust::TrustState::load(&cfg.trust_state)?;
    assert_eq!(state.hub_key.as_deref(), Some(configured.as_str()));
    t.stop().await
}
