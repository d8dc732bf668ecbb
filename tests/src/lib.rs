//! Harness for end-to-end tests: a PKI generated per run in a temp dir, a
//! real hub on 127.0.0.1 port 0 (in-process or as a killable process), and
//! clients over real mutual TLS.
#![forbid(unsafe_code)]

pub mod http;
pub mod workflow;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tempfile::TempDir;
use tongbao_client::{Client, ClientConfig, ClientError, Draft};
use tongbao_proto::identity::Principal;
use tongbao_proto::pb::Kind;
use tongbao_server::pki::{CertificateAuthority, InitOptions, Issued, init};
pub use tongbao_server::roles::Role;
use tongbao_server::{Hub, HubConfig};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The units of a mechanism of the source document.
pub fn members_of(mechanism: &str) -> Vec<&'static str> {
    tongbao_server::example_parties::MECHANISMS
        .iter()
        .find(|m| m.id == mechanism)
        .map(|m| m.members.to_vec())
        .unwrap_or_default()
}

/// The variable choosing the store of the hubs tests start: `sled` (the
/// default) or `postgres`, each hub config then on a database of its own
/// (made on the server `TONGBAO_TEST_PG_URL` names, dropped at the end).
pub const STORE_VAR: &str = "TONGBAO_TEST_STORE";

/// Whether the hubs of this run keep their data in PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var(STORE_VAR).is_ok_and(|v| v == "postgres")
}

/// A fresh PKI and hub config in a temp dir, removed on drop.
pub struct TestPki {
    pub dir: TempDir,
    /// The hub's database when the run is on PostgreSQL, dropped with it.
    pub pg: Option<tongbao_server::store::pg_store::testdb::TestDb>,
}

impl TestPki {
    /// A fresh PKI whose hub runs on the store `TONGBAO_TEST_STORE` chooses.
    pub fn generate() -> Result<Self, BoxError> {
        let mut pki = Self::generate_on_sled()?;
        if on_postgres() {
            let db = tongbao_server::store::pg_store::testdb::TestDb::create()?.ok_or(
                "TONGBAO_TEST_STORE=postgres needs TONGBAO_TEST_PG_URL (see .ci/postgres.sh)",
            )?;
            pki.use_postgres(&db.url(), 4)?;
            pki.pg = Some(db);
        }
        Ok(pki)
    }

    /// A fresh PKI whose hub keeps its data in sled, whatever the run's store.
    pub fn generate_on_sled() -> Result<Self, BoxError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        init(
            dir.path(),
            &InitOptions {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                data_dir: dir.path().join("data"),
                days: 30,
                force: false,
            },
        )?;
        Ok(Self { dir, pg: None })
    }

    /// Points the hub config at the PostgreSQL database `url` names.
    pub fn use_postgres(&self, url: &str, pool_size: u32) -> Result<(), BoxError> {
        let path = self.path().join("hub.toml");
        let mut text = std::fs::read_to_string(&path)?;
        text.push_str(&format!(
            "\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = {pool_size}\n"
        ));
        std::fs::write(&path, text)?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn hub_config(&self) -> Result<HubConfig, BoxError> {
        Ok(HubConfig::load(&self.path().join("hub.toml"))?)
    }

    /// The client config of a unit, pointed at a running hub.
    pub fn unit_config(&self, unit: &str, hub: SocketAddr) -> Result<ClientConfig, BoxError> {
        Ok(
            ClientConfig::load(&self.path().join("units").join(unit).join("client.toml"))?
                .with_hub(format!("https://{hub}")),
        )
    }

    pub fn office_config(
        &self,
        mechanism: &str,
        hub: SocketAddr,
    ) -> Result<ClientConfig, BoxError> {
        Ok(ClientConfig::load(
            &self
                .path()
                .join("offices")
                .join(mechanism)
                .join("client.toml"),
        )?
        .with_hub(format!("https://{hub}")))
    }

    pub fn ca(&self) -> Result<CertificateAuthority, BoxError> {
        Ok(CertificateAuthority::load_dir(self.path())?)
    }

    /// Writes an extra certificate and returns a client config that uses it
    /// with the given unit's signing key.
    pub fn custom_client(
        &self,
        name: &str,
        issued: &Issued,
        identity: Principal,
        signing_unit: &str,
        hub: SocketAddr,
    ) -> Result<ClientConfig, BoxError> {
        let dir = self.path().join("custom").join(name);
        issued.write(&dir)?;
        Ok(ClientConfig {
            hub: format!("https://{hub}"),
            other_hubs: Vec::new(),
            server_name: "localhost".into(),
            identity,
            ca: self.path().join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            signing_key: Some(
                self.path()
                    .join("units")
                    .join(signing_unit)
                    .join("signing.key"),
            ),
            hub_key: None,
            trust_state: dir.join("trust-state.json"),
            verify_inclusion: true,
            push_retry_for: ClientConfig::DEFAULT_PUSH_RETRY,
        })
    }

    /// Rewrites `hub.toml` (e.g. to turn an option off before a start).
    pub fn edit_hub_toml(&self, from: &str, to: &str) -> Result<(), BoxError> {
        let path = self.path().join("hub.toml");
        let text = std::fs::read_to_string(&path)?;
        if !text.contains(from) {
            return Err(format!("hub.toml has no {from:?}").into());
        }
        std::fs::write(&path, text.replacen(from, to, 1))?;
        Ok(())
    }

    /// Path of a unit's signing key.
    pub fn signing_key_path(&self, unit: &str) -> PathBuf {
        self.path().join("units").join(unit).join("signing.key")
    }
}

/// A PKI with an in-process hub on port 0.
pub struct TestHub {
    pub pki: TestPki,
    pub hub: Option<Hub>,
    pub addr: SocketAddr,
}

impl TestHub {
    pub async fn start() -> Result<Self, BoxError> {
        Self::start_with(|_| {}).await
    }

    /// Starts with a config adjusted by `edit` (limits, fsync, ...).
    pub async fn start_with(edit: impl FnOnce(&mut HubConfig)) -> Result<Self, BoxError> {
        let pki = TestPki::generate()?;
        let mut config = pki.hub_config()?;
        edit(&mut config);
        let hub = Hub::start(&config).await?;
        let addr = hub.addr();
        Ok(Self {
            pki,
            hub: Some(hub),
            addr,
        })
    }

    /// A connected client of the operator registered with this role.
    pub async fn operator(&self, role: Role) -> Result<Client, ClientError> {
        Client::connect(&self.pki.role_config(role, self.addr)).await
    }

    /// A connected client of a unit.
    pub async fn unit(&self, unit: &str) -> Result<Client, ClientError> {
        let cfg = self
            .pki
            .unit_config(unit, self.addr)
            .map_err(|e| ClientError::Connect {
                hub: self.addr.to_string(),
                reason: e.to_string(),
            })?;
        Client::connect(&cfg).await
    }

    pub async fn stop(mut self) -> TestResult {
        if let Some(hub) = self.hub.take() {
            hub.shutdown().await?;
        }
        Ok(())
    }
}

/// After refusals: no inbox got anything, and the next good push of `tax`
/// is seq 0.
pub async fn assert_nothing_stored(t: &TestHub) -> TestResult {
    for unit in ["civil-affairs", "state-security", "finance"] {
        assert!(
            t.unit(unit).await?.pull(0, 10).await?.entries.is_empty(),
            "{unit} got an entry"
        );
    }
    let r = t
        .unit("tax")
        .await?
        .push(note("good").to_units(["civil-affairs"]))
        .await?;
    assert_eq!(r.seq, 0, "a refused push consumed a sequence number");
    Ok(())
}

/// Clears a stopped hub's workflow state in the store it uses (sled or
/// PostgreSQL, as TONGBAO_TEST_STORE chooses), as a lost index would be;
/// fails if there was none to clear.
pub fn clear_workflow_state(config: &tongbao_server::HubConfig) -> TestResult {
    let store = config.store.open(&config.hub.data_dir, true, 0)?;
    let state = tongbao_server::store::StateTree::open(store, tongbao_server::workflow::SPACE)?;
    assert!(
        state.scan_prefix([]).count() > 0,
        "the state is in the store"
    );
    state.clear()?;
    Ok(())
}

/// A simple notification draft.
pub fn note(subject: &str) -> Draft {
    Draft::new(Kind::Notification, subject, format!("body of {subject}"))
}

/// The gRPC code of a client error, for assertions.
pub fn code_of(e: &ClientError) -> Option<tonic::Code> {
    e.code()
}

/// A unit's signing keys as the hub's registry lists them, with their
/// validity intervals.
pub async fn registered_keys(
    client: &Client,
    unit: &str,
) -> Result<Vec<tongbao_proto::pb::SigningKey>, BoxError> {
    Ok(client
        .list_units()
        .await?
        .units
        .into_iter()
        .find(|u| u.id == unit)
        .ok_or_else(|| format!("the registry lists no unit {unit}"))?
        .keys)
}

/// The key with this id among `keys`.
pub fn key_with_id<'a>(
    keys: &'a [tongbao_proto::pb::SigningKey],
    key_id: &str,
) -> Result<&'a tongbao_proto::pb::SigningKey, BoxError> {
    keys.iter()
        .find(|k| k.key_id == key_id)
        .ok_or_else(|| format!("no key {key_id} in the registry").into())
}

/// Asserts a call was refused with `code` and a message mentioning `words`
/// (what an engineer reading the error needs to see).
pub fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>, code: tonic::Code, words: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} ({words}), got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.code(), Some(code), "{e}");
            assert!(
                e.to_string().contains(words),
                "{e} should mention {words:?}"
            );
        }
    }
}

/// A TCP relay between clients and the hub whose connections the test can
/// cut at will, to make subscriptions reconnect.
pub struct Relay {
    pub addr: SocketAddr,
    connections: std::sync::Arc<std::sync::atomic::AtomicU64>,
    cut: tokio::sync::watch::Sender<u64>,
    frozen: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Result<Self, BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        let (frozen, frozen_rx) = tokio::sync::watch::channel(false);
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut cut_rx = cut_rx.clone();
                let mut frozen_rx = frozen_rx.clone();
                // Only cuts after this connection opened concern it.
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    if *frozen_rx.borrow_and_update() {
                        // Accepted, never answered.
                        let _held = inbound;
                        std::future::pending::<()>().await;
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let froze = tokio::select! {
                        biased;
                        _ = frozen_rx.wait_for(|f| *f) => true,
                        _ = cut_rx.changed() => false,
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                    };
                    if froze {
                        // Open, silent: nothing passes either way again.
                        let _held = (inbound, outbound);
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            connections,
            cut,
            frozen,
            task,
        })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops every open connection through the relay.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Keeps every connection open but silent from now on, as a hung
    /// network path or a frozen hub would.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The hub as a separate process, so it can be killed without warning.
pub struct HubProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl HubProcess {
    /// Starts `binary serve` on the PKI's config, port 0.
    pub fn start(pki: &TestPki, binary: &str) -> Result<Self, BoxError> {
        Self::start_on(pki, binary, &pki.path().join("data"))
    }

    /// Starts on another data directory (a copy, a restored backup).
    pub fn start_on(pki: &TestPki, binary: &str, data_dir: &Path) -> Result<Self, BoxError> {
        Self::start_with_env(pki, binary, data_dir, &[])
    }

    /// Starts on the PKI's data directory with a failpoint set.
    pub fn start_at_failpoint(pki: &TestPki, binary: &str, point: &str) -> Result<Self, BoxError> {
        let data = pki.path().join("data");
        Self::start_with_env(
            pki,
            binary,
            &data,
            &[(tongbao_server::failpoint::ENV, point)],
        )
    }

    /// Starts on the PKI's data directory with the pause failpoint `point`
    /// holding (see `tongbao_server::failpoint::pause`): the k-th time the
    /// hub reaches it, it waits until the test releases k. Those in
    /// `released` are let go at once.
    pub fn start_holding(
        pki: &TestPki,
        binary: &str,
        point: &str,
        released: &[u64],
    ) -> Result<(Self, Holds), BoxError> {
        let holds = Holds {
            dir: pki.path().join("holds"),
        };
        std::fs::create_dir_all(&holds.dir)?;
        for k in released {
            holds.release(*k)?;
        }
        let hold = format!("{point}:hold:{}", holds.dir.display());
        let hub = Self::start_with_env(
            pki,
            binary,
            &pki.path().join("data"),
            &[(tongbao_server::failpoint::ENV, hold.as_str())],
        )?;
        Ok((hub, holds))
    }

    /// Starts with extra environment variables (e.g. a failpoint).
    pub fn start_with_env(
        pki: &TestPki,
        binary: &str,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> Result<Self, BoxError> {
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(pki.path().join("hub.toml"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("tongbao-hub listening on ")
            .ok_or_else(|| format!("unexpected hub output {line:?}"))?
            .parse()?;
        Ok(Self { child, addr })
    }

    /// Starts the hub on `data_dir` expecting it to refuse: returns what it
    /// wrote to stderr. A hub that starts serving instead is stopped, and
    /// that is the error (so a test of a refusal cannot hang on a hub that
    /// serves).
    pub fn refused_start(pki: &TestPki, binary: &str, data_dir: &Path) -> Result<String, BoxError> {
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(pki.path().join("hub.toml"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.starts_with("tongbao-hub listening on ") {
            child.kill()?;
            child.wait()?;
            return Err(format!("the hub started instead of refusing: {}", line.trim()).into());
        }
        let out = child.wait_with_output()?;
        if out.status.success() {
            return Err("the hub exited successfully instead of refusing".into());
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Starts the hub on `data_dir` expecting it to stop by itself, failing:
    /// refused at start, or stopped while serving (by the background check
    /// of every entry). Returns which, and what it wrote to stderr. A hub
    /// still serving after `within` is stopped, and that is the error.
    pub fn stopped_by_itself(
        pki: &TestPki,
        binary: &str,
        data_dir: &Path,
        within: std::time::Duration,
    ) -> Result<Stopped, BoxError> {
        use std::io::Read;
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(pki.path().join("hub.toml"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stderr = child.stderr.take().ok_or("no stderr")?;
        // Read aside, so that a hub that writes much cannot block on it.
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let at = if line.starts_with("tongbao-hub listening on ") {
            StoppedAt::WhileServing
        } else {
            StoppedAt::Start
        };
        let deadline = std::time::Instant::now() + within;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if std::time::Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                return Err(format!("the hub was still serving after {within:?}").into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let stderr = reader.join().map_err(|_| "the stderr reader panicked")?;
        if status.success() {
            return Err(format!("the hub exited successfully: {stderr:?}").into());
        }
        Ok(Stopped { at, stderr })
    }

    /// Sends SIGHUP (through `kill`, as an operator would: no unsafe code).
    pub fn hangup(&self) -> Result<(), BoxError> {
        self.signal("-HUP")
    }

    /// Sends SIGTERM: the hub stops as a service manager would stop it.
    pub fn terminate(&self) -> Result<(), BoxError> {
        self.signal("-TERM")
    }

    fn signal(&self, which: &str) -> Result<(), BoxError> {
        let status = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("kill {which} failed: {status}").into());
        }
        Ok(())
    }

    /// Waits for the process to end by itself (a crash point), within a bound.
    pub fn wait_exit(
        mut self,
        within: std::time::Duration,
    ) -> Result<std::process::ExitStatus, BoxError> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("the hub was still running after {within:?}").into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(mut self) -> Result<(), BoxError> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// Where a hub that stopped by itself stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoppedAt {
    /// It never said it was listening.
    Start,
    /// It said it was listening, then stopped.
    WhileServing,
}

/// A hub that stopped by itself, failing.
#[derive(Debug)]
pub struct Stopped {
    pub at: StoppedAt,
    pub stderr: String,
}

/// The files through which a test sees and releases a held failpoint.
pub struct Holds {
    dir: PathBuf,
}

impl Holds {
    /// Whether the hub has reached the point for the k-th time.
    pub fn reached(&self, k: u64) -> bool {
        self.dir.join(format!("reached-{k}")).exists()
    }

    /// Lets the k-th wait at the point go on.
    pub fn release(&self, k: u64) -> std::io::Result<()> {
        std::fs::write(self.dir.join(format!("release-{k}")), b"")
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare gRPC channel with a unit's certificate, for requests the library
/// would never send and for services it does not wrap yet.
pub async fn raw_channel(
    pki: &TestPki,
    unit: &str,
    hub: SocketAddr,
) -> Result<tonic::transport::Channel, BoxError> {
    raw_party_channel(pki, &pki.path().join("units").join(unit), hub).await
}

/// A bare gRPC channel with the certificate in `dir` (e.g. `operators/NAME`):
/// the client library's own connect already makes a call.
pub async fn raw_party_channel(
    pki: &TestPki,
    dir: &Path,
    hub: SocketAddr,
) -> Result<tonic::transport::Channel, BoxError> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(
            pki.path().join("ca.pem"),
        )?))
        .identity(Identity::from_pem(
            std::fs::read(dir.join("cert.pem"))?,
            std::fs::read(dir.join("key.pem"))?,
        ))
        .domain_name("localhost");
    Ok(Channel::from_shared(format!("https://{hub}"))?
        .tls_config(tls)?
        .connect()
        .await?)
}

/// Copies a (stopped) hub's data directory, as a backup or an attacker would.
pub use tongbao_server::store::copy_data_dir as copy_dir;

impl TestPki {
    /// The client config of the operator `pki init` made and registered
    /// with this role (`system-admin`, `security-admin`, `audit-admin`).
    pub fn role_config(&self, role: Role, hub: SocketAddr) -> ClientConfig {
        self.operator_config(&tongbao_server::pki::example_operator(role), hub)
    }

    /// A certificate for operator `name` from the test CA, which hub.toml
    /// does not register (add it with `edit_hub_toml` to give it a role);
    /// returns its directory.
    pub fn unregistered_operator(&self, name: &str) -> Result<PathBuf, BoxError> {
        let op = Principal::Operator(name.to_string());
        let issued = self.ca()?.issue_client(&op, "Unregistered operator", 30)?;
        let dir = self.path().join("operators").join(name);
        issued.write(&dir)?;
        Ok(dir)
    }

    /// The client config of an operator with a certificate in `operators/NAME/`.
    pub fn operator_config(&self, name: &str, hub: SocketAddr) -> ClientConfig {
        let dir = self.path().join("operators").join(name);
        ClientConfig {
            hub: format!("https://{hub}"),
            other_hubs: Vec::new(),
            server_name: "localhost".into(),
            identity: Principal::Operator(name.to_string()),
            ca: self.path().join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            signing_key: None,
            hub_key: None,
            trust_state: dir.join("trust-state.json"),
            verify_inclusion: true,
            push_retry_for: ClientConfig::DEFAULT_PUSH_RETRY,
        }
    }
}

impl TestPki {
    /// A plain rustls client config with a unit's current certificate, for
    /// tests that handshake below the client library.
    pub fn unit_tls_config(&self, unit: &str) -> Result<rustls::ClientConfig, BoxError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let dir = self.path().join("units").join(unit);
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path().join("ca.pem"))? {
            roots.add(c?)?;
        }
        let chain =
            CertificateDer::pem_file_iter(dir.join("cert.pem"))?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(dir.join("key.pem"))?;
        Ok(rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?)
    }
}

/// The certificate (DER) a hub presents to a new handshake now.
pub async fn served_hub_cert(
    pki: &TestPki,
    unit: &str,
    hub: SocketAddr,
) -> Result<Vec<u8>, BoxError> {
    use rustls_pki_types::ServerName;
    let config = pki.unit_tls_config(unit)?;
    let tcp = tokio::net::TcpStream::connect(hub).await?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("the hub presented no certificate")?;
    Ok(cert.as_ref().to_vec())
}

/// Waits until `check` holds, polling every 50 ms; fails after `within`.
pub async fn wait_until<F, Fut>(within: std::time::Duration, what: &str, mut check: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, BoxError>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if check().await? {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("not within {within:?}: {what}").into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `GET /metrics` of a hub's metrics listener (plain HTTP/1.1): the body.
pub async fn scrape(addr: SocketAddr) -> Result<String, BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the metrics response has no body")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("the metrics listener answered {head:?}").into());
    }
    Ok(body.to_string())
}

/// The value of one series of a scrape, named with its labels as the hub
/// writes them (`tongbao_pushes_total{outcome="appended"}`).
pub fn sample(scraped: &str, series: &str) -> Option<f64> {
    scraped.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}
