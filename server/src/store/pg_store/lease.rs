//! The database lease: of the hubs sharing one database, the one holding
//! it is the leader, the only one that writes (appends, signs
//! checkpoints); the others are standbys, serving reads while they wait
//! for it (`replica`).
//!
//! The lease is a session advisory lock on a connection of its own, so the
//! database frees it the moment that session ends (a stop, a crash, a cut
//! connection). Taking over raises the epoch in the `lease` row; every
//! write checks in its own transaction that the epoch is still its hub's
//! ([`fence`]), so a replica that lost the lease never writes again, even
//! before it notices. The leader probes the row each second: a raised
//! epoch, or a connection that breaks or stops answering, stops the hub
//! through `fatal` (another replica may be the leader already).
//!
//! A leader letting go in order unlocks and notifies in one statement, so
//! a standby (which LISTENs) learns it at once; otherwise standbys try the
//! lock every [`RETRY_EVERY`].

use super::db;
use super::read::query;
use super::tls::{ConnectFailure, Database};
use crate::store::StoreError;
use deadpool_postgres::GenericClient;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, Config};

/// The session advisory lock of the lease ("tongbao1" in ASCII).
pub const LEASE_LOCK: i64 = 0x746f_6e67_6261_6f31;

/// The channel a leader notifies as it lets go of the lease.
const RELEASED: &str = "tongbao_lease_released";

/// How often a standby tries the lock when no notice came.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How long a hub that is not a replica waits for the lease (a hub that
/// is stopping lets go a moment later) before it refuses to start.
pub const REFUSE_AFTER: Duration = Duration::from_secs(10);

/// How often the leader reads the lease row on the lease's connection.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A probe without an answer after this long is a lost database.
pub const PROBE_WAIT: Duration = Duration::from_secs(5);

/// TCP keepalives of the lease's connection: a peer that vanished without
/// closing (a dead host, a cut network) is noticed by the kernel after
/// idle + retries × interval = 8 s, if the probe has not noticed first.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_RETRIES: u32 = 3;

/// How long connecting may take.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// What the refusal says when another hub holds the lease.
const HELD_ELSEWHERE: &str = "another hub is serving on this PostgreSQL database; one hub per \
                              database (stop the other first)";

/// What a write of a hub that lost the lease fails with.
pub const LOST: &str = "lost the database lease to another replica: this hub writes nothing more";

/// How a hub waits for a lease another hub holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// [`REFUSE_AFTER`], then refuse: one hub per database.
    Refuse,
    /// As long as it takes: a replica's standby.
    Standby,
}

/// What the lease's connection task and its holder share.
#[derive(Default)]
struct Shared {
    /// Taken over (the epoch raised): a lost connection is fatal now.
    leading: AtomicBool,
    /// Let go in order: the connection's end is expected.
    releasing: AtomicBool,
    /// The connection ended, or the epoch moved on.
    lost: AtomicBool,
    /// Why, in words, once `lost` (the first reason).
    why: std::sync::OnceLock<String>,
    /// A notice that the lease was let go, or the connection's end.
    wake: Notify,
    /// Ends the probe at release.
    stopping: Notify,
    /// The process is stopping: a takeover in progress gives up.
    abandoned: AtomicBool,
    /// Wakes a takeover waiting when `abandoned` is set.
    abandon: Notify,
    /// A takeover was given up for it.
    gave_up: AtomicBool,
}

impl Shared {
    /// The lease's connection broke or stopped answering (`why`).
    fn connection_lost(&self, why: String) {
        if self.releasing.load(Ordering::Acquire) {
            return;
        }
        let _ = self.why.set(format!("lost the database connection: {why}"));
        self.lost.store(true, Ordering::Release);
        if self.leading.load(Ordering::Acquire) {
            crate::fatal::database_lost(why);
        } else {
            tracing::warn!(reason = %why, "the standby's database connection broke; reconnecting");
        }
        self.wake.notify_one();
    }

    /// Another replica raised the epoch.
    fn fenced(&self) {
        let _ = self.why.set(LOST.to_string());
        self.lost.store(true, Ordering::Release);
        crate::fatal::lease_lost();
    }
}

/// Whether the lease is gone, seen from outside its holder ([`Lease::watch`]).
#[derive(Clone)]
pub struct Watch(Arc<Shared>);

impl Watch {
    /// Why the lease is gone (None while it is held).
    pub fn why(&self) -> Option<String> {
        if !self.0.lost.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.0
                .why
                .get()
                .cloned()
                .unwrap_or_else(|| LOST.to_string()),
        )
    }
}

/// The lease, held (from [`Lease::acquire`]) and, once the store is
/// open, taken over ([`Lease::take_over`]).
pub struct Lease {
    client: Arc<Client>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("lost", &self.is_lost())
            .finish_non_exhaustive()
    }
}

/// Stops a takeover in progress (`Lease::take_over`), for the process's
/// stop signal while the takeover waits for an earlier leader's write.
#[derive(Clone)]
pub struct Abandon(Arc<Shared>);

impl Abandon {
    /// The takeover in progress, or the next, gives up.
    pub fn now(&self) {
        self.0.abandoned.store(true, Ordering::Release);
        self.0.abandon.notify_one();
    }

    /// Whether a takeover failed because it was given up (not for a
    /// reason of its own).
    pub fn gave_up(&self) -> bool {
        self.0.gave_up.load(Ordering::Acquire)
    }
}

/// A lease dropped without a release (a standby stopped, a failed start)
/// ends its connection on purpose: not a broken database to report.
impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.releasing.store(true, Ordering::Release);
        self.shared.stopping.notify_waiters();
    }
}

/// How often a standby that cannot reach the database says so again.
const UNREACHABLE_WARN_EVERY: Duration = Duration::from_secs(30);

/// A standby's failed attempts to reach the database: warned of at the
/// first, then every [`UNREACHABLE_WARN_EVERY`] with the count, not at
/// each retry.
#[derive(Default)]
struct Unreachable {
    failures: u64,
    warned: Option<tokio::time::Instant>,
}

impl Unreachable {
    fn failed(&mut self, e: &StoreError) {
        self.failures += 1;
        if self
            .warned
            .is_some_and(|at| at.elapsed() < UNREACHABLE_WARN_EVERY)
        {
            return;
        }
        self.warned = Some(tokio::time::Instant::now());
        tracing::warn!(
            error = %e,
            failures = self.failures,
            "standby: cannot reach the database; retrying each second"
        );
    }
}

/// The lease connection's settings: the database's, with keepalives.
fn lease_config(db: &Database) -> Config {
    kept_alive_config(db, "tongbao-hub lease")
}

/// The settings of a connection of its own that must notice a vanished
/// peer in seconds, not hours (the lease's, the standbys' LISTEN, an
/// access-log origin's guard): the database's, with the lease's
/// keepalives, named `name` unless the url names it.
pub(super) fn kept_alive_config(db: &Database, name: &str) -> Config {
    let mut config = db.config();
    config
        .connect_timeout(CONNECT_WAIT)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES);
    if config.get_application_name().is_none() {
        config.application_name(name);
    }
    config
}

/// Connects, follows the connection on a task of its own, and LISTENs
/// for a leader letting go.
async fn connect(
    config: &Config,
    database: &Database,
) -> Result<(Client, Arc<Shared>), StoreError> {
    connect_or_why(config, database)
        .await
        .map_err(StoreError::from)
}

/// [`connect`], saying whether waiting could help.
async fn connect_or_why(
    config: &Config,
    database: &Database,
) -> Result<(Client, Arc<Shared>), ConnectFailure> {
    let (client, mut connection) = database.try_connect(config, CONNECT_WAIT).await?;
    let shared = Arc::new(Shared::default());
    let watcher = shared.clone();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        let why = loop {
            match messages.next().await {
                Some(Ok(AsyncMessage::Notification(_))) => watcher.wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("PostgreSQL: {e}"),
                None => break "PostgreSQL closed the connection".to_string(),
            }
        };
        watcher.connection_lost(why);
    });
    // Connected: a failure now is the connection's, not the settings'.
    client
        .batch_execute(&format!("LISTEN {RELEASED}"))
        .await
        .map_err(|e| ConnectFailure::Unreachable(db(e)))?;
    Ok((client, shared))
}

/// How often a takeover waiting for an earlier leader's last write says so.
pub const TAKEOVER_WARN_EVERY: Duration = Duration::from_secs(30);

/// The database session's process id, as `pg_stat_activity` names it.
async fn backend_pid(client: &Client) -> Result<i32, StoreError> {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)
}

/// The sessions whose locks `pid` waits for, asked on a connection of
/// its own (the lease's is busy with the waiting statement).
pub(super) async fn blocking_sessions(
    database: &Database,
    pid: i32,
) -> Result<Vec<i32>, StoreError> {
    ask_aside(database, "SELECT pg_blocking_pids($1)", pid)
        .await?
        .try_get(0)
        .map_err(db)
}

/// `sql` of the session `pid`, asked on a connection of its own (the
/// lease's is busy), bounded by [`PROBE_WAIT`].
async fn ask_aside(
    database: &Database,
    sql: &str,
    pid: i32,
) -> Result<tokio_postgres::Row, StoreError> {
    let (client, connection) = database.connect(&database.config(), CONNECT_WAIT).await?;
    let driven = tokio::spawn(connection);
    let asked = tokio::time::timeout(PROBE_WAIT, client.query_one(sql, &[&pid])).await;
    drop(client);
    driven.abort();
    match asked {
        Ok(row) => row.map_err(db),
        Err(_) => Err(StoreError::Database(format!(
            "the database did not answer within {} s",
            PROBE_WAIT.as_secs()
        ))),
    }
}

/// How a takeover given up before its epoch was raised says so.
const NOT_RAISED: &str = "stopped while taking over: the epoch was not raised";

/// How often a given-up takeover's cancel is sent again.
const CANCEL_AGAIN_EVERY: Duration = Duration::from_millis(200);

/// Ends the database session `pid` (a given-up takeover's, whose UPDATE
/// would not be cancelled), on a connection of its own.
async fn terminate_session(database: &Database, pid: i32) -> Result<(), StoreError> {
    let ended = ask_aside(database, "SELECT pg_terminate_backend($1)", pid).await?;
    match ended.try_get::<_, bool>(0).map_err(db)? {
        true => Ok(()),
        false => Err(StoreError::Database(format!("no session {pid} to end"))),
    }
}

/// Says that the takeover still waits, and for which sessions.
async fn warn_waiting(database: &Database, pid: i32, waited: Duration) {
    let blocking = match blocking_sessions(database, pid).await {
        Ok(pids) => format!("{pids:?}"),
        Err(e) => format!("unknown ({e})"),
    };
    tracing::warn!(
        waited_s = waited.as_secs(),
        lease_pid = pid,
        blocking_pids = %blocking,
        "taking over waits for an earlier leader's last write, which holds the lease row; \
         see docs/operations.md, Fencing, to end the wait"
    );
}

/// Tries the lock once.
async fn try_lock(client: &Client) -> Result<bool, StoreError> {
    client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEASE_LOCK])
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)
}

impl Lease {
    /// Takes the lease on `database`, waiting as `wait` says.
    /// A standby rides out a database it cannot reach, reconnecting each
    /// [`RETRY_EVERY`]; a hub that is not a replica fails.
    pub async fn acquire(database: &Database, wait: Wait) -> Result<Self, StoreError> {
        let config = lease_config(database);
        let deadline = tokio::time::Instant::now() + REFUSE_AFTER;
        let mut unreachable = Unreachable::default();
        loop {
            match Self::wait_on_one_connection(&config, database, wait, deadline).await {
                Ok(lease) => return Ok(lease),
                Err(e) if wait == Wait::Refuse => return Err(e),
                Err(e) => {
                    unreachable.failed(&e);
                    tokio::time::sleep(RETRY_EVERY).await;
                }
            }
        }
    }

    /// Takes the lease if it is free now; None when another hub holds it
    /// or the database cannot be reached (a standby then waits). Settings
    /// that cannot work (TLS refused, a bad url, authentication refused)
    /// fail here, so that a replica's start fails on them.
    pub async fn try_now(database: &Database) -> Result<Option<Self>, StoreError> {
        let config = lease_config(database);
        let (client, shared) = match connect_or_why(&config, database).await {
            Ok(connected) => connected,
            Err(ConnectFailure::Unreachable(e)) => {
                tracing::debug!(error = %e, "the database cannot be reached yet");
                return Ok(None);
            }
            Err(ConnectFailure::Refused(e)) => return Err(e),
        };
        let lease = Self {
            client: Arc::new(client),
            shared,
        };
        // Dropped otherwise: the connection's end is expected.
        match try_lock(&lease.client).await {
            Ok(true) => Ok(Some(lease)),
            _ => Ok(None),
        }
    }

    /// Waits for the lock on one connection, until it is held or the
    /// connection fails.
    async fn wait_on_one_connection(
        config: &Config,
        database: &Database,
        wait: Wait,
        deadline: tokio::time::Instant,
    ) -> Result<Self, StoreError> {
        let (client, shared) = connect(config, database).await?;
        // A lease already, so that giving up the wait (a standby stopped)
        // ends the connection quietly, as a release does.
        let lease = Self {
            client: Arc::new(client),
            shared,
        };
        let shared = lease.shared.clone();
        loop {
            if try_lock(&lease.client).await? {
                return Ok(lease);
            }
            match wait {
                Wait::Refuse if tokio::time::Instant::now() >= deadline => {
                    return Err(StoreError::Database(HELD_ELSEWHERE.into()));
                }
                Wait::Refuse => tokio::time::sleep(Duration::from_millis(100)).await,
                Wait::Standby => {
                    tokio::select! {
                        () = shared.wake.notified() => {}
                        () = tokio::time::sleep(RETRY_EVERY) => {}
                    }
                }
            }
            if shared.lost.load(Ordering::Acquire) {
                return Err(StoreError::Database(
                    "the connection waiting for the lease broke".into(),
                ));
            }
        }
    }

    /// Takes over as leader (the schema is current): raises the epoch, so
    /// that every write of an earlier leader fails from now on, and starts
    /// the probe. Returns the epoch every write of this hub checks.
    /// Raising it waits for an earlier leader's write in flight (the
    /// fence); while it waits, it says so every [`TAKEOVER_WARN_EVERY`],
    /// naming the database sessions it waits for.
    pub async fn take_over(&self, database: &Database) -> Result<i64, StoreError> {
        self.take_over_warning_every(database, TAKEOVER_WARN_EVERY)
            .await
    }

    pub(super) async fn take_over_warning_every(
        &self,
        database: &Database,
        every: Duration,
    ) -> Result<i64, StoreError> {
        let pid = backend_pid(&self.client).await?;
        let raise = self.client.query_one(
            "UPDATE lease SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
            &[],
        );
        tokio::pin!(raise);
        let since = tokio::time::Instant::now();
        // Whether the UPDATE may have been sent (its future polled).
        let mut sent = false;
        let raised = loop {
            if self.shared.abandoned.load(Ordering::Acquire) {
                return Err(match sent {
                    true => self.give_up(database, pid, raise).await,
                    false => self.gave_up(NOT_RAISED),
                });
            }
            sent = true;
            tokio::select! {
                // The UPDATE first: `sent` holds only once it was polled.
                biased;
                raised = &mut raise => break raised.map_err(db)?,
                () = tokio::time::sleep(every) => {
                    tokio::select! {
                        () = warn_waiting(database, pid, since.elapsed()) => {}
                        () = self.shared.abandon.notified() => {}
                    }
                }
                () = self.shared.abandon.notified() => {}
            }
        };
        let epoch: i64 = raised.try_get(0).map_err(db)?;
        self.shared.leading.store(true, Ordering::Release);
        if self.is_lost() {
            return Err(StoreError::Database(
                "the connection holding the lease broke while taking over".into(),
            ));
        }
        tokio::spawn(probe(self.client.clone(), self.shared.clone(), epoch));
        tracing::info!(epoch, "took the database lease: this hub is the leader");
        Ok(epoch)
    }

    /// A takeover given up (the process stops) once its UPDATE may have
    /// been sent: cancelled at the database, since left queued it would
    /// raise the epoch once the earlier leader's write ends, fencing that
    /// leader for nothing. The cancel is sent again until the UPDATE ends
    /// (one that arrives before the UPDATE finds the session idle); past
    /// [`PROBE_WAIT`] the lease's session (`pid`) is ended instead. A
    /// cancel still in flight may cancel the release's unlock after: the
    /// session's end frees the lock all the same, standbys retry each second.
    async fn give_up(
        &self,
        database: &Database,
        pid: i32,
        mut raise: std::pin::Pin<
            &mut impl std::future::Future<Output = Result<tokio_postgres::Row, tokio_postgres::Error>>,
        >,
    ) -> StoreError {
        let token = self.client.cancel_token();
        let deadline = tokio::time::Instant::now() + PROBE_WAIT;
        let ended = loop {
            if let Err(e) = token.cancel_query(database.connector()).await {
                tracing::warn!(error = %e, "cannot cancel the takeover's UPDATE at the database");
            }
            tokio::select! {
                ended = &mut raise => break Some(ended),
                () = tokio::time::sleep(CANCEL_AGAIN_EVERY) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
        };
        match ended {
            Some(Ok(_)) => {
                self.gave_up("stopped while taking over, just after the epoch was raised")
            }
            Some(Err(e)) if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {
                self.gave_up(NOT_RAISED)
            }
            Some(Err(e)) => self.gave_up(&format!(
                "stopped while taking over; whether the epoch was raised is unknown ({})",
                super::db(e)
            )),
            None => self.end_session(database, pid, raise).await,
        }
    }

    /// A given-up takeover whose UPDATE the cancels did not end: its
    /// session is ended (quietly: the lease is being let go), and what
    /// the UPDATE then returns says whether the epoch was raised.
    async fn end_session(
        &self,
        database: &Database,
        pid: i32,
        raise: std::pin::Pin<
            &mut impl std::future::Future<Output = Result<tokio_postgres::Row, tokio_postgres::Error>>,
        >,
    ) -> StoreError {
        self.shared.releasing.store(true, Ordering::Release);
        if let Err(e) = terminate_session(database, pid).await {
            tracing::error!(
                lease_pid = pid,
                error = %e,
                "the takeover's UPDATE could not be cancelled nor its session ended: end it with \
                 SELECT pg_terminate_backend(lease_pid), or it raises the epoch once the earlier \
                 leader's write ends"
            );
            return self.gave_up(
                "stopped while taking over: the UPDATE was neither cancelled nor its session ended",
            );
        }
        match tokio::time::timeout(PROBE_WAIT, raise).await {
            Ok(Ok(_)) => self.gave_up("stopped while taking over, just after the epoch was raised"),
            Ok(Err(e)) if e.code() == Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN) => self
                .gave_up(
                    "stopped while taking over: its session was ended, and the epoch was not raised",
                ),
            Ok(Err(_)) | Err(_) => self.gave_up(
                "stopped while taking over: its session was ended; whether the epoch was raised is unknown",
            ),
        }
    }

    /// The error of a takeover given up, marked so (`Abandon::gave_up`).
    fn gave_up(&self, why: &str) -> StoreError {
        self.shared.gave_up.store(true, Ordering::Release);
        StoreError::Database(why.to_string())
    }

    /// A handle that stops a takeover in progress from another task.
    pub fn abandon_handle(&self) -> Abandon {
        Abandon(self.shared.clone())
    }

    /// Whether the lease is gone (the connection broke, or another replica
    /// took it): nothing may be written.
    pub fn is_lost(&self) -> bool {
        self.shared.lost.load(Ordering::Acquire)
    }

    /// Why the lease is gone (None while it is held): the connection
    /// broke or stopped answering, or another replica took it over.
    pub fn lost_why(&self) -> Option<String> {
        self.watch().why()
    }

    /// A handle that tells whether the lease is gone, for what outlives a
    /// borrow of the lease (the fetched marks' writer, a task of its own).
    pub fn watch(&self) -> Watch {
        Watch(self.shared.clone())
    }

    /// Lets go in order: unlocks and notifies the standbys in one
    /// statement (the notice is sent as it commits, the lock already free).
    pub async fn release(self) {
        self.shared.releasing.store(true, Ordering::Release);
        self.shared.stopping.notify_waiters();
        let unlock =
            format!("SELECT pg_advisory_unlock({LEASE_LOCK}), pg_notify('{RELEASED}', '')");
        match tokio::time::timeout(PROBE_WAIT, self.client.batch_execute(&unlock)).await {
            Ok(Ok(())) => tracing::info!("let go of the database lease"),
            // The session's end frees the lock anyway.
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot let go of the lease in order"),
            Err(_) => tracing::warn!("the database did not answer the lease's release"),
        }
    }
}

/// Reads the lease row each [`PROBE_EVERY`] until release: a raised epoch
/// or a connection that fails or stays silent stops the hub.
async fn probe(client: Arc<Client>, shared: Arc<Shared>, epoch: i64) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.stopping.notified() => return,
        }
        if shared.releasing.load(Ordering::Acquire) || shared.lost.load(Ordering::Acquire) {
            return;
        }
        let read = client.query_one("SELECT epoch FROM lease WHERE id = 1", &[]);
        match tokio::time::timeout(PROBE_WAIT, read).await {
            Ok(Ok(row)) => match row.try_get::<_, i64>(0) {
                Ok(now) if now == epoch => {}
                Ok(_) => return shared.fenced(),
                Err(e) => return shared.connection_lost(format!("PostgreSQL: {e}")),
            },
            Ok(Err(e)) => return shared.connection_lost(format!("PostgreSQL: {e}")),
            Err(_) => {
                return shared.connection_lost(format!(
                    "the database did not answer within {} s",
                    PROBE_WAIT.as_secs()
                ));
            }
        }
    }
}

/// The fence of every write: within `tx`, the lease's epoch must still be
/// `epoch`. The row is read FOR SHARE, so a takeover's raise waits for
/// this transaction, and the new leader reads the database after it. The
/// statement is prepared once per connection (a round trip saved on
/// every write).
pub async fn fence(tx: &impl GenericClient, epoch: i64) -> Result<(), StoreError> {
    let rows = query(tx, "SELECT epoch FROM lease WHERE id = 1 FOR SHARE", &[]).await?;
    let now: i64 = rows
        .first()
        .ok_or_else(|| StoreError::Corrupt("the lease row is missing".into()))?
        .try_get(0)
        .map_err(db)?;
    if now != epoch {
        crate::fatal::lease_lost();
        return Err(StoreError::Database(LOST.into()));
    }
    Ok(())
}
