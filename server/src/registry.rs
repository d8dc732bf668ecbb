//! The registry: units, their signing keys, mechanisms and their members.
//!
//! Seeded from the hub config on first start and kept in the store after
//! that. Audience resolution lives here because it is a question about the
//! registry ("who are the members of this mechanism now?"), asked once per
//! message at append time. Operators change it through the `Admin`
//! service; every change keeps history (key intervals, membership from a
//! time) so questions about the past keep their answers.

use crate::config::{ConfigError, MechanismSeed, UnitSeed};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tongbao_proto::echo::shown;
use tongbao_proto::identity::{LEADING_GROUP_INBOX, Principal, check_id, office_inbox};
use tongbao_proto::keys::{ED25519_ALGORITHM, decode_public_key, key_id};
use tongbao_proto::pb;

pub use tongbao_proto::format_micros as display_micros;

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

    /// Keys valid at a time, newest first.
    pub fn keys_valid_at(&self, at_micros: i64) -> impl Iterator<Item = &KeyRecord> {
        self.keys
            .iter()
            .rev()
            .filter(move |k| k.valid_at(at_micros))
    }
}

impl KeyRecord {
    /// The key's interval, under the rule every party shares.
    pub fn validity(&self) -> tongbao_proto::keys::KeyValidity {
        tongbao_proto::keys::KeyValidity {
            from_micros: self.valid_from_micros,
            until_micros: self.valid_until_micros,
        }
    }

    /// True when the key may sign at this time: from inclusive, until exclusive.
    pub fn valid_at(&self, at_micros: i64) -> bool {
        self.validity().contains(at_micros)
    }
}

/// A unit that joined a mechanism after it was seeded, from a time on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Joined {
    pub unit: String,
    pub from_micros: i64,
    /// When the change was recorded (hub time).
    pub recorded_micros: i64,
}

/// Why a registry change was refused; nothing was changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("unit {:?} is not in the registry", shown(.0))]
    UnknownUnit(String),
    #[error("mechanism {:?} is not in the registry (known: {})", shown(.0), .1)]
    UnknownMechanism(String, String),
    #[error(
        "unit {unit} has no signing key {:?}; list its keys with `tongbao units`",
        shown(.key_id)
    )]
    UnknownKey { unit: String, key_id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("key {} is already registered for unit {unit}", shown(.key_id))]
    KeyExists { unit: String, key_id: String },
    #[error(
        "key {} of unit {unit} was already retired at {until} (unix micros)",
        shown(.key_id)
    )]
    AlreadyRetired {
        unit: String,
        key_id: String,
        until: i64,
    },
    #[error(
        "retiring key {} would leave unit {unit} with no valid signing key; register its new key first",
        shown(.key_id)
    )]
    LastKey { unit: String, key_id: String },
    #[error("unit {} is already suspended", shown(.0))]
    AlreadySuspended(String),
    #[error("unit {} is not suspended", shown(.0))]
    NotSuspended(String),
    #[error(
        "unit {} is already a member of mechanism {} (from {from} unix micros)",
        shown(.unit),
        shown(.mechanism)
    )]
    AlreadyMember {
        unit: String,
        mechanism: String,
        from: i64,
    },
}

/// A joint mechanism (联席机制) with its lead unit and members.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MechanismRecord {
    pub id: String,
    pub name: String,
    pub name_zh: String,
    pub lead: String,
    /// Members since the registry was seeded.
    pub members: BTreeSet<String>,
    /// Units added later, each from its own time on.
    #[serde(default)]
    pub joined: Vec<Joined>,
}

impl MechanismRecord {
    /// The members at a time: the seeded ones and those joined by then.
    pub fn members_at(&self, at_micros: i64) -> BTreeSet<String> {
        self.member_names_at(at_micros).cloned().collect()
    }

    /// The members at a time, borrowed (a name may come twice).
    fn member_names_at(&self, at_micros: i64) -> impl Iterator<Item = &String> {
        self.members.iter().chain(
            self.joined
                .iter()
                .filter(move |j| j.from_micros <= at_micros)
                .map(|j| &j.unit),
        )
    }

    /// Whether a unit is a member at a time: what `members_at` holds,
    /// without copying the set (asked per message at append time).
    pub fn has_member_at(&self, unit: &str, at_micros: i64) -> bool {
        self.members.contains(unit)
            || self
                .joined
                .iter()
                .any(|j| j.unit == unit && j.from_micros <= at_micros)
    }

    /// Since when a unit is (or will be) a member, if it is one.
    pub fn member_since(&self, unit: &str) -> Option<i64> {
        if self.members.contains(unit) {
            return Some(0);
        }
        self.joined
            .iter()
            .filter(|j| j.unit == unit)
            .map(|j| j.from_micros)
            .min()
    }
}

/// Why an audience could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AudienceError {
    #[error("audience names unit {:?}, which the registry does not know", shown(.0))]
    UnknownUnit(String),
    #[error(
        "audience names mechanism {:?}, which the registry does not know (known: {})",
        shown(.0),
        .1
    )]
    UnknownMechanism(String, String),
    #[error(
        "audience names the office of {:?}, which is not a mechanism the registry knows",
        shown(.0)
    )]
    UnknownOffice(String),
    #[error("the audience resolves to no recipient other than the sender")]
    Empty,
}

/// A key rotation whose announcement may be in the unit's channel while
/// the registry does not show it yet. Saved before the announcement is
/// appended and removed by the same save that makes the change, so a crash
/// between the two is finished at the next start instead of leaving the
/// old key in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingRotation {
    pub unit: String,
    /// The announcement's message id in the unit's channel.
    pub message_id: String,
    pub new_public_key: Vec<u8>,
    pub old_key_id: String,
    /// The announcement's message digest: only an entry with this digest
    /// under `message_id` applies the rotation, not another message that
    /// reused or raced for the id. Empty in registries written before it.
    #[serde(default)]
    pub message_digest: Vec<u8>,
}

/// The whole registry, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registry {
    pub units: BTreeMap<String, UnitRecord>,
    pub mechanisms: BTreeMap<String, MechanismRecord>,
    /// Rotations announced but perhaps not applied yet (normally empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_rotations: Vec<PendingRotation>,
}

/// The registry is kept in the store as JSON: the store holds the bytes,
/// this module their meaning.
impl Registry {
    /// The stored registry, or None before the first start.
    pub fn load(store: &dyn Store) -> Result<Option<Self>, StoreError> {
        store
            .load_registry_bytes()?
            .map(|v| {
                serde_json::from_slice(&v)
                    .map_err(|e| StoreError::Corrupt(format!("registry: {e}")))
            })
            .transpose()
    }

    /// Replaces the stored registry with this one, durably.
    pub fn save(&self, store: &dyn Store) -> Result<(), StoreError> {
        let v = serde_json::to_vec(self).map_err(|e| StoreError::Database(e.to_string()))?;
        store.save_registry_bytes(&v)
    }
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
                joined: Vec::new(),
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
        // Asked once per message, at append time: membership as of now.
        let now = tongbao_proto::now_micros();
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
            out.extend(mech.member_names_at(now).cloned());
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
        let now = tongbao_proto::now_micros();
        self.mechanisms
            .values()
            .filter(|m| {
                audience.mechanisms.contains(&m.id)
                    || audience.offices.contains(&m.id)
                    || (m.has_member_at(sender, now)
                        && recipients.iter().any(|r| m.has_member_at(r, now)))
            })
            .map(|m| m.id.clone())
            .collect()
    }

    fn unit_mut(&mut self, id: &str) -> Result<&mut UnitRecord, RegistryError> {
        self.units
            .get_mut(id)
            .ok_or_else(|| RegistryError::UnknownUnit(id.to_string()))
    }

    /// Registers a signing key of a unit, valid from `from` until `until`
    /// (None = open-ended).
    pub fn register_key(
        &mut self,
        unit: &str,
        public_key: &[u8],
        from: i64,
        until: Option<i64>,
    ) -> Result<KeyRecord, RegistryError> {
        if public_key.len() != tongbao_proto::keys::ED25519_PUBLIC_KEY_LEN {
            return Err(RegistryError::Invalid(format!(
                "an Ed25519 public key is 32 bytes, got {}",
                public_key.len()
            )));
        }
        // Under a small-order key anyone could sign for the unit.
        if let Err(e) = tongbao_proto::ed25519::check_public_key(public_key) {
            return Err(RegistryError::Invalid(format!(
                "refusing the public key: {e}; the unit makes a fresh signing key (`tongbao keys signing-key`) and hands over its public key"
            )));
        }
        if from < 0 || until.is_some_and(|u| u <= from) {
            return Err(RegistryError::Invalid(format!(
                "validity interval [{from}, {}) is empty or negative; until must be after from",
                until
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| "open".into())
            )));
        }
        let record = self.unit_mut(unit)?;
        let id = key_id(ED25519_ALGORITHM, public_key);
        if record.key(&id).is_some() {
            return Err(RegistryError::KeyExists {
                unit: unit.to_string(),
                key_id: id,
            });
        }
        let key = KeyRecord {
            algorithm: ED25519_ALGORITHM.to_string(),
            key_id: id,
            public_key: public_key.to_vec(),
            valid_from_micros: from,
            valid_until_micros: until,
        };
        record.keys.push(key.clone());
        Ok(key)
    }

    /// Ends a key's validity at `at`. Refused when the key is already
    /// retired or when the unit would be left without a key valid after `at`.
    pub fn retire_key(&mut self, unit: &str, key_id: &str, at: i64) -> Result<i64, RegistryError> {
        let record = self.unit_mut(unit)?;
        let key = record
            .key(key_id)
            .ok_or_else(|| RegistryError::UnknownKey {
                unit: unit.to_string(),
                key_id: key_id.to_string(),
            })?;
        if let Some(until) = key.valid_until_micros
            && until <= at
        {
            return Err(RegistryError::AlreadyRetired {
                unit: unit.to_string(),
                key_id: key_id.to_string(),
                until,
            });
        }
        let successor = record
            .keys
            .iter()
            .any(|k| k.key_id != key_id && k.valid_until_micros.is_none_or(|u| u > at));
        if !successor {
            return Err(RegistryError::LastKey {
                unit: unit.to_string(),
                key_id: key_id.to_string(),
            });
        }
        let at = at.max(key.valid_from_micros);
        if let Some(k) = record.keys.iter_mut().find(|k| k.key_id == key_id) {
            k.valid_until_micros = Some(at);
        }
        Ok(at)
    }

    /// Records a rotation about to be appended (idempotent).
    pub fn begin_rotation(&mut self, pending: PendingRotation) -> Result<(), RegistryError> {
        self.unit_mut(&pending.unit)?;
        if !self
            .pending_rotations
            .iter()
            .any(|p| p.unit == pending.unit && p.message_id == pending.message_id)
        {
            self.pending_rotations.push(pending);
        }
        Ok(())
    }

    /// True while a rotation retiring this key may be appended but not
    /// applied: the key's end is not known yet.
    pub fn rotation_pending(&self, unit: &str, key_id: &str) -> bool {
        self.pending_rotations
            .iter()
            .any(|p| p.unit == unit && p.old_key_id == key_id)
    }

    /// Forgets a rotation whose announcement was never appended.
    pub fn abandon_rotation(&mut self, unit: &str, message_id: &str) {
        self.pending_rotations
            .retain(|p| !(p.unit == unit && p.message_id == message_id));
    }

    /// Applies an appended rotation: the new key from `effective` (the
    /// announcement's hub time), the old one retired then. Idempotent: a
    /// repeated announcement finds the change made and changes nothing.
    pub fn apply_rotation(
        &mut self,
        unit: &str,
        message_id: &str,
        new_public_key: &[u8],
        old_key_id: &str,
        effective: i64,
    ) -> Result<(), RegistryError> {
        match self.register_key(unit, new_public_key, effective, None) {
            Ok(_) | Err(RegistryError::KeyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        match self.retire_key(unit, old_key_id, effective) {
            Ok(_) | Err(RegistryError::AlreadyRetired { .. }) => {}
            Err(e) => return Err(e),
        }
        self.abandon_rotation(unit, message_id);
        Ok(())
    }

    /// Finishes the rotations a crash interrupted: each whose announcement
    /// is in its channel (`appended_at` gives its hub time) is applied from
    /// that time, the others are forgotten (the unit's retry starts over).
    /// Only the pending rotations are looked at, never the channels.
    /// Returns what was done, for the log.
    pub fn finish_pending_rotations<E>(
        &mut self,
        mut appended_at: impl FnMut(&PendingRotation) -> Result<Option<i64>, E>,
    ) -> Result<Vec<String>, E> {
        let mut done = Vec::new();
        for p in std::mem::take(&mut self.pending_rotations) {
            let Some(effective) = appended_at(&p)? else {
                done.push(format!(
                    "rotation {} of unit {} was never appended; dropped",
                    p.message_id, p.unit
                ));
                continue;
            };
            let outcome = self.apply_rotation(
                &p.unit,
                &p.message_id,
                &p.new_public_key,
                &p.old_key_id,
                effective,
            );
            done.push(match outcome {
                Ok(()) => format!(
                    "rotation {} of unit {}: key {} retired at {}",
                    p.message_id,
                    p.unit,
                    p.old_key_id,
                    display_micros(effective)
                ),
                Err(e) => format!(
                    "rotation {} of unit {} cannot be applied: {e}",
                    p.message_id, p.unit
                ),
            });
        }
        Ok(done)
    }

    /// Suspends (true) or reinstates (false) a unit.
    pub fn set_suspended(&mut self, unit: &str, suspended: bool) -> Result<(), RegistryError> {
        let record = self.unit_mut(unit)?;
        match (record.suspended, suspended) {
            (true, true) => Err(RegistryError::AlreadySuspended(unit.to_string())),
            (false, false) => Err(RegistryError::NotSuspended(unit.to_string())),
            _ => {
                record.suspended = suspended;
                Ok(())
            }
        }
    }

    /// Adds a unit to a mechanism from `from` on; earlier membership
    /// questions keep their answers.
    pub fn add_member(
        &mut self,
        mechanism: &str,
        unit: &str,
        from: i64,
        now: i64,
    ) -> Result<(), RegistryError> {
        if !self.units.contains_key(unit) {
            return Err(RegistryError::UnknownUnit(unit.to_string()));
        }
        if from < 0 {
            return Err(RegistryError::Invalid(
                "the effective time cannot be negative".into(),
            ));
        }
        let names = self.mechanism_names();
        let mech = self
            .mechanisms
            .get_mut(mechanism)
            .ok_or_else(|| RegistryError::UnknownMechanism(mechanism.to_string(), names))?;
        if let Some(since) = mech.member_since(unit) {
            return Err(RegistryError::AlreadyMember {
                unit: unit.to_string(),
                mechanism: mechanism.to_string(),
                from: since,
            });
        }
        mech.joined.push(Joined {
            unit: unit.to_string(),
            from_micros: from,
            recorded_micros: now,
        });
        Ok(())
    }

    /// The members of a mechanism at a time.
    pub fn members_at(&self, mechanism: &str, at: i64) -> Result<BTreeSet<String>, RegistryError> {
        self.mechanisms
            .get(mechanism)
            .map(|m| m.members_at(at))
            .ok_or_else(|| {
                RegistryError::UnknownMechanism(mechanism.to_string(), self.mechanism_names())
            })
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
                    members: m
                        .members_at(tongbao_proto::now_micros())
                        .into_iter()
                        .collect(),
                })
                .collect(),
        }
    }
}

/// A registry for tests: units civil-affairs, tax and finance; tax and
/// finance are members of fund-supervision, which civil-affairs leads.
#[cfg(test)]
pub(crate) fn example() -> Result<Registry, Box<dyn std::error::Error>> {
    use tongbao_proto::keys::{SigningKey, encode_public_key};
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

#[cfg(test)]
mod tests {
    use super::*;
    use tongbao_proto::keys::SigningKey;

    #[test]
    fn the_registry_reads_back_as_saved_and_garbled_bytes_are_corrupt()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = crate::store::SledStore::open(dir.path(), false)?;
        assert_eq!(Registry::load(&store)?, None);
        let r = example()?;
        r.save(&store)?;
        assert_eq!(Registry::load(&store)?, Some(r));
        store.save_registry_bytes(b"not json")?;
        match Registry::load(&store) {
            Err(StoreError::Corrupt(m)) => assert!(m.starts_with("registry: "), "{m}"),
            other => return Err(format!("expected a corrupt registry, got {other:?}").into()),
        }
        Ok(())
    }

    #[test]
    fn mechanism_resolves_to_members_without_sender() -> Result<(), Box<dyn std::error::Error>> {
        let r = example()?;
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
        let r = example()?;
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

    #[test]
    fn membership_has_history() -> Result<(), Box<dyn std::error::Error>> {
        let mut r = example()?;
        r.units.insert(
            "audit".into(),
            UnitRecord {
                id: "audit".into(),
                name: "audit".into(),
                name_zh: String::new(),
                suspended: false,
                keys: Vec::new(),
            },
        );
        r.add_member("fund-supervision", "audit", 1_000, 5)?;
        assert!(!r.members_at("fund-supervision", 999)?.contains("audit"));
        assert!(r.members_at("fund-supervision", 1_000)?.contains("audit"));
        let before = r.clone();
        assert!(matches!(
            r.add_member("fund-supervision", "audit", 2_000, 5),
            Err(RegistryError::AlreadyMember { from: 1_000, .. })
        ));
        assert!(matches!(
            r.add_member("nope", "audit", 2_000, 5),
            Err(RegistryError::UnknownMechanism(..))
        ));
        assert_eq!(r, before);
        Ok(())
    }

    /// `has_member_at` and the audit scopes built on it say what the
    /// member sets say, for seeded, joined, future and unknown units.
    #[test]
    fn a_member_check_agrees_with_the_member_set() -> Result<(), Box<dyn std::error::Error>> {
        let mut r = example()?;
        let later = tongbao_proto::now_micros() + 3_600_000_000;
        for id in ["audit", "health"] {
            r.units.insert(
                id.into(),
                UnitRecord {
                    id: id.into(),
                    name: id.into(),
                    name_zh: String::new(),
                    suspended: false,
                    keys: Vec::new(),
                },
            );
        }
        r.add_member("fund-supervision", "audit", 1_000, 5)?;
        r.add_member("fund-supervision", "health", later, 5)?;
        let mut asked: Vec<String> = r.units.keys().cloned().collect();
        asked.push("nobody".into());
        for m in r.mechanisms.values() {
            for at in [0, 999, 1_000, later - 1, later, i64::MAX] {
                let set = m.members_at(at);
                for u in &asked {
                    assert_eq!(m.has_member_at(u, at), set.contains(u), "{u} at {at}");
                }
            }
        }
        let to_civil_affairs = pb::Audience {
            units: vec!["civil-affairs".into()],
            ..Default::default()
        };
        let recipients = ["civil-affairs".to_string()];
        assert_eq!(
            r.audit_scopes("audit", &to_civil_affairs, &recipients),
            ["fund-supervision"]
        );
        assert!(
            r.audit_scopes("health", &to_civil_affairs, &recipients)
                .is_empty(),
            "a unit joining later shares no mechanism yet"
        );
        assert!(
            r.audit_scopes("nobody", &to_civil_affairs, &recipients)
                .is_empty()
        );
        Ok(())
    }

    #[test]
    fn an_interrupted_rotation_is_finished_or_dropped() -> Result<(), Box<dyn std::error::Error>> {
        let mut r = example()?;
        let old = r
            .unit("tax")
            .and_then(|u| u.keys.first())
            .map(|k| k.key_id.clone())
            .ok_or("no key")?;
        let new = SigningKey::generate()?;
        for id in ["appended", "lost"] {
            r.begin_rotation(PendingRotation {
                unit: "tax".into(),
                message_id: id.into(),
                new_public_key: new.public_key().to_vec(),
                old_key_id: old.clone(),
                message_digest: vec![7; 32],
            })?;
        }
        assert!(r.rotation_pending("tax", &old));
        let done = r.finish_pending_rotations(|p| {
            Ok::<_, std::convert::Infallible>((p.message_id == "appended").then_some(1_000))
        })?;
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(r.pending_rotations.is_empty() && !r.rotation_pending("tax", &old));
        let unit = r.unit("tax").ok_or("no unit")?;
        assert_eq!(
            unit.key(&old).and_then(|k| k.valid_until_micros),
            Some(1_000)
        );
        assert_eq!(
            unit.key(new.key_id()).map(|k| k.valid_from_micros),
            Some(1_000)
        );
        Ok(())
    }

    #[test]
    fn keys_have_intervals_and_a_unit_keeps_one() -> Result<(), Box<dyn std::error::Error>> {
        let mut r = example()?;
        let old = r
            .unit("tax")
            .and_then(|u| u.keys.first())
            .cloned()
            .ok_or("no key")?;
        assert!(matches!(
            r.retire_key("tax", &old.key_id, 10),
            Err(RegistryError::LastKey { .. })
        ));
        let new = SigningKey::generate()?;
        r.register_key("tax", new.public_key(), 10, None)?;
        assert!(matches!(
            r.register_key("tax", new.public_key(), 10, None),
            Err(RegistryError::KeyExists { .. })
        ));
        assert_eq!(r.retire_key("tax", &old.key_id, 10)?, 10);
        let unit = r.unit("tax").ok_or("no unit")?;
        let old = unit.key(&old.key_id).ok_or("no key")?;
        assert!(old.valid_at(9) && !old.valid_at(10));
        assert!(matches!(
            r.retire_key("tax", &old.key_id.clone(), 20),
            Err(RegistryError::AlreadyRetired { until: 10, .. })
        ));
        Ok(())
    }
}
