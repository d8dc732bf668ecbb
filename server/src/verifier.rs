//! A queue that verifies message signatures in batches.
//!
//! Many concurrent `Push` calls each carry one signature; checked together
//! they cost about half as much per signature (see
//! `tongbao_proto::ed25519`). Handlers send their signatures here with a
//! reply channel; one thread takes whatever is waiting (up to
//! [`MAX_BATCH`] signatures), verifies it as one batch and replies. It never
//! waits for company: a lone push is verified at once, alone. A call with
//! [`MAX_BATCH`] signatures or more is a batch by itself and is checked on
//! a blocking thread beside the queue.
//!
//! A lone signature that finds the queue empty (nothing sent to the thread
//! and not yet answered) and no other caller checking one is checked in the
//! caller's own thread: there is no company to batch with, and handing it
//! over would cost two thread wake-ups (the verifier's, then the caller's)
//! for one ~50 µs check. Evenly spaced pushes and receipts arrive exactly
//! like that. One caller at a time does so, so that a burst still finds
//! the thread and is checked in batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use tokio::sync::oneshot;
use tongbao_proto::Hash;
use tongbao_proto::keys::{KeyError, verify_digests};
use tongbao_proto::pb;
use tonic::Status;

/// Most signatures verified in one batch: enough to halve the cost, small
/// enough that a batch takes a couple of milliseconds.
pub const MAX_BATCH: usize = 64;

/// One signature to check: a message digest, its signature and the
/// registered public key it must verify under.
pub struct Check {
    pub digest: Hash,
    pub signature: pb::Signature,
    pub public_key: Vec<u8>,
}

struct Job {
    checks: Vec<Check>,
    reply: oneshot::Sender<Vec<Result<(), KeyError>>>,
}

/// The handlers' end of the queue; the thread stops when it is dropped.
pub struct Verifier {
    jobs: mpsc::Sender<Job>,
    /// Calls sent to the thread and not answered by it yet.
    queued: Arc<AtomicUsize>,
    /// Whether a caller is checking a lone signature in its own thread.
    checking_here: AtomicBool,
}

/// A caller's claim to check its lone signature in its own thread; given
/// back when dropped.
struct CheckingHere<'a>(&'a AtomicBool);

impl Drop for CheckingHere<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Verifier {
    /// Starts the verifying thread.
    pub fn start() -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let answered = queued.clone();
        std::thread::Builder::new()
            .name("tongbao-verify".into())
            .spawn(move || run(queue, &answered))?;
        Ok(Self {
            jobs,
            queued,
            checking_here: AtomicBool::new(false),
        })
    }

    /// The claim to check a call of `checks` signatures in the caller's
    /// thread: only a lone signature, only while the queue is empty and no
    /// other caller holds the claim.
    fn check_here(&self, checks: usize) -> Option<CheckingHere<'_>> {
        if checks != 1 || self.queued.load(Ordering::Acquire) != 0 {
            return None;
        }
        self.checking_here
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| CheckingHere(&self.checking_here))
    }

    /// Verifies signatures (those of one call together); the result for
    /// each is what `verify_digest` says of it. Hold no lock across this.
    pub async fn verify(&self, checks: Vec<Check>) -> Result<Vec<Result<(), KeyError>>, Status> {
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        if checks.len() >= MAX_BATCH {
            // A batch by itself: checked on a blocking thread, so that the
            // single pushes in the queue do not wait behind it.
            return tokio::task::spawn_blocking(move || verify_now(&checks))
                .await
                .map_err(|_| {
                    Status::internal("the signature check of this call was interrupted; retry")
                });
        }
        if let Some(_here) = self.check_here(checks.len()) {
            return Ok(verify_now(&checks));
        }
        let (reply, answer) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::AcqRel);
        match self.jobs.send(Job { checks, reply }) {
            Ok(()) => answer.await.map_err(|_| {
                Status::internal("the signature verifier stopped while checking this call; retry")
            }),
            // The thread is gone (it never should be): verify here instead.
            Err(mpsc::SendError(job)) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                Ok(verify_now(&job.checks))
            }
        }
    }
}

fn verify_now(checks: &[Check]) -> Vec<Result<(), KeyError>> {
    let items: Vec<(&Hash, &pb::Signature, &[u8])> = checks
        .iter()
        .map(|c| (&c.digest, &c.signature, c.public_key.as_slice()))
        .collect();
    verify_digests(&items)
}

fn run(queue: mpsc::Receiver<Job>, queued: &AtomicUsize) {
    // Blocks only while nothing is waiting; then takes what is there now.
    while let Ok(first) = queue.recv() {
        let mut count = first.checks.len();
        let mut jobs = vec![first];
        while count < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => {
                    count += job.checks.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let lens: Vec<usize> = jobs.iter().map(|j| j.checks.len()).collect();
        let checks: Vec<Check> = jobs.iter_mut().flat_map(|j| j.checks.drain(..)).collect();
        let mut results = verify_now(&checks).into_iter();
        for (job, len) in jobs.into_iter().zip(lens) {
            let mine: Vec<_> = results.by_ref().take(len).collect();
            // A caller that gave up no longer needs its answer.
            let _ = job.reply.send(mine);
            queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tongbao_proto::canonical::message_digest;
    use tongbao_proto::keys::SigningKey;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A check of message `i` signed by `key`; `forged` flips a bit of
    /// its signature.
    fn check(
        key: &SigningKey,
        i: usize,
        forged: bool,
    ) -> Result<Check, Box<dyn std::error::Error>> {
        let signed = key.sign_message(pb::Message {
            message_id: format!("m-{i}"),
            sender: "tax".into(),
            kind: 1,
            body: format!("body {i}").into_bytes().into(),
            ..Default::default()
        });
        let mut signature = signed.signature.ok_or("not signed")?;
        if forged && let Some(b) = signature.signature.get_mut(7) {
            *b ^= 1;
        }
        let message = signed.message.ok_or("no message")?;
        Ok(Check {
            digest: message_digest(&message),
            signature,
            public_key: key.public_key().to_vec(),
        })
    }

    #[tokio::test]
    async fn a_lone_signature_checked_in_the_callers_thread_is_still_checked() -> TestResult {
        let verifier = Verifier::start()?;
        let key = SigningKey::generate()?;
        let good = verifier.verify(vec![check(&key, 1, false)?]).await?;
        assert!(matches!(good.as_slice(), [Ok(())]), "{good:?}");
        let forged = verifier.verify(vec![check(&key, 2, true)?]).await?;
        assert!(
            matches!(forged.as_slice(), [Err(KeyError::BadSignature { .. })]),
            "{forged:?}"
        );
        // Under another key the good signature is refused too.
        let other = SigningKey::generate()?;
        let mut wrong_key = check(&key, 3, false)?;
        wrong_key.public_key = other.public_key().to_vec();
        let refused = verifier.verify(vec![wrong_key]).await?;
        assert!(matches!(refused.as_slice(), [Err(_)]), "{refused:?}");
        // The claim was given back each time.
        assert!(verifier.check_here(1).is_some());
        Ok(())
    }

    #[test]
    fn only_one_lone_caller_at_a_time_checks_here_and_never_beside_the_queue() -> TestResult {
        let verifier = Verifier::start()?;
        let claim = verifier.check_here(1);
        assert!(claim.is_some());
        assert!(
            verifier.check_here(1).is_none(),
            "a second caller went beside the first"
        );
        drop(claim);
        assert!(verifier.check_here(1).is_some());
        // Several signatures in one call go to the queue, to be batched.
        assert!(verifier.check_here(2).is_none());
        assert!(verifier.check_here(0).is_none());
        // With a call waiting for the thread, a lone one joins the queue.
        verifier.queued.fetch_add(1, Ordering::AcqRel);
        assert!(verifier.check_here(1).is_none());
        verifier.queued.fetch_sub(1, Ordering::AcqRel);
        assert!(verifier.check_here(1).is_some());
        Ok(())
    }

    /// Concurrent callers, some checked here and some by the thread, each
    /// get the verdict of their own signatures, forged ones refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_each_get_their_own_verdicts() -> TestResult {
        let verifier = Arc::new(Verifier::start()?);
        let key = SigningKey::generate()?;
        let mut calls = Vec::new();
        for i in 0..64 {
            let forged = i % 5 == 3;
            let checks = if i % 4 == 0 {
                vec![check(&key, i, forged)?, check(&key, i + 1000, false)?]
            } else {
                vec![check(&key, i, forged)?]
            };
            let verifier = verifier.clone();
            calls.push(tokio::spawn(async move {
                (i, forged, verifier.verify(checks).await)
            }));
        }
        for call in calls {
            let (i, forged, verdicts) = call.await?;
            let verdicts = verdicts?;
            assert_eq!(verdicts.len(), if i % 4 == 0 { 2 } else { 1 }, "call {i}");
            assert_eq!(verdicts[0].is_err(), forged, "call {i}: {verdicts:?}");
            assert!(verdicts.iter().skip(1).all(Result::is_ok), "call {i}");
        }
        // Every queued call was answered and counted off.
        assert_eq!(verifier.queued.load(Ordering::Acquire), 0);
        Ok(())
    }

    /// What a lone signature's trip through the thread costs beside
    /// checking it in the caller's thread, one call after another (prints,
    /// asserts nothing on time):
    /// `cargo test --release -p tongbao-server --lib lone_signature_speed -- --ignored --nocapture`
    #[tokio::test]
    #[ignore]
    async fn lone_signature_speed() -> TestResult {
        let verifier = Verifier::start()?;
        let key = SigningKey::generate()?;
        let checks = (0..2000)
            .map(|i| check(&key, i, false))
            .collect::<Result<Vec<_>, _>>()?;
        let mut per_call = Vec::new();
        for through_thread in [true, false, true, false] {
            // Holding the claim sends every call through the thread.
            let held = through_thread.then(|| verifier.check_here(1));
            let start = std::time::Instant::now();
            for c in &checks {
                let one = Check {
                    digest: c.digest,
                    signature: c.signature.clone(),
                    public_key: c.public_key.clone(),
                };
                let verdicts = verifier.verify(vec![one]).await?;
                assert!(matches!(verdicts.as_slice(), [Ok(())]));
            }
            let micros = start.elapsed().as_secs_f64() * 1e6 / checks.len() as f64;
            per_call.push((through_thread, micros));
            drop(held);
        }
        for (through_thread, micros) in per_call {
            let way = if through_thread {
                "through the thread"
            } else {
                "in the caller's thread"
            };
            println!("lone signature {way}: {micros:.1} us per call");
        }
        Ok(())
    }
}
