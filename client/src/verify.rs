//! Checking what the hub delivers before the caller sees it.
//!
//! The rules themselves (leaf hash, signing bytes, key ids) live in
//! `tongbao-proto`; this module applies them to a delivery with the
//! signing keys of the registry.

use crate::ClientError;
use crate::verified_bytes::{Kept, VerifiedBytes};
use prost::bytes::Bytes;
use std::collections::HashMap;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use tongbao_proto::canonical::leaf_hash_with_digest;
use tongbao_proto::canonical::{message_digest, sha256_of_parts};
use tongbao_proto::keys::{KeyValidity, RegisteredKey, verify_digest, verify_digests};
use tongbao_proto::{EntryFault, Hash, pb};

/// An entry whose leaf hash and sender signature have been checked.
/// Only this crate can make one. The decoded entry is shared, not copied,
/// between the units of one process that received the same bytes (see
/// `Arc::unwrap_or_clone` for one of your own). Its message body is a view
/// of one buffer holding the entry's encoding: keeping the entry keeps
/// that buffer, so copy the body (`to_vec`) to keep it for long on its own.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VerifiedEntry {
    /// Position in the caller's inbox (0 for entries read directly).
    pub cursor: u64,
    pub entry: Arc<pb::Entry>,
    pub leaf_hash: Hash,
}

impl VerifiedEntry {
    pub fn channel(&self) -> &str {
        &self.entry.channel
    }
    pub fn seq(&self) -> u64 {
        self.entry.seq
    }
    /// The entry as a value of its own (a copy when it is shared).
    pub fn into_entry(self) -> pb::Entry {
        Arc::unwrap_or_clone(self.entry)
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
            .content()
            .unwrap_or_else(|| EMPTY.get_or_init(pb::Message::default))
    }
}

/// Signing public keys by unit and key id, from `ListUnits`, with the
/// interval each key may sign in (signatures outside it are refused).
/// Looked up by unit, then key id, so a lookup borrows the names it is
/// given (one per delivered entry).
#[derive(Debug, Default, Clone)]
pub struct KeyRing {
    keys: HashMap<String, HashMap<String, UnitKey>>,
}

/// A registered public key and the interval it may sign in.
type UnitKey = (Arc<[u8]>, KeyValidity);

impl KeyRing {
    pub fn from_registry(units: &pb::ListUnitsResponse) -> Self {
        let mut keys: HashMap<String, HashMap<String, _>> = HashMap::new();
        for u in &units.units {
            for k in &u.keys {
                keys.entry(u.id.clone()).or_default().insert(
                    k.key_id.clone(),
                    (
                        Arc::from(k.public_key.as_slice()),
                        KeyValidity::from_wire(k.valid_from_micros, k.valid_until_micros),
                    ),
                );
            }
        }
        Self { keys }
    }

    /// A key's public key (shared, not copied, with each entry it checks)
    /// and the interval it may sign in.
    pub(crate) fn lookup(&self, unit: &str, key_id: &str) -> Option<(&Arc<[u8]>, KeyValidity)> {
        self.keys.get(unit)?.get(key_id).map(|(k, v)| (k, *v))
    }

    /// When a key was retired, if it was.
    pub fn retired_at(&self, unit: &str, key_id: &str) -> Option<i64> {
        self.validity(unit, key_id).and_then(|v| v.until_micros)
    }

    /// The interval a key may sign in.
    pub fn validity(&self, unit: &str, key_id: &str) -> Option<KeyValidity> {
        self.lookup(unit, key_id).map(|(_, v)| v)
    }

    /// A key with the interval it may sign in, as the shared rules of
    /// `tongbao_proto` take it.
    pub fn registered(&self, unit: &str, key_id: &str) -> Option<RegisteredKey> {
        let (public_key, validity) = self.lookup(unit, key_id)?;
        Some(RegisteredKey {
            unit: unit.to_string(),
            algorithm: tongbao_proto::keys::ED25519_ALGORITHM.to_string(),
            key_id: key_id.to_string(),
            public_key: public_key.to_vec(),
            valid_from_micros: validity.from_micros,
            valid_until_micros: validity.until_micros.unwrap_or(0),
        })
    }

    pub fn get(&self, unit: &str, key_id: &str) -> Option<&[u8]> {
        self.lookup(unit, key_id).map(|(k, _)| &k[..])
    }
}

/// What verification needs beyond the entry: the key its signature names.
pub(crate) fn signing_key_of(entry: &pb::Entry) -> Option<(&str, &str)> {
    let sm = entry.message.as_ref()?;
    Some((&entry.channel, &sm.signature.as_ref()?.key_id))
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

/// Signatures this process has already verified, so that several units
/// served by one system (or a re-read entry) cost one Ed25519 check per
/// signed message. A hit requires the same digest, signature and key.
struct VerifiedSignatures {
    set: HashSet<Hash>,
    order: VecDeque<Hash>,
}

/// What names one verified signature in [`VerifiedSignatures`]: a hash of
/// the digest, the signature and the public key, computed once per entry.
type SignatureKey = Hash;

impl VerifiedSignatures {
    const CAPACITY: usize = 1 << 16;

    fn cell() -> &'static Mutex<VerifiedSignatures> {
        static CELL: OnceLock<Mutex<VerifiedSignatures>> = OnceLock::new();
        CELL.get_or_init(|| {
            Mutex::new(VerifiedSignatures {
                set: HashSet::new(),
                order: VecDeque::new(),
            })
        })
    }

    fn key(digest: &Hash, signature: &pb::Signature, public_key: &[u8]) -> SignatureKey {
        sha256_of_parts(&[
            digest,
            signature.algorithm.as_bytes(),
            &[0],
            signature.key_id.as_bytes(),
            &[0],
            &signature.signature,
            &[0],
            public_key,
        ])
    }

    /// Whether each key (None: nothing to look up) was verified before;
    /// one lock for all.
    fn seen_all(keys: impl IntoIterator<Item = Option<SignatureKey>>) -> Vec<bool> {
        let set = Self::cell().lock().ok();
        keys.into_iter()
            .map(|k| match (k, &set) {
                (Some(k), Some(v)) => v.set.contains(&k),
                _ => false,
            })
            .collect()
    }

    fn remember_all(keys: impl IntoIterator<Item = SignatureKey>) {
        let Ok(mut v) = Self::cell().lock() else {
            return;
        };
        for key in keys {
            if v.set.insert(key) {
                v.order.push_back(key);
                if v.order.len() > Self::CAPACITY
                    && let Some(old) = v.order.pop_front()
                {
                    v.set.remove(&old);
                }
            }
        }
    }
}

/// A decoded delivery whose signing key is known and valid for it: the
/// entry with the leaf hash the hub claims for it, its inbox position and
/// the public key its signature names.
pub(crate) struct Claimed {
    pub entry: Arc<pb::Entry>,
    pub leaf_hash: Vec<u8>,
    pub cursor: u64,
    pub key: Arc<[u8]>,
    /// The bytes the entry was decoded from, when it arrived encoded:
    /// kept with it once it verifies (see [`VerifiedBytes`]).
    pub encoded: Option<Bytes>,
    /// Verified before in this process: the same bytes, claimed leaf hash
    /// and public key (see [`VerifiedBytes`]).
    pub verified_before: bool,
}

/// Verifies entries in order as [`verify_entry`] does, checking the
/// signatures this process has not verified yet in one batch. Returns the
/// entries before the first that fails, and why it fails (a failed batch
/// is checked again one by one, so the reason is the entry's own).
pub(crate) fn verify_entries(claimed: Vec<Claimed>) -> (Vec<VerifiedEntry>, Option<ClientError>) {
    // Per entry: its digest, and the cache key of its signature.
    let digests: Vec<Option<(Hash, Option<SignatureKey>)>> = claimed
        .iter()
        .map(|c| {
            if c.verified_before {
                return None;
            }
            let signed = c.entry.message.as_ref()?;
            let digest = message_digest(signed.message.as_ref()?);
            let key = signed
                .signature
                .as_ref()
                .map(|s| VerifiedSignatures::key(&digest, s, &c.key));
            Some((digest, key))
        })
        .collect();
    let cache_key = |i: usize| digests.get(i).copied().flatten().and_then(|(_, k)| k);
    let mut signature_verified = VerifiedSignatures::seen_all((0..digests.len()).map(cache_key));
    // Those not verified before, checked together.
    let pending: Vec<(usize, &Hash, &pb::Signature, &[u8])> = claimed
        .iter()
        .zip(&digests)
        .enumerate()
        .filter(|(i, (c, _))| {
            !c.verified_before && !signature_verified.get(*i).copied().unwrap_or(false)
        })
        .filter_map(|(i, (c, d))| {
            let (digest, _) = d.as_ref()?;
            let signature = c.entry.message.as_ref()?.signature.as_ref()?;
            Some((i, digest, signature, &c.key[..]))
        })
        .collect();
    // A single check gains nothing from a batch.
    if pending.len() >= 2 {
        let items: Vec<(&Hash, &pb::Signature, &[u8])> =
            pending.iter().map(|(_, d, s, k)| (*d, *s, *k)).collect();
        let mut newly = Vec::new();
        for ((i, ..), verdict) in pending.iter().zip(verify_digests(&items)) {
            if verdict.is_ok() {
                if let Some(v) = signature_verified.get_mut(*i) {
                    *v = true;
                }
                newly.extend(cache_key(*i));
            }
        }
        VerifiedSignatures::remember_all(newly);
    }
    let mut verified = Vec::with_capacity(claimed.len());
    let mut keep = Vec::new();
    let mut failed = None;
    for ((c, digest), signature_verified) in
        claimed.into_iter().zip(digests).zip(signature_verified)
    {
        if c.verified_before
            && let Ok(leaf_hash) = Hash::try_from(&c.leaf_hash[..])
        {
            verified.push(VerifiedEntry {
                cursor: c.cursor,
                entry: c.entry,
                leaf_hash,
            });
            continue;
        }
        let known = digest.map(|(digest, cache_key)| Known {
            digest,
            cache_key,
            signature_verified,
        });
        match check_entry(c.entry, &c.leaf_hash, c.cursor, &c.key, known) {
            Ok(v) => {
                if let Some(encoded) = c.encoded {
                    let entry = v.entry.clone();
                    keep.push((
                        v.leaf_hash,
                        Kept {
                            encoded,
                            key: c.key,
                            entry,
                        },
                    ));
                }
                verified.push(v);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    VerifiedBytes::keep_all(keep);
    (verified, failed)
}

/// What [`verify_entries`] found out about an entry's message before
/// checking the entry: its digest, and whether its signature verified
/// under the entry's key (from the cache or the batch).
struct Known {
    digest: Hash,
    /// Its signature's key in [`VerifiedSignatures`] (None: unsigned).
    cache_key: Option<SignatureKey>,
    signature_verified: bool,
}

/// Verifies a delivered entry against the leaf hash the hub claims and the
/// sender's registered public key.
pub fn verify_entry(
    entry: pb::Entry,
    claimed_leaf_hash: &[u8],
    cursor: u64,
    sender_key: &[u8],
) -> Result<VerifiedEntry, ClientError> {
    check_entry(Arc::new(entry), claimed_leaf_hash, cursor, sender_key, None)
}

/// [`verify_entry`] with what is already known of the entry's message.
fn check_entry(
    entry: Arc<pb::Entry>,
    claimed_leaf_hash: &[u8],
    cursor: u64,
    sender_key: &[u8],
    known: Option<Known>,
) -> Result<VerifiedEntry, ClientError> {
    let fail = |reason: String| ClientError::Integrity {
        channel: entry.channel.clone(),
        seq: entry.seq,
        reason,
    };
    let (signed, message) = entry.sender_message().map_err(|e| match e {
        EntryFault::NoMessage => fail(format!("the entry {e}")),
        EntryFault::WrongChannel { .. } => fail(format!("message {e}")),
    })?;
    let signature = signed
        .signature
        .as_ref()
        .ok_or_else(|| fail("the entry's message is not signed".into()))?;
    let (digest, cache_key, signature_verified) = match known {
        Some(Known {
            digest,
            cache_key: Some(key),
            signature_verified,
        }) => (digest, key, signature_verified),
        _ => {
            let digest = message_digest(message);
            let key = VerifiedSignatures::key(&digest, signature, sender_key);
            let seen = VerifiedSignatures::seen_all([Some(key)]);
            (digest, key, seen.first().copied().unwrap_or(false))
        }
    };
    if !signature_verified {
        verify_digest(&digest, signature, sender_key).map_err(|e| fail(e.to_string()))?;
        VerifiedSignatures::remember_all([cache_key]);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tongbao_proto::keys::SigningKey;

    fn entry(key: &SigningKey, body: &str) -> pb::Entry {
        let signed = key.sign_message(pb::Message {
            message_id: "m".into(),
            sender: "tax".into(),
            kind: 1,
            body: body.as_bytes().to_vec().into(),
            ..Default::default()
        });
        pb::Entry {
            channel: "tax".into(),
            seq: 0,
            previous_leaf_hash: vec![0; 32],
            message: Some(signed),
            ..Default::default()
        }
    }

    #[test]
    fn a_remembered_signature_does_not_let_tampering_through()
    -> Result<(), Box<dyn std::error::Error>> {
        let key = SigningKey::generate()?;
        let good = entry(&key, "original");
        let leaf = tongbao_proto::canonical::leaf_hash(&good);
        verify_entry(good.clone(), &leaf, 1, key.public_key())?;
        // Same entry again: served from the cache, still fine.
        verify_entry(good.clone(), &leaf, 2, key.public_key())?;
        // Changed body, same signature: must fail despite the cache.
        let mut bad = good.clone();
        if let Some(m) = bad.message.as_mut().and_then(|s| s.message.as_mut()) {
            m.body = b"tampered".to_vec().into();
        }
        let bad_leaf = tongbao_proto::canonical::leaf_hash(&bad);
        assert!(verify_entry(bad.clone(), &bad_leaf, 3, key.public_key()).is_err());
        // Nor when checked with others, the good one remembered beside it.
        let claimed = [(good.clone(), leaf), (bad, bad_leaf)]
            .into_iter()
            .enumerate()
            .map(|(i, (entry, leaf))| Claimed {
                entry: Arc::new(entry),
                leaf_hash: leaf.to_vec(),
                cursor: i as u64 + 1,
                key: key.public_key().into(),
                encoded: None,
                verified_before: false,
            })
            .collect();
        let (verified, failed) = verify_entries(claimed);
        assert_eq!(verified.len(), 1);
        assert!(
            matches!(&failed, Some(ClientError::Integrity { reason, .. }) if reason.contains("signature")),
            "{failed:?}"
        );
        // Right content, wrong claimed leaf hash: fails.
        assert!(verify_entry(good.clone(), &[0u8; 32], 4, key.public_key()).is_err());
        // Another key: fails.
        let other = SigningKey::generate()?;
        assert!(verify_entry(good, &leaf, 5, other.public_key()).is_err());
        Ok(())
    }

    #[test]
    fn a_page_checked_in_one_batch_remembers_only_good_signatures()
    -> Result<(), Box<dyn std::error::Error>> {
        let key = SigningKey::generate()?;
        let mut page: Vec<pb::Entry> = (0..8)
            .map(|i| entry(&key, &format!("page entry {i}")))
            .collect();
        if let Some(s) = page[5].message.as_mut().and_then(|m| m.signature.as_mut()) {
            s.signature[0] ^= 1;
        }
        let again = page.clone();
        let claimed = page
            .into_iter()
            .enumerate()
            .map(|(i, entry)| Claimed {
                leaf_hash: tongbao_proto::canonical::leaf_hash(&entry).to_vec(),
                entry: Arc::new(entry),
                cursor: i as u64 + 1,
                key: key.public_key().into(),
                encoded: None,
                verified_before: false,
            })
            .collect();
        let (verified, failed) = verify_entries(claimed);
        // The entries before the bad one, then its own reason.
        assert_eq!(
            verified.iter().map(|v| v.cursor).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert!(
            matches!(&failed, Some(ClientError::Integrity { reason, .. }) if reason.contains("signature")),
            "{failed:?}"
        );
        // Those that verified in the batch were remembered; the bad one was not.
        for (i, e) in again.into_iter().enumerate() {
            let leaf = tongbao_proto::canonical::leaf_hash(&e);
            let digest = message_digest(e.content().ok_or("no message")?);
            let signature = e
                .message
                .as_ref()
                .and_then(|m| m.signature.as_ref())
                .ok_or("no signature")?;
            let cache_key = VerifiedSignatures::key(&digest, signature, key.public_key());
            assert_eq!(
                VerifiedSignatures::seen_all([Some(cache_key)]),
                [i != 5],
                "entry {i}"
            );
            let verdict = verify_entry(e, &leaf, i as u64, key.public_key());
            assert_eq!(verdict.is_err(), i == 5, "entry {i}: {verdict:?}");
        }
        Ok(())
    }
}
