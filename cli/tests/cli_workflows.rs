//! The workflow commands of the `tongbao` CLI against a real hub, with
//! `--json` output read back as a program would.

mod common;

use common::{TestResult, config, setup, tongbao};
use serde_json::Value;
use std::path::Path;

fn json(config: &Path, args: &[&str]) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    Ok(serde_json::from_str(tongbao(config, args)?.trim())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meetings_minutes_joint_notices_liaisons_statistics_and_cases() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let hub = setup(d).await?;
    let (lead, tax, fin, office) = (
        config(d, "units", "civil-affairs"),
        config(d, "units", "tax"),
        config(d, "units", "finance"),
        config(d, "offices", "fund-supervision"),
    );

    // A meeting by correspondence, its minutes consented and issued.
    tongbao(
        &lead,
        &[
            "meeting",
            "propose",
            "--id",
            "m-cli",
            "--mechanism",
            "fund-supervision",
            "--kind",
            "correspondence",
            "--title",
            "Q4 review",
            "--attending",
            "tax,finance",
            "--agenda",
            "Leads of Q4",
        ],
    )?;
    tongbao(
        &lead,
        &[
            "meeting",
            "settle",
            "--meeting",
            "m-cli",
            "--agenda",
            "Leads of Q4",
        ],
    )?;
    tongbao(
        &lead,
        &[
            "minutes",
            "draft",
            "--meeting",
            "m-cli",
            "--text",
            "Agreed.",
        ],
    )?;
    tongbao(&tax, &["minutes", "consent", "--meeting", "m-cli"])?;
    let shown = json(&office, &["meeting", "show", "m-cli", "--json"])?;
    assert_eq!(shown["not_answered"], serde_json::json!(["finance"]));
    let early = tongbao(&lead, &["minutes", "issue", "--meeting", "m-cli"]);
    assert!(early.is_err_and(|e| e.contains("finance (not answered)")));
    tongbao(&fin, &["minutes", "consent", "--meeting", "m-cli"])?;
    let issued = json(&lead, &["minutes", "issue", "--meeting", "m-cli", "--json"])?;
    let at = format!(
        "{}:{}",
        issued["channel"].as_str().unwrap_or(""),
        issued["seq"]
    );
    let proof = json(&tax, &["minutes", "verify", &at, "--json"])?;
    assert_eq!(proof["consents"].as_array().map(Vec::len), Some(2));

    // A joint notice co-signed by Tax, then sent out.
    tongbao(
        &fin,
        &[
            "joint",
            "draft",
            "--id",
            "n-cli",
            "--mechanism",
            "fund-supervision",
            "--title",
            "Fund movement",
            "--text",
            "Org X",
            "--co-issuers",
            "tax",
            "--to-mechanism",
            "fund-supervision",
            "--case",
            "C-1",
        ],
    )?;
    let refused = tongbao(&fin, &["joint", "release", "n-cli"]);
    assert!(refused.is_err_and(|e| e.contains("missing tax")));
    tongbao(&tax, &["joint", "cosign", "n-cli"])?;
    let out = json(&fin, &["joint", "release", "n-cli", "--json"])?;
    let at = format!("{}:{}", out["channel"].as_str().unwrap_or(""), out["seq"]);
    let proof = json(
        &config(d, "units", "pbc-taiyuan"),
        &["joint", "verify", &at, "--json"],
    )?;
    assert_eq!(proof["co_issuers"], serde_json::json!(["tax"]));

    // Liaisons and the office's directory.
    tongbao(
        &tax,
        &[
            "liaison",
            "--office",
            "fund-supervision",
            "--name",
            "Wang Li",
            "--title",
            "Chief",
            "--contact",
            "0351-1",
        ],
    )?;
    let dir_json = json(&office, &["liaisons", "--json"])?;
    let tax_row = dir_json["units"]
        .as_array()
        .and_then(|u| u.iter().find(|r| r["unit"] == "tax"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(tax_row["current"]["name"], "Wang Li");

    // Statistics from the hub's records (of a closed period: wait until the
    // entries above are a settled second old), and a case.
    let settled = tongbao_proto::now_micros() + 1_000_000;
    while tongbao_proto::now_micros() <= settled {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let report = json(&office, &["statistics", "compute", "--json"])?;
    assert!(report["messages"].as_array().is_some_and(|m| !m.is_empty()));
    tongbao(
        &lead,
        &["statistics", "circulate", "--mechanism", "fund-supervision"],
    )?;
    let case = json(&tax, &["case", "show", "C-1", "--json"])?;
    assert_eq!(case["entries"].as_array().map(Vec::len), Some(3));
    let none = json(
        &config(d, "units", "health"),
        &["case", "show", "C-1", "--json"],
    )?;
    assert_eq!(none["entries"].as_array().map(Vec::len), Some(0));
    hub.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizations_and_joint_warnings() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let hub = setup(d).await?;
    let org = "51140000MJ0000012R";
    let (pbc, tax, ps, office) = (
        config(d, "units", "pbc-taiyuan"),
        config(d, "units", "tax"),
        config(d, "units", "public-security"),
        config(d, "offices", "fund-supervision"),
    );
    // A mistyped code is caught before anything is signed.
    let bad = tongbao(
        &pbc,
        &[
            "push",
            "--kind",
            "lead",
            "--to",
            "public-security",
            "--subject",
            "x",
            "--body",
            "y",
            "--org",
            "51140000MJ0000012X",
        ],
    );
    assert!(bad.is_err_and(|e| e.contains("check character")));
    let lead = json(
        &pbc,
        &[
            "push",
            "--kind",
            "lead",
            "--to",
            "public-security",
            "--subject",
            "Transfers abroad",
            "--body",
            "12 transfers",
            "--org",
            &format!("{org}=山西省某某协会"),
            "--json",
        ],
    )?;
    let evidence = format!("pbc-taiyuan:{}", lead["seq"]);
    tongbao(
        &pbc,
        &[
            "warning",
            "issue",
            "--id",
            "w-cli",
            "--mechanism",
            "fund-supervision",
            "--org",
            org,
            "--level",
            "severe",
            "--grounds",
            "abnormal fund movements",
            "--evidence",
            &evidence,
        ],
    )?;
    let answer = json(
        &tax,
        &[
            "warning",
            "answer",
            "w-cli",
            "--measure",
            "tax audit opened",
            "--json",
        ],
    )?;
    let verified = json(
        &pbc,
        &[
            "warning",
            "verify",
            &format!("tax:{}", answer["seq"]),
            "--json",
        ],
    )?;
    assert_eq!(verified["unit"], "tax");
    let listed = json(
        &office,
        &["warning", "list", "--org", org, "--active", "--json"],
    )?;
    let w = &listed["warnings"][0];
    assert_eq!(w["level"], "severe");
    assert_eq!(w["not_answered"].as_array().map(Vec::len), Some(4));
    let shown = json(&ps, &["org", "show", org, "--json"])?;
    let entries = shown["entries"].as_array().ok_or("no entries")?;
    assert_eq!(entries.len(), 3, "{shown}");
    assert_eq!(entries[0]["organizations"][0]["name"], "山西省某某协会");
    tongbao(
        &pbc,
        &["warning", "lift", "w-cli", "--reason", "funds returned"],
    )?;
    let lifted = tongbao(
        &tax,
        &["warning", "answer", "w-cli", "--none", "--reason", "x"],
    );
    assert!(lifted.is_err_and(|e| e.contains("was lifted")));
    let none = json(
        &config(d, "units", "health"),
        &["org", "show", org, "--json"],
    )?;
    assert_eq!(none["entries"].as_array().map(Vec::len), Some(0));
    hub.shutdown().await?;
    Ok(())
}
