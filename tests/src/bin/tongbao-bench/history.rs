//! `--history N`: the costs that grow with what the hub holds, not with
//! its traffic.
//!
//! Fills a fresh hub's store with N messages (`PushBatch`, several
//! publishers, to 1 or to 13 recipients; nobody subscribes, so the fill is
//! as fast as appends go), stops the hub, and measures on that data: the
//! data directory's size per message (all of it, and beyond the body),
//! the restart (process start to the first answered call; the hub logs
//! the time of each start-up step at info), the hub's RSS once it
//! answers, and both again at a second restart (sled writes its snapshot
//! of page places only when it opens, so the first restart also replays
//! all the fill wrote), an office's `Audit.UnitSummary` over everything,
//! and a deep `Pull` (from position 0 through the whole inbox, paged,
//! every entry verified by the client as always). The background check of
//! every entry runs meanwhile, as it would after any restart.

use crate::audit::audit_calls;
use crate::hub::HubChild;
use crate::latency::{millis, r3};
use crate::scenario::{
    MECHANISM_PUBLISHERS, SINGLE_PUBLISHERS, body, to_civil_affairs, to_joint_enforcement,
};
use futures::StreamExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tongbao_client::{Client, Draft};
use tongbao_proto::pb::Kind;
use tongbao_tests::{BoxError, TestPki, members_of};

/// What `--history` fills and how.
pub struct HistoryArgs {
    pub messages: usize,
    pub recipients: usize,
    pub body_bytes: usize,
    pub publishers: usize,
    pub batch: usize,
    pub in_flight: usize,
    pub fsync: bool,
}

/// Messages of the latest period the office also summarises: a summary
/// over everything is refused past `limits.max_audit_entries` (200,000 by
/// default), so the cost of a summary at depth is this period's.
const LATEST: usize = 100_000;

/// How long the restarted hub may take to answer its first call.
const RESTART_TIMEOUT: Duration = Duration::from_secs(600);
/// Positions per page of the deep pull (the hub's default cap).
const PULL_PAGE: u32 = 1000;

/// Runs the history bench: its report, as JSON.
pub async fn run(args: &HistoryArgs) -> Result<serde_json::Value, BoxError> {
    let pki = TestPki::generate_on_sled()?;
    let hub = HubChild::start(&pki, args.fsync)?;
    let filled = Instant::now();
    let older = args.messages.saturating_sub(LATEST);
    fill(&pki, &hub, args, 0, older).await?;
    let latest_since = now_micros()?;
    fill(&pki, &hub, args, older, args.messages - older).await?;
    let fill_s = filled.elapsed().as_secs_f64();
    hub.stop()?;
    let data = pki.path().join("data");
    let bytes = disk_usage(&data)?;

    let first = restart(&pki, args).await?;
    let rss_kib = first.hub.rss_kib()?;
    let audit = audit_calls(&pki, &first.hub, "joint-enforcement", 2, 0).await?;
    let latest = audit_calls(&pki, &first.hub, "joint-enforcement", 2, latest_since).await?;
    let pulled = deep_pull(&first.reader).await?;
    first.hub.stop()?;
    let second = restart(&pki, args).await?;
    let rss_kib_again = second.hub.rss_kib()?;
    second.hub.stop()?;

    let n = args.messages as f64;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let report = serde_json::json!({
        "history": args.messages,
        "recipients": args.recipients,
        "body_bytes": args.body_bytes,
        "fill_s": r3(fill_s),
        "data_dir_bytes": bytes,
        "bytes_per_message": r3(bytes as f64 / n),
        "bytes_per_message_beyond_body": r3(bytes as f64 / n - args.body_bytes as f64),
        "restart_ms": r3(millis(first.took)),
        "listening_ms": r3(millis(first.listening)),
        "hub_rss_mib_after_start": r3(mib(rss_kib)),
        "second_restart_ms": r3(millis(second.took)),
        "hub_rss_mib_after_second_start": r3(mib(rss_kib_again)),
        "unit_summary": audit.json,
        "unit_summary_latest": latest.json,
        "latest_messages": args.messages - older,
        "deep_pull": pulled,
    });
    eprintln!(
        "history {} to {}: {:.0} B/message ({:.0} beyond the body); restart {:.0} ms, again {:.0} ms; RSS {:.0} MiB; {}; latest {}: {}; deep pull {}",
        args.messages,
        args.recipients,
        bytes as f64 / n,
        bytes as f64 / n - args.body_bytes as f64,
        millis(first.took),
        millis(second.took),
        mib(rss_kib),
        audit.summary,
        args.messages - older,
        latest.summary,
        pulled
    );
    Ok(report)
}

/// The restarted hub logs its start-up steps and the background check.
const HUB_LOG: &str = "warn,tongbao_server::hub=info,tongbao_server::full_check=info";

/// The unit whose inbox the deep pull reads.
fn recipient(recipients: usize) -> Result<&'static str, BoxError> {
    match recipients {
        1 => Ok("civil-affairs"),
        13 => members_of("joint-enforcement")
            .first()
            .copied()
            .ok_or_else(|| "the mechanism has no members".into()),
        n => Err(format!("--recipients {n}: 1 or 13").into()),
    }
}

/// The hub's clock (the same host's) now, in µs.
fn now_micros() -> Result<i64, BoxError> {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    Ok(i64::try_from(since_epoch.as_micros())?)
}

/// Pushes `count` messages in batches, publishers side by side; their ids
/// are numbered from `first`, so that fills one after the other never
/// repeat one.
async fn fill(
    pki: &TestPki,
    hub: &HubChild,
    args: &HistoryArgs,
    first: usize,
    count: usize,
) -> Result<(), BoxError> {
    if count == 0 {
        return Ok(());
    }
    let (units, audience): (&[&str], fn(Draft) -> Draft) = match args.recipients {
        1 => (SINGLE_PUBLISHERS, to_civil_affairs),
        13 => (MECHANISM_PUBLISHERS, to_joint_enforcement),
        n => return Err(format!("--recipients {n}: 1 or 13").into()),
    };
    let batch = args.batch.max(1);
    let mut tasks = Vec::with_capacity(args.publishers);
    for p in 0..args.publishers {
        let unit = units[p % units.len()];
        let client = Client::connect(&pki.unit_config(unit, hub.addr)?).await?;
        let mine = count / args.publishers + usize::from(p < count % args.publishers);
        let (body_bytes, in_flight) = (args.body_bytes, args.in_flight.div_ceil(batch).max(1));
        tasks.push(tokio::spawn(async move {
            let chunks = (first..first + mine)
                .step_by(batch)
                .map(|from| from..(from + batch).min(first + mine));
            let mut calls = futures::stream::iter(chunks)
                .map(|range| {
                    let client = client.clone();
                    async move {
                        let mut signed = Vec::with_capacity(range.len());
                        for k in range {
                            let draft = audience(
                                Draft::new(
                                    Kind::Notification,
                                    format!("history {p}/{k}"),
                                    body(body_bytes, k),
                                )
                                .with_id(format!("history-{p}-{k}")),
                            );
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
                .buffer_unordered(in_flight);
            while let Some(done) = calls.next().await {
                done?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await?
            .map_err(|e| format!("a push of the fill failed: {e}"))?;
    }
    Ok(())
}

/// A hub restarted on the filled store.
struct Restarted {
    hub: HubChild,
    /// Connected as a recipient of the fill.
    reader: Client,
    /// Process start to listening.
    listening: Duration,
    /// Process start to the first answered call.
    took: Duration,
}

/// Starts the hub on the filled store and waits for its first answer.
async fn restart(pki: &TestPki, args: &HistoryArgs) -> Result<Restarted, BoxError> {
    let started = Instant::now();
    let hub = HubChild::start_logging(pki, args.fsync, Some(HUB_LOG))?;
    let listening = started.elapsed();
    let reader = first_answer(pki, &hub, recipient(args.recipients)?).await?;
    Ok(Restarted {
        took: started.elapsed(),
        hub,
        reader,
        listening,
    })
}

/// Connects as `unit` until a call is answered (the client's connect makes one).
async fn first_answer(pki: &TestPki, hub: &HubChild, unit: &str) -> Result<Client, BoxError> {
    let config = pki.unit_config(unit, hub.addr)?;
    let deadline = Instant::now() + RESTART_TIMEOUT;
    loop {
        match Client::connect(&config).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("the restarted hub never answered: {e}").into());
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Reads the whole inbox from position 0, a page at a time.
async fn deep_pull(reader: &Client) -> Result<serde_json::Value, BoxError> {
    let started = Instant::now();
    let (mut after, mut entries, mut pages) = (0u64, 0usize, 0usize);
    loop {
        let page = reader.pull(after, PULL_PAGE).await?;
        pages += 1;
        entries += page.entries.len();
        let next = page.next_after(after);
        if page.entries.is_empty() || next >= page.head {
            break;
        }
        after = next;
    }
    let took = started.elapsed();
    Ok(serde_json::json!({
        "entries": entries,
        "pages": pages,
        "ms": r3(millis(took)),
        "entries_per_s": r3(entries as f64 / took.as_secs_f64().max(1e-9)),
    }))
}

/// Bytes the files under `dir` take on disk (as `du` counts them).
fn disk_usage(dir: &Path) -> Result<u64, BoxError> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let meta = item.metadata()?;
        total += if meta.is_dir() {
            disk_usage(&item.path())?
        } else {
            meta.blocks() * 512
        };
    }
    Ok(total)
}
