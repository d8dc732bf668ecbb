//! Wake-ups for live subscribers.
//!
//! A subscriber never holds entries in memory waiting for delivery: it reads
//! its inbox from the store at its own pace and, once caught up, waits here
//! for the inbox head to move. A slow subscriber therefore costs a cursor,
//! not a growing buffer.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// The latest cursor of every inbox, observable.
#[derive(Debug, Default)]
pub struct InboxWatch {
    heads: Mutex<HashMap<String, watch::Sender<u64>>>,
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
        }
    }

    /// Records a new durable head and wakes its subscribers.
    pub fn publish(&self, inbox: &str, cursor: u64) {
        if let Ok(mut heads) = self.heads.lock() {
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
        }
    }

    /// A receiver that sees the inbox head move.
    pub fn watch(&self, inbox: &str) -> Option<watch::Receiver<u64>> {
        let mut heads = self.heads.lock().ok()?;
        Some(
            heads
                .entry(inbox.to_string())
                .or_insert_with(|| watch::Sender::new(0))
                .subscribe(),
        )
    }

    /// The current head of an inbox (0 when empty).
    pub fn head(&self, inbox: &str) -> u64 {
        self.heads
            .lock()
            .ok()
            .and_then(|h| h.get(inbox).map(|tx| *tx.borrow()))
            .unwrap_or(0)
    }
}
