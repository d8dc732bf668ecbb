//! The access log kept by the sled store, in files of its own inside the
//! store's directory (`layout`), not in sled trees: sled locks its
//! database to one process, and `tongbao-hub audit-log verify|export|query`
//! must read the log beside a running hub. So the store offers a reader
//! of these files ([`open_read`]) that another process opens without
//! opening sled, and both read through one set of rules (`view`).
//!
//! The store knows bytes and indexes only: a record is its number, its
//! hub time and its line, each in a checksummed frame (`frame`); the
//! tree is its stored hashes; the checkpoint a signed note. What a crash
//! leaves is repaired at the claim (`origin_log`, `scan`): a write a
//! crash tore is cut off and kept aside (never within what the checkpoint
//! covers, nor a record a later frame proves synced: the check names
//! what is wrong there), hashes not yet on disk are recomputed.
//!
//! A snapshot reads each origin's log as it was when first read through
//! it. In this process a held snapshot holds back the deletion of files
//! retention removed, so it never meets a hole; a reader in another
//! process cannot hold them back, and says so
//! ([`records::REMOVED_WHILE_READING`]) rather than report a broken log.

mod frame;
pub mod layout;
mod origin_log;
pub mod records;
mod scan;
mod view;

use super::StoreError;
use super::access::{AccessExtent, AccessLogRead, AccessLogStore, AccessRow, OriginGuard};
use origin_log::OriginLog;
use records::RecordIndex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tongbao_proto::Hash;
use view::View;

type Logs = Arc<Mutex<HashMap<String, Arc<Mutex<OriginLog>>>>>;

fn poisoned(what: &str) -> StoreError {
    StoreError::Database(format!("the access log's {what} lock is poisoned"))
}

/// The access logs of a store directory, written by this process.
pub struct AccessFiles {
    root: PathBuf,
    fsync: bool,
    /// A record file's size bound (`origin_log::FILE_BOUND`).
    file_bound: u64,
    /// The origins this process claimed.
    logs: Logs,
    index: Arc<RecordIndex>,
    /// Snapshots held now (see the module doc).
    snapshots: Arc<AtomicUsize>,
}

impl AccessFiles {
    /// The logs under `store_dir` (created at the first claim).
    pub fn new(store_dir: &Path, fsync: bool) -> Self {
        Self {
            root: store_dir.join(layout::ROOT),
            fsync,
            file_bound: origin_log::FILE_BOUND,
            logs: Logs::default(),
            index: Arc::default(),
            snapshots: Arc::default(),
        }
    }

    /// [`AccessFiles::new`] with record files of `bound` bytes (tests of
    /// several files).
    #[cfg(test)]
    fn with_file_bound(store_dir: &Path, bound: u64) -> Self {
        Self {
            file_bound: bound,
            ..Self::new(store_dir, true)
        }
    }

    /// Runs `write` on `origin`'s log, which this process must have
    /// claimed, with whether a snapshot is held.
    fn with_claimed(
        &self,
        origin: &str,
        write: impl FnOnce(&mut OriginLog, &RecordIndex, bool) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let log = self.claimed(origin)?.ok_or_else(|| {
            StoreError::Database(format!(
                "the access log {origin} is not claimed by this process: it cannot be written"
            ))
        })?;
        let mut log = log.lock().map_err(|_| poisoned("origin"))?;
        // Taken under the origin's lock, as a snapshot's view is: a
        // snapshot begun after this sees the removal, one before holds it.
        let held = self.held();
        write(&mut log, &self.index, held)
    }

    /// How many times `origin`'s record files were synced (tests of
    /// lazy syncs).
    #[cfg(test)]
    pub(crate) fn record_syncs(&self, origin: &str) -> Result<u64, StoreError> {
        let log = self.claimed(origin)?.ok_or_else(|| poisoned("unclaimed"))?;
        Ok(log.lock().map_err(|_| poisoned("origin"))?.record_syncs)
    }

    /// Fails `origin`'s next checkpoint after its commit's point, saying
    /// `why` (tests of a crash or an error between the records and what
    /// follows).
    #[cfg(test)]
    pub(crate) fn fail_after_commit_point(
        &self,
        origin: &str,
        why: &str,
    ) -> Result<(), StoreError> {
        let log = self.claimed(origin)?.ok_or_else(|| poisoned("unclaimed"))?;
        log.lock().map_err(|_| poisoned("origin"))?.fail_tail = Some(why.to_string());
        Ok(())
    }

    fn held(&self) -> bool {
        self.snapshots.load(Ordering::Acquire) > 0
    }

    fn claimed(&self, origin: &str) -> Result<Option<Arc<Mutex<OriginLog>>>, StoreError> {
        Ok(self
            .logs
            .lock()
            .map_err(|_| poisoned("claims"))?
            .get(origin)
            .cloned())
    }
}

/// Where a reader's views come from.
trait Source: Send + Sync {
    fn view(&self, origin: &str) -> Result<View, StoreError>;
    fn index(&self) -> &RecordIndex;
    fn root(&self) -> &Path;
}

impl Source for AccessFiles {
    /// A claimed origin's from its writer, any other from its files.
    fn view(&self, origin: &str) -> Result<View, StoreError> {
        match self.claimed(origin)? {
            Some(log) => Ok(log.lock().map_err(|_| poisoned("origin"))?.view()),
            None => scan::view_of(&layout::origin_dir(&self.root, origin)?, &self.index),
        }
    }

    fn index(&self) -> &RecordIndex {
        &self.index
    }

    fn root(&self) -> &Path {
        &self.root
    }
}

/// Every origin under `root`, in order.
fn origins(root: &Path) -> Result<Vec<String>, StoreError> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(layout::io(root, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| layout::io(root, e))?;
        // Only an origin's directory holds a log: anything else put there
        // (a stray file, an editor's backup) is not one.
        let is_dir = entry
            .file_type()
            .map_err(|e| layout::io(&entry.path(), e))?
            .is_dir();
        if !is_dir {
            continue;
        }
        if let Some(origin) = layout::read_text(&entry.path().join(layout::ORIGIN_FILE))? {
            out.push(origin);
        }
    }
    out.sort();
    Ok(out)
}

/// Reads through a [`Source`]: each read from a view taken then, or, in a
/// snapshot, from the view each origin had at its first read.
struct Reads<'a> {
    source: &'a dyn Source,
    taken: Option<Mutex<HashMap<String, View>>>,
    /// Counted while held (a snapshot of this process).
    _hold: Option<Hold>,
}

impl Reads<'_> {
    fn view(&self, origin: &str) -> Result<View, StoreError> {
        let Some(taken) = &self.taken else {
            return self.source.view(origin);
        };
        let mut taken = taken.lock().map_err(|_| poisoned("snapshot"))?;
        if let Some(v) = taken.get(origin) {
            return Ok(v.clone());
        }
        let v = self.source.view(origin)?;
        taken.insert(origin.to_string(), v.clone());
        Ok(v)
    }
}

impl AccessLogRead for Reads<'_> {
    fn access_checkpoint(&self, origin: &str) -> Result<Option<String>, StoreError> {
        Ok(self.view(origin)?.checkpoint)
    }

    fn access_extent(&self, origin: &str) -> Result<AccessExtent, StoreError> {
        Ok(self.view(origin)?.extent())
    }

    fn access_records(
        &self,
        origin: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<AccessRow>, StoreError> {
        self.view(origin)?.records(self.source.index(), from, limit)
    }

    fn access_hashes(&self, origin: &str, indexes: &[u64]) -> Result<Vec<Hash>, StoreError> {
        self.view(origin)?.hashes(indexes)
    }

    fn access_hash_range(
        &self,
        origin: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        self.view(origin)?.hash_range(from, limit)
    }

    fn access_first_at(
        &self,
        origin: &str,
        from: u64,
        before: u64,
        at_micros: i64,
    ) -> Result<Option<u64>, StoreError> {
        self.view(origin)?
            .first_at(self.source.index(), from, before, at_micros)
    }

    fn access_origins(&self) -> Result<Vec<String>, StoreError> {
        origins(self.source.root())
    }
}

/// A snapshot held: counted, so that deletions wait (see the module doc).
struct Hold(Arc<AtomicUsize>);

impl Hold {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Forwards each read to [`Reads`] of the store as it is now.
macro_rules! reads_now {
    ($t:ty) => {
        impl AccessLogRead for $t {
            fn access_checkpoint(&self, origin: &str) -> Result<Option<String>, StoreError> {
                self.now().access_checkpoint(origin)
            }
            fn access_extent(&self, origin: &str) -> Result<AccessExtent, StoreError> {
                self.now().access_extent(origin)
            }
            fn access_records(
                &self,
                origin: &str,
                from: u64,
                limit: usize,
            ) -> Result<Vec<AccessRow>, StoreError> {
                self.now().access_records(origin, from, limit)
            }
            fn access_hashes(
                &self,
                origin: &str,
                indexes: &[u64],
            ) -> Result<Vec<Hash>, StoreError> {
                self.now().access_hashes(origin, indexes)
            }
            fn access_hash_range(
                &self,
                origin: &str,
                from: u64,
                limit: usize,
            ) -> Result<Vec<(u64, Hash)>, StoreError> {
                self.now().access_hash_range(origin, from, limit)
            }
            fn access_first_at(
                &self,
                origin: &str,
                from: u64,
                before: u64,
                at_micros: i64,
            ) -> Result<Option<u64>, StoreError> {
                self.now().access_first_at(origin, from, before, at_micros)
            }
            fn access_origins(&self) -> Result<Vec<String>, StoreError> {
                self.now().access_origins()
            }
        }
    };
}

impl AccessFiles {
    fn now(&self) -> Reads<'_> {
        Reads {
            source: self,
            taken: None,
            _hold: None,
        }
    }
}

reads_now!(AccessFiles);

/// An origin this process claimed; let go when released or dropped.
struct Claim {
    origin: String,
    logs: Logs,
}

impl OriginGuard for Claim {
    fn release(self: Box<Self>) {}
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut logs) = self.logs.lock() {
            logs.remove(&self.origin);
        }
    }
}

impl AccessLogStore for AccessFiles {
    fn access_reads(&self) -> &dyn AccessLogRead {
        self
    }

    fn access_snapshot(&self) -> Result<Box<dyn AccessLogRead + '_>, StoreError> {
        Ok(Box::new(Reads {
            source: self,
            taken: Some(Mutex::default()),
            _hold: Some(Hold::new(&self.snapshots)),
        }))
    }

    /// Another process cannot write: sled's lock on the store keeps it
    /// out. In this process, one writer an origin.
    fn access_claim(&self, origin: &str) -> Result<Box<dyn OriginGuard>, StoreError> {
        let mut logs = self.logs.lock().map_err(|_| poisoned("claims"))?;
        if logs.contains_key(origin) {
            return Err(StoreError::Database(format!(
                "the access log {origin} is claimed by another writer in this process already: \
                 one writer an origin (sled's lock keeps other processes out)"
            )));
        }
        let log = OriginLog::open(
            &self.root,
            origin,
            (self.fsync, self.file_bound),
            &self.index,
            self.held(),
        )?;
        logs.insert(origin.to_string(), Arc::new(Mutex::new(log)));
        Ok(Box::new(Claim {
            origin: origin.to_string(),
            logs: self.logs.clone(),
        }))
    }

    fn access_append(
        &self,
        origin: &str,
        rows: &[AccessRow],
        first_hash: u64,
        hashes: &[Hash],
        checkpoint: Option<&str>,
        remove_before: Option<u64>,
    ) -> Result<(), StoreError> {
        self.with_claimed(origin, |log, index, held| {
            log.append(
                rows,
                first_hash,
                hashes,
                checkpoint,
                remove_before,
                index,
                held,
            )
        })
    }

    fn in_data_dir(&self) -> bool {
        true
    }

    fn access_syncs_lazily(&self) -> bool {
        true
    }

    fn access_append_lazily(
        &self,
        origin: &str,
        rows: &[AccessRow],
        first_hash: u64,
        hashes: &[Hash],
    ) -> Result<(), StoreError> {
        self.with_claimed(origin, |log, index, held| {
            log.append_lazily(rows, first_hash, hashes, index, held)
        })
    }
}

/// The access logs of a sled store's directory, read only, by a process
/// that does not open the store (see the module doc).
pub struct AccessFilesReader {
    root: PathBuf,
    index: RecordIndex,
}

/// Opens the access logs of the sled store in `store_dir` to read (see
/// [`AccessFilesReader`]); None when it holds none.
pub fn open_read(store_dir: &Path) -> Option<AccessFilesReader> {
    let root = store_dir.join(layout::ROOT);
    root.is_dir().then(|| AccessFilesReader {
        root,
        index: RecordIndex::default(),
    })
}

impl Source for AccessFilesReader {
    fn view(&self, origin: &str) -> Result<View, StoreError> {
        scan::view_of(&layout::origin_dir(&self.root, origin)?, &self.index)
    }

    fn index(&self) -> &RecordIndex {
        &self.index
    }

    fn root(&self) -> &Path {
        &self.root
    }
}

impl AccessFilesReader {
    fn now(&self) -> Reads<'_> {
        Reads {
            source: self,
            taken: None,
            _hold: None,
        }
    }

    /// Reads that see each origin as it was at its first read.
    pub fn snapshot(&self) -> Box<dyn AccessLogRead + '_> {
        Box::new(Reads {
            source: self,
            taken: Some(Mutex::default()),
            _hold: None,
        })
    }
}

reads_now!(AccessFilesReader);

#[cfg(test)]
mod commit_tests;
#[cfg(test)]
mod tests;
