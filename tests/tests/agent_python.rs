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

/// Sends one raw request to 127.0.0.1:PORT and reads the status code of
/// the answer.
fn raw_status(port: u16, request: &[u8]) -> Result<u16, BoxError> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(WITHIN))?;
    conn.write_all(request)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // The status line is enough; the server may keep the connection.
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {line:?}").into())
}

fn post(headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut r = b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".to_vec();
    for (name, value) in headers {
        r.extend_from_slice(name.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(value);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_webhook_receiver_answers_malformed_headers_with_400_and_stays_up() -> TestResult
{
    if !have_python() {
        eprintln!("skipped: python3 is not installed");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let key = "the-webhook-secret-text";
    let secret_file = dir.path().join("webhook-secret");
    tongbao_proto::secret_file::create_new(&secret_file, key.as_bytes())?;
    let mut child = Command::new("python3")
        .arg(script())
        .args(["webhook", "--secret-file"])
        .arg(&secret_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let checked = tokio::task::spawn_blocking(move || -> Result<Vec<String>, BoxError> {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().ok_or("the receiver said nothing")??;
        let port: u16 = first
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("no port in {first:?}"))?;
        let body = br#"{"event":"entry","entry":{"channel":"tax","seq":4,"subject":"s"}}"#;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        let signature = tongbao_agent::signature::sign(key.as_bytes(), now, body);
        let ts = now.to_string();
        let len = body.len().to_string();
        let signed = |sig: &[u8], length: &[u8]| {
            post(
                &[
                    ("Content-Length", length),
                    ("Tongbao-Timestamp", ts.as_bytes()),
                    ("Tongbao-Signature", sig),
                ],
                body,
            )
        };
        let mut said = Vec::new();
        for (what, request, want) in [
            (
                "a Content-Length that is not a number",
                signed(signature.as_bytes(), b"abc"),
                400,
            ),
            (
                "a negative Content-Length",
                signed(signature.as_bytes(), b"-1"),
                400,
            ),
            (
                "a non-ASCII signature",
                signed("v1=\u{e9}\u{e9}".as_bytes(), len.as_bytes()),
                400,
            ),
            (
                "a Latin-1 signature byte",
                signed(b"v1=\xe9", len.as_bytes()),
                400,
            ),
            ("a wrong signature", signed(b"v1=00", len.as_bytes()), 401),
            (
                "a good delivery",
                signed(signature.as_bytes(), len.as_bytes()),
                204,
            ),
        ] {
            let got = raw_status(port, &request)?;
            if got != want {
                return Err(format!("{what}: answered {got}, not {want}").into());
            }
            said.push(what.to_string());
        }
        // Still up, and it printed the good delivery's channel:seq.
        let printed = lines.next().ok_or("the receiver stopped")??;
        said.push(printed);
        Ok(said)
    })
    .await;
    child.kill()?;
    child.wait()?;
    let said = checked??;
    assert_eq!(said.last().map(String::as_str), Some("tax:4 s"), "{said:?}");
    Ok(())
}
