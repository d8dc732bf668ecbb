//! Fixtures of the mechanisms' workflows that several end-to-end suites
//! share (meetings and minutes, joint notices, escalation, actions, tasks,
//! warnings): the offices and the leading group as clients, a fund
//! meeting and notice, and a signing key retired back in time.

use crate::{BoxError, Role, TestHub, TestResult};
use tongbao_client::{Client, ClientConfig, VerifiedEntry};
use tongbao_proto::pb::{self, Kind, MeetingKind};
use tongbao_server::{Hub, HubConfig};

/// The fund-supervision mechanism (资金监管).
pub const FUND: &str = "fund-supervision";
/// The joint-enforcement mechanism (联合执法), with 13 members.
pub const ENFORCEMENT: &str = "joint-enforcement";

impl TestHub {
    /// Stops the hub, clears its workflow state as a lost index would be,
    /// runs `also` on the stopped hub's config, and starts it again: the
    /// state must come back from the entries.
    pub async fn restart_with_workflow_state_lost(
        &mut self,
        also: impl FnOnce(&HubConfig) -> TestResult,
    ) -> TestResult {
        let config = self.pki.hub_config()?;
        if let Some(hub) = self.hub.take() {
            hub.shutdown().await?;
        }
        crate::clear_workflow_state(&config)?;
        also(&config)?;
        let hub = Hub::start(&config).await?;
        self.addr = hub.addr();
        self.hub = Some(hub);
        Ok(())
    }

    /// The system operator makes `unit` a member of `mechanism` from
    /// `effective_micros` (0: now).
    pub async fn add_member(
        &self,
        mechanism: &str,
        unit: &str,
        effective_micros: i64,
    ) -> Result<(), BoxError> {
        self.operator(Role::System)
            .await?
            .admin()
            .add_member(pb::AddMemberRequest {
                mechanism: mechanism.into(),
                unit: unit.into(),
                effective_micros,
            })
            .await?;
        Ok(())
    }

    /// Rotates `unit`'s signing key, then the security operator dates the
    /// old key's end back to when the entry (channel, seq) was appended (as
    /// if it leaked then). Returns the old key's id.
    pub async fn retire_key_back_to(
        &self,
        client: &Client,
        unit: &str,
        (channel, seq): (&str, u64),
        reason: &str,
    ) -> Result<String, BoxError> {
        let old_key = client
            .list_units()
            .await?
            .units
            .into_iter()
            .find(|u| u.id == unit)
            .and_then(|u| u.keys.into_iter().next())
            .ok_or_else(|| format!("{unit} has no key"))?;
        client
            .rotate_signing_key(tongbao_proto::keys::SigningKey::generate()?)
            .await?;
        let at_micros = client.get_entry(channel, seq).await?.entry.hub_micros;
        self.operator(Role::Security)
            .await?
            .admin()
            .retire_key(pb::RetireKeyRequest {
                unit: unit.into(),
                key_id: old_key.key_id.clone(),
                at_micros,
                backdate: true,
                backdate_reason: reason.into(),
            })
            .await?;
        Ok(old_key.key_id)
    }
}

pub async fn office(t: &TestHub, mechanism: &str) -> Result<Client, BoxError> {
    Ok(Client::connect(&t.pki.office_config(mechanism, t.addr)?).await?)
}

pub async fn leading_group(t: &TestHub) -> Result<Client, BoxError> {
    let path = t
        .pki
        .path()
        .join("leading-group")
        .join("main")
        .join("client.toml");
    Ok(
        Client::connect(&ClientConfig::load(&path)?.with_hub(format!("https://{}", t.addr)))
            .await?,
    )
}

/// The first inbox entry of `kind`, if any.
pub async fn inbox_entry(c: &Client, kind: Kind) -> Result<Option<VerifiedEntry>, BoxError> {
    Ok(c.pull(0, 1000)
        .await?
        .entries
        .into_iter()
        .find(|e| e.message().kind == kind as i32))
}

pub fn answers(m: &pb::MeetingState) -> Vec<(String, i32)> {
    m.answers
        .iter()
        .map(|a| (a.unit.clone(), a.state))
        .collect()
}

pub fn fund_meeting(id: &str) -> pb::MeetingProposal {
    pb::MeetingProposal {
        meeting_id: id.into(),
        mechanisms: vec![FUND.into()],
        kind: MeetingKind::Partial as i32,
        title: "Abnormal fund movements, Q4".into(),
        attending_units: vec!["finance".into(), "tax".into(), "pbc-taiyuan".into()],
        date_micros: tongbao_proto::now_micros(),
        agenda: vec!["Review of Q4 leads".into()],
    }
}

/// Where issued minutes of [`fund_meeting`] go: its attending units and
/// the office.
pub fn fund_minutes_audience() -> pb::Audience {
    pb::Audience {
        units: fund_meeting("").attending_units,
        offices: vec![FUND.into()],
        ..Default::default()
    }
}

/// Waits until the wall clock is past `micros`.
pub async fn wait_until_past(micros: i64) {
    while tongbao_proto::now_micros() <= micros {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub fn to_lead_and_office() -> pb::Audience {
    pb::Audience {
        units: vec!["civil-affairs".into()],
        offices: vec![FUND.into()],
        ..Default::default()
    }
}

pub async fn office_of_other(t: &TestHub) -> Result<Client, BoxError> {
    office(t, ENFORCEMENT).await
}

/// The issue step of a meeting with one attending unit's consent left out.
pub async fn forged_issue_without(
    lead: &Client,
    meeting: &str,
    unit: &str,
) -> Result<pb::workflow_step::Step, BoxError> {
    let m = lead.meeting(meeting).await?;
    let get = |p: Option<pb::EntryPin>| async move {
        let p = p.ok_or("missing pin")?;
        Ok::<_, BoxError>(lead.get_entry(&p.channel, p.seq).await?.into_entry())
    };
    let mut consents = Vec::new();
    for a in m.answers.iter().filter(|a| a.unit != unit) {
        consents.push(get(a.answer.clone()).await?);
    }
    Ok(pb::workflow_step::Step::MinutesIssue(pb::MinutesIssue {
        meeting_id: meeting.into(),
        proposal: Some(get(m.proposal_entry).await?),
        draft: Some(get(m.current_draft).await?),
        consents,
    }))
}

pub fn fund_notice() -> pb::JointContent {
    pb::JointContent {
        title: "Major abnormal fund movement: Foundation Y".into(),
        text: "CNY 30m moved to accounts abroad in 3 days.".into(),
        mechanism: FUND.into(),
        co_issuers: vec!["tax".into(), "pbc-taiyuan".into()],
        audience: Some(pb::Audience {
            mechanisms: vec![FUND.into()],
            offices: vec![FUND.into()],
            ..Default::default()
        }),
        case_id: "C-2026-7".into(),
        ..Default::default()
    }
}

/// An entry as the hub serves it, without the client library's checks.
pub async fn raw_entry(t: &TestHub, unit: &str, p: &pb::EntryPin) -> Result<pb::Entry, BoxError> {
    let mut exchange =
        pb::exchange_client::ExchangeClient::new(crate::raw_channel(&t.pki, unit, t.addr).await?);
    Ok(exchange
        .get_entry(pb::GetEntryRequest {
            channel: p.channel.clone(),
            seq: p.seq,
        })
        .await?
        .into_inner()
        .entry
        .ok_or("no entry")?)
}

pub fn source(r: &tongbao_client::PushReceipt) -> Option<pb::EntryRef> {
    Some(pb::EntryRef {
        channel: r.channel.clone(),
        seq: r.seq,
    })
}

/// A fund-supervision meeting taken to a circulated draft; returns the
/// draft's receipt.
pub async fn drafted_fund_minutes(
    t: &TestHub,
    id: &str,
) -> Result<tongbao_client::PushReceipt, BoxError> {
    let lead = t.unit("civil-affairs").await?;
    lead.propose_meeting(fund_meeting(id)).await?;
    lead.settle_agenda(id, vec!["Review".into()], vec![])
        .await?;
    Ok(lead.circulate_minutes(id, "Agreed: escalate.").await?)
}

pub async fn consent_all(t: &TestHub, id: &str) -> TestResult {
    for u in ["finance", "tax", "pbc-taiyuan"] {
        t.unit(u)
            .await?
            .answer_current_minutes(id, true, "")
            .await?;
    }
    Ok(())
}

pub fn escalation(mechanism: &str, case: &str, from: Option<pb::EntryRef>) -> pb::JointContent {
    pb::JointContent {
        title: "Foundation Y: coordinated measures needed".into(),
        text: "Requesting the leading group's decision.".into(),
        mechanism: mechanism.into(),
        co_issuers: vec!["public-security".into()],
        audience: Some(pb::Audience {
            leading_group: true,
            ..Default::default()
        }),
        case_id: case.into(),
        source_entry: from,
    }
}
