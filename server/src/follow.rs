//! A standby's refresh: what it serves follows what the leader stored.
//!
//! On each notice of the leader (`store/pg_store/notices.rs`), and on a
//! timer as a safety net, a standby reads the stored registry, the latest
//! checkpoints (`channel_log/follow.rs`) and its inboxes' new positions,
//! and wakes its subscribers as the leader's appender does
//! ([`InboxWatch::publish`]). An inbox is served up to its last position
//! whose entry a stored checkpoint covers, stopping at the first one not
//! covered yet: the standby never shows an entry the leader has not
//! signed, and never skips one.

use crate::channel_log::{LogError, Logs};
use crate::inboxes::InboxWatch;
use crate::registry::Registry;
use crate::store::pg_store::notices::Notices;
use crate::store::{Store, StoreError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Inbox positions read from the store at a time.
const READ_PAGE: usize = 256;

/// Why a refresh failed (the next one tries again).
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Poisoned(#[from] crate::fatal::Poisoned),
}

/// What a standby's refresh reads and updates.
pub struct Following {
    store: Arc<dyn Store>,
    registry: Arc<RwLock<Registry>>,
    logs: Arc<Logs>,
    inboxes: Arc<InboxWatch>,
    /// The registry's stored bytes last taken.
    registry_bytes: Mutex<Option<Vec<u8>>>,
}

impl Following {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<RwLock<Registry>>,
        logs: Arc<Logs>,
        inboxes: Arc<InboxWatch>,
    ) -> Self {
        Self {
            store,
            registry,
            logs,
            inboxes,
            registry_bytes: Mutex::new(None),
        }
    }

    /// Reads what is new and serves it: the registry first (an entry's
    /// recipients may be units it adds), then checkpoints, then inboxes.
    pub fn refresh(&self) -> Result<(), FollowError> {
        self.refresh_registry()?;
        // A channel whose checkpoint fails its check keeps its previous
        // one; the inboxes still move on the others.
        let checked = self.logs.follow();
        self.refresh_inboxes()?;
        checked?;
        Ok(())
    }

    fn refresh_registry(&self) -> Result<(), FollowError> {
        let Some(bytes) = self.store.load_registry_bytes()? else {
            return Ok(());
        };
        let mut last = crate::fatal::lock(&self.registry_bytes, "standby's registry bytes")?;
        if last.as_ref() == Some(&bytes) {
            return Ok(());
        }
        let registry: Registry = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("registry: {e}")))?;
        *crate::fatal::write(&self.registry, "registry")? = registry;
        *last = Some(bytes);
        Ok(())
    }

    /// Publishes each inbox's positions that checkpoints now cover, in
    /// order, up to the first one not covered.
    fn refresh_inboxes(&self) -> Result<(), FollowError> {
        for (inbox, stored) in self.store.inbox_heads()? {
            let mut served = self.inboxes.head(&inbox)?;
            while served < stored {
                let page = self.store.inbox_page(&inbox, served, READ_PAGE)?;
                let mut last = None;
                let mut blocked = false;
                for item in &page {
                    if item.seq >= self.logs.durable_size(&item.channel)? {
                        blocked = true;
                        break;
                    }
                    last = Some(item.cursor);
                }
                let Some(cursor) = last else { break };
                self.inboxes.publish(&inbox, cursor)?;
                served = cursor;
                if blocked || page.len() < READ_PAGE {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Refreshes `following` at each notice and every `every`, until
/// shutdown; a failed refresh is logged and tried again at the next.
pub async fn run(
    following: Arc<Following>,
    notices: Arc<Notices>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = notices.next() => {}
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let f = following.clone();
        match tokio::task::spawn_blocking(move || f.refresh()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "standby: refreshing from the database failed; trying again at the next notice")
            }
            Err(e) => tracing::error!(error = %e, "standby: the refresh task failed"),
        }
    }
}
