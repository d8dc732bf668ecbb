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
//! What the client saw acknowledged is kept in memory, per client (and
//! its clones): each position is checked against what was acknowledged
//! before the push was sent, so concurrent pushes answered out of order
//! are not mistaken for a rollback.

use super::Client;
use super::retry::{FIRST_BACKOFF, backoff_after};
use crate::ClientError;
use crate::trust::keep_evidence;
use std::collections::HashMap;
use std::sync::Mutex;

/// The size of each channel as pushes acknowledged it so far.
#[derive(Debug, Default)]
pub(super) struct Acknowledged(Mutex<HashMap<String, u64>>);

impl Acknowledged {
    /// `channel`'s size known from acknowledged pushes (0: none seen).
    fn size(&self, channel: &str) -> u64 {
        match self.0.lock() {
            Ok(sizes) => sizes.get(channel).copied().unwrap_or(0),
            Err(poisoned) => poisoned.into_inner().get(channel).copied().unwrap_or(0),
        }
    }

    /// An acknowledged position: the channel holds `seq + 1` entries at least.
    fn raise(&self, channel: &str, seq: u64) {
        let mut sizes = match self.0.lock() {
            Ok(sizes) => sizes,
            Err(poisoned) => poisoned.into_inner(),
        };
        let size = sizes.entry(channel.to_string()).or_insert(0);
        *size = (*size).max(seq.saturating_add(1));
    }
}

/// One position a push was answered with.
pub(super) struct Position {
    pub(super) channel: String,
    pub(super) seq: u64,
    /// A repeat, answered with the original position: not a new append.
    pub(super) duplicate: bool,
}

/// The first position of `answered` in `channel` that is a new append
/// below `known`: the replica that gave it is behind.
fn behind(answered: &[Position], channel: &str, known: u64) -> Option<u64> {
    answered
        .iter()
        .find(|p| p.channel == channel && !p.duplicate && p.seq < known)
        .map(|p| p.seq)
}

impl Client {
    /// Makes a push call (repeated while plausible, as every push is) to
    /// `channel`, and applies the behind rule to the `positions` of its
    /// answer: see the module's doc.
    pub(super) async fn push_not_behind<T, F, Fut>(
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
        loop {
            let known = self.acknowledged.size(channel);
            let answer = self.repeat_while_plausible("push", &mut call).await?;
            let generation = self.live.generation();
            let answered = positions(&answer);
            let Some(served) = behind(&answered, channel, known) else {
                for p in &answered {
                    self.acknowledged.raise(&p.channel, p.seq);
                }
                return Ok(answer);
            };
            let hub = self.hub();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self.live.hubs.len() < 2 || left.is_zero() {
                return Err(self.push_rollback(channel, known, served, &hub));
            }
            tracing::warn!(%hub, channel, served, acknowledged = known, "the hub appended a push below a position acknowledged earlier (behind); pushing on the other replicas");
            let failure = ClientError::Connect {
                hub,
                reason: format!(
                    "behind: appended a new push at seq {served}, below the size {known} acknowledged earlier"
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
        assert_eq!(behind(&[at("tax", 6, false)], "tax", size), None);
        assert_eq!(behind(&[at("tax", 5, false)], "tax", size), Some(5));
        assert_eq!(
            behind(&[at("tax", 2, true)], "tax", size),
            None,
            "a repeat keeps its original position"
        );
        assert_eq!(
            behind(&[at("finance", 0, false)], "tax", size),
            None,
            "another channel's positions are its own"
        );
        assert_eq!(
            behind(&[at("tax", 7, false), at("tax", 1, false)], "tax", size),
            Some(1)
        );
    }
}
