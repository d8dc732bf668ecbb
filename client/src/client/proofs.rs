//! Checkpoints and proofs: the pinned hub key, checkpoints checked for
//! rollback and fork against the trust state, inclusion proofs, cosigning.

use super::Client;
use super::behind::{Behind, Served};
use super::connection::Conn;
use super::hub_read;
use super::retry::{ATTEMPT_TIMEOUT, FIRST_BACKOFF, NextStep, backoff_after};
use crate::ClientError;
use crate::trust::{TrustState, keep_evidence};
use crate::verify::VerifiedEntry;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tongbao_proto::checkpoint::{NoteVerifier, open_checkpoint};
use tongbao_proto::merkle::{check_record, check_records, check_tree};
use tongbao_proto::{now_micros, pb};

/// A checkpoint this client verified: signed by the pinned hub key and
/// consistent with every checkpoint of the channel it verified before.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedCheckpoint {
    pub channel: String,
    /// The checkpoint's origin line, `<hub log name>/<channel>`.
    pub origin: String,
    pub size: u64,
    pub root: tongbao_proto::Hash,
    /// The signed note, as the hub served it.
    pub note: String,
}

impl Client {
    /// Proves entries are in their channels as of verified checkpoints:
    /// one checkpoint and one batch of proofs per channel.
    pub async fn prove_included(&self, entries: &[&VerifiedEntry]) -> Result<(), ClientError> {
        let pins: Vec<pb::EntryPin> = entries.iter().map(|e| e.pin()).collect();
        self.prove_pins(&pins).await
    }

    /// [`Client::prove_included`] by position and leaf hash: one
    /// multiproof per channel (per `MAX_LEAVES_PER_CALL` entries).
    pub(super) async fn prove_pins(&self, pins: &[pb::EntryPin]) -> Result<(), ClientError> {
        let mut by_channel: std::collections::BTreeMap<&str, Vec<(u64, tongbao_proto::Hash)>> =
            Default::default();
        for e in pins {
            let leaf = e
                .leaf_hash
                .as_slice()
                .try_into()
                .map_err(|_| ClientError::Integrity {
                    channel: e.channel.clone(),
                    seq: e.seq,
                    reason: format!("leaf hash of {} bytes, not 32", e.leaf_hash.len()),
                })?;
            by_channel
                .entry(e.channel.as_str())
                .or_default()
                .push((e.seq, leaf));
        }
        for (channel, mut leaves) in by_channel {
            // A multiproof takes each position once, in order.
            leaves.sort_unstable();
            leaves.dedup();
            if let Some(w) = leaves
                .windows(2)
                .find(|w| matches!(w, [a, b] if a.0 == b.0))
            {
                return Err(ClientError::Integrity {
                    channel: channel.to_string(),
                    seq: w.first().map_or(0, |e| e.0),
                    reason: "two different leaf hashes for one position".into(),
                });
            }
            // The proofs come from the replica that served the checkpoint,
            // one that covers every leaf.
            let last = leaves.last().map_or(0, |l| l.0);
            let leaves = &leaves;
            let proven = &AtomicUsize::new(0);
            self.with_checkpoint(channel, last, |cp, conn| {
                prove_leaves(cp, conn, channel, leaves, proven)
            })
            .await?;
        }
        Ok(())
    }

    /// The hub's checkpoint key: from the config, else pinned in the trust
    /// state on first use.
    async fn hub_verifier(&self, trust: &mut TrustState) -> Result<NoteVerifier, ClientError> {
        let vkey = match (&self.hub_key, &trust.hub_key) {
            (Some(k), _) | (None, Some(k)) => k.clone(),
            (None, None) => {
                let k = hub_read!(self, log.get_log_key(pb::GetLogKeyRequest {}))
                    .await?
                    .vkey;
                trust.hub_key = Some(k.clone());
                trust.save_off_runtime(&self.trust_path).await?;
                k
            }
        };
        NoteVerifier::from_vkey(&vkey).map_err(|e| ClientError::Checkpoint {
            channel: String::new(),
            reason: format!("hub key {vkey:?}: {e}"),
        })
    }

    /// The latest checkpoint of a channel, verified: signed by the hub key
    /// and proven to extend the last checkpoint this client verified (kept
    /// in the trust state). A fork is refused and the two signed
    /// checkpoints are kept as evidence. A smaller checkpoint is never
    /// accepted: the other replicas of the config are asked (see
    /// `behind.rs`), and if none serves one that extends the trusted one,
    /// it is refused as a rollback, with evidence.
    pub async fn checkpoint(&self, channel: &str) -> Result<VerifiedCheckpoint, ClientError> {
        Ok(self.checkpoint_with_conn(channel).await?.0)
    }

    /// Checks `note`, served by the hub of `conn` (which is asked for the
    /// consistency proof it needs, without the trust state held), against
    /// the trust state, and remembers it if it extends the trusted
    /// checkpoint.
    pub(super) async fn accept_checkpoint(
        &self,
        conn: &Conn,
        channel: &str,
        note: String,
    ) -> Result<Served, ClientError> {
        let refuse = |reason: String| ClientError::Checkpoint {
            channel: channel.to_string(),
            reason,
        };
        let mut trust = self.trust.lock().await;
        let verifier = self.hub_verifier(&mut trust).await?;
        let (cp, _) = open_checkpoint(&note, &verifier, &[]).map_err(|e| refuse(e.to_string()))?;
        let origin = format!("{}/{channel}", verifier.name());
        if cp.origin != origin {
            return Err(refuse(format!(
                "origin {:?}, expected {origin:?}",
                cp.origin
            )));
        }
        let verified = VerifiedCheckpoint {
            channel: channel.to_string(),
            origin: cp.origin.clone(),
            size: cp.size,
            root: cp.root,
            note: note.clone(),
        };
        loop {
            let Some(trusted) = trust.trusted(channel).cloned() else {
                trust.remember(channel, cp.size, &cp.root, &note);
                trust.save_off_runtime(&self.trust_path).await?;
                return Ok(Served::Accepted(verified));
            };
            use base64::Engine;
            let trusted_root: tongbao_proto::Hash = base64::engine::general_purpose::STANDARD
                .decode(&trusted.root)
                .ok()
                .and_then(|r| r.try_into().ok())
                .ok_or_else(|| refuse("the trust state holds a malformed root".into()))?;
            if cp.size < trusted.size {
                return Ok(Served::Behind(Behind {
                    channel: channel.to_string(),
                    hub: conn.url.clone(),
                    trusted,
                    served_size: cp.size,
                    served_note: note,
                }));
            }
            let consistent = if cp.size == trusted.size {
                cp.root == trusted_root
            } else {
                // Asked without holding the trust state: the replica may
                // be slow or silent, and other calls need the state.
                drop(trust);
                let proof = consistency_proof(conn, channel, trusted.size, cp.size).await?;
                trust = self.trust.lock().await;
                proof.is_some_and(|p| {
                    check_tree(&p, cp.size, &cp.root, trusted.size, &trusted_root).is_ok()
                })
            };
            if !consistent {
                return Err(ClientError::Fork {
                    channel: channel.to_string(),
                    trusted_size: trusted.size,
                    served_size: cp.size,
                    evidence: keep_evidence(&self.trust_path, channel, &trusted.note, &note)
                        .display()
                        .to_string(),
                });
            }
            let unchanged = trust
                .trusted(channel)
                .is_some_and(|now| now.size == trusted.size && now.root == trusted.root);
            if !unchanged {
                // Another call moved the trusted checkpoint meanwhile:
                // check against that one instead.
                continue;
            }
            if cp.size > trusted.size {
                trust.remember(channel, cp.size, &cp.root, &note);
                trust.save_off_runtime(&self.trust_path).await?;
            }
            return Ok(Served::Accepted(verified));
        }
    }

    /// Cosigns the latest checkpoint of this unit's own channel, after
    /// verifying it extends every checkpoint of the channel this client saw:
    /// from then on, even the hub's operator cannot rewrite the unit's
    /// history without the unit's key. Returns the note with the
    /// cosignatures it now carries.
    pub async fn cosign_own_channel(&self) -> Result<String, ClientError> {
        let (signer, unit) = self.signing_identity()?;
        let cp = self.checkpoint(unit).await?;
        let checkpoint =
            tongbao_proto::checkpoint::Checkpoint::new(cp.origin.clone(), cp.size, cp.root);
        let cosigner = tongbao_proto::checkpoint::Cosigner::new(unit, &signer).map_err(|e| {
            ClientError::Checkpoint {
                channel: unit.to_string(),
                reason: e.to_string(),
            }
        })?;
        let seconds = u64::try_from(now_micros() / 1_000_000).unwrap_or(0);
        let line = cosigner
            .cosign(&checkpoint, seconds)
            .map_err(|e| ClientError::Checkpoint {
                channel: unit.to_string(),
                reason: e.to_string(),
            })?;
        Ok(self
            .log()
            .add_cosignature(pb::AddCosignatureRequest {
                channel: unit.to_string(),
                size: cp.size,
                cosignature: line,
            })
            .await?
            .into_inner()
            .note)
    }

    /// The hub key this client checks checkpoints with (pinning it if new).
    pub async fn pinned_hub_key(&self) -> Result<String, ClientError> {
        let mut trust = self.trust.lock().await;
        Ok(self.hub_verifier(&mut trust).await?.to_vkey())
    }

    /// The hub-signed registry of signing keys, checked against the hub key.
    pub async fn key_registry(&self) -> Result<String, ClientError> {
        let note = hub_read!(self, log.get_key_registry(pb::GetKeyRegistryRequest {}))
            .await?
            .note;
        let mut trust = self.trust.lock().await;
        let hub = self.hub_verifier(&mut trust).await?;
        tongbao_proto::checkpoint::open_note(&note, &[hub]).map_err(|e| {
            ClientError::Checkpoint {
                channel: String::new(),
                reason: format!("key registry: {e}"),
            }
        })?;
        Ok(note)
    }

    /// An inclusion proof for a given tree size.
    pub(crate) async fn inclusion_proof(
        &self,
        channel: &str,
        seq: u64,
        tree_size: u64,
    ) -> Result<Vec<tongbao_proto::Hash>, ClientError> {
        let request = pb::GetInclusionProofRequest {
            channel: channel.to_string(),
            seq,
            tree_size,
        };
        let r = hub_read!(self, log.get_inclusion_proof(request)).await?;
        proof_hashes(r.proof, channel, seq)
    }

    /// Proves that an entry is in its channel as of a verified checkpoint:
    /// nobody, the hub's operator included, can later drop or alter it
    /// without this client (or anyone holding the checkpoint) noticing.
    pub async fn prove_inclusion(
        &self,
        entry: &VerifiedEntry,
    ) -> Result<VerifiedCheckpoint, ClientError> {
        // Checkpoint and proof from one replica, made again together.
        // Covering 0: an entry the checkpoint does not cover yet is refused
        // at once, as documented ("retry in a second").
        self.with_checkpoint(entry.channel(), 0, |cp, conn| prove_entry(cp, conn, entry))
            .await
    }

    /// Runs `prove` with a verified checkpoint of `channel` covering entry
    /// `covering` (waited for, see [`Client::checkpoint_covering`]) and
    /// the connection of the replica that served it (proofs must come from
    /// there), as reads are made: each call of `prove` waits
    /// [`ATTEMPT_TIMEOUT`] at most (see [`attempt`]), and an attempt interrupted (the replica gone or silent between
    /// the checkpoint and its proof, a takeover) is made again, checkpoint
    /// and all, on the replica in use then, for up to the retry window.
    /// With a single hub it fails as the call did.
    async fn with_checkpoint<T, F, Fut>(
        &self,
        channel: &str,
        covering: u64,
        mut prove: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(VerifiedCheckpoint, Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let deadline = std::time::Instant::now() + self.live.config.push_retry_for;
        let mut backoff = FIRST_BACKOFF;
        loop {
            // Within this call's window: a pass never starts one anew.
            let (cp, conn) = self
                .checkpoint_covering(channel, covering, deadline)
                .await?;
            let generation = self.live.generation();
            let e = match prove(cp, conn).await {
                Ok(proved) => return Ok(proved),
                Err(e) => e,
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self.live.hubs.len() < 2 || !e.is_transient() || left.is_zero() {
                return Err(e);
            }
            if let NextStep::GiveUp = self.worth_retrying(&e, generation, left).await? {
                return Err(e);
            }
            tracing::debug!(error = %e, channel, "inclusion proof interrupted; asking again");
            backoff = backoff_after(backoff, deadline).await;
        }
    }
}

/// Proves `entry` is in `cp`, with a proof from the replica of `conn`.
async fn prove_entry(
    cp: VerifiedCheckpoint,
    conn: Arc<Conn>,
    entry: &VerifiedEntry,
) -> Result<VerifiedCheckpoint, ClientError> {
    let fail = |reason: String| ClientError::Integrity {
        channel: entry.channel().to_string(),
        seq: entry.seq(),
        reason,
    };
    if entry.seq() >= cp.size {
        return Err(fail(format!(
            "not yet covered by the channel's checkpoint (size {}); retry in a second",
            cp.size
        )));
    }
    let request = pb::GetInclusionProofRequest {
        channel: entry.channel().to_string(),
        seq: entry.seq(),
        tree_size: cp.size,
    };
    let proof = attempt(
        &conn,
        "inclusion proof",
        conn.log.clone().get_inclusion_proof(request),
    )
    .await?
    .proof;
    let proof = proof_hashes(proof, entry.channel(), entry.seq())?;
    check_record(&proof, cp.size, &cp.root, entry.seq(), &entry.leaf_hash).map_err(|e| {
        fail(format!(
            "not included in the checkpoint of size {}: {e}",
            cp.size
        ))
    })?;
    Ok(cp)
}

/// Checks `leaves` (position, leaf hash; sorted, each position once) of
/// `channel` against `cp` with multiproofs from the replica of `conn`,
/// which served it, one call per [`MAX_LEAVES_PER_CALL`] leaves, each
/// timed on its own. `proven` counts the leaves proven so far, kept
/// across attempts: a later checkpoint is consistent with the earlier
/// ones, so what one included the next does too.
///
/// [`MAX_LEAVES_PER_CALL`]: tongbao_proto::merkle::MAX_LEAVES_PER_CALL
async fn prove_leaves(
    cp: VerifiedCheckpoint,
    conn: Arc<Conn>,
    channel: &str,
    leaves: &[(u64, tongbao_proto::Hash)],
    proven: &AtomicUsize,
) -> Result<(), ClientError> {
    prove_in_chunks(&conn.url, leaves, proven, |chunk| {
        let request = pb::GetInclusionProofsRequest {
            channel: channel.to_string(),
            seqs: chunk.iter().map(|e| e.0).collect(),
            tree_size: cp.size,
            multiproof: true,
        };
        let (cp, mut log) = (&cp, conn.log.clone());
        async move {
            let r = log.get_inclusion_proofs(request).await?.into_inner();
            check_chunk(cp, channel, chunk, r)
        }
    })
    .await
}

/// Runs `prove` on the chunks of `leaves` after the first `proven`,
/// counting each one proven; each waits [`ATTEMPT_TIMEOUT`] at most for
/// `hub`'s answer.
async fn prove_in_chunks<'a, F, Fut>(
    hub: &str,
    leaves: &'a [(u64, tongbao_proto::Hash)],
    proven: &AtomicUsize,
    mut prove: F,
) -> Result<(), ClientError>
where
    F: FnMut(&'a [(u64, tongbao_proto::Hash)]) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let rest = leaves
        .get(proven.load(Ordering::Relaxed)..)
        .unwrap_or_default();
    for chunk in rest.chunks(tongbao_proto::merkle::MAX_LEAVES_PER_CALL) {
        tokio::time::timeout(ATTEMPT_TIMEOUT, prove(chunk))
            .await
            .map_err(|_| ClientError::Connect {
                hub: hub.to_string(),
                reason: format!("no inclusion proofs within {ATTEMPT_TIMEOUT:?}"),
            })??;
        proven.fetch_add(chunk.len(), Ordering::Relaxed);
    }
    Ok(())
}

/// Checks the hub's answer `r` for one chunk of leaves against `cp`.
fn check_chunk(
    cp: &VerifiedCheckpoint,
    channel: &str,
    chunk: &[(u64, tongbao_proto::Hash)],
    r: pb::GetInclusionProofsResponse,
) -> Result<(), ClientError> {
    let (first, last) = match (chunk.first(), chunk.last()) {
        (Some(f), Some(l)) => (f.0, l.0),
        _ => return Ok(()),
    };
    let fail = |why: String| ClientError::Integrity {
        channel: channel.to_string(),
        seq: first,
        reason: format!(
            "not included in the verified checkpoint of size {} (one multiproof for {} entries, seqs {first}..={last}): {why}",
            cp.size,
            chunk.len(),
        ),
    };
    let to_hashes = |v: Vec<Vec<u8>>| {
        v.into_iter()
            .map(tongbao_proto::Hash::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| fail("a proof hash is not 32 bytes".into()))
    };
    // A hub without multiproofs ignores the flag and answers
    // one audit path per seq: check those instead.
    if r.multiproof.is_empty() && r.proofs.len() == chunk.len() {
        for (&(seq, leaf), p) in chunk.iter().zip(r.proofs) {
            if p.seq != seq {
                return Err(fail(format!("asked for seq {seq}, got {}", p.seq)));
            }
            check_record(&to_hashes(p.proof)?, cp.size, &cp.root, seq, &leaf)
                .map_err(|e| fail(format!("seq {seq}: {e}")))?;
        }
        return Ok(());
    }
    check_records(&to_hashes(r.multiproof)?, cp.size, &cp.root, chunk)
        .map_err(|e| fail(e.to_string()))
}

/// `call` to the replica of `conn`, waiting [`ATTEMPT_TIMEOUT`] at most
/// for its answer: a silent replica counts as an interrupted attempt.
async fn attempt<T>(
    conn: &Conn,
    what: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(ATTEMPT_TIMEOUT, call).await {
        Ok(answer) => Ok(answer?.into_inner()),
        Err(_) => Err(ClientError::Connect {
            hub: conn.url.clone(),
            reason: format!("no {what} within {ATTEMPT_TIMEOUT:?}"),
        }),
    }
}

/// The hashes of an inclusion proof, each 32 bytes.
fn proof_hashes(
    proof: Vec<Vec<u8>>,
    channel: &str,
    seq: u64,
) -> Result<Vec<tongbao_proto::Hash>, ClientError> {
    let hashes: Option<Vec<tongbao_proto::Hash>> =
        proof.into_iter().map(|h| h.try_into().ok()).collect();
    hashes.ok_or_else(|| ClientError::Integrity {
        channel: channel.to_string(),
        seq,
        reason: "malformed inclusion proof".into(),
    })
}

/// The proof that the tree of `old_size` entries of `channel` is a prefix
/// of the one of `new_size`, from the hub of `conn`, waiting at most the
/// per-attempt timeout. None when it is malformed.
async fn consistency_proof(
    conn: &Conn,
    channel: &str,
    old_size: u64,
    new_size: u64,
) -> Result<Option<Vec<tongbao_proto::Hash>>, ClientError> {
    let request = pb::GetConsistencyProofRequest {
        channel: channel.to_string(),
        old_size,
        new_size,
    };
    let proof = tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        conn.log.clone().get_consistency_proof(request),
    )
    .await
    .map_err(|_| ClientError::Connect {
        hub: conn.url.clone(),
        reason: format!("no consistency proof within {ATTEMPT_TIMEOUT:?}"),
    })??
    .into_inner()
    .proof;
    Ok(proof.into_iter().map(|h| h.try_into().ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<(u64, tongbao_proto::Hash)> {
        (0..n as u64).map(|i| (i, [0; 32])).collect()
    }

    /// The first seq of each chunk `prove_in_chunks` asked for, each
    /// answered after `answer_in` (never, for seq `silent`).
    async fn asked_for(
        all: &[(u64, tongbao_proto::Hash)],
        proven: &AtomicUsize,
        answer_in: std::time::Duration,
        silent: Option<u64>,
    ) -> (Result<(), ClientError>, Vec<u64>) {
        let asked = std::sync::Mutex::new(Vec::new());
        let r = prove_in_chunks("https://h", all, proven, |chunk| {
            let first = chunk.first().map_or(0, |e| e.0);
            if let Ok(mut a) = asked.lock() {
                a.push(first);
            }
            async move {
                if silent == Some(first) {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(answer_in).await;
                Ok(())
            }
        })
        .await;
        (r, asked.into_inner().unwrap_or_default())
    }

    #[tokio::test(start_paused = true)]
    async fn each_chunk_is_timed_alone_and_proven_chunks_are_kept() {
        let max = tongbao_proto::merkle::MAX_LEAVES_PER_CALL;
        let all = leaves(3 * max + 1);
        let proven = AtomicUsize::new(0);
        // Each chunk answered in most of an attempt's time: together far
        // longer than one attempt, and proven all the same.
        let slow = ATTEMPT_TIMEOUT * 3 / 4;
        let (r, asked) = asked_for(&all[..2 * max], &proven, slow, None).await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(asked, [0, max as u64]);
        // A silent replica at the fourth chunk: the three before are kept.
        let (r, asked) = asked_for(&all, &proven, slow, Some(3 * max as u64)).await;
        assert!(matches!(r, Err(ClientError::Connect { .. })), "{r:?}");
        assert_eq!(asked, [2 * max as u64, 3 * max as u64]);
        assert_eq!(proven.load(Ordering::Relaxed), 3 * max);
        // Asked again: only what is left.
        let (r, asked) = asked_for(&all, &proven, slow, None).await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(asked, [3 * max as u64]);
        assert_eq!(proven.load(Ordering::Relaxed), all.len());
    }
}
