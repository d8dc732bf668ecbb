//! Kill -9 of the leader under load, the clients listing every replica
//! and failing over by themselves (the client library's `hubs`).

use crate::common::*;

/// A loopback address for a replica, known before it listens: a port
/// bound at 0 and closed at once. Clients list every replica from the
/// start: a standby serves reads there and refuses writes (the library
/// sends them on to the next replica), and keeps the port when it leads.
pub(crate) fn reserved_addr() -> Result<SocketAddr, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The retry window of the clients below. A takeover here is the killed
/// leader's session ending (at once: its socket closes), a standby taking
/// the lease (it tries each second) and starting (seconds): well inside
/// 30 s even on a loaded machine, so a push spans a whole takeover and is
/// never reported failed; the window is only a bound, never waited out.
pub(crate) const TAKEOVER_WINDOW: Duration = Duration::from_secs(30);

/// `unit`'s config listing every replica, with [`TAKEOVER_WINDOW`].
pub(crate) fn config_of_all(
    pki_dir: &Path,
    unit: &str,
    hubs: &[SocketAddr],
) -> Result<ClientConfig, BoxError> {
    let mut config = ClientConfig::load(&pki_dir.join("units").join(unit).join("client.toml"))?
        .with_hubs(hubs.iter().map(|a| format!("https://{a}")))?;
    config.push_retry_for = TAKEOVER_WINDOW;
    Ok(config)
}

/// Pushes from `client` until told to stop, each message once, leaving
/// every failover to the library: a push that fails fails the test.
/// Every 16 pushes it verifies its channel's checkpoint (the library
/// proves it extends the last one seen, from whichever replica leads).
/// Returns the receipts and the checkpoint sizes seen.
pub(crate) async fn library_pusher(
    client: Client,
    unit: &'static str,
    stop: watch::Receiver<bool>,
    acked: Arc<AtomicUsize>,
) -> Result<(Vec<PushReceipt>, Vec<u64>), BoxError> {
    let mut receipts = Vec::new();
    let mut sizes = Vec::new();
    for i in 0.. {
        if *stop.borrow() {
            break;
        }
        let draft = note(&format!("{unit} {i}"))
            .to_units([RECIPIENT])
            .with_id(format!("{unit}-{i}"));
        let receipt = tokio::time::timeout(HANG, client.push(draft))
            .await
            .map_err(|_| format!("{unit}: push {i} hung"))?
            .map_err(|e| format!("{unit}: push {i} reported failed: {e}"))?;
        receipts.push(receipt);
        acked.fetch_add(1, Ordering::Relaxed);
        if i % 16 == 0 {
            sizes.push(checkpoint_covering(&client, unit, i + 1).await?);
        }
    }
    Ok((receipts, sizes))
}

/// The size of `unit`'s checkpoint once it covers `size` entries. The
/// hub in use may be a standby (reads go to the first replica that
/// answers), which serves the leader's latest signed checkpoint, a second
/// or so behind the leader: asked again until it covers them.
pub(crate) async fn checkpoint_covering(
    client: &Client,
    unit: &str,
    size: u64,
) -> Result<u64, BoxError> {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let cp = tokio::time::timeout(HANG, client.checkpoint(unit))
            .await
            .map_err(|_| format!("{unit}: checkpoint hung"))?
            .map_err(|e| format!("{unit}: checkpoint of size {size}: {e}"))?;
        if cp.size >= size {
            return Ok(cp.size);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{unit}: checkpoint {} never covered {size}", cp.size).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One subscription of `RECIPIENT` from cursor 0, never reopened by hand:
/// every delivery must be the next cursor, and none may be an error.
/// Returns the deliveries (channel, seq) once `want` of them arrived.
pub(crate) async fn library_subscriber(
    client: Client,
    mut want: watch::Receiver<usize>,
) -> Result<Vec<(String, u64)>, BoxError> {
    use futures::StreamExt;
    let mut got: Vec<(String, u64)> = Vec::new();
    let mut stream = Box::pin(client.subscribe(0));
    loop {
        if *want.borrow() > 0 && got.len() >= *want.borrow() {
            return Ok(got);
        }
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(e)) => {
                    take_next(&mut got, &e)?;
                }
                Some(Err(e)) => return Err(format!("subscription failed: {e}").into()),
                None => return Err("subscription ended".into()),
            },
            _ = want.changed() => {}
        }
    }
}

/// `task`'s outcome, its error also written out at once (the test may
/// stop before it joins the task).
pub(crate) async fn said<T>(
    task: impl Future<Output = Result<T, BoxError>>,
) -> Result<T, BoxError> {
    let outcome = task.await;
    if let Err(e) = &outcome {
        eprintln!("failed: {e}");
    }
    outcome
}

/// Waits for 20 more acknowledged pushes. A pusher or the subscriber
/// that stopped before it was told to has failed: the test stops at once
/// (its error is read when it is joined).
pub(crate) async fn more_acknowledged<A, B>(
    acked: &AtomicUsize,
    pushers: &[tokio::task::JoinHandle<A>],
    subscription: &tokio::task::JoinHandle<B>,
) -> TestResult {
    let at_least = acked.load(Ordering::Relaxed) + 20;
    wait_until(HANG, "pushes are acknowledged", || {
        let n = acked.load(Ordering::Relaxed);
        let stopped = pushers.iter().any(|p| p.is_finished()) || subscription.is_finished();
        async move {
            if stopped {
                return Err("a pusher or the subscriber stopped early".into());
            }
            Ok(n >= at_least)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
pub(crate) async fn clients_listing_every_replica_fail_over_by_themselves_across_kill_9()
-> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let dirs = ["data-0", "data-1", "data-2"];
    let addrs = [reserved_addr()?, reserved_addr()?, reserved_addr()?];
    let mut replicas = vec![Replica::spawn_on(&pki, dirs[0], &addrs[0].to_string())?];
    assert!(!replicas[0].started().await?, "{}", replicas[0].stderr());
    assert_eq!(replicas[0].addr, Some(addrs[0]), "listens where reserved");
    for (dir, addr) in dirs.iter().zip(addrs).skip(1) {
        let mut r = Replica::spawn_on(&pki, dir, &addr.to_string())?;
        assert!(r.started().await?, "a standby while another leads");
        replicas.push(r);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let (want_tx, want_rx) = watch::channel(0usize);
    let acked = Arc::new(AtomicUsize::new(0));
    let senders = ["tax", "public-security", "pbc-taiyuan"];
    let mut pushers = Vec::new();
    for unit in senders {
        let client = Client::connect(&config_of_all(pki.path(), unit, &addrs)?).await?;
        pushers.push(tokio::spawn(said(library_pusher(
            client,
            unit,
            stop_rx.clone(),
            acked.clone(),
        ))));
    }
    let recipient = Client::connect(&config_of_all(pki.path(), RECIPIENT, &addrs)?).await?;
    let subscription = tokio::spawn(said(library_subscriber(recipient, want_rx)));

    let mut leading = 0;
    for round in 1..=3usize {
        more_acknowledged(&acked, &pushers, &subscription).await?;
        replicas[leading].kill()?;
        let next = leader(&mut replicas, Some(leading)).await?;
        assert_eq!(replicas[next].addr, Some(addrs[next]));
        eprintln!(
            "round {round}: killed replica {leading} after {} acknowledged pushes; replica {next} leads",
            acked.load(Ordering::Relaxed)
        );
        replicas[leading] = Replica::spawn_on(&pki, dirs[leading], &addrs[leading].to_string())?;
        assert!(
            replicas[leading].started().await?,
            "round {round}: the restarted replica waits as a standby"
        );
        leading = next;
    }
    more_acknowledged(&acked, &pushers, &subscription).await?;
    stop_tx.send(true)?;

    let mut receipts = Vec::new();
    for (unit, p) in senders.iter().zip(pushers) {
        let (mine, sizes) = tokio::time::timeout(HANG, p)
            .await
            .map_err(|_| format!("{unit}: the pusher did not stop"))???;
        // Each message once, in order: entry i is message i.
        for (i, r) in mine.iter().enumerate() {
            assert_eq!(r.message_id, format!("{unit}-{i}"));
            assert_eq!(r.seq, i as u64, "{unit}: entry {i} is message {i}, once");
        }
        let reader = Client::connect(&config_of_all(pki.path(), unit, &addrs)?).await?;
        let last = checkpoint_covering(&reader, unit, mine.len() as u64).await?;
        assert_eq!(
            last,
            mine.len() as u64,
            "{unit}: nothing lost, nothing twice"
        );
        assert!(
            sizes.is_sorted(),
            "{unit}: checkpoints only grow: {sizes:?}"
        );
        assert!(sizes.iter().all(|s| *s <= last), "{sizes:?}");
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
    let mut got = delivered;
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "every acknowledged push delivered, once");
    Ok(())
}
