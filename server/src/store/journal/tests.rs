//! Tests of the commit journal: appends, replay, damage, retiring files.

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn files(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

#[test]
fn records_read_back_in_order_across_reopens() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (j, read) = Journal::open(dir.path(), true, 0)?;
    assert!(read.is_empty());
    for id in 1..=5u64 {
        j.append(id, &vec![id as u8; id as usize * 10])?;
    }
    assert_eq!(j.sync()?, Some(5));
    assert_eq!(j.sync()?, None, "nothing new to write");
    #[cfg(unix)]
    for file in files(dir.path())? {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", file.display());
    }
    drop(j);
    let (j, read) = Journal::open(dir.path(), true, 0)?;
    let ids: Vec<u64> = read.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    assert_eq!(read[2].payload, vec![3u8; 30]);
    j.append(6, b"six")?;
    j.sync()?;
    drop(j);
    // The database already holds up to 4: only what follows comes back.
    let (j, read) = Journal::open(dir.path(), true, 4)?;
    assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![5, 6]);
    assert_eq!(read[1].payload, b"six");
    drop(j);
    // A database ahead of the journal (it flushed commits the crash
    // kept from the journal, never acknowledged): nothing to replay,
    // and appends continue after the database's last commit.
    let (j, read) = Journal::open(dir.path(), true, 9)?;
    assert!(read.is_empty());
    j.append(10, b"ten")?;
    j.sync()?;
    drop(j);
    let (_, read) = Journal::open(dir.path(), true, 9)?;
    assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![10]);
    Ok(())
}

#[test]
fn a_torn_tail_is_cut_off_and_appends_continue() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (j, _) = Journal::open(dir.path(), true, 0)?;
    for id in 1..=3u64 {
        j.append(id, &[7u8; 100])?;
    }
    j.sync()?;
    drop(j);
    let path = files(dir.path())?.pop().ok_or("no journal file")?;
    let full = std::fs::metadata(&path)?.len();
    // The crash cut the last record in the middle of its payload.
    OpenOptions::new()
        .write(true)
        .open(&path)?
        .set_len(full - 40)?;
    let (j, read) = Journal::open(dir.path(), true, 0)?;
    assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(
        std::fs::metadata(&path)?.len(),
        full - (HEADER as u64 + 100)
    );
    j.append(3, b"again")?;
    j.sync()?;
    drop(j);
    let (_, read) = Journal::open(dir.path(), true, 0)?;
    assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(read[2].payload, b"again");
    Ok(())
}

#[test]
fn a_flipped_byte_in_the_newest_record_drops_only_that_record() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (j, _) = Journal::open(dir.path(), true, 0)?;
    j.append(1, b"first")?;
    j.append(2, b"second")?;
    j.sync()?;
    drop(j);
    let path = files(dir.path())?.pop().ok_or("no journal file")?;
    let mut bytes = std::fs::read(&path)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes)?;
    let (_, read) = Journal::open(dir.path(), true, 0)?;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].payload, b"first");
    Ok(())
}

/// Five records in one file, and where record `n` (1-based) begins.
fn five_records(dir: &Path) -> Result<(PathBuf, Vec<usize>), Box<dyn std::error::Error>> {
    let (j, _) = Journal::open(dir, true, 0)?;
    let mut starts = Vec::new();
    let mut at = 0;
    for id in 1..=5u64 {
        starts.push(at);
        let payload = vec![id as u8; 40 + id as usize];
        at += HEADER + payload.len();
        j.append(id, &payload)?;
    }
    j.sync()?;
    drop(j);
    let path = files(dir)?.pop().ok_or("no journal file")?;
    Ok((path, starts))
}

#[test]
fn damage_in_the_middle_of_the_newest_file_refuses_the_start() -> TestResult {
    // Payload, checksum, length and id of record 2 each damaged in
    // turn: records 3 to 5 follow, so it is no torn tail.
    for (what, offset) in [
        ("payload", HEADER + 3),
        ("checksum", 5),
        ("length", 1),
        ("id", 9),
    ] {
        let dir = tempfile::tempdir()?;
        let (path, starts) = five_records(dir.path())?;
        let mut bytes = std::fs::read(&path)?;
        bytes[starts[1] + offset] ^= 0x40;
        std::fs::write(&path, &bytes)?;
        match Journal::open(dir.path(), true, 0) {
            Err(StoreError::Corrupt(m)) => {
                assert!(
                    m.contains(&format!("unreadable from byte {}", starts[1])),
                    "{what}: {m}"
                );
                assert!(
                    m.contains(&format!("commit 3 follows at byte {}", starts[2])),
                    "{what}: {m}"
                );
                assert!(m.contains(&path.display().to_string()), "{what}: {m}");
            }
            other => panic!("{what}: expected corruption, got {other:?}"),
        }
        // Nothing was cut: the file is as the damage left it.
        assert_eq!(std::fs::read(&path)?, bytes, "{what}");
    }
    Ok(())
}

#[test]
fn damage_before_records_the_database_holds_is_no_loss() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (path, starts) = five_records(dir.path())?;
    let mut bytes = std::fs::read(&path)?;
    bytes[starts[3] + HEADER] ^= 1;
    std::fs::write(&path, &bytes)?;
    // Record 5 follows the damaged 4, but the database holds it.
    let (_, read) = Journal::open(dir.path(), true, 5)?;
    assert!(read.is_empty());
    // Holding only up to 4, commit 5 would be lost: refused.
    let dir = tempfile::tempdir()?;
    let (path, starts) = five_records(dir.path())?;
    let mut bytes = std::fs::read(&path)?;
    bytes[starts[3] + HEADER] ^= 1;
    std::fs::write(&path, &bytes)?;
    assert!(matches!(
        Journal::open(dir.path(), true, 4),
        Err(StoreError::Corrupt(_))
    ));
    Ok(())
}

#[test]
fn a_torn_tail_names_the_commits_it_cuts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (path, starts) = five_records(dir.path())?;
    let bytes = std::fs::read(&path)?;
    // Record 5's header whole, its payload cut: commit 5 is named.
    assert_eq!(
        torn_commits(&bytes[..starts[4] + HEADER + 2], starts[4], 4),
        "5"
    );
    // Only part of its header written: the commit after the last.
    assert_eq!(torn_commits(&bytes[..starts[4] + 3], starts[4], 4), "5");
    // A header naming a later commit (a batch of records cut short).
    let mut later = bytes[..starts[4]].to_vec();
    encode_record(&mut later, 7, b"seven");
    later.truncate(later.len() - 2);
    assert_eq!(torn_commits(&later, starts[4], 4), "5..=7");
    Ok(())
}

#[test]
fn record_beyond_finds_only_whole_later_records() {
    let mut bytes = Vec::new();
    encode_record(&mut bytes, 1, b"one");
    let one = bytes.len();
    encode_record(&mut bytes, 2, b"two");
    assert_eq!(record_beyond(&bytes, 0, 0), Some((one, 2)));
    assert_eq!(record_beyond(&bytes, 0, 2), None, "not a later commit");
    assert_eq!(record_beyond(&bytes, one, 0), None, "none starts after it");
    bytes.pop();
    assert_eq!(record_beyond(&bytes, 0, 0), None, "cut short");
    assert_eq!(record_beyond(&[0u8; 100], 0, 0), None, "zero-filled");
}

#[test]
fn damage_before_newer_files_is_corruption_not_a_tail() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (j, _) = Journal::open(dir.path(), true, 0)?;
    j.append(1, b"one")?;
    j.append(2, b"two")?;
    j.sync()?;
    drop(j);
    // A newer file follows (as after a restart).
    let (j, _) = Journal::open(dir.path(), true, 0)?;
    j.append(3, b"three")?;
    j.sync()?;
    drop(j);
    let oldest = files(dir.path())?.first().cloned().ok_or("no file")?;
    let mut bytes = std::fs::read(&oldest)?;
    bytes[HEADER] ^= 0xff;
    std::fs::write(&oldest, &bytes)?;
    match Journal::open(dir.path(), true, 0) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("unreadable"), "{m}"),
        other => panic!("expected corruption, got {other:?}"),
    }
    // Once the database holds what the damaged file held, it is no loss.
    let (_, read) = Journal::open(dir.path(), true, 2)?;
    assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![3]);
    Ok(())
}

#[test]
fn an_empty_file_left_by_a_failed_rotation_is_not_a_newer_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (j, _) = Journal::open(dir.path(), true, 0)?;
    for id in 1..=4u64 {
        j.append(id, &[4u8; 50])?;
    }
    j.sync()?;
    drop(j);
    // A rotation at commit 3 created its file and failed; commits 3 and
    // 4 went on in the first file, whose last record the crash tore.
    std::fs::write(dir.path().join(file_name(3)), b"")?;
    let path = dir.path().join(file_name(1));
    let full = std::fs::metadata(&path)?.len();
    OpenOptions::new()
        .write(true)
        .open(&path)?
        .set_len(full - 10)?;
    let (j, read) = Journal::open(dir.path(), true, 0)?;
    assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(!dir.path().join(file_name(3)).exists());
    j.append(4, b"again")?;
    j.sync()?;
    drop(j);
    let (_, read) = Journal::open(dir.path(), true, 0)?;
    assert_eq!(read.len(), 4);
    Ok(())
}

#[test]
fn commits_missing_between_files_are_corruption() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (j, _) = Journal::open(dir.path(), true, 0)?;
    j.append(1, b"one")?;
    j.append(2, b"two")?;
    j.append(3, b"three")?;
    j.sync()?;
    drop(j);
    // Commit 3 zero-filled (its write never reached the disk), and a
    // later file resumes at 4 as if nothing were missing.
    let oldest = files(dir.path())?.first().cloned().ok_or("no file")?;
    let mut bytes = std::fs::read(&oldest)?;
    let three = bytes.len() - (HEADER + 5);
    bytes[three..].fill(0);
    std::fs::write(&oldest, &bytes)?;
    let mut four = Vec::new();
    encode_record(&mut four, 4, b"four");
    std::fs::write(dir.path().join(file_name(4)), &four)?;
    match Journal::open(dir.path(), true, 0) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("unreadable"), "{m}"),
        other => panic!("expected corruption, got {other:?}"),
    }
    // A file that skips ahead, whole and checksummed, is no better.
    std::fs::remove_file(&oldest)?;
    match Journal::open(dir.path(), true, 0) {
        Err(StoreError::Corrupt(m)) => {
            assert!(m.contains("commits 1..=3 are missing"), "{m}")
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    Ok(())
}

#[test]
fn after_a_failed_write_nothing_more_is_reported_durable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (j, _) = Journal::open(dir.path(), true, 0)?;
    j.append(1, b"one")?;
    assert_eq!(j.sync()?, Some(1));
    // The disk refuses the next write.
    {
        let mut files = j.files.lock().map_err(|_| "poisoned")?;
        let path = j.dir.join(file_name(files.current.first));
        files.current.file = File::open(path)?;
    }
    j.append(2, b"two")?;
    assert!(j.sync().is_err());
    // The disk recovers (space freed, say).
    {
        let mut files = j.files.lock().map_err(|_| "poisoned")?;
        let path = j.dir.join(file_name(files.current.first));
        files.current.file = OpenOptions::new().append(true).open(path)?;
    }
    // Commit 2 was taken from the queue when its write failed: no later
    // call may pretend it, or anything after it, is durable.
    match j.append(3, b"three") {
        Err(StoreError::Database(m)) => assert!(m.contains("restart the hub"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(j.sync().is_err());
    drop(j);
    let (_, read) = Journal::open(dir.path(), true, 0)?;
    assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1]);
    Ok(())
}

#[test]
fn missing_commits_are_corruption() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (j, _) = Journal::open(dir.path(), true, 0)?;
    j.append(1, b"one")?;
    j.append(3, b"three")?;
    j.sync()?;
    drop(j);
    match Journal::open(dir.path(), true, 0) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("commit 3 where commit 2"), "{m}"),
        other => panic!("expected corruption, got {other:?}"),
    }
    let dir = tempfile::tempdir()?;
    let (j, _) = Journal::open(dir.path(), true, 4)?;
    j.append(5, b"five")?;
    j.sync()?;
    drop(j);
    // The database lost commits 3 and 4, which the journal no longer has.
    match Journal::open(dir.path(), true, 2) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("commits 3..=4 are missing"), "{m}"),
        other => panic!("expected corruption, got {other:?}"),
    }
    Ok(())
}

#[test]
fn a_close_removes_the_files_only_when_everything_is_flushed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (j, _) = Journal::open(dir.path(), true, 0)?;
    j.append(1, b"a")?;
    j.append(2, b"b")?;
    j.sync()?;
    // The database holds commit 1 only: commit 2 stays journaled.
    assert!(!j.close(1)?);
    assert_eq!(files(dir.path())?.len(), 1);
    j.append(3, b"c")?;
    // Queued, not yet written: kept as well.
    assert!(!j.close(3)?);
    j.sync()?;
    assert!(j.close(3)?);
    assert!(files(dir.path())?.is_empty());
    match j.append(4, b"d") {
        Err(StoreError::Database(m)) => assert!(m.contains("closed"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    drop(j);
    // The next start continues after the database's last commit.
    let (j, read) = Journal::open(dir.path(), true, 3)?;
    assert!(read.is_empty());
    j.append(4, b"d")?;
    j.sync()?;
    Ok(())
}

#[test]
fn files_are_retired_only_when_all_their_commits_are_flushed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (j, _) = Journal::open(dir.path(), true, 0)?;
    j.append(1, b"a")?;
    j.sync()?;
    drop(j);
    let (j, _) = Journal::open(dir.path(), true, 0)?;
    j.append(2, b"b")?;
    j.append(3, b"c")?;
    j.sync()?;
    drop(j);
    let (j, read) = Journal::open(dir.path(), true, 0)?;
    assert_eq!(read.len(), 3);
    assert_eq!(j.file_count(), 3);
    j.retire(0)?;
    assert_eq!(files(dir.path())?.len(), 3, "nothing flushed yet");
    j.retire(2)?;
    // The first file (commit 1) goes; the second holds commit 3 too.
    assert_eq!(files(dir.path())?.len(), 2);
    j.retire(3)?;
    assert_eq!(files(dir.path())?.len(), 1, "only the current file is left");
    assert_eq!(j.file_count(), 1);
    Ok(())
}
