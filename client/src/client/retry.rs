//! When a failed call is worth repeating, and the repeating of idempotent
//! calls (pushes, receipts, workflow steps) across interruptions,
//! reconnects and failovers to another replica of the hub.

use super::Client;
use super::connection::read_file;
use crate::ClientError;
use std::time::Duration;
use tongbao_proto::replica::refused_by_standby;

/// Longest one attempt of a repeated call waits for an answer.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The first wait before a call is repeated; it doubles up to
/// [`LAST_BACKOFF`].
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts of a repeated call.
const LAST_BACKOFF: Duration = Duration::from_secs(1);

/// Sleeps `backoff` (never past `deadline`) and returns the next wait.
pub(super) async fn backoff_after(backoff: Duration, deadline: std::time::Instant) -> Duration {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    tokio::time::sleep(backoff.min(left)).await;
    (backoff * 2).min(LAST_BACKOFF)
}

/// The error a repeated call ends with once its window is over: the
/// last attempt's, or, when that only says the hub in use is gone and
/// the round before found no hub at all, that round's (naming each hub).
pub(super) fn last_error(attempt: ClientError, unreachable: Option<ClientError>) -> ClientError {
    match unreachable {
        Some(none) if attempt.is_transient() => none,
        _ => attempt,
    }
}

/// How one attempt of a repeated call ended.
pub(super) enum Attempt<T> {
    /// The hub answered: the call is done.
    Answered(T),
    /// A standby refused it: the call goes on to the next replica.
    PastStandby,
    /// It failed: the loop decides whether to make it again.
    Failed(ClientError),
}

/// What to do after a call failed.
pub(super) enum NextStep {
    /// Repeat it: the connection was switched, or the hub is there and
    /// the failure was transient.
    Retry,
    /// No hub answers at all (this error says how): waiting is
    /// worth it only for callers that live long (subscriptions).
    HubUnreachable(ClientError),
    /// Repeating cannot help.
    GiveUp,
}

impl Client {
    /// Whether a failed call is worth repeating: the error is transient,
    /// or the client switched connections meanwhile, or its files changed.
    /// A refused certificate is confirmed with a fresh handshake (given at
    /// most `probe_within`), so a revoked client gets "certificate revoked"
    /// instead of retrying; a hub that cannot be reached is left for the
    /// next replica of the config that can (one round), and when none
    /// can, that is reported apart, for callers that should not wait.
    pub(super) async fn worth_retrying(
        &self,
        e: &ClientError,
        generation: u64,
        probe_within: Duration,
    ) -> Result<NextStep, ClientError> {
        if self.live.generation() != generation {
            return Ok(NextStep::Retry);
        }
        if !e.is_transient() && !matches!(e, ClientError::CertificateRefused { .. }) {
            return Ok(NextStep::GiveUp);
        }
        if self.live.reload(false).await.unwrap_or(false) {
            return Ok(NextStep::Retry);
        }
        let config = &self.live.config;
        let hub = self.live.conn().url.clone();
        let ca = read_file("CA certificate", &config.ca)?;
        let cert = read_file("certificate", &config.cert)?;
        let key = read_file("TLS key", &config.key)?;
        let probed = tokio::time::timeout(
            probe_within,
            crate::probe::probe(config, &hub, &ca, &cert, &key),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::Connect {
                hub: hub.clone(),
                reason: format!("no answer within {probe_within:?}"),
            })
        });
        match probed {
            Err(refused @ ClientError::CertificateRefused { .. }) => Err(refused),
            Err(unreachable @ ClientError::Connect { .. }) if e.is_transient() => {
                // Another replica, if one can be used, before waiting here.
                let unreachable = if self.live.hubs.len() > 1 {
                    match self
                        .live
                        .fail_over(generation, &unreachable, probe_within)
                        .await
                    {
                        Ok(()) => return Ok(NextStep::Retry),
                        Err(none @ ClientError::NoHubAnswers { .. }) => none,
                        Err(other) => return Err(other),
                    }
                } else {
                    unreachable
                };
                // Only a hub that does not even accept TCP is gone; a
                // handshake that failed otherwise (files being replaced,
                // load) is retried.
                if crate::probe::accepts_tcp(&hub, probe_within).await {
                    Ok(NextStep::Retry)
                } else {
                    Ok(NextStep::HubUnreachable(unreachable))
                }
            }
            _ if e.is_transient() => Ok(NextStep::Retry),
            _ => Ok(NextStep::GiveUp),
        }
    }

    /// One attempt of a call on the hub in use, waiting [`ATTEMPT_TIMEOUT`]
    /// at most (no answer at all counts as interrupted, named after
    /// `what`); a standby's refusal moves the call on ([`Client::past_standby`]).
    pub(super) async fn attempt<T>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
        what: &str,
        generation: u64,
        deadline: std::time::Instant,
        standbys: &mut usize,
        backoff: &mut Duration,
    ) -> Attempt<T> {
        let hub = self.live.conn().url.clone();
        match tokio::time::timeout(ATTEMPT_TIMEOUT, call).await {
            Ok(Ok(r)) => Attempt::Answered(r.into_inner()),
            Ok(Err(status)) => {
                if self
                    .past_standby(&status, generation, deadline, standbys, backoff)
                    .await
                {
                    Attempt::PastStandby
                } else {
                    Attempt::Failed(ClientError::from(status))
                }
            }
            Err(_) => Attempt::Failed(ClientError::Connect {
                hub,
                reason: format!("no answer to {what} within {ATTEMPT_TIMEOUT:?}"),
            }),
        }
    }

    /// After a standby refused a call (`status`; any other is left to the
    /// caller: false), moves to the next replica, which then stays in use
    /// (the last to accept a write): at once for a round of them, then,
    /// all standbys (a takeover), after the usual wait. True: call again.
    pub(super) async fn past_standby(
        &self,
        status: &tonic::Status,
        generation: u64,
        deadline: std::time::Instant,
        standbys: &mut usize,
        backoff: &mut Duration,
    ) -> bool {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if !refused_by_standby(status) || left.is_zero() {
            return false;
        }
        *standbys += 1;
        let e = ClientError::from(status.clone());
        let moved = self.live.fail_over(generation, &e, left).await.is_ok();
        if !moved || *standbys >= self.live.hubs.len() {
            *backoff = backoff_after(*backoff, deadline).await;
        }
        true
    }

    /// Runs an idempotent call, repeating it across interruptions,
    /// reconnects and failovers until `deadline` (the end of the caller's
    /// retry window, `push_retry_for` from its start), waiting 100 ms
    /// doubling to 1 s between attempts: on the hub in use, or on the
    /// replica the client failed over to. A standby's refusal of a write
    /// sends it at once to the next replica, without a wait (up to one
    /// round of them; then it is a takeover, waited out as one). With several hubs, a moment when
    /// none accepts connections (a takeover) is waited out the same way;
    /// with a single hub that does not accept connections, fails at once.
    pub(super) async fn repeat_until<T, F, Fut>(
        &self,
        what: &'static str,
        deadline: std::time::Instant,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = FIRST_BACKOFF;
        // Why no hub could be used, after the last round that found none.
        let mut unreachable = None;
        // Standby refusals in a row: a round of them is a takeover.
        let mut standbys = 0;
        loop {
            let generation = self.live.generation();
            // An attempt that gets no answer at all (a connection that went
            // silent) counts as interrupted: the hub is probed, and the
            // call repeated or given up, instead of waiting forever.
            // Not cut to what is left of the window: a window of 0 still
            // means one whole attempt.
            let attempt = call();
            let e = match self
                .attempt(
                    attempt,
                    &format!("the {what}"),
                    generation,
                    deadline,
                    &mut standbys,
                    &mut backoff,
                )
                .await
            {
                Attempt::Answered(r) => return Ok(r),
                Attempt::PastStandby => continue,
                Attempt::Failed(e) => e,
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(last_error(e, unreachable));
            }
            unreachable = None;
            match self.worth_retrying(&e, generation, left).await? {
                NextStep::Retry => {}
                // Several replicas, none listening: a takeover in progress.
                NextStep::HubUnreachable(none) if self.live.hubs.len() > 1 => {
                    unreachable = Some(none);
                }
                NextStep::HubUnreachable(unreachable) => return Err(unreachable),
                NextStep::GiveUp => return Err(e),
            }
            tracing::debug!(error = %e, what, "call interrupted; repeating it");
            // A wait that ends the window is followed by one last attempt.
            backoff = backoff_after(backoff, deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::HubFailure;

    fn gone(hub: &str) -> ClientError {
        ClientError::Connect {
            hub: hub.into(),
            reason: "connection refused".into(),
        }
    }

    #[test]
    fn a_window_that_ends_in_a_takeover_names_every_hub() {
        let none = ClientError::NoHubAnswers {
            failures: vec![
                HubFailure::new("https://a", &gone("https://a")),
                HubFailure::new("https://b", &gone("https://b")),
            ],
        };
        let e = last_error(gone("https://a"), Some(none));
        assert!(matches!(e, ClientError::NoHubAnswers { ref failures } if failures.len() == 2));
    }

    #[test]
    fn a_refusal_at_the_end_of_the_window_is_reported_as_it_is() {
        let refused = ClientError::Rejected {
            code: tonic::Code::PermissionDenied,
            message: "not allowed".into(),
        };
        let none = ClientError::NoHubAnswers { failures: vec![] };
        let e = last_error(refused, Some(none));
        assert!(matches!(e, ClientError::Rejected { .. }), "{e}");
        assert!(matches!(
            last_error(gone("https://a"), None),
            ClientError::Connect { .. }
        ));
    }
}
