//! `action`: joint enforcement actions (联合执法行动) proposed by the lead
//! unit, confirmed or declined and reported by each participant, and
//! summarized with every answer and result embedded; `verify` checks a
//! summary from those entries alone.

use crate::common::{Printer, parse_org, parse_ref, pin_text, print_receipt};
use crate::task::{attachment, attachments, parse_when};
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::PathBuf;
use tongbao_client::{Client, format_micros};
use tongbao_proto::pb::{self, ParticipantState};
use tongbao_proto::workflow::action::ProvenPart;

#[derive(Subcommand)]
pub enum ActionCommand {
    /// Propose a joint action (the lead unit).
    Propose {
        #[arg(long)]
        id: String,
        #[arg(long)]
        mechanism: String,
        #[arg(long)]
        title: String,
        #[arg(long, value_delimiter = ',', required = true)]
        participants: Vec<String>,
        /// Start: RFC 3339, hub microseconds, or from now like +2d.
        #[arg(long)]
        starts: String,
        #[arg(long)]
        ends: String,
        /// A target organization: its unified social credit code,
        /// optionally with its name (CODE=NAME); repeatable or
        /// comma-separated.
        #[arg(
            long = "target",
            value_name = "CODE[=NAME]",
            value_delimiter = ',',
            required = true
        )]
        targets: Vec<String>,
        /// The action plan, kept by its SHA-256.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Confirm taking part.
    Confirm {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Decline, with a reason.
    Decline {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Report this unit's results (after confirming).
    Report {
        id: String,
        #[arg(long)]
        text: String,
        #[arg(long, value_name = "FILE")]
        attach: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Release the summary (the lead unit) once everyone answered and
    /// every confirmed participant reported.
    Summary {
        id: String,
        #[arg(long)]
        text: String,
        #[arg(long)]
        json: bool,
    },
    /// Who has not confirmed or reported.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// The actions you lead, take part in or (an office) supervise.
    List {
        #[arg(long, default_value = "")]
        mechanism: String,
        #[arg(long, default_value = "")]
        after: String,
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Verify a released summary (CHANNEL:SEQ) from the entries it embeds.
    Verify {
        entry: String,
        #[arg(long)]
        json: bool,
    },
}

fn state_name(s: i32) -> &'static str {
    match ParticipantState::try_from(s).unwrap_or(ParticipantState::Unspecified) {
        ParticipantState::Unspecified => "unspecified",
        ParticipantState::NotAnswered => "not-answered",
        ParticipantState::Confirmed => "confirmed",
        ParticipantState::Declined => "declined",
        ParticipantState::Reported => "reported",
    }
}

/// How a action view prints.
const ACTION: Printer<pb::ActionState> = Printer {
    json: action_json,
    text: print_action,
};

fn action_json(a: &pb::ActionState) -> Value {
    let p = a.proposal.clone().unwrap_or_default();
    json!({
        "action_id": a.action_id, "mechanism": p.mechanism, "lead": a.lead, "title": p.title,
        "starts": format_micros(p.starts_micros), "ends": format_micros(p.ends_micros),
        "target_organizations": p.target_organizations.iter()
            .map(|o| json!({"credit_code": o.credit_code, "name": o.name}))
            .collect::<Vec<_>>(),
        "plan": p.plan.as_ref().map(|d| json!({"name": d.name, "sha256": hex::encode(&d.sha256)})),
        "proposal": pin_text(&a.proposal_entry), "summary": pin_text(&a.summary),
        "not_answered": a.not_answered, "not_reported": a.not_reported,
        "participants": a.participants.iter().map(|x| json!({
            "unit": x.unit, "state": state_name(x.state), "reason": x.reason,
            "answer": pin_text(&x.answer), "result": pin_text(&x.result),
        })).collect::<Vec<_>>(),
    })
}

/// CODE, or CODE (NAME) when the proposal names it.
fn org_text(o: &pb::Organization) -> String {
    if o.name.is_empty() {
        o.credit_code.clone()
    } else {
        format!("{} ({})", o.credit_code, o.name)
    }
}

fn print_action(a: &pb::ActionState) {
    let p = a.proposal.clone().unwrap_or_default();
    println!(
        "joint action {} \"{}\" of {} by {}, {} to {}, targets: {}; {}",
        a.action_id,
        p.title,
        p.mechanism,
        a.lead,
        format_micros(p.starts_micros),
        format_micros(p.ends_micros),
        p.target_organizations
            .iter()
            .map(org_text)
            .collect::<Vec<_>>()
            .join("; "),
        if a.summary.is_some() {
            "summarized"
        } else {
            "not summarized"
        }
    );
    let none = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    println!(
        "  not confirmed: {}; not reported: {}",
        none(&a.not_answered),
        none(&a.not_reported)
    );
    for x in &a.participants {
        println!("  {:<20} {}{}", x.unit, state_name(x.state), {
            if x.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", x.reason)
            }
        });
    }
}

pub async fn action(client: &Client, what: ActionCommand) -> anyhow::Result<()> {
    match what {
        ActionCommand::Propose {
            id,
            mechanism,
            title,
            participants,
            starts,
            ends,
            targets,
            plan,
            json,
        } => {
            let p = pb::ActionProposal {
                action_id: id,
                mechanism,
                title,
                participants,
                starts_micros: parse_when(&starts)?,
                ends_micros: parse_when(&ends)?,
                target_organizations: targets
                    .iter()
                    .map(|t| parse_org(t))
                    .collect::<anyhow::Result<_>>()?,
                plan: Some(attachment(&plan)?),
            };
            print_receipt(
                "joint action proposed",
                &client.propose_action(p).await?,
                json,
            );
        }
        ActionCommand::Confirm { id, json } => print_receipt(
            "confirmed",
            &client.answer_action(&id, true, "").await?,
            json,
        ),
        ActionCommand::Decline { id, reason, json } => print_receipt(
            "declined",
            &client.answer_action(&id, false, &reason).await?,
            json,
        ),
        ActionCommand::Report {
            id,
            text,
            attach,
            json,
        } => print_receipt(
            "results reported",
            &client
                .report_action(&id, &text, attachments(&attach)?)
                .await?,
            json,
        ),
        ActionCommand::Summary { id, text, json } => print_receipt(
            "summary released",
            &client.summarize_action(&id, &text).await?,
            json,
        ),
        ActionCommand::Show { id, json } => {
            let a = client.action(&id).await?;
            ACTION.one(&a, json);
        }
        ActionCommand::List {
            mechanism,
            after,
            limit,
            json,
        } => {
            let page = client
                .actions(pb::ListActionsRequest {
                    mechanism,
                    after,
                    limit,
                })
                .await?;
            ACTION.list("actions", &page.actions, Some(&page.next_after), json);
        }
        ActionCommand::Verify { entry, json } => {
            let (c, n) = parse_ref(&entry)?;
            let e = client.get_entry(&c, n).await?;
            let proof = client.verify_action_summary(&e).await?;
            let parts: Vec<Value> = proof
                .parts
                .iter()
                .map(|(unit, part)| match part {
                    ProvenPart::Declined { answer, reason } => json!({
                        "unit": unit, "declined": true, "reason": reason,
                        "answer": format!("{}:{}", answer.channel, answer.seq),
                    }),
                    ProvenPart::Reported {
                        answer,
                        result,
                        text,
                    } => json!({
                        "unit": unit, "declined": false, "results": text,
                        "answer": format!("{}:{}", answer.channel, answer.seq),
                        "result": format!("{}:{}", result.channel, result.seq),
                    }),
                })
                .collect();
            if json {
                println!(
                    "{}",
                    json!({
                        "action_id": proof.action_id, "lead": proof.lead,
                        "title": proof.proposal.title, "parts": parts, "summary": proof.text,
                    })
                );
            } else {
                println!(
                    "Verified: joint action \"{}\" by {}: every participant's answer and every confirmed participant's results are embedded and signed.",
                    proof.proposal.title, proof.lead
                );
                for p in &parts {
                    println!("  {p}");
                }
            }
        }
    }
    Ok(())
}
