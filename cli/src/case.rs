//! `case`: the entries of a case the caller may see, in order.

use crate::common::{entry_json, print_entry};
use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};
use tongbao_client::Client;
use tongbao_proto::workflow::step_name;

#[derive(Subcommand)]
pub enum CaseCommand {
    /// List the entries of CASE the caller may see.
    Show {
        case: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn case(client: &Client, what: CaseCommand) -> anyhow::Result<()> {
    let CaseCommand::Show { case, json } = what;
    case_show(client, &case, json).await
}

async fn case_show(client: &Client, case: &str, json: bool) -> anyhow::Result<()> {
    let entries = client.case(case).await.context("cannot read the case")?;
    if json {
        let v: Vec<Value> = entries.iter().map(entry_json).collect();
        println!("{}", json!({"case_id": case, "entries": v}));
        return Ok(());
    }
    println!("case {case}: {} entries you may see", entries.len());
    for e in &entries {
        if let Ok(step) = tongbao_proto::workflow::decode_step(e.message()) {
            println!(
                "{}:{}  {}  ({})",
                e.channel(),
                e.seq(),
                e.message().subject,
                step_name(&step)
            );
        } else {
            print_entry(e, false);
        }
    }
    Ok(())
}
