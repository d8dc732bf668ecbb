//! Leader and standby: who serves, takeover on an orderly stop, and a
//! leader that lost its lease or its database stopping.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_hub_on_its_own_leads_and_says_so() -> TestResult {
    let t = tongbao_tests::TestHub::start().await?;
    let metrics = t
        .hub
        .as_ref()
        .and_then(|h| h.metrics_addr())
        .ok_or("no metrics listener")?;
    let scraped = scrape(metrics).await?;
    assert_eq!(sample(&scraped, "tongbao_replica_leader"), Some(1.0));
    let (status, body) = health(metrics).await?;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), r#"{"role":"leader","status":"SERVING"}"#);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_standby_serves_reads_and_takes_over_when_the_leader_stops() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let mut a = Replica::spawn(&pki, "data-a")?;
    assert!(!a.started().await?, "alone, the first replica leads");
    let a_addr = a.addr.ok_or("no address")?;
    let mut b = Replica::spawn(&pki, "data-b")?;
    assert!(b.started().await?, "the second waits as a standby");
    let b_metrics = b.metrics.ok_or("the standby names its metrics listener")?;
    let scraped = scrape(b_metrics).await?;
    assert_eq!(sample(&scraped, "tongbao_replica_leader"), Some(0.0));
    let (status, body) = health(b_metrics).await?;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), r#"{"role":"standby","status":"SERVING"}"#);
    let b_reads = b.reads.ok_or("the standby names its gRPC address")?;

    // A standby stops as a serving hub does, successfully.
    let mut c = Replica::spawn(&pki, "data-c")?;
    assert!(c.started().await?);
    c.terminate()?;
    assert!(c.exited().await?.success(), "{}", c.stderr());

    let tax = Client::connect(&config(pki.path(), "tax", a_addr)?).await?;
    let first = tax.push(note("before").to_units([RECIPIENT])).await?;
    let seen = tax.checkpoint("tax").await?;
    assert!(
        !b.leads(),
        "the standby does not serve while the leader does"
    );

    // The standby serves the leader's signed history (once the leader
    // signs it), on the address it keeps when it leads.
    wait_until(HANG, "the standby serves the first push", || {
        let pki = &pki;
        async move { Ok(inbox(pki, b_reads).await?.len() == 1) }
    })
    .await?;

    // The leader stops in order: the standby leads, on the same data.
    a.terminate()?;
    assert!(a.exited().await?.success(), "{}", a.stderr());
    wait_until(HANG, "the standby takes over", || {
        let leads = b.leads();
        async move { Ok(leads) }
    })
    .await?;
    let b_addr = b.addr.ok_or("no address")?;
    assert_eq!(b_addr, b_reads, "it leads where it served reads");
    let tax = Client::connect(&config(pki.path(), "tax", b_addr)?).await?;
    let second = tax.push(note("after").to_units([RECIPIENT])).await?;
    assert_eq!(second.seq, first.seq + 1, "it continues the channel");
    let later = tax.checkpoint("tax").await?;
    assert!(
        later.size >= seen.size,
        "consistent with what the first served"
    );
    assert_eq!(
        inbox(&pki, b_addr).await?,
        vec![
            ("tax".to_string(), first.seq),
            ("tax".to_string(), second.seq)
        ]
    );
    // Its metrics listener stayed where it was, and says it leads now.
    let scraped = scrape(b_metrics).await?;
    assert_eq!(sample(&scraped, "tongbao_replica_leader"), Some(1.0));
    let (status, body) = health(b_metrics).await?;
    assert!(status.contains("200"), "{status} {body}");
    b.terminate()?;
    assert!(b.exited().await?.success(), "{}", b.stderr());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_leader_whose_lease_moved_on_writes_nothing_more_and_stops() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let mut a = Replica::spawn(&pki, "data-a")?;
    assert!(!a.started().await?);
    let a_addr = a.addr.ok_or("no address")?;
    let acked = push_some(&pki, "tax", a_addr, 5).await?;
    // Another replica took over: the epoch moved on.
    database(&pki)?.execute("UPDATE lease SET epoch = epoch + 1")?;
    let tax = Client::connect(&config(pki.path(), "tax", a_addr)?).await;
    if let Ok(tax) = tax {
        let refused = tax.push(note("too late").to_units([RECIPIENT])).await;
        assert!(refused.is_err(), "a fenced leader appends nothing");
    }
    let status = a.exited().await?;
    assert!(!status.success(), "it stops failing");
    let said = a.stderr();
    assert!(
        said.contains("lost the database lease to another replica"),
        "{said}"
    );
    // A replica started now leads, with every acknowledged push, and
    // nothing the fenced leader was asked after.
    let mut b = Replica::spawn(&pki, "data-b")?;
    assert!(!b.started().await?, "{}", b.stderr());
    let b_addr = b.addr.ok_or("no address")?;
    let expected: Vec<(String, u64)> = acked.iter().map(|r| (r.channel.clone(), r.seq)).collect();
    assert_eq!(inbox(&pki, b_addr).await?, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_leader_that_loses_its_database_connection_stops_saying_why() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let mut a = Replica::spawn(&pki, "data-a")?;
    assert!(!a.started().await?);
    let a_addr = a.addr.ok_or("no address")?;
    let acked = push_some(&pki, "tax", a_addr, 3).await?;
    // The lease's session ends, as at a database restart.
    database(&pki)?.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'tongbao-hub lease'",
    )?;
    let status = a.exited().await?;
    assert!(!status.success(), "it stops failing");
    let said = a.stderr();
    assert!(said.contains("lost the database connection"), "{said}");
    // Restarted (as `Restart=on-failure` would), it leads again with
    // everything acknowledged.
    let mut again = Replica::spawn(&pki, "data-a")?;
    assert!(!again.started().await?, "{}", again.stderr());
    let expected: Vec<(String, u64)> = acked.iter().map(|r| (r.channel.clone(), r.seq)).collect();
    assert_eq!(
        inbox(&pki, again.addr.ok_or("no address")?).await?,
        expected
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_standby_that_cannot_serve_yet_waits_without_serving() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let mut a = Replica::spawn(&pki, "data-a")?;
    assert!(!a.started().await?, "{}", a.stderr());
    // No stored registry: a standby has nothing to authorize a call with.
    database(&pki)?.execute("DELETE FROM registry")?;
    let mut b = Replica::spawn(&pki, "data-b")?;
    assert!(b.started().await?, "{}", b.stderr());
    assert_eq!(b.reads, None, "it serves no reads");
    let b_metrics = b.metrics.ok_or("the standby names its metrics listener")?;
    let scraped = scrape(b_metrics).await?;
    assert_eq!(sample(&scraped, "tongbao_replica_leader"), Some(0.0));
    let (status, body) = health(b_metrics).await?;
    assert!(status.contains("503"), "{status}");
    assert_eq!(
        body.trim(),
        r#"{"reason":"standby: waiting for the lease","role":"standby","status":"NOT_SERVING"}"#
    );
    // It still takes over, seeding the registry from its config.
    a.terminate()?;
    assert!(a.exited().await?.success(), "{}", a.stderr());
    wait_until(HANG, "the standby takes over", || {
        let leads = b.leads();
        async move { Ok(leads) }
    })
    .await?;
    let b_addr = b.addr.ok_or("no address")?;
    push_some(&pki, "tax", b_addr, 1).await?;
    assert_eq!(inbox(&pki, b_addr).await?.len(), 1);
    Ok(())
}

/// A standby taking over waits for an earlier leader's last write (the
/// fence); a stop signal meanwhile ends it at once, successfully, and its
/// UPDATE is cancelled at the database: no epoch is raised behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_standby_stopped_while_taking_over_stops_and_raises_no_epoch() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let mut a = Replica::spawn(&pki, "data-a")?;
    assert!(!a.started().await?, "alone, the first replica leads");
    let mut b = Replica::spawn(&pki, "data-b")?;
    assert!(b.started().await?, "the second waits as a standby");
    let url = database(&pki)?.url();
    let (writer, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let (watcher, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    // An earlier leader's write still in flight: the lease row held.
    writer
        .batch_execute("BEGIN; SELECT epoch FROM lease WHERE id = 1 FOR SHARE")
        .await?;
    let epoch = || async {
        let row = watcher
            .query_one("SELECT epoch FROM lease WHERE id = 1", &[])
            .await?;
        Ok::<i64, BoxError>(row.try_get(0)?)
    };
    let before = epoch().await?;
    let waiting = || async {
        let row = watcher
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                 AND query LIKE 'UPDATE lease SET epoch%' AND state = 'active'",
                &[],
            )
            .await?;
        Ok::<bool, BoxError>(row.is_some())
    };
    a.terminate()?;
    assert!(a.exited().await?.success(), "{}", a.stderr());
    wait_until(HANG, "the standby's takeover waits for the write", || {
        waiting()
    })
    .await?;
    b.terminate()?;
    assert!(b.exited().await?.success(), "{}", b.stderr());
    assert!(
        b.stderr().contains("stopped while taking over"),
        "{}",
        b.stderr()
    );
    assert!(!waiting().await?, "the takeover's UPDATE still waits");
    writer.batch_execute("COMMIT").await?;
    assert_eq!(
        epoch().await?,
        before,
        "an epoch was raised behind the stop"
    );
    Ok(())
}
