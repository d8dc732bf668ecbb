//! The mechanisms' workflows from a departmental system: meetings and
//! minutes, joint notices and escalations, liaisons, statistics and cases.
//!
//! Each step is signed locally like any message (kind + a `WorkflowStep`
//! body) and submitted through `Workflow.Submit`, where the hub checks it
//! against the workflow's state. Issued minutes and released notices carry
//! their evidence, which [`Client::verify_minutes`] and
//! [`Client::verify_joint_release`] check with the rules of
//! `tongbao_proto::workflow`, trusting nothing the hub says about them.

use crate::client::hub_read;
use crate::verify::KeyRing;
use crate::{Client, ClientError, Draft, PushReceipt, VerifiedEntry};
use tongbao_proto::identity::Principal;
use tongbao_proto::keys::RegisteredKey;
use tongbao_proto::pb::{self, Kind, workflow_step::Step};
use tongbao_proto::workflow::{
    CONTENT_TYPE, IssuedMinutes, ReleasedNotice, SigningKeys, content_digest, decode_step,
    encode_step, verify_escalation, verify_joint_release, verify_minutes_issue,
};

/// Embedded evidence counts only under keys valid at each entry's hub time.
impl SigningKeys for KeyRing {
    fn key(&self, unit: &str, key_id: &str) -> Option<RegisteredKey> {
        self.registered(unit, key_id)
    }
}

/// Who a workflow step is addressed to, beyond what the hub requires.
pub(crate) fn audience_of(units: &[String], offices: &[String]) -> pb::Audience {
    pb::Audience {
        units: units.to_vec(),
        offices: offices.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn dedup(mut v: Vec<String>, without: &str) -> Vec<String> {
    v.retain(|u| u != without);
    v.sort();
    v.dedup();
    v
}

pub(crate) fn workflow_error(e: impl std::fmt::Display) -> ClientError {
    ClientError::Workflow(e.to_string())
}

pub(crate) fn as_entry(v: VerifiedEntry) -> pb::Entry {
    v.into_entry()
}

impl Client {
    pub(crate) fn own_unit(&self) -> Result<String, ClientError> {
        match self.identity() {
            Principal::Unit(u) => Ok(u.clone()),
            _ => Err(ClientError::NoSigningKey),
        }
    }

    /// Signs and submits one workflow step; answered once durable.
    pub async fn submit_step(
        &self,
        kind: Kind,
        subject: impl Into<String>,
        step: Step,
        audience: pb::Audience,
        case_id: Option<&str>,
    ) -> Result<PushReceipt, ClientError> {
        let mut draft =
            Draft::new(kind, subject, encode_step(step)).with_content_type(CONTENT_TYPE);
        draft.audience = audience;
        if let Some(c) = case_id.filter(|c| !c.is_empty()) {
            draft = draft.with_case(c);
        }
        let signed = self.sign(draft)?;
        self.submit_signed(signed).await
    }

    /// Submits an already signed step (safe to repeat: the message id makes
    /// it idempotent). Interrupted calls are repeated like pushes.
    pub async fn submit_signed(
        &self,
        signed: pb::SignedMessage,
    ) -> Result<PushReceipt, ClientError> {
        let message_id = signed.message_id().to_string();
        let channel = signed
            .message
            .as_ref()
            .map(|m| m.sender.clone())
            .unwrap_or_default();
        let request = pb::SubmitStepRequest { step: Some(signed) };
        // A step is appended to this unit's channel: the behind rule holds.
        let r = self
            .push_not_behind(
                &channel,
                || {
                    let mut workflow = self.workflow_rpc();
                    let request = request.clone();
                    async move { workflow.submit(request).await }
                },
                |r: &pb::SubmitStepResponse| {
                    r.appended
                        .iter()
                        .map(|a| crate::client::position(a, &message_id))
                        .collect()
                },
            )
            .await?
            .appended
            .unwrap_or_default();
        Ok(PushReceipt::new(r, message_id))
    }

    // ---- meetings and minutes (议事规则) ----

    /// Proposes a meeting (the lead unit, for the office): sent to the
    /// attending units and the office of each mechanism.
    pub async fn propose_meeting(
        &self,
        proposal: pb::MeetingProposal,
    ) -> Result<PushReceipt, ClientError> {
        let me = self.own_unit()?;
        let audience = audience_of(
            &dedup(proposal.attending_units.clone(), &me),
            &proposal.mechanisms,
        );
        let subject = format!("Meeting proposal: {}", proposal.title);
        self.submit_step(
            Kind::MeetingProposal,
            subject,
            Step::MeetingProposal(proposal),
            audience,
            None,
        )
        .await
    }

    /// A meeting's state as the hub keeps it.
    pub async fn meeting(&self, meeting_id: &str) -> Result<pb::MeetingState, ClientError> {
        hub_read!(
            self,
            workflow.get_meeting(pb::GetMeetingRequest {
                meeting_id: meeting_id.to_string(),
            })
        )
        .await
    }

    /// Everyone a meeting's steps go to, without this unit.
    async fn meeting_audience(&self, meeting_id: &str) -> Result<pb::Audience, ClientError> {
        let m = self.meeting(meeting_id).await?;
        let p = m.proposal.unwrap_or_default();
        let me = self.own_unit()?;
        let mut units = p.attending_units.clone();
        units.push(m.proposer.clone());
        Ok(audience_of(&dedup(units, &me), &p.mechanisms))
    }

    /// Proposes an agenda item (`comment_on` unset) or comments on one, by
    /// correspondence before the agenda is settled.
    pub async fn agenda_item(
        &self,
        meeting_id: &str,
        text: &str,
        comment_on: Option<pb::EntryPin>,
    ) -> Result<PushReceipt, ClientError> {
        let audience = self.meeting_audience(meeting_id).await?;
        let subject = match &comment_on {
            Some(p) => format!("Comment on agenda item {}:{}", p.channel, p.seq),
            None => format!("Agenda item for meeting {meeting_id}"),
        };
        self.submit_step(
            Kind::MeetingAgenda,
            subject,
            Step::AgendaItem(pb::AgendaItem {
                meeting_id: meeting_id.to_string(),
                text: text.to_string(),
                comment_on,
            }),
            audience,
            None,
        )
        .await
    }

    /// Settles the agenda (the proposer only).
    pub async fn settle_agenda(
        &self,
        meeting_id: &str,
        agenda: Vec<String>,
        adopted: Vec<pb::EntryPin>,
    ) -> Result<PushReceipt, ClientError> {
        let audience = self.meeting_audience(meeting_id).await?;
        self.submit_step(
            Kind::MeetingAgenda,
            format!("Agenda settled for meeting {meeting_id}"),
            Step::AgendaSettlement(pb::AgendaSettlement {
                meeting_id: meeting_id.to_string(),
                agenda,
                adopted,
            }),
            audience,
            None,
        )
        .await
    }

    /// Circulates a minutes draft (the office, through the lead unit): the
    /// next revision, superseding the current draft if there is one.
    pub async fn circulate_minutes(
        &self,
        meeting_id: &str,
        text: &str,
    ) -> Result<PushReceipt, ClientError> {
        let m = self.meeting(meeting_id).await?;
        let audience = self.meeting_audience(meeting_id).await?;
        let revision = m.current_revision + 1;
        self.submit_step(
            Kind::Minutes,
            format!("Minutes of meeting {meeting_id}, draft {revision}"),
            Step::MinutesDraft(pb::MinutesDraft {
                meeting_id: meeting_id.to_string(),
                revision,
                text: text.to_string(),
                supersedes: m.current_draft,
            }),
            audience,
            None,
        )
        .await
    }

    /// Answers a named minutes draft: a consent, or an objection with
    /// comments. Sent to the proposer and the office.
    pub async fn answer_minutes(
        &self,
        meeting_id: &str,
        draft: pb::EntryPin,
        consent: bool,
        comments: &str,
    ) -> Result<PushReceipt, ClientError> {
        let m = self.meeting(meeting_id).await?;
        let p = m.proposal.unwrap_or_default();
        let me = self.own_unit()?;
        let audience = audience_of(&dedup(vec![m.proposer.clone()], &me), &p.mechanisms);
        let word = if consent { "Consent" } else { "Objection" };
        self.submit_step(
            Kind::MinutesConsent,
            format!(
                "{word} to minutes of meeting {meeting_id} ({}:{})",
                draft.channel, draft.seq
            ),
            Step::MinutesAnswer(pb::MinutesAnswer {
                meeting_id: meeting_id.to_string(),
                draft: Some(draft),
                consent,
                comments: comments.to_string(),
            }),
            audience,
            None,
        )
        .await
    }

    /// Answers the current minutes draft of a meeting.
    pub async fn answer_current_minutes(
        &self,
        meeting_id: &str,
        consent: bool,
        comments: &str,
    ) -> Result<PushReceipt, ClientError> {
        let draft = self
            .meeting(meeting_id)
            .await?
            .current_draft
            .ok_or_else(|| {
                workflow_error(format!("meeting {meeting_id} has no minutes draft yet"))
            })?;
        self.answer_minutes(meeting_id, draft, consent, comments)
            .await
    }

    /// Issues the minutes (the proposer): gathers the proposal, the current
    /// draft and every consent entry into the issue, which the hub refuses
    /// unless every attending unit consented to that draft.
    pub async fn issue_minutes(&self, meeting_id: &str) -> Result<PushReceipt, ClientError> {
        let m = self.meeting(meeting_id).await?;
        let audience = self.meeting_audience(meeting_id).await?;
        let fetch = |pin: Option<pb::EntryPin>| async move {
            match pin {
                Some(p) => {
                    Ok::<_, ClientError>(Some(as_entry(self.get_entry(&p.channel, p.seq).await?)))
                }
                None => Ok(None),
            }
        };
        let proposal = fetch(m.proposal_entry.clone()).await?;
        let draft = fetch(m.current_draft.clone()).await?;
        let mut consents = Vec::new();
        for a in &m.answers {
            if a.state == pb::AnswerState::Consented as i32
                && let Some(e) = fetch(a.answer.clone()).await?
            {
                consents.push(e);
            }
        }
        self.submit_step(
            Kind::Minutes,
            format!("Minutes of meeting {meeting_id} issued"),
            Step::MinutesIssue(pb::MinutesIssue {
                meeting_id: meeting_id.to_string(),
                proposal,
                draft,
                consents,
            }),
            audience,
            None,
        )
        .await
    }

    pub(crate) async fn key_ring(&self) -> Result<KeyRing, ClientError> {
        Ok(KeyRing::from_registry(&self.list_units().await?))
    }

    /// Verifies, from the consents it carries, that a minutes entry is an
    /// issue every attending unit consented to.
    pub async fn verify_minutes(
        &self,
        entry: &VerifiedEntry,
    ) -> Result<IssuedMinutes, ClientError> {
        let fail = |reason: String| ClientError::Integrity {
            channel: entry.channel().to_string(),
            seq: entry.seq(),
            reason,
        };
        let step = decode_step(entry.message()).map_err(|e| fail(e.to_string()))?;
        let Step::MinutesIssue(issue) = step else {
            return Err(fail("this entry is not a minutes issue".into()));
        };
        let ring = self.key_ring().await?;
        verify_minutes_issue(&entry.message().sender, &issue, &ring)
            .map_err(|e| fail(e.to_string()))
    }

    // ---- joint notices and escalation (联合通报, 上报) ----

    /// Drafts a joint notice (kind joint-notice) or an escalation (kind
    /// escalation) and sends it to the named co-issuers for signature.
    pub async fn draft_joint(
        &self,
        kind: Kind,
        notice_id: &str,
        content: pb::JointContent,
    ) -> Result<PushReceipt, ClientError> {
        let me = self.own_unit()?;
        let audience = audience_of(&dedup(content.co_issuers.clone(), &me), &[]);
        let what = if kind == Kind::Escalation {
            "Escalation"
        } else {
            "Joint notice"
        };
        let case = content.case_id.clone();
        self.submit_step(
            kind,
            format!("{what} draft for co-signature: {}", content.title),
            Step::JointDraft(pb::JointDraft {
                notice_id: notice_id.to_string(),
                content: Some(content),
            }),
            audience,
            Some(&case),
        )
        .await
    }

    /// A joint notice's state: who has co-signed, who has not.
    pub async fn joint_notice(&self, notice_id: &str) -> Result<pb::JointNoticeState, ClientError> {
        hub_read!(
            self,
            workflow.get_joint_notice(pb::GetJointNoticeRequest {
                notice_id: notice_id.to_string(),
            })
        )
        .await
    }

    /// Co-signs a draft this unit is named co-issuer of, after checking the
    /// drafter's signature: the co-signature names the content's digest.
    pub async fn co_sign(&self, notice_id: &str) -> Result<PushReceipt, ClientError> {
        let n = self.joint_notice(notice_id).await?;
        let pin = n
            .draft
            .ok_or_else(|| workflow_error(format!("notice {notice_id} has no draft")))?;
        // The content signed is the one in the drafter's signed entry, not
        // the hub's summary of it.
        let draft = self.get_entry(&pin.channel, pin.seq).await?;
        let Ok(Step::JointDraft(d)) = decode_step(draft.message()) else {
            return Err(workflow_error(format!(
                "{}:{} is not a joint draft",
                pin.channel, pin.seq
            )));
        };
        let content = d.content.unwrap_or_default();
        self.submit_step(
            Kind::CoSignature,
            format!("Co-signature of {}", content.title),
            Step::CoSignature(pb::CoSignature {
                notice_id: notice_id.to_string(),
                draft: Some(draft.pin()),
                content_digest: content_digest(&content).to_vec(),
            }),
            audience_of(std::slice::from_ref(&n.drafter), &[]),
            Some(&content.case_id),
        )
        .await
    }

    /// Sends the notice out (the drafter): content, draft and every
    /// co-signature travel together, to the audience the co-issuers signed.
    pub async fn release_joint(&self, notice_id: &str) -> Result<PushReceipt, ClientError> {
        let n = self.joint_notice(notice_id).await?;
        let pin = n
            .draft
            .ok_or_else(|| workflow_error(format!("notice {notice_id} has no draft")))?;
        let draft = as_entry(self.get_entry(&pin.channel, pin.seq).await?);
        let mut co_signatures = Vec::new();
        for p in &n.co_signatures {
            co_signatures.push(as_entry(self.get_entry(&p.channel, p.seq).await?));
        }
        let content = n.content.unwrap_or_default();
        // The source travels with the release so recipients check it.
        let source = match &content.source_entry {
            Some(r) => Some(as_entry(self.get_entry(&r.channel, r.seq).await?)),
            None => None,
        };
        let kind = Kind::try_from(n.kind).unwrap_or(Kind::JointNotice);
        self.submit_step(
            kind,
            content.title.clone(),
            Step::JointRelease(pb::JointRelease {
                notice_id: notice_id.to_string(),
                draft: Some(draft),
                co_signatures,
                source,
            }),
            content.audience.clone().unwrap_or_default(),
            Some(&content.case_id),
        )
        .await
    }

    /// Verifies every co-signature a released notice carries, and the
    /// source entry it embeds (required for an escalation), each under a
    /// key valid at its entry's hub time.
    pub async fn verify_joint_release(
        &self,
        entry: &VerifiedEntry,
    ) -> Result<ReleasedNotice, ClientError> {
        let fail = |reason: String| ClientError::Integrity {
            channel: entry.channel().to_string(),
            seq: entry.seq(),
            reason,
        };
        let step = decode_step(entry.message()).map_err(|e| fail(e.to_string()))?;
        let Step::JointRelease(release) = step else {
            return Err(fail("this entry is not a released joint notice".into()));
        };
        let ring = self.key_ring().await?;
        let sender = &entry.message().sender;
        let released = if entry.message().kind == Kind::Escalation as i32 {
            verify_escalation(sender, &release, &ring)
        } else {
            verify_joint_release(sender, &release, &ring)
        }
        .map_err(|e| fail(e.to_string()))?;
        if entry.message().audience != released.content.audience {
            return Err(fail(
                "the notice went to another audience than the co-issuers signed".into(),
            ));
        }
        Ok(released)
    }

    // ---- liaisons (联络员) ----

    /// Reports this unit's liaison to the offices of `mechanisms`.
    pub async fn report_liaison(
        &self,
        mechanisms: &[String],
        liaison: pb::LiaisonChange,
    ) -> Result<PushReceipt, ClientError> {
        let subject = format!("Liaison: {} ({})", liaison.name, liaison.title);
        self.submit_step(
            Kind::LiaisonChange,
            subject,
            Step::LiaisonChange(liaison),
            audience_of(&[], mechanisms),
            None,
        )
        .await
    }

    /// The liaison directory of a mechanism as its office sees it (the
    /// office's own mechanism when empty).
    pub async fn liaisons(&self, mechanism: &str) -> Result<pb::ListLiaisonsResponse, ClientError> {
        hub_read!(
            self,
            workflow.list_liaisons(pb::ListLiaisonsRequest {
                mechanism: mechanism.to_string(),
            })
        )
        .await
    }

    // ---- statistics (统计) ----

    /// The statistics of a mechanism for [since, until) as of a time (0 =
    /// now), from the hub's own records.
    pub async fn compute_statistics(
        &self,
        mechanism: &str,
        since_micros: i64,
        until_micros: i64,
        as_of_micros: i64,
    ) -> Result<pb::StatisticsReport, ClientError> {
        hub_read!(
            self,
            workflow.compute_statistics(pb::ComputeStatisticsRequest {
                mechanism: mechanism.to_string(),
                since_micros,
                until_micros,
                as_of_micros,
            })
        )
        .await
    }

    /// Signs a report and circulates it to the mechanism and its office;
    /// the hub refuses figures that differ from its records.
    pub async fn circulate_statistics(
        &self,
        report: pb::StatisticsReport,
    ) -> Result<PushReceipt, ClientError> {
        let mechanism = report.mechanism.clone();
        let audience = pb::Audience {
            mechanisms: vec![mechanism.clone()],
            offices: vec![mechanism.clone()],
            ..Default::default()
        };
        self.submit_step(
            Kind::Statistics,
            format!(
                "Statistics of {mechanism}, {} to {}",
                crate::format_micros(report.since_micros),
                crate::format_micros(report.until_micros)
            ),
            Step::Statistics(report),
            audience,
            None,
        )
        .await
    }

    // ---- cases (案件) ----

    /// The entries of a case this client may see, oldest first, each
    /// verified (signature and leaf hash) like any delivery.
    pub async fn case(&self, case_id: &str) -> Result<Vec<VerifiedEntry>, ClientError> {
        let r = hub_read!(
            self,
            workflow.show_case(pb::ShowCaseRequest {
                case_id: case_id.to_string(),
            })
        )
        .await?;
        let mut out = Vec::with_capacity(r.entries.len());
        for e in r.entries {
            let v = self
                .verify_delivery(pb::Delivery {
                    entry: e.entry,
                    leaf_hash: e.leaf_hash,
                    cursor: 0,
                    ..Default::default()
                })
                .await?;
            let linked = v
                .message()
                .references
                .as_ref()
                .is_some_and(|r| r.case_id == case_id);
            if !linked {
                return Err(ClientError::Integrity {
                    channel: v.channel().to_string(),
                    seq: v.seq(),
                    reason: format!("served as an entry of case {case_id} but names another case"),
                });
            }
            out.push(v);
        }
        // Like every delivered entry: proven in a verified checkpoint.
        if self.verifies_inclusion() && !out.is_empty() {
            self.prove_included(&out.iter().collect::<Vec<_>>()).await?;
        }
        Ok(out)
    }
}
