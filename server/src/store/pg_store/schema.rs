//! The schema's versions, applied in order at start: each version once,
//! recorded in `schema_version`, all under one advisory lock so that
//! replicas starting together do not apply one twice. A database a newer
//! hub has upgraded is refused rather than misread.

use super::db;
use super::pooled::pooled;
use crate::store::StoreError;
use deadpool_postgres::Pool;

/// Every version of the schema, oldest first; a version is never edited
/// once released, only followed by a new one.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("v1.sql")),
    (2, include_str!("v2.sql")),
    (3, include_str!("v3.sql")),
];

/// The advisory lock held while migrating ("tongbao" in ASCII).
const MIGRATION_LOCK: i64 = 0x0074_6f6e_6762_616f;

/// The newest schema this hub knows.
pub fn current_version() -> i32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

pub async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut conn = pooled(pool).await?;
    let tx = conn.client_mut()?.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(db)?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(db)?
        .get(0);
    if found > current_version() {
        return Err(StoreError::Format(format!(
            "the database holds schema version {found}, and this hub knows versions up to {}: \
             a newer hub upgraded it; run that version",
            current_version()
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Database(format!("PostgreSQL: schema version {version}: {e}"))
        })?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(db)?;
        tracing::info!(version, "PostgreSQL schema upgraded");
    }
    tx.commit().await.map_err(db)
}

/// A standby's check: the leader brought the schema to this hub's
/// version (a standby changes nothing, the schema included).
pub async fn check_current(pool: &Pool) -> Result<(), StoreError> {
    let conn = pooled(pool).await?;
    let found: i32 = conn
        .client()?
        .query_opt("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .ok()
        .flatten()
        .map_or(0, |row| row.try_get(0).unwrap_or(0));
    if found != current_version() {
        return Err(StoreError::Format(format!(
            "the database holds schema version {found}, not this hub's {}: a standby serves once \
             a leader of this version has started",
            current_version()
        )));
    }
    Ok(())
}
