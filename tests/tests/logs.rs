//! The hub's logs, as a log shipper reads them: `--log-format json` writes
//! one JSON object a line, and at every level, trace included, no message
//! body, private key or signing key appears in them.

use base64::Engine as _;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tongbao_client::{Client, Draft};
use tongbao_proto::keys::SigningKey;
use tongbao_proto::pb;
use tongbao_tests::{TestPki, TestResult};

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_at_trace_carry_no_body_key_or_token() -> TestResult {
    let pki = TestPki::generate()?;
    let log_path = pki.path().join("hub.log");
    let mut child = Command::new(HUB)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(pki.path().join("hub.toml"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("tongbao-hub listening on ")
        .ok_or_else(|| format!("unexpected hub output {line:?}"))?
        .parse()?;

    // A body, a subject and a new signing key the logs must never show.
    let marker = "MARKER-body-7f3a9c41e2";
    let subject = "MARKER-subject-0b5d";
    let old_key = std::fs::read_to_string(pki.signing_key_path("tax"))?;
    let new_key = SigningKey::generate()?;
    let new_pem = new_key.to_pem();
    let tax = Client::connect(&pki.unit_config("tax", addr)?).await?;
    tax.push(
        Draft::new(pb::Kind::Notification, subject, marker.as_bytes().to_vec())
            .to_units(["finance"]),
    )
    .await?;
    tax.rotate_signing_key(new_key).await?;
    let finance = Client::connect(&pki.unit_config("finance", addr)?).await?;
    let page = finance.pull(0, 8).await?;
    assert!(!page.entries.is_empty());
    drop((tax, finance));

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            return Err("the hub did not stop".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs = std::fs::read_to_string(&log_path)?;

    // Every line is one JSON object with a level and a message or fields.
    let mut lines = 0;
    for l in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).map_err(|e| format!("not JSON ({e}): {l}"))?;
        assert!(v.get("level").is_some(), "{l}");
        lines += 1;
    }
    assert!(logs.contains("hub listening"), "the start is not logged");
    assert!(lines > 50, "only {lines} lines at trace");

    // Nothing secret, at any level.
    let mut secrets: Vec<String> = vec![marker.into(), subject.into(), "PRIVATE KEY".into()];
    for pem in [old_key, new_pem].iter().chain(&[
        std::fs::read_to_string(pki.path().join("hub").join("key.pem"))?,
        std::fs::read_to_string(pki.path().join("units").join("tax").join("key.pem"))?,
    ]) {
        // The raw private key (the first 32-byte OCTET STRING of its
        // PKCS#8 DER: an Ed25519 seed, a P-256 scalar), as hex and as a
        // list of bytes, however a log would print it.
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(b64)?;
        let at = der
            .windows(2)
            .position(|w| w == [0x04, 0x20])
            .ok_or("no private key in the PKCS#8")?;
        let raw = der.get(at + 2..at + 34).ok_or("a short private key")?;
        secrets.push(hex_of(raw));
        secrets.push(format!("{raw:?}").trim_matches(['[', ']']).to_string());
        // Each base64 line of the key's body.
        secrets.extend(
            pem.lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(str::to_string),
        );
    }
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "the logs show a secret ({} chars, starting {:?})",
            secret.len(),
            &secret[..8.min(secret.len())]
        );
    }
    Ok(())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
