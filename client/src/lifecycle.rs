//! Key and registry lifecycle calls: a unit rotates its own signing key,
//! anyone asks who was a member of a mechanism at a time, and operators
//! call the `Admin` service.

use crate::{Client, ClientError, Draft};
use std::path::Path;
use std::sync::Arc;
use tongbao_proto::identity::Principal;
use tongbao_proto::keys::SigningKey;
use tongbao_proto::pb::admin_client::AdminClient;
use tongbao_proto::pb::directory_client::DirectoryClient;
use tongbao_proto::{pb, rotation};
use tonic::transport::Channel;

impl Client {
    /// The `Admin` service on this client's connection (operators only;
    /// anyone else gets `PermissionDenied`).
    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel())
    }

    /// The `Directory` service on this client's connection.
    pub fn directory(&self) -> DirectoryClient<Channel> {
        DirectoryClient::new(self.channel())
    }

    /// The members of a mechanism at a time (0 = now).
    pub async fn members_at(
        &self,
        mechanism: &str,
        at_micros: i64,
    ) -> Result<Vec<String>, ClientError> {
        Ok(self
            .directory()
            .members_at(pb::MembersAtRequest {
                mechanism: mechanism.to_string(),
                at_micros,
            })
            .await?
            .into_inner()
            .members)
    }

    /// Announces `new_key` as this unit's signing key, in a key-rotation
    /// entry of its own channel signed with the current key, addressed to
    /// the mechanisms the unit belongs to. Once the hub made it durable, the
    /// new key signs everything this client sends and replaces the key
    /// file of the config (the old file is kept as `<file>.retired`);
    /// messages signed earlier keep verifying.
    pub async fn rotate_signing_key(
        &self,
        new_key: SigningKey,
    ) -> Result<pb::RotateKeyResponse, ClientError> {
        let Principal::Unit(unit) = self.identity().clone() else {
            return Err(ClientError::NoSigningKey);
        };
        let mechanisms: Vec<String> = self
            .list_units()
            .await?
            .mechanisms
            .into_iter()
            .filter(|m| m.members.contains(&unit))
            .map(|m| m.id)
            .collect();
        let message_id = crate::client::new_message_id();
        let mut draft = Draft::new(
            pb::Kind::KeyRotation,
            format!(
                "signing key rotation of {unit}: new key {}",
                new_key.key_id()
            ),
            rotation::body(&unit, &message_id, &new_key),
        )
        .with_content_type(rotation::CONTENT_TYPE)
        .with_id(message_id);
        if mechanisms.is_empty() {
            draft = draft.to_leading_group();
        }
        for m in mechanisms {
            draft = draft.to_mechanism(m);
        }
        let signed = self.sign(draft)?;
        let file = self.signing_key_file();
        // Kept beside the key file first, so a crash cannot lose the new key.
        let pending = file.as_ref().map(|f| f.with_extension("key.new"));
        if let Some(p) = &pending {
            write_private(p, &new_key.to_pem())?;
        }
        let mut response = None;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while response.is_none() {
            match self
                .directory()
                .rotate_key(pb::RotateKeyRequest {
                    announcement: Some(signed.clone()),
                })
                .await
            {
                Ok(r) => response = Some(r.into_inner()),
                Err(status) => {
                    let e = ClientError::from(status);
                    if !e.is_transient() || std::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
        let response = response.ok_or(ClientError::NoSigningKey)?;
        if let (Some(file), Some(pending)) = (&file, &pending) {
            // The retired key stays private as well (a copy would not be
            // 0600 until after it was written).
            if let Ok(old) = std::fs::read(file) {
                let _ =
                    tongbao_proto::secret_file::replace(&file.with_extension("key.retired"), &old);
            }
            std::fs::rename(pending, file).map_err(|e| ClientError::File {
                what: "signing key",
                path: file.clone(),
                reason: e.to_string(),
            })?;
        }
        self.use_signing_key(Arc::new(new_key));
        Ok(response)
    }

    /// An operator's view of the admin audit trail (offices may read it too).
    pub async fn admin_audit(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<pb::AdminAuditRecord>, ClientError> {
        Ok(self
            .admin()
            .list_audit(pb::ListAuditRequest { after, limit })
            .await?
            .into_inner()
            .records)
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), ClientError> {
    let fail = |e: std::io::Error| ClientError::File {
        what: "new signing key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    tongbao_proto::secret_file::replace(path, text.as_bytes()).map_err(fail)
}
