//! `Admin` (operators change the registry and reload TLS material) and
//! `Directory` (anyone asks about membership; a unit rotates its own key).
//!
//! Which operator may make which call is the table of `crate::roles`.
//! Every registry change is made on a copy, saved durably, and only then
//! made visible, so a refused or failed change leaves nothing behind. Every
//! admin action, and every refused call (an operator's outside its role
//! included), is recorded in the admin audit trail before the answer goes
//! out.

use super::push::verify_sender_signature;
use super::{HubState, storage_status};
use crate::admin_audit::{AdminAuditError, MAX_FIELD_BYTES, capped};
use crate::appender::AppendError;
use crate::registry::{PendingRotation, Registry, RegistryError, display_micros};
use crate::roles::{Method, RoleError};
use crate::tls::peer_principal;
use std::sync::Arc;
use tongbao_proto::identity::Principal;
use tongbao_proto::keys::decode_public_key;
use tongbao_proto::pb::admin_server::Admin;
use tongbao_proto::pb::directory_server::Directory;
use tongbao_proto::{Hash, now_micros, pb, rotation};
use tonic::{Request, Response, Status};

/// Most audit records one `ListAudit` call returns.
const MAX_AUDIT_PAGE: u32 = 1000;
/// Record text per `ListAudit` page; records are at most a few KiB each.
const MAX_AUDIT_PAGE_BYTES: usize = 1 << 20;

/// `tongbao.v1.Admin` over the shared hub state.
#[derive(Clone)]
pub struct AdminService {
    state: Arc<HubState>,
}

/// `tongbao.v1.Directory` over the shared hub state.
#[derive(Clone)]
pub struct DirectoryService {
    state: Arc<HubState>,
}

impl AdminService {
    pub fn new(state: Arc<HubState>) -> Self {
        Self { state }
    }
}

impl DirectoryService {
    pub fn new(state: Arc<HubState>) -> Self {
        Self { state }
    }
}

fn registry_status(e: RegistryError) -> Status {
    let text = e.to_string();
    match e {
        RegistryError::UnknownUnit(_)
        | RegistryError::UnknownMechanism(..)
        | RegistryError::UnknownKey { .. } => Status::not_found(text),
        RegistryError::Invalid(_) => Status::invalid_argument(text),
        RegistryError::KeyExists { .. } | RegistryError::AlreadyMember { .. } => {
            Status::already_exists(text)
        }
        RegistryError::AlreadyRetired { .. }
        | RegistryError::LastKey { .. }
        | RegistryError::AlreadySuspended(_)
        | RegistryError::NotSuspended(_) => Status::failed_precondition(text),
    }
}

/// 0 means "now" in every time field of the admin protocol.
fn or_now(micros: i64) -> i64 {
    if micros == 0 { now_micros() } else { micros }
}

/// Changes the registry on a copy, saves it durably, then swaps it in.
fn change_registry<T>(
    state: &HubState,
    f: impl FnOnce(&mut Registry) -> Result<T, RegistryError>,
) -> Result<T, Status> {
    tokio::task::block_in_place(|| {
        let mut current = crate::fatal::write(&state.registry, "registry")?;
        let mut next = current.clone();
        let out = f(&mut next).map_err(registry_status)?;
        next.save(state.store.as_ref()).map_err(storage_status)?;
        *current = next;
        Ok(out)
    })
}

/// Who is calling, as far as the certificate says, even when the call is
/// refused: the audit trail names refused callers too.
fn caller_uri<T>(request: &Request<T>) -> String {
    request
        .peer_certs()
        .and_then(|c| c.first().and_then(|leaf| peer_principal(leaf).ok()))
        .map(|p| p.uri())
        .unwrap_or_else(|| "(no certificate)".into())
}

/// Records an action and its outcome, then answers.
/// What the trail records of a request: its fields in words once the
/// caller is authorized, nothing of them before, so that a caller without
/// the right cannot write what it likes into the trail.
fn described(allowed: &Result<(), Status>, detail: impl FnOnce() -> String) -> String {
    match allowed {
        Ok(()) => detail(),
        Err(_) => String::new(),
    }
}

fn finish<R>(
    state: &HubState,
    actor: &str,
    action: &str,
    detail: &str,
    result: Result<(R, String), Status>,
) -> Result<Response<R>, Status> {
    let (code, outcome) = match &result {
        Ok((_, done)) => (0, done.as_str()),
        Err(s) => (s.code() as i32, s.message()),
    };
    // Logged as recorded: cut to the trail's bound.
    let detail = &*capped(detail, MAX_FIELD_BYTES);
    let outcome = &*capped(outcome, MAX_FIELD_BYTES);
    let recorded = tokio::task::block_in_place(|| {
        state
            .admin_audit
            .record(actor, action, detail, code, outcome)
    });
    match (&recorded, code) {
        (Ok(_), _) => tracing::info!(%actor, %action, %detail, code, %outcome, "admin action"),
        (Err(e @ AdminAuditError::NotDurable { .. }), 0) => {
            tracing::error!(error = %e, %actor, %action, %detail, "admin action done, recorded but not durable");
            return Err(Status::internal(format!("{outcome}; but {e}")));
        }
        (Err(e), 0) => {
            tracing::error!(error = %e, %actor, %action, %detail, "admin action done but not recorded");
            return Err(trail_status(
                e,
                format!("{outcome}; but the admin audit trail could not record it: {e}"),
            ));
        }
        (Err(e), _) => tracing::error!(error = %e, %actor, %action, "refusal not recorded"),
    }
    result.map(|(r, _)| Response::new(r))
}

/// A broken trail (a record missing, edited, or stored beyond its head)
/// is `DATA_LOSS`; anything else the trail meets, `INTERNAL`.
fn trail_status(e: &AdminAuditError, message: String) -> Status {
    match e {
        AdminAuditError::Broken { .. } => Status::data_loss(message),
        _ => Status::internal(message),
    }
}

/// An operator outside its role is refused `PermissionDenied`; an
/// unregistered one `Unauthenticated`.
fn role_status(e: RoleError) -> Status {
    match e {
        RoleError::Unregistered(_) => Status::unauthenticated(e.to_string()),
        _ => Status::permission_denied(e.to_string()),
    }
}

/// Whether the caller may make this `Admin` call: a registered operator
/// of the role the table gives it, or, for `ListAudit`, an office.
fn admin_allowed<T>(state: &HubState, request: &Request<T>, method: Method) -> Result<(), Status> {
    let what = method.row().what;
    match state.authenticate(request)? {
        Principal::Operator(name) => state
            .operators
            .authorize(&name, method)
            .map(|_| ())
            .map_err(role_status),
        Principal::Office(_) if method == Method::ListAudit => Ok(()),
        other if method == Method::ListAudit => Err(Status::permission_denied(format!(
            "{other} cannot {what}; offices and operators of the audit role can"
        ))),
        other => Err(Status::permission_denied(format!(
            "{other} cannot {what}: the Admin service is for operators only (a certificate naming urn:tongbao:operator:<name>)"
        ))),
    }
}

/// Records a refusal and answers it, for calls that record nothing when
/// allowed (reads are not admin actions; a unit's rotation records itself).
fn recorded_refusal(
    state: &HubState,
    actor: &str,
    method: Method,
    allowed: Result<(), Status>,
) -> Result<(), Status> {
    match allowed {
        Ok(()) => Ok(()),
        // A standby writes nothing to the database, the trail included:
        // its access log records the refusal.
        Err(refusal) if state.standby => {
            tracing::info!(%actor, action = method.row().action, code = refusal.code() as i32, "refused on a standby; recorded in its access log");
            Err(refusal)
        }
        Err(refusal) => finish::<()>(state, actor, method.row().action, "", Err(refusal)).map(drop),
    }
}

/// What the trail's `detail` says of a request's back-dating fields.
fn backdate_detail(backdate: bool, reason: &str) -> String {
    if backdate || !reason.is_empty() {
        format!("; backdate {backdate} reason {reason:?}")
    } else {
        String::new()
    }
}

/// What the trail's outcome adds for a change dated into the past.
fn backdated_outcome(reason: Option<&str>, now: i64, actor: &str) -> String {
    reason.map_or_else(String::new, |reason| {
        format!(
            ", back-dated from {} by {actor}, reason: {reason:?}",
            display_micros(now)
        )
    })
}

impl AdminService {
    /// The caller's URI, and whether it may make this call.
    fn operator<T>(&self, request: &Request<T>, method: Method) -> (String, Result<(), Status>) {
        (
            caller_uri(request),
            admin_allowed(&self.state, request, method),
        )
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn register_key(
        &self,
        request: Request<pb::RegisterKeyRequest>,
    ) -> Result<Response<pb::RegisterKeyResponse>, Status> {
        let method = Method::RegisterKey;
        let (actor, allowed) = self.operator(&request, method);
        let req = request.into_inner();
        let detail = described(&allowed, || {
            let mut d = format!(
                "unit {} key {} from {} until {}",
                req.unit, req.public_key, req.valid_from_micros, req.valid_until_micros
            );
            d.push_str(&backdate_detail(req.backdate, &req.backdate_reason));
            d
        });
        let result = allowed.and_then(|()| {
            let pk = decode_public_key(&req.public_key).map_err(|e| {
                Status::invalid_argument(format!(
                    "public_key must be a base64 Ed25519 public key (as `tongbao keys init` or `tongbao keys signing-key` prints it): {e}"
                ))
            })?;
            let now = now_micros();
            let from = match req.valid_from_micros {
                0 => now,
                t => t,
            };
            let backdated =
                crate::backdating::check("valid_from", from, now, req.backdate, &req.backdate_reason)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let until = (req.valid_until_micros != 0).then_some(req.valid_until_micros);
            let key = change_registry(&self.state, |r| r.register_key(&req.unit, &pk, from, until))?;
            let mut done = format!(
                "registered key {} of unit {} valid from {}",
                key.key_id,
                req.unit,
                display_micros(key.valid_from_micros)
            );
            done.push_str(&backdated_outcome(backdated, now, &actor));
            Ok((
                pb::RegisterKeyResponse {
                    key_id: key.key_id.clone(),
                    valid_from_micros: key.valid_from_micros,
                    valid_until_micros: key.valid_until_micros.unwrap_or(0),
                },
                done,
            ))
        });
        finish(&self.state, &actor, method.row().action, &detail, result)
    }

    async fn retire_key(
        &self,
        request: Request<pb::RetireKeyRequest>,
    ) -> Result<Response<pb::RetireKeyResponse>, Status> {
        let method = Method::RetireKey;
        let (actor, allowed) = self.operator(&request, method);
        let req = request.into_inner();
        let detail = described(&allowed, || {
            let mut d = format!("unit {} key {} at {}", req.unit, req.key_id, req.at_micros);
            d.push_str(&backdate_detail(req.backdate, &req.backdate_reason));
            d
        });
        let result = allowed.and_then(|()| {
            let now = now_micros();
            let at = match req.at_micros {
                0 => now,
                t => t,
            };
            let backdated =
                crate::backdating::check("at", at, now, req.backdate, &req.backdate_reason)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let until = change_registry(&self.state, |r| r.retire_key(&req.unit, &req.key_id, at))?;
            let mut done = format!(
                "retired key {} of unit {} at {}",
                req.key_id,
                req.unit,
                display_micros(until)
            );
            done.push_str(&backdated_outcome(backdated, now, &actor));
            Ok((
                pb::RetireKeyResponse {
                    key_id: req.key_id.clone(),
                    valid_until_micros: until,
                },
                done,
            ))
        });
        finish(&self.state, &actor, method.row().action, &detail, result)
    }

    async fn suspend_unit(
        &self,
        request: Request<pb::SuspendUnitRequest>,
    ) -> Result<Response<pb::SuspendUnitResponse>, Status> {
        let method = Method::SuspendUnit;
        let (actor, allowed) = self.operator(&request, method);
        let req = request.into_inner();
        let detail = described(&allowed, || {
            format!("unit {} reason {:?}", req.unit, req.reason)
        });
        let result = allowed.and_then(|()| {
            change_registry(&self.state, |r| r.set_suspended(&req.unit, true))?;
            // Open streams of the unit end now; its next calls are refused.
            let closed = self.state.tls.connections().close_unit(&req.unit)?;
            Ok((
                pb::SuspendUnitResponse {},
                format!(
                    "suspended unit {}; closed {closed} open connection(s)",
                    req.unit
                ),
            ))
        });
        finish(&self.state, &actor, method.row().action, &detail, result)
    }

    async fn reinstate_unit(
        &self,
        request: Request<pb::ReinstateUnitRequest>,
    ) -> Result<Response<pb::ReinstateUnitResponse>, Status> {
        let method = Method::ReinstateUnit;
        let (actor, allowed) = self.operator(&request, method);
        let req = request.into_inner();
        let detail = described(&allowed, || {
            format!("unit {} reason {:?}", req.unit, req.reason)
        });
        let result = allowed.and_then(|()| {
            change_registry(&self.state, |r| r.set_suspended(&req.unit, false))?;
            Ok((
                pb::ReinstateUnitResponse {},
                format!("reinstated unit {}", req.unit),
            ))
        });
        finish(&self.state, &actor, method.row().action, &detail, result)
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        let method = Method::AddMember;
        let (actor, allowed) = self.operator(&request, method);
        let req = request.into_inner();
        let detail = described(&allowed, || {
            format!(
                "unit {} to mechanism {} from {}",
                req.unit, req.mechanism, req.effective_micros
            )
        });
        let result = allowed.and_then(|()| {
            let now = now_micros();
            let from = or_now(req.effective_micros);
            change_registry(&self.state, |r| {
                r.add_member(&req.mechanism, &req.unit, from, now)
            })?;
            Ok((
                pb::AddMemberResponse {
                    effective_micros: from,
                },
                format!(
                    "unit {} is a member of {} from {}",
                    req.unit,
                    req.mechanism,
                    display_micros(from)
                ),
            ))
        });
        finish(&self.state, &actor, method.row().action, &detail, result)
    }

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        let method = Method::Backup;
        let (actor, allowed) = self.operator(&request, method);
        let req = request.into_inner();
        let detail = described(&allowed, || {
            format!("to {}", tongbao_proto::echo::shown(&req.to))
        });
        let result = match allowed {
            Err(refusal) => Err(refusal),
            Ok(()) => {
                let state = self.state.clone();
                let to = req.to.clone();
                // Copying takes as long as the data is large: off the async workers.
                tokio::task::spawn_blocking(move || super::backup::take(&state, &to))
                    .await
                    .unwrap_or_else(|e| {
                        Err(Status::internal(format!("the backup task failed: {e}")))
                    })
            }
        };
        finish(&self.state, &actor, method.row().action, &detail, result)
    }

    async fn reload_tls(
        &self,
        request: Request<pb::ReloadTlsRequest>,
    ) -> Result<Response<pb::ReloadTlsResponse>, Status> {
        let method = Method::ReloadTls;
        let (actor, allowed) = self.operator(&request, method);
        let result = allowed.and_then(|()| {
            let outcome = tokio::task::block_in_place(|| self.state.tls.reload()).map_err(|e| {
                Status::failed_precondition(format!(
                    "TLS reload failed; the previous material stays in use: {e}"
                ))
            })?;
            let text = format!(
                "reloaded {}; closed {} connection(s)",
                outcome.summary, outcome.closed
            );
            Ok((
                pb::ReloadTlsResponse {
                    summary: outcome.summary,
                    connections_closed: u32::try_from(outcome.closed).unwrap_or(u32::MAX),
                },
                text,
            ))
        });
        finish(&self.state, &actor, method.row().action, "", result)
    }

    async fn list_expiring(
        &self,
        request: Request<pb::ListExpiringRequest>,
    ) -> Result<Response<pb::ListExpiringResponse>, Status> {
        let method = Method::ListExpiring;
        let (actor, allowed) = self.operator(&request, method);
        recorded_refusal(&self.state, &actor, method, allowed)?;
        let days = match request.get_ref().days {
            0 => crate::pki::lifecycle::EXPIRY_WARNING_DAYS,
            d => i64::from(d),
        };
        let dir = &self.state.pki_dir;
        if !dir.join(crate::pki::index::INDEX_FILE).is_file() {
            return Err(Status::failed_precondition(format!(
                "no CA index ({}) beside the hub config in {}; run `tongbao-hub pki list --dir DIR --expiring {days}d` where the CA lives",
                crate::pki::index::INDEX_FILE,
                dir.display()
            )));
        }
        let listing = tokio::task::block_in_place(|| {
            crate::pki::lifecycle::list(dir, Some(time::Duration::days(days)))
        })
        .map_err(|e| Status::internal(format!("cannot read the CA index: {e}")))?;
        Ok(Response::new(pb::ListExpiringResponse {
            certificates: listing
                .rows
                .into_iter()
                .map(|r| pb::ExpiringCertificate {
                    party: r.party.uri(),
                    serial: r.serial,
                    not_after_micros: i64::try_from(r.not_after.unix_timestamp_nanos() / 1000)
                        .unwrap_or(i64::MAX),
                    days_left: r.days_left,
                    state: r.state.as_str().to_string(),
                })
                .collect(),
        }))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let method = Method::ListAudit;
        let (actor, allowed) = self.operator(&request, method);
        recorded_refusal(&self.state, &actor, method, allowed)?;
        let req = request.into_inner();
        let limit = match req.limit {
            0 => 100,
            n => n.min(MAX_AUDIT_PAGE),
        };
        let page = tokio::task::block_in_place(|| {
            self.state
                .admin_audit
                .list(req.after, limit as usize, MAX_AUDIT_PAGE_BYTES)
        })
        .map_err(|e| trail_status(&e, format!("cannot read the admin audit trail: {e}")))?;
        let records = page
            .records
            .into_iter()
            .map(|r| pb::AdminAuditRecord {
                seq: r.seq,
                at_micros: r.at_micros,
                actor: r.actor,
                action: r.action,
                detail: r.detail,
                code: r.code,
                outcome: r.outcome,
                previous_hash: hex::decode(&r.previous_hash).unwrap_or_default(),
                hash: hex::decode(&r.hash).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse {
            records,
            more: page.more,
        }))
    }
}

#[tonic::async_trait]
impl Directory for DirectoryService {
    async fn members_at(
        &self,
        request: Request<pb::MembersAtRequest>,
    ) -> Result<Response<pb::MembersAtResponse>, Status> {
        // Any party may ask; an operator only in the role the table gives.
        if let Principal::Operator(name) = self.state.authenticate(&request)? {
            let method = Method::MembersAt;
            let allowed = self
                .state
                .operators
                .authorize(&name, method)
                .map(drop)
                .map_err(role_status);
            recorded_refusal(&self.state, &caller_uri(&request), method, allowed)?;
        }
        let req = request.into_inner();
        let at = or_now(req.at_micros);
        let members = self
            .state
            .registry()?
            .members_at(&req.mechanism, at)
            .map_err(registry_status)?;
        Ok(Response::new(pb::MembersAtResponse {
            members: members.into_iter().collect(),
            at_micros: at,
        }))
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let actor = caller_uri(&request);
        let method = Method::RotateKey;
        // No operator role may append to a unit's channel: recorded.
        if let Ok(Principal::Operator(name)) = self.state.authenticate(&request) {
            let refusal = self
                .state
                .operators
                .authorize(&name, method)
                .map(drop)
                .map_err(role_status);
            recorded_refusal(&self.state, &actor, method, refusal)?;
        }
        let unit = self.state.authenticate_unit(&request, method.row().what)?;
        let signed = request
            .into_inner()
            .announcement
            .ok_or_else(|| Status::invalid_argument("the request carries no announcement"))?;
        let message_id = signed.message_id().to_string();
        let detail = format!("unit {unit} announcement {message_id}");
        let result = self.rotate(&unit, signed).await;
        finish(&self.state, &actor, method.row().action, &detail, result)
    }
}

/// Ends a pending rotation by what the unit's channel holds: applies it
/// from the announcement's hub time if this very announcement (`digest`)
/// was appended (returning that time), forgets it if not.
fn settle_rotation(
    state: &HubState,
    unit: &str,
    message_id: &str,
    digest: &Hash,
    new_public_key: &[u8],
    old_key: &str,
) -> Result<Option<i64>, Status> {
    let effective = appended_at(state.store.as_ref(), unit, message_id, Some(digest))
        .map_err(storage_status)?;
    change_registry(state, |r| match effective {
        Some(at) => r.apply_rotation(unit, message_id, new_public_key, old_key, at),
        None => {
            r.abandon_rotation(unit, message_id);
            Ok(())
        }
    })?;
    Ok(effective)
}

/// The hub time of message `message_id` in `unit`'s channel, if appended
/// (and, given a `digest`, only if the entry under that id has it).
pub fn appended_at(
    store: &dyn crate::store::Store,
    unit: &str,
    message_id: &str,
    digest: Option<&[u8]>,
) -> Result<Option<i64>, crate::store::StoreError> {
    let Some(rec) = store.message(unit, message_id)? else {
        return Ok(None);
    };
    if digest.is_some_and(|d| d != rec.message_digest.as_slice()) {
        return Ok(None);
    }
    Ok(store.entry(unit, rec.seq)?.map(|e| e.entry.hub_micros))
}

impl DirectoryService {
    async fn rotate(
        &self,
        unit: &str,
        signed: pb::SignedMessage,
    ) -> Result<(pb::RotateKeyResponse, String), Status> {
        let state = &self.state;
        let message = crate::policy::check_key_rotation(&signed, unit, &state.limits, now_micros())
            .map_err(super::push::policy_status)?;
        let digest = verify_sender_signature(state, unit, &signed, message).await?;
        let announced = rotation::parse(unit, &message.message_id, &message.body)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let old_key = signed
            .signature
            .as_ref()
            .map(|s| s.key_id.clone())
            .unwrap_or_default();
        if announced.key_id == old_key {
            return Err(Status::invalid_argument(
                "the announced key is the key that signs the announcement; announce a new key",
            ));
        }
        // Only a true repeat of this announcement may settle from the entry
        // already under its id; another message there refuses the call
        // before the registry is touched.
        let repeated = match state
            .store
            .message(unit, &message.message_id)
            .map_err(storage_status)?
        {
            None => false,
            Some(rec) if rec.message_digest == digest => true,
            Some(rec) => {
                return Err(AppendError::IdReused {
                    message_id: message.message_id.clone(),
                    sender: unit.to_string(),
                    seq: rec.seq,
                }
                .into());
            }
        };
        if !repeated
            && state
                .registry()?
                .unit(unit)
                .is_some_and(|u| u.key(&announced.key_id).is_some())
        {
            return Err(Status::already_exists(format!(
                "key {} is already registered for unit {unit}; generate a new key",
                announced.key_id
            )));
        }
        let message_id = message.message_id.clone();
        // Durable intent first: a crash after the append but before the
        // registry change is finished at the next start (see Hub::start).
        if !repeated {
            change_registry(state, |r| {
                r.begin_rotation(PendingRotation {
                    unit: unit.to_string(),
                    message_id: message_id.clone(),
                    new_public_key: announced.public_key.clone(),
                    old_key_id: old_key.clone(),
                    message_digest: digest.to_vec(),
                })
            })?;
        }
        let appended = state
            .appender
            .append(unit.to_string(), signed, digest)
            .await;
        crate::failpoint::hit("rotation-appended");
        // A storage failure leaves the announcement in memory but perhaps
        // not on disk: the pending rotation stays, and the next start
        // settles it from what the disk holds.
        if let Err(e @ AppendError::Storage(_)) = appended {
            return Err(e.into());
        }
        // Otherwise the channel decides: applied if the announcement is
        // there, forgotten if not.
        let effective = settle_rotation(
            state,
            unit,
            &message_id,
            &digest,
            &announced.public_key,
            &old_key,
        )?;
        let appended = appended?;
        let effective = effective
            .ok_or_else(|| Status::internal("the appended announcement cannot be read back"))?;
        let text = format!(
            "unit {unit} rotated its signing key: {} replaces {old_key} from {} (entry {}:{})",
            announced.key_id,
            display_micros(effective),
            appended.channel,
            appended.seq
        );
        Ok((
            pb::RotateKeyResponse {
                appended: Some(pb::PushResponse::from(appended)),
                new_key_id: announced.key_id,
                retired_key_id: old_key,
                effective_micros: effective,
            },
            text,
        ))
    }
}
