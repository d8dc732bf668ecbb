//! Files that hold a secret: private keys of the hub, of units, offices
//! and operators.
//!
//! Such a file is created readable by its owner alone (0600) by the call
//! that creates it, never written first and narrowed afterwards: in that
//! window another user of the machine could open it and keep reading.
//! The hub, the client library and both CLIs write secrets through here.

use std::io::Write;
use std::path::Path;

/// Creates `path` with `contents`, 0600, durably; refuses (AlreadyExists)
/// if it exists, so that a key is never silently overwritten.
pub fn create_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = open_private(path)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if written.is_err() {
        drop(file);
        let _ = std::fs::remove_file(path);
    }
    written?;
    sync_parent(path)
}

/// Creates `path` as [`create_new`] does, with what `fill` writes through
/// a buffer: for contents too large to hold in memory. A failed `fill` or
/// write leaves no file behind.
pub fn create_new_streamed(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(open_private(path)?);
    let written = fill(&mut out).and_then(|()| {
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    });
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written?;
    sync_parent(path)
}

/// Replaces (or creates) `path` with `contents` atomically: a private
/// temporary file beside it, renamed over it once durable.
pub fn replace(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    replace_streamed(path, |out| out.write_all(contents))
}

/// Replaces (or creates) `path` as [`replace`] does, with what `fill`
/// writes through a buffer: for contents too large to hold in memory. A
/// failed `fill` or write leaves `path` as it was and no temporary file.
pub fn replace_streamed(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("a secret file needs a file name"))?;
    // Process and call both in the name: two threads replacing the same
    // file must not share (and remove) one temporary.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}-{call}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = create_new_streamed(&tmp, fill).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_parent(path)
}

/// Opens a new file for writing, created 0600 where the platform has modes.
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Makes the file's entry in its directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn mode(path: &Path) -> std::io::Result<u32> {
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
    }

    #[test]
    fn created_private_and_never_overwritten() -> TestResult {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("signing.key");
        create_new(&key, b"secret")?;
        assert_eq!(mode(&key)?, 0o600);
        assert_eq!(std::fs::read(&key)?, b"secret");
        let again = create_new(&key, b"other");
        assert_eq!(
            again.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::AlreadyExists)
        );
        assert_eq!(std::fs::read(&key)?, b"secret");
        Ok(())
    }

    #[test]
    fn streamed_private_and_nothing_left_when_filling_fails() -> TestResult {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("trail.jsonl");
        create_new_streamed(&file, |out| out.write_all(b"one\ntwo\n"))?;
        assert_eq!(mode(&file)?, 0o600);
        assert_eq!(std::fs::read(&file)?, b"one\ntwo\n");
        let failed = dir.path().join("failed.jsonl");
        let e = create_new_streamed(&failed, |out| {
            out.write_all(b"half")?;
            Err(std::io::Error::other("the source broke"))
        });
        assert!(e.is_err());
        assert!(!failed.exists());
        Ok(())
    }

    #[test]
    fn replaced_private_with_nothing_left_beside_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("signing.key");
        // A file another program left world-readable is replaced, not reused.
        std::fs::write(&key, b"old")?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))?;
        replace(&key, b"new")?;
        assert_eq!(mode(&key)?, 0o600);
        assert_eq!(std::fs::read(&key)?, b"new");
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
        Ok(())
    }

    #[test]
    fn a_streamed_replacement_that_fails_leaves_the_old_file_and_no_temporary() -> TestResult {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("export.json");
        replace_streamed(&file, |out| out.write_all(b"first"))?;
        let e = replace_streamed(&file, |out| {
            out.write_all(b"half")?;
            Err(std::io::Error::other("the source broke"))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(&file)?, b"first");
        assert_eq!(mode(&file)?, 0o600);
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
        Ok(())
    }

    #[test]
    fn replaced_from_many_threads_at_once_keeps_one_whole_version() -> TestResult {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("signing.key");
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let key = key.clone();
                std::thread::spawn(move || replace(&key, &[i; 4096]))
            })
            .collect();
        for t in threads {
            t.join().map_err(|_| "a thread panicked")??;
        }
        let bytes = std::fs::read(&key)?;
        assert_eq!(bytes.len(), 4096);
        assert!(bytes.iter().all(|b| *b == bytes[0]), "a mixed file");
        assert_eq!(mode(&key)?, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path())?.count(),
            1,
            "a temporary left behind"
        );
        Ok(())
    }
}
