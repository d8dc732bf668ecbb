//! Entry segments: the entries' bytes, append-only, beside sled.
//!
//! sled rewrites a leaf node whenever it consolidates it and keeps the old
//! versions until its segment cleaner finds a segment half dead, so
//! entries kept in sled took two to three times their size on disk. An
//! entry never changes once written, so its record lives here instead, in
//! files that are only appended to, and sled holds where it is: the
//! segment, the offset and the length (a few bytes). The Merkle hashes an
//! entry adds to its channel's tree follow its record in the same write,
//! so they need no key of their own either.
//!
//! The background flush appends the entries of the commits it moves into
//! sled and syncs the segment before sled names their places; a crash in
//! between leaves bytes nobody names, which the journal replay appends
//! again. Nothing here judges what an entry says: the leaf hash its
//! channel's Merkle tree holds does (the start-up tail check, the
//! background check and `verify-data` read entries through here).

use super::{StoreError, create_dir_durably, sync_dir};
use crate::fatal;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A segment is closed and a new one begun beyond this size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// No entry record is this large (the journal's own record bound).
const MAX_RECORD: u64 = 1 << 30;
/// Segment files kept open for reads; beyond it the handles are dropped.
const OPEN_READERS: usize = 64;

/// Where one entry record is: segment number, offset and length, and the
/// length of the Merkle hashes that follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
    pub hashes: u64,
}

impl Place {
    /// Four varints: segment, offset, length, hashes' length.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12);
        for n in [self.segment, self.offset, self.len, self.hashes] {
            prost::encoding::encode_varint(n, &mut out);
        }
        out
    }

    /// Where the bytes after its hashes begin.
    pub fn end(&self) -> u64 {
        self.offset
            .saturating_add(self.len)
            .saturating_add(self.hashes)
    }

    /// Refuses lengths no record has (a garbled place must not size a read).
    pub fn check(&self) -> Result<(), StoreError> {
        if self.len > MAX_RECORD || self.hashes > MAX_RECORD {
            return Err(StoreError::Corrupt(
                "an entry's place in the segments".into(),
            ));
        }
        Ok(())
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Self, StoreError> {
        let bad = || StoreError::Corrupt("an entry's place in the segments".into());
        let mut next = || prost::encoding::decode_varint(&mut bytes).map_err(|_| bad());
        let place = Place {
            segment: next()?,
            offset: next()?,
            len: next()?,
            hashes: next()?,
        };
        if !bytes.is_empty() || place.len > MAX_RECORD || place.hashes > MAX_RECORD {
            return Err(bad());
        }
        Ok(place)
    }
}

/// One record to append: the entry record and the hashes after it.
pub struct Appended<'a> {
    pub record: &'a [u8],
    pub hashes: &'a [u8],
}

/// The segment being appended to.
#[derive(Debug)]
struct Writer {
    segment: u64,
    /// Opened at the first append: a start writes no empty segment.
    file: Option<File>,
    len: u64,
}

/// The entry segments of one data directory.
#[derive(Debug)]
pub struct Segments {
    dir: PathBuf,
    fsync: bool,
    writer: Mutex<Writer>,
    readers: Mutex<HashMap<u64, Arc<File>>>,
    /// Directory syncs made when opening segments for appends.
    #[cfg(test)]
    dir_syncs: std::sync::atomic::AtomicU64,
}

fn file_name(segment: u64) -> String {
    format!("{segment:08}.segment")
}

fn segment_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".segment")?
        .parse()
        .ok()
}

impl Segments {
    /// Opens the segments in `dir` (created if missing); appends continue
    /// at the end of the newest one, after whatever a crash left there.
    pub fn open(dir: &Path, fsync: bool) -> Result<Self, StoreError> {
        create_dir_durably(dir)?;
        let mut newest: Option<(u64, u64)> = None;
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            if let Some(n) = segment_of(&item.path())
                && newest.is_none_or(|(m, _)| n > m)
            {
                newest = Some((n, item.metadata()?.len()));
            }
        }
        let (segment, len) = newest.unwrap_or((0, 0));
        Ok(Self {
            dir: dir.to_path_buf(),
            fsync,
            writer: Mutex::new(Writer {
                segment,
                file: None,
                len,
            }),
            readers: Mutex::new(HashMap::new()),
            #[cfg(test)]
            dir_syncs: Default::default(),
        })
    }

    /// Appends `records` as one write, durably (with fsync on), and
    /// returns their places in the same order.
    pub fn append(&self, records: &[Appended<'_>]) -> Result<Vec<Place>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut w = fatal::lock(&self.writer, "entry segments")?;
        if w.file.is_none() {
            let segment = w.segment;
            self.reopen(&mut w, segment)?;
        }
        if w.len >= SEGMENT_BYTES {
            let next = w.segment + 1;
            self.begin(&mut w, next)?;
        }
        let mut places = Vec::with_capacity(records.len());
        let mut end = w.len;
        for r in records {
            places.push(Place {
                segment: w.segment,
                offset: end,
                len: r.record.len() as u64,
                hashes: r.hashes.len() as u64,
            });
            end += (r.record.len() + r.hashes.len()) as u64;
        }
        let at = w.len;
        let Some(file) = w.file.as_ref() else {
            return Err(StoreError::Database("no entry segment is open".into()));
        };
        let pieces = records.iter().flat_map(|r| [r.record, r.hashes]);
        let written = write_pieces_at(file, pieces, at)
            .and_then(|()| if self.fsync { file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // What was written is named by nobody: cut it, so that the
            // next append begins where this one did.
            let _ = file.set_len(at);
            return Err(StoreError::Database(format!(
                "cannot append entries to segment {}: {e}",
                self.path(w.segment).display()
            )));
        }
        w.len = end;
        Ok(places)
    }

    /// Opens segment `segment` for appends (creating it when missing). The
    /// directory is synced every time: a file a crash left behind may exist
    /// without its directory entry being durable yet.
    fn reopen(&self, w: &mut Writer, segment: u64) -> Result<(), StoreError> {
        let path = self.path(segment);
        let mut options = OpenOptions::new();
        options.create(true).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Every entry's body is in it.
            options.mode(0o600);
        }
        let file = options.open(&path)?;
        sync_dir(&self.dir)?;
        #[cfg(test)]
        self.dir_syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        w.len = file.metadata()?.len();
        w.segment = segment;
        w.file = Some(file);
        Ok(())
    }

    /// Closes the current segment and begins segment `next`.
    fn begin(&self, w: &mut Writer, next: u64) -> Result<(), StoreError> {
        w.file = None;
        self.reopen(w, next)
    }

    pub(super) fn path(&self, segment: u64) -> PathBuf {
        self.dir.join(file_name(segment))
    }

    /// The entry record at `place`.
    pub fn read(&self, place: Place) -> Result<Vec<u8>, StoreError> {
        self.read_span(place.segment, place.offset, place.len)
    }

    /// The Merkle hashes after the entry record at `place`.
    pub fn read_hashes(&self, place: Place) -> Result<Vec<u8>, StoreError> {
        let at = place.offset.saturating_add(place.len);
        self.read_span(place.segment, at, place.hashes)
    }

    /// `len` bytes from `offset` of `segment`: also what reads several
    /// records that lie together at once (an audit's).
    pub(super) fn read_span(
        &self,
        segment: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let file = self.reader(segment)?;
        // A garbled place must not size the buffer beyond the file.
        let size = file.metadata()?.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(StoreError::Corrupt(format!(
                "segment {}: {len} bytes at offset {offset} are beyond its end ({size} bytes)",
                self.path(segment).display(),
            )));
        }
        let mut buf = vec![0; len as usize];
        read_exact_at(&file, &mut buf, offset).map_err(|e| {
            let what = format!(
                "segment {}: {len} bytes at offset {offset} cannot be read: {e}",
                self.path(segment).display(),
            );
            // Only a short read says the data is not there; any other error
            // (a failing disk, a handle limit) is the system's, not the data's.
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StoreError::Corrupt(what)
            } else {
                StoreError::Io(std::io::Error::new(e.kind(), what))
            }
        })?;
        Ok(buf)
    }

    fn reader(&self, segment: u64) -> Result<Arc<File>, StoreError> {
        let mut readers = fatal::lock(&self.readers, "entry segment readers")?;
        if let Some(f) = readers.get(&segment) {
            return Ok(f.clone());
        }
        let path = self.path(segment);
        let file = File::open(&path).map_err(|e| {
            let what = format!("entry segment {} cannot be opened: {e}", path.display());
            // A missing segment is lost data; running out of file handles
            // or a permission error is not.
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::Corrupt(what)
            } else {
                StoreError::Io(std::io::Error::new(e.kind(), what))
            }
        })?;
        if readers.len() >= OPEN_READERS {
            readers.clear();
        }
        let file = Arc::new(file);
        readers.insert(segment, file.clone());
        Ok(file)
    }
}

/// Pieces coalesced into one write up to this size; larger pieces are
/// written from where they are, so an append never copies a large batch.
const COALESCE_BYTES: usize = 1 << 20;

/// Writes `pieces` one after another from offset `at`, small ones
/// gathered into writes of up to [`COALESCE_BYTES`].
fn write_pieces_at<'a>(
    file: &File,
    pieces: impl Iterator<Item = &'a [u8]>,
    mut at: u64,
) -> std::io::Result<()> {
    let mut gathered = Vec::new();
    for piece in pieces {
        if !gathered.is_empty() && gathered.len() + piece.len() > COALESCE_BYTES {
            write_all_at(file, &gathered, at)?;
            at += gathered.len() as u64;
            gathered.clear();
        }
        if piece.len() >= COALESCE_BYTES {
            write_all_at(file, piece, at)?;
            at += piece.len() as u64;
        } else {
            gathered.extend_from_slice(piece);
        }
    }
    if gathered.is_empty() {
        return Ok(());
    }
    write_all_at(file, &gathered, at)
}

#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, at)
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
}

// Windows' positioned I/O: a handle shared by readers never has its
// position moved under another read.
#[cfg(windows)]
fn write_all_at(file: &File, mut bytes: &[u8], mut at: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !bytes.is_empty() {
        match file.seek_write(bytes, at) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut at: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, at) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Records without hashes.
    fn plain<'a>(records: &[&'a [u8]]) -> Vec<Appended<'a>> {
        records
            .iter()
            .map(|r| Appended {
                record: r,
                hashes: &[],
            })
            .collect()
    }

    #[test]
    fn records_read_back_across_reopens_and_segments() -> TestResult {
        let dir = tempfile::tempdir()?;
        let s = Segments::open(dir.path(), true)?;
        let first = s.append(&plain(&[b"one", b"two"]))?;
        assert_eq!(s.read(first[1])?, b"two");
        drop(s);
        let s = Segments::open(dir.path(), true)?;
        let later = s.append(&plain(&[b"three"]))?;
        assert_eq!(later[0].offset, 6, "appends go on after what is there");
        assert_eq!(s.read(first[0])?, b"one");
        assert_eq!(s.read(later[0])?, b"three");
        // Begin a second segment as a full one would.
        {
            let mut w = s.writer.lock().map_err(|_| "poisoned")?;
            w.len = SEGMENT_BYTES;
        }
        let next = s.append(&plain(&[b"four"]))?;
        assert_eq!((next[0].segment, next[0].offset), (first[0].segment + 1, 0));
        assert_eq!(s.read(next[0])?, b"four");
        assert_eq!(s.read(later[0])?, b"three");
        #[cfg(unix)]
        for item in std::fs::read_dir(dir.path())? {
            use std::os::unix::fs::PermissionsExt;
            let mode = item?.metadata()?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{mode:o}");
        }
        Ok(())
    }

    #[test]
    fn places_beyond_a_segment_or_of_a_missing_one_are_corruption() -> TestResult {
        let dir = tempfile::tempdir()?;
        let s = Segments::open(dir.path(), true)?;
        let p = s.append(&plain(&[b"entry"]))?[0];
        let beyond = Place { len: 99, ..p };
        assert!(matches!(s.read(beyond), Err(StoreError::Corrupt(_))));
        // A garbled length is refused before anything that large is allocated.
        let huge = Place {
            len: MAX_RECORD,
            ..p
        };
        match s.read(huge) {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("beyond its end"), "{m}"),
            other => panic!("expected corruption, got {other:?}"),
        }
        let missing = Place {
            segment: p.segment + 7,
            ..p
        };
        match s.read(missing) {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("cannot be opened"), "{m}"),
            other => panic!("expected corruption, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn hashes_follow_their_record() -> TestResult {
        let dir = tempfile::tempdir()?;
        let s = Segments::open(dir.path(), true)?;
        let places = s.append(&[
            Appended {
                record: b"entry one",
                hashes: &[1; 64],
            },
            Appended {
                record: b"entry two",
                hashes: &[2; 32],
            },
        ])?;
        assert_eq!(s.read(places[0])?, b"entry one");
        assert_eq!(s.read_hashes(places[0])?, [1; 64]);
        assert_eq!(s.read(places[1])?, b"entry two");
        assert_eq!(s.read_hashes(places[1])?, [2; 32]);
        assert_eq!(places[1].offset, 9 + 64);
        Ok(())
    }

    #[test]
    fn places_read_back_and_damaged_ones_are_refused() {
        let p = Place {
            segment: 3,
            offset: 1 << 40,
            len: 1500,
            hashes: 96,
        };
        assert_eq!(Place::decode(&p.encode()).ok(), Some(p));
        let mut longer = p.encode();
        longer.push(1);
        assert!(Place::decode(&longer).is_err());
        assert!(Place::decode(&p.encode()[..2]).is_err());
        assert!(Place::decode(&[]).is_err());
    }

    #[test]
    fn opening_an_existing_segment_for_appends_syncs_its_directory() -> TestResult {
        let dir = tempfile::tempdir()?;
        drop(Segments::open(dir.path(), true)?.append(&plain(&[b"one"]))?);
        // A crash may leave the file with an entry its directory never made durable.
        let s = Segments::open(dir.path(), true)?;
        s.append(&plain(&[b"two"]))?;
        assert_eq!(s.dir_syncs.load(std::sync::atomic::Ordering::Relaxed), 1);
        Ok(())
    }

    #[test]
    fn a_read_error_other_than_a_short_read_is_no_corruption() -> TestResult {
        let dir = tempfile::tempdir()?;
        let s = Segments::open(dir.path(), true)?;
        let p = s.append(&plain(&[b"entry"]))?[0];
        // A directory opens but cannot be read: an I/O error, not lost data.
        let odd = p.segment + 3;
        std::fs::create_dir(s.path(odd))?;
        match s.read(Place { segment: odd, ..p }) {
            Err(StoreError::Io(e)) => assert!(e.to_string().contains("cannot be read"), "{e}"),
            other => panic!("expected an i/o error, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn large_and_small_pieces_land_where_their_places_say() -> TestResult {
        let dir = tempfile::tempdir()?;
        let s = Segments::open(dir.path(), true)?;
        let big = vec![7u8; COALESCE_BYTES + 5];
        let small = [3u8; 40];
        let places = s.append(&[
            Appended {
                record: b"a",
                hashes: &small,
            },
            Appended {
                record: &big,
                hashes: &small,
            },
            Appended {
                record: b"c",
                hashes: &[],
            },
        ])?;
        assert_eq!(s.read(places[0])?, b"a");
        assert_eq!(s.read_hashes(places[0])?, small);
        assert_eq!(s.read(places[1])?, big);
        assert_eq!(s.read_hashes(places[1])?, small);
        assert_eq!(s.read(places[2])?, b"c");
        assert_eq!(
            std::fs::metadata(s.path(places[2].segment))?.len(),
            places[2].offset + 1
        );
        Ok(())
    }
}
