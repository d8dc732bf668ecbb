//! What each gRPC method is about, for its access-log record: one table
//! of methods, saying which are writes (their record is durable before the
//! answer) and which fields name the call's targets.
//!
//! Targets are read from small requests and from the answers of appending
//! calls (where the position is), decoded with message types that hold
//! only the wanted fields, so bodies and entries are skipped, not copied.
//! Where a message is compressed or cut, the record simply names no target.

use prost::Message;

/// How a method is recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spec {
    /// Changes state: recorded durably before the answer is sent.
    pub write: bool,
    /// Targets come from the request.
    pub request: bool,
    /// Targets come from the (unary) response.
    pub response: bool,
}

/// Most request or response bytes kept to find targets in; larger
/// messages are recorded without them.
pub const MAX_CAPTURED_BYTES: usize = 64 << 10;

const fn spec(write: bool, request: bool, response: bool) -> Spec {
    Spec {
        write,
        request,
        response,
    }
}

/// The table (methods not in it: no targets, not a write).
pub fn spec_of(method: &str) -> Spec {
    match method {
        "/tongbao.v1.Exchange/Push"
        | "/tongbao.v1.Exchange/PushBatch"
        | "/tongbao.v1.Exchange/Acknowledge"
        | "/tongbao.v1.Workflow/Submit"
        | "/tongbao.v1.Directory/RotateKey" => spec(true, false, true),
        "/tongbao.v1.Log/AddCosignature"
        | "/tongbao.v1.Admin/RegisterKey"
        | "/tongbao.v1.Admin/RetireKey"
        | "/tongbao.v1.Admin/SuspendUnit"
        | "/tongbao.v1.Admin/ReinstateUnit"
        | "/tongbao.v1.Admin/AddMember" => spec(true, true, false),
        "/tongbao.v1.Admin/ReloadTls" | "/tongbao.v1.Admin/Backup" => spec(true, false, false),
        "/tongbao.v1.Exchange/Pull" => spec(false, true, true),
        "/tongbao.v1.Exchange/Subscribe"
        | "/tongbao.v1.Exchange/GetEntry"
        | "/tongbao.v1.Log/GetCheckpoint"
        | "/tongbao.v1.Log/GetInclusionProof"
        | "/tongbao.v1.Log/GetInclusionProofs"
        | "/tongbao.v1.Log/GetConsistencyProof"
        | "/tongbao.v1.Log/GetLeafHashes"
        | "/tongbao.v1.Audit/ListDeliveries"
        | "/tongbao.v1.Audit/UnitSummary"
        | "/tongbao.v1.Admin/ListAudit"
        | "/tongbao.v1.Directory/MembersAt"
        | "/tongbao.v1.Workflow/GetMeeting"
        | "/tongbao.v1.Workflow/GetJointNotice"
        | "/tongbao.v1.Workflow/ListLiaisons"
        | "/tongbao.v1.Workflow/ComputeStatistics"
        | "/tongbao.v1.Workflow/ShowCase"
        | "/tongbao.v1.Workflow/ShowOrganization"
        | "/tongbao.v1.Workflow/GetWarning"
        | "/tongbao.v1.Workflow/ListWarnings" => spec(false, true, false),
        "/tongbao.v1.Workflow/GetTask"
        | "/tongbao.v1.Workflow/ListTasks"
        | "/tongbao.v1.Workflow/GetAction"
        | "/tongbao.v1.Workflow/ListActions" => spec(false, true, false),
        _ => Spec::default(),
    }
}

/// The first gRPC message of a captured body (an uncompressed one only).
fn first_message(frames: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = frames.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    (flag == 0).then(|| rest.get(4..4 + len))?
}

#[derive(Clone, PartialEq, Message)]
struct Positioned {
    #[prost(string, tag = "1")]
    channel: String,
    #[prost(uint64, tag = "2")]
    seq: u64,
}

#[derive(Clone, PartialEq, Message)]
struct Range {
    #[prost(string, tag = "1")]
    channel: String,
    #[prost(uint64, tag = "2")]
    start: u64,
    #[prost(uint32, tag = "3")]
    count: u32,
}

#[derive(Clone, PartialEq, Message)]
struct After {
    #[prost(uint64, tag = "1")]
    after: u64,
}

#[derive(Clone, PartialEq, Message)]
struct Seqs {
    #[prost(string, tag = "1")]
    channel: String,
    #[prost(uint64, repeated, tag = "2")]
    seqs: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct Names {
    #[prost(string, tag = "1")]
    first: String,
    #[prost(string, tag = "2")]
    second: String,
}

#[derive(Clone, PartialEq, Message)]
struct First {
    #[prost(string, tag = "1")]
    first: String,
}

#[derive(Clone, PartialEq, Message)]
struct Wrapped {
    #[prost(message, optional, tag = "1")]
    inner: Option<Positioned>,
}

#[derive(Clone, PartialEq, Message)]
struct BatchResults {
    #[prost(message, repeated, tag = "1")]
    results: Vec<Wrapped>,
}

#[derive(Clone, PartialEq, Message)]
struct Cursor {
    #[prost(uint64, tag = "3")]
    cursor: u64,
}

#[derive(Clone, PartialEq, Message)]
struct Deliveries {
    #[prost(message, repeated, tag = "1")]
    deliveries: Vec<Cursor>,
}

fn entry(channel: &str, seq: u64) -> String {
    format!("channel:{channel}:{seq}")
}

fn named(kind: &str, value: &str) -> Option<String> {
    (!value.is_empty()).then(|| format!("{kind}:{value}"))
}

/// The targets of a call of `method`, from its captured request and
/// response bodies (gRPC framed).
pub fn targets(method: &str, request: &[u8], response: &[u8]) -> Vec<String> {
    let req = first_message(request);
    let resp = first_message(response);
    let name = method.rsplit('/').next().unwrap_or("");
    let mut out = Vec::new();
    match name {
        "Push" | "Acknowledge" => {
            if let Some(p) = resp.and_then(|b| Positioned::decode(b).ok()) {
                out.push(entry(&p.channel, p.seq));
            }
        }
        "PushBatch" => {
            if let Some(b) = resp.and_then(|b| BatchResults::decode(b).ok()) {
                out.extend(b.results.iter().filter_map(|r| {
                    r.inner
                        .as_ref()
                        .filter(|p| !p.channel.is_empty())
                        .map(|p| entry(&p.channel, p.seq))
                }));
            }
        }
        "Submit" | "RotateKey" => {
            if let Some(p) = resp
                .and_then(|b| Wrapped::decode(b).ok())
                .and_then(|w| w.inner)
            {
                out.push(entry(&p.channel, p.seq));
            }
        }
        "Pull" | "Subscribe" => {
            if let Some(p) = req.and_then(|b| Positioned::decode(b).ok()) {
                out.extend(named("inbox", &p.channel));
                out.push(format!("cursor:>{}", p.seq));
            }
            if let Some(d) = resp.and_then(|b| Deliveries::decode(b).ok())
                && let (Some(first), Some(last)) = (d.deliveries.first(), d.deliveries.last())
            {
                out.push(format!("cursors:{}..={}", first.cursor, last.cursor));
            }
        }
        "GetEntry" | "GetInclusionProof" => {
            if let Some(p) = req.and_then(|b| Positioned::decode(b).ok()) {
                out.push(entry(&p.channel, p.seq));
            }
        }
        "GetInclusionProofs" => {
            if let Some(s) = req.and_then(|b| Seqs::decode(b).ok()) {
                out.extend(s.seqs.iter().map(|&q| entry(&s.channel, q)));
            }
        }
        "GetCheckpoint" | "GetConsistencyProof" | "AddCosignature" => {
            if let Some(p) = req.and_then(|b| Positioned::decode(b).ok()) {
                out.extend(named("channel", &p.channel));
            }
        }
        "GetLeafHashes" => {
            if let Some(r) = req.and_then(|b| Range::decode(b).ok()) {
                out.push(format!("channel:{}:{}+{}", r.channel, r.start, r.count));
            }
        }
        "ListAudit" => {
            if let Some(a) = req.and_then(|b| After::decode(b).ok()) {
                out.push(format!("after:{}", a.after));
            }
        }
        "ListWarnings" => {
            // Field 2 is a flag, not a name: read the code alone.
            if let Some(f) = req.and_then(|b| First::decode(b).ok()) {
                out.extend(named("organization", &f.first));
            }
        }
        _ => {
            if let Some(n) = req.and_then(|b| Names::decode(b).ok()) {
                let (first, second) = match name {
                    "RegisterKey" | "RetireKey" | "SuspendUnit" | "ReinstateUnit" => ("unit", ""),
                    "AddMember" => ("mechanism", "unit"),
                    "GetMeeting" => ("meeting", ""),
                    "GetJointNotice" => ("notice", ""),
                    "ShowCase" => ("case", ""),
                    "ShowOrganization" => ("organization", ""),
                    "GetWarning" => ("warning", ""),
                    "GetTask" => ("task", ""),
                    "GetAction" => ("action", ""),
                    "ListTasks" | "ListActions" => ("mechanism", "after"),
                    _ => ("mechanism", ""),
                };
                out.extend(named(first, &n.first));
                if !second.is_empty() {
                    out.extend(named(second, &n.second));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tongbao_proto::pb;

    fn framed(m: &impl Message) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn targets_come_from_the_fields_that_name_them() {
        let push = framed(&pb::PushResponse {
            channel: "tax".into(),
            seq: 3,
            leaf_hash: vec![7; 32],
            duplicate: false,
            recipients: vec!["finance".into()],
        });
        assert_eq!(
            targets("/tongbao.v1.Exchange/Push", &[], &push),
            ["channel:tax:3"]
        );
        let pull = framed(&pb::PullRequest {
            inbox: "finance".into(),
            after: 7,
            limit: 10,
        });
        assert_eq!(
            targets("/tongbao.v1.Exchange/Pull", &pull, &[]),
            ["inbox:finance", "cursor:>7"]
        );
        let member = framed(&pb::AddMemberRequest {
            mechanism: "fund-supervision".into(),
            unit: "education".into(),
            effective_micros: 0,
        });
        assert_eq!(
            targets("/tongbao.v1.Admin/AddMember", &member, &[]),
            ["mechanism:fund-supervision", "unit:education"]
        );
        let case = framed(&pb::ShowCaseRequest {
            case_id: "2026-F-031".into(),
        });
        assert_eq!(
            targets("/tongbao.v1.Workflow/ShowCase", &case, &[]),
            ["case:2026-F-031"]
        );
        let org = framed(&pb::ShowOrganizationRequest {
            credit_code: "51140000MJ0000012R".into(),
        });
        assert_eq!(
            targets("/tongbao.v1.Workflow/ShowOrganization", &org, &[]),
            ["organization:51140000MJ0000012R"]
        );
        let warning = framed(&pb::GetWarningRequest {
            warning_id: "w-1".into(),
        });
        assert_eq!(
            targets("/tongbao.v1.Workflow/GetWarning", &warning, &[]),
            ["warning:w-1"]
        );
        let all = framed(&pb::ListWarningsRequest {
            credit_code: String::new(),
            active_only: true,
        });
        assert!(targets("/tongbao.v1.Workflow/ListWarnings", &all, &[]).is_empty());
        let one = framed(&pb::ListWarningsRequest {
            credit_code: "51140000MJ0000012R".into(),
            active_only: true,
        });
        assert_eq!(
            targets("/tongbao.v1.Workflow/ListWarnings", &one, &[]),
            ["organization:51140000MJ0000012R"]
        );
        let task = framed(&pb::GetTaskRequest {
            task_id: "t-7".into(),
        });
        assert_eq!(
            targets("/tongbao.v1.Workflow/GetTask", &task, &[]),
            ["task:t-7"]
        );
        let tasks = framed(&pb::ListTasksRequest {
            mechanism: "fund-supervision".into(),
            after: "t-7".into(),
            limit: 10,
            status: 4,
        });
        assert_eq!(
            targets("/tongbao.v1.Workflow/ListTasks", &tasks, &[]),
            ["mechanism:fund-supervision", "after:t-7"]
        );
        let proofs = framed(&pb::GetInclusionProofsRequest {
            channel: "tax".into(),
            seqs: vec![1, 4],
            tree_size: 9,
            multiproof: false,
        });
        assert_eq!(
            targets("/tongbao.v1.Log/GetInclusionProofs", &proofs, &[]),
            ["channel:tax:1", "channel:tax:4"]
        );
        // Cut, compressed or garbled bodies name nothing and do not fail.
        assert!(targets("/tongbao.v1.Exchange/Push", &[], &push[..4]).is_empty());
        let mut compressed = push.clone();
        compressed[0] = 1;
        assert!(targets("/tongbao.v1.Exchange/Push", &[], &compressed).is_empty());
        assert!(
            targets(
                "/tongbao.v1.Exchange/Pull",
                &[0, 0, 0, 0, 3, 0xff, 0xff, 0xff],
                &[]
            )
            .is_empty()
        );
    }

    #[test]
    fn every_changing_method_is_a_write() {
        for m in [
            "/tongbao.v1.Exchange/Push",
            "/tongbao.v1.Exchange/PushBatch",
            "/tongbao.v1.Exchange/Acknowledge",
            "/tongbao.v1.Workflow/Submit",
            "/tongbao.v1.Directory/RotateKey",
            "/tongbao.v1.Admin/RegisterKey",
            "/tongbao.v1.Admin/ReloadTls",
            "/tongbao.v1.Admin/Backup",
        ] {
            assert!(spec_of(m).write, "{m}");
        }
        assert!(!spec_of("/tongbao.v1.Exchange/Pull").write);
    }
}
