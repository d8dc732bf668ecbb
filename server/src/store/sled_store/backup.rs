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
//! A dump holds the records in format 3's layout whatever the store's
//! format: each entry's record and tree hashes under their own keys, each
//! inbox run's positions written out whole, and each audit row whole
//! (made again from its entry), as format 3 kept them in sled, never a
//! place in the segments or a run of rows. It says format 3 (its format record and its manifest's
//! `storage_format`), so a format-3 hub can restore it. A restore writes
//! the records as they are; the restored store's first start moves them
//! into its segments (the upgrade of format 3), and its message id
//! records into their index (the upgrade of format 7). Format 8 keeps
//! no message id record in sled: the dump makes each whole from its entry.

use super::super::audit_index::{RUN, Row, audit_row, rows_of};
use super::super::codec::{
    AUDIT_SCOPE, CHANNEL_HEAD, CHECKPOINT, COMMIT_KEY, ENTRY, ENTRY_AT, FORMAT, FORMAT_3, FORMAT_4,
    FORMAT_KEY, INBOX, MESSAGE, RECIPIENT_SET, RECIPIENT_SETS_KEY, decode_inbox_run,
    inbox_run_whole, key, split_key, tree_hash_key, u64_from,
};
use super::super::dump::{DumpSummary, DumpWriter, read_dump};
use super::super::durability::open_sled;
use super::super::entry_record::whole_record;
use super::super::places::PlaceRun;
use super::super::{StoreError, create_dir_durably, sync_dir};
use super::SledStore;
use super::message_ids::message_record_of_entry;
use std::path::Path;

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
        let (segments, sets) = (&self.durability.segments, &self.durability.recipient_sets);
        self.durability.read_still(|tree, commit| {
            let mut out = DumpWriter::create(file, keep_free)?;
            let mut summary = DumpSummary::default();
            let written = (|| {
                for kv in tree.iter() {
                    let (k, v) = kv?;
                    // The dump is in format 3's layout and says so: a
                    // format-3 hub restores it, and a newer one upgrades it.
                    let v = if k == FORMAT_KEY && v == FORMAT {
                        sled::IVec::from(FORMAT_3)
                    } else {
                        v
                    };
                    note_record(&mut summary, &k, &v)?;
                    if k.first() == Some(&RECIPIENT_SET) || k == RECIPIENT_SETS_KEY {
                        // Format 3 has none: each record is written whole.
                        continue;
                    } else if k.first() == Some(&ENTRY_AT) {
                        let (channel, last) = split_key(&k)?;
                        let last = last
                            .ok_or_else(|| StoreError::Corrupt("a place key without seq".into()))?;
                        for (seq, place) in PlaceRun::decode(last, &v)?.places() {
                            let k = key(ENTRY, &channel, Some(seq));
                            let record = segments.read(place)?;
                            let record = sets.expand(&channel, seq, &record)?;
                            let whole = whole_record(&channel, seq, &record)?;
                            out.record(&k, &whole)?;
                            out.record(&tree_hash_key(&k), &segments.read_hashes(place)?)?;
                            // Format 8 keeps message id records out of sled.
                            if let Some((k, v)) = message_record_of_entry(&channel, seq, &record)? {
                                out.record(&k, &v)?;
                            }
                        }
                    } else if k.first() == Some(&INBOX) && k.get(1) == Some(&0) {
                        // Inbox runs whole, as format 3 wrote them.
                        let (inbox, last) = split_key(&k)?;
                        let last = last.ok_or_else(|| {
                            StoreError::Corrupt("an inbox run without end".into())
                        })?;
                        let items = decode_inbox_run(&inbox, last, &v)?;
                        let whole: Vec<(u64, &str)> =
                            items.iter().map(|i| (i.seq, i.channel.as_str())).collect();
                        let first = u64_from(v.get(..8).unwrap_or_default())?;
                        out.record(&k, &inbox_run_whole(first, &whole))?;
                    } else if k.first() == Some(&AUDIT_SCOPE)
                        && (v.is_empty() || v.first() == Some(&RUN))
                    {
                        // Each row whole, made from its entry.
                        let (mechanism, _) = Row::of_key(&k)?;
                        for row in rows_of(&k, &v)? {
                            let entry = self.audited_entry(&mechanism, &row)?;
                            out.record(&row.key(&mechanism), &audit_row(&entry))?;
                        }
                    } else if k.first() == Some(&MESSAGE) && k.get(1) == Some(&0) {
                        // Whole, with the digest, as format 3 kept it.
                        out.record(&k, &self.message_record_whole(&k, &v)?)?;
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
            let mut summary = DumpSummary::default();
            let (records, bytes, sha256) = read_dump(dump, |k, v| {
                note_record(&mut summary, k, v)?;
                tree.insert(k, v)?;
                Ok(())
            })?;
            // Dumps this hub wrote before they said format 3 said format 4,
            // in format 3's layout all the same (see above).
            if tree.get(FORMAT_KEY)?.as_deref() == Some(FORMAT_4) {
                tree.insert(FORMAT_KEY, FORMAT_3)?;
            }
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
