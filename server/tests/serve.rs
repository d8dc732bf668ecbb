//! `tongbao-hub` runs from any build of the workspace. The test crate's
//! crash points are turned on at run time by its own hub only, not by a
//! cargo feature that a `cargo build --workspace` (or this test run, which
//! builds the whole workspace too) would turn on for this binary as well.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-hub");

#[test]
fn the_hub_serves_on_a_fresh_pki_and_stops_on_sigterm() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let pki = dir.path().join("pki");
    let init = Command::new(HUB)
        .args(["pki", "init", "--example", "--dir"])
        .arg(&pki)
        .output()?;
    let stderr = String::from_utf8_lossy(&init.stderr);
    assert!(init.status.success(), "pki init failed: {stderr}");
    let mut hub = Command::new(HUB)
        .args(["serve", "--config"])
        .arg(pki.join("hub.toml"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = hub.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if !line.starts_with("tongbao-hub listening on ") {
        let _ = hub.kill();
        let status = hub.wait()?;
        return Err(format!("the hub did not serve ({status}): {line:?}").into());
    }
    let term = Command::new("kill")
        .args(["-TERM", &hub.id().to_string()])
        .status()?;
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = hub.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = hub.kill();
            return Err("the hub did not stop within 30 s of SIGTERM".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the hub stopped badly: {status}");
    Ok(())
}
