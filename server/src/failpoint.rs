//! Crash points for end-to-end tests of crash safety.
//!
//! Off unless the process calls [`enable`], which only the test crate's
//! hub binary (`tongbao-test-hub`) does: `tongbao-hub` never turns them on,
//! however the workspace is built (a cargo feature would be turned on for
//! every binary built together with the test crate). When on and
//! `TONGBAO_FAILPOINT` names a point, the hub aborts there, as under
//! `kill -9`, with nothing flushed or cleaned up; when it is
//! `point:<ms>`, the hub waits there that long, holding open a window a
//! test wants to look into; when it is `point:hold:<dir>`, the hub waits
//! there until the test lets it go (see [`pause`]). Off, every point is a
//! no-op.

use std::sync::atomic::{AtomicBool, Ordering};

/// Environment variable naming the point to crash at.
pub const ENV: &str = "TONGBAO_FAILPOINT";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the points on for this process: for the test hub's `main` only.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// What `TONGBAO_FAILPOINT` says, when the points are on.
fn named() -> Option<String> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    std::env::var(ENV).ok()
}

/// Aborts the process if `TONGBAO_FAILPOINT` names this point.
pub fn hit(name: &str) {
    if named().is_some_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting the hub");
        std::process::abort();
    }
}

/// Sleeps if `TONGBAO_FAILPOINT` is `name:<milliseconds>`. Holds if it
/// is `name:hold:<dir>`: the k-th time the point is reached (k from 1), it
/// creates `<dir>/reached-k` and waits until `<dir>/release-k` exists, so
/// that a test looks into the window for as long as it needs, however slow
/// the machine.
pub fn pause(name: &str) {
    if let Some(arg) =
        named().and_then(|v| Some(v.strip_prefix(name)?.strip_prefix(':')?.to_string()))
    {
        if let Some(dir) = arg.strip_prefix("hold:") {
            hold(std::path::Path::new(dir));
        } else if let Ok(ms) = arg.parse::<u64>() {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}

fn hold(dir: &std::path::Path) {
    use std::sync::atomic::AtomicU64;
    static REACHED: AtomicU64 = AtomicU64::new(0);
    let k = REACHED.fetch_add(1, Ordering::SeqCst) + 1;
    if let Err(e) = std::fs::write(dir.join(format!("reached-{k}")), b"") {
        eprintln!("failpoint hold {k}: cannot write to {}: {e}", dir.display());
        return;
    }
    while !dir.join(format!("release-{k}")).exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Whether an operation should fail here, once: true the first time the
/// point is reached when `TONGBAO_FAILPOINT` is `name:fail-once`, for
/// tests of what follows a failed write that the hub survives.
pub fn fail_once(name: &str) -> bool {
    static FAILED: AtomicBool = AtomicBool::new(false);
    named().is_some_and(|v| v.strip_prefix(name) == Some(":fail-once"))
        && !FAILED.swap(true, Ordering::SeqCst)
}

/// Whether an operation should fail here: true the k-th time the point
/// is reached (k from 1) when `TONGBAO_FAILPOINT` is `name:fail-at:<k>`,
/// for tests that need the operations before it to succeed.
pub fn fail_at(name: &str) -> bool {
    static REACHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let Some(k) = named().and_then(|v| {
        v.strip_prefix(name)?
            .strip_prefix(":fail-at:")?
            .parse::<u64>()
            .ok()
    }) else {
        return false;
    };
    REACHED.fetch_add(1, Ordering::SeqCst) + 1 == k
}

/// The inbox position whose delivery the hub alters before serving it,
/// when `TONGBAO_FAILPOINT` is `alter-delivery:<position>`: a hub (or a
/// path) that changes what it serves, for tests of what the client checks.
pub fn altered_delivery() -> Option<u64> {
    static POSITION: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *POSITION.get_or_init(|| named()?.strip_prefix("alter-delivery:")?.parse().ok())
}

/// Poisons `lock` (a thread panics while holding it) when
/// `TONGBAO_FAILPOINT` is `poison:<name>`: for the tests that a poisoned
/// lock stops the hub.
pub fn poison<T: Send>(name: &str, lock: &std::sync::Mutex<T>) {
    if !lock.is_poisoned() && named().is_some_and(|v| v.strip_prefix("poison:") == Some(name)) {
        std::thread::scope(|s| {
            let _ = s
                .spawn(|| {
                    let _held = lock.lock();
                    panic!("failpoint poison:{name}: poisoning the lock");
                })
                .join();
        });
    }
}

/// How far back the access log dates its records, when
/// `TONGBAO_FAILPOINT` is `access-log-days-ago:<days>`: a hub living in the
/// past, so that tests of retention need not wait 180 days.
pub fn access_log_clock_offset_micros() -> i64 {
    named()
        .and_then(|v| v.strip_prefix("access-log-days-ago:")?.parse::<i64>().ok())
        .map_or(0, |days| days.saturating_mul(-86_400_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_off_unless_enabled() {
        // This test process never calls enable(), whatever the environment.
        assert_eq!(named(), None);
        let m = std::sync::Mutex::new(());
        poison("inbox-heads", &m);
        assert!(!m.is_poisoned());
        assert_eq!(altered_delivery(), None);
    }
}
