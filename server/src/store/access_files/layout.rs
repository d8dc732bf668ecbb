//! Where an origin's access log lies in the store's directory, and the
//! small files beside its records: names, listing, atomic replacement.
//!
//! `<store dir>/access-logs/<origin, hex>/` holds `origin` (the origin's
//! text), `records-<first record, 20 digits>` files of frames,
//! `tree.hashes` (32 bytes a stored hash, by stored-hash index),
//! `checkpoint` (the latest signed note), `kept-from` (the first record
//! retention keeps) and, during an origin's first commit only,
//! `first-commit`. Directories are 0700 and files 0600: records name
//! parties and what they asked.

use crate::store::StoreError;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use tongbao_proto::merkle::{HashReader, MerkleError};
use tongbao_proto::{HASH_LEN, Hash};

/// The access logs' directory inside the store's. Not `access-log`: that
/// is where earlier versions kept their files, moved in from there.
pub const ROOT: &str = "access-logs";
pub const ORIGIN_FILE: &str = "origin";
pub const TREE_FILE: &str = "tree.hashes";
pub const CHECKPOINT_FILE: &str = "checkpoint";
pub const KEPT_FROM_FILE: &str = "kept-from";
/// Present while an origin's first records are committed without their
/// checkpoint yet: a crash then leaves records nobody was answered for.
pub const FIRST_COMMIT_FILE: &str = "first-commit";
const RECORDS_PREFIX: &str = "records-";

/// The longest origin kept: its hex name must fit a file name.
pub const MAX_ORIGIN: usize = 120;

/// The directory of `origin`'s log under `root`.
pub fn origin_dir(root: &Path, origin: &str) -> Result<PathBuf, StoreError> {
    if origin.is_empty() || origin.len() > MAX_ORIGIN {
        return Err(StoreError::Database(format!(
            "an access log origin must be 1 to {MAX_ORIGIN} bytes; {:?} is {}",
            tongbao_proto::echo::shown(origin),
            origin.len()
        )));
    }
    Ok(root.join(hex::encode(origin.as_bytes())))
}

pub fn records_name(first: u64) -> String {
    format!("{RECORDS_PREFIX}{first:020}")
}

/// Where the records a crash's cut took off from `record` on are kept
/// aside (see `OriginLog::open`): read by no reader, kept for audit.
pub fn cut_off_name(record: u64) -> String {
    format!("cut-off-{record:020}")
}

/// Record numbers stay below this (a tree's size does): a file named
/// past it is no record file, a `kept-from` past it is refused, and
/// counting on from either cannot overflow.
const MOST_RECORDS: u64 = 1 << 62;

fn parse_records_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(RECORDS_PREFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
        .filter(|first| *first < MOST_RECORDS)
}

/// The record files of `dir` (first record, path), in record order.
pub fn record_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_records_name) {
            out.push((first, entry.path()));
        }
    }
    out.sort_by_key(|(first, _)| *first);
    Ok(out)
}

/// A small file's text, None when it is not there.
pub fn read_text(path: &Path) -> Result<Option<String>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

/// What `kept-from` holds: the first record retention keeps (0 when it
/// removed none) and, while a removal commits, the first it will keep
/// once the records reach the removal's end. A removal writes it before
/// its records, whose sync is its commit point: a crash before them
/// leaves the removal undone, one after it done, never one of the two
/// (the removal record without its records removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeptFrom {
    pub kept: u64,
    /// (first kept, once the records reach this number).
    pub pending: Option<(u64, u64)>,
}

impl KeptFrom {
    /// The first record kept where the records end at `next`.
    pub fn at(&self, next: u64) -> u64 {
        match self.pending {
            Some((kept, once)) if next >= once => kept,
            _ => self.kept,
        }
    }

    /// The file's text: `K`, or `K K2@N` while a removal commits.
    pub fn text(&self) -> String {
        match self.pending {
            None => self.kept.to_string(),
            Some((kept, once)) => format!("{} {kept}@{once}", self.kept),
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let number = |w: &str| w.parse().ok().filter(|n| *n < MOST_RECORDS);
        let mut words = text.split_ascii_whitespace();
        let kept = number(words.next()?)?;
        let pending = match words.next() {
            None => None,
            Some(w) => {
                let (k, n) = w.split_once('@')?;
                Some((number(k)?, number(n)?))
            }
        };
        words.next().is_none().then_some(Self { kept, pending })
    }
}

/// What `kept-from` holds (nothing kept back when it is not there).
pub fn read_kept_from(dir: &Path) -> Result<KeptFrom, StoreError> {
    let path = dir.join(KEPT_FROM_FILE);
    match read_text(&path)? {
        None => Ok(KeptFrom {
            kept: 0,
            pending: None,
        }),
        Some(t) => KeptFrom::parse(&t).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "{} holds {:?}, not a record number (or one with a removal's `kept@end`)",
                path.display(),
                tongbao_proto::echo::shown(t.trim())
            ))
        }),
    }
}

/// The size a signed checkpoint note names (its signature is the access
/// log's to check: the store only keeps records it covers).
pub fn signed_size(note: &str) -> Option<u64> {
    let parsed = tongbao_proto::checkpoint::parse_note(note).ok()?;
    tongbao_proto::checkpoint::Checkpoint::parse_body(&parsed.text)
        .ok()
        .map(|c| c.size)
}

pub fn io(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("access log {}: {e}", path.display()))
}

/// Creates `dir` 0700 (and its parents), each entry durable.
pub fn create_dir(dir: &Path) -> Result<(), StoreError> {
    crate::store::create_dir_durably(dir)
}

/// Opens a file for appending, created 0600.
pub fn open_append(path: &Path) -> Result<File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))
}

/// Replaces `path` with `contents` atomically (a temporary file beside
/// it, renamed over it), durably when `fsync`.
pub fn replace(path: &Path, contents: &[u8], fsync: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        if fsync {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| io(path, e))?;
    if fsync {
        sync_dir(parent(path))?;
    }
    Ok(())
}

pub fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(dir, e))
}

/// `tree.hashes` read by index (pread), as the Merkle rules read hashes.
pub struct TreeFile {
    file: Option<File>,
    path: PathBuf,
    /// Hashes readable: those in the file when opened, at most.
    pub len: u64,
}

impl TreeFile {
    /// A missing file holds no hash.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = match File::open(path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(path, e)),
        };
        let len = match &file {
            Some(f) => f.metadata().map_err(|e| io(path, e))?.len() / HASH_LEN as u64,
            None => 0,
        };
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len,
        })
    }

    /// Hashes `from..from + count` (all below `len`).
    pub fn read_run(&self, from: u64, count: u64) -> Result<Vec<Hash>, StoreError> {
        use std::os::unix::fs::FileExt;
        let Some(file) = &self.file else {
            return Ok(Vec::new());
        };
        let count = count.min(self.len.saturating_sub(from));
        let mut buf = vec![0u8; count as usize * HASH_LEN];
        file.read_exact_at(&mut buf, from * HASH_LEN as u64)
            .map_err(|e| io(&self.path, e))?;
        Ok(buf
            .chunks_exact(HASH_LEN)
            .map(|c| {
                let mut h = [0u8; HASH_LEN];
                h.copy_from_slice(c);
                h
            })
            .collect())
    }
}

impl HashReader for TreeFile {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MerkleError> {
        indexes
            .iter()
            .map(|&i| {
                if i >= self.len {
                    return Err(MerkleError::Reader(format!(
                        "{} holds {} hashes; hash {i} is missing",
                        self.path.display(),
                        self.len
                    )));
                }
                self.read_run(i, 1)
                    .map_err(|e| MerkleError::Reader(e.to_string()))?
                    .pop()
                    .ok_or_else(|| MerkleError::Reader(format!("hash {i} is missing")))
            })
            .collect()
    }
}
