//! What the replica tests share: a PKI whose hubs run as replicas on a
//! test database, the replica processes, and their health and inboxes.

pub(crate) use std::io::{BufRead, BufReader, Read};
pub(crate) use std::net::SocketAddr;
pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::process::{Child, Command, ExitStatus, Stdio};
pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};
pub(crate) use std::sync::{Arc, Mutex, mpsc};
pub(crate) use std::time::Duration;
pub(crate) use tokio::sync::watch;
pub(crate) use tongbao_client::{Client, ClientConfig, PushReceipt};
pub(crate) use tongbao_server::store::pg_store::testdb::TestDb;
pub(crate) use tongbao_tests::{BoxError, TestPki, TestResult, note, sample, scrape, wait_until};

pub(crate) const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");

/// A bound that only catches a hang: tests wait for events, never time
/// them.
pub(crate) const HANG: Duration = Duration::from_secs(120);

/// The unit every pushed message goes to, and which subscribes.
pub(crate) const RECIPIENT: &str = "civil-affairs";

/// A PKI whose `hub.toml` runs its hubs as replicas on a test database of
/// its own; None (the test is skipped, saying so) without a test server.
pub(crate) fn replica_pki() -> Result<Option<TestPki>, BoxError> {
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

pub(crate) fn database(pki: &TestPki) -> Result<&TestDb, BoxError> {
    Ok(pki.pg.as_ref().ok_or("no test database")?)
}

/// One `tongbao-hub serve` process, a replica with a data directory of
/// its own; killed on drop.
pub(crate) struct Replica {
    pub(crate) child: Child,
    pub(crate) lines: mpsc::Receiver<String>,
    pub(crate) stderr: Arc<Mutex<String>>,
    /// The gRPC address, once it leads.
    pub(crate) addr: Option<SocketAddr>,
    /// The gRPC address it serves reads on while a standby.
    pub(crate) reads: Option<SocketAddr>,
    /// The metrics listener, said while a standby (kept once it leads).
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) standby: bool,
}

impl Replica {
    pub(crate) fn spawn(pki: &TestPki, data: &str) -> Result<Self, BoxError> {
        Self::spawn_on(pki, data, "127.0.0.1:0")
    }

    /// Spawns it to listen on `listen` once it leads.
    pub(crate) fn spawn_on(pki: &TestPki, data: &str, listen: &str) -> Result<Self, BoxError> {
        Self::spawn_with(pki, data, listen, &[])
    }

    /// Spawns it with environment variables `env` set (a failpoint).
    pub(crate) fn spawn_with(
        pki: &TestPki,
        data: &str,
        listen: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, BoxError> {
        let mut child = Command::new(HUB)
            .args(["serve", "--config"])
            .arg(pki.path().join("hub.toml"))
            .args(["--listen", listen, "--data-dir"])
            .arg(pki.path().join(data))
            // Each replica's access log is its own, named for it.
            .args(["--replica-name", data])
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
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
            reads: None,
            metrics: None,
            standby: false,
        })
    }

    /// Reads what it printed so far; whether it leads.
    pub(crate) fn leads(&mut self) -> bool {
        while let Ok(line) = self.lines.try_recv() {
            if let Some(a) = line.strip_prefix("tongbao-hub listening on ") {
                self.addr = a.trim().parse().ok();
            } else if let Some(m) = line.strip_prefix("tongbao-hub standby; metrics on ") {
                self.metrics = m.trim().parse().ok();
                self.standby = true;
            } else if let Some(rest) = line.strip_prefix("tongbao-hub standby listening on ") {
                // `ADDR; metrics on ADDR`, or `ADDR` without metrics.
                let (reads, metrics) = match rest.split_once("; metrics on ") {
                    Some((r, m)) => (r, m.trim().parse().ok()),
                    None => (rest, None),
                };
                self.reads = reads.trim().parse().ok();
                self.metrics = metrics;
                self.standby = true;
            }
        }
        self.addr.is_some()
    }

    /// Waits for its first line: standby (true) or leading (false).
    pub(crate) async fn started(&mut self) -> Result<bool, BoxError> {
        wait_until(HANG, "the replica says what it is", || {
            let said = self.leads() || self.standby;
            async move { Ok(said) }
        })
        .await?;
        Ok(self.standby && self.addr.is_none())
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub(crate) fn kill(&mut self) -> Result<(), BoxError> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    pub(crate) fn terminate(&self) -> Result<(), BoxError> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("kill -TERM failed: {status}").into());
        }
        Ok(())
    }

    pub(crate) async fn exited(&mut self) -> Result<ExitStatus, BoxError> {
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
pub(crate) async fn leader(
    replicas: &mut [Replica],
    dead: Option<usize>,
) -> Result<usize, BoxError> {
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

pub(crate) fn config(
    pki_dir: &Path,
    unit: &str,
    hub: SocketAddr,
) -> Result<ClientConfig, BoxError> {
    Ok(
        ClientConfig::load(&pki_dir.join("units").join(unit).join("client.toml"))?
            .with_hub(format!("https://{hub}")),
    )
}

/// `GET /health` of a metrics listener: the status line and the body.
pub(crate) async fn health(addr: SocketAddr) -> Result<(String, String), BoxError> {
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
pub(crate) async fn inbox(pki: &TestPki, addr: SocketAddr) -> Result<Vec<(String, u64)>, BoxError> {
    let c = Client::connect(&config(pki.path(), RECIPIENT, addr)?).await?;
    let page = c.pull(0, 1000).await?;
    Ok(page
        .entries
        .iter()
        .map(|e| (e.channel().to_string(), e.seq()))
        .collect())
}

/// Pushes `count` messages from `unit` to the leader at `addr`.
pub(crate) async fn push_some(
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

/// Takes a delivery as the next of `got` (channel, seq): a cursor that is
/// not the next one is a gap or a repeat.
pub(crate) fn take_next(
    got: &mut Vec<(String, u64)>,
    e: &tongbao_client::VerifiedEntry,
) -> Result<(), BoxError> {
    if e.cursor != got.len() as u64 + 1 {
        return Err(format!(
            "delivered cursor {} after {}: a gap or a repeat",
            e.cursor,
            got.len()
        )
        .into());
    }
    got.push((e.channel().to_string(), e.seq()));
    Ok(())
}
