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
//! - [`rotation`]: the body of a unit's key-rotation announcement;
//! - [`codec`]: the protobuf codec of every service (undecodable bytes are
//!   the sender's error);
//! - [`echo`]: how much of a request-supplied value a refusal repeats.
#![forbid(unsafe_code)]

pub mod canonical;
pub mod checkpoint;
pub mod codec;
pub mod echo;
pub mod ed25519;
pub mod identity;
pub mod keys;
pub mod kinds;
pub mod merkle;
pub mod rotation;
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
