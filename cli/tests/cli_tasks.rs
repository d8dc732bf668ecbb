//! The `task` and `action` commands of the `tongbao` CLI against a real
//! hub, with `--json` output read back as a program would.

mod common;

use common::{TestResult, config, setup, tongbao};
use serde_json::{Value, json};
use std::path::Path;

fn json_of(
    config: &Path,
    args: &[&str],
) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    Ok(serde_json::from_str(tongbao(config, args)?.trim())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_joint_actions_from_the_command_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let hub = setup(d).await?;
    let (lead, tax, ps, health, office) = (
        config(d, "units", "civil-affairs"),
        config(d, "units", "tax"),
        config(d, "units", "public-security"),
        config(d, "units", "health"),
        config(d, "offices", "joint-enforcement"),
    );
    let done_file = d.join("findings.txt");
    std::fs::write(&done_file, "findings")?;

    // A task assigned, reported done with an attachment, and accepted.
    let task = [
        "task",
        "assign",
        "--id",
        "t-cli",
        "--mechanism",
        "joint-enforcement",
        "--title",
        "Check association X",
        "--expected",
        "A report",
        "--to",
        "tax",
        "--due",
        "+7d",
    ];
    tongbao(&lead, &task)?;
    let refused = tongbao(&tax, &task);
    assert!(refused.is_err_and(|e| e.contains("PermissionDenied")));
    let early = tongbao(&lead, &["task", "accept", "t-cli"]);
    assert!(early.is_err_and(|e| e.contains("tax (not-started)")));
    let attach = done_file.display().to_string();
    tongbao(
        &tax,
        &[
            "task", "report", "t-cli", "--done", "--text", "Checked", "--attach", &attach,
        ],
    )?;
    let shown = json_of(&office, &["task", "show", "t-cli", "--json"])?;
    assert_eq!(shown["status"], "done");
    assert_eq!(shown["assignees"][0]["state"], "done");
    tongbao(&lead, &["task", "accept", "t-cli", "--comments", "Good"])?;
    let listed = json_of(&office, &["task", "list", "--status", "closed", "--json"])?;
    assert_eq!(listed["tasks"][0]["task_id"], "t-cli");

    // A joint action: one confirms and reports, one declines; summary verified.
    let plan = d.join("plan.txt");
    std::fs::write(&plan, "plan")?;
    let plan_arg = plan.display().to_string();
    let propose = |targets: &[&str]| {
        let mut args = vec![
            "action",
            "propose",
            "--id",
            "a-cli",
            "--mechanism",
            "joint-enforcement",
            "--title",
            "Inspection",
            "--participants",
            "public-security,health",
            "--starts",
            "1m",
            "--ends",
            "+1d",
            "--plan",
            &plan_arg,
        ];
        for t in targets {
            args.extend(["--target", t]);
        }
        tongbao(&lead, &args)
    };
    // A target is a credit code; a plain name is refused before sending.
    let named = propose(&["Association X"]);
    assert!(named.is_err_and(|e| e.contains("has 13 characters")));
    propose(&[
        "51140000MJ0000012R=山西省某某协会,53140000MJY0001237",
        "53140000730001234G",
    ])?;
    tongbao(&ps, &["action", "confirm", "a-cli"])?;
    tongbao(
        &health,
        &["action", "decline", "a-cli", "--reason", "No staff"],
    )?;
    let waiting = json_of(&office, &["action", "show", "a-cli", "--json"])?;
    assert_eq!(waiting["not_reported"], json!(["public-security"]));
    assert_eq!(
        waiting["target_organizations"],
        json!([
            {"credit_code": "51140000MJ0000012R", "name": "山西省某某协会"},
            {"credit_code": "53140000MJY0001237", "name": ""},
            {"credit_code": "53140000730001234G", "name": ""},
        ])
    );
    // The proposal is found by each target's code, by those addressed.
    let about = json_of(&ps, &["org", "show", "53140000730001234G", "--json"])?;
    assert_eq!(about["entries"].as_array().map(Vec::len), Some(1));
    let about = json_of(&tax, &["org", "show", "53140000730001234G", "--json"])?;
    assert_eq!(about["entries"], json!([]));
    let early = tongbao(&lead, &["action", "summary", "a-cli", "--text", "x"]);
    assert!(early.is_err_and(|e| e.contains("public-security (confirmed, no results)")));
    tongbao(
        &ps,
        &["action", "report", "a-cli", "--text", "Books seized"],
    )?;
    let released = json_of(
        &lead,
        &["action", "summary", "a-cli", "--text", "Done", "--json"],
    )?;
    let at = format!(
        "{}:{}",
        released["channel"].as_str().unwrap_or(""),
        released["seq"]
    );
    let proof = json_of(&health, &["action", "verify", &at, "--json"])?;
    assert_eq!(proof["parts"][0]["results"], "Books seized");
    assert_eq!(proof["parts"][1]["reason"], "No staff");
    hub.shutdown().await?;
    Ok(())
}
