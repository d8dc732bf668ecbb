//! The body of a key-rotation entry: a unit announces its new signing key
//! in its own channel, signed with its current key. The new key also signs
//! the announcement (proof of possession), so a unit cannot claim a key it
//! does not hold. The hub, clients and auditors read it the same way.

use crate::keys::{ED25519_ALGORITHM, ED25519_PUBLIC_KEY_LEN, SigningKey, key_id};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Content type of a key-rotation body.
pub const CONTENT_TYPE: &str = "application/vnd.tongbao.key-rotation";
const HEADER: &str = "tongbao key rotation";
const PROOF_DOMAIN: &str = "tongbao/v1/key-rotation";

/// Why a key-rotation body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RotationError {
    #[error("the key-rotation body is malformed: {0}")]
    Malformed(String),
    #[error("the key-rotation body names unit {named:?}, but the message is from {sender:?}")]
    WrongUnit { named: String, sender: String },
    #[error("the new key's proof of possession does not verify: sign the body with the new key")]
    BadProof,
}

/// A new key announced by a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub unit: String,
    pub algorithm: String,
    pub public_key: Vec<u8>,
    pub key_id: String,
}

fn proof_bytes(unit: &str, message_id: &str, public_key_b64: &str) -> Vec<u8> {
    format!("{PROOF_DOMAIN}\n{unit}\n{message_id}\n{public_key_b64}\n").into_bytes()
}

/// The body announcing `new_key` for `unit` in message `message_id`.
pub fn body(unit: &str, message_id: &str, new_key: &SigningKey) -> Vec<u8> {
    let pk = STANDARD.encode(new_key.public_key());
    let proof = STANDARD.encode(new_key.sign_raw(&proof_bytes(unit, message_id, &pk)));
    format!("{HEADER}\nunit {unit}\nnew-key {ED25519_ALGORITHM} {pk}\nproof {proof}\n").into_bytes()
}

/// Reads and checks a key-rotation body of message `message_id` from
/// `sender` (the signature of the message itself is checked elsewhere).
pub fn parse(sender: &str, message_id: &str, body: &[u8]) -> Result<Announcement, RotationError> {
    let bad = |s: &str| RotationError::Malformed(s.to_string());
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(bad("missing header line"));
    }
    let unit = lines
        .next()
        .and_then(|l| l.strip_prefix("unit "))
        .ok_or_else(|| bad("missing unit line"))?;
    if unit != sender {
        return Err(RotationError::WrongUnit {
            named: unit.to_string(),
            sender: sender.to_string(),
        });
    }
    let key_line = lines
        .next()
        .and_then(|l| l.strip_prefix("new-key "))
        .ok_or_else(|| bad("missing new-key line"))?;
    let (algorithm, pk_b64) = key_line
        .split_once(' ')
        .ok_or_else(|| bad("new-key line needs an algorithm and a key"))?;
    if algorithm != ED25519_ALGORITHM {
        return Err(bad("only ed25519 keys can be announced"));
    }
    let public_key = STANDARD
        .decode(pk_b64)
        .map_err(|_| bad("new key is not base64"))?;
    if public_key.len() != ED25519_PUBLIC_KEY_LEN {
        return Err(bad("an Ed25519 public key is 32 bytes"));
    }
    let proof = lines
        .next()
        .and_then(|l| l.strip_prefix("proof "))
        .ok_or_else(|| bad("missing proof line"))?;
    let proof = STANDARD
        .decode(proof)
        .map_err(|_| bad("proof is not base64"))?;
    if lines.next().is_some() {
        return Err(bad("unexpected lines after the proof"));
    }
    if crate::ed25519::check_public_key(&public_key).is_err() {
        return Err(bad(
            "the new key is not a usable Ed25519 key (off the curve or of small order)",
        ));
    }
    crate::ed25519::verify(&public_key, &proof_bytes(unit, message_id, pk_b64), &proof)
        .map_err(|_| RotationError::BadProof)?;
    Ok(Announcement {
        unit: unit.to_string(),
        algorithm: algorithm.to_string(),
        key_id: key_id(algorithm, &public_key),
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trips_and_tampering_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let key = SigningKey::generate()?;
        let b = body("tax", "m1", &key);
        let a = parse("tax", "m1", &b)?;
        assert_eq!(a.key_id, key.key_id());
        assert_eq!(parse("tax", "m2", &b), Err(RotationError::BadProof));
        assert!(matches!(
            parse("finance", "m1", &b),
            Err(RotationError::WrongUnit { .. })
        ));
        assert!(matches!(
            parse("tax", "m1", b"hello"),
            Err(RotationError::Malformed(_))
        ));
        Ok(())
    }
}

/// Reading a rotation body from arbitrary or damaged bytes never panics,
/// and a damaged body never announces another key.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::canonical::proptests::damaged;
    use proptest::prelude::*;

    #[test]
    fn damaged_bodies_never_announce_another_key() -> Result<(), Box<dyn std::error::Error>> {
        let key = SigningKey::generate()?;
        let good = body("tax", "m1", &key);
        let announced = parse("tax", "m1", &good)?;
        proptest!(|(bytes in damaged(Just(good.clone())))| {
            if let Ok(a) = parse("tax", "m1", &bytes) {
                prop_assert_eq!(a, announced.clone());
            }
        });
        Ok(())
    }

    proptest! {
        #[test]
        fn bodies_round_trip(unit in "[^\r\n]*", message_id in any::<String>()) {
            let key = SigningKey::generate()?;
            let a = parse(&unit, &message_id, &body(&unit, &message_id, &key))?;
            prop_assert_eq!(a.public_key.as_slice(), key.public_key());
            prop_assert_eq!(a.key_id.as_str(), key.key_id());
            prop_assert_eq!(a.unit, unit);
        }
    }
}
