//! `tongbao-hub audit-log`: the audit administrator's commands on the
//! access log. They change nothing (no command or API alters the log),
//! and run beside a running hub: each command reads a log through one
//! snapshot, whatever the hub appends or retention removes meanwhile.
//! Exports are written as they are read.
//!
//! What is read:
//! - a hub on sled (`--config`, or `--data-dir`): the log its store keeps
//!   in `<data dir>/access-logs/`, through the store's read-only reader
//!   (sled itself stays locked by the hub). A retention removal during a
//!   read fails it, saying to run the command again.
//! - a data directory holding only an earlier version's `access-log/`
//!   (a hub not started on this version yet): those files, as they were.
//!   Both there means the hub's move of them is unfinished: refused,
//!   saying how to read either.
//! - a hub on PostgreSQL (`--config`): the database it names, any
//!   replica's log, from any host.

use crate::HubConfig;
use crate::access_log::export::{Filter, export_to, query, verify_export};
use crate::access_log::{
    AccessRecord, files, origin, origin_replica, scan, stored_check, stored_origin, stored_read,
};
use crate::store::Store;
use crate::store::access::AccessLogRead;
use crate::store::access_files::{AccessFilesReader, open_read};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tongbao_proto::checkpoint::NoteVerifier;

/// Where the access log is: the hub's config, or its data directory.
#[derive(Args)]
pub struct Location {
    /// The hub's config (gives the data directory).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data directory (overrides the config's; the log in it is read
    /// even when the config's store is PostgreSQL).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The replica whose log to read (`replica_name`); needed when the
    /// store holds several.
    #[arg(long, value_name = "NAME")]
    replica: Option<String>,
}

/// Where the access log is read.
enum Source {
    /// An earlier version's files in a data directory.
    OldFiles(PathBuf),
    /// A store's log, and the origin.
    Store(Logs, String),
}

/// The logs a store keeps, opened to read.
enum Logs {
    /// PostgreSQL's, in the database.
    Db(Arc<dyn Store>),
    /// sled's, in its directory, read without opening sled.
    Files(AccessFilesReader),
}

impl Logs {
    fn reads(&self) -> anyhow::Result<&dyn AccessLogRead> {
        Ok(match self {
            Logs::Db(store) => store
                .access_log()
                .context("this store does not keep the access log")?
                .access_reads(),
            Logs::Files(reader) => reader,
        })
    }

    /// One snapshot: what the hub writes meanwhile is not seen.
    fn snapshot(&self) -> anyhow::Result<Box<dyn AccessLogRead + '_>> {
        Ok(match self {
            Logs::Db(store) => store
                .access_log()
                .context("this store does not keep the access log")?
                .access_snapshot()?,
            Logs::Files(reader) => reader.snapshot(),
        })
    }
}

/// How a data directory's log is read: the store's files when it has
/// them, else an earlier version's `access-log/`.
enum InDir {
    Store(AccessFilesReader),
    Old(PathBuf),
}

fn in_dir(data_dir: &Path) -> anyhow::Result<InDir> {
    if let Some(reader) = open_read(data_dir) {
        unfinished_move(data_dir)?;
        return Ok(InDir::Store(reader));
    }
    if data_dir.join(files::DIR).is_dir() {
        return Ok(InDir::Old(data_dir.to_path_buf()));
    }
    bail!(
        "{} holds no access log (neither {}/ nor an earlier version's {}/): give the hub's data directory",
        data_dir.display(),
        crate::store::access_files::layout::ROOT,
        files::DIR
    )
}

/// Refuses a data directory whose earlier version's `access-log/` is
/// still there beside a store's log: the hub's move of it is unfinished
/// (the directory is renamed once moved whole), so the store holds part
/// of it, which every check would call broken.
fn unfinished_move(data_dir: &Path) -> anyhow::Result<()> {
    let old = data_dir.join(files::DIR);
    if old.is_dir() {
        bail!(
            "the move of an earlier version's access log into the store is unfinished: {} is still there, \
             and the store holds part of it only. Start the hub to finish the move (if it refuses to start, \
             its log says why), or read the earlier \
             version's files as they are: `tongbao-hub audit-log verify {}` checks them; to query or \
             export them, copy that directory to DIR/{} and give --data-dir DIR",
            old.display(),
            old.display(),
            files::DIR
        );
    }
    Ok(())
}

impl Location {
    fn resolve(&self) -> anyhow::Result<Source> {
        let config = match &self.config {
            Some(path) => Some(HubConfig::load(path)?),
            None => None,
        };
        let log_name = config.as_ref().map(|c| c.hub.log_name.clone());
        let logs = match (&self.data_dir, config) {
            (Some(d), _) => match in_dir(d)? {
                InDir::Old(d) => return Ok(Source::OldFiles(d)),
                InDir::Store(reader) => Logs::Files(reader),
            },
            (None, Some(c)) => match c.store.open_reader()? {
                Some(store) => {
                    let logs = Logs::Db(store);
                    let picked = pick_origin(
                        logs.reads()?,
                        Some(&c.hub.log_name),
                        self.replica.as_deref(),
                    );
                    // Only this host's own log can be part moved from here
                    // (or none picked of it: a move that stored nothing yet).
                    let own = crate::access_log::origin(&c.hub.log_name, c.store.replica_name());
                    let asked_own =
                        self.replica.is_none() || self.replica.as_deref() == c.store.replica_name();
                    if picked.as_ref().map_or(asked_own, |origin| *origin == own) {
                        unfinished_move(&c.hub.data_dir)?;
                    }
                    return Ok(Source::Store(logs, picked?));
                }
                None => match in_dir(&c.hub.data_dir)? {
                    InDir::Old(d) => return Ok(Source::OldFiles(d)),
                    InDir::Store(reader) => Logs::Files(reader),
                },
            },
            (None, None) => bail!("give --config FILE or --data-dir DIR"),
        };
        let origin = pick_origin(logs.reads()?, log_name.as_deref(), self.replica.as_deref())?;
        Ok(Source::Store(logs, origin))
    }
}

/// The access logs of the hub `log_name` a store holds (of any hub when
/// the name is not known: a data directory holds one hub's).
fn stored_origins(
    reads: &dyn AccessLogRead,
    log_name: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    Ok(match log_name {
        Some(name) => stored_read::origins(reads, name)?,
        None => reads.access_origins()?,
    })
}

/// The origin `--replica` names, or the only one the store holds.
fn pick_origin(
    reads: &dyn AccessLogRead,
    log_name: Option<&str>,
    replica: Option<&str>,
) -> anyhow::Result<String> {
    let held = stored_origins(reads, log_name)?;
    let named = |o: &String, r: &str| match log_name {
        Some(name) => *o == origin(name, Some(r)),
        None => o.ends_with(&format!("/.access-log/{r}")),
    };
    let shown = |held: &[String]| listed(log_name, held);
    match replica {
        Some(r) => held.iter().find(|o| named(o, r)).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "the store holds no access log of replica {r}; it holds: {}",
                shown(&held)
            )
        }),
        None if held.len() == 1 => Ok(held[0].clone()),
        None => bail!(
            "the store holds {} access logs: give --replica NAME, one of: {}",
            held.len(),
            shown(&held)
        ),
    }
}

/// The replicas of `origins`, named as `--replica` takes them.
fn listed(log_name: Option<&str>, origins: &[String]) -> String {
    if origins.is_empty() {
        return "none".into();
    }
    origins
        .iter()
        .map(
            |o| match log_name.and_then(|name| origin_replica(name, o).flatten()) {
                Some(r) => r.to_string(),
                None => format!("{o} (the hub's own)"),
            },
        )
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Subcommand)]
pub enum AuditLogCommand {
    /// Lists records: every filter given must match.
    Query {
        #[command(flatten)]
        location: Location,
        /// From this time: "7d", "2h" ago, or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// The caller's URI, e.g. urn:tongbao:unit:tax.
        #[arg(long)]
        caller: Option<String>,
        /// Part of the method, e.g. Push or /tongbao.v1.Log/.
        #[arg(long)]
        method: Option<String>,
        /// The gRPC status code (0 = OK, 7 = PermissionDenied, ...).
        #[arg(long)]
        code: Option<i32>,
        /// One JSON object per record (the stored line).
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        #[arg(long)]
        csv: bool,
    },
    /// Writes records with their inclusion proofs and the signed checkpoint.
    Export {
        #[command(flatten)]
        location: Location,
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Checks an export, or a data directory's access log, offline; or,
    /// with --config, the logs the hub's store holds (beside the hub).
    Verify {
        /// An export file, or a data directory.
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        path: Option<PathBuf>,
        /// The hub's key (`tongbao+…` as `tongbao hub-key` prints it), or a file holding it.
        #[arg(long)]
        hub_key: String,
        /// The hub's config: every access log its database holds.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Only this replica's log (`replica_name`).
        #[arg(long, value_name = "NAME")]
        replica: Option<String>,
    },
}

/// A time from `--since`: a duration ago or an RFC 3339 time.
fn since_micros(text: &str) -> anyhow::Result<i64> {
    if let Some(ago) = crate::config::parse_duration_micros(text) {
        return Ok(tongbao_proto::now_micros().saturating_sub(ago));
    }
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!(
                "--since {:?} is neither a duration (7d, 2h) nor an RFC 3339 time",
                tongbao_proto::echo::shown(text)
            )
        })?;
    Ok(i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX))
}

fn hub_key(text: &str) -> anyhow::Result<NoteVerifier> {
    let vkey = if Path::new(text).is_file() {
        std::fs::read_to_string(text).with_context(|| format!("cannot read {text}"))?
    } else {
        text.to_string()
    };
    NoteVerifier::from_vkey(vkey.trim()).context("--hub-key is not a hub key (tongbao+…+…)")
}

fn time_text(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| micros.to_string())
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

fn row(r: &AccessRecord) -> [String; 12] {
    [
        r.n.to_string(),
        time_text(r.at_micros),
        r.kind.name().to_string(),
        r.caller.clone(),
        r.serial.clone(),
        r.peer.clone(),
        r.method.clone(),
        r.targets.join(" "),
        r.code.to_string(),
        r.request_bytes.to_string(),
        r.response_bytes.to_string(),
        r.duration_micros.to_string(),
    ]
}

/// Runs a command; returns its report.
pub fn run(command: AuditLogCommand) -> anyhow::Result<String> {
    let mut out = String::new();
    match command {
        AuditLogCommand::Query {
            location,
            since,
            caller,
            method,
            code,
            json,
            csv,
        } => {
            let filter = Filter {
                since_micros: since.as_deref().map(since_micros).transpose()?,
                caller,
                method,
                code,
            };
            let records = match location.resolve()? {
                Source::OldFiles(data_dir) => query(&data_dir, &filter)?,
                Source::Store(logs, origin) => {
                    stored_read::query(&*logs.snapshot()?, &origin, &filter)?
                }
            };
            if csv {
                say!(
                    out,
                    "n,time,kind,caller,serial,peer,method,targets,code,request_bytes,response_bytes,duration_micros,message"
                );
            }
            for r in &records {
                if json {
                    say!(out, "{}", r.to_line()?);
                } else if csv {
                    let mut fields: Vec<String> = row(r).iter().map(|f| csv_field(f)).collect();
                    fields.push(csv_field(&r.message));
                    say!(out, "{}", fields.join(","));
                } else {
                    let [n, at, kind, caller, _, peer, method, targets, code, ..] = row(r);
                    let who = if caller.is_empty() { peer } else { caller };
                    say!(
                        out,
                        "{n:>8} {at} {kind:<9} {who} {method} [{targets}] code {code} {}",
                        r.message
                    );
                }
            }
        }
        AuditLogCommand::Export {
            location,
            since,
            out: path,
        } => {
            let since = since.as_deref().map(since_micros).transpose()?;
            let source = location.resolve()?;
            let mut failed = None;
            let mut records = 0;
            // Records name parties and what they asked: readable by the
            // owner only; written as read, so a large log is never held.
            let written = tongbao_proto::secret_file::replace_streamed(&path, |out| {
                let exported = match &source {
                    Source::OldFiles(data_dir) => export_to(out, data_dir, None, since),
                    Source::Store(logs, origin) => match logs.snapshot() {
                        Ok(snap) => stored_read::export_to(out, &*snap, origin, None, since),
                        Err(e) => Err(crate::access_log::AccessLogError::Closed(e.to_string())),
                    },
                };
                match exported {
                    Ok(n) => {
                        records = n;
                        Ok(())
                    }
                    Err(e) => {
                        let said = std::io::Error::other(e.to_string());
                        failed = Some(e);
                        Err(said)
                    }
                }
            });
            if let Some(e) = failed {
                return Err(anyhow::Error::from(e).context(format!(
                    "cannot export the access log to {}",
                    path.display()
                )));
            }
            written.with_context(|| format!("cannot write {}", path.display()))?;
            say!(
                out,
                "exported {records} records with inclusion proofs in the signed checkpoint to {}",
                path.display()
            );
        }
        AuditLogCommand::Verify {
            path,
            hub_key: key,
            config,
            replica,
        } => {
            let verifier = hub_key(&key)?;
            let path = match (path, config) {
                (Some(path), _) => path,
                (None, Some(config)) => {
                    let config = HubConfig::load(&config)?;
                    let logs = match config.store.open_reader()? {
                        Some(store) => Logs::Db(store),
                        None => match in_dir(&config.hub.data_dir)? {
                            InDir::Store(reader) => Logs::Files(reader),
                            InDir::Old(dir) => {
                                verify_old(&mut out, &dir, &verifier)?;
                                return Ok(out);
                            }
                        },
                    };
                    verify_stored(&mut out, &logs, replica.as_deref(), &verifier)?;
                    return Ok(out);
                }
                (None, None) => bail!("give an export file, a data directory, or --config FILE"),
            };
            if path.is_dir() && open_read(&path).is_some() {
                let logs = match in_dir(&path)? {
                    InDir::Store(reader) => Logs::Files(reader),
                    InDir::Old(_) => bail!("{} changed while read", path.display()),
                };
                verify_stored(&mut out, &logs, replica.as_deref(), &verifier)?;
            } else if path.is_dir() {
                verify_old(&mut out, &path, &verifier)?;
            } else {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let verified = verify_export(&text, &verifier)?;
                say!(
                    out,
                    "Verified: {} records, each included in the checkpoint of {} (size {}) signed by the hub key.",
                    verified.records,
                    verified.origin,
                    verified.checkpoint_size
                );
            }
        }
    }
    Ok(out)
}

/// Verifies the access logs a store holds (or only `replica`'s), every
/// record of each, each log in one snapshot.
fn verify_stored(
    out: &mut String,
    logs: &Logs,
    replica: Option<&str>,
    verifier: &NoteVerifier,
) -> anyhow::Result<()> {
    let log_name = verifier.name();
    let reads = logs.reads()?;
    let origins = match replica {
        Some(_) => vec![pick_origin(reads, Some(log_name), replica)?],
        None => stored_origins(reads, Some(log_name))?,
    };
    if origins.is_empty() {
        bail!("the store holds no access log of {log_name}");
    }
    let place = match logs {
        Logs::Db(_) => "the database".to_string(),
        Logs::Files(_) => "the store's files".to_string(),
    };
    for log in origins {
        // One snapshot a log: its hub may append and remove meanwhile.
        let scanned = stored_check::check(&*logs.snapshot()?, &log, verifier, true)?;
        let signed = scanned.checkpoint.as_ref().map(|(c, _)| c.size);
        say!(
            out,
            "{}",
            verified(&log, &place, scanned.size, scanned.removed, signed)
        );
    }
    Ok(())
}

/// Verifies an earlier version's files in `path` (a data directory, or
/// its `access-log/`).
fn verify_old(out: &mut String, path: &Path, verifier: &NoteVerifier) -> anyhow::Result<()> {
    let dir = if path.join(files::DIR).is_dir() {
        path.join(files::DIR)
    } else {
        path.to_path_buf()
    };
    let log = dir_origin(&dir, verifier)?;
    let scanned = scan(&dir, verifier, &log)?;
    let signed = scanned.checkpoint.as_ref().map(|(c, _)| c.size);
    let removed = scanned.removals.iter().map(|r| r.count).sum::<u64>();
    let place = dir.display().to_string();
    say!(
        out,
        "{}",
        verified(&log, &place, scanned.size, removed, signed)
    );
    Ok(())
}

/// What a verified log is said to hold; a log no checkpoint signed yet
/// (a new hub's, before its first record) is said to be so.
fn verified(log: &str, place: &str, size: u64, removed: u64, signed: Option<u64>) -> String {
    let checkpoint = match signed {
        Some(size) => format!("the signed checkpoint of size {size} its root"),
        None => "no checkpoint is signed yet".to_string(),
    };
    format!(
        "Verified: the access log {log} in {place} holds records 0..{size} ({removed} removed under \
         retention, each by a removal record); every record matches its leaf hash, the tree its \
         stored hashes, and {checkpoint}."
    )
}

/// The origin of the access log in `dir`: its checkpoint's, when that is
/// an access log of the hub `verifier` names (a replica's names the
/// replica), else the hub's own.
fn dir_origin(dir: &Path, verifier: &NoteVerifier) -> anyhow::Result<String> {
    let own = origin(verifier.name(), None);
    Ok(match stored_origin(dir)? {
        Some(o) if origin_replica(verifier.name(), &o).is_some() => o,
        // Checked against the hub's own: the scan names the mismatch.
        _ => own,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store's log beside an earlier version's files not yet moved
    /// whole is refused, saying how to read either; the files alone read.
    #[test]
    fn a_data_directory_with_a_move_unfinished_is_refused_saying_why() -> anyhow::Result<()> {
        let data = tempfile::tempdir()?;
        let old = data.path().join(files::DIR);
        std::fs::create_dir(&old)?;
        assert!(matches!(in_dir(data.path())?, InDir::Old(_)));
        let origin_dir = crate::store::access_files::layout::origin_dir(
            &data.path().join(crate::store::access_files::layout::ROOT),
            "tongbao/.access-log",
        )?;
        std::fs::create_dir_all(&origin_dir)?;
        std::fs::write(origin_dir.join("origin"), "tongbao/.access-log")?;
        let said = match in_dir(data.path()) {
            Ok(_) => anyhow::bail!("a partly moved log was read"),
            Err(e) => e.to_string(),
        };
        assert!(
            said.contains("unfinished") && said.contains("Start the hub"),
            "{said}"
        );
        std::fs::remove_dir(&old)?;
        assert!(matches!(in_dir(data.path())?, InDir::Store(_)));
        Ok(())
    }

    /// A log with no checkpoint yet is never said to match a signed one.
    #[test]
    fn a_log_no_checkpoint_signed_yet_is_said_so() {
        let none = verified("hub/.access-log", "the database", 0, 0, None);
        assert!(none.ends_with("and no checkpoint is signed yet."), "{none}");
        assert!(!none.contains("signed checkpoint of size"), "{none}");
        let some = verified("hub/.access-log", "the database", 3, 1, Some(3));
        assert!(
            some.contains("records 0..3 (1 removed")
                && some.ends_with("the signed checkpoint of size 3 its root."),
            "{some}"
        );
    }
}
