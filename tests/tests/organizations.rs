//! Organizations named by unified social credit code, end to end: a wrong
//! code is refused before anything is stored, and `org show` lists in
//! hub-time order exactly the entries about an organization the caller
//! sent or was addressed, each verified by the client library.

use tongbao_client::{Client, Draft, NewWarning, VerifiedEntry};
use tongbao_proto::pb::{self, Kind, WarningLevel};
use tongbao_tests::workflow::{FUND, leading_group, office};
use tongbao_tests::{TestHub, TestResult, assert_nothing_stored, note, refused};
use tonic::Code;

/// Check characters computed independently of the code under test.
const ORG: &str = "51140000MJ0000012R";
const OTHER: &str = "53140000MJY0001237";

fn subjects(v: &[VerifiedEntry]) -> Vec<String> {
    v.iter().map(|e| e.message().subject.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_credit_code_is_refused_and_stores_nothing() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let to_civil = |subject: &str| note(subject).to_units(["civil-affairs"]);
    for (code, words) in [
        ("51140000MJ0000012X", "the check character is 'X'"),
        ("51140000MJ000001", "has 16 characters"),
        ("51140000MJ0000O12R", "is not one of 0-9"),
        ("51140000mj0000012R", "is not one of 0-9"),
        ("511A0000MJ0000012R", "administrative division"),
    ] {
        refused(
            tax.push(to_civil("bad").about(code, "")).await,
            Code::InvalidArgument,
            words,
        );
    }
    // A long input is never echoed back whole.
    let long = "9".repeat(64 * 1024);
    match tax.push(to_civil("long").about(long.as_str(), "")).await {
        Ok(r) => return Err(format!("a 64 KiB code was taken: {r:?}").into()),
        Err(e) => {
            assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
            assert!(e.to_string().len() < 512, "{} bytes", e.to_string().len());
        }
    }
    refused(
        tax.push(to_civil("twice").about(ORG, "").about(ORG, "again"))
            .await,
        Code::InvalidArgument,
        "named twice",
    );
    refused(
        tax.push(to_civil("long name").about(ORG, "名".repeat(100)))
            .await,
        Code::InvalidArgument,
        "at most 256",
    );
    let mut many = to_civil("many");
    for _ in 0..17 {
        many = many.about(ORG, "");
    }
    refused(tax.push(many).await, Code::ResourceExhausted, "at most 16");
    refused(
        tax.organization("51140000MJ0000012X").await,
        Code::InvalidArgument,
        "check character",
    );
    assert_nothing_stored(&t).await?;
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_show_lists_only_entries_addressed_to_the_caller() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let ss = t.unit("state-security").await?;
    let ps = t.unit("public-security").await?;
    tax.push(
        note("Tax arrears")
            .to_units(["civil-affairs"])
            .about(ORG, "山西省某某协会"),
    )
    .await?;
    let lead = pbc
        .push(
            Draft::new(Kind::Lead, "Transfers abroad", "12 transfers")
                .to_units(["public-security"])
                .about(ORG, "")
                .about(OTHER, ""),
        )
        .await?;
    ss.push(
        note("Foreign funding")
            .to_units(["public-security"])
            .about(ORG, ""),
    )
    .await?;
    pbc.push(note("About another").to_units(["tax"]).about(OTHER, ""))
        .await?;
    pbc.push(note("About none").to_units(["public-security"]))
        .await?;

    assert_eq!(
        subjects(&ps.organization(ORG).await?),
        ["Transfers abroad", "Foreign funding"]
    );
    assert_eq!(
        subjects(&pbc.organization(ORG).await?),
        ["Transfers abroad"]
    );
    assert_eq!(subjects(&tax.organization(ORG).await?), ["Tax arrears"]);
    assert_eq!(
        subjects(&t.unit("civil-affairs").await?.organization(ORG).await?),
        ["Tax arrears"]
    );
    assert_eq!(subjects(&tax.organization(OTHER).await?), ["About another"]);
    // Units never addressed see nothing, and cannot read the entry itself.
    let finance = t.unit("finance").await?;
    assert!(finance.organization(ORG).await?.is_empty());
    refused(
        finance.get_entry(&lead.channel, lead.seq).await,
        Code::PermissionDenied,
        "not addressed",
    );
    // The office sees only what was addressed to its inbox; the leading
    // group nothing.
    assert!(office(&t, FUND).await?.organization(ORG).await?.is_empty());
    ss.push(
        note("Closed")
            .to_units(["public-security"])
            .to_office(FUND)
            .about(ORG, ""),
    )
    .await?;
    assert_eq!(
        subjects(&office(&t, FUND).await?.organization(ORG).await?),
        ["Closed"]
    );
    assert!(leading_group(&t).await?.organization(ORG).await?.is_empty());
    // Entries appended after a query are found by the next one, in order.
    assert_eq!(
        subjects(&ps.organization(ORG).await?),
        ["Transfers abroad", "Foreign funding", "Closed"]
    );

    // A warning and its answers are about the organization too: members
    // addressed see them, a unit that joined after the warning does not.
    let w = pbc
        .issue_warning(NewWarning {
            warning_id: "w-org".into(),
            mechanism: FUND.into(),
            organization: pb::Organization {
                credit_code: ORG.into(),
                name: String::new(),
            },
            level: WarningLevel::Severe,
            grounds: "abnormal fund movements".into(),
            evidence: vec![pbc.get_entry(&lead.channel, lead.seq).await?.pin()],
        })
        .await?;
    t.add_member(FUND, "education", 0).await?;
    finance
        .answer_warning("w-org", vec!["grant suspended".into()], "")
        .await?;
    let seen = subjects(&finance.organization(ORG).await?);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("Joint warning"), "{seen:?}");
    let education = t.unit("education").await?;
    assert!(education.organization(ORG).await?.is_empty());
    let office_seen = office(&t, FUND).await?.organization(ORG).await?;
    assert_eq!(office_seen.len(), 3, "{:?}", subjects(&office_seen));
    assert!(
        office_seen
            .iter()
            .any(|e| e.seq() == w.seq && e.channel() == w.channel)
    );
    // State security, a member, sees the warning thread but never tax's
    // arrears notice to civil affairs.
    let ss_seen = subjects(&ss.organization(ORG).await?);
    assert!(
        ss_seen.iter().any(|s| s.starts_with("Joint warning")),
        "{ss_seen:?}"
    );
    assert!(!ss_seen.contains(&"Tax arrears".to_string()), "{ss_seen:?}");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joint_action_is_found_under_each_target_by_those_addressed() -> TestResult {
    const ENFORCEMENT: &str = "joint-enforcement";
    let t = TestHub::start().await?;
    let lead = t.unit("civil-affairs").await?;
    let now = tongbao_proto::now_micros();
    let proposed = lead
        .propose_action(pb::ActionProposal {
            action_id: "a-org".into(),
            mechanism: ENFORCEMENT.into(),
            title: "Inspection of the association".into(),
            participants: vec!["public-security".into(), "tax".into()],
            starts_micros: now,
            ends_micros: now + 3_600_000_000,
            target_organizations: vec![
                pb::Organization {
                    credit_code: ORG.into(),
                    name: "山西省某某协会".into(),
                },
                pb::Organization {
                    credit_code: OTHER.into(),
                    name: String::new(),
                },
            ],
            plan: Some(pb::AttachmentDigest {
                name: "plan.pdf".into(),
                sha256: tongbao_proto::canonical::sha256(b"plan").to_vec(),
                ..Default::default()
            }),
        })
        .await?;
    let is_proposal = |seen: &[VerifiedEntry]| matches!(seen, [e] if e.channel() == proposed.channel && e.seq() == proposed.seq);
    // The participants, the lead unit and the office find it under each
    // target.
    for code in [ORG, OTHER] {
        for unit in ["public-security", "tax", "civil-affairs"] {
            let seen = t.unit(unit).await?.organization(code).await?;
            assert!(is_proposal(&seen), "{unit} {code}: {:?}", subjects(&seen));
        }
        let seen = Client::connect(&t.pki.office_config(ENFORCEMENT, t.addr)?)
            .await?
            .organization(code)
            .await?;
        assert!(is_proposal(&seen), "office {code}: {:?}", subjects(&seen));
    }
    // A member of the mechanism not named, and a unit outside it, do not.
    for unit in ["health", "finance"] {
        let u = t.unit(unit).await?;
        assert!(u.organization(ORG).await?.is_empty(), "{unit}");
        refused(
            u.get_entry(&proposed.channel, proposed.seq).await,
            Code::PermissionDenied,
            "not addressed",
        );
    }
    assert!(office(&t, FUND).await?.organization(ORG).await?.is_empty());
    t.stop().await
}
