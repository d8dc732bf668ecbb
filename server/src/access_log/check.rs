//! Checks the access log on disk against its tree and signed checkpoint:
//! at every start of the hub (which then repairs what a crash left) and
//! offline by `tongbao-hub audit-log verify` (which only reads).
//!
//! One pass, front to back: every record is read, numbered, hashed and
//! compared with its leaf hash in `tree.hashes`; every stored hash is
//! recomputed from the leaves; the root at the checkpoint's size must be
//! the signed one. Records removed under retention are covered by their
//! hashes (kept in `tree.hashes`) and by removal records naming them. The
//! first thing that fails is named: segment, record and what.

use super::files::{self, SegmentLines, SegmentName, TreeFile, TreeStream};
use super::record::{AccessRecord, RecordKind, RemovedSegment, leaf_of_line};
use super::{AccessLogError, Frontier};
use std::path::{Path, PathBuf};
use tongbao_proto::Hash;
use tongbao_proto::checkpoint::{Checkpoint, NoteVerifier, open_checkpoint};
use tongbao_proto::merkle::tree_hash;

/// A segment as found on disk.
#[derive(Debug, Clone)]
pub struct SegmentState {
    pub name: SegmentName,
    pub path: PathBuf,
    pub count: u64,
    /// Hub time of its last record.
    pub last_at: Option<i64>,
}

/// The log as checked.
pub struct Scanned {
    /// Records in the log, removed ones included: the next record's number.
    pub size: u64,
    /// The tree over all of them.
    pub frontier: Frontier,
    pub segments: Vec<SegmentState>,
    /// The latest signed checkpoint and its note.
    pub checkpoint: Option<(Checkpoint, String)>,
    /// Records whose hashes `tree.hashes` holds whole (a crash may leave
    /// fewer than `size`, or a cut group after them).
    pub hashed: u64,
    /// The last segment's length in whole records, when a write was cut short.
    pub torn_tail: Option<(PathBuf, u64)>,
    pub removals: Vec<RemovedSegment>,
    /// The stored hashes of records `hashed..size`, computed from them.
    pub unhashed: Vec<Hash>,
    /// Segments whose removal record is written but whose file a crash
    /// left: the hub finishes removing them at start.
    pub unfinished_removals: Vec<PathBuf>,
}

fn broken(
    segment: impl Into<String>,
    record: Option<u64>,
    what: impl Into<String>,
) -> AccessLogError {
    AccessLogError::Broken {
        segment: segment.into(),
        record,
        what: what.into(),
    }
}

/// The origin line of the access log's checkpoints: the log name and a
/// path no channel can have (unit ids start with a letter).
pub fn origin(log_name: &str) -> String {
    format!("{log_name}/.access-log")
}

/// Reads and checks the latest signed checkpoint of `dir`, if any.
pub fn read_checkpoint(
    dir: &Path,
    verifier: &NoteVerifier,
    origin: &str,
) -> Result<Option<(Checkpoint, String)>, AccessLogError> {
    let path = dir.join(files::CHECKPOINT_FILE);
    let note = match std::fs::read_to_string(&path) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AccessLogError::io(&path, e)),
    };
    let (checkpoint, _) = open_checkpoint(&note, verifier, &[]).map_err(|e| {
        broken(
            files::CHECKPOINT_FILE,
            None,
            format!("the signed checkpoint does not verify under the hub key: {e}"),
        )
    })?;
    if checkpoint.origin != origin {
        return Err(broken(
            files::CHECKPOINT_FILE,
            None,
            format!(
                "the checkpoint is for {:?}, not the access log {origin:?}",
                checkpoint.origin
            ),
        ));
    }
    Ok(Some((checkpoint, note)))
}

/// The stored hashes of record `n` read from the stream, or None when the
/// file ends before them.
fn read_group(tree: &mut TreeStream, n: u64) -> Result<Option<Vec<Hash>>, std::io::Error> {
    let want = 1 + u64::from(n.trailing_ones());
    if tree.left() < want {
        return Ok(None);
    }
    let mut group = Vec::with_capacity(want as usize);
    for _ in 0..want {
        match tree.next_hash()? {
            Some(h) => group.push(h),
            None => return Ok(None),
        }
    }
    Ok(Some(group))
}

/// Checks the access log in `dir` (see the module doc).
pub fn scan(dir: &Path, verifier: &NoteVerifier, origin: &str) -> Result<Scanned, AccessLogError> {
    // The checkpoint first: records it covers were durable before it was signed.
    let checkpoint = read_checkpoint(dir, verifier, origin)?;
    let signed_size = checkpoint.as_ref().map_or(0, |(c, _)| c.size);
    let listed = files::list_segments(dir).map_err(|e| AccessLogError::io(dir, e))?;
    let tree_path = dir.join(files::TREE_FILE);
    let mut tree = TreeStream::open(&tree_path).map_err(|e| AccessLogError::io(&tree_path, e))?;
    let mut frontier = Frontier::default();
    let mut hashed = 0u64;
    let mut tree_ended = false;
    let check_root = |frontier: &Frontier, segment: &str, n: u64| -> Result<(), AccessLogError> {
        if let Some((c, _)) = &checkpoint
            && c.size == frontier.size()
            && frontier.root()? != c.root
        {
            return Err(broken(
                segment,
                Some(n),
                format!(
                    "the log up to record {n} does not match the signed checkpoint of size {}: a record up to it was changed or removed",
                    c.size
                ),
            ));
        }
        Ok(())
    };
    // Records removed under retention: their hashes alone remain.
    let first_kept = listed.first().map_or(0, |(n, _)| n.first);
    for n in 0..first_kept {
        let group = read_group(&mut tree, n)
            .map_err(|e| AccessLogError::io(&tree_path, e))?
            .ok_or_else(|| {
                broken(
                    files::TREE_FILE,
                    Some(n),
                    format!("record {n} was removed under retention but the tree lacks its hashes"),
                )
            })?;
        let computed = frontier.append(group[0])?;
        if computed != group {
            return Err(broken(
                files::TREE_FILE,
                Some(n),
                "the stored hashes do not agree with one another: the tree file was altered",
            ));
        }
        hashed += 1;
        check_root(&frontier, files::TREE_FILE, n)?;
    }
    let mut segments = Vec::with_capacity(listed.len());
    let mut removals = Vec::new();
    let mut torn_tail = None;
    let mut unhashed = Vec::new();
    let mut next = first_kept;
    let last_index = listed.len().saturating_sub(1);
    for (i, (name, path)) in listed.into_iter().enumerate() {
        let label = name.file_name();
        if name.first != next {
            let what = if name.first > next {
                format!(
                    "records {next}..{} are missing: the segment holding them was removed without a removal record",
                    name.first
                )
            } else {
                format!(
                    "the segment begins at record {} inside the previous one",
                    name.first
                )
            };
            return Err(broken(label, Some(next), what));
        }
        let mut lines = SegmentLines::open(&path).map_err(|e| AccessLogError::io(&path, e))?;
        let mut state = SegmentState {
            name,
            path: path.clone(),
            count: 0,
            last_at: None,
        };
        let mut valid_len = 0;
        while let Some(line) = lines
            .next_line()
            .map_err(|e| AccessLogError::io(&path, e))?
        {
            let record = AccessRecord::from_line(&line.text).map_err(|e| {
                broken(
                    &label,
                    Some(next),
                    format!("line {} cannot be read as a record: {e}", line.number),
                )
            })?;
            if record.n != next {
                let what = if record.n > next {
                    format!(
                        "line {} holds record {} where record {next} belongs: record {next} was removed",
                        line.number, record.n
                    )
                } else {
                    format!(
                        "line {} holds record {} again where record {next} belongs",
                        line.number, record.n
                    )
                };
                return Err(broken(&label, Some(next), what));
            }
            let leaf = leaf_of_line(&line.text);
            let group = if tree_ended {
                None
            } else {
                read_group(&mut tree, next).map_err(|e| AccessLogError::io(&tree_path, e))?
            };
            let computed = frontier.append(leaf)?;
            match group {
                Some(group) => {
                    if group[0] != leaf {
                        return Err(broken(
                            &label,
                            Some(next),
                            format!(
                                "line {} does not match the record's leaf hash in the tree: the record was changed",
                                line.number
                            ),
                        ));
                    }
                    if group != computed {
                        return Err(broken(
                            files::TREE_FILE,
                            Some(next),
                            "the stored hashes do not agree with one another: the tree file was altered",
                        ));
                    }
                    hashed += 1;
                }
                None => {
                    tree_ended = true;
                    unhashed.extend_from_slice(&computed);
                }
            }
            if record.kind == RecordKind::Removal
                && let Some(r) = record.removed
            {
                removals.push(r);
            }
            state.count += 1;
            state.last_at = Some(record.at_micros);
            valid_len = line.end;
            next += 1;
            check_root(&frontier, &label, next - 1)?;
        }
        if lines.torn {
            if i != last_index {
                return Err(broken(
                    &label,
                    Some(next),
                    "the segment ends in a cut record though later segments follow",
                ));
            }
            torn_tail = Some((path, valid_len));
        }
        segments.push(state);
    }
    if signed_size > next {
        let label = segments
            .last()
            .map_or_else(|| "(no segment)".to_string(), |s| s.name.file_name());
        return Err(broken(
            label,
            Some(next),
            format!(
                "the signed checkpoint covers {signed_size} records but the segments end at record {next}: records {next}..{signed_size} were removed"
            ),
        ));
    }
    let unfinished_removals = check_removals(dir, first_kept, &removals, &segments)?;
    Ok(Scanned {
        size: next,
        frontier,
        segments,
        checkpoint,
        hashed,
        torn_tail,
        removals,
        unhashed,
        unfinished_removals,
    })
}

/// The records before the first segment are exactly those named by
/// removal records, one after another from record 0, and each removal's
/// root is the tree's at the end of the segment it removed. A removal
/// naming a segment still on disk (a crash came between the record and
/// the file's removal) is returned, to be finished.
fn check_removals(
    dir: &Path,
    first_kept: u64,
    removals: &[RemovedSegment],
    segments: &[SegmentState],
) -> Result<Vec<PathBuf>, AccessLogError> {
    let mut sorted: Vec<&RemovedSegment> = removals.iter().collect();
    sorted.sort_by_key(|r| r.first);
    let mut covered = 0u64;
    let mut unfinished = Vec::new();
    for r in &sorted {
        if r.first >= first_kept {
            match segments
                .iter()
                .find(|s| s.name.first == r.first && s.count == r.count)
            {
                Some(s) => unfinished.push(s.path.clone()),
                None => {
                    return Err(broken(
                        &r.segment,
                        Some(r.first),
                        format!(
                            "a removal record names records {}..{}, which no segment holds as a whole",
                            r.first,
                            r.first + r.count
                        ),
                    ));
                }
            }
        }
        if r.first != covered {
            return Err(broken(
                &r.segment,
                Some(r.first),
                format!(
                    "the removal record names records {}..{} but the removed records before it end at {covered}",
                    r.first,
                    r.first + r.count
                ),
            ));
        }
        covered += r.count;
    }
    if covered < first_kept {
        return Err(broken(
            "removals",
            Some(covered.min(first_kept)),
            format!(
                "the first segment begins at record {first_kept} but removal records account for records 0..{covered}"
            ),
        ));
    }
    if sorted.is_empty() {
        return Ok(unfinished);
    }
    let tree_path = dir.join(files::TREE_FILE);
    let tree = TreeFile::open(&tree_path).map_err(|e| AccessLogError::io(&tree_path, e))?;
    for r in sorted {
        let root = hex::encode(tree_hash(r.first + r.count, &tree)?);
        if root != r.root {
            return Err(broken(
                &r.segment,
                Some(r.first),
                format!(
                    "the removal record's root does not match the tree of size {}",
                    r.first + r.count
                ),
            ));
        }
    }
    Ok(unfinished)
}
