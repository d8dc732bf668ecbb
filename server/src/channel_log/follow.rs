//! A standby's view of the channels: the latest checkpoints the leader
//! stored, each checked as a start checks them (signed by the hub's key,
//! naming the channel, its root the stored tree's), and nothing past
//! them. A standby signs nothing, so every proof it serves is against a
//! checkpoint the leader signed, and it never shows an entry the leader
//! has not signed.

use super::{LogError, Logs, SignedCheckpoint, check_checkpoint};
use crate::fatal;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tongbao_proto::checkpoint::open_checkpoint;
use tongbao_proto::keys::SigningKey;

impl Logs {
    /// A standby's logs: the stored checkpoints, checked; it never signs.
    pub fn open_following(
        store: Arc<dyn Store>,
        key: SigningKey,
        name: &str,
    ) -> Result<Self, LogError> {
        let logs = Self {
            store,
            key,
            name: name.to_string(),
            latest: Mutex::new(HashMap::new()),
            durable: Mutex::new(HashMap::new()),
            signs: false,
        };
        logs.follow()?;
        Ok(logs)
    }

    /// Takes every stored checkpoint that moved since the last call (a
    /// larger size, or a new cosignature), each checked first; returns how
    /// many moved. A checkpoint that fails its check is left out (the
    /// previous one stays served) and reported once the others are taken.
    pub fn follow(&self) -> Result<usize, LogError> {
        let stored = self.store.checkpoints()?;
        let known: HashMap<String, (String, u64)> = self
            .latest()?
            .iter()
            .map(|(c, s)| (c.clone(), (s.note.clone(), s.checkpoint.size)))
            .collect();
        let verifier = self.verifier()?;
        let mut taken = Vec::new();
        let mut failed = None;
        for (channel, note) in stored {
            let size = match known.get(&channel) {
                Some((n, _)) if *n == note => continue,
                Some((_, size)) => *size,
                None => 0,
            };
            match self.check_followed(&verifier, &channel, &note, size) {
                Ok(checkpoint) => taken.push((channel, SignedCheckpoint { note, checkpoint })),
                // Logged once by the caller, which stops serving.
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        let moved = taken.len();
        let sizes: Vec<(String, u64)> = taken
            .iter()
            .map(|(channel, signed)| (channel.clone(), signed.checkpoint.size))
            .collect();
        // The checkpoint first, then the entries it covers: an entry is
        // never served before a checkpoint covering it is.
        self.latest()?.extend(taken);
        fatal::lock(&self.durable, super::DURABLE)?.extend(sizes);
        match failed {
            Some(e) => Err(e),
            None => Ok(moved),
        }
    }

    /// A stored checkpoint of `channel` checked, and no smaller than the
    /// one of size `served` served so far.
    fn check_followed(
        &self,
        verifier: &tongbao_proto::checkpoint::NoteVerifier,
        channel: &str,
        note: &str,
        served: u64,
    ) -> Result<tongbao_proto::checkpoint::Checkpoint, LogError> {
        let (opened, _) = open_checkpoint(note, verifier, &[])?;
        if opened.size < served {
            return Err(LogError::Truncated {
                channel: channel.to_string(),
                checkpoint_size: served,
                stored_size: opened.size,
            });
        }
        // Its entries were committed before it was stored.
        check_checkpoint(self.store.as_ref(), verifier, channel, note, opened.size)
    }
}
