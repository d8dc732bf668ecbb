//! `agent`: serve this party's HTTP/JSON API (tongbao-agent) until stopped.

use anyhow::{Context, bail};
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tongbao_agent::{Agent, AgentConfig, WebhookConfig};
use tongbao_client::Client;

#[derive(Args)]
pub struct AgentArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:7480")]
    listen: SocketAddr,
    /// Serve on an address that is not loopback (the token and bodies then
    /// cross a network in clear text).
    #[arg(long)]
    listen_allow_remote: bool,
    /// The bearer token's file, 0600, made if missing (default:
    /// agent-token beside client.toml).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = AgentConfig::DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// Event streams and waiting long polls open at once.
    #[arg(long, default_value_t = AgentConfig::DEFAULT_MAX_STREAMS)]
    max_streams: usize,
    /// Deliver each inbox entry to this http:// URL, signed (loopback only
    /// unless --webhook-allow-remote).
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    /// The webhook's HMAC key file, 0600, made if missing (default:
    /// webhook-secret beside client.toml).
    #[arg(long, value_name = "FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// Where the cursor of the last delivered entry is kept (default:
    /// webhook-cursor beside client.toml).
    #[arg(long, value_name = "FILE")]
    webhook_cursor_file: Option<PathBuf>,
    /// Permit a webhook host that is not loopback.
    #[arg(long)]
    webhook_allow_remote: bool,
    /// Attempts per entry before webhook delivery pauses.
    #[arg(long, default_value_t = WebhookConfig::DEFAULT_ATTEMPTS)]
    webhook_attempts: u32,
    /// Wait after a first failed attempt, in ms (doubles, up to 60 s).
    #[arg(long, default_value_t = WebhookConfig::DEFAULT_BACKOFF.as_millis() as u64)]
    webhook_backoff_ms: u64,
}

pub async fn agent(client: &Client, config: &Path, a: AgentArgs) -> anyhow::Result<()> {
    if !a.listen.ip().is_loopback() && !a.listen_allow_remote {
        bail!(
            "{} is not a loopback address; the agent serves the party's own systems on 127.0.0.1 (or give --listen-allow-remote)",
            a.listen
        );
    }
    let beside = |name: &str| {
        config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join(name)
    };
    let token_file = a.token_file.unwrap_or_else(|| beside("agent-token"));
    let webhook = a.webhook_url.map(|url| WebhookConfig {
        url,
        secret_file: a
            .webhook_secret_file
            .unwrap_or_else(|| beside("webhook-secret")),
        cursor_file: a
            .webhook_cursor_file
            .unwrap_or_else(|| beside("webhook-cursor")),
        allow_remote: a.webhook_allow_remote,
        max_attempts: a.webhook_attempts,
        first_backoff: Duration::from_millis(a.webhook_backoff_ms),
    });
    let hook_secret = webhook.as_ref().map(|w| w.secret_file.clone());
    let agent = Agent::start(
        client.clone(),
        AgentConfig {
            listen: a.listen,
            token_file: token_file.clone(),
            max_request_bytes: a.max_request_bytes,
            max_streams: a.max_streams,
            webhook,
        },
    )
    .await
    .context("cannot start the agent")?;
    let made = if agent.token_created() {
        " (made now)"
    } else {
        ""
    };
    println!(
        "agent for {} on http://{}; token in {}{made}",
        client.identity().uri(),
        agent.addr(),
        token_file.display()
    );
    if let Some(secret) = hook_secret {
        println!("webhook signed with the key in {}", secret.display());
    }
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    agent.shutdown().await;
    Ok(())
}
