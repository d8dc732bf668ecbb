//! `org show`: every entry about an organization the caller may see.

use crate::common::{entry_json, print_entry};
use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};
use tongbao_client::Client;
use tongbao_proto::workflow::{decode_step, step_name};

#[derive(Subcommand)]
pub enum OrgCommand {
    /// List, in hub-time order, the entries naming the organization with
    /// this unified social credit code that the caller may see.
    Show {
        code: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn org(client: &Client, what: OrgCommand) -> anyhow::Result<()> {
    let OrgCommand::Show { code, json } = what;
    tongbao_proto::credit_code::check(&code)?;
    let entries = client
        .organization(&code)
        .await
        .context("cannot read the organization's entries")?;
    if json {
        let v: Vec<Value> = entries.iter().map(entry_json).collect();
        println!("{}", json!({"credit_code": code, "entries": v}));
        return Ok(());
    }
    println!("organization {code}: {} entries you may see", entries.len());
    for e in &entries {
        match decode_step(e.message()) {
            Ok(step) => println!(
                "{}:{}  {}  ({})",
                e.channel(),
                e.seq(),
                e.message().subject,
                step_name(&step)
            ),
            Err(_) => print_entry(e, false),
        }
    }
    Ok(())
}
