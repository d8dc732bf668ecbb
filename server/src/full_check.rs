//! The check of every stored entry, after the hub serves.
//!
//! Start-up checks only what no signed checkpoint covers (see
//! `channel_log`), so that a restart does not take longer as history
//! grows. The covered entries are checked here instead, one by one, on a
//! thread at the lowest OS priority (nice 19, on Linux, as heavy queries)
//! so that the exchange gets the CPU first. An entry found altered,
//! missing or out of place stops the hub through the fatal path
//! (`fatal::altered`), naming the channel and entry: it must not go on
//! serving history it cannot vouch for. The check ends early when the hub
//! stops. `tongbao-hub verify-data` runs the same check offline.

use crate::channel_log::{LogError, check_entries_deep};
use crate::store::{ChannelHead, Store};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// How the check of one channel ended early.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error(transparent)]
    Failed(#[from] LogError),
    #[error("the hub is stopping")]
    Stopping,
}

/// Starts checking every entry of `heads` (the channels as they were at
/// start; later entries were checked as they were appended).
pub fn start(
    store: Arc<dyn Store>,
    heads: BTreeMap<String, ChannelHead>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tongbao-full-check".into())
        .spawn(move || run(store.as_ref(), &heads, &shutdown))
}

fn run(store: &dyn Store, heads: &BTreeMap<String, ChannelHead>, shutdown: &watch::Receiver<bool>) {
    lower_priority();
    crate::failpoint::pause("full-check");
    let began = Instant::now();
    match check_all(store, heads, shutdown) {
        Ok(entries) => tracing::info!(
            channels = heads.len(),
            entries,
            elapsed_ms = began.elapsed().as_millis() as u64,
            "every stored entry matches its leaf hash, chain and tree"
        ),
        Err(Ended::Stopping) => {
            tracing::info!("the check of every stored entry stopped with the hub")
        }
        // The store failing a read says nothing about the data: the hub
        // goes on (its calls meet the same failure), and the next start
        // checks again.
        Err(Ended::Failed(LogError::Store(e))) => tracing::error!(
            error = %e,
            "the check of every stored entry stopped: the store could not be read; the next start checks again"
        ),
        Err(Ended::Failed(e)) => crate::fatal::altered(e.to_string()),
    }
}

/// Checks every channel in turn; returns how many entries it checked.
fn check_all(
    store: &dyn Store,
    heads: &BTreeMap<String, ChannelHead>,
    shutdown: &watch::Receiver<bool>,
) -> Result<u64, Ended> {
    let stopping = || *shutdown.borrow();
    let mut entries = 0u64;
    for (channel, head) in heads {
        if stopping() {
            return Err(Ended::Stopping);
        }
        check_entries_deep(store, channel, head, |_| {
            entries += 1;
            if stopping() {
                return Err(Ended::Stopping);
            }
            Ok(())
        })?;
    }
    Ok(entries)
}

/// Nice 19 for this thread (elsewhere the call may renice the process).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) =
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
    {
        tracing::warn!(error = ?e, "the check of every entry runs at normal priority: lowering it failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[test]
    fn a_stopping_hub_ends_the_check_at_once() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), true)?);
        // A channel said to hold entries the store lacks: a check that ran
        // would report them missing; a stopping hub's check never looks.
        let heads = BTreeMap::from([(
            "tax".to_string(),
            ChannelHead {
                next_seq: 3,
                last_leaf_hash: [0; 32],
                last_hub_micros: 0,
            },
        )]);
        let (_stop, stopping) = watch::channel(true);
        let ended = check_all(store.as_ref(), &heads, &stopping);
        assert!(matches!(ended, Err(Ended::Stopping)), "{ended:?}");
        // Serving, the same check names what it found.
        let (_stop, serving) = watch::channel(false);
        let ended = check_all(store.as_ref(), &heads, &serving);
        match ended {
            Err(Ended::Failed(e)) => assert_eq!(e.to_string(), "channel tax: entry 0 is missing"),
            other => return Err(format!("not refused: {other:?}").into()),
        }
        Ok(())
    }
}
