//! The test vectors of `docs/protocol.md`, checked against the code.
//!
//! Each value in `proto/testdata/*.json` is recomputed by this crate and,
//! where cheap, a second time apart from it: the canonical bytes and leaf
//! bytes by a small encoder written here from the specification's text,
//! hashes with `ring` directly, signatures with `ring`'s Ed25519, tree
//! roots by the naive RFC 6962 recursion (and one published root). Then a
//! changed byte must fail each check, so none of them is vacuous.

mod vector_gen;
mod vector_json;

use ring::digest::{SHA256, digest};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde_json::Value;
use std::collections::BTreeMap;
use tongbao_proto::canonical::{
    GENESIS_PREVIOUS, leaf_bytes, leaf_hash, message_bytes, message_digest,
    signing_bytes_for_digest,
};
use tongbao_proto::checkpoint::{
    Checkpoint, KeyType, NoteVerifier, open_checkpoint, open_note, verify_cosignature,
};
use tongbao_proto::keys::{SigningKey, key_id, parse_key_registry, verify_signed_message};
use tongbao_proto::merkle::{EMPTY_TREE_ROOT, check_record, check_records, check_tree};
use tongbao_proto::pb::{Entry, Message, SignedMessage};
use vector_json::{
    array_of, bool_of, entry_fields_from, field, hash_of, hashes_of, hex_of, i64_of, load,
    message_from, message_to, signature_from, str_of, strs_of, u64_of,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn sha(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// Writes the vector files. Run explicitly, once, when the protocol
/// changes on purpose: `cargo test -p tongbao-proto --test vectors --
/// --ignored write_vectors`.
#[test]
#[ignore]
fn write_vectors() -> TestResult {
    for (name, value) in vector_gen::all()? {
        let path = vector_json::testdata_dir().join(name);
        std::fs::write(path, vector_json::to_file_text(&value)?)?;
    }
    Ok(())
}

#[test]
fn the_generator_still_makes_exactly_the_committed_files() -> TestResult {
    for (name, value) in vector_gen::all()? {
        assert_eq!(
            load(name)?,
            value,
            "{name} differs from what the code makes"
        );
    }
    Ok(())
}

/// The public keys of keys.json by party name.
fn public_keys() -> Result<BTreeMap<String, Vec<u8>>, Box<dyn std::error::Error>> {
    let keys = load("keys.json")?;
    array_of(&keys, "keys")?
        .iter()
        .map(|k| Ok((str_of(k, "name")?.to_string(), hex_of(k, "public_key")?)))
        .collect()
}

#[test]
fn keys_and_key_ids_match_the_code_and_the_rule() -> TestResult {
    let keys = load("keys.json")?;
    for k in array_of(&keys, "keys")? {
        let name = str_of(k, "name")?;
        let seed = hex_of(k, "seed")?;
        let pk = hex_of(k, "public_key")?;
        // The PKCS#8 v1 form is the fixed prefix and the seed.
        let pkcs8 = hex_of(k, "pkcs8")?;
        assert_eq!(
            pkcs8,
            [hex::decode(vector_gen::PKCS8_V1_PREFIX)?, seed.clone()].concat()
        );
        let key = SigningKey::from_pkcs8(&pkcs8)?;
        assert_eq!(key.public_key(), pk.as_slice(), "{name}");
        let independent = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| e.to_string())?;
        assert_eq!(independent.public_key().as_ref(), pk.as_slice(), "{name}");
        // Key id: first 8 bytes of SHA-256("tongbao/v1/key-id\n" ‖ alg ‖ 0 ‖ key).
        let algorithm = str_of(k, "algorithm")?;
        let input = hex_of(k, "key_id_input")?;
        let expected_input = [
            b"tongbao/v1/key-id\n".as_slice(),
            algorithm.as_bytes(),
            &[0],
            &pk,
        ]
        .concat();
        assert_eq!(input, expected_input, "{name}");
        let id = str_of(k, "key_id")?;
        assert_eq!(id, hex::encode(&sha(&input)[..8]), "{name}");
        assert_eq!(id, key_id(algorithm, &pk));
        assert_eq!(id, key.key_id());
        // Note key id: first 4 bytes of SHA-256(name ‖ '\n' ‖ type ‖ key).
        let note = field(k, "note_key")?;
        let note_name = str_of(note, "name")?;
        let key_type = u8::try_from(u64_of(note, "type")?)?;
        let note_input = hex_of(note, "key_id_input")?;
        assert_eq!(
            note_input,
            [note_name.as_bytes(), b"\n", &[key_type], &pk].concat()
        );
        assert_eq!(str_of(note, "key_id")?, hex::encode(&sha(&note_input)[..4]));
        let verifier = NoteVerifier::from_vkey(str_of(note, "vkey")?)?;
        assert_eq!(verifier.public_key(), pk.as_slice());
        assert_eq!(verifier.key_type().byte(), key_type);
        assert_eq!(
            format!("{:08x}", verifier.key_id()),
            str_of(note, "key_id")?
        );
    }
    Ok(())
}

/// The canonical message bytes, encoded from the vector's JSON as
/// `docs/protocol.md` describes them, apart from `tongbao_proto`.
fn spec_message_bytes(m: &Value) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut out = b"tongbao/v1/message\n".to_vec();
    let put_bytes = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&(b.len() as u64).to_be_bytes());
        out.extend_from_slice(b);
    };
    let put_strs = |out: &mut Vec<u8>, v: &[String]| {
        out.extend_from_slice(&(v.len() as u64).to_be_bytes());
        for s in v {
            put_bytes(out, s.as_bytes());
        }
    };
    let put_i32 =
        |out: &mut Vec<u8>, v: &Value, name: &str| -> Result<(), Box<dyn std::error::Error>> {
            out.extend_from_slice(&i32::try_from(i64_of(v, name)?)?.to_be_bytes());
            Ok(())
        };
    let put_pin = |out: &mut Vec<u8>, p: &Value| -> Result<(), Box<dyn std::error::Error>> {
        put_bytes(out, str_of(p, "channel")?.as_bytes());
        out.extend_from_slice(&u64_of(p, "seq")?.to_be_bytes());
        put_bytes(out, &hex_of(p, "leaf_hash")?);
        Ok(())
    };
    put_bytes(&mut out, str_of(m, "message_id")?.as_bytes());
    put_bytes(&mut out, str_of(m, "sender")?.as_bytes());
    put_i32(&mut out, m, "kind")?;
    let a = field(m, "audience")?;
    if a.is_null() {
        out.extend_from_slice(&[0; 3 * 8 + 1]);
    } else {
        put_strs(&mut out, &strs_of(a, "units")?);
        put_strs(&mut out, &strs_of(a, "mechanisms")?);
        put_strs(&mut out, &strs_of(a, "offices")?);
        out.push(u8::from(bool_of(a, "leading_group")?));
    }
    let l = field(m, "labels")?;
    if l.is_null() {
        out.extend_from_slice(&[0; 4 + 4 + 8 + 4]);
    } else {
        put_i32(&mut out, l, "sharing")?;
        put_i32(&mut out, l, "priority")?;
        out.extend_from_slice(&i64_of(l, "ack_deadline_micros")?.to_be_bytes());
        put_i32(&mut out, l, "classification")?;
    }
    put_bytes(&mut out, str_of(m, "subject")?.as_bytes());
    put_bytes(&mut out, &hex_of(m, "body")?);
    put_bytes(&mut out, str_of(m, "content_type")?.as_bytes());
    let attachments = array_of(m, "attachments")?;
    out.extend_from_slice(&(attachments.len() as u64).to_be_bytes());
    for x in attachments {
        put_bytes(&mut out, str_of(x, "name")?.as_bytes());
        put_bytes(&mut out, str_of(x, "media_type")?.as_bytes());
        out.extend_from_slice(&u64_of(x, "size")?.to_be_bytes());
        put_bytes(&mut out, &hex_of(x, "sha256")?);
    }
    let r = field(m, "references")?;
    let reply_to = if r.is_null() {
        &Value::Null
    } else {
        field(r, "reply_to")?
    };
    if reply_to.is_null() {
        out.push(0);
    } else {
        out.push(1);
        put_bytes(&mut out, str_of(reply_to, "channel")?.as_bytes());
        out.extend_from_slice(&u64_of(reply_to, "seq")?.to_be_bytes());
    }
    let case_id = if r.is_null() {
        ""
    } else {
        str_of(r, "case_id")?
    };
    put_bytes(&mut out, case_id.as_bytes());
    // Organizations come last, and only when there are any.
    let orgs = match r.get("organizations") {
        Some(_) => array_of(r, "organizations")?.clone(),
        None => Vec::new(),
    };
    out.extend_from_slice(&i64_of(m, "created_micros")?.to_be_bytes());
    let ack = field(m, "acknowledgement")?;
    if ack.is_null() {
        out.push(0);
    } else {
        out.push(1);
        let pins = array_of(ack, "entries")?;
        out.extend_from_slice(&(pins.len() as u64).to_be_bytes());
        for p in pins {
            put_pin(&mut out, p)?;
        }
    }
    let x = field(m, "exception")?;
    if x.is_null() {
        out.push(0);
    } else {
        out.push(1);
        let pin = field(x, "entry")?;
        if pin.is_null() {
            // An absent pin is encoded as the empty one.
            out.extend_from_slice(&[0; 8 + 8 + 8]);
        } else {
            put_pin(&mut out, pin)?;
        }
        put_i32(&mut out, x, "problem")?;
        put_bytes(&mut out, str_of(x, "text")?.as_bytes());
    }
    if !orgs.is_empty() {
        out.extend_from_slice(&(orgs.len() as u64).to_be_bytes());
        for o in &orgs {
            put_bytes(&mut out, str_of(o, "credit_code")?.as_bytes());
            put_bytes(&mut out, str_of(o, "name")?.as_bytes());
        }
    }
    Ok(out)
}

/// The signed messages of messages.json by name.
fn signed_messages() -> Result<BTreeMap<String, SignedMessage>, Box<dyn std::error::Error>> {
    let file = load("messages.json")?;
    array_of(&file, "messages")?
        .iter()
        .map(|v| {
            Ok((
                str_of(v, "name")?.to_string(),
                SignedMessage {
                    message: Some(message_from(field(v, "message")?)?),
                    signature: Some(signature_from(field(v, "signature")?)?),
                },
            ))
        })
        .collect()
}

#[test]
fn messages_canonical_bytes_digests_and_signatures_match() -> TestResult {
    let file = load("messages.json")?;
    let keys = public_keys()?;
    let messages = array_of(&file, "messages")?;
    assert!(
        messages.len() >= 3,
        "notification, receipt and feedback at least"
    );
    for v in messages {
        let name = str_of(v, "name")?;
        let json = field(v, "message")?;
        let m: Message = message_from(json)?;
        // Every field of the vector was read: written back, it is the same.
        assert_eq!(&message_to(&m), json, "{name}");
        assert_eq!(str_of(v, "kind_name")?, tongbao_proto::kinds::name(m.kind));
        let canonical = hex_of(v, "canonical_bytes")?;
        assert_eq!(message_bytes(&m), canonical, "{name}: the code's encoding");
        assert_eq!(
            spec_message_bytes(json)?,
            canonical,
            "{name}: the spec's encoding"
        );
        let d = hash_of(v, "digest")?;
        assert_eq!(sha(&canonical), d, "{name}");
        assert_eq!(message_digest(&m), d, "{name}");
        let input = hex_of(v, "signing_input")?;
        assert_eq!(
            input,
            [b"tongbao/v1/message-signature\n".as_slice(), &d].concat()
        );
        assert_eq!(signing_bytes_for_digest(&d), input);
        let signature = signature_from(field(v, "signature")?)?;
        let pk = keys
            .get(str_of(v, "signer")?)
            .ok_or("signer not in keys.json")?;
        UnparsedPublicKey::new(&ED25519, pk)
            .verify(&input, &signature.signature)
            .map_err(|_| format!("{name}: ring does not verify the signature"))?;
        let signed = SignedMessage {
            message: Some(m),
            signature: Some(signature),
        };
        assert_eq!(verify_signed_message(&signed, pk)?, d, "{name}");
    }
    Ok(())
}

/// An entry of entries.json with the signed message it names.
fn entry_of(
    v: &Value,
    messages: &BTreeMap<String, SignedMessage>,
) -> Result<Entry, Box<dyn std::error::Error>> {
    let fields = field(v, "entry")?;
    let mut e = entry_fields_from(fields)?;
    let name = str_of(fields, "message")?;
    e.message = Some(
        messages
            .get(name)
            .ok_or("entry names an unknown message")?
            .clone(),
    );
    Ok(e)
}

/// The leaf bytes as `docs/protocol.md` describes them, apart from the
/// crate: digest and signature come from messages.json.
fn spec_leaf_bytes(v: &Value, messages: &Value) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let e = field(v, "entry")?;
    let m = array_of(messages, "messages")?
        .iter()
        .find(|m| str_of(m, "name").ok() == str_of(e, "message").ok())
        .ok_or("no such message")?;
    let sig = field(m, "signature")?;
    let put = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&(b.len() as u64).to_be_bytes());
        out.extend_from_slice(b);
    };
    let mut out = b"tongbao/v1/leaf\n".to_vec();
    put(&mut out, str_of(e, "channel")?.as_bytes());
    out.extend_from_slice(&u64_of(e, "seq")?.to_be_bytes());
    out.extend_from_slice(&i64_of(e, "hub_micros")?.to_be_bytes());
    let recipients = strs_of(e, "recipients")?;
    out.extend_from_slice(&(recipients.len() as u64).to_be_bytes());
    for r in &recipients {
        put(&mut out, r.as_bytes());
    }
    put(&mut out, &hex_of(e, "previous_leaf_hash")?);
    put(&mut out, &hex_of(m, "digest")?);
    put(&mut out, str_of(sig, "algorithm")?.as_bytes());
    put(&mut out, str_of(sig, "key_id")?.as_bytes());
    put(&mut out, &hex_of(sig, "signature")?);
    Ok(out)
}

#[test]
fn entries_leaf_bytes_and_leaf_hashes_match() -> TestResult {
    let file = load("entries.json")?;
    let messages_file = load("messages.json")?;
    let messages = signed_messages()?;
    let mut by_position: BTreeMap<(String, u64), [u8; 32]> = BTreeMap::new();
    for v in array_of(&file, "entries")? {
        let e = entry_of(v, &messages)?;
        let at = format!("{}:{}", e.channel, e.seq);
        assert_eq!(str_of(v, "name")?, at);
        let bytes = hex_of(v, "leaf_bytes")?;
        assert_eq!(leaf_bytes(&e), bytes, "{at}: the code's leaf bytes");
        assert_eq!(
            spec_leaf_bytes(v, &messages_file)?,
            bytes,
            "{at}: the spec's"
        );
        let h = hash_of(v, "leaf_hash")?;
        assert_eq!(sha(&[&[0u8][..], &bytes].concat()), h, "{at}");
        assert_eq!(leaf_hash(&e), h, "{at}");
        // Recipients are sorted and distinct; the chain starts from zeros.
        let mut sorted = e.recipients.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, e.recipients, "{at}");
        let previous = if e.seq == 0 {
            GENESIS_PREVIOUS
        } else {
            *by_position
                .get(&(e.channel.clone(), e.seq - 1))
                .ok_or("previous entry not in the file")?
        };
        assert_eq!(e.previous_leaf_hash, previous, "{at}");
        by_position.insert((e.channel.clone(), e.seq), h);
    }
    // The receipt and the feedback pin entries of the file by leaf hash.
    for m in messages.values().filter_map(|s| s.message.as_ref()) {
        let pins = m
            .acknowledgement
            .iter()
            .flat_map(|a| a.entries.iter())
            .chain(m.exception.iter().filter_map(|x| x.entry.as_ref()));
        for p in pins {
            let pinned = by_position
                .get(&(p.channel.clone(), p.seq))
                .ok_or("pin names an entry not in the file")?;
            assert_eq!(p.leaf_hash, pinned, "{}", m.message_id);
        }
    }
    Ok(())
}

/// RFC 6962 MTH by its recursive definition.
fn naive_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => sha(b""),
        1 => leaves[0],
        n => {
            let k = n.next_power_of_two() / 2;
            let (l, r) = (naive_root(&leaves[..k]), naive_root(&leaves[k..]));
            sha(&[&[1u8][..], &l, &r].concat())
        }
    }
}

/// Published root of the RFC 6962 test tree of 7 leaves (Certificate
/// Transparency's and transparency-dev's merkle tests).
const PUBLISHED_ROOT_7: &str = "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c";

fn merkle_leaves(file: &Value) -> Result<Vec<[u8; 32]>, Box<dyn std::error::Error>> {
    array_of(file, "leaves")?
        .iter()
        .map(|l| {
            let h = hash_of(l, "leaf_hash")?;
            assert_eq!(sha(&[&[0u8][..], &hex_of(l, "input")?].concat()), h);
            Ok(h)
        })
        .collect()
}

#[test]
fn merkle_roots_and_proofs_verify() -> TestResult {
    let file = load("merkle.json")?;
    let leaves = merkle_leaves(&file)?;
    let mut roots = BTreeMap::new();
    for r in array_of(&file, "roots")? {
        let size = u64_of(r, "size")?;
        let root = hash_of(r, "root")?;
        assert_eq!(
            naive_root(&leaves[..usize::try_from(size)?]),
            root,
            "size {size}"
        );
        roots.insert(size, root);
    }
    assert_eq!(roots.get(&0), Some(&EMPTY_TREE_ROOT));
    assert_eq!(
        roots.get(&7).map(hex::encode).as_deref(),
        Some(PUBLISHED_ROOT_7)
    );
    let root = |t: u64| roots.get(&t).copied().ok_or("no root of that size");
    let inclusion = array_of(&file, "inclusion")?;
    assert_eq!(inclusion.len(), 28, "every index of every size 1..=7");
    for p in inclusion {
        let (n, t) = (u64_of(p, "index")?, u64_of(p, "tree_size")?);
        let leaf = leaves[usize::try_from(n)?];
        check_record(&hashes_of(p, "proof")?, t, &root(t)?, n, &leaf)?;
    }
    let consistency = array_of(&file, "consistency")?;
    assert_eq!(consistency.len(), 28, "every pair 1 <= old <= new <= 7");
    for p in consistency {
        let (n, t) = (u64_of(p, "old_size")?, u64_of(p, "new_size")?);
        check_tree(&hashes_of(p, "proof")?, t, &root(t)?, n, &root(n)?)?;
    }
    let multi = field(&file, "multiproof")?;
    let t = u64_of(multi, "tree_size")?;
    let held: Vec<(u64, [u8; 32])> = array_of(multi, "indexes")?
        .iter()
        .map(|i| {
            let i = i.as_u64().ok_or("index")?;
            Ok((i, leaves[usize::try_from(i)?]))
        })
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    check_records(&hashes_of(multi, "proof")?, t, &root(t)?, &held)?;
    Ok(())
}

fn hub_verifier(notes: &Value) -> Result<NoteVerifier, Box<dyn std::error::Error>> {
    Ok(NoteVerifier::from_vkey(str_of(notes, "vkey")?)?)
}

#[test]
fn checkpoint_cosignature_and_key_registry_notes_verify() -> TestResult {
    let notes = load("notes.json")?;
    let hub = hub_verifier(&notes)?;
    let keys = public_keys()?;
    assert_eq!(
        hub.public_key(),
        keys.get("hub").ok_or("hub key")?.as_slice()
    );
    assert_eq!(hub.name(), str_of(&notes, "log_name")?);
    let cp = field(&notes, "checkpoint")?;
    let channel = str_of(cp, "channel")?;
    let (checkpoint, cosigned) = open_checkpoint(str_of(cp, "note")?, &hub, &[])?;
    assert!(cosigned.is_empty());
    assert_eq!(checkpoint.origin, format!("{}/{channel}", hub.name()));
    assert_eq!(checkpoint.origin, str_of(cp, "origin")?);
    assert_eq!(checkpoint.size, u64_of(cp, "size")?);
    assert_eq!(checkpoint.root, hash_of(cp, "root")?);
    assert_eq!(checkpoint.to_body(), str_of(cp, "body")?);
    // The note is the body, a blank line, and the hub's signature line,
    // whose Ed25519 signature ring checks over the body.
    let note = str_of(cp, "note")?;
    let line = note
        .strip_prefix(str_of(cp, "body")?)
        .and_then(|rest| rest.strip_prefix('\n'))
        .ok_or("note is not body + blank line + signatures")?;
    let sig = signature_line_bytes(line, hub.name())?;
    assert_eq!(sig[..4], hub.key_id().to_be_bytes());
    UnparsedPublicKey::new(&ED25519, hub.public_key())
        .verify(str_of(cp, "body")?.as_bytes(), &sig[4..])
        .map_err(|_| "ring does not verify the checkpoint signature")?;
    // The tree is the channel's entries of entries.json.
    let entries = load("entries.json")?;
    let leaves: Vec<[u8; 32]> = array_of(&entries, "entries")?
        .iter()
        .filter(|e| field(e, "entry").and_then(|f| str_of(f, "channel")).ok() == Some(channel))
        .map(|e| hash_of(e, "leaf_hash"))
        .collect::<Result<_, _>>()?;
    assert_eq!(leaves.len() as u64, checkpoint.size);
    assert_eq!(naive_root(&leaves), checkpoint.root);
    for p in array_of(cp, "inclusion")? {
        let seq = u64_of(p, "seq")?;
        let leaf = hash_of(p, "leaf_hash")?;
        assert_eq!(leaves[usize::try_from(seq)?], leaf);
        check_record(
            &hashes_of(p, "proof")?,
            checkpoint.size,
            &checkpoint.root,
            seq,
            &leaf,
        )?;
    }
    // The unit's cosignature, under its signing key as a cosigner.
    let co = field(&notes, "cosignature")?;
    let unit = str_of(co, "unit")?;
    let cosigner = NoteVerifier::new(unit, KeyType::CosignatureV1, keys.get(unit).ok_or("unit")?)?;
    let timestamp = verify_cosignature(&checkpoint, str_of(co, "line")?, &cosigner)?;
    assert_eq!(timestamp, u64_of(co, "timestamp")?);
    let signed_input = format!("cosignature/v1\ntime {timestamp}\n{}", checkpoint.to_body());
    assert_eq!(str_of(co, "signed_input")?, signed_input);
    let sig = signature_line_bytes(str_of(co, "line")?, unit)?;
    assert_eq!(sig[..4], cosigner.key_id().to_be_bytes());
    assert_eq!(sig[4..12], timestamp.to_be_bytes());
    UnparsedPublicKey::new(&ED25519, cosigner.public_key())
        .verify(signed_input.as_bytes(), &sig[12..])
        .map_err(|_| "ring does not verify the cosignature")?;
    let with_cosignature = format!("{note}{}", str_of(co, "line")?);
    let (_, cosigned) = open_checkpoint(&with_cosignature, &hub, &[cosigner])?;
    assert_eq!(cosigned.len(), 1);
    // The key registry: signed by the hub, listing keys.json's unit keys.
    let reg = field(&notes, "key_registry")?;
    let opened = open_note(str_of(reg, "note")?, std::slice::from_ref(&hub))?;
    assert_eq!(opened.text, str_of(reg, "text")?);
    let listed = parse_key_registry(&opened.text)?;
    assert_eq!(listed.len(), 3);
    for k in &listed {
        assert_eq!(Some(&k.public_key), keys.get(&k.unit), "{}", k.unit);
        assert_eq!(k.key_id, key_id(&k.algorithm, &k.public_key));
    }
    Ok(())
}

#[test]
fn an_office_sees_receipts_whole_and_unaddressed_feedback_without_free_text() -> TestResult {
    let file = load("entries.json")?;
    let view = field(&file, "office_view")?;
    let messages = signed_messages()?;
    let mut redacted = 0;
    for answer in array_of(view, "answers")? {
        let ev = array_of(&file, "entries")?
            .iter()
            .find(|e| str_of(e, "name").ok() == str_of(answer, "entry").ok())
            .ok_or("office_view names an entry not in the file")?;
        let entry = entry_of(ev, &messages)?;
        let seen = tongbao_proto::redact::for_audit(&entry, str_of(answer, "office")?);
        let shown = seen
            .entry
            .message
            .as_ref()
            .and_then(|s| s.message.as_ref())
            .ok_or("no message")?;
        assert_eq!(&message_to(shown), field(answer, "message_as_shown")?);
        assert_eq!(
            Some(seen.redacted),
            field(answer, "answer_redacted")?.as_bool()
        );
        let original = entry.content().ok_or("no message")?;
        if seen.redacted {
            // Free text is gone, pins and problem stay; the shown message no
            // longer hashes to what was signed.
            assert!(shown.subject.is_empty() && shown.body.is_empty());
            assert!(shown.content_type.is_empty() && shown.attachments.is_empty());
            let x = shown.exception.as_ref().ok_or("no exception")?;
            assert!(x.text.is_empty() && x.entry.is_some() && x.problem != 0);
            assert_ne!(message_digest(shown), message_digest(original));
            redacted += 1;
        } else {
            // Shown whole: it hashes to what was signed, so the office
            // checks its pins against the signature itself.
            assert_eq!(shown, original);
            let addressed = entry
                .recipients
                .iter()
                .any(|r| r == str_of(answer, "office").unwrap_or(""));
            assert!(addressed || !tongbao_proto::redact::has_free_text(shown));
        }
    }
    assert_eq!(
        redacted, 1,
        "one answer of the vectors is shown without free text"
    );
    Ok(())
}

#[test]
fn the_bundle_carries_the_entries_checkpoints_and_registry_of_the_vectors() -> TestResult {
    use base64::Engine;
    use prost::Message as _;
    let bundle = load("bundle.json")?;
    let notes = load("notes.json")?;
    let hub = hub_verifier(&notes)?;
    assert_eq!(str_of(&bundle, "format")?, "tongbao-proof-bundle/1");
    assert_eq!(str_of(&bundle, "hub_key")?, str_of(&notes, "vkey")?);
    assert_eq!(
        field(&bundle, "key_registry")?,
        field(field(&notes, "key_registry")?, "note")?
    );
    let entries = load("entries.json")?;
    let messages = signed_messages()?;
    let mut expected = Vec::new();
    for ev in array_of(&entries, "entries")? {
        expected.push(entry_of(ev, &messages)?);
    }
    let bundled = array_of(&bundle, "entries")?;
    assert_eq!(bundled.len(), expected.len());
    let checkpoints = field(&bundle, "checkpoints")?;
    for (b, want) in bundled.iter().zip(&expected) {
        let bytes = base64::engine::general_purpose::STANDARD.decode(str_of(b, "entry")?)?;
        let e = Entry::decode(bytes.as_slice())?;
        assert_eq!(&e, want);
        assert_eq!(
            e.encode_to_vec(),
            bytes,
            "the protobuf encoding is canonical"
        );
        let leaf = hash_of(b, "leaf_hash")?;
        assert_eq!(leaf_hash(&e), leaf);
        let (cp, _) = open_checkpoint(str_of(checkpoints, &e.channel)?, &hub, &[])?;
        assert_eq!(cp.origin, format!("{}/{}", hub.name(), e.channel));
        assert_eq!(cp.size, u64_of(b, "tree_size")?);
        check_record(&hashes_of(b, "proof")?, cp.size, &cp.root, e.seq, &leaf)?;
    }
    Ok(())
}

/// The raw bytes of a signature line "— <name> <base64>": key id, then
/// the signature (a cosignature has its timestamp first).
fn signature_line_bytes(line: &str, name: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use base64::Engine;
    let b64 = line
        .trim_end_matches('\n')
        .strip_prefix(&format!("\u{2014} {name} "))
        .ok_or("not a signature line of that name")?;
    Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
}

/// Each check above, given one changed byte, must fail: otherwise it
/// would pass whatever the files said.
#[test]
fn a_changed_byte_fails_every_check() -> TestResult {
    let file = load("messages.json")?;
    let keys = public_keys()?;
    let v = &array_of(&file, "messages")?[0];
    let json = field(v, "message")?;
    let m = message_from(json)?;
    let d = hash_of(v, "digest")?;

    let mut canonical = hex_of(v, "canonical_bytes")?;
    canonical[40] ^= 1;
    assert_ne!(
        sha(&canonical),
        d,
        "a changed canonical byte must change the digest"
    );
    assert_ne!(message_bytes(&m), canonical);

    let mut other = json.clone();
    other["sender"] = Value::from("tax");
    assert_ne!(spec_message_bytes(&other)?, hex_of(v, "canonical_bytes")?);
    assert_ne!(message_digest(&message_from(&other)?), d);

    let pk = keys.get(str_of(v, "signer")?).ok_or("signer")?;
    let mut signature = signature_from(field(v, "signature")?)?;
    signature.signature[10] ^= 1;
    let signed = SignedMessage {
        message: Some(m.clone()),
        signature: Some(signature),
    };
    assert!(verify_signed_message(&signed, pk).is_err());
    let mut changed = m.clone();
    changed.created_micros += 1;
    let signed = SignedMessage {
        message: Some(changed),
        signature: Some(signature_from(field(v, "signature")?)?),
    };
    assert!(verify_signed_message(&signed, pk).is_err());

    let entries = load("entries.json")?;
    let ev = &array_of(&entries, "entries")?[0];
    let mut bytes = hex_of(ev, "leaf_bytes")?;
    let at = bytes.len() - 1;
    bytes[at] ^= 1;
    assert_ne!(
        sha(&[&[0u8][..], &bytes].concat()),
        hash_of(ev, "leaf_hash")?
    );
    let mut e = entry_of(ev, &signed_messages()?)?;
    e.hub_micros += 1;
    assert_ne!(leaf_hash(&e), hash_of(ev, "leaf_hash")?);

    let merkle = load("merkle.json")?;
    let leaves = merkle_leaves(&merkle)?;
    let root7 = naive_root(&leaves);
    let p = array_of(&merkle, "inclusion")?
        .iter()
        .find(|p| u64_of(p, "tree_size").ok() == Some(7) && u64_of(p, "index").ok() == Some(2))
        .ok_or("proof of leaf 2 in size 7")?;
    let mut proof = hashes_of(p, "proof")?;
    check_record(&proof, 7, &root7, 2, &leaves[2])?;
    proof[1][0] ^= 1;
    assert!(check_record(&proof, 7, &root7, 2, &leaves[2]).is_err());
    assert!(check_record(&hashes_of(p, "proof")?, 7, &root7, 3, &leaves[2]).is_err());
    let c = array_of(&merkle, "consistency")?
        .iter()
        .find(|p| u64_of(p, "old_size").ok() == Some(3) && u64_of(p, "new_size").ok() == Some(7))
        .ok_or("consistency 3 to 7")?;
    let mut proof = hashes_of(c, "proof")?;
    let root3 = naive_root(&leaves[..3]);
    check_tree(&proof, 7, &root7, 3, &root3)?;
    proof[0][31] ^= 1;
    assert!(check_tree(&proof, 7, &root7, 3, &root3).is_err());

    let notes = load("notes.json")?;
    let hub = hub_verifier(&notes)?;
    let cp = field(&notes, "checkpoint")?;
    let note = str_of(cp, "note")?;
    let size = u64_of(cp, "size")?;
    let forged = note.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 1), 1);
    assert_ne!(forged, note);
    assert!(open_checkpoint(&forged, &hub, &[]).is_err());
    let checkpoint = Checkpoint::parse_body(str_of(cp, "body")?)?;
    let co = field(&notes, "cosignature")?;
    let unit = str_of(co, "unit")?;
    let cosigner = NoteVerifier::new(unit, KeyType::CosignatureV1, keys.get(unit).ok_or("unit")?)?;
    let mut later = checkpoint.clone();
    later.size += 1;
    assert!(verify_cosignature(&later, str_of(co, "line")?, &cosigner).is_err());
    let reg = field(&notes, "key_registry")?;
    let registry = str_of(reg, "note")?;
    let first_key = keys.get("civil-affairs").ok_or("key")?;
    let other_key = keys.get("tax").ok_or("key")?;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let swapped = registry.replacen(&b64.encode(first_key), &b64.encode(other_key), 1);
    assert_ne!(swapped, registry);
    assert!(open_note(&swapped, std::slice::from_ref(&hub)).is_err());
    Ok(())
}

#[test]
fn the_vector_files_are_the_ones_the_spec_names() -> TestResult {
    let spec = std::fs::read_to_string(vector_json::testdata_dir().join("../../docs/protocol.md"))?;
    for (name, _) in vector_gen::all()? {
        assert!(
            spec.contains(&format!("proto/testdata/{name}")),
            "docs/protocol.md does not describe {name}"
        );
    }
    Ok(())
}
