//! The Prometheus metrics, scraped over their own plain HTTP listener from
//! a hub on loopback: the series the operations guide names exist and move
//! with the traffic, made-up paths cannot add series, and every metric
//! the example alert rules use is served.

use std::time::Duration;
use tongbao_proto::pb;
use tongbao_tests::{TestHub, TestResult, code_of, note, raw_channel, sample, scrape, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn metrics_addr(t: &TestHub) -> Result<std::net::SocketAddr, String> {
    t.hub
        .as_ref()
        .and_then(|h| h.metrics_addr())
        .ok_or_else(|| "the hub serves no metrics".to_string())
}

fn value(scraped: &str, series: &str) -> f64 {
    sample(scraped, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_rpcs_commits_and_state_show_in_the_metrics() -> TestResult {
    let t = TestHub::start_with(|c| {
        c.metrics.sample_every_secs = 1;
        // Every delivery is overdue at once: the overdue gauge must move.
        c.ack_deadlines.0.insert("default".into(), "1s".into());
    })
    .await?;
    let addr = metrics_addr(&t)?;
    let before = scrape(addr).await?;
    let appended = r#"tongbao_pushes_total{outcome="appended"}"#;
    let refused = r#"tongbao_pushes_total{outcome="InvalidArgument"}"#;
    let push_ok = r#"tongbao_rpc_requests_total{method="tongbao.v1.Exchange/Push",code="OK"}"#;
    assert_eq!(value(&before, appended), 0.0);

    let tax = t.unit("tax").await?;
    for i in 0..3 {
        tax.push(note(&format!("n{i}")).to_units(["finance"]))
            .await?;
    }
    // A refused push counts as refused, with its code, not as appended.
    let refusal = tax.push(note("nobody").to_units(["no-such-unit"])).await;
    assert_eq!(
        refusal.as_ref().err().and_then(code_of),
        Some(tonic::Code::InvalidArgument),
        "{refusal:?}"
    );

    let after = scrape(addr).await?;
    assert_eq!(value(&after, appended), 3.0, "{after}");
    assert_eq!(value(&after, refused), 1.0);
    assert!(value(&after, push_ok) >= 3.0, "{after}");
    assert!(
        value(
            &after,
            r#"tongbao_rpc_duration_seconds_count{method="tongbao.v1.Exchange/Push"}"#
        ) >= 4.0
    );
    assert!(value(&after, "tongbao_group_commit_entries_sum") >= 3.0);
    assert!(value(&after, "tongbao_group_commit_duration_seconds_count") >= 1.0);
    assert!(value(&after, "tongbao_fsync_duration_seconds_count") >= 1.0);
    assert!(value(&after, "tongbao_journal_files") >= 1.0);
    assert!(value(&after, "tongbao_data_disk_free_bytes") > 0.0);
    assert!(
        value(&after, "tongbao_data_disk_size_bytes")
            >= value(&after, "tongbao_data_disk_free_bytes")
    );
    assert_eq!(value(&after, "tongbao_journal_refusing_writes"), 0.0);
    assert!(value(&after, r#"tongbao_open_connections{kind="unit"}"#) >= 1.0);
    assert_eq!(
        value(&after, r#"tongbao_channel_entries{channel="tax"}"#),
        3.0
    );
    // The CA index beside hub.toml: every current certificate, ~30 days.
    let days = first_cert_seconds(&after, "tax") / 86_400.0;
    assert!((28.0..=31.0).contains(&days), "{days} days\n{after}");

    // The cadence signs the channel's checkpoint within seconds; its age
    // is then measured from then.
    wait_until(WAIT, "tax's checkpoint covers its 3 entries", || async {
        Ok(value(
            &scrape(addr).await?,
            r#"tongbao_checkpoint_entries{channel="tax"}"#,
        ) == 3.0)
    })
    .await?;
    let aged = scrape(addr).await?;
    assert!(sample(&aged, r#"tongbao_checkpoint_age_seconds{channel="tax"}"#).is_some());

    // 3 unanswered deliveries past their 1 s deadline, in tax's mechanisms.
    wait_until(WAIT, "the overdue deliveries are counted", || async {
        Ok(total(&scrape(addr).await?, "tongbao_overdue_deliveries{") >= 3.0)
    })
    .await?;

    // A subscription shows while it is open.
    let finance = raw_channel(&t.pki, "finance", t.addr).await?;
    let mut exchange = pb::exchange_client::ExchangeClient::new(finance);
    let stream = exchange
        .subscribe(pb::SubscribeRequest::default())
        .await?
        .into_inner();
    wait_until(WAIT, "the subscription is counted", || async {
        Ok(value(
            &scrape(addr).await?,
            r#"tongbao_open_subscriptions{kind="unit"}"#,
        ) == 1.0)
    })
    .await?;
    drop(stream);
    t.stop().await
}

/// The first certificate-expiry value whose labels contain `party`.
fn first_cert_seconds(scraped: &str, party: &str) -> f64 {
    scraped
        .lines()
        .filter(|l| l.starts_with("tongbao_certificate_expiry_seconds{") && l.contains(party))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(f64::MIN)
}

/// The sum of every series beginning with `prefix`.
fn total(scraped: &str, prefix: &str) -> f64 {
    scraped
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_paths_add_no_series_and_only_metrics_is_served() -> TestResult {
    let t = TestHub::start().await?;
    let addr = metrics_addr(&t)?;
    // A call to a method no service has: counted as `other`, whatever its path.
    let channel = raw_channel(&t.pki, "tax", t.addr).await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/tongbao.v1.Exchange/NoSuchMethod");
    let refused: Result<tonic::Response<()>, tonic::Status> = grpc
        .unary(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(tonic::Code::Unimplemented)
    );
    let scraped = scrape(addr).await?;
    assert_eq!(
        value(
            &scraped,
            r#"tongbao_rpc_requests_total{method="other",code="Unimplemented"}"#
        ),
        1.0,
        "{scraped}"
    );
    assert!(!scraped.contains("NoSuchMethod"));

    // Anything but GET /metrics is not found.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /secrets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await?;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_turned_off() -> TestResult {
    let t = TestHub::start_with(|c| c.metrics.enabled = false).await?;
    assert!(t.hub.as_ref().and_then(|h| h.metrics_addr()).is_none());
    t.stop().await
}

/// Every metric the example alert rules name is served, and the rules
/// the operations guide promises are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_alert_rules_use_only_served_metrics() -> TestResult {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/prometheus/alerts.yml"
    ))?;
    for alert in [
        "TongbaoCertificateExpiringSoon",
        "TongbaoDeliveriesOverdue",
        "TongbaoJournalRefusingWrites",
        "TongbaoCheckpointStale",
        "TongbaoDataDiskLow",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "no {alert}");
    }
    let t = TestHub::start_with(|c| c.metrics.sample_every_secs = 1).await?;
    let addr = metrics_addr(&t)?;
    let tax = t.unit("tax").await?;
    tax.push(note("one").to_units(["finance"])).await?;
    wait_until(WAIT, "the sampled metrics are filled", || async {
        let s = scrape(addr).await?;
        Ok(s.contains("tongbao_overdue_deliveries{")
            && s.contains("tongbao_checkpoint_age_seconds{"))
    })
    .await?;
    let scraped = scrape(addr).await?;
    let mut named = 0;
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
    {
        for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("tongbao_") {
                named += 1;
                let served = scraped
                    .lines()
                    .any(|l| l.starts_with(word) && l[word.len()..].starts_with(['{', ' ']));
                assert!(
                    served,
                    "the alert rules use {word}, which the hub does not serve"
                );
            }
        }
    }
    assert!(named >= 5, "the rules name only {named} metrics");
    t.stop().await
}
