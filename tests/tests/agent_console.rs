//! The web console in a real browser: headless Chromium (Debian's
//! `chromium`) loads the office's console and shows the delivery state of
//! known messages, one acknowledged and one not. Skipped, with a message,
//! where `chromium` is missing.
//!
//! With `TONGBAO_CONSOLE_SCREENSHOTS=DIR`, also writes screenshots of the
//! office's audit and a unit's inbox to DIR (how the ones in docs/ are made).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tongbao_client::Client;
use tongbao_tests::http::start_agent;
use tongbao_tests::{BoxError, TestHub, TestResult, note};

const WITHIN: Duration = Duration::from_secs(120);
const BROWSER: &str = "chromium";

fn have_browser() -> bool {
    Command::new(BROWSER)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs headless Chromium on `url` with a fresh profile; `what` is
/// `--dump-dom` or `--screenshot=FILE`. Returns stdout.
async fn browse(url: String, what: String) -> Result<String, BoxError> {
    tokio::task::spawn_blocking(move || -> Result<String, BoxError> {
        let profile = tempfile::tempdir()?;
        let mut child = Command::new(BROWSER)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--window-size=1280,800",
                // Lets the page's calls finish before the DOM is taken.
                "--virtual-time-budget=10000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(what)
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + WITHIN;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                child.kill()?;
                return Err(format!("{BROWSER} did not finish within {WITHIN:?}").into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = child.wait_with_output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await?
}

/// The `<tr>` of the audit table for CHANNEL:SEQ in a dumped DOM.
fn audit_row<'a>(dom: &'a str, channel: &str, seq: u64) -> Option<&'a str> {
    let start = dom.find(&format!("id=\"audit-{channel}-{seq}\""))?;
    let end = dom[start..].find("</tr>")?;
    Some(&dom[start..start + end])
}

fn state_of(row: &str, recipient: &str) -> Option<String> {
    let at = row.find(&format!("data-recipient=\"{recipient}\""))?;
    let rest = &row[at..];
    let s = rest.find("data-state=\"")? + "data-state=\"".len();
    let e = rest[s..].find('"')?;
    Some(rest[s..s + e].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_office_console_shows_each_recipients_delivery_state_in_a_browser() -> TestResult {
    if !have_browser() {
        eprintln!("skipped: {BROWSER} is not installed (apt-get install -y chromium)");
        return Ok(());
    }
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    let tax = t.unit("tax").await?;
    let civil = t.unit("civil-affairs").await?;
    tax.push(note("Irregular donations").to_units(["civil-affairs"]))
        .await?;
    tax.push(note("Second notice").to_units(["civil-affairs"]))
        .await?;
    let first = civil.get_entry("tax", 0).await?;
    assert_eq!(civil.ack(&[&first]).await?.newly_acknowledged, 1);

    let office = Client::connect(&t.pki.office_config("joint-enforcement", t.addr)?).await?;
    let (_office, office_http) = start_agent(office, dir.path(), "office", None).await?;
    let url = format!(
        "http://{}/console/#token={}&view=audit",
        office_http.addr, office_http.token
    );
    let dom = browse(url.clone(), "--dump-dom".into()).await?;
    assert!(dom.contains("送达审计"), "not the console: {dom:.2000}");
    let acked =
        audit_row(&dom, "tax", 0).ok_or_else(|| format!("no row for tax:0 in {dom:.4000}"))?;
    assert_eq!(
        state_of(acked, "civil-affairs").as_deref(),
        Some("acknowledged")
    );
    assert!(acked.contains("已确认"), "{acked}");
    let open = audit_row(&dom, "tax", 1).ok_or("no row for tax:1")?;
    let state = state_of(open, "civil-affairs");
    assert!(
        matches!(state.as_deref(), Some("pending" | "fetched")),
        "tax:1 shows {state:?}"
    );
    // The token did not end up in the page.
    assert!(!dom.contains(&office_http.token));

    // A wrong token shows the sign-in form, not the audit.
    let wrong = format!(
        "http://{}/console/#token=wrong-token&view=audit",
        office_http.addr
    );
    let dom = browse(wrong, "--dump-dom".into()).await?;
    assert!(audit_row(&dom, "tax", 0).is_none());

    if let Ok(shots) = std::env::var("TONGBAO_CONSOLE_SCREENSHOTS") {
        screenshots(&t, dir.path(), Path::new(&shots), &url).await?;
    }
    t.stop().await
}

async fn screenshots(t: &TestHub, dir: &Path, into: &Path, audit_url: &str) -> TestResult {
    let shot = |name: &str| format!("--screenshot={}", into.join(name).display());
    browse(audit_url.to_string(), shot("console-audit.png")).await?;
    let (_civil, civil) = start_agent(t.unit("civil-affairs").await?, dir, "civil", None).await?;
    let inbox = format!(
        "http://{}/console/#token={}&view=inbox",
        civil.addr, civil.token
    );
    browse(inbox, shot("console-inbox.png")).await?;
    Ok(())
}
