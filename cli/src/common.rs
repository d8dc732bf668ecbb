//! What several command groups share: reading positions and times from
//! flags, and printing entries, push receipts and workflow views.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tongbao_client::{Client, PushReceipt, VerifiedEntry, format_micros};
use tongbao_proto::{kinds, pb};

/// "24h" (that long ago) or an RFC 3339 time, as unix microseconds.
pub fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1000)
            .with_context(|| format!("{s:?} is out of range"));
    }
    // Hub microseconds, as a refusal names them (a duration has a unit).
    if let Ok(micros) = s.parse::<i64>() {
        if micros < 1_000_000_000_000 {
            bail!(
                "{micros} is too small for hub microseconds (they have 16 digits today); give a duration with its unit, like {micros}d, or an RFC 3339 time"
            );
        }
        return Ok(micros);
    }
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: i64 = digits.parse().with_context(|| {
        format!(
            "{:?} is neither an RFC 3339 time, hub microseconds nor a duration like 24h or 7d",
            tongbao_proto::echo::shown(s)
        )
    })?;
    let unit = match &s[digits.len()..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!(
            "unknown duration unit {:?} in {:?}; use s, m, h or d",
            tongbao_proto::echo::shown(other),
            tongbao_proto::echo::shown(s)
        ),
    };
    n.checked_mul(unit)
        .and_then(|secs| secs.checked_mul(1_000_000))
        .and_then(|ago| tongbao_proto::now_micros().checked_sub(ago))
        .with_context(|| format!("{:?} is too far back", tongbao_proto::echo::shown(s)))
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

/// CODE or CODE=NAME: an organization by unified social credit code,
/// checked here so a mistyped code is caught before signing.
pub fn parse_org(s: &str) -> anyhow::Result<pb::Organization> {
    let (code, name) = s.split_once('=').unwrap_or((s, ""));
    tongbao_proto::credit_code::check(code)?;
    Ok(pb::Organization {
        credit_code: code.to_string(),
        name: name.to_string(),
    })
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
        if !r.organizations.is_empty() {
            v["organizations"] = r
                .organizations
                .iter()
                .map(|o| json!({"credit_code": o.credit_code, "name": o.name}))
                .collect();
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

/// The one shape in which the workflow views (tasks, actions, warnings)
/// print: with `--json` a view's JSON object (a list's under its key, with
/// `next_after` when it is paged), else its text lines.
pub struct Printer<T> {
    pub json: fn(&T) -> Value,
    pub text: fn(&T),
}

impl<T> Printer<T> {
    /// One view.
    pub fn one(&self, view: &T, json: bool) {
        if json {
            println!("{}", (self.json)(view));
        } else {
            (self.text)(view);
        }
    }

    /// A list of views under `key`; `next_after` is the cursor of a paged
    /// list ("" at its end), None for a list that is not paged.
    pub fn list(&self, key: &str, views: &[T], next_after: Option<&str>, json: bool) {
        if json {
            let mut v = json!({ key: views.iter().map(self.json).collect::<Vec<_>>() });
            if let Some(after) = next_after {
                v["next_after"] = after.into();
            }
            println!("{v}");
            return;
        }
        for view in views {
            (self.text)(view);
        }
        if let Some(after) = next_after.filter(|a| !a.is_empty()) {
            println!("more: --after {after}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn times_are_rfc3339_hub_micros_or_a_duration_ago() -> anyhow::Result<()> {
        assert_eq!(parse_since("2026-12-01T00:00:00Z")?, 1_796_083_200_000_000);
        assert_eq!(parse_since("1733000000000000")?, 1_733_000_000_000_000);
        let then = parse_since("2h")?;
        let ago = tongbao_proto::now_micros() - then;
        assert!(
            (7_200_000_000..7_260_000_000).contains(&ago),
            "2h ago is {ago} us ago"
        );
        Ok(())
    }

    #[test]
    fn a_duration_too_far_back_or_malformed_is_refused_not_wrapped() {
        for bad in [
            "9223372036854775807d",
            "5y",
            "h",
            "",
            "yesterday",
            "30",
            "7",
        ] {
            assert!(parse_since(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
