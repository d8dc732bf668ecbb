//! The access log's writer when the store keeps the log (PostgreSQL: see
//! `store::access`), with the group commit of the files' writer: the same
//! queue and rounds (`writer`), each round one commit of its records,
//! their stored hashes and, when one falls due, the signed checkpoint
//! over them. A record is answered durable once its round committed.
//!
//! The writer holds its origin's guard for its life, so no other process
//! writes the same log; a hub that stops lets go of it at once.

use super::record::{AccessRecord, leaf_of_line};
use super::stored_check::StoredScan;
use super::writer::{POLL, Queued, Rounds, SIGN_EVERY, Signer, Waiter};
use super::{AccessLogError, Frontier};
use crate::store::Store;
use crate::store::access::{AccessLogStore, AccessRow, OriginGuard};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tongbao_proto::merkle::stored_hash_count;

pub struct StoredWriter {
    store: Arc<dyn Store>,
    guard: Option<Box<dyn OriginGuard>>,
    frontier: Frontier,
    signer: Signer,
    signed_size: u64,
    last_signed: Instant,
}

impl StoredWriter {
    pub fn new(
        store: Arc<dyn Store>,
        guard: Box<dyn OriginGuard>,
        checked: StoredScan,
        signer: Signer,
    ) -> Self {
        Self {
            store,
            guard: Some(guard),
            signed_size: checked.checkpoint.as_ref().map_or(0, |(c, _)| c.size),
            frontier: checked.frontier,
            signer,
            last_signed: Instant::now(),
        }
    }

    fn db(&self) -> Result<&dyn AccessLogStore, AccessLogError> {
        self.store.access_log().ok_or_else(|| {
            AccessLogError::Closed("the store no longer keeps the access log".into())
        })
    }

    /// Numbers and hashes the batch's records, and commits them with a
    /// checkpoint when one is due.
    fn commit(&mut self, records: Vec<AccessRecord>, stopping: bool) -> Result<(), AccessLogError> {
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
        let note = match self.signed_size < size
            && (stopping || self.last_signed.elapsed() >= SIGN_EVERY)
        {
            true => Some(self.signer.sign(size, self.frontier.root()?)?),
            false => None,
        };
        if rows.is_empty() && note.is_none() {
            return Ok(());
        }
        let origin = self.signer.origin().to_string();
        self.db()?
            .access_append(&origin, &rows, first_hash, &hashes, note.as_deref())?;
        if note.is_some() {
            self.signed_size = size;
            self.last_signed = Instant::now();
        }
        Ok(())
    }
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
        if let Err(e) = self.commit(records, stopping) {
            return Err((e, waiters));
        }
        for w in waiters {
            let _ = w.send(Ok(()));
        }
        Ok(())
    }

    fn sleep_for(&self) -> Duration {
        if self.signed_size < self.frontier.size() {
            let due = self.last_signed + SIGN_EVERY;
            return due.saturating_duration_since(Instant::now()).min(POLL);
        }
        POLL
    }
}

impl Drop for StoredWriter {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.release();
        }
    }
}
