//! Unit tests of the access log's files, tree, checks and exports.

use super::export::{Export, Filter, export_to, query, verify_export};
use super::files::{self, SegmentName};
use super::*;
use tongbao_proto::canonical::leaf_hash_of_bytes;
use tongbao_proto::checkpoint::NoteSigner;
use tongbao_proto::merkle::{stored_hash_count, stored_hashes_for_record};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const LOG: &str = "tongbao";

fn call(method: &str) -> AccessRecord {
    AccessRecord {
        at_micros: tongbao_proto::now_micros(),
        caller: "urn:tongbao:unit:tax".into(),
        method: method.into(),
        ..AccessRecord::default()
    }
}

/// The export of the log in `data`, as `audit-log export` writes it,
/// read back.
pub(super) fn export(
    data: &Path,
    checked: Option<(&NoteVerifier, &str)>,
    since_micros: Option<i64>,
) -> Result<Export, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    let written = export_to(&mut out, data, checked, since_micros)?;
    let export: Export = serde_json::from_slice(&out)?;
    assert_eq!(written, export.records.len());
    Ok(export)
}

/// A log of `n` records in `data`, closed; returns the key's verifier.
fn written(data: &Path, n: usize) -> Result<NoteVerifier, Box<dyn std::error::Error>> {
    let key = SigningKey::generate()?;
    let verifier = NoteSigner::new(LOG, &key)?.verifier()?;
    let log = AccessLog::open(data, &AccessLogConfig::default(), key, (LOG, None), true)?;
    for i in 0..n {
        if i % 3 == 0 {
            log.record_durably(call(&format!("/m/{i}")))
                .wait_blocking()
                .map_err(|e| e.to_string())?;
        } else {
            log.record(call(&format!("/m/{i}")));
        }
    }
    log.stop();
    Ok(verifier)
}

use tongbao_proto::checkpoint::NoteVerifier;

fn dir(data: &Path) -> std::path::PathBuf {
    data.join(files::DIR)
}

fn segment(data: &Path) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    Ok(files::list_segments(&dir(data))?
        .pop()
        .ok_or("no segment")?
        .1)
}

#[test]
fn the_frontier_stores_what_the_merkle_rules_store() -> TestResult {
    let mut all: Vec<tongbao_proto::Hash> = Vec::new();
    let mut frontier = Frontier::default();
    for n in 0..300u64 {
        let leaf = leaf_hash_of_bytes(&n.to_be_bytes());
        let want = stored_hashes_for_record(n, leaf, &all)?;
        assert_eq!(frontier.append(leaf)?, want, "record {n}");
        all.extend(want);
        assert_eq!(all.len() as u64, stored_hash_count(n + 1));
        assert_eq!(frontier.root()?, tree_hash(n + 1, &all)?, "size {}", n + 1);
    }
    Ok(())
}

#[test]
fn a_written_log_checks_exports_and_verifies() -> TestResult {
    let data = tempfile::tempdir()?;
    let verifier = written(data.path(), 40)?;
    let scanned = scan(&dir(data.path()), &verifier, &origin(LOG, None))?;
    assert_eq!(scanned.size, 40);
    assert_eq!(scanned.checkpoint.as_ref().map(|(c, _)| c.size), Some(40));
    // Every file is private to the hub's user.
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir(data.path()))? {
        let mode = entry?.metadata()?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let got = query(
        data.path(),
        &Filter {
            method: Some("/m/1".into()),
            ..Filter::default()
        },
    )?;
    assert_eq!(got.len(), 11, "/m/1 and /m/10../m/19");
    let exported = export(data.path(), Some((&verifier, &origin(LOG, None))), None)?;
    let text = serde_json::to_string(&exported)?;
    assert_eq!(verify_export(&text, &verifier)?.records, 40);
    // A changed record fails its proof, named.
    let changed = text.replacen("/m/7\\\"", "/m/8\\\"", 1);
    assert_ne!(changed, text);
    let e = verify_export(&changed, &verifier)
        .err()
        .ok_or("changed record verified")?;
    assert!(e.to_string().contains("record 7"), "{e}");
    // A record left out is named as missing.
    let mut fewer = exported.clone();
    fewer.records.remove(5);
    let e = verify_export(&serde_json::to_string(&fewer)?, &verifier)
        .err()
        .ok_or("a gap verified")?;
    assert!(e.to_string().contains("record 5 is missing"), "{e}");
    // Another key does not verify the checkpoint.
    let other = NoteSigner::new(LOG, &SigningKey::generate()?)?.verifier()?;
    assert!(verify_export(&text, &other).is_err());
    Ok(())
}

#[test]
fn changed_removed_and_cut_records_are_named() -> TestResult {
    let data = tempfile::tempdir()?;
    let verifier = written(data.path(), 12)?;
    let path = segment(data.path())?;
    let original = std::fs::read_to_string(&path)?;
    let check = || scan(&dir(data.path()), &verifier, &origin(LOG, None)).map(|s| s.size);

    std::fs::write(&path, original.replacen("/m/4\"", "/m/5\"", 1))?;
    let e = check().err().ok_or("a changed record passed")?;
    assert!(
        e.to_string().contains("record 4") && e.to_string().contains("changed"),
        "{e}"
    );

    let lines: Vec<&str> = original.lines().collect();
    let without: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 6)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&path, &without)?;
    let e = check().err().ok_or("a removed record passed")?;
    assert!(e.to_string().contains("record 6 was removed"), "{e}");

    // The last records gone: the signed checkpoint still counts them.
    let cut: String = lines[..10].iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, &cut)?;
    let e = check().err().ok_or("a cut log passed")?;
    assert!(e.to_string().contains("records 10..12 were removed"), "{e}");

    // A torn last record (a crash mid-write) is not an attack.
    std::fs::write(&path, format!("{original}{{\"n\":12,"))?;
    let scanned = scan(&dir(data.path()), &verifier, &origin(LOG, None))?;
    assert_eq!(scanned.size, 12);
    assert!(scanned.torn_tail.is_some());
    Ok(())
}

#[test]
fn a_reopened_log_repairs_a_crash_and_goes_on() -> TestResult {
    let data = tempfile::tempdir()?;
    let key = SigningKey::generate()?;
    let pem = key.to_pem();
    let verifier = NoteSigner::new(LOG, &key)?.verifier()?;
    let log = AccessLog::open(
        data.path(),
        &AccessLogConfig::default(),
        key,
        (LOG, None),
        true,
    )?;
    for i in 0..5 {
        log.record_durably(call(&format!("/m/{i}")))
            .wait_blocking()
            .map_err(|e| e.to_string())?;
    }
    log.stop();
    // As a crash leaves it: a torn record, and hashes of one never whole.
    let path = segment(data.path())?;
    let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
    std::io::Write::write_all(&mut f, b"{\"n\":5,\"at")?;
    let tree = dir(data.path()).join(files::TREE_FILE);
    let mut t = std::fs::OpenOptions::new().append(true).open(&tree)?;
    std::io::Write::write_all(&mut t, &[9u8; 40])?;
    drop((f, t));
    let log = AccessLog::open(
        data.path(),
        &AccessLogConfig::default(),
        SigningKey::from_pem(&pem)?,
        (LOG, None),
        true,
    )?;
    log.record_durably(call("/after"))
        .wait_blocking()
        .map_err(|e| e.to_string())?;
    log.stop();
    let scanned = scan(&dir(data.path()), &verifier, &origin(LOG, None))?;
    assert_eq!(scanned.size, 6);
    assert!(scanned.torn_tail.is_none());
    assert_eq!(scanned.segments.len(), 2, "a start begins a segment");
    assert_eq!(
        std::fs::metadata(&tree)?.len(),
        stored_hash_count(6) * 32,
        "the cut hashes are gone"
    );
    let all = query(data.path(), &Filter::default())?;
    assert_eq!(
        all.last().map(|r| (r.n, r.method.as_str())),
        Some((5, "/after"))
    );
    Ok(())
}

#[test]
fn retention_below_180_days_is_refused() {
    let short = AccessLogConfig {
        retention_days: 179,
        ..AccessLogConfig::default()
    };
    let e = short.validate().err().unwrap_or_default();
    assert!(e.contains("at least 180 days"), "{e}");
    assert!(AccessLogConfig::default().validate().is_ok());
    assert!(SegmentName::parse("segment-x").is_none());
}

#[test]
fn segments_end_at_their_size_and_a_missing_one_is_named() -> TestResult {
    let data = tempfile::tempdir()?;
    let key = SigningKey::generate()?;
    let verifier = NoteSigner::new(LOG, &key)?.verifier()?;
    let config = AccessLogConfig {
        segment_records: 2,
        ..AccessLogConfig::default()
    };
    let log = AccessLog::open(data.path(), &config, key, (LOG, None), true)?;
    for i in 0..5 {
        log.record_durably(call(&format!("/m/{i}")))
            .wait_blocking()
            .map_err(|e| e.to_string())?;
    }
    log.stop();
    let listed = files::list_segments(&dir(data.path()))?;
    let firsts: Vec<u64> = listed.iter().map(|(n, _)| n.first).collect();
    assert_eq!(firsts, [0, 2, 4]);
    assert_eq!(
        scan(&dir(data.path()), &verifier, &origin(LOG, None))?.size,
        5
    );
    // A whole segment gone, with no removal record naming it.
    std::fs::remove_file(&listed[1].1)?;
    let e = scan(&dir(data.path()), &verifier, &origin(LOG, None))
        .err()
        .ok_or("a missing segment passed")?;
    assert!(
        e.to_string().contains("records 2..4 are missing") && e.to_string().contains("record 2"),
        "{e}"
    );
    // The first segment gone looks like retention without its record.
    let data = tempfile::tempdir()?;
    let verifier = written(data.path(), 3)?;
    let key2 = SigningKey::generate()?;
    let log = AccessLog::open(
        data.path(),
        &AccessLogConfig::default(),
        key2,
        ("other", None),
        true,
    );
    assert!(log.is_err(), "a checkpoint under another key was accepted");
    let listed = files::list_segments(&dir(data.path()))?;
    std::fs::remove_file(&listed[0].1)?;
    let e = scan(&dir(data.path()), &verifier, &origin(LOG, None))
        .err()
        .ok_or("a removed first segment passed")?;
    assert!(e.to_string().contains("records 0..3 were removed"), "{e}");
    Ok(())
}

/// Appends `n` records durably to the log in `data` and closes it (its
/// last checkpoint signed).
fn append_records(
    data: &Path,
    key: &SigningKey,
    config: &AccessLogConfig,
    n: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let log = AccessLog::open(
        data,
        config,
        SigningKey::from_pem(&key.to_pem())?,
        (LOG, None),
        true,
    )?;
    for i in 0..n {
        log.record_durably(call(&format!("/m/{i}")))
            .wait_blocking()
            .map_err(|e| e.to_string())?;
    }
    log.stop();
    Ok(())
}

#[test]
fn the_start_check_reads_after_the_checkpoint_and_agrees_with_the_full_one() -> TestResult {
    let data = tempfile::tempdir()?;
    let key = SigningKey::generate()?;
    let verifier = NoteSigner::new(LOG, &key)?.verifier()?;
    let config = AccessLogConfig {
        segment_records: 2,
        ..AccessLogConfig::default()
    };
    append_records(data.path(), &key, &config, 5)?;
    let checkpoint = dir(data.path()).join(files::CHECKPOINT_FILE);
    let older = std::fs::read(&checkpoint)?;
    append_records(data.path(), &key, &config, 2)?;
    let newer = std::fs::read(&checkpoint)?;
    let full = scan(&dir(data.path()), &verifier, &origin(LOG, None))?;
    let shape = |s: &Scanned| -> Result<_, MerkleError> {
        let segments: Vec<(u64, u64, Option<i64>)> = s
            .segments
            .iter()
            .map(|g| (g.name.first, g.count, g.last_at))
            .collect();
        Ok((s.size, s.hashed, s.frontier.root()?, segments))
    };
    assert_eq!(full.size, 7);
    // Covering all of it, and covering 5 of 7: the same log as the full check.
    for note in [&newer, &older] {
        std::fs::write(&checkpoint, note)?;
        let tail = scan_tail(&dir(data.path()), &verifier, &origin(LOG, None))?;
        assert_eq!(shape(&tail)?, shape(&full)?);
    }
    let path = files::list_segments(&dir(data.path()))?
        .pop()
        .ok_or("no segment")?
        .1;
    let original = std::fs::read_to_string(&path)?;
    // Record 6, after the checkpoint of 5, changed: named at start.
    std::fs::write(&path, original.replacen("/m/1\"", "/m/0\"", 1))?;
    let e = scan_tail(&dir(data.path()), &verifier, &origin(LOG, None))
        .err()
        .ok_or("a changed record after the checkpoint passed")?;
    assert!(
        e.to_string().contains("record 6") && e.to_string().contains("changed"),
        "{e}"
    );
    // Under the checkpoint of 7 the start takes it on the signed root;
    // the full check names it.
    std::fs::write(&checkpoint, &newer)?;
    assert_eq!(
        scan_tail(&dir(data.path()), &verifier, &origin(LOG, None))?.size,
        7
    );
    let e = scan(&dir(data.path()), &verifier, &origin(LOG, None))
        .err()
        .ok_or("the full check passed a changed record")?;
    assert!(e.to_string().contains("record 6"), "{e}");
    std::fs::write(&path, &original)?;
    // A whole covered segment gone is named at start: the one before it
    // no longer ends where the next begins.
    let listed = files::list_segments(&dir(data.path()))?;
    std::fs::remove_file(&listed[1].1)?;
    let e = scan_tail(&dir(data.path()), &verifier, &origin(LOG, None))
        .err()
        .ok_or("a missing segment passed at start")?;
    assert!(e.to_string().contains("where record 3 belongs"), "{e}");
    Ok(())
}

#[test]
fn a_hub_on_its_own_keeps_its_origin_and_a_replica_names_itself() {
    assert_eq!(origin(LOG, None), "tongbao/.access-log");
    assert_eq!(origin(LOG, Some("hub-a")), "tongbao/.access-log/hub-a");
    assert_eq!(origin_replica(LOG, "tongbao/.access-log"), Some(None));
    assert_eq!(
        origin_replica(LOG, "tongbao/.access-log/hub-a"),
        Some(Some("hub-a"))
    );
    for other in [
        "tongbao/tax",
        "other/.access-log",
        "tongbao/.access-log/",
        "tongbao/.access-log/Hub-A",
        "tongbao/.access-log/a/b",
        "tongbao/.access-logs",
        "tongbaox/.access-log",
    ] {
        assert_eq!(origin_replica(LOG, other), None, "{other}");
    }
    assert!(valid_replica_name("a-1"));
    assert!(!valid_replica_name(""));
    assert!(!valid_replica_name(&"a".repeat(MAX_REPLICA_NAME + 1)));
}

#[test]
fn a_replicas_log_is_signed_under_its_own_origin_and_no_other() -> TestResult {
    let data = tempfile::tempdir()?;
    let key = SigningKey::generate()?;
    let verifier = NoteSigner::new(LOG, &key)?.verifier()?;
    let mine = origin(LOG, Some("hub-a"));
    let log = AccessLog::open(
        data.path(),
        &AccessLogConfig::default(),
        SigningKey::from_pem(&key.to_pem())?,
        (LOG, Some("hub-a")),
        true,
    )?;
    log.record_durably(call("/m/0"))
        .wait_blocking()
        .map_err(|e| e.to_string())?;
    log.stop();
    drop(log);
    assert_eq!(stored_origin(&dir(data.path()))?, Some(mine.clone()));
    assert_eq!(scan(&dir(data.path()), &verifier, &mine)?.size, 1);
    let exported = export(data.path(), Some((&verifier, &mine)), None)?;
    let verified = verify_export(&serde_json::to_string(&exported)?, &verifier)?;
    assert_eq!(verified.origin, mine);
    // Not the hub's own log, nor another replica's: refused, saying so.
    for other in [origin(LOG, None), origin(LOG, Some("hub-b"))] {
        let e = scan(&dir(data.path()), &verifier, &other)
            .err()
            .ok_or("a replica's log passed as another's")?;
        assert!(e.to_string().contains("not the access log"), "{e}");
    }
    let renamed = AccessLog::open(
        data.path(),
        &AccessLogConfig::default(),
        key,
        (LOG, Some("hub-b")),
        true,
    );
    assert!(renamed.is_err(), "a renamed replica took on another's log");
    Ok(())
}

#[test]
fn an_export_of_a_channel_checkpoint_is_no_access_log() -> TestResult {
    let data = tempfile::tempdir()?;
    written(data.path(), 2)?;
    let text = serde_json::to_string(&export(data.path(), None, None)?)?;
    // Same key and log, but the origin of a channel, or of another log.
    let key = SigningKey::generate()?;
    let signer = NoteSigner::new(LOG, &key)?;
    for origin in ["tongbao/tax", "tongbao/.access-log/Bad"] {
        let mut export: super::export::Export = serde_json::from_str(&text)?;
        let cp = tongbao_proto::checkpoint::Checkpoint::new(origin.to_string(), 2, [0u8; 32]);
        export.checkpoint =
            tongbao_proto::checkpoint::sign_checkpoint(&cp, std::slice::from_ref(&signer))?;
        let e = verify_export(&serde_json::to_string(&export)?, &signer.verifier()?)
            .err()
            .ok_or("a channel's checkpoint passed as an access log's")?;
        assert!(e.to_string().contains("not an access log"), "{e}");
    }
    Ok(())
}

#[test]
fn records_synced_before_their_hashes_survive_a_crash() -> TestResult {
    // A round syncs its records, not their hashes (those wait for the
    // next checkpoint): a crash may leave the tree file cut back to the
    // last checkpoint, even mid-hash. The start recomputes the rest.
    let data = tempfile::tempdir()?;
    let key = SigningKey::generate()?;
    let verifier = NoteSigner::new(LOG, &key)?.verifier()?;
    let config = AccessLogConfig::default();
    append_records(data.path(), &key, &config, 5)?;
    let checkpoint = dir(data.path()).join(files::CHECKPOINT_FILE);
    let older = std::fs::read(&checkpoint)?;
    append_records(data.path(), &key, &config, 3)?;
    std::fs::write(&checkpoint, &older)?;
    let tree = dir(data.path()).join(files::TREE_FILE);
    let cut = stored_hash_count(5) * 32 + 40;
    assert!(cut < std::fs::metadata(&tree)?.len());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tree)?
        .set_len(cut)?;
    append_records(data.path(), &key, &config, 1)?;
    let full = scan(&dir(data.path()), &verifier, &origin(LOG, None))?;
    assert_eq!((full.size, full.hashed), (9, 9));
    assert_eq!(std::fs::metadata(&tree)?.len(), stored_hash_count(9) * 32);
    // A record changed under the checkpoint is still named: its hash
    // stayed in the tree, synced before the checkpoint was signed.
    let path = files::list_segments(&dir(data.path()))?
        .first()
        .ok_or("no segment")?
        .1
        .clone();
    let original = std::fs::read_to_string(&path)?;
    std::fs::write(&path, original.replacen("/m/1\"", "/m/0\"", 1))?;
    let e = scan(&dir(data.path()), &verifier, &origin(LOG, None))
        .err()
        .ok_or("a changed record under the checkpoint passed")?;
    assert!(e.to_string().contains("record 1"), "{e}");
    Ok(())
}

#[test]
fn an_export_of_more_than_a_page_is_whole_in_order_and_in_the_export_format() -> TestResult {
    let data = tempfile::tempdir()?;
    let key = SigningKey::generate()?;
    let verifier = NoteSigner::new(LOG, &key)?.verifier()?;
    let log = AccessLog::open(
        data.path(),
        &AccessLogConfig::default(),
        key,
        (LOG, None),
        true,
    )?;
    let n = super::export_write::PAGE + 5;
    for i in 0..n {
        log.record(call(&format!("/m/{i}")));
    }
    log.stop();
    let own = origin(LOG, None);
    for since in [None, Some(i64::MAX)] {
        let mut out = Vec::new();
        let written = export_to(&mut out, data.path(), Some((&verifier, &own)), since)?;
        let export: Export = serde_json::from_slice(&out)?;
        // Byte for byte what the export was when it was built in memory.
        assert_eq!(serde_json::to_string_pretty(&export)?.as_bytes(), &out[..]);
        assert_eq!(written, export.records.len());
        let numbers = export
            .records
            .iter()
            .map(|r| AccessRecord::from_line(&r.line).map(|r| r.n))
            .collect::<Result<Vec<_>, _>>()?;
        let all = since.is_none();
        assert_eq!(
            numbers,
            (0..n as u64).filter(|_| all).collect::<Vec<_>>(),
            "since {since:?}"
        );
        assert_eq!(
            verify_export(std::str::from_utf8(&out)?, &verifier)?.records,
            written
        );
    }
    Ok(())
}

/// Opens the log in `data` with the hub's time `days` ahead (its start
/// applies retention), appends `n` records of that time durably, and
/// closes it.
fn served_days_ahead(data: &Path, key: &SigningKey, days: i64, n: usize) -> TestResult {
    let log = AccessLog::open_files(
        data,
        &AccessLogConfig::default(),
        SigningKey::from_pem(&key.to_pem())?,
        (LOG, None),
        true,
        days * 86_400_000_000,
    )?;
    for i in 0..n {
        let mut record = call(&format!("/m/{i}"));
        record.at_micros = log.now_micros();
        log.record_durably(record)
            .wait_blocking()
            .map_err(|e| e.to_string())?;
    }
    log.stop();
    Ok(())
}

#[test]
fn a_log_whose_first_removal_records_were_removed_in_turn_verifies() -> TestResult {
    let data = tempfile::tempdir()?;
    let key = SigningKey::generate()?;
    let verifier = NoteSigner::new(LOG, &key)?.verifier()?;
    let o = origin(LOG, None);
    // Records 0..2 today; 200 days on, they go, named by removal record 3
    // (in the segment of records 2..5); 400 days on, that segment goes
    // too, its removal record with it, named by removal record 6.
    served_days_ahead(data.path(), &key, 0, 2)?;
    served_days_ahead(data.path(), &key, 200, 2)?;
    served_days_ahead(data.path(), &key, 400, 1)?;
    let scanned = scan(&dir(data.path()), &verifier, &o)?;
    let named: Vec<(u64, u64)> = scanned
        .removals
        .iter()
        .map(|r| (r.first, r.count))
        .collect();
    assert_eq!(named, [(2, 3)], "only the second removal record is kept");
    assert_eq!(scanned.size, 7);
    // A start accepts it, and so does verify afterwards.
    served_days_ahead(data.path(), &key, 400, 1)?;
    assert_eq!(scan(&dir(data.path()), &verifier, &o)?.size, 8);

    // The segment holding that removal record deleted by hand: records
    // 0..7 are gone and no removal record kept names any of them.
    let listed = files::list_segments(&dir(data.path()))?;
    assert_eq!(listed[0].0.first, 5);
    std::fs::remove_file(&listed[0].1)?;
    let e = scan(&dir(data.path()), &verifier, &o)
        .err()
        .ok_or("records removed with no removal record kept passed")?;
    assert!(
        e.to_string().contains(
            "the first segment begins at record 7 but removal records account for records 0..0"
        ),
        "{e}"
    );
    Ok(())
}

#[test]
fn an_unreadable_line_past_the_checkpoint_fails_no_export() -> TestResult {
    let data = tempfile::tempdir()?;
    let verifier = written(data.path(), 4)?;
    // A line after the last signed record that no record reading accepts.
    let mut last = std::fs::OpenOptions::new()
        .append(true)
        .open(segment(data.path())?)?;
    std::io::Write::write_all(&mut last, b"not a record\n")?;
    let o = origin(LOG, None);
    let export = export(data.path(), Some((&verifier, &o)), None)?;
    assert_eq!(export.records.len(), 4);
    Ok(())
}
