//! What the agent hands out, as JSON: verified entries, push receipts and
//! the office's audit. Names follow the CLI's `--json` output.

use base64::Engine;
use serde_json::{Value, json};
use tongbao_client::{AckOutcome, PushReceipt, VerifiedEntry, format_micros};
use tongbao_proto::{kinds, pb};

/// A verified entry. `verified` is always true: the agent hands out
/// nothing it has not checked (signature, leaf hash, inclusion).
pub fn entry(e: &VerifiedEntry) -> Value {
    let m = e.message();
    let mut v = json!({
        "cursor": e.cursor,
        "channel": e.channel(),
        "seq": e.seq(),
        "leaf_hash": hex::encode(e.leaf_hash),
        "verified": true,
        "sender": m.sender,
        "message_id": m.message_id,
        "kind": kinds::name(m.kind),
        "subject": m.subject,
        "content_type": m.content_type,
        "recipients": e.entry.recipients,
        "hub_time": format_micros(e.entry.hub_micros),
        "hub_micros": e.entry.hub_micros,
        "created": format_micros(m.created_micros),
        "audience": audience(m.audience.as_ref()),
        "labels": labels(m.labels.as_ref()),
    });
    match std::str::from_utf8(&m.body) {
        Ok(text) => v["body"] = text.into(),
        Err(_) => {
            v["body_base64"] = base64::engine::general_purpose::STANDARD
                .encode(&m.body)
                .into();
        }
    }
    if let Some(r) = &m.references {
        if !r.case_id.is_empty() {
            v["case_id"] = r.case_id.clone().into();
        }
        if let Some(to) = &r.reply_to {
            v["reply_to"] = json!({ "channel": to.channel, "seq": to.seq });
        }
    }
    if let Some(a) = &m.acknowledgement {
        v["acknowledges"] = a.entries.iter().map(pin).collect();
    }
    if let Some(x) = &m.exception {
        v["exception"] = json!({
            "entry": x.entry.as_ref().map(pin),
            "problem": problem_name(x.problem),
            "text": x.text,
        });
    }
    v
}

pub fn pin(p: &pb::EntryPin) -> Value {
    json!({ "channel": p.channel, "seq": p.seq, "leaf_hash": hex::encode(&p.leaf_hash) })
}

fn audience(a: Option<&pb::Audience>) -> Value {
    let a = a.cloned().unwrap_or_default();
    json!({
        "units": a.units, "mechanisms": a.mechanisms,
        "offices": a.offices, "leading_group": a.leading_group,
    })
}

fn labels(l: Option<&pb::Labels>) -> Value {
    let l = l.cloned().unwrap_or_default();
    json!({
        "sharing": SHARING.iter().find(|(v, _)| *v as i32 == l.sharing).map(|(_, n)| *n),
        "priority": PRIORITY.iter().find(|(v, _)| *v as i32 == l.priority).map(|(_, n)| *n),
        "ack_deadline": (l.ack_deadline_micros > 0).then(|| format_micros(l.ack_deadline_micros)),
    })
}

/// Sharing conditions by their API names.
pub const SHARING: &[(pb::SharingCondition, &str)] = &[
    (pb::SharingCondition::Unconditional, "unconditional"),
    (pb::SharingCondition::Conditional, "conditional"),
    (pb::SharingCondition::NotShared, "not-shared"),
];

/// Priorities by their API names.
pub const PRIORITY: &[(pb::Priority, &str)] = &[
    (pb::Priority::Routine, "routine"),
    (pb::Priority::Urgent, "urgent"),
    (pb::Priority::Flash, "flash"),
];

/// Exception-feedback problems by their API names.
pub const PROBLEMS: &[(pb::Problem, &str)] = &[
    (pb::Problem::Misaddressed, "misaddressed"),
    (pb::Problem::Unreadable, "unreadable"),
    (pb::Problem::OutsideCompetence, "outside-competence"),
    (pb::Problem::Other, "other"),
];

/// Delivery states by their API names.
pub const STATES: &[(pb::DeliveryState, &str)] = &[
    (pb::DeliveryState::Pending, "pending"),
    (pb::DeliveryState::Fetched, "fetched"),
    (pb::DeliveryState::Acknowledged, "acknowledged"),
    (pb::DeliveryState::Exception, "exception"),
];

fn problem_name(p: i32) -> &'static str {
    PROBLEMS
        .iter()
        .find(|(v, _)| *v as i32 == p)
        .map_or("unspecified", |(_, n)| n)
}

pub fn state_name(s: i32) -> &'static str {
    STATES
        .iter()
        .find(|(v, _)| *v as i32 == s)
        .map_or("unknown", |(_, n)| n)
}

/// The names of a table, for a refusal that lists them.
pub fn names<T>(table: &[(T, &'static str)]) -> String {
    table.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
}

pub fn push_receipt(r: &PushReceipt) -> Value {
    json!({
        "channel": r.channel, "seq": r.seq, "leaf_hash": hex::encode(&r.leaf_hash),
        "recipients": r.recipients, "duplicate": r.duplicate, "message_id": r.message_id,
    })
}

pub fn ack_outcome(a: &AckOutcome) -> Value {
    json!({
        "receipt": a.receipt.as_ref().map(|(c, s, h)| json!({
            "channel": c, "seq": s, "leaf_hash": hex::encode(h),
        })),
        "newly_acknowledged": a.newly_acknowledged,
        "earlier": a.earlier.iter().map(|(e, r)| json!({
            "entry": { "channel": e.channel, "seq": e.seq },
            "receipt": { "channel": r.channel, "seq": r.seq },
        })).collect::<Vec<_>>(),
    })
}

fn time_or_null(micros: i64) -> Value {
    if micros > 0 {
        format_micros(micros).into()
    } else {
        Value::Null
    }
}

/// One audited entry; `answer_check` is each recipient's answer check
/// ("verified", "redacted", "unverified: no answer entry", or null
/// without an answer; an answer that fails its check refuses the call).
pub fn audited(e: &pb::AuditedEntry, answer_check: &[Value]) -> Value {
    json!({
        "channel": e.channel, "seq": e.seq, "leaf_hash": hex::encode(&e.leaf_hash),
        "sender": e.sender, "kind": kinds::name(e.kind), "message_id": e.message_id,
        "hub_time": format_micros(e.hub_micros), "hub_micros": e.hub_micros,
        "deadline": time_or_null(e.deadline_micros),
        "recipients": e.recipients.iter().zip(answer_check).map(|(r, check)| json!({
            "recipient": r.recipient,
            "state": state_name(r.state),
            "overdue": r.overdue,
            "fetched": time_or_null(r.fetched_micros),
            "answered": time_or_null(r.acknowledged_micros),
            "answer": r.answer.as_ref().map(|a| json!({ "channel": a.channel, "seq": a.seq })),
            "answer_check": check,
        })).collect::<Vec<_>>(),
    })
}

pub fn unit_stats(u: &pb::UnitStats) -> Value {
    json!({
        "unit": u.unit, "sent": u.sent, "received": u.received,
        "acknowledged": u.acknowledged, "exceptions": u.exceptions, "overdue": u.overdue,
        "ack_p50_seconds": u.ack_p50_micros as f64 / 1e6,
        "ack_p90_seconds": u.ack_p90_micros as f64 / 1e6,
    })
}
