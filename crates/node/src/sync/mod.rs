//! The sync loop: bridges the swarm's events into the store and the store's new ops onto
//! the swarm.
//!
//! - Local writes are published by the commit feed's consumer ([`crate::feed`]), not here;
//!   what this loop applies leaves through the same feed (metrics, row events).
//! - Incoming gossip is decoded, checked (authorship, schema) and applied in batches; a gap
//!   in an author's sequence, an owned batch announced by its header, or a peer that
//!   announces ops this node lacks, starts a pull from that peer.
//! - A pull (catch-up) asks the peer for the ops this node lacks, page by page, third
//!   parties' ops included; a node behind the peer's horizon first takes a snapshot.
//! - Every node announces its version vector periodically, and when a peer subscribes: it
//!   is the heartbeat of the client pool, the input of pruning, and what makes lost gossip
//!   visible. It carries the sender's device binding ([`crate::device`]): a peer id names
//!   one run of a device, and the client pool's bookkeeping for a peer waits until its
//!   binding has been verified (pulls from it need no client and do not wait).
//!
//! One actor ([`SyncLoop`]) owns the schedule: a `biased` `select!` whose arms each call
//! one `handle_*` method. Pulls and served requests run in tasks of their own, bounded by
//! [`PULLS_CAP`] and [`SERVE_CAP`].
//!
//! # Layout
//!
//! - this module: the actor;
//! - `announce`: which part of a large version vector the next announcement carries;
//! - [`gossip`]: decoding and checking gossip ([`check_gossip_message`], [`GossipRejection`]);
//! - [`serve`]: the request server, its permits and its page cache ([`serve_request`]);
//! - [`pull`]: catch-up and snapshot import from one peer ([`PullError`], [`PullSummary`]);
//! - [`peers`]: the table of connected peers, their pull schedule ([`PullState`]) and
//!   progress, which `/v1/status` reads;
//! - [`repair`]: finding where this node and a peer differ by the digest's key ranges,
//!   and repairing it; the digest's background fold.

mod announce;
mod contact;
pub mod gossip;
pub mod peers;
pub mod pull;
pub mod repair;
pub mod serve;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use murmur_p2p::{Acceptance, Discovery, Event, MessageId, Responder};
use murmur_store::proof::Proof;
use murmur_store::wire::to_cbor;
use murmur_store::{Change, Op, Origin, Store};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, info_span, warn};
use uuid::Uuid;

use self::announce::Announcer;
pub use self::announce::VERSIONS_SEND_CAP;
use self::contact::ContactClock;
pub use self::gossip::{GossipRejection, VERSIONS_AUTHORS_CAP, check_gossip_message};
pub use self::peers::{PeerTable, PeerView, PullKind, PullProgress, PullState};
use self::pull::Puller;
pub use self::pull::{PULLS_CAP, PullError, PullSummary, RESPONSE_DECODE_CAP};
use self::serve::Server;
pub use self::serve::{RequestRejection, SERVE_CAP, serve_request};
use murmur_store::members::{Claim, ClaimRefusal, Membership, Standing};
use serde::{Deserialize, Serialize};

use crate::device::DeviceBinding;
use crate::metrics::Metrics;
use crate::protocol::{Gossip, Refusal, Request, Response};
pub use crate::protocol::{Net, NetEvent};

/// Gossip events handled before their ops are applied in one transaction.
const GOSSIP_BATCH_CAP: usize = 256;
/// How often a claim of an invitation not yet accepted is sent again to the peers met
/// (one that does not know the invitation yet may receive it meanwhile).
pub const JOIN_RETRY: Duration = Duration::from_millis(500);

/// Options of the sync loop.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// How often to announce the version vector.
    pub versions_interval: Duration,
    /// How often to prune.
    pub prune_interval: Duration,
    /// How often to compare digests with a settled peer, and repair what differs.
    pub repair_interval: Duration,
    /// When a client counts as stale.
    pub stale_after: Duration,
    /// Test only: faults to inject (changeable at run time).
    #[cfg(feature = "fault-injection")]
    pub faults: Arc<crate::fault::FaultInjection>,
}

/// The sync actor.
pub struct SyncLoop {
    /// The store.
    store: Store,
    /// The network.
    net: Net,
    /// The network's events.
    events: mpsc::Receiver<NetEvent>,
    /// Metrics.
    metrics: Arc<Metrics>,
    /// Intervals, the stale bound and the test-only gossip drop rate.
    options: SyncOptions,
    /// The connected peers, shared with `/v1/status` and the pulls.
    peers: PeerTable,
    /// The pulls running, at most [`PULLS_CAP`].
    pulls: JoinSet<(PeerId, Result<PullSummary, PullError>)>,
    /// Held by the pull whose snapshot import runs: one at a time.
    snapshot_turn: Arc<tokio::sync::Mutex<()>>,
    /// The repair round running, at most one.
    repairs: JoinSet<(PeerId, Result<repair::RepairSummary, PullError>)>,
    /// Repair rounds started, to take settled peers in turn.
    repair_turn: usize,
    /// The request server.
    server: Server,
    /// Announced contiguous seqs per author, highest seen from any peer (for sync lag).
    announced: BTreeMap<Uuid, u64>,
    /// This node's device binding, sent in every announcement.
    device: DeviceBinding,
    /// Time in contact with peers, which judges which clients are stale.
    contact: ContactClock,
    /// Which part of the version vector the next announcement carries.
    announcer: Announcer,
    /// The membership as it changes: peers of devices removed are blocked, those admitted
    /// heard again.
    members: watch::Receiver<Arc<Membership>>,
    /// This device's claim of an invitation, until a member accepts it.
    join: Option<Claim>,
    /// Where the claim stands, for the node's status.
    join_status: watch::Sender<JoinStatus>,
    /// Claims being sent, at most one per connected peer.
    joins: JoinSet<(PeerId, Result<Response, String>)>,
}

/// Where this device's claim of an invitation stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum JoinStatus {
    /// No claim (this device was a member, or joined with the secret only).
    None,
    /// Sent to the members met so far, not accepted yet.
    Pending,
    /// A member admitted this device.
    Joined,
    /// Refused for good: why.
    Failed(String),
}

impl SyncLoop {
    /// Builds the loop; `device` binds this run's peer id to the store's device key;
    /// `join` is this device's claim of an invitation, sent to the peers it meets until
    /// one accepts it (its progress goes to `join_status`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        net: Net,
        events: mpsc::Receiver<NetEvent>,
        metrics: Arc<Metrics>,
        peers: PeerTable,
        device: DeviceBinding,
        options: SyncOptions,
        join: Option<Claim>,
        join_status: watch::Sender<JoinStatus>,
    ) -> SyncLoop {
        if join.is_some() {
            join_status.send_replace(JoinStatus::Pending);
        }
        SyncLoop {
            members: store.watch_members(),
            join,
            join_status,
            joins: JoinSet::new(),
            server: Server::new(store.clone(), metrics.clone(), peers.clone(), net.clone()),
            store,
            net,
            events,
            metrics,
            options,
            peers,
            pulls: JoinSet::new(),
            snapshot_turn: Arc::default(),
            repairs: JoinSet::new(),
            repair_turn: 0,
            announced: BTreeMap::new(),
            device,
            contact: ContactClock::default(),
            announcer: Announcer::default(),
        }
    }

    /// Runs until `shutdown` turns true: the network first, then finished work, then timers.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut versions = tokio::time::interval(self.options.versions_interval);
        let mut prune = tokio::time::interval(self.options.prune_interval);
        let mut repair = tokio::time::interval(self.options.repair_interval);
        versions.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut join_retry = tokio::time::interval(JOIN_RETRY);
        join_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut folding = JoinSet::new();
        folding
            .spawn(repair::fold_in_background(self.store.clone()).instrument(info_span!("fold")));
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                ev = self.events.recv() => match ev {
                    Some(ev) => self.handle_net_events(ev).await,
                    None => break,
                },
                Some(done) = self.pulls.join_next(), if !self.pulls.is_empty() => self.handle_pull_done(done).await,
                Some(done) = self.repairs.join_next(), if !self.repairs.is_empty() => self.handle_repair_done(done),
                Some(done) = self.joins.join_next(), if !self.joins.is_empty() => self.handle_join_done(done).await,
                Ok(()) = self.members.changed() => self.handle_members_changed().await,
                // A served request ended; its permit was released in its task.
                () = self.server.join_next(), if !self.server.is_idle() => {},
                _ = versions.tick() => self.handle_announce().await,
                _ = prune.tick() => self.handle_prune().await,
                _ = repair.tick() => self.handle_repair_tick(),
                _ = join_retry.tick(), if self.join.is_some() && self.joins.is_empty() => self.send_claims(),
            }
        }
        self.joins.abort_all();
        folding.abort_all();
        self.repairs.abort_all();
        self.pulls.abort_all();
        self.server.abort_all();
    }

    /// Handles `first` and the events already queued behind it (up to
    /// [`GOSSIP_BATCH_CAP`]), then applies their gossiped ops in one batch.
    async fn handle_net_events(&mut self, first: NetEvent) {
        let mut pending: Vec<(PeerId, Vec<Op>, Vec<Proof>)> = Vec::new();
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

    async fn handle_net_event(
        &mut self,
        ev: NetEvent,
        pending: &mut Vec<(PeerId, Vec<Op>, Vec<Proof>)>,
    ) {
        match ev {
            Event::PeerConnected {
                peer_id,
                address,
                discovery,
            } => self.on_connected(peer_id, address, discovery).await,
            Event::PeerDisconnected { peer_id } => self.on_disconnected(peer_id).await,
            Event::Gossip {
                source,
                propagation_source,
                message_id,
                data,
            } => {
                self.on_gossip(source, propagation_source, message_id, data, pending)
                    .await
            }
            Event::InboundRequest {
                peer_id,
                request,
                responder,
            } => self.on_request(peer_id, request, responder).await,
            // A peer that just subscribed may have missed what was published a moment ago,
            // and learns which device this node is from an announcement.
            Event::Subscribed { peer_id } => {
                self.start_pull(peer_id);
                self.announce().await;
            }
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

    /// A gossip message: checked and reported to gossipsub; its ops join `pending`, an
    /// announcement is handled at once.
    async fn on_gossip(
        &mut self,
        source: PeerId,
        propagation_source: PeerId,
        message_id: MessageId,
        data: Vec<u8>,
        pending: &mut Vec<(PeerId, Vec<Op>, Vec<Proof>)>,
    ) {
        self.metrics.gossip_received.inc();
        #[cfg(feature = "fault-injection")]
        if self.options.faults.drop_gossip() {
            self.metrics.gossip_dropped.inc();
            self.net
                .report_validation(message_id, propagation_source, Acceptance::Ignore)
                .await;
            return;
        }
        let verdict = self.check_gossip(&data);
        match verdict {
            // Ops from a peer that has not welcomed this node yet (its `Hello` is on its way):
            // left to the catch-up that follows, so that a node that is not a member takes
            // nothing from gossip (gossipsub may replay recent messages to a new peer).
            Ok(Gossip::Ops { .. }) if !self.peers.welcomed(&propagation_source) => {
                debug!(peer = %propagation_source, "gossip before the peer's welcome: left to catch-up");
                self.net
                    .report_validation(message_id, propagation_source, Acceptance::Ignore)
                    .await;
            }
            Ok(Gossip::Ops { ops, proofs }) => {
                // An op beyond the drift bound is not forwarded (an honest clock can be
                // wrong, so no penalty): Ignore. Its ops are still applied here, where the
                // store refuses (and counts) the drifted ones, which catch-up fetches again.
                let clock = self.store.clock();
                let verdict = match ops.iter().find_map(|op| clock.check(op.ts()).err()) {
                    None => Acceptance::Accept,
                    Some(e) => {
                        debug!(%source, "gossip not forwarded: {e}");
                        Acceptance::Ignore
                    }
                };
                self.net
                    .report_validation(message_id, propagation_source, verdict)
                    .await;
                pending.push((propagation_source, ops, proofs));
            }
            Ok(Gossip::Versions {
                contiguous,
                device,
                schema,
                authors,
                ..
            }) => match self.check_binding(&source, &device) {
                Ok(client) => {
                    self.net
                        .report_validation(message_id, propagation_source, Acceptance::Accept)
                        .await;
                    if let Some(schema) = schema {
                        self.peers.set_schema(&source, schema);
                    }
                    self.on_versions(source, client, contiguous, authors.is_some())
                        .await;
                }
                Err(reason) => {
                    debug!(%source, "gossip rejected: {reason}");
                    self.net
                        .report_validation(message_id, propagation_source, Acceptance::Reject)
                        .await;
                }
            },
            Err(reason) => {
                debug!(%source, "gossip rejected: {reason}");
                self.net
                    .report_validation(message_id, propagation_source, Acceptance::Reject)
                    .await;
            }
        }
    }

    /// Decodes and checks a gossip message (see [`check_gossip_message`]) and counts a
    /// refusal under its label.
    fn check_gossip(&self, data: &[u8]) -> Result<Gossip, GossipRejection> {
        check_gossip_message(self.store.registry(), data)
            .inspect_err(|rejection| self.metrics.reject(rejection.label()))
    }

    /// Checks an announcement's device binding against `source`, the peer id that signed
    /// the message (gossipsub verified that signature), and counts a refusal. Returns the
    /// sender's client UUID.
    fn check_binding(
        &self,
        source: &PeerId,
        device: &DeviceBinding,
    ) -> Result<Uuid, GossipRejection> {
        device
            .verify(source)
            .map_err(GossipRejection::from)
            .inspect_err(|rejection| self.metrics.reject(rejection.label()))
    }

    async fn apply_gossip(&mut self, pending: Vec<(PeerId, Vec<Op>, Vec<Proof>)>) {
        let mut from: HashMap<Uuid, PeerId> = HashMap::new();
        let mut changes = Vec::new();
        let mut all_proofs = Vec::new();
        for (peer, ops, proofs) in pending {
            for op in ops {
                from.insert(op.author, peer);
                changes.push(Change::Op(op));
            }
            all_proofs.extend(proofs);
        }
        let authors: Vec<Uuid> = from.keys().copied().collect();
        match self
            .store
            .apply_signed(changes, all_proofs, Origin::Gossip)
            .await
        {
            Ok(report) => {
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
                    .any(|(_, r)| r.reason == murmur_store::RejectReason::Drift)
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

    /// A peer connected: its pull starts; its client is known from its first announcement.
    async fn on_connected(&mut self, peer_id: PeerId, address: Multiaddr, discovery: Discovery) {
        let how = discovery.to_string();
        info!(%peer_id, %address, discovery = how.as_str(), "peer connected");
        let n = self.peers.connect(peer_id, address, discovery);
        self.metrics.peers_connected.set(n as i64);
        // The peer's client is heard of (and touched) with its first announcement.
        self.contact
            .set_connected(true, tokio::time::Instant::now());
        if self.join.is_some() {
            self.send_claim(peer_id);
        }
        self.start_pull(peer_id);
    }

    /// Sends this device's claim to every connected peer (see [`JOIN_RETRY`]).
    fn send_claims(&mut self) {
        for p in self.peers.snapshot() {
            self.send_claim(p.peer_id);
        }
    }

    /// Sends this device's claim of an invitation to `peer`.
    fn send_claim(&mut self, peer: PeerId) {
        let Some(claim) = self.join.clone() else {
            return;
        };
        let (net, device) = (self.net.clone(), self.device);
        self.joins.spawn(async move {
            let r = net
                .request(peer, Request::Join { device, claim })
                .await
                .map_err(|e| e.to_string());
            (peer, r)
        });
    }

    /// A peer answered this device's claim.
    async fn handle_join_done(
        &mut self,
        done: Result<(PeerId, Result<Response, String>), tokio::task::JoinError>,
    ) {
        let Ok((peer, result)) = done else { return };
        if self.join.is_none() {
            return;
        }
        match result {
            Ok(Response::Joined { root }) => {
                self.join = None;
                self.joins.abort_all();
                if let Some(root) = root {
                    match self.store.set_member_root(root).await {
                        Ok(_) => {}
                        Err(e) => warn!("cannot record the library's root: {e}"),
                    }
                }
                info!(%peer, "admitted to the library: this device is a member");
                self.join_status.send_replace(JoinStatus::Joined);
                // The member closes the connection to hear this node again; pull from
                // the others now.
                self.send_pulls_to_all();
            }
            Ok(Response::Refused {
                reason: Refusal::Claim(ClaimRefusal::Unknown),
            })
            | Err(_) => {
                debug!(%peer, "the peer does not know the invitation yet: retrying");
            }
            Ok(Response::Refused { reason }) => {
                error!(%peer, "cannot join the library: {reason}");
                self.join = None;
                self.joins.abort_all();
                self.join_status
                    .send_replace(JoinStatus::Failed(reason.to_string()));
            }
            Ok(other) => debug!(%peer, "unexpected answer to a claim: {other:?}"),
        }
    }

    async fn block_removed(&self, peer: PeerId) {
        if let Err(e) = self.net.block(peer).await {
            warn!("cannot block the peer: {e}");
        }
    }

    fn send_pulls_to_all(&mut self) {
        for p in self.peers.snapshot() {
            self.start_pull(p.peer_id);
        }
    }

    /// The membership changed: peers of removed devices are blocked, refused peers now
    /// admitted heard again (their connections closed, so that they resubscribe).
    async fn handle_members_changed(&mut self) {
        self.members.borrow_and_update();
        for (peer, client) in self.peers.clients() {
            match (
                serve::standing(&self.store, &client),
                self.peers.refused(&peer),
            ) {
                (Ok(()), Some(_)) => {
                    self.peers.set_refused(&peer, client, None);
                    info!(%peer, %client, "the device is a member now: hearing it again");
                    if let Err(e) = self.net.unmute(peer).await {
                        warn!("cannot unmute the peer: {e}");
                    }
                }
                // Removed while connected: pulled from one last time (events it signed
                // concurrently, such as its own removal of another device, still count;
                // its requests are refused meanwhile), then blocked.
                (Err(Refusal::Removed), r) if r != Some(Refusal::Removed) => {
                    self.peers
                        .set_refused(&peer, client, Some(Refusal::Removed));
                    self.metrics.peers_refused.inc();
                    info!(%peer, %client, "the device was removed: a last pull, then its connections are refused");
                    self.start_pull(peer);
                    if self
                        .peers
                        .pull_state(&peer)
                        .is_none_or(|s| s == PullState::Idle)
                    {
                        self.block_removed(peer).await;
                    }
                }
                (Err(reason), r) if r != Some(reason) => {
                    serve::refuse_peer(&self.net, &self.peers, &self.metrics, peer, client, reason)
                        .await;
                }
                _ => {}
            }
        }
    }

    async fn on_disconnected(&mut self, peer_id: PeerId) {
        let client = self.peers.client(&peer_id);
        // A refusal belongs to the connection: a peer muted as a non-member is heard again
        // when it reconnects, and its standing is checked again then (it may have been
        // admitted meanwhile, by an event this node had not yet received). gossipsub's
        // blacklist would otherwise outlive the connection and the peer table's entry, and
        // an admitted device would stay unheard. A removed device stays blocked.
        if matches!(self.peers.refused(&peer_id), Some(r) if r != Refusal::Removed)
            && let Err(e) = self.net.unmute(peer_id).await
        {
            warn!("cannot unmute the peer: {e}");
        }
        let n = self.peers.disconnect(&peer_id);
        self.metrics.peers_connected.set(n as i64);
        let now = tokio::time::Instant::now();
        if let Some(client) = client {
            self.contact.heard(client, now);
        }
        self.contact.set_connected(n > 0, now);
        info!(%peer_id, "peer disconnected");
    }

    /// A verified announcement of `source`, a run of the device `client`; `part`: it
    /// carries a part of the sender's vector ([`announce`]).
    async fn on_versions(
        &mut self,
        source: PeerId,
        client: Uuid,
        contiguous: BTreeMap<Uuid, u64>,
        part: bool,
    ) {
        // A device that is not a member (or was removed) gets nothing, and is not a client
        // of the pool: it holds no op back from pruning.
        if let Err(reason) = serve::standing(&self.store, &client) {
            self.peers.set_client(&source, client);
            self.metrics.reject(reason.label());
            serve::refuse_peer(
                &self.net,
                &self.peers,
                &self.metrics,
                source,
                client,
                reason,
            )
            .await;
            return;
        }
        // The pull that ran on connecting could not mark the client synchronized: its
        // device was not known yet. Pull again (little or nothing) to do it.
        let newly_known = self.peers.set_client(&source, client);
        if newly_known {
            info!(peer_id = %source, %client, "peer's device known");
        }
        self.contact.heard(client, tokio::time::Instant::now());
        self.peers.set_announced(&source, contiguous.clone(), part);
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
        if behind || newly_known {
            // Nothing happens if the peer is not connected.
            self.start_pull(source);
        }
    }

    async fn on_request(&mut self, peer: PeerId, request: Request, responder: Responder<Response>) {
        self.server.serve(peer, request, responder).await;
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

    /// Announces the version vector, and refreshes the lag and log gauges.
    async fn handle_announce(&mut self) {
        self.announce().await;
        self.update_lag();
        match self.store.pending_operations().await {
            Ok(n) => {
                self.metrics.pending_operations.set(n as i64);
            }
            Err(e) => warn!("cannot count the log: {e}"),
        }
        match self.store.kept().await {
            Ok(kept) => {
                for reason in [
                    murmur_store::RejectReason::UnknownResource,
                    murmur_store::RejectReason::UnknownField,
                ] {
                    let label = reason.label();
                    let n = kept.get(label).copied().unwrap_or(0);
                    self.metrics
                        .waiting
                        .get_or_create(&crate::metrics::Reason {
                            reason: label.to_owned(),
                        })
                        .set(n as i64);
                }
            }
            Err(e) => warn!("cannot count what is kept for a newer schema: {e}"),
        }
    }

    /// Publishes the version vector (whole, or its next part: see [`announce`]) with this
    /// node's device binding and schema.
    async fn announce(&mut self) {
        // Not before a member accepted this device's claim: it would be taken for a
        // device that holds the secret only.
        if self.join.is_some() {
            return;
        }
        let vv = self.store.version_vector();
        let (contiguous, authors) = self.announcer.next(&vv.contiguous_map(), VERSIONS_SEND_CAP);
        let mut horizon = self.store.horizon();
        horizon.retain(|a, _| contiguous.contains_key(a));
        let msg = Gossip::Versions {
            device: self.device,
            contiguous,
            horizon,
            authors,
            schema: Some(self.store.registry().schema_version()),
            sent_at_ms: chrono::Utc::now().timestamp_millis().max(0) as u64,
        };
        if let Err(e) = self.net.publish(to_cbor(&msg)).await {
            debug!("announce failed: {e}");
        }
    }

    /// Prunes the log below the horizon every live client has passed, and some other
    /// client holds. A client is stale by the contact clock (see [`ContactClock`]), not by
    /// this node's wall clock: time this node spent offline makes no one stale.
    async fn handle_prune(&mut self) {
        let now = tokio::time::Instant::now();
        let (contact, stale_after) = (&self.contact, self.options.stale_after);
        // A removed device (or one never admitted) holds nothing back.
        let members = self.store.members();
        let stale = |c: &murmur_store::ClientInfo| {
            contact.is_stale(&c.client_uuid, now, stale_after)
                || members.standing(&c.client_uuid) != Standing::Member
        };
        let horizon = match self.store.prune_horizon(stale).await {
            Ok(h) => h,
            Err(e) => return warn!("cannot compute the pruning horizon: {e}"),
        };
        let pruned = self.store.prune(&horizon).await;
        self.metrics.prune_runs.inc();
        match pruned {
            Ok(0) => {}
            Ok(n) => {
                info!(ops = n, "pruned the log");
            }
            Err(e) => warn!("pruning failed: {e}"),
        }
    }

    /// Asks for a pull from `peer`: it starts now if the peer is connected, pulls nothing
    /// and a slot is free; otherwise the peer table remembers it (see [`PullState`]).
    fn start_pull(&mut self, peer: PeerId) {
        // A device claiming an invitation is no member yet: its pulls would be refused.
        if self.join.is_some() {
            return;
        }
        let slot_free = self.pulls.len() < PULLS_CAP;
        if !self.peers.request_pull(&peer, slot_free) {
            return;
        }
        let puller = Puller {
            store: self.store.clone(),
            net: self.net.clone(),
            peer,
            metrics: self.metrics.clone(),
            peers: self.peers.clone(),
            device: self.device,
            snapshot_turn: self.snapshot_turn.clone(),
        };
        self.pulls
            .spawn(async move { (peer, puller.run().await) }.instrument(info_span!("pull", %peer)));
    }

    /// A pull ended: the pull asked for meanwhile, then those that waited for a slot, start.
    async fn handle_pull_done(
        &mut self,
        done: Result<(PeerId, Result<PullSummary, PullError>), tokio::task::JoinError>,
    ) {
        let Ok((peer, result)) = done else { return };
        // The last pull from a removed device is done: refuse its connections.
        if self.peers.refused(&peer) == Some(Refusal::Removed) {
            self.block_removed(peer).await;
        }
        match result {
            Ok(s) if s.items > 0 => {
                info!(%peer, ops = s.ops, rows = s.items - s.ops, snapshot = s.snapshot, ms = s.elapsed.as_millis() as u64, "caught up")
            }
            Ok(_) => debug!(%peer, "already up to date"),
            Err(e) => debug!(%peer, "pull failed: {e}"),
        }
        self.update_lag();
        self.peers.finish_pull(&peer);
        let mut waiting = self.peers.waiting();
        // This peer's own next pull first.
        waiting.sort_by_key(|p| *p != peer);
        for p in waiting {
            self.start_pull(p);
        }
    }

    /// Starts a repair round with the next settled peer (see [`repair`]), unless one runs.
    fn handle_repair_tick(&mut self) {
        if !self.repairs.is_empty() {
            return;
        }
        let settled = self
            .peers
            .settled(&self.store.version_vector().contiguous_map());
        if settled.is_empty() {
            return;
        }
        let (peer, device) = settled[self.repair_turn % settled.len()];
        self.repair_turn = self.repair_turn.wrapping_add(1);
        let (store, net) = (self.store.clone(), self.net.clone());
        self.repairs.spawn(
            async move { (peer, repair::repair_with(&store, &net, peer, device).await) }
                .instrument(info_span!("repair", %peer)),
        );
    }

    /// A repair round ended: counts and logs what it repaired.
    fn handle_repair_done(
        &mut self,
        done: Result<(PeerId, Result<repair::RepairSummary, PullError>), tokio::task::JoinError>,
    ) {
        let Ok((peer, result)) = done else { return };
        self.metrics.repair_rounds.inc();
        match result {
            Ok(s) if s.differences.rows.is_empty() => debug!(%peer, "digests agree"),
            Ok(s) => {
                self.metrics.repaired_rows.inc_by(s.repaired.len() as u64);
                for r in s.repaired.iter().take(REPAIR_LOG_CAP) {
                    info!(%peer, resource = r.resource.as_str(), uuid = %r.uuid, "repaired a row");
                }
                info!(
                    %peer,
                    differing = s.differences.rows.len(),
                    received = s.received,
                    repaired = s.repaired.len(),
                    refused = s.refused,
                    requests = s.differences.requests,
                    truncated = s.differences.truncated,
                    "repair round: the digests differed"
                );
            }
            Err(e) => debug!(%peer, "repair round failed: {e}"),
        }
    }
}

/// Repaired rows logged one by one per round, at most (the rest are counted).
const REPAIR_LOG_CAP: usize = 20;
