//! Where a run's hub keeps its data: the sled directory of its fresh PKI,
//! or (`--store postgres`) a fresh PostgreSQL database made for the run
//! and dropped after it, so that every run starts as empty as sled's.
//!
//! The database is made here rather than by the store's test helper,
//! because the server may come from `--pg-url` as well as from
//! `TONGBAO_TEST_PG_URL`.

use std::sync::atomic::{AtomicU64, Ordering};
use tongbao_tests::{BoxError, TestPki};

/// The variable naming the test PostgreSQL server (as the test suites use).
const PG_URL_VAR: &str = "TONGBAO_TEST_PG_URL";
/// Connections the hub keeps to PostgreSQL (the hub's default).
const PG_POOL_SIZE: u32 = 8;

/// The store every hub of this bench run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    Sled,
    /// A `key=value` connection string of the server, without `dbname`.
    Postgres {
        server: String,
    },
}

impl StoreChoice {
    /// From `--store` and `--pg-url` (or the test server's variable).
    pub fn from_flags(store: Option<&str>, pg_url: Option<String>) -> Result<Self, String> {
        match store.unwrap_or("sled") {
            "sled" if pg_url.is_some() => Err("--pg-url goes with --store postgres".into()),
            "sled" => Ok(Self::Sled),
            "postgres" => pg_url
                .or_else(|| std::env::var(PG_URL_VAR).ok())
                .filter(|u| !u.trim().is_empty())
                .map(|server| Self::Postgres { server })
                .ok_or_else(|| {
                    format!("--store postgres needs --pg-url URL or {PG_URL_VAR} (a key=value connection string)")
                }),
            other => Err(format!(
                "--store {:?}: the stores are sled and postgres",
                other.chars().take(40).collect::<String>()
            )),
        }
    }

    /// The name the JSON report gives the store.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sled => "sled",
            Self::Postgres { .. } => "postgres",
        }
    }
}

/// A fresh PKI whose hub config names the chosen store, and the run's
/// database if there is one (dropped with this, after the hub stopped).
pub struct Fresh {
    pub pki: TestPki,
    db: Option<BenchDb>,
}

impl Fresh {
    pub fn new(store: &StoreChoice) -> Result<Self, BoxError> {
        let pki = TestPki::generate_on_sled()?;
        let db = match store {
            StoreChoice::Sled => None,
            StoreChoice::Postgres { server } => {
                let db = BenchDb::create(server)?;
                pki.use_postgres(&db.url(), PG_POOL_SIZE)?;
                Some(db)
            }
        };
        Ok(Self { pki, db })
    }
}

/// What the database server counted over a whole run (warm-up, measured
/// phase and drain): figures that do not depend on the machine's load.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgCounts {
    /// Transactions committed in the run's database.
    pub commits: i64,
    /// Transactions rolled back there.
    pub rollbacks: i64,
    /// WAL flushes to disk (`pg_stat_wal.wal_sync`), server-wide: exact
    /// only on a server the run has to itself.
    pub wal_syncs: i64,
}

impl Fresh {
    /// The server's counts so far, once the hubs have stopped (each
    /// backend reports its counts as it ends; waited for here).
    pub fn pg_counts(&self) -> Result<Option<PgCounts>, BoxError> {
        let Some(db) = &self.db else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = '{0}'), \
                    xact_commit, xact_rollback, (SELECT wal_sync FROM pg_stat_wal) \
             FROM pg_stat_database WHERE datname = '{0}'",
            db.name
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let n = numbers(&db.server, sql.clone())?;
            let [sessions, commits, rollbacks, wal_syncs] = n[..] else {
                return Err(format!("unexpected counts {n:?}").into());
            };
            if sessions == 0 || std::time::Instant::now() >= deadline {
                return Ok(Some(PgCounts {
                    commits,
                    rollbacks,
                    wal_syncs,
                }));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The server-wide WAL flushes so far (before a run starts).
    pub fn wal_syncs(&self) -> Result<Option<i64>, BoxError> {
        let Some(db) = &self.db else {
            return Ok(None);
        };
        let n = numbers(&db.server, "SELECT wal_sync FROM pg_stat_wal".into())?;
        Ok(n.first().copied())
    }
}

/// One run's PostgreSQL database.
struct BenchDb {
    server: String,
    name: String,
}

impl BenchDb {
    /// A database named by this process and a count: one a stopped
    /// process left behind under the same name (its pid reused) is
    /// dropped first.
    fn create(server: &str) -> Result<Self, BoxError> {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "tongbao_bench_{}_{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        // Apart: neither runs inside the implicit transaction of a
        // multi-statement query.
        admin(
            server,
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        admin(server, format!("CREATE DATABASE {name}"))?;
        Ok(Self {
            server: server.to_string(),
            name,
        })
    }

    fn url(&self) -> String {
        format!("{} dbname={}", self.server, self.name)
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin(&self.server, sql) {
            eprintln!("cannot drop the bench database {}: {e}", self.name);
        }
    }
}

/// Runs `sql` on the server's `postgres` database, on a thread and
/// runtime of its own (the caller may be inside the bench's runtime).
fn admin(server: &str, sql: String) -> Result<(), BoxError> {
    on_postgres(server, move |client| async move {
        client.batch_execute(&sql).await
    })
    .map(|_| ())
}

/// The first row of the answer to `sql`, as whole numbers.
fn numbers(server: &str, sql: String) -> Result<Vec<i64>, BoxError> {
    let rows = on_postgres(server, move |client| async move {
        client.simple_query(&sql).await
    })?;
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .ok_or("no row of counts")?;
    (0..row.len())
        .map(|i| Ok(row.get(i).unwrap_or("0").parse::<i64>()?))
        .collect()
}

/// Runs `call` with a connection to the server's `postgres` database.
fn on_postgres<T, F, Fut>(server: &str, call: F) -> Result<T, BoxError>
where
    T: Send + 'static,
    F: FnOnce(std::sync::Arc<tokio_postgres::Client>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
{
    let url = format!("{server} dbname=postgres");
    let run = move || -> Result<T, BoxError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("PostgreSQL: {e}"))?;
            let conn = tokio::spawn(connection);
            let client = std::sync::Arc::new(client);
            let done = call(client.clone()).await;
            drop(client);
            let _ = conn.await;
            done.map_err(|e| format!("PostgreSQL: {e}").into())
        })
    };
    std::thread::spawn(run)
        .join()
        .map_err(|_| "the PostgreSQL thread panicked")?
}
