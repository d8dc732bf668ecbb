//! Certificate requests from parties that made their own keys
//! (`tongbao keys init`).
//!
//! The CA issues from a request only after checking it: its signature
//! proves that whoever made it holds the key it carries, and its names are
//! exactly the one party the operator means, so a certificate never
//! certifies a key for a name its holder did not ask for, or for more
//! names than one. The certificate itself is built from the CA's own
//! settings (name, usage, validity), never from what the request asks.

use tongbao_proto::echo::shown;
use tongbao_proto::identity::Principal;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256,
};
use x509_parser::prelude::FromDer;

/// A request larger than this is not one `tongbao keys init` made (those
/// are under 1 KiB); refusing early keeps a wrong file from being parsed.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How many unwanted names a refusal lists before it says how many more.
const NAMES_SHOWN: usize = 4;

/// Why a certificate request was refused. Each says what is wrong with the
/// request, so the operator can tell the party what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error(
        "it is larger than {MAX_REQUEST_BYTES} bytes, so not a certificate request made by `tongbao keys init`"
    )]
    TooLarge,
    #[error("it is not a PEM certificate request (\"-----BEGIN CERTIFICATE REQUEST-----\"): {0}")]
    NotPem(String),
    #[error("it does not parse as a certificate request: {0}")]
    Malformed(String),
    #[error(
        "its key is {found}; Tongbao certificates carry ECDSA P-256 keys signed with SHA-256, as `tongbao keys init` makes them"
    )]
    UnsupportedKey { found: String },
    #[error(
        "it is signed by a key other than the one it carries (it was altered after it was made); ask the party for its request again"
    )]
    BadSignature,
    #[error("it names {named}, not {expected}")]
    OtherParty { named: String, expected: String },
    #[error("it carries extra names: {names}; its only name must be {expected}")]
    ExtraNames { names: String, expected: String },
    #[error("it names no party; its only name must be the SAN URI {expected}")]
    NoParty { expected: String },
}

/// A request that passed every check: the public key its party proved to
/// hold, ready to be certified under the party's name.
#[derive(Debug, Clone)]
pub struct CheckedRequest {
    public_key: rcgen::SubjectPublicKeyInfo,
}

impl CheckedRequest {
    /// The key the certificate is to carry.
    pub fn public_key(&self) -> &rcgen::SubjectPublicKeyInfo {
        &self.public_key
    }
}

/// Checks a PEM certificate request made for `party`: an ECDSA P-256 key,
/// a signature by that key over the request, the party's URI as its only
/// subject alternative name (no other URI, DNS name, IP address, e-mail or
/// any other name), and no subject common name naming another party.
pub fn check_request(pem: &[u8], party: &Principal) -> Result<CheckedRequest, CsrError> {
    if pem.len() > MAX_REQUEST_BYTES {
        return Err(CsrError::TooLarge);
    }
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| CsrError::NotPem(e.to_string()))?;
    if !matches!(
        pem.label.as_str(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(CsrError::NotPem(format!(
            "it holds a \"{}\" block",
            shown(&pem.label)
        )));
    }
    let (rest, request) = X509CertificationRequest::from_der(&pem.contents)
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(format!(
            "{} bytes follow the request",
            rest.len()
        )));
    }
    let info = &request.certification_request_info;
    let spki = &info.subject_pki;
    // The key type first: a signature the verifier cannot check is not a
    // forged one, and the party should hear which key to make instead.
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(CsrError::UnsupportedKey {
            found: describe_key(&spki.algorithm.algorithm, curve.as_ref()),
        });
    }
    if request.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256 {
        return Err(CsrError::UnsupportedKey {
            found: format!(
                "ECDSA P-256 signed with algorithm {}",
                request.signature_algorithm.algorithm
            ),
        });
    }
    request
        .verify_signature()
        .map_err(|_| CsrError::BadSignature)?;
    check_names(&request, party)?;
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    Ok(CheckedRequest { public_key })
}

fn describe_key(
    algorithm: &x509_parser::der_parser::oid::Oid<'_>,
    curve: Option<&x509_parser::der_parser::oid::Oid<'_>>,
) -> String {
    if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        match curve {
            Some(c) => format!("an EC key on curve {c}"),
            None => "an EC key without a named curve".into(),
        }
    } else if *algorithm == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        "an RSA key".into()
    } else if *algorithm == x509_parser::oid_registry::OID_SIG_ED25519 {
        "an Ed25519 key".into()
    } else {
        format!("a key of algorithm {algorithm}")
    }
}

/// The request's names: the party's URI, once or repeated, and nothing else.
fn check_names(request: &X509CertificationRequest<'_>, party: &Principal) -> Result<(), CsrError> {
    let expected = party.uri();
    let mut found = false;
    let mut other_party = None;
    let mut extra = Vec::new();
    // Every extension request, not only the first: names hidden in a second
    // one are names all the same.
    for attribute in request.certification_request_info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(requested) = attribute.parsed_attribute() else {
            continue;
        };
        for extension in &requested.extensions {
            match extension.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::URI(uri) if *uri == expected => found = true,
                            GeneralName::URI(uri) if uri.starts_with("urn:tongbao:") => {
                                other_party.get_or_insert_with(|| uri.to_string());
                            }
                            other => extra.push(describe_name(other)),
                        }
                    }
                }
                ParsedExtension::IssuerAlternativeName(_) => {
                    extra.push("an issuer alternative name".into());
                }
                ParsedExtension::UnsupportedExtension { .. }
                | ParsedExtension::ParseError { .. }
                    if extension.oid
                        == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME =>
                {
                    extra.push("a subject alternative name that does not parse".into());
                }
                // Usages and constraints asked for are not names, and the
                // certificate takes the CA's own, whatever is asked.
                _ => {}
            }
        }
    }
    for cn in request
        .certification_request_info
        .subject
        .iter_common_name()
    {
        let text = cn.as_str().unwrap_or_default();
        if text.starts_with("urn:tongbao:") && text != expected {
            other_party.get_or_insert_with(|| text.to_string());
        }
    }
    if let Some(named) = other_party {
        return Err(CsrError::OtherParty {
            named: shown(&named).to_string(),
            expected,
        });
    }
    if !extra.is_empty() {
        let more = extra.len().saturating_sub(NAMES_SHOWN);
        let mut names = extra
            .into_iter()
            .take(NAMES_SHOWN)
            .collect::<Vec<_>>()
            .join(", ");
        if more > 0 {
            names.push_str(&format!(" and {more} more"));
        }
        return Err(CsrError::ExtraNames { names, expected });
    }
    if !found {
        return Err(CsrError::NoParty { expected });
    }
    Ok(())
}

/// A name as the refusal lists it, its value cut to what a message may repeat.
fn describe_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::URI(uri) => format!("URI {}", shown(uri)),
        GeneralName::DNSName(dns) => format!("DNS {}", shown(dns)),
        GeneralName::RFC822Name(mail) => format!("e-mail {}", shown(mail)),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 | 16 => {
                let ip = <[u8; 4]>::try_from(*bytes)
                    .map(std::net::IpAddr::from)
                    .or_else(|_| <[u8; 16]>::try_from(*bytes).map(std::net::IpAddr::from));
                match ip {
                    Ok(ip) => format!("IP {ip}"),
                    Err(_) => "an IP address".into(),
                }
            }
            _ => "an IP address".into(),
        },
        GeneralName::DirectoryName(dn) => format!("directory name {}", shown(&dn.to_string())),
        GeneralName::OtherName(oid, _) => format!("other name {oid}"),
        GeneralName::RegisteredID(oid) => format!("registered id {oid}"),
        GeneralName::X400Address(_) => "an X.400 address".into(),
        GeneralName::EDIPartyName(_) => "an EDI party name".into(),
        GeneralName::Invalid(..) => "a name that does not parse".into(),
    }
}

#[cfg(test)]
mod tests {
    //! Requests built independently with rcgen, as another tool would make
    //! them, against each check.
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn tax() -> Principal {
        Principal::Unit("tax".into())
    }

    /// A request signed by a fresh P-256 key with the given names.
    fn request(sans: Vec<SanType>, cn: Option<&str>) -> Result<String, rcgen::Error> {
        request_with_key(&KeyPair::generate()?, sans, cn)
    }

    fn request_with_key(
        key: &KeyPair,
        sans: Vec<SanType>,
        cn: Option<&str>,
    ) -> Result<String, rcgen::Error> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.serialize_request(key)?.pem()
    }

    fn uri(s: &str) -> Result<SanType, rcgen::Error> {
        Ok(SanType::URI(s.try_into()?))
    }

    fn refusal(pem: &str, party: &Principal) -> Result<CsrError, String> {
        match check_request(pem.as_bytes(), party) {
            Ok(_) => Err(format!("accepted {pem}")),
            Err(e) => Ok(e),
        }
    }

    #[test]
    fn the_partys_own_request_is_accepted_with_its_key() -> TestResult {
        let key = KeyPair::generate()?;
        let pem = request_with_key(
            &key,
            vec![uri("urn:tongbao:unit:tax")?],
            Some("urn:tongbao:unit:tax"),
        )?;
        let checked = check_request(pem.as_bytes(), &tax())?;
        use rcgen::PublicKeyData;
        assert_eq!(checked.public_key().der_bytes(), key.public_key_raw());
        // A repeated name, and a plain-words common name, are fine too.
        let pem = request(
            vec![uri("urn:tongbao:unit:tax")?, uri("urn:tongbao:unit:tax")?],
            Some("Tax Bureau"),
        )?;
        check_request(pem.as_bytes(), &tax())?;
        // An office and an operator, by their own URIs.
        for p in [
            Principal::Office("fund-supervision".into()),
            Principal::Operator("alice".into()),
        ] {
            check_request(request(vec![uri(&p.uri())?], None)?.as_bytes(), &p)?;
        }
        Ok(())
    }

    #[test]
    fn a_request_naming_another_party_is_refused_naming_both() -> TestResult {
        let e = refusal(
            &request(vec![uri("urn:tongbao:unit:finance")?], None)?,
            &tax(),
        )?;
        assert_eq!(
            e.to_string(),
            "it names urn:tongbao:unit:finance, not urn:tongbao:unit:tax"
        );
        // Beside the right one, another party is still another party.
        let e = refusal(
            &request(
                vec![
                    uri("urn:tongbao:unit:tax")?,
                    uri("urn:tongbao:operator:ops")?,
                ],
                None,
            )?,
            &tax(),
        )?;
        assert!(
            matches!(&e, CsrError::OtherParty { named, .. } if named == "urn:tongbao:operator:ops"),
            "{e}"
        );
        // And so is a common name that names another party.
        let e = refusal(
            &request(
                vec![uri("urn:tongbao:unit:tax")?],
                Some("urn:tongbao:unit:finance"),
            )?,
            &tax(),
        )?;
        assert!(
            e.to_string().contains("names urn:tongbao:unit:finance"),
            "{e}"
        );
        // The same URI is another party for another kind of party.
        let e = refusal(
            &request(vec![uri("urn:tongbao:unit:tax")?], None)?,
            &Principal::Operator("tax".into()),
        )?;
        assert!(
            e.to_string()
                .contains("names urn:tongbao:unit:tax, not urn:tongbao:operator:tax"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn a_request_with_extra_names_is_refused_listing_them() -> TestResult {
        let tax_uri = uri("urn:tongbao:unit:tax")?;
        let cases: Vec<(SanType, &str)> = vec![
            (
                SanType::DnsName("tax.example".try_into()?),
                "DNS tax.example",
            ),
            (SanType::IpAddress("10.0.0.7".parse()?), "IP 10.0.0.7"),
            (
                SanType::Rfc822Name("it@tax.example".try_into()?),
                "e-mail it@tax.example",
            ),
            (uri("https://tax.example/")?, "URI https://tax.example/"),
        ];
        for (extra, words) in cases {
            let e = refusal(&request(vec![tax_uri.clone(), extra], None)?, &tax())?;
            assert!(matches!(e, CsrError::ExtraNames { .. }), "{e}");
            assert!(
                e.to_string().starts_with("it carries extra names: ")
                    && e.to_string().contains(words),
                "{e} should name {words}"
            );
        }
        // Many names: a few are listed, then how many more.
        let mut sans = vec![tax_uri];
        for i in 0..10 {
            sans.push(SanType::DnsName(format!("h{i}.example").try_into()?));
        }
        let e = refusal(&request(sans, None)?, &tax())?.to_string();
        assert!(e.contains("h3.example") && !e.contains("h4.example"), "{e}");
        assert!(e.contains("and 6 more"), "{e}");
        Ok(())
    }

    #[test]
    fn a_request_naming_nobody_is_refused() -> TestResult {
        let e = refusal(&request(vec![], Some("urn:tongbao:unit:tax"))?, &tax())?;
        assert_eq!(
            e,
            CsrError::NoParty {
                expected: "urn:tongbao:unit:tax".into()
            }
        );
        Ok(())
    }

    /// The request's DER, and where in it its public key point lies.
    fn der_and_key_offset(pem: &str) -> Result<(Vec<u8>, usize), Box<dyn std::error::Error>> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())?;
        let der = block.contents.clone();
        let (_, parsed) = X509CertificationRequest::from_der(&der)?;
        let point = parsed
            .certification_request_info
            .subject_pki
            .subject_public_key
            .data
            .to_vec();
        let at = der
            .windows(point.len())
            .position(|w| w == point.as_slice())
            .ok_or("key not found in the request")?;
        Ok((der, at))
    }

    fn to_pem(der: &[u8]) -> String {
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

    #[test]
    fn an_altered_request_is_refused_as_signed_by_another_key() -> TestResult {
        let pem = request(vec![uri("urn:tongbao:unit:tax")?], None)?;
        let (der, key_at) = der_and_key_offset(&pem)?;
        // A byte of the key (past the 0x04 point prefix), and the last byte
        // of the signature.
        for at in [key_at + 10, der.len() - 1] {
            let mut altered = der.clone();
            altered[at] ^= 0x01;
            let e = refusal(&to_pem(&altered), &tax())?;
            assert_eq!(e, CsrError::BadSignature, "byte {at}");
            assert!(
                e.to_string()
                    .contains("signed by a key other than the one it carries")
            );
        }
        // A request whose key is swapped for another's, signature kept.
        let other = request(vec![uri("urn:tongbao:unit:tax")?], None)?;
        let (other_der, other_at) = der_and_key_offset(&other)?;
        let mut swapped = der.clone();
        swapped[key_at..key_at + 65].copy_from_slice(&other_der[other_at..other_at + 65]);
        assert_eq!(refusal(&to_pem(&swapped), &tax())?, CsrError::BadSignature);
        Ok(())
    }

    #[test]
    fn other_key_types_and_other_files_are_refused_saying_what_they_are() -> TestResult {
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
        let e = refusal(
            &request_with_key(&p384, vec![uri("urn:tongbao:unit:tax")?], None)?,
            &tax(),
        )?;
        assert!(matches!(e, CsrError::UnsupportedKey { .. }), "{e}");
        assert!(e.to_string().contains("ECDSA P-256"), "{e}");

        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let e = refusal(
            &request_with_key(&ed, vec![uri("urn:tongbao:unit:tax")?], None)?,
            &tax(),
        )?;
        assert!(e.to_string().contains("an Ed25519 key"), "{e}");

        // A certificate is not a request.
        let cert = CertificateParams::new(vec!["x.example".into()])?
            .self_signed(&KeyPair::generate()?)?
            .pem();
        assert!(matches!(refusal(&cert, &tax())?, CsrError::NotPem(_)));
        assert!(matches!(refusal("hello", &tax())?, CsrError::NotPem(_)));
        let huge = "A".repeat(MAX_REQUEST_BYTES + 1);
        assert_eq!(refusal(&huge, &tax())?, CsrError::TooLarge);
        // Garbage inside a request block.
        let garbage = to_pem(&[0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(matches!(refusal(&garbage, &tax())?, CsrError::Malformed(_)));
        Ok(())
    }
}
