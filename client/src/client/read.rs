//! Reads that follow the client to another replica of the hub.
//!
//! A read changes nothing, so it is always safe to make again. A read
//! that fails because the hub in use cannot be reached is made again on
//! the replica the client fails over to (one round over the others per
//! failure, for at most the retry window). It is not repeated on the same
//! hub: with a single hub a read fails as the call did.

use super::Client;
use super::connection::Conn;
use super::retry::NextStep;
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
    /// a failover; `call` gets the connection to call through.
    pub(crate) async fn read<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = std::time::Instant::now() + self.live.config.push_retry_for;
        loop {
            let generation = self.live.generation();
            let e = match call(self.live.conn()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(status) => ClientError::from(status),
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self.live.hubs.len() < 2 || !e.is_transient() || left.is_zero() {
                return Err(e);
            }
            match self.worth_retrying(&e, generation, left).await? {
                // Another connection is in use: the read goes there.
                NextStep::Retry if self.live.generation() != generation => {
                    tracing::debug!(error = %e, hub = %self.hub(), "read interrupted; making it on the hub now in use");
                }
                NextStep::HubUnreachable(none) => return Err(none),
                NextStep::Retry | NextStep::GiveUp => return Err(e),
            }
        }
    }
}
