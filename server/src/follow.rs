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
//!
//! A unit the refreshed registry suspends (or removes) loses its open
//! connections as on the leader's SuspendUnit: a subscription never
//! authenticates again once open.

use crate::channel_log::{LogError, Logs};
use crate::freshness::Freshness;
use crate::inboxes::InboxWatch;
use crate::registry::Registry;
use crate::store::pg_store::notices::Notices;
use crate::store::{Store, StoreError};
use crate::tls::Connections;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Inbox positions read from the store at a time.
const READ_PAGE: usize = 256;

/// How long one refresh may take before it counts as failed.
pub const REFRESH_WAIT: Duration = Duration::from_secs(10);

/// Why a refresh failed (the next one tries again).
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Poisoned(#[from] crate::fatal::Poisoned),
    /// The stored schema is not this hub's (a newer leader migrated it).
    #[error("standby: {0}")]
    Schema(StoreError),
}

impl FollowError {
    /// Why the standby must not serve what is stored, when the database
    /// itself is unfit (not merely unreachable): its schema changed, or a
    /// stored checkpoint fails its check (altered data).
    fn unfit(&self) -> Option<String> {
        match self {
            Self::Schema(StoreError::Database(_)) => None,
            Self::Schema(e) => Some(format!("standby: {e}")),
            Self::Log(LogError::Store(_) | LogError::Poisoned(_)) => None,
            Self::Log(e) => Some(format!(
                "standby: a stored checkpoint fails its check (altered data?): {e}"
            )),
            Self::Store(_) | Self::Poisoned(_) => None,
        }
    }
}

/// What a standby's refresh reads and updates.
pub struct Following {
    store: Arc<dyn Store>,
    registry: Arc<RwLock<Registry>>,
    logs: Arc<Logs>,
    inboxes: Arc<InboxWatch>,
    /// The hub's open connections, closed for a unit no longer allowed.
    connections: Arc<Connections>,
    /// The registry's stored bytes last taken.
    registry_bytes: Mutex<Option<Vec<u8>>>,
}

impl Following {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<RwLock<Registry>>,
        logs: Arc<Logs>,
        inboxes: Arc<InboxWatch>,
        connections: Arc<Connections>,
    ) -> Self {
        Self {
            store,
            registry,
            logs,
            inboxes,
            connections,
            registry_bytes: Mutex::new(None),
        }
    }

    /// Reads what is new and serves it: the registry first (an entry's
    /// recipients may be units it adds), then checkpoints, then inboxes.
    pub fn refresh(&self) -> Result<(), FollowError> {
        self.store.check_schema().map_err(FollowError::Schema)?;
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
        let stopped = {
            let mut served = crate::fatal::write(&self.registry, "registry")?;
            let stopped = stopped_units(&served, &registry);
            *served = registry;
            stopped
        };
        *last = Some(bytes);
        // After the swap: a unit that reconnects is refused.
        for unit in stopped {
            let closed = self.connections.close_unit(&unit)?;
            tracing::info!(%unit, closed, "standby: unit suspended or removed by the leader; its connections closed");
        }
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

/// Publishes `freshness` every `every` until shutdown, so that open
/// subscriptions end once the standby goes stale.
async fn publish_staleness(
    freshness: Arc<Freshness>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => freshness.publish(),
            _ = shutdown.changed() => return,
        }
    }
}

/// Units active in `before` that `after` suspends or no longer has.
fn stopped_units(before: &Registry, after: &Registry) -> Vec<String> {
    before
        .units
        .values()
        .filter(|u| !u.suspended)
        .filter(|u| after.unit(&u.id).is_none_or(|now| now.suspended))
        .map(|u| u.id.clone())
        .collect()
}

/// Refreshes `following` at each notice and every `every`, until
/// shutdown; a failed refresh is logged and tried again at the next. Each
/// outcome goes to `freshness` (see `freshness.rs`); a refresh taking
/// longer than [`REFRESH_WAIT`] counts as failed, and the next waits for
/// it rather than running beside it. Staleness is published each period
/// on its own timer, since a hanging refresh holds this loop up.
pub async fn run(
    following: Arc<Following>,
    notices: Arc<Notices>,
    every: Duration,
    freshness: Arc<Freshness>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(publish_staleness(
        freshness.clone(),
        every,
        shutdown.clone(),
    ));
    let mut running: Option<tokio::task::JoinHandle<Result<(), FollowError>>> = None;
    loop {
        tokio::select! {
            () = notices.next() => {}
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let mut refresh = running.take().unwrap_or_else(|| {
            let f = following.clone();
            tokio::task::spawn_blocking(move || {
                // Tests hold a refresh here to see a standby go stale.
                crate::failpoint::pause("standby-refresh");
                f.refresh()
            })
        });
        let outcome = match tokio::time::timeout(REFRESH_WAIT, &mut refresh).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(
                    "standby: a refresh from the database takes over {} s",
                    REFRESH_WAIT.as_secs()
                );
                running = Some(refresh);
                continue;
            }
        };
        match outcome {
            Ok(Ok(())) => freshness.succeeded(),
            Ok(Err(e)) => match e.unfit() {
                Some(why) => {
                    if freshness.refuse(why.clone()) {
                        tracing::error!(reason = %why, "standby: not serving");
                    }
                }
                None => {
                    tracing::warn!(error = %e, "standby: refreshing from the database failed; trying again at the next notice")
                }
            },
            Err(e) => tracing::error!(error = %e, "standby: the refresh task failed"),
        }
    }
}
