//! `Push`: check, verify, append durably, answer.

use super::{HubState, storage_status};
use crate::appender::{Answered, AppendError};
use crate::policy::{PolicyError, check_push};
use crate::store::AnswerKind;
use crate::verifier::Check;
use tongbao_proto::canonical::message_digest;
use tongbao_proto::echo::shown;
use tongbao_proto::keys::{
    KeyError, REFUSAL_BOUNDARY_METADATA, REFUSAL_KEY_ID_METADATA, REFUSAL_METADATA, ValidityError,
};
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
    let answer = push_one(state, unit, signed).await;
    state.metrics.push_answered(&answer, |r| r.duplicate);
    answer.map(Response::new)
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
    // Every check but the signature, per message; then all the call's
    // signatures in one batch.
    let mut outcomes: Vec<Result<Hash, Status>> = Vec::with_capacity(messages.len());
    let mut checks = Vec::with_capacity(messages.len());
    for m in &messages {
        match check_before_signature(state, &unit, m) {
            Ok(check) => {
                outcomes.push(Ok(check.digest));
                checks.push(check);
            }
            Err(status) => outcomes.push(Err(status)),
        }
    }
    let mut verdicts = state.verifier.verify(checks).await?.into_iter();
    for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
        if let Err(refused) = verified(&unit, verdicts.next()) {
            *outcome = Err(refused);
        }
    }
    let outcomes =
        futures::future::join_all(messages.into_iter().zip(outcomes).map(|(m, checked)| {
            let unit = unit.clone();
            async move { append_verified(state, unit, m, checked?).await }
        }))
        .await;
    for answer in &outcomes {
        state.metrics.push_answered(answer, |r| r.duplicate);
    }
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
/// durable append. The signature goes through the hub's batching verifier.
async fn push_one(
    state: &HubState,
    unit: String,
    signed: pb::SignedMessage,
) -> Result<pb::PushResponse, Status> {
    let check = check_before_signature(state, &unit, &signed)?;
    let digest = verify_batched(state, &unit, check).await?;
    append_verified(state, unit, signed, digest).await
}

/// Checks one signature in the hub's batching verifier, beside whatever
/// other pushes and receipts arrive at the same time; returns the digest.
async fn verify_batched(state: &HubState, unit: &str, check: Check) -> Result<Hash, Status> {
    let digest = check.digest;
    verified(
        unit,
        state.verifier.verify(vec![check]).await?.into_iter().next(),
    )?;
    Ok(digest)
}

/// The verifier's verdict on one signature as the caller's answer: no
/// verdict at all is no verification.
fn verified(unit: &str, verdict: Option<Result<(), KeyError>>) -> Result<(), Status> {
    match verdict {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(signature_status(unit, e)),
        None => Err(Status::internal(
            "the signature verifier gave no answer; retry",
        )),
    }
}

/// Verifies a message's signature under the sender unit's registered key
/// (valid when the message was created) in the batching verifier, beside
/// whatever else arrives at the same time (receipts come in bursts: every
/// recipient answers the same deliveries); returns the message digest.
pub(crate) async fn verify_sender_signature(
    state: &HubState,
    unit: &str,
    signed: &pb::SignedMessage,
    message: &pb::Message,
) -> Result<Hash, Status> {
    let check = sender_key_check(state, unit, signed, message)?;
    verify_batched(state, unit, check).await
}

/// The policy and sender-key checks of a pushed message: what its
/// signature must then verify under.
fn check_before_signature(
    state: &HubState,
    unit: &str,
    signed: &pb::SignedMessage,
) -> Result<Check, Status> {
    let message = check_push(signed, unit, &state.limits, tongbao_proto::now_micros())
        .map_err(policy_status)?;
    sender_key_check(state, unit, signed, message)
}

/// Appends a message whose checks and signature passed.
async fn append_verified(
    state: &HubState,
    unit: String,
    signed: pb::SignedMessage,
    digest: Hash,
) -> Result<pb::PushResponse, Status> {
    let pin = signed
        .message
        .as_ref()
        .and_then(|m| m.exception.as_ref())
        .and_then(|x| x.entry.as_ref());
    let answered = match pin {
        Some(pin) => check_received(state, &unit, std::slice::from_ref(pin))?,
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
    Ok(pb::PushResponse::from(appended))
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

/// Every check of [`verify_sender_signature`] but the Ed25519 one: the key
/// is a registered key of the unit, valid now and when the message was
/// created, not being rotated. The registry lock is released on return.
fn sender_key_check(
    state: &HubState,
    unit: &str,
    signed: &pb::SignedMessage,
    message: &pb::Message,
) -> Result<Check, Status> {
    let registry = state.registry()?;
    let key_id = signed
        .signature
        .as_ref()
        .map(|s| s.key_id.as_str())
        .unwrap_or_default();
    let key = registry.unit(unit).and_then(|u| u.key(key_id)).ok_or_else(|| {
        Status::unauthenticated(format!(
            "the signature names key {:?}, which is not a registered signing key of unit {unit}; check the signing_key in your client config",
            shown(key_id)
        ))
    })?;
    // The key must be valid when the message says it was signed and when
    // the hub receives it: a retired key cannot sign even backdated content.
    let validity = key.validity();
    let checked = validity
        .check_message(unit, key_id, message)
        .and_then(|()| validity.check(unit, key_id, tongbao_proto::now_micros()));
    if let Err(e) = checked
        && !already_appended(state, unit, signed, message)?
    {
        return Err(key_refusal(&e));
    }
    // Until a rotation retiring this key is applied, its end is unknown:
    // accepting it now could let in a signature made after that end.
    if registry.rotation_pending(unit, key_id) && !already_appended(state, unit, signed, message)? {
        return Err(Status::unavailable(format!(
            "signing key {key_id} of unit {unit} is being rotated; retry in a moment"
        )));
    }
    let signature = signed
        .signature
        .clone()
        .ok_or_else(|| signature_status(unit, KeyError::MissingSignature))?;
    Ok(Check {
        digest: message_digest(message),
        signature,
        public_key: key.public_key.clone(),
    })
}

/// The status of a signature that does not verify (same for every path).
fn signature_status(unit: &str, e: KeyError) -> Status {
    match e {
        KeyError::BadSignature { .. } => Status::unauthenticated(format!(
            "signature of unit {unit} does not verify: the content was changed after signing, or it was signed with another key"
        )),
        other => Status::unauthenticated(format!("signature of unit {unit} refused: {other}")),
    }
}

/// `Unauthenticated` for a signature outside its key's interval, with the
/// refusal in metadata so clients act on it without parsing the message.
pub(crate) fn key_refusal(e: &ValidityError) -> Status {
    let message = match e {
        ValidityError::Retired {
            unit,
            key_id,
            until_micros,
        } => format!(
            "signing key {key_id} of unit {unit} was retired at {}; sign with the unit's current key",
            crate::registry::display_micros(*until_micros)
        ),
        ValidityError::NotYetValid {
            unit,
            key_id,
            from_micros,
        } => format!(
            "signing key {key_id} of unit {unit} is valid only from {}; sign with the unit's current key, or wait until then",
            crate::registry::display_micros(*from_micros)
        ),
    };
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (name, value) in [
        (REFUSAL_METADATA, e.refusal().to_string()),
        (REFUSAL_KEY_ID_METADATA, e.key_id().to_string()),
        (REFUSAL_BOUNDARY_METADATA, e.boundary_micros().to_string()),
    ] {
        if let Ok(v) = value.parse() {
            metadata.insert(name, v);
        }
    }
    Status::with_metadata(tonic::Code::Unauthenticated, message, metadata)
}

/// True when this exact message (same id, same content) is already in the
/// unit's channel: a retry after a key switch is answered with the original
/// receipt instead of being refused for its now-retired key.
fn already_appended(
    state: &HubState,
    unit: &str,
    signed: &pb::SignedMessage,
    message: &pb::Message,
) -> Result<bool, Status> {
    let Some(rec) = state
        .store
        .message(unit, &message.message_id)
        .map_err(storage_status)?
    else {
        return Ok(false);
    };
    let Some(stored) = state.store.entry(unit, rec.seq).map_err(storage_status)? else {
        return Ok(false);
    };
    Ok(stored.entry.message.as_ref() == Some(signed))
}

/// Checks that `unit` received each pinned entry exactly as pinned, and
/// finds where each sits in its inbox.
pub(crate) fn check_received(
    state: &HubState,
    unit: &str,
    pins: &[pb::EntryPin],
) -> Result<Vec<Answered>, Status> {
    let mut out = Vec::with_capacity(pins.len());
    for pin in pins {
        let stored = state
            .store
            .entry_shared(&pin.channel, pin.seq)
            .map_err(storage_status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "entry {}:{} does not exist",
                    shown(&pin.channel),
                    pin.seq
                ))
            })?;
        let Some(cursor) = stored.cursor_of(unit) else {
            return Err(Status::permission_denied(format!(
                "entry {}:{} was not addressed to unit {unit}; a unit answers only entries it received",
                pin.channel, pin.seq
            )));
        };
        if stored.leaf_hash.as_slice() != pin.leaf_hash.as_slice() {
            return Err(Status::failed_precondition(format!(
                "entry {}:{} has leaf hash {}, not {}; acknowledge the entry exactly as delivered",
                pin.channel,
                pin.seq,
                hex::encode(stored.leaf_hash),
                hex::encode(&pin.leaf_hash)
            )));
        }
        out.push(Answered {
            channel: pin.channel.clone(),
            seq: pin.seq,
            cursor,
        });
    }
    Ok(out)
}
