//! Meetings and minutes end to end, and the rules every workflow step
//! meets at the hub: minutes issued only with every consent, workflow
//! kinds never pushed around the checks, state rebuilt from the entries,
//! membership judged when a step is appended, a failed state write
//! applied before the answer. Joint notices and escalation are in
//! `joint_notices`, liaisons, statistics and cases in `workflow_records`.

use tongbao_client::{Client, ClientError};
use tongbao_proto::pb::{self, AnswerState, Kind, MeetingStage};
use tongbao_proto::workflow::encode_step;
use tongbao_tests::workflow::{
    FUND, answers, forged_issue_without, fund_meeting, fund_minutes_audience, fund_notice,
    inbox_entry, office, office_of_other, to_lead_and_office,
};
use tongbao_tests::{TestHub, TestResult, refused};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minutes_are_issued_only_when_every_attending_unit_consented_to_the_same_draft()
-> TestResult {
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let finance = t.unit("finance").await?;
    let tax = t.unit("tax").await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let outsider = t.unit("public-security").await?;

    // Only the lead unit (for the office) proposes; ids are unique.
    refused(
        tax.propose_meeting(fund_meeting("m-1")).await,
        Code::PermissionDenied,
        "lead unit civil-affairs",
    );
    let mut bad = fund_meeting("m-1");
    bad.attending_units.push("health".into());
    refused(
        lead.propose_meeting(bad).await,
        Code::InvalidArgument,
        "not a member",
    );
    let proposed = lead.propose_meeting(fund_meeting("m-1")).await?;
    assert!(
        proposed
            .recipients
            .contains(&"office:fund-supervision".to_string())
    );
    refused(
        lead.propose_meeting(fund_meeting("m-1")).await,
        Code::AlreadyExists,
        "already proposed",
    );

    // Agenda by correspondence: attending units propose and comment.
    let item = finance
        .agenda_item("m-1", "Foundation Y's transfers abroad", None)
        .await?;
    let item_pin = pb::EntryPin {
        channel: item.channel.clone(),
        seq: item.seq,
        leaf_hash: item.leaf_hash.clone(),
    };
    tax.agenda_item("m-1", "Add its tax filings", Some(item_pin.clone()))
        .await?;
    // The outsider cannot even read the meeting; it signs the step itself.
    refused(
        outsider.agenda_item("m-1", "me too", None).await,
        Code::NotFound,
        "seen by its attending units",
    );
    refused(
        outsider
            .submit_step(
                Kind::MeetingAgenda,
                "me too",
                pb::workflow_step::Step::AgendaItem(pb::AgendaItem {
                    meeting_id: "m-1".into(),
                    text: "me too".into(),
                    comment_on: None,
                }),
                to_lead_and_office(),
                None,
            )
            .await,
        Code::PermissionDenied,
        "not an attending unit",
    );
    refused(
        tax.settle_agenda("m-1", vec!["x".into()], vec![]).await,
        Code::PermissionDenied,
        "settled by its proposer",
    );
    refused(
        lead.circulate_minutes("m-1", "too early").await,
        Code::FailedPrecondition,
        "settle the agenda",
    );
    lead.settle_agenda(
        "m-1",
        vec!["Review of Q4 leads".into(), "Foundation Y".into()],
        vec![item_pin],
    )
    .await?;
    refused(
        pbc.agenda_item("m-1", "late item", None).await,
        Code::FailedPrecondition,
        "settled",
    );

    // Minutes: drafted by the office (lead unit) only.
    refused(
        finance.circulate_minutes("m-1", "my minutes").await,
        Code::PermissionDenied,
        "circulated by its office",
    );
    let draft1 = lead
        .circulate_minutes("m-1", "Agreed: refer Y to Public Security.")
        .await?;
    let draft1_pin = pb::EntryPin {
        channel: draft1.channel.clone(),
        seq: draft1.seq,
        leaf_hash: draft1.leaf_hash.clone(),
    };
    finance.answer_current_minutes("m-1", true, "").await?;
    refused(
        tax.answer_current_minutes("m-1", false, "").await,
        Code::InvalidArgument,
        "objection needs comments",
    );
    tax.answer_current_minutes("m-1", false, "Name the tax findings too")
        .await?;
    refused(
        finance.answer_current_minutes("m-1", true, "").await,
        Code::FailedPrecondition,
        "already answered",
    );
    refused(
        outsider
            .submit_step(
                Kind::MinutesConsent,
                "consent",
                pb::workflow_step::Step::MinutesAnswer(pb::MinutesAnswer {
                    meeting_id: "m-1".into(),
                    draft: Some(draft1_pin.clone()),
                    consent: true,
                    comments: String::new(),
                }),
                to_lead_and_office(),
                None,
            )
            .await,
        Code::PermissionDenied,
        "not an attending unit",
    );

    // The office sees who has not answered.
    let office = office(&t, FUND).await?;
    let seen = office.meeting("m-1").await?;
    assert_eq!(seen.stage, MeetingStage::MinutesDrafted as i32);
    assert_eq!(
        answers(&seen),
        vec![
            ("finance".to_string(), AnswerState::Consented as i32),
            ("tax".to_string(), AnswerState::Objected as i32),
            ("pbc-taiyuan".to_string(), AnswerState::NotAnswered as i32),
        ]
    );
    refused(
        office_of_other(&t).await?.meeting("m-1").await,
        Code::NotFound,
        "attending units",
    );

    // Refused while answers are missing or objecting.
    refused(
        lead.issue_minutes("m-1").await,
        Code::FailedPrecondition,
        "tax (objected), pbc-taiyuan (not answered)",
    );

    // A revised draft supersedes the first; consents restart.
    let draft2 = lead
        .circulate_minutes(
            "m-1",
            "Agreed: refer Y to Public Security; Tax reviews filings.",
        )
        .await?;
    let m = lead.meeting("m-1").await?;
    assert_eq!(m.current_revision, 2);
    assert!(
        m.answers
            .iter()
            .all(|a| a.state == AnswerState::NotAnswered as i32)
    );
    refused(
        pbc.answer_minutes("m-1", draft1_pin, true, "").await,
        Code::FailedPrecondition,
        "superseded",
    );
    finance.answer_current_minutes("m-1", true, "").await?;
    tax.answer_current_minutes("m-1", true, "").await?;

    // Minutes issued with one consent missing: refused.
    refused(
        lead.issue_minutes("m-1").await,
        Code::FailedPrecondition,
        "pbc-taiyuan (not answered)",
    );
    pbc.answer_current_minutes("m-1", true, "").await?;

    // An issue carrying fewer consents than the hub recorded is refused too.
    let forged = forged_issue_without(&lead, "m-1", "tax").await?;
    refused(
        lead.submit_step(
            Kind::Minutes,
            "forged",
            forged,
            fund_minutes_audience(),
            None,
        )
        .await,
        Code::InvalidArgument,
        "no consent from tax",
    );

    let issued = lead.issue_minutes("m-1").await?;
    assert_eq!(
        lead.meeting("m-1").await?.stage,
        MeetingStage::MinutesIssued as i32
    );
    refused(
        lead.circulate_minutes("m-1", "again").await,
        Code::FailedPrecondition,
        "issued",
    );

    // Anyone entitled verifies the issue from the consents themselves.
    let entry = pbc.get_entry(&issued.channel, issued.seq).await?;
    let proof = pbc.verify_minutes(&entry).await?;
    assert_eq!(proof.consents.len(), 3);
    assert_eq!(proof.draft.leaf_hash, draft2.leaf_hash);
    assert!(proof.text.contains("Tax reviews"));
    let in_office = inbox_entry(&office, Kind::Minutes).await?;
    assert!(in_office.is_some());
    // A minutes draft is not an issue.
    let not_issue = pbc.get_entry(&draft2.channel, draft2.seq).await?;
    assert!(matches!(
        pbc.verify_minutes(&not_issue).await,
        Err(ClientError::Integrity { .. })
    ));
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_kinds_cannot_be_pushed_around_the_checks() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    refused(
        tax.push(
            tongbao_client::Draft::new(Kind::Minutes, "Minutes issued", "all agreed")
                .to_units(["finance"]),
        )
        .await,
        Code::InvalidArgument,
        "Workflow.Submit",
    );
    // A workflow kind whose body is not its step.
    refused(
        tax.submit_signed(tax.sign(
            tongbao_client::Draft::new(Kind::LiaisonChange, "liaison", "free text").to_office(FUND),
        )?)
        .await,
        Code::InvalidArgument,
        "content type",
    );
    // Submitting a step again returns the first answer.
    let change = pb::LiaisonChange {
        name: "Li Na".into(),
        title: "Deputy director".into(),
        contact: "li@example.org".into(),
    };
    let signed = tax.sign(
        tongbao_client::Draft::new(
            Kind::LiaisonChange,
            "liaison",
            encode_step(pb::workflow_step::Step::LiaisonChange(change)),
        )
        .with_content_type(tongbao_proto::workflow::CONTENT_TYPE)
        .to_office(FUND),
    )?;
    let first = tax.submit_signed(signed.clone()).await?;
    let again = tax.submit_signed(signed).await?;
    assert!(again.duplicate);
    assert_eq!((again.channel, again.seq), (first.channel, first.seq));
    let dir = office(&t, FUND).await?.liaisons("").await?;
    let tax_row = dir.units.iter().find(|u| u.unit == "tax").ok_or("no tax")?;
    assert_eq!(tax_row.history.len(), 1);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_state_is_rebuilt_from_the_entries() -> TestResult {
    let mut t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    t.unit("tax")
        .await?
        .push(
            tongbao_client::Draft::new(Kind::Lead, "Lead", "org W")
                .to_units(["civil-affairs"])
                .with_case("C-9"),
        )
        .await?;
    assert_eq!(lead.case("C-9").await?.len(), 1);
    lead.propose_meeting(fund_meeting("m-9")).await?;
    lead.settle_agenda("m-9", vec!["One item".into()], vec![])
        .await?;
    lead.circulate_minutes("m-9", "Draft").await?;
    t.unit("tax")
        .await?
        .answer_current_minutes("m-9", true, "")
        .await?;
    let before = lead.meeting("m-9").await?;
    drop(lead);

    // The workflow database earlier hubs kept beside the store is removed
    // at start.
    let old = t.pki.hub_config()?.hub.data_dir.join("workflow");
    t.restart_with_workflow_state_lost(|_| {
        std::fs::create_dir(&old)?;
        std::fs::write(old.join("db"), b"old")?;
        Ok(())
    })
    .await?;
    let lead = t.unit("civil-affairs").await?;
    let after = lead.meeting("m-9").await?;
    assert_eq!(after, before);
    assert!(!old.exists(), "the old workflow database is removed");
    // The case index is rebuilt too.
    assert_eq!(lead.case("C-9").await?.len(), 1);
    assert_eq!(
        answers(&after)[1],
        ("tax".to_string(), AnswerState::Consented as i32)
    );
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_is_judged_when_the_step_is_appended() -> TestResult {
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let now = tongbao_proto::now_micros();
    // Health joins fund supervision next month; Education as of an hour ago.
    let month = 30 * 24 * 3_600_000_000;
    for (unit, from) in [("health", now + month), ("education", now - 3_600_000_000)] {
        t.add_member(FUND, unit, from).await?;
    }
    let with = |unit: &str, id: &str| {
        let mut p = fund_meeting(id);
        p.attending_units.push(unit.into());
        p
    };
    refused(
        lead.propose_meeting(with("health", "m-now")).await,
        Code::InvalidArgument,
        "\"health\" is not a member of fund-supervision at",
    );
    refused(
        lead.propose_meeting(with("health", "m-now")).await,
        Code::InvalidArgument,
        "it is one only from",
    );
    let mut notice = fund_notice();
    notice.co_issuers.push("health".into());
    refused(
        t.unit("finance")
            .await?
            .draft_joint(Kind::JointNotice, "n-m", notice)
            .await,
        Code::InvalidArgument,
        "health is not a member of fund-supervision",
    );
    refused(
        t.unit("health")
            .await?
            .report_liaison(
                &[FUND.into()],
                pb::LiaisonChange {
                    name: "Sun Hua".into(),
                    title: "Chief".into(),
                    contact: "0351-2".into(),
                },
            )
            .await,
        Code::PermissionDenied,
        "only from",
    );
    // A unit that joined before the meeting is proposed takes part.
    lead.propose_meeting(with("education", "m-now")).await?;
    let education = t.unit("education").await?;
    assert_eq!(
        education
            .meeting("m-now")
            .await?
            .proposal
            .map(|p| p.attending_units.len()),
        Some(4)
    );
    education
        .report_liaison(
            &[FUND.into()],
            pb::LiaisonChange {
                name: "Zhou Lan".into(),
                title: "Chief".into(),
                contact: "0351-3".into(),
            },
        )
        .await?;
    let dir = office(&t, FUND).await?.liaisons("").await?;
    assert!(dir.units.iter().any(|u| u.unit == "education"));
    assert!(!dir.units.iter().any(|u| u.unit == "health"));
    t.stop().await
}

/// A step whose state write fails after it was appended is in the log:
/// the hub writes the state again before it answers, so the next step
/// and every read see it (a second failure stops the hub instead, and the
/// next start applies the step).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_state_write_failed_is_applied_before_the_answer() -> TestResult {
    let pki = tongbao_tests::TestPki::generate()?;
    let hub = tongbao_tests::HubProcess::start_at_failpoint(
        &pki,
        env!("CARGO_BIN_EXE_tongbao-test-hub"),
        "workflow-apply:fail-once",
    )?;
    let lead = Client::connect(&pki.unit_config("civil-affairs", hub.addr)?).await?;
    let finance = Client::connect(&pki.unit_config("finance", hub.addr)?).await?;
    lead.propose_meeting(fund_meeting("m-f")).await?;
    // The agenda item is checked against (and addressed from) a state
    // that has the proposal.
    finance
        .agenda_item("m-f", "Item after a failed write", None)
        .await?;
    let meeting = lead.meeting("m-f").await?;
    assert_eq!(meeting.proposer, "civil-affairs");
    assert_eq!(meeting.agenda_items.len(), 1);
    refused(
        lead.propose_meeting(fund_meeting("m-f")).await,
        Code::AlreadyExists,
        "already proposed",
    );
    Ok(())
}
