//! `--kill-leader`: how long a takeover keeps pushes waiting. Replicas on
//! one PostgreSQL database (`--replicas`, at least 2); one unit pushes to
//! `civil-affairs` at a steady rate (`--rate`, default 50 a second;
//! `--messages` defaults to 20 s of them), its
//! client listing every replica, with `push_retry_ms` at 60 s (well above
//! a takeover, as the operations guide asks). Once half of `--messages`
//! were sent, the leader is killed (SIGKILL: no lease let go in order; the
//! database frees it as the session ends), and the pushes go on.
//!
//! Reported, as one JSON line: `takeover_ms`, from the kill to the answer
//! of the first push sent after it that a hub acknowledged (the new
//! leader's: the old one is dead); `failed`, the pushes the client gave
//! up on, and their first errors; `slowest_push_ms`, the longest a push
//! waited for its answer. The gate (exit 1 otherwise): every acknowledged
//! push is in `civil-affairs`'s inbox exactly once, read from the new
//! leader once the pushes end, and no message is there twice (a push
//! whose answer died with the leader, retried with its message id, lands
//! once).

use crate::args::{Args, TAKEOVER_RATE};
use crate::replicas::Hubs;
use crate::scenario::body;
use crate::store::Fresh;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tongbao_client::{Client, Draft};
use tongbao_proto::pb::Kind;
use tongbao_tests::BoxError;

/// How long the publisher's client retries a push across the takeover.
const PUSH_RETRY: Duration = Duration::from_secs(60);
/// The unit that pushes, and the one that receives.
const SENDER: &str = "tax";
const RECIPIENT: &str = "civil-affairs";

/// One push: when it was sent and answered, and how.
struct Push {
    sent: Instant,
    answered: Instant,
    outcome: Result<(String, u64, String), String>,
}

/// Runs the takeover; its JSON line and whether the gate passed.
pub async fn run(args: &Args) -> Result<(String, Vec<String>), BoxError> {
    let fresh = Fresh::new(&args.store)?;
    let pki = &fresh.pki;
    let hubs = Hubs::start(pki, !args.no_fsync, args.replicas)?;
    let mut config = hubs.unit_config(pki, SENDER)?;
    config.push_retry_for = PUSH_RETRY;
    let client = Client::connect(&config).await?;
    let reader_config = hubs.unit_config(pki, RECIPIENT)?;
    let rate = args.rate.unwrap_or(TAKEOVER_RATE);
    let mut signed = Vec::with_capacity(args.messages);
    for k in 0..args.messages {
        let draft = Draft::new(
            Kind::Notification,
            format!("takeover {k}"),
            body(args.body_bytes, k),
        )
        .with_id(format!("takeover-{k}"))
        .to_units([RECIPIENT]);
        signed.push(client.sign(draft)?);
    }

    let kill_at = args.messages / 2;
    let started = Instant::now();
    let mut hubs = Some(hubs);
    let mut survivors = None;
    let mut killed = None;
    let mut tasks = Vec::with_capacity(signed.len());
    for (i, m) in signed.into_iter().enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        if i == kill_at
            && let Some(h) = hubs.take()
        {
            survivors = Some(h.kill_leader()?);
            killed = Some(Instant::now());
        }
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let outcome = c
                .push_signed(m)
                .await
                .map(|r| (r.channel, r.seq, r.message_id))
                .map_err(|e| e.to_string());
            Push {
                sent,
                answered: Instant::now(),
                outcome,
            }
        }));
    }
    let mut pushes = Vec::with_capacity(tasks.len());
    for t in tasks {
        pushes.push(t.await?);
    }
    let killed = killed.ok_or("the leader was never killed: give --messages 2 or more")?;

    let mut failures = Vec::new();
    let takeover = pushes
        .iter()
        .filter(|p| p.sent >= killed && p.outcome.is_ok())
        .map(|p| p.answered.saturating_duration_since(killed))
        .min();
    if takeover.is_none() {
        failures.push("no push sent after the kill was acknowledged".to_string());
    }
    let errors: Vec<&String> = pushes
        .iter()
        .filter_map(|p| p.outcome.as_ref().err())
        .collect();
    let slowest = pushes
        .iter()
        .map(|p| p.answered.saturating_duration_since(p.sent))
        .max()
        .unwrap_or_default();
    gate(&reader_config, &pushes, &mut failures).await?;
    drop(client);
    if let Some(s) = survivors
        && let Err(e) = s.stop()
    {
        failures.push(format!("the new leader's shutdown failed: {e}"));
    }
    let json = serde_json::json!({
        "scenario": "takeover",
        "store": "postgres",
        "replicas": args.replicas,
        "rate": rate,
        "pushes": pushes.len(),
        "killed_after": kill_at,
        "push_retry_ms": PUSH_RETRY.as_millis() as u64,
        "takeover_ms": takeover.map(|t| t.as_secs_f64() * 1e3),
        "slowest_push_ms": slowest.as_secs_f64() * 1e3,
        "failed": errors.len(),
        "failed_errors": errors.iter().take(3).collect::<Vec<_>>(),
        "ok": failures.is_empty(),
    });
    Ok((json.to_string(), failures))
}

/// Every acknowledged push is in the recipient's inbox exactly once, and
/// no message is there twice.
async fn gate(
    reader: &tongbao_client::ClientConfig,
    pushes: &[Push],
    failures: &mut Vec<String>,
) -> Result<(), BoxError> {
    let reader = Client::connect(reader).await?;
    let mut held: HashMap<(String, u64), usize> = HashMap::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut after = 0;
    loop {
        let page = reader.pull(after, 500).await?;
        if page.entries.is_empty() {
            break;
        }
        for e in &page.entries {
            *held.entry((e.channel().to_string(), e.seq())).or_default() += 1;
            *ids.entry(e.message().message_id.clone()).or_default() += 1;
        }
        after = page.next_after(after);
    }
    let acked: Vec<&(String, u64, String)> = pushes
        .iter()
        .filter_map(|p| p.outcome.as_ref().ok())
        .collect();
    let lost = acked
        .iter()
        .filter(|(c, s, _)| held.get(&(c.clone(), *s)) != Some(&1))
        .count();
    if lost > 0 {
        failures.push(format!(
            "{lost} of {} acknowledged pushes are not in the inbox exactly once",
            acked.len()
        ));
    }
    let twice = ids.values().filter(|n| **n > 1).count();
    if twice > 0 {
        failures.push(format!("{twice} messages are in the inbox more than once"));
    }
    Ok(())
}
