//! The web console in a real browser: headless Chromium (Debian's
//! `chromium`) loads the office's console and shows the delivery state of
//! known messages, one acknowledged and one not. Skipped, with a message,
//! where `chromium` is missing.
//!
//! With `TONGBAO_CONSOLE_SCREENSHOTS=DIR`, also writes screenshots of the
//! office's audit, a unit's inbox, a unit's minutes awaiting consent and
//! the office's meetings to DIR (how the ones in docs/ are made).

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

/// The id'd element of a dumped DOM, up to its closing tag `end`.
fn element<'a>(dom: &'a str, id: &str, end: &str) -> Option<&'a str> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let stop = dom[start..].find(end)?;
    Some(&dom[start..start + stop])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_units_console_shows_minutes_awaiting_its_consent_and_the_office_who_has_not_answered()
-> TestResult {
    if !have_browser() {
        eprintln!("skipped: {BROWSER} is not installed (apt-get install -y chromium)");
        return Ok(());
    }
    let t = TestHub::start().await?;
    let dir = tempfile::tempdir()?;
    let lead = t.unit("civil-affairs").await?;
    lead.propose_meeting(tongbao_proto::pb::MeetingProposal {
        meeting_id: "m-7".into(),
        mechanisms: vec!["fund-supervision".into()],
        kind: tongbao_proto::pb::MeetingKind::Partial as i32,
        title: "Abnormal fund movements, Q4".into(),
        attending_units: vec!["tax".into(), "finance".into()],
        date_micros: tongbao_proto::now_micros(),
        agenda: vec!["Review of Q4 leads".into()],
    })
    .await?;
    lead.settle_agenda("m-7", vec!["Review of Q4 leads".into()], vec![])
        .await?;
    // Text from the hub is shown as text: markup in it stays inert.
    let text = "Agreed: refer Y to <b>Public Security</b>.";
    lead.circulate_minutes("m-7", text).await?;

    let (_tax, tax) = start_agent(t.unit("tax").await?, dir.path(), "tax", None).await?;
    let url = format!(
        "http://{}/console/#token={}&view=pending",
        tax.addr, tax.token
    );
    let dom = browse(url.clone(), "--dump-dom".into()).await?;
    assert!(dom.contains("待会签纪要"), "not the console: {dom:.2000}");
    let card = element(&dom, "minutes-m-7", "</article>")
        .ok_or_else(|| format!("no minutes card in {dom:.4000}"))?;
    assert!(card.contains("Abnormal fund movements, Q4"), "{card}");
    assert!(
        card.contains("&lt;b&gt;Public Security&lt;/b&gt;"),
        "{card}"
    );
    assert!(
        card.contains("同意 Consent") && card.contains("反对 Object"),
        "{card}"
    );
    assert!(!dom.contains(&tax.token));

    let office = Client::connect(&t.pki.office_config("fund-supervision", t.addr)?).await?;
    let (_office, office) = start_agent(office, dir.path(), "office", None).await?;
    let meetings_url = format!(
        "http://{}/console/#token={}&view=meetings",
        office.addr, office.token
    );
    let dom = browse(meetings_url.clone(), "--dump-dom".into()).await?;
    let row = element(&dom, "meeting-m-7", "</tr>")
        .ok_or_else(|| format!("no meeting row in {dom:.4000}"))?;
    assert!(
        row.contains("data-unit=\"tax\" data-state=\"not-answered\""),
        "{row}"
    );
    assert!(
        row.contains("finance, tax") || row.contains("tax, finance"),
        "{row}"
    );
    if let Ok(shots) = std::env::var("TONGBAO_CONSOLE_SCREENSHOTS") {
        let into = Path::new(&shots);
        for (name, url) in [
            ("console-pending.png", url),
            ("console-meetings.png", meetings_url),
        ] {
            browse(url, format!("--screenshot={}", into.join(name).display())).await?;
        }
    }
    t.stop().await
}
