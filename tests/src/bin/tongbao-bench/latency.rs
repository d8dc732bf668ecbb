//! Turning times into figures: percentiles, rates and the rounding the
//! JSON report uses, and each measured message's time to reach (and be
//! acknowledged by) all of its recipients.

use crate::fanout::Received;
use std::time::{Duration, Instant};

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
        .unwrap_or_default()
}

pub fn per_sec(count: usize, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { count as f64 / s } else { 0.0 }
}

/// Round to 3 decimals for readable JSON.
pub fn r3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// p50/p90/p99/max in milliseconds.
pub fn spread(mut v: Vec<Duration>) -> serde_json::Value {
    v.sort_unstable();
    serde_json::json!({
        "p50": r3(millis(percentile(&v, 50.0))),
        "p90": r3(millis(percentile(&v, 90.0))),
        "p99": r3(millis(percentile(&v, 99.0))),
        "max": r3(millis(v.last().copied().unwrap_or_default())),
    })
}

pub fn spread_text(v: &serde_json::Value) -> String {
    let g = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    format!(
        "p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms",
        g("p50"),
        g("p90"),
        g("p99"),
        g("max")
    )
}

/// Per measured message, the time from its push (or schedule) until the
/// last of its recipients received it, and until the last acknowledged it;
/// a message some recipient never got is left out (the gate fails it).
pub fn to_all(
    received: &[Received],
    measured: &[((String, u64), Instant)],
) -> (Vec<Duration>, Vec<Duration>) {
    let latest = |of: &dyn Fn(&Received) -> Option<Instant>| {
        received.iter().map(of).try_fold(None::<Instant>, |m, t| {
            t.map(|t| Some(m.map_or(t, |m: Instant| m.max(t))))
        })
    };
    let mut delivered_all = Vec::with_capacity(measured.len());
    let mut acked_all = Vec::with_capacity(measured.len());
    for (key, sent) in measured {
        if let Some(Some(t)) = latest(&|r| r.received_at.get(&key.0, key.1)) {
            delivered_all.push(t.saturating_duration_since(*sent));
        }
        if let Some(Some(t)) = latest(&|r| r.acked_at.get(&key.0, key.1)) {
            acked_all.push(t.saturating_duration_since(*sent));
        }
    }
    (delivered_all, acked_all)
}
