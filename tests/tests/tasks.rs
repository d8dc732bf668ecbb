//! Tasks (议定事项 / 督办) end to end: assigned by the lead unit from issued
//! minutes or on its own, reported by the assignees, reminded, returned
//! and accepted; the office's view of every task's status, overdue
//! included; every refusal with its status, and membership judged when
//! the task is assigned.

use tongbao_client::PushReceipt;
use tongbao_proto::pb::{self, AssigneeState, Kind, MeetingKind, TaskStatus, workflow_step::Step};
use tongbao_tests::workflow::{ENFORCEMENT, FUND, office};
use tongbao_tests::{BoxError, TestHub, TestResult, refused, wait_until};
use tonic::Code;

const HOUR: i64 = 3_600_000_000;

fn fund_task(id: &str, assignees: &[&str]) -> pb::TaskAssignment {
    pb::TaskAssignment {
        task_id: id.into(),
        mechanism: FUND.into(),
        title: "Check Foundation Y's transfers abroad".into(),
        expected_result: "A report on each transfer and its counterpart".into(),
        assignees: assignees.iter().map(|u| u.to_string()).collect(),
        due_micros: tongbao_proto::now_micros() + 24 * HOUR,
        minutes: None,
        decided_item: String::new(),
    }
}

fn status(t: &pb::TaskState) -> TaskStatus {
    TaskStatus::try_from(t.status).unwrap_or(TaskStatus::Unspecified)
}

fn state_of(t: &pb::TaskState, unit: &str) -> Option<AssigneeState> {
    t.assignees
        .iter()
        .find(|a| a.unit == unit)
        .and_then(|a| AssigneeState::try_from(a.state).ok())
}

fn to_lead_and_office() -> pb::Audience {
    pb::Audience {
        units: vec!["civil-affairs".into()],
        offices: vec![FUND.into()],
        ..Default::default()
    }
}

fn pin_of(r: &PushReceipt) -> pb::EntryPin {
    pb::EntryPin {
        channel: r.channel.clone(),
        seq: r.seq,
        leaf_hash: r.leaf_hash.clone(),
    }
}

fn report_attachment() -> pb::AttachmentDigest {
    pb::AttachmentDigest {
        name: "transfers.xlsx".into(),
        media_type: String::new(),
        size: 4,
        sha256: tongbao_proto::canonical::sha256(b"rows").to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_closes_only_by_acceptance_once_every_assignee_reported_done() -> TestResult {
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let tax = t.unit("tax").await?;
    let finance = t.unit("finance").await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let fund_office = office(&t, FUND).await?;

    // Only the lead unit assigns; ids are unique.
    refused(
        tax.assign_task(fund_task("t-1", &["finance"])).await,
        Code::PermissionDenied,
        "lead unit civil-affairs",
    );
    let assigned = lead
        .assign_task(fund_task("t-1", &["tax", "finance"]))
        .await?;
    assert!(
        assigned
            .recipients
            .contains(&"office:fund-supervision".to_string())
    );
    refused(
        lead.assign_task(fund_task("t-1", &["tax"])).await,
        Code::AlreadyExists,
        "already assigned",
    );
    let mut past = fund_task("t-past", &["tax"]);
    past.due_micros = tongbao_proto::now_micros() - HOUR;
    refused(
        lead.assign_task(past).await,
        Code::InvalidArgument,
        "is not after the assignment's time",
    );
    assert_eq!(
        status(&fund_office.task("t-1").await?),
        TaskStatus::Open,
        "nothing reported yet"
    );

    // A unit that is not an assignee can neither read the task nor report.
    refused(
        pbc.report_task("t-1", false, "me too", vec![]).await,
        Code::NotFound,
        "seen by its lead unit, assignees and office",
    );
    let forged = Step::TaskReport(pb::TaskReport {
        task_id: "t-1".into(),
        assignment: Some(pin_of(&assigned)),
        done: true,
        text: "me too".into(),
        attachments: vec![],
    });
    refused(
        pbc.submit_step(
            Kind::TaskReport,
            "me too",
            forged,
            to_lead_and_office(),
            None,
        )
        .await,
        Code::PermissionDenied,
        "not an assignee of task",
    );

    let progress = tax
        .report_task("t-1", false, "Half the transfers traced", vec![])
        .await?;
    assert_eq!(
        status(&fund_office.task("t-1").await?),
        TaskStatus::InProgress
    );
    // Closing before every assignee reported done.
    refused(
        lead.accept_task("t-1", "").await,
        Code::FailedPrecondition,
        "every assignee reported done",
    );
    let done = tax
        .report_task("t-1", true, "All traced", vec![report_attachment()])
        .await?;
    assert_eq!(done.seq, progress.seq + 1, "a refusal consumed a position");
    refused(
        tax.report_task("t-1", false, "more", vec![]).await,
        Code::FailedPrecondition,
        "already reported task",
    );

    // 督办: the lead unit reminds whoever is not done; it is recorded.
    refused(
        tax.remind_task("t-1", vec!["finance".into()], "hurry")
            .await,
        Code::PermissionDenied,
        "lead unit civil-affairs",
    );
    refused(
        lead.remind_task("t-1", vec!["tax".into()], "").await,
        Code::FailedPrecondition,
        "already reported",
    );
    let reminder = lead.remind_task("t-1", vec![], "Due tomorrow").await?;
    assert_eq!(reminder.recipients, ["finance", "office:fund-supervision"]);
    let seen = fund_office.task("t-1").await?;
    assert_eq!(seen.reminders, 1);
    let finance_row = seen.assignees.iter().find(|a| a.unit == "finance");
    assert_eq!(finance_row.map(|a| a.reminders), Some(1));
    assert_eq!(
        finance_row.and_then(|a| a.last_reminder.clone()),
        Some(pin_of(&reminder))
    );

    finance
        .report_task("t-1", true, "Accounts checked", vec![])
        .await?;
    assert_eq!(status(&fund_office.task("t-1").await?), TaskStatus::Done);

    // Returned with a reason: reopened for tax only.
    refused(
        lead.return_task("t-1", vec!["tax".into()], " ").await,
        Code::InvalidArgument,
        "needs a reason",
    );
    refused(
        lead.return_task("t-1", vec!["pbc-taiyuan".into()], "no")
            .await,
        Code::InvalidArgument,
        "not an assignee",
    );
    lead.return_task("t-1", vec!["tax".into()], "Name each counterpart bank")
        .await?;
    let reopened = fund_office.task("t-1").await?;
    assert_eq!(status(&reopened), TaskStatus::InProgress);
    assert_eq!(state_of(&reopened, "tax"), Some(AssigneeState::Returned));
    assert_eq!(state_of(&reopened, "finance"), Some(AssigneeState::Done));
    refused(
        lead.accept_task("t-1", "").await,
        Code::FailedPrecondition,
        "tax (returned)",
    );
    tax.report_task("t-1", true, "Banks named", vec![report_attachment()])
        .await?;

    // An acceptance names the current completion reports.
    let stale = Step::TaskAcceptance(pb::TaskAcceptance {
        task_id: "t-1".into(),
        completions: vec![pin_of(&done)],
        comments: String::new(),
    });
    let to_all = pb::Audience {
        units: vec!["tax".into(), "finance".into()],
        offices: vec![FUND.into()],
        ..Default::default()
    };
    refused(
        lead.submit_step(Kind::Task, "accept", stale, to_all, None)
            .await,
        Code::InvalidArgument,
        "current completion report",
    );
    lead.accept_task("t-1", "Thank you").await?;
    let closed = fund_office.task("t-1").await?;
    assert_eq!(status(&closed), TaskStatus::Closed);
    assert!(closed.acceptance.is_some());
    refused(
        finance.report_task("t-1", false, "late", vec![]).await,
        Code::FailedPrecondition,
        "is closed",
    );
    refused(
        lead.remind_task("t-1", vec![], "").await,
        Code::FailedPrecondition,
        "is closed",
    );
    t.stop().await
}

/// A fund meeting taken to issued minutes with this text.
async fn issued_minutes(t: &TestHub, id: &str, text: &str) -> Result<PushReceipt, BoxError> {
    let lead = t.unit("civil-affairs").await?;
    lead.propose_meeting(pb::MeetingProposal {
        meeting_id: id.into(),
        mechanisms: vec![FUND.into()],
        kind: MeetingKind::Partial as i32,
        title: "Foundation Y".into(),
        attending_units: vec!["tax".into(), "finance".into()],
        date_micros: tongbao_proto::now_micros(),
        agenda: vec!["Foundation Y".into()],
    })
    .await?;
    lead.settle_agenda(id, vec!["Foundation Y".into()], vec![])
        .await?;
    lead.circulate_minutes(id, text).await?;
    for u in ["tax", "finance"] {
        t.unit(u)
            .await?
            .answer_current_minutes(id, true, "")
            .await?;
    }
    Ok(lead.issue_minutes(id).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_from_minutes_names_the_issue_and_a_decided_item_of_its_text() -> TestResult {
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let issue = issued_minutes(
        &t,
        "m-1",
        "Decided: Tax and Finance audit Foundation Y's 2026 accounts by March.",
    )
    .await?;
    let from = |item: &str, minutes: pb::EntryPin| {
        let mut a = fund_task("t-m", &["tax", "finance"]);
        a.minutes = Some(minutes);
        a.decided_item = item.into();
        a
    };
    refused(
        lead.assign_task(from("audit Foundation Z", pin_of(&issue)))
            .await,
        Code::InvalidArgument,
        "is not in the text of the minutes",
    );
    let draft = lead.meeting("m-1").await?.current_draft.ok_or("no draft")?;
    refused(
        lead.assign_task(from("audit Foundation Y", draft)).await,
        Code::FailedPrecondition,
        "once issued",
    );
    let mut wrong_hash = pin_of(&issue);
    wrong_hash.leaf_hash = vec![0; 32];
    refused(
        lead.assign_task(from("audit Foundation Y", wrong_hash))
            .await,
        Code::InvalidArgument,
        "with that leaf hash does not exist",
    );
    let mut other_mechanism = from("audit Foundation Y", pin_of(&issue));
    other_mechanism.mechanism = ENFORCEMENT.into();
    other_mechanism.assignees = vec!["tax".into()];
    refused(
        lead.assign_task(other_mechanism).await,
        Code::InvalidArgument,
        "not of joint-enforcement",
    );
    let mut no_item = from("", pin_of(&issue));
    no_item.decided_item = String::new();
    refused(
        lead.assign_task(no_item).await,
        Code::InvalidArgument,
        "names the decided item",
    );
    lead.assign_task(from("audit Foundation Y's 2026 accounts", pin_of(&issue)))
        .await?;
    let task = t.unit("tax").await?.task("t-m").await?;
    let a = task.assignment.ok_or("no assignment")?;
    assert_eq!(a.minutes, Some(pin_of(&issue)));
    assert_eq!(a.decided_item, "audit Foundation Y's 2026 accounts");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_office_sees_each_task_status_and_a_task_become_overdue() -> TestResult {
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let fund_office = office(&t, FUND).await?;
    lead.assign_task(fund_task("t-a", &["tax"])).await?;
    let mut soon = fund_task("t-b", &["finance", "tax"]);
    soon.due_micros = tongbao_proto::now_micros() + 1_500_000;
    lead.assign_task(soon).await?;
    assert_eq!(status(&fund_office.task("t-b").await?), TaskStatus::Open);
    // The hub's clock passes the due date; no entry is needed for it.
    wait_until(
        std::time::Duration::from_secs(30),
        "the hub reports t-b overdue",
        || async { Ok(status(&fund_office.task("t-b").await?) == TaskStatus::Overdue) },
    )
    .await?;
    let overdue = fund_office
        .tasks(pb::ListTasksRequest {
            status: TaskStatus::Overdue as i32,
            ..Default::default()
        })
        .await?;
    let ids: Vec<&str> = overdue.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, ["t-b"]);
    let all = fund_office.tasks(pb::ListTasksRequest::default()).await?;
    assert_eq!(all.tasks.len(), 2);
    assert!(all.next_after.is_empty());
    // Paged: one per page, continued from next_after.
    let first = fund_office
        .tasks(pb::ListTasksRequest {
            limit: 1,
            ..Default::default()
        })
        .await?;
    assert_eq!(first.next_after, "t-a");
    let second = fund_office
        .tasks(pb::ListTasksRequest {
            limit: 1,
            after: first.next_after.clone(),
            ..Default::default()
        })
        .await?;
    assert_eq!(
        second.tasks.first().map(|t| t.task_id.as_str()),
        Some("t-b")
    );
    refused(
        fund_office
            .tasks(pb::ListTasksRequest {
                limit: 501,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "more than a page holds",
    );
    // A late completion is done, no longer overdue.
    t.unit("tax")
        .await?
        .report_task("t-b", true, "done late", vec![])
        .await?;
    t.unit("finance")
        .await?
        .report_task("t-b", true, "done late", vec![])
        .await?;
    assert_eq!(status(&fund_office.task("t-b").await?), TaskStatus::Done);

    // Each party lists its own; the other office and other units see none.
    let finance_list = t.unit("finance").await?.tasks(Default::default()).await?;
    assert_eq!(finance_list.tasks.len(), 1);
    let pbc_list = t
        .unit("pbc-taiyuan")
        .await?
        .tasks(Default::default())
        .await?;
    assert!(pbc_list.tasks.is_empty());
    let other = office(&t, ENFORCEMENT).await?;
    refused(
        other.task("t-a").await,
        Code::NotFound,
        "seen by its lead unit",
    );
    refused(
        other
            .tasks(pb::ListTasksRequest {
                mechanism: FUND.into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "lists its own mechanism's",
    );
    assert!(other.tasks(Default::default()).await?.tasks.is_empty());
    refused(fund_office.task("t-none").await, Code::NotFound, "no task");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_is_judged_when_the_task_is_assigned() -> TestResult {
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let now = tongbao_proto::now_micros();
    // Health joins fund supervision next month; Education as of an hour ago.
    for (unit, from) in [("health", now + 720 * HOUR), ("education", now - HOUR)] {
        t.add_member(FUND, unit, from).await?;
    }
    refused(
        lead.assign_task(fund_task("t-h", &["tax", "health"])).await,
        Code::InvalidArgument,
        "health is not a member of fund-supervision at",
    );
    refused(
        lead.assign_task(fund_task("t-h", &["tax", "health"])).await,
        Code::InvalidArgument,
        "it is one only from",
    );
    refused(
        lead.assign_task(fund_task("t-h", &["publicity"])).await,
        Code::InvalidArgument,
        "publicity is not a member of fund-supervision",
    );
    lead.assign_task(fund_task("t-e", &["tax", "education"]))
        .await?;
    t.unit("education")
        .await?
        .report_task("t-e", false, "Started", vec![])
        .await?;
    t.stop().await
}

/// A task's state without the fields the hub fills at its answer.
fn stored(mut t: pb::TaskState) -> pb::TaskState {
    t.status = 0;
    t.as_of_micros = 0;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_and_action_state_is_rebuilt_from_the_entries() -> TestResult {
    let mut t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    lead.assign_task(fund_task("t-r", &["tax", "finance"]))
        .await?;
    t.unit("tax")
        .await?
        .report_task("t-r", true, "Done", vec![report_attachment()])
        .await?;
    lead.remind_task("t-r", vec![], "Finance, please").await?;
    lead.propose_action(pb::ActionProposal {
        action_id: "a-r".into(),
        mechanism: FUND.into(),
        title: "Visit Foundation Y".into(),
        participants: vec!["tax".into()],
        starts_micros: tongbao_proto::now_micros(),
        ends_micros: tongbao_proto::now_micros() + HOUR,
        target_organizations: vec![pb::Organization {
            credit_code: "53140000MJY0001237".into(),
            name: "山西省某某基金会".into(),
        }],
        plan: Some(report_attachment()),
    })
    .await?;
    t.unit("tax").await?.answer_action("a-r", true, "").await?;
    let task_before = stored(lead.task("t-r").await?);
    let action_before = lead.action("a-r").await?;
    let listed_before = t.unit("finance").await?.tasks(Default::default()).await?;
    drop(lead);

    t.restart_with_workflow_state_lost(|_| Ok(())).await?;
    let lead = t.unit("civil-affairs").await?;
    assert_eq!(stored(lead.task("t-r").await?), task_before);
    assert_eq!(lead.action("a-r").await?, action_before);
    let listed_after = t.unit("finance").await?.tasks(Default::default()).await?;
    assert_eq!(
        listed_after
            .tasks
            .into_iter()
            .map(stored)
            .collect::<Vec<_>>(),
        listed_before
            .tasks
            .into_iter()
            .map(stored)
            .collect::<Vec<_>>()
    );
    assert_eq!(task_before.reminders, 1);
    t.stop().await
}
