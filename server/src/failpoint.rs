//! Crash points for end-to-end tests of crash safety.
//!
//! Built only with the `failpoints` feature (the test crate enables it for
//! its hub binary): when `TONGBAO_FAILPOINT` names a point, the hub aborts
//! there, as under `kill -9`, with nothing flushed or cleaned up; when it
//! is `point:<ms>`, the hub waits there that long, holding open a window a
//! test wants to look into. Without the feature every point is a no-op.

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

/// Sleeps if `TONGBAO_FAILPOINT` is `name:<milliseconds>`.
pub fn pause(name: &str) {
    #[cfg(feature = "failpoints")]
    if let Some(ms) = std::env::var(ENV)
        .ok()
        .and_then(|v| v.strip_prefix(name)?.strip_prefix(':')?.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
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

/// Poisons `lock` (a thread panics while holding it) when
/// `TONGBAO_FAILPOINT` is `poison:<name>`: for the tests that a poisoned
/// lock stops the hub.
pub fn poison<T: Send>(name: &str, lock: &std::sync::Mutex<T>) {
    #[cfg(feature = "failpoints")]
    if !lock.is_poisoned()
        && std::env::var(ENV).is_ok_and(|v| v.strip_prefix("poison:") == Some(name))
    {
        std::thread::scope(|s| {
            let _ = s
                .spawn(|| {
                    let _held = lock.lock();
                    panic!("failpoint poison:{name}: poisoning the lock");
                })
                .join();
        });
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = (name, lock);
}
