//! The audit index's rows checked against the entries they name.
//!
//! What an audit reports of a row is read from the entry it names
//! (format 6), so a row cannot differ from its entry's signed bytes; what
//! can go wrong is the row itself: a run that no longer decodes, a row
//! naming an entry that is missing, or filed at another time than its
//! entry's (an audit period would then miss it or hold it wrongly).
//! `verify-data` checks every row for these.

use super::super::StoreError;
use super::super::audit_index::{Row, rows_of};
use super::super::codec::AUDIT_SCOPE;
use super::super::durability::Record;
use super::super::entry_record::decode_entry;
use super::{SledStore, read_entry_record};

/// Failures named at most; beyond them only counted.
const NAMED_FAILURES: usize = 100;
/// Runs read at a time, with rewrites held off (see [`super::super::audit_index::Rewrites`]).
const CHUNK: usize = 1_000;

/// What [`SledStore::check_audit_rows`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AuditRowsChecked {
    pub rows: u64,
    /// The rows that fail (the first [`NAMED_FAILURES`], then a count of
    /// the rest).
    pub failures: Vec<String>,
}

impl SledStore {
    /// Checks every audit index row against the entry it names: the entry
    /// must be there, at the row's time. A run that cannot be read is a
    /// failure too (its rows uncounted); only the store's own errors end
    /// the check. Rows committed since the check began are not checked.
    pub fn check_audit_rows(&self) -> Result<AuditRowsChecked, StoreError> {
        self.check_audit_rows_in_chunks(CHUNK, || Ok(()))
    }

    /// [`Self::check_audit_rows`], `chunk` runs at a time, running
    /// `between` after each chunk is read (tests rewrite runs there).
    /// Rewrites may go on between chunks and cut runs anew, so a run read
    /// later can hold rows a run read earlier held: a row not past the
    /// last one counted of its mechanism is skipped, as audits skip it.
    pub(super) fn check_audit_rows_in_chunks(
        &self,
        chunk: usize,
        mut between: impl FnMut() -> Result<(), StoreError>,
    ) -> Result<AuditRowsChecked, StoreError> {
        let d = &self.durability;
        // Every row committed so far filed in sled's runs.
        d.flush(true, Record::WithNextFlush)?;
        let mut checked = AuditRowsChecked::default();
        let mut unnamed = 0u64;
        let mut fail = |why: StoreError, checked: &mut AuditRowsChecked| {
            if checked.failures.len() < NAMED_FAILURES {
                checked.failures.push(why.to_string());
            } else {
                unnamed += 1;
            }
        };
        let end = [AUDIT_SCOPE, 1];
        let mut from = vec![AUDIT_SCOPE, 0];
        // The last row counted, and its mechanism.
        let mut counted: Option<(String, Row)> = None;
        loop {
            // A chunk of runs read with rewrites held off, checked after.
            let chunk = {
                let _still = d.rewrites.hold_still()?;
                d.tree
                    .range(from.as_slice()..&end[..])
                    .take(chunk)
                    .collect::<Result<Vec<_>, _>>()?
            };
            let Some((last, _)) = chunk.last() else {
                break;
            };
            from = [last.as_ref(), &[0]].concat();
            between()?;
            for (k, v) in chunk {
                let found = Row::of_key(&k)
                    .and_then(|(mechanism, _)| rows_of(&k, &v).map(|rows| (mechanism, rows)));
                let (mechanism, rows) = match found {
                    Ok(found) => found,
                    Err(StoreError::Corrupt(m)) => {
                        fail(StoreError::Corrupt(m), &mut checked);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let past = |row: &Row| match &counted {
                    Some((m, last)) if *m == mechanism => row > last,
                    _ => true,
                };
                // Rows ascend within a run: those past the last counted
                // are its tail.
                let new = rows.partition_point(|row| !past(row));
                let Some(top) = rows.last().filter(|row| past(row)).cloned() else {
                    continue;
                };
                for row in &rows[new..] {
                    checked.rows += 1;
                    match self.check_row(&mechanism, row) {
                        Ok(()) => {}
                        Err(why @ (StoreError::Poisoned(_) | StoreError::Sled(_))) => {
                            return Err(why);
                        }
                        Err(why) => fail(why, &mut checked),
                    }
                }
                counted = Some((mechanism, top));
            }
        }
        if unnamed > 0 {
            checked
                .failures
                .push(format!("and {unnamed} more audit rows that fail"));
        }
        Ok(checked)
    }

    fn check_row(&self, mechanism: &str, row: &Row) -> Result<(), StoreError> {
        let (channel, seq) = (&row.channel, row.seq);
        let fails = |what: &str| {
            StoreError::Corrupt(format!(
                "the audit row of {channel}:{seq} for mechanism {mechanism} {what}"
            ))
        };
        let record = read_entry_record(&self.durability, channel, seq)?
            .ok_or_else(|| fails("names an entry that is missing"))?;
        let entry = decode_entry(channel, seq, &record)?;
        if entry.entry.hub_micros.max(0) as u64 != row.hub_micros {
            return Err(fails("is filed at another time than its entry's"));
        }
        Ok(())
    }
}
