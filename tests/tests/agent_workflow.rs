//! The workflow steps through the agent: a unit consents to minutes and
//! co-signs a joint notice over HTTP, and the hub's workflow state shows
//! it; a step the unit may not take gets the hub's refusal as 4xx and
//! changes nothing.

use hyper::StatusCode;
use serde_json::json;
use tongbao_proto::pb::{self, AnswerState, Kind, MeetingKind};
use tongbao_tests::http::start_agent;
use tongbao_tests::{TestHub, TestResult};

const FUND: &str = "fund-supervision";

fn fund_meeting(id: &str) -> pb::MeetingProposal {
    pb::MeetingProposal {
        meeting_id: id.into(),
        mechanisms: vec![FUND.into()],
        kind: MeetingKind::Partial as i32,
        title: "Abnormal fund movements, Q4".into(),
        attending_units: vec!["finance".into(), "tax".into(), "pbc-taiyuan".into()],
        date_micros: tongbao_proto::now_micros(),
        agenda: vec!["Review of Q4 leads".into()],
    }
}

fn fund_notice() -> pb::JointContent {
    pb::JointContent {
        title: "Major abnormal fund movement: Foundation Y".into(),
        text: "CNY 30m moved to accounts abroad in 3 days.".into(),
        mechanism: FUND.into(),
        co_issuers: vec!["tax".into(), "pbc-taiyuan".into()],
        audience: Some(pb::Audience {
            mechanisms: vec![FUND.into()],
            offices: vec![FUND.into()],
            ..Default::default()
        }),
        case_id: "C-2026-7".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_consents_to_minutes_through_its_agent() -> TestResult {
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    let lead = t.unit("civil-affairs").await?;
    lead.propose_meeting(fund_meeting("m-1")).await?;
    let (_tax, tax) = start_agent(t.unit("tax").await?, dir.path(), "tax", None).await?;
    // No minutes yet: the library's refusal, as 409.
    let early = tax
        .post(
            "/v1/meetings/m-1/minutes-answer",
            &json!({ "consent": true }),
        )
        .await?;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.json());
    lead.settle_agenda("m-1", vec!["Review of Q4 leads".into()], vec![])
        .await?;
    lead.circulate_minutes("m-1", "Agreed: refer Y to Public Security.")
        .await?;

    let answered = tax
        .post(
            "/v1/meetings/m-1/minutes-answer",
            &json!({ "consent": true }),
        )
        .await?;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.json());
    assert_eq!(answered.json()["channel"], "tax");
    let state = lead.meeting("m-1").await?;
    let tax_answer = state
        .answers
        .iter()
        .find(|a| a.unit == "tax")
        .ok_or("no answer of tax")?;
    assert_eq!(tax_answer.state, AnswerState::Consented as i32);

    // A unit not attending: the hub's refusal, and no answer recorded.
    let (_health, health) =
        start_agent(t.unit("health").await?, dir.path(), "health", None).await?;
    let refused = health
        .post(
            "/v1/meetings/m-1/minutes-answer",
            &json!({ "consent": true }),
        )
        .await?;
    assert!(refused.status.is_client_error(), "{}", refused.json());
    assert!(
        lead.meeting("m-1")
            .await?
            .answers
            .iter()
            .all(|a| a.unit != "health")
    );
    // Malformed: consent is required.
    let bad = tax
        .post(
            "/v1/meetings/m-1/minutes-answer",
            &json!({ "comments": "?" }),
        )
        .await?;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["code"], "bad_json");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_co_issuer_co_signs_through_its_agent_and_a_stranger_cannot() -> TestResult {
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    let finance = t.unit("finance").await?;
    finance
        .draft_joint(Kind::JointNotice, "n-1", fund_notice())
        .await?;
    let (_tax, tax) = start_agent(t.unit("tax").await?, dir.path(), "tax", None).await?;
    let (_ps, ps) = start_agent(t.unit("public-security").await?, dir.path(), "ps", None).await?;

    let stranger = ps.post("/v1/joint-notices/n-1/co-sign", &json!({})).await?;
    assert_eq!(
        stranger.status,
        StatusCode::FORBIDDEN,
        "{}",
        stranger.json()
    );
    assert_eq!(stranger.json()["code"], "permission_denied");
    let unknown = tax
        .post("/v1/joint-notices/no-such/co-sign", &json!({}))
        .await?;
    assert!(unknown.status.is_client_error(), "{}", unknown.json());

    let signed = tax
        .post("/v1/joint-notices/n-1/co-sign", &json!({}))
        .await?;
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.json());
    let n = finance.joint_notice("n-1").await?;
    assert_eq!(n.not_signed, ["pbc-taiyuan"]);
    assert_eq!(n.co_signatures.len(), 1);
    t.stop().await
}
