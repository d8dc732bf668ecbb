//! `tongbao-hub audit-log`: the audit administrator's commands on the
//! access log. They read the data directory directly (read only, beside a
//! running hub) and change nothing: no command or API alters the log.

use crate::HubConfig;
use crate::access_log::export::{Filter, export, query, verify_export};
use crate::access_log::{AccessRecord, files, origin, origin_replica, scan, stored_origin};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use tongbao_proto::checkpoint::NoteVerifier;

/// Where the access log is: the hub's config, or its data directory.
#[derive(Args)]
pub struct Location {
    /// The hub's config (gives the data directory).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data directory (overrides the config's).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl Location {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        let config = match &self.config {
            Some(path) => Some(HubConfig::load(path)?),
            None => None,
        };
        Ok(match (&self.data_dir, &config) {
            (Some(d), _) => d.clone(),
            (None, Some(c)) => c.hub.data_dir.clone(),
            (None, None) => bail!("give --config FILE or --data-dir DIR"),
        })
    }
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
    /// Checks an export, or a data directory's access log, offline.
    Verify {
        /// An export file, or a data directory.
        path: PathBuf,
        /// The hub's key (`tongbao+…` as `tongbao hub-key` prints it), or a file holding it.
        #[arg(long)]
        hub_key: String,
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
            let data_dir = location.resolve()?;
            let filter = Filter {
                since_micros: since.as_deref().map(since_micros).transpose()?,
                caller,
                method,
                code,
            };
            let records = query(&data_dir, &filter)?;
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
            let data_dir = location.resolve()?;
            let since = since.as_deref().map(since_micros).transpose()?;
            let exported = export(&data_dir, None, since)?;
            let text = serde_json::to_string_pretty(&exported)?;
            // Records name parties and what they asked: readable by the owner only.
            tongbao_proto::secret_file::replace(&path, text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            say!(
                out,
                "exported {} records with inclusion proofs in the signed checkpoint to {}",
                exported.records.len(),
                path.display()
            );
        }
        AuditLogCommand::Verify { path, hub_key: key } => {
            let verifier = hub_key(&key)?;
            if path.is_dir() {
                let dir = if path.join(files::DIR).is_dir() {
                    path.join(files::DIR)
                } else {
                    path.clone()
                };
                let log = dir_origin(&dir, &verifier)?;
                let scanned = scan(&dir, &verifier, &log)?;
                let signed = scanned.checkpoint.as_ref().map_or(0, |(c, _)| c.size);
                say!(
                    out,
                    "Verified: the access log {log} in {} holds records 0..{} ({} removed under retention, each by a removal record); every record matches its leaf hash, the tree its stored hashes, and the signed checkpoint of size {signed} its root.",
                    dir.display(),
                    scanned.size,
                    scanned.removals.iter().map(|r| r.count).sum::<u64>(),
                );
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
