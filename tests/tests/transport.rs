//! Who may connect at all: the TLS layer and the registry check.

use std::time::Duration;
use tongbao_client::{Client, ClientError};
use tongbao_proto::identity::Principal;
use tongbao_server::pki::CertificateAuthority;
use tongbao_tests::{TestHub, TestResult, note};
use tonic::Code;

/// Connects and makes one call: under TLS 1.3 a refused client
/// certificate shows on the first call, not at connect.
async fn first_call(cfg: &tongbao_client::ClientConfig) -> Result<(), ClientError> {
    Client::connect(cfg).await.map(|_| ())
}

fn refused(r: Result<(), ClientError>, words: &str) {
    match r {
        Err(ClientError::CertificateRefused { reason }) => {
            assert!(
                reason.contains(words),
                "{reason:?} should mention {words:?}"
            )
        }
        other => panic!("expected a refused certificate ({words}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_is_refused() -> TestResult {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestHub::start().await?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(t.pki.path().join("ca.pem"))?)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(t.addr).await?;
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect("localhost".try_into()?, tcp)
        .await?;
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await?;
    let mut buf = [0u8; 16];
    let err = stream
        .read(&mut buf)
        .await
        .err()
        .ok_or("served without a client certificate")?;
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    // And the library reports the same thing in words.
    let status = tonic::Status::from_error(Box::new(err));
    refused(Err(ClientError::from(status)), "no client certificate");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() -> TestResult {
    let t = TestHub::start().await?;
    let rogue_ca = CertificateAuthority::generate("Rogue CA", 30)?;
    let cert = rogue_ca.issue_client(&Principal::Unit("tax".into()), "Tax Bureau", 30)?;
    let cfg = t
        .pki
        .custom_client("rogue", &cert, Principal::Unit("tax".into()), "tax", t.addr)?;
    refused(first_call(&cfg).await, "not issued by the exchange CA");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_is_refused() -> TestResult {
    let t = TestHub::start().await?;
    let now = time::OffsetDateTime::now_utc();
    let cert = t.pki.ca()?.issue_client_between(
        &Principal::Unit("tax".into()),
        "Tax Bureau",
        now - time::Duration::days(400),
        now - time::Duration::days(35),
    )?;
    let cfg = t.pki.custom_client(
        "expired",
        &cert,
        Principal::Unit("tax".into()),
        "tax",
        t.addr,
    )?;
    refused(first_call(&cfg).await, "expired");
    // The hub keeps serving everyone else.
    t.unit("tax")
        .await?
        .push(note("still fine").to_units(["finance"]))
        .await?;
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_unknown_unit_is_unauthenticated() -> TestResult {
    let t = TestHub::start().await?;
    let ghost = Principal::Unit("ghost-bureau".into());
    let cert = t.pki.ca()?.issue_client(&ghost, "Ghost Bureau", 30)?;
    let cfg = t.pki.custom_client("ghost", &cert, ghost, "tax", t.addr)?;
    let e = first_call(&cfg).await.err().ok_or("unknown unit served")?;
    assert_eq!(e.code(), Some(Code::Unauthenticated), "{e}");
    assert!(e.to_string().contains("does not know"), "{e}");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_cannot_push_and_have_no_inbox() -> TestResult {
    let op = Principal::Operator("night-shift".into());
    let t = TestHub::start_with(|c| {
        c.operators.push(tongbao_server::config::OperatorSeed {
            uri: op.uri(),
            role: tongbao_tests::Role::System,
        })
    })
    .await?;
    let cert = t.pki.ca()?.issue_client(&op, "Operator", 30)?;
    let mut cfg = t.pki.custom_client(
        "operator",
        &cert,
        Principal::Unit("tax".into()),
        "tax",
        t.addr,
    )?;
    // The operator borrows tax's signing key: the certificate still decides.
    cfg.identity = Principal::Unit("tax".into());
    let client = Client::connect(&cfg).await?;
    let e = client
        .push(note("x").to_units(["finance"]))
        .await
        .err()
        .ok_or("operator pushed")?;
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    let e = client.pull(0, 1).await.err().ok_or("operator pulled")?;
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshake_does_not_block_others() -> TestResult {
    let t = TestHub::start().await?;
    // A client that opens TCP and never speaks TLS.
    let _idle = tokio::net::TcpStream::connect(t.addr).await?;
    let tax = tokio::time::timeout(Duration::from_secs(5), t.unit("tax")).await??;
    tax.push(note("through").to_units(["finance"])).await?;
    t.stop().await
}
