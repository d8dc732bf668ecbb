//! The access log's writer when the store keeps the log (PostgreSQL: see
//! `store::access`), with the group commit of the files' writer: the same
//! queue and rounds (`writer`), each round one commit of its records,
//! their stored hashes and, when one falls due, the signed checkpoint
//! over them. A record is answered durable once its round committed.
//! An origin's first records commit with a checkpoint over them, so a
//! log with records always has one (`stored_check` refuses one without),
//! and each checkpoint committed is copied to the data directory
//! (`stored_copy`), out of reach of whoever holds only the database.
//!
//! A commit whose records are durable but whose tail failed (sled's
//! checkpoint file, say: `StoreError::Committed`) is neither answered
//! durable nor tried again: the writer stops. A commit that failed
//! otherwise is tried once more (a connection cut under it) only when the store holds none of what it wrote; when the store holds
//! exactly what it wrote, it went through before the cut; anything else
//! there is another writer's, and the writer stops.
//!
//! Where the store syncs lazily (sled's files: `access_syncs_lazily`),
//! a round's commit is cheaper split: a round a caller waits on commits
//! its records (one fdatasync), is answered, and only then signs, in an
//! append of its own (the tree's sync, the checkpoint file's); a round
//! nobody waits on (reads, refusals) writes its records unsynced, synced
//! by the next round a caller waits on, the next checkpoint, or
//! [`LAZY_SYNC`] after, whichever comes first. An origin's first records
//! still commit with their checkpoint. On PostgreSQL each round is one
//! transaction, its checkpoint in it when due.
//!
//! The writer holds its origin's guard for its life, so no other process
//! writes the same log; a hub that stops lets go of it at once.
//!
//! Retention (at start and hourly) removes the oldest records once their
//! UTC day is past `retention_days`, never the last day written, in
//! chunks of at most [`REMOVE_CHUNK`] records, one chunk a round (after
//! the round's records are answered), so that no round waits on a large
//! day's delete: each chunk is one commit that appends the removal record
//! naming its records (with the tree's root after them) and removes them,
//! so no crash leaves one without the other, and a removal cut short is
//! a shorter one, which the next round (or start) goes on from. Their
//! stored hashes stay. A retention read that fails is logged and tried
//! again at the next retention time: it changes nothing, and closing the
//! log (every call with it) for a removal that can wait would be worse.

use super::files::day_of;
use super::record::{AccessRecord, RecordKind, RemovedSegment, leaf_of_line};
use super::stored_check::{StoredScan, StoredTree};
use super::stored_copy;
use super::writer::{POLL, Queued, RETAIN_EVERY, Rounds, SIGN_EVERY, Signer, Waiter};
use super::{AccessLogConfig, AccessLogError, Frontier};
use crate::store::Store;
use crate::store::access::{AccessLogStore, AccessRow, OriginGuard};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tongbao_proto::merkle::{stored_hash_count, tree_hash};

const DAY_MICROS: i64 = 86_400_000_000;

/// Records one retention commit removes at most.
pub const REMOVE_CHUNK: u64 = 4096;

/// Records nobody waits on are synced at most this long after they are
/// written (where the store syncs lazily: see the module doc).
pub const LAZY_SYNC: Duration = Duration::from_millis(750);

/// How a commit goes (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    /// Durable, with a checkpoint when one is due.
    Signed,
    /// Durable, never signed (a round's waiters are answered first).
    Unsigned,
    /// Not yet durable: records nobody waits on.
    Lazy,
}

pub struct StoredWriter {
    store: Arc<dyn Store>,
    guard: Option<Box<dyn OriginGuard>>,
    frontier: Frontier,
    signer: Signer,
    signed_size: u64,
    last_signed: Instant,
    config: AccessLogConfig,
    /// When retention last found nothing more to remove.
    last_retained: Option<Instant>,
    /// Retention removed a chunk last round: more may be due.
    retaining: bool,
    /// Records one retention commit removes at most.
    remove_chunk: u64,
    /// The oldest record kept was seen to be of a future time (said once).
    future_warned: bool,
    clock_offset_micros: i64,
    /// Where this host's copy of the latest checkpoint is kept (none
    /// when the log itself lies in the data directory: sled's).
    copy_dir: Option<PathBuf>,
    /// Since when records written lazily wait for their sync.
    unsynced_since: Option<Instant>,
}

/// What the writer is given at start.
pub struct Setup {
    pub store: Arc<dyn Store>,
    pub guard: Box<dyn OriginGuard>,
    pub checked: StoredScan,
    pub signer: Signer,
    pub config: AccessLogConfig,
    pub clock_offset_micros: i64,
    pub copy_dir: Option<PathBuf>,
    /// [`REMOVE_CHUNK`], but in tests of a removal in several chunks.
    pub remove_chunk: u64,
}

impl StoredWriter {
    pub fn new(setup: Setup) -> Self {
        let Setup {
            store,
            guard,
            checked,
            signer,
            config,
            clock_offset_micros,
            copy_dir,
            remove_chunk,
        } = setup;
        Self {
            store,
            guard: Some(guard),
            signed_size: checked.checkpoint.as_ref().map_or(0, |(c, _)| c.size),
            frontier: checked.frontier,
            signer,
            last_signed: Instant::now(),
            config,
            last_retained: None,
            retaining: false,
            remove_chunk: remove_chunk.max(1),
            future_warned: false,
            clock_offset_micros,
            copy_dir,
            unsynced_since: None,
        }
    }

    /// Whether a checkpoint is due: records unsigned, and the first ones,
    /// a stop, or [`SIGN_EVERY`] since the last.
    fn sign_due(&self, stopping: bool) -> bool {
        self.signed_size < self.frontier.size()
            && (stopping || self.signed_size == 0 || self.last_signed.elapsed() >= SIGN_EVERY)
    }

    /// Whether records written lazily are due to be synced.
    fn sync_due(&self, stopping: bool) -> bool {
        self.unsynced_since
            .is_some_and(|t| stopping || t.elapsed() >= LAZY_SYNC)
    }

    fn db(&self) -> Result<&dyn AccessLogStore, AccessLogError> {
        self.store.access_log().ok_or_else(|| {
            AccessLogError::Closed("the store no longer keeps the access log".into())
        })
    }

    /// Numbers and hashes the batch's records, and commits them as `how`
    /// says (an origin's first records always signed).
    fn commit(
        &mut self,
        records: Vec<AccessRecord>,
        stopping: bool,
        remove_before: Option<u64>,
        how: How,
    ) -> Result<(), AccessLogError> {
        let how = match self.signed_size {
            0 => How::Signed,
            _ => how,
        };
        let first_hash = stored_hash_count(self.frontier.size());
        let mut rows = Vec::with_capacity(records.len());
        let mut hashes = Vec::new();
        for record in records {
            let mut record = record.bounded();
            record.n = self.frontier.size();
            let line = record
                .to_line()
                .map_err(|e| AccessLogError::Closed(format!("cannot encode a record: {e}")))?;
            hashes.extend(self.frontier.append(leaf_of_line(&line))?);
            rows.push(AccessRow {
                n: record.n,
                at_micros: record.at_micros,
                line: line.into_bytes(),
            });
        }
        let size = self.frontier.size();
        // The first records of an origin are signed in their own commit:
        // records without a checkpoint would be anyone's to rewrite.
        let note = match how == How::Signed && self.sign_due(stopping) {
            true => Some(self.signer.sign(size, self.frontier.root()?)?),
            false => None,
        };
        // An empty durable commit syncs what was written lazily.
        if rows.is_empty() && note.is_none() && (how == How::Lazy || self.unsynced_since.is_none())
        {
            return Ok(());
        }
        let origin = self.signer.origin().to_string();
        let db = self.db()?;
        let append = || match how {
            How::Lazy => db.access_append_lazily(&origin, &rows, first_hash, &hashes),
            _ => db.access_append(
                &origin,
                &rows,
                first_hash,
                &hashes,
                note.as_deref(),
                remove_before,
            ),
        };
        // A connection cut under a commit (a database restarting, a
        // network blip) would otherwise close the log, and with it every
        // call, until a restart: tried once more on a fresh connection
        // when none of it is stored (see the module doc).
        if let Err(e) = append() {
            if let crate::store::StoreError::Committed(why) = &e {
                // Durable, but not as the round needs (its checkpoint, say):
                // nobody is answered, nothing tried again; the next start
                // repairs from what is there.
                return Err(AccessLogError::Closed(format!(
                    "an access log commit of {origin} went through but what follows it failed ({why}); this writer stops"
                )));
            }
            tracing::warn!(error = %e, "an access log commit failed; trying it once more");
            match stored_as_written(db, &origin, &rows, first_hash, &hashes)? {
                Found::Ours => {}
                Found::Nothing => append()?,
                Found::Other(what) => {
                    return Err(AccessLogError::Closed(format!(
                        "another writer was seen in the access log {origin}: {what} \
                         (the commit failed with: {e}); this writer stops"
                    )));
                }
            }
        }
        match how {
            How::Lazy if !rows.is_empty() => {
                self.unsynced_since.get_or_insert_with(Instant::now);
            }
            How::Lazy => {}
            _ => self.unsynced_since = None,
        }
        if let Some(note) = &note {
            self.signed_size = size;
            self.last_signed = Instant::now();
            // Committed already: a copy not written leaves the older one,
            // which the database's still extends.
            if let Some(dir) = &self.copy_dir
                && let Err(e) = stored_copy::write(dir, note)
            {
                tracing::error!(error = %e, "cannot keep this host's copy of the access log's checkpoint");
            }
        }
        Ok(())
    }

    /// Removes the oldest records past retention, one chunk of them (see
    /// the module doc); whether it removed any (then more may be due).
    ///
    /// A read that fails (what is due, the tree's root) changes nothing:
    /// it is logged and retention waits for its next time, since closing
    /// the log, and every call with it, for a removal that can wait an
    /// hour would be worse. A commit that fails stops the writer as any
    /// round's does: the writer's tree already holds the removal record,
    /// and the store may or may not.
    fn retain_chunk(&mut self) -> Result<bool, AccessLogError> {
        let due = match self.removal_due() {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "access log retention could not read what is due; trying again in an hour");
                return Ok(false);
            }
        };
        let Some((removal, end)) = due else {
            return Ok(false);
        };
        let (segment, count) = removal
            .removed
            .as_ref()
            .map(|r| (r.segment.clone(), r.count))
            .unwrap_or_default();
        self.commit(vec![removal], false, Some(end), How::Signed)?;
        tracing::info!(%segment, records = count, "access log records removed under retention");
        Ok(true)
    }

    /// Whether the warning of a future oldest record was given.
    #[cfg(test)]
    pub(super) fn warned_of_future(&self) -> bool {
        self.future_warned
    }

    /// The removal record of the next chunk due and where the chunk ends,
    /// or None when nothing is past retention. Reads only.
    fn removal_due(&mut self) -> Result<Option<(AccessRecord, u64)>, AccessLogError> {
        let now = tongbao_proto::now_micros().saturating_add(self.clock_offset_micros);
        let cutoff = now.saturating_sub(i64::from(self.config.retention_days) * DAY_MICROS);
        let origin = self.signer.origin().to_string();
        let db = self.db()?;
        let extent = db.access_extent(&origin)?;
        let Some(first) = extent.first_kept else {
            return Ok(None);
        };
        let Some(oldest) = db.access_records(&origin, first, 1)?.pop() else {
            return Ok(None);
        };
        let day_ends = (oldest.at_micros.div_euclid(DAY_MICROS) + 1).saturating_mul(DAY_MICROS);
        if day_ends > cutoff {
            // A record of a time ahead of the hub's clock (a clock set
            // wrong once) holds back every record after it until then:
            // said once, for the operator to see.
            if oldest.at_micros > now && !self.future_warned {
                self.future_warned = true;
                tracing::warn!(
                    record = first,
                    at_micros = oldest.at_micros,
                    "the oldest access log record kept is of a time ahead of the hub's clock: retention removes nothing until its day is past retention_days"
                );
            }
            return Ok(None);
        }
        let Some(end) = chunk_end(db, &origin, first, extent.next, self.remove_chunk, day_ends)?
        else {
            return Ok(None);
        };
        let root = hex::encode(tree_hash(
            end,
            &StoredTree {
                db: db.access_reads(),
                origin: &origin,
            },
        )?);
        let day = day_of(oldest.at_micros);
        let segment = format!("records-{first:020}-{day}");
        let removal = AccessRecord {
            at_micros: now,
            kind: RecordKind::Removal,
            method: "retention".into(),
            message: format!(
                "removed {segment}: records {first}..{end}, older than {} days",
                self.config.retention_days
            ),
            removed: Some(RemovedSegment {
                segment: segment.clone(),
                first,
                count: end - first,
                root,
            }),
            ..Default::default()
        };
        Ok(Some((removal, end)))
    }
}

/// Where the chunk of the day's records from `first` that retention
/// removes ends: at the first record of a later day within `chunk`
/// records, else after `chunk` records when a later day's record follows
/// them; None when none follows (the day is the last written, and stays).
/// Each look reads a chunk, or one record, but where the hub's clock went
/// back (a later record of an earlier time) the rest of the log.
fn chunk_end(
    db: &dyn AccessLogStore,
    origin: &str,
    first: u64,
    next: u64,
    chunk: u64,
    day_ends: i64,
) -> Result<Option<u64>, AccessLogError> {
    let window = first.saturating_add(chunk).min(next);
    if let Some(end) = db.access_first_at(origin, first, window, day_ends)? {
        return Ok(Some(end));
    }
    if window >= next {
        return Ok(None);
    }
    let last_is_later = db
        .access_records(origin, next - 1, 1)?
        .first()
        .is_some_and(|r| r.at_micros >= day_ends);
    if last_is_later
        || db
            .access_first_at(origin, window, u64::MAX, day_ends)?
            .is_some()
    {
        return Ok(Some(window));
    }
    Ok(None)
}

/// What the store holds where a failed commit wrote.
enum Found {
    /// Exactly its records and hashes: it went through.
    Ours,
    /// None of them: it did not.
    Nothing,
    /// Something else, said in words.
    Other(String),
}

/// Reads back where a failed commit wrote and compares (see [`Found`]).
fn stored_as_written(
    db: &dyn AccessLogStore,
    origin: &str,
    rows: &[AccessRow],
    first_hash: u64,
    hashes: &[tongbao_proto::Hash],
) -> Result<Found, AccessLogError> {
    let stored = match hashes.is_empty() {
        true => Vec::new(),
        false => db.access_hash_range(origin, first_hash, hashes.len())?,
    };
    let records = match rows.first() {
        Some(first) => db.access_records(origin, first.n, rows.len())?,
        None => Vec::new(),
    };
    if stored.is_empty() && records.is_empty() {
        return Ok(Found::Nothing);
    }
    let ours = stored.len() == hashes.len()
        && stored
            .iter()
            .zip(first_hash..)
            .zip(hashes)
            .all(|(((i, h), want_i), want)| *i == want_i && h == want)
        && records == rows;
    if ours {
        return Ok(Found::Ours);
    }
    let end = first_hash + hashes.len() as u64;
    Ok(Found::Other(match rows {
        [first, .., last] => format!(
            "records {}..={} or their stored hashes {first_hash}..{end} are there, not as this writer wrote them",
            first.n, last.n
        ),
        [only] => format!(
            "record {} or its stored hashes {first_hash}..{end} are there, not as this writer wrote them",
            only.n
        ),
        [] => format!("stored hashes {first_hash}..{end} are there, not as this writer wrote them"),
    }))
}

impl Rounds for StoredWriter {
    fn round(
        &mut self,
        batch: Vec<Queued>,
        stopping: bool,
    ) -> Result<(), (AccessLogError, Vec<Waiter>)> {
        let mut waiters = Vec::new();
        let mut records = Vec::with_capacity(batch.len());
        for (record, waiter, _) in batch {
            waiters.extend(waiter);
            records.push(record);
        }
        let split = self.db().is_ok_and(|db| db.access_syncs_lazily());
        let how = match (split, waiters.is_empty() && !stopping) {
            (false, _) => How::Signed,
            (true, true) => How::Lazy,
            (true, false) => How::Unsigned,
        };
        if let Err(e) = self.commit(records, stopping, None, how) {
            return Err((e, waiters));
        }
        for w in waiters {
            let _ = w.send(Ok(()));
        }
        // Split: signed, or synced, once answered (see the module doc).
        if split && (self.sign_due(stopping) || self.sync_due(stopping)) {
            self.commit(Vec::new(), stopping, None, How::Signed)
                .map_err(|e| (e, Vec::new()))?;
        }
        if !stopping
            && (self.retaining
                || self
                    .last_retained
                    .is_none_or(|t| t.elapsed() >= RETAIN_EVERY))
        {
            self.retaining = self.retain_chunk().map_err(|e| (e, Vec::new()))?;
            if !self.retaining {
                self.last_retained = Some(Instant::now());
            }
        }
        Ok(())
    }

    fn sleep_for(&self) -> Duration {
        let mut wait = POLL;
        if self.signed_size < self.frontier.size() {
            let due = self.last_signed + SIGN_EVERY;
            wait = wait.min(due.saturating_duration_since(Instant::now()));
        }
        if let Some(since) = self.unsynced_since {
            wait = wait.min((since + LAZY_SYNC).saturating_duration_since(Instant::now()));
        }
        wait
    }
}

impl Drop for StoredWriter {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.release();
        }
    }
}
