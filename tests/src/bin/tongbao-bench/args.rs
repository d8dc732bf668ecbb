//! The bench's flags: one place that knows them, their defaults and the
//! combinations refused before anything starts.

use crate::store::StoreChoice;

pub const USAGE: &str = "usage: tongbao-bench [--short] [--messages N] [--warmup N] [--publishers P] [--in-flight W] [--body-bytes B] [--batch B] [--rate R] [--recipients 1|13] [--slow] [--no-fsync] [--audit N] [--audit-during] [--history N] [--store sled|postgres] [--pg-url URL] [--replicas N] [--kill-leader]";

#[derive(Debug, Clone)]
pub struct Args {
    pub messages: usize,
    pub warmup: usize,
    pub publishers: usize,
    pub in_flight: usize,
    pub body_bytes: usize,
    /// Skip the fsync after each group commit, to measure what it costs.
    pub no_fsync: bool,
    /// Messages per push call (1 = Push, more = PushBatch).
    pub batch: usize,
    /// Fixed-rate mode: messages per second over all publishers.
    pub rate: Option<f64>,
    /// Only the scenario with this many recipients.
    pub recipients: Option<usize>,
    /// One of the 13 subscribers lags during the measured phase.
    pub slow: bool,
    /// `Audit.UnitSummary` calls over everything once acknowledged.
    pub audit: usize,
    /// `Audit.UnitSummary` calls back to back during the measured phase.
    pub audit_during: bool,
    /// Fill a store with this many messages and measure history's costs.
    pub history: Option<usize>,
    /// Where the hub keeps its data.
    pub store: StoreChoice,
    /// Hub processes on the one database (PostgreSQL): one leads, the
    /// others wait as standbys, and every client lists them all.
    pub replicas: usize,
    /// Takeover time: the leader is killed (SIGKILL) halfway through a
    /// steady push rate (`takeover`).
    pub kill_leader: bool,
}

/// The push rate of `--kill-leader` without `--rate`: pushes a second.
pub const TAKEOVER_RATE: f64 = 50.0;

/// Most hub replicas a run starts (each a process on the same 2 cores).
pub const MAX_REPLICAS: usize = 5;

pub fn parse_args(args: &[String]) -> Result<Args, String> {
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
    let mut store = None;
    let mut pg_url = None;
    let mut replicas = 1;
    let mut kill_leader = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if text_flag(arg, &mut it, &mut store, &mut pg_url)? {
            continue;
        }
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
            "--kill-leader" => kill_leader = true,
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
            "--replicas" => replicas = value("--replicas")?,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let messages = messages.unwrap_or(match (short, rate) {
        // A takeover: 10 s of pushes on each side of the kill.
        _ if kill_leader => (rate.unwrap_or(TAKEOVER_RATE) as usize * 20).max(2),
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
    let store = StoreChoice::from_flags(store.as_deref(), pg_url)?;
    if history.is_some() && store != StoreChoice::Sled {
        return Err(format!(
            "--history measures the sled data directory; it does not run with --store postgres\n{USAGE}"
        ));
    }
    if !(1..=MAX_REPLICAS).contains(&replicas) {
        return Err(format!(
            "--replicas {replicas}: from 1 to {MAX_REPLICAS} hub processes\n{USAGE}"
        ));
    }
    if replicas > 1 && (store == StoreChoice::Sled || history.is_some()) {
        return Err(format!(
            "--replicas {replicas}: replicas share one PostgreSQL database; give --store postgres (and no --history)\n{USAGE}"
        ));
    }
    if kill_leader && (replicas < 2 || history.is_some()) {
        return Err(format!(
            "--kill-leader: a takeover needs --store postgres --replicas 2 (or more)\n{USAGE}"
        ));
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
        store,
        replicas,
        kill_leader,
    })
}

/// The flags that take text (`--store`, `--pg-url`): true when `arg` was
/// one of them and its value was taken.
fn text_flag<'a>(
    arg: &str,
    it: &mut impl Iterator<Item = &'a String>,
    store: &mut Option<String>,
    pg_url: &mut Option<String>,
) -> Result<bool, String> {
    let slot = match arg {
        "--store" => store,
        "--pg-url" => pg_url,
        _ => return Ok(false),
    };
    let v = it
        .next()
        .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
    *slot = Some(v.clone());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_store_is_sled_unless_postgres_is_asked_for_with_a_server() {
        assert_eq!(parse(&["--short"]).map(|a| a.store), Ok(StoreChoice::Sled));
        let pg = parse(&["--store", "postgres", "--pg-url", "host=/tmp/x"]).map(|a| a.store);
        assert_eq!(
            pg,
            Ok(StoreChoice::Postgres {
                server: "host=/tmp/x".into()
            })
        );
        let e = parse(&["--store", "oracle"]).err().unwrap_or_default();
        assert!(e.contains("the stores are sled and postgres"), "{e}");
        let e = parse(&["--pg-url", "host=/tmp/x"])
            .err()
            .unwrap_or_default();
        assert!(e.contains("--pg-url goes with --store postgres"), "{e}");
        let e = parse(&["--store"]).err().unwrap_or_default();
        assert!(e.contains("--store needs a value"), "{e}");
        let e = parse(&[
            "--history",
            "10",
            "--store",
            "postgres",
            "--pg-url",
            "host=/tmp/x",
        ])
        .err()
        .unwrap_or_default();
        assert!(e.contains("--history"), "{e}");
    }

    #[test]
    fn replicas_need_postgres_and_a_bound() {
        let pg = ["--store", "postgres", "--pg-url", "host=/tmp/x"];
        assert_eq!(parse(&pg).map(|a| a.replicas), Ok(1));
        let two = parse(&[&pg[..], &["--replicas", "2"]].concat()).map(|a| a.replicas);
        assert_eq!(two, Ok(2));
        let e = parse(&["--short", "--replicas", "2"])
            .err()
            .unwrap_or_default();
        assert!(e.contains("give --store postgres"), "{e}");
        for n in ["0", "6"] {
            let e = parse(&[&pg[..], &["--replicas", n]].concat())
                .err()
                .unwrap_or_default();
            assert!(e.contains("from 1 to 5"), "{n}: {e}");
        }
    }

    #[test]
    fn a_takeover_needs_a_standby() {
        let pg = ["--store", "postgres", "--pg-url", "host=/tmp/x"];
        let two = parse(&[&pg[..], &["--replicas", "2", "--kill-leader"]].concat());
        assert_eq!(two.map(|a| a.kill_leader), Ok(true));
        let e = parse(&[&pg[..], &["--kill-leader"]].concat())
            .err()
            .unwrap_or_default();
        assert!(e.contains("--replicas 2"), "{e}");
    }
}
