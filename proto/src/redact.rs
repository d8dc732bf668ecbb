//! What an office sees of a receipt or exception feedback it audits.
//!
//! An office audits delivery: who answered which entry, when, under which
//! signature. It was never an addressee of the answer, so it must not read
//! the answer's free text: subject, body, content type, attachment names
//! and an exception's text. [`for_audit`] removes exactly those and keeps
//! the message digest, which the signature and the leaf commit to: the
//! office still checks the signature under the recipient's registered key
//! and the leaf hash (and so the answer's place in the recipient's
//! channel). When nothing was removed, the digest also recomputes from
//! what is shown, which binds the pins and the problem code to it.

use crate::Hash;
use crate::canonical::message_digest;
use crate::pb::Entry;

/// An answer as an office sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Redacted {
    /// The entry with its free text removed.
    pub entry: Entry,
    /// The digest of the message as signed.
    pub message_digest: Hash,
    /// Whether anything was removed (then the digest does not recompute
    /// from `entry`).
    pub removed: bool,
}

/// `entry` without its message's free text, with the digest of the
/// message as signed (zero for an entry without a message).
pub fn for_audit(entry: &Entry) -> Redacted {
    let mut shown = entry.clone();
    let mut digest = [0u8; crate::HASH_LEN];
    let mut removed = false;
    if let Some(m) = shown.message.as_mut().and_then(|s| s.message.as_mut()) {
        digest = message_digest(m);
        removed = !m.subject.is_empty()
            || !m.body.is_empty()
            || !m.content_type.is_empty()
            || !m.attachments.is_empty()
            || m.exception.as_ref().is_some_and(|x| !x.text.is_empty());
        m.subject.clear();
        m.body.clear();
        m.content_type.clear();
        m.attachments.clear();
        if let Some(x) = m.exception.as_mut() {
            x.text.clear();
        }
    }
    Redacted {
        entry: shown,
        message_digest: digest,
        removed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::leaf_hash;
    use crate::pb;

    fn answer(subject: &str, body: &[u8], text: &str) -> Entry {
        Entry {
            channel: "finance".into(),
            seq: 3,
            hub_micros: 7,
            recipients: vec!["tax".into()],
            message: Some(pb::SignedMessage {
                message: Some(pb::Message {
                    message_id: "m".into(),
                    sender: "finance".into(),
                    kind: pb::Kind::ExceptionFeedback as i32,
                    subject: subject.into(),
                    body: body.to_vec().into(),
                    content_type: if body.is_empty() { "" } else { "text/plain" }.into(),
                    attachments: if body.is_empty() {
                        Vec::new()
                    } else {
                        vec![pb::AttachmentDigest {
                            name: "MARKER.pdf".into(),
                            ..Default::default()
                        }]
                    },
                    exception: Some(pb::ExceptionReport {
                        entry: Some(pb::EntryPin {
                            channel: "tax".into(),
                            seq: 1,
                            leaf_hash: vec![9; 32],
                        }),
                        problem: pb::Problem::Other as i32,
                        text: text.into(),
                    }),
                    ..Default::default()
                }),
                signature: Some(pb::Signature {
                    algorithm: "ed25519".into(),
                    key_id: "k".into(),
                    signature: vec![1; 64],
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn free_text_is_removed_and_the_signed_digest_and_leaf_are_kept() {
        let full = answer("MARKER subject", b"MARKER body", "MARKER text");
        let r = for_audit(&full);
        assert!(r.removed);
        assert!(!format!("{:?}", r.entry).contains("MARKER"));
        let m = full.content().cloned().unwrap_or_default();
        assert_eq!(r.message_digest, message_digest(&m));
        // The leaf of what is shown, with the digest as signed, is the leaf.
        assert_eq!(
            crate::canonical::leaf_hash_with_digest(&r.entry, &r.message_digest),
            leaf_hash(&full)
        );
        // The pins and the problem stay.
        let x = r.entry.content().and_then(|m| m.exception.clone());
        assert_eq!(
            x.map(|x| (x.entry, x.problem)),
            m.exception.map(|x| (x.entry, x.problem))
        );
    }

    #[test]
    fn an_answer_without_free_text_is_shown_whole() {
        let bare = answer("", b"", "");
        let r = for_audit(&bare);
        assert!(!r.removed);
        assert_eq!(r.entry, bare);
        let shown = r.entry.content().cloned().unwrap_or_default();
        assert_eq!(message_digest(&shown), r.message_digest);
    }
}
