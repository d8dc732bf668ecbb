//! The `tongbao-hub` command line: serve the exchange, and operator commands.
//! In the library so that test harnesses run the very same entry point.

use crate::HubConfig;
use crate::pki::index::display_time;
use crate::pki::{
    CrlInfo, CrlReport, DEFAULT_CRL_DAYS, InitOptions, IssueReport, Listing, Party, PkiError,
    RevocationReason, RevokeReport, RevokeTarget, init,
};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};

mod admin;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use tongbao_proto::identity::Principal;

#[derive(Parser)]
#[command(name = "tongbao-hub", version, about = "Tongbao secure exchange hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Override the listen address of the config (e.g. 127.0.0.1:0).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Override the data directory of the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Operator PKI commands.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Operator calls to a running hub (Admin service).
    Admin {
        #[command(flatten)]
        connection: admin::AdminConnection,
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a CA, hub and party certificates, signing keys and configs.
    Init {
        /// Where to create the PKI and the configs.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: std::net::SocketAddr,
        /// Validity of every certificate, in days.
        #[arg(long, default_value_t = 11 * 366)]
        days: i64,
        /// Overwrite an existing set.
        #[arg(long)]
        force: bool,
    },
    /// Issue a new certificate and key for a party (a unit also gets a
    /// signing key if it has none); existing files are kept as backups.
    Issue {
        /// The PKI directory (made by `pki init`, holding ca.pem and ca.key).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        party: PartyArgs,
        /// Validity in days [default: 365].
        #[arg(long)]
        days: Option<i64>,
        /// Common name in the certificate [default: the party's known name].
        #[arg(long)]
        name: Option<String>,
    },
    /// A new certificate and key for a party that has one; the old one
    /// stays valid until it expires or is revoked.
    Renew {
        /// The PKI directory (made by `pki init`, holding ca.pem and ca.key).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        party: PartyArgs,
        /// Validity in days [default: that of the party's latest certificate].
        #[arg(long)]
        days: Option<i64>,
    },
    /// Revoke a certificate, or every valid certificate of a party, and
    /// rewrite the CRL.
    Revoke {
        /// The PKI directory (made by `pki init`, holding ca.pem and ca.key).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        target: RevokeArgs,
        /// keyCompromise, superseded, cessationOfOperation or unspecified.
        #[arg(long, default_value = "unspecified", value_parser = parse_reason)]
        reason: RevocationReason,
        /// Validity of the new CRL, in days.
        #[arg(long, default_value_t = DEFAULT_CRL_DAYS)]
        crl_days: i64,
    },
    /// Rewrite crl.pem from the CA index (run it before the CRL's next update).
    Crl {
        /// The PKI directory (made by `pki init`, holding ca.pem and ca.key).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Validity of the CRL, in days.
        #[arg(long, default_value_t = DEFAULT_CRL_DAYS)]
        days: i64,
    },
    /// Generate a new Ed25519 signing key for a unit (to register or announce).
    Keygen {
        /// Where to write the private key (PEM); must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
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
struct PartyArgs {
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
struct RevokeArgs {
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

fn parse_reason(s: &str) -> Result<RevocationReason, String> {
    s.parse().map_err(|e: PkiError| e.to_string())
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

/// Parses the process arguments and runs the command.
pub fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            let mut cfg = HubConfig::load(&config)?;
            if let Some(l) = listen {
                cfg.hub.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.hub.data_dir = d;
            }
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(crate::hub::serve_until_signal(cfg))?;
            Ok(())
        }
        Command::Pki { command } => pki(command),
        Command::Admin {
            connection,
            command,
        } => {
            print!("{}", admin::run(connection, command)?);
            Ok(())
        }
    }
}

/// Runs a `pki` command; its report goes to stdout in one write, and a
/// closed stdout (`| head`) is not an error.
fn pki(command: PkiCommand) -> anyhow::Result<()> {
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

/// Appends a line to a command's report.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

fn pki_into(command: PkiCommand, out: &mut String) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init {
            dir,
            listen,
            days,
            force,
        } => {
            let summary = init(
                &dir,
                &InitOptions {
                    listen,
                    days,
                    force,
                    ..Default::default()
                },
            )?;
            say!(
                out,
                "Created an example PKI in {} ({} files): CA, hub certificate, {} units with signing keys, 2 offices, the leading group and an operator.",
                dir.display(),
                summary.files,
                summary.units.len()
            );
            say!(
                out,
                "Every certificate is recorded in {}; {} is empty and valid until {} (as long as the certificates).",
                dir.join(crate::pki::INDEX_FILE).display(),
                summary.crl.path.display(),
                summary
                    .crl
                    .next_update
                    .map(display_time)
                    .unwrap_or_default()
            );
            say!(
                out,
                "Next: keep ca.key offline; start the hub with `tongbao-hub serve --config {}`;",
                summary.hub_config.display()
            );
            say!(
                out,
                "deliver units/<id>/ (cert.pem, key.pem, signing.key, client.toml, and ca.pem) to each department."
            );
            Ok(())
        }
        PkiCommand::Issue {
            dir,
            party,
            days,
            name,
        } => {
            let party = party.resolve()?;
            let report = crate::pki::issue(&dir, &party, days, name.as_deref())?;
            print_issue(&mut *out, &dir, &report, false);
            Ok(())
        }
        PkiCommand::Renew { dir, party, days } => {
            let party = party.resolve()?;
            let report = crate::pki::renew(&dir, &party, days)?;
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
            let report = crate::pki::revoke(&dir, &target, reason, crl_days)?;
            print_revoke(&mut *out, &dir, &report);
            Ok(())
        }
        PkiCommand::Crl { dir, days } => {
            let report = crate::pki::regenerate_crl(&dir, days)?;
            print_crl(&mut *out, &dir, &report);
            Ok(())
        }
        PkiCommand::Keygen { out: file } => {
            out.push_str(&admin::keygen(&file)?);
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

fn adopted_note(out: &mut String, dir: &Path, adopted: bool) {
    if adopted {
        say!(
            out,
            "{} had no CA index: recorded the certificates found in its party directories in {}.",
            dir.display(),
            dir.join(crate::pki::INDEX_FILE).display()
        );
    }
}

fn print_issue(out: &mut String, dir: &Path, r: &IssueReport, renewing: bool) {
    adopted_note(&mut *out, dir, r.adopted);
    let rec = &r.record;
    say!(
        out,
        "{} a certificate for {}: serial {}, valid {} days, until {}.",
        if renewing { "Renewed" } else { "Issued" },
        r.party,
        rec.serial,
        r.days,
        display_time(rec.not_after)
    );
    if r.shortened_to_ca {
        say!(
            out,
            "  (shortened to {} days so that it ends before the CA does; a new CA will be needed to go further)",
            r.days
        );
    }
    say!(
        out,
        "  wrote {} and {} (the key is readable by its owner only)",
        dir.join(&rec.cert).display(),
        dir.join(&rec.key).display()
    );
    if !r.backups.is_empty() {
        let names: Vec<String> = r
            .backups
            .iter()
            .map(|b| dir.join(b).display().to_string())
            .collect();
        say!(out, "  kept the previous files as {}", names.join(", "));
    }
    for old in &r.still_valid {
        say!(
            out,
            "  the previous certificate {} stays valid until it expires ({}) or is revoked",
            old.serial,
            display_time(old.not_after)
        );
    }
    if let Some(k) = &r.signing_key {
        if k.created {
            say!(
                out,
                "Made a signing key for {}: {}",
                r.party,
                k.path.display()
            );
        } else {
            say!(out, "Kept the unit's signing key {}", k.path.display());
        }
        say!(out, "  public key: {}", k.public_key);
        say!(out, "  key id:     {}", k.key_id);
    }
    if let Some(path) = &r.client_toml {
        say!(
            out,
            "Wrote {} (check its `hub` URL: it is the address in hub.toml).",
            path.display()
        );
    }

    say!(out, "Next:");
    let mut step = 0;
    let mut next = |text: String| {
        step += 1;
        say!(out, "  {step}. {text}");
    };
    if let (Party::Client(Principal::Unit(id)), Some(k)) = (&r.party, &r.signing_key)
        && (k.created || r.registered == Some(false))
    {
        next(format!(
            "Register the unit's signing key with the hub. Before the hub's first start, add to {}:\n       [[units]]\n       id = \"{id}\"\n       name = \"{}\"\n       signing_key = \"{}\"\n     A hub that already has a store keeps its registry: there an operator registers the key on the running hub with `tongbao-hub admin --dir {} register-key --unit {id} --public-key {}`. Until then the hub refuses the unit's messages.",
            dir.join("hub.toml").display(),
            rec.subject,
            k.public_key,
            dir.display(),
            k.public_key
        ));
    }
    if let (Party::Client(Principal::Office(m)), Some(false)) = (&r.party, r.registered) {
        next(format!(
            "hub.toml names no mechanism {m:?}: the hub will not know this office until the mechanism is added."
        ));
    }
    let pdir = r.dir.display();
    match &r.party {
        Party::Hub => next(format!(
            "The running hub presents the new certificate to new connections within a second, no restart (with `watch_files = false` under [tls]: after SIGHUP or `tongbao-hub admin --dir {} reload-tls`); a stopped hub reads it at start-up. Clients need nothing: the certificate comes from the same CA and carries the same names.",
            dir.display()
        )),
        Party::Client(Principal::Operator(_)) => next(format!(
            "Give {pdir}/ (cert.pem, key.pem, client.toml) and {} to the operator, over a trusted channel.",
            dir.join("ca.pem").display()
        )),
        Party::Client(p) => next(format!(
            "Deliver {pdir}/ ({}client.toml) and {} to {p} over a trusted channel; private keys must never travel in clear. Their system uses the new files once it loads them.",
            if r.signing_key.is_some() {
                "cert.pem, key.pem, signing.key, "
            } else {
                "cert.pem, key.pem, "
            },
            dir.join("ca.pem").display()
        )),
    }
    if !r.still_valid.is_empty() {
        if r.party == Party::Hub {
            next(
                "The previous hub certificate stays valid until it expires; keep the old files until the hub has restarted."
                    .into(),
            );
        } else {
            let serials: Vec<&str> = r.still_valid.iter().map(|o| o.serial.as_str()).collect();
            next(format!(
                "Once {} uses the new certificate, revoke the previous one: {}",
                r.party,
                serials
                    .iter()
                    .map(|s| format!(
                        "`tongbao-hub pki revoke --dir {} --serial {s} --reason superseded`",
                        dir.display()
                    ))
                    .collect::<Vec<_>>()
                    .join(", then ")
            ));
        }
    }
}

fn crl_line(crl: &CrlInfo) -> String {
    format!(
        "Wrote {}: CRL number {}, {} revoked certificate{} listed, next update {}.",
        crl.path.display(),
        crl.number,
        crl.revoked.len(),
        if crl.revoked.len() == 1 { "" } else { "s" },
        crl.next_update
            .map(display_time)
            .unwrap_or_else(|| "none".into())
    )
}

fn crl_next_steps(out: &mut String, dir: &Path, crl: &CrlInfo, hub_uses_crl: Option<bool>) {
    match hub_uses_crl {
        Some(true) => {}
        Some(false) => say!(
            out,
            "Warning: {} does not read {}: set `crl = \"crl.pem\"` under [tls], or the hub keeps accepting revoked certificates.",
            dir.join("hub.toml").display(),
            crl.path.display()
        ),
        None => say!(
            out,
            "Point the hub's `[tls] crl` at {}.",
            crl.path.display()
        ),
    }
    say!(out, "Next:");
    say!(
        out,
        "  1. Nothing to restart: the running hub reads the new CRL within a second (with `watch_files = false` under [tls] of {}: after SIGHUP or `tongbao-hub admin --dir {} reload-tls`), closes open connections made with a revoked certificate and refuses new ones (\"certificate revoked\"); a stopped hub reads it at start-up.",
        dir.join("hub.toml").display(),
        dir.display()
    );
    say!(
        out,
        "  2. Run `tongbao-hub pki crl --dir {}` before the next update ({}), e.g. daily, so the CRL never goes stale.",
        dir.display(),
        crl.next_update
            .map(display_time)
            .unwrap_or_else(|| "none".into())
    );
}

fn print_revoke(out: &mut String, dir: &Path, r: &RevokeReport) {
    adopted_note(&mut *out, dir, r.adopted);
    say!(
        out,
        "Revoked {} certificate{} (reason {}):",
        r.revoked.len(),
        if r.revoked.len() == 1 { "" } else { "s" },
        r.reason
    );
    for rec in &r.revoked {
        say!(
            out,
            "  {}  serial {}  (was valid until {}; {})",
            rec.party,
            rec.serial,
            display_time(rec.not_after),
            dir.join(&rec.cert).display()
        );
    }
    say!(out, "{}", crl_line(&r.crl));
    crl_next_steps(&mut *out, dir, &r.crl, r.hub_uses_crl);
    let mut parties: Vec<&Party> = r.revoked.iter().map(|x| &x.party).collect();
    parties.dedup();
    for p in parties {
        say!(
            out,
            "  3. To give {p} a new certificate: `tongbao-hub pki issue --dir {} {}`{}",
            dir.display(),
            p.cli_flag(),
            if r.reason == RevocationReason::KeyCompromise {
                "; if its signing key may be compromised too, it must be rotated as well."
            } else {
                "."
            }
        );
    }
}

fn print_crl(out: &mut String, dir: &Path, r: &CrlReport) {
    adopted_note(&mut *out, dir, r.adopted);
    say!(out, "{}", crl_line(&r.crl));
    crl_next_steps(&mut *out, dir, &r.crl, r.hub_uses_crl);
}

fn print_list(out: &mut String, dir: &Path, l: &Listing) {
    if l.adopted {
        say!(
            out,
            "{} has no CA index yet: these are the certificates found in its party directories (the next issue, renew, revoke or crl records them).",
            dir.display()
        );
    }
    let window_days = l.window.whole_days();
    let window = if window_days > 0 {
        format!("{window_days} days")
    } else {
        format!("{} hours", l.window.whole_hours())
    };
    if l.rows.is_empty() {
        if l.expiring_only {
            say!(out, "No current certificate expires within {window}.");
        } else {
            say!(out, "The CA index records no certificate.");
        }
    } else {
        let header = ["PARTY", "SERIAL", "NOT AFTER", "DAYS LEFT", "STATE", "CERT"];
        let rows: Vec<[String; 6]> = l
            .rows
            .iter()
            .map(|r| {
                [
                    r.party.to_string(),
                    r.serial.clone(),
                    display_time(r.not_after),
                    r.days_left.to_string(),
                    r.state.to_string(),
                    if r.current {
                        r.cert.display().to_string()
                    } else {
                        format!("{} (replaced)", r.cert.display())
                    },
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 6]| {
            let mut text = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    text.push_str(cell);
                } else {
                    text.push_str(&format!("{cell:<w$}  "));
                }
            }
            text.trim_end().to_string()
        };
        say!(out, "{}", line(header));
        for row in &rows {
            say!(
                out,
                "{}",
                line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]])
            );
        }
    }
    let count = |s: crate::pki::CertState| l.rows.iter().filter(|r| r.state == s).count();
    if l.expiring_only {
        say!(
            out,
            "{} of {} certificates need renewing within {window}.",
            l.rows.len(),
            l.total
        );
    } else {
        say!(
            out,
            "{} certificates: {} valid, {} expiring within {window}, {} expired, {} revoked.",
            l.total,
            count(crate::pki::CertState::Valid),
            count(crate::pki::CertState::Expiring),
            count(crate::pki::CertState::Expired),
            count(crate::pki::CertState::Revoked)
        );
    }
    match &l.crl {
        Some(crl) => {
            let stale = crl
                .next_update
                .is_some_and(|t| t <= crate::pki::index::now());
            say!(
                out,
                "CRL {}: number {}, {} revoked listed, next update {}{}",
                crl.path.display(),
                crl.number,
                crl.revoked.len(),
                crl.next_update
                    .map(display_time)
                    .unwrap_or_else(|| "none".into()),
                if stale {
                    format!(" (past: run `tongbao-hub pki crl --dir {}`)", dir.display())
                } else {
                    String::new()
                }
            );
        }
        None => say!(
            out,
            "No CRL in {}: write one with `tongbao-hub pki crl --dir {}`.",
            dir.display(),
            dir.display()
        ),
    }
    let mut renew: Vec<&Party> = l
        .rows
        .iter()
        .filter(|r| {
            r.current
                && matches!(
                    r.state,
                    crate::pki::CertState::Expiring | crate::pki::CertState::Expired
                )
        })
        .map(|r| &r.party)
        .collect();
    renew.dedup();
    if !renew.is_empty() {
        say!(out, "Next: renew what expires:");
        for p in renew {
            say!(
                out,
                "  tongbao-hub pki renew --dir {} {}",
                dir.display(),
                p.cli_flag()
            );
        }
    }
}
