//! Recipient sets: the recipients' names an entry carries, kept once for
//! every entry that names the same units (format 7).
//!
//! A mechanism's messages go to the same few sets of units again and
//! again, and at 13 recipients their names were 185 bytes of each stored
//! entry. An entry's recipients are one run of field 4 in its encoded
//! bytes (prost writes fields in order); the record keeps the encoded
//! entry with that run cut out and names the set that holds it
//! ([`super::entry_record::entry_record_with_set`]). Cutting whole fields
//! out of a protobuf message and putting them back where they were gives
//! the same bytes, so leaf hashes and what is served do not change.
//!
//! A set is written under [`RECIPIENT_SET`] in the same commit as the
//! first record that names it, with the count of sets
//! ([`RECIPIENT_SETS_KEY`]), so the journal and sled never hold a record
//! without its set; the table is read whole at open, and a set missing
//! there refuses the start (its id would otherwise be handed out again).
//! It is bounded ([`MAX_SETS`], [`MAX_SET_BYTES`]): past that, names stay
//! in the record.

use super::StoreError;
use super::codec::{RECIPIENT_SET, RECIPIENT_SETS_KEY, key, split_key, u64_from};
use super::durability::Write;
use super::entry_record::{entry_record_compact, entry_record_with_set, with_recipients};
use super::overlay::Kv;
use crate::fatal;
use prost::encoding::{WireType, decode_key, decode_varint};
use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use tongbao_proto::Hash;

/// The most sets kept: every subset of 13 units is 8,192.
pub(super) const MAX_SETS: usize = 16_384;
/// The most bytes of names the sets hold together (memory, read at open).
pub(super) const MAX_SET_BYTES: usize = 4 << 20;
/// `tongbao.v1.Entry.recipients`.
const RECIPIENTS_FIELD: u32 = 4;

/// The sets known, by id and by their bytes; ids are dense from 0.
#[derive(Default)]
struct Table {
    sets: Vec<Arc<[u8]>>,
    ids: HashMap<Arc<[u8]>, u32>,
    bytes: usize,
}

impl Table {
    fn add(&mut self, names: Arc<[u8]>) -> u32 {
        let id = self.sets.len() as u32;
        self.bytes += names.len();
        self.ids.insert(names.clone(), id);
        self.sets.push(names);
        id
    }

    /// Forgets the sets from `first` on (a commit that failed).
    fn truncate(&mut self, first: usize) {
        for names in self.sets.drain(first..) {
            self.bytes -= names.len();
            self.ids.remove(&names);
        }
    }
}

/// The recipient sets of a store, shared by its writer (which adds them)
/// and every reader of entry records (which puts them back).
#[derive(Default)]
pub(super) struct RecipientSets {
    /// Held from a set's first use to its commit, so that ids are handed
    /// out in the order commits reach the journal.
    assigning: Mutex<()>,
    table: RwLock<Table>,
    /// Whether the operators were told the bounds are reached (once a
    /// process: from then on new sets' names stay in their records).
    told_full: AtomicBool,
}

impl RecipientSets {
    /// Reads the sets stored under [`RECIPIENT_SET`] (all of them, ids in
    /// order, as many as `count`, the value of [`RECIPIENT_SETS_KEY`],
    /// says and within the bounds), replacing what the table held.
    pub(super) fn load(
        &self,
        count: Option<&[u8]>,
        stored: impl Iterator<Item = Result<Kv, StoreError>>,
    ) -> Result<(), StoreError> {
        let mut table = Table::default();
        for kv in stored {
            let (k, v) = kv?;
            let id = split_key(&k)?.1;
            let next = table.sets.len() as u64;
            if id != Some(next) {
                let found = id.map_or_else(|| "a key without one".into(), |id| id.to_string());
                return Err(StoreError::Corrupt(format!(
                    "recipient set {next} is missing (the next stored is {found})"
                )));
            }
            table.add(Arc::from(v.as_ref()));
            if table.sets.len() > MAX_SETS || table.bytes > MAX_SET_BYTES {
                return Err(StoreError::Corrupt(format!(
                    "recipient sets beyond the bounds a hub writes ({MAX_SETS} sets, \
                     {MAX_SET_BYTES} bytes of names)"
                )));
            }
        }
        let counted = count.map(u64_from).transpose()?.unwrap_or(0);
        if counted != table.sets.len() as u64 {
            return Err(StoreError::Corrupt(format!(
                "{counted} recipient sets were written but {} found",
                table.sets.len()
            )));
        }
        *fatal::write(&self.table, "recipient sets")? = table;
        Ok(())
    }

    /// How many sets the table holds.
    #[cfg(test)]
    pub(super) fn len(&self) -> Result<usize, StoreError> {
        Ok(fatal::read(&self.table, "recipient sets")?.sets.len())
    }

    /// `record` (entry `channel`:`seq`'s) as format 6 keeps it, its
    /// recipients put back if it names a set.
    pub(super) fn expand<'a>(
        &self,
        channel: &str,
        seq: u64,
        record: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, StoreError> {
        let table = fatal::read(&self.table, "recipient sets")?;
        with_recipients(channel, seq, record, |id| {
            table.sets.get(id as usize).cloned()
        })
    }

    /// Starts naming the sets of one commit's records.
    pub(super) fn assign(&self) -> Result<Assigning<'_>, StoreError> {
        Ok(Assigning {
            _order: fatal::lock(&self.assigning, "recipient sets")?,
            sets: self,
            first_new: None,
        })
    }
}

/// One commit's use of the sets: records made with them, and the sets it
/// adds, forgotten again when it is dropped before [`Assigning::committed`]
/// (the commit failed, or never happened).
pub(super) struct Assigning<'a> {
    _order: MutexGuard<'a, ()>,
    sets: &'a RecipientSets,
    first_new: Option<usize>,
}

impl Assigning<'_> {
    /// The record of an entry: its recipients by set where they can be
    /// (the set's write added to `ops` when this commit is its first use),
    /// else inline.
    pub(super) fn record(
        &mut self,
        leaf_hash: &Hash,
        cursors: &[u64],
        encoded: &[u8],
        ops: &mut Vec<Write>,
    ) -> Result<Vec<u8>, StoreError> {
        let inline = || entry_record_compact(leaf_hash, cursors, encoded);
        let Some(cut) = recipients_run(encoded) else {
            return Ok(inline());
        };
        let names = &encoded[cut.clone()];
        let known = fatal::read(&self.sets.table, "recipient sets")?
            .ids
            .get(names)
            .copied();
        let id = match known {
            Some(id) => id,
            None => {
                let mut table = fatal::write(&self.sets.table, "recipient sets")?;
                if table.sets.len() >= MAX_SETS || table.bytes + names.len() > MAX_SET_BYTES {
                    if !self.sets.told_full.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            sets = table.sets.len(),
                            bytes = table.bytes,
                            "the recipient sets are at their bounds ({MAX_SETS} sets, \
                             {MAX_SET_BYTES} bytes of names): an entry to a new set that does not \
                             fit keeps its recipients' names in its record"
                        );
                    }
                    return Ok(inline());
                }
                self.first_new.get_or_insert(table.sets.len());
                let id = table.add(Arc::from(names));
                ops.push((key(RECIPIENT_SET, "", Some(u64::from(id))), names.to_vec()));
                let count = u64::from(id) + 1;
                ops.push((RECIPIENT_SETS_KEY.to_vec(), count.to_be_bytes().to_vec()));
                id
            }
        };
        Ok(entry_record_with_set(leaf_hash, cursors, id, encoded, cut))
    }

    /// The commit is in the journal and the overlay: its sets stay.
    pub(super) fn committed(mut self) {
        self.first_new = None;
    }
}

impl Drop for Assigning<'_> {
    /// No record naming the sets this commit added reached the journal or
    /// the overlay: they are forgotten, so that the next use writes them.
    fn drop(&mut self) {
        if let Some(first) = self.first_new.take()
            && let Ok(mut table) = self.sets.table.write()
        {
            table.truncate(first);
        }
    }
}

/// Where the recipients are in an encoded entry: the one run of field 4
/// among its top-level fields. None when it has none, when they are not
/// one run, or when the bytes do not parse.
pub(super) fn recipients_run(encoded: &[u8]) -> Option<Range<usize>> {
    let mut rest = encoded;
    let mut run: Option<Range<usize>> = None;
    let mut after_run = false;
    while !rest.is_empty() {
        let start = encoded.len() - rest.len();
        let (field, wire) = decode_key(&mut rest).ok()?;
        match wire {
            WireType::Varint => {
                decode_varint(&mut rest).ok()?;
            }
            WireType::SixtyFourBit => rest = rest.get(8..)?,
            WireType::ThirtyTwoBit => rest = rest.get(4..)?,
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
                rest = rest.get(len..)?;
            }
            WireType::StartGroup | WireType::EndGroup => return None,
        }
        let end = encoded.len() - rest.len();
        if field != RECIPIENTS_FIELD {
            after_run = run.is_some();
            continue;
        }
        if wire != WireType::LengthDelimited || after_run {
            return None;
        }
        match &mut run {
            Some(r) => r.end = end,
            None => run = Some(start..end),
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::proptests::entry_with;
    use crate::store::entry_record::decode_entry;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use prost::Message as _;
    use tongbao_proto::pb;

    /// The run found is exactly the bytes prost writes for the recipients
    /// alone (an independent encoding of field 4).
    #[test]
    fn the_run_is_the_recipients_encoding() {
        let entry = entry_with(3, b"body".to_vec());
        let encoded = entry.encode_to_vec();
        let alone = pb::Entry {
            recipients: entry.recipients.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let run = recipients_run(&encoded).unwrap_or_default();
        assert_eq!(&encoded[run], &alone[..]);
        assert_eq!(recipients_run(&entry_with(0, vec![]).encode_to_vec()), None);
    }

    /// Recipients split by another field are not one run: left inline.
    #[test]
    fn recipients_not_in_one_run_are_refused() {
        let mut encoded = Vec::new();
        for (field, value) in [(4u32, "tax"), (1, "police"), (4, "audit")] {
            prost::encoding::string::encode(field, &value.to_string(), &mut encoded);
        }
        assert_eq!(recipients_run(&encoded), None);
        // A group, a truncated field, a varint where names go.
        assert_eq!(recipients_run(&[0x23]), None);
        assert_eq!(recipients_run(&[0x22, 5, b'a']), None);
        assert_eq!(recipients_run(&[0x20, 1]), None);
    }

    /// A table in a sled tree of its own, written as a commit's ops are.
    fn stored(ops: &[Write]) -> Result<sled::Tree, Box<dyn std::error::Error>> {
        let db = sled::Config::new().temporary(true).open()?;
        let tree = db.open_tree("t")?;
        for (k, v) in ops {
            tree.insert(k, v.as_slice())?;
        }
        Ok(tree)
    }

    fn loaded(tree: &sled::Tree) -> Result<RecipientSets, StoreError> {
        let sets = RecipientSets::default();
        let count = tree.get(RECIPIENT_SETS_KEY)?;
        let stored = tree.scan_prefix([RECIPIENT_SET, 0]);
        sets.load(
            count.as_deref(),
            stored.map(|kv| kv.map_err(StoreError::from)),
        )?;
        Ok(sets)
    }

    proptest! {
        /// Records made with sets read back as the inline record, byte for
        /// byte, and after the sets are stored and loaded again; a set is
        /// written once, by its first use.
        #[test]
        fn records_by_set_read_back_as_inline(
            entries in vec((0..4usize, vec(any::<u8>(), 0..20), vec(0..500u64, 4)), 1..12),
        ) {
            let sets = RecipientSets::default();
            let mut ops = Vec::new();
            let mut made = Vec::new();
            let mut assigning = sets.assign()?;
            for (n, body, cursors) in &entries {
                let encoded = entry_with(*n, body.clone()).encode_to_vec();
                let cursors = &cursors[..*n];
                let record = assigning.record(&[7; 32], cursors, &encoded, &mut ops)?;
                made.push((record, entry_record_compact(&[7; 32], cursors, &encoded)));
            }
            assigning.committed();
            let distinct: std::collections::HashSet<usize> =
                entries.iter().map(|(n, _, _)| *n).filter(|n| *n > 0).collect();
            // Each new set and the count of sets.
            prop_assert_eq!(ops.len(), 2 * distinct.len());
            let again = loaded(&stored(&ops).map_err(|e| TestCaseError::fail(e.to_string()))?)?;
            for (record, inline) in &made {
                for sets in [&sets, &again] {
                    let whole = sets.expand("tax", 3, record)?;
                    prop_assert_eq!(&whole[..], &inline[..]);
                    prop_assert!(decode_entry("tax", 3, &whole).is_ok());
                }
            }
        }

        /// Damaged records that name sets: refused or read, never a panic.
        #[test]
        fn damaged_records_by_set_expand_without_panic(
            record in crate::store::codec::proptests::damaged(
                (vec(any::<u64>(), 1..4), vec(any::<u8>(), 0..20)).prop_map(|(c, body)| {
                    let encoded = entry_with(c.len(), body).encode_to_vec();
                    let cut = recipients_run(&encoded).unwrap_or_default();
                    entry_record_with_set(&[1; 32], &c, 0, &encoded, cut)
                })),
        ) {
            let sets = RecipientSets::default();
            let names: Arc<[u8]> = Arc::from(&[0x22, 1, b'a'][..]);
            fatal::write(&sets.table, "t")?.add(names);
            if let Ok(whole) = sets.expand("tax", 3, &record) {
                let _ = decode_entry("tax", 3, &whole);
            }
        }
    }

    /// A commit that fails forgets its new sets; the sets before stay.
    #[test]
    fn a_failed_commit_forgets_its_sets() -> Result<(), StoreError> {
        let sets = RecipientSets::default();
        let mut ops = Vec::new();
        let (one, two) = (
            entry_with(1, vec![]).encode_to_vec(),
            entry_with(2, vec![]).encode_to_vec(),
        );
        let mut first = sets.assign()?;
        first.record(&[1; 32], &[0], &one, &mut ops)?;
        first.committed();
        let mut failing = sets.assign()?;
        failing.record(&[1; 32], &[0, 0], &two, &mut ops)?;
        assert_eq!(sets.len()?, 2);
        drop(failing);
        assert_eq!(sets.len()?, 1);
        let mut ops = Vec::new();
        let mut again = sets.assign()?;
        again.record(&[1; 32], &[0, 0], &two, &mut ops)?;
        again.committed();
        assert_eq!(ops.len(), 2, "the set is written again by its next use");
        assert_eq!(ops[1].1, 2u64.to_be_bytes(), "and counted");
        assert_eq!(sets.len()?, 2);
        Ok(())
    }

    /// Whether the record of an entry to `recipients` units (unit-0, …)
    /// names a set in `sets`, and how many writes it adds.
    fn by_set(sets: &RecipientSets, recipients: usize) -> Result<(bool, usize), StoreError> {
        let encoded = entry_with(recipients, vec![]).encode_to_vec();
        let cursors = vec![1; recipients];
        let mut ops = Vec::new();
        let mut assigning = sets.assign()?;
        let record = assigning.record(&[1; 32], &cursors, &encoded, &mut ops)?;
        assigning.committed();
        let inline = record == entry_record_compact(&[1; 32], &cursors, &encoded);
        Ok((!inline, ops.len()))
    }

    /// Up to the bound on sets a new set is kept; past it, names stay
    /// inline and no set is written.
    #[test]
    fn past_the_bound_on_sets_names_stay_inline() -> Result<(), StoreError> {
        let sets = RecipientSets::default();
        {
            let mut table = fatal::write(&sets.table, "t")?;
            for i in 0..MAX_SETS - 1 {
                table.add(Arc::from(i.to_be_bytes().as_slice()));
            }
        }
        assert_eq!(
            by_set(&sets, 1)?,
            (true, 2),
            "the last set the bound allows"
        );
        assert!(!sets.told_full.load(Ordering::Relaxed));
        assert_eq!(by_set(&sets, 2)?, (false, 0));
        assert!(
            sets.told_full.load(Ordering::Relaxed),
            "the operators are told"
        );
        assert_eq!(by_set(&sets, 1)?, (true, 0), "a known set is still named");
        Ok(())
    }

    /// Past the bound on the sets' bytes, names stay inline.
    #[test]
    fn past_the_bound_on_bytes_names_stay_inline() -> Result<(), StoreError> {
        let sets = RecipientSets::default();
        // One name is 8 bytes (tag, length, "unit-0"), two are 16.
        fatal::write(&sets.table, "t")?.add(Arc::from(vec![0; MAX_SET_BYTES - 8]));
        assert_eq!(by_set(&sets, 2)?, (false, 0));
        assert_eq!(by_set(&sets, 1)?, (true, 2), "exactly at the bound");
        Ok(())
    }

    /// Ids that are not dense from 0, fewer sets than were counted, or
    /// more than the bound are refused at load.
    #[test]
    fn a_missing_set_is_refused_at_load() -> Result<(), Box<dyn std::error::Error>> {
        let set = |id: u64| (key(RECIPIENT_SET, "", Some(id)), vec![0x22, 1, b'a']);
        let count = |n: u64| (RECIPIENT_SETS_KEY.to_vec(), n.to_be_bytes().to_vec());
        for ops in [
            vec![set(1), count(2)],
            vec![set(0), count(2)],
            vec![set(0), set(1)],
        ] {
            assert!(matches!(
                loaded(&stored(&ops)?),
                Err(StoreError::Corrupt(_))
            ));
        }
        assert!(loaded(&stored(&[set(0), set(1), count(2)])?).is_ok());
        let too_many: Vec<Write> = (0..=MAX_SETS as u64).map(set).collect();
        match loaded(&stored(&too_many)?) {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("beyond the bounds"), "{m}"),
            other => return Err(format!("expected corruption, got {:?}", other.is_ok()).into()),
        }
        // Exactly at either bound loads; a byte past it does not.
        let mut full: Vec<Write> = (0..MAX_SETS as u64).map(set).collect();
        full.push(count(MAX_SETS as u64));
        assert!(loaded(&stored(&full)?).is_ok());
        for (bytes, loads) in [(MAX_SET_BYTES, true), (MAX_SET_BYTES + 1, false)] {
            let one = (key(RECIPIENT_SET, "", Some(0)), vec![0; bytes]);
            assert_eq!(loaded(&stored(&[one, count(1)])?).is_ok(), loads, "{bytes}");
        }
        Ok(())
    }
}
