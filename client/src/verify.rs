//! Checking what the hub delivers before the caller sees it.
//!
//! The rules themselves (leaf hash, signing bytes, key ids) live in
//! `tongbao-proto`; this module applies them to a delivery with the
//! signing keys of the registry.

use crate::ClientError;
use std::collections::HashMap;
use tongbao_proto::canonical::leaf_hash_with_digest;
use tongbao_proto::keys::verify_signed_message;
use tongbao_proto::{Hash, pb};

/// An entry whose leaf hash and sender signature have been checked.
/// Only this crate can make one.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VerifiedEntry {
    /// Position in the caller's inbox (0 for entries read directly).
    pub cursor: u64,
    pub entry: pb::Entry,
    pub leaf_hash: Hash,
}

impl VerifiedEntry {
    pub fn channel(&self) -> &str {
        &self.entry.channel
    }
    pub fn seq(&self) -> u64 {
        self.entry.seq
    }
    /// Names this entry exactly, as receipts and feedback do.
    pub fn pin(&self) -> pb::EntryPin {
        pb::EntryPin {
            channel: self.entry.channel.clone(),
            seq: self.entry.seq,
            leaf_hash: self.leaf_hash.to_vec(),
        }
    }

    /// The signed content (always present in a verified entry).
    pub fn message(&self) -> &pb::Message {
        static EMPTY: std::sync::OnceLock<pb::Message> = std::sync::OnceLock::new();
        self.entry
            .message
            .as_ref()
            .and_then(|m| m.message.as_ref())
            .unwrap_or_else(|| EMPTY.get_or_init(pb::Message::default))
    }
}

/// Signing public keys by unit and key id, from `ListUnits`.
#[derive(Debug, Default, Clone)]
pub struct KeyRing {
    keys: HashMap<(String, String), Vec<u8>>,
}

impl KeyRing {
    pub fn from_registry(units: &pb::ListUnitsResponse) -> Self {
        let mut keys = HashMap::new();
        for u in &units.units {
            for k in &u.keys {
                keys.insert((u.id.clone(), k.key_id.clone()), k.public_key.clone());
            }
        }
        Self { keys }
    }

    pub fn get(&self, unit: &str, key_id: &str) -> Option<&[u8]> {
        self.keys
            .get(&(unit.to_string(), key_id.to_string()))
            .map(Vec::as_slice)
    }
}

/// What verification needs beyond the entry: the key its signature names.
pub(crate) fn signing_key_of(entry: &pb::Entry) -> Option<(String, String)> {
    let sm = entry.message.as_ref()?;
    Some((entry.channel.clone(), sm.signature.as_ref()?.key_id.clone()))
}

/// True when a receipt acknowledges, or exception feedback answers,
/// exactly this entry (position and leaf hash).
pub fn answers_pin(message: &pb::Message, pin: &pb::EntryPin) -> bool {
    let acked = message
        .acknowledgement
        .as_ref()
        .is_some_and(|a| a.entries.contains(pin));
    let reported = message
        .exception
        .as_ref()
        .and_then(|x| x.entry.as_ref())
        .is_some_and(|e| e == pin);
    (message.kind == pb::Kind::Receipt as i32 && acked)
        || (message.kind == pb::Kind::ExceptionFeedback as i32 && reported)
}

/// Verifies a delivered entry against the leaf hash the hub claims and the
/// sender's registered public key.
pub fn verify_entry(
    entry: pb::Entry,
    claimed_leaf_hash: &[u8],
    cursor: u64,
    sender_key: &[u8],
) -> Result<VerifiedEntry, ClientError> {
    let fail = |reason: String| ClientError::Integrity {
        channel: entry.channel.clone(),
        seq: entry.seq,
        reason,
    };
    let signed = entry
        .message
        .as_ref()
        .ok_or_else(|| fail("the entry carries no message".into()))?;
    let message = signed
        .message
        .as_ref()
        .ok_or_else(|| fail("the entry carries no message".into()))?;
    if message.sender != entry.channel {
        return Err(fail(format!(
            "message names sender {} but sits in channel {}",
            message.sender, entry.channel
        )));
    }
    let digest = verify_signed_message(signed, sender_key).map_err(|e| fail(e.to_string()))?;
    let leaf_hash = leaf_hash_with_digest(&entry, &digest);
    if claimed_leaf_hash != leaf_hash {
        return Err(fail(format!(
            "leaf hash {} does not match the entry (computed {})",
            hex::encode(claimed_leaf_hash),
            hex::encode(leaf_hash)
        )));
    }
    Ok(VerifiedEntry {
        cursor,
        entry,
        leaf_hash,
    })
}
