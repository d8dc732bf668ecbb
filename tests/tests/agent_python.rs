//! The Python example (examples/python/) against real agents: it sends
//! through tax's agent, receives from civil-affairs' agent by long poll and
//! acknowledges; and its webhook signature check agrees with the agent's
//! signer. Skipped, with a message, where `python3` is missing.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tongbao_tests::http::start_agent;
use tongbao_tests::{BoxError, TestHub, TestResult};

const WITHIN: Duration = Duration::from_secs(120);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join("python")
        .join("tongbao_agent_example.py")
}

fn have_python() -> bool {
    Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the script to its end (killed after `WITHIN`): exit code, stdout.
async fn run(args: Vec<String>) -> Result<(i32, String, String), BoxError> {
    tokio::task::spawn_blocking(move || -> Result<(i32, String, String), BoxError> {
        let mut child = Command::new("python3")
            .arg(script())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + WITHIN;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                child.kill()?;
                return Err(format!("the example did not finish within {WITHIN:?}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_sends_receives_and_acknowledges_through_agents() -> TestResult {
    if !have_python() {
        eprintln!("skipped: python3 is not installed");
        return Ok(());
    }
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    let (_tax, tax) = start_agent(t.unit("tax").await?, dir.path(), "tax", None).await?;
    let (_civil, civil) =
        start_agent(t.unit("civil-affairs").await?, dir.path(), "civil", None).await?;
    let token_file = |name: &str| {
        dir.path()
            .join(format!("{name}-token"))
            .display()
            .to_string()
    };
    let (code, out, err) = run(vec![
        "exchange".into(),
        "--sender".into(),
        format!("http://{}", tax.addr),
        "--sender-token-file".into(),
        token_file("tax"),
        "--receiver".into(),
        format!("http://{}", civil.addr),
        "--receiver-token-file".into(),
        token_file("civil"),
        "--to".into(),
        "civil-affairs".into(),
        "--subject".into(),
        "From Python".into(),
    ])
    .await?;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let result: Value = serde_json::from_str(out.trim())?;
    assert_eq!(result["received"]["subject"], "From Python");
    assert_eq!(result["received"]["sender"], "tax");
    assert_eq!(result["acknowledged"]["newly_acknowledged"], 1);
    // The hub holds the receipt: acknowledging again adds nothing.
    let civil_client = t.unit("civil-affairs").await?;
    let entry = civil_client.get_entry("tax", 0).await?;
    let again = civil_client.ack(&[&entry]).await?;
    assert_eq!(again.newly_acknowledged, 0);

    // A refusal reaches the script as the agent's code, exit 2.
    let (code, _, err) = run(vec![
        "exchange".into(),
        "--sender".into(),
        format!("http://{}", tax.addr),
        "--sender-token-file".into(),
        token_file("tax"),
        "--receiver".into(),
        format!("http://{}", civil.addr),
        "--receiver-token-file".into(),
        token_file("civil"),
        "--to".into(),
        "no-such-unit".into(),
    ])
    .await?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid_argument"), "{err}");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_signature_check_agrees_with_the_agents_signer() -> TestResult {
    if !have_python() {
        eprintln!("skipped: python3 is not installed");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let body_file = dir.path().join("body.json");
    let body = br#"{"event":"entry","entry":{"subject":"s"}}"#;
    std::fs::write(&body_file, body)?;
    let key = "the-webhook-secret-text";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let signature = tongbao_agent::signature::sign(key.as_bytes(), now, body);
    let check = |key: &str, timestamp: i64, signature: &str| {
        vec![
            "check-signature".to_string(),
            "--key".into(),
            key.into(),
            "--timestamp".into(),
            timestamp.to_string(),
            "--signature".into(),
            signature.into(),
            "--body-file".into(),
            body_file.display().to_string(),
        ]
    };
    assert_eq!(run(check(key, now, &signature)).await?.0, 0);
    // Another key, another time, an old delivery: refused.
    assert_eq!(run(check("another-key", now, &signature)).await?.0, 1);
    assert_eq!(run(check(key, now + 1, &signature)).await?.0, 1);
    let old = now - 3600;
    let old_signature = tongbao_agent::signature::sign(key.as_bytes(), old, body);
    assert_eq!(run(check(key, old, &old_signature)).await?.0, 1);
    Ok(())
}
