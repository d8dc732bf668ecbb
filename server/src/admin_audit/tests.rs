use super::chain::Tip;
use super::*;
use super::{HEAD_KEY, MOVING_KEY};
use crate::store::pg_store::testdb::TestDb;
use crate::store::{PgOptions, PgStore, SledStore};
use std::io::Write;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Open<'a> = &'a dyn Fn() -> Result<Arc<dyn Store>, StoreError>;

const OPS: &str = "urn:tongbao:operator:ops";

fn sled(dir: &Path) -> impl Fn() -> Result<Arc<dyn Store>, StoreError> + '_ {
    move || Ok(Arc::new(SledStore::open(&dir.join("db-dir"), true)?) as Arc<dyn Store>)
}

fn postgres(db: &TestDb) -> impl Fn() -> Result<Arc<dyn Store>, StoreError> + '_ {
    move || {
        Ok(Arc::new(PgStore::open(&PgOptions {
            database: crate::store::pg_store::Database::new(&db.url(), &Default::default())?,
            pool_size: 2,
            replica: false,
        })?) as Arc<dyn Store>)
    }
}

/// Runs `check` on sled, then on PostgreSQL when a test server is given.
fn on_both(check: impl Fn(Open, &Path) -> TestResult) -> TestResult {
    let dir = tempfile::tempdir()?;
    check(&sled(dir.path()), dir.path())?;
    if let Some(db) = TestDb::create()? {
        let dir = tempfile::tempdir()?;
        check(&postgres(&db), dir.path())?;
    }
    Ok(())
}

fn broken_at(opened: Result<AdminAudit, AdminAuditError>) -> Option<(u64, String)> {
    match opened {
        Err(e @ AdminAuditError::Broken { record, .. }) => Some((record, e.to_string())),
        _ => None,
    }
}

fn put_raw(store: &dyn Store, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
    let mut batch = StateBatch::default();
    match value {
        Some(v) => batch.insert(key, v),
        None => batch.remove(key),
    }
    store.state_apply(SPACE, &batch)?;
    store.state_sync()
}

#[test]
fn the_chain_survives_reopening_and_edits_and_removals_refuse_the_start() -> TestResult {
    on_both(|open, dir| {
        let store = open()?;
        let trail = AdminAudit::open(store.clone(), dir)?;
        for i in 1..=5 {
            trail.record(OPS, "suspend-unit", &format!("unit u{i}"), 0, "done")?;
        }
        drop(trail);
        // An edited record is named.
        let two = store
            .state_get(SPACE, &record_key(2))?
            .ok_or("no record 2")?;
        let edited = String::from_utf8(two.clone())?.replace("u2", "u9");
        put_raw(store.as_ref(), &record_key(2), Some(edited.as_bytes()))?;
        let (record, message) =
            broken_at(AdminAudit::open(store.clone(), dir)).ok_or("an edit was not caught")?;
        assert_eq!(record, 2, "{message}");
        assert!(message.contains("record 2"), "{message}");
        put_raw(store.as_ref(), &record_key(2), Some(&two))?;
        // A removed record, in the middle or the last one.
        for seq in [3, 5] {
            let kept = store
                .state_get(SPACE, &record_key(seq))?
                .ok_or("no record")?;
            put_raw(store.as_ref(), &record_key(seq), None)?;
            let (record, message) = broken_at(AdminAudit::open(store.clone(), dir))
                .ok_or("a removal was not caught")?;
            assert_eq!(record, seq, "{message}");
            assert!(message.contains("missing"), "{message}");
            put_raw(store.as_ref(), &record_key(seq), Some(&kept))?;
        }
        // A record slipped in after the head.
        let five = store
            .state_get(SPACE, &record_key(5))?
            .ok_or("no record 5")?;
        put_raw(store.as_ref(), &record_key(6), Some(&five))?;
        assert_eq!(
            broken_at(AdminAudit::open(store.clone(), dir)).map(|b| b.0),
            Some(6)
        );
        put_raw(store.as_ref(), &record_key(6), None)?;
        // Whole again, and reopened: it continues the chain.
        drop(store);
        let store = open()?;
        let trail = AdminAudit::open(store.clone(), dir)?;
        let sixth = trail.record(OPS, "reload-tls", "", 0, "done")?;
        let page = trail.list(0, 100, 1 << 20)?;
        assert_eq!(page.records.len(), 6);
        assert_eq!(page.records[4].hash, sixth.previous_hash);
        assert_eq!(sixth.seq, 6);
        assert_eq!(check(store.as_ref())?.last_hash, sixth.hash);
        Ok(())
    })
}

#[test]
fn large_fields_are_cut() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = sled(dir.path())()?;
    let trail = AdminAudit::open(store.clone(), dir.path())?;
    let huge = "x".repeat(4 << 20);
    let r = trail.record("urn:tongbao:unit:tax", "suspend-unit", &huge, 7, &huge)?;
    assert!(r.detail.len() <= MAX_FIELD_BYTES && r.detail.ends_with('…'));
    assert!(r.outcome.len() <= MAX_FIELD_BYTES);
    let stored = store
        .state_get(SPACE, &record_key(1))?
        .ok_or("not stored")?;
    assert!(stored.len() < 4 * MAX_FIELD_BYTES, "{} bytes", stored.len());
    assert_eq!(trail.list(0, 10, 1 << 20)?.records, vec![r]);
    Ok(())
}

#[test]
fn capped_cuts_on_a_character_boundary() {
    assert_eq!(capped("short", 64), "short");
    let cut = capped("通报通报通报", 8);
    assert!(cut.len() <= 8 && cut.ends_with('…'), "{cut}");
    assert_eq!(cut, "通…");
}

#[test]
fn pages_are_read_by_count_and_bytes_across_blocks() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = sled(dir.path())()?;
    let trail = AdminAudit::open(store.clone(), dir.path())?;
    let total = 2 * 256 + 37;
    for i in 0..total {
        trail.record(OPS, "reload-tls", &format!("n{i}"), 0, "done")?;
    }
    for after in [0, 1, 254, 255, 256, 257, 511, 512, total - 1] {
        let page = trail.list(after, 5, 1 << 20)?;
        let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
        let want: Vec<u64> = (after + 1..=total).take(5).collect();
        assert_eq!(seqs, want, "after {after}");
        assert_eq!(page.more, after + 5 < total, "after {after}");
        assert_eq!(page.records[0].detail, format!("n{after}"));
    }
    let end = trail.list(total, 5, 1 << 20)?;
    assert!(end.records.is_empty() && !end.more);
    // A byte budget smaller than a record still gives one record.
    let one = trail.list(0, 100, 1)?;
    assert_eq!((one.records.len(), one.more), (1, true));
    // Walking the pages gives every record once, in order.
    let mut after = 0;
    let mut seen = 0;
    loop {
        let page = trail.list(after, 1000, 4096)?;
        for r in &page.records {
            seen += 1;
            assert_eq!(r.seq, seen);
        }
        after = page.records.last().map_or(after, |r| r.seq);
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, total);
    // A page over a removed record says so rather than skip it.
    put_raw(store.as_ref(), &record_key(300), None)?;
    assert!(matches!(
        trail.list(290, 100, 1 << 20),
        Err(AdminAuditError::Broken { record: 300, .. })
    ));
    Ok(())
}

/// An earlier hub's file of `n` records in `dir`; its records.
fn legacy_file(
    dir: &Path,
    n: u64,
    actor: &str,
) -> Result<Vec<AuditRecord>, Box<dyn std::error::Error>> {
    let mut tip = Tip::default();
    let mut records = Vec::new();
    let mut text = String::new();
    for seq in 1..=n {
        let mut r = AuditRecord {
            seq,
            at_micros: 1_700_000_000_000_000 + seq as i64,
            actor: actor.into(),
            action: "suspend-unit".into(),
            detail: format!("unit u{seq}"),
            code: 0,
            outcome: "done".into(),
            previous_hash: tip.last_hash.clone(),
            hash: String::new(),
        };
        r.hash = r.compute_hash();
        tip.advance(&r);
        text.push_str(&serde_json::to_string(&r)?);
        text.push('\n');
        records.push(r);
    }
    std::fs::write(dir.join(ADMIN_AUDIT_FILE), text)?;
    Ok(records)
}

#[test]
fn an_earlier_hubs_file_is_moved_in_once_even_when_cut_short() -> TestResult {
    on_both(|open, dir| {
        let records = legacy_file(dir, 300, OPS)?;
        // A torn last line (a crash while an earlier hub wrote) is left out.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(ADMIN_AUDIT_FILE))?;
        f.write_all(b"{\"seq\":301,")?;
        drop(f);
        let store = open()?;
        // A move cut short: the first 100 records went in.
        put(store.as_ref(), &records[..100], None)?;
        store.state_sync()?;
        let trail = AdminAudit::open(store.clone(), dir)?;
        let page = trail.list(0, 1000, 1 << 20)?;
        assert_eq!(page.records, records, "every record once, in order");
        assert!(!dir.join(ADMIN_AUDIT_FILE).exists());
        assert!(dir.join("admin-audit.jsonl.moved").exists());
        let next = trail.record(OPS, "reload-tls", "", 0, "done")?;
        assert_eq!(
            (next.seq, next.previous_hash.as_str()),
            (301, records[299].hash.as_str())
        );
        drop(trail);
        // The rename cut short: the file again, already in the store.
        std::fs::copy(
            dir.join("admin-audit.jsonl.moved"),
            dir.join(ADMIN_AUDIT_FILE),
        )?;
        let trail = AdminAudit::open(store.clone(), dir)?;
        assert_eq!(trail.list(0, 1000, 1 << 20)?.records.len(), 301);
        assert!(dir.join("admin-audit.jsonl.moved.2").exists());
        drop(trail);
        std::fs::remove_file(dir.join("admin-audit.jsonl.moved.2"))?;
        std::fs::remove_file(dir.join("admin-audit.jsonl.moved"))?;
        Ok(())
    })
}

#[test]
fn a_file_that_is_not_part_of_the_stored_trail_is_kept_aside_and_pinned() -> TestResult {
    on_both(|open, dir| {
        let store = open()?;
        let trail = AdminAudit::open(store.clone(), dir)?;
        trail.record(OPS, "reload-tls", "", 0, "done")?;
        drop(trail);
        // Another replica's trail, from before they shared one.
        let other = legacy_file(dir, 3, "urn:tongbao:operator:other")?;
        let trail = AdminAudit::open(store.clone(), dir)?;
        let page = trail.list(0, 100, 1 << 20)?;
        assert_eq!(page.records.len(), 2, "nothing of the file is mixed in");
        let pin = &page.records[1];
        assert_eq!(pin.actor, crate::pki::index::HUB_PARTY);
        assert!(pin.detail.contains(&other[2].hash), "{}", pin.detail);
        assert!(!dir.join(ADMIN_AUDIT_FILE).exists());
        let kept = dir.join("admin-audit.jsonl.kept");
        assert_eq!(check_file_at(&kept)?.last_hash, other[2].hash);
        std::fs::remove_file(kept)?;
        Ok(())
    })
}

fn check_file_at(path: &Path) -> Result<Tip, AdminAuditError> {
    legacy::read_file(path, |_| Ok(()))
}

#[test]
fn a_broken_file_refuses_the_start_and_nothing_is_moved() -> TestResult {
    let dir = tempfile::tempdir()?;
    legacy_file(dir.path(), 4, OPS)?;
    let path = dir.path().join(ADMIN_AUDIT_FILE);
    let text = std::fs::read_to_string(&path)?;
    std::fs::write(&path, text.replace("unit u2", "unit u9"))?;
    let store = sled(dir.path())()?;
    match AdminAudit::open(store.clone(), dir.path()) {
        Err(e @ AdminAuditError::Broken { record: 2, .. }) => {
            assert!(e.to_string().contains(ADMIN_AUDIT_FILE), "{e}")
        }
        other => panic!("expected a refusal at record 2, got {:?}", other.err()),
    }
    assert!(path.exists());
    assert_eq!(check(store.as_ref())?.count, 0);
    Ok(())
}

#[test]
fn a_backup_writes_the_stored_trail_in_the_file_format() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = sled(dir.path())()?;
    let trail = AdminAudit::open(store.clone(), dir.path())?;
    for i in 0..3 {
        trail.record(OPS, "reload-tls", &format!("n{i}"), 0, "done")?;
    }
    let out = dir.path().join("backup.jsonl");
    assert_eq!(write_jsonl(store.as_ref(), dir.path(), &out)?, 3);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out)?.permissions().mode() & 0o777, 0o600);
    }
    let read: Vec<AuditRecord> = std::fs::read_to_string(&out)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(read, trail.list(0, 10, 1 << 20)?.records);
    // An append under way (its record stored, the head read before it)
    // is left to the next backup; a start would refuse it as a stray.
    let stray = store
        .state_get(SPACE, &record_key(3))?
        .ok_or("no record 3")?;
    put_raw(store.as_ref(), &record_key(4), Some(&stray))?;
    let during = dir.path().join("during.jsonl");
    assert_eq!(write_jsonl(store.as_ref(), dir.path(), &during)?, 3);
    assert!(check(store.as_ref()).is_err());
    put_raw(store.as_ref(), &record_key(4), None)?;
    // Into a fresh store, it moves in as an earlier hub's file does.
    let restored = tempfile::tempdir()?;
    std::fs::copy(&out, restored.path().join(ADMIN_AUDIT_FILE))?;
    let store = sled(restored.path())()?;
    let trail2 = AdminAudit::open(store, restored.path())?;
    assert_eq!(trail2.list(0, 10, 1 << 20)?.records, read);
    Ok(())
}

/// A move of `records` that stored its first batch, marked under way, and
/// went no further (its hub killed -9).
fn cut_short_move(store: &dyn Store, records: &[AuditRecord]) -> TestResult {
    let last = records.last().ok_or("no records")?;
    let mark = legacy::Moving {
        count: last.seq,
        last_hash: last.hash.clone(),
        from: 0,
        replica: Some("hub-a".into()),
    }
    .encode();
    put(store, &records[..256], Some(Some(&mark)))?;
    store.state_sync()?;
    Ok(())
}

/// The stored head, whatever the records say.
fn stored_head(store: &dyn Store) -> Result<u64, Box<dyn std::error::Error>> {
    let head = store.state_get(SPACE, HEAD_KEY)?.ok_or("no head")?;
    Ok(u64::from_be_bytes(<[u8; 8]>::try_from(head.as_slice())?))
}

#[test]
fn a_takeover_during_a_move_pins_it_and_the_owner_keeps_its_file_aside() -> TestResult {
    on_both(|open, dir| {
        let (a, b) = (dir.join("data-a"), dir.join("data-b"));
        std::fs::create_dir_all(&a)?;
        std::fs::create_dir_all(&b)?;
        let records = legacy_file(&a, 600, OPS)?;
        let store = open()?;
        cut_short_move(store.as_ref(), &records)?;
        // On a broken trail the start is refused, and nothing appended.
        let one = store.state_get(SPACE, &record_key(1))?;
        put_raw(store.as_ref(), &record_key(1), None)?;
        assert_eq!(
            broken_at(AdminAudit::open(store.clone(), &b)).map(|b| b.0),
            Some(1)
        );
        assert_eq!(stored_head(store.as_ref())?, 256);
        assert!(store.state_get(SPACE, MOVING_KEY)?.is_some());
        put_raw(store.as_ref(), &record_key(1), one.as_deref())?;
        // The standby takes over, without the file.
        let trail = AdminAudit::open(store.clone(), &b)?;
        let page = trail.list(0, 1000, 1 << 20)?;
        assert_eq!(page.records.len(), 257);
        assert_eq!(page.records[..256], records[..256]);
        let pin = &page.records[256];
        assert_eq!(pin.actor, crate::pki::index::HUB_PARTY);
        assert_eq!(pin.action, "incomplete-admin-trail-move");
        let said = ["replica \"hub-a\"", "600 records", "moved 256"];
        for said in said.into_iter().chain([records[599].hash.as_str()]) {
            assert!(pin.detail.contains(said), "{said}: {}", pin.detail);
        }
        assert_eq!(store.state_get(SPACE, MOVING_KEY)?, None);
        trail.record(OPS, "reload-tls", "", 0, "done")?;
        drop(trail);
        // Pinned once: a second start finds nothing under way.
        let trail = AdminAudit::open(store.clone(), &b)?;
        assert_eq!(trail.list(0, 1000, 1 << 20)?.records.len(), 258);
        drop(trail);
        // The file's owner starts again: the trail went on, so the file
        // is kept aside and pinned, nothing of it mixed in.
        let trail = AdminAudit::open(store.clone(), &a)?;
        let page = trail.list(0, 1000, 1 << 20)?;
        assert_eq!(page.records.len(), 259);
        assert_eq!(page.records[258].action, "keep-aside-admin-trail");
        assert!(a.join("admin-audit.jsonl.kept").exists());
        assert!(!a.join(ADMIN_AUDIT_FILE).exists());
        assert_eq!(check(store.as_ref())?.count, 259);
        Ok(())
    })
}

#[test]
fn the_owner_of_a_move_left_under_way_finishes_it() -> TestResult {
    on_both(|open, dir| {
        let records = legacy_file(dir, 600, OPS)?;
        let store = open()?;
        cut_short_move(store.as_ref(), &records)?;
        let trail = AdminAudit::open(store.clone(), dir)?;
        assert_eq!(trail.list(0, 1000, 1 << 20)?.records, records);
        assert_eq!(store.state_get(SPACE, MOVING_KEY)?, None);
        assert!(dir.join("admin-audit.jsonl.moved").exists());
        drop(trail);
        // A whole move leaves no mark either.
        let fresh = tempfile::tempdir()?;
        let records = legacy_file(fresh.path(), 600, OPS)?;
        let store = sled(fresh.path())()?;
        let trail = AdminAudit::open(store.clone(), fresh.path())?;
        assert_eq!(trail.list(0, 1000, 1 << 20)?.records, records);
        assert_eq!(store.state_get(SPACE, MOVING_KEY)?, None);
        Ok(())
    })
}

/// `change` made to a whole trail of 3 records must refuse the start,
/// naming `record`; then it is undone.
fn refused_at(
    store: &Arc<dyn Store>,
    dir: &Path,
    key: &[u8],
    value: Option<&[u8]>,
    record: u64,
) -> TestResult {
    let kept = store.state_get(SPACE, key)?;
    put_raw(store.as_ref(), key, value)?;
    let refused = broken_at(AdminAudit::open(store.clone(), dir));
    put_raw(store.as_ref(), key, kept.as_deref())?;
    let (at, message) = refused.ok_or("not refused")?;
    assert_eq!(at, record, "{message}");
    Ok(())
}

#[test]
fn a_lost_head_and_keys_beyond_it_or_beside_the_records_are_caught() -> TestResult {
    on_both(|open, dir| {
        let store = open()?;
        let trail = AdminAudit::open(store.clone(), dir)?;
        for i in 1..=3 {
            trail.record(OPS, "suspend-unit", &format!("unit u{i}"), 0, "done")?;
        }
        let one = store.state_get(SPACE, &record_key(1))?;
        // A lost head: the next append refuses rather than overwrite.
        let head = store.state_get(SPACE, HEAD_KEY)?;
        put_raw(store.as_ref(), HEAD_KEY, None)?;
        assert!(matches!(
            trail.record(OPS, "reload-tls", "", 0, "done"),
            Err(AdminAuditError::Broken { record: 1, .. })
        ));
        assert_eq!(store.state_get(SPACE, &record_key(1))?, one, "unchanged");
        put_raw(store.as_ref(), HEAD_KEY, head.as_deref())?;
        drop(trail);
        refused_at(&store, dir, HEAD_KEY, None, 1)?;
        // A lowered head.
        refused_at(&store, dir, HEAD_KEY, Some(&2u64.to_be_bytes()), 3)?;
        // A record far beyond the head, and keys that name no record.
        let three = store.state_get(SPACE, &record_key(3))?.ok_or("no 3")?;
        refused_at(&store, dir, &record_key(603), Some(&three), 603)?;
        refused_at(&store, dir, b"a", Some(b"x"), 1)?;
        refused_at(&store, dir, b"zz", Some(b"x"), 4)?;
        let mut long = record_key(2).to_vec();
        long.push(0);
        refused_at(&store, dir, &long, Some(&three), 3)?;
        // Stored bytes other than the record's own encoding, though its
        // fields and hash are right: extra fields, or other spacing.
        let two = store.state_get(SPACE, &record_key(2))?.ok_or("no 2")?;
        let two = String::from_utf8(two)?;
        let extra = two.replacen('{', "{\"extra\":1,", 1);
        refused_at(&store, dir, &record_key(2), Some(extra.as_bytes()), 2)?;
        let record: AuditRecord = serde_json::from_str(&two)?;
        let spaced = serde_json::to_string_pretty(&record)?;
        refused_at(&store, dir, &record_key(2), Some(spaced.as_bytes()), 2)?;
        // Whole again.
        assert_eq!(check(store.as_ref())?.count, 3);
        Ok(())
    })
}

#[test]
fn a_backup_reconciles_a_leftover_file_with_the_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let records = legacy_file(dir.path(), 5, OPS)?;
    let store = sled(dir.path())()?;
    let out = |name: &str| dir.path().join(name);
    let lines = |path: &Path| -> Result<Vec<AuditRecord>, Box<dyn std::error::Error>> {
        Ok(std::fs::read_to_string(path)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?)
    };
    // A move cut short: the file holds the stored trail and more.
    put(store.as_ref(), &records[..2], None)?;
    assert_eq!(write_jsonl(store.as_ref(), dir.path(), &out("a.jsonl"))?, 5);
    assert_eq!(lines(&out("a.jsonl"))?, records);
    // The store holds the file and more: the store is the trail.
    let trail = AdminAudit::open(store.clone(), dir.path())?;
    trail.record(OPS, "reload-tls", "", 0, "done")?;
    std::fs::copy(
        dir.path().join("admin-audit.jsonl.moved"),
        dir.path().join(ADMIN_AUDIT_FILE),
    )?;
    assert_eq!(write_jsonl(store.as_ref(), dir.path(), &out("b.jsonl"))?, 6);
    assert_eq!(lines(&out("b.jsonl"))?, trail.list(0, 10, 1 << 20)?.records);
    // They diverge: refused, and no file is left.
    legacy_file(dir.path(), 7, "urn:tongbao:operator:other")?;
    assert!(matches!(
        write_jsonl(store.as_ref(), dir.path(), &out("c.jsonl")),
        Err(AdminAuditError::Diverged { .. })
    ));
    assert!(!out("c.jsonl").exists());
    Ok(())
}

/// A replica's standby leaves an earlier version's file where it is (the
/// move is a write, which its store refuses) and opens the trail anyway;
/// the replica moves the file once it leads, once.
#[test]
fn a_standby_leaves_an_earlier_file_for_when_it_leads() -> TestResult {
    let Some(db) = TestDb::create()? else {
        return Ok(());
    };
    let options = |replica| -> Result<PgOptions, StoreError> {
        Ok(PgOptions {
            database: crate::store::pg_store::Database::new(&db.url(), &Default::default())?,
            pool_size: 2,
            replica,
        })
    };
    let leader: Arc<dyn Store> = Arc::new(PgStore::open(&options(false)?)?);
    drop(AdminAudit::open(
        leader.clone(),
        tempfile::tempdir()?.path(),
    )?);
    let dir = tempfile::tempdir()?;
    let records = legacy_file(dir.path(), 3, OPS)?;
    let standby: Arc<dyn Store> = Arc::new(PgStore::open_standby(&options(true)?)?);
    // What a standby's start did before: the move is refused.
    assert!(AdminAudit::open_as(standby.clone(), dir.path(), Some("b")).is_err());
    let trail = AdminAudit::open_following(standby.clone(), dir.path())?;
    assert!(trail.list(0, 10, 1 << 20)?.records.is_empty());
    assert_eq!(
        check_file(dir.path())?.map(|t| t.count),
        Some(3),
        "left as it was"
    );
    drop((trail, standby));
    // It leads: the file is moved in, once.
    drop(leader);
    let leader: Arc<dyn Store> = Arc::new(PgStore::open(&options(false)?)?);
    let trail = AdminAudit::open_as(leader.clone(), dir.path(), Some("b"))?;
    assert_eq!(trail.list(0, 10, 1 << 20)?.records, records);
    assert!(!dir.path().join(ADMIN_AUDIT_FILE).exists());
    assert!(dir.path().join("admin-audit.jsonl.moved").exists());
    drop(trail);
    let trail = AdminAudit::open_as(leader, dir.path(), Some("b"))?;
    assert_eq!(
        trail.list(0, 10, 1 << 20)?.records,
        records,
        "not moved twice"
    );
    Ok(())
}
