//! The embedded store's backup and restore: a dump of sled's tree as of
//! one commit, taken while the hub serves, and a fresh database written
//! from one.
//!
//! The dump is read with the background flush held off
//! ([`Durability::read_still`]): commits go on into the journal and the
//! overlay, pushes are answered as usual, and sled's tree stands still at
//! the commit the flush before it reached. What is committed meanwhile
//! stays in memory (the overlay) and in the journal until the dump ends,
//! and then is flushed as one batch.
//!
//! The dump holds each entry's record itself, under its record key, as
//! format 3 kept it in sled, never its place in the segments: a restore
//! appends the records to its own segments.

use super::super::codec::{
    CHANNEL_HEAD, CHECKPOINT, COMMIT_KEY, ENTRY_AT, FORMAT_KEY, is_entry_key, place_key,
    record_key, split_key, u64_from,
};
use super::super::dump::{DumpSummary, DumpWriter, read_dump};
use super::super::durability::open_sled;
use super::super::segments::{Place, Segments};
use super::super::{StoreError, create_dir_durably, sync_dir};
use super::SledStore;
use std::path::Path;

/// Entry records a restore appends to the segments at a time.
const RESTORE_CHUNK: usize = 1_000;

/// Reads what the manifest says of one record: channel sizes,
/// checkpoints, the storage format and the commit.
fn note_record(summary: &mut DumpSummary, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
    if k == FORMAT_KEY {
        summary.storage_format = String::from_utf8_lossy(v).into_owned();
    } else if k == COMMIT_KEY {
        summary.commit = u64_from(v)?;
    } else if k.first() == Some(&CHANNEL_HEAD) && k.get(1) == Some(&0) {
        let (channel, _) = split_key(k)?;
        let size = u64_from(v.get(..8).unwrap_or(v))?;
        summary.channels.entry(channel).or_default().size = size;
    } else if k.first() == Some(&CHECKPOINT) && k.get(1) == Some(&0) {
        let (channel, _) = split_key(k)?;
        summary.channels.entry(channel).or_default().checkpoint =
            Some(String::from_utf8_lossy(v).into_owned());
    }
    Ok(())
}

impl SledStore {
    /// Writes every record, as of the last commit applied, to `file` (a
    /// new file, 0600), while the store serves; stops before leaving less
    /// than `keep_free` bytes free on its disk.
    pub fn dump_records(&self, file: &Path, keep_free: u64) -> Result<DumpSummary, StoreError> {
        let segments = &self.durability.segments;
        self.durability.read_still(|tree, commit| {
            let mut out = DumpWriter::create(file, keep_free)?;
            let mut summary = DumpSummary::default();
            let written = (|| {
                for kv in tree.iter() {
                    let (k, v) = kv?;
                    note_record(&mut summary, &k, &v)?;
                    if k.first() == Some(&ENTRY_AT) {
                        let record = segments.read(Place::decode(&v)?)?;
                        out.record(&record_key(&k), &record)?;
                    } else {
                        out.record(&k, &v)?;
                    }
                }
                Ok::<_, StoreError>(())
            })();
            if let Err(e) = written {
                drop(out);
                let _ = std::fs::remove_file(file);
                return Err(e);
            }
            // The flush just before recorded the commit it reached.
            summary.commit = commit;
            let (records, bytes, sha256) = out.finish()?;
            summary.records = records;
            summary.bytes = bytes;
            summary.sha256 = sha256;
            Ok(summary)
        })
    }

    /// Writes a new database into `dir` (missing or empty) from a dump;
    /// the journal starts after the dump's commit. The dump's checksum is
    /// checked as it is read: on a damaged dump nothing is left in `dir`.
    pub fn restore_records(dump: &Path, dir: &Path) -> Result<DumpSummary, StoreError> {
        create_dir_durably(dir)?;
        let written = (|| {
            let db = open_sled(dir)?;
            let tree = db.open_tree("exchange")?;
            let segments = Segments::open(&dir.join("entries"), true)?;
            let mut summary = DumpSummary::default();
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let (records, bytes, sha256) = read_dump(dump, |k, v| {
                note_record(&mut summary, k, v)?;
                if is_entry_key(k) {
                    entries.push((k.to_vec(), v.to_vec()));
                    if entries.len() >= RESTORE_CHUNK {
                        place_records(&segments, &tree, &mut entries)?;
                    }
                } else {
                    tree.insert(k, v)?;
                }
                Ok(())
            })?;
            place_records(&segments, &tree, &mut entries)?;
            summary.records = records;
            summary.bytes = bytes;
            summary.sha256 = sha256;
            db.flush()?;
            drop(tree);
            drop(db);
            // sled's flush survives a crash, not a power loss: sync its files.
            sync_tree_files(dir)?;
            Ok(summary)
        })();
        if written.is_err()
            && let Ok(items) = std::fs::read_dir(dir)
        {
            for item in items.flatten() {
                let path = item.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
        written
    }
}

/// Appends `entries` (record key, record) to the segments and names their
/// places in `tree`; empties `entries`.
fn place_records(
    segments: &Segments,
    tree: &sled::Tree,
    entries: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), StoreError> {
    let records: Vec<&[u8]> = entries.iter().map(|(_, v)| v.as_slice()).collect();
    let places = segments.append(&records)?;
    for ((k, _), place) in entries.iter().zip(places) {
        tree.insert(place_key(k), place.encode())?;
    }
    entries.clear();
    Ok(())
}

/// fsyncs every file sled wrote in `dir` (and its blobs), then the
/// directories holding them.
fn sync_tree_files(dir: &Path) -> Result<(), StoreError> {
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let path = item.path();
        if item.file_type()?.is_dir() {
            sync_tree_files(&path)?;
        } else {
            std::fs::File::open(&path)?.sync_all()?;
        }
    }
    sync_dir(dir)
}
