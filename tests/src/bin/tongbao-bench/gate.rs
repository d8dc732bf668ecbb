//! The correctness gate every run passes or fails: every push answered,
//! every channel's seqs exactly 0..pushes, every subscriber receiving and
//! acknowledging every message exactly once. CI relies on it (`--short`).

use crate::fanout::Received;
use std::collections::{HashMap, HashSet};
use tongbao_client::PushReceipt;

/// Every push answered, once, naming the right recipients; every channel
/// holding exactly seqs 0..pushes; the hub appending one entry per message.
pub fn check_pushes(
    receipts: &[PushReceipt],
    errors: &[String],
    pushes_of: &HashMap<String, usize>,
    total: usize,
    recipients: usize,
    appended: u64,
    failures: &mut Vec<String>,
) {
    if !errors.is_empty() {
        let mut distinct: Vec<&String> =
            errors.iter().collect::<HashSet<_>>().into_iter().collect();
        distinct.sort();
        failures.push(format!(
            "{} of {total} pushes failed: {}",
            errors.len(),
            distinct
                .iter()
                .take(3)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    let duplicates = receipts.iter().filter(|r| r.duplicate).count();
    if duplicates > 0 {
        failures.push(format!(
            "{duplicates} pushes were answered as duplicates of earlier ones"
        ));
    }
    let wrong_fanout = receipts
        .iter()
        .filter(|r| r.recipients.len() != recipients)
        .count();
    if wrong_fanout > 0 {
        failures.push(format!(
            "{wrong_fanout} receipts do not name exactly {recipients} recipients"
        ));
    }
    let mut seqs: HashMap<&str, HashSet<u64>> = HashMap::new();
    for r in receipts {
        seqs.entry(r.channel.as_str()).or_default().insert(r.seq);
    }
    for (channel, &pushed) in pushes_of {
        let got = seqs.get(channel.as_str());
        let distinct = got.map_or(0, HashSet::len);
        if distinct != pushed {
            failures.push(format!(
                "channel {channel}: {pushed} pushes but {distinct} distinct seqs in the receipts"
            ));
        } else if let Some(max) = got.and_then(|s| s.iter().max())
            && *max as usize + 1 != pushed
        {
            failures.push(format!(
                "channel {channel}: seqs are not 0..{pushed} (largest is {max})"
            ));
        }
    }
    for channel in seqs.keys() {
        if !pushes_of.contains_key(*channel) {
            failures.push(format!(
                "receipt names channel {channel}, which no publisher pushed into"
            ));
        }
    }
    if appended != total as u64 {
        failures.push(format!(
            "the hub counted {appended} appended entries for {total} messages"
        ));
    }
}

/// Every subscriber received and acknowledged every pushed entry exactly
/// once, and the hub counted each acknowledgement once.
pub fn check_receivers(
    received: &[Received],
    receipts: &[PushReceipt],
    total: usize,
    failures: &mut Vec<String>,
) {
    let pushed: HashSet<(String, u64)> = receipts
        .iter()
        .map(|r| (r.channel.clone(), r.seq))
        .collect();
    for r in received {
        check_subscriber(r, &pushed, failures);
        if r.newly_acknowledged != total as u64 {
            failures.push(format!(
                "subscriber {}: the hub counted {} new acknowledgements for {total} messages",
                r.unit, r.newly_acknowledged
            ));
        }
    }
}

pub fn check_subscriber(r: &Received, pushed: &HashSet<(String, u64)>, failures: &mut Vec<String>) {
    if let Some(e) = &r.error {
        failures.push(format!("subscriber {}: {e}", r.unit));
    }
    if r.duplicates > 0 {
        failures.push(format!(
            "subscriber {}: {} entries delivered more than once",
            r.unit, r.duplicates
        ));
    }
    if let Some(first) = r.foreign.first() {
        failures.push(format!(
            "subscriber {}: {} entries not of this run or not addressed to it, e.g. {first}",
            r.unit,
            r.foreign.len()
        ));
    }
    let mut missing: Vec<&(String, u64)> = pushed
        .iter()
        .filter(|(c, s)| !r.received_at.contains(c, *s))
        .collect();
    if !missing.is_empty() {
        missing.sort();
        failures.push(format!(
            "subscriber {}: {} of {} messages missing, e.g. {:?}",
            r.unit,
            missing.len(),
            pushed.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        ));
    }
    let unexpected = r
        .received_at
        .keys()
        .filter(|(c, s)| !pushed.contains(&(c.to_string(), *s)))
        .count();
    if unexpected > 0 {
        failures.push(format!(
            "subscriber {}: {unexpected} delivered entries match no push receipt",
            r.unit
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(keys: &[(&str, u64)]) -> HashSet<(String, u64)> {
        keys.iter().map(|(c, s)| (c.to_string(), *s)).collect()
    }

    fn failures_of(r: &Received, pushed: &HashSet<(String, u64)>) -> Vec<String> {
        let mut failures = Vec::new();
        check_subscriber(r, pushed, &mut failures);
        failures
    }

    #[test]
    fn the_gate_passes_exactly_once_and_fails_everything_else() {
        let all = pushed(&[("tax", 0), ("tax", 1), ("finance", 0)]);
        let mut r = Received::new("civil-affairs");
        r.arrived("tax", 0);
        r.arrived("tax", 1);
        r.arrived("finance", 0);
        assert_eq!(failures_of(&r, &all), Vec::<String>::new());

        r.arrived("tax", 1);
        let f = failures_of(&r, &all);
        assert!(
            f.len() == 1 && f[0].contains("1 entries delivered more than once"),
            "{f:?}"
        );

        let mut r = Received::new("civil-affairs");
        r.arrived("tax", 0);
        r.arrived("finance", 0);
        r.arrived("finance", 7);
        let f = failures_of(&r, &all);
        assert!(
            f.iter().any(|m| m.contains("1 of 3 messages missing")),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|m| m.contains("1 delivered entries match no push receipt")),
            "{f:?}"
        );
    }
}
