//! `statistics`: a mechanism's report of a period, computed from the
//! hub's records and circulated signed.

use crate::common::{parse_since, print_receipt};
use clap::Subcommand;
use serde_json::{Value, json};
use tongbao_client::{Client, format_micros};
use tongbao_proto::{kinds, pb};

#[derive(Subcommand)]
pub enum StatisticsCommand {
    /// Compute the report of a period from the hub's records.
    Compute {
        #[arg(long, default_value = "")]
        mechanism: String,
        /// RFC 3339 or a duration ago ("30d"); default: from the start.
        #[arg(long)]
        since: Option<String>,
        /// End of the period, at least 1 s ago; default: 1 s ago.
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Compute, sign and circulate the report to the mechanism (lead unit).
    Circulate {
        #[arg(long)]
        mechanism: String,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn report_json(r: &pb::StatisticsReport) -> Value {
    json!({
        "mechanism": r.mechanism, "since": format_micros(r.since_micros), "until": format_micros(r.until_micros),
        "as_of": format_micros(r.as_of_micros),
        "messages": r.messages.iter().map(|c| json!({"unit": c.unit, "kind": kinds::name(c.kind), "count": c.count})).collect::<Vec<_>>(),
        "units": r.units.iter().map(|u| json!({
            "unit": u.unit, "sent": u.sent, "received": u.received, "acknowledged": u.acknowledged,
            "exceptions": u.exceptions, "overdue": u.overdue,
            "ack_p50_ms": u.ack_p50_micros / 1000, "ack_p90_ms": u.ack_p90_micros / 1000,
        })).collect::<Vec<_>>(),
        "overdue": r.overdue.iter().map(|o| json!({
            "entry": o.entry.as_ref().map(|e| format!("{}:{}", e.channel, e.seq)),
            "recipient": o.recipient, "deadline": format_micros(o.deadline_micros),
        })).collect::<Vec<_>>(),
    })
}

fn print_report(r: &pb::StatisticsReport) {
    println!(
        "statistics of {} from {} to {} (as of {})",
        r.mechanism,
        format_micros(r.since_micros),
        format_micros(r.until_micros),
        format_micros(r.as_of_micros)
    );
    for c in &r.messages {
        println!("  {:<20} {:<18} {}", c.unit, kinds::name(c.kind), c.count);
    }
    for u in &r.units {
        println!(
            "  {:<20} sent {} received {} acknowledged {} overdue {}",
            u.unit, u.sent, u.received, u.acknowledged, u.overdue
        );
    }
    println!("  {} overdue deliveries", r.overdue.len());
}

pub async fn statistics(client: &Client, what: StatisticsCommand) -> anyhow::Result<()> {
    let period = |since: Option<String>, until: Option<String>| -> anyhow::Result<(i64, i64)> {
        Ok((
            since.as_deref().map(parse_since).transpose()?.unwrap_or(0),
            until.as_deref().map(parse_since).transpose()?.unwrap_or(0),
        ))
    };
    match what {
        StatisticsCommand::Compute {
            mechanism,
            since,
            until,
            json,
        } => {
            let (s, u) = period(since, until)?;
            let r = client.compute_statistics(&mechanism, s, u, 0).await?;
            if json {
                println!("{}", report_json(&r));
            } else {
                print_report(&r);
            }
        }
        StatisticsCommand::Circulate {
            mechanism,
            since,
            until,
            json,
        } => {
            let (s, u) = period(since, until)?;
            let r = client.compute_statistics(&mechanism, s, u, 0).await?;
            let sent = client.circulate_statistics(r).await?;
            print_receipt("statistics circulated", &sent, json);
        }
    }
    Ok(())
}
