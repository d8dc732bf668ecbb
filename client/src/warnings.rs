//! Organizations and joint warnings (联合预警和惩戒) from a departmental
//! system: everything about an organization this unit may see, and the
//! warnings about it with each member's measures.
//!
//! Every entry is verified like any delivery, and an answer or a lift is
//! checked against the warning entry it pins with
//! `tongbao_proto::warning::verify_answer`, trusting nothing the hub says.

use crate::client::hub_read;
use crate::{Client, ClientError, Draft, PushReceipt, VerifiedEntry};
use tongbao_proto::pb::{self, Kind, workflow_step::Step};
use tongbao_proto::warning::{VerifiedAnswer, verify_answer};
use tongbao_proto::workflow::{CONTENT_TYPE, decode_step, encode_step};

/// What a new joint warning says.
#[derive(Debug, Clone, Default)]
pub struct NewWarning {
    pub warning_id: String,
    pub mechanism: String,
    pub organization: pb::Organization,
    pub level: pb::WarningLevel,
    pub grounds: String,
    /// Entries this unit sent or received that support the warning.
    pub evidence: Vec<pb::EntryPin>,
}

fn integrity(entry: &VerifiedEntry, reason: String) -> ClientError {
    ClientError::Integrity {
        channel: entry.channel().to_string(),
        seq: entry.seq(),
        reason,
    }
}

/// How a warning's organization is shown: its name, else its code.
fn label(o: &pb::Organization) -> &str {
    if o.name.is_empty() {
        &o.credit_code
    } else {
        &o.name
    }
}

impl Client {
    /// Signs and submits a warning step about `org` to `audience`.
    async fn submit_about(
        &self,
        kind: Kind,
        subject: String,
        step: Step,
        audience: pb::Audience,
        org: pb::Organization,
    ) -> Result<PushReceipt, ClientError> {
        let mut draft = Draft::new(kind, subject, encode_step(step))
            .with_content_type(CONTENT_TYPE)
            .about(org.credit_code, org.name);
        draft.audience = audience;
        let signed = self.sign(draft)?;
        self.submit_signed(signed).await
    }

    /// The entries naming an organization (by credit code) this client
    /// may see, oldest first, each verified like any delivery.
    pub async fn organization(&self, credit_code: &str) -> Result<Vec<VerifiedEntry>, ClientError> {
        let r = hub_read!(
            self,
            workflow.show_organization(pb::ShowOrganizationRequest {
                credit_code: credit_code.to_string(),
            })
        )
        .await?;
        let mut out = Vec::with_capacity(r.entries.len());
        for e in r.entries {
            let v = self
                .verify_delivery(pb::Delivery {
                    entry: e.entry,
                    leaf_hash: e.leaf_hash,
                    ..Default::default()
                })
                .await?;
            let names = v
                .message()
                .references
                .as_ref()
                .is_some_and(|r| r.organizations.iter().any(|o| o.credit_code == credit_code));
            if !names {
                return Err(integrity(
                    &v,
                    format!("served as an entry about {credit_code} but does not name it"),
                ));
            }
            out.push(v);
        }
        if self.verifies_inclusion() && !out.is_empty() {
            self.prove_included(&out.iter().collect::<Vec<_>>()).await?;
        }
        Ok(out)
    }

    /// Issues a joint warning to every member of the mechanism and its
    /// office.
    pub async fn issue_warning(&self, w: NewWarning) -> Result<PushReceipt, ClientError> {
        let audience = pb::Audience {
            mechanisms: vec![w.mechanism.clone()],
            offices: vec![w.mechanism.clone()],
            ..Default::default()
        };
        let subject = format!("Joint warning: {}", label(&w.organization));
        let step = Step::JointWarning(pb::JointWarning {
            warning_id: w.warning_id,
            mechanism: w.mechanism,
            level: w.level as i32,
            grounds: w.grounds,
            evidence: w.evidence,
        });
        self.submit_about(Kind::JointWarning, subject, step, audience, w.organization)
            .await
    }

    /// A warning's state as the hub keeps it (another member's measures
    /// only where they were addressed to this unit too).
    pub async fn warning(&self, warning_id: &str) -> Result<pb::WarningState, ClientError> {
        hub_read!(
            self,
            workflow.get_warning(pb::GetWarningRequest {
                warning_id: warning_id.to_string(),
            })
        )
        .await
    }

    /// The warnings this party took part in (an office: its mechanism's),
    /// of one organization or all (empty code), oldest first.
    pub async fn warnings(
        &self,
        credit_code: &str,
        active_only: bool,
    ) -> Result<Vec<pb::WarningState>, ClientError> {
        Ok(hub_read!(
            self,
            workflow.list_warnings(pb::ListWarningsRequest {
                credit_code: credit_code.to_string(),
                active_only,
            })
        )
        .await?
        .warnings)
    }

    /// Answers a warning with the measures this unit applied (none: give
    /// the reason), to every unit the warning went to and the office.
    pub async fn answer_warning(
        &self,
        warning_id: &str,
        measures: Vec<String>,
        reason: &str,
    ) -> Result<PushReceipt, ClientError> {
        let w = self.warning(warning_id).await?;
        let me = self.own_unit()?;
        let mut units: Vec<String> = w.answers.iter().map(|a| a.unit.clone()).collect();
        units.push(w.issuer.clone());
        units.retain(|u| *u != me);
        let audience = pb::Audience {
            units,
            offices: vec![w.mechanism.clone()],
            ..Default::default()
        };
        let org = w.organization.clone().unwrap_or_default();
        let subject = format!("Measures on warning {warning_id}: {}", label(&org));
        let step = Step::WarningMeasures(pb::WarningMeasures {
            warning_id: warning_id.to_string(),
            warning: w.warning.clone(),
            measures,
            reason: reason.to_string(),
        });
        self.submit_about(Kind::WarningMeasures, subject, step, audience, org)
            .await
    }

    /// Lifts a warning this unit issued, telling everyone it went to.
    pub async fn lift_warning(
        &self,
        warning_id: &str,
        reason: &str,
    ) -> Result<PushReceipt, ClientError> {
        let w = self.warning(warning_id).await?;
        let audience = pb::Audience {
            units: w.answers.iter().map(|a| a.unit.clone()).collect(),
            offices: vec![w.mechanism.clone()],
            ..Default::default()
        };
        let org = w.organization.clone().unwrap_or_default();
        let subject = format!("Warning {warning_id} lifted: {}", label(&org));
        let step = Step::WarningLift(pb::WarningLift {
            warning_id: warning_id.to_string(),
            warning: w.warning.clone(),
            reason: reason.to_string(),
        });
        self.submit_about(Kind::WarningLift, subject, step, audience, org)
            .await
    }

    /// Checks an answer or a lift against the warning entry it pins
    /// (fetched and verified), under keys valid at each entry's hub time.
    pub async fn verify_warning_answer(
        &self,
        answer: &VerifiedEntry,
    ) -> Result<VerifiedAnswer, ClientError> {
        let step = decode_step(answer.message()).map_err(|e| integrity(answer, e.to_string()))?;
        let pin = match &step {
            Step::WarningMeasures(a) => a.warning.clone(),
            Step::WarningLift(l) => l.warning.clone(),
            _ => None,
        }
        .ok_or_else(|| integrity(answer, "this entry answers or lifts no warning".into()))?;
        let warning = self.get_entry(&pin.channel, pin.seq).await?;
        let ring = self.key_ring().await?;
        verify_answer(&warning.entry, &answer.entry, &ring)
            .map_err(|e| integrity(answer, e.to_string()))
    }
}
