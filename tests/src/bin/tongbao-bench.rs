//! Throughput and latency benchmark of a hub, and a correctness gate.
//!
//! Two scenarios, each against a fresh in-process hub with a fresh PKI:
//!
//! * "1 recipient": P distinct units push to `civil-affairs`, one subscriber
//!   of civil-affairs counts deliveries.
//! * "13 recipients": `finance` and `pbc-taiyuan` (more connections of the
//!   same units if P > 2) push to the joint-enforcement mechanism, one
//!   subscriber per member (13) counts deliveries.
//!
//! All messages are signed before the timed phase; each publisher keeps W
//! pushes in flight. Every subscriber acknowledges everything it receives
//! with batched signed receipts (up to 256 entries per receipt, or what
//! arrived within 20 ms), so "fully acknowledged" means every recipient's
//! receipt for a message is durable in the hub. The run fails (non-zero exit) unless every push
//! succeeds, every channel's seqs are exactly 0..pushes, and every
//! subscriber receives every message exactly once within the drain timeout.
//!
//! ```text
//! tongbao-bench [--short] [--messages N] [--publishers P] [--in-flight W] [--body-bytes B] [--no-fsync] [--batch B]
//! ```
#![forbid(unsafe_code)]

use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tongbao_client::{Client, ClientError, Draft, PushReceipt};
use tongbao_proto::pb::{self, Kind};
use tongbao_tests::{BoxError, TestHub, members_of};

/// How long subscribers may take to receive everything once pushes end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long subscribers keep listening after they have everything, to catch
/// duplicates delivered late.
const GRACE: Duration = Duration::from_millis(300);
/// How long the hub may take to shut down.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Publishers of the 1-recipient scenario, in order of use.
const SINGLE_PUBLISHERS: &[&str] = &[
    "tax",
    "education",
    "health",
    "culture-tourism",
    "public-security",
    "market-regulation",
    "publicity",
    "political-legal",
    "cyberspace",
    "hr-social-security",
    "foreign-affairs",
    "state-security",
    "finance",
    "pbc-taiyuan",
];
/// Publishers of the 13-recipient scenario: not members of the mechanism.
const MECHANISM_PUBLISHERS: &[&str] = &["finance", "pbc-taiyuan"];

const USAGE: &str = "usage: tongbao-bench [--short] [--messages N] [--publishers P] [--in-flight W] [--body-bytes B] [--no-fsync] [--batch B]";

#[derive(Debug, Clone)]
struct Args {
    messages: usize,
    publishers: usize,
    in_flight: usize,
    body_bytes: usize,
    /// Skip the fsync after each group commit, to measure what it costs.
    no_fsync: bool,
    /// Messages per push call (1 = Push, more = PushBatch).
    batch: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut short = false;
    let mut messages = None;
    let mut publishers = 4;
    let mut in_flight = 64;
    let mut body_bytes = 1024;
    let mut no_fsync = false;
    let mut batch = 1;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            let v = it
                .next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?;
            v.parse::<usize>()
                .map_err(|e| format!("{name} {v:?}: {e}\n{USAGE}"))
        };
        match arg.as_str() {
            "--short" => short = true,
            "--no-fsync" => no_fsync = true,
            "--batch" => batch = value("--batch")?,
            "--messages" => messages = Some(value("--messages")?),
            "--publishers" => publishers = value("--publishers")?,
            "--in-flight" => in_flight = value("--in-flight")?,
            "--body-bytes" => body_bytes = value("--body-bytes")?,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let messages = messages.unwrap_or(if short { 300 } else { 20_000 });
    if messages == 0 || publishers == 0 || in_flight == 0 {
        return Err(format!(
            "--messages, --publishers and --in-flight must be at least 1\n{USAGE}"
        ));
    }
    Ok(Args {
        messages,
        publishers,
        in_flight,
        body_bytes,
        no_fsync,
        batch,
    })
}

/// One scenario to run.
struct Scenario {
    name: &'static str,
    /// Units to publish as, cycled if there are more publishers.
    publisher_units: &'static [&'static str],
    subscribers: Vec<&'static str>,
    audience: fn(Draft) -> Draft,
}

fn to_civil_affairs(d: Draft) -> Draft {
    d.to_units(["civil-affairs"])
}

fn to_joint_enforcement(d: Draft) -> Draft {
    d.to_mechanism("joint-enforcement")
}

/// What one publisher's timed phase produced.
struct Published {
    latencies: Vec<Duration>,
    /// When each appended entry's push was sent.
    sent_at: HashMap<(String, u64), Instant>,
    receipts: Vec<PushReceipt>,
    errors: Vec<String>,
    last_answer: Option<Instant>,
}

/// What one subscriber saw.
struct Received {
    unit: &'static str,
    seen: HashSet<(String, u64)>,
    /// When the receipt acknowledging each entry was answered durable.
    acked_at: Vec<((String, u64), Instant)>,
    /// Entries the hub reported as newly acknowledged by this unit.
    newly_acknowledged: u64,
    /// Receipts this unit appended.
    receipts: u64,
    duplicates: u64,
    /// Entries that are not of this run, or not addressed to this unit.
    foreign: Vec<String>,
    error: Option<String>,
    /// When this unit had acknowledged every message.
    complete_at: Option<Instant>,
    expected: usize,
}

/// Figures of one scenario.
struct Report {
    json: serde_json::Value,
    summary: String,
    failures: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let scenarios = [
        Scenario {
            name: "1 recipient",
            publisher_units: SINGLE_PUBLISHERS,
            subscribers: vec!["civil-affairs"],
            audience: to_civil_affairs,
        },
        Scenario {
            name: "13 recipients",
            publisher_units: MECHANISM_PUBLISHERS,
            subscribers: members_of("joint-enforcement"),
            audience: to_joint_enforcement,
        },
    ];
    let mut failed = false;
    for scenario in &scenarios {
        match run(scenario, &args).await {
            Ok(report) => {
                println!("{}", report.json);
                eprintln!("{}", report.summary);
                for f in &report.failures {
                    eprintln!("  FAILED [{}]: {f}", scenario.name);
                }
                failed |= !report.failures.is_empty();
            }
            Err(e) => {
                eprintln!("FAILED [{}]: {e}", scenario.name);
                failed = true;
            }
        }
    }
    if failed {
        eprintln!("tongbao-bench: FAILED");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A body of `len` bytes of readable filler.
fn body(len: usize, n: usize) -> Vec<u8> {
    let seed = format!("message {n} ");
    seed.bytes().cycle().take(len).collect()
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
        .unwrap_or_default()
}

fn per_sec(count: usize, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { count as f64 / s } else { 0.0 }
}

/// Round to 3 decimals for readable JSON.
fn r3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

async fn run(scenario: &Scenario, args: &Args) -> Result<Report, BoxError> {
    let fsync = !args.no_fsync;
    let hub = TestHub::start_with(|c| c.hub.fsync = fsync).await?;
    let stats = hub
        .hub
        .as_ref()
        .map(|h| h.stats())
        .ok_or("the test hub has no in-process hub")?;

    // Publishers: one connection each, units cycled.
    let mut publishers = Vec::with_capacity(args.publishers);
    let mut publisher_units = Vec::with_capacity(args.publishers);
    for i in 0..args.publishers {
        let unit = *scenario
            .publisher_units
            .get(i % scenario.publisher_units.len())
            .ok_or("no publisher units")?;
        publishers.push(hub.unit(unit).await?);
        publisher_units.push(unit);
    }

    // Messages split evenly, then signed before anything is timed.
    let sign_started = Instant::now();
    let mut signed: Vec<Vec<pb::SignedMessage>> = Vec::with_capacity(publishers.len());
    let mut expected_ids: HashSet<String> = HashSet::with_capacity(args.messages);
    let mut pushes_of: HashMap<String, usize> = HashMap::new();
    for (p, (client, unit)) in publishers.iter().zip(&publisher_units).enumerate() {
        let count =
            args.messages / args.publishers + usize::from(p < args.messages % args.publishers);
        let mut mine = Vec::with_capacity(count);
        for k in 0..count {
            let id = format!("bench-{p}-{k}");
            let draft = (scenario.audience)(
                Draft::new(
                    Kind::Notification,
                    format!("bench {p}/{k}"),
                    body(args.body_bytes, k),
                )
                .with_id(id.clone()),
            );
            mine.push(client.sign(draft)?);
            expected_ids.insert(id);
        }
        *pushes_of.entry((*unit).to_string()).or_default() += count;
        signed.push(mine);
    }
    let sign_elapsed = sign_started.elapsed();
    let total: usize = signed.iter().map(Vec::len).sum();
    let expected_ids = Arc::new(expected_ids);

    // Subscribers listen from the start of their inboxes.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let mut subscriber_tasks = Vec::with_capacity(scenario.subscribers.len());
    for unit in &scenario.subscribers {
        let client = hub.unit(unit).await?;
        subscriber_tasks.push(tokio::spawn(subscriber(
            unit,
            client,
            total,
            expected_ids.clone(),
            stop_rx.clone(),
            done_tx.clone(),
        )));
    }
    drop(done_tx);

    // Timed phase: W pushes in flight per publisher.
    let started = Instant::now();
    let mut publisher_tasks = Vec::with_capacity(publishers.len());
    for (client, messages) in publishers.iter().cloned().zip(signed) {
        publisher_tasks.push(tokio::spawn(publish(
            client,
            messages,
            args.in_flight,
            args.batch,
        )));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut sent_at: HashMap<(String, u64), Instant> = HashMap::with_capacity(total);
    let mut receipts = Vec::with_capacity(total);
    let mut push_errors = Vec::new();
    let mut last_answer = started;
    for task in publisher_tasks {
        let p = task.await?;
        latencies.extend(p.latencies);
        sent_at.extend(p.sent_at);
        receipts.extend(p.receipts);
        push_errors.extend(p.errors);
        if let Some(t) = p.last_answer {
            last_answer = last_answer.max(t);
        }
    }
    let push_elapsed = last_answer.saturating_duration_since(started);

    // Drain: wait until every subscriber has everything (or gave up).
    let mut failures = Vec::new();
    let drain_deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    let mut done = 0;
    if push_errors.is_empty() {
        while done < subscriber_tasks.len() {
            match tokio::time::timeout_at(drain_deadline, done_rx.recv()).await {
                Ok(Some(())) => done += 1,
                Ok(None) => break,
                Err(_) => {
                    failures.push(format!(
                        "drain timeout: only {done} of {} subscribers had every message {} s after the last push",
                        subscriber_tasks.len(),
                        DRAIN_TIMEOUT.as_secs()
                    ));
                    break;
                }
            }
        }
    }
    tokio::time::sleep(GRACE).await;
    let _ = stop_tx.send(true);
    let mut received = Vec::with_capacity(subscriber_tasks.len());
    for task in subscriber_tasks {
        received.push(task.await?);
    }

    // Group-commit counters of this hub (fresh: only this scenario's pushes).
    let batches = stats.batches.load(Ordering::Relaxed);
    // Receipts are entries too: count only the messages.
    let receipts_appended: u64 = received.iter().map(|r| r.receipts).sum();
    let appended = stats
        .appended
        .load(Ordering::Relaxed)
        .saturating_sub(receipts_appended);
    let largest_batch = stats.largest_batch.load(Ordering::Relaxed);
    let commit_nanos = stats.commit_nanos.load(Ordering::Relaxed);
    let mean_batch = stats.mean_batch();
    let mean_commit = Duration::from_nanos(commit_nanos.checked_div(batches).unwrap_or(0));

    drop(publishers);
    match tokio::time::timeout(STOP_TIMEOUT, hub.stop()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("hub shutdown failed: {e}")),
        Err(_) => failures.push(format!(
            "hub did not shut down within {} s",
            STOP_TIMEOUT.as_secs()
        )),
    }

    // Correctness gate.
    check_pushes(
        &receipts,
        &push_errors,
        &pushes_of,
        total,
        scenario.subscribers.len(),
        appended,
        &mut failures,
    );
    let pushed: HashSet<(String, u64)> = receipts
        .iter()
        .map(|r| (r.channel.clone(), r.seq))
        .collect();
    let mut complete_at = Some(started);
    for r in &received {
        check_subscriber(r, &pushed, &mut failures);
        complete_at = match (complete_at, r.complete_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    let delivered_elapsed = complete_at.map(|t| t.saturating_duration_since(started));
    // Acknowledgement latency: push sent -> that recipient's receipt durable.
    let mut ack_latencies: Vec<Duration> = received
        .iter()
        .flat_map(|r| r.acked_at.iter())
        .filter_map(|(key, at)| sent_at.get(key).map(|s| at.saturating_duration_since(*s)))
        .collect();
    ack_latencies.sort_unstable();
    for r in &received {
        if r.newly_acknowledged != total as u64 {
            failures.push(format!(
                "subscriber {}: the hub counted {} new acknowledgements for {total} messages",
                r.unit, r.newly_acknowledged
            ));
        }
    }

    latencies.sort_unstable();
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    let pushes_per_sec = per_sec(receipts.len(), push_elapsed);
    let delivered_per_sec = delivered_elapsed.map(|d| per_sec(total, d));
    let sign_per_sec = per_sec(total, sign_elapsed);
    let ok = failures.is_empty();
    let commit_busy = if push_elapsed.is_zero() {
        0.0
    } else {
        commit_nanos as f64 / push_elapsed.as_nanos() as f64
    };

    let json = serde_json::json!({
        "scenario": scenario.name,
        "messages": total,
        "publishers": args.publishers,
        "in_flight": args.in_flight,
        "body_bytes": args.body_bytes,
        "fsync": !args.no_fsync,
        "batch": args.batch,
        "recipients": scenario.subscribers.len(),
        "pushes_per_sec": r3(pushes_per_sec),
        "acknowledged_by_all_per_sec": delivered_per_sec.map(r3),
        "ack_p50_ms": r3(millis(percentile(&ack_latencies, 50.0))),
        "ack_p99_ms": r3(millis(percentile(&ack_latencies, 99.0))),
        "push_p50_ms": r3(millis(p50)),
        "push_p99_ms": r3(millis(p99)),
        "mean_batch": r3(mean_batch),
        "largest_batch": largest_batch,
        "mean_commit_ms": r3(millis(mean_commit)),
        "sign_per_sec": r3(sign_per_sec),
        "ok": ok,
    });
    let summary = format!(
        "[{}] {}: {total} msgs, {} publishers x {} in flight, {} B bodies | push {:.0}/s over {:.2} s (p50 {:.1} ms, p99 {:.1} ms) | acknowledged by all {} (ack p50 {:.1} ms, p99 {:.1} ms) | {batches} flushes, mean {:.1}, largest {largest_batch}, {:.2} ms each, appender busy {:.0}% | sign {:.0}/s",
        if ok { "ok" } else { "FAIL" },
        scenario.name,
        args.publishers,
        args.in_flight,
        args.body_bytes,
        pushes_per_sec,
        push_elapsed.as_secs_f64(),
        millis(p50),
        millis(p99),
        match (delivered_per_sec, delivered_elapsed) {
            (Some(r), Some(d)) => format!("{r:.0}/s over {:.2} s", d.as_secs_f64()),
            _ => "never".to_string(),
        },
        millis(percentile(&ack_latencies, 50.0)),
        millis(percentile(&ack_latencies, 99.0)),
        mean_batch,
        millis(mean_commit),
        commit_busy * 100.0,
        sign_per_sec,
    );
    Ok(Report {
        json,
        summary,
        failures,
    })
}

/// Pushes pre-signed messages with `in_flight` outstanding at a time.
async fn publish(
    client: Client,
    messages: Vec<pb::SignedMessage>,
    in_flight: usize,
    batch: usize,
) -> Published {
    let mut out = Published {
        latencies: Vec::with_capacity(messages.len()),
        sent_at: HashMap::with_capacity(messages.len()),
        receipts: Vec::with_capacity(messages.len()),
        errors: Vec::new(),
        last_answer: None,
    };
    // Chunks of `batch` messages (1 = plain Push), `in_flight` messages outstanding.
    let chunks: Vec<Vec<pb::SignedMessage>> = messages
        .chunks(batch.max(1))
        .map(<[pb::SignedMessage]>::to_vec)
        .collect();
    let calls_in_flight = in_flight.div_ceil(batch.max(1)).max(1);
    let mut answers = futures::stream::iter(chunks)
        .map(|chunk| {
            let client = client.clone();
            async move {
                let sent = Instant::now();
                let results = if chunk.len() == 1 && batch <= 1 {
                    let mut chunk = chunk;
                    match chunk.pop() {
                        Some(m) => vec![client.push_signed(m).await.map_err(|e| e.to_string())],
                        None => Vec::new(),
                    }
                } else {
                    let n = chunk.len();
                    match client.push_signed_batch(chunk).await {
                        Ok(results) => results
                            .into_iter()
                            .map(|r| r.map_err(|e| e.to_string()))
                            .collect(),
                        Err(e) => (0..n).map(|_| Err(e.to_string())).collect(),
                    }
                };
                (sent, Instant::now(), results)
            }
        })
        .buffer_unordered(calls_in_flight);
    while let Some((sent, answered, results)) = answers.next().await {
        out.last_answer = Some(out.last_answer.map_or(answered, |t| t.max(answered)));
        for r in results {
            out.latencies.push(answered.saturating_duration_since(sent));
            match r {
                Ok(receipt) => {
                    out.sent_at
                        .insert((receipt.channel.clone(), receipt.seq), sent);
                    out.receipts.push(receipt);
                }
                Err(e) => out.errors.push(e),
            }
        }
    }
    out
}

/// Most entries one receipt covers.
const ACK_BATCH: usize = 256;
/// How long a partial batch waits for more entries before it is sent.
const ACK_LINGER: Duration = Duration::from_millis(20);

/// Sends one receipt for the pending entries and records when each was
/// acknowledged; marks the subscriber complete once it acknowledged all.
async fn acknowledge(
    client: &Client,
    pending: &mut Vec<pb::EntryPin>,
    r: &mut Received,
) -> Result<(), String> {
    if pending.is_empty() {
        return Ok(());
    }
    let pins = std::mem::take(pending);
    let outcome = client
        .ack_pins(pins.clone())
        .await
        .map_err(|e| format!("acknowledge failed: {e}"))?;
    let now = Instant::now();
    r.newly_acknowledged += u64::from(outcome.newly_acknowledged);
    r.receipts += u64::from(outcome.receipt.is_some());
    r.acked_at
        .extend(pins.into_iter().map(|p| ((p.channel, p.seq), now)));
    if r.complete_at.is_none() && r.acked_at.len() >= r.expected {
        r.complete_at = Some(now);
    }
    Ok(())
}

/// Reads one unit's inbox until stopped, recording every (channel, seq).
async fn subscriber(
    unit: &'static str,
    client: Client,
    expected: usize,
    ids: Arc<HashSet<String>>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::UnboundedSender<()>,
) -> Received {
    let mut r = Received {
        unit,
        seen: HashSet::with_capacity(expected),
        acked_at: Vec::with_capacity(expected),
        newly_acknowledged: 0,
        receipts: 0,
        duplicates: 0,
        foreign: Vec::new(),
        error: None,
        complete_at: None,
        expected,
    };
    let mut inbox = Box::pin(client.subscribe(0));
    let mut signalled = false;
    let mut pending: Vec<pb::EntryPin> = Vec::new();
    loop {
        let linger = if pending.is_empty() {
            Duration::from_secs(3600)
        } else {
            ACK_LINGER
        };
        let next: Option<Result<tongbao_client::VerifiedEntry, ClientError>> = tokio::select! {
            n = inbox.next() => n,
            _ = tokio::time::sleep(linger) => {
                if let Err(e) = acknowledge(&client, &mut pending, &mut r).await {
                    r.error = Some(e);
                    break;
                }
                if !signalled && r.complete_at.is_some() {
                    signalled = true;
                    let _ = done.send(());
                }
                continue;
            }
            _ = stop.changed() => break,
        };
        match next {
            Some(Ok(entry)) => {
                pending.push(entry.pin());
                let m = entry.message();
                if !ids.contains(&m.message_id)
                    || m.sender != entry.channel()
                    || !entry.entry.recipients.iter().any(|x| x == unit)
                {
                    r.foreign.push(format!(
                        "{}:{} (message id {:?}, sender {}, recipients {:?})",
                        entry.channel(),
                        entry.seq(),
                        m.message_id,
                        m.sender,
                        entry.entry.recipients
                    ));
                }
                if !r.seen.insert((entry.channel().to_string(), entry.seq())) {
                    r.duplicates += 1;
                }
                if pending.len() >= ACK_BATCH
                    && let Err(e) = acknowledge(&client, &mut pending, &mut r).await
                {
                    r.error = Some(e);
                    break;
                }
                if r.complete_at.is_some() && !signalled {
                    signalled = true;
                    let _ = done.send(());
                }
            }
            Some(Err(e)) => {
                r.error = Some(e.to_string());
                break;
            }
            None => {
                r.error = Some("subscription stream ended".into());
                break;
            }
        }
    }
    if !signalled {
        let _ = done.send(());
    }
    r
}

fn check_pushes(
    receipts: &[PushReceipt],
    errors: &[String],
    pushes_of: &HashMap<String, usize>,
    total: usize,
    recipients: usize,
    appended: u64,
    failures: &mut Vec<String>,
) {
    if !errors.is_empty() {
        let mut distinct: Vec<&String> =
            errors.iter().collect::<HashSet<_>>().into_iter().collect();
        distinct.sort();
        failures.push(format!(
            "{} of {total} pushes failed: {}",
            errors.len(),
            distinct
                .iter()
                .take(3)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    let duplicates = receipts.iter().filter(|r| r.duplicate).count();
    if duplicates > 0 {
        failures.push(format!(
            "{duplicates} pushes were answered as duplicates of earlier ones"
        ));
    }
    let wrong_fanout = receipts
        .iter()
        .filter(|r| r.recipients.len() != recipients)
        .count();
    if wrong_fanout > 0 {
        failures.push(format!(
            "{wrong_fanout} receipts do not name exactly {recipients} recipients"
        ));
    }
    let mut seqs: HashMap<&str, HashSet<u64>> = HashMap::new();
    for r in receipts {
        seqs.entry(r.channel.as_str()).or_default().insert(r.seq);
    }
    for (channel, &pushed) in pushes_of {
        let got = seqs.get(channel.as_str());
        let distinct = got.map_or(0, HashSet::len);
        if distinct != pushed {
            failures.push(format!(
                "channel {channel}: {pushed} pushes but {distinct} distinct seqs in the receipts"
            ));
        } else if let Some(max) = got.and_then(|s| s.iter().max())
            && *max as usize + 1 != pushed
        {
            failures.push(format!(
                "channel {channel}: seqs are not 0..{pushed} (largest is {max})"
            ));
        }
    }
    for channel in seqs.keys() {
        if !pushes_of.contains_key(*channel) {
            failures.push(format!(
                "receipt names channel {channel}, which no publisher pushed into"
            ));
        }
    }
    if appended != total as u64 {
        failures.push(format!(
            "the hub counted {appended} appended entries for {total} messages"
        ));
    }
}

fn check_subscriber(r: &Received, pushed: &HashSet<(String, u64)>, failures: &mut Vec<String>) {
    if let Some(e) = &r.error {
        failures.push(format!("subscriber {}: {e}", r.unit));
    }
    if r.duplicates > 0 {
        failures.push(format!(
            "subscriber {}: {} entries delivered more than once",
            r.unit, r.duplicates
        ));
    }
    if let Some(first) = r.foreign.first() {
        failures.push(format!(
            "subscriber {}: {} entries not of this run or not addressed to it, e.g. {first}",
            r.unit,
            r.foreign.len()
        ));
    }
    let mut missing: Vec<&(String, u64)> = pushed.difference(&r.seen).collect();
    if !missing.is_empty() {
        missing.sort();
        failures.push(format!(
            "subscriber {}: {} of {} messages missing, e.g. {:?}",
            r.unit,
            missing.len(),
            pushed.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        ));
    }
    let unexpected = r.seen.difference(pushed).count();
    if unexpected > 0 {
        failures.push(format!(
            "subscriber {}: {unexpected} delivered entries match no push receipt",
            r.unit
        ));
    }
}
