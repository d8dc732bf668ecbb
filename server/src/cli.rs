//! The `tongbao-hub` command line: serve the exchange, and operator commands.
//! In the library so that test harnesses run the very same entry point.
//! This file parses and dispatches; `pki` and `admin` have their own files.

use crate::HubConfig;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Appends a line to a command's report.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

mod admin;
mod audit_log;
mod backup;
mod pki;
mod report;
mod templates;

#[derive(Parser)]
#[command(name = "tongbao-hub", version, about = "Tongbao secure exchange hub")]
struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one
    /// object a line) for log shippers. Levels come from RUST_LOG.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The two forms of the hub's log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Override the listen address of the config (e.g. 127.0.0.1:0).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Override the data directory of the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Override `[store] replica_name` (replicas sharing one config).
        #[arg(long, value_name = "NAME")]
        replica_name: Option<String>,
    },
    /// Operator PKI commands.
    Pki {
        #[command(subcommand)]
        command: pki::PkiCommand,
    },
    /// The access log: query, export with proofs, verify offline.
    AuditLog {
        #[command(subcommand)]
        command: audit_log::AuditLogCommand,
    },
    /// Operator calls to a running hub (Admin service).
    Admin {
        #[command(flatten)]
        connection: admin::AdminConnection,
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Copy the hub's data, consistent at one commit: through a running
    /// hub (--dir), or of a stopped hub's data directory (--data-dir).
    Backup(backup::BackupArgs),
    /// Write a backup into a new data directory and check it.
    Restore(backup::RestoreArgs),
    /// Check a stopped hub's data: every entry against its leaf hash,
    /// every channel against its checkpoint.
    VerifyData(backup::VerifyArgs),
}

/// Parses the process arguments and runs the command.
pub fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // Fields beside the message, not nested, and the current span
        // only: what shippers index without configuration.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            replica_name,
        } => {
            let mut cfg = HubConfig::load(&config)?;
            if let Some(l) = listen {
                cfg.hub.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.hub.data_dir = d;
            }
            if replica_name.is_some() {
                cfg.store.replica_name = replica_name;
                cfg.store.validate()?;
            }
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(crate::hub::serve_until_signal(cfg))?;
            Ok(())
        }
        Command::Pki { command } => pki::pki(command),
        Command::AuditLog { command } => {
            print!("{}", audit_log::run(command)?);
            Ok(())
        }
        Command::Admin {
            connection,
            command,
        } => {
            print!("{}", admin::run(connection, command)?);
            Ok(())
        }
        Command::Backup(args) => {
            print!("{}", backup::backup(args)?);
            Ok(())
        }
        Command::Restore(args) => {
            print!("{}", backup::restore(args)?);
            Ok(())
        }
        Command::VerifyData(args) => {
            print!("{}", backup::verify(args)?);
            Ok(())
        }
    }
}
