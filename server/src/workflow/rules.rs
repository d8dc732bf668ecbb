//! What each workflow step must satisfy against the current state: the
//! right actor (PermissionDenied), the right stage (FailedPrecondition), a
//! well-formed step (InvalidArgument). Pure reads; nothing is written.

use super::{WorkflowRefusal, Workflows};
use crate::registry::{Registry, display_micros};
use crate::store::Store;
use std::collections::BTreeSet;
use tongbao_proto::echo::shown;
use tongbao_proto::identity::office_inbox;
use tongbao_proto::keys::RegisteredKey;
use tongbao_proto::pb::{self, AnswerState, Kind, MeetingKind, MeetingStage, workflow_step::Step};
use tongbao_proto::workflow::{
    SigningKeys, check_workflow_id, content_digest, key_not_valid, verify_escalation,
    verify_joint_release, verify_minutes_issue, verify_source,
};

use WorkflowRefusal::{Exists, Malformed, NotAllowed, NotFound, WrongState};

mod action;
mod joint;
mod task;
mod warning;
use joint::{check_co_signature, check_joint_draft, check_release};
use warning::{check_joint_warning, check_warning_lift, check_warning_measures};

/// Everything a step is checked against.
pub struct StepContext<'a> {
    pub workflows: &'a Workflows,
    pub registry: &'a Registry,
    pub store: &'a dyn Store,
    pub sender: &'a str,
    pub message: &'a pb::Message,
    /// The message's audience resolved at check time.
    pub recipients: &'a [String],
    /// The step's append time: membership and deadlines are judged at it.
    pub now_micros: i64,
}

/// A statistics period is closed this long after its end: an append in
/// flight when the period ended (a batch takes its hub time before it
/// commits) has landed by then, so recomputing the report gives the same
/// figures.
pub const STATISTICS_SETTLE_MICROS: i64 = 1_000_000;

/// The rule every statistics report obeys, at compute and at circulation:
/// since < until <= as of, and as of (so the whole period) lies at least
/// [`STATISTICS_SETTLE_MICROS`] in the past.
pub fn check_closed_period(
    since: i64,
    until: i64,
    as_of: i64,
    now: i64,
) -> Result<(), WorkflowRefusal> {
    if since < 0 || until <= since || as_of < until {
        return Err(Malformed(format!(
            "a statistics period needs 0 <= since < until <= as of; got since {since}, until {until}, as of {as_of} (unix µs)"
        )));
    }
    let closed_by = now - STATISTICS_SETTLE_MICROS;
    if as_of > closed_by {
        let what = if until > closed_by {
            format!("the period ends at {}", display_micros(until))
        } else {
            format!("the report is as of {}", display_micros(as_of))
        };
        return Err(WrongState(format!(
            "{what}, which is not yet {} s in the past (now {}); statistics cover closed periods so that entries still landing cannot change the figures between compute and circulation: choose an earlier end (and as of), or compute again later",
            STATISTICS_SETTLE_MICROS / 1_000_000,
            display_micros(now)
        )));
    }
    Ok(())
}

/// Refuses unless every party in `needed` is among the recipients.
fn required_recipients(
    what: &str,
    recipients: &[String],
    needed: impl IntoIterator<Item = String>,
    sender: &str,
) -> Result<(), WorkflowRefusal> {
    let missing: Vec<String> = needed
        .into_iter()
        .filter(|n| n != sender && !recipients.contains(n))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Malformed(format!(
            "a {what} must be addressed to {}; add them to the audience",
            missing.join(", ")
        )))
    }
}

fn lead_of(reg: &Registry, mechanism: &str) -> Result<String, WorkflowRefusal> {
    reg.mechanisms
        .get(mechanism)
        .map(|m| m.lead.clone())
        .ok_or_else(|| {
            Malformed(format!(
                "mechanism {:?} is not in the registry",
                shown(mechanism)
            ))
        })
}

fn offices(mechanisms: &[String]) -> impl Iterator<Item = String> + '_ {
    mechanisms.iter().map(|m| office_inbox(m))
}

fn registry_keys(reg: &Registry) -> impl Fn(&str, &str) -> Option<RegisteredKey> + '_ {
    |unit, key_id| {
        reg.unit(unit)
            .and_then(|u| u.key(key_id))
            .map(|k| RegisteredKey {
                unit: unit.to_string(),
                algorithm: k.algorithm.clone(),
                key_id: k.key_id.clone(),
                public_key: k.public_key.clone(),
                valid_from_micros: k.valid_from_micros,
                valid_until_micros: k.valid_until_micros.unwrap_or(0),
            })
    }
}

/// Refuses unless `unit` is a member of `mechanism` at the step's time;
/// a unit added from a later time is not one yet.
fn require_member(
    cx: &StepContext<'_>,
    mechanism: &str,
    unit: &str,
    refusal: impl FnOnce(String) -> WorkflowRefusal,
    what: &str,
) -> Result<(), WorkflowRefusal> {
    let mech = cx.registry.mechanisms.get(mechanism).ok_or_else(|| {
        Malformed(format!(
            "mechanism {:?} is not in the registry",
            shown(mechanism)
        ))
    })?;
    if mech.has_member_at(unit, cx.now_micros) {
        return Ok(());
    }
    let since = match mech.member_since(unit) {
        Some(from) => format!(" (it is one only from {})", display_micros(from)),
        None => String::new(),
    };
    Err(refusal(format!(
        "{unit} is not a member of {mechanism} at {}{since}; {what}",
        display_micros(cx.now_micros)
    )))
}

/// The refusal for a recorded signature (consent, co-signature) whose key
/// no longer counts at its entry's hub time, if that is so.
fn stale_signature(
    cx: &StepContext<'_>,
    what: &str,
    pin: &pb::EntryPin,
) -> Result<Option<String>, WorkflowRefusal> {
    let Some(stored) = cx.store.entry(&pin.channel, pin.seq)? else {
        return Ok(None);
    };
    let key_id = stored
        .entry
        .message
        .as_ref()
        .and_then(|m| m.signature.as_ref())
        .map(|s| s.key_id.clone())
        .unwrap_or_default();
    let keys = registry_keys(cx.registry);
    Ok(match keys.key(&pin.channel, &key_id) {
        Some(k) if k.valid_at(stored.entry.hub_micros) => None,
        Some(k) => Some(key_not_valid(what, &stored.entry, &k)),
        None => Some(format!(
            "the {what} {}:{} names key {key_id:?}, which is no longer registered",
            pin.channel, pin.seq
        )),
    })
}

/// Refuses an embedded entry that is not, byte for byte, the entry the
/// hub holds at that position.
fn same_as_stored(
    store: &dyn Store,
    what: &str,
    entry: Option<&pb::Entry>,
    expected: Option<&pb::EntryPin>,
) -> Result<(), WorkflowRefusal> {
    let entry = entry.ok_or_else(|| Malformed(format!("the {what} entry is missing")))?;
    let stored = store
        .entry(&entry.channel, entry.seq)?
        .ok_or_else(|| Malformed(format!("the embedded {what} is not an entry of this hub")))?;
    if stored.entry != *entry {
        return Err(Malformed(format!(
            "the embedded {what} differs from entry {}:{} as the hub holds it",
            entry.channel, entry.seq
        )));
    }
    if let Some(p) = expected
        && (p.channel != entry.channel
            || p.seq != entry.seq
            || p.leaf_hash != stored.leaf_hash.to_vec())
    {
        return Err(WrongState(format!(
            "the embedded {what} {}:{} is not the current one ({}:{})",
            entry.channel, entry.seq, p.channel, p.seq
        )));
    }
    Ok(())
}

/// Checks one workflow step against the state; Ok means it may be appended.
pub fn check_step(cx: &StepContext<'_>, step: &Step) -> Result<(), WorkflowRefusal> {
    match step {
        Step::MeetingProposal(p) => check_proposal(cx, p),
        Step::AgendaItem(i) => check_agenda_item(cx, i),
        Step::AgendaSettlement(s) => check_settlement(cx, s),
        Step::MinutesDraft(d) => check_draft(cx, d),
        Step::MinutesAnswer(a) => check_answer(cx, a),
        Step::MinutesIssue(i) => check_issue(cx, i),
        Step::JointDraft(d) => check_joint_draft(cx, d),
        Step::CoSignature(c) => check_co_signature(cx, c),
        Step::JointRelease(r) => check_release(cx, r),
        Step::LiaisonChange(l) => check_liaison(cx, l),
        Step::Statistics(s) => check_statistics_shape(cx, s),
        Step::JointWarning(w) => check_joint_warning(cx, w),
        Step::WarningMeasures(a) => check_warning_measures(cx, a),
        Step::WarningLift(l) => check_warning_lift(cx, l),
        Step::TaskAssignment(a) => task::check_assignment_step(cx, a),
        Step::TaskReport(r) => task::check_report(cx, r),
        Step::TaskReminder(r) => task::check_reminder(cx, r),
        Step::TaskAcceptance(a) => task::check_acceptance(cx, a),
        Step::TaskReturn(r) => task::check_return(cx, r),
        Step::ActionProposal(p) => action::check_proposal_step(cx, p),
        Step::ActionAnswer(a) => action::check_answer_step(cx, a),
        Step::ActionResult(r) => action::check_result_step(cx, r),
        Step::ActionSummary(s) => action::check_summary_step(cx, s),
    }
}

fn check_proposal(cx: &StepContext<'_>, p: &pb::MeetingProposal) -> Result<(), WorkflowRefusal> {
    check_workflow_id("meeting id", &p.meeting_id).map_err(|e| Malformed(e.to_string()))?;
    let kind = MeetingKind::try_from(p.kind).unwrap_or(MeetingKind::Unspecified);
    if kind == MeetingKind::Unspecified {
        return Err(Malformed(
            "a meeting needs a kind: annual, ad-hoc, partial, correspondence or joint".into(),
        ));
    }
    let want = if kind == MeetingKind::Joint { 2 } else { 1 };
    let distinct: BTreeSet<&String> = p.mechanisms.iter().collect();
    if distinct.len() != want || p.mechanisms.len() != want {
        return Err(Malformed(format!(
            "a {} meeting concerns {want} distinct mechanism(s), not {}",
            if want == 2 {
                "joint"
            } else {
                "single-mechanism"
            },
            p.mechanisms.len()
        )));
    }
    for m in &p.mechanisms {
        if lead_of(cx.registry, m)? != cx.sender {
            return Err(NotAllowed(format!(
                "a meeting of {m} is proposed by its office through the lead unit {}, not by {}",
                lead_of(cx.registry, m)?,
                cx.sender
            )));
        }
    }
    if p.title.trim().is_empty() {
        return Err(Malformed("a meeting needs a title".into()));
    }
    if p.date_micros <= 0 {
        return Err(Malformed("a meeting needs a date".into()));
    }
    let attendees: BTreeSet<&String> = p.attending_units.iter().collect();
    if attendees.is_empty() || attendees.len() != p.attending_units.len() {
        return Err(Malformed(
            "a meeting needs attending units, each named once".into(),
        ));
    }
    for u in &p.attending_units {
        // Membership as of the proposal's append time.
        let member = p.mechanisms.iter().any(|m| {
            cx.registry
                .mechanisms
                .get(m)
                .is_some_and(|r| r.has_member_at(u, cx.now_micros))
        });
        if !member {
            let later: Vec<String> = p
                .mechanisms
                .iter()
                .filter_map(|m| cx.registry.mechanisms.get(m))
                .filter_map(|r| r.member_since(u))
                .map(display_micros)
                .collect();
            let since = if later.is_empty() {
                String::new()
            } else {
                format!(" (it is one only from {})", later.join(", "))
            };
            return Err(Malformed(format!(
                "attending unit {:?} is not a member of {} at {}{since}; name only units that are members when the meeting is proposed",
                shown(u),
                p.mechanisms.join(" or "),
                display_micros(cx.now_micros)
            )));
        }
    }
    if cx.workflows.meeting(&p.meeting_id)?.is_some() {
        return Err(Exists(format!(
            "meeting {:?} was already proposed; choose a new meeting id",
            shown(&p.meeting_id)
        )));
    }
    required_recipients(
        "meeting proposal",
        cx.recipients,
        p.attending_units
            .iter()
            .cloned()
            .chain(offices(&p.mechanisms)),
        cx.sender,
    )
}

fn meeting(cx: &StepContext<'_>, id: &str) -> Result<pb::MeetingState, WorkflowRefusal> {
    cx.workflows
        .meeting(id)?
        .ok_or_else(|| NotFound(format!("no meeting {:?} was proposed", shown(id))))
}

fn proposal(m: &pb::MeetingState) -> pb::MeetingProposal {
    m.proposal.clone().unwrap_or_default()
}

fn stage(m: &pb::MeetingState) -> MeetingStage {
    MeetingStage::try_from(m.stage).unwrap_or(MeetingStage::Unspecified)
}

fn require_attendee(
    m: &pb::MeetingState,
    unit: &str,
    what: &str,
) -> Result<pb::MeetingProposal, WorkflowRefusal> {
    let p = proposal(m);
    if p.attending_units.iter().any(|u| u == unit) {
        Ok(p)
    } else {
        Err(NotAllowed(format!(
            "{unit} is not an attending unit of meeting {:?} and cannot {what}",
            shown(&p.meeting_id)
        )))
    }
}

/// Everyone a meeting step goes to: attendees, proposer and offices.
fn meeting_parties(m: &pb::MeetingState) -> Vec<String> {
    let p = proposal(m);
    p.attending_units
        .iter()
        .cloned()
        .chain(std::iter::once(m.proposer.clone()))
        .chain(offices(&p.mechanisms))
        .collect()
}

fn check_agenda_item(cx: &StepContext<'_>, i: &pb::AgendaItem) -> Result<(), WorkflowRefusal> {
    let m = meeting(cx, &i.meeting_id)?;
    if cx.sender != m.proposer {
        require_attendee(&m, cx.sender, "propose or comment on agenda items")?;
    }
    if stage(&m) != MeetingStage::AgendaOpen {
        return Err(WrongState(format!(
            "the agenda of meeting {:?} is settled; no more items or comments are taken",
            shown(&i.meeting_id)
        )));
    }
    if i.text.trim().is_empty() {
        return Err(Malformed("an agenda item or comment needs a text".into()));
    }
    if let Some(on) = &i.comment_on
        && !m.agenda_items.contains(on)
    {
        return Err(Malformed(format!(
            "the comment names {}:{}, which is not an agenda item of meeting {:?}",
            on.channel,
            on.seq,
            shown(&i.meeting_id)
        )));
    }
    required_recipients("agenda item", cx.recipients, meeting_parties(&m), cx.sender)
}

fn check_settlement(cx: &StepContext<'_>, s: &pb::AgendaSettlement) -> Result<(), WorkflowRefusal> {
    let m = meeting(cx, &s.meeting_id)?;
    if cx.sender != m.proposer {
        return Err(NotAllowed(format!(
            "the agenda of meeting {:?} is settled by its proposer {}, not {}",
            shown(&s.meeting_id),
            m.proposer,
            cx.sender
        )));
    }
    if stage(&m) != MeetingStage::AgendaOpen {
        return Err(WrongState(format!(
            "the agenda of meeting {:?} is already settled",
            shown(&s.meeting_id)
        )));
    }
    if s.agenda.iter().all(|a| a.trim().is_empty()) {
        return Err(Malformed("the settled agenda is empty".into()));
    }
    if let Some(bad) = s.adopted.iter().find(|p| !m.agenda_items.contains(p)) {
        return Err(Malformed(format!(
            "adopted item {}:{} is not an agenda item of this meeting",
            bad.channel, bad.seq
        )));
    }
    required_recipients(
        "agenda settlement",
        cx.recipients,
        meeting_parties(&m),
        cx.sender,
    )
}

fn check_draft(cx: &StepContext<'_>, d: &pb::MinutesDraft) -> Result<(), WorkflowRefusal> {
    let m = meeting(cx, &d.meeting_id)?;
    if cx.sender != m.proposer {
        return Err(NotAllowed(format!(
            "minutes of meeting {:?} are circulated by its office through {}, not by {}",
            shown(&d.meeting_id),
            m.proposer,
            cx.sender
        )));
    }
    match stage(&m) {
        MeetingStage::AgendaSettled | MeetingStage::MinutesDrafted => {}
        MeetingStage::MinutesIssued => {
            return Err(WrongState(format!(
                "the minutes of meeting {:?} are issued; they cannot be redrafted",
                shown(&d.meeting_id)
            )));
        }
        _ => {
            return Err(WrongState(format!(
                "settle the agenda of meeting {:?} before circulating minutes",
                shown(&d.meeting_id)
            )));
        }
    }
    let date = proposal(&m).date_micros;
    if cx.now_micros < date {
        return Err(WrongState(format!(
            "meeting {:?} takes place at {date} (unix µs); minutes come after it",
            shown(&d.meeting_id)
        )));
    }
    if d.text.trim().is_empty() {
        return Err(Malformed("the minutes draft is empty".into()));
    }
    if d.revision != m.current_revision + 1 {
        return Err(WrongState(format!(
            "the next draft of meeting {:?} is revision {}, not {}",
            shown(&d.meeting_id),
            m.current_revision + 1,
            d.revision
        )));
    }
    if d.supersedes != m.current_draft {
        return Err(WrongState(format!(
            "a revised draft names the draft it supersedes, the current one ({})",
            m.current_draft
                .as_ref()
                .map(|p| format!("{}:{}", p.channel, p.seq))
                .unwrap_or_else(|| "none yet".into())
        )));
    }
    required_recipients(
        "minutes draft",
        cx.recipients,
        meeting_parties(&m),
        cx.sender,
    )
}

fn check_answer(cx: &StepContext<'_>, a: &pb::MinutesAnswer) -> Result<(), WorkflowRefusal> {
    let m = meeting(cx, &a.meeting_id)?;
    require_attendee(&m, cx.sender, "answer its minutes")?;
    if stage(&m) == MeetingStage::MinutesIssued {
        return Err(WrongState(format!(
            "the minutes of meeting {:?} are already issued",
            shown(&a.meeting_id)
        )));
    }
    let current = m.current_draft.as_ref().ok_or_else(|| {
        WrongState(format!(
            "no minutes draft of meeting {:?} has been circulated",
            shown(&a.meeting_id)
        ))
    })?;
    let named = a
        .draft
        .as_ref()
        .ok_or_else(|| Malformed("an answer names the draft it answers".into()))?;
    if named != current {
        if m.superseded_drafts.contains(named) {
            return Err(WrongState(format!(
                "draft {}:{} was superseded by {}:{} (revision {}); answer the current draft",
                named.channel, named.seq, current.channel, current.seq, m.current_revision
            )));
        }
        return Err(Malformed(format!(
            "{}:{} with that leaf hash is not a minutes draft of meeting {:?}",
            named.channel,
            named.seq,
            shown(&a.meeting_id)
        )));
    }
    if !a.consent && a.comments.trim().is_empty() {
        return Err(Malformed("an objection needs comments".into()));
    }
    if let Some(given) = m
        .answers
        .iter()
        .find(|x| x.unit == cx.sender && x.state != AnswerState::NotAnswered as i32)
        // An answer signed with a key that did not count may be given again.
        && match &given.answer {
            Some(p) => stale_signature(cx, "answer", p)?.is_none(),
            None => true,
        }
    {
        return Err(WrongState(format!(
            "{} already answered this draft (entry {}:{})",
            cx.sender,
            given
                .answer
                .as_ref()
                .map(|p| p.channel.as_str())
                .unwrap_or(""),
            given.answer.as_ref().map(|p| p.seq).unwrap_or(0)
        )));
    }
    let p = proposal(&m);
    required_recipients(
        "minutes answer",
        cx.recipients,
        std::iter::once(m.proposer.clone()).chain(offices(&p.mechanisms)),
        cx.sender,
    )
}

fn check_issue(cx: &StepContext<'_>, i: &pb::MinutesIssue) -> Result<(), WorkflowRefusal> {
    let m = meeting(cx, &i.meeting_id)?;
    if cx.sender != m.proposer {
        return Err(NotAllowed(format!(
            "minutes of meeting {:?} are issued by its office through {}, not by {}",
            shown(&i.meeting_id),
            m.proposer,
            cx.sender
        )));
    }
    match stage(&m) {
        MeetingStage::MinutesDrafted => {}
        MeetingStage::MinutesIssued => {
            return Err(WrongState(format!(
                "the minutes of meeting {:?} are already issued",
                shown(&i.meeting_id)
            )));
        }
        _ => {
            return Err(WrongState(format!(
                "no minutes draft of meeting {:?} has been circulated",
                shown(&i.meeting_id)
            )));
        }
    }
    let waiting: Vec<String> = m
        .answers
        .iter()
        .filter(|a| a.state != AnswerState::Consented as i32)
        .map(|a| {
            if a.state == AnswerState::Objected as i32 {
                format!("{} (objected)", a.unit)
            } else {
                format!("{} (not answered)", a.unit)
            }
        })
        .collect();
    if !waiting.is_empty() {
        return Err(WrongState(format!(
            "minutes are issued only when every attending unit consented to the current draft; waiting for {}",
            waiting.join(", ")
        )));
    }
    for a in &m.answers {
        if let Some(p) = &a.answer
            && let Some(why) = stale_signature(cx, "consent", p)?
        {
            return Err(WrongState(format!(
                "{why}; {} consents to the current draft again with its current key before the minutes are issued",
                a.unit
            )));
        }
    }
    same_as_stored(
        cx.store,
        "meeting proposal",
        i.proposal.as_ref(),
        m.proposal_entry.as_ref(),
    )?;
    same_as_stored(
        cx.store,
        "minutes draft",
        i.draft.as_ref(),
        m.current_draft.as_ref(),
    )?;
    for c in &i.consents {
        let expected = m
            .answers
            .iter()
            .find(|a| a.unit == c.channel)
            .and_then(|a| a.answer.as_ref());
        same_as_stored(cx.store, "consent", Some(c), expected)?;
    }
    let keys = registry_keys(cx.registry);
    verify_minutes_issue(cx.sender, i, &keys as &dyn SigningKeys)
        .map_err(|e| Malformed(e.to_string()))?;
    required_recipients(
        "minutes issue",
        cx.recipients,
        meeting_parties(&m),
        cx.sender,
    )
}

fn check_liaison(cx: &StepContext<'_>, l: &pb::LiaisonChange) -> Result<(), WorkflowRefusal> {
    if l.name.trim().is_empty() || l.contact.trim().is_empty() {
        return Err(Malformed("a liaison needs a name and a contact".into()));
    }
    let audience = cx.message.audience.clone().unwrap_or_default();
    if audience.offices.is_empty() {
        return Err(Malformed(
            "a liaison change is reported to the office of the unit's mechanisms".into(),
        ));
    }
    for m in &audience.offices {
        require_member(
            cx,
            m,
            cx.sender,
            NotAllowed,
            "a unit reports its liaison to the offices of its own mechanisms",
        )?;
    }
    Ok(())
}

fn check_statistics_shape(
    cx: &StepContext<'_>,
    s: &pb::StatisticsReport,
) -> Result<(), WorkflowRefusal> {
    let lead = lead_of(cx.registry, &s.mechanism)?;
    if lead != cx.sender {
        return Err(NotAllowed(format!(
            "statistics of {} are circulated by its office through {lead}, not by {}",
            s.mechanism, cx.sender
        )));
    }
    check_closed_period(
        s.since_micros,
        s.until_micros,
        s.as_of_micros,
        cx.now_micros,
    )?;
    let audience = cx.message.audience.clone().unwrap_or_default();
    if !audience.mechanisms.contains(&s.mechanism) {
        return Err(Malformed(format!(
            "statistics of {} are circulated to the mechanism {}",
            s.mechanism, s.mechanism
        )));
    }
    Ok(())
}
