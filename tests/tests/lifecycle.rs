//! Certificate and key lifecycle with no downtime: rotation under load,
//! revocation closing live connections, signing-key rotation.

use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tongbao_client::bundle::verify_bundle;
use tongbao_client::{Client, ClientError, PushReceipt};
use tongbao_proto::keys::SigningKey;
use tongbao_proto::pb;
use tongbao_server::pki::{self, Party, RevocationReason, RevokeTarget};
use tongbao_tests::{BoxError, TestHub, TestResult, note, served_hub_cert, wait_until};

const UNITS: [&str; 3] = ["tax", "finance", "civil-affairs"];

type Received = Arc<Mutex<Vec<(String, u64)>>>;

/// Pushes to the two other units until told to stop; returns the receipts
/// and every failure.
async fn push_until(
    client: Client,
    me: &'static str,
    stop: Arc<AtomicBool>,
) -> (Vec<PushReceipt>, Vec<String>) {
    let others: Vec<&str> = UNITS.iter().copied().filter(|u| *u != me).collect();
    let mut receipts = Vec::new();
    let mut failures = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        match client
            .push(note(&format!("{me} {i}")).to_units(others.clone()))
            .await
        {
            Ok(r) => receipts.push(r),
            Err(e) => failures.push(e.to_string()),
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (receipts, failures)
}

/// Collects every delivered entry of a subscription.
fn collect(
    client: &Client,
    into: Received,
    errors: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    let stream = client.subscribe(0);
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(e) => {
                    if let Ok(mut v) = into.lock() {
                        v.push((e.channel().to_string(), e.seq()));
                    }
                }
                Err(e) => {
                    if let Ok(mut v) = errors.lock() {
                        v.push(e.to_string());
                    }
                    return;
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_unit_and_hub_certificates_under_load_loses_nothing() -> TestResult {
    let t = TestHub::start().await?;
    let dir = t.pki.path().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = BTreeMap::new();
    let mut received: BTreeMap<&str, Received> = BTreeMap::new();
    let sub_errors = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for u in UNITS {
        let c = t.unit(u).await?;
        let r: Received = Arc::default();
        tasks.push(collect(&c, r.clone(), sub_errors.clone()));
        received.insert(u, r);
        clients.insert(u, c);
    }
    let mut pushers = Vec::new();
    for (u, c) in &clients {
        pushers.push((*u, tokio::spawn(push_until(c.clone(), u, stop.clone()))));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A unit's certificate: renewed, picked up by the client, old one revoked.
    let tax = clients.get("tax").ok_or("no tax client")?.clone();
    let report = pki::renew(&dir, &Party::unit("tax")?, None)?;
    let old = report
        .still_valid
        .first()
        .ok_or("renew reported no earlier certificate")?
        .serial
        .clone();
    wait_until(
        Duration::from_secs(10),
        "tax reloads its certificate",
        || {
            let tax = tax.clone();
            async move { Ok::<_, BoxError>(tax.reloads() >= 1) }
        },
    )
    .await?;
    pki::revoke(
        &dir,
        &RevokeTarget::Serial(old),
        RevocationReason::Superseded,
        7,
    )?;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The hub's own certificate: new handshakes get the new one at once.
    let before = served_hub_cert(&t.pki, "finance", t.addr).await?;
    pki::renew(&dir, &Party::Hub, None)?;
    let new_hub_pem = std::fs::read(dir.join("hub").join("cert.pem"))?;
    let new_hub = rustls_pki_types::pem::PemObject::from_pem_slice(&new_hub_pem)
        .map(|c: rustls_pki_types::CertificateDer<'_>| c.as_ref().to_vec())?;
    assert_ne!(before, new_hub);
    let (pki_ref, addr) = (&t.pki, t.addr);
    wait_until(
        Duration::from_secs(10),
        "the hub presents its new certificate",
        || {
            let new_hub = new_hub.clone();
            async move { Ok(served_hub_cert(pki_ref, "finance", addr).await? == new_hub) }
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;

    stop.store(true, Ordering::SeqCst);
    let mut sent: BTreeMap<&str, Vec<PushReceipt>> = BTreeMap::new();
    for (u, p) in pushers {
        let (receipts, failures) = p.await?;
        assert!(failures.is_empty(), "{u}: failed pushes: {failures:?}");
        assert!(receipts.len() > 10, "{u} pushed only {}", receipts.len());
        let distinct: BTreeSet<u64> = receipts.iter().map(|r| r.seq).collect();
        assert_eq!(
            distinct.len(),
            receipts.len(),
            "{u}: a push was appended twice"
        );
        sent.insert(u, receipts);
    }
    // Every recipient gets every entry meant for it, exactly once.
    for u in UNITS {
        let expected: BTreeSet<(String, u64)> = sent
            .iter()
            .filter(|(s, _)| **s != u)
            .flat_map(|(_, rs)| rs.iter().map(|r| (r.channel.clone(), r.seq)))
            .collect();
        let got = received.get(u).ok_or("no collector")?.clone();
        let want = expected.clone();
        let waited = wait_until(Duration::from_secs(20), "every delivery arrives", || {
            let got = got.clone();
            let want = want.clone();
            async move {
                let have: BTreeSet<(String, u64)> = got
                    .lock()
                    .map_err(|_| "poisoned")?
                    .iter()
                    .cloned()
                    .collect();
                Ok(want.is_subset(&have))
            }
        })
        .await;
        if let Err(e) = waited {
            let have: BTreeSet<(String, u64)> = got
                .lock()
                .map_err(|_| "poisoned")?
                .iter()
                .cloned()
                .collect();
            let missing: Vec<_> = expected.difference(&have).take(5).collect();
            return Err(format!(
                "{u}: {e}; {} missing, e.g. {missing:?}; have {}; subscription errors: {:?}",
                expected.difference(&have).count(),
                have.len(),
                sub_errors.lock().map_err(|_| "poisoned")?
            )
            .into());
        }
        let list = got.lock().map_err(|_| "poisoned")?.clone();
        let distinct: BTreeSet<(String, u64)> = list.iter().cloned().collect();
        assert_eq!(distinct.len(), list.len(), "{u} received an entry twice");
        assert_eq!(distinct, expected, "{u} received something unexpected");
    }
    assert!(
        sub_errors.lock().map_err(|_| "poisoned")?.is_empty(),
        "a subscription failed: {:?}",
        sub_errors.lock().map_err(|_| "poisoned")?
    );
    for task in tasks {
        task.abort();
    }
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_unit_is_cut_off_within_two_seconds_and_others_are_not() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let finance = t.unit("finance").await?;
    let civil = t.unit("civil-affairs").await?;
    let mut tax_stream = Box::pin(tax.subscribe(0));
    let mut finance_stream = Box::pin(finance.subscribe(0));
    // Both subscriptions are live.
    civil
        .push(note("before").to_units(["tax", "finance"]))
        .await?;
    let first = tokio::time::timeout(Duration::from_secs(10), tax_stream.next()).await?;
    assert!(matches!(first, Some(Ok(_))), "{first:?}");
    let first = tokio::time::timeout(Duration::from_secs(10), finance_stream.next()).await?;
    assert!(matches!(first, Some(Ok(_))), "{first:?}");

    pki::revoke(
        t.pki.path(),
        &RevokeTarget::Party(Party::unit("tax")?),
        RevocationReason::KeyCompromise,
        7,
    )?;
    let revoked_at = std::time::Instant::now();
    // The open subscription ends with a clear error within 2 s.
    let ended = tokio::time::timeout(Duration::from_secs(2), tax_stream.next())
        .await
        .map_err(|_| "the revoked unit's subscription was still open after 2 s")?;
    match ended {
        Some(Err(e @ ClientError::CertificateRefused { .. })) => {
            assert!(e.to_string().contains("certificate revoked"), "{e}");
        }
        other => return Err(format!("expected certificate revoked, got {other:?}").into()),
    }
    // New connections fail the same way, still within the bound.
    match Client::connect(&t.pki.unit_config("tax", t.addr)?).await {
        Err(e) => assert!(e.to_string().contains("certificate revoked"), "{e}"),
        Ok(_) => return Err("a revoked certificate connected".into()),
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(2));
    // The hub holds no connection of tax any more.
    let hub = t.hub.as_ref().ok_or("no hub")?;
    assert!(
        !hub.open_connections()
            .iter()
            .any(|p| p == "urn:tongbao:unit:tax")
    );

    // Others are unaffected: their open subscription keeps delivering.
    let r = civil.push(note("after").to_units(["finance"])).await?;
    let next = tokio::time::timeout(Duration::from_secs(10), finance_stream.next())
        .await?
        .ok_or("finance's subscription ended")??;
    assert_eq!((next.channel(), next.seq()), (r.channel.as_str(), r.seq));
    finance
        .push(note("reply").to_units(["civil-affairs"]))
        .await?;
    t.stop().await
}

/// The status code and message of a refused call.
fn refusal<T: std::fmt::Debug>(
    r: Result<T, ClientError>,
) -> Result<(tonic::Code, String), BoxError> {
    match r {
        Err(ClientError::Rejected { code, message }) => Ok((code, message)),
        other => Err(format!("expected a refusal, got {other:?}").into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_old_messages_verifiable_and_refuses_the_retired_key() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let finance = t.unit("finance").await?;
    let old_key = SigningKey::from_pem(&std::fs::read_to_string(t.pki.signing_key_path("tax"))?)?;
    let before = tax
        .push(note("signed with the old key").to_units(["finance"]))
        .await?;

    // Bad announcements change nothing.
    let registry_before = tax.list_units().await?;
    let mut bad = tax.sign(
        tongbao_client::Draft::new(pb::Kind::KeyRotation, "rotation", b"not a key".to_vec())
            .to_units(["finance"]),
    )?;
    let (code, message) = refusal(
        tax.directory()
            .rotate_key(pb::RotateKeyRequest {
                announcement: Some(bad.clone()),
            })
            .await
            .map_err(ClientError::from),
    )?;
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(message.contains("key-rotation body"), "{message}");
    bad.message = None;
    let (code, _) = refusal(
        tax.directory()
            .rotate_key(pb::RotateKeyRequest {
                announcement: Some(bad),
            })
            .await
            .map_err(ClientError::from),
    )?;
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert_eq!(tax.list_units().await?, registry_before);

    // The unit announces its new key itself.
    let new_key = SigningKey::generate()?;
    let new_id = new_key.key_id().to_string();
    let rotated = tax.rotate_signing_key(new_key).await?;
    assert_eq!(rotated.new_key_id, new_id);
    assert_eq!(rotated.retired_key_id, old_key.key_id());
    // The key file now holds the new key; the client signs with it.
    let on_disk = SigningKey::from_pem(&std::fs::read_to_string(t.pki.signing_key_path("tax"))?)?;
    assert_eq!(on_disk.key_id(), new_id);
    let after = tax
        .push(note("signed with the new key").to_units(["finance"]))
        .await?;

    // Both verify for the recipient, old before the rotation entry, new after.
    let page = finance.pull(0, 10).await?;
    let seqs: Vec<u64> = page.entries.iter().map(|e| e.seq()).collect();
    assert!(
        seqs.contains(&before.seq) && seqs.contains(&after.seq),
        "{seqs:?}"
    );
    // ... and in an offline bundle, checked against the hub-signed registry.
    let bundle = finance
        .export_bundle(&[("tax".into(), before.seq), ("tax".into(), after.seq)])
        .await?;
    let report = verify_bundle(
        &serde_json::to_vec(&bundle)?,
        &finance.pinned_hub_key().await?,
    )?;
    assert!(
        report.join("\n").contains("signed with the old key"),
        "{report:?}"
    );

    // The retired key is refused for new messages, even backdated ones.
    for created in [
        tongbao_proto::now_micros(),
        rotated.effective_micros - 1_000_000,
    ] {
        let mut content = tax
            .sign(note("stolen key").to_units(["finance"]))?
            .message
            .ok_or("no message")?;
        content.created_micros = created;
        content.message_id = format!("stolen-{created}");
        let (code, message) = refusal(tax.push_signed(old_key.sign_message(content)).await)?;
        assert_eq!(code, tonic::Code::Unauthenticated, "{message}");
        assert!(
            message.contains(old_key.key_id()) && message.contains("retired at"),
            "{message}"
        );
    }
    // Announcing the same key again is refused.
    let again = tax
        .rotate_signing_key(SigningKey::from_pem(&on_disk.to_pem())?)
        .await;
    let (code, message) = refusal(again)?;
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");

    // The registry keeps both keys with their intervals.
    let units = tax.list_units().await?;
    let keys = &units
        .units
        .iter()
        .find(|u| u.id == "tax")
        .ok_or("no tax")?
        .keys;
    let old = keys
        .iter()
        .find(|k| k.key_id == old_key.key_id())
        .ok_or("old key gone")?;
    let new = keys
        .iter()
        .find(|k| k.key_id == new_id)
        .ok_or("new key missing")?;
    assert_eq!(old.valid_until_micros, rotated.effective_micros);
    assert_eq!(new.valid_from_micros, rotated.effective_micros);
    assert_eq!(new.valid_until_micros, 0);
    t.stop().await
}
