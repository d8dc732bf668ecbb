//! Fetched marks gathered in memory and written together. A mark (the
//! first time a unit was served a delivery) is made on every delivery's
//! path, once per subscription per group commit: written in a
//! transaction each, they were most of the database's transactions (87 %
//! at 500 msg/s with 13 recipients). Gathered here and written in one
//! transaction every [`FLUSH_EVERY`], as the sled store writes them with
//! its next flush, they cost a delivery no round trip.
//!
//! What stays as it was: a mark reads back at once (reads merge what
//! waits here); first serving wins (here the first mark of a position is
//! kept, and the database keeps one written earlier, by this replica or
//! another, `ON CONFLICT DO NOTHING`); a leader's marks pass the lease's
//! fence, and the waiting marks of a hub that lost the lease (fenced, or
//! its database stopped answering the lease's probe) are dropped, never
//! written: the hub is stopping, and a write must not wait on a database
//! that went silent.
//! What a crash loses: the marks of the hub's last [`FLUSH_EVERY`] (an
//! orderly stop writes them first), besides what a crash of the database
//! may lose of marks committed without waiting for the WAL flush
//! (`write::fetched`). A mark is an observation, not a promise
//! (`Store::mark_fetched`): such a delivery reads as pending until it is
//! served again.

use super::lease::{LOST, Watch};
use super::read::signed;
use super::write;
use crate::fatal;
use crate::store::StoreError;
use deadpool_postgres::Pool;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often waiting marks are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Marks that may wait at most: beyond, a database that takes none (it
/// is unreachable) fails the deliveries that would add more, saying so,
/// rather than the hub's memory growing without bound.
pub const MAX_WAITING: usize = 200_000;

/// The lock's name, as a poisoned one is reported.
const MARKS: &str = "PostgreSQL store's waiting fetched marks";

/// Marks by inbox and position: the first serving's hub time.
type ByInbox = BTreeMap<String, BTreeMap<u64, i64>>;

/// The marks not yet in the database.
#[derive(Default)]
pub struct Marks {
    inner: Mutex<Waiting>,
    /// One write at a time, so that `writing` is one transaction's.
    one_write: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Waiting {
    /// Marks not yet sent.
    waiting: ByInbox,
    /// Marks being written, until their transaction answers; older than
    /// any waiting mark of the same position.
    writing: ByInbox,
    /// Marks in both.
    count: usize,
}

/// One write's rows, column by column, in (inbox, position) order: two
/// replicas' writes then never wait on each other crosswise.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub inboxes: Vec<String>,
    pub positions: Vec<i64>,
    pub micros: Vec<i64>,
}

impl Marks {
    /// Records that `inbox` was served `cursors` at `hub_micros`, where no
    /// earlier mark of the same position waits.
    pub fn add(&self, inbox: &str, cursors: &[u64], hub_micros: i64) -> Result<(), StoreError> {
        for c in cursors {
            signed(*c)?;
        }
        let mut w = fatal::lock(&self.inner, MARKS)?;
        if w.count >= MAX_WAITING {
            return Err(StoreError::Unavailable(format!(
                "{} fetched marks wait for the database, which takes none",
                w.count
            )));
        }
        let Waiting {
            waiting,
            writing,
            count,
        } = &mut *w;
        let sent = writing.get(inbox);
        let mine = match waiting.get_mut(inbox) {
            Some(m) => m,
            None => waiting.entry(inbox.to_string()).or_default(),
        };
        for c in cursors {
            if sent.is_some_and(|s| s.contains_key(c)) {
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(v) = mine.entry(*c) {
                v.insert(hub_micros);
                *count += 1;
            }
        }
        Ok(())
    }

    /// The waiting (or being written) mark of each of `cursors`.
    pub fn read(&self, inbox: &str, cursors: &[u64]) -> Result<Vec<Option<i64>>, StoreError> {
        let w = fatal::lock(&self.inner, MARKS)?;
        let (writing, waiting) = (w.writing.get(inbox), w.waiting.get(inbox));
        Ok(cursors
            .iter()
            .map(|c| {
                writing
                    .and_then(|m| m.get(c))
                    .or_else(|| waiting.and_then(|m| m.get(c)))
                    .copied()
            })
            .collect())
    }

    /// How many marks wait or are being written.
    #[cfg(test)]
    fn count(&self) -> Result<usize, StoreError> {
        Ok(fatal::lock(&self.inner, MARKS)?.count)
    }

    /// Moves the waiting marks to `writing` and returns them as rows.
    fn take(&self) -> Result<Batch, StoreError> {
        let mut w = fatal::lock(&self.inner, MARKS)?;
        let taken = std::mem::take(&mut w.waiting);
        let mut batch = Batch::default();
        for (inbox, marks) in &taken {
            for (position, micros) in marks {
                batch.inboxes.push(inbox.clone());
                batch.positions.push(signed(*position)?);
                batch.micros.push(*micros);
            }
        }
        w.writing = taken;
        Ok(batch)
    }

    /// The write answered: its marks are the database's now (`written`),
    /// or it failed and they wait again, before any mark made since.
    fn done(&self, written: bool) -> Result<(), StoreError> {
        let mut w = fatal::lock(&self.inner, MARKS)?;
        let sent = std::mem::take(&mut w.writing);
        let n: usize = sent.values().map(BTreeMap::len).sum();
        if written {
            w.count -= n;
            return Ok(());
        }
        let Waiting { waiting, count, .. } = &mut *w;
        for (inbox, marks) in sent {
            // The failed write's marks are the older: they win.
            let mine = waiting.entry(inbox).or_default();
            for (position, micros) in marks {
                if mine.insert(position, micros).is_some() {
                    *count -= 1;
                }
            }
        }
        Ok(())
    }

    /// Drops every waiting mark (a fenced hub's).
    fn drop_all(&self) -> Result<(), StoreError> {
        let mut w = fatal::lock(&self.inner, MARKS)?;
        *w = Waiting::default();
        Ok(())
    }
}

/// Writes the waiting marks: a leader's (`epoch` Some) through the
/// lease's fence, a standby's outside it (see `write::fetched`).
pub struct Writer {
    pub pool: Pool,
    pub epoch: Option<i64>,
    pub marks: Arc<Marks>,
    /// The store's: set when the fence refused a write.
    pub fenced: Arc<AtomicBool>,
    /// A leader's lease: once it is gone, nothing more is written.
    pub lease: Option<Watch>,
}

impl Writer {
    /// Writes what waits now, in one transaction; nothing when nothing
    /// waits. Returns how many marks went in the write.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let _one = self.marks.one_write.lock().await;
        if let Some(why) = self.lease_gone() {
            self.marks.drop_all()?;
            return Err(StoreError::Database(why));
        }
        let batch = self.marks.take()?;
        if batch.positions.is_empty() {
            self.marks.done(true)?;
            return Ok(0);
        }
        let n = batch.positions.len();
        match write::fetched(self.pool.clone(), self.epoch, batch).await {
            Ok(()) => {
                self.marks.done(true)?;
                Ok(n)
            }
            Err(e) if is_fenced(&e) => {
                self.fenced.store(true, Ordering::Release);
                self.marks.drop_all()?;
                Err(e)
            }
            Err(e) => {
                self.marks.done(false)?;
                Err(e)
            }
        }
    }

    /// Why a leader's marks are no longer written (None while it leads,
    /// and always for a standby's, which pass no fence).
    fn lease_gone(&self) -> Option<String> {
        self.epoch?;
        if self.fenced.load(Ordering::Acquire) {
            return Some(LOST.into());
        }
        self.lease.as_ref().and_then(Watch::why)
    }

    /// Writes every [`FLUSH_EVERY`] until the store's runtime stops. A
    /// failed write of a replica's leader stops the hub, as a failed
    /// group commit does (`PgStore::write_failed`); on a hub alone or a
    /// standby its marks wait for the next try (bounded by
    /// [`MAX_WAITING`]), logged once per outage. A hub that lost the
    /// lease stops writing (it is stopping already).
    pub async fn run(self, replica: bool, failed: Arc<AtomicBool>) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match self.flush().await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("fetched marks are written again");
                }
                Ok(_) => {}
                Err(e) if is_fenced(&e) || self.lease_gone().is_some() => {
                    failed.store(true, Ordering::Release);
                    return;
                }
                Err(e) if replica && self.epoch.is_some() => {
                    failed.store(true, Ordering::Release);
                    fatal::write_failed(e.to_string());
                    return;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot write fetched marks; they wait for the next try");
                    }
                    failing = true;
                }
            }
        }
    }
}

/// Whether a write failed at the lease's fence.
pub fn is_fenced(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(m) if m == LOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(marks: &Marks) -> Result<Batch, StoreError> {
        marks.take()
    }

    #[test]
    fn the_first_mark_of_a_position_wins_and_reads_back() -> Result<(), StoreError> {
        let marks = Marks::default();
        marks.add("police", &[1, 2], 50)?;
        marks.add("police", &[2, 3], 99)?;
        marks.add("finance", &[1], 70)?;
        assert_eq!(
            marks.read("police", &[3, 2, 1, 4])?,
            [Some(99), Some(50), Some(50), None]
        );
        assert_eq!(marks.count()?, 4);
        // Taken for a write: in (inbox, position) order, still read back.
        let b = batch(&marks)?;
        assert_eq!(b.inboxes, ["finance", "police", "police", "police"]);
        assert_eq!(b.positions, [1, 1, 2, 3]);
        assert_eq!(b.micros, [70, 50, 50, 99]);
        assert_eq!(marks.read("police", &[1])?, [Some(50)]);
        // A later serving of a position being written adds nothing.
        marks.add("police", &[1, 5], 120)?;
        assert_eq!(marks.read("police", &[1, 5])?, [Some(50), Some(120)]);
        marks.done(true)?;
        assert_eq!(marks.count()?, 1, "the written marks are the database's");
        assert_eq!(marks.read("police", &[1])?, [None]);
        Ok(())
    }

    #[test]
    fn a_failed_write_s_marks_wait_again_and_stay_first() -> Result<(), StoreError> {
        let marks = Marks::default();
        marks.add("police", &[1], 50)?;
        batch(&marks)?;
        // Made while the write ran: a later serving of a new position.
        marks.add("police", &[2], 80)?;
        marks.done(false)?;
        assert_eq!(marks.count()?, 2);
        assert_eq!(marks.read("police", &[1, 2])?, [Some(50), Some(80)]);
        let b = batch(&marks)?;
        assert_eq!((b.positions, b.micros), (vec![1, 2], vec![50, 80]));
        Ok(())
    }

    #[test]
    fn marks_beyond_the_bound_are_refused_saying_why() -> Result<(), StoreError> {
        let marks = Marks::default();
        let all: Vec<u64> = (0..MAX_WAITING as u64).collect();
        marks.add("police", &all, 1)?;
        let refused = marks.add("police", &[u64::MAX >> 2], 2);
        assert!(
            matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("wait for the database")),
            "{refused:?}"
        );
        assert_eq!(marks.read("police", &[u64::MAX >> 2])?, [None]);
        // Written, they make room again.
        batch(&marks)?;
        marks.done(true)?;
        marks.add("police", &[u64::MAX >> 2], 2)?;
        Ok(())
    }

    #[test]
    fn a_position_beyond_the_store_is_refused_before_it_waits() -> Result<(), StoreError> {
        let marks = Marks::default();
        let refused = marks.add("police", &[1, u64::MAX], 2);
        assert!(matches!(&refused, Err(StoreError::Database(m)) if m.contains("beyond")));
        assert_eq!(marks.count()?, 0);
        Ok(())
    }
}
