//! What a standby must not keep doing: serving a unit the leader
//! suspended, holding up its takeover for subscribers, serving under a
//! key it made itself, staying unserved once it could serve, and serving
//! silently when it no longer refreshes.

use crate::common::*;
use tongbao_proto::pb;
use tongbao_proto::pb::exchange_client::ExchangeClient;
use tongbao_tests::Role;

/// A leader (`data-a`) and a standby (`data-b`) of `pki`, the standby's
/// process given `env`: both replicas, the leader's address and the
/// standby's.
pub(crate) async fn pair_with(
    pki: &TestPki,
    env: &[(&str, &str)],
) -> Result<(Replica, Replica, SocketAddr, SocketAddr), BoxError> {
    let mut a = Replica::spawn(pki, "data-a")?;
    assert!(!a.started().await?, "{}", a.stderr());
    let mut b = Replica::spawn_with(pki, "data-b", "127.0.0.1:0", env)?;
    assert!(b.started().await?, "{}", b.stderr());
    let leader = a.addr.ok_or("no leader address")?;
    let standby = b.reads.ok_or("the standby serves no reads")?;
    Ok((a, b, leader, standby))
}

/// A raw subscription of [`RECIPIENT`]'s inbox on `hub`, from cursor 0.
pub(crate) async fn raw_subscription(
    pki: &TestPki,
    hub: SocketAddr,
) -> Result<tonic::Streaming<pb::Delivery>, BoxError> {
    let channel = tongbao_tests::raw_channel(pki, RECIPIENT, hub).await?;
    Ok(ExchangeClient::new(channel)
        .subscribe(pb::SubscribeRequest {
            inbox: String::new(),
            after: 0,
        })
        .await?
        .into_inner())
}

/// Reads `stream` until it ends (with a status or without).
pub(crate) async fn until_it_ends(
    mut stream: tonic::Streaming<pb::Delivery>,
) -> Option<tonic::Status> {
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => return None,
            Err(status) => return Some(status),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_unit_the_leader_suspends_loses_its_subscription_on_a_standby() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let (_a, _b, leader, standby) = pair_with(&pki, &[]).await?;
    let stream = raw_subscription(&pki, standby).await?;
    let ended = tokio::spawn(until_it_ends(stream));
    Client::connect(&pki.role_config(Role::Security, leader))
        .await?
        .admin()
        .suspend_unit(pb::SuspendUnitRequest {
            unit: RECIPIENT.into(),
            reason: "standby test".into(),
        })
        .await?;
    tokio::time::timeout(HANG, ended)
        .await
        .map_err(|_| "the suspended unit's subscription on the standby stayed open")??;
    // And it cannot subscribe again there.
    let again = raw_subscription(&pki, standby).await;
    assert!(again.is_err(), "a suspended unit subscribed on a standby");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn subscribers_that_do_not_read_never_hold_up_a_takeover() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let (a, mut b, leader, standby) = pair_with(&pki, &[]).await?;
    // More than a stream's buffer and its HTTP/2 windows hold.
    let tax = Client::connect(&config(pki.path(), "tax", leader)?).await?;
    let body = "x".repeat(200_000);
    let mut pushed = Vec::new();
    for i in 0..40 {
        let draft =
            tongbao_client::Draft::new(pb::Kind::Notification, format!("large {i}"), body.clone());
        pushed.push(tax.push(draft.to_units([RECIPIENT])).await?);
    }
    // The last one, alone (all of them exceed a response's size).
    let last = pushed.len() as u64 - 1;
    let reader = Client::connect(&config(pki.path(), RECIPIENT, standby)?).await?;
    wait_until(HANG, "the standby serves every push", || {
        let reader = reader.clone();
        async move { Ok(reader.pull(last, 1).await?.entries.len() == 1) }
    })
    .await?;
    // One never read, one catching up slowly from cursor 0.
    let _stalled = raw_subscription(&pki, standby).await?;
    let mut slow = raw_subscription(&pki, standby).await?;
    let catching_up = tokio::spawn(async move {
        loop {
            match slow.message().await {
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    });
    a.terminate()?;
    wait_until(HANG, "the standby takes over", || {
        let leads = b.leads();
        async move { Ok(leads) }
    })
    .await
    .map_err(|e| {
        let log = b.stderr();
        let tail = log
            .get(log.len().saturating_sub(2000)..)
            .unwrap_or_default();
        format!("{e}; the end of the standby's log: {tail}")
    })?;
    assert_eq!(b.addr, Some(standby), "it leads where it served reads");
    let end = tokio::time::timeout(HANG, catching_up)
        .await
        .map_err(|_| "the slow subscription never ended")??;
    // Told to resume elsewhere, or its connection closed under it.
    if let Some(status) = end {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_standby_without_the_hub_key_never_makes_one_and_serves_once_it_has_it()
-> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let mut a = Replica::spawn(&pki, "data-a")?;
    assert!(!a.started().await?, "{}", a.stderr());
    let leader = a.addr.ok_or("no leader address")?;
    let pushed = push_some(&pki, "tax", leader, 2).await?;
    // The leader holds its key; the standby finds none.
    let key = pki.path().join(tongbao_server::pki::CHECKPOINT_KEY_FILE);
    let aside = pki.path().join("checkpoint.key.aside");
    std::fs::rename(&key, &aside)?;
    let mut b = Replica::spawn(&pki, "data-b")?;
    assert!(b.started().await?, "{}", b.stderr());
    assert!(
        b.reads.is_none(),
        "a standby without the hub key serves reads"
    );
    wait_until(HANG, "the standby says why it does not serve", || {
        let said = b.stderr().contains("a standby never creates the hub's key");
        async move { Ok(said) }
    })
    .await?;
    assert!(!key.exists(), "the standby made a hub key of its own");
    // Given the key, it serves without a restart.
    std::fs::rename(&aside, &key)?;
    wait_until(HANG, "the standby serves reads", || {
        let serves = {
            b.leads();
            b.reads.is_some()
        };
        async move { Ok(serves) }
    })
    .await?;
    let standby = b.reads.ok_or("no standby address")?;
    let want = pushed.len();
    wait_until(HANG, "the standby serves the pushes", || {
        let pki = &pki;
        async move { Ok(inbox(pki, standby).await?.len() == want) }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_standby_whose_refreshes_stall_says_so_and_refuses_reads() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    pki.edit_hub_toml(
        "replica_name = \"replica\"\n",
        "replica_name = \"replica\"\nstandby_refresh_ms = 100\n",
    )?;
    // Its first refresh after the start holds until the test ends.
    let hold = tempfile::tempdir()?;
    let point = format!("standby-refresh:hold:{}", hold.path().display());
    let (_a, b, _leader, standby) =
        pair_with(&pki, &[("TONGBAO_FAILPOINT", point.as_str())]).await?;
    let metrics = b.metrics.ok_or("no metrics address")?;
    wait_until(
        HANG,
        "the standby's health says it is stale",
        || async move {
            let (status, body) = health(metrics).await?;
            Ok(status.contains("503") && body.contains("standby: not refreshed for"))
        },
    )
    .await?;
    let channel = tongbao_tests::raw_channel(&pki, RECIPIENT, standby).await?;
    let refused = ExchangeClient::new(channel.clone())
        .pull(pb::PullRequest::default())
        .await
        .err()
        .ok_or("a stale standby served a pull")?;
    assert!(
        tongbao_proto::replica::refused_by_standby(&refused),
        "{refused:?}"
    );
    assert!(refused.message().contains("not refreshed"), "{refused:?}");
    let grpc_health = tonic_health::pb::health_client::HealthClient::new(channel);
    wait_until(HANG, "the standby's gRPC health says NOT_SERVING", || {
        let mut grpc_health = grpc_health.clone();
        async move {
            let status = grpc_health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "tongbao.v1.Exchange".into(),
                })
                .await?
                .into_inner()
                .status;
            // 2: NOT_SERVING.
            Ok(status == 2)
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn sighup_reloads_a_standbys_crl_when_the_file_watch_is_off() -> TestResult {
    use tongbao_server::pki::{self, Party, RevocationReason, RevokeTarget};
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    // Without the file watch only SIGHUP can act on a standby (it refuses
    // Admin/ReloadTls).
    pki.edit_hub_toml("watch_files = true", "watch_files = false")?;
    let (_a, b, _leader, standby) = pair_with(&pki, &[]).await?;
    pki::revoke(
        pki.path(),
        &RevokeTarget::Party(Party::unit("tax")?),
        RevocationReason::KeyCompromise,
        7,
    )?;
    // The old CRL is still in use.
    Client::connect(&config(pki.path(), "tax", standby)?).await?;
    let status = Command::new("kill")
        .args(["-HUP", &b.child.id().to_string()])
        .status()?;
    assert!(status.success(), "kill -HUP failed: {status}");
    wait_until(HANG, "the standby refuses the revoked certificate", || {
        let pki = &pki;
        async move {
            Ok(
                match Client::connect(&config(pki.path(), "tax", standby)?).await {
                    Err(e) => e.to_string().contains("certificate revoked"),
                    Ok(_) => false,
                },
            )
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn an_operators_refused_members_at_on_a_standby_writes_no_trail() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let (_a, b, _leader, standby) = pair_with(&pki, &[]).await?;
    let dir = pki.path().join("operators").join("audit-admin");
    let channel = tongbao_tests::raw_party_channel(&pki, &dir, standby).await?;
    let refused = pb::directory_client::DirectoryClient::new(channel)
        .members_at(pb::MembersAtRequest {
            mechanism: "any".into(),
            at_micros: 0,
        })
        .await
        .err()
        .ok_or("an audit operator read the members on a standby")?;
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // Recorded in the standby's access log only: no failed trail write.
    assert!(
        !b.stderr().contains("refusal not recorded"),
        "the standby tried to write the trail"
    );
    Ok(())
}
