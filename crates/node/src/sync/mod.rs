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
use tracing::{Instrument, debug, info, info_span, warn};
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
use crate::device::DeviceBinding;
use crate::metrics::Metrics;
use crate::protocol::{Gossip, Request, Response};
pub use crate::protocol::{Net, NetEvent};

/// Gossip events handled before their ops are applied in one transaction.
const GOSSIP_BATCH_CAP: usize = 256;

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
}

impl SyncLoop {
    /// Builds the loop; `device` binds this run's peer id to the store's device key.
    pub fn new(
        store: Store,
        net: Net,
        events: mpsc::Receiver<NetEvent>,
        metrics: Arc<Metrics>,
        peers: PeerTable,
        device: DeviceBinding,
        options: SyncOptions,
    ) -> SyncLoop {
        SyncLoop {
            server: Server::new(store.clone(), metrics.clone()),
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
                Some(done) = self.pulls.join_next(), if !self.pulls.is_empty() => self.handle_pull_done(done),
                Some(done) = self.repairs.join_next(), if !self.repairs.is_empty() => self.handle_repair_done(done),
                // A served request ended; its permit was released in its task.
                () = self.server.join_next(), if !self.server.is_idle() => {},
                _ = versions.tick() => self.handle_announce().await,
                _ = prune.tick() => self.handle_prune().await,
                _ = repair.tick() => self.handle_repair_tick(),
            }
        }
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
            Event::PeerDisconnected { peer_id } => self.on_disconnected(peer_id),
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
                ..
            }) => match self.check_binding(&source, &device) {
                Ok(client) => {
                    self.net
                        .report_validation(message_id, propagation_source, Acceptance::Accept)
                        .await;
                    if let Some(schema) = schema {
                        self.peers.set_schema(&source, schema);
                    }
                    self.on_versions(source, client, contiguous).await;
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
        self.start_pull(peer_id);
    }

    fn on_disconnected(&mut self, peer_id: PeerId) {
        let client = self.peers.client(&peer_id);
        let n = self.peers.disconnect(&peer_id);
        self.metrics.peers_connected.set(n as i64);
        let now = tokio::time::Instant::now();
        if let Some(client) = client {
            self.contact.heard(client, now);
        }
        self.contact.set_connected(n > 0, now);
        info!(%peer_id, "peer disconnected");
    }

    /// A verified announcement of `source`, a run of the device `client`.
    async fn on_versions(&mut self, source: PeerId, client: Uuid, contiguous: BTreeMap<Uuid, u64>) {
        // The pull that ran on connecting could not mark the client synchronized: its
        // device was not known yet. Pull again (little or nothing) to do it.
        let newly_known = self.peers.set_client(&source, client);
        if newly_known {
            info!(peer_id = %source, %client, "peer's device known");
        }
        self.contact.heard(client, tokio::time::Instant::now());
        self.peers.set_announced(&source, contiguous.clone());
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
        let stale =
            |c: &murmur_store::ClientInfo| contact.is_stale(&c.client_uuid, now, stale_after);
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
            snapshot_turn: self.snapshot_turn.clone(),
        };
        self.pulls
            .spawn(async move { (peer, puller.run().await) }.instrument(info_span!("pull", %peer)));
    }

    /// A pull ended: the pull asked for meanwhile, then those that waited for a slot, start.
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
