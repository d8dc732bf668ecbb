//! The rules of joint enforcement actions (联合执法行动) that every party
//! checks: the shape of a proposal, and when a released summary proves
//! what it claims. A summary embeds the signed proposal, every
//! participant's answer and every confirmed participant's results, so a
//! recipient checks it with the registry's keys alone, as minutes are
//! checked from their consents.

use super::task::{check_attachment, check_unit_list};
use super::{
    SigningKeys, WorkflowError, check_embedded, check_workflow_id, malformed, own_embedded_step,
    own_step, unproven,
};
use crate::credit_code;
use crate::echo::shown;
use crate::pb::{self, Entry, Message, Organization, workflow_step::Step};
use std::collections::{BTreeMap, BTreeSet};

/// The shape of a proposal, before the hub judges its sender and its
/// participants' membership: an id, a title, participants each once (not
/// the proposer, the message's sender), a time, target organizations
/// named by the message's references too, and the plan's digest.
pub fn check_proposal(m: &Message, p: &pb::ActionProposal) -> Result<(), WorkflowError> {
    check_workflow_id("action id", &p.action_id)?;
    if p.title.trim().is_empty() {
        return Err(malformed("a joint action needs a title"));
    }
    check_unit_list("participating units", &p.participants)?;
    if p.participants.contains(&m.sender) {
        return Err(malformed(
            "the lead unit proposes the action; do not name it as a participant",
        ));
    }
    if p.starts_micros <= 0 || p.ends_micros < p.starts_micros {
        return Err(malformed(
            "a joint action needs a start and an end no earlier than its start",
        ));
    }
    check_target_organizations(&p.target_organizations)?;
    check_proposal_references(m, p)?;
    let plan = p
        .plan
        .as_ref()
        .ok_or_else(|| malformed("a joint action carries its plan as an attachment digest"))?;
    check_attachment("the action plan", plan)
}

/// Target organizations: at least one, and as any message's organizations
/// (valid credit codes, each once, at most
/// [`credit_code::MAX_ORGANIZATIONS`], names bounded).
pub fn check_target_organizations(orgs: &[Organization]) -> Result<(), WorkflowError> {
    if orgs.is_empty() {
        return Err(malformed(
            "a joint action names at least one target organization by unified social credit code",
        ));
    }
    credit_code::check_organizations(orgs).map_err(|e| malformed(e.to_string()))
}

/// The proposal message's `references.organizations` are exactly the
/// target organizations (codes, names and order), so the organization
/// index, which reads references, finds the action under each target.
pub fn check_proposal_references(m: &Message, p: &pb::ActionProposal) -> Result<(), WorkflowError> {
    let named = m
        .references
        .as_ref()
        .map(|r| r.organizations.as_slice())
        .unwrap_or_default();
    if named != p.target_organizations.as_slice() {
        return Err(malformed(format!(
            "a joint action's proposal names its target organizations in the message's references.organizations too, with the same codes, names and order (references name {}, targets {})",
            named.len(),
            p.target_organizations.len()
        )));
    }
    Ok(())
}

/// A participant's part, as a verified summary proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvenPart {
    Declined {
        answer: pb::EntryPin,
        reason: String,
    },
    Reported {
        answer: pb::EntryPin,
        result: pb::EntryPin,
        text: String,
    },
}

own_step!(
    pb::ActionProposal,
    ActionProposal,
    action_id,
    "action summary",
    "proposal",
    "action proposal",
    "action"
);

/// What a verified summary proves.
#[derive(Debug, Clone, PartialEq)]
pub struct SummarizedAction {
    pub action_id: String,
    pub lead: String,
    pub proposal: pb::ActionProposal,
    pub proposal_entry: pb::EntryPin,
    /// Each participant's part, in participant order.
    pub parts: Vec<(String, ProvenPart)>,
    pub text: String,
}

/// The rule of 联合执法行动's summary: it is released by the proposer and
/// embeds the signed proposal, one signed answer naming that proposal
/// from every participant, and one signed result naming it from every
/// participant that confirmed (none from one that declined). `releaser`
/// is the unit that signed the summary entry.
pub fn verify_action_summary(
    releaser: &str,
    summary: &pb::ActionSummary,
    keys: &dyn SigningKeys,
) -> Result<SummarizedAction, WorkflowError> {
    let (proposal, p): (_, pb::ActionProposal) = own_embedded_step(
        summary.proposal.as_ref(),
        releaser,
        &summary.action_id,
        keys,
    )?;
    // A proposal the hub would refuse proves no action.
    check_proposal(proposal.message, &p)
        .map_err(|e| unproven(format!("the embedded proposal: {e}")))?;
    let pin = proposal.pin();
    let participants: BTreeSet<&str> = p.participants.iter().map(String::as_str).collect();
    let answers = embedded_answers(summary, &pin, &participants, keys)?;
    let mut results = embedded_results(summary, &pin, &participants, keys)?;
    let mut parts = Vec::with_capacity(p.participants.len());
    let mut missing = Vec::new();
    for unit in &p.participants {
        let Some((answer, a)) = answers.get(unit.as_str()) else {
            missing.push(format!("{unit} (no answer)"));
            continue;
        };
        let result = results.remove(unit.as_str());
        let part = match (a.confirm, result) {
            (false, None) => ProvenPart::Declined {
                answer: answer.clone(),
                reason: a.reason.clone(),
            },
            (false, Some(_)) => {
                return Err(unproven(format!(
                    "{unit} declined the action but the summary carries results of it"
                )));
            }
            (true, Some((result, text))) => ProvenPart::Reported {
                answer: answer.clone(),
                result,
                text,
            },
            (true, None) => {
                missing.push(format!("{unit} (confirmed, no results)"));
                continue;
            }
        };
        parts.push((unit.clone(), part));
    }
    if !missing.is_empty() {
        return Err(unproven(format!(
            "a summary is released once every participant answered and every confirmed one reported; missing {}",
            missing.join(", ")
        )));
    }
    Ok(SummarizedAction {
        action_id: summary.action_id.clone(),
        lead: releaser.to_string(),
        proposal: p.clone(),
        proposal_entry: pin,
        parts,
        text: summary.text.clone(),
    })
}

/// The embedded answers by unit: each signed by a participant, naming
/// this proposal, one per unit; a decline gives its reason.
fn embedded_answers<'a>(
    summary: &'a pb::ActionSummary,
    proposal: &pb::EntryPin,
    participants: &BTreeSet<&str>,
    keys: &dyn SigningKeys,
) -> Result<BTreeMap<&'a str, (pb::EntryPin, pb::ActionAnswer)>, WorkflowError> {
    let mut out = BTreeMap::new();
    for e in &summary.answers {
        let c = check_embedded("action answer", e, keys)?;
        let Step::ActionAnswer(a) = c.step.clone() else {
            return Err(unproven("an embedded answer is not an action answer"));
        };
        let unit = part_of(&c.message.sender, participants, "answered")?;
        if a.action_id != summary.action_id || a.proposal.as_ref() != Some(proposal) {
            return Err(unproven(format!(
                "the answer of {unit} names another action or proposal than the one summarized"
            )));
        }
        if !a.confirm && a.reason.trim().is_empty() {
            return Err(unproven(format!("{unit} declined without a reason")));
        }
        if out.insert(entry_sender(e), (c.pin(), a)).is_some() {
            return Err(unproven(format!("{unit} answers twice")));
        }
    }
    Ok(out)
}

/// The embedded results by unit: each signed by a participant, naming
/// this proposal, one per unit.
fn embedded_results<'a>(
    summary: &'a pb::ActionSummary,
    proposal: &pb::EntryPin,
    participants: &BTreeSet<&str>,
    keys: &dyn SigningKeys,
) -> Result<BTreeMap<&'a str, (pb::EntryPin, String)>, WorkflowError> {
    let mut out = BTreeMap::new();
    for e in &summary.results {
        let c = check_embedded("action result", e, keys)?;
        let Step::ActionResult(r) = &c.step else {
            return Err(unproven("an embedded result is not an action result"));
        };
        let unit = part_of(&c.message.sender, participants, "reported")?;
        if r.action_id != summary.action_id || r.proposal.as_ref() != Some(proposal) {
            return Err(unproven(format!(
                "the result of {unit} names another action or proposal than the one summarized"
            )));
        }
        if out
            .insert(entry_sender(e), (c.pin(), r.text.clone()))
            .is_some()
        {
            return Err(unproven(format!("{unit} reports twice")));
        }
    }
    Ok(out)
}

/// The sender of a checked entry (its channel, which check_embedded
/// proved to be its sender), borrowed from the summary.
fn entry_sender(e: &Entry) -> &str {
    e.channel.as_str()
}

fn part_of<'u>(
    unit: &'u str,
    participants: &BTreeSet<&str>,
    did: &str,
) -> Result<&'u str, WorkflowError> {
    if participants.contains(unit) {
        Ok(unit)
    } else {
        Err(unproven(format!(
            "{} {did} but is not a participant of the action",
            shown(unit)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::leaf_hash;
    use crate::keys::{ED25519_ALGORITHM, RegisteredKey, SigningKey};
    use crate::pb::{Kind, Message};
    use crate::workflow::{CONTENT_TYPE, encode_step};
    use std::collections::HashMap;

    type R = Result<(), Box<dyn std::error::Error>>;

    struct World {
        keys: HashMap<String, SigningKey>,
        seqs: HashMap<String, u64>,
        /// Sign proposals without their targets in their references.
        bare_proposals: bool,
    }

    impl World {
        fn new(units: &[&str]) -> Result<Self, crate::keys::KeyError> {
            let mut keys = HashMap::new();
            for u in units {
                keys.insert(u.to_string(), SigningKey::generate()?);
            }
            Ok(Self {
                keys,
                seqs: HashMap::new(),
                bare_proposals: false,
            })
        }

        fn entry(&mut self, unit: &str, kind: Kind, step: Step) -> Result<Entry, String> {
            // A proposal names its targets in its references, as the
            // client library writes it.
            let references = match &step {
                Step::ActionProposal(p) if !self.bare_proposals => Some(pb::References {
                    organizations: p.target_organizations.clone(),
                    ..Default::default()
                }),
                _ => None,
            };
            let key = self.keys.get(unit).ok_or("no such unit")?;
            let seq = self.seqs.entry(unit.to_string()).or_default();
            let signed = key.sign_message(Message {
                references,
                message_id: format!("{unit}-{seq}"),
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
                seq: *seq,
                hub_micros: 1,
                previous_leaf_hash: vec![0; 32],
                message: Some(signed),
                ..Default::default()
            };
            *seq += 1;
            Ok(e)
        }

        fn keys(&self) -> impl Fn(&str, &str) -> Option<RegisteredKey> + '_ {
            |unit, key_id| {
                self.keys
                    .get(unit)
                    .filter(|k| k.key_id() == key_id)
                    .map(|k| RegisteredKey {
                        unit: unit.into(),
                        algorithm: ED25519_ALGORITHM.into(),
                        key_id: key_id.into(),
                        public_key: k.public_key().to_vec(),
                        valid_from_micros: 0,
                        valid_until_micros: 0,
                    })
            }
        }
    }

    fn pin(e: &Entry) -> pb::EntryPin {
        pb::EntryPin {
            channel: e.channel.clone(),
            seq: e.seq,
            leaf_hash: leaf_hash(e).to_vec(),
        }
    }

    /// Valid codes (from `credit_code`'s tests).
    const ASSOCIATION: &str = "51140000MJ0000012R";
    const FOUNDATION: &str = "53140000MJY0001237";

    fn org(code: &str) -> Organization {
        Organization {
            credit_code: code.into(),
            name: String::new(),
        }
    }

    /// The message of a proposal whose references name its targets.
    fn message_of(p: &pb::ActionProposal, sender: &str) -> Message {
        Message {
            sender: sender.into(),
            references: Some(pb::References {
                organizations: p.target_organizations.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn proposal() -> pb::ActionProposal {
        pb::ActionProposal {
            action_id: "a-1".into(),
            mechanism: "joint-enforcement".into(),
            title: "Inspection of association X".into(),
            participants: vec!["public-security".into(), "tax".into(), "health".into()],
            starts_micros: 1,
            ends_micros: 2,
            target_organizations: vec![org(ASSOCIATION)],
            plan: Some(pb::AttachmentDigest {
                name: "plan.pdf".into(),
                sha256: vec![9; 32],
                ..Default::default()
            }),
        }
    }

    /// A summary where public-security and tax confirmed and reported,
    /// and health declined.
    fn summary(w: &mut World) -> Result<pb::ActionSummary, String> {
        let p = w.entry(
            "civil-affairs",
            Kind::JointAction,
            Step::ActionProposal(proposal()),
        )?;
        let at = pin(&p);
        let mut answers = Vec::new();
        let mut results = Vec::new();
        for (unit, confirm) in [("public-security", true), ("tax", true), ("health", false)] {
            answers.push(w.entry(
                unit,
                Kind::ActionReport,
                Step::ActionAnswer(pb::ActionAnswer {
                    action_id: "a-1".into(),
                    proposal: Some(at.clone()),
                    confirm,
                    reason: if confirm { "" } else { "no staff that week" }.into(),
                }),
            )?);
            if confirm {
                results.push(w.entry(
                    unit,
                    Kind::ActionReport,
                    Step::ActionResult(pb::ActionResult {
                        action_id: "a-1".into(),
                        proposal: Some(at.clone()),
                        text: format!("{unit}: books seized"),
                        attachments: vec![],
                    }),
                )?);
            }
        }
        Ok(pb::ActionSummary {
            action_id: "a-1".into(),
            proposal: Some(p),
            answers,
            results,
            text: "Done".into(),
        })
    }

    fn world() -> Result<World, crate::keys::KeyError> {
        World::new(&[
            "civil-affairs",
            "public-security",
            "tax",
            "health",
            "education",
        ])
    }

    #[test]
    fn a_summary_proves_every_answer_and_every_confirmed_result() -> R {
        let mut w = world()?;
        let s = summary(&mut w)?;
        let proven = verify_action_summary("civil-affairs", &s, &w.keys())?;
        assert_eq!(proven.parts.len(), 3);
        assert!(
            matches!(&proven.parts[2], (u, ProvenPart::Declined { reason, .. })
            if u == "health" && reason == "no staff that week")
        );
        assert!(
            matches!(&proven.parts[1], (u, ProvenPart::Reported { text, .. })
            if u == "tax" && text == "tax: books seized")
        );
        // Released by another than the proposer.
        assert!(verify_action_summary("tax", &s, &w.keys()).is_err());
        Ok(())
    }

    #[test]
    fn a_tampered_embedded_result_is_refused() -> R {
        let mut w = world()?;
        let mut s = summary(&mut w)?;
        let m = s.results[0]
            .message
            .as_mut()
            .and_then(|m| m.message.as_mut())
            .ok_or("setup")?;
        let Ok(Step::ActionResult(mut r)) = crate::workflow::decode_step(m) else {
            return Err("setup".into());
        };
        r.text = "nothing found".into();
        m.body = encode_step(Step::ActionResult(r)).into();
        let err = verify_action_summary("civil-affairs", &s, &w.keys());
        assert!(
            matches!(&err, Err(WorkflowError::Unproven(m)) if m.contains("does not verify")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn a_summary_missing_a_result_or_an_answer_is_refused() -> R {
        let mut w = world()?;
        let full = summary(&mut w)?;
        let mut no_result = full.clone();
        no_result.results.remove(1);
        let err = verify_action_summary("civil-affairs", &no_result, &w.keys());
        assert!(
            matches!(&err, Err(WorkflowError::Unproven(m)) if m.contains("tax (confirmed, no results)")),
            "{err:?}"
        );
        let mut no_answer = full.clone();
        no_answer.answers.remove(2);
        let err = verify_action_summary("civil-affairs", &no_answer, &w.keys());
        assert!(
            matches!(&err, Err(WorkflowError::Unproven(m)) if m.contains("health (no answer)")),
            "{err:?}"
        );
        let mut doubled = full;
        doubled.answers.push(doubled.answers[0].clone());
        assert!(verify_action_summary("civil-affairs", &doubled, &w.keys()).is_err());
        Ok(())
    }

    #[test]
    fn a_result_of_a_decliner_or_an_outsider_or_another_action_is_refused() -> R {
        let mut w = world()?;
        let full = summary(&mut w)?;
        let at = pin(full.proposal.as_ref().ok_or("setup")?);
        let result = |w: &mut World, unit: &str, id: &str, at: pb::EntryPin| {
            w.entry(
                unit,
                Kind::ActionReport,
                Step::ActionResult(pb::ActionResult {
                    action_id: id.into(),
                    proposal: Some(at),
                    text: "x".into(),
                    attachments: vec![],
                }),
            )
        };
        for (unit, id, proposal, words) in [
            ("health", "a-1", at.clone(), "declined"),
            ("education", "a-1", at.clone(), "not a participant"),
            ("public-security", "a-2", at.clone(), "another action"),
            (
                "public-security",
                "a-1",
                pb::EntryPin::default(),
                "another action",
            ),
        ] {
            let mut s = full.clone();
            if unit == "public-security" {
                s.results.remove(0);
            }
            s.results.push(result(&mut w, unit, id, proposal)?);
            let err = verify_action_summary("civil-affairs", &s, &w.keys());
            assert!(
                matches!(&err, Err(WorkflowError::Unproven(m)) if m.contains(words)),
                "{unit}: {err:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_proposal_names_participants_time_targets_and_plan() {
        let check =
            |p: &pb::ActionProposal, sender: &str| check_proposal(&message_of(p, sender), p);
        let good = proposal();
        assert!(check(&good, "civil-affairs").is_ok());
        assert!(check(&good, "tax").is_err());
        let mut no_plan = good.clone();
        no_plan.plan = None;
        assert!(check(&no_plan, "civil-affairs").is_err());
        let mut backwards = good.clone();
        backwards.ends_micros = 0;
        assert!(check(&backwards, "civil-affairs").is_err());
    }

    #[test]
    fn target_organizations_are_valid_credit_codes_at_least_one() {
        let refused = |targets: Vec<Organization>| {
            let mut p = proposal();
            p.target_organizations = targets;
            match check_proposal(&message_of(&p, "civil-affairs"), &p) {
                Err(WorkflowError::Malformed(m)) => m,
                other => format!("not refused: {other:?}"),
            }
        };
        assert!(refused(vec![]).contains("at least one target organization"));
        assert!(refused(vec![org("Association X")]).contains("has 13 characters"));
        assert!(refused(vec![org("51140000MJ0000012X")]).contains("check character"));
        assert!(refused(vec![org(ASSOCIATION), org(ASSOCIATION)]).contains("named twice"));
        let many = (0..=credit_code::MAX_ORGANIZATIONS)
            .map(|_| org(ASSOCIATION))
            .collect();
        assert!(refused(many).contains("at most 16"));
        // A long input is never repeated whole.
        let long = refused(vec![org(&"9".repeat(100_000))]);
        assert!(long.len() < 300, "{}", long.len());
        let mut named = org(FOUNDATION);
        named.name = "山西省某某基金会".into();
        let mut two = proposal();
        two.target_organizations = vec![org(ASSOCIATION), named];
        assert_eq!(
            check_proposal(&message_of(&two, "civil-affairs"), &two),
            Ok(())
        );
    }

    #[test]
    fn the_references_name_exactly_the_targets() {
        let mut p = proposal();
        p.target_organizations = vec![org(ASSOCIATION), org(FOUNDATION)];
        let good = message_of(&p, "civil-affairs");
        assert_eq!(check_proposal(&good, &p), Ok(()));
        let differs = |edit: &dyn Fn(&mut Vec<Organization>)| {
            let mut m = good.clone();
            if let Some(r) = m.references.as_mut() {
                edit(&mut r.organizations);
            }
            matches!(check_proposal(&m, &p), Err(WorkflowError::Malformed(e)) if e.contains("references.organizations"))
        };
        assert!(differs(&|o| o.clear()));
        assert!(differs(&|o| {
            o.pop();
        }));
        assert!(differs(&|o| o.reverse()));
        assert!(differs(&|o| o[1].name = "another name".into()));
        assert!(differs(&|o| o.push(org("53140000730001234G"))));
        let mut none = good.clone();
        none.references = None;
        assert!(check_proposal(&none, &p).is_err());
    }

    #[test]
    fn a_summary_of_a_proposal_without_its_targets_in_references_proves_nothing() -> R {
        let mut w = world()?;
        // A proposal signed without its targets in its references, which
        // a hub would never have appended.
        w.bare_proposals = true;
        let s = summary(&mut w)?;
        let err = verify_action_summary("civil-affairs", &s, &w.keys());
        assert!(
            matches!(&err, Err(WorkflowError::Unproven(m)) if m.contains("references.organizations")),
            "{err:?}"
        );
        Ok(())
    }
}
