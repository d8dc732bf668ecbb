//! Who is speaking: the names carried in certificate SAN URIs, and the
//! inbox names that appear as recipients in entries.
//!
//! One party, one spelling: the hub derives identities from certificates
//! with [`Principal::from_uri`], the operator tools write certificates with
//! [`Principal::uri`], and entries name recipients with [`Principal::inbox`].

use crate::echo::shown;
use std::borrow::Cow;
use std::fmt;

const UNIT_PREFIX: &str = "urn:tongbao:unit:";
const OFFICE_PREFIX: &str = "urn:tongbao:office:";
const OPERATOR_PREFIX: &str = "urn:tongbao:operator:";
const LEADING_GROUP_URI: &str = "urn:tongbao:leading-group";

/// Inbox name of the leading group.
pub const LEADING_GROUP_INBOX: &str = "leading-group";
/// Prefix of an office's inbox name: `office:<mechanism>`.
pub const OFFICE_INBOX_PREFIX: &str = "office:";

/// Why an identifier was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error(
        "{what} {:?} is not a valid id: use 1 to 64 characters a-z, 0-9 and '-', starting with a letter",
        shown(.value)
    )]
    Invalid { what: &'static str, value: String },
    #[error(
        "{:?} is not a Tongbao identity URI (urn:tongbao:unit:<id>, urn:tongbao:office:<mechanism>, urn:tongbao:operator:<name>, urn:tongbao:leading-group)",
        shown(.0)
    )]
    NotTongbaoUri(String),
}

/// Checks the shape shared by unit, mechanism and operator ids.
pub fn check_id(what: &'static str, value: &str) -> Result<(), IdError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.as_bytes()[0].is_ascii_lowercase()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(IdError::Invalid {
            what,
            value: value.to_string(),
        })
    }
}

/// An authenticated party, as named by its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A member unit (department).
    Unit(String),
    /// The office of a mechanism.
    Office(String),
    /// A hub operator.
    Operator(String),
    /// The leading group above both mechanisms.
    LeadingGroup,
}

impl Principal {
    /// Parses a SAN URI.
    pub fn from_uri(uri: &str) -> Result<Self, IdError> {
        if let Some(id) = uri.strip_prefix(UNIT_PREFIX) {
            check_id("unit", id).map(|_| Self::Unit(id.to_string()))
        } else if let Some(id) = uri.strip_prefix(OFFICE_PREFIX) {
            check_id("mechanism", id).map(|_| Self::Office(id.to_string()))
        } else if let Some(id) = uri.strip_prefix(OPERATOR_PREFIX) {
            check_id("operator", id).map(|_| Self::Operator(id.to_string()))
        } else if uri == LEADING_GROUP_URI {
            Ok(Self::LeadingGroup)
        } else {
            Err(IdError::NotTongbaoUri(uri.to_string()))
        }
    }

    /// The SAN URI to put in this party's certificate.
    pub fn uri(&self) -> String {
        match self {
            Self::Unit(id) => format!("{UNIT_PREFIX}{id}"),
            Self::Office(m) => format!("{OFFICE_PREFIX}{m}"),
            Self::Operator(n) => format!("{OPERATOR_PREFIX}{n}"),
            Self::LeadingGroup => LEADING_GROUP_URI.to_string(),
        }
    }

    /// The inbox this party reads, if it receives entries at all.
    pub fn inbox(&self) -> Option<String> {
        self.inbox_name().map(Cow::into_owned)
    }

    /// [`Principal::inbox`], borrowed where it can be: a unit's inbox is its
    /// id, asked for per entry on the hub's read paths without a copy.
    pub fn inbox_name(&self) -> Option<Cow<'_, str>> {
        match self {
            Self::Unit(id) => Some(Cow::Borrowed(id)),
            Self::Office(m) => Some(Cow::Owned(office_inbox(m))),
            Self::LeadingGroup => Some(Cow::Borrowed(LEADING_GROUP_INBOX)),
            Self::Operator(_) => None,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unit(id) => write!(f, "unit {id}"),
            Self::Office(m) => write!(f, "office of {m}"),
            Self::Operator(n) => write!(f, "operator {n}"),
            Self::LeadingGroup => write!(f, "leading group"),
        }
    }
}

/// Prefix of the SAN URI by which the hub's certificate binds its
/// checkpoint key (signed-note vkey): the CA thereby certifies the key that
/// signs checkpoints and the key registry, so an auditor holding only the
/// CA certificate can check a proof bundle.
const CHECKPOINT_KEY_PREFIX: &str = "urn:tongbao:checkpoint-key:";

/// The SAN URI naming a hub checkpoint key.
pub fn checkpoint_key_uri(vkey: &str) -> String {
    format!("{CHECKPOINT_KEY_PREFIX}{vkey}")
}

/// The checkpoint key a SAN URI names, if it is one.
pub fn checkpoint_key_of_uri(uri: &str) -> Option<&str> {
    uri.strip_prefix(CHECKPOINT_KEY_PREFIX)
        .filter(|k| !k.is_empty())
}

/// Inbox name of a mechanism's office.
pub fn office_inbox(mechanism: &str) -> String {
    format!("{OFFICE_INBOX_PREFIX}{mechanism}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_key_uri_round_trips() {
        let vkey = "tongbao.example+12ab34cd+AaBb/9+x=";
        assert_eq!(checkpoint_key_of_uri(&checkpoint_key_uri(vkey)), Some(vkey));
        assert_eq!(checkpoint_key_of_uri("urn:tongbao:checkpoint-key:"), None);
        assert_eq!(checkpoint_key_of_uri("urn:tongbao:unit:tax"), None);
        assert!(Principal::from_uri(&checkpoint_key_uri(vkey)).is_err());
    }

    #[test]
    fn uris_round_trip() -> Result<(), IdError> {
        for p in [
            Principal::Unit("tax".into()),
            Principal::Office("fund-supervision".into()),
            Principal::Operator("ops1".into()),
            Principal::LeadingGroup,
        ] {
            assert_eq!(Principal::from_uri(&p.uri())?, p);
        }
        Ok(())
    }

    #[test]
    fn inboxes_are_named_alike_borrowed_or_owned() {
        let cases = [
            (Principal::Unit("tax".into()), Some("tax")),
            (
                Principal::Office("fund-supervision".into()),
                Some("office:fund-supervision"),
            ),
            (Principal::LeadingGroup, Some(LEADING_GROUP_INBOX)),
            (Principal::Operator("ops1".into()), None),
        ];
        for (p, inbox) in cases {
            assert_eq!(p.inbox().as_deref(), inbox, "{p}");
            assert_eq!(p.inbox_name().as_deref(), inbox, "{p}");
        }
    }

    #[test]
    fn bad_ids_and_foreign_uris_are_refused() {
        for bad in [
            "urn:tongbao:unit:",
            "urn:tongbao:unit:Tax",
            "urn:tongbao:unit:tax/..",
            "urn:tongbao:unit:1tax",
            "urn:tongbao:units:tax",
            "https://example.org",
        ] {
            assert!(Principal::from_uri(bad).is_err(), "{bad}");
        }
    }
}
