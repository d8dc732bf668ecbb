//! Certificate and key lifecycle with no downtime: rotation under load,
//! revocation closing live connections, signing-key rotation.

use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tongbao_client::bundle::verify_bundle;
use tongbao_client::{Client, ClientError, Draft, KeyRefusal, PushReceipt, VerifiedEntry};
use tongbao_proto::identity::Principal;
use tongbao_proto::keys::SigningKey;
use tongbao_proto::{pb, rotation};
use tongbao_server::pki::{self, Party, RevocationReason, RevokeTarget};
use tongbao_tests::{
    BoxError, HubProcess, Role, TestHub, TestPki, TestResult, key_with_id, note, registered_keys,
    served_hub_cert, wait_until,
};

const UNITS: [&str; 3] = ["tax", "finance", "civil-affairs"];

/// A bound that only catches a hang: tests wait for events, never time
/// them (the bench measures how fast things happen).
const HANG: Duration = Duration::from_secs(60);

type Received = Arc<Mutex<Vec<(String, u64)>>>;

/// Pushes to the two other units until told to stop, counting the
/// answered pushes in `answered`; returns the receipts and every failure.
async fn push_until(
    client: Client,
    me: &'static str,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
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
            Ok(r) => {
                receipts.push(r);
                answered.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => failures.push(e.to_string()),
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (receipts, failures)
}

/// Waits until every pusher has had `n` more pushes answered: the load
/// went on through the step just taken.
async fn pushes_go_on(answered: &[Arc<AtomicUsize>], n: usize) -> TestResult {
    let targets: Vec<usize> = answered
        .iter()
        .map(|a| a.load(Ordering::SeqCst) + n)
        .collect();
    wait_until(HANG, "every unit's pushes go on", || {
        let done = answered
            .iter()
            .zip(&targets)
            .all(|(a, target)| a.load(Ordering::SeqCst) >= *target);
        async move { Ok::<_, BoxError>(done) }
    })
    .await
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
    let mut answered = Vec::new();
    for (u, c) in &clients {
        let count = Arc::new(AtomicUsize::new(0));
        answered.push(count.clone());
        let pusher = push_until(c.clone(), u, stop.clone(), count);
        pushers.push((*u, tokio::spawn(pusher)));
    }
    pushes_go_on(&answered, 5).await?;

    // A unit's certificate: renewed, picked up by the client, old one revoked.
    let tax = clients.get("tax").ok_or("no tax client")?.clone();
    let report = pki::renew(&dir, &Party::unit("tax")?, None)?;
    let old = report
        .still_valid
        .first()
        .ok_or("renew reported no earlier certificate")?
        .serial
        .clone();
    wait_until(HANG, "tax reloads its certificate", || {
        let tax = tax.clone();
        async move { Ok::<_, BoxError>(tax.reloads() >= 1) }
    })
    .await?;
    pki::revoke(
        &dir,
        &RevokeTarget::Serial(old),
        RevocationReason::Superseded,
        7,
    )?;
    // Tax goes on pushing with its new certificate.
    pushes_go_on(&answered, 5).await?;

    // The hub's own certificate: new handshakes get the new one at once.
    let before = served_hub_cert(&t.pki, "finance", t.addr).await?;
    pki::renew(&dir, &Party::Hub, None)?;
    let new_hub_pem = std::fs::read(dir.join("hub").join("cert.pem"))?;
    let new_hub = rustls_pki_types::pem::PemObject::from_pem_slice(&new_hub_pem)
        .map(|c: rustls_pki_types::CertificateDer<'_>| c.as_ref().to_vec())?;
    assert_ne!(before, new_hub);
    let (pki_ref, addr) = (&t.pki, t.addr);
    wait_until(HANG, "the hub presents its new certificate", || {
        let new_hub = new_hub.clone();
        async move { Ok(served_hub_cert(pki_ref, "finance", addr).await? == new_hub) }
    })
    .await?;
    pushes_go_on(&answered, 5).await?;

    stop.store(true, Ordering::SeqCst);
    let mut sent: BTreeMap<&str, Vec<PushReceipt>> = BTreeMap::new();
    for (u, p) in pushers {
        let (receipts, failures) = p.await?;
        assert!(failures.is_empty(), "{u}: failed pushes: {failures:?}");
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
        let waited = wait_until(HANG, "every delivery arrives", || {
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
async fn revoked_unit_is_cut_off_and_others_are_not() -> TestResult {
    let t = TestHub::start().await?;
    let (mut tax_stream, mut finance_stream, finance, civil) = tax_and_finance_live(&t).await?;

    pki::revoke(
        t.pki.path(),
        &RevokeTarget::Party(Party::unit("tax")?),
        RevocationReason::KeyCompromise,
        7,
    )?;
    // The open subscription ends with a clear error, once the hub's file
    // watch has read the new CRL (how soon is not this test's business).
    match next_within(
        &mut tax_stream,
        HANG,
        "the revoked unit's subscription ends",
    )
    .await?
    {
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
    // The hub holds no connection of tax any more.
    let hub = t.hub.as_ref().ok_or("no hub")?;
    assert!(
        !hub.open_connections()?
            .iter()
            .any(|p| p == "urn:tongbao:unit:tax")
    );

    // Others are unaffected: their open subscription keeps delivering.
    let r = civil.push(note("after").to_units(["finance"])).await?;
    let next = next_within(&mut finance_stream, HANG, "delivery")
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
    // A second system of the same unit, with its own copy of the key.
    let spare_key = t.pki.path().join("tax-second-system.key");
    std::fs::copy(t.pki.signing_key_path("tax"), &spare_key)?;
    let mut second = t.pki.unit_config("tax", t.addr)?;
    second.signing_key = Some(spare_key.clone());
    let tax_b = Client::connect(&second).await?;

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
        // The refusal is structured: a program needs no wording to act on it.
        match tax.push_signed(old_key.sign_message(content)).await {
            Err(e @ ClientError::SigningKeyRefused { .. }) => {
                assert_eq!(e.code(), Some(tonic::Code::Unauthenticated));
                let ClientError::SigningKeyRefused {
                    refusal,
                    key_id,
                    boundary_micros,
                    message,
                } = e
                else {
                    return Err("unreachable".into());
                };
                assert_eq!(refusal, KeyRefusal::Retired);
                assert_eq!(key_id, old_key.key_id());
                assert_eq!(boundary_micros, rotated.effective_micros);
                assert!(message.contains("retired at"), "{message}");
            }
            other => return Err(format!("expected a retired-key refusal, got {other:?}").into()),
        }
    }
    // A key signs nothing dated before its interval began, even on a
    // fresh push: the new key cannot vouch for the old key's time.
    let mut early = tax
        .sign(note("before the new key began").to_units(["finance"]))?
        .message
        .ok_or("no message")?;
    early.created_micros = rotated.effective_micros - 1;
    match tax.push_signed(on_disk.sign_message(early)).await {
        Err(ClientError::SigningKeyRefused {
            refusal: KeyRefusal::NotYetValid,
            key_id,
            boundary_micros,
            message,
        }) => {
            assert_eq!(key_id, new_id);
            assert_eq!(boundary_micros, rotated.effective_micros);
            assert!(message.contains("valid only from"), "{message}");
        }
        other => return Err(format!("expected a not-yet-valid refusal, got {other:?}").into()),
    }
    // Pushed together (4 at once, the other 8 in one batch), each is still
    // told why its key was refused, as a push on its own is.
    let early_ones = (0..12)
        .map(|i| -> Result<_, tongbao_tests::BoxError> {
            let mut m = tax
                .sign(note(&format!("early, together {i}")).to_units(["finance"]))?
                .message
                .ok_or("no message")?;
            m.created_micros = rotated.effective_micros - 1;
            Ok(on_disk.sign_message(m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let answers =
        futures::future::join_all(early_ones.into_iter().map(|m| tax.push_signed(m))).await;
    for answer in answers {
        match answer {
            Err(ClientError::SigningKeyRefused {
                refusal: KeyRefusal::NotYetValid,
                ..
            }) => {}
            other => return Err(format!("expected a not-yet-valid refusal, got {other:?}").into()),
        }
    }
    // A second system of tax still holds the old key: its push is refused
    // as retired and not signed again with that same key.
    match tax_b
        .push(note("old key, second system").to_units(["finance"]))
        .await
    {
        Err(ClientError::SigningKeyRefused {
            refusal: KeyRefusal::Retired,
            ..
        }) => {}
        other => return Err(format!("expected a retired-key refusal, got {other:?}").into()),
    }
    // Once its key file holds the new key, its pushes go through (the file
    // watch or the re-sign after the refusal picks the new key up).
    std::fs::copy(t.pki.signing_key_path("tax"), &spare_key)?;
    let again = tax_b
        .push(note("from a second system of tax").to_units(["finance"]))
        .await?;
    let entry = finance.get_entry("tax", again.seq).await?;
    assert_eq!(
        entry
            .entry
            .message
            .as_ref()
            .and_then(|m| m.signature.as_ref())
            .map(|s| s.key_id.as_str()),
        Some(new_id.as_str())
    );
    // Announcing the same key again is refused.
    let again = tax
        .rotate_signing_key(SigningKey::from_pem(&on_disk.to_pem())?)
        .await;
    let (code, message) = refusal(again)?;
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");

    // The registry keeps both keys with their intervals.
    let keys = registered_keys(&tax, "tax").await?;
    let old = key_with_id(&keys, old_key.key_id())?;
    let new = key_with_id(&keys, &new_id)?;
    assert_eq!(old.valid_until_micros, rotated.effective_micros);
    assert_eq!(new.valid_from_micros, rotated.effective_micros);
    assert_eq!(new.valid_until_micros, 0);
    t.stop().await
}

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");

/// The next item of a subscription, within a bound.
/// A live subscription's deliveries.
type Deliveries =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<VerifiedEntry, ClientError>> + Send>>;

/// Tax and Finance following their inboxes, each having received a first
/// entry from Civil Affairs, so both subscriptions are known to be live;
/// with the Finance and Civil Affairs clients.
async fn tax_and_finance_live(
    t: &TestHub,
) -> Result<(Deliveries, Deliveries, Client, Client), BoxError> {
    let tax = t.unit("tax").await?;
    let finance = t.unit("finance").await?;
    let civil = t.unit("civil-affairs").await?;
    let mut tax_stream: Deliveries = Box::pin(tax.subscribe(0));
    let mut finance_stream: Deliveries = Box::pin(finance.subscribe(0));
    civil
        .push(note("before").to_units(["tax", "finance"]))
        .await?;
    for s in [&mut tax_stream, &mut finance_stream] {
        let first = next_within(s, HANG, "first delivery").await?;
        assert!(matches!(first, Some(Ok(_))), "{first:?}");
    }
    Ok((tax_stream, finance_stream, finance, civil))
}

async fn next_within<S>(
    stream: &mut S,
    within: Duration,
    what: &str,
) -> Result<Option<Result<VerifiedEntry, ClientError>>, BoxError>
where
    S: futures::Stream<Item = Result<VerifiedEntry, ClientError>> + Unpin,
{
    tokio::time::timeout(within, stream.next())
        .await
        .map_err(|_| format!("not within {within:?}: {what}").into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_crl_when_the_file_watch_is_off() -> TestResult {
    let pki = TestPki::generate()?;
    // Without the file watch only SIGHUP (or Admin/ReloadTls) can act.
    pki.edit_hub_toml("watch_files = true", "watch_files = false")?;
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    let finance = Client::connect(&pki.unit_config("finance", hub.addr)?).await?;
    let mut tax_stream = Box::pin(tax.subscribe(0));
    finance.push(note("before").to_units(["tax"])).await?;
    let first = next_within(&mut tax_stream, HANG, "first delivery").await?;
    assert!(matches!(first, Some(Ok(_))), "{first:?}");

    pki::revoke(
        pki.path(),
        &RevokeTarget::Party(Party::unit("tax")?),
        RevocationReason::KeyCompromise,
        7,
    )?;
    // The hub's TLS watch, which would have read the new CRL, has run since:
    // it closed a connection whose certificate ended after the revocation
    // was written (it checks the files, if watched, then the connections,
    // each round). Still the hub uses the old CRL: the open subscription
    // delivers and a new handshake is accepted.
    let (_marker, mut marker_stream) =
        short_lived_subscription(&pki, hub.addr, "civil-affairs", &finance).await?;
    expired_end(&mut marker_stream).await?;
    finance.push(note("staged").to_units(["tax"])).await?;
    let staged = next_within(&mut tax_stream, HANG, "delivery").await?;
    assert!(matches!(staged, Some(Ok(_))), "{staged:?}");
    Client::connect(&pki.unit_config("tax", hub.addr)?).await?;

    hub.hangup()?;
    match next_within(&mut tax_stream, HANG, "the subscription ends").await? {
        Some(Err(e @ ClientError::CertificateRefused { .. })) => {
            assert!(e.to_string().contains("certificate revoked"), "{e}")
        }
        other => return Err(format!("expected certificate revoked, got {other:?}").into()),
    }
    match Client::connect(&pki.unit_config("tax", hub.addr)?).await {
        Err(e) => assert!(e.to_string().contains("certificate revoked"), "{e}"),
        Ok(_) => return Err("a revoked certificate connected after SIGHUP".into()),
    }
    // The hub kept running and serving everyone else.
    finance
        .push(note("after").to_units(["civil-affairs"]))
        .await?;
    hub.kill()
}

/// A rustls client with a session cache that would resume if the hub let it.
fn resuming_client(pki: &TestPki, unit: &str) -> Result<Arc<rustls::ClientConfig>, BoxError> {
    let mut config = pki.unit_tls_config(unit)?;
    config.resumption = rustls::client::Resumption::in_memory_sessions(64);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// One connection: handshake, HTTP/2 preface, the hub's first bytes (so
/// any session ticket is read too). Returns how the handshake went, or the
/// hub's refusal.
async fn connect_once(
    config: &Arc<rustls::ClientConfig>,
    hub: std::net::SocketAddr,
) -> Result<Result<rustls::HandshakeKind, String>, BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(hub).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    let mut tls = match tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
    {
        Ok(s) => s,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let kind = tls
        .get_ref()
        .1
        .handshake_kind()
        .ok_or("no handshake kind")?;
    if let Err(e) = tls
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
    {
        return Ok(Err(e.to_string()));
    }
    let mut buf = [0u8; 64];
    Ok(match tls.read(&mut buf).await {
        Ok(0) => Err("closed".into()),
        Ok(_) => Ok(kind),
        Err(e) => Err(e.to_string()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resumption_cannot_readmit_a_revoked_certificate() -> TestResult {
    let t = TestHub::start().await?;
    let config = resuming_client(&t.pki, "tax")?;
    // Twice with the same cache: the hub offers nothing to resume.
    for attempt in 0..2 {
        let kind = connect_once(&config, t.addr).await?;
        assert_eq!(
            kind,
            Ok(rustls::HandshakeKind::Full),
            "connection {attempt}"
        );
    }
    pki::revoke(
        t.pki.path(),
        &RevokeTarget::Party(Party::unit("tax")?),
        RevocationReason::KeyCompromise,
        7,
    )?;
    t.hub.as_ref().ok_or("no hub")?.reload_tls()?;
    // The same cache again: a full handshake, and the certificate is refused.
    match connect_once(&config, t.addr).await? {
        Err(e) => assert!(e.contains("CertificateRevoked"), "{e}"),
        Ok(kind) => return Err(format!("a revoked certificate got in ({kind:?})").into()),
    }
    t.stop().await
}

/// A client of `unit` whose certificate ends a few seconds after it is
/// issued, with its subscription live: it has received a delivery pushed
/// by `sender`. A slow machine may miss that window (the certificate ends
/// before the subscription is live, and the hub refuses it as expired);
/// then it tries again with twice the lifetime, so that what is tested is
/// the hub's behaviour at the end of a certificate, not the machine's speed.
async fn short_lived_subscription(
    pki: &TestPki,
    hub: std::net::SocketAddr,
    unit: &str,
    sender: &Client,
) -> Result<(Client, Deliveries), BoxError> {
    let principal = Principal::Unit(unit.into());
    let mut seconds = 4;
    loop {
        let now = time::OffsetDateTime::now_utc();
        let cert = pki.ca()?.issue_client_between(
            &principal,
            "Short-lived",
            now - time::Duration::days(1),
            now + time::Duration::seconds(seconds),
        )?;
        let name = format!("short-lived-{unit}-{seconds}");
        let cfg = pki.custom_client(&name, &cert, principal.clone(), unit, hub)?;
        let live = async {
            let client = Client::connect(&cfg).await?;
            let mut stream: Deliveries = Box::pin(client.subscribe(0));
            let subject = format!("while valid for {seconds} s");
            sender.push(note(&subject).to_units([unit])).await?;
            // Earlier entries of the inbox come first.
            loop {
                match next_within(&mut stream, HANG, "a delivery").await? {
                    Some(Ok(e)) if e.message().subject == subject => return Ok((client, stream)),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(BoxError::from(e)),
                    None => return Err("the subscription ended".into()),
                }
            }
        };
        match live.await {
            Ok(live) => return Ok(live),
            Err(e) if e.to_string().to_lowercase().contains("expired") && seconds < 256 => {
                seconds *= 2
            }
            Err(e) => return Err(e),
        }
    }
}

/// The end of a subscription whose certificate expired.
async fn expired_end(stream: &mut Deliveries) -> TestResult {
    match next_within(stream, HANG, "the expired connection is closed").await? {
        Some(Err(e @ ClientError::CertificateRefused { .. })) => {
            assert!(e.to_string().contains("expired"), "{e}");
            Ok(())
        }
        other => Err(format!("expected certificate expired, got {other:?}").into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_expiring_while_connected_is_cut_off() -> TestResult {
    let t = TestHub::start().await?;
    let finance = t.unit("finance").await?;
    let (_tax, mut stream) = short_lived_subscription(&t.pki, t.addr, "tax", &finance).await?;
    // The hub checks open connections each second and closes this one once
    // its certificate has ended.
    expired_end(&mut stream).await?;
    assert!(
        !t.hub
            .as_ref()
            .ok_or("no hub")?
            .open_connections()?
            .iter()
            .any(|p| p == "urn:tongbao:unit:tax")
    );
    // Others are unaffected.
    finance
        .push(note("after").to_units(["civil-affairs"]))
        .await?;
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_a_unit_closes_its_open_subscription() -> TestResult {
    let t = TestHub::start().await?;
    let ops = t.operator(Role::Security).await?;
    let (mut tax_stream, mut finance_stream, _, civil) = tax_and_finance_live(&t).await?;
    ops.admin()
        .suspend_unit(pb::SuspendUnitRequest {
            unit: "tax".into(),
            reason: "drill".into(),
        })
        .await?;
    match next_within(&mut tax_stream, HANG, "the subscription ends").await? {
        Some(Err(e)) => {
            assert_eq!(e.code(), Some(tonic::Code::PermissionDenied), "{e}");
            assert!(e.to_string().contains("suspended"), "{e}");
        }
        other => return Err(format!("expected suspended, got {other:?}").into()),
    }
    // The audit trail says a connection was closed.
    let records = t.operator(Role::Audit).await?.admin_audit(0, 100).await?;
    let suspended = records
        .iter()
        .find(|r| r.action == "suspend-unit")
        .ok_or("no audit record")?;
    assert!(
        suspended.outcome.contains("closed 1"),
        "{}",
        suspended.outcome
    );
    // Finance's subscription keeps delivering.
    let r = civil.push(note("after").to_units(["finance"])).await?;
    let next = next_within(&mut finance_stream, HANG, "delivery")
        .await?
        .ok_or("finance's subscription ended")??;
    assert_eq!((next.channel(), next.seq()), (r.channel.as_str(), r.seq));
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_announcing_and_registering_a_key_is_finished_at_restart() -> TestResult {
    let pki = TestPki::generate()?;
    let hub = HubProcess::start_at_failpoint(&pki, HUB, "rotation-appended")?;
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    let old_key = SigningKey::from_pem(&std::fs::read_to_string(pki.signing_key_path("tax"))?)?;
    let before = tax.push(note("old key").to_units(["finance"])).await?;
    // The announcement, sent once and raw so that nothing repeats it.
    let new_key = SigningKey::generate()?;
    let message_id = "rotation-under-crash";
    let announcement = tax.sign(
        Draft::new(
            pb::Kind::KeyRotation,
            "rotation",
            rotation::body("tax", message_id, &new_key),
        )
        .with_content_type(rotation::CONTENT_TYPE)
        .with_id(message_id)
        .to_units(["finance"]),
    )?;
    let request = pb::RotateKeyRequest {
        announcement: Some(announcement),
    };
    let crashed = tax.directory().rotate_key(request.clone()).await;
    assert!(crashed.is_err(), "{crashed:?}");
    let status = hub.wait_exit(HANG)?;
    assert!(!status.success(), "the hub did not crash: {status}");

    // Restart without the crash point: the rotation is finished first.
    let hub = HubProcess::start(&pki, HUB)?;
    let finance = Client::connect(&pki.unit_config("finance", hub.addr)?).await?;
    let entry = finance.get_entry("tax", before.seq + 1).await?;
    assert_eq!(entry.message().message_id, message_id);
    let effective = entry.entry.hub_micros;
    let keys = registered_keys(&finance, "tax").await?;
    let old = key_with_id(&keys, old_key.key_id())?;
    // The new key was registered at restart.
    let new = key_with_id(&keys, new_key.key_id())?;
    assert_eq!(old.valid_until_micros, effective);
    assert_eq!(
        (new.valid_from_micros, new.valid_until_micros),
        (effective, 0)
    );

    // The old key is refused from the entry's time on; the new key signs.
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    match tax
        .push(note("old key after restart").to_units(["finance"]))
        .await
    {
        Err(ClientError::SigningKeyRefused {
            refusal: KeyRefusal::Retired,
            boundary_micros,
            ..
        }) => assert_eq!(boundary_micros, effective),
        other => return Err(format!("expected a retired-key refusal, got {other:?}").into()),
    }
    let new_key_file = pki.path().join("tax-new-signing.key");
    std::fs::write(&new_key_file, new_key.to_pem())?;
    let mut cfg = pki.unit_config("tax", hub.addr)?;
    cfg.signing_key = Some(new_key_file);
    let with_new = Client::connect(&cfg).await?;
    let after = with_new
        .push(note("new key after restart").to_units(["finance"]))
        .await?;
    finance.get_entry("tax", after.seq).await?;
    // The unit's retry of the same announcement gets the same answer.
    let again = tax.directory().rotate_key(request).await?.into_inner();
    assert_eq!(again.effective_micros, effective);
    assert_eq!(again.new_key_id, new_key.key_id());
    let appended = again.appended.ok_or("no receipt")?;
    assert!(appended.duplicate);
    assert_eq!(appended.seq, before.seq + 1);
    hub.kill()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_bundle_refuses_a_signature_made_before_its_key_began() -> TestResult {
    use tongbao_proto::checkpoint::{NoteSigner, parse_note, sign_note};
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let finance = t.unit("finance").await?;
    let pushed = tax.push(note("dated").to_units(["finance"])).await?;
    // A checkpoint covers the entry within a second or so.
    let deadline = std::time::Instant::now() + HANG;
    let mut bundle = loop {
        match finance.export_bundle(&[("tax".into(), pushed.seq)]).await {
            Ok(b) => break b,
            Err(e) if std::time::Instant::now() >= deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let hub_key = finance.pinned_hub_key().await?;
    verify_bundle(&serde_json::to_vec(&bundle)?, &hub_key)?;
    let created = finance
        .get_entry("tax", pushed.seq)
        .await?
        .message()
        .created_micros;

    // The hub-signed registry now says tax's key began after the message:
    // the offline verifier applies the same rule as the hub and refuses.
    let hub_signer = SigningKey::from_pem(&std::fs::read_to_string(
        t.pki.path().join("hub").join("checkpoint.key"),
    )?)?;
    let text = parse_note(&bundle.key_registry)?.text;
    let forged: String = text
        .lines()
        .map(|line| {
            let mut f: Vec<String> = line.split(' ').map(str::to_string).collect();
            if f.len() == 6 && f[0] == "tax" {
                f[4] = (created + 1).to_string();
            }
            f.join(" ") + "\n"
        })
        .collect();
    assert_ne!(forged, text);
    bundle.key_registry = sign_note(&forged, &[NoteSigner::new("tongbao", &hub_signer)?])?;
    match verify_bundle(&serde_json::to_vec(&bundle)?, &hub_key) {
        Err(e) => assert!(e.to_string().contains("valid only from"), "{e}"),
        Ok(report) => return Err(format!("verified anyway: {report:?}").into()),
    }
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_reusing_an_earlier_message_id_changes_no_key() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let finance = t.unit("finance").await?;
    let old_key = SigningKey::from_pem(&std::fs::read_to_string(t.pki.signing_key_path("tax"))?)?;
    let earlier = tax
        .push(
            note("an ordinary notice")
                .to_units(["finance"])
                .with_id("tax-notice-1"),
        )
        .await?;
    let later = tax
        .push(note("signed since then").to_units(["finance"]))
        .await?;
    let keys_before = registered_keys(&finance, "tax").await?;
    // A rotation under the notice's id: if it settled from the notice, the
    // old key would be retired from the notice's time, back-dated.
    let new_key = SigningKey::generate()?;
    let announcement = tax.sign(
        Draft::new(
            pb::Kind::KeyRotation,
            "rotation",
            rotation::body("tax", "tax-notice-1", &new_key),
        )
        .with_content_type(rotation::CONTENT_TYPE)
        .with_id("tax-notice-1")
        .to_units(["finance"]),
    )?;
    let (code, message) = refusal(
        tax.directory()
            .rotate_key(pb::RotateKeyRequest {
                announcement: Some(announcement),
            })
            .await
            .map_err(ClientError::from),
    )?;
    assert_eq!(code, tonic::Code::AlreadyExists, "{message}");
    assert!(
        message.contains(&format!("entry tax:{}", earlier.seq)),
        "{message}"
    );
    // No key changed, and what was signed since the notice still verifies.
    assert_eq!(registered_keys(&finance, "tax").await?, keys_before);
    let old = key_with_id(&keys_before, old_key.key_id())?;
    assert_eq!(old.valid_until_micros, 0, "the old key stays in force");
    finance.get_entry("tax", later.seq).await?;
    tax.push(note("still the old key").to_units(["finance"]))
        .await?;
    t.stop().await
}
