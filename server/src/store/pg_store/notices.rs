//! What moved in the database, told to the standbys: the leader sends
//! `NOTIFY tongbao_moved` in the transaction of each checkpoint save and
//! registry save (delivered only if it commits); a standby LISTENs on a
//! connection of its own and refreshes what it serves on each notice.
//!
//! Group commits notify nothing: a standby serves a channel only up to its
//! latest signed checkpoint, so entries without one change nothing it may
//! serve, and waking every standby at each commit would only cost reads.
//! A notice can still be lost (the listening connection breaks): the
//! connection is made again each [`RECONNECT_EVERY`], and every new one
//! counts as a notice, so that the standby reads what it missed.

use super::db;
use super::read::execute;
use super::tls::Database;
use crate::store::StoreError;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_postgres::{AsyncMessage, Config};

/// The channel every notice goes to; its payload names what moved.
pub const MOVED: &str = "tongbao_moved";

/// How long a standby waits before it listens again on a new connection.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// How long connecting may take.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The listening session's name in `pg_stat_activity`.
pub const LISTENER_NAME: &str = "tongbao-hub standby listen";

/// Tells the standbys, once `tx` commits, that `what` moved.
pub async fn notify(tx: &deadpool_postgres::Transaction<'_>, what: &str) -> Result<(), StoreError> {
    execute(tx, "SELECT pg_notify($1, $2)", &[&MOVED, &what]).await?;
    Ok(())
}

/// A standby's wake-ups: one per notice, and one per (re)made listening
/// connection.
#[derive(Default)]
pub struct Notices {
    wake: Notify,
}

impl Notices {
    /// Resolves at the next notice (or one that came since the last call).
    pub async fn next(&self) {
        self.wake.notified().await;
    }
}

/// LISTENs on `database` until `stop`, on a connection of its own (made
/// as every connection is, TLS included), made again whenever it breaks.
pub fn listen(
    database: &Database,
    stop: watch::Receiver<bool>,
) -> Result<Arc<Notices>, StoreError> {
    // As the lease's: a connection the network dropped silently is found
    // and made again in seconds, not hours. Its name is always ours, so
    // that operators find it.
    let mut config = super::lease::kept_alive_config(database, LISTENER_NAME);
    config.application_name(LISTENER_NAME);
    let notices = Arc::new(Notices::default());
    tokio::spawn(keep_listening(
        database.clone(),
        config,
        notices.clone(),
        stop,
    ));
    Ok(notices)
}

async fn keep_listening(
    database: Database,
    config: Config,
    notices: Arc<Notices>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            ended = listen_once(&database, &config, &notices) => {
                if let Err(e) = ended {
                    tracing::warn!(error = %e, "standby: the connection listening for the leader's notices ended; listening again");
                }
            }
            _ = stop.changed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(RECONNECT_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One listening connection, until it ends (always an error).
async fn listen_once(
    database: &Database,
    config: &Config,
    notices: &Notices,
) -> Result<(), StoreError> {
    let (client, mut connection) = database.connect(config, CONNECT_WAIT).await?;
    // The connection is driven by a task of its own, which hands on each
    // notice, and its end.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        let end = loop {
            match messages.next().await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if tx.send(None).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break db(e),
                None => break StoreError::Database("PostgreSQL closed the connection".into()),
            }
        };
        let _ = tx.send(Some(end));
    });
    client
        .batch_execute(&format!("LISTEN {MOVED}"))
        .await
        .map_err(db)?;
    // Whatever was missed before this connection listened is read now.
    notices.wake.notify_one();
    while let Some(message) = rx.recv().await {
        match message {
            None => notices.wake.notify_one(),
            Some(end) => return Err(end),
        }
    }
    Err(StoreError::Database(
        "the listening connection's task ended".into(),
    ))
}
