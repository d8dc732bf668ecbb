//! Webhook delivery: each verified entry of the inbox, once its inclusion
//! is proven (`proven.rs`), is POSTed, in inbox order, to one configured
//! URL, signed with HMAC-SHA256 (see `signature.rs`), so a system can
//! receive without holding a connection.
//!
//! An entry is retried a bounded number of times with doubling backoff;
//! then delivery pauses (reported by `GET /v1/webhook`) until
//! `POST /v1/webhook/resume` or a restart, and starts again from the same
//! entry. An entry that fails verification pauses delivery the same way,
//! unsent. The cursor of the last entry answered with 2xx is kept in a
//! file, so a restarted agent neither skips nor repeats a delivered entry
//! (a delivery interrupted before its answer is repeated: receivers
//! deduplicate by the signed body's `entry.channel` and `entry.seq`).

use crate::AgentError;
use crate::proven::{self, Live};
use crate::signature;
use crate::views;
use axum::body::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::Full;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tongbao_client::{Client, VerifiedEntry};

/// Longest wait for one delivery's answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest backoff between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Wait before subscribing again after the inbox stream failed.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(5);
/// Bytes of a failure reason kept for the status.
const REASON_BYTES: usize = 300;

/// Where and how the agent delivers.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://` URL; loopback only unless `allow_remote`.
    pub url: String,
    /// The HMAC key's file (0600; made if missing).
    pub secret_file: PathBuf,
    /// Where the cursor of the last delivered entry is kept.
    pub cursor_file: PathBuf,
    /// Permit a host that is not loopback (the body then crosses a
    /// network in clear text: put a TLS proxy or a private link there).
    pub allow_remote: bool,
    /// Attempts per entry before delivery pauses (at least 1).
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles up to 60 s.
    pub first_backoff: Duration,
}

impl WebhookConfig {
    pub const DEFAULT_ATTEMPTS: u32 = 8;
    pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
}

/// A URL the agent may deliver to.
pub fn check_url(url: &str, allow_remote: bool) -> Result<hyper::Uri, AgentError> {
    let bad = |reason: &str| AgentError::WebhookUrl(format!("{url:?}: {reason}"));
    let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad(
            "only http:// URLs (put a local TLS proxy in front of an https endpoint)",
        ));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback && !allow_remote {
        return Err(bad(
            "the host is not loopback (127.0.0.1, ::1, localhost); allow it explicitly with --webhook-allow-remote",
        ));
    }
    Ok(uri)
}

/// What `GET /v1/webhook` reports.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Snapshot {
    /// Cursor of the last entry delivered (answered 2xx).
    pub delivered_after: u64,
    pub delivered: u64,
    /// Failed attempts of the entry being delivered now.
    pub failed_attempts: u32,
    pub last_error: Option<String>,
    /// Delivery paused after the last attempt failed.
    pub paused: bool,
}

/// Delivery state shared with the API.
#[derive(Debug, Default)]
pub struct Status {
    now: Mutex<Snapshot>,
    resume: Notify,
}

impl Status {
    pub fn snapshot(&self) -> Snapshot {
        self.now.lock().map(|s| s.clone()).unwrap_or_default()
    }
    fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        if let Ok(mut s) = self.now.lock() {
            f(&mut s);
        }
    }
    /// Starts a paused delivery again; false when it was not paused.
    pub fn resume(&self) -> bool {
        let paused = self.snapshot().paused;
        if paused {
            self.resume.notify_one();
        }
        paused
    }
}

/// A running webhook delivery.
pub struct Webhook {
    uri: hyper::Uri,
    key: Vec<u8>,
    config: WebhookConfig,
    http: HttpClient<HttpConnector, Full<Bytes>>,
    pub status: Arc<Status>,
}

impl Webhook {
    /// Checks the URL, reads (or makes) the key and the saved cursor.
    pub fn new(config: WebhookConfig) -> Result<Self, AgentError> {
        let uri = check_url(&config.url, config.allow_remote)?;
        let (key, _) = crate::secret::load_or_create(&config.secret_file, "webhook secret")?;
        let status = Arc::new(Status::default());
        let after = read_cursor(&config.cursor_file)?;
        status.update(|s| s.delivered_after = after);
        Ok(Self {
            uri,
            key,
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
            config: WebhookConfig {
                max_attempts: config.max_attempts.max(1),
                ..config
            },
            status,
        })
    }

    /// Delivers the inbox from the saved cursor on, for ever.
    pub async fn run(self, client: Client) {
        self.run_from(|after| proven::live(&client, after)).await
    }

    /// [`Webhook::run`] over the proven inbox `inbox(after)` gives.
    async fn run_from<S>(self, inbox: impl Fn(u64) -> S)
    where
        S: Stream<Item = Live<VerifiedEntry>>,
    {
        loop {
            let after = self.status.snapshot().delivered_after;
            let mut live = Box::pin(inbox(after));
            let mut wait = true;
            while let Some(item) = live.next().await {
                match item {
                    Live::Entry(e) => self.deliver(&e).await,
                    Live::Ended(e) => {
                        tracing::warn!(error = %e, "webhook: the inbox stream failed; subscribing again");
                        self.status
                            .update(|s| s.last_error = Some(short(&e.to_string())));
                        break;
                    }
                    Live::Refused(e) => {
                        tracing::warn!(error = %e, "webhook: an entry failed verification; delivery paused");
                        self.pause(format!("not delivered: {e}")).await;
                        wait = false;
                        break;
                    }
                }
            }
            if wait {
                tokio::time::sleep(RESUBSCRIBE_AFTER).await;
            }
        }
    }

    /// Pauses delivery with `reason` until resumed.
    async fn pause(&self, reason: String) {
        self.status.update(|s| {
            s.last_error = Some(short(&reason));
            s.paused = true;
        });
        self.status.resume.notified().await;
        self.status.update(|s| s.paused = false);
    }

    /// Delivers one entry, pausing after `max_attempts` failures, until it
    /// is answered 2xx; then keeps its cursor.
    async fn deliver(&self, e: &VerifiedEntry) {
        let body = serde_json::json!({ "event": "entry", "entry": views::entry(e) }).to_string();
        let delivery = format!("{}:{}", e.channel(), e.seq());
        let mut backoff = self.config.first_backoff;
        let mut attempts = 0;
        loop {
            match self.post(&body, &delivery).await {
                Ok(()) => break,
                Err(reason) => {
                    attempts += 1;
                    tracing::warn!(delivery = %delivery, attempt = attempts, reason = %reason, "webhook delivery failed");
                    self.status.update(|s| {
                        s.failed_attempts = attempts;
                        s.last_error = Some(short(&reason));
                    });
                    if attempts >= self.config.max_attempts {
                        self.pause(reason).await;
                        attempts = 0;
                        backoff = self.config.first_backoff;
                        continue;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if let Err(err) = write_cursor(&self.config.cursor_file, e.cursor) {
            tracing::warn!(error = %err, "webhook: cannot keep the delivered cursor");
        }
        self.status.update(|s| {
            s.delivered_after = e.cursor;
            s.delivered += 1;
            s.failed_attempts = 0;
            s.last_error = None;
        });
    }

    /// One signed POST; Ok on a 2xx answer.
    async fn post(&self, body: &str, delivery: &str) -> Result<(), String> {
        let timestamp = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_secs(),
        )
        .map_err(|e| e.to_string())?;
        let request = hyper::Request::post(self.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(signature::TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                signature::SIGNATURE_HEADER,
                signature::sign(&self.key, timestamp, body.as_bytes()),
            )
            .header(signature::DELIVERY_HEADER, delivery)
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| format!("no answer within {ATTEMPT_TIMEOUT:?}"))?
            .map_err(|e| format!("cannot reach the webhook: {e}"))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered {}", answer.status()))
        }
    }
}

fn short(reason: &str) -> String {
    tongbao_proto::echo::capped(reason, REASON_BYTES).into_owned()
}

fn read_cursor(path: &std::path::Path) -> Result<u64, AgentError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map_err(|_| AgentError::File {
            path: path.to_path_buf(),
            reason: "not a cursor (a number); remove it to deliver the inbox from the start".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(AgentError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Replaces the cursor file through a temporary beside it.
fn write_cursor(path: &std::path::Path, cursor: u64) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{cursor}\n"))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_urls_unless_remote_is_allowed() {
        for ok in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://[::1]:9/x",
            "http://127.9.9.9/",
        ] {
            assert!(check_url(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "https://127.0.0.1/hook",
            "http://10.0.0.5/hook",
            "http://example.org/hook",
            "ftp://127.0.0.1/",
            "not a url",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://10.0.0.5/hook", true).is_ok());
        assert!(check_url("https://10.0.0.5/hook", true).is_err());
    }

    #[test]
    fn the_cursor_survives_a_restart_and_a_bad_file_is_refused()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("webhook-cursor");
        assert_eq!(read_cursor(&path)?, 0);
        write_cursor(&path, 42)?;
        assert_eq!(read_cursor(&path)?, 42);
        std::fs::write(&path, "forty-two")?;
        assert!(read_cursor(&path).is_err());
        Ok(())
    }

    /// Polls `check` until it holds; the deadline only catches a hang.
    async fn eventually(what: &str, check: impl Fn() -> bool) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !check() {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("{what} did not happen"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    #[tokio::test]
    async fn an_entry_that_fails_verification_pauses_delivery_until_resumed()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let cursor_file = dir.path().join("webhook-cursor");
        write_cursor(&cursor_file, 5)?;
        let hook = Webhook::new(WebhookConfig {
            // Never reached: nothing is delivered.
            url: "http://127.0.0.1:9/hook".into(),
            secret_file: dir.path().join("webhook-secret"),
            cursor_file,
            allow_remote: false,
            max_attempts: 1,
            first_backoff: Duration::from_millis(1),
        })?;
        let status = hook.status.clone();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        let run = tokio::spawn(hook.run_from(move |after| {
            if let Ok(mut a) = seen.lock() {
                a.push(after);
            }
            futures::stream::iter([Live::Refused(tongbao_client::ClientError::Integrity {
                channel: "tax".into(),
                seq: 3,
                reason: "not included in the verified checkpoint of size 4".into(),
            })])
        }));
        eventually("a pause", || status.snapshot().paused).await?;
        let now = status.snapshot();
        let reason = now.last_error.unwrap_or_default();
        assert!(
            reason.starts_with("not delivered: entry tax:3 failed verification"),
            "{reason}"
        );
        assert_eq!((now.delivered, now.delivered_after), (0, 5));
        // Paused: not subscribing again on its own.
        assert_eq!(asked.lock().map(|a| a.clone()).unwrap_or_default(), vec![5]);
        // Resumed: from the same cursor, at once, and paused again.
        assert!(status.resume());
        eventually("a second subscription", || {
            asked.lock().is_ok_and(|a| a.len() == 2)
        })
        .await?;
        eventually("a second pause", || status.snapshot().paused).await?;
        assert_eq!(
            asked.lock().map(|a| a.clone()).unwrap_or_default(),
            vec![5, 5]
        );
        run.abort();
        Ok(())
    }
}
