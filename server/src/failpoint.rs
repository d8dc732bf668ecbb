//! Crash points for end-to-end tests of crash safety.
//!
//! Built only with the `failpoints` feature (the test crate enables it for
//! its hub binary): when `TONGBAO_FAILPOINT` names a point, the hub aborts
//! there, as under `kill -9`, with nothing flushed or cleaned up; when it
//! is `point:<ms>`, the hub waits there that long, holding open a window a
//! test wants to look into; when it is `point:hold:<dir>`, the hub waits
//! there until the test lets it go (see [`pause`]). Without the feature
//! every point is a no-op.

/// Environment variable naming the point to crash at.
pub const ENV: &str = "TONGBAO_FAILPOINT";

/// Aborts the process if `TONGBAO_FAILPOINT` names this point.
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var(ENV).is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting the hub");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Sleeps if `TONGBAO_FAILPOINT` is `name:<milliseconds>`. Holds if it
/// is `name:hold:<dir>`: the k-th time the point is reached (k from 1), it
/// creates `<dir>/reached-k` and waits until `<dir>/release-k` exists, so
/// that a test looks into the window for as long as it needs, however slow
/// the machine.
pub fn pause(name: &str) {
    #[cfg(feature = "failpoints")]
    if let Some(arg) = std::env::var(ENV)
        .ok()
        .and_then(|v| Some(v.strip_prefix(name)?.strip_prefix(':')?.to_string()))
    {
        if let Some(dir) = arg.strip_prefix("hold:") {
            hold(std::path::Path::new(dir));
        } else if let Ok(ms) = arg.parse::<u64>() {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

#[cfg(feature = "failpoints")]
fn hold(dir: &std::path::Path) {
    use std::sync::atomic::{AtomicU64, Ordering};
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

/// The inbox position whose delivery the hub alters before serving it,
/// when `TONGBAO_FAILPOINT` is `alter-delivery:<position>`: a hub (or a
/// path) that changes what it serves, for tests of what the client checks.
pub fn altered_delivery() -> Option<u64> {
    #[cfg(feature = "failpoints")]
    {
        static POSITION: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
        *POSITION.get_or_init(|| {
            std::env::var(ENV)
                .ok()?
                .strip_prefix("alter-delivery:")?
                .parse()
                .ok()
        })
    }
    #[cfg(not(feature = "failpoints"))]
    None
}
