//! `units`: the registry as the hub lists it.

use clap::Args;
use tongbao_client::Client;

#[derive(Args)]
pub struct UnitsArgs {
    #[arg(long)]
    json: bool,
}

pub async fn units(client: &Client, a: UnitsArgs) -> anyhow::Result<()> {
    let units = client.list_units().await?;
    if a.json {
        let v: Vec<_> = units
            .units
            .iter()
            .map(|u| {
                serde_json::json!({
                    "id": u.id, "name": u.name, "name_zh": u.name_zh, "suspended": u.suspended,
                    "keys": u.keys.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let m: Vec<_> = units
            .mechanisms
            .iter()
            .map(|m| serde_json::json!({"id": m.id, "name": m.name, "lead": m.lead, "members": m.members}))
            .collect();
        println!("{}", serde_json::json!({"units": v, "mechanisms": m}));
    } else {
        for u in &units.units {
            let keys: Vec<_> = u.keys.iter().map(|k| k.key_id.as_str()).collect();
            let state = if u.suspended { " (suspended)" } else { "" };
            println!(
                "{:<20} {} {}{state}  keys {}",
                u.id,
                u.name_zh,
                u.name,
                keys.join(",")
            );
        }
        for m in &units.mechanisms {
            println!(
                "{}: lead {}; members {}",
                m.id,
                m.lead,
                m.members.join(", ")
            );
        }
    }
    Ok(())
}
