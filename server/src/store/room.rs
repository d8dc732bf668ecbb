//! Whether the data disk has room to start, or to upgrade an older
//! storage format, before anything is written: a start replays the
//! journal into the database, and an upgrade writes records again; both
//! must leave the configured reserve free (`[hub] min_free_mib`).

use super::StoreError;
use super::codec::{
    AUDIT_SCOPE, ENTRY, ENTRY_AT, FORMAT_4, FORMAT_5, FORMAT_5_TO_6, FORMAT_6, FORMAT_7,
    FORMAT_7_TO_8, MESSAGE, TREE_HASH,
};
use std::path::Path;

/// Refuses a start that could fill the disk: replaying the journal writes
/// about as much into the database as the journal holds (sled's own
/// recovery writes too), and the reserve must stay free after it.
pub(super) fn check_room_to_start(dir: &Path, reserve: u64) -> Result<(), StoreError> {
    if reserve == 0 {
        return Ok(());
    }
    let journal = journal_bytes(dir)?;
    let needed = reserve.saturating_add(journal);
    let free = free_space(dir)?;
    if free >= needed {
        return Ok(());
    }
    Err(StoreError::NoRoom(format!(
        "the data disk of {} has {} MiB free; starting needs {} MiB: the journal's {} MiB to \
         replay and the {} MiB kept free ([hub] min_free_mib). Free space on it and start again",
        dir.display(),
        free >> 20,
        needed.div_ceil(1 << 20),
        journal.div_ceil(1 << 20),
        reserve >> 20
    )))
}

/// Refuses to upgrade an older storage format without room for it, before
/// anything is changed: from format 2 or 3 the upgrade writes every entry
/// record and tree hash again into the segments; from format 4 it writes
/// the entries' places again in sled, as runs; from format 4 or 5 (or
/// older) it writes the audit index again in sled, as runs (counted as
/// its keys, more than the runs take); from format 7 (or older) it writes
/// the message id records into their index (counted as their keys and
/// values, more than the index takes). sled's file does not shrink for
/// what leaves it; the journal's replay and the reserve come on top.
pub(super) fn check_room_to_upgrade(
    dir: &Path,
    tree: &sled::Tree,
    format: &[u8],
    reserve: u64,
) -> Result<(), StoreError> {
    if reserve == 0 {
        return Ok(());
    }
    let (moving, what) = if [FORMAT_6, FORMAT_7, FORMAT_7_TO_8].contains(&format) {
        (
            bytes_of(tree, &[MESSAGE])?,
            "of message id records it moves into the message id index",
        )
    } else if format == FORMAT_5 || format == FORMAT_5_TO_6 {
        (
            bytes_of(tree, &[AUDIT_SCOPE, MESSAGE])?,
            "of audit index keys it writes again in sled as runs, and of message id records it \
             moves into the message id index",
        )
    } else if format == FORMAT_4 {
        (
            bytes_of(tree, &[ENTRY_AT, AUDIT_SCOPE, MESSAGE])?,
            "of entries' places and audit index keys it writes again in sled as runs, and of \
             message id records it moves into the message id index",
        )
    } else {
        (
            bytes_of(tree, &[ENTRY, TREE_HASH, AUDIT_SCOPE, MESSAGE])?,
            "of entries and tree hashes it copies into the entry segments, of audit index \
             keys it writes again in sled as runs, and of message id records it moves into \
             the message id index",
        )
    };
    let journal = journal_bytes(dir)?;
    let needed = reserve.saturating_add(journal).saturating_add(moving);
    let free = free_space(dir)?;
    if free >= needed {
        return Ok(());
    }
    Err(StoreError::NoRoom(format!(
        "the data disk of {} has {free} bytes free; upgrading its storage format needs {needed} \
         bytes: the {moving} bytes {what}, the journal's {journal} bytes to replay and the \
         {reserve} bytes kept free ([hub] min_free_mib). Nothing was changed; free space on it \
         and start again",
        dir.display(),
    )))
}

/// The bytes of every record of the `kinds` sled holds: the values that
/// an upgrade from format 2 or 3 appends to the segments, the keys and
/// values of format 4's places, or the keys of the audit index, which the
/// upgrades write again as runs.
fn bytes_of(tree: &sled::Tree, kinds: &[u8]) -> Result<u64, StoreError> {
    let mut bytes = 0u64;
    for kind in kinds {
        for kv in tree.scan_prefix([*kind, 0]) {
            let (k, v) = kv?;
            let counted = match *kind {
                // A message id record becomes 16 bytes, written twice at most
                // as runs merge.
                ENTRY_AT | MESSAGE => k.len() + v.len(),
                AUDIT_SCOPE => k.len(),
                _ => v.len(),
            };
            bytes = bytes.saturating_add(counted as u64);
        }
    }
    Ok(bytes)
}

/// The bytes the commit journal holds (all of it may be replayed).
fn journal_bytes(dir: &Path) -> Result<u64, StoreError> {
    let mut bytes = 0;
    if let Ok(files) = std::fs::read_dir(dir.join("journal")) {
        for file in files {
            bytes += file?.metadata()?.len();
        }
    }
    Ok(bytes)
}

#[cfg(test)]
thread_local! {
    /// The free space this thread's starts see, instead of the disk's.
    pub(super) static FREE_SPACE: std::cell::Cell<Option<u64>> =
        const { std::cell::Cell::new(None) };
}

/// Free space on the disk holding `dir` (as a test set it, in tests).
fn free_space(dir: &Path) -> Result<u64, StoreError> {
    #[cfg(test)]
    if let Some(free) = FREE_SPACE.get() {
        return Ok(free);
    }
    Ok(fs2::available_space(dir)?)
}
