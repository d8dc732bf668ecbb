//! The state of tasks (议定事项 / 督办) and joint actions (联合执法行动): one
//! record per task or action, and an index per party (lead unit, each
//! assignee or participant, the mechanism's office) so each lists its own
//! without reading anyone else's.
//!
//! Every read and write of these records goes through the few functions
//! here (`task`, `action`, `ids_of`, and the batch writers), so moving the
//! workflow state to another store changes this file only.

use super::{WorkflowRefusal, Workflows, key};
use crate::store::StateBatch;
use prost::Message as _;
use tongbao_proto::identity::office_inbox;
use tongbao_proto::pb::{self, AssigneeState, ParticipantState, workflow_step::Step};

const TASK: &str = "t/";
const TASK_INDEX: &str = "ti/";
const ACTION: &str = "x/";
const ACTION_INDEX: &str = "xi/";

fn index_prefix(index: &str, party: &str) -> Vec<u8> {
    let mut k = key(index, party);
    k.push(0);
    k
}

/// The parties that list a task or action: its lead, the units named,
/// and the office of its mechanism.
fn parties<'a>(
    lead: &'a str,
    units: &'a [String],
    mechanism: &str,
) -> impl Iterator<Item = String> + 'a {
    std::iter::once(lead.to_string())
        .chain(units.iter().cloned())
        .chain(std::iter::once(office_inbox(mechanism)))
}

impl Workflows {
    pub fn task(&self, id: &str) -> Result<Option<pb::TaskState>, WorkflowRefusal> {
        self.get(&key(TASK, id))
    }

    pub fn action(&self, id: &str) -> Result<Option<pb::ActionState>, WorkflowRefusal> {
        self.get(&key(ACTION, id))
    }

    /// Up to `limit` task ids that `party` (a unit, or an office's inbox)
    /// lists, in id order after `after`.
    pub fn task_ids_of(
        &self,
        party: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, WorkflowRefusal> {
        self.ids_of(TASK_INDEX, party, after, limit)
    }

    /// As [`Self::task_ids_of`], for joint actions.
    pub fn action_ids_of(
        &self,
        party: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, WorkflowRefusal> {
        self.ids_of(ACTION_INDEX, party, after, limit)
    }

    fn ids_of(
        &self,
        index: &str,
        party: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, WorkflowRefusal> {
        let prefix = index_prefix(index, party);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, _) = item?;
            let Some(id) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            // Ids in key order: those up to `after` were on earlier pages.
            if !after.is_empty() && id <= after.as_bytes() {
                continue;
            }
            out.push(String::from_utf8_lossy(id).into_owned());
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Records what a task or action step changes, into `batch`.
    pub(super) fn apply_task_step(
        &self,
        batch: &mut StateBatch,
        step: Step,
        sender: &str,
        here: pb::EntryPin,
        hub_micros: i64,
    ) -> Result<(), WorkflowRefusal> {
        match step {
            Step::TaskAssignment(a) => {
                let state = pb::TaskState {
                    task_id: a.task_id.clone(),
                    lead: sender.to_string(),
                    assignment_entry: Some(here),
                    assigned_micros: hub_micros,
                    assignees: a.assignees.iter().map(|u| not_started(u)).collect(),
                    assignment: Some(a.clone()),
                    ..Default::default()
                };
                for p in parties(sender, &a.assignees, &a.mechanism) {
                    let mut k = index_prefix(TASK_INDEX, &p);
                    k.extend_from_slice(a.task_id.as_bytes());
                    batch.insert(k, &[][..]);
                }
                batch.insert(key(TASK, &a.task_id), state.encode_to_vec());
            }
            Step::TaskReport(r) => self.update_task(batch, &r.task_id, |t| {
                if let Some(slot) = t.assignees.iter_mut().find(|a| a.unit == sender) {
                    slot.reports += 1;
                    slot.last_report = Some(here.clone());
                    if r.done {
                        slot.state = AssigneeState::Done as i32;
                        slot.completion = Some(here);
                    } else {
                        slot.state = AssigneeState::InProgress as i32;
                    }
                }
            })?,
            Step::TaskReminder(r) => self.update_task(batch, &r.task_id, |t| {
                t.reminders += 1;
                for slot in t.assignees.iter_mut() {
                    let named = if r.units.is_empty() {
                        slot.state != AssigneeState::Done as i32
                    } else {
                        r.units.contains(&slot.unit)
                    };
                    if named {
                        slot.reminders += 1;
                        slot.last_reminder = Some(here.clone());
                    }
                }
            })?,
            Step::TaskAcceptance(a) => self.update_task(batch, &a.task_id, |t| {
                t.acceptance = Some(here);
            })?,
            Step::TaskReturn(r) => self.update_task(batch, &r.task_id, |t| {
                t.returns += 1;
                for slot in t.assignees.iter_mut().filter(|a| r.units.contains(&a.unit)) {
                    slot.state = AssigneeState::Returned as i32;
                    slot.completion = None;
                    slot.last_return = Some(here.clone());
                    slot.return_reason = r.reason.clone();
                }
            })?,
            Step::ActionProposal(p) => {
                let state = pb::ActionState {
                    action_id: p.action_id.clone(),
                    lead: sender.to_string(),
                    proposal_entry: Some(here),
                    participants: p.participants.iter().map(|u| not_answered(u)).collect(),
                    proposal: Some(p.clone()),
                    ..Default::default()
                };
                for party in parties(sender, &p.participants, &p.mechanism) {
                    let mut k = index_prefix(ACTION_INDEX, &party);
                    k.extend_from_slice(p.action_id.as_bytes());
                    batch.insert(k, &[][..]);
                }
                batch.insert(key(ACTION, &p.action_id), state.encode_to_vec());
            }
            Step::ActionAnswer(a) => self.update_action(batch, &a.action_id, |s| {
                if let Some(slot) = s.participants.iter_mut().find(|p| p.unit == sender) {
                    // An answer given again (its first key did not count)
                    // keeps the results of a confirmation; a decline has none.
                    slot.state = match (a.confirm, slot.result.is_some()) {
                        (true, true) => ParticipantState::Reported,
                        (true, false) => ParticipantState::Confirmed,
                        (false, _) => {
                            slot.result = None;
                            ParticipantState::Declined
                        }
                    } as i32;
                    slot.answer = Some(here);
                    slot.reason = a.reason.clone();
                }
            })?,
            Step::ActionResult(r) => self.update_action(batch, &r.action_id, |s| {
                if let Some(slot) = s.participants.iter_mut().find(|p| p.unit == sender) {
                    slot.state = ParticipantState::Reported as i32;
                    slot.result = Some(here);
                }
            })?,
            Step::ActionSummary(sm) => self.update_action(batch, &sm.action_id, |s| {
                s.summary = Some(here);
            })?,
            other => tracing::warn!(
                step = tongbao_proto::workflow::step_name(&other),
                "not a task or action step; skipped"
            ),
        }
        Ok(())
    }

    fn update_task(
        &self,
        batch: &mut StateBatch,
        id: &str,
        change: impl FnOnce(&mut pb::TaskState),
    ) -> Result<(), WorkflowRefusal> {
        match self.task(id)? {
            Some(mut t) => {
                change(&mut t);
                batch.insert(key(TASK, id), t.encode_to_vec());
            }
            None => tracing::warn!(task = id, "workflow step of an unknown task skipped"),
        }
        Ok(())
    }

    fn update_action(
        &self,
        batch: &mut StateBatch,
        id: &str,
        change: impl FnOnce(&mut pb::ActionState),
    ) -> Result<(), WorkflowRefusal> {
        match self.action(id)? {
            Some(mut a) => {
                change(&mut a);
                batch.insert(key(ACTION, id), a.encode_to_vec());
            }
            None => tracing::warn!(action = id, "workflow step of an unknown action skipped"),
        }
        Ok(())
    }
}

fn not_started(unit: &str) -> pb::TaskAssignee {
    pb::TaskAssignee {
        unit: unit.to_string(),
        state: AssigneeState::NotStarted as i32,
        ..Default::default()
    }
}

fn not_answered(unit: &str) -> pb::ActionParticipant {
    pb::ActionParticipant {
        unit: unit.to_string(),
        state: ParticipantState::NotAnswered as i32,
        ..Default::default()
    }
}
