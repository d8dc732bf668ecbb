//! The registry: units, their signing keys, mechanisms and their members.
//!
//! Seeded from the hub config on first start and kept in the store after
//! that. Audience resolution lives here because it is a question about the
//! registry ("who are the members of this mechanism now?"), asked once per
//! message at append time.

use crate::config::{ConfigError, MechanismSeed, UnitSeed};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tongbao_proto::identity::{LEADING_GROUP_INBOX, Principal, check_id, office_inbox};
use tongbao_proto::keys::{ED25519_ALGORITHM, decode_public_key, key_id};
use tongbao_proto::pb;

/// A signing key of a unit with the interval it is valid for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    pub algorithm: String,
    pub key_id: String,
    pub public_key: Vec<u8>,
    pub valid_from_micros: i64,
    /// None while the key is current.
    pub valid_until_micros: Option<i64>,
}

/// A member unit (department).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnitRecord {
    pub id: String,
    pub name: String,
    pub name_zh: String,
    pub suspended: bool,
    pub keys: Vec<KeyRecord>,
}

impl UnitRecord {
    /// The key a signature names, if the unit has (had) it.
    pub fn key(&self, key_id: &str) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| k.key_id == key_id)
    }
}

/// A joint mechanism (联席机制) with its lead unit and members.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MechanismRecord {
    pub id: String,
    pub name: String,
    pub name_zh: String,
    pub lead: String,
    pub members: BTreeSet<String>,
}

/// Why an audience could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AudienceError {
    #[error("audience names unit {0:?}, which the registry does not know")]
    UnknownUnit(String),
    #[error("audience names mechanism {0:?}, which the registry does not know (known: {1})")]
    UnknownMechanism(String, String),
    #[error("audience names the office of {0:?}, which is not a mechanism the registry knows")]
    UnknownOffice(String),
    #[error("the audience resolves to no recipient other than the sender")]
    Empty,
}

/// The whole registry, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registry {
    pub units: BTreeMap<String, UnitRecord>,
    pub mechanisms: BTreeMap<String, MechanismRecord>,
}

impl Registry {
    /// Builds the first registry from the config's seeds, checking that it
    /// is consistent (ids well formed, keys valid, leads are members).
    pub fn from_seeds(
        units: &[UnitSeed],
        mechanisms: &[MechanismSeed],
    ) -> Result<Self, ConfigError> {
        let mut reg = Registry::default();
        for u in units {
            check_id("unit", &u.id).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            let pk = decode_public_key(&u.signing_key)
                .map_err(|e| ConfigError::Invalid(format!("unit {}: signing_key: {e}", u.id)))?;
            let record = UnitRecord {
                id: u.id.clone(),
                name: u.name.clone(),
                name_zh: u.name_zh.clone(),
                suspended: false,
                keys: vec![KeyRecord {
                    algorithm: ED25519_ALGORITHM.to_string(),
                    key_id: key_id(ED25519_ALGORITHM, &pk),
                    public_key: pk,
                    valid_from_micros: 0,
                    valid_until_micros: None,
                }],
            };
            if reg.units.insert(u.id.clone(), record).is_some() {
                return Err(ConfigError::Invalid(format!(
                    "unit {} is listed twice",
                    u.id
                )));
            }
        }
        for m in mechanisms {
            check_id("mechanism", &m.id).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            for member in m.members.iter().chain(std::iter::once(&m.lead)) {
                if !reg.units.contains_key(member) {
                    return Err(ConfigError::Invalid(format!(
                        "mechanism {} names unit {member}, which is not among [[units]]",
                        m.id
                    )));
                }
            }
            let mut members: BTreeSet<String> = m.members.iter().cloned().collect();
            members.insert(m.lead.clone());
            let record = MechanismRecord {
                id: m.id.clone(),
                name: m.name.clone(),
                name_zh: m.name_zh.clone(),
                lead: m.lead.clone(),
                members,
            };
            if reg.mechanisms.insert(m.id.clone(), record).is_some() {
                return Err(ConfigError::Invalid(format!(
                    "mechanism {} is listed twice",
                    m.id
                )));
            }
        }
        if reg.units.is_empty() {
            return Err(ConfigError::Invalid("the config lists no [[units]]".into()));
        }
        Ok(reg)
    }

    pub fn unit(&self, id: &str) -> Option<&UnitRecord> {
        self.units.get(id)
    }

    /// True when this principal is one the registry knows.
    pub fn knows(&self, p: &Principal) -> bool {
        match p {
            Principal::Unit(id) => self.units.contains_key(id),
            Principal::Office(m) => self.mechanisms.contains_key(m),
            Principal::Operator(_) | Principal::LeadingGroup => true,
        }
    }

    /// Resolves an audience to sorted, distinct recipient inboxes, without
    /// the sender itself.
    pub fn resolve(
        &self,
        sender: &str,
        audience: &pb::Audience,
    ) -> Result<Vec<String>, AudienceError> {
        let mut out = BTreeSet::new();
        for u in &audience.units {
            if !self.units.contains_key(u) {
                return Err(AudienceError::UnknownUnit(u.clone()));
            }
            out.insert(u.clone());
        }
        for m in &audience.mechanisms {
            let mech = self.mechanisms.get(m).ok_or_else(|| {
                AudienceError::UnknownMechanism(m.clone(), self.mechanism_names())
            })?;
            out.extend(mech.members.iter().cloned());
        }
        for m in &audience.offices {
            if !self.mechanisms.contains_key(m) {
                return Err(AudienceError::UnknownOffice(m.clone()));
            }
            out.insert(office_inbox(m));
        }
        if audience.leading_group {
            out.insert(LEADING_GROUP_INBOX.to_string());
        }
        out.remove(sender);
        if out.is_empty() {
            return Err(AudienceError::Empty);
        }
        Ok(out.into_iter().collect())
    }

    /// Mechanisms whose office audits an entry: those its audience names
    /// (directly or through their office), and those the sender shares with
    /// at least one recipient, by membership at append time.
    pub fn audit_scopes(
        &self,
        sender: &str,
        audience: &pb::Audience,
        recipients: &[String],
    ) -> Vec<String> {
        self.mechanisms
            .values()
            .filter(|m| {
                audience.mechanisms.contains(&m.id)
                    || audience.offices.contains(&m.id)
                    || (m.members.contains(sender)
                        && recipients.iter().any(|r| m.members.contains(r)))
            })
            .map(|m| m.id.clone())
            .collect()
    }

    fn mechanism_names(&self) -> String {
        self.mechanisms
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The registry as `ListUnits` answers it.
    pub fn to_proto(&self) -> pb::ListUnitsResponse {
        pb::ListUnitsResponse {
            units: self
                .units
                .values()
                .map(|u| pb::Unit {
                    id: u.id.clone(),
                    name: u.name.clone(),
                    name_zh: u.name_zh.clone(),
                    suspended: u.suspended,
                    keys: u
                        .keys
                        .iter()
                        .map(|k| pb::SigningKey {
                            algorithm: k.algorithm.clone(),
                            key_id: k.key_id.clone(),
                            public_key: k.public_key.clone(),
                            valid_from_micros: k.valid_from_micros,
                            valid_until_micros: k.valid_until_micros.unwrap_or(0),
                        })
                        .collect(),
                })
                .collect(),
            mechanisms: self
                .mechanisms
                .values()
                .map(|m| pb::Mechanism {
                    id: m.id.clone(),
                    name: m.name.clone(),
                    name_zh: m.name_zh.clone(),
                    lead: m.lead.clone(),
                    members: m.members.iter().cloned().collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tongbao_proto::keys::{SigningKey, encode_public_key};

    fn reg() -> Result<Registry, Box<dyn std::error::Error>> {
        let mut units = Vec::new();
        for id in ["civil-affairs", "tax", "finance"] {
            units.push(UnitSeed {
                id: id.into(),
                name: id.into(),
                name_zh: String::new(),
                signing_key: encode_public_key(SigningKey::generate()?.public_key()),
            });
        }
        let mechs = vec![MechanismSeed {
            id: "fund-supervision".into(),
            name: "f".into(),
            name_zh: String::new(),
            lead: "civil-affairs".into(),
            members: vec!["tax".into(), "finance".into()],
        }];
        Ok(Registry::from_seeds(&units, &mechs)?)
    }

    #[test]
    fn mechanism_resolves_to_members_without_sender() -> Result<(), Box<dyn std::error::Error>> {
        let r = reg()?;
        let a = pb::Audience {
            mechanisms: vec!["fund-supervision".into()],
            offices: vec!["fund-supervision".into()],
            ..Default::default()
        };
        assert_eq!(
            r.resolve("tax", &a)?,
            vec!["civil-affairs", "finance", "office:fund-supervision"]
        );
        Ok(())
    }

    #[test]
    fn unknown_names_and_self_only_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let r = reg()?;
        let unit = pb::Audience {
            units: vec!["nobody".into()],
            ..Default::default()
        };
        assert_eq!(
            r.resolve("tax", &unit),
            Err(AudienceError::UnknownUnit("nobody".into()))
        );
        let mech = pb::Audience {
            mechanisms: vec!["nope".into()],
            ..Default::default()
        };
        assert!(matches!(
            r.resolve("tax", &mech),
            Err(AudienceError::UnknownMechanism(..))
        ));
        let me = pb::Audience {
            units: vec!["tax".into()],
            ..Default::default()
        };
        assert_eq!(r.resolve("tax", &me), Err(AudienceError::Empty));
        Ok(())
    }
}
