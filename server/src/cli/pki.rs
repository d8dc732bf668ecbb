//! `tongbao-hub pki`: the operator's CA commands, run on the CA's
//! directory; each writes one report (see `report.rs`).

use super::report::{print_crl, print_issue, print_list, print_revoke};
use super::templates::{PKI_INIT, PKI_INIT_CA, fill};
use crate::pki::index::display_time;
use crate::pki::{
    DEFAULT_CRL_DAYS, InitOptions, Party, PkiError, RevocationReason, RevokeTarget, init, init_ca,
};
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use std::io::Write as _;
use std::path::PathBuf;
use tongbao_proto::identity::Principal;

#[derive(Subcommand)]
pub(super) enum PkiCommand {
    /// Create a CA, the hub's certificate and keys and hub.toml; with
    /// --example, a whole example set with every party's keys.
    Init {
        /// Where to create the PKI and the configs.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: std::net::SocketAddr,
        /// Validity of the CA (and, with --example, of every certificate),
        /// in days; the hub's certificate gets at most 365.
        #[arg(long, default_value_t = 11 * 366, value_parser = days_in_range())]
        days: i64,
        /// Make an example set: certificates, TLS and signing keys for
        /// every party of the source document (tests and demonstrations
        /// only: whoever holds the directory can act as any party).
        #[arg(long)]
        example: bool,
        /// Overwrite an existing set.
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate for a party: from its own request (--csr), or
    /// with a TLS key made here (test sets); existing files are kept as
    /// backups. Never makes a signing key.
    Issue {
        /// The PKI directory (made by `pki init`, holding ca.pem and ca.key).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        party: PartyArgs,
        /// Validity in days [default: 365].
        #[arg(long, value_parser = days_in_range())]
        days: Option<i64>,
        /// Common name in the certificate [default: the party's known name].
        #[arg(long)]
        name: Option<String>,
        /// The party's certificate request (PEM, from `tongbao keys init`):
        /// checked to be signed by its key and to name exactly this party.
        #[arg(long, value_name = "FILE")]
        csr: Option<PathBuf>,
    },
    /// A new certificate for a party that has one (from its new request
    /// with --csr); the old one stays valid until it expires or is revoked.
    Renew {
        /// The PKI directory (made by `pki init`, holding ca.pem and ca.key).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        party: PartyArgs,
        /// Validity in days [default: that of the party's latest certificate].
        #[arg(long, value_parser = days_in_range())]
        days: Option<i64>,
        /// The party's new certificate request (PEM, from `tongbao keys init`).
        #[arg(long, value_name = "FILE")]
        csr: Option<PathBuf>,
    },
    /// Revoke a certificate, or every valid certificate of a party, and
    /// rewrite the CRL.
    Revoke {
        /// The PKI directory (made by `pki init`, holding ca.pem and ca.key).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        target: RevokeArgs,
        /// Why it is revoked.
        #[arg(long, default_value = "unspecified", ignore_case = true)]
        reason: Reason,
        /// Validity of the new CRL, in days.
        #[arg(long, default_value_t = DEFAULT_CRL_DAYS, value_parser = days_in_range())]
        crl_days: i64,
    },
    /// Rewrite crl.pem from the CA index (run it before the CRL's next update).
    Crl {
        /// The PKI directory (made by `pki init`, holding ca.pem and ca.key).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Validity of the CRL, in days.
        #[arg(long, default_value_t = DEFAULT_CRL_DAYS, value_parser = days_in_range())]
        days: i64,
    },
    /// List the CA's certificates with their expiry and state.
    List {
        /// The PKI directory (made by `pki init`, holding ca.pem and ca.key).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Only current certificates ending within this ("30d", "12h"),
        /// expired ones included.
        #[arg(long, value_name = "DURATION", value_parser = parse_window)]
        expiring: Option<time::Duration>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Which party a certificate is for: exactly one of these.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(super) struct PartyArgs {
    /// A unit (department) by id, e.g. tax.
    #[arg(long, value_name = "ID")]
    unit: Option<String>,
    /// The office of a mechanism, e.g. fund-supervision.
    #[arg(long, value_name = "MECHANISM")]
    office: Option<String>,
    /// An operator by name, e.g. ops.
    #[arg(long, value_name = "NAME")]
    operator: Option<String>,
    /// The leading group.
    #[arg(long)]
    leading_group: bool,
    /// The hub's own server certificate.
    #[arg(long)]
    hub: bool,
    /// Any party by URI: urn:tongbao:unit:<id>, urn:tongbao:office:<mechanism>,
    /// urn:tongbao:operator:<name>, urn:tongbao:leading-group, urn:tongbao:hub.
    #[arg(long, value_name = "URI")]
    party: Option<String>,
}

impl PartyArgs {
    fn resolve(&self) -> Result<Party, PkiError> {
        if let Some(id) = &self.unit {
            Party::unit(id)
        } else if let Some(m) = &self.office {
            Party::office(m)
        } else if let Some(n) = &self.operator {
            Party::operator(n)
        } else if self.leading_group {
            Ok(Party::Client(Principal::LeadingGroup))
        } else if self.hub {
            Ok(Party::Hub)
        } else {
            Party::parse(self.party.as_deref().unwrap_or_default())
        }
    }
}

/// What to revoke: one serial, or every valid certificate of one party.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(super) struct RevokeArgs {
    /// The certificate's serial, hex (as `pki list` shows it).
    #[arg(long, value_name = "HEX")]
    serial: Option<String>,
    /// Every valid certificate of this unit.
    #[arg(long, value_name = "ID")]
    unit: Option<String>,
    /// Every valid certificate of this mechanism's office.
    #[arg(long, value_name = "MECHANISM")]
    office: Option<String>,
    /// Every valid certificate of this operator.
    #[arg(long, value_name = "NAME")]
    operator: Option<String>,
    /// Every valid certificate of the leading group.
    #[arg(long)]
    leading_group: bool,
    /// Every valid certificate of the party with this URI.
    #[arg(long, value_name = "URI")]
    party: Option<String>,
}

impl RevokeArgs {
    fn resolve(&self) -> Result<RevokeTarget, PkiError> {
        if let Some(s) = &self.serial {
            return Ok(RevokeTarget::Serial(s.clone()));
        }
        PartyArgs {
            unit: self.unit.clone(),
            office: self.office.clone(),
            operator: self.operator.clone(),
            leading_group: self.leading_group,
            hub: false,
            party: self.party.clone(),
        }
        .resolve()
        .map(RevokeTarget::Party)
    }
}

/// Why a certificate is revoked, as RFC 5280 names the reasons.
#[derive(Clone, Copy, ValueEnum)]
pub(super) enum Reason {
    #[value(name = "keyCompromise")]
    KeyCompromise,
    #[value(name = "superseded")]
    Superseded,
    #[value(name = "cessationOfOperation")]
    CessationOfOperation,
    #[value(name = "unspecified")]
    Unspecified,
}

impl From<Reason> for RevocationReason {
    fn from(r: Reason) -> Self {
        match r {
            Reason::KeyCompromise => RevocationReason::KeyCompromise,
            Reason::Superseded => RevocationReason::Superseded,
            Reason::CessationOfOperation => RevocationReason::CessationOfOperation,
            Reason::Unspecified => RevocationReason::Unspecified,
        }
    }
}

/// Most days any validity may span: a CA of a hundred years is already a
/// mistake, and a larger number would overflow the date arithmetic.
const MAX_DAYS: i64 = 36_500;

/// A validity in days: 1 to [`MAX_DAYS`].
fn days_in_range() -> clap::builder::RangedI64ValueParser<i64> {
    clap::value_parser!(i64).range(1..=MAX_DAYS)
}

/// "30d", "12h", "90m", or a bare number of days.
fn parse_window(s: &str) -> Result<time::Duration, String> {
    let micros = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<i64>()
            .ok()
            .and_then(|d| d.checked_mul(86_400_000_000))
    } else {
        crate::config::parse_duration_micros(s)
    };
    micros
        .map(time::Duration::microseconds)
        .ok_or_else(|| format!("{s:?} is not a duration like \"30d\", \"12h\" or \"90m\""))
}

/// Runs a `pki` command; its report goes to stdout in one write, and a
/// closed stdout (`| head`) is not an error.
pub(super) fn pki(command: PkiCommand) -> anyhow::Result<()> {
    let mut out = String::new();
    let result = pki_into(command, &mut out);
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            result.and(Err(e).context("cannot write to stdout"))
        }
        _ => result,
    }
}

fn pki_into(command: PkiCommand, out: &mut String) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init {
            dir,
            listen,
            days,
            example,
            force,
        } => {
            let opts = InitOptions {
                listen,
                days,
                force,
                ..Default::default()
            };
            let summary = if example {
                init(&dir, &opts)?
            } else {
                init_ca(&dir, &opts)?
            };
            let crl_until = summary
                .crl
                .next_update
                .map(display_time)
                .unwrap_or_default();
            say!(
                out,
                "{}",
                fill(
                    if example { PKI_INIT } else { PKI_INIT_CA },
                    &[
                        ("dir", &dir.display()),
                        ("files", &summary.files),
                        ("units", &summary.units.len()),
                        ("index", &dir.join(crate::pki::INDEX_FILE).display()),
                        ("crl", &summary.crl.path.display()),
                        ("crl_until", &crl_until),
                        ("hub_config", &summary.hub_config.display()),
                    ],
                )
            );
            Ok(())
        }
        PkiCommand::Issue {
            dir,
            party,
            days,
            name,
            csr,
        } => {
            let party = party.resolve()?;
            let report = match &csr {
                Some(csr) => {
                    crate::pki::issue_from_request(&dir, &party, csr, days, name.as_deref())?
                }
                None => crate::pki::issue(&dir, &party, days, name.as_deref())?,
            };
            print_issue(&mut *out, &dir, &report, false);
            Ok(())
        }
        PkiCommand::Renew {
            dir,
            party,
            days,
            csr,
        } => {
            let party = party.resolve()?;
            let report = match &csr {
                Some(csr) => crate::pki::renew_from_request(&dir, &party, csr, days)?,
                None => crate::pki::renew(&dir, &party, days)?,
            };
            print_issue(&mut *out, &dir, &report, true);
            Ok(())
        }
        PkiCommand::Revoke {
            dir,
            target,
            reason,
            crl_days,
        } => {
            let target = target.resolve()?;
            let report = crate::pki::revoke(&dir, &target, reason.into(), crl_days)?;
            print_revoke(&mut *out, &dir, &report);
            Ok(())
        }
        PkiCommand::Crl { dir, days } => {
            let report = crate::pki::regenerate_crl(&dir, days)?;
            print_crl(&mut *out, &dir, &report);
            Ok(())
        }
        PkiCommand::List {
            dir,
            expiring,
            json,
        } => {
            let listing = crate::pki::list(&dir, expiring)?;
            if json {
                say!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&listing.rows)
                        .context("cannot encode the list")?
                );
            } else {
                print_list(&mut *out, &dir, &listing);
            }
            Ok(())
        }
    }
}
