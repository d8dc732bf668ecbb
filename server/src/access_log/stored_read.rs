//! Reading an access log the store keeps, for the audit administrator's
//! commands: the same queries and exports as `export` gives of the files,
//! of any origin the database holds, from any host that reaches it.

use super::export::{EXPORT_FORMAT, Export, ExportedRecord, Filter};
use super::record::AccessRecord;
use super::stored_check::{CHUNK, StoredTree, place, read_checkpoint};
use super::{AccessLogError, origin_replica};
use crate::store::access::AccessLogStore;
use tongbao_proto::checkpoint::NoteVerifier;
use tongbao_proto::merkle::prove_record;

/// The access logs of the hub `log_name` the database holds: the hub's
/// own and each replica's, by origin.
pub fn origins(db: &dyn AccessLogStore, log_name: &str) -> Result<Vec<String>, AccessLogError> {
    Ok(db
        .access_origins()?
        .into_iter()
        .filter(|o| origin_replica(log_name, o).is_some())
        .collect())
}

/// Calls `each` with every stored record of `origin` (its line too), in
/// order, until it returns false.
pub fn for_each_record(
    db: &dyn AccessLogStore,
    origin: &str,
    mut each: impl FnMut(&str, &AccessRecord) -> Result<bool, AccessLogError>,
) -> Result<(), AccessLogError> {
    let mut from = db.access_extent(origin)?.first_kept.unwrap_or(0);
    loop {
        let rows = db.access_records(origin, from, CHUNK)?;
        let Some(last) = rows.last().map(|r| r.n) else {
            return Ok(());
        };
        for row in &rows {
            let line = std::str::from_utf8(&row.line).map_err(|_| AccessLogError::Broken {
                segment: place(origin),
                record: Some(row.n),
                what: "the stored record is not UTF-8".into(),
            })?;
            let record = AccessRecord::from_line(line).map_err(|e| AccessLogError::Broken {
                segment: place(origin),
                record: Some(row.n),
                what: format!("the stored record cannot be read as a record: {e}"),
            })?;
            if !each(line, &record)? {
                return Ok(());
            }
        }
        from = last + 1;
    }
}

/// Records of `origin` matching `filter`, in order.
pub fn query(
    db: &dyn AccessLogStore,
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

/// Exports the records of `origin` from `since_micros` on that its latest
/// signed checkpoint covers, each with its inclusion proof (the format of
/// `export::export`). The checkpoint is checked under `verifier` when
/// given; the export's reader checks it anyway.
pub fn export(
    db: &dyn AccessLogStore,
    origin: &str,
    verifier: Option<&NoteVerifier>,
    since_micros: Option<i64>,
) -> Result<Export, AccessLogError> {
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
    let tree = StoredTree { db, origin };
    let filter = Filter {
        since_micros,
        ..Filter::default()
    };
    let mut records = Vec::new();
    for_each_record(db, origin, |line, r| {
        if r.n >= size {
            return Ok(false);
        }
        if filter.matches(r) {
            let proof = prove_record(size, r.n, &tree)?;
            records.push(ExportedRecord {
                line: line.to_string(),
                proof: proof.iter().map(hex::encode).collect(),
            });
        }
        Ok(true)
    })?;
    Ok(Export {
        format: EXPORT_FORMAT.into(),
        checkpoint: note,
        records,
    })
}
