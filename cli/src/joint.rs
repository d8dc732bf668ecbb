//! `joint`: joint notices and escalations, drafted, co-signed by every
//! named co-issuer, sent out and verified.

use crate::common::{parse_ref, pin_text, print_receipt};
use clap::Subcommand;
use serde_json::json;
use tongbao_client::Client;
use tongbao_proto::kinds;
use tongbao_proto::pb::{self, Kind};
use tongbao_proto::workflow::SourceProof;

// Parsed once per run; its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum JointCommand {
    /// Draft a joint notice (or, with --escalation, an escalation to the
    /// leading group) and send it to the co-issuers for signature.
    Draft {
        #[arg(long)]
        id: String,
        #[arg(long)]
        escalation: bool,
        #[arg(long)]
        mechanism: String,
        #[arg(long)]
        title: String,
        #[arg(long)]
        text: String,
        #[arg(long, value_delimiter = ',', required = true)]
        co_issuers: Vec<String>,
        /// Recipient units once it goes out.
        #[arg(long, value_delimiter = ',')]
        to: Vec<String>,
        /// Every member of these mechanisms once it goes out.
        #[arg(long, value_delimiter = ',')]
        to_mechanism: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        office: Vec<String>,
        #[arg(long)]
        leading_group: bool,
        #[arg(long)]
        case: Option<String>,
        /// The entry it comes from (required for --escalation): the minutes
        /// issue entry, or an entry of the case given with --case.
        #[arg(long, value_name = "CHANNEL:SEQ")]
        source: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Co-sign a draft this unit is named co-issuer of.
    Cosign {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Send it out once every co-issuer signed (the drafter).
    Release {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Who has co-signed, who has not.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Verify every co-signature of a released notice (CHANNEL:SEQ).
    Verify {
        entry: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn joint(client: &Client, what: JointCommand) -> anyhow::Result<()> {
    match what {
        JointCommand::Draft {
            id,
            escalation,
            mechanism,
            title,
            text,
            co_issuers,
            to,
            to_mechanism,
            office,
            leading_group,
            case,
            source,
            json,
        } => {
            let source_entry = match source {
                Some(s) => {
                    let (channel, seq) = parse_ref(&s)?;
                    Some(pb::EntryRef { channel, seq })
                }
                None => None,
            };
            let kind = if escalation {
                Kind::Escalation
            } else {
                Kind::JointNotice
            };
            let content = pb::JointContent {
                title,
                text,
                mechanism,
                co_issuers,
                audience: Some(pb::Audience {
                    units: to,
                    mechanisms: to_mechanism,
                    offices: office,
                    leading_group: leading_group || escalation,
                }),
                source_entry,
                case_id: case.unwrap_or_default(),
            };
            print_receipt(
                "draft sent for co-signature",
                &client.draft_joint(kind, &id, content).await?,
                json,
            );
        }
        JointCommand::Cosign { id, json } => {
            print_receipt("co-signed", &client.co_sign(&id).await?, json)
        }
        JointCommand::Release { id, json } => {
            print_receipt("sent out", &client.release_joint(&id).await?, json)
        }
        JointCommand::Show { id, json } => {
            let n = client.joint_notice(&id).await?;
            let c = n.content.clone().unwrap_or_default();
            if json {
                println!(
                    "{}",
                    json!({
                        "notice_id": n.notice_id, "kind": kinds::name(n.kind), "drafter": n.drafter,
                        "title": c.title, "co_issuers": c.co_issuers,
                        "co_signatures": n.co_signatures.iter().map(|p| format!("{}:{}", p.channel, p.seq)).collect::<Vec<_>>(),
                        "not_signed": n.not_signed, "draft": pin_text(&n.draft), "release": pin_text(&n.release),
                    })
                );
            } else {
                println!(
                    "{} {} \"{}\" by {}; not yet signed by: {}; {}",
                    kinds::name(n.kind),
                    n.notice_id,
                    c.title,
                    n.drafter,
                    if n.not_signed.is_empty() {
                        "-".to_string()
                    } else {
                        n.not_signed.join(", ")
                    },
                    if n.release.is_some() {
                        "sent out"
                    } else {
                        "not sent out"
                    }
                );
            }
        }
        JointCommand::Verify { entry, json } => {
            let (c, n) = parse_ref(&entry)?;
            let e = client.get_entry(&c, n).await?;
            let proof = client.verify_joint_release(&e).await?;
            let source = proof.source.as_ref().map(|s| match s {
                SourceProof::Minutes { entry, minutes } => (
                    format!("{}:{}", entry.channel, entry.seq),
                    format!("issued minutes of meeting {}", minutes.meeting_id),
                ),
                SourceProof::CaseEntry { entry, sender } => (
                    format!("{}:{}", entry.channel, entry.seq),
                    format!("an entry of case {} by {sender}", proof.content.case_id),
                ),
            });
            if json {
                println!(
                    "{}",
                    json!({
                        "notice_id": proof.notice_id, "drafter": proof.drafter,
                        "title": proof.content.title, "co_issuers": proof.content.co_issuers,
                        "content_digest": hex::encode(proof.content_digest),
                        "co_signatures": proof.co_signatures.iter().map(|p| format!("{}:{}", p.channel, p.seq)).collect::<Vec<_>>(),
                        "source": source.as_ref().map(|(at, what)| json!({"entry": at, "is": what})),
                    })
                );
            } else {
                println!(
                    "Verified: \"{}\" drafted by {}, co-signed by every named co-issuer ({}).",
                    proof.content.title,
                    proof.drafter,
                    proof.content.co_issuers.join(", ")
                );
                if let Some((at, what)) = source {
                    println!("Its source {at} is {what}.");
                }
            }
        }
    }
    Ok(())
}
