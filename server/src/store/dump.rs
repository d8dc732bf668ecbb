//! A store's records as one file: what a backup holds and a restore reads.
//!
//! A backup copies the store's keys and values as they were at one commit,
//! not the database's files: sled rewrites its files in place while it
//! runs, so a copy of them taken while the hub serves is no database at
//! all. The file is a checksummed stream, so a backup damaged on its way
//! (a flipped bit on the backup disk) is refused before anything is
//! restored from it:
//!
//! ```text
//! "tongbao store dump 1\n"
//! (u32 LE key length, key, u32 LE value length, value)*
//! u32 0xFFFFFFFF, u64 LE record count, SHA-256 of every byte before the marker
//! ```

use super::StoreError;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

/// The first bytes of a dump file.
pub const MAGIC: &[u8] = b"tongbao store dump 1\n";
/// The length field that ends the records.
const END: u32 = u32::MAX;

/// What a dump holds, as a backup's manifest records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpSummary {
    /// The last commit of the journal the copy holds.
    pub commit: u64,
    /// The storage format of the records.
    pub storage_format: String,
    pub records: u64,
    pub bytes: u64,
    /// Hex SHA-256 of the file up to its end marker.
    pub sha256: String,
    /// Entries of each channel, and its latest signed checkpoint (a note).
    pub channels: BTreeMap<String, ChannelCopy>,
}

/// One channel as a dump holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelCopy {
    pub size: u64,
    pub checkpoint: Option<String>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Database(format!("cannot {what} {}: {e}", path.display()))
}

/// Writes records to a new file, created 0600: it holds every message.
pub struct DumpWriter {
    out: BufWriter<File>,
    hash: ring::digest::Context,
    records: u64,
    bytes: u64,
    path: std::path::PathBuf,
    /// Bytes to leave free on the file's disk (0: no check), and bytes
    /// written since free space was last read.
    keep_free: u64,
    since_check: u64,
}

/// Free space is read again after this much is written.
const CHECK_FREE_EVERY: u64 = 1 << 20;

impl DumpWriter {
    /// Creates `path`; refuses one that exists. The dump stops (an
    /// error) before it would leave less than `keep_free` bytes free on
    /// its disk, which may be the hub's own.
    pub fn create(path: &Path, keep_free: u64) -> Result<Self, StoreError> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(|e| io("create", path, e))?;
        let mut w = Self {
            out: BufWriter::with_capacity(1 << 20, file),
            hash: ring::digest::Context::new(&ring::digest::SHA256),
            records: 0,
            bytes: 0,
            path: path.to_path_buf(),
            keep_free,
            since_check: CHECK_FREE_EVERY,
        };
        w.put(MAGIC)?;
        Ok(w)
    }

    fn check_free(&mut self, len: u64) -> Result<(), StoreError> {
        self.since_check += len;
        if self.keep_free == 0 || self.since_check < CHECK_FREE_EVERY {
            return Ok(());
        }
        self.since_check = 0;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let free = fs2::available_space(dir).map_err(|e| io("read the free space of", dir, e))?;
        if free >= self.keep_free.saturating_add(CHECK_FREE_EVERY) {
            return Ok(());
        }
        Err(StoreError::NoRoom(format!(
            "the backup's disk ({}) has {} MiB free, and a backup stops before leaving less \
             than {} MiB (twice [hub] min_free_mib, so that the hub's writes go on if it \
             shares the disk); free space there or back up to another disk",
            dir.display(),
            free >> 20,
            self.keep_free >> 20
        )))
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.check_free(bytes.len() as u64)?;
        self.hash.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| io("write", &self.path, e))
    }

    fn len(n: usize) -> Result<[u8; 4], StoreError> {
        u32::try_from(n)
            .ok()
            .filter(|n| *n != END)
            .map(u32::to_le_bytes)
            .ok_or_else(|| StoreError::Database(format!("a record of {n} bytes cannot be dumped")))
    }

    pub fn record(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.put(&Self::len(key.len())?)?;
        self.put(key)?;
        self.put(&Self::len(value.len())?)?;
        self.put(value)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end marker and checksum and makes the file durable;
    /// returns (records, bytes before the marker, hex SHA-256).
    pub fn finish(mut self) -> Result<(u64, u64, String), StoreError> {
        let sha = hex::encode(self.hash.clone().finish().as_ref());
        let digest = self.hash.finish();
        let mut tail = END.to_le_bytes().to_vec();
        tail.extend_from_slice(&self.records.to_le_bytes());
        tail.extend_from_slice(digest.as_ref());
        let path = self.path.clone();
        self.out
            .write_all(&tail)
            .map_err(|e| io("write", &path, e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io("write", &path, e.into_error()))?;
        file.sync_all().map_err(|e| io("sync", &path, e))?;
        Ok((self.records, self.bytes, sha))
    }
}

/// Reads a dump, handing each record to `each`, and checks its checksum
/// and record count at the end: a caller must not trust what it was
/// handed until this returns Ok. Returns (records, bytes, hex SHA-256).
pub fn read_dump(
    path: &Path,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(u64, u64, String), StoreError> {
    let file = File::open(path).map_err(|e| io("open", path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let damaged = |why: &str| {
        StoreError::Corrupt(format!(
            "the backup file {} is damaged ({why}); take the backup again or use another",
            path.display()
        ))
    };
    let mut take = |n: usize, hash: &mut ring::digest::Context| -> Result<Vec<u8>, StoreError> {
        // Read as it comes, never allocated ahead: a damaged length must
        // not reserve gigabytes.
        let mut buf = Vec::new();
        (&mut r)
            .take(n as u64)
            .read_to_end(&mut buf)
            .map_err(|e| io("read", path, e))?;
        if buf.len() != n {
            return Err(damaged("cut short"));
        }
        hash.update(&buf);
        Ok(buf)
    };
    if take(MAGIC.len(), &mut hash)? != MAGIC {
        return Err(damaged("not a Tongbao store dump"));
    }
    let mut bytes = MAGIC.len() as u64;
    let mut records = 0u64;
    let mut scratch = ring::digest::Context::new(&ring::digest::SHA256);
    loop {
        let mut len = [0u8; 4];
        len.copy_from_slice(&take(4, &mut scratch)?);
        let n = u32::from_le_bytes(len);
        if n == END {
            break;
        }
        hash.update(&len);
        let key = take(n as usize, &mut hash)?;
        let mut vlen = [0u8; 4];
        vlen.copy_from_slice(&take(4, &mut hash)?);
        let value_len = u32::from_le_bytes(vlen);
        if value_len == END {
            return Err(damaged("a value of impossible length"));
        }
        let value = take(value_len as usize, &mut hash)?;
        bytes += 8 + key.len() as u64 + value.len() as u64;
        records += 1;
        each(&key, &value)?;
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&take(8, &mut scratch)?);
    let stored = take(32, &mut scratch)?;
    let digest = hash.finish();
    if stored != digest.as_ref() {
        return Err(damaged("its checksum does not match its records"));
    }
    if u64::from_le_bytes(count) != records {
        return Err(damaged("its record count does not match its records"));
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest).map_err(|e| io("read", path, e))? != 0 {
        return Err(damaged("bytes after its end"));
    }
    Ok((records, bytes, hex::encode(digest.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn records_read_back_and_any_flipped_byte_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("store.dump");
        let mut w = DumpWriter::create(&path, 0)?;
        w.record(b"k1", b"one")?;
        w.record(b"", b"")?;
        w.record(b"k3", &[7u8; 300])?;
        let (records, bytes, sha) = w.finish()?;
        assert_eq!(records, 3);
        let mut read = Vec::new();
        let back = read_dump(&path, |k, v| {
            read.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        assert_eq!(back, (records, bytes, sha));
        assert_eq!(read.len(), 3);
        assert_eq!(read[2].1, vec![7u8; 300]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path)?.permissions().mode() & 0o777,
                0o600
            );
        }
        // An existing file is never overwritten.
        assert!(DumpWriter::create(&path, 0).is_err());
        // A disk that would be left with less than asked: stopped at once.
        match DumpWriter::create(&dir.path().join("other.dump"), u64::MAX / 2) {
            Err(StoreError::NoRoom(m)) => assert!(m.contains("MiB free"), "{m}"),
            other => panic!("expected NoRoom, got {:?}", other.map(|_| ())),
        }
        let good = std::fs::read(&path)?;
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            std::fs::write(&path, &bad)?;
            match read_dump(&path, |_, _| Ok(())) {
                Err(StoreError::Corrupt(m)) => assert!(m.contains("damaged"), "{m}"),
                other => panic!("byte {at} flipped: {other:?}"),
            }
        }
        std::fs::write(&path, &good[..good.len() - 1])?;
        assert!(read_dump(&path, |_, _| Ok(())).is_err());
        Ok(())
    }
}
