//! A full disk: writes stop, nothing answered is lost, reads of what is
//! durable go on, the hub stops when told, and starts again once space
//! is freed. Runs on a small tmpfs the test mounts, so only as root;
//! skipped with a message otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tongbao_client::{Client, Draft, PushReceipt};
use tongbao_proto::pb;
use tongbao_proto::pb::log_client::LogClient;
use tongbao_tests::{BoxError, HubProcess, TestPki, TestResult, note, raw_channel};

const HUB: &str = env!("CARGO_BIN_EXE_tongbao-test-hub");

/// A tmpfs of `mib` MiB, unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
    _base: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> Result<Option<Self>, BoxError> {
        let base = tempfile::tempdir()?;
        let dir = base.path().join("disk");
        std::fs::create_dir(&dir)?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status();
        match mounted {
            Ok(s) if s.success() => Ok(Some(Self { dir, _base: base })),
            _ => {
                eprintln!("skipped: cannot mount a small tmpfs (needs root)");
                Ok(None)
            }
        }
    }

    fn resize(&self, mib: u32) -> TestResult {
        let s = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.dir)
            .status()?;
        if !s.success() {
            return Err("remount failed".into());
        }
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_writes_keeps_reads_and_stops_cleanly() -> TestResult {
    let Some(disk) = SmallDisk::mount(96)? else {
        return Ok(());
    };
    let pki = TestPki::generate()?;
    pki.edit_hub_toml("min_free_mib = 64", "min_free_mib = 32")?;
    let data = disk.path().join("data");
    let hub = HubProcess::start_on(&pki, HUB, &data)?;
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    // A first entry and its checkpoint, stored while there is room.
    let first = tax.push(note("first").to_units(["finance"])).await?;
    let mut log = LogClient::new(raw_channel(&pki, "finance", hub.addr).await?);
    let stored = log
        .get_checkpoint(pb::GetCheckpointRequest {
            channel: "tax".into(),
        })
        .await?
        .into_inner();
    let body = vec![b'x'; 256 << 10];
    let mut answered: Vec<PushReceipt> = vec![first];
    let mut refusal = None;
    for i in 0..400 {
        let draft =
            Draft::new(pb::Kind::Notification, format!("n{i}"), body.clone()).to_units(["finance"]);
        match tax.push(draft).await {
            Ok(r) => answered.push(r),
            Err(e) => {
                refusal = Some(e.to_string());
                break;
            }
        }
    }
    let refusal = refusal.ok_or("the disk never filled")?;
    assert!(refusal.contains("min_free_mib"), "{refusal}");
    assert!(!answered.is_empty());

    // Reads of what is durable go on: the inbox, entries, checkpoints.
    // (Inclusion proofs of the entries after the last stored checkpoint
    // wait for the restart: a new checkpoint cannot be stored.)
    let mut reader = pki.unit_config("finance", hub.addr)?;
    reader.verify_inclusion = false;
    let finance = Client::connect(&reader).await?;
    let mut seen = 0;
    let mut after = 0;
    loop {
        let page = finance.pull(after, 8).await?;
        if page.entries.is_empty() {
            break;
        }
        seen += page.entries.len();
        after = page.next_after(after);
    }
    assert_eq!(seen, answered.len());
    let cp = log
        .get_checkpoint(pb::GetCheckpointRequest {
            channel: "tax".into(),
        })
        .await?
        .into_inner();
    assert!(cp.size >= stored.size, "{cp:?}");

    // A stop completes.
    hub.terminate()?;
    let status = hub.wait_exit(Duration::from_secs(60))?;
    assert!(status.success(), "{status}");

    // Something else fills the disk: a start is refused, saying what it
    // needs, and changes nothing.
    let filler = disk.path().join("filler");
    let free = fs2::available_space(disk.path())?;
    std::fs::write(&filler, vec![0u8; free.saturating_sub(8 << 20) as usize])?;
    let stderr = HubProcess::refused_start(&pki, HUB, &data)?;
    assert!(
        stderr.contains("min_free_mib") && stderr.contains("free space"),
        "{stderr}"
    );

    // With space freed it starts, and every answered push is there.
    std::fs::remove_file(&filler)?;
    disk.resize(256)?;
    let hub = HubProcess::start_on(&pki, HUB, &data)?;
    let tax = Client::connect(&pki.unit_config("tax", hub.addr)?).await?;
    for r in &answered {
        let e = tax.get_entry(&r.channel, r.seq).await?;
        assert_eq!(e.leaf_hash.to_vec(), r.leaf_hash);
    }
    tax.push(note("after the space was freed").to_units(["finance"]))
        .await?;
    hub.kill()
}
