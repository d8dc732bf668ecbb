//! Checkpoints, signed notes and cosignatures in the C2SP formats.
//!
//! A channel's tree head is published as a C2SP `tlog-checkpoint` body,
//! signed as a C2SP `signed-note` with the hub's Ed25519 key, and may carry
//! C2SP `tlog-cosignature` (cosignature/v1) signatures from witnesses.
//! Using the public formats lets existing transparency tooling (Go
//! `sumdb/note`, transparency-dev witnesses) read and cosign our heads.
//!
//! The hub signs with the same [`SigningKey`] type units use; the note key
//! id is the C2SP one, `SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]`, not the
//! Tongbao key id of [`crate::keys::key_id`].

use crate::Hash;
use crate::canonical::sha256;
use crate::keys::{ED25519_PUBLIC_KEY_LEN, SigningKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Most signatures a note may carry; the Go reference refuses more.
pub const MAX_NOTE_SIGNATURES: usize = 100;
/// Largest cosignature timestamp the spec allows (2^63 − 1).
pub const MAX_COSIGNATURE_TIMESTAMP: u64 = i64::MAX as u64;

const SIGNATURE_PREFIX: &str = "\u{2014} ";
const ED25519_SIGNATURE_LEN: usize = 64;
const TIMESTAMP_LEN: usize = 8;
const KEY_ID_LEN: usize = 4;

/// Why a checkpoint body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("a checkpoint body must end with a newline")]
    MissingFinalNewline,
    #[error("a checkpoint body needs origin, size and root lines; it has {0} lines")]
    TooFewLines(usize),
    #[error("line {0} of the checkpoint body is empty")]
    EmptyLine(usize),
    #[error("the checkpoint body contains a control character")]
    ControlCharacter,
    #[error("tree size {0:?} is not a decimal u64 without leading zeros")]
    BadSize(String),
    #[error("root hash {0:?} is not the standard base64 of 32 bytes")]
    BadRoot(String),
}

/// Why a note, key or cosignature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("key name {0:?} is empty or contains a space or '+'")]
    BadKeyName(String),
    #[error("note text must be non-empty and end with a newline")]
    BadText,
    #[error("the note contains a control character other than newline")]
    ControlCharacter,
    #[error("a note needs at least one signature")]
    NoSigners,
    #[error("the note has no blank line before its signatures")]
    MissingSignatureBlock,
    #[error("the note's signature block is empty or does not end with a newline")]
    BadSignatureBlock,
    #[error("signature line {line} is malformed: {reason}")]
    BadSignatureLine { line: usize, reason: &'static str },
    #[error("the note has more than {MAX_NOTE_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("the signature by known key {name}+{key_id:08x} does not verify")]
    BadSignature { name: String, key_id: u32 },
    #[error("more than one verifier has key {name}+{key_id:08x}")]
    AmbiguousKey { name: String, key_id: u32 },
    #[error("no signature on the note is by a known key")]
    NoVerifiedSignature,
    #[error("the note is not signed by the log key {name}+{key_id:08x}")]
    MissingLogSignature { name: String, key_id: u32 },
    #[error("malformed verifier key: {0}")]
    BadVerifierKey(&'static str),
    #[error("the verifier key claims key id {claimed:08x} but the key's id is {actual:08x}")]
    VerifierKeyIdMismatch { claimed: u32, actual: u32 },
    #[error("key type 0x{0:02x} is not supported (only 0x01 Ed25519 and 0x04 cosignature/v1)")]
    UnsupportedKeyType(u8),
    #[error("an Ed25519 public key is 32 bytes, got {0}")]
    BadPublicKeyLength(usize),
    #[error("key {0} is not a cosignature/v1 key")]
    NotACosigner(String),
    #[error("cosignature timestamp {0} exceeds 2^63 - 1")]
    TimestampTooLarge(u64),
    #[error("the signature is by {found}, not by {expected}")]
    WrongSigner { expected: String, found: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// A tree head: which log, how many leaves, and the RFC 6962 root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Opaque extra lines; the spec discourages them (monitors cannot
    /// audit them), but they are signed and must round-trip.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text: `"<origin>\n<size>\n<base64 root>\n"` then one line per
    /// extension. Only a checkpoint that passes [`Checkpoint::check`]
    /// round-trips through [`Checkpoint::parse_body`].
    pub fn to_body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    /// Refuses fields that would not make a well-formed body (an empty
    /// origin or extension, or one holding a newline or control character).
    pub fn check(&self) -> Result<(), CheckpointError> {
        check_line(&self.origin, 1)?;
        for (i, line) in self.extensions.iter().enumerate() {
            check_line(line, 4 + i)?;
        }
        Ok(())
    }

    /// Parses a checkpoint body (the text of the note, without signatures).
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let Some(without_last) = text.strip_suffix('\n') else {
            return Err(CheckpointError::MissingFinalNewline);
        };
        if text.chars().any(|c| c < ' ' && c != '\n') {
            return Err(CheckpointError::ControlCharacter);
        }
        let lines: Vec<&str> = without_last.split('\n').collect();
        if lines.len() < 3 {
            return Err(CheckpointError::TooFewLines(lines.len()));
        }
        for (i, line) in lines.iter().enumerate() {
            if line.is_empty() {
                return Err(CheckpointError::EmptyLine(i + 1));
            }
        }
        let size = parse_size(lines[1])?;
        let root = parse_root(lines[2])?;
        Ok(Self {
            origin: lines[0].to_string(),
            size,
            root,
            extensions: lines[3..].iter().map(|s| s.to_string()).collect(),
        })
    }
}

fn check_line(line: &str, number: usize) -> Result<(), CheckpointError> {
    if line.is_empty() {
        return Err(CheckpointError::EmptyLine(number));
    }
    if line.chars().any(|c| c < ' ') {
        return Err(CheckpointError::ControlCharacter);
    }
    Ok(())
}

/// ASCII decimal with no sign, spaces or leading zeros ("0" for empty).
fn parse_size(s: &str) -> Result<u64, CheckpointError> {
    let canonical = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s.len() == 1 || !s.starts_with('0'));
    match s.parse::<u64>() {
        Ok(size) if canonical => Ok(size),
        _ => Err(CheckpointError::BadSize(s.to_string())),
    }
}

fn parse_root(s: &str) -> Result<Hash, CheckpointError> {
    // The STANDARD engine requires canonical padding and zero trailing
    // bits, so each root has exactly one accepted spelling.
    STANDARD
        .decode(s)
        .ok()
        .and_then(|bytes| <Hash>::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| CheckpointError::BadRoot(s.to_string()))
}

/// What a note key signs, as the C2SP signature type byte says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// 0x01: Ed25519 over the note text (the log's own signature).
    Ed25519,
    /// 0x04: timestamped Ed25519 cosignature/v1 (a witness).
    CosignatureV1,
}

impl KeyType {
    /// The signature type identifier byte.
    pub fn byte(self) -> u8 {
        match self {
            KeyType::Ed25519 => 0x01,
            KeyType::CosignatureV1 => 0x04,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x01 => Some(KeyType::Ed25519),
            0x04 => Some(KeyType::CosignatureV1),
            _ => None,
        }
    }
}

/// C2SP key id: the first four bytes, big-endian, of
/// SHA-256(name ‖ 0x0A ‖ type ‖ public key).
pub fn note_key_id(name: &str, key_type: KeyType, public_key: &[u8]) -> u32 {
    let mut input = Vec::with_capacity(name.len() + 2 + public_key.len());
    input.extend_from_slice(name.as_bytes());
    input.push(b'\n');
    input.push(key_type.byte());
    input.extend_from_slice(public_key);
    let h = sha256(&input);
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

/// Key names must be non-empty without Unicode spaces or '+', so that
/// signature lines and vkeys split unambiguously.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

fn checked_name(name: &str) -> Result<String, NoteError> {
    if valid_name(name) {
        Ok(name.to_string())
    } else {
        Err(NoteError::BadKeyName(name.to_string()))
    }
}

/// A named Ed25519 key that signs notes. Plain note signatures (type 0x01,
/// [`NoteSigner`]) and timestamped cosignatures ([`Cosigner`]) differ only
/// in the key type, hence the key id, and in what they sign.
#[derive(Debug)]
pub struct NamedNoteKey<'k, const COSIGNATURE: bool> {
    name: String,
    key: &'k SigningKey,
    key_id: u32,
}

/// Signs note texts with Ed25519 (type 0x01) under a key name.
pub type NoteSigner<'k> = NamedNoteKey<'k, false>;

/// Produces timestamped cosignature/v1 signatures on checkpoints: a
/// witness's statement that, at that time, this was the largest consistent
/// head it had seen for the origin.
pub type Cosigner<'k> = NamedNoteKey<'k, true>;

impl<'k, const COSIGNATURE: bool> NamedNoteKey<'k, COSIGNATURE> {
    const KEY_TYPE: KeyType = if COSIGNATURE {
        KeyType::CosignatureV1
    } else {
        KeyType::Ed25519
    };

    pub fn new(name: &str, key: &'k SigningKey) -> Result<Self, NoteError> {
        let name = checked_name(name)?;
        let key_id = note_key_id(&name, Self::KEY_TYPE, key.public_key());
        Ok(Self { name, key, key_id })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier, to publish (as a vkey) or to check with.
    pub fn verifier(&self) -> Result<NoteVerifier, NoteError> {
        NoteVerifier::new(&self.name, Self::KEY_TYPE, self.key.public_key())
    }
}

impl Cosigner<'_> {
    /// The signature line (`"— <name> <base64>\n"`) cosigning `checkpoint` at
    /// `timestamp` (POSIX seconds). Append it to the signed checkpoint note.
    pub fn cosign(&self, checkpoint: &Checkpoint, timestamp: u64) -> Result<String, NoteError> {
        if timestamp > MAX_COSIGNATURE_TIMESTAMP {
            return Err(NoteError::TimestampTooLarge(timestamp));
        }
        checkpoint.check()?;
        let message = cosignature_message(&checkpoint.to_body(), timestamp);
        let mut sig = Vec::with_capacity(TIMESTAMP_LEN + ED25519_SIGNATURE_LEN);
        sig.extend_from_slice(&timestamp.to_be_bytes());
        sig.extend_from_slice(&self.key.sign_raw(message.as_bytes()));
        Ok(signature_line(&self.name, self.key_id, &sig))
    }
}

/// The bytes a cosignature/v1 signs: a header, the time, then the whole
/// checkpoint body (extension lines included).
fn cosignature_message(body: &str, timestamp: u64) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{body}")
}

fn signature_line(name: &str, key_id: u32, sig: &[u8]) -> String {
    let mut raw = Vec::with_capacity(KEY_ID_LEN + sig.len());
    raw.extend_from_slice(&key_id.to_be_bytes());
    raw.extend_from_slice(sig);
    format!("{SIGNATURE_PREFIX}{name} {}\n", STANDARD.encode(raw))
}

/// A trusted public key with its name and type: what a client is
/// configured with, usually as a vkey string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_type: KeyType,
    public_key: [u8; ED25519_PUBLIC_KEY_LEN],
    key_id: u32,
}

impl NoteVerifier {
    pub fn new(name: &str, key_type: KeyType, public_key: &[u8]) -> Result<Self, NoteError> {
        let name = checked_name(name)?;
        let public_key = <[u8; ED25519_PUBLIC_KEY_LEN]>::try_from(public_key)
            .map_err(|_| NoteError::BadPublicKeyLength(public_key.len()))?;
        // A small-order key would let anyone sign checkpoints as the hub.
        crate::ed25519::check_public_key(&public_key).map_err(|_| {
            NoteError::BadVerifierKey("not a usable Ed25519 key (off the curve or of small order)")
        })?;
        let key_id = note_key_id(&name, key_type, &public_key);
        Ok(Self {
            name,
            key_type,
            public_key,
            key_id,
        })
    }

    /// Parses `<name>+<8 hex digits key id>+<base64(type ‖ public key)>`,
    /// the vkey form of Go `sumdb/note`, checking the key id.
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        const SHAPE: &str = "expected <name>+<hex key id>+<base64 key>";
        // The base64 part may itself contain '+': split at the first two.
        let (name, rest) = vkey
            .split_once('+')
            .ok_or(NoteError::BadVerifierKey(SHAPE))?;
        let (id_hex, key_b64) = rest
            .split_once('+')
            .ok_or(NoteError::BadVerifierKey(SHAPE))?;
        let name = checked_name(name)?;
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NoteError::BadVerifierKey("the key id is not 8 hex digits"));
        }
        let claimed = u32::from_str_radix(id_hex, 16)
            .map_err(|_| NoteError::BadVerifierKey("the key id is not 8 hex digits"))?;
        let key = STANDARD
            .decode(key_b64)
            .map_err(|_| NoteError::BadVerifierKey("the key is not standard base64"))?;
        let (&type_byte, public_key) = key
            .split_first()
            .ok_or(NoteError::BadVerifierKey("the key is empty"))?;
        let key_type =
            KeyType::from_byte(type_byte).ok_or(NoteError::UnsupportedKeyType(type_byte))?;
        let verifier = Self::new(&name, key_type, public_key)?;
        if verifier.key_id != claimed {
            return Err(NoteError::VerifierKeyIdMismatch {
                claimed,
                actual: verifier.key_id,
            });
        }
        Ok(verifier)
    }

    /// The vkey string, with a lowercase hex key id.
    pub fn to_vkey(&self) -> String {
        let mut key = Vec::with_capacity(1 + ED25519_PUBLIC_KEY_LEN);
        key.push(self.key_type.byte());
        key.extend_from_slice(&self.public_key);
        format!("{}+{:08x}+{}", self.name, self.key_id, STANDARD.encode(key))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    fn label(&self) -> String {
        format!("{}+{:08x}", self.name, self.key_id)
    }

    /// Verifies `sig` (without the key id) over the note text; for a
    /// cosigner also returns the signed timestamp.
    fn verify(&self, text: &str, sig: &[u8]) -> Result<Option<u64>, NoteError> {
        let bad = || NoteError::BadSignature {
            name: self.name.clone(),
            key_id: self.key_id,
        };
        let key = &self.public_key;
        match self.key_type {
            KeyType::Ed25519 => {
                crate::ed25519::verify(key, text.as_bytes(), sig).map_err(|_| bad())?;
                Ok(None)
            }
            KeyType::CosignatureV1 => {
                let timestamp = cosignature_timestamp(sig).ok_or_else(bad)?;
                let message = cosignature_message(text, timestamp);
                crate::ed25519::verify(key, message.as_bytes(), &sig[TIMESTAMP_LEN..])
                    .map_err(|_| bad())?;
                Ok(Some(timestamp))
            }
        }
    }
}

/// The timestamp of a cosignature/v1 signature (after the key id), if it
/// has the right length and an allowed time.
fn cosignature_timestamp(sig: &[u8]) -> Option<u64> {
    if sig.len() != TIMESTAMP_LEN + ED25519_SIGNATURE_LEN {
        return None;
    }
    let mut t = [0u8; TIMESTAMP_LEN];
    t.copy_from_slice(&sig[..TIMESTAMP_LEN]);
    let t = u64::from_be_bytes(t);
    (t <= MAX_COSIGNATURE_TIMESTAMP).then_some(t)
}

/// One signature line of a note, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    /// The signature bytes after the key id.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The time a cosignature/v1 signature claims, read without verifying
    /// (for display or freshness policy; trust it only once verified).
    pub fn cosignature_timestamp(&self) -> Option<u64> {
        cosignature_timestamp(&self.signature)
    }
}

/// A note split into its text and signature lines, nothing verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedNote {
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

/// A signature that verified under one of the given verifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// Position of the verifier in the slice given to [`open_note`].
    pub verifier: usize,
    pub name: String,
    pub key_id: u32,
    /// The signed time, for cosignature/v1 keys.
    pub timestamp: Option<u64>,
}

/// A note whose signatures by known keys all verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    pub text: String,
    /// One entry per known key that signed, in note order.
    pub verified: Vec<VerifiedSignature>,
    /// Signatures by keys not among the verifiers, ignored as the spec
    /// requires.
    pub unknown: Vec<NoteSignature>,
}

/// Signs a note text with each signer (Ed25519, type 0x01).
pub fn sign_note(text: &str, signers: &[NoteSigner<'_>]) -> Result<String, NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::BadText);
    }
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::ControlCharacter);
    }
    if signers.is_empty() {
        return Err(NoteError::NoSigners);
    }
    if signers.len() > MAX_NOTE_SIGNATURES {
        return Err(NoteError::TooManySignatures);
    }
    let mut note = String::with_capacity(text.len() + 1 + signers.len() * 128);
    note.push_str(text);
    note.push('\n');
    for s in signers {
        let sig = s.key.sign_raw(text.as_bytes());
        note.push_str(&signature_line(&s.name, s.key_id, &sig));
    }
    Ok(note)
}

/// Splits a note into text and signature lines, checking the syntax only.
pub fn parse_note(note: &str) -> Result<ParsedNote, NoteError> {
    if note.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::ControlCharacter);
    }
    // The text may contain blank lines; the last one separates it from the
    // signatures.
    let split = note.rfind("\n\n").ok_or(NoteError::MissingSignatureBlock)?;
    let (text, block) = (&note[..split + 1], &note[split + 2..]);
    let lines = block
        .strip_suffix('\n')
        .filter(|b| !b.is_empty())
        .ok_or(NoteError::BadSignatureBlock)?;
    let mut signatures = Vec::new();
    for (i, line) in lines.split('\n').enumerate() {
        if i >= MAX_NOTE_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        signatures.push(parse_signature_line(line, i + 1)?);
    }
    Ok(ParsedNote {
        text: text.to_string(),
        signatures,
    })
}

fn parse_signature_line(line: &str, number: usize) -> Result<NoteSignature, NoteError> {
    let bad = |reason| NoteError::BadSignatureLine {
        line: number,
        reason,
    };
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or_else(|| bad("it does not start with an em dash and a space"))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or_else(|| bad("no space between key name and signature"))?;
    if !valid_name(name) {
        return Err(bad("invalid key name"));
    }
    let raw = STANDARD
        .decode(b64)
        .map_err(|_| bad("the signature is not standard base64"))?;
    if raw.len() <= KEY_ID_LEN {
        return Err(bad("the signature is shorter than a key id and one byte"));
    }
    let (id, signature) = raw.split_at(KEY_ID_LEN);
    Ok(NoteSignature {
        name: name.to_string(),
        key_id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
        signature: signature.to_vec(),
    })
}

/// Opens a note: every signature by a known key (same name and key id)
/// must verify, others are set aside, and at least one must be known.
pub fn open_note(note: &str, verifiers: &[NoteVerifier]) -> Result<OpenedNote, NoteError> {
    let parsed = parse_note(note)?;
    let mut verified: Vec<VerifiedSignature> = Vec::new();
    let mut unknown = Vec::new();
    for sig in parsed.signatures {
        let mut matching = verifiers
            .iter()
            .enumerate()
            .filter(|(_, v)| v.name == sig.name && v.key_id == sig.key_id);
        let Some((index, verifier)) = matching.next() else {
            unknown.push(sig);
            continue;
        };
        if matching.next().is_some() {
            return Err(NoteError::AmbiguousKey {
                name: sig.name,
                key_id: sig.key_id,
            });
        }
        let timestamp = verifier.verify(&parsed.text, &sig.signature)?;
        if verified.iter().all(|v| v.verifier != index) {
            verified.push(VerifiedSignature {
                verifier: index,
                name: sig.name,
                key_id: sig.key_id,
                timestamp,
            });
        }
    }
    if verified.is_empty() {
        return Err(NoteError::NoVerifiedSignature);
    }
    Ok(OpenedNote {
        text: parsed.text,
        verified,
        unknown,
    })
}

/// Signs a checkpoint as a note (the log's key name should be the origin).
pub fn sign_checkpoint(
    checkpoint: &Checkpoint,
    signers: &[NoteSigner<'_>],
) -> Result<String, NoteError> {
    checkpoint.check()?;
    sign_note(&checkpoint.to_body(), signers)
}

/// Opens a signed checkpoint. The log's own signature is required, so a
/// note signed only by witnesses is refused; verified cosignatures are
/// returned with `verifier` indexing into `cosigners`.
pub fn open_checkpoint(
    note: &str,
    log: &NoteVerifier,
    cosigners: &[NoteVerifier],
) -> Result<(Checkpoint, Vec<VerifiedSignature>), NoteError> {
    let mut verifiers = Vec::with_capacity(1 + cosigners.len());
    verifiers.push(log.clone());
    verifiers.extend_from_slice(cosigners);
    let opened = open_note(note, &verifiers)?;
    if opened.verified.iter().all(|v| v.verifier != 0) {
        return Err(NoteError::MissingLogSignature {
            name: log.name.clone(),
            key_id: log.key_id,
        });
    }
    let checkpoint = Checkpoint::parse_body(&opened.text)?;
    let cosigned = opened
        .verified
        .into_iter()
        .filter(|v| v.verifier != 0)
        .map(|v| VerifiedSignature {
            verifier: v.verifier - 1,
            ..v
        })
        .collect();
    Ok((checkpoint, cosigned))
}

/// Checks one cosignature line (as [`Cosigner::cosign`] makes it, with or
/// without the final newline) on `checkpoint`; returns its timestamp.
pub fn verify_cosignature(
    checkpoint: &Checkpoint,
    line: &str,
    cosigner: &NoteVerifier,
) -> Result<u64, NoteError> {
    if cosigner.key_type != KeyType::CosignatureV1 {
        return Err(NoteError::NotACosigner(cosigner.label()));
    }
    checkpoint.check()?;
    let line = line.strip_suffix('\n').unwrap_or(line);
    if line.contains('\n') {
        return Err(NoteError::BadSignatureLine {
            line: 1,
            reason: "more than one line",
        });
    }
    let sig = parse_signature_line(line, 1)?;
    if sig.name != cosigner.name || sig.key_id != cosigner.key_id {
        return Err(NoteError::WrongSigner {
            expected: cosigner.label(),
            found: format!("{}+{:08x}", sig.name, sig.key_id),
        });
    }
    match cosigner.verify(&checkpoint.to_body(), &sig.signature)? {
        Some(t) => Ok(t),
        None => Err(NoteError::NotACosigner(cosigner.label())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::leaf_hash_of_bytes;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const LOG: &str = "tongbao.example/hub";

    fn sample() -> Checkpoint {
        Checkpoint::new(LOG, 5, leaf_hash_of_bytes(b"root"))
    }

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    /// A signing key from a raw Ed25519 seed (PKCS#8 v1 wrapping), for the
    /// published known-answer keys.
    fn key_from_seed(seed: &[u8]) -> Result<SigningKey, crate::keys::KeyError> {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(seed);
        SigningKey::from_pkcs8(&der)
    }

    // ---- checkpoint bodies ----

    #[test]
    fn body_round_trips() -> TestResult {
        let cp = sample();
        let body = cp.to_body();
        assert_eq!(body, format!("{LOG}\n5\n{}\n", b64(&cp.root)));
        assert_eq!(Checkpoint::parse_body(&body)?, cp);

        let mut ext = Checkpoint::new(LOG, u64::MAX, [7; 32]);
        ext.extensions = vec!["ext one".into(), "— two".into()];
        ext.check()?;
        assert_eq!(Checkpoint::parse_body(&ext.to_body())?, ext);

        let empty = Checkpoint::new(LOG, 0, crate::merkle::EMPTY_TREE_ROOT);
        assert!(empty.to_body().contains("\n0\n"));
        assert_eq!(Checkpoint::parse_body(&empty.to_body())?, empty);
        Ok(())
    }

    #[test]
    fn c2sp_example_body_parses() -> TestResult {
        // From c2sp.org/tlog-checkpoint (C2SP/C2SP tlog-checkpoint.md).
        let body =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let cp = Checkpoint::parse_body(body)?;
        assert_eq!(cp.origin, "example.com/behind-the-sofa");
        assert_eq!(cp.size, 20852163);
        assert_eq!(
            b64(&cp.root),
            "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
        );
        assert!(cp.extensions.is_empty());
        assert_eq!(cp.to_body(), body);
        Ok(())
    }

    #[test]
    fn malformed_bodies_are_refused() {
        use CheckpointError::*;
        let root = b64(&[9; 32]);
        let cases: Vec<(String, CheckpointError)> = vec![
            (String::new(), MissingFinalNewline),
            (format!("{LOG}\n5\n{root}"), MissingFinalNewline),
            ("\n".into(), TooFewLines(1)),
            (format!("{LOG}\n5\n"), TooFewLines(2)),
            (format!("\n5\n{root}\n"), EmptyLine(1)),
            (format!("{LOG}\n\n{root}\n"), EmptyLine(2)),
            (format!("{LOG}\n5\n\n"), EmptyLine(3)),
            (format!("{LOG}\n5\n{root}\n\n"), EmptyLine(4)),
            (format!("{LOG}\n5\n{root}\next\n\n"), EmptyLine(5)),
            (format!("{LOG}\r\n5\n{root}\n"), ControlCharacter),
            (format!("{LOG}\n5\n{root}\nx\ty\n"), ControlCharacter),
            (format!("{LOG}\n05\n{root}\n"), BadSize("05".into())),
            (format!("{LOG}\n00\n{root}\n"), BadSize("00".into())),
            (format!("{LOG}\n+5\n{root}\n"), BadSize("+5".into())),
            (format!("{LOG}\n-1\n{root}\n"), BadSize("-1".into())),
            (format!("{LOG}\n 5\n{root}\n"), BadSize(" 5".into())),
            (format!("{LOG}\n5 \n{root}\n"), BadSize("5 ".into())),
            (format!("{LOG}\nfive\n{root}\n"), BadSize("five".into())),
            (format!("{LOG}\n0x5\n{root}\n"), BadSize("0x5".into())),
            (
                format!("{LOG}\n18446744073709551616\n{root}\n"),
                BadSize("18446744073709551616".into()),
            ),
            (
                format!("{LOG}\n5\nnot base64!\n"),
                BadRoot("not base64!".into()),
            ),
            (
                format!("{LOG}\n5\n{}\n", b64(&[1; 31])),
                BadRoot(b64(&[1; 31])),
            ),
            (
                format!("{LOG}\n5\n{}\n", b64(&[1; 33])),
                BadRoot(b64(&[1; 33])),
            ),
            (
                format!("{LOG}\n5\n{}\n", root.trim_end_matches('=')),
                BadRoot(root.trim_end_matches('=').into()),
            ),
            // Non-zero trailing bits: a second spelling of the same bytes.
            (
                format!("{LOG}\n5\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQl=\n"),
                BadRoot("CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQl=".into()),
            ),
            (
                format!("{LOG}\n5\n{}\n", b64(&[9; 32]).replace('J', "-")),
                BadRoot(b64(&[9; 32]).replace('J', "-")),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(Checkpoint::parse_body(&body), Err(want), "{body:?}");
        }
        // The canonical spelling of the root above is accepted.
        assert!(Checkpoint::parse_body(&format!("{LOG}\n5\n{root}\n")).is_ok());
        assert_eq!(root, "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=");
    }

    #[test]
    fn unencodable_fields_are_refused() {
        let mut cp = sample();
        cp.origin = String::new();
        assert_eq!(cp.check(), Err(CheckpointError::EmptyLine(1)));
        cp.origin = "a\nb".into();
        assert_eq!(cp.check(), Err(CheckpointError::ControlCharacter));
        let mut cp = sample();
        cp.extensions = vec!["ok".into(), String::new()];
        assert_eq!(cp.check(), Err(CheckpointError::EmptyLine(5)));
        cp.extensions = vec!["a\nb".into()];
        assert_eq!(cp.check(), Err(CheckpointError::ControlCharacter));
        assert!(matches!(
            sign_checkpoint(&cp, &[]),
            Err(NoteError::Checkpoint(CheckpointError::ControlCharacter))
        ));
    }

    // ---- signed notes ----

    #[test]
    fn sign_and_open_round_trip() -> TestResult {
        let key = SigningKey::generate()?;
        let signer = NoteSigner::new(LOG, &key)?;
        let verifier = signer.verifier()?;
        assert_eq!(verifier.key_id(), signer.key_id());
        assert_eq!(verifier.key_type(), KeyType::Ed25519);
        assert_eq!(
            signer.key_id(),
            note_key_id(LOG, KeyType::Ed25519, key.public_key())
        );

        let cp = sample();
        let note = sign_checkpoint(&cp, &[signer])?;
        assert!(note.starts_with(&format!("{}\n\u{2014} {LOG} ", cp.to_body())));
        assert!(note.ends_with('\n'));

        let opened = open_note(&note, std::slice::from_ref(&verifier))?;
        assert_eq!(opened.text, cp.to_body());
        assert_eq!(
            opened.verified,
            vec![VerifiedSignature {
                verifier: 0,
                name: LOG.into(),
                key_id: verifier.key_id(),
                timestamp: None,
            }]
        );
        assert!(opened.unknown.is_empty());

        let (back, cosigned) = open_checkpoint(&note, &verifier, &[])?;
        assert_eq!(back, cp);
        assert!(cosigned.is_empty());
        Ok(())
    }

    #[test]
    fn notes_may_hold_blank_lines_and_several_signers() -> TestResult {
        let a = SigningKey::generate()?;
        let b = SigningKey::generate()?;
        let sa = NoteSigner::new("a.example", &a)?;
        let sb = NoteSigner::new("b.example", &b)?;
        let (va, vb) = (sa.verifier()?, sb.verifier()?);
        let text = "first\n\nthird after a blank line\n\n";
        let note = sign_note(text, &[sa, sb])?;
        let opened = open_note(&note, &[vb.clone(), va.clone()])?;
        assert_eq!(opened.text, text);
        let which: Vec<usize> = opened.verified.iter().map(|v| v.verifier).collect();
        assert_eq!(which, vec![1, 0]);
        // Knowing one key is enough; the other is set aside.
        let opened = open_note(&note, std::slice::from_ref(&vb))?;
        assert_eq!(opened.verified.len(), 1);
        assert_eq!(opened.unknown.len(), 1);
        assert_eq!(opened.unknown[0].name, "a.example");
        Ok(())
    }

    #[test]
    fn another_keys_signature_is_not_accepted() -> TestResult {
        let key = SigningKey::generate()?;
        let other = SigningKey::generate()?;
        let verifier = NoteSigner::new(LOG, &key)?.verifier()?;
        // Same name, other key: a different key id, so an unknown signer.
        let note = sign_checkpoint(&sample(), &[NoteSigner::new(LOG, &other)?])?;
        assert_eq!(
            open_note(&note, std::slice::from_ref(&verifier)),
            Err(NoteError::NoVerifiedSignature)
        );
        assert_eq!(
            open_checkpoint(&note, &verifier, &[]),
            Err(NoteError::NoVerifiedSignature)
        );
        // Unknown signers next to the right one are ignored.
        let note = sign_checkpoint(
            &sample(),
            &[NoteSigner::new(LOG, &other)?, NoteSigner::new(LOG, &key)?],
        )?;
        let opened = open_note(&note, std::slice::from_ref(&verifier))?;
        assert_eq!(opened.verified.len(), 1);
        assert_eq!(opened.unknown.len(), 1);
        Ok(())
    }

    #[test]
    fn changed_size_or_root_is_refused() -> TestResult {
        let key = SigningKey::generate()?;
        let signer = NoteSigner::new(LOG, &key)?;
        let verifier = signer.verifier()?;
        let cp = sample();
        let note = sign_checkpoint(&cp, &[signer])?;
        let bad = Some(NoteError::BadSignature {
            name: LOG.into(),
            key_id: verifier.key_id(),
        });

        let grown = note.replacen(&format!("\n{}\n", cp.size), "\n6\n", 1);
        assert_ne!(grown, note);
        assert_eq!(
            open_note(&grown, std::slice::from_ref(&verifier)).err(),
            bad
        );

        let forked = note.replacen(&b64(&cp.root), &b64(&[0; 32]), 1);
        assert_ne!(forked, note);
        assert_eq!(open_checkpoint(&forked, &verifier, &[]).err(), bad);

        let renamed = note.replacen(LOG, "tongbao.example/other", 1);
        assert_eq!(
            open_note(&renamed, std::slice::from_ref(&verifier)).err(),
            bad
        );
        Ok(())
    }

    #[test]
    fn forged_key_id_is_refused() -> TestResult {
        let key = SigningKey::generate()?;
        let other = SigningKey::generate()?;
        let verifier = NoteSigner::new(LOG, &key)?.verifier()?;
        let body = sample().to_body();
        // Another key's signature, labelled with the trusted name and id.
        let sig = other.sign_raw(body.as_bytes());
        let note = format!("{body}\n{}", signature_line(LOG, verifier.key_id(), &sig));
        assert_eq!(
            open_note(&note, std::slice::from_ref(&verifier)),
            Err(NoteError::BadSignature {
                name: LOG.into(),
                key_id: verifier.key_id(),
            })
        );
        // Even next to a good signature, a bad one by a known key fails.
        let good = sign_note(&body, &[NoteSigner::new(LOG, &key)?])?;
        let both = format!("{good}{}", signature_line(LOG, verifier.key_id(), &sig));
        assert!(matches!(
            open_note(&both, std::slice::from_ref(&verifier)),
            Err(NoteError::BadSignature { .. })
        ));
        Ok(())
    }

    #[test]
    fn malformed_notes_are_refused() -> TestResult {
        let key = SigningKey::generate()?;
        let signer = NoteSigner::new(LOG, &key)?;
        let verifier = signer.verifier()?;
        let body = sample().to_body();
        let note = sign_note(&body, &[signer])?;
        let sig_line = &note[body.len() + 1..];
        let b64_sig = sig_line
            .rsplit(' ')
            .next()
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        let line = |n| move |reason| NoteError::BadSignatureLine { line: n, reason };
        let cases: Vec<(String, NoteError)> = vec![
            (body.clone(), NoteError::MissingSignatureBlock),
            (format!("{body}\n"), NoteError::BadSignatureBlock),
            (
                note.trim_end_matches('\n').to_string(),
                NoteError::BadSignatureBlock,
            ),
            (format!("\u{1}{note}"), NoteError::ControlCharacter),
            (note.replace('\n', "\r\n"), NoteError::ControlCharacter),
            (
                format!("{body}\n-- {LOG} {b64_sig}\n"),
                line(1)("it does not start with an em dash and a space"),
            ),
            (
                format!("{body}\n\u{2014}{LOG} {b64_sig}\n"),
                line(1)("it does not start with an em dash and a space"),
            ),
            (
                format!("{body}\n\u{2014} {LOG}\n"),
                line(1)("no space between key name and signature"),
            ),
            (
                format!("{body}\n\u{2014}  {b64_sig}\n"),
                line(1)("invalid key name"),
            ),
            (
                format!("{body}\n\u{2014} a+b {b64_sig}\n"),
                line(1)("invalid key name"),
            ),
            (
                format!("{body}\n\u{2014} Bad Name {b64_sig}\n"),
                line(1)("the signature is not standard base64"),
            ),
            (
                format!("{body}\n\u{2014} {LOG} {b64_sig} \n"),
                line(1)("the signature is not standard base64"),
            ),
            (
                format!("{body}\n\u{2014} {LOG} {}\n", b64_sig.trim_end_matches('=')),
                line(1)("the signature is not standard base64"),
            ),
            (
                format!("{body}\n\u{2014} {LOG} {}\n", b64(&[1, 2, 3, 4])),
                line(1)("the signature is shorter than a key id and one byte"),
            ),
            (
                format!("{note}Unexpected line.\n"),
                line(2)("it does not start with an em dash and a space"),
            ),
        ];
        for (bad, want) in cases {
            assert_eq!(
                open_note(&bad, std::slice::from_ref(&verifier)),
                Err(want),
                "{bad:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn signature_count_is_bounded_and_duplicates_count_once() -> TestResult {
        let key = SigningKey::generate()?;
        let signer = NoteSigner::new(LOG, &key)?;
        let verifier = signer.verifier()?;
        let note = sign_note("hello\n", &[signer])?;
        let line = &note["hello\n\n".len()..];
        let hundred = format!("hello\n\n{}", line.repeat(MAX_NOTE_SIGNATURES));
        let opened = open_note(&hundred, std::slice::from_ref(&verifier))?;
        assert_eq!(opened.verified.len(), 1);
        let too_many = format!("hello\n\n{}", line.repeat(MAX_NOTE_SIGNATURES + 1));
        assert_eq!(
            open_note(&too_many, std::slice::from_ref(&verifier)),
            Err(NoteError::TooManySignatures)
        );
        // Two verifiers for one name and key id cannot be told apart.
        assert_eq!(
            open_note(&note, &[verifier.clone(), verifier.clone()]),
            Err(NoteError::AmbiguousKey {
                name: LOG.into(),
                key_id: verifier.key_id(),
            })
        );
        Ok(())
    }

    #[test]
    fn bad_signers_and_texts_are_refused() -> TestResult {
        let key = SigningKey::generate()?;
        for name in ["", "a b", "a+b", "tab\there", "nbsp\u{a0}x", "line\nbreak"] {
            assert_eq!(
                NoteSigner::new(name, &key).map(|s| s.key_id()),
                Err(NoteError::BadKeyName(name.into()))
            );
            assert_eq!(
                Cosigner::new(name, &key).map(|s| s.key_id()),
                Err(NoteError::BadKeyName(name.into()))
            );
        }
        let signer = NoteSigner::new(LOG, &key)?;
        assert_eq!(
            sign_note("", std::slice::from_ref(&signer)),
            Err(NoteError::BadText)
        );
        assert_eq!(
            sign_note("no newline", std::slice::from_ref(&signer)),
            Err(NoteError::BadText)
        );
        assert_eq!(
            sign_note("tab\there\n", std::slice::from_ref(&signer)),
            Err(NoteError::ControlCharacter)
        );
        assert_eq!(sign_note("x\n", &[]), Err(NoteError::NoSigners));
        Ok(())
    }

    // ---- verifier keys ----

    // Verifier keys published with Go's golang.org/x/mod/sumdb/note
    // (note_test.go and the package documentation) and with
    // transparency-dev/formats note/note_cosigv1_test.go (TEST and remora).
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEST_VKEY: &str = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6";
    const REMORA_VKEY: &str =
        "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2";
    /// The signer key matching PETER_VKEY, from the same sources: type
    /// byte 0x01 then the 32-byte Ed25519 seed.
    const PETER_SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";

    fn peter_key() -> Result<SigningKey, Box<dyn std::error::Error>> {
        let skey = STANDARD.decode(PETER_SKEY_B64)?;
        Ok(key_from_seed(&skey[1..])?)
    }

    #[test]
    fn published_vkeys_parse_and_format_back() -> TestResult {
        for (vkey, name, id, key_type) in [
            (PETER_VKEY, "PeterNeumann", 0xc74f20a3, KeyType::Ed25519),
            (ENOCH_VKEY, "EnochRoot", 0xaf0cfe78, KeyType::Ed25519),
            (TEST_VKEY, "TEST", 0x7997405c, KeyType::Ed25519),
            (
                REMORA_VKEY,
                "remora.n621.de",
                0xda77ade7,
                KeyType::CosignatureV1,
            ),
        ] {
            let v = NoteVerifier::from_vkey(vkey)?;
            assert_eq!(v.name(), name);
            assert_eq!(v.key_id(), id);
            assert_eq!(v.key_type(), key_type);
            assert_eq!(v.to_vkey(), vkey);
            assert_eq!(note_key_id(name, key_type, v.public_key()), id);
        }
        // The published signer key derives the published verifier key.
        let key = peter_key()?;
        let signer = NoteSigner::new("PeterNeumann", &key)?;
        assert_eq!(signer.key_id(), 0xc74f20a3);
        assert_eq!(signer.verifier()?.to_vkey(), PETER_VKEY);
        // Upper-case hex is read too (Go parses either).
        let upper = PETER_VKEY.replace("c74f20a3", "C74F20A3");
        assert_eq!(NoteVerifier::from_vkey(&upper)?.to_vkey(), PETER_VKEY);
        Ok(())
    }

    #[test]
    fn mangled_vkeys_are_refused() {
        // As in Go's TestNewVerifier: every proper substring and every
        // single-byte change must fail.
        let b = PETER_VKEY.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if i != 0 || j != b.len() {
                    let s = &PETER_VKEY[i..j];
                    assert!(NoteVerifier::from_vkey(s).is_err(), "{s:?}");
                }
            }
        }
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] = m[i].wrapping_add(1);
            if let Ok(s) = std::str::from_utf8(&m) {
                assert!(NoteVerifier::from_vkey(s).is_err(), "{s:?}");
            }
        }
    }

    #[test]
    fn vkey_errors_are_specific() -> Result<(), Box<dyn std::error::Error>> {
        let key = crate::keys::SigningKey::generate()?;
        let pk: [u8; 32] = key.public_key().try_into()?;
        let with = |name: &str, id: &str, key: &[u8]| format!("{name}+{id}+{}", b64(key));
        let mut ed = vec![0x01];
        ed.extend_from_slice(&pk);
        let id = format!("{:08x}", note_key_id("n", KeyType::Ed25519, &pk));
        assert!(NoteVerifier::from_vkey(&with("n", &id, &ed)).is_ok());
        assert_eq!(
            NoteVerifier::from_vkey(&with("n", "00000000", &ed)),
            Err(NoteError::VerifierKeyIdMismatch {
                claimed: 0,
                actual: note_key_id("n", KeyType::Ed25519, &pk),
            })
        );
        let mut ecdsa = ed.clone();
        ecdsa[0] = 0x02;
        assert_eq!(
            NoteVerifier::from_vkey(&with("n", &id, &ecdsa)),
            Err(NoteError::UnsupportedKeyType(0x02))
        );
        assert_eq!(
            NoteVerifier::from_vkey(&with("n", &id, &ed[..32])),
            Err(NoteError::BadPublicKeyLength(31))
        );
        assert_eq!(
            NoteVerifier::from_vkey(&with("n", &id, &[])),
            Err(NoteError::BadVerifierKey("the key is empty"))
        );
        assert_eq!(
            NoteVerifier::from_vkey(&with("n", "1234567", &ed)),
            Err(NoteError::BadVerifierKey("the key id is not 8 hex digits"))
        );
        assert_eq!(
            NoteVerifier::from_vkey(&with("n", "+1234567", &ed)),
            Err(NoteError::BadVerifierKey("the key id is not 8 hex digits"))
        );
        assert_eq!(
            NoteVerifier::from_vkey(&format!("n+{id}+***")),
            Err(NoteError::BadVerifierKey("the key is not standard base64"))
        );
        assert_eq!(
            NoteVerifier::from_vkey("just-a-name"),
            Err(NoteError::BadVerifierKey(
                "expected <name>+<hex key id>+<base64 key>"
            ))
        );
        assert_eq!(
            NoteVerifier::from_vkey(&with("a b", &id, &ed)),
            Err(NoteError::BadKeyName("a b".into()))
        );
        assert_eq!(
            NoteVerifier::new("n", KeyType::Ed25519, &[1; 33]),
            Err(NoteError::BadPublicKeyLength(33))
        );
        Ok(())
    }

    // ---- known answers from Go's golang.org/x/mod/sumdb/note ----

    const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                              then you don't know what your problem is.\n";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    #[test]
    fn go_sumdb_note_known_answers() -> TestResult {
        // TestSign: Ed25519 is deterministic, so the note is byte-exact.
        let key = peter_key()?;
        let note = sign_note(PETER_TEXT, &[NoteSigner::new("PeterNeumann", &key)?])?;
        assert_eq!(note, format!("{PETER_TEXT}\n{PETER_SIG}"));

        // TestOpen.
        let peter = NoteVerifier::from_vkey(PETER_VKEY)?;
        let enoch = NoteVerifier::from_vkey(ENOCH_VKEY)?;
        let both = format!("{PETER_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        let opened = open_note(&both, std::slice::from_ref(&peter))?;
        assert_eq!(opened.text, PETER_TEXT);
        assert_eq!(opened.verified.len(), 1);
        assert_eq!(opened.verified[0].key_id, 0xc74f20a3);
        assert_eq!(opened.unknown.len(), 1);
        assert_eq!(opened.unknown[0].name, "EnochRoot");
        assert_eq!(opened.unknown[0].key_id, 0xaf0cfe78);

        let opened = open_note(&both, &[peter.clone(), enoch])?;
        let ids: Vec<u32> = opened.verified.iter().map(|v| v.key_id).collect();
        assert_eq!(ids, vec![0xc74f20a3, 0xaf0cfe78]);
        assert_eq!(open_note(&both, &[]), Err(NoteError::NoVerifiedSignature));

        // A changed signature by a known key fails the whole note.
        let mangled = format!("{PETER_TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        assert_eq!(
            open_note(&mangled, std::slice::from_ref(&peter)),
            Err(NoteError::BadSignature {
                name: "PeterNeumann".into(),
                key_id: 0xc74f20a3,
            })
        );
        Ok(())
    }

    #[test]
    fn c2sp_signed_note_example_parses() -> TestResult {
        // The example of c2sp.org/signed-note (C2SP/C2SP signed-note.md).
        // Its public key is not published, so only the syntax is checked.
        let text = "Ognuno sta solo sul cuor della terra\n\
                    trafitto da un raggio di sole:\n\
                    \n\
                    ed è subito sera.\n";
        let note = format!(
            "{text}\n\u{2014} quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
        );
        let parsed = parse_note(&note)?;
        assert_eq!(parsed.text, text);
        assert_eq!(parsed.signatures.len(), 1);
        assert_eq!(parsed.signatures[0].name, "quasimodo.example/salvatore");
        assert_eq!(parsed.signatures[0].key_id, 0x367ba04b);
        assert_eq!(parsed.signatures[0].signature.len(), 64);
        assert_eq!(open_note(&note, &[]), Err(NoteError::NoVerifiedSignature));
        Ok(())
    }

    // ---- cosignatures ----

    #[test]
    fn cosignature_round_trip() -> TestResult {
        let log_key = SigningKey::generate()?;
        let witness_key = SigningKey::generate()?;
        let log = NoteSigner::new(LOG, &log_key)?;
        let log_verifier = log.verifier()?;
        let witness = Cosigner::new("witness.example/w1", &witness_key)?;
        let witness_verifier = witness.verifier()?;
        assert_eq!(witness_verifier.key_type(), KeyType::CosignatureV1);
        assert_eq!(
            witness.key_id(),
            note_key_id(
                "witness.example/w1",
                KeyType::CosignatureV1,
                witness_key.public_key()
            )
        );
        let cp = sample();
        let t = 1_700_000_000;
        let line = witness.cosign(&cp, t)?;
        assert!(line.starts_with("\u{2014} witness.example/w1 "));
        assert!(line.ends_with('\n'));
        assert_eq!(verify_cosignature(&cp, &line, &witness_verifier)?, t);
        assert_eq!(
            verify_cosignature(&cp, line.trim_end(), &witness_verifier)?,
            t
        );

        // Appended to the log-signed note, it verifies with the note.
        let note = sign_checkpoint(&cp, &[log])? + &line;
        let (back, cosigned) = open_checkpoint(
            &note,
            &log_verifier,
            std::slice::from_ref(&witness_verifier),
        )?;
        assert_eq!(back, cp);
        assert_eq!(cosigned.len(), 1);
        assert_eq!(cosigned[0].verifier, 0);
        assert_eq!(cosigned[0].timestamp, Some(t));
        let parsed = parse_note(&note)?;
        assert_eq!(parsed.signatures[1].cosignature_timestamp(), Some(t));

        // Witness signatures alone do not stand for the log's.
        let only_witness = format!("{}\n{line}", cp.to_body());
        assert!(open_note(&only_witness, std::slice::from_ref(&witness_verifier)).is_ok());
        assert_eq!(
            open_checkpoint(
                &only_witness,
                &log_verifier,
                std::slice::from_ref(&witness_verifier)
            ),
            Err(NoteError::MissingLogSignature {
                name: LOG.into(),
                key_id: log_verifier.key_id(),
            })
        );

        // The maximum timestamp is allowed, one more is not.
        let max = witness.cosign(&cp, MAX_COSIGNATURE_TIMESTAMP)?;
        assert_eq!(
            verify_cosignature(&cp, &max, &witness_verifier)?,
            MAX_COSIGNATURE_TIMESTAMP
        );
        assert_eq!(
            witness.cosign(&cp, MAX_COSIGNATURE_TIMESTAMP + 1),
            Err(NoteError::TimestampTooLarge(MAX_COSIGNATURE_TIMESTAMP + 1))
        );
        Ok(())
    }

    #[test]
    fn cosignature_forgeries_are_refused() -> TestResult {
        let key = SigningKey::generate()?;
        let other = SigningKey::generate()?;
        let name = "witness.example/w1";
        let witness = Cosigner::new(name, &key)?;
        let verifier = witness.verifier()?;
        let cp = sample();
        let t = 1_700_000_000;
        let line = witness.cosign(&cp, t)?;
        let bad = Err(NoteError::BadSignature {
            name: name.into(),
            key_id: verifier.key_id(),
        });

        // Changed size, root or extension lines.
        let mut grown = cp.clone();
        grown.size += 1;
        assert_eq!(verify_cosignature(&grown, &line, &verifier), bad);
        let mut forked = cp.clone();
        forked.root[0] ^= 1;
        assert_eq!(verify_cosignature(&forked, &line, &verifier), bad);
        let mut extended = cp.clone();
        extended.extensions.push("extra".into());
        assert_eq!(verify_cosignature(&extended, &line, &verifier), bad);

        // Another key under the same name: another key id.
        let other_line = Cosigner::new(name, &other)?.cosign(&cp, t)?;
        assert!(matches!(
            verify_cosignature(&cp, &other_line, &verifier),
            Err(NoteError::WrongSigner { .. })
        ));
        // Another key's signature labelled with the trusted key id.
        let message = cosignature_message(&cp.to_body(), t);
        let mut sig = t.to_be_bytes().to_vec();
        sig.extend_from_slice(&other.sign_raw(message.as_bytes()));
        let forged = signature_line(name, verifier.key_id(), &sig);
        assert_eq!(verify_cosignature(&cp, &forged, &verifier), bad);

        // A changed timestamp.
        let mut raw = STANDARD.decode(line.trim_end().rsplit(' ').next().unwrap_or(""))?;
        raw[KEY_ID_LEN + TIMESTAMP_LEN - 1] ^= 1;
        let retimed = format!("\u{2014} {name} {}\n", b64(&raw));
        assert_eq!(verify_cosignature(&cp, &retimed, &verifier), bad);
        // A timestamp above 2^63 − 1, even if the signature matched.
        let mut huge = (1u64 << 63).to_be_bytes().to_vec();
        huge.extend_from_slice(
            &key.sign_raw(cosignature_message(&cp.to_body(), 1 << 63).as_bytes()),
        );
        let huge = signature_line(name, verifier.key_id(), &huge);
        assert_eq!(verify_cosignature(&cp, &huge, &verifier), bad);
        // A truncated signature.
        let short = signature_line(name, verifier.key_id(), &raw[KEY_ID_LEN..70]);
        assert_eq!(verify_cosignature(&cp, &short, &verifier), bad);

        // The same key as a plain Ed25519 note key neither verifies nor
        // matches cosignatures: the type byte changes the key id.
        let plain = NoteVerifier::new(name, KeyType::Ed25519, key.public_key())?;
        assert_ne!(plain.key_id(), verifier.key_id());
        assert!(matches!(
            verify_cosignature(&cp, &line, &plain),
            Err(NoteError::NotACosigner(_))
        ));
        let note = format!("{}\n{line}", cp.to_body());
        assert_eq!(
            open_note(&note, std::slice::from_ref(&plain)),
            Err(NoteError::NoVerifiedSignature)
        );
        // And a plain note signature is no cosignature.
        let plain_note = sign_note(&cp.to_body(), &[NoteSigner::new(name, &key)?])?;
        let plain_line = &plain_note[cp.to_body().len() + 1..];
        assert!(matches!(
            verify_cosignature(&cp, plain_line, &verifier),
            Err(NoteError::WrongSigner { .. })
        ));
        // Two lines are not one cosignature.
        assert!(matches!(
            verify_cosignature(&cp, &format!("{line}{line}"), &verifier),
            Err(NoteError::BadSignatureLine { .. })
        ));
        Ok(())
    }

    #[test]
    fn c2sp_cosignature_example_timestamps() -> TestResult {
        // The example of c2sp.org/tlog-cosignature (C2SP/C2SP
        // tlog-cosignature.md): the witness line carries the time of the
        // spec's signed-message example, 1679315147. Keys are not
        // published, so only the syntax and timestamp are checked.
        let note = "example.com/behind-the-sofa\n\
                    20852163\n\
                    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
                    \n\
                    \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
                    \u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";
        let parsed = parse_note(note)?;
        assert_eq!(Checkpoint::parse_body(&parsed.text)?.size, 20852163);
        assert_eq!(parsed.signatures.len(), 2);
        assert_eq!(parsed.signatures[0].key_id, 0x033de0ae);
        assert_eq!(parsed.signatures[0].cosignature_timestamp(), None);
        assert_eq!(parsed.signatures[1].name, "witness.example.com/w1");
        assert_eq!(parsed.signatures[1].key_id, 0x8d66cf3f);
        assert_eq!(
            parsed.signatures[1].cosignature_timestamp(),
            Some(1679315147)
        );

        // transparency-dev/formats note/note_cosigv1_test.go,
        // TestCosignatureTimestamp: this signature carries 1727964367.
        let line = "\u{2014} w ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==";
        let sig = parse_signature_line(line, 1)?;
        assert_eq!(sig.cosignature_timestamp(), Some(1727964367));
        Ok(())
    }

    #[test]
    fn cosignature_fixed_vector() -> TestResult {
        // Not a published vector: computed independently from the
        // tlog-cosignature text with Python's `cryptography` Ed25519
        // (signed message "cosignature/v1\ntime 1679315147\n" ‖ body; key id
        // over 0x04; signature = timestamp ‖ Ed25519), using the Go
        // PeterNeumann seed under the name "witness.example/peter" and the
        // tlog-checkpoint example body. Ed25519 is deterministic.
        let key = peter_key()?;
        let witness = Cosigner::new("witness.example/peter", &key)?;
        assert_eq!(
            witness.verifier()?.to_vkey(),
            "witness.example/peter+6fa0057c+BBpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        );
        let cp = Checkpoint::parse_body(
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        )?;
        let want = "\u{2014} witness.example/peter b6AFfAAAAABkGFDLJeR//pqzhnEKVvEm2wWbh2RJ6oru5+cUUfm5X9NnlaGr8aSH9QE5RVZD4QGlxl2F5UpVIIi94p178KLfqPPsAA==\n";
        assert_eq!(witness.cosign(&cp, 1679315147)?, want);
        Ok(())
    }

    /// A verifier key of small order would accept notes anyone signed.
    #[test]
    fn a_small_order_verifier_key_is_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            NoteVerifier::new("hub", KeyType::Ed25519, &identity),
            Err(NoteError::BadVerifierKey(_))
        ));
    }
}

/// The checkpoint and note parsers on arbitrary or damaged text: no
/// panic, one spelling per checkpoint, and a damaged note never opens as
/// another checkpoint.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::canonical::proptests::{damaged, text};
    use proptest::collection::vec;
    use proptest::prelude::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const LOG: &str = "tongbao.example/hub";

    fn lossy(bytes: Vec<u8>) -> String {
        String::from_utf8_lossy(&bytes).into_owned()
    }

    proptest! {
        #[test]
        fn a_checkpoint_that_checks_round_trips(
            origin in text(),
            size in any::<u64>(),
            root in any::<Hash>(),
            extensions in vec(text(), 0..3),
        ) {
            let cp = Checkpoint { origin, size, root, extensions };
            if cp.check().is_ok() {
                prop_assert_eq!(Checkpoint::parse_body(&cp.to_body()), Ok(cp));
            }
        }

        #[test]
        fn a_body_parses_only_in_its_one_spelling(
            body in damaged(Just(Checkpoint::new(LOG, 12, [7; 32]).to_body().into_bytes()))
                .prop_map(lossy),
        ) {
            if let Ok(cp) = Checkpoint::parse_body(&body) {
                prop_assert_eq!(cp.check(), Ok(()));
                prop_assert_eq!(cp.to_body(), body);
            }
        }
    }

    #[test]
    fn damaged_notes_and_keys_never_open_as_another_checkpoint() -> TestResult {
        let (log_key, witness_key) = (SigningKey::generate()?, SigningKey::generate()?);
        let signer = NoteSigner::new(LOG, &log_key)?;
        let cosigner = Cosigner::new("witness.example", &witness_key)?;
        let (log, witness) = (signer.verifier()?, cosigner.verifier()?);
        let cp = Checkpoint::new(LOG, 12, [7; 32]);
        let note = sign_checkpoint(&cp, &[signer])?;
        let line = cosigner.cosign(&cp, 1_800_000_000)?;
        let cosigned = format!("{note}{line}");
        proptest!(|(bytes in damaged(Just(cosigned.clone().into_bytes())))| {
            let text = lossy(bytes);
            let _ = parse_note(&text);
            if let Ok((opened, cosigs)) = open_checkpoint(&text, &log, std::slice::from_ref(&witness)) {
                prop_assert_eq!(&opened, &cp);
                prop_assert!(cosigs.iter().all(|c| c.timestamp == Some(1_800_000_000)));
            }
        });
        let vkey = log.to_vkey();
        proptest!(|(bytes in damaged(Just(vkey.clone().into_bytes())))| {
            if let Ok(v) = NoteVerifier::from_vkey(&lossy(bytes)) {
                // The name and key are bound by the key id: only the hex
                // digits' case may change.
                prop_assert_eq!(v.to_vkey(), vkey.clone());
            }
        });
        proptest!(|(bytes in damaged(Just(line.clone().into_bytes())))| {
            if let Ok(t) = verify_cosignature(&cp, &lossy(bytes), &witness) {
                prop_assert_eq!(t, 1_800_000_000);
            }
        });
        Ok(())
    }
}
