//! The idempotency index: under each (sender, message id), the seq of the
//! entry in the sender's channel that carried it.
//!
//! Formats 2 to 5 kept the seq (8 bytes) and the message's digest (32)
//! there. The digest is the canonical hash of the message the entry holds,
//! so format 6 keeps the seq alone, as a varint, and a lookup that finds
//! the id computes the digest from the entry: every push writes a record,
//! and only a push retried (or an id reused) finds one. The record lives
//! on in sled's file several times its size, so the 37 bytes saved a
//! message count more than once. Records of the older formats read as
//! they are; a dump writes every record whole, as format 3 kept it.
//!
//! Format 8 keeps the records in sled no more: a commit writes them to
//! the overlay (and the journal) as before, and the flush moves them into
//! the message id index ([`super::super::message_index`]), which gives the
//! seqs a fingerprint of (sender, message id) may name; the entry a seq
//! names tells whether it carries the id.

use super::super::codec::{MESSAGE, hash_from, key, u64_from};
use super::super::entry_record::decode_entry;
use super::super::message_index::fingerprint;
use super::super::{MessageRecord, Store, StoreError};
use super::SledStore;
use std::sync::atomic::Ordering;
use tongbao_proto::HASH_LEN;

/// The key of `message_id`'s record among `sender`'s.
pub(super) fn message_key(sender: &str, message_id: &str) -> Vec<u8> {
    let mut k = key(MESSAGE, sender, None);
    k.push(0);
    k.extend_from_slice(message_id.as_bytes());
    k
}

/// A record of format 6: the seq as a varint.
pub(super) fn message_value(seq: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(4);
    prost::encoding::encode_varint(seq, &mut v);
    v
}

/// A record whole, as formats 2 to 5 kept it: seq (8), digest (32).
fn message_value_whole(record: &MessageRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + HASH_LEN);
    v.extend_from_slice(&record.seq.to_be_bytes());
    v.extend_from_slice(&record.message_digest);
    v
}

/// The message an entry carries (the hub writes no entry without one).
fn carried(entry: &tongbao_proto::pb::Entry) -> Option<&tongbao_proto::pb::Message> {
    entry.message.as_ref().and_then(|m| m.message.as_ref())
}

/// A record's key and value.
type KeyValue = (Vec<u8>, Vec<u8>);

/// The message id record, whole, of the entry `channel`:`seq` whose
/// record (with its recipients' names, format 6's layout) is `v`: a dump's, made from the
/// entry, since format 8 keeps the records out of sled. None for an entry
/// that carries no message (the hub writes none).
pub(super) fn message_record_of_entry(
    channel: &str,
    seq: u64,
    v: &[u8],
) -> Result<Option<KeyValue>, StoreError> {
    let entry = decode_entry(channel, seq, v)?;
    let Some(message) = carried(&entry.entry) else {
        return Ok(None);
    };
    let record = MessageRecord {
        seq,
        message_digest: tongbao_proto::canonical::message_digest(message),
    };
    Ok(Some((
        message_key(channel, &message.message_id),
        message_value_whole(&record),
    )))
}

/// (sender, message id) of a record's key.
fn key_parts(k: &[u8]) -> Result<(String, String), StoreError> {
    let bad = || StoreError::Corrupt("a message record's key".into());
    let rest = k.get(2..).ok_or_else(bad)?;
    // Sender names hold no 0 byte.
    let at = rest.iter().position(|b| *b == 0).ok_or_else(bad)?;
    Ok((
        String::from_utf8_lossy(&rest[..at]).into_owned(),
        String::from_utf8_lossy(&rest[at + 1..]).into_owned(),
    ))
}

impl SledStore {
    /// What the record `v` of (`sender`, `message_id`) says: read whole
    /// (formats 2 to 5), or its seq with the digest of the message its
    /// entry holds, which must carry that id.
    pub(super) fn message_record(
        &self,
        sender: &str,
        message_id: &str,
        v: &[u8],
    ) -> Result<MessageRecord, StoreError> {
        let bad =
            |why: &str| StoreError::Corrupt(format!("message record {sender}/{message_id}: {why}"));
        if v.len() == 8 + HASH_LEN {
            return Ok(MessageRecord {
                seq: u64_from(&v[..8])?,
                message_digest: hash_from(&v[8..])?,
            });
        }
        let mut rest = v;
        let seq = prost::encoding::decode_varint(&mut rest).map_err(|_| bad("garbled"))?;
        if !rest.is_empty() {
            return Err(bad("garbled"));
        }
        let entry = self
            .entry_read(sender, seq)?
            .ok_or_else(|| bad(&format!("names entry {sender}:{seq}, which is missing")))?;
        let message = carried(&entry.entry)
            .filter(|m| m.message_id == message_id)
            .ok_or_else(|| bad(&format!("names entry {sender}:{seq}, of another message")))?;
        Ok(MessageRecord {
            seq,
            message_digest: tongbao_proto::canonical::message_digest(message),
        })
    }

    /// The record of (`sender`, `message_id`): in the overlay until a
    /// flush moves it, then in the index (format 8), or in sled (until a
    /// format 7 directory's upgrade).
    pub(super) fn find_message(
        &self,
        sender: &str,
        message_id: &str,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let k = message_key(sender, message_id);
        let indexed = self.durability.messages_indexed.load(Ordering::Acquire);
        let v = if indexed {
            self.durability.get_applied(&k)?
        } else {
            self.durability.get(&k)?
        };
        if let Some(v) = v {
            return self.message_record(sender, message_id, &v).map(Some);
        }
        if !indexed {
            return Ok(None);
        }
        // Each seq the fingerprint names, until one's entry carries the id:
        // another id's fingerprint may be the same, in this channel or
        // another sender's (whose seq may be past this channel's end).
        for seq in self
            .durability
            .messages
            .seqs(fingerprint(sender, message_id))?
        {
            let Some(entry) = self.entry_read(sender, seq)? else {
                continue;
            };
            if let Some(message) = carried(&entry.entry).filter(|m| m.message_id == message_id) {
                return Ok(Some(MessageRecord {
                    seq,
                    message_digest: tongbao_proto::canonical::message_digest(message),
                }));
            }
        }
        Ok(None)
    }

    /// The record under key `k`, whole (a dump's layout).
    pub(super) fn message_record_whole(&self, k: &[u8], v: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (sender, message_id) = key_parts(k)?;
        Ok(message_value_whole(&self.message_record(
            &sender,
            &message_id,
            v,
        )?))
    }

    /// Whether the message id of entry `channel`:`seq` has its record
    /// naming that entry: in the overlay, or among the seqs the index
    /// gives. None for an entry that cannot be read (the entries' checks'
    /// to report) or carries no message.
    fn entry_has_record(&self, channel: &str, seq: u64) -> Result<Option<bool>, StoreError> {
        let Ok(Some(entry)) = self.entry_read(channel, seq) else {
            return Ok(None);
        };
        let Some(message) = carried(&entry.entry) else {
            return Ok(None);
        };
        let id = &message.message_id;
        Ok(Some(
            match self.durability.get_applied(&message_key(channel, id))? {
                Some(v) => self.message_record(channel, id, &v).ok().map(|r| r.seq) == Some(seq),
                None => self
                    .durability
                    .messages
                    .seqs(fingerprint(channel, id))?
                    .contains(&seq),
            },
        ))
    }

    /// Refuses a start whose message id index lacks the record of a
    /// channel's newest entry: the index (or its newest part) is gone, and
    /// a retried push would be appended again. A record lost further back
    /// is `verify-data`'s to find ([`Self::check_message_ids`]).
    pub(super) fn check_newest_message_ids(&self) -> Result<(), StoreError> {
        if !self.durability.messages_indexed.load(Ordering::Acquire) {
            return Ok(());
        }
        for (channel, head) in self.channel_heads()? {
            let Some(seq) = head.next_seq.checked_sub(1) else {
                continue;
            };
            if self.entry_has_record(&channel, seq)? == Some(false) {
                return Err(StoreError::Corrupt(format!(
                    "the message id index in {} lacks the record of entry {channel}:{seq}, its \
                     channel's newest; restore the data directory from a backup",
                    self.durability.dir.join("message-ids").display()
                )));
            }
        }
        Ok(())
    }

    /// Checks that every entry's message id has its record (format 8:
    /// in the index, which is read whole against its checksums too): a
    /// lost record would let a retried push be appended again. An entry
    /// that cannot be read is the entries' check's to report.
    pub fn check_message_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut failures = Vec::new();
        if !self.durability.messages_indexed.load(Ordering::Acquire) {
            return Ok(failures);
        }
        if let Err(e) = self.durability.messages.check() {
            failures.push(e.to_string());
        }
        for (channel, head) in self.channel_heads()? {
            for seq in 0..head.next_seq {
                if self.entry_has_record(&channel, seq)? == Some(false) {
                    failures.push(format!(
                        "channel {channel}: entry {seq}'s message id has no record: a push \
                         retried with it would be appended again"
                    ));
                }
            }
        }
        Ok(failures)
    }
}
