//! Push, pull, get and entitlement over real mutual TLS, including every
//! refusal the hub must make, and that refusals leave the store unchanged.

use tongbao_client::ClientError;
use tongbao_proto::keys::SigningKey;
use tongbao_proto::pb::{self, Kind};
use tongbao_tests::{TestHub, TestResult, assert_nothing_stored, code_of, members_of, note};
use tonic::Code;

fn rejected(r: Result<impl std::fmt::Debug, ClientError>, code: Code, words: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} ({words}), got Ok({v:?})"),
        Err(e) => {
            assert_eq!(code_of(&e), Some(code), "{e}");
            assert!(
                e.to_string().contains(words),
                "{e:?} should mention {words:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mechanism_message_reaches_exactly_its_members() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let r = tax
        .push(note("Fund movement").to_mechanism("joint-enforcement"))
        .await?;
    assert_eq!((r.channel.as_str(), r.seq, r.duplicate), ("tax", 0, false));
    let members = members_of("joint-enforcement");
    assert_eq!(members.len(), 13);
    let expected: Vec<&str> = {
        let mut v: Vec<&str> = members.iter().copied().filter(|u| *u != "tax").collect();
        v.sort();
        v
    };
    assert_eq!(r.recipients, expected);
    for unit in members.iter().filter(|u| **u != "tax") {
        let page = t.unit(unit).await?.pull(0, 10).await?;
        assert_eq!(page.entries.len(), 1, "{unit}");
        let e = &page.entries[0];
        assert_eq!((e.channel(), e.seq(), e.cursor), ("tax", 0, 1));
        assert_eq!(e.message().subject, "Fund movement");
        assert_eq!(e.leaf_hash.to_vec(), r.leaf_hash);
    }
    // Fund-supervision-only units see nothing, and cannot fetch it directly.
    for outsider in ["finance", "pbc-taiyuan"] {
        let c = t.unit(outsider).await?;
        assert!(c.pull(0, 10).await?.entries.is_empty());
        rejected(
            c.get_entry("tax", 0).await,
            Code::PermissionDenied,
            "not addressed",
        );
    }
    // The sender sees its own entry.
    assert_eq!(
        tax.get_entry("tax", 0).await?.message().subject,
        "Fund movement"
    );
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offices_and_explicit_units_receive_and_channels_chain() -> TestResult {
    let t = TestHub::start().await?;
    let pbc = t.unit("pbc-taiyuan").await?;
    let first = pbc
        .push(
            note("Suspicious transactions")
                .to_units(["public-security"])
                .with_case("case-7"),
        )
        .await?;
    let second = pbc
        .push(
            note("Follow-up")
                .to_units(["public-security"])
                .to_office("fund-supervision")
                .in_reply_to("pbc-taiyuan", 0),
        )
        .await?;
    assert_eq!((first.seq, second.seq), (0, 1));
    let ps = t.unit("public-security").await?.pull(0, 10).await?;
    assert_eq!(ps.entries.len(), 2);
    assert_eq!(
        ps.entries[1].entry.previous_leaf_hash, first.leaf_hash,
        "leaves chain"
    );
    assert_eq!(
        ps.entries[0]
            .message()
            .references
            .as_ref()
            .map(|r| r.case_id.as_str()),
        Some("case-7")
    );
    let office =
        tongbao_client::Client::connect(&t.pki.office_config("fund-supervision", t.addr)?).await?;
    let page = office.pull(0, 10).await?;
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].seq(), 1);
    // Paging: one at a time, resuming after the cursor.
    let c = t.unit("public-security").await?;
    let p1 = c.pull(0, 1).await?;
    let p2 = c.pull(p1.next_after(0), 1).await?;
    assert_eq!(
        (p1.entries[0].seq(), p2.entries[0].seq(), p2.head),
        (0, 1, 2)
    );
    assert!(c.pull(p2.next_after(1), 1).await?.entries.is_empty());
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_message_id_appends_nothing() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let signed = tax.sign(note("Once").to_units(["finance"]).with_id("tax-2026-001"))?;
    let a = tax.push_signed(signed.clone()).await?;
    let b = tax.push_signed(signed).await?;
    assert!(!a.duplicate && b.duplicate);
    assert_eq!((a.seq, &a.leaf_hash), (b.seq, &b.leaf_hash));
    // Concurrent replays of one new message: still one entry.
    let signed = tax.sign(
        note("Twice at once")
            .to_units(["finance"])
            .with_id("tax-2026-002"),
    )?;
    let (x, y) = tokio::join!(tax.push_signed(signed.clone()), tax.push_signed(signed));
    let (x, y) = (x?, y?);
    assert_eq!(x.seq, y.seq);
    assert!(x.duplicate != y.duplicate);
    // Same id, other content: refused, names the original entry.
    rejected(
        tax.push(
            note("Other content")
                .to_units(["finance"])
                .with_id("tax-2026-001"),
        )
        .await,
        Code::AlreadyExists,
        "tax:0",
    );
    let page = t.unit("finance").await?.pull(0, 10).await?;
    assert_eq!(page.entries.len(), 2);
    assert_eq!(tax.push(note("Next").to_units(["finance"])).await?.seq, 2);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_cannot_push_as_another_unit() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    // Even with the other unit's own signing key, the certificate decides.
    let finance_key =
        SigningKey::from_pem(&std::fs::read_to_string(t.pki.signing_key_path("finance"))?)?;
    let mut m = tax
        .sign(note("Forged").to_units(["civil-affairs"]))?
        .message
        .ok_or("no message")?;
    m.sender = "finance".into();
    rejected(
        tax.push_signed(finance_key.sign_message(m)).await,
        Code::PermissionDenied,
        "only as itself",
    );
    assert_nothing_stored(&t).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_signature_is_refused() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let registered = tax.sign(note("x").to_units(["civil-affairs"]))?;
    let registered_key_id = registered
        .signature
        .as_ref()
        .map(|s| s.key_id.clone())
        .ok_or("no sig")?;
    // An unregistered key.
    let rogue = SigningKey::generate()?;
    let m = registered.message.clone().ok_or("no message")?;
    rejected(
        tax.push_signed(rogue.sign_message(m.clone())).await,
        Code::Unauthenticated,
        "not a registered signing key",
    );
    // An unregistered key claiming the registered key id.
    let mut forged = rogue.sign_message(m);
    if let Some(s) = forged.signature.as_mut() {
        s.key_id = registered_key_id;
    }
    rejected(
        tax.push_signed(forged).await,
        Code::Unauthenticated,
        "does not verify",
    );
    // Garbage signature bytes and an unknown algorithm.
    let mut garbage = registered.clone();
    if let Some(s) = garbage.signature.as_mut() {
        s.signature = vec![0; 64];
    }
    rejected(
        tax.push_signed(garbage).await,
        Code::Unauthenticated,
        "does not verify",
    );
    let mut alg = registered;
    if let Some(s) = alg.signature.as_mut() {
        s.algorithm = "sm2".into();
    }
    rejected(
        tax.push_signed(alg).await,
        Code::Unauthenticated,
        "not supported",
    );
    assert_nothing_stored(&t).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_changed_after_signing_is_refused() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let mut signed = tax.sign(note("Original").to_units(["civil-affairs"]))?;
    if let Some(m) = signed.message.as_mut() {
        m.body = b"tampered".to_vec().into();
    }
    rejected(
        tax.push_signed(signed.clone()).await,
        Code::Unauthenticated,
        "changed after signing",
    );
    // Widening the audience after signing is the same tampering.
    let mut signed = tax.sign(note("Original").to_units(["civil-affairs"]))?;
    if let Some(a) = signed.message.as_mut().and_then(|m| m.audience.as_mut()) {
        a.units.push("state-security".into());
    }
    rejected(
        tax.push_signed(signed).await,
        Code::Unauthenticated,
        "changed after signing",
    );
    assert_nothing_stored(&t).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_messages_are_refused() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let big = vec![b'x'; (1 << 20) + 1];
    rejected(
        tax.push(
            tongbao_client::Draft::new(Kind::Notification, "Big", big).to_units(["civil-affairs"]),
        )
        .await,
        Code::ResourceExhausted,
        "max_body_bytes",
    );
    // Far beyond the request limit: refused before decoding, naming it.
    let huge = vec![b'x'; 3 << 20];
    rejected(
        tax.push(
            tongbao_client::Draft::new(Kind::Notification, "Huge", huge)
                .to_units(["civil-affairs"]),
        )
        .await,
        Code::ResourceExhausted,
        "accepts at most",
    );
    rejected(
        tax.push(note("To nobody").to_units(["no-such-unit"])).await,
        Code::InvalidArgument,
        "does not know",
    );
    rejected(
        tax.push(note("To nowhere").to_mechanism("no-such-mechanism"))
            .await,
        Code::InvalidArgument,
        "does not know",
    );
    rejected(
        tax.push(note("To myself").to_units(["tax"])).await,
        Code::InvalidArgument,
        "no recipient other than the sender",
    );
    rejected(
        tax.push(note("Nobody")).await,
        Code::InvalidArgument,
        "audience is empty",
    );
    rejected(
        tax.push(
            note("Secret")
                .to_units(["civil-affairs"])
                .with_labels(pb::Labels {
                    classification: pb::Classification::Classified as i32,
                    ..Default::default()
                }),
        )
        .await,
        Code::InvalidArgument,
        "classified",
    );
    rejected(
        tax.push(tongbao_client::Draft::new(Kind::Receipt, "r", "r").to_units(["civil-affairs"]))
            .await,
        Code::InvalidArgument,
        "cannot be pushed",
    );
    rejected(
        tax.push(
            note("bad id")
                .to_units(["civil-affairs"])
                .with_id("has space"),
        )
        .await,
        Code::InvalidArgument,
        "message id",
    );
    assert_nothing_stored(&t).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_reads_another_inbox() -> TestResult {
    let t = TestHub::start().await?;
    t.unit("tax")
        .await?
        .push(note("For finance").to_units(["finance"]))
        .await?;
    // The library always asks for its own inbox; go below it.
    let mut raw = pb::exchange_client::ExchangeClient::new(
        tongbao_tests::raw_channel(&t.pki, "education", t.addr).await?,
    );
    let status = raw
        .pull(pb::PullRequest {
            inbox: "finance".into(),
            after: 0,
            limit: 10,
        })
        .await
        .err()
        .ok_or("read another inbox")?;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("only its own inbox"),
        "{}",
        status.message()
    );
    let status = raw
        .subscribe(pb::SubscribeRequest {
            inbox: "finance".into(),
            after: 0,
        })
        .await
        .err()
        .ok_or("subscribed to another inbox")?;
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = raw
        .get_entry(pb::GetEntryRequest {
            channel: "tax".into(),
            seq: 0,
        })
        .await
        .err()
        .ok_or("read an unaddressed entry")?;
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = raw
        .get_entry(pb::GetEntryRequest {
            channel: "tax".into(),
            seq: 99,
        })
        .await
        .err()
        .ok_or("found a missing entry")?;
    assert_eq!(status.code(), Code::NotFound);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_large_entries_are_capped_by_size() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    for i in 0..6u8 {
        let body = vec![b'a' + i; 1000 * 1024];
        tax.push(
            tongbao_client::Draft::new(Kind::Notification, format!("s{i}"), body)
                .to_units(["finance"]),
        )
        .await?;
    }
    let finance = t.unit("finance").await?;
    let first = finance.pull(0, 100).await?;
    assert!(
        !first.entries.is_empty() && first.entries.len() < 6,
        "{}",
        first.entries.len()
    );
    let mut after = first.next_after(0);
    let mut total = first.entries.len();
    while total < 6 {
        let page = finance.pull(after, 100).await?;
        assert!(!page.entries.is_empty());
        total += page.entries.len();
        after = page.next_after(after);
    }
    assert_eq!((total, after), (6, 6));
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_message_like_push() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let good = tax.sign(note("one").to_units(["finance"]).with_id("b-1"))?;
    let mut tampered = tax.sign(note("two").to_units(["finance"]))?;
    if let Some(m) = tampered.message.as_mut() {
        m.body = b"changed".to_vec().into();
    }
    let unknown = tax.sign(note("three").to_units(["nobody"]))?;
    let also_good = tax.sign(note("four").to_units(["finance"]))?;
    let results = tax
        .push_signed_batch(vec![good.clone(), tampered, unknown, good, also_good])
        .await?;
    assert_eq!(results.len(), 5);
    let first = results[0].as_ref().map_err(|e| e.to_string())?;
    assert_eq!(
        code_of(results[1].as_ref().err().ok_or("tampered accepted")?),
        Some(Code::Unauthenticated)
    );
    assert_eq!(
        code_of(results[2].as_ref().err().ok_or("unknown accepted")?),
        Some(Code::InvalidArgument)
    );
    let repeat = results[3].as_ref().map_err(|e| e.to_string())?;
    assert_eq!(first.seq, repeat.seq);
    assert!(
        first.duplicate != repeat.duplicate,
        "exactly one of the two is the original"
    );
    let last = results[4].as_ref().map_err(|e| e.to_string())?;
    assert_eq!(last.seq, 1);
    let page = t.unit("finance").await?.pull(0, 10).await?;
    assert_eq!(page.entries.len(), 2);
    // Too many messages in one call.
    let many: Vec<_> = (0..4097)
        .map(|i| tax.sign(note(&format!("m{i}")).to_units(["finance"])))
        .collect::<Result<_, _>>()?;
    let e = tax
        .push_signed_batch(many)
        .await
        .err()
        .ok_or("oversized batch accepted")?;
    assert_eq!(code_of(&e), Some(Code::ResourceExhausted), "{e}");
    assert_eq!(t.unit("finance").await?.pull(0, 10).await?.entries.len(), 2);
    t.stop().await
}

/// How many entries a unit's inbox holds, read page by page.
async fn inbox_len(unit: &tongbao_client::Client) -> Result<usize, ClientError> {
    let (mut after, mut stored) = (0, 0);
    loop {
        let page = unit.pull(after, 100).await?;
        if page.entries.is_empty() {
            return Ok(stored);
        }
        stored += page.entries.len();
        after = page.next_after(after);
    }
}

/// A signature made by another key under the registered key id of `tax`.
fn forge(rogue: &SigningKey, registered: &pb::SignedMessage) -> Result<pb::SignedMessage, String> {
    let mut forged = rogue.sign_message(registered.message.clone().ok_or("no message")?);
    if let (Some(s), Some(r)) = (forged.signature.as_mut(), registered.signature.as_ref()) {
        s.key_id = r.key_id.clone();
    }
    Ok(forged)
}

/// Small batches share the verifier queue with single pushes; large ones
/// are checked on their own: both refuse exactly the forged message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signature_in_a_batch_fails_only_that_message() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let rogue = SigningKey::generate()?;
    for (size, forged_at) in [(12usize, 7usize), (100, 97)] {
        let mut batch = (0..size)
            .map(|i| tax.sign(note(&format!("batch of {size}, {i}")).to_units(["finance"])))
            .collect::<Result<Vec<_>, _>>()?;
        batch[forged_at] = forge(&rogue, &batch[forged_at])?;
        let results = tax.push_signed_batch(batch).await?;
        assert_eq!(results.len(), size);
        for (i, r) in results.into_iter().enumerate() {
            if i == forged_at {
                rejected(r, Code::Unauthenticated, "does not verify");
            } else {
                r.map_err(|e| format!("batch of {size}, message {i}: {e}"))?;
            }
        }
    }
    assert_eq!(inbox_len(&t.unit("finance").await?).await?, 11 + 99);
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_are_verified_together_and_a_forgery_fails_alone() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let rogue = SigningKey::generate()?;
    let mut signed = (0..40)
        .map(|i| tax.sign(note(&format!("concurrent {i}")).to_units(["finance"])))
        .collect::<Result<Vec<_>, _>>()?;
    signed[23] = forge(&rogue, &signed[23])?;
    let results = futures::future::join_all(signed.into_iter().map(|m| tax.push_signed(m))).await;
    for (i, r) in results.into_iter().enumerate() {
        if i == 23 {
            rejected(r, Code::Unauthenticated, "does not verify");
        } else {
            r.map_err(|e| format!("push {i}: {e}"))?;
        }
    }
    // The recipient verifies the page's 39 signatures as one batch.
    let page = t.unit("finance").await?.pull(0, 100).await?;
    assert_eq!(page.entries.len(), 39);
    t.stop().await
}

/// Pushes made at once from many tasks of one client share calls
/// (`PushBatch` beyond a few in flight); each is still answered as if it
/// went alone: its own position, a repeat as a duplicate, a refusal that
/// names the original entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pushes_at_once_are_each_answered_as_alone() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let at_once = |messages: Vec<pb::SignedMessage>| {
        let tasks: Vec<_> = messages
            .into_iter()
            .map(|m| {
                let tax = tax.clone();
                tokio::spawn(async move { tax.push_signed(m).await })
            })
            .collect();
        futures::future::join_all(tasks)
    };
    let first = (0..300)
        .map(|i| tax.sign(note(&format!("at once {i}")).to_units(["finance"])))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seqs = Vec::new();
    for r in at_once(first.clone()).await {
        let r = r??;
        assert!(!r.duplicate);
        seqs.push(r.seq);
    }
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..300).collect::<Vec<u64>>(), "one position each");

    // Repeats, a conflicting reuse of an id and new messages, at once.
    let mut second: Vec<pb::SignedMessage> = first[..10].to_vec();
    let reused = first[42].message_id().to_string();
    second.push(tax.sign(note("other content").to_units(["finance"]).with_id(&reused))?);
    for i in 0..100 {
        second.push(tax.sign(note(&format!("later {i}")).to_units(["finance"]))?);
    }
    let answers = at_once(second).await;
    let mut fresh = Vec::new();
    for (i, r) in answers.into_iter().enumerate() {
        let r = r?;
        match i {
            0..10 => {
                let r = r?;
                assert!(r.duplicate, "push {i} repeats an appended message");
                assert_eq!(r.seq, seqs[i]);
            }
            10 => rejected(r, Code::AlreadyExists, &format!("tax:{}", seqs[42])),
            _ => {
                let r = r?;
                assert!(!r.duplicate);
                fresh.push(r.seq);
            }
        }
    }
    fresh.sort_unstable();
    assert_eq!(fresh, (300..400).collect::<Vec<u64>>());

    assert_eq!(inbox_len(&t.unit("finance").await?).await?, 400);
    t.stop().await
}

/// Callers that stop waiting for their pushes (a timeout, a cancelled
/// task) give their call slots back: later pushes still go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_given_up_leave_the_client_pushing() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let abandoned = (0..20)
        .map(|i| tax.sign(note(&format!("abandoned {i}")).to_units(["finance"])))
        .collect::<Result<Vec<_>, _>>()?;
    // Each polled once (4 start, the rest queue), then all dropped.
    let pushes = futures::future::join_all(abandoned.into_iter().map(|m| tax.push_signed(m)));
    assert!(
        futures::FutureExt::now_or_never(pushes).is_none(),
        "no push answers before any I/O"
    );
    let later = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tax.push(note("after the abandoned ones").to_units(["finance"])),
    )
    .await
    .map_err(|_| "a push after abandoned ones never went out")??;
    assert!(!later.duplicate);
    let many = (0..100)
        .map(|i| tax.sign(note(&format!("then many {i}")).to_units(["finance"])))
        .collect::<Result<Vec<_>, _>>()?;
    let answers = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        futures::future::join_all(many.into_iter().map(|m| tax.push_signed(m))),
    )
    .await
    .map_err(|_| "pushes after abandoned ones never went out")?;
    for a in answers {
        a?;
    }
    t.stop().await
}

/// The suite runs on the store `TONGBAO_TEST_STORE` names: on PostgreSQL
/// nothing of the exchange is kept in the data directory's sled database,
/// and the entries read back from the database itself after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_keeps_its_data_in_the_chosen_store() -> TestResult {
    let mut t = TestHub::start().await?;
    t.unit("tax")
        .await?
        .push(note("Kept").to_units(["finance"]))
        .await?;
    let config = t.pki.hub_config()?;
    let sled_file = config.hub.data_dir.join("db");
    assert_eq!(
        sled_file.exists(),
        !tongbao_tests::on_postgres(),
        "store: {:?}",
        config.store.backend
    );
    if let Some(hub) = t.hub.take() {
        hub.shutdown().await?;
    }
    let hub = tongbao_server::Hub::start(&config).await?;
    t.addr = hub.addr();
    t.hub = Some(hub);
    let page = t.unit("finance").await?.pull(0, 10).await?;
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].message().subject, "Kept");
    t.stop().await
}
