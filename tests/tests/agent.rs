//! `tongbao agent` end to end, against a real hub: one unit sends through
//! its agent, another receives by a signed webhook and acknowledges through
//! its agent, and the office's agent shows the message acknowledged. Then
//! the refusals: no or a wrong token, malformed JSON, an unknown unit and
//! an oversized body each get a clear 4xx and change nothing at the hub.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tongbao_agent::{AgentConfig, WebhookConfig};
use tongbao_client::Client;
use tongbao_tests::http::{AgentHttp, Receiver, start_agent, start_agent_with};
use tongbao_tests::workflow::office;
use tongbao_tests::{BoxError, TestHub, TestResult, assert_nothing_stored, wait_until};

const WITHIN: Duration = Duration::from_secs(30);

fn webhook(dir: &Path, name: &str, url: String, key: &str) -> Result<WebhookConfig, BoxError> {
    let secret_file = dir.join(format!("{name}-webhook-secret"));
    tongbao_proto::secret_file::create_new(&secret_file, format!("{key}\n").as_bytes())?;
    Ok(WebhookConfig {
        url,
        secret_file,
        cursor_file: dir.join(format!("{name}-webhook-cursor")),
        allow_remote: false,
        max_attempts: 3,
        first_backoff: Duration::from_millis(20),
    })
}

/// The recipient states the office's agent shows for CHANNEL:SEQ.
async fn audited(office: &AgentHttp, channel: &str, seq: u64) -> Result<Value, BoxError> {
    let a = office.get("/v1/audit/deliveries?limit=100").await?;
    if a.status != StatusCode::OK {
        return Err(format!("audit answered {}: {}", a.status, a.json()).into());
    }
    Ok(a.json()["entries"]
        .as_array()
        .and_then(|es| {
            es.iter()
                .find(|e| e["channel"] == channel && e["seq"] == seq)
                .cloned()
        })
        .unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_through_one_agent_received_by_webhook_acknowledged_and_audited() -> TestResult {
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    let key = "a-webhook-key-known-to-the-receiver";
    let mut receiver = Receiver::start(key.as_bytes(), 0).await?;
    let (_tax, tax) = start_agent(t.unit("tax").await?, dir.path(), "tax", None).await?;
    let hook = webhook(dir.path(), "civil", receiver.url(), key)?;
    let (_civil, civil) = start_agent(
        t.unit("civil-affairs").await?,
        dir.path(),
        "civil",
        Some(hook),
    )
    .await?;
    let (_office, office_http) = start_agent(
        office(&t, "joint-enforcement").await?,
        dir.path(),
        "office",
        None,
    )
    .await?;

    let party = tax.get("/v1/party").await?;
    assert_eq!(party.json()["id"], "tax");
    let sent = tax
        .post(
            "/v1/messages",
            &json!({
                "kind": "notification",
                "audience": { "units": ["civil-affairs"] },
                "subject": "Irregular donations",
                "body": "Org X, 2026-11",
                "labels": { "priority": "urgent" },
                "references": { "case_id": "case-7" },
            }),
        )
        .await?;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.json());
    let sent = sent.json();
    assert_eq!((&sent["channel"], &sent["seq"]), (&json!("tax"), &json!(0)));
    assert_eq!(sent["recipients"], json!(["civil-affairs"]));

    // The webhook receiver checked the signature before passing it on.
    let delivered = tokio::time::timeout(WITHIN, receiver.deliveries.recv())
        .await?
        .ok_or("the receiver stopped")?;
    assert_eq!(delivered["event"], "entry");
    let entry = &delivered["entry"];
    assert_eq!(entry["subject"], "Irregular donations");
    assert_eq!(entry["body"], "Org X, 2026-11");
    assert_eq!(entry["sender"], "tax");
    assert_eq!(entry["verified"], true);
    assert_eq!(entry["leaf_hash"], sent["leaf_hash"]);
    assert_eq!(entry["labels"]["priority"], "urgent");
    assert_eq!(entry["case_id"], "case-7");
    assert_eq!(delivered["delivery_header"], "tax:0");
    assert_eq!(
        receiver.refused.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    // The same entry by page, by position and live.
    let page = civil.get("/v1/inbox?after=0&limit=10").await?.json();
    assert_eq!(page["entries"][0]["leaf_hash"], sent["leaf_hash"]);
    assert_eq!(page["next_after"], entry["cursor"]);
    let one = civil.get("/v1/entries/tax/0").await?.json();
    assert_eq!(one["subject"], "Irregular donations");
    let live = tokio::time::timeout(WITHIN, civil.first_event(0)).await??;
    assert_eq!(live["leaf_hash"], sent["leaf_hash"]);

    // Not yet acknowledged, then acknowledged through the agent.
    wait_until(WITHIN, "the office audits tax:0", || async {
        Ok(!audited(&office_http, "tax", 0).await?.is_null())
    })
    .await?;
    let before = audited(&office_http, "tax", 0).await?;
    assert_ne!(before["recipients"][0]["state"], "acknowledged");
    let acked = civil
        .post(
            "/v1/acknowledge",
            &json!({ "entries": [{ "channel": "tax", "seq": 0 }] }),
        )
        .await?;
    assert_eq!(acked.status, StatusCode::OK, "{}", acked.json());
    assert_eq!(acked.json()["newly_acknowledged"], 1);
    assert_eq!(acked.json()["receipt"]["channel"], "civil-affairs");

    let after = audited(&office_http, "tax", 0).await?;
    let civil_state = &after["recipients"][0];
    assert_eq!(civil_state["recipient"], "civil-affairs");
    assert_eq!(civil_state["state"], "acknowledged");
    assert_eq!(civil_state["answer_check"], "verified");

    // Acknowledging again appends nothing.
    let again = civil
        .post(
            "/v1/acknowledge",
            &json!({ "entries": [{ "channel": "tax", "seq": 0 }] }),
        )
        .await?
        .json();
    assert_eq!(again["newly_acknowledged"], 0);
    assert_eq!(again["receipt"], Value::Null);

    // Civil Affairs' webhook delivered exactly the one entry addressed to it
    // (its receipt went to tax).
    let status = civil.get("/v1/webhook").await?.json();
    assert_eq!(status["delivered"], 1);
    assert_eq!(status["paused"], false);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_4xx_and_change_nothing_at_the_hub() -> TestResult {
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    let (_tax, tax) = start_agent(t.unit("tax").await?, dir.path(), "tax", None).await?;
    let good = json!({
        "kind": "notification", "audience": { "units": ["civil-affairs"] },
        "subject": "s", "body": "b",
    })
    .to_string()
    .into_bytes();

    // No token, a wrong one, another scheme.
    for auth in [
        None,
        Some("Bearer 0000000000000000000000000000000000000000000000000000000000000000"),
        Some("Bearer "),
        Some(&*format!("Basic {}", tax.token)),
    ] {
        let a = tax
            .raw(Method::POST, "/v1/messages", auth, good.clone())
            .await?;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(a.json()["code"], "unauthorized");
    }
    // The document is public; nothing else is.
    let doc = tax
        .raw(Method::GET, "/openapi.json", None, Vec::new())
        .await?;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.json()["paths"]["/v1/messages"].is_object());
    assert_eq!(
        tax.raw(Method::GET, "/v1/inbox", None, Vec::new())
            .await?
            .status,
        StatusCode::UNAUTHORIZED
    );

    // Malformed JSON: 400, and a long input is not echoed back.
    let auth = format!("Bearer {}", tax.token);
    let junk = format!("{{\"kind\": \"{}", "x".repeat(100_000));
    let a = tax
        .raw(Method::POST, "/v1/messages", Some(&auth), junk.into_bytes())
        .await?;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["code"], "bad_json");
    assert!(a.body.len() < 2048, "{} bytes echoed", a.body.len());
    let long_kind = json!({
        "kind": "k".repeat(100_000), "audience": { "units": ["civil-affairs"] },
        "subject": "s", "body": "b",
    });
    let a = tax.post("/v1/messages", &long_kind).await?;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.len() < 2048, "{} bytes echoed", a.body.len());

    // An unknown unit: the hub's reason, as 400.
    let a = tax
        .post(
            "/v1/messages",
            &json!({
                "kind": "notification", "audience": { "units": ["no-such-unit"] },
                "subject": "s", "body": "b",
            }),
        )
        .await?;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.json());
    assert_eq!(a.json()["code"], "invalid_argument");
    assert!(
        a.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("no-such-unit")),
        "{}",
        a.json()
    );

    // Oversized: 413 before anything is parsed.
    let huge = json!({
        "kind": "notification", "audience": { "units": ["civil-affairs"] },
        "subject": "s", "body": "b".repeat(AgentConfig::DEFAULT_MAX_REQUEST_BYTES + 1),
    });
    let a = tax.post("/v1/messages", &huge).await?;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.json()["code"], "body_too_large");

    // Bounds of the other calls.
    let a = tax.get("/v1/inbox?limit=5000").await?;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = tax.get("/v1/inbox?after=minus-one").await?;
    assert_eq!(a.json()["code"], "bad_query");
    let a = tax.get("/v1/entries/tax/not-a-number").await?;
    assert_eq!(a.json()["code"], "bad_path");
    let a = tax
        .post("/v1/acknowledge", &json!({ "entries": [] }))
        .await?;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = tax.get("/v1/no-such-route").await?;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["code"], "no_such_route");
    let a = tax.get("/v1/webhook").await?;
    assert_eq!(a.json()["code"], "no_webhook");
    // A unit is no office: the hub's refusal, as 403.
    let a = tax.get("/v1/audit/deliveries").await?;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.json());

    assert_nothing_stored(&t).await?;
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_is_retried_a_bounded_number_of_times_then_paused_until_resumed()
-> TestResult {
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    let key = "another-webhook-key-for-retries";
    // Fails 4 deliveries: 3 attempts, a pause, then 1 more after resuming.
    let mut receiver = Receiver::start(key.as_bytes(), 4).await?;
    let hook = webhook(dir.path(), "civil", receiver.url(), key)?;
    let (civil_agent, civil) = start_agent(
        t.unit("civil-affairs").await?,
        dir.path(),
        "civil",
        Some(hook),
    )
    .await?;
    t.unit("tax")
        .await?
        .push(tongbao_tests::note("retried").to_units(["civil-affairs"]))
        .await?;
    wait_until(WITHIN, "the webhook pauses after 3 attempts", || async {
        Ok(civil.get("/v1/webhook").await?.json()["paused"] == true)
    })
    .await?;
    let status = civil.get("/v1/webhook").await?.json();
    assert_eq!(status["failed_attempts"], 3);
    assert_eq!(status["delivered"], 0);
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{status}"
    );
    assert!(receiver.deliveries.try_recv().is_err());
    assert_eq!(receiver.failed.load(std::sync::atomic::Ordering::SeqCst), 3);
    let resumed = civil.post("/v1/webhook/resume", &json!({})).await?.json();
    assert_eq!(resumed["resumed"], true);
    let delivered = tokio::time::timeout(WITHIN, receiver.deliveries.recv())
        .await?
        .ok_or("the receiver stopped")?;
    assert_eq!(delivered["entry"]["subject"], "retried");
    wait_until(WITHIN, "the webhook reports the delivery", || async {
        Ok(civil.get("/v1/webhook").await?.json()["delivered"] == 1)
    })
    .await?;

    // A restarted agent resumes after the delivered cursor: nothing again.
    civil_agent.shutdown().await;
    let hook = WebhookConfig {
        secret_file: dir.path().join("civil-webhook-secret"),
        ..webhook(dir.path(), "civil-2", receiver.url(), key)?
    };
    let hook = WebhookConfig {
        cursor_file: dir.path().join("civil-webhook-cursor"),
        ..hook
    };
    let (_again, again) = start_agent(
        t.unit("civil-affairs").await?,
        dir.path(),
        "civil",
        Some(hook),
    )
    .await?;
    assert_eq!(
        again.get("/v1/webhook").await?.json()["delivered_after"],
        delivered["entry"]["cursor"]
    );
    t.unit("tax")
        .await?
        .push(tongbao_tests::note("next").to_units(["civil-affairs"]))
        .await?;
    let next = tokio::time::timeout(WITHIN, receiver.deliveries.recv())
        .await?
        .ok_or("the receiver stopped")?;
    assert_eq!(next["entry"]["subject"], "next");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_to_another_host_is_refused_unless_allowed() -> TestResult {
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    let hook = webhook(
        dir.path(),
        "civil",
        "http://192.0.2.1/hook".into(),
        "k".repeat(32).as_str(),
    )?;
    let refused = start_agent(
        t.unit("civil-affairs").await?,
        dir.path(),
        "civil",
        Some(hook),
    )
    .await;
    let e = refused.err().ok_or("a remote webhook was accepted")?;
    assert!(e.to_string().contains("--webhook-allow-remote"), "{e}");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_and_long_polls_are_bounded_and_a_closed_stream_frees_its_place() -> TestResult
{
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    let (_civil, civil) =
        start_agent_with(t.unit("civil-affairs").await?, dir.path(), "civil", |c| {
            c.max_streams = 1
        })
        .await?;
    let open = civil.open_events(0).await?;
    assert_eq!(open.status(), StatusCode::OK);
    let refused = civil.get("/v1/events?after=0").await?;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["code"], "too_many_streams");
    let refused = civil.get("/v1/inbox?after=0&wait_ms=100").await?;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    // A page that need not wait takes no place.
    assert_eq!(civil.get("/v1/inbox?after=0").await?.status, StatusCode::OK);
    drop(open);
    wait_until(WITHIN, "the closed stream's place is free", || async {
        Ok(civil.get("/v1/inbox?after=0&wait_ms=10").await?.status == StatusCode::OK)
    })
    .await?;
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exception_feedback_through_the_agent_reaches_the_sender_and_the_audit() -> TestResult {
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    t.unit("tax")
        .await?
        .push(tongbao_tests::note("Not ours").to_units(["civil-affairs"]))
        .await?;
    let (_civil, civil) =
        start_agent(t.unit("civil-affairs").await?, dir.path(), "civil", None).await?;
    let (_office, office_http) = start_agent(
        office(&t, "joint-enforcement").await?,
        dir.path(),
        "office",
        None,
    )
    .await?;
    let bad = civil
        .post(
            "/v1/feedback",
            &json!({ "channel": "tax", "seq": 0, "problem": "boring" }),
        )
        .await?;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("misaddressed")),
        "{}",
        bad.json()
    );
    let missing = civil
        .post(
            "/v1/feedback",
            &json!({ "channel": "tax", "seq": 9, "problem": "misaddressed" }),
        )
        .await?;
    assert!(missing.status.is_client_error(), "{}", missing.json());

    let sent = civil
        .post(
            "/v1/feedback",
            &json!({ "channel": "tax", "seq": 0, "problem": "misaddressed", "text": "for market-regulation" }),
        )
        .await?;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.json());
    assert_eq!(sent.json()["recipients"], json!(["tax"]));
    // Tax reads it, verified, naming its entry.
    let tax = t.unit("tax").await?;
    let page = tax.pull(0, 10).await?;
    let feedback = page
        .entries
        .iter()
        .find(|e| e.message().kind == tongbao_proto::pb::Kind::ExceptionFeedback as i32)
        .ok_or("no feedback in tax's inbox")?;
    assert_eq!(feedback.channel(), "civil-affairs");
    // The office sees the exception; its free text was for tax alone.
    let audited = audited(&office_http, "tax", 0).await?;
    let state = &audited["recipients"][0];
    assert_eq!(state["state"], "exception", "{audited}");
    assert_eq!(state["answer_check"], "redacted");
    t.stop().await
}

/// A client of `party` that pins a hub key the hub does not sign with:
/// every checkpoint it fetches fails, so no inclusion can be proven, while
/// signatures and leaf hashes still verify.
async fn without_provable_inclusion(
    mut config: tongbao_client::ClientConfig,
) -> Result<Client, BoxError> {
    let key = tongbao_proto::keys::SigningKey::generate()?;
    let vkey =
        tongbao_proto::checkpoint::NoteSigner::new(tongbao_server::pki::DEFAULT_LOG_NAME, &key)?
            .verifier()?
            .to_vkey();
    config.hub_key = Some(vkey);
    Ok(Client::connect(&config).await?)
}

/// The first event of `GET /v1/events?after=0`: its name and its data.
async fn first_event_of_any_kind(agent: &AgentHttp) -> Result<(String, Value), BoxError> {
    use http_body_util::BodyExt;
    let response = agent.open_events(0).await?;
    if response.status() != StatusCode::OK {
        return Err(format!("events answered {}", response.status()).into());
    }
    let mut body = response.into_body();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let name = event.lines().find_map(|l| l.strip_prefix("event: "));
            let data = event.lines().find_map(|l| l.strip_prefix("data: "));
            // Keep-alive comments carry neither.
            if let (Some(name), Some(data)) = (name, data) {
                return Ok((name.to_string(), serde_json::from_str(data)?));
            }
        }
    }
    Err("the event stream ended without an event".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_inclusion_cannot_be_proven_is_never_streamed_nor_posted() -> TestResult {
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    let key = "a-webhook-key-known-to-the-receiver";
    let mut receiver = Receiver::start(key.as_bytes(), 0).await?;
    let civil_client =
        without_provable_inclusion(t.pki.unit_config("civil-affairs", t.addr)?).await?;
    let hook = webhook(dir.path(), "civil", receiver.url(), key)?;
    let (_civil, civil) = start_agent(civil_client, dir.path(), "civil", Some(hook)).await?;
    t.unit("tax")
        .await?
        .push(tongbao_tests::note("Unprovable").to_units(["civil-affairs"]))
        .await?;

    // Server-sent events: the error, never the entry.
    let (name, data) = tokio::time::timeout(WITHIN, first_event_of_any_kind(&civil)).await??;
    assert_eq!(name, "error", "{data}");
    assert_eq!(data["code"], "verification_failed", "{data}");

    // The webhook: paused with the reason, nothing posted, cursor kept.
    wait_until(WITHIN, "the webhook pauses", || async {
        Ok(civil.get("/v1/webhook").await?.json()["paused"] == true)
    })
    .await?;
    let status = civil.get("/v1/webhook").await?.json();
    assert_eq!(status["delivered"], 0, "{status}");
    assert_eq!(status["delivered_after"], 0, "{status}");
    let reason = status["last_error"].as_str().unwrap_or_default();
    assert!(reason.starts_with("not delivered: "), "{status}");
    assert!(
        receiver.deliveries.try_recv().is_err(),
        "an unproven entry was posted"
    );
    assert_eq!(receiver.failed.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(
        receiver.refused.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    // Resumed: checked again, and paused again, still unsent.
    let resumed = civil.post("/v1/webhook/resume", &json!({})).await?.json();
    assert_eq!(resumed["resumed"], true);
    wait_until(WITHIN, "the webhook pauses again", || async {
        Ok(civil.get("/v1/webhook").await?.json()["paused"] == true)
    })
    .await?;
    assert!(
        receiver.deliveries.try_recv().is_err(),
        "an unproven entry was posted"
    );

    // The page refuses it the same way.
    let page = civil.get("/v1/inbox?after=0").await?;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.json());
    assert_eq!(page.json()["code"], "verification_failed");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audited_answer_whose_inclusion_cannot_be_proven_is_not_shown() -> TestResult {
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    let office_client =
        without_provable_inclusion(t.pki.office_config("joint-enforcement", t.addr)?).await?;
    let (_office, office_http) = start_agent(office_client, dir.path(), "office", None).await?;
    t.unit("tax")
        .await?
        .push(tongbao_tests::note("To be answered").to_units(["civil-affairs"]))
        .await?;
    // Without answers nothing needs proving.
    wait_until(WITHIN, "the office audits tax:0", || async {
        Ok(!audited(&office_http, "tax", 0).await?.is_null())
    })
    .await?;
    let civil = t.unit("civil-affairs").await?;
    let page = civil.pull(0, 10).await?;
    civil.ack(&page.entries.iter().collect::<Vec<_>>()).await?;
    let shown = office_http.get("/v1/audit/deliveries?limit=100").await?;
    assert_eq!(shown.status, StatusCode::BAD_GATEWAY, "{}", shown.json());
    assert_eq!(shown.json()["code"], "verification_failed");
    t.stop().await
}
