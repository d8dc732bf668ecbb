//! `tongbao-hub backup`, `restore` and `verify-data`: the operator's side
//! of `crate::backup`. A backup of a running hub goes through the hub
//! (`Admin/Backup`, the system role), which alone can cut its store at one
//! commit; the other commands work on a stopped hub's data directory.

use super::admin::{AdminConnection, connect, refused};
use crate::backup::{Manifest, VerifyReport};
use crate::roles::Method;
use anyhow::Context;
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tongbao_proto::checkpoint::NoteVerifier;
use tongbao_proto::pb;
use tongbao_proto::pb::admin_client::AdminClient;

/// `backup`: through a running hub (`--dir`), or of a stopped hub's data
/// directory (`--data-dir`).
#[derive(Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["dir", "data_dir"]))]
pub struct BackupArgs {
    /// The backup directory (new or empty). Through a running hub it is on
    /// the hub's machine, written by the hub's user.
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Back up a running hub: the operator's admin directory, as for
    /// `tongbao-hub admin --dir` (the system role's operator signs in).
    #[arg(long, value_name = "ADMIN")]
    dir: Option<PathBuf>,
    /// With --dir: the operator to sign in as.
    #[arg(long, value_name = "NAME", requires = "dir")]
    operator: Option<String>,
    /// With --dir: the hub's URL [default: from ADMIN/hub.toml].
    #[arg(long, value_name = "URL", requires = "dir")]
    hub: Option<String>,
    /// Back up a stopped hub's data directory instead.
    #[arg(long, value_name = "D")]
    data_dir: Option<PathBuf>,
    /// With --data-dir: the checkpoint key, when hub.toml's
    /// `checkpoint_key` keeps it outside the data directory.
    #[arg(long, value_name = "FILE", requires = "data_dir")]
    checkpoint_key: Option<PathBuf>,
}

/// `restore`.
#[derive(Args)]
pub struct RestoreArgs {
    /// The backup directory (holding backup.json).
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// The new data directory (missing or empty).
    #[arg(long, value_name = "D")]
    data_dir: PathBuf,
    /// The hub's checkpoint key (vkey, as `Log/GetLogKey` or the start-up
    /// log shows it) [default: the key of --config, else the manifest's].
    #[arg(long, value_name = "VKEY")]
    hub_key: Option<String>,
    /// The hub's config, whose checkpoint key the checkpoints must verify with.
    #[arg(long, value_name = "FILE", conflicts_with = "hub_key")]
    config: Option<PathBuf>,
}

/// `verify-data`.
#[derive(Args)]
pub struct VerifyArgs {
    /// A stopped hub's data directory.
    data_dir: PathBuf,
    /// The hub's checkpoint key (vkey) [default: the key of --config,
    /// else D/checkpoint.key].
    #[arg(long, value_name = "VKEY")]
    hub_key: Option<String>,
    /// The hub's config, whose checkpoint key the checkpoints must verify with.
    #[arg(long, value_name = "FILE", conflicts_with = "hub_key")]
    config: Option<PathBuf>,
}

/// The checkpoints' verifier: the vkey given, else the key hub.toml
/// names (its `checkpoint_key`, or the data directory's), under its
/// `log_name`.
fn verifier(vkey: Option<&str>, config: Option<&Path>) -> anyhow::Result<Option<NoteVerifier>> {
    if let (None, Some(config)) = (vkey, config) {
        let cfg = crate::HubConfig::load(config)?;
        let path = match &cfg.hub.checkpoint_key {
            Some(p) => cfg.resolve(p),
            None => cfg.hub.data_dir.join(crate::backup::CHECKPOINT_KEY),
        };
        let pem = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the checkpoint key {}", path.display()))?;
        let key = tongbao_proto::keys::SigningKey::from_pem(&pem)
            .with_context(|| format!("the checkpoint key {}", path.display()))?;
        return Ok(Some(NoteVerifier::new(
            &cfg.hub.log_name,
            tongbao_proto::checkpoint::KeyType::Ed25519,
            key.public_key(),
        )?));
    }
    vkey.map(|k| {
        NoteVerifier::from_vkey(k).with_context(|| {
            format!(
                "--hub-key {:?} is not a checkpoint key (vkey)",
                tongbao_proto::echo::shown(k)
            )
        })
    })
    .transpose()
}

/// What a manifest says, for the operator.
fn describe(out: &mut String, manifest: &Manifest) {
    let entries: u64 = manifest.channels.values().map(|c| c.size).sum();
    let _ = writeln!(
        out,
        "Backup taken {} by hub {} (storage format {}, commit {}): {} channel(s), {entries} entries, {} bytes.",
        manifest.taken_at,
        manifest.hub_version,
        manifest.storage_format,
        manifest.commit,
        manifest.channels.len(),
        manifest.store_bytes
    );
    for (channel, c) in &manifest.channels {
        let covered = c.checkpoint_size.map_or("no checkpoint".to_string(), |s| {
            format!("checkpoint of size {s}")
        });
        let _ = writeln!(out, "  {channel}: {} entries, {covered}", c.size);
    }
}

/// Runs `backup`; returns its report.
pub fn backup(args: BackupArgs) -> anyhow::Result<String> {
    let mut out = String::new();
    let manifest = match (&args.dir, &args.data_dir) {
        (Some(dir), _) => {
            let to = std::path::absolute(&args.to)
                .with_context(|| format!("cannot make {} absolute", args.to.display()))?;
            let conn = AdminConnection::new(dir.clone(), args.operator.clone(), args.hub.clone());
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let text = rt.block_on(async {
                let channel = connect(&conn, Method::Backup).await?;
                let r = AdminClient::new(channel)
                    .backup(pb::BackupRequest {
                        to: to.display().to_string(),
                    })
                    .await
                    .map_err(refused)?
                    .into_inner();
                anyhow::Ok(r.manifest)
            })?;
            serde_json::from_str(&text)
                .context("the hub answered with a manifest that does not read")?
        }
        (None, Some(data)) => {
            crate::backup::refuse_if_held(data)?;
            if !data.join("db").is_file() {
                anyhow::bail!(
                    "{} holds no hub data (no database file db in it)",
                    data.display()
                );
            }
            let store = crate::store::SledStore::open_keeping_free(data, true, 0)?;
            let checkpoint_key = args
                .checkpoint_key
                .clone()
                .unwrap_or_else(|| data.join(crate::backup::CHECKPOINT_KEY));
            use crate::store::Store as _;
            let hub_key = crate::backup::key_file_verifier(&checkpoint_key, &store.checkpoints()?)?
                .map(|v| v.to_vkey());
            let source = crate::backup::BackupSource {
                data_dir: data.clone(),
                checkpoint_key,
                hub_key,
                keep_free: crate::config::default_min_free_mib().saturating_mul(2 << 20),
            };
            crate::backup::backup(&store, &source, &args.to)?
        }
        (None, None) => {
            anyhow::bail!("give --dir ADMIN (a running hub) or --data-dir D (a stopped one)")
        }
    };
    describe(&mut out, &manifest);
    let _ = writeln!(
        out,
        "Written to {}; check it with `tongbao-hub restore --from {} --data-dir NEW` on a spare directory.",
        args.to.display(),
        args.to.display()
    );
    if manifest.checkpoint_key.is_some() {
        let _ = writeln!(
            out,
            "It holds the hub's checkpoint key: keep it as secret as the key."
        );
    } else {
        let _ = writeln!(
            out,
            "The hub's checkpoint key is not in it (kept outside the data directory): back the key up with the CA's material."
        );
    }
    Ok(out)
}

/// Runs `restore`; returns its report.
pub fn restore(args: RestoreArgs) -> anyhow::Result<String> {
    let (manifest, report) = crate::backup::restore(
        &args.from,
        &args.data_dir,
        verifier(args.hub_key.as_deref(), args.config.as_deref())?,
    )?;
    let mut out = String::new();
    describe(&mut out, &manifest);
    let _ = writeln!(
        out,
        "Restored into {} and verified: {}; every channel matches the manifest.",
        args.data_dir.display(),
        report.summary()
    );
    let _ = writeln!(
        out,
        "Clients that saw checkpoints newer than this backup will report a rollback: see docs/operations.md (Restoring)."
    );
    Ok(out)
}

/// Runs `verify-data`: Ok with the report when everything holds, an
/// error (exit status 1) naming every failure otherwise.
pub fn verify(args: VerifyArgs) -> anyhow::Result<String> {
    let report: VerifyReport = crate::backup::verify_data(
        &args.data_dir,
        verifier(args.hub_key.as_deref(), args.config.as_deref())?,
    )?;
    if !report.ok() {
        let mut text = String::new();
        for f in &report.failures {
            let _ = writeln!(text, "FAILED {f}");
        }
        anyhow::bail!(
            "{text}{}: {} failure(s) in {}",
            report.summary(),
            report.failures.len(),
            display(&args.data_dir)
        );
    }
    Ok(format!(
        "{} in {}: every entry matches its leaf hash and every channel its checkpoint.\n",
        report.summary(),
        display(&args.data_dir)
    ))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
