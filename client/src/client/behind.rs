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
use crate::ClientError;
use crate::trust::{TrustedCheckpoint, keep_evidence};
use std::sync::Arc;
use std::time::Duration;
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

/// The first wait between rounds over the replicas; it doubles up to a
/// second.
const FIRST_WAIT: Duration = Duration::from_millis(50);

impl Client {
    /// The latest checkpoint of `channel`, verified, with the connection
    /// of the replica that served it (proofs against it come from there).
    pub(super) async fn checkpoint_with_conn(
        &self,
        channel: &str,
    ) -> Result<(VerifiedCheckpoint, Arc<Conn>), ClientError> {
        let deadline = std::time::Instant::now() + self.live.config.push_retry_for;
        let mut wait = FIRST_WAIT;
        loop {
            let (note, conn) = self.current_checkpoint(channel).await?;
            let behind = match self.accept_checkpoint(&conn, channel, note).await? {
                Served::Accepted(cp) => return Ok((cp, conn)),
                Served::Behind(behind) => behind,
            };
            if self.live.hubs.len() < 2 {
                return Err(behind.rollback(&self.trust_path));
            }
            tracing::warn!(hub = %behind.hub, channel, served = behind.served_size, trusted = behind.trusted.size, "the hub serves a checkpoint older than one this client verified; asking the other replicas");
            if let Some(found) = self.checkpoint_elsewhere(channel, &conn).await? {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(behind.rollback(&self.trust_path));
            }
            tokio::time::sleep(wait.min(left)).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }

    /// The hub in use's latest checkpoint note of `channel`, and the
    /// connection that served it (after a failover, the new one's).
    async fn current_checkpoint(&self, channel: &str) -> Result<(String, Arc<Conn>), ClientError> {
        let request = pb::GetCheckpointRequest {
            channel: channel.to_string(),
        };
        self.read(move |conn| {
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
    /// Replicas that cannot be reached or are behind too are passed over;
    /// one that serves a fork ends the search with [`ClientError::Fork`].
    async fn checkpoint_elsewhere(
        &self,
        channel: &str,
        behind: &Conn,
    ) -> Result<Option<(VerifiedCheckpoint, Arc<Conn>)>, ClientError> {
        let n = self.live.hubs.len();
        for i in round_from(behind.hub + 1, n).take(n.saturating_sub(1)) {
            let Some(url) = self.live.hubs.get(i) else {
                continue;
            };
            let conn = match open_conn(&self.live.config, i, url).await {
                Ok(conn) => Arc::new(conn),
                Err(e) => {
                    tracing::debug!(hub = %url, error = %e, "replica not usable for a checkpoint");
                    continue;
                }
            };
            let note = match conn
                .log
                .clone()
                .get_checkpoint(pb::GetCheckpointRequest {
                    channel: channel.to_string(),
                })
                .await
            {
                Ok(r) => r.into_inner().note,
                Err(status) => {
                    tracing::debug!(hub = %url, error = %status, "replica did not serve a checkpoint");
                    continue;
                }
            };
            match self.accept_checkpoint(&conn, channel, note).await {
                Ok(Served::Accepted(cp)) => {
                    tracing::warn!(behind = %behind.url, now = %url, channel, size = cp.size, "continuing on a replica that is not behind");
                    self.live.install(conn.clone());
                    return Ok(Some((cp, conn)));
                }
                Ok(Served::Behind(_)) => {}
                Err(fork @ ClientError::Fork { .. }) => return Err(fork),
                Err(e) => {
                    tracing::debug!(hub = %url, error = %e, "replica's checkpoint not usable");
                }
            }
        }
        Ok(None)
    }
}
