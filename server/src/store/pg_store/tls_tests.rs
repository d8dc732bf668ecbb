//! TLS to PostgreSQL against a real server: a throwaway cluster of the
//! test's own (`initdb`, `pg_ctl`) with `ssl=on` and certificates the test
//! makes, on a Unix socket in a temporary directory and on 127.0.0.1.
//! Skipped, saying so, where `initdb` is not installed (`.ci/run`
//! installs it).

use super::tls::{Database, TlsOptions};
use super::{PgOptions, PgStore};
use crate::store::{Store, StoreError};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A bound that only catches a hang.
const HANG: std::time::Duration = std::time::Duration::from_secs(60);

/// The directory holding `initdb` and `pg_ctl`: on the PATH, or Debian's.
fn pg_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_else(|_| Vec::new());
    on_path
        .into_iter()
        .chain(debian)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// A CA, and a certificate it signs for `names` with its key (PEM each).
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            ca_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A certificate for `names` (SANs) with `cn`, and its key.
    fn issue(&self, names: &[&str], cn: &str) -> Result<(String, String), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        Ok((
            params.signed_by(&key, &self.issuer)?.pem(),
            key.serialize_pem(),
        ))
    }
}

/// A running cluster with TLS on 127.0.0.1, stopped and removed on drop.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    pki: Pki,
}

/// The command run as the `postgres` user when this is root (the server
/// refuses to run as root), as is otherwise.
fn as_server(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn run(mut command: Command, what: &str) -> Result<(), Box<dyn std::error::Error>> {
    let out = command.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

/// Writes `text` to `path` for the server's user, `mode`.
fn server_file(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if is_root() {
        let out = Command::new("chown").arg("postgres").arg(path).output()?;
        if !out.status.success() {
            return Err(std::io::Error::other("chown postgres failed"));
        }
    }
    Ok(())
}

impl Cluster {
    /// Starts one; None (saying why) where no PostgreSQL is installed.
    fn start() -> Result<Option<Self>, Box<dyn std::error::Error>> {
        let Some(bin) = pg_bin() else {
            eprintln!("initdb is not installed: skipping the PostgreSQL TLS test");
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        if is_root() {
            let mut chown = Command::new("chown");
            chown.arg("postgres").arg(dir.path());
            run(chown, "chown postgres (the server needs a user of its own)")?;
        }
        let pki = Pki::new("database CA")?;
        let (cert, key) = pki.issue(&["localhost"], "localhost")?;
        server_file(&dir.path().join("server.crt"), &cert, 0o644)?;
        server_file(&dir.path().join("server.key"), &key, 0o600)?;
        server_file(&dir.path().join("ca.pem"), &pki.ca_pem, 0o644)?;
        let data = dir.path().join("data");
        let mut initdb = as_server(&bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync"]);
        run(initdb, "initdb")?;
        // `certuser` proves itself with a client certificate; others are
        // trusted on this throwaway cluster.
        server_file(
            &data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all certuser 127.0.0.1/32 cert\n\
             host all all 127.0.0.1/32 trust\n",
            0o600,
        )?;
        // A port nobody holds now (PostgreSQL takes no port 0).
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let d = dir.path().display();
        let options = format!(
            "-p {port} -k {d} -c listen_addresses=127.0.0.1 -c ssl=on \
             -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key \
             -c ssl_ca_file={d}/ca.pem -c fsync=off"
        );
        let mut start = as_server(&bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("log"))
            .args(["-w", "-o", &options, "start"]);
        run(start, "pg_ctl start")?;
        let cluster = Self {
            dir,
            bin,
            port,
            pki,
        };
        cluster.admin("CREATE ROLE certuser LOGIN")?;
        Ok(Some(cluster))
    }

    /// Runs `sql` over the Unix socket, as postgres.
    fn admin(&self, sql: &str) -> Result<(), StoreError> {
        let db = Database::new(
            &format!(
                "host={} port={} user=postgres dbname=postgres",
                self.dir.path().display(),
                self.port
            ),
            &TlsOptions::default(),
        )?;
        let sql = sql.to_string();
        block(async move {
            let (client, connection) = db
                .config()
                .connect(db.connector())
                .await
                .map_err(super::db)?;
            let conn = tokio::spawn(connection);
            let done = client.batch_execute(&sql).await.map_err(super::db);
            drop(client);
            let _ = conn.await;
            done
        })
    }

    /// A file in the cluster's directory.
    fn file(&self, name: &str, text: &str, mode: u32) -> Result<PathBuf, std::io::Error> {
        let path = self.dir.path().join(name);
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(path)
    }

    fn url(&self, host: &str, user: &str) -> String {
        format!("host={host} port={} user={user} dbname=postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = as_server(&self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"]);
        let _ = stop.stdin(Stdio::null()).output();
    }
}

/// Runs `fut` on a runtime of its own, bounded by [`HANG`].
fn block<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        tokio::time::timeout(HANG, fut)
            .await
            .map_err(|_| StoreError::Database("the test hung".into()))?
    })
}

/// Connects once and says whether the session is TLS.
fn session_is_tls(db: &Database) -> Result<bool, StoreError> {
    let db = db.clone();
    block(async move {
        let (client, connection) = db
            .config()
            .connect(db.connector())
            .await
            .map_err(super::db)?;
        let conn = tokio::spawn(connection);
        let ssl: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(super::db)?
            .try_get(0)
            .map_err(super::db)?;
        drop(client);
        let _ = conn.await;
        Ok(ssl)
    })
}

fn with_ca(ca: &Path) -> TlsOptions {
    TlsOptions {
        ca: Some(ca.to_path_buf()),
        ..TlsOptions::default()
    }
}

#[test]
fn every_connection_is_tls_and_checks_the_server() -> TestResult {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    let ca = cluster.file("client-ca.pem", &cluster.pki.ca_pem, 0o644)?;
    let db = Database::new(&cluster.url("localhost", "postgres"), &with_ca(&ca))?;
    assert!(session_is_tls(&db)?, "a session made with tls_ca is TLS");

    // The store: its pool, its lease and the schema's migration all go
    // over TLS; none of its sessions is clear text.
    let store = PgStore::open(&PgOptions {
        database: db.clone(),
        pool_size: 2,
        replica: false,
    })?;
    store.save_registry_bytes(b"over tls")?;
    assert_eq!(
        store.load_registry_bytes()?.as_deref(),
        Some(&b"over tls"[..])
    );
    let sessions = {
        let db = db.clone();
        block(async move {
            let (client, connection) = db
                .config()
                .connect(db.connector())
                .await
                .map_err(super::db)?;
            let conn = tokio::spawn(connection);
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
                     FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                     WHERE a.application_name LIKE 'tongbao-hub%'",
                    &[],
                )
                .await
                .map_err(super::db)?;
            let counts: (i64, i64) = (
                row.try_get(0).map_err(super::db)?,
                row.try_get(1).map_err(super::db)?,
            );
            drop(client);
            let _ = conn.await;
            Ok(counts)
        })?
    };
    assert!(sessions.0 >= 2, "the pool's and the lease's: {sessions:?}");
    assert_eq!(sessions.1, 0, "no session in clear text: {sessions:?}");
    drop(store);

    // The server's certificate names localhost, not 127.0.0.1: refused.
    let wrong_name = Database::new(&cluster.url("127.0.0.1", "postgres"), &with_ca(&ca))?;
    let e = session_is_tls(&wrong_name).err().map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("TLS") && e.contains("certificate")),
        "{e:?}"
    );

    // A CA that did not sign it: refused, and the store does not open.
    let other = Pki::new("another CA")?;
    let wrong_ca = cluster.file("wrong-ca.pem", &other.ca_pem, 0o644)?;
    let untrusted = Database::new(&cluster.url("localhost", "postgres"), &with_ca(&wrong_ca))?;
    let e = session_is_tls(&untrusted).err().map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("TLS") && e.contains("UnknownIssuer")),
        "{e:?}"
    );
    let opened = PgStore::open(&PgOptions {
        database: untrusted,
        pool_size: 1,
        replica: false,
    });
    assert!(opened.is_err(), "a store opened on an unverified server");
    Ok(())
}

#[test]
fn a_client_certificate_authenticates_and_its_key_must_be_private() -> TestResult {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    let ca = cluster.file("client-ca.pem", &cluster.pki.ca_pem, 0o644)?;
    let (cert, key) = cluster.pki.issue(&["certuser"], "certuser")?;
    let cert = cluster.file("hub.crt", &cert, 0o644)?;
    let key_path = cluster.file("hub.key", &key, 0o600)?;
    let url = cluster.url("localhost", "certuser");
    let tls = TlsOptions {
        ca: Some(ca.clone()),
        cert: Some(cert.clone()),
        key: Some(key_path.clone()),
        allow_plaintext: false,
    };
    assert!(session_is_tls(&Database::new(&url, &tls)?)?);

    // Without it, `cert` authentication refuses the same user.
    let e = session_is_tls(&Database::new(&url, &with_ca(&ca))?)
        .err()
        .map(|e| e.to_string());
    assert!(
        e.as_deref().is_some_and(|e| e.contains("certificate")),
        "{e:?}"
    );

    // A key other users can read is refused before any connection.
    let open_key = cluster.file("open.key", &key, 0o644)?;
    let e = Database::new(
        &url,
        &TlsOptions {
            key: Some(open_key),
            ..tls
        },
    )
    .err()
    .map(|e| e.to_string());
    assert!(
        e.as_deref().is_some_and(|e| e.contains("chmod 600")),
        "{e:?}"
    );
    Ok(())
}

#[test]
fn a_server_without_tls_is_refused_never_used_in_clear_text() -> TestResult {
    // What a PostgreSQL without TLS answers to the request for it: "N".
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let server = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Write};
        let (mut socket, _) = listener.accept()?;
        let mut request = [0u8; 8];
        socket.read_exact(&mut request)?;
        socket.write_all(b"N")?;
        // Anything sent after the refusal would be the session in clear.
        let mut after = Vec::new();
        socket.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        let _ = socket.read_to_end(&mut after);
        Ok(after)
    });
    let pki = Pki::new("database CA")?;
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem)?;
    let db = Database::new(
        &format!("host=localhost hostaddr=127.0.0.1 port={port} user=hub password=secret-word"),
        &with_ca(&ca),
    )?;
    let e = session_is_tls(&db).err().map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("does not support TLS") && !e.contains("secret-word")),
        "{e:?}"
    );
    let after = server.join().map_err(|_| "the fake server panicked")??;
    assert!(
        after.is_empty(),
        "nothing was sent in clear text: {after:?}"
    );
    Ok(())
}

#[test]
fn a_server_that_accepts_and_never_answers_is_reported_not_waited_on() -> TestResult {
    // Accepts the connection, reads the request for TLS, says nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let server = std::thread::spawn(move || {
        let held = listener.accept();
        std::thread::sleep(std::time::Duration::from_secs(15));
        drop(held);
    });
    let pki = Pki::new("database CA")?;
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem)?;
    let db = Database::new(
        &format!("host=localhost hostaddr=127.0.0.1 port={port} user=hub"),
        &with_ca(&ca),
    )?;
    let e =
        block(async move { super::lease::Lease::acquire(&db, super::lease::Wait::Refuse).await })
            .err()
            .map(|e| e.to_string());
    assert!(
        e.as_deref().is_some_and(|e| e.contains("no answer within")),
        "{e:?}"
    );
    let _ = server.join();
    Ok(())
}

#[test]
fn a_replica_whose_tls_cannot_work_fails_its_start() -> TestResult {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    let try_now = |db: Database| {
        block(async move {
            super::lease::Lease::try_now(&db)
                .await
                .map(|lease| lease.is_some())
        })
    };
    // A CA that did not sign the server's certificate, and a name the
    // certificate does not hold: the start fails, saying why.
    let other = Pki::new("another CA")?;
    let wrong_ca = cluster.file("wrong-ca.pem", &other.ca_pem, 0o644)?;
    let untrusted = Database::new(&cluster.url("localhost", "postgres"), &with_ca(&wrong_ca))?;
    let e = try_now(untrusted).err().map(|e| e.to_string());
    assert!(
        e.as_deref().is_some_and(|e| e.contains("UnknownIssuer")),
        "{e:?}"
    );
    let ca = cluster.file("client-ca.pem", &cluster.pki.ca_pem, 0o644)?;
    let wrong_name = Database::new(&cluster.url("127.0.0.1", "postgres"), &with_ca(&ca))?;
    let e = try_now(wrong_name).err().map(|e| e.to_string());
    assert!(
        e.as_deref().is_some_and(|e| e.contains("certificate")),
        "{e:?}"
    );
    // An unknown role: refused by the server, not waited on.
    let nobody = Database::new(&cluster.url("localhost", "nobody"), &with_ca(&ca))?;
    assert!(try_now(nobody).is_err(), "authentication refused");
    // Settings that work: the lease. A server not there (yet): waited on.
    assert!(try_now(Database::new(
        &cluster.url("localhost", "postgres"),
        &with_ca(&ca)
    )?)?);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let gone = Database::new(
        &format!("host=localhost hostaddr=127.0.0.1 port={closed} user=postgres"),
        &with_ca(&ca),
    )?;
    assert!(!try_now(gone)?, "a database not reachable yet is waited on");
    Ok(())
}
