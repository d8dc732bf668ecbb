//! The PostgreSQL store's writes. A group commit is one transaction: the
//! head of every channel it appends to is locked first (in name order, so
//! that two writers never wait on each other crosswise) and must be where
//! the batch continues it; then every row goes in by array, one statement
//! per table, the statements sent together (pipelined) so that a group
//! commit costs a few round trips whatever its size: BEGIN, fence and
//! locks, rows and heads, COMMIT. Every write passes the lease's fence
//! (`lease::fence`) in its transaction: a hub that lost the lease writes
//! nothing.

use super::db;
use super::kept::{Fresh, Kept};
use super::lease::fence;
use super::marks::Batch;
use super::notices::notify;
use super::read::{execute, query, signed};
use crate::store::audit_index::{audit_key, audit_row};
use crate::store::entry_record::entry_record;
use crate::store::{AnswerKind, NewEntry, StateBatch, StoreError};
use deadpool_postgres::{Pool, Transaction};
use futures::future::try_join_all;
use futures::try_join;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_postgres::types::ToSql;

/// Per channel: the first seq the batch appends, and the head after it
/// (next seq, last leaf hash, last hub time).
type Heads = BTreeMap<String, (u64, u64, Vec<u8>, i64)>;

/// One group commit's rows, owned, column by column.
#[derive(Default)]
pub struct Rows {
    heads: Heads,
    entries: (Vec<String>, Vec<u64>, Vec<Vec<u8>>),
    messages: (Vec<String>, Vec<String>, Vec<u64>, Vec<Vec<u8>>),
    hashes: (Vec<String>, Vec<u64>, Vec<Vec<u8>>),
    inbox: (Vec<String>, Vec<u64>, Vec<String>, Vec<u64>),
    answers: AnswerRows,
    audit: (Vec<Vec<u8>>, Vec<Vec<u8>>),
    inbox_heads: BTreeMap<String, u64>,
    /// What the store keeps in memory once the commit is durable.
    fresh: Vec<Fresh>,
}

/// Answers, column by column: inbox, position, exception or not, the
/// answering entry's seq and hub time.
#[derive(Default)]
struct AnswerRows(Vec<String>, Vec<u64>, Vec<bool>, Vec<u64>, Vec<i64>);

impl Rows {
    pub fn of(entries: &[NewEntry]) -> Self {
        let mut r = Self::default();
        for e in entries {
            let head = r
                .heads
                .entry(e.channel.clone())
                .or_insert((e.seq, 0, Vec::new(), 0));
            *head = (head.0, e.seq + 1, e.leaf_hash.to_vec(), e.hub_micros);
            r.fresh.push(Fresh {
                channel: e.channel.clone(),
                seq: e.seq,
                entry: e.shared.clone(),
                tree_hashes: e.tree_hashes.clone(),
            });
            r.entries.0.push(e.channel.clone());
            r.entries.1.push(e.seq);
            r.entries.2.push(entry_record(
                &e.leaf_hash,
                e.shared.cursors.iter().copied(),
                &e.shared.encoded,
            ));
            r.messages.0.push(e.channel.clone());
            r.messages.1.push(e.message_id.clone());
            r.messages.2.push(e.seq);
            r.messages.3.push(e.message_digest.to_vec());
            r.hashes.0.push(e.channel.clone());
            r.hashes.1.push(e.seq);
            r.hashes.2.push(e.tree_hashes.concat());
            let mut answered = e.answers.clone();
            answered.sort_unstable();
            answered.dedup();
            for position in answered {
                // A unit answers from its own inbox, named as its channel.
                r.answers.0.push(e.channel.clone());
                r.answers.1.push(position);
                r.answers.2.push(e.answer_kind == AnswerKind::Exception);
                r.answers.3.push(e.seq);
                r.answers.4.push(e.hub_micros);
            }
            if !e.audit_scopes.is_empty() {
                let row = audit_row(&e.shared);
                for mechanism in &e.audit_scopes {
                    r.audit
                        .0
                        .push(audit_key(mechanism, e.hub_micros, e.seq, &e.channel));
                    r.audit.1.push(row.clone());
                }
            }
            for (inbox, cursor) in e.shared.deliveries() {
                r.inbox.0.push(inbox.to_string());
                r.inbox.1.push(cursor);
                r.inbox.2.push(e.channel.clone());
                r.inbox.3.push(e.seq);
                let last = r.inbox_heads.entry(inbox.to_string()).or_default();
                *last = (*last).max(cursor);
            }
        }
        r
    }
}

fn signed_all(v: &[u64]) -> Result<Vec<i64>, StoreError> {
    v.iter().map(|c| signed(*c)).collect()
}

pub async fn append(pool: Pool, epoch: i64, rows: Rows, kept: Arc<Kept>) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(db)?;
    let tx = client.transaction().await.map_err(db)?;
    // Sent together, answered in order, and a fenced hub's transaction is
    // rolled back whole. The heads may be locked before the fence reads
    // the lease (FOR SHARE): no deadlock, as taking the lease over locks
    // no head.
    try_join!(fence(&tx, epoch), lock_heads(&tx, &rows.heads))?;
    insert_rows(&tx, &rows).await?;
    tx.commit().await.map_err(db)?;
    kept.commit(&rows.fresh)
}

/// Every table's rows, one statement per table, all sent at once and
/// answered in order (tokio-postgres pipelines statements awaited
/// together on one connection): a group commit's inserts cost one round
/// trip. The first statement to fail fails the commit, and the
/// transaction with it.
async fn insert_rows(tx: &Transaction<'_>, rows: &Rows) -> Result<(), StoreError> {
    let (ec, es, er) = &rows.entries;
    let es = signed_all(es)?;
    let (mc, mi, ms, md) = &rows.messages;
    let ms = signed_all(ms)?;
    let (hc, hs, hh) = &rows.hashes;
    let hs = signed_all(hs)?;
    let (ii, ip, ic, is) = &rows.inbox;
    let (ip, is) = (signed_all(ip)?, signed_all(is)?);
    let (names, lasts): (Vec<&String>, Vec<u64>) =
        rows.inbox_heads.iter().map(|(n, l)| (n, *l)).unzip();
    let lasts = signed_all(&lasts)?;
    let AnswerRows(ai, ap, ax, as_, at) = &rows.answers;
    let (ap, as_) = (signed_all(ap)?, signed_all(as_)?);
    let (ak, av) = &rows.audit;
    let mut statements: Vec<(&str, Vec<&(dyn ToSql + Sync)>)> = vec![
        (
            "INSERT INTO entries (channel, seq, record) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])",
            vec![ec, &es, er],
        ),
        (
            "INSERT INTO messages (channel, message_id, seq, digest) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[])",
            vec![mc, mi, &ms, md],
        ),
        (
            "INSERT INTO tree_hashes (channel, seq, hashes) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])",
            vec![hc, &hs, hh],
        ),
    ];
    if !ii.is_empty() {
        statements.push((
            "INSERT INTO inbox (inbox, position, channel, seq) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])",
            vec![ii, &ip, ic, &is],
        ));
        statements.push((
            "INSERT INTO inbox_heads (inbox, last) \
             SELECT * FROM unnest($1::text[], $2::bigint[]) \
             ON CONFLICT (inbox) DO UPDATE SET last = greatest(inbox_heads.last, excluded.last)",
            vec![&names, &lasts],
        ));
    }
    if !ai.is_empty() {
        statements.push((
            "INSERT INTO answers (inbox, position, exception, seq, hub_micros) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::boolean[], $4::bigint[], $5::bigint[])",
            vec![ai, &ap, ax, &as_, at],
        ));
    }
    if !ak.is_empty() {
        statements.push((
            "INSERT INTO audit_scope (key, row_bytes) SELECT * FROM unnest($1::bytea[], $2::bytea[])",
            vec![ak, av],
        ));
    }
    let sent = statements
        .iter()
        .map(|(sql, params)| execute(tx, sql, params));
    try_join!(try_join_all(sent), move_heads(tx, &rows.heads))?;
    Ok(())
}

/// Locks the head of every channel the batch appends to, in name order
/// (one statement: the rows are locked as the sort returns them), and
/// checks that each continues where the batch starts. The missing heads
/// are made in the same exchange, sent first.
async fn lock_heads(tx: &Transaction<'_>, heads: &Heads) -> Result<(), StoreError> {
    let channels: Vec<&String> = heads.keys().collect();
    let params: [&(dyn ToSql + Sync); 1] = [&channels];
    let (_, locked) = try_join!(
        execute(
            tx,
            "INSERT INTO channel_heads (channel, next_seq, last_leaf_hash, last_hub_micros) \
             SELECT c, 0, '', 0 FROM unnest($1::text[]) AS c ON CONFLICT (channel) DO NOTHING",
            &params,
        ),
        query(
            tx,
            "SELECT channel, next_seq FROM channel_heads WHERE channel = ANY($1) \
             ORDER BY channel FOR UPDATE",
            &params,
        )
    )?;
    if locked.len() != heads.len() {
        return Err(StoreError::Database(format!(
            "{} of the batch's {} channel heads are in the database",
            locked.len(),
            heads.len()
        )));
    }
    for row in locked {
        let channel: String = row.try_get(0).map_err(db)?;
        let next: i64 = row.try_get(1).map_err(db)?;
        let first = heads.get(&channel).map_or(0, |h| h.0);
        if next != signed(first)? {
            return Err(StoreError::Database(format!(
                "channel {channel} continues at entry {next} in the database, not {first}: \
                 another writer appended to it"
            )));
        }
    }
    Ok(())
}

/// Moves every locked head to the batch's end, in one statement.
async fn move_heads(tx: &Transaction<'_>, heads: &Heads) -> Result<(), StoreError> {
    let mut channels = Vec::with_capacity(heads.len());
    let mut nexts = Vec::with_capacity(heads.len());
    let mut hashes = Vec::with_capacity(heads.len());
    let mut micros = Vec::with_capacity(heads.len());
    for (channel, (_, next, hash, at)) in heads {
        channels.push(channel);
        nexts.push(signed(*next)?);
        hashes.push(hash);
        micros.push(*at);
    }
    execute(
        tx,
        "UPDATE channel_heads AS h \
         SET next_seq = u.next_seq, last_leaf_hash = u.hash, last_hub_micros = u.micros \
         FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::bigint[]) \
             AS u(channel, next_seq, hash, micros) \
         WHERE h.channel = u.channel",
        &[&channels, &nexts, &hashes, &micros],
    )
    .await?;
    Ok(())
}

pub async fn registry(pool: Pool, epoch: i64, bytes: Vec<u8>) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(db)?;
    let tx = client.transaction().await.map_err(db)?;
    fence(&tx, epoch).await?;
    execute(
        &tx,
        "INSERT INTO registry (id, bytes) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET bytes = excluded.bytes",
        &[&bytes],
    )
    .await?;
    notify(&tx, "registry").await?;
    tx.commit().await.map_err(db)
}

/// Gathered fetched marks (`marks`), of any inboxes, in one transaction.
/// First serving wins: a position already marked keeps its time. A
/// standby's marks (`epoch` None) pass no fence: a mark is a fact of its
/// own serving, never overwritten, that no leader's write depends on.
///
/// A fetched mark is an observation, not a promise (`Store::mark_fetched`:
/// "not synced", as the sled store leaves it to its next flush): its
/// commit does not wait for the WAL to reach the disk
/// (`synchronous_commit` off for this transaction alone; the server's
/// setting stays on for everything else). A crash of the database server
/// may lose the marks of its last moments (at most three
/// `wal_writer_delay`s), never an entry, an answer or a checkpoint. Its
/// statements go together: BEGIN, then the setting, fence and insert in
/// one exchange, then COMMIT.
pub async fn fetched(pool: Pool, epoch: Option<i64>, marks: Batch) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(db)?;
    let tx = client.transaction().await.map_err(db)?;
    let unsynced = async {
        tx.batch_execute("SET LOCAL synchronous_commit TO off")
            .await
            .map_err(db)
    };
    let fenced = async {
        match epoch {
            Some(epoch) => fence(&tx, epoch).await,
            None => Ok(()),
        }
    };
    let params: [&(dyn ToSql + Sync); 3] = [&marks.inboxes, &marks.positions, &marks.micros];
    let insert = execute(
        &tx,
        "INSERT INTO fetched (inbox, position, hub_micros) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) ON CONFLICT DO NOTHING",
        &params,
    );
    try_join!(unsynced, fenced, insert)?;
    tx.commit().await.map_err(db)
}

pub async fn checkpoints(
    pool: Pool,
    epoch: i64,
    notes: Vec<(String, String)>,
) -> Result<(), StoreError> {
    let (channels, notes): (Vec<String>, Vec<String>) = notes.into_iter().unzip();
    let mut client = pool.get().await.map_err(db)?;
    let tx = client.transaction().await.map_err(db)?;
    fence(&tx, epoch).await?;
    execute(
        &tx,
        "INSERT INTO checkpoints (channel, note) SELECT * FROM unnest($1::text[], $2::text[]) \
         ON CONFLICT (channel) DO UPDATE SET note = excluded.note",
        &[&channels, &notes],
    )
    .await?;
    notify(&tx, "checkpoints").await?;
    tx.commit().await.map_err(db)
}

pub async fn state(
    pool: Pool,
    epoch: i64,
    space: String,
    batch: StateBatch,
) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(db)?;
    let tx = client.transaction().await.map_err(db)?;
    fence(&tx, epoch).await?;
    let put = tx
        .prepare_cached(
            "INSERT INTO state (space, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (space, key) DO UPDATE SET value = excluded.value",
        )
        .await
        .map_err(db)?;
    let remove = tx
        .prepare_cached("DELETE FROM state WHERE space = $1 AND key = $2")
        .await
        .map_err(db)?;
    for (key, value) in &batch.ops {
        match value {
            Some(v) => tx.execute(&put, &[&space, key, v]).await,
            None => tx.execute(&remove, &[&space, key]).await,
        }
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)
}
