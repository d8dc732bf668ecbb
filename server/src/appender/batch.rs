//! What one batch decides for each of its requests, without touching the
//! store.
//!
//! The writer looks up what the store knows of a request, then asks
//! [`BatchState::plan`] what becomes of it: appended (with its seq, hub
//! time and recipients), the same as a message already stored or earlier in
//! the batch, or refused. Later requests of a batch build on the earlier
//! ones ([`BatchState::admit`]), so the rules can be tested on their own.

use super::{Answered, AppendError, EarlierAnswer};
use crate::registry::Registry;
use crate::store::{Answer, ChannelHead, MessageRecord, StoreError};
use std::collections::{BTreeMap, HashMap};
use tongbao_proto::Hash;
use tongbao_proto::canonical::GENESIS_PREVIOUS;
use tongbao_proto::merkle::stored_hash_count;
use tongbao_proto::pb::{self, Kind};

/// One request, as planning sees it.
pub(super) struct Asked<'a> {
    pub sender: &'a str,
    pub message_id: &'a str,
    pub digest: Hash,
    pub kind: Option<Kind>,
    pub audience: &'a pb::Audience,
    /// The entries it answers (a receipt or exception feedback).
    pub answers: &'a [Answered],
}

/// What the store said about a request before it was planned.
pub(super) struct Known {
    /// The idempotency record of its message id, if one is stored.
    pub stored: Result<Option<MessageRecord>, StoreError>,
    /// The stored answer to each entry it answers, in the same order.
    pub answers: Result<Vec<Option<Answer>>, StoreError>,
}

/// What becomes of one request.
#[derive(Debug)]
pub(super) enum Plan {
    /// Nothing is appended; the request is answered with this.
    Refuse(AppendError),
    /// An earlier batch appended this message (same id, same content) as
    /// `seq`: answered with that entry.
    StoredDuplicate {
        seq: u64,
    },
    /// Same message id as the request admitted `first` in this batch;
    /// whether it is the same content is told once that one is durable.
    SameAs {
        first: usize,
        digest: Hash,
    },
    Append(Draft),
}

/// An entry planned for appending: everything the writer needs to build
/// it except its hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Draft {
    pub seq: u64,
    pub hub_micros: i64,
    pub previous_leaf_hash: Hash,
    pub recipients: Vec<String>,
    /// Positions in the sender's inbox this entry answers first.
    pub fresh: Vec<u64>,
    /// Entries it names that were answered before.
    pub earlier: Vec<EarlierAnswer>,
    pub audit_scopes: Vec<String>,
}

/// What a batch has decided so far, over the tips the writer had before
/// it (which include applied batches not yet durable).
pub(super) struct BatchState<'w> {
    before: &'w BTreeMap<String, ChannelHead>,
    inboxes_before: &'w BTreeMap<String, u64>,
    /// Channel and inbox tips this batch moved.
    pub heads: HashMap<String, ChannelHead>,
    pub inbox_heads: HashMap<String, u64>,
    /// (sender, message id) of each request admitted, by admission order.
    admitted: HashMap<(String, String), usize>,
    /// (answering unit, position in its inbox) answered in this batch, by
    /// the seq of the answer.
    answered: HashMap<(String, u64), u64>,
    /// Merkle hashes of this batch, not yet in the store, by channel.
    pending_hashes: HashMap<String, HashMap<u64, Hash>>,
}

impl<'w> BatchState<'w> {
    pub fn new(
        heads: &'w BTreeMap<String, ChannelHead>,
        inbox_heads: &'w BTreeMap<String, u64>,
    ) -> Self {
        Self {
            before: heads,
            inboxes_before: inbox_heads,
            heads: HashMap::new(),
            inbox_heads: HashMap::new(),
            admitted: HashMap::new(),
            answered: HashMap::new(),
            pending_hashes: HashMap::new(),
        }
    }

    /// Decides what becomes of `asked`, at hub time `now`. Changes nothing:
    /// an appended request is recorded by [`BatchState::admit`].
    pub fn plan(&self, asked: &Asked<'_>, known: Known, registry: &Registry, now: i64) -> Plan {
        let sender = asked.sender;
        let id = (sender.to_string(), asked.message_id.to_string());
        if let Some(&first) = self.admitted.get(&id) {
            return Plan::SameAs {
                first,
                digest: asked.digest,
            };
        }
        match known.stored {
            Err(e) => return Plan::Refuse(AppendError::Storage(e.into())),
            Ok(Some(rec)) if rec.message_digest != asked.digest => {
                return Plan::Refuse(AppendError::IdReused {
                    sender: sender.to_string(),
                    message_id: asked.message_id.to_string(),
                    seq: rec.seq,
                });
            }
            Ok(Some(rec)) => return Plan::StoredDuplicate { seq: rec.seq },
            Ok(None) => {}
        }
        if registry.unit(sender).is_none() {
            return Plan::Refuse(AppendError::UnknownSender(sender.to_string()));
        }
        let recipients = match registry.resolve(sender, asked.audience) {
            Ok(r) => r,
            Err(e) => return Plan::Refuse(e.into()),
        };
        let stored = match known.answers {
            Ok(s) => s,
            Err(e) => return Plan::Refuse(AppendError::Storage(e.into())),
        };
        // Answers given before (stored or earlier in this batch) stay as they were.
        let mut earlier = Vec::new();
        let mut fresh = Vec::new();
        // One key for the whole request (up to 4,096 answers): only its
        // position changes, so the sender's name is copied once.
        let mut key = (sender.to_string(), 0);
        for (a, stored) in asked.answers.iter().zip(stored) {
            key.1 = a.cursor;
            let before = self.answered.get(&key).copied().or(stored.map(|by| by.seq));
            match before {
                Some(answered_by) => earlier.push(EarlierAnswer {
                    channel: a.channel.clone(),
                    seq: a.seq,
                    answered_by,
                }),
                None => fresh.push(a.cursor),
            }
        }
        if fresh.is_empty() && !earlier.is_empty() {
            return Plan::Refuse(AppendError::AlreadyAnswered {
                sender: sender.to_string(),
                earlier,
            });
        }
        let audit_scopes = match asked.kind {
            Some(Kind::Receipt | Kind::ExceptionFeedback) => Vec::new(),
            _ => registry.audit_scopes(sender, asked.audience, &recipients),
        };
        let head = self.head(sender);
        Plan::Append(Draft {
            seq: head.next_seq,
            // Hub time never goes back within a channel.
            hub_micros: now.max(head.last_hub_micros),
            previous_leaf_hash: head.last_leaf_hash,
            recipients,
            fresh,
            earlier,
            audit_scopes,
        })
    }

    /// Records an appended request, so that later ones build on it; returns
    /// its admission index and its position in each recipient's inbox.
    pub fn admit(
        &mut self,
        asked: &Asked<'_>,
        draft: &Draft,
        leaf_hash: Hash,
        tree_hashes: &[Hash],
    ) -> (usize, Vec<u64>) {
        let sender = asked.sender;
        let pending = self.pending_hashes.entry(sender.to_string()).or_default();
        let first = stored_hash_count(draft.seq);
        for (i, h) in tree_hashes.iter().enumerate() {
            pending.insert(first + i as u64, *h);
        }
        let cursors = draft
            .recipients
            .iter()
            .map(|inbox| {
                let c = self
                    .inbox_heads
                    .entry(inbox.clone())
                    .or_insert_with(|| self.inboxes_before.get(inbox).copied().unwrap_or(0));
                *c += 1;
                *c
            })
            .collect();
        self.heads.insert(
            sender.to_string(),
            ChannelHead {
                next_seq: draft.seq + 1,
                last_leaf_hash: leaf_hash,
                last_hub_micros: draft.hub_micros,
            },
        );
        for cursor in &draft.fresh {
            self.answered
                .insert((sender.to_string(), *cursor), draft.seq);
        }
        let index = self.admitted.len();
        self.admitted
            .insert((sender.to_string(), asked.message_id.to_string()), index);
        (index, cursors)
    }

    /// The Merkle hashes this batch added to `channel` so far.
    pub fn pending_hashes(&self, channel: &str) -> Option<&HashMap<u64, Hash>> {
        self.pending_hashes.get(channel)
    }

    /// The tip of `channel` including this batch.
    fn head(&self, channel: &str) -> ChannelHead {
        match self.heads.get(channel) {
            Some(h) => *h,
            None => self.before.get(channel).copied().unwrap_or(ChannelHead {
                next_seq: 0,
                last_leaf_hash: GENESIS_PREVIOUS,
                last_hub_micros: 0,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AnswerKind;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn to_units(units: &[&str]) -> pb::Audience {
        pb::Audience {
            units: units.iter().map(|u| (*u).to_string()).collect(),
            ..Default::default()
        }
    }

    fn asked<'a>(
        sender: &'a str,
        message_id: &'a str,
        content: u8,
        audience: &'a pb::Audience,
    ) -> Asked<'a> {
        Asked {
            sender,
            message_id,
            digest: [content; 32],
            kind: Some(Kind::Notification),
            audience,
            answers: &[],
        }
    }

    fn nothing_stored() -> Known {
        Known {
            stored: Ok(None),
            answers: Ok(Vec::new()),
        }
    }

    fn draft(plan: Plan) -> Result<Draft, String> {
        match plan {
            Plan::Append(d) => Ok(d),
            other => Err(format!("expected an append, got {other:?}")),
        }
    }

    #[test]
    fn fresh_messages_follow_the_tips_and_each_other() -> TestResult {
        let registry = crate::registry::example()?;
        let heads = BTreeMap::from([(
            "tax".to_string(),
            ChannelHead {
                next_seq: 7,
                last_leaf_hash: [1; 32],
                last_hub_micros: 500,
            },
        )]);
        let inbox_heads = BTreeMap::from([("finance".to_string(), 3)]);
        let mut state = BatchState::new(&heads, &inbox_heads);
        let to_finance = to_units(&["finance"]);
        let first = asked("tax", "m1", 1, &to_finance);
        let d = draft(state.plan(&first, nothing_stored(), &registry, 1_000))?;
        assert_eq!(
            (d.seq, d.hub_micros, d.previous_leaf_hash),
            (7, 1_000, [1; 32])
        );
        assert_eq!(d.recipients, ["finance"]);
        assert_eq!(d.audit_scopes, ["fund-supervision"]);
        assert!(d.fresh.is_empty() && d.earlier.is_empty());
        assert_eq!(state.admit(&first, &d, [2; 32], &[[2; 32]]), (0, vec![4]));

        // The next one builds on the first, and hub time never goes back.
        let to_two = to_units(&["finance", "civil-affairs"]);
        let second = asked("tax", "m2", 2, &to_two);
        let d = draft(state.plan(&second, nothing_stored(), &registry, 900))?;
        assert_eq!(
            (d.seq, d.hub_micros, d.previous_leaf_hash),
            (8, 1_000, [2; 32])
        );
        // Recipients in the registry's order, each at its inbox's next position.
        assert_eq!(d.recipients, ["civil-affairs", "finance"]);
        assert_eq!(
            state.admit(&second, &d, [3; 32], &[[3; 32]]),
            (1, vec![1, 5])
        );
        assert_eq!(state.heads.get("tax").map(|h| h.next_seq), Some(9));
        assert_eq!(state.inbox_heads.get("finance"), Some(&5));
        assert_eq!(state.inbox_heads.get("civil-affairs"), Some(&1));
        assert!(state.pending_hashes("tax").is_some_and(|p| p.len() == 2));

        // A channel with no entries starts at seq 0 after the genesis hash.
        let to_tax = to_units(&["tax"]);
        let d = draft(state.plan(
            &asked("finance", "m1", 3, &to_tax),
            nothing_stored(),
            &registry,
            1_100,
        ))?;
        assert_eq!((d.seq, d.previous_leaf_hash), (0, GENESIS_PREVIOUS));
        Ok(())
    }

    #[test]
    fn a_message_id_used_earlier_in_the_batch_waits_for_the_first() -> TestResult {
        let registry = crate::registry::example()?;
        let (heads, inbox_heads) = (BTreeMap::new(), BTreeMap::new());
        let mut state = BatchState::new(&heads, &inbox_heads);
        let to_finance = to_units(&["finance"]);
        let first = asked("tax", "m1", 1, &to_finance);
        let d = draft(state.plan(&first, nothing_stored(), &registry, 1))?;
        state.admit(&first, &d, [2; 32], &[[2; 32]]);
        // Same id, same or other content: decided against the first once
        // it is durable. Whatever the store says is not asked.
        for content in [1, 9] {
            let again = asked("tax", "m1", content, &to_finance);
            let known = Known {
                stored: Err(StoreError::Corrupt("not read".into())),
                answers: Ok(Vec::new()),
            };
            match state.plan(&again, known, &registry, 2) {
                Plan::SameAs { first: 0, digest } => assert_eq!(digest, [content; 32]),
                other => return Err(format!("expected the first, got {other:?}").into()),
            }
        }
        // Message ids are per sender.
        let to_tax = to_units(&["tax"]);
        draft(state.plan(
            &asked("finance", "m1", 1, &to_tax),
            nothing_stored(),
            &registry,
            3,
        ))?;
        Ok(())
    }

    #[test]
    fn a_stored_message_id_is_a_duplicate_or_a_reused_id() -> TestResult {
        let registry = crate::registry::example()?;
        let (heads, inbox_heads) = (BTreeMap::new(), BTreeMap::new());
        let state = BatchState::new(&heads, &inbox_heads);
        let to_finance = to_units(&["finance"]);
        let stored = |content: u8| Known {
            stored: Ok(Some(MessageRecord {
                seq: 3,
                message_digest: [content; 32],
            })),
            answers: Ok(Vec::new()),
        };
        let same = asked("tax", "m1", 1, &to_finance);
        assert!(matches!(
            state.plan(&same, stored(1), &registry, 1),
            Plan::StoredDuplicate { seq: 3 }
        ));
        match state.plan(&same, stored(2), &registry, 1) {
            Plan::Refuse(AppendError::IdReused {
                sender,
                message_id,
                seq: 3,
            }) => assert_eq!((sender.as_str(), message_id.as_str()), ("tax", "m1")),
            other => return Err(format!("expected a reused id, got {other:?}").into()),
        }
        Ok(())
    }

    #[test]
    fn refusals_name_what_is_wrong() -> TestResult {
        let registry = crate::registry::example()?;
        let (heads, inbox_heads) = (BTreeMap::new(), BTreeMap::new());
        let state = BatchState::new(&heads, &inbox_heads);
        let to_finance = to_units(&["finance"]);
        let to_nobody = to_units(&["nobody"]);
        let refused = |plan: Plan| match plan {
            Plan::Refuse(e) => Ok(e),
            other => Err(format!("expected a refusal, got {other:?}")),
        };
        let e = refused(state.plan(
            &asked("nobody", "m1", 1, &to_finance),
            nothing_stored(),
            &registry,
            1,
        ))?;
        assert!(matches!(e, AppendError::UnknownSender(u) if u == "nobody"));
        let e = refused(state.plan(
            &asked("tax", "m1", 1, &to_nobody),
            nothing_stored(),
            &registry,
            1,
        ))?;
        assert!(matches!(e, AppendError::Audience(_)), "{e}");
        let e = refused(state.plan(
            &asked("tax", "m1", 1, &to_finance),
            Known {
                stored: Err(StoreError::Corrupt("idempotency record".into())),
                answers: Ok(Vec::new()),
            },
            &registry,
            1,
        ))?;
        assert!(matches!(e, AppendError::Storage(_)), "{e}");
        let e = refused(state.plan(
            &asked("tax", "m1", 1, &to_finance),
            Known {
                stored: Ok(None),
                answers: Err(StoreError::Corrupt("answer record".into())),
            },
            &registry,
            1,
        ))?;
        assert!(e.to_string().contains("answer record"), "{e}");
        Ok(())
    }

    #[test]
    fn an_entry_is_answered_once_whether_stored_or_in_the_batch() -> TestResult {
        let registry = crate::registry::example()?;
        let (heads, inbox_heads) = (BTreeMap::new(), BTreeMap::new());
        let mut state = BatchState::new(&heads, &inbox_heads);
        let to_tax = to_units(&["tax"]);
        let answers = [
            Answered {
                channel: "tax".into(),
                seq: 7,
                cursor: 4,
            },
            Answered {
                channel: "tax".into(),
                seq: 8,
                cursor: 5,
            },
        ];
        let receipt = Asked {
            kind: Some(Kind::Receipt),
            answers: &answers,
            ..asked("finance", "r1", 1, &to_tax)
        };
        // Entry tax:8 was answered by finance:2 in an earlier batch.
        let known = Known {
            stored: Ok(None),
            answers: Ok(vec![
                None,
                Some(Answer {
                    kind: AnswerKind::Acknowledged,
                    seq: 2,
                    hub_micros: 1,
                }),
            ]),
        };
        let d = draft(state.plan(&receipt, known, &registry, 10))?;
        assert_eq!(d.fresh, [4]);
        assert_eq!(
            d.earlier,
            [EarlierAnswer {
                channel: "tax".into(),
                seq: 8,
                answered_by: 2,
            }]
        );
        assert!(d.audit_scopes.is_empty(), "receipts are not audited");
        state.admit(&receipt, &d, [5; 32], &[[5; 32]]);

        // Tax:7 again, later in the same batch: answered by the first receipt.
        let again = Asked {
            answers: &answers[..1],
            ..asked("finance", "r2", 2, &to_tax)
        };
        let known = Known {
            stored: Ok(None),
            answers: Ok(vec![None]),
        };
        match state.plan(&again, known, &registry, 11) {
            Plan::Refuse(AppendError::AlreadyAnswered { sender, earlier }) => {
                assert_eq!(sender, "finance");
                assert_eq!(
                    earlier,
                    [EarlierAnswer {
                        channel: "tax".into(),
                        seq: 7,
                        answered_by: d.seq,
                    }]
                );
            }
            other => return Err(format!("expected already answered, got {other:?}").into()),
        }
        Ok(())
    }
}
