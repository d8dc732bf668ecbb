//! What the hub accepts in a message, before any signature work.
//!
//! Pure checks of a message against the caller's identity and the limits of
//! the hub's config. The gRPC layer maps each refusal to a status; this
//! module knows nothing of gRPC.

use crate::config::Limits;
use std::collections::BTreeSet;
use tongbao_proto::credit_code::{CreditCodeError, check_organizations};
use tongbao_proto::echo::shown;
use tongbao_proto::identity::check_id;
use tongbao_proto::pb::{self, Classification, Kind, Priority, Problem, SharingCondition};
use tongbao_proto::{HASH_LEN, kinds};

/// Why a message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("unit {caller} may push only as itself, but the message names sender {:?}", shown(.claimed))]
    NotSender { caller: String, claimed: String },
    #[error(
        "classified (涉密) material must never be sent through Tongbao; use the classified channel instead"
    )]
    Classified,
}

fn malformed(s: impl Into<String>) -> PolicyError {
    PolicyError::Malformed(s.into())
}

fn valid_message_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Checks a pushed message from unit `caller` at hub time `now_micros`.
/// Returns the message so callers need not unwrap it again.
pub fn check_push<'a>(
    signed: &'a pb::SignedMessage,
    caller: &str,
    limits: &Limits,
    now_micros: i64,
) -> Result<&'a pb::Message, PolicyError> {
    let m = check_message(signed, caller, limits, now_micros)?;
    if kinds::is_workflow(m.kind) {
        return Err(malformed(format!(
            "kind {} is a workflow step: submit it through Workflow.Submit (the tongbao meeting, minutes, joint, liaison and statistics commands), not Push",
            kinds::name(m.kind)
        )));
    }
    if !kinds::is_pushable(m.kind) {
        return Err(malformed(format!(
            "kind {} ({}) cannot be pushed; pushable kinds: {}",
            m.kind,
            kinds::name(m.kind),
            kinds::pushable().collect::<Vec<_>>().join(", ")
        )));
    }
    if m.acknowledgement.is_some() {
        return Err(malformed(
            "acknowledgements go through Acknowledge, not Push",
        ));
    }
    let is_feedback = m.kind == Kind::ExceptionFeedback as i32;
    match (&m.exception, is_feedback) {
        (Some(x), true) => check_exception(x, m)?,
        (None, true) => {
            return Err(malformed(
                "exception feedback must carry an exception report",
            ));
        }
        (Some(_), false) => {
            return Err(malformed(
                "only exception feedback may carry an exception report",
            ));
        }
        (None, false) => {}
    }
    Ok(m)
}

/// Checks a workflow step from unit `caller`: every rule of a message, a
/// workflow kind, and neither acknowledgement nor exception report.
pub fn check_workflow_message<'a>(
    signed: &'a pb::SignedMessage,
    caller: &str,
    limits: &Limits,
    now_micros: i64,
) -> Result<&'a pb::Message, PolicyError> {
    check_special_kind(signed, caller, limits, now_micros, "a workflow step", |k| {
        kinds::is_workflow(k)
    })
}

/// Checks a key-rotation announcement from unit `caller` (its body is
/// read by `tongbao_proto::rotation`): kind key rotation, nothing else.
pub fn check_key_rotation<'a>(
    signed: &'a pb::SignedMessage,
    caller: &str,
    limits: &Limits,
    now_micros: i64,
) -> Result<&'a pb::Message, PolicyError> {
    check_special_kind(
        signed,
        caller,
        limits,
        now_micros,
        "a key-rotation announcement",
        |k| k == Kind::KeyRotation as i32,
    )
}

/// Every rule of a message, a kind only `what` may have, and neither
/// acknowledgement nor exception report: messages that go through their
/// own call rather than `Push`.
fn check_special_kind<'a>(
    signed: &'a pb::SignedMessage,
    caller: &str,
    limits: &Limits,
    now_micros: i64,
    what: &str,
    kind_ok: impl Fn(i32) -> bool,
) -> Result<&'a pb::Message, PolicyError> {
    let m = check_message(signed, caller, limits, now_micros)?;
    if !kind_ok(m.kind) {
        return Err(malformed(format!(
            "kind {} cannot be {what}",
            kinds::name(m.kind)
        )));
    }
    if m.acknowledgement.is_some() || m.exception.is_some() {
        return Err(malformed(format!(
            "{what} carries neither an acknowledgement nor an exception report"
        )));
    }
    Ok(m)
}

/// The most entries one receipt may acknowledge.
pub const MAX_RECEIPT_ENTRIES: usize = 4096;

/// Checks a receipt from unit `caller`: kind receipt, a non-empty list of
/// entries, addressed to exactly the senders of those entries.
pub fn check_receipt<'a>(
    signed: &'a pb::SignedMessage,
    caller: &str,
    limits: &Limits,
    now_micros: i64,
) -> Result<(&'a pb::Message, &'a [pb::EntryPin]), PolicyError> {
    let m = check_message(signed, caller, limits, now_micros)?;
    if m.kind != Kind::Receipt as i32 {
        return Err(malformed(format!(
            "a receipt must have kind receipt, not {}",
            kinds::name(m.kind)
        )));
    }
    if m.exception.is_some() {
        return Err(malformed(
            "a receipt cannot carry an exception report; push exception feedback instead",
        ));
    }
    let pins = m
        .acknowledgement
        .as_ref()
        .map(|a| a.entries.as_slice())
        .unwrap_or_default();
    if pins.is_empty() {
        return Err(malformed("the receipt acknowledges no entry"));
    }
    if pins.len() > MAX_RECEIPT_ENTRIES {
        return Err(PolicyError::TooLarge(format!(
            "the receipt acknowledges {} entries; at most {MAX_RECEIPT_ENTRIES} per receipt",
            pins.len()
        )));
    }
    if tongbao_proto::redact::has_free_text(m) {
        return Err(malformed(format!(
            "a receipt carries no free text, so that offices audit it whole: its subject is exactly {:?} and it has no body, content type or attachments",
            tongbao_proto::redact::receipt_subject(pins.len())
        )));
    }
    // Keyed seq first: pins mostly differ in seq, so most comparisons are
    // of integers, not of channel names.
    let mut named_once = BTreeSet::new();
    for p in pins {
        check_pin(p)?;
        if !named_once.insert((p.seq, p.channel.as_str())) {
            return Err(malformed(format!(
                "the receipt names entry {}:{} more than once; name each entry once",
                p.channel, p.seq
            )));
        }
    }
    let senders: BTreeSet<&str> = pins.iter().map(|p| p.channel.as_str()).collect();
    let audience = m.audience.clone().unwrap_or_default();
    let named: BTreeSet<&str> = audience.units.iter().map(String::as_str).collect();
    if named != senders
        || !audience.mechanisms.is_empty()
        || !audience.offices.is_empty()
        || audience.leading_group
    {
        return Err(malformed(format!(
            "a receipt is addressed to exactly the senders of the entries it acknowledges ({})",
            senders
                .into_iter()
                .map(shown)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok((m, pins))
}

fn check_pin(p: &pb::EntryPin) -> Result<(), PolicyError> {
    check_id("channel", &p.channel).map_err(|e| malformed(e.to_string()))?;
    if p.leaf_hash.len() != HASH_LEN {
        return Err(malformed(format!(
            "entry {}:{}: leaf hash must be 32 bytes, got {}",
            shown(&p.channel),
            p.seq,
            p.leaf_hash.len()
        )));
    }
    Ok(())
}

fn check_exception(x: &pb::ExceptionReport, m: &pb::Message) -> Result<(), PolicyError> {
    let pin = x
        .entry
        .as_ref()
        .ok_or_else(|| malformed("the exception report names no entry"))?;
    check_pin(pin)?;
    match Problem::try_from(x.problem) {
        Ok(Problem::Unspecified) | Err(_) => {
            return Err(malformed(
                "exception feedback needs a problem: misaddressed, unreadable, outside-competence or other",
            ));
        }
        Ok(Problem::Other) if x.text.trim().is_empty() => {
            return Err(malformed(
                "exception feedback of problem \"other\" needs a text",
            ));
        }
        Ok(_) => {}
    }
    let audience = m.audience.clone().unwrap_or_default();
    if audience.units != [pin.channel.clone()] || !audience.mechanisms.is_empty() {
        return Err(malformed(format!(
            "exception feedback is addressed to the sender of the entry it answers ({}) and may copy offices only",
            shown(&pin.channel)
        )));
    }
    Ok(())
}

/// Checks what every signed message must satisfy, whatever its kind.
fn check_message<'a>(
    signed: &'a pb::SignedMessage,
    caller: &str,
    limits: &Limits,
    now_micros: i64,
) -> Result<&'a pb::Message, PolicyError> {
    let m = signed
        .message
        .as_ref()
        .ok_or_else(|| malformed("the request carries no message"))?;
    if signed.signature.is_none() {
        return Err(malformed("the message is not signed (signature missing)"));
    }
    if m.sender != caller {
        return Err(PolicyError::NotSender {
            caller: caller.to_string(),
            claimed: m.sender.clone(),
        });
    }
    if m.message_id.len() > limits.max_message_id_bytes || !valid_message_id(&m.message_id) {
        return Err(malformed(format!(
            "message id {:?} is not valid: use 1 to {} characters A-Z, a-z, 0-9, '-', '_', '.', ':'",
            shown(&m.message_id),
            limits.max_message_id_bytes
        )));
    }
    check_audience(m.audience.as_ref(), limits)?;
    check_labels(m.labels.as_ref())?;
    if m.subject.trim().is_empty() {
        return Err(malformed("subject is empty"));
    }
    if m.subject.len() > limits.max_subject_bytes {
        return Err(PolicyError::TooLarge(format!(
            "subject is {} bytes; this hub accepts at most {} (limits.max_subject_bytes)",
            m.subject.len(),
            limits.max_subject_bytes
        )));
    }
    if m.body.len() > limits.max_body_bytes {
        return Err(PolicyError::TooLarge(format!(
            "body is {} bytes; this hub accepts at most {} (limits.max_body_bytes); send large files as attachments by digest",
            m.body.len(),
            limits.max_body_bytes
        )));
    }
    if m.content_type.len() > 255 {
        return Err(malformed("content type is longer than 255 bytes"));
    }
    if m.attachments.len() > limits.max_attachments {
        return Err(PolicyError::TooLarge(format!(
            "{} attachment digests; this hub accepts at most {} (limits.max_attachments)",
            m.attachments.len(),
            limits.max_attachments
        )));
    }
    for a in &m.attachments {
        if a.name.is_empty() || a.name.len() > 255 {
            return Err(malformed("every attachment needs a name of 1 to 255 bytes"));
        }
        if a.sha256.len() != HASH_LEN {
            return Err(malformed(format!(
                "attachment {:?}: sha256 must be 32 bytes, got {}",
                shown(&a.name),
                a.sha256.len()
            )));
        }
    }
    if let Some(r) = &m.references {
        if let Some(to) = &r.reply_to {
            check_id("reply-to channel", &to.channel).map_err(|e| malformed(e.to_string()))?;
        }
        if r.case_id.len() > 128 {
            return Err(malformed("case id is longer than 128 bytes"));
        }
        check_organizations(&r.organizations).map_err(|e| match e {
            CreditCodeError::TooMany { .. } => PolicyError::TooLarge(e.to_string()),
            _ => malformed(e.to_string()),
        })?;
    }
    if m.created_micros <= 0 {
        return Err(malformed("creation time is missing"));
    }
    let skew = i64::try_from(limits.max_clock_skew_secs)
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000);
    if m.created_micros > now_micros.saturating_add(skew) {
        return Err(malformed(format!(
            "creation time is {} s ahead of the hub's clock (allowed: {} s); check the sender's clock",
            (m.created_micros - now_micros) / 1_000_000,
            limits.max_clock_skew_secs
        )));
    }
    let age = i64::try_from(limits.max_message_age_secs)
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000);
    if m.created_micros < now_micros.saturating_sub(age) {
        return Err(malformed(format!(
            "message was created {} s ago; this hub accepts messages at most {} s old (limits.max_message_age_secs)",
            (now_micros - m.created_micros) / 1_000_000,
            limits.max_message_age_secs
        )));
    }
    Ok(m)
}

fn check_audience(a: Option<&pb::Audience>, limits: &Limits) -> Result<(), PolicyError> {
    let a = a.ok_or_else(|| malformed("the message names no audience"))?;
    let names = a.units.len() + a.mechanisms.len() + a.offices.len();
    if names == 0 && !a.leading_group {
        return Err(malformed(
            "the audience is empty: name units, mechanisms, offices or the leading group",
        ));
    }
    if names > limits.max_audience_names {
        return Err(PolicyError::TooLarge(format!(
            "audience names {names} units, mechanisms and offices; at most {} (limits.max_audience_names)",
            limits.max_audience_names
        )));
    }
    for u in &a.units {
        check_id("unit", u).map_err(|e| malformed(e.to_string()))?;
    }
    for m in a.mechanisms.iter().chain(&a.offices) {
        check_id("mechanism", m).map_err(|e| malformed(e.to_string()))?;
    }
    Ok(())
}

fn check_labels(l: Option<&pb::Labels>) -> Result<(), PolicyError> {
    let Some(l) = l else { return Ok(()) };
    if Classification::try_from(l.classification).is_err() {
        return Err(malformed(format!(
            "unknown classification label {}",
            l.classification
        )));
    }
    if l.classification == Classification::Classified as i32 {
        return Err(PolicyError::Classified);
    }
    if SharingCondition::try_from(l.sharing).is_err() {
        return Err(malformed(format!(
            "unknown sharing condition {}",
            l.sharing
        )));
    }
    if Priority::try_from(l.priority).is_err() {
        return Err(malformed(format!("unknown priority {}", l.priority)));
    }
    if l.ack_deadline_micros < 0 {
        return Err(malformed("acknowledgement deadline is negative"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000_000;

    fn ok_message() -> pb::SignedMessage {
        pb::SignedMessage {
            message: Some(pb::Message {
                message_id: "2026-11-27:001".into(),
                sender: "tax".into(),
                kind: pb::Kind::Notification as i32,
                audience: Some(pb::Audience {
                    units: vec!["civil-affairs".into()],
                    ..Default::default()
                }),
                subject: "s".into(),
                created_micros: NOW,
                ..Default::default()
            }),
            signature: Some(pb::Signature::default()),
        }
    }

    fn check_with(f: impl FnOnce(&mut pb::Message)) -> Result<(), PolicyError> {
        let mut s = ok_message();
        if let Some(m) = s.message.as_mut() {
            f(m);
        }
        check_push(&s, "tax", &Limits::default(), NOW).map(|_| ())
    }

    #[test]
    fn a_good_message_passes() {
        assert_eq!(check_with(|_| {}), Ok(()));
    }

    #[test]
    fn each_bad_field_is_refused() {
        type Edit = Box<dyn FnOnce(&mut pb::Message)>;
        let bad: Vec<Edit> = vec![
            Box::new(|m| m.message_id = String::new()),
            Box::new(|m| m.message_id = "a b".into()),
            Box::new(|m| m.kind = 0),
            Box::new(|m| m.kind = pb::Kind::Receipt as i32),
            Box::new(|m| m.audience = None),
            Box::new(|m| m.audience = Some(pb::Audience::default())),
            Box::new(|m| m.subject = " ".into()),
            Box::new(|m| m.created_micros = 0),
            Box::new(|m| m.created_micros = NOW + 3_600_000_000),
            Box::new(|m| m.created_micros = NOW - 30 * 86_400_000_000),
            Box::new(|m| {
                m.labels = Some(pb::Labels {
                    priority: 42,
                    ..Default::default()
                })
            }),
            Box::new(|m| {
                m.attachments = vec![pb::AttachmentDigest {
                    name: "a".into(),
                    sha256: vec![0; 31],
                    ..Default::default()
                }]
            }),
            Box::new(|m| m.references = Some(naming(&["51140000MJ0000012X"]))),
            Box::new(|m| m.references = Some(naming(&["51140000MJ0000012R"; 2]))),
        ];
        for f in bad {
            assert!(matches!(check_with(f), Err(PolicyError::Malformed(_))));
        }
    }

    /// A receipt from tax pinning `pins` (channel, seq), addressed to their
    /// senders.
    fn receipt(pins: &[(&str, u64)]) -> pb::SignedMessage {
        let mut s = ok_message();
        if let Some(m) = s.message.as_mut() {
            m.kind = pb::Kind::Receipt as i32;
            m.subject = tongbao_proto::redact::receipt_subject(pins.len());
            let senders: BTreeSet<&str> = pins.iter().map(|p| p.0).collect();
            m.audience = Some(pb::Audience {
                units: senders.into_iter().map(String::from).collect(),
                ..Default::default()
            });
            m.acknowledgement = Some(pb::Acknowledgement {
                entries: pins
                    .iter()
                    .map(|(channel, seq)| pb::EntryPin {
                        channel: channel.to_string(),
                        seq: *seq,
                        leaf_hash: vec![0; HASH_LEN],
                    })
                    .collect(),
            });
        }
        s
    }

    #[test]
    fn a_receipt_names_each_entry_once_by_channel_and_seq() {
        let limits = Limits::default();
        // The same seq in different channels, or different seqs in one
        // channel, are different entries.
        let distinct = receipt(&[("finance", 1), ("civil-affairs", 1), ("finance", 2)]);
        assert!(check_receipt(&distinct, "tax", &limits, NOW).is_ok());
        // The first entry named again, in pin order, is the one refused.
        let twice = receipt(&[
            ("finance", 3),
            ("civil-affairs", 1),
            ("civil-affairs", 1),
            ("finance", 3),
        ]);
        match check_receipt(&twice, "tax", &limits, NOW) {
            Err(PolicyError::Malformed(m)) => assert!(
                m.contains("names entry civil-affairs:1 more than once"),
                "{m}"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn naming(codes: &[&str]) -> pb::References {
        pb::References {
            organizations: codes
                .iter()
                .map(|c| pb::Organization {
                    credit_code: c.to_string(),
                    name: String::new(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn organizations_are_checked_and_bounded() {
        assert_eq!(
            check_with(|m| m.references = Some(naming(&["51140000MJ0000012R"]))),
            Ok(())
        );
        let many: Vec<String> = (0..17).map(|i| format!("{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(
            check_with(|m| m.references = Some(naming(&many))),
            Err(PolicyError::TooLarge(_))
        ));
    }

    #[test]
    fn size_sender_and_classification_have_their_own_errors() {
        assert!(matches!(
            check_with(|m| m.body = vec![0; (1 << 20) + 1].into()),
            Err(PolicyError::TooLarge(_))
        ));
        assert!(matches!(
            check_with(|m| m.sender = "finance".into()),
            Err(PolicyError::NotSender { .. })
        ));
        assert_eq!(
            check_with(|m| m.labels = Some(pb::Labels {
                classification: Classification::Classified as i32,
                ..Default::default()
            })),
            Err(PolicyError::Classified)
        );
    }
}

/// The checks on arbitrary messages, most of them nearly valid: none
/// panics, each passes or refuses with a `PolicyError`, and what passes
/// keeps the rules written out again here.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;

    const CALLER: &str = "tax";
    const NOW: i64 = 1_800_000_000_000_000;
    const DAY: i64 = 86_400_000_000;

    /// Mostly a valid value, sometimes any.
    fn mostly<T: std::fmt::Debug + Clone + 'static>(
        valid: impl Strategy<Value = T> + 'static,
        any: impl Strategy<Value = T> + 'static,
    ) -> BoxedStrategy<T> {
        prop_oneof![12 => valid, 1 => any].boxed()
    }

    fn id() -> BoxedStrategy<String> {
        let known = prop::sample::select(vec!["tax", "civil-affairs", "finance"]);
        mostly(
            prop_oneof![known.prop_map(String::from), "[a-z][a-z0-9-]{0,63}"],
            prop_oneof!["[a-z][a-z0-9-]{64,70}", any::<String>()],
        )
    }

    fn hash() -> BoxedStrategy<Vec<u8>> {
        mostly(Just(vec![7; HASH_LEN]), vec(any::<u8>(), 0..40))
    }

    fn pin() -> impl Strategy<Value = pb::EntryPin> + Clone {
        (id(), 0..4u64, hash()).prop_map(|(channel, seq, leaf_hash)| pb::EntryPin {
            channel,
            seq,
            leaf_hash,
        })
    }

    fn some<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
        option::weighted(0.95, s)
    }

    /// What a message is shaped as: as drawn, or (before any field is
    /// drawn wrong) as a receipt or as exception feedback.
    #[derive(Debug, Clone, Copy)]
    enum Shape {
        AsDrawn,
        Receipt,
        Feedback,
    }

    fn message() -> impl Strategy<Value = pb::Message> {
        let head = (
            mostly("[A-Za-z0-9._:-]{1,20}", any::<String>()),
            mostly(Just(CALLER.to_string()), id()),
            mostly(0..17i32, any::<i32>()),
            some((
                vec(id(), 1..3),
                vec(id(), 0..2),
                vec(id(), 0..2),
                any::<bool>(),
            )),
            option::of((
                mostly(0..4i32, any::<i32>()),
                mostly(0..4i32, any::<i32>()),
                mostly(0..3i64, any::<i64>()),
                mostly(0..2i32, any::<i32>()),
            )),
        )
            .boxed();
        let content = (
            mostly("[a-z][a-z ]{0,12}", any::<String>()),
            vec(any::<u8>(), 0..64),
            "[a-z/+-]{0,16}",
            vec(
                (
                    mostly("[a-z.]{1,8}", ".{0,300}"),
                    "[a-z/]{0,8}",
                    any::<u64>(),
                    hash(),
                ),
                0..3,
            ),
        )
            .boxed();
        let tail = (
            option::of((option::of((id(), any::<u64>())), "[a-z0-9]{0,3}")),
            mostly(NOW - 6 * DAY..NOW + 60_000_000, any::<i64>()),
            option::of(vec(pin(), 1..4)),
            option::of((some(pin()), mostly(1..5i32, any::<i32>()), "[a-z ]{0,6}")),
            prop_oneof![
                Just(Shape::AsDrawn),
                Just(Shape::Receipt),
                Just(Shape::Feedback)
            ],
        )
            .boxed();
        (head, content, tail).prop_map(|(head, content, tail)| {
            let (message_id, sender, kind, audience, labels) = head;
            let (subject, body, content_type, attachments) = content;
            let (references, created_micros, acknowledgement, exception, shape) = tail;
            let mut m = pb::Message {
                message_id,
                sender,
                kind,
                audience: audience.map(|(units, mechanisms, offices, leading_group)| {
                    pb::Audience {
                        units,
                        mechanisms,
                        offices,
                        leading_group,
                    }
                }),
                labels: labels.map(|(sharing, priority, ack_deadline_micros, classification)| {
                    pb::Labels {
                        sharing,
                        priority,
                        ack_deadline_micros,
                        classification,
                    }
                }),
                subject,
                body: body.into(),
                content_type,
                attachments: attachments
                    .into_iter()
                    .map(|(name, media_type, size, sha256)| pb::AttachmentDigest {
                        name,
                        media_type,
                        size,
                        sha256,
                    })
                    .collect(),
                references: references.map(|(reply_to, case_id)| pb::References {
                    reply_to: reply_to.map(|(channel, seq)| pb::EntryRef { channel, seq }),
                    case_id,
                    organizations: Vec::new(),
                }),
                created_micros,
                acknowledgement: acknowledgement.map(|entries| pb::Acknowledgement { entries }),
                exception: exception.map(|(entry, problem, text)| pb::ExceptionReport {
                    entry,
                    problem,
                    text,
                }),
            };
            shape_as(&mut m, shape);
            m
        })
    }

    /// Gives the message the kind and audience its shape needs, from the
    /// entries it names.
    fn shape_as(m: &mut pb::Message, shape: Shape) {
        let units = match shape {
            Shape::AsDrawn => return,
            Shape::Receipt => {
                m.kind = Kind::Receipt as i32;
                m.exception = None;
                let pins = m.acknowledgement.as_ref().map(|a| a.entries.as_slice());
                let senders: BTreeSet<String> = pins
                    .unwrap_or_default()
                    .iter()
                    .map(|p| p.channel.clone())
                    .collect();
                senders.into_iter().collect()
            }
            Shape::Feedback => {
                m.kind = Kind::ExceptionFeedback as i32;
                m.acknowledgement = None;
                let pin = m.exception.as_ref().and_then(|x| x.entry.as_ref());
                pin.map(|p| vec![p.channel.clone()]).unwrap_or_default()
            }
        };
        let audience = m.audience.get_or_insert_with(pb::Audience::default);
        audience.units = units;
        audience.mechanisms.clear();
    }

    fn signed() -> impl Strategy<Value = pb::SignedMessage> {
        (some(message()), some(Just(pb::Signature::default())))
            .prop_map(|(message, signature)| pb::SignedMessage { message, signature })
    }

    /// The default limits, or small ones of any value.
    fn limits() -> impl Strategy<Value = Limits> {
        let small = (
            0..3usize,
            0..20usize,
            0..4usize,
            0..4usize,
            0..30usize,
            any::<u64>(),
            any::<u64>(),
        );
        prop_oneof![
            3 => Just(Limits::default()),
            1 => small.prop_map(|(body, subject, attachments, names, id, skew, age)| Limits {
                max_body_bytes: body * 32,
                max_subject_bytes: subject,
                max_attachments: attachments,
                max_audience_names: names,
                max_message_id_bytes: id,
                max_clock_skew_secs: skew,
                max_message_age_secs: age,
                ..Limits::default()
            }),
        ]
    }

    fn now() -> impl Strategy<Value = i64> {
        prop_oneof![3 => Just(NOW), 1 => 0..=i64::MAX]
    }

    /// What every accepted message keeps, checked apart from the code.
    fn holds_every_rule(
        signed: &pb::SignedMessage,
        m: &pb::Message,
        limits: &Limits,
        now: i64,
    ) -> Result<(), TestCaseError> {
        prop_assert!(
            signed
                .message
                .as_ref()
                .is_some_and(|inner| std::ptr::eq(inner, m))
        );
        prop_assert!(signed.signature.is_some());
        prop_assert_eq!(m.sender.as_str(), CALLER);
        prop_assert!(valid_message_id(&m.message_id));
        prop_assert!(m.message_id.len() <= limits.max_message_id_bytes);
        let a = m.audience.clone().unwrap_or_default();
        let names = a.units.len() + a.mechanisms.len() + a.offices.len();
        prop_assert!((names > 0 || a.leading_group) && names <= limits.max_audience_names);
        for name in a.units.iter().chain(&a.mechanisms).chain(&a.offices) {
            prop_assert!(check_id("name", name).is_ok(), "{:?}", name);
        }
        let l = m.labels.unwrap_or_default();
        prop_assert!(l.classification != Classification::Classified as i32);
        prop_assert!(l.ack_deadline_micros >= 0);
        prop_assert!(!m.subject.trim().is_empty() && m.subject.len() <= limits.max_subject_bytes);
        prop_assert!(m.body.len() <= limits.max_body_bytes);
        prop_assert!(m.attachments.len() <= limits.max_attachments);
        prop_assert!(
            m.attachments
                .iter()
                .all(|a| !a.name.is_empty() && a.sha256.len() == HASH_LEN)
        );
        prop_assert!(m.created_micros > 0);
        let window = |secs: u64| i128::from(secs) * 1_000_000;
        let (created, now) = (i128::from(m.created_micros), i128::from(now));
        prop_assert!(created <= now + window(limits.max_clock_skew_secs));
        prop_assert!(created >= now - window(limits.max_message_age_secs));
        Ok(())
    }

    proptest! {
        #[test]
        fn checks_never_panic_and_what_passes_keeps_the_rules(
            signed in signed(),
            limits in limits(),
            now in now(),
        ) {
            if let Ok(m) = check_push(&signed, CALLER, &limits, now) {
                holds_every_rule(&signed, m, &limits, now)?;
                prop_assert!(kinds::is_pushable(m.kind) && !kinds::is_workflow(m.kind));
                prop_assert!(m.acknowledgement.is_none());
                prop_assert_eq!(
                    m.exception.is_some(),
                    m.kind == Kind::ExceptionFeedback as i32
                );
            }
            if let Ok(m) = check_workflow_message(&signed, CALLER, &limits, now) {
                holds_every_rule(&signed, m, &limits, now)?;
                prop_assert!(kinds::is_workflow(m.kind));
                prop_assert!(m.acknowledgement.is_none() && m.exception.is_none());
            }
            if let Ok(m) = check_key_rotation(&signed, CALLER, &limits, now) {
                holds_every_rule(&signed, m, &limits, now)?;
                prop_assert_eq!(m.kind, Kind::KeyRotation as i32);
                prop_assert!(m.acknowledgement.is_none() && m.exception.is_none());
            }
            if let Ok((m, pins)) = check_receipt(&signed, CALLER, &limits, now) {
                holds_every_rule(&signed, m, &limits, now)?;
                prop_assert_eq!(m.kind, Kind::Receipt as i32);
                prop_assert!(!pins.is_empty() && pins.len() <= MAX_RECEIPT_ENTRIES);
                let senders: BTreeSet<&str> = pins.iter().map(|p| p.channel.as_str()).collect();
                let units: BTreeSet<&str> = m
                    .audience
                    .iter()
                    .flat_map(|a| a.units.iter().map(String::as_str))
                    .collect();
                prop_assert_eq!(senders, units);
                prop_assert!(pins.iter().all(|p| p.leaf_hash.len() == HASH_LEN));
                // Each entry once, by (channel, seq) in that order.
                let named: BTreeSet<(&str, u64)> =
                    pins.iter().map(|p| (p.channel.as_str(), p.seq)).collect();
                prop_assert_eq!(named.len(), pins.len());
            }
        }
    }
}
