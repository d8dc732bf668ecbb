//! The mechanisms' workflows on the hub: the state each workflow is in
//! (meetings, joint notices, liaisons, tasks, joint actions), derived from the workflow entries
//! of every channel, and the checks a new step must pass against it.
//!
//! The entries are the record; this state is an index of them, kept as
//! state records of the store (space `workflow`, see
//! [`crate::store::state`]). It can be cleared at any time: the next start
//! rebuilds it from the entries. A step
//! is first noted as pending (durably), then appended, then applied; a
//! crash in between is repaired at start by applying the pending steps
//! that reached the log.
//!
//! It also holds the case index (case id -> entry positions) and the
//! organization index (credit code -> entry positions) over every channel,
//! so a case or an organization is read without scanning channels and
//! inboxes. Both are caught up in one pass from a per-channel mark before
//! each case or organization query, so every entry is read once for them,
//! and a crash or a deleted index only means catching up again.

mod rules;
mod tasks;
mod warning;

pub use rules::{STATISTICS_SETTLE_MICROS, StepContext, check_closed_period, check_step};

use crate::store::{StateBatch, StateTree, Store, StoreError};
use prost::Message as _;
use std::sync::Arc;
use tongbao_proto::identity::OFFICE_INBOX_PREFIX;
use tongbao_proto::pb::{self, AnswerState, MeetingStage, workflow_step::Step};
use tongbao_proto::workflow::decode_step;
use tongbao_proto::{Hash, kinds};

/// Why a workflow step was refused; each maps to one gRPC status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkflowRefusal {
    /// The step is not well formed (InvalidArgument).
    #[error("{0}")]
    Malformed(String),
    /// The step is not this unit's to take (PermissionDenied).
    #[error("{0}")]
    NotAllowed(String),
    /// The workflow is not in a state that accepts the step (FailedPrecondition).
    #[error("{0}")]
    WrongState(String),
    /// The meeting or notice does not exist (NotFound).
    #[error("{0}")]
    NotFound(String),
    /// The meeting or notice id is taken (AlreadyExists).
    #[error("{0}")]
    Exists(String),
    #[error("workflow state storage failed: {0}")]
    Storage(String),
}

impl From<StoreError> for WorkflowRefusal {
    fn from(e: StoreError) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<prost::DecodeError> for WorkflowRefusal {
    fn from(e: prost::DecodeError) -> Self {
        Self::Storage(format!("stored workflow state is corrupt: {e}"))
    }
}

const MEETING: &str = "m/";
const NOTICE: &str = "n/";
const LIAISON: &str = "l/";
const PENDING: &str = "p/";
const APPLIED: &str = "a/";
const CASE: &str = "c/";
const CASE_MARK: &str = "ci/";
const ORGANIZATION: &str = "o/";
const WARNING: &str = "w/";
/// Warnings by organization: credit code, then warning id.
const WARNING_OF: &str = "wo/";
/// Entries indexed per batch when catching up the case index.
const CASE_BATCH: u64 = 4096;
const INITIALIZED: &[u8] = b"initialized";
/// The store's state space holding the workflows' records.
pub const SPACE: &str = "workflow";

fn key(prefix: &str, id: &str) -> Vec<u8> {
    format!("{prefix}{id}").into_bytes()
}

fn entry_key(prefix: &str, channel: &str, seq: u64) -> Vec<u8> {
    let mut k = key(prefix, channel);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn case_prefix(case_id: &str) -> Vec<u8> {
    value_prefix(CASE, case_id)
}

/// Index keys under `prefix` start with the length-prefixed value, so no
/// value is a prefix of another's keys.
fn value_prefix(prefix: &str, value: &str) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.extend_from_slice(&(value.len() as u32).to_be_bytes());
    k.extend_from_slice(value.as_bytes());
    k
}

/// The credit codes of the organizations an entry names.
fn organizations_of(entry: &pb::Entry) -> impl Iterator<Item = &str> {
    entry
        .content()
        .and_then(|m| m.references.as_ref())
        .into_iter()
        .flat_map(|r| r.organizations.iter())
        .map(|o| o.credit_code.as_str())
}

/// The case an entry names, if any.
fn case_of(entry: &pb::Entry) -> Option<&str> {
    entry
        .content()
        .and_then(|m| m.references.as_ref())
        .map(|r| r.case_id.as_str())
        .filter(|c| !c.is_empty())
}

/// Names an entry as workflow state records it.
pub fn pin(channel: &str, seq: u64, leaf_hash: &Hash) -> pb::EntryPin {
    pb::EntryPin {
        channel: channel.to_string(),
        seq,
        leaf_hash: leaf_hash.to_vec(),
    }
}

/// The workflow state of the hub, and the lock that makes each step's
/// check, append and apply one serial operation.
pub struct Workflows {
    tree: StateTree,
    /// Held from a step's check until it is applied, so no two steps are
    /// checked against the same state.
    pub serial: tokio::sync::Mutex<()>,
    /// One case-index catch-up at a time.
    case_lock: std::sync::Mutex<()>,
}

impl Workflows {
    /// A standby's: the state as the leader keeps it, neither rebuilt nor
    /// caught up (a standby writes nothing and serves no workflow call).
    pub fn unopened(store: &Arc<dyn Store>) -> Result<Self, WorkflowRefusal> {
        Ok(Self {
            tree: StateTree::open(store.clone(), SPACE)?,
            serial: tokio::sync::Mutex::new(()),
            case_lock: std::sync::Mutex::new(()),
        })
    }

    /// Opens the state in the store, rebuilding it from the store's
    /// entries when it is new, and applying steps a crash left pending.
    pub fn open(store: &Arc<dyn Store>) -> Result<Self, WorkflowRefusal> {
        let tree = StateTree::open(store.clone(), SPACE)?;
        let w = Self {
            tree,
            serial: tokio::sync::Mutex::new(()),
            case_lock: std::sync::Mutex::new(()),
        };
        if w.tree.get(INITIALIZED)?.is_none() {
            w.rebuild(store.as_ref())?;
            w.tree.insert(INITIALIZED, &[1u8][..])?;
        } else {
            w.recover(store.as_ref())?;
        }
        w.tree.flush()?;
        Ok(w)
    }

    /// Applies every workflow entry of every channel, in hub-time order.
    fn rebuild(&self, store: &dyn Store) -> Result<(), WorkflowRefusal> {
        let mut found = Vec::new();
        for (channel, head) in store.channel_heads()? {
            for seq in 0..head.next_seq {
                let Some(stored) = store.entry(&channel, seq)? else {
                    continue;
                };
                let kind = stored.entry.content().map(|m| m.kind).unwrap_or_default();
                if kinds::is_workflow(kind) {
                    found.push((stored.entry.hub_micros, channel.clone(), seq));
                }
            }
        }
        found.sort();
        let count = found.len();
        for (_, channel, seq) in found {
            if let Some(stored) = store.entry(&channel, seq)? {
                self.apply(&stored.entry, &stored.leaf_hash)?;
            }
        }
        if count > 0 {
            tracing::info!(steps = count, "workflow state rebuilt from the channels");
        }
        Ok(())
    }

    /// Applies the steps noted pending that reached the log, in hub-time
    /// order, and forgets those that did not. Run at start and before
    /// each step is checked, so that a step whose state write failed
    /// after its append is applied before anything is checked against
    /// the state it changes.
    pub fn recover(&self, store: &dyn Store) -> Result<(), WorkflowRefusal> {
        let mut reached = Vec::new();
        let mut keys = Vec::new();
        for item in self.tree.scan_prefix(PENDING) {
            let (k, _) = item?;
            let rest = &k[PENDING.len()..];
            if let Some(split) = rest.iter().position(|b| *b == 0) {
                let sender = String::from_utf8_lossy(&rest[..split]).into_owned();
                let message_id = String::from_utf8_lossy(&rest[split + 1..]).into_owned();
                if let Some(rec) = store.message(&sender, &message_id)?
                    && let Some(stored) = store.entry(&sender, rec.seq)?
                {
                    reached.push(stored);
                }
            }
            keys.push(k.to_vec());
        }
        reached.sort_by(|a, b| {
            (a.entry.hub_micros, &a.entry.channel, a.entry.seq).cmp(&(
                b.entry.hub_micros,
                &b.entry.channel,
                b.entry.seq,
            ))
        });
        for stored in &reached {
            self.apply(&stored.entry, &stored.leaf_hash)?;
        }
        for k in keys {
            self.tree.remove(&k)?;
        }
        Ok(())
    }

    fn pending_key(sender: &str, message_id: &str) -> Vec<u8> {
        let mut k = key(PENDING, sender);
        k.push(0);
        k.extend_from_slice(message_id.as_bytes());
        k
    }

    /// Notes, durably, that a step is about to be appended.
    pub fn note_pending(&self, sender: &str, message_id: &str) -> Result<(), WorkflowRefusal> {
        self.tree
            .insert(Self::pending_key(sender, message_id), &[][..])?;
        self.tree.flush()?;
        Ok(())
    }

    /// Forgets a pending step that was not appended.
    pub fn drop_pending(&self, sender: &str, message_id: &str) -> Result<(), WorkflowRefusal> {
        self.tree.remove(Self::pending_key(sender, message_id))?;
        Ok(())
    }

    /// Indexes the case ids and organizations of entries appended since
    /// the last catch-up.
    pub fn index_cases(&self, store: &dyn Store) -> Result<(), WorkflowRefusal> {
        let _one = crate::fatal::lock(&self.case_lock, "case index")
            .map_err(|e| WorkflowRefusal::Storage(e.to_string()))?;
        for (channel, head) in store.channel_heads()? {
            let mark = key(CASE_MARK, &channel);
            let mut next = match self.tree.get(&mark)? {
                Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                    WorkflowRefusal::Storage(format!("case index mark of {channel} is corrupt"))
                })?),
                None => 0,
            };
            while next < head.next_seq {
                let end = head.next_seq.min(next + CASE_BATCH);
                let mut batch = StateBatch::default();
                let mut seq = next;
                while seq < end {
                    // Committed entries are all readable; stop if not.
                    let Some(stored) = store.entry(&channel, seq)? else {
                        break;
                    };
                    if let Some(case) = case_of(&stored.entry) {
                        let mut k = case_prefix(case);
                        k.extend_from_slice(&entry_key("", &channel, seq));
                        batch.insert(k, &[][..]);
                    }
                    for code in organizations_of(&stored.entry) {
                        let mut k = value_prefix(ORGANIZATION, code);
                        k.extend_from_slice(&entry_key("", &channel, seq));
                        batch.insert(k, &[][..]);
                    }
                    seq += 1;
                }
                batch.insert(mark.clone(), &seq.to_be_bytes()[..]);
                self.tree.apply_batch(batch)?;
                if seq < end {
                    break;
                }
                next = seq;
            }
        }
        Ok(())
    }

    /// The positions of a case's entries in every channel, as indexed.
    pub fn case_positions(&self, case_id: &str) -> Result<Vec<(String, u64)>, WorkflowRefusal> {
        self.positions(&case_prefix(case_id))
    }

    /// The positions of the entries naming an organization, as indexed.
    pub fn organization_positions(
        &self,
        credit_code: &str,
    ) -> Result<Vec<(String, u64)>, WorkflowRefusal> {
        self.positions(&value_prefix(ORGANIZATION, credit_code))
    }

    /// The entry positions indexed under `prefix`.
    fn positions(&self, prefix: &[u8]) -> Result<Vec<(String, u64)>, WorkflowRefusal> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix) {
            let (k, _) = item?;
            let rest = &k[prefix.len()..];
            let split = rest.len().checked_sub(9).filter(|i| rest[*i] == 0);
            let Some(split) = split else {
                return Err(WorkflowRefusal::Storage("an index key is corrupt".into()));
            };
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&rest[split + 1..]);
            out.push((
                String::from_utf8_lossy(&rest[..split]).into_owned(),
                u64::from_be_bytes(seq),
            ));
        }
        Ok(out)
    }

    fn get<M: prost::Message + Default>(&self, k: &[u8]) -> Result<Option<M>, WorkflowRefusal> {
        match self.tree.get(k)? {
            Some(v) => Ok(Some(M::decode(v.as_ref())?)),
            None => Ok(None),
        }
    }

    pub fn meeting(&self, id: &str) -> Result<Option<pb::MeetingState>, WorkflowRefusal> {
        self.get(&key(MEETING, id))
    }

    pub fn notice(&self, id: &str) -> Result<Option<pb::JointNoticeState>, WorkflowRefusal> {
        self.get(&key(NOTICE, id))
    }

    pub fn liaisons(&self, unit: &str) -> Result<Option<pb::UnitLiaisons>, WorkflowRefusal> {
        self.get(&key(LIAISON, unit))
    }

    pub fn warning(&self, id: &str) -> Result<Option<pb::WarningState>, WorkflowRefusal> {
        self.get(&key(WARNING, id))
    }

    /// Every warning, or those about one organization, in no set order;
    /// `keep` is asked of each and at most `max` kept (more: None).
    pub fn warnings(
        &self,
        credit_code: Option<&str>,
        keep: impl Fn(&pb::WarningState) -> bool,
        max: usize,
    ) -> Result<Option<Vec<pb::WarningState>>, WorkflowRefusal> {
        let mut out = Vec::new();
        let mut take = |w: pb::WarningState| {
            if keep(&w) {
                out.push(w);
            }
            out.len() <= max
        };
        match credit_code {
            Some(code) => {
                let prefix = value_prefix(WARNING_OF, code);
                for item in self.tree.scan_prefix(&prefix) {
                    let (k, _) = item?;
                    let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                    if let Some(w) = self.warning(&id)?
                        && !take(w)
                    {
                        return Ok(None);
                    }
                }
            }
            None => {
                for item in self.tree.scan_prefix(WARNING) {
                    let (_, v) = item?;
                    if !take(pb::WarningState::decode(v.as_ref())?) {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(Some(out))
    }

    /// Records what an appended workflow entry changes. Applying the same
    /// entry twice changes nothing the second time.
    pub fn apply(&self, entry: &pb::Entry, leaf_hash: &Hash) -> Result<(), WorkflowRefusal> {
        let Some(message) = entry.content() else {
            return Ok(());
        };
        let done = entry_key(APPLIED, &entry.channel, entry.seq);
        let pending = Self::pending_key(&message.sender, &message.message_id);
        if self.tree.get(&done)?.is_some() {
            self.tree.remove(pending)?;
            return Ok(());
        }
        let step = match decode_step(message) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(channel = %entry.channel, seq = entry.seq, error = %e, "workflow entry skipped");
                return Ok(());
            }
        };
        let here = pin(&entry.channel, entry.seq, leaf_hash);
        let sender = message.sender.as_str();
        let mut batch = StateBatch::default();
        match step {
            Step::MeetingProposal(p) => {
                let answers = p.attending_units.iter().map(|u| not_answered(u)).collect();
                let state = pb::MeetingState {
                    proposal_entry: Some(here),
                    proposer: sender.to_string(),
                    stage: MeetingStage::AgendaOpen as i32,
                    settled_agenda: p.agenda.clone(),
                    answers,
                    proposal: Some(p.clone()),
                    ..Default::default()
                };
                batch.insert(key(MEETING, &p.meeting_id), state.encode_to_vec());
            }
            Step::AgendaItem(item) => {
                self.update_meeting(&mut batch, &item.meeting_id, |m| {
                    m.agenda_items.push(here);
                })?;
            }
            Step::AgendaSettlement(s) => {
                self.update_meeting(&mut batch, &s.meeting_id, |m| {
                    m.stage = MeetingStage::AgendaSettled as i32;
                    m.settled_agenda = s.agenda.clone();
                })?;
            }
            Step::MinutesDraft(d) => {
                self.update_meeting(&mut batch, &d.meeting_id, |m| {
                    if let Some(old) = m.current_draft.take() {
                        m.superseded_drafts.push(old);
                    }
                    m.current_draft = Some(here);
                    m.current_revision = d.revision;
                    m.stage = MeetingStage::MinutesDrafted as i32;
                    for a in &mut m.answers {
                        *a = not_answered(&a.unit);
                    }
                })?;
            }
            Step::MinutesAnswer(a) => {
                self.update_meeting(&mut batch, &a.meeting_id, |m| {
                    if let Some(slot) = m.answers.iter_mut().find(|x| x.unit == sender) {
                        slot.state = if a.consent {
                            AnswerState::Consented
                        } else {
                            AnswerState::Objected
                        } as i32;
                        slot.answer = Some(here);
                        slot.comments = a.comments.clone();
                    }
                })?;
            }
            Step::MinutesIssue(i) => {
                self.update_meeting(&mut batch, &i.meeting_id, |m| {
                    m.stage = MeetingStage::MinutesIssued as i32;
                    m.issue = Some(here);
                })?;
            }
            Step::JointDraft(d) => {
                let content = d.content.unwrap_or_default();
                let state = pb::JointNoticeState {
                    notice_id: d.notice_id.clone(),
                    drafter: sender.to_string(),
                    kind: message.kind,
                    draft: Some(here),
                    not_signed: content.co_issuers.clone(),
                    content: Some(content),
                    ..Default::default()
                };
                batch.insert(key(NOTICE, &d.notice_id), state.encode_to_vec());
            }
            Step::CoSignature(c) => {
                self.update_notice(&mut batch, &c.notice_id, |n| {
                    n.not_signed.retain(|u| u != sender);
                    // A co-signature given again replaces the earlier one.
                    n.co_signatures.retain(|p| p.channel != sender);
                    n.co_signatures.push(here);
                })?;
            }
            Step::JointRelease(r) => {
                self.update_notice(&mut batch, &r.notice_id, |n| {
                    n.release = Some(here);
                })?;
            }
            Step::LiaisonChange(l) => {
                let mut record = self.liaisons(sender)?.unwrap_or_else(|| pb::UnitLiaisons {
                    unit: sender.to_string(),
                    ..Default::default()
                });
                let current = pb::LiaisonRecord {
                    unit: sender.to_string(),
                    liaison: Some(l),
                    entry: Some(here),
                    hub_micros: entry.hub_micros,
                    offices: entry
                        .recipients
                        .iter()
                        .filter_map(|r| r.strip_prefix(OFFICE_INBOX_PREFIX))
                        .map(str::to_string)
                        .collect(),
                };
                record.history.push(current.clone());
                record.current = Some(current);
                batch.insert(key(LIAISON, sender), record.encode_to_vec());
            }
            // The statistics entry is its own record; nothing to index.
            Step::Statistics(_) => {}
            Step::JointWarning(w) => {
                let state = warning::issued(entry, message, w, here);
                let code = state
                    .organization
                    .as_ref()
                    .map(|o| o.credit_code.clone())
                    .unwrap_or_default();
                let mut by_org = value_prefix(WARNING_OF, &code);
                by_org.extend_from_slice(state.warning_id.as_bytes());
                batch.insert(by_org, &[][..]);
                batch.insert(key(WARNING, &state.warning_id), state.encode_to_vec());
            }
            Step::WarningMeasures(a) => {
                self.update_warning(&mut batch, &a.warning_id, |w| {
                    warning::answered(w, sender, &a, here);
                })?;
            }
            Step::WarningLift(l) => {
                self.update_warning(&mut batch, &l.warning_id, |w| {
                    w.lift = Some(here);
                    w.lift_reason = l.reason.clone();
                })?;
            }
            step @ (Step::TaskAssignment(_)
            | Step::TaskReport(_)
            | Step::TaskReminder(_)
            | Step::TaskAcceptance(_)
            | Step::TaskReturn(_)
            | Step::ActionProposal(_)
            | Step::ActionAnswer(_)
            | Step::ActionResult(_)
            | Step::ActionSummary(_)) => {
                self.apply_task_step(&mut batch, step, sender, here, entry.hub_micros)?;
            }
        }
        batch.insert(done, &[][..]);
        batch.remove(pending);
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    fn update_meeting(
        &self,
        batch: &mut StateBatch,
        id: &str,
        change: impl FnOnce(&mut pb::MeetingState),
    ) -> Result<(), WorkflowRefusal> {
        match self.meeting(id)? {
            Some(mut m) => {
                change(&mut m);
                batch.insert(key(MEETING, id), m.encode_to_vec());
            }
            None => tracing::warn!(meeting = id, "workflow step of an unknown meeting skipped"),
        }
        Ok(())
    }

    fn update_warning(
        &self,
        batch: &mut StateBatch,
        id: &str,
        change: impl FnOnce(&mut pb::WarningState),
    ) -> Result<(), WorkflowRefusal> {
        match self.warning(id)? {
            Some(mut w) => {
                change(&mut w);
                batch.insert(key(WARNING, id), w.encode_to_vec());
            }
            None => tracing::warn!(warning = id, "workflow step of an unknown warning skipped"),
        }
        Ok(())
    }

    fn update_notice(
        &self,
        batch: &mut StateBatch,
        id: &str,
        change: impl FnOnce(&mut pb::JointNoticeState),
    ) -> Result<(), WorkflowRefusal> {
        match self.notice(id)? {
            Some(mut n) => {
                change(&mut n);
                batch.insert(key(NOTICE, id), n.encode_to_vec());
            }
            None => tracing::warn!(notice = id, "workflow step of an unknown notice skipped"),
        }
        Ok(())
    }
}

fn not_answered(unit: &str) -> pb::AttendeeAnswer {
    pb::AttendeeAnswer {
        unit: unit.to_string(),
        state: AnswerState::NotAnswered as i32,
        answer: None,
        comments: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AnswerKind, NewEntry, SledStore};

    pub(in crate::workflow) fn new_entry(channel: &str, seq: u64, case: &str) -> NewEntry {
        let message = pb::Message {
            message_id: format!("{channel}-{seq}"),
            sender: channel.into(),
            references: Some(pb::References {
                case_id: case.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let entry = pb::Entry {
            channel: channel.into(),
            seq,
            message: Some(pb::SignedMessage {
                message: Some(message),
                signature: None,
            }),
            ..Default::default()
        };
        NewEntry {
            channel: channel.into(),
            seq,
            message_id: format!("{channel}-{seq}"),
            message_digest: [0; 32],
            leaf_hash: [1; 32],
            hub_micros: 1,
            shared: std::sync::Arc::new(crate::store::StoredEntry {
                encoded: entry.encode_to_vec().into(),
                entry,
                leaf_hash: [1; 32],
                cursors: Vec::new(),
            }),
            answers: Vec::new(),
            answer_kind: AnswerKind::Acknowledged,
            audit_scopes: Vec::new(),
            tree_hashes: Vec::new(),
        }
    }

    fn about(mut e: NewEntry, codes: &[&str]) -> NewEntry {
        let mut entry = e.shared.entry.clone();
        if let Some(r) = entry
            .message
            .as_mut()
            .and_then(|s| s.message.as_mut())
            .and_then(|m| m.references.as_mut())
        {
            r.organizations = codes
                .iter()
                .map(|c| pb::Organization {
                    credit_code: c.to_string(),
                    name: String::new(),
                })
                .collect();
        }
        e.shared = std::sync::Arc::new(crate::store::StoredEntry {
            encoded: entry.encode_to_vec().into(),
            entry,
            leaf_hash: [1; 32],
            cursors: Vec::new(),
        });
        e
    }

    #[test]
    fn the_organization_index_lists_exactly_an_organizations_positions()
    -> Result<(), Box<dyn std::error::Error>> {
        let (a, b) = ("51140000MJ0000012R", "53140000MJY0001237");
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("store"), false)?);
        store.commit(&[
            about(new_entry("tax", 0, ""), &[a]),
            about(new_entry("tax", 1, "C-1"), &[a, b]),
            new_entry("finance", 0, ""),
        ])?;
        let w = Workflows::open(&store)?;
        w.index_cases(store.as_ref())?;
        assert_eq!(
            w.organization_positions(a)?,
            vec![("tax".to_string(), 0), ("tax".to_string(), 1)]
        );
        assert_eq!(w.organization_positions(b)?, vec![("tax".to_string(), 1)]);
        assert_eq!(w.case_positions("C-1")?, vec![("tax".to_string(), 1)]);
        store.commit(&[about(new_entry("finance", 1, ""), &[b])])?;
        w.index_cases(store.as_ref())?;
        assert_eq!(w.organization_positions(b)?.len(), 2);
        assert!(w.organization_positions("5114")?.is_empty());
        Ok(())
    }

    #[test]
    fn the_case_index_lists_exactly_a_cases_positions_and_catches_up()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("store"), false)?);
        store.commit(&[
            new_entry("tax", 0, "C-1"),
            new_entry("tax", 1, ""),
            new_entry("finance", 0, "C-10"),
        ])?;
        let w = Workflows::open(&store)?;
        w.index_cases(store.as_ref())?;
        assert_eq!(w.case_positions("C-1")?, vec![("tax".to_string(), 0)]);
        // Entries after the mark are indexed by the next catch-up.
        store.commit(&[new_entry("tax", 2, "C-1"), new_entry("finance", 1, "C-1")])?;
        w.index_cases(store.as_ref())?;
        assert_eq!(
            w.case_positions("C-1")?,
            vec![
                ("finance".to_string(), 1),
                ("tax".to_string(), 0),
                ("tax".to_string(), 2)
            ]
        );
        assert_eq!(w.case_positions("C-10")?, vec![("finance".to_string(), 0)]);
        assert!(w.case_positions("C")?.is_empty());
        // A rebuilt index has the same answers.
        drop(w);
        StateTree::open(store.clone(), SPACE)?.clear()?;
        let w = Workflows::open(&store)?;
        w.index_cases(store.as_ref())?;
        assert_eq!(w.case_positions("C-1")?.len(), 3);
        Ok(())
    }
}
