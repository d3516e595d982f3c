//! The sync loop: bridges the swarm's events into the store and the store's new ops onto
//! the swarm.
//!
//! - Local writes are committed by the API, then handed here and published on gossip.
//! - Incoming gossip is decoded, checked (authorship, schema) and applied in batches; a gap
//!   in an author's sequence, an owned batch announced by its header, or a peer that
//!   announces ops this node lacks, starts a pull from that peer.
//! - A pull (catch-up) asks the peer for the ops this node lacks, page by page, third
//!   parties' ops included; a node behind the peer's horizon first takes a snapshot.
//! - Every node announces its version vector periodically: it is the heartbeat of the
//!   client pool, the input of pruning, and what makes lost gossip visible.
//!
//! One actor owns the peer table; pulls and served requests run in tasks of their own,
//! bounded by [`PULLS_CAP`] and [`SERVE_CAP`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use murmur_p2p::{Acceptance, Discovery, Event, Handle, Responder};
use murmur_store::validate::{MAX_SEQ, validate_op};
use murmur_store::wire::{from_cbor, to_cbor};
use murmur_store::{
    ApplyReport, Change, Op, OpsCursor, OpsPage, Registry, RowEvent, Store, StoreError,
    VersionVector,
};
use serde::Serialize;
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};
use uuid::Uuid;

use crate::identity::client_uuid;
use crate::metrics::Metrics;
use crate::protocol::{
    GOSSIP_BYTES_CAP, GOSSIP_OPS_CAP, Gossip, PAGE_SIZE, Request, Response, VV_EXTRA_CAP,
};

/// The network handle's type for murmur's messages.
pub type Net = Handle<Request, Response>;
/// The network's events.
pub type NetEvent = Event<Request, Response>;

/// Queue of committed local ops waiting to be published.
pub const PUBLISH_CAP: usize = 1024;
/// Pulls running at once.
pub const PULLS_CAP: usize = 4;
/// Requests served at once; more are refused with "busy".
pub const SERVE_CAP: usize = 8;
/// Gossip events handled before their ops are applied in one transaction.
const GOSSIP_BATCH_CAP: usize = 256;
/// Largest gossip message accepted.
const GOSSIP_DECODE_CAP: usize = 1024 * 1024;
/// Most authors a version announcement may list (each of `contiguous` and `horizon`).
pub const VERSIONS_AUTHORS_CAP: usize = 4096;
/// Largest response accepted.
pub const RESPONSE_DECODE_CAP: usize = 16 * 1024 * 1024;

/// Progress of a long piece of work, shown in `/v1/status` and `murmur status`.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// The peer it runs with.
    pub peer_id: String,
    /// "catch-up" or "snapshot".
    pub kind: &'static str,
    /// Items (ops, owned rows or snapshot rows) done.
    pub done: u64,
    /// Items expected (an estimate for a catch-up).
    pub total: u64,
}

/// What the rest of the node sees of a peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    /// Peer id.
    pub peer_id: String,
    /// Its client UUID.
    pub client_uuid: Uuid,
    /// Address of the connection.
    pub address: String,
    /// How it was found: "mdns", "configured" or "inbound".
    pub discovery: &'static str,
}

/// State shared with the API.
#[derive(Default)]
pub struct Shared {
    /// Connected peers.
    pub peers: Mutex<BTreeMap<PeerId, PeerView>>,
    /// Running catch-ups and snapshots.
    pub progress: Mutex<BTreeMap<String, Progress>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The API's handle on the sync loop.
#[derive(Clone)]
pub struct SyncHandle {
    publish: mpsc::Sender<Vec<Op>>,
}

impl SyncHandle {
    /// Queues committed ops for gossip. They are durable already: if gossip loses them,
    /// catch-up delivers them.
    pub async fn publish(&self, ops: Vec<Op>) {
        if self.publish.send(ops).await.is_err() {
            debug!("sync loop stopped; ops stay in the log for catch-up");
        }
    }
}

struct PeerState {
    client: Uuid,
    pulling: bool,
    pull_again: bool,
}

/// Options of the sync loop.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// How often to announce the version vector.
    pub versions_interval: Duration,
    /// How often to prune.
    pub prune_interval: Duration,
    /// When a client counts as stale.
    pub stale_after: Duration,
    /// Test only: faults to inject (changeable at run time).
    #[cfg(feature = "fault-injection")]
    pub faults: Arc<crate::fault::FaultInjection>,
}

/// The sync actor.
pub struct SyncLoop {
    store: Store,
    net: Net,
    events: mpsc::Receiver<NetEvent>,
    publish: mpsc::Receiver<Vec<Op>>,
    row_events: broadcast::Sender<RowEvent>,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    options: SyncOptions,
    peers: HashMap<PeerId, PeerState>,
    pulls: JoinSet<(PeerId, Result<PullSummary, PullError>)>,
    serving: Arc<Semaphore>,
    serve_tasks: JoinSet<()>,
    /// The last page of ops served (see [`LastPage`]).
    last_page: Arc<tokio::sync::Mutex<LastPage>>,
    /// Announced contiguous seqs per author, highest seen from any peer (for sync lag).
    announced: BTreeMap<Uuid, u64>,
}

impl SyncLoop {
    /// Builds the loop and the API's handle on it.
    pub fn new(
        store: Store,
        net: Net,
        events: mpsc::Receiver<NetEvent>,
        row_events: broadcast::Sender<RowEvent>,
        metrics: Arc<Metrics>,
        shared: Arc<Shared>,
        options: SyncOptions,
    ) -> (SyncLoop, SyncHandle) {
        let (tx, rx) = mpsc::channel(PUBLISH_CAP);
        (
            SyncLoop {
                store,
                net,
                events,
                publish: rx,
                row_events,
                metrics,
                shared,
                options,
                peers: HashMap::new(),
                pulls: JoinSet::new(),
                serving: Arc::new(Semaphore::new(SERVE_CAP)),
                serve_tasks: JoinSet::new(),
                last_page: Arc::default(),
                announced: BTreeMap::new(),
            },
            SyncHandle { publish: tx },
        )
    }

    /// Runs until `shutdown` turns true. Local work first, then the network, then timers.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut versions = tokio::time::interval(self.options.versions_interval);
        let mut prune = tokio::time::interval(self.options.prune_interval);
        versions.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(ops) = self.publish.recv() => self.handle_publish(ops).await,
                ev = self.events.recv() => match ev {
                    Some(ev) => self.handle_net_events(ev).await,
                    None => break,
                },
                Some(done) = self.pulls.join_next(), if !self.pulls.is_empty() => self.handle_pull_done(done),
                Some(_) = self.serve_tasks.join_next(), if !self.serve_tasks.is_empty() => {},
                _ = versions.tick() => self.announce_versions().await,
                _ = prune.tick() => self.prune().await,
            }
        }
        // Drain what the API committed before shutdown so it is published if possible.
        while let Ok(ops) = self.publish.try_recv() {
            self.handle_publish(ops).await;
        }
        self.pulls.abort_all();
        self.serve_tasks.abort_all();
    }

    async fn handle_publish(&mut self, mut ops: Vec<Op>) {
        while let Ok(more) = self.publish.try_recv() {
            ops.extend(more);
            if ops.len() >= GOSSIP_OPS_CAP * 4 {
                break;
            }
        }
        let mut chunk: Vec<Op> = Vec::new();
        let mut bytes = 0;
        for op in ops {
            let size = to_cbor(&op).len();
            if !chunk.is_empty()
                && (chunk.len() >= GOSSIP_OPS_CAP || bytes + size > GOSSIP_BYTES_CAP)
            {
                self.publish_ops(std::mem::take(&mut chunk)).await;
                bytes = 0;
            }
            bytes += size;
            chunk.push(op);
        }
        if !chunk.is_empty() {
            self.publish_ops(chunk).await;
        }
    }

    async fn publish_ops(&mut self, ops: Vec<Op>) {
        let n = ops.len();
        match self.net.publish(to_cbor(&Gossip::Ops(ops))).await {
            Ok(outcome) => debug!(ops = n, ?outcome, "published"),
            // Not fatal: the ops are in the log and catch-up delivers them.
            Err(e) => debug!(ops = n, "publish failed, catch-up will deliver: {e}"),
        }
    }

    async fn handle_net_events(&mut self, first: NetEvent) {
        let mut pending: Vec<(PeerId, Vec<Op>)> = Vec::new();
        let mut ev = Some(first);
        let mut handled = 0;
        while let Some(e) = ev.take() {
            self.handle_net_event(e, &mut pending).await;
            handled += 1;
            if handled < GOSSIP_BATCH_CAP
                && let Ok(next) = self.events.try_recv()
            {
                ev = Some(next);
            }
        }
        if !pending.is_empty() {
            self.apply_gossip(pending).await;
        }
    }

    async fn handle_net_event(&mut self, ev: NetEvent, pending: &mut Vec<(PeerId, Vec<Op>)>) {
        match ev {
            Event::PeerConnected {
                peer_id,
                address,
                discovery,
            } => self.on_connected(peer_id, address, discovery).await,
            Event::PeerDisconnected { peer_id } => {
                self.peers.remove(&peer_id);
                lock(&self.shared.peers).remove(&peer_id);
                self.metrics.peers_connected.set(self.peers.len() as i64);
                info!(%peer_id, "peer disconnected");
            }
            Event::Gossip {
                source,
                propagation_source,
                message_id,
                data,
            } => {
                self.metrics.gossip_received.inc();
                #[cfg(feature = "fault-injection")]
                if self.options.faults.drop_gossip() {
                    self.metrics.gossip_dropped.inc();
                    self.net
                        .report_validation(message_id, propagation_source, Acceptance::Ignore)
                        .await;
                    return;
                }
                let verdict = self.check_gossip(source, &data);
                match verdict {
                    Ok(Gossip::Ops(ops)) => {
                        self.net
                            .report_validation(message_id, propagation_source, Acceptance::Accept)
                            .await;
                        pending.push((propagation_source, ops));
                    }
                    Ok(Gossip::Versions { contiguous, .. }) => {
                        self.net
                            .report_validation(message_id, propagation_source, Acceptance::Accept)
                            .await;
                        self.on_versions(source, contiguous).await;
                    }
                    Err(reason) => {
                        debug!(%source, "gossip rejected: {reason}");
                        self.net
                            .report_validation(message_id, propagation_source, Acceptance::Reject)
                            .await;
                    }
                }
            }
            Event::InboundRequest {
                peer_id,
                request,
                responder,
            } => self.serve(peer_id, request, responder).await,
            // A peer that just subscribed may have missed what was published a moment ago.
            Event::Subscribed { peer_id } => self.start_pull(peer_id),
            Event::ConnectionFailed {
                peer_id,
                address,
                reason,
                probable_key_mismatch,
            } => {
                if probable_key_mismatch {
                    warn!(
                        ?peer_id,
                        ?address,
                        "connection failed, probably another library's secret: {reason}"
                    );
                } else {
                    debug!(?peer_id, ?address, "connection failed: {reason}");
                }
            }
            _ => {}
        }
    }

    /// Decodes and checks a gossip message (see [`check_gossip_message`]) and counts a
    /// refusal under its reason.
    fn check_gossip(&self, source: PeerId, data: &[u8]) -> Result<Gossip, String> {
        check_gossip_message(self.store.registry(), client_uuid(&source), data).map_err(
            |(label, why)| {
                self.metrics.reject(label);
                why
            },
        )
    }

    async fn apply_gossip(&mut self, pending: Vec<(PeerId, Vec<Op>)>) {
        let mut from: HashMap<Uuid, PeerId> = HashMap::new();
        let mut changes = Vec::new();
        for (peer, ops) in pending {
            for op in ops {
                from.insert(op.author, peer);
                changes.push(Change::Op(op));
            }
        }
        let authors: Vec<Uuid> = from.keys().copied().collect();
        match self.store.apply(changes).await {
            Ok(report) => {
                self.account(&report, "gossip");
                // An owned batch announced by its header, or a gap: pull from who sent it.
                let mut pull_from: Vec<PeerId> = Vec::new();
                for op in &report.needs_rows {
                    pull_from.extend(from.get(&op.author));
                }
                let vv = self.store.version_vector();
                for a in authors {
                    if vv.authors.get(&a).is_some_and(|v| !v.extra.is_empty()) {
                        pull_from.extend(from.get(&a));
                    }
                }
                if report
                    .rejected
                    .iter()
                    .any(|(_, r, _)| *r == murmur_store::RejectReason::Drift)
                {
                    debug!(
                        "ops beyond the drift bound: the next announcement will pull them again"
                    );
                }
                pull_from.sort();
                pull_from.dedup();
                for p in pull_from {
                    self.start_pull(p);
                }
            }
            Err(e) => warn!("applying gossip failed: {e}"),
        }
    }

    fn account(&self, report: &ApplyReport, source: &str) {
        account(&self.metrics, &self.row_events, report, source);
    }

    async fn on_connected(&mut self, peer_id: PeerId, address: Multiaddr, discovery: Discovery) {
        let client = client_uuid(&peer_id);
        let how = match discovery {
            Discovery::Mdns => "mdns",
            Discovery::Configured => "configured",
            Discovery::Inbound => "inbound",
        };
        info!(%peer_id, %client, %address, discovery = how, "peer connected");
        lock(&self.shared.peers).insert(
            peer_id,
            PeerView {
                peer_id: peer_id.to_string(),
                client_uuid: client,
                address: address.to_string(),
                discovery: how,
            },
        );
        self.peers.entry(peer_id).or_insert(PeerState {
            client,
            pulling: false,
            pull_again: false,
        });
        self.metrics.peers_connected.set(self.peers.len() as i64);
        if let Err(e) = self
            .store
            .touch_client(client, Some(&peer_id.to_string()))
            .await
        {
            warn!("client pool: {e}");
        }
        self.start_pull(peer_id);
    }

    async fn on_versions(&mut self, source: PeerId, contiguous: BTreeMap<Uuid, u64>) {
        let client = client_uuid(&source);
        if let Err(e) = self
            .store
            .touch_client(client, Some(&source.to_string()))
            .await
        {
            warn!("client pool: {e}");
        }
        if let Err(e) = self.store.record_client_version(client, &contiguous).await {
            warn!("client pool: {e}");
        }
        let mine = self.store.version_vector();
        let mut behind = false;
        for (a, s) in &contiguous {
            let cur = self.announced.entry(*a).or_default();
            *cur = (*cur).max(*s);
            if mine.contiguous(a) < *s {
                behind = true;
            }
        }
        self.update_lag();
        if behind && self.peers.contains_key(&source) {
            self.start_pull(source);
        }
    }

    fn update_lag(&self) {
        let mine = self.store.version_vector();
        let lag: u64 = self
            .announced
            .iter()
            .map(|(a, s)| s.saturating_sub(mine.contiguous(a)))
            .fold(0u64, u64::saturating_add);
        self.metrics.sync_lag_ops.set(lag as i64);
    }

    async fn announce_versions(&mut self) {
        let vv = self.store.version_vector();
        let msg = Gossip::Versions {
            contiguous: vv.contiguous_map(),
            horizon: self.store.horizon(),
            sent_at_ms: chrono::Utc::now().timestamp_millis().max(0) as u64,
        };
        if let Err(e) = self.net.publish(to_cbor(&msg)).await {
            debug!("announce failed: {e}");
        }
        self.update_lag();
        match self.store.pending_operations().await {
            Ok(n) => {
                self.metrics.pending_operations.set(n as i64);
            }
            Err(e) => warn!("cannot count the log: {e}"),
        }
    }

    async fn prune(&mut self) {
        let horizon = match self.store.prune_horizon(self.options.stale_after).await {
            Ok(h) => h,
            Err(e) => return warn!("cannot compute the pruning horizon: {e}"),
        };
        match self.store.prune(&horizon).await {
            Ok(0) => {}
            Ok(n) => {
                self.metrics.ops_pruned.inc_by(n);
                info!(ops = n, "pruned the log");
            }
            Err(e) => warn!("pruning failed: {e}"),
        }
    }

    fn start_pull(&mut self, peer: PeerId) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.pulling {
            state.pull_again = true;
            return;
        }
        if self.pulls.len() >= PULLS_CAP {
            state.pull_again = true;
            return;
        }
        state.pulling = true;
        state.pull_again = false;
        let puller = Puller {
            store: self.store.clone(),
            net: self.net.clone(),
            peer,
            client: state.client,
            metrics: self.metrics.clone(),
            row_events: self.row_events.clone(),
            shared: self.shared.clone(),
        };
        self.pulls
            .spawn(async move { (peer, puller.run().await) }.instrument(info_span!("pull", %peer)));
    }

    fn handle_pull_done(
        &mut self,
        done: Result<(PeerId, Result<PullSummary, PullError>), tokio::task::JoinError>,
    ) {
        let Ok((peer, result)) = done else { return };
        match result {
            Ok(s) if s.items > 0 => {
                info!(%peer, ops = s.ops, rows = s.items - s.ops, snapshot = s.snapshot, ms = s.elapsed.as_millis() as u64, "caught up")
            }
            Ok(_) => debug!(%peer, "already up to date"),
            Err(e) => debug!(%peer, "pull failed: {e}"),
        }
        self.update_lag();
        let again = self.peers.get_mut(&peer).map(|s| {
            s.pulling = false;
            s.pull_again
        });
        if again == Some(true) {
            self.start_pull(peer);
        }
        // Pulls that waited for a free slot.
        let waiting: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.pull_again && !s.pulling)
            .map(|(p, _)| *p)
            .collect();
        for p in waiting {
            self.start_pull(p);
        }
    }

    async fn serve(&mut self, peer: PeerId, request: Request, responder: Responder<Response>) {
        let Ok(permit) = self.serving.clone().try_acquire_owned() else {
            self.metrics.reject("busy");
            let _ = responder
                .respond(Response::Error("busy: too many requests, try again".into()))
                .await;
            return;
        };
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let last_page = self.last_page.clone();
        self.serve_tasks.spawn(
            async move {
                let resp =
                    match serve_request_with(&store, request, Some((&last_page, &metrics))).await {
                        Ok(resp) => resp,
                        // A request naming what does not exist (a resource, a position): the
                        // peer's fault, counted, not a warning.
                        Err(e) if e.is_bad_input() => {
                            metrics.reject("bad_request");
                            debug!("refused a request: {e}");
                            Response::Error(e.to_string())
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
}

/// Decodes and checks a gossip message signed by `author` without side effects: size and
/// CBOR, the number of ops, that every op is the signer's own, each op's schema, and the
/// bounds of a version announcement. A refusal carries its metric label and the reason.
///
/// Timestamps are not checked here: an op far in the future is refused by the store's drift
/// check when applied (counted as `drift`, no penalty: an honest clock can be wrong), and an
/// op at time 0 is applied as a very old write that loses every last-writer-wins merge.
pub fn check_gossip_message(
    registry: &Registry,
    author: Uuid,
    data: &[u8],
) -> Result<Gossip, (&'static str, String)> {
    let msg: Gossip = from_cbor(data, GOSSIP_DECODE_CAP, "gossip message")
        .map_err(|e| ("decode", e.to_string()))?;
    match &msg {
        Gossip::Ops(ops) => {
            if ops.len() > GOSSIP_OPS_CAP {
                return Err((
                    "oversized",
                    format!("{} ops in one message, limit {GOSSIP_OPS_CAP}", ops.len()),
                ));
            }
            for op in ops {
                if op.author != author {
                    return Err((
                        "forged_author",
                        format!(
                            "op {} claims author {} but was signed by {author}",
                            op.id(),
                            op.author
                        ),
                    ));
                }
                validate_op(registry, op).map_err(|(reason, why)| (reason.label(), why))?;
            }
        }
        Gossip::Versions {
            contiguous,
            horizon,
            ..
        } => {
            if contiguous.len() > VERSIONS_AUTHORS_CAP || horizon.len() > VERSIONS_AUTHORS_CAP {
                return Err((
                    "oversized",
                    format!(
                        "version announcement of {} and {} authors, limit {VERSIONS_AUTHORS_CAP}",
                        contiguous.len(),
                        horizon.len()
                    ),
                ));
            }
            if let Some((a, s)) = contiguous
                .iter()
                .chain(horizon)
                .find(|(_, s)| **s > MAX_SEQ)
            {
                return Err((
                    "malformed",
                    format!("version announcement with seq {s} for {a}, above {MAX_SEQ}"),
                ));
            }
        }
    }
    Ok(msg)
}

fn account(
    metrics: &Metrics,
    row_events: &broadcast::Sender<RowEvent>,
    report: &ApplyReport,
    source: &str,
) {
    metrics.applied(source, report.applied);
    metrics.rows_applied.inc_by(report.rows as u64);
    metrics.ops_duplicate.inc_by(report.duplicates as u64);
    for (id, reason, why) in &report.rejected {
        metrics.reject(reason.label());
        debug!(op = %id, "rejected: {why}");
    }
    for e in &report.events {
        // No subscriber is fine.
        let _ = row_events.send(e.clone());
    }
}

/// The last page of ops a node served, with what it was read for: the requester's version
/// vector, the cursor, the limit, and this node's version vector before the read. Peers
/// that pull the same ops at once (every peer of a new owned batch asks for the same pages
/// of its rows) get the page read and decoded once; any new op here changes the version
/// vector, so a kept page is never served for a log that has changed since.
#[derive(Default)]
struct LastPage {
    key: Option<(VersionVector, OpsCursor, usize, VersionVector)>,
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
        } => {
            if store.needs_snapshot(&have) {
                Response::SnapshotRequired
            } else {
                let limit = (limit as usize).clamp(1, PAGE_SIZE);
                let page = match last_page {
                    None => store.ops_since(&have, &cursor, limit).await?,
                    Some((last, metrics)) => {
                        let mut last = last.lock().await;
                        let key = (have, cursor, limit, store.version_vector());
                        if last.key.as_ref() == Some(&key) {
                            metrics.pages_reused.inc();
                        } else {
                            last.key = None;
                            last.page = store.ops_since(&key.0, &key.1, limit).await?;
                            last.key = Some(key);
                        }
                        last.page.clone()
                    }
                };
                Response::Ops {
                    page,
                    server: store.version_vector().contiguous_map(),
                }
            }
        }
        Request::Snapshot { position, limit } => {
            let limit = (limit as usize).clamp(1, PAGE_SIZE);
            // The version vector is read before the first page, so the snapshot covers it.
            let (covers, total_rows) = if position.is_none() {
                let vv = store.version_vector();
                let mut total = 0;
                for def in store.registry().iter() {
                    total += store.count_rows(&def.name).await?;
                }
                (Some(vv), Some(total))
            } else {
                (None, None)
            };
            let (rows, next) = store.snapshot_page(position.as_ref(), limit).await?;
            Response::Snapshot {
                rows,
                next,
                covers,
                total_rows,
            }
        }
    })
}

/// Why a pull stopped.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The request failed.
    #[error("request failed: {0}")]
    Request(String),
    /// The peer refused.
    #[error("peer refused: {0}")]
    Refused(String),
    /// The peer answered something unexpected.
    #[error("unexpected response")]
    Unexpected,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a pull did.
#[derive(Debug, Default)]
pub struct PullSummary {
    /// Ops applied.
    pub ops: u64,
    /// Items received (ops, rows, snapshot rows).
    pub items: u64,
    /// Whether a snapshot was imported.
    pub snapshot: bool,
    /// How long it took.
    pub elapsed: Duration,
}

/// One catch-up with one peer.
struct Puller {
    store: Store,
    net: Net,
    peer: PeerId,
    client: Uuid,
    metrics: Arc<Metrics>,
    row_events: broadcast::Sender<RowEvent>,
    shared: Arc<Shared>,
}

impl Puller {
    async fn run(self) -> Result<PullSummary, PullError> {
        let key = self.peer.to_string();
        let res = self.pull().await;
        lock(&self.shared.progress).remove(&key);
        if res.is_ok() {
            self.metrics.catchups.inc();
            if let Err(e) = self.store.mark_synchronized(self.client).await {
                warn!("client pool: {e}");
            }
        }
        res
    }

    fn progress(&self, kind: &'static str, done: u64, total: u64) {
        let key = self.peer.to_string();
        lock(&self.shared.progress).insert(
            key.clone(),
            Progress {
                peer_id: key,
                kind,
                done,
                total: total.max(done),
            },
        );
    }

    async fn request(&self, req: Request) -> Result<Response, PullError> {
        match self.net.request(self.peer, req).await {
            Ok(Response::Error(e)) => Err(PullError::Refused(e)),
            Ok(r) => Ok(r),
            Err(e) => Err(PullError::Request(e.to_string())),
        }
    }

    fn ops_request(&self, cursor: OpsCursor) -> (VersionVector, Request) {
        let have = self.store.version_vector().truncated(VV_EXTRA_CAP);
        let req = Request::OpsSince {
            have: have.clone(),
            cursor,
            limit: PAGE_SIZE as u32,
        };
        (have, req)
    }

    /// Pulls what the peer has and this node lacks. Pages are pipelined: the request for
    /// page n+1 (its cursor is in page n) is in flight while page n is applied, so the
    /// peer's read and encode and the transfer overlap the local apply.
    async fn pull(&self) -> Result<PullSummary, PullError> {
        let started = Instant::now();
        let mut summary = PullSummary::default();
        let mut total: Option<u64> = None;
        let mut last_log = Instant::now();
        let (mut have, req) = self.ops_request(OpsCursor::default());
        let mut resp = self.request(req).await?;
        loop {
            match resp {
                Response::SnapshotRequired => {
                    if summary.snapshot {
                        // A second snapshot in one pull would loop: stop and retry later.
                        return Err(PullError::Refused(
                            "still behind the horizon after a snapshot".into(),
                        ));
                    }
                    self.snapshot(&mut summary).await?;
                    let (h, req) = self.ops_request(OpsCursor::default());
                    have = h;
                    resp = self.request(req).await?;
                }
                Response::Ops { page, server } => {
                    let total = *total.get_or_insert_with(|| {
                        server
                            .iter()
                            .map(|(a, s)| s.saturating_sub(have.contiguous(a)))
                            .fold(0u64, u64::saturating_add)
                    });
                    let items: u64 = page.changes.iter().map(|c| c.weight() as u64).sum();
                    // The next request carries the version vector from before this page is
                    // applied: the cursor, not the vector, says where the peer resumes, and
                    // anything sent twice is a duplicate, which apply skips.
                    let next = page.next.map(|cursor| self.ops_request(cursor).1);
                    let apply = async {
                        if page.changes.is_empty() {
                            return Ok(None);
                        }
                        self.store.apply(page.changes).await.map(Some)
                    };
                    let fetch = async {
                        match next {
                            Some(req) => Some(self.request(req).await),
                            None => None,
                        }
                    };
                    let (applied, fetched) = tokio::join!(apply, fetch);
                    if let Some(report) = applied? {
                        account(&self.metrics, &self.row_events, &report, "catchup");
                        summary.ops += report.applied as u64;
                        summary.items += items;
                    }
                    self.progress("catch-up", summary.items, total);
                    if total > PAGE_SIZE as u64 && last_log.elapsed() > Duration::from_secs(1) {
                        info!(done = summary.items, total, "catching up");
                        last_log = Instant::now();
                    }
                    match fetched {
                        Some(r) => resp = r?,
                        None => break,
                    }
                }
                _ => return Err(PullError::Unexpected),
            }
        }
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// Imports the peer's state snapshot, page by page, with the next page's request in
    /// flight while a page is imported.
    async fn snapshot(&self, summary: &mut PullSummary) -> Result<(), PullError> {
        info!(peer = %self.peer, "behind the peer's log horizon: taking a state snapshot");
        let request = |position| Request::Snapshot {
            position,
            limit: PAGE_SIZE as u32,
        };
        let mut first = true;
        let mut covers = None;
        let mut total = 0;
        let mut done = 0u64;
        let mut last_log = Instant::now();
        let mut resp = self.request(request(None)).await?;
        loop {
            let Response::Snapshot {
                rows,
                next,
                covers: c,
                total_rows,
            } = resp
            else {
                return Err(PullError::Unexpected);
            };
            if first {
                covers = c;
                total = total_rows.unwrap_or(0);
                first = false;
            }
            done += rows.len() as u64;
            let fetch = async {
                match next {
                    Some(n) => Some(self.request(request(Some(n))).await),
                    None => None,
                }
            };
            let (imported, fetched) = tokio::join!(self.store.import_snapshot_page(rows), fetch);
            imported?;
            self.progress("snapshot", done, total);
            if last_log.elapsed() > Duration::from_secs(1) {
                info!(done, total, "importing snapshot");
                last_log = Instant::now();
            }
            match fetched {
                Some(r) => resp = r?,
                None => break,
            }
        }
        let covers = covers.ok_or(PullError::Unexpected)?;
        self.store.finish_snapshot(&covers).await?;
        self.metrics.snapshots_imported.inc();
        info!(rows = done, "snapshot imported");
        summary.items += done;
        summary.snapshot = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use murmur_store::Method;

    fn op(author: Uuid, seq: u64) -> Op {
        Op {
            author,
            seq,
            time: 1,
            method: Method::SharedDelete,
            resource: "tags".into(),
            uuid: Some(Uuid::from_u128(9)),
            property: None,
            value: None,
            fields: BTreeMap::new(),
            count: None,
        }
    }

    fn check(author: Uuid, msg: &Gossip) -> Result<Gossip, (&'static str, String)> {
        check_gossip_message(&Registry::default_library(), author, &to_cbor(msg))
    }

    #[test]
    fn gossip_ops_must_be_few_and_the_signers_own() {
        let me = Uuid::from_u128(1);
        assert!(check(me, &Gossip::Ops(vec![op(me, 1)])).is_ok());
        let many = (1..=GOSSIP_OPS_CAP as u64 + 1).map(|s| op(me, s)).collect();
        assert_eq!(check(me, &Gossip::Ops(many)).unwrap_err().0, "oversized");
        let forged = Gossip::Ops(vec![op(Uuid::from_u128(2), 1)]);
        assert_eq!(check(me, &forged).unwrap_err().0, "forged_author");
        assert_eq!(
            check(me, &Gossip::Ops(vec![op(me, 0)])).unwrap_err().0,
            "malformed"
        );
        let r = check_gossip_message(&Registry::default_library(), me, b"\xff");
        assert_eq!(r.unwrap_err().0, "decode");
    }

    /// Regression: announcements of `u64::MAX` for a few authors made the lag sum overflow
    /// (a panic in the sync loop in debug builds); they are refused now, and the sums
    /// saturate anyway.
    #[test]
    fn version_announcements_are_bounded() {
        let me = Uuid::from_u128(1);
        let versions = |n: u128, seq: u64| Gossip::Versions {
            contiguous: (0..n).map(|i| (Uuid::from_u128(i + 1), seq)).collect(),
            horizon: BTreeMap::new(),
            sent_at_ms: 0,
        };
        assert!(check(me, &versions(3, 10)).is_ok());
        assert_eq!(
            check(me, &versions(3, u64::MAX)).unwrap_err().0,
            "malformed"
        );
        assert_eq!(
            check(me, &versions(VERSIONS_AUTHORS_CAP as u128 + 1, 1))
                .unwrap_err()
                .0,
            "oversized"
        );
        let total = [u64::MAX, u64::MAX, u64::MAX]
            .into_iter()
            .fold(0u64, u64::saturating_add);
        assert_eq!(total, u64::MAX);
    }

    #[tokio::test]
    async fn a_page_asked_for_again_is_served_without_a_read_until_the_log_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = murmur_store::StoreOptions::new(dir.path().join("lib.db"), Uuid::from_u128(1));
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
