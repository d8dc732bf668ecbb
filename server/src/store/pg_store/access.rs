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

use super::read::{execute, query_opt, signed};
use super::{CONNECT_WAIT, Database, PgStore, db};
use crate::store::StoreError;
use crate::store::access::{AccessLogRead, AccessLogStore, AccessRow, OriginGuard};
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

impl AccessLogStore for PgStore {
    fn access_reads(&self) -> &dyn AccessLogRead {
        self
    }

    fn access_snapshot(&self) -> Result<Box<dyn AccessLogRead + '_>, StoreError> {
        super::access_read::snapshot(self)
    }

    fn access_claim(&self, origin: &str) -> Result<Box<dyn OriginGuard>, StoreError> {
        let rt = self.handle()?.clone();
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
}
