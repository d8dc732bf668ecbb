//! The state of a joint warning (联合预警) as the hub keeps it: built from
//! the warning entry, then changed by each answer and the lift. Pure
//! functions of the entries, so a rebuild from the channels gives the same
//! state.

use tongbao_proto::identity::{LEADING_GROUP_INBOX, OFFICE_INBOX_PREFIX};
use tongbao_proto::pb;

/// The state a warning entry starts: every unit it was delivered to (the
/// mechanism's members at append time, the issuer aside) owes an answer.
pub(super) fn issued(
    entry: &pb::Entry,
    message: &pb::Message,
    w: pb::JointWarning,
    here: pb::EntryPin,
) -> pb::WarningState {
    let organization = message
        .references
        .as_ref()
        .and_then(|r| r.organizations.first())
        .cloned();
    let expected: Vec<String> = entry
        .recipients
        .iter()
        .filter(|r| !r.starts_with(OFFICE_INBOX_PREFIX) && r.as_str() != LEADING_GROUP_INBOX)
        .cloned()
        .collect();
    pb::WarningState {
        warning_id: w.warning_id,
        issuer: message.sender.clone(),
        mechanism: w.mechanism,
        organization,
        level: w.level,
        grounds: w.grounds,
        warning: Some(here),
        hub_micros: entry.hub_micros,
        answers: expected
            .iter()
            .map(|u| pb::WarningAnswer {
                unit: u.clone(),
                ..Default::default()
            })
            .collect(),
        not_answered: expected,
        lift: None,
        lift_reason: String::new(),
        evidence: w.evidence,
    }
}

/// Records a unit's answer; a later one replaces its earlier one.
pub(super) fn answered(
    w: &mut pb::WarningState,
    unit: &str,
    a: &pb::WarningMeasures,
    here: pb::EntryPin,
) {
    if let Some(slot) = w.answers.iter_mut().find(|x| x.unit == unit) {
        slot.answered = true;
        slot.answer = Some(here);
        slot.measures = a.measures.clone();
        slot.reason = a.reason.clone();
    }
    w.not_answered.retain(|u| u != unit);
}
