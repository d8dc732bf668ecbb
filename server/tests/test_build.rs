//! The hub binary and the test-only `failpoints` feature: a build of the
//! whole workspace turns the feature on for this crate too (the test
//! crate's hub needs it), and a hub built so must refuse to run.

use std::process::Command;

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-hub");
const REFUSAL: &str = "built with the test-only `failpoints` feature";

#[test]
fn a_hub_built_with_test_failpoints_refuses_to_run() -> Result<(), Box<dyn std::error::Error>> {
    let out = Command::new(HUB).arg("--help").output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if cfg!(feature = "failpoints") {
        assert!(!out.status.success(), "a test build ran: {stderr}");
        assert!(stderr.contains(REFUSAL), "{stderr}");
        assert!(
            stderr.contains("cargo build --release -p tongbao-server"),
            "{stderr}"
        );
    } else {
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains(REFUSAL), "{stderr}");
    }
    Ok(())
}
