//! The office's delivery audit, and the check of an answer it shows.

use super::Client;
use crate::ClientError;
use crate::verify::VerifiedEntry;
use tongbao_proto::pb;

impl Client {
    /// For an office: entries of its mechanism with every recipient's state.
    pub async fn audit_deliveries(
        &self,
        request: pb::ListDeliveriesRequest,
    ) -> Result<pb::ListDeliveriesResponse, ClientError> {
        Ok(self.audit().list_deliveries(request).await?.into_inner())
    }

    /// For an office: per-unit counts and acknowledgement times.
    pub async fn audit_units(
        &self,
        request: pb::UnitSummaryRequest,
    ) -> Result<pb::UnitSummaryResponse, ClientError> {
        Ok(self.audit().unit_summary(request).await?.into_inner())
    }

    /// Checks an answer shown by the audit: the receipt (or exception
    /// feedback) verifies under the recipient's registered key, sits in the
    /// recipient's channel, and names exactly the audited entry's leaf hash.
    ///
    /// The audit shows an answer without its free text; its signature and
    /// leaf are checked against the digest of the message as signed. That
    /// digest cannot be recomputed without the removed text, so the pins
    /// and problem code shown are as the hub read them from the signed
    /// message.
    pub async fn verify_answer(
        &self,
        audited: &pb::AuditedEntry,
        delivery: &pb::RecipientDelivery,
    ) -> Result<VerifiedEntry, ClientError> {
        let entry = delivery
            .answer
            .clone()
            .ok_or_else(|| ClientError::Integrity {
                channel: audited.channel.clone(),
                seq: audited.seq,
                reason: format!("no answer from {} to verify", delivery.recipient),
            })?;
        let integrity = |reason: String| ClientError::Integrity {
            channel: entry.channel.clone(),
            seq: entry.seq,
            reason,
        };
        let digest: tongbao_proto::Hash = delivery
            .answer_message_digest
            .as_slice()
            .try_into()
            .map_err(|_| {
                integrity(format!(
                    "the audit gives no 32-byte message digest for the answer of {}",
                    delivery.recipient
                ))
            })?;
        let answer = self
            .verify_delivery_signed_as(
                pb::Delivery {
                    entry: Some(entry),
                    leaf_hash: delivery.answer_leaf_hash.clone(),
                    cursor: 0,
                    ..Default::default()
                },
                digest,
            )
            .await?;
        let pin = pb::EntryPin {
            channel: audited.channel.clone(),
            seq: audited.seq,
            leaf_hash: audited.leaf_hash.clone(),
        };
        if answer.channel() != delivery.recipient
            || !crate::verify::answers_pin(answer.message(), &pin)
        {
            return Err(ClientError::Integrity {
                channel: answer.channel().to_string(),
                seq: answer.seq(),
                reason: format!(
                    "this answer of {} does not name entry {}:{} with leaf hash {}",
                    delivery.recipient,
                    pin.channel,
                    pin.seq,
                    hex::encode(&pin.leaf_hash)
                ),
            });
        }
        Ok(answer)
    }
}
