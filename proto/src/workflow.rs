//! The rules of the mechanisms' workflows that every party checks the same
//! way: how a step is carried in a message, what co-issuers sign, and when
//! minutes count as issued or a joint notice as properly co-signed.
//!
//! The hub applies these rules before appending, the client library after
//! receiving, and an offline verifier with nothing but the registry's keys.

use crate::canonical::leaf_hash_with_digest;
use crate::echo::shown;
use crate::keys::{RegisteredKey, verify_signed_message};
use crate::pb::{self, Entry, JointContent, Kind, Message, WorkflowStep, workflow_step::Step};
use crate::{HASH_LEN, Hash};
use prost::Message as _;
use ring::digest::{Context, SHA256};
use std::collections::BTreeSet;

pub mod action;
pub mod task;

/// Content type of a message whose body is a [`WorkflowStep`].
pub const CONTENT_TYPE: &str = "application/vnd.tongbao.workflow-step+protobuf";

const CONTENT_DOMAIN: &[u8] = b"tongbao/v1/joint-content\n";

/// Why a workflow step or its evidence does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkflowError {
    /// The step is not a well-formed workflow step of its kind.
    #[error("{0}")]
    Malformed(String),
    /// Embedded evidence does not prove what the step claims.
    #[error("{0}")]
    Unproven(String),
}

fn malformed(s: impl Into<String>) -> WorkflowError {
    WorkflowError::Malformed(s.into())
}

fn unproven(s: impl Into<String>) -> WorkflowError {
    WorkflowError::Unproven(s.into())
}

/// The signing keys a verifier knows, by unit and key id, each with the
/// interval it may sign in.
pub trait SigningKeys {
    fn key(&self, unit: &str, key_id: &str) -> Option<RegisteredKey>;
}

impl<F: Fn(&str, &str) -> Option<RegisteredKey>> SigningKeys for F {
    fn key(&self, unit: &str, key_id: &str) -> Option<RegisteredKey> {
        self(unit, key_id)
    }
}

/// The keys of a key-registry statement, for an offline verifier.
impl SigningKeys for [RegisteredKey] {
    fn key(&self, unit: &str, key_id: &str) -> Option<RegisteredKey> {
        self.iter()
            .find(|k| k.unit == unit && k.key_id == key_id)
            .cloned()
    }
}

/// The kinds a step may be carried by.
pub fn kinds_of(step: &Step) -> &'static [Kind] {
    match step {
        Step::MeetingProposal(_) => &[Kind::MeetingProposal],
        Step::AgendaItem(_) | Step::AgendaSettlement(_) => &[Kind::MeetingAgenda],
        Step::MinutesDraft(_) | Step::MinutesIssue(_) => &[Kind::Minutes],
        Step::MinutesAnswer(_) => &[Kind::MinutesConsent],
        Step::JointDraft(_) | Step::JointRelease(_) => &[Kind::JointNotice, Kind::Escalation],
        Step::CoSignature(_) => &[Kind::CoSignature],
        Step::LiaisonChange(_) => &[Kind::LiaisonChange],
        Step::Statistics(_) => &[Kind::Statistics],
        Step::JointWarning(_) => &[Kind::JointWarning],
        Step::WarningMeasures(_) => &[Kind::WarningMeasures],
        Step::WarningLift(_) => &[Kind::WarningLift],
        Step::TaskAssignment(_)
        | Step::TaskReminder(_)
        | Step::TaskAcceptance(_)
        | Step::TaskReturn(_) => &[Kind::Task],
        Step::TaskReport(_) => &[Kind::TaskReport],
        Step::ActionProposal(_) | Step::ActionSummary(_) => &[Kind::JointAction],
        Step::ActionAnswer(_) | Step::ActionResult(_) => &[Kind::ActionReport],
    }
}

/// The body of a message carrying `step`.
pub fn encode_step(step: Step) -> Vec<u8> {
    WorkflowStep { step: Some(step) }.encode_to_vec()
}

/// The step a workflow message carries, checked against its kind.
pub fn decode_step(m: &Message) -> Result<Step, WorkflowError> {
    if m.content_type != CONTENT_TYPE {
        return Err(malformed(format!(
            "a workflow step has content type {CONTENT_TYPE}, not {:?}",
            shown(&m.content_type)
        )));
    }
    let step = WorkflowStep::decode(&m.body[..])
        .map_err(|e| malformed(format!("the body is not a workflow step: {e}")))?
        .step
        .ok_or_else(|| malformed("the workflow step is empty"))?;
    if !kinds_of(&step).iter().any(|k| *k as i32 == m.kind) {
        return Err(malformed(format!(
            "a {} step cannot be carried by kind {}",
            step_name(&step),
            crate::kinds::name(m.kind)
        )));
    }
    Ok(step)
}

/// A short name of a step, for messages.
pub fn step_name(step: &Step) -> &'static str {
    match step {
        Step::MeetingProposal(_) => "meeting proposal",
        Step::AgendaItem(_) => "agenda item",
        Step::AgendaSettlement(_) => "agenda settlement",
        Step::MinutesDraft(_) => "minutes draft",
        Step::MinutesAnswer(_) => "minutes answer",
        Step::MinutesIssue(_) => "minutes issue",
        Step::JointDraft(_) => "joint draft",
        Step::CoSignature(_) => "co-signature",
        Step::JointRelease(_) => "joint release",
        Step::LiaisonChange(_) => "liaison change",
        Step::Statistics(_) => "statistics report",
        Step::JointWarning(_) => "joint warning",
        Step::WarningMeasures(_) => "warning measures",
        Step::WarningLift(_) => "warning lift",
        Step::TaskAssignment(_) => "task assignment",
        Step::TaskReport(_) => "task report",
        Step::TaskReminder(_) => "task reminder",
        Step::TaskAcceptance(_) => "task acceptance",
        Step::TaskReturn(_) => "task return",
        Step::ActionProposal(_) => "action proposal",
        Step::ActionAnswer(_) => "action answer",
        Step::ActionResult(_) => "action result",
        Step::ActionSummary(_) => "action summary",
    }
}

/// Checks the shape of meeting and notice ids: 1 to 64 characters A-Z,
/// a-z, 0-9, '-', '_', '.'.
pub fn check_workflow_id(what: &str, id: &str) -> Result<(), WorkflowError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(malformed(format!(
            "{what} {:?} is not valid: use 1 to 64 characters A-Z, a-z, 0-9, '-', '_', '.'",
            shown(id)
        )))
    }
}

fn put(ctx: &mut Context, bytes: &[u8]) {
    ctx.update(&(bytes.len() as u64).to_be_bytes());
    ctx.update(bytes);
}

fn put_strs(ctx: &mut Context, v: &[String]) {
    ctx.update(&(v.len() as u64).to_be_bytes());
    for s in v {
        put(ctx, s.as_bytes());
    }
}

/// The digest co-issuers sign: a canonical, length-prefixed encoding of
/// the content (never its protobuf bytes, which are not unique).
pub fn content_digest(c: &JointContent) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(CONTENT_DOMAIN);
    put(&mut ctx, c.title.as_bytes());
    put(&mut ctx, c.text.as_bytes());
    put(&mut ctx, c.mechanism.as_bytes());
    put_strs(&mut ctx, &c.co_issuers);
    let no_audience = pb::Audience::default();
    let a = c.audience.as_ref().unwrap_or(&no_audience);
    put_strs(&mut ctx, &a.units);
    put_strs(&mut ctx, &a.mechanisms);
    put_strs(&mut ctx, &a.offices);
    ctx.update(&[u8::from(a.leading_group)]);
    match &c.source_entry {
        None => ctx.update(&[0]),
        Some(r) => {
            ctx.update(&[1]);
            put(&mut ctx, r.channel.as_bytes());
            ctx.update(&r.seq.to_be_bytes());
        }
    }
    put(&mut ctx, c.case_id.as_bytes());
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// An embedded entry whose sender signature and leaf hash were checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedEntry<'a> {
    pub entry: &'a Entry,
    pub message: &'a Message,
    pub leaf_hash: Hash,
    pub step: Step,
}

impl CheckedEntry<'_> {
    /// The pin that names this entry.
    pub fn pin(&self) -> pb::EntryPin {
        pb::EntryPin {
            channel: self.entry.channel.clone(),
            seq: self.entry.seq,
            leaf_hash: self.leaf_hash.to_vec(),
        }
    }
}

/// Checks an embedded entry: its message sits in its sender's channel, is
/// signed by a registered key of that sender that was valid at the entry's
/// hub time, and carries a workflow step.
pub fn check_embedded<'a>(
    what: &str,
    entry: &'a Entry,
    keys: &dyn SigningKeys,
) -> Result<CheckedEntry<'a>, WorkflowError> {
    let (message, leaf_hash) = check_signed_entry(what, entry, keys)?;
    let step = decode_step(message).map_err(|e| unproven(format!("embedded {what}: {e}")))?;
    Ok(CheckedEntry {
        entry,
        message,
        leaf_hash,
        step,
    })
}

/// A step a release rests on that its releaser signed itself: an action's
/// proposal, a notice's or minutes' draft.
pub trait OwnStep: Clone {
    /// What embeds it ("release"), what it is there ("draft"), the step it
    /// must be ("joint draft") and what its id names ("notice"), for refusals.
    const WITHIN: &'static str;
    const ROLE: &'static str;
    const KIND: &'static str;
    const ID_OF: &'static str;
    /// This step, if `step` is one.
    fn of(step: &Step) -> Option<&Self>;
    /// The workflow id it names.
    fn id(&self) -> &str;
}

/// The step a release rests on: embedded, a valid signed entry, of the
/// right kind, about the same workflow (`id`), and sent by `releaser`.
pub fn own_embedded_step<'a, T: OwnStep>(
    embedded: Option<&'a Entry>,
    releaser: &str,
    id: &str,
    keys: &dyn SigningKeys,
) -> Result<(CheckedEntry<'a>, T), WorkflowError> {
    let (within, role, kind) = (T::WITHIN, T::ROLE, T::KIND);
    let entry = embedded.ok_or_else(|| unproven(format!("the {within} carries no {role}")))?;
    let checked = check_embedded(kind, entry, keys)?;
    let step = T::of(&checked.step).cloned().ok_or_else(|| {
        let other = step_name(&checked.step);
        unproven(format!(
            "the embedded {role} is a step of kind {other}, not {kind}"
        ))
    })?;
    if step.id() != id || checked.message.sender != releaser {
        return Err(unproven(format!(
            "the embedded {role} is not of {} {:?} by {releaser}",
            T::ID_OF,
            shown(id)
        )));
    }
    Ok((checked, step))
}

/// `impl OwnStep` for a step type: its `Step` variant, its id field and
/// the words its refusals use.
macro_rules! own_step {
    ($ty:ty, $variant:ident, $id:ident, $within:literal, $role:literal, $kind:literal, $id_of:literal) => {
        impl $crate::workflow::OwnStep for $ty {
            const WITHIN: &'static str = $within;
            const ROLE: &'static str = $role;
            const KIND: &'static str = $kind;
            const ID_OF: &'static str = $id_of;
            fn of(step: &$crate::pb::workflow_step::Step) -> Option<&Self> {
                match step {
                    $crate::pb::workflow_step::Step::$variant(s) => Some(s),
                    _ => None,
                }
            }
            fn id(&self) -> &str {
                &self.$id
            }
        }
    };
}
pub(crate) use own_step;

own_step!(
    pb::JointDraft,
    JointDraft,
    notice_id,
    "release",
    "draft",
    "joint draft",
    "notice"
);
own_step!(
    pb::MinutesDraft,
    MinutesDraft,
    meeting_id,
    "minutes issue",
    "draft",
    "minutes draft",
    "meeting"
);

/// Checks an embedded entry of any kind: its message sits in its sender's
/// channel and is signed by a key of that sender valid at the entry's hub
/// time (a key used after its retirement proves nothing). Returns the
/// message and the entry's leaf hash.
pub fn check_signed_entry<'a>(
    what: &str,
    entry: &'a Entry,
    keys: &dyn SigningKeys,
) -> Result<(&'a Message, Hash), WorkflowError> {
    let (signed, message) = entry
        .sender_message()
        .map_err(|e| unproven(format!("the embedded {what} {e}")))?;
    let key_id = signed
        .signature
        .as_ref()
        .map(|s| s.key_id.as_str())
        .unwrap_or_default();
    let key = keys.key(&message.sender, key_id).ok_or_else(|| {
        unproven(format!(
            "the embedded {what} is signed with key {:?}, not a registered key of unit {}",
            shown(key_id),
            shown(&message.sender)
        ))
    })?;
    if !key.valid_at(entry.hub_micros) {
        return Err(unproven(key_not_valid(what, entry, &key)));
    }
    let digest = verify_signed_message(signed, &key.public_key).map_err(|e| {
        unproven(format!(
            "the embedded {what} ({}:{}) does not verify: {e}",
            entry.channel, entry.seq
        ))
    })?;
    Ok((message, leaf_hash_with_digest(entry, &digest)))
}

/// Why an entry's key does not count at the entry's hub time.
pub fn key_not_valid(what: &str, entry: &Entry, key: &RegisteredKey) -> String {
    let interval = if key.valid_until_micros == 0 {
        format!("from {}", key.valid_from_micros)
    } else {
        format!(
            "from {} until {}",
            key.valid_from_micros, key.valid_until_micros
        )
    };
    format!(
        "the {what} {}:{} was signed with key {} of {}, which is valid only {interval} (unix µs), not at the entry's hub time {}",
        entry.channel, entry.seq, key.key_id, key.unit, entry.hub_micros
    )
}

/// What a verified minutes issue proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedMinutes {
    pub meeting_id: String,
    pub proposer: String,
    /// The mechanisms the meeting was of.
    pub mechanisms: Vec<String>,
    pub attending_units: Vec<String>,
    /// The draft every attending unit consented to.
    pub draft: pb::EntryPin,
    pub text: String,
    /// Each attending unit's consent entry, in attendee order.
    pub consents: Vec<pb::EntryPin>,
}

/// The rule of 会议纪要: minutes are issued iff every attending unit named in
/// the signed proposal consented, by a signed consent naming the same
/// draft's leaf hash, to a draft of that meeting by the proposer's side.
/// `issuer` is the unit that signed the issue entry.
pub fn verify_minutes_issue(
    issuer: &str,
    issue: &pb::MinutesIssue,
    keys: &dyn SigningKeys,
) -> Result<IssuedMinutes, WorkflowError> {
    let proposal_entry = issue
        .proposal
        .as_ref()
        .ok_or_else(|| unproven("the minutes issue carries no meeting proposal"))?;
    let proposal = check_embedded("meeting proposal", proposal_entry, keys)?;
    let Step::MeetingProposal(p) = &proposal.step else {
        return Err(unproven("the embedded proposal is not a meeting proposal"));
    };
    if p.meeting_id != issue.meeting_id {
        return Err(unproven(format!(
            "the embedded proposal is of meeting {:?}, not {:?}",
            shown(&p.meeting_id),
            shown(&issue.meeting_id)
        )));
    }
    if proposal.message.sender != issuer {
        return Err(unproven(format!(
            "minutes of meeting {:?} are issued by its proposer {}, not {issuer}",
            shown(&p.meeting_id),
            proposal.message.sender
        )));
    }
    let (draft, d): (_, pb::MinutesDraft) =
        own_embedded_step(issue.draft.as_ref(), issuer, &issue.meeting_id, keys)?;
    let draft_pin = draft.pin();
    let attendees: BTreeSet<&str> = p.attending_units.iter().map(String::as_str).collect();
    let mut consented = std::collections::BTreeMap::new();
    for e in &issue.consents {
        let c = check_embedded("consent", e, keys)?;
        let Step::MinutesAnswer(a) = &c.step else {
            return Err(unproven("an embedded consent is not a minutes answer"));
        };
        let unit = c.message.sender.as_str();
        if !attendees.contains(unit) {
            return Err(unproven(format!(
                "the consent of {unit} counts for nothing: {unit} is not an attending unit"
            )));
        }
        if !a.consent || a.meeting_id != issue.meeting_id {
            return Err(unproven(format!(
                "the answer of {unit} is not a consent to these minutes"
            )));
        }
        if a.draft.as_ref() != Some(&draft_pin) {
            return Err(unproven(format!(
                "the consent of {unit} names another draft than the one issued"
            )));
        }
        if consented.insert(unit.to_string(), c.pin()).is_some() {
            return Err(unproven(format!("{unit} consents twice")));
        }
    }
    let missing: Vec<&str> = attendees
        .iter()
        .filter(|u| !consented.contains_key(**u))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(unproven(format!(
            "minutes are issued only once every attending unit consented; no consent from {}",
            missing.join(", ")
        )));
    }
    Ok(IssuedMinutes {
        meeting_id: issue.meeting_id.clone(),
        proposer: issuer.to_string(),
        mechanisms: p.mechanisms.clone(),
        attending_units: p.attending_units.clone(),
        draft: draft_pin,
        text: d.text.clone(),
        consents: consented.into_values().collect(),
    })
}

/// What a verified joint release proves.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasedNotice {
    pub notice_id: String,
    pub drafter: String,
    pub content: JointContent,
    pub content_digest: Hash,
    pub draft: pb::EntryPin,
    /// Each named co-issuer's co-signature entry, in co-issuer order.
    pub co_signatures: Vec<pb::EntryPin>,
    /// What the source entry the content names was, from the copy the
    /// release embeds.
    pub source: Option<SourceProof>,
}

/// What the source entry of a notice or escalation proves (上报 references
/// the minutes or the case it came from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceProof {
    /// Minutes of a meeting of the content's mechanism, issued with every
    /// attending unit's consent.
    Minutes {
        entry: pb::EntryPin,
        minutes: IssuedMinutes,
    },
    /// An entry of the content's case, signed by its sender.
    CaseEntry { entry: pb::EntryPin, sender: String },
}

/// The rule of 上报's reference: the entry the content names as its source
/// is either issued minutes of a meeting of the content's mechanism, or an
/// entry of the content's case. `source` is the entry as embedded.
pub fn verify_source(
    content: &JointContent,
    source: &Entry,
    keys: &dyn SigningKeys,
) -> Result<SourceProof, WorkflowError> {
    let named = content
        .source_entry
        .as_ref()
        .ok_or_else(|| unproven("the content names no source entry"))?;
    if named.channel != source.channel || named.seq != source.seq {
        return Err(unproven(format!(
            "the embedded source is {}:{}, but the content names {}:{}",
            source.channel, source.seq, named.channel, named.seq
        )));
    }
    let (message, leaf_hash) = check_signed_entry("source entry", source, keys)?;
    let pin = pb::EntryPin {
        channel: source.channel.clone(),
        seq: source.seq,
        leaf_hash: leaf_hash.to_vec(),
    };
    let case = message
        .references
        .as_ref()
        .map(|r| r.case_id.as_str())
        .unwrap_or_default();
    if !content.case_id.is_empty() && case == content.case_id {
        return Ok(SourceProof::CaseEntry {
            entry: pin,
            sender: message.sender.clone(),
        });
    }
    if let Ok(Step::MinutesIssue(issue)) = decode_step(message) {
        let minutes = verify_minutes_issue(&message.sender, &issue, keys)?;
        if !minutes.mechanisms.contains(&content.mechanism) {
            return Err(unproven(format!(
                "the source minutes are of a meeting of {}, not of {}",
                minutes.mechanisms.join(" and "),
                shown(&content.mechanism)
            )));
        }
        return Ok(SourceProof::Minutes {
            entry: pin,
            minutes,
        });
    }
    Err(unproven(format!(
        "the source {}:{} is neither issued minutes of {} nor an entry of case {:?}",
        source.channel,
        source.seq,
        shown(&content.mechanism),
        shown(&content.case_id)
    )))
}

/// The rule of 联合通报 and 上报: a notice goes out only when every named
/// co-issuer signed, in its own entry, the digest of the same content the
/// drafter drafted. `releaser` is the unit that signed the release entry.
pub fn verify_joint_release(
    releaser: &str,
    release: &pb::JointRelease,
    keys: &dyn SigningKeys,
) -> Result<ReleasedNotice, WorkflowError> {
    let (draft, d): (_, pb::JointDraft) =
        own_embedded_step(release.draft.as_ref(), releaser, &release.notice_id, keys)?;
    let content = d
        .content
        .clone()
        .ok_or_else(|| unproven("the embedded draft has no content"))?;
    let digest = content_digest(&content);
    let draft_pin = draft.pin();
    let mut signed = std::collections::BTreeMap::new();
    for e in &release.co_signatures {
        let c = check_embedded("co-signature", e, keys)?;
        let Step::CoSignature(s) = &c.step else {
            return Err(unproven("an embedded co-signature is not a co-signature"));
        };
        let unit = c.message.sender.as_str();
        if !content.co_issuers.iter().any(|u| u == unit) {
            return Err(unproven(format!(
                "{unit} co-signed but is not a named co-issuer"
            )));
        }
        if s.notice_id != release.notice_id
            || s.draft.as_ref() != Some(&draft_pin)
            || s.content_digest.as_slice() != digest
        {
            return Err(unproven(format!(
                "the co-signature of {unit} is over other content than the draft released"
            )));
        }
        if signed.insert(unit.to_string(), c.pin()).is_some() {
            return Err(unproven(format!("{unit} co-signed twice")));
        }
    }
    let missing: Vec<&str> = content
        .co_issuers
        .iter()
        .filter(|u| !signed.contains_key(*u))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(unproven(format!(
            "a joint notice goes out only once every named co-issuer signed; missing {}",
            missing.join(", ")
        )));
    }
    let co_signatures = content
        .co_issuers
        .iter()
        .filter_map(|u| signed.get(u).cloned())
        .collect();
    let source = match (&content.source_entry, &release.source) {
        (None, None) => None,
        (Some(_), Some(s)) => Some(verify_source(&content, s, keys)?),
        (Some(r), None) => {
            return Err(unproven(format!(
                "the release does not embed its source entry {}:{}",
                r.channel, r.seq
            )));
        }
        (None, Some(_)) => {
            return Err(unproven(
                "the release embeds a source entry its content does not name",
            ));
        }
    };
    Ok(ReleasedNotice {
        notice_id: release.notice_id.clone(),
        drafter: releaser.to_string(),
        content,
        content_digest: digest,
        draft: draft_pin,
        co_signatures,
        source,
    })
}

/// The rule of 上报 as a recipient checks it: a released notice of kind
/// escalation whose source (issued minutes or an entry of its case) is
/// embedded and proven.
pub fn verify_escalation(
    releaser: &str,
    release: &pb::JointRelease,
    keys: &dyn SigningKeys,
) -> Result<ReleasedNotice, WorkflowError> {
    let notice = verify_joint_release(releaser, release, keys)?;
    if notice.source.is_none() {
        return Err(unproven(
            "an escalation names the minutes or the case entry it comes from; this one names none",
        ));
    }
    Ok(notice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use std::collections::HashMap;

    struct Party {
        key: SigningKey,
        seq: u64,
        /// End of the key's validity (0 = current).
        until: i64,
    }

    struct World {
        parties: HashMap<String, Party>,
    }

    impl World {
        fn new(units: &[&str]) -> Result<Self, crate::keys::KeyError> {
            let mut parties = HashMap::new();
            for u in units {
                parties.insert(
                    u.to_string(),
                    Party {
                        key: SigningKey::generate()?,
                        seq: 0,
                        until: 0,
                    },
                );
            }
            Ok(Self { parties })
        }

        fn entry(&mut self, unit: &str, kind: Kind, step: Step) -> Option<Entry> {
            let p = self.parties.get_mut(unit)?;
            let signed = p.key.sign_message(Message {
                message_id: format!("{unit}-{}", p.seq),
                sender: unit.into(),
                kind: kind as i32,
                subject: "s".into(),
                body: encode_step(step).into(),
                content_type: CONTENT_TYPE.into(),
                created_micros: 1,
                ..Default::default()
            });
            let e = Entry {
                channel: unit.into(),
                seq: p.seq,
                hub_micros: 1,
                previous_leaf_hash: vec![0; 32],
                message: Some(signed),
                ..Default::default()
            };
            p.seq += 1;
            Some(e)
        }

        fn keys(&self) -> impl Fn(&str, &str) -> Option<RegisteredKey> + '_ {
            |unit, key_id| {
                self.parties
                    .get(unit)
                    .filter(|p| p.key.key_id() == key_id)
                    .map(|p| RegisteredKey {
                        unit: unit.into(),
                        algorithm: crate::keys::ED25519_ALGORITHM.into(),
                        key_id: key_id.into(),
                        public_key: p.key.public_key().to_vec(),
                        valid_from_micros: 0,
                        valid_until_micros: p.until,
                    })
            }
        }
    }

    fn pin(e: &Entry) -> pb::EntryPin {
        pb::EntryPin {
            channel: e.channel.clone(),
            seq: e.seq,
            leaf_hash: crate::canonical::leaf_hash(e).to_vec(),
        }
    }

    type R = Result<(), Box<dyn std::error::Error>>;

    fn minutes(w: &mut World, consenters: &[&str]) -> Option<pb::MinutesIssue> {
        let proposal = w.entry(
            "civil-affairs",
            Kind::MeetingProposal,
            Step::MeetingProposal(pb::MeetingProposal {
                meeting_id: "m1".into(),
                attending_units: vec!["tax".into(), "finance".into()],
                ..Default::default()
            }),
        )?;
        let draft = w.entry(
            "civil-affairs",
            Kind::Minutes,
            Step::MinutesDraft(pb::MinutesDraft {
                meeting_id: "m1".into(),
                revision: 1,
                text: "agreed".into(),
                supersedes: None,
            }),
        )?;
        let draft_pin = pin(&draft);
        let mut consents = Vec::new();
        for u in consenters {
            consents.push(w.entry(
                u,
                Kind::MinutesConsent,
                Step::MinutesAnswer(pb::MinutesAnswer {
                    meeting_id: "m1".into(),
                    draft: Some(draft_pin.clone()),
                    consent: true,
                    comments: String::new(),
                }),
            )?);
        }
        Some(pb::MinutesIssue {
            meeting_id: "m1".into(),
            proposal: Some(proposal),
            draft: Some(draft),
            consents,
        })
    }

    #[test]
    fn minutes_are_issued_only_with_every_consent() -> R {
        let mut w = World::new(&["civil-affairs", "tax", "finance"])?;
        let full = minutes(&mut w, &["tax", "finance"]).ok_or("setup")?;
        let issued = verify_minutes_issue("civil-affairs", &full, &w.keys())?;
        assert_eq!(issued.consents.len(), 2);
        let partial = minutes(&mut w, &["tax"]).ok_or("setup")?;
        let err = verify_minutes_issue("civil-affairs", &partial, &w.keys());
        assert!(matches!(err, Err(WorkflowError::Unproven(m)) if m.contains("finance")));
        // Issued by someone else than the proposer.
        assert!(verify_minutes_issue("tax", &full, &w.keys()).is_err());
        // A tampered consent no longer verifies.
        let mut bad = full.clone();
        if let Some(m) = bad.consents[0]
            .message
            .as_mut()
            .and_then(|s| s.message.as_mut())
        {
            m.subject = "changed".into();
        }
        assert!(verify_minutes_issue("civil-affairs", &bad, &w.keys()).is_err());
        Ok(())
    }

    #[test]
    fn an_own_embedded_step_is_there_signed_of_its_kind_id_and_releaser() -> R {
        let mut w = World::new(&["finance", "tax"])?;
        let draft = |id: &str| {
            Step::JointDraft(pb::JointDraft {
                notice_id: id.into(),
                ..Default::default()
            })
        };
        let entry = w
            .entry("finance", Kind::JointNotice, draft("n1"))
            .ok_or("setup")?;
        // Another step kind is not the one the release rests on.
        let other = w
            .entry(
                "finance",
                Kind::Minutes,
                Step::MinutesDraft(pb::MinutesDraft {
                    meeting_id: "n1".into(),
                    ..Default::default()
                }),
            )
            .ok_or("setup")?;
        let keys = w.keys();
        let own = |e: Option<&Entry>, releaser: &str, id: &str| {
            own_embedded_step::<pb::JointDraft>(e, releaser, id, &keys).map(|(c, d)| (c.pin(), d))
        };
        let (pinned, d) = own(Some(&entry), "finance", "n1")?;
        assert_eq!((pinned, d.notice_id.as_str()), (pin(&entry), "n1"));
        let refused = |r: Result<_, WorkflowError>, says: &str| match r {
            Err(WorkflowError::Unproven(m)) => assert!(m.contains(says), "{m}"),
            other => panic!("expected a refusal saying {says:?}, got {other:?}"),
        };
        refused(own(None, "finance", "n1"), "the release carries no draft");
        refused(
            own(Some(&entry), "finance", "n2"),
            "not of notice \"n2\" by finance",
        );
        refused(
            own(Some(&entry), "tax", "n1"),
            "not of notice \"n1\" by tax",
        );
        // A tampered step no longer verifies.
        let mut tampered = entry.clone();
        if let Some(m) = tampered.message.as_mut().and_then(|s| s.message.as_mut()) {
            m.body = encode_step(draft("n2")).into();
        }
        assert!(own(Some(&tampered), "finance", "n2").is_err());
        refused(
            own(Some(&other), "finance", "n1"),
            "the embedded draft is a step of kind minutes draft, not joint draft",
        );
        Ok(())
    }

    #[test]
    fn joint_release_needs_every_named_co_issuer_over_the_same_content() -> R {
        let mut w = World::new(&["finance", "tax", "pbc-taiyuan", "health"])?;
        let content = JointContent {
            title: "abnormal fund movement".into(),
            text: "org X".into(),
            mechanism: "fund-supervision".into(),
            co_issuers: vec!["tax".into(), "pbc-taiyuan".into()],
            ..Default::default()
        };
        let draft = w
            .entry(
                "finance",
                Kind::JointNotice,
                Step::JointDraft(pb::JointDraft {
                    notice_id: "n1".into(),
                    content: Some(content.clone()),
                }),
            )
            .ok_or("setup")?;
        let cosign = |w: &mut World, unit: &str, digest: Hash| {
            w.entry(
                unit,
                Kind::CoSignature,
                Step::CoSignature(pb::CoSignature {
                    notice_id: "n1".into(),
                    draft: Some(pin(&draft)),
                    content_digest: digest.to_vec(),
                }),
            )
        };
        let digest = content_digest(&content);
        let tax = cosign(&mut w, "tax", digest).ok_or("setup")?;
        let pbc = cosign(&mut w, "pbc-taiyuan", digest).ok_or("setup")?;
        let ok = pb::JointRelease {
            notice_id: "n1".into(),
            draft: Some(draft.clone()),
            co_signatures: vec![tax.clone(), pbc.clone()],
            source: None,
        };
        assert_eq!(
            verify_joint_release("finance", &ok, &w.keys())?
                .co_signatures
                .len(),
            2
        );
        let missing = pb::JointRelease {
            co_signatures: vec![tax.clone()],
            ..ok.clone()
        };
        assert!(verify_joint_release("finance", &missing, &w.keys()).is_err());
        let stranger = cosign(&mut w, "health", digest).ok_or("setup")?;
        let extra = pb::JointRelease {
            co_signatures: vec![tax.clone(), pbc, stranger],
            ..ok.clone()
        };
        assert!(verify_joint_release("finance", &extra, &w.keys()).is_err());
        let other = cosign(&mut w, "pbc-taiyuan", [7; 32]).ok_or("setup")?;
        let wrong = pb::JointRelease {
            co_signatures: vec![tax, other],
            ..ok
        };
        assert!(verify_joint_release("finance", &wrong, &w.keys()).is_err());
        Ok(())
    }

    #[test]
    fn a_signature_made_after_the_key_was_retired_proves_nothing() -> R {
        let mut w = World::new(&["civil-affairs", "tax", "finance"])?;
        let full = minutes(&mut w, &["tax", "finance"]).ok_or("setup")?;
        // Entries of the test world have hub time 1.
        if let Some(p) = w.parties.get_mut("tax") {
            p.until = 2;
        }
        verify_minutes_issue("civil-affairs", &full, &w.keys())?;
        if let Some(p) = w.parties.get_mut("tax") {
            p.until = 1;
        }
        let err = verify_minutes_issue("civil-affairs", &full, &w.keys());
        assert!(
            matches!(err, Err(WorkflowError::Unproven(m)) if m.contains("valid only from 0 until 1"))
        );
        Ok(())
    }

    #[test]
    fn a_source_is_issued_minutes_of_the_mechanism_or_an_entry_of_the_case() -> R {
        let mut w = World::new(&["civil-affairs", "tax", "finance", "public-security"])?;
        let mut issue = minutes(&mut w, &["tax", "finance"]).ok_or("setup")?;
        if let Some(p) = issue.proposal.as_mut() {
            let signed = p.message.as_mut().ok_or("setup")?;
            let mut m = signed.message.clone().ok_or("setup")?;
            m.body = encode_step(Step::MeetingProposal(pb::MeetingProposal {
                meeting_id: "m1".into(),
                mechanisms: vec!["fund-supervision".into()],
                attending_units: vec!["tax".into(), "finance".into()],
                ..Default::default()
            }))
            .into();
            let key = &w.parties.get("civil-affairs").ok_or("setup")?.key;
            *signed = key.sign_message(m);
        }
        let issued = w
            .entry("civil-affairs", Kind::Minutes, Step::MinutesIssue(issue))
            .ok_or("setup")?;
        let content = |mechanism: &str, e: &Entry, case: &str| JointContent {
            mechanism: mechanism.into(),
            source_entry: Some(pb::EntryRef {
                channel: e.channel.clone(),
                seq: e.seq,
            }),
            case_id: case.into(),
            ..Default::default()
        };
        assert!(matches!(
            verify_source(
                &content("fund-supervision", &issued, ""),
                &issued,
                &w.keys()
            )?,
            SourceProof::Minutes { .. }
        ));
        let other = verify_source(
            &content("joint-enforcement", &issued, ""),
            &issued,
            &w.keys(),
        );
        assert!(
            matches!(other, Err(WorkflowError::Unproven(m)) if m.contains("not of joint-enforcement"))
        );
        // A case entry: an ordinary message naming the case.
        let ps = &w.parties.get("public-security").ok_or("setup")?.key;
        let case_entry = Entry {
            channel: "public-security".into(),
            seq: 0,
            hub_micros: 1,
            message: Some(ps.sign_message(Message {
                message_id: "c1".into(),
                sender: "public-security".into(),
                kind: Kind::CaseUpdate as i32,
                references: Some(pb::References {
                    case_id: "C-9".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let c = content("joint-enforcement", &case_entry, "C-9");
        assert!(matches!(
            verify_source(&c, &case_entry, &w.keys())?,
            SourceProof::CaseEntry { .. }
        ));
        let wrong_case = content("joint-enforcement", &case_entry, "C-10");
        assert!(verify_source(&wrong_case, &case_entry, &w.keys()).is_err());
        // The embedded entry must be the one named.
        let elsewhere = content("fund-supervision", &case_entry, "C-9");
        assert!(verify_source(&elsewhere, &issued, &w.keys()).is_err());
        Ok(())
    }

    #[test]
    fn content_digest_covers_every_field() {
        let base = JointContent {
            title: "t".into(),
            co_issuers: vec!["tax".into()],
            ..Default::default()
        };
        let mut variants = vec![];
        let mut c = base.clone();
        c.text = "x".into();
        variants.push(c);
        let mut c = base.clone();
        c.co_issuers.push("finance".into());
        variants.push(c);
        let mut c = base.clone();
        c.audience = Some(pb::Audience {
            leading_group: true,
            ..Default::default()
        });
        variants.push(c);
        let mut c = base.clone();
        c.case_id = "c".into();
        variants.push(c);
        for v in variants {
            assert_ne!(content_digest(&v), content_digest(&base));
        }
    }
}

/// Decoding steps and entries from arbitrary or damaged bytes never
/// panics, and what decodes is what encodes.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::canonical::proptests::{damaged, entry};
    use proptest::prelude::*;

    /// A step of each variant, with empty content.
    fn steps() -> Vec<Step> {
        vec![
            Step::MeetingProposal(Default::default()),
            Step::AgendaItem(Default::default()),
            Step::AgendaSettlement(Default::default()),
            Step::MinutesDraft(Default::default()),
            Step::MinutesIssue(Default::default()),
            Step::MinutesAnswer(Default::default()),
            Step::JointDraft(Default::default()),
            Step::JointRelease(Default::default()),
            Step::CoSignature(Default::default()),
            Step::LiaisonChange(Default::default()),
            Step::Statistics(Default::default()),
            Step::TaskAssignment(Default::default()),
            Step::TaskReport(Default::default()),
            Step::TaskReminder(Default::default()),
            Step::TaskAcceptance(Default::default()),
            Step::TaskReturn(Default::default()),
            Step::ActionProposal(Default::default()),
            Step::ActionAnswer(Default::default()),
            Step::ActionResult(Default::default()),
            Step::ActionSummary(Default::default()),
        ]
    }

    /// Encoded steps, and encoded entries (nested messages in fields the
    /// step decoder reads as other types).
    fn step_body() -> impl Strategy<Value = Vec<u8>> {
        damaged(prop_oneof![
            prop::sample::select(steps()).prop_map(encode_step),
            entry().prop_map(|e| e.encode_to_vec()),
        ])
    }

    proptest! {
        #[test]
        fn step_bodies_decode_without_panic(
            body in step_body(),
            kind in 0..24i32,
            workflow_type in any::<bool>(),
        ) {
            let m = Message {
                kind,
                content_type: if workflow_type { CONTENT_TYPE.into() } else { "text/plain".into() },
                body: body.into(),
                ..Default::default()
            };
            if let Ok(step) = decode_step(&m) {
                prop_assert!(workflow_type);
                prop_assert!(kinds_of(&step).iter().any(|k| *k as i32 == kind));
                let again = Message { body: encode_step(step.clone()).into(), ..m };
                prop_assert_eq!(decode_step(&again), Ok(step));
            }
        }

        #[test]
        fn entries_decode_without_panic(bytes in damaged(entry().prop_map(|e| e.encode_to_vec()))) {
            if let Ok(e) = Entry::decode(&bytes[..]) {
                prop_assert_eq!(Entry::decode(&e.encode_to_vec()[..]), Ok(e));
            }
            let mut delivery = pb::Delivery {
                encoded_entry: bytes.into(),
                ..Default::default()
            };
            let _ = delivery.take_entry();
        }

        #[test]
        fn entries_round_trip(e in entry()) {
            prop_assert_eq!(Entry::decode(&e.encode_to_vec()[..]), Ok(e));
        }
    }
}
