//! The `Workflow` service: workflow steps checked against their state and
//! appended as ordinary signed entries, and the views of that state each
//! party is entitled to.

use super::organizations::{check_code, list_warnings, organization_entries, warning_view};
use super::push::{policy_status, verify_sender_signature};
use super::{HubState, storage_status};
use crate::policy::check_workflow_message;
use crate::workflow::{
    STATISTICS_SETTLE_MICROS, StepContext, WorkflowRefusal, check_closed_period, check_step,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use tongbao_proto::echo::shown;
use tongbao_proto::identity::Principal;
use tongbao_proto::pb::{self, workflow_server::Workflow, workflow_step::Step};
use tongbao_proto::workflow::decode_step;
use tonic::{Request, Response, Status};

/// `tongbao.v1.Workflow` over the shared hub state.
#[derive(Clone)]
pub struct WorkflowService {
    state: Arc<HubState>,
}

impl WorkflowService {
    pub fn new(state: Arc<HubState>) -> Self {
        Self { state }
    }
}

pub(crate) fn refusal_status(e: WorkflowRefusal) -> Status {
    match e {
        WorkflowRefusal::Malformed(m) => Status::invalid_argument(m),
        WorkflowRefusal::NotAllowed(m) => Status::permission_denied(m),
        WorkflowRefusal::WrongState(m) => Status::failed_precondition(m),
        WorkflowRefusal::NotFound(m) => Status::not_found(m),
        WorkflowRefusal::Exists(m) => Status::already_exists(m),
        WorkflowRefusal::Storage(m) => {
            tracing::error!(error = %m, "workflow state storage error");
            Status::internal(format!("workflow state storage error: {m}"))
        }
    }
}

/// The statistics of a mechanism for [since, until) as of a time, from the
/// hub's delivery records: messages by sender and kind, per-unit figures,
/// and every overdue delivery.
pub(crate) fn compute_report(
    state: &HubState,
    mechanism: &str,
    since: i64,
    until: i64,
    as_of: i64,
) -> Result<pb::StatisticsReport, Status> {
    let mut counts: BTreeMap<(String, i32), u64> = BTreeMap::new();
    let mut overdue = Vec::new();
    let mut units = super::audit::UnitTally::default();
    super::audit::scan_whole_period(
        state,
        mechanism,
        since,
        until,
        as_of,
        |row, deadline, deliveries| {
            *counts.entry((row.sender.clone(), row.kind)).or_default() += 1;
            for ((r, _), _) in row
                .deliveries
                .iter()
                .zip(deliveries)
                .filter(|(_, d)| d.overdue)
            {
                overdue.push(pb::OverdueItem {
                    entry: Some(pb::EntryRef {
                        channel: row.channel.clone(),
                        seq: row.seq,
                    }),
                    recipient: r.clone(),
                    deadline_micros: deadline,
                });
            }
            units.add(row, deliveries);
            Ok(true)
        },
    )?;
    let report = pb::StatisticsReport {
        mechanism: mechanism.to_string(),
        since_micros: since,
        until_micros: until,
        as_of_micros: as_of,
        messages: counts
            .into_iter()
            .map(|((unit, kind), count)| pb::KindCount { unit, kind, count })
            .collect(),
        units: units.finish(),
        overdue,
    };
    // A report is circulated as a message body: one too large for a body
    // could be computed but never circulated.
    let max = state.limits.max_body_bytes;
    let size = prost::Message::encoded_len(&report);
    if size > max {
        return Err(Status::resource_exhausted(format!(
            "the report of {mechanism} for that period is {size} bytes, more than a message body \
             may hold ({max}, limits.max_body_bytes); ask for a shorter period (since_micros/until_micros)"
        )));
    }
    Ok(report)
}

/// The mechanism whose office (or lead unit, acting for it) is calling.
fn office_or_lead(state: &HubState, who: &Principal, asked: &str) -> Result<String, Status> {
    match who {
        Principal::Office(m) if asked.is_empty() || asked == m => Ok(m.clone()),
        Principal::Unit(u) if !asked.is_empty() => {
            let registry = state.registry()?;
            let mech = registry.mechanisms.get(asked).ok_or_else(|| {
                Status::not_found(format!(
                    "mechanism {:?} is not in the registry",
                    shown(asked)
                ))
            })?;
            if mech.lead == *u {
                Ok(asked.to_string())
            } else {
                Err(Status::permission_denied(format!(
                    "only the office of {asked} (or its lead unit {}) may do this, not {who}",
                    mech.lead
                )))
            }
        }
        Principal::Unit(_) => Err(Status::invalid_argument(
            "name the mechanism (the lead unit acts for its office)",
        )),
        other => Err(Status::permission_denied(format!(
            "only a mechanism's office (or its lead unit) may do this, not {other}"
        ))),
    }
}

impl WorkflowService {
    async fn submit_step(
        &self,
        unit: String,
        signed: pb::SignedMessage,
    ) -> Result<pb::PushResponse, Status> {
        let state = &self.state;
        let message =
            check_workflow_message(&signed, &unit, &state.limits, tongbao_proto::now_micros())
                .map_err(policy_status)?;
        let digest = verify_sender_signature(state, &unit, &signed, message).await?;
        let step = decode_step(message).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let message_id = message.message_id.clone();
        let appended_before = || -> Result<bool, Status> {
            Ok(state
                .store
                .message(&unit, &message_id)
                .map_err(storage_status)?
                .is_some())
        };
        if let Step::Statistics(report) = &step
            && !appended_before()?
        {
            // Checked in full under the lock below; its shape first here,
            // so that nobody else's report is recomputed.
            self.check(&unit, message, &step)?;
            self.check_figures(report).await?;
        }
        let workflows = &state.workflows;
        let _serial = workflows.serial.lock().await;
        // A step appended earlier whose state write failed is applied
        // before this one is checked against that state.
        workflows
            .recover(state.store.as_ref())
            .map_err(refusal_status)?;
        let retried = appended_before()?;
        if !retried {
            self.check(&unit, message, &step)?;
            workflows
                .note_pending(&unit, &message_id)
                .map_err(refusal_status)?;
        }
        let appended = match state.appender.append(unit.clone(), signed, digest).await {
            Ok(a) => a,
            Err(e) => {
                // Only a refusal means the step is not in the log; after a
                // storage failure it may be, and the next recovery decides.
                if !retried && e.is_refusal() {
                    let _ = workflows.drop_pending(&unit, &message_id);
                }
                return Err(e.into());
            }
        };
        // Applying is idempotent: a repeated step whose first state write
        // failed is applied now. A write that fails again stops the hub
        // rather than answer from a state without the step.
        let applied = if crate::failpoint::fail_once("workflow-apply") {
            Err(Status::internal("failpoint workflow-apply"))
        } else {
            apply_appended(state, &appended)
        };
        if let Err(first) = applied {
            tracing::warn!(error = %first.message(), "a workflow state write failed; trying again");
            if let Err(e) = workflows
                .recover(state.store.as_ref())
                .map_err(refusal_status)
                .and_then(|()| apply_appended(state, &appended))
            {
                crate::fatal::state_behind(format!(
                    "entry {}:{}: {}",
                    appended.channel,
                    appended.seq,
                    e.message()
                ));
                return Err(Status::unavailable(
                    "the hub could not record this step's workflow state and is stopping; the step is in the log and is applied at the next start",
                ));
            }
        }
        Ok(pb::PushResponse::from(appended))
    }

    /// Checks a step against the registry and the workflow state as they
    /// are now.
    fn check(&self, unit: &str, message: &pb::Message, step: &Step) -> Result<(), Status> {
        let state = &self.state;
        let registry = state.registry()?;
        let audience = message.audience.clone().unwrap_or_default();
        let recipients = registry
            .resolve(unit, &audience)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let cx = StepContext {
            workflows: &state.workflows,
            registry: &registry,
            store: state.store.as_ref(),
            sender: unit,
            message,
            recipients: &recipients,
            now_micros: tongbao_proto::now_micros(),
        };
        check_step(&cx, step).map_err(refusal_status)
    }

    /// A circulated report must be the hub's own figures. A closed period's
    /// figures no longer change, so they are recomputed (as heavy work)
    /// before the workflow lock is taken, not under it.
    async fn check_figures(&self, report: &pb::StatisticsReport) -> Result<(), Status> {
        let state = self.state.clone();
        let asked = report.clone();
        let recomputed = self
            .state
            .heavy("statistics check", move || {
                compute_report(
                    &state,
                    &asked.mechanism,
                    asked.since_micros,
                    asked.until_micros,
                    asked.as_of_micros,
                )
            })
            .await?;
        if recomputed != *report {
            return Err(Status::invalid_argument(format!(
                "the figures differ from the hub's own records of {} for that period; compute the report with ComputeStatistics and circulate it unchanged",
                shown(&report.mechanism)
            )));
        }
        Ok(())
    }
}

/// Entries of a case that `who` sent or received, from the case index
/// (caught up first): one read per entry of the case.
fn case_entries(
    state: &HubState,
    who: &Principal,
    case_id: &str,
) -> Result<Vec<pb::GetEntryResponse>, Status> {
    let workflows = &state.workflows;
    workflows
        .index_cases(state.store.as_ref())
        .map_err(refusal_status)?;
    let positions = workflows.case_positions(case_id).map_err(refusal_status)?;
    visible_entries(state, who, positions)
}

/// The entries at `positions` that `who` sent or was addressed (an
/// office: those addressed to its inbox), in hub-time order.
pub(crate) fn visible_entries(
    state: &HubState,
    who: &Principal,
    positions: Vec<(String, u64)>,
) -> Result<Vec<pb::GetEntryResponse>, Status> {
    let store = &state.store;
    let own = match who {
        Principal::Unit(u) => Some(u.as_str()),
        _ => None,
    };
    let inbox = who.inbox();
    let mut found = Vec::new();
    for (channel, seq) in positions {
        let Some(stored) = store.entry(&channel, seq).map_err(storage_status)? else {
            continue;
        };
        let e = &stored.entry;
        let entitled = own == Some(e.channel.as_str())
            || inbox
                .as_ref()
                .is_some_and(|i| e.recipients.iter().any(|r| r == i));
        if entitled {
            found.push(stored);
        }
    }
    found.sort_by(|a, b| {
        (a.entry.hub_micros, &a.entry.channel, a.entry.seq).cmp(&(
            b.entry.hub_micros,
            &b.entry.channel,
            b.entry.seq,
        ))
    });
    Ok(found
        .into_iter()
        .map(|s| pb::GetEntryResponse {
            entry: Some(s.entry),
            leaf_hash: s.leaf_hash.to_vec(),
        })
        .collect())
}

#[tonic::async_trait]
impl Workflow for WorkflowService {
    async fn submit(
        &self,
        request: Request<pb::SubmitStepRequest>,
    ) -> Result<Response<pb::SubmitStepResponse>, Status> {
        let unit = self
            .state
            .authenticate_unit(&request, "take workflow steps")?;
        let signed = request
            .into_inner()
            .step
            .ok_or_else(|| Status::invalid_argument("the request carries no step"))?;
        let appended = self.submit_step(unit, signed).await?;
        Ok(Response::new(pb::SubmitStepResponse {
            appended: Some(appended),
        }))
    }

    async fn get_meeting(
        &self,
        request: Request<pb::GetMeetingRequest>,
    ) -> Result<Response<pb::MeetingState>, Status> {
        let who = self.state.authenticate(&request)?;
        let id = request.into_inner().meeting_id;
        let unseen = || {
            super::not_seen(
                "meeting",
                &id,
                "its attending units, proposer and office",
                &who,
            )
        };
        let m = self
            .state
            .workflows
            .meeting(&id)
            .map_err(refusal_status)?
            .ok_or_else(unseen)?;
        let p = m.proposal.clone().unwrap_or_default();
        let allowed = match &who {
            Principal::Office(mech) => p.mechanisms.contains(mech),
            Principal::Unit(u) => *u == m.proposer || p.attending_units.contains(u),
            _ => false,
        };
        if !allowed {
            return Err(unseen());
        }
        Ok(Response::new(m))
    }

    async fn get_joint_notice(
        &self,
        request: Request<pb::GetJointNoticeRequest>,
    ) -> Result<Response<pb::JointNoticeState>, Status> {
        let who = self.state.authenticate(&request)?;
        let id = request.into_inner().notice_id;
        let unseen = || {
            super::not_seen(
                "joint notice",
                &id,
                "its drafter, co-issuers and office",
                &who,
            )
        };
        let n = self
            .state
            .workflows
            .notice(&id)
            .map_err(refusal_status)?
            .ok_or_else(unseen)?;
        let content = n.content.clone().unwrap_or_default();
        let allowed = match &who {
            Principal::Office(mech) => *mech == content.mechanism,
            Principal::Unit(u) => *u == n.drafter || content.co_issuers.contains(u),
            _ => false,
        };
        if !allowed {
            return Err(unseen());
        }
        Ok(Response::new(n))
    }

    async fn list_liaisons(
        &self,
        request: Request<pb::ListLiaisonsRequest>,
    ) -> Result<Response<pb::ListLiaisonsResponse>, Status> {
        let who = self.state.authenticate(&request)?;
        let mechanism = office_or_lead(&self.state, &who, &request.get_ref().mechanism)?;
        let members: Vec<String> = self
            .state
            .registry()?
            .mechanisms
            .get(&mechanism)
            .map(|m| {
                m.members_at(tongbao_proto::now_micros())
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default();
        let mut units = Vec::with_capacity(members.len());
        for unit in members {
            let history: Vec<pb::LiaisonRecord> = self
                .state
                .workflows
                .liaisons(&unit)
                .map_err(refusal_status)?
                .map(|l| l.history)
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.offices.contains(&mechanism))
                .collect();
            units.push(pb::UnitLiaisons {
                unit,
                current: history.last().cloned(),
                history,
            });
        }
        Ok(Response::new(pb::ListLiaisonsResponse { mechanism, units }))
    }

    async fn compute_statistics(
        &self,
        request: Request<pb::ComputeStatisticsRequest>,
    ) -> Result<Response<pb::StatisticsReport>, Status> {
        let who = self.state.authenticate(&request)?;
        let mechanism = office_or_lead(&self.state, &who, &request.get_ref().mechanism)?;
        let req = request.into_inner();
        let now = tongbao_proto::now_micros();
        // Defaults close the period: as of the latest settled time (or its
        // end, which is then refused as not yet settled).
        let as_of = if req.as_of_micros > 0 {
            req.as_of_micros
        } else {
            (now - STATISTICS_SETTLE_MICROS).max(req.until_micros)
        };
        let until = if req.until_micros > 0 {
            req.until_micros
        } else {
            as_of
        };
        check_closed_period(req.since_micros, until, as_of, now).map_err(refusal_status)?;
        let state = self.state.clone();
        let report = self
            .state
            .heavy("statistics", move || {
                compute_report(&state, &mechanism, req.since_micros, until, as_of)
            })
            .await?;
        Ok(Response::new(report))
    }

    async fn show_case(
        &self,
        request: Request<pb::ShowCaseRequest>,
    ) -> Result<Response<pb::ShowCaseResponse>, Status> {
        let who = self.state.authenticate(&request)?;
        let case_id = request.into_inner().case_id;
        if case_id.is_empty() || case_id.len() > 128 {
            return Err(Status::invalid_argument("a case id has 1 to 128 bytes"));
        }
        let state = self.state.clone();
        let case = case_id.clone();
        let entries = self
            .state
            .heavy("case query", move || case_entries(&state, &who, &case))
            .await?;
        Ok(Response::new(pb::ShowCaseResponse { case_id, entries }))
    }

    async fn show_organization(
        &self,
        request: Request<pb::ShowOrganizationRequest>,
    ) -> Result<Response<pb::ShowOrganizationResponse>, Status> {
        let who = self.state.authenticate(&request)?;
        let credit_code = request.into_inner().credit_code;
        check_code(&credit_code)?;
        let state = self.state.clone();
        let code = credit_code.clone();
        let entries = self
            .state
            .heavy("organization query", move || {
                organization_entries(&state, &who, &code)
            })
            .await?;
        Ok(Response::new(pb::ShowOrganizationResponse {
            credit_code,
            entries,
        }))
    }

    async fn get_warning(
        &self,
        request: Request<pb::GetWarningRequest>,
    ) -> Result<Response<pb::WarningState>, Status> {
        let who = self.state.authenticate(&request)?;
        let id = request.into_inner().warning_id;
        let state = self.state.clone();
        self.state
            .heavy("warning query", move || warning_view(&state, &who, &id))
            .await
            .map(Response::new)
    }

    async fn list_warnings(
        &self,
        request: Request<pb::ListWarningsRequest>,
    ) -> Result<Response<pb::ListWarningsResponse>, Status> {
        let who = self.state.authenticate(&request)?;
        let req = request.into_inner();
        if !req.credit_code.is_empty() {
            check_code(&req.credit_code)?;
        }
        let state = self.state.clone();
        let warnings = self
            .state
            .heavy("warning list", move || list_warnings(&state, &who, &req))
            .await?;
        Ok(Response::new(pb::ListWarningsResponse { warnings }))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::TaskState>, Status> {
        let who = self.state.authenticate(&request)?;
        let id = request.into_inner().task_id;
        let state = self.state.clone();
        self.state
            .heavy("task query", move || {
                super::tasks::get_task(&state, &who, &id)
            })
            .await
            .map(Response::new)
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let who = self.state.authenticate(&request)?;
        let req = request.into_inner();
        let state = self.state.clone();
        self.state
            .heavy("task list", move || {
                super::tasks::list_tasks(&state, &who, &req)
            })
            .await
            .map(Response::new)
    }

    async fn get_action(
        &self,
        request: Request<pb::GetActionRequest>,
    ) -> Result<Response<pb::ActionState>, Status> {
        let who = self.state.authenticate(&request)?;
        let id = request.into_inner().action_id;
        let state = self.state.clone();
        self.state
            .heavy("action query", move || {
                super::tasks::get_action(&state, &who, &id)
            })
            .await
            .map(Response::new)
    }

    async fn list_actions(
        &self,
        request: Request<pb::ListActionsRequest>,
    ) -> Result<Response<pb::ListActionsResponse>, Status> {
        let who = self.state.authenticate(&request)?;
        let req = request.into_inner();
        let state = self.state.clone();
        self.state
            .heavy("action list", move || {
                super::tasks::list_actions(&state, &who, &req)
            })
            .await
            .map(Response::new)
    }
}

/// Applies an appended (or repeated) step to the workflow state.
fn apply_appended(state: &HubState, appended: &crate::appender::Appended) -> Result<(), Status> {
    let stored = state
        .store
        .entry(&appended.channel, appended.seq)
        .map_err(storage_status)?
        .ok_or_else(|| Status::internal("the appended step cannot be read back"))?;
    state
        .workflows
        .apply(&stored.entry, &stored.leaf_hash)
        .map_err(refusal_status)
}
