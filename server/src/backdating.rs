//! When an operator may date a signing key's validity into the past.
//!
//! A key registered from a past time makes messages dated back then
//! verifiable under it: whoever holds the key can speak for the unit in
//! the past. A key retired as of a past time makes the unit's signatures
//! since then (its messages, its receipts) stop verifying. Both are for
//! recovery after a loss or a compromise, so a past time is allowed only
//! when the request says so explicitly and gives a reason, and both go
//! into the admin trail with the change.

use tongbao_proto::format_micros;

/// Longest reason accepted: it is recorded whole in the admin trail.
pub const MAX_REASON_BYTES: usize = 512;

/// Why a registration's start time was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackdateError {
    #[error(
        "{field} {} is before the hub's time {}: dating a key's validity into the past needs backdate set and a backdate_reason (`--backdate-reason TEXT`), both recorded; for now, leave {field} 0",
        format_micros(*.at),
        format_micros(*.now)
    )]
    NotFlagged {
        field: &'static str,
        at: i64,
        now: i64,
    },
    #[error(
        "backdate is set but backdate_reason is empty; say why the key must be valid from the past"
    )]
    NoReason,
    #[error(
        "backdate_reason is {0} bytes; at most {MAX_REASON_BYTES} are recorded, say it shorter"
    )]
    ReasonTooLong(usize),
    #[error(
        "backdate is set but {field} {} is not before the hub's time {}; drop backdate and its reason",
        format_micros(*.at),
        format_micros(*.now)
    )]
    NotInThePast {
        field: &'static str,
        at: i64,
        now: i64,
    },
    #[error("backdate_reason is given without backdate; set backdate too, or drop the reason")]
    ReasonWithoutFlag,
}

/// Checks a key's new start or end `at` (already resolved: 0 means now),
/// given in the request's `field`, against the hub's time `now`. Returns
/// the reason to record when it is back-dated, `None` when it is not.
pub fn check<'r>(
    field: &'static str,
    at: i64,
    now: i64,
    backdate: bool,
    reason: &'r str,
) -> Result<Option<&'r str>, BackdateError> {
    let reason_given = !reason.trim().is_empty();
    match (at < now, backdate) {
        (true, false) => Err(BackdateError::NotFlagged { field, at, now }),
        (true, true) if !reason_given => Err(BackdateError::NoReason),
        (true, true) if reason.len() > MAX_REASON_BYTES => {
            Err(BackdateError::ReasonTooLong(reason.len()))
        }
        (true, true) => Ok(Some(reason.trim())),
        (false, true) => Err(BackdateError::NotInThePast { field, at, now }),
        (false, false) if reason_given => Err(BackdateError::ReasonWithoutFlag),
        (false, false) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000_000;
    const F: &str = "valid_from";

    fn check(
        at: i64,
        now: i64,
        backdate: bool,
        reason: &str,
    ) -> Result<Option<&str>, BackdateError> {
        super::check(F, at, now, backdate, reason)
    }

    #[test]
    fn a_past_start_needs_the_flag_and_a_reason() {
        let past = NOW - 1;
        assert_eq!(
            check(past, NOW, false, ""),
            Err(BackdateError::NotFlagged {
                field: F,
                at: past,
                now: NOW
            })
        );
        assert_eq!(
            check(past, NOW, false, "lost key"),
            Err(BackdateError::NotFlagged {
                field: F,
                at: past,
                now: NOW
            })
        );
        assert_eq!(check(past, NOW, true, "  "), Err(BackdateError::NoReason));
        let long = "x".repeat(MAX_REASON_BYTES + 1);
        assert_eq!(
            check(past, NOW, true, &long),
            Err(BackdateError::ReasonTooLong(MAX_REASON_BYTES + 1))
        );
        assert_eq!(
            check(past, NOW, true, " recovery of case 7 "),
            Ok(Some("recovery of case 7"))
        );
    }

    #[test]
    fn a_start_now_or_later_takes_neither() {
        assert_eq!(check(NOW, NOW, false, ""), Ok(None));
        assert_eq!(check(NOW + 5, NOW, false, ""), Ok(None));
        assert_eq!(
            check(NOW, NOW, true, "why"),
            Err(BackdateError::NotInThePast {
                field: F,
                at: NOW,
                now: NOW
            })
        );
        assert_eq!(
            check(NOW, NOW, false, "why"),
            Err(BackdateError::ReasonWithoutFlag)
        );
    }

    #[test]
    fn a_refusal_names_the_field_and_both_times() {
        let text = super::check("at", NOW - 1, NOW, false, "")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            text.starts_with("at ") && text.contains("leave at 0") && text.contains("2027-01-15"),
            "{text}"
        );
    }
}
