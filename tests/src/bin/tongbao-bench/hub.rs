//! The hub a run measures, in a process of its own (this binary with
//! `--serve-hub`), so that its CPU time and memory are read from
//! `/proc/<pid>` apart from the clients'. A replica (`--replica NAME`,
//! PostgreSQL only) is such a process too: it leads at once if the
//! database's lease is free, else waits as a standby, as `tongbao-hub
//! serve` does (`replicas` starts the set).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tongbao_server::{Hub, HubConfig, replica};
use tongbao_tests::{BoxError, TestPki};

/// How long the hub process may take to shut down.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Linux reports process CPU time in ticks of 1/100 s (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// Group-commit and access-log counters the hub process prints when it
/// stops.
#[derive(Default)]
pub struct HubCounters {
    pub batches: u64,
    pub appended: u64,
    pub largest_batch: u64,
    pub commit_nanos: u64,
    pub access_rounds: u64,
    /// Access-log rounds a write's answer waited on.
    pub access_waited: u64,
    pub access_records: u64,
    pub access_nanos: u64,
}

/// The value after flag `name` in `args`, if given.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The hub side: `--serve-hub <hub.toml> [--no-fsync] [--log FILTER]
/// [--replica NAME --listen ADDR]`. Prints its address once it serves
/// (a standby first says so), serves until stdin closes, then prints its
/// group-commit counters.
pub fn serve_hub(args: &[String]) -> ExitCode {
    let Some(config_path) = args.first() else {
        eprintln!("--serve-hub needs a hub.toml");
        return ExitCode::from(2);
    };
    let fsync = !args.iter().any(|a| a == "--no-fsync");
    // `--log FILTER`: the hub's log to stderr (none otherwise).
    if let Some(filter) = flag(args, "--log") {
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
                if let Some(name) = flag(args, "--replica") {
                    as_replica(&mut config, name, flag(args, "--listen"))?;
                }
                // Stdin's end is the stop, for a standby as for a hub.
                let (closed_tx, closed) = tokio::sync::watch::channel(false);
                tokio::task::spawn_blocking(move || {
                    let _ = std::io::stdin().read_to_end(&mut Vec::new());
                    let _ = closed_tx.send(true);
                });
                let stop = {
                    let mut closed = closed.clone();
                    async move {
                        let _ = closed.wait_for(|c| *c).await;
                    }
                };
                let hub = match config.store.replica_database()? {
                    Some(database) => {
                        match replica::standby(&mut config, &database, stop, &mut None).await? {
                            Some(lease) => Hub::start_holding(&config, Some(lease)).await?,
                            None => {
                                // Stopped while a standby: nothing committed.
                                println!("{}", serde_json::json!({}));
                                return Ok(());
                            }
                        }
                    }
                    None => Hub::start(&config).await?,
                };
                println!("listening {}", hub.addr());
                std::io::stdout().flush()?;
                let _ = closed.clone().wait_for(|c| *c).await;
                let s = hub.stats();
                let access = hub.access_log_rounds();
                hub.shutdown().await?;
                println!(
                    "{}",
                    serde_json::json!({
                        "batches": s.batches.load(Ordering::Relaxed),
                        "appended": s.appended.load(Ordering::Relaxed),
                        "largest_batch": s.largest_batch.load(Ordering::Relaxed),
                        "commit_nanos": s.commit_nanos.load(Ordering::Relaxed),
                        "access_rounds": access.rounds,
                        "access_waited": access.waited,
                        "access_records": access.records,
                        "access_nanos": access.nanos,
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

/// Makes `config` replica `name`'s: a data directory of its own beside
/// the shared one (its access log), and the address it serves on once it
/// leads (chosen before it starts, so that clients can list it).
fn as_replica(config: &mut HubConfig, name: &str, listen: Option<&str>) -> Result<(), BoxError> {
    config.store.replica = true;
    config.store.replica_name = Some(name.to_string());
    config.store.validate()?;
    let shared = config.hub.data_dir.clone();
    config.hub.data_dir = shared.with_file_name(name);
    if let Some(listen) = listen {
        config.hub.listen = listen.parse()?;
    }
    Ok(())
}

/// The hub process of one scenario.
pub struct HubChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub addr: std::net::SocketAddr,
}

impl HubChild {
    pub fn start(pki: &TestPki, fsync: bool) -> Result<Self, BoxError> {
        Self::start_logging(pki, fsync, None)
    }

    /// Starts with the hub's log, filtered by `log`, on stderr.
    pub fn start_logging(pki: &TestPki, fsync: bool, log: Option<&str>) -> Result<Self, BoxError> {
        let (hub, leads) = Self::spawn(pki, fsync, log, None)?;
        match leads {
            true => Ok(hub),
            false => Err("the hub waits as a standby, not being a replica".into()),
        }
    }

    /// Starts replica `name`, to serve on `listen` once it leads; whether
    /// it leads (else it waits as a standby).
    pub fn start_replica(
        pki: &TestPki,
        fsync: bool,
        name: &str,
        listen: std::net::SocketAddr,
    ) -> Result<(Self, bool), BoxError> {
        Self::spawn(pki, fsync, None, Some((name, listen)))
    }

    fn spawn(
        pki: &TestPki,
        fsync: bool,
        log: Option<&str>,
        replica: Option<(&str, std::net::SocketAddr)>,
    ) -> Result<(Self, bool), BoxError> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--serve-hub").arg(pki.path().join("hub.toml"));
        if !fsync {
            cmd.arg("--no-fsync");
        }
        if let Some(filter) = log {
            cmd.args(["--log", filter]);
        }
        if let Some((name, listen)) = replica {
            cmd.args(["--replica", name, "--listen", &listen.to_string()]);
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
        let line = line.trim();
        let (addr, leads) = match (line.strip_prefix("listening "), replica) {
            (Some(addr), _) => (addr.parse()?, true),
            (None, Some((_, listen))) if line.starts_with("tongbao-hub standby") => (listen, false),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("unexpected hub output {line:?}").into());
            }
        };
        let hub = Self {
            child,
            stdin,
            stdout,
            addr,
        };
        Ok((hub, leads))
    }

    /// User + system CPU time of the hub process so far.
    pub fn cpu(&self) -> Result<Duration, BoxError> {
        cpu_of(&self.child.id().to_string())
    }

    /// Peak resident set size so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64, BoxError> {
        self.status_kib("VmHWM:")
    }

    /// Resident set size now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> Result<u64, BoxError> {
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

    /// Kills the process (SIGKILL: nothing flushed, no lease let go) and
    /// reaps it.
    pub fn kill(mut self) -> Result<(), BoxError> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Closes stdin (the stop signal) and reads the counters it prints.
    pub fn stop(mut self) -> Result<HubCounters, BoxError> {
        drop(self.stdin.take());
        let (tx, rx) = std::sync::mpsc::channel();
        let mut stdout = self.stdout;
        std::thread::spawn(move || {
            // The counters are the JSON line (a standby that took over
            // said `listening` before them).
            let mut line = String::new();
            let read = loop {
                line.clear();
                match stdout.read_line(&mut line) {
                    Ok(0) => break Ok(String::new()),
                    Ok(_) if line.trim_start().starts_with('{') => break Ok(line),
                    Ok(_) => {}
                    Err(e) => break Err(e),
                }
            };
            let _ = tx.send(read);
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
            access_rounds: n("access_rounds"),
            access_waited: n("access_waited"),
            access_records: n("access_records"),
            access_nanos: n("access_nanos"),
        })
    }
}

/// User + system CPU time of a process so far (`self` for this one), from
/// `/proc/<pid>/stat`.
pub fn cpu_of(pid: &str) -> Result<Duration, BoxError> {
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
