//! The operator's certificate lifecycle: issue, renew, revoke, CRL, list.
//!
//! Library functions returning reports, so that the CLI only words them and
//! tests drive exactly what operators run. Every change takes the index
//! lock, records in the index before touching a party's files, and writes
//! each file atomically and durably. A party's certificate is issued either
//! from its own request (`--csr`: its keys never leave its machine) or, for
//! test sets, with a TLS key made here; a unit's signing key is never made
//! here.

use super::csr::{CheckedRequest, check_request};
use super::index::{
    CertRecord, CertState, CrlInfo, IndexLock, Party, Revocation, RevocationReason, check_pki_dir,
    load_or_adopt, normalize_serial, now, rfc3339, write_crl,
};
use super::{
    CRL_FILE, CertificateAuthority, HUB_DNS_NAMES, LEADING_GROUP_NAME, PkiError, cert_info,
    client_toml_text, client_toml_with_ca, read_crl, write_atomic,
};
use crate::config::HubConfig;
use crate::example_parties::{MECHANISMS, UNITS};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};
use tongbao_proto::identity::Principal;
use tongbao_proto::keys::{SigningKey, encode_public_key};

/// Validity of a certificate from `issue` unless `--days` says otherwise.
pub const DEFAULT_DAYS: i64 = 365;
/// Validity of a CRL from `revoke` and `crl`: short, so a stolen old CRL
/// is soon worthless, once the hub enforces CRL expiry.
pub const DEFAULT_CRL_DAYS: i64 = 7;
/// Certificates expiring this soon are shown as `expiring`.
pub const EXPIRY_WARNING_DAYS: i64 = 30;
/// Hub URL for a new `client.toml` when the directory has no `hub.toml`.
const DEFAULT_HUB_URL: &str = "https://127.0.0.1:7443";

/// A unit's Ed25519 signing key found in its directory of the CA (an
/// example set's), as the operator must register it. Never made here: a
/// unit makes its own (`tongbao keys init`) and hands over the public key.
#[derive(Debug, Clone)]
pub struct SigningKeyReport {
    pub path: PathBuf,
    /// Base64, as `hub.toml` `[[units]] signing_key` takes it.
    pub public_key: String,
    pub key_id: String,
}

/// What `issue` or `renew` did.
#[derive(Debug, Clone)]
pub struct IssueReport {
    pub party: Party,
    pub record: CertRecord,
    pub days: i64,
    /// The default validity was cut to end before the CA does.
    pub shortened_to_ca: bool,
    /// The party's directory (inside the PKI directory).
    pub dir: PathBuf,
    /// Previous files kept under a timestamped name, relative to the PKI directory.
    pub backups: Vec<PathBuf>,
    /// Earlier certificates of the party that the hub still accepts.
    pub still_valid: Vec<CertRecord>,
    pub signing_key: Option<SigningKeyReport>,
    /// Issued from the party's own request: its private key was never here.
    pub from_request: bool,
    /// The `client.toml` written because the party had none.
    pub client_toml: Option<PathBuf>,
    /// The CA certificate copied beside that `client.toml`, for a party
    /// that made its own keys (its directory is what it receives).
    pub ca_copy: Option<PathBuf>,
    /// For units and offices: whether `hub.toml`'s registry seed names it.
    pub registered: Option<bool>,
    /// The index was built now from the directory's certificates.
    pub adopted: bool,
}

/// Issues a new certificate and a TLS key made here for a party, backing up
/// the files it replaces (test and example sets: in production the party
/// makes its key, see [`issue_from_request`]). Also writes a `client.toml`
/// if the party has none. Makes no signing key.
pub fn issue(
    dir: &Path,
    party: &Party,
    days: Option<i64>,
    name: Option<&str>,
) -> Result<IssueReport, PkiError> {
    issue_or_renew(dir, party, days, name, false, None)
}

/// Issues a certificate for the key of the party's own certificate request
/// (`tongbao keys init`), once the request passes [`check_request`] for
/// exactly this party. The party's private key is never here: the CA
/// writes the certificate, and, for a party it had no `client.toml` for,
/// one reading `ca.pem` beside it and a copy of `ca.pem`, so that the
/// party's directory holds public files only, to be put beside its keys.
pub fn issue_from_request(
    dir: &Path,
    party: &Party,
    request: &Path,
    days: Option<i64>,
    name: Option<&str>,
) -> Result<IssueReport, PkiError> {
    issue_or_renew(dir, party, days, name, false, Some(request))
}

/// A new certificate and key for a party that already has one, valid as
/// long as its latest unless `days` is given. The old certificate stays
/// valid until it expires or is revoked, so the department can switch at
/// its pace.
pub fn renew(dir: &Path, party: &Party, days: Option<i64>) -> Result<IssueReport, PkiError> {
    issue_or_renew(dir, party, days, None, true, None)
}

/// [`renew`] for the key of the party's own new certificate request,
/// checked as [`issue_from_request`] checks it.
pub fn renew_from_request(
    dir: &Path,
    party: &Party,
    request: &Path,
    days: Option<i64>,
) -> Result<IssueReport, PkiError> {
    issue_or_renew(dir, party, days, None, true, Some(request))
}

/// Reads and checks a request for `party` before anything is written.
fn checked_request(party: &Party, path: &Path) -> Result<CheckedRequest, PkiError> {
    let Party::Client(principal) = party else {
        return Err(PkiError::HubFromRequest);
    };
    let refused = |reason| PkiError::Request {
        path: path.to_path_buf(),
        reason,
    };
    // Read at most one byte past the limit: a huge file is refused unread.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            use std::io::Read;
            f.take(super::csr::MAX_REQUEST_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|source| PkiError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    check_request(&bytes, principal).map_err(refused)
}

fn issue_or_renew(
    dir: &Path,
    party: &Party,
    days: Option<i64>,
    name: Option<&str>,
    renewing: bool,
    request_file: Option<&Path>,
) -> Result<IssueReport, PkiError> {
    check_pki_dir(dir)?;
    let request = request_file
        .map(|path| checked_request(party, path))
        .transpose()?;
    let _lock = IndexLock::acquire(dir)?;
    let ca = CertificateAuthority::load_dir(dir)?;
    let (mut index, adopted) = load_or_adopt(dir)?;
    let now = now();
    let latest = index.of(party).max_by_key(|r| r.not_after).cloned();
    if renewing && latest.is_none() {
        return Err(PkiError::NoCertificate {
            party: party.to_string(),
            flag: party.cli_flag(),
            dir: dir.to_path_buf(),
        });
    }
    let ca_info = cert_info(ca.cert_pem(), &dir.join("ca.pem"))?;
    let max_days = (ca_info.not_after - now).whole_days();
    let (days, shortened) = match (days, &latest) {
        (Some(d), _) if d < 1 => return Err(PkiError::Days(d)),
        (Some(d), _) if d > max_days => {
            return Err(PkiError::OutlivesCa {
                days: d,
                ca_until: super::index::display_time(ca_info.not_after),
                max: max_days,
            });
        }
        (Some(d), _) => (d, false),
        (None, latest) => {
            let wanted = match latest {
                Some(r) if renewing => r.validity_days(),
                _ => DEFAULT_DAYS,
            };
            // A default never fails: it ends with the CA at the latest.
            (wanted.min(max_days), wanted > max_days)
        }
    };
    if days < 1 {
        return Err(PkiError::CaExpiring {
            ca_until: super::index::display_time(ca_info.not_after),
        });
    }

    // The certificate, and its private key when it is made here.
    let (cert_pem, key_pem) = match party {
        Party::Hub => {
            let (dns, ips) = hub_names(dir);
            let dns: Vec<&str> = dns.iter().map(String::as_str).collect();
            // The renewed certificate keeps certifying the checkpoint key.
            let issued = ca.issue_server(&dns, &ips, hub_vkey(dir).as_deref(), days)?;
            (issued.cert_pem, Some(issued.key_pem))
        }
        Party::Client(principal) => {
            let name = match (name, &latest) {
                (Some(n), _) => n.to_string(),
                (None, Some(r)) if !r.subject.is_empty() => r.subject.clone(),
                _ => default_name(principal),
            };
            match &request {
                Some(request) => (
                    ca.issue_client_for_request(principal, &name, request, days)?,
                    None,
                ),
                None => {
                    let issued = ca.issue_client(principal, &name, days)?;
                    (issued.cert_pem, Some(issued.key_pem))
                }
            }
        }
    };

    let rel = party.dir();
    let cert_rel = rel.join("cert.pem");
    let key_rel = rel.join("key.pem");
    let stamp = stamp(now);
    let cert_backup = backup(dir, &cert_rel, &stamp)?;
    let key_backup = backup(dir, &key_rel, &stamp)?;
    for r in &mut index.certificates {
        if r.party == *party && r.cert == cert_rel {
            if let Some(b) = &cert_backup {
                r.cert = b.clone();
            }
            if let Some(b) = &key_backup {
                r.key = b.clone();
            }
        }
    }
    let record = index.add(
        party.clone(),
        &cert_pem,
        cert_rel.clone(),
        // The index names no key file for a key the party holds.
        if key_pem.is_some() {
            key_rel.clone()
        } else {
            PathBuf::new()
        },
        now,
    )?;
    index.save(dir, true)?;
    match &key_pem {
        // Key first: whoever watches cert.pem finds the matching key in place.
        Some(key_pem) => write_atomic(&dir.join(&key_rel), key_pem.as_bytes(), true, true)?,
        // A key made here earlier no longer matches the certificate: its
        // backup is what the index names for the earlier certificate.
        None if key_backup.is_some() => {
            std::fs::remove_file(dir.join(&key_rel)).map_err(|source| PkiError::Write {
                path: dir.join(&key_rel),
                source,
            })?;
        }
        None => {}
    }
    write_atomic(&dir.join(&cert_rel), cert_pem.as_bytes(), false, true)?;

    let pdir = dir.join(&rel);
    let signing_key = match party {
        Party::Client(Principal::Unit(_)) => existing_signing_key(&pdir)?,
        _ => None,
    };
    let (client_toml, ca_copy) = match party {
        Party::Client(p) => {
            let path = pdir.join("client.toml");
            if path.exists() {
                (None, None)
            } else if request.is_some() {
                // The party receives this directory: its CA certificate
                // beside its config, and its keys' names as keys init
                // wrote them.
                let ca_copy = pdir.join("ca.pem");
                write_atomic(&ca_copy, ca.cert_pem().as_bytes(), false, true)?;
                let text = client_toml_with_ca(
                    &hub_url(dir),
                    p,
                    matches!(p, Principal::Unit(_)),
                    hub_vkey(dir).as_deref(),
                    "ca.pem",
                )?;
                write_atomic(&path, text.as_bytes(), false, true)?;
                (Some(path), Some(ca_copy))
            } else {
                // A unit's config names its signing key file even before
                // the unit has put its own key there.
                let text = client_toml_text(
                    &hub_url(dir),
                    p,
                    matches!(p, Principal::Unit(_)),
                    hub_vkey(dir).as_deref(),
                )?;
                write_atomic(&path, text.as_bytes(), false, true)?;
                (Some(path), None)
            }
        }
        Party::Hub => (None, None),
    };
    let still_valid = index
        .of(party)
        .filter(|r| r.serial != record.serial && r.is_live(now))
        .cloned()
        .collect();
    Ok(IssueReport {
        party: party.clone(),
        record,
        days,
        shortened_to_ca: shortened,
        dir: pdir,
        backups: cert_backup.into_iter().chain(key_backup).collect(),
        still_valid,
        signing_key,
        from_request: request.is_some(),
        client_toml,
        ca_copy,
        registered: registered(dir, party),
        adopted,
    })
}

/// The names of the current hub certificate, so a renewed one answers to
/// the same; `init`'s names when there is none.
fn hub_names(dir: &Path) -> (Vec<String>, Vec<IpAddr>) {
    let path = dir.join("hub").join("cert.pem");
    if let Ok(pem) = std::fs::read_to_string(&path)
        && let Ok(info) = cert_info(&pem, &path)
        && !(info.dns_names.is_empty() && info.ips.is_empty())
    {
        return (info.dns_names, info.ips);
    }
    (
        HUB_DNS_NAMES.iter().map(|s| (*s).to_string()).collect(),
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    )
}

fn default_name(principal: &Principal) -> String {
    match principal {
        Principal::Unit(id) => UNITS
            .iter()
            .find(|(u, _, _)| u == id)
            .map(|(_, name, _)| (*name).to_string())
            .unwrap_or_else(|| id.clone()),
        Principal::Office(m) => MECHANISMS
            .iter()
            .find(|x| x.id == m)
            .map(|x| format!("Office of the {}", x.name))
            .unwrap_or_else(|| format!("Office of {m}")),
        Principal::Operator(n) => format!("Tongbao operator {n}"),
        Principal::LeadingGroup => LEADING_GROUP_NAME.to_string(),
    }
}

/// `20261115T101500Z`: sorts by time and is safe in any file name.
fn stamp(t: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Copies `rel` (relative to `dir`) to `<name>.<stamp>` beside it, if it
/// exists; returns the backup, relative to `dir`. A copy, not a rename, so
/// the file never disappears under a reader.
fn backup(dir: &Path, rel: &Path, stamp: &str) -> Result<Option<PathBuf>, PkiError> {
    let from = dir.join(rel);
    if !from.exists() {
        return Ok(None);
    }
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut n = 1;
    loop {
        let candidate = rel.with_file_name(if n == 1 {
            format!("{name}.{stamp}")
        } else {
            format!("{name}.{stamp}-{n}")
        });
        if !dir.join(&candidate).exists() {
            std::fs::copy(&from, dir.join(&candidate)).map_err(|source| PkiError::Write {
                path: dir.join(&candidate),
                source,
            })?;
            return Ok(Some(candidate));
        }
        n += 1;
    }
}

/// The unit's signing key in its directory of the CA, if it has one there
/// (an example set's). None is made: the unit makes its own.
fn existing_signing_key(unit_dir: &Path) -> Result<Option<SigningKeyReport>, PkiError> {
    let path = unit_dir.join("signing.key");
    let key = match std::fs::read_to_string(&path) {
        Ok(pem) => SigningKey::from_pem(&pem).map_err(|e| PkiError::SigningKey {
            path: path.clone(),
            reason: e.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PkiError::Read { path, source }),
    };
    Ok(Some(SigningKeyReport {
        path,
        public_key: encode_public_key(key.public_key()),
        key_id: key.key_id().to_string(),
    }))
}

fn hub_config(dir: &Path) -> Option<HubConfig> {
    HubConfig::load(&dir.join("hub.toml")).ok()
}

/// The hub's checkpoint vkey, when hub.toml names a readable checkpoint key.
fn hub_vkey(dir: &Path) -> Option<String> {
    let config = hub_config(dir)?;
    let path = config.resolve(config.hub.checkpoint_key.as_ref()?);
    let key = SigningKey::from_pem(&std::fs::read_to_string(path).ok()?).ok()?;
    super::checkpoint_vkey(&config.hub.log_name, &key).ok()
}

fn hub_url(dir: &Path) -> String {
    hub_config(dir)
        .map(|c| format!("https://{}", c.hub.listen))
        .unwrap_or_else(|| DEFAULT_HUB_URL.to_string())
}

/// Whether `hub.toml`'s registry seed names a unit or an office's mechanism.
fn registered(dir: &Path, party: &Party) -> Option<bool> {
    let config = hub_config(dir)?;
    match party {
        Party::Client(Principal::Unit(id)) => Some(config.units.iter().any(|u| u.id == *id)),
        Party::Client(Principal::Office(m)) => Some(config.mechanisms.iter().any(|x| x.id == *m)),
        _ => None,
    }
}

/// Whether the directory's `hub.toml` reads this directory's `crl.pem`
/// (`None`: there is no `hub.toml` here).
fn hub_uses_crl(dir: &Path) -> Option<bool> {
    let config = hub_config(dir)?;
    let Some(crl) = &config.tls.crl else {
        return Some(false);
    };
    let configured = config.resolve(crl);
    let ours = dir.join(CRL_FILE);
    Some(
        configured == ours
            || matches!(
                (configured.canonicalize(), ours.canonicalize()),
                (Ok(a), Ok(b)) if a == b
            ),
    )
}

/// Which certificates to revoke.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    /// One certificate, by serial (hex, any case, colons allowed).
    Serial(String),
    /// Every certificate of the party that is neither expired nor revoked.
    Party(Party),
}

/// What `revoke` did.
#[derive(Debug, Clone)]
pub struct RevokeReport {
    pub revoked: Vec<CertRecord>,
    pub reason: RevocationReason,
    pub crl: CrlInfo,
    /// Whether `hub.toml` here reads the CRL just written.
    pub hub_uses_crl: Option<bool>,
    pub adopted: bool,
}

/// Marks certificates revoked in the index and rewrites the CRL, valid for
/// `crl_days`.
pub fn revoke(
    dir: &Path,
    target: &RevokeTarget,
    reason: RevocationReason,
    crl_days: i64,
) -> Result<RevokeReport, PkiError> {
    check_pki_dir(dir)?;
    if crl_days < 1 {
        return Err(PkiError::Days(crl_days));
    }
    let _lock = IndexLock::acquire(dir)?;
    let ca = CertificateAuthority::load_dir(dir)?;
    let (mut index, adopted) = load_or_adopt(dir)?;
    let now = now();
    let chosen: Vec<usize> = match target {
        RevokeTarget::Serial(s) => {
            let serial = normalize_serial(s);
            let i = index
                .certificates
                .iter()
                .position(|r| r.serial == serial)
                .ok_or_else(|| PkiError::UnknownSerial(s.clone()))?;
            let r = &index.certificates[i];
            if r.party == Party::Hub {
                return Err(PkiError::HubNotRevocable);
            }
            if let Some(rev) = &r.revoked {
                return Err(PkiError::AlreadyRevoked {
                    serial: r.serial.clone(),
                    party: r.party.to_string(),
                    at: super::index::display_time(rev.at),
                });
            }
            vec![i]
        }
        RevokeTarget::Party(Party::Hub) => return Err(PkiError::HubNotRevocable),
        RevokeTarget::Party(p) => {
            let live: Vec<usize> = index
                .certificates
                .iter()
                .enumerate()
                .filter(|(_, r)| r.party == *p && r.is_live(now))
                .map(|(i, _)| i)
                .collect();
            if live.is_empty() {
                return Err(PkiError::NothingToRevoke(p.to_string()));
            }
            live
        }
    };
    let mut revoked = Vec::new();
    for i in chosen {
        if let Some(r) = index.certificates.get_mut(i) {
            r.revoked = Some(Revocation { at: now, reason });
            revoked.push(r.clone());
        }
    }
    // Recorded first: if the CRL cannot be written, `pki crl` finishes the job.
    index.save(dir, true)?;
    let crl = write_crl(dir, &ca, &mut index, crl_days, now, true).map_err(|e| {
        PkiError::CrlNotWritten {
            dir: dir.to_path_buf(),
            source: Box::new(e),
        }
    })?;
    Ok(RevokeReport {
        revoked,
        reason,
        crl,
        hub_uses_crl: hub_uses_crl(dir),
        adopted,
    })
}

/// What `crl` did.
#[derive(Debug, Clone)]
pub struct CrlReport {
    pub crl: CrlInfo,
    pub hub_uses_crl: Option<bool>,
    pub adopted: bool,
}

/// Rewrites `crl.pem` from the index, valid for `days`, under the next CRL
/// number. Run it before the current CRL's next update, e.g. daily.
pub fn regenerate_crl(dir: &Path, days: i64) -> Result<CrlReport, PkiError> {
    check_pki_dir(dir)?;
    let _lock = IndexLock::acquire(dir)?;
    let ca = CertificateAuthority::load_dir(dir)?;
    let (mut index, adopted) = load_or_adopt(dir)?;
    let crl = write_crl(dir, &ca, &mut index, days, now(), true)?;
    Ok(CrlReport {
        crl,
        hub_uses_crl: hub_uses_crl(dir),
        adopted,
    })
}

/// One certificate as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ListRow {
    /// The party URI (`urn:tongbao:...`).
    pub party: Party,
    pub serial: String,
    pub subject: String,
    #[serde(with = "rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "rfc3339")]
    pub not_after: OffsetDateTime,
    pub days_left: i64,
    pub state: CertState,
    /// The certificate in the party's directory, not a replaced one.
    pub current: bool,
    pub cert: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

/// What `list` found.
#[derive(Debug, Clone)]
pub struct Listing {
    pub rows: Vec<ListRow>,
    /// Certificates in the index, before any filter.
    pub total: usize,
    /// Within this of its end a certificate is `expiring`.
    pub window: Duration,
    /// Only current, unrevoked certificates ending within `window` are listed.
    pub expiring_only: bool,
    /// The directory's CRL, if it has a readable one.
    pub crl: Option<CrlInfo>,
    /// No index yet: these are the certificates found in the directory.
    pub adopted: bool,
}

/// The CA's certificates, by party then expiry. With `expiring`, only the
/// current (not replaced), unrevoked certificates that end within it,
/// expired ones included: what needs renewing.
pub fn list(dir: &Path, expiring: Option<Duration>) -> Result<Listing, PkiError> {
    check_pki_dir(dir)?;
    let (index, adopted) = load_or_adopt(dir)?;
    let now = now();
    let window = expiring.unwrap_or(Duration::days(EXPIRY_WARNING_DAYS));
    let total = index.certificates.len();
    let mut rows: Vec<ListRow> = index
        .certificates
        .into_iter()
        .filter(|r| {
            expiring.is_none()
                || (r.revoked.is_none()
                    && r.is_current()
                    && r.not_after <= now.saturating_add(window))
        })
        .map(|r| ListRow {
            days_left: r.days_left(now),
            state: r.state(now, window),
            current: r.is_current(),
            party: r.party,
            serial: r.serial,
            subject: r.subject,
            not_before: r.not_before,
            not_after: r.not_after,
            cert: r.cert,
            revoked: r.revoked,
        })
        .collect();
    rows.sort_by(|a, b| {
        a.party
            .dir()
            .cmp(&b.party.dir())
            .then(a.not_after.cmp(&b.not_after))
    });
    Ok(Listing {
        rows,
        total,
        window,
        expiring_only: expiring.is_some(),
        crl: read_crl(&dir.join(CRL_FILE)).ok(),
        adopted,
    })
}
