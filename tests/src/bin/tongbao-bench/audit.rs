//! `--audit` and `--audit-during`: an office's heavy `Audit.UnitSummary`
//! over everything, after the exchange or beside it, timed.

use crate::hub::HubChild;
use crate::latency::{millis, r3, spread, spread_text};
use std::time::Instant;
use tokio::sync::watch;
use tongbao_client::Client;
use tongbao_proto::pb;
use tongbao_tests::{BoxError, TestPki};

/// What `--audit` measured.
pub struct AuditFigures {
    pub json: serde_json::Value,
    pub summary: String,
}

/// The office of `mechanism` asks `Audit.UnitSummary` over everything
/// stored since `since_micros` (0: over everything) `calls` times, one
/// after the other.
pub async fn audit_calls(
    pki: &TestPki,
    hub: &HubChild,
    mechanism: &str,
    calls: usize,
    since_micros: i64,
) -> Result<AuditFigures, BoxError> {
    let office = Client::connect(&pki.office_config(mechanism, hub.addr)?).await?;
    let rss_before = hub.rss_kib()?;
    let mut times = Vec::with_capacity(calls);
    let mut outcome = String::new();
    for _ in 0..calls {
        let started = Instant::now();
        let answer = office
            .audit_units(pb::UnitSummaryRequest {
                since_micros,
                ..Default::default()
            })
            .await;
        times.push(started.elapsed());
        outcome = match answer {
            Ok(s) => format!(
                "{} entries sent",
                s.units.iter().map(|u| u.sent).sum::<u64>()
            ),
            Err(e) => format!("refused: {e}"),
        };
    }
    let rss_after = hub.rss_kib()?;
    let peak = hub.peak_rss_kib()?;
    let ms: Vec<String> = times.iter().map(|t| format!("{:.0}", millis(*t))).collect();
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(AuditFigures {
        json: serde_json::json!({
            "calls": calls,
            "call_ms": times.iter().map(|t| r3(millis(*t))).collect::<Vec<_>>(),
            "outcome": outcome,
            "hub_rss_mib_before": r3(mib(rss_before)),
            "hub_rss_mib_after": r3(mib(rss_after)),
            "hub_peak_rss_mib": r3(mib(peak)),
        }),
        summary: format!(
            "audit: {calls} x UnitSummary ({outcome}): {} ms; hub RSS {:.0} -> {:.0} MiB, peak {:.0} MiB",
            ms.join(", "),
            mib(rss_before),
            mib(rss_after),
            mib(peak)
        ),
    })
}

/// `Audit.UnitSummary` over everything, call after call, until `stop`:
/// the heavy query `--audit-during` runs beside the measured pushes.
pub async fn audits_meanwhile(office: Client, mut stop: watch::Receiver<bool>) -> AuditFigures {
    let mut times = Vec::new();
    let mut refused = 0usize;
    let mut last_refusal = String::new();
    while !*stop.borrow() {
        let started = Instant::now();
        let answer = tokio::select! {
            a = office.audit_units(pb::UnitSummaryRequest::default()) => a,
            _ = stop.changed() => break,
        };
        times.push(started.elapsed());
        if let Err(e) = answer {
            refused += 1;
            last_refusal = e.to_string();
        }
    }
    let spread = spread(times.clone());
    AuditFigures {
        json: serde_json::json!({
            "calls": times.len(),
            "refused": refused,
            "call_ms": spread,
        }),
        summary: format!(
            "audits during the pushes: {} x UnitSummary ({refused} refused{}), each {}",
            times.len(),
            if refused > 0 {
                format!(": {last_refusal}")
            } else {
                String::new()
            },
            spread_text(&spread)
        ),
    }
}
