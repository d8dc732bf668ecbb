//! `pull`, `watch`, `ack` and `get`: reading the inbox and acknowledging it.

use crate::common::{entry_at, parse_ref, print_entry};
use clap::Args;
use futures::StreamExt;
use tongbao_client::Client;

#[derive(Args)]
pub struct PullArgs {
    #[arg(long, default_value_t = 0)]
    after: u64,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long)]
    json: bool,
    /// Acknowledge the page with one signed receipt once printed.
    #[arg(long)]
    ack: bool,
}

#[derive(Args)]
pub struct AckArgs {
    #[arg(required = true)]
    cursors: Vec<u64>,
}

#[derive(Args)]
pub struct WatchArgs {
    /// Acknowledge each entry once printed (receipts batched).
    #[arg(long)]
    ack: bool,
    #[arg(long, default_value_t = 0)]
    after: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct GetArgs {
    entry: String,
    #[arg(long)]
    json: bool,
}

pub async fn pull(client: &Client, a: PullArgs) -> anyhow::Result<()> {
    let page = client.pull(a.after, a.limit).await?;
    for e in &page.entries {
        print_entry(e, a.json);
    }
    if a.ack && !page.entries.is_empty() {
        let outcome = client.ack(&page.entries.iter().collect::<Vec<_>>()).await?;
        if !a.json {
            println!("acknowledged {} entries", outcome.newly_acknowledged);
        }
    }
    if !a.json {
        let next = page.next_after(a.after);
        println!(
            "{} entries; inbox head {}; continue with --after {next}",
            page.entries.len(),
            page.head
        );
    }
    Ok(())
}

pub async fn watch(client: &Client, a: WatchArgs) -> anyhow::Result<()> {
    let json = a.json;
    if a.ack {
        client
            .process(a.after, |e| {
                print_entry(&e, json);
                async { Ok::<(), std::convert::Infallible>(()) }
            })
            .await?;
    } else {
        let mut stream = Box::pin(client.subscribe(a.after));
        while let Some(e) = stream.next().await {
            print_entry(&e?, json);
        }
    }
    Ok(())
}

pub async fn ack(client: &Client, a: AckArgs) -> anyhow::Result<()> {
    let mut entries = Vec::new();
    for c in a.cursors {
        entries.push(entry_at(client, c).await?);
    }
    let outcome = client.ack(&entries.iter().collect::<Vec<_>>()).await?;
    match &outcome.receipt {
        Some((channel, seq, _)) => println!(
            "receipt {channel}:{seq} acknowledges {} entries",
            outcome.newly_acknowledged
        ),
        None => println!("nothing new: every entry was acknowledged before"),
    }
    for (entry, receipt) in &outcome.earlier {
        println!(
            "  {}:{} was acknowledged earlier by {}:{}",
            entry.channel, entry.seq, receipt.channel, receipt.seq
        );
    }
    Ok(())
}

pub async fn get(client: &Client, a: GetArgs) -> anyhow::Result<()> {
    let (c, n) = parse_ref(&a.entry)?;
    print_entry(&client.get_entry(&c, n).await?, a.json);
    Ok(())
}
