//! The sled store's state records (see [`crate::store::state`]): one sled
//! tree, keys prefixed by their space's name and a 0 byte (a space name
//! holds no 0 byte), each batch one sled batch.

use super::SledStore;
use crate::store::state::check_space;
use crate::store::{StateBatch, StoreError};

fn space_key(space: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(space.len() + 1 + key.len());
    k.extend_from_slice(space.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}

impl SledStore {
    pub(super) fn get_state(&self, space: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        check_space(space)?;
        let tree = &self.durability.state;
        Ok(tree.get(space_key(space, key))?.map(|v| v.to_vec()))
    }

    pub(super) fn scan_state(
        &self,
        space: &str,
        prefix: &[u8],
    ) -> Result<crate::store::state::StateRecords, StoreError> {
        check_space(space)?;
        let skip = space.len() + 1;
        self.durability
            .state
            .scan_prefix(space_key(space, prefix))
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k[skip..].to_vec(), v.to_vec()))
            })
            .collect()
    }

    pub(super) fn scan_state_after(
        &self,
        space: &str,
        after: &[u8],
        limit: usize,
    ) -> Result<crate::store::state::StateRecords, StoreError> {
        use std::ops::Bound::Excluded;
        check_space(space)?;
        let skip = space.len() + 1;
        // The space's keys all sort before its name followed by a 1 byte.
        let mut end = space.as_bytes().to_vec();
        end.push(1);
        self.durability
            .state
            .range::<Vec<u8>, _>((Excluded(space_key(space, after)), Excluded(end)))
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k[skip..].to_vec(), v.to_vec()))
            })
            .collect()
    }

    pub(super) fn apply_state(&self, space: &str, batch: &StateBatch) -> Result<(), StoreError> {
        check_space(space)?;
        let mut b = sled::Batch::default();
        for (k, v) in &batch.ops {
            match v {
                Some(v) => b.insert(space_key(space, k), v.as_slice()),
                None => b.remove(space_key(space, k)),
            }
        }
        self.durability.state.apply_batch(b)?;
        Ok(())
    }

    pub(super) fn sync_state(&self) -> Result<(), StoreError> {
        self.durability.make_durable()
    }
}
