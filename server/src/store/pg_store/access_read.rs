//! The access log's reads on PostgreSQL (see `store::access`): each on a
//! pooled connection, as the store's other reads, or all of them on one
//! connection in one `REPEATABLE READ READ ONLY` transaction (a snapshot),
//! so that `audit-log verify` and `export` beside a running hub read a
//! checkpoint, records and hashes of the same commits while its writer
//! appends and retention removes.
//!
//! A snapshot's connection never goes back to the pool: it is detached
//! when the snapshot is dropped, and closing it ends the transaction, so
//! no pooled connection is ever left inside a read-only transaction.

use super::read::{query, query_opt, signed, unsigned};
use super::{PgStore, block_on, db};
use crate::store::StoreError;
use crate::store::access::{AccessExtent, AccessLogRead, AccessRow};
use crate::store::codec::hash_from;
use deadpool_postgres::{GenericClient, Object, Pool};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use tongbao_proto::Hash;

fn corrupt(origin: &str, what: String) -> StoreError {
    StoreError::Corrupt(format!("access log {origin}: {what}"))
}

async fn pooled(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(db)
}

async fn checkpoint(c: &impl GenericClient, origin: &str) -> Result<Option<String>, StoreError> {
    Ok(query_opt(
        c,
        "SELECT note FROM access_checkpoint WHERE origin = $1",
        &[&origin],
    )
    .await?
    .map(|row| row.get(0)))
}

/// One statement, so one snapshot even outside a snapshot's transaction:
/// records and hashes of the same commits, even while the origin's writer
/// appends.
async fn extent(c: &impl GenericClient, origin: &str) -> Result<AccessExtent, StoreError> {
    let row = query_opt(
        c,
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
    c: &impl GenericClient,
    origin: &str,
    from: u64,
    limit: usize,
) -> Result<Vec<AccessRow>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    query(
        c,
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

/// One statement for all of `indexes` (an export asks a page's proofs at once).
async fn hashes(
    c: &impl GenericClient,
    origin: &str,
    indexes: &[u64],
) -> Result<Vec<Hash>, StoreError> {
    let asked = indexes
        .iter()
        .map(|i| signed(*i))
        .collect::<Result<Vec<_>, _>>()?;
    let found: HashMap<i64, Vec<u8>> = query(
        c,
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
            None => Err(corrupt(origin, format!("stored hash {i} is missing"))),
        })
        .collect()
}

async fn hash_range(
    c: &impl GenericClient,
    origin: &str,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, Hash)>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    query(
        c,
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

/// Walks the records `from..before` in order (the primary key's) and
/// stops at the first match: a chunk of a day's records at most.
async fn first_at(
    c: &impl GenericClient,
    origin: &str,
    from: u64,
    before: u64,
    at_micros: i64,
) -> Result<Option<u64>, StoreError> {
    // Numbers past what a bigint holds are past every record.
    let before = i64::try_from(before).unwrap_or(i64::MAX);
    query_opt(
        c,
        "SELECT n FROM access_record WHERE origin = $1 AND n >= $2 AND n < $3 \
         AND at_micros >= $4 ORDER BY n LIMIT 1",
        &[&origin, &signed(from)?, &before, &at_micros],
    )
    .await?
    .map(|row| unsigned(row.get(0), "a record number"))
    .transpose()
}

async fn origins(c: &impl GenericClient) -> Result<Vec<String>, StoreError> {
    Ok(
        query(c, "SELECT origin FROM access_origin ORDER BY origin", &[])
            .await?
            .into_iter()
            .map(|row| row.get(0))
            .collect(),
    )
}

/// A read, given the connection it runs on.
type Read<T> = Box<dyn for<'c> FnOnce(&'c Object) -> BoxFuture<'c, Result<T, StoreError>> + Send>;

/// `read` as a [`Read`] (its signature given, for the closure's lifetimes).
fn reading<T, F>(read: F) -> Read<T>
where
    F: for<'c> FnOnce(&'c Object) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
{
    Box::new(read)
}

/// Where reads run: each on a pooled connection (the store), or all on
/// one connection in one transaction (a snapshot).
trait Reads {
    fn run<T: Send + 'static>(&self, read: Read<T>) -> Result<T, StoreError>;
}

impl Reads for PgStore {
    fn run<T: Send + 'static>(&self, read: Read<T>) -> Result<T, StoreError> {
        let pool = self.pool();
        self.block(async move { read(&pooled(&pool).await?).await })
    }
}

impl<R: Reads> AccessLogRead for R {
    fn access_checkpoint(&self, origin: &str) -> Result<Option<String>, StoreError> {
        let origin = origin.to_string();
        self.run(reading(move |c| {
            Box::pin(async move { checkpoint(c, &origin).await })
        }))
    }

    fn access_extent(&self, origin: &str) -> Result<AccessExtent, StoreError> {
        let origin = origin.to_string();
        self.run(reading(move |c| {
            Box::pin(async move { extent(c, &origin).await })
        }))
    }

    fn access_records(
        &self,
        origin: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<AccessRow>, StoreError> {
        let origin = origin.to_string();
        self.run(reading(move |c| {
            Box::pin(async move { records(c, &origin, from, limit).await })
        }))
    }

    fn access_hashes(&self, origin: &str, indexes: &[u64]) -> Result<Vec<Hash>, StoreError> {
        let (origin, indexes) = (origin.to_string(), indexes.to_vec());
        self.run(reading(move |c| {
            Box::pin(async move { hashes(c, &origin, &indexes).await })
        }))
    }

    fn access_hash_range(
        &self,
        origin: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        let origin = origin.to_string();
        self.run(reading(move |c| {
            Box::pin(async move { hash_range(c, &origin, from, limit).await })
        }))
    }

    fn access_first_at(
        &self,
        origin: &str,
        from: u64,
        before: u64,
        at_micros: i64,
    ) -> Result<Option<u64>, StoreError> {
        let origin = origin.to_string();
        self.run(reading(move |c| {
            Box::pin(async move { first_at(c, &origin, from, before, at_micros).await })
        }))
    }

    fn access_origins(&self) -> Result<Vec<String>, StoreError> {
        self.run(reading(|c| Box::pin(origins(c))))
    }
}

/// A pooled connection that never goes back to the pool: closed when
/// dropped (by whoever holds it last), which ends its transaction.
struct Detached(Option<Object>);

impl Drop for Detached {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}

/// Reads in one `REPEATABLE READ READ ONLY` transaction on a connection
/// of their own (see the module doc).
struct Snapshot {
    /// Shared with the read running now, if any.
    client: Arc<Detached>,
    rt: tokio::runtime::Handle,
}

/// Begins a snapshot on a connection taken from `store`'s pool.
pub(super) fn snapshot(store: &PgStore) -> Result<Box<dyn AccessLogRead + '_>, StoreError> {
    let pool = store.pool();
    let client = store.block(async move {
        let client = Detached(Some(pooled(&pool).await?));
        if let Some(c) = &client.0 {
            c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await
                .map_err(db)?;
        }
        Ok(Arc::new(client))
    })?;
    Ok(Box::new(Snapshot {
        client,
        rt: store.handle()?.clone(),
    }))
}

impl Reads for Snapshot {
    fn run<T: Send + 'static>(&self, read: Read<T>) -> Result<T, StoreError> {
        let client = self.client.clone();
        block_on(&self.rt, async move {
            let c = client
                .0
                .as_ref()
                .ok_or_else(|| StoreError::Database("the access log snapshot is closed".into()))?;
            read(c).await
        })
    }
}
