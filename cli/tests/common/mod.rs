//! What the CLI tests share: a PKI and a hub on port 0 with every
//! `client.toml` pointed at it, and a way to run the `tongbao` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use tongbao_server::pki::{InitOptions, init};
use tongbao_server::{Hub, HubConfig};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Runs `tongbao --config <config> ARGS`: stdout, or stderr as the error.
pub fn tongbao(config: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_tongbao"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A PKI in `dir` and a hub on port 0, with every client.toml pointed at it.
pub async fn setup(dir: &Path) -> Result<Hub, Box<dyn std::error::Error + Send + Sync>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    init(
        dir,
        &InitOptions {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.join("data"),
            days: 1,
            force: false,
        },
    )?;
    let hub = Hub::start(&HubConfig::load(&dir.join("hub.toml"))?).await?;
    for group in ["units", "offices"] {
        for party in std::fs::read_dir(dir.join(group))? {
            let path = party?.path().join("client.toml");
            let text = std::fs::read_to_string(&path)?;
            std::fs::write(&path, text.replace("127.0.0.1:0", &hub.addr().to_string()))?;
        }
    }
    Ok(hub)
}

/// The `client.toml` of a party (`units/<id>`, `offices/<mechanism>`).
pub fn config(dir: &Path, group: &str, party: &str) -> PathBuf {
    dir.join(group).join(party).join("client.toml")
}
