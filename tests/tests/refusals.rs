//! Refusals as a standard gRPC client receives them: a request carrying a
//! huge value, one that does not decode, and one over its service's size
//! limit each get the status that says what was wrong, in a message that
//! fits every client's metadata limit, and leave the store unchanged.

use prost::bytes::{Buf, BufMut};
use tongbao_proto::pb::{self, exchange_client::ExchangeClient, log_client::LogClient};
use tongbao_tests::{
    BoxError, TestHub, TestResult, assert_nothing_stored, code_of, note, raw_channel,
};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Status};

/// A refusal stays under this (standard clients take 8-16 KiB of metadata).
const MAX_MESSAGE: usize = 1024;

/// A value far beyond standard clients' 8-16 KiB metadata limits.
fn huge() -> String {
    "x".repeat(100 * 1024)
}

/// The start of a message, for assertion output.
fn head(message: &str) -> String {
    message.chars().take(300).collect()
}

/// `r` is refused with `code`, mentions `words`, is under 1 KiB, and shows
/// the huge value as its first 64 characters and "…".
fn refused_short<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, words: &str) {
    let status = match r {
        Ok(v) => panic!("expected {code:?} ({words}), got Ok({v:?})"),
        Err(s) => s,
    };
    let message = status.message();
    assert_eq!(status.code(), code, "{}", head(message));
    assert!(message.len() < MAX_MESSAGE, "{} bytes", message.len());
    assert!(message.contains(words), "{}", head(message));
    assert!(
        message.contains(&format!("{}…", "x".repeat(64))) && !message.contains(&"x".repeat(65)),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_values_are_echoed_cut_short() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let mut exchange = ExchangeClient::new(raw_channel(&t.pki, "tax", t.addr).await?);
    let push = |m| pb::PushRequest { message: Some(m) };
    let to_huge = tax.sign(note("To a huge name").to_units([huge()]))?;
    refused_short(
        exchange.push(push(to_huge)).await,
        Code::InvalidArgument,
        "unit \"",
    );
    let to_huge_mechanism = tax.sign(note("To a huge mechanism").to_mechanism(huge()))?;
    refused_short(
        exchange.push(push(to_huge_mechanism)).await,
        Code::InvalidArgument,
        "mechanism \"",
    );
    let huge_id = tax.sign(note("Huge id").to_units(["finance"]).with_id(huge()))?;
    refused_short(
        exchange.push(push(huge_id)).await,
        Code::InvalidArgument,
        "message id",
    );
    refused_short(
        exchange
            .pull(pb::PullRequest {
                inbox: huge(),
                after: 0,
                limit: 10,
            })
            .await,
        Code::PermissionDenied,
        "only its own inbox",
    );
    refused_short(
        exchange
            .get_entry(pb::GetEntryRequest {
                channel: huge(),
                seq: 0,
            })
            .await,
        Code::NotFound,
        "has no entry",
    );
    let mut log = LogClient::new(raw_channel(&t.pki, "tax", t.addr).await?);
    refused_short(
        log.get_checkpoint(pb::GetCheckpointRequest { channel: huge() })
            .await,
        Code::NotFound,
        "there is no channel",
    );
    let mut workflow =
        pb::workflow_client::WorkflowClient::new(raw_channel(&t.pki, "tax", t.addr).await?);
    refused_short(
        workflow
            .get_meeting(pb::GetMeetingRequest { meeting_id: huge() })
            .await,
        Code::NotFound,
        "no meeting",
    );
    assert_nothing_stored(&t).await?;
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_status_message_exceeds_the_bound() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    // A receipt for entries of 200 channels with valid 63-character names,
    // addressed to another unit: the refusal lists every sender, ~13 KB.
    let mut receipt =
        tax.sign(tongbao_client::Draft::new(pb::Kind::Receipt, "r", "").to_units(["finance"]))?;
    let pins = (0..200)
        .map(|i| pb::EntryPin {
            channel: format!("u{i:03}-{}", "x".repeat(58)),
            seq: 0,
            leaf_hash: vec![0; 32],
        })
        .collect();
    if let Some(m) = receipt.message.as_mut() {
        m.acknowledgement = Some(pb::Acknowledgement { entries: pins });
        m.subject = tongbao_proto::redact::receipt_subject(200);
        m.content_type.clear();
    }
    let mut exchange = ExchangeClient::new(raw_channel(&t.pki, "tax", t.addr).await?);
    let status = exchange
        .acknowledge(pb::AcknowledgeRequest {
            receipt: Some(receipt),
        })
        .await
        .err()
        .ok_or("a misaddressed receipt was accepted")?;
    let message = status.message();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", head(message));
    assert!(message.len() <= MAX_MESSAGE, "{} bytes", message.len());
    assert!(
        message.starts_with("a receipt is addressed to exactly the senders")
            && message.ends_with('…'),
        "{message}"
    );
    assert_nothing_stored(&t).await?;
    t.stop().await
}

/// Sends hand-made bytes as the request message, whatever they are.
#[derive(Default)]
struct RawBytes;

impl Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

async fn send_raw(t: &TestHub, path: &'static str, bytes: Vec<u8>) -> Result<Status, BoxError> {
    let mut grpc = tonic::client::Grpc::new(raw_channel(&t.pki, "tax", t.addr).await?);
    grpc.ready().await?;
    match grpc
        .unary(
            tonic::Request::new(bytes),
            PathAndQuery::from_static(path),
            RawBytes,
        )
        .await
    {
        Ok(_) => Err(format!("{path} accepted undecodable bytes").into()),
        Err(status) => Ok(status),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_are_invalid_arguments_naming_the_field() -> TestResult {
    let t = TestHub::start().await?;
    // Field 1 (inbox, a string), length 2, bytes that are not UTF-8.
    let not_utf8 = vec![0x0a, 0x02, 0xff, 0xfe];
    for (path, field) in [
        ("/tongbao.v1.Exchange/Pull", "PullRequest.inbox"),
        (
            "/tongbao.v1.Log/GetCheckpoint",
            "GetCheckpointRequest.channel",
        ),
        (
            "/tongbao.v1.Workflow/GetMeeting",
            "GetMeetingRequest.meeting_id",
        ),
    ] {
        let status = send_raw(&t, path, not_utf8.clone()).await?;
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert!(status.message().contains(field), "{path}: {status:?}");
        assert!(status.message().contains("UTF-8"), "{path}: {status:?}");
    }
    // Not protobuf at all: a field of wire type 7, which does not exist.
    let status = send_raw(&t, "/tongbao.v1.Exchange/Push", vec![0xff; 16]).await?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_nothing_stored(&t).await?;
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_size_limit_are_resource_exhausted_naming_it() -> TestResult {
    let t = TestHub::start().await?;
    let tax = t.unit("tax").await?;
    let body = |kib: usize| vec![b'x'; kib * 1024];
    let e = tax
        .push(
            tongbao_client::Draft::new(pb::Kind::Notification, "Huge", body(3 * 1024))
                .to_units(["civil-affairs"]),
        )
        .await
        .err()
        .ok_or("a 3 MiB push was accepted")?;
    assert_eq!(code_of(&e), Some(Code::ResourceExhausted), "{e}");
    let limit = 2 * (1 << 20) + 256 * 1024;
    for words in [
        "Exchange accepts at most",
        &format!("{limit} bytes per request"),
        "limits.max_body_bytes",
    ] {
        assert!(e.to_string().contains(words), "{e}");
    }
    // Three messages each within limits.max_body_bytes, too many together.
    let batch = (0..3)
        .map(|i| {
            tax.sign(
                tongbao_client::Draft::new(pb::Kind::Notification, format!("b{i}"), body(900))
                    .to_units(["civil-affairs"]),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let e = tax
        .push_signed_batch(batch)
        .await
        .err()
        .ok_or("a 2.7 MiB batch was accepted")?;
    assert_eq!(code_of(&e), Some(Code::ResourceExhausted), "{e}");
    assert!(e.to_string().contains("smaller batches"), "{e}");
    // A service with small requests keeps gRPC's usual 4 MiB.
    let mut log = LogClient::new(raw_channel(&t.pki, "tax", t.addr).await?);
    let status = log
        .get_checkpoint(pb::GetCheckpointRequest {
            channel: "x".repeat(5 << 20),
        })
        .await
        .err()
        .ok_or("a 5 MiB request was accepted")?;
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        head(status.message())
    );
    assert!(
        status
            .message()
            .contains("Log accepts at most 4194304 bytes"),
        "{}",
        head(status.message())
    );
    assert_nothing_stored(&t).await?;
    t.stop().await
}
