//! A database of its own for each test that runs on PostgreSQL, made on
//! the server `TONGBAO_TEST_PG_URL` names (a `key=value` connection
//! string, e.g. `host=/tmp/pg port=5433 user=postgres`) and dropped when
//! the test ends. For tests only.

use super::db;
use crate::store::StoreError;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable naming the test server.
pub const URL_VAR: &str = "TONGBAO_TEST_PG_URL";

/// One test's database.
#[derive(Debug)]
pub struct TestDb {
    base: String,
    name: String,
}

/// Runs `sql` on the server's `postgres` database.
fn admin(base: &str, sql: String) -> Result<(), StoreError> {
    run_sql(format!("{base} dbname=postgres"), sql)
}

/// Runs `sql` on the database `url` names, on a thread and runtime of its
/// own (callers may be inside a runtime, or dropping).
fn run_sql(url: String, sql: String) -> Result<(), StoreError> {
    let run = move || -> Result<(), StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(db)?;
            let conn = tokio::spawn(connection);
            let done = client.batch_execute(&sql).await.map_err(db);
            drop(client);
            let _ = conn.await;
            done
        })
    };
    std::thread::spawn(run)
        .join()
        .map_err(|_| StoreError::Database("the test database thread panicked".into()))?
}

impl TestDb {
    /// A new, empty database; None (saying so) when no server is given.
    pub fn create() -> Result<Option<Self>, StoreError> {
        let Ok(base) = std::env::var(URL_VAR) else {
            eprintln!("{URL_VAR} is not set: skipping the PostgreSQL part of this test");
            return Ok(None);
        };
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "tongbao_test_{}_{}_{nanos}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        admin(&base, format!("CREATE DATABASE {name}"))?;
        Ok(Some(Self { base, name }))
    }

    /// The connection string of this database.
    pub fn url(&self) -> String {
        format!("{} dbname={}", self.base, self.name)
    }

    /// Runs `sql` on this database, around the store (tamper tests).
    pub fn execute(&self, sql: &str) -> Result<(), StoreError> {
        run_sql(self.url(), sql.to_string())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Err(e) = admin(
            &self.base,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("cannot drop test database {}: {e}", self.name);
        }
    }
}
