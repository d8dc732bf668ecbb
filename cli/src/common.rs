//! What several command groups share: reading positions and times from
//! flags, and printing entries and push receipts.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tongbao_client::{Client, PushReceipt, VerifiedEntry, format_micros};
use tongbao_proto::{kinds, pb};

/// "24h" (that long ago) or an RFC 3339 time, as unix microseconds.
pub fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1000) as i64);
    }
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: i64 = digits.parse().with_context(|| {
        format!("{s:?} is neither an RFC 3339 time nor a duration like 24h or 7d")
    })?;
    let unit = match &s[digits.len()..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!("unknown duration unit {other:?} in {s:?}; use s, m, h or d"),
    };
    Ok(tongbao_proto::now_micros() - n * unit * 1_000_000)
}

/// CHANNEL:SEQ.
pub fn parse_ref(s: &str) -> anyhow::Result<(String, u64)> {
    let (c, n) = s
        .rsplit_once(':')
        .with_context(|| format!("{s:?} is not CHANNEL:SEQ"))?;
    Ok((
        c.to_string(),
        n.parse()
            .with_context(|| format!("{s:?}: SEQ is not a number"))?,
    ))
}

/// The entry at a cursor of this client's inbox.
pub async fn entry_at(client: &Client, cursor: u64) -> anyhow::Result<VerifiedEntry> {
    client
        .pull(cursor.saturating_sub(1), 1)
        .await?
        .entries
        .into_iter()
        .next()
        .filter(|e| e.cursor == cursor)
        .with_context(|| format!("no entry at cursor {cursor} in this inbox"))
}

/// The pin of the entry at CHANNEL:SEQ, as this client verified it.
pub async fn pin(client: &Client, r: &str) -> anyhow::Result<pb::EntryPin> {
    let (c, n) = parse_ref(r)?;
    Ok(client.get_entry(&c, n).await?.pin())
}

/// CHANNEL:SEQ of a pin, or null.
pub fn pin_text(p: &Option<pb::EntryPin>) -> Value {
    match p {
        Some(p) => format!("{}:{}", p.channel, p.seq).into(),
        None => Value::Null,
    }
}

pub fn entry_json(e: &VerifiedEntry) -> Value {
    let m = e.message();
    let mut v = json!({
        "channel": e.channel(),
        "seq": e.seq(),
        "cursor": e.cursor,
        "sender": m.sender,
        "message_id": m.message_id,
        "kind": kinds::name(m.kind),
        "subject": m.subject,
        "content_type": m.content_type,
        "recipients": e.entry.recipients,
        "hub_time": format_micros(e.entry.hub_micros),
        "created": format_micros(m.created_micros),
        "leaf_hash": hex::encode(e.leaf_hash),
    });
    match std::str::from_utf8(&m.body) {
        Ok(text) => v["body"] = text.into(),
        Err(_) => {
            use base64::Engine;
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
            v["reply_to"] = format!("{}:{}", to.channel, to.seq).into();
        }
    }
    v
}

pub fn print_entry(e: &VerifiedEntry, json: bool) {
    if json {
        println!("{}", entry_json(e));
        return;
    }
    let m = e.message();
    println!(
        "[{}] {}:{}  {}  from {}  to {}  at {}",
        e.cursor,
        e.channel(),
        e.seq(),
        kinds::name(m.kind),
        m.sender,
        e.entry.recipients.join(","),
        format_micros(e.entry.hub_micros)
    );
    println!("    subject: {}", m.subject);
    for line in String::from_utf8_lossy(&m.body).lines() {
        println!("    | {line}");
    }
}

pub fn receipt_json(r: &PushReceipt) -> Value {
    json!({
        "channel": r.channel, "seq": r.seq, "leaf_hash": hex::encode(&r.leaf_hash),
        "recipients": r.recipients, "duplicate": r.duplicate, "message_id": r.message_id,
    })
}

/// A workflow step's push receipt: "WHAT: appended CHANNEL:SEQ for ...".
pub fn print_receipt(what: &str, r: &PushReceipt, json: bool) {
    if json {
        println!("{}", receipt_json(r));
    } else {
        println!(
            "{what}: appended {}:{} for {}",
            r.channel,
            r.seq,
            r.recipients.join(", ")
        );
    }
}
