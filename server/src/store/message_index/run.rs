//! One sorted run of the message id index: a file written once, whole,
//! and never changed, holding (fingerprint, seq) pairs in order.
//!
//! A look-up must be cheap when it finds nothing, since every push looks
//! its id up and almost none is there: each run keeps a blocked Bloom
//! filter (one 64-byte block per fingerprint, 10 bits a record, about
//! 1 % false positives) and the first fingerprint of every 256 records
//! in memory, so a miss reads no disk and a hit reads one stretch of
//! 4 KiB (two when equal fingerprints straddle a stretch's start).
//!
//! Layout: a header (magic, record count, filter blocks, 8 bytes each),
//! the records (fingerprint, seq, big-endian u64s), the filter, the
//! stretches' first fingerprints, then the CRC-32 of the records and the
//! CRC-32 of everything else. The second is checked at open; the first
//! whenever the records are read whole (a merge).

use super::super::StoreError;
use super::Pair;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"TBMIDX01";
pub(super) const HEADER: u64 = 24;
const RECORD: u64 = 16;
/// Records per stretch whose first fingerprint is kept in memory.
const STRETCH: u64 = 256;
/// Bits of the filter a record (a block holds 512).
const BITS_PER_RECORD: u64 = 10;
const BLOCK_WORDS: usize = 8;
const PROBES: u32 = 7;
/// Bytes of records read at a time when a run is read whole.
const READ_CHUNK: usize = 64 << 10;

/// A run on disk, with its filter and stretch starts in memory.
pub(super) struct Run {
    file: File,
    path: PathBuf,
    count: u64,
    filter: Vec<u64>,
    starts: Vec<u64>,
}

/// The block of the filter and the bits in it that `fp` sets.
fn probes(fp: u64, blocks: u64) -> (usize, [(usize, u64); PROBES as usize]) {
    let block = ((u128::from(fp >> 32) * u128::from(blocks)) >> 32) as usize;
    let h = fp.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut bits = [(0, 0); PROBES as usize];
    for (i, b) in bits.iter_mut().enumerate() {
        let bit = (h >> (9 * i as u32)) & 511;
        *b = (
            block * BLOCK_WORDS + (bit / 64) as usize,
            1u64 << (bit % 64),
        );
    }
    (block, bits)
}

fn blocks_for(records: u64) -> u64 {
    (records * BITS_PER_RECORD).div_ceil(512).max(1)
}

fn corrupt(path: &Path, why: &str) -> StoreError {
    StoreError::Corrupt(format!("message id run {}: {why}", path.display()))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = bytes.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_be_bytes(b)
}

impl Run {
    /// Writes `pairs` (ascending; equal pairs kept once), at most
    /// `at_most` of them, to `path` through a temporary file, synced
    /// (with `fsync`) before it takes its name. The caller syncs the
    /// directory.
    pub(super) fn write(
        path: &Path,
        at_most: u64,
        pairs: impl Iterator<Item = Result<Pair, StoreError>>,
        fsync: bool,
    ) -> Result<Self, StoreError> {
        let tmp = path.with_extension("tmp");
        let written = Self::write_file(&tmp, at_most, pairs, fsync);
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        std::fs::rename(&tmp, path)?;
        Self::open(path)
    }

    fn write_file(
        tmp: &Path,
        at_most: u64,
        pairs: impl Iterator<Item = Result<Pair, StoreError>>,
        fsync: bool,
    ) -> Result<(), StoreError> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(tmp)?;
        let mut out = BufWriter::with_capacity(READ_CHUNK, &file);
        out.write_all(&[0u8; HEADER as usize])?;
        let blocks = blocks_for(at_most);
        let mut filter = vec![0u64; blocks as usize * BLOCK_WORDS];
        let mut starts = Vec::new();
        let (mut count, mut last) = (0u64, None);
        let mut records_crc = crc32fast::Hasher::new();
        for pair in pairs {
            let pair = pair?;
            if last.is_some_and(|l| l >= pair) {
                if last == Some(pair) {
                    continue;
                }
                // Only a damaged run read for a merge gives them so.
                return Err(StoreError::Corrupt(
                    "message id run: pairs out of order (a run merged is damaged)".into(),
                ));
            }
            if count == at_most {
                return Err(StoreError::Database(
                    "message id run: more pairs than said".into(),
                ));
            }
            last = Some(pair);
            if count % STRETCH == 0 {
                starts.push(pair.0);
            }
            for (word, mask) in probes(pair.0, blocks).1 {
                filter[word] |= mask;
            }
            let mut record = [0u8; RECORD as usize];
            record[..8].copy_from_slice(&pair.0.to_be_bytes());
            record[8..].copy_from_slice(&pair.1.to_be_bytes());
            records_crc.update(&record);
            out.write_all(&record)?;
            count += 1;
        }
        let mut header = Vec::with_capacity(HEADER as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&count.to_be_bytes());
        header.extend_from_slice(&blocks.to_be_bytes());
        let mut meta_crc = crc32fast::Hasher::new();
        meta_crc.update(&header);
        let mut tail = Vec::with_capacity(filter.len() * 8 + starts.len() * 8 + 8);
        for w in filter.iter().chain(&starts) {
            tail.extend_from_slice(&w.to_be_bytes());
        }
        meta_crc.update(&tail);
        tail.extend_from_slice(&records_crc.finalize().to_be_bytes());
        tail.extend_from_slice(&meta_crc.finalize().to_be_bytes());
        out.write_all(&tail)?;
        out.flush()?;
        drop(out);
        file.write_all_at(&header, 0)?;
        if fsync {
            file.sync_all()?;
        }
        Ok(())
    }

    /// Opens the run at `path`, reading its filter and stretch starts.
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, 0)
            .map_err(|_| corrupt(path, "shorter than its header"))?;
        if &header[..8] != MAGIC {
            return Err(corrupt(path, "not a run"));
        }
        let (count, blocks) = (u64_at(&header, 8), u64_at(&header, 16));
        let stretches = count.div_ceil(STRETCH);
        let meta_at = count
            .checked_mul(RECORD)
            .and_then(|r| r.checked_add(HEADER));
        let meta_len = blocks
            .checked_mul(BLOCK_WORDS as u64 * 8)
            .and_then(|f| f.checked_add(stretches * 8 + 8));
        let (Some(meta_at), Some(meta_len)) = (meta_at, meta_len) else {
            return Err(corrupt(path, "a header out of bounds"));
        };
        if meta_at.checked_add(meta_len) != Some(len) || blocks == 0 {
            return Err(corrupt(path, "its length does not match its header"));
        }
        let mut meta = vec![0u8; meta_len as usize];
        file.read_exact_at(&mut meta, meta_at)?;
        let crcs = meta.len() - 8;
        let mut meta_crc = crc32fast::Hasher::new();
        meta_crc.update(&header);
        meta_crc.update(&meta[..crcs]);
        if meta_crc.finalize() != u64_at(&meta, crcs) as u32 {
            return Err(corrupt(path, "its filter or stretches are damaged"));
        }
        let words: Vec<u64> = meta[..crcs].chunks_exact(8).map(|w| u64_at(w, 0)).collect();
        let (filter, starts) = words.split_at(blocks as usize * BLOCK_WORDS);
        Ok(Self {
            file,
            path: path.to_path_buf(),
            count,
            filter: filter.to_vec(),
            starts: starts.to_vec(),
        })
    }

    pub(super) fn count(&self) -> u64 {
        self.count
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    fn may_hold(&self, fp: u64) -> bool {
        let blocks = (self.filter.len() / BLOCK_WORDS) as u64;
        probes(fp, blocks)
            .1
            .iter()
            .all(|(word, mask)| self.filter.get(*word).is_some_and(|w| w & mask != 0))
    }

    /// Adds the seqs this run holds under `fp` to `out`.
    pub(super) fn seqs(&self, fp: u64, out: &mut Vec<u64>) -> Result<(), StoreError> {
        if !self.may_hold(fp) {
            return Ok(());
        }
        let from = self.starts.partition_point(|s| *s < fp).saturating_sub(1) as u64;
        let to = self.starts.partition_point(|s| *s <= fp) as u64;
        if to <= from {
            return Ok(());
        }
        let (first, end) = (from * STRETCH, (to * STRETCH).min(self.count));
        let mut bytes = vec![0u8; ((end - first) * RECORD) as usize];
        self.file
            .read_exact_at(&mut bytes, HEADER + first * RECORD)?;
        for record in bytes.chunks_exact(RECORD as usize) {
            if u64_at(record, 0) == fp {
                out.push(u64_at(record, 8));
            }
        }
        Ok(())
    }

    /// Every pair, in order, read a chunk at a time; the last item is an
    /// error if the records do not match their checksum.
    pub(super) fn pairs(&self) -> Pairs<'_> {
        Pairs {
            run: self,
            at: 0,
            chunk: Vec::new(),
            used: 0,
            crc: crc32fast::Hasher::new(),
            done: false,
        }
    }
}

/// A run's pairs as [`Run::pairs`] reads them.
pub(super) struct Pairs<'a> {
    run: &'a Run,
    /// Records read so far.
    at: u64,
    chunk: Vec<u8>,
    used: usize,
    crc: crc32fast::Hasher,
    done: bool,
}

impl Pairs<'_> {
    fn refill(&mut self) -> Result<bool, StoreError> {
        let left = self.run.count - self.at;
        if left == 0 {
            let mut stored = [0u8; 4];
            let at = self.run.file.metadata()?.len() - 8;
            self.run.file.read_exact_at(&mut stored, at)?;
            let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new());
            if crc.finalize() != u32::from_be_bytes(stored) {
                return Err(corrupt(&self.run.path, "its records are damaged"));
            }
            return Ok(false);
        }
        let n = left.min(READ_CHUNK as u64 / RECORD);
        self.chunk.resize((n * RECORD) as usize, 0);
        self.run
            .file
            .read_exact_at(&mut self.chunk, HEADER + self.at * RECORD)?;
        self.crc.update(&self.chunk);
        self.at += n;
        self.used = 0;
        Ok(true)
    }
}

impl Iterator for Pairs<'_> {
    type Item = Result<Pair, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.used == self.chunk.len() {
            match self.refill() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let record = &self.chunk[self.used..self.used + RECORD as usize];
        self.used += RECORD as usize;
        Some(Ok((u64_at(record, 0), u64_at(record, 8))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write(dir: &Path, pairs: &[Pair]) -> Result<Run, StoreError> {
        Run::write(
            &dir.join("run"),
            pairs.len() as u64,
            pairs.iter().map(|p| Ok(*p)),
            true,
        )
    }

    fn seqs(run: &Run, fp: u64) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        run.seqs(fp, &mut out)?;
        Ok(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every look-up agrees with a plain search of the pairs, whatever
        /// the fingerprints (few distinct ones make long equal runs that
        /// cross stretches), and reading whole gives the pairs back.
        #[test]
        fn look_ups_match_a_plain_search(
            mut pairs in proptest::collection::vec((0u64..40, 0u64..2000), 0..1500),
            spread in any::<bool>(),
        ) {
            if spread {
                for p in &mut pairs {
                    p.0 = p.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
                }
            }
            pairs.sort_unstable();
            pairs.dedup();
            let dir = tempfile::tempdir()?;
            let run = write(dir.path(), &pairs)?;
            prop_assert_eq!(run.count(), pairs.len() as u64);
            let reopened = Run::open(&dir.path().join("run"))?;
            let mut fps: Vec<u64> = pairs.iter().map(|p| p.0).collect();
            fps.extend([0, 1, 39, u64::MAX, 12_345]);
            for fp in fps {
                let want: Vec<u64> = pairs.iter().filter(|p| p.0 == fp).map(|p| p.1).collect();
                prop_assert_eq!(&seqs(&run, fp)?, &want);
                prop_assert_eq!(&seqs(&reopened, fp)?, &want);
            }
            let back: Vec<Pair> = reopened.pairs().collect::<Result<_, _>>()?;
            prop_assert_eq!(back, pairs);
        }
    }

    #[test]
    fn equal_pairs_are_kept_once_and_disorder_is_refused() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let run = Run::write(
            &dir.path().join("a"),
            4,
            [(1, 1), (1, 1), (2, 5), (2, 5)].into_iter().map(Ok),
            true,
        )?;
        assert_eq!(run.count(), 2);
        let refused = Run::write(
            &dir.path().join("b"),
            2,
            [(2, 1), (1, 1)].into_iter().map(Ok),
            true,
        );
        assert!(matches!(refused, Err(StoreError::Corrupt(_))));
        // Nothing is left of a run that was not written.
        assert!(!dir.path().join("b").exists() && !dir.path().join("b.tmp").exists());
        Ok(())
    }

    /// About 1 % of absent fingerprints pass the filter, as designed; a
    /// broken filter (all pass, or present ones refused) fails this.
    #[test]
    fn the_filter_lets_few_absent_fingerprints_through() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mix = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 17);
        let mut pairs: Vec<Pair> = (0..20_000u64).map(|i| (mix(i), i)).collect();
        pairs.sort_unstable();
        let run = write(dir.path(), &pairs)?;
        assert!(pairs.iter().all(|p| run.may_hold(p.0)));
        let passed = (20_000..120_000u64)
            .filter(|i| run.may_hold(mix(*i)))
            .count();
        assert!(passed < 2_500, "{passed} of 100,000 absent passed");
        Ok(())
    }

    #[test]
    fn damage_is_found() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let pairs: Vec<Pair> = (0..1000u64).map(|i| (i * 7, i)).collect();
        let path = dir.path().join("run");
        write(dir.path(), &pairs)?;
        let bytes = std::fs::read(&path)?;
        // A flipped bit in the records: the run opens, reading it whole fails.
        let mut damaged = bytes.clone();
        damaged[HEADER as usize + 100] ^= 1;
        std::fs::write(&path, &damaged)?;
        let run = Run::open(&path)?;
        let read: Result<Vec<Pair>, _> = run.pairs().collect();
        assert!(matches!(read, Err(StoreError::Corrupt(_))), "{read:?}");
        // In the filter, or cut short: the run does not open.
        let mut damaged = bytes.clone();
        let filter_at = (HEADER + 1000 * RECORD) as usize + 3;
        damaged[filter_at] ^= 1;
        std::fs::write(&path, &damaged)?;
        assert!(matches!(Run::open(&path), Err(StoreError::Corrupt(_))));
        std::fs::write(&path, &bytes[..bytes.len() - 1])?;
        assert!(matches!(Run::open(&path), Err(StoreError::Corrupt(_))));
        std::fs::write(&path, &bytes[..10])?;
        assert!(matches!(Run::open(&path), Err(StoreError::Corrupt(_))));
        Ok(())
    }
}
