//! `push` and `feedback`: messages this unit signs and sends.

use crate::common::{entry_at, parse_org, parse_ref, receipt_json};
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use tongbao_client::{Client, Draft};
use tongbao_proto::{kinds, pb};

#[derive(Args)]
pub struct PushArgs {
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
    /// An organization the message is about: its unified social credit
    /// code, optionally with its name (CODE=NAME); repeat for several.
    #[arg(long, value_name = "CODE[=NAME]")]
    org: Vec<String>,
    #[arg(long, default_value = "text/plain; charset=utf-8")]
    content_type: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct FeedbackArgs {
    cursor: u64,
    /// What is wrong with the entry.
    #[arg(long)]
    problem: Problem,
    /// Explanation (required for "other").
    #[arg(long, default_value = "")]
    text: String,
}

/// What exception feedback reports.
#[derive(Clone, Copy, ValueEnum)]
enum Problem {
    Misaddressed,
    Unreadable,
    OutsideCompetence,
    Other,
}

impl From<Problem> for pb::Problem {
    fn from(p: Problem) -> Self {
        match p {
            Problem::Misaddressed => pb::Problem::Misaddressed,
            Problem::Unreadable => pb::Problem::Unreadable,
            Problem::OutsideCompetence => pb::Problem::OutsideCompetence,
            Problem::Other => pb::Problem::Other,
        }
    }
}

pub async fn push(client: &Client, a: PushArgs) -> anyhow::Result<()> {
    let kind = kinds::parse(&a.kind).with_context(|| {
        format!(
            "unknown kind {:?}; use one of: {}",
            a.kind,
            kinds::pushable().collect::<Vec<_>>().join(", ")
        )
    })?;
    let body = match (a.body, a.body_file) {
        (Some(b), None) => b.into_bytes(),
        (None, Some(p)) => {
            std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?
        }
        _ => bail!("give the body with --body TEXT or --body-file PATH"),
    };
    if a.to.is_empty() && a.mechanism.is_empty() && a.office.is_empty() && !a.leading_group {
        bail!(
            "name an audience: --to UNIT[,UNIT...], --mechanism M, --office M or --leading-group"
        );
    }
    let mut draft = Draft::new(kind, a.subject, body)
        .to_units(a.to)
        .with_content_type(a.content_type);
    for m in a.mechanism {
        draft = draft.to_mechanism(m);
    }
    for o in a.office {
        draft = draft.to_office(o);
    }
    if a.leading_group {
        draft = draft.to_leading_group();
    }
    if let Some(id) = a.id {
        draft = draft.with_id(id);
    }
    if let Some(c) = a.case {
        draft = draft.with_case(c);
    }
    if let Some(r) = a.reply_to {
        let (c, n) = parse_ref(&r)?;
        draft = draft.in_reply_to(c, n);
    }
    for o in &a.org {
        let org = parse_org(o)?;
        draft = draft.about(org.credit_code, org.name);
    }
    let r = client.push(draft).await?;
    if a.json {
        println!("{}", receipt_json(&r));
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
    Ok(())
}

pub async fn feedback(client: &Client, a: FeedbackArgs) -> anyhow::Result<()> {
    let entry = entry_at(client, a.cursor).await?;
    let r = client
        .push(Draft::exception(&entry, a.problem.into(), a.text))
        .await?;
    println!(
        "feedback {}:{} on {}:{} sent to {}",
        r.channel,
        r.seq,
        entry.channel(),
        entry.seq(),
        r.recipients.join(", ")
    );
    Ok(())
}
