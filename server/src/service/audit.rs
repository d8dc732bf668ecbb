//! The `Audit` service: the office's view of who received what, and when.
//!
//! Offices see metadata (sender, kind, times, recipients, states, receipts)
//! and never free text they were not addressed: an audited entry carries
//! no subject or body, receipts hold none, and exception feedback not
//! copied to the office is shown without its own (`tongbao_proto::redact`).
//!
//! Audits and statistics read the store's audit index (a row per entry and
//! mechanism, holding what the audit needs of the entry) for their period
//! only, a chunk of rows at a time, each chunk's answers and "fetched"
//! marks read in one pass per inbox: a query costs what its period holds,
//! never the history before it or any entry's body. A period holding more
//! than `limits.max_audit_entries` entries is refused, never answered in
//! part; a summary or statistics are refused from the index's count alone,
//! before any entry is read.

use super::{HubState, storage_status};
use crate::store::{Answer, AnswerKind, ScopedEntry};
use prost::Message as _;
use std::collections::{BTreeMap, HashMap};
use tongbao_proto::echo::shown;
use tongbao_proto::identity::{LEADING_GROUP_INBOX, OFFICE_INBOX_PREFIX, Principal};
use tongbao_proto::pb::{self, DeliveryState, audit_server::Audit};
use tongbao_proto::redact;
use tonic::{Request, Response, Status};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 10_000;
/// Index rows read, and their deliveries resolved, at a time: bounds the
/// memory of a scan whatever its period.
const CHUNK: usize = 1024;

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
            "the office of {m} may audit only {m}, not {}",
            shown(asked)
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

/// One recipient's delivery of an audited entry, as of a time.
pub(crate) struct Delivery {
    pub state: DeliveryState,
    /// When the recipient was first served the entry (0: not by then).
    pub fetched_micros: i64,
    /// When the recipient answered it (0: not by then).
    pub answered_micros: i64,
    /// The answering entry's position in the recipient's own channel.
    pub answer_seq: Option<u64>,
    pub overdue: bool,
}

fn delivery(
    inbox: &str,
    answer: Option<Answer>,
    fetched: Option<i64>,
    deadline: i64,
    as_of: i64,
) -> Delivery {
    let answer = answer.filter(|a| a.hub_micros <= as_of);
    let fetched_micros = fetched.filter(|t| *t <= as_of).unwrap_or(0);
    let (state, answered_micros) = match &answer {
        Some(a) if a.kind == AnswerKind::Acknowledged => {
            (DeliveryState::Acknowledged, a.hub_micros)
        }
        Some(a) => (DeliveryState::Exception, a.hub_micros),
        None if fetched_micros > 0 => (DeliveryState::Fetched, 0),
        None => (DeliveryState::Pending, 0),
    };
    let resolved_at = if answered_micros > 0 {
        answered_micros
    } else {
        as_of
    };
    Delivery {
        state,
        fetched_micros,
        answered_micros,
        answer_seq: answer.map(|a| a.seq),
        overdue: is_unit(inbox) && resolved_at > deadline,
    }
}

/// The acknowledgement deadline of an entry: the sender's label, or the
/// hub's deadline for its kind.
fn deadline_of(state: &HubState, row: &ScopedEntry) -> i64 {
    if row.ack_deadline_micros > 0 {
        row.ack_deadline_micros
    } else {
        row.hub_micros
            .saturating_add(state.deadlines.for_kind(row.kind))
    }
}

/// An inbox's positions to look up, and the (row, recipient) of each.
type Asked = (Vec<u64>, Vec<(usize, usize)>);

/// Every recipient's delivery of each row as of `as_of`, in the rows'
/// order: answers and "fetched" marks are read in one pass per inbox.
fn resolve(
    state: &HubState,
    rows: &[ScopedEntry],
    as_of: i64,
) -> Result<Vec<Vec<Delivery>>, Status> {
    // Per inbox, the positions asked and the (row, recipient) each is for.
    let mut asked: HashMap<&str, Asked> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        for (j, (inbox, cursor)) in row.deliveries.iter().enumerate() {
            let (cursors, at) = asked.entry(inbox.as_str()).or_default();
            cursors.push(*cursor);
            at.push((i, j));
        }
    }
    let mut found: Vec<Vec<(Option<Answer>, Option<i64>)>> = rows
        .iter()
        .map(|r| vec![(None, None); r.deliveries.len()])
        .collect();
    for (inbox, (cursors, at)) in asked {
        let answers = state
            .store
            .answers(inbox, &cursors)
            .map_err(storage_status)?;
        let fetched = state
            .store
            .fetched_many(inbox, &cursors)
            .map_err(storage_status)?;
        for (((i, j), a), f) in at.into_iter().zip(answers).zip(fetched) {
            if let Some(slot) = found.get_mut(i).and_then(|r| r.get_mut(j)) {
                *slot = (a, f);
            }
        }
    }
    Ok(rows
        .iter()
        .zip(found)
        .map(|(row, found)| {
            let deadline = deadline_of(state, row);
            row.deliveries
                .iter()
                .zip(found)
                .map(|((inbox, _), (a, f))| delivery(inbox, a, f, deadline, as_of))
                .collect()
        })
        .collect())
}

/// A period as asked (until 0: no bound), or its refusal when inverted.
fn window(since: i64, until: i64) -> Result<(i64, i64), Status> {
    let until = if until <= 0 { i64::MAX } else { until };
    if since > until {
        return Err(Status::invalid_argument(format!(
            "since_micros {since} comes after until_micros {until}: the window is inverted; \
             ask for since <= until, or until 0 for \"up to now\""
        )));
    }
    Ok((since.max(0), until))
}

/// [`scan_period`] for a caller that reads the whole period (a summary,
/// statistics, an overdue count): a period holding more than the cap is
/// refused from the index's count alone, before any entry of it is read,
/// so that a refusal costs a walk of the index, not the cap's worth of
/// entries resolved.
pub(crate) fn scan_whole_period(
    state: &HubState,
    mechanism: &str,
    since: i64,
    until: i64,
    as_of: i64,
    visit: impl FnMut(&ScopedEntry, i64, &[Delivery]) -> Result<bool, Status>,
) -> Result<(), Status> {
    let (from, to) = window(since, until)?;
    let cap = state.limits.max_audit_entries;
    if let Some(left_out) = state
        .store
        .audit_row_past(mechanism, from, to, cap)
        .map_err(storage_status)?
    {
        return Err(too_large(state, mechanism, from, left_out));
    }
    scan_period(state, mechanism, since, until, as_of, visit)
}

/// Visits the audited entries of a mechanism with hub time in [since,
/// until) (until 0: no bound), oldest first, as of a time, with each
/// entry's deadline and deliveries, until `visit` answers false. A period
/// holding more than `limits.max_audit_entries` is refused once the scan
/// passes the cap: figures from part of a period would undercount without
/// saying so.
pub(crate) fn scan_period(
    state: &HubState,
    mechanism: &str,
    since: i64,
    until: i64,
    as_of: i64,
    mut visit: impl FnMut(&ScopedEntry, i64, &[Delivery]) -> Result<bool, Status>,
) -> Result<(), Status> {
    let (since, until) = window(since, until)?;
    let cap = state.limits.max_audit_entries;
    let mut seen = 0usize;
    let mut after: Option<ScopedEntry> = None;
    loop {
        // A scan holds the hub's state: at a stop it ends within a chunk.
        if *state.shutdown.borrow() {
            return Err(Status::unavailable(
                "the hub is shutting down; ask again once it is back",
            ));
        }
        let mut rows = state
            .store
            .audit_scope(mechanism, since, until, after.as_ref(), CHUNK)
            .map_err(storage_status)?;
        let more = rows.len() == CHUNK;
        let Some(last) = rows.last().cloned() else {
            return Ok(());
        };
        // Past the cap only the first row left out is needed (its time).
        rows.truncate(cap.saturating_sub(seen).saturating_add(1));
        let deliveries = resolve(state, &rows, as_of)?;
        for (row, d) in rows.iter().zip(&deliveries) {
            if seen == cap {
                return Err(too_large(state, mechanism, since, row.hub_micros));
            }
            seen += 1;
            if !visit(row, deadline_of(state, row), d)? {
                return Ok(());
            }
        }
        if !more {
            return Ok(());
        }
        after = Some(last);
    }
}

/// The refusal of a period holding more than the cap, with an end that
/// keeps it within (the first entry left out).
fn too_large(state: &HubState, mechanism: &str, since: i64, left_out: i64) -> Status {
    let cap = state.limits.max_audit_entries;
    let hint = if left_out > since {
        format!("; e.g. until_micros {left_out}, the hub time of the first entry past the cap")
    } else {
        String::new()
    };
    Status::resource_exhausted(format!(
        "the period asked of {mechanism} holds more than {cap} audited entries \
         (limits.max_audit_entries); ask for a shorter period (since_micros/until_micros){hint}"
    ))
}

/// An audited entry as listed: the row's metadata, each recipient's state,
/// and the receipt or feedback that answered it (read only for entries
/// listed).
fn listed(
    state: &HubState,
    office_inbox: &str,
    row: &ScopedEntry,
    deadline: i64,
    deliveries: &[Delivery],
) -> Result<pb::AuditedEntry, Status> {
    let mut recipients = Vec::with_capacity(deliveries.len());
    for ((r, _), d) in row.deliveries.iter().zip(deliveries) {
        let answer = match d.answer_seq {
            Some(seq) => state.store.entry(r, seq).map_err(storage_status)?,
            None => None,
        };
        let mut delivery = pb::RecipientDelivery {
            recipient: r.clone(),
            state: d.state as i32,
            fetched_micros: d.fetched_micros,
            acknowledged_micros: d.answered_micros,
            overdue: d.overdue,
            ..Default::default()
        };
        if let Some(stored) = answer {
            let shown = redact::for_audit(&stored.entry, office_inbox);
            delivery.answer = Some(shown.entry);
            delivery.answer_leaf_hash = stored.leaf_hash.to_vec();
            delivery.answer_redacted = shown.redacted;
        }
        recipients.push(delivery);
    }
    Ok(pb::AuditedEntry {
        channel: row.channel.clone(),
        seq: row.seq,
        leaf_hash: row.leaf_hash.to_vec(),
        sender: row.sender.clone(),
        kind: row.kind,
        message_id: row.message_id.clone(),
        hub_micros: row.hub_micros,
        deadline_micros: deadline,
        recipients,
    })
}

/// The entries of a period `req` asks for, as listed, up to `limit` and
/// the page's byte cap. A short page says "that is all": the scan refuses
/// a period over the cap unless the page fills first.
fn list_matching(
    state: &HubState,
    mechanism: &str,
    req: &pb::ListDeliveriesRequest,
    as_of: i64,
    limit: usize,
) -> Result<Vec<pb::AuditedEntry>, Status> {
    let max_bytes = state.limits.max_page_bytes;
    let office_inbox = tongbao_proto::identity::office_inbox(mechanism);
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    scan_period(
        state,
        mechanism,
        req.since_micros,
        req.until_micros,
        as_of,
        |row, deadline, deliveries| {
            if (!req.sender.is_empty() && row.channel != req.sender)
                || (req.kind != 0 && row.kind != req.kind)
            {
                return Ok(true);
            }
            let matches = row.deliveries.iter().zip(deliveries).any(|((r, _), d)| {
                (req.recipient.is_empty() || *r == req.recipient)
                    && (req.state == 0 || d.state as i32 == req.state)
                    && (!req.overdue_only || d.overdue)
            });
            if !matches {
                return Ok(true);
            }
            let a = listed(state, &office_inbox, row, deadline, deliveries)?;
            bytes = bytes.saturating_add(a.encoded_len());
            if bytes > max_bytes {
                return Err(Status::resource_exhausted(format!(
                    "the listing passes {max_bytes} bytes (limits.max_page_bytes) after {} entries; \
                     ask for a limit of at most {}, or a shorter period (since_micros/until_micros)",
                    entries.len(),
                    entries.len().max(1)
                )));
            }
            entries.push(a);
            Ok(entries.len() < limit)
        },
    )?;
    Ok(entries)
}

type StatsRow = (pb::UnitStats, Vec<i64>);

/// Per-unit counts and acknowledgement times, added entry by entry.
#[derive(Default)]
pub(crate) struct UnitTally {
    stats: BTreeMap<String, StatsRow>,
}

impl UnitTally {
    fn row(&mut self, unit: &str) -> &mut StatsRow {
        self.stats.entry(unit.to_string()).or_insert_with(|| {
            (
                pb::UnitStats {
                    unit: unit.to_string(),
                    ..Default::default()
                },
                Vec::new(),
            )
        })
    }

    pub(crate) fn add(&mut self, row: &ScopedEntry, deliveries: &[Delivery]) {
        self.row(&row.sender).0.sent += 1;
        for ((r, _), d) in row.deliveries.iter().zip(deliveries) {
            if !is_unit(r) {
                continue;
            }
            let (st, latencies) = self.row(r);
            st.received += 1;
            match d.state {
                DeliveryState::Acknowledged => {
                    st.acknowledged += 1;
                    latencies.push(d.answered_micros - row.hub_micros);
                }
                DeliveryState::Exception => st.exceptions += 1,
                _ => {}
            }
            if d.overdue {
                st.overdue += 1;
            }
        }
    }

    pub(crate) fn finish(self) -> Vec<pb::UnitStats> {
        self.stats
            .into_values()
            .map(|(mut st, mut lat)| {
                lat.sort_unstable();
                st.ack_p50_micros = percentile(&lat, 50);
                st.ack_p90_micros = percentile(&lat, 90);
                st
            })
            .collect()
    }
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
        let state = self.state.clone();
        let entries = self
            .state
            .heavy("delivery audit", move || {
                list_matching(&state, &mechanism, &req, as_of, limit)
            })
            .await?;
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
        let state = self.state.clone();
        let units = self
            .state
            .heavy("unit summary", move || {
                let mut tally = UnitTally::default();
                scan_whole_period(
                    &state,
                    &mechanism,
                    req.since_micros,
                    req.until_micros,
                    as_of,
                    |row, _, deliveries| {
                        tally.add(row, deliveries);
                        Ok(true)
                    },
                )?;
                Ok(tally.finish())
            })
            .await?;
        Ok(Response::new(pb::UnitSummaryResponse {
            units,
            as_of_micros: as_of,
        }))
    }
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
