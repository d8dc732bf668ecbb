//! Reading the access log from the data directory, for the audit
//! administrator's commands: query records, export them with inclusion
//! proofs and a signed checkpoint (written as read, `export_write`), and
//! verify such an export offline.
//!
//! Readers open the files read-only and take whole lines only, so they
//! run beside a serving hub without locking it out or seeing a record
//! half written.

use super::check::read_checkpoint;
use super::export_write::{ExportSource, PAGE, for_each_in_pages, write_export};
use super::files::{self, SegmentLines, SegmentName, TreeFile};
use super::record::{AccessRecord, leaf_of_line};
use super::{AccessLogError, origin_replica};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use tongbao_proto::Hash;
use tongbao_proto::checkpoint::{Checkpoint, NoteError, NoteVerifier, open_checkpoint, parse_note};
use tongbao_proto::merkle::{HashReader, check_record};

/// The format line of an export file.
pub const EXPORT_FORMAT: &str = "tongbao-access-log-export/1";

/// Which records a query or export takes.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since_micros: Option<i64>,
    /// The caller URI, exactly.
    pub caller: Option<String>,
    /// Part of the method (`Push`, `/tongbao.v1.Log/`, `retention`).
    pub method: Option<String>,
    pub code: Option<i32>,
}

impl Filter {
    pub fn matches(&self, r: &AccessRecord) -> bool {
        self.since_micros.is_none_or(|s| r.at_micros >= s)
            && self.caller.as_ref().is_none_or(|c| &r.caller == c)
            && self
                .method
                .as_ref()
                .is_none_or(|m| r.method.contains(m.as_str()))
            && self.code.is_none_or(|c| r.code == c)
    }
}

/// The whole records of the log in a data directory (each with its
/// stored line), in order, a page at a time.
pub struct FilePages {
    segments: std::vec::IntoIter<(SegmentName, PathBuf)>,
    open: Option<(SegmentName, PathBuf, SegmentLines)>,
    page: usize,
    /// Records from this number on are not read (nor parsed).
    end: u64,
}

impl FilePages {
    /// The segments as they are now; one removed under retention before
    /// it is read is simply gone.
    pub fn open(data_dir: &Path, page: usize) -> Result<Self, AccessLogError> {
        let dir = data_dir.join(files::DIR);
        let segments = files::list_segments(&dir).map_err(|e| AccessLogError::io(&dir, e))?;
        Ok(Self {
            segments: segments.into_iter(),
            open: None,
            page: page.max(1),
            end: u64::MAX,
        })
    }

    /// Reads records before `end` only: an export stops at its
    /// checkpoint's size, and what lies past it is not its concern.
    pub fn before(mut self, end: u64) -> Self {
        self.end = end;
        self
    }

    /// The next records; empty once all are read.
    pub fn next_page(&mut self) -> Result<Vec<(String, AccessRecord)>, AccessLogError> {
        let mut out = Vec::new();
        while out.len() < self.page {
            let Some((name, path, lines)) = &mut self.open else {
                let Some((name, path)) = self.segments.next() else {
                    break;
                };
                match SegmentLines::open(&path) {
                    Ok(lines) => self.open = Some((name, path, lines)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(AccessLogError::io(&path, e)),
                }
                continue;
            };
            // Line k of a segment holds its record first + k - 1.
            if name.first.saturating_add(lines.read()) >= self.end {
                self.segments = Vec::new().into_iter();
                self.open = None;
                break;
            }
            let Some(line) = lines.next_line().map_err(|e| AccessLogError::io(path, e))? else {
                self.open = None;
                continue;
            };
            let record =
                AccessRecord::from_line(&line.text).map_err(|e| AccessLogError::Broken {
                    segment: name.file_name(),
                    record: None,
                    what: format!("line {} cannot be read as a record: {e}", line.number),
                })?;
            out.push((line.text, record));
        }
        Ok(out)
    }
}

/// Calls `each` with every whole record (its stored line too) of the log
/// in `data_dir`, in order, until it returns false.
pub fn for_each_record(
    data_dir: &Path,
    each: impl FnMut(&str, &AccessRecord) -> Result<bool, AccessLogError>,
) -> Result<(), AccessLogError> {
    let mut pages = FilePages::open(data_dir, PAGE)?;
    for_each_in_pages(|| pages.next_page(), each)
}

/// Records matching `filter`, in order.
pub fn query(data_dir: &Path, filter: &Filter) -> Result<Vec<AccessRecord>, AccessLogError> {
    let mut out = Vec::new();
    for_each_record(data_dir, |_, r| {
        if filter.matches(r) {
            out.push(r.clone());
        }
        Ok(true)
    })?;
    Ok(out)
}

/// An export: records exactly as stored, each with its inclusion proof in
/// the tree of the signed checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    pub format: String,
    /// The signed checkpoint (a C2SP signed note) the proofs lead to.
    pub checkpoint: String,
    pub records: Vec<ExportedRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedRecord {
    /// The record's line as stored; its leaf hash is over these bytes.
    pub line: String,
    /// Hex hashes of its RFC 6962 inclusion proof.
    pub proof: Vec<String>,
}

/// Writes to `out` the export of the records from `since_micros` on that
/// the latest signed checkpoint covers; returns how many. The checkpoint
/// is checked under a verifier and origin when `checked` gives them; the
/// export's reader checks it anyway.
pub fn export_to(
    out: &mut dyn Write,
    data_dir: &Path,
    checked: Option<(&NoteVerifier, &str)>,
    since_micros: Option<i64>,
) -> Result<usize, AccessLogError> {
    let dir = data_dir.join(files::DIR);
    let no_checkpoint = || {
        AccessLogError::Closed(
            "the access log has no signed checkpoint yet; wait a second for the hub to sign one"
                .into(),
        )
    };
    let (checkpoint, note) = match checked {
        Some((v, origin)) => read_checkpoint(&dir, v, origin)?.ok_or_else(no_checkpoint)?,
        None => {
            let path = dir.join(files::CHECKPOINT_FILE);
            let note = match std::fs::read_to_string(&path) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(no_checkpoint()),
                Err(e) => return Err(AccessLogError::io(&path, e)),
            };
            let parsed = parse_note(&note)?;
            (
                Checkpoint::parse_body(&parsed.text).map_err(NoteError::from)?,
                note,
            )
        }
    };
    let tree_path = dir.join(files::TREE_FILE);
    let tree = TreeFile::open(&tree_path).map_err(|e| AccessLogError::io(&tree_path, e))?;
    let filter = Filter {
        since_micros,
        ..Filter::default()
    };
    let mut source = FileSource {
        pages: FilePages::open(data_dir, PAGE)?.before(checkpoint.size),
        tree,
    };
    write_export(out, &note, checkpoint.size, &filter, &mut source)
}

/// The files as an export reads them.
struct FileSource {
    pages: FilePages,
    tree: TreeFile,
}

impl ExportSource for FileSource {
    fn next_page(&mut self) -> Result<Vec<(String, AccessRecord)>, AccessLogError> {
        self.pages.next_page()
    }

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, AccessLogError> {
        Ok(self.tree.read_hashes(indexes)?)
    }
}

/// What a verified export holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedExport {
    pub records: usize,
    pub checkpoint_size: u64,
    pub origin: String,
}

/// Checks an export offline against the hub key: the checkpoint's
/// signature, then every record's inclusion proof, and that the records
/// follow one another without a gap. Names the first record that fails.
pub fn verify_export(
    text: &str,
    verifier: &NoteVerifier,
) -> Result<VerifiedExport, AccessLogError> {
    let fail = |record: Option<u64>, what: String| AccessLogError::Broken {
        segment: "export".into(),
        record,
        what,
    };
    let export: Export = serde_json::from_str(text)
        .map_err(|e| fail(None, format!("not an access log export: {e}")))?;
    if export.format != EXPORT_FORMAT {
        return Err(fail(
            None,
            format!(
                "unknown format {:?}",
                tongbao_proto::echo::shown(&export.format)
            ),
        ));
    }
    let (checkpoint, _) = open_checkpoint(&export.checkpoint, verifier, &[]).map_err(|e| {
        fail(
            None,
            format!("the checkpoint does not verify under the hub key: {e}"),
        )
    })?;
    if origin_replica(verifier.name(), &checkpoint.origin).is_none() {
        return Err(fail(
            None,
            format!(
                "the checkpoint is of {:?}, not an access log of {:?}",
                tongbao_proto::echo::shown(&checkpoint.origin),
                verifier.name()
            ),
        ));
    }
    let mut previous: Option<u64> = None;
    for (i, exported) in export.records.iter().enumerate() {
        let record = AccessRecord::from_line(&exported.line).map_err(|e| {
            fail(
                previous.map(|p| p + 1),
                format!("entry {} is not a record: {e}", i + 1),
            )
        })?;
        let n = record.n;
        if let Some(p) = previous
            && n != p + 1
        {
            return Err(fail(
                Some(p + 1),
                format!(
                    "the export goes from record {p} to record {n}: record {} is missing",
                    p + 1
                ),
            ));
        }
        let proof = exported
            .proof
            .iter()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| Hash::try_from(b.as_slice()).ok())
            })
            .collect::<Option<Vec<Hash>>>()
            .ok_or_else(|| {
                fail(
                    Some(n),
                    "its proof holds a hash that is not 32 bytes of hex".into(),
                )
            })?;
        check_record(&proof, checkpoint.size, &checkpoint.root, n, &leaf_of_line(&exported.line))
            .map_err(|e| {
                fail(
                    Some(n),
                    format!(
                        "its inclusion proof fails ({e}): the record was changed, or is not in the log the checkpoint signs"
                    ),
                )
            })?;
        previous = Some(n);
    }
    Ok(VerifiedExport {
        records: export.records.len(),
        checkpoint_size: checkpoint.size,
        origin: checkpoint.origin,
    })
}
