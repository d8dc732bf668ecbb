//! `Acknowledge`: a recipient's signed receipt, appended to its own channel.

use super::HubState;
use super::push::{check_received, policy_status, verify_sender_signature};
use crate::appender::{AppendError, EarlierAnswer};
use crate::policy::check_receipt;
use crate::store::AnswerKind;
use tongbao_proto::pb;
use tonic::{Request, Response, Status};

fn earlier(unit: &str, list: Vec<EarlierAnswer>) -> Vec<pb::EarlierAcknowledgement> {
    list.into_iter()
        .map(|e| pb::EarlierAcknowledgement {
            entry: Some(pb::EntryRef {
                channel: e.channel,
                seq: e.seq,
            }),
            receipt: Some(pb::EntryRef {
                channel: unit.to_string(),
                seq: e.answered_by,
            }),
        })
        .collect()
}

pub async fn acknowledge(
    state: &HubState,
    request: Request<pb::AcknowledgeRequest>,
) -> Result<Response<pb::AcknowledgeResponse>, Status> {
    let unit = state.authenticate_unit(&request, "acknowledge entries")?;
    let signed = request
        .into_inner()
        .receipt
        .ok_or_else(|| Status::invalid_argument("the request carries no receipt"))?;
    let (message, pins) = check_receipt(&signed, &unit, &state.limits, tongbao_proto::now_micros())
        .map_err(policy_status)?;
    let digest = verify_sender_signature(state, &unit, &signed, message).await?;
    let answered = check_received(state, &unit, pins)?;
    let total = answered.len();
    match state
        .appender
        .append_answer(
            unit.clone(),
            signed,
            digest,
            answered,
            AnswerKind::Acknowledged,
        )
        .await
    {
        Ok(a) => Ok(Response::new(pb::AcknowledgeResponse {
            channel: a.channel,
            seq: a.seq,
            leaf_hash: a.leaf_hash.to_vec(),
            newly_acknowledged: if a.duplicate {
                0
            } else {
                (total - a.earlier.len()) as u32
            },
            earlier: earlier(&unit, a.earlier),
        })),
        Err(AppendError::AlreadyAnswered { earlier: list, .. }) => {
            Ok(Response::new(pb::AcknowledgeResponse {
                earlier: earlier(&unit, list),
                ..Default::default()
            }))
        }
        Err(e) => Err(e.into()),
    }
}
