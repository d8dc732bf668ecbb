//! The rules of joint notices: a draft (or an escalation) from its
//! source, each co-signature, and the release, checked against the
//! notice's state. Kept apart from the meeting rules in the parent module,
//! whose meetings a joint notice may come from.

use super::*;

fn is_escalation(cx: &StepContext<'_>) -> bool {
    cx.message.kind == Kind::Escalation as i32
}

pub(super) fn check_joint_draft(
    cx: &StepContext<'_>,
    d: &pb::JointDraft,
) -> Result<(), WorkflowRefusal> {
    check_workflow_id("notice id", &d.notice_id).map_err(|e| Malformed(e.to_string()))?;
    let c = d
        .content
        .as_ref()
        .ok_or_else(|| Malformed("the draft carries no content".into()))?;
    let mech = cx.registry.mechanisms.get(&c.mechanism).ok_or_else(|| {
        Malformed(format!(
            "the content names mechanism {:?}, which is not in the registry",
            shown(&c.mechanism)
        ))
    })?;
    if is_escalation(cx) {
        if mech.lead != cx.sender {
            return Err(NotAllowed(format!(
                "an escalation of {} to the leading group is sent by its lead unit {}, not by {}",
                mech.id, mech.lead, cx.sender
            )));
        }
        if !c.audience.as_ref().is_some_and(|a| a.leading_group) {
            return Err(Malformed(
                "an escalation goes to the leading group; set leading_group in its audience".into(),
            ));
        }
        if c.source_entry.is_none() {
            return Err(Malformed(
                "an escalation names the minutes or the case it comes from: set its source entry to the minutes issue entry, or to an entry of its case (with the case id)".into(),
            ));
        }
    } else {
        require_member(
            cx,
            &mech.id,
            cx.sender,
            NotAllowed,
            "only members draft its joint notices",
        )?;
    }
    if let Some(src) = &c.source_entry {
        check_source(cx, c, src)?;
    }
    if c.title.trim().is_empty() || c.text.trim().is_empty() {
        return Err(Malformed("a joint notice needs a title and a text".into()));
    }
    let distinct: BTreeSet<&String> = c.co_issuers.iter().collect();
    if distinct.is_empty() || distinct.len() != c.co_issuers.len() {
        return Err(Malformed(
            "name the co-issuing units, each once (at least one)".into(),
        ));
    }
    for u in &c.co_issuers {
        if u == cx.sender {
            return Err(Malformed(
                "the drafter signs the notice itself; do not name it as a co-issuer".into(),
            ));
        }
        require_member(
            cx,
            &mech.id,
            u,
            Malformed,
            "name as co-issuers only units that are members when the notice is drafted",
        )?;
    }
    cx.registry
        .resolve(cx.sender, &c.audience.clone().unwrap_or_default())
        .map_err(|e| Malformed(format!("the notice's audience: {e}")))?;
    if cx.workflows.notice(&d.notice_id)?.is_some() {
        return Err(Exists(format!(
            "notice {:?} was already drafted; choose a new notice id",
            shown(&d.notice_id)
        )));
    }
    required_recipients(
        "joint draft",
        cx.recipients,
        c.co_issuers.iter().cloned(),
        cx.sender,
    )
}

/// The rule of 上报's reference, on the hub: the source exists, the drafter
/// saw it, and it is issued minutes of a meeting of the content's mechanism
/// or an entry of the content's case.
fn check_source(
    cx: &StepContext<'_>,
    c: &pb::JointContent,
    src: &pb::EntryRef,
) -> Result<(), WorkflowRefusal> {
    let at = format!("{}:{}", shown(&src.channel), src.seq);
    let stored = cx.store.entry(&src.channel, src.seq)?.ok_or_else(|| {
        Malformed(format!(
            "source entry {at} does not exist on this hub; name the minutes issue entry or a case entry as `channel:seq`"
        ))
    })?;
    let entry = &stored.entry;
    let seen = entry.channel == cx.sender || entry.recipients.iter().any(|r| r == cx.sender);
    if !seen {
        return Err(NotAllowed(format!(
            "source entry {at} was not addressed to {}; a notice can only come from entries its drafter received or sent",
            cx.sender
        )));
    }
    let message = entry.content();
    let case = message
        .and_then(|m| m.references.as_ref())
        .map(|r| r.case_id.as_str())
        .unwrap_or_default();
    let is_case_entry = !c.case_id.is_empty() && case == c.case_id;
    if !is_case_entry {
        let step = message
            .filter(|m| m.kind == Kind::Minutes as i32)
            .and_then(|m| tongbao_proto::workflow::decode_step(m).ok());
        match step {
            Some(Step::MinutesIssue(i)) => {
                let m = meeting(cx, &i.meeting_id)?;
                let here = crate::workflow::pin(&entry.channel, entry.seq, &stored.leaf_hash);
                if m.issue.as_ref() != Some(&here) {
                    return Err(WrongState(format!(
                        "source entry {at} is not the issue the hub recorded for meeting {:?}",
                        shown(&i.meeting_id)
                    )));
                }
                if !proposal(&m).mechanisms.contains(&c.mechanism) {
                    return Err(Malformed(format!(
                        "source entry {at} is the minutes of meeting {:?} of {}, not of {}; escalate minutes from the mechanism's own meetings",
                        shown(&i.meeting_id),
                        proposal(&m).mechanisms.join(" and "),
                        shown(&c.mechanism)
                    )));
                }
            }
            Some(Step::MinutesDraft(d)) => {
                return Err(WrongState(format!(
                    "source entry {at} is a minutes draft of meeting {:?}, not issued minutes; escalate from the minutes issue entry once every attending unit consented",
                    shown(&d.meeting_id)
                )));
            }
            _ => {
                let case_hint = if c.case_id.is_empty() {
                    "set the case id to the case the entry belongs to".to_string()
                } else {
                    format!(
                        "the entry names case {:?}, not {:?}",
                        shown(case),
                        shown(&c.case_id)
                    )
                };
                return Err(Malformed(format!(
                    "source entry {at} is neither issued minutes nor an entry of the named case ({case_hint}); name the minutes issue entry or an entry of the case"
                )));
            }
        }
    }
    // The same rule the recipients apply to the copy the release embeds.
    let keys = registry_keys(cx.registry);
    verify_source(c, entry, &keys as &dyn SigningKeys)
        .map(|_| ())
        .map_err(|e| Malformed(format!("source entry {at}: {e}")))
}

fn notice(cx: &StepContext<'_>, id: &str) -> Result<pb::JointNoticeState, WorkflowRefusal> {
    cx.workflows
        .notice(id)?
        .ok_or_else(|| NotFound(format!("no joint notice {:?} was drafted", shown(id))))
}

pub(super) fn check_co_signature(
    cx: &StepContext<'_>,
    s: &pb::CoSignature,
) -> Result<(), WorkflowRefusal> {
    let n = notice(cx, &s.notice_id)?;
    let content = n.content.clone().unwrap_or_default();
    if !content.co_issuers.iter().any(|u| u == cx.sender) {
        return Err(NotAllowed(format!(
            "{} is not named as a co-issuer of notice {:?} (co-issuers: {})",
            cx.sender,
            shown(&s.notice_id),
            content.co_issuers.join(", ")
        )));
    }
    if n.release.is_some() {
        return Err(WrongState(format!(
            "notice {:?} has gone out already",
            shown(&s.notice_id)
        )));
    }
    if s.draft != n.draft {
        return Err(Malformed(format!(
            "the co-signature names another draft than notice {:?}'s",
            shown(&s.notice_id)
        )));
    }
    if s.content_digest.as_slice() != content_digest(&content) {
        return Err(Malformed(
            "the co-signed digest is not the digest of the drafted content".into(),
        ));
    }
    if !n.not_signed.iter().any(|u| u == cx.sender) {
        // A co-signature whose key did not count may be given again.
        let earlier = n.co_signatures.iter().find(|p| p.channel == cx.sender);
        let stale = match earlier {
            Some(p) => stale_signature(cx, "co-signature", p)?.is_some(),
            None => false,
        };
        if !stale {
            return Err(WrongState(format!(
                "{} already co-signed notice {:?}",
                cx.sender,
                shown(&s.notice_id)
            )));
        }
    }
    required_recipients(
        "co-signature",
        cx.recipients,
        std::iter::once(n.drafter.clone()),
        cx.sender,
    )
}

pub(super) fn check_release(
    cx: &StepContext<'_>,
    r: &pb::JointRelease,
) -> Result<(), WorkflowRefusal> {
    let n = notice(cx, &r.notice_id)?;
    if cx.sender != n.drafter {
        return Err(NotAllowed(format!(
            "notice {:?} is sent out by its drafter {}, not {}",
            shown(&r.notice_id),
            n.drafter,
            cx.sender
        )));
    }
    if n.kind != cx.message.kind {
        return Err(Malformed(format!(
            "notice {:?} was drafted as {}; release it as such",
            shown(&r.notice_id),
            tongbao_proto::kinds::name(n.kind)
        )));
    }
    if n.release.is_some() {
        return Err(WrongState(format!(
            "notice {:?} has gone out already",
            shown(&r.notice_id)
        )));
    }
    if !n.not_signed.is_empty() {
        return Err(WrongState(format!(
            "notice {:?} goes out only once every named co-issuer signed; missing {}",
            shown(&r.notice_id),
            n.not_signed.join(", ")
        )));
    }
    for p in &n.co_signatures {
        if let Some(why) = stale_signature(cx, "co-signature", p)? {
            return Err(WrongState(format!(
                "{why}; {} co-signs notice {:?} again with its current key before it goes out",
                p.channel,
                shown(&r.notice_id)
            )));
        }
    }
    same_as_stored(cx.store, "joint draft", r.draft.as_ref(), n.draft.as_ref())?;
    for c in &r.co_signatures {
        let expected = n.co_signatures.iter().find(|p| p.channel == c.channel);
        same_as_stored(cx.store, "co-signature", Some(c), expected)?;
    }
    if let Some(source) = &r.source {
        same_as_stored(cx.store, "source entry", Some(source), None)?;
    }
    let keys = registry_keys(cx.registry);
    let verified = if is_escalation(cx) {
        verify_escalation(cx.sender, r, &keys as &dyn SigningKeys)
    } else {
        verify_joint_release(cx.sender, r, &keys as &dyn SigningKeys)
    };
    verified.map_err(|e| Malformed(e.to_string()))?;
    let content = n.content.unwrap_or_default();
    if cx.message.audience != content.audience {
        return Err(Malformed(
            "the release goes to exactly the audience the co-issuers signed".into(),
        ));
    }
    Ok(())
}
