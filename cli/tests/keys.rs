//! `tongbao keys`: a party makes its own keys with the real binary, the CA
//! issues from its request alone, and the result connects and pushes over
//! mTLS; the private files are 0600 from creation and never overwritten.

// The shared runner; this file starts its own hub from a production CA.
#[allow(dead_code)]
mod common;

use common::{TestResult, tongbao};
use std::path::Path;
use std::process::Command;
use tongbao_server::config::UnitSeed;
use tongbao_server::pki::{InitOptions, Party, cert_info, init_ca, issue_from_request};
use tongbao_server::{Hub, HubConfig};

/// Runs `tongbao ARGS` with no config: (success, stdout, stderr).
fn run(args: &[&str]) -> Result<(bool, String, String), std::io::Error> {
    let out = Command::new(env!("CARGO_BIN_EXE_tongbao"))
        .args(args)
        .env_remove("TONGBAO_CONFIG")
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `tongbao keys init` for a party in `dir`; returns its report.
fn keys_init(dir: &Path, party: &str) -> Result<String, String> {
    let dir = dir.to_str().ok_or("temp path is not UTF-8")?;
    match run(&["keys", "init", "--dir", dir, "--party", party]) {
        Ok((true, out, _)) => Ok(out),
        Ok((false, _, err)) => Err(err),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> std::io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

/// The value after `label` on a line of a report.
fn field(report: &str, label: &str) -> Result<String, String> {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("no {label:?} in:\n{report}"))
}

#[cfg(unix)]
#[test]
fn keys_init_writes_private_files_0600_and_never_overwrites_them() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("tax");
    let out = keys_init(&dir, "urn:tongbao:unit:tax")?;
    for words in [
        "Made the keys of unit tax (urn:tongbao:unit:tax)",
        "certificate request naming urn:tongbao:unit:tax (public)",
        "`tongbao-hub pki issue --dir CA_DIR --unit tax --csr csr.pem`",
        "register-key --unit tax --public-key",
    ] {
        assert!(out.contains(words), "{words:?} missing from:\n{out}");
    }
    let public = field(&out, "public key:")?;
    assert_eq!(public.len(), 44, "{public}");
    field(&out, "key id:")?;
    // Private files: owner-only from creation (secret_file makes them so),
    // the directory too; the request is public.
    assert_eq!(mode(&dir)?, 0o700);
    assert_eq!(mode(&dir.join("key.pem"))?, 0o600);
    assert_eq!(mode(&dir.join("signing.key"))?, 0o600);
    let key = tongbao_proto::keys::SigningKey::from_pem(&std::fs::read_to_string(
        dir.join("signing.key"),
    )?)?;
    assert_eq!(
        tongbao_proto::keys::encode_public_key(key.public_key()),
        public,
        "the printed public key is the signing key's"
    );

    // A second run overwrites nothing.
    let before: Vec<Vec<u8>> = ["key.pem", "signing.key", "csr.pem"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)))
        .collect::<Result<_, _>>()?;
    let err = keys_init(&dir, "urn:tongbao:unit:tax")
        .err()
        .ok_or("a second keys init succeeded")?;
    assert!(
        err.contains("already exists") && err.contains("never overwritten"),
        "{err}"
    );
    let after: Vec<Vec<u8>> = ["key.pem", "signing.key", "csr.pem"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)))
        .collect::<Result<_, _>>()?;
    assert_eq!(before, after);

    // Offices and operators sign nothing; other parties are refused.
    let office = tmp.path().join("office");
    let out = keys_init(&office, "urn:tongbao:office:fund-supervision")?;
    assert!(!office.join("signing.key").exists() && !out.contains("public key:"));
    assert_eq!(mode(&office.join("key.pem"))?, 0o600);
    let operator = tmp.path().join("admin/operators/alice");
    let out = keys_init(&operator, "urn:tongbao:operator:alice")?;
    assert!(
        out.contains("tongbao-hub admin --dir ADMIN --operator alice"),
        "{out}"
    );
    for refused in ["urn:tongbao:leading-group", "urn:tongbao:robot:r2"] {
        let err = keys_init(&tmp.path().join("lg"), refused)
            .err()
            .ok_or(format!("{refused} accepted"))?;
        assert!(
            err.contains("urn:tongbao:unit:<id>")
                && err.contains("urn:tongbao:office:<mechanism>")
                && err.contains("urn:tongbao:operator:<name>"),
            "{err}"
        );
    }
    assert!(!tmp.path().join("lg").exists());

    // A renewal's TLS key and request alone: the unit keeps its signing key.
    let renewal = tmp.path().join("tax-renewal");
    let (ok, out, err) = run(&[
        "keys",
        "init",
        "--dir",
        renewal.to_str().ok_or("path")?,
        "--party",
        "urn:tongbao:unit:tax",
        "--tls-only",
    ])?;
    assert!(ok, "{err}");
    assert!(
        out.contains("pki renew --dir CA_DIR --unit tax --csr csr.pem"),
        "{out}"
    );
    assert!(!renewal.join("signing.key").exists() && !out.contains("public key:"));
    assert_eq!(mode(&renewal.join("key.pem"))?, 0o600);

    // A new signing key alone, for a unit that lost its own.
    let next = tmp.path().join("tax/signing.key.next");
    let next_arg = next.to_str().ok_or("path")?;
    let (ok, out, err) = run(&["keys", "signing-key", "--out", next_arg])?;
    assert!(ok, "{err}");
    assert!(
        out.contains("Public key: ") && out.contains("register-key"),
        "{out}"
    );
    assert_eq!(mode(&next)?, 0o600);
    let (ok, _, err) = run(&["keys", "signing-key", "--out", next_arg])?;
    assert!(!ok && err.contains("already exists"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_units_own_keys_yield_a_certificate_that_connects_and_pushes() -> TestResult {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir()?;
    let ca_dir = tmp.path().join("ca");
    // A production CA: no party's key is made there.
    init_ca(
        &ca_dir,
        &InitOptions {
            listen: "127.0.0.1:0".parse()?,
            data_dir: tmp.path().join("data"),
            days: 30,
            force: false,
        },
    )?;
    let mut config = HubConfig::load(&ca_dir.join("hub.toml"))?;

    // Two units make their keys on their machines and hand over the
    // request and the public signing key; the CA issues from the request,
    // the registry gets the public key.
    let mut unit_dirs = Vec::new();
    for (id, name) in [
        ("new-bureau", "New Bureau"),
        ("civil-affairs", "Civil Affairs"),
    ] {
        let dir = tmp.path().join(id);
        let out = keys_init(&dir, &format!("urn:tongbao:unit:{id}"))?;
        let report = issue_from_request(
            &ca_dir,
            &Party::unit(id)?,
            &dir.join("csr.pem"),
            None,
            Some(name),
        )?;
        assert!(report.from_request && report.signing_key.is_none());
        let party_dir = ca_dir.join("units").join(id);
        assert!(
            !party_dir.join("key.pem").exists() && !party_dir.join("signing.key").exists(),
            "the CA holds a key of {id}"
        );
        // The certificate names the unit, for the key the unit holds.
        let cert = std::fs::read_to_string(party_dir.join("cert.pem"))?;
        let info = cert_info(&cert, Path::new("cert.pem"))?;
        assert_eq!(info.party, Some(Party::unit(id)?));
        // The unit puts the public files it is handed beside its keys.
        for f in ["cert.pem", "ca.pem", "client.toml"] {
            std::fs::copy(party_dir.join(f), dir.join(f))?;
        }
        config.units.push(UnitSeed {
            id: id.into(),
            name: name.into(),
            name_zh: String::new(),
            signing_key: field(&out, "public key:")?,
        });
        unit_dirs.push(dir);
    }
    // The hub needs no CA key.
    std::fs::rename(ca_dir.join("ca.key"), tmp.path().join("ca.key.offline"))?;
    let hub = Hub::start(&config).await?;
    for dir in &unit_dirs {
        let path = dir.join("client.toml");
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(
            &path,
            text.replace("https://127.0.0.1:0", &format!("https://{}", hub.addr())),
        )?;
    }
    let (sender, recipient) = (
        unit_dirs[0].join("client.toml"),
        unit_dirs[1].join("client.toml"),
    );
    let out = tokio::task::spawn_blocking(move || {
        tongbao(
            &sender,
            &[
                "push",
                "--to",
                "civil-affairs",
                "--kind",
                "notification",
                "--subject",
                "Made where it is used",
                "--body",
                "signed with a key no operator ever held",
            ],
        )
    })
    .await??;
    assert!(out.contains("appended new-bureau:0"), "{out}");
    // The recipient reads it, verified under the sender's registered key.
    let out =
        tokio::task::spawn_blocking(move || tongbao(&recipient, &["pull", "--json"])).await??;
    let entry: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(entry["sender"].as_str(), Some("new-bureau"));
    assert_eq!(entry["subject"].as_str(), Some("Made where it is used"));
    hub.shutdown().await?;
    Ok(())
}
