//! The figures of one scenario run, as one line of JSON on stdout (the
//! keys scripts read) and a readable summary on stderr.

use crate::args::Args;
use crate::audit::AuditFigures;
use crate::hub::HubCounters;
use crate::latency::{millis, per_sec, r3, spread, spread_text};
use crate::scenario::Scenario;
use crate::store::PgCounts;
use std::time::Duration;

/// Figures of one scenario.
pub struct Report {
    pub json: serde_json::Value,
    pub summary: String,
    pub failures: Vec<String>,
}

/// What one run measured, for its report.
pub struct Measured {
    /// Messages of the measured phase.
    pub measured_count: usize,
    /// Messages of warm-up and measured phase.
    pub total: usize,
    /// From the start of the measured phase to its last push answered.
    pub push_elapsed: Duration,
    /// From the start of the measured phase until all acknowledged all.
    pub acked_elapsed: Option<Duration>,
    pub cpu_used: Duration,
    pub own_cpu_used: Duration,
    pub counters: HubCounters,
    pub push_latencies: Vec<Duration>,
    pub delivered_all: Vec<Duration>,
    pub acked_all: Vec<Duration>,
    pub peak_rss_kib: u64,
    pub peak_during_push: u64,
    pub sign_elapsed: Duration,
    pub audit: Option<AuditFigures>,
    pub audits_during: Option<AuditFigures>,
    /// The database server's counts over the whole run (PostgreSQL).
    pub pg: Option<PgCounts>,
}

/// The report of `scenario` run with `args`.
pub fn build(scenario: &Scenario, args: &Args, m: Measured, failures: Vec<String>) -> Report {
    let Measured {
        measured_count,
        total,
        push_elapsed,
        acked_elapsed,
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
    } = m;
    let ok = failures.is_empty();
    let pushes_per_sec = per_sec(measured_count, push_elapsed);
    let acked_per_sec = acked_elapsed.map(|d| per_sec(measured_count, d));
    let cpu_per_1000 = cpu_used.as_secs_f64() * 1000.0 / measured_count as f64;
    let own_cpu_per_1000 = own_cpu_used.as_secs_f64() * 1000.0 / measured_count as f64;
    let mean_batch = mean(counters.appended, counters.batches);
    let mean_commit_ms = mean_ms(counters.commit_nanos, counters.batches);
    let access_records_per_round = mean(counters.access_records, counters.access_rounds);
    let access_round_ms = mean_ms(counters.access_nanos, counters.access_rounds);
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
        "store": args.store.name(),
        "replicas": args.replicas,
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
        "access_log_rounds": counters.access_rounds,
        "access_log_waited_rounds": counters.access_waited,
        "access_log_records_per_round": r3(access_records_per_round),
        "access_log_round_ms": r3(access_round_ms),
        "sign_per_sec": r3(per_sec(total, sign_elapsed)),
        "pg": pg.map(|c| pg_json(&c, total)),
        "audit": audit.as_ref().map(|a| &a.json),
        "audit_during": audits_during.as_ref().map(|a| &a.json),
        "ok": ok,
    });
    let summary = format!(
        "[{}] {} ({}{}, {}): {measured_count} msgs (+{} warm-up), {} publishers, {} B bodies\n  push {:.0}/s over {:.2} s, confirmed {}\n  delivered to all {}\n  acknowledged by all {}, {}\n  hub CPU {:.3} s per 1000 msgs (clients {:.3}), peak RSS {:.1} MiB | {} flushes, mean {:.1}, largest {}, {:.2} ms each\n  access log: {} rounds ({} waited on), mean {:.1} records, {:.2} ms each",
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
        args.store.name(),
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
        counters.access_rounds,
        counters.access_waited,
        access_records_per_round,
        access_round_ms,
    );
    let summary = match pg {
        Some(c) => format!(
            "{summary}\n  PostgreSQL ({} hub{}): {:.0} commits and {:.0} WAL flushes per 1000 msgs, {} rollbacks",
            args.replicas,
            if args.replicas == 1 { "" } else { "s" },
            per_1000(c.commits, total),
            per_1000(c.wal_syncs, total),
            c.rollbacks
        ),
        None => summary,
    };
    let summary = match &audit {
        Some(a) => format!("{summary}\n  {}", a.summary),
        None => summary,
    };
    let summary = match &audits_during {
        Some(a) => format!("{summary}\n  {}", a.summary),
        None => summary,
    };
    Report {
        json,
        summary,
        failures,
    }
}

/// `total` per one of `count` (0 when there were none).
fn mean(total: u64, count: u64) -> f64 {
    match count {
        0 => 0.0,
        n => total as f64 / n as f64,
    }
}

/// Mean ms of `count` spans that took `nanos` in all (0 when none).
fn mean_ms(nanos: u64, count: u64) -> f64 {
    millis(Duration::from_nanos(nanos.checked_div(count).unwrap_or(0)))
}

/// `n` per 1,000 of `messages`.
fn per_1000(n: i64, messages: usize) -> f64 {
    n as f64 * 1000.0 / messages.max(1) as f64
}

/// The database's counts per 1,000 messages pushed (warm-up included:
/// the counts cover the whole run, receipts' commits too).
fn pg_json(c: &PgCounts, messages: usize) -> serde_json::Value {
    serde_json::json!({
        "commits_per_1000": r3(per_1000(c.commits, messages)),
        "wal_syncs_per_1000": r3(per_1000(c.wal_syncs, messages)),
        "rollbacks": c.rollbacks,
    })
}
