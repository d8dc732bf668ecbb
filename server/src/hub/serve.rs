//! The process around a hub: `tongbao-hub serve` runs it until a signal
//! or a fatal condition, a replica first waiting as a standby. Apart from
//! the hub's start, which tests and tools call without signals.

use super::{Hub, HubError};
use crate::config::HubConfig;

/// Runs a hub until SIGINT or SIGTERM, or until a module meets a poisoned
/// lock or loses the database lease, then shuts it down in order (and,
/// after such a loss, fails); SIGHUP reloads the TLS material. Prints one
/// machine-readable line with the bound address (port 0 resolves here).
/// A replica (`[store] replica = true`) first waits as a standby for the
/// database lease (`replica`), saying so in a line of its own.
pub async fn serve_until_signal(mut config: HubConfig) -> Result<(), HubError> {
    let (hub, signals) = match config.store.replica_database()? {
        Some(database) => {
            // Installed first: a standby is stopped like a serving hub.
            let mut signals = Signals::install();
            let stop = wait_for_signal(&mut signals.stop);
            let hangup = &mut signals.hangup;
            let Some(lease) = crate::replica::standby(&mut config, &database, stop, hangup).await?
            else {
                tracing::info!("stopped while waiting as a standby");
                return Ok(());
            };
            match take_over(&config, lease, signals).await? {
                Some(started) => started,
                None => return Ok(()),
            }
        }
        // Handlers first, then the line that says the hub is up: a
        // supervisor (or a test) may stop it the moment it reads that line.
        None => (Hub::start(&config).await?, Signals::install()),
    };
    println!("tongbao-hub listening on {}", hub.addr());
    let Signals {
        mut stop,
        mut hangup,
    } = signals;
    let stop = wait_for_stop(&mut stop);
    tokio::pin!(stop);
    let fatal = loop {
        tokio::select! {
            fatal = &mut stop => break fatal,
            () = next_hangup(&mut hangup) => reload_on_hangup(&hub),
        }
    };
    tracing::info!("shutting down");
    hub.shutdown().await?;
    fatal.map_or(Ok(()), |e| Err(HubError::Fatal(e)))
}

/// Starts the leader with the lease a standby got. The takeover may wait
/// long for an earlier leader's last write (the fence), so a stop signal
/// before the epoch is raised gives it up (`Lease::abandon_handle`)
/// instead of waiting for SIGKILL; one after it stops the hub once
/// started. None when stopped.
async fn take_over(
    config: &HubConfig,
    lease: crate::store::pg_store::Lease,
    mut signals: Signals,
) -> Result<Option<(Hub, Signals)>, HubError> {
    let abandon = lease.abandon_handle();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    // On a task of its own: the start blocks its thread while it waits.
    let on_stop = abandon.clone();
    let watcher = tokio::spawn(async move {
        let stopped = tokio::select! {
            () = wait_for_signal(&mut signals.stop) => {
                on_stop.now();
                true
            }
            _ = started_rx => false,
        };
        (signals, stopped)
    });
    let started = Hub::start_holding(config, Some(lease)).await;
    let _ = started_tx.send(());
    let (signals, stopped) = watcher
        .await
        .map_err(|e| HubError::Server(format!("the stop signal's watcher: {e}")))?;
    match (started, stopped) {
        (Ok(hub), false) => Ok(Some((hub, signals))),
        (Err(e), true) if abandon.gave_up() => {
            tracing::warn!(reason = %e, "stopped while taking over");
            Ok(None)
        }
        // A start that failed for a reason of its own says so.
        (Err(e), _) => Err(e),
        (Ok(hub), true) => {
            tracing::warn!("stopped as the takeover ended: shutting down");
            hub.shutdown().await?;
            Ok(None)
        }
    }
}

/// The process's signal handlers, installed before the hub says it is up.
struct Signals {
    /// SIGINT and SIGTERM (None where they cannot be installed: Ctrl-C).
    stop: Option<StopSignals>,
    /// SIGHUP, which reloads the TLS material.
    hangup: Option<Hangup>,
}

/// SIGHUP's handler.
#[cfg(unix)]
pub type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
pub type Hangup = NoSignal;

/// Resolves at the next SIGHUP (never, without a handler).
pub(crate) async fn next_hangup(hangup: &mut Option<Hangup>) {
    let received = match hangup {
        Some(h) => h.recv().await.is_some(),
        None => false,
    };
    if !received {
        // No handler, or it is gone: no SIGHUP will come.
        std::future::pending::<()>().await;
    }
}

/// Reloads the TLS material on SIGHUP, saying how it went.
pub(crate) fn reload_on_hangup(hub: &Hub) {
    match tokio::task::block_in_place(|| hub.reload_tls()) {
        Ok(o) => {
            tracing::info!(material = %o.summary, closed = o.closed, "SIGHUP: TLS material reloaded")
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: TLS reload failed; the previous material stays in use")
        }
    }
}

#[cfg(unix)]
type StopSignals = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);
#[cfg(not(unix))]
type StopSignals = ();

/// Stands in for SIGHUP where there is none.
#[cfg(not(unix))]
pub struct NoSignal;
#[cfg(not(unix))]
impl NoSignal {
    async fn recv(&mut self) -> Option<()> {
        std::future::pending().await
    }
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let stop = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok();
            Self {
                stop,
                hangup: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {
            stop: None,
            hangup: None,
        }
    }
}

/// A signal to stop (None), or a fatal condition met anywhere in the hub.
async fn wait_for_stop(signals: &mut Option<StopSignals>) -> Option<crate::fatal::Stop> {
    tokio::select! {
        () = wait_for_signal(signals) => None,
        e = crate::fatal::requested() => Some(e),
    }
}

async fn wait_for_signal(signals: &mut Option<StopSignals>) {
    #[cfg(unix)]
    if let Some((int, term)) = signals {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        return;
    }
    #[cfg(not(unix))]
    let _ = signals;
    let _ = tokio::signal::ctrl_c().await;
}
