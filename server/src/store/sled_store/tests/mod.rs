//! Tests of the sled store, by concern, and the helpers they share.

use super::*;
use crate::store::AnswerKind;
use crate::store::audit_index::{audit_key, audit_row};
use crate::store::codec::{
    AUDIT_SCOPE, COMMIT_KEY, ENTRY, ENTRY_AT, FETCHED, FORMAT_3, FORMAT_KEY, INBOX, TREE_HASH,
    inbox_run, key, tree_hash_key, u64_from,
};
use crate::store::durability::Record;
use crate::store::recent::INBOX_CACHE_LEN;
use prost::Message as _;
use std::sync::atomic::Ordering;
use tongbao_proto::pb;

mod audit;
mod commits;
mod format;
mod message_ids;
mod places;
mod recipient_sets;
mod replay;
mod runs;
mod segments;

fn entry(channel: &str, seq: u64, inboxes: &[(&str, u64)]) -> NewEntry {
    let message = crate::store::conformance::message(channel, seq);
    let e = pb::Entry {
        channel: channel.into(),
        seq,
        recipients: inboxes.iter().map(|(i, _)| (*i).to_string()).collect(),
        message: Some(pb::SignedMessage {
            message: Some(message.clone()),
            signature: None,
        }),
        ..Default::default()
    };
    NewEntry {
        channel: channel.into(),
        seq,
        message_id: format!("m{seq}"),
        message_digest: tongbao_proto::canonical::message_digest(&message),
        leaf_hash: [(seq as u8).wrapping_add(100); HASH_LEN],
        hub_micros: seq as i64,
        shared: Arc::new(StoredEntry {
            encoded: e.encode_to_vec().into(),
            entry: e.clone(),
            leaf_hash: [(seq as u8).wrapping_add(100); HASH_LEN],
            cursors: inboxes.iter().map(|(_, c)| *c).collect(),
        }),
        answers: Vec::new(),
        answer_kind: AnswerKind::Acknowledged,
        audit_scopes: Vec::new(),
        tree_hashes: tree_hashes(seq),
    }
}

/// The hashes entry `seq` adds to its channel's tree, as many as a real
/// one adds: its leaf hash (100 + seq) and, above it, hashes that differ
/// by level (not the real nodes: the store does not compute them).
fn tree_hashes(seq: u64) -> Vec<Hash> {
    let count = tongbao_proto::merkle::stored_hash_count(seq + 1)
        - tongbao_proto::merkle::stored_hash_count(seq);
    (0..count as u8)
        .map(|level| [(seq as u8).wrapping_add(100) ^ (level << 5); HASH_LEN])
        .collect()
}

/// A data directory as a crash leaves it: sled flushed after the first
/// commit (tax 0 to finance 1) and no later, the journal holding the
/// commits `later` made after it. Returns the crashed directory.
fn crashed_after_first_commit(
    later: impl FnOnce(&SledStore) -> Result<(), StoreError>,
) -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
    let live = tempfile::tempdir()?;
    let crashed = tempfile::tempdir()?;
    {
        let s = SledStore::open(live.path(), true)?;
        s.commit(&[entry("tax", 0, &[("finance", 1)])])?;
    }
    crate::store::copy_data_dir(live.path(), crashed.path())?;
    // The journal is copied while the store is open, as a crash leaves it
    // (a clean stop removes what sled holds).
    let s = SledStore::open(live.path(), true)?;
    later(&s)?;
    let journal = crashed.path().join("journal");
    std::fs::remove_dir_all(&journal)?;
    crate::store::copy_data_dir(&live.path().join("journal"), &journal)?;
    drop(s);
    Ok(crashed)
}

/// An entry of `channel` audited by the office of "fund", at `hub_micros`,
/// with a sender's deadline label.
fn audited(channel: &str, seq: u64, hub_micros: i64, inboxes: &[(&str, u64)]) -> NewEntry {
    let mut e = entry(channel, seq, inboxes);
    let mut stored = StoredEntry::clone(&e.shared);
    stored.entry.hub_micros = hub_micros;
    let message = pb::Message {
        sender: channel.into(),
        kind: pb::Kind::EarlyWarning as i32,
        message_id: format!("m{seq}"),
        labels: Some(pb::Labels {
            ack_deadline_micros: 7_000,
            ..Default::default()
        }),
        body: vec![b'x'; 100].into(),
        ..Default::default()
    };
    e.message_digest = tongbao_proto::canonical::message_digest(&message);
    stored.entry.message = Some(pb::SignedMessage {
        message: Some(message),
        ..Default::default()
    });
    stored.encoded = stored.entry.encode_to_vec().into();
    e.shared = Arc::new(stored);
    e.hub_micros = hub_micros;
    e.audit_scopes = vec!["fund".into()];
    e
}

fn seqs(rows: &[ScopedEntry]) -> Vec<u64> {
    rows.iter().map(|r| r.seq).collect()
}

/// Lays a store's entries out as format 3 did: each record and its tree
/// hashes in sled under their own keys, no place, and each audit row
/// whole; the store is to be dropped and its segments removed after.
fn back_to_format_3(s: &SledStore) -> Result<(), Box<dyn std::error::Error>> {
    let tree = s.raw_tree()?;
    let places = tree
        .scan_prefix([ENTRY_AT, 0])
        .collect::<Result<Vec<_>, _>>()?;
    for (k, v) in places {
        let (channel, last) = crate::store::codec::split_key(&k)?;
        let run = crate::store::places::PlaceRun::decode(last.ok_or("no seq")?, &v)?;
        for (seq, _) in run.places() {
            let record = s.raw_entry_record(&channel, seq)?.ok_or("no record")?;
            // Every tree hash the entry added, upper levels too.
            let added: Vec<u64> = (tongbao_proto::merkle::stored_hash_count(seq)
                ..tongbao_proto::merkle::stored_hash_count(seq + 1))
                .collect();
            let hashes = s.stored_hashes(&channel, &added)?;
            let k = key(ENTRY, &channel, Some(seq));
            // With 8-byte inbox positions, as format 3 wrote them.
            let record = crate::store::entry_record::whole_record(&channel, seq, &record)?;
            tree.insert(k.as_slice(), record)?;
            tree.insert(tree_hash_key(&k), hashes.concat())?;
        }
        tree.remove(&k)?;
    }
    // Audit rows whole, one key each, as format 3 kept them.
    back_to_rows_whole(s)?;
    tree.insert(FORMAT_KEY, FORMAT_3)?;
    tree.flush()?;
    Ok(())
}

/// Lays a store's audit index out as formats 3 to 5 did: one key per row,
/// the row whole (format 5 kept it in the segments, which reads alike).
fn back_to_rows_whole(s: &SledStore) -> Result<(), Box<dyn std::error::Error>> {
    let tree = s.raw_tree()?;
    let runs = tree
        .scan_prefix([AUDIT_SCOPE, 0])
        .collect::<Result<Vec<_>, _>>()?;
    for (k, v) in runs {
        let (mechanism, _) = crate::store::audit_index::Row::of_key(&k)?;
        tree.remove(&k)?;
        for row in crate::store::audit_index::rows_of(&k, &v)? {
            let entry = s.entry(&row.channel, row.seq)?.ok_or("no entry")?;
            tree.insert(row.key(&mechanism), audit_row(&entry))?;
        }
    }
    tree.flush()?;
    Ok(())
}

/// The keys of `kind` in a store's sled tree, after a flush.
fn keys_of(s: &SledStore, kind: u8) -> Result<Vec<sled::IVec>, Box<dyn std::error::Error>> {
    Ok(s.raw_tree()?
        .scan_prefix([kind, 0])
        .keys()
        .collect::<Result<Vec<_>, _>>()?)
}

/// Checks that a store's audit index runs are apart (each run's rows
/// after the previous run's of its mechanism) and that `verify-data`
/// counts each row once: audits read overlapping runs once, so only this
/// shows them. Returns the rows filed.
fn audit_runs_apart(s: &SledStore) -> Result<u64, Box<dyn std::error::Error>> {
    let mut last: Option<(String, crate::store::audit_index::Row)> = None;
    let mut rows = 0u64;
    for kv in s.raw_tree()?.scan_prefix([AUDIT_SCOPE, 0]) {
        let (k, v) = kv?;
        let (mechanism, _) = crate::store::audit_index::Row::of_key(&k)?;
        let run = crate::store::audit_index::rows_of(&k, &v)?;
        let first = run.first().ok_or("an empty run")?;
        if let Some((theirs, row)) = &last
            && *theirs == mechanism
        {
            assert!(first > row, "runs overlap at {first:?}");
        }
        rows += run.len() as u64;
        last = run.last().map(|r| (mechanism, r.clone()));
    }
    let checked = s.check_audit_rows()?;
    assert_eq!(checked.failures, Vec::<String>::new());
    assert_eq!(checked.rows, rows);
    Ok(rows)
}
