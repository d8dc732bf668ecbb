//! The `tongbao` CLI against a real hub: the README's walkthrough, run.

mod common;

use common::{TestResult, config, setup, tongbao};
use std::path::{Path, PathBuf};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_push_pull_ack_feedback_audit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let hub = setup(dir.path()).await?;
    let d = dir.path();
    let (pbc, ps, tax, fin) = (
        config(d, "units", "pbc-taiyuan"),
        config(d, "units", "public-security"),
        config(d, "units", "tax"),
        config(d, "units", "finance"),
    );
    let office = config(d, "offices", "fund-supervision");
    // Blocking child processes run off the async workers.
    let run = |c: PathBuf, args: Vec<&'static str>| {
        tokio::task::spawn_blocking(move || tongbao(&c, &args))
    };

    let out = run(
        pbc.clone(),
        vec![
            "push",
            "--to",
            "public-security",
            "--kind",
            "lead",
            "--case",
            "2026-F-031",
            "--subject",
            "Suspicious transfers",
            "--body",
            "Three transfers abroad.",
            "--id",
            "pbc-1",
        ],
    )
    .await??;
    assert!(out.contains("appended pbc-taiyuan:0"), "{out}");
    let out = run(ps.clone(), vec!["pull", "--json"]).await??;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(
        (
            v["channel"].as_str(),
            v["seq"].as_u64(),
            v["cursor"].as_u64()
        ),
        (Some("pbc-taiyuan"), Some(0), Some(1))
    );
    assert_eq!(
        (v["kind"].as_str(), v["body"].as_str()),
        (Some("lead"), Some("Three transfers abroad."))
    );
    assert_eq!(v["recipients"], serde_json::json!(["public-security"]));
    assert_eq!(v["case_id"].as_str(), Some("2026-F-031"));
    let out = run(ps.clone(), vec!["ack", "1"]).await??;
    assert!(
        out.contains("receipt public-security:0 acknowledges 1"),
        "{out}"
    );
    let out = run(ps.clone(), vec!["ack", "1"]).await??;
    assert!(out.contains("nothing new"), "{out}");

    run(
        tax.clone(),
        vec![
            "push",
            "--mechanism",
            "fund-supervision",
            "--kind",
            "early-warning",
            "--subject",
            "Abnormal fund movement",
            "--body",
            "Org Y",
            "--id",
            "tax-1",
        ],
    )
    .await??;
    let out = run(
        fin.clone(),
        vec![
            "feedback",
            "1",
            "--problem",
            "outside-competence",
            "--text",
            "Not ours",
        ],
    )
    .await??;
    assert!(out.contains("on tax:0 sent to tax"), "{out}");
    // Refusals come back as one readable line with the status.
    let err = run(fin.clone(), vec!["get", "pbc-taiyuan:0"])
        .await?
        .err()
        .ok_or("unaddressed entry shown")?;
    assert!(
        err.contains("PermissionDenied") && err.contains("not addressed"),
        "{err}"
    );
    let err = run(
        tax.clone(),
        vec![
            "push",
            "--to",
            "nobody",
            "--kind",
            "lead",
            "--subject",
            "s",
            "--body",
            "b",
        ],
    )
    .await?
    .err()
    .ok_or("unknown unit accepted")?;
    assert!(err.contains("InvalidArgument"), "{err}");
    let err = run(tax.clone(), vec!["audit", "units"])
        .await?
        .err()
        .ok_or("unit audited")?;
    assert!(err.contains("PermissionDenied"), "{err}");

    let out = run(office.clone(), vec!["audit", "delivery", "--json"]).await??;
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let warning = lines
        .iter()
        .find(|l| l["channel"] == "tax")
        .ok_or("tax entry missing")?;
    let states: std::collections::BTreeMap<String, String> = warning["recipients"]
        .as_array()
        .ok_or("no recipients")?
        .iter()
        .map(|r| {
            (
                r["recipient"].as_str().unwrap_or("").to_string(),
                r["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(states.get("finance").map(String::as_str), Some("exception"));
    assert_eq!(
        states.get("pbc-taiyuan").map(String::as_str),
        Some("pending")
    );
    assert!(warning.get("body").is_none(), "the office got a body");
    let csv = run(office.clone(), vec!["audit", "delivery", "--csv"]).await??;
    assert!(csv.starts_with("channel,seq,sender,kind"), "{csv}");
    let table = run(office, vec!["audit", "units"]).await??;
    assert!(
        table.contains("finance") && table.contains("exceptions"),
        "{table}"
    );
    hub.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_verify_offline_with_the_ca() -> TestResult {
    let dir = tempfile::tempdir()?;
    let hub = setup(dir.path()).await?;
    let path = dir.path().to_path_buf();
    // The CLI blocks; run it off the runtime that serves the hub.
    tokio::task::spawn_blocking(move || export_and_verify(&path)).await??;
    hub.shutdown().await?;
    Ok(())
}

fn export_and_verify(dir: &Path) -> TestResult {
    let tax = config(dir, "units", "tax");
    let finance = config(dir, "units", "finance");
    tongbao(
        &tax,
        &[
            "push",
            "--kind",
            "lead",
            "--to",
            "finance",
            "--subject",
            "Lead 7",
            "--body",
            "x",
        ],
    )?;
    tongbao(&finance, &["pull", "--ack"])?;
    let bundle = dir.join("bundle.json");
    let bundle_arg = bundle.to_string_lossy().into_owned();
    let out = tongbao(
        &tax,
        &[
            "export",
            "--entry",
            "tax:0",
            "--entry",
            "finance:0",
            "--out",
            &bundle_arg,
        ],
    )?;
    assert!(out.contains("--ca"), "{out}");
    let ca = dir.join("ca.pem").to_string_lossy().into_owned();
    let report = tongbao(&tax, &["verify", &bundle_arg, "--ca", &ca])?;
    assert!(report.contains("is certified by the CA"), "{report}");
    assert!(
        report.contains("tax:0 was acknowledged by finance"),
        "{report}"
    );
    // Neither trust anchor: refused by the argument parser.
    let err = tongbao(&tax, &["verify", &bundle_arg])
        .err()
        .unwrap_or_default();
    assert!(err.contains("--ca"), "{err}");
    // A changed subject: refused, saying what failed.
    let text = std::fs::read_to_string(&bundle)?;
    let entry_b64 = text
        .split("\"entry\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or("no entry in the bundle")?;
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(entry_b64)?;
    let pos = raw
        .windows(6)
        .position(|w| w == b"Lead 7")
        .ok_or("subject not found")?;
    let mut changed = raw.clone();
    changed[pos + 5] = b'8';
    let tampered = text.replace(
        entry_b64,
        &base64::engine::general_purpose::STANDARD.encode(changed),
    );
    std::fs::write(&bundle, tampered)?;
    let err = tongbao(&tax, &["verify", &bundle_arg, "--ca", &ca])
        .err()
        .unwrap_or_default();
    assert!(
        err.contains("verification FAILED") && err.contains("tax:0"),
        "{err}"
    );
    Ok(())
}
