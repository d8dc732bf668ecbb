//! The `Log` service: checkpoints and proofs of each channel.
//!
//! Checkpoints, consistency proofs and leaf hashes reveal only hashes, so
//! any authenticated party may have them; an inclusion proof names an
//! entry, so only a party entitled to the entry gets one.

use super::read::entitled;
use super::{HubState, storage_status};
use crate::channel_log::LogError;
use crate::store::StoredEntry;
use std::sync::Arc;
use tongbao_proto::echo::shown;
use tongbao_proto::identity::Principal;
use tongbao_proto::merkle::{
    MAX_LEAVES_PER_CALL, prove_record, prove_records, prove_tree, stored_hash_index,
};
use tongbao_proto::pb::{self, log_server::Log};
use tonic::{Request, Response, Status};

/// Most leaf hashes (or inclusion proofs) one call returns.
const MAX_LEAF_HASHES: u32 = MAX_LEAVES_PER_CALL as u32;

/// `tongbao.v1.Log` over the shared hub state.
#[derive(Clone)]
pub struct LogService {
    state: Arc<HubState>,
}

impl LogService {
    pub fn new(state: Arc<HubState>) -> Self {
        Self { state }
    }

    fn known_channel(&self, channel: &str) -> Result<(), Status> {
        if self.state.registry()?.unit(channel).is_none() {
            return Err(Status::not_found(format!(
                "there is no channel {:?}",
                shown(channel)
            )));
        }
        Ok(())
    }

    /// The latest checkpoint; signing may write and fsync, so it runs where
    /// blocking is allowed.
    fn checkpoint(&self, channel: &str) -> Result<crate::channel_log::SignedCheckpoint, Status> {
        tokio::task::block_in_place(|| self.state.logs.checkpoint(channel)).map_err(log_status)
    }

    /// An office may prove the receipts and exception feedback its audit
    /// shows: answers to entries in its mechanism's scope.
    fn office_may_prove(&self, who: &Principal, answer: &pb::Entry) -> Result<bool, Status> {
        let Principal::Office(mechanism) = who else {
            return Ok(false);
        };
        let Some(message) = answer.content() else {
            return Ok(false);
        };
        let mut pins: Vec<&pb::EntryPin> = Vec::new();
        if let Some(a) = &message.acknowledgement {
            pins.extend(&a.entries);
        }
        if let Some(p) = message.exception.as_ref().and_then(|x| x.entry.as_ref()) {
            pins.push(p);
        }
        for pin in pins {
            let Some(answered) = self
                .state
                .store
                .entry(&pin.channel, pin.seq)
                .map_err(storage_status)?
            else {
                continue;
            };
            let audience = answered
                .entry
                .content()
                .and_then(|m| m.audience.clone())
                .unwrap_or_default();
            // Locked for the check only: a slow read on a heavy thread
            // never holds up a registry change.
            let in_scope = self
                .state
                .registry()?
                .audit_scopes(
                    &answered.entry.channel,
                    &audience,
                    &answered.entry.recipients,
                )
                .contains(mechanism);
            if in_scope {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// An entry the caller may have an inclusion proof of.
    fn provable_entry(
        &self,
        who: &Principal,
        channel: &str,
        seq: u64,
    ) -> Result<Arc<StoredEntry>, Status> {
        let stored = self
            .state
            .store
            .entry_shared(channel, seq)
            .map_err(storage_status)?
            .ok_or_else(|| {
                Status::not_found(format!("channel {} has no entry {seq}", shown(channel)))
            })?;
        if !entitled(who, &stored.entry) && !self.office_may_prove(who, &stored.entry)? {
            return Err(Status::permission_denied(format!(
                "entry {channel}:{seq} is not addressed to {who}; inclusion proofs are for entries one may see"
            )));
        }
        Ok(stored)
    }

    /// The entries of `seqs` the caller may have inclusion proofs of, each
    /// checked (then, given a tree size, found in that tree) in order. An
    /// office's check reads the entries its answers pin, so it runs as
    /// heavy work.
    async fn provable_entries(
        &self,
        who: Principal,
        channel: &str,
        seqs: Vec<u64>,
        tree_size: Option<u64>,
    ) -> Result<Vec<Arc<StoredEntry>>, Status> {
        let office = matches!(who, Principal::Office(_));
        let this = self.clone();
        let channel = channel.to_string();
        let check = move || {
            let mut found = Vec::with_capacity(seqs.len());
            for seq in seqs {
                found.push(this.provable_entry(&who, &channel, seq)?);
                if let Some(size) = tree_size {
                    in_tree(&channel, seq, size)?;
                }
            }
            Ok(found)
        };
        if office {
            self.state.heavy("office proof check", check).await
        } else {
            check()
        }
    }

    /// The inclusion proof of entry `seq` in the tree of size `tree_size`.
    fn proof(&self, channel: &str, seq: u64, tree_size: u64) -> Result<Vec<Vec<u8>>, Status> {
        in_tree(channel, seq, tree_size)?;
        prove_record(tree_size, seq, &self.state.logs.reader(channel))
            .map(hashes)
            .map_err(|e| log_status(e.into()))
    }

    /// A size a proof may refer to: at most what is durable.
    fn check_size(&self, channel: &str, size: u64) -> Result<(), Status> {
        let durable = self.state.logs.durable_size(channel)?;
        if size > durable {
            return Err(Status::out_of_range(format!(
                "channel {channel} has {durable} entries; size {size} does not exist yet"
            )));
        }
        Ok(())
    }
}

/// An entry must be below the size it is proved against.
fn in_tree(channel: &str, seq: u64, tree_size: u64) -> Result<(), Status> {
    if seq >= tree_size {
        return Err(Status::out_of_range(format!(
            "entry {channel}:{seq} is not in the tree of size {tree_size} yet; ask again after the next checkpoint"
        )));
    }
    Ok(())
}

/// A multiproof's seqs: some, strictly increasing (its canonical order).
fn multiproof_seqs(seqs: &[u64]) -> Result<(), Status> {
    if seqs.is_empty() {
        return Err(Status::invalid_argument(
            "a multiproof needs at least one seq",
        ));
    }
    let disorder = seqs.windows(2).find_map(|w| match w {
        [a, b] if a >= b => Some((*a, *b)),
        _ => None,
    });
    if let Some((a, b)) = disorder {
        return Err(Status::invalid_argument(format!(
            "for a multiproof the seqs must be strictly increasing, but {b} follows {a}; sort them and drop repeats"
        )));
    }
    Ok(())
}

fn log_status(e: LogError) -> Status {
    match e {
        LogError::Merkle(m) => Status::invalid_argument(m.to_string()),
        LogError::CosignatureRefused(_) => Status::unauthenticated(e.to_string()),
        LogError::NoCheckpoint(_) | LogError::StaleCheckpoint { .. } => {
            Status::failed_precondition(e.to_string())
        }
        other => {
            tracing::error!(error = %other, "log failure");
            Status::internal(other.to_string())
        }
    }
}

fn hashes(v: Vec<tongbao_proto::Hash>) -> Vec<Vec<u8>> {
    v.into_iter().map(|h| h.to_vec()).collect()
}

#[tonic::async_trait]
impl Log for LogService {
    async fn get_log_key(
        &self,
        request: Request<pb::GetLogKeyRequest>,
    ) -> Result<Response<pb::GetLogKeyResponse>, Status> {
        self.state.authenticate(&request)?;
        let verifier = self.state.logs.verifier().map_err(log_status)?;
        Ok(Response::new(pb::GetLogKeyResponse {
            vkey: verifier.to_vkey(),
            name: self.state.logs.name().to_string(),
        }))
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        self.state.authenticate(&request)?;
        let channel = request.into_inner().channel;
        self.known_channel(&channel)?;
        let signed = self.checkpoint(&channel)?;
        Ok(Response::new(pb::GetCheckpointResponse {
            note: signed.note,
            size: signed.checkpoint.size,
            root: signed.checkpoint.root.to_vec(),
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        let who = self.state.authenticate(&request)?;
        let req = request.into_inner();
        self.known_channel(&req.channel)?;
        let stored = self
            .provable_entries(who, &req.channel, vec![req.seq], None)
            .await?
            .pop()
            .ok_or_else(|| Status::internal("the entry checked is missing"))?;
        let (tree_size, checkpoint) = if req.tree_size == 0 {
            let signed = self.checkpoint(&req.channel)?;
            (signed.checkpoint.size, signed.note)
        } else {
            self.check_size(&req.channel, req.tree_size)?;
            (req.tree_size, String::new())
        };
        let proof = self.proof(&req.channel, req.seq, tree_size)?;
        Ok(Response::new(pb::GetInclusionProofResponse {
            leaf_hash: stored.leaf_hash.to_vec(),
            tree_size,
            proof,
            checkpoint,
        }))
    }

    async fn get_inclusion_proofs(
        &self,
        request: Request<pb::GetInclusionProofsRequest>,
    ) -> Result<Response<pb::GetInclusionProofsResponse>, Status> {
        let who = self.state.authenticate(&request)?;
        let req = request.into_inner();
        self.known_channel(&req.channel)?;
        if req.seqs.len() > MAX_LEAF_HASHES as usize {
            return Err(Status::resource_exhausted(format!(
                "{} proofs asked; at most {MAX_LEAF_HASHES} per call",
                req.seqs.len()
            )));
        }
        if req.tree_size == 0 {
            return Err(Status::invalid_argument(
                "give the tree size of the checkpoint the proofs are for",
            ));
        }
        self.check_size(&req.channel, req.tree_size)?;
        if req.multiproof {
            multiproof_seqs(&req.seqs)?;
            self.provable_entries(who, &req.channel, req.seqs.clone(), Some(req.tree_size))
                .await?;
            let proof = prove_records(
                req.tree_size,
                &req.seqs,
                &self.state.logs.reader(&req.channel),
            )
            .map_err(|e| log_status(e.into()))?;
            return Ok(Response::new(pb::GetInclusionProofsResponse {
                tree_size: req.tree_size,
                proofs: Vec::new(),
                multiproof: hashes(proof),
            }));
        }
        let entries = self
            .provable_entries(who, &req.channel, req.seqs.clone(), Some(req.tree_size))
            .await?;
        let mut proofs = Vec::with_capacity(req.seqs.len());
        for (seq, stored) in req.seqs.into_iter().zip(entries) {
            proofs.push(pb::InclusionProof {
                seq,
                leaf_hash: stored.leaf_hash.to_vec(),
                proof: self.proof(&req.channel, seq, req.tree_size)?,
            });
        }
        Ok(Response::new(pb::GetInclusionProofsResponse {
            tree_size: req.tree_size,
            proofs,
            multiproof: Vec::new(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        self.state.authenticate(&request)?;
        let req = request.into_inner();
        self.known_channel(&req.channel)?;
        let (new_size, checkpoint) = if req.new_size == 0 {
            let signed = self.checkpoint(&req.channel)?;
            (signed.checkpoint.size, signed.note)
        } else {
            self.check_size(&req.channel, req.new_size)?;
            (req.new_size, String::new())
        };
        if req.old_size > new_size {
            return Err(Status::out_of_range(format!(
                "old size {} is larger than new size {new_size} of channel {}; a channel never shrinks",
                req.old_size,
                shown(&req.channel)
            )));
        }
        let proof = prove_tree(
            new_size,
            req.old_size,
            &self.state.logs.reader(&req.channel),
        )
        .map_err(|e| log_status(e.into()))?;
        Ok(Response::new(pb::GetConsistencyProofResponse {
            old_size: req.old_size,
            new_size,
            proof: hashes(proof),
            checkpoint,
        }))
    }

    async fn get_leaf_hashes(
        &self,
        request: Request<pb::GetLeafHashesRequest>,
    ) -> Result<Response<pb::GetLeafHashesResponse>, Status> {
        self.state.authenticate(&request)?;
        let req = request.into_inner();
        self.known_channel(&req.channel)?;
        let count = req.count.min(MAX_LEAF_HASHES);
        let end = req.start.saturating_add(u64::from(count));
        self.check_size(&req.channel, end)?;
        let indexes: Vec<u64> = (req.start..end).map(|n| stored_hash_index(0, n)).collect();
        let leaf_hashes = self
            .state
            .store
            .stored_hashes(&req.channel, &indexes)
            .map_err(storage_status)?;
        Ok(Response::new(pb::GetLeafHashesResponse {
            leaf_hashes: hashes(leaf_hashes),
        }))
    }

    async fn add_cosignature(
        &self,
        request: Request<pb::AddCosignatureRequest>,
    ) -> Result<Response<pb::AddCosignatureResponse>, Status> {
        let unit = self
            .state
            .authenticate_unit(&request, "cosign checkpoints")?;
        let req = request.into_inner();
        if req.channel != unit {
            return Err(Status::permission_denied(format!(
                "unit {unit} may cosign only its own channel, not {}",
                shown(&req.channel)
            )));
        }
        let key = self
            .state
            .registry()?
            .unit(&unit)
            .and_then(|u| u.keys.iter().rev().find(|k| k.valid_until_micros.is_none()))
            .map(|k| k.public_key.clone())
            .ok_or_else(|| {
                Status::failed_precondition(format!("unit {unit} has no current signing key"))
            })?;
        let note = tokio::task::block_in_place(|| {
            self.state
                .logs
                .add_cosignature(&unit, req.size, &req.cosignature, &key)
        })
        .map_err(log_status)?;
        Ok(Response::new(pb::AddCosignatureResponse { note }))
    }

    async fn get_key_registry(
        &self,
        request: Request<pb::GetKeyRegistryRequest>,
    ) -> Result<Response<pb::GetKeyRegistryResponse>, Status> {
        self.state.authenticate(&request)?;
        let text = tongbao_proto::keys::key_registry_text(&self.state.registry()?.to_proto().units);
        let note = self.state.logs.sign_statement(&text).map_err(log_status)?;
        Ok(Response::new(pb::GetKeyRegistryResponse { note }))
    }
}
