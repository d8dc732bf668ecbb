//! The `Exchange` service: routes each RPC to its handler.

use super::HubState;
use super::read::DeliveryStream;
use std::sync::Arc;
use tongbao_proto::pb;
use tongbao_proto::pb::exchange_server::Exchange;
use tonic::{Request, Response, Status};

/// `tongbao.v1.Exchange` over the shared hub state.
#[derive(Clone)]
pub struct ExchangeService {
    state: Arc<HubState>,
}

impl ExchangeService {
    pub fn new(state: Arc<HubState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Exchange for ExchangeService {
    async fn push(
        &self,
        request: Request<pb::PushRequest>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        super::push::push(&self.state, request).await
    }

    async fn push_batch(
        &self,
        request: Request<pb::PushBatchRequest>,
    ) -> Result<Response<pb::PushBatchResponse>, Status> {
        super::push::push_batch(&self.state, request).await
    }

    async fn pull(
        &self,
        request: Request<pb::PullRequest>,
    ) -> Result<Response<pb::PullResponse>, Status> {
        super::read::pull(&self.state, request)
    }

    type SubscribeStream = DeliveryStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        super::read::subscribe(&self.state, request)
    }

    async fn get_entry(
        &self,
        request: Request<pb::GetEntryRequest>,
    ) -> Result<Response<pb::GetEntryResponse>, Status> {
        super::read::get_entry(&self.state, request)
    }

    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        super::acknowledge::acknowledge(&self.state, request).await
    }

    async fn list_units(
        &self,
        request: Request<pb::ListUnitsRequest>,
    ) -> Result<Response<pb::ListUnitsResponse>, Status> {
        self.state.authenticate(&request)?;
        Ok(Response::new(self.state.registry()?.to_proto()))
    }
}
