//! Pushes of concurrent callers, sent together.
//!
//! A departmental system that pushes from many tasks at once gets what
//! `PushBatch` gives (one call, one signature batch, one response for many
//! messages) without batching by hand. A push goes out at once while fewer
//! than [`MAX_IN_FLIGHT`] calls are in flight, so a lone push never waits
//! for company; beyond that, pushes wait, and the next call to finish
//! takes all that waited (up to [`BATCH_MESSAGES`] messages and
//! [`BATCH_BYTES`] bytes) in one `PushBatch`.

use crate::ClientError;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::oneshot;
use tongbao_proto::pb;

/// Calls (each a push or a batch of them) one client has in flight before
/// further pushes wait to go together.
pub(crate) const MAX_IN_FLIGHT: usize = 4;
/// Most messages one call carries.
pub(crate) const BATCH_MESSAGES: usize = 64;
/// Most bytes one call carries, each message counted with its framing in
/// the request: no more than the smallest request a hub accepts (256 KiB
/// beyond twice its body limit). A larger message goes out on its own.
pub(crate) const BATCH_BYTES: usize = 256 * 1024;

/// How a queued push was answered.
pub(crate) enum Answer {
    /// The hub's answer for this message, as `Push` would have given it.
    Done(Result<pb::PushResponse, ClientError>),
    /// Push it on its own: the batch's answer for it does not carry all
    /// `Push` would (the metadata of a refused signing key), or the hub
    /// answered the batch with a different count.
    Alone(Box<pb::SignedMessage>),
}

/// A push waiting for a call to carry it.
pub(crate) struct Waiting {
    pub signed: pb::SignedMessage,
    size: usize,
    pub reply: oneshot::Sender<Answer>,
}

impl Waiting {
    pub fn new(signed: pb::SignedMessage, size: usize, reply: oneshot::Sender<Answer>) -> Self {
        Self {
            signed,
            size,
            reply,
        }
    }
}

/// The pushes waiting and the calls in flight of one client (and its clones).
#[derive(Default)]
pub(crate) struct PushQueue {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Waiting>,
    in_flight: usize,
}

impl PushQueue {
    /// Takes a call slot for a push if one is free, handing the push back
    /// for its caller to send at once (and to ask [`PushQueue::next`]
    /// after); otherwise queues it. A free slot means nothing waits, since
    /// a finished call takes whatever waits before it frees its slot.
    pub fn start_or_queue(&self, w: Waiting) -> Option<Waiting> {
        let mut s = self.lock();
        if s.in_flight < MAX_IN_FLIGHT {
            s.in_flight += 1;
            Some(w)
        } else {
            s.waiting.push_back(w);
            None
        }
    }

    /// After a call: the pushes that waited meanwhile, to send on the same
    /// slot, or `None` when none did (the slot is free again).
    pub fn next(&self) -> Option<Vec<Waiting>> {
        let mut s = self.lock();
        if s.waiting.is_empty() {
            s.in_flight = s.in_flight.saturating_sub(1);
            None
        } else {
            Some(s.take())
        }
    }

    /// Frees a slot whose sender cannot go on (no runtime to send on, or
    /// its task was dropped). Pushes still waiting go with the next push.
    pub fn release(&self) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent at every step, so a panic elsewhere
        // while it was held leaves nothing to repair.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// The oldest waiting pushes that fit one call (at least one).
    fn take(&mut self) -> Vec<Waiting> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(w) = self.waiting.front() {
            let full = batch.len() == BATCH_MESSAGES || bytes + w.size > BATCH_BYTES;
            if full && !batch.is_empty() {
                break;
            }
            bytes += w.size;
            if let Some(w) = self.waiting.pop_front() {
                batch.push(w);
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(id: usize, size: usize) -> (Waiting, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        let signed = pb::SignedMessage {
            message: Some(pb::Message {
                message_id: format!("m-{id}"),
                ..Default::default()
            }),
            signature: None,
        };
        (Waiting::new(signed, size, tx), rx)
    }

    fn ids(batch: &[Waiting]) -> Vec<String> {
        batch
            .iter()
            .map(|w| w.signed.message_id().to_string())
            .collect()
    }

    /// Pushes that each go at once, until every call slot is taken.
    fn every_slot_taken(q: &PushQueue) -> Vec<oneshot::Receiver<Answer>> {
        (0..MAX_IN_FLIGHT)
            .map(|i| {
                let (w, rx) = waiting(i, 1000);
                let started = q.start_or_queue(w).map(|w| ids(&[w]));
                assert_eq!(
                    started,
                    Some(vec![format!("m-{i}")]),
                    "a push alone goes at once"
                );
                rx
            })
            .collect()
    }

    #[test]
    fn pushes_go_at_once_until_calls_are_in_flight_then_together_in_order() {
        let q = PushQueue::default();
        let mut receivers = every_slot_taken(&q);
        for i in MAX_IN_FLIGHT..MAX_IN_FLIGHT + BATCH_MESSAGES + 3 {
            let (w, rx) = waiting(i, 1000);
            receivers.push(rx);
            assert!(
                q.start_or_queue(w).is_none(),
                "push {i} waits: every slot is busy"
            );
        }
        let first = q.next().map(|b| ids(&b)).unwrap_or_default();
        let want: Vec<String> = (MAX_IN_FLIGHT..MAX_IN_FLIGHT + BATCH_MESSAGES)
            .map(|i| format!("m-{i}"))
            .collect();
        assert_eq!(first, want, "the oldest waiting, at most a batch");
        let (w, rx) = waiting(500, 10);
        receivers.push(rx);
        assert!(
            q.start_or_queue(w).is_none(),
            "a slot that took a batch is still busy"
        );
        assert_eq!(q.next().map(|b| b.len()), Some(4));
        // No one waits: each slot frees in turn, and a new push goes at once.
        for _ in 0..MAX_IN_FLIGHT {
            assert!(q.next().is_none());
        }
        let (w, _rx) = waiting(999, 10);
        assert!(q.start_or_queue(w).is_some());
    }

    #[test]
    fn a_call_carries_at_most_its_bytes_but_always_one_push() {
        let q = PushQueue::default();
        let mut keep = every_slot_taken(&q);
        for (i, size) in [(10, BATCH_BYTES / 2), (11, BATCH_BYTES / 2), (12, 1)] {
            let (w, rx) = waiting(i, size);
            keep.push(rx);
            assert!(q.start_or_queue(w).is_none());
        }
        let (w, rx) = waiting(13, BATCH_BYTES * 2);
        keep.push(rx);
        assert!(q.start_or_queue(w).is_none());
        assert_eq!(
            q.next().map(|b| ids(&b)),
            Some(vec!["m-10".into(), "m-11".into()])
        );
        assert_eq!(q.next().map(|b| ids(&b)), Some(vec!["m-12".into()]));
        assert_eq!(q.next().map(|b| ids(&b)), Some(vec!["m-13".into()]));
    }
}
