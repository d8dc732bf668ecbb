//! The single writer of all channels, with pipelined group commit.
//!
//! Request handlers check identity and signatures in parallel, then hand the
//! verified message to this writer. It takes every request waiting in its
//! queue as one batch, assigns sequence numbers, resolves audiences against
//! the registry (membership *at append time*) and applies the batch to the
//! store atomically. A second thread makes applied batches durable (one
//! flush and fsync for every batch applied meanwhile) and only then answers
//! each push, advances the logs and wakes the subscribers of the touched
//! inboxes. So batch N+1 is checked and applied while batch N is fsync'd;
//! answers and wake-ups still come in batch order, each after its batch is
//! durable. What becomes of each request of a batch is decided in
//! the `batch` module, without the store.

use crate::channel_log::{ChannelHashes, Logs};
use crate::fatal::Poisoned;
use crate::inboxes::InboxWatch;
use crate::registry::{AudienceError, Registry};
use crate::store::{AnswerKind, ChannelHead, NewEntry, Store, StoreError, StoredEntry};
use batch::{Asked, BatchState, Draft, Known, Plan};
use prost::Message as _;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tongbao_proto::canonical::leaf_hash_with_digest;
use tongbao_proto::merkle::{MerkleError, stored_hashes_for_record};
use tongbao_proto::pb::Kind;
use tongbao_proto::{Hash, now_micros, pb};

mod batch;

fn kind_of(signed: &pb::SignedMessage) -> Option<Kind> {
    signed
        .message
        .as_ref()
        .and_then(|m| Kind::try_from(m.kind).ok())
}

/// The failure the syncer recorded, if any; a poisoned record is one.
fn earlier_failure(failed: &Mutex<Option<StorageFailure>>) -> Option<StorageFailure> {
    match crate::fatal::lock(failed, "sync failure") {
        Ok(f) => f.clone(),
        Err(e) => Some(StorageFailure::Poisoned(e)),
    }
}

/// Most pushes one flush carries.
const MAX_BATCH: usize = 4096;
/// Queue depth before pushes wait for room (backpressure on clients).
const QUEUE_DEPTH: usize = 8192;
/// Bytes of messages waiting for the writer, at most (in KiB): bounds hub
/// memory whatever the message sizes.
const QUEUE_BUDGET_KIB: usize = 256 * 1024;

/// A verified message waiting to be appended.
pub struct AppendRequest {
    pub sender: String,
    pub signed: pb::SignedMessage,
    pub digest: Hash,
    /// Entries this message answers (receipt or exception feedback), already
    /// checked: the sender is their recipient and the leaf hashes match.
    pub answers: Vec<Answered>,
    pub answer_kind: AnswerKind,
    pub reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// An entry a receipt or exception feedback answers, with its position in
/// the answering unit's inbox (where the answer is recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub channel: String,
    pub seq: u64,
    pub cursor: u64,
}

/// The durable answer to a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub channel: String,
    pub seq: u64,
    pub leaf_hash: Hash,
    pub recipients: Vec<String>,
    /// The message id was already appended; nothing new was written.
    pub duplicate: bool,
    /// Answered entries that had been answered before.
    pub earlier: Vec<EarlierAnswer>,
}

/// An entry a message answers that was answered before, and by what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierAnswer {
    /// The answered entry.
    pub channel: String,
    pub seq: u64,
    /// The seq of the earlier answer in the answering unit's channel.
    pub answered_by: u64,
}

/// Why the writer could not append: the store failed, or the writer's own
/// machinery did. After most of these the writer refuses every later
/// write, each refusal naming the first failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageFailure {
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The Merkle hashes a new entry adds could not be computed.
    #[error(transparent)]
    TreeHashes(MerkleError),
    #[error("idempotency record points to missing entry {sender}:{seq}")]
    MissingEntry { sender: String, seq: u64 },
    /// One of the writer's locks (named) was poisoned: the hub is stopping.
    #[error(transparent)]
    Poisoned(Poisoned),
    #[error("the sync thread stopped")]
    SyncStopped,
    /// A batch's answers did not line up with its requests (a bug).
    #[error("lost batch answer")]
    LostAnswer,
}

impl StorageFailure {
    /// The poisoned lock behind this failure, if that is what it is.
    pub fn poisoned(&self) -> Option<Poisoned> {
        match self {
            Self::Poisoned(p) => Some(*p),
            Self::Store(e) => match e.as_ref() {
                StoreError::Poisoned(p) => Some(*p),
                _ => None,
            },
            _ => None,
        }
    }
}

impl From<StoreError> for StorageFailure {
    fn from(e: StoreError) -> Self {
        Self::Store(Arc::new(e))
    }
}

/// Why an append was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Audience(#[from] AudienceError),
    #[error(
        "message id {message_id:?} was already used by {sender} for different content (entry {sender}:{seq}); choose a new id for new content"
    )]
    IdReused {
        sender: String,
        message_id: String,
        seq: u64,
    },
    #[error("unit {0} is not in the registry")]
    UnknownSender(String),
    #[error("storage failed; the hub accepts no more writes until it is restarted: {0}")]
    Storage(StorageFailure),
    #[error("the hub is shutting down")]
    Closed,
    /// Every entry it answers had been answered before: nothing appended.
    #[error("every entry named was answered before (first: {}:{} by entry {}:{})", .earlier.first().map(|e| e.channel.as_str()).unwrap_or(""), .earlier.first().map(|e| e.seq).unwrap_or(0), .sender, .earlier.first().map(|e| e.answered_by).unwrap_or(0))]
    AlreadyAnswered {
        sender: String,
        earlier: Vec<EarlierAnswer>,
    },
}

impl AppendError {
    /// Whether the message was refused, so that it is certainly not in
    /// the log (a storage failure or a stop leaves that open).
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Audience(_)
            | Self::IdReused { .. }
            | Self::UnknownSender(_)
            | Self::AlreadyAnswered { .. } => true,
            Self::Storage(_) | Self::Closed => false,
        }
    }
}

/// Counters for benchmarks and operators.
#[derive(Debug, Default)]
pub struct AppendStats {
    pub batches: AtomicU64,
    pub appended: AtomicU64,
    pub duplicates: AtomicU64,
    pub largest_batch: AtomicU64,
    pub commit_nanos: AtomicU64,
    /// Group-commit and fsync latencies, for the metrics.
    pub commits: crate::metrics::CommitTimes,
}

impl AppendStats {
    /// Pushes appended per durable flush so far.
    pub fn mean_batch(&self) -> f64 {
        let b = self.batches.load(Ordering::Relaxed);
        if b == 0 {
            0.0
        } else {
            self.appended.load(Ordering::Relaxed) as f64 / b as f64
        }
    }
}

/// Handle for submitting appends.
#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<AppendRequest>,
    budget: Arc<tokio::sync::Semaphore>,
    pub stats: Arc<AppendStats>,
}

impl Appender {
    /// Starts the writer thread over a store whose heads it reads once.
    pub fn start(
        store: Arc<dyn Store>,
        registry: Arc<RwLock<Registry>>,
        inboxes: Arc<InboxWatch>,
        logs: Arc<Logs>,
    ) -> Result<(Self, std::thread::JoinHandle<()>), StoreError> {
        let heads = store.channel_heads()?;
        let inbox_heads = store.inbox_heads()?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(AppendStats::default());
        let sync_failed = Arc::new(Mutex::new(None));
        let (durable_tx, durable_rx) = std::sync::mpsc::sync_channel(SYNC_QUEUE);
        let syncer = Syncer {
            store: store.clone(),
            inboxes,
            logs,
            stats: stats.clone(),
            failed: sync_failed.clone(),
        };
        let syncer = std::thread::Builder::new()
            .name("tongbao-sync".into())
            .spawn(move || syncer.run(durable_rx))?;
        let writer = Writer {
            store,
            registry,
            heads,
            inbox_heads,
            failed: None,
            sync_failed,
            durable_tx,
        };
        let handle = std::thread::Builder::new()
            .name("tongbao-appender".into())
            .spawn(move || {
                writer.run(rx);
                // The writer dropped its end: the syncer answers what is left, then stops.
                let _ = syncer.join();
            })?;
        let budget = Arc::new(tokio::sync::Semaphore::new(QUEUE_BUDGET_KIB));
        Ok((Self { tx, budget, stats }, handle))
    }

    /// Appends a verified message; resolves once it is durable.
    pub async fn append(
        &self,
        sender: String,
        signed: pb::SignedMessage,
        digest: Hash,
    ) -> Result<Appended, AppendError> {
        self.append_answer(sender, signed, digest, Vec::new(), AnswerKind::Acknowledged)
            .await
    }

    /// Appends a message that answers entries (a receipt or exception
    /// feedback) and records the answers in the same atomic commit.
    pub async fn append_answer(
        &self,
        sender: String,
        signed: pb::SignedMessage,
        digest: Hash,
        answers: Vec<Answered>,
        answer_kind: AnswerKind,
    ) -> Result<Appended, AppendError> {
        let signed = detach_body(signed);
        let kib = (prost::Message::encoded_len(&signed) / 1024 + 1).min(QUEUE_BUDGET_KIB);
        let _room = self
            .budget
            .acquire_many(u32::try_from(kib).unwrap_or(u32::MAX))
            .await
            .map_err(|_| AppendError::Closed)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(AppendRequest {
                sender,
                signed,
                digest,
                answers,
                answer_kind,
                reply,
            })
            .await
            .map_err(|_| AppendError::Closed)?;
        rx.await.map_err(|_| AppendError::Closed)?
    }
}

/// Applied batches that may wait for the syncer: enough to keep the writer
/// busy during one fsync without holding many answers back.
const SYNC_QUEUE: usize = 4;

struct Writer {
    store: Arc<dyn Store>,
    registry: Arc<RwLock<Registry>>,
    /// Channel and inbox tips including applied, not yet durable batches.
    heads: BTreeMap<String, ChannelHead>,
    inbox_heads: BTreeMap<String, u64>,
    failed: Option<StorageFailure>,
    /// Set by the syncer when making a batch durable failed.
    sync_failed: Arc<Mutex<Option<StorageFailure>>>,
    durable_tx: std::sync::mpsc::SyncSender<Applied>,
}

/// A batch applied to the store, waiting to be durable before anyone hears
/// of it.
struct Applied {
    outcomes: Vec<Outcome>,
    replies: Vec<oneshot::Sender<Result<Appended, AppendError>>>,
    results: Vec<Appended>,
    new_entries: Vec<NewEntry>,
    heads: HashMap<String, ChannelHead>,
    inbox_heads: HashMap<String, u64>,
    applied: Result<(), StorageFailure>,
    started: Instant,
}

/// Makes applied batches durable, then answers and publishes them.
struct Syncer {
    store: Arc<dyn Store>,
    inboxes: Arc<InboxWatch>,
    logs: Arc<Logs>,
    stats: Arc<AppendStats>,
    failed: Arc<Mutex<Option<StorageFailure>>>,
}

/// What becomes of one request of a batch.
enum Outcome {
    Append(usize),
    Answer(Result<Appended, AppendError>),
    /// Same message id as the appended request `first` of this batch;
    /// `digest` is this one's content.
    SameAs {
        first: usize,
        digest: Hash,
    },
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<AppendRequest>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.process(batch);
        }
    }

    fn process(&mut self, batch: Vec<AppendRequest>) {
        if self.failed.is_none() {
            self.failed = earlier_failure(&self.sync_failed);
        }
        if let Some(reason) = &self.failed {
            for r in batch {
                let _ = r.reply.send(Err(AppendError::Storage(reason.clone())));
            }
            return;
        }
        let started = Instant::now();
        let registry_lock = self.registry.clone();
        let registry = match crate::fatal::read(&registry_lock, "registry") {
            Ok(r) => r,
            Err(e) => {
                self.failed = Some(StorageFailure::Poisoned(e));
                return self.process(batch);
            }
        };
        let mut state = BatchState::new(&self.heads, &self.inbox_heads);
        let mut new_entries: Vec<NewEntry> = Vec::new();
        let mut results: Vec<Appended> = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let now = now_micros();
        let known = known_of(self.store.as_ref(), &batch);

        for (req, known) in batch.into_iter().zip(known) {
            let AppendRequest {
                sender,
                signed,
                digest,
                answers,
                answer_kind,
                reply,
            } = req;
            replies.push(reply);
            let message_id = signed.message_id().to_string();
            let audience = signed
                .message
                .as_ref()
                .and_then(|m| m.audience.clone())
                .unwrap_or_default();
            let asked = Asked {
                sender: &sender,
                message_id: &message_id,
                digest,
                kind: kind_of(&signed),
                audience: &audience,
                answers: &answers,
            };
            let draft = match state.plan(&asked, known, &registry, now) {
                Plan::Refuse(e) => {
                    outcomes.push(Outcome::Answer(Err(e)));
                    continue;
                }
                Plan::StoredDuplicate { seq } => {
                    outcomes.push(Outcome::Answer(self.stored_duplicate(&sender, seq)));
                    continue;
                }
                Plan::SameAs { first, digest } => {
                    outcomes.push(Outcome::SameAs { first, digest });
                    continue;
                }
                Plan::Append(draft) => draft,
            };
            match self.entry_for(&mut state, &asked, draft, signed, answer_kind) {
                Ok((index, appended, entry)) => {
                    outcomes.push(Outcome::Append(index));
                    results.push(appended);
                    new_entries.push(entry);
                }
                Err(e) => outcomes.push(Outcome::Answer(Err(e))),
            }
        }
        let BatchState {
            heads, inbox_heads, ..
        } = state;

        drop(registry);
        let applied = if new_entries.is_empty() {
            Ok(())
        } else {
            self.store.apply(&new_entries).map_err(StorageFailure::from)
        };
        match &applied {
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; refusing further writes");
                self.failed = Some(e.clone());
            }
            Ok(()) => {
                // The writer builds on its own batches at once; everyone
                // else hears of them once they are durable.
                self.heads
                    .extend(heads.iter().map(|(k, v)| (k.clone(), *v)));
                self.inbox_heads
                    .extend(inbox_heads.iter().map(|(k, v)| (k.clone(), *v)));
            }
        }
        let batch = Applied {
            outcomes,
            replies,
            results,
            new_entries,
            heads,
            inbox_heads,
            applied,
            started,
        };
        if let Err(std::sync::mpsc::SendError(batch)) = self.durable_tx.send(batch) {
            self.failed = Some(StorageFailure::SyncStopped);
            for reply in batch.replies {
                let _ = reply.send(Err(AppendError::Closed));
            }
        }
    }

    /// Builds the entry `draft` plans, with its hashes, and admits it to
    /// the batch: its admission index, the push's answer and the entry.
    fn entry_for(
        &self,
        state: &mut BatchState<'_>,
        asked: &Asked<'_>,
        draft: Draft,
        signed: pb::SignedMessage,
        answer_kind: AnswerKind,
    ) -> Result<(usize, Appended, NewEntry), AppendError> {
        let sender = asked.sender;
        let entry = pb::Entry {
            channel: sender.to_string(),
            seq: draft.seq,
            hub_micros: draft.hub_micros,
            recipients: draft.recipients.clone(),
            previous_leaf_hash: draft.previous_leaf_hash.to_vec(),
            message: Some(signed),
        };
        let leaf_hash = leaf_hash_with_digest(&entry, &asked.digest);
        let tree_hashes = stored_hashes_for_record(
            entry.seq,
            leaf_hash,
            &ChannelHashes {
                store: self.store.as_ref(),
                channel: sender,
                pending: state.pending_hashes(sender),
            },
        )
        .map_err(|e| AppendError::Storage(StorageFailure::TreeHashes(e)))?;
        let (index, cursors) = state.admit(asked, &draft, leaf_hash, &tree_hashes);
        let Draft {
            seq,
            hub_micros,
            recipients,
            fresh,
            earlier,
            audit_scopes,
            ..
        } = draft;
        let appended = Appended {
            channel: sender.to_string(),
            seq,
            leaf_hash,
            recipients,
            duplicate: false,
            earlier,
        };
        let new_entry = NewEntry {
            channel: sender.to_string(),
            seq,
            message_id: asked.message_id.to_string(),
            message_digest: asked.digest,
            leaf_hash,
            hub_micros,
            shared: Arc::new(StoredEntry {
                encoded: entry.encode_to_vec().into(),
                entry,
                leaf_hash,
                cursors,
            }),
            answers: fresh,
            answer_kind,
            audit_scopes,
            tree_hashes,
        };
        Ok((index, appended, new_entry))
    }

    /// The answer to a message id that an earlier batch appended as
    /// `sender`'s entry `seq`.
    fn stored_duplicate(&self, sender: &str, seq: u64) -> Result<Appended, AppendError> {
        let stored = self
            .store
            .entry(sender, seq)
            .map_err(|e| AppendError::Storage(e.into()))?
            .ok_or_else(|| {
                AppendError::Storage(StorageFailure::MissingEntry {
                    sender: sender.to_string(),
                    seq,
                })
            })?;
        Ok(Appended {
            channel: sender.to_string(),
            seq,
            leaf_hash: stored.leaf_hash,
            recipients: stored.entry.recipients,
            duplicate: true,
            earlier: Vec::new(),
        })
    }
}

impl Syncer {
    fn run(self, rx: std::sync::mpsc::Receiver<Applied>) {
        while let Ok(first) = rx.recv() {
            // One fsync covers every batch applied so far.
            let mut group = vec![first];
            while let Ok(more) = rx.try_recv() {
                group.push(more);
            }
            let earlier_failure = earlier_failure(&self.failed);
            let needs_sync = group
                .iter()
                .any(|b| b.applied.is_ok() && !b.new_entries.is_empty());
            // Batches without new entries are synced too: a duplicate's
            // original may sit in a batch applied just before.
            let synced = match earlier_failure {
                Some(reason) => Err(reason),
                None if needs_sync
                    || group.iter().any(|b| {
                        b.outcomes
                            .iter()
                            .any(|o| matches!(o, Outcome::Answer(Ok(_))))
                    }) =>
                {
                    crate::failpoint::pause("before-sync");
                    let fsync = std::time::Instant::now();
                    let synced = self.store.sync().map_err(StorageFailure::from);
                    let commits = &self.stats.commits;
                    commits.fsync_seconds.observe(fsync.elapsed().as_secs_f64());
                    let entries: usize = group.iter().map(|b| b.new_entries.len()).sum();
                    commits.group_entries.observe(entries as f64);
                    synced
                }
                None => Ok(()),
            };
            if let Err(e) = &synced {
                tracing::error!(error = %e, "making a group commit durable failed; refusing further writes");
                // A poisoned record is reported by the lock itself: the hub stops.
                if let Ok(mut f) = crate::fatal::lock(&self.failed, "sync failure") {
                    f.get_or_insert_with(|| e.clone());
                }
            }
            for batch in group {
                self.finish(batch, &synced);
            }
        }
    }

    fn finish(&self, batch: Applied, synced: &Result<(), StorageFailure>) {
        let Applied {
            outcomes,
            replies,
            results,
            new_entries,
            heads,
            inbox_heads,
            applied,
            started,
        } = batch;
        let committed = applied.and(synced.clone());
        if committed.is_err() && !new_entries.is_empty() {
            self.inboxes.commit_failed();
        }
        if committed.is_ok() && !new_entries.is_empty() {
            // A poisoned lock here is reported by it (the hub stops); the
            // batch is durable, so its pushes are still answered.
            for (channel, head) in &heads {
                let _ = self.logs.advance(channel, head.next_seq);
            }
            for (inbox, cursor) in &inbox_heads {
                let _ = self.inboxes.publish(inbox, *cursor);
            }
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats
                .appended
                .fetch_add(new_entries.len() as u64, Ordering::Relaxed);
            self.stats
                .largest_batch
                .fetch_max(new_entries.len() as u64, Ordering::Relaxed);
            let took = started.elapsed();
            self.stats
                .commit_nanos
                .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
            self.stats.commits.group_seconds.observe(took.as_secs_f64());
        }

        for (outcome, reply) in outcomes.into_iter().zip(replies) {
            let answer = match (&committed, outcome) {
                (_, Outcome::Answer(Err(refused))) => Err(refused),
                (Err(e), _) => Err(AppendError::Storage(e.clone())),
                (Ok(()), Outcome::Answer(earlier)) => {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    earlier
                }
                (Ok(()), Outcome::Append(i)) => results
                    .get(i)
                    .cloned()
                    .ok_or(AppendError::Storage(StorageFailure::LostAnswer)),
                (Ok(()), Outcome::SameAs { first: i, digest }) => match results.get(i) {
                    Some(first) if new_entries.get(i).map(|e| e.message_digest) == Some(digest) => {
                        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                        Ok(Appended {
                            duplicate: true,
                            ..first.clone()
                        })
                    }
                    Some(first) => Err(AppendError::IdReused {
                        sender: first.channel.clone(),
                        message_id: new_entries
                            .get(i)
                            .map(|e| e.message_id.clone())
                            .unwrap_or_default(),
                        seq: first.seq,
                    }),
                    None => Err(AppendError::Storage(StorageFailure::LostAnswer)),
                },
            };
            let _ = reply.send(answer);
        }
    }
}

/// What the store knows of every request of a batch, looked up before
/// planning so that planning needs no store: asked together (one round
/// trip each on a database server, where one per push kept the writer
/// waiting); if that fails, each request asks alone and meets its own
/// error, as before, unless the store is unavailable ([`asks_alone`]).
/// The store does not change meanwhile: only this writer appends, after
/// planning.
fn known_of(store: &dyn Store, batch: &[AppendRequest]) -> Vec<Known> {
    let ids: Vec<(&str, &str)> = batch
        .iter()
        .map(|r| (r.sender.as_str(), r.signed.message_id()))
        .collect();
    let cursors: Vec<Vec<u64>> = batch
        .iter()
        .map(|r| r.answers.iter().map(|a| a.cursor).collect())
        .collect();
    let asked: Vec<(&str, &[u64])> = batch
        .iter()
        .zip(&cursors)
        .map(|(r, c)| (r.sender.as_str(), c.as_slice()))
        .collect();
    let combined = store
        .messages(&ids)
        .and_then(|stored| Ok((stored, store.answers_of(&asked)?)));
    match combined {
        Ok((stored, answers)) if stored.len() == batch.len() && answers.len() == batch.len() => {
            return stored
                .into_iter()
                .zip(answers)
                .map(|(stored, answers)| Known {
                    stored: Ok(stored),
                    answers: Ok(answers),
                })
                .collect();
        }
        Err(e) => {
            if let Some(known) = unavailable_all(&e, batch.len()) {
                return known;
            }
        }
        Ok(_) => {}
    }
    ids.iter()
        .zip(&asked)
        .map(|((sender, message_id), (_, cursors))| Known {
            stored: store.message(sender, message_id),
            answers: store.answers(sender, cursors),
        })
        .collect()
}

/// What every request of a batch meets when the batch's combined look-up
/// failed with `e`, if they are not to ask alone: an unavailable store (a
/// database that did not answer within the call's bound) would make each
/// request's own calls wait as long again, one after another on the
/// single writer. Other failures (None) are each request's to meet.
fn unavailable_all(e: &StoreError, requests: usize) -> Option<Vec<Known>> {
    let StoreError::Unavailable(why) = e else {
        return None;
    };
    let unavailable = || StoreError::Unavailable(why.clone());
    Some(
        (0..requests)
            .map(|_| Known {
                stored: Err(unavailable()),
                answers: Err(unavailable()),
            })
            .collect(),
    )
}

/// A pushed body is decoded as a view of the request's receive buffer. The
/// append queue (whose budget counts the message, not the buffer) and the
/// entry cache after it must not keep whole receive buffers (8 KiB or more
/// for one `Push`) alive, so the body is copied before the message queues,
/// on the request's task rather than the single writer.
fn detach_body(mut signed: pb::SignedMessage) -> pb::SignedMessage {
    if let Some(m) = signed.message.as_mut() {
        m.body = prost::bytes::Bytes::copy_from_slice(&m.body);
    }
    signed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database that did not answer the batch's look-up is not asked
    /// again once per request (each would wait out the call's bound on
    /// the single writer): every request meets the same UNAVAILABLE.
    /// Any other failure is left to each request to meet.
    #[test]
    fn an_unavailable_store_is_not_asked_again_per_request() {
        let why = "the database did not answer within 30 s";
        let known = unavailable_all(&StoreError::Unavailable(why.into()), 3);
        let known = known.unwrap_or_default();
        assert_eq!(known.len(), 3);
        for k in &known {
            assert!(matches!(&k.stored, Err(StoreError::Unavailable(m)) if m == why));
            assert!(matches!(&k.answers, Err(StoreError::Unavailable(m)) if m == why));
        }
        let refused = StoreError::Database("a malformed row".into());
        assert!(unavailable_all(&refused, 3).is_none());
    }

    #[test]
    fn a_kept_body_does_not_hold_the_buffer_it_arrived_in() {
        let received = prost::bytes::Bytes::from(vec![7u8; 8192]);
        let signed = pb::SignedMessage {
            message: Some(pb::Message {
                body: received.slice(100..1124),
                ..Default::default()
            }),
            signature: None,
        };
        let kept = detach_body(signed);
        let body = kept.message.map(|m| m.body).unwrap_or_default();
        assert_eq!(body.as_ref(), &received[100..1124]);
        let buffer = received.as_ptr_range();
        assert!(
            !buffer.contains(&body.as_ptr()),
            "the body still points into the receive buffer"
        );
    }
}
