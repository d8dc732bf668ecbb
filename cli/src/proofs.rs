//! `export`, `verify`, `hub-key` and `cosign`: proof bundles and the
//! checkpoints they rest on.

use crate::common::parse_ref;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use tongbao_client::Client;
use tongbao_client::bundle::BundleTrust;

#[derive(Args)]
pub struct ExportArgs {
    #[arg(long = "entry", required = true, value_name = "CHANNEL:SEQ")]
    entries: Vec<String>,
    #[arg(long, value_name = "BUNDLE")]
    out: PathBuf,
}

#[derive(Args)]
pub struct VerifyArgs {
    bundle: PathBuf,
    /// The exchange CA certificate (PEM): the hub key is then the one
    /// the hub certificate it issued names.
    #[arg(long, value_name = "CA.pem", required_unless_present = "hub_key")]
    ca: Option<PathBuf>,
    /// The hub's checkpoint key (signed-note vkey), from a trusted source.
    #[arg(long)]
    hub_key: Option<String>,
}

pub async fn export(client: &Client, a: ExportArgs) -> anyhow::Result<()> {
    let refs = a
        .entries
        .iter()
        .map(|e| parse_ref(e))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bundle = client.export_bundle(&refs).await?;
    std::fs::write(&a.out, serde_json::to_vec_pretty(&bundle)?)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    let check = if bundle.hub_certificate.is_empty() {
        format!("--hub-key '{}'", bundle.hub_key)
    } else {
        "--ca CA.pem (the exchange CA certificate)".to_string()
    };
    println!(
        "wrote {} ({} entries, {} checkpoints); check it with: tongbao verify {} {check}",
        a.out.display(),
        bundle.entries.len(),
        bundle.checkpoints.len(),
        a.out.display(),
    );
    Ok(())
}

/// Checks a bundle offline: no hub, no config.
pub fn verify(a: &VerifyArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&a.bundle).with_context(|| format!("cannot read {}", a.bundle.display()))?;
    let trust = match (&a.ca, &a.hub_key) {
        (Some(ca), hub_key) => BundleTrust::Ca {
            ca_pem: std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?,
            hub_key: hub_key.clone(),
        },
        (None, Some(k)) => BundleTrust::HubKey(k.clone()),
        (None, None) => anyhow::bail!("give --ca CA.pem, --hub-key KEY, or both"),
    };
    let report = tongbao_client::bundle::verify_bundle_with(&bytes, &trust)
        .map_err(|e| anyhow::anyhow!("verification FAILED: {e}"))?;
    for line in report {
        println!("{line}");
    }
    println!(
        "Verified: every signature, leaf hash, inclusion proof and checkpoint in the bundle checks out."
    );
    Ok(())
}

pub async fn hub_key(client: &Client) -> anyhow::Result<()> {
    println!("{}", client.pinned_hub_key().await?);
    Ok(())
}

pub async fn cosign(client: &Client) -> anyhow::Result<()> {
    let note = client.cosign_own_channel().await?;
    print!("{note}");
    Ok(())
}
