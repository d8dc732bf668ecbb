//! The push path: signing drafts, pushing alone or batched with the pushes
//! of concurrent callers, and signing again after a key refusal.

use super::acknowledged::Position;
use super::{Client, new_message_id};
use crate::push_queue::{self, Answer, PushQueue, Waiting};
use crate::{ClientError, Draft};
use std::sync::Arc;
use tongbao_proto::keys::SigningKey;
use tongbao_proto::{now_micros, pb};

/// The hub's durable answer to a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReceipt {
    pub channel: String,
    pub seq: u64,
    pub leaf_hash: Vec<u8>,
    pub recipients: Vec<String>,
    /// The message id had been appended before; nothing new was written.
    pub duplicate: bool,
    pub message_id: String,
}

impl PushReceipt {
    pub(crate) fn new(r: pb::PushResponse, message_id: String) -> Self {
        Self {
            channel: r.channel,
            seq: r.seq,
            leaf_hash: r.leaf_hash,
            recipients: r.recipients,
            duplicate: r.duplicate,
            message_id,
        }
    }
}

/// A call slot of the push queue held by a caller sending its own push.
/// When it is let go (the push answered, or the caller gave up waiting),
/// the pushes that queued meanwhile go out on it.
struct PushSlot<'a>(&'a Client);

impl Drop for PushSlot<'_> {
    fn drop(&mut self) {
        if let Some(batch) = self.0.pushes.next() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let client = self.0.clone();
                    rt.spawn(async move { client.send_pushes(batch).await });
                }
                // No runtime to send on: the callers of `batch` are told
                // their push was interrupted, and the slot is freed.
                Err(_) => self.0.pushes.release(),
            }
        }
    }
}

/// The slot a `send_pushes` task holds: freed if the task is dropped
/// before it finished (the runtime shutting down, a panic).
struct SendingSlot {
    pushes: Arc<PushQueue>,
    finished: bool,
}

impl Drop for SendingSlot {
    fn drop(&mut self) {
        if !self.finished {
            self.pushes.release();
        }
    }
}

impl Client {
    /// Signs a draft as this unit, without sending it.
    pub fn sign(&self, draft: Draft) -> Result<pb::SignedMessage, ClientError> {
        let (signer, unit) = self.signing_identity()?;
        let id = draft.message_id.clone().unwrap_or_else(new_message_id);
        Ok(signer.sign_message(draft.into_message(unit, id, now_micros())))
    }

    /// Signs and pushes a draft; returns once the hub has made it durable.
    /// Interrupted pushes are repeated with the same message id (the hub
    /// answers a repeat with the original receipt, `duplicate: true`). If
    /// the hub refuses the signing key for its interval (it was retired
    /// meanwhile, say by a rotation), the key files are re-read and the same
    /// message is signed again with the current key, once.
    pub async fn push(&self, draft: Draft) -> Result<PushReceipt, ClientError> {
        let signed = self.sign(draft)?;
        match self.push_signed(signed.clone()).await {
            Err(refused @ ClientError::SigningKeyRefused { .. }) => {
                // Another process (or an operator) may have replaced the key file.
                let _ = self.live.reload(false).await;
                let (signer, _) = self.signing_identity()?;
                match resign_after_refusal(&signed, &refused, &signer, now_micros()) {
                    Some(again) => self.push_signed(again).await,
                    None => Err(refused),
                }
            }
            other => other,
        }
    }

    /// Pushes an already signed message, repeating it across interruptions
    /// and reconnects while the hub is reachable (for up to
    /// `push_retry_for` of the config): the message id makes it idempotent.
    /// If the hub cannot be reached at all, fails at once with
    /// [`ClientError::Connect`]; pushing the same message later is safe.
    /// Pushes made while several others of this client are in flight go
    /// out together in one `PushBatch`, each answered as `Push` would be.
    /// A push whose caller stops waiting may still be appended (as an
    /// interrupted one may): push the same signed message again, not a new
    /// draft, to have it once.
    pub async fn push_signed(&self, signed: pb::SignedMessage) -> Result<PushReceipt, ClientError> {
        let message_id = signed.message_id().to_string();
        // What the message adds to a `PushBatchRequest` (field 1).
        let size = prost::encoding::message::encoded_len(1, &signed);
        if size > push_queue::BATCH_BYTES {
            return self.push_alone(signed, message_id).await;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        if let Some(mine) = self
            .pushes
            .start_or_queue(Waiting::new(signed, size, reply))
        {
            // A slot was free: this push goes at once, from here, without a
            // hop to another task.
            let _slot = PushSlot(self);
            return self.push_alone(mine.signed, message_id).await;
        }
        match answer.await {
            Ok(Answer::Done(r)) => r.map(|r| PushReceipt::new(r, message_id)),
            Ok(Answer::Alone(signed)) => self.push_alone(*signed, message_id).await,
            Err(_) => Err(ClientError::Connect {
                hub: self.hub(),
                reason: "the push was interrupted (the runtime is shutting down); \
                         pushing the same message again is safe"
                    .into(),
            }),
        }
    }

    /// One `Push` call for one message, repeated while plausible.
    async fn push_alone(
        &self,
        signed: pb::SignedMessage,
        message_id: String,
    ) -> Result<PushReceipt, ClientError> {
        Ok(PushReceipt::new(self.push_call(signed).await?, message_id))
    }

    async fn push_call(&self, signed: pb::SignedMessage) -> Result<pb::PushResponse, ClientError> {
        let channel = sender(&signed);
        let message_id = signed.message_id().to_string();
        let request = pb::PushRequest {
            message: Some(signed),
        };
        self.push_not_behind(
            &channel,
            || {
                let mut rpc = self.rpc();
                let request = request.clone();
                async move { rpc.push(request).await }
            },
            |r: &pb::PushResponse| vec![position(r, &message_id)],
        )
        .await
    }

    /// A `PushBatch` call (its messages all `channel`'s), under the
    /// behind rule.
    async fn push_batch_call(
        &self,
        channel: &str,
        request: &pb::PushBatchRequest,
    ) -> Result<pb::PushBatchResponse, ClientError> {
        let ids: Vec<String> = request
            .messages
            .iter()
            .map(|m| m.message_id().to_string())
            .collect();
        self.push_not_behind(
            channel,
            || {
                let mut rpc = self.rpc();
                let request = request.clone();
                async move { rpc.push_batch(request).await }
            },
            |r: &pb::PushBatchResponse| {
                r.results
                    .iter()
                    .zip(&ids)
                    .filter(|(result, _)| result.code == 0)
                    .filter_map(|(result, id)| result.response.as_ref().map(|r| position(r, id)))
                    .collect()
            },
        )
        .await
    }

    /// Sends queued pushes, then whatever queued meanwhile, until none wait.
    async fn send_pushes(self, mut batch: Vec<Waiting>) {
        let mut slot = SendingSlot {
            pushes: self.pushes.clone(),
            finished: false,
        };
        loop {
            self.send_push_batch(batch).await;
            match self.pushes.next() {
                Some(next) => batch = next,
                None => break,
            }
        }
        // `next` freed the slot.
        slot.finished = true;
    }

    /// One call for the pushes of `batch`: `Push` for one, `PushBatch` for
    /// more, each answered to its waiting caller.
    async fn send_push_batch(&self, mut batch: Vec<Waiting>) {
        if batch.len() == 1
            && let Some(w) = batch.pop()
        {
            let _ = w.reply.send(Answer::Done(self.push_call(w.signed).await));
            return;
        }
        let (messages, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|w| (w.signed, w.reply)).unzip();
        let channel = messages.first().map(sender).unwrap_or_default();
        let request = pb::PushBatchRequest { messages };
        let answered = self.push_batch_call(&channel, &request).await;
        let results = match answered {
            Ok(r) if r.results.len() == replies.len() => r.results,
            // A different count: every message goes again on its own.
            Ok(_) => Vec::new(),
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Answer::Done(Err(e.clone())));
                }
                return;
            }
        };
        let mut results = results.into_iter();
        for (signed, reply) in request.messages.into_iter().zip(replies) {
            let answer = match results.next() {
                Some(pb::PushResult {
                    response: Some(r),
                    code: 0,
                    ..
                }) => Answer::Done(Ok(r)),
                Some(r) if r.code != 0 => {
                    let code = tonic::Code::from(r.code);
                    let refused = ClientError::from(tonic::Status::new(code, r.message));
                    // A refused signing key is told by `Push`'s metadata,
                    // which a batch's result does not carry, and a
                    // transient refusal is repeated by `Push`: both go alone.
                    if code == tonic::Code::Unauthenticated || refused.is_transient() {
                        Answer::Alone(Box::new(signed))
                    } else {
                        Answer::Done(Err(refused))
                    }
                }
                _ => Answer::Alone(Box::new(signed)),
            };
            let _ = reply.send(answer);
        }
    }

    /// Signs and pushes many drafts in one call; one result per draft, in
    /// order. Each is appended exactly as by [`Client::push`].
    pub async fn push_batch(
        &self,
        drafts: Vec<Draft>,
    ) -> Result<Vec<Result<PushReceipt, ClientError>>, ClientError> {
        let signed = drafts
            .into_iter()
            .map(|d| self.sign(d))
            .collect::<Result<Vec<_>, _>>()?;
        self.push_signed_batch(signed).await
    }

    /// Pushes already signed messages in one call (safe to repeat: message
    /// ids make each idempotent), repeated like [`Client::push_signed`].
    /// The outer error is the call's; the inner ones are each message's.
    pub async fn push_signed_batch(
        &self,
        messages: Vec<pb::SignedMessage>,
    ) -> Result<Vec<Result<PushReceipt, ClientError>>, ClientError> {
        let ids: Vec<String> = messages
            .iter()
            .map(|m| m.message_id().to_string())
            .collect();
        let channel = messages.first().map(sender).unwrap_or_default();
        let r = self
            .push_batch_call(&channel, &pb::PushBatchRequest { messages })
            .await?;
        if r.results.len() != ids.len() {
            return Err(ClientError::Rejected {
                code: tonic::Code::Internal,
                message: format!(
                    "the hub answered {} of {} messages",
                    r.results.len(),
                    ids.len()
                ),
            });
        }
        Ok(r.results
            .into_iter()
            .zip(ids)
            .map(|(result, message_id)| match result.response {
                Some(r) if result.code == 0 => Ok(PushReceipt::new(r, message_id)),
                _ => Err(ClientError::Rejected {
                    code: tonic::Code::from(result.code),
                    message: result.message,
                }),
            })
            .collect())
    }
}

/// The channel a signed message is pushed to: its sender's.
fn sender(signed: &pb::SignedMessage) -> String {
    signed
        .message
        .as_ref()
        .map(|m| m.sender.clone())
        .unwrap_or_default()
}

/// Where the push of `message_id` was appended, as the hub answered.
pub(crate) fn position(r: &pb::PushResponse, message_id: &str) -> Position {
    Position {
        channel: r.channel.clone(),
        seq: r.seq,
        duplicate: r.duplicate,
        message_id: message_id.to_string(),
    }
}

/// The same content signed again with `current` after the hub refused
/// `signed` for its key's interval, stamped no earlier than the interval
/// the refusal names; None when signing again cannot help (the refused key
/// is still the current one and the stamp is not the problem).
pub(crate) fn resign_after_refusal(
    signed: &pb::SignedMessage,
    refused: &ClientError,
    current: &SigningKey,
    now: i64,
) -> Option<pb::SignedMessage> {
    let ClientError::SigningKeyRefused {
        refusal,
        key_id,
        boundary_micros,
        ..
    } = refused
    else {
        return None;
    };
    let signed_with = signed.signature.as_ref().map(|s| s.key_id.as_str())?;
    if signed_with != key_id {
        return None;
    }
    let mut content = signed.message.clone()?;
    let same_key = current.key_id() == key_id;
    match refusal {
        crate::KeyRefusal::Retired if same_key => return None,
        crate::KeyRefusal::Retired => content.created_micros = content.created_micros.max(now),
        crate::KeyRefusal::NotYetValid => {
            // A clock behind the hub's: stamp the message from the key's start.
            let stamp = content.created_micros.max(now).max(*boundary_micros);
            if same_key && stamp == content.created_micros {
                return None;
            }
            content.created_micros = stamp;
        }
    }
    Some(current.sign_message(content))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyRefusal;
    use tongbao_proto::keys::SigningKey;

    fn refused(refusal: KeyRefusal, key: &SigningKey, boundary: i64) -> ClientError {
        ClientError::SigningKeyRefused {
            refusal,
            key_id: key.key_id().to_string(),
            boundary_micros: boundary,
            message: String::new(),
        }
    }

    fn message(created: i64) -> pb::Message {
        pb::Message {
            message_id: "m".into(),
            sender: "tax".into(),
            created_micros: created,
            ..Default::default()
        }
    }

    #[test]
    fn a_retired_key_is_replaced_by_the_current_one_never_by_itself()
    -> Result<(), Box<dyn std::error::Error>> {
        let old = SigningKey::generate()?;
        let new = SigningKey::generate()?;
        let signed = old.sign_message(message(100));
        let why = refused(KeyRefusal::Retired, &old, 150);
        let again = resign_after_refusal(&signed, &why, &new, 200).ok_or("not re-signed")?;
        assert_eq!(
            again.signature.as_ref().map(|s| s.key_id.as_str()),
            Some(new.key_id())
        );
        let content = again.message.ok_or("no content")?;
        assert_eq!(
            (content.message_id.as_str(), content.created_micros),
            ("m", 200)
        );
        // Still the refused key: signing again cannot help.
        assert!(resign_after_refusal(&signed, &why, &old, 200).is_none());
        // A refusal about another key says nothing about this message.
        let other = refused(KeyRefusal::Retired, &new, 150);
        assert!(resign_after_refusal(&signed, &other, &new, 200).is_none());
        Ok(())
    }

    #[test]
    fn a_key_not_yet_valid_restamps_from_its_start() -> Result<(), Box<dyn std::error::Error>> {
        let key = SigningKey::generate()?;
        let signed = key.sign_message(message(100));
        let why = refused(KeyRefusal::NotYetValid, &key, 300);
        let again = resign_after_refusal(&signed, &why, &key, 200).ok_or("not re-signed")?;
        assert_eq!(again.message.map(|m| m.created_micros), Some(300));
        // Already stamped at or after the start: the hub's clock is the problem.
        let late = key.sign_message(message(300));
        assert!(resign_after_refusal(&late, &why, &key, 200).is_none());
        Ok(())
    }
}
