//! One scenario run: a fresh PKI, store and hub; publishers and
//! subscribers connected; messages signed before anything is timed; then
//! warm-up, the measured phase and the drain, and the gate over it all.

use crate::args::Args;
use crate::audit::{audit_calls, audits_meanwhile};
use crate::fanout::{Progress, subscriber, wait_acked};
use crate::gate::{check_pushes, check_receivers};
use crate::hub::{HubCounters, cpu_of};
use crate::latency::to_all;
use crate::publish::{Published, publish, publish_at_rate};
use crate::replicas::Hubs;
use crate::report::{self, Measured, Report};
use crate::store::Fresh;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tongbao_client::{Client, Draft};
use tongbao_proto::pb::{self, Kind};
use tongbao_tests::BoxError;

/// How long subscribers may take to acknowledge everything once pushes end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Entries a second a subscriber catching up is given on top of that: a
/// slow one (`--slow`) lags by nearly every message, so a long run drains
/// for longer.
const CATCH_UP_PER_SEC: u64 = 5_000;

/// The drain's deadline for `count` messages: one that only catches a hang.
fn drain_timeout(count: usize) -> Duration {
    DRAIN_TIMEOUT + Duration::from_secs(count as u64 / CATCH_UP_PER_SEC)
}
/// How long subscribers keep listening after they have everything, to catch
/// duplicates delivered late.
const GRACE: Duration = Duration::from_millis(300);

/// Publishers of the 1-recipient scenario, in order of use.
pub const SINGLE_PUBLISHERS: &[&str] = &[
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
pub const MECHANISM_PUBLISHERS: &[&str] = &["finance", "pbc-taiyuan"];

/// One scenario to run.
pub struct Scenario {
    pub name: &'static str,
    /// Units to publish as, cycled if there are more publishers.
    pub publisher_units: &'static [&'static str],
    pub subscribers: Vec<&'static str>,
    pub audience: fn(Draft) -> Draft,
}

pub fn to_civil_affairs(d: Draft) -> Draft {
    d.to_units(["civil-affairs"])
}

pub fn to_joint_enforcement(d: Draft) -> Draft {
    d.to_mechanism("joint-enforcement")
}

/// A body of `len` bytes of readable filler.
pub fn body(len: usize, n: usize) -> Vec<u8> {
    let seed = format!("message {n} ");
    seed.bytes().cycle().take(len).collect()
}

pub async fn run(scenario: &Scenario, args: &Args) -> Result<Report, BoxError> {
    let fresh = Fresh::new(&args.store)?;
    let wal_before = fresh.wal_syncs()?.unwrap_or(0);
    let pki = &fresh.pki;
    let hubs = Hubs::start(pki, !args.no_fsync, args.replicas)?;
    let hub = &hubs.leader;
    let connect = |unit: &str| {
        let cfg = hubs.unit_config(pki, unit);
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
    let cpu_before = hubs.cpu()?;
    let own_cpu_before = cpu_of("self")?;
    let (audits_stop, audits_stopped) = watch::channel(false);
    let audits = if args.audit_during && scenario.subscribers.len() == 13 {
        let office = Client::connect(&hubs.office_config(pki, "joint-enforcement")?).await?;
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
        let deadline = drain_timeout(total);
        let t = wait_acked(&progress, total, deadline).await;
        if t.is_none() {
            failures.push(format!(
                "drain timeout: not every subscriber acknowledged every message {} s after the last push",
                deadline.as_secs()
            ));
        }
        t
    } else {
        None
    };
    let cpu_used = hubs.cpu()?.saturating_sub(cpu_before);
    let own_cpu_used = cpu_of("self")?.saturating_sub(own_cpu_before);
    tokio::time::sleep(GRACE).await;
    let _ = stop_tx.send(true);
    let mut received = Vec::with_capacity(subscriber_tasks.len());
    for task in subscriber_tasks {
        received.push(task.await?);
    }
    let peak_rss_kib = hub.peak_rss_kib()?;
    let audit = if args.audit > 0 && scenario.subscribers.len() == 13 {
        Some(audit_calls(pki, hub, "joint-enforcement", args.audit, 0).await?)
    } else {
        None
    };
    drop(publishers);
    let counters = match hubs.stop() {
        Ok(c) => c,
        Err(e) => {
            failures.push(format!("hub shutdown failed: {e}"));
            HubCounters::default()
        }
    };

    let pg = fresh.pg_counts()?.map(|mut c| {
        c.wal_syncs -= wal_before;
        c
    });

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
    check_receivers(&received, &published.receipts, total, &mut failures);
    let (delivered_all, acked_all) = to_all(&received, &measured_keys);

    let measured = Measured {
        measured_count,
        total,
        push_elapsed,
        acked_elapsed: all_acked.map(|t| t.saturating_duration_since(started)),
        cpu_used,
        own_cpu_used,
        counters,
        push_latencies,
        delivered_all,
        acked_all,
        peak_rss_kib,
        peak_during_push,
        sign_elapsed,
        audit,
        audits_during,
        pg,
    };
    Ok(report::build(scenario, args, measured, failures))
}
