//! The behind rule on the push path: a pusher's own channel never shrinks
//! under it.
//!
//! A channel's positions only grow, so a new push (one not answered as a
//! repeat) sent after a push was acknowledged at seq n is appended after
//! it: at n + 1 or later. A replica that answers a new push at n or below
//! serves a history that lost acknowledged entries (a database restored
//! from an older state, or promoted after missing commits): to the pusher
//! that is a rollback, exactly as a smaller checkpoint is to a reader.
//! The answer is never taken: as for checkpoints (`behind.rs`), the
//! client asks the other replicas of its config within its retry window,
//! pushing the same signed message there (its message id makes it
//! idempotent); a replica whose answer is not behind becomes the hub it
//! calls. If none does, or there is no other replica, the push fails with
//! [`ClientError::Rollback`], both answers kept as evidence.
//!
//! A behind replica keeps what it appended: pushed again (the caller
//! repeating it, the loop below with no other replica up, or another
//! replica reading the same database) it answers `duplicate` at the
//! position it gave before. So the message ids answered behind are kept
//! with that position, per channel (the last [`MAX_BEHIND`]), and a repeat
//! answered there is behind too; and within one call, an answer from a
//! hub that answered behind is never taken.
//!
//! What the client saw acknowledged is kept in memory, per client (and
//! its clones): each position is checked against what was acknowledged
//! before the push was sent, so concurrent pushes answered out of order
//! are not mistaken for a rollback.

use super::Client;
use super::retry::{FIRST_BACKOFF, backoff_after};
use crate::ClientError;
use crate::trust::keep_evidence;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Message ids answered behind kept per channel: enough for the pushes
/// and batches in flight while a replica is behind.
pub(super) const MAX_BEHIND: usize = 1024;

/// One channel as pushes acknowledged it.
#[derive(Debug, Default)]
struct ChannelAcks {
    /// The channel's size known from acknowledged pushes (0: none seen).
    size: u64,
    /// (message id, seq) answered behind, oldest first.
    behind: VecDeque<(String, u64)>,
}

/// What pushes acknowledged, per channel, and what was answered behind.
#[derive(Debug, Default)]
pub(super) struct Acknowledged(Mutex<HashMap<String, ChannelAcks>>);

impl Acknowledged {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, ChannelAcks>) -> T) -> T {
        match self.0.lock() {
            Ok(mut channels) => f(&mut channels),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// `channel`'s size known from acknowledged pushes (0: none seen).
    fn size(&self, channel: &str) -> u64 {
        self.with(|c| c.get(channel).map_or(0, |a| a.size))
    }

    /// An acknowledged position: the channel holds `seq + 1` entries at least.
    pub(super) fn raise(&self, channel: &str, seq: u64) {
        self.with(|c| {
            let acks = c.entry(channel.to_string()).or_default();
            acks.size = acks.size.max(seq.saturating_add(1));
        });
    }

    /// The positions of `answered` in `channel` below `known`, answered
    /// by a replica that is behind: kept so their repeats are known.
    fn keep_behind(&self, answered: &[Position], channel: &str, known: u64) {
        self.with(|c| {
            let acks = c.entry(channel.to_string()).or_default();
            for p in answered
                .iter()
                .filter(|p| p.channel == channel && p.seq < known)
            {
                let pair = (p.message_id.clone(), p.seq);
                if !acks.behind.contains(&pair) {
                    if acks.behind.len() >= MAX_BEHIND {
                        acks.behind.pop_front();
                    }
                    acks.behind.push_back(pair);
                }
            }
        });
    }

    /// Whether `message_id` was answered behind at `seq` in `channel`.
    fn was_behind(&self, channel: &str, message_id: &str, seq: u64) -> bool {
        self.with(|c| {
            c.get(channel).is_some_and(|a| {
                a.behind
                    .iter()
                    .any(|(id, at)| *at == seq && id == message_id)
            })
        })
    }

    /// The first position of `answered` in `channel` below `known` that
    /// is a new append, or a repeat of one answered behind before: the
    /// replica that gave it is behind.
    fn behind(&self, answered: &[Position], channel: &str, known: u64) -> Option<u64> {
        answered
            .iter()
            .find(|p| {
                p.channel == channel
                    && p.seq < known
                    && (!p.duplicate || self.was_behind(channel, &p.message_id, p.seq))
            })
            .map(|p| p.seq)
    }
}

/// One position a push was answered with.
pub(crate) struct Position {
    pub(crate) channel: String,
    pub(crate) seq: u64,
    /// A repeat, answered with the original position: not a new append.
    pub(crate) duplicate: bool,
    /// The pushed message's id.
    pub(crate) message_id: String,
}

impl Client {
    /// Makes a push call (repeated while plausible, as every push is) to
    /// `channel`, and applies the behind rule to the `positions` of its
    /// answer: see the module's doc.
    pub(crate) async fn push_not_behind<T, F, Fut>(
        &self,
        channel: &str,
        mut call: F,
        positions: impl Fn(&T) -> Vec<Position>,
    ) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = std::time::Instant::now() + self.live.config.push_retry_for;
        let mut wait = FIRST_BACKOFF;
        // The hubs that answered behind in this call, and the first such
        // answer (the evidence if no replica does better).
        let mut behind_hubs: Vec<String> = Vec::new();
        let mut first: Option<(u64, u64, String)> = None;
        loop {
            let known = self.acknowledged.size(channel);
            // Within this call's window: a pass never starts one anew.
            let answer = self.repeat_until("push", deadline, &mut call).await?;
            let generation = self.live.generation();
            let hub = self.hub();
            let answered = positions(&answer);
            let served = self.acknowledged.behind(&answered, channel, known);
            let served = match served {
                None if !behind_hubs.contains(&hub) => {
                    for p in &answered {
                        self.acknowledged.raise(&p.channel, p.seq);
                    }
                    return Ok(answer);
                }
                // Behind earlier in this call: not taken whatever it says.
                None => answered
                    .iter()
                    .filter(|p| p.channel == channel)
                    .map(|p| p.seq)
                    .min()
                    .unwrap_or(0),
                Some(served) => {
                    self.acknowledged.keep_behind(&answered, channel, known);
                    served
                }
            };
            let (known, served, behind_hub) = first
                .get_or_insert_with(|| (known, served, hub.clone()))
                .clone();
            if !behind_hubs.contains(&hub) {
                behind_hubs.push(hub.clone());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self.live.hubs.len() < 2 || left.is_zero() {
                return Err(self.push_rollback(channel, known, served, &behind_hub));
            }
            tracing::warn!(%hub, channel, served, acknowledged = known, "the hub appended a push below a position acknowledged earlier (behind); pushing on the other replicas");
            let failure = ClientError::Connect {
                hub,
                reason: format!(
                    "behind: appended a push at seq {served}, below the size {known} acknowledged earlier"
                ),
            };
            if let Err(e) = self.live.fail_over(generation, &failure, left).await {
                tracing::debug!(error = %e, "no other replica for the push yet");
            }
            wait = backoff_after(wait, deadline).await;
        }
    }

    /// The refusal of a push answered behind, with both answers kept.
    fn push_rollback(&self, channel: &str, known: u64, served: u64, hub: &str) -> ClientError {
        let evidence = keep_evidence(
            &self.trust_path,
            channel,
            &format!(
                "pushes to {channel} acknowledged by the hub up to seq {} (size {known})\n",
                known.saturating_sub(1)
            ),
            &format!("{hub} appended a new push to {channel} at seq {served}\n"),
        );
        ClientError::Rollback {
            channel: channel.to_string(),
            trusted_size: known,
            served_size: served.saturating_add(1),
            evidence: evidence.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(channel: &str, seq: u64, duplicate: bool) -> Position {
        Position {
            channel: channel.into(),
            seq,
            duplicate,
            message_id: format!("m{seq}"),
        }
    }

    #[test]
    fn only_a_new_append_below_what_was_acknowledged_is_behind() {
        let known = Acknowledged::default();
        assert_eq!(known.size("tax"), 0);
        known.raise("tax", 5);
        known.raise("tax", 3);
        assert_eq!(known.size("tax"), 6, "sizes only grow");
        let size = known.size("tax");
        let behind = |answered: &[Position]| known.behind(answered, "tax", size);
        assert_eq!(behind(&[at("tax", 6, false)]), None);
        assert_eq!(behind(&[at("tax", 5, false)]), Some(5));
        assert_eq!(
            behind(&[at("tax", 2, true)]),
            None,
            "a repeat keeps its original position"
        );
        assert_eq!(
            behind(&[at("finance", 0, false)]),
            None,
            "another channel's positions are its own"
        );
        assert_eq!(behind(&[at("tax", 7, false), at("tax", 1, false)]), Some(1));
    }

    #[test]
    fn a_repeat_of_a_push_answered_behind_is_behind_too() {
        let known = Acknowledged::default();
        known.raise("tax", 5);
        known.keep_behind(&[at("tax", 3, false), at("tax", 7, false)], "tax", 6);
        assert_eq!(
            known.behind(&[at("tax", 3, true)], "tax", 6),
            Some(3),
            "the behind replica (or one on its database) answering it again"
        );
        let elsewhere = Position {
            seq: 6,
            ..at("tax", 3, true)
        };
        assert_eq!(
            known.behind(&[elsewhere], "tax", 7),
            None,
            "the same message where a replica that is not behind appended it"
        );
        assert_eq!(
            known.behind(&[at("tax", 7, true)], "tax", 8),
            None,
            "only positions below what was acknowledged are kept"
        );
        assert_eq!(known.behind(&[at("tax", 3, true)], "finance", 6), None);
    }

    #[test]
    fn the_positions_answered_behind_are_bounded() {
        let known = Acknowledged::default();
        let size = MAX_BEHIND as u64 + 10;
        known.raise("tax", size);
        for seq in 0..size {
            known.keep_behind(&[at("tax", seq, false)], "tax", size);
        }
        assert_eq!(
            known.with(|c| c.get("tax").map(|a| a.behind.len())),
            Some(MAX_BEHIND)
        );
        assert_eq!(
            known.behind(&[at("tax", 0, true)], "tax", size),
            None,
            "the oldest went first"
        );
        assert_eq!(
            known.behind(&[at("tax", size - 1, true)], "tax", size),
            Some(size - 1)
        );
    }
}
