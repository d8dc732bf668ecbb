//! The three administrator roles (三权分立) end to end over mTLS: each role
//! does its own duties and is refused, on record, outside them; an
//! unregistered operator certificate is nobody on every service; no role
//! appends to a channel; a key's validity dated into the past (registered
//! from, or retired as of, a past time) needs a flag and a reason, both
//! recorded.

use tongbao_client::Client;
use tongbao_proto::keys::{SigningKey, encode_public_key};
use tongbao_proto::pb;
use tongbao_proto::pb::admin_client::AdminClient;
use tongbao_proto::pb::audit_client::AuditClient;
use tongbao_proto::pb::directory_client::DirectoryClient;
use tongbao_proto::pb::exchange_client::ExchangeClient;
use tongbao_proto::pb::log_client::LogClient;
use tongbao_proto::pb::workflow_client::WorkflowClient;
use tongbao_server::roles::{Duty, Method, TABLE};
use tongbao_server::{Hub, HubConfig};
use tongbao_tests::{
    BoxError, HubProcess, Role, TestHub, TestResult, key_with_id, note, raw_party_channel,
    registered_keys,
};
use tonic::Code;

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");
const FUND: &str = "fund-supervision";

/// What a call needs that the hub holds: tax's first key, to retire.
struct Known {
    tax_key: String,
    /// A new directory for `Admin/Backup`.
    backup_to: std::path::PathBuf,
}

/// Makes `method` as `client`, with arguments that are valid on a fresh
/// hub (in the order of the table), so only the caller's role can refuse it.
async fn call(client: &Client, method: Method, known: &Known) -> Result<(), tonic::Status> {
    let mut admin = client.admin();
    match method {
        Method::RegisterKey => {
            let key = SigningKey::generate().map_err(|e| tonic::Status::internal(e.to_string()))?;
            admin
                .register_key(pb::RegisterKeyRequest {
                    unit: "tax".into(),
                    public_key: encode_public_key(key.public_key()),
                    ..Default::default()
                })
                .await
                .map(drop)
        }
        Method::RetireKey => admin
            .retire_key(pb::RetireKeyRequest {
                unit: "tax".into(),
                key_id: known.tax_key.clone(),
                at_micros: 0,
                ..Default::default()
            })
            .await
            .map(drop),
        Method::SuspendUnit => admin
            .suspend_unit(pb::SuspendUnitRequest {
                unit: "finance".into(),
                reason: "drill".into(),
            })
            .await
            .map(drop),
        Method::ReinstateUnit => admin
            .reinstate_unit(pb::ReinstateUnitRequest {
                unit: "finance".into(),
                reason: "drill over".into(),
            })
            .await
            .map(drop),
        Method::ListExpiring => admin
            .list_expiring(pb::ListExpiringRequest { days: 40 })
            .await
            .map(drop),
        Method::AddMember => admin
            .add_member(pb::AddMemberRequest {
                mechanism: FUND.into(),
                unit: "education".into(),
                effective_micros: 0,
            })
            .await
            .map(drop),
        Method::ReloadTls => admin.reload_tls(pb::ReloadTlsRequest {}).await.map(drop),
        Method::ListAudit => admin
            .list_audit(pb::ListAuditRequest::default())
            .await
            .map(drop),
        Method::MembersAt => client
            .directory()
            .members_at(pb::MembersAtRequest {
                mechanism: FUND.into(),
                at_micros: 0,
            })
            .await
            .map(drop),
        // A unit's own call: `no_role_can_append_to_a_channel` makes it.
        Method::RotateKey => Err(tonic::Status::invalid_argument("not made here")),
        Method::Backup => admin
            .backup(pb::BackupRequest {
                to: known.backup_to.display().to_string(),
            })
            .await
            .map(drop),
    }
}

async fn known(t: &TestHub) -> Result<Known, BoxError> {
    let keys = registered_keys(&t.unit("tax").await?, "tax").await?;
    Ok(Known {
        tax_key: keys.first().ok_or("tax has no key")?.key_id.clone(),
        backup_to: t.pki.path().join("roles-backup"),
    })
}

fn operator_uri(role: Role) -> String {
    format!(
        "urn:tongbao:operator:{}",
        tongbao_server::pki::example_operator(role)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_its_own_duties() -> TestResult {
    let t = TestHub::start().await?;
    let known = known(&t).await?;
    let mut done = Vec::new();
    for row in &TABLE {
        let Duty::Role(role) = row.duty else { continue };
        let client = t.operator(role).await?;
        call(&client, row.method, &known)
            .await
            .map_err(|s| format!("{role} could not make {}: {s:?}", row.path))?;
        done.push((operator_uri(role), row.action));
    }
    // The changes took effect: tax's first key is retired, education joined.
    let system = t.operator(Role::System).await?;
    let tax_keys = registered_keys(&system, "tax").await?;
    assert_ne!(
        key_with_id(&tax_keys, &known.tax_key)?.valid_until_micros,
        0
    );
    assert!(
        system
            .members_at(FUND, 0)
            .await?
            .contains(&"education".into())
    );
    t.unit("finance")
        .await?
        .push(note("reinstated").to_units(["tax"]))
        .await?;
    // Changes are recorded with their operator; reads are not.
    let trail = t.operator(Role::Audit).await?.admin_audit(0, 100).await?;
    let recorded: Vec<(String, &str)> = trail
        .iter()
        .map(|r| {
            assert_eq!(r.code, 0, "{r:?}");
            (r.actor.clone(), r.action.as_str())
        })
        .collect();
    let changes: Vec<(String, &str)> = done
        .into_iter()
        .filter(|(_, a)| !["list-expiring", "list-audit", "members-at"].contains(a))
        .collect();
    assert_eq!(recorded, changes);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_refused_outside_its_duties_and_the_refusal_is_recorded() -> TestResult {
    let t = TestHub::start().await?;
    let known = known(&t).await?;
    let before = t.unit("tax").await?.list_units().await?;
    let mut expected = Vec::new();
    for role in Role::ALL {
        let client = t.operator(role).await?;
        for row in &TABLE {
            let Duty::Role(needed) = row.duty else {
                continue;
            };
            if needed == role {
                continue;
            }
            let status = call(&client, row.method, &known)
                .await
                .err()
                .ok_or_else(|| format!("{role} made {}", row.path))?;
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{role} {}: {status:?}",
                row.path
            );
            let message = status.message();
            assert!(
                message.contains(&format!("has the {role} role"))
                    && message.contains(&format!("needs the {needed} role"))
                    && message.contains(row.path),
                "{message}"
            );
            expected.push((operator_uri(role), row.action));
        }
    }
    // The security administrator cannot add members, the system
    // administrator cannot register keys, the audit administrator changes
    // nothing: all among the refusals above.
    for (role, action) in [
        (Role::Security, "add-member"),
        (Role::System, "register-key"),
        (Role::Audit, "register-key"),
        (Role::Audit, "retire-key"),
        (Role::Audit, "suspend-unit"),
        (Role::Audit, "reinstate-unit"),
        (Role::Audit, "add-member"),
        (Role::Audit, "reload-tls"),
    ] {
        assert!(
            expected.contains(&(operator_uri(role), action)),
            "{role} {action}"
        );
    }
    // Nothing changed.
    let tax = t.unit("tax").await?;
    assert_eq!(tax.list_units().await?, before);
    assert!(!tax.members_at(FUND, 0).await?.contains(&"education".into()));
    t.unit("finance")
        .await?
        .push(note("not suspended").to_units(["tax"]))
        .await?;
    // The audit administrator reads every refusal back, in order.
    let trail = t.operator(Role::Audit).await?.admin_audit(0, 1000).await?;
    let recorded: Vec<(String, &str)> = trail
        .iter()
        .map(|r| {
            assert_eq!(r.code, Code::PermissionDenied as i32, "{r:?}");
            assert!(r.outcome.contains("role"), "{r:?}");
            (r.actor.clone(), r.action.as_str())
        })
        .collect();
    assert_eq!(recorded, expected);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_operator_is_unauthenticated_on_every_service_until_registered()
-> TestResult {
    let mut t = TestHub::start().await?;
    let eve_dir = t.pki.unregistered_operator("eve")?;
    let channel = raw_party_channel(&t.pki, &eve_dir, t.addr).await?;
    let mut admin = AdminClient::new(channel.clone());
    let statuses: Vec<(&str, tonic::Status)> = vec![
        (
            "Admin/ListAudit",
            admin
                .list_audit(pb::ListAuditRequest::default())
                .await
                .err()
                .ok_or("ListAudit served")?,
        ),
        (
            "Admin/SuspendUnit",
            admin
                .suspend_unit(pb::SuspendUnitRequest {
                    unit: "tax".into(),
                    reason: String::new(),
                })
                .await
                .err()
                .ok_or("SuspendUnit served")?,
        ),
        (
            "Directory/MembersAt",
            DirectoryClient::new(channel.clone())
                .members_at(pb::MembersAtRequest {
                    mechanism: FUND.into(),
                    at_micros: 0,
                })
                .await
                .err()
                .ok_or("MembersAt served")?,
        ),
        (
            "Exchange/ListUnits",
            ExchangeClient::new(channel.clone())
                .list_units(pb::ListUnitsRequest {})
                .await
                .err()
                .ok_or("ListUnits served")?,
        ),
        (
            "Exchange/Pull",
            ExchangeClient::new(channel.clone())
                .pull(pb::PullRequest::default())
                .await
                .err()
                .ok_or("Pull served")?,
        ),
        (
            "Log/GetCheckpoint",
            LogClient::new(channel.clone())
                .get_checkpoint(pb::GetCheckpointRequest {
                    channel: "tax".into(),
                })
                .await
                .err()
                .ok_or("GetCheckpoint served")?,
        ),
        (
            "Audit/ListDeliveries",
            AuditClient::new(channel.clone())
                .list_deliveries(pb::ListDeliveriesRequest::default())
                .await
                .err()
                .ok_or("ListDeliveries served")?,
        ),
        (
            "Workflow/ListLiaisons",
            WorkflowClient::new(channel.clone())
                .list_liaisons(pb::ListLiaisonsRequest::default())
                .await
                .err()
                .ok_or("ListLiaisons served")?,
        ),
    ];
    for (path, status) in &statuses {
        assert_eq!(status.code(), Code::Unauthenticated, "{path}: {status:?}");
        assert!(
            status.message().contains("operator eve")
                && status.message().contains("does not register"),
            "{path}: {}",
            status.message()
        );
    }
    // Its refused admin calls are on record.
    let trail = t.operator(Role::Audit).await?.admin_audit(0, 100).await?;
    let eves: Vec<(&str, i32)> = trail
        .iter()
        .filter(|r| r.actor == "urn:tongbao:operator:eve")
        .map(|r| (r.action.as_str(), r.code))
        .collect();
    let unauthenticated = Code::Unauthenticated as i32;
    assert_eq!(
        eves,
        vec![
            ("list-audit", unauthenticated),
            ("suspend-unit", unauthenticated)
        ]
    );
    drop((admin, channel));

    // Operators are added in hub.toml, with one role, read at start.
    let hub_toml = t.pki.path().join("hub.toml");
    let text = std::fs::read_to_string(&hub_toml)?;
    std::fs::write(
        &hub_toml,
        format!("{text}\n[[operators]]\nuri = \"urn:tongbao:operator:eve\"\nrole = \"audit\"\n"),
    )?;
    if let Some(hub) = t.hub.take() {
        hub.shutdown().await?;
    }
    let hub = Hub::start(&t.pki.hub_config()?).await?;
    t.addr = hub.addr();
    t.hub = Some(hub);
    let eve = Client::connect(&t.pki.operator_config("eve", t.addr)).await?;
    assert!(!eve.admin_audit(0, 100).await?.is_empty());
    let refused = eve
        .admin()
        .suspend_unit(pb::SuspendUnitRequest {
            unit: "tax".into(),
            reason: String::new(),
        })
        .await
        .err()
        .ok_or("an audit operator suspended a unit")?;
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_registered_twice_or_with_no_role_refuses_the_start() -> TestResult {
    let t = TestHub::start().await?;
    let data = t.pki.path().join("other-data");
    let hub_toml = t.pki.path().join("hub.toml");
    let original = std::fs::read_to_string(&hub_toml)?;
    for (extra, words) in [
        (
            "\n[[operators]]\nuri = \"urn:tongbao:operator:audit-admin\"\nrole = \"system\"\n",
            "urn:tongbao:operator:audit-admin more than once",
        ),
        (
            "\n[[operators]]\nuri = \"urn:tongbao:operator:root\"\nrole = \"root\"\n",
            "unknown variant `root`",
        ),
        (
            "\n[[operators]]\nuri = \"urn:tongbao:operator:nobody\"\n",
            "missing field `role`",
        ),
    ] {
        std::fs::write(&hub_toml, format!("{original}{extra}"))?;
        let stderr = HubProcess::refused_start(&t.pki, HUB, &data)?;
        assert!(stderr.contains(words), "{stderr}");
        // Also in process: the same rule.
        let config = HubConfig::load(&hub_toml);
        assert!(config.is_err(), "{extra}");
    }
    std::fs::write(&hub_toml, original)?;
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_role_can_append_to_a_channel() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    for role in Role::ALL {
        let op = t.operator(role).await?;
        let channel = op.channel();
        let mut exchange = ExchangeClient::new(channel.clone());
        // Messages signed with tax's own key: the certificate decides.
        let signed = || tax.sign(note("from an operator").to_units(["finance"]));
        let mut refusals = vec![
            (
                "Push",
                exchange
                    .push(pb::PushRequest {
                        message: Some(signed()?),
                    })
                    .await
                    .map(drop),
            ),
            (
                "PushBatch",
                exchange
                    .push_batch(pb::PushBatchRequest {
                        messages: vec![signed()?],
                    })
                    .await
                    .map(drop),
            ),
            (
                "Acknowledge",
                exchange
                    .acknowledge(pb::AcknowledgeRequest {
                        receipt: Some(signed()?),
                    })
                    .await
                    .map(drop),
            ),
            (
                "Submit",
                WorkflowClient::new(channel.clone())
                    .submit(pb::SubmitStepRequest {
                        step: Some(signed()?),
                    })
                    .await
                    .map(drop),
            ),
            (
                "AddCosignature",
                LogClient::new(channel.clone())
                    .add_cosignature(pb::AddCosignatureRequest {
                        channel: "tax".into(),
                        size: 1,
                        cosignature: "— tax AAAA".into(),
                    })
                    .await
                    .map(drop),
            ),
        ];
        let rotation = op
            .directory()
            .rotate_key(pb::RotateKeyRequest {
                announcement: Some(signed()?),
            })
            .await
            .map(drop);
        refusals.push(("RotateKey", rotation));
        for (what, result) in refusals {
            let status = result.err().ok_or_else(|| format!("{role} made {what}"))?;
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{role} {what}: {status:?}"
            );
        }
    }
    // Nothing reached a channel or an inbox: tax's next entry is its first.
    assert!(
        t.unit("finance")
            .await?
            .pull(0, 10)
            .await?
            .entries
            .is_empty()
    );
    let first = tax.push(note("the first").to_units(["finance"])).await?;
    assert_eq!(first.seq, 0);
    // The refused rotations are on record, naming the role.
    let trail = t.operator(Role::Audit).await?.admin_audit(0, 100).await?;
    let rotations: Vec<&pb::AdminAuditRecord> =
        trail.iter().filter(|r| r.action == "rotate-key").collect();
    assert_eq!(rotations.len(), 3, "{trail:?}");
    assert!(
        rotations
            .iter()
            .all(|r| r.code == Code::PermissionDenied as i32
                && r.outcome.contains("no operator role may make"))
    );
    t.stop().await
}

/// Runs the hub's command line; returns (success, stdout, stderr).
fn hub_cli(args: &[&str]) -> Result<(bool, String, String), BoxError> {
    let out = std::process::Command::new(HUB).args(args).output()?;
    Ok((
        out.status.success(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_validity_dated_into_the_past_needs_a_flag_and_a_reason_both_recorded() -> TestResult {
    let t = TestHub::start().await?;
    let security = t.operator(Role::Security).await?;
    let mut admin = security.admin();
    let hour_ago = tongbao_proto::now_micros() - 3_600_000_000;
    let key = SigningKey::generate()?;
    let request = |backdate: bool, reason: &str| pb::RegisterKeyRequest {
        unit: "tax".into(),
        public_key: encode_public_key(key.public_key()),
        valid_from_micros: hour_ago,
        valid_until_micros: 0,
        backdate,
        backdate_reason: reason.into(),
    };
    for (backdate, reason, words) in [
        (false, "", "needs backdate set and a backdate_reason"),
        (
            false,
            "lost the key",
            "needs backdate set and a backdate_reason",
        ),
        (true, "", "backdate_reason is empty"),
        (true, &"x".repeat(513), "at most 512"),
    ] {
        let status = admin
            .register_key(request(backdate, reason))
            .await
            .err()
            .ok_or("a back-dated key was registered")?;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(words), "{}", status.message());
        assert!(status.message().len() < 1024);
    }
    let keys = registered_keys(&security, "tax").await?;
    assert!(key_with_id(&keys, key.key_id()).is_err(), "{keys:?}");
    // A flag on a key that starts now is refused too: it would record a
    // back-dating that did not happen.
    let status = admin
        .register_key(pb::RegisterKeyRequest {
            valid_from_micros: 0,
            ..request(true, "nothing")
        })
        .await
        .err()
        .ok_or("a flag without a past start was accepted")?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let registered = admin
        .register_key(request(true, "recovery after the laptop theft, ticket 7"))
        .await?
        .into_inner();
    assert_eq!(registered.valid_from_micros, hour_ago);
    let keys = registered_keys(&security, "tax").await?;
    assert_eq!(
        key_with_id(&keys, key.key_id())?.valid_from_micros,
        hour_ago
    );

    // Retiring a key as of the past (its signatures since stop verifying)
    // is dating its validity into the past too.
    let first_key = keys.first().ok_or("tax has no key")?.key_id.clone();
    let half_hour_ago = tongbao_proto::now_micros() - 1_800_000_000;
    let retire = |backdate: bool, reason: &str| pb::RetireKeyRequest {
        unit: "tax".into(),
        key_id: first_key.clone(),
        at_micros: half_hour_ago,
        backdate,
        backdate_reason: reason.into(),
    };
    let status = admin
        .retire_key(retire(false, ""))
        .await
        .err()
        .ok_or("a key was retired into the past without a reason")?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("at "), "{}", status.message());
    let keys = registered_keys(&security, "tax").await?;
    assert_eq!(key_with_id(&keys, &first_key)?.valid_until_micros, 0);
    let retired = admin
        .retire_key(retire(true, "compromised since the 08:00 incident"))
        .await?
        .into_inner();
    assert_eq!(retired.valid_until_micros, half_hour_ago);

    // The command line: --valid-from in the past needs --backdate-reason.
    let dir = t.pki.path().to_str().ok_or("path")?.to_string();
    let hub = format!("https://{}", t.addr);
    let other = SigningKey::generate()?;
    let public = encode_public_key(other.public_key());
    let from = tongbao_proto::format_micros(hour_ago);
    let base = [
        "admin",
        "--dir",
        &dir,
        "--hub",
        &hub,
        "register-key",
        "--unit",
        "finance",
        "--public-key",
        &public,
        "--valid-from",
        &from,
    ];
    let (ok, _, err) = hub_cli(&base)?;
    assert!(
        !ok && err.contains("InvalidArgument") && err.contains("--backdate-reason"),
        "{err}"
    );
    // Without --operator it signs in as the security administrator; the
    // system administrator is refused.
    let mut as_system = base.to_vec();
    as_system.splice(5..5, ["--operator", "system-admin"]);
    as_system.push("--backdate-reason");
    as_system.push("drill");
    let (ok, _, err) = hub_cli(&as_system)?;
    assert!(
        !ok && err.contains("PermissionDenied") && err.contains("needs the security role"),
        "{err}"
    );
    let mut flagged = base.to_vec();
    flagged.extend(["--backdate-reason", "restored from the escrow copy"]);
    let (ok, out, err) = hub_cli(&flagged)?;
    assert!(ok, "{err}");
    assert!(
        out.contains("Registered signing key") && out.contains(&from),
        "{out}"
    );
    // And --at in the past for retire-key: finance's first key, now that
    // the key just registered follows it.
    let finance_key = registered_keys(&security, "finance")
        .await?
        .first()
        .ok_or("finance has no key")?
        .key_id
        .clone();
    let at = tongbao_proto::format_micros(hour_ago + 1_000_000);
    let retire = [
        "admin",
        "--dir",
        &dir,
        "--hub",
        &hub,
        "retire-key",
        "--unit",
        "finance",
        "--key-id",
        &finance_key,
        "--at",
        &at,
    ];
    let (ok, _, err) = hub_cli(&retire)?;
    assert!(!ok && err.contains("--backdate-reason"), "{err}");
    let mut flagged = retire.to_vec();
    flagged.extend(["--backdate-reason", "escrow copy replaces it"]);
    let (ok, out, err) = hub_cli(&flagged)?;
    assert!(
        ok && out.contains(&format!("Retired signing key {finance_key}")),
        "{out}{err}"
    );

    // Every attempt is on record; the registrations with their flag and reason.
    let trail = t.operator(Role::Audit).await?.admin_audit(0, 100).await?;
    let keys: Vec<&pb::AdminAuditRecord> = trail
        .iter()
        .filter(|r| r.action == "register-key")
        .collect();
    assert_eq!(keys.len(), 9, "{trail:?}");
    let done: Vec<&&pb::AdminAuditRecord> = keys.iter().filter(|r| r.code == 0).collect();
    assert_eq!(done.len(), 2, "{done:?}");
    for (record, reason) in done.iter().zip([
        "recovery after the laptop theft, ticket 7",
        "restored from the escrow copy",
    ]) {
        assert!(
            record.detail.contains("backdate true") && record.detail.contains(reason),
            "{record:?}"
        );
        assert!(
            record.outcome.contains("back-dated") && record.outcome.contains(reason),
            "{record:?}"
        );
        assert_eq!(record.actor, "urn:tongbao:operator:security-admin");
    }
    assert!(keys.iter().any(|r| r.code == Code::PermissionDenied as i32
        && r.actor == "urn:tongbao:operator:system-admin"));
    let retirements: Vec<(i32, &str)> = trail
        .iter()
        .filter(|r| r.action == "retire-key")
        .map(|r| (r.code, r.outcome.as_str()))
        .collect();
    assert_eq!(retirements.len(), 4, "{retirements:?}");
    assert_eq!(retirements[2].0, Code::InvalidArgument as i32);
    assert!(
        retirements[3].1.contains("escrow copy replaces it"),
        "{retirements:?}"
    );
    assert_eq!(retirements[0].0, Code::InvalidArgument as i32);
    assert_eq!(retirements[1].0, 0);
    assert!(
        retirements[1].1.contains("back-dated")
            && retirements[1]
                .1
                .contains("compromised since the 08:00 incident"),
        "{retirements:?}"
    );
    t.stop().await
}
