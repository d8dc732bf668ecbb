//! A standby that may no longer serve (its refreshes stall, the leader
//! migrated the schema, a stored checkpoint fails its check) ends the
//! subscriptions it holds open with the status its new calls get, so
//! that no subscriber waits on it, and serves again once it can.

use crate::common::*;
use crate::standby_limits::{pair_with, raw_subscription, until_it_ends};
use std::path::Path;
use tongbao_proto::pb;

/// Waits for `stream` to end with a standby's refusal saying `why`.
async fn ends_refused(stream: tonic::Streaming<pb::Delivery>, why: &str) -> TestResult {
    let status = tokio::time::timeout(HANG, until_it_ends(stream))
        .await
        .map_err(|_| format!("a subscription stayed open on a standby that should say {why:?}"))?
        .ok_or("the subscription ended without a status")?;
    assert!(
        tongbao_proto::replica::refused_by_standby(&status),
        "{status:?}"
    );
    assert!(status.message().contains(why), "{status:?}");
    Ok(())
}

/// Waits until the standby's `/health` answers `code` with `says` in it.
async fn health_says(metrics: SocketAddr, code: &str, says: &str) -> TestResult {
    wait_until(
        HANG,
        &format!("health {code} saying {says:?}"),
        || async move {
            let (status, body) = health(metrics).await?;
            Ok(status.contains(code) && body.contains(says))
        },
    )
    .await
}

/// Lets every held refresh at `dir` go on until `stop` exists.
async fn release_refreshes(dir: &Path, stop: &Path) {
    let mut k = 1;
    while !stop.exists() {
        if dir.join(format!("reached-{k}")).exists() {
            if std::fs::write(dir.join(format!("release-{k}")), b"").is_err() {
                return;
            }
            k += 1;
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// Refreshes of a standby held at their failpoint and let go, one by
/// one, until [`Held::go_stale`] holds the next one for good.
struct Held {
    _dir: tempfile::TempDir,
    stop: std::path::PathBuf,
    releaser: Option<tokio::task::JoinHandle<()>>,
}

impl Held {
    /// Holds the standby's next refresh for good: it goes stale (for as
    /// long as `self` lives: the failpoint's directory goes with it).
    async fn go_stale(&mut self) -> TestResult {
        std::fs::write(&self.stop, b"")?;
        if let Some(releaser) = self.releaser.take() {
            releaser.await?;
        }
        Ok(())
    }
}

/// A leader and a standby of `pki` (see `pair_with`), the standby
/// refreshing every 200 ms, each refresh held until let go.
async fn held_pair(
    pki: &TestPki,
) -> Result<(Held, (Replica, Replica, SocketAddr, SocketAddr)), BoxError> {
    pki.edit_hub_toml(
        "replica_name = \"replica\"\n",
        "replica_name = \"replica\"\nstandby_refresh_ms = 200\n",
    )?;
    let dir = tempfile::tempdir()?;
    let stop = dir.path().join("stop");
    let point = format!("standby-refresh:hold:{}", dir.path().display());
    let releaser = {
        let (dir, stop) = (dir.path().to_path_buf(), stop.clone());
        tokio::spawn(async move { release_refreshes(&dir, &stop).await })
    };
    let pair = pair_with(pki, &[("TONGBAO_FAILPOINT", point.as_str())]).await?;
    let held = Held {
        _dir: dir,
        stop,
        releaser: Some(releaser),
    };
    Ok((held, pair))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_standby_that_goes_stale_ends_its_open_subscriptions() -> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    // Every refresh holds at the failpoint; the test lets them go on until
    // the subscription is open, then holds the next one for good.
    let (mut held, (_a, b, _leader, standby)) = held_pair(&pki).await?;
    let metrics = b.metrics.ok_or("no metrics address")?;
    let stream = raw_subscription(&pki, standby).await?;
    held.go_stale().await?;
    ends_refused(stream, "not refreshed for").await?;
    health_says(metrics, "503", "not refreshed for").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_newer_schema_or_an_altered_checkpoint_stops_a_standby_until_mended()
-> TestResult {
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let (_a, b, leader, standby) = pair_with(&pki, &[]).await?;
    let metrics = b.metrics.ok_or("no metrics address")?;
    let db = database(&pki)?;
    push_some(&pki, "tax", leader, 2).await?;
    wait_until(HANG, "the standby serves the pushes", || {
        let pki = &pki;
        async move { Ok(inbox(pki, standby).await?.len() == 2) }
    })
    .await?;

    // A newer hub's migration.
    let stream = raw_subscription(&pki, standby).await?;
    db.execute("INSERT INTO schema_version (version) VALUES (999)")?;
    ends_refused(stream, "schema version 999").await?;
    health_says(metrics, "503", "schema version 999").await?;
    db.execute("DELETE FROM schema_version WHERE version = 999")?;
    health_says(metrics, "200", "SERVING").await?;

    // A stored checkpoint altered in the database: an extra line under
    // the same signature.
    let stream = raw_subscription(&pki, standby).await?;
    db.execute("UPDATE checkpoints SET note = replace(note, E'\\n\\n', E'\\nextra\\n\\n')")?;
    ends_refused(stream, "fails its check").await?;
    health_says(metrics, "503", "fails its check").await?;
    let refused = tongbao_tests::raw_channel(&pki, RECIPIENT, standby).await?;
    let refused = pb::exchange_client::ExchangeClient::new(refused)
        .pull(pb::PullRequest::default())
        .await
        .err()
        .ok_or("a standby serving an altered checkpoint served a pull")?;
    assert!(
        tongbao_proto::replica::refused_by_standby(&refused),
        "{refused:?}"
    );
    db.execute("UPDATE checkpoints SET note = replace(note, E'\\nextra\\n', E'\\n')")?;
    health_says(metrics, "200", "SERVING").await?;
    assert_eq!(inbox(&pki, standby).await?.len(), 2);
    Ok(())
}

/// A subscriber of the client library listing both replicas, served by
/// the standby, which then goes stale: its subscription, ended with
/// `UNAVAILABLE` on a standby that still answers, goes on to the leader
/// at once and resumes from its cursor there, without a gap, rather than
/// asking the stale standby again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
pub(crate) async fn a_library_subscriber_leaves_a_stale_standby_for_the_leader() -> TestResult {
    use crate::clients::{config_of_all, library_subscriber, said};
    let Some(pki) = replica_pki()? else {
        return Ok(());
    };
    let (mut held, (_a, _b, leader, standby)) = held_pair(&pki).await?;
    // The standby first: the subscription opens there.
    let reader =
        Client::connect(&config_of_all(pki.path(), RECIPIENT, &[standby, leader])?).await?;
    let (want, wanted) = watch::channel(0);
    let subscription = tokio::spawn(said(library_subscriber(reader, wanted)));
    let tax = Client::connect(&config(pki.path(), "tax", leader)?).await?;
    let first = tax.push(note("before").to_units([RECIPIENT])).await?;
    // Served by the standby once the leader signed it: then it goes stale.
    wait_until(HANG, "the standby serves the first entry", || {
        let pki = &pki;
        async move { Ok(!inbox(pki, standby).await?.is_empty()) }
    })
    .await?;
    held.go_stale().await?;
    let second = tax.push(note("after").to_units([RECIPIENT])).await?;
    want.send(2)?;
    let got = tokio::time::timeout(HANG, subscription)
        .await
        .map_err(|_| "the subscription stayed on the stale standby")???;
    assert_eq!(
        got,
        [(first.channel, first.seq), (second.channel, second.seq)]
    );
    Ok(())
}
