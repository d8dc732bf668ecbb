//! The PostgreSQL store's writes. A group commit is one transaction: the
//! head of every channel it appends to is locked first (in name order, so
//! that two writers never wait on each other crosswise) and must be where
//! the batch continues it; then every row goes in by array, one statement
//! per table, the statements sent together (pipelined) so that a group
//! commit costs two round trips whatever its size: BEGIN with the fence
//! and the locks, then the rows, the heads' moves and COMMIT. Every write passes the lease's fence
//! (`lease::fence`) in its transaction: a hub that lost the lease writes
//! nothing.

use super::db;
use super::kept::{Fresh, Kept};
use super::lease::fence;
use super::marks::Batch;
use super::notices::notify;
use super::pooled::pooled;
use super::read::{execute, query, signed};
use crate::store::audit_index::{audit_key, audit_row};
use crate::store::entry_record::entry_record;
use crate::store::{AnswerKind, NewEntry, StateBatch, StoreError};
use deadpool_postgres::{GenericClient, Object, Pool};
use futures::future::{maybe_done, try_join_all};
use futures::{join, try_join};
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
    let mut connection = Committing(Some(pool.get().await.map_err(db)?));
    let Some(client) = connection.0.as_ref() else {
        return Err(StoreError::Database(
            "no connection for the group commit".into(),
        ));
    };
    group_commit(client, epoch, &rows).await?;
    connection.finished();
    kept.commit(&rows.fresh)
}

/// A group commit's connection. Unless the commit finished, it leaves the
/// pool when dropped (a failure, or the commit cut short): its
/// transaction may still be open, and the database rolls back whatever
/// it held once the connection closes.
struct Committing(Option<Object>);

impl Committing {
    /// The commit is done: the connection goes back to the pool.
    fn finished(&mut self) {
        self.0.take();
    }
}

impl Drop for Committing {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}

/// One group commit in two round trips. First BEGIN, the lease's fence and
/// the heads' locks, sent together (the heads may be locked before the
/// fence reads the lease FOR SHARE: no deadlock, as taking the lease over
/// locks no head). Once the fence and the heads are checked, every row,
/// the heads' moves and COMMIT, sent together ([`sent_then`]): COMMIT
/// leaves after every statement of the commit, and a statement that
/// fails at the database aborts the transaction, which the COMMIT behind
/// it then ends as a rollback: a fenced hub's transaction is rolled back
/// whole.
async fn group_commit(client: &Object, epoch: i64, rows: &Rows) -> Result<(), StoreError> {
    let columns = Columns::of(rows)?;
    let statements = columns.statements();
    // Prepared before anything is sent (once per connection): an
    // execute then sends at its first poll, with nothing to wait for.
    let prepared = try_join_all(statements.iter().map(|(sql, _)| client.prepare_cached(sql)))
        .await
        .map_err(db)?;
    sent_then(vec![client.batch_execute("BEGIN")], async {
        try_join!(fence(client, epoch), lock_heads(client, &rows.heads))
    })
    .await?;
    let sent = prepared
        .iter()
        .zip(&statements)
        .map(|(statement, (_, params))| client.execute(statement, params))
        .collect();
    sent_then(sent, async {
        client.batch_execute("COMMIT").await.map_err(db)
    })
    .await
}

/// Sends the requests of `first`, in order, then runs `then` beside them:
/// tokio-postgres sends a request when its future is first polled, so
/// `then`'s requests reach the database after all of `first`'s. A
/// request that fails before it is sent (its parameters cannot be
/// encoded) stops everything there: `then` is not run, and the caller's
/// connection, with its transaction, is dropped. All must succeed;
/// `first`'s failures are reported before `then`'s.
async fn sent_then<A, B, E: std::error::Error>(
    first: Vec<impl Future<Output = Result<A, E>>>,
    then: impl Future<Output = Result<B, StoreError>>,
) -> Result<(), StoreError> {
    let mut first: Vec<_> = first.into_iter().map(|f| Box::pin(maybe_done(f))).collect();
    for f in &mut first {
        // Pending or not, its request is on its way once it was polled.
        let _ = futures::poll!(f.as_mut());
        if matches!(f.as_mut().output_mut(), Some(Err(_)))
            && let Some(Err(e)) = f.as_mut().take_output()
        {
            return Err(db(e));
        }
    }
    let answered = async {
        for f in &mut first {
            f.as_mut().await;
        }
    };
    let ((), then) = join!(answered, then);
    for f in &mut first {
        f.as_mut()
            .take_output()
            .ok_or_else(|| {
                StoreError::Database("a group commit's statement was not answered".into())
            })?
            .map_err(db)?;
    }
    then?;
    Ok(())
}

/// A group commit's rows as the statements take them: one array per
/// column, positions and seqs as signed integers.
struct Columns<'r> {
    rows: &'r Rows,
    entry_seqs: Vec<i64>,
    message_seqs: Vec<i64>,
    hash_seqs: Vec<i64>,
    inbox_positions: Vec<i64>,
    inbox_seqs: Vec<i64>,
    head_inboxes: Vec<&'r String>,
    head_lasts: Vec<i64>,
    answer_positions: Vec<i64>,
    answer_seqs: Vec<i64>,
    moved_channels: Vec<&'r String>,
    moved_nexts: Vec<i64>,
    moved_hashes: Vec<&'r Vec<u8>>,
    moved_micros: Vec<i64>,
}

impl<'r> Columns<'r> {
    fn of(rows: &'r Rows) -> Result<Self, StoreError> {
        let (head_inboxes, lasts): (Vec<&String>, Vec<u64>) =
            rows.inbox_heads.iter().map(|(n, l)| (n, *l)).unzip();
        let mut moved_channels = Vec::with_capacity(rows.heads.len());
        let mut moved_nexts = Vec::with_capacity(rows.heads.len());
        let mut moved_hashes = Vec::with_capacity(rows.heads.len());
        let mut moved_micros = Vec::with_capacity(rows.heads.len());
        for (channel, (_, next, hash, at)) in &rows.heads {
            moved_channels.push(channel);
            moved_nexts.push(signed(*next)?);
            moved_hashes.push(hash);
            moved_micros.push(*at);
        }
        Ok(Self {
            rows,
            entry_seqs: signed_all(&rows.entries.1)?,
            message_seqs: signed_all(&rows.messages.2)?,
            hash_seqs: signed_all(&rows.hashes.1)?,
            inbox_positions: signed_all(&rows.inbox.1)?,
            inbox_seqs: signed_all(&rows.inbox.3)?,
            head_inboxes,
            head_lasts: signed_all(&lasts)?,
            answer_positions: signed_all(&rows.answers.1)?,
            answer_seqs: signed_all(&rows.answers.3)?,
            moved_channels,
            moved_nexts,
            moved_hashes,
            moved_micros,
        })
    }

    /// Every table's rows, one statement per table, and the heads' moves.
    fn statements(&self) -> Vec<(&'static str, Vec<&(dyn ToSql + Sync)>)> {
        let r = self.rows;
        let mut statements: Vec<(&'static str, Vec<&(dyn ToSql + Sync)>)> = vec![
            (
                "INSERT INTO entries (channel, seq, record) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])",
                vec![&r.entries.0, &self.entry_seqs, &r.entries.2],
            ),
            (
                "INSERT INTO messages (channel, message_id, seq, digest) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[])",
                vec![
                    &r.messages.0,
                    &r.messages.1,
                    &self.message_seqs,
                    &r.messages.3,
                ],
            ),
            (
                "INSERT INTO tree_hashes (channel, seq, hashes) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])",
                vec![&r.hashes.0, &self.hash_seqs, &r.hashes.2],
            ),
        ];
        if !r.inbox.0.is_empty() {
            statements.push((
                "INSERT INTO inbox (inbox, position, channel, seq) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])",
                vec![
                    &r.inbox.0,
                    &self.inbox_positions,
                    &r.inbox.2,
                    &self.inbox_seqs,
                ],
            ));
            statements.push((
                "INSERT INTO inbox_heads (inbox, last) \
                 SELECT * FROM unnest($1::text[], $2::bigint[]) \
                 ON CONFLICT (inbox) DO UPDATE SET last = greatest(inbox_heads.last, excluded.last)",
                vec![&self.head_inboxes, &self.head_lasts],
            ));
        }
        let AnswerRows(inboxes, _, exceptions, _, micros) = &r.answers;
        if !inboxes.is_empty() {
            statements.push((
                "INSERT INTO answers (inbox, position, exception, seq, hub_micros) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::boolean[], $4::bigint[], $5::bigint[])",
                vec![inboxes, &self.answer_positions, exceptions, &self.answer_seqs, micros],
            ));
        }
        if !r.audit.0.is_empty() {
            statements.push((
                "INSERT INTO audit_scope (key, row_bytes) SELECT * FROM unnest($1::bytea[], $2::bytea[])",
                vec![&r.audit.0, &r.audit.1],
            ));
        }
        // Every locked head moves to the batch's end.
        statements.push((
            "UPDATE channel_heads AS h \
             SET next_seq = u.next_seq, last_leaf_hash = u.hash, last_hub_micros = u.micros \
             FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::bigint[]) \
                 AS u(channel, next_seq, hash, micros) \
             WHERE h.channel = u.channel",
            vec![
                &self.moved_channels,
                &self.moved_nexts,
                &self.moved_hashes,
                &self.moved_micros,
            ],
        ));
        statements
    }
}

/// Locks the head of every channel the batch appends to, in name order
/// (one statement: the rows are locked as the sort returns them), and
/// checks that each continues where the batch starts. The missing heads
/// are made in the same exchange, sent first.
async fn lock_heads(tx: &impl GenericClient, heads: &Heads) -> Result<(), StoreError> {
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

pub async fn registry(pool: Pool, epoch: i64, bytes: Vec<u8>) -> Result<(), StoreError> {
    let mut conn = pooled(&pool).await?;
    let tx = conn.client_mut()?.transaction().await.map_err(db)?;
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
    let mut conn = pooled(&pool).await?;
    let tx = conn.client_mut()?.transaction().await.map_err(db)?;
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
    let mut conn = pooled(&pool).await?;
    let tx = conn.client_mut()?.transaction().await.map_err(db)?;
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
    let mut conn = pooled(&pool).await?;
    let tx = conn.client_mut()?.transaction().await.map_err(db)?;
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

#[cfg(test)]
mod tests {
    use super::sent_then;
    use std::sync::{Arc, Mutex};
    use std::task::Poll;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot be encoded")]
    struct Unsendable;

    /// A request: logs its sending at its first poll, answers at its second.
    fn request(
        log: &Arc<Mutex<Vec<String>>>,
        name: &str,
        fails_unsent: bool,
    ) -> impl Future<Output = Result<(), Unsendable>> {
        let (log, name) = (log.clone(), name.to_string());
        let mut polls = 0;
        std::future::poll_fn(move |cx| {
            polls += 1;
            if fails_unsent {
                return Poll::Ready(Err(Unsendable));
            }
            if polls == 1 {
                log.lock().map(|mut l| l.push(name.clone())).ok();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        })
    }

    #[test]
    fn what_follows_is_sent_after_every_first_request() -> Result<(), Box<dyn std::error::Error>> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let first = vec![request(&log, "a", false), request(&log, "b", false)];
        let then = request(&log, "commit", false);
        futures::executor::block_on(sent_then(first, async { then.await.map_err(super::db) }))?;
        assert_eq!(
            *log.lock().map_err(|e| e.to_string())?,
            ["a", "b", "commit"]
        );
        Ok(())
    }

    #[test]
    fn a_request_that_cannot_be_sent_stops_what_follows() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let first = vec![
            request(&log, "a", false),
            request(&log, "b", true),
            request(&log, "c", false),
        ];
        let then = request(&log, "commit", false);
        let done =
            futures::executor::block_on(sent_then(first, async { then.await.map_err(super::db) }));
        assert!(done.is_err());
        assert_eq!(log.lock().map(|l| l.clone()).unwrap_or_default(), ["a"]);
    }
}
