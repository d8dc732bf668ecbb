//! `meeting` and `minutes`: a mechanism's meeting from proposal and
//! agenda to minutes every attending unit consented to.

use crate::common::{parse_ref, parse_since, pin, pin_text, print_receipt};
use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};
use tongbao_client::{Client, format_micros};
use tongbao_proto::pb::{self, MeetingKind};

#[derive(Subcommand)]
pub enum MeetingCommand {
    /// Propose a meeting (the lead unit, for the office).
    Propose {
        #[arg(long)]
        id: String,
        /// The mechanism (two, comma separated, for a joint meeting).
        #[arg(long, value_delimiter = ',', required = true)]
        mechanism: Vec<String>,
        /// The kind of meeting.
        #[arg(long)]
        kind: MeetingKindArg,
        #[arg(long)]
        title: String,
        /// Attending units, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        attending: Vec<String>,
        /// When it takes place: RFC 3339 (default: now).
        #[arg(long)]
        date: Option<String>,
        /// An agenda item (repeat for more).
        #[arg(long)]
        agenda: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Propose an agenda item, or comment on one (--comment-on CHANNEL:SEQ).
    Item {
        #[arg(long)]
        meeting: String,
        #[arg(long)]
        text: String,
        #[arg(long, value_name = "CHANNEL:SEQ")]
        comment_on: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Settle the agenda (the proposer).
    Settle {
        #[arg(long)]
        meeting: String,
        #[arg(long, required = true)]
        agenda: Vec<String>,
        /// Agenda item entries taken into the agenda.
        #[arg(long, value_name = "CHANNEL:SEQ")]
        adopt: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// A meeting's state: agenda, current draft, who has not answered.
    Show {
        meeting: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum MinutesCommand {
    /// Circulate a minutes draft (the office, through the lead unit); a
    /// later draft supersedes the current one.
    Draft {
        #[arg(long)]
        meeting: String,
        #[arg(long)]
        text: String,
        #[arg(long)]
        json: bool,
    },
    /// Consent to the current draft.
    Consent {
        #[arg(long)]
        meeting: String,
        #[arg(long)]
        json: bool,
    },
    /// Object to the current draft, with comments.
    Object {
        #[arg(long)]
        meeting: String,
        #[arg(long)]
        comments: String,
        #[arg(long)]
        json: bool,
    },
    /// Issue the minutes once every attending unit consented.
    Issue {
        #[arg(long)]
        meeting: String,
        #[arg(long)]
        json: bool,
    },
    /// Verify an issue entry (CHANNEL:SEQ) from the consents it carries.
    Verify {
        entry: String,
        #[arg(long)]
        json: bool,
    },
}

/// The kinds of meeting of the mechanisms.
#[derive(Clone, Copy, ValueEnum)]
pub enum MeetingKindArg {
    Annual,
    AdHoc,
    Partial,
    Correspondence,
    Joint,
}

impl From<MeetingKindArg> for MeetingKind {
    fn from(k: MeetingKindArg) -> Self {
        match k {
            MeetingKindArg::Annual => MeetingKind::Annual,
            MeetingKindArg::AdHoc => MeetingKind::AdHoc,
            MeetingKindArg::Partial => MeetingKind::Partial,
            MeetingKindArg::Correspondence => MeetingKind::Correspondence,
            MeetingKindArg::Joint => MeetingKind::Joint,
        }
    }
}

fn answer_name(state: i32) -> &'static str {
    match pb::AnswerState::try_from(state) {
        Ok(pb::AnswerState::Consented) => "consented",
        Ok(pb::AnswerState::Objected) => "objected",
        _ => "not answered",
    }
}

fn stage_name(stage: i32) -> &'static str {
    match pb::MeetingStage::try_from(stage) {
        Ok(pb::MeetingStage::AgendaOpen) => "agenda open",
        Ok(pb::MeetingStage::AgendaSettled) => "agenda settled",
        Ok(pb::MeetingStage::MinutesDrafted) => "minutes drafted",
        Ok(pb::MeetingStage::MinutesIssued) => "minutes issued",
        _ => "unknown",
    }
}

fn meeting_json(m: &pb::MeetingState) -> Value {
    let p = m.proposal.clone().unwrap_or_default();
    json!({
        "meeting_id": p.meeting_id, "title": p.title, "mechanisms": p.mechanisms,
        "date": format_micros(p.date_micros), "proposer": m.proposer, "stage": stage_name(m.stage),
        "attending_units": p.attending_units,
        "agenda_items": m.agenda_items.iter().map(|i| format!("{}:{}", i.channel, i.seq)).collect::<Vec<_>>(),
        "agenda": m.settled_agenda, "revision": m.current_revision,
        "current_draft": pin_text(&m.current_draft),
        "answers": m.answers.iter().map(|a| json!({
            "unit": a.unit, "state": answer_name(a.state), "answer": pin_text(&a.answer), "comments": a.comments,
        })).collect::<Vec<_>>(),
        "not_answered": m.answers.iter().filter(|a| a.state == pb::AnswerState::NotAnswered as i32).map(|a| a.unit.clone()).collect::<Vec<_>>(),
        "issue": pin_text(&m.issue),
    })
}

pub async fn meeting(client: &Client, what: MeetingCommand) -> anyhow::Result<()> {
    match what {
        MeetingCommand::Propose {
            id,
            mechanism,
            kind,
            title,
            attending,
            date,
            agenda,
            json,
        } => {
            let date_micros = match date {
                Some(d) => parse_since(&d)?,
                None => tongbao_proto::now_micros(),
            };
            let r = client
                .propose_meeting(pb::MeetingProposal {
                    meeting_id: id,
                    mechanisms: mechanism,
                    kind: MeetingKind::from(kind) as i32,
                    title,
                    attending_units: attending,
                    date_micros,
                    agenda,
                })
                .await?;
            print_receipt("meeting proposed", &r, json);
        }
        MeetingCommand::Item {
            meeting,
            text,
            comment_on,
            json,
        } => {
            let on = match comment_on {
                Some(r) => Some(pin(client, &r).await?),
                None => None,
            };
            let r = client.agenda_item(&meeting, &text, on).await?;
            print_receipt("agenda item", &r, json);
        }
        MeetingCommand::Settle {
            meeting,
            agenda,
            adopt,
            json,
        } => {
            let mut adopted = Vec::new();
            for a in &adopt {
                adopted.push(pin(client, a).await?);
            }
            let r = client.settle_agenda(&meeting, agenda, adopted).await?;
            print_receipt("agenda settled", &r, json);
        }
        MeetingCommand::Show { meeting, json } => {
            let m = client.meeting(&meeting).await?;
            let v = meeting_json(&m);
            if json {
                println!("{v}");
            } else {
                println!(
                    "meeting {} \"{}\" ({}), {}",
                    meeting, v["title"], v["stage"], v["date"]
                );
                for a in &m.answers {
                    println!("  {:<20} {}", a.unit, answer_name(a.state));
                }
            }
        }
    }
    Ok(())
}

pub async fn minutes(client: &Client, what: MinutesCommand) -> anyhow::Result<()> {
    match what {
        MinutesCommand::Draft {
            meeting,
            text,
            json,
        } => print_receipt(
            "minutes draft",
            &client.circulate_minutes(&meeting, &text).await?,
            json,
        ),
        MinutesCommand::Consent { meeting, json } => print_receipt(
            "consent",
            &client.answer_current_minutes(&meeting, true, "").await?,
            json,
        ),
        MinutesCommand::Object {
            meeting,
            comments,
            json,
        } => print_receipt(
            "objection",
            &client
                .answer_current_minutes(&meeting, false, &comments)
                .await?,
            json,
        ),
        MinutesCommand::Issue { meeting, json } => print_receipt(
            "minutes issued",
            &client.issue_minutes(&meeting).await?,
            json,
        ),
        MinutesCommand::Verify { entry, json } => {
            let (c, n) = parse_ref(&entry)?;
            let e = client.get_entry(&c, n).await?;
            let proof = client.verify_minutes(&e).await?;
            if json {
                println!(
                    "{}",
                    json!({
                        "meeting_id": proof.meeting_id, "issued_by": proof.proposer,
                        "draft": format!("{}:{}", proof.draft.channel, proof.draft.seq),
                        "draft_leaf_hash": hex::encode(&proof.draft.leaf_hash),
                        "consents": proof.consents.iter().map(|p| format!("{}:{}", p.channel, p.seq)).collect::<Vec<_>>(),
                        "text": proof.text,
                    })
                );
            } else {
                println!(
                    "Verified: minutes of meeting {} issued by {}; every attending unit ({}) consented to draft {}:{}.",
                    proof.meeting_id,
                    proof.proposer,
                    proof.attending_units.join(", "),
                    proof.draft.channel,
                    proof.draft.seq
                );
            }
        }
    }
    Ok(())
}
