//! Reading the inbox a page at a time, verifying what the hub delivers,
//! and acknowledging it with signed receipts.

use super::acknowledged::Position;
use super::hub_read;
use super::{Client, describe_validity, new_message_id};
use crate::verified_bytes::{Found, VerifiedBytes};
use crate::verify::{Claimed, VerifiedEntry, signing_key_of};
use crate::{ClientError, Draft};
use prost::bytes::Bytes;
use std::sync::Arc;
use tongbao_proto::{now_micros, pb};

/// What the hub did with a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckOutcome {
    /// Where the receipt was appended (channel, seq, leaf hash); None when
    /// every entry had been acknowledged before and nothing was appended.
    pub receipt: Option<(String, u64, Vec<u8>)>,
    /// Entries this receipt newly acknowledged.
    pub newly_acknowledged: u32,
    /// Entries acknowledged before: (entry, earlier receipt).
    pub earlier: Vec<(pb::EntryRef, pb::EntryRef)>,
}

/// One page of an inbox.
#[derive(Debug, Clone)]
pub struct Page {
    pub entries: Vec<VerifiedEntry>,
    /// Cursor of the inbox's newest entry when the page was read.
    pub head: u64,
}

impl Page {
    /// The cursor to pass as `after` for the next page.
    pub fn next_after(&self, after: u64) -> u64 {
        self.entries.last().map(|e| e.cursor).unwrap_or(after)
    }
}

impl Client {
    /// A page of this client's inbox after `after` (0 = from the start).
    pub async fn pull(&self, after: u64, limit: u32) -> Result<Page, ClientError> {
        let r = hub_read!(
            self,
            rpc.pull(pb::PullRequest {
                inbox: String::new(),
                after,
                limit,
            })
        )
        .await?;
        let (entries, failed) = self.verify_deliveries(r.deliveries).await;
        if let Some(e) = failed {
            return Err(e);
        }
        if self.verify_inclusion {
            self.prove_included(&entries.iter().collect::<Vec<_>>())
                .await?;
        }
        Ok(Page {
            entries,
            head: r.head,
        })
    }

    /// One entry by position, if this client may see it.
    pub async fn get_entry(&self, channel: &str, seq: u64) -> Result<VerifiedEntry, ClientError> {
        let r = hub_read!(
            self,
            rpc.get_entry(pb::GetEntryRequest {
                channel: channel.to_string(),
                seq,
            })
        )
        .await?;
        let entry = self
            .verify_delivery(pb::Delivery {
                entry: r.entry,
                leaf_hash: r.leaf_hash,
                cursor: 0,
                ..Default::default()
            })
            .await?;
        if self.verify_inclusion {
            self.prove_included(&[&entry]).await?;
        }
        Ok(entry)
    }

    /// Verifies a delivery, fetching the registry again once if the
    /// signature names a key not seen yet (a rotation).
    pub async fn verify_delivery(&self, d: pb::Delivery) -> Result<VerifiedEntry, ClientError> {
        let (mut verified, failed) = self.verify_deliveries(vec![d]).await;
        match (failed, verified.pop()) {
            (Some(e), _) => Err(e),
            (None, Some(v)) => Ok(v),
            (None, None) => Err(ClientError::Integrity {
                channel: String::new(),
                seq: 0,
                reason: "the delivery was not checked".into(),
            }),
        }
    }

    /// Verifies deliveries in order, every entry's key first, then the
    /// signatures in one batch. An entry this process verified before,
    /// from the same bytes, claimed leaf hash and key, is not decoded or
    /// checked again (see `verified_bytes`). Returns the entries before
    /// the first that fails, and why it fails.
    pub(super) async fn verify_deliveries(
        &self,
        deliveries: Vec<pb::Delivery>,
    ) -> (Vec<VerifiedEntry>, Option<ClientError>) {
        // Only an entry that arrived encoded is compared by its bytes.
        let kept = VerifiedBytes::find_all(deliveries.iter().map(|d| {
            d.entry
                .is_none()
                .then_some((&d.leaf_hash[..], &d.encoded_entry[..]))
        }));
        let mut claimed = Vec::with_capacity(deliveries.len());
        let mut unprepared = None;
        for (d, kept) in deliveries.into_iter().zip(kept) {
            match self.prepare_delivery(d, kept).await {
                Ok(c) => claimed.push(c),
                Err(e) => {
                    unprepared = Some(e);
                    break;
                }
            }
        }
        let (verified, failed) = crate::verify::verify_entries(claimed);
        (verified, failed.or(unprepared))
    }

    /// Every check of [`Client::verify_delivery`] before the signature and
    /// leaf hash: the entry (decoded, or as kept when this process verified
    /// the same bytes before) with the registered key it must verify
    /// under.
    async fn prepare_delivery(
        &self,
        mut d: pb::Delivery,
        kept: Option<Found>,
    ) -> Result<Claimed, ClientError> {
        let integrity = |reason: String| ClientError::Integrity {
            channel: String::new(),
            seq: 0,
            reason,
        };
        let (entry, encoded, verified_under) = match kept {
            Some((entry, key)) => (entry, None, Some(key)),
            None => {
                // Decoded from a copy of its own, so that the entry (its
                // body a view of these bytes) does not hold the whole
                // receive buffer, and can be kept for other units.
                let encoded = (d.entry.is_none() && !d.encoded_entry.is_empty())
                    .then(|| Bytes::copy_from_slice(&d.encoded_entry));
                if let Some(own) = &encoded {
                    d.encoded_entry = own.clone();
                }
                let entry = d
                    .take_entry()
                    .map_err(|e| {
                        integrity(format!(
                            "delivery at cursor {}: undecodable entry: {e}",
                            d.cursor
                        ))
                    })?
                    .ok_or_else(|| {
                        integrity(format!("delivery at cursor {} without entry", d.cursor))
                    })?;
                (Arc::new(entry), encoded, None)
            }
        };
        let (unit, key_id) = signing_key_of(&entry).ok_or_else(|| ClientError::Integrity {
            channel: entry.channel.clone(),
            seq: entry.seq,
            reason: "entry without signature".into(),
        })?;
        let mut found = self.registered_key(unit, key_id);
        if found.is_none() {
            self.refresh_keys().await?;
            found = self.registered_key(unit, key_id);
        }
        let (key, validity) = found.ok_or_else(|| ClientError::Integrity {
            channel: entry.channel.clone(),
            seq: entry.seq,
            reason: format!(
                "signed with key {key_id}, which the registry does not list for unit {unit}"
            ),
        })?;
        if let Some(message) = entry.content()
            && let Err(e) = validity.check_message(unit, key_id, message)
        {
            return Err(ClientError::Integrity {
                channel: entry.channel.clone(),
                seq: entry.seq,
                reason: format!(
                    "signed outside its key's interval: {}",
                    describe_validity(&e)
                ),
            });
        }
        // Verified before only under the very key the registry names now.
        let verified_before = verified_under.is_some_and(|k| k[..] == key[..]);
        Ok(Claimed {
            entry,
            leaf_hash: d.leaf_hash,
            cursor: d.cursor,
            key,
            encoded,
            verified_before,
        })
    }

    /// Acknowledges entries with one receipt signed by this unit's key. The
    /// hub appends it to this unit's channel; acknowledging an entry again
    /// changes nothing.
    pub async fn ack(&self, entries: &[&VerifiedEntry]) -> Result<AckOutcome, ClientError> {
        self.ack_pins(entries.iter().map(|e| e.pin()).collect())
            .await
    }

    /// [`Client::ack`] by position and leaf hash.
    pub async fn ack_pins(&self, pins: Vec<pb::EntryPin>) -> Result<AckOutcome, ClientError> {
        self.ack_signed(self.sign_receipt(pins)?).await
    }

    /// Sends an already signed receipt; repeating it changes nothing.
    /// Interrupted calls are repeated like pushes.
    pub async fn ack_signed(&self, signed: pb::SignedMessage) -> Result<AckOutcome, ClientError> {
        let request = pb::AcknowledgeRequest {
            receipt: Some(signed),
        };
        let message_id = request
            .receipt
            .as_ref()
            .map(|r| r.message_id().to_string())
            .unwrap_or_default();
        let channel = request
            .receipt
            .as_ref()
            .and_then(|r| r.message.as_ref())
            .map(|m| m.sender.clone())
            .unwrap_or_default();
        // A receipt is appended to this unit's channel: the behind rule
        // holds. A repeat is answered at its first position with nothing
        // newly acknowledged; a new receipt always acknowledges something.
        let r = self
            .push_not_behind(
                &channel,
                || {
                    let mut rpc = self.rpc();
                    let request = request.clone();
                    async move { rpc.acknowledge(request).await }
                },
                |r: &pb::AcknowledgeResponse| receipt_position(r, &message_id),
            )
            .await?;
        Ok(AckOutcome {
            receipt: (!r.channel.is_empty()).then_some((r.channel, r.seq, r.leaf_hash)),
            newly_acknowledged: r.newly_acknowledged,
            earlier: r
                .earlier
                .into_iter()
                .filter_map(|e| Some((e.entry?, e.receipt?)))
                .collect(),
        })
    }

    /// A signed receipt for pinned entries, addressed to their senders.
    pub fn sign_receipt(&self, pins: Vec<pb::EntryPin>) -> Result<pb::SignedMessage, ClientError> {
        let senders: std::collections::BTreeSet<String> =
            pins.iter().map(|p| p.channel.clone()).collect();
        let draft = Draft::new(
            pb::Kind::Receipt,
            tongbao_proto::redact::receipt_subject(pins.len()),
            Vec::new(),
        )
        .to_units(senders);
        let (signer, unit) = self.signing_identity()?;
        let mut message = draft.into_message(unit, new_message_id(), now_micros());
        // A receipt holds no free text (offices audit it whole).
        message.content_type.clear();
        message.acknowledgement = Some(pb::Acknowledgement { entries: pins });
        Ok(signer.sign_message(message))
    }
}

/// Where a receipt was appended, if it was (none when every entry had
/// been acknowledged before).
fn receipt_position(r: &pb::AcknowledgeResponse, message_id: &str) -> Vec<Position> {
    if r.channel.is_empty() {
        return Vec::new();
    }
    vec![Position {
        channel: r.channel.clone(),
        seq: r.seq,
        duplicate: r.newly_acknowledged == 0,
        message_id: message_id.to_string(),
    }]
}
