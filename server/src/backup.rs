//! Backup, restore and verification of a hub's data (the embedded store).
//!
//! A backup is a directory: the store's records as of one commit
//! (`store.dump`, see `store::dump`), the hub's checkpoint key when it
//! lives in the data directory, the admin audit trail, and `backup.json`,
//! the manifest, written last: the time, the hub's version, the storage
//! format, and for every channel its size and its latest signed
//! checkpoint in the copy. A directory without a manifest is not a
//! backup. Restoring writes a new data directory from one and checks it
//! as `verify-data` does before it says it succeeded, so a restore never
//! hands a hub data that the hub would refuse, or worse, serve.
//!
//! Verification reuses the hub's own checks (`channel_log::check_checkpoint`
//! and `check_entries_deep`, the one the hub runs in the background after
//! it starts): every entry against its leaf hash and chain, and every
//! stored Merkle hash recomputed from the leaf hashes, so that a
//! checkpoint's root is checked over the entries themselves.

use crate::channel_log::{LogError, check_checkpoint, check_entries_deep};
use crate::store::{ChannelHead, SledStore, Store, StoreError, create_dir_durably, sync_dir};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use tongbao_proto::checkpoint::{Checkpoint, KeyType, NoteVerifier, parse_note};
use tongbao_proto::echo::shown;

/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "backup.json";
/// The store's records in a backup directory.
pub const STORE_FILE: &str = "store.dump";
/// What the manifest's `format` says; another is refused.
pub const MANIFEST_FORMAT: &str = "tongbao-backup 1";
/// The checkpoint key's file name, in a data directory and in a backup.
pub const CHECKPOINT_KEY: &str = "checkpoint.key";

/// Why a backup, restore or verification failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target (or source) directory cannot be used as it is.
    #[error("{0}")]
    Target(String),
    /// Another backup is being taken on this hub.
    #[error("a backup of this hub is already being taken; wait for it to finish")]
    Busy,
    /// A hub is running on the data directory an offline command was given.
    #[error("{0}")]
    Held(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    /// A file of the backup could not be written or read.
    #[error("{0}")]
    Io(String),
    /// The backup is not one this hub can restore, or the restored data
    /// is not what the manifest says.
    #[error("{0}")]
    Manifest(String),
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> BackupError {
    BackupError::Io(format!("cannot {what} {}: {e}", path.display()))
}

/// Where a hub keeps what a backup copies besides its store.
#[derive(Debug, Clone)]
pub struct BackupSource {
    pub data_dir: PathBuf,
    /// The checkpoint key's path; copied only when it lies in the data
    /// directory (one kept elsewhere is backed up with the CA's material).
    pub checkpoint_key: PathBuf,
    /// The hub's checkpoint key (vkey), recorded in the manifest.
    pub hub_key: Option<String>,
    /// Bytes a backup leaves free on its disk: twice the hub's reserve
    /// (`[hub] min_free_mib`), so that a backup onto the data disk cannot
    /// stop the hub's writes.
    pub keep_free: u64,
}

/// `backup.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: String,
    /// RFC 3339, and the same in microseconds.
    pub taken_at: String,
    pub taken_at_micros: i64,
    pub hub_version: String,
    pub storage_format: String,
    /// The last journal commit the copy holds.
    pub commit: u64,
    pub store_file: String,
    pub store_records: u64,
    pub store_bytes: u64,
    pub store_sha256: String,
    /// The hub's checkpoint key (vkey, public) the checkpoints verify with.
    pub hub_key: Option<String>,
    /// File names in the backup directory, when copied.
    pub checkpoint_key: Option<String>,
    pub admin_audit: Option<String>,
    pub channels: BTreeMap<String, ChannelManifest>,
}

/// One channel in a backup: its entries, and its latest signed checkpoint
/// (which covers `checkpoint_size` of them; entries after it were
/// acknowledged before the copy was cut, and are in it too).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelManifest {
    pub size: u64,
    pub checkpoint_size: Option<u64>,
    pub checkpoint: Option<String>,
}

/// One backup at a time per process: a second would only wait for the
/// first's hold on the background flush.
static RUNNING: AtomicBool = AtomicBool::new(false);

struct Running;

impl Running {
    fn start() -> Result<Self, BackupError> {
        RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Running)
            .map_err(|_| BackupError::Busy)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// A directory that is new, or empty: a backup or a restore never mixes
/// with what is there. True when it was created here.
fn prepare_empty_dir(dir: &Path, what: &str) -> Result<bool, BackupError> {
    let shown_dir = dir.display().to_string();
    let shown_dir = shown(&shown_dir);
    match std::fs::read_dir(dir) {
        Ok(mut items) => {
            if items.next().is_some() {
                return Err(BackupError::Target(format!(
                    "{what} {shown_dir} is not empty; give a new or empty directory"
                )));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_dir_durably(dir).map_err(|e| {
                BackupError::Target(format!("cannot create {what} {shown_dir}: {e}"))
            })?;
            Ok(true)
        }
        Err(e) => Err(BackupError::Target(format!(
            "cannot use {what} {shown_dir}: {e}"
        ))),
    }
}

/// Removes what a failed backup or restore wrote into `dir`, and `dir`
/// itself if it made it, so that nothing half-written looks complete.
fn clean_up(dir: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(dir);
    } else if let Ok(items) = std::fs::read_dir(dir) {
        for item in items.flatten() {
            let path = item.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// Copies a file into `to`, 0600 from its creation.
fn copy_private(from: &Path, to: &Path) -> Result<(), BackupError> {
    let bytes = std::fs::read(from).map_err(|e| io_error("read", from, e))?;
    tongbao_proto::secret_file::create_new(to, &bytes).map_err(|e| io_error("write", to, e))
}

/// The size a signed checkpoint note covers, if it reads as one.
fn note_size(note: &str) -> Option<u64> {
    let text = parse_note(note).ok()?.text;
    Checkpoint::parse_body(&text).ok().map(|c| c.size)
}

/// Takes a backup of `store` into `to` (new or empty), while the hub
/// serves; returns the manifest written.
pub fn backup(
    store: &dyn Store,
    source: &BackupSource,
    to: &Path,
) -> Result<Manifest, BackupError> {
    let _one = Running::start()?;
    let created = prepare_empty_dir(to, "the backup directory")?;
    let written = write_backup(store, source, to);
    if written.is_err() {
        clean_up(to, created);
    }
    written
}

fn write_backup(
    store: &dyn Store,
    source: &BackupSource,
    to: &Path,
) -> Result<Manifest, BackupError> {
    // A backup inside the data directory would be copied by the next one.
    if let (Ok(data), Ok(target)) = (source.data_dir.canonicalize(), to.canonicalize())
        && target.starts_with(&data)
    {
        return Err(BackupError::Target(format!(
            "the backup directory {} is inside the data directory; back up elsewhere",
            shown(&to.display().to_string())
        )));
    }
    let summary = store.backup_records(&to.join(STORE_FILE), source.keep_free)?;
    let key_in_data = source.checkpoint_key.parent() == Some(source.data_dir.as_path())
        && source.checkpoint_key.is_file();
    let checkpoint_key = if key_in_data {
        copy_private(&source.checkpoint_key, &to.join(CHECKPOINT_KEY))?;
        Some(CHECKPOINT_KEY.to_string())
    } else {
        None
    };
    // The trail is written from the store's records in the file format
    // earlier hubs kept it in; a restore moves it into the store again.
    let trail = to.join(crate::admin_audit::ADMIN_AUDIT_FILE);
    crate::admin_audit::write_jsonl(store, &source.data_dir, &trail)
        .map_err(|e| BackupError::Io(format!("cannot copy the admin audit trail: {e}")))?;
    let admin_audit = Some(crate::admin_audit::ADMIN_AUDIT_FILE.to_string());
    let now = tongbao_proto::now_micros();
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        taken_at: tongbao_proto::format_micros(now),
        taken_at_micros: now,
        hub_version: env!("CARGO_PKG_VERSION").into(),
        storage_format: summary.storage_format.clone(),
        commit: summary.commit,
        store_file: STORE_FILE.into(),
        store_records: summary.records,
        store_bytes: summary.bytes,
        store_sha256: summary.sha256.clone(),
        hub_key: source.hub_key.clone(),
        checkpoint_key,
        admin_audit,
        channels: summary
            .channels
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    ChannelManifest {
                        size: c.size,
                        checkpoint_size: c.checkpoint.as_deref().and_then(note_size),
                        checkpoint: c.checkpoint.clone(),
                    },
                )
            })
            .collect(),
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Io(format!("cannot encode the manifest: {e}")))?;
    let path = to.join(MANIFEST);
    tongbao_proto::secret_file::create_new(&path, &text)
        .map_err(|e| io_error("write", &path, e))?;
    sync_dir(to)?;
    Ok(manifest)
}

/// Refuses a data directory whose database a running hub holds, naming
/// the process where the system says which.
pub fn refuse_if_held(dir: &Path) -> Result<(), BackupError> {
    let db = dir.join("db");
    let file = match std::fs::File::open(&db) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("open", &db, e)),
    };
    match file.try_lock() {
        // Dropping `file` lets the probe's own lock go.
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = lock_holder(&file)
                .map(|pid| format!(" (process {pid})"))
                .unwrap_or_default();
            Err(BackupError::Held(format!(
                "a hub{holder} is running on the data directory {} (its database is locked); \
                 stop it first, or back up while it serves with `tongbao-hub backup --dir ADMIN --to DIR`",
                dir.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_error("lock", &db, e)),
    }
}

/// The process holding a lock on `file`, from `/proc/locks` (Linux).
fn lock_holder(file: &std::fs::File) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let inode = file.metadata().ok()?.ino();
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        locks.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields
                .iter()
                .position(|f| f.ends_with(&format!(":{inode}")))?;
            fields.get(at.checked_sub(1)?)?.parse().ok()
        })
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        None
    }
}

/// What `verify-data` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub channels: u64,
    pub entries: u64,
    pub checkpoints: u64,
    /// Records of the admin audit trail, their chain checked.
    pub admin_records: u64,
    /// Each channel's size and latest stored checkpoint (a note).
    pub sizes: BTreeMap<String, (u64, Option<String>)>,
    /// What failed, each naming its channel (and entry).
    pub failures: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// One line: what was checked.
    pub fn summary(&self) -> String {
        format!(
            "{} channel(s), {} entries, {} checkpoint(s) checked, and {} admin trail record(s)",
            self.channels, self.entries, self.checkpoints, self.admin_records
        )
    }
}

/// The hub key's verifier: `given`, else one made from the checkpoint key
/// in the data directory, named as the stored checkpoints' origins say.
fn hub_verifier(
    dir: &Path,
    given: Option<NoteVerifier>,
    checkpoints: &BTreeMap<String, String>,
) -> Result<Option<NoteVerifier>, BackupError> {
    if given.is_some() {
        return Ok(given);
    }
    key_file_verifier(&dir.join(CHECKPOINT_KEY), checkpoints)
}

/// A verifier for the checkpoint key in `path` (None if there is no such
/// file), named as the stored checkpoints' origins say.
pub fn key_file_verifier(
    path: &Path,
    checkpoints: &BTreeMap<String, String>,
) -> Result<Option<NoteVerifier>, BackupError> {
    let path = path.to_path_buf();
    let pem = match std::fs::read_to_string(&path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read", &path, e)),
    };
    let key = tongbao_proto::keys::SigningKey::from_pem(&pem)
        .map_err(|e| BackupError::Io(format!("cannot read {}: {e}", path.display())))?;
    // "<log_name>/<channel>": the name is what precedes the channel.
    let name = checkpoints.iter().find_map(|(channel, note)| {
        let text = parse_note(note).ok()?.text;
        let origin = Checkpoint::parse_body(&text).ok()?.origin;
        origin
            .strip_suffix(&format!("/{channel}"))
            .map(str::to_string)
    });
    let Some(name) = name else {
        return Ok(None);
    };
    NoteVerifier::new(&name, KeyType::Ed25519, key.public_key())
        .map(Some)
        .map_err(|e| BackupError::Io(format!("the checkpoint key {}: {e}", path.display())))
}

/// Checks a stopped hub's data directory offline: every entry against its
/// leaf hash and its place in the chain, every stored Merkle hash against
/// the leaf hashes, every audit index row against its entry, every
/// entry's message id against its record, and every
/// channel's stored checkpoint (its signature under the hub key, and its
/// root over the entries). Refuses a directory
/// a hub runs on. Opening the store replays its journal, as a start would.
pub fn verify_data(dir: &Path, hub_key: Option<NoteVerifier>) -> Result<VerifyReport, BackupError> {
    refuse_if_held(dir)?;
    if !dir.join("db").is_file() {
        return Err(BackupError::Target(format!(
            "{} holds no hub data (no database file db in it)",
            shown(&dir.display().to_string())
        )));
    }
    let store = SledStore::open_keeping_free(dir, true, 0)?;
    verify_store(&store, dir, hub_key)
}

fn verify_store(
    store: &SledStore,
    dir: &Path,
    hub_key: Option<NoteVerifier>,
) -> Result<VerifyReport, BackupError> {
    let heads = store.channel_heads()?;
    let checkpoints = store.checkpoints()?;
    let mut report = VerifyReport::default();
    let verifier = hub_verifier(dir, hub_key, &checkpoints)?;
    if verifier.is_none() && !checkpoints.is_empty() {
        report.failures.push(format!(
            "the checkpoints' signatures cannot be checked: no {CHECKPOINT_KEY} in {} and no --hub-key given",
            dir.display()
        ));
    }
    for (channel, head) in &heads {
        report.channels += 1;
        match check_channel(store, channel, head) {
            Ok(()) => report.entries += head.next_seq,
            Err(e) => report.failures.push(e.to_string()),
        }
        report.sizes.insert(
            channel.clone(),
            (head.next_seq, checkpoints.get(channel).cloned()),
        );
    }
    // Each audit index row must name an entry that is there, at its time.
    report.failures.extend(store.check_audit_rows()?.failures);
    report.failures.extend(store.check_message_ids()?);
    match crate::admin_audit::verify(store, dir) {
        Ok(records) => report.admin_records = records,
        Err(e) => report.failures.push(e.to_string()),
    }
    for (channel, note) in &checkpoints {
        let size = heads.get(channel).map_or(0, |h| h.next_seq);
        if !heads.contains_key(channel) {
            report
                .sizes
                .insert(channel.clone(), (0, Some(note.clone())));
        }
        let Some(verifier) = &verifier else { continue };
        match check_checkpoint(store, verifier, channel, note, size) {
            Ok(_) => report.checkpoints += 1,
            Err(e) => {
                // Most refusals name the channel themselves.
                let text = e.to_string();
                report.failures.push(if text.starts_with("channel ") {
                    text
                } else {
                    format!("channel {channel}: checkpoint: {text}")
                });
            }
        }
    }
    Ok(report)
}

/// Every entry of a channel and the Merkle hashes stored with it.
fn check_channel(store: &SledStore, channel: &str, head: &ChannelHead) -> Result<(), LogError> {
    check_entries_deep(store, channel, head, |_| Ok::<(), LogError>(()))
}

/// Writes a backup into a new data directory `dir` (missing or empty),
/// then checks the restored data as `verify-data` does and against the
/// manifest. Returns the manifest and the check's report.
pub fn restore(
    from: &Path,
    dir: &Path,
    hub_key: Option<NoteVerifier>,
) -> Result<(Manifest, VerifyReport), BackupError> {
    let manifest = read_manifest(from)?;
    let created = prepare_empty_dir(dir, "the data directory")?;
    let restored = restore_into(from, dir, &manifest, hub_key);
    if restored.is_err() {
        clean_up(dir, created);
    }
    restored.map(|report| (manifest, report))
}

/// Reads and checks a backup's manifest.
pub fn read_manifest(from: &Path) -> Result<Manifest, BackupError> {
    let path = from.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|e| {
        BackupError::Manifest(format!(
            "{} has no readable {MANIFEST} ({e}): not a complete backup",
            from.display()
        ))
    })?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        BackupError::Manifest(format!("{} is not a backup manifest: {e}", path.display()))
    })?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(BackupError::Manifest(format!(
            "{} is in format {:?}; this hub restores {MANIFEST_FORMAT:?}",
            path.display(),
            shown(&manifest.format)
        )));
    }
    Ok(manifest)
}

/// A file name the manifest gives, kept inside the backup directory.
fn named_file(from: &Path, name: &str) -> Result<PathBuf, BackupError> {
    let plain = Path::new(name)
        .file_name()
        .is_some_and(|n| n == std::ffi::OsStr::new(name));
    if !plain {
        return Err(BackupError::Manifest(format!(
            "the manifest names {:?}, which is not a file name",
            shown(name)
        )));
    }
    Ok(from.join(name))
}

fn restore_into(
    from: &Path,
    dir: &Path,
    manifest: &Manifest,
    hub_key: Option<NoteVerifier>,
) -> Result<VerifyReport, BackupError> {
    // Without a key given, the manifest's: it catches damage, not a
    // backup forged whole (the hub's own start, with its configured key,
    // and its clients' pinned key catch that).
    let hub_key = match hub_key {
        Some(k) => Some(k),
        None => manifest
            .hub_key
            .as_deref()
            .map(NoteVerifier::from_vkey)
            .transpose()
            .map_err(|e| BackupError::Manifest(format!("the manifest's hub_key: {e}")))?,
    };
    let dump = named_file(from, &manifest.store_file)?;
    let summary = SledStore::restore_records(&dump, dir)?;
    if summary.sha256 != manifest.store_sha256 || summary.records != manifest.store_records {
        return Err(BackupError::Manifest(format!(
            "{} holds {} records with SHA-256 {}, and the manifest says {} with {}: \
             the file is not the one this backup wrote",
            dump.display(),
            summary.records,
            summary.sha256,
            manifest.store_records,
            manifest.store_sha256
        )));
    }
    for name in [&manifest.checkpoint_key, &manifest.admin_audit]
        .into_iter()
        .flatten()
    {
        copy_private(&named_file(from, name)?, &dir.join(name))?;
    }
    sync_dir(dir)?;
    let store = SledStore::open_keeping_free(dir, true, 0)?;
    // The trail goes into the store as a start would move it: a restored
    // directory is laid out as a running hub's.
    crate::admin_audit::move_in(&store, dir)
        .map_err(|e| BackupError::Manifest(format!("the backup's admin audit trail: {e}")))?;
    let report = verify_store(&store, dir, hub_key)?;
    drop(store);
    if !report.ok() {
        return Err(BackupError::Manifest(format!(
            "the restored data does not verify: {}",
            report.failures.join("; ")
        )));
    }
    let restored: BTreeMap<&String, (u64, Option<&String>)> = report
        .sizes
        .iter()
        .map(|(c, (size, note))| (c, (*size, note.as_ref())))
        .collect();
    let expected: BTreeMap<&String, (u64, Option<&String>)> = manifest
        .channels
        .iter()
        .map(|(c, m)| (c, (m.size, m.checkpoint.as_ref())))
        .collect();
    if restored != expected {
        let differ: Vec<&str> = restored
            .keys()
            .chain(expected.keys())
            .filter(|c| restored.get(*c) != expected.get(*c))
            .map(|c| c.as_str())
            .collect();
        return Err(BackupError::Manifest(format!(
            "the restored channels differ from the manifest's: {}",
            differ.join(", ")
        )));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn source(data: &Path) -> BackupSource {
        BackupSource {
            data_dir: data.to_path_buf(),
            checkpoint_key: data.join(CHECKPOINT_KEY),
            hub_key: None,
            keep_free: 0,
        }
    }

    #[test]
    fn one_backup_at_a_time_and_never_inside_the_data_directory() -> TestResult {
        let base = tempfile::tempdir()?;
        let data = base.path().join("data");
        let store = SledStore::open(&data, true)?;
        // While one runs, a second is refused and writes nothing.
        {
            let _first = Running::start()?;
            let to = base.path().join("second");
            assert!(matches!(
                backup(&store, &source(&data), &to),
                Err(BackupError::Busy)
            ));
            assert!(!to.exists());
        }
        // Inside the data directory: refused, and the directory made for
        // it removed again.
        let inside = data.join("backups");
        match backup(&store, &source(&data), &inside) {
            Err(BackupError::Target(m)) => assert!(m.contains("inside the data directory"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(!inside.exists());
        // A disk that would be left too full: refused, nothing left behind.
        let mut greedy = source(&data);
        greedy.keep_free = u64::MAX / 2;
        let to = base.path().join("full");
        match backup(&store, &greedy, &to) {
            Err(BackupError::Store(StoreError::NoRoom(m))) => {
                assert!(m.contains("MiB free"), "{m}")
            }
            other => panic!("expected NoRoom, got {other:?}"),
        }
        assert!(!to.exists());
        // Elsewhere, an empty store backs up, manifest last.
        let to = base.path().join("b1");
        let manifest = backup(&store, &source(&data), &to)?;
        assert!(manifest.channels.is_empty());
        assert_eq!(read_manifest(&to)?, manifest);
        Ok(())
    }
}
