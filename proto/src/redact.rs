//! What an office sees of a receipt or exception feedback it audits.
//!
//! An office audits delivery: who answered which entry, when, under which
//! signature. It must not read free text it was never addressed, and it
//! must be able to check an answer without trusting the hub. Both hold
//! because a receipt carries no free text at all ([`receipt_subject`] is
//! its only subject; no body, content type or attachments, which the hub
//! enforces): the office sees it whole, and its pins are bound to its
//! signature. Exception feedback carries a reason in words, so an office
//! sees it whole only when the feedback was addressed to it (copied);
//! otherwise its subject, body, content type, attachment names and text
//! are removed, and the office learns the problem code as the hub read it
//! (the removed text keeps the signed digest from being recomputed, so
//! such feedback cannot be checked by the office).

use crate::pb::{Entry, Message};

/// The one subject a receipt carries.
pub fn receipt_subject(entries: usize) -> String {
    format!("receipt for {entries} entries")
}

/// Whether a message holds text an office may not read: anything but a
/// receipt's fixed subject, its pins and its labels.
pub fn has_free_text(m: &Message) -> bool {
    let entries = m.acknowledgement.as_ref().map_or(0, |a| a.entries.len());
    m.subject != receipt_subject(entries)
        || !m.body.is_empty()
        || !m.content_type.is_empty()
        || !m.attachments.is_empty()
        || m.exception.is_some()
}

/// An answer as an office sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub entry: Entry,
    /// Free text was removed: the entry no longer matches its signature.
    pub redacted: bool,
}

/// `entry` as the office whose inbox is `office_inbox` may see it: whole
/// when the office was addressed or it holds no free text, else without
/// its free text.
pub fn for_audit(entry: &Entry, office_inbox: &str) -> Shown {
    let addressed = entry.recipients.iter().any(|r| r == office_inbox);
    let mut shown = entry.clone();
    let message = shown.message.as_mut().and_then(|s| s.message.as_mut());
    let Some(m) = message.filter(|m| !addressed && has_free_text(m)) else {
        return Shown {
            entry: shown,
            redacted: false,
        };
    };
    m.subject.clear();
    m.body.clear();
    m.content_type.clear();
    m.attachments.clear();
    if let Some(x) = m.exception.as_mut() {
        x.text.clear();
    }
    Shown {
        entry: shown,
        redacted: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    const OFFICE: &str = "office:fund-supervision";

    fn answer(message: pb::Message, recipients: &[&str]) -> Entry {
        Entry {
            channel: "finance".into(),
            seq: 3,
            hub_micros: 7,
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            message: Some(pb::SignedMessage {
                message: Some(message),
                signature: Some(pb::Signature {
                    algorithm: "ed25519".into(),
                    key_id: "k".into(),
                    signature: vec![1; 64],
                }),
            }),
            ..Default::default()
        }
    }

    fn pin() -> pb::EntryPin {
        pb::EntryPin {
            channel: "tax".into(),
            seq: 1,
            leaf_hash: vec![9; 32],
        }
    }

    fn feedback(text: &str) -> pb::Message {
        pb::Message {
            kind: pb::Kind::ExceptionFeedback as i32,
            subject: format!("MARKER subject {text}"),
            body: b"MARKER body".to_vec().into(),
            content_type: "text/plain".into(),
            attachments: vec![pb::AttachmentDigest {
                name: "MARKER.pdf".into(),
                ..Default::default()
            }],
            exception: Some(pb::ExceptionReport {
                entry: Some(pin()),
                problem: pb::Problem::Other as i32,
                text: text.into(),
            }),
            ..Default::default()
        }
    }

    fn receipt() -> pb::Message {
        pb::Message {
            kind: pb::Kind::Receipt as i32,
            subject: receipt_subject(1),
            acknowledgement: Some(pb::Acknowledgement {
                entries: vec![pin()],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn feedback_not_addressed_to_the_office_loses_its_free_text_only() {
        let full = answer(feedback("MARKER text"), &["tax"]);
        let shown = for_audit(&full, OFFICE);
        assert!(shown.redacted);
        assert!(!format!("{:?}", shown.entry).contains("MARKER"));
        let x = shown.entry.content().and_then(|m| m.exception.clone());
        assert_eq!(
            x.map(|x| (x.entry, x.problem)),
            Some((Some(pin()), pb::Problem::Other as i32))
        );
        // Everything outside the message is kept.
        assert_eq!(shown.entry.channel, full.channel);
        assert_eq!(
            shown.entry.message.and_then(|m| m.signature),
            full.message.and_then(|m| m.signature)
        );
    }

    #[test]
    fn feedback_copied_to_the_office_is_shown_whole() {
        let full = answer(feedback("MARKER text"), &["tax", OFFICE]);
        assert_eq!(
            for_audit(&full, OFFICE),
            Shown {
                entry: full,
                redacted: false
            }
        );
    }

    #[test]
    fn a_receipt_without_free_text_is_shown_whole_and_any_text_makes_it_free() {
        let bare = answer(receipt(), &["tax"]);
        assert_eq!(
            for_audit(&bare, OFFICE),
            Shown {
                entry: bare,
                redacted: false
            }
        );
        let changes: [fn(&mut pb::Message); 4] = [
            |m| m.subject = "MARKER".into(),
            |m| m.body = b"MARKER".to_vec().into(),
            |m| m.content_type = "text/plain".into(),
            |m| m.attachments.push(pb::AttachmentDigest::default()),
        ];
        for change in changes {
            let mut m = receipt();
            change(&mut m);
            assert!(has_free_text(&m), "{m:?}");
            assert!(for_audit(&answer(m, &["tax"]), OFFICE).redacted);
        }
    }
}
