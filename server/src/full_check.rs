//! The check of every stored entry, after the hub serves, again and again.
//!
//! Start-up checks only what no signed checkpoint covers (see
//! `channel_log`), so that a restart does not take longer as history
//! grows. The covered entries are checked here instead, one by one, on a
//! thread at the lowest OS priority (nice 19, on Linux, as heavy queries)
//! so that the exchange gets the CPU first. An entry found altered,
//! missing or out of place stops the hub through the fatal path
//! (`fatal::altered`), naming the channel and entry: it must not go on
//! serving history it cannot vouch for. `tongbao-hub verify-data` runs the
//! same check offline.
//!
//! The check goes in passes over every channel. Where a pass has got to
//! is kept in the store (a state space of its own), so a hub restarted
//! more often than a pass takes still reaches its last entry: the next
//! start goes on from there, chained from the leaf hash the pass last
//! checked. A start after a pass ended begins the next one, and a hub
//! that keeps running begins one a day after the last ended
//! ([`PASS_EVERY`]), so an entry altered after it was checked is found
//! too.

use crate::channel_log::{LogError, check_entries_deep_from};
use crate::store::{ChannelHead, StateBatch, Store};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tongbao_proto::canonical::GENESIS_PREVIOUS;
use tongbao_proto::{HASH_LEN, Hash};

/// The state space where the passes' progress is kept.
const SPACE: &str = "full-check";
/// The key of the current pass: its number and when it ended (0: going on).
const PASS_KEY: &[u8] = b"pass";
/// A channel's place in the pass is kept under this prefix and its name.
const PLACE_PREFIX: &[u8] = b"place/";
/// The place is saved after this many entries of a channel, and when the
/// hub stops: a crash repeats at most this many.
const SAVE_EVERY: u64 = 10_000;
/// A new pass begins this long after the last one ended.
pub const PASS_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// How the check of one channel ended early.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error(transparent)]
    Failed(#[from] LogError),
    #[error("the hub is stopping")]
    Stopping,
}

/// The pass going on or last ended, as kept in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pass {
    number: u64,
    /// Hub time the pass ended, or 0 while it goes on.
    ended_micros: i64,
}

/// Where a pass has got to in one channel: entries before `next_seq`
/// were checked, the last of them with leaf hash `previous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    pass: u64,
    next_seq: u64,
    previous: Hash,
}

/// Starts checking every entry: first of `heads` (the channels as they
/// were at start; later entries were checked as they were appended), then
/// of every channel as it is when each later pass begins.
pub fn start(
    store: Arc<dyn Store>,
    heads: BTreeMap<String, ChannelHead>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tongbao-full-check".into())
        .spawn(move || run(store.as_ref(), heads, shutdown))
}

fn run(store: &dyn Store, heads: BTreeMap<String, ChannelHead>, shutdown: watch::Receiver<bool>) {
    lower_priority();
    crate::failpoint::pause("full-check");
    let mut first = Some(heads);
    loop {
        let Some(pass) = begin_pass(store, first.is_some(), &shutdown) else {
            return;
        };
        let heads = match first.take().map_or_else(|| store.channel_heads(), Ok) {
            Ok(heads) => heads,
            Err(e) => {
                tracing::error!(error = %e, "the check of every stored entry stopped: the store could not be read; the next start goes on");
                return;
            }
        };
        let began = Instant::now();
        match check_all(store, pass, &heads, || *shutdown.borrow()) {
            Ok(entries) => {
                tracing::info!(
                    pass,
                    channels = heads.len(),
                    entries,
                    elapsed_ms = began.elapsed().as_millis() as u64,
                    "every stored entry matches its leaf hash, chain and tree"
                );
                save_pass(
                    store,
                    Pass {
                        number: pass,
                        ended_micros: tongbao_proto::now_micros(),
                    },
                );
            }
            Err(Ended::Stopping) => {
                tracing::info!(
                    pass,
                    "the check of every stored entry stopped with the hub; the next start goes on from there"
                );
                return;
            }
            // The store failing a read says nothing about the data: the hub
            // goes on (its calls meet the same failure), and the next start
            // goes on with the check.
            Err(Ended::Failed(LogError::Store(e))) => {
                tracing::error!(error = %e, "the check of every stored entry stopped: the store could not be read; the next start goes on");
                return;
            }
            Err(Ended::Failed(e)) => {
                crate::fatal::altered(e.to_string());
                return;
            }
        }
    }
}

/// The number of the pass to run: the one going on, or a new one, at
/// once at start or else once [`PASS_EVERY`] has gone by since the last
/// ended (None: the hub stops first).
fn begin_pass(store: &dyn Store, at_start: bool, shutdown: &watch::Receiver<bool>) -> Option<u64> {
    let last = load_pass(store);
    let number = match last {
        None => 1,
        Some(p) if p.ended_micros == 0 => return Some(p.number),
        Some(p) if at_start => p.number + 1,
        Some(p) => {
            let since = tongbao_proto::now_micros().saturating_sub(p.ended_micros);
            let since = Duration::from_micros(u64::try_from(since).unwrap_or(0));
            if !wait_unless_stopping(PASS_EVERY.saturating_sub(since), shutdown) {
                return None;
            }
            p.number + 1
        }
    };
    save_pass(
        store,
        Pass {
            number,
            ended_micros: 0,
        },
    );
    Some(number)
}

/// Sleeps for `wait`; false if the hub began stopping first.
fn wait_unless_stopping(wait: Duration, shutdown: &watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        tracing::error!("the check of every stored entry cannot wait for its next pass");
        return false;
    };
    let mut shutdown = shutdown.clone();
    rt.block_on(async move {
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = shutdown.wait_for(|stopping| *stopping) => false,
        }
    })
}

/// Checks every channel of `heads` from where pass `pass` got to; returns
/// how many entries it checked. `stopping` is asked after each entry.
fn check_all(
    store: &dyn Store,
    pass: u64,
    heads: &BTreeMap<String, ChannelHead>,
    stopping: impl Fn() -> bool,
) -> Result<u64, Ended> {
    let mut entries = 0u64;
    for (channel, head) in heads {
        if stopping() {
            return Err(Ended::Stopping);
        }
        let from = load_place(store, channel)
            .filter(|p| p.pass == pass)
            .unwrap_or(Place {
                pass,
                next_seq: 0,
                previous: GENESIS_PREVIOUS,
            });
        if from.next_seq > head.next_seq {
            // Checked earlier, and gone now.
            return Err(LogError::MissingEntry {
                channel: channel.clone(),
                seq: head.next_seq,
            }
            .into());
        }
        let mut at = from;
        let checked = check_entries_deep_from(
            store,
            channel,
            head,
            from.next_seq,
            from.previous,
            |seq, leaf| {
                entries += 1;
                at.next_seq = seq + 1;
                at.previous = leaf;
                if at.next_seq.is_multiple_of(SAVE_EVERY) {
                    save_place(store, channel, at);
                }
                if stopping() {
                    return Err(Ended::Stopping);
                }
                Ok(())
            },
        );
        match checked {
            Ok(()) => save_place(store, channel, at),
            Err(Ended::Stopping) => {
                save_place(store, channel, at);
                return Err(Ended::Stopping);
            }
            // Nothing is saved past a failure: the next start finds it again.
            Err(e) => return Err(e),
        }
    }
    Ok(entries)
}

fn load_pass(store: &dyn Store) -> Option<Pass> {
    let bytes = read(store, PASS_KEY)?;
    let (number, ended) = bytes.split_at_checked(8)?;
    Some(Pass {
        number: u64::from_be_bytes(number.try_into().ok()?),
        ended_micros: i64::from_be_bytes(ended.try_into().ok()?),
    })
}

fn save_pass(store: &dyn Store, pass: Pass) {
    let mut value = pass.number.to_be_bytes().to_vec();
    value.extend_from_slice(&pass.ended_micros.to_be_bytes());
    write(store, PASS_KEY.to_vec(), value);
}

fn place_key(channel: &str) -> Vec<u8> {
    [PLACE_PREFIX, channel.as_bytes()].concat()
}

/// A channel's place, or None when there is none or it cannot be read
/// (the channel is then checked from its first entry).
fn load_place(store: &dyn Store, channel: &str) -> Option<Place> {
    let bytes = read(store, &place_key(channel))?;
    if bytes.len() != 16 + HASH_LEN {
        tracing::warn!(
            channel,
            "the full check's place is malformed; checking from entry 0"
        );
        return None;
    }
    let (pass, rest) = bytes.split_at(8);
    let (next_seq, previous) = rest.split_at(8);
    Some(Place {
        pass: u64::from_be_bytes(pass.try_into().ok()?),
        next_seq: u64::from_be_bytes(next_seq.try_into().ok()?),
        previous: previous.try_into().ok()?,
    })
}

fn save_place(store: &dyn Store, channel: &str, place: Place) {
    let mut value = place.pass.to_be_bytes().to_vec();
    value.extend_from_slice(&place.next_seq.to_be_bytes());
    value.extend_from_slice(&place.previous);
    write(store, place_key(channel), value);
}

/// A progress record, or None (logged) when it cannot be read.
fn read(store: &dyn Store, key: &[u8]) -> Option<Vec<u8>> {
    store.state_get(SPACE, key).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the full check's progress cannot be read; starting over");
        None
    })
}

/// Progress is a convenience: a failed write only means a later start
/// repeats some of the work.
fn write(store: &dyn Store, key: Vec<u8>, value: Vec<u8>) {
    let mut batch = StateBatch::default();
    batch.insert(key, value);
    if let Err(e) = store
        .state_apply(SPACE, &batch)
        .and_then(|()| store.state_sync())
    {
        tracing::warn!(error = %e, "the full check's progress cannot be saved");
    }
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
mod tests;
