//! Offline proof bundles: exported by a unit, verified with nothing but the
//! hub's checkpoint key; any changed byte is caught.

use tongbao_client::bundle::{BundleError, verify_bundle};
use tongbao_tests::{TestHub, TestResult, note};

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
