//! The live inbox: a subscription that verifies, resumes after reconnects
//! and proves inclusion beside delivery; and `process`, which acknowledges
//! what a handler took.

use super::Client;
use super::retry::{ATTEMPT_TIMEOUT, NextStep};
use crate::ClientError;
use crate::verify::VerifiedEntry;
use futures::{FutureExt, Stream};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tongbao_proto::pb;

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long a delivered entry may wait for its inclusion check, at most.
/// Each subscription waits a share of it of its own choosing, at least
/// three quarters, so that units served together (all sent the same
/// entries at the same moment) do not all ask for their proofs at once.
const INCLUSION_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Entries checked together, at most: as many as one call of proofs
/// covers, so that a busy subscription asks once a second, not once per
/// few hundred entries (each check also fetches and may save checkpoints).
const INCLUSION_BATCH: usize = tongbao_proto::merkle::MAX_LEAVES_PER_CALL;
/// Deliveries a subscription verifies together, at most: those that had
/// arrived when it turned to the stream.
const SUBSCRIPTION_BATCH: usize = 64;

/// Longest a subscription waits for a handshake that checks whether it
/// can resume.
const PROBE_WITHIN: Duration = Duration::from_secs(10);

/// A running inclusion check: its outcome and the entries it covered.
type InclusionProof = tokio::task::JoinHandle<(Result<(), ClientError>, InclusionBacklog)>;

/// Entries handed to a subscriber whose inclusion is not checked yet.
#[derive(Default)]
struct InclusionBacklog {
    entries: Vec<pb::EntryPin>,
    since: Option<std::time::Instant>,
}

impl InclusionBacklog {
    fn push(&mut self, e: pb::EntryPin) {
        self.since.get_or_insert_with(std::time::Instant::now);
        self.entries.push(e);
    }
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// When the oldest entry waiting is due for its check, checking every
    /// `every`.
    fn deadline(&self, every: Duration) -> tokio::time::Instant {
        let since = self.since.unwrap_or_else(std::time::Instant::now);
        (since + every).into()
    }
    /// Takes back entries whose check could not be completed.
    fn restore(&mut self, earlier: InclusionBacklog) {
        self.since = match (earlier.since, self.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut entries = earlier.entries;
        entries.append(&mut self.entries);
        self.entries = entries;
    }
    fn due(&self, every: Duration) -> bool {
        self.entries.len() >= INCLUSION_BATCH || self.since.is_some_and(|t| t.elapsed() >= every)
    }

    /// This subscription's wait before a check: between three quarters
    /// of [`INCLUSION_CHECK_EVERY`] and all of it.
    fn check_every() -> Duration {
        let mut byte = [0u8; 1];
        // Without randomness every subscription waits the longest.
        let share =
            match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte) {
                Ok(()) => 0.75 + f64::from(byte[0]) / 1024.0,
                Err(_) => 1.0,
            };
        INCLUSION_CHECK_EVERY.mul_f64(share)
    }
}

/// Why [`Client::process`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError<E> {
    /// The handler failed on this entry; it was not acknowledged.
    #[error("handler failed on entry {channel}:{seq}: {error}")]
    Handler { channel: String, seq: u64, error: E },
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Client {
    /// This client's inbox from `after`, then live. Reconnects with backoff
    /// and resumes from the last delivered cursor, so every entry arrives
    /// exactly once and in order. Ends with an error only when retrying
    /// cannot help (refused certificate, permission, failed verification).
    pub fn subscribe(
        &self,
        after: u64,
    ) -> impl Stream<Item = Result<VerifiedEntry, ClientError>> + Send + 'static + use<> {
        let (tx, rx) = mpsc::channel(64);
        let client = self.clone();
        tokio::spawn(async move { client.run_subscription(after, tx).await });
        ReceiverStream::new(rx)
    }

    /// Starts proving the inclusion of the entries handed over so far,
    /// beside the subscription: deliveries keep flowing while it runs.
    fn start_proof(&self, backlog: &mut InclusionBacklog) -> InclusionProof {
        let entries = std::mem::take(backlog);
        let client = self.clone();
        tokio::spawn(async move {
            let proved = client.prove_pins(&entries.entries).await;
            (proved, entries)
        })
    }

    /// Whether and how a subscription resumes after `e`; if it does not,
    /// the reason has been handed to the subscriber.
    async fn may_resume(&self, e: ClientError, generation: u64, tx: &Subscriber) -> Resume {
        // A replica that answers but will not serve the inbox now (a
        // standby gone stale, a hub that lost its database or cannot
        // confirm its inbox's end: UNAVAILABLE) is left for the next one
        // at once, as one that cannot be reached is; the subscription
        // resumes there from its cursor. Not a standby that stops to take
        // over: it is about to lead, and is asked again after the wait.
        if leaves_for_another_replica(&e)
            && self.live.hubs.len() > 1
            && self
                .live
                .fail_over(generation, &e, PROBE_WITHIN)
                .await
                .is_ok()
        {
            tracing::debug!(error = %e, hub = %self.hub(), "subscription refused; resuming on another replica");
            return Resume::Elsewhere;
        }
        let last = match self.worth_retrying(&e, generation, PROBE_WITHIN).await {
            Ok(NextStep::Retry | NextStep::HubUnreachable(_)) => {
                tracing::debug!(error = %e, "subscription interrupted; resuming");
                return Resume::AfterWait;
            }
            Ok(NextStep::GiveUp) => e,
            Err(refused) => refused,
        };
        let _ = tx.send(Err(last)).await;
        Resume::Stop
    }

    /// Runs a subscription from state to state until it is done.
    async fn run_subscription(self, cursor: u64, tx: Subscriber) {
        let mut run = Subscription {
            client: self,
            cursor,
            tx,
            backoff: FIRST_BACKOFF,
            failed_over: 0,
            unchecked: InclusionBacklog::default(),
            check_every: InclusionBacklog::check_every(),
            proving: None,
        };
        let mut state = State::Connecting;
        while !matches!(state, State::Done) {
            state = run.step(state).await;
        }
    }

    /// Runs `handler` on every entry of the inbox from `after`, live, and
    /// acknowledges each entry only after the handler returned `Ok`
    /// (receipts are batched: up to 256 entries, or whatever arrived
    /// within 50 ms). Stops at the first handler error, leaving that entry
    /// unacknowledged, or when the subscription fails for good.
    pub async fn process<F, Fut, E>(
        &self,
        after: u64,
        mut handler: F,
    ) -> Result<(), ProcessError<E>>
    where
        F: FnMut(VerifiedEntry) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
    {
        use futures::StreamExt;
        const BATCH: usize = 256;
        const LINGER: Duration = Duration::from_millis(50);
        let mut stream = Box::pin(self.subscribe(after));
        let mut pending: Vec<pb::EntryPin> = Vec::new();
        loop {
            let next = if pending.is_empty() {
                stream.next().await
            } else {
                match tokio::time::timeout(LINGER, stream.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        self.ack_pins(std::mem::take(&mut pending)).await?;
                        continue;
                    }
                }
            };
            let Some(entry) = next else {
                if !pending.is_empty() {
                    self.ack_pins(pending).await?;
                }
                return Ok(());
            };
            let entry = entry?;
            let pin = entry.pin();
            if let Err(error) = handler(entry).await {
                if !pending.is_empty() {
                    self.ack_pins(std::mem::take(&mut pending)).await?;
                }
                return Err(ProcessError::Handler {
                    channel: pin.channel,
                    seq: pin.seq,
                    error,
                });
            }
            pending.push(pin);
            if pending.len() >= BATCH {
                self.ack_pins(std::mem::take(&mut pending)).await?;
            }
        }
    }
}

/// How a subscription goes on after a failure.
#[derive(Debug, PartialEq, Eq)]
enum Resume {
    /// On the replica it failed over to, at once.
    Elsewhere,
    /// After the backoff.
    AfterWait,
    /// Not at all (the subscriber was told why).
    Stop,
}

/// Whether `e` sends a subscription to the next replica: an `UNAVAILABLE`
/// refusal or end, but a standby's end as it stops to take over (that
/// hub is about to lead).
fn leaves_for_another_replica(e: &ClientError) -> bool {
    match e {
        ClientError::Rejected { code, message } => {
            *code == tonic::Code::Unavailable && message != tongbao_proto::replica::STANDBY_ENDS
        }
        _ => e.code() == Some(tonic::Code::Unavailable),
    }
}

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`]
/// and starts over once a delivery arrives.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What a subscription hands to its subscriber.
type Subscriber = mpsc::Sender<Result<VerifiedEntry, ClientError>>;

/// One answer of the hub's stream: a delivery, its end, or its error.
type StreamItem = Result<Option<pb::Delivery>, tonic::Status>;

/// Where a subscription stands.
enum State {
    /// About to ask the hub for the inbox after the cursor.
    Connecting,
    /// Taking deliveries from an open stream.
    Streaming(Box<Open>),
    /// Waiting out the backoff before connecting again.
    Waiting,
    /// Over: the subscriber left, or retrying cannot help (it was told).
    Done,
}

/// An open stream of deliveries.
struct Open {
    stream: tonic::Streaming<pb::Delivery>,
    /// The connection generation the stream was opened on.
    generation: u64,
    /// The end of the stream or its error, met while taking what had
    /// already arrived; handled after those.
    held: Option<StreamItem>,
}

/// A running subscription: what lasts across states and reconnects.
struct Subscription {
    client: Client,
    /// The last position handed over.
    cursor: u64,
    tx: Subscriber,
    backoff: Duration,
    /// Replicas failed over to since the last delivery or wait: after a
    /// whole round of them refused, the backoff is waited out.
    failed_over: usize,
    /// Entries handed over whose inclusion is not checked yet.
    unchecked: InclusionBacklog,
    check_every: Duration,
    /// At most one inclusion check runs at a time; it outlives reconnects.
    proving: Option<InclusionProof>,
}

/// What can wake a subscription that streams.
// Lives on the stack from a wake to its handling, as the stream's answer
// did before: boxing it would cost an allocation per delivery.
#[allow(clippy::large_enum_variant)]
enum Woken {
    Delivery(StreamItem),
    SubscriberLeft,
    ProofDone(Result<(Result<(), ClientError>, InclusionBacklog), tokio::task::JoinError>),
    ProofDue,
}

impl Subscription {
    async fn step(&mut self, state: State) -> State {
        match state {
            State::Connecting => self.connect().await,
            State::Streaming(open) => self.stream(open).await,
            State::Waiting => self.wait().await,
            State::Done => State::Done,
        }
    }

    /// Opens the stream, waiting [`ATTEMPT_TIMEOUT`] at most for the hub's
    /// answer, as a read does: a hub that accepts connections but never
    /// answers is probed and, if silent, failed over from.
    async fn connect(&mut self) -> State {
        let generation = self.client.live.generation();
        let hub = self.client.hub();
        let opened = tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            self.client.rpc().subscribe(pb::SubscribeRequest {
                inbox: String::new(),
                after: self.cursor,
            }),
        )
        .await;
        match opened {
            Ok(Ok(response)) => State::Streaming(Box::new(Open {
                stream: response.into_inner(),
                generation,
                held: None,
            })),
            Ok(Err(status)) => self.interrupted(status.into(), generation).await,
            Err(_) => {
                let silent = ClientError::Connect {
                    hub,
                    reason: format!("no answer to the subscription within {ATTEMPT_TIMEOUT:?}"),
                };
                self.interrupted(silent, generation).await
            }
        }
    }

    /// Waits for the next thing to do while streaming, then does it.
    async fn stream(&mut self, mut open: Box<Open>) -> State {
        let woken = match open.held.take() {
            Some(item) => Woken::Delivery(item),
            None => self.wake(&mut open.stream).await,
        };
        match woken {
            Woken::Delivery(Ok(Some(d))) => self.deliver(d, open).await,
            Woken::Delivery(Ok(None)) => State::Waiting,
            Woken::Delivery(Err(status)) => self.interrupted(status.into(), open.generation).await,
            Woken::SubscriberLeft => State::Done,
            Woken::ProofDone(done) => {
                self.proving = None;
                let failed = match done {
                    Ok((Ok(()), _)) => return State::Streaming(open),
                    Ok((Err(e), entries)) => {
                        // A connection lost mid-proof proves nothing either
                        // way: the entries wait for the next attempt.
                        if e.is_transient() {
                            self.unchecked.restore(entries);
                        }
                        e
                    }
                    Err(e) => ClientError::Integrity {
                        channel: String::new(),
                        seq: 0,
                        reason: format!("the inclusion check stopped: {e}"),
                    },
                };
                self.interrupted(failed, open.generation).await
            }
            Woken::ProofDue => {
                self.proving = Some(self.client.start_proof(&mut self.unchecked));
                State::Streaming(open)
            }
        }
    }

    async fn wake(&mut self, stream: &mut tonic::Streaming<pb::Delivery>) -> Woken {
        let check_due = self.unchecked.deadline(self.check_every);
        let may_start = !self.unchecked.is_empty() && self.proving.is_none();
        let proving = &mut self.proving;
        tokio::select! {
            n = stream.message() => Woken::Delivery(n),
            _ = self.tx.closed() => Woken::SubscriberLeft,
            done = async {
                match proving.as_mut() {
                    Some(p) => p.await,
                    None => std::future::pending().await,
                }
            } => Woken::ProofDone(done),
            _ = tokio::time::sleep_until(check_due), if may_start => Woken::ProofDue,
        }
    }

    /// Verifies a delivery with whatever arrived behind it (the signatures
    /// in one batch) and hands the entries over.
    async fn deliver(&mut self, first: pb::Delivery, mut open: Box<Open>) -> State {
        self.backoff = FIRST_BACKOFF;
        self.failed_over = 0;
        let mut batch = vec![first];
        while batch.len() < SUBSCRIPTION_BATCH {
            match open.stream.message().now_or_never() {
                Some(Ok(Some(d))) => batch.push(d),
                Some(end) => {
                    open.held = Some(end);
                    break;
                }
                None => break,
            }
        }
        skip_delivered(&mut batch, self.cursor);
        let (verified, failed) = self.client.verify_deliveries(batch).await;
        for v in verified {
            self.cursor = v.cursor;
            if self.client.verify_inclusion {
                self.unchecked.push(v.pin());
            }
            if self.tx.send(Ok(v)).await.is_err() {
                return State::Done;
            }
        }
        if let Some(e) = failed {
            let _ = self.tx.send(Err(e)).await;
            return State::Done;
        }
        if self.unchecked.due(self.check_every) && self.proving.is_none() {
            self.proving = Some(self.client.start_proof(&mut self.unchecked));
        }
        State::Streaming(open)
    }

    /// After a failure: reconnect (to another replica at once, until a
    /// whole round of them refused), wait and reconnect, or stop (the
    /// subscriber told).
    async fn interrupted(&mut self, e: ClientError, generation: u64) -> State {
        let resume = self.client.may_resume(e, generation, &self.tx).await;
        after_failure(resume, &mut self.failed_over, self.client.live.hubs.len())
    }

    async fn wait(&mut self) -> State {
        tokio::select! {
            _ = tokio::time::sleep(self.backoff) => {}
            _ = self.tx.closed() => return State::Done,
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        State::Connecting
    }
}

/// The state after a failure resumed as `resume`, counting failovers in
/// `failed_over` against the `hubs` listed: straight to connecting after
/// a failover, unless every replica has refused since the last delivery
/// or wait (no busy loop between replicas that all refuse).
fn after_failure(resume: Resume, failed_over: &mut usize, hubs: usize) -> State {
    match resume {
        Resume::Elsewhere => {
            *failed_over += 1;
            if *failed_over < hubs {
                return State::Connecting;
            }
            *failed_over = 0;
            State::Waiting
        }
        Resume::AfterWait => {
            *failed_over = 0;
            State::Waiting
        }
        Resume::Stop => State::Done,
    }
}

/// Drops the deliveries at or below a position already handed over (the
/// overlap of a reconnect, or a hub repeating itself), each compared with
/// the last one kept, so that none is handed over twice or out of order.
fn skip_delivered(batch: &mut Vec<pb::Delivery>, after: u64) {
    let mut last = after;
    batch.retain(|d| {
        let fresh = d.cursor > last;
        if fresh {
            last = d.cursor;
        }
        fresh
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_position_repeated_or_out_of_order_is_not_handed_over() {
        let at = |cursors: &[u64]| -> Vec<pb::Delivery> {
            cursors
                .iter()
                .map(|&cursor| pb::Delivery {
                    cursor,
                    ..Default::default()
                })
                .collect()
        };
        let kept = |mut batch: Vec<pb::Delivery>, after| {
            skip_delivered(&mut batch, after);
            batch.iter().map(|d| d.cursor).collect::<Vec<_>>()
        };
        assert_eq!(kept(at(&[5, 6, 5, 7, 3]), 4), [5, 6, 7]);
        assert_eq!(kept(at(&[5, 6, 5, 7, 3]), 6), [7]);
        assert_eq!(kept(at(&[2, 3]), 3), Vec::<u64>::new());
    }

    #[test]
    fn a_standby_stopping_to_take_over_is_not_left_for_another_replica() {
        let rejected = |code, message: &str| ClientError::Rejected {
            code,
            message: message.into(),
        };
        let stopping = rejected(
            tonic::Code::Unavailable,
            tongbao_proto::replica::STANDBY_ENDS,
        );
        assert!(!leaves_for_another_replica(&stopping));
        let stale = rejected(
            tonic::Code::Unavailable,
            "standby replica behind the leader",
        );
        assert!(leaves_for_another_replica(&stale));
        let denied = rejected(tonic::Code::PermissionDenied, "not yours");
        assert!(!leaves_for_another_replica(&denied));
    }

    #[test]
    fn a_failover_connects_at_once_until_a_whole_round_refused() {
        let mut failed_over = 0;
        // Three replicas: the first two refusals move on at once.
        for _ in 0..2 {
            let next = after_failure(Resume::Elsewhere, &mut failed_over, 3);
            assert!(matches!(next, State::Connecting));
        }
        // The third closes the round: the backoff, then a new round.
        let next = after_failure(Resume::Elsewhere, &mut failed_over, 3);
        assert!(matches!(next, State::Waiting));
        let next = after_failure(Resume::Elsewhere, &mut failed_over, 3);
        assert!(matches!(next, State::Connecting));
        // A failure with no failover waits, and starts the round over.
        let next = after_failure(Resume::AfterWait, &mut failed_over, 3);
        assert!(matches!(next, State::Waiting));
        assert_eq!(failed_over, 0);
        assert!(matches!(
            after_failure(Resume::Stop, &mut failed_over, 3),
            State::Done
        ));
        // One hub listed never fails over; if it did, it would wait.
        let mut alone = 0;
        let next = after_failure(Resume::Elsewhere, &mut alone, 1);
        assert!(matches!(next, State::Waiting));
    }

    #[test]
    fn subscriptions_wait_for_their_inclusion_checks_apart() {
        let waits: std::collections::BTreeSet<Duration> =
            (0..32).map(|_| InclusionBacklog::check_every()).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= INCLUSION_CHECK_EVERY.mul_f64(0.75) && *w <= INCLUSION_CHECK_EVERY),
            "{waits:?}"
        );
        // 32 draws of 256 values: all alike would mean no spreading at all.
        assert!(waits.len() > 1, "{waits:?}");
    }
}
