//! Heavy work: calls whose cost grows with the period or history they read
//! (audits, statistics, the case index's catch-up, an office's proof
//! checks).
//!
//! Run on the async workers, one such call holds a worker for as long as
//! it reads, and pushes and subscriptions queued behind that worker wait.
//! So they run here instead: on a few threads of their own, at the lowest
//! OS priority (nice 19, on Linux), with a bounded queue in front. On a busy machine
//! the exchange gets the CPU first and a query takes longer; on an idle
//! one it runs at full speed. A call that finds the queue full is refused at once
//! ([`HeavyRefusal::Busy`]) rather than piling up memory and latency; a
//! queued call whose caller has gone is skipped.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Why heavy work was not done.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeavyRefusal {
    #[error(
        "the hub is already running {threads} heavy queries with {waiting} more waiting \
         (limits.max_heavy_queries, limits.max_heavy_waiting); retry in a moment"
    )]
    Busy { threads: usize, waiting: usize },
    #[error("the {what} failed inside the hub; report this to the hub's operators")]
    Failed { what: &'static str },
}

type Job = Box<dyn FnOnce() + Send>;

/// The handlers' end of the pool; its threads stop once it is dropped and
/// the queue is empty.
pub struct HeavyPool {
    queue: SyncSender<Job>,
    threads: usize,
    waiting: usize,
}

impl HeavyPool {
    /// Starts `threads` threads (at least one) behind a queue of `waiting`.
    pub fn start(threads: usize, waiting: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (queue, jobs) = sync_channel::<Job>(waiting);
        let jobs = Arc::new(Mutex::new(jobs));
        for n in 0..threads {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("tongbao-heavy-{n}"))
                .spawn(move || work(&jobs))?;
        }
        Ok(Self {
            queue,
            threads,
            waiting,
        })
    }

    /// Runs `f` on the pool and waits for its answer, or is refused at once
    /// when the queue is full. `what` names the work in a failure.
    pub async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HeavyRefusal> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller gave up while this waited: nobody reads the answer.
            if reply.is_closed() {
                return;
            }
            crate::failpoint::pause("heavy-work");
            // A panic is the work's bug; the thread goes on serving others.
            if let Ok(done) = catch_unwind(AssertUnwindSafe(f)) {
                let _ = reply.send(done);
            }
        });
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(HeavyRefusal::Busy {
                    threads: self.threads,
                    waiting: self.waiting,
                });
            }
            Err(TrySendError::Disconnected(_)) => return Err(HeavyRefusal::Failed { what }),
        }
        answer.await.map_err(|_| HeavyRefusal::Failed { what })
    }
}

/// One thread's loop: take the next job, run it, until the pool is gone.
fn work(jobs: &Mutex<Receiver<Job>>) {
    // Elsewhere the call may renice the whole process, not this thread.
    #[cfg(target_os = "linux")]
    if let Err(e) =
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
    {
        tracing::warn!(error = ?e, "heavy queries run at normal priority: lowering it failed");
    }
    loop {
        // Jobs run outside the lock and never panic through it, so a
        // poisoned lock only means another thread died taking a job.
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }

    #[test]
    fn work_runs_off_the_calling_thread_and_answers() -> TestResult {
        let pool = HeavyPool::start(1, 1)?;
        let caller = std::thread::current().id();
        let ran_on = runtime()?.block_on(pool.run("test", || std::thread::current().id()))?;
        assert_ne!(ran_on, caller);
        Ok(())
    }

    /// This thread's nice value, from the kernel's own record of it.
    #[cfg(target_os = "linux")]
    fn nice_of_this_thread() -> Result<i64, Box<dyn std::error::Error + Send + Sync>> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
        // Fields after the command name, which ends with the last ')'.
        let rest = stat.rsplit_once(')').ok_or("no command in stat")?.1;
        let nice = rest.split_whitespace().nth(16).ok_or("short stat")?;
        Ok(nice.parse()?)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn work_runs_at_the_lowest_priority() -> TestResult {
        let pool = HeavyPool::start(1, 1)?;
        let here = nice_of_this_thread().map_err(|e| e.to_string())?;
        let there = runtime()?
            .block_on(pool.run("nice", || nice_of_this_thread().map_err(|e| e.to_string())))??;
        assert_eq!(there, 19, "this thread's nice is {here}");
        Ok(())
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_serves_again_once_drained() -> TestResult {
        let pool = HeavyPool::start(1, 1)?;
        let (started_tx, started) = mpsc::channel();
        let (release, gate) = mpsc::channel::<()>();
        runtime()?.block_on(async {
            // One call holds the thread, one waits in the queue.
            let mut first = Box::pin(pool.run("hold", move || {
                let _ = started_tx.send(());
                let _ = gate.recv();
                1
            }));
            assert!(futures::poll!(&mut first).is_pending());
            started.recv()?;
            let mut second = Box::pin(pool.run("queued", || 2));
            assert!(futures::poll!(&mut second).is_pending());
            assert_eq!(
                pool.run("refused", || 3).await,
                Err(HeavyRefusal::Busy {
                    threads: 1,
                    waiting: 1
                })
            );
            release.send(())?;
            assert_eq!(first.await, Ok(1));
            assert_eq!(second.await, Ok(2));
            assert_eq!(pool.run("after", || 4).await, Ok(4));
            Ok(())
        })
    }

    #[test]
    fn a_queued_call_whose_caller_left_is_skipped() -> TestResult {
        let pool = HeavyPool::start(1, 2)?;
        let (started_tx, started) = mpsc::channel();
        let (release, gate) = mpsc::channel::<()>();
        let ran = Arc::new(AtomicBool::new(false));
        runtime()?.block_on(async {
            let mut first = Box::pin(pool.run("hold", move || {
                let _ = started_tx.send(());
                let _ = gate.recv();
            }));
            assert!(futures::poll!(&mut first).is_pending());
            started.recv()?;
            let flag = ran.clone();
            let mut left = Box::pin(pool.run("left", move || flag.store(true, Ordering::SeqCst)));
            assert!(futures::poll!(&mut left).is_pending());
            drop(left);
            release.send(())?;
            first.await?;
            // The queue is served in order: once this answers, the dropped
            // call has had its turn.
            pool.run("after", || ()).await?;
            assert!(!ran.load(Ordering::SeqCst));
            Ok(())
        })
    }

    #[test]
    fn a_panicking_job_fails_its_caller_and_the_thread_serves_on() -> TestResult {
        let pool = HeavyPool::start(1, 1)?;
        let rt = runtime()?;
        let failed = rt.block_on(pool.run("panicking work", || -> u8 { panic!("a bug") }));
        assert_eq!(
            failed,
            Err(HeavyRefusal::Failed {
                what: "panicking work"
            })
        );
        assert_eq!(rt.block_on(pool.run("next", || 7u8)), Ok(7));
        Ok(())
    }
}
