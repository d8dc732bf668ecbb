//! `liaison` and `liaisons`: a unit's liaison reported to its offices,
//! and the directory the office keeps of them.

use crate::common::{pin_text, print_receipt};
use anyhow::bail;
use clap::Args;
use serde_json::{Value, json};
use tongbao_client::{Client, format_micros};
use tongbao_proto::pb;

#[derive(Args)]
pub struct LiaisonArgs {
    /// The mechanisms whose offices are told, comma separated.
    #[arg(long, value_delimiter = ',')]
    office: Vec<String>,
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "")]
    title: String,
    #[arg(long)]
    contact: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct LiaisonsArgs {
    /// The mechanism (default: the office's own; the lead unit names it).
    #[arg(long, default_value = "")]
    mechanism: String,
    #[arg(long)]
    json: bool,
}

pub async fn report(client: &Client, a: LiaisonArgs) -> anyhow::Result<()> {
    if a.office.is_empty() {
        bail!("name the offices to report to: --office MECHANISM[,MECHANISM]");
    }
    let liaison = pb::LiaisonChange {
        name: a.name,
        title: a.title,
        contact: a.contact,
    };
    print_receipt(
        "liaison reported",
        &client.report_liaison(&a.office, liaison).await?,
        a.json,
    );
    Ok(())
}

fn liaison_json(r: &pb::LiaisonRecord) -> Value {
    let l = r.liaison.clone().unwrap_or_default();
    json!({
        "name": l.name, "title": l.title, "contact": l.contact,
        "since": format_micros(r.hub_micros), "entry": pin_text(&r.entry),
    })
}

pub async fn directory(client: &Client, a: LiaisonsArgs) -> anyhow::Result<()> {
    let d = client.liaisons(&a.mechanism).await?;
    if a.json {
        let units: Vec<Value> = d
            .units
            .iter()
            .map(|u| {
                json!({
                    "unit": u.unit,
                    "current": u.current.as_ref().map(liaison_json),
                    "history": u.history.iter().map(liaison_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", json!({"mechanism": d.mechanism, "units": units}));
        return Ok(());
    }
    println!("liaisons of {}", d.mechanism);
    for u in &d.units {
        match u
            .current
            .as_ref()
            .and_then(|c| c.liaison.clone().map(|l| (c, l)))
        {
            Some((c, l)) => println!(
                "  {:<20} {} ({}), {}  since {}  [{} change(s)]",
                u.unit,
                l.name,
                l.title,
                l.contact,
                format_micros(c.hub_micros),
                u.history.len()
            ),
            None => println!("  {:<20} (no liaison reported)", u.unit),
        }
    }
    Ok(())
}
