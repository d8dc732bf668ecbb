//! The hub's background tasks, started with it and ended by its shutdown
//! signal: certificate expiry warnings, the TLS watch, and the leader's
//! checkpoint cadence. Apart from the start so that it reads as steps.

use crate::channel_log::Logs;
use crate::tls::TlsReloader;
use std::sync::Arc;
use tokio::sync::watch;

/// Within this many days of its end a certificate is reported.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// Logs, at start and then daily, every certificate of the CA index beside
/// the config (when the hub runs from its PKI directory) that ends within
/// 30 days, so operators renew before departments are cut off.
pub(super) async fn expiry_watch(pki_dir: std::path::PathBuf, mut shutdown: watch::Receiver<bool>) {
    if !pki_dir.join("ca-index.json").is_file() {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(24 * 3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match crate::pki::lifecycle::list(&pki_dir, Some(time::Duration::days(EXPIRY_WARNING_DAYS)))
        {
            Ok(listing) => {
                for row in listing.rows {
                    tracing::warn!(
                        party = %row.party.uri(),
                        serial = %row.serial,
                        days_left = row.days_left,
                        "certificate expires soon; renew it with `tongbao-hub pki renew`"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the CA index to check expiry"),
        }
    }
}

/// How often the TLS files are checked for changes and open connections
/// for revoked or expired certificates.
const TLS_WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reloads the TLS material when a file changes (if `watch_files`) and
/// closes connections whose certificate is revoked or has expired, and
/// those idle for `idle_timeout`, every second.
pub(super) async fn tls_watch(
    tls: Arc<TlsReloader>,
    watch_files: bool,
    idle_timeout: Option<std::time::Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TLS_WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let watched = tls.clone();
        let reloaded = tokio::task::spawn_blocking(move || {
            let r = if watch_files {
                watched.reload_if_changed()
            } else {
                None
            };
            if let Some(idle) = idle_timeout {
                // A poisoned registry is reported by the lock: the hub stops.
                let _ = watched.connections().close_idle(idle);
            }
            (r, watched.sweep())
        })
        .await;
        match reloaded {
            Ok((Some(Err(e)), _)) => tracing::error!(
                error = %e,
                "TLS files changed but cannot be loaded; the previous material stays in use until they are fixed"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "TLS watch task failed"),
        }
    }
}

/// Signs a fresh checkpoint, each second, for every channel that grew.
pub(super) async fn checkpoint_cadence(logs: Arc<Logs>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let logs = logs.clone();
        let signed = tokio::task::spawn_blocking(move || {
            // Tests hold the signing here, entries committed but unsigned.
            crate::failpoint::pause("checkpoint-cadence");
            logs.refresh_all()
        });
        match signed.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "checkpoint signing failed"),
            Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
        }
    }
}
