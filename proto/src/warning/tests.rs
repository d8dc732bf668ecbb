//! Warnings, answers and lifts checked as a recipient or an offline
//! verifier would, with each way of breaking the tie to the warning.

use super::*;
use crate::keys::{RegisteredKey, SigningKey};
use crate::pb::{Kind, References};
use crate::workflow::{CONTENT_TYPE, encode_step};
use std::collections::HashMap;

const ORG: &str = "51140000MJ0000012R";
const OTHER_ORG: &str = "53140000MJY0001237";

type R = Result<(), Box<dyn std::error::Error>>;

struct World {
    keys: HashMap<String, SigningKey>,
    seq: u64,
}

impl World {
    fn new() -> Result<Self, crate::keys::KeyError> {
        let mut keys = HashMap::new();
        for u in ["tax", "finance", "pbc-taiyuan"] {
            keys.insert(u.to_string(), SigningKey::generate()?);
        }
        Ok(Self { keys, seq: 0 })
    }

    fn entry(&mut self, unit: &str, kind: Kind, org: &str, step: Step) -> Option<Entry> {
        let key = self.keys.get(unit)?;
        let signed = key.sign_message(Message {
            message_id: format!("{unit}-{}", self.seq),
            sender: unit.into(),
            kind: kind as i32,
            subject: "s".into(),
            body: encode_step(step).into(),
            content_type: CONTENT_TYPE.into(),
            created_micros: 1,
            references: Some(References {
                organizations: vec![Organization {
                    credit_code: org.into(),
                    name: String::new(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        });
        self.seq += 1;
        Some(Entry {
            channel: unit.into(),
            seq: self.seq,
            hub_micros: 1,
            previous_leaf_hash: vec![0; 32],
            message: Some(signed),
            ..Default::default()
        })
    }

    fn keys(&self) -> impl Fn(&str, &str) -> Option<RegisteredKey> + '_ {
        |unit, key_id| {
            self.keys
                .get(unit)
                .filter(|k| k.key_id() == key_id)
                .map(|k| RegisteredKey {
                    unit: unit.into(),
                    algorithm: crate::keys::ED25519_ALGORITHM.into(),
                    key_id: key_id.into(),
                    public_key: k.public_key().to_vec(),
                    valid_from_micros: 0,
                    valid_until_micros: 0,
                })
        }
    }
}

fn pin(e: &Entry) -> pb::EntryPin {
    pb::EntryPin {
        channel: e.channel.clone(),
        seq: e.seq,
        leaf_hash: crate::canonical::leaf_hash(e).to_vec(),
    }
}

fn warning() -> pb::JointWarning {
    pb::JointWarning {
        warning_id: "w-1".into(),
        mechanism: "fund-supervision".into(),
        level: WarningLevel::Caution as i32,
        grounds: "abnormal fund movements".into(),
        evidence: vec![pb::EntryPin {
            channel: "pbc-taiyuan".into(),
            seq: 4,
            leaf_hash: vec![7; 32],
        }],
    }
}

fn measures(on: &Entry, list: &[&str], reason: &str) -> Step {
    Step::WarningMeasures(pb::WarningMeasures {
        warning_id: "w-1".into(),
        warning: Some(pin(on)),
        measures: list.iter().map(|s| s.to_string()).collect(),
        reason: reason.into(),
    })
}

fn lift(on: &Entry) -> Step {
    Step::WarningLift(pb::WarningLift {
        warning_id: "w-1".into(),
        warning: Some(pin(on)),
        reason: "funds returned".into(),
    })
}

#[test]
fn answers_and_lifts_tie_to_their_warning() -> R {
    let mut w = World::new()?;
    let warn = w
        .entry(
            "pbc-taiyuan",
            Kind::JointWarning,
            ORG,
            Step::JointWarning(warning()),
        )
        .ok_or("no entry")?;
    let answer = w
        .entry(
            "tax",
            Kind::WarningMeasures,
            ORG,
            measures(&warn, &["audit opened"], ""),
        )
        .ok_or("no entry")?;
    let v = verify_answer(&warn, &answer, &w.keys())?;
    assert_eq!(v.issuer, "pbc-taiyuan");
    assert_eq!(v.unit, "tax");
    assert_eq!(v.organization.credit_code, ORG);
    let none = w
        .entry(
            "finance",
            Kind::WarningMeasures,
            ORG,
            measures(&warn, &[], "no accounts with us"),
        )
        .ok_or("no entry")?;
    verify_answer(&warn, &none, &w.keys())?;
    let lifted = w
        .entry("pbc-taiyuan", Kind::WarningLift, ORG, lift(&warn))
        .ok_or("no entry")?;
    verify_answer(&warn, &lifted, &w.keys())?;
    Ok(())
}

#[test]
fn a_broken_tie_is_refused() -> R {
    let mut w = World::new()?;
    let warn = w
        .entry(
            "pbc-taiyuan",
            Kind::JointWarning,
            ORG,
            Step::JointWarning(warning()),
        )
        .ok_or("no entry")?;
    // A lift by another unit than the issuer.
    let by_tax = w
        .entry("tax", Kind::WarningLift, ORG, lift(&warn))
        .ok_or("no entry")?;
    let e = verify_answer(&warn, &by_tax, &w.keys())
        .err()
        .ok_or("lift by tax")?;
    assert!(e.to_string().contains("only by its issuer"), "{e}");
    // An answer about another organization.
    let other = w
        .entry(
            "tax",
            Kind::WarningMeasures,
            OTHER_ORG,
            measures(&warn, &["x"], ""),
        )
        .ok_or("no entry")?;
    let e = verify_answer(&warn, &other, &w.keys())
        .err()
        .ok_or("other org")?;
    assert!(e.to_string().contains("about organization"), "{e}");
    // An answer pinning a changed warning (another leaf hash).
    let mut changed = warn.clone();
    changed.hub_micros = 2;
    let stale = w
        .entry(
            "tax",
            Kind::WarningMeasures,
            ORG,
            measures(&changed, &["x"], ""),
        )
        .ok_or("no entry")?;
    let e = verify_answer(&warn, &stale, &w.keys())
        .err()
        .ok_or("stale pin")?;
    assert!(e.to_string().contains("another entry"), "{e}");
    // A tampered answer no longer verifies.
    let mut tampered = w
        .entry(
            "tax",
            Kind::WarningMeasures,
            ORG,
            measures(&warn, &["x"], ""),
        )
        .ok_or("no entry")?;
    if let Some(m) = tampered.message.as_mut().and_then(|s| s.message.as_mut()) {
        m.subject = "changed".into();
    }
    assert!(verify_answer(&warn, &tampered, &w.keys()).is_err());
    // No measures and no reason is not an answer.
    let empty = w
        .entry("tax", Kind::WarningMeasures, ORG, measures(&warn, &[], " "))
        .ok_or("no entry")?;
    let e = verify_answer(&warn, &empty, &w.keys())
        .err()
        .ok_or("empty answer")?;
    assert!(e.to_string().contains("states the reason"), "{e}");
    // The warning itself must be a warning.
    assert!(verify_answer(&empty, &empty, &w.keys()).is_err());
    Ok(())
}

fn message_naming(orgs: &[&str]) -> Message {
    Message {
        references: Some(References {
            organizations: orgs
                .iter()
                .map(|c| Organization {
                    credit_code: c.to_string(),
                    name: String::new(),
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_warning_names_one_valid_organization_and_its_shape() {
    let m = message_naming(&[ORG]);
    assert_eq!(check_warning(&m, &warning()), Ok(()));
    for bad in [message_naming(&[]), message_naming(&[ORG, OTHER_ORG])] {
        let e = check_warning(&bad, &warning()).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("exactly one organization")));
    }
    let e = check_warning(&message_naming(&["51140000MJ0000012X"]), &warning());
    assert!(
        e.err()
            .is_some_and(|e| e.to_string().contains("check character"))
    );
    let broken: Vec<(pb::JointWarning, &str)> = vec![
        (
            pb::JointWarning {
                warning_id: String::new(),
                ..warning()
            },
            "warning id",
        ),
        (
            pb::JointWarning {
                mechanism: String::new(),
                ..warning()
            },
            "mechanism",
        ),
        (
            pb::JointWarning {
                level: 0,
                ..warning()
            },
            "level",
        ),
        (
            pb::JointWarning {
                level: 9,
                ..warning()
            },
            "level",
        ),
        (
            pb::JointWarning {
                grounds: " ".into(),
                ..warning()
            },
            "grounds",
        ),
        (
            pb::JointWarning {
                evidence: vec![],
                ..warning()
            },
            "evidence",
        ),
        (
            pb::JointWarning {
                evidence: vec![warning().evidence[0].clone(); 2],
                ..warning()
            },
            "twice",
        ),
        (
            pb::JointWarning {
                evidence: vec![pb::EntryPin::default()],
                ..warning()
            },
            "leaf hash",
        ),
        (
            pb::JointWarning {
                evidence: (0..=MAX_EVIDENCE as u64)
                    .map(|seq| pb::EntryPin {
                        channel: "tax".into(),
                        seq,
                        leaf_hash: vec![1; 32],
                    })
                    .collect(),
                ..warning()
            },
            "1 to 32",
        ),
    ];
    for (w, words) in broken {
        let e = check_warning(&m, &w)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(words), "{words}: {e}");
    }
}
