//! Backup, restore and verify-data end to end: a backup taken through a
//! running hub while pushes are in flight restores to a hub that serves
//! everything acknowledged before it, with the manifest's checkpoints; a
//! client that saw newer checkpoints reports the restore as a rollback;
//! `verify-data` names a flipped byte and passes an untouched copy; a
//! backup into a target it cannot use (not a directory, not empty, a
//! disk it would leave too full) fails with a message, leaves nothing
//! behind, and the hub serves on.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tongbao_client::{Client, ClientError};
use tongbao_proto::pb;
use tongbao_proto::pb::log_client::LogClient;
use tongbao_server::backup::Manifest;
use tongbao_tests::{BoxError, HubProcess, TestPki, TestResult, note, raw_channel};

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");

/// Runs the hub binary's command line off the async runtime.
async fn hub_command(args: Vec<String>) -> Result<Output, BoxError> {
    Ok(tokio::task::spawn_blocking(move || {
        Command::new(HUB)
            .args(args)
            .env("RUST_LOG", "error")
            .output()
    })
    .await??)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn args(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    items
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

/// A backup through the running hub at `hub` as its system operator.
async fn online_backup(
    pki: &TestPki,
    hub: std::net::SocketAddr,
    to: &Path,
) -> Result<Output, BoxError> {
    hub_command(args(&[
        &"backup",
        &"--dir",
        &pki.path(),
        &"--hub",
        &format!("https://{hub}"),
        &"--to",
        &to,
    ]))
    .await
}

/// A client of `unit` with a trust state of its own (`name`), so that
/// what one client saw does not judge another hub.
async fn client_with_trust(
    pki: &TestPki,
    unit: &str,
    hub: std::net::SocketAddr,
    name: &str,
) -> Result<Client, BoxError> {
    let mut config = pki.unit_config(unit, hub)?;
    config.trust_state = pki.path().join(format!("{name}-trust-state.json"));
    Ok(Client::connect(&config).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_to_a_hub_serving_everything_acknowledged() -> TestResult {
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = Arc::new(client_with_trust(&pki, "tax", hub.addr, "tax").await?);
    for i in 0..20 {
        tax.push(note(&format!("before {i}")).to_units(["finance"]))
            .await?;
    }
    // Pushers keep pushing while the backup runs; every answer is kept
    // with whether the backup had begun when it came.
    let backup_began = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut pushers = Vec::new();
    for p in 0..4 {
        let (tax, began, stop) = (tax.clone(), backup_began.clone(), stop.clone());
        pushers.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let before = !began.load(Ordering::Acquire);
                let r = tax
                    .push(note(&format!("load {p}-{i}")).to_units(["finance"]))
                    .await?;
                answered.push((r.seq, r.leaf_hash, before));
                i += 1;
            }
            Ok::<_, ClientError>(answered)
        }));
    }
    // Some pushes are answered before the backup starts.
    let mut tax_log = LogClient::new(raw_channel(&pki, "tax", hub.addr).await?);
    tongbao_tests::wait_until(
        std::time::Duration::from_secs(30),
        "pushes under way",
        || {
            let mut log = tax_log.clone();
            async move {
                let size = log
                    .get_checkpoint(pb::GetCheckpointRequest {
                        channel: "tax".into(),
                    })
                    .await?
                    .into_inner()
                    .size;
                Ok::<_, BoxError>(size > 60)
            }
        },
    )
    .await?;
    // An admin action before the backup: the trail travels with it.
    Client::connect(&pki.role_config(tongbao_tests::Role::Security, hub.addr))
        .await?
        .admin()
        .suspend_unit(pb::SuspendUnitRequest {
            unit: "state-security".into(),
            reason: "backup test".into(),
        })
        .await?;
    backup_began.store(true, Ordering::Release);
    let backup_dir = pki.path().join("backup");
    let out = online_backup(&pki, hub.addr, &backup_dir).await?;
    let backup_done_size = tax_log
        .get_checkpoint(pb::GetCheckpointRequest {
            channel: "tax".into(),
        })
        .await?
        .into_inner()
        .size;
    stop.store(true, Ordering::Release);
    assert!(out.status.success(), "{}", text(&out));
    let mut answered = Vec::new();
    for p in pushers {
        answered.extend(p.await??);
    }
    let during = answered.iter().filter(|(_, _, before)| !before).count();
    assert!(during > 0, "no push was in flight while the backup ran");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(backup_dir.join("backup.json"))?)?;
    let copied = manifest
        .channels
        .get("tax")
        .ok_or("no tax channel in the manifest")?;
    let acknowledged_before = 20 + answered.iter().filter(|(_, _, before)| *before).count() as u64;
    assert!(
        copied.size >= acknowledged_before,
        "{} < {acknowledged_before}",
        copied.size
    );
    assert!(copied.size <= backup_done_size);
    let checkpoint_size = copied
        .checkpoint_size
        .ok_or("no checkpoint in the manifest")?;
    assert!(checkpoint_size <= copied.size);
    // The backup's files are private from their creation.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&backup_dir)?.permissions().mode() & 0o777,
            0o700
        );
        for f in std::fs::read_dir(&backup_dir)? {
            let f = f?;
            assert_eq!(
                f.metadata()?.permissions().mode() & 0o777,
                0o600,
                "{:?}",
                f.path()
            );
        }
    }

    // The original hub goes on; finance verifies its newest checkpoint of tax.
    let finance_seen = client_with_trust(&pki, "finance", hub.addr, "finance").await?;
    tax.push(note("after the backup").to_units(["finance"]))
        .await?;
    let newest = finance_seen.checkpoint("tax").await?;
    assert!(newest.size > copied.size);

    // Restored to a new data directory, it serves on a hub of its own.
    let restored = pki.path().join("restored");
    let out = hub_command(args(&[
        &"restore",
        &"--from",
        &backup_dir,
        &"--data-dir",
        &restored,
    ]))
    .await?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("verified"), "{}", text(&out));
    let second = HubProcess::start_on(&pki, HUB, &restored)?;
    // The restored trail is the original's up to the backup (whose own
    // record follows it there).
    let trail_of = |addr| {
        let config = pki.role_config(tongbao_tests::Role::Audit, addr);
        async move { Client::connect(&config).await?.admin_audit(0, 100).await }
    };
    let original_trail = trail_of(hub.addr).await?;
    let restored_trail = trail_of(second.addr).await?;
    assert_eq!(restored_trail.len(), 1, "{restored_trail:?}");
    assert_eq!(restored_trail[..], original_trail[..1]);
    assert_eq!(restored_trail[0].action, "suspend-unit");
    let finance = client_with_trust(&pki, "finance", second.addr, "finance-restored").await?;
    let mut seen: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = finance.pull(after, 500).await?;
        if page.entries.is_empty() {
            break;
        }
        for e in &page.entries {
            if e.channel() == "tax" {
                seen.insert(e.seq(), e.leaf_hash.to_vec());
            }
        }
        after = page.next_after(after);
    }
    assert_eq!(
        seen.len() as u64,
        copied.size,
        "the restored inbox holds the copy"
    );
    for (seq, leaf, _) in answered.iter().filter(|(_, _, before)| *before) {
        assert_eq!(
            seen.get(seq),
            Some(leaf),
            "acknowledged entry tax:{seq} is not served"
        );
    }
    // Its checkpoint is the manifest's, or provably extends it.
    let served = finance.checkpoint("tax").await?;
    assert_eq!(served.size, copied.size);
    if checkpoint_size == copied.size {
        assert_eq!(Some(&served.note), copied.checkpoint.as_ref());
    }
    let manifest_note = copied.checkpoint.as_deref().ok_or("no checkpoint note")?;
    let text_body = tongbao_proto::checkpoint::parse_note(manifest_note)?.text;
    let old = tongbao_proto::checkpoint::Checkpoint::parse_body(&text_body)?;
    let mut log = LogClient::new(raw_channel(&pki, "finance", second.addr).await?);
    let proof: Vec<tongbao_proto::Hash> = log
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            channel: "tax".into(),
            old_size: old.size,
            new_size: served.size,
        })
        .await?
        .into_inner()
        .proof
        .into_iter()
        .map(|h| h.try_into().map_err(|_| "a proof hash is not 32 bytes"))
        .collect::<Result<_, _>>()?;
    if old.size < served.size {
        tongbao_proto::merkle::check_tree(&proof, served.size, &served.root, old.size, &old.root)?;
    } else {
        assert_eq!(served.root, old.root);
    }

    // A client that verified the original's newer checkpoint sees a rollback.
    let mut config = pki.unit_config("finance", second.addr)?;
    config.trust_state = pki.path().join("finance-trust-state.json");
    let rolled_back = Client::connect(&config).await?.checkpoint("tax").await;
    match rolled_back {
        Err(e @ ClientError::Rollback { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("smaller than size") && message.contains("(rollback)"),
                "{message}"
            );
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    second.kill()?;
    hub.kill()?;

    // A backup whose trail was edited does not restore, and leaves nothing.
    let trail = backup_dir.join("admin-audit.jsonl");
    let edited = std::fs::read_to_string(&trail)?.replace("state-security", "finance");
    std::fs::write(&trail, edited)?;
    let again = pki.path().join("restored-edited");
    let out = hub_command(args(&[
        &"restore",
        &"--from",
        &backup_dir,
        &"--data-dir",
        &again,
    ]))
    .await?;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("admin audit trail") && text(&out).contains("record 1"),
        "{}",
        text(&out)
    );
    assert!(!again.exists(), "a failed restore leaves nothing behind");
    Ok(())
}

/// A stopped hub's data with 4 entries in tax's channel, checkpointed.
async fn checkpointed_data() -> Result<TestPki, BoxError> {
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    for i in 0..4 {
        tax.push(note(&format!("entry-{i}")).to_units(["finance"]))
            .await?;
    }
    let mut log = LogClient::new(raw_channel(&pki, "finance", hub.addr).await?);
    log.get_checkpoint(pb::GetCheckpointRequest {
        channel: "tax".into(),
    })
    .await?;
    hub.kill()?;
    Ok(pki)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_data_names_a_flipped_byte_and_passes_an_untouched_copy() -> TestResult {
    let pki = checkpointed_data().await?;
    let data = pki.path().join("data");
    // An offline backup of the stopped hub, restored twice.
    let backup = pki.path().join("offline-backup");
    let key = pki.path().join("hub/checkpoint.key");
    let out = hub_command(args(&[
        &"backup",
        &"--data-dir",
        &data,
        &"--checkpoint-key",
        &key,
        &"--to",
        &backup,
    ]))
    .await?;
    assert!(out.status.success(), "{}", text(&out));
    let (good, bad) = (pki.path().join("good"), pki.path().join("bad"));
    for d in [&good, &bad] {
        let out = hub_command(args(&[&"restore", &"--from", &backup, &"--data-dir", d])).await?;
        assert!(out.status.success(), "{}", text(&out));
    }
    // One bit of one entry's body, in one copy, in its segment file.
    {
        let (file, offset, len) = {
            let store = tongbao_server::store::SledStore::open(&bad, true)?;
            store.raw_entry_place("tax", 2)?.ok_or("no entry tax:2")?
        };
        let mut bytes = std::fs::read(&file)?;
        let v = bytes
            .get_mut(offset as usize..(offset + len) as usize)
            .ok_or("the place is beyond the segment")?;
        let marker = b"body of entry-2";
        let at = v
            .windows(marker.len())
            .position(|w| w == marker)
            .ok_or("the body is not in the record")?;
        v[at + 8] ^= 0x01;
        std::fs::write(&file, &bytes)?;
    }
    let config = pki.path().join("hub.toml");
    let out = hub_command(args(&[&"verify-data", &bad, &"--config", &config])).await?;
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("channel tax: entry 2") && said.contains("leaf hash"),
        "{said}"
    );
    assert!(said.contains("1 failure"), "{said}");
    let out = hub_command(args(&[&"verify-data", &good, &"--config", &config])).await?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("4 entries"), "{}", text(&out));
    assert!(
        text(&out).contains("1 checkpoint(s) checked"),
        "{}",
        text(&out)
    );
    // The original, untouched, passes too.
    let out = hub_command(args(&[&"verify-data", &data, &"--config", &config])).await?;
    assert!(out.status.success(), "{}", text(&out));
    // Without a key to check the checkpoints with, that is a failure.
    let out = hub_command(args(&[&"verify-data", &data])).await?;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("signatures cannot be checked"),
        "{}",
        text(&out)
    );

    // verify-data refuses a directory a hub runs on, and says so.
    let running = HubProcess::start_on(&pki, HUB, &good)?;
    let out = hub_command(args(&[&"verify-data", &good])).await?;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is running on the data directory"),
        "{}",
        text(&out)
    );
    running.kill()?;

    // Restore refuses a non-empty target, and leaves it as it was.
    let out = hub_command(args(&[
        &"restore",
        &"--from",
        &backup,
        &"--data-dir",
        &good,
    ]))
    .await?;
    assert!(!out.status.success());
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    assert!(good.join("db").is_file());

    // A damaged backup restores nothing.
    let dump = backup.join("store.dump");
    let mut bytes = std::fs::read(&dump)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&dump, &bytes)?;
    let target = pki.path().join("from-damaged");
    let out = hub_command(args(&[
        &"restore",
        &"--from",
        &backup,
        &"--data-dir",
        &target,
    ]))
    .await?;
    assert!(!out.status.success());
    assert!(text(&out).contains("damaged"), "{}", text(&out));
    assert!(!target.exists(), "a failed restore left {target:?} behind");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_into_an_unusable_target_fails_cleanly_and_the_hub_serves_on() -> TestResult {
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    tax.push(note("first").to_units(["finance"])).await?;
    // Under a regular file: no directory can be made there (root included).
    let file = pki.path().join("file.txt");
    std::fs::write(&file, b"not a directory")?;
    let out = online_backup(&pki, hub.addr, &file.join("backup")).await?;
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("FailedPrecondition")
            && said.contains("cannot use the backup directory")
            && said.contains("Not a directory"),
        "{said}"
    );
    // A directory that holds something already.
    let full = pki.path().join("full");
    std::fs::create_dir(&full)?;
    std::fs::write(full.join("other"), b"kept")?;
    let out = online_backup(&pki, hub.addr, &full).await?;
    assert!(!out.status.success());
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    assert_eq!(std::fs::read(full.join("other"))?, b"kept");
    assert_eq!(std::fs::read_dir(&full)?.count(), 1);
    // A disk the backup would leave with less than twice the hub's
    // reserve (it may be the hub's own): the reserve is set to 60 % of
    // what is free, so the hub starts and writes, and no backup fits.
    let free_mib = fs2::available_space(pki.path())? >> 20;
    let pki_full = TestPki::generate()?;
    pki_full.edit_hub_toml(
        "min_free_mib = 64",
        &format!("min_free_mib = {}", free_mib * 6 / 10),
    )?;
    let crowded = HubProcess::start(&pki_full, HUB)?;
    let unit = Client::connect(&pki_full.unit_config("tax", crowded.addr)?).await?;
    unit.push(note("before").to_units(["finance"])).await?;
    let target = pki_full.path().join("no-room");
    let out = online_backup(&pki_full, crowded.addr, &target).await?;
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("ResourceExhausted") && said.contains("MiB free"),
        "{said}"
    );
    assert!(!target.exists(), "a failed backup left {target:?} behind");
    unit.push(note("after").to_units(["finance"])).await?;
    crowded.kill()?;
    // The hub serves on: a push, and its delivery.
    let r = tax.push(note("second").to_units(["finance"])).await?;
    let finance = Client::connect(&pki.unit_config("finance", hub.addr)?).await?;
    let page = finance.pull(0, 10).await?;
    assert!(
        page.entries
            .iter()
            .any(|e| e.channel() == "tax" && e.seq() == r.seq)
    );
    // And a backup into a good place still works after the failures.
    let out = online_backup(&pki, hub.addr, &pki.path().join("good-backup")).await?;
    assert!(out.status.success(), "{}", text(&out));
    hub.kill()?;
    Ok(())
}
