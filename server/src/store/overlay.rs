//! Writes the store has applied but sled does not hold yet.
//!
//! Every sled batch writes out sled's log buffer on a pool thread (and wakes
//! every thread of the pool), which made a group commit cost more than its
//! messages. So commits land here, in memory, once the commit journal has
//! them; a background flush moves them into sled as one batch about once a
//! second. Lookups read the overlay before sled, newest first, and see the
//! same data either side of a flush.

use super::StoreError;
use sled::IVec;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

/// One key and value as sled returns them.
pub type Kv = (IVec, IVec);

/// Applied writes not yet in sled.
#[derive(Debug, Default)]
pub struct Overlay {
    /// Writes since the last flush began.
    active: BTreeMap<Vec<u8>, IVec>,
    active_bytes: usize,
    /// The writes a flush is moving into sled (read-only meanwhile), and
    /// the last commit among them.
    frozen: Arc<BTreeMap<Vec<u8>, IVec>>,
    frozen_commit: u64,
}

/// What a flush must write to sled: the frozen writes and the last commit
/// among them.
pub struct Frozen {
    pub writes: Arc<BTreeMap<Vec<u8>, IVec>>,
    pub commit: u64,
}

impl Overlay {
    pub fn put(&mut self, key: Vec<u8>, value: IVec) {
        self.active_bytes += key.len() + value.len();
        self.active.insert(key, value);
    }

    /// Bytes written since the last flush began.
    pub fn active_bytes(&self) -> usize {
        self.active_bytes
    }

    /// The newest value of `key`, if the overlay holds it; the frozen
    /// writes to look in next otherwise.
    pub fn get(&self, key: &[u8]) -> Result<IVec, Arc<BTreeMap<Vec<u8>, IVec>>> {
        match self.active.get(key) {
            Some(v) => Ok(v.clone()),
            None => Err(self.frozen.clone()),
        }
    }

    /// The overlay's writes in `[lo, hi)`/`[lo, hi]`, ascending, newest
    /// value per key.
    pub fn range(&self, lo: &[u8], hi: Bound<&[u8]>) -> Vec<Kv> {
        self.range_first(lo, hi, usize::MAX)
    }

    /// The first `limit` keys of [`Overlay::range`]: what a read a chunk
    /// at a time needs, whatever the overlay holds.
    pub fn range_first(&self, lo: &[u8], hi: Bound<&[u8]>, limit: usize) -> Vec<Kv> {
        let bounds = (Bound::Included(lo), hi);
        let copy =
            |(k, v): (&Vec<u8>, &IVec)| Ok::<Kv, StoreError>((IVec::from(k.as_slice()), v.clone()));
        let active = self.active.range::<[u8], _>(bounds).map(copy);
        let frozen = self.frozen.range::<[u8], _>(bounds).map(copy);
        Newest::new(active, frozen)
            .filter_map(Result::ok)
            .take(limit)
            .collect()
    }

    /// The last key in `[lo, hi]` the overlay holds.
    pub fn last_in(&self, lo: &[u8], hi: &[u8]) -> Option<Vec<u8>> {
        let bounds = (Bound::Included(lo), Bound::Included(hi));
        let a = self
            .active
            .range::<[u8], _>(bounds)
            .next_back()
            .map(|(k, _)| k);
        let f = self
            .frozen
            .range::<[u8], _>(bounds)
            .next_back()
            .map(|(k, _)| k);
        a.max(f).cloned()
    }

    /// Freezes the writes so far for a flush that ended at commit
    /// `commit`; a frozen set a failed flush left is kept (and retried)
    /// instead. None when there is nothing to flush.
    pub fn freeze(&mut self, commit: u64) -> Option<Frozen> {
        if self.frozen.is_empty() {
            if self.active.is_empty() {
                return None;
            }
            self.frozen = Arc::new(std::mem::take(&mut self.active));
            self.frozen_commit = commit;
            self.active_bytes = 0;
        }
        Some(Frozen {
            writes: self.frozen.clone(),
            commit: self.frozen_commit,
        })
    }

    /// The frozen writes are in sled now.
    pub fn thaw(&mut self) {
        self.frozen = Arc::default();
    }
}

/// Two ascending key-value sequences as one; on equal keys the first
/// (newer) sequence's value wins. Errors pass through where they occur.
pub struct Newest<
    A: Iterator<Item = Result<Kv, StoreError>>,
    B: Iterator<Item = Result<Kv, StoreError>>,
> {
    newer: Peekable<A>,
    older: Peekable<B>,
}

impl<A, B> Newest<A, B>
where
    A: Iterator<Item = Result<Kv, StoreError>>,
    B: Iterator<Item = Result<Kv, StoreError>>,
{
    pub fn new(newer: A, older: B) -> Self {
        Self {
            newer: newer.peekable(),
            older: older.peekable(),
        }
    }
}

impl<A, B> Iterator for Newest<A, B>
where
    A: Iterator<Item = Result<Kv, StoreError>>,
    B: Iterator<Item = Result<Kv, StoreError>>,
{
    type Item = Result<Kv, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let order = match (self.newer.peek(), self.older.peek()) {
            (None, None) => return None,
            (Some(_), None) | (Some(Err(_)), _) => Less,
            (None, Some(_)) | (_, Some(Err(_))) => Greater,
            (Some(Ok((a, _))), Some(Ok((b, _)))) => a.cmp(b),
        };
        match order {
            Less => self.newer.next(),
            Greater => self.older.next(),
            Equal => {
                self.older.next();
                self.newer.next()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kvs(items: &[(&str, &str)]) -> Vec<Result<Kv, StoreError>> {
        items
            .iter()
            .map(|(k, v)| Ok((IVec::from(k.as_bytes()), IVec::from(v.as_bytes()))))
            .collect()
    }

    fn text(v: Vec<Result<Kv, StoreError>>) -> Vec<(String, String)> {
        v.into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn newer_values_win_and_keys_stay_in_order() {
        let newer = kvs(&[("b", "new"), ("d", "new"), ("e", "new")]);
        let older = kvs(&[("a", "old"), ("b", "old"), ("c", "old"), ("e", "old")]);
        let merged: Vec<_> = Newest::new(newer.into_iter(), older.into_iter()).collect();
        assert_eq!(
            text(merged),
            [
                ("a", "old"),
                ("b", "new"),
                ("c", "old"),
                ("d", "new"),
                ("e", "new")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn active_writes_shadow_frozen_ones_until_thawed() {
        let mut o = Overlay::default();
        o.put(b"k1".to_vec(), IVec::from(&b"one"[..]));
        o.put(b"k2".to_vec(), IVec::from(&b"two"[..]));
        let frozen = o.freeze(7).map(|f| (f.writes.len(), f.commit));
        assert_eq!(frozen, Some((2, 7)));
        assert_eq!(o.active_bytes(), 0);
        o.put(b"k2".to_vec(), IVec::from(&b"TWO"[..]));
        // Still frozen (not thawed): a second freeze retries the same set.
        assert_eq!(
            o.freeze(9).map(|f| (f.writes.len(), f.commit)),
            Some((2, 7))
        );
        let all: Vec<(String, String)> = o
            .range(b"k", Bound::Unbounded)
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            all,
            [("k1", "one"), ("k2", "TWO")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(o.last_in(b"k", b"k9"), Some(b"k2".to_vec()));
        match o.get(b"k1") {
            Err(frozen) => assert_eq!(
                frozen.get(&b"k1"[..]).map(|v| v.to_vec()),
                Some(b"one".to_vec())
            ),
            Ok(v) => panic!("k1 is frozen, not active: {v:?}"),
        }
        o.thaw();
        assert!(matches!(o.get(b"k1"), Err(f) if f.is_empty()));
        assert_eq!(
            o.freeze(9).map(|f| (f.writes.len(), f.commit)),
            Some((1, 9))
        );
        o.thaw();
        assert!(o.freeze(10).is_none(), "nothing left to flush");
    }
}
