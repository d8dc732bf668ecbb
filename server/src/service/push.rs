//! `Push`: check, verify, append durably, answer.

use super::HubState;
use crate::policy::{PolicyError, check_push};
use tongbao_proto::keys::{KeyError, verify_signed_message};
use tongbao_proto::pb;
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
    let message =
        check_push(&signed, &unit, &state.limits, tongbao_proto::now_micros()).map_err(policy_status)?;
    let digest = {
        let registry = state.registry()?;
        let key_id = signed
            .signature
            .as_ref()
            .map(|s| s.key_id.as_str())
            .unwrap_or_default();
        let key = registry
            .unit(&unit)
            .and_then(|u| u.key(key_id))
            .ok_or_else(|| {
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
        verify_signed_message(&signed, &key.public_key).map_err(|e| signature_status(&unit, e))?
    };
    let appended = state.appender.append(unit, signed, digest).await?;
    Ok(Response::new(pb::PushResponse {
        channel: appended.channel,
        seq: appended.seq,
        leaf_hash: appended.leaf_hash.to_vec(),
        duplicate: appended.duplicate,
        recipients: appended.recipients,
    }))
}

fn policy_status(e: PolicyError) -> Status {
    match e {
        PolicyError::Malformed(_) | PolicyError::Classified => {
            Status::invalid_argument(e.to_string())
        }
        PolicyError::TooLarge(_) => Status::resource_exhausted(e.to_string()),
        PolicyError::NotSender { .. } => Status::permission_denied(e.to_string()),
    }
}

fn signature_status(unit: &str, e: KeyError) -> Status {
    match e {
        KeyError::BadSignature { .. } => Status::unauthenticated(format!(
            "signature of unit {unit} does not verify: the content was changed after signing, or it was signed with another key"
        )),
        other => Status::unauthenticated(format!("signature of unit {unit} refused: {other}")),
    }
}
