//! The idempotency index (format 6): a message id's record holds the seq
//! alone, the digest computed again from the entry; format 5's records,
//! seq and digest, read as they are; a record that names the wrong entry,
//! or none, or does not decode, is corruption, not a miss; a dump writes
//! every record whole.

use super::*;
use crate::store::conformance::message;
use tongbao_proto::canonical::message_digest;

#[test]
fn a_record_is_its_seq_and_the_digest_comes_from_the_entry()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let s = SledStore::open(dir.path(), true)?;
        s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
        s.commit(&[entry("tax", 1, &[("finance", 2)])])?;
        let v = s.raw_tree()?.get(key_of("tax", "m1"))?.ok_or("no record")?;
        assert_eq!(v.as_ref(), [1], "the seq as a varint, nothing else");
    }
    // A new store: the digest read from the entry's record, not a cache.
    let s = SledStore::open(dir.path(), true)?;
    let m = s.message("tax", "m1")?.ok_or("no record")?;
    assert_eq!(
        (m.seq, m.message_digest),
        (1, message_digest(&message("tax", 1)))
    );
    assert_eq!(s.message("tax", "m2")?, None);
    Ok(())
}

#[test]
fn a_format_5_record_reads_as_it_is() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), true)?;
    s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
    let whole = [0u64.to_be_bytes().as_slice(), &[7; HASH_LEN]].concat();
    s.raw_tree()?.insert(key_of("tax", "m0"), whole)?;
    let m = s.message("tax", "m0")?.ok_or("no record")?;
    assert_eq!((m.seq, m.message_digest), (0, [7; HASH_LEN]));
    Ok(())
}

#[test]
fn a_record_naming_the_wrong_entry_is_corruption() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = SledStore::open(dir.path(), true)?;
    s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
    s.commit(&[entry("tax", 1, &[("finance", 2)])])?;
    let tree = s.raw_tree()?;
    // m1 pointed at entry 0 (message m0), m7 at an entry never appended,
    // m8 garbled.
    tree.insert(key_of("tax", "m1"), [0].as_slice())?;
    tree.insert(key_of("tax", "m7"), [9].as_slice())?;
    tree.insert(key_of("tax", "m8"), [0x80].as_slice())?;
    for (id, why) in [
        ("m1", "names entry tax:0, of another message"),
        ("m7", "names entry tax:9, which is missing"),
        ("m8", "garbled"),
    ] {
        match s.message("tax", id) {
            Err(StoreError::Corrupt(m)) => {
                assert!(m.contains(&format!("tax/{id}")) && m.contains(why), "{m}")
            }
            other => return Err(format!("{id}: expected corruption, got {other:?}").into()),
        }
    }
    Ok(())
}

#[test]
fn a_dump_holds_records_whole_and_its_restore_reads_them() -> Result<(), Box<dyn std::error::Error>>
{
    let base = tempfile::tempdir()?;
    let file = base.path().join("dump");
    let s = SledStore::open(&base.path().join("a"), true)?;
    for seq in 0..3 {
        s.commit(&[entry("tax", seq, &[("finance", seq + 1)])])?;
    }
    s.dump_records(&file, 0)?;
    let mut records = Vec::new();
    crate::store::dump::read_dump(&file, |k, v| {
        if k.first() == Some(&b'm') {
            records.push(v.to_vec());
        }
        Ok(())
    })?;
    let want: Vec<Vec<u8>> = (0..3u64)
        .map(|seq| {
            [
                seq.to_be_bytes().as_slice(),
                &message_digest(&message("tax", seq)),
            ]
            .concat()
        })
        .collect();
    assert_eq!(records, want, "seq and digest, as format 3 kept them");
    let restored = base.path().join("b");
    SledStore::restore_records(&file, &restored)?;
    let r = SledStore::open(&restored, true)?;
    for seq in 0..3 {
        assert_eq!(
            r.message("tax", &format!("m{seq}"))?,
            s.message("tax", &format!("m{seq}"))?
        );
    }
    Ok(())
}

/// The key of a message id's record.
fn key_of(sender: &str, message_id: &str) -> Vec<u8> {
    super::super::message_ids::message_key(sender, message_id)
}
