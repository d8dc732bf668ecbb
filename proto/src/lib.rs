//! The Tongbao wire protocol and the rules every party must agree on.
//!
//! The hub, the client library and the offline verifier all depend on this
//! crate, so each rule is written exactly once:
//! - [`canonical`]: the bytes a unit signs and the bytes of a channel leaf;
//! - [`keys`]: Ed25519 signing keys, the key-id rule, signature checks;
//! - [`ed25519`]: the one Ed25519 verification rule (ZIP 215), alone or in
//!   batches;
//! - [`identity`]: the certificate SAN URIs that name units, offices,
//!   operators and the leading group;
//! - [`kinds`]: the stable names of message kinds;
//! - [`merkle`]: RFC 6962 tree hashes and proofs over the tlog stored-hash
//!   layout;
//! - [`checkpoint`]: C2SP checkpoints, signed notes and cosignatures;
//! - [`workflow`]: the mechanisms' workflow steps and the rules for issued
//!   minutes and co-signed joint notices;
//! - [`credit_code`]: unified social credit codes naming organizations;
//! - [`warning`]: the rules of joint warnings (联合预警) and their answers;
//! - [`rotation`]: the body of a unit's key-rotation announcement;
//! - [`codec`]: the protobuf codec of every service (undecodable bytes are
//!   the sender's error);
//! - [`echo`]: how much of a request-supplied value a refusal repeats;
//! - [`secret_file`]: private keys are created 0600 by every party;
//! - [`redact`]: what an office sees of an answer it audits.
#![forbid(unsafe_code)]

pub mod canonical;
pub mod checkpoint;
pub mod codec;
pub mod credit_code;
pub mod echo;
pub mod ed25519;
pub mod identity;
pub mod keys;
pub mod kinds;
pub mod merkle;
pub mod redact;
pub mod replica;
pub mod rotation;
pub mod secret_file;
pub mod warning;
pub mod workflow;

/// Generated protobuf and gRPC code for package `tongbao.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("tongbao.v1");

    /// Encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("tongbao_descriptor");
}

impl pb::Delivery {
    /// Takes the delivered entry out, whichever form the hub sent it in:
    /// `entry`, or its encoding in `encoded_entry`. None when neither.
    pub fn take_entry(&mut self) -> Result<Option<pb::Entry>, prost::DecodeError> {
        if let Some(e) = self.entry.take() {
            return Ok(Some(e));
        }
        if self.encoded_entry.is_empty() {
            return Ok(None);
        }
        prost::Message::decode(std::mem::take(&mut self.encoded_entry)).map(Some)
    }
}

impl pb::Entry {
    /// The message content the entry carries, if any.
    pub fn content(&self) -> Option<&pb::Message> {
        self.message.as_ref().and_then(|m| m.message.as_ref())
    }

    /// The signed message and its content, checked to sit in its sender's
    /// own channel: the rule every reader of an entry applies first.
    pub fn sender_message(&self) -> Result<(&pb::SignedMessage, &pb::Message), EntryFault> {
        let signed = self.message.as_ref().ok_or(EntryFault::NoMessage)?;
        let message = signed.message.as_ref().ok_or(EntryFault::NoMessage)?;
        if message.sender != self.channel {
            return Err(EntryFault::WrongChannel {
                sender: echo::shown(&message.sender).into_owned(),
                channel: echo::shown(&self.channel).into_owned(),
            });
        }
        Ok((signed, message))
    }
}

impl pb::SignedMessage {
    /// The message id, empty when the content is missing.
    pub fn message_id(&self) -> &str {
        self.message.as_ref().map_or("", |m| m.message_id.as_str())
    }
}

/// Why an entry's message is not its sender's: each reader words it for
/// its own report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryFault {
    #[error("carries no message")]
    NoMessage,
    #[error("names sender {sender} but sits in channel {channel}")]
    WrongChannel { sender: String, channel: String },
}

/// Length of every hash in the protocol (SHA-256).
pub const HASH_LEN: usize = 32;

/// A SHA-256 hash: leaf hashes, message digests, attachment digests.
pub type Hash = [u8; HASH_LEN];

/// The protocol's clock: Unix time in microseconds (creation times, hub
/// times, deadlines and key validity all use it).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A protocol time (Unix microseconds) as RFC 3339, for people (a count
/// of microseconds when RFC 3339 cannot show it).
pub fn format_micros(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{micros} µs"))
}
