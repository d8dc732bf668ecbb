//! Joint notices (联合通报) and escalation (上报) end to end: a notice goes
//! out once every named co-issuer signed the same content, an escalation
//! comes from issued minutes or an entry of its case, and a co-signature
//! or consent made with a key later retired back before it stops counting.

use tongbao_client::ClientError;
use tongbao_proto::pb::{self, Kind};
use tongbao_proto::workflow::{SourceProof, decode_step, encode_step};
use tongbao_tests::workflow::{
    ENFORCEMENT, FUND, consent_all, drafted_fund_minutes, escalation, fund_minutes_audience,
    fund_notice, inbox_entry, leading_group, raw_entry, source,
};
use tongbao_tests::{BoxError, TestHub, TestResult, note, refused};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joint_notice_goes_out_once_every_named_co_issuer_signed() -> TestResult {
    let t = TestHub::start().await?;
    let finance = t.unit("finance").await?;
    let tax = t.unit("tax").await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let ps = t.unit("public-security").await?;

    let mut not_member = fund_notice();
    not_member.co_issuers = vec!["health".into()];
    refused(
        finance
            .draft_joint(Kind::JointNotice, "n-1", not_member)
            .await,
        Code::InvalidArgument,
        "not a member",
    );
    let draft = finance
        .draft_joint(Kind::JointNotice, "n-1", fund_notice())
        .await?;
    assert_eq!(draft.recipients, vec!["pbc-taiyuan", "tax"]);

    // A co-signature by a unit not named as co-issuer.
    refused(
        ps.co_sign("n-1").await,
        Code::NotFound,
        "seen by its drafter",
    );
    let stranger_signature = pb::workflow_step::Step::CoSignature(pb::CoSignature {
        notice_id: "n-1".into(),
        draft: Some(pb::EntryPin {
            channel: draft.channel.clone(),
            seq: draft.seq,
            leaf_hash: draft.leaf_hash.clone(),
        }),
        content_digest: tongbao_proto::workflow::content_digest(&fund_notice()).to_vec(),
    });
    refused(
        ps.submit_step(
            Kind::CoSignature,
            "co-signature",
            stranger_signature,
            pb::Audience {
                units: vec!["finance".into()],
                ..Default::default()
            },
            None,
        )
        .await,
        Code::PermissionDenied,
        "not named as a co-issuer",
    );
    tax.co_sign("n-1").await?;
    refused(
        tax.co_sign("n-1").await,
        Code::FailedPrecondition,
        "already co-signed",
    );
    refused(
        finance.release_joint("n-1").await,
        Code::FailedPrecondition,
        "missing pbc-taiyuan",
    );
    let state = finance.joint_notice("n-1").await?;
    assert_eq!(state.not_signed, vec!["pbc-taiyuan"]);
    refused(
        tax.release_joint("n-1").await,
        Code::PermissionDenied,
        "sent out by its drafter",
    );
    pbc.co_sign("n-1").await?;
    let released = finance.release_joint("n-1").await?;
    assert!(released.recipients.contains(&"state-security".to_string()));
    refused(
        pbc.co_sign("n-1").await,
        Code::FailedPrecondition,
        "gone out",
    );

    // A recipient verifies every co-signature itself.
    let ss = t.unit("state-security").await?;
    let entry = inbox_entry(&ss, Kind::JointNotice)
        .await?
        .ok_or("the notice did not arrive")?;
    let proof = ss.verify_joint_release(&entry).await?;
    assert_eq!(proof.co_signatures.len(), 2);
    assert_eq!(proof.content.title, fund_notice().title);
    // The draft itself never reached State Security.
    assert_eq!(ss.pull(0, 100).await?.entries.len(), 1);

    // A release whose embedded co-signature was altered does not verify.
    let mut tampered = entry.clone();
    if let Some(m) = std::sync::Arc::make_mut(&mut tampered.entry)
        .message
        .as_mut()
        .and_then(|s| s.message.as_mut())
    {
        let mut step = decode_step(m)?;
        if let pb::workflow_step::Step::JointRelease(r) = &mut step
            && let Some(c) = r
                .co_signatures
                .first_mut()
                .and_then(|e| e.message.as_mut())
                .and_then(|s| s.message.as_mut())
        {
            c.subject = "changed".into();
        }
        m.body = encode_step(step).into();
    }
    assert!(matches!(
        ss.verify_joint_release(&tampered).await,
        Err(ClientError::Integrity { .. })
    ));
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_goes_from_the_lead_unit_with_co_signers_to_the_leading_group() -> TestResult {
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let ps = t.unit("public-security").await?;
    // The case entry the escalation comes from, sent to the lead unit.
    let opened = ps
        .push(
            tongbao_client::Draft::new(Kind::CaseUpdate, "Case opened", "organization Z")
                .to_units(["civil-affairs"])
                .with_case("C-2026-9"),
        )
        .await?;
    let content = pb::JointContent {
        title: "Illegal organization Z recruiting nationwide".into(),
        text: "Requesting a coordinated ban.".into(),
        mechanism: ENFORCEMENT.into(),
        co_issuers: vec!["public-security".into()],
        audience: Some(pb::Audience {
            leading_group: true,
            offices: vec![ENFORCEMENT.into()],
            ..Default::default()
        }),
        case_id: "C-2026-9".into(),
        source_entry: Some(pb::EntryRef {
            channel: opened.channel.clone(),
            seq: opened.seq,
        }),
    };
    // An escalation not sent by the lead unit.
    let mut by_member = content.clone();
    by_member.co_issuers = vec!["tax".into()];
    refused(
        ps.draft_joint(Kind::Escalation, "e-1", by_member).await,
        Code::PermissionDenied,
        "sent by its lead unit civil-affairs",
    );
    let mut sourceless = content.clone();
    sourceless.source_entry = None;
    refused(
        lead.draft_joint(Kind::Escalation, "e-1", sourceless).await,
        Code::InvalidArgument,
        "minutes or the case",
    );
    let mut to_units = content.clone();
    to_units.audience = Some(pb::Audience {
        units: vec!["tax".into()],
        ..Default::default()
    });
    refused(
        lead.draft_joint(Kind::Escalation, "e-1", to_units).await,
        Code::InvalidArgument,
        "leading group",
    );
    lead.draft_joint(Kind::Escalation, "e-1", content).await?;
    ps.co_sign("e-1").await?;
    lead.release_joint("e-1").await?;

    let group = leading_group(&t).await?;
    let entry = inbox_entry(&group, Kind::Escalation)
        .await?
        .ok_or("the escalation did not arrive")?;
    let proof = group.verify_joint_release(&entry).await?;
    assert_eq!(proof.drafter, "civil-affairs");
    assert_eq!(proof.content.case_id, "C-2026-9");
    assert_eq!(proof.co_signatures.len(), 1);
    assert!(matches!(
        proof.source,
        Some(SourceProof::CaseEntry { ref sender, .. }) if sender == "public-security"
    ));
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_comes_from_issued_minutes_or_an_entry_of_its_case() -> TestResult {
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let ps = t.unit("public-security").await?;
    let case_entry = ps
        .push(
            tongbao_client::Draft::new(Kind::CaseUpdate, "Case opened", "file 12")
                .to_units(["civil-affairs"])
                .with_case("C-12"),
        )
        .await?;
    let plain = ps.push(note("no case").to_units(["civil-affairs"])).await?;
    let not_to_lead = ps
        .push(
            tongbao_client::Draft::new(Kind::CaseUpdate, "Restricted", "file 12")
                .to_units(["tax"])
                .with_case("C-12"),
        )
        .await?;
    let draft = drafted_fund_minutes(&t, "m-src").await?;
    let before = lead.joint_notice("e-src").await;
    refused(before, Code::NotFound, "no joint notice");

    // Each refusal names what would be accepted, and records nothing.
    refused(
        lead.draft_joint(
            Kind::Escalation,
            "e-src",
            escalation(FUND, "C-12", source(&plain)),
        )
        .await,
        Code::InvalidArgument,
        "neither issued minutes nor an entry of the named case",
    );
    refused(
        lead.draft_joint(
            Kind::Escalation,
            "e-src",
            escalation(FUND, "C-13", source(&case_entry)),
        )
        .await,
        Code::InvalidArgument,
        "names case \"C-12\", not \"C-13\"",
    );
    refused(
        lead.draft_joint(
            Kind::Escalation,
            "e-src",
            escalation(FUND, "C-12", source(&not_to_lead)),
        )
        .await,
        Code::PermissionDenied,
        "not addressed to civil-affairs",
    );
    let missing = Some(pb::EntryRef {
        channel: "public-security".into(),
        seq: 999,
    });
    refused(
        lead.draft_joint(Kind::Escalation, "e-src", escalation(FUND, "", missing))
            .await,
        Code::InvalidArgument,
        "does not exist",
    );
    refused(
        lead.draft_joint(
            Kind::Escalation,
            "e-src",
            escalation(FUND, "", source(&draft)),
        )
        .await,
        Code::FailedPrecondition,
        "not issued minutes",
    );
    refused(
        lead.joint_notice("e-src").await,
        Code::NotFound,
        "no joint notice",
    );

    // Once issued, the minutes are a source, for their own mechanism only.
    consent_all(&t, "m-src").await?;
    let issued = lead.issue_minutes("m-src").await?;
    refused(
        lead.draft_joint(
            Kind::Escalation,
            "e-src",
            escalation(ENFORCEMENT, "", source(&issued)),
        )
        .await,
        Code::InvalidArgument,
        "not of joint-enforcement",
    );
    lead.draft_joint(
        Kind::Escalation,
        "e-src",
        escalation(FUND, "", source(&issued)),
    )
    .await?;
    ps.co_sign("e-src").await?;

    // A release that leaves the source out is refused by the hub.
    let n = lead.joint_notice("e-src").await?;
    let get = |p: Option<pb::EntryPin>| {
        let lead = &lead;
        async move {
            let p = p.ok_or("missing pin")?;
            Ok::<_, BoxError>(lead.get_entry(&p.channel, p.seq).await?.into_entry())
        }
    };
    let mut co_signatures = Vec::new();
    for p in &n.co_signatures {
        co_signatures.push(get(Some(p.clone())).await?);
    }
    let without_source = pb::JointRelease {
        notice_id: "e-src".into(),
        draft: Some(get(n.draft.clone()).await?),
        co_signatures,
        source: None,
    };
    refused(
        lead.submit_step(
            Kind::Escalation,
            "escalation",
            pb::workflow_step::Step::JointRelease(without_source),
            escalation(FUND, "", None).audience.unwrap_or_default(),
            None,
        )
        .await,
        Code::InvalidArgument,
        "does not embed its source entry",
    );
    lead.release_joint("e-src").await?;

    // The leading group checks the minutes behind it from the escalation alone.
    let group = leading_group(&t).await?;
    let entry = inbox_entry(&group, Kind::Escalation)
        .await?
        .ok_or("the escalation did not arrive")?;
    let proof = group.verify_joint_release(&entry).await?;
    match &proof.source {
        Some(SourceProof::Minutes { entry: at, minutes }) => {
            assert_eq!((at.channel.as_str(), at.seq), ("civil-affairs", issued.seq));
            assert_eq!(minutes.meeting_id, "m-src");
            assert_eq!(minutes.consents.len(), 3);
        }
        other => return Err(format!("unexpected source {other:?}").into()),
    }
    // The same escalation with its source stripped proves nothing.
    let mut stripped = entry.clone();
    if let Some(m) = std::sync::Arc::make_mut(&mut stripped.entry)
        .message
        .as_mut()
        .and_then(|s| s.message.as_mut())
    {
        let mut step = decode_step(m)?;
        if let pb::workflow_step::Step::JointRelease(r) = &mut step {
            r.source = None;
        }
        m.body = encode_step(step).into();
    }
    assert!(matches!(
        group.verify_joint_release(&stripped).await,
        Err(ClientError::Integrity { reason, .. }) if reason.contains("does not embed its source")
    ));
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_or_co_signature_made_after_its_key_was_retired_does_not_count() -> TestResult {
    let t = TestHub::start().await?;
    let finance = t.unit("finance").await?;
    let tax = t.unit("tax").await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let mut first = fund_notice();
    first.case_id.clear();
    finance
        .draft_joint(Kind::JointNotice, "n-a", first.clone())
        .await?;
    finance
        .draft_joint(Kind::JointNotice, "n-b", first.clone())
        .await?;
    let signed_a = tax.co_sign("n-a").await?;
    pbc.co_sign("n-a").await?;
    let released = finance.release_joint("n-a").await?;
    tax.co_sign("n-b").await?;
    pbc.co_sign("n-b").await?;
    drafted_fund_minutes(&t, "m-k").await?;
    consent_all(&t, "m-k").await?;
    let ss = t.unit("state-security").await?;
    let entry = ss.get_entry(&released.channel, released.seq).await?;
    ss.verify_joint_release(&entry).await?;

    // Tax rotates its key; the operator then dates the old key's end back
    // to before Tax's first co-signature (say it leaked then).
    let old_key = t
        .retire_key_back_to(
            &tax,
            "tax",
            (&signed_a.channel, signed_a.seq),
            "the key leaked before the co-signature",
        )
        .await?;

    // The released notice no longer proves Tax's co-signature.
    let again = ss.get_entry(&released.channel, released.seq).await?;
    assert!(matches!(
        ss.verify_joint_release(&again).await,
        Err(ClientError::Integrity { reason, .. })
            if reason.contains(&old_key) && reason.contains("valid only from")
    ));
    // The pending one is held until Tax signs again with its current key
    // (built by hand: the hub refuses it whatever the library checks).
    let n = finance.joint_notice("n-b").await?;
    let mut co_signatures = Vec::new();
    for p in &n.co_signatures {
        co_signatures.push(raw_entry(&t, "finance", p).await?);
    }
    let draft = raw_entry(&t, "finance", n.draft.as_ref().ok_or("no draft")?).await?;
    refused(
        finance
            .submit_step(
                Kind::JointNotice,
                "release",
                pb::workflow_step::Step::JointRelease(pb::JointRelease {
                    notice_id: "n-b".into(),
                    draft: Some(draft),
                    co_signatures,
                    source: None,
                }),
                first.audience.clone().unwrap_or_default(),
                None,
            )
            .await,
        Code::FailedPrecondition,
        "tax co-signs notice \"n-b\" again with its current key",
    );
    refused(
        pbc.co_sign("n-b").await,
        Code::FailedPrecondition,
        "already co-signed",
    );
    // So is an issue of minutes Tax consented to with the retired key.
    let lead = t.unit("civil-affairs").await?;
    let m = lead.meeting("m-k").await?;
    let pin = |p: &Option<pb::EntryPin>| p.clone().ok_or("missing pin");
    let mut consents = Vec::new();
    for a in &m.answers {
        consents.push(raw_entry(&t, "civil-affairs", &pin(&a.answer)?).await?);
    }
    let issue = pb::MinutesIssue {
        meeting_id: "m-k".into(),
        proposal: Some(raw_entry(&t, "civil-affairs", &pin(&m.proposal_entry)?).await?),
        draft: Some(raw_entry(&t, "civil-affairs", &pin(&m.current_draft)?).await?),
        consents,
    };
    refused(
        lead.submit_step(
            Kind::Minutes,
            "issue",
            pb::workflow_step::Step::MinutesIssue(issue),
            fund_minutes_audience(),
            None,
        )
        .await,
        Code::FailedPrecondition,
        "tax consents to the current draft again with its current key",
    );
    refused(
        t.unit("finance")
            .await?
            .answer_current_minutes("m-k", true, "")
            .await,
        Code::FailedPrecondition,
        "already answered",
    );
    tax.answer_current_minutes("m-k", true, "").await?;
    lead.issue_minutes("m-k").await?;

    tax.co_sign("n-b").await?;
    let state = finance.joint_notice("n-b").await?;
    assert_eq!(state.co_signatures.len(), 2);
    let out = finance.release_joint("n-b").await?;
    let entry = ss.get_entry(&out.channel, out.seq).await?;
    assert_eq!(
        ss.verify_joint_release(&entry).await?.co_signatures.len(),
        2
    );
    t.stop().await
}
