//! Operator PKI: the exchange CA, certificates for the hub and every party,
//! and the configuration `tongbao-hub pki init` starts from.
//!
//! TLS keys are ECDSA P-256; signing keys are Ed25519 and separate (see
//! DESIGN.md, identities and keys). In production every party makes its
//! own keys and the CA issues from its request ([`csr`]); only the example
//! set ([`init`]) makes parties' keys here. The CA remembers what it issued
//! in `ca-index.json` ([`index`]), from which the CRL is always rebuilt;
//! the operator's issue, renew, revoke, crl and list commands live in
//! [`lifecycle`], the production `pki init` in [`ca_init`].

pub mod ca_init;
pub mod csr;
pub mod index;
pub mod lifecycle;

pub use ca_init::init_ca;
pub use csr::{CheckedRequest, CsrError, check_request};
pub use index::{
    CRL_FILE, CaIndex, CertInfo, CertRecord, CertState, CrlInfo, HUB_PARTY, INDEX_FILE, Party,
    Revocation, RevocationReason, cert_info, read_crl,
};
pub use lifecycle::{
    CrlReport, DEFAULT_CRL_DAYS, DEFAULT_DAYS, EXPIRY_WARNING_DAYS, IssueReport, ListRow, Listing,
    RevokeReport, RevokeTarget, SigningKeyReport, issue, issue_from_request, list, regenerate_crl,
    renew, renew_from_request, revoke,
};

use crate::config::{HubConfig, HubSection, Limits, MechanismSeed, TlsSection, UnitSeed};
use crate::example_parties::{MECHANISMS, UNITS};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};
use tongbao_proto::identity::{IdError, Principal};
use tongbao_proto::keys::{SigningKey, encode_public_key};

/// Why PKI material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("signing key generation failed: {0}")]
    Key(#[from] tongbao_proto::keys::KeyError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("cannot encode config: {0}")]
    Encode(String),
    #[error("random number generator failed")]
    Random,
    #[error(transparent)]
    Identity(#[from] IdError),
    #[error(
        "{0} is not a Tongbao PKI directory (no ca.pem); create one with `tongbao-hub pki init --dir {0}`"
    )]
    NotPkiDir(PathBuf),
    #[error(
        "another pki command is working on this CA ({0} exists); if none is running, delete that file and retry"
    )]
    Locked(PathBuf),
    #[error("CA index {path} cannot be used: {reason}")]
    Index { path: PathBuf, reason: String },
    #[error("cannot parse certificate {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("cannot parse CRL {path}: {reason}")]
    Crl { path: PathBuf, reason: String },
    #[error(
        "no certificate with serial {0} in the CA index; `tongbao-hub pki list` shows every serial"
    )]
    UnknownSerial(String),
    #[error(
        "certificate {serial} of {party} was already revoked on {at}; `tongbao-hub pki crl` rewrites the CRL if it is out of date"
    )]
    AlreadyRevoked {
        serial: String,
        party: String,
        at: String,
    },
    #[error(
        "{party} has no certificate in the CA index, so there is nothing to renew; issue one with `tongbao-hub pki issue --dir {} {flag}`", dir.display()
    )]
    NoCertificate {
        party: String,
        flag: String,
        dir: PathBuf,
    },
    #[error("{0} has no valid (unexpired, unrevoked) certificate to revoke")]
    NothingToRevoke(String),
    #[error(
        "the hub's own certificate is not checked against the CRL (clients check the CA and the name only): replace it with `tongbao-hub pki renew --hub` and restart the hub"
    )]
    HubNotRevocable,
    #[error(
        "the CA expires within a day ({ca_until}): it can issue nothing more; a new CA is needed"
    )]
    CaExpiring { ca_until: String },
    #[error("--days must be at least 1 (got {0})")]
    Days(i64),
    #[error(
        "a certificate valid for {days} days would outlive the CA (valid until {ca_until}); use --days {max} or less"
    )]
    OutlivesCa {
        days: i64,
        ca_until: String,
        max: i64,
    },
    #[error(
        "unknown revocation reason {0:?}: use keyCompromise, superseded, cessationOfOperation or unspecified"
    )]
    Reason(String),
    #[error("signing key {path} cannot be used: {reason}")]
    SigningKey { path: PathBuf, reason: String },
    #[error(
        "the revocation is recorded in the CA index, but the CRL could not be written ({source}); fix that and run `tongbao-hub pki crl --dir {}`", dir.display()
    )]
    CrlNotWritten { dir: PathBuf, source: Box<PkiError> },
    #[error("certificate request {path} refused: {reason}")]
    Request { path: PathBuf, reason: CsrError },
    #[error(
        "the hub's certificate is made here with the hub's own key (`pki issue --hub`, `pki renew --hub`), not from a request; --csr is for a unit, an office, an operator or the leading group"
    )]
    HubFromRequest,
}

/// A certificate with its private key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Writes `cert.pem` and `key.pem` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), PkiError> {
        write(&dir.join("cert.pem"), &self.cert_pem)?;
        write_private(&dir.join("key.pem"), &self.key_pem)
    }
}

/// A certificate authority that can issue certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

fn serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    // Positive, and no leading zero byte: the hex in the index is then
    // exactly the DER serial.
    bytes[0] = (bytes[0] & 0x7f).max(1);
    Ok(SerialNumber::from_slice(&bytes))
}

impl CertificateAuthority {
    /// A new self-signed CA valid from now for `days`.
    pub fn generate(common_name: &str, days: i64) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Tongbao exchange");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(serial()?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(days);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing CA from its certificate and private key (PEM).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Self {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_string(),
        })
    }

    /// Loads the CA of a directory made by [`init`] (`ca.pem`, `ca.key`).
    pub fn load_dir(dir: &Path) -> Result<Self, PkiError> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|source| PkiError::Read {
                path: dir.join(name),
                source,
            })
        };
        Self::load(&read("ca.pem")?, &read("ca.key")?)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (keep it offline).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A client certificate naming `principal`, valid from now for `days`.
    pub fn issue_client(
        &self,
        principal: &Principal,
        display_name: &str,
        days: i64,
    ) -> Result<Issued, PkiError> {
        let now = OffsetDateTime::now_utc();
        self.issue_client_between(
            principal,
            display_name,
            now - Duration::days(1),
            now + Duration::days(days),
        )
    }

    /// A client certificate with an explicit validity window (tests use this
    /// for expired certificates).
    pub fn issue_client_between(
        &self,
        principal: &Principal,
        display_name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Issued, PkiError> {
        self.sign(client_params(
            principal,
            display_name,
            not_before,
            not_after,
        )?)
    }

    /// A client certificate naming `principal` for the key of its checked
    /// request, valid from now for `days`, as PEM: the party keeps its
    /// private key, the CA never sees it.
    pub fn issue_client_for_request(
        &self,
        principal: &Principal,
        display_name: &str,
        request: &CheckedRequest,
        days: i64,
    ) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let params = client_params(
            principal,
            display_name,
            now - Duration::days(1),
            now + Duration::days(days),
        )?;
        Ok(params.signed_by(request.public_key(), &self.issuer)?.pem())
    }

    /// The hub's server certificate for the given DNS names and addresses,
    /// binding the hub's checkpoint key (if given) so that the CA certifies
    /// it for offline verifiers.
    pub fn issue_server(
        &self,
        dns: &[&str],
        ips: &[IpAddr],
        checkpoint_vkey: Option<&str>,
        days: i64,
    ) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Tongbao hub");
        params.distinguished_name = dn;
        let mut sans = Vec::new();
        for d in dns {
            sans.push(SanType::DnsName((*d).try_into()?));
        }
        for ip in ips {
            sans.push(SanType::IpAddress(*ip));
        }
        if let Some(vkey) = checkpoint_vkey {
            sans.push(SanType::URI(
                tongbao_proto::identity::checkpoint_key_uri(vkey).try_into()?,
            ));
        }
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(serial()?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(days);
        self.sign(params)
    }

    /// A CRL listing `revoked`, signed by this CA.
    pub fn crl(
        &self,
        revoked: Vec<RevokedCertParams>,
        number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<String, PkiError> {
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    fn sign(&self, params: CertificateParams) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What every client certificate says, whoever made its key: the party's
/// URI as its only name, client authentication only.
fn client_params(
    principal: &Principal,
    display_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, display_name);
    dn.push(DnType::OrganizationName, "Tongbao exchange");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(principal.uri().try_into()?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(serial()?);
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(params)
}

fn write(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_atomic(path, contents.as_bytes(), false, false)
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_atomic(path, contents.as_bytes(), true, false)
}

/// Writes through a temporary file and a rename, so a reader (the hub, a
/// client reloading its files) sees the old file or the new one, never half
/// of one. `durable` also syncs the file and its directory, for the
/// lifecycle commands whose result must survive a power cut; `init` skips
/// it because a failed init is simply run again.
fn write_atomic(
    path: &Path,
    contents: &[u8],
    private: bool,
    durable: bool,
) -> Result<(), PkiError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiError::Write { path, source }
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(err(&parent))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if private {
        return tongbao_proto::secret_file::replace(path, contents).map_err(err(path));
    }
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        let mut file = opts.open(&tmp).map_err(err(&tmp))?;
        file.write_all(contents).map_err(err(&tmp))?;
        if durable {
            file.sync_all().map_err(err(&tmp))?;
        }
        drop(file);
        std::fs::rename(&tmp, path).map_err(err(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    #[cfg(unix)]
    if durable {
        std::fs::File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(err(&parent))?;
    }
    Ok(())
}

/// What a departmental system needs to reach the hub (`client.toml`).
#[derive(Debug, Serialize)]
struct ClientToml {
    hub: String,
    server_name: String,
    identity: String,
    ca: String,
    cert: String,
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_key: Option<String>,
    /// The hub's checkpoint key, pinned from the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    hub_key: Option<String>,
}

/// Where `init` puts the hub's checkpoint key, relative to the PKI directory.
pub const CHECKPOINT_KEY_FILE: &str = "hub/checkpoint.key";
/// The note name of the hub's checkpoints (`[hub] log_name`).
pub const DEFAULT_LOG_NAME: &str = "tongbao";

/// The signed-note verifier key (vkey) of a hub checkpoint key.
pub fn checkpoint_vkey(log_name: &str, key: &SigningKey) -> Result<String, PkiError> {
    tongbao_proto::checkpoint::NoteVerifier::new(
        log_name,
        tongbao_proto::checkpoint::KeyType::Ed25519,
        key.public_key(),
    )
    .map(|v| v.to_vkey())
    .map_err(|e| PkiError::Encode(e.to_string()))
}

/// The `client.toml` of a party whose directory is two levels below the PKI
/// directory (`units/<id>/`, `offices/<m>/`, ...), as `init` and `issue`
/// write it.
fn client_toml_text(
    hub_url: &str,
    principal: &Principal,
    signing: bool,
    hub_key: Option<&str>,
) -> Result<String, PkiError> {
    client_toml_with_ca(hub_url, principal, signing, hub_key, "../../ca.pem")
}

/// A `client.toml` reading the CA certificate from `ca` (relative to it):
/// `ca.pem` beside it for a party that made its own keys, which receives
/// its directory's public files to put beside its keys.
fn client_toml_with_ca(
    hub_url: &str,
    principal: &Principal,
    signing: bool,
    hub_key: Option<&str>,
    ca: &str,
) -> Result<String, PkiError> {
    toml::to_string(&ClientToml {
        hub: hub_url.to_string(),
        server_name: HUB_SERVER_NAME.into(),
        identity: principal.uri(),
        ca: ca.into(),
        cert: "cert.pem".into(),
        key: "key.pem".into(),
        signing_key: signing.then(|| "signing.key".to_string()),
        hub_key: hub_key.map(str::to_string),
    })
    .map(|mut text| {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    })
    .map_err(|e| PkiError::Encode(e.to_string()))
}

/// Options of `pki init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub days: i64,
    pub force: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7443),
            data_dir: PathBuf::from("./tongbao-data"),
            // More than ten years, so the committed example set keeps working.
            days: 11 * 366,
            force: false,
        }
    }
}

/// Name the hub certificate carries and clients expect.
pub const HUB_SERVER_NAME: &str = "localhost";

/// DNS names and addresses of the hub certificate `init` makes.
const HUB_DNS_NAMES: [&str; 2] = [HUB_SERVER_NAME, "tongbao-hub"];

/// What `pki init` produced.
#[derive(Debug)]
pub struct InitSummary {
    pub hub_config: PathBuf,
    pub units: Vec<String>,
    pub files: usize,
    /// The initial (empty) CRL.
    pub crl: CrlInfo,
}

/// Creates a complete example PKI and configuration in `dir`
/// (`pki init --example`): the CA, the hub certificate, a certificate and
/// signing key for every unit of the source document, office and
/// leading-group certificates, one operator per administrator role,
/// `hub.toml`, one `client.toml` per party, the CA index recording every
/// certificate, and an empty CRL that `hub.toml` points to, so revocation
/// works from the first start. Every party's private keys are made here,
/// so whoever holds the directory can act as any party: for tests and
/// demonstrations only. A production CA starts with [`init_ca`].
///
/// The initial CRL is valid as long as the certificates (`opts.days`), so a
/// fresh or committed example set never carries a stale CRL; CRLs written
/// later by `revoke` and `crl` are short-lived.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<InitSummary, PkiError> {
    let hub_config = dir.join("hub.toml");
    if hub_config.exists() && !opts.force {
        return Err(PkiError::Exists(hub_config));
    }
    let days = opts.days.max(1);
    let now = index::now();
    let mut files = 0;
    let mut ca_index = CaIndex::new();
    let ca =
        CertificateAuthority::generate("Tongbao example CA (example, not for production)", days)?;
    write(&dir.join("ca.pem"), ca.cert_pem())?;
    write_private(&dir.join("ca.key"), &ca.key_pem())?;
    files += 2;
    // Writes a party's certificate and key and records them in the index.
    let mut keep = |party: Party, issued: Issued| -> Result<(), PkiError> {
        let rel = party.dir();
        issued.write(&dir.join(&rel))?;
        ca_index.add(
            party,
            &issued.cert_pem,
            rel.join("cert.pem"),
            rel.join("key.pem"),
            now,
        )?;
        files += 2;
        Ok(())
    };
    // The hub's checkpoint key, so every client can pin it from the start
    // and the hub certificate can bind it.
    let checkpoint_key = SigningKey::generate()?;
    write_private(&dir.join(CHECKPOINT_KEY_FILE), &checkpoint_key.to_pem())?;
    let vkey = checkpoint_vkey(DEFAULT_LOG_NAME, &checkpoint_key)?;
    keep(
        Party::Hub,
        ca.issue_server(
            &HUB_DNS_NAMES,
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            Some(&vkey),
            days,
        )?,
    )?;
    let hub_url = format!("https://{}", opts.listen);
    let mut extra = Vec::new();
    let mut seeds = Vec::new();
    for (id, name, name_zh) in UNITS {
        let principal = Principal::Unit((*id).to_string());
        let udir = dir.join("units").join(id);
        keep(
            Party::Client(principal.clone()),
            ca.issue_client(&principal, name, days)?,
        )?;
        let key = SigningKey::generate()?;
        write_private(&udir.join("signing.key"), &key.to_pem())?;
        extra.push((
            udir.join("client.toml"),
            client_toml_text(&hub_url, &principal, true, Some(&vkey))?,
        ));
        seeds.push(UnitSeed {
            id: (*id).to_string(),
            name: (*name).to_string(),
            name_zh: (*name_zh).to_string(),
            signing_key: encode_public_key(key.public_key()),
        });
    }
    for m in MECHANISMS {
        let principal = Principal::Office(m.id.to_string());
        keep(
            Party::Client(principal.clone()),
            ca.issue_client(&principal, &format!("Office of the {}", m.name), days)?,
        )?;
        extra.push((
            dir.join(Party::Client(principal.clone()).dir())
                .join("client.toml"),
            client_toml_text(&hub_url, &principal, false, Some(&vkey))?,
        ));
    }
    keep(
        Party::Client(Principal::LeadingGroup),
        ca.issue_client(&Principal::LeadingGroup, LEADING_GROUP_NAME, days)?,
    )?;
    extra.push((
        dir.join(Party::Client(Principal::LeadingGroup).dir())
            .join("client.toml"),
        client_toml_text(&hub_url, &Principal::LeadingGroup, false, Some(&vkey))?,
    ));
    // One operator per administrator role (crate::roles).
    let mut operators = Vec::new();
    for role in crate::roles::Role::ALL {
        let operator = Principal::Operator(example_operator(role));
        keep(
            Party::Client(operator.clone()),
            ca.issue_client(&operator, &format!("Tongbao {role} administrator"), days)?,
        )?;
        operators.push(crate::config::OperatorSeed {
            uri: operator.uri(),
            role,
        });
    }
    for (path, text) in &extra {
        write(path, text)?;
    }
    files += UNITS.len() + extra.len();

    let crl = index::write_crl(dir, &ca, &mut ca_index, days, now, false)?;
    files += 2;

    let config = HubConfig {
        units: seeds,
        mechanisms: MECHANISMS
            .iter()
            .map(|m| MechanismSeed {
                id: m.id.into(),
                name: m.name.into(),
                name_zh: m.name_zh.into(),
                lead: m.lead.into(),
                members: m.members.iter().map(|s| (*s).to_string()).collect(),
            })
            .collect(),
        operators,
        ..hub_config_at(dir, opts)
    };
    let text = toml::to_string(&config).map_err(|e| PkiError::Encode(e.to_string()))?;
    write(
        &hub_config,
        &format!(
            "# Tongbao hub configuration, generated by `tongbao-hub pki init`.\n\
             # TLS paths are relative to this file; data_dir to the working directory.\n\
             # The hub reads crl.pem at start-up; `tongbao-hub pki revoke` and `pki crl` rewrite it.\n\
             # The registry ([[units]], [[mechanisms]]) seeds the store on first start only.\n\
             # [[operators]] (each operator's one role) are read at every start.\n\n{text}"
        ),
    )?;
    files += 1;
    Ok(InitSummary {
        hub_config,
        units: UNITS.iter().map(|(id, _, _)| (*id).to_string()).collect(),
        files,
        crl,
    })
}

/// The hub.toml `pki init` writes, with an empty registry: the hub's
/// files where `pki init` puts them, every limit at its default.
pub(crate) fn hub_config_at(dir: &Path, opts: &InitOptions) -> HubConfig {
    HubConfig {
        hub: HubSection {
            listen: opts.listen,
            data_dir: opts.data_dir.clone(),
            fsync: true,
            min_free_mib: crate::config::default_min_free_mib(),
            log_name: DEFAULT_LOG_NAME.into(),
            checkpoint_key: Some(CHECKPOINT_KEY_FILE.into()),
        },
        tls: TlsSection {
            ca: "ca.pem".into(),
            cert: "hub/cert.pem".into(),
            key: "hub/key.pem".into(),
            crl: Some(CRL_FILE.into()),
            watch_files: true,
        },
        limits: Limits::default(),
        connections: Default::default(),
        ack_deadlines: Default::default(),
        access_log: Default::default(),
        metrics: crate::metrics::MetricsSection::beside(opts.listen),
        store: Default::default(),
        units: Vec::new(),
        mechanisms: Vec::new(),
        operators: Vec::new(),
        base_dir: dir.to_path_buf(),
    }
}

/// The example set's operator of a role: `system-admin`, `security-admin`,
/// `audit-admin`.
pub fn example_operator(role: crate::roles::Role) -> String {
    format!("{role}-admin")
}

/// Common name of the leading group's certificate.
const LEADING_GROUP_NAME: &str = "Social organization management leading group";
