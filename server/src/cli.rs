//! The `tongbao-hub` command line: serve the exchange, and operator commands.
//! In the library so that test harnesses run the very same entry point.

use crate::HubConfig;
use crate::pki::{InitOptions, init};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "tongbao-hub", version, about = "Tongbao secure exchange hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    },
    /// Operator PKI commands.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a CA, hub and party certificates, signing keys and configs.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: std::net::SocketAddr,
        /// Validity of every certificate, in days.
        #[arg(long, default_value_t = 11 * 366)]
        days: i64,
        /// Overwrite an existing set.
        #[arg(long)]
        force: bool,
    },
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            let mut cfg = HubConfig::load(&config)?;
            if let Some(l) = listen {
                cfg.hub.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.hub.data_dir = d;
            }
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(crate::hub::serve_until_signal(cfg))?;
            Ok(())
        }
        Command::Pki {
            command:
                PkiCommand::Init {
                    dir,
                    listen,
                    days,
                    force,
                },
        } => {
            let summary = init(
                &dir,
                &InitOptions {
                    listen,
                    days,
                    force,
                    ..Default::default()
                },
            )?;
            println!(
                "Created an example PKI in {} ({} files): CA, hub certificate, {} units with signing keys, 2 offices, the leading group and an operator.",
                dir.display(),
                summary.files,
                summary.units.len()
            );
            println!(
                "Next: keep ca.key offline; start the hub with `tongbao-hub serve --config {}`;",
                summary.hub_config.display()
            );
            println!(
                "deliver units/<id>/ (cert.pem, key.pem, signing.key, client.toml, and ca.pem) to each department."
            );
            Ok(())
        }
    }
}
