//! `audit`: the office's delivery audit, as a table, JSON or CSV.

use crate::common::parse_since;
use anyhow::Context;
use clap::Subcommand;
use tongbao_client::{Client, format_micros};
use tongbao_proto::{kinds, pb};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Entries of the office's mechanism with every recipient's state.
    Delivery {
        /// Only entries with a recipient overdue.
        #[arg(long)]
        overdue: bool,
        /// Hub time from which to list: RFC 3339, a duration ago ("24h",
        /// "7d"), or hub microseconds.
        #[arg(long)]
        since: Option<String>,
        /// Hub time before which to list (same forms; a refusal of a
        /// period too large names the one to give).
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        sender: Option<String>,
        #[arg(long)]
        recipient: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        #[arg(long)]
        csv: bool,
    },
    /// Per-unit counts: sent, received, acknowledged, overdue, time to acknowledge.
    Units {
        /// Hub time from which to count (same forms as for `delivery`).
        #[arg(long)]
        since: Option<String>,
        /// Hub time before which to count.
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn state_name(state: i32) -> &'static str {
    match pb::DeliveryState::try_from(state) {
        Ok(pb::DeliveryState::Pending) => "pending",
        Ok(pb::DeliveryState::Fetched) => "fetched",
        Ok(pb::DeliveryState::Acknowledged) => "acknowledged",
        Ok(pb::DeliveryState::Exception) => "exception",
        _ => "unknown",
    }
}

fn time_or_dash(micros: i64) -> String {
    if micros > 0 {
        format_micros(micros)
    } else {
        "-".into()
    }
}

fn audited_json(e: &pb::AuditedEntry) -> serde_json::Value {
    serde_json::json!({
        "channel": e.channel, "seq": e.seq, "leaf_hash": hex::encode(&e.leaf_hash),
        "sender": e.sender, "kind": kinds::name(e.kind), "message_id": e.message_id,
        "hub_time": format_micros(e.hub_micros), "deadline": format_micros(e.deadline_micros),
        "recipients": e.recipients.iter().map(|r| serde_json::json!({
            "recipient": r.recipient, "state": state_name(r.state), "overdue": r.overdue,
            "fetched": (r.fetched_micros > 0).then(|| format_micros(r.fetched_micros)),
            "answered": (r.acknowledged_micros > 0).then(|| format_micros(r.acknowledged_micros)),
            "answer": r.answer.as_ref().map(|a| format!("{}:{}", a.channel, a.seq)),
        })).collect::<Vec<_>>(),
    })
}

pub async fn audit(client: &Client, what: AuditCommand) -> anyhow::Result<()> {
    match what {
        AuditCommand::Delivery {
            overdue,
            since,
            until,
            sender,
            recipient,
            kind,
            limit,
            json,
            csv,
        } => {
            let kind = match kind {
                Some(k) => kinds::parse(&k).with_context(|| format!("unknown kind {k:?}"))? as i32,
                None => 0,
            };
            let r = client
                .audit_deliveries(pb::ListDeliveriesRequest {
                    since_micros: since.as_deref().map(parse_since).transpose()?.unwrap_or(0),
                    until_micros: until.as_deref().map(parse_since).transpose()?.unwrap_or(0),
                    sender: sender.unwrap_or_default(),
                    recipient: recipient.unwrap_or_default(),
                    kind,
                    overdue_only: overdue,
                    limit,
                    ..Default::default()
                })
                .await?;
            if csv {
                println!(
                    "channel,seq,sender,kind,hub_time,deadline,recipient,state,fetched,answered,overdue"
                );
            }
            for e in &r.entries {
                if json {
                    println!("{}", audited_json(e));
                } else if csv {
                    for d in &e.recipients {
                        println!(
                            "{},{},{},{},{},{},{},{},{},{},{}",
                            e.channel,
                            e.seq,
                            e.sender,
                            kinds::name(e.kind),
                            format_micros(e.hub_micros),
                            format_micros(e.deadline_micros),
                            d.recipient,
                            state_name(d.state),
                            time_or_dash(d.fetched_micros),
                            time_or_dash(d.acknowledged_micros),
                            d.overdue
                        );
                    }
                } else {
                    let count = |s: pb::DeliveryState| {
                        e.recipients.iter().filter(|r| r.state == s as i32).count()
                    };
                    let late = e.recipients.iter().filter(|r| r.overdue).count();
                    println!(
                        "{}:{}  {}  from {}  at {}  deadline {}  acknowledged {}/{}  fetched {}  pending {}  exceptions {}  overdue {late}",
                        e.channel,
                        e.seq,
                        kinds::name(e.kind),
                        e.sender,
                        format_micros(e.hub_micros),
                        format_micros(e.deadline_micros),
                        count(pb::DeliveryState::Acknowledged),
                        e.recipients.len(),
                        count(pb::DeliveryState::Fetched),
                        count(pb::DeliveryState::Pending),
                        count(pb::DeliveryState::Exception),
                    );
                    for d in &e.recipients {
                        let flag = if d.overdue { "  OVERDUE" } else { "" };
                        println!(
                            "    {:<20} {:<12} fetched {:<28} answered {}{flag}",
                            d.recipient,
                            state_name(d.state),
                            time_or_dash(d.fetched_micros),
                            time_or_dash(d.acknowledged_micros)
                        );
                    }
                }
            }
            if !json && !csv {
                println!(
                    "{} entries, as of {}",
                    r.entries.len(),
                    format_micros(r.as_of_micros)
                );
            }
        }
        AuditCommand::Units { since, until, json } => {
            let r = client
                .audit_units(pb::UnitSummaryRequest {
                    since_micros: since.as_deref().map(parse_since).transpose()?.unwrap_or(0),
                    until_micros: until.as_deref().map(parse_since).transpose()?.unwrap_or(0),
                    ..Default::default()
                })
                .await?;
            if !json {
                println!(
                    "{:<20} {:>6} {:>9} {:>6} {:>10} {:>8} {:>10} {:>10}",
                    "unit",
                    "sent",
                    "received",
                    "acked",
                    "exceptions",
                    "overdue",
                    "ack p50",
                    "ack p90"
                );
            }
            for u in &r.units {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "unit": u.unit, "sent": u.sent, "received": u.received,
                            "acknowledged": u.acknowledged, "exceptions": u.exceptions, "overdue": u.overdue,
                            "ack_p50_seconds": u.ack_p50_micros as f64 / 1e6,
                            "ack_p90_seconds": u.ack_p90_micros as f64 / 1e6,
                        })
                    );
                } else {
                    println!(
                        "{:<20} {:>6} {:>9} {:>6} {:>10} {:>8} {:>9.1}s {:>9.1}s",
                        u.unit,
                        u.sent,
                        u.received,
                        u.acknowledged,
                        u.exceptions,
                        u.overdue,
                        u.ack_p50_micros as f64 / 1e6,
                        u.ack_p90_micros as f64 / 1e6
                    );
                }
            }
        }
    }
    Ok(())
}
