//! The admin trail is the database's, not a replica's: a replica that
//! takes over from a leader killed -9 lists the leader's records and
//! continues their chain.

use crate::common::*;
use tongbao_proto::pb;
use tongbao_tests::Role;

async fn suspend(pki: &TestPki, addr: SocketAddr, unit: &str) -> TestResult {
    Client::connect(&pki.role_config(Role::Security, addr))
        .await?
        .admin()
        .suspend_unit(pb::SuspendUnitRequest {
            unit: unit.into(),
            reason: "trail test".into(),
        })
        .await?;
    Ok(())
}

async fn trail(pki: &TestPki, addr: SocketAddr) -> Result<Vec<pb::AdminAuditRecord>, BoxError> {
    Ok(Client::connect(&pki.role_config(Role::Audit, addr))
        .await?
        .admin_audit(0, 100)
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_replica_that_takes_over_continues_the_admin_trail() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let mut replicas = vec![Replica::spawn(&pki, "data-a")?];
    assert!(!replicas[0].started().await?, "{}", replicas[0].stderr());
    replicas.push(Replica::spawn(&pki, "data-b")?);
    assert!(
        replicas[1].started().await?,
        "the second waits as a standby"
    );
    let a_addr = replicas[0].addr.ok_or("no address")?;
    suspend(&pki, a_addr, "finance").await?;
    suspend(&pki, a_addr, "state-security").await?;
    let before = trail(&pki, a_addr).await?;
    assert_eq!(before.len(), 2, "{before:?}");

    // The leader dies; the standby takes over on the database as it is.
    replicas[0].kill()?;
    let b = leader(&mut replicas, Some(0)).await?;
    let b_addr = replicas[b].addr.ok_or("no address")?;
    assert_eq!(trail(&pki, b_addr).await?, before, "the same trail");
    suspend(&pki, b_addr, "tax").await?;
    let after = trail(&pki, b_addr).await?;
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(after[..2], before[..]);
    assert_eq!(after[2].seq, 3);
    assert_eq!(
        after[2].previous_hash, before[1].hash,
        "it continues the chain"
    );
    // One chain from the first record: each names the one before it.
    let mut previous = vec![0u8; 32];
    for (i, record) in after.iter().enumerate() {
        assert_eq!(record.seq, i as u64 + 1);
        assert_eq!(record.previous_hash, previous, "record {}", record.seq);
        assert_eq!(record.hash.len(), 32, "record {}", record.seq);
        previous.clone_from(&record.hash);
    }
    Ok(())
}

/// A data directory of an earlier version (its `admin-audit.jsonl`) does
/// not keep a standby from serving: the file stays until the replica
/// leads, then is moved into the stored trail, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_standby_with_an_earlier_trail_file_serves_and_moves_it_once_it_leads()
-> TestResult {
    use tongbao_server::admin_audit::{ADMIN_AUDIT_FILE, AdminAudit, write_jsonl};
    use tongbao_server::store::{SledStore, Store};
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let mut replicas = vec![Replica::spawn(&pki, "data-a")?];
    assert!(!replicas[0].started().await?, "{}", replicas[0].stderr());
    // The second replica's data directory, as an earlier version left it.
    let data = pki.path().join("data-b");
    std::fs::create_dir_all(&data)?;
    let scratch = tempfile::tempdir()?;
    let old_store: Arc<dyn Store> = Arc::new(SledStore::open(&scratch.path().join("db"), true)?);
    let old = AdminAudit::open(old_store.clone(), scratch.path())?;
    for unit in ["tax", "finance"] {
        old.record("urn:tongbao:operator:ops", "suspend-unit", unit, 0, "done")?;
    }
    let old_records = old.list(0, 10, 1 << 20)?.records;
    write_jsonl(
        old_store.as_ref(),
        scratch.path(),
        &data.join(ADMIN_AUDIT_FILE),
    )?;
    drop((old, old_store));

    replicas.push(Replica::spawn(&pki, "data-b")?);
    assert!(replicas[1].started().await?, "{}", replicas[1].stderr());
    assert!(
        replicas[1].reads.is_some(),
        "the standby serves reads: {}",
        replicas[1].stderr()
    );
    assert!(
        data.join(ADMIN_AUDIT_FILE).exists(),
        "a standby moves nothing"
    );

    // It leads: the file is the trail now, and the trail goes on from it.
    replicas[0].kill()?;
    let b = leader(&mut replicas, Some(0)).await?;
    let b_addr = replicas[b].addr.ok_or("no address")?;
    let listed = trail(&pki, b_addr).await?;
    let hashes: Vec<String> = listed
        .iter()
        .map(|r| r.hash.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let old_hashes: Vec<String> = old_records.iter().map(|r| r.hash.clone()).collect();
    assert_eq!(hashes, old_hashes, "{listed:?}");
    assert!(!data.join(ADMIN_AUDIT_FILE).exists());
    assert!(data.join("admin-audit.jsonl.moved").exists());
    suspend(&pki, b_addr, "state-security").await?;
    let after = trail(&pki, b_addr).await?;
    assert_eq!(after.len(), 3, "moved once: {after:?}");
    assert_eq!(after[2].previous_hash, listed[1].hash);
    Ok(())
}
