//! Operator PKI: the exchange CA, certificates for the hub and every party,
//! signing keys, and the example configuration (`tongbao-hub pki init`).
//!
//! TLS keys are ECDSA P-256; signing keys are Ed25519 and separate (see
//! DESIGN.md, identities and keys).

use crate::config::{HubConfig, HubSection, Limits, MechanismSeed, TlsSection, UnitSeed};
use crate::domain::{MECHANISMS, UNITS};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};
use tongbao_proto::identity::Principal;
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
    bytes[0] &= 0x7f; // positive
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
        self.sign(params)
    }

    /// The hub's server certificate for the given DNS names and addresses.
    pub fn issue_server(
        &self,
        dns: &[&str],
        ips: &[IpAddr],
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
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(serial()?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(days);
        self.sign(params)
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

fn write(path: &Path, contents: &str) -> Result<(), PkiError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| PkiError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, contents).map_err(|source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    write(path, contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| PkiError::Write {
                path: path.to_path_buf(),
                source,
            },
        )?;
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

/// What `pki init` produced.
#[derive(Debug)]
pub struct InitSummary {
    pub hub_config: PathBuf,
    pub units: Vec<String>,
    pub files: usize,
}

/// Creates a complete example PKI and configuration in `dir`: the CA, the
/// hub certificate, a certificate and signing key for every unit of the
/// source document, office, operator and leading-group certificates,
/// `hub.toml`, and one `client.toml` per party.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<InitSummary, PkiError> {
    let hub_config = dir.join("hub.toml");
    if hub_config.exists() && !opts.force {
        return Err(PkiError::Exists(hub_config));
    }
    let mut files = 0;
    let ca = CertificateAuthority::generate(
        "Tongbao example CA (example, not for production)",
        opts.days,
    )?;
    write(&dir.join("ca.pem"), ca.cert_pem())?;
    write_private(&dir.join("ca.key"), &ca.key_pem())?;
    files += 2;
    ca.issue_server(
        &[HUB_SERVER_NAME, "tongbao-hub"],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        opts.days,
    )?
    .write(&dir.join("hub"))?;
    files += 2;

    let hub_url = format!("https://{}", opts.listen);
    let client_toml = |principal: &Principal, signing: bool| -> Result<String, PkiError> {
        toml::to_string(&ClientToml {
            hub: hub_url.clone(),
            server_name: HUB_SERVER_NAME.into(),
            identity: principal.uri(),
            ca: "../../ca.pem".into(),
            cert: "cert.pem".into(),
            key: "key.pem".into(),
            signing_key: signing.then(|| "signing.key".to_string()),
        })
        .map_err(|e| PkiError::Encode(e.to_string()))
    };

    let mut seeds = Vec::new();
    for (id, name, name_zh) in UNITS {
        let udir = dir.join("units").join(id);
        let principal = Principal::Unit((*id).to_string());
        ca.issue_client(&principal, name, opts.days)?.write(&udir)?;
        let key = SigningKey::generate()?;
        write_private(&udir.join("signing.key"), &key.to_pem())?;
        write(&udir.join("client.toml"), &client_toml(&principal, true)?)?;
        files += 4;
        seeds.push(UnitSeed {
            id: (*id).to_string(),
            name: (*name).to_string(),
            name_zh: (*name_zh).to_string(),
            signing_key: encode_public_key(key.public_key()),
        });
    }
    for m in MECHANISMS {
        let odir = dir.join("offices").join(m.id);
        let principal = Principal::Office(m.id.to_string());
        ca.issue_client(&principal, &format!("Office of the {}", m.name), opts.days)?
            .write(&odir)?;
        write(&odir.join("client.toml"), &client_toml(&principal, false)?)?;
        files += 3;
    }
    let gdir = dir.join("leading-group").join("main");
    ca.issue_client(
        &Principal::LeadingGroup,
        "Social organization management leading group",
        opts.days,
    )?
    .write(&gdir)?;
    write(
        &gdir.join("client.toml"),
        &client_toml(&Principal::LeadingGroup, false)?,
    )?;
    let odir = dir.join("operators").join("ops");
    ca.issue_client(
        &Principal::Operator("ops".into()),
        "Tongbao operator",
        opts.days,
    )?
    .write(&odir)?;
    files += 5;

    let config = HubConfig {
        hub: HubSection {
            listen: opts.listen,
            data_dir: opts.data_dir.clone(),
            fsync: true,
            log_name: "tongbao".into(),
            checkpoint_key: None,
        },
        tls: TlsSection {
            ca: "ca.pem".into(),
            cert: "hub/cert.pem".into(),
            key: "hub/key.pem".into(),
            crl: None,
        },
        limits: Limits::default(),
        ack_deadlines: Default::default(),
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
        base_dir: dir.to_path_buf(),
    };
    let text = toml::to_string(&config).map_err(|e| PkiError::Encode(e.to_string()))?;
    write(
        &hub_config,
        &format!(
            "# Tongbao hub configuration, generated by `tongbao-hub pki init`.\n\
             # TLS paths are relative to this file; data_dir to the working directory.\n\
             # The registry ([[units]], [[mechanisms]]) seeds the store on first start only.\n\n{text}"
        ),
    )?;
    files += 1;
    Ok(InitSummary {
        hub_config,
        units: UNITS.iter().map(|(id, _, _)| (*id).to_string()).collect(),
        files,
    })
}
