//! Joint warnings and sanctions (联合预警和惩戒) end to end: a member warns
//! its mechanism about an organization citing entries it saw, every member
//! answers with its measures, the issuer lifts it, and the office sees who
//! has not answered. Every refusal with its status, membership judged at
//! append time, and answers verified offline against the warning.

use tongbao_client::{Client, Draft, NewWarning, PushReceipt};
use tongbao_proto::keys::RegisteredKey;
use tongbao_proto::pb::{self, Kind, WarningLevel, workflow_step::Step};
use tongbao_proto::warning::verify_answer;
use tongbao_proto::workflow::{CONTENT_TYPE, encode_step};
use tongbao_tests::workflow::{FUND, office};
use tongbao_tests::{BoxError, Role, TestHub, TestResult, note, refused, registered_keys};
use tonic::Code;

/// A social group (社会团体) registered in Shanxi; check character computed
/// independently of the code under test.
const ORG: &str = "51140000MJ0000012R";

fn org() -> pb::Organization {
    pb::Organization {
        credit_code: ORG.into(),
        name: "山西省某某协会".into(),
    }
}

fn pin_of(r: &PushReceipt) -> pb::EntryPin {
    pb::EntryPin {
        channel: r.channel.clone(),
        seq: r.seq,
        leaf_hash: r.leaf_hash.clone(),
    }
}

fn warning(id: &str, evidence: Vec<pb::EntryPin>) -> NewWarning {
    NewWarning {
        warning_id: id.into(),
        mechanism: FUND.into(),
        organization: org(),
        level: WarningLevel::Caution,
        grounds: "重大资金异动 abnormal fund movements".into(),
        evidence,
    }
}

/// A lead from the central bank to public security: evidence pbc sent.
async fn lead(pbc: &Client) -> Result<pb::EntryPin, BoxError> {
    let r = pbc
        .push(
            Draft::new(Kind::Lead, "Transfers abroad", "12 transfers")
                .to_units(["public-security"])
                .about(ORG, ""),
        )
        .await?;
    Ok(pin_of(&r))
}

/// An answer signed and submitted directly, as a unit that cannot read
/// the warning's state (and whose library would stop there) could send it.
async fn direct_answer(
    c: &Client,
    warning: &PushReceipt,
    id: &str,
) -> Result<PushReceipt, tongbao_client::ClientError> {
    let step = Step::WarningMeasures(pb::WarningMeasures {
        warning_id: id.into(),
        warning: Some(pin_of(warning)),
        measures: vec!["x".into()],
        reason: String::new(),
    });
    let draft = Draft::new(Kind::WarningMeasures, "measures", encode_step(step))
        .with_content_type(CONTENT_TYPE)
        .to_units(["pbc-taiyuan"])
        .to_office(FUND)
        .about(ORG, "");
    c.submit_signed(c.sign(draft)?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_answers_and_only_the_issuer_lifts() -> TestResult {
    let t = TestHub::start().await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let evidence = lead(&pbc).await?;
    let issued = pbc.issue_warning(warning("w-1", vec![evidence])).await?;
    let state = pbc.warning("w-1").await?;
    assert_eq!(
        state.not_answered,
        [
            "civil-affairs",
            "finance",
            "public-security",
            "state-security",
            "tax"
        ]
    );
    assert_eq!(state.organization, Some(org()));
    assert!(
        issued
            .recipients
            .contains(&"office:fund-supervision".to_string())
    );

    let tax = t.unit("tax").await?;
    let answer = tax
        .answer_warning("w-1", vec!["税务稽查 tax audit opened".into()], "")
        .await?;
    let finance = t.unit("finance").await?;
    finance
        .answer_warning("w-1", vec![], "no grants to this organization")
        .await?;
    // The office sees, per organization, the active warning and who has
    // not answered.
    let seen = office(&t, FUND).await?.warnings(ORG, true).await?;
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].not_answered,
        ["civil-affairs", "public-security", "state-security"]
    );
    let tax_answer = seen[0]
        .answers
        .iter()
        .find(|a| a.unit == "tax")
        .ok_or("no tax answer")?;
    assert_eq!(tax_answer.measures, ["税务稽查 tax audit opened"]);

    // The issuer checks the answer against its warning, trusting no hub.
    let entry = pbc.get_entry(&answer.channel, answer.seq).await?;
    let v = pbc.verify_warning_answer(&entry).await?;
    assert_eq!((v.unit.as_str(), v.issuer.as_str()), ("tax", "pbc-taiyuan"));

    // Refusals, each with its status; none changes the warning.
    refused(
        tax.lift_warning("w-1", "paid").await,
        Code::PermissionDenied,
        "lifted only by its issuer pbc-taiyuan",
    );
    refused(
        pbc.answer_warning("w-1", vec!["x".into()], "").await,
        Code::PermissionDenied,
        "the other members answer it",
    );
    let education = t.unit("education").await?;
    refused(
        education.answer_warning("w-1", vec!["x".into()], "").await,
        Code::NotFound,
        "is seen by its issuer",
    );
    refused(
        direct_answer(&education, &issued, "w-1").await,
        Code::PermissionDenied,
        "not a member of fund-supervision when warning",
    );
    refused(
        finance.answer_warning("w-1", vec![], " ").await,
        Code::InvalidArgument,
        "states the reason",
    );
    refused(
        finance.answer_warning("w-1", vec![" ".into()], "").await,
        Code::InvalidArgument,
        "a measure is empty",
    );
    refused(
        tax.answer_warning("w-9", vec!["x".into()], "").await,
        Code::NotFound,
        "no warning \"w-9\"",
    );
    assert_eq!(
        pbc.warning("w-1").await?,
        office(&t, FUND).await?.warning("w-1").await?
    );
    assert_eq!(pbc.warning("w-1").await?.not_answered.len(), 3);
    // Measures sent to the issuer and the office only: another member sees
    // that they were given, not what they are.
    let ps = t.unit("public-security").await?;
    direct_answer(&ps, &issued, "w-1").await?;
    let of_ps = |w: &pb::WarningState| {
        w.answers
            .iter()
            .find(|a| a.unit == "public-security")
            .map(|a| (a.answered, a.measures.clone(), a.answer.is_some()))
    };
    assert_eq!(
        of_ps(&finance.warning("w-1").await?),
        Some((true, vec![], false))
    );
    assert_eq!(
        of_ps(&pbc.warning("w-1").await?),
        Some((true, vec!["x".to_string()], true))
    );
    assert_eq!(
        of_ps(&finance.warnings(ORG, false).await?[0]),
        Some((true, vec![], false))
    );

    // Lifted: recorded, and no more answers or lifts.
    let lift = pbc.lift_warning("w-1", "funds returned").await?;
    refused(
        t.unit("state-security")
            .await?
            .answer_warning("w-1", vec!["x".into()], "")
            .await,
        Code::FailedPrecondition,
        "was lifted",
    );
    refused(
        pbc.lift_warning("w-1", "again").await,
        Code::FailedPrecondition,
        "was lifted",
    );
    let lift_entry = tax.get_entry(&lift.channel, lift.seq).await?;
    assert_eq!(
        tax.verify_warning_answer(&lift_entry).await?.unit,
        "pbc-taiyuan"
    );
    let office = office(&t, FUND).await?;
    assert!(office.warnings(ORG, true).await?.is_empty());
    let all = office.warnings("", false).await?;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].lift_reason, "funds returned");
    // Units outside the warning see nothing of it.
    refused(
        education.warning("w-1").await,
        Code::NotFound,
        "is seen by its issuer",
    );
    assert!(education.warnings(ORG, false).await?.is_empty());
    refused(
        office.warnings("51140000MJ0000012X", false).await,
        Code::InvalidArgument,
        "check character",
    );
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_cites_only_entries_its_issuer_saw() -> TestResult {
    let t = TestHub::start().await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let ss = t.unit("state-security").await?;
    // An entry between state security and public security only.
    let hidden = ss
        .push(note("foreign funding").to_units(["public-security"]))
        .await?;
    refused(
        pbc.issue_warning(warning("w-h", vec![pin_of(&hidden)]))
            .await,
        Code::PermissionDenied,
        "was not addressed to pbc-taiyuan",
    );
    let own = lead(&pbc).await?;
    let mut wrong_hash = own.clone();
    wrong_hash.leaf_hash = vec![0; 32];
    refused(
        pbc.issue_warning(warning("w-h", vec![wrong_hash])).await,
        Code::InvalidArgument,
        "another leaf hash",
    );
    let mut missing = own.clone();
    missing.seq = 99;
    refused(
        pbc.issue_warning(warning("w-h", vec![missing])).await,
        Code::InvalidArgument,
        "does not exist",
    );
    refused(
        pbc.issue_warning(warning("w-h", vec![])).await,
        Code::InvalidArgument,
        "1 to 32 evidence",
    );
    let mut bad_code = warning("w-h", vec![own.clone()]);
    bad_code.organization.credit_code = "51140000MJ0000012X".into();
    refused(
        pbc.issue_warning(bad_code).await,
        Code::InvalidArgument,
        "check character",
    );
    let mut no_level = warning("w-h", vec![own.clone()]);
    no_level.level = WarningLevel::Unspecified;
    refused(
        pbc.issue_warning(no_level).await,
        Code::InvalidArgument,
        "level",
    );
    // Education is not a member of fund supervision.
    let education = t.unit("education").await?;
    let its_own = education
        .push(note("school funds").to_units(["civil-affairs"]))
        .await?;
    refused(
        education
            .issue_warning(warning("w-e", vec![pin_of(&its_own)]))
            .await,
        Code::PermissionDenied,
        "education is not a member of fund-supervision",
    );
    // Nothing was recorded by the refusals.
    refused(pbc.warning("w-h").await, Code::NotFound, "no warning");
    // Evidence received (not only sent) counts.
    let ps = t.unit("public-security").await?;
    let received = ps
        .push(note("case opened").to_units(["pbc-taiyuan"]))
        .await?;
    pbc.issue_warning(warning("w-h", vec![own, pin_of(&received)]))
        .await?;
    refused(
        pbc.issue_warning(warning("w-h", vec![pin_of(&received)]))
            .await,
        Code::AlreadyExists,
        "already issued",
    );
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_is_judged_when_the_warning_and_each_answer_are_appended() -> TestResult {
    let t = TestHub::start().await?;
    let security = t.operator(Role::Security).await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let evidence = lead(&pbc).await?;
    let before = pbc
        .issue_warning(warning("w-before", vec![evidence.clone()]))
        .await?;
    // Education joins from now, health only next month.
    let now = tongbao_proto::now_micros();
    let month = 30 * 24 * 3_600_000_000;
    for (unit, from) in [("education", now - 1), ("health", now + month)] {
        t.add_member(FUND, unit, from).await?;
    }
    let education = t.unit("education").await?;
    refused(
        direct_answer(&education, &before, "w-before").await,
        Code::PermissionDenied,
        "was not a member of fund-supervision when warning",
    );
    assert!(
        !pbc.warning("w-before")
            .await?
            .not_answered
            .contains(&"education".to_string())
    );
    let health = t.unit("health").await?;
    let health_note = health
        .push(note("hospital fees").to_units(["civil-affairs"]))
        .await?;
    refused(
        health
            .issue_warning(warning("w-h", vec![pin_of(&health_note)]))
            .await,
        Code::PermissionDenied,
        "it is one only from",
    );
    // A warning issued after education joined expects its answer.
    pbc.issue_warning(warning("w-after", vec![evidence]))
        .await?;
    let after = pbc.warning("w-after").await?;
    assert!(after.not_answered.contains(&"education".to_string()));
    assert!(!after.not_answered.contains(&"health".to_string()));
    education
        .answer_warning("w-after", vec!["school sponsorship halted".into()], "")
        .await?;
    // A suspended unit cannot answer; it stays owed.
    let tax = t.unit("tax").await?;
    security
        .admin()
        .suspend_unit(pb::SuspendUnitRequest {
            unit: "tax".into(),
            reason: "key compromise".into(),
        })
        .await?;
    let said = tax.answer_warning("w-after", vec!["x".into()], "").await;
    assert!(
        said.as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("suspended")),
        "{said:?}"
    );
    let after = pbc.warning("w-after").await?;
    assert!(after.not_answered.contains(&"tax".to_string()));
    assert!(!after.not_answered.contains(&"education".to_string()));
    t.stop().await
}

/// The registry's keys as an offline verifier holds them.
async fn offline_keys(c: &Client, units: &[&str]) -> Result<Vec<RegisteredKey>, BoxError> {
    let mut out = Vec::new();
    for u in units {
        for k in registered_keys(c, u).await? {
            out.push(RegisteredKey {
                unit: u.to_string(),
                algorithm: k.algorithm,
                key_id: k.key_id,
                public_key: k.public_key,
                valid_from_micros: k.valid_from_micros,
                valid_until_micros: k.valid_until_micros,
            });
        }
    }
    Ok(out)
}

/// The keys as a verifier looks them up, by unit and key id.
fn lookup(keys: &[RegisteredKey]) -> impl Fn(&str, &str) -> Option<RegisteredKey> + '_ {
    |unit, key_id| {
        keys.iter()
            .find(|k| k.unit == unit && k.key_id == key_id)
            .cloned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_verifies_offline_and_a_tampered_one_does_not() -> TestResult {
    let t = TestHub::start().await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let evidence = lead(&pbc).await?;
    let w = pbc.issue_warning(warning("w-o", vec![evidence])).await?;
    let a = t
        .unit("tax")
        .await?
        .answer_warning("w-o", vec!["tax audit".into()], "")
        .await?;
    let warning_entry = pbc.get_entry(&w.channel, w.seq).await?.into_entry();
    let answer_entry = pbc.get_entry(&a.channel, a.seq).await?.into_entry();
    let keys = offline_keys(&pbc, &["pbc-taiyuan", "tax"]).await?;
    let v = verify_answer(&warning_entry, &answer_entry, &lookup(&keys))?;
    assert_eq!(v.organization.credit_code, ORG);
    // Measures changed after signing.
    let mut tampered = answer_entry.clone();
    if let Some(m) = tampered.message.as_mut().and_then(|s| s.message.as_mut()) {
        m.subject.push_str(" (none)");
    }
    assert!(verify_answer(&warning_entry, &tampered, &lookup(&keys)).is_err());
    // Checked against another warning entry than the one it answers.
    let other = pbc.get_entry("pbc-taiyuan", 0).await?.into_entry();
    assert!(verify_answer(&other, &answer_entry, &lookup(&keys)).is_err());
    // Without tax's key nothing is proven.
    let pbc_only = offline_keys(&pbc, &["pbc-taiyuan"]).await?;
    assert!(verify_answer(&warning_entry, &answer_entry, &lookup(&pbc_only)).is_err());
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_and_the_organization_index_are_rebuilt_from_the_entries() -> TestResult {
    let mut t = TestHub::start().await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let evidence = lead(&pbc).await?;
    pbc.issue_warning(warning("w-r", vec![evidence])).await?;
    t.unit("tax")
        .await?
        .answer_warning("w-r", vec!["tax audit".into()], "")
        .await?;
    pbc.lift_warning("w-r", "funds returned").await?;
    let before = pbc.warning("w-r").await?;
    let seen = pbc.organization(ORG).await?.len();
    drop(pbc);

    t.restart_with_workflow_state_lost(|_| Ok(())).await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    assert_eq!(pbc.warning("w-r").await?, before);
    assert!(before.lift.is_some());
    // Lead, warning, tax's answer and the lift.
    assert_eq!(seen, 4);
    assert_eq!(pbc.organization(ORG).await?.len(), seen);
    t.stop().await
}
