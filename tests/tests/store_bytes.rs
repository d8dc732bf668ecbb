//! Where a filled store's bytes go: a measurement, not a check, so it is
//! ignored by default. Run it with
//! `STORE_BYTES_N=10000 STORE_BYTES_RECIPIENTS=13 cargo test -p tongbao-tests
//! --test store_bytes -- --ignored --nocapture`: it fills a hub's store as
//! `tongbao-bench --history` does (1 KiB bodies, `PushBatch` of 64), stops
//! the hub and prints the data directory's files, then the store's records
//! by kind (count, key and value bytes).

use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::Path;
use tongbao_client::Draft;
use tongbao_proto::pb::Kind;
use tongbao_tests::{BoxError, TestHub};

const BODY: usize = 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every file under `dir` with its length, by path relative to `dir`.
fn files(dir: &Path, base: &Path, out: &mut BTreeMap<String, u64>) -> std::io::Result<()> {
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        if item.file_type()?.is_dir() {
            files(&item.path(), base, out)?;
        } else {
            let name = item
                .path()
                .strip_prefix(base)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            out.insert(name, item.metadata()?.len());
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it by name with --ignored --nocapture"]
async fn where_the_bytes_go() -> Result<(), BoxError> {
    let n = env_usize("STORE_BYTES_N", 10_000);
    let recipients = env_usize("STORE_BYTES_RECIPIENTS", 1);
    let t = TestHub::start().await?;
    let publishers: &[&str] = if recipients == 13 {
        &["finance", "pbc-taiyuan"]
    } else {
        &["tax", "education", "health", "culture-tourism"]
    };
    let mut tasks = Vec::new();
    for (p, unit) in publishers.iter().enumerate() {
        let client = t.unit(unit).await?;
        let mine = n / publishers.len();
        tasks.push(tokio::spawn(async move {
            let chunks: Vec<std::ops::Range<usize>> = (0..mine)
                .step_by(64)
                .map(|from| from..(from + 64).min(mine))
                .collect();
            let mut calls = futures::stream::iter(chunks)
                .map(|range| {
                    let client = client.clone();
                    async move {
                        let mut signed = Vec::new();
                        for k in range {
                            let body: Vec<u8> =
                                format!("message {k} ").bytes().cycle().take(BODY).collect();
                            let draft =
                                Draft::new(Kind::Notification, format!("history {p}/{k}"), body)
                                    .with_id(format!("history-{p}-{k}"));
                            let draft = if recipients == 13 {
                                draft.to_mechanism("joint-enforcement")
                            } else {
                                draft.to_units(["civil-affairs"])
                            };
                            signed.push(client.sign(draft).map_err(|e| e.to_string())?);
                        }
                        let results = client
                            .push_signed_batch(signed)
                            .await
                            .map_err(|e| e.to_string())?;
                        match results.into_iter().find_map(Result::err) {
                            Some(e) => Err(e.to_string()),
                            None => Ok(()),
                        }
                    }
                })
                .buffer_unordered(4);
            while let Some(done) = calls.next().await {
                done?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let data = t.pki.hub_config()?.hub.data_dir;
    let pki_dir = t.pki.path().to_path_buf();
    let hub = t.hub;
    if let Some(hub) = hub {
        hub.shutdown().await?;
    }
    let pushed = (n / publishers.len() * publishers.len()) as f64;
    let mut all = BTreeMap::new();
    files(&data, &data, &mut all)?;
    let total: u64 = all.values().sum();
    println!(
        "{pushed} messages to {recipients}, body {BODY} B; data directory {total} B, {:.0} B/message, {:.0} beyond the body",
        total as f64 / pushed,
        total as f64 / pushed - BODY as f64
    );
    for (name, len) in &all {
        println!(
            "  file {name:40} {len:>12} B  {:>8.1} B/message",
            *len as f64 / pushed
        );
    }
    let store = tongbao_server::store::SledStore::open(&data, true)?;
    let tree = store.raw_tree()?;
    // kind -> (count, key bytes, value bytes)
    let mut kinds: BTreeMap<char, (u64, u64, u64)> = BTreeMap::new();
    for kv in tree.iter() {
        let (k, v) = kv?;
        let kind = k.first().map(|b| *b as char).unwrap_or('?');
        let row = kinds.entry(kind).or_default();
        row.0 += 1;
        row.1 += k.len() as u64;
        row.2 += v.len() as u64;
    }
    let live: u64 = kinds.values().map(|(_, k, v)| k + v).sum();
    println!(
        "live records in sled: {live} B, {:.0} B/message",
        live as f64 / pushed
    );
    for (kind, (count, kb, vb)) in &kinds {
        println!(
            "  kind {kind}: {count:>8} keys ({:.2}/message), keys {kb:>10} B, values {vb:>10} B, {:.1} B/message",
            *count as f64 / pushed,
            (kb + vb) as f64 / pushed
        );
    }
    drop(store);
    drop(pki_dir);
    Ok(())
}
