//! `tongbao-hub`: serve the exchange, and operator commands.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tongbao_server::pki::{InitOptions, init};
use tongbao_server::{Hub, HubConfig};

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

fn main() -> anyhow::Result<()> {
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
            rt.block_on(serve(cfg))
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
            println!("Next: keep ca.key offline; start the hub with `tongbao-hub serve --config {}`;", summary.hub_config.display());
            println!("deliver units/<id>/ (cert.pem, key.pem, signing.key, client.toml, and ca.pem) to each department.");
            Ok(())
        }
    }
}

async fn serve(cfg: HubConfig) -> anyhow::Result<()> {
    let hub = Hub::start(&cfg).await?;
    // Machine-readable line for supervisors and tests (port 0 resolves here).
    println!("tongbao-hub listening on {}", hub.addr());
    wait_for_signal().await;
    tracing::info!("shutting down");
    hub.shutdown().await?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
