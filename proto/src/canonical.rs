//! Canonical bytes: what a unit signs and what a channel leaf commits to.
//!
//! Protobuf encodings are not unique (field order, default values, unknown
//! fields), so signatures never cover them. Instead each structure has one
//! canonical encoding: fixed field order, big-endian integers, every string,
//! byte string and list prefixed with its length. The encoding is injective,
//! so two different messages never share canonical bytes.
//!
//! The message is hashed while it is encoded (a 1 MiB body is never copied);
//! the signature covers a short domain-separated statement of that digest,
//! and the leaf commits to the digest and the signature.

use crate::pb::{Audience, Entry, EntryPin, Message, Organization, References, Signature};
use crate::{HASH_LEN, Hash};
use ring::digest::{Context, SHA256};

const MESSAGE_DOMAIN: &[u8] = b"tongbao/v1/message\n";
const SIGNATURE_DOMAIN: &[u8] = b"tongbao/v1/message-signature\n";
const LEAF_DOMAIN: &[u8] = b"tongbao/v1/leaf\n";

/// RFC 6962 prefix of a leaf hash input.
pub const LEAF_HASH_PREFIX: u8 = 0x00;
/// RFC 6962 prefix of an interior node hash input.
pub const NODE_HASH_PREFIX: u8 = 0x01;

/// The previous-leaf hash recorded in the first leaf of every channel.
pub const GENESIS_PREVIOUS: Hash = [0u8; HASH_LEN];

/// Where canonical bytes go: a buffer, or straight into a hash.
trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.put(&v.to_be_bytes());
    }
    fn enum_value(&mut self, v: i32) {
        self.put(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.put(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn strs(&mut self, v: &[String]) {
        self.u64(v.len() as u64);
        for s in v {
            self.str(s);
        }
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A SHA-256 fed through a small buffer: canonical bytes come in many
/// pieces of a few bytes (lengths, names), and each `update` of the hash
/// costs more than copying such a piece.
struct Hasher {
    ctx: Context,
    buf: [u8; Hasher::BUF],
    len: usize,
}

impl Hasher {
    /// Room for a whole leaf or message header; a longer piece (a body)
    /// goes to the hash directly, after what is buffered.
    const BUF: usize = 512;

    fn new() -> Self {
        Self {
            ctx: Context::new(&SHA256),
            buf: [0; Self::BUF],
            len: 0,
        }
    }

    fn flush(&mut self) {
        if let Some(pending) = self.buf.get(..self.len) {
            self.ctx.update(pending);
        }
        self.len = 0;
    }

    fn finish(mut self) -> Hash {
        self.flush();
        finish(self.ctx)
    }
}

fn finish(ctx: Context) -> Hash {
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl Sink for Hasher {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(room) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            room.copy_from_slice(bytes);
            self.len += bytes.len();
            return;
        }
        self.flush();
        if bytes.len() >= Self::BUF {
            self.ctx.update(bytes);
        } else {
            self.put(bytes);
        }
    }
}

/// SHA-256 of the canonical encoding of a message: the one value that
/// stands for its content in signatures and leaves.
pub fn message_digest(m: &Message) -> Hash {
    let mut s = Hasher::new();
    put_message(&mut s, m);
    s.finish()
}

/// The canonical bytes of a message, whose SHA-256 is its digest. The hub
/// and clients hash while encoding ([`message_digest`]); these are for
/// test vectors and for implementers comparing their own encoder.
pub fn message_bytes(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    put_message(&mut out, m);
    out
}

/// The canonical encoding of a message, whose SHA-256 is its digest.
fn put_message(s: &mut impl Sink, m: &Message) {
    s.put(MESSAGE_DOMAIN);
    s.str(&m.message_id);
    s.str(&m.sender);
    s.enum_value(m.kind);
    let no_audience = Audience::default();
    let audience = m.audience.as_ref().unwrap_or(&no_audience);
    s.strs(&audience.units);
    s.strs(&audience.mechanisms);
    s.strs(&audience.offices);
    s.u8(u8::from(audience.leading_group));
    let labels = m.labels.unwrap_or_default();
    s.enum_value(labels.sharing);
    s.enum_value(labels.priority);
    s.i64(labels.ack_deadline_micros);
    s.enum_value(labels.classification);
    s.str(&m.subject);
    s.bytes(&m.body);
    s.str(&m.content_type);
    s.u64(m.attachments.len() as u64);
    for a in &m.attachments {
        s.str(&a.name);
        s.str(&a.media_type);
        s.u64(a.size);
        s.bytes(&a.sha256);
    }
    let no_refs = References::default();
    let refs = m.references.as_ref().unwrap_or(&no_refs);
    match &refs.reply_to {
        None => s.u8(0),
        Some(r) => {
            s.u8(1);
            s.str(&r.channel);
            s.u64(r.seq);
        }
    }
    s.str(&refs.case_id);
    s.i64(m.created_micros);
    match &m.acknowledgement {
        None => s.u8(0),
        Some(a) => {
            s.u8(1);
            s.u64(a.entries.len() as u64);
            for pin in &a.entries {
                put_pin(s, pin);
            }
        }
    }
    match &m.exception {
        None => s.u8(0),
        Some(x) => {
            s.u8(1);
            put_pin(s, x.entry.as_ref().unwrap_or(&EntryPin::default()));
            s.enum_value(x.problem);
            s.str(&x.text);
        }
    }
    put_organizations(s, &refs.organizations);
}

/// The organizations a message names, appended only when there are any:
/// a message naming none keeps the bytes (and digest, signature and leaf
/// hash) it had before organizations existed, and since every field before
/// is length-prefixed the encoding stays injective.
fn put_organizations(s: &mut impl Sink, orgs: &[Organization]) {
    if orgs.is_empty() {
        return;
    }
    s.u64(orgs.len() as u64);
    for o in orgs {
        s.str(&o.credit_code);
        s.str(&o.name);
    }
}

fn put_pin(s: &mut impl Sink, pin: &EntryPin) {
    s.str(&pin.channel);
    s.u64(pin.seq);
    s.bytes(&pin.leaf_hash);
}

/// The bytes a unit's signing key signs for a message.
pub fn signing_bytes(m: &Message) -> Vec<u8> {
    signing_bytes_for_digest(&message_digest(m))
}

/// [`signing_bytes`] when the digest is already known.
pub fn signing_bytes_for_digest(digest: &Hash) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNATURE_DOMAIN.len() + HASH_LEN);
    out.extend_from_slice(SIGNATURE_DOMAIN);
    out.extend_from_slice(digest);
    out
}

/// The canonical bytes of a channel leaf. Leaves commit to the message by
/// its digest, so they stay small whatever the body size.
pub fn leaf_bytes(entry: &Entry) -> Vec<u8> {
    leaf_bytes_with_digest(entry, &digest_of(entry))
}

/// The digest a leaf commits to (zero for an entry without a message).
fn digest_of(entry: &Entry) -> Hash {
    entry
        .content()
        .map(message_digest)
        .unwrap_or([0u8; HASH_LEN])
}

/// [`leaf_bytes`] when the message digest is already known.
pub fn leaf_bytes_with_digest(entry: &Entry, digest: &Hash) -> Vec<u8> {
    let mut s: Vec<u8> = Vec::with_capacity(256);
    put_leaf(&mut s, entry, digest);
    s
}

fn put_leaf(s: &mut impl Sink, entry: &Entry, digest: &Hash) {
    s.put(LEAF_DOMAIN);
    s.str(&entry.channel);
    s.u64(entry.seq);
    s.i64(entry.hub_micros);
    s.strs(&entry.recipients);
    s.bytes(&entry.previous_leaf_hash);
    s.bytes(digest);
    let no_sig = Signature::default();
    let sig = entry
        .message
        .as_ref()
        .and_then(|sm| sm.signature.as_ref())
        .unwrap_or(&no_sig);
    s.str(&sig.algorithm);
    s.str(&sig.key_id);
    s.bytes(&sig.signature);
}

/// RFC 6962 leaf hash: SHA-256(0x00 ‖ leaf bytes).
pub fn leaf_hash(entry: &Entry) -> Hash {
    leaf_hash_with_digest(entry, &digest_of(entry))
}

/// [`leaf_hash`] when the message digest is already known. The leaf bytes
/// go straight into the hash, as [`leaf_hash_of_bytes`] would take them.
pub fn leaf_hash_with_digest(entry: &Entry, digest: &Hash) -> Hash {
    let mut h = Hasher::new();
    h.u8(LEAF_HASH_PREFIX);
    put_leaf(&mut h, entry, digest);
    h.finish()
}

/// RFC 6962 leaf hash of already encoded leaf bytes.
pub fn leaf_hash_of_bytes(leaf: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[LEAF_HASH_PREFIX]);
    ctx.update(leaf);
    finish(ctx)
}

/// Plain SHA-256, for attachment digests and key ids.
pub fn sha256(bytes: &[u8]) -> Hash {
    sha256_of_parts(&[bytes])
}

/// Plain SHA-256 of the parts one after the other, without joining them.
pub fn sha256_of_parts(parts: &[&[u8]]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    finish(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{EntryRef, Labels, SignedMessage};

    #[test]
    fn the_buffered_hasher_hashes_exactly_the_pieces_put_in() {
        // Pieces that fill the buffer exactly, cross it, and exceed it.
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        for sizes in [
            &[1usize, 7, 504, 3, 600, 1][..],
            &[512, 512, 1],
            &[511, 2, 1023, 1024],
            &[0, 0, 64, 0],
            &[4999],
        ] {
            let mut h = Hasher::new();
            let mut at = 0;
            for n in sizes {
                h.put(&data[at..at + n]);
                at += n;
            }
            assert_eq!(h.finish(), sha256_of_parts(&[&data[..at]]), "{sizes:?}");
        }
    }

    fn sample() -> Message {
        Message {
            message_id: "m-1".into(),
            sender: "civil-affairs".into(),
            kind: 1,
            audience: Some(Audience {
                units: vec!["tax".into()],
                ..Default::default()
            }),
            labels: Some(Labels::default()),
            subject: "s".into(),
            body: b"body".to_vec().into(),
            content_type: "text/plain".into(),
            attachments: vec![],
            references: Some(References {
                reply_to: Some(EntryRef {
                    channel: "tax".into(),
                    seq: 3,
                }),
                case_id: String::new(),
                organizations: Vec::new(),
            }),
            created_micros: 7,
            acknowledgement: None,
            exception: None,
        }
    }

    #[test]
    fn every_field_changes_the_digest() {
        let base = message_digest(&sample());
        let mut variants: Vec<Message> = Vec::new();
        let mut m = sample();
        m.message_id = "m-2".into();
        variants.push(m);
        let mut m = sample();
        m.sender = "tax".into();
        variants.push(m);
        let mut m = sample();
        m.kind = 2;
        variants.push(m);
        let mut m = sample();
        m.audience = Some(Audience {
            mechanisms: vec!["tax".into()],
            ..Default::default()
        });
        variants.push(m);
        let mut m = sample();
        m.labels = Some(Labels {
            ack_deadline_micros: 1,
            ..Default::default()
        });
        variants.push(m);
        let mut m = sample();
        m.subject = "t".into();
        variants.push(m);
        let mut m = sample();
        m.body = b"bodz".to_vec().into();
        variants.push(m);
        let mut m = sample();
        m.references = None;
        variants.push(m);
        let mut m = sample();
        let org = |code: &str, name: &str| Organization {
            credit_code: code.into(),
            name: name.into(),
        };
        if let Some(r) = m.references.as_mut() {
            r.organizations = vec![org("91350100M000100Y43", "")];
        }
        variants.push(m.clone());
        if let Some(r) = m.references.as_mut() {
            r.organizations = vec![org("91350100M000100Y43", "某协会")];
        }
        variants.push(m.clone());
        if let Some(r) = m.references.as_mut() {
            r.organizations.push(org("9144030071526726XG", ""));
        }
        variants.push(m);
        let mut m = sample();
        m.created_micros = 8;
        variants.push(m);
        let mut m = sample();
        m.acknowledgement = Some(crate::pb::Acknowledgement {
            entries: vec![EntryPin {
                channel: "tax".into(),
                seq: 1,
                leaf_hash: vec![0; 32],
            }],
        });
        variants.push(m.clone());
        if let Some(a) = m.acknowledgement.as_mut() {
            a.entries[0].seq = 2;
        }
        variants.push(m);
        let mut m = sample();
        m.exception = Some(crate::pb::ExceptionReport {
            entry: None,
            problem: 1,
            text: String::new(),
        });
        variants.push(m);
        for v in variants {
            assert_ne!(message_digest(&v), base, "{v:?}");
        }
    }

    #[test]
    fn length_prefixes_prevent_field_shifting() {
        // "ab" + "c" must differ from "a" + "bc".
        let mut a = sample();
        a.subject = "ab".into();
        a.content_type = "c".into();
        let mut b = sample();
        b.subject = "a".into();
        b.content_type = "bc".into();
        assert_ne!(message_digest(&a), message_digest(&b));
    }

    #[test]
    fn leaf_hash_covers_position_time_recipients_and_signature() {
        let entry = Entry {
            channel: "civil-affairs".into(),
            seq: 0,
            hub_micros: 1,
            recipients: vec!["tax".into()],
            previous_leaf_hash: GENESIS_PREVIOUS.to_vec(),
            message: Some(SignedMessage {
                message: Some(sample()),
                signature: Some(Signature {
                    algorithm: "ed25519".into(),
                    key_id: "k".into(),
                    signature: vec![1; 64],
                }),
            }),
        };
        let base = leaf_hash(&entry);
        // Streamed into the hash, the leaf is what its bytes define.
        assert_eq!(base, leaf_hash_of_bytes(&leaf_bytes(&entry)));
        // Known answers, computed apart from this code from the encoding
        // described above: a change of field order or prefix breaks them.
        assert_eq!(
            hex::encode(message_digest(&sample())),
            "0ed2ae4376b33489ee74c5d467e91175ad3385447ef67284d4bec8c5161bc1cd"
        );
        assert_eq!(
            hex::encode(base),
            "59033eaf1f0a38978d0a0f7ab4bc474dcbedfdc387d4a3b7ae8f1d8c2402619b"
        );
        let mut e = entry.clone();
        e.seq = 1;
        assert_ne!(leaf_hash(&e), base);
        let mut e = entry.clone();
        e.hub_micros = 2;
        assert_ne!(leaf_hash(&e), base);
        let mut e = entry.clone();
        e.recipients.push("finance".into());
        assert_ne!(leaf_hash(&e), base);
        let mut e = entry.clone();
        e.previous_leaf_hash = vec![1; 32];
        assert_ne!(leaf_hash(&e), base);
        let mut e = entry.clone();
        if let Some(sig) = e.message.as_mut().and_then(|sm| sm.signature.as_mut()) {
            sig.signature[0] ^= 1;
        }
        assert_ne!(leaf_hash(&e), base);
        let mut e = entry;
        if let Some(m) = e.message.as_mut().and_then(|sm| sm.message.as_mut()) {
            m.body = [&m.body[..], b"!"].concat().into();
        }
        assert_ne!(leaf_hash(&e), base);
    }
}

/// Property tests of the canonical encodings. A decoder written here from
/// the description above reads every message and leaf back, which shows
/// the encoding injective: apart from the absent-or-default fields it
/// writes alike on purpose, two messages never share canonical bytes. The
/// strategies are shared with the other modules' property tests.
#[cfg(test)]
pub(crate) mod proptests {
    use super::*;
    use crate::pb::{
        Acknowledgement, AttachmentDigest, EntryRef, ExceptionReport, Labels, SignedMessage,
    };
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use prost::bytes::Bytes;

    /// Reads canonical bytes back; None on anything the encoder cannot
    /// have written.
    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, rest) = self.0.split_at_checked(n)?;
            self.0 = rest;
            Some(head)
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
        }
        fn i64(&mut self) -> Option<i64> {
            Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
        }
        fn enum_value(&mut self) -> Option<i32> {
            Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
        }
        fn flag(&mut self) -> Option<bool> {
            match self.take(1)? {
                [0] => Some(false),
                [1] => Some(true),
                _ => None,
            }
        }
        fn bytes(&mut self) -> Option<Vec<u8>> {
            let n = usize::try_from(self.u64()?).ok()?;
            self.take(n).map(<[u8]>::to_vec)
        }
        fn str(&mut self) -> Option<String> {
            String::from_utf8(self.bytes()?).ok()
        }
        fn strs(&mut self) -> Option<Vec<String>> {
            let n = self.u64()?;
            (0..n).map(|_| self.str()).collect()
        }
        fn pin(&mut self) -> Option<EntryPin> {
            Some(EntryPin {
                channel: self.str()?,
                seq: self.u64()?,
                leaf_hash: self.bytes()?,
            })
        }
    }

    /// The message that canonical bytes encode, in [`normalize`]d form.
    fn decode_message(bytes: &[u8]) -> Option<Message> {
        let mut r = Reader(bytes);
        if r.take(MESSAGE_DOMAIN.len())? != MESSAGE_DOMAIN {
            return None;
        }
        let m = Message {
            message_id: r.str()?,
            sender: r.str()?,
            kind: r.enum_value()?,
            audience: Some(Audience {
                units: r.strs()?,
                mechanisms: r.strs()?,
                offices: r.strs()?,
                leading_group: r.flag()?,
            }),
            labels: Some(Labels {
                sharing: r.enum_value()?,
                priority: r.enum_value()?,
                ack_deadline_micros: r.i64()?,
                classification: r.enum_value()?,
            }),
            subject: r.str()?,
            body: Bytes::from(r.bytes()?),
            content_type: r.str()?,
            attachments: {
                let n = r.u64()?;
                (0..n)
                    .map(|_| {
                        Some(AttachmentDigest {
                            name: r.str()?,
                            media_type: r.str()?,
                            size: r.u64()?,
                            sha256: r.bytes()?,
                        })
                    })
                    .collect::<Option<_>>()?
            },
            references: Some(References {
                reply_to: if r.flag()? {
                    Some(EntryRef {
                        channel: r.str()?,
                        seq: r.u64()?,
                    })
                } else {
                    None
                },
                case_id: r.str()?,
                organizations: Vec::new(),
            }),
            created_micros: r.i64()?,
            acknowledgement: if r.flag()? {
                let n = r.u64()?;
                Some(Acknowledgement {
                    entries: (0..n).map(|_| r.pin()).collect::<Option<_>>()?,
                })
            } else {
                None
            },
            exception: if r.flag()? {
                Some(ExceptionReport {
                    entry: Some(r.pin()?),
                    problem: r.enum_value()?,
                    text: r.str()?,
                })
            } else {
                None
            },
        };
        let mut m = m;
        if !r.0.is_empty() {
            // Organizations are encoded only when there is at least one.
            let n = r.u64()?;
            if n == 0 {
                return None;
            }
            let orgs = (0..n)
                .map(|_| {
                    Some(Organization {
                        credit_code: r.str()?,
                        name: r.str()?,
                    })
                })
                .collect::<Option<_>>()?;
            if let Some(refs) = m.references.as_mut() {
                refs.organizations = orgs;
            }
        }
        r.0.is_empty().then_some(m)
    }

    /// The fields of a leaf, as its canonical bytes give them.
    type LeafFields = (String, u64, i64, Vec<String>, Vec<u8>, Vec<u8>, Signature);

    fn decode_leaf(bytes: &[u8]) -> Option<LeafFields> {
        let mut r = Reader(bytes);
        if r.take(LEAF_DOMAIN.len())? != LEAF_DOMAIN {
            return None;
        }
        let fields = (
            r.str()?,
            r.u64()?,
            r.i64()?,
            r.strs()?,
            r.bytes()?,
            r.bytes()?,
            Signature {
                algorithm: r.str()?,
                key_id: r.str()?,
                signature: r.bytes()?,
            },
        );
        r.0.is_empty().then_some(fields)
    }

    /// A message as the encoding sees it: an absent audience, labels,
    /// references or exception entry are encoded as their defaults.
    fn normalize(m: &Message) -> Message {
        let mut m = m.clone();
        m.audience.get_or_insert_with(Audience::default);
        m.labels.get_or_insert_with(Labels::default);
        m.references.get_or_insert_with(References::default);
        if let Some(x) = m.exception.as_mut() {
            x.entry.get_or_insert_with(EntryPin::default);
        }
        m
    }

    /// An entry as its leaf sees it: the message through its digest, an
    /// absent message or signature as empty.
    fn leaf_view(e: &Entry) -> (LeafFields, Option<Message>) {
        let sig = e
            .message
            .as_ref()
            .and_then(|sm| sm.signature.clone())
            .unwrap_or_default();
        let fields = (
            e.channel.clone(),
            e.seq,
            e.hub_micros,
            e.recipients.clone(),
            e.previous_leaf_hash.clone(),
            digest_of(e).to_vec(),
            sig,
        );
        (fields, e.content().map(normalize))
    }

    // ---- strategies (small values often, so that near misses are common) ----

    pub(crate) fn text() -> impl Strategy<Value = String> + Clone {
        prop_oneof![Just(String::new()), "[ab\n]{1,3}", any::<String>()]
    }

    pub(crate) fn blob() -> impl Strategy<Value = Vec<u8>> + Clone {
        prop_oneof![
            Just(Vec::new()),
            vec(any::<u8>(), 0..40),
            // Longer than the hasher's buffer.
            vec(any::<u8>(), 500..1100),
        ]
    }

    /// Arbitrary bytes, and `valid` bytes with a few bytes changed and
    /// perhaps cut short, so that a decoder gets past its first checks.
    pub(crate) fn damaged(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
        let edits = vec((any::<prop::sample::Index>(), any::<u8>()), 0..4);
        let cut = option::of(any::<prop::sample::Index>());
        prop_oneof![
            vec(any::<u8>(), 0..300),
            (valid, edits, cut).prop_map(|(mut bytes, edits, cut)| {
                for (at, x) in edits {
                    if !bytes.is_empty() {
                        let i = at.index(bytes.len());
                        bytes[i] ^= x;
                    }
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut.index(bytes.len() + 1));
                }
                bytes
            }),
        ]
    }

    fn texts() -> impl Strategy<Value = Vec<String>> + Clone {
        vec(text(), 0..3)
    }

    fn unsigned() -> impl Strategy<Value = u64> + Clone {
        prop_oneof![0..3u64, any::<u64>()]
    }

    fn signed() -> impl Strategy<Value = i64> + Clone {
        prop_oneof![-1..3i64, any::<i64>()]
    }

    fn enum_value() -> impl Strategy<Value = i32> + Clone {
        prop_oneof![0..15i32, any::<i32>()]
    }

    fn pin() -> impl Strategy<Value = EntryPin> + Clone {
        (text(), unsigned(), blob()).prop_map(|(channel, seq, leaf_hash)| EntryPin {
            channel,
            seq,
            leaf_hash,
        })
    }

    /// Any message, valid or not.
    pub(crate) fn message() -> BoxedStrategy<Message> {
        let head = (
            text(),
            text(),
            enum_value(),
            option::of((texts(), texts(), texts(), any::<bool>())),
            option::of((enum_value(), enum_value(), signed(), enum_value())),
        )
            .boxed();
        let content = (
            text(),
            blob(),
            text(),
            vec((text(), text(), unsigned(), blob()), 0..3),
        )
            .boxed();
        let tail = (
            option::of((
                option::of((text(), unsigned())),
                text(),
                vec((text(), text()), 0..3),
            )),
            signed(),
            option::of(vec(pin(), 0..3)),
            option::of((option::of(pin()), enum_value(), text())),
        )
            .boxed();
        (head, content, tail)
            .prop_map(|(head, content, tail)| {
                let (message_id, sender, kind, audience, labels) = head;
                let (subject, body, content_type, attachments) = content;
                let (references, created_micros, acknowledgement, exception) = tail;
                Message {
                    message_id,
                    sender,
                    kind,
                    audience: audience.map(|(units, mechanisms, offices, leading_group)| {
                        Audience {
                            units,
                            mechanisms,
                            offices,
                            leading_group,
                        }
                    }),
                    labels: labels.map(
                        |(sharing, priority, ack_deadline_micros, classification)| Labels {
                            sharing,
                            priority,
                            ack_deadline_micros,
                            classification,
                        },
                    ),
                    subject,
                    body: Bytes::from(body),
                    content_type,
                    attachments: attachments
                        .into_iter()
                        .map(|(name, media_type, size, sha256)| AttachmentDigest {
                            name,
                            media_type,
                            size,
                            sha256,
                        })
                        .collect(),
                    references: references.map(|(reply_to, case_id, orgs)| References {
                        reply_to: reply_to.map(|(channel, seq)| EntryRef { channel, seq }),
                        case_id,
                        organizations: orgs
                            .into_iter()
                            .map(|(credit_code, name)| Organization { credit_code, name })
                            .collect(),
                    }),
                    created_micros,
                    acknowledgement: acknowledgement.map(|entries| Acknowledgement { entries }),
                    exception: exception.map(|(entry, problem, text)| ExceptionReport {
                        entry,
                        problem,
                        text,
                    }),
                }
            })
            .boxed()
    }

    pub(crate) fn signature() -> impl Strategy<Value = Signature> + Clone {
        (text(), text(), blob()).prop_map(|(algorithm, key_id, signature)| Signature {
            algorithm,
            key_id,
            signature,
        })
    }

    /// Any entry, valid or not.
    pub(crate) fn entry() -> BoxedStrategy<Entry> {
        (
            text(),
            unsigned(),
            signed(),
            texts(),
            blob(),
            option::of((option::of(message()), option::of(signature()))),
        )
            .prop_map(
                |(channel, seq, hub_micros, recipients, previous_leaf_hash, message)| Entry {
                    channel,
                    seq,
                    hub_micros,
                    recipients,
                    previous_leaf_hash,
                    message: message
                        .map(|(message, signature)| SignedMessage { message, signature }),
                },
            )
            .boxed()
    }

    /// A small value picked by `v`, often equal to what it replaces.
    fn small(v: u8) -> String {
        ["", "a", "ab", "b"][usize::from(v % 4)].to_string()
    }

    fn small_list(v: u8) -> Vec<String> {
        match v % 4 {
            0 => vec![],
            1 => vec!["ab".into()],
            2 => vec!["a".into(), "b".into()],
            _ => vec!["a".into()],
        }
    }

    const MESSAGE_FIELDS: u8 = 19;

    /// Changes (or sets again) one field of `m` to a small value.
    fn mutate(m: &mut Message, field: u8, v: u8) {
        let n = u64::from(v % 3);
        let audience = |m: &mut Message| -> Audience { m.audience.take().unwrap_or_default() };
        match field % MESSAGE_FIELDS {
            0 => m.message_id = small(v),
            1 => m.sender = small(v),
            2 => m.kind = i32::from(v % 3),
            3 => {
                m.audience = match v % 3 {
                    0 => None,
                    1 => Some(Audience::default()),
                    _ => Some(Audience {
                        units: vec![small(v / 3)],
                        ..Default::default()
                    }),
                }
            }
            4..=6 => {
                let mut a = audience(m);
                let list = match field % MESSAGE_FIELDS {
                    4 => &mut a.units,
                    5 => &mut a.mechanisms,
                    _ => &mut a.offices,
                };
                *list = small_list(v);
                m.audience = Some(a);
            }
            7 => {
                let mut a = audience(m);
                a.leading_group = v % 2 == 1;
                m.audience = Some(a);
            }
            8 => {
                m.labels = match v % 3 {
                    0 => None,
                    1 => Some(Labels::default()),
                    _ => Some(Labels {
                        ack_deadline_micros: i64::from(v % 2),
                        priority: i32::from(v % 5 / 2),
                        ..Default::default()
                    }),
                }
            }
            9 => m.subject = small(v),
            10 => m.body = Bytes::from(small(v).into_bytes()),
            11 => m.content_type = small(v),
            12 => {
                m.attachments = match v % 3 {
                    0 => vec![],
                    _ => vec![AttachmentDigest {
                        name: small(v / 3),
                        ..Default::default()
                    }],
                }
            }
            13 => {
                m.references = match v % 4 {
                    0 => None,
                    1 => Some(References::default()),
                    _ => Some(References {
                        reply_to: Some(EntryRef {
                            channel: small(v / 4),
                            seq: n,
                        }),
                        case_id: String::new(),
                        organizations: Vec::new(),
                    }),
                }
            }
            17 => {
                m.references
                    .get_or_insert_with(References::default)
                    .organizations = match v % 3 {
                    0 => vec![],
                    1 => vec![Organization {
                        credit_code: small(v / 3),
                        name: String::new(),
                    }],
                    _ => vec![Organization {
                        credit_code: "a".into(),
                        name: small(v / 3),
                    }],
                }
            }
            14 => m.references.get_or_insert_with(References::default).case_id = small(v),
            15 => m.created_micros = i64::from(v % 3),
            16 => {
                m.acknowledgement = match v % 3 {
                    0 => None,
                    1 => Some(Acknowledgement::default()),
                    _ => Some(Acknowledgement {
                        entries: vec![EntryPin {
                            channel: small(v / 3),
                            seq: n,
                            leaf_hash: vec![],
                        }],
                    }),
                }
            }
            _ => {
                m.exception = match v % 4 {
                    0 => None,
                    1 => Some(ExceptionReport::default()),
                    2 => Some(ExceptionReport {
                        entry: Some(EntryPin::default()),
                        ..Default::default()
                    }),
                    _ => Some(ExceptionReport {
                        problem: i32::from(v % 2),
                        text: small(v / 4),
                        ..Default::default()
                    }),
                }
            }
        }
    }

    /// A message and a copy with a few fields changed to small values
    /// (which may equal the old ones).
    fn message_pair() -> impl Strategy<Value = (Message, Message)> {
        let edits = vec((0..MESSAGE_FIELDS, any::<u8>()), 1..4);
        (message(), edits).prop_map(|(a, edits)| {
            let mut b = a.clone();
            for (field, v) in edits {
                mutate(&mut b, field, v);
            }
            (a, b)
        })
    }

    const ENTRY_FIELDS: u8 = 8;

    fn entry_pair() -> impl Strategy<Value = (Entry, Entry)> {
        let edits = vec((0..ENTRY_FIELDS, any::<u8>(), any::<u8>()), 1..4);
        (entry(), edits).prop_map(|(a, edits)| {
            let mut b = a.clone();
            for (field, v, w) in edits {
                let n = u64::from(v % 3);
                match field {
                    0 => b.channel = small(v),
                    1 => b.seq = n,
                    2 => b.hub_micros = i64::from(v % 3),
                    3 => b.recipients = small_list(v),
                    4 => b.previous_leaf_hash = small(v).into_bytes(),
                    5 => {
                        let sm = b.message.get_or_insert_with(SignedMessage::default);
                        sm.signature = match v % 4 {
                            0 => None,
                            1 => Some(Signature::default()),
                            _ => Some(Signature {
                                algorithm: small(v / 4),
                                key_id: small(w),
                                signature: small(w / 4).into_bytes(),
                            }),
                        }
                    }
                    6 => {
                        b.message = match v % 3 {
                            0 => None,
                            1 => Some(SignedMessage::default()),
                            _ => b.message.take().map(|mut sm| {
                                sm.message = None;
                                sm
                            }),
                        }
                    }
                    _ => {
                        let sm = b.message.get_or_insert_with(SignedMessage::default);
                        mutate(sm.message.get_or_insert_with(Message::default), v, w);
                    }
                }
            }
            (a, b)
        })
    }

    proptest! {
        #[test]
        fn message_bytes_decode_back_and_hash_to_the_digest(m in message()) {
            let bytes = message_bytes(&m);
            prop_assert_eq!(decode_message(&bytes), Some(normalize(&m)));
            prop_assert_eq!(message_digest(&m), sha256(&bytes));
            // Decoded and encoded again: the same bytes.
            if let Some(back) = decode_message(&bytes) {
                prop_assert_eq!(message_bytes(&back), bytes);
            }
        }

        #[test]
        fn messages_share_a_digest_only_when_equal((a, b) in message_pair()) {
            let same = normalize(&a) == normalize(&b);
            prop_assert_eq!(message_bytes(&a) == message_bytes(&b), same);
            prop_assert_eq!(message_digest(&a) == message_digest(&b), same);
        }

        #[test]
        fn unrelated_messages_have_distinct_digests(a in message(), b in message()) {
            let same = normalize(&a) == normalize(&b);
            prop_assert_eq!(message_digest(&a) == message_digest(&b), same);
        }

        #[test]
        fn leaf_bytes_decode_back_and_hash_to_the_leaf_hash(e in entry()) {
            let bytes = leaf_bytes(&e);
            let (fields, _) = leaf_view(&e);
            prop_assert_eq!(decode_leaf(&bytes), Some(fields));
            let hash = leaf_hash(&e);
            prop_assert_eq!(hash, leaf_hash_of_bytes(&bytes));
            prop_assert_eq!(hash, leaf_hash_with_digest(&e, &digest_of(&e)));
            prop_assert_eq!(leaf_bytes_with_digest(&e, &digest_of(&e)), bytes);
        }

        #[test]
        fn leaves_share_a_hash_only_when_equal((a, b) in entry_pair()) {
            let same = leaf_view(&a) == leaf_view(&b);
            prop_assert_eq!(leaf_bytes(&a) == leaf_bytes(&b), same);
            prop_assert_eq!(leaf_hash(&a) == leaf_hash(&b), same);
        }
    }
}
