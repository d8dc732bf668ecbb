//! The operator's PKI commands end to end: what `tongbao-hub pki` issues,
//! renews and revokes is what a real hub accepts or refuses over mTLS.

use std::path::Path;
use std::process::Command;
use time::Duration;
use tongbao_client::{Client, ClientConfig, ClientError};
use tongbao_server::Hub;
use tongbao_server::pki::{
    self, CertState, InitOptions, Party, RevocationReason, RevokeTarget, cert_info, init, read_crl,
};
use tongbao_tests::{BoxError, HubProcess, TestPki, TestResult, note};

fn refused(r: Result<Client, ClientError>, words: &str) {
    match r {
        Err(ClientError::CertificateRefused { reason }) => {
            assert!(
                reason.contains(words),
                "{reason:?} should mention {words:?}"
            )
        }
        Err(other) => panic!("expected a refused certificate ({words}), got {other:?}"),
        Ok(_) => panic!("expected a refused certificate ({words}), but the hub served it"),
    }
}

/// A hub on the PKI's config; it reads the CRL as it starts.
async fn start(pki: &TestPki) -> Result<Hub, BoxError> {
    Ok(Hub::start(&pki.hub_config()?).await?)
}

async fn connect(cfg: &ClientConfig) -> Result<Client, ClientError> {
    Client::connect(cfg).await
}

/// Pushes one message: the unit is served end to end.
async fn pushes(pki: &TestPki, unit: &str, hub: &Hub) -> TestResult {
    connect(&pki.unit_config(unit, hub.addr())?)
        .await?
        .push(note(&format!("from {unit}")).to_units(["civil-affairs"]))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_unit_is_refused_and_other_units_are_not() -> TestResult {
    let pki = TestPki::generate()?;
    let dir = pki.path();
    // init leaves an empty CRL that hub.toml reads.
    let initial = read_crl(&dir.join("crl.pem"))?;
    assert_eq!((initial.number, initial.revoked.len()), (1, 0));
    assert_eq!(
        pki.hub_config()?.tls.crl.as_deref(),
        Some(Path::new("crl.pem"))
    );

    let report = pki::revoke(
        dir,
        &RevokeTarget::Party(Party::unit("tax")?),
        RevocationReason::KeyCompromise,
        7,
    )?;
    let [revoked] = report.revoked.as_slice() else {
        return Err(format!("expected one revoked certificate, got {:?}", report.revoked).into());
    };
    assert_eq!(revoked.party, Party::unit("tax")?);
    assert_eq!(report.hub_uses_crl, Some(true));
    let crl = read_crl(&dir.join("crl.pem"))?;
    assert_eq!(crl.number, 2);
    assert_eq!(crl.revoked, vec![revoked.serial.clone()]);
    let next = crl.next_update.ok_or("CRL without next update")?;
    assert!(
        next > crl.this_update + Duration::days(6) && next <= crl.this_update + Duration::days(7)
    );

    let hub = start(&pki).await?;
    refused(
        connect(&pki.unit_config("tax", hub.addr())?).await,
        "revoked",
    );
    pushes(&pki, "finance", &hub).await?;
    pushes(&pki, "public-security", &hub).await?;
    hub.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_works_and_the_old_one_until_it_is_revoked() -> TestResult {
    let pki = TestPki::generate()?;
    let dir = pki.path();
    let hub = start(&pki).await?;
    let old_serial = cert_info(
        &std::fs::read_to_string(dir.join("units/tax/cert.pem"))?,
        Path::new("cert.pem"),
    )?
    .serial;

    // Renewed while the hub runs: same CA, so nothing to reload.
    let report = pki::renew(dir, &Party::unit("tax")?, None)?;
    assert_ne!(report.record.serial, old_serial);
    let [still_valid] = report.still_valid.as_slice() else {
        return Err("the old certificate should still be valid".into());
    };
    assert_eq!(still_valid.serial, old_serial);
    // The test CA lives 30 days: the default validity ends before it.
    assert!(report.days <= 30, "{}", report.days);
    let signing = report
        .signing_key
        .as_ref()
        .ok_or("the example set's unit keeps its signing key")?;
    assert!(signing.path.ends_with("units/tax/signing.key"));
    let now_in_dir = cert_info(
        &std::fs::read_to_string(dir.join("units/tax/cert.pem"))?,
        Path::new("cert.pem"),
    )?;
    assert_eq!(now_in_dir.serial, report.record.serial);

    // The department's client.toml now names the new files: it works.
    pushes(&pki, "tax", &hub).await?;
    // The old certificate, kept as a backup, works too until revoked.
    let [cert_backup, key_backup] = report.backups.as_slice() else {
        return Err(format!("expected two backups, got {:?}", report.backups).into());
    };
    let mut old = pki.unit_config("tax", hub.addr())?;
    old.cert = dir.join(cert_backup);
    old.key = dir.join(key_backup);
    connect(&old)
        .await?
        .push(note("old certificate").to_units(["finance"]))
        .await?;
    hub.shutdown().await?;

    // Retire the old one; the hub reads the CRL when it starts again.
    pki::revoke(
        dir,
        &RevokeTarget::Serial(old_serial.to_uppercase()),
        RevocationReason::Superseded,
        7,
    )?;
    let hub = start(&pki).await?;
    old.hub = format!("https://{}", hub.addr());
    refused(connect(&old).await, "revoked");
    pushes(&pki, "tax", &hub).await?;
    hub.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_hub_certificate_keeps_its_names() -> TestResult {
    let pki = TestPki::generate()?;
    let dir = pki.path();
    let before = cert_info(
        &std::fs::read_to_string(dir.join("hub/cert.pem"))?,
        Path::new("hub/cert.pem"),
    )?;
    let report = pki::renew(dir, &Party::Hub, Some(20))?;
    let after = cert_info(
        &std::fs::read_to_string(dir.join("hub/cert.pem"))?,
        Path::new("hub/cert.pem"),
    )?;
    assert_eq!(after.serial, report.record.serial);
    assert_eq!((after.dns_names, after.ips), (before.dns_names, before.ips));
    // And it still certifies the same checkpoint key.
    let certified = |pem: &str| -> Result<String, tongbao_tests::BoxError> {
        use tongbao_client::hub_cert::{certificates_from_pem, certify_hub_key};
        let cert = certificates_from_pem(pem.as_bytes())?;
        let ca = certificates_from_pem(&std::fs::read(dir.join("ca.pem"))?)?;
        Ok(certify_hub_key(&cert[0], &ca, tongbao_proto::now_micros())?.vkey)
    };
    let hub_config = pki.hub_config()?;
    let key = tongbao_proto::keys::SigningKey::from_pem(&std::fs::read_to_string(
        dir.join(pki::CHECKPOINT_KEY_FILE),
    )?)?;
    assert_eq!(
        certified(&std::fs::read_to_string(dir.join("hub/cert.pem"))?)?,
        pki::checkpoint_vkey(&hub_config.hub.log_name, &key)?
    );
    assert!(matches!(
        pki::revoke(
            dir,
            &RevokeTarget::Party(Party::Hub),
            RevocationReason::Superseded,
            7
        ),
        Err(pki::PkiError::HubNotRevocable)
    ));
    let hub = start(&pki).await?;
    pushes(&pki, "tax", &hub).await?;
    hub.shutdown().await?;
    Ok(())
}

#[test]
fn list_shows_what_expires_within_the_window() -> TestResult {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    init(
        dir,
        &InitOptions {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.join("data"),
            days: 400,
            force: false,
        },
    )?;
    let short = pki::issue(dir, &Party::operator("night-shift")?, Some(10), None)?;
    assert!(short.signing_key.is_none(), "operators sign nothing");
    assert!(short.client_toml.is_some());
    assert_eq!(
        short.record.cert,
        Path::new("operators/night-shift/cert.pem")
    );

    let expiring = pki::list(dir, Some(Duration::days(30)))?;
    let [row] = expiring.rows.as_slice() else {
        return Err(format!("expected only night-shift, got {:?}", expiring.rows).into());
    };
    assert_eq!(row.serial, short.record.serial);
    assert_eq!(row.party, Party::operator("night-shift")?);
    assert_eq!(row.state, CertState::Expiring);
    assert_eq!(row.days_left, 10);

    // Everything: 22 from init (3 operators, one per role) and the new one; only it is expiring.
    let all = pki::list(dir, None)?;
    assert_eq!(all.rows.len(), 23);
    let states = |s: CertState| all.rows.iter().filter(|r| r.state == s).count();
    assert_eq!(
        (states(CertState::Valid), states(CertState::Expiring)),
        (22, 1)
    );
    assert_eq!(all.crl.as_ref().map(|c| c.number), Some(1));

    // A directory made before the index existed is adopted from its files.
    std::fs::remove_file(dir.join("ca-index.json"))?;
    let adopted = pki::list(dir, None)?;
    assert!(adopted.adopted);
    let serials = |rows: &[pki::ListRow]| {
        let mut s: Vec<String> = rows.iter().map(|r| r.serial.clone()).collect();
        s.sort();
        s
    };
    assert_eq!(serials(&adopted.rows), serials(&all.rows));
    Ok(())
}

/// Runs `tongbao-hub ARGS` as a process: (success, stdout, stderr).
fn hub_cli(args: &[&str]) -> Result<(Option<i32>, String, String), BoxError> {
    let out = Command::new(env!("CARGO_BIN_EXE_tongbao-test-hub"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()?;
    Ok((
        out.status.code(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

/// Runs a command that must succeed and returns its stdout.
fn hub_cli_ok(args: &[&str]) -> Result<String, BoxError> {
    let (code, stdout, stderr) = hub_cli(args)?;
    if code != Some(0) {
        return Err(format!("{args:?} exited {code:?}: {stderr}").into());
    }
    Ok(stdout)
}

fn has_all(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "{w:?} missing from:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_drive_a_hub_process() -> TestResult {
    let pki = TestPki::generate()?;
    let dir = pki.path().to_str().ok_or("temp path is not UTF-8")?;

    let out = hub_cli_ok(&[
        "pki",
        "issue",
        "--dir",
        dir,
        "--unit",
        "new-bureau",
        "--days",
        "10",
    ])?;
    has_all(
        &out,
        &[
            "Issued a certificate for unit new-bureau",
            "valid 10 days",
            "was made here, on the CA's machine: acceptable for a test set only",
            "Register the unit's signing key: the public key the unit handed over",
            "id = \"new-bureau\"",
            "Deliver",
        ],
    );
    let unit_dir = pki.path().join("units/new-bureau");
    for f in ["cert.pem", "key.pem", "client.toml"] {
        assert!(unit_dir.join(f).is_file(), "{f} missing");
    }
    // The CA never makes a unit's signing key: the unit makes its own.
    assert!(!unit_dir.join("signing.key").exists());
    assert!(!out.contains("public key:"), "{out}");
    assert_eq!(
        ClientConfig::load(&unit_dir.join("client.toml"))?.identity,
        tongbao_proto::identity::Principal::Unit("new-bureau".into())
    );

    let out = hub_cli_ok(&[
        "pki",
        "revoke",
        "--dir",
        dir,
        "--unit",
        "tax",
        "--reason",
        "keyCompromise",
    ])?;
    has_all(
        &out,
        &[
            "Revoked 1 certificate (reason keyCompromise)",
            "unit tax",
            "CRL number 2, 1 revoked certificate listed",
            "closes open connections made with a revoked certificate",
            "pki issue --dir",
        ],
    );

    let out = hub_cli_ok(&["pki", "crl", "--dir", dir, "--days", "3"])?;
    has_all(
        &out,
        &["CRL number 3, 1 revoked certificate listed", "next update"],
    );

    // Every test certificate ends within 30 days; 20 days singles out the new one.
    let out = hub_cli_ok(&["pki", "list", "--dir", dir, "--expiring", "20d"])?;
    has_all(
        &out,
        &[
            "unit new-bureau",
            "expiring",
            "1 of 23 certificates need renewing within 20 days",
            "pki renew --dir",
        ],
    );
    assert!(!out.contains("unit tax"), "{out}");

    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&hub_cli_ok(&["pki", "list", "--dir", dir, "--json"])?)?;
    let state_of = |party: &str| {
        rows.iter()
            .find(|r| r["party"] == party)
            .and_then(|r| r["state"].as_str())
            .map(str::to_string)
    };
    assert_eq!(state_of("urn:tongbao:unit:tax").as_deref(), Some("revoked"));
    assert_eq!(
        state_of("urn:tongbao:unit:finance").as_deref(),
        Some("expiring")
    );
    assert_eq!(rows.len(), 23);

    // The hub process reads what the CLI wrote.
    let hub = HubProcess::start(&pki, env!("CARGO_BIN_EXE_tongbao-test-hub"))?;
    refused(connect(&pki.unit_config("tax", hub.addr)?).await, "revoked");
    connect(&pki.unit_config("finance", hub.addr)?)
        .await?
        .push(note("unaffected").to_units(["tax"]))
        .await?;
    hub.kill()?;
    Ok(())
}

#[test]
fn cli_refuses_mistakes_with_a_clear_message_and_changes_nothing() -> TestResult {
    let pki = TestPki::generate()?;
    let dir = pki.path().to_str().ok_or("temp path is not UTF-8")?;
    let index = || std::fs::read(pki.path().join("ca-index.json"));
    let crl = || std::fs::read(pki.path().join("crl.pem"));
    let (index_before, crl_before) = (index()?, crl()?);

    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["pki", "revoke", "--dir", dir, "--serial", "deadbeef"],
            &["no certificate with serial deadbeef", "pki list"],
        ),
        (
            &[
                "pki",
                "issue",
                "--dir",
                dir,
                "--party",
                "urn:tongbao:robot:r2",
            ],
            &["not a Tongbao identity URI", "urn:tongbao:unit:<id>"],
        ),
        (
            &["pki", "renew", "--dir", dir, "--operator", "nobody"],
            &[
                "operator nobody has no certificate",
                "pki issue",
                "--operator nobody",
            ],
        ),
        (
            &["pki", "issue", "--dir", dir, "--unit", "Tax Bureau"],
            &["is not a valid id"],
        ),
        (
            &["pki", "revoke", "--dir", dir, "--party", "urn:tongbao:hub"],
            &["not checked against the CRL", "renew --hub"],
        ),
        (
            &[
                "pki", "issue", "--dir", dir, "--unit", "tax", "--days", "9999",
            ],
            &["would outlive the CA", "--days"],
        ),
    ];
    for (args, words) in cases {
        let (code, stdout, stderr) = hub_cli(args)?;
        assert_eq!(code, Some(1), "{args:?}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{args:?} printed {stdout}");
        has_all(&stderr, words);
    }
    // Usage mistakes are clap's: exit status 2 and the usage.
    for args in [
        &["pki", "issue", "--dir", dir][..],
        &[
            "pki", "issue", "--dir", dir, "--unit", "tax", "--office", "x",
        ],
        &[
            "pki", "revoke", "--dir", dir, "--unit", "tax", "--reason", "boredom",
        ],
    ] {
        let (code, _, stderr) = hub_cli(args)?;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Usage") || stderr.contains("keyCompromise"),
            "{stderr}"
        );
    }
    let nowhere = pki.path().join("nowhere");
    let (code, _, stderr) = hub_cli(&[
        "pki",
        "issue",
        "--dir",
        nowhere.to_str().ok_or("path")?,
        "--unit",
        "tax",
    ])?;
    assert_eq!(code, Some(1));
    has_all(&stderr, &["not a Tongbao PKI directory", "pki init"]);
    assert!(!nowhere.exists(), "a refused command created {nowhere:?}");

    assert_eq!(
        index()?,
        index_before,
        "a refused command changed the index"
    );
    assert_eq!(crl()?, crl_before, "a refused command changed the CRL");
    assert!(!pki.path().join("ca-index.lock").exists());

    // Revoking twice: the second says when the first happened.
    hub_cli_ok(&["pki", "revoke", "--dir", dir, "--unit", "education"])?;
    let (code, _, stderr) = hub_cli(&["pki", "revoke", "--dir", dir, "--unit", "education"])?;
    assert_eq!(code, Some(1));
    has_all(
        &stderr,
        &["unit education has no valid", "certificate to revoke"],
    );
    let education = Party::unit("education")?;
    let serial = pki::list(pki.path(), None)?
        .rows
        .into_iter()
        .find(|r| r.party == education)
        .map(|r| r.serial)
        .ok_or("education is listed")?;
    let (code, _, stderr) = hub_cli(&["pki", "revoke", "--dir", dir, "--serial", &serial])?;
    assert_eq!(code, Some(1));
    has_all(&stderr, &["was already revoked on", "pki crl"]);
    Ok(())
}

#[test]
fn a_held_lock_stops_a_second_command() -> TestResult {
    let pki = TestPki::generate()?;
    let lock = pki.path().join("ca-index.lock");
    std::fs::write(&lock, "12345\n")?;
    let e = pki::issue(pki.path(), &Party::unit("tax")?, None, None)
        .err()
        .ok_or("issued while another command held the lock")?;
    assert!(e.to_string().contains("another pki command"), "{e}");
    std::fs::remove_file(&lock)?;
    pki::issue(pki.path(), &Party::unit("tax")?, None, None)?;
    Ok(())
}

#[test]
fn the_hub_warns_about_certificates_expiring_within_30_days()
-> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use std::io::{BufRead, BufReader};
    // The test PKI is valid for 30 days: every certificate is due.
    let pki = tongbao_tests::TestPki::generate()?;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tongbao-test-hub"))
        .args(["serve", "--config"])
        .arg(pki.path().join("hub.toml"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    // Read in a thread so a hub that never warns fails the test instead of
    // hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut warned = Vec::new();
    let done = |w: &Vec<String>| {
        w.iter().any(|l| l.contains("urn:tongbao:unit:tax"))
            && w.iter().any(|l| l.contains("urn:tongbao:hub"))
    };
    while !done(&warned) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("certificate expires soon") => warned.push(line),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        warned.iter().any(|l| l.contains("urn:tongbao:unit:tax")),
        "{warned:?}"
    );
    assert!(
        warned.iter().any(|l| l.contains("urn:tongbao:hub")),
        "{warned:?}"
    );
    Ok(())
}

/// A validity outside 1..=36,500 days is refused before anything is made
/// (a huge one used to overflow the date arithmetic).
#[test]
fn validities_outside_the_range_are_refused_before_anything_is_made() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pki = dir.path().join("ca");
    let pki_arg = pki.to_str().ok_or("temp path is not UTF-8")?;
    for days in ["0", "-5", "36501", "99999999999"] {
        let days = format!("--days={days}");
        let (code, _, stderr) = hub_cli(&["pki", "init", "--dir", pki_arg, &days])?;
        assert_ne!(code, Some(0), "{days} was accepted");
        has_all(&stderr, &["--days", "1..=36500"]);
        assert!(!pki.exists(), "{days} made {}", pki.display());
    }
    hub_cli_ok(&["pki", "init", "--dir", pki_arg, "--days", "3650"])?;
    let (code, _, stderr) = hub_cli(&["pki", "crl", "--dir", pki_arg, "--days", "40000"])?;
    assert_ne!(code, Some(0));
    has_all(&stderr, &["--days"]);
    Ok(())
}
