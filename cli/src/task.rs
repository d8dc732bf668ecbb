//! `task`: tasks (议定事项 / 阶段性重点监管任务) assigned by the lead unit,
//! reported by the assignees, reminded (督办), accepted or returned; and
//! the state each party sees, the office's with every task's status.

use crate::common::{Printer, parse_since, pin, pin_text, print_receipt};
use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tongbao_client::{Client, format_micros};
use tongbao_proto::pb::{self, TaskStatus};
use tongbao_proto::workflow::task::{assignee_state_name, parse_status, status_name};

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Assign a task (the lead unit): from issued minutes (--minutes and
    /// --item) or on its own (阶段性重点监管任务).
    Assign {
        #[arg(long)]
        id: String,
        #[arg(long)]
        mechanism: String,
        #[arg(long)]
        title: String,
        /// The result expected of the assignees.
        #[arg(long)]
        expected: String,
        /// Assignee units.
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<String>,
        /// Due date: RFC 3339, hub microseconds, or from now like +14d.
        #[arg(long)]
        due: String,
        /// The minutes issue entry the task comes from.
        #[arg(long, value_name = "CHANNEL:SEQ", requires = "item")]
        minutes: Option<String>,
        /// The decided item, as the minutes' text words it.
        #[arg(long, requires = "minutes")]
        item: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Report progress of this unit's part, or with --done its completion.
    Report {
        id: String,
        #[arg(long)]
        text: String,
        #[arg(long)]
        done: bool,
        /// A file the report delivers, named by its SHA-256 (repeatable).
        #[arg(long, value_name = "FILE")]
        attach: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Remind (督办) assignees not done (the lead unit): the named ones, or all.
    Remind {
        id: String,
        #[arg(long, value_delimiter = ',')]
        units: Vec<String>,
        #[arg(long, default_value = "")]
        text: String,
        #[arg(long)]
        json: bool,
    },
    /// Accept the result once every assignee reported done; closes the task.
    Accept {
        id: String,
        #[arg(long, default_value = "")]
        comments: String,
        #[arg(long)]
        json: bool,
    },
    /// Return completed parts with a reason; reopens them.
    Return {
        id: String,
        #[arg(long, value_delimiter = ',', required = true)]
        units: Vec<String>,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// A task's status and each assignee's state.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// The tasks you lead, are assigned or (an office) supervise.
    List {
        #[arg(long, default_value = "")]
        mechanism: String,
        /// open, in-progress, done, overdue or closed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value = "")]
        after: String,
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

/// A time to come: "+14d" (from now), or as `parse_since` reads it.
pub fn parse_when(s: &str) -> anyhow::Result<i64> {
    match s.strip_prefix('+') {
        Some(ahead) => {
            let ago = parse_since(ahead)?;
            let now = tongbao_proto::now_micros();
            Ok(now + (now - ago))
        }
        None => parse_since(s),
    }
}

/// An attachment digest of a file: its name, size and SHA-256.
pub fn attachment(path: &Path) -> anyhow::Result<pb::AttachmentDigest> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} names no file", path.display()))?;
    Ok(pb::AttachmentDigest {
        name,
        media_type: String::new(),
        size: bytes.len() as u64,
        sha256: tongbao_proto::canonical::sha256(&bytes).to_vec(),
    })
}

pub fn attachments(paths: &[PathBuf]) -> anyhow::Result<Vec<pb::AttachmentDigest>> {
    paths.iter().map(|p| attachment(p)).collect()
}

fn status_text(s: i32) -> &'static str {
    status_name(TaskStatus::try_from(s).unwrap_or(TaskStatus::Unspecified))
}

/// How a task view prints.
const TASK: Printer<pb::TaskState> = Printer {
    json: task_json,
    text: print_task,
};

fn task_json(t: &pb::TaskState) -> Value {
    let a = t.assignment.clone().unwrap_or_default();
    json!({
        "task_id": t.task_id, "mechanism": a.mechanism, "lead": t.lead, "title": a.title,
        "expected_result": a.expected_result, "due": format_micros(a.due_micros),
        "status": status_text(t.status), "as_of": format_micros(t.as_of_micros),
        "minutes": pin_text(&a.minutes), "decided_item": a.decided_item,
        "assignment": pin_text(&t.assignment_entry), "reminders": t.reminders, "returns": t.returns,
        "acceptance": pin_text(&t.acceptance),
        "assignees": t.assignees.iter().map(|x| json!({
            "unit": x.unit, "state": assignee_state_name(x.state), "reports": x.reports,
            "last_report": pin_text(&x.last_report), "completion": pin_text(&x.completion),
            "reminders": x.reminders, "return_reason": x.return_reason,
        })).collect::<Vec<_>>(),
    })
}

fn print_task(t: &pb::TaskState) {
    let a = t.assignment.clone().unwrap_or_default();
    println!(
        "task {} [{}] \"{}\" of {} by {}, due {}",
        t.task_id,
        status_text(t.status),
        a.title,
        a.mechanism,
        t.lead,
        format_micros(a.due_micros)
    );
    for x in &t.assignees {
        println!(
            "  {:<20} {:<12} reports {}, reminded {}{}",
            x.unit,
            assignee_state_name(x.state),
            x.reports,
            x.reminders,
            if x.return_reason.is_empty() {
                String::new()
            } else {
                format!(", returned: {}", x.return_reason)
            }
        );
    }
}

pub async fn task(client: &Client, what: TaskCommand) -> anyhow::Result<()> {
    match what {
        TaskCommand::Assign {
            id,
            mechanism,
            title,
            expected,
            to,
            due,
            minutes,
            item,
            json,
        } => {
            let minutes = match minutes {
                Some(m) => Some(pin(client, &m).await?),
                None => None,
            };
            let a = pb::TaskAssignment {
                task_id: id,
                mechanism,
                title,
                expected_result: expected,
                assignees: to,
                due_micros: parse_when(&due)?,
                minutes,
                decided_item: item.unwrap_or_default(),
            };
            print_receipt("task assigned", &client.assign_task(a).await?, json);
        }
        TaskCommand::Report {
            id,
            text,
            done,
            attach,
            json,
        } => {
            let r = client
                .report_task(&id, done, &text, attachments(&attach)?)
                .await?;
            print_receipt(
                if done {
                    "completion reported"
                } else {
                    "progress reported"
                },
                &r,
                json,
            );
        }
        TaskCommand::Remind {
            id,
            units,
            text,
            json,
        } => print_receipt(
            "reminded",
            &client.remind_task(&id, units, &text).await?,
            json,
        ),
        TaskCommand::Accept { id, comments, json } => {
            print_receipt("accepted", &client.accept_task(&id, &comments).await?, json)
        }
        TaskCommand::Return {
            id,
            units,
            reason,
            json,
        } => print_receipt(
            "returned",
            &client.return_task(&id, units, &reason).await?,
            json,
        ),
        TaskCommand::Show { id, json } => {
            let t = client.task(&id).await?;
            TASK.one(&t, json);
        }
        TaskCommand::List {
            mechanism,
            status,
            after,
            limit,
            json,
        } => {
            let status = match status {
                Some(s) => parse_status(&s).with_context(|| {
                    format!("unknown status {s:?}: open, in-progress, done, overdue or closed")
                })? as i32,
                None => 0,
            };
            let page = client
                .tasks(pb::ListTasksRequest {
                    mechanism,
                    after,
                    limit,
                    status,
                })
                .await?;
            TASK.list("tasks", &page.tasks, Some(&page.next_after), json);
        }
    }
    Ok(())
}
