//! Offline proof bundles: entries with everything needed to check them
//! without the hub — inclusion proofs, the signed checkpoints they lead to,
//! and the hub-signed registry of signing keys.
//!
//! An auditor who trusts only the hub's checkpoint key can verify, with no
//! network, who said what, when, at which position, and who acknowledged it.

use crate::format_micros;
use crate::{Client, ClientError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tongbao_proto::canonical::{leaf_hash, message_digest};
use tongbao_proto::checkpoint::{
    Checkpoint, KeyType, NoteVerifier, open_checkpoint, open_note, parse_note,
};
use tongbao_proto::keys::{RegisteredKey, parse_key_registry, verify_digest};
use tongbao_proto::merkle::check_record;
use tongbao_proto::{Hash, kinds, pb};

/// The format line of a bundle.
pub const BUNDLE_FORMAT: &str = "tongbao-proof-bundle/1";

/// A self-contained proof bundle (JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProofBundle {
    pub format: String,
    /// The hub's checkpoint key the bundle was made against.
    pub hub_key: String,
    /// Hub-signed note listing every unit's signing keys.
    pub key_registry: String,
    /// Per channel, the signed checkpoint the proofs lead to.
    pub checkpoints: BTreeMap<String, String>,
    pub entries: Vec<BundledEntry>,
    /// Base64 DER of the hub's certificate, which binds `hub_key`, and of
    /// the CA certificate that issued it (empty in bundles made against a
    /// hub whose certificate names no checkpoint key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hub_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificate: String,
}

/// What an auditor trusts when checking a bundle.
#[derive(Debug, Clone)]
pub enum BundleTrust {
    /// The hub's checkpoint key (signed-note vkey), from a trusted source.
    HubKey(String),
    /// The exchange CA's certificates (PEM). The hub key is the one the
    /// hub certificate it issued names; if `hub_key` is given too, the two
    /// must be the same.
    Ca {
        ca_pem: Vec<u8>,
        hub_key: Option<String>,
    },
}

/// One entry with its inclusion proof.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundledEntry {
    /// Base64 of the protobuf `Entry`.
    pub entry: String,
    /// Hex leaf hash.
    pub leaf_hash: String,
    pub tree_size: u64,
    /// Hex hashes of the inclusion proof.
    pub proof: Vec<String>,
}

/// Why a bundle does not verify.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle is not a valid proof bundle: {0}")]
    Malformed(String),
    #[error("the bundle was made against hub key {bundle}, not the hub key given ({given})")]
    HubKey { bundle: String, given: String },
    #[error("the checkpoint of channel {channel} is not signed by the hub key: {reason}")]
    Checkpoint { channel: String, reason: String },
    #[error("the bundle's certificates: {0}")]
    Certificate(String),
    #[error(
        "the bundle carries no hub certificate, so the CA cannot vouch for its hub key; verify it with --hub-key instead"
    )]
    NoCertificate,
    #[error("the key registry is not signed by the hub key: {0}")]
    Registry(String),
    #[error("entry {n} of the bundle ({at}): {reason}")]
    Entry {
        n: usize,
        at: String,
        reason: String,
    },
}

fn hex_hash(s: &str) -> Option<Hash> {
    hex::decode(s).ok()?.try_into().ok()
}

impl Client {
    /// Makes a bundle of the given entries (each one this client may see),
    /// proven against checkpoints this client verified.
    pub async fn export_bundle(
        &self,
        entries: &[(String, u64)],
    ) -> Result<ProofBundle, ClientError> {
        let mut checkpoints = BTreeMap::new();
        let mut bundled = Vec::with_capacity(entries.len());
        for (channel, seq) in entries {
            let e = self.get_entry(channel, *seq).await?;
            let cp = self.prove_inclusion(&e).await?;
            let proof = self.inclusion_proof(channel, *seq, cp.size).await?;
            checkpoints.insert(channel.clone(), cp.note.clone());
            bundled.push(BundledEntry {
                entry: STANDARD.encode(e.entry.encode_to_vec()),
                leaf_hash: hex::encode(e.leaf_hash),
                tree_size: cp.size,
                proof: proof.iter().map(hex::encode).collect(),
            });
        }
        // Each channel's proofs must lead to the one checkpoint kept for it.
        for b in &mut bundled {
            let Some(note) = checkpoints.get(&channel_of(b)?) else {
                continue;
            };
            let size = checkpoint_size(note)?;
            if size != b.tree_size {
                let (channel, seq) = position_of(b)?;
                b.proof = self
                    .inclusion_proof(&channel, seq, size)
                    .await?
                    .iter()
                    .map(hex::encode)
                    .collect();
                b.tree_size = size;
            }
        }
        let hub_key = self.pinned_hub_key().await?;
        // The certificates go in only when they vouch for this very key.
        let hub_cert = self.hub_certificate();
        let (hub_certificate, ca_certificate) =
            match crate::hub_cert::issuer_of(&hub_cert, &self.ca_certificates()) {
                Some(ca)
                    if crate::hub_cert::certify_hub_key(
                        &hub_cert,
                        std::slice::from_ref(&ca),
                        tongbao_proto::now_micros(),
                    )
                    .is_ok_and(|c| c.vkey == hub_key) =>
                {
                    (STANDARD.encode(&hub_cert), STANDARD.encode(ca))
                }
                _ => (String::new(), String::new()),
            };
        Ok(ProofBundle {
            format: BUNDLE_FORMAT.into(),
            hub_key,
            key_registry: self.key_registry().await?,
            checkpoints,
            entries: bundled,
            hub_certificate,
            ca_certificate,
        })
    }
}

fn decode_entry(b: &BundledEntry) -> Result<pb::Entry, ClientError> {
    let bytes = STANDARD
        .decode(&b.entry)
        .map_err(|e| ClientError::Integrity {
            channel: String::new(),
            seq: 0,
            reason: e.to_string(),
        })?;
    pb::Entry::decode(bytes.as_slice()).map_err(|e| ClientError::Integrity {
        channel: String::new(),
        seq: 0,
        reason: e.to_string(),
    })
}

fn channel_of(b: &BundledEntry) -> Result<String, ClientError> {
    Ok(decode_entry(b)?.channel)
}

fn position_of(b: &BundledEntry) -> Result<(String, u64), ClientError> {
    let e = decode_entry(b)?;
    Ok((e.channel, e.seq))
}

fn checkpoint_size(note: &str) -> Result<u64, ClientError> {
    let parsed =
        tongbao_proto::checkpoint::parse_note(note).map_err(|e| ClientError::Checkpoint {
            channel: String::new(),
            reason: e.to_string(),
        })?;
    Checkpoint::parse_body(&parsed.text)
        .map(|c| c.size)
        .map_err(|e| ClientError::Checkpoint {
            channel: String::new(),
            reason: e.to_string(),
        })
}

/// Checks a bundle with nothing but the hub's checkpoint key, and says in
/// plain words what it proved, one paragraph per entry.
pub fn verify_bundle(bytes: &[u8], hub_key: &str) -> Result<Vec<String>, BundleError> {
    verify_bundle_with(bytes, &BundleTrust::HubKey(hub_key.to_string()))
}

/// The time the bundle's certificates must have been valid at: the latest
/// hub time of its entries (signed data), or now for a bundle without any.
fn certificate_time(bundle: &ProofBundle) -> i64 {
    bundle
        .entries
        .iter()
        .filter_map(|b| decode_entry(b).ok())
        .map(|e| e.hub_micros)
        .max()
        .unwrap_or_else(tongbao_proto::now_micros)
}

/// Checks the certificates a bundle carries, against each other and, if
/// the auditor trusts a CA, against that CA; returns the certified hub key
/// and a sentence for the report.
fn check_certificates(
    bundle: &ProofBundle,
    trust: &BundleTrust,
) -> Result<Option<(String, String)>, BundleError> {
    use crate::hub_cert::{certificates_from_pem, certify_hub_key, check_self_signed};
    let bad = |e: crate::hub_cert::HubCertError| BundleError::Certificate(e.to_string());
    if bundle.hub_certificate.is_empty() && bundle.ca_certificate.is_empty() {
        return match trust {
            BundleTrust::Ca { .. } => Err(BundleError::NoCertificate),
            BundleTrust::HubKey(_) => Ok(None),
        };
    }
    let decode = |what: &str, b64: &str| {
        STANDARD
            .decode(b64)
            .map_err(|e| BundleError::Certificate(format!("{what}: {e}")))
    };
    let hub_cert = decode("hub certificate", &bundle.hub_certificate)?;
    let ca_cert = decode("CA certificate", &bundle.ca_certificate)?;
    let at = certificate_time(bundle);
    // Every byte of the carried certificates is covered by a signature.
    check_self_signed(&ca_cert).map_err(bad)?;
    let carried = certify_hub_key(&hub_cert, std::slice::from_ref(&ca_cert), at).map_err(bad)?;
    if carried.vkey != bundle.hub_key {
        return Err(BundleError::Certificate(format!(
            "the hub certificate names checkpoint key {}, the bundle {}",
            carried.vkey, bundle.hub_key
        )));
    }
    let BundleTrust::Ca { ca_pem, .. } = trust else {
        return Ok(Some((
            carried.vkey,
            "The bundle's hub certificate names this hub key; give --ca to check that your CA issued it.".into(),
        )));
    };
    let cas = certificates_from_pem(ca_pem).map_err(bad)?;
    let certified = certify_hub_key(&hub_cert, &cas, at).map_err(bad)?;
    let sentence = format!(
        "The hub key {} is certified by the CA \"{}\" in the hub certificate {} (valid {} to {}), checked as of {}.",
        certified.vkey,
        certified.issuer,
        certified.serial,
        format_micros(certified.not_before.saturating_mul(1_000_000)),
        format_micros(certified.not_after.saturating_mul(1_000_000)),
        format_micros(at)
    );
    Ok(Some((certified.vkey, sentence)))
}

/// Checks a bundle against what the auditor trusts (the hub key, or the
/// CA that certifies it), and says in plain words what it proved.
pub fn verify_bundle_with(bytes: &[u8], trust: &BundleTrust) -> Result<Vec<String>, BundleError> {
    let text = std::str::from_utf8(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let bundle: ProofBundle =
        serde_json::from_str(text).map_err(|e| BundleError::Malformed(e.to_string()))?;
    if bundle.format != BUNDLE_FORMAT {
        return Err(BundleError::Malformed(format!(
            "unknown format {:?}",
            bundle.format
        )));
    }
    let certified = check_certificates(&bundle, trust)?;
    let mut report = Vec::new();
    let given = match (trust, &certified) {
        (BundleTrust::HubKey(k), _) => k.clone(),
        (
            BundleTrust::Ca {
                hub_key: Some(k), ..
            },
            _,
        ) => k.clone(),
        (BundleTrust::Ca { hub_key: None, .. }, Some((k, _))) => k.clone(),
        (BundleTrust::Ca { hub_key: None, .. }, None) => return Err(BundleError::NoCertificate),
    };
    if let Some((k, sentence)) = &certified {
        if *k != given {
            return Err(BundleError::HubKey {
                bundle: k.clone(),
                given,
            });
        }
        report.push(sentence.clone());
    }
    let hub_key = given.as_str();
    if bundle.hub_key != hub_key {
        return Err(BundleError::HubKey {
            bundle: bundle.hub_key,
            given: hub_key.to_string(),
        });
    }
    let hub = NoteVerifier::from_vkey(hub_key)
        .map_err(|e| BundleError::Malformed(format!("hub key: {e}")))?;
    let registry = open_note(&bundle.key_registry, std::slice::from_ref(&hub))
        .map_err(|e| BundleError::Registry(e.to_string()))?;
    let keys: Vec<RegisteredKey> =
        parse_key_registry(&registry.text).map_err(|e| BundleError::Registry(e.to_string()))?;
    let mut checkpoints = BTreeMap::new();
    for (channel, note) in &bundle.checkpoints {
        let bad = |reason: String| BundleError::Checkpoint {
            channel: channel.clone(),
            reason,
        };
        let cosigners: Vec<NoteVerifier> = keys
            .iter()
            .filter(|k| k.unit == *channel)
            .filter_map(|k| NoteVerifier::new(&k.unit, KeyType::CosignatureV1, &k.public_key).ok())
            .collect();
        let (cp, verified) =
            open_checkpoint(note, &hub, &cosigners).map_err(|e| bad(e.to_string()))?;
        // A bundle carries only signatures it can check: an unknown one
        // means a line was altered.
        let lines = parse_note(note)
            .map_err(|e| bad(e.to_string()))?
            .signatures
            .len();
        // The hub's own signature, plus each verified cosignature.
        if lines != 1 + verified.len() {
            return Err(bad(format!(
                "{} of its {lines} signatures are by keys neither the hub's nor a registered unit's",
                lines.saturating_sub(1 + verified.len())
            )));
        }
        if cp.origin != format!("{}/{channel}", hub.name()) {
            return Err(bad(format!(
                "origin {:?} is not channel {channel}",
                cp.origin
            )));
        }
        let cosigned: Vec<String> = verified
            .iter()
            .filter_map(|v| {
                v.timestamp.map(|t| {
                    format!(
                        "cosigned by {} at {}",
                        v.name,
                        format_micros(t as i64 * 1_000_000)
                    )
                })
            })
            .collect();
        report.push(format!(
            "Channel {channel}: checkpoint of size {} signed by the hub{}.",
            cp.size,
            if cosigned.is_empty() {
                String::new()
            } else {
                format!(", {}", cosigned.join(", "))
            }
        ));
        checkpoints.insert(channel.clone(), cp);
    }
    let mut pins: Vec<pb::EntryPin> = Vec::new();
    for (n, b) in bundle.entries.iter().enumerate() {
        let fail = |at: String, reason: String| BundleError::Entry { n, at, reason };
        let bytes = STANDARD
            .decode(&b.entry)
            .map_err(|e| fail(String::new(), e.to_string()))?;
        let entry =
            pb::Entry::decode(bytes.as_slice()).map_err(|e| fail(String::new(), e.to_string()))?;
        let at = format!("{}:{}", entry.channel, entry.seq);
        // Canonical: the bundle holds exactly the entry's protobuf encoding.
        if entry.encode_to_vec() != bytes {
            return Err(fail(at, "the entry bytes are not canonical".into()));
        }
        let signed = entry
            .message
            .as_ref()
            .ok_or_else(|| fail(at.clone(), "no message".into()))?;
        let message = signed
            .message
            .as_ref()
            .ok_or_else(|| fail(at.clone(), "no message".into()))?;
        let signature = signed
            .signature
            .as_ref()
            .ok_or_else(|| fail(at.clone(), "no signature".into()))?;
        if message.sender != entry.channel {
            return Err(fail(at, "the sender is not the channel's unit".into()));
        }
        let key = keys
            .iter()
            .find(|k| k.unit == message.sender && k.key_id == signature.key_id)
            .ok_or_else(|| {
                fail(
                    at.clone(),
                    format!(
                        "key {} of {} is not in the registry",
                        signature.key_id, message.sender
                    ),
                )
            })?;
        if let Err(e) = key
            .validity()
            .check_message(&message.sender, &signature.key_id, message)
        {
            return Err(fail(
                at,
                format!(
                    "signed outside its key's interval: {}",
                    crate::client::describe_validity(&e)
                ),
            ));
        }
        verify_digest(&message_digest(message), signature, &key.public_key)
            .map_err(|e| fail(at.clone(), format!("signature: {e}")))?;
        let computed = leaf_hash(&entry);
        if hex_hash(&b.leaf_hash) != Some(computed) {
            return Err(fail(at, "the leaf hash does not match the entry".into()));
        }
        let cp = checkpoints.get(&entry.channel).ok_or_else(|| {
            fail(
                at.clone(),
                "no checkpoint of its channel in the bundle".into(),
            )
        })?;
        if b.tree_size != cp.size {
            return Err(fail(
                at,
                format!(
                    "proof for size {}, checkpoint of size {}",
                    b.tree_size, cp.size
                ),
            ));
        }
        let proof: Option<Vec<Hash>> = b.proof.iter().map(|h| hex_hash(h)).collect();
        let proof = proof.ok_or_else(|| fail(at.clone(), "malformed proof".into()))?;
        check_record(&proof, cp.size, &cp.root, entry.seq, &computed)
            .map_err(|e| fail(at.clone(), format!("not in the signed checkpoint: {e}")))?;
        let mut line = format!(
            "{at}: {} {} signed by {} (key {}) on {}, appended by the hub at {} as entry {} of channel {} for {}; included in the signed checkpoint of size {}.",
            kinds::name(message.kind),
            if message.subject.is_empty() {
                String::new()
            } else {
                format!("{:?}", message.subject)
            },
            message.sender,
            signature.key_id,
            format_micros(message.created_micros),
            format_micros(entry.hub_micros),
            entry.seq,
            entry.channel,
            entry.recipients.join(", "),
            cp.size
        );
        if let Some(a) = &message.acknowledgement {
            let named: Vec<String> = a
                .entries
                .iter()
                .map(|p| format!("{}:{}", p.channel, p.seq))
                .collect();
            line.push_str(&format!(
                " It is a receipt by {} acknowledging {}.",
                message.sender,
                named.join(", ")
            ));
        }
        if let Some(p) = message.exception.as_ref().and_then(|x| x.entry.as_ref()) {
            line.push_str(&format!(
                " It is exception feedback by {} on {}:{}.",
                message.sender, p.channel, p.seq
            ));
        }
        pins.push(pb::EntryPin {
            channel: entry.channel.clone(),
            seq: entry.seq,
            leaf_hash: computed.to_vec(),
        });
        report.push(line);
    }
    // Tie receipts to the entries they acknowledge, by exact leaf hash.
    for b in &bundle.entries {
        let Ok(bytes) = STANDARD.decode(&b.entry) else {
            continue;
        };
        let Ok(entry) = pb::Entry::decode(bytes.as_slice()) else {
            continue;
        };
        let Some(m) = entry.content() else {
            continue;
        };
        for pin in &pins {
            if crate::answers_pin(m, pin) {
                report.push(format!(
                    "{}:{} was acknowledged by {} in its own channel at {}:{} (leaf hash matches).",
                    pin.channel, pin.seq, m.sender, entry.channel, entry.seq
                ));
            }
        }
    }
    Ok(report)
}
