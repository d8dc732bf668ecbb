//! `tongbao`: the command line of a departmental system, on the client
//! library. This file only parses and dispatches; each command group lives
//! in its own module.

mod action;
mod agent;
mod audit;
mod case;
mod common;
mod inbox;
mod joint;
mod keys;
mod liaison;
mod meeting;
mod org;
mod proofs;
mod push;
mod statistics;
mod task;
mod units;
mod warning;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tongbao_client::{Client, ClientConfig};

#[derive(Parser)]
#[command(
    name = "tongbao",
    version,
    about = "Exchange signed messages through a Tongbao hub"
)]
struct Cli {
    /// client.toml of this unit (or office).
    #[arg(long, global = true, env = "TONGBAO_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign and push a message to units, mechanisms, offices or the leading group.
    Push(push::PushArgs),
    /// Print a page of the inbox.
    Pull(inbox::PullArgs),
    /// Acknowledge inbox entries by cursor, with one signed receipt.
    Ack(inbox::AckArgs),
    /// Answer an inbox entry with exception feedback (异常反馈) instead of
    /// acknowledging it.
    Feedback(push::FeedbackArgs),
    /// The office's delivery audit.
    Audit {
        #[command(subcommand)]
        what: audit::AuditCommand,
    },
    /// Follow the inbox live (reconnects and resumes by itself).
    Watch(inbox::WatchArgs),
    /// Print one entry, CHANNEL:SEQ.
    Get(inbox::GetArgs),
    /// Write a self-contained proof bundle of entries (CHANNEL:SEQ ...).
    Export(proofs::ExportArgs),
    /// Check a proof bundle offline, trusting the exchange CA (which
    /// certifies the hub's checkpoint key) and/or the hub's checkpoint key.
    Verify(proofs::VerifyArgs),
    /// Print the hub's checkpoint key this client has pinned.
    HubKey,
    /// Make this party's own keys (no hub or config needed).
    Keys {
        #[command(subcommand)]
        what: keys::KeysCommand,
    },
    /// Cosign the latest checkpoint of this unit's own channel.
    Cosign,
    /// List units, their keys and the mechanisms.
    Units(units::UnitsArgs),
    /// Meetings (会议): proposal, agenda items and comments, settled agenda.
    Meeting {
        #[command(subcommand)]
        what: meeting::MeetingCommand,
    },
    /// Minutes (会议纪要): drafts, consents and objections, issue, verification.
    Minutes {
        #[command(subcommand)]
        what: meeting::MinutesCommand,
    },
    /// Joint notices (联合通报) and escalations (上报) with co-signatures.
    Joint {
        #[command(subcommand)]
        what: joint::JointCommand,
    },
    /// Report this unit's liaison (联络员) to the offices of its mechanisms.
    Liaison(liaison::LiaisonArgs),
    /// The liaison directory as the office sees it.
    Liaisons(liaison::LiaisonsArgs),
    /// Statistics (统计) of a mechanism from the hub's records.
    Statistics {
        #[command(subcommand)]
        what: statistics::StatisticsCommand,
    },
    /// Cases (案件): the entries of a case you may see, in order.
    Case {
        #[command(subcommand)]
        what: case::CaseCommand,
    },
    /// Organizations (by unified social credit code): the entries about
    /// one you may see, in order.
    Org {
        #[command(subcommand)]
        what: org::OrgCommand,
    },
    /// Joint warnings and sanctions (联合预警和惩戒) about organizations.
    Warning {
        #[command(subcommand)]
        what: warning::WarningCommand,
    },
    /// Tasks (议定事项 / 督办): assigned, reported, reminded, accepted or returned.
    Task {
        #[command(subcommand)]
        what: task::TaskCommand,
    },
    /// Joint enforcement actions (联合执法行动): proposed, confirmed or
    /// declined, reported, summarized and verified.
    Action {
        #[command(subcommand)]
        what: action::ActionCommand,
    },
    /// Serve this party's HTTP/JSON API on 127.0.0.1 for its own systems
    /// (see docs/agent.md), until Ctrl-C.
    Agent(agent::AgentArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Offline verification and making keys need no hub and no config.
    let command = match cli.command {
        Command::Verify(args) => return proofs::verify(&args),
        Command::Keys { what } => return keys::keys(what),
        other => other,
    };
    let path = cli
        .config
        .context("--config FILE (a client.toml) is required, or set TONGBAO_CONFIG")?;
    let client = Client::connect(&ClientConfig::load(&path)?).await?;
    if let Command::Agent(args) = command {
        return agent::agent(&client, &path, args).await;
    }
    let client = &client;
    match command {
        Command::Push(args) => push::push(client, args).await,
        Command::Feedback(args) => push::feedback(client, args).await,
        Command::Pull(args) => inbox::pull(client, args).await,
        Command::Watch(args) => inbox::watch(client, args).await,
        Command::Ack(args) => inbox::ack(client, args).await,
        Command::Get(args) => inbox::get(client, args).await,
        Command::Audit { what } => audit::audit(client, what).await,
        Command::Meeting { what } => meeting::meeting(client, what).await,
        Command::Minutes { what } => meeting::minutes(client, what).await,
        Command::Joint { what } => joint::joint(client, what).await,
        Command::Liaison(args) => liaison::report(client, args).await,
        Command::Liaisons(args) => liaison::directory(client, args).await,
        Command::Statistics { what } => statistics::statistics(client, what).await,
        Command::Case { what } => case::case(client, what).await,
        Command::Org { what } => org::org(client, what).await,
        Command::Warning { what } => warning::warning(client, what).await,
        Command::Task { what } => task::task(client, what).await,
        Command::Action { what } => action::action(client, what).await,
        Command::Export(args) => proofs::export(client, args).await,
        Command::Verify(_) | Command::Keys { .. } | Command::Agent(_) => Ok(()),
        Command::HubKey => proofs::hub_key(client).await,
        Command::Cosign => proofs::cosign(client).await,
        Command::Units(args) => units::units(client, args).await,
    }
}
