//! The rules of joint warnings and sanctions (联合预警和惩戒) that every
//! party checks the same way: what a warning, an answer with measures and
//! a lift must hold, which organization they are about, and how an answer
//! or a lift is tied to the warning it names.
//!
//! A warning is about exactly one organization: the one its message names
//! in `references.organizations`. Its answers and its lift name the same
//! organization, so the organization index (and `org show`) finds the
//! whole thread from the messages alone. The hub applies these rules
//! before appending; a recipient or an offline verifier applies
//! [`verify_answer`] to an answer and the warning entry it pins.

use crate::credit_code;
use crate::echo::shown;
use crate::pb::{self, Entry, Message, Organization, WarningLevel, workflow_step::Step};
use crate::workflow::{SigningKeys, WorkflowError, check_embedded, check_workflow_id};

/// Evidence entries one warning may cite, at most.
pub const MAX_EVIDENCE: usize = 32;

/// Measures one answer may list, at most.
pub const MAX_MEASURES: usize = 32;

fn malformed(s: impl Into<String>) -> WorkflowError {
    WorkflowError::Malformed(s.into())
}

fn unproven(s: impl Into<String>) -> WorkflowError {
    WorkflowError::Unproven(s.into())
}

/// The one organization a warning step's message is about.
pub fn organization_of(m: &Message) -> Result<&Organization, WorkflowError> {
    let orgs = m
        .references
        .as_ref()
        .map(|r| r.organizations.as_slice())
        .unwrap_or_default();
    let [org] = orgs else {
        return Err(malformed(format!(
            "a joint warning, its answers and its lift name exactly one organization (by credit code) in the message's references; this one names {}",
            orgs.len()
        )));
    };
    credit_code::check(&org.credit_code).map_err(|e| malformed(e.to_string()))?;
    Ok(org)
}

fn check_pin<'a>(
    what: &str,
    pin: Option<&'a pb::EntryPin>,
) -> Result<&'a pb::EntryPin, WorkflowError> {
    let pin =
        pin.ok_or_else(|| malformed(format!("name the {what} entry (channel, seq, leaf hash)")))?;
    if pin.channel.is_empty() || pin.leaf_hash.len() != crate::HASH_LEN {
        return Err(malformed(format!(
            "the {what} entry is named by its channel, seq and 32-byte leaf hash"
        )));
    }
    Ok(pin)
}

/// The shape of a warning: id, mechanism, level, grounds, and 1 to
/// [`MAX_EVIDENCE`] distinct evidence entries.
pub fn check_warning(m: &Message, w: &pb::JointWarning) -> Result<(), WorkflowError> {
    check_workflow_id("warning id", &w.warning_id)?;
    organization_of(m)?;
    if w.mechanism.is_empty() {
        return Err(malformed("a joint warning names the mechanism it warns"));
    }
    if WarningLevel::try_from(w.level).unwrap_or(WarningLevel::Unspecified)
        == WarningLevel::Unspecified
    {
        return Err(malformed(
            "a joint warning needs a level: notice, caution or severe",
        ));
    }
    if w.grounds.trim().is_empty() {
        return Err(malformed("a joint warning states its grounds"));
    }
    if w.evidence.is_empty() || w.evidence.len() > MAX_EVIDENCE {
        return Err(malformed(format!(
            "a joint warning cites 1 to {MAX_EVIDENCE} evidence entries, not {}",
            w.evidence.len()
        )));
    }
    for (i, p) in w.evidence.iter().enumerate() {
        check_pin("evidence", Some(p))?;
        if w.evidence[..i]
            .iter()
            .any(|q| q.channel == p.channel && q.seq == p.seq)
        {
            return Err(malformed(format!(
                "evidence {}:{} is cited twice",
                shown(&p.channel),
                p.seq
            )));
        }
    }
    Ok(())
}

/// The shape of an answer: the warning it answers, and measures (each
/// non-empty, at most [`MAX_MEASURES`]) or, for none, a reason.
pub fn check_measures(m: &Message, a: &pb::WarningMeasures) -> Result<(), WorkflowError> {
    check_workflow_id("warning id", &a.warning_id)?;
    organization_of(m)?;
    check_pin("warning", a.warning.as_ref())?;
    if a.measures.len() > MAX_MEASURES {
        return Err(malformed(format!(
            "an answer lists at most {MAX_MEASURES} measures, not {}",
            a.measures.len()
        )));
    }
    if a.measures.iter().any(|x| x.trim().is_empty()) {
        return Err(malformed(
            "a measure is empty; describe each measure applied",
        ));
    }
    if a.measures.is_empty() && a.reason.trim().is_empty() {
        return Err(malformed(
            "an answer without measures (none applied) states the reason",
        ));
    }
    Ok(())
}

/// The shape of a lift: the warning it lifts and a reason.
pub fn check_lift(m: &Message, l: &pb::WarningLift) -> Result<(), WorkflowError> {
    check_workflow_id("warning id", &l.warning_id)?;
    organization_of(m)?;
    check_pin("warning", l.warning.as_ref())?;
    if l.reason.trim().is_empty() {
        return Err(malformed("a lift states why the warning is lifted"));
    }
    Ok(())
}

/// What a verified answer or lift proves about its warning.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedAnswer {
    pub warning_id: String,
    pub issuer: String,
    pub organization: Organization,
    /// The unit that answered or lifted.
    pub unit: String,
    /// The answer or the lift.
    pub step: Step,
}

/// The rule tying an answer (measures) or a lift to its warning, as any
/// party checks it from the two signed entries: both verify under keys
/// valid at their hub times, the answer pins exactly this warning entry
/// (leaf hash included) and id, both name the same organization, and a
/// lift comes from the warning's issuer.
pub fn verify_answer(
    warning: &Entry,
    answer: &Entry,
    keys: &dyn SigningKeys,
) -> Result<VerifiedAnswer, WorkflowError> {
    let w = check_embedded("joint warning", warning, keys)?;
    let Step::JointWarning(jw) = &w.step else {
        return Err(unproven("the pinned entry is not a joint warning"));
    };
    check_warning(w.message, jw).map_err(|e| unproven(format!("the warning: {e}")))?;
    let a = check_embedded("answer", answer, keys)?;
    let (id, pin) = match &a.step {
        Step::WarningMeasures(x) => {
            check_measures(a.message, x).map_err(|e| unproven(e.to_string()))?;
            (&x.warning_id, x.warning.as_ref())
        }
        Step::WarningLift(x) => {
            check_lift(a.message, x).map_err(|e| unproven(e.to_string()))?;
            if a.message.sender != w.message.sender {
                return Err(unproven(format!(
                    "warning {:?} can be lifted only by its issuer {}, not {}",
                    shown(&jw.warning_id),
                    w.message.sender,
                    a.message.sender
                )));
            }
            (&x.warning_id, x.warning.as_ref())
        }
        _ => {
            return Err(unproven(
                "the entry is neither measures answering a warning nor a lift",
            ));
        }
    };
    if *id != jw.warning_id || pin != Some(&w.pin()) {
        return Err(unproven(format!(
            "the answer names warning {:?} at another entry than {}:{}",
            shown(id),
            warning.channel,
            warning.seq
        )));
    }
    let org = organization_of(w.message).map_err(|e| unproven(e.to_string()))?;
    let answered_org = organization_of(a.message).map_err(|e| unproven(e.to_string()))?;
    if answered_org.credit_code != org.credit_code {
        return Err(unproven(format!(
            "the answer is about organization {}, the warning about {}",
            answered_org.credit_code, org.credit_code
        )));
    }
    Ok(VerifiedAnswer {
        warning_id: jw.warning_id.clone(),
        issuer: w.message.sender.clone(),
        organization: org.clone(),
        unit: a.message.sender.clone(),
        step: a.step.clone(),
    })
}

#[cfg(test)]
mod tests;
