//! The reports of the `pki` commands: what was done, and the operator's
//! next steps (their longer prose is in `server/templates/`).

use super::templates::{
    CRL_NEXT_STEPS, CRL_NOT_READ, DELIVER_FROM_REQUEST, DELIVER_OPERATOR, DELIVER_PARTY,
    HUB_RENEWED, KEY_MADE_HERE, REGISTER_KEY, REGISTER_OWN_KEY, fill,
};
use crate::pki::index::display_time;
use crate::pki::{CrlInfo, CrlReport, IssueReport, Listing, Party, RevocationReason, RevokeReport};
use std::path::Path;
use tongbao_proto::identity::Principal;

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

pub(super) fn print_issue(out: &mut String, dir: &Path, r: &IssueReport, renewing: bool) {
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
    if r.from_request {
        say!(
            out,
            "  wrote {} for the key of the party's own request (its private key never left its machine)",
            dir.join(&rec.cert).display()
        );
    } else {
        say!(
            out,
            "  wrote {} and {} (the key is readable by its owner only)",
            dir.join(&rec.cert).display(),
            dir.join(&rec.key).display()
        );
    }
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
        say!(
            out,
            "The unit's signing key found here (an example set's): {}",
            k.path.display()
        );
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
    if let Some(path) = &r.ca_copy {
        say!(
            out,
            "Copied the CA certificate to {} for the party.",
            path.display()
        );
    }
    if !r.from_request && r.party != Party::Hub {
        say!(out, "{}", fill(KEY_MADE_HERE, &[("party", &r.party)]));
    }

    say!(out, "Next:");
    let mut step = 0;
    let mut next = |text: String| {
        step += 1;
        say!(out, "  {step}. {text}");
    };
    // A new unit is registered, with the key it made or an example key.
    if let Party::Client(Principal::Unit(id)) = &r.party
        && (r.registered == Some(false) || (r.registered.is_none() && !renewing))
    {
        let hub_toml = dir.join("hub.toml");
        let values: [(&str, &dyn std::fmt::Display); 5] = [
            ("hub_toml", &hub_toml.display()),
            ("id", id),
            ("name", &rec.subject),
            (
                "public_key",
                match &r.signing_key {
                    Some(k) => &k.public_key,
                    None => &"",
                },
            ),
            ("dir", &dir.display()),
        ];
        next(fill(
            if r.signing_key.is_some() {
                REGISTER_KEY
            } else {
                REGISTER_OWN_KEY
            },
            &values,
        ));
    }
    if let (Party::Client(Principal::Office(m)), Some(false)) = (&r.party, r.registered) {
        next(format!(
            "hub.toml names no mechanism {m:?}: the hub will not know this office until the mechanism is added."
        ));
    }
    let pdir = r.dir.display();
    match &r.party {
        Party::Hub => next(fill(HUB_RENEWED, &[("dir", &dir.display())])),
        Party::Client(p) if r.from_request => {
            let files: Vec<String> = std::iter::once(dir.join(&rec.cert))
                .chain(r.ca_copy.clone())
                .chain(r.client_toml.clone())
                .map(|f| f.display().to_string())
                .collect();
            next(fill(
                DELIVER_FROM_REQUEST,
                &[("files", &files.join(", ")), ("party", p)],
            ));
        }
        Party::Client(Principal::Operator(_)) => next(fill(
            DELIVER_OPERATOR,
            &[("party_dir", &pdir), ("ca", &dir.join("ca.pem").display())],
        )),
        Party::Client(p) => next(fill(
            DELIVER_PARTY,
            &[
                ("party_dir", &pdir),
                (
                    "files",
                    &if r.signing_key.is_some() {
                        "cert.pem, key.pem, signing.key, "
                    } else {
                        "cert.pem, key.pem, "
                    },
                ),
                ("ca", &dir.join("ca.pem").display()),
                ("party", p),
            ],
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
            "{}",
            fill(
                CRL_NOT_READ,
                &[
                    ("hub_toml", &dir.join("hub.toml").display()),
                    ("crl", &crl.path.display()),
                ],
            )
        ),
        None => say!(
            out,
            "Point the hub's `[tls] crl` at {}.",
            crl.path.display()
        ),
    }
    let next_update = crl
        .next_update
        .map(display_time)
        .unwrap_or_else(|| "none".into());
    say!(
        out,
        "{}",
        fill(
            CRL_NEXT_STEPS,
            &[
                ("hub_toml", &dir.join("hub.toml").display()),
                ("dir", &dir.display()),
                ("next_update", &next_update),
            ],
        )
    );
}

pub(super) fn print_revoke(out: &mut String, dir: &Path, r: &RevokeReport) {
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

pub(super) fn print_crl(out: &mut String, dir: &Path, r: &CrlReport) {
    adopted_note(&mut *out, dir, r.adopted);
    say!(out, "{}", crl_line(&r.crl));
    crl_next_steps(&mut *out, dir, &r.crl, r.hub_uses_crl);
}

pub(super) fn print_list(out: &mut String, dir: &Path, l: &Listing) {
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
