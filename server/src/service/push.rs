//! `Push`: check, verify, append durably, answer.

use super::{HubState, storage_status};
use crate::appender::AppendError;
use crate::policy::{PolicyError, check_push};
use crate::store::AnswerKind;
use tongbao_proto::keys::{KeyError, verify_signed_message};
use tongbao_proto::{Hash, pb};
use tonic::{Request, Response, Status};

pub async fn push(
    state: &HubState,
    request: Request<pb::PushRequest>,
) -> Result<Response<pb::PushResponse>, Status> {
    let unit = state.authenticate_unit(&request, "push messages")?;
    let signed = request
        .into_inner()
        .message
        .ok_or_else(|| Status::invalid_argument("the request carries no message"))?;
    push_one(state, unit, signed).await.map(Response::new)
}

/// Most messages one `PushBatch` call may carry.
pub const MAX_BATCH_MESSAGES: usize = 4096;

pub async fn push_batch(
    state: &HubState,
    request: Request<pb::PushBatchRequest>,
) -> Result<Response<pb::PushBatchResponse>, Status> {
    let unit = state.authenticate_unit(&request, "push messages")?;
    let messages = request.into_inner().messages;
    if messages.len() > MAX_BATCH_MESSAGES {
        return Err(Status::resource_exhausted(format!(
            "the batch carries {} messages; at most {MAX_BATCH_MESSAGES} per call",
            messages.len()
        )));
    }
    let outcomes = futures::future::join_all(
        messages
            .into_iter()
            .map(|m| push_one(state, unit.clone(), m)),
    )
    .await;
    let results = outcomes
        .into_iter()
        .map(|r| match r {
            Ok(response) => pb::PushResult {
                response: Some(response),
                code: 0,
                message: String::new(),
            },
            Err(status) => pb::PushResult {
                response: None,
                code: status.code() as i32,
                message: status.message().to_string(),
            },
        })
        .collect();
    Ok(Response::new(pb::PushBatchResponse { results }))
}

/// One message from an authenticated unit: every check of `Push`, then a
/// durable append.
async fn push_one(
    state: &HubState,
    unit: String,
    signed: pb::SignedMessage,
) -> Result<pb::PushResponse, Status> {
    let message = check_push(&signed, &unit, &state.limits, tongbao_proto::now_micros())
        .map_err(policy_status)?;
    let digest = verify_sender_signature(state, &unit, &signed, message)?;
    let answered = match message.exception.as_ref().and_then(|x| x.entry.as_ref()) {
        Some(pin) => {
            check_received(state, &unit, std::slice::from_ref(pin))?;
            vec![(pin.channel.clone(), pin.seq)]
        }
        None => Vec::new(),
    };
    let appended = state
        .appender
        .append_answer(unit, signed, digest, answered, AnswerKind::Exception)
        .await
        .map_err(|e| match e {
            AppendError::AlreadyAnswered { .. } => Status::failed_precondition(format!(
                "{e}; an entry is answered once, by a receipt or by exception feedback"
            )),
            other => other.into(),
        })?;
    Ok(pb::PushResponse {
        channel: appended.channel,
        seq: appended.seq,
        leaf_hash: appended.leaf_hash.to_vec(),
        duplicate: appended.duplicate,
        recipients: appended.recipients,
    })
}

pub(crate) fn policy_status(e: PolicyError) -> Status {
    match e {
        PolicyError::Malformed(_) | PolicyError::Classified => {
            Status::invalid_argument(e.to_string())
        }
        PolicyError::TooLarge(_) => Status::resource_exhausted(e.to_string()),
        PolicyError::NotSender { .. } => Status::permission_denied(e.to_string()),
    }
}

/// Verifies a message's signature under the sender unit's registered key
/// (valid when the message was created); returns the message digest.
pub(crate) fn verify_sender_signature(
    state: &HubState,
    unit: &str,
    signed: &pb::SignedMessage,
    message: &pb::Message,
) -> Result<Hash, Status> {
    let registry = state.registry()?;
    let key_id = signed
        .signature
        .as_ref()
        .map(|s| s.key_id.as_str())
        .unwrap_or_default();
    let key = registry.unit(unit).and_then(|u| u.key(key_id)).ok_or_else(|| {
        Status::unauthenticated(format!(
            "the signature names key {key_id:?}, which is not a registered signing key of unit {unit}; check the signing_key in your client config"
        ))
    })?;
    if let Some(until) = key.valid_until_micros
        && message.created_micros > until
    {
        return Err(Status::unauthenticated(format!(
            "signing key {key_id} of unit {unit} was retired before this message was created; sign with the current key"
        )));
    }
    verify_signed_message(signed, &key.public_key).map_err(|e| match e {
        KeyError::BadSignature { .. } => Status::unauthenticated(format!(
            "signature of unit {unit} does not verify: the content was changed after signing, or it was signed with another key"
        )),
        other => Status::unauthenticated(format!("signature of unit {unit} refused: {other}")),
    })
}

/// Checks that `unit` received each pinned entry exactly as pinned.
pub(crate) fn check_received(
    state: &HubState,
    unit: &str,
    pins: &[pb::EntryPin],
) -> Result<(), Status> {
    for pin in pins {
        let stored = state
            .store
            .entry_shared(&pin.channel, pin.seq)
            .map_err(storage_status)?
            .ok_or_else(|| {
                Status::not_found(format!("entry {}:{} does not exist", pin.channel, pin.seq))
            })?;
        if !stored.entry.recipients.iter().any(|r| r == unit) {
            return Err(Status::permission_denied(format!(
                "entry {}:{} was not addressed to unit {unit}; a unit answers only entries it received",
                pin.channel, pin.seq
            )));
        }
        if stored.leaf_hash.as_slice() != pin.leaf_hash.as_slice() {
            return Err(Status::failed_precondition(format!(
                "entry {}:{} has leaf hash {}, not {}; acknowledge the entry exactly as delivered",
                pin.channel,
                pin.seq,
                hex::encode(stored.leaf_hash),
                hex::encode(&pin.leaf_hash)
            )));
        }
    }
    Ok(())
}
