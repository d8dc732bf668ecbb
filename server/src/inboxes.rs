//! Wake-ups for live subscribers.
//!
//! A subscriber never holds entries in memory waiting for delivery: it reads
//! its inbox from the store at its own pace and, once caught up, waits here
//! for the inbox head to move. A slow subscriber therefore costs a cursor,
//! not a growing buffer.

use crate::fatal::{self, Poisoned};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// The inbox heads' lock, as a poisoned one is reported.
const HEADS: &str = "inbox heads";

/// The latest cursor of every inbox, observable.
#[derive(Debug, Default)]
pub struct InboxWatch {
    heads: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Group commits that failed, counted ([`InboxWatch::commit_failed`]).
    failed_commits: watch::Sender<u64>,
}

impl InboxWatch {
    /// Starts from the heads found in the store.
    pub fn new(initial: impl IntoIterator<Item = (String, u64)>) -> Self {
        let heads = initial
            .into_iter()
            .map(|(inbox, cursor)| (inbox, watch::Sender::new(cursor)))
            .collect();
        Self {
            heads: Mutex::new(heads),
            failed_commits: watch::Sender::new(0),
        }
    }

    /// A group commit failed: wakes every subscriber waiting at its
    /// inbox's end to read it once more. The store may refuse that read
    /// now (a commit whose reply was lost may have added positions only
    /// the database holds, which this hub never publishes), and the
    /// subscription then ends saying why, rather than wait until the
    /// hub's restart.
    pub fn commit_failed(&self) {
        self.failed_commits.send_modify(|n| *n += 1);
    }

    /// A receiver that sees each group commit that fails from now on.
    pub fn failed_commits(&self) -> watch::Receiver<u64> {
        self.failed_commits.subscribe()
    }

    /// Records a new durable head and wakes its subscribers.
    pub fn publish(&self, inbox: &str, cursor: u64) -> Result<(), Poisoned> {
        let mut heads = fatal::lock(&self.heads, HEADS)?;
        match heads.get(inbox) {
            Some(tx) => {
                tx.send_if_modified(|c| {
                    let moved = cursor > *c;
                    *c = (*c).max(cursor);
                    moved
                });
            }
            None => {
                heads.insert(inbox.to_string(), watch::Sender::new(cursor));
            }
        }
        Ok(())
    }

    /// A receiver that sees the inbox head move.
    pub fn watch(&self, inbox: &str) -> Result<watch::Receiver<u64>, Poisoned> {
        crate::failpoint::poison("inbox-heads", &self.heads);
        let mut heads = fatal::lock(&self.heads, HEADS)?;
        Ok(heads
            .entry(inbox.to_string())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe())
    }

    /// The current head of an inbox (0 when empty).
    pub fn head(&self, inbox: &str) -> Result<u64, Poisoned> {
        crate::failpoint::poison("inbox-heads", &self.heads);
        let heads = fatal::lock(&self.heads, HEADS)?;
        Ok(heads.get(inbox).map_or(0, |tx| *tx.borrow()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_commit_wakes_waiters_and_moves_no_head() -> Result<(), Poisoned> {
        let inboxes = InboxWatch::new([("police".to_string(), 3)]);
        let waiting = inboxes.failed_commits();
        assert!(matches!(waiting.has_changed(), Ok(false)));
        inboxes.commit_failed();
        assert!(matches!(waiting.has_changed(), Ok(true)));
        // Only failures after it is made wake a receiver.
        assert!(matches!(inboxes.failed_commits().has_changed(), Ok(false)));
        assert_eq!(inboxes.head("police")?, 3);
        Ok(())
    }
}
