//! The access log's files as earlier versions kept them, in
//! `<data dir>/access-log/`: segments of records, the tree's stored
//! hashes, and the latest signed checkpoint. This version reads them only
//! (`check`, `export`), to move them into the store (`moved`) and for
//! `audit-log` on a data directory not yet started on this version.
//!
//! - `segment-<first record, 20 digits>-<YYYYMMDD>.jsonl`: one record per
//!   line; a segment holds consecutive records, and the name sorts in
//!   record order.
//! - `tree.hashes`: every stored hash of the RFC 6962 tree over all records
//!   ever written, removed ones included, 32 bytes each in the
//!   stored-hash-index order of `tongbao_proto::merkle`.
//! - `checkpoint`: the latest signed checkpoint (a C2SP signed note).
//!
//! Every file is created 0600 in a 0700 directory: records name parties
//! and what they asked.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use tongbao_proto::merkle::{HashReader, MerkleError};
use tongbao_proto::{HASH_LEN, Hash};

/// The access log's directory inside the data directory.
pub const DIR: &str = "access-log";
pub const TREE_FILE: &str = "tree.hashes";
pub const CHECKPOINT_FILE: &str = "checkpoint";
const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".jsonl";

/// A segment file, by what its name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentName {
    pub first: u64,
    /// UTC day of its first record, `YYYYMMDD`.
    pub day: String,
}

impl SegmentName {
    pub fn file_name(&self) -> String {
        format!(
            "{SEGMENT_PREFIX}{:020}-{}{SEGMENT_SUFFIX}",
            self.first, self.day
        )
    }

    pub fn parse(name: &str) -> Option<Self> {
        let rest = name
            .strip_prefix(SEGMENT_PREFIX)?
            .strip_suffix(SEGMENT_SUFFIX)?;
        let (first, day) = rest.split_once('-')?;
        if first.len() != 20 || day.len() != 8 || !day.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            first: first.parse().ok()?,
            day: day.to_string(),
        })
    }
}

/// The UTC day (`YYYYMMDD`) of a time in µs.
pub fn day_of(micros: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(micros.div_euclid(1_000_000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day())
}

/// The segments of `dir`, in record order. Other files are ignored.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(SegmentName, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str().and_then(SegmentName::parse) {
            out.push((name, entry.path()));
        }
    }
    out.sort_by_key(|(n, _)| n.first);
    Ok(out)
}

/// One line of a segment as read.
pub struct Line {
    /// 1-based line number in its segment.
    pub number: u64,
    pub text: String,
    /// Byte offset just after its newline.
    pub end: u64,
}

/// Reads a segment's whole lines; a last line without its newline (a write
/// cut short) is reported in `torn` and not returned.
pub struct SegmentLines {
    reader: BufReader<File>,
    number: u64,
    offset: u64,
    pub torn: bool,
}

impl SegmentLines {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            reader: BufReader::with_capacity(1 << 16, File::open(path)?),
            number: 0,
            offset: 0,
            torn: false,
        })
    }

    /// Whole lines read so far.
    pub fn read(&self) -> u64 {
        self.number
    }

    pub fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        let mut buf = Vec::new();
        let read = self.reader.read_until(b'\n', &mut buf)?;
        if read == 0 {
            return Ok(None);
        }
        if buf.last() != Some(&b'\n') {
            self.torn = true;
            return Ok(None);
        }
        buf.pop();
        self.number += 1;
        self.offset += read as u64;
        let text = String::from_utf8(buf)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))?;
        Ok(Some(Line {
            number: self.number,
            text,
            end: self.offset,
        }))
    }
}

/// Reads the tree's stored hashes from `tree.hashes` by index.
pub struct TreeFile {
    file: File,
    /// Hashes in the file when opened (later ones are not read).
    pub len: u64,
}

impl TreeFile {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len() / HASH_LEN as u64;
        Ok(Self { file, len })
    }
}

impl HashReader for TreeFile {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MerkleError> {
        use std::os::unix::fs::FileExt;
        indexes
            .iter()
            .map(|&i| {
                if i >= self.len {
                    return Err(MerkleError::Reader(format!(
                        "{TREE_FILE} holds {} hashes; hash {i} is missing",
                        self.len
                    )));
                }
                let mut h = [0u8; HASH_LEN];
                self.file
                    .read_exact_at(&mut h, i * HASH_LEN as u64)
                    .map_err(|e| MerkleError::Reader(format!("{TREE_FILE}: {e}")))?;
                Ok(h)
            })
            .collect()
    }
}

/// Reads `tree.hashes` front to back, one hash at a time.
pub struct TreeStream {
    reader: BufReader<File>,
    /// Hashes left to read.
    left: u64,
}

impl TreeStream {
    /// From the start; a missing file reads as empty.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    reader: BufReader::new(File::open("/dev/null")?),
                    left: 0,
                });
            }
            Err(e) => return Err(e),
        };
        let left = file.metadata()?.len() / HASH_LEN as u64;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        reader.seek(SeekFrom::Start(0))?;
        Ok(Self { reader, left })
    }

    /// From hash `skip` on (the hashes before are not read).
    pub fn open_at(path: &Path, skip: u64) -> std::io::Result<Self> {
        let mut stream = Self::open(path)?;
        let skip = skip.min(stream.left);
        stream
            .reader
            .seek(SeekFrom::Start(skip * HASH_LEN as u64))?;
        stream.left -= skip;
        Ok(stream)
    }

    /// Hashes in the file from here on.
    pub fn left(&self) -> u64 {
        self.left
    }

    pub fn next_hash(&mut self) -> std::io::Result<Option<Hash>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut h = [0u8; HASH_LEN];
        self.reader.read_exact(&mut h)?;
        self.left -= 1;
        Ok(Some(h))
    }
}

/// Makes the names in `dir` durable (a created or removed file).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_and_parse() {
        let a = SegmentName {
            first: 9,
            day: "20261206".into(),
        };
        let b = SegmentName {
            first: 10,
            day: "20261205".into(),
        };
        assert!(a.file_name() < b.file_name());
        assert_eq!(SegmentName::parse(&a.file_name()), Some(a));
        for bad in [
            "segment-9-20261206.jsonl",
            "segment-00000000000000000009-2026126.jsonl",
            "tree.hashes",
            "segment-0000000000000000000x-20261206.jsonl",
        ] {
            assert_eq!(SegmentName::parse(bad), None, "{bad}");
        }
        assert_eq!(day_of(0), "19700101");
        assert_eq!(day_of(1_765_000_000_000_000), "20251206");
    }

    #[test]
    fn a_torn_last_line_is_not_read() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("s");
        std::fs::write(&p, "{\"a\":1}\n{\"b\":2}\n{\"c\"")?;
        let mut lines = SegmentLines::open(&p)?;
        let mut seen = Vec::new();
        while let Some(l) = lines.next_line()? {
            seen.push((l.number, l.text, l.end));
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], (2, "{\"b\":2}".to_string(), 16));
        assert!(lines.torn);
        Ok(())
    }
}
