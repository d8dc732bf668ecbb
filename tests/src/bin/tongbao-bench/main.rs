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
//! With `--store postgres`, each scenario's hub keeps its data in a fresh
//! PostgreSQL database (on the server `--pg-url` or `TONGBAO_TEST_PG_URL`
//! names, dropped after the run); the JSON's `store` says which, and its
//! `pg` the database server's counts over the run (commits and WAL
//! flushes per 1,000 messages, which do not depend on the machine's load).
//! `--replicas N` (PostgreSQL only) starts N hub processes on that
//! database, as `[store] replica = true` replicas: the first leads, the
//! others wait as standbys, and every client lists them all; the JSON's
//! `replicas` says how many, and hub CPU is all of theirs.
//!
//! With `--kill-leader` (and `--store postgres --replicas 2` or more), no
//! exchange is measured: one unit pushes at a steady rate (`--rate`,
//! default 50 a second) and the leader is killed (SIGKILL) halfway
//! through; the JSON gives the takeover time (from the kill to the first
//! push acknowledged by the new leader) and the pushes that failed
//! meanwhile, and the gate checks that no acknowledged push was lost or
//! landed twice (see `takeover`).
//!
//! One concern per module: `args` (flags), `hub` (the hub process),
//! `store` (its sled directory or PostgreSQL database), `replicas` (the
//! run's hub processes), `scenario` (one
//! run's phases), `publish` (pushes), `fanout` (subscribers and their
//! receipts), `gate` (the exactly-once checks), `latency` (percentiles),
//! `report` (JSON and summary), `audit` (`--audit`, `--audit-during`),
//! `history` (`--history`), `takeover` (`--kill-leader`).
//!
//! ```text
//! tongbao-bench [--short] [--messages N] [--warmup N] [--publishers P] [--in-flight W]
//!               [--body-bytes B] [--batch B] [--rate R] [--recipients 1|13] [--slow] [--no-fsync]
//!               [--audit N] [--audit-during] [--history N] [--store sled|postgres] [--pg-url URL]
//!               [--replicas N] [--kill-leader]
//! ```
#![forbid(unsafe_code)]

mod args;
mod audit;
mod fanout;
mod gate;
mod history;
mod hub;
mod latency;
mod publish;
mod replicas;
mod report;
mod scenario;
mod store;
mod takeover;
mod times;

use args::Args;
use scenario::{MECHANISM_PUBLISHERS, SINGLE_PUBLISHERS, Scenario};
use std::process::ExitCode;
use tongbao_tests::members_of;

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--serve-hub") {
        return hub::serve_hub(&argv[1..]);
    }
    let args = match args::parse_args(&argv) {
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

async fn bench(args: Args) -> ExitCode {
    if let Some(messages) = args.history {
        return history_bench(&args, messages).await;
    }
    if args.kill_leader {
        return takeover_bench(&args).await;
    }
    let scenarios = [
        Scenario {
            name: "1 recipient",
            publisher_units: SINGLE_PUBLISHERS,
            subscribers: vec!["civil-affairs"],
            audience: scenario::to_civil_affairs,
        },
        Scenario {
            name: "13 recipients",
            publisher_units: MECHANISM_PUBLISHERS,
            subscribers: members_of("joint-enforcement"),
            audience: scenario::to_joint_enforcement,
        },
    ];
    let mut failed = false;
    for scenario in scenarios
        .iter()
        .filter(|s| args.recipients.is_none_or(|n| n == s.subscribers.len()))
    {
        match scenario::run(scenario, &args).await {
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
    finish(failed)
}

/// `--history N`: fills a store and measures what grows with it.
async fn history_bench(args: &Args, messages: usize) -> ExitCode {
    let history = history::HistoryArgs {
        messages,
        recipients: args.recipients.unwrap_or(1),
        body_bytes: args.body_bytes,
        publishers: args.publishers,
        batch: args.batch,
        in_flight: args.in_flight,
        fsync: !args.no_fsync,
    };
    match history::run(&history).await {
        Ok(report) => {
            println!("{report}");
            finish(false)
        }
        Err(e) => {
            eprintln!("FAILED [history]: {e}");
            finish(true)
        }
    }
}

/// `--kill-leader`: the takeover time under a steady push rate.
async fn takeover_bench(args: &Args) -> ExitCode {
    match takeover::run(args).await {
        Ok((json, failures)) => {
            println!("{json}");
            for f in &failures {
                eprintln!("  FAILED [takeover]: {f}");
            }
            finish(!failures.is_empty())
        }
        Err(e) => {
            eprintln!("FAILED [takeover]: {e}");
            finish(true)
        }
    }
}

fn finish(failed: bool) -> ExitCode {
    if failed {
        eprintln!("tongbao-bench: FAILED");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
