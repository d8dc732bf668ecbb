//! The `Admin` service: operators only, specific refusals that change
//! nothing, durable registry changes, and an audit trail of every action.

use tongbao_client::{Client, ClientError};
use tongbao_proto::keys::{SigningKey, encode_public_key};
use tongbao_proto::pb;
use tongbao_server::Hub;
use tongbao_tests::{BoxError, Role, TestHub, TestResult, note, registered_keys};

/// The status code and message of a refused admin call.
fn refused<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
) -> Result<(tonic::Code, String), BoxError> {
    match r {
        Err(s) => Ok((s.code(), s.message().to_string())),
        Ok(v) => Err(format!("expected a refusal, got {v:?}").into()),
    }
}

async fn operator(t: &TestHub, role: Role) -> Result<Client, BoxError> {
    Ok(t.operator(role).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_operators_calling_admin_are_refused_and_recorded() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let office = Client::connect(&t.pki.office_config("fund-supervision", t.addr)?).await?;
    for caller in [&tax, &office] {
        let (code, message) = refused(
            caller
                .admin()
                .suspend_unit(pb::SuspendUnitRequest {
                    unit: "finance".into(),
                    reason: "test".into(),
                })
                .await,
        )?;
        assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
        assert!(message.contains("operators only"), "{message}");
        let (code, _) = refused(caller.admin().reload_tls(pb::ReloadTlsRequest {}).await)?;
        assert_eq!(code, tonic::Code::PermissionDenied);
        let (code, _) = refused(
            caller
                .admin()
                .register_key(pb::RegisterKeyRequest {
                    unit: "tax".into(),
                    public_key: encode_public_key(SigningKey::generate()?.public_key()),
                    ..Default::default()
                })
                .await,
        )?;
        assert_eq!(code, tonic::Code::PermissionDenied);
    }
    // Nothing changed: finance still pushes.
    t.unit("finance")
        .await?
        .push(note("still here").to_units(["tax"]))
        .await?;
    // Units cannot read the trail (a recorded refusal); offices and audit
    // operators can, refusals included.
    let (code, _) = refused(
        tax.admin()
            .list_audit(pb::ListAuditRequest::default())
            .await,
    )?;
    assert_eq!(code, tonic::Code::PermissionDenied);
    let records = office.admin_audit(0, 100).await?;
    assert_eq!(records.len(), 7, "{records:?}");
    assert_eq!(records[6].action, "list-audit");
    assert!(
        records
            .iter()
            .all(|r| r.code == tonic::Code::PermissionDenied as i32)
    );
    assert_eq!(records[0].actor, "urn:tongbao:unit:tax");
    assert_eq!(records[0].action, "suspend-unit");
    assert_eq!(records[3].actor, "urn:tongbao:office:fund-supervision");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_take_effect_survive_a_restart_and_are_audited() -> TestResult {
    let mut t = TestHub::start().await?;
    // Keys and suspension are the security role's; membership and TLS the
    // system role's.
    let ops = operator(&t, Role::Security).await?;
    let system = operator(&t, Role::System).await?;
    let tax = t.unit("tax").await?;
    let mut admin = ops.admin();
    let mut system_admin = system.admin();

    // Suspend: the unit is refused; suspending twice is refused and changes nothing.
    admin
        .suspend_unit(pb::SuspendUnitRequest {
            unit: "tax".into(),
            reason: "audit".into(),
        })
        .await?;
    match tax
        .push(note("while suspended").to_units(["finance"]))
        .await
    {
        Err(e) => assert!(e.to_string().contains("suspended"), "{e}"),
        Ok(r) => return Err(format!("a suspended unit pushed: {r:?}").into()),
    }
    let (code, message) = refused(
        admin
            .suspend_unit(pb::SuspendUnitRequest {
                unit: "tax".into(),
                reason: "again".into(),
            })
            .await,
    )?;
    assert_eq!(code, tonic::Code::FailedPrecondition, "{message}");
    let (code, _) = refused(
        admin
            .suspend_unit(pb::SuspendUnitRequest {
                unit: "nobody".into(),
                reason: String::new(),
            })
            .await,
    )?;
    assert_eq!(code, tonic::Code::NotFound);
    admin
        .reinstate_unit(pb::ReinstateUnitRequest {
            unit: "tax".into(),
            reason: "done".into(),
        })
        .await?;
    let tax = t.unit("tax").await?;
    tax.push(note("reinstated").to_units(["finance"])).await?;

    // Keys: bad input is refused specifically and leaves the registry as it was.
    let before = ops.list_units().await?;
    for (req, want) in [
        (
            pb::RegisterKeyRequest {
                unit: "tax".into(),
                public_key: "not base64!".into(),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
        ),
        (
            pb::RegisterKeyRequest {
                unit: "nobody".into(),
                public_key: encode_public_key(SigningKey::generate()?.public_key()),
                ..Default::default()
            },
            tonic::Code::NotFound,
        ),
        (
            pb::RegisterKeyRequest {
                unit: "tax".into(),
                public_key: encode_public_key(SigningKey::generate()?.public_key()),
                valid_from_micros: 2_000,
                valid_until_micros: 1_000,
                backdate: true,
                backdate_reason: "an empty interval".into(),
            },
            tonic::Code::InvalidArgument,
        ),
    ] {
        let (code, message) = refused(admin.register_key(req).await)?;
        assert_eq!(code, want, "{message}");
    }
    let tax_key = before
        .units
        .iter()
        .find(|u| u.id == "tax")
        .and_then(|u| u.keys.first())
        .ok_or("no tax key")?
        .key_id
        .clone();
    let (code, message) = refused(
        admin
            .retire_key(pb::RetireKeyRequest {
                unit: "tax".into(),
                key_id: tax_key.clone(),
                at_micros: 0,
                ..Default::default()
            })
            .await,
    )?;
    assert_eq!(code, tonic::Code::FailedPrecondition, "{message}");
    assert!(message.contains("register its new key first"), "{message}");
    assert_eq!(ops.list_units().await?, before);

    // An operator registers a new key and retires the old one.
    let new_key = SigningKey::generate()?;
    let registered = admin
        .register_key(pb::RegisterKeyRequest {
            unit: "tax".into(),
            public_key: encode_public_key(new_key.public_key()),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(registered.key_id, new_key.key_id());
    admin
        .retire_key(pb::RetireKeyRequest {
            unit: "tax".into(),
            key_id: tax_key.clone(),
            at_micros: 0,
            ..Default::default()
        })
        .await?;
    match tax.push(note("old key").to_units(["finance"])).await {
        Err(e) => assert!(e.to_string().contains("retired at"), "{e}"),
        Ok(r) => return Err(format!("a retired key was accepted: {r:?}").into()),
    }

    // Membership from a time on: history answers, audience uses it.
    let added = system_admin
        .add_member(pb::AddMemberRequest {
            mechanism: "fund-supervision".into(),
            unit: "education".into(),
            effective_micros: 0,
        })
        .await?
        .into_inner();
    let then = added.effective_micros - 1;
    assert!(
        !system
            .members_at("fund-supervision", then)
            .await?
            .contains(&"education".to_string())
    );
    assert!(
        system
            .members_at("fund-supervision", 0)
            .await?
            .contains(&"education".to_string())
    );
    let (code, _) = refused(
        system_admin
            .add_member(pb::AddMemberRequest {
                mechanism: "fund-supervision".into(),
                unit: "education".into(),
                effective_micros: 0,
            })
            .await,
    )?;
    assert_eq!(code, tonic::Code::AlreadyExists);
    let (code, _) = refused(
        system_admin
            .add_member(pb::AddMemberRequest {
                mechanism: "no-such".into(),
                unit: "education".into(),
                effective_micros: 0,
            })
            .await,
    )?;
    assert_eq!(code, tonic::Code::NotFound);
    let finance = t.unit("finance").await?;
    let sent = finance
        .push(note("to the mechanism").to_mechanism("fund-supervision"))
        .await?;
    assert!(
        sent.recipients.contains(&"education".to_string()),
        "{sent:?}"
    );

    // Expiring certificates come from the CA index (the test PKI lasts 30 days).
    let expiring = admin
        .list_expiring(pb::ListExpiringRequest { days: 40 })
        .await?
        .into_inner();
    assert!(
        expiring
            .certificates
            .iter()
            .any(|c| c.party == "urn:tongbao:unit:tax"),
        "{expiring:?}"
    );
    // A window beyond the calendar lists everything current (it panicked
    // the handler in the date arithmetic).
    let all = admin
        .list_expiring(pb::ListExpiringRequest { days: u32::MAX })
        .await?
        .into_inner();
    assert!(
        all.certificates.len() >= expiring.certificates.len(),
        "{all:?}"
    );

    // A reload with a broken CRL is refused; the old material stays in use.
    let crl = t.pki.path().join("crl.pem");
    let good = std::fs::read(&crl)?;
    std::fs::write(
        &crl,
        b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )?;
    let (code, message) = refused(system_admin.reload_tls(pb::ReloadTlsRequest {}).await)?;
    assert_eq!(code, tonic::Code::FailedPrecondition, "{message}");
    assert!(
        message.contains("previous material stays in use"),
        "{message}"
    );
    t.unit("civil-affairs").await?;
    std::fs::write(&crl, good)?;
    let reloaded = system_admin
        .reload_tls(pb::ReloadTlsRequest {})
        .await?
        .into_inner();
    assert!(reloaded.summary.contains("crl.pem"), "{reloaded:?}");

    // Everything survives a restart: registry changes and the trail.
    drop((admin, system_admin));
    drop((ops, system));
    let config = t.pki.hub_config()?;
    if let Some(hub) = t.hub.take() {
        hub.shutdown().await?;
    }
    let hub = Hub::start(&config).await?;
    t.addr = hub.addr();
    t.hub = Some(hub);
    let ops = operator(&t, Role::System).await?;
    let tax_keys = registered_keys(&ops, "tax").await?;
    assert!(tax_keys.iter().any(|k| k.key_id == new_key.key_id()));
    assert!(
        tax_keys
            .iter()
            .any(|k| k.key_id == tax_key && k.valid_until_micros != 0)
    );
    assert!(
        ops.members_at("fund-supervision", 0)
            .await?
            .contains(&"education".to_string())
    );
    let trail = operator(&t, Role::Audit).await?.admin_audit(0, 100).await?;
    let actions: Vec<(&str, i32)> = trail.iter().map(|r| (r.action.as_str(), r.code)).collect();
    let ok = 0;
    let failed_precondition = tonic::Code::FailedPrecondition as i32;
    for want in [
        ("suspend-unit", ok),
        ("suspend-unit", failed_precondition),
        ("reinstate-unit", ok),
        ("register-key", tonic::Code::InvalidArgument as i32),
        ("retire-key", failed_precondition),
        ("register-key", ok),
        ("retire-key", ok),
        ("add-member", ok),
        ("add-member", tonic::Code::AlreadyExists as i32),
        ("reload-tls", failed_precondition),
        ("reload-tls", ok),
    ] {
        assert!(actions.contains(&want), "{want:?} not in {actions:?}");
    }
    for r in &trail {
        let by = if ["add-member", "reload-tls"].contains(&r.action.as_str()) {
            "urn:tongbao:operator:system-admin"
        } else {
            "urn:tongbao:operator:security-admin"
        };
        assert_eq!(r.actor, by, "{r:?}");
    }
    for pair in trail.windows(2) {
        assert_eq!(pair[1].previous_hash, pair[0].hash);
    }
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anyone_may_ask_who_was_a_member_but_not_of_an_unknown_mechanism() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let members = tax.members_at("fund-supervision", 1).await?;
    assert!(members.contains(&"tax".to_string()) && !members.contains(&"education".to_string()));
    match tax.members_at("nothing", 0).await {
        Err(ClientError::Rejected { code, message }) => {
            assert_eq!(code, tonic::Code::NotFound);
            assert!(message.contains("fund-supervision"), "{message}");
        }
        other => return Err(format!("expected NotFound, got {other:?}").into()),
    }
    t.stop().await
}

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");

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
async fn operator_commands_say_what_they_did_and_what_comes_next() -> TestResult {
    let t = TestHub::start().await?;
    let dir = t.pki.path().to_str().ok_or("path")?.to_string();
    let hub = format!("https://{}", t.addr);
    // The unit makes its new key and hands over the public key only.
    let public = tongbao_proto::keys::encode_public_key(
        tongbao_proto::keys::SigningKey::generate()?.public_key(),
    );

    let admin = |cmd: &[&str]| {
        let mut args = vec!["admin", "--dir", &dir, "--hub", &hub];
        args.extend_from_slice(cmd);
        hub_cli(&args)
    };
    let (ok, out, err) = admin(&["register-key", "--unit", "tax", "--public-key", &public])?;
    assert!(ok, "{err}");
    assert!(
        out.contains("Registered signing key") && out.contains("retire-key"),
        "{out}"
    );
    let (ok, _, err) = admin(&["register-key", "--unit", "tax", "--public-key", &public])?;
    assert!(!ok && err.contains("AlreadyExists"), "{err}");
    let (ok, out, err) = admin(&["suspend", "--unit", "finance", "--reason", "drill"])?;
    assert!(ok && out.contains("reinstate"), "{out}{err}");
    let (ok, out, err) = admin(&["reinstate", "--unit", "finance"])?;
    assert!(ok && out.contains("Reinstated unit finance"), "{out}{err}");
    let (ok, out, err) = admin(&["reload-tls"])?;
    assert!(
        ok && out.contains("new handshakes use the new material"),
        "{out}{err}"
    );
    let (ok, out, err) = admin(&["expiring", "--days", "40"])?;
    assert!(ok && out.contains("urn:tongbao:unit:tax"), "{out}{err}");
    let (ok, out, err) = admin(&["audit"])?;
    assert!(ok, "{err}");
    for action in [
        "register-key",
        "suspend-unit",
        "reinstate-unit",
        "reload-tls",
    ] {
        assert!(out.contains(action), "{action} missing from {out}");
    }
    assert!(out.contains("[AlreadyExists]"), "{out}");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_cannot_flood_the_trail_and_pages_are_bounded() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let ops = operator(&t, Role::Security).await?;
    let auditor = operator(&t, Role::Audit).await?;
    let big = "x".repeat(1 << 20);
    // A unit's refused calls leave no request field in the trail.
    for _ in 0..5 {
        let (code, _) = refused(
            tax.admin()
                .suspend_unit(pb::SuspendUnitRequest {
                    unit: big.clone(),
                    reason: big.clone(),
                })
                .await,
        )?;
        assert_eq!(code, tonic::Code::PermissionDenied);
    }
    // An operator's are recorded, cut to the trail's bound.
    let (code, _) = refused(
        ops.admin()
            .suspend_unit(pb::SuspendUnitRequest {
                unit: big.clone(),
                reason: big.clone(),
            })
            .await,
    )?;
    assert_ne!(code, tonic::Code::Ok);
    let records = auditor.admin_audit(0, 100).await?;
    assert_eq!(records.len(), 6, "{records:?}");
    assert!(
        records[..5].iter().all(|r| r.detail.is_empty()),
        "{records:?}"
    );
    assert!(records[5].detail.len() <= 1024 && records[5].detail.ends_with('…'));
    assert!(records.iter().all(|r| r.outcome.len() <= 1024));
    // The trail is in the store, not in a file of the data directory.
    assert!(!t.pki.path().join("data").join("admin-audit.jsonl").exists());

    // Pages follow one another by seq; `more` says whether to ask again.
    let mut admin = auditor.admin();
    let first = admin
        .list_audit(pb::ListAuditRequest { after: 0, limit: 4 })
        .await?
        .into_inner();
    assert_eq!(first.records.len(), 4);
    assert!(first.more);
    let rest = admin
        .list_audit(pb::ListAuditRequest { after: 4, limit: 4 })
        .await?
        .into_inner();
    assert_eq!(
        rest.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![5, 6]
    );
    assert!(!rest.more);
    t.stop().await
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hub's store, opened offline (the hub stopped): sled in the data
/// directory, or the test database.
fn open_store(
    pki: &tongbao_tests::TestPki,
) -> Result<std::sync::Arc<dyn tongbao_server::store::Store>, BoxError> {
    use tongbao_server::store::{PgOptions, PgStore, SledStore};
    Ok(match &pki.pg {
        Some(db) => std::sync::Arc::new(PgStore::open(&PgOptions {
            database: tongbao_server::store::pg_store::Database::new(
                &db.url(),
                &tongbao_server::store::pg_store::TlsOptions::default(),
            )?,
            pool_size: 2,
            replica: false,
        })?),
        None => std::sync::Arc::new(SledStore::open(&pki.path().join("data"), true)?),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_hubs_trail_file_is_moved_in_and_an_edited_record_refuses_the_start()
-> TestResult {
    use tongbao_server::admin_audit::{ADMIN_AUDIT_FILE, AdminAudit, SPACE, write_jsonl};
    use tongbao_server::store::{SledStore, StateBatch};
    // An earlier hub's file, as it wrote it, in the data directory.
    let pki = tongbao_tests::TestPki::generate()?;
    let data = pki.path().join("data");
    std::fs::create_dir_all(&data)?;
    let scratch = tempfile::tempdir()?;
    let old_store: std::sync::Arc<dyn tongbao_server::store::Store> =
        std::sync::Arc::new(SledStore::open(&scratch.path().join("db"), true)?);
    let old = AdminAudit::open(old_store.clone(), scratch.path())?;
    old.record(
        "urn:tongbao:operator:ops",
        "suspend-unit",
        "unit tax",
        0,
        "done",
    )?;
    old.record(
        "urn:tongbao:operator:ops",
        "reinstate-unit",
        "unit tax",
        0,
        "done",
    )?;
    let old_records = old.list(0, 10, 1 << 20)?.records;
    write_jsonl(
        old_store.as_ref(),
        scratch.path(),
        &data.join(ADMIN_AUDIT_FILE),
    )?;
    drop((old, old_store));

    // The first start moves it in; the trail goes on from it.
    let config = pki.hub_config()?;
    let hub = Hub::start(&config).await?;
    let addr = hub.addr();
    let security = Client::connect(&pki.role_config(Role::Security, addr)).await?;
    security
        .admin()
        .suspend_unit(pb::SuspendUnitRequest {
            unit: "finance".into(),
            reason: "moved".into(),
        })
        .await?;
    let listed = Client::connect(&pki.role_config(Role::Audit, addr))
        .await?
        .admin_audit(0, 100)
        .await?;
    let seqs: Vec<(u64, String)> = listed.iter().map(|r| (r.seq, to_hex(&r.hash))).collect();
    assert_eq!(seqs.len(), 3, "{listed:?}");
    for (got, want) in seqs.iter().zip(&old_records) {
        assert_eq!(got, &(want.seq, want.hash.clone()));
    }
    assert_eq!(to_hex(&listed[2].previous_hash), old_records[1].hash);
    assert!(!data.join(ADMIN_AUDIT_FILE).exists());
    assert!(data.join("admin-audit.jsonl.moved").exists());
    hub.shutdown().await?;

    // The record of the suspension, edited in the store: no start.
    let store = open_store(&pki)?;
    let key = [b'r', 0, 0, 0, 0, 0, 0, 0, 3];
    let stored = store
        .state_get(SPACE, &key)?
        .ok_or("record 3 is not stored")?;
    let edited = String::from_utf8(stored)?.replace("finance", "fnance");
    let mut batch = StateBatch::default();
    batch.insert(key, edited.as_bytes());
    store.state_apply(SPACE, &batch)?;
    store.state_sync()?;
    drop(store);
    match Hub::start(&config).await {
        Err(e) => {
            let said = e.to_string();
            assert!(
                said.contains("refusing to start")
                    && said.contains("admin audit trail in the store is broken at record 3"),
                "{said}"
            );
        }
        Ok(hub) => {
            hub.shutdown().await?;
            return Err("a hub started on an edited trail".into());
        }
    }
    Ok(())
}
