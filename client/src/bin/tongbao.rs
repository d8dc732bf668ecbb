//! `tongbao`: the command line of a departmental system, on the client library.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use std::path::PathBuf;
use tongbao_client::{Client, ClientConfig, Draft, VerifiedEntry};
use tongbao_proto::kinds;

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
        /// notification, early-warning, lead, case-update, statistics, meeting-agenda,
        /// minutes, minutes-consent, escalation, liaison-change, exception-feedback.
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
    },
    /// Follow the inbox live (reconnects and resumes by itself).
    Watch {
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
    /// List units, their keys and the mechanisms.
    Units {
        #[arg(long)]
        json: bool,
    },
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

fn hub_time(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| micros.to_string())
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
        "hub_time": hub_time(e.entry.hub_micros),
        "created": hub_time(m.created_micros),
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
        hub_time(e.entry.hub_micros)
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
        Command::Pull { after, limit, json } => {
            let page = client.pull(after, limit).await?;
            for e in &page.entries {
                print_entry(e, json);
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
        Command::Watch { after, json } => {
            let mut stream = Box::pin(client.subscribe(after));
            while let Some(e) = stream.next().await {
                print_entry(&e?, json);
            }
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
