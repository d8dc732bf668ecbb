//! Reads that follow the client to another replica of the hub.
//!
//! A read changes nothing, so it is always safe to make again. With
//! several hubs, a read that fails because the hub in use cannot be
//! reached (or gives no answer within the per-attempt timeout) is made
//! again, for at most the retry window: at once on the replica the client
//! fails over to, or after a wait (100 ms doubling to 1 s) while no
//! replica accepts connections, as during a takeover. With a single hub a
//! read fails as the call did.

use super::Client;
use super::connection::Conn;
use super::retry::{Attempt, FIRST_BACKOFF, NextStep, backoff_after, last_error};
use crate::ClientError;
use std::sync::Arc;

/// `hub_read!(client, service.method(request))`: the call on the current
/// connection's `service` client (`rpc`, `log`, `audit`, `workflow`), made
/// through [`Client::read`]; the answer's message or the error.
macro_rules! hub_read {
    ($client:expr, $service:ident . $method:ident ( $request:expr )) => {{
        let request = $request;
        $client.read(move |conn| {
            let mut service = conn.$service.clone();
            let request = request.clone();
            async move { service.$method(request).await }
        })
    }};
}
pub(crate) use hub_read;

impl Client {
    /// Makes a read on the hub in use, and again on another replica after
    /// a failover; `call` gets the connection to call through. Each
    /// attempt waits [`ATTEMPT_TIMEOUT`] at most for its answer.
    pub(crate) async fn read<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: FnMut(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = std::time::Instant::now() + self.live.config.push_retry_for;
        self.read_until(deadline, call).await
    }

    /// [`Client::read`] within the window of a caller that repeats it
    /// (ending at `deadline`), not a window of its own.
    pub(super) async fn read_until<T, F, Fut>(
        &self,
        deadline: std::time::Instant,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = FIRST_BACKOFF;
        // Why no hub could be used, after the last round that found none.
        let mut unreachable = None;
        // A call a standby does not serve goes on to the next replica.
        let mut standbys = 0;
        loop {
            let generation = self.live.generation();
            let attempt = call(self.live.conn());
            let e = match self
                .attempt(
                    attempt,
                    "a read",
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
            if self.live.hubs.len() < 2 || !e.is_transient() || left.is_zero() {
                return Err(last_error(e, unreachable));
            }
            unreachable = None;
            match self.worth_retrying(&e, generation, left).await? {
                // Another connection is in use: the read goes there at once.
                NextStep::Retry if self.live.generation() != generation => {
                    tracing::debug!(error = %e, hub = %self.hub(), "read interrupted; making it on the hub now in use");
                    continue;
                }
                // The hub answers again, or none answers yet (a takeover):
                // wait, then read again.
                NextStep::Retry => {
                    tracing::debug!(error = %e, "read interrupted; making it again");
                }
                NextStep::HubUnreachable(none) => {
                    tracing::debug!(error = %none, "no hub answers; reading again after a wait");
                    unreachable = Some(none);
                }
                NextStep::GiveUp => return Err(e),
            }
            backoff = backoff_after(backoff, deadline).await;
        }
    }
}
