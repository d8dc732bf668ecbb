//! Throughput and latency benchmark of a hub, and a correctness gate.
//!
//! Each scenario runs against a fresh hub with a fresh PKI. The hub runs in
//! its own process (this binary started with `--serve-hub`), so that its CPU
//! time and peak memory can be read from `/proc/<pid>` apart from the
//! clients'. Both processes allocate with the hub's allocator (jemalloc,
//! which linking `tongbao-server` brings).
//!
//! * "1 recipient": P distinct units push to `civil-affairs`, which
//!   subscribes and acknowledges.
//! * "13 recipients": `finance` and `pbc-taiyuan` (more connections of the
//!   same units if P > 2) push to the joint-enforcement mechanism; every
//!   member (13) subscribes and acknowledges.
//!
//! Phases: warm-up (pushed, delivered and acknowledged, not measured), then
//! the measured phase, then drain (until every recipient acknowledged every
//! message). Throughput mode keeps W pushes in flight per publisher;
//! fixed-rate mode (`--rate R`) sends evenly spaced messages (publishers
//! take turns) on a schedule kept by a thread of its own, and measures
//! latency from the *scheduled* send time, so stalls count. Subscribers acknowledge
//! with batched signed receipts (up to 256 entries, or what arrived within
//! 20 ms). With `--slow`, one subscriber of the 13 reads at a crawl during
//! the measured phase (then catches up), to show that hub memory stays
//! bounded while it lags.
//!
//! The run fails (exit 1) unless every push succeeds, every channel's seqs
//! are exactly 0..pushes, and every subscriber receives and acknowledges
//! every message exactly once.
//!
//! With `--audit N`, once everything is acknowledged the office of the
//! joint-enforcement mechanism (13 recipients) asks `Audit.UnitSummary` over
//! all of it N times: the time of each call and the hub's RSS before and
//! after are reported.
//!
//! With `--audit-during`, the office asks `Audit.UnitSummary` over
//! everything, call after call, for the whole measured phase: push latency
//! with and without it shows whether a heavy query stalls the exchange
//! (use a large `--warmup` so that each call has history to read).
//!
//! With `--history N`, no exchange is measured: a store is filled with N
//! messages and what grows with history is measured on it (restart time,
//! bytes per message, RSS, an audit summary and a deep pull; see
//! `history`). `--recipients` (default 1), `--body-bytes`, `--publishers`,
//! `--batch` (default 64 there) and `--in-flight` shape the fill.
//!
//! ```text
//! tongbao-bench [--short] [--messages N] [--warmup N] [--publishers P] [--in-flight W]
//!               [--body-bytes B] [--batch B] [--rate R] [--recipients 1|13] [--slow] [--no-fsync]
//!               [--audit N] [--audit-during] [--history N]
//! ```
#![forbid(unsafe_code)]

#[path = "tongbao-bench/history.rs"]
mod history;

use futures::StreamExt;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tongbao_client::{Client, ClientError, Draft, PushReceipt};
use tongbao_proto::pb::{self, Kind};
use tongbao_server::{Hub, HubConfig};
use tongbao_tests::{BoxError, TestPki, members_of};

/// How long subscribers may take to acknowledge everything once pushes end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long subscribers keep listening after they have everything, to catch
/// duplicates delivered late.
const GRACE: Duration = Duration::from_millis(300);
/// How long the hub process may take to shut down.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the slow subscriber spends on each entry while it is slow.
const SLOW_PER_ENTRY: Duration = Duration::from_millis(5);
/// Linux reports process CPU time in ticks of 1/100 s (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

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

const USAGE: &str = "usage: tongbao-bench [--short] [--messages N] [--warmup N] [--publishers P] [--in-flight W] [--body-bytes B] [--batch B] [--rate R] [--recipients 1|13] [--slow] [--no-fsync] [--audit N] [--audit-during] [--history N]";

#[derive(Debug, Clone)]
struct Args {
    messages: usize,
    warmup: usize,
    publishers: usize,
    in_flight: usize,
    body_bytes: usize,
    /// Skip the fsync after each group commit, to measure what it costs.
    no_fsync: bool,
    /// Messages per push call (1 = Push, more = PushBatch).
    batch: usize,
    /// Fixed-rate mode: messages per second over all publishers.
    rate: Option<f64>,
    /// Only the scenario with this many recipients.
    recipients: Option<usize>,
    /// One of the 13 subscribers lags during the measured phase.
    slow: bool,
    /// `Audit.UnitSummary` calls over everything once acknowledged.
    audit: usize,
    /// `Audit.UnitSummary` calls back to back during the measured phase.
    audit_during: bool,
    /// Fill a store with this many messages and measure history's costs.
    history: Option<usize>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut short = false;
    let mut messages = None;
    let mut warmup = None;
    let mut publishers = 4;
    let mut in_flight = 64;
    let mut body_bytes = 1024;
    let mut no_fsync = false;
    let mut batch = 1;
    let mut rate = None;
    let mut recipients = None;
    let mut slow = false;
    let mut audit = 0;
    let mut audit_during = false;
    let mut history = None;
    let mut batch_given = false;
    let mut it = args.iter();
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
            "--slow" => slow = true,
            "--audit-during" => audit_during = true,
            "--batch" => {
                batch = value("--batch")?;
                batch_given = true;
            }
            "--history" => history = Some(value("--history")?),
            "--messages" => messages = Some(value("--messages")?),
            "--warmup" => warmup = Some(value("--warmup")?),
            "--publishers" => publishers = value("--publishers")?,
            "--in-flight" => in_flight = value("--in-flight")?,
            "--body-bytes" => body_bytes = value("--body-bytes")?,
            "--rate" => rate = Some(value("--rate")? as f64),
            "--recipients" => recipients = Some(value("--recipients")?),
            "--audit" => audit = value("--audit")?,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let messages = messages.unwrap_or(match (short, rate) {
        (true, _) => 300,
        (false, Some(r)) => (r as usize * 10).max(1),
        (false, None) => 20_000,
    });
    let warmup = warmup.unwrap_or(if short {
        50
    } else {
        (messages / 10).min(2_000)
    });
    if messages == 0 || publishers == 0 || in_flight == 0 || rate == Some(0.0) {
        return Err(format!(
            "--messages, --publishers, --in-flight and --rate must be at least 1\n{USAGE}"
        ));
    }
    if (slow || audit_during) && recipients.is_none() {
        recipients = Some(13);
    }
    if history == Some(0) {
        return Err(format!("--history must be at least 1\n{USAGE}"));
    }
    if history.is_some() && !batch_given {
        batch = 64;
    }
    Ok(Args {
        messages,
        warmup,
        publishers,
        in_flight,
        body_bytes,
        no_fsync,
        batch,
        rate,
        recipients,
        slow,
        audit,
        audit_during,
        history,
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

/// What one publisher's phase produced.
#[derive(Default)]
struct Published {
    /// Push answered durable, from when it was sent (or scheduled).
    latencies: Vec<Duration>,
    /// When each appended entry's push was sent (or scheduled).
    sent_at: HashMap<(String, u64), Instant>,
    receipts: Vec<PushReceipt>,
    errors: Vec<String>,
    last_answer: Option<Instant>,
}

impl Published {
    fn absorb(&mut self, other: Published) {
        self.latencies.extend(other.latencies);
        self.sent_at.extend(other.sent_at);
        self.receipts.extend(other.receipts);
        self.errors.extend(other.errors);
        self.last_answer = match (self.last_answer, other.last_answer) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// What one subscriber saw.
struct Received {
    unit: &'static str,
    /// When each entry arrived (verified) at this subscriber: its first
    /// arrival, so the keys are the entries seen.
    received_at: HashMap<(String, u64), Instant>,
    /// When the receipt acknowledging each entry was answered durable.
    acked_at: HashMap<(String, u64), Instant>,
    /// Entries the hub reported as newly acknowledged by this unit.
    newly_acknowledged: u64,
    /// Receipts this unit appended.
    receipts: u64,
    duplicates: u64,
    /// Entries that are not of this run, or not addressed to this unit.
    foreign: Vec<String>,
    error: Option<String>,
}

impl Received {
    fn new(unit: &'static str, expected: usize) -> Self {
        Self {
            unit,
            received_at: HashMap::with_capacity(expected),
            acked_at: HashMap::with_capacity(expected),
            newly_acknowledged: 0,
            receipts: 0,
            duplicates: 0,
            foreign: Vec::new(),
            error: None,
        }
    }

    /// Notes an entry's arrival; one that arrived before is a duplicate.
    fn arrived(&mut self, channel: &str, seq: u64) {
        match self.received_at.entry((channel.to_string(), seq)) {
            Entry::Occupied(_) => self.duplicates += 1,
            Entry::Vacant(v) => {
                v.insert(Instant::now());
            }
        }
    }
}

/// Figures of one scenario.
struct Report {
    json: serde_json::Value,
    summary: String,
    failures: Vec<String>,
}

/// Group-commit counters the hub process prints when it stops.
#[derive(Default)]
struct HubCounters {
    batches: u64,
    appended: u64,
    largest_batch: u64,
    commit_nanos: u64,
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--serve-hub") {
        return serve_hub(&argv[1..]);
    }
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(bench(args))
}

/// The hub side: `--serve-hub <hub.toml> [--no-fsync] [--log FILTER]`. Prints its address,
/// serves until stdin closes, then prints its group-commit counters.
fn serve_hub(args: &[String]) -> ExitCode {
    let Some(config_path) = args.first() else {
        eprintln!("--serve-hub needs a hub.toml");
        return ExitCode::from(2);
    };
    let fsync = !args.iter().any(|a| a == "--no-fsync");
    // `--log FILTER`: the hub's log to stderr (none otherwise).
    if let Some(filter) = args
        .iter()
        .position(|a| a == "--log")
        .and_then(|i| args.get(i + 1))
    {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BoxError::from)
        .and_then(|rt| {
            rt.block_on(async {
                let mut config = HubConfig::load(std::path::Path::new(config_path))?;
                config.hub.fsync = fsync;
                let hub = Hub::start(&config).await?;
                println!("listening {}", hub.addr());
                std::io::stdout().flush()?;
                tokio::task::spawn_blocking(|| {
                    let mut sink = Vec::new();
                    std::io::stdin().read_to_end(&mut sink)
                })
                .await??;
                let s = hub.stats();
                hub.shutdown().await?;
                println!(
                    "{}",
                    serde_json::json!({
                        "batches": s.batches.load(Ordering::Relaxed),
                        "appended": s.appended.load(Ordering::Relaxed),
                        "largest_batch": s.largest_batch.load(Ordering::Relaxed),
                        "commit_nanos": s.commit_nanos.load(Ordering::Relaxed),
                    })
                );
                Ok::<(), BoxError>(())
            })
        });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench hub failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The hub process of one scenario.
struct HubChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    addr: std::net::SocketAddr,
}

impl HubChild {
    fn start(pki: &TestPki, fsync: bool) -> Result<Self, BoxError> {
        Self::start_logging(pki, fsync, None)
    }

    /// Starts with the hub's log, filtered by `log`, on stderr.
    fn start_logging(pki: &TestPki, fsync: bool, log: Option<&str>) -> Result<Self, BoxError> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--serve-hub").arg(pki.path().join("hub.toml"));
        if !fsync {
            cmd.arg("--no-fsync");
        }
        if let Some(filter) = log {
            cmd.args(["--log", filter]);
        }
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().ok_or("hub has no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .ok_or_else(|| format!("unexpected hub output {line:?}"))?
            .parse()?;
        Ok(Self {
            child,
            stdin,
            stdout,
            addr,
        })
    }

    /// User + system CPU time of the hub process so far.
    fn cpu(&self) -> Result<Duration, BoxError> {
        cpu_of(&self.child.id().to_string())
    }

    /// Peak resident set size so far (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> Result<u64, BoxError> {
        self.status_kib("VmHWM:")
    }

    /// Resident set size now (VmRSS), in KiB.
    fn rss_kib(&self) -> Result<u64, BoxError> {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> Result<u64, BoxError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .ok_or_else(|| format!("no {field}"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| format!("bad {field}"))?
            .parse()?)
    }

    /// Closes stdin (the stop signal) and reads the counters it prints.
    fn stop(mut self) -> Result<HubCounters, BoxError> {
        drop(self.stdin.take());
        let (tx, rx) = std::sync::mpsc::channel();
        let mut stdout = self.stdout;
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = tx.send(stdout.read_line(&mut line).map(|_| line));
        });
        let line = match rx.recv_timeout(STOP_TIMEOUT) {
            Ok(l) => l?,
            Err(_) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(
                    format!("hub did not shut down within {} s", STOP_TIMEOUT.as_secs()).into(),
                );
            }
        };
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("hub exited with {status}").into());
        }
        let v: serde_json::Value = serde_json::from_str(line.trim())?;
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        Ok(HubCounters {
            batches: n("batches"),
            appended: n("appended"),
            largest_batch: n("largest_batch"),
            commit_nanos: n("commit_nanos"),
        })
    }
}

async fn bench(args: Args) -> ExitCode {
    if let Some(messages) = args.history {
        let history = history::HistoryArgs {
            messages,
            recipients: args.recipients.unwrap_or(1),
            body_bytes: args.body_bytes,
            publishers: args.publishers,
            batch: args.batch,
            in_flight: args.in_flight,
            fsync: !args.no_fsync,
        };
        return match history::run(&history).await {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("FAILED [history]: {e}");
                eprintln!("tongbao-bench: FAILED");
                ExitCode::FAILURE
            }
        };
    }
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
    for scenario in scenarios
        .iter()
        .filter(|s| args.recipients.is_none_or(|n| n == s.subscribers.len()))
    {
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

/// User + system CPU time of a process so far (`self` for this one), from
/// `/proc/<pid>/stat`.
fn cpu_of(pid: &str) -> Result<Duration, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("bad stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, BoxError> {
        Ok(fields.get(i).ok_or("short stat")?.parse::<f64>()?)
    };
    Ok(Duration::from_secs_f64(
        (ticks(11)? + ticks(12)?) / TICKS_PER_SEC,
    ))
}

fn per_sec(count: usize, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { count as f64 / s } else { 0.0 }
}

/// Round to 3 decimals for readable JSON.
fn r3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// p50/p90/p99/max in milliseconds.
fn spread(mut v: Vec<Duration>) -> serde_json::Value {
    v.sort_unstable();
    serde_json::json!({
        "p50": r3(millis(percentile(&v, 50.0))),
        "p90": r3(millis(percentile(&v, 90.0))),
        "p99": r3(millis(percentile(&v, 99.0))),
        "max": r3(millis(v.last().copied().unwrap_or_default())),
    })
}

fn spread_text(v: &serde_json::Value) -> String {
    let g = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    format!(
        "p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms",
        g("p50"),
        g("p90"),
        g("p99"),
        g("max")
    )
}

/// Per subscriber: how many entries it has acknowledged so far.
type Progress = Vec<Arc<AtomicUsize>>;

/// Waits until every subscriber acknowledged `count` entries; returns when
/// the last one got there, or None after the timeout.
async fn wait_acked(progress: &Progress, count: usize, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if progress.iter().all(|p| p.load(Ordering::Relaxed) >= count) {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn run(scenario: &Scenario, args: &Args) -> Result<Report, BoxError> {
    let pki = TestPki::generate()?;
    let hub = HubChild::start(&pki, !args.no_fsync)?;
    let connect = |unit: &str| {
        let cfg = pki.unit_config(unit, hub.addr);
        async move { Ok::<Client, BoxError>(Client::connect(&cfg?).await?) }
    };

    // Publishers: one connection each, units cycled.
    let mut publishers = Vec::with_capacity(args.publishers);
    let mut publisher_units = Vec::with_capacity(args.publishers);
    for i in 0..args.publishers {
        let unit = *scenario
            .publisher_units
            .get(i % scenario.publisher_units.len())
            .ok_or("no publisher units")?;
        publishers.push(connect(unit).await?);
        publisher_units.push(unit);
    }

    // Messages split evenly, then signed before anything is timed.
    let sign_started = Instant::now();
    let total = args.warmup + args.messages;
    let mut warm: Vec<Vec<pb::SignedMessage>> = Vec::with_capacity(publishers.len());
    let mut measured: Vec<Vec<pb::SignedMessage>> = Vec::with_capacity(publishers.len());
    let mut expected_ids: HashSet<String> = HashSet::with_capacity(total);
    let mut pushes_of: HashMap<String, usize> = HashMap::new();
    let share = |n: usize, p: usize| n / args.publishers + usize::from(p < n % args.publishers);
    for (p, (client, unit)) in publishers.iter().zip(&publisher_units).enumerate() {
        let (w, m) = (share(args.warmup, p), share(args.messages, p));
        let mut mine = Vec::with_capacity(w + m);
        for k in 0..w + m {
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
        *pushes_of.entry((*unit).to_string()).or_default() += w + m;
        measured.push(mine.split_off(w));
        warm.push(mine);
    }
    let sign_elapsed = sign_started.elapsed();
    let measured_count: usize = measured.iter().map(Vec::len).sum();
    let expected_ids = Arc::new(expected_ids);

    // Subscribers listen from the start of their inboxes.
    let (stop_tx, stop_rx) = watch::channel(false);
    let slow_now = Arc::new(AtomicBool::new(false));
    let mut progress: Progress = Vec::new();
    let mut subscriber_tasks = Vec::with_capacity(scenario.subscribers.len());
    for (i, unit) in scenario.subscribers.iter().enumerate() {
        let client = connect(unit).await?;
        let acked = Arc::new(AtomicUsize::new(0));
        progress.push(acked.clone());
        subscriber_tasks.push(tokio::spawn(subscriber(
            unit,
            client,
            total,
            expected_ids.clone(),
            stop_rx.clone(),
            acked,
            (args.slow && i == 0).then(|| slow_now.clone()),
        )));
    }

    let mut failures = Vec::new();
    let mut published = Published::default();
    // Warm-up: pushed, then fully acknowledged, before anything is measured.
    let warm_tasks: Vec<_> = publishers
        .iter()
        .cloned()
        .zip(warm)
        .map(|(c, m)| tokio::spawn(publish(c, m, args.in_flight, args.batch)))
        .collect();
    for t in warm_tasks {
        published.absorb(t.await?);
    }
    if published.errors.is_empty()
        && wait_acked(&progress, args.warmup, DRAIN_TIMEOUT)
            .await
            .is_none()
    {
        failures.push("warm-up was not acknowledged in time".to_string());
    }

    // Measured phase.
    slow_now.store(args.slow, Ordering::Relaxed);
    let cpu_before = hub.cpu()?;
    let own_cpu_before = cpu_of("self")?;
    let (audits_stop, audits_stopped) = watch::channel(false);
    let audits = if args.audit_during && scenario.subscribers.len() == 13 {
        let office = Client::connect(&pki.office_config("joint-enforcement", hub.addr)?).await?;
        Some(tokio::spawn(audits_meanwhile(office, audits_stopped)))
    } else {
        None
    };
    let started = Instant::now();
    let tasks: Vec<_> = publishers
        .iter()
        .cloned()
        .zip(measured)
        .enumerate()
        .map(|(p, (c, m))| match args.rate {
            // Publishers take turns: together they send evenly spaced
            // messages at `rate`, not bursts of P at once.
            Some(rate) => tokio::spawn(publish_at_rate(
                c,
                m,
                rate / args.publishers as f64,
                started + Duration::from_secs_f64(p as f64 / rate),
            )),
            None => tokio::spawn(publish(c, m, args.in_flight, args.batch)),
        })
        .collect();
    let mut timed = Published::default();
    for t in tasks {
        timed.absorb(t.await?);
    }
    let push_elapsed = timed
        .last_answer
        .unwrap_or(started)
        .saturating_duration_since(started);
    let peak_during_push = hub.peak_rss_kib()?;
    let _ = audits_stop.send(true);
    let audits_during = match audits {
        Some(task) => Some(task.await?),
        None => None,
    };
    slow_now.store(false, Ordering::Relaxed);

    // Drain: every recipient acknowledges everything.
    let all_acked = if timed.errors.is_empty() && failures.is_empty() {
        let t = wait_acked(&progress, total, DRAIN_TIMEOUT).await;
        if t.is_none() {
            failures.push(format!(
                "drain timeout: not every subscriber acknowledged every message {} s after the last push",
                DRAIN_TIMEOUT.as_secs()
            ));
        }
        t
    } else {
        None
    };
    let cpu_used = hub.cpu()?.saturating_sub(cpu_before);
    let own_cpu_used = cpu_of("self")?.saturating_sub(own_cpu_before);
    tokio::time::sleep(GRACE).await;
    let _ = stop_tx.send(true);
    let mut received = Vec::with_capacity(subscriber_tasks.len());
    for task in subscriber_tasks {
        received.push(task.await?);
    }
    let peak_rss_kib = hub.peak_rss_kib()?;
    let audit = if args.audit > 0 && scenario.subscribers.len() == 13 {
        Some(audit_calls(&pki, &hub, "joint-enforcement", args.audit).await?)
    } else {
        None
    };
    drop(publishers);
    let counters = match hub.stop() {
        Ok(c) => c,
        Err(e) => {
            failures.push(format!("hub shutdown failed: {e}"));
            HubCounters::default()
        }
    };

    // Correctness gate over warm-up and measured messages.
    let measured_keys: Vec<((String, u64), Instant)> =
        timed.sent_at.iter().map(|(k, t)| (k.clone(), *t)).collect();
    let push_latencies = std::mem::take(&mut timed.latencies);
    published.absorb(timed);
    let receipts_appended: u64 = received.iter().map(|r| r.receipts).sum();
    let appended = counters.appended.saturating_sub(receipts_appended);
    check_pushes(
        &published.receipts,
        &published.errors,
        &pushes_of,
        total,
        scenario.subscribers.len(),
        appended,
        &mut failures,
    );
    let pushed: HashSet<(String, u64)> = published
        .receipts
        .iter()
        .map(|r| (r.channel.clone(), r.seq))
        .collect();
    for r in &received {
        check_subscriber(r, &pushed, &mut failures);
        if r.newly_acknowledged != total as u64 {
            failures.push(format!(
                "subscriber {}: the hub counted {} new acknowledgements for {total} messages",
                r.unit, r.newly_acknowledged
            ));
        }
    }

    // Latencies of measured messages: to all N delivered, to all N acknowledged.
    let latest = |of: &dyn Fn(&Received) -> Option<Instant>| {
        received.iter().map(of).try_fold(None::<Instant>, |m, t| {
            t.map(|t| Some(m.map_or(t, |m: Instant| m.max(t))))
        })
    };
    let mut delivered_all = Vec::with_capacity(measured_keys.len());
    let mut acked_all = Vec::with_capacity(measured_keys.len());
    for (key, sent) in &measured_keys {
        if let Some(Some(t)) = latest(&|r| r.received_at.get(key).copied()) {
            delivered_all.push(t.saturating_duration_since(*sent));
        }
        if let Some(Some(t)) = latest(&|r| r.acked_at.get(key).copied()) {
            acked_all.push(t.saturating_duration_since(*sent));
        }
    }

    let ok = failures.is_empty();
    let pushes_per_sec = per_sec(measured_count, push_elapsed);
    let acked_elapsed = all_acked.map(|t| t.saturating_duration_since(started));
    let acked_per_sec = acked_elapsed.map(|d| per_sec(measured_count, d));
    let cpu_per_1000 = cpu_used.as_secs_f64() * 1000.0 / measured_count as f64;
    let own_cpu_per_1000 = own_cpu_used.as_secs_f64() * 1000.0 / measured_count as f64;
    let mean_batch = if counters.batches == 0 {
        0.0
    } else {
        counters.appended as f64 / counters.batches as f64
    };
    let mean_commit_ms = millis(Duration::from_nanos(
        counters
            .commit_nanos
            .checked_div(counters.batches)
            .unwrap_or(0),
    ));
    let push_spread = spread(push_latencies);
    let delivered_spread = spread(delivered_all);
    let acked_spread = spread(acked_all);
    let json = serde_json::json!({
        "scenario": scenario.name,
        "mode": if args.rate.is_some() { "fixed-rate" } else { "throughput" },
        "rate": args.rate,
        "messages": measured_count,
        "warmup": args.warmup,
        "publishers": args.publishers,
        "in_flight": args.in_flight,
        "body_bytes": args.body_bytes,
        "fsync": !args.no_fsync,
        "batch": args.batch,
        "recipients": scenario.subscribers.len(),
        "slow_subscriber": args.slow,
        "pushes_per_sec": r3(pushes_per_sec),
        "acknowledged_by_all_per_sec": acked_per_sec.map(r3),
        "push_ms": push_spread,
        "delivered_to_all_ms": delivered_spread,
        "acknowledged_by_all_ms": acked_spread,
        "hub_cpu_s_per_1000": r3(cpu_per_1000),
        "clients_cpu_s_per_1000": r3(own_cpu_per_1000),
        "hub_peak_rss_mib": r3(peak_rss_kib as f64 / 1024.0),
        "hub_peak_rss_mib_during_push": r3(peak_during_push as f64 / 1024.0),
        "mean_batch": r3(mean_batch),
        "largest_batch": counters.largest_batch,
        "mean_commit_ms": r3(mean_commit_ms),
        "sign_per_sec": r3(per_sec(total, sign_elapsed)),
        "audit": audit.as_ref().map(|a| &a.json),
        "audit_during": audits_during.as_ref().map(|a| &a.json),
        "ok": ok,
    });
    let summary = format!(
        "[{}] {} ({}{}): {measured_count} msgs (+{} warm-up), {} publishers, {} B bodies\n  push {:.0}/s over {:.2} s, confirmed {}\n  delivered to all {}\n  acknowledged by all {}, {}\n  hub CPU {:.3} s per 1000 msgs (clients {:.3}), peak RSS {:.1} MiB | {} flushes, mean {:.1}, largest {}, {:.2} ms each",
        if ok { "ok" } else { "FAIL" },
        scenario.name,
        match args.rate {
            Some(r) => format!("fixed rate {r}/s"),
            None => format!("throughput, {} in flight", args.in_flight),
        },
        if args.slow {
            ", one slow subscriber"
        } else {
            ""
        },
        args.warmup,
        args.publishers,
        args.body_bytes,
        pushes_per_sec,
        push_elapsed.as_secs_f64(),
        spread_text(&push_spread),
        spread_text(&delivered_spread),
        match (acked_per_sec, acked_elapsed) {
            (Some(r), Some(d)) => format!("{r:.0}/s over {:.2} s", d.as_secs_f64()),
            _ => "never".to_string(),
        },
        spread_text(&acked_spread),
        cpu_per_1000,
        own_cpu_per_1000,
        peak_rss_kib as f64 / 1024.0,
        counters.batches,
        mean_batch,
        counters.largest_batch,
        mean_commit_ms,
    );
    let summary = match &audit {
        Some(a) => format!("{summary}\n  {}", a.summary),
        None => summary,
    };
    let summary = match &audits_during {
        Some(a) => format!("{summary}\n  {}", a.summary),
        None => summary,
    };
    Ok(Report {
        json,
        summary,
        failures,
    })
}

/// What `--audit` measured.
struct AuditFigures {
    json: serde_json::Value,
    summary: String,
}

/// The office of `mechanism` asks `Audit.UnitSummary` over everything
/// `calls` times, one after the other.
async fn audit_calls(
    pki: &TestPki,
    hub: &HubChild,
    mechanism: &str,
    calls: usize,
) -> Result<AuditFigures, BoxError> {
    let office = Client::connect(&pki.office_config(mechanism, hub.addr)?).await?;
    let rss_before = hub.rss_kib()?;
    let mut times = Vec::with_capacity(calls);
    let mut outcome = String::new();
    for _ in 0..calls {
        let started = Instant::now();
        let answer = office.audit_units(pb::UnitSummaryRequest::default()).await;
        times.push(started.elapsed());
        outcome = match answer {
            Ok(s) => format!(
                "{} entries sent",
                s.units.iter().map(|u| u.sent).sum::<u64>()
            ),
            Err(e) => format!("refused: {e}"),
        };
    }
    let rss_after = hub.rss_kib()?;
    let peak = hub.peak_rss_kib()?;
    let ms: Vec<String> = times.iter().map(|t| format!("{:.0}", millis(*t))).collect();
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(AuditFigures {
        json: serde_json::json!({
            "calls": calls,
            "call_ms": times.iter().map(|t| r3(millis(*t))).collect::<Vec<_>>(),
            "outcome": outcome,
            "hub_rss_mib_before": r3(mib(rss_before)),
            "hub_rss_mib_after": r3(mib(rss_after)),
            "hub_peak_rss_mib": r3(mib(peak)),
        }),
        summary: format!(
            "audit: {calls} x UnitSummary ({outcome}): {} ms; hub RSS {:.0} -> {:.0} MiB, peak {:.0} MiB",
            ms.join(", "),
            mib(rss_before),
            mib(rss_after),
            mib(peak)
        ),
    })
}

/// `Audit.UnitSummary` over everything, call after call, until `stop`:
/// the heavy query `--audit-during` runs beside the measured pushes.
async fn audits_meanwhile(office: Client, mut stop: watch::Receiver<bool>) -> AuditFigures {
    let mut times = Vec::new();
    let mut refused = 0usize;
    let mut last_refusal = String::new();
    while !*stop.borrow() {
        let started = Instant::now();
        let answer = tokio::select! {
            a = office.audit_units(pb::UnitSummaryRequest::default()) => a,
            _ = stop.changed() => break,
        };
        times.push(started.elapsed());
        if let Err(e) = answer {
            refused += 1;
            last_refusal = e.to_string();
        }
    }
    let spread = spread(times.clone());
    AuditFigures {
        json: serde_json::json!({
            "calls": times.len(),
            "refused": refused,
            "call_ms": spread,
        }),
        summary: format!(
            "audits during the pushes: {} x UnitSummary ({refused} refused{}), each {}",
            times.len(),
            if refused > 0 {
                format!(": {last_refusal}")
            } else {
                String::new()
            },
            spread_text(&spread)
        ),
    }
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
        ..Published::default()
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
        for r in results {
            out.record(sent, answered, r);
        }
    }
    out
}

impl Published {
    fn record(&mut self, sent: Instant, answered: Instant, r: Result<PushReceipt, String>) {
        self.last_answer = Some(self.last_answer.map_or(answered, |t| t.max(answered)));
        self.latencies
            .push(answered.saturating_duration_since(sent));
        match r {
            Ok(receipt) => {
                self.sent_at
                    .insert((receipt.channel.clone(), receipt.seq), sent);
                self.receipts.push(receipt);
            }
            Err(e) => self.errors.push(e),
        }
    }
}

/// Pushes message i at `start + i / rate`, whatever happened to earlier
/// ones (open loop); latency counts from that scheduled time. A thread of
/// its own keeps the schedule: tokio's timer rounds every deadline up to
/// the next millisecond, which added about 1 ms of the bench's own to
/// every figure.
async fn publish_at_rate(
    client: Client,
    messages: Vec<pb::SignedMessage>,
    rate: f64,
    start: Instant,
) -> Published {
    let mut out = Published::default();
    let (due, mut fire) = mpsc::unbounded_channel();
    let count = messages.len();
    let ticker = std::thread::Builder::new()
        .name("bench-schedule".into())
        .spawn(move || {
            for (i, m) in messages.into_iter().enumerate() {
                let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if due.send((scheduled, m)).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = ticker {
        out.errors
            .push(format!("cannot start the schedule thread: {e}"));
        return out;
    }
    let mut pushes = Vec::with_capacity(count);
    while let Some((scheduled, m)) = fire.recv().await {
        let client = client.clone();
        pushes.push(tokio::spawn(async move {
            let r = client.push_signed(m).await.map_err(|e| e.to_string());
            (scheduled, Instant::now(), r)
        }));
    }
    for p in pushes {
        match p.await {
            Ok((scheduled, answered, r)) => out.record(scheduled, answered, r),
            Err(e) => out.errors.push(format!("push task failed: {e}")),
        }
    }
    out
}

/// Most entries one receipt covers.
const ACK_BATCH: usize = 256;
/// How long a partial batch waits for more entries before it is sent.
const ACK_LINGER: Duration = Duration::from_millis(20);

/// What one subscriber's receipts achieved.
#[derive(Default)]
struct Acked {
    acked_at: HashMap<(String, u64), Instant>,
    newly_acknowledged: u64,
    receipts: u64,
    error: Option<String>,
}

/// Sends one receipt per batch of pins it is handed, in order, and records
/// when each entry was acknowledged. Runs beside the subscriber, as a
/// departmental system would, so that reading the inbox never waits for a
/// receipt to be answered.
async fn acknowledge(
    client: Client,
    mut batches: mpsc::Receiver<Vec<pb::EntryPin>>,
    progress: Arc<AtomicUsize>,
) -> Acked {
    let mut a = Acked::default();
    while let Some(pins) = batches.recv().await {
        let outcome = match client.ack_pins(pins.clone()).await {
            Ok(o) => o,
            Err(e) => {
                a.error = Some(format!("acknowledge failed: {e}"));
                break;
            }
        };
        let now = Instant::now();
        a.newly_acknowledged += u64::from(outcome.newly_acknowledged);
        a.receipts += u64::from(outcome.receipt.is_some());
        a.acked_at
            .extend(pins.into_iter().map(|p| ((p.channel, p.seq), now)));
        progress.store(a.acked_at.len(), Ordering::Relaxed);
    }
    a
}

/// Reads one unit's inbox until stopped, recording and acknowledging every
/// (channel, seq). While `slow` is set, dawdles over each entry.
async fn subscriber(
    unit: &'static str,
    client: Client,
    expected: usize,
    ids: Arc<HashSet<String>>,
    mut stop: watch::Receiver<bool>,
    progress: Arc<AtomicUsize>,
    slow: Option<Arc<AtomicBool>>,
) -> Received {
    let mut r = Received::new(unit, expected);
    let mut inbox = Box::pin(client.subscribe(0));
    let (ack_tx, ack_rx) = mpsc::channel::<Vec<pb::EntryPin>>(1024);
    let acker = tokio::spawn(acknowledge(client.clone(), ack_rx, progress));
    let mut pending: Vec<pb::EntryPin> = Vec::new();
    // A partial receipt goes out ACK_LINGER after its first entry arrived.
    let mut first_pending = Instant::now();
    loop {
        let linger = if pending.is_empty() {
            Duration::from_secs(3600)
        } else {
            ACK_LINGER.saturating_sub(first_pending.elapsed())
        };
        let next: Option<Result<tongbao_client::VerifiedEntry, ClientError>> = tokio::select! {
            n = inbox.next() => n,
            _ = tokio::time::sleep(linger) => {
                if ack_tx.send(std::mem::take(&mut pending)).await.is_err() {
                    break; // the acknowledger stopped: its error says why
                }
                continue;
            }
            _ = stop.changed() => break,
        };
        match next {
            Some(Ok(entry)) => {
                r.arrived(entry.channel(), entry.seq());
                if pending.is_empty() {
                    first_pending = Instant::now();
                }
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
                if pending.len() >= ACK_BATCH
                    && ack_tx.send(std::mem::take(&mut pending)).await.is_err()
                {
                    break; // the acknowledger stopped: its error says why
                }
                if slow.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                    tokio::time::sleep(SLOW_PER_ENTRY).await;
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
    drop(ack_tx);
    match acker.await {
        Ok(a) => {
            r.acked_at = a.acked_at;
            r.newly_acknowledged = a.newly_acknowledged;
            r.receipts = a.receipts;
            if r.error.is_none() {
                r.error = a.error;
            }
        }
        Err(e) => r.error = r.error.take().or(Some(format!("acknowledger failed: {e}"))),
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
    let mut missing: Vec<&(String, u64)> = pushed
        .iter()
        .filter(|k| !r.received_at.contains_key(*k))
        .collect();
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
    let unexpected = r
        .received_at
        .keys()
        .filter(|k| !pushed.contains(*k))
        .count();
    if unexpected > 0 {
        failures.push(format!(
            "subscriber {}: {unexpected} delivered entries match no push receipt",
            r.unit
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(keys: &[(&str, u64)]) -> HashSet<(String, u64)> {
        keys.iter().map(|(c, s)| (c.to_string(), *s)).collect()
    }

    fn failures_of(r: &Received, pushed: &HashSet<(String, u64)>) -> Vec<String> {
        let mut failures = Vec::new();
        check_subscriber(r, pushed, &mut failures);
        failures
    }

    #[test]
    fn the_gate_passes_exactly_once_and_fails_everything_else() {
        let all = pushed(&[("tax", 0), ("tax", 1), ("finance", 0)]);
        let mut r = Received::new("civil-affairs", 3);
        r.arrived("tax", 0);
        r.arrived("tax", 1);
        r.arrived("finance", 0);
        assert_eq!(failures_of(&r, &all), Vec::<String>::new());

        r.arrived("tax", 1);
        let f = failures_of(&r, &all);
        assert!(
            f.len() == 1 && f[0].contains("1 entries delivered more than once"),
            "{f:?}"
        );

        let mut r = Received::new("civil-affairs", 3);
        r.arrived("tax", 0);
        r.arrived("finance", 0);
        r.arrived("finance", 7);
        let f = failures_of(&r, &all);
        assert!(
            f.iter().any(|m| m.contains("1 of 3 messages missing")),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|m| m.contains("1 delivered entries match no push receipt")),
            "{f:?}"
        );
    }
}
