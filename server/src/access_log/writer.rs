//! The access log's single writer thread, with group commit.
//!
//! Calls hand their records over and go on; the writer takes every record
//! waiting at once, appends them to the current segment and their hashes
//! to `tree.hashes`, and syncs the segment when a waiting record asks for it (a
//! write call, answered only after its record is durable: it wakes the
//! writer at once) or when the oldest unsynced record is 750 ms old (reads:
//! the writer takes them every 250 ms without being woken, so a burst of
//! reads costs a few rounds a second, not one each). One sync serves every
//! record taken with it, so load costs fewer syncs, not more. The tree
//! file is synced less often (see [`Writer::sync`]). Once a
//! second, when the log grew and all of it is durable, it syncs the tree
//! and signs a checkpoint; at start and hourly it removes segments past
//! retention.

use super::check::{Scanned, SegmentState};
use super::files::{self, SegmentName, TreeFile, day_of};
use super::record::{AccessRecord, RecordKind, RemovedSegment, leaf_of_line};
use super::{AccessLogConfig, AccessLogError, Frontier};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tongbao_proto::checkpoint::{Checkpoint, NoteSigner, NoteVerifier, sign_checkpoint};
use tongbao_proto::keys::SigningKey;
use tongbao_proto::merkle::{stored_hash_count, tree_hash};

/// A read's record is synced once it has waited this long; with the
/// writer's rounds [`POLL`] apart, it is durable within a second.
const SYNC_AFTER: Duration = Duration::from_millis(750);
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

/// What the writer starts from.
pub struct Setup {
    pub dir: PathBuf,
    pub scanned: Scanned,
    pub signer: Signer,
    pub config: AccessLogConfig,
    pub fsync: bool,
    pub clock_offset_micros: i64,
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
    pub fn start(setup: Setup) -> Result<Self, AccessLogError> {
        Self::spawn(Writer::repair(setup)?)
    }

    /// Starts the writer thread running `writer`'s rounds.
    pub(super) fn spawn(writer: impl Rounds) -> Result<Self, AccessLogError> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
            why: Mutex::default(),
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

/// The segment records go to now.
struct OpenSegment {
    day: String,
    file: BufWriter<File>,
    count: u64,
}

struct Writer {
    dir: PathBuf,
    size: u64,
    frontier: Frontier,
    /// Every segment on disk, in order; the last is `current` when open.
    segments: Vec<SegmentState>,
    current: Option<OpenSegment>,
    tree: BufWriter<File>,
    signer: Signer,
    signed_size: u64,
    last_signed: Instant,
    unsynced_since: Option<Instant>,
    last_retained: Option<Instant>,
    config: AccessLogConfig,
    fsync: bool,
    clock_offset_micros: i64,
}

impl Writer {
    /// Takes the checked log and repairs what a crash cut short: a torn
    /// last record, hashes of records that were never whole, hashes not
    /// yet written, an empty last segment, an unfinished removal.
    fn repair(setup: Setup) -> Result<Self, AccessLogError> {
        let Setup {
            dir,
            mut scanned,
            signer,
            config,
            fsync,
            clock_offset_micros,
        } = setup;
        if let Some((path, len)) = &scanned.torn_tail {
            tracing::warn!(segment = %path.display(), "cutting off a torn last record of the access log");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| AccessLogError::io(path, e))?;
            f.set_len(*len)
                .and_then(|()| f.sync_data())
                .map_err(|e| AccessLogError::io(path, e))?;
        }
        if scanned.segments.last().is_some_and(|s| s.count == 0)
            && let Some(empty) = scanned.segments.pop()
        {
            std::fs::remove_file(&empty.path).map_err(|e| AccessLogError::io(&empty.path, e))?;
        }
        for path in &scanned.unfinished_removals {
            tracing::warn!(segment = %path.display(), "finishing an interrupted retention removal");
            std::fs::remove_file(path).map_err(|e| AccessLogError::io(path, e))?;
            scanned.segments.retain(|s| &s.path != path);
        }
        files::sync_dir(&dir).map_err(|e| AccessLogError::io(&dir, e))?;
        let tree_path = dir.join(files::TREE_FILE);
        let tree = files::open_append(&tree_path).map_err(|e| AccessLogError::io(&tree_path, e))?;
        let whole = stored_hash_count(scanned.hashed) * tongbao_proto::HASH_LEN as u64;
        let on_disk = tree
            .metadata()
            .map_err(|e| AccessLogError::io(&tree_path, e))?
            .len();
        if on_disk != whole {
            tree.set_len(whole)
                .map_err(|e| AccessLogError::io(&tree_path, e))?;
        }
        let mut tree = BufWriter::with_capacity(1 << 16, tree);
        for h in &scanned.unhashed {
            tree.write_all(h)
                .map_err(|e| AccessLogError::io(&tree_path, e))?;
        }
        tree.flush()
            .and_then(|()| tree.get_ref().sync_data())
            .map_err(|e| AccessLogError::io(&tree_path, e))?;
        let signed_size = scanned.checkpoint.as_ref().map_or(0, |(c, _)| c.size);
        Ok(Self {
            dir,
            size: scanned.size,
            frontier: scanned.frontier,
            segments: scanned.segments,
            current: None,
            tree,
            signer,
            signed_size,
            last_signed: Instant::now(),
            unsynced_since: None,
            last_retained: None,
            config,
            fsync,
            clock_offset_micros,
        })
    }

    fn now_micros(&self) -> i64 {
        tongbao_proto::now_micros().saturating_add(self.clock_offset_micros)
    }

    fn io(&self, what: &str, e: std::io::Error) -> AccessLogError {
        AccessLogError::io(&self.dir.join(what), e)
    }

    /// Appends a record handed over at `since` (its sync falls due from then).
    fn append(&mut self, record: AccessRecord, since: Instant) -> Result<(), AccessLogError> {
        let mut record = record.bounded();
        record.n = self.size;
        let day = day_of(record.at_micros);
        let rotate = self
            .current
            .as_ref()
            .is_none_or(|s| s.day != day || s.count >= self.config.segment_records);
        if rotate {
            self.open_segment(day)?;
        }
        let mut line = record
            .to_line()
            .map_err(|e| AccessLogError::Closed(format!("cannot encode a record: {e}")))?;
        let leaf = leaf_of_line(&line);
        line.push('\n');
        let hashes = self.frontier.append(leaf)?;
        let Some(segment) = self.current.as_mut() else {
            return Err(AccessLogError::Closed("no open segment".into()));
        };
        segment
            .file
            .write_all(line.as_bytes())
            .map_err(|e| AccessLogError::io(&self.dir, e))?;
        segment.count += 1;
        for h in &hashes {
            self.tree
                .write_all(h)
                .map_err(|e| AccessLogError::io(&self.dir.join(files::TREE_FILE), e))?;
        }
        if let Some(s) = self.segments.last_mut() {
            s.count += 1;
            s.last_at = Some(record.at_micros);
        }
        self.size += 1;
        self.unsynced_since = Some(self.unsynced_since.map_or(since, |s| s.min(since)));
        Ok(())
    }

    /// Ends the current segment (durably) and begins one at the next record.
    fn open_segment(&mut self, day: String) -> Result<(), AccessLogError> {
        if self.current.is_some() {
            self.sync()?;
        }
        let name = SegmentName {
            first: self.size,
            day: day.clone(),
        };
        let path = self.dir.join(name.file_name());
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| AccessLogError::io(&path, e))?
        };
        files::sync_dir(&self.dir).map_err(|e| AccessLogError::io(&self.dir, e))?;
        self.segments.push(SegmentState {
            name,
            path,
            count: 0,
            last_at: None,
        });
        self.current = Some(OpenSegment {
            day,
            file: BufWriter::with_capacity(1 << 16, file),
            count: 0,
        });
        Ok(())
    }

    /// Hands what is buffered to the OS (readers see it), without a sync.
    fn flush(&mut self) -> Result<(), AccessLogError> {
        if let Some(s) = self.current.as_mut() {
            s.file
                .flush()
                .map_err(|e| AccessLogError::io(&self.dir, e))?;
        }
        self.tree.flush().map_err(|e| self.io(files::TREE_FILE, e))
    }

    /// Makes every record appended so far durable. Their hashes are not
    /// synced with them: a start recomputes the hashes of durable records
    /// that a crash cut off the tree file (`check`, "unhashed"), so one
    /// sync a round serves. The tree is synced where the records alone
    /// would not do ([`Writer::sync_tree`]).
    fn sync(&mut self) -> Result<(), AccessLogError> {
        self.flush()?;
        if self.fsync
            && let Some(s) = self.current.as_ref()
        {
            s.file
                .get_ref()
                .sync_data()
                .map_err(|e| AccessLogError::io(&self.dir, e))?;
        }
        self.unsynced_since = None;
        Ok(())
    }

    /// Makes the tree's hashes durable: before a checkpoint is signed over
    /// them (the start check reads the checkpoint's tree from the file),
    /// before a segment is removed (its records' hashes then stand alone)
    /// and at a stop.
    fn sync_tree(&mut self) -> Result<(), AccessLogError> {
        self.tree
            .flush()
            .map_err(|e| self.io(files::TREE_FILE, e))?;
        if self.fsync {
            self.tree
                .get_ref()
                .sync_data()
                .map_err(|e| self.io(files::TREE_FILE, e))?;
        }
        Ok(())
    }

    /// Signs and stores a checkpoint of everything durable.
    fn sign(&mut self) -> Result<(), AccessLogError> {
        self.sync_tree()?;
        let note = self.signer.sign(self.size, self.frontier.root()?)?;
        let path = self.dir.join(files::CHECKPOINT_FILE);
        tongbao_proto::secret_file::replace(&path, note.as_bytes())
            .map_err(|e| AccessLogError::io(&path, e))?;
        self.signed_size = self.size;
        self.last_signed = Instant::now();
        Ok(())
    }

    /// Removes the oldest segments whose last record is past retention,
    /// each after a durable removal record naming it. Never the segment
    /// being written, and only from the front, so the removed records are
    /// always the first ones.
    fn retain(&mut self) -> Result<(), AccessLogError> {
        self.last_retained = Some(Instant::now());
        let cutoff = self
            .now_micros()
            .saturating_sub(i64::from(self.config.retention_days) * 86_400_000_000);
        loop {
            let closed = self.segments.len() - usize::from(self.current.is_some());
            let Some(oldest) = self.segments.first().filter(|_| closed > 0).cloned() else {
                return Ok(());
            };
            if oldest.last_at.is_some_and(|t| t >= cutoff) {
                return Ok(());
            }
            self.flush()?;
            let tree_path = self.dir.join(files::TREE_FILE);
            let end = oldest.name.first + oldest.count;
            let tree = TreeFile::open(&tree_path).map_err(|e| AccessLogError::io(&tree_path, e))?;
            let root = hex::encode(tree_hash(end, &tree)?);
            let segment = oldest.name.file_name();
            let removal = AccessRecord {
                at_micros: self.now_micros(),
                kind: RecordKind::Removal,
                method: "retention".into(),
                message: format!(
                    "removed segment {segment}: records {}..{end}, older than {} days",
                    oldest.name.first, self.config.retention_days
                ),
                removed: Some(RemovedSegment {
                    segment: segment.clone(),
                    first: oldest.name.first,
                    count: oldest.count,
                    root,
                }),
                ..Default::default()
            };
            self.append(removal, Instant::now())?;
            self.sync()?;
            self.sync_tree()?;
            std::fs::remove_file(&oldest.path).map_err(|e| AccessLogError::io(&oldest.path, e))?;
            files::sync_dir(&self.dir).map_err(|e| AccessLogError::io(&self.dir, e))?;
            self.segments.remove(0);
            tracing::info!(%segment, records = oldest.count, "access log segment removed under retention");
        }
    }

    /// How long the writer may sleep before something falls due.
    fn sleep_for(&self) -> Duration {
        let mut due = Instant::now() + POLL;
        if let Some(since) = self.unsynced_since {
            due = due.min(since + SYNC_AFTER);
        }
        if self.signed_size < self.size {
            due = due.min(self.last_signed + SIGN_EVERY);
        }
        due.saturating_duration_since(Instant::now())
    }

    /// One round: append the batch, sync when asked or due, answer the
    /// waiters, sign and apply retention when due.
    fn round(
        &mut self,
        batch: Vec<Queued>,
        stopping: bool,
    ) -> Result<(), (AccessLogError, Vec<Waiter>)> {
        let mut waiters = Vec::new();
        for (record, waiter, since) in batch {
            if let Some(w) = waiter {
                waiters.push(w);
            }
            if let Err(e) = self.append(record, since) {
                return Err((e, waiters));
            }
        }
        let due = self
            .unsynced_since
            .is_some_and(|s| s.elapsed() >= SYNC_AFTER);
        let step = if stopping {
            self.sync().and_then(|()| self.sync_tree())
        } else if !waiters.is_empty() || due {
            self.sync()
        } else {
            self.flush()
        };
        if let Err(e) = step {
            return Err((e, waiters));
        }
        if self.unsynced_since.is_none() {
            for w in waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
            if self.signed_size < self.size
                && (stopping || self.last_signed.elapsed() >= SIGN_EVERY)
                && let Err(e) = self.sign()
            {
                return Err((e, waiters));
            }
        }
        if self
            .last_retained
            .is_none_or(|t| t.elapsed() >= RETAIN_EVERY)
            && !stopping
            && let Err(e) = self.retain()
        {
            return Err((e, waiters));
        }
        Ok(())
    }
}

/// What the writer thread runs: the files' writer, or the store's
/// (`stored`). The queue, the waking and the answers are the same.
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

impl Rounds for Writer {
    fn round(
        &mut self,
        batch: Vec<Queued>,
        stopping: bool,
    ) -> Result<(), (AccessLogError, Vec<Waiter>)> {
        Writer::round(self, batch, stopping)
    }

    fn sleep_for(&self) -> Duration {
        Writer::sleep_for(self)
    }
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
        if let Err((e, waiters)) = writer.round(batch, stopping) {
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
