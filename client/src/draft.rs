//! A message before it is signed.

use tongbao_proto::pb::{self, Kind};

/// The content of a message to push; [`crate::Client::push`] fills in the
/// sender, creation time and (if not set) a fresh message id, then signs.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    pub message_id: Option<String>,
    pub kind: i32,
    pub audience: pb::Audience,
    pub labels: pb::Labels,
    pub subject: String,
    pub body: Vec<u8>,
    pub content_type: String,
    pub attachments: Vec<pb::AttachmentDigest>,
    pub references: Option<pb::References>,
    pub exception: Option<pb::ExceptionReport>,
}

impl Draft {
    pub fn new(kind: Kind, subject: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            kind: kind as i32,
            subject: subject.into(),
            body: body.into(),
            content_type: "text/plain; charset=utf-8".into(),
            ..Default::default()
        }
    }

    /// Sets the message id (idempotency key): pushing the same id again
    /// returns the first answer and appends nothing.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    pub fn to_units<I, S>(mut self, units: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.audience
            .units
            .extend(units.into_iter().map(Into::into));
        self
    }

    /// Every member of the mechanism at the time the hub appends it.
    pub fn to_mechanism(mut self, mechanism: impl Into<String>) -> Self {
        self.audience.mechanisms.push(mechanism.into());
        self
    }

    pub fn to_office(mut self, mechanism: impl Into<String>) -> Self {
        self.audience.offices.push(mechanism.into());
        self
    }

    pub fn to_leading_group(mut self) -> Self {
        self.audience.leading_group = true;
        self
    }

    pub fn with_case(mut self, case_id: impl Into<String>) -> Self {
        self.references.get_or_insert_with(Default::default).case_id = case_id.into();
        self
    }

    /// Names an organization the message is about, by its unified social
    /// credit code (the hub refuses a code whose check character is
    /// wrong); `name` may be empty.
    pub fn about(mut self, credit_code: impl Into<String>, name: impl Into<String>) -> Self {
        self.references
            .get_or_insert_with(Default::default)
            .organizations
            .push(pb::Organization {
                credit_code: credit_code.into(),
                name: name.into(),
            });
        self
    }

    pub fn in_reply_to(mut self, channel: impl Into<String>, seq: u64) -> Self {
        self.references
            .get_or_insert_with(Default::default)
            .reply_to = Some(pb::EntryRef {
            channel: channel.into(),
            seq,
        });
        self
    }

    /// Exception feedback (异常反馈) on an entry this unit received, instead
    /// of acknowledging it. Addressed to the entry's sender.
    pub fn exception(
        about: &crate::VerifiedEntry,
        problem: pb::Problem,
        text: impl Into<String>,
    ) -> Self {
        let text = text.into();
        Self {
            kind: Kind::ExceptionFeedback as i32,
            subject: format!("exception feedback on {}:{}", about.channel(), about.seq()),
            content_type: "text/plain; charset=utf-8".into(),
            exception: Some(pb::ExceptionReport {
                entry: Some(about.pin()),
                problem: problem as i32,
                text,
            }),
            ..Default::default()
        }
        .to_units([about.channel().to_string()])
        .in_reply_to(about.channel(), about.seq())
    }

    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }

    pub fn with_labels(mut self, labels: pb::Labels) -> Self {
        self.labels = labels;
        self
    }

    /// The message as signed by `sender` at `created_micros`.
    pub(crate) fn into_message(
        self,
        sender: &str,
        message_id: String,
        created_micros: i64,
    ) -> pb::Message {
        pb::Message {
            message_id,
            sender: sender.to_string(),
            kind: self.kind,
            audience: Some(self.audience),
            labels: Some(self.labels),
            subject: self.subject,
            body: self.body.into(),
            content_type: self.content_type,
            attachments: self.attachments,
            references: self.references,
            created_micros,
            acknowledgement: None,
            exception: self.exception,
        }
    }
}
