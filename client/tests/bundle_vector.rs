//! The proof bundle of the test vectors (`proto/testdata/bundle.json`,
//! described in `docs/protocol.md`) verifies with the library's offline
//! verifier, and one changed byte makes it fail: the bundle format the
//! specification describes is the one `tongbao verify-bundle` reads.

use serde_json::Value;
use std::path::PathBuf;
use tongbao_client::bundle::verify_bundle;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn testdata(file: &str) -> Result<String, Box<dyn std::error::Error>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../proto/testdata")
        .join(file);
    Ok(std::fs::read_to_string(path)?)
}

fn hub_key() -> Result<String, Box<dyn std::error::Error>> {
    let notes: Value = serde_json::from_str(&testdata("notes.json")?)?;
    Ok(notes
        .get("vkey")
        .and_then(Value::as_str)
        .ok_or("notes.json has no vkey")?
        .to_string())
}

#[test]
fn the_vector_bundle_verifies_and_ties_the_receipt_to_its_entry() -> TestResult {
    let report = verify_bundle(testdata("bundle.json")?.as_bytes(), &hub_key()?)?;
    let text = report.join("\n");
    assert!(
        text.contains("civil-affairs:0 was acknowledged by tax in its own channel at tax:0"),
        "{text}"
    );
    assert!(
        text.contains("exception feedback by finance on civil-affairs:0"),
        "{text}"
    );
    Ok(())
}

#[test]
fn a_changed_vector_bundle_is_refused() -> TestResult {
    let text = testdata("bundle.json")?;
    let key = hub_key()?;
    // The original verifies: each refusal below is its change's.
    verify_bundle(text.as_bytes(), &key)?;
    let bundle: Value = serde_json::from_str(&text)?;
    for pointer in ["/entries/0/proof/0", "/entries/1/leaf_hash"] {
        let mut changed = bundle.clone();
        let hash = changed.pointer_mut(pointer).ok_or("no such hash")?;
        let mut h = hash.as_str().ok_or("not a string")?.to_string();
        let flipped = if h.starts_with('0') { "1" } else { "0" };
        h.replace_range(0..1, flipped);
        *hash = Value::from(h);
        let bytes = serde_json::to_vec(&changed)?;
        assert!(verify_bundle(&bytes, &key).is_err(), "{pointer}");
    }
    // A checkpoint whose size was changed no longer opens.
    let mut changed = bundle.clone();
    let note = changed
        .pointer_mut("/checkpoints/civil-affairs")
        .ok_or("no checkpoint")?;
    let forged = note
        .as_str()
        .ok_or("not a string")?
        .replacen("\n2\n", "\n3\n", 1);
    *note = Value::from(forged);
    assert!(verify_bundle(&serde_json::to_vec(&changed)?, &key).is_err());
    Ok(())
}
