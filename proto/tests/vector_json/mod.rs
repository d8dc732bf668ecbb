//! The JSON form of the test vectors in `proto/testdata/`, written down in
//! `docs/protocol.md` ("Test vectors"): protobuf messages as objects with
//! the `.proto` field names, bytes as lowercase hex, enums as their numbers,
//! an absent sub-message as `null`.
//!
//! Reading and writing are both here so that a vector read and written
//! back must equal the file: a field the reader ignored would show.

use serde_json::{Value, json};
use std::path::PathBuf;
use tongbao_proto::pb::{
    Acknowledgement, AttachmentDigest, Audience, Entry, EntryPin, EntryRef, ExceptionReport,
    Labels, Message, Organization, References, Signature,
};

/// Why a vector file could not be read: the file or one of its fields.
#[derive(Debug)]
pub struct VectorError(pub String);

impl std::fmt::Display for VectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VectorError {}

pub type Result<T> = std::result::Result<T, VectorError>;

fn bad(what: &str) -> VectorError {
    VectorError(format!(
        "vector field {what} is missing or of the wrong type"
    ))
}

/// Where the vector files live.
pub fn testdata_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// Loads one vector file.
pub fn load(file: &str) -> Result<Value> {
    let path = testdata_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| VectorError(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| VectorError(format!("{}: {e}", path.display())))
}

/// The text a vector file is written as.
pub fn to_file_text(v: &Value) -> Result<String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| VectorError(e.to_string()))
}

pub fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value> {
    v.get(name).ok_or_else(|| bad(name))
}

pub fn str_of<'a>(v: &'a Value, name: &str) -> Result<&'a str> {
    field(v, name)?.as_str().ok_or_else(|| bad(name))
}

pub fn u64_of(v: &Value, name: &str) -> Result<u64> {
    field(v, name)?.as_u64().ok_or_else(|| bad(name))
}

pub fn i64_of(v: &Value, name: &str) -> Result<i64> {
    field(v, name)?.as_i64().ok_or_else(|| bad(name))
}

pub fn i32_of(v: &Value, name: &str) -> Result<i32> {
    i32::try_from(i64_of(v, name)?).map_err(|_| bad(name))
}

pub fn bool_of(v: &Value, name: &str) -> Result<bool> {
    field(v, name)?.as_bool().ok_or_else(|| bad(name))
}

pub fn hex_of(v: &Value, name: &str) -> Result<Vec<u8>> {
    hex::decode(str_of(v, name)?).map_err(|_| bad(name))
}

pub fn hash_of(v: &Value, name: &str) -> Result<[u8; 32]> {
    hex_of(v, name)?.try_into().map_err(|_| bad(name))
}

pub fn array_of<'a>(v: &'a Value, name: &str) -> Result<&'a Vec<Value>> {
    field(v, name)?.as_array().ok_or_else(|| bad(name))
}

pub fn strs_of(v: &Value, name: &str) -> Result<Vec<String>> {
    array_of(v, name)?
        .iter()
        .map(|s| s.as_str().map(str::to_string).ok_or_else(|| bad(name)))
        .collect()
}

pub fn hashes_of(v: &Value, name: &str) -> Result<Vec<[u8; 32]>> {
    array_of(v, name)?
        .iter()
        .map(|h| {
            h.as_str()
                .and_then(|s| hex::decode(s).ok())
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad(name))
        })
        .collect()
}

/// The sub-message `name`, None when it is `null`.
fn optional<'a>(v: &'a Value, name: &str) -> Result<Option<&'a Value>> {
    let f = field(v, name)?;
    Ok((!f.is_null()).then_some(f))
}

/// A `Message` from its JSON form.
pub fn message_from(v: &Value) -> Result<Message> {
    Ok(Message {
        message_id: str_of(v, "message_id")?.into(),
        sender: str_of(v, "sender")?.into(),
        kind: i32_of(v, "kind")?,
        audience: optional(v, "audience")?
            .map(|a| {
                Ok(Audience {
                    units: strs_of(a, "units")?,
                    mechanisms: strs_of(a, "mechanisms")?,
                    offices: strs_of(a, "offices")?,
                    leading_group: bool_of(a, "leading_group")?,
                })
            })
            .transpose()?,
        labels: optional(v, "labels")?
            .map(|l| {
                Ok(Labels {
                    sharing: i32_of(l, "sharing")?,
                    priority: i32_of(l, "priority")?,
                    ack_deadline_micros: i64_of(l, "ack_deadline_micros")?,
                    classification: i32_of(l, "classification")?,
                })
            })
            .transpose()?,
        subject: str_of(v, "subject")?.into(),
        body: hex_of(v, "body")?.into(),
        content_type: str_of(v, "content_type")?.into(),
        attachments: array_of(v, "attachments")?
            .iter()
            .map(|a| {
                Ok(AttachmentDigest {
                    name: str_of(a, "name")?.into(),
                    media_type: str_of(a, "media_type")?.into(),
                    size: u64_of(a, "size")?,
                    sha256: hex_of(a, "sha256")?,
                })
            })
            .collect::<Result<_>>()?,
        references: optional(v, "references")?
            .map(|r| {
                Ok(References {
                    reply_to: optional(r, "reply_to")?
                        .map(|to| {
                            Ok(EntryRef {
                                channel: str_of(to, "channel")?.into(),
                                seq: u64_of(to, "seq")?,
                            })
                        })
                        .transpose()?,
                    case_id: str_of(r, "case_id")?.into(),
                    organizations: organizations_from(r)?,
                })
            })
            .transpose()?,
        created_micros: i64_of(v, "created_micros")?,
        acknowledgement: optional(v, "acknowledgement")?
            .map(|a| {
                Ok(Acknowledgement {
                    entries: array_of(a, "entries")?
                        .iter()
                        .map(pin_from)
                        .collect::<Result<_>>()?,
                })
            })
            .transpose()?,
        exception: optional(v, "exception")?
            .map(|x| {
                Ok(ExceptionReport {
                    entry: optional(x, "entry")?.map(pin_from).transpose()?,
                    problem: i32_of(x, "problem")?,
                    text: str_of(x, "text")?.into(),
                })
            })
            .transpose()?,
    })
}

/// The organizations of a references object; vectors of messages that
/// name none leave the field out (their JSON predates it).
fn organizations_from(r: &Value) -> Result<Vec<Organization>> {
    match r.get("organizations") {
        None => Ok(Vec::new()),
        Some(_) => array_of(r, "organizations")?
            .iter()
            .map(|o| {
                Ok(Organization {
                    credit_code: str_of(o, "credit_code")?.into(),
                    name: str_of(o, "name")?.into(),
                })
            })
            .collect(),
    }
}

fn pin_from(v: &Value) -> Result<EntryPin> {
    Ok(EntryPin {
        channel: str_of(v, "channel")?.into(),
        seq: u64_of(v, "seq")?,
        leaf_hash: hex_of(v, "leaf_hash")?,
    })
}

/// The JSON form of a `Message`.
pub fn message_to(m: &Message) -> Value {
    json!({
        "message_id": m.message_id,
        "sender": m.sender,
        "kind": m.kind,
        "audience": m.audience.as_ref().map(|a| json!({
            "units": a.units,
            "mechanisms": a.mechanisms,
            "offices": a.offices,
            "leading_group": a.leading_group,
        })),
        "labels": m.labels.as_ref().map(|l| json!({
            "sharing": l.sharing,
            "priority": l.priority,
            "ack_deadline_micros": l.ack_deadline_micros,
            "classification": l.classification,
        })),
        "subject": m.subject,
        "body": hex::encode(&m.body),
        "content_type": m.content_type,
        "attachments": m.attachments.iter().map(|a| json!({
            "name": a.name,
            "media_type": a.media_type,
            "size": a.size,
            "sha256": hex::encode(&a.sha256),
        })).collect::<Vec<_>>(),
        "references": m.references.as_ref().map(references_to),
        "created_micros": m.created_micros,
        "acknowledgement": m.acknowledgement.as_ref().map(|a| json!({
            "entries": a.entries.iter().map(pin_to).collect::<Vec<_>>(),
        })),
        "exception": m.exception.as_ref().map(|x| json!({
            "entry": x.entry.as_ref().map(pin_to),
            "problem": x.problem,
            "text": x.text,
        })),
    })
}

fn pin_to(p: &EntryPin) -> Value {
    json!({"channel": p.channel, "seq": p.seq, "leaf_hash": hex::encode(&p.leaf_hash)})
}

pub fn signature_from(v: &Value) -> Result<Signature> {
    Ok(Signature {
        algorithm: str_of(v, "algorithm")?.into(),
        key_id: str_of(v, "key_id")?.into(),
        signature: hex_of(v, "signature")?,
    })
}

pub fn signature_to(s: &Signature) -> Value {
    json!({
        "algorithm": s.algorithm,
        "key_id": s.key_id,
        "signature": hex::encode(&s.signature),
    })
}

/// An entry's JSON form without its message, which the vector names
/// instead (`"message": "<name in messages.json>"`).
pub fn entry_fields_to(e: &Entry, message_name: &str) -> Value {
    json!({
        "channel": e.channel,
        "seq": e.seq,
        "hub_micros": e.hub_micros,
        "recipients": e.recipients,
        "previous_leaf_hash": hex::encode(&e.previous_leaf_hash),
        "message": message_name,
    })
}

/// The entry fields of [`entry_fields_to`]; the caller attaches the
/// signed message.
pub fn entry_fields_from(v: &Value) -> Result<Entry> {
    Ok(Entry {
        channel: str_of(v, "channel")?.into(),
        seq: u64_of(v, "seq")?,
        hub_micros: i64_of(v, "hub_micros")?,
        recipients: strs_of(v, "recipients")?,
        previous_leaf_hash: hex_of(v, "previous_leaf_hash")?,
        message: None,
    })
}

/// The JSON form of references: `organizations` only when there are any,
/// so the vectors of messages naming none stay as they were.
fn references_to(r: &References) -> Value {
    let mut v = json!({
        "reply_to": r.reply_to.as_ref().map(|to| json!({"channel": to.channel, "seq": to.seq})),
        "case_id": r.case_id,
    });
    if !r.organizations.is_empty()
        && let Some(o) = v.as_object_mut()
    {
        o.insert(
            "organizations".into(),
            r.organizations
                .iter()
                .map(|g| json!({"credit_code": g.credit_code, "name": g.name}))
                .collect(),
        );
    }
    v
}
