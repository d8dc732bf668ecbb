//! A standby serving reads: subscriptions woken by the leader's notices,
//! writes refused and sent on to the leader by the client library, never
//! an entry the leader has not signed, a lost listening connection made
//! again, and subscribers on a standby carried across kill -9 of the
//! leader.

use crate::clients::{config_of_all, library_subscriber};
use crate::common::*;

/// A replica PKI whose standbys refresh only on the leader's notices (and
/// on a new listening connection): their timer is an hour, so a test that
/// passes here shows the notices wake them.
fn notice_only_pki() -> Result<Option<TestPki>, BoxError> {
    let Some(pki) = replica_pki()? else {
        return Ok(None);
    };
    pki.edit_hub_toml(
        "replica_name = \"replica\"\n",
        "replica_name = \"replica\"\nstandby_refresh_ms = 3600000\n",
    )?;
    Ok(Some(pki))
}

/// A leader (`data-a`) and a standby (`data-b`) of `pki`, the leader's
/// process given `env`: the leader's address and the standby's.
async fn pair(
    pki: &TestPki,
    env: &[(&str, &str)],
) -> Result<(Replica, Replica, SocketAddr, SocketAddr), BoxError> {
    let mut a = Replica::spawn_with(pki, "data-a", "127.0.0.1:0", env)?;
    assert!(!a.started().await?, "{}", a.stderr());
    let mut b = Replica::spawn(pki, "data-b")?;
    assert!(b.started().await?, "{}", b.stderr());
    let leader = a.addr.ok_or("no leader address")?;
    let standby = b.reads.ok_or("the standby serves no reads")?;
    Ok((a, b, leader, standby))
}

/// Asserts, in the database, that `sql` (a boolean) holds.
fn holds(pki: &TestPki, sql: &str) -> TestResult {
    database(pki)?.execute(&format!(
        "DO $$ BEGIN IF NOT ({sql}) THEN RAISE EXCEPTION 'does not hold: {}'; END IF; END $$",
        sql.replace('\'', "''")
    ))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_subscriber_on_a_standby_gets_the_leaders_entries_woken_by_its_notices()
-> TestResult {
    let Some(pki) = notice_only_pki()? else {
        return Ok(());
    };
    let (_a, _b, leader, standby) = pair(&pki, &[]).await?;
    let reader = Client::connect(&config(pki.path(), RECIPIENT, standby)?).await?;
    let (want_tx, want_rx) = watch::channel(0usize);
    let subscription = tokio::spawn(library_subscriber(reader.clone(), want_rx));
    let pushed = push_some(&pki, "tax", leader, 5).await?;
    want_tx.send(pushed.len())?;
    let got = tokio::time::timeout(HANG, subscription)
        .await
        .map_err(|_| "the standby's subscriber was never woken")???;
    let expected: Vec<(String, u64)> = pushed.iter().map(|r| (r.channel.clone(), r.seq)).collect();
    assert_eq!(got, expected, "in order, each once");
    // Proved against a checkpoint the leader signed, served by the standby.
    let page = reader.pull(0, 100).await?;
    assert_eq!(page.entries.len(), pushed.len());
    let entries: Vec<&tongbao_client::VerifiedEntry> = page.entries.iter().collect();
    reader.prove_included(&entries).await?;
    let cp = reader.checkpoint("tax").await?;
    assert_eq!(cp.size, pushed.len() as u64);
    // The pull recorded its fetch marks (first write wins, outside the
    // lease's fence), written with the standby's next flush of them.
    let deadline = tokio::time::Instant::now() + HANG;
    while let Err(e) = holds(&pki, "(SELECT count(*) FROM fetched) >= 5") {
        if tokio::time::Instant::now() >= deadline {
            return Err(e);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_standby_refuses_writes_and_the_client_sends_them_to_the_leader() -> TestResult
{
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let (_a, _b, leader, standby) = pair(&pki, &[]).await?;
    // On the standby alone, a push is refused as a standby's, and nothing
    // is stored.
    let mut only_standby = config(pki.path(), "tax", standby)?;
    only_standby.push_retry_for = Duration::ZERO;
    let tax = Client::connect(&only_standby).await?;
    let refused = tax.push(note("to the standby").to_units([RECIPIENT])).await;
    match refused {
        Err(tongbao_client::ClientError::Rejected { code, message }) => {
            assert_eq!(code, tonic::Code::Unavailable);
            assert!(
                message.contains("standby replica: writes go to the leader"),
                "{message}"
            );
        }
        other => panic!("expected the standby's refusal, got {other:?}"),
    }
    // As any gRPC client sees it: the status and its metadata, and the
    // health of the services it serves no call of.
    let channel = tongbao_tests::raw_channel(&pki, "tax", standby).await?;
    let mut raw = tongbao_proto::pb::exchange_client::ExchangeClient::new(channel.clone());
    let refusal = raw
        .push(tongbao_proto::pb::PushRequest::default())
        .await
        .err()
        .ok_or("a standby accepted a push")?;
    assert!(
        tongbao_proto::replica::refused_by_standby(&refusal),
        "{refusal:?}"
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for (service, serving) in [
        ("", true),
        ("tongbao.v1.Exchange", true),
        ("tongbao.v1.Log", true),
        ("tongbao.v1.Workflow", false),
        ("tongbao.v1.Admin", false),
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await?
            .into_inner()
            .status;
        // 1 SERVING, 2 NOT_SERVING.
        assert_eq!(status, if serving { 1 } else { 2 }, "{service:?}");
    }
    holds(&pki, "(SELECT count(*) FROM entries) = 0")?;
    holds(&pki, "(SELECT count(*) FROM messages) = 0")?;

    // Listing [standby, leader], the push goes to the leader at once, and
    // the leader stays the hub in use.
    let tax = Client::connect(&config_of_all(pki.path(), "tax", &[standby, leader])?).await?;
    let first = tax
        .push(note("through the leader").to_units([RECIPIENT]))
        .await?;
    let second = tax.push(note("again").to_units([RECIPIENT])).await?;
    assert_eq!((first.seq, second.seq), (0, 1));
    assert_eq!(
        tax.hub(),
        format!("https://{leader}"),
        "the leader stays in use"
    );
    // A subscription through the standby sees them.
    let reader = Client::connect(&config(pki.path(), RECIPIENT, standby)?).await?;
    let (want_tx, want_rx) = watch::channel(2usize);
    let got = tokio::time::timeout(HANG, library_subscriber(reader, want_rx))
        .await
        .map_err(|_| "the standby never served the pushes")??;
    drop(want_tx);
    assert_eq!(got, vec![("tax".to_string(), 0), ("tax".to_string(), 1)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_standby_never_serves_an_entry_the_leader_has_not_signed() -> TestResult {
    let Some(pki) = notice_only_pki()? else {
        return Ok(());
    };
    // The leader's checkpoint cadence holds at its first run, until let go.
    let hold = tempfile::tempdir()?;
    let point = format!("checkpoint-cadence:hold:{}", hold.path().display());
    let (_a, _b, leader, standby) = pair(&pki, &[("TONGBAO_FAILPOINT", point.as_str())]).await?;
    wait_until(HANG, "the cadence holds", || {
        let held = hold.path().join("reached-1").exists();
        async move { Ok(held) }
    })
    .await?;
    let pushed = push_some(&pki, "tax", leader, 3).await?;
    holds(&pki, "(SELECT count(*) FROM entries) = 3")?;
    holds(
        &pki,
        "NOT EXISTS (SELECT 1 FROM checkpoints WHERE channel = 'tax')",
    )?;
    // Committed, not signed: the standby shows none of them.
    let reader = Client::connect(&config(pki.path(), RECIPIENT, standby)?).await?;
    let page = reader.pull(0, 100).await?;
    assert!(page.entries.is_empty(), "{:?}", page.entries.len());
    assert_eq!(page.head, 0);
    let tax = Client::connect(&config(pki.path(), "tax", standby)?).await?;
    let unsigned = tax.get_entry("tax", 0).await;
    assert_eq!(
        unsigned.as_ref().err().and_then(|e| e.code()),
        Some(tonic::Code::NotFound),
        "{unsigned:?}"
    );
    // One channel signed, another not: entries interleaved in the inbox
    // (tax 3, public-security 0, tax 4) are served up to the first not
    // covered, never past it.
    let first = push_some(&pki, "tax", leader, 1).await?;
    let lagging = push_some(&pki, "public-security", leader, 1).await?;
    let last = push_some(&pki, "tax", leader, 1).await?;
    let signed = Client::connect(&config(pki.path(), "tax", leader)?)
        .await?
        .checkpoint("tax")
        .await?;
    assert_eq!(signed.size, 5, "the leader signs tax when asked");
    let covered = pushed.len() + first.len();
    wait_until(
        HANG,
        "the standby serves what the tax checkpoint covers",
        || {
            let reader = reader.clone();
            async move { Ok(reader.pull(0, 100).await?.entries.len() >= covered) }
        },
    )
    .await?;
    // Refreshes forced from SQL (its timer is an hour) change nothing.
    for _ in 0..3 {
        database(&pki)?.execute("NOTIFY tongbao_moved, 'test'")?;
    }
    holds(
        &pki,
        "NOT EXISTS (SELECT 1 FROM checkpoints WHERE channel = 'public-security')",
    )?;
    let page = reader.pull(0, 100).await?;
    let shown: Vec<(String, u64)> = page
        .entries
        .iter()
        .map(|e| (e.channel().to_string(), e.seq()))
        .collect();
    let expected: Vec<(String, u64)> = pushed
        .iter()
        .chain(&first)
        .map(|r| (r.channel.clone(), r.seq))
        .collect();
    assert_eq!(shown, expected, "nothing past the first entry not covered");
    let ps = Client::connect(&config(pki.path(), "public-security", standby)?).await?;
    let unsigned = ps.get_entry("public-security", lagging[0].seq).await;
    assert_eq!(
        unsigned.as_ref().err().and_then(|e| e.code()),
        Some(tonic::Code::NotFound),
        "{unsigned:?}"
    );
    // Signed (and stored, with its notice): the standby serves them all.
    std::fs::write(hold.path().join("release-1"), b"")?;
    let want = pushed.len() + first.len() + lagging.len() + last.len();
    wait_until(HANG, "the standby serves the signed entries", || {
        let reader = reader.clone();
        async move { Ok(reader.pull(0, 100).await?.entries.len() == want) }
    })
    .await?;
    assert_eq!(tax.get_entry("tax", 0).await?.seq(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_standby_listens_again_after_its_listening_connection_is_cut() -> TestResult {
    let Some(pki) = notice_only_pki()? else {
        return Ok(());
    };
    let (_a, _b, leader, standby) = pair(&pki, &[]).await?;
    let reader = Client::connect(&config(pki.path(), RECIPIENT, standby)?).await?;
    let (want_tx, want_rx) = watch::channel(0usize);
    let subscription = tokio::spawn(library_subscriber(reader, want_rx));
    let before = push_some(&pki, "tax", leader, 2).await?;
    wait_until(HANG, "the standby listens", || {
        let pki = &pki;
        async move {
            Ok(holds(
                pki,
                "EXISTS (SELECT 1 FROM pg_stat_activity \
                 WHERE datname = current_database() \
                 AND application_name = 'tongbao-hub standby listen')",
            )
            .is_ok())
        }
    })
    .await?;
    database(&pki)?.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'tongbao-hub standby listen'",
    )?;
    let after = push_some(&pki, "public-security", leader, 3).await?;
    // It caught up on what it missed while not listening...
    let missed = before.len() + after.len();
    wait_until(HANG, "the standby catches up", || {
        let pki = &pki;
        async move { Ok(inbox(pki, standby).await?.len() == missed) }
    })
    .await?;
    // ... and listens again: the next entries come by notice (its timer
    // is an hour).
    let later = push_some(&pki, "tax", leader, 2).await?;
    want_tx.send(missed + later.len())?;
    let got = tokio::time::timeout(HANG, subscription).await.map_err(
        |_| "the standby did not listen again after its listening connection was cut",
    )???;
    let expected: Vec<(String, u64)> = before
        .iter()
        .chain(&after)
        .chain(&later)
        .map(|r| (r.channel.clone(), r.seq))
        .collect();
    assert_eq!(got, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn subscribers_on_a_standby_go_on_without_a_gap_across_kill_9_of_the_leader()
-> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let (mut a, mut b, leader, standby) = pair(&pki, &[]).await?;
    // The subscriber lists the standby only: it resumes there once it leads.
    let reader = Client::connect(&config_of_all(pki.path(), RECIPIENT, &[standby])?).await?;
    let (want_tx, want_rx) = watch::channel(0usize);
    let subscription = tokio::spawn(library_subscriber(reader, want_rx));
    let before = push_some(&pki, "tax", leader, 4).await?;
    wait_until(HANG, "the standby serves the first pushes", || {
        let pki = &pki;
        async move { Ok(inbox(pki, standby).await?.len() == 4) }
    })
    .await?;
    a.kill()?;
    wait_until(HANG, "the standby takes over", || {
        let leads = b.leads();
        async move { Ok(leads) }
    })
    .await?;
    assert_eq!(b.addr, Some(standby), "it leads where it served reads");
    let after = push_some(&pki, "tax", standby, 4).await?;
    want_tx.send(before.len() + after.len())?;
    let got = tokio::time::timeout(HANG, subscription)
        .await
        .map_err(|_| "the subscriber did not get every entry")???;
    let expected: Vec<(String, u64)> = before
        .iter()
        .chain(&after)
        .map(|r| (r.channel.clone(), r.seq))
        .collect();
    assert_eq!(got, expected, "no gap, no repeat");
    Ok(())
}
