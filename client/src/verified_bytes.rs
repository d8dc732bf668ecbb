//! Entries this process has already verified, kept by their exact bytes.
//!
//! A system serving several units (an agent, or the bench's 13
//! subscribers) receives each stored entry once per recipient unit, byte
//! for byte the same: the hub serves one stored encoding to all of them.
//! Decoding those bytes and checking their leaf hash and signature gives
//! the same answer every time for the same bytes, claimed leaf hash and
//! public key, so the first check's outcome is kept with the decoded entry
//! and a later delivery of identical bytes, claiming the same leaf hash,
//! whose signature the registry attributes to the same public key, shares
//! it. Anything that differs (one byte of the entry, the claimed leaf
//! hash, the key) misses and is decoded and checked in full. Each unit's
//! own checks (the key's interval, the inclusion proofs) are not kept here.

use prost::bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use tongbao_proto::{Hash, pb};

/// An entry whose leaf hash and signature this process has verified.
pub(crate) struct Kept {
    /// The entry's encoding exactly as it was delivered and checked.
    pub encoded: Bytes,
    /// The public key its signature verified under.
    pub key: Arc<[u8]>,
    /// The entry decoded from `encoded`.
    pub entry: Arc<pb::Entry>,
}

/// A kept entry as found: the entry, and the key it verified under.
pub(crate) type Found = (Arc<pb::Entry>, Arc<[u8]>);

/// The kept entries, by claimed leaf hash, oldest first out.
pub(crate) struct VerifiedBytes {
    kept: HashMap<Hash, Kept>,
    order: VecDeque<Hash>,
    bytes: usize,
}

impl VerifiedBytes {
    /// Entries kept, at most: deliveries of one entry to the units a
    /// process serves arrive within moments of each other, so a window of
    /// recent entries catches them; a unit further behind checks in full.
    const CAPACITY: usize = 4096;
    /// Encoded bytes kept, at most, so that large entries cannot make the
    /// window hold much memory.
    const MAX_BYTES: usize = 16 << 20;

    fn cell() -> &'static Mutex<VerifiedBytes> {
        static CELL: OnceLock<Mutex<VerifiedBytes>> = OnceLock::new();
        CELL.get_or_init(|| Mutex::new(VerifiedBytes::new()))
    }

    fn new() -> Self {
        VerifiedBytes {
            kept: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }

    /// For each delivery (claimed leaf hash, encoded entry), the kept
    /// entry with exactly that leaf hash and those bytes, and the key it
    /// verified under; one lock for all.
    pub(crate) fn find_all<'a>(
        deliveries: impl IntoIterator<Item = Option<(&'a [u8], &'a [u8])>>,
    ) -> Vec<Option<Found>> {
        let kept = Self::cell().lock().ok();
        deliveries
            .into_iter()
            .map(|d| {
                let (leaf_hash, encoded) = d?;
                let k = kept.as_ref()?.kept.get(leaf_hash)?;
                (k.encoded.as_ref() == encoded).then(|| (k.entry.clone(), k.key.clone()))
            })
            .collect()
    }

    /// Keeps entries just verified, by their claimed (and checked) leaf
    /// hash. Only an entry for more than one unit can be delivered again
    /// to another unit served here: the others are not kept.
    pub(crate) fn keep_all(entries: impl IntoIterator<Item = (Hash, Kept)>) {
        let mut fresh = entries
            .into_iter()
            .filter(|(_, k)| k.entry.recipients.len() > 1 && k.encoded.len() <= Self::MAX_BYTES)
            .peekable();
        if fresh.peek().is_none() {
            return;
        }
        let Ok(mut v) = Self::cell().lock() else {
            return;
        };
        for (leaf_hash, k) in fresh {
            v.insert(leaf_hash, k);
        }
    }

    /// Keeps one entry, letting the oldest go beyond the bounds.
    fn insert(&mut self, leaf_hash: Hash, k: Kept) {
        let size = k.encoded.len();
        match self.kept.insert(leaf_hash, k) {
            Some(old) => self.bytes -= old.encoded.len(),
            None => self.order.push_back(leaf_hash),
        }
        self.bytes += size;
        while self.order.len() > Self::CAPACITY || self.bytes > Self::MAX_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.kept.remove(&oldest) {
                self.bytes -= old.encoded.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Claimed, verify_entries};
    use prost::Message as _;
    use tongbao_proto::canonical::leaf_hash;
    use tongbao_proto::keys::SigningKey;

    /// An entry of `channel` for `recipients`, encoded as the hub stores
    /// it, with its leaf hash.
    fn stored(key: &SigningKey, channel: &str, recipients: &[&str]) -> (pb::Entry, Bytes, Hash) {
        let signed = key.sign_message(pb::Message {
            message_id: format!("m-{channel}-{}", recipients.len()),
            sender: channel.into(),
            kind: 1,
            body: b"for several units".to_vec().into(),
            ..Default::default()
        });
        let entry = pb::Entry {
            channel: channel.into(),
            seq: 7,
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            previous_leaf_hash: vec![0; 32],
            message: Some(signed),
            ..Default::default()
        };
        let leaf = leaf_hash(&entry);
        (entry.clone(), Bytes::from(entry.encode_to_vec()), leaf)
    }

    /// Checks an entry decoded from `encoded` in full, claiming `leaf`;
    /// keeps it when it verifies.
    fn check(
        encoded: &Bytes,
        leaf: &[u8],
        key: &[u8],
    ) -> Result<Vec<crate::VerifiedEntry>, crate::ClientError> {
        let entry =
            pb::Entry::decode(encoded.clone()).map_err(|e| crate::ClientError::Integrity {
                channel: String::new(),
                seq: 0,
                reason: e.to_string(),
            })?;
        let (verified, failed) = verify_entries(vec![Claimed {
            entry: Arc::new(entry),
            leaf_hash: leaf.to_vec(),
            cursor: 1,
            key: key.into(),
            encoded: Some(encoded.clone()),
            verified_before: false,
        }]);
        match failed {
            Some(e) => Err(e),
            None => Ok(verified),
        }
    }

    fn found(leaf: &[u8], encoded: &[u8]) -> Option<Found> {
        VerifiedBytes::find_all([Some((leaf, encoded))])
            .pop()
            .flatten()
    }

    #[test]
    fn only_the_exact_bytes_and_leaf_hash_verified_before_are_found()
    -> Result<(), Box<dyn std::error::Error>> {
        let key = SigningKey::generate()?;
        let (entry, encoded, leaf) = stored(&key, "tax", &["finance", "police"]);
        assert!(found(&leaf, &encoded).is_none(), "found before any check");
        check(&encoded, &leaf, key.public_key())?;
        let (kept, kept_key) = found(&leaf, &encoded).ok_or("a verified entry was not kept")?;
        assert_eq!(*kept, entry);
        assert_eq!(&kept_key[..], key.public_key());

        // The recipients altered, the verified leaf hash claimed: not found,
        // and checked in full it is refused.
        let mut altered = entry.clone();
        altered.recipients[1] = "customs".into();
        let altered_bytes = Bytes::from(altered.encode_to_vec());
        assert!(found(&leaf, &altered_bytes).is_none());
        let refused = check(&altered_bytes, &leaf, key.public_key());
        assert!(
            matches!(&refused, Err(crate::ClientError::Integrity { reason, .. }) if reason.contains("leaf hash")),
            "{refused:?}"
        );
        // One byte of the body changed: not found either.
        let mut flipped = encoded.to_vec();
        if let Some(b) = flipped.iter_mut().rev().find(|b| **b == b'u') {
            *b = b'U';
        }
        assert_ne!(&flipped[..], &encoded[..]);
        assert!(found(&leaf, &flipped).is_none());
        // The same bytes claiming another leaf hash: not found.
        let mut other_leaf = leaf;
        other_leaf[0] ^= 1;
        assert!(found(&other_leaf, &encoded).is_none());
        // The refused ones were not kept in place of the good one.
        assert!(found(&leaf, &encoded).is_some());
        Ok(())
    }

    #[test]
    fn an_entry_verified_under_another_key_is_checked_again()
    -> Result<(), Box<dyn std::error::Error>> {
        let key = SigningKey::generate()?;
        let (_, encoded, leaf) = stored(&key, "civil-affairs", &["finance", "police", "tax"]);
        check(&encoded, &leaf, key.public_key())?;
        let (kept, kept_key) = found(&leaf, &encoded).ok_or("not kept")?;
        // A unit whose registry names another key for this signature does
        // not take the entry as verified (`verified_before` is false), and
        // in full the entry fails under that key.
        let other = SigningKey::generate()?;
        assert_ne!(&kept_key[..], other.public_key());
        let (verified, failed) = verify_entries(vec![Claimed {
            entry: kept,
            leaf_hash: leaf.to_vec(),
            cursor: 2,
            key: other.public_key().into(),
            encoded: None,
            verified_before: false,
        }]);
        assert!(verified.is_empty());
        assert!(
            matches!(&failed, Some(crate::ClientError::Integrity { reason, .. }) if reason.contains("signature")),
            "{failed:?}"
        );
        Ok(())
    }

    #[test]
    fn an_entry_for_one_unit_is_not_kept() -> Result<(), Box<dyn std::error::Error>> {
        let key = SigningKey::generate()?;
        let (_, encoded, leaf) = stored(&key, "finance", &["tax"]);
        check(&encoded, &leaf, key.public_key())?;
        assert!(found(&leaf, &encoded).is_none());
        Ok(())
    }

    #[test]
    fn the_window_holds_at_most_its_entries_and_bytes() {
        let entry = Arc::new(pb::Entry::default());
        let key: Arc<[u8]> = Arc::from(&[1u8; 32][..]);
        let kept = |n: usize| Kept {
            encoded: Bytes::from(vec![0u8; n]),
            key: key.clone(),
            entry: entry.clone(),
        };
        let leaf = |i: usize| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_be_bytes());
            h
        };
        let mut v = VerifiedBytes::new();
        for i in 0..VerifiedBytes::CAPACITY + 10 {
            v.insert(leaf(i), kept(16));
        }
        assert_eq!(v.kept.len(), VerifiedBytes::CAPACITY);
        assert_eq!(v.order.len(), VerifiedBytes::CAPACITY);
        assert!(!v.kept.contains_key(&leaf(9)), "the oldest stayed");
        assert!(v.kept.contains_key(&leaf(10)));
        // Large entries push out older ones by their size.
        for i in 0..8 {
            v.insert(leaf(1_000_000 + i), kept(VerifiedBytes::MAX_BYTES / 4));
        }
        assert!(v.bytes <= VerifiedBytes::MAX_BYTES, "{}", v.bytes);
        assert_eq!(
            v.bytes,
            v.kept.values().map(|k| k.encoded.len()).sum::<usize>()
        );
        assert!(v.kept.contains_key(&leaf(1_000_007)));
        assert!(!v.kept.contains_key(&leaf(1_000_000)));
        // The same leaf hash kept again replaces, and counts once.
        let before = v.kept.len();
        v.insert(leaf(1_000_007), kept(8));
        assert_eq!(v.kept.len(), before);
        assert_eq!(
            v.bytes,
            v.kept.values().map(|k| k.encoded.len()).sum::<usize>()
        );
    }
}
