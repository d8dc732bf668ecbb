//! The mechanisms' workflows on the command line: meetings, minutes, joint
//! notices and escalations, liaisons, statistics and cases.

use super::{entry_json, parse_ref, parse_since, print_entry};
use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use tongbao_client::format_micros;
use tongbao_client::{Client, PushReceipt};
use tongbao_proto::kinds;
use tongbao_proto::pb::{self, Kind, MeetingKind};
use tongbao_proto::workflow::{SourceProof, step_name};

#[derive(Subcommand)]
pub enum MeetingCommand {
    /// Propose a meeting (the lead unit, for the office).
    Propose {
        #[arg(long)]
        id: String,
        /// The mechanism (two, comma separated, for a joint meeting).
        #[arg(long, value_delimiter = ',', required = true)]
        mechanism: Vec<String>,
        /// annual, ad-hoc, partial, correspondence or joint.
        #[arg(long)]
        kind: String,
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

fn pin_of(client_ref: &str) -> anyhow::Result<(String, u64)> {
    parse_ref(client_ref)
}

async fn pin(client: &Client, r: &str) -> anyhow::Result<pb::EntryPin> {
    let (c, n) = pin_of(r)?;
    Ok(client.get_entry(&c, n).await?.pin())
}

fn print_receipt(what: &str, r: &PushReceipt, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "channel": r.channel, "seq": r.seq, "leaf_hash": hex::encode(&r.leaf_hash),
                "recipients": r.recipients, "duplicate": r.duplicate, "message_id": r.message_id,
            })
        );
    } else {
        println!(
            "{what}: appended {}:{} for {}",
            r.channel,
            r.seq,
            r.recipients.join(", ")
        );
    }
}

fn pin_text(p: &Option<pb::EntryPin>) -> Value {
    match p {
        Some(p) => format!("{}:{}", p.channel, p.seq).into(),
        None => Value::Null,
    }
}

fn meeting_kind(s: &str) -> anyhow::Result<MeetingKind> {
    Ok(match s {
        "annual" => MeetingKind::Annual,
        "ad-hoc" => MeetingKind::AdHoc,
        "partial" => MeetingKind::Partial,
        "correspondence" => MeetingKind::Correspondence,
        "joint" => MeetingKind::Joint,
        other => bail!(
            "unknown meeting kind {other:?}; use annual, ad-hoc, partial, correspondence or joint"
        ),
    })
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
                    kind: meeting_kind(&kind)? as i32,
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

pub async fn liaison_report(
    client: &Client,
    office: Vec<String>,
    liaison: pb::LiaisonChange,
    json: bool,
) -> anyhow::Result<()> {
    if office.is_empty() {
        bail!("name the offices to report to: --office MECHANISM[,MECHANISM]");
    }
    print_receipt(
        "liaison reported",
        &client.report_liaison(&office, liaison).await?,
        json,
    );
    Ok(())
}

fn liaison_json(r: &pb::LiaisonRecord) -> Value {
    let l = r.liaison.clone().unwrap_or_default();
    json!({
        "name": l.name, "title": l.title, "contact": l.contact,
        "since": format_micros(r.hub_micros), "entry": pin_text(&r.entry),
    })
}

pub async fn liaisons(client: &Client, mechanism: &str, json: bool) -> anyhow::Result<()> {
    let d = client.liaisons(mechanism).await?;
    if json {
        let units: Vec<Value> = d
            .units
            .iter()
            .map(|u| {
                json!({
                    "unit": u.unit,
                    "current": u.current.as_ref().map(liaison_json),
                    "history": u.history.iter().map(liaison_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", json!({"mechanism": d.mechanism, "units": units}));
        return Ok(());
    }
    println!("liaisons of {}", d.mechanism);
    for u in &d.units {
        match u
            .current
            .as_ref()
            .and_then(|c| c.liaison.clone().map(|l| (c, l)))
        {
            Some((c, l)) => println!(
                "  {:<20} {} ({}), {}  since {}  [{} change(s)]",
                u.unit,
                l.name,
                l.title,
                l.contact,
                format_micros(c.hub_micros),
                u.history.len()
            ),
            None => println!("  {:<20} (no liaison reported)", u.unit),
        }
    }
    Ok(())
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

pub async fn case_show(client: &Client, case: &str, json: bool) -> anyhow::Result<()> {
    let entries = client.case(case).await.context("cannot read the case")?;
    if json {
        let v: Vec<Value> = entries.iter().map(entry_json).collect();
        println!("{}", json!({"case_id": case, "entries": v}));
        return Ok(());
    }
    println!("case {case}: {} entries you may see", entries.len());
    for e in &entries {
        if let Ok(step) = tongbao_proto::workflow::decode_step(e.message()) {
            println!(
                "{}:{}  {}  ({})",
                e.channel(),
                e.seq(),
                e.message().subject,
                step_name(&step)
            );
        } else {
            print_entry(e, false);
        }
    }
    Ok(())
}
