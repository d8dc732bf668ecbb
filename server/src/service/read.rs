//! `Pull`, `Subscribe` and `GetEntry`: reading what one is entitled to.
//!
//! Entitlement has one rule, [`entitled`]: a party sees an entry if and only
//! if it is the entry's sender or one of its resolved recipients.

use super::{HubState, storage_status};
use crate::store::InboxItem;
use futures::StreamExt as _;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tongbao_proto::echo::shown;
use tongbao_proto::identity::Principal;
use tongbao_proto::pb;
use tongbao_proto::replica::STANDBY_ENDS;
use tonic::{Request, Response, Status};

/// Entries a subscriber's stream holds before the reader waits for it.
const STREAM_BUFFER: usize = 32;
/// Inbox positions read from the store at a time.
const READ_PAGE: usize = 128;

pub type DeliveryStream = Pin<Box<dyn Stream<Item = Result<pb::Delivery, Status>> + Send>>;

/// True when `who` may see `entry`.
pub fn entitled(who: &Principal, entry: &pb::Entry) -> bool {
    if matches!(who, Principal::Unit(u) if *u == entry.channel) {
        return true;
    }
    // A scan, not a binary search of the sorted names: `==` compares
    // lengths first, so most names are told apart without reading them.
    who.inbox_name()
        .is_some_and(|inbox| entry.recipients.iter().any(|r| *r == *inbox))
}

/// The inbox a caller asks for, which must be its own.
fn own_inbox(who: &Principal, asked: &str) -> Result<String, Status> {
    let own = who
        .inbox()
        .ok_or_else(|| Status::permission_denied(format!("{who} has no inbox")))?;
    if asked.is_empty() || asked == own {
        Ok(own)
    } else {
        Err(Status::permission_denied(format!(
            "{who} may read only its own inbox {own:?}, not {:?}",
            shown(asked)
        )))
    }
}

/// Reads the entries behind inbox positions and records that `inbox` was
/// served them (the "fetched" delivery state), with one write per page.
fn deliveries(
    state: &HubState,
    inbox: &str,
    items: &[InboxItem],
    max_bytes: usize,
) -> Result<Vec<pb::Delivery>, Status> {
    let mut out = Vec::with_capacity(items.len());
    let mut bytes = 0usize;
    for item in items {
        let stored = state
            .store
            .entry_shared(&item.channel, item.seq)
            .map_err(storage_status)?
            .ok_or_else(|| {
                Status::internal(format!(
                    "inbox position {} points to missing entry {}:{}",
                    item.cursor, item.channel, item.seq
                ))
            })?;
        let mut d = pb::Delivery {
            entry: None,
            leaf_hash: stored.leaf_hash.to_vec(),
            cursor: item.cursor,
            encoded_entry: stored.encoded.clone(),
        };
        if crate::failpoint::altered_delivery() == Some(item.cursor) {
            alter(&mut d);
        }
        bytes += prost::Message::encoded_len(&d);
        if !out.is_empty() && bytes > max_bytes {
            break;
        }
        out.push(d);
    }
    let served: Vec<u64> = out.iter().map(|d| d.cursor).collect();
    state
        .store
        .mark_fetched(inbox, &served, tongbao_proto::now_micros())
        .map_err(storage_status)?;
    Ok(out)
}

/// Changes the body of a delivery's entry, keeping its signature and leaf
/// hash (tests only, see [`crate::failpoint::altered_delivery`]).
fn alter(d: &mut pb::Delivery) {
    let Ok(Some(mut entry)) = d.clone().take_entry() else {
        return;
    };
    if let Some(m) = entry.message.as_mut().and_then(|s| s.message.as_mut()) {
        m.body = [&m.body[..], b" (altered)"].concat().into();
    }
    d.encoded_entry = prost::Message::encode_to_vec(&entry).into();
}

/// Up to `limit` positions of `inbox` after `after`, up to the durable
/// `head` only: the store may already hold a batch whose flush is still
/// running. Every position up to `head` is durable, so an empty page below
/// it means records are missing: `DataLoss`, rather than a reader that
/// waits forever or believes it has read everything.
fn durable_page(
    state: &HubState,
    inbox: &str,
    after: u64,
    limit: usize,
    head: u64,
) -> Result<Vec<InboxItem>, Status> {
    let mut items = state
        .store
        .inbox_page(inbox, after, limit)
        .map_err(storage_status)?;
    items.retain(|i| i.cursor <= head);
    if items.is_empty() && head > after && limit > 0 {
        tracing::error!(
            inbox,
            after,
            head,
            "durable inbox positions missing from the store"
        );
        return Err(Status::data_loss(format!(
            "inbox {inbox}: positions {}..={head} are durable but the store does not return them; report this to the hub's operators",
            after + 1
        )));
    }
    Ok(items)
}

pub fn pull(
    state: &HubState,
    request: Request<pb::PullRequest>,
) -> Result<Response<pb::PullResponse>, Status> {
    let who = state.authenticate(&request)?;
    let req = request.into_inner();
    let inbox = own_inbox(&who, &req.inbox)?;
    let limit = match req.limit {
        0 => state.limits.default_page_size,
        n => n.min(state.limits.max_page_size),
    } as usize;
    let head = state.inboxes.head(&inbox)?;
    let items = durable_page(state, &inbox, req.after, limit, head)?;
    let deliveries = deliveries(state, &inbox, &items, state.limits.max_page_bytes)?;
    Ok(Response::new(pb::PullResponse { deliveries, head }))
}

pub fn subscribe(
    state: &Arc<HubState>,
    request: Request<pb::SubscribeRequest>,
) -> Result<Response<DeliveryStream>, Status> {
    let who = state.authenticate(&request)?;
    let req = request.into_inner();
    let inbox = own_inbox(&who, &req.inbox)?;
    let slot = state
        .subscriptions
        .open(&who.to_string())
        .map_err(|e| Status::resource_exhausted(e.to_string()))?;
    let mut head = state.inboxes.watch(&inbox)?;
    let mut failed_commits = state.inboxes.failed_commits();
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    // The status a stream ends with at shutdown, after its buffer.
    let (end, end_rx) = oneshot::channel();
    let state = state.clone();
    let mut shutdown = state.shutdown.clone();
    // A standby that goes stale or unfit ends its streams as it refuses
    // new calls (`freshness.rs`).
    let mut unfit = state.freshness.as_ref().map(|f| f.watch());
    let mut cursor = req.after;
    tokio::spawn(async move {
        // Held while the stream is served: the task ends when the client
        // goes away (`tx.closed()` or a failed send), freeing the slot.
        let _slot = slot;
        loop {
            // The head first: every position up to it must be served.
            let durable = *head.borrow_and_update();
            let items = match durable_page(&state, &inbox, cursor, READ_PAGE, durable) {
                Ok(items) => items,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if items.is_empty() {
                tokio::select! {
                    r = head.wait_for(|h| *h > cursor) => if r.is_err() { return },
                    // Read again: the store may refuse the end now.
                    r = failed_commits.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                    _ = stopping(&mut shutdown) => return ended(&state, end),
                    why = unfit_now(&mut unfit) => return refused(end, why),
                }
                continue;
            }
            let page = match deliveries(&state, &inbox, &items, usize::MAX) {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            for d in page {
                let at = d.cursor;
                // A client that stops reading (or a long catch-up) never
                // holds a shutdown up: the server waits for every stream.
                tokio::select! {
                    sent = tx.send(Ok(d)) => if sent.is_err() { return },
                    _ = stopping(&mut shutdown) => return ended(&state, end),
                    why = unfit_now(&mut unfit) => return refused(end, why),
                }
                cursor = at;
            }
        }
    });
    Ok(Response::new(Box::pin(
        ReceiverStream::new(rx)
            .chain(futures::stream::once(end_rx).filter_map(|end| async { end.ok().map(Err) })),
    ) as DeliveryStream))
}

/// Resolves once the hub shuts down (at once if it already has).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        // The hub is gone: nothing is served any longer.
    }
}

/// Resolves with the reason once a standby may not serve (never on a
/// leader, whose `unfit` is None).
async fn unfit_now(unfit: &mut Option<watch::Receiver<Option<String>>>) -> String {
    if let Some(unfit) = unfit
        && let Ok(why) = unfit.wait_for(Option::is_some).await
    {
        return why.clone().unwrap_or_default();
    }
    std::future::pending().await
}

/// Ends a subscription on a standby that may not serve, with the status
/// its new calls get, after what is already buffered.
fn refused(end: oneshot::Sender<Status>, why: String) {
    let _ = end.send(tongbao_proto::replica::standby_unavailable(why));
}

/// Ends a subscription at shutdown. A standby stops to take over (or to
/// stop): its subscribers resume by cursor on any replica, told so with
/// UNAVAILABLE after what is already buffered; a leader's streams just
/// end.
fn ended(state: &HubState, end: oneshot::Sender<Status>) {
    if state.standby {
        let _ = end.send(Status::unavailable(STANDBY_ENDS));
    }
}

pub fn get_entry(
    state: &HubState,
    request: Request<pb::GetEntryRequest>,
) -> Result<Response<pb::GetEntryResponse>, Status> {
    let who = state.authenticate(&request)?;
    let req = request.into_inner();
    // An entry whose batch is still being flushed does not exist yet.
    let durable = req.seq < state.logs.durable_size(&req.channel)?;
    let stored = durable
        .then(|| state.store.entry(&req.channel, req.seq))
        .transpose()
        .map_err(storage_status)?
        .flatten()
        .ok_or_else(|| {
            Status::not_found(format!(
                "channel {:?} has no entry {}",
                shown(&req.channel),
                req.seq
            ))
        })?;
    if !entitled(&who, &stored.entry) {
        return Err(Status::permission_denied(format!(
            "entry {}:{} is not addressed to {who}",
            req.channel, req.seq
        )));
    }
    if let Some((inbox, cursor)) = who
        .inbox()
        .and_then(|i| stored.cursor_of(&i).map(|c| (i, c)))
    {
        state
            .store
            .mark_fetched(&inbox, &[cursor], tongbao_proto::now_micros())
            .map_err(storage_status)?;
    }
    Ok(Response::new(pb::GetEntryResponse {
        entry: Some(stored.entry),
        leaf_hash: stored.leaf_hash.to_vec(),
    }))
}
