//! What each party sees of a task, a joint action and a joint warning: a
//! party sees an entry only if it sent it or was addressed. The lead and
//! the office see every step; an assignee or participant does not see
//! another unit's reports, answers, decline reasons, results or the
//! reminders and returns addressed to others, in a single view or a list;
//! a refused warning view does not name its mechanism; and the views read
//! the store on the heavy pool.

use tongbao_client::{Client, NewWarning, PushReceipt};
use tongbao_proto::pb::{self, WarningLevel};
use tongbao_tests::workflow::{ENFORCEMENT, FUND, office};
use tongbao_tests::{BoxError, TestHub, TestResult, code_of, wait_until};
use tonic::Code;

const HOUR: i64 = 3_600_000_000;
/// Only catches a hang.
const HANG: std::time::Duration = std::time::Duration::from_secs(60);
/// Meant for finance alone: no other assignee may read it in a view.
const RETURN_REASON: &str = "Name each counterpart bank of the 2025 transfers";
const DECLINE_REASON: &str = "No inspectors free that day";

fn pin_of(r: &PushReceipt) -> Option<pb::EntryPin> {
    Some(pb::EntryPin {
        channel: r.channel.clone(),
        seq: r.seq,
        leaf_hash: r.leaf_hash.clone(),
    })
}

fn fund_task(id: &str, assignees: &[&str]) -> pb::TaskAssignment {
    pb::TaskAssignment {
        task_id: id.into(),
        mechanism: FUND.into(),
        title: "Check Foundation Y's transfers abroad".into(),
        expected_result: "A report on each transfer".into(),
        assignees: assignees.iter().map(|u| u.to_string()).collect(),
        due_micros: tongbao_proto::now_micros() + 24 * HOUR,
        minutes: None,
        decided_item: String::new(),
    }
}

fn slot<'a>(t: &'a pb::TaskState, unit: &str) -> Result<&'a pb::TaskAssignee, BoxError> {
    t.assignees
        .iter()
        .find(|a| a.unit == unit)
        .ok_or_else(|| format!("no assignee {unit}").into())
}

fn part<'a>(a: &'a pb::ActionState, unit: &str) -> Result<&'a pb::ActionParticipant, BoxError> {
    a.participants
        .iter()
        .find(|p| p.unit == unit)
        .ok_or_else(|| format!("no participant {unit}").into())
}

/// The task `id` as `c` lists it.
async fn listed_task(c: &Client, id: &str) -> Result<pb::TaskState, BoxError> {
    let page = c.tasks(pb::ListTasksRequest::default()).await?;
    Ok(page
        .tasks
        .into_iter()
        .find(|t| t.task_id == id)
        .ok_or("the task is not listed")?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignee_sees_only_the_task_entries_addressed_to_it() -> TestResult {
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let tax = t.unit("tax").await?;
    let finance = t.unit("finance").await?;
    let fund_office = office(&t, FUND).await?;
    lead.assign_task(fund_task("t-v", &["tax", "finance"]))
        .await?;
    let tax_report = tax
        .report_task("t-v", false, "Half the transfers traced", vec![])
        .await?;
    let finance_done = finance
        .report_task("t-v", true, "Accounts checked", vec![])
        .await?;
    let to_tax = lead
        .remind_task("t-v", vec!["tax".into()], "Due soon")
        .await?;
    let returned = lead
        .return_task("t-v", vec!["finance".into()], RETURN_REASON)
        .await?;

    // The lead and the office see every step.
    for whole in [lead.task("t-v").await?, fund_office.task("t-v").await?] {
        assert_eq!(slot(&whole, "finance")?.return_reason, RETURN_REASON);
        assert_eq!(slot(&whole, "finance")?.last_report, pin_of(&finance_done));
        assert_eq!(slot(&whole, "tax")?.last_report, pin_of(&tax_report));
        assert_eq!(slot(&whole, "tax")?.last_reminder, pin_of(&to_tax));
        assert_eq!((whole.reminders, whole.returns), (1, 1));
    }

    // Tax, in a view and in a list: nothing of finance's report or return.
    for seen in [tax.task("t-v").await?, listed_task(&tax, "t-v").await?] {
        let other = slot(&seen, "finance")?;
        assert_eq!(other.return_reason, "", "the return went to finance only");
        assert_eq!(other.last_return, None);
        assert_eq!(
            (other.last_report.clone(), other.completion.clone()),
            (None, None)
        );
        assert_eq!(other.reports, 0);
        assert_eq!(other.state, pb::AssigneeState::Returned as i32);
        let own = slot(&seen, "tax")?;
        assert_eq!(own.last_report, pin_of(&tax_report));
        assert_eq!(
            (own.reminders, own.last_reminder.clone()),
            (1, pin_of(&to_tax))
        );
        assert_eq!((seen.reminders, seen.returns), (1, 0));
    }

    // Finance: its own return and reason, not tax's report or reminder.
    for seen in [
        finance.task("t-v").await?,
        listed_task(&finance, "t-v").await?,
    ] {
        let own = slot(&seen, "finance")?;
        assert_eq!(own.return_reason, RETURN_REASON);
        assert_eq!(own.last_return, pin_of(&returned));
        let other = slot(&seen, "tax")?;
        assert_eq!(
            (other.last_report.clone(), other.last_reminder.clone()),
            (None, None)
        );
        assert_eq!((other.reports, other.reminders), (0, 0));
        assert_eq!(seen.reminders, 0, "no reminder named finance");
    }

    // A reminder addressed to both shows in each one's view of the other.
    let to_both = lead.remind_task("t-v", vec![], "Both, by Friday").await?;
    let by_tax = tax.task("t-v").await?;
    assert_eq!(slot(&by_tax, "finance")?.last_reminder, pin_of(&to_both));
    assert_eq!(slot(&by_tax, "finance")?.return_reason, "");
    let by_finance = finance.task("t-v").await?;
    assert_eq!(slot(&by_finance, "tax")?.last_reminder, pin_of(&to_both));
    t.stop().await
}

fn inspection(id: &str, participants: &[&str]) -> pb::ActionProposal {
    let now = tongbao_proto::now_micros();
    pb::ActionProposal {
        action_id: id.into(),
        mechanism: ENFORCEMENT.into(),
        title: "Inspection of the Provincial Association X".into(),
        participants: participants.iter().map(|u| u.to_string()).collect(),
        starts_micros: now,
        ends_micros: now + 8 * HOUR,
        target_organizations: vec![pb::Organization {
            credit_code: "51140000MJ0000012R".into(),
            name: "Provincial Association X".into(),
        }],
        plan: Some(pb::AttachmentDigest {
            name: "plan.pdf".into(),
            media_type: "application/pdf".into(),
            size: 4,
            sha256: tongbao_proto::canonical::sha256(b"plan").to_vec(),
        }),
    }
}

/// The action `id` as `c` lists it.
async fn listed_action(c: &Client, id: &str) -> Result<pb::ActionState, BoxError> {
    let page = c.actions(pb::ListActionsRequest::default()).await?;
    Ok(page
        .actions
        .into_iter()
        .find(|a| a.action_id == id)
        .ok_or("the action is not listed")?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_sees_others_answers_and_results_only_in_the_summary() -> TestResult {
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let tax = t.unit("tax").await?;
    let health = t.unit("health").await?;
    let enforcement = office(&t, ENFORCEMENT).await?;
    lead.propose_action(inspection("a-v", &["tax", "health"]))
        .await?;
    let confirmed = tax.answer_action("a-v", true, "").await?;
    let results = tax.report_action("a-v", "Books seized", vec![]).await?;
    let declined = health.answer_action("a-v", false, DECLINE_REASON).await?;

    for whole in [lead.action("a-v").await?, enforcement.action("a-v").await?] {
        assert_eq!(part(&whole, "health")?.reason, DECLINE_REASON);
        assert_eq!(part(&whole, "health")?.answer, pin_of(&declined));
        assert_eq!(part(&whole, "tax")?.result, pin_of(&results));
    }
    for seen in [tax.action("a-v").await?, listed_action(&tax, "a-v").await?] {
        let other = part(&seen, "health")?;
        assert_eq!(other.reason, "", "the decline went to the lead and office");
        assert_eq!(other.answer, None);
        assert_eq!(other.state, pb::ParticipantState::Declined as i32);
        assert_eq!(part(&seen, "tax")?.result, pin_of(&results));
    }
    for seen in [
        health.action("a-v").await?,
        listed_action(&health, "a-v").await?,
    ] {
        let other = part(&seen, "tax")?;
        assert_eq!((other.answer.clone(), other.result.clone()), (None, None));
        assert_eq!(part(&seen, "health")?.reason, DECLINE_REASON);
    }

    // The summary goes to every participant and embeds every answer.
    lead.summarize_action("a-v", "Association X inspected")
        .await?;
    let after = health.action("a-v").await?;
    assert_eq!(part(&after, "tax")?.answer, pin_of(&confirmed));
    assert_eq!(part(&after, "tax")?.result, pin_of(&results));
    assert_eq!(
        part(&tax.action("a-v").await?, "health")?.reason,
        DECLINE_REASON
    );
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_warning_view_does_not_name_its_mechanism() -> TestResult {
    let t = TestHub::start().await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let lead = pbc
        .push(
            tongbao_client::Draft::new(pb::Kind::Lead, "Transfers abroad", "12 transfers")
                .to_units(["public-security"])
                .about("51140000MJ0000012R", ""),
        )
        .await?;
    pbc.issue_warning(NewWarning {
        warning_id: "w-v".into(),
        mechanism: FUND.into(),
        organization: pb::Organization {
            credit_code: "51140000MJ0000012R".into(),
            name: "山西省某某协会".into(),
        },
        level: WarningLevel::Caution,
        grounds: "abnormal fund movements".into(),
        evidence: pin_of(&lead).into_iter().collect(),
    })
    .await?;
    let outsider = t.unit("education").await?;
    let refused = outsider
        .warning("w-v")
        .await
        .err()
        .ok_or("education read it")?;
    // Seen by others, or never issued: one answer, so that no party
    // learns which ids exist.
    assert_eq!(code_of(&refused), Some(Code::NotFound));
    let said = refused.to_string();
    assert!(said.contains("may see"), "{said}");
    assert!(!said.contains(FUND), "names the mechanism: {said}");
    let missing = outsider.warning("w-none").await.err().ok_or("found")?;
    assert_eq!(code_of(&missing), Some(Code::NotFound));
    assert_eq!(missing.to_string().replace("w-none", "w-v"), said);
    t.stop().await
}

/// Task, action and warning views read the store on the heavy pool (a
/// blocking network call on PostgreSQL), not on the exchange's workers:
/// each view waits at the pool's hold point until let go, then answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_run_on_the_heavy_pool() -> TestResult {
    use tongbao_tests::{HubProcess, TestPki};
    const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");
    let pki = TestPki::generate()?;
    let (hub, holds) = HubProcess::start_holding(&pki, HUB, "heavy-work", &[])?;
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    let views: [(&str, Code); 5] = [
        ("GetTask", Code::NotFound),
        ("ListTasks", Code::Ok),
        ("GetAction", Code::NotFound),
        ("ListActions", Code::Ok),
        ("GetWarning", Code::NotFound),
    ];
    for (k, (view, answer)) in (1u64..).zip(views) {
        let c = tax.clone();
        let asked = tokio::spawn(async move {
            let r = match view {
                "GetTask" => c.task("none").await.map(|_| ()),
                "ListTasks" => c.tasks(Default::default()).await.map(|_| ()),
                "GetAction" => c.action("none").await.map(|_| ()),
                "ListActions" => c.actions(Default::default()).await.map(|_| ()),
                _ => c.warning("none").await.map(|_| ()),
            };
            r.err().and_then(|e| code_of(&e)).unwrap_or(Code::Ok)
        });
        let what = format!("{view} waits on the heavy pool");
        wait_until(HANG, &what, || {
            let reached = holds.reached(k);
            async move { Ok(reached) }
        })
        .await?;
        assert!(!asked.is_finished(), "{view} answered while held");
        holds.release(k)?;
        assert_eq!(asked.await?, answer, "{view}");
    }
    hub.kill()?;
    Ok(())
}
