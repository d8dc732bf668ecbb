//! Checks the access log files of an earlier version (`files`) against
//! their tree and signed checkpoint ([`scan`], which only reads): for
//! `tongbao-hub audit-log verify` of a data directory not yet started on
//! this version, and before `moved` moves them into the store.
//!
//! One pass, front to back: every record is read, numbered, hashed and
//! compared with its leaf hash in `tree.hashes`; every stored hash is
//! recomputed from the leaves; the root at the checkpoint's size must be
//! the signed one. Records removed under retention are covered by their
//! hashes (kept in `tree.hashes`) and by removal records naming them. The
//! first thing that fails is named: segment, record and what.

use super::files::{self, SegmentLines, SegmentName, TreeFile, TreeStream};
use super::record::{AccessRecord, RecordKind, RemovedSegment, chain_start, leaf_of_line};
use super::{AccessLogError, Frontier};
use std::path::{Path, PathBuf};
use tongbao_proto::Hash;
use tongbao_proto::checkpoint::{Checkpoint, NoteError, NoteVerifier, open_checkpoint};
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
/// path no channel can have (unit ids start with a letter). Each replica
/// of a hub keeps a log of its own, so its origin also names the replica:
/// two replicas never sign different trees under one origin.
pub fn origin(log_name: &str, replica: Option<&str>) -> String {
    match replica {
        None => format!("{log_name}/{ORIGIN_PATH}"),
        Some(r) => format!("{log_name}/{ORIGIN_PATH}/{r}"),
    }
}

/// The path of the access log in its origin, after the log name.
const ORIGIN_PATH: &str = ".access-log";

/// Whose access log `origin` is under `log_name`: `Some(None)` for a hub's
/// own, `Some(Some(replica))` for a replica's, None when it is none.
pub fn origin_replica<'a>(log_name: &str, origin: &'a str) -> Option<Option<&'a str>> {
    let rest = origin
        .strip_prefix(log_name)?
        .strip_prefix('/')?
        .strip_prefix(ORIGIN_PATH)?;
    match rest.strip_prefix('/') {
        None if rest.is_empty() => Some(None),
        Some(r) if valid_replica_name(r) => Some(Some(r)),
        _ => None,
    }
}

/// The longest replica name.
pub const MAX_REPLICA_NAME: usize = 32;

/// A replica's name: 1 to [`MAX_REPLICA_NAME`] of `a-z`, `0-9` and `-`.
pub fn valid_replica_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_REPLICA_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The origin of the signed checkpoint stored in `dir`, unchecked (None
/// when there is none): which log the directory holds, for a verifier to
/// check that log under the hub key.
pub fn stored_origin(dir: &Path) -> Result<Option<String>, AccessLogError> {
    let path = dir.join(files::CHECKPOINT_FILE);
    let note = match std::fs::read_to_string(&path) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AccessLogError::io(&path, e)),
    };
    let parsed = tongbao_proto::checkpoint::parse_note(&note)?;
    let checkpoint = Checkpoint::parse_body(&parsed.text).map_err(NoteError::from)?;
    Ok(Some(checkpoint.origin))
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
                "the checkpoint is for {:?}, not the access log {origin:?} (a hub made a replica, or renamed, starts a log of its own: move the former access-log directory aside and keep it for audit)",
                tongbao_proto::echo::shown(&checkpoint.origin)
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

/// Checks the access log in `dir` record by record (see the module doc):
/// `tongbao-hub audit-log verify`.
pub fn scan(dir: &Path, verifier: &NoteVerifier, origin: &str) -> Result<Scanned, AccessLogError> {
    let checkpoint = read_checkpoint(dir, verifier, origin)?;
    let listed = files::list_segments(dir).map_err(|e| AccessLogError::io(dir, e))?;
    let tree_path = dir.join(files::TREE_FILE);
    let tree = TreeStream::open(&tree_path).map_err(|e| AccessLogError::io(&tree_path, e))?;
    let mut pass = Pass::new(tree_path, tree, checkpoint, Frontier::default());
    // Records removed under retention: their hashes alone remain.
    let first_kept = listed.first().map_or(0, |(n, _)| n.first);
    for n in 0..first_kept {
        let group = read_group(&mut pass.tree, n)
            .map_err(|e| AccessLogError::io(&pass.tree_path, e))?
            .ok_or_else(|| {
                broken(
                    files::TREE_FILE,
                    Some(n),
                    format!("record {n} was removed under retention but the tree lacks its hashes"),
                )
            })?;
        let computed = pass.frontier.append(group[0])?;
        if computed != group {
            return Err(broken(
                files::TREE_FILE,
                Some(n),
                "the stored hashes do not agree with one another: the tree file was altered",
            ));
        }
        pass.hashed += 1;
        pass.check_root(files::TREE_FILE, n)?;
    }
    pass.next = first_kept;
    pass.segments(listed, 0)?;
    pass.finish(dir, first_kept, true)
}

/// The state of one front-to-back pass over the segments.
struct Pass {
    tree_path: PathBuf,
    tree: TreeStream,
    tree_ended: bool,
    /// The latest signed checkpoint and its note.
    checkpoint: Option<(Checkpoint, String)>,
    frontier: Frontier,
    hashed: u64,
    next: u64,
    segments: Vec<SegmentState>,
    removals: Vec<RemovedSegment>,
    torn_tail: Option<(PathBuf, u64)>,
    unhashed: Vec<Hash>,
}

impl Pass {
    fn new(
        tree_path: PathBuf,
        tree: TreeStream,
        checkpoint: Option<(Checkpoint, String)>,
        frontier: Frontier,
    ) -> Self {
        Self {
            tree_path,
            tree,
            tree_ended: false,
            checkpoint,
            frontier,
            hashed: 0,
            next: 0,
            segments: Vec::new(),
            removals: Vec::new(),
            torn_tail: None,
            unhashed: Vec::new(),
        }
    }

    /// At the checkpoint's size, the tree's root must be the signed one.
    fn check_root(&self, segment: &str, n: u64) -> Result<(), AccessLogError> {
        if let Some((c, _)) = &self.checkpoint
            && c.size == self.frontier.size()
            && self.frontier.root()? != c.root
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
    }

    /// Checks `listed` in order from record `self.next`; records before
    /// `covered` are only counted (their hashes are already in the tree).
    fn segments(
        &mut self,
        listed: Vec<(SegmentName, PathBuf)>,
        covered: u64,
    ) -> Result<(), AccessLogError> {
        let last_index = listed.len().saturating_sub(1);
        for (i, (name, path)) in listed.into_iter().enumerate() {
            let label = name.file_name();
            if name.first != self.next {
                let what = if name.first > self.next {
                    format!(
                        "records {}..{} are missing: the segment holding them was removed without a removal record",
                        self.next, name.first
                    )
                } else {
                    format!(
                        "the segment begins at record {} inside the previous one",
                        name.first
                    )
                };
                return Err(broken(label, Some(self.next), what));
            }
            let mut lines = SegmentLines::open(&path).map_err(|e| AccessLogError::io(&path, e))?;
            let mut state = SegmentState {
                name,
                path: path.clone(),
                count: 0,
                last_at: None,
            };
            let mut valid_len = 0;
            let mut last_counted = None;
            while let Some(line) = lines
                .next_line()
                .map_err(|e| AccessLogError::io(&path, e))?
            {
                if self.next < covered {
                    last_counted = Some(line.text);
                } else {
                    let record = self.record(&label, &line)?;
                    state.last_at = Some(record.at_micros);
                }
                state.count += 1;
                valid_len = line.end;
                self.next += 1;
            }
            if state.last_at.is_none()
                && let Some(text) = last_counted
            {
                let record = AccessRecord::from_line(&text).map_err(|e| {
                    broken(
                        &label,
                        Some(self.next - 1),
                        format!("its last line cannot be read as a record: {e}"),
                    )
                })?;
                state.last_at = Some(record.at_micros);
            }
            if lines.torn {
                if i != last_index {
                    return Err(broken(
                        &label,
                        Some(self.next),
                        "the segment ends in a cut record though later segments follow",
                    ));
                }
                self.torn_tail = Some((path, valid_len));
            }
            self.segments.push(state);
        }
        Ok(())
    }

    /// Checks one line as record `self.next`: its number, its leaf hash in
    /// the tree, the stored hashes it completes, the root at the checkpoint.
    fn record(&mut self, label: &str, line: &files::Line) -> Result<AccessRecord, AccessLogError> {
        let next = self.next;
        let record = AccessRecord::from_line(&line.text).map_err(|e| {
            broken(
                label,
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
            return Err(broken(label, Some(next), what));
        }
        let leaf = leaf_of_line(&line.text);
        let group = if self.tree_ended {
            None
        } else {
            read_group(&mut self.tree, next).map_err(|e| AccessLogError::io(&self.tree_path, e))?
        };
        let computed = self.frontier.append(leaf)?;
        match group {
            Some(group) => {
                if group[0] != leaf {
                    return Err(broken(
                        label,
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
                self.hashed += 1;
            }
            None => {
                self.tree_ended = true;
                self.unhashed.extend_from_slice(&computed);
            }
        }
        if record.kind == RecordKind::Removal
            && let Some(r) = &record.removed
        {
            self.removals.push(r.clone());
        }
        self.check_root(label, next)?;
        Ok(record)
    }

    /// The checks after the last segment; the pass as [`Scanned`].
    /// `all_removals`: every removal record was read (not only the tail's).
    fn finish(
        self,
        dir: &Path,
        first_kept: u64,
        all_removals: bool,
    ) -> Result<Scanned, AccessLogError> {
        let signed_size = self.checkpoint.as_ref().map_or(0, |(c, _)| c.size);
        if signed_size > self.next {
            let label = self
                .segments
                .last()
                .map_or_else(|| "(no segment)".to_string(), |s| s.name.file_name());
            return Err(broken(
                label,
                Some(self.next),
                format!(
                    "the signed checkpoint covers {signed_size} records but the segments end at record {}: records {}..{signed_size} were removed",
                    self.next, self.next
                ),
            ));
        }
        let unfinished_removals = check_removals(
            dir,
            first_kept,
            &self.removals,
            &self.segments,
            all_removals,
        )?;
        Ok(Scanned {
            size: self.next,
            frontier: self.frontier,
            segments: self.segments,
            checkpoint: self.checkpoint,
            hashed: self.hashed,
            torn_tail: self.torn_tail,
            removals: self.removals,
            unhashed: self.unhashed,
            unfinished_removals,
        })
    }
}

/// The records before the first segment are exactly those named by the
/// removal records kept, one after another from where the first of them
/// starts (older ones were removed under retention in turn; its root
/// covers the tree from record 0), and each removal's
/// root is the tree's at the end of the segment it removed. A removal
/// naming a segment still on disk (a crash came between the record and
/// the file's removal) is returned, to be finished.
///
/// With `all_read` false (a start: only the removal records after the
/// checkpoint were read) the removals before are not accounted for here.
fn check_removals(
    dir: &Path,
    first_kept: u64,
    removals: &[RemovedSegment],
    segments: &[SegmentState],
    all_read: bool,
) -> Result<Vec<PathBuf>, AccessLogError> {
    let mut sorted: Vec<&RemovedSegment> = removals.iter().collect();
    sorted.sort_by_key(|r| r.first);
    // Retention removes old removal records too: the chain starts at the
    // first one kept, whose root covers the tree before it.
    let start = chain_start(sorted.first().copied(), first_kept);
    if all_read && start > 0 && start >= first_kept {
        return Err(broken(
            "removals",
            Some(0),
            format!(
                "records 0..{first_kept} were removed but no removal record kept names any of them"
            ),
        ));
    }
    let mut covered = start;
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
        if all_read && r.first != covered {
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
    if all_read && covered < first_kept {
        return Err(broken(
            "removals",
            Some(covered.min(first_kept)),
            format!(
                "the first segment begins at record {first_kept} but removal records account for records {start}..{covered}"
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
