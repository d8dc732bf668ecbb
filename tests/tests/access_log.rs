//! The access log end to end over real mTLS: every method of every
//! service is recorded with its outcome (refusals, an unknown party and a
//! refused handshake included); a changed or removed record is caught by
//! `audit-log verify`, and by the hub at start after the latest signed
//! checkpoint (a removed one, and changed stored hashes, anywhere); an
//! answered write survives kill -9; retention removes whole old days
//! only, and records it. The log is the sled store's (its files, read as
//! `audit-log` reads them beside a hub).
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::Command;
use tongbao_client::Client;
use tongbao_proto::checkpoint::NoteSigner;
use tongbao_proto::identity::Principal;
use tongbao_proto::pb;
use tongbao_server::access_log::export::Filter;
use tongbao_server::access_log::{AccessRecord, RecordKind, stored_read};
use tongbao_server::store::access_files::{layout, open_read};
use tongbao_tests::{BoxError, HubProcess, Role, TestHub, TestPki, TestResult, note, raw_channel};
use tonic::Code;

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");

/// The hub's own log's directory in the sled store of `data`.
fn log_dir(data: &Path) -> Result<std::path::PathBuf, BoxError> {
    let own = format!("{}/.access-log", tongbao_server::pki::DEFAULT_LOG_NAME);
    Ok(layout::origin_dir(&data.join(layout::ROOT), &own)?)
}

/// Every record of the hub's own log, read as `audit-log` reads it.
fn records(data: &Path) -> Result<Vec<AccessRecord>, BoxError> {
    let reader = open_read(data).ok_or("the store holds no access log")?;
    let own = format!("{}/.access-log", tongbao_server::pki::DEFAULT_LOG_NAME);
    let snapshot = reader.snapshot();
    Ok(stored_read::query(&*snapshot, &own, &Filter::default())?)
}

/// The hub key as `tongbao hub-key` prints it.
fn hub_vkey(pki: &TestPki) -> Result<String, BoxError> {
    let key = tongbao_server::channel_log::load_or_create_key(
        &pki.path().join(tongbao_server::pki::CHECKPOINT_KEY_FILE),
    )?;
    Ok(
        NoteSigner::new(tongbao_server::pki::DEFAULT_LOG_NAME, &key)?
            .verifier()?
            .to_vkey(),
    )
}

/// Runs `tongbao-hub audit-log ARGS`: success and what it printed.
fn audit_log(args: &[&str]) -> Result<(bool, String), BoxError> {
    let out = Command::new(HUB)
        .arg("audit-log")
        .args(args)
        .env("RUST_LOG", "error")
        .output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn code_of<T>(r: Result<T, tonic::Status>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(s) => s.code() as i32,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_is_recorded_with_its_outcome() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    tax.push(note("recorded").to_units(["finance"])).await?;
    let ch = raw_channel(&t.pki, "tax", t.addr).await?;
    let mut ex = pb::exchange_client::ExchangeClient::new(ch.clone());
    let mut log = pb::log_client::LogClient::new(ch.clone());
    let mut audit = pb::audit_client::AuditClient::new(ch.clone());
    let mut wf = pb::workflow_client::WorkflowClient::new(ch.clone());
    let mut admin = pb::admin_client::AdminClient::new(ch.clone());
    let mut dir = pb::directory_client::DirectoryClient::new(ch.clone());
    let mut seen: Vec<(&str, i32)> = Vec::new();
    macro_rules! call {
        ($name:expr, $e:expr) => {
            seen.push(($name, code_of($e.await)))
        };
    }
    call!("Exchange/Push", ex.push(pb::PushRequest::default()));
    call!(
        "Exchange/PushBatch",
        ex.push_batch(pb::PushBatchRequest::default())
    );
    call!(
        "Exchange/Pull",
        ex.pull(pb::PullRequest {
            inbox: "tax".into(),
            after: 0,
            limit: 5
        })
    );
    call!(
        "Exchange/Subscribe",
        ex.subscribe(pb::SubscribeRequest {
            inbox: "finance".into(),
            after: 0
        })
    );
    call!(
        "Exchange/GetEntry",
        ex.get_entry(pb::GetEntryRequest {
            channel: "tax".into(),
            seq: 0
        })
    );
    call!(
        "Exchange/ListUnits",
        ex.list_units(pb::ListUnitsRequest::default())
    );
    call!(
        "Exchange/Acknowledge",
        ex.acknowledge(pb::AcknowledgeRequest::default())
    );
    call!(
        "Log/GetLogKey",
        log.get_log_key(pb::GetLogKeyRequest::default())
    );
    call!(
        "Log/GetCheckpoint",
        log.get_checkpoint(pb::GetCheckpointRequest {
            channel: "tax".into()
        })
    );
    call!(
        "Log/GetInclusionProof",
        log.get_inclusion_proof(pb::GetInclusionProofRequest {
            channel: "tax".into(),
            seq: 0,
            tree_size: 1
        })
    );
    call!(
        "Log/GetInclusionProofs",
        log.get_inclusion_proofs(pb::GetInclusionProofsRequest {
            channel: "tax".into(),
            seqs: vec![0],
            tree_size: 1,
            multiproof: false
        })
    );
    call!(
        "Log/GetConsistencyProof",
        log.get_consistency_proof(pb::GetConsistencyProofRequest {
            channel: "tax".into(),
            old_size: 1,
            new_size: 1
        })
    );
    call!(
        "Log/GetLeafHashes",
        log.get_leaf_hashes(pb::GetLeafHashesRequest {
            channel: "tax".into(),
            start: 0,
            count: 1
        })
    );
    call!(
        "Log/AddCosignature",
        log.add_cosignature(pb::AddCosignatureRequest::default())
    );
    call!(
        "Log/GetKeyRegistry",
        log.get_key_registry(pb::GetKeyRegistryRequest::default())
    );
    call!(
        "Audit/ListDeliveries",
        audit.list_deliveries(pb::ListDeliveriesRequest {
            mechanism: "fund-supervision".into(),
            ..Default::default()
        })
    );
    call!(
        "Audit/UnitSummary",
        audit.unit_summary(pb::UnitSummaryRequest {
            mechanism: "fund-supervision".into(),
            ..Default::default()
        })
    );
    call!(
        "Workflow/Submit",
        wf.submit(pb::SubmitStepRequest::default())
    );
    call!(
        "Workflow/GetMeeting",
        wf.get_meeting(pb::GetMeetingRequest {
            meeting_id: "m-1".into()
        })
    );
    call!(
        "Workflow/GetJointNotice",
        wf.get_joint_notice(pb::GetJointNoticeRequest {
            notice_id: "n-1".into()
        })
    );
    call!(
        "Workflow/ListLiaisons",
        wf.list_liaisons(pb::ListLiaisonsRequest::default())
    );
    call!(
        "Workflow/ComputeStatistics",
        wf.compute_statistics(pb::ComputeStatisticsRequest {
            mechanism: "fund-supervision".into(),
            ..Default::default()
        })
    );
    call!(
        "Workflow/ShowCase",
        wf.show_case(pb::ShowCaseRequest {
            case_id: "2026-F-031".into()
        })
    );
    call!(
        "Workflow/ShowOrganization",
        wf.show_organization(pb::ShowOrganizationRequest {
            credit_code: "51140000MJ0000012R".into()
        })
    );
    call!(
        "Workflow/GetWarning",
        wf.get_warning(pb::GetWarningRequest {
            warning_id: "w-1".into()
        })
    );
    call!(
        "Workflow/ListWarnings",
        wf.list_warnings(pb::ListWarningsRequest::default())
    );
    call!(
        "Workflow/GetTask",
        wf.get_task(pb::GetTaskRequest {
            task_id: "t-1".into()
        })
    );
    call!(
        "Workflow/ListTasks",
        wf.list_tasks(pb::ListTasksRequest::default())
    );
    call!(
        "Workflow/GetAction",
        wf.get_action(pb::GetActionRequest {
            action_id: "a-1".into()
        })
    );
    call!(
        "Workflow/ListActions",
        wf.list_actions(pb::ListActionsRequest::default())
    );
    call!(
        "Admin/RegisterKey",
        admin.register_key(pb::RegisterKeyRequest {
            unit: "tax".into(),
            ..Default::default()
        })
    );
    call!(
        "Admin/RetireKey",
        admin.retire_key(pb::RetireKeyRequest {
            unit: "tax".into(),
            ..Default::default()
        })
    );
    call!(
        "Admin/SuspendUnit",
        admin.suspend_unit(pb::SuspendUnitRequest {
            unit: "finance".into(),
            reason: "test".into()
        })
    );
    call!(
        "Admin/ReinstateUnit",
        admin.reinstate_unit(pb::ReinstateUnitRequest {
            unit: "finance".into(),
            reason: "test".into()
        })
    );
    call!(
        "Admin/AddMember",
        admin.add_member(pb::AddMemberRequest {
            mechanism: "fund-supervision".into(),
            unit: "education".into(),
            effective_micros: 0
        })
    );
    call!(
        "Admin/ReloadTls",
        admin.reload_tls(pb::ReloadTlsRequest::default())
    );
    call!("Admin/Backup", admin.backup(pb::BackupRequest::default()));
    call!(
        "Admin/ListExpiring",
        admin.list_expiring(pb::ListExpiringRequest::default())
    );
    call!(
        "Admin/ListAudit",
        admin.list_audit(pb::ListAuditRequest::default())
    );
    call!(
        "Directory/MembersAt",
        dir.members_at(pb::MembersAtRequest {
            mechanism: "fund-supervision".into(),
            at_micros: 0
        })
    );
    call!(
        "Directory/RotateKey",
        dir.rotate_key(pb::RotateKeyRequest::default())
    );
    // An operator's allowed call, a party the registry does not know, and
    // a certificate from another CA (refused at the handshake).
    let op = t.operator(Role::System).await?;
    op.list_units().await?;
    let ghost = Principal::Unit("ghost-bureau".into());
    let cert = t.pki.ca()?.issue_client(&ghost, "Ghost Bureau", 30)?;
    let ghost_cfg = t.pki.custom_client("ghost", &cert, ghost, "tax", t.addr)?;
    let ghost_said = match Client::connect(&ghost_cfg).await {
        Ok(c) => c.pull(0, 1).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(ghost_said.is_err(), "an unknown party was served");
    let rogue = TestPki::generate()?;
    let rogue_cert = rogue
        .ca()?
        .issue_client(&Principal::Unit("tax".into()), "Tax", 30)?;
    let rogue_cfg = t.pki.custom_client(
        "rogue",
        &rogue_cert,
        Principal::Unit("tax".into()),
        "tax",
        t.addr,
    )?;
    let rogue_said = match Client::connect(&rogue_cfg).await {
        Ok(c) => c.pull(0, 1).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        rogue_said.is_err(),
        "a certificate of another CA was served"
    );
    drop((tax, op, ex, log, audit, wf, admin, dir, ch));
    let data = t.pki.path().join("data");
    let mut t = t;
    if let Some(hub) = t.hub.take() {
        hub.shutdown().await?;
    }

    let all = records(&data)?;
    assert_eq!(seen.len(), 41);
    let tax_uri = "urn:tongbao:unit:tax";
    for (method, code) in &seen {
        let path = format!("/tongbao.v1.{method}");
        let found: Vec<&AccessRecord> = all
            .iter()
            .filter(|r| r.method == path && r.caller == tax_uri)
            .collect();
        assert!(!found.is_empty(), "{path} is not in the access log");
        // A stream the client dropped ends cancelled; every unary call is
        // recorded with the very code its caller got.
        if *method != "Exchange/Subscribe" {
            assert!(
                found.iter().any(|r| r.code == *code),
                "{path}: the caller got code {code}, the log says {:?}",
                found.iter().map(|r| r.code).collect::<Vec<_>>()
            );
        }
        assert!(
            found
                .iter()
                .all(|r| !r.serial.is_empty() && !r.peer.is_empty()),
            "{path}"
        );
    }
    // Refusals and successes both appear, with targets where named.
    assert!(seen.iter().any(|(_, c)| *c == 0) && seen.iter().any(|(_, c)| *c != 0));
    let push = all
        .iter()
        .find(|r| r.method.starts_with("/tongbao.v1.Exchange/Push") && r.code == 0)
        .ok_or("the answered push is not recorded")?;
    assert_eq!(push.targets, ["channel:tax:0"]);
    assert!(
        push.request_bytes > 0 && push.response_bytes > 0,
        "{push:?}"
    );
    let pull = all
        .iter()
        .find(|r| r.method.ends_with("/Pull") && r.caller == tax_uri)
        .ok_or("no pull")?;
    assert!(pull.targets.contains(&"inbox:tax".to_string()), "{pull:?}");
    assert!(
        all.iter()
            .any(|r| r.caller == "urn:tongbao:operator:system-admin"
                && r.method.ends_with("/ListUnits")
                && r.code == 0),
        "the operator's call is not recorded"
    );
    assert!(
        all.iter()
            .any(|r| r.caller == "urn:tongbao:unit:ghost-bureau"
                && r.code == Code::Unauthenticated as i32),
        "the unknown party's refused call is not recorded"
    );
    // The admin trail is part of the log: the refused admin changes are
    // there as admin records too, numbered in the one tree.
    let admin: Vec<&AccessRecord> = all
        .iter()
        .filter(|r| r.kind == RecordKind::Admin && r.caller == tax_uri)
        .collect();
    assert!(
        admin.iter().any(|r| r.code == Code::PermissionDenied as i32
            && r.targets.iter().any(|t| t.starts_with("admin-trail:"))),
        "the admin trail's refusals are not in the access log: {admin:?}"
    );
    let handshake = all
        .iter()
        .find(|r| r.kind == RecordKind::Handshake)
        .ok_or("the refused handshake is not recorded")?;
    assert!(handshake.peer.starts_with("127.0.0.1:"), "{handshake:?}");
    assert!(
        handshake.message.contains("TLS handshake refused"),
        "{handshake:?}"
    );
    // Numbered from 0 without a gap, and the whole log verifies offline.
    assert!(all.iter().enumerate().all(|(i, r)| r.n == i as u64));
    let (ok, said) = audit_log(&[
        "verify",
        &data.display().to_string(),
        "--hub-key",
        &hub_vkey(&t.pki)?,
    ])?;
    assert!(ok, "{said}");
    Ok(())
}

/// A hub process with a few calls made on it, then stopped in order.
async fn served(pki: &TestPki, env: &[(&str, &str)], subject: &str) -> TestResult {
    let hub = HubProcess::start_with_env(pki, HUB, &pki.path().join("data"), env)?;
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    tax.push(note(subject).to_units(["finance"])).await?;
    let finance = Client::connect(&pki.unit_config("finance", hub.addr)?).await?;
    finance.pull(0, 10).await?;
    drop((tax, finance));
    hub.terminate()?;
    let status = hub.wait_exit(std::time::Duration::from_secs(60))?;
    assert!(status.success(), "the hub stopped with {status}");
    Ok(())
}

/// The frames of a record file: (start, end) of each.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let end = at + 8 + len as usize;
        out.push((at, end));
        at = end;
    }
    out
}

/// `audit-log verify` names a changed or removed record anywhere; the
/// hub's start names one after the latest signed checkpoint (what a crash
/// before the next checkpoint leaves), a removed one anywhere, and stored
/// hashes that no longer give the signed root (docs/access-log.md, "The
/// check at start").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_or_removed_record_is_named_by_verify_and_at_start() -> TestResult {
    let pki = TestPki::generate()?;
    served(&pki, &[], "first").await?;
    let data = pki.path().join("data");
    let dir = log_dir(&data)?;
    let checkpoint_file = dir.join(layout::CHECKPOINT_FILE);
    // Signed as the first hub stopped: it covers the first hub's records only.
    let older = std::fs::read(&checkpoint_file)?;
    let signed = layout::signed_size(&String::from_utf8(older.clone())?).ok_or("no size")?;
    served(&pki, &[], "second").await?;
    let newer = std::fs::read(&checkpoint_file)?;
    let vkey = hub_vkey(&pki)?;
    let data_arg = data.display().to_string();
    let (ok, said) = audit_log(&["verify", &data_arg, "--hub-key", &vkey])?;
    assert!(ok, "{said}");
    let (_, path) = layout::record_files(&dir)?.pop().ok_or("no record file")?;
    let original = std::fs::read(&path)?;
    let framed = frames(&original);
    // A record of the second hub, after the older checkpoint.
    let k = signed as usize + 1;
    assert!(framed.len() > k + 1, "{} records", framed.len());
    let number = format!("record {k}");

    // Its line changed (a byte of it).
    let mut changed = original.clone();
    changed[framed[k].0 + 30] ^= 1;
    std::fs::write(&path, &changed)?;
    let (ok, said) = audit_log(&["verify", &data_arg, "--hub-key", &vkey])?;
    assert!(!ok, "verify passed a changed record: {said}");
    assert!(said.contains(&number) && said.contains("changed"), "{said}");
    // After the checkpoint the start reads it, and refuses.
    std::fs::write(&checkpoint_file, &older)?;
    let refused = HubProcess::refused_start(&pki, HUB, &data)?;
    assert!(
        refused.contains(&number) && refused.contains("changed"),
        "{refused}"
    );

    // It removed.
    let mut removed = original[..framed[k].0].to_vec();
    removed.extend_from_slice(&original[framed[k].1..]);
    std::fs::write(&path, &removed)?;
    let gone = format!("{number} was removed");
    let (ok, said) = audit_log(&["verify", &data_arg, "--hub-key", &vkey])?;
    assert!(!ok, "verify passed a removed record: {said}");
    assert!(said.contains(&gone), "{said}");
    let refused = HubProcess::refused_start(&pki, HUB, &data)?;
    assert!(refused.contains(&gone), "{refused}");
    // Covered by the checkpoint, a removed record still refuses the start:
    // the records end before those it signs.
    std::fs::write(&path, &removed)?;
    std::fs::write(&checkpoint_file, &newer)?;
    let refused = HubProcess::refused_start(&pki, HUB, &data)?;
    assert!(refused.contains("were removed"), "{refused}");
    // And a stored hash of the tree's right edge changed under the
    // checkpoint (the last one written) refuses it too.
    let tree_file = dir.join(layout::TREE_FILE);
    std::fs::write(&path, &original)?;
    let tree = std::fs::read(&tree_file)?;
    let mut altered = tree.clone();
    let last = altered.len().checked_sub(32).ok_or("an empty tree")?;
    altered[last] ^= 1;
    std::fs::write(&tree_file, &altered)?;
    let refused = HubProcess::refused_start(&pki, HUB, &data)?;
    assert!(refused.contains("altered"), "{refused}");
    std::fs::write(&tree_file, &tree)?;

    // Put back, the log verifies and the hub starts again.
    served(&pki, &[], "second").await?;
    let (ok, said) = audit_log(&["verify", &data_arg, "--hub-key", &vkey])?;
    assert!(ok, "{said}");
    // A hub without replicas signs under the origin it always had.
    let own = format!("{}/.access-log", tongbao_server::pki::DEFAULT_LOG_NAME);
    assert!(
        said.contains(&format!("the access log {own} in the store")),
        "{said}"
    );

    // An export verifies offline; a changed record in it is named.
    let out = pki.path().join("export.json");
    let (ok, said) = audit_log(&[
        "export",
        "--data-dir",
        &data_arg,
        "--out",
        &out.display().to_string(),
    ])?;
    assert!(ok, "{said}");
    let out_arg = out.display().to_string();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out)?.permissions().mode() & 0o777, 0o600);
    let (ok, said) = audit_log(&["verify", &out_arg, "--hub-key", &vkey])?;
    assert!(ok && said.contains("Verified"), "{said}");
    assert!(
        said.contains(&format!("checkpoint of {own} (size")),
        "{said}"
    );
    let text = std::fs::read_to_string(&out)?;
    std::fs::write(
        &out,
        text.replacen("urn:tongbao:unit:finance", "urn:tongbao:unit:tax", 1),
    )?;
    let (ok, said) = audit_log(&["verify", &out_arg, "--hub-key", &vkey])?;
    assert!(
        !ok && said.contains("record") && said.contains("changed"),
        "{said}"
    );
    // Query filters by caller and code, as CSV.
    let (ok, said) = audit_log(&[
        "query",
        "--data-dir",
        &data_arg,
        "--caller",
        "urn:tongbao:unit:finance",
        "--code",
        "0",
        "--csv",
    ])?;
    assert!(ok, "{said}");
    let rows: Vec<&str> = said.lines().skip(1).collect();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.contains("urn:tongbao:unit:finance")),
        "{said}"
    );
    assert!(
        rows.iter().any(|r| r.contains("/tongbao.v1.Exchange/Pull")),
        "{said}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_write_survives_kill_9() -> TestResult {
    let pki = TestPki::generate()?;
    let data = pki.path().join("data");
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    let r = tax.push(note("kept").to_units(["finance"])).await?;
    hub.kill()?;
    drop(tax);
    let target = format!("channel:{}:{}", r.channel, r.seq);
    let all = records(&data)?;
    assert!(
        all.iter()
            .any(|x| x.method.starts_with("/tongbao.v1.Exchange/Push")
                && x.code == 0
                && x.targets.contains(&target)),
        "the answered push's record is not on disk: {all:?}"
    );
    // The hub starts on what the kill left, and the log verifies.
    served(&pki, &[], "after").await?;
    let (ok, said) = audit_log(&[
        "verify",
        &data.display().to_string(),
        "--hub-key",
        &hub_vkey(&pki)?,
    ])?;
    assert!(ok, "{said}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_whole_old_segments_and_records_it() -> TestResult {
    let pki = TestPki::generate()?;
    let data = pki.path().join("data");
    let point = tongbao_server::failpoint::ENV;
    // Shorter than 180 days is refused at start, saying why.
    pki.edit_hub_toml("retention_days = 180", "retention_days = 30")?;
    let refused = HubProcess::refused_start(&pki, HUB, &data)?;
    assert!(refused.contains("at least 180 days"), "{refused}");
    pki.edit_hub_toml("retention_days = 30", "retention_days = 180")?;

    served(&pki, &[(point, "access-log-days-ago:200")], "old").await?;
    let old = records(&data)?.len() as u64;
    served(&pki, &[(point, "access-log-days-ago:100")], "recent").await?;
    served(&pki, &[], "now").await?;

    // The 200-day-old day is removed (its records only), the 100-day-old
    // one kept.
    let all = records(&data)?;
    let removal = all
        .iter()
        .find(|r| r.kind == RecordKind::Removal)
        .ok_or("no removal record")?;
    let removed = removal
        .removed
        .as_ref()
        .ok_or("the removal names nothing")?;
    assert_eq!((removed.first, removed.count), (0, old));
    assert_eq!(
        all.first().map(|r| r.n),
        Some(removed.count),
        "the kept records follow the removed ones"
    );
    assert!(removal.message.contains(&removed.segment), "{removal:?}");
    // The tree still verifies, removed records included by their hashes.
    let data_arg = data.display().to_string();
    let (ok, said) = audit_log(&["verify", &data_arg, "--hub-key", &hub_vkey(&pki)?])?;
    assert!(
        ok && said.contains(&format!("{} removed", removed.count)),
        "{said}"
    );
    // And the removal can be found by the audit administrator.
    let (ok, said) = audit_log(&[
        "query",
        "--data-dir",
        &data_arg,
        "--method",
        "retention",
        "--json",
    ])?;
    assert!(ok && said.contains(&removed.segment), "{said}");
    Ok(())
}
