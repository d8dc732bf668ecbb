//! The rules of the mechanisms' workflows that every party checks the same
//! way: how a step is carried in a message, what co-issuers sign, and when
//! minutes count as issued or a joint notice as properly co-signed.
//!
//! The hub applies these rules before appending, the client library after
//! receiving, and an offline verifier with nothing but the registry's keys.

use crate::canonical::leaf_hash_with_digest;
use crate::keys::verify_signed_message;
use crate::pb::{self, Entry, JointContent, Kind, Message, WorkflowStep, workflow_step::Step};
use crate::{HASH_LEN, Hash};
use prost::Message as _;
use ring::digest::{Context, SHA256};
use std::collections::BTreeSet;

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

/// The public signing keys a verifier knows, by unit and key id.
pub trait SigningKeys {
    fn public_key(&self, unit: &str, key_id: &str) -> Option<Vec<u8>>;
}

impl<F: Fn(&str, &str) -> Option<Vec<u8>>> SigningKeys for F {
    fn public_key(&self, unit: &str, key_id: &str) -> Option<Vec<u8>> {
        self(unit, key_id)
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
            m.content_type
        )));
    }
    let step = WorkflowStep::decode(m.body.as_slice())
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
            "{what} {id:?} is not valid: use 1 to 64 characters A-Z, a-z, 0-9, '-', '_', '.'"
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
/// signed by a registered key of that sender, and carries a workflow step.
pub fn check_embedded<'a>(
    what: &str,
    entry: &'a Entry,
    keys: &dyn SigningKeys,
) -> Result<CheckedEntry<'a>, WorkflowError> {
    let signed = entry
        .message
        .as_ref()
        .ok_or_else(|| unproven(format!("the embedded {what} carries no message")))?;
    let message = signed
        .message
        .as_ref()
        .ok_or_else(|| unproven(format!("the embedded {what} carries no message")))?;
    if message.sender != entry.channel {
        return Err(unproven(format!(
            "the embedded {what} names sender {} but sits in channel {}",
            message.sender, entry.channel
        )));
    }
    let key_id = signed
        .signature
        .as_ref()
        .map(|s| s.key_id.as_str())
        .unwrap_or_default();
    let key = keys.public_key(&message.sender, key_id).ok_or_else(|| {
        unproven(format!(
            "the embedded {what} is signed with key {key_id:?}, not a registered key of unit {}",
            message.sender
        ))
    })?;
    let digest = verify_signed_message(signed, &key).map_err(|e| {
        unproven(format!(
            "the embedded {what} ({}:{}) does not verify: {e}",
            entry.channel, entry.seq
        ))
    })?;
    let step = decode_step(message).map_err(|e| unproven(format!("embedded {what}: {e}")))?;
    Ok(CheckedEntry {
        entry,
        message,
        leaf_hash: leaf_hash_with_digest(entry, &digest),
        step,
    })
}

/// What a verified minutes issue proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedMinutes {
    pub meeting_id: String,
    pub proposer: String,
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
            p.meeting_id, issue.meeting_id
        )));
    }
    if proposal.message.sender != issuer {
        return Err(unproven(format!(
            "minutes of meeting {:?} are issued by its proposer {}, not {issuer}",
            p.meeting_id, proposal.message.sender
        )));
    }
    let draft_entry = issue
        .draft
        .as_ref()
        .ok_or_else(|| unproven("the minutes issue carries no draft"))?;
    let draft = check_embedded("minutes draft", draft_entry, keys)?;
    let Step::MinutesDraft(d) = &draft.step else {
        return Err(unproven("the embedded draft is not a minutes draft"));
    };
    if d.meeting_id != issue.meeting_id || draft.message.sender != issuer {
        return Err(unproven(
            "the embedded draft is not a draft of this meeting by its proposer",
        ));
    }
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
}

/// The rule of 联合通报 and 上报: a notice goes out only when every named
/// co-issuer signed, in its own entry, the digest of the same content the
/// drafter drafted. `releaser` is the unit that signed the release entry.
pub fn verify_joint_release(
    releaser: &str,
    release: &pb::JointRelease,
    keys: &dyn SigningKeys,
) -> Result<ReleasedNotice, WorkflowError> {
    let draft_entry = release
        .draft
        .as_ref()
        .ok_or_else(|| unproven("the release carries no draft"))?;
    let draft = check_embedded("joint draft", draft_entry, keys)?;
    let Step::JointDraft(d) = &draft.step else {
        return Err(unproven("the embedded draft is not a joint draft"));
    };
    if d.notice_id != release.notice_id || draft.message.sender != releaser {
        return Err(unproven(format!(
            "the embedded draft is not notice {:?} drafted by {releaser}",
            release.notice_id
        )));
    }
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
    Ok(ReleasedNotice {
        notice_id: release.notice_id.clone(),
        drafter: releaser.to_string(),
        content,
        content_digest: digest,
        draft: draft_pin,
        co_signatures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use std::collections::HashMap;

    struct Party {
        key: SigningKey,
        seq: u64,
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
                body: encode_step(step),
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

        fn keys(&self) -> impl Fn(&str, &str) -> Option<Vec<u8>> + '_ {
            |unit, key_id| {
                self.parties
                    .get(unit)
                    .filter(|p| p.key.key_id() == key_id)
                    .map(|p| p.key.public_key().to_vec())
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
