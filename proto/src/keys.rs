//! Ed25519 signing keys, the key-id rule and signature checks.
//!
//! A unit's signing key is separate from its TLS key (as X-Road separates
//! authentication and signing): certificates rotate with staff and expiry,
//! while signatures must stay verifiable for years.

use crate::Hash;
use crate::canonical::{message_digest, sha256, signing_bytes_for_digest};
use crate::echo::shown;
use crate::pb::{Message, Signature, SignedMessage};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// The only signature algorithm of protocol v1.
pub const ED25519_ALGORITHM: &str = "ed25519";
/// Length of an Ed25519 public key.
pub const ED25519_PUBLIC_KEY_LEN: usize = 32;

const KEY_ID_DOMAIN: &[u8] = b"tongbao/v1/key-id\n";
const PEM_LABEL: &str = "PRIVATE KEY";

/// Why a key could not be loaded or a signature did not verify.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a PEM \"{PEM_LABEL}\" block holding a PKCS#8 Ed25519 key")]
    BadPem,
    #[error("the PKCS#8 data is not a valid Ed25519 key: {0}")]
    BadKey(String),
    #[error(
        "signature algorithm {:?} is not supported (only \"{ED25519_ALGORITHM}\")",
        shown(.0)
    )]
    UnsupportedAlgorithm(String),
    #[error("the message carries no signature")]
    MissingSignature,
    #[error("the signed message carries no content")]
    MissingMessage,
    #[error(
        "signature names key {} but the registered key has id {actual}",
        shown(.claimed)
    )]
    KeyIdMismatch { claimed: String, actual: String },
    #[error("key registry statement malformed: {0}")]
    BadRegistry(String),
    #[error("an Ed25519 public key is 32 bytes, got {0}")]
    BadPublicKeyLength(usize),
    #[error("unusable Ed25519 public key: {0}")]
    UnusablePublicKey(crate::ed25519::VerifyError),
    #[error(
        "the signature does not verify under key {key_id}: the content was changed or signed by another key"
    )]
    BadSignature { key_id: String },
    #[error(transparent)]
    Validity(#[from] ValidityError),
}

/// Why a registered key may not sign at a given time. The hub, the client
/// and the offline verifier all refuse with this, so they cannot disagree
/// about a key's interval.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ValidityError {
    #[error("signing key {key_id} of unit {unit} is valid only from {from_micros} (unix micros)")]
    NotYetValid {
        unit: String,
        key_id: String,
        from_micros: i64,
    },
    #[error("signing key {key_id} of unit {unit} was retired at {until_micros} (unix micros)")]
    Retired {
        unit: String,
        key_id: String,
        until_micros: i64,
    },
}

impl ValidityError {
    /// The structured name of the refusal, as the hub sends it in the
    /// [`REFUSAL_METADATA`] of a refused call.
    pub fn refusal(&self) -> &'static str {
        match self {
            Self::NotYetValid { .. } => REFUSAL_KEY_NOT_YET_VALID,
            Self::Retired { .. } => REFUSAL_KEY_RETIRED,
        }
    }

    /// The interval boundary the signature fell outside of.
    pub fn boundary_micros(&self) -> i64 {
        match self {
            Self::NotYetValid { from_micros, .. } => *from_micros,
            Self::Retired { until_micros, .. } => *until_micros,
        }
    }

    pub fn key_id(&self) -> &str {
        match self {
            Self::NotYetValid { key_id, .. } | Self::Retired { key_id, .. } => key_id,
        }
    }
}

/// gRPC metadata key naming why the hub refused a call in words a program
/// can match (the status message is for people and may change).
pub const REFUSAL_METADATA: &str = "tongbao-refusal";
/// gRPC metadata key: the signing key id a refusal is about.
pub const REFUSAL_KEY_ID_METADATA: &str = "tongbao-key-id";
/// gRPC metadata key: the interval boundary (unix micros) of a key refusal.
pub const REFUSAL_BOUNDARY_METADATA: &str = "tongbao-key-boundary-micros";
/// [`REFUSAL_METADATA`] value: the signing key was retired before the
/// message was signed (or before the hub received it).
pub const REFUSAL_KEY_RETIRED: &str = "signing-key-retired";
/// [`REFUSAL_METADATA`] value: the signing key was not valid yet.
pub const REFUSAL_KEY_NOT_YET_VALID: &str = "signing-key-not-yet-valid";

/// The interval in which a registered key may sign: from inclusive, until
/// exclusive; `until` None while the key is current. The one rule for
/// "may this key sign at this time" shared by every party.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyValidity {
    pub from_micros: i64,
    pub until_micros: Option<i64>,
}

impl KeyValidity {
    /// From the wire form, where an `until` of 0 means "still current".
    pub fn from_wire(from_micros: i64, until_micros: i64) -> Self {
        Self {
            from_micros,
            until_micros: (until_micros != 0).then_some(until_micros),
        }
    }

    pub fn contains(&self, at_micros: i64) -> bool {
        at_micros >= self.from_micros && self.until_micros.is_none_or(|until| at_micros < until)
    }

    /// Checks that key `key_id` of `unit` may sign at `at_micros`.
    pub fn check(&self, unit: &str, key_id: &str, at_micros: i64) -> Result<(), ValidityError> {
        if at_micros < self.from_micros {
            return Err(ValidityError::NotYetValid {
                unit: unit.to_string(),
                key_id: key_id.to_string(),
                from_micros: self.from_micros,
            });
        }
        match self.until_micros {
            Some(until) if at_micros >= until => Err(ValidityError::Retired {
                unit: unit.to_string(),
                key_id: key_id.to_string(),
                until_micros: until,
            }),
            _ => Ok(()),
        }
    }

    /// Checks a signed message's creation time (what it claims as its
    /// signing time) against the interval: verifiers of appended entries
    /// use this; the hub also checks its own clock at push time.
    pub fn check_message(
        &self,
        unit: &str,
        key_id: &str,
        message: &Message,
    ) -> Result<(), ValidityError> {
        self.check(unit, key_id, message.created_micros)
    }
}

/// The key id of a public key: a short hash, so a signature can name the
/// key it was made with and a registry can hold several keys per unit.
pub fn key_id(algorithm: &str, public_key: &[u8]) -> String {
    let mut input =
        Vec::with_capacity(KEY_ID_DOMAIN.len() + algorithm.len() + 1 + public_key.len());
    input.extend_from_slice(KEY_ID_DOMAIN);
    input.extend_from_slice(algorithm.as_bytes());
    input.push(0);
    input.extend_from_slice(public_key);
    hex::encode(&sha256(&input)[..8])
}

/// A unit's (or the hub's) private signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
    key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|e| KeyError::BadKey(e.to_string()))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// From PKCS#8 v2 DER (as ring and OpenSSL 3 write it).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| KeyError::BadKey(e.to_string()))?;
        let key_id = key_id(ED25519_ALGORITHM, pair.public_key().as_ref());
        Ok(Self {
            pair,
            pkcs8: der.to_vec(),
            key_id,
        })
    }

    /// From a PEM "PRIVATE KEY" block.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let begin = format!("-----BEGIN {PEM_LABEL}-----");
        let end = format!("-----END {PEM_LABEL}-----");
        let start = pem.find(&begin).ok_or(KeyError::BadPem)? + begin.len();
        let stop = pem[start..].find(&end).ok_or(KeyError::BadPem)? + start;
        let b64: String = pem[start..stop].split_whitespace().collect();
        let der = STANDARD.decode(b64).map_err(|_| KeyError::BadPem)?;
        Self::from_pkcs8(&der)
    }

    /// PEM "PRIVATE KEY" block, for key files.
    pub fn to_pem(&self) -> String {
        let b64 = STANDARD.encode(&self.pkcs8);
        let mut out = format!("-----BEGIN {PEM_LABEL}-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str(&format!("-----END {PEM_LABEL}-----\n"));
        out
    }

    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs a message: canonical digest, then Ed25519 over the signing bytes.
    pub fn sign_message(&self, message: Message) -> SignedMessage {
        let digest = message_digest(&message);
        let signature = self.sign_digest(&digest);
        SignedMessage {
            message: Some(message),
            signature: Some(signature),
        }
    }

    /// Signs an already computed message digest.
    pub fn sign_digest(&self, digest: &Hash) -> Signature {
        let sig = self.pair.sign(&signing_bytes_for_digest(digest));
        Signature {
            algorithm: ED25519_ALGORITHM.to_string(),
            key_id: self.key_id.clone(),
            signature: sig.as_ref().to_vec(),
        }
    }

    /// Raw Ed25519 signature over arbitrary bytes (checkpoints, receipts).
    pub fn sign_raw(&self, bytes: &[u8]) -> Vec<u8> {
        self.pair.sign(bytes).as_ref().to_vec()
    }
}

/// Checks a signature over a message digest under a given public key.
/// The caller chooses the key (from the registry); the signature's key id
/// must name exactly that key.
pub fn verify_digest(
    digest: &Hash,
    signature: &Signature,
    public_key: &[u8],
) -> Result<(), KeyError> {
    let actual = check_signature_names_key(signature, public_key)?;
    crate::ed25519::verify(
        public_key,
        &signing_bytes_for_digest(digest),
        &signature.signature,
    )
    .map_err(|_| KeyError::BadSignature { key_id: actual })
}

/// [`verify_digest`] for many signatures at once, with one batch check of
/// the Ed25519 part; each result is what `verify_digest` says of its item.
pub fn verify_digests(items: &[(&Hash, &Signature, &[u8])]) -> Vec<Result<(), KeyError>> {
    let mut out: Vec<Result<(), KeyError>> = Vec::with_capacity(items.len());
    let mut ids = Vec::with_capacity(items.len());
    let mut bytes = Vec::with_capacity(items.len());
    for (digest, signature, public_key) in items {
        match check_signature_names_key(signature, public_key) {
            Ok(id) => {
                ids.push(id);
                bytes.push(signing_bytes_for_digest(digest));
                out.push(Ok(()));
            }
            Err(e) => out.push(Err(e)),
        }
    }
    let batch: Vec<crate::ed25519::Item<'_>> = items
        .iter()
        .zip(&out)
        .filter(|(_, r)| r.is_ok())
        .zip(&bytes)
        .map(|(((_, signature, public_key), _), b)| {
            (*public_key, b.as_slice(), signature.signature.as_slice())
        })
        .collect();
    let mut verdicts = crate::ed25519::verify_batch(&batch).into_iter().zip(ids);
    for result in out.iter_mut().filter(|r| r.is_ok()) {
        if let Some((Err(_), key_id)) = verdicts.next() {
            *result = Err(KeyError::BadSignature { key_id });
        }
    }
    out
}

/// The algorithm and key-id checks of [`verify_digest`]: returns the key
/// id of `public_key`, which the signature must name.
fn check_signature_names_key(signature: &Signature, public_key: &[u8]) -> Result<String, KeyError> {
    if signature.algorithm != ED25519_ALGORITHM {
        return Err(KeyError::UnsupportedAlgorithm(signature.algorithm.clone()));
    }
    if public_key.len() != ED25519_PUBLIC_KEY_LEN {
        return Err(KeyError::BadPublicKeyLength(public_key.len()));
    }
    let actual = key_id(ED25519_ALGORITHM, public_key);
    if signature.key_id != actual {
        return Err(KeyError::KeyIdMismatch {
            claimed: signature.key_id.clone(),
            actual,
        });
    }
    Ok(actual)
}

/// Checks a signed message under a given public key; returns the message
/// digest so callers need not hash the content twice.
pub fn verify_signed_message(signed: &SignedMessage, public_key: &[u8]) -> Result<Hash, KeyError> {
    let message = signed.message.as_ref().ok_or(KeyError::MissingMessage)?;
    let signature = signed
        .signature
        .as_ref()
        .ok_or(KeyError::MissingSignature)?;
    let digest = message_digest(message);
    verify_digest(&digest, signature, public_key)?;
    Ok(digest)
}

/// First line of the hub's signed key-registry statement.
pub const KEY_REGISTRY_HEADER: &str = "tongbao key registry";

/// The text of the hub's key-registry statement: one line per key,
/// "<unit> <algorithm> <key id> <base64 key> <valid from> <valid until>".
pub fn key_registry_text(units: &[crate::pb::Unit]) -> String {
    let mut text = format!("{KEY_REGISTRY_HEADER}\n");
    for u in units {
        for k in &u.keys {
            text.push_str(&format!(
                "{} {} {} {} {} {}\n",
                u.id,
                k.algorithm,
                k.key_id,
                STANDARD.encode(&k.public_key),
                k.valid_from_micros,
                k.valid_until_micros
            ));
        }
    }
    text
}

/// A signing key as the key-registry statement lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredKey {
    pub unit: String,
    pub algorithm: String,
    pub key_id: String,
    pub public_key: Vec<u8>,
    pub valid_from_micros: i64,
    pub valid_until_micros: i64,
}

impl RegisteredKey {
    pub fn validity(&self) -> KeyValidity {
        KeyValidity::from_wire(self.valid_from_micros, self.valid_until_micros)
    }

    /// True when the key may sign at this time.
    pub fn valid_at(&self, micros: i64) -> bool {
        self.validity().contains(micros)
    }
}

/// Parses the text of a key-registry statement (after its signature was
/// checked); every key id must match its public key.
pub fn parse_key_registry(text: &str) -> Result<Vec<RegisteredKey>, KeyError> {
    let mut lines = text.lines();
    if lines.next() != Some(KEY_REGISTRY_HEADER) {
        return Err(KeyError::BadRegistry("missing header".into()));
    }
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let [unit, algorithm, claimed_id, pk, from, until] = f.as_slice() else {
                return Err(KeyError::BadRegistry(format!("line {line:?}")));
            };
            let public_key = STANDARD
                .decode(pk)
                .map_err(|_| KeyError::BadRegistry(format!("key of {unit}")))?;
            if key_id(algorithm, &public_key) != *claimed_id {
                return Err(KeyError::BadRegistry(format!(
                    "key id {claimed_id} of {unit} does not match its key"
                )));
            }
            // A small-order key would let anyone sign as the unit.
            if *algorithm == ED25519_ALGORITHM {
                crate::ed25519::check_public_key(&public_key).map_err(|e| {
                    KeyError::BadRegistry(format!("key {claimed_id} of {unit}: {e}"))
                })?;
            }
            Ok(RegisteredKey {
                unit: unit.to_string(),
                algorithm: algorithm.to_string(),
                key_id: claimed_id.to_string(),
                public_key,
                valid_from_micros: from
                    .parse()
                    .map_err(|_| KeyError::BadRegistry(line.into()))?,
                valid_until_micros: until
                    .parse()
                    .map_err(|_| KeyError::BadRegistry(line.into()))?,
            })
        })
        .collect()
}

/// Base64 of a public key, as config files carry it.
pub fn encode_public_key(public_key: &[u8]) -> String {
    STANDARD.encode(public_key)
}

/// Parses a base64 public key from a config file.
pub fn decode_public_key(b64: &str) -> Result<Vec<u8>, KeyError> {
    let pk = STANDARD
        .decode(b64.trim())
        .map_err(|_| KeyError::BadPublicKeyLength(0))?;
    if pk.len() != ED25519_PUBLIC_KEY_LEN {
        return Err(KeyError::BadPublicKeyLength(pk.len()));
    }
    crate::ed25519::check_public_key(&pk).map_err(KeyError::UnusablePublicKey)?;
    Ok(pk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Message {
        Message {
            message_id: "x".into(),
            sender: "tax".into(),
            kind: 1,
            body: b"hello".to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn sign_and_verify_round_trip_through_pem() -> Result<(), KeyError> {
        let key = SigningKey::generate()?;
        let again = SigningKey::from_pem(&key.to_pem())?;
        assert_eq!(key.key_id(), again.key_id());
        let signed = again.sign_message(msg());
        verify_signed_message(&signed, key.public_key())?;
        Ok(())
    }

    #[test]
    fn changed_body_or_other_key_is_refused() -> Result<(), KeyError> {
        let key = SigningKey::generate()?;
        let other = SigningKey::generate()?;
        let mut signed = key.sign_message(msg());
        assert!(matches!(
            verify_signed_message(&signed, other.public_key()),
            Err(KeyError::KeyIdMismatch { .. })
        ));
        if let Some(m) = signed.message.as_mut() {
            m.body = [&m.body[..], b"!"].concat().into();
        }
        assert!(matches!(
            verify_signed_message(&signed, key.public_key()),
            Err(KeyError::BadSignature { .. })
        ));
        Ok(())
    }

    #[test]
    fn forged_key_id_does_not_help() -> Result<(), KeyError> {
        let key = SigningKey::generate()?;
        let other = SigningKey::generate()?;
        let mut signed = other.sign_message(msg());
        if let Some(sig) = signed.signature.as_mut() {
            sig.key_id = key.key_id().to_string();
        }
        assert!(matches!(
            verify_signed_message(&signed, key.public_key()),
            Err(KeyError::BadSignature { .. })
        ));
        Ok(())
    }

    #[test]
    fn batch_form_agrees_with_verify_digest() -> Result<(), KeyError> {
        let key = SigningKey::generate()?;
        let other = SigningKey::generate()?;
        let digests: Vec<Hash> = (0..8u8).map(|i| sha256(&[i])).collect();
        let mut sigs: Vec<Signature> = digests.iter().map(|d| key.sign_digest(d)).collect();
        sigs[1].algorithm = "sm2".into();
        sigs[2] = other.sign_digest(&digests[2]); // names another key
        sigs[3].signature[5] ^= 1; // forged
        sigs[4].signature.truncate(10);
        let mut items: Vec<(&Hash, &Signature, &[u8])> = digests
            .iter()
            .zip(&sigs)
            .map(|(d, s)| (d, s, key.public_key()))
            .collect();
        items[5].2 = &key.public_key()[..31];
        let single: Vec<_> = items
            .iter()
            .map(|(d, s, k)| verify_digest(d, s, k))
            .collect();
        assert_eq!(single, verify_digests(&items));
        let failed: Vec<usize> = (0..8).filter(|&i| single[i].is_err()).collect();
        assert_eq!(failed, vec![1, 2, 3, 4, 5]);
        assert!(matches!(single[3], Err(KeyError::BadSignature { .. })));
        assert!(verify_digests(&[]).is_empty());
        Ok(())
    }

    #[test]
    fn small_order_keys_are_refused_when_decoded() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            decode_public_key(&encode_public_key(&identity)),
            Err(KeyError::UnusablePublicKey(_))
        ));
    }

    /// A key registry listing a small-order key is refused whole, even with
    /// a matching key id: anyone could sign under such a key.
    #[test]
    fn a_registry_with_a_small_order_key_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let good = SigningKey::generate()?;
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let unit = |key: &[u8]| crate::pb::Unit {
            id: "tax".into(),
            keys: vec![crate::pb::SigningKey {
                algorithm: ED25519_ALGORITHM.into(),
                key_id: key_id(ED25519_ALGORITHM, key),
                public_key: key.to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            parse_key_registry(&key_registry_text(&[unit(good.public_key())]))?.len(),
            1
        );
        match parse_key_registry(&key_registry_text(&[unit(&identity)])) {
            Err(KeyError::BadRegistry(m)) => assert!(m.contains("small order"), "{m}"),
            other => return Err(format!("expected a refusal, got {other:?}").into()),
        }
        Ok(())
    }

    #[test]
    fn validity_is_from_inclusive_until_exclusive() {
        let v = KeyValidity::from_wire(10, 20);
        assert!(!v.contains(9) && v.contains(10) && v.contains(19) && !v.contains(20));
        assert!(matches!(
            v.check("tax", "k", 9),
            Err(ValidityError::NotYetValid {
                from_micros: 10,
                ..
            })
        ));
        assert!(matches!(
            v.check("tax", "k", 20),
            Err(ValidityError::Retired {
                until_micros: 20,
                ..
            })
        ));
        let open = KeyValidity::from_wire(10, 0);
        assert!(open.contains(i64::MAX) && !open.contains(9));
    }

    #[test]
    fn key_id_is_stable_and_short() {
        let id = key_id(ED25519_ALGORITHM, &[7u8; 32]);
        assert_eq!(id.len(), 16);
        assert_eq!(id, key_id(ED25519_ALGORITHM, &[7u8; 32]));
        assert_ne!(id, key_id(ED25519_ALGORITHM, &[8u8; 32]));
    }
}
