//! The PostgreSQL store's reads: one statement each, on a pooled
//! connection, decoded with the sled store's record codec where the
//! record is the hub's own encoding. Statements are prepared once per
//! connection ([`query`]): a read is then one round trip, not two.

use super::db;
use super::pooled::pooled;
use crate::store::audit_index::{audit_key_parts, decode_audit_row};
use crate::store::codec::{hash_from, stored_hash_place};
use crate::store::entry_record::decode_entry;
use crate::store::{
    Answer, AnswerKind, ChannelHead, InboxItem, MessageRecord, ScopedEntry, StateRecords,
    StoreError, StoredEntry,
};
use deadpool_postgres::{GenericClient, Pool};
use std::collections::{BTreeMap, HashMap};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tongbao_proto::{HASH_LEN, Hash};

/// Statement parameters, as the driver takes them.
pub(super) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Runs `sql` as a statement the connection prepared once and keeps.
pub(super) async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(db)?;
    c.query(&statement, params).await.map_err(db)
}

/// As [`query`], for at most one row.
pub(super) async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(db)?;
    c.query_opt(&statement, params).await.map_err(db)
}

/// As [`query`], for a statement that returns no rows.
pub(super) async fn execute(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<u64, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(db)?;
    c.execute(&statement, params).await.map_err(db)
}

/// A stored count or position, which is never negative.
pub(super) fn unsigned(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is negative ({v})")))
}

/// A count or position as PostgreSQL's bigint holds it.
pub(super) fn signed(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v)
        .map_err(|_| StoreError::Database(format!("position {v} is beyond what the store keeps")))
}

fn signed_all(v: &[u64]) -> Result<Vec<i64>, StoreError> {
    v.iter().map(|c| signed(*c)).collect()
}

pub async fn registry(pool: Pool) -> Result<Option<Vec<u8>>, StoreError> {
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let row = query_opt(c, "SELECT bytes FROM registry WHERE id = 1", &[]).await?;
    Ok(row.map(|r| r.get(0)))
}

pub async fn channel_heads(pool: Pool) -> Result<BTreeMap<String, ChannelHead>, StoreError> {
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let rows = query(
        c,
        "SELECT channel, next_seq, last_leaf_hash, last_hub_micros FROM channel_heads \
             WHERE next_seq > 0",
        &[],
    )
    .await?;
    let mut out = BTreeMap::new();
    for r in rows {
        let channel: String = r.get(0);
        let hash: Vec<u8> = r.get(2);
        let head = ChannelHead {
            next_seq: unsigned(r.get(1), "a channel's length")?,
            last_leaf_hash: hash_from(&hash)?,
            last_hub_micros: r.get(3),
        };
        out.insert(channel, head);
    }
    Ok(out)
}

pub async fn inbox_heads(pool: Pool) -> Result<BTreeMap<String, u64>, StoreError> {
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let rows = query(c, "SELECT inbox, last FROM inbox_heads", &[]).await?;
    rows.into_iter()
        .map(|r| Ok((r.get(0), unsigned(r.get(1), "an inbox head")?)))
        .collect()
}

pub async fn entry(
    pool: Pool,
    channel: String,
    seq: u64,
) -> Result<Option<StoredEntry>, StoreError> {
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let row = query_opt(
        c,
        "SELECT record FROM entries WHERE channel = $1 AND seq = $2",
        &[&channel, &signed(seq)?],
    )
    .await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let record: Vec<u8> = r.get(0);
            decode_entry(&channel, seq, &record).map(Some)
        }
    }
}

pub async fn message(
    pool: Pool,
    sender: String,
    message_id: String,
) -> Result<Option<MessageRecord>, StoreError> {
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let row = query_opt(
        c,
        "SELECT seq, digest FROM messages WHERE channel = $1 AND message_id = $2",
        &[&sender, &message_id],
    )
    .await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let digest: Vec<u8> = r.get(1);
            Ok(Some(MessageRecord {
                seq: unsigned(r.get(0), "a message's position")?,
                message_digest: hash_from(&digest)?,
            }))
        }
    }
}

/// [`message`] of several (sender, message id), in the order asked, in
/// one statement (the idempotency index's primary key serves each).
pub async fn messages(
    pool: Pool,
    asked: Vec<(String, String)>,
) -> Result<Vec<Option<MessageRecord>>, StoreError> {
    let mut out: Vec<Option<MessageRecord>> = (0..asked.len()).map(|_| None).collect();
    if asked.is_empty() {
        return Ok(out);
    }
    let (channels, ids): (Vec<String>, Vec<String>) = asked.into_iter().unzip();
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let rows = query(
        c,
        "SELECT q.asker, m.seq, m.digest \
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q(channel, message_id, asker) \
             JOIN messages m ON m.channel = q.channel AND m.message_id = q.message_id",
        &[&channels, &ids],
    )
    .await?;
    for r in rows {
        // WITH ORDINALITY counts from 1.
        let asker: i64 = r.try_get(0).map_err(db)?;
        let slot = usize::try_from(asker - 1)
            .ok()
            .and_then(|i| out.get_mut(i))
            .ok_or_else(|| {
                StoreError::Corrupt(format!("an answer to message {asker}, not asked"))
            })?;
        let digest: Vec<u8> = r.try_get(2).map_err(db)?;
        *slot = Some(MessageRecord {
            seq: unsigned(r.try_get(1).map_err(db)?, "a message's position")?,
            message_digest: hash_from(&digest)?,
        });
    }
    Ok(out)
}

pub async fn inbox_page(
    pool: Pool,
    inbox: String,
    after: u64,
    limit: usize,
) -> Result<Vec<InboxItem>, StoreError> {
    let Some(start) = after.checked_add(1) else {
        return Ok(Vec::new());
    };
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let rows = query(
        c,
        "SELECT position, channel, seq FROM inbox WHERE inbox = $1 AND position >= $2 \
             ORDER BY position LIMIT $3",
        &[
            &inbox,
            &signed(start)?,
            &(limit.min(i64::MAX as usize) as i64),
        ],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut expected = start;
    for r in rows {
        let cursor = unsigned(r.get(0), "an inbox position")?;
        // Positions are contiguous: a gap means rows were removed.
        if cursor != expected {
            return Err(StoreError::Corrupt(format!(
                "inbox {inbox}: positions {expected}..={} are missing",
                cursor.saturating_sub(1)
            )));
        }
        expected = cursor.saturating_add(1);
        out.push(InboxItem {
            cursor,
            channel: r.get(1),
            seq: unsigned(r.get(2), "an entry's position")?,
        });
    }
    Ok(out)
}

pub async fn answers(
    pool: Pool,
    inbox: String,
    cursors: Vec<u64>,
) -> Result<Vec<Option<Answer>>, StoreError> {
    // Every push asks, most with no answers: no round trip for those.
    if cursors.is_empty() {
        return Ok(Vec::new());
    }
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let rows = query(
        c,
        "SELECT position, exception, seq, hub_micros FROM answers \
             WHERE inbox = $1 AND position = ANY($2)",
        &[&inbox, &signed_all(&cursors)?],
    )
    .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for r in rows {
        found.insert(unsigned(r.get(0), "an inbox position")?, answer(&r, 1)?);
    }
    Ok(cursors.iter().map(|c| found.get(c).cloned()).collect())
}

/// The answer in `r`'s columns from `at` on: exception, seq, hub time.
fn answer(r: &Row, at: usize) -> Result<Answer, StoreError> {
    let exception: bool = r.try_get(at).map_err(db)?;
    Ok(Answer {
        kind: if exception {
            AnswerKind::Exception
        } else {
            AnswerKind::Acknowledged
        },
        seq: unsigned(r.try_get(at + 1).map_err(db)?, "an answer's position")?,
        hub_micros: r.try_get(at + 2).map_err(db)?,
    })
}

/// [`answers`] of several (inbox, cursors), in the order asked, in one
/// statement: each asked position is joined with its answer, if any.
pub async fn answers_of(
    pool: Pool,
    asked: Vec<(String, Vec<u64>)>,
) -> Result<Vec<Vec<Option<Answer>>>, StoreError> {
    let (mut inboxes, mut positions, mut askers) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (inbox, cursors)) in asked.iter().enumerate() {
        for c in cursors {
            inboxes.push(inbox.as_str());
            positions.push(signed(*c)?);
            askers.push(i64::try_from(i).map_err(db)?);
        }
    }
    let mut found = HashMap::new();
    // Most batches carry no receipt: no round trip for those.
    if !inboxes.is_empty() {
        let conn = pooled(&pool).await?;
        let c = conn.client()?;
        let rows = query(
            c,
            "SELECT q.asker, q.position, a.exception, a.seq, a.hub_micros \
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS q(inbox, position, asker) \
                 JOIN answers a ON a.inbox = q.inbox AND a.position = q.position",
            &[&inboxes, &positions, &askers],
        )
        .await?;
        for r in rows {
            let asker = unsigned(r.try_get(0).map_err(db)?, "an asker")?;
            let position = unsigned(r.try_get(1).map_err(db)?, "an inbox position")?;
            found.insert((asker, position), answer(&r, 2)?);
        }
    }
    Ok(asked
        .iter()
        .enumerate()
        .map(|(i, (_, cursors))| {
            cursors
                .iter()
                .map(|c| found.get(&(i as u64, *c)).cloned())
                .collect()
        })
        .collect())
}

pub async fn fetched(
    pool: Pool,
    inbox: String,
    cursors: Vec<u64>,
) -> Result<Vec<Option<i64>>, StoreError> {
    if cursors.is_empty() {
        return Ok(Vec::new());
    }
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let rows = query(
        c,
        "SELECT position, hub_micros FROM fetched WHERE inbox = $1 AND position = ANY($2)",
        &[&inbox, &signed_all(&cursors)?],
    )
    .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for r in rows {
        found.insert(unsigned(r.get(0), "an inbox position")?, r.get::<_, i64>(1));
    }
    Ok(cursors.iter().map(|c| found.get(c).copied()).collect())
}

pub async fn audit_scope(
    pool: Pool,
    from: Vec<u8>,
    to: Vec<u8>,
    limit: usize,
) -> Result<Vec<ScopedEntry>, StoreError> {
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let rows = query(
        c,
        "SELECT key, row_bytes FROM audit_scope WHERE key >= $1 AND key < $2 \
             ORDER BY key LIMIT $3",
        &[&from, &to, &(limit.min(i64::MAX as usize) as i64)],
    )
    .await?;
    rows.into_iter()
        .map(|r| {
            let (k, v): (Vec<u8>, Vec<u8>) = (r.get(0), r.get(1));
            decode_audit_row(&k, &v)
        })
        .collect()
}

/// The hub time of the row after the first `skip` with keys in [from,
/// to): the index alone is read (`audit_scope`'s key), no row's bytes.
pub async fn audit_row_past(
    pool: Pool,
    from: Vec<u8>,
    to: Vec<u8>,
    skip: usize,
) -> Result<Option<i64>, StoreError> {
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let row = query_opt(
        c,
        "SELECT key FROM audit_scope WHERE key >= $1 AND key < $2 \
             ORDER BY key OFFSET $3 LIMIT 1",
        &[&from, &to, &(skip.min(i64::MAX as usize) as i64)],
    )
    .await?;
    row.map(|r| audit_key_parts(&r.get::<_, Vec<u8>>(0)).map(|(_, at, _, _)| at))
        .transpose()
}

pub async fn stored_hashes(
    pool: Pool,
    channel: String,
    indexes: Vec<u64>,
) -> Result<Vec<Hash>, StoreError> {
    let missing =
        |i: u64| StoreError::Corrupt(format!("channel {channel}: stored hash {i} is missing"));
    let places = indexes
        .iter()
        .map(|i| stored_hash_place(*i).ok_or_else(|| missing(*i)))
        .collect::<Result<Vec<_>, _>>()?;
    let seqs: Vec<i64> = places
        .iter()
        .map(|(seq, _)| signed(*seq))
        .collect::<Result<_, _>>()?;
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let rows = query(
        c,
        "SELECT seq, hashes FROM tree_hashes WHERE channel = $1 AND seq = ANY($2)",
        &[&channel, &seqs],
    )
    .await?;
    let mut records: HashMap<u64, Vec<u8>> = HashMap::with_capacity(rows.len());
    for r in rows {
        records.insert(unsigned(r.get(0), "an entry's position")?, r.get(1));
    }
    indexes
        .iter()
        .zip(places)
        .map(|(i, (seq, at))| {
            let record = records.get(&seq).ok_or_else(|| missing(*i))?;
            hash_from(record.get(at..at + HASH_LEN).ok_or_else(|| missing(*i))?)
        })
        .collect()
}

pub async fn checkpoints(pool: Pool) -> Result<BTreeMap<String, String>, StoreError> {
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let rows = query(c, "SELECT channel, note FROM checkpoints", &[]).await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub async fn state(pool: Pool, space: String, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let row = query_opt(
        c,
        "SELECT value FROM state WHERE space = $1 AND key = $2",
        &[&space, &key],
    )
    .await?;
    Ok(row.map(|r| r.get(0)))
}

/// The first key after every key that starts with `prefix` (None: no
/// such key, the prefix being empty or all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub async fn state_prefix(
    pool: Pool,
    space: String,
    prefix: Vec<u8>,
) -> Result<StateRecords, StoreError> {
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    // A key range, so the primary key's index serves it (bytea compares
    // bytewise).
    let rows = match prefix_end(&prefix) {
        Some(end) => {
            query(
                c,
                "SELECT key, value FROM state WHERE space = $1 AND key >= $2 AND key < $3 \
                 ORDER BY key",
                &[&space, &prefix, &end],
            )
            .await?
        }
        None => {
            query(
                c,
                "SELECT key, value FROM state WHERE space = $1 AND key >= $2 ORDER BY key",
                &[&space, &prefix],
            )
            .await?
        }
    };
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub async fn state_after(
    pool: Pool,
    space: String,
    after: Vec<u8>,
    limit: i64,
) -> Result<StateRecords, StoreError> {
    let conn = pooled(&pool).await?;
    let c = conn.client()?;
    let rows = query(
        c,
        "SELECT key, value FROM state WHERE space = $1 AND key > $2 ORDER BY key LIMIT $3",
        &[&space, &after, &limit],
    )
    .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"m/"), Some(b"m0".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }
}
