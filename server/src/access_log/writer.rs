//! The access log's single writer thread, with group commit.
//!
//! Calls hand their records over and go on; the writer takes every record
//! waiting at once and hands them to its rounds (`stored`: one commit to
//! the store a round). A write call (answered only after its record is
//! durable) wakes the writer at once; reads are taken every 250 ms
//! without waking it, so a burst of reads costs a few rounds a second,
//! not one each. One commit serves every record taken with it, so load
//! costs fewer syncs, not more. This module holds the queue, the waking,
//! the answers, the rounds' counts, and the key that signs checkpoints.

use super::AccessLogError;
use super::record::AccessRecord;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tongbao_proto::checkpoint::{Checkpoint, NoteSigner, NoteVerifier, sign_checkpoint};
use tongbao_proto::keys::SigningKey;

/// Records nobody waits for are taken at least this often.
pub(super) const POLL: Duration = Duration::from_millis(250);
/// A checkpoint at most this often.
pub(super) const SIGN_EVERY: Duration = Duration::from_secs(1);
/// Retention is applied this often (and at start).
pub(super) const RETAIN_EVERY: Duration = Duration::from_secs(3600);

/// The hub's checkpoint key, naming the access log's checkpoints.
pub struct Signer {
    key: SigningKey,
    name: String,
    origin: String,
}

impl Signer {
    pub fn new(key: SigningKey, log_name: &str, origin: String) -> Result<Self, AccessLogError> {
        NoteSigner::new(log_name, &key)?;
        Ok(Self {
            key,
            name: log_name.to_string(),
            origin,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn verifier(&self) -> Result<NoteVerifier, AccessLogError> {
        Ok(NoteSigner::new(&self.name, &self.key)?.verifier()?)
    }

    pub(super) fn sign(
        &self,
        size: u64,
        root: tongbao_proto::Hash,
    ) -> Result<String, AccessLogError> {
        let signer = NoteSigner::new(&self.name, &self.key)?;
        Ok(sign_checkpoint(
            &Checkpoint::new(self.origin.clone(), size, root),
            &[signer],
        )?)
    }
}

pub(super) type Waiter = oneshot::Sender<Result<(), String>>;

/// A record handed over, who waits for it, and since when.
pub(super) type Queued = (AccessRecord, Option<Waiter>, Instant);

/// Resolves once a record handed to [`super::AccessLog::record_durably`]
/// is on disk.
pub struct Durable(oneshot::Receiver<Result<(), String>>);

impl Durable {
    pub async fn wait(self) -> Result<(), String> {
        self.0
            .await
            .unwrap_or_else(|_| Err("the access log writer stopped".into()))
    }

    /// For callers outside the async runtime (the admin trail's writers).
    pub fn wait_blocking(self) -> Result<(), String> {
        self.0
            .blocking_recv()
            .unwrap_or_else(|_| Err("the access log writer stopped".into()))
    }
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Queued>,
    /// A record in `waiting` has a caller waiting for it to be durable.
    urgent: bool,
    stop: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Set when the writer failed: every later record is refused.
    closed: AtomicBool,
    why: Mutex<String>,
    counted: Counted,
}

/// The writer's rounds that took records so far, for benchmarks: how
/// often a write's answer waited on a round (and its sync) of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundCounts {
    pub rounds: u64,
    /// Rounds that held a record a caller waited on.
    pub waited: u64,
    pub records: u64,
    /// Time spent in rounds, ns: a checkpoint signed or a retention chunk
    /// removed after the answers is in it too.
    pub nanos: u64,
}

/// The counts, under one lock so that a reading is of whole rounds (one
/// lock a round is nothing beside its sync).
#[derive(Default)]
struct Counted(Mutex<RoundCounts>);

impl Counted {
    /// Counts a round that took records (idle polls are not rounds here).
    fn round(&self, records: usize, waited: bool, took: Duration) {
        if records == 0 {
            return;
        }
        let mut c = lock(&self.0);
        c.rounds += 1;
        c.waited += u64::from(waited);
        c.records += records as u64;
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        c.nanos = c.nanos.saturating_add(nanos);
    }

    fn counts(&self) -> RoundCounts {
        *lock(&self.0)
    }
}

/// The queue only gains and loses whole records under its lock, so a
/// panic elsewhere cannot leave it half-changed.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The running writer.
pub struct Handle {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Handle {
    /// Starts the writer thread running `writer`'s rounds.
    pub(super) fn spawn(writer: impl Rounds) -> Result<Self, AccessLogError> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
            why: Mutex::default(),
            counted: Counted::default(),
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run(writer, &for_thread))
            .map_err(|e| AccessLogError::Closed(format!("cannot start its writer: {e}")))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn submit(&self, record: AccessRecord, waiter: Option<Waiter>) {
        let mut q = lock(&self.shared.queue);
        // Checked under the queue's lock: a writer that stops or fails
        // sets it under the same lock, so no record waits for nobody.
        if self.shared.closed.load(Ordering::Acquire) {
            drop(q);
            if let Some(w) = waiter {
                let _ = w.send(Err(lock(&self.shared.why).clone()));
            }
            return;
        }
        // Only a waiting caller wakes the writer (once per round); reads
        // are taken by its next round, at most POLL later.
        let wake = waiter.is_some() && !q.urgent;
        q.urgent |= waiter.is_some();
        q.waiting.push((record, waiter, Instant::now()));
        drop(q);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    pub fn submit_durable(&self, record: AccessRecord) -> Durable {
        let (tx, rx) = oneshot::channel();
        self.submit(record, Some(tx));
        Durable(rx)
    }

    /// The rounds so far.
    pub fn rounds(&self) -> RoundCounts {
        self.shared.counted.counts()
    }

    /// Why the writer failed, once it has.
    pub fn failed(&self) -> Option<String> {
        self.shared
            .closed
            .load(Ordering::Acquire)
            .then(|| lock(&self.shared.why).clone())
    }

    pub fn stop(&self) {
        lock(&self.shared.queue).stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = lock(&self.thread).take()
            && t.join().is_err()
        {
            tracing::error!("the access log writer panicked");
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the writer thread runs: the store's writer (`stored`), or a
/// test's. The queue, the waking and the answers are its own.
pub(super) trait Rounds: Send + 'static {
    /// One round: takes the batch, answers its waiters once it is durable.
    fn round(
        &mut self,
        batch: Vec<Queued>,
        stopping: bool,
    ) -> Result<(), (AccessLogError, Vec<Waiter>)>;
    /// How long the writer may sleep before something falls due.
    fn sleep_for(&self) -> Duration;
}

fn run(mut writer: impl Rounds, shared: &Shared) {
    loop {
        let (batch, stopping) = {
            let mut q = lock(&shared.queue);
            if !q.urgent && !q.stop {
                let wait = writer.sleep_for();
                q = shared
                    .wake
                    .wait_timeout(q, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            q.urgent = false;
            (std::mem::take(&mut q.waiting), q.stop)
        };
        let (records, waited) = (batch.len(), batch.iter().any(|(_, w, _)| w.is_some()));
        let began = Instant::now();
        let done = writer.round(batch, stopping);
        shared.counted.round(records, waited, began.elapsed());
        if let Err((e, waiters)) = done {
            let why = format!("{e}; restart the hub once the cause is fixed");
            tracing::error!(error = %why, "the access log cannot be written; the hub refuses calls it cannot record");
            close(shared, why, waiters);
            return;
        }
        if stopping {
            let q = lock(&shared.queue);
            if q.waiting.is_empty() {
                drop(q);
                close(shared, "the hub is stopping".into(), Vec::new());
                return;
            }
        }
    }
}

/// Refuses every record from now on, and those waiting, with `why`.
fn close(shared: &Shared, why: String, waiters: Vec<Waiter>) {
    let rest = {
        let mut q = lock(&shared.queue);
        *lock(&shared.why) = why.clone();
        shared.closed.store(true, Ordering::Release);
        std::mem::take(&mut q.waiting)
    };
    for w in waiters
        .into_iter()
        .chain(rest.into_iter().filter_map(|(_, w, _)| w))
    {
        let _ = w.send(Err(why.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every waiter at once, as a store that syncs instantly.
    struct Answering;

    impl Rounds for Answering {
        fn round(
            &mut self,
            batch: Vec<Queued>,
            _stopping: bool,
        ) -> Result<(), (AccessLogError, Vec<Waiter>)> {
            for w in batch.into_iter().filter_map(|(_, w, _)| w) {
                let _ = w.send(Ok(()));
            }
            Ok(())
        }

        fn sleep_for(&self) -> Duration {
            Duration::from_secs(3600)
        }
    }

    /// The counts once `done` holds: a round is counted after it has
    /// answered its waiters. The deadline only catches a hang.
    fn counts_once(
        writer: &Handle,
        done: impl Fn(&RoundCounts) -> bool,
    ) -> Result<RoundCounts, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let counts = writer.rounds();
            if done(&counts) {
                return Ok(counts);
            }
            if Instant::now() > deadline {
                return Err(format!("rounds never came to it: {counts:?}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn rounds_count_their_records_and_those_a_caller_waited_on()
    -> Result<(), Box<dyn std::error::Error>> {
        let writer = Handle::spawn(Answering)?;
        assert_eq!(writer.rounds(), RoundCounts::default());
        // A read wakes nobody; the write after it does, and its round
        // takes the read as well (or a round before it took the read).
        writer.submit(AccessRecord::default(), None);
        writer
            .submit_durable(AccessRecord::default())
            .wait_blocking()?;
        let counts = counts_once(&writer, |c| c.waited == 1)?;
        assert_eq!(counts.records, 2);
        assert!((1..=2).contains(&counts.rounds), "{counts:?}");
        writer
            .submit_durable(AccessRecord::default())
            .wait_blocking()?;
        let after = counts_once(&writer, |c| c.waited == 2)?;
        assert_eq!(after.records, 3);
        assert_eq!(after.rounds, counts.rounds + 1);
        assert!(after.nanos >= counts.nanos);
        // A round of reads alone is not one a caller waited on.
        writer.submit(AccessRecord::default(), None);
        writer.stop();
        let end = writer.rounds();
        assert_eq!((end.records, end.waited), (4, 2));
        assert_eq!(end.rounds, after.rounds + 1);
        Ok(())
    }

    /// Fails every round, answering nobody durable.
    struct Failing;

    impl Rounds for Failing {
        fn round(
            &mut self,
            batch: Vec<Queued>,
            _stopping: bool,
        ) -> Result<(), (AccessLogError, Vec<Waiter>)> {
            let waiters = batch.into_iter().filter_map(|(_, w, _)| w).collect();
            Err((AccessLogError::Closed("the disk is gone".into()), waiters))
        }

        fn sleep_for(&self) -> Duration {
            Duration::from_secs(3600)
        }
    }

    #[test]
    fn a_failed_round_is_counted_and_later_records_are_not()
    -> Result<(), Box<dyn std::error::Error>> {
        let writer = Handle::spawn(Failing)?;
        let refused = writer
            .submit_durable(AccessRecord::default())
            .wait_blocking();
        assert!(refused.is_err(), "a failed round answered durable");
        let counts = counts_once(&writer, |c| c.rounds == 1)?;
        assert_eq!((counts.records, counts.waited), (1, 1));
        // The writer is closed: a later record is refused, not taken.
        let later = writer
            .submit_durable(AccessRecord::default())
            .wait_blocking();
        assert!(later.is_err());
        writer.stop();
        assert_eq!(writer.rounds(), counts);
        Ok(())
    }
}
