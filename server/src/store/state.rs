//! State records: small records a module of the hub keeps beside the
//! channels (the workflows' state, the case index, pending steps), in a
//! named space of the store.
//!
//! They go through [`Store`] like everything persistent, so that a hub on
//! a database server keeps them there too. [`StateTree`] gives a space the
//! shape of a sled tree (get, insert, remove, scan by prefix, an atomic
//! batch, flush), the shape the workflow code was written against.

use super::{Store, StoreError};
use std::sync::Arc;

/// State records as read back: (key, value), in key order.
pub type StateRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// Longest space name, in bytes.
pub const MAX_SPACE_BYTES: usize = 64;

/// Puts and removes applied to a space as one atomic change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateBatch {
    /// Each key with its new value, or None to remove it, in order: a
    /// later write of a key wins.
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl StateBatch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().to_vec(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A state record's value as [`StateTree`] reads it: bytes, used as a
/// sled `IVec` is (`as_ref`, deref to a slice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateValue(pub Vec<u8>);

impl AsRef<[u8]> for StateValue {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for StateValue {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Refuses a space name no store should have to hold.
pub fn check_space(space: &str) -> Result<(), StoreError> {
    if space.is_empty()
        || space.len() > MAX_SPACE_BYTES
        || !space
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(StoreError::Database(format!(
            "a state space is named by 1 to {MAX_SPACE_BYTES} ASCII letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// One space of state records, used like a sled tree.
#[derive(Clone)]
pub struct StateTree {
    store: Arc<dyn Store>,
    space: &'static str,
}

impl std::fmt::Debug for StateTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateTree")
            .field("space", &self.space)
            .finish_non_exhaustive()
    }
}

impl StateTree {
    pub fn open(store: Arc<dyn Store>, space: &'static str) -> Result<Self, StoreError> {
        check_space(space)?;
        Ok(Self { store, space })
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<StateValue>, StoreError> {
        Ok(self
            .store
            .state_get(self.space, key.as_ref())?
            .map(StateValue))
    }

    /// Writes one record (durable at the next [`StateTree::flush`]).
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StoreError> {
        let mut batch = StateBatch::default();
        batch.insert(key, value);
        self.apply_batch(batch)
    }

    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), StoreError> {
        let mut batch = StateBatch::default();
        batch.remove(key);
        self.apply_batch(batch)
    }

    /// Every record whose key starts with `prefix`, in key order.
    pub fn scan_prefix<P: AsRef<[u8]>>(
        &self,
        prefix: P,
    ) -> impl Iterator<Item = Result<(StateValue, StateValue), StoreError>> + use<P> {
        let read = self.store.state_scan_prefix(self.space, prefix.as_ref());
        let (rows, error) = match read {
            Ok(rows) => (rows, None),
            Err(e) => (Vec::new(), Some(Err(e))),
        };
        error.into_iter().chain(
            rows.into_iter()
                .map(|(k, v)| Ok((StateValue(k), StateValue(v)))),
        )
    }

    /// Applies `batch` atomically (durable at the next flush).
    pub fn apply_batch(&self, batch: StateBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.store.state_apply(self.space, &batch)
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.store.state_sync()
    }

    /// Removes every record of the space, durably: a derived index is
    /// rebuilt so (and tests force a rebuild so).
    pub fn clear(&self) -> Result<(), StoreError> {
        let mut batch = StateBatch::default();
        for item in self.scan_prefix([]) {
            batch.remove(item?.0.0);
        }
        self.apply_batch(batch)?;
        self.flush()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// The state-record contract, for any store: `reopen` drops the store
    /// it is given and opens it again.
    pub(crate) fn state_records_hold(
        store: Arc<dyn Store>,
        reopen: impl FnOnce(Arc<dyn Store>) -> Result<Arc<dyn Store>, StoreError>,
    ) -> TestResult {
        let a = StateTree::open(store.clone(), "space-a")?;
        let b = StateTree::open(store.clone(), "space-b")?;
        a.insert(b"m/1", b"one")?;
        a.insert(b"m/2", b"two")?;
        a.insert(b"n/1", b"notice")?;
        b.insert(b"m/1", b"other space")?;
        assert_eq!(a.get(b"m/1")?.as_deref(), Some(&b"one"[..]));
        // A prefix scan stays inside its space and prefix, in key order.
        let keys: Vec<Vec<u8>> = a
            .scan_prefix(b"m/")
            .map(|kv| kv.map(|(k, _)| k.0))
            .collect::<Result<_, _>>()?;
        assert_eq!(keys, vec![b"m/1".to_vec(), b"m/2".to_vec()]);
        assert_eq!(b.scan_prefix([]).count(), 1);
        // A batch applies whole, a later write of a key winning.
        let mut batch = StateBatch::default();
        batch.insert(b"m/3", b"three");
        batch.remove(b"m/1");
        batch.insert(b"m/2", b"first");
        batch.insert(b"m/2", b"second");
        a.apply_batch(batch)?;
        assert_eq!(a.get(b"m/1")?, None);
        assert_eq!(a.get(b"m/2")?.as_deref(), Some(&b"second"[..]));
        // Keys and values are bytes, 0 and 0xff included.
        a.insert([0u8, 0xff, 0], [0xffu8, 0])?;
        assert_eq!(a.get([0u8, 0xff, 0])?.as_deref(), Some(&[0xffu8, 0][..]));
        a.flush()?;
        // Durable: read back after reopening.
        drop((a, b));
        let store = reopen(store)?;
        let a = StateTree::open(store.clone(), "space-a")?;
        let all: Vec<(StateValue, StateValue)> = a.scan_prefix([]).collect::<Result<_, _>>()?;
        assert_eq!(all.len(), 4, "{all:?}");
        // A scan after a key: bounded, in key order, inside its space.
        let after = |key: &[u8], limit| -> Result<Vec<Vec<u8>>, StoreError> {
            let rows = store.state_scan_after("space-a", key, limit)?;
            Ok(rows.into_iter().map(|(k, _)| k).collect())
        };
        assert_eq!(after(b"m/2", 10)?, vec![b"m/3".to_vec(), b"n/1".to_vec()]);
        assert_eq!(after(b"", 1)?, vec![vec![0u8, 0xff, 0]]);
        assert_eq!(after(b"n/1", 10)?, Vec::<Vec<u8>>::new(), "space-b");
        assert_eq!(a.get(b"m/3")?.as_deref(), Some(&b"three"[..]));
        a.clear()?;
        assert_eq!(a.scan_prefix([]).count(), 0);
        let b = StateTree::open(store.clone(), "space-b")?;
        assert_eq!(b.get(b"m/1")?.as_deref(), Some(&b"other space"[..]));
        // Names no store should hold are refused, and nothing is written.
        for bad in ["", "a\0b", "a/b", &"x".repeat(MAX_SPACE_BYTES + 1)] {
            assert!(store.state_get(bad, b"k").is_err(), "{bad:?}");
            let mut batch = StateBatch::default();
            batch.insert(b"k", b"v");
            assert!(store.state_apply(bad, &batch).is_err(), "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn state_records_hold_on_sled() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_path_buf();
        let store: Arc<dyn Store> = Arc::new(crate::store::SledStore::open(&path, true)?);
        state_records_hold(store, |s| {
            drop(s);
            Ok(Arc::new(crate::store::SledStore::open(&path, true)?))
        })
    }
}
