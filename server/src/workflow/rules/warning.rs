//! The rules of joint warnings and sanctions (联合预警和惩戒) on the hub:
//! a member warns its mechanism about one organization citing entries it
//! saw; each member answers with its measures; only the issuer lifts.
//! Shapes are checked with `tongbao_proto::warning`, the rules every party
//! applies; what needs the hub's records (membership at append time,
//! evidence the sender saw, the warning's state) is checked here.

use super::*;
use tongbao_proto::warning::{check_lift, check_measures, check_warning, organization_of};

fn malformed(e: tongbao_proto::workflow::WorkflowError) -> WorkflowRefusal {
    Malformed(e.to_string())
}

pub(super) fn check_joint_warning(
    cx: &StepContext<'_>,
    w: &pb::JointWarning,
) -> Result<(), WorkflowRefusal> {
    check_warning(cx.message, w).map_err(malformed)?;
    require_member(
        cx,
        &w.mechanism,
        cx.sender,
        NotAllowed,
        "only its members warn a mechanism",
    )?;
    if cx.workflows.warning(&w.warning_id)?.is_some() {
        return Err(Exists(format!(
            "warning {:?} was already issued; choose a new warning id",
            shown(&w.warning_id)
        )));
    }
    for pin in &w.evidence {
        check_evidence(cx, pin)?;
    }
    let expected = pb::Audience {
        mechanisms: vec![w.mechanism.clone()],
        offices: vec![w.mechanism.clone()],
        ..Default::default()
    };
    if cx.message.audience.as_ref() != Some(&expected) {
        return Err(Malformed(format!(
            "a joint warning goes to the mechanism {m} and its office, and to no one else: set the audience to mechanisms [{m}] and offices [{m}] only",
            m = w.mechanism
        )));
    }
    Ok(())
}

/// Evidence must be an entry the sender sent or received, as pinned.
fn check_evidence(cx: &StepContext<'_>, pin: &pb::EntryPin) -> Result<(), WorkflowRefusal> {
    let at = format!("{}:{}", shown(&pin.channel), pin.seq);
    let stored = cx.store.entry(&pin.channel, pin.seq)?.ok_or_else(|| {
        Malformed(format!(
            "evidence entry {at} does not exist on this hub; cite entries you sent or received"
        ))
    })?;
    let e = &stored.entry;
    if e.channel != cx.sender && !e.recipients.iter().any(|r| r == cx.sender) {
        return Err(NotAllowed(format!(
            "evidence entry {at} was not addressed to {}; a warning cites only entries its issuer sent or received",
            cx.sender
        )));
    }
    if pin.leaf_hash != stored.leaf_hash.to_vec() {
        return Err(Malformed(format!(
            "evidence entry {at} has another leaf hash than the one cited; pin the entry as you received it"
        )));
    }
    Ok(())
}

fn warning_state(cx: &StepContext<'_>, id: &str) -> Result<pb::WarningState, WorkflowRefusal> {
    cx.workflows
        .warning(id)?
        .ok_or_else(|| NotFound(format!("no warning {:?} was issued", shown(id))))
}

/// The answer or lift names the warning's entry and its organization.
fn same_warning(
    cx: &StepContext<'_>,
    w: &pb::WarningState,
    pin: Option<&pb::EntryPin>,
) -> Result<(), WorkflowRefusal> {
    if pin != w.warning.as_ref() {
        return Err(Malformed(format!(
            "the step names another entry than warning {:?}'s (or another leaf hash); pin the warning entry",
            shown(&w.warning_id)
        )));
    }
    let org = organization_of(cx.message).map_err(malformed)?;
    let warned = w
        .organization
        .as_ref()
        .map(|o| o.credit_code.as_str())
        .unwrap_or_default();
    if org.credit_code != warned {
        return Err(Malformed(format!(
            "warning {:?} is about organization {warned}; its answers and lift name that organization, not {}",
            shown(&w.warning_id),
            org.credit_code
        )));
    }
    Ok(())
}

fn not_lifted(w: &pb::WarningState) -> Result<(), WorkflowRefusal> {
    match &w.lift {
        Some(p) => Err(WrongState(format!(
            "warning {:?} was lifted by {} (entry {}:{}); it takes no more answers or lifts",
            shown(&w.warning_id),
            w.issuer,
            p.channel,
            p.seq
        ))),
        None => Ok(()),
    }
}

pub(super) fn check_warning_measures(
    cx: &StepContext<'_>,
    a: &pb::WarningMeasures,
) -> Result<(), WorkflowRefusal> {
    check_measures(cx.message, a).map_err(malformed)?;
    let w = warning_state(cx, &a.warning_id)?;
    if cx.sender == w.issuer {
        return Err(NotAllowed(format!(
            "{} issued warning {:?}; the other members answer it",
            cx.sender,
            shown(&a.warning_id)
        )));
    }
    if !w.answers.iter().any(|x| x.unit == cx.sender) {
        return Err(NotAllowed(format!(
            "{} was not a member of {} when warning {:?} was issued, so it does not answer it",
            cx.sender,
            w.mechanism,
            shown(&a.warning_id)
        )));
    }
    require_member(
        cx,
        &w.mechanism,
        cx.sender,
        NotAllowed,
        "only members answer its warnings",
    )?;
    not_lifted(&w)?;
    same_warning(cx, &w, a.warning.as_ref())?;
    required_recipients(
        "warning answer",
        cx.recipients,
        [w.issuer.clone(), office_inbox(&w.mechanism)],
        cx.sender,
    )
}

pub(super) fn check_warning_lift(
    cx: &StepContext<'_>,
    l: &pb::WarningLift,
) -> Result<(), WorkflowRefusal> {
    check_lift(cx.message, l).map_err(malformed)?;
    let w = warning_state(cx, &l.warning_id)?;
    if cx.sender != w.issuer {
        return Err(NotAllowed(format!(
            "warning {:?} is lifted only by its issuer {}, not by {}",
            shown(&l.warning_id),
            w.issuer,
            cx.sender
        )));
    }
    not_lifted(&w)?;
    same_warning(cx, &w, l.warning.as_ref())?;
    required_recipients(
        "warning lift",
        cx.recipients,
        w.answers
            .iter()
            .map(|a| a.unit.clone())
            .chain(std::iter::once(office_inbox(&w.mechanism))),
        cx.sender,
    )
}
