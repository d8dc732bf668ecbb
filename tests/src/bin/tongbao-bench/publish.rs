//! The publishers: pre-signed messages pushed either as fast as `W` in
//! flight allow (throughput) or on an open-loop schedule (fixed rate),
//! with when each push was sent and answered.

use futures::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tongbao_client::{Client, PushReceipt};
use tongbao_proto::pb;

/// What one publisher's phase produced.
#[derive(Default)]
pub struct Published {
    /// Push answered durable, from when it was sent (or scheduled).
    pub latencies: Vec<Duration>,
    /// When each appended entry's push was sent (or scheduled).
    pub sent_at: HashMap<(String, u64), Instant>,
    pub receipts: Vec<PushReceipt>,
    pub errors: Vec<String>,
    pub last_answer: Option<Instant>,
}

impl Published {
    pub fn absorb(&mut self, other: Published) {
        self.latencies.extend(other.latencies);
        self.sent_at.extend(other.sent_at);
        self.receipts.extend(other.receipts);
        self.errors.extend(other.errors);
        self.last_answer = match (self.last_answer, other.last_answer) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    fn record(&mut self, sent: Instant, answered: Instant, r: Result<PushReceipt, String>) {
        self.last_answer = Some(self.last_answer.map_or(answered, |t| t.max(answered)));
        self.latencies
            .push(answered.saturating_duration_since(sent));
        match r {
            Ok(receipt) => {
                self.sent_at
                    .insert((receipt.channel.clone(), receipt.seq), sent);
                self.receipts.push(receipt);
            }
            Err(e) => self.errors.push(e),
        }
    }
}

/// Pushes pre-signed messages with `in_flight` outstanding at a time.
pub async fn publish(
    client: Client,
    messages: Vec<pb::SignedMessage>,
    in_flight: usize,
    batch: usize,
) -> Published {
    let mut out = Published {
        latencies: Vec::with_capacity(messages.len()),
        sent_at: HashMap::with_capacity(messages.len()),
        receipts: Vec::with_capacity(messages.len()),
        ..Published::default()
    };
    // Chunks of `batch` messages (1 = plain Push), `in_flight` messages outstanding.
    let chunks: Vec<Vec<pb::SignedMessage>> = messages
        .chunks(batch.max(1))
        .map(<[pb::SignedMessage]>::to_vec)
        .collect();
    let calls_in_flight = in_flight.div_ceil(batch.max(1)).max(1);
    let mut answers = futures::stream::iter(chunks)
        .map(|chunk| {
            let client = client.clone();
            async move {
                let sent = Instant::now();
                let results = if chunk.len() == 1 && batch <= 1 {
                    let mut chunk = chunk;
                    match chunk.pop() {
                        Some(m) => vec![client.push_signed(m).await.map_err(|e| e.to_string())],
                        None => Vec::new(),
                    }
                } else {
                    let n = chunk.len();
                    match client.push_signed_batch(chunk).await {
                        Ok(results) => results
                            .into_iter()
                            .map(|r| r.map_err(|e| e.to_string()))
                            .collect(),
                        Err(e) => (0..n).map(|_| Err(e.to_string())).collect(),
                    }
                };
                (sent, Instant::now(), results)
            }
        })
        .buffer_unordered(calls_in_flight);
    while let Some((sent, answered, results)) = answers.next().await {
        for r in results {
            out.record(sent, answered, r);
        }
    }
    out
}

/// Pushes message i at `start + i / rate`, whatever happened to earlier
/// ones (open loop); latency counts from that scheduled time. A thread of
/// its own keeps the schedule: tokio's timer rounds every deadline up to
/// the next millisecond, which added about 1 ms of the bench's own to
/// every figure.
pub async fn publish_at_rate(
    client: Client,
    messages: Vec<pb::SignedMessage>,
    rate: f64,
    start: Instant,
) -> Published {
    let mut out = Published::default();
    let (due, mut fire) = mpsc::unbounded_channel();
    let count = messages.len();
    let ticker = std::thread::Builder::new()
        .name("bench-schedule".into())
        .spawn(move || {
            for (i, m) in messages.into_iter().enumerate() {
                let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if due.send((scheduled, m)).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = ticker {
        out.errors
            .push(format!("cannot start the schedule thread: {e}"));
        return out;
    }
    let mut pushes = Vec::with_capacity(count);
    while let Some((scheduled, m)) = fire.recv().await {
        let client = client.clone();
        pushes.push(tokio::spawn(async move {
            let r = client.push_signed(m).await.map_err(|e| e.to_string());
            (scheduled, Instant::now(), r)
        }));
    }
    for p in pushes {
        match p.await {
            Ok((scheduled, answered, r)) => out.record(scheduled, answered, r),
            Err(e) => out.errors.push(format!("push task failed: {e}")),
        }
    }
    out
}
