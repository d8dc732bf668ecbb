//! Kill -9 of the leader under load, the clients reconnecting by hand.

use crate::common::*;

/// What the load's pushers and subscriber share.
pub(crate) struct Load {
    pub(crate) pki_dir: PathBuf,
    /// The leader's address, as the test learns it.
    pub(crate) leader: watch::Receiver<SocketAddr>,
    /// Set when the pushers are to stop.
    pub(crate) stop: watch::Receiver<bool>,
    /// Pushes acknowledged so far, all pushers.
    pub(crate) acked: Arc<AtomicUsize>,
}

/// Connects to the leader, waiting for the next one while it cannot.
pub(crate) async fn connect_to_leader(
    load: &mut Load,
    unit: &str,
) -> Result<(Client, SocketAddr), BoxError> {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let addr = *load.leader.borrow_and_update();
        if let Ok(c) = Client::connect(&config(&load.pki_dir, unit, addr)?).await {
            return Ok((c, addr));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{unit}: no leader to connect to").into());
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), load.leader.changed()).await;
    }
}

/// Pushes from `unit` until told to stop, each message until it is
/// acknowledged (by whichever replica leads, the same signed message
/// again); checks its channel's checkpoint on every leader it meets.
/// Returns the receipts and the checkpoint sizes it saw.
pub(crate) async fn pusher(
    mut load: Load,
    unit: &'static str,
) -> Result<(Vec<PushReceipt>, Vec<u64>), BoxError> {
    let (mut client, mut at) = connect_to_leader(&mut load, unit).await?;
    let mut receipts = Vec::new();
    let mut sizes = Vec::new();
    let deadline = tokio::time::Instant::now() + HANG * 4;
    for i in 0.. {
        if *load.stop.borrow() {
            break;
        }
        let signed = client.sign(
            note(&format!("{unit} {i}"))
                .to_units([RECIPIENT])
                .with_id(format!("{unit}-{i}")),
        )?;
        loop {
            match client.push_signed(signed.clone()).await {
                Ok(r) => {
                    receipts.push(r);
                    load.acked.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!("{unit}: push {i} never acknowledged: {e}").into());
                }
                Err(_) => {
                    // The leader may be gone: the next one, or this one again.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), load.leader.changed()).await;
                    let before = at;
                    (client, at) = connect_to_leader(&mut load, unit).await?;
                    if at != before {
                        // Every checkpoint from any replica extends the last
                        // one this unit verified (the library checks it).
                        sizes.push(checkpoint_on(&client, unit).await?);
                    }
                }
            }
        }
        if i % 16 == 0 {
            sizes.push(checkpoint_on(&client, unit).await?);
        }
    }
    Ok((receipts, sizes))
}

/// Whether `e` says a replica served history inconsistent with what this
/// client verified before: never to be retried away.
pub(crate) fn inconsistent(e: &tongbao_client::ClientError) -> bool {
    matches!(
        e,
        tongbao_client::ClientError::Rollback { .. }
            | tongbao_client::ClientError::Fork { .. }
            | tongbao_client::ClientError::Checkpoint { .. }
    )
}

/// The channel's checkpoint, verified against the last this client saw; a
/// leader that goes away meanwhile is asked again after the next one.
pub(crate) async fn checkpoint_on(client: &Client, channel: &str) -> Result<u64, BoxError> {
    match client.checkpoint(channel).await {
        Ok(cp) => Ok(cp.size),
        Err(e) if inconsistent(&e) => {
            Err(format!("inconsistent checkpoint of {channel}: {e}").into())
        }
        // The replica went away: no checkpoint from it.
        Err(_) => Ok(0),
    }
}

/// Subscribes as `RECIPIENT` from cursor 0, resuming from its cursor on
/// each new leader; every delivery must be the next cursor. Returns the
/// deliveries (channel, seq) in cursor order.
pub(crate) async fn subscriber(
    mut load: Load,
    want: watch::Receiver<usize>,
) -> Result<Vec<(String, u64)>, BoxError> {
    use futures::StreamExt;
    let mut got: Vec<(String, u64)> = Vec::new();
    let mut want = want;
    loop {
        let (client, _) = connect_to_leader(&mut load, RECIPIENT).await?;
        let mut stream = Box::pin(client.subscribe(got.len() as u64));
        loop {
            if *want.borrow() > 0 && got.len() >= *want.borrow() {
                return Ok(got);
            }
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(e)) => {
                        take_next(&mut got, &e)?;
                    }
                    Some(Err(e)) if inconsistent(&e) => {
                        return Err(format!("subscription: {e}").into());
                    }
                    // The leader went away: resume on the next.
                    Some(Err(_)) | None => break,
                },
                _ = load.leader.changed() => break,
                _ = want.changed() => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
pub(crate) async fn kill_9_of_the_leader_under_load_loses_and_repeats_nothing() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let dirs = ["data-0", "data-1", "data-2"];
    let mut replicas = vec![Replica::spawn(&pki, dirs[0])?];
    assert!(!replicas[0].started().await?, "{}", replicas[0].stderr());
    for dir in &dirs[1..] {
        let mut r = Replica::spawn(&pki, dir)?;
        assert!(r.started().await?, "a standby while another leads");
        replicas.push(r);
    }
    let first = replicas[0].addr.ok_or("no address")?;
    let (leader_tx, leader_rx) = watch::channel(first);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (want_tx, want_rx) = watch::channel(0usize);
    let acked = Arc::new(AtomicUsize::new(0));
    let load = || Load {
        pki_dir: pki.path().to_path_buf(),
        leader: leader_rx.clone(),
        stop: stop_rx.clone(),
        acked: acked.clone(),
    };
    let senders = ["tax", "public-security", "pbc-taiyuan"];
    let pushers: Vec<_> = senders
        .iter()
        .map(|unit| tokio::spawn(pusher(load(), unit)))
        .collect();
    let subscription = tokio::spawn(subscriber(load(), want_rx));

    let mut leading = 0;
    for round in 1..=3usize {
        let at_least = acked.load(Ordering::Relaxed) + 20;
        wait_until(HANG, "pushes are acknowledged", || {
            let n = acked.load(Ordering::Relaxed);
            async move { Ok(n >= at_least) }
        })
        .await?;
        // Kill -9 the leader under load; a standby takes over.
        replicas[leading].kill()?;
        let next = leader(&mut replicas, Some(leading)).await?;
        leader_tx.send(replicas[next].addr.ok_or("no address")?)?;
        eprintln!(
            "round {round}: killed replica {leading} after {} acknowledged pushes; replica {next} leads",
            acked.load(Ordering::Relaxed)
        );
        // The killed one, restarted, waits as a standby.
        replicas[leading] = Replica::spawn(&pki, dirs[leading])?;
        assert!(
            replicas[leading].started().await?,
            "round {round}: the restarted replica waits as a standby"
        );
        leading = next;
    }
    // Some more under the last leader, then stop pushing.
    let at_least = acked.load(Ordering::Relaxed) + 20;
    wait_until(HANG, "pushes are acknowledged", || {
        let n = acked.load(Ordering::Relaxed);
        async move { Ok(n >= at_least) }
    })
    .await?;
    stop_tx.send(true)?;
    let mut receipts = Vec::new();
    for (unit, p) in senders.iter().zip(pushers) {
        let (mine, sizes) = tokio::time::timeout(HANG, p)
            .await
            .map_err(|_| format!("{unit}: the pusher did not stop"))???;
        // Each message id once, in order: the channel holds exactly them.
        for (i, r) in mine.iter().enumerate() {
            assert_eq!(r.message_id, format!("{unit}-{i}"));
            assert_eq!(r.seq, i as u64, "{unit}: entry {i} is message {i}, once");
        }
        let last = tongbao_client::Client::connect(&config(
            pki.path(),
            unit,
            replicas[leading].addr.ok_or("no address")?,
        )?)
        .await?
        .checkpoint(unit)
        .await?;
        assert_eq!(
            last.size,
            mine.len() as u64,
            "{unit}: nothing lost, nothing twice"
        );
        assert!(sizes.iter().all(|s| *s <= last.size), "{sizes:?}");
        eprintln!(
            "{unit}: {} pushes acknowledged; checkpoint sizes seen {sizes:?}",
            mine.len()
        );
        receipts.extend(mine);
    }
    want_tx.send(receipts.len())?;
    let delivered = tokio::time::timeout(HANG, subscription)
        .await
        .map_err(|_| "the subscriber did not receive every acknowledged push")???;
    let mut expected: Vec<(String, u64)> = receipts
        .iter()
        .map(|r| (r.channel.clone(), r.seq))
        .collect();
    let mut got = delivered.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "every acknowledged push delivered, once");
    Ok(())
}
