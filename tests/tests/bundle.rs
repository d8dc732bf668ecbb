//! Offline proof bundles: exported by a unit, verified with nothing but the
//! hub's checkpoint key or the exchange CA that certifies it; any changed
//! byte is caught.

use tongbao_client::bundle::{BundleError, BundleTrust, verify_bundle, verify_bundle_with};
use tongbao_tests::{TestHub, TestPki, TestResult, note};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_proves_who_said_what_and_who_acknowledged_it() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    for i in 0..3 {
        tax.push(note(&format!("Donations report {i}")).to_units(["finance"]))
            .await?;
    }
    let finance = t.unit("finance").await?;
    let page = finance.pull(0, 10).await?;
    finance.ack(&[&page.entries[1]]).await?;
    tax.cosign_own_channel().await?;

    let bundle = tax
        .export_bundle(&[("tax".into(), 1), ("tax".into(), 2), ("finance".into(), 0)])
        .await?;
    let bytes = serde_json::to_vec_pretty(&bundle)?;
    let hub_key = tax.pinned_hub_key().await?;
    let report = verify_bundle(&bytes, &hub_key)?.join("\n");
    assert!(
        report.contains("tax:1: notification \"Donations report 1\" signed by tax"),
        "{report}"
    );
    assert!(
        report.contains("receipt by finance acknowledging tax:1"),
        "{report}"
    );
    assert!(
        report.contains("tax:1 was acknowledged by finance in its own channel at finance:0"),
        "{report}"
    );
    assert!(report.contains("cosigned by tax"), "{report}");

    // Another hub key: refused before anything else.
    let other = tongbao_proto::checkpoint::NoteSigner::new(
        "tongbao",
        &tongbao_proto::keys::SigningKey::generate()?,
    )?
    .verifier()?
    .to_vkey();
    assert!(matches!(
        verify_bundle(&bytes, &other),
        Err(BundleError::HubKey { .. })
    ));

    // Any changed byte fails, with a message saying what failed. Every
    // position in the first 2 KiB, then a spread over the rest.
    let positions: Vec<usize> = (0..bytes.len().min(2048))
        .chain((2048..bytes.len()).step_by(5))
        .collect();
    for i in positions {
        let mut tampered = bytes.clone();
        tampered[i] ^= 1;
        match verify_bundle(&tampered, &hub_key) {
            Ok(_) => panic!(
                "byte {i} ({:?}) changed and the bundle still verified: ...{}...",
                bytes[i] as char,
                String::from_utf8_lossy(&bytes[i.saturating_sub(60)..(i + 20).min(bytes.len())])
            ),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    t.stop().await
}

/// The CA alone is enough: the hub certificate it issued names the
/// checkpoint key, and every signature chains from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exchange_ca_certifies_the_hub_key_of_a_bundle() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    tax.push(note("Abnormal fund movement").to_units(["finance"]))
        .await?;
    let finance = t.unit("finance").await?;
    let page = finance.pull(0, 10).await?;
    finance.ack(&[&page.entries[0]]).await?;
    let bundle = tax
        .export_bundle(&[("tax".into(), 0), ("finance".into(), 0)])
        .await?;
    assert!(!bundle.hub_certificate.is_empty() && !bundle.ca_certificate.is_empty());
    let bytes = serde_json::to_vec_pretty(&bundle)?;
    let ca_pem = std::fs::read(t.pki.path().join("ca.pem"))?;
    let hub_key = tax.pinned_hub_key().await?;
    let by_ca = |hub_key: Option<String>| BundleTrust::Ca {
        ca_pem: ca_pem.clone(),
        hub_key,
    };

    let report = verify_bundle_with(&bytes, &by_ca(None))?.join("\n");
    assert!(
        report.contains(&format!("The hub key {hub_key} is certified by the CA")),
        "{report}"
    );
    assert!(
        report.contains("tax:0 was acknowledged by finance"),
        "{report}"
    );
    // Both trusted: they must agree.
    verify_bundle_with(&bytes, &by_ca(Some(hub_key.clone())))?;
    let other_key = tongbao_proto::checkpoint::NoteSigner::new(
        "tongbao",
        &tongbao_proto::keys::SigningKey::generate()?,
    )?
    .verifier()?
    .to_vkey();
    assert!(matches!(
        verify_bundle_with(&bytes, &by_ca(Some(other_key))),
        Err(BundleError::HubKey { .. })
    ));

    // Another exchange's CA did not issue this hub certificate.
    let elsewhere = TestPki::generate()?;
    let foreign = BundleTrust::Ca {
        ca_pem: std::fs::read(elsewhere.path().join("ca.pem"))?,
        hub_key: None,
    };
    match verify_bundle_with(&bytes, &foreign) {
        Err(BundleError::Certificate(m)) => assert!(m.contains("not issued by the CA"), "{m}"),
        other => panic!("a foreign CA vouched for the hub key: {other:?}"),
    }

    // A forger swaps in a hub certificate from a CA of their own that names
    // their own checkpoint key: the real CA does not vouch for it.
    let mut forged = bundle.clone();
    let elsewhere_hub = std::fs::read(elsewhere.path().join("hub/cert.pem"))?;
    let elsewhere_ca = std::fs::read(elsewhere.path().join("ca.pem"))?;
    let der = |pem: &[u8]| -> Result<String, tongbao_tests::BoxError> {
        let ders = tongbao_client::hub_cert::certificates_from_pem(pem)?;
        Ok(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            ders.first().ok_or("no certificate")?,
        ))
    };
    forged.hub_certificate = der(&elsewhere_hub)?;
    forged.ca_certificate = der(&elsewhere_ca)?;
    let forged_key = tongbao_client::hub_cert::certify_hub_key(
        &tongbao_client::hub_cert::certificates_from_pem(&elsewhere_hub)?[0],
        &tongbao_client::hub_cert::certificates_from_pem(&elsewhere_ca)?,
        tongbao_proto::now_micros(),
    )?
    .vkey;
    forged.hub_key = forged_key;
    let forged = serde_json::to_vec(&forged)?;
    match verify_bundle_with(&forged, &by_ca(None)) {
        Err(BundleError::Certificate(m)) => assert!(m.contains("not issued by the CA"), "{m}"),
        other => panic!("a forged hub certificate was accepted: {other:?}"),
    }

    // Without certificates the CA cannot vouch; the hub key still can.
    let mut bare = bundle.clone();
    bare.hub_certificate.clear();
    bare.ca_certificate.clear();
    let bare = serde_json::to_vec(&bare)?;
    assert!(matches!(
        verify_bundle_with(&bare, &by_ca(None)),
        Err(BundleError::NoCertificate)
    ));
    verify_bundle(&bare, &hub_key)?;

    // Every byte of the carried certificates counts, whatever is trusted.
    let text = String::from_utf8(bytes.clone())?;
    let start = text
        .find("\"hub_certificate\"")
        .ok_or("no certificate field")?;
    for i in start..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[i] ^= 1;
        for trust in [by_ca(None), BundleTrust::HubKey(hub_key.clone())] {
            if verify_bundle_with(&tampered, &trust).is_ok() {
                panic!(
                    "byte {i} of the certificates changed and the bundle still verified: ...{}...",
                    String::from_utf8_lossy(
                        &bytes[i.saturating_sub(40)..(i + 10).min(bytes.len())]
                    )
                );
            }
        }
    }
    t.stop().await
}
