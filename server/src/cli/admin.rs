//! `tongbao-hub admin ...`: an operator's calls to a running hub's `Admin`
//! service, with the operator certificate of the PKI directory. Without
//! `--operator`, a command signs in as the operator `DIR/hub.toml`
//! registers with the role the command needs (`crate::roles`), so each
//! duty has its own identity.

use crate::roles::{Duty, Method};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::fmt::Write as _;
use std::path::PathBuf;
use tongbao_proto::format_micros;
use tongbao_proto::pb;
use tongbao_proto::pb::admin_client::AdminClient;
use tongbao_proto::pb::directory_client::DirectoryClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Where the hub is and which operator certificate to use.
#[derive(Args)]
pub struct AdminConnection {
    /// The operator's admin directory, holding ca.pem, hub.toml and
    /// operators/NAME/ (its `tongbao keys init` directory); an example
    /// set's PKI directory is one.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The operator whose certificate (operators/NAME/) signs in [default:
    /// the one DIR/hub.toml registers with the role the command needs].
    #[arg(long, value_name = "NAME")]
    operator: Option<String>,
    /// Hub URL [default: https:// + the listen address of DIR/hub.toml].
    #[arg(long, value_name = "URL")]
    hub: Option<String>,
}

impl AdminConnection {
    /// The connection of a command that is not under `admin` (`backup`).
    pub(super) fn new(dir: PathBuf, operator: Option<String>, hub: Option<String>) -> Self {
        Self { dir, operator, hub }
    }
}

/// The operator's calls.
#[derive(Subcommand)]
pub enum AdminCommand {
    /// Refuse every call of a unit (and close its connections) until reinstated.
    Suspend {
        #[arg(long, value_name = "ID")]
        unit: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Let a suspended unit call again.
    Reinstate {
        #[arg(long, value_name = "ID")]
        unit: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Register a unit's signing key: the base64 public key the unit handed
    /// over (`tongbao keys init` or `tongbao keys signing-key` printed it).
    RegisterKey {
        #[arg(long, value_name = "ID")]
        unit: String,
        #[arg(long, value_name = "BASE64")]
        public_key: String,
        /// Valid from this time (RFC 3339, e.g. 2026-12-01T08:00:00Z) [default: now].
        #[arg(long, value_name = "TIME")]
        valid_from: Option<String>,
        /// Date the key's validity into the past (a --valid-from before now),
        /// for this reason; both are recorded in the admin trail.
        #[arg(long, value_name = "TEXT")]
        backdate_reason: Option<String>,
    },
    /// Retire a unit's signing key now (or at --at): its later signatures are refused.
    RetireKey {
        #[arg(long, value_name = "ID")]
        unit: String,
        #[arg(long, value_name = "KEY_ID")]
        key_id: String,
        /// Retired as of this time (RFC 3339) [default: now].
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// End the key's validity in the past (an --at before now), for
        /// this reason; both are recorded in the admin trail.
        #[arg(long, value_name = "TEXT")]
        backdate_reason: Option<String>,
    },
    /// Add a unit to a mechanism from now on.
    AddMember {
        #[arg(long, value_name = "MECHANISM")]
        mechanism: String,
        #[arg(long, value_name = "ID")]
        unit: String,
    },
    /// The members of a mechanism now.
    Members {
        #[arg(long, value_name = "MECHANISM")]
        mechanism: String,
    },
    /// Re-read the CA, the CRL and the hub's certificate and key now.
    ReloadTls,
    /// Certificates of the hub's CA index ending within DAYS.
    Expiring {
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// The admin audit trail.
    Audit {
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

impl AdminCommand {
    /// The call this command makes, whose role it needs.
    fn method(&self) -> Method {
        match self {
            Self::Suspend { .. } => Method::SuspendUnit,
            Self::Reinstate { .. } => Method::ReinstateUnit,
            Self::RegisterKey { .. } => Method::RegisterKey,
            Self::RetireKey { .. } => Method::RetireKey,
            Self::AddMember { .. } => Method::AddMember,
            Self::Members { .. } => Method::MembersAt,
            Self::ReloadTls => Method::ReloadTls,
            Self::Expiring { .. } => Method::ListExpiring,
            Self::Audit { .. } => Method::ListAudit,
        }
    }
}

/// The operator to sign in as: the one named, or the first that hub.toml
/// registers with the role the call needs and whose certificate is in DIR.
fn choose_operator(
    c: &AdminConnection,
    config: Option<&crate::HubConfig>,
    method: Method,
) -> anyhow::Result<String> {
    if let Some(name) = &c.operator {
        return Ok(name.clone());
    }
    let row = method.row();
    let Duty::Role(role) = row.duty else {
        anyhow::bail!("{} is a unit's own call; no operator makes it", row.path);
    };
    let config = config.context(
        "no --operator given and DIR/hub.toml cannot be read to find one by role; name one with --operator NAME",
    )?;
    let operators = config.operator_roles()?;
    operators
        .with_role(role)
        .find(|n| c.dir.join("operators").join(n).join("cert.pem").is_file())
        .map(str::to_string)
        .with_context(|| {
            format!(
                "{} needs the {role} role, and DIR/hub.toml registers no operator of that role whose certificate is in DIR/operators/; name one with --operator NAME",
                row.path
            )
        })
}

pub(super) async fn connect(c: &AdminConnection, method: Method) -> anyhow::Result<Channel> {
    let dir = &c.dir;
    let config = crate::HubConfig::load(&dir.join("hub.toml"));
    let operator = choose_operator(c, config.as_ref().ok(), method)?;
    let op = dir.join("operators").join(&operator);
    let read =
        |p: PathBuf| std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()));
    let hub = match (&c.hub, config) {
        (Some(h), _) => h.clone(),
        (None, Ok(cfg)) => format!("https://{}", cfg.hub.listen),
        (None, Err(e)) => {
            return Err(e).context("no --hub given and DIR/hub.toml cannot be read");
        }
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(dir.join("ca.pem"))?))
        .identity(Identity::from_pem(
            read(op.join("cert.pem"))?,
            read(op.join("key.pem"))?,
        ))
        .domain_name(crate::pki::HUB_SERVER_NAME);
    Channel::from_shared(hub.clone())?
        .tls_config(tls)?
        .connect()
        .await
        .with_context(|| format!("cannot reach the hub at {hub} as operator {operator}"))
}

pub(super) fn refused(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the hub refused ({:?}): {}", s.code(), s.message())
}

/// Runs an admin command; returns its report.
pub fn run(conn: AdminConnection, command: AdminCommand) -> anyhow::Result<String> {
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let channel = connect(&conn, command.method()).await?;
        let mut admin = AdminClient::new(channel.clone());
        let mut out = String::new();
        match command {
            AdminCommand::Suspend { unit, reason } => {
                admin
                    .suspend_unit(pb::SuspendUnitRequest {
                        unit: unit.clone(),
                        reason,
                    })
                    .await
                    .map_err(refused)?;
                writeln!(
                    out,
                    "Suspended unit {unit}: its open connections were closed and its calls are refused."
                )?;
                writeln!(
                    out,
                    "Next: tell the department; reinstate it with `tongbao-hub admin --dir DIR reinstate --unit {unit}`."
                )?;
            }
            AdminCommand::Reinstate { unit, reason } => {
                admin
                    .reinstate_unit(pb::ReinstateUnitRequest {
                        unit: unit.clone(),
                        reason,
                    })
                    .await
                    .map_err(refused)?;
                writeln!(out, "Reinstated unit {unit}; it may connect and push again.")?;
            }
            AdminCommand::RegisterKey {
                unit,
                public_key,
                valid_from,
                backdate_reason,
            } => {
                let valid_from_micros = match &valid_from {
                    Some(t) => parse_time("--valid-from", t)?,
                    None => 0,
                };
                let r = admin
                    .register_key(pb::RegisterKeyRequest {
                        unit: unit.clone(),
                        public_key,
                        valid_from_micros,
                        valid_until_micros: 0,
                        backdate: backdate_reason.is_some(),
                        backdate_reason: backdate_reason.unwrap_or_default(),
                    })
                    .await
                    .map_err(refused)?
                    .into_inner();
                writeln!(
                    out,
                    "Registered signing key {} of unit {unit}, valid from {}.",
                    r.key_id,
                    format_micros(r.valid_from_micros)
                )?;
                writeln!(
                    out,
                    "Next: tell the department; its system signs with the new key once it is in its signing_key file (the client picks it up by itself). Then retire the old key with `tongbao-hub admin --dir DIR retire-key --unit {unit} --key-id OLD`."
                )?;
            }
            AdminCommand::RetireKey {
                unit,
                key_id,
                at,
                backdate_reason,
            } => {
                let at_micros = match &at {
                    Some(t) => parse_time("--at", t)?,
                    None => 0,
                };
                let r = admin
                    .retire_key(pb::RetireKeyRequest {
                        unit: unit.clone(),
                        key_id: key_id.clone(),
                        at_micros,
                        backdate: backdate_reason.is_some(),
                        backdate_reason: backdate_reason.unwrap_or_default(),
                    })
                    .await
                    .map_err(refused)?
                    .into_inner();
                writeln!(
                    out,
                    "Retired signing key {key_id} of unit {unit} at {}.",
                    format_micros(r.valid_until_micros)
                )?;
                writeln!(
                    out,
                    "Messages it signed before stay valid; later signatures with it are refused. Check that the department now signs with its new key."
                )?;
            }
            AdminCommand::AddMember { mechanism, unit } => {
                let r = admin
                    .add_member(pb::AddMemberRequest {
                        mechanism: mechanism.clone(),
                        unit: unit.clone(),
                        effective_micros: 0,
                    })
                    .await
                    .map_err(refused)?
                    .into_inner();
                writeln!(
                    out,
                    "Unit {unit} is a member of {mechanism} from {}: messages to the mechanism reach it from then on, earlier ones do not.",
                    format_micros(r.effective_micros)
                )?;
            }
            AdminCommand::Members { mechanism } => {
                let r = DirectoryClient::new(channel)
                    .members_at(pb::MembersAtRequest {
                        mechanism: mechanism.clone(),
                        at_micros: 0,
                    })
                    .await
                    .map_err(refused)?
                    .into_inner();
                writeln!(out, "{mechanism}: {}", r.members.join(", "))?;
            }
            AdminCommand::ReloadTls => {
                let r = admin
                    .reload_tls(pb::ReloadTlsRequest {})
                    .await
                    .map_err(refused)?
                    .into_inner();
                writeln!(out, "Reloaded {}.", r.summary)?;
                writeln!(
                    out,
                    "Closed {} connection(s) of revoked or expired certificates; new handshakes use the new material.",
                    r.connections_closed
                )?;
            }
            AdminCommand::Expiring { days } => {
                let r = admin
                    .list_expiring(pb::ListExpiringRequest { days })
                    .await
                    .map_err(refused)?
                    .into_inner();
                for c in &r.certificates {
                    writeln!(
                        out,
                        "{} serial {} ends {} ({} days left, {})",
                        c.party,
                        c.serial,
                        format_micros(c.not_after_micros),
                        c.days_left,
                        c.state
                    )?;
                }
                writeln!(
                    out,
                    "{} certificate(s) end within {days} days. Renew each with `tongbao-hub pki renew --dir DIR --party URI`.",
                    r.certificates.len()
                )?;
            }
            AdminCommand::Audit { after } => {
                let r = admin
                    .list_audit(pb::ListAuditRequest { after, limit: 1000 })
                    .await
                    .map_err(refused)?
                    .into_inner();
                for a in &r.records {
                    let outcome = if a.code == 0 {
                        "done".to_string()
                    } else {
                        format!("{:?}", tonic::Code::from(a.code))
                    };
                    writeln!(
                        out,
                        "{} {} {} {} [{outcome}] {} -> {}",
                        a.seq,
                        format_micros(a.at_micros),
                        a.actor,
                        a.action,
                        a.detail,
                        a.outcome
                    )?;
                }
            }
        }
        Ok(out)
    })
}

/// An RFC 3339 time as microseconds since the Unix epoch.
fn parse_time(flag: &str, text: &str) -> anyhow::Result<i64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!(
                "{flag} {:?} is not an RFC 3339 time like 2026-12-01T08:00:00Z",
                tongbao_proto::echo::shown(text)
            )
        })?;
    i64::try_from(t.unix_timestamp_nanos() / 1000)
        .with_context(|| format!("{flag} is out of range"))
}
