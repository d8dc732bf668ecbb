//! Makes the test vectors of `proto/testdata/` with the crate's own code.
//!
//! Run once, explicitly, to write the files (`cargo test -p tongbao-proto
//! --test vectors -- --ignored write_vectors`); the normal tests then read
//! the committed files and check each value, and check that this generator
//! still makes exactly them, so code, files and `docs/protocol.md` cannot
//! drift apart. Everything is deterministic: fixed seeds, fixed times, and
//! Ed25519 signatures, which are deterministic too.

use super::vector_json::{Result, VectorError, entry_fields_to, message_to, signature_to};
use serde_json::{Value, json};
use tongbao_proto::canonical::{
    GENESIS_PREVIOUS, leaf_bytes, leaf_hash, message_bytes, message_digest, sha256,
    signing_bytes_for_digest,
};
use tongbao_proto::checkpoint::{
    Checkpoint, Cosigner, KeyType, NoteSigner, note_key_id, sign_checkpoint, sign_note,
};
use tongbao_proto::keys::{ED25519_ALGORITHM, SigningKey, key_id, key_registry_text};
use tongbao_proto::merkle::{
    EMPTY_TREE_ROOT, prove_record, prove_records, prove_tree, stored_hashes_for_record, tree_hash,
};
use tongbao_proto::pb::{
    Acknowledgement, AttachmentDigest, Audience, Entry, EntryPin, EntryRef, ExceptionReport, Kind,
    Labels, Message, Organization, Priority, Problem, References, SharingCondition, SignedMessage,
    SigningKey as PbSigningKey, Unit,
};
use tongbao_proto::{Hash, kinds};

/// The note name of the test hub's checkpoint key, hence the prefix of
/// every origin line.
pub const LOG_NAME: &str = "tongbao";

/// The parties with a test key: three units and the hub.
pub const KEY_NAMES: [&str; 4] = ["civil-affairs", "tax", "finance", "hub"];

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the seed follows.
pub const PKCS8_V1_PREFIX: &str = "302e020100300506032b657004220420";

/// The fixed seed of a test key: SHA-256 of a label naming the party.
pub fn seed(name: &str) -> Hash {
    sha256(format!("tongbao/v1 test vector key: {name}").as_bytes())
}

/// The test key of a party, made from its seed through PKCS#8 as any
/// implementer's key file would hold it.
pub fn key(name: &str) -> Result<SigningKey> {
    let der = hex::decode(format!("{PKCS8_V1_PREFIX}{}", hex::encode(seed(name))))
        .map_err(|e| VectorError(e.to_string()))?;
    SigningKey::from_pkcs8(&der).map_err(|e| VectorError(e.to_string()))
}

fn err(e: impl std::fmt::Display) -> VectorError {
    VectorError(e.to_string())
}

/// 2026-12-01T08:00:00Z, the base of every time in the vectors.
const T0: i64 = 1_796_112_000_000_000;
const MINUTE: i64 = 60_000_000;

/// The messages of the vectors, each with the party that signs it, in the
/// order they are appended (later ones pin earlier entries).
struct Built {
    messages: Vec<(String, String, SignedMessage)>,
    entries: Vec<(String, Entry)>,
}

fn notification() -> Message {
    let attachment = "统计表 line 1\n".as_bytes();
    Message {
        message_id: "ca-2026-12-01-0001".into(),
        sender: "civil-affairs".into(),
        kind: Kind::Notification as i32,
        audience: Some(Audience {
            units: vec!["tax".into()],
            mechanisms: vec!["fund-supervision".into()],
            offices: vec!["fund-supervision".into()],
            leading_group: false,
        }),
        labels: Some(Labels {
            sharing: SharingCondition::Conditional as i32,
            priority: Priority::Urgent as i32,
            ack_deadline_micros: T0 + 3 * 24 * 60 * MINUTE,
            classification: tongbao_proto::pb::Classification::Unclassified as i32,
        }),
        subject: "社会组织资金异动 abnormal fund movement".into(),
        body: "请核查附件所列账户。Please check the accounts listed."
            .as_bytes()
            .to_vec()
            .into(),
        content_type: "text/plain; charset=utf-8".into(),
        attachments: vec![
            AttachmentDigest {
                name: "accounts.csv".into(),
                media_type: "text/csv".into(),
                size: attachment.len() as u64,
                sha256: sha256(attachment).to_vec(),
            },
            AttachmentDigest {
                name: "说明.pdf".into(),
                media_type: "application/pdf".into(),
                size: 0,
                sha256: sha256(b"").to_vec(),
            },
        ],
        references: Some(References {
            reply_to: Some(EntryRef {
                channel: "tax".into(),
                seq: 3,
            }),
            case_id: "AJ-2026-0042".into(),
            organizations: Vec::new(),
        }),
        created_micros: T0,
        acknowledgement: None,
        exception: None,
    }
}

/// Absent sub-messages and empty fields, encoded as their defaults.
fn minimal() -> Message {
    Message {
        message_id: "ca-2026-12-01-0002".into(),
        sender: "civil-affairs".into(),
        kind: Kind::EarlyWarning as i32,
        audience: Some(Audience {
            units: vec!["finance".into()],
            ..Default::default()
        }),
        labels: None,
        subject: "预警 warning".into(),
        body: Vec::new().into(),
        content_type: String::new(),
        attachments: Vec::new(),
        references: None,
        created_micros: T0 + MINUTE,
        acknowledgement: None,
        exception: None,
    }
}

/// A notice naming two organizations by credit code, one with its name:
/// the organizations are appended to the canonical bytes.
fn organization_notice() -> Message {
    Message {
        message_id: "tax-2026-12-01-0003".into(),
        sender: "tax".into(),
        kind: Kind::Notification as i32,
        audience: Some(Audience {
            units: vec!["civil-affairs".into()],
            ..Default::default()
        }),
        labels: Some(Labels::default()),
        subject: "欠税 tax arrears".into(),
        body: "两家社会组织欠税。".as_bytes().to_vec().into(),
        content_type: "text/plain; charset=utf-8".into(),
        attachments: Vec::new(),
        references: Some(References {
            reply_to: None,
            case_id: String::new(),
            organizations: vec![
                Organization {
                    credit_code: "51140000MJ0000012R".into(),
                    name: "山西省某某协会".into(),
                },
                Organization {
                    credit_code: "53140000MJY0001237".into(),
                    name: String::new(),
                },
            ],
        }),
        created_micros: T0 + 20 * MINUTE,
        acknowledgement: None,
        exception: None,
    }
}

fn receipt(pinned: &Entry) -> Message {
    Message {
        message_id: "tax-2026-12-01-r1".into(),
        sender: "tax".into(),
        kind: Kind::Receipt as i32,
        audience: Some(Audience {
            units: vec![pinned.channel.clone()],
            ..Default::default()
        }),
        labels: Some(Labels::default()),
        subject: "receipt for 1 entries".into(),
        body: Vec::new().into(),
        content_type: String::new(),
        attachments: Vec::new(),
        references: None,
        created_micros: T0 + 10 * MINUTE,
        acknowledgement: Some(Acknowledgement {
            entries: vec![pin(pinned)],
        }),
        exception: None,
    }
}

fn feedback(pinned: &Entry) -> Message {
    Message {
        message_id: "fin-2026-12-01-x1".into(),
        sender: "finance".into(),
        kind: Kind::ExceptionFeedback as i32,
        audience: Some(Audience {
            units: vec![pinned.channel.clone()],
            offices: vec!["fund-supervision".into()],
            ..Default::default()
        }),
        labels: Some(Labels::default()),
        subject: "异常反馈 exception feedback".into(),
        body: Vec::new().into(),
        content_type: String::new(),
        attachments: Vec::new(),
        references: Some(References {
            reply_to: Some(EntryRef {
                channel: pinned.channel.clone(),
                seq: pinned.seq,
            }),
            case_id: String::new(),
            organizations: Vec::new(),
        }),
        created_micros: T0 + 12 * MINUTE,
        acknowledgement: None,
        exception: Some(ExceptionReport {
            entry: Some(pin(pinned)),
            problem: Problem::OutsideCompetence as i32,
            text: "不属于本单位职责 not within our remit".into(),
        }),
    }
}

fn pin(e: &Entry) -> EntryPin {
    EntryPin {
        channel: e.channel.clone(),
        seq: e.seq,
        leaf_hash: leaf_hash(e).to_vec(),
    }
}

fn entry(
    signed: &SignedMessage,
    seq: u64,
    hub_micros: i64,
    recipients: &[&str],
    previous: Hash,
) -> Entry {
    Entry {
        channel: signed
            .message
            .as_ref()
            .map(|m| m.sender.clone())
            .unwrap_or_default(),
        seq,
        hub_micros,
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        previous_leaf_hash: previous.to_vec(),
        message: Some(signed.clone()),
    }
}

fn build() -> Result<Built> {
    let civil = key("civil-affairs")?;
    let tax = key("tax")?;
    let finance = key("finance")?;
    let n = civil.sign_message(notification());
    // fund-supervision's members are civil-affairs, tax and finance: the
    // mechanism resolves to the members but the sender, plus the office.
    let e0 = entry(
        &n,
        0,
        T0 + 2_000_000,
        &["finance", "office:fund-supervision", "tax"],
        GENESIS_PREVIOUS,
    );
    let w = civil.sign_message(minimal());
    let e1 = entry(&w, 1, T0 + MINUTE + 1_500_000, &["finance"], leaf_hash(&e0));
    let r = tax.sign_message(receipt(&e0));
    let er = entry(
        &r,
        0,
        T0 + 10 * MINUTE + 700_000,
        &["civil-affairs"],
        GENESIS_PREVIOUS,
    );
    let x = finance.sign_message(feedback(&e0));
    let ex = entry(
        &x,
        0,
        T0 + 12 * MINUTE + 900_000,
        &["civil-affairs", "office:fund-supervision"],
        GENESIS_PREVIOUS,
    );
    Ok(Built {
        messages: vec![
            ("notification".into(), "civil-affairs".into(), n),
            ("early-warning-minimal".into(), "civil-affairs".into(), w),
            ("receipt".into(), "tax".into(), r),
            ("exception-feedback".into(), "finance".into(), x),
            (
                "organization-notice".into(),
                "tax".into(),
                tax.sign_message(organization_notice()),
            ),
        ],
        entries: vec![
            ("notification".into(), e0),
            ("early-warning-minimal".into(), e1),
            ("receipt".into(), er),
            ("exception-feedback".into(), ex),
        ],
    })
}

fn keys_file() -> Result<Value> {
    let mut keys = Vec::new();
    for name in KEY_NAMES {
        let k = key(name)?;
        let pk = k.public_key().to_vec();
        let mut key_id_input = b"tongbao/v1/key-id\n".to_vec();
        key_id_input.extend_from_slice(ED25519_ALGORITHM.as_bytes());
        key_id_input.push(0);
        key_id_input.extend_from_slice(&pk);
        // A unit's key cosigns its own channel (type 0x04, name = unit);
        // the hub's key signs checkpoints and the registry (type 0x01).
        let (note_name, key_type) = if name == "hub" {
            (LOG_NAME, KeyType::Ed25519)
        } else {
            (name, KeyType::CosignatureV1)
        };
        let mut note_input = note_name.as_bytes().to_vec();
        note_input.push(b'\n');
        note_input.push(key_type.byte());
        note_input.extend_from_slice(&pk);
        let verifier =
            tongbao_proto::checkpoint::NoteVerifier::new(note_name, key_type, &pk).map_err(err)?;
        keys.push(json!({
            "name": name,
            "seed": hex::encode(seed(name)),
            "pkcs8": format!("{PKCS8_V1_PREFIX}{}", hex::encode(seed(name))),
            "public_key": hex::encode(&pk),
            "algorithm": ED25519_ALGORITHM,
            "key_id_input": hex::encode(&key_id_input),
            "key_id": key_id(ED25519_ALGORITHM, &pk),
            "note_key": {
                "name": note_name,
                "type": key_type.byte(),
                "key_id_input": hex::encode(&note_input),
                "key_id": format!("{:08x}", note_key_id(note_name, key_type, &pk)),
                "vkey": verifier.to_vkey(),
            },
        }));
    }
    Ok(json!({
        "description": "Fixed Ed25519 test keys: seed, PKCS#8 v1 DER, public key, Tongbao key id (with the exact bytes hashed) and signed-note key id and vkey. Never use these keys for anything but tests.",
        "keys": keys,
    }))
}

fn messages_file(b: &Built) -> Value {
    let messages: Vec<Value> = b
        .messages
        .iter()
        .map(|(name, signer, signed)| {
            let m = signed.message.clone().unwrap_or_default();
            let digest = message_digest(&m);
            json!({
                "name": name,
                "kind_name": kinds::name(m.kind),
                "signer": signer,
                "message": message_to(&m),
                "canonical_bytes": hex::encode(message_bytes(&m)),
                "digest": hex::encode(digest),
                "signing_input": hex::encode(signing_bytes_for_digest(&digest)),
                "signature": signed.signature.as_ref().map(signature_to),
            })
        })
        .collect();
    json!({
        "description": "Messages with their canonical bytes, digest = SHA-256(canonical bytes), signing input = \"tongbao/v1/message-signature\\n\" || digest, and the Ed25519 signature of the signing input by the signer's test key (keys.json).",
        "messages": messages,
    })
}

fn entries_file(b: &Built) -> Value {
    let entries: Vec<Value> = b
        .entries
        .iter()
        .map(|(name, e)| {
            json!({
                "name": format!("{}:{}", e.channel, e.seq),
                "entry": entry_fields_to(e, name),
                "leaf_bytes": hex::encode(leaf_bytes(e)),
                "leaf_hash": hex::encode(leaf_hash(e)),
            })
        })
        .collect();
    json!({
        "description": "Channel entries (leaves): the entry fields, the message they carry (by name in messages.json, with its signature), the leaf bytes and leaf hash = SHA-256(0x00 || leaf bytes); and office_view, what offices auditing civil-affairs:0 are shown of the answers to it (exception feedback: whole to the office it copied, without free text to another; the receipt: whole).",
        "entries": entries,
    })
}

/// The first seven leaf inputs of the RFC 6962 / transparency-dev test
/// trees, so the roots can be compared with published ones.
pub const MERKLE_LEAF_INPUTS: [&str; 7] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
];

fn stored_hashes(leaves: &[Hash]) -> Result<Vec<Hash>> {
    let mut stored: Vec<Hash> = Vec::new();
    for (n, h) in leaves.iter().enumerate() {
        let more = stored_hashes_for_record(n as u64, *h, &stored).map_err(err)?;
        stored.extend(more);
    }
    Ok(stored)
}

fn merkle_file() -> Result<Value> {
    let inputs: Vec<Vec<u8>> = MERKLE_LEAF_INPUTS
        .iter()
        .map(|s| hex::decode(s).map_err(err))
        .collect::<Result<_>>()?;
    let leaves: Vec<Hash> = inputs
        .iter()
        .map(|i| tongbao_proto::canonical::leaf_hash_of_bytes(i))
        .collect();
    let stored = stored_hashes(&leaves)?;
    let size = leaves.len() as u64;
    let mut roots = vec![json!({"size": 0, "root": hex::encode(EMPTY_TREE_ROOT)})];
    let mut inclusion = Vec::new();
    let mut consistency = Vec::new();
    for t in 1..=size {
        roots.push(json!({"size": t, "root": hex::encode(tree_hash(t, &stored).map_err(err)?)}));
        for n in 0..t {
            let proof = prove_record(t, n, &stored).map_err(err)?;
            inclusion.push(json!({
                "index": n,
                "tree_size": t,
                "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
            }));
        }
        for n in 1..=t {
            let proof = prove_tree(t, n, &stored).map_err(err)?;
            consistency.push(json!({
                "old_size": n,
                "new_size": t,
                "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
            }));
        }
    }
    let multi_indexes = [1u64, 4, 5];
    let multiproof = prove_records(size, &multi_indexes, &stored).map_err(err)?;
    Ok(json!({
        "description": "An RFC 6962 tree of 7 leaves: leaf inputs and hashes, the root of every size, every inclusion proof and every consistency proof (old size 1 to new size), and one multiproof (GetInclusionProofs with multiproof = true).",
        "leaves": inputs.iter().zip(&leaves).map(|(i, h)| json!({
            "input": hex::encode(i),
            "leaf_hash": hex::encode(h),
        })).collect::<Vec<_>>(),
        "roots": roots,
        "inclusion": inclusion,
        "consistency": consistency,
        "multiproof": {
            "tree_size": size,
            "indexes": multi_indexes,
            "proof": multiproof.iter().map(hex::encode).collect::<Vec<_>>(),
        },
    }))
}

fn notes_file(b: &Built) -> Result<Value> {
    let hub = key("hub")?;
    let signer = NoteSigner::new(LOG_NAME, &hub).map_err(err)?;
    // The checkpoint of civil-affairs' channel after its two entries.
    let leaves: Vec<Hash> = b
        .entries
        .iter()
        .filter(|(_, e)| e.channel == "civil-affairs")
        .map(|(_, e)| leaf_hash(e))
        .collect();
    let stored = stored_hashes(&leaves)?;
    let size = leaves.len() as u64;
    let root = tree_hash(size, &stored).map_err(err)?;
    let checkpoint = Checkpoint::new(format!("{LOG_NAME}/civil-affairs"), size, root);
    let note = sign_checkpoint(&checkpoint, &[signer]).map_err(err)?;
    let civil = key("civil-affairs")?;
    let cosigner = Cosigner::new("civil-affairs", &civil).map_err(err)?;
    let timestamp: u64 = 1_796_112_900;
    let cosignature = cosigner.cosign(&checkpoint, timestamp).map_err(err)?;
    let proofs: Vec<Value> = (0..size)
        .map(|n| {
            Ok(json!({
                "seq": n,
                "leaf_hash": hex::encode(leaves[n as usize]),
                "proof": prove_record(size, n, &stored)
                    .map_err(err)?
                    .iter()
                    .map(hex::encode)
                    .collect::<Vec<_>>(),
            }))
        })
        .collect::<Result<_>>()?;
    let units: Vec<Unit> = ["civil-affairs", "finance", "tax"]
        .iter()
        .map(|name| {
            let k = key(name)?;
            Ok(Unit {
                id: name.to_string(),
                keys: vec![PbSigningKey {
                    algorithm: ED25519_ALGORITHM.into(),
                    key_id: k.key_id().into(),
                    public_key: k.public_key().to_vec(),
                    valid_from_micros: T0 - 30 * 24 * 60 * MINUTE,
                    valid_until_micros: 0,
                }],
                ..Default::default()
            })
        })
        .collect::<Result<_>>()?;
    let registry_text = key_registry_text(&units);
    let registry_note = sign_note(
        &registry_text,
        &[NoteSigner::new(LOG_NAME, &hub).map_err(err)?],
    )
    .map_err(err)?;
    Ok(json!({
        "description": "Signed notes by the hub's test key (note name \"tongbao\"): the checkpoint of channel civil-affairs after the two entries of entries.json, with the inclusion proof of each, a cosignature/v1 line by unit civil-affairs, and the key-registry note of the three test units.",
        "log_name": LOG_NAME,
        "vkey": signer_vkey(&hub)?,
        "checkpoint": {
            "channel": "civil-affairs",
            "origin": checkpoint.origin,
            "size": size,
            "root": hex::encode(root),
            "body": checkpoint.to_body(),
            "note": note,
            "inclusion": proofs,
        },
        "cosignature": {
            "unit": "civil-affairs",
            "timestamp": timestamp,
            "signed_input": format!("cosignature/v1\ntime {timestamp}\n{}", checkpoint.to_body()),
            "line": cosignature,
        },
        "key_registry": {
            "text": registry_text,
            "note": registry_note,
        },
    }))
}

fn signer_vkey(hub: &SigningKey) -> Result<String> {
    Ok(NoteSigner::new(LOG_NAME, hub)
        .and_then(|s| s.verifier())
        .map_err(err)?
        .to_vkey())
}

/// The proof bundle of every entry of entries.json, as `tongbao export`
/// writes one: each channel's checkpoint by the hub's test key, each
/// entry's protobuf encoding and inclusion proof, and the key registry.
fn bundle_file(b: &Built, notes: &Value) -> Result<Value> {
    use base64::Engine;
    use prost::Message as _;
    let hub = key("hub")?;
    let mut checkpoints = serde_json::Map::new();
    let mut entries = Vec::new();
    let mut channels: Vec<&str> = b.entries.iter().map(|(_, e)| e.channel.as_str()).collect();
    channels.dedup();
    for channel in channels {
        let in_channel: Vec<&Entry> = b
            .entries
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.channel == channel)
            .collect();
        let leaves: Vec<Hash> = in_channel.iter().map(|e| leaf_hash(e)).collect();
        let stored = stored_hashes(&leaves)?;
        let size = leaves.len() as u64;
        let root = tree_hash(size, &stored).map_err(err)?;
        let checkpoint = Checkpoint::new(format!("{LOG_NAME}/{channel}"), size, root);
        let signer = NoteSigner::new(LOG_NAME, &hub).map_err(err)?;
        let note = sign_checkpoint(&checkpoint, &[signer]).map_err(err)?;
        checkpoints.insert(channel.to_string(), Value::from(note));
        for e in in_channel {
            let proof = prove_record(size, e.seq, &stored).map_err(err)?;
            entries.push(json!({
                "entry": base64::engine::general_purpose::STANDARD.encode(e.encode_to_vec()),
                "leaf_hash": hex::encode(leaf_hash(e)),
                "tree_size": size,
                "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
            }));
        }
    }
    let registry = notes
        .get("key_registry")
        .and_then(|r| r.get("note"))
        .cloned()
        .ok_or_else(|| VectorError("notes.json has no key registry".into()))?;
    Ok(json!({
        "format": "tongbao-proof-bundle/1",
        "hub_key": signer_vkey(&hub)?,
        "key_registry": registry,
        "checkpoints": checkpoints,
        "entries": entries,
    }))
}

/// What offices auditing civil-affairs:0 see of the answers to it:
/// finance's exception feedback whole by the office it copied, and
/// without its free text by another; tax's receipt whole.
fn office_view(b: &Built) -> Result<Value> {
    let shown_of = |wanted: &str, office: &str| -> Result<Value> {
        let (name, e) = b
            .entries
            .iter()
            .find(|(name, _)| name == wanted)
            .ok_or_else(|| VectorError(format!("no {wanted} entry")))?;
        let seen = tongbao_proto::redact::for_audit(e, office);
        let m = seen
            .entry
            .message
            .as_ref()
            .and_then(|s| s.message.as_ref())
            .ok_or_else(|| VectorError("no message".into()))?;
        Ok(json!({
            "office": office,
            "entry": format!("{}:{}", e.channel, e.seq),
            "of_message": name,
            "message_as_shown": message_to(m),
            "answer_redacted": seen.redacted,
        }))
    };
    Ok(json!({
        "answers": [
            shown_of("exception-feedback", "office:fund-supervision")?,
            shown_of("exception-feedback", "office:joint-enforcement")?,
            shown_of("receipt", "office:fund-supervision")?,
        ],
    }))
}

/// Every vector file, by name, as the generator makes it.
pub fn all() -> Result<Vec<(&'static str, Value)>> {
    let b = build()?;
    let notes = notes_file(&b)?;
    let mut entries = entries_file(&b);
    entries["office_view"] = office_view(&b)?;
    Ok(vec![
        ("keys.json", keys_file()?),
        ("messages.json", messages_file(&b)),
        ("entries.json", entries),
        ("merkle.json", merkle_file()?),
        ("bundle.json", bundle_file(&b, &notes)?),
        ("notes.json", notes),
    ])
}
