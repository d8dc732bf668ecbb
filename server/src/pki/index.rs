//! The CA's memory: `ca-index.json` lists every certificate the CA issued,
//! with its party, files, validity and revocation, so that an operator can
//! revoke by party, see what expires, and rebuild the CRL at any time.
//!
//! The index is the one source of the CRL: `crl.pem` is always rebuilt
//! from it, never edited. Both are replaced atomically (temporary file and
//! rename), so the hub never reads half a file.

use super::{CertificateAuthority, PkiError, write_atomic};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use time::{Duration, OffsetDateTime};
use tongbao_proto::identity::{Principal, check_id};

/// The CA index, in the PKI directory.
pub const INDEX_FILE: &str = "ca-index.json";
/// The CRL, in the PKI directory (`[tls] crl` of the `hub.toml` that `init` writes).
pub const CRL_FILE: &str = "crl.pem";
/// Held while a command changes the index, so two operators cannot
/// interleave and lose a revocation.
const LOCK_FILE: &str = "ca-index.lock";
/// How the index names the hub's own certificate (no certificate carries it).
pub const HUB_PARTY: &str = "urn:tongbao:hub";
const INDEX_FORMAT: u32 = 1;

/// Who a certificate is for: the hub (server certificate) or a party that
/// connects to it (unit, office, operator, leading group).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Party {
    Hub,
    Client(Principal),
}

impl Party {
    /// A unit, with its id checked.
    pub fn unit(id: &str) -> Result<Self, PkiError> {
        check_id("unit", id)?;
        Ok(Self::Client(Principal::Unit(id.to_string())))
    }

    /// The office of a mechanism, with the id checked.
    pub fn office(mechanism: &str) -> Result<Self, PkiError> {
        check_id("mechanism", mechanism)?;
        Ok(Self::Client(Principal::Office(mechanism.to_string())))
    }

    /// An operator, with the name checked.
    pub fn operator(name: &str) -> Result<Self, PkiError> {
        check_id("operator", name)?;
        Ok(Self::Client(Principal::Operator(name.to_string())))
    }

    /// A party URI: a certificate's `urn:tongbao:...` or [`HUB_PARTY`].
    pub fn parse(uri: &str) -> Result<Self, PkiError> {
        if uri == HUB_PARTY {
            Ok(Self::Hub)
        } else {
            Ok(Self::Client(Principal::from_uri(uri)?))
        }
    }

    pub fn uri(&self) -> String {
        match self {
            Self::Hub => HUB_PARTY.to_string(),
            Self::Client(p) => p.uri(),
        }
    }

    /// The party's directory, relative to the PKI directory: where `init`
    /// and `issue` put its files.
    pub fn dir(&self) -> PathBuf {
        match self {
            Self::Hub => PathBuf::from("hub"),
            Self::Client(Principal::Unit(id)) => Path::new("units").join(id),
            Self::Client(Principal::Office(m)) => Path::new("offices").join(m),
            Self::Client(Principal::Operator(n)) => Path::new("operators").join(n),
            Self::Client(Principal::LeadingGroup) => Path::new("leading-group").join("main"),
        }
    }

    /// How the `pki` commands name this party, for the hints they print.
    pub fn cli_flag(&self) -> String {
        match self {
            Self::Hub => "--hub".into(),
            Self::Client(Principal::Unit(id)) => format!("--unit {id}"),
            Self::Client(Principal::Office(m)) => format!("--office {m}"),
            Self::Client(Principal::Operator(n)) => format!("--operator {n}"),
            Self::Client(Principal::LeadingGroup) => "--leading-group".into(),
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hub => f.write_str("the hub"),
            Self::Client(p) => p.fmt(f),
        }
    }
}

impl TryFrom<String> for Party {
    type Error = PkiError;
    fn try_from(uri: String) -> Result<Self, PkiError> {
        Self::parse(&uri)
    }
}

impl From<Party> for String {
    fn from(p: Party) -> String {
        p.uri()
    }
}

/// Why a certificate was revoked (RFC 5280 reason codes an operator uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    Superseded,
    CessationOfOperation,
}

impl RevocationReason {
    pub const ALL: [Self; 4] = [
        Self::Unspecified,
        Self::KeyCompromise,
        Self::Superseded,
        Self::CessationOfOperation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
        }
    }

    fn rcgen(self) -> rcgen::RevocationReason {
        match self {
            Self::Unspecified => rcgen::RevocationReason::Unspecified,
            Self::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            Self::Superseded => rcgen::RevocationReason::Superseded,
            Self::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        }
    }
}

impl FromStr for RevocationReason {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, PkiError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| PkiError::Reason(s.to_string()))
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Timestamps in the index are RFC 3339 text, readable in an editor.
pub(super) mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
    }
}

/// The current time to the second: certificates and CRLs carry no more.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

/// A time as operators read it: `2027-11-15 10:15 UTC`.
pub fn display_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// When and why a certificate was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    #[serde(with = "rfc3339")]
    pub at: OffsetDateTime,
    pub reason: RevocationReason,
}

/// Where a certificate stands at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertState {
    Valid,
    /// Valid, but expires within the warning window.
    Expiring,
    Expired,
    Revoked,
}

impl CertState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Expiring => "expiring",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

impl fmt::Display for CertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// Lowercase hex, no leading zeros (as [`normalize_serial`] makes it).
    pub serial: String,
    pub party: Party,
    /// The certificate's common name.
    pub subject: String,
    /// Files, relative to the PKI directory. A replaced certificate points
    /// at its timestamped backup. `key` is empty for a certificate issued
    /// from the party's own request: its key was never here.
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(with = "rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(with = "rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

impl CertRecord {
    /// The state at `now`, calling it expiring within `warn` of its end.
    pub fn state(&self, now: OffsetDateTime, warn: Duration) -> CertState {
        if self.revoked.is_some() {
            CertState::Revoked
        } else if self.not_after <= now {
            CertState::Expired
        } else if self.not_after <= now.saturating_add(warn) {
            CertState::Expiring
        } else {
            CertState::Valid
        }
    }

    /// Still accepted by the hub: neither expired nor revoked.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.revoked.is_none() && self.not_after > now
    }

    /// Whether this is the certificate in the party's directory (not a
    /// replaced one kept as a backup).
    pub fn is_current(&self) -> bool {
        self.cert == self.party.dir().join("cert.pem")
    }

    /// Whole days until it expires, rounded up (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        let secs = (self.not_after - now).whole_seconds();
        secs.div_euclid(86_400) + i64::from(secs.rem_euclid(86_400) != 0)
    }

    /// Validity length in days, ignoring the day our certificates are
    /// backdated for clock skew; `renew` keeps it by default.
    pub fn validity_days(&self) -> i64 {
        ((self.not_after - self.not_before).whole_days() - 1).max(1)
    }
}

/// Canonical form of a serial as operators type it (any case, with or
/// without colons and leading zeros).
pub fn normalize_serial(serial: &str) -> String {
    let hex: String = serial
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .flat_map(char::to_lowercase)
        .collect();
    let hex = hex.strip_prefix("0x").unwrap_or(&hex);
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.to_string()
    }
}

/// Everything the CA issued, and the number of the last CRL it wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaIndex {
    pub format: u32,
    /// Number of the last CRL written; CRL numbers only grow.
    pub crl_number: u64,
    pub certificates: Vec<CertRecord>,
}

impl Default for CaIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl CaIndex {
    pub fn new() -> Self {
        Self {
            format: INDEX_FORMAT,
            crl_number: 0,
            certificates: Vec::new(),
        }
    }

    /// Reads the index of a PKI directory; `None` when it has none yet.
    pub fn load(dir: &Path) -> Result<Option<Self>, PkiError> {
        let path = dir.join(INDEX_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PkiError::Read { path, source }),
        };
        let index: Self = serde_json::from_str(&text).map_err(|e| PkiError::Index {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if index.format != INDEX_FORMAT {
            return Err(PkiError::Index {
                path,
                reason: format!(
                    "format {} is not the format {INDEX_FORMAT} this tool knows",
                    index.format
                ),
            });
        }
        Ok(Some(index))
    }

    /// Replaces the index file atomically.
    pub fn save(&self, dir: &Path, durable: bool) -> Result<(), PkiError> {
        let path = dir.join(INDEX_FILE);
        let mut text = serde_json::to_string_pretty(self).map_err(|e| PkiError::Index {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        write_atomic(&path, text.as_bytes(), false, durable)
    }

    pub fn find_serial(&self, serial: &str) -> Option<&CertRecord> {
        let serial = normalize_serial(serial);
        self.certificates.iter().find(|r| r.serial == serial)
    }

    /// Every certificate of a party, oldest first.
    pub fn of<'a>(&'a self, party: &'a Party) -> impl Iterator<Item = &'a CertRecord> + 'a {
        self.certificates.iter().filter(move |r| r.party == *party)
    }

    /// Records a certificate the CA just issued.
    pub fn add(
        &mut self,
        party: Party,
        cert_pem: &str,
        cert: PathBuf,
        key: PathBuf,
        issued_at: OffsetDateTime,
    ) -> Result<CertRecord, PkiError> {
        let info = cert_info(cert_pem, &cert)?;
        let record = CertRecord {
            serial: info.serial,
            party,
            subject: info.subject,
            cert,
            key,
            issued_at,
            not_before: info.not_before,
            not_after: info.not_after,
            revoked: None,
        };
        self.certificates.push(record.clone());
        Ok(record)
    }

    /// Builds an index for a PKI directory made before the index existed,
    /// from the `cert.pem` files in the party directories that this CA
    /// issued, and the revocations of an existing `crl.pem`.
    pub fn adopt(dir: &Path, ca_pem: &str) -> Result<Self, PkiError> {
        let ca = cert_info(ca_pem, &dir.join("ca.pem"))?;
        let mut candidates = vec![PathBuf::from("hub")];
        for group in ["units", "offices", "leading-group", "operators"] {
            let Ok(entries) = std::fs::read_dir(dir.join(group)) else {
                continue;
            };
            for entry in entries.flatten() {
                candidates.push(Path::new(group).join(entry.file_name()));
            }
        }
        candidates.sort();
        let mut index = Self::new();
        for rel in candidates {
            let cert = rel.join("cert.pem");
            let Ok(pem) = std::fs::read_to_string(dir.join(&cert)) else {
                continue;
            };
            let info = cert_info(&pem, &dir.join(&cert))?;
            if info.issuer != ca.subject_der {
                continue;
            }
            let party = if rel == Path::new("hub") {
                Party::Hub
            } else {
                match info.party {
                    Some(p) => p,
                    None => continue,
                }
            };
            index.certificates.push(CertRecord {
                serial: info.serial,
                party,
                subject: info.subject,
                key: rel.join("key.pem"),
                cert,
                issued_at: info.not_before,
                not_before: info.not_before,
                not_after: info.not_after,
                revoked: None,
            });
        }
        if let Ok(crl) = read_crl(&dir.join(CRL_FILE)) {
            index.crl_number = crl.number;
            for r in &mut index.certificates {
                if crl.revoked.contains(&r.serial) {
                    r.revoked = Some(Revocation {
                        at: crl.this_update,
                        reason: RevocationReason::Unspecified,
                    });
                }
            }
        }
        Ok(index)
    }
}

/// Loads the index, or adopts the directory's certificates when there is
/// none yet; the flag says it was adopted (and not yet saved).
pub fn load_or_adopt(dir: &Path) -> Result<(CaIndex, bool), PkiError> {
    if let Some(index) = CaIndex::load(dir)? {
        return Ok((index, false));
    }
    let path = dir.join("ca.pem");
    let ca_pem =
        std::fs::read_to_string(&path).map_err(|source| PkiError::Read { path, source })?;
    Ok((CaIndex::adopt(dir, &ca_pem)?, true))
}

/// Refuses a directory without a CA before anything is written into it.
pub fn check_pki_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.join("ca.pem").is_file() {
        Ok(())
    } else {
        Err(PkiError::NotPkiDir(dir.to_path_buf()))
    }
}

/// Exclusive right to change a PKI directory's index, released on drop.
pub struct IndexLock {
    path: PathBuf,
}

impl IndexLock {
    pub fn acquire(dir: &Path) -> Result<Self, PkiError> {
        use std::io::Write;
        let path = dir.join(LOCK_FILE);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                let _ = writeln!(f, "{}", std::process::id());
                Ok(Self { path })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(PkiError::Locked(path)),
            Err(source) => Err(PkiError::Write { path, source }),
        }
    }
}

impl Drop for IndexLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the index needs from a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub serial: String,
    pub subject: String,
    /// The Tongbao party its SAN URI names, if any (none for the hub).
    pub party: Option<Party>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// DER of the issuer and subject names, to match certificates to a CA.
    pub issuer: Vec<u8>,
    pub subject_der: Vec<u8>,
}

/// Parses the first certificate of a PEM text (`path` only names it in errors).
pub fn cert_info(pem: &str, path: &Path) -> Result<CertInfo, PkiError> {
    use x509_parser::extensions::GeneralName;
    let bad = |reason: String| PkiError::Certificate {
        path: path.to_path_buf(),
        reason,
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let time = |t: &x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|e| bad(e.to_string()))
    };
    let mut info = CertInfo {
        serial: normalize_serial(&hex::encode(cert.tbs_certificate.raw_serial())),
        subject: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string(),
        party: None,
        dns_names: Vec::new(),
        ips: Vec::new(),
        not_before: time(&cert.validity().not_before)?,
        not_after: time(&cert.validity().not_after)?,
        issuer: cert.issuer().as_raw().to_vec(),
        subject_der: cert.subject().as_raw().to_vec(),
    };
    if let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?
    {
        for name in &san.value.general_names {
            match name {
                // The hub's checkpoint key is not a party.
                GeneralName::URI(uri)
                    if tongbao_proto::identity::checkpoint_key_of_uri(uri).is_some() => {}
                GeneralName::URI(uri) if uri.starts_with("urn:tongbao:") => {
                    info.party = Some(Party::parse(uri)?);
                }
                GeneralName::DNSName(d) => info.dns_names.push((*d).to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        info.ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        info.ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(info)
}

/// What a CRL says.
#[derive(Debug, Clone)]
pub struct CrlInfo {
    pub path: PathBuf,
    pub number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: Option<OffsetDateTime>,
    /// Serials, as in the index.
    pub revoked: Vec<String>,
}

/// Reads a PEM CRL.
pub fn read_crl(path: &Path) -> Result<CrlInfo, PkiError> {
    let bad = |reason: String| PkiError::Crl {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text).map_err(|e| bad(e.to_string()))?;
    let (_, crl) = x509_parser::parse_x509_crl(&pem.contents).map_err(|e| bad(e.to_string()))?;
    let number = match crl.crl_number() {
        Some(n) => {
            let bytes = n.to_bytes_be();
            if bytes.len() > 8 {
                return Err(bad("CRL number does not fit 64 bits".into()));
            }
            bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        }
        None => 0,
    };
    let time = |t: x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|e| bad(e.to_string()))
    };
    Ok(CrlInfo {
        path: path.to_path_buf(),
        number,
        this_update: time(crl.last_update())?,
        next_update: crl.next_update().map(time).transpose()?,
        revoked: crl
            .iter_revoked_certificates()
            .map(|r| normalize_serial(&hex::encode(r.raw_serial())))
            .collect(),
    })
}

/// Rebuilds `crl.pem` from the index, valid for `days` from `now`, under
/// the next CRL number. The number is saved in the index first, so a
/// failure can skip a number but never reuse one. Revoked certificates that
/// have expired are left out: the hub refuses them anyway.
pub(super) fn write_crl(
    dir: &Path,
    ca: &CertificateAuthority,
    index: &mut CaIndex,
    days: i64,
    now: OffsetDateTime,
    durable: bool,
) -> Result<CrlInfo, PkiError> {
    if days < 1 {
        return Err(PkiError::Days(days));
    }
    index.crl_number += 1;
    index.save(dir, durable)?;
    let mut revoked = Vec::new();
    let mut serials = Vec::new();
    for r in &index.certificates {
        let Some(rev) = &r.revoked else { continue };
        if r.not_after <= now {
            continue;
        }
        let hex_serial = if r.serial.len() % 2 == 1 {
            format!("0{}", r.serial)
        } else {
            r.serial.clone()
        };
        let bytes = hex::decode(&hex_serial).map_err(|e| PkiError::Index {
            path: dir.join(INDEX_FILE),
            reason: format!("serial {:?}: {e}", r.serial),
        })?;
        revoked.push(rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(&bytes),
            revocation_time: rev.at,
            reason_code: Some(rev.reason.rcgen()),
            invalidity_date: None,
        });
        serials.push(r.serial.clone());
    }
    let next_update = now + Duration::days(days);
    let pem = ca.crl(revoked, index.crl_number, now, next_update)?;
    let path = dir.join(CRL_FILE);
    write_atomic(&path, pem.as_bytes(), false, durable)?;
    Ok(CrlInfo {
        path,
        number: index.crl_number,
        this_update: now,
        next_update: Some(next_update),
        revoked: serials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_however_they_are_typed() {
        assert_eq!(normalize_serial("00:5F:3a"), "5f3a");
        assert_eq!(normalize_serial("0x5f3A"), "5f3a");
        assert_eq!(normalize_serial("000"), "0");
    }

    #[test]
    fn parties_round_trip_through_their_uri() -> Result<(), PkiError> {
        for p in [
            Party::Hub,
            Party::unit("tax")?,
            Party::office("fund-supervision")?,
            Party::operator("ops")?,
            Party::Client(Principal::LeadingGroup),
        ] {
            assert_eq!(Party::parse(&p.uri())?, p);
        }
        assert!(Party::parse("urn:tongbao:robot:x").is_err());
        assert!(Party::unit("Tax!").is_err());
        Ok(())
    }

    #[test]
    fn days_left_rounds_up() {
        let now = now();
        let r = CertRecord {
            serial: "1".into(),
            party: Party::Hub,
            subject: String::new(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            issued_at: now,
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(10),
            revoked: None,
        };
        assert_eq!(r.days_left(now), 10);
        assert_eq!(r.days_left(now + Duration::seconds(5)), 10);
        assert_eq!(r.validity_days(), 10);
        assert_eq!(r.state(now, Duration::days(30)), CertState::Expiring);
        assert_eq!(r.state(now, Duration::days(5)), CertState::Valid);
        assert_eq!(
            r.state(now + Duration::days(11), Duration::days(5)),
            CertState::Expired
        );
    }
}
