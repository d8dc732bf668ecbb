//! The fan-out side: one subscriber per recipient unit, reading its inbox
//! from the start, noting each arrival once and acknowledging in batched
//! signed receipts beside the reading, as a departmental system would.

use crate::times::Times;
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tongbao_client::{Client, ClientError};
use tongbao_proto::pb;

/// How long the slow subscriber spends on each entry while it is slow.
const SLOW_PER_ENTRY: Duration = Duration::from_millis(5);

/// What one subscriber saw.
pub struct Received {
    pub unit: &'static str,
    /// When each entry arrived (verified) at this subscriber: its first
    /// arrival, so the keys are the entries seen.
    pub received_at: Times,
    /// When the receipt acknowledging each entry was answered durable.
    pub acked_at: Times,
    /// Entries the hub reported as newly acknowledged by this unit.
    pub newly_acknowledged: u64,
    /// Receipts this unit appended.
    pub receipts: u64,
    pub duplicates: u64,
    /// Entries that are not of this run, or not addressed to this unit.
    pub foreign: Vec<String>,
    pub error: Option<String>,
}

impl Received {
    pub fn new(unit: &'static str) -> Self {
        Self {
            unit,
            received_at: Times::default(),
            acked_at: Times::default(),
            newly_acknowledged: 0,
            receipts: 0,
            duplicates: 0,
            foreign: Vec::new(),
            error: None,
        }
    }

    /// Notes an entry's arrival; one that arrived before is a duplicate.
    pub fn arrived(&mut self, channel: &str, seq: u64) {
        let at = self.received_at.channel(channel);
        if !self.received_at.note(at, seq, Instant::now()) {
            self.duplicates += 1;
        }
    }
}

/// Per subscriber: how many entries it has acknowledged so far.
pub type Progress = Vec<Arc<AtomicUsize>>;

/// Waits until every subscriber acknowledged `count` entries; returns when
/// the last one got there, or None after the timeout.
pub async fn wait_acked(progress: &Progress, count: usize, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if progress.iter().all(|p| p.load(Ordering::Relaxed) >= count) {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Most entries one receipt covers.
const ACK_BATCH: usize = 256;
/// How long a partial batch waits for more entries before it is sent.
const ACK_LINGER: Duration = Duration::from_millis(20);

/// What one subscriber's receipts achieved.
#[derive(Default)]
struct Acked {
    acked_at: Times,
    newly_acknowledged: u64,
    receipts: u64,
    error: Option<String>,
}

/// Sends one receipt per batch of pins it is handed, in order, and records
/// when each entry was acknowledged. Runs beside the subscriber, as a
/// departmental system would, so that reading the inbox never waits for a
/// receipt to be answered.
async fn acknowledge(
    client: Client,
    mut batches: mpsc::Receiver<Vec<pb::EntryPin>>,
    progress: Arc<AtomicUsize>,
) -> Acked {
    let mut a = Acked::default();
    while let Some(pins) = batches.recv().await {
        let keys: Vec<(usize, u64)> = pins
            .iter()
            .map(|p| (a.acked_at.channel(&p.channel), p.seq))
            .collect();
        let outcome = match client.ack_pins(pins).await {
            Ok(o) => o,
            Err(e) => {
                a.error = Some(format!("acknowledge failed: {e}"));
                break;
            }
        };
        let now = Instant::now();
        a.newly_acknowledged += u64::from(outcome.newly_acknowledged);
        a.receipts += u64::from(outcome.receipt.is_some());
        for (channel, seq) in keys {
            a.acked_at.note(channel, seq, now);
        }
        progress.store(a.acked_at.len(), Ordering::Relaxed);
    }
    a
}

/// Reads one unit's inbox until stopped, recording and acknowledging every
/// (channel, seq). While `slow` is set, dawdles over each entry.
pub async fn subscriber(
    unit: &'static str,
    client: Client,
    ids: Arc<HashSet<String>>,
    mut stop: watch::Receiver<bool>,
    progress: Arc<AtomicUsize>,
    slow: Option<Arc<AtomicBool>>,
) -> Received {
    let mut r = Received::new(unit);
    let mut inbox = Box::pin(client.subscribe(0));
    let (ack_tx, ack_rx) = mpsc::channel::<Vec<pb::EntryPin>>(1024);
    let acker = tokio::spawn(acknowledge(client.clone(), ack_rx, progress));
    let mut pending: Vec<pb::EntryPin> = Vec::new();
    // A partial receipt goes out ACK_LINGER after its first entry arrived.
    let mut first_pending = Instant::now();
    loop {
        let linger = if pending.is_empty() {
            Duration::from_secs(3600)
        } else {
            ACK_LINGER.saturating_sub(first_pending.elapsed())
        };
        let next: Option<Result<tongbao_client::VerifiedEntry, ClientError>> = tokio::select! {
            n = inbox.next() => n,
            _ = tokio::time::sleep(linger) => {
                if ack_tx.send(std::mem::take(&mut pending)).await.is_err() {
                    break; // the acknowledger stopped: its error says why
                }
                continue;
            }
            _ = stop.changed() => break,
        };
        match next {
            Some(Ok(entry)) => {
                r.arrived(entry.channel(), entry.seq());
                if pending.is_empty() {
                    first_pending = Instant::now();
                }
                pending.push(entry.pin());
                let m = entry.message();
                if !ids.contains(&m.message_id)
                    || m.sender != entry.channel()
                    || !entry.entry.recipients.iter().any(|x| x == unit)
                {
                    r.foreign.push(format!(
                        "{}:{} (message id {:?}, sender {}, recipients {:?})",
                        entry.channel(),
                        entry.seq(),
                        m.message_id,
                        m.sender,
                        entry.entry.recipients
                    ));
                }
                if pending.len() >= ACK_BATCH
                    && ack_tx.send(std::mem::take(&mut pending)).await.is_err()
                {
                    break; // the acknowledger stopped: its error says why
                }
                if slow.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                    tokio::time::sleep(SLOW_PER_ENTRY).await;
                }
            }
            Some(Err(e)) => {
                r.error = Some(e.to_string());
                break;
            }
            None => {
                r.error = Some("subscription stream ended".into());
                break;
            }
        }
    }
    drop(ack_tx);
    match acker.await {
        Ok(a) => {
            r.acked_at = a.acked_at;
            r.newly_acknowledged = a.newly_acknowledged;
            r.receipts = a.receipts;
            if r.error.is_none() {
                r.error = a.error;
            }
        }
        Err(e) => r.error = r.error.take().or(Some(format!("acknowledger failed: {e}"))),
    }
    r
}
