//! Writing an export as it is read: the one loop behind the export of
//! the files (`export`) and of a log the store keeps (`stored_read`).
//!
//! A log may hold more records than memory: records come from their
//! source a page at a time, the stored hashes of a page's inclusion
//! proofs in one read, and each record is written as it is proved, so
//! memory holds a page and a large log costs a read per page, not one
//! per record. The bytes are those of the export format (`serde_json`'s
//! pretty printing of [`Export`](super::export::Export)), the records'
//! array filled as it goes. Queries walk the same pages
//! ([`for_each_in_pages`]).

use super::AccessLogError;
use super::export::{EXPORT_FORMAT, ExportedRecord, Filter};
use super::record::AccessRecord;
use serde::ser::{Error as _, SerializeSeq};
use serde::{Serialize, Serializer};
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use tongbao_proto::merkle::{HashReader, MerkleError, prove_record};
use tongbao_proto::{HASH_LEN, Hash};

/// Records read at a time for an export.
pub const PAGE: usize = 2048;

/// Where an export reads: records in order, a page at a time, and the
/// tree's stored hashes.
pub trait ExportSource {
    /// The next records (each with its stored line), in order; empty once
    /// all are read.
    fn next_page(&mut self) -> Result<Vec<(String, AccessRecord)>, AccessLogError>;
    /// Stored hashes by index, in the order asked, in one read.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, AccessLogError>;
}

/// Calls `each` with every record `next_page` gives (its stored line too),
/// in order, until it returns false: the files' and the store's
/// `for_each_record`.
pub fn for_each_in_pages(
    mut next_page: impl FnMut() -> Result<Vec<(String, AccessRecord)>, AccessLogError>,
    mut each: impl FnMut(&str, &AccessRecord) -> Result<bool, AccessLogError>,
) -> Result<(), AccessLogError> {
    loop {
        let page = next_page()?;
        if page.is_empty() {
            return Ok(());
        }
        for (line, record) in &page {
            if !each(line, record)? {
                return Ok(());
            }
        }
    }
}

/// Writes to `out` the export of the records of `source` that the signed
/// checkpoint `note`, of `size` records, covers and `filter` takes, each
/// with its inclusion proof in that checkpoint's tree; returns how many.
pub fn write_export(
    out: &mut dyn Write,
    note: &str,
    size: u64,
    filter: &Filter,
    source: &mut dyn ExportSource,
) -> Result<usize, AccessLogError> {
    let export = Streamed {
        format: EXPORT_FORMAT,
        checkpoint: note,
        records: Records(Cell::new(Some(Pages {
            source,
            size,
            filter,
            done: false,
            written: 0,
            failed: None,
        }))),
    };
    let written = serde_json::to_writer_pretty(&mut *out, &export);
    let pages =
        export.records.0.take().ok_or_else(|| {
            AccessLogError::Closed("the export's records were not written".into())
        })?;
    if let Some(e) = pages.failed {
        return Err(e);
    }
    written.map_err(|e| AccessLogError::Write(e.to_string()))?;
    out.flush()
        .map_err(|e| AccessLogError::Write(e.to_string()))?;
    Ok(pages.written)
}

/// An export whose records are read while it is written (the fields and
/// their order are [`Export`](super::export::Export)'s).
#[derive(Serialize)]
struct Streamed<'a> {
    format: &'a str,
    checkpoint: &'a str,
    records: Records<'a>,
}

/// The records' array; the pages are taken out while it is written and
/// put back with what came of it.
struct Records<'a>(Cell<Option<Pages<'a>>>);

struct Pages<'a> {
    source: &'a mut dyn ExportSource,
    size: u64,
    filter: &'a Filter,
    done: bool,
    written: usize,
    /// Why the source failed (the writer only hears that it did).
    failed: Option<AccessLogError>,
}

impl Serialize for Records<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut pages = self
            .0
            .take()
            .ok_or_else(|| S::Error::custom("the export's records are written once"))?;
        let written = pages.write(serializer);
        self.0.set(Some(pages));
        written
    }
}

impl Pages<'_> {
    fn write<S: Serializer>(&mut self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        loop {
            let page = match self.next() {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(e) => {
                    let said = e.to_string();
                    self.failed = Some(e);
                    return Err(S::Error::custom(said));
                }
            };
            for record in &page {
                seq.serialize_element(record)?;
                self.written += 1;
            }
        }
        seq.end()
    }

    /// The next page's records the export takes, proved; None at the end.
    fn next(&mut self) -> Result<Option<Vec<ExportedRecord>>, AccessLogError> {
        while !self.done {
            let page = self.source.next_page()?;
            if page.is_empty() {
                self.done = true;
                break;
            }
            let mut taken = Vec::new();
            for (line, record) in page {
                // The checkpoint covers the records before its size only.
                if record.n >= self.size {
                    self.done = true;
                    break;
                }
                if self.filter.matches(&record) {
                    taken.push((line, record.n));
                }
            }
            if !taken.is_empty() {
                return self.prove(taken).map(Some);
            }
        }
        Ok(None)
    }

    /// Proves a page's records with one read of the hashes they need.
    fn prove(&self, taken: Vec<(String, u64)>) -> Result<Vec<ExportedRecord>, AccessLogError> {
        let wanted = Wanted::default();
        for (_, n) in &taken {
            prove_record(self.size, *n, &wanted)?;
        }
        let indexes: Vec<u64> = wanted.0.take().into_iter().collect();
        let hashes = self.source.read_hashes(&indexes)?;
        if hashes.len() != indexes.len() {
            return Err(AccessLogError::Closed(format!(
                "the tree gave {} hashes where {} were asked",
                hashes.len(),
                indexes.len()
            )));
        }
        let read = Read(indexes.into_iter().zip(hashes).collect());
        taken
            .into_iter()
            .map(|(line, n)| {
                let proof = prove_record(self.size, n, &read)?;
                Ok(ExportedRecord {
                    line,
                    proof: proof.iter().map(hex::encode).collect(),
                })
            })
            .collect()
    }
}

/// Notes which stored hashes a proof asks for, answering placeholders:
/// which hashes a proof needs depends on the sizes, never on their values.
#[derive(Default)]
struct Wanted(Cell<BTreeSet<u64>>);

impl HashReader for Wanted {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MerkleError> {
        let mut wanted = self.0.take();
        wanted.extend(indexes);
        self.0.set(wanted);
        Ok(vec![[0u8; HASH_LEN]; indexes.len()])
    }
}

/// The hashes a page's proofs need, as read.
struct Read(HashMap<u64, Hash>);

impl HashReader for Read {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MerkleError> {
        indexes
            .iter()
            .map(|i| {
                self.0
                    .get(i)
                    .copied()
                    .ok_or_else(|| MerkleError::Reader(format!("stored hash {i} was not read")))
            })
            .collect()
    }
}
