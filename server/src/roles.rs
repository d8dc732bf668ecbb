//! The three administrator roles (三权分立) and the one table saying which
//! role each operator call of the `Admin` and `Directory` services needs.
//!
//! Separation of duties is only as good as the place it is written down:
//! the services, the hub's `admin` command line and `docs/operations.md`
//! all read it from [`TABLE`] (a test keeps the docs' copy equal to it).
//! Operators are registered from `hub.toml` (`[[operators]]`) at every
//! start and never through an API, so no role can grant itself, or anyone
//! else, a role. No role appends to, changes or removes a channel's
//! entries: pushing, acknowledging and workflow steps are units' calls.

use crate::config::OperatorSeed;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use tongbao_proto::echo::shown;
use tongbao_proto::identity::Principal;

/// One of the three duties an operator is registered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Units, membership, TLS reload, configuration, backups.
    System,
    /// Certificates, revocation, signing keys, suspension.
    Security,
    /// Reads the admin audit trail; changes nothing.
    Audit,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::System, Role::Security, Role::Audit];

    /// The name `hub.toml` and refusals use.
    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Security => "security",
            Role::Audit => "audit",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A call of the `Admin` or `Directory` service, as the table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    RegisterKey,
    RetireKey,
    SuspendUnit,
    ReinstateUnit,
    ListExpiring,
    AddMember,
    ReloadTls,
    ListAudit,
    MembersAt,
    RotateKey,
    Backup,
}

/// Who among operators may make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty {
    /// Operators registered with this role, and no other.
    Role(Role),
    /// A unit's own call (it appends to the unit's channel): no operator
    /// role may make it.
    UnitsOnly,
}

impl fmt::Display for Duty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Duty::Role(r) => r.fmt(f),
            Duty::UnitsOnly => f.write_str("none (units only)"),
        }
    }
}

/// A row of [`TABLE`].
#[derive(Debug)]
pub struct Row {
    pub method: Method,
    /// `Service/Method`, as in the protocol.
    pub path: &'static str,
    /// The admin trail's name for the action.
    pub action: &'static str,
    pub duty: Duty,
    /// What the call does, in the words of a refusal ("cannot ...").
    pub what: &'static str,
}

/// Every call of `Admin` and `Directory`, in the order of [`Method`], with
/// the one role an operator needs for it. Units and offices are not judged
/// here: the services keep their rules for them (only offices besides
/// operators read the trail; anyone asks `MembersAt`; units rotate their
/// own keys).
pub static TABLE: [Row; 11] = [
    row(
        Method::RegisterKey,
        "Admin/RegisterKey",
        "register-key",
        Duty::Role(Role::Security),
        "register signing keys",
    ),
    row(
        Method::RetireKey,
        "Admin/RetireKey",
        "retire-key",
        Duty::Role(Role::Security),
        "retire signing keys",
    ),
    row(
        Method::SuspendUnit,
        "Admin/SuspendUnit",
        "suspend-unit",
        Duty::Role(Role::Security),
        "suspend units",
    ),
    row(
        Method::ReinstateUnit,
        "Admin/ReinstateUnit",
        "reinstate-unit",
        Duty::Role(Role::Security),
        "reinstate units",
    ),
    row(
        Method::ListExpiring,
        "Admin/ListExpiring",
        "list-expiring",
        Duty::Role(Role::Security),
        "list certificates",
    ),
    row(
        Method::AddMember,
        "Admin/AddMember",
        "add-member",
        Duty::Role(Role::System),
        "change memberships",
    ),
    row(
        Method::ReloadTls,
        "Admin/ReloadTls",
        "reload-tls",
        Duty::Role(Role::System),
        "reload TLS material",
    ),
    row(
        Method::ListAudit,
        "Admin/ListAudit",
        "list-audit",
        Duty::Role(Role::Audit),
        "read the admin audit trail",
    ),
    row(
        Method::MembersAt,
        "Directory/MembersAt",
        "members-at",
        Duty::Role(Role::System),
        "ask about memberships",
    ),
    row(
        Method::RotateKey,
        "Directory/RotateKey",
        "rotate-key",
        Duty::UnitsOnly,
        "rotate signing keys",
    ),
    row(
        Method::Backup,
        "Admin/Backup",
        "backup",
        Duty::Role(Role::System),
        "back up the hub's data",
    ),
];

const fn row(
    method: Method,
    path: &'static str,
    action: &'static str,
    duty: Duty,
    what: &'static str,
) -> Row {
    Row {
        method,
        path,
        action,
        duty,
        what,
    }
}

impl Method {
    /// This call's row of [`TABLE`].
    pub fn row(self) -> &'static Row {
        &TABLE[self as usize]
    }
}

/// Why an operator, or the `[[operators]]` list, was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoleError {
    #[error(
        "[[operators]] uri {:?} is not an operator's URI (urn:tongbao:operator:<name>)",
        shown(.0)
    )]
    NotOperatorUri(String),
    #[error(
        "[[operators]] registers {0} more than once; give each operator one entry with one role"
    )]
    Twice(String),
    #[error(
        "the certificate names operator {0}, which this hub's [[operators]] (hub.toml) does not register; ask the hub's system administrator to add it with its role"
    )]
    Unregistered(String),
    #[error("operator {name} has the {role} role; {path} ({what}) needs the {needed} role")]
    OutsideRole {
        name: String,
        role: Role,
        needed: Role,
        path: &'static str,
        what: &'static str,
    },
    #[error(
        "operator {name} ({role} role) cannot {what}: {path} is a unit's own call, which no operator role may make"
    )]
    UnitsOnly {
        name: String,
        role: Role,
        path: &'static str,
        what: &'static str,
    },
}

/// The registered operators and the role of each, from `[[operators]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operators {
    roles: BTreeMap<String, Role>,
}

impl Operators {
    /// Checks the list (operator URIs only, each once) and keeps it.
    pub fn from_seeds(seeds: &[OperatorSeed]) -> Result<Self, RoleError> {
        let mut roles = BTreeMap::new();
        for seed in seeds {
            let Ok(Principal::Operator(name)) = Principal::from_uri(&seed.uri) else {
                return Err(RoleError::NotOperatorUri(seed.uri.clone()));
            };
            if roles.insert(name, seed.role).is_some() {
                return Err(RoleError::Twice(seed.uri.clone()));
            }
        }
        Ok(Self { roles })
    }

    /// The role of a registered operator.
    pub fn role(&self, name: &str) -> Option<Role> {
        self.roles.get(name).copied()
    }

    /// Registered operators with this role, by name.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &str> {
        self.roles
            .iter()
            .filter(move |(_, r)| **r == role)
            .map(|(n, _)| n.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// May operator `name` make this call? Its role when it may.
    pub fn authorize(&self, name: &str, method: Method) -> Result<Role, RoleError> {
        let role = self
            .role(name)
            .ok_or_else(|| RoleError::Unregistered(name.to_string()))?;
        let row = method.row();
        match row.duty {
            Duty::Role(needed) if needed == role => Ok(role),
            Duty::Role(needed) => Err(RoleError::OutsideRole {
                name: name.to_string(),
                role,
                needed,
                path: row.path,
                what: row.what,
            }),
            Duty::UnitsOnly => Err(RoleError::UnitsOnly {
                name: name.to_string(),
                role,
                path: row.path,
                what: row.what,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(uri: &str, role: Role) -> OperatorSeed {
        OperatorSeed {
            uri: uri.into(),
            role,
        }
    }

    #[test]
    fn the_table_is_in_the_order_of_its_methods() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(row.method as usize, i, "{row:?}");
            assert!(std::ptr::eq(row.method.row(), row));
        }
    }

    #[test]
    fn every_call_of_admin_and_directory_is_in_the_table_once() {
        // Read from the protocol's own text, so a new call without a row
        // fails here.
        let text = include_str!("../../proto/proto/tongbao/v1/admin.proto");
        let mut service = "";
        let mut calls = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(s) = line.strip_prefix("service ") {
                service = s.trim_end_matches(" {");
            } else if let Some(rpc) = line.strip_prefix("rpc ") {
                let name = rpc.split('(').next().unwrap_or("").trim();
                calls.push(format!("{service}/{name}"));
            }
        }
        let mut rows: Vec<String> = TABLE.iter().map(|r| r.path.to_string()).collect();
        calls.sort();
        rows.sort();
        assert_eq!(calls, rows);
    }

    #[test]
    fn the_documented_table_is_this_table() {
        let doc = include_str!("../../docs/operations.md");
        for row in &TABLE {
            let line = format!("| `{}` | {} |", row.path, row.duty);
            assert!(doc.contains(&line), "docs/operations.md lacks {line:?}");
        }
    }

    #[test]
    fn each_role_makes_its_calls_and_no_other() -> Result<(), RoleError> {
        let ops = Operators::from_seeds(&[
            seed("urn:tongbao:operator:sam", Role::System),
            seed("urn:tongbao:operator:sue", Role::Security),
            seed("urn:tongbao:operator:abe", Role::Audit),
        ])?;
        assert_eq!(ops.authorize("sue", Method::RegisterKey)?, Role::Security);
        assert_eq!(ops.authorize("sam", Method::AddMember)?, Role::System);
        assert_eq!(ops.authorize("abe", Method::ListAudit)?, Role::Audit);
        let refused = ops.authorize("sam", Method::RegisterKey);
        assert!(
            matches!(
                &refused,
                Err(RoleError::OutsideRole {
                    role: Role::System,
                    needed: Role::Security,
                    ..
                })
            ),
            "{refused:?}"
        );
        let text = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("system role") && text.contains("needs the security role"));
        for method in TABLE.iter().map(|r| r.method) {
            let allowed: Vec<&str> = ["sam", "sue", "abe"]
                .into_iter()
                .filter(|n| ops.authorize(n, method).is_ok())
                .collect();
            let expected = usize::from(method != Method::RotateKey);
            assert_eq!(allowed.len(), expected, "{method:?}: {allowed:?}");
        }
        assert_eq!(
            ops.authorize("eve", Method::ListAudit),
            Err(RoleError::Unregistered("eve".into()))
        );
        Ok(())
    }

    #[test]
    fn a_bad_or_repeated_operator_is_refused_by_its_uri() {
        let twice = Operators::from_seeds(&[
            seed("urn:tongbao:operator:sam", Role::System),
            seed("urn:tongbao:operator:sam", Role::Audit),
        ]);
        assert_eq!(
            twice,
            Err(RoleError::Twice("urn:tongbao:operator:sam".into()))
        );
        for bad in ["urn:tongbao:unit:tax", "urn:tongbao:operator:Sam", "sam"] {
            let e = Operators::from_seeds(&[seed(bad, Role::System)]);
            assert_eq!(e, Err(RoleError::NotOperatorUri(bad.into())));
        }
    }
}
