//! A replica's standby as a hub: the same start as a leader's, but it
//! holds no lease, serves what the leader stored (its first refresh before
//! it listens), then follows the leader's notices (`follow`,
//! `service/standby.rs`). Apart from the leader's start so that what only
//! a standby does reads in one place.

use super::{Hub, HubError, Role};
use crate::channel_log::Logs;
use crate::config::HubConfig;
use crate::follow::Following;
use crate::freshness::Freshness;
use crate::inboxes::InboxWatch;
use crate::registry::Registry;
use crate::store::Store;
use crate::store::pg_store::Database;
use crate::tls::TlsReloader;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

impl Hub {
    /// A replica's standby, serving reads of `database` (see
    /// `follow` and `service/standby.rs`); it holds no lease.
    pub async fn start_standby(config: &HubConfig, database: &Database) -> Result<Self, HubError> {
        Self::start_as(config, Role::Standby(Box::new(database.clone()))).await
    }
}

/// What a standby follows the leader with, from its first refresh on.
pub(super) struct Follower {
    following: Arc<Following>,
    database: Database,
    /// Whether it may serve: its refreshes keep it fresh.
    pub(super) freshness: Arc<Freshness>,
}

impl Follower {
    /// Reads what is stored now, so that the standby serves it before it
    /// listens; a start that cannot has bound no port yet, so it can be
    /// tried again on the same addresses.
    pub(super) async fn first_refresh(
        config: &HubConfig,
        database: Database,
        store: &Arc<dyn Store>,
        registry: &Arc<RwLock<Registry>>,
        logs: &Arc<Logs>,
        inboxes: &Arc<InboxWatch>,
        tls: &Arc<TlsReloader>,
    ) -> Result<Self, HubError> {
        let following = Arc::new(Following::new(
            store.clone(),
            registry.clone(),
            logs.clone(),
            inboxes.clone(),
            tls.connections().clone(),
        ));
        let first = following.clone();
        tokio::task::spawn_blocking(move || first.refresh())
            .await
            .map_err(|e| HubError::Server(e.to_string()))?
            .map_err(|e| HubError::Server(format!("standby: {e}")))?;
        Ok(Self {
            following,
            database,
            freshness: Arc::new(Freshness::new(config.store.standby_refresh())),
        })
    }

    /// Listens for the leader's notices and refreshes on each (and on a
    /// timer) until `shutdown`.
    pub(super) fn follow(
        self,
        config: &HubConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), HubError> {
        let notices = crate::store::pg_store::notices::listen(&self.database, shutdown.clone())?;
        tokio::spawn(crate::follow::run(
            self.following,
            notices,
            config.store.standby_refresh(),
            self.freshness,
            shutdown,
        ));
        Ok(())
    }
}
