//! Answering peers' requests (catch-up pages, snapshot pages, the digest's ranges and
//! rows to repair) from the store. At most
//! [`SERVE_CAP`] requests are served at once, each in a task of its own; more are refused
//! with "busy". The page served last is kept ([`LastPage`]), so peers that ask for the same
//! page at once get it read once.

use std::sync::Arc;

use libp2p::PeerId;
use murmur_p2p::Responder;
use murmur_store::{
    AuthorRange, MAX_PAGE_BYTES, OpsCursor, OpsPage, Store, StoreError, VersionVector,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info_span};
use uuid::Uuid;

use murmur_store::members::{ClaimRefusal, Event, Standing};
use tracing::{info, warn};

use super::peers::PeerTable;
use crate::device::DeviceBinding;
use crate::metrics::Metrics;
use crate::protocol::{Net, PAGE_SIZE, Refusal, Request, Response, SERVER_AUTHORS_CAP};

/// Requests served at once; more are refused with "busy".
pub const SERVE_CAP: usize = 8;

/// Why a request was refused. [`RequestRejection::label`] is the `reason` label of the
/// `ops_rejected` metric it is counted under; its message is what the peer is told.
#[derive(Debug, thiserror::Error)]
pub enum RequestRejection {
    /// [`SERVE_CAP`] requests are being served.
    #[error("busy: too many requests, try again")]
    Busy,
    /// The request names what does not exist (a resource, a position): the peer's fault.
    #[error("{0}")]
    BadRequest(StoreError),
}

impl RequestRejection {
    /// The metric label: "busy" or "bad_request".
    pub fn label(&self) -> &'static str {
        match self {
            RequestRejection::Busy => "busy",
            RequestRejection::BadRequest(_) => "bad_request",
        }
    }
}

/// The request server: the permits of [`SERVE_CAP`], the tasks serving, the last page.
pub(crate) struct Server {
    store: Store,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    tasks: JoinSet<()>,
    /// The last page of ops served (see [`LastPage`]).
    last_page: Arc<tokio::sync::Mutex<LastPage>>,
    /// Which device each peer is, and who is refused.
    peers: PeerTable,
    /// To mute or block refused peers.
    net: Net,
    /// Claims of invitations are checked and recorded one at a time, so that two claims of
    /// one invitation cannot both pass here.
    joins: Arc<tokio::sync::Mutex<()>>,
}

/// The standing of `peer`'s device: `Ok(client)` for a member.
pub(crate) fn peer_standing(
    store: &Store,
    peers: &PeerTable,
    peer: &PeerId,
) -> Result<Uuid, Refusal> {
    let Some(client) = peers.client(peer) else {
        return Err(Refusal::UnknownDevice);
    };
    standing(store, &client).map(|()| client)
}

/// Whether `client` may sync with this node.
pub(crate) fn standing(store: &Store, client: &Uuid) -> Result<(), Refusal> {
    match store.members().standing(client) {
        Standing::Member => Ok(()),
        Standing::NotMember => Err(Refusal::NotMember),
        Standing::Removed(_) => Err(Refusal::Removed),
    }
}

/// Refuses `peer`, a run of `client`: a removed device is blocked (its connections closed,
/// new ones denied), another non-member muted on gossip (it may still claim an invitation).
/// Logged once per peer; counted.
pub(crate) async fn refuse_peer(
    net: &Net,
    peers: &PeerTable,
    metrics: &Metrics,
    peer: PeerId,
    client: Uuid,
    reason: Refusal,
) {
    if !peers.set_refused(&peer, client, Some(reason)) {
        return;
    }
    metrics.peers_refused.inc();
    match reason {
        Refusal::Removed => {
            info!(%peer, %client, "refusing a removed device's connections");
            if let Err(e) = net.block(peer).await {
                warn!("cannot block the peer: {e}");
            }
        }
        _ => {
            warn!(
                %peer,
                %client,
                "a device that holds the library secret but is not a member connected: it gets \
                 nothing. To let it in, run `murmur invite` on this device and start the other \
                 one with `murmur run --join <invitation>`"
            );
            if let Err(e) = net.mute(peer).await {
                warn!("cannot mute the peer: {e}");
            }
        }
    }
}

impl Server {
    pub(crate) fn new(store: Store, metrics: Arc<Metrics>, peers: PeerTable, net: Net) -> Server {
        Server {
            store,
            metrics,
            permits: Arc::new(Semaphore::new(SERVE_CAP)),
            tasks: JoinSet::new(),
            last_page: Arc::default(),
            peers,
            net,
            joins: Arc::default(),
        }
    }

    /// A peer's `Hello`: its binding checked against the peer id the request came from,
    /// its device recorded, its standing answered (a refused peer is muted or blocked).
    async fn hello(
        &self,
        peer: PeerId,
        device: &DeviceBinding,
    ) -> (Response, Option<(Uuid, Refusal)>) {
        let client = match device.verify(&peer) {
            Ok(c) => c,
            Err(e) => {
                self.metrics.reject("bad_binding");
                debug!(%peer, "hello refused: {e}");
                return (
                    Response::Refused {
                        reason: Refusal::UnknownDevice,
                    },
                    None,
                );
            }
        };
        self.peers.set_client(&peer, client);
        match standing(&self.store, &client) {
            Ok(()) => (Response::Welcome, None),
            Err(reason) => {
                self.metrics.reject(reason.label());
                (Response::Refused { reason }, Some((client, reason)))
            }
        }
    }

    /// Serves `request` in a task of its own, or refuses it at once if [`SERVE_CAP`]
    /// requests are being served.
    pub(crate) async fn serve(
        &mut self,
        peer: PeerId,
        request: Request,
        responder: Responder<Response>,
    ) {
        // Only a member's device is answered; a new device may claim an invitation.
        match &request {
            Request::Hello { device } => {
                let (resp, refused) = self.hello(peer, device).await;
                let _ = responder.respond(resp).await;
                // Told first, then muted or blocked (which closes its connections).
                if let Some((client, reason)) = refused {
                    refuse_peer(&self.net, &self.peers, &self.metrics, peer, client, reason).await;
                }
                return;
            }
            Request::Join { .. } => {}
            _ => {
                if let Err(reason) = peer_standing(&self.store, &self.peers, &peer) {
                    self.metrics.reject(reason.label());
                    debug!(%peer, "request refused: {reason}");
                    let _ = responder.respond(Response::Refused { reason }).await;
                    return;
                }
            }
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let busy = RequestRejection::Busy;
            self.metrics.reject(busy.label());
            let _ = responder.respond(Response::Error(busy.to_string())).await;
            return;
        };
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let last_page = self.last_page.clone();
        if let Request::Join { device, claim } = request {
            let joins = self.joins.clone();
            let peers = self.peers.clone();
            self.tasks.spawn(
                async move {
                    let resp = {
                        let _one = joins.lock().await;
                        admit(&store, &peers, peer, &device, claim).await
                    };
                    if let Response::Refused { reason } = &resp {
                        metrics.reject(reason.label());
                    }
                    metrics.requests_served.inc();
                    if let Err(e) = responder.respond(resp).await {
                        debug!("cannot answer: {e}");
                    }
                    drop(permit);
                }
                .instrument(info_span!("join", %peer)),
            );
            return;
        }
        self.tasks.spawn(
            async move {
                let resp =
                    match serve_request_with(&store, request, Some((&last_page, &metrics))).await {
                        Ok(resp) => resp,
                        // A request naming what does not exist (a resource, a position): the
                        // peer's fault, counted, not a warning.
                        Err(e) if e.is_bad_input() => {
                            let refused = RequestRejection::BadRequest(e);
                            metrics.reject(refused.label());
                            debug!("refused a request: {refused}");
                            Response::Error(refused.to_string())
                        }
                        Err(e) => {
                            warn!("serving a request failed: {e}");
                            Response::Error(e.to_string())
                        }
                    };
                metrics.requests_served.inc();
                if let Err(e) = responder.respond(resp).await {
                    debug!("cannot answer: {e}");
                }
                drop(permit);
            }
            .instrument(info_span!("serve", %peer)),
        );
    }

    /// Whether no request is being served.
    pub(crate) fn is_idle(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits for a served request's task to end (its permit is released in the task).
    ///
    /// ## Cancellation safety
    ///
    /// Cancel-safe, as [`JoinSet::join_next`] is.
    pub(crate) async fn join_next(&mut self) {
        let _ = self.tasks.join_next().await;
    }

    /// Stops every request being served.
    pub(crate) fn abort_all(&mut self) {
        self.tasks.abort_all();
    }
}

/// Checks a claim of an invitation and records the admission (see
/// [`murmur_store::members`]): the binding must be the requesting peer's, the claim signed
/// by that device and by the invitation's key; the invitation must be known here,
/// unexpired and unused. A member already admitted is answered `Joined` again.
async fn admit(
    store: &Store,
    peers: &PeerTable,
    peer: PeerId,
    device: &DeviceBinding,
    claim: murmur_store::members::Claim,
) -> Response {
    let refused = |r: ClaimRefusal| Response::Refused {
        reason: Refusal::Claim(r),
    };
    let Ok(client) = device.verify(&peer) else {
        return refused(ClaimRefusal::BadClaim);
    };
    if claim.device != device.device {
        return refused(ClaimRefusal::BadClaim);
    }
    peers.set_client(&peer, client);
    let members = store.members();
    match members.standing(&client) {
        Standing::Member if members.devices.get(&client).is_some_and(|d| d.admitted) => {
            return Response::Joined { root: members.root };
        }
        Standing::Removed(_) => {
            return Response::Refused {
                reason: Refusal::Removed,
            };
        }
        _ => {}
    }
    if let Err(r) = members.check_claim(&claim.invite, &client, store.clock().physical_now()) {
        debug!(%peer, %client, "claim refused: {r}");
        return refused(r);
    }
    let Some(invite) = members.invites.get(&claim.invite) else {
        return refused(ClaimRefusal::Unknown);
    };
    if claim.verify(&invite.key).is_err() {
        return refused(ClaimRefusal::BadClaim);
    }
    let name = invite.name.clone().unwrap_or_else(|| claim.name.clone());
    let event = Event::Admit {
        device: claim.device,
        name: name.clone(),
        invite: Some(claim.invite),
    };
    match store.record_member_event(event).await {
        Ok(_) => {
            info!(%peer, %client, name = name.as_str(), invite = %claim.invite, "admitted a new device with an invitation");
            Response::Joined {
                root: store.members().root,
            }
        }
        Err(e) => {
            warn!("cannot record an admission: {e}");
            Response::Error(e.to_string())
        }
    }
}

/// The last page of ops a node served, with what it was read for: the requester's version
/// vector, the author range, the cursor, the limit, and this node's version vector before
/// the read. Peers
/// that pull the same ops at once (every peer of a new owned batch asks for the same pages
/// of its rows) get the page read and decoded once; any new op here changes the version
/// vector, so a kept page is never served for a log that has changed since.
#[derive(Default)]
pub(crate) struct LastPage {
    key: Option<(VersionVector, AuthorRange, OpsCursor, usize, VersionVector)>,
    page: OpsPage,
}

/// Answers a peer's request from the store.
pub async fn serve_request(store: &Store, request: Request) -> Result<Response, StoreError> {
    serve_request_with(store, request, None).await
}

/// [`serve_request`], answering a request for the page served last from `last_page`. The
/// lock is held during the read, so a second request for the same page waits for the first
/// read instead of making its own.
async fn serve_request_with(
    store: &Store,
    request: Request,
    last_page: Option<(&tokio::sync::Mutex<LastPage>, &Metrics)>,
) -> Result<Response, StoreError> {
    Ok(match request {
        Request::OpsSince {
            have,
            cursor,
            limit,
            range,
        } => {
            let all = range.unwrap_or(AuthorRange::ALL);
            if store.needs_snapshot_in(&have, &all) {
                Response::SnapshotRequired
            } else {
                let limit = (limit as usize).clamp(1, PAGE_SIZE);
                // What the requester lacks, for its progress: on the first page, bounded.
                let server = if cursor.position.is_none() {
                    let mine = store.version_vector().within(&all);
                    mine.authors
                        .iter()
                        .filter(|(a, v)| v.contiguous > have.contiguous(a))
                        .take(SERVER_AUTHORS_CAP)
                        .map(|(a, v)| (*a, v.contiguous))
                        .collect()
                } else {
                    Default::default()
                };
                let page = match last_page {
                    None => store.ops_since_in(&have, &all, &cursor, limit).await?,
                    Some((last, metrics)) => {
                        let mut last = last.lock().await;
                        let key = (have, all, cursor, limit, store.version_vector());
                        if last.key.as_ref() == Some(&key) {
                            metrics.pages_reused.inc();
                        } else {
                            last.key = None;
                            last.page = store.ops_since_in(&key.0, &all, &key.2, limit).await?;
                            last.key = Some(key);
                        }
                        last.page.clone()
                    }
                };
                Response::Ops { page, server }
            }
        }
        Request::SnapshotProofs { after } => {
            let (proofs, next) = store.snapshot_proofs_page(after, MAX_PAGE_BYTES).await?;
            Response::SnapshotProofs { proofs, next }
        }
        Request::Snapshot {
            position,
            limit,
            resume,
        } => {
            let limit = (limit as usize).clamp(1, PAGE_SIZE);
            // The proofs were fetched before this first page (see `Request::SnapshotProofs`),
            // so its rows hold the effect of every op they cover.
            let first = position.is_none() || resume;
            let total_rows = if first {
                let mut total = 0;
                for def in store.registry().iter() {
                    total += store.count_rows(&def.name).await?;
                }
                Some(total)
            } else {
                None
            };
            let (rows, next) = store
                .snapshot_page_within(position.as_ref(), limit, MAX_PAGE_BYTES)
                .await?;
            Response::Snapshot {
                rows,
                next,
                total_rows,
                schema: first.then(|| store.registry().schema_version()),
            }
        }
        // Answered before a request reaches the store (see `Server::serve`).
        Request::Hello { .. } | Request::Join { .. } => {
            Response::Error("not served here".to_owned())
        }
        Request::Fingerprints => Response::Fingerprints(store.resource_fingerprints().await?),
        Request::Range { resource, prefix } => {
            Response::Range(store.range(&resource, &prefix).await?)
        }
        Request::Rows { resource, uuids } => {
            if uuids.len() > murmur_store::MAX_ROWS_ASKED {
                return Err(StoreError::Invalid(format!(
                    "{} rows asked for, at most {} at once",
                    uuids.len(),
                    murmur_store::MAX_ROWS_ASKED
                )));
            }
            let (rows, looked) = store.rows_by_uuid(&resource, &uuids).await?;
            Response::Rows {
                rows,
                looked: looked as u32,
            }
        }
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn refusals_name_their_metric_label_and_tell_the_peer_why() {
        let busy = RequestRejection::Busy;
        assert_eq!(
            (busy.label(), busy.to_string().as_str()),
            ("busy", "busy: too many requests, try again")
        );
        let bad = RequestRejection::BadRequest(StoreError::UnknownResource("nope".into()));
        assert_eq!(bad.label(), "bad_request");
        assert_eq!(
            bad.to_string(),
            StoreError::UnknownResource("nope".into()).to_string()
        );
    }

    #[tokio::test]
    async fn a_page_asked_for_again_is_served_without_a_read_until_the_log_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = murmur_store::StoreOptions::new(
            dir.path().join("lib.db"),
            libp2p::identity::ed25519::Keypair::generate(),
        );
        o.durability = murmur_store::Durability::Normal;
        let store = Store::open(o).await.unwrap();
        let tag = |n: &str| {
            let mut m = serde_json::Map::new();
            m.insert("name".into(), n.into());
            m
        };
        for n in ["a", "b", "c"] {
            store.create_shared("tags", None, tag(n)).await.unwrap();
        }
        let (last, metrics) = (tokio::sync::Mutex::new(LastPage::default()), Metrics::new());
        let ask = |cursor: OpsCursor| Request::OpsSince {
            have: VersionVector::default(),
            cursor,
            limit: 2,
            range: None,
        };
        let ops = |r: Response| match r {
            Response::Ops { page, .. } => page,
            other => panic!("{other:?}"),
        };
        let serve = |r| serve_request_with(&store, r, Some((&last, &metrics)));

        let first = ops(serve(ask(OpsCursor::default())).await.unwrap());
        assert_eq!(first.changes.len(), 2);
        assert_eq!(metrics.pages_reused.get(), 0);
        let again = ops(serve(ask(OpsCursor::default())).await.unwrap());
        assert_eq!((again, metrics.pages_reused.get()), (first.clone(), 1));
        // Another page is read, and replaces the one kept.
        let next = ops(serve(ask(first.next.clone().unwrap())).await.unwrap());
        assert_eq!(next.changes.len(), 1);
        assert_eq!(metrics.pages_reused.get(), 1);
        // A new op here: the same request is read again, and sees it.
        store.create_shared("tags", None, tag("d")).await.unwrap();
        let after = ops(serve(ask(first.next.clone().unwrap())).await.unwrap());
        assert_eq!(after.changes.len(), 2);
        assert_eq!(metrics.pages_reused.get(), 1);
        let fresh = ops(serve_request(&store, ask(first.next.unwrap()))
            .await
            .unwrap());
        assert_eq!(after, fresh);
        store.close().await;
    }
}
