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
}

impl Verifier {
    /// Starts the verifying thread.
    pub fn start() -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("tongbao-verify".into())
            .spawn(move || run(queue))?;
        Ok(Self { jobs })
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
        let (reply, answer) = oneshot::channel();
        match self.jobs.send(Job { checks, reply }) {
            Ok(()) => answer.await.map_err(|_| {
                Status::internal("the signature verifier stopped while checking this call; retry")
            }),
            // The thread is gone (it never should be): verify here instead.
            Err(mpsc::SendError(job)) => Ok(verify_now(&job.checks)),
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

fn run(queue: mpsc::Receiver<Job>) {
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
        }
    }
}
