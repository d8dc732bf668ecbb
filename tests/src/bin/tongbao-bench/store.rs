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
    _db: Option<BenchDb>,
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
        Ok(Self { pki, _db: db })
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
    let url = format!("{server} dbname=postgres");
    let run = move || -> Result<(), BoxError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("PostgreSQL: {e}"))?;
            let conn = tokio::spawn(connection);
            let done = client.batch_execute(&sql).await;
            drop(client);
            let _ = conn.await;
            done.map_err(|e| format!("PostgreSQL: {e}").into())
        })
    };
    std::thread::spawn(run)
        .join()
        .map_err(|_| "the PostgreSQL thread panicked")?
}
