//! When an operator may date a signing key's validity into the past.
//!
//! A key registered from a past time makes messages dated back then
//! verifiable under it: whoever holds the key can speak for the unit in
//! the past. Registration is for a first key and for recovery, so a past
//! start is allowed only when the request says so explicitly and gives a
//! reason, and both go into the admin trail with the registration.

use tongbao_proto::format_micros;

/// Longest reason accepted: it is recorded whole in the admin trail.
pub const MAX_REASON_BYTES: usize = 512;

/// Why a registration's start time was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackdateError {
    #[error(
        "valid_from {} is before the hub's time {}: dating a key's validity into the past needs backdate set and a backdate_reason (`--backdate-reason TEXT`), both recorded; to start it now, leave valid_from 0",
        format_micros(*.from),
        format_micros(*.now)
    )]
    NotFlagged { from: i64, now: i64 },
    #[error(
        "backdate is set but backdate_reason is empty; say why the key must be valid from the past"
    )]
    NoReason,
    #[error(
        "backdate_reason is {0} bytes; at most {MAX_REASON_BYTES} are recorded, say it shorter"
    )]
    ReasonTooLong(usize),
    #[error(
        "backdate is set but valid_from {} is not before the hub's time {}; drop backdate and its reason",
        format_micros(*.from),
        format_micros(*.now)
    )]
    NotInThePast { from: i64, now: i64 },
    #[error("backdate_reason is given without backdate; set backdate too, or drop the reason")]
    ReasonWithoutFlag,
}

/// Checks a registration starting at `from` (already resolved: 0 means now)
/// against the hub's time `now`. Returns the reason to record when the key
/// is back-dated, `None` when it is not.
pub fn check(
    from: i64,
    now: i64,
    backdate: bool,
    reason: &str,
) -> Result<Option<&str>, BackdateError> {
    let reason_given = !reason.trim().is_empty();
    match (from < now, backdate) {
        (true, false) => Err(BackdateError::NotFlagged { from, now }),
        (true, true) if !reason_given => Err(BackdateError::NoReason),
        (true, true) if reason.len() > MAX_REASON_BYTES => {
            Err(BackdateError::ReasonTooLong(reason.len()))
        }
        (true, true) => Ok(Some(reason.trim())),
        (false, true) => Err(BackdateError::NotInThePast { from, now }),
        (false, false) if reason_given => Err(BackdateError::ReasonWithoutFlag),
        (false, false) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000_000;

    #[test]
    fn a_past_start_needs_the_flag_and_a_reason() {
        let past = NOW - 1;
        assert_eq!(
            check(past, NOW, false, ""),
            Err(BackdateError::NotFlagged {
                from: past,
                now: NOW
            })
        );
        assert_eq!(
            check(past, NOW, false, "lost key"),
            Err(BackdateError::NotFlagged {
                from: past,
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
                from: NOW,
                now: NOW
            })
        );
        assert_eq!(
            check(NOW, NOW, false, "why"),
            Err(BackdateError::ReasonWithoutFlag)
        );
    }
}
