//! `warning`: joint warnings and sanctions (联合预警和惩戒): issue one about
//! an organization, answer with measures, lift, and see who answered.

use crate::common::{Printer, parse_org, parse_ref, pin, pin_text, print_receipt};
use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};
use tongbao_client::{Client, NewWarning};
use tongbao_proto::pb::{self, workflow_step::Step};
use tongbao_proto::workflow::step_name;

/// How serious a warning is.
#[derive(Clone, Copy, ValueEnum)]
pub enum Level {
    /// 提示: watch the organization.
    Notice,
    /// 警示: measures are expected.
    Caution,
    /// 严重: joint sanctions.
    Severe,
}

impl From<Level> for pb::WarningLevel {
    fn from(l: Level) -> Self {
        match l {
            Level::Notice => pb::WarningLevel::Notice,
            Level::Caution => pb::WarningLevel::Caution,
            Level::Severe => pb::WarningLevel::Severe,
        }
    }
}

#[derive(Subcommand)]
pub enum WarningCommand {
    /// Warn a mechanism about an organization (to every member and the
    /// office), citing entries this unit sent or received.
    Issue {
        #[arg(long)]
        id: String,
        #[arg(long)]
        mechanism: String,
        /// The organization: CODE or CODE=NAME.
        #[arg(long, value_name = "CODE[=NAME]")]
        org: String,
        #[arg(long)]
        level: Level,
        #[arg(long)]
        grounds: String,
        /// Evidence entries, CHANNEL:SEQ, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        evidence: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Answer a warning with the measures applied (or --none with a reason).
    Answer {
        id: String,
        /// A measure applied; repeat for several.
        #[arg(long)]
        measure: Vec<String>,
        /// No measure applied (give --reason).
        #[arg(long, conflicts_with = "measure")]
        none: bool,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Lift a warning this unit issued.
    Lift {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// A warning's state: level, who answered with what, who has not.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// The warnings you took part in (an office: its mechanism's).
    List {
        /// Only those about this organization (credit code).
        #[arg(long)]
        org: Option<String>,
        /// Leave out lifted warnings.
        #[arg(long)]
        active: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check an answer or a lift (CHANNEL:SEQ) against the warning it pins.
    Verify {
        entry: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn warning(client: &Client, what: WarningCommand) -> anyhow::Result<()> {
    match what {
        WarningCommand::Issue {
            id,
            mechanism,
            org,
            level,
            grounds,
            evidence,
            json,
        } => {
            let mut pins = Vec::with_capacity(evidence.len());
            for e in &evidence {
                pins.push(pin(client, e).await?);
            }
            let w = NewWarning {
                warning_id: id,
                mechanism,
                organization: parse_org(&org)?,
                level: level.into(),
                grounds,
                evidence: pins,
            };
            print_receipt("warning issued", &client.issue_warning(w).await?, json);
        }
        WarningCommand::Answer {
            id,
            measure,
            none,
            reason,
            json,
        } => {
            if !none && measure.is_empty() {
                anyhow::bail!(
                    "give the measures applied (--measure TEXT, repeated) or --none --reason TEXT"
                );
            }
            let r = client.answer_warning(&id, measure, &reason).await?;
            print_receipt("answered", &r, json);
        }
        WarningCommand::Lift { id, reason, json } => {
            print_receipt("lifted", &client.lift_warning(&id, &reason).await?, json)
        }
        WarningCommand::Show { id, json } => {
            let w = client.warning(&id).await?;
            WARNING.one(&w, json);
        }
        WarningCommand::List { org, active, json } => {
            let code = match &org {
                Some(c) => {
                    tongbao_proto::credit_code::check(c)?;
                    c.as_str()
                }
                None => "",
            };
            let list = client.warnings(code, active).await?;
            if !json {
                println!("{} warnings", list.len());
            }
            WARNING.list("warnings", &list, None, json);
        }
        WarningCommand::Verify { entry, json } => {
            let (c, n) = parse_ref(&entry)?;
            let e = client.get_entry(&c, n).await?;
            let v = client.verify_warning_answer(&e).await?;
            let what = match &v.step {
                Step::WarningLift(_) => "lift",
                s => step_name(s),
            };
            if json {
                println!(
                    "{}",
                    json!({
                        "warning_id": v.warning_id, "issuer": v.issuer, "unit": v.unit,
                        "credit_code": v.organization.credit_code, "is": what,
                    })
                );
            } else {
                println!(
                    "Verified: {what} by {} of warning {} (issued by {}) about {}.",
                    v.unit, v.warning_id, v.issuer, v.organization.credit_code
                );
            }
        }
    }
    Ok(())
}

fn level_name(level: i32) -> &'static str {
    match pb::WarningLevel::try_from(level) {
        Ok(pb::WarningLevel::Notice) => "notice",
        Ok(pb::WarningLevel::Caution) => "caution",
        Ok(pb::WarningLevel::Severe) => "severe",
        _ => "unspecified",
    }
}

/// How a warning view prints.
const WARNING: Printer<pb::WarningState> = Printer {
    json: warning_json,
    text: print_warning,
};

fn warning_json(w: &pb::WarningState) -> Value {
    let org = w.organization.clone().unwrap_or_default();
    json!({
        "warning_id": w.warning_id, "issuer": w.issuer, "mechanism": w.mechanism,
        "credit_code": org.credit_code, "organization": org.name,
        "level": level_name(w.level), "grounds": w.grounds,
        "warning": pin_text(&w.warning), "hub_time": tongbao_client::format_micros(w.hub_micros),
        "evidence": w.evidence.iter().map(|p| format!("{}:{}", p.channel, p.seq)).collect::<Vec<_>>(),
        "answers": w.answers.iter().map(|a| json!({
            "unit": a.unit, "answered": a.answered, "answer": pin_text(&a.answer),
            "measures": a.measures, "reason": a.reason,
        })).collect::<Vec<_>>(),
        "not_answered": w.not_answered,
        "lifted": w.lift.is_some(), "lift": pin_text(&w.lift), "lift_reason": w.lift_reason,
    })
}

fn print_warning(w: &pb::WarningState) {
    let org = w.organization.clone().unwrap_or_default();
    println!(
        "warning {} ({}) by {} to {} about {} {}: {}",
        w.warning_id,
        level_name(w.level),
        w.issuer,
        w.mechanism,
        org.credit_code,
        org.name,
        if w.lift.is_some() { "lifted" } else { "active" }
    );
    println!("    grounds: {}", w.grounds);
    for a in w.answers.iter().filter(|a| a.answered) {
        let said = if a.measures.is_empty() {
            format!("none ({})", a.reason)
        } else {
            a.measures.join("; ")
        };
        println!("    {}: {said}", a.unit);
    }
    if !w.not_answered.is_empty() {
        println!("    not answered: {}", w.not_answered.join(", "));
    }
}
