//! The CA's word on the hub's checkpoint key.
//!
//! The hub's TLS certificate carries its checkpoint key as a SAN URI
//! (`urn:tongbao:checkpoint-key:<vkey>`, written by `tongbao-hub pki`), so
//! the exchange CA certifies the key that signs checkpoints and the key
//! registry. An auditor who holds only the CA certificate can then check a
//! proof bundle offline: CA → hub certificate → checkpoint key → signed
//! checkpoints and key registry → entries and receipts.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::time::Duration;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Why a certificate does not certify a checkpoint key.
#[derive(Debug, thiserror::Error)]
pub enum HubCertError {
    #[error("CA certificate: {0}")]
    Ca(String),
    #[error("hub certificate: {0}")]
    Certificate(String),
    #[error("the hub certificate is not issued by the CA given, or not valid at {at}: {reason}")]
    NotIssued { at: String, reason: String },
    #[error(
        "the hub certificate names no checkpoint key (it was issued before certificates carried one); renew it with `tongbao-hub pki renew --hub`"
    )]
    NoCheckpointKey,
}

/// What a successful check established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedHubKey {
    /// The checkpoint key (signed-note vkey) the CA certified.
    pub vkey: String,
    /// Hex serial of the hub certificate.
    pub serial: String,
    /// Subject of the CA that issued it.
    pub issuer: String,
    /// Validity of the hub certificate, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// The certificates of a PEM file, in DER.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, HubCertError> {
    let ders = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HubCertError::Ca(e.to_string()))?;
    if ders.is_empty() {
        return Err(HubCertError::Ca("no certificate in the file".into()));
    }
    Ok(ders)
}

/// Checks that `hub_cert` (DER) was issued by one of `cas` (DER), was valid
/// at `at_micros` for a TLS server, and names a checkpoint key.
pub fn certify_hub_key(
    hub_cert: &[u8],
    cas: &[Vec<u8>],
    at_micros: i64,
) -> Result<CertifiedHubKey, HubCertError> {
    let anchors = cas
        .iter()
        .map(|der| {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                .map(|a| a.to_owned())
                .map_err(|e| HubCertError::Ca(format!("{e:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let der = CertificateDer::from(hub_cert);
    let end_entity = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| HubCertError::Certificate(format!("{e:?}")))?;
    let at = UnixTime::since_unix_epoch(Duration::from_micros(at_micros.max(0).unsigned_abs()));
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &[],
            at,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| HubCertError::NotIssued {
            at: crate::format_micros(at_micros),
            reason: format!("{e:?}"),
        })?;
    let (_, cert) = X509Certificate::from_der(hub_cert)
        .map_err(|e| HubCertError::Certificate(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| HubCertError::Certificate(e.to_string()))?
        .ok_or(HubCertError::NoCheckpointKey)?;
    let mut keys = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => tongbao_proto::identity::checkpoint_key_of_uri(uri),
        _ => None,
    });
    let vkey = keys.next().ok_or(HubCertError::NoCheckpointKey)?;
    if keys.next().is_some() {
        return Err(HubCertError::Certificate(
            "it names more than one checkpoint key".into(),
        ));
    }
    Ok(CertifiedHubKey {
        vkey: vkey.to_string(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Checks that a CA certificate carried in a bundle signs itself, so that
/// no byte of it can change unnoticed.
pub fn check_self_signed(ca: &[u8]) -> Result<(), HubCertError> {
    let (rest, cert) =
        X509Certificate::from_der(ca).map_err(|e| HubCertError::Ca(e.to_string()))?;
    if !rest.is_empty() {
        return Err(HubCertError::Ca(
            "trailing bytes after the certificate".into(),
        ));
    }
    cert.verify_signature(None)
        .map_err(|e| HubCertError::Ca(format!("its self-signature does not verify: {e}")))
}

/// Of `cas`, the one that issued `hub_cert` (valid now), if any.
pub fn issuer_of(hub_cert: &[u8], cas: &[Vec<u8>]) -> Option<Vec<u8>> {
    let now = tongbao_proto::now_micros();
    cas.iter()
        .find(|ca| certify_hub_key(hub_cert, std::slice::from_ref(*ca), now).is_ok())
        .cloned()
}
