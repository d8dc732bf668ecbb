//! The PostgreSQL store: the [`Store`] contract on a database server, so
//! that the data outlives any one hub machine and the database's own
//! replication keeps it available.
//!
//! The trait is synchronous and is called from the hub's async tasks and
//! threads alike, so the driver (tokio-postgres, pooled by deadpool) runs
//! on a small runtime of the store's own: each call is a task there, its
//! caller blocks on the answer. One [`Store::apply`] is one transaction,
//! committed before it returns (so [`Store::sync`] has nothing left to
//! do); each channel it appends to is sequenced by a row lock on the
//! channel's head, and message ids are unique by constraint. The store
//! holds the database's lease (`lease`) for its whole life: one hub
//! writes at a time, and one that lost the lease writes nothing more.

mod access;
mod access_read;
mod kept;
pub mod lease;
#[cfg(test)]
mod lost_tests;
mod marks;
pub mod notices;
mod pooled;
mod read;
#[cfg(test)]
mod relay;
mod schema;
#[cfg(test)]
mod takeover_tests;
#[doc(hidden)]
pub mod testdb;
#[cfg(test)]
mod tests;
pub mod tls;
#[cfg(test)]
mod tls_tests;
mod write;

use super::{
    Answer, ChannelHead, InboxItem, MessageRecord, NewEntry, ScopedEntry, StateBatch, Store,
    StoreError, StoredEntry,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
pub use lease::Lease;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
pub use tls::{Database, TlsOptions};
use tongbao_proto::Hash;

/// How long a call waits for a database connection, or to make one,
/// before it fails: a lost database is reported, never waited on forever.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// How long a call waits for the database's answer before it fails
/// `Unavailable` ([`did_not_answer`]). Client-side, not the server's
/// `statement_timeout`: what it guards against is a database host or
/// network that went silent, whose server-side error would never arrive
/// either. Generous, so that no statement of a working database meets it
/// (the migrations at start, which may take long on a large database,
/// and the takeover, which waits for the previous leader's last write,
/// are not bound by it).
pub const CALL_WAIT: Duration = Duration::from_secs(30);

/// What a call fails with when the database did not answer within `wait`.
fn did_not_answer(wait: Duration) -> StoreError {
    StoreError::Unavailable(format!(
        "the database did not answer within {} s",
        wait.as_secs()
    ))
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The database, and how connections to it are secured.
    pub database: Database,
    /// Connections kept open to the database.
    pub pool_size: usize,
    /// One of several replicas: a failed write then stops the hub, so
    /// that a standby takes over instead of the set stalling.
    pub replica: bool,
}

/// PostgreSQL-backed [`Store`].
pub struct PgStore {
    pool: Pool,
    /// The lease, taken over for the store's life; let go on drop.
    lease: Option<Lease>,
    /// The lease's epoch at the takeover, which every write checks.
    epoch: i64,
    /// Recently committed records, kept in memory.
    kept: std::sync::Arc<kept::Kept>,
    /// Taken on drop, so that the runtime stops without blocking.
    rt: Option<tokio::runtime::Runtime>,
    /// Set by the first failed group commit, or a write refused by the
    /// lease's fence: the appender then refuses writes until a restart,
    /// and health and the metrics say so.
    failed: Arc<AtomicBool>,
    /// Set when the lease's fence refused a write: fetched marks are
    /// refused too (they would never be written).
    fenced: Arc<AtomicBool>,
    /// Fetched marks waiting to be written together (`marks`).
    marks: Arc<marks::Marks>,
    /// One of several replicas (see [`PgOptions::replica`]).
    replica: bool,
    /// A standby's store: it holds no lease and writes nothing but fetch
    /// marks (see [`PgStore::open_standby`]).
    standby: bool,
    /// How to reach the database: the access log's origin guards take
    /// connections of their own (`access`).
    database: Database,
    /// The origins this store claimed, with the backend pid of the
    /// session holding each one's lock, which every append checks.
    access_claims: access::Claims,
    /// [`CALL_WAIT`] (shorter in tests).
    call_wait: Duration,
}

/// What a group commit fails with once an earlier one failed.
pub const AFTER_FAILED: &str =
    "an earlier group commit failed: this hub commits nothing more until it is restarted";

/// The failpoint (`failpoint::fail_at`) at which a group commit that
/// landed is reported failed, as when its COMMIT's reply is lost.
pub const LOST_REPLY_POINT: &str = "pg-commit-reply-lost";

/// What every write of a standby's store fails with.
pub const STANDBY_WRITES: &str = tongbao_proto::replica::STANDBY_REFUSAL;

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password: never printed.
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // An orderly stop writes the waiting fetched marks, while the
            // lease (a leader's fence) is still held; bounded, since a
            // database that stopped answering would otherwise hold the
            // stop (and the process) for ever: no statement has a timeout.
            let writer = self.marks_writer();
            let flushed = futures::executor::block_on(rt.spawn(async move {
                tokio::time::timeout(lease::PROBE_WAIT, writer.flush()).await
            }));
            match flushed {
                Ok(Ok(Err(e))) => {
                    tracing::warn!(error = %e, "the last fetched marks were not written");
                }
                Ok(Err(_)) => tracing::warn!(
                    "the last fetched marks were not written: the database did not answer within {} s",
                    lease::PROBE_WAIT.as_secs()
                ),
                _ => {}
            }
            // Let go of the lease at once, so that a standby or a hub
            // started next (a restart) takes it without waiting.
            if let Some(lease) = self.lease.take() {
                let _ = futures::executor::block_on(rt.spawn(lease.release()));
            }
            rt.shutdown_background();
        }
    }
}

/// A driver error, in words, with its causes (a TLS refusal says why; a
/// server's error its message, not its detail, which may quote rows).
/// The driver never prints a password.
pub(super) fn db(e: impl std::error::Error) -> StoreError {
    let mut text = format!("PostgreSQL: {e}");
    let mut cause = e.source();
    while let Some(c) = cause {
        match c.downcast_ref::<tokio_postgres::error::DbError>() {
            Some(server) => text.push_str(&format!(": {}", server.message())),
            None => text.push_str(&format!(": {c}")),
        }
        cause = c.source();
    }
    StoreError::Database(text)
}

impl PgStore {
    /// Connects, takes the lease (refusing when another hub holds it),
    /// and brings the schema up to this hub's version.
    pub fn open(options: &PgOptions) -> Result<Self, StoreError> {
        Self::open_holding(options, None)
    }

    /// As [`PgStore::open`], with the lease already held (a standby that
    /// got it), or taken here when `lease` is None. The epoch is raised
    /// after the schema is current: from then on no earlier leader writes.
    pub fn open_holding(options: &PgOptions, lease: Option<Lease>) -> Result<Self, StoreError> {
        let mut store = Self::connect(options)?;
        let lease = match lease {
            Some(lease) => lease,
            None => {
                let db = options.database.clone();
                store.block(async move { Lease::acquire(&db, lease::Wait::Refuse).await })?
            }
        };
        // Kept in the store at once: a failure below lets go of it.
        store.lease = Some(lease);
        let pool = store.pool.clone();
        // Not bounded by the call's wait: a migration may take long.
        block_on(store.handle()?, None, async move {
            schema::migrate(&pool).await
        })?;
        let lease = store.lease.take();
        // Not bounded by the call's wait either: the lease's fence makes
        // the takeover wait, on purpose, for the previous leader's last
        // write (one waiting for a synchronous standby, say); cut short,
        // its UPDATE would stay queued at the database, holding the lock.
        let database = options.database.clone();
        let (lease, epoch) = block_on(store.handle()?, None, async move {
            let lease = lease.ok_or_else(|| StoreError::Database("no lease".into()))?;
            let epoch = lease.take_over(&database).await;
            Ok((lease, epoch))
        })?;
        store.lease = Some(lease);
        store.epoch = epoch?;
        store.start_writing_marks();
        Ok(store)
    }

    /// A standby's store, without the lease: it reads what the leader
    /// committed and refuses every write with [`STANDBY_WRITES`], but
    /// fetch marks, which are first-write-wins facts of its own serving
    /// (`write::fetched`). Refused until the leader has brought the
    /// schema to this hub's version.
    pub fn open_standby(options: &PgOptions) -> Result<Self, StoreError> {
        let mut store = Self::connect(options)?;
        store.standby = true;
        let pool = store.pool.clone();
        store.block(async move { schema::check_current(&pool).await })?;
        store.start_writing_marks();
        Ok(store)
    }

    /// What writes this store's fetched marks: a leader's through the
    /// fence of its epoch, a standby's outside it.
    fn marks_writer(&self) -> marks::Writer {
        marks::Writer {
            pool: self.pool(),
            epoch: (!self.standby).then_some(self.epoch),
            marks: self.marks.clone(),
            fenced: self.fenced.clone(),
            lease: self.lease.as_ref().map(Lease::watch),
        }
    }

    /// Writes the waiting fetched marks every `marks::FLUSH_EVERY` for
    /// the store's life (its runtime's).
    fn start_writing_marks(&self) {
        if let Some(rt) = &self.rt {
            rt.spawn(self.marks_writer().run(self.replica, self.failed.clone()));
        }
    }

    /// Writes the waiting fetched marks now (tests: not waiting for the
    /// next flush).
    #[cfg(test)]
    fn flush_marks(&self) -> Result<usize, StoreError> {
        let writer = self.marks_writer();
        self.block(async move { writer.flush().await })
    }

    /// The pool and the runtime, without the lease.
    fn connect(options: &PgOptions) -> Result<Self, StoreError> {
        // With the lease's keepalives: a pooled connection whose call was
        // abandoned on a vanished host ends in seconds, not hours.
        let config = lease::kept_alive_config(&options.database, "tongbao-hub");
        let manager = Manager::from_config(
            config,
            options.database.connector(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tongbao-pg")
            .enable_all()
            .build()?;
        let pool = {
            // The pool's timers need the runtime's context.
            let _in = rt.enter();
            Pool::builder(manager)
                .max_size(options.pool_size.max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(CONNECT_WAIT))
                .create_timeout(Some(CONNECT_WAIT))
                .recycle_timeout(Some(CONNECT_WAIT))
                .build()
                .map_err(db)?
        };
        Ok(Self {
            pool,
            lease: None,
            epoch: 0,
            kept: Default::default(),
            rt: Some(rt),
            failed: Default::default(),
            fenced: Default::default(),
            marks: Default::default(),
            replica: options.replica,
            standby: false,
            database: options.database.clone(),
            access_claims: Default::default(),
            call_wait: CALL_WAIT,
        })
    }

    /// Runs a write; one that the lease's fence refused, or any failed
    /// write of a replica, marks the store as refusing writes (the hub is
    /// stopping).
    fn write(
        &self,
        fut: impl Future<Output = Result<(), StoreError>> + Send + 'static,
    ) -> Result<(), StoreError> {
        if self.standby {
            return Err(StoreError::Database(STANDBY_WRITES.into()));
        }
        self.refuse_without_lease()?;
        let written = self.block(fut);
        if let Err(e) = &written {
            self.write_failed(e);
        }
        written
    }

    /// Refuses a write at once once the lease is gone: a fenced hub
    /// writes nothing, and a write must not wait on a database that
    /// stopped answering the lease's probe.
    fn refuse_without_lease(&self) -> Result<(), StoreError> {
        match self.lease_gone() {
            Some(why) => {
                let e = StoreError::Database(why);
                self.write_failed(&e);
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Why this hub no longer holds the lease (None while it does): the
    /// fence refused a write, or the lease's connection broke, stopped
    /// answering its probe, or found the epoch moved on. The hub is
    /// stopping; another replica may be writing already.
    fn lease_gone(&self) -> Option<String> {
        if self.fenced.load(Ordering::Acquire) {
            return Some(lease::LOST.into());
        }
        self.lease.as_ref().and_then(Lease::lost_why)
    }

    /// A replica that cannot write stops, letting go of the lease, so that
    /// a standby takes over: refusing writes while it kept the lease would
    /// stall every replica. A hub on its own refuses writes until restarted.
    fn write_failed(&self, e: &StoreError) {
        let fenced = marks::is_fenced(e);
        if fenced {
            self.fenced.store(true, Ordering::Release);
        }
        if fenced || self.replica {
            self.failed.store(true, Ordering::Release);
        }
        if self.replica && !fenced {
            crate::fatal::write_failed(e.to_string());
        }
    }

    /// Runs `fut` on the store's runtime and waits for it, from any
    /// thread (a tokio worker included: it blocks like a disk read), at
    /// most [`CALL_WAIT`].
    fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        block_on(self.handle()?, Some(self.call_wait), fut)
    }

    /// The store's runtime, while the store is open.
    fn handle(&self) -> Result<&tokio::runtime::Handle, StoreError> {
        self.rt
            .as_ref()
            .map(|rt| rt.handle())
            .ok_or_else(|| StoreError::Database("the PostgreSQL store is closed".into()))
    }

    fn pool(&self) -> Pool {
        self.pool.clone()
    }
}

/// Runs `fut` on the runtime `rt` and waits for it (see [`PgStore::block`]),
/// for `wait` at most: then the call fails [`did_not_answer`] and `fut` is
/// abandoned ([`pooled::abandon`]): every connection it held leaves the
/// pool, never drawn again with its request in flight. The driver closes
/// it once that request is answered, so a statement the database is
/// still running (waiting for a lock, say) keeps its session until it
/// ends, and the transaction is then rolled back; a COMMIT already sent
/// may still land.
fn block_on<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    wait: Option<Duration>,
    fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let bounded = async move {
        let Some(wait) = wait else {
            return fut.await;
        };
        let mut fut = Box::pin(fut);
        match tokio::time::timeout(wait, &mut fut).await {
            Ok(done) => done,
            Err(_) => {
                pooled::abandon(fut);
                Err(did_not_answer(wait))
            }
        }
    };
    // Unconstrained: polled from inside a tokio task (a hub start, a
    // handler), the join handle would otherwise count against that
    // task's cooperative budget, and once it is spent every poll
    // answers Pending at once: this loop would spin for ever.
    futures::executor::block_on(tokio::task::unconstrained(rt.spawn(bounded)))
        .map_err(|e| StoreError::Database(format!("a PostgreSQL call failed: {e}")))?
}

impl Store for PgStore {
    fn load_registry_bytes(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.block(read::registry(self.pool()))
    }

    fn save_registry_bytes(&self, registry: &[u8]) -> Result<(), StoreError> {
        self.write(write::registry(self.pool(), self.epoch, registry.to_vec()))
    }

    fn channel_heads(&self) -> Result<BTreeMap<String, ChannelHead>, StoreError> {
        self.block(read::channel_heads(self.pool()))
    }

    fn inbox_heads(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.block(read::inbox_heads(self.pool()))
    }

    fn apply(&self, entries: &[NewEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.standby {
            return Err(StoreError::Database(STANDBY_WRITES.into()));
        }
        // Refused before it is sent: its positions are certainly not
        // stored. First, so that a lost lease is named as the reason.
        if let Err(e) = self.refuse_without_lease() {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        // After a failed commit, whose positions may or may not be stored
        // (`kept`): a later commit reusing them would be hidden for good.
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError::Database(AFTER_FAILED.into()));
        }
        let mut appended = self.write(write::append(
            self.pool(),
            self.epoch,
            write::Rows::of(entries),
            self.kept.clone(),
        ));
        if appended.is_ok() && crate::failpoint::fail_at(LOST_REPLY_POINT) {
            // End-to-end tests: the commit landed, its reply was lost.
            let e = StoreError::Database("the reply to a group commit's COMMIT was lost".into());
            self.write_failed(&e);
            appended = Err(e);
        }
        if appended.is_err() {
            self.failed.store(true, Ordering::Release);
            self.kept.failed(entries)?;
        }
        appended
    }

    fn refuses_writes(&self) -> bool {
        self.failed.load(Ordering::Acquire) || self.lease.as_ref().is_some_and(Lease::is_lost)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        self.block(async move { schema::check_current(&pool).await })
    }

    /// Every apply is committed before it returns.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn entry(&self, channel: &str, seq: u64) -> Result<Option<StoredEntry>, StoreError> {
        Ok(self.kept_entry(channel, seq)?.map(Arc::unwrap_or_clone))
    }

    fn entry_shared(
        &self,
        channel: &str,
        seq: u64,
    ) -> Result<Option<Arc<StoredEntry>>, StoreError> {
        self.kept_entry(channel, seq)
    }

    fn message(&self, sender: &str, message_id: &str) -> Result<Option<MessageRecord>, StoreError> {
        self.block(read::message(
            self.pool(),
            sender.to_string(),
            message_id.to_string(),
        ))
    }

    fn messages(&self, asked: &[(&str, &str)]) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        let asked = asked
            .iter()
            .map(|(s, m)| (s.to_string(), m.to_string()))
            .collect();
        self.block(read::messages(self.pool(), asked))
    }

    fn inbox_page(
        &self,
        inbox: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxItem>, StoreError> {
        self.kept_inbox_page(inbox, after, limit)
    }

    fn answers(&self, inbox: &str, cursors: &[u64]) -> Result<Vec<Option<Answer>>, StoreError> {
        self.block(read::answers(
            self.pool(),
            inbox.to_string(),
            cursors.to_vec(),
        ))
    }

    fn answers_of(&self, asked: &[(&str, &[u64])]) -> Result<Vec<Vec<Option<Answer>>>, StoreError> {
        let asked = asked
            .iter()
            .map(|(inbox, cursors)| (inbox.to_string(), cursors.to_vec()))
            .collect();
        self.block(read::answers_of(self.pool(), asked))
    }

    /// Kept in memory, read back at once, and written with the next
    /// flush (`marks`): a delivery waits for no round trip.
    fn mark_fetched(
        &self,
        inbox: &str,
        cursors: &[u64],
        hub_micros: i64,
    ) -> Result<(), StoreError> {
        if cursors.is_empty() {
            return Ok(());
        }
        // A standby's marks pass no fence (see `write::fetched`); those of
        // a leader without the lease would never be written. Refused as
        // its reads are, naming why the lease went.
        if !self.standby
            && let Some(why) = self.lease_gone()
        {
            return Err(StoreError::Unavailable(format!(
                "{why}; this hub is stopping: read from another replica"
            )));
        }
        self.marks.add(inbox, cursors, hub_micros)
    }

    fn fetched(&self, inbox: &str, cursor: u64) -> Result<Option<i64>, StoreError> {
        Ok(self.fetched_many(inbox, &[cursor])?.pop().flatten())
    }

    /// The database's mark, else a waiting one: the database's is the
    /// earlier serving (first wins there too). Memory is read first, so
    /// that a mark written in between is found in one or the other.
    fn fetched_many(&self, inbox: &str, cursors: &[u64]) -> Result<Vec<Option<i64>>, StoreError> {
        let waiting = self.marks.read(inbox, cursors)?;
        let stored = self.block(read::fetched(
            self.pool(),
            inbox.to_string(),
            cursors.to_vec(),
        ))?;
        Ok(stored
            .into_iter()
            .zip(waiting)
            .map(|(s, w)| s.or(w))
            .collect())
    }

    fn audit_scope(
        &self,
        mechanism: &str,
        since: i64,
        until: i64,
        after: Option<&ScopedEntry>,
        limit: usize,
    ) -> Result<Vec<ScopedEntry>, StoreError> {
        let (from, to) = super::audit_index::audit_range(mechanism, since, until, after);
        self.block(read::audit_scope(self.pool(), from, to, limit))
    }

    fn audit_row_past(
        &self,
        mechanism: &str,
        since: i64,
        until: i64,
        skip: usize,
    ) -> Result<Option<i64>, StoreError> {
        let (from, to) = super::audit_index::audit_range(mechanism, since, until, None);
        self.block(read::audit_row_past(self.pool(), from, to, skip))
    }

    fn stored_hashes(&self, channel: &str, indexes: &[u64]) -> Result<Vec<Hash>, StoreError> {
        self.kept_hashes(channel, indexes)
    }

    fn checkpoints(&self) -> Result<BTreeMap<String, String>, StoreError> {
        self.block(read::checkpoints(self.pool()))
    }

    fn save_checkpoints(&self, notes: &[(&str, &str)]) -> Result<(), StoreError> {
        if notes.is_empty() {
            return Ok(());
        }
        let notes = notes
            .iter()
            .map(|(c, n)| (c.to_string(), n.to_string()))
            .collect();
        self.write(write::checkpoints(self.pool(), self.epoch, notes))
    }

    fn state_get(&self, space: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        super::state::check_space(space)?;
        self.block(read::state(self.pool(), space.to_string(), key.to_vec()))
    }

    fn state_scan_prefix(
        &self,
        space: &str,
        prefix: &[u8],
    ) -> Result<super::StateRecords, StoreError> {
        super::state::check_space(space)?;
        self.block(read::state_prefix(
            self.pool(),
            space.to_string(),
            prefix.to_vec(),
        ))
    }

    fn state_scan_after(
        &self,
        space: &str,
        after: &[u8],
        limit: usize,
    ) -> Result<super::StateRecords, StoreError> {
        super::state::check_space(space)?;
        self.block(read::state_after(
            self.pool(),
            space.to_string(),
            after.to_vec(),
            i64::try_from(limit).unwrap_or(i64::MAX),
        ))
    }

    fn state_apply(&self, space: &str, batch: &StateBatch) -> Result<(), StoreError> {
        super::state::check_space(space)?;
        self.write(write::state(
            self.pool(),
            self.epoch,
            space.to_string(),
            batch.clone(),
        ))
    }

    /// Every state batch is committed before it returns.
    fn state_sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn access_log(&self) -> Option<&dyn super::access::AccessLogStore> {
        Some(self)
    }
}
