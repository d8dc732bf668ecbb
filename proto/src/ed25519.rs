//! The one Ed25519 verification rule of every party: hub, client and
//! offline verifier check every signature (messages, receipts, signed
//! notes, cosignatures, key-rotation proofs, workflow evidence) here.
//!
//! # Why ZIP 215
//!
//! Checking signatures in batches (a random linear combination of many
//! verification equations) costs about half as much per signature as one
//! check at a time. But the usual single check (ring's, RFC 8032's
//! cofactorless `[s]B = R + [k]A`) and a batch check can disagree on
//! crafted signatures whose `R` or `A` carries a small-order (torsion)
//! component: a hub verifying in batches and a client verifying one by one
//! would then disagree about whether an entry is signed. ZIP 215 fixes one
//! rule for which single and batch verification agree by construction: the
//! cofactored equation `[8][s]B = [8]R + [8][k]A`, with `A` and `R` any
//! point encodings and `s` canonical (`s < ℓ`). `ed25519-zebra`
//! implements exactly that rule; everyone uses it, so no two parties can
//! disagree.
//!
//! # What it accepts that ring did not
//!
//! Signatures whose `R` or `A` is a non-canonical point encoding, or whose
//! `R` or `A` has a small-order component. Only the holder of the private
//! key can make such a signature for its own key (the cofactor multiplies
//! the torsion away; the prime-order part is still a valid Schnorr
//! signature), so this admits no forgery. A public key *of* small order is
//! different: under it anyone can "sign" anything. [`check_public_key`]
//! refuses such keys where keys are registered.
//!
//! Signing stays on ring: Ed25519 signing is deterministic, so every
//! library makes the same signature bytes.

use ed25519_zebra::{Signature, VerificationKey, VerificationKeyBytes, batch};

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Why a signature (or public key) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("an Ed25519 public key is {PUBLIC_KEY_LEN} bytes, got {0}")]
    PublicKeyLength(usize),
    #[error("an Ed25519 signature is {SIGNATURE_LEN} bytes, got {0}")]
    SignatureLength(usize),
    #[error("the public key is not an Ed25519 curve point")]
    NotAPoint,
    #[error("the public key has small order: anyone could sign under it")]
    SmallOrder,
    #[error("the signature does not verify")]
    BadSignature,
}

/// One signature to check: (public key, signed bytes, signature).
pub type Item<'a> = (&'a [u8], &'a [u8], &'a [u8]);

fn sizes(public_key: &[u8], sig: &[u8]) -> Result<([u8; 32], Signature), VerifyError> {
    let key = <[u8; PUBLIC_KEY_LEN]>::try_from(public_key)
        .map_err(|_| VerifyError::PublicKeyLength(public_key.len()))?;
    let sig = <[u8; SIGNATURE_LEN]>::try_from(sig)
        .map_err(|_| VerifyError::SignatureLength(sig.len()))?;
    Ok((key, Signature::from_bytes(&sig)))
}

/// Checks one signature under the ZIP 215 rule.
pub fn verify(public_key: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
    let (key, sig) = sizes(public_key, sig)?;
    let key = VerificationKey::try_from(key).map_err(|_| VerifyError::BadSignature)?;
    key.verify(&sig, msg).map_err(|_| VerifyError::BadSignature)
}

/// Checks many signatures at once; the result for each item is what
/// [`verify`] would say about it. One batch check first; only if it fails
/// is each item checked alone, so a bad item never fails a good neighbour.
pub fn verify_batch(items: &[Item<'_>]) -> Vec<Result<(), VerifyError>> {
    if items.len() < 2 {
        return items.iter().map(|(k, m, s)| verify(k, m, s)).collect();
    }
    let mut out = Vec::with_capacity(items.len());
    let mut verifier = batch::Verifier::new();
    let mut queued = 0usize;
    for (key, msg, sig) in items {
        match sizes(key, sig) {
            Ok((key, sig)) => {
                verifier.queue((VerificationKeyBytes::from(key), sig, *msg));
                queued += 1;
                out.push(Ok(()));
            }
            Err(e) => out.push(Err(e)),
        }
    }
    if queued == 0 || verifier.verify(rand_core::OsRng).is_ok() {
        return out;
    }
    for (result, (key, msg, sig)) in out.iter_mut().zip(items) {
        if result.is_ok() {
            *result = verify(key, msg, sig);
        }
    }
    out
}

/// Checks that a public key is usable: 32 bytes encoding a curve point that
/// is not of small order (under a small-order key anyone can sign).
pub fn check_public_key(public_key: &[u8]) -> Result<(), VerifyError> {
    let key = <[u8; PUBLIC_KEY_LEN]>::try_from(public_key)
        .map_err(|_| VerifyError::PublicKeyLength(public_key.len()))?;
    let point = curve25519_dalek::edwards::CompressedEdwardsY(key)
        .decompress()
        .ok_or(VerifyError::NotAPoint)?;
    if point.is_small_order() {
        return Err(VerifyError::SmallOrder);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Single and batch verification agree on every item, alone and mixed
    /// with good neighbours.
    fn agree(items: &[Item<'_>]) -> Vec<Result<(), VerifyError>> {
        let single: Vec<_> = items.iter().map(|(k, m, s)| verify(k, m, s)).collect();
        assert_eq!(single, verify_batch(items));
        single
    }

    type Signed = (SigningKey, Vec<Vec<u8>>, Vec<Vec<u8>>);

    fn signed(n: usize) -> Result<Signed, Box<dyn std::error::Error>> {
        let key = SigningKey::generate()?;
        let msgs: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("message {i}").into_bytes())
            .collect();
        let sigs = msgs.iter().map(|m| key.sign_raw(m)).collect();
        Ok((key, msgs, sigs))
    }

    /// Every message with its signature, under one key.
    fn items_of<'a>(
        key: &'a SigningKey,
        msgs: &'a [Vec<u8>],
        sigs: &'a [Vec<u8>],
    ) -> Vec<Item<'a>> {
        msgs.iter()
            .zip(sigs)
            .map(|(m, s)| (key.public_key(), m.as_slice(), s.as_slice()))
            .collect()
    }

    #[test]
    fn ring_signatures_verify_alone_and_in_batches() -> TestResult {
        let (key, msgs, sigs) = signed(64)?;
        let items = items_of(&key, &msgs, &sigs);
        assert!(agree(&items).iter().all(Result::is_ok));
        assert!(verify_batch(&[]).is_empty());
        verify(key.public_key(), &msgs[0], &sigs[0])?;
        Ok(())
    }

    #[test]
    fn one_forged_among_64_fails_only_itself() -> TestResult {
        let (key, msgs, mut sigs) = signed(64)?;
        if let Some(b) = sigs.get_mut(37).and_then(|s| s.get_mut(40)) {
            *b ^= 1;
        }
        let items = items_of(&key, &msgs, &sigs);
        let results = agree(&items);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_err(), i == 37, "item {i}: {r:?}");
        }
        Ok(())
    }

    #[test]
    fn wrong_key_truncated_signature_and_bad_key_length_fail() -> TestResult {
        let (key, msgs, sigs) = signed(4)?;
        let other = SigningKey::generate()?;
        let short_key = &key.public_key()[..31];
        let truncated = &sigs[2][..63];
        let items: Vec<Item<'_>> = vec![
            (key.public_key(), &msgs[0], &sigs[0]),
            (other.public_key(), &msgs[1], &sigs[1]),
            (key.public_key(), &msgs[2], truncated),
            (short_key, &msgs[3], &sigs[3]),
            (key.public_key(), &msgs[1], &sigs[1]),
        ];
        let results = agree(&items);
        assert_eq!(
            results,
            vec![
                Ok(()),
                Err(VerifyError::BadSignature),
                Err(VerifyError::SignatureLength(63)),
                Err(VerifyError::PublicKeyLength(31)),
                Ok(()),
            ]
        );
        // Each bad case alone, and a batch of only bad items.
        for item in &items[1..4] {
            agree(std::slice::from_ref(item));
        }
        agree(&items[1..4]);
        Ok(())
    }

    #[test]
    fn changed_message_or_non_canonical_s_fails() -> TestResult {
        let (key, msgs, sigs) = signed(2)?;
        // s + ℓ: same s mod ℓ, but not canonical, so refused.
        let mut big_s = sigs[1].clone();
        big_s[63] |= 0xf0;
        let items: Vec<Item<'_>> = vec![
            (key.public_key(), b"other", &sigs[0]),
            (key.public_key(), &msgs[1], &big_s),
            (key.public_key(), &msgs[0], &sigs[0]),
        ];
        let results = agree(&items);
        assert!(results[0].is_err() && results[1].is_err() && results[2].is_ok());
        Ok(())
    }

    #[test]
    fn small_order_and_off_curve_keys_are_refused() -> TestResult {
        let key = SigningKey::generate()?;
        check_public_key(key.public_key())?;
        // The identity point (0, 1) has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(check_public_key(&identity), Err(VerifyError::SmallOrder));
        // y = 2 is not on the curve.
        let mut off = [0u8; 32];
        off[0] = 2;
        assert_eq!(check_public_key(&off), Err(VerifyError::NotAPoint));
        assert_eq!(
            check_public_key(&[0u8; 31]),
            Err(VerifyError::PublicKeyLength(31))
        );
        Ok(())
    }

    /// Per-signature cost, single vs batches of 64:
    /// `cargo test --release -p tongbao-proto ed25519_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn ed25519_speed() -> TestResult {
        let (key, msgs, sigs) = signed(64)?;
        let items = items_of(&key, &msgs, &sigs);
        let rounds = 200;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            for (k, m, s) in &items {
                verify(k, m, s)?;
            }
        }
        let single = start.elapsed().as_secs_f64() * 1e6 / (rounds * 64) as f64;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            if verify_batch(&items).iter().any(Result::is_err) {
                return Err("batch refused good signatures".into());
            }
        }
        let batched = start.elapsed().as_secs_f64() * 1e6 / (rounds * 64) as f64;
        // 64 different keys: no shared A term, the hub's worst case.
        let keys = (0..64)
            .map(|_| SigningKey::generate())
            .collect::<Result<Vec<_>, _>>()?;
        let sigs64: Vec<Vec<u8>> = keys.iter().zip(&msgs).map(|(k, m)| k.sign_raw(m)).collect();
        let mixed: Vec<Item<'_>> = keys
            .iter()
            .zip(&msgs)
            .zip(&sigs64)
            .map(|((k, m), s)| (k.public_key(), m.as_slice(), s.as_slice()))
            .collect();
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            if verify_batch(&mixed).iter().any(Result::is_err) {
                return Err("batch refused good signatures".into());
            }
        }
        let batched_mixed = start.elapsed().as_secs_f64() * 1e6 / (rounds * 64) as f64;
        // The previous rule (ring, cofactorless), as a baseline only.
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            for (k, m, s) in &items {
                ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, k)
                    .verify(m, s)
                    .map_err(|_| "ring refused a good signature")?;
            }
        }
        let ring_single = start.elapsed().as_secs_f64() * 1e6 / (rounds * 64) as f64;
        println!(
            "{{\"us_per_signature_single\": {single:.1}, \"us_per_signature_batch_64_one_key\": {batched:.1}, \"us_per_signature_batch_64_distinct_keys\": {batched_mixed:.1}, \"us_per_signature_ring_single\": {ring_single:.1}}}"
        );
        Ok(())
    }
}
