//! The office's delivery audit, and the check of an answer it shows.

use super::Client;
use super::hub_read;
use crate::ClientError;
use crate::verify::VerifiedEntry;
use tongbao_proto::pb;

impl Client {
    /// For an office: entries of its mechanism with every recipient's state.
    pub async fn audit_deliveries(
        &self,
        request: pb::ListDeliveriesRequest,
    ) -> Result<pb::ListDeliveriesResponse, ClientError> {
        hub_read!(self, audit.list_deliveries(request)).await
    }

    /// For an office: per-unit counts and acknowledgement times.
    pub async fn audit_units(
        &self,
        request: pb::UnitSummaryRequest,
    ) -> Result<pb::UnitSummaryResponse, ClientError> {
        hub_read!(self, audit.unit_summary(request)).await
    }

    /// Checks an answer shown by the audit: the receipt (or exception
    /// feedback) verifies under the recipient's registered key, sits in the
    /// recipient's channel, and names exactly the audited entry's leaf hash.
    ///
    /// Receipts hold no free text and are shown whole, so every receipt
    /// can be checked. Exception feedback not addressed to this office is
    /// shown without its free text (`answer_redacted`) and no longer
    /// matches its signature: it is refused as [`ClientError::Redacted`].
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
        if delivery.answer_redacted {
            return Err(ClientError::Redacted {
                channel: entry.channel.clone(),
                seq: entry.seq,
            });
        }
        let answer = self
            .verify_delivery(pb::Delivery {
                entry: Some(entry),
                leaf_hash: delivery.answer_leaf_hash.clone(),
                cursor: 0,
                ..Default::default()
            })
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
