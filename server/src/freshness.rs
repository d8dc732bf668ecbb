//! Whether a standby's view is fresh enough to serve.
//!
//! A standby serves what it last read from the database. If its refreshes
//! keep failing (the database unreachable, a refresh hanging), what it
//! serves falls behind without anyone seeing it; if the leader migrated
//! the schema, or a stored checkpoint fails its check, it must not serve
//! at all. In either case its health (gRPC and `GET /health`) says
//! NOT_SERVING with the reason, and it refuses reads with the standby's
//! status (`tongbao_proto::replica`), so that clients move on to another
//! replica. The first refresh that succeeds again ends it. Subscriptions
//! already open watch it too ([`Freshness::watch`]): they end with the
//! same status, so that no subscriber waits on a standby that no longer
//! follows the leader.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Refresh periods (`[store] standby_refresh_ms`) without a successful
/// refresh after which a standby stops serving.
pub const STALE_AFTER_PERIODS: u32 = 10;

/// A standby's last successful refresh, and why it must not serve now.
pub struct Freshness {
    stale_after: Duration,
    state: Mutex<State>,
    /// Why the standby may not serve, as last published (None: it serves).
    unfit: watch::Sender<Option<String>>,
}

struct State {
    last_ok: Instant,
    refusing: Option<String>,
}

impl Freshness {
    /// Fresh now (the start's refresh has just succeeded); stale after
    /// [`STALE_AFTER_PERIODS`] periods of `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            stale_after: every.saturating_mul(STALE_AFTER_PERIODS),
            state: Mutex::new(State {
                last_ok: Instant::now(),
                refusing: None,
            }),
            unfit: watch::Sender::new(None),
        }
    }

    /// A refresh succeeded: the standby serves.
    pub fn succeeded(&self) {
        {
            let mut state = self.lock();
            state.last_ok = Instant::now();
            state.refusing = None;
        }
        self.publish();
    }

    /// A refresh found the database unfit to serve (`why`). True when the
    /// reason is new, so that it is logged once.
    pub fn refuse(&self, why: String) -> bool {
        let mut state = self.lock();
        let new = state.refusing.as_ref() != Some(&why);
        state.refusing = Some(why);
        drop(state);
        self.publish();
        new
    }

    /// Tells the watchers whether the standby may serve now. Refreshes
    /// publish their outcome; staleness comes with time alone, so a timer
    /// publishes too (`follow::run`).
    pub fn publish(&self) {
        let now = self.why_not_serving();
        self.unfit.send_if_modified(|last| {
            let changed = *last != now;
            *last = now;
            changed
        });
    }

    /// Why the standby may not serve, as published: `Some` once it may not.
    pub fn watch(&self) -> watch::Receiver<Option<String>> {
        self.unfit.subscribe()
    }

    /// Why the standby must not serve now, or None.
    pub fn why_not_serving(&self) -> Option<String> {
        let state = self.lock();
        if let Some(why) = &state.refusing {
            return Some(why.clone());
        }
        let since = state.last_ok.elapsed();
        (since > self.stale_after)
            .then(|| format!("standby: not refreshed for {} s", since.as_secs()))
    }

    /// Plain data: a panic elsewhere leaves it valid.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_after_the_periods_and_fresh_again_at_the_next_success() {
        let freshness = Freshness::new(Duration::from_millis(1));
        assert!(freshness.why_not_serving().is_none());
        std::thread::sleep(Duration::from_millis(30));
        let why = freshness.why_not_serving().unwrap_or_default();
        assert!(why.starts_with("standby: not refreshed for"), "{why}");
        freshness.succeeded();
        assert!(freshness.why_not_serving().is_none());
    }

    #[test]
    fn a_refusal_is_new_once_and_lasts_until_a_success() {
        let freshness = Freshness::new(Duration::from_secs(3600));
        assert!(freshness.refuse("schema".into()));
        assert!(!freshness.refuse("schema".into()));
        assert_eq!(freshness.why_not_serving().as_deref(), Some("schema"));
        freshness.succeeded();
        assert!(freshness.why_not_serving().is_none());
    }

    #[test]
    fn watchers_see_staleness_once_published_and_its_end() {
        let freshness = Freshness::new(Duration::from_millis(1));
        let mut watch = freshness.watch();
        std::thread::sleep(Duration::from_millis(30));
        // Time alone changes nothing a watcher sees until it is published.
        assert!(!watch.has_changed().unwrap_or(true));
        freshness.publish();
        assert!(watch.has_changed().unwrap_or(false));
        let why = watch.borrow_and_update().clone().unwrap_or_default();
        assert!(why.starts_with("standby: not refreshed for"), "{why}");
        freshness.succeeded();
        assert!(watch.borrow_and_update().is_none());
        assert!(freshness.refuse("schema".into()));
        assert_eq!(watch.borrow_and_update().as_deref(), Some("schema"));
    }
}
