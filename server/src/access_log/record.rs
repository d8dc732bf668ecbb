//! One record of the access log, and its bytes.
//!
//! A record is stored as one line of JSON in a segment file; its leaf in
//! the access log's Merkle tree is the RFC 6962 leaf hash of exactly those
//! bytes (without the newline), so a verifier hashes what it reads and
//! never re-encodes a record.

use serde::{Deserialize, Serialize};
use tongbao_proto::Hash;
use tongbao_proto::canonical::leaf_hash_of_bytes;

/// Longest status message, target or detail a record keeps, in bytes: a
/// request can carry megabytes in a field and the log must not grow with it.
pub const MAX_TEXT_BYTES: usize = 256;
/// Most targets one record names (a batch of 64 pushes names 64 entries).
pub const MAX_TARGETS: usize = 128;

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RecordKind {
    /// A gRPC call, answered or refused.
    #[default]
    Call,
    /// A TLS handshake the hub refused (no call was made).
    Handshake,
    /// An operator's action on the registry or TLS material (the admin trail).
    Admin,
    /// Old segments removed under the retention period.
    Removal,
}

impl RecordKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::Handshake => "handshake",
            Self::Admin => "admin",
            Self::Removal => "removal",
        }
    }
}

/// A segment removed under retention: which records it held and the
/// access log's root right after its last record, so the removal is
/// checked against the tree that stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovedSegment {
    pub segment: String,
    /// First record of the segment.
    pub first: u64,
    /// Records it held: `first .. first + count`.
    pub count: u64,
    /// Hex root of the access log's tree of size `first + count`.
    pub root: String,
}

/// One access-log record. Fields that do not apply to a kind are left
/// empty (and out of the line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AccessRecord {
    /// Position in the access log (0-based), the leaf index.
    pub n: u64,
    /// Hub time the call began (or the handshake failed), µs since the epoch.
    pub at_micros: i64,
    pub kind: RecordKind,
    /// The peer's socket address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer: String,
    /// The party its certificate names (`urn:tongbao:...`), or why none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub caller: String,
    /// Its certificate's serial (lowercase hex).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serial: String,
    /// Full gRPC path (`/tongbao.v1.Exchange/Push`), or an admin action.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    /// What the call was about: `channel:tax:3`, `inbox:tax`, `cursor:>12`,
    /// `unit:tax`, `mechanism:fund-supervision`, `case:2026-F-031`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// gRPC status code (0 = OK); 16 for a refused handshake.
    #[serde(default)]
    pub code: i32,
    /// The status message of a refusal, a handshake's reason, an admin outcome.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub request_bytes: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub response_bytes: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub duration_micros: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<RemovedSegment>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `value` cut to [`MAX_TEXT_BYTES`] on a character boundary.
pub fn short(value: &str) -> String {
    tongbao_proto::echo::capped(value, MAX_TEXT_BYTES).into_owned()
}

impl AccessRecord {
    /// Cuts every free-text field to its bound (what a caller sent may be
    /// large); called before a record is numbered and written.
    pub fn bounded(mut self) -> Self {
        for field in [
            &mut self.peer,
            &mut self.caller,
            &mut self.serial,
            &mut self.method,
            &mut self.message,
        ] {
            if field.len() > MAX_TEXT_BYTES {
                *field = short(field);
            }
        }
        self.targets.truncate(MAX_TARGETS);
        for t in &mut self.targets {
            if t.len() > MAX_TEXT_BYTES {
                *t = short(t);
            }
        }
        self
    }

    /// The line stored in a segment (no newline).
    pub fn to_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    pub fn from_line(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }
}

/// The leaf hash of a stored line.
pub fn leaf_of_line(line: &str) -> Hash {
    leaf_hash_of_bytes(line.as_bytes())
}

/// Where the chain of removal records kept begins: at the first one's
/// first record, but never past the first record kept. Removed records
/// are always the first ones, so the removal record naming the last of
/// them was written after them and is kept: when records were removed,
/// the first removal record kept starts before the first record kept.
pub fn chain_start(first_removal: Option<&RemovedSegment>, first_kept: u64) -> u64 {
    first_removal.map_or(0, |r| r.first.min(first_kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips_and_its_leaf_follows_its_bytes() -> Result<(), serde_json::Error> {
        let r = AccessRecord {
            n: 7,
            at_micros: 1,
            caller: "urn:tongbao:unit:tax".into(),
            method: "/tongbao.v1.Exchange/Push".into(),
            targets: vec!["channel:tax:3".into()],
            code: 0,
            request_bytes: 1200,
            ..Default::default()
        };
        let line = r.to_line()?;
        assert!(
            !line.contains("removed") && !line.contains("message"),
            "{line}"
        );
        assert_eq!(AccessRecord::from_line(&line)?, r);
        let changed = line.replace("channel:tax:3", "channel:tax:4");
        assert_ne!(leaf_of_line(&line), leaf_of_line(&changed));
        assert!(AccessRecord::from_line(&line.replace("\"n\"", "\"x\"")).is_err());
        Ok(())
    }

    #[test]
    fn large_fields_are_bounded() {
        let r = AccessRecord {
            message: "税".repeat(10_000),
            targets: vec!["x".repeat(10_000); 1000],
            ..Default::default()
        }
        .bounded();
        assert!(r.message.len() <= MAX_TEXT_BYTES);
        assert_eq!(r.targets.len(), MAX_TARGETS);
        assert!(r.targets.iter().all(|t| t.len() <= MAX_TEXT_BYTES));
    }
}
