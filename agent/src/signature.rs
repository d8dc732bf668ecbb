//! The webhook signature: how a receiver knows a delivery came from its
//! own agent and was not replayed.
//!
//! `Tongbao-Signature: v1=HEX` where HEX is the lowercase hex of
//! HMAC-SHA256(key, TIMESTAMP ‖ "." ‖ BODY), TIMESTAMP being the
//! `Tongbao-Timestamp` header's digits as sent (unix seconds, plain
//! decimal) and BODY the exact request body bytes. The key is the text of the webhook secret file, trimmed.
//! A receiver recomputes it, compares in constant time, and refuses a
//! timestamp more than [`MAX_SKEW_SECS`] from its own clock.

use ring::hmac;

/// Header carrying the signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "Tongbao-Timestamp";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Tongbao-Signature";
/// Header naming the delivered entry, `CHANNEL:SEQ`, for logs: it is not
/// signed, so receivers deduplicate on the signed body instead.
pub const DELIVERY_HEADER: &str = "Tongbao-Delivery";
/// How far a receiver should let a timestamp be from its clock.
pub const MAX_SKEW_SECS: i64 = 300;

const VERSION: &str = "v1=";

/// The signed bytes: the timestamp's text as sent, ".", the body.
fn input(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut m = timestamp.as_bytes().to_vec();
    m.push(b'.');
    m.extend_from_slice(body);
    m
}

/// The `Tongbao-Signature` value for a body sent at `timestamp`.
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, &input(&timestamp.to_string(), body));
    format!("{VERSION}{}", hex::encode(tag.as_ref()))
}

/// Why a receiver refuses a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the timestamp header is not a number of seconds (plain decimal digits)")]
    BadTimestamp,
    #[error("the timestamp is more than {MAX_SKEW_SECS} s from now (a replay, or a wrong clock)")]
    Stale,
    #[error("the signature header is not v1=HEX")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// The receiver's check, as docs/agent.md describes it: the signature of
/// `body` under `key` at `timestamp`, which must be near `now_secs`.
pub fn verify(
    key: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.trim();
    // Plain digits only: the text signed is the text sent.
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::BadTimestamp);
    }
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if now_secs.abs_diff(ts) > MAX_SKEW_SECS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let tag = signature
        .trim()
        .strip_prefix(VERSION)
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Malformed)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::verify(&key, &input(timestamp, body), &tag).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_hmac_sha256_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = b"Jefe";
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, key),
            b"what do ya want for nothing?",
        );
        assert_eq!(
            hex::encode(tag.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The input is TIMESTAMP "." BODY.
        let ours = sign(key, 12, b"body");
        let theirs = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), b"12.body");
        assert_eq!(ours, format!("v1={}", hex::encode(theirs.as_ref())));
    }

    #[test]
    fn a_changed_body_time_or_key_or_an_old_delivery_is_refused() {
        let sig = sign(b"secret", 1000, b"{\"a\":1}");
        assert_eq!(verify(b"secret", "1000", &sig, b"{\"a\":1}", 1000), Ok(()));
        assert_eq!(
            verify(b"secret", "1000", &sig, b"{\"a\":2}", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", "1001", &sig, b"{\"a\":1}", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", "1000", &sig, b"{\"a\":1}", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                b"secret",
                "1000",
                &sig,
                b"{\"a\":1}",
                1000 + MAX_SKEW_SECS + 1
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"secret", "x", &sig, b"", 1000),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(b"secret", "1000", "sha256=00", b"", 1000),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn extreme_or_unsigned_text_timestamps_are_refused_without_overflow() {
        let sig = sign(b"secret", 1000, b"x");
        for now in [i64::MIN, i64::MAX, 0, 1000] {
            for ts in [i64::MIN, i64::MAX] {
                // Refused (for its age, its sign or the signature), never
                // an overflow.
                let got = verify(b"secret", &ts.to_string(), &sig, b"x", now);
                assert!(got.is_err(), "ts {ts}, now {now}: {got:?}");
            }
        }
        // The largest timestamp, signed and checked at its own time.
        let sig = sign(b"secret", i64::MAX, b"x");
        assert_eq!(
            verify(b"secret", &i64::MAX.to_string(), &sig, b"x", i64::MAX),
            Ok(())
        );
        assert_eq!(
            verify(b"secret", &i64::MAX.to_string(), &sig, b"x", i64::MIN),
            Err(SignatureError::Stale)
        );
        // The digits signed are the digits sent: another spelling of the
        // same number is refused.
        let sig = sign(b"secret", 1000, b"x");
        for other in ["+1000", "01000", "1e3", ""] {
            assert!(
                verify(b"secret", other, &sig, b"x", 1000).is_err(),
                "{other:?}"
            );
        }
    }
}
