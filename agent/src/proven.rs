//! The inclusion gate of live delivery. `Client::subscribe` hands over an
//! entry once its signature and leaf hash verify and proves inclusion
//! beside delivery, later; the agent promises more ("an entry that fails
//! is never handed out"), so server-sent events and webhooks take entries
//! only through this gate: each batch that arrived together is proven in
//! a verified checkpoint first, and an entry whose proof fails is never
//! released.

use futures::{Stream, StreamExt};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tongbao_client::{Client, ClientError, VerifiedEntry};

/// Entries proven together, at most: one call of proofs covers them.
const BATCH: usize = tongbao_proto::merkle::MAX_LEAVES_PER_CALL;
/// Attempts of a proof that fails for a transient reason (hub unreachable,
/// interrupted) before the stream ends.
const PROOF_ATTEMPTS: u32 = 5;
/// Wait after the first transient failure; doubles.
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// What live delivery may do next.
#[derive(Debug)]
pub enum Live<T> {
    /// Verified and proven included: may be handed out.
    Entry(T),
    /// The stream ended for a reason retrying later may mend (the hub
    /// unreachable, a refusal): nothing unproven was released.
    Ended(ClientError),
    /// What the hub served failed verification (signature, leaf hash,
    /// inclusion, checkpoint): never handed out, and not retried by itself.
    Refused(ClientError),
}

/// Whether an error says the hub served something false, as opposed to
/// failing to serve.
pub fn is_verification_failure(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Integrity { .. }
            | ClientError::Rollback { .. }
            | ClientError::Fork { .. }
            | ClientError::Checkpoint { .. }
            | ClientError::Redacted { .. }
    )
}

fn classify<T>(e: ClientError) -> Live<T> {
    if is_verification_failure(&e) {
        Live::Refused(e)
    } else {
        Live::Ended(e)
    }
}

/// The client's inbox from `after`, live, each entry released only after
/// its inclusion is proven (unless the client is configured with
/// `verify_inclusion = false`). Ends after its first `Ended` or `Refused`.
pub fn live(client: &Client, after: u64) -> impl Stream<Item = Live<VerifiedEntry>> + Send + use<> {
    let prover = client.clone();
    gate(
        client.subscribe(after),
        move |batch: Arc<Vec<VerifiedEntry>>| {
            let client = prover.clone();
            async move {
                if !client.verifies_inclusion() {
                    return Ok(());
                }
                client
                    .prove_included(&batch.iter().collect::<Vec<_>>())
                    .await
            }
        },
    )
}

struct Gate<S, P> {
    entries: S,
    prove: P,
    done: bool,
}

/// Releases the items of `entries` only after `prove` accepted the batch
/// they arrived in; a proof that fails releases none of the batch and
/// ends the stream with the reason.
pub fn gate<T, S, P, F>(entries: S, prove: P) -> impl Stream<Item = Live<T>>
where
    T: Clone,
    S: Stream<Item = Result<T, ClientError>>,
    P: FnMut(Arc<Vec<T>>) -> F,
    F: Future<Output = Result<(), ClientError>>,
{
    let gate = Gate {
        entries: Box::pin(entries.ready_chunks(BATCH)),
        prove,
        done: false,
    };
    futures::stream::unfold((gate, VecDeque::new()), |(mut g, mut out)| async move {
        loop {
            if let Some(next) = out.pop_front() {
                return Some((next, (g, out)));
            }
            if g.done {
                return None;
            }
            let chunk = g.entries.next().await?;
            out = release(&mut g.prove, chunk).await;
            g.done = out.iter().any(|l| !matches!(l, Live::Entry(_)));
        }
    })
}

/// What one batch that arrived together releases.
async fn release<T, P, F>(prove: &mut P, chunk: Vec<Result<T, ClientError>>) -> VecDeque<Live<T>>
where
    T: Clone,
    P: FnMut(Arc<Vec<T>>) -> F,
    F: Future<Output = Result<(), ClientError>>,
{
    let mut entries = Vec::with_capacity(chunk.len());
    let mut failed = None;
    for item in chunk {
        match item {
            Ok(e) => entries.push(e),
            // The subscription ends at its first error.
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let mut out = VecDeque::new();
    if !entries.is_empty() {
        let entries = Arc::new(entries);
        if let Err(e) = prove_with_retries(prove, &entries).await {
            out.push_back(classify(e));
            return out;
        }
        out.extend(Arc::unwrap_or_clone(entries).into_iter().map(Live::Entry));
    }
    if let Some(e) = failed {
        out.push_back(classify(e));
    }
    out
}

async fn prove_with_retries<T, P, F>(
    prove: &mut P,
    entries: &Arc<Vec<T>>,
) -> Result<(), ClientError>
where
    P: FnMut(Arc<Vec<T>>) -> F,
    F: Future<Output = Result<(), ClientError>>,
{
    let mut wait = FIRST_RETRY;
    let mut attempt = 1;
    loop {
        match prove(entries.clone()).await {
            Err(e) if e.is_transient() && attempt < PROOF_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "inclusion proof interrupted; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn integrity(seq: u64) -> ClientError {
        ClientError::Integrity {
            channel: "tax".into(),
            seq,
            reason: "not included in the verified checkpoint".into(),
        }
    }

    /// Runs the gate over `items` with `prove`, collecting what it releases.
    async fn through<P, F>(items: Vec<Result<u64, ClientError>>, prove: P) -> Vec<Live<u64>>
    where
        P: FnMut(Arc<Vec<u64>>) -> F,
        F: Future<Output = Result<(), ClientError>>,
    {
        gate(futures::stream::iter(items), prove).collect().await
    }

    #[tokio::test]
    async fn an_entry_is_released_only_after_its_batch_was_proven() {
        let proven = Arc::new(Mutex::new(Vec::new()));
        let seen = proven.clone();
        let mut released = Vec::new();
        let mut live = Box::pin(gate(
            futures::stream::iter(vec![Ok(1u64), Ok(2), Ok(3)]),
            move |batch: Arc<Vec<u64>>| {
                let seen = seen.clone();
                async move {
                    if let Ok(mut p) = seen.lock() {
                        p.extend(batch.iter().copied());
                    }
                    Ok(())
                }
            },
        ));
        while let Some(l) = live.next().await {
            let Live::Entry(e) = l else {
                panic!("unexpected {l:?}");
            };
            // Proven before it came out.
            assert!(proven.lock().is_ok_and(|p| p.contains(&e)), "{e} unproven");
            released.push(e);
        }
        assert_eq!(released, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_failed_proof_releases_nothing_of_its_batch_and_ends_refused() {
        let out = through(vec![Ok(1), Ok(2)], |_| async { Err(integrity(1)) }).await;
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            matches!(
                &out[0],
                Live::Refused(ClientError::Integrity { seq: 1, .. })
            ),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_proof_call_ends_the_stream_without_releasing() {
        let out = through(vec![Ok(1)], |_| async {
            Err(ClientError::Rejected {
                code: tonic::Code::PermissionDenied,
                message: "no".into(),
            })
        })
        .await;
        assert!(matches!(out.as_slice(), [Live::Ended(_)]), "{out:?}");
    }

    #[tokio::test]
    async fn an_interrupted_proof_is_tried_again_before_release() {
        let calls = Arc::new(Mutex::new(0u32));
        let counted = calls.clone();
        let out = through(vec![Ok(7)], move |_| {
            let counted = counted.clone();
            async move {
                let n = counted.lock().map(|mut c| {
                    *c += 1;
                    *c
                });
                if n.unwrap_or(0) < 2 {
                    Err(ClientError::Rejected {
                        code: tonic::Code::Unavailable,
                        message: "restarting".into(),
                    })
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(matches!(out.as_slice(), [Live::Entry(7)]), "{out:?}");
        assert_eq!(calls.lock().map(|c| *c).unwrap_or(0), 2);
    }

    #[tokio::test]
    async fn a_subscription_failure_comes_after_the_proven_entries_before_it() {
        let out = through(vec![Ok(1), Err(integrity(2)), Ok(3)], |_| async { Ok(()) }).await;
        assert!(
            matches!(out.as_slice(), [Live::Entry(1), Live::Refused(_)]),
            "{out:?}"
        );
    }
}
