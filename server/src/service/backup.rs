//! `Admin/Backup` in gRPC terms: where the copy may go, and what each
//! failure is called. The copy itself is `crate::backup`'s.

use super::{HubState, storage_status};
use crate::backup::BackupError;
use std::path::Path;
use tongbao_proto::echo::shown;
use tongbao_proto::pb;
use tonic::Status;

/// Linux's PATH_MAX.
const MAX_PATH_BYTES: usize = 4096;

/// Takes a backup into `to` while the hub serves; the answer and what
/// the admin trail records of it.
pub(super) fn take(state: &HubState, to: &str) -> Result<(pb::BackupResponse, String), Status> {
    // Longer than any path the system takes: refused without echoing it.
    if to.len() > MAX_PATH_BYTES {
        return Err(Status::invalid_argument(format!(
            "backup directory of {} bytes is longer than a path may be ({MAX_PATH_BYTES} bytes)",
            to.len()
        )));
    }
    let path = Path::new(to);
    // A relative path would be the hub's working directory's, which the
    // operator cannot see from the call.
    if !path.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "backup directory {:?} is not an absolute path; name a directory on the hub's machine from /",
            shown(to)
        )));
    }
    // The freshest checkpoints first, so that the copy's cover as much of
    // it as they can; a failure here only leaves older ones in the copy.
    if let Err(e) = state.logs.refresh_all() {
        tracing::warn!(error = %e, "backup: cannot sign fresh checkpoints first");
    }
    let manifest =
        crate::backup::backup(state.store.as_ref(), &state.backup, path).map_err(|e| {
            tracing::warn!(error = %e, "backup failed; the hub serves on");
            backup_status(e)
        })?;
    let entries: u64 = manifest.channels.values().map(|c| c.size).sum();
    let done = format!(
        "backed up {} channel(s), {entries} entries (commit {}) to {}",
        manifest.channels.len(),
        manifest.commit,
        shown(to)
    );
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Status::internal(format!("cannot encode the manifest: {e}")))?;
    Ok((pb::BackupResponse { manifest: text }, done))
}

fn backup_status(e: BackupError) -> Status {
    match e {
        BackupError::Store(e) => match e {
            // The dump file could not be written: the target's fault.
            crate::store::StoreError::Database(m) => Status::failed_precondition(m),
            crate::store::StoreError::NoRoom(_) => Status::resource_exhausted(e.to_string()),
            other => storage_status(other),
        },
        BackupError::Busy => Status::failed_precondition(e.to_string()),
        BackupError::Target(_) | BackupError::Io(_) => Status::failed_precondition(e.to_string()),
        BackupError::Held(_) | BackupError::Manifest(_) | BackupError::Log(_) => {
            Status::internal(e.to_string())
        }
    }
}
