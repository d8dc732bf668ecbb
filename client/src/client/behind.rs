//! The behind-replica rule: what a client does when the hub it calls
//! serves a checkpoint smaller than one it verified earlier.
//!
//! A replica on a database restored from an older state, or promoted
//! after missing commits, serves an older history; to this client that
//! looks exactly like a rollback. The smaller checkpoint is never
//! accepted and the trusted one never forgotten. The client asks the
//! other replicas of its config, one round at a time, for up to its retry
//! window (`push_retry_ms`): the first whose checkpoint extends the
//! trusted one becomes the hub it calls. If none does, the answer is
//! [`ClientError::Rollback`], with both signed checkpoints kept as
//! evidence. With a single hub there is no other replica to ask: the
//! rollback is reported at once.

use super::Client;
use super::connection::{Conn, open_conn, round_from};
use super::proofs::VerifiedCheckpoint;
use super::retry::{FIRST_BACKOFF, backoff_after};
use crate::ClientError;
use crate::trust::{TrustedCheckpoint, keep_evidence};
use std::sync::Arc;
use tongbao_proto::pb;

/// What one hub's latest checkpoint of a channel is to this client.
pub(super) enum Served {
    /// Verified, and extends (or equals) the trusted checkpoint.
    Accepted(VerifiedCheckpoint),
    /// Smaller than the checkpoint verified earlier.
    Behind(Behind),
}

/// A checkpoint smaller than the trusted one, and who served it.
pub(super) struct Behind {
    pub(super) channel: String,
    pub(super) hub: String,
    pub(super) trusted: TrustedCheckpoint,
    pub(super) served_size: u64,
    pub(super) served_note: String,
}

impl Behind {
    /// The refusal, with both signed checkpoints kept as evidence.
    fn rollback(self, trust_path: &std::path::Path) -> ClientError {
        let evidence = keep_evidence(
            trust_path,
            &self.channel,
            &self.trusted.note,
            &self.served_note,
        );
        ClientError::Rollback {
            channel: self.channel,
            trusted_size: self.trusted.size,
            served_size: self.served_size,
            evidence: evidence.display().to_string(),
        }
    }
}

impl Client {
    /// The latest checkpoint of `channel`, verified, with the connection
    /// of the replica that served it (proofs against it come from there).
    pub(super) async fn checkpoint_with_conn(
        &self,
        channel: &str,
    ) -> Result<(VerifiedCheckpoint, Arc<Conn>), ClientError> {
        let deadline = std::time::Instant::now() + self.live.config.push_retry_for;
        self.checkpoint_until(channel, deadline).await
    }

    /// [`Client::checkpoint_with_conn`] within the window of a caller
    /// that repeats it (ending at `deadline`), not a window of its own.
    pub(super) async fn checkpoint_until(
        &self,
        channel: &str,
        deadline: std::time::Instant,
    ) -> Result<(VerifiedCheckpoint, Arc<Conn>), ClientError> {
        // Between rounds: 100 ms doubling to a second, as for calls.
        let mut wait = FIRST_BACKOFF;
        loop {
            let (note, conn) = self.current_checkpoint(channel, deadline).await?;
            let behind = match self.accept_checkpoint(&conn, channel, note).await {
                Ok(Served::Accepted(cp)) => return Ok((cp, conn)),
                Ok(Served::Behind(behind)) => behind,
                // The replica went away between the checkpoint and its
                // proof: asked again, after a failover if need be.
                Err(e) if self.may_ask_again(&e, deadline) => {
                    tracing::debug!(error = %e, channel, "checkpoint interrupted; asking again");
                    wait = backoff_after(wait, deadline).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if self.live.hubs.len() < 2 {
                return Err(behind.rollback(&self.trust_path));
            }
            tracing::warn!(hub = %behind.hub, channel, served = behind.served_size, trusted = behind.trusted.size, "the hub serves a checkpoint older than one this client verified; asking the other replicas");
            if let Some(found) = self.checkpoint_elsewhere(channel, &conn, deadline).await? {
                return Ok(found);
            }
            if std::time::Instant::now() >= deadline {
                return Err(behind.rollback(&self.trust_path));
            }
            wait = backoff_after(wait, deadline).await;
        }
    }

    /// As [`Client::checkpoint_with_conn`], of a size that covers entry
    /// `seq`: a standby serves only what the leader signed, so after a
    /// failover it may not cover yet what the leader delivered; with
    /// several hubs it is asked again (100 ms doubling to a second) until
    /// it does or the one retry window ends (then the checkpoint as it is,
    /// and the proof refused). With a single hub there is no standby to
    /// wait for: the checkpoint is returned at once.
    pub(super) async fn checkpoint_covering(
        &self,
        channel: &str,
        seq: u64,
        deadline: std::time::Instant,
    ) -> Result<(VerifiedCheckpoint, Arc<Conn>), ClientError> {
        let mut wait = FIRST_BACKOFF;
        loop {
            let (cp, conn) = self.checkpoint_until(channel, deadline).await?;
            let may_be_standby = self.live.hubs.len() > 1;
            if cp.size > seq || !may_be_standby || std::time::Instant::now() >= deadline {
                return Ok((cp, conn));
            }
            tracing::debug!(hub = %conn.url, channel, size = cp.size, seq, "the replica has not signed this entry yet; asking again");
            wait = backoff_after(wait, deadline).await;
        }
    }

    /// Whether a checkpoint check that failed with `e` is worth making
    /// again: a transient failure, another replica to go to, time left.
    fn may_ask_again(&self, e: &ClientError, deadline: std::time::Instant) -> bool {
        e.is_transient() && self.live.hubs.len() > 1 && std::time::Instant::now() < deadline
    }

    /// The hub in use's latest checkpoint note of `channel`, and the
    /// connection that served it (after a failover, the new one's).
    async fn current_checkpoint(
        &self,
        channel: &str,
        deadline: std::time::Instant,
    ) -> Result<(String, Arc<Conn>), ClientError> {
        let request = pb::GetCheckpointRequest {
            channel: channel.to_string(),
        };
        self.read_until(deadline, move |conn| {
            let mut log = conn.log.clone();
            let request = request.clone();
            async move {
                let served = log.get_checkpoint(request).await?;
                Ok(served.map(|r| (r.note, conn)))
            }
        })
        .await
    }

    /// One round over the replicas after the one of `behind`: the first
    /// whose checkpoint extends the trusted one becomes the hub in use.
    /// Replicas that cannot be reached, give no answer before `deadline`
    /// or are behind too are passed over; one that serves a fork ends the
    /// search with [`ClientError::Fork`]. Every call is given only what is
    /// left of the window, so a silent replica cannot hold the search.
    async fn checkpoint_elsewhere(
        &self,
        channel: &str,
        behind: &Conn,
        deadline: std::time::Instant,
    ) -> Result<Option<(VerifiedCheckpoint, Arc<Conn>)>, ClientError> {
        let n = self.live.hubs.len();
        for i in round_from(behind.hub + 1, n).take(n.saturating_sub(1)) {
            let Some(url) = self.live.hubs.get(i) else {
                continue;
            };
            match self.checkpoint_of(channel, i, url, deadline).await {
                Ok(Some((Served::Accepted(cp), conn))) => {
                    tracing::warn!(behind = %behind.url, now = %url, channel, size = cp.size, "continuing on a replica that is not behind");
                    // Under the lock of failovers and reloads, so that a
                    // concurrent one cannot put the behind replica back.
                    let _one = self.live.reloading.lock().await;
                    self.live.install(conn.clone());
                    return Ok(Some((cp, conn)));
                }
                Ok(Some((Served::Behind(_), _))) => {}
                Ok(None) => return Ok(None),
                Err(fork @ ClientError::Fork { .. }) => return Err(fork),
                Err(e) => {
                    tracing::debug!(hub = %url, error = %e, "replica's checkpoint not usable");
                }
            }
        }
        Ok(None)
    }

    /// Hub `index`'s latest checkpoint of `channel`, checked against the
    /// trusted one, with a connection to it; each step given what is left
    /// until `deadline`. None when the window ended before it was asked.
    async fn checkpoint_of(
        &self,
        channel: &str,
        index: usize,
        url: &str,
        deadline: std::time::Instant,
    ) -> Result<Option<(Served, Arc<Conn>)>, ClientError> {
        let left = || deadline.saturating_duration_since(std::time::Instant::now());
        if left().is_zero() {
            return Ok(None);
        }
        let silent = |step: &str| ClientError::Connect {
            hub: url.to_string(),
            reason: format!("no {step} before the retry window ended"),
        };
        let conn = tokio::time::timeout(left(), open_conn(&self.live.config, index, url))
            .await
            .map_err(|_| silent("connection"))??;
        let conn = Arc::new(conn);
        let request = pb::GetCheckpointRequest {
            channel: channel.to_string(),
        };
        let note = tokio::time::timeout(left(), conn.log.clone().get_checkpoint(request))
            .await
            .map_err(|_| silent("checkpoint"))??
            .into_inner()
            .note;
        let served = tokio::time::timeout(left(), self.accept_checkpoint(&conn, channel, note))
            .await
            .map_err(|_| silent("consistency proof"))??;
        Ok(Some((served, conn)))
    }
}
