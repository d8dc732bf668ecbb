//! One rule for a poisoned lock: it is fatal, and the hub stops cleanly.
//!
//! A lock is poisoned when a thread panicked while holding it, so what it
//! guards may be half changed. No module may read that as "nothing there"
//! or carry on around it: the request that meets it fails with an
//! internal error, the hub logs it at error level, and the hub shuts down
//! as on SIGTERM, so that it is restarted on the state read back from
//! disk. Every module reports the lock here (this module imports nothing
//! of the hub's); the process's serve loop (`hub::serve_until_signal`)
//! waits on [`requested`].
//!
//! The background check of the stored entries (`full_check`) stops the
//! hub the same way when it finds data altered on disk ([`altered`]): the
//! hub must not go on serving history it can no longer vouch for. So does
//! a hub on PostgreSQL that loses its database lease ([`lease_lost`]) or
//! the connection holding it ([`database_lost`]): another replica may be
//! the leader now; and a replica whose write failed ([`write_failed`]):
//! a standby can take over only once it lets go of the lease.

use std::sync::{Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::Notify;

/// A lock was found poisoned; the hub is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("internal error: the {what} lock is poisoned; the hub is stopping")]
pub struct Poisoned {
    /// Which lock, in the hub's words.
    pub what: &'static str,
}

impl From<Poisoned> for tonic::Status {
    fn from(e: Poisoned) -> Self {
        tonic::Status::internal(e.to_string())
    }
}

/// Why the hub stops by itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    #[error("stopped after a fatal internal error: the {} lock is poisoned", .0.what)]
    Poisoned(Poisoned),
    /// The background check found stored data altered, or could not
    /// read it (what, where).
    #[error("stopped: the background check of the stored entries failed: {0}")]
    Altered(String),
    /// A workflow step reached the log but its state could not be
    /// written: serving the state without it would answer from the past.
    /// The next start applies the step.
    #[error("stopped: a workflow step is in the log but its state could not be written: {0}")]
    StateBehind(String),
    /// Another replica took the database lease: this hub must not write
    /// again, nor answer from state it no longer owns.
    #[error("stopped: lost the database lease to another replica")]
    LeaseLost,
    /// The connection holding the database lease broke: another replica
    /// may take the lease at any moment, so this hub stops serving.
    #[error("stopped: lost the database connection: {0}")]
    DatabaseLost(String),
    /// A replica's write to the database failed: it stops and lets go of
    /// the lease, so that a standby takes over rather than the set stall.
    #[error("stopped: a write to the database failed: {0}")]
    WriteFailed(String),
    /// A record others can already read could not be made durable: the
    /// hub must not serve it as if it were, nor write after it.
    #[error("stopped: a record could not be made durable: {0}")]
    NotDurable(String),
}

/// The first fatal condition met, and a wake-up for whoever stops the hub.
struct Fatal {
    first: OnceLock<Stop>,
    stop: Notify,
}

impl Fatal {
    const fn new() -> Self {
        Self {
            first: OnceLock::new(),
            stop: Notify::const_new(),
        }
    }

    fn poisoned(&self, what: &'static str) -> Poisoned {
        let e = Poisoned { what };
        tracing::error!(lock = what, "{e}");
        self.record(Stop::Poisoned(e));
        e
    }

    fn altered(&self, what: String) {
        tracing::error!(
            "the background check of the stored entries failed: {what}; the hub is stopping"
        );
        self.record(Stop::Altered(what));
    }

    fn state_behind(&self, what: String) {
        tracing::error!(
            "a workflow step is in the log but its state could not be written: {what}; the hub is stopping"
        );
        self.record(Stop::StateBehind(what));
    }

    fn lease_lost(&self) {
        tracing::error!("lost the database lease to another replica; the hub is stopping");
        self.record(Stop::LeaseLost);
    }

    fn database_lost(&self, why: String) {
        tracing::error!("lost the database connection: {why}; the hub is stopping");
        self.record(Stop::DatabaseLost(why));
    }

    fn write_failed(&self, why: String) {
        tracing::error!("a write to the database failed: {why}; the replica is stopping");
        self.record(Stop::WriteFailed(why));
    }

    fn not_durable(&self, why: String) {
        tracing::error!("a record could not be made durable: {why}; the hub is stopping");
        self.record(Stop::NotDurable(why));
    }

    /// Keeps the first condition and wakes whoever stops the hub.
    fn record(&self, stop: Stop) {
        if self.first.set(stop).is_ok() {
            self.stop.notify_waiters();
            // Kept as a permit too, for a waiter that checks in just after.
            self.stop.notify_one();
        }
    }

    async fn requested(&self) -> Stop {
        loop {
            if let Some(e) = self.first.get() {
                return e.clone();
            }
            self.stop.notified().await;
        }
    }
}

/// The process's one record: a poisoned lock anywhere stops the hub.
static FATAL: Fatal = Fatal::new();

/// Records that the `what` lock is poisoned, logs it, asks the hub to
/// stop, and returns the error the caller answers with.
pub fn poisoned(what: &'static str) -> Poisoned {
    FATAL.poisoned(what)
}

/// Records that the background check found stored data altered or
/// unreadable (`what` names the channel and entry), logs it and asks the
/// hub to stop.
pub fn altered(what: String) {
    FATAL.altered(what);
}

/// Records that a workflow step's state could not be written after the
/// step was appended, logs it and asks the hub to stop.
pub fn state_behind(what: String) {
    FATAL.state_behind(what);
}

/// Records that another replica holds the database lease now, logs it
/// and asks the hub to stop.
pub fn lease_lost() {
    FATAL.lease_lost();
}

/// Records that the connection holding the database lease broke (`why`,
/// the driver's words), logs it and asks the hub to stop.
pub fn database_lost(why: String) {
    FATAL.database_lost(why);
}

/// Records that a replica's write to the database failed (`why`, the
/// store's words), logs it and asks the hub to stop.
pub fn write_failed(why: String) {
    FATAL.write_failed(why);
}

/// Records that a record already visible could not be made durable
/// (`why`, the store's words), logs it and asks the hub to stop.
pub fn not_durable(why: String) {
    FATAL.not_durable(why);
}

/// The first fatal condition met, if any.
pub fn met() -> Option<Stop> {
    FATAL.first.get().cloned()
}

/// Resolves once a fatal condition was met (at once if one was already).
pub async fn requested() -> Stop {
    FATAL.requested().await
}

/// Locks `m`, or reports it poisoned.
pub fn lock<'a, T>(m: &'a Mutex<T>, what: &'static str) -> Result<MutexGuard<'a, T>, Poisoned> {
    m.lock().map_err(|_| poisoned(what))
}

/// Read-locks `l`, or reports it poisoned.
pub fn read<'a, T>(
    l: &'a RwLock<T>,
    what: &'static str,
) -> Result<RwLockReadGuard<'a, T>, Poisoned> {
    l.read().map_err(|_| poisoned(what))
}

/// Write-locks `l`, or reports it poisoned.
pub fn write<'a, T>(
    l: &'a RwLock<T>,
    what: &'static str,
) -> Result<RwLockWriteGuard<'a, T>, Poisoned> {
    l.write().map_err(|_| poisoned(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poison(m: &Mutex<u32>) {
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _held = m.lock();
                panic!("poisoning the lock on purpose");
            })
            .join()
        });
    }

    #[tokio::test]
    async fn the_first_poisoned_lock_wakes_the_waiter_and_is_kept() {
        let fatal = Fatal::new();
        assert!(fatal.first.get().is_none());
        let waiter = fatal.requested();
        tokio::pin!(waiter);
        assert!(
            futures::poll!(&mut waiter).is_pending(),
            "nothing fatal yet"
        );
        let e = fatal.poisoned("inbox heads");
        assert_eq!(e.what, "inbox heads");
        assert_eq!(waiter.await, Stop::Poisoned(e));
        // A later one neither replaces the first nor blocks a late waiter.
        fatal.poisoned("store overlay");
        fatal.altered("channel tax: entry 2 is missing".into());
        assert_eq!(fatal.requested().await, Stop::Poisoned(e));
    }

    #[tokio::test]
    async fn altered_data_stops_the_hub_naming_what_was_found() {
        let fatal = Fatal::new();
        fatal.altered("channel tax: entry 2 is missing".into());
        let stop = fatal.requested().await;
        assert_eq!(
            stop.to_string(),
            "stopped: the background check of the stored entries failed: channel tax: entry 2 is missing"
        );
    }

    #[tokio::test]
    async fn a_lost_lease_or_database_stops_the_hub_saying_which() {
        let fatal = Fatal::new();
        fatal.database_lost("PostgreSQL: connection closed".into());
        // The lease lost after its connection is a consequence: the first stays.
        fatal.lease_lost();
        assert_eq!(
            fatal.requested().await.to_string(),
            "stopped: lost the database connection: PostgreSQL: connection closed"
        );
        let fatal = Fatal::new();
        fatal.lease_lost();
        assert_eq!(
            fatal.requested().await.to_string(),
            "stopped: lost the database lease to another replica"
        );
        let fatal = Fatal::new();
        fatal.write_failed("database error: the commit failed".into());
        assert_eq!(
            fatal.requested().await.to_string(),
            "stopped: a write to the database failed: database error: the commit failed"
        );
    }

    #[test]
    fn a_poisoned_lock_is_an_internal_error_that_says_the_hub_stops() {
        let m = Mutex::new(7);
        assert_eq!(lock(&m, "test").map(|g| *g), Ok(7));
        poison(&m);
        let e = lock(&m, "test counter").err();
        assert_eq!(
            e,
            Some(Poisoned {
                what: "test counter"
            })
        );
        assert!(met().is_some());
        let status = tonic::Status::from(Poisoned {
            what: "test counter",
        });
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(
            status.message(),
            "internal error: the test counter lock is poisoned; the hub is stopping"
        );
    }
}
