//! Joint enforcement actions (联合执法行动) end to end: proposed by the lead
//! unit, confirmed or declined by each participant, reported, and
//! summarized with every answer and result embedded; the office's view of
//! who has not confirmed or reported; every refusal with its status; and
//! a released summary checked offline, a tampered report refused.

use tongbao_client::{Client, ClientError, Draft, KeyRing, PushReceipt};
use tongbao_proto::pb::{self, Kind, workflow_step::Step};
use tongbao_proto::workflow::action::{ProvenPart, verify_action_summary};
use tongbao_proto::workflow::{CONTENT_TYPE, decode_step, encode_step};
use tongbao_tests::workflow::{ENFORCEMENT, office};
use tongbao_tests::{BoxError, TestHub, TestResult, assert_nothing_stored, refused};
use tonic::Code;

const HOUR: i64 = 3_600_000_000;
/// Valid unified social credit codes (check characters computed
/// independently of the code under test).
const ASSOCIATION: &str = "51140000MJ0000012R";
const FOUNDATION: &str = "53140000MJY0001237";

fn org(code: &str, name: &str) -> pb::Organization {
    pb::Organization {
        credit_code: code.into(),
        name: name.into(),
    }
}

fn inspection(id: &str, participants: &[&str]) -> pb::ActionProposal {
    let now = tongbao_proto::now_micros();
    pb::ActionProposal {
        action_id: id.into(),
        mechanism: ENFORCEMENT.into(),
        title: "Inspection of the provincial association".into(),
        participants: participants.iter().map(|u| u.to_string()).collect(),
        starts_micros: now,
        ends_micros: now + 8 * HOUR,
        target_organizations: vec![org(ASSOCIATION, "山西省某某协会")],
        plan: Some(pb::AttachmentDigest {
            name: "plan.pdf".into(),
            media_type: "application/pdf".into(),
            size: 4,
            sha256: tongbao_proto::canonical::sha256(b"plan").to_vec(),
        }),
    }
}

fn to_lead_and_office() -> pb::Audience {
    pb::Audience {
        units: vec!["civil-affairs".into()],
        offices: vec![ENFORCEMENT.into()],
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

/// An action a-1 with public-security and tax confirmed and reported and
/// health declined; returns the proposal's receipt.
async fn reported_action(t: &TestHub) -> Result<PushReceipt, BoxError> {
    let lead = t.unit("civil-affairs").await?;
    let proposed = lead
        .propose_action(inspection("a-1", &["public-security", "tax", "health"]))
        .await?;
    for u in ["public-security", "tax"] {
        let c = t.unit(u).await?;
        c.answer_action("a-1", true, "").await?;
        c.report_action("a-1", &format!("{u}: books and accounts seized"), vec![])
            .await?;
    }
    t.unit("health")
        .await?
        .answer_action("a-1", false, "No inspectors free that day")
        .await?;
    Ok(proposed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_goes_out_once_every_confirmed_participant_reported() -> TestResult {
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let ps = t.unit("public-security").await?;
    let tax = t.unit("tax").await?;
    let health = t.unit("health").await?;
    let education = t.unit("education").await?;
    let enforcement = office(&t, ENFORCEMENT).await?;

    refused(
        tax.propose_action(inspection("a-1", &["health"])).await,
        Code::PermissionDenied,
        "lead unit civil-affairs",
    );
    let mut no_targets = inspection("a-1", &["tax"]);
    no_targets.target_organizations.clear();
    refused(
        lead.propose_action(no_targets).await,
        Code::InvalidArgument,
        "at least one target organization",
    );
    let mut no_plan = inspection("a-1", &["tax"]);
    no_plan.plan = None;
    refused(
        lead.propose_action(no_plan).await,
        Code::InvalidArgument,
        "plan as an attachment digest",
    );
    let proposed = lead
        .propose_action(inspection("a-1", &["public-security", "tax", "health"]))
        .await?;
    assert!(
        proposed
            .recipients
            .contains(&"office:joint-enforcement".to_string())
    );
    refused(
        lead.propose_action(inspection("a-1", &["tax"])).await,
        Code::AlreadyExists,
        "already proposed",
    );

    // A unit not named cannot answer.
    let answer = |confirm: bool| {
        Step::ActionAnswer(pb::ActionAnswer {
            action_id: "a-1".into(),
            proposal: Some(pin_of(&proposed)),
            confirm,
            reason: String::new(),
        })
    };
    refused(
        education
            .submit_step(
                Kind::ActionReport,
                "yes",
                answer(true),
                to_lead_and_office(),
                None,
            )
            .await,
        Code::PermissionDenied,
        "not a participant",
    );
    ps.answer_action("a-1", true, "").await?;
    refused(
        ps.answer_action("a-1", false, "changed my mind").await,
        Code::FailedPrecondition,
        "already answered",
    );
    refused(
        health.answer_action("a-1", false, "").await,
        Code::InvalidArgument,
        "needs a reason",
    );
    health
        .answer_action("a-1", false, "No inspectors free that day")
        .await?;
    // A participant who declined reports nothing; one who has not
    // confirmed reports nothing yet.
    refused(
        health.report_action("a-1", "found nothing", vec![]).await,
        Code::FailedPrecondition,
        "declined",
    );
    refused(
        tax.report_action("a-1", "seized", vec![]).await,
        Code::FailedPrecondition,
        "has not confirmed",
    );
    let waiting = enforcement.action("a-1").await?;
    assert_eq!(waiting.not_answered, ["tax"]);
    assert_eq!(waiting.not_reported, ["public-security"]);
    refused(
        lead.summarize_action("a-1", "Summary").await,
        Code::FailedPrecondition,
        "tax (not answered)",
    );
    tax.answer_action("a-1", true, "").await?;
    ps.report_action("a-1", "Books seized", vec![]).await?;
    // A summary before every confirmed participant reported.
    refused(
        lead.summarize_action("a-1", "Summary").await,
        Code::FailedPrecondition,
        "tax (confirmed, no results)",
    );
    let after = enforcement.action("a-1").await?;
    assert!(after.not_answered.is_empty());
    assert_eq!(after.not_reported, ["tax"]);
    tax.report_action("a-1", "Tax filings copied", vec![])
        .await?;
    refused(
        tax.report_action("a-1", "again", vec![]).await,
        Code::FailedPrecondition,
        "already reported",
    );
    assert!(enforcement.action("a-1").await?.not_reported.is_empty());

    // Only the lead unit releases the summary.
    let s = lead.action("a-1").await?;
    let get = |p: &Option<pb::EntryPin>| {
        let p = p.clone();
        let lead = &lead;
        async move {
            let p = p.ok_or("missing pin")?;
            Ok::<_, BoxError>(lead.get_entry(&p.channel, p.seq).await?.into_entry())
        }
    };
    let mut answers = Vec::new();
    let mut results = Vec::new();
    for p in &s.participants {
        answers.push(get(&p.answer).await?);
        if p.result.is_some() {
            results.push(get(&p.result).await?);
        }
    }
    let summary = pb::ActionSummary {
        action_id: "a-1".into(),
        proposal: Some(get(&s.proposal_entry).await?),
        answers: answers.clone(),
        results: results.clone(),
        text: "Summary".into(),
    };
    let to_all = pb::Audience {
        units: vec!["public-security".into(), "tax".into(), "health".into()],
        offices: vec![ENFORCEMENT.into()],
        ..Default::default()
    };
    refused(
        tax.submit_step(
            Kind::JointAction,
            "summary",
            Step::ActionSummary(summary.clone()),
            to_all.clone(),
            None,
        )
        .await,
        Code::PermissionDenied,
        "summarized by its lead unit",
    );
    // Nor without a report in it.
    let short = pb::ActionSummary {
        results: results[..1].to_vec(),
        ..summary.clone()
    };
    refused(
        lead.submit_step(
            Kind::JointAction,
            "summary",
            Step::ActionSummary(short),
            to_all.clone(),
            None,
        )
        .await,
        Code::InvalidArgument,
        "confirmed, no results",
    );
    let released = lead
        .summarize_action("a-1", "Two units reported; Health declined")
        .await?;
    refused(
        lead.summarize_action("a-1", "again").await,
        Code::FailedPrecondition,
        "already summarized",
    );

    // Every participant checks the summary from what it embeds.
    let entry = health.get_entry(&released.channel, released.seq).await?;
    let proven = health.verify_action_summary(&entry).await?;
    let units: Vec<&str> = proven.parts.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(units, ["public-security", "tax", "health"]);
    assert!(
        matches!(&proven.parts[2].1, ProvenPart::Declined { reason, .. }
        if reason == "No inspectors free that day")
    );
    assert!(
        matches!(&proven.parts[1].1, ProvenPart::Reported { text, .. }
        if text == "Tax filings copied")
    );
    let listed = enforcement.actions(Default::default()).await?;
    assert_eq!(listed.actions.len(), 1);
    assert!(listed.actions[0].summary.is_some());
    assert!(
        education
            .actions(Default::default())
            .await?
            .actions
            .is_empty()
    );
    refused(
        education.action("a-1").await,
        Code::NotFound,
        "seen by its lead unit, participants and office",
    );
    t.stop().await
}

/// Changes the text of the first embedded result after it was signed.
fn tamper_first_result(s: &mut pb::ActionSummary) -> TestResult {
    let m = s
        .results
        .first_mut()
        .and_then(|e| e.message.as_mut())
        .and_then(|s| s.message.as_mut())
        .ok_or("no result")?;
    let Ok(Step::ActionResult(mut r)) = decode_step(m) else {
        return Err("not a result".into());
    };
    r.text = "Nothing found".into();
    m.body = encode_step(Step::ActionResult(r)).into();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_summary_is_checked_offline_and_a_tampered_report_is_refused() -> TestResult {
    let t = TestHub::start().await?;
    reported_action(&t).await?;
    let lead = t.unit("civil-affairs").await?;
    // The hub refuses a summary embedding a changed report.
    let state = lead.action("a-1").await?;
    let fetch = |p: &Option<pb::EntryPin>| {
        let p = p.clone();
        let lead = &lead;
        async move {
            let p = p.ok_or("missing pin")?;
            Ok::<_, BoxError>(lead.get_entry(&p.channel, p.seq).await?.into_entry())
        }
    };
    let mut forged = pb::ActionSummary {
        action_id: "a-1".into(),
        proposal: Some(fetch(&state.proposal_entry).await?),
        text: "Done".into(),
        ..Default::default()
    };
    for p in &state.participants {
        forged.answers.push(fetch(&p.answer).await?);
        if p.result.is_some() {
            forged.results.push(fetch(&p.result).await?);
        }
    }
    tamper_first_result(&mut forged)?;
    refused(
        lead.submit_step(
            Kind::JointAction,
            "summary",
            Step::ActionSummary(forged),
            pb::Audience {
                units: vec!["public-security".into(), "tax".into(), "health".into()],
                offices: vec![ENFORCEMENT.into()],
                ..Default::default()
            },
            None,
        )
        .await,
        Code::InvalidArgument,
        "differs from entry",
    );
    let released = lead.summarize_action("a-1", "Done").await?;
    let tax = t.unit("tax").await?;
    let entry = tax.get_entry(&released.channel, released.seq).await?;
    let sender = entry.message().sender.clone();
    let Ok(Step::ActionSummary(summary)) = decode_step(entry.message()) else {
        return Err("the released entry is not a summary".into());
    };
    // Offline: the registry's keys (as any verifier holds them) and the entry.
    let ring = KeyRing::from_registry(&tax.list_units().await?);
    let proven = verify_action_summary(&sender, &summary, &ring)?;
    assert_eq!(proven.parts.len(), 3);

    // A report whose text was changed after it was signed.
    let mut tampered = summary.clone();
    tamper_first_result(&mut tampered)?;
    let err = verify_action_summary(&sender, &tampered, &ring)
        .err()
        .ok_or("a tampered report verified")?;
    assert!(err.to_string().contains("does not verify"), "{err}");
    // A report moved over from a participant that declined.
    let mut swapped = summary.clone();
    swapped.results.pop();
    let err = verify_action_summary(&sender, &swapped, &ring)
        .err()
        .ok_or("a summary without a result verified")?;
    assert!(err.to_string().contains("no results"), "{err}");
    // The summary's own signer must be the proposer.
    assert!(verify_action_summary("tax", &summary, &ring).is_err());
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_is_judged_when_the_action_is_proposed() -> TestResult {
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let now = tongbao_proto::now_micros();
    for (unit, from) in [("finance", now + 720 * HOUR), ("pbc-taiyuan", now - HOUR)] {
        t.add_member(ENFORCEMENT, unit, from).await?;
    }
    refused(
        lead.propose_action(inspection("a-f", &["tax", "finance"]))
            .await,
        Code::InvalidArgument,
        "finance is not a member of joint-enforcement at",
    );
    lead.propose_action(inspection("a-p", &["tax", "pbc-taiyuan"]))
        .await?;
    t.unit("pbc-taiyuan")
        .await?
        .answer_action("a-p", true, "")
        .await?;
    // A future start: results come after the action started.
    let mut later = inspection("a-l", &["tax"]);
    later.starts_micros = now + 24 * HOUR;
    later.ends_micros = now + 25 * HOUR;
    lead.propose_action(later).await?;
    let tax = t.unit("tax").await?;
    tax.answer_action("a-l", true, "").await?;
    refused(
        tax.report_action("a-l", "early", vec![]).await,
        Code::FailedPrecondition,
        "results come after it started",
    );
    t.stop().await
}

/// Submits a proposal whose message's references name `orgs`, whatever
/// its targets (the library names exactly the targets).
async fn propose_naming(
    lead: &Client,
    p: pb::ActionProposal,
    orgs: &[pb::Organization],
) -> Result<PushReceipt, ClientError> {
    let mut draft = Draft::new(
        Kind::JointAction,
        "raw proposal",
        encode_step(Step::ActionProposal(p.clone())),
    )
    .with_content_type(CONTENT_TYPE)
    .to_units(p.participants)
    .to_office(ENFORCEMENT);
    for o in orgs {
        draft = draft.about(o.credit_code.clone(), o.name.clone());
    }
    lead.submit_signed(lead.sign(draft)?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_organizations_are_credit_codes_the_references_name() -> TestResult {
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let targeting = |targets: Vec<pb::Organization>| {
        let mut p = inspection("a-t", &["tax", "health"]);
        p.target_organizations = targets;
        p
    };
    // A bad code is refused with what is wrong, whether the references
    // repeat it (the library) or not.
    for (code, words) in [
        ("51140000MJ0000012X", "the check character is 'X'"),
        ("Provincial Association X", "has 24 characters"),
        ("51140000MJ0000O12R", "is not one of 0-9"),
        ("511A0000MJ0000012R", "administrative division"),
    ] {
        let p = targeting(vec![org(ASSOCIATION, ""), org(code, "")]);
        refused(
            lead.propose_action(p.clone()).await,
            Code::InvalidArgument,
            words,
        );
        refused(
            propose_naming(&lead, p, &[]).await,
            Code::InvalidArgument,
            words,
        );
    }
    // A long input is never echoed back whole.
    let long = targeting(vec![org(&"9".repeat(64 * 1024), "")]);
    for r in [
        lead.propose_action(long.clone()).await,
        propose_naming(&lead, long, &[]).await,
    ] {
        let e = r.err().ok_or("a 64 KiB code was taken")?;
        assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
        assert!(e.to_string().len() < 512, "{} bytes", e.to_string().len());
    }
    let twice = targeting(vec![org(ASSOCIATION, ""), org(ASSOCIATION, "again")]);
    refused(
        propose_naming(&lead, twice, &[]).await,
        Code::InvalidArgument,
        "named twice",
    );
    // More than a message may name: the references' bound, or the
    // targets' own when the references do not repeat them.
    let many = targeting(vec![org(ASSOCIATION, ""); 17]);
    refused(
        lead.propose_action(many.clone()).await,
        Code::ResourceExhausted,
        "at most 16",
    );
    refused(
        propose_naming(&lead, many, &[]).await,
        Code::InvalidArgument,
        "at most 16",
    );
    // The references name exactly the targets: codes, names and order.
    let both = vec![org(ASSOCIATION, "山西省某某协会"), org(FOUNDATION, "")];
    let renamed = vec![org(ASSOCIATION, "another name"), org(FOUNDATION, "")];
    let reversed: Vec<pb::Organization> = both.iter().rev().cloned().collect();
    for named in [&[][..], &both[..1], &renamed, &reversed] {
        refused(
            propose_naming(&lead, targeting(both.clone()), named).await,
            Code::InvalidArgument,
            "references.organizations",
        );
    }
    let mut extra = both.clone();
    extra.push(org("53140000730001234G", ""));
    refused(
        propose_naming(&lead, targeting(both.clone()), &extra).await,
        Code::InvalidArgument,
        "references.organizations",
    );
    assert_nothing_stored(&t).await?;
    assert!(
        t.unit("health")
            .await?
            .pull(0, 10)
            .await?
            .entries
            .is_empty()
    );

    // Named exactly, by the library or by hand, a proposal is taken.
    let first = lead.propose_action(targeting(both.clone())).await?;
    assert_eq!(
        first.seq, 0,
        "a refused proposal consumed a sequence number"
    );
    let mut again = targeting(both.clone());
    again.action_id = "a-u".into();
    propose_naming(&lead, again, &both).await?;
    let seen = t
        .unit("tax")
        .await?
        .get_entry(&first.channel, first.seq)
        .await?;
    let named = seen
        .message()
        .references
        .as_ref()
        .map(|r| r.organizations.clone())
        .unwrap_or_default();
    assert_eq!(named, both);
    let shown = lead.action("a-t").await?;
    assert_eq!(
        shown
            .proposal
            .map(|p| p.target_organizations)
            .unwrap_or_default(),
        both
    );
    t.stop().await
}

/// Submits a summary of a-1 built from the entries as the hub serves
/// them, without the library's checks.
async fn submit_raw_summary(
    t: &TestHub,
    lead: &Client,
) -> Result<PushReceipt, tongbao_client::ClientError> {
    let fail = |e: BoxError| tongbao_client::ClientError::Workflow(e.to_string());
    let state = lead.action("a-1").await?;
    let channel = tongbao_tests::raw_channel(&t.pki, "civil-affairs", t.addr)
        .await
        .map_err(fail)?;
    let mut exchange = pb::exchange_client::ExchangeClient::new(channel);
    let mut raw = async |p: &Option<pb::EntryPin>| -> Result<pb::Entry, BoxError> {
        let p = p.clone().ok_or("missing pin")?;
        exchange
            .get_entry(pb::GetEntryRequest {
                channel: p.channel,
                seq: p.seq,
            })
            .await?
            .into_inner()
            .entry
            .ok_or_else(|| "no entry".into())
    };
    let mut summary = pb::ActionSummary {
        action_id: "a-1".into(),
        proposal: Some(raw(&state.proposal_entry).await.map_err(fail)?),
        text: "Done".into(),
        ..Default::default()
    };
    for p in &state.participants {
        summary.answers.push(raw(&p.answer).await.map_err(fail)?);
        if p.result.is_some() {
            summary.results.push(raw(&p.result).await.map_err(fail)?);
        }
    }
    lead.submit_step(
        Kind::JointAction,
        "summary",
        Step::ActionSummary(summary),
        pb::Audience {
            units: vec!["public-security".into(), "tax".into(), "health".into()],
            offices: vec![ENFORCEMENT.into()],
            ..Default::default()
        },
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_or_result_made_after_its_key_was_retired_does_not_count() -> TestResult {
    let t = TestHub::start().await?;
    reported_action(&t).await?;
    let lead = t.unit("civil-affairs").await?;
    let tax = t.unit("tax").await?;
    // Tax rotates its key; the operator then dates the old key's end back
    // to before Tax's answer (say it leaked then).
    let state = lead.action("a-1").await?;
    let answered = state
        .participants
        .iter()
        .find(|p| p.unit == "tax")
        .and_then(|p| p.answer.clone())
        .ok_or("tax has not answered")?;
    t.retire_key_back_to(
        &tax,
        "tax",
        (&answered.channel, answered.seq),
        "the key leaked before the answer",
    )
    .await?;
    // The library refuses to embed an entry that no longer verifies; the
    // hub refuses the summary built by hand.
    assert!(lead.summarize_action("a-1", "Done").await.is_err());
    refused(
        submit_raw_summary(&t, &lead).await,
        Code::FailedPrecondition,
        "tax answers again with its current key",
    );
    // Others may not answer again; Tax may, and keeps its part.
    refused(
        t.unit("public-security")
            .await?
            .answer_action("a-1", true, "")
            .await,
        Code::FailedPrecondition,
        "already answered",
    );
    tax.answer_action("a-1", true, "").await?;
    refused(
        submit_raw_summary(&t, &lead).await,
        Code::FailedPrecondition,
        "tax reports its results again with its current key",
    );
    tax.report_action("a-1", "Tax filings copied again", vec![])
        .await?;
    let released = lead.summarize_action("a-1", "Done").await?;
    let entry = tax.get_entry(&released.channel, released.seq).await?;
    let proven = tax.verify_action_summary(&entry).await?;
    assert!(
        matches!(&proven.parts[1].1, ProvenPart::Reported { text, .. }
        if text == "Tax filings copied again")
    );
    t.stop().await
}
