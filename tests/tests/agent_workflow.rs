//! The workflow steps through the agent: a unit consents to minutes and
//! co-signs a joint notice over HTTP, and the hub's workflow state shows
//! it; a step the unit may not take gets the hub's refusal as 4xx and
//! changes nothing.

use hyper::StatusCode;
use serde_json::json;
use tongbao_proto::pb::{self, AnswerState, Kind};
use tongbao_tests::http::start_agent;
use tongbao_tests::workflow::{FUND, fund_meeting, fund_notice};
use tongbao_tests::{TestHub, TestResult};

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
    // A notice one may not see is answered as one that does not exist.
    assert_eq!(
        stranger.status,
        StatusCode::NOT_FOUND,
        "{}",
        stranger.json()
    );
    assert_eq!(stranger.json()["code"], "not_found");
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

/// The workflow views of both sides: a unit's agent lists what waits on
/// it (and stops listing it once answered), the office's agent lists the
/// meeting with who has not answered and the liaison directory; each view
/// refuses the other kind of party, and every view needs the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_steps_meetings_and_liaisons_through_the_agents() -> TestResult {
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    let lead = t.unit("civil-affairs").await?;
    lead.propose_meeting(fund_meeting("m-2")).await?;
    lead.settle_agenda("m-2", vec!["Review of Q4 leads".into()], vec![])
        .await?;
    lead.circulate_minutes("m-2", "Agreed: refer Y to Public Security.")
        .await?;
    let finance = t.unit("finance").await?;
    finance
        .draft_joint(Kind::JointNotice, "n-2", fund_notice())
        .await?;
    let tax_client = t.unit("tax").await?;
    tax_client
        .report_liaison(
            &[FUND.into()],
            pb::LiaisonChange {
                name: "Wang Li".into(),
                title: "Division chief".into(),
                contact: "0351-0000000".into(),
            },
        )
        .await?;
    let (_tax, tax) = start_agent(tax_client, dir.path(), "tax", None).await?;
    let office = tongbao_client::Client::connect(&t.pki.office_config(FUND, t.addr)?).await?;
    let (_office, office) = start_agent(office, dir.path(), "office", None).await?;

    // The unit: one minutes draft and one joint draft wait on it, shown
    // from their verified entries.
    let pending = tax.get("/v1/workflow/pending").await?;
    assert_eq!(pending.status, StatusCode::OK, "{}", pending.json());
    let p = pending.json();
    let minutes = p["minutes"].as_array().ok_or("no minutes")?;
    assert_eq!(minutes.len(), 1, "{p}");
    assert_eq!(minutes[0]["meeting_id"], "m-2");
    assert_eq!(minutes[0]["text"], "Agreed: refer Y to Public Security.");
    assert_eq!(minutes[0]["draft"]["verified"], true);
    assert_eq!(minutes[0]["draft"]["sender"], "civil-affairs");
    let joint = p["joint_notices"].as_array().ok_or("no joint notices")?;
    assert_eq!(joint.len(), 1, "{p}");
    assert_eq!(joint[0]["notice_id"], "n-2");
    assert_eq!(joint[0]["title"], fund_notice().title);
    let not_signed = joint[0]["not_signed"].as_array().ok_or("no not_signed")?;
    assert!(not_signed.contains(&json!("tax")), "{not_signed:?}");

    // The office: the meeting, and nobody has answered yet.
    let meetings = office.get("/v1/workflow/meetings").await?;
    assert_eq!(meetings.status, StatusCode::OK, "{}", meetings.json());
    let m = &meetings.json()["meetings"][0];
    assert_eq!(m["meeting_id"], "m-2", "{m}");
    assert_eq!(m["stage"], "minutes-drafted");
    assert_eq!(m["not_answered"], json!(["finance", "tax", "pbc-taiyuan"]));

    // Answered: the unit's list empties, the office sees the consent.
    let consent = json!({ "consent": true });
    let answered = tax
        .post("/v1/meetings/m-2/minutes-answer", &consent)
        .await?;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.json());
    let signed = tax
        .post("/v1/joint-notices/n-2/co-sign", &json!({}))
        .await?;
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.json());
    let p = tax.get("/v1/workflow/pending").await?.json();
    assert_eq!(p["minutes"], json!([]), "{p}");
    assert_eq!(p["joint_notices"], json!([]), "{p}");
    let m = &office.get("/v1/workflow/meetings").await?.json()["meetings"][0];
    assert_eq!(m["not_answered"], json!(["finance", "pbc-taiyuan"]), "{m}");
    let tax_answer = m["answers"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["unit"] == "tax"))
        .ok_or("no answer of tax")?;
    assert_eq!(tax_answer["state"], "consented");
    assert_eq!(tax_answer["answer"]["channel"], "tax");

    // The liaison directory, from the signed liaison change.
    let liaisons = office.get("/v1/liaisons").await?;
    assert_eq!(liaisons.status, StatusCode::OK, "{}", liaisons.json());
    let units = liaisons.json()["units"].clone();
    let row = units
        .as_array()
        .and_then(|u| u.iter().find(|x| x["unit"] == "tax"))
        .ok_or("no row for tax")?
        .clone();
    assert_eq!(row["current"]["name"], "Wang Li", "{row}");
    let none = units
        .as_array()
        .and_then(|u| u.iter().find(|x| x["unit"] == "finance"))
        .ok_or("no row for finance")?;
    assert_eq!(none["current"], serde_json::Value::Null);

    // Refusals: each view is for one kind of party, needs the token,
    // and bounds its scan.
    let wrong = office.get("/v1/workflow/pending").await?;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(wrong.json()["code"], "units_only");
    for path in ["/v1/workflow/meetings", "/v1/liaisons"] {
        let wrong = tax.get(path).await?;
        assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(wrong.json()["code"], "offices_only", "{path}");
    }
    for path in [
        "/v1/workflow/pending",
        "/v1/workflow/meetings",
        "/v1/liaisons",
    ] {
        let anonymous = tax.raw(hyper::Method::GET, path, None, Vec::new()).await?;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    for (query, code) in [
        ("scan=0", "bad_request"),
        ("scan=10001", "bad_request"),
        ("scan=x", "bad_query"),
        ("other=1", "bad_query"),
    ] {
        let bad = tax.get(&format!("/v1/workflow/pending?{query}")).await?;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(bad.json()["code"], code, "{query}");
    }
    let unknown = office.get("/v1/liaisons?mechanism=no-such").await?;
    assert!(unknown.status.is_client_error(), "{}", unknown.json());
    // Nothing a refusal asked for was recorded.
    let state = lead.meeting("m-2").await?;
    let consented = state
        .answers
        .iter()
        .filter(|a| a.state == AnswerState::Consented as i32)
        .count();
    assert_eq!(consented, 1);
    t.stop().await
}
