//! Several hub replicas on one PostgreSQL database (`[store] replica =
//! true`): one leader serves, the others wait as standbys and take over
//! when it stops, dies or loses the database; a leader that lost the lease
//! writes nothing more and stops, saying why.
//!
//! Runs only with a test PostgreSQL server (`TONGBAO_TEST_PG_URL`, see
//! .ci/postgres.sh); without one each test says it was skipped and passes
//! (but the first, of a hub on its own, which runs on either store).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tokio::sync::watch;
use tongbao_client::{Client, ClientConfig, PushReceipt};
use tongbao_server::store::pg_store::testdb::TestDb;
use tongbao_tests::{BoxError, TestPki, TestResult, note, sample, scrape, wait_until};

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");

/// A bound that only catches a hang: tests wait for events, never time
/// them.
const HANG: Duration = Duration::from_secs(120);

/// The unit every pushed message goes to, and which subscribes.
const RECIPIENT: &str = "civil-affairs";

/// A PKI whose `hub.toml` runs its hubs as replicas on a test database of
/// its own; None (the test is skipped, saying so) without a test server.
fn replica_pki() -> Result<Option<TestPki>, BoxError> {
    if std::env::var(tongbao_server::store::pg_store::testdb::URL_VAR).is_err() {
        eprintln!("skipped: TONGBAO_TEST_PG_URL is not set (replicas need PostgreSQL)");
        return Ok(None);
    }
    let mut pki = TestPki::generate()?;
    if pki.pg.is_some() {
        pki.edit_hub_toml(
            "pool_size = 4\n",
            "pool_size = 4\nreplica = true\nreplica_name = \"replica\"\n",
        )?;
    } else {
        let db = TestDb::create()?.ok_or("no test database")?;
        let path = pki.path().join("hub.toml");
        let mut text = std::fs::read_to_string(&path)?;
        text.push_str(&format!(
            "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\npool_size = 4\nreplica = true\nreplica_name = \"replica\"\n",
            db.url()
        ));
        std::fs::write(&path, text)?;
        pki.pg = Some(db);
    }
    Ok(Some(pki))
}

fn database(pki: &TestPki) -> Result<&TestDb, BoxError> {
    Ok(pki.pg.as_ref().ok_or("no test database")?)
}

/// One `tongbao-hub serve` process, a replica with a data directory of
/// its own; killed on drop.
struct Replica {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The gRPC address, once it leads.
    addr: Option<SocketAddr>,
    /// The metrics listener, said while a standby (kept once it leads).
    metrics: Option<SocketAddr>,
    standby: bool,
}

impl Replica {
    fn spawn(pki: &TestPki, data: &str) -> Result<Self, BoxError> {
        Self::spawn_on(pki, data, "127.0.0.1:0")
    }

    /// Spawns it to listen on `listen` once it leads.
    fn spawn_on(pki: &TestPki, data: &str, listen: &str) -> Result<Self, BoxError> {
        let mut child = Command::new(HUB)
            .args(["serve", "--config"])
            .arg(pki.path().join("hub.toml"))
            .args(["--listen", listen, "--data-dir"])
            .arg(pki.path().join(data))
            // Each replica's access log is its own, named for it.
            .args(["--replica-name", data])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut err = child.stderr.take().ok_or("no stderr")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let written = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    return;
                }
                if let Ok(mut s) = written.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Ok(Self {
            child,
            lines,
            stderr,
            addr: None,
            metrics: None,
            standby: false,
        })
    }

    /// Reads what it printed so far; whether it leads.
    fn leads(&mut self) -> bool {
        while let Ok(line) = self.lines.try_recv() {
            if let Some(a) = line.strip_prefix("tongbao-hub listening on ") {
                self.addr = a.trim().parse().ok();
            } else if let Some(m) = line.strip_prefix("tongbao-hub standby; metrics on ") {
                self.metrics = m.trim().parse().ok();
                self.standby = true;
            }
        }
        self.addr.is_some()
    }

    /// Waits for its first line: standby (true) or leading (false).
    async fn started(&mut self) -> Result<bool, BoxError> {
        wait_until(HANG, "the replica says what it is", || {
            let said = self.leads() || self.standby;
            async move { Ok(said) }
        })
        .await?;
        Ok(self.standby && self.addr.is_none())
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn kill(&mut self) -> Result<(), BoxError> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    fn terminate(&self) -> Result<(), BoxError> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("kill -TERM failed: {status}").into());
        }
        Ok(())
    }

    async fn exited(&mut self) -> Result<ExitStatus, BoxError> {
        let mut status = None;
        wait_until(HANG, "the replica exits", || {
            let s = self.child.try_wait();
            let done = matches!(s, Ok(Some(_)));
            if let Ok(Some(s)) = s {
                status = Some(s);
            }
            async move { Ok(done) }
        })
        .await?;
        Ok(status.ok_or("no exit status")?)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until one of `replicas` (but `dead`) leads; its index.
async fn leader(replicas: &mut [Replica], dead: Option<usize>) -> Result<usize, BoxError> {
    let mut leading = Vec::new();
    wait_until(HANG, "a replica leads", || {
        leading.clear();
        for (i, r) in replicas.iter_mut().enumerate() {
            if Some(i) != dead && r.leads() {
                leading.push(i);
            }
        }
        let done = !leading.is_empty();
        async move { Ok(done) }
    })
    .await?;
    assert_eq!(leading.len(), 1, "one leader at a time");
    Ok(leading[0])
}

fn config(pki_dir: &Path, unit: &str, hub: SocketAddr) -> Result<ClientConfig, BoxError> {
    Ok(
        ClientConfig::load(&pki_dir.join("units").join(unit).join("client.toml"))?
            .with_hub(format!("https://{hub}")),
    )
}

/// `GET /health` of a metrics listener: the status line and the body.
async fn health(addr: SocketAddr) -> Result<(String, String), BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no body")?;
    Ok((
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    ))
}

/// Entries of `RECIPIENT`'s inbox on the hub at `addr`: (channel, seq).
async fn inbox(pki: &TestPki, addr: SocketAddr) -> Result<Vec<(String, u64)>, BoxError> {
    let c = Client::connect(&config(pki.path(), RECIPIENT, addr)?).await?;
    let page = c.pull(0, 1000).await?;
    Ok(page
        .entries
        .iter()
        .map(|e| (e.channel().to_string(), e.seq()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_on_its_own_leads_and_says_so() -> TestResult {
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
async fn a_standby_serves_nothing_and_takes_over_when_the_leader_stops() -> TestResult {
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
    assert!(status.contains("503"), "{status}");
    assert!(body.contains("NOT_SERVING"), "{body}");
    assert!(body.contains("standby: waiting for the lease"), "{body}");

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

    // The leader stops in order: the standby leads, on the same data.
    a.terminate()?;
    assert!(a.exited().await?.success(), "{}", a.stderr());
    wait_until(HANG, "the standby takes over", || {
        let leads = b.leads();
        async move { Ok(leads) }
    })
    .await?;
    let b_addr = b.addr.ok_or("no address")?;
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

/// Pushes `count` messages from `unit` to the leader at `addr`.
async fn push_some(
    pki: &TestPki,
    unit: &str,
    addr: SocketAddr,
    count: usize,
) -> Result<Vec<PushReceipt>, BoxError> {
    let c = Client::connect(&config(pki.path(), unit, addr)?).await?;
    let mut receipts = Vec::new();
    for i in 0..count {
        receipts.push(
            c.push(note(&format!("{unit} {i}")).to_units([RECIPIENT]))
                .await?,
        );
    }
    Ok(receipts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_moved_on_writes_nothing_more_and_stops() -> TestResult {
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
async fn a_leader_that_loses_its_database_connection_stops_saying_why() -> TestResult {
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

/// What the load's pushers and subscriber share.
struct Load {
    pki_dir: PathBuf,
    /// The leader's address, as the test learns it.
    leader: watch::Receiver<SocketAddr>,
    /// Set when the pushers are to stop.
    stop: watch::Receiver<bool>,
    /// Pushes acknowledged so far, all pushers.
    acked: Arc<AtomicUsize>,
}

/// Connects to the leader, waiting for the next one while it cannot.
async fn connect_to_leader(load: &mut Load, unit: &str) -> Result<(Client, SocketAddr), BoxError> {
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
async fn pusher(
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
fn inconsistent(e: &tongbao_client::ClientError) -> bool {
    matches!(
        e,
        tongbao_client::ClientError::Rollback { .. }
            | tongbao_client::ClientError::Fork { .. }
            | tongbao_client::ClientError::Checkpoint { .. }
    )
}

/// The channel's checkpoint, verified against the last this client saw; a
/// leader that goes away meanwhile is asked again after the next one.
async fn checkpoint_on(client: &Client, channel: &str) -> Result<u64, BoxError> {
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
async fn subscriber(
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
                        if e.cursor != got.len() as u64 + 1 {
                            return Err(format!(
                                "delivered cursor {} after {}: a gap or a repeat",
                                e.cursor,
                                got.len()
                            )
                            .into());
                        }
                        got.push((e.channel().to_string(), e.seq()));
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
async fn kill_9_of_the_leader_under_load_loses_and_repeats_nothing() -> TestResult {
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

/// A loopback address for a replica, known before it listens: a port
/// bound at 0 and closed at once. Clients list every replica from the
/// start, yet a standby opens its port only when it takes over; until
/// then a connection there is refused, as for a replica that is down.
fn reserved_addr() -> Result<SocketAddr, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The retry window of the clients below. A takeover here is the killed
/// leader's session ending (at once: its socket closes), a standby taking
/// the lease (it tries each second) and starting (seconds): well inside
/// 30 s even on a loaded machine, so a push spans a whole takeover and is
/// never reported failed; the window is only a bound, never waited out.
const TAKEOVER_WINDOW: Duration = Duration::from_secs(30);

/// `unit`'s config listing every replica, with [`TAKEOVER_WINDOW`].
fn config_of_all(
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
async fn library_pusher(
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
            let cp = tokio::time::timeout(HANG, client.checkpoint(unit))
                .await
                .map_err(|_| format!("{unit}: checkpoint hung"))?
                .map_err(|e| format!("{unit}: checkpoint after push {i}: {e}"))?;
            assert!(
                cp.size > i,
                "{unit}: checkpoint {} misses push {i}",
                cp.size
            );
            sizes.push(cp.size);
        }
    }
    Ok((receipts, sizes))
}

/// One subscription of `RECIPIENT` from cursor 0, never reopened by hand:
/// every delivery must be the next cursor, and none may be an error.
/// Returns the deliveries (channel, seq) once `want` of them arrived.
async fn library_subscriber(
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
                    if e.cursor != got.len() as u64 + 1 {
                        return Err(format!(
                            "delivered cursor {} after {}: a gap or a repeat",
                            e.cursor,
                            got.len()
                        )
                        .into());
                    }
                    got.push((e.channel().to_string(), e.seq()));
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
async fn said<T>(task: impl Future<Output = Result<T, BoxError>>) -> Result<T, BoxError> {
    let outcome = task.await;
    if let Err(e) = &outcome {
        eprintln!("failed: {e}");
    }
    outcome
}

/// Waits for 20 more acknowledged pushes. A pusher or the subscriber
/// that stopped before it was told to has failed: the test stops at once
/// (its error is read when it is joined).
async fn more_acknowledged<A, B>(
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
async fn clients_listing_every_replica_fail_over_by_themselves_across_kill_9() -> TestResult {
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
        let last = Client::connect(&config_of_all(pki.path(), unit, &addrs)?)
            .await?
            .checkpoint(unit)
            .await?;
        assert_eq!(
            last.size,
            mine.len() as u64,
            "{unit}: nothing lost, nothing twice"
        );
        assert!(
            sizes.is_sorted(),
            "{unit}: checkpoints only grow: {sizes:?}"
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
    let mut got = delivered;
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "every acknowledged push delivered, once");
    Ok(())
}

// ---------------------------------------------------------------------
// Server: each replica's own access log, and a replica whose write fails.
// ---------------------------------------------------------------------

/// The hub key (`tongbao hub-key`) every replica of `pki` signs with.
fn hub_vkey(pki: &TestPki) -> Result<String, BoxError> {
    let key = tongbao_server::channel_log::load_or_create_key(
        &pki.path().join(tongbao_server::pki::CHECKPOINT_KEY_FILE),
    )?;
    Ok(
        tongbao_proto::checkpoint::NoteSigner::new(tongbao_server::pki::DEFAULT_LOG_NAME, &key)?
            .verifier()?
            .to_vkey(),
    )
}

/// Runs `tongbao-hub ARGS` to its end: success and what it printed.
fn hub_says(args: &[&str]) -> Result<(bool, String), BoxError> {
    let out = Command::new(HUB)
        .args(args)
        .env("RUST_LOG", "error")
        .output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_replica_signs_its_own_access_log_under_its_own_name() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let mut a = Replica::spawn(&pki, "data-a")?;
    assert!(!a.started().await?, "{}", a.stderr());
    let mut b = Replica::spawn(&pki, "data-b")?;
    assert!(b.started().await?, "{}", b.stderr());
    push_some(&pki, "tax", a.addr.ok_or("no address")?, 1).await?;
    a.terminate()?;
    assert!(a.exited().await?.success(), "{}", a.stderr());
    wait_until(HANG, "the standby takes over", || {
        let leads = b.leads();
        async move { Ok(leads) }
    })
    .await?;
    push_some(&pki, "tax", b.addr.ok_or("no address")?, 1).await?;
    b.terminate()?;
    assert!(b.exited().await?.success(), "{}", b.stderr());

    let vkey = hub_vkey(&pki)?;
    let log = tongbao_server::pki::DEFAULT_LOG_NAME;
    for name in ["data-a", "data-b"] {
        let data = pki.path().join(name).display().to_string();
        let origin = format!("{log}/.access-log/{name}");
        let (ok, said) = hub_says(&["audit-log", "verify", &data, "--hub-key", &vkey])?;
        assert!(ok, "{said}");
        assert!(
            said.contains(&format!("the access log {origin} in")),
            "{said}"
        );
        let out = pki
            .path()
            .join(format!("{name}.json"))
            .display()
            .to_string();
        let (ok, said) = hub_says(&["audit-log", "export", "--data-dir", &data, "--out", &out])?;
        assert!(ok, "{said}");
        let (ok, said) = hub_says(&["audit-log", "verify", &out, "--hub-key", &vkey])?;
        assert!(ok, "{said}");
        assert!(
            said.contains(&format!("checkpoint of {origin} (size")),
            "{said}"
        );
    }

    // A replica started under another name refuses its former log.
    let (ok, said) = hub_says(&[
        "serve",
        "--config",
        &pki.path().join("hub.toml").display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &pki.path().join("data-a").display().to_string(),
        "--replica-name",
        "renamed",
    ])?;
    assert!(!ok, "a renamed replica started on its former log");
    assert!(said.contains("not the access log"), "{said}");
    // A name outside a-z, 0-9 and - is refused before anything starts.
    let (ok, said) = hub_says(&[
        "serve",
        "--config",
        &pki.path().join("hub.toml").display().to_string(),
        "--replica-name",
        "Hub/A",
    ])?;
    assert!(!ok && said.contains("replica_name"), "{said}");
    Ok(())
}

/// Makes every insert of an entry fail, as a commit the database refuses.
const FAIL_COMMITS: &str = "CREATE FUNCTION tongbao_test_refuse() RETURNS trigger \
     LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'test: the commit is refused'; END $$; \
     CREATE TRIGGER tongbao_test_refuse BEFORE INSERT ON entries \
     FOR EACH ROW EXECUTE FUNCTION tongbao_test_refuse();";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_commit_fails_stops_and_a_standby_takes_over() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let mut a = Replica::spawn(&pki, "data-a")?;
    assert!(!a.started().await?, "{}", a.stderr());
    let a_addr = a.addr.ok_or("no address")?;
    let mut b = Replica::spawn(&pki, "data-b")?;
    assert!(b.started().await?, "{}", b.stderr());
    let acked = push_some(&pki, "tax", a_addr, 2).await?;

    database(&pki)?.execute(FAIL_COMMITS)?;
    let tax = Client::connect(&config(pki.path(), "tax", a_addr)?).await?;
    let refused = tax.push(note("refused").to_units([RECIPIENT])).await;
    assert!(
        refused.is_err(),
        "a push whose commit failed was acknowledged"
    );
    let status = a.exited().await?;
    assert!(!status.success(), "it stops failing");
    let said = a.stderr();
    assert!(
        said.contains("stopped: a write to the database failed"),
        "{said}"
    );

    // The database accepts commits again: the standby, no longer stalled
    // behind a leader that kept the lease, takes over and continues.
    database(&pki)?.execute("DROP TRIGGER tongbao_test_refuse ON entries")?;
    wait_until(HANG, "the standby takes over", || {
        let leads = b.leads();
        async move { Ok(leads) }
    })
    .await?;
    let b_addr = b.addr.ok_or("no address")?;
    let after = push_some(&pki, "tax", b_addr, 1).await?;
    let last = acked.last().ok_or("nothing acknowledged")?;
    assert_eq!(
        after[0].seq,
        last.seq + 1,
        "nothing of the failed commit landed"
    );
    let mut expected: Vec<(String, u64)> =
        acked.iter().map(|r| (r.channel.clone(), r.seq)).collect();
    expected.push((after[0].channel.clone(), after[0].seq));
    assert_eq!(inbox(&pki, b_addr).await?, expected);
    b.terminate()?;
    assert!(b.exited().await?.success(), "{}", b.stderr());
    Ok(())
}
