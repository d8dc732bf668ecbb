//! The access log on PostgreSQL (schema version 3): every origin's
//! records, stored hashes and latest checkpoint, so that a replica's log
//! outlives its host (see `store::access`).
//!
//! Access-log writes do not pass the lease's fence: every replica, a
//! standby included, records the calls it serves, each under its own
//! origin. What keeps two processes from writing one origin is the
//! origin's guard, a session advisory lock on a connection of its own
//! (freed by the database the moment that session ends, as the lease is,
//! and given TCP keepalives as the lease's connection is, so a vanished
//! peer ends it). Appends run on the pool's connections, so each append's
//! transaction checks that the guard's session still holds the lock and
//! fails when it does not: a writer whose lock was lost stops instead of
//! writing beside a second claimant. Behind it, the primary keys: a
//! record or hash written twice fails its whole commit.

use super::read::{execute, query, query_opt, signed, unsigned};
use super::{CONNECT_WAIT, Database, PgStore, db};
use crate::store::StoreError;
use crate::store::access::{AccessExtent, AccessLogStore, AccessRow, OriginGuard};
use crate::store::codec::hash_from;
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_postgres::Client;
use tongbao_proto::Hash;

/// The class of the origins' advisory locks ("alog"); the two-key form
/// keeps them apart from the lease's and the migrations' one-key locks.
const ORIGIN_LOCK_CLASS: i32 = 0x616c_6f67;

/// What an append says when the guard's session no longer holds the lock.
pub const LOCK_LOST: &str = "the access log's origin lock was lost (its database session ended): \
     this writer stops, as another process may now write the origin";

/// The origins a store claimed: each one's guard session's backend pid.
pub type Claims = Arc<Mutex<HashMap<String, i32>>>;

/// An origin claimed on a connection of its own: the lock lasts as long
/// as that session.
struct PgOriginGuard {
    client: Option<Client>,
    origin: String,
    claims: Claims,
    rt: tokio::runtime::Handle,
}

impl OriginGuard for PgOriginGuard {
    fn release(mut self: Box<Self>) {
        if let Ok(mut claims) = self.claims.lock() {
            claims.remove(&self.origin);
        }
        if let Some(client) = self.client.take() {
            let origin = std::mem::take(&mut self.origin);
            let unlock = async move {
                let unlocked = client
                    .execute(
                        "SELECT pg_advisory_unlock($1, hashtext($2))",
                        &[&ORIGIN_LOCK_CLASS, &origin],
                    )
                    .await;
                if let Err(e) = unlocked {
                    tracing::warn!(error = %e, "cannot let go of the access log's origin; the database does when the connection closes");
                }
            };
            let _ = futures::executor::block_on(tokio::task::unconstrained(self.rt.spawn(unlock)));
        }
    }
}

fn corrupt(origin: &str, what: String) -> StoreError {
    StoreError::Corrupt(format!("access log {origin}: {what}"))
}

/// Claims `origin` on a connection of its own; its session's backend pid.
async fn claim(
    database: Database,
    pool: Pool,
    origin: String,
) -> Result<(Client, i32), StoreError> {
    let (client, connection) = database
        .connect(
            &super::lease::kept_alive_config(&database, "tongbao-hub access log"),
            CONNECT_WAIT,
        )
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "the access log's origin lock connection ended");
        }
    });
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, hashtext($2)), pg_backend_pid()",
            &[&ORIGIN_LOCK_CLASS, &origin],
        )
        .await
        .map_err(db)?;
    let (got, pid): (bool, i32) = (row.get(0), row.get(1));
    if !got {
        return Err(StoreError::Database(format!(
            "another hub process is writing the access log {origin} on this database: \
             each replica needs a replica_name of its own (stop the other, or rename this one)"
        )));
    }
    execute(
        &pool.get().await.map_err(db)?,
        "INSERT INTO access_origin (origin) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&origin],
    )
    .await?;
    Ok((client, pid))
}

/// Fails with [`LOCK_LOST`] unless session `pid` still holds the lock of
/// `origin` (as `claim` takes it: two keys, so objsubid 2).
async fn check_lock(
    tx: &deadpool_postgres::Transaction<'_>,
    origin: &str,
    pid: Option<i32>,
) -> Result<(), StoreError> {
    let Some(pid) = pid else {
        return Err(StoreError::Database(format!(
            "the access log {origin} is not claimed by this process: it cannot be written"
        )));
    };
    let held: bool = query_opt(
        tx,
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND pid = $1 AND classid = $2::int4::oid AND objid = hashtext($3)::oid AND objsubid = 2 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
        &[&pid, &ORIGIN_LOCK_CLASS, &origin],
    )
    .await?
    .is_some_and(|row| row.get(0));
    match held {
        true => Ok(()),
        false => Err(StoreError::Database(LOCK_LOST.into())),
    }
}

#[allow(clippy::too_many_arguments)]
async fn append(
    pool: Pool,
    pid: Option<i32>,
    origin: String,
    rows: Vec<AccessRow>,
    first_hash: u64,
    hashes: Vec<Hash>,
    checkpoint: Option<String>,
    remove_before: Option<u64>,
) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(db)?;
    let tx = client.transaction().await.map_err(db)?;
    check_lock(&tx, &origin, pid).await?;
    if !rows.is_empty() {
        let mut ns = Vec::with_capacity(rows.len());
        let mut ats = Vec::with_capacity(rows.len());
        let mut lines = Vec::with_capacity(rows.len());
        for r in rows {
            ns.push(signed(r.n)?);
            ats.push(r.at_micros);
            lines.push(r.line);
        }
        execute(
            &tx,
            "INSERT INTO access_record (origin, n, at_micros, line) \
             SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::bytea[])",
            &[&origin, &ns, &ats, &lines],
        )
        .await?;
    }
    if !hashes.is_empty() {
        let first = signed(first_hash)?;
        let idx: Vec<i64> = (0..hashes.len() as i64).map(|i| first + i).collect();
        let bytes: Vec<&[u8]> = hashes.iter().map(|h| h.as_slice()).collect();
        execute(
            &tx,
            "INSERT INTO access_hash (origin, idx, hash) \
             SELECT $1, * FROM unnest($2::bigint[], $3::bytea[])",
            &[&origin, &idx, &bytes],
        )
        .await?;
    }
    if let Some(note) = checkpoint {
        execute(
            &tx,
            "INSERT INTO access_checkpoint (origin, note) VALUES ($1, $2) \
             ON CONFLICT (origin) DO UPDATE SET note = EXCLUDED.note",
            &[&origin, &note],
        )
        .await?;
    }
    if let Some(before) = remove_before {
        execute(
            &tx,
            "DELETE FROM access_record WHERE origin = $1 AND n < $2",
            &[&origin, &signed(before)?],
        )
        .await?;
    }
    tx.commit().await.map_err(db)
}

async fn checkpoint(pool: Pool, origin: String) -> Result<Option<String>, StoreError> {
    let client = pool.get().await.map_err(db)?;
    Ok(query_opt(
        &client,
        "SELECT note FROM access_checkpoint WHERE origin = $1",
        &[&origin],
    )
    .await?
    .map(|row| row.get(0)))
}

/// One statement, so one snapshot: records and hashes of the same
/// commits, even while the origin's writer appends (a verify beside a
/// running hub).
async fn extent(pool: Pool, origin: String) -> Result<AccessExtent, StoreError> {
    let client = pool.get().await.map_err(db)?;
    let row = query_opt(
        &client,
        "SELECT (SELECT min(n) FROM access_record WHERE origin = $1), \
                (SELECT max(n) FROM access_record WHERE origin = $1), \
                (SELECT max(idx) FROM access_hash WHERE origin = $1)",
        &[&origin],
    )
    .await?;
    let (first, last, last_hash): (Option<i64>, Option<i64>, Option<i64>) =
        row.map_or((None, None, None), |r| (r.get(0), r.get(1), r.get(2)));
    Ok(AccessExtent {
        first_kept: first.map(|f| unsigned(f, "a record number")).transpose()?,
        next: last.map_or(Ok(0), |l| unsigned(l, "a record number").map(|l| l + 1))?,
        hashes: last_hash.map_or(Ok(0), |l| unsigned(l, "a hash index").map(|l| l + 1))?,
    })
}

async fn records(
    pool: Pool,
    origin: String,
    from: u64,
    limit: usize,
) -> Result<Vec<AccessRow>, StoreError> {
    let client = pool.get().await.map_err(db)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    query(
        &client,
        "SELECT n, at_micros, line FROM access_record WHERE origin = $1 AND n >= $2 \
         ORDER BY n LIMIT $3",
        &[&origin, &signed(from)?, &limit],
    )
    .await?
    .into_iter()
    .map(|row| {
        Ok(AccessRow {
            n: unsigned(row.get(0), "a record number")?,
            at_micros: row.get(1),
            line: row.get(2),
        })
    })
    .collect()
}

async fn hashes(pool: Pool, origin: String, indexes: Vec<u64>) -> Result<Vec<Hash>, StoreError> {
    let client = pool.get().await.map_err(db)?;
    let asked = indexes
        .iter()
        .map(|i| signed(*i))
        .collect::<Result<Vec<_>, _>>()?;
    let found: HashMap<i64, Vec<u8>> = query(
        &client,
        "SELECT idx, hash FROM access_hash WHERE origin = $1 AND idx = ANY($2)",
        &[&origin, &asked],
    )
    .await?
    .into_iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect();
    asked
        .iter()
        .map(|i| match found.get(i) {
            Some(h) => hash_from(h),
            None => Err(corrupt(&origin, format!("stored hash {i} is missing"))),
        })
        .collect()
}

async fn hash_range(
    pool: Pool,
    origin: String,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, Hash)>, StoreError> {
    let client = pool.get().await.map_err(db)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    query(
        &client,
        "SELECT idx, hash FROM access_hash WHERE origin = $1 AND idx >= $2 ORDER BY idx LIMIT $3",
        &[&origin, &signed(from)?, &limit],
    )
    .await?
    .into_iter()
    .map(|row| {
        let bytes: Vec<u8> = row.get(1);
        Ok((unsigned(row.get(0), "a hash index")?, hash_from(&bytes)?))
    })
    .collect()
}

/// Walks the records from `from` in order (the primary key's) and stops
/// at the first match: a day's records, not the whole log.
async fn first_at(
    pool: Pool,
    origin: String,
    from: u64,
    at_micros: i64,
) -> Result<Option<u64>, StoreError> {
    let client = pool.get().await.map_err(db)?;
    query_opt(
        &client,
        "SELECT n FROM access_record WHERE origin = $1 AND n >= $2 AND at_micros >= $3 \
         ORDER BY n LIMIT 1",
        &[&origin, &signed(from)?, &at_micros],
    )
    .await?
    .map(|row| unsigned(row.get(0), "a record number"))
    .transpose()
}

async fn origins(pool: Pool) -> Result<Vec<String>, StoreError> {
    let client = pool.get().await.map_err(db)?;
    Ok(query(
        &client,
        "SELECT origin FROM access_origin ORDER BY origin",
        &[],
    )
    .await?
    .into_iter()
    .map(|row| row.get(0))
    .collect())
}

impl AccessLogStore for PgStore {
    fn access_claim(&self, origin: &str) -> Result<Box<dyn OriginGuard>, StoreError> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| StoreError::Database("the PostgreSQL store is closed".into()))?
            .handle()
            .clone();
        let (client, pid) = self.block(claim(
            self.database.clone(),
            self.pool(),
            origin.to_string(),
        ))?;
        if let Ok(mut claims) = self.access_claims.lock() {
            claims.insert(origin.to_string(), pid);
        }
        Ok(Box::new(PgOriginGuard {
            client: Some(client),
            origin: origin.to_string(),
            claims: self.access_claims.clone(),
            rt,
        }))
    }

    fn access_append(
        &self,
        origin: &str,
        rows: &[AccessRow],
        first_hash: u64,
        hashes: &[Hash],
        checkpoint: Option<&str>,
        remove_before: Option<u64>,
    ) -> Result<(), StoreError> {
        let pid = self
            .access_claims
            .lock()
            .ok()
            .and_then(|claims| claims.get(origin).copied());
        self.block(append(
            self.pool(),
            pid,
            origin.to_string(),
            rows.to_vec(),
            first_hash,
            hashes.to_vec(),
            checkpoint.map(str::to_string),
            remove_before,
        ))
    }

    fn access_checkpoint(&self, origin: &str) -> Result<Option<String>, StoreError> {
        self.block(checkpoint(self.pool(), origin.to_string()))
    }

    fn access_extent(&self, origin: &str) -> Result<AccessExtent, StoreError> {
        self.block(extent(self.pool(), origin.to_string()))
    }

    fn access_records(
        &self,
        origin: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<AccessRow>, StoreError> {
        self.block(records(self.pool(), origin.to_string(), from, limit))
    }

    fn access_hashes(&self, origin: &str, indexes: &[u64]) -> Result<Vec<Hash>, StoreError> {
        self.block(hashes(self.pool(), origin.to_string(), indexes.to_vec()))
    }

    fn access_hash_range(
        &self,
        origin: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        self.block(hash_range(self.pool(), origin.to_string(), from, limit))
    }

    fn access_first_at(
        &self,
        origin: &str,
        from: u64,
        at_micros: i64,
    ) -> Result<Option<u64>, StoreError> {
        self.block(first_at(self.pool(), origin.to_string(), from, at_micros))
    }

    fn access_origins(&self) -> Result<Vec<String>, StoreError> {
        self.block(origins(self.pool()))
    }
}
