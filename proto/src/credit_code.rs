//! Unified social credit codes (统一社会信用代码, GB 32100-2015): how a
//! message names the social organizations it is about.
//!
//! A code has 18 characters from the 31-character set `0-9 A-H J-N P-R T U
//! W X Y` (I, O, Z, S and V are never used): a registration authority, an
//! organization category, a 6-digit administrative division, a 9-character
//! organization code and a check character. The check character is computed
//! mod 31 with weights 3^i mod 31, so a mistyped or swapped character is
//! caught before anything is indexed under the wrong organization. Every
//! party (hub, client, offline verifier) checks with [`check`].

use crate::echo::shown;
use crate::pb::Organization;

/// Characters of a code.
pub const CODE_LEN: usize = 18;

/// At most this many organizations in one message's references.
pub const MAX_ORGANIZATIONS: usize = 16;

/// Bytes of an organization's name, at most.
pub const MAX_NAME_BYTES: usize = 256;

/// The code's alphabet, in value order: a character's value is its index.
const CHARSET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

/// Why a code or an organization reference is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditCodeError {
    #[error("credit code {code:?} has {len} characters; a unified social credit code has 18")]
    Length { code: String, len: usize },
    #[error(
        "credit code {code:?}: character {position} ({found:?}) is not one of 0-9 A-H J-N P-R T U W X Y (upper case; I, O, Z, S, V are never used)"
    )]
    Character {
        code: String,
        position: usize,
        found: char,
    },
    #[error(
        "credit code {code:?}: characters 3 to 8 are the administrative division code and must be digits"
    )]
    Division { code: String },
    #[error(
        "credit code {code:?}: the check character is {found:?}, but the first 17 characters give {expected:?}; check for a mistyped character"
    )]
    Check {
        code: String,
        found: char,
        expected: char,
    },
    #[error("organization {code}: the name is {len} bytes; at most {MAX_NAME_BYTES}")]
    NameTooLong { code: String, len: usize },
    #[error("organization {code} is named twice")]
    Duplicate { code: String },
    #[error("{count} organizations; a message names at most {MAX_ORGANIZATIONS}")]
    TooMany { count: usize },
}

/// The value of one code character, if it is one.
fn value(c: char) -> Option<u32> {
    let b = u8::try_from(c).ok()?;
    CHARSET.iter().position(|x| *x == b).map(|i| i as u32)
}

/// The check character of the first 17 characters (each already a code
/// character): (31 − Σ value·3^i mod 31) mod 31.
fn check_character(values: &[u32]) -> char {
    let mut weight = 1u32;
    let mut sum = 0u32;
    for v in values {
        sum = (sum + v * weight) % 31;
        weight = weight * 3 % 31;
    }
    let c = (31 - sum) % 31;
    char::from(CHARSET[c as usize])
}

/// Checks a unified social credit code: length, alphabet, the division
/// digits and the check character.
pub fn check(code: &str) -> Result<(), CreditCodeError> {
    let len = code.chars().count();
    if len != CODE_LEN {
        return Err(CreditCodeError::Length {
            code: shown(code).into_owned(),
            len,
        });
    }
    let mut values = Vec::with_capacity(CODE_LEN);
    for (i, c) in code.chars().enumerate() {
        let v = value(c).ok_or_else(|| CreditCodeError::Character {
            code: code.to_string(),
            position: i + 1,
            found: c,
        })?;
        values.push(v);
    }
    if values[2..8].iter().any(|v| *v > 9) {
        return Err(CreditCodeError::Division {
            code: code.to_string(),
        });
    }
    let expected = check_character(&values[..17]);
    let found = code.chars().last().unwrap_or_default();
    if found != expected {
        return Err(CreditCodeError::Check {
            code: code.to_string(),
            found,
            expected,
        });
    }
    Ok(())
}

/// Checks the organizations a message names: at most
/// [`MAX_ORGANIZATIONS`], each code valid and named once, each name at
/// most [`MAX_NAME_BYTES`].
pub fn check_organizations(orgs: &[Organization]) -> Result<(), CreditCodeError> {
    if orgs.len() > MAX_ORGANIZATIONS {
        return Err(CreditCodeError::TooMany { count: orgs.len() });
    }
    let mut seen = std::collections::BTreeSet::new();
    for o in orgs {
        check(&o.credit_code)?;
        if o.name.len() > MAX_NAME_BYTES {
            return Err(CreditCodeError::NameTooLong {
                code: o.credit_code.clone(),
                len: o.name.len(),
            });
        }
        if !seen.insert(o.credit_code.as_str()) {
            return Err(CreditCodeError::Duplicate {
                code: o.credit_code.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes whose check characters were computed independently of this
    /// module (published codes, and ones computed by a separate script).
    const VALID: &[&str] = &[
        "91350100M000100Y43", // GB 32100-2015's own sample
        "9144030071526726XG",
        "91330100799655058B",
        "91110000802100433B",
        "51140000MJ0000012R", // a social group (社会团体) in Shanxi
        "53140000MJY0001237", // a foundation (基金会)
        "52140100MJ1234567C", // a private non-profit unit (民办非企业单位)
        "53140000730001234G",
    ];

    #[test]
    fn independently_computed_codes_pass() {
        for c in VALID {
            assert_eq!(check(c), Ok(()), "{c}");
        }
    }

    #[test]
    fn every_single_character_change_is_caught() {
        for code in VALID {
            for i in 0..CODE_LEN {
                for &b in CHARSET {
                    let mut bytes = code.as_bytes().to_vec();
                    if bytes[i] == b {
                        continue;
                    }
                    bytes[i] = b;
                    let changed = String::from_utf8(bytes).unwrap_or_default();
                    assert!(check(&changed).is_err(), "{changed} passed");
                }
            }
        }
    }

    #[test]
    fn each_malformation_has_its_own_error() {
        assert!(matches!(
            check("91350100M000100Y4"),
            Err(CreditCodeError::Length { len: 17, .. })
        ));
        assert!(matches!(
            check("91350100M000100Y433"),
            Err(CreditCodeError::Length { len: 19, .. })
        ));
        assert!(matches!(
            check(""),
            Err(CreditCodeError::Length { len: 0, .. })
        ));
        // Letters that are never used, lower case, and a non-ASCII character.
        for (bad, at) in [
            ("91350100I000100Y43", 9),
            ("91350100O000100Y43", 9),
            ("91350100Z000100Y43", 9),
            ("91350100S000100Y43", 9),
            ("91350100V000100Y43", 9),
            ("91350100m000100Y43", 9),
            ("9135010０M000100Y43", 8),
        ] {
            match check(bad) {
                Err(CreditCodeError::Character { position, .. }) => {
                    assert_eq!(position, at, "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            check("913A0100M000100Y43"),
            Err(CreditCodeError::Division { .. })
        ));
        assert_eq!(
            check("91350100M000100Y44"),
            Err(CreditCodeError::Check {
                code: "91350100M000100Y44".into(),
                found: '4',
                expected: '3'
            })
        );
        // Two adjacent characters swapped.
        assert!(matches!(
            check("91350100M000100Y34"),
            Err(CreditCodeError::Check { .. })
        ));
    }

    #[test]
    fn a_long_input_is_never_echoed_whole() {
        let long = "9".repeat(100_000);
        let msg = check(&long)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.len() < 300, "{}", msg.len());
    }

    fn org(code: &str, name: &str) -> Organization {
        Organization {
            credit_code: code.into(),
            name: name.into(),
        }
    }

    #[test]
    fn organization_lists_are_bounded_and_named_once() {
        assert_eq!(check_organizations(&[]), Ok(()));
        assert_eq!(
            check_organizations(&[org(VALID[0], "某基金会"), org(VALID[1], "")]),
            Ok(())
        );
        assert!(matches!(
            check_organizations(&[org(VALID[0], ""), org(VALID[0], "again")]),
            Err(CreditCodeError::Duplicate { .. })
        ));
        assert!(matches!(
            check_organizations(&[org(VALID[0], &"x".repeat(MAX_NAME_BYTES + 1))]),
            Err(CreditCodeError::NameTooLong { .. })
        ));
        let many: Vec<Organization> = (0..=MAX_ORGANIZATIONS).map(|_| org(VALID[0], "")).collect();
        assert!(matches!(
            check_organizations(&many),
            Err(CreditCodeError::TooMany { count: 17 })
        ));
        assert!(matches!(
            check_organizations(&[org("not a code", "")]),
            Err(CreditCodeError::Length { .. })
        ));
    }
}
