//! Delivery receipts, exception feedback and the office's delivery audit.

use std::collections::BTreeMap;
use std::time::Duration;
use tongbao_client::{Client, ClientError, Draft, ProcessError};
use tongbao_proto::keys::SigningKey;
use tongbao_proto::pb::{self, DeliveryState, Kind};
use tongbao_tests::workflow::office;
use tongbao_tests::{HubProcess, TestHub, TestPki, TestResult, members_of, note, refused};
use tonic::Code;

fn states(e: &pb::AuditedEntry) -> BTreeMap<String, (i32, bool)> {
    e.recipients
        .iter()
        .map(|r| (r.recipient.clone(), (r.state, r.overdue)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn office_sees_who_acknowledged_fetched_or_never_connected() -> TestResult {
    let t = TestHub::start().await?;
    let members = members_of("joint-enforcement");
    assert_eq!(members.len(), 13);
    // Finance is outside joint enforcement, so all 13 members are recipients.
    let deadline = tongbao_proto::now_micros() + 60_000_000;
    let sent = t
        .unit("finance")
        .await?
        .push(
            note("Major abnormal fund movement")
                .to_mechanism("joint-enforcement")
                .with_labels(pb::Labels {
                    ack_deadline_micros: deadline,
                    ..Default::default()
                }),
        )
        .await?;
    assert_eq!(sent.recipients.len(), 13);
    let (ackers, rest) = members.split_at(10);
    let (fetchers, absent) = rest.split_at(2);
    for unit in ackers {
        let c = t.unit(unit).await?;
        let page = c.pull(0, 10).await?;
        let refs: Vec<_> = page.entries.iter().collect();
        let outcome = c.ack(&refs).await?;
        assert_eq!(outcome.newly_acknowledged, 1);
        assert!(outcome.receipt.is_some());
    }
    for unit in fetchers {
        assert_eq!(t.unit(unit).await?.pull(0, 10).await?.entries.len(), 1);
    }

    let office = office(&t, "joint-enforcement").await?;
    let now = office
        .audit_deliveries(pb::ListDeliveriesRequest::default())
        .await?;
    assert_eq!(now.entries.len(), 1);
    let entry = &now.entries[0];
    assert_eq!(
        (entry.channel.as_str(), entry.seq, &entry.leaf_hash),
        ("finance", 0, &sent.leaf_hash)
    );
    assert_eq!(entry.deadline_micros, deadline);
    let s = states(entry);
    for u in ackers {
        assert_eq!(s[*u], (DeliveryState::Acknowledged as i32, false), "{u}");
    }
    for u in fetchers {
        assert_eq!(s[*u], (DeliveryState::Fetched as i32, false), "{u}");
    }
    assert_eq!(s[absent[0]], (DeliveryState::Pending as i32, false));
    // Every receipt verifies under its unit's key and names this very entry.
    for r in entry
        .recipients
        .iter()
        .filter(|r| r.state == DeliveryState::Acknowledged as i32)
    {
        let receipt = office.verify_answer(entry, r).await?;
        assert_eq!(receipt.channel(), r.recipient);
        assert!(receipt.message().body.is_empty());
        // ...and is provably in the recipient's own channel.
        let cp = office.prove_inclusion(&receipt).await?;
        assert_eq!(cp.channel, r.recipient);
    }
    // A tampered receipt does not verify.
    let mut forged = entry.clone();
    forged.leaf_hash[0] ^= 1;
    let r = &forged.recipients[0];
    assert!(office.verify_answer(&forged, r).await.is_err());

    // After the deadline the 3 are overdue, and the summary agrees.
    let late = deadline + 1_000_000;
    let after = office
        .audit_deliveries(pb::ListDeliveriesRequest {
            as_of_micros: late,
            overdue_only: true,
            ..Default::default()
        })
        .await?;
    let overdue: Vec<&str> = after.entries[0]
        .recipients
        .iter()
        .filter(|r| r.overdue)
        .map(|r| r.recipient.as_str())
        .collect();
    let mut expected: Vec<&str> = fetchers.iter().chain(absent).copied().collect();
    expected.sort();
    assert_eq!(overdue, expected);
    let summary = office
        .audit_units(pb::UnitSummaryRequest {
            as_of_micros: late,
            ..Default::default()
        })
        .await?;
    let by_unit: BTreeMap<&str, &pb::UnitStats> =
        summary.units.iter().map(|u| (u.unit.as_str(), u)).collect();
    assert_eq!(by_unit["finance"].sent, 1);
    let total = |f: fn(&pb::UnitStats) -> u64| summary.units.iter().map(f).sum::<u64>();
    assert_eq!(
        (
            total(|u| u.received),
            total(|u| u.acknowledged),
            total(|u| u.overdue)
        ),
        (13, 10, 3)
    );
    for u in ackers {
        assert!(
            by_unit[u].ack_p50_micros > 0 && by_unit[u].ack_p90_micros >= by_unit[u].ack_p50_micros
        );
    }
    // Filters: by state and by recipient.
    let pending = office
        .audit_deliveries(pb::ListDeliveriesRequest {
            state: DeliveryState::Pending as i32,
            ..Default::default()
        })
        .await?;
    assert_eq!(pending.entries.len(), 1);
    let none = office
        .audit_deliveries(pb::ListDeliveriesRequest {
            sender: "tax".into(),
            ..Default::default()
        })
        .await?;
    assert!(none.entries.is_empty());
    // A window that ends before it starts is refused, for both audit calls;
    // one that ends before the entries holds none of them.
    let inverted = office
        .audit_deliveries(pb::ListDeliveriesRequest {
            since_micros: 2_000,
            until_micros: 1_000,
            ..Default::default()
        })
        .await;
    refused(inverted, Code::InvalidArgument, "inverted");
    let inverted = office
        .audit_units(pb::UnitSummaryRequest {
            since_micros: 2_000,
            until_micros: 1_000,
            ..Default::default()
        })
        .await;
    refused(inverted, Code::InvalidArgument, "inverted");
    let before = office
        .audit_deliveries(pb::ListDeliveriesRequest {
            since_micros: 1_000,
            until_micros: 2_000,
            ..Default::default()
        })
        .await?;
    assert!(before.entries.is_empty());
    // The office was not addressed: it never receives the body.
    assert!(office.pull(0, 10).await?.entries.is_empty());
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_receipts_are_refused_each_with_its_own_status() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    tax.push(note("for finance").to_units(["finance"])).await?;
    tax.push(note("for education").to_units(["education"]))
        .await?;
    let finance = t.unit("finance").await?;
    let mine = finance.pull(0, 10).await?.entries.remove(0);

    // Signed with another unit's key.
    let civil_key = SigningKey::from_pem(&std::fs::read_to_string(
        t.pki.signing_key_path("civil-affairs"),
    )?)?;
    let honest = finance.sign_receipt(vec![mine.pin()])?;
    let forged = civil_key.sign_message(honest.message.clone().ok_or("no message")?);
    refused(
        finance_ack(&finance, forged).await,
        Code::Unauthenticated,
        "not a registered signing key",
    );
    // finance's own key, but the signature does not verify.
    let mut garbled = honest.clone();
    if let Some(sig) = garbled.signature.as_mut()
        && let Some(b) = sig.signature.first_mut()
    {
        *b ^= 1;
    }
    refused(
        finance_ack(&finance, garbled).await,
        Code::Unauthenticated,
        "does not verify",
    );
    // An entry not addressed to finance.
    let other = tax.get_entry("tax", 1).await?;
    refused(
        finance.ack(&[&other]).await,
        Code::PermissionDenied,
        "not addressed to unit finance",
    );
    // A wrong leaf hash.
    let mut pin = mine.pin();
    pin.leaf_hash[0] ^= 1;
    refused(
        finance.ack_pins(vec![pin]).await,
        Code::FailedPrecondition,
        "exactly as delivered",
    );
    // An entry that does not exist.
    let mut pin = mine.pin();
    pin.seq = 99;
    refused(
        finance.ack_pins(vec![pin]).await,
        Code::NotFound,
        "does not exist",
    );
    // A receipt addressed to someone else than the senders.
    let mut message = honest.message.clone().ok_or("no message")?;
    message.audience = Some(pb::Audience {
        units: vec!["state-security".into()],
        ..Default::default()
    });
    let key = SigningKey::from_pem(&std::fs::read_to_string(t.pki.signing_key_path("finance"))?)?;
    refused(
        finance_ack(&finance, key.sign_message(message)).await,
        Code::InvalidArgument,
        "senders of the entries",
    );
    // A receipt through Push.
    refused(
        finance.push_signed(honest).await,
        Code::InvalidArgument,
        "cannot be pushed",
    );
    // Nothing was appended to finance's channel by any of this.
    let first = finance.ack(&[&mine]).await?;
    assert_eq!(first.receipt.as_ref().map(|r| r.1), Some(0));

    // Audit by a unit, and by the office of the other mechanism.
    refused(
        finance
            .audit_deliveries(pb::ListDeliveriesRequest::default())
            .await,
        Code::PermissionDenied,
        "only a mechanism's office",
    );
    let fund_office = office(&t, "fund-supervision").await?;
    refused(
        fund_office
            .audit_deliveries(pb::ListDeliveriesRequest {
                mechanism: "joint-enforcement".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "may audit only fund-supervision",
    );
    refused(
        fund_office
            .audit_units(pb::UnitSummaryRequest {
                mechanism: "joint-enforcement".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "may audit only fund-supervision",
    );
    // Education acknowledges the entry for it; that receipt answers an entry
    // outside fund supervision, so its office gets no proof of it.
    let education = t.unit("education").await?;
    let for_education = education.pull(0, 10).await?.entries.remove(0);
    education.ack(&[&for_education]).await?;
    let receipt = education.get_entry("education", 0).await?;
    refused(
        fund_office.prove_inclusion(&receipt).await,
        Code::PermissionDenied,
        "not addressed",
    );
    // Its own mechanism: tax and finance are both members, so that entry is
    // in scope; tax to education (not a member) is not.
    let own = fund_office
        .audit_deliveries(pb::ListDeliveriesRequest::default())
        .await?;
    assert_eq!(own.entries.len(), 1);
    assert_eq!(
        own.entries[0].recipients[0].state,
        DeliveryState::Acknowledged as i32
    );
    t.stop().await
}

/// Sends a receipt the library would never sign itself.
async fn finance_ack(c: &Client, signed: pb::SignedMessage) -> Result<(), ClientError> {
    c.ack_signed(signed).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_twice_appends_nothing() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    for i in 0..3 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    let finance = t.unit("finance").await?;
    let page = finance.pull(0, 10).await?;
    let first_two: Vec<_> = page.entries.iter().take(2).collect();
    let a = finance.ack(&first_two).await?;
    assert_eq!(
        (a.newly_acknowledged, a.receipt.as_ref().map(|r| r.1)),
        (2, Some(0))
    );
    // The same two again: nothing appended, the earlier receipt named.
    let b = finance.ack(&first_two).await?;
    assert_eq!(
        (b.newly_acknowledged, b.receipt.is_none(), b.earlier.len()),
        (0, true, 2)
    );
    assert_eq!(b.earlier[0].1.seq, 0);
    // Two old and one new: one receipt, one new acknowledgement.
    let all: Vec<_> = page.entries.iter().collect();
    let c = finance.ack(&all).await?;
    assert_eq!(
        (
            c.newly_acknowledged,
            c.receipt.as_ref().map(|r| r.1),
            c.earlier.len()
        ),
        (1, Some(1), 2)
    );
    // The same signed receipt twice (a retry): one entry.
    let signed = finance.sign_receipt(vec![page.entries[0].pin()])?;
    let d = finance.ack_signed(signed.clone()).await?;
    let e = finance.ack_signed(signed).await?;
    assert!(d.receipt.is_none() && e.receipt.is_none());
    // Finance's channel holds exactly the two receipts.
    let next = finance.push(note("after").to_units(["tax"])).await?;
    assert_eq!(next.seq, 2);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exception_feedback_answers_an_entry_and_shows_in_the_audit() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    tax.push(note("about a foundation").to_mechanism("fund-supervision"))
        .await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let entry = pbc.pull(0, 10).await?.entries.remove(0);
    let fb = pbc
        .push(Draft::exception(
            &entry,
            pb::Problem::OutsideCompetence,
            "Not a banking matter",
        ))
        .await?;
    assert_eq!(fb.recipients, ["tax"]);
    // The sender receives the feedback.
    let got = tax.pull(0, 10).await?.entries.remove(0);
    assert_eq!(got.message().kind, Kind::ExceptionFeedback as i32);
    // An entry is answered once.
    let again = pbc.ack(&[&entry]).await?;
    assert!(
        again.receipt.is_none(),
        "acknowledged after exception feedback"
    );
    refused(
        pbc.push(Draft::exception(&entry, pb::Problem::Unreadable, ""))
            .await,
        Code::FailedPrecondition,
        "answered",
    );
    // Feedback on someone else's entry, or without a problem, is refused.
    let finance = t.unit("finance").await?;
    refused(
        finance
            .push(Draft::exception(&entry, pb::Problem::Other, ""))
            .await,
        Code::InvalidArgument,
        "needs a text",
    );
    let office = office(&t, "fund-supervision").await?;
    let audit = office
        .audit_deliveries(pb::ListDeliveriesRequest::default())
        .await?;
    assert_eq!(
        audit.entries.len(),
        1,
        "feedback is a state, not an audited entry"
    );
    let r = audit.entries[0]
        .recipients
        .iter()
        .find(|r| r.recipient == "pbc-taiyuan")
        .ok_or("pbc missing")?;
    assert_eq!(r.state, DeliveryState::Exception as i32);
    // The feedback was not addressed to the office: the office reads its
    // problem code, not its text, and cannot check it against its signature.
    assert!(r.answer_redacted);
    let shown = r
        .answer
        .as_ref()
        .and_then(|a| a.content())
        .and_then(|m| m.exception.clone())
        .ok_or("no report")?;
    assert_eq!(shown.problem, pb::Problem::OutsideCompetence as i32);
    assert_eq!(shown.text, "");
    match office.verify_answer(&audit.entries[0], r).await {
        Err(ClientError::Redacted { channel, .. }) => assert_eq!(channel, "pbc-taiyuan"),
        other => return Err(format!("redacted feedback was not refused: {other:?}").into()),
    }
    // A hub claiming the shortened feedback is whole is caught.
    let mut lying = r.clone();
    lying.answer_redacted = false;
    assert!(matches!(
        office.verify_answer(&audit.entries[0], &lying).await,
        Err(ClientError::Integrity { .. })
    ));
    t.stop().await
}

/// An office audits answers without reading free text it was not
/// addressed: a receipt carrying text is refused, so receipts are audited
/// whole and verify (pins bound to the signature); exception feedback's
/// text (a marker) appears nowhere in the audit unless the feedback copied
/// the office, which then verifies it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_audit_shows_no_free_text_it_was_not_addressed() -> TestResult {
    const MARKER: &str = "MARKER-7f3a";
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    tax.push(note("about a foundation").to_mechanism("fund-supervision"))
        .await?;
    // A receipt with a subject or body of its own is refused.
    let finance = t.unit("finance").await?;
    let entry = finance.pull(0, 10).await?.entries.remove(0);
    let key = SigningKey::from_pem(&std::fs::read_to_string(t.pki.signing_key_path("finance"))?)?;
    let plain = finance
        .sign_receipt(vec![entry.pin()])?
        .message
        .ok_or("no message")?;
    let mut with_body = plain.clone();
    with_body.body = format!("{MARKER} body").into_bytes().into();
    let mut with_subject = plain.clone();
    with_subject.subject = format!("{MARKER} subject");
    for m in [with_body, with_subject] {
        refused(
            finance_ack(&finance, key.sign_message(m)).await,
            Code::InvalidArgument,
            "a receipt carries no free text",
        );
    }
    finance.ack(&[&entry]).await?;
    // Two exception feedbacks with the marker: one to tax only, one copying
    // the office.
    let pbc = t.unit("pbc-taiyuan").await?;
    let entry = pbc.pull(0, 10).await?.entries.remove(0);
    pbc.push(Draft::exception(
        &entry,
        pb::Problem::Other,
        format!("{MARKER} text"),
    ))
    .await?;
    let security = t.unit("public-security").await?;
    let entry = security.pull(0, 10).await?.entries.remove(0);
    security
        .push(
            Draft::exception(&entry, pb::Problem::Other, format!("{MARKER} copied"))
                .to_office("fund-supervision"),
        )
        .await?;

    let office = office(&t, "fund-supervision").await?;
    let audit = office
        .audit_deliveries(pb::ListDeliveriesRequest::default())
        .await?;
    let audited = audit.entries.first().ok_or("nothing audited")?;
    let answer_of = |who: &str| {
        audited
            .recipients
            .iter()
            .find(|r| r.recipient == who)
            .cloned()
            .ok_or(format!("{who} missing"))
    };
    // The only marker in the whole audit is the copied feedback's.
    let mut without_copied = audit.clone();
    for e in &mut without_copied.entries {
        e.recipients.retain(|r| r.recipient != "public-security");
    }
    let bytes = prost::Message::encode_to_vec(&without_copied);
    assert!(
        !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
        "the office's audit holds free text it was not addressed"
    );
    let receipt = office
        .verify_answer(audited, &answer_of("finance")?)
        .await?;
    assert_eq!(receipt.channel(), "finance");
    assert!(matches!(
        office
            .verify_answer(audited, &answer_of("pbc-taiyuan")?)
            .await,
        Err(ClientError::Redacted { .. })
    ));
    let copied = office
        .verify_answer(audited, &answer_of("public-security")?)
        .await?;
    assert_eq!(
        copied.message().exception.as_ref().map(|x| x.text.as_str()),
        Some(format!("{MARKER} copied").as_str())
    );
    // A receipt whose shown pins were changed does not verify.
    let mut forged = answer_of("finance")?;
    if let Some(ack) = forged
        .answer
        .as_mut()
        .and_then(|e| e.message.as_mut())
        .and_then(|s| s.message.as_mut())
        .and_then(|m| m.acknowledgement.as_mut())
        .and_then(|a| a.entries.first_mut())
    {
        ack.seq += 1;
    }
    assert!(office.verify_answer(audited, &forged).await.is_err());
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_acknowledge_only_after_the_handler_succeeded() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    for i in 0..5 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    let finance = t.unit("finance").await?;
    let mut handled = Vec::new();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        finance.process(0, |e| {
            handled.push(e.seq());
            let fail = e.seq() == 3;
            async move { if fail { Err("database down") } else { Ok(()) } }
        }),
    )
    .await?;
    match result {
        Err(ProcessError::Handler { seq, .. }) => assert_eq!(seq, 3),
        other => panic!("expected the handler error, got {other:?}"),
    }
    assert_eq!(handled, [0, 1, 2, 3]);
    let office = office(&t, "fund-supervision").await?;
    let audit = office
        .audit_deliveries(pb::ListDeliveriesRequest::default())
        .await?;
    let acked: Vec<u64> = audit
        .entries
        .iter()
        .filter(|e| e.recipients[0].state == DeliveryState::Acknowledged as i32)
        .map(|e| e.seq)
        .collect();
    assert_eq!(acked, [0, 1, 2]);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_survive_a_killed_hub() -> TestResult {
    const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");
    let pki = TestPki::generate()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    tax.push(note("n").to_units(["finance"])).await?;
    let finance = Client::connect(&pki.unit_config("finance", hub.addr)?).await?;
    let page = finance.pull(0, 10).await?;
    finance
        .ack(&page.entries.iter().collect::<Vec<_>>())
        .await?;
    hub.kill()?;
    let hub = HubProcess::start(&pki, HUB)?;
    let office = Client::connect(&pki.office_config("fund-supervision", hub.addr)?).await?;
    let audit = office
        .audit_deliveries(pb::ListDeliveriesRequest::default())
        .await?;
    let r = &audit.entries[0].recipients[0];
    assert_eq!(r.state, DeliveryState::Acknowledged as i32);
    office.verify_answer(&audit.entries[0], r).await?;
    let finance = Client::connect(&pki.unit_config("finance", hub.addr)?).await?;
    let again = finance
        .ack(
            &finance
                .pull(0, 10)
                .await?
                .entries
                .iter()
                .collect::<Vec<_>>(),
        )
        .await?;
    assert!(again.receipt.is_none());
    hub.kill()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_naming_an_entry_twice_is_refused_and_changes_nothing() -> TestResult {
    let t = TestHub::start().await?;
    t.unit("tax")
        .await?
        .push(note("once").to_units(["finance"]))
        .await?;
    let finance = t.unit("finance").await?;
    let entries = finance.pull(0, 10).await?.entries;
    let pin = entries.first().ok_or("no entry")?.pin();
    for times in [2, 3] {
        let twice = finance.sign_receipt(vec![pin.clone(); times])?;
        refused(
            finance.ack_signed(twice).await,
            Code::InvalidArgument,
            "more than once",
        );
    }
    // The entry is still unanswered: a proper receipt counts it once.
    let once = finance.ack_pins(vec![pin]).await?;
    assert_eq!(once.newly_acknowledged, 1);
    t.stop().await
}
