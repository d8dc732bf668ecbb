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
        // One save at a time in this process: two saves of one file (a
        // cancelled caller's still running) must not share the temporary.
        static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _saving = SAVING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        Ok(())
    }

    /// [`TrustState::save`] on a thread where blocking is allowed: it
    /// writes and syncs a file, which would stall the caller's runtime.
    pub(crate) async fn save_off_runtime(&self, path: &Path) -> Result<(), ClientError> {
        let (state, owned) = (self.clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || state.save(&owned))
            .await
            .map_err(|e| file_err(path, e))?
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
