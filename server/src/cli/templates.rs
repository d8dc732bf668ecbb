//! The operator prose of the `pki` reports, kept as text files under
//! `server/templates/` so that it reads (and is edited) as prose; each
//! `{name}` in a template is filled in when the report is written.

pub const PKI_INIT: &str = include_str!("../../templates/pki-init.txt");
pub const PKI_INIT_CA: &str = include_str!("../../templates/pki-init-ca.txt");
pub const REGISTER_OWN_KEY: &str = include_str!("../../templates/register-own-key.txt");
pub const DELIVER_FROM_REQUEST: &str = include_str!("../../templates/deliver-from-request.txt");
pub const KEY_MADE_HERE: &str = include_str!("../../templates/key-made-here.txt");
pub const REGISTER_KEY: &str = include_str!("../../templates/register-key.txt");
pub const HUB_RENEWED: &str = include_str!("../../templates/hub-renewed.txt");
pub const DELIVER_OPERATOR: &str = include_str!("../../templates/deliver-operator.txt");
pub const DELIVER_PARTY: &str = include_str!("../../templates/deliver-party.txt");
pub const CRL_NOT_READ: &str = include_str!("../../templates/crl-not-read.txt");
pub const CRL_NEXT_STEPS: &str = include_str!("../../templates/crl-next-steps.txt");

/// The template with each `{name}` given in `values` replaced, in one pass
/// (a value is never read as a template); other braces stay as they are.
/// The file's final newline is left to the caller.
pub fn fill(template: &str, values: &[(&str, &dyn std::fmt::Display)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template.trim_end_matches('\n');
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let named = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (close, v))
        });
        match named {
            Some((close, value)) => {
                out.push_str(&value.to_string());
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_filled_once_and_other_braces_kept() {
        let text = fill("a {x} b {y} {unknown} {", &[("x", &"{y}"), ("y", &2)]);
        assert_eq!(text, "a {y} b 2 {unknown} {");
    }

    #[test]
    fn every_name_of_every_template_is_one_the_reports_fill() {
        let known = [
            "dir",
            "files",
            "units",
            "index",
            "crl",
            "crl_until",
            "hub_config",
            "hub_toml",
            "id",
            "name",
            "public_key",
            "party_dir",
            "ca",
            "party",
            "next_update",
        ];
        let values: Vec<(&str, &dyn std::fmt::Display)> = known
            .iter()
            .map(|k| (*k, &"" as &dyn std::fmt::Display))
            .collect();
        for t in [
            PKI_INIT,
            PKI_INIT_CA,
            REGISTER_OWN_KEY,
            DELIVER_FROM_REQUEST,
            KEY_MADE_HERE,
            REGISTER_KEY,
            HUB_RENEWED,
            DELIVER_OPERATOR,
            DELIVER_PARTY,
            CRL_NOT_READ,
            CRL_NEXT_STEPS,
        ] {
            let filled = fill(t, &values);
            assert!(!filled.contains('{'), "{filled}");
        }
    }
}
