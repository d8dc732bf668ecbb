//! The audit index's rows checked against the entries they name.
//!
//! An audit reads only rows, never entries, so a changed byte in a row
//! (in the segments, or whole in sled before the upgrade) would be served
//! to auditors as stored: the Merkle checks cover entries, not rows.
//! `verify-data` therefore remakes each row from its entry, as the append
//! made it ([`audit_row`]), and compares.

use super::super::StoreError;
use super::super::codec::{AUDIT_SCOPE, audit_key_parts, audit_row, decode_entry, place_of_row};
use super::{SledStore, read_entry_record};
use std::ops::Bound;

/// Failures named at most; beyond them only counted.
const NAMED_FAILURES: usize = 100;

/// What [`SledStore::check_audit_rows`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AuditRowsChecked {
    pub rows: u64,
    /// The rows that differ from their entries (the first
    /// [`NAMED_FAILURES`], then a count of the rest).
    pub failures: Vec<String>,
}

impl SledStore {
    /// Checks every audit index row against the entry it names: the row
    /// must be the one the entry makes, and its key's time the entry's.
    /// A row or entry that cannot be read is a failure too; only the
    /// store's own errors end the check.
    pub fn check_audit_rows(&self) -> Result<AuditRowsChecked, StoreError> {
        let d = &self.durability;
        let mut checked = AuditRowsChecked::default();
        let mut unnamed = 0u64;
        for kv in d.scan(&[AUDIT_SCOPE, 0], Bound::Excluded(&[AUDIT_SCOPE, 1])) {
            let (k, v) = kv?;
            checked.rows += 1;
            let Err(why) = self.check_row(&k, &v) else {
                continue;
            };
            if let StoreError::Poisoned(_) | StoreError::Sled(_) = why {
                return Err(why);
            }
            if checked.failures.len() < NAMED_FAILURES {
                checked.failures.push(why.to_string());
            } else {
                unnamed += 1;
            }
        }
        if unnamed > 0 {
            checked
                .failures
                .push(format!("and {unnamed} more audit rows that differ"));
        }
        Ok(checked)
    }

    fn check_row(&self, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
        let (mechanism, hub_micros, seq, channel) = audit_key_parts(k)?;
        let d = &self.durability;
        let row = match place_of_row(v)? {
            Some(place) => d.segments.read(place)?,
            None => v.to_vec(),
        };
        let differs = |what: &str| {
            StoreError::Corrupt(format!(
                "the audit row of {channel}:{seq} for mechanism {mechanism} {what}"
            ))
        };
        let record = read_entry_record(d, &channel, seq)?
            .ok_or_else(|| differs("names an entry that is missing"))?;
        let entry = decode_entry(&channel, seq, &record)?;
        if entry.entry.hub_micros != hub_micros {
            return Err(differs("is filed at another time than its entry's"));
        }
        if row != audit_row(&entry) {
            return Err(differs("differs from what its entry says"));
        }
        Ok(())
    }
}
