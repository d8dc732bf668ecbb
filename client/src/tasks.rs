//! Tasks (议定事项 / 督办) and joint enforcement actions (联合执法行动) from
//! a departmental system: each step signed locally and submitted through
//! `Workflow.Submit`, naming the entries it answers by the pins of the
//! signed entries this client fetched and verified itself. A released
//! action summary carries its evidence, which
//! [`Client::verify_action_summary`] checks with the rule of
//! `tongbao_proto::workflow::action`, trusting nothing the hub says.

use crate::client::hub_read;
use crate::workflow::{as_entry, audience_of, dedup, workflow_error};
use crate::{Client, ClientError, Draft, PushReceipt, VerifiedEntry};
use tongbao_proto::pb::{self, AssigneeState, Kind, ParticipantState, workflow_step::Step};
use tongbao_proto::workflow::action::{SummarizedAction, verify_action_summary};
use tongbao_proto::workflow::{CONTENT_TYPE, decode_step, encode_step};

impl Client {
    // ---- tasks ----

    /// Assigns a task (the lead unit): sent to the assignees and the
    /// mechanism's office.
    pub async fn assign_task(&self, a: pb::TaskAssignment) -> Result<PushReceipt, ClientError> {
        let me = self.own_unit()?;
        let audience = audience_of(
            &dedup(a.assignees.clone(), &me),
            std::slice::from_ref(&a.mechanism),
        );
        self.submit_step(
            Kind::Task,
            format!("Task {}: {}", a.task_id, a.title),
            Step::TaskAssignment(a),
            audience,
            None,
        )
        .await
    }

    /// A task's state, with its status at the hub's time.
    pub async fn task(&self, task_id: &str) -> Result<pb::TaskState, ClientError> {
        hub_read!(
            self,
            workflow.get_task(pb::GetTaskRequest {
                task_id: task_id.to_string(),
            })
        )
        .await
    }

    /// A page of the tasks this party leads, is assigned or supervises.
    pub async fn tasks(
        &self,
        request: pb::ListTasksRequest,
    ) -> Result<pb::ListTasksResponse, ClientError> {
        hub_read!(self, workflow.list_tasks(request)).await
    }

    /// The assignment entry of a task, fetched and verified by this client.
    async fn assignment_pin(&self, t: &pb::TaskState) -> Result<pb::EntryPin, ClientError> {
        let pin = t
            .assignment_entry
            .as_ref()
            .ok_or_else(|| workflow_error(format!("task {} has no assignment", t.task_id)))?;
        let entry = self.get_entry(&pin.channel, pin.seq).await?;
        match decode_step(entry.message()) {
            Ok(Step::TaskAssignment(a)) if a.task_id == t.task_id => Ok(entry.pin()),
            _ => Err(workflow_error(format!(
                "{}:{} is not the assignment of task {}",
                pin.channel, pin.seq, t.task_id
            ))),
        }
    }

    fn lead_and_office(lead: &str, mechanism: &str) -> pb::Audience {
        audience_of(&[lead.to_string()], &[mechanism.to_string()])
    }

    /// Reports progress, or with `done` completion (with the digests of
    /// what it delivers), of this unit's part: to the lead and the office.
    pub async fn report_task(
        &self,
        task_id: &str,
        done: bool,
        text: &str,
        attachments: Vec<pb::AttachmentDigest>,
    ) -> Result<PushReceipt, ClientError> {
        let t = self.task(task_id).await?;
        let assignment = self.assignment_pin(&t).await?;
        let mechanism = t.assignment.map(|a| a.mechanism).unwrap_or_default();
        let word = if done { "Completion" } else { "Progress" };
        self.submit_step(
            Kind::TaskReport,
            format!("{word} of task {task_id}"),
            Step::TaskReport(pb::TaskReport {
                task_id: task_id.to_string(),
                assignment: Some(assignment),
                done,
                text: text.to_string(),
                attachments,
            }),
            Self::lead_and_office(&t.lead, &mechanism),
            None,
        )
        .await
    }

    /// Reminds (督办) the named assignees, or every one not done when
    /// `units` is empty (the lead unit).
    pub async fn remind_task(
        &self,
        task_id: &str,
        units: Vec<String>,
        text: &str,
    ) -> Result<PushReceipt, ClientError> {
        let t = self.task(task_id).await?;
        let to = if units.is_empty() {
            t.assignees
                .iter()
                .filter(|a| a.state != AssigneeState::Done as i32)
                .map(|a| a.unit.clone())
                .collect()
        } else {
            units.clone()
        };
        let mechanism = t.assignment.map(|a| a.mechanism).unwrap_or_default();
        self.submit_step(
            Kind::Task,
            format!("Reminder (督办): task {task_id}"),
            Step::TaskReminder(pb::TaskReminder {
                task_id: task_id.to_string(),
                units,
                text: text.to_string(),
            }),
            audience_of(&dedup(to, &self.own_unit()?), &[mechanism]),
            None,
        )
        .await
    }

    /// Accepts the result (the lead unit), naming every assignee's current
    /// completion report; this closes the task.
    pub async fn accept_task(
        &self,
        task_id: &str,
        comments: &str,
    ) -> Result<PushReceipt, ClientError> {
        let t = self.task(task_id).await?;
        let completions = t
            .assignees
            .iter()
            .filter_map(|a| a.completion.clone())
            .collect();
        let a = t.assignment.unwrap_or_default();
        self.submit_step(
            Kind::Task,
            format!("Task {task_id} accepted"),
            Step::TaskAcceptance(pb::TaskAcceptance {
                task_id: task_id.to_string(),
                completions,
                comments: comments.to_string(),
            }),
            audience_of(&dedup(a.assignees, &self.own_unit()?), &[a.mechanism]),
            None,
        )
        .await
    }

    /// Returns the completed parts of `units` with a reason (the lead
    /// unit); the task reopens for them.
    pub async fn return_task(
        &self,
        task_id: &str,
        units: Vec<String>,
        reason: &str,
    ) -> Result<PushReceipt, ClientError> {
        let t = self.task(task_id).await?;
        let mechanism = t.assignment.map(|a| a.mechanism).unwrap_or_default();
        self.submit_step(
            Kind::Task,
            format!("Task {task_id} returned"),
            Step::TaskReturn(pb::TaskReturn {
                task_id: task_id.to_string(),
                units: units.clone(),
                reason: reason.to_string(),
            }),
            audience_of(&dedup(units, &self.own_unit()?), &[mechanism]),
            None,
        )
        .await
    }

    // ---- joint enforcement actions ----

    /// Proposes a joint action (the lead unit): sent to the participants
    /// and the mechanism's office. The message's references name the
    /// target organizations (the rule of
    /// `tongbao_proto::workflow::action::check_proposal_references`), so
    /// `organization` finds the action under each of them.
    pub async fn propose_action(&self, p: pb::ActionProposal) -> Result<PushReceipt, ClientError> {
        let me = self.own_unit()?;
        let audience = audience_of(
            &dedup(p.participants.clone(), &me),
            std::slice::from_ref(&p.mechanism),
        );
        let subject = format!("Joint action {}: {}", p.action_id, p.title);
        let targets = p.target_organizations.clone();
        let mut draft = Draft::new(
            Kind::JointAction,
            subject,
            encode_step(Step::ActionProposal(p)),
        )
        .with_content_type(CONTENT_TYPE);
        draft.audience = audience;
        for o in targets {
            draft = draft.about(o.credit_code, o.name);
        }
        let signed = self.sign(draft)?;
        self.submit_signed(signed).await
    }

    /// A joint action's state: who has not answered or reported.
    pub async fn action(&self, action_id: &str) -> Result<pb::ActionState, ClientError> {
        hub_read!(
            self,
            workflow.get_action(pb::GetActionRequest {
                action_id: action_id.to_string(),
            })
        )
        .await
    }

    /// A page of the joint actions this party leads, joins or supervises.
    pub async fn actions(
        &self,
        request: pb::ListActionsRequest,
    ) -> Result<pb::ListActionsResponse, ClientError> {
        hub_read!(self, workflow.list_actions(request)).await
    }

    /// The proposal entry of an action, fetched and verified by this client.
    async fn proposal_pin(&self, a: &pb::ActionState) -> Result<pb::EntryPin, ClientError> {
        let pin = a.proposal_entry.as_ref().ok_or_else(|| {
            workflow_error(format!("joint action {} has no proposal", a.action_id))
        })?;
        let entry = self.get_entry(&pin.channel, pin.seq).await?;
        match decode_step(entry.message()) {
            Ok(Step::ActionProposal(p)) if p.action_id == a.action_id => Ok(entry.pin()),
            _ => Err(workflow_error(format!(
                "{}:{} is not the proposal of joint action {}",
                pin.channel, pin.seq, a.action_id
            ))),
        }
    }

    /// Confirms a joint action, or declines it with a reason.
    pub async fn answer_action(
        &self,
        action_id: &str,
        confirm: bool,
        reason: &str,
    ) -> Result<PushReceipt, ClientError> {
        let a = self.action(action_id).await?;
        let proposal = self.proposal_pin(&a).await?;
        let mechanism = a.proposal.map(|p| p.mechanism).unwrap_or_default();
        let word = if confirm { "Confirmation" } else { "Decline" };
        self.submit_step(
            Kind::ActionReport,
            format!("{word} of joint action {action_id}"),
            Step::ActionAnswer(pb::ActionAnswer {
                action_id: action_id.to_string(),
                proposal: Some(proposal),
                confirm,
                reason: reason.to_string(),
            }),
            Self::lead_and_office(&a.lead, &mechanism),
            None,
        )
        .await
    }

    /// Reports this unit's results of a joint action it confirmed.
    pub async fn report_action(
        &self,
        action_id: &str,
        text: &str,
        attachments: Vec<pb::AttachmentDigest>,
    ) -> Result<PushReceipt, ClientError> {
        let a = self.action(action_id).await?;
        let proposal = self.proposal_pin(&a).await?;
        let mechanism = a.proposal.map(|p| p.mechanism).unwrap_or_default();
        self.submit_step(
            Kind::ActionReport,
            format!("Results of joint action {action_id}"),
            Step::ActionResult(pb::ActionResult {
                action_id: action_id.to_string(),
                proposal: Some(proposal),
                text: text.to_string(),
                attachments,
            }),
            Self::lead_and_office(&a.lead, &mechanism),
            None,
        )
        .await
    }

    /// Releases the summary (the lead unit): the proposal, every answer and
    /// every result travel in it, to the participants and the office.
    pub async fn summarize_action(
        &self,
        action_id: &str,
        text: &str,
    ) -> Result<PushReceipt, ClientError> {
        let a = self.action(action_id).await?;
        let fetch = |p: &pb::EntryPin| {
            let (channel, seq) = (p.channel.clone(), p.seq);
            async move { Ok::<_, ClientError>(as_entry(self.get_entry(&channel, seq).await?)) }
        };
        let proposal = match &a.proposal_entry {
            Some(p) => Some(fetch(p).await?),
            None => None,
        };
        let mut answers = Vec::new();
        let mut results = Vec::new();
        for p in &a.participants {
            if let Some(pin) = &p.answer {
                answers.push(fetch(pin).await?);
            }
            if p.state == ParticipantState::Reported as i32
                && let Some(pin) = &p.result
            {
                results.push(fetch(pin).await?);
            }
        }
        let units: Vec<String> = a.participants.iter().map(|p| p.unit.clone()).collect();
        let mechanism = a.proposal.map(|p| p.mechanism).unwrap_or_default();
        self.submit_step(
            Kind::JointAction,
            format!("Summary of joint action {action_id}"),
            Step::ActionSummary(pb::ActionSummary {
                action_id: action_id.to_string(),
                proposal,
                answers,
                results,
                text: text.to_string(),
            }),
            audience_of(&units, &[mechanism]),
            None,
        )
        .await
    }

    /// Verifies, from the entries it embeds, that a summary entry proves
    /// every participant's answer and every confirmed participant's
    /// results, each under a key valid at its entry's hub time.
    pub async fn verify_action_summary(
        &self,
        entry: &VerifiedEntry,
    ) -> Result<SummarizedAction, ClientError> {
        let fail = |reason: String| ClientError::Integrity {
            channel: entry.channel().to_string(),
            seq: entry.seq(),
            reason,
        };
        let step = decode_step(entry.message()).map_err(|e| fail(e.to_string()))?;
        let Step::ActionSummary(summary) = step else {
            return Err(fail("this entry is not a joint action summary".into()));
        };
        let ring = self.key_ring().await?;
        verify_action_summary(&entry.message().sender, &summary, &ring)
            .map_err(|e| fail(e.to_string()))
    }
}
