//! Unit tests of reading an earlier version's access log files: their
//! checks and exports (what `audit-log` reads of a data directory not yet
//! started on this version, and what `moved` moves in).

use super::export::{Export, Filter, export_to, query, verify_export};
use super::files::{self, SegmentName};
use super::*;
use tongbao_proto::checkpoint::NoteSigner;

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

/// The files an earlier version's writer left in `data`: `records` (each
/// numbered in turn), a segment a UTC day, their stored hashes and a
/// checkpoint signed over all of them; returns the key's verifier. What
/// this version reads (`check`, `export`) and moves in (`moved`).
pub(super) fn old_log(
    data: &Path,
    key: &SigningKey,
    replica: Option<&str>,
    records: Vec<AccessRecord>,
) -> Result<NoteVerifier, Box<dyn std::error::Error>> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = data.join(files::DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let signer = writer::Signer::new(
        SigningKey::from_pem(&key.to_pem())?,
        LOG,
        origin(LOG, replica),
    )?;
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join(name))
    };
    let mut frontier = Frontier::default();
    let mut tree = open(files::TREE_FILE)?;
    let mut segment: Option<(String, std::fs::File)> = None;
    for mut record in records {
        record.n = frontier.size();
        let day = files::day_of(record.at_micros);
        if segment.as_ref().is_none_or(|(d, _)| *d != day) {
            let name = SegmentName {
                first: record.n,
                day: day.clone(),
            };
            segment = Some((day, open(&name.file_name())?));
        }
        let line = record.to_line()?;
        for h in frontier.append(record::leaf_of_line(&line))? {
            tree.write_all(&h)?;
        }
        if let Some((_, f)) = segment.as_mut() {
            f.write_all(format!("{line}\n").as_bytes())?;
        }
    }
    let note = signer.sign(frontier.size(), frontier.root()?)?;
    tongbao_proto::secret_file::replace(&dir.join(files::CHECKPOINT_FILE), note.as_bytes())?;
    Ok(signer.verifier()?)
}

/// An earlier version's log of `n` records in `data`.
fn written(data: &Path, n: usize) -> Result<NoteVerifier, Box<dyn std::error::Error>> {
    let key = SigningKey::generate()?;
    old_log(
        data,
        &key,
        None,
        (0..n).map(|i| call(&format!("/m/{i}"))).collect(),
    )
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
    old_log(data.path(), &key, Some("hub-a"), vec![call("/m/0")])?;
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
fn an_export_of_more_than_a_page_is_whole_in_order_and_in_the_export_format() -> TestResult {
    let data = tempfile::tempdir()?;
    let key = SigningKey::generate()?;
    let verifier = NoteSigner::new(LOG, &key)?.verifier()?;
    let n = super::export_write::PAGE + 5;
    old_log(
        data.path(),
        &key,
        None,
        (0..n).map(|i| call(&format!("/m/{i}"))).collect(),
    )?;
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
