//! What an audit reads of an entry record: the fields it reports, and
//! nothing of the body.
//!
//! Format 6 keeps no copy of a row beside its entry (see
//! [`super::audit_index`]): an audit reads each row's entry record.
//! Decoding the whole entry there copied its body, signature, audience
//! and subject for nothing. The record puts the leaf hash and inbox
//! positions before the encoded entry, and protobuf lets a reader skip
//! the fields it does not name, so this view decodes only what a row
//! reports (recipients, sender, kind, message id, deadline) and the
//! entry's own channel and seq, which must be the row's: a lookup that
//! read another entry's record is refused, not reported as the row.

use super::audit_index::Row;
use super::entry_record::split_record;
use super::{ScopedEntry, StoreError};
use prost::Message as _;

/// `tongbao.v1.Entry` as an audit reads it (the proto's tags; the other
/// fields skipped undecoded).
#[derive(Clone, PartialEq, prost::Message)]
struct EntryView {
    #[prost(string, tag = "1")]
    channel: String,
    #[prost(uint64, tag = "2")]
    seq: u64,
    #[prost(string, repeated, tag = "4")]
    recipients: Vec<String>,
    #[prost(message, optional, tag = "6")]
    message: Option<SignedMessageView>,
}

/// `tongbao.v1.SignedMessage` without its signature.
#[derive(Clone, PartialEq, prost::Message)]
struct SignedMessageView {
    #[prost(message, optional, tag = "1")]
    message: Option<MessageView>,
}

/// `tongbao.v1.Message`: what a row reports of it.
#[derive(Clone, PartialEq, prost::Message)]
struct MessageView {
    #[prost(string, tag = "1")]
    message_id: String,
    #[prost(string, tag = "2")]
    sender: String,
    #[prost(int32, tag = "3")]
    kind: i32,
    #[prost(message, optional, tag = "5")]
    labels: Option<LabelsView>,
}

/// `tongbao.v1.Labels`: the deadline alone.
#[derive(Clone, PartialEq, prost::Message)]
struct LabelsView {
    #[prost(int64, tag = "3")]
    ack_deadline_micros: i64,
}

/// What an audit reports of `row` of `mechanism`, read from `record`,
/// the record of the entry the row names.
pub(super) fn audited(
    mechanism: &str,
    row: &Row,
    record: &[u8],
) -> Result<ScopedEntry, StoreError> {
    let (channel, seq) = (&row.channel, row.seq);
    let (leaf_hash, cursors, encoded) = split_record(channel, seq, record)?;
    let entry = EntryView::decode(encoded)
        .map_err(|e| StoreError::Corrupt(format!("entry {channel}:{seq}: {e}")))?;
    if entry.channel != *channel || entry.seq != seq {
        return Err(StoreError::Corrupt(format!(
            "the audit index of {mechanism} names entry {channel}:{seq}, \
             but the record read for it is entry {}:{}",
            entry.channel, entry.seq
        )));
    }
    if cursors.len() != entry.recipients.len() {
        return Err(StoreError::Corrupt(format!(
            "entry {channel}:{seq}: {} inbox positions for {} recipients",
            cursors.len(),
            entry.recipients.len()
        )));
    }
    let message = entry.message.and_then(|m| m.message).unwrap_or_default();
    Ok(ScopedEntry {
        hub_micros: row.hub_micros as i64,
        channel: row.channel.clone(),
        seq,
        leaf_hash,
        sender: message.sender,
        kind: message.kind,
        message_id: message.message_id,
        ack_deadline_micros: message.labels.map_or(0, |l| l.ack_deadline_micros),
        deliveries: entry.recipients.into_iter().zip(cursors).collect(),
    })
}

/// The view reports what the whole entry does, whatever else the entry
/// holds; damaged records are refused or read without a panic.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::store::StoredEntry;
    use crate::store::audit_index::scoped_entry;
    use crate::store::codec::proptests::damaged;
    use crate::store::entry_record::{decode_entry, entry_record, entry_record_compact};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use std::sync::Arc;
    use tongbao_proto::{Hash, pb};

    /// An entry with every field an audit skips filled in as well.
    fn entry_of(
        seq: u64,
        recipients: usize,
        kind: i32,
        deadline: Option<i64>,
        body: Vec<u8>,
    ) -> pb::Entry {
        pb::Entry {
            channel: "tax".into(),
            seq,
            hub_micros: 1_000 + seq as i64,
            recipients: (0..recipients).map(|i| format!("unit-{i}")).collect(),
            previous_leaf_hash: vec![7; 32],
            message: Some(pb::SignedMessage {
                message: Some(pb::Message {
                    message_id: format!("m{seq}"),
                    sender: "tax".into(),
                    kind,
                    audience: Some(pb::Audience {
                        units: vec!["finance".into()],
                        mechanisms: vec!["fund".into()],
                        ..Default::default()
                    }),
                    labels: deadline.map(|d| pb::Labels {
                        priority: 2,
                        ack_deadline_micros: d,
                        ..Default::default()
                    }),
                    subject: "subject".into(),
                    body: body.into(),
                    content_type: "text/plain".into(),
                    attachments: vec![pb::AttachmentDigest {
                        name: "a.pdf".into(),
                        sha256: vec![1; 32],
                        ..Default::default()
                    }],
                    created_micros: 5,
                    ..Default::default()
                }),
                signature: Some(pb::Signature {
                    key_id: "k".into(),
                    signature: vec![9; 64],
                    ..Default::default()
                }),
            }),
        }
    }

    proptest! {
        #[test]
        fn the_view_reports_what_the_whole_entry_does(
            hash in any::<Hash>(),
            seq in 0..1_000u64,
            cursors in vec(prop_oneof![0..300u64, any::<u64>()], 0..15),
            kind in 0..14i32,
            deadline in prop::option::of(any::<i64>()),
            body in vec(any::<u8>(), 0..300),
        ) {
            let entry = entry_of(seq, cursors.len(), kind, deadline, body);
            let encoded = entry.encode_to_vec();
            let row = Row { hub_micros: 1_000 + seq, seq, channel: "tax".into() };
            for record in [
                entry_record(&hash, cursors.iter().copied(), &encoded),
                entry_record_compact(&hash, &cursors, &encoded),
            ] {
                let whole: StoredEntry = decode_entry("tax", seq, &record)?;
                let want = scoped_entry(row.clone(), &Arc::new(whole));
                prop_assert_eq!(audited("fund", &row, &record)?, want);
            }
        }

        #[test]
        fn damaged_records_are_read_without_panic(
            record in damaged((0..4usize, vec(any::<u8>(), 0..40)).prop_map(|(n, body)| {
                let cursors: Vec<u64> = (0..n as u64).collect();
                let entry = entry_of(3, n, 1, Some(5), body);
                entry_record_compact(&[1; 32], &cursors, &entry.encode_to_vec())
            })),
        ) {
            let row = Row { hub_micros: 1_003, seq: 3, channel: "tax".into() };
            if let Ok(read) = audited("fund", &row, &record) {
                prop_assert_eq!((read.channel.as_str(), read.seq), ("tax", 3));
            }
        }
    }

    /// A record of another entry than the row names (of another seq or
    /// another channel) is refused, naming both.
    #[test]
    fn a_record_of_another_entry_is_refused() -> Result<(), String> {
        let entry = entry_of(4, 1, 1, None, b"body".to_vec());
        let record = entry_record_compact(&[1; 32], &[9], &entry.encode_to_vec());
        for (channel, seq) in [("tax", 3), ("fee", 4)] {
            let row = Row {
                hub_micros: 1_004,
                seq,
                channel: channel.into(),
            };
            match audited("fund", &row, &record) {
                Err(StoreError::Corrupt(m)) => assert!(
                    m.contains(&format!("names entry {channel}:{seq}"))
                        && m.contains("is entry tax:4"),
                    "{m}"
                ),
                other => return Err(format!("expected a refusal, got {other:?}")),
            }
        }
        Ok(())
    }
}
