//! Reading an access log the store keeps, for the audit administrator's
//! commands: the same queries and exports as `export` gives of an earlier
//! version's files (the same export loop, `export_write`), of any origin
//! the store holds: PostgreSQL's from any host that reaches it, sled's
//! through its read-only reader (`store::access_files::open_read`) beside
//! the running hub. The commands read through one snapshot of the store
//! (`AccessLogStore::access_snapshot`), so that a running hub's appends
//! and removals meanwhile do not show half done.

use super::export::Filter;
use super::export_write::{ExportSource, PAGE, for_each_in_pages, write_export};
use super::record::AccessRecord;
use super::stored_check::{place, read_checkpoint};
use super::{AccessLogError, origin_replica};
use crate::store::access::AccessLogRead;
use std::io::Write;
use tongbao_proto::Hash;
use tongbao_proto::checkpoint::NoteVerifier;

/// The access logs of the hub `log_name` the database holds: the hub's
/// own and each replica's, by origin.
pub fn origins(db: &dyn AccessLogRead, log_name: &str) -> Result<Vec<String>, AccessLogError> {
    Ok(db
        .access_origins()?
        .into_iter()
        .filter(|o| origin_replica(log_name, o).is_some())
        .collect())
}

/// The stored records of one origin (each with its line), in order, a
/// page at a time, from the first one kept.
pub struct StoredPages<'a> {
    db: &'a dyn AccessLogRead,
    origin: &'a str,
    from: Option<u64>,
    page: usize,
    /// Records from this number on are not read (nor parsed).
    end: u64,
}

impl<'a> StoredPages<'a> {
    pub fn new(db: &'a dyn AccessLogRead, origin: &'a str, page: usize) -> Self {
        Self {
            db,
            origin,
            from: None,
            page: page.max(1),
            end: u64::MAX,
        }
    }

    /// Reads records before `end` only: an export stops at its
    /// checkpoint's size, and what lies past it is not its concern.
    pub fn before(mut self, end: u64) -> Self {
        self.end = end;
        self
    }

    /// The next records; empty once all are read.
    pub fn next_page(&mut self) -> Result<Vec<(String, AccessRecord)>, AccessLogError> {
        let from = match self.from {
            Some(from) => from,
            None => self.db.access_extent(self.origin)?.first_kept.unwrap_or(0),
        };
        let left = usize::try_from(self.end.saturating_sub(from)).unwrap_or(usize::MAX);
        if left == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .db
            .access_records(self.origin, from, self.page.min(left))?;
        if let Some(last) = rows.last() {
            self.from = Some(last.n + 1);
        }
        rows.into_iter()
            .take_while(|row| row.n < self.end)
            .map(|row| {
                let n = row.n;
                let broken = |what: String| AccessLogError::Broken {
                    segment: place(self.origin),
                    record: Some(n),
                    what,
                };
                let line = String::from_utf8(row.line)
                    .map_err(|_| broken("the stored record is not UTF-8".into()))?;
                let record = AccessRecord::from_line(&line).map_err(|e| {
                    broken(format!("the stored record cannot be read as a record: {e}"))
                })?;
                Ok((line, record))
            })
            .collect()
    }
}

/// Calls `each` with every stored record of `origin` (its line too), in
/// order, until it returns false.
pub fn for_each_record(
    db: &dyn AccessLogRead,
    origin: &str,
    each: impl FnMut(&str, &AccessRecord) -> Result<bool, AccessLogError>,
) -> Result<(), AccessLogError> {
    let mut pages = StoredPages::new(db, origin, PAGE);
    for_each_in_pages(|| pages.next_page(), each)
}

/// Records of `origin` matching `filter`, in order.
pub fn query(
    db: &dyn AccessLogRead,
    origin: &str,
    filter: &Filter,
) -> Result<Vec<AccessRecord>, AccessLogError> {
    let mut out = Vec::new();
    for_each_record(db, origin, |_, r| {
        if filter.matches(r) {
            out.push(r.clone());
        }
        Ok(true)
    })?;
    Ok(out)
}

/// Writes to `out` the export of the records of `origin` from
/// `since_micros` on that its latest signed checkpoint covers, each with
/// its inclusion proof (the format of `export::export_to`); returns how
/// many. The checkpoint is checked
/// under `verifier` when given; the export's reader checks it anyway.
pub fn export_to(
    out: &mut dyn Write,
    db: &dyn AccessLogRead,
    origin: &str,
    verifier: Option<&NoteVerifier>,
    since_micros: Option<i64>,
) -> Result<usize, AccessLogError> {
    let no_checkpoint = || {
        AccessLogError::Closed(format!(
            "the access log {origin} has no signed checkpoint yet; wait a second for its hub to sign one"
        ))
    };
    let (size, note) = match verifier {
        Some(v) => {
            let (c, note) = read_checkpoint(db, v, origin)?.ok_or_else(no_checkpoint)?;
            (c.size, note)
        }
        None => {
            let note = db.access_checkpoint(origin)?.ok_or_else(no_checkpoint)?;
            let parsed = tongbao_proto::checkpoint::parse_note(&note)?;
            let c = tongbao_proto::checkpoint::Checkpoint::parse_body(&parsed.text)
                .map_err(tongbao_proto::checkpoint::NoteError::from)?;
            (c.size, note)
        }
    };
    let filter = Filter {
        since_micros,
        ..Filter::default()
    };
    let mut source = StoredSource {
        pages: StoredPages::new(db, origin, PAGE).before(size),
        db,
        origin,
    };
    write_export(out, &note, size, &filter, &mut source)
}

/// The store as an export reads it.
struct StoredSource<'a> {
    pages: StoredPages<'a>,
    db: &'a dyn AccessLogRead,
    origin: &'a str,
}

impl ExportSource for StoredSource<'_> {
    fn next_page(&mut self) -> Result<Vec<(String, AccessRecord)>, AccessLogError> {
        self.pages.next_page()
    }

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, AccessLogError> {
        Ok(self.db.access_hashes(self.origin, indexes)?)
    }
}
