//! Stable names of message kinds, as the CLI, JSON output and hub config
//! spell them.

use crate::pb::Kind;

const NAMES: &[(Kind, &str)] = &[
    (Kind::Notification, "notification"),
    (Kind::EarlyWarning, "early-warning"),
    (Kind::Lead, "lead"),
    (Kind::CaseUpdate, "case-update"),
    (Kind::Statistics, "statistics"),
    (Kind::MeetingAgenda, "meeting-agenda"),
    (Kind::Minutes, "minutes"),
    (Kind::MinutesConsent, "minutes-consent"),
    (Kind::Escalation, "escalation"),
    (Kind::LiaisonChange, "liaison-change"),
    (Kind::ExceptionFeedback, "exception-feedback"),
    (Kind::Receipt, "receipt"),
    (Kind::KeyRotation, "key-rotation"),
    (Kind::MeetingProposal, "meeting-proposal"),
    (Kind::JointNotice, "joint-notice"),
    (Kind::CoSignature, "co-signature"),
    (Kind::JointWarning, "joint-warning"),
    (Kind::WarningMeasures, "warning-measures"),
    (Kind::WarningLift, "warning-lift"),
    (Kind::Task, "task"),
    (Kind::TaskReport, "task-report"),
    (Kind::JointAction, "joint-action"),
    (Kind::ActionReport, "action-report"),
];

/// Kinds whose entries are workflow steps: the hub checks them against the
/// workflow's state, so they go through `Workflow.Submit`, never `Push`.
pub fn is_workflow(kind: i32) -> bool {
    Kind::try_from(kind).is_ok_and(|k| {
        matches!(
            k,
            Kind::MeetingProposal
                | Kind::MeetingAgenda
                | Kind::Minutes
                | Kind::MinutesConsent
                | Kind::JointNotice
                | Kind::CoSignature
                | Kind::Escalation
                | Kind::LiaisonChange
                | Kind::Statistics
                | Kind::JointWarning
                | Kind::WarningMeasures
                | Kind::WarningLift
                | Kind::Task
                | Kind::TaskReport
                | Kind::JointAction
                | Kind::ActionReport
        )
    })
}

/// The name of a kind ("unspecified" for values this version does not know).
pub fn name(kind: i32) -> &'static str {
    NAMES
        .iter()
        .find(|(k, _)| *k as i32 == kind)
        .map(|(_, n)| *n)
        .unwrap_or("unspecified")
}

/// Parses a kind name.
pub fn parse(name: &str) -> Option<Kind> {
    NAMES.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
}

/// Kinds a unit may push directly (receipts, key rotations and workflow
/// steps are written by their own calls).
pub fn pushable() -> impl Iterator<Item = &'static str> {
    NAMES
        .iter()
        .filter(|(k, _)| is_pushable(*k as i32))
        .map(|(_, n)| *n)
}

/// True when a unit may push this kind through `Push`.
pub fn is_pushable(kind: i32) -> bool {
    NAMES.iter().any(|(k, _)| {
        *k as i32 == kind && !matches!(k, Kind::Receipt | Kind::KeyRotation) && !is_workflow(kind)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (k, n) in NAMES {
            assert_eq!(parse(n), Some(*k));
            assert_eq!(name(*k as i32), *n);
        }
        assert_eq!(name(999), "unspecified");
        assert!(!is_pushable(Kind::Receipt as i32));
        assert!(!is_pushable(0));
        assert!(is_pushable(Kind::Lead as i32));
        assert!(is_pushable(Kind::CaseUpdate as i32));
        assert!(!is_pushable(Kind::Minutes as i32));
        assert!(is_workflow(Kind::CoSignature as i32));
        assert!(is_workflow(Kind::WarningLift as i32));
        assert!(!is_pushable(Kind::JointWarning as i32));
    }
}
