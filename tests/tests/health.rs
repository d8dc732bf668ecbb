//! gRPC health per service and reflection, over the hub's mTLS port: the
//! services are listed and described to generic tools; health says
//! SERVING while the hub runs, NOT_SERVING once it shuts down (open Watch
//! streams see it, then end, never holding the shutdown up) and, for the
//! services that write, while the journal refuses writes (a full disk).

use futures::StreamExt;
use std::time::Duration;
use tongbao_tests::{BoxError, TestHub, TestResult, raw_channel, wait_until};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const SERVICES: [&str; 6] = [
    "tongbao.v1.Exchange",
    "tongbao.v1.Log",
    "tongbao.v1.Audit",
    "tongbao.v1.Workflow",
    "tongbao.v1.Admin",
    "tongbao.v1.Directory",
];

async fn status(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<i32, tonic::Status> {
    Ok(health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?
        .into_inner()
        .status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_every_service() -> TestResult {
    let t = TestHub::start().await?;
    let mut reflection = ServerReflectionClient::new(raw_channel(&t.pki, "tax", t.addr).await?);
    let asks = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("tongbao.v1.Exchange".into()),
        MessageRequest::FileContainingSymbol("tongbao.v1.NoSuchThing".into()),
    ]
    .map(|m| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    });
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter(asks))
        .await?
        .into_inner();
    let listed = match answers.next().await.ok_or("no answer")??.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => l.service,
        other => return Err(format!("not a listing: {other:?}").into()),
    };
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    for s in SERVICES.iter().chain(&[
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ]) {
        assert!(names.contains(s), "{s} is not listed: {names:?}");
    }
    match answers.next().await.ok_or("no answer")??.message_response {
        Some(MessageResponse::FileDescriptorResponse(f)) => {
            assert!(!f.file_descriptor_proto.is_empty())
        }
        other => return Err(format!("no descriptor: {other:?}").into()),
    }
    // Older tools ask v1alpha: served too, with the same services.
    use tonic_reflection::pb::v1alpha;
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(
        raw_channel(&t.pki, "tax", t.addr).await?,
    );
    let ask = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut alpha_answers = alpha
        .server_reflection_info(futures::stream::iter([ask]))
        .await?
        .into_inner();
    match alpha_answers
        .next()
        .await
        .ok_or("no v1alpha answer")??
        .message_response
    {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            assert!(l.service.iter().any(|s| s.name == "tongbao.v1.Exchange"))
        }
        other => return Err(format!("not a v1alpha listing: {other:?}").into()),
    }
    // An unknown symbol is refused, NotFound, not a hang.
    match answers.next().await.ok_or("no answer")? {
        Err(status) => assert_eq!(status.code(), tonic::Code::NotFound),
        Ok(other) => return Err(format!("expected NotFound: {other:?}").into()),
    }
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_then_not_serving_from_the_shutdown() -> TestResult {
    let mut t = TestHub::start().await?;
    let channel = raw_channel(&t.pki, "tax", t.addr).await?;
    let mut health = HealthClient::new(channel);
    for s in SERVICES.iter().chain(&[""]) {
        assert_eq!(
            status(&mut health, s).await?,
            ServingStatus::Serving as i32,
            "{s}"
        );
    }
    let unknown = status(&mut health, "tongbao.v1.NoSuchService").await;
    assert_eq!(unknown.err().map(|s| s.code()), Some(tonic::Code::NotFound));

    let mut watch = health
        .watch(HealthCheckRequest {
            service: "tongbao.v1.Exchange".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        watch.next().await.ok_or("no status")??.status,
        ServingStatus::Serving as i32
    );
    let hub = t.hub.take().ok_or("no hub")?;
    let stopping = tokio::spawn(hub.shutdown());
    let mut seen = Vec::new();
    // The stream reports NOT_SERVING and then ends (or is cut by the stop).
    while let Some(Ok(update)) = watch.next().await {
        seen.push(update.status);
    }
    assert_eq!(
        seen.last(),
        Some(&(ServingStatus::NotServing as i32)),
        "{seen:?}"
    );
    tokio::time::timeout(Duration::from_secs(60), stopping).await???;
    Ok(())
}

/// Skipped unless root: a small tmpfs holds the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_writing_services_not_serving_on_a_full_disk() -> TestResult {
    let Some(disk) = SmallDisk::mount(96)? else {
        return Ok(());
    };
    let data = disk.0.path().join("disk").join("data");
    let t = TestHub::start_with(|c| {
        c.hub.data_dir = data.clone();
        c.hub.min_free_mib = 32;
    })
    .await?;
    let mut health = HealthClient::new(raw_channel(&t.pki, "tax", t.addr).await?);
    let tax = t.unit("tax").await?;
    // Fill the disk down to less than the reserve, then push until the
    // journal notices and refuses.
    let free = fs2::available_space(&data)?;
    std::fs::write(
        disk.0.path().join("disk").join("filler"),
        vec![0u8; free.saturating_sub(20 << 20) as usize],
    )?;
    let body = vec![b'x'; 256 << 10];
    let mut refused = false;
    for i in 0..64 {
        let draft = tongbao_client::Draft::new(
            tongbao_proto::pb::Kind::Notification,
            format!("n{i}"),
            body.clone(),
        )
        .to_units(["finance"]);
        if tax.push(draft).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the journal never refused a write");
    wait_until(
        Duration::from_secs(30),
        "Exchange reports NOT_SERVING",
        || {
            let mut h = health.clone();
            async move {
                Ok(
                    status(&mut h, "tongbao.v1.Exchange").await?
                        == ServingStatus::NotServing as i32,
                )
            }
        },
    )
    .await?;
    for s in ["", "tongbao.v1.Workflow", "tongbao.v1.Admin"] {
        assert_eq!(
            status(&mut health, s).await?,
            ServingStatus::NotServing as i32,
            "{s}"
        );
    }
    // Reads go on: the read-only services stay SERVING.
    for s in ["tongbao.v1.Log", "tongbao.v1.Audit", "tongbao.v1.Directory"] {
        assert_eq!(
            status(&mut health, s).await?,
            ServingStatus::Serving as i32,
            "{s}"
        );
    }
    let addr = t
        .hub
        .as_ref()
        .and_then(|h| h.metrics_addr())
        .ok_or("no metrics")?;
    let scraped = tongbao_tests::scrape(addr).await?;
    assert_eq!(
        tongbao_tests::sample(&scraped, "tongbao_journal_refusing_writes"),
        Some(1.0)
    );
    t.stop().await
}

/// A tmpfs of `mib` MiB under a temp dir, unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(mib: u32) -> Result<Option<Self>, BoxError> {
        let base = tempfile::tempdir()?;
        let dir = base.path().join("disk");
        std::fs::create_dir(&dir)?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status();
        match mounted {
            Ok(s) if s.success() => Ok(Some(Self(base))),
            _ => {
                eprintln!("skipped: cannot mount a small tmpfs (needs root)");
                Ok(None)
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path().join("disk"))
            .status();
    }
}
