//! The `Audit` service: the office's view of who received what, and when.
//!
//! Offices see metadata (sender, kind, times, recipients, states, receipts)
//! and never a body: an audited entry carries no subject or body, and the
//! receipts it embeds hold only positions and leaf hashes.

use super::{HubState, storage_status};
use crate::store::{AnswerKind, ScopedEntry};
use std::collections::BTreeMap;
use tongbao_proto::identity::{LEADING_GROUP_INBOX, OFFICE_INBOX_PREFIX, Principal};
use tongbao_proto::pb::{self, DeliveryState, audit_server::Audit};
use tonic::{Request, Response, Status};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 10_000;

/// `tongbao.v1.Audit` over the shared hub state.
#[derive(Clone)]
pub struct AuditService {
    state: std::sync::Arc<HubState>,
}

impl AuditService {
    pub fn new(state: std::sync::Arc<HubState>) -> Self {
        Self { state }
    }
}

/// The mechanism an office may audit; everyone else is refused.
fn office_mechanism<T>(
    state: &HubState,
    request: &Request<T>,
    asked: &str,
) -> Result<String, Status> {
    match state.authenticate(request)? {
        Principal::Office(m) if asked.is_empty() || asked == m => Ok(m),
        Principal::Office(m) => Err(Status::permission_denied(format!(
            "the office of {m} may audit only {m}, not {asked}"
        ))),
        other => Err(Status::permission_denied(format!(
            "only a mechanism's office may audit delivery; this certificate names {other}"
        ))),
    }
}

/// True for inboxes of units, the only parties that acknowledge.
fn is_unit(inbox: &str) -> bool {
    !inbox.starts_with(OFFICE_INBOX_PREFIX) && inbox != LEADING_GROUP_INBOX
}

/// One entry with every recipient's state as of `as_of`.
fn audited(
    state: &HubState,
    scoped: &ScopedEntry,
    as_of: i64,
) -> Result<Option<pb::AuditedEntry>, Status> {
    let Some(stored) = state
        .store
        .entry_shared(&scoped.channel, scoped.seq)
        .map_err(storage_status)?
    else {
        return Ok(None);
    };
    // Only the metadata is read; the body is never copied.
    let entry = &stored.entry;
    let no_message = pb::Message::default();
    let message = entry
        .message
        .as_ref()
        .and_then(|m| m.message.as_ref())
        .unwrap_or(&no_message);
    let deadline = match message.labels.map(|l| l.ack_deadline_micros) {
        Some(d) if d > 0 => d,
        _ => entry
            .hub_micros
            .saturating_add(state.deadlines.for_kind(message.kind)),
    };
    let mut recipients = Vec::with_capacity(entry.recipients.len());
    for (r, cursor) in stored.deliveries() {
        let answer = state
            .store
            .answer(r, cursor)
            .map_err(storage_status)?
            .filter(|a| a.hub_micros <= as_of);
        let answer = answer.as_ref();
        let fetched_micros = state
            .store
            .fetched(r, cursor)
            .map_err(storage_status)?
            .filter(|t| *t <= as_of)
            .unwrap_or(0);
        let (delivery_state, answered_at) = match answer {
            Some(a) if a.kind == AnswerKind::Acknowledged => {
                (DeliveryState::Acknowledged, a.hub_micros)
            }
            Some(a) => (DeliveryState::Exception, a.hub_micros),
            None if fetched_micros > 0 => (DeliveryState::Fetched, 0),
            None => (DeliveryState::Pending, 0),
        };
        let resolved_at = if answered_at > 0 { answered_at } else { as_of };
        let (answer_entry, answer_leaf_hash) = match answer {
            Some(a) => match state.store.entry(r, a.seq).map_err(storage_status)? {
                Some(s) => (Some(s.entry), s.leaf_hash.to_vec()),
                None => (None, Vec::new()),
            },
            None => (None, Vec::new()),
        };
        recipients.push(pb::RecipientDelivery {
            recipient: r.to_string(),
            state: delivery_state as i32,
            fetched_micros,
            acknowledged_micros: answered_at,
            overdue: is_unit(r) && resolved_at > deadline,
            answer: answer_entry,
            answer_leaf_hash,
        });
    }
    Ok(Some(pb::AuditedEntry {
        channel: entry.channel.clone(),
        seq: entry.seq,
        leaf_hash: stored.leaf_hash.to_vec(),
        sender: message.sender.clone(),
        kind: message.kind,
        message_id: message.message_id.clone(),
        hub_micros: entry.hub_micros,
        deadline_micros: deadline,
        recipients,
    }))
}

type StatsRow = (pb::UnitStats, Vec<i64>);

fn row<'a>(stats: &'a mut BTreeMap<String, StatsRow>, unit: &str) -> &'a mut StatsRow {
    stats.entry(unit.to_string()).or_insert_with(|| {
        (
            pb::UnitStats {
                unit: unit.to_string(),
                ..Default::default()
            },
            Vec::new(),
        )
    })
}

/// The entries of a mechanism's scope in a period, up to the cap.
struct Period {
    /// Oldest first, at most `limits.max_audit_entries`.
    rows: Vec<ScopedEntry>,
    since: i64,
    /// The hub time of the first entry past the cap, when the period holds
    /// more: callers either finish within `rows` or refuse with
    /// [`Period::too_large`].
    more_from: Option<i64>,
}

impl Period {
    /// The refusal of a period holding more than the cap: an audit
    /// answered from part of its period would undercount without saying so.
    fn too_large(&self, state: &HubState, mechanism: &str) -> Status {
        let cap = state.limits.max_audit_entries;
        // Ending the period at the first entry left out keeps it in bounds.
        let hint = match self.more_from {
            Some(t) if t > self.since => {
                format!("; e.g. until_micros {t}, the hub time of the first entry past the cap")
            }
            _ => String::new(),
        };
        Status::resource_exhausted(format!(
            "the period asked of {mechanism} holds more than {cap} audited entries \
             (limits.max_audit_entries); ask for a shorter period (since_micros/until_micros){hint}"
        ))
    }
}

/// Entries in a mechanism's scope with hub time in [since, until); 0 means
/// no bound.
fn scoped(state: &HubState, mechanism: &str, since: i64, until: i64) -> Result<Period, Status> {
    let until = if until <= 0 { i64::MAX } else { until };
    if since > until {
        return Err(Status::invalid_argument(format!(
            "since_micros {since} comes after until_micros {until}: the window is inverted; \
             ask for since <= until, or until 0 for \"up to now\""
        )));
    }
    let since = since.max(0);
    let cap = state.limits.max_audit_entries;
    // One more than the cap tells a full period from a larger one.
    let mut rows = state
        .store
        .audit_scope(mechanism, since, until, cap.saturating_add(1))
        .map_err(storage_status)?;
    let more_from = if rows.len() > cap {
        rows.truncate(cap + 1);
        rows.pop().map(|r| r.hub_micros)
    } else {
        None
    };
    Ok(Period {
        rows,
        since,
        more_from,
    })
}

/// Every entry of the period, or the refusal of a period too large.
fn whole_period(
    state: &HubState,
    mechanism: &str,
    since: i64,
    until: i64,
) -> Result<Vec<ScopedEntry>, Status> {
    let period = scoped(state, mechanism, since, until)?;
    if period.more_from.is_some() {
        return Err(period.too_large(state, mechanism));
    }
    Ok(period.rows)
}

fn as_of(asked: i64) -> i64 {
    if asked > 0 {
        asked
    } else {
        tongbao_proto::now_micros()
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: usize) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let mechanism = office_mechanism(&self.state, &request, &request.get_ref().mechanism)?;
        let req = request.into_inner();
        let as_of = as_of(req.as_of_micros);
        let limit = match req.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        } as usize;
        let period = scoped(&self.state, &mechanism, req.since_micros, req.until_micros)?;
        let mut entries = Vec::new();
        for s in &period.rows {
            if !req.sender.is_empty() && s.channel != req.sender {
                continue;
            }
            let Some(a) = audited(&self.state, s, as_of)? else {
                continue;
            };
            if req.kind != 0 && a.kind != req.kind {
                continue;
            }
            let matches = |r: &pb::RecipientDelivery| {
                (req.recipient.is_empty() || r.recipient == req.recipient)
                    && (req.state == 0 || r.state == req.state)
                    && (!req.overdue_only || r.overdue)
            };
            if !a.recipients.iter().any(matches) {
                continue;
            }
            entries.push(a);
            if entries.len() >= limit {
                break;
            }
        }
        // A short page says "that is all": only true if the whole period
        // was looked at.
        if entries.len() < limit && period.more_from.is_some() {
            return Err(period.too_large(&self.state, &mechanism));
        }
        Ok(Response::new(pb::ListDeliveriesResponse {
            entries,
            as_of_micros: as_of,
        }))
    }

    async fn unit_summary(
        &self,
        request: Request<pb::UnitSummaryRequest>,
    ) -> Result<Response<pb::UnitSummaryResponse>, Status> {
        let mechanism = office_mechanism(&self.state, &request, &request.get_ref().mechanism)?;
        let req = request.into_inner();
        let as_of = as_of(req.as_of_micros);
        let scoped = whole_period(&self.state, &mechanism, req.since_micros, req.until_micros)?;
        let mut audited_entries = Vec::with_capacity(scoped.len());
        for s in &scoped {
            if let Some(a) = audited(&self.state, s, as_of)? {
                audited_entries.push(a);
            }
        }
        Ok(Response::new(pb::UnitSummaryResponse {
            units: unit_stats(&audited_entries),
            as_of_micros: as_of,
        }))
    }
}

/// Audited entries of a mechanism with hub time in [since, until), as of a
/// time: the records statistics reports are computed from.
pub(crate) fn audited_period(
    state: &HubState,
    mechanism: &str,
    since: i64,
    until: i64,
    as_of: i64,
) -> Result<Vec<pb::AuditedEntry>, Status> {
    let mut out = Vec::new();
    for s in &whole_period(state, mechanism, since, until)? {
        if let Some(a) = audited(state, s, as_of)? {
            out.push(a);
        }
    }
    Ok(out)
}

/// Per-unit counts and acknowledgement times over audited entries.
pub(crate) fn unit_stats(entries: &[pb::AuditedEntry]) -> Vec<pb::UnitStats> {
    let mut stats: BTreeMap<String, StatsRow> = BTreeMap::new();
    for a in entries {
        row(&mut stats, &a.sender).0.sent += 1;
        for r in a.recipients.iter().filter(|r| is_unit(&r.recipient)) {
            let (st, latencies) = row(&mut stats, &r.recipient);
            st.received += 1;
            if r.state == DeliveryState::Acknowledged as i32 {
                st.acknowledged += 1;
                latencies.push(r.acknowledged_micros - a.hub_micros);
            }
            if r.state == DeliveryState::Exception as i32 {
                st.exceptions += 1;
            }
            if r.overdue {
                st.overdue += 1;
            }
        }
    }
    stats
        .into_values()
        .map(|(mut st, mut lat)| {
            lat.sort_unstable();
            st.ack_p50_micros = percentile(&lat, 50);
            st.ack_p90_micros = percentile(&lat, 90);
            st
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[5], 90), 5);
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!((percentile(&v, 50), percentile(&v, 90)), (5, 9));
    }
}
