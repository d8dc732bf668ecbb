//! Checks an access log the store keeps (see `store::access`) against its
//! tree and signed checkpoint, as `check` does the files: at every start
//! the latest checkpoint's root over the stored hashes and every record
//! after it ([`check`] with `full` false), and every record and hash for
//! `tongbao-hub audit-log verify` (`full` true). A log with records and
//! no signed checkpoint is refused. The first thing that fails is named:
//! the origin, the record and what.

use super::record::{AccessRecord, RecordKind, RemovedSegment, chain_start, leaf_of_line};
use super::{AccessLogError, Frontier};
use crate::store::access::AccessLogRead;
use std::collections::VecDeque;
use tongbao_proto::Hash;
use tongbao_proto::checkpoint::{Checkpoint, NoteVerifier, open_checkpoint};
use tongbao_proto::merkle::{HashReader, MerkleError, stored_hash_count, tree_hash};

/// Records or hashes read from the store at a time.
pub const CHUNK: usize = 2048;

/// The log as checked.
pub struct StoredScan {
    /// Records in the log, removed ones included: the next record's number.
    pub size: u64,
    pub frontier: Frontier,
    /// The latest signed checkpoint and its note.
    pub checkpoint: Option<(Checkpoint, String)>,
    /// Records removed under retention (before the first one kept).
    pub removed: u64,
}

/// Where a fault is, as errors name it.
pub fn place(origin: &str) -> String {
    format!("{origin} (in the store)")
}

fn broken(origin: &str, record: Option<u64>, what: impl Into<String>) -> AccessLogError {
    AccessLogError::Broken {
        segment: place(origin),
        record,
        what: what.into(),
    }
}

/// The stored hashes of one origin, as the Merkle rules read them.
pub struct StoredTree<'a> {
    pub db: &'a dyn AccessLogRead,
    pub origin: &'a str,
}

impl HashReader for StoredTree<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MerkleError> {
        self.db
            .access_hashes(self.origin, indexes)
            .map_err(|e| MerkleError::Reader(e.to_string()))
    }
}

/// Reads and checks the latest signed checkpoint of `origin`, if any.
pub fn read_checkpoint(
    db: &dyn AccessLogRead,
    verifier: &NoteVerifier,
    origin: &str,
) -> Result<Option<(Checkpoint, String)>, AccessLogError> {
    let Some(note) = db.access_checkpoint(origin)? else {
        return Ok(None);
    };
    let (checkpoint, _) = open_checkpoint(&note, verifier, &[]).map_err(|e| {
        broken(
            origin,
            None,
            format!("the signed checkpoint does not verify under the hub key: {e}"),
        )
    })?;
    if checkpoint.origin != origin {
        return Err(broken(
            origin,
            None,
            format!(
                "the checkpoint stored for it is of {:?}: the checkpoint was altered",
                tongbao_proto::echo::shown(&checkpoint.origin)
            ),
        ));
    }
    Ok(Some((checkpoint, note)))
}

/// The stored hashes from one index on, read a chunk at a time.
struct HashStream<'a> {
    tree: StoredTree<'a>,
    next: u64,
    buf: VecDeque<(u64, Hash)>,
}

impl HashStream<'_> {
    /// The stored hashes of record `n` (the next record's), or None when
    /// the store holds none from here.
    fn group(&mut self, n: u64) -> Result<Option<Vec<Hash>>, AccessLogError> {
        let want = 1 + n.trailing_ones() as usize;
        let mut group = Vec::with_capacity(want);
        while group.len() < want {
            if self.buf.is_empty() {
                let read = self
                    .tree
                    .db
                    .access_hash_range(self.tree.origin, self.next, CHUNK)?;
                if read.is_empty() {
                    return Ok(None);
                }
                self.buf.extend(read);
            }
            let Some((i, h)) = self.buf.pop_front() else {
                return Ok(None);
            };
            if i != self.next {
                return Err(broken(
                    self.tree.origin,
                    Some(n),
                    format!("stored hash {} is missing: the tree was altered", self.next),
                ));
            }
            self.next += 1;
            group.push(h);
        }
        Ok(Some(group))
    }
}

/// Checks the log of `origin` (see the module doc).
pub fn check(
    db: &dyn AccessLogRead,
    origin: &str,
    verifier: &NoteVerifier,
    full: bool,
) -> Result<StoredScan, AccessLogError> {
    let checkpoint = read_checkpoint(db, verifier, origin)?;
    let extent = db.access_extent(origin)?;
    let next = extent.next;
    let first_kept = extent.first_kept.unwrap_or(next);
    let whole = stored_hash_count(next);
    if extent.hashes > whole {
        return Err(broken(
            origin,
            Some(next),
            format!(
                "the tree holds {} stored hashes, more than the {whole} of the {next} records stored: the last records were removed",
                extent.hashes
            ),
        ));
    }
    if extent.hashes < whole {
        return Err(broken(
            origin,
            Some(next.saturating_sub(1)),
            format!(
                "the tree holds {} stored hashes where the {next} records stored need {whole}: the tree was altered",
                extent.hashes
            ),
        ));
    }
    let signed = checkpoint.as_ref().map_or(0, |(c, _)| c.size);
    if signed > next {
        return Err(broken(
            origin,
            Some(next),
            format!(
                "the signed checkpoint covers {signed} records but the log ends at record {next}: records {next}..{signed} were removed"
            ),
        ));
    }
    // An origin's first records commit with a checkpoint (`stored`): a
    // log with records and none had it removed, and would otherwise be
    // anyone's to rewrite who can write the database.
    if checkpoint.is_none() && next > 0 {
        return Err(broken(
            origin,
            None,
            format!(
                "the log holds {next} records but no signed checkpoint: removed? \
                 (a log's first records are committed with one)"
            ),
        ));
    }
    let tree = StoredTree { db, origin };
    let (frontier, start) = match &checkpoint {
        Some((c, _)) if !full && c.size > first_kept => {
            let altered = |what: String| broken(origin, Some(c.size - 1), what);
            let frontier = Frontier::from_tree(c.size, &tree).map_err(|e| {
                altered(format!(
                    "the tree lacks hashes of records the signed checkpoint of size {} covers: {e}",
                    c.size
                ))
            })?;
            if frontier.root()? != c.root {
                return Err(altered(format!(
                    "the stored hashes do not match the signed checkpoint of size {}: the tree was altered",
                    c.size
                )));
            }
            (frontier, c.size)
        }
        _ => (Frontier::default(), 0),
    };
    let mut pass = Pass {
        origin,
        checkpoint: checkpoint.as_ref().map(|(c, _)| c),
        frontier,
        hashes: HashStream {
            tree: StoredTree { db, origin },
            next: stored_hash_count(start),
            buf: VecDeque::new(),
        },
        removals: Vec::new(),
    };
    // Records removed under retention: their hashes alone remain.
    for n in start..first_kept {
        let group = pass.hashes.group(n)?.ok_or_else(|| {
            broken(
                origin,
                Some(n),
                format!("record {n} was removed under retention but the tree lacks its hashes"),
            )
        })?;
        if pass.frontier.append(group[0])? != group {
            return Err(broken(
                origin,
                Some(n),
                "the stored hashes do not agree with one another: the tree was altered",
            ));
        }
        pass.check_root(n)?;
    }
    let mut expected = start.max(first_kept);
    while expected < next {
        // Records a running writer appended since the extent was taken
        // are left for a later check.
        let rows: Vec<_> = db
            .access_records(origin, expected, CHUNK)?
            .into_iter()
            .take_while(|r| r.n < next)
            .collect();
        if rows.is_empty() {
            return Err(broken(
                origin,
                Some(expected),
                format!("records {expected}..{next} are missing"),
            ));
        }
        for row in rows {
            if row.n != expected {
                return Err(broken(
                    origin,
                    Some(expected),
                    format!(
                        "the log goes on at record {} where record {expected} belongs: record {expected} was removed",
                        row.n
                    ),
                ));
            }
            pass.record(row.n, &row.line)?;
            expected += 1;
        }
    }
    if full {
        check_removals(&tree, origin, first_kept, &pass.removals)?;
    }
    Ok(StoredScan {
        size: next,
        frontier: pass.frontier,
        checkpoint,
        removed: first_kept,
    })
}

struct Pass<'a> {
    origin: &'a str,
    checkpoint: Option<&'a Checkpoint>,
    frontier: Frontier,
    hashes: HashStream<'a>,
    removals: Vec<RemovedSegment>,
}

impl Pass<'_> {
    /// At the checkpoint's size, the tree's root must be the signed one.
    fn check_root(&self, n: u64) -> Result<(), AccessLogError> {
        if let Some(c) = self.checkpoint
            && c.size == self.frontier.size()
            && self.frontier.root()? != c.root
        {
            return Err(broken(
                self.origin,
                Some(n),
                format!(
                    "the log up to record {n} does not match the signed checkpoint of size {}: a record up to it was changed or removed",
                    c.size
                ),
            ));
        }
        Ok(())
    }

    /// Checks the stored line of record `n`: a record numbered `n`, its
    /// leaf hash in the tree, the hashes it completes, the signed root.
    fn record(&mut self, n: u64, line: &[u8]) -> Result<(), AccessLogError> {
        let origin = self.origin;
        let text = std::str::from_utf8(line)
            .map_err(|_| broken(origin, Some(n), "the stored record is not UTF-8"))?;
        let record = AccessRecord::from_line(text).map_err(|e| {
            broken(
                origin,
                Some(n),
                format!("the stored record cannot be read as a record: {e}"),
            )
        })?;
        if record.n != n {
            return Err(broken(
                origin,
                Some(n),
                format!(
                    "the stored line holds record {} where record {n} belongs",
                    record.n
                ),
            ));
        }
        let leaf = leaf_of_line(text);
        let group = self
            .hashes
            .group(n)?
            .ok_or_else(|| broken(origin, Some(n), "the tree lacks the record's hashes"))?;
        if group[0] != leaf {
            return Err(broken(
                origin,
                Some(n),
                "the record does not match its leaf hash in the tree: the record was changed",
            ));
        }
        if self.frontier.append(leaf)? != group {
            return Err(broken(
                origin,
                Some(n),
                "the stored hashes do not agree with one another: the tree was altered",
            ));
        }
        if record.kind == RecordKind::Removal
            && let Some(r) = record.removed
        {
            self.removals.push(r);
        }
        self.check_root(n)
    }
}

/// The records before the first one kept are accounted for by the removal
/// records kept, one after another up to it, each removal's root the
/// tree's at its end (as the files' check). The chain starts where the
/// first removal record kept starts: retention removes removal records
/// too once they are old, and the records before are covered by that
/// removal's root, over the tree from record 0 to its end.
fn check_removals(
    tree: &StoredTree<'_>,
    origin: &str,
    first_kept: u64,
    removals: &[RemovedSegment],
) -> Result<(), AccessLogError> {
    let start = chain_start(removals.first(), first_kept);
    let mut covered = start;
    if start > 0 && start >= first_kept {
        return Err(broken(
            origin,
            Some(0),
            format!(
                "records 0..{first_kept} were removed but no removal record kept names any of them"
            ),
        ));
    }
    for r in removals {
        if r.first != covered {
            return Err(broken(
                origin,
                Some(r.first),
                format!(
                    "a removal record names records {}..{} but the removed records before it end at {covered}",
                    r.first,
                    r.first + r.count
                ),
            ));
        }
        covered += r.count;
        let root = hex::encode(tree_hash(covered, tree)?);
        if root != r.root {
            return Err(broken(
                origin,
                Some(r.first),
                format!("the removal record's root does not match the tree of size {covered}"),
            ));
        }
    }
    if covered != first_kept {
        return Err(broken(
            origin,
            Some(covered.min(first_kept)),
            format!(
                "the first record kept is {first_kept} but removal records account for records {start}..{covered}"
            ),
        ));
    }
    Ok(())
}
