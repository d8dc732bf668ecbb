//! Crash points for end-to-end tests of crash safety.
//!
//! Built only with the `failpoints` feature (the test crate enables it for
//! its hub binary): when `TONGBAO_FAILPOINT` names a point, the hub aborts
//! there, as under `kill -9`, with nothing flushed or cleaned up. Without
//! the feature every point is a no-op.

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
