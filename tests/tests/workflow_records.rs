//! The mechanisms' records end to end: the liaison directory, statistics
//! signed and circulated from the hub's records, and a case's entries as
//! each caller may see them.

use tongbao_client::VerifiedEntry;
use tongbao_proto::pb::{self, Kind};
use tongbao_proto::workflow::decode_step;
use tongbao_server::workflow::STATISTICS_SETTLE_MICROS;
use tongbao_tests::workflow::{
    ENFORCEMENT, FUND, inbox_entry, leading_group, office, wait_until_past,
};
use tongbao_tests::{TestHub, TestResult, note, refused};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liaison_changes_build_the_directory_the_office_sees() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let finance = t.unit("finance").await?;
    let liaison = |name: &str| pb::LiaisonChange {
        name: name.into(),
        title: "Division chief".into(),
        contact: "0351-0000000".into(),
    };
    tax.report_liaison(&[FUND.into(), ENFORCEMENT.into()], liaison("Wang Li"))
        .await?;
    tax.report_liaison(&[FUND.into()], liaison("Zhao Min"))
        .await?;
    finance
        .report_liaison(&[FUND.into()], liaison("Chen Jie"))
        .await?;
    refused(
        finance
            .report_liaison(&[ENFORCEMENT.into()], liaison("Chen Jie"))
            .await,
        Code::PermissionDenied,
        "not a member of joint-enforcement",
    );
    refused(
        finance.report_liaison(&[], liaison("Chen Jie")).await,
        Code::InvalidArgument,
        "office",
    );

    let dir = office(&t, FUND).await?.liaisons("").await?;
    assert_eq!(dir.units.len(), 6);
    let of = |d: &pb::ListLiaisonsResponse, u: &str| {
        d.units
            .iter()
            .find(|x| x.unit == u)
            .cloned()
            .unwrap_or_default()
    };
    let tax_row = of(&dir, "tax");
    assert_eq!(tax_row.history.len(), 2);
    assert_eq!(
        tax_row.current.and_then(|c| c.liaison).map(|l| l.name),
        Some("Zhao Min".to_string())
    );
    assert_eq!(of(&dir, "finance").history.len(), 1);
    assert!(of(&dir, "pbc-taiyuan").current.is_none());

    // The other office saw only the change addressed to it.
    let other = office(&t, ENFORCEMENT).await?.liaisons("").await?;
    let tax_there = of(&other, "tax");
    assert_eq!(
        tax_there.current.and_then(|c| c.liaison).map(|l| l.name),
        Some("Wang Li".to_string())
    );
    // The directory is the office's view, not a member's.
    refused(
        tax.liaisons(FUND).await,
        Code::PermissionDenied,
        "office of",
    );
    let lead_view = t.unit("civil-affairs").await?.liaisons(FUND).await?;
    assert_eq!(lead_view, dir);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_are_the_hub_records_signed_and_circulated() -> TestResult {
    let t = TestHub::start().await?;
    let since = tongbao_proto::now_micros();
    let finance = t.unit("finance").await?;
    finance.push(note("lead 1").to_mechanism(FUND)).await?;
    finance.push(note("lead 2").to_units(["tax"])).await?;
    let tax = t.unit("tax").await?;
    let page = tax.pull(0, 10).await?;
    tax.ack(&page.entries.iter().collect::<Vec<_>>()).await?;
    let end = tongbao_proto::now_micros() + 1;

    // A period is reported only once closed: ended, and settled.
    let office = office(&t, FUND).await?;
    refused(
        office
            .compute_statistics("", since, tongbao_proto::now_micros(), 0)
            .await,
        Code::FailedPrecondition,
        "not yet 1 s in the past",
    );
    refused(
        office.compute_statistics("", end, since, 0).await,
        Code::InvalidArgument,
        "since < until",
    );
    wait_until_past(end + STATISTICS_SETTLE_MICROS).await;
    refused(
        office
            .compute_statistics("", since, end, tongbao_proto::now_micros())
            .await,
        Code::FailedPrecondition,
        "the report is as of",
    );
    let report = office.compute_statistics("", since, end, 0).await?;
    assert_eq!(report.until_micros, end);

    // What happens after the period changes nothing in its report.
    finance.push(note("lead 3").to_mechanism(FUND)).await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let page = pbc.pull(0, 10).await?;
    pbc.ack(&page.entries.iter().collect::<Vec<_>>()).await?;
    assert_eq!(
        office
            .compute_statistics("", since, end, report.as_of_micros)
            .await?,
        report
    );
    let finance_sent: u64 = report
        .messages
        .iter()
        .filter(|c| c.unit == "finance" && c.kind == Kind::Notification as i32)
        .map(|c| c.count)
        .sum();
    assert_eq!(finance_sent, 2);
    let tax_stats = report
        .units
        .iter()
        .find(|u| u.unit == "tax")
        .ok_or("no tax row")?;
    assert_eq!((tax_stats.received, tax_stats.acknowledged), (2, 2));

    let lead = t.unit("civil-affairs").await?;
    refused(
        tax.compute_statistics(FUND, since, 0, 0).await,
        Code::PermissionDenied,
        "office of fund-supervision",
    );
    refused(
        tax.circulate_statistics(report.clone()).await,
        Code::PermissionDenied,
        "circulated by its office",
    );
    let mut inflated = report.clone();
    if let Some(c) = inflated.messages.first_mut() {
        c.count += 1;
    }
    refused(
        lead.circulate_statistics(inflated).await,
        Code::InvalidArgument,
        "differ from the hub's own records",
    );
    let mut open = report.clone();
    open.as_of_micros = tongbao_proto::now_micros();
    refused(
        lead.circulate_statistics(open).await,
        Code::FailedPrecondition,
        "statistics cover closed periods",
    );
    let sent = lead.circulate_statistics(report.clone()).await?;
    assert!(sent.recipients.contains(&"pbc-taiyuan".to_string()));

    let entry = inbox_entry(&pbc, Kind::Statistics)
        .await?
        .ok_or("statistics did not arrive")?;
    match decode_step(entry.message())? {
        pb::workflow_step::Step::Statistics(r) => assert_eq!(r, report),
        other => return Err(format!("unexpected step {other:?}").into()),
    }
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_shows_only_the_entries_the_caller_may_see() -> TestResult {
    let t = TestHub::start().await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let ps = t.unit("public-security").await?;
    let ss = t.unit("state-security").await?;
    let case = "C-2026-11";
    let lead = pbc
        .push(
            tongbao_client::Draft::new(Kind::Lead, "Suspicious transfers", "org X")
                .to_units(["public-security"])
                .with_case(case),
        )
        .await?;
    ps.push(
        tongbao_client::Draft::new(Kind::CaseUpdate, "Case opened", "file 11")
            .to_units(["pbc-taiyuan", "civil-affairs"])
            .with_case(case),
    )
    .await?;
    ss.push(
        tongbao_client::Draft::new(Kind::CaseUpdate, "Foreign funding", "restricted")
            .to_units(["public-security"])
            .with_case(case),
    )
    .await?;
    pbc.push(note("unrelated").to_units(["public-security"]))
        .await?;

    let subjects = |v: &[VerifiedEntry]| {
        v.iter()
            .map(|e| e.message().subject.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        subjects(&ps.case(case).await?),
        vec!["Suspicious transfers", "Case opened", "Foreign funding"]
    );
    assert_eq!(
        subjects(&pbc.case(case).await?),
        vec!["Suspicious transfers", "Case opened"]
    );
    assert_eq!(
        subjects(&t.unit("civil-affairs").await?.case(case).await?),
        vec!["Case opened"]
    );
    // A unit reading a case entry it was not addressed.
    let finance = t.unit("finance").await?;
    assert!(finance.case(case).await?.is_empty());
    refused(
        finance.get_entry(&lead.channel, lead.seq).await,
        Code::PermissionDenied,
        "not addressed",
    );
    refused(pbc.case("").await, Code::InvalidArgument, "case id");

    // Entries appended after a query are found by the next one.
    ss.push(
        tongbao_client::Draft::new(Kind::CaseUpdate, "Closed", "no further action")
            .to_units(["pbc-taiyuan"])
            .to_office(FUND)
            .with_case(case),
    )
    .await?;
    assert_eq!(
        subjects(&pbc.case(case).await?),
        vec!["Suspicious transfers", "Case opened", "Closed"]
    );
    assert_eq!(
        subjects(&office(&t, FUND).await?.case(case).await?),
        vec!["Closed"]
    );
    assert!(leading_group(&t).await?.case(case).await?.is_empty());
    assert!(finance.case(case).await?.is_empty());
    t.stop().await
}
