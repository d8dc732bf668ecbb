//! Each replica's own access log, and a replica whose write fails.

use crate::common::*;

/// The hub key (`tongbao hub-key`) every replica of `pki` signs with.
pub(crate) fn hub_vkey(pki: &TestPki) -> Result<String, BoxError> {
    let key = tongbao_server::channel_log::load_or_create_key(
        &pki.path().join(tongbao_server::pki::CHECKPOINT_KEY_FILE),
    )?;
    Ok(
        tongbao_proto::checkpoint::NoteSigner::new(tongbao_server::pki::DEFAULT_LOG_NAME, &key)?
            .verifier()?
            .to_vkey(),
    )
}

/// Runs `tongbao-hub ARGS` to its end: success and what it printed.
pub(crate) fn hub_says(args: &[&str]) -> Result<(bool, String), BoxError> {
    let out = Command::new(HUB)
        .args(args)
        .env("RUST_LOG", "error")
        .output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn each_replica_signs_its_own_access_log_under_its_own_name() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let log = tongbao_server::pki::DEFAULT_LOG_NAME;
    let mut a = Replica::spawn(&pki, "data-a")?;
    assert!(!a.started().await?, "{}", a.stderr());
    let mut b = Replica::spawn(&pki, "data-b")?;
    assert!(b.started().await?, "{}", b.stderr());
    push_some(&pki, "tax", a.addr.ok_or("no address")?, 1).await?;
    a.terminate()?;
    assert!(a.exited().await?.success(), "{}", a.stderr());
    wait_until(HANG, "the standby takes over", || {
        let leads = b.leads();
        async move { Ok(leads) }
    })
    .await?;
    push_some(&pki, "tax", b.addr.ok_or("no address")?, 1).await?;
    // A second process under b's name does not write b's log: as a
    // standby it says why it cannot serve, and tries again.
    let twin = Replica::spawn(&pki, "data-b")?;
    let refusal = format!("another hub process is writing the access log {log}/.access-log/data-b");
    wait_until(HANG, "the second data-b is refused its origin", || {
        let said = twin.stderr();
        let refused = said.contains(&refusal);
        async move { Ok(refused) }
    })
    .await?;
    drop(twin);
    b.terminate()?;
    assert!(b.exited().await?.success(), "{}", b.stderr());

    // The logs are in the database: a replica's host (its data directory)
    // lost, its log is still verified and exported with any replica's config.
    for name in ["data-a", "data-b"] {
        std::fs::remove_dir_all(pki.path().join(name))?;
    }
    let vkey = hub_vkey(&pki)?;
    let config = pki.path().join("hub.toml").display().to_string();
    let (ok, said) = hub_says(&[
        "audit-log",
        "verify",
        "--config",
        &config,
        "--hub-key",
        &vkey,
    ])?;
    assert!(ok, "{said}");
    for name in ["data-a", "data-b"] {
        let origin = format!("{log}/.access-log/{name}");
        assert!(
            said.contains(&format!("the access log {origin} in the database")),
            "{said}"
        );
    }
    for name in ["data-a", "data-b"] {
        let origin = format!("{log}/.access-log/{name}");
        let (ok, said) = hub_says(&[
            "audit-log",
            "verify",
            "--config",
            &config,
            "--replica",
            name,
            "--hub-key",
            &vkey,
        ])?;
        assert!(ok && said.lines().count() == 1, "{said}");
        let out = pki
            .path()
            .join(format!("{name}.json"))
            .display()
            .to_string();
        let (ok, said) = hub_says(&[
            "audit-log",
            "export",
            "--config",
            &config,
            "--replica",
            name,
            "--out",
            &out,
        ])?;
        assert!(ok, "{said}");
        let (ok, said) = hub_says(&["audit-log", "verify", &out, "--hub-key", &vkey])?;
        assert!(ok, "{said}");
        assert!(
            said.contains(&format!("checkpoint of {origin} (size")),
            "{said}"
        );
    }
    // Without --replica an export names the logs to choose from.
    let out = pki.path().join("all.json").display().to_string();
    let (ok, said) = hub_says(&["audit-log", "export", "--config", &config, "--out", &out])?;
    assert!(
        !ok && said.contains("give --replica NAME, one of: data-a, data-b"),
        "{said}"
    );

    // A name outside a-z, 0-9 and - is refused before anything starts.
    let (ok, said) = hub_says(&[
        "serve",
        "--config",
        &pki.path().join("hub.toml").display().to_string(),
        "--replica-name",
        "Hub/A",
    ])?;
    assert!(!ok && said.contains("replica_name"), "{said}");
    Ok(())
}

/// Makes every insert of an entry fail, as a commit the database refuses.
pub(crate) const FAIL_COMMITS: &str = "CREATE FUNCTION tongbao_test_refuse() RETURNS trigger \
     LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'test: the commit is refused'; END $$; \
     CREATE TRIGGER tongbao_test_refuse BEFORE INSERT ON entries \
     FOR EACH ROW EXECUTE FUNCTION tongbao_test_refuse();";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_replica_whose_commit_fails_stops_and_a_standby_takes_over() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let mut a = Replica::spawn(&pki, "data-a")?;
    assert!(!a.started().await?, "{}", a.stderr());
    let a_addr = a.addr.ok_or("no address")?;
    let mut b = Replica::spawn(&pki, "data-b")?;
    assert!(b.started().await?, "{}", b.stderr());
    let acked = push_some(&pki, "tax", a_addr, 2).await?;

    database(&pki)?.execute(FAIL_COMMITS)?;
    let tax = Client::connect(&config(pki.path(), "tax", a_addr)?).await?;
    let refused = tax.push(note("refused").to_units([RECIPIENT])).await;
    assert!(
        refused.is_err(),
        "a push whose commit failed was acknowledged"
    );
    let status = a.exited().await?;
    assert!(!status.success(), "it stops failing");
    let said = a.stderr();
    assert!(
        said.contains("stopped: a write to the database failed"),
        "{said}"
    );

    // The database accepts commits again: the standby, no longer stalled
    // behind a leader that kept the lease, takes over and continues.
    database(&pki)?.execute("DROP TRIGGER tongbao_test_refuse ON entries")?;
    wait_until(HANG, "the standby takes over", || {
        let leads = b.leads();
        async move { Ok(leads) }
    })
    .await?;
    let b_addr = b.addr.ok_or("no address")?;
    let after = push_some(&pki, "tax", b_addr, 1).await?;
    let last = acked.last().ok_or("nothing acknowledged")?;
    assert_eq!(
        after[0].seq,
        last.seq + 1,
        "nothing of the failed commit landed"
    );
    let mut expected: Vec<(String, u64)> =
        acked.iter().map(|r| (r.channel.clone(), r.seq)).collect();
    expected.push((after[0].channel.clone(), after[0].seq));
    assert_eq!(inbox(&pki, b_addr).await?, expected);
    b.terminate()?;
    assert!(b.exited().await?.success(), "{}", b.stderr());
    Ok(())
}
