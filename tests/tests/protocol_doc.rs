//! `docs/protocol.md` states the hub's limits and kinds as numbers and
//! names a third party implements against; this test reads the document
//! and holds it to the code, so a changed default or a new limit that the
//! specification does not state fails here rather than in the field.
//! (The byte-level rules are held to the code by `proto/tests/vectors.rs`.)

use std::path::PathBuf;
use tongbao_proto::echo::{MAX_STATUS_MESSAGE_BYTES, SHOWN_CHARS};
use tongbao_proto::merkle::MAX_LEAVES_PER_CALL;
use tongbao_proto::workflow::task;
use tongbao_proto::{credit_code, kinds, pb, warning};
use tongbao_server::config::Limits;
use tongbao_server::policy::MAX_RECEIPT_ENTRIES;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn spec() -> Result<String, Box<dyn std::error::Error>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    Ok(std::fs::read_to_string(path)?)
}

/// The table row whose first cell starts with `first`.
fn row<'a>(spec: &'a str, first: &str) -> Option<&'a str> {
    spec.lines().find(|l| l.starts_with(&format!("| {first}")))
}

#[test]
fn every_limit_and_its_default_is_in_the_specification() -> TestResult {
    let spec = spec()?;
    let defaults = serde_json::to_value(Limits::default())?;
    let fields = defaults.as_object().ok_or("limits are not an object")?;
    assert!(fields.len() >= 10, "{fields:?}");
    for (name, value) in fields {
        let cell = format!("`limits.{name}` | {value}");
        assert!(
            row(&spec, &cell).is_some(),
            "docs/protocol.md has no row \"| {cell} …\" (Request limits and per-call caps)"
        );
    }
    let request = Limits::default().max_request_bytes();
    assert!(
        spec.contains(&format!(
            "2 × `limits.max_body_bytes` + 256 KiB | {request} "
        )),
        "request size {request}"
    );
    for (first, value) in [
        (
            "pins per receipt (`MAX_RECEIPT_ENTRIES`)",
            MAX_RECEIPT_ENTRIES,
        ),
        (
            "seqs per `GetInclusionProofs` (`MAX_LEAVES_PER_CALL`)",
            MAX_LEAVES_PER_CALL,
        ),
        (
            "hashes per `GetLeafHashes` (`MAX_LEAVES_PER_CALL`)",
            MAX_LEAVES_PER_CALL,
        ),
        (
            "attachment digests per task report or action result (`MAX_STEP_ATTACHMENTS`)",
            task::MAX_STEP_ATTACHMENTS,
        ),
        (
            "organizations per message (`MAX_ORGANIZATIONS`)",
            credit_code::MAX_ORGANIZATIONS,
        ),
        (
            "target organizations per joint action (`MAX_ORGANIZATIONS`)",
            credit_code::MAX_ORGANIZATIONS,
        ),
        (
            "evidence pins per joint warning (`MAX_EVIDENCE`)",
            warning::MAX_EVIDENCE,
        ),
        (
            "measures per answer (`MAX_MEASURES`)",
            warning::MAX_MEASURES,
        ),
        ("status message length", MAX_STATUS_MESSAGE_BYTES),
        ("characters of a value a refusal repeats", SHOWN_CHARS),
    ] {
        let r = row(&spec, first).ok_or(format!("no row {first}"))?;
        assert!(r.contains(&format!("| {value}")), "{r}");
    }
    Ok(())
}

#[test]
fn the_kinds_each_call_takes_are_the_specified_ones() -> TestResult {
    let spec = spec()?;
    let push = row(&spec, "`Exchange.Push`").ok_or("no Push row")?;
    let listed = |r: &str| -> Vec<String> {
        r.split('|')
            .nth(2)
            .unwrap_or_default()
            .split(',')
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect()
    };
    let named = |k: pb::Kind| format!("{} ({})", kinds::name(k as i32), k as i32);
    let pushable: Vec<String> = kinds::pushable()
        .filter_map(kinds::parse)
        .map(named)
        .collect();
    assert_eq!(listed(push), pushable);
    let workflow = row(&spec, "`Workflow.Submit`").ok_or("no Submit row")?;
    let mut in_spec = listed(workflow);
    in_spec.sort();
    let mut in_code: Vec<String> = (0..=32)
        .filter(|&k| kinds::is_workflow(k))
        .filter_map(|k| pb::Kind::try_from(k).ok())
        .map(named)
        .collect();
    in_code.sort();
    assert_eq!(in_spec, in_code);
    let receipt = row(&spec, "`Exchange.Acknowledge`").ok_or("no Acknowledge row")?;
    assert_eq!(listed(receipt), [named(pb::Kind::Receipt)]);
    let rotation = row(&spec, "`Directory.RotateKey`").ok_or("no RotateKey row")?;
    assert_eq!(listed(rotation), [named(pb::Kind::KeyRotation)]);
    Ok(())
}
