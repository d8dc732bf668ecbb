//! `tongbao keys`: a party makes its own keys on its own machine and is
//! told what to hand to the operators (public things only). Needs no hub
//! and no config.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::fmt::Write as _;
use std::path::PathBuf;
use tongbao_client::party_keys::{self, PartyKeys, PublicSigningKey};
use tongbao_proto::identity::Principal;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make this party's TLS key, certificate request and (for a unit)
    /// signing key in DIR; print what to hand to the operators.
    Init(InitArgs),
    /// Make a new signing key for this unit (after a loss or compromise);
    /// print its public key for the operators to register.
    SigningKey {
        /// Where to write the private key (PEM, 0600); must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct InitArgs {
    /// Where to write the keys (created readable by you only if missing);
    /// existing keys are never overwritten.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Who the keys are for: urn:tongbao:unit:<id>,
    /// urn:tongbao:office:<mechanism> or urn:tongbao:operator:<name>.
    #[arg(long, value_name = "URI")]
    party: String,
    /// Only a new TLS key and request, to renew the certificate with: a
    /// unit keeps its signing key.
    #[arg(long)]
    tls_only: bool,
}

pub fn keys(command: KeysCommand) -> anyhow::Result<()> {
    let report = match command {
        KeysCommand::Init(args) => {
            let made = if args.tls_only {
                party_keys::make_tls_request(&args.dir, &args.party)?
            } else {
                party_keys::make_party_keys(&args.dir, &args.party)?
            };
            init_report(&made, args.tls_only)?
        }
        KeysCommand::SigningKey { out } => {
            let public = party_keys::make_signing_key(&out)?;
            signing_key_report(&out, &public)?
        }
    };
    print!("{report}");
    Ok(())
}

/// The party's flag in the operators' commands.
fn flag(party: &Principal) -> String {
    match party {
        Principal::Unit(id) => format!("--unit {id}"),
        Principal::Office(m) => format!("--office {m}"),
        Principal::Operator(n) => format!("--operator {n}"),
        Principal::LeadingGroup => "--leading-group".into(),
    }
}

fn init_report(made: &PartyKeys, renewal: bool) -> anyhow::Result<String> {
    let mut out = String::new();
    let party = &made.party;
    writeln!(
        out,
        "Made the keys of {party} ({}). Private files are readable by you alone; they never leave this machine:",
        party.uri()
    )?;
    let mut files = vec![(
        made.tls_key.display().to_string(),
        "TLS private key (ECDSA P-256)".to_string(),
    )];
    if let Some((path, _)) = &made.signing_key {
        files.push((path.display().to_string(), "Ed25519 signing key".into()));
    }
    files.push((
        made.request.display().to_string(),
        format!("certificate request naming {} (public)", party.uri()),
    ));
    let width = files
        .iter()
        .map(|(f, _)| f.chars().count())
        .max()
        .unwrap_or(0);
    for (file, what) in &files {
        writeln!(out, "  {file:<width$}  {what}")?;
    }
    writeln!(
        out,
        "Hand to the operators, by a channel on which they know it is you (public things, no secret among them):"
    )?;
    writeln!(
        out,
        "  1. the certificate request {}, for the CA operator: `tongbao-hub pki {} --dir CA_DIR {} --csr {}`",
        made.request.display(),
        if renewal { "renew" } else { "issue" },
        flag(party),
        party_keys::REQUEST_FILE
    )?;
    if let (Principal::Unit(id), Some((_, public))) = (party, &made.signing_key) {
        writeln!(
            out,
            "  2. the public signing key, for the security administrator (confirm its key id with them by a second channel, e.g. by phone):"
        )?;
        writeln!(out, "       public key: {}", public.public_key)?;
        writeln!(out, "       key id:     {}", public.key_id)?;
        writeln!(
            out,
            "     before the hub's first start it goes into hub.toml ([[units]] id = \"{id}\", signing_key = \"{}\"); on a running hub: `tongbao-hub admin --dir DIR register-key --unit {id} --public-key {}`",
            public.public_key, public.public_key
        )?;
    }
    let dir = made
        .tls_key
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    if renewal {
        writeln!(
            out,
            "Then, with the cert.pem they hand back, replace key.pem and cert.pem where your client.toml names them (key first; the client picks them up by itself), and ask the CA operator to revoke the old certificate."
        )?;
        return Ok(out);
    }
    match party {
        Principal::Operator(name) => writeln!(
            out,
            "Then put the cert.pem they hand back in {dir}. If {dir} is ADMIN/operators/{name}, with ca.pem and hub.toml (or --hub URL) in ADMIN, `tongbao-hub admin --dir ADMIN --operator {name}` signs in with it."
        )?,
        _ => writeln!(
            out,
            "Then put what they hand back (cert.pem, and for a new party ca.pem and client.toml) in {dir}; `tongbao --config {dir}/client.toml` then connects."
        )?,
    }
    Ok(out)
}

fn signing_key_report(path: &std::path::Path, public: &PublicSigningKey) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "Wrote a new signing key to {} (readable by you alone; key id {}).",
        path.display(),
        public.key_id
    )
    .context("cannot format the report")?;
    writeln!(out, "Public key: {}", public.public_key)?;
    writeln!(
        out,
        "Next: hand the public key to the security administrator (confirm its key id by a second channel), who registers it with `tongbao-hub admin --dir DIR register-key --unit ID --public-key {}`;",
        public.public_key
    )?;
    writeln!(
        out,
        "then put the file at signing_key of your client.toml (the client picks it up by itself). While your current key still works, rotate instead: Client::rotate_signing_key needs no operator."
    )?;
    Ok(out)
}
