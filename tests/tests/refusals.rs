//! Refusals as a standard gRPC client receives them: a request that does
//! not decode gets the status that says what was wrong, and leaves the
//! store unchanged.

use prost::bytes::{Buf, BufMut};
use tongbao_tests::{BoxError, TestHub, TestResult, assert_nothing_stored, raw_channel};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Status};

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
