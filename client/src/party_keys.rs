//! A party's own keys, made on its own machine (`tongbao keys init`).
//!
//! A signature proves who said something only if nobody else ever held the
//! key, the hub's operators included. So each unit, office and operator
//! makes its TLS key and a certificate request naming it, and a unit its
//! Ed25519 signing key, where they are used; only the request and the
//! public signing key go to the operators. Private files are created 0600
//! by the call that creates them ([`tongbao_proto::secret_file`]), and an
//! existing key is never overwritten.

use std::path::{Path, PathBuf};
use tongbao_proto::echo::shown;
use tongbao_proto::identity::{IdError, Principal};
use tongbao_proto::keys::{SigningKey, encode_public_key};

/// The TLS private key (PKCS#8 PEM, ECDSA P-256), as `client.toml` `key`
/// and the operators' tools name it.
pub const TLS_KEY_FILE: &str = "key.pem";
/// The certificate request to hand to the CA operator.
pub const REQUEST_FILE: &str = "csr.pem";
/// A unit's Ed25519 signing key, as `client.toml` `signing_key` names it.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// Why keys could not be made. Nothing is left half made: files this call
/// created are removed again.
#[derive(Debug, thiserror::Error)]
pub enum PartyKeysError {
    #[error(
        "{} is not a party that makes its keys with `tongbao keys init`: give a unit (urn:tongbao:unit:<id>), an office (urn:tongbao:office:<mechanism>) or an operator (urn:tongbao:operator:<name>)",
        shown(.0)
    )]
    NotKeyHolder(String),
    #[error(transparent)]
    Id(IdError),
    #[error(
        "{0} already exists: keys are never overwritten; use another --dir, or move the old files away if they are really to be replaced"
    )]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the TLS key or its request: {0}")]
    Tls(#[from] rcgen::Error),
    #[error("cannot make the signing key: {0}")]
    Signing(#[from] tongbao_proto::keys::KeyError),
}

/// A signing key's public half, as the operators register it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicSigningKey {
    /// Base64, as `register-key --public-key` and `[[units]] signing_key` take it.
    pub public_key: String,
    pub key_id: String,
}

/// What [`make_party_keys`] wrote.
#[derive(Debug, Clone)]
pub struct PartyKeys {
    pub party: Principal,
    /// The TLS private key (0600).
    pub tls_key: PathBuf,
    /// The certificate request naming the party (public).
    pub request: PathBuf,
    /// A unit's signing key file (0600) and its public key; offices and
    /// operators sign no messages and get none.
    pub signing_key: Option<(PathBuf, PublicSigningKey)>,
}

/// The party a URI names, if it is one that makes its keys itself.
pub fn key_holder(uri: &str) -> Result<Principal, PartyKeysError> {
    match Principal::from_uri(uri) {
        Ok(Principal::LeadingGroup) | Err(IdError::NotTongbaoUri(_)) => {
            Err(PartyKeysError::NotKeyHolder(uri.to_string()))
        }
        Err(e) => Err(PartyKeysError::Id(e)),
        Ok(p) => Ok(p),
    }
}

/// Makes a party's keys in `dir` (created, owner-only, if missing): the TLS
/// key [`TLS_KEY_FILE`], a PEM certificate request [`REQUEST_FILE`] whose
/// only name is the party's URI (subject alternative name, and common
/// name), and for a unit the signing key [`SIGNING_KEY_FILE`]. Refuses,
/// before writing anything, if any of these files exists.
pub fn make_party_keys(dir: &Path, party_uri: &str) -> Result<PartyKeys, PartyKeysError> {
    make(dir, party_uri, true)
}

/// [`make_party_keys`] without a signing key: a new TLS key and request to
/// renew a certificate with, for a unit that keeps its signing key.
pub fn make_tls_request(dir: &Path, party_uri: &str) -> Result<PartyKeys, PartyKeysError> {
    make(dir, party_uri, false)
}

fn make(dir: &Path, party_uri: &str, signing: bool) -> Result<PartyKeys, PartyKeysError> {
    let party = key_holder(party_uri)?;
    let tls_key = dir.join(TLS_KEY_FILE);
    let request = dir.join(REQUEST_FILE);
    let signing_path =
        (signing && matches!(party, Principal::Unit(_))).then(|| dir.join(SIGNING_KEY_FILE));
    for path in [Some(&tls_key), Some(&request), signing_path.as_ref()]
        .into_iter()
        .flatten()
    {
        if path.exists() {
            return Err(PartyKeysError::Exists(path.clone()));
        }
    }
    create_private_dir(dir)?;

    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, party.uri());
    params.distinguished_name = name;
    params.subject_alt_names = vec![rcgen::SanType::URI(party.uri().try_into()?)];
    let request_pem = params.serialize_request(&key)?.pem()?;
    let signing = signing_path
        .map(|path| SigningKey::generate().map(|k| (path, k)))
        .transpose()?;

    let mut written = Written::default();
    written.secret(&tls_key, key.serialize_pem().as_bytes())?;
    if let Some((path, key)) = &signing {
        written.secret(path, key.to_pem().as_bytes())?;
    }
    written.public(&request, request_pem.as_bytes())?;
    written.keep();
    Ok(PartyKeys {
        party,
        tls_key,
        request,
        signing_key: signing.map(|(path, key)| (path, public_of(&key))),
    })
}

/// Makes a new Ed25519 signing key at `path` (0600; refused if it exists):
/// a unit's new key after a loss or compromise, to hand its public key to
/// the operators for registration.
pub fn make_signing_key(path: &Path) -> Result<PublicSigningKey, PartyKeysError> {
    if path.exists() {
        return Err(PartyKeysError::Exists(path.to_path_buf()));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    let key = SigningKey::generate()?;
    let mut written = Written::default();
    written.secret(path, key.to_pem().as_bytes())?;
    written.keep();
    Ok(public_of(&key))
}

fn public_of(key: &SigningKey) -> PublicSigningKey {
    PublicSigningKey {
        public_key: encode_public_key(key.public_key()),
        key_id: key.key_id().to_string(),
    }
}

/// Creates a missing directory readable by its owner only (keys live there).
fn create_private_dir(dir: &Path) -> Result<(), PartyKeysError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| PartyKeysError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// The files one call created, removed again unless it succeeds, so that a
/// failed call can simply be run again.
#[derive(Default)]
struct Written {
    paths: Vec<PathBuf>,
    kept: bool,
}

impl Written {
    fn secret(&mut self, path: &Path, contents: &[u8]) -> Result<(), PartyKeysError> {
        tongbao_proto::secret_file::create_new(path, contents).map_err(|e| refused(path, e))?;
        self.paths.push(path.to_path_buf());
        Ok(())
    }

    fn public(&mut self, path: &Path, contents: &[u8]) -> Result<(), PartyKeysError> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut f| {
                // Recorded once created, so a failed write is removed too.
                self.paths.push(path.to_path_buf());
                f.write_all(contents).and_then(|()| f.sync_all())
            })
            .map_err(|e| refused(path, e))
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        if !self.kept {
            for path in &self.paths {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// A file that appeared since the check is still not overwritten.
fn refused(path: &Path, e: std::io::Error) -> PartyKeysError {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        PartyKeysError::Exists(path.to_path_buf())
    } else {
        PartyKeysError::Write {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn mode(path: &Path) -> std::io::Result<u32> {
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
    }

    #[test]
    fn a_unit_gets_a_private_tls_key_a_request_and_a_private_signing_key() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("tax");
        let made = make_party_keys(&dir, "urn:tongbao:unit:tax")?;
        assert_eq!(mode(&dir)?, 0o700);
        assert_eq!(mode(&made.tls_key)?, 0o600);
        let (signing, public) = made.signing_key.ok_or("a unit signs")?;
        assert_eq!(mode(&signing)?, 0o600);
        let key = SigningKey::from_pem(&std::fs::read_to_string(&signing)?)?;
        assert_eq!(public, public_of(&key));
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(&made.tls_key)?)?;
        let request = std::fs::read_to_string(&made.request)?;
        assert!(request.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        Ok(())
    }

    #[test]
    fn offices_and_operators_get_no_signing_key_and_others_are_refused() -> TestResult {
        let tmp = tempfile::tempdir()?;
        for uri in [
            "urn:tongbao:office:fund-supervision",
            "urn:tongbao:operator:alice",
        ] {
            let made = make_party_keys(&tmp.path().join(uri.replace(':', "_")), uri)?;
            assert!(made.signing_key.is_none(), "{uri}");
        }
        for uri in ["urn:tongbao:leading-group", "https://tax.example", "tax"] {
            let e = make_party_keys(&tmp.path().join("x"), uri)
                .err()
                .ok_or(format!("{uri} accepted"))?;
            assert!(matches!(e, PartyKeysError::NotKeyHolder(_)), "{e}");
            assert!(
                e.to_string().contains("urn:tongbao:office:<mechanism>"),
                "{e}"
            );
        }
        let e = make_party_keys(&tmp.path().join("x"), "urn:tongbao:unit:Tax")
            .err()
            .ok_or("a bad id accepted")?;
        assert!(e.to_string().contains("is not a valid id"), "{e}");
        assert!(
            !tmp.path().join("x").exists(),
            "a refusal created the directory"
        );
        Ok(())
    }

    #[test]
    fn existing_keys_are_never_overwritten_and_nothing_is_added() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        std::fs::write(dir.join(SIGNING_KEY_FILE), b"the unit's old key")?;
        let e = make_party_keys(dir, "urn:tongbao:unit:tax")
            .err()
            .ok_or("overwrote a key")?;
        assert!(matches!(&e, PartyKeysError::Exists(p) if p.ends_with(SIGNING_KEY_FILE)));
        assert_eq!(
            std::fs::read(dir.join(SIGNING_KEY_FILE))?,
            b"the unit's old key"
        );
        assert!(!dir.join(TLS_KEY_FILE).exists() && !dir.join(REQUEST_FILE).exists());

        // A renewal's TLS key and request only, beside nothing else.
        let renewal = dir.join("renewal");
        let made = make_tls_request(&renewal, "urn:tongbao:unit:tax")?;
        assert!(made.signing_key.is_none() && !renewal.join(SIGNING_KEY_FILE).exists());
        assert_eq!(mode(&made.tls_key)?, 0o600);

        let next = dir.join("signing.key.next");
        make_signing_key(&next)?;
        assert_eq!(mode(&next)?, 0o600);
        let before = std::fs::read(&next)?;
        assert!(matches!(
            make_signing_key(&next),
            Err(PartyKeysError::Exists(_))
        ));
        assert_eq!(std::fs::read(&next)?, before);
        Ok(())
    }
}
