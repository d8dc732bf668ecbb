//! What this client has verified of each channel, kept across restarts.
//!
//! The client remembers, per channel, the last checkpoint it verified. A
//! new checkpoint is accepted only if it is signed by the pinned hub key
//! and provably extends the remembered one; a smaller one (rollback) or an
//! inconsistent one (fork) is refused and both signed checkpoints are kept
//! as evidence. The file is replaced atomically (write, fsync, rename).

use crate::ClientError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The last verified checkpoint of one channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrustedCheckpoint {
    pub size: u64,
    /// Base64 root hash.
    pub root: String,
    /// The signed note itself, as evidence.
    pub note: String,
}

/// The trust state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrustState {
    /// The hub's checkpoint key (signed-note vkey), pinned on first use
    /// unless the client config names it.
    pub hub_key: Option<String>,
    pub channels: BTreeMap<String, TrustedCheckpoint>,
}

fn file_err(path: &Path, reason: impl ToString) -> ClientError {
    ClientError::File {
        what: "trust state",
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The order of this process's trust-state saves: each takes a number
/// when its state is taken, and the file keeps the highest number written.
/// Saves run one at a time (they share the file's temporary).
struct SaveOrder;

impl SaveOrder {
    fn next() -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    /// The highest number written to each file; held while saving.
    fn written() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, u64>> {
        static WRITTEN: std::sync::Mutex<BTreeMap<PathBuf, u64>> =
            std::sync::Mutex::new(BTreeMap::new());
        WRITTEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl TrustState {
    /// Reads the file, or starts empty if it does not exist yet.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| file_err(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(file_err(path, e)),
        }
    }

    /// Replaces the file atomically.
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        self.save_numbered(path, SaveOrder::next())
    }

    /// [`TrustState::save`] on a thread where blocking is allowed (it
    /// writes and syncs a file, which would stall the caller's runtime),
    /// or here when there is no runtime. The save's place in line is taken
    /// now, while the caller holds the state: a caller that stops waiting
    /// leaves its save running, and a later save must not be overwritten
    /// by it.
    pub(crate) async fn save_off_runtime(&self, path: &Path) -> Result<(), ClientError> {
        let number = SaveOrder::next();
        if tokio::runtime::Handle::try_current().is_err() {
            return self.save_numbered(path, number);
        }
        let (state, owned) = (self.clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || state.save_numbered(&owned, number))
            .await
            .map_err(|e| file_err(path, e))?
    }

    /// Writes the file unless a later save of this process (a higher
    /// `number`) has written it already: trust only moves forward.
    fn save_numbered(&self, path: &Path, number: u64) -> Result<(), ClientError> {
        let mut written = SaveOrder::written();
        if written.get(path).is_some_and(|&last| last > number) {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| file_err(path, e))?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| file_err(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| file_err(&tmp, e))?;
        f.sync_all().map_err(|e| file_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))?;
        if let Some(dir) = path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        written.insert(path.to_path_buf(), number);
        Ok(())
    }

    pub fn trusted(&self, channel: &str) -> Option<&TrustedCheckpoint> {
        self.channels.get(channel)
    }

    pub fn remember(&mut self, channel: &str, size: u64, root: &[u8], note: &str) {
        self.channels.insert(
            channel.to_string(),
            TrustedCheckpoint {
                size,
                root: STANDARD.encode(root),
                note: note.to_string(),
            },
        );
    }
}

/// Keeps two conflicting signed checkpoints side by side for whoever
/// investigates; returns where.
pub fn keep_evidence(trust_path: &Path, channel: &str, trusted: &str, served: &str) -> PathBuf {
    let dir = trust_path.with_extension("evidence");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{channel}-{}.txt", tongbao_proto::now_micros()));
    let text = format!(
        "Channel {channel}: the hub served a checkpoint that conflicts with one this client verified earlier.\n\n\
         Verified earlier:\n{trusted}\nServed now:\n{served}"
    );
    let _ = std::fs::write(&path, text);
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_size(size: u64) -> TrustState {
        let mut s = TrustState::default();
        s.remember("tax", size, &[7; 32], "note");
        s
    }

    #[test]
    fn an_earlier_save_finishing_late_does_not_undo_a_later_one()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("trust.json");
        let (older, newer) = (SaveOrder::next(), SaveOrder::next());
        at_size(10).save_numbered(&path, newer)?;
        // The save that took its place first (a cancelled caller's) ends last.
        at_size(5).save_numbered(&path, older)?;
        assert_eq!(TrustState::load(&path)?, at_size(10));
        // Later saves still land.
        at_size(12).save(&path)?;
        assert_eq!(TrustState::load(&path)?, at_size(12));
        Ok(())
    }

    #[test]
    fn saving_without_a_runtime_saves_in_place() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("trust.json");
        futures::executor::block_on(at_size(3).save_off_runtime(&path))?;
        assert_eq!(TrustState::load(&path)?, at_size(3));
        Ok(())
    }
}
