//! The right edge of a tree: what appending a leaf and computing the root
//! need, so that a writer (the hub's access log) and a check (the access
//! log's, a store recomputing hashes a crash cut off) hold no more of the
//! tree than that. One copy, used by both, so the rule is written once.

use super::{HashReader, MerkleError, stored_hash_index, stored_hashes_for_record, tree_hash};
use crate::Hash;
use std::collections::BTreeMap;

/// The right edge of the tree: the root of each complete subtree of the
/// tree so far, by stored-hash index.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    hashes: BTreeMap<u64, Hash>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf; returns the hashes to store for it (the leaf hash,
    /// then the subtrees it completes), as [`stored_hashes_for_record`].
    pub fn append(&mut self, leaf: Hash) -> Result<Vec<Hash>, MerkleError> {
        let n = self.size;
        let out = stored_hashes_for_record(n, leaf, self)?;
        let completed = n.trailing_ones();
        for level in 0..completed {
            self.hashes
                .remove(&stored_hash_index(level, (n >> level) - 1));
        }
        if let Some(top) = out.last() {
            self.hashes
                .insert(stored_hash_index(completed, n >> completed), *top);
        }
        self.size += 1;
        Ok(out)
    }

    pub fn root(&self) -> Result<Hash, MerkleError> {
        tree_hash(self.size, self)
    }

    /// The right edge of the tree of `size` leaves whose stored hashes
    /// `reader` holds: the root of each complete subtree, largest first.
    pub fn from_tree<R: HashReader + ?Sized>(size: u64, reader: &R) -> Result<Self, MerkleError> {
        let levels: Vec<u32> = (0..u64::BITS)
            .rev()
            .filter(|l| size >> l & 1 == 1)
            .collect();
        let indexes: Vec<u64> = levels
            .iter()
            .map(|&l| stored_hash_index(l, (size >> l) - 1))
            .collect();
        let hashes = reader.read_hashes(&indexes)?;
        Ok(Self {
            size,
            hashes: indexes.into_iter().zip(hashes).collect(),
        })
    }
}

impl HashReader for Frontier {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MerkleError> {
        indexes
            .iter()
            .map(|i| {
                self.hashes.get(i).copied().ok_or_else(|| {
                    MerkleError::Reader(format!("hash {i} is not on the tree's right edge"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::stored_hash_count;
    use super::*;
    use crate::canonical::leaf_hash_of_bytes;

    #[test]
    fn the_frontier_stores_what_the_merkle_rules_store() -> Result<(), MerkleError> {
        let mut all: Vec<Hash> = Vec::new();
        let mut frontier = Frontier::default();
        for n in 0..300u64 {
            let leaf = leaf_hash_of_bytes(&n.to_be_bytes());
            let want = stored_hashes_for_record(n, leaf, &all)?;
            assert_eq!(frontier.append(leaf)?, want, "record {n}");
            all.extend(want);
            assert_eq!(all.len() as u64, stored_hash_count(n + 1));
            assert_eq!(frontier.root()?, tree_hash(n + 1, &all)?, "size {}", n + 1);
            // Rebuilt from the stored hashes, the edge is the same.
            let rebuilt = Frontier::from_tree(n + 1, &all)?;
            assert_eq!(rebuilt.root()?, frontier.root()?);
        }
        Ok(())
    }
}
