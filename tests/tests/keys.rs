//! Keys made where they are used: `pki init` makes a CA, not parties' keys
//! (unless asked for an example set); `pki issue --csr` / `pki renew --csr`
//! issue only from a request signed by its own key and naming exactly the
//! party, refusing the rest saying which; and the hub runs, reloads and
//! honours revocations with no `ca.key` anywhere near it.

use std::path::Path;
use std::process::Command;
use tongbao_client::party_keys::make_party_keys;
use tongbao_client::{Client, ClientError};
use tongbao_server::pki::{self, Party, RevocationReason, RevokeTarget, cert_info};
use tongbao_tests::{BoxError, HubProcess, TestPki, TestResult, note, served_hub_cert, wait_until};

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");
/// Only catches a hang: every wait below ends on the event it waits for.
const HANG: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `tongbao-hub ARGS`: (exit code, stdout, stderr).
fn hub_cli(args: &[&str]) -> Result<(Option<i32>, String, String), BoxError> {
    let out = Command::new(HUB)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()?;
    Ok((
        out.status.code(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

fn has_all(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "{w:?} missing from:\n{text}");
    }
}

fn utf8(p: &Path) -> Result<&str, BoxError> {
    p.to_str().ok_or_else(|| "temp path is not UTF-8".into())
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Result<Vec<String>, BoxError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir)?.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[test]
fn pki_init_makes_a_ca_and_the_hubs_material_only_unless_asked_for_an_example() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let ca = tmp.path().join("ca");
    let (code, out, err) = hub_cli(&["pki", "init", "--dir", utf8(&ca)?])?;
    assert_eq!(code, Some(0), "{err}");
    has_all(
        &out,
        &[
            "Created a CA in",
            "No key of any unit, office or operator was made",
            "tongbao keys init --dir DIR --party URI",
            "--csr FILE",
            "never ca.key",
        ],
    );
    assert!(!out.contains("EXAMPLE"), "{out}");
    assert_eq!(
        files(&ca)?,
        [
            "ca-index.json",
            "ca.key",
            "ca.pem",
            "crl.pem",
            "hub.toml",
            "hub/cert.pem",
            "hub/checkpoint.key",
            "hub/key.pem",
        ]
    );
    // hub.toml reads, and names its registry as still to be filled in.
    let config = tongbao_server::HubConfig::load(&ca.join("hub.toml"))?;
    assert!(config.units.is_empty() && config.mechanisms.is_empty());
    // The operators fill the registry in: what they add parses.
    let text = std::fs::read_to_string(ca.join("hub.toml"))?;
    assert!(text.contains("# [[units]]") && text.contains("# [[mechanisms]]"));
    let public = tongbao_proto::keys::encode_public_key(
        tongbao_proto::keys::SigningKey::generate()?.public_key(),
    );
    std::fs::write(
        ca.join("hub.toml"),
        format!(
            "{text}\n[[units]]\nid = \"tax\"\nname = \"Tax Bureau\"\nsigning_key = \"{public}\"\n"
        ),
    )?;
    let filled = tongbao_server::HubConfig::load(&ca.join("hub.toml"))?;
    assert_eq!(filled.units.len(), 1);
    std::fs::write(ca.join("hub.toml"), text)?;
    let crl = pki::read_crl(&ca.join("crl.pem"))?;
    assert!(crl.revoked.is_empty());

    // Run again, it overwrites no CA.
    let key_before = std::fs::read(ca.join("ca.key"))?;
    let (code, _, err) = hub_cli(&["pki", "init", "--dir", utf8(&ca)?])?;
    assert_eq!(code, Some(1));
    has_all(&err, &["already exists", "--force"]);
    assert_eq!(std::fs::read(ca.join("ca.key"))?, key_before);

    // An example set only when asked, and it says so.
    let example = tmp.path().join("example");
    let (code, out, err) = hub_cli(&["pki", "init", "--dir", utf8(&example)?, "--example"])?;
    assert_eq!(code, Some(0), "{err}");
    has_all(
        &out,
        &[
            "EXAMPLE PKI",
            "as asked with --example",
            "never for production",
        ],
    );
    assert!(example.join("units/tax/signing.key").is_file());
    assert!(example.join("operators/security-admin/key.pem").is_file());
    Ok(())
}

/// A CA directory (example set) and the keys `tongbao keys init` made for
/// `party_uri` in `name` beside it.
fn party_request(
    pki: &TestPki,
    name: &str,
    party_uri: &str,
) -> Result<std::path::PathBuf, BoxError> {
    let made = make_party_keys(&pki.path().join("parties").join(name), party_uri)?;
    Ok(made.request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_another_party_with_extra_names_or_altered_are_refused_saying_which()
-> TestResult {
    let pki = TestPki::generate()?;
    let dir = utf8(pki.path())?.to_string();
    let index = || std::fs::read(pki.path().join("ca-index.json"));
    let tax_cert = || std::fs::read(pki.path().join("units/tax/cert.pem"));
    let (index_before, cert_before) = (index()?, tax_cert()?);

    // Finance's own request, offered for tax.
    let finance = party_request(&pki, "finance", "urn:tongbao:unit:finance")?;
    // A request for tax carrying a DNS name as well, made by another tool.
    let extra = pki.path().join("parties/extra.csr");
    {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![
            rcgen::SanType::URI("urn:tongbao:unit:tax".try_into()?),
            rcgen::SanType::DnsName("tax.example".try_into()?),
        ];
        std::fs::write(&extra, params.serialize_request(&key)?.pem()?)?;
    }
    // Tax's own request, one byte of its signature changed on the way.
    let tax = party_request(&pki, "tax", "urn:tongbao:unit:tax")?;
    let altered = pki.path().join("parties/altered.csr");
    {
        let mut der = request_der(&std::fs::read_to_string(&tax)?)?;
        let last = der.len() - 1;
        der[last] ^= 0x01;
        std::fs::write(&altered, pem_of(&der))?;
    }

    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["issue", "--unit", "tax", "--csr", utf8(&finance)?],
            &["refused: it names urn:tongbao:unit:finance, not urn:tongbao:unit:tax"],
        ),
        (
            &["issue", "--unit", "tax", "--csr", utf8(&extra)?],
            &["refused: it carries extra names: DNS tax.example"],
        ),
        (
            &["issue", "--unit", "tax", "--csr", utf8(&altered)?],
            &["refused: it is signed by a key other than the one it carries"],
        ),
        (
            &["renew", "--unit", "tax", "--csr", utf8(&finance)?],
            &["names urn:tongbao:unit:finance, not urn:tongbao:unit:tax"],
        ),
        (
            &["issue", "--hub", "--csr", utf8(&tax)?],
            &["not from a request", "--csr is for a unit"],
        ),
    ];
    for (args, words) in cases {
        let mut full = vec!["pki", args[0], "--dir", &dir];
        full.extend_from_slice(&args[1..]);
        let (code, stdout, stderr) = hub_cli(&full)?;
        assert_eq!(code, Some(1), "{full:?}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{full:?} printed {stdout}");
        has_all(&stderr, words);
    }
    assert_eq!(
        index()?,
        index_before,
        "a refused request changed the index"
    );
    assert_eq!(
        tax_cert()?,
        cert_before,
        "a refused request replaced a certificate"
    );
    assert!(!pki.path().join("ca-index.lock").exists());

    // Tax's own, unaltered request is issued, and its key stays with tax.
    let (code, out, err) = hub_cli(&[
        "pki",
        "issue",
        "--dir",
        &dir,
        "--unit",
        "tax",
        "--csr",
        utf8(&tax)?,
    ])?;
    assert_eq!(code, Some(0), "{err}");
    has_all(
        &out,
        &[
            "Issued a certificate for unit tax",
            "for the key of the party's own request",
            "no private key among them",
        ],
    );
    assert!(!out.contains("was made here"), "{out}");
    let issued = cert_info(&String::from_utf8(tax_cert()?)?, Path::new("cert.pem"))?;
    assert_eq!(issued.party, Some(Party::unit("tax")?));
    // The key made here for the example set no longer matches: it is kept
    // only as the backup the index names for the earlier certificate.
    assert!(!pki.path().join("units/tax/key.pem").exists());
    let listing = pki::list(pki.path(), None)?;
    let record = listing
        .rows
        .iter()
        .find(|r| r.serial == issued.serial)
        .ok_or("the new certificate is not in the index")?;
    assert!(record.current);
    let index = pki::CaIndex::load(pki.path())?.ok_or("no CA index")?;
    let recorded = index
        .find_serial(&issued.serial)
        .ok_or("the new certificate is not in the index")?;
    assert_eq!(
        recorded.key,
        std::path::PathBuf::new(),
        "the index names a key file for a key the CA never held"
    );

    // Tax renews from a new request of its own.
    let renewed = party_request(&pki, "tax-2027", "urn:tongbao:unit:tax")?;
    let (code, out, err) = hub_cli(&[
        "pki",
        "renew",
        "--dir",
        &dir,
        "--unit",
        "tax",
        "--csr",
        utf8(&renewed)?,
    ])?;
    assert_eq!(code, Some(0), "{err}");
    has_all(
        &out,
        &[
            "Renewed a certificate for unit tax",
            "revoke the previous one",
        ],
    );

    // The certificate from tax's request connects with tax's own key.
    let mut cfg = pki.unit_config("tax", "127.0.0.1:1".parse()?)?;
    let tax_dir = pki.path().join("parties/tax-2027");
    cfg.key = tax_dir.join("key.pem");
    let hub = tongbao_server::Hub::start(&pki.hub_config()?).await?;
    cfg.hub = format!("https://{}", hub.addr());
    Client::connect(&cfg)
        .await?
        .push(note("from a key made by tax").to_units(["finance"]))
        .await?;
    // And nobody else's key goes with it.
    cfg.key = pki.path().join("parties/finance/key.pem");
    if let Ok(c) = Client::connect(&cfg).await {
        let r = c.push(note("wrong key").to_units(["finance"])).await;
        assert!(r.is_err(), "a certificate worked with another key");
    }
    hub.shutdown().await?;
    Ok(())
}

/// The DER of a PEM request.
fn request_der(pem: &str) -> Result<Vec<u8>, BoxError> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())?;
    Ok(der.as_ref().to_vec())
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        lines.join("\n")
    )
}

/// Replaces `to` with `from`'s content the way an operator's copy should:
/// a temporary beside it, renamed over it.
fn copy_atomically(from: &Path, to: &Path) -> TestResult {
    let tmp = to.with_extension("copying");
    std::fs::copy(from, &tmp)?;
    std::fs::rename(&tmp, to)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_the_ca_key_starts_serves_reloads_and_honours_revocations() -> TestResult {
    // The CA's machine: the whole set, ca.key included.
    let pki = TestPki::generate()?;
    // The hub's machine: what hub.toml reads, and nothing else.
    let hub_side = TestPki {
        dir: tempfile::tempdir()?,
        pg: None,
    };
    let needed = [
        "hub.toml",
        "ca.pem",
        "crl.pem",
        "hub/cert.pem",
        "hub/key.pem",
        "hub/checkpoint.key",
    ];
    std::fs::create_dir_all(hub_side.path().join("hub"))?;
    for f in needed {
        std::fs::copy(pki.path().join(f), hub_side.path().join(f))?;
    }
    assert!(!hub_side.path().join("ca.key").exists());
    let hub = HubProcess::start(&hub_side, HUB)?;

    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    tax.push(note("served without ca.key").to_units(["finance"]))
        .await?;

    // The CA revokes tax offline; the operator copies the new CRL over and
    // tells the hub (SIGHUP), which closes tax's connection.
    pki::revoke(
        pki.path(),
        &RevokeTarget::Party(Party::unit("tax")?),
        RevocationReason::KeyCompromise,
        7,
    )?;
    copy_atomically(
        &pki.path().join("crl.pem"),
        &hub_side.path().join("crl.pem"),
    )?;
    hub.hangup()?;
    let tax_cfg = pki.unit_config("tax", hub.addr)?;
    wait_until(HANG, "the hub refuses revoked tax", || {
        let cfg = tax_cfg.clone();
        async move {
            Ok::<_, BoxError>(matches!(
                Client::connect(&cfg).await,
                Err(ClientError::CertificateRefused { .. })
            ))
        }
    })
    .await?;
    Client::connect(&pki.unit_config("finance", hub.addr)?)
        .await?
        .push(note("finance is unaffected").to_units(["civil-affairs"]))
        .await?;

    // The hub's own certificate renewed at the CA and copied over (key
    // first): new handshakes get it, still without ca.key.
    pki::renew(pki.path(), &Party::Hub, None)?;
    copy_atomically(
        &pki.path().join("hub/key.pem"),
        &hub_side.path().join("hub/key.pem"),
    )?;
    copy_atomically(
        &pki.path().join("hub/cert.pem"),
        &hub_side.path().join("hub/cert.pem"),
    )?;
    hub.hangup()?;
    let new_cert = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_file(pki.path().join("hub/cert.pem"))?
            .as_ref()
            .to_vec()
    };
    let (pki_ref, addr) = (&pki, hub.addr);
    wait_until(HANG, "the hub presents its renewed certificate", || {
        let new_cert = new_cert.clone();
        async move { Ok(served_hub_cert(pki_ref, "finance", addr).await? == new_cert) }
    })
    .await?;
    assert!(!hub_side.path().join("ca.key").exists());
    hub.terminate()?;
    let status = hub.wait_exit(HANG)?;
    assert!(status.success(), "{status}");
    Ok(())
}
