//! `tongbao`: the command line of a departmental system, on the client library.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use std::path::PathBuf;
use tongbao_client::{Client, ClientConfig, Draft, VerifiedEntry, format_micros};
use tongbao_proto::{kinds, pb};

#[path = "tongbao/workflow.rs"]
mod workflow;

#[derive(Parser)]
#[command(
    name = "tongbao",
    version,
    about = "Exchange signed messages through a Tongbao hub"
)]
struct Cli {
    /// client.toml of this unit (or office).
    #[arg(long, global = true, env = "TONGBAO_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run; its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Sign and push a message to units, mechanisms, offices or the leading group.
    Push {
        /// Recipient units, comma separated.
        #[arg(long, value_delimiter = ',')]
        to: Vec<String>,
        /// Every member of these mechanisms (joint-enforcement, fund-supervision).
        #[arg(long, value_delimiter = ',')]
        mechanism: Vec<String>,
        /// The office of these mechanisms.
        #[arg(long, value_delimiter = ',')]
        office: Vec<String>,
        /// The leading group.
        #[arg(long)]
        leading_group: bool,
        /// notification, early-warning, lead, case-update, exception-feedback
        /// (workflow kinds have their own commands: meeting, minutes, joint, ...).
        #[arg(long)]
        kind: String,
        #[arg(long)]
        subject: String,
        #[arg(long, conflicts_with = "body_file")]
        body: Option<String>,
        #[arg(long, value_name = "PATH")]
        body_file: Option<PathBuf>,
        /// Message id (idempotency key); a fresh one if omitted.
        #[arg(long)]
        id: Option<String>,
        /// Case id linking entries across units.
        #[arg(long)]
        case: Option<String>,
        /// The entry this answers, CHANNEL:SEQ.
        #[arg(long, value_name = "CHANNEL:SEQ")]
        reply_to: Option<String>,
        #[arg(long, default_value = "text/plain; charset=utf-8")]
        content_type: String,
        #[arg(long)]
        json: bool,
    },
    /// Print a page of the inbox.
    Pull {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
        /// Acknowledge the page with one signed receipt once printed.
        #[arg(long)]
        ack: bool,
    },
    /// Acknowledge inbox entries by cursor, with one signed receipt.
    Ack {
        #[arg(required = true)]
        cursors: Vec<u64>,
    },
    /// Answer an inbox entry with exception feedback (异常反馈) instead of
    /// acknowledging it.
    Feedback {
        cursor: u64,
        /// misaddressed, unreadable, outside-competence or other.
        #[arg(long)]
        problem: String,
        /// Explanation (required for "other").
        #[arg(long, default_value = "")]
        text: String,
    },
    /// The office's delivery audit.
    Audit {
        #[command(subcommand)]
        what: AuditCommand,
    },
    /// Follow the inbox live (reconnects and resumes by itself).
    Watch {
        /// Acknowledge each entry once printed (receipts batched).
        #[arg(long)]
        ack: bool,
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long)]
        json: bool,
    },
    /// Print one entry, CHANNEL:SEQ.
    Get {
        entry: String,
        #[arg(long)]
        json: bool,
    },
    /// Write a self-contained proof bundle of entries (CHANNEL:SEQ ...).
    Export {
        #[arg(long = "entry", required = true, value_name = "CHANNEL:SEQ")]
        entries: Vec<String>,
        #[arg(long, value_name = "BUNDLE")]
        out: PathBuf,
    },
    /// Check a proof bundle offline, trusting the exchange CA (which
    /// certifies the hub's checkpoint key) and/or the hub's checkpoint key.
    Verify {
        bundle: PathBuf,
        /// The exchange CA certificate (PEM): the hub key is then the one
        /// the hub certificate it issued names.
        #[arg(long, value_name = "CA.pem", required_unless_present = "hub_key")]
        ca: Option<PathBuf>,
        /// The hub's checkpoint key (signed-note vkey), from a trusted source.
        #[arg(long)]
        hub_key: Option<String>,
    },
    /// Print the hub's checkpoint key this client has pinned.
    HubKey,
    /// Cosign the latest checkpoint of this unit's own channel.
    Cosign,
    /// List units, their keys and the mechanisms.
    Units {
        #[arg(long)]
        json: bool,
    },
    /// Meetings (会议): proposal, agenda items and comments, settled agenda.
    Meeting {
        #[command(subcommand)]
        what: workflow::MeetingCommand,
    },
    /// Minutes (会议纪要): drafts, consents and objections, issue, verification.
    Minutes {
        #[command(subcommand)]
        what: workflow::MinutesCommand,
    },
    /// Joint notices (联合通报) and escalations (上报) with co-signatures.
    Joint {
        #[command(subcommand)]
        what: workflow::JointCommand,
    },
    /// Report this unit's liaison (联络员) to the offices of its mechanisms.
    Liaison {
        /// The mechanisms whose offices are told, comma separated.
        #[arg(long, value_delimiter = ',')]
        office: Vec<String>,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        title: String,
        #[arg(long)]
        contact: String,
        #[arg(long)]
        json: bool,
    },
    /// The liaison directory as the office sees it.
    Liaisons {
        /// The mechanism (default: the office's own; the lead unit names it).
        #[arg(long, default_value = "")]
        mechanism: String,
        #[arg(long)]
        json: bool,
    },
    /// Statistics (统计) of a mechanism from the hub's records.
    Statistics {
        #[command(subcommand)]
        what: workflow::StatisticsCommand,
    },
    /// Cases (案件): the entries of a case you may see, in order.
    Case {
        #[command(subcommand)]
        what: CaseCommand,
    },
}

#[derive(Subcommand)]
enum CaseCommand {
    /// List the entries of CASE the caller may see.
    Show {
        case: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Entries of the office's mechanism with every recipient's state.
    Delivery {
        /// Only entries with a recipient overdue.
        #[arg(long)]
        overdue: bool,
        /// Hub time from which to list: RFC 3339, or a duration ago ("24h", "7d").
        #[arg(long)]
        since: Option<String>,
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
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// "24h" (that long ago) or an RFC 3339 time, as unix microseconds.
fn parse_since(s: &str) -> anyhow::Result<i64> {
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

async fn audit(client: &Client, what: AuditCommand) -> anyhow::Result<()> {
    match what {
        AuditCommand::Delivery {
            overdue,
            since,
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
        AuditCommand::Units { since, json } => {
            let r = client
                .audit_units(pb::UnitSummaryRequest {
                    since_micros: since.as_deref().map(parse_since).transpose()?.unwrap_or(0),
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

/// The entry at a cursor of this client's inbox.
async fn entry_at(client: &Client, cursor: u64) -> anyhow::Result<VerifiedEntry> {
    client
        .pull(cursor.saturating_sub(1), 1)
        .await?
        .entries
        .into_iter()
        .next()
        .filter(|e| e.cursor == cursor)
        .with_context(|| format!("no entry at cursor {cursor} in this inbox"))
}

fn parse_ref(s: &str) -> anyhow::Result<(String, u64)> {
    let (c, n) = s
        .rsplit_once(':')
        .with_context(|| format!("{s:?} is not CHANNEL:SEQ"))?;
    Ok((
        c.to_string(),
        n.parse()
            .with_context(|| format!("{s:?}: SEQ is not a number"))?,
    ))
}

fn entry_json(e: &VerifiedEntry) -> serde_json::Value {
    let m = e.message();
    let mut v = serde_json::json!({
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

fn print_entry(e: &VerifiedEntry, json: bool) {
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Offline verification needs no hub and no config.
    if let Command::Verify {
        bundle,
        ca,
        hub_key,
    } = &cli.command
    {
        use tongbao_client::bundle::BundleTrust;
        let bytes =
            std::fs::read(bundle).with_context(|| format!("cannot read {}", bundle.display()))?;
        let trust = match (ca, hub_key) {
            (Some(ca), hub_key) => BundleTrust::Ca {
                ca_pem: std::fs::read(ca)
                    .with_context(|| format!("cannot read {}", ca.display()))?,
                hub_key: hub_key.clone(),
            },
            (None, Some(k)) => BundleTrust::HubKey(k.clone()),
            (None, None) => anyhow::bail!("give --ca CA.pem, --hub-key KEY, or both"),
        };
        let report = tongbao_client::bundle::verify_bundle_with(&bytes, &trust)
            .map_err(|e| anyhow::anyhow!("verification FAILED: {e}"))?;
        for line in report {
            println!("{line}");
        }
        println!(
            "Verified: every signature, leaf hash, inclusion proof and checkpoint in the bundle checks out."
        );
        return Ok(());
    }
    let path = cli
        .config
        .context("--config FILE (a client.toml) is required, or set TONGBAO_CONFIG")?;
    let config = ClientConfig::load(&path)?;
    let client = Client::connect(&config).await?;
    match cli.command {
        Command::Push {
            to,
            mechanism,
            office,
            leading_group,
            kind,
            subject,
            body,
            body_file,
            id,
            case,
            reply_to,
            content_type,
            json,
        } => {
            let kind = kinds::parse(&kind).with_context(|| {
                format!(
                    "unknown kind {kind:?}; use one of: {}",
                    kinds::pushable().collect::<Vec<_>>().join(", ")
                )
            })?;
            let body = match (body, body_file) {
                (Some(b), None) => b.into_bytes(),
                (None, Some(p)) => {
                    std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?
                }
                _ => bail!("give the body with --body TEXT or --body-file PATH"),
            };
            if to.is_empty() && mechanism.is_empty() && office.is_empty() && !leading_group {
                bail!(
                    "name an audience: --to UNIT[,UNIT...], --mechanism M, --office M or --leading-group"
                );
            }
            let mut draft = Draft::new(kind, subject, body)
                .to_units(to)
                .with_content_type(content_type);
            for m in mechanism {
                draft = draft.to_mechanism(m);
            }
            for o in office {
                draft = draft.to_office(o);
            }
            if leading_group {
                draft = draft.to_leading_group();
            }
            if let Some(id) = id {
                draft = draft.with_id(id);
            }
            if let Some(c) = case {
                draft = draft.with_case(c);
            }
            if let Some(r) = reply_to {
                let (c, n) = parse_ref(&r)?;
                draft = draft.in_reply_to(c, n);
            }
            let r = client.push(draft).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "channel": r.channel, "seq": r.seq, "leaf_hash": hex::encode(&r.leaf_hash),
                        "recipients": r.recipients, "duplicate": r.duplicate, "message_id": r.message_id,
                    })
                );
            } else {
                let note = if r.duplicate {
                    " (already appended earlier; nothing new written)"
                } else {
                    ""
                };
                println!(
                    "appended {}:{} (message id {}) for {}{note}",
                    r.channel,
                    r.seq,
                    r.message_id,
                    r.recipients.join(", ")
                );
                println!("leaf hash {}", hex::encode(&r.leaf_hash));
            }
        }
        Command::Pull {
            after,
            limit,
            json,
            ack,
        } => {
            let page = client.pull(after, limit).await?;
            for e in &page.entries {
                print_entry(e, json);
            }
            if ack && !page.entries.is_empty() {
                let outcome = client.ack(&page.entries.iter().collect::<Vec<_>>()).await?;
                if !json {
                    println!("acknowledged {} entries", outcome.newly_acknowledged);
                }
            }
            if !json {
                let next = page.next_after(after);
                println!(
                    "{} entries; inbox head {}; continue with --after {next}",
                    page.entries.len(),
                    page.head
                );
            }
        }
        Command::Watch {
            after,
            json,
            ack: false,
        } => {
            let mut stream = Box::pin(client.subscribe(after));
            while let Some(e) = stream.next().await {
                print_entry(&e?, json);
            }
        }
        Command::Watch {
            after,
            json,
            ack: true,
        } => {
            client
                .process(after, |e| {
                    print_entry(&e, json);
                    async { Ok::<(), std::convert::Infallible>(()) }
                })
                .await?;
        }
        Command::Ack { cursors } => {
            let mut entries = Vec::new();
            for c in cursors {
                entries.push(entry_at(&client, c).await?);
            }
            let outcome = client.ack(&entries.iter().collect::<Vec<_>>()).await?;
            match &outcome.receipt {
                Some((channel, seq, _)) => println!(
                    "receipt {channel}:{seq} acknowledges {} entries",
                    outcome.newly_acknowledged
                ),
                None => println!("nothing new: every entry was acknowledged before"),
            }
            for (entry, receipt) in &outcome.earlier {
                println!(
                    "  {}:{} was acknowledged earlier by {}:{}",
                    entry.channel, entry.seq, receipt.channel, receipt.seq
                );
            }
        }
        Command::Audit { what } => audit(&client, what).await?,
        Command::Meeting { what } => workflow::meeting(&client, what).await?,
        Command::Minutes { what } => workflow::minutes(&client, what).await?,
        Command::Joint { what } => workflow::joint(&client, what).await?,
        Command::Liaison {
            office,
            name,
            title,
            contact,
            json,
        } => {
            let change = pb::LiaisonChange {
                name,
                title,
                contact,
            };
            workflow::liaison_report(&client, office, change, json).await?
        }
        Command::Liaisons { mechanism, json } => {
            workflow::liaisons(&client, &mechanism, json).await?
        }
        Command::Statistics { what } => workflow::statistics(&client, what).await?,
        Command::Case {
            what: CaseCommand::Show { case, json },
        } => workflow::case_show(&client, &case, json).await?,
        Command::Export { entries, out } => {
            let refs = entries
                .iter()
                .map(|e| parse_ref(e))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let bundle = client.export_bundle(&refs).await?;
            std::fs::write(&out, serde_json::to_vec_pretty(&bundle)?)
                .with_context(|| format!("cannot write {}", out.display()))?;
            let check = if bundle.hub_certificate.is_empty() {
                format!("--hub-key '{}'", bundle.hub_key)
            } else {
                "--ca CA.pem (the exchange CA certificate)".to_string()
            };
            println!(
                "wrote {} ({} entries, {} checkpoints); check it with: tongbao verify {} {check}",
                out.display(),
                bundle.entries.len(),
                bundle.checkpoints.len(),
                out.display(),
            );
        }
        Command::Verify { .. } => {}
        Command::HubKey => println!("{}", client.pinned_hub_key().await?),
        Command::Cosign => {
            let note = client.cosign_own_channel().await?;
            print!("{note}");
        }
        Command::Feedback {
            cursor,
            problem,
            text,
        } => {
            let problem = match problem.as_str() {
                "misaddressed" => pb::Problem::Misaddressed,
                "unreadable" => pb::Problem::Unreadable,
                "outside-competence" => pb::Problem::OutsideCompetence,
                "other" => pb::Problem::Other,
                other => bail!(
                    "unknown problem {other:?}; use misaddressed, unreadable, outside-competence or other"
                ),
            };
            let entry = entry_at(&client, cursor).await?;
            let r = client.push(Draft::exception(&entry, problem, text)).await?;
            println!(
                "feedback {}:{} on {}:{} sent to {}",
                r.channel,
                r.seq,
                entry.channel(),
                entry.seq(),
                r.recipients.join(", ")
            );
        }
        Command::Get { entry, json } => {
            let (c, n) = parse_ref(&entry)?;
            print_entry(&client.get_entry(&c, n).await?, json);
        }
        Command::Units { json } => {
            let units = client.list_units().await?;
            if json {
                let v: Vec<_> = units
                    .units
                    .iter()
                    .map(|u| {
                        serde_json::json!({
                            "id": u.id, "name": u.name, "name_zh": u.name_zh, "suspended": u.suspended,
                            "keys": u.keys.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let m: Vec<_> = units
                    .mechanisms
                    .iter()
                    .map(|m| serde_json::json!({"id": m.id, "name": m.name, "lead": m.lead, "members": m.members}))
                    .collect();
                println!("{}", serde_json::json!({"units": v, "mechanisms": m}));
            } else {
                for u in &units.units {
                    let keys: Vec<_> = u.keys.iter().map(|k| k.key_id.as_str()).collect();
                    let state = if u.suspended { " (suspended)" } else { "" };
                    println!(
                        "{:<20} {} {}{state}  keys {}",
                        u.id,
                        u.name_zh,
                        u.name,
                        keys.join(",")
                    );
                }
                for m in &units.mechanisms {
                    println!(
                        "{}: lead {}; members {}",
                        m.id,
                        m.lead,
                        m.members.join(", ")
                    );
                }
            }
        }
    }
    Ok(())
}
