//! The swarm task: one loop that owns the [`Swarm`], turns commands into swarm calls and
//! swarm events into [`Event`]s.
//!
//! The loop is one `biased` `select!`: local commands first, then responses to inbound
//! requests, then delivery of queued events, then swarm events, then the redial timer.
//! Events go to the node over a bounded channel; when the node is slow they wait in a
//! bounded backlog, where remote-originated events (gossip, inbound requests) are dropped
//! (and counted) first so a chatty peer cannot make the node buffer without limit.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm,
    core::ConnectedPoint,
    gossipsub::{self, IdentTopic, PublishError, TopicHash},
    mdns, request_response,
    swarm::{
        ConnectionId, DialError, ListenError, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::{
    sync::{mpsc, oneshot},
    time::{Instant, MissedTickBehavior},
};
use tracing::{debug, info, trace, warn};

use crate::{
    behaviour::{Behaviour, BehaviourEvent},
    codec::CodecError,
    error::{P2pError, RequestError},
    failure,
    handle::{
        Acceptance, Command, Discovery, Event, PeerInfo, PublishOutcome, RespondCommand, Responder,
    },
    redial::{Redialer, peer_id_of},
    stats::Counters,
};

/// Capacity of the channel carrying responses to inbound requests back to the task.
pub(crate) const RESPONSE_CAP: usize = 256;
/// Most events held back while the node's event channel is full.
pub(crate) const BACKLOG_CAP: usize = 4096;
/// Backlog length above which remote-originated events are dropped.
pub(crate) const REMOTE_BACKLOG_CAP: usize = 256;
/// How often the redial schedule is checked.
const REDIAL_TICK: Duration = Duration::from_millis(100);
/// How often peers known by mDNS but not connected are dialed again.
const MDNS_REDIAL_EVERY: Duration = Duration::from_secs(3);

/// What we know of a connected peer.
struct Connected {
    connections: Vec<(ConnectionId, Multiaddr)>,
    discovery: Discovery,
}

/// The state owned by the swarm task.
pub(crate) struct EventLoop<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static,
    Resp: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static,
{
    pub(crate) swarm: Swarm<Behaviour<Req, Resp>>,
    pub(crate) commands: mpsc::Receiver<Command<Req, Resp>>,
    pub(crate) responses_tx: mpsc::Sender<RespondCommand<Resp>>,
    pub(crate) responses: mpsc::Receiver<RespondCommand<Resp>>,
    pub(crate) events: mpsc::Sender<Event<Req, Resp>>,
    pub(crate) topic: IdentTopic,
    pub(crate) counters: Arc<Counters>,
    pub(crate) max_gossip_bytes: usize,
    pub(crate) redialer: Redialer,
    backlog: VecDeque<Event<Req, Resp>>,
    events_closed: bool,
    topic_hash: TopicHash,
    pending_requests:
        HashMap<request_response::OutboundRequestId, oneshot::Sender<Result<Resp, RequestError>>>,
    peers: HashMap<PeerId, Connected>,
    /// Dials we started, and why.
    dial_origin: HashMap<ConnectionId, Discovery>,
    /// Peers mDNS has records of (forgotten when their last record expires).
    mdns_peers: HashSet<PeerId>,
    /// Peer ids mDNS still has records of whose address answered with another peer id:
    /// peer ids change on every start, so these are runs that stopped. Not redialed; they
    /// leave with their records.
    superseded: HashSet<PeerId>,
    last_mdns_redial: Instant,
    listen_addrs: Vec<Multiaddr>,
}

impl<Req, Resp> EventLoop<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static,
    Resp: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static,
{
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        swarm: Swarm<Behaviour<Req, Resp>>,
        commands: mpsc::Receiver<Command<Req, Resp>>,
        events: mpsc::Sender<Event<Req, Resp>>,
        topic: IdentTopic,
        counters: Arc<Counters>,
        max_gossip_bytes: usize,
        redialer: Redialer,
    ) -> Self {
        let (responses_tx, responses) = mpsc::channel(RESPONSE_CAP);
        let topic_hash = topic.hash();
        Self {
            swarm,
            commands,
            responses_tx,
            responses,
            events,
            topic,
            counters,
            max_gossip_bytes,
            redialer,
            backlog: VecDeque::new(),
            events_closed: false,
            topic_hash,
            pending_requests: HashMap::new(),
            peers: HashMap::new(),
            dial_origin: HashMap::new(),
            mdns_peers: HashSet::new(),
            superseded: HashSet::new(),
            last_mdns_redial: Instant::now(),
            listen_addrs: Vec::new(),
        }
    }

    /// Runs until shut down or until every handle is dropped.
    pub(crate) async fn run(mut self) {
        let mut redial_tick = tokio::time::interval(REDIAL_TICK);
        redial_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.handle_redial_tick();
        // A second sender, so that a reserved permit does not borrow `self`.
        let events = self.events.clone();
        let shutdown_reply = loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(command) => self.handle_command(command),
                    None => break None,
                },
                Some(response) = self.responses.recv() => self.handle_response(response),
                permit = events.reserve(), if !self.backlog.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.backlog.pop_front() {
                            permit.send(event);
                        }
                    }
                    Err(_) => self.on_events_closed(),
                },
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                _ = redial_tick.tick() => self.handle_redial_tick(),
            }
        };
        info!("p2p event loop stopping");
        // Pending requesters see `RequestError::Shutdown` when their reply senders drop.
        self.pending_requests.clear();
        drop(self.swarm);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    // ---- commands -------------------------------------------------------------------

    fn handle_command(&mut self, command: Command<Req, Resp>) {
        match command {
            Command::Publish { data, reply } => {
                let _ = reply.send(self.publish(data));
            }
            Command::ReportValidation {
                id,
                propagation_source,
                acceptance,
            } => self.report_validation(&id, &propagation_source, acceptance),
            Command::Request {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .request_response
                    .send_request(&peer, request);
                Counters::inc(&self.counters.requests_out);
                self.pending_requests.insert(id, reply);
            }
            Command::Dial { addr, reply } => {
                let _ = reply.send(self.dial(addr, Discovery::Configured));
            }
            Command::ConnectedPeers { reply } => {
                let peers = self
                    .peers
                    .iter()
                    .map(|(peer_id, c)| PeerInfo {
                        peer_id: *peer_id,
                        addresses: c.connections.iter().map(|(_, a)| a.clone()).collect(),
                        discovery: c.discovery,
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::Mute { peer } => {
                self.swarm.behaviour_mut().gossipsub.blacklist_peer(&peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Unmute { peer } => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .remove_blacklisted_peer(&peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Block { peer } => {
                self.swarm.behaviour_mut().blocked.block_peer(peer);
            }
            Command::Unblock { peer } => {
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            }
            // Handled in `run`.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn publish(&mut self, data: Vec<u8>) -> Result<PublishOutcome, P2pError> {
        let size = data.len();
        if size > self.max_gossip_bytes {
            return Err(P2pError::MessageTooLarge {
                size,
                max: self.max_gossip_bytes,
            });
        }
        let topic = self.topic.clone();
        match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
            Ok(_) => {
                Counters::inc(&self.counters.gossip_published);
                Counters::add(&self.counters.gossip_bytes_out, size);
                Ok(PublishOutcome::Published)
            }
            Err(PublishError::NoPeersSubscribedToTopic) => Ok(PublishOutcome::NoPeers),
            Err(PublishError::Duplicate) => Ok(PublishOutcome::Duplicate),
            Err(PublishError::MessageTooLarge) => Err(P2pError::MessageTooLarge {
                size,
                max: self.max_gossip_bytes,
            }),
            Err(e) => Err(P2pError::Publish(e.to_string())),
        }
    }

    fn report_validation(
        &mut self,
        id: &gossipsub::MessageId,
        source: &PeerId,
        acceptance: Acceptance,
    ) {
        if acceptance == Acceptance::Reject {
            Counters::inc(&self.counters.gossip_rejected);
            debug!(%source, message = %id, "gossip message rejected");
        }
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, acceptance.into());
    }

    /// Starts a dial of `addr`, with the peer id taken from a trailing `/p2p/<id>`.
    fn dial(&mut self, addr: Multiaddr, why: Discovery) -> Result<(), P2pError> {
        let connection = self.start_dial(addr)?;
        self.dial_origin.insert(connection, why);
        Ok(())
    }

    fn start_dial(&mut self, addr: Multiaddr) -> Result<ConnectionId, P2pError> {
        let opts = match peer_id_of(&addr) {
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![addr])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr).build(),
        };
        let connection = opts.connection_id();
        self.swarm
            .dial(opts)
            .map_err(|e| P2pError::Dial(failure::chain(&e)))?;
        Ok(connection)
    }

    fn handle_response(&mut self, response: RespondCommand<Resp>) {
        if self
            .swarm
            .behaviour_mut()
            .request_response
            .send_response(response.channel, response.response)
            .is_err()
        {
            debug!("response dropped: the requester is gone (timeout or closed connection)");
        }
    }

    // ---- timers ---------------------------------------------------------------------

    fn handle_redial_tick(&mut self) {
        let now = Instant::now();
        let local = *self.swarm.local_peer_id();
        if now.duration_since(self.last_mdns_redial) >= MDNS_REDIAL_EVERY {
            self.last_mdns_redial = now;
            self.redial_mdns_peers(local);
        }
        for (index, addr, peer) in self.redialer.due(now) {
            if peer == Some(local) {
                self.redialer.mark_self(index);
                continue;
            }
            if peer.is_some_and(|p| self.swarm.is_connected(&p)) {
                self.redialer.already_connected(index);
                continue;
            }
            debug!(%addr, "dialing explicit peer");
            match self.start_dial(addr.clone()) {
                Ok(connection) => {
                    self.redialer.dialing(index, connection);
                    self.dial_origin.insert(connection, Discovery::Configured);
                }
                Err(e) => {
                    warn!(%addr, error = %e, "cannot dial explicit peer");
                    self.redialer.on_dial_error(index, now);
                }
            }
        }
    }

    /// Dials the peers mDNS knows (records not expired) that are not connected, when this
    /// side is the one that dials. mDNS reports a peer only when its record is new, so a
    /// peer that restarted, or whose connection died, would otherwise stay unconnected
    /// until its record expires.
    fn redial_mdns_peers(&mut self, local: PeerId) {
        let Some(mdns) = self.swarm.behaviour().mdns.as_ref() else {
            return;
        };
        let due: Vec<PeerId> = mdns
            .discovered_nodes()
            .filter(|p| local < **p && !self.superseded.contains(*p))
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|p| !self.swarm.is_connected(p))
            .collect();
        for peer in due {
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            let connection = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    debug!(%peer, "redialing a peer known by mDNS");
                    self.dial_origin.insert(connection, Discovery::Mdns);
                }
                Err(e) => trace!(%peer, error = %e, "mdns redial not started"),
            }
        }
    }

    // ---- events to the node -----------------------------------------------------------

    /// Queues an event for the node. Remote-originated events are refused (returned) when
    /// the backlog is long.
    fn emit(&mut self, event: Event<Req, Resp>) {
        if self.events_closed {
            self.discard(event);
            return;
        }
        if self.backlog.is_empty() {
            match self.events.try_send(event) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(event)) => self.backlog.push_back(event),
                Err(mpsc::error::TrySendError::Closed(event)) => {
                    self.on_events_closed();
                    self.discard(event);
                }
            }
            return;
        }
        let remote = matches!(event, Event::Gossip { .. } | Event::InboundRequest { .. });
        let cap = if remote {
            REMOTE_BACKLOG_CAP
        } else {
            BACKLOG_CAP
        };
        if self.backlog.len() >= cap {
            Counters::inc(&self.counters.events_dropped);
            warn!(
                backlog = self.backlog.len(),
                "node is not draining p2p events; dropping one"
            );
            self.discard(event);
        } else {
            self.backlog.push_back(event);
        }
    }

    /// Drops an event that cannot be delivered, releasing what it holds in the swarm.
    fn discard(&mut self, event: Event<Req, Resp>) {
        if let Event::Gossip {
            propagation_source,
            message_id,
            ..
        } = event
        {
            Counters::inc(&self.counters.gossip_dropped);
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    gossipsub::MessageAcceptance::Ignore,
                );
        }
        // An `InboundRequest`'s responder is dropped: the requester gets an error.
    }

    fn on_events_closed(&mut self) {
        if !self.events_closed {
            debug!("event receiver dropped; events are discarded from now on");
        }
        self.events_closed = true;
        let backlog = std::mem::take(&mut self.backlog);
        for event in backlog {
            self.discard(event);
        }
    }

    // ---- swarm events -----------------------------------------------------------------

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent<Req, Resp>>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.handle_gossipsub(e),
            SwarmEvent::Behaviour(BehaviourEvent::RequestResponse(e)) => {
                self.handle_request_response(e)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(e)) => self.handle_mdns(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => trace!(?e, "identify"),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => {
                trace!(?e, "ping");
                // A connection that stops answering pings is dead (a peer that vanished or
                // changed address): close it, so the peer shows as gone and is redialed,
                // rather than waiting for TCP to give up many minutes later.
                if let Err(failure) = &e.result {
                    debug!(peer = %e.peer, %failure, "ping failed: closing the connection");
                    self.swarm.close_connection(e.connection);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Limits(e)) => match e {},
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => self.on_connection_established(peer_id, connection_id, endpoint),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => self.on_connection_closed(peer_id, connection_id, num_established, cause),
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => self.on_outgoing_error(connection_id, peer_id, error),
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                peer_id,
                ..
            } => self.on_incoming_error(send_back_addr, peer_id, error),
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen_addrs.push(address.clone());
                self.emit(Event::Listening { address });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                self.listen_addrs.retain(|a| !addresses.contains(a));
                if let Err(error) = reason {
                    warn!(%error, "listener closed");
                }
            }
            other => trace!(?other, "swarm event"),
        }
    }

    fn on_connection_established(
        &mut self,
        peer_id: PeerId,
        connection: ConnectionId,
        endpoint: ConnectedPoint,
    ) {
        self.redialer.on_connected(peer_id, connection);
        let origin = self.dial_origin.remove(&connection);
        let address = endpoint.get_remote_address().clone();
        let discovery = if self.mdns_peers.contains(&peer_id) {
            Discovery::Mdns
        } else if let Some(origin) = origin {
            origin
        } else if endpoint.is_dialer() || self.redialer.knows(&peer_id) {
            Discovery::Configured
        } else {
            Discovery::Inbound
        };
        let entry = self.peers.entry(peer_id).or_insert_with(|| Connected {
            connections: Vec::new(),
            discovery,
        });
        entry.connections.push((connection, address.clone()));
        if entry.connections.len() == 1 {
            info!(%peer_id, %address, %discovery, "peer connected");
            self.emit(Event::PeerConnected {
                peer_id,
                address,
                discovery,
            });
        }
    }

    fn on_connection_closed(
        &mut self,
        peer_id: PeerId,
        connection: ConnectionId,
        num_established: u32,
        cause: Option<libp2p::swarm::ConnectionError>,
    ) {
        if let Some(entry) = self.peers.get_mut(&peer_id) {
            entry.connections.retain(|(c, _)| *c != connection);
        }
        if num_established == 0 {
            self.peers.remove(&peer_id);
            info!(%peer_id, cause = ?cause, "peer disconnected");
            self.redialer.on_disconnected(peer_id, Instant::now());
            self.emit(Event::PeerDisconnected { peer_id });
        }
    }

    fn on_outgoing_error(
        &mut self,
        connection: ConnectionId,
        peer_id: Option<PeerId>,
        error: DialError,
    ) {
        let origin = self.dial_origin.remove(&connection);
        if let (DialError::WrongPeerId { obtained, .. }, Some(Discovery::Mdns), Some(old)) =
            (&error, origin, peer_id)
        {
            // A stale mDNS record of a run that stopped: whoever answers there now is found
            // by its own record.
            debug!(%old, %obtained, "an mDNS record names a stopped run: not dialed again");
            self.superseded.insert(old);
            return;
        }
        let is_self = matches!(error, DialError::LocalPeerId { .. });
        let explicit = self
            .redialer
            .on_dial_failed(connection, Instant::now(), is_self);
        let (address, failure) = match &error {
            DialError::Transport(errors) => {
                // Report the most telling of the per-address errors: a handshake failure
                // says more than an unreachable address.
                let mut best: Option<(Multiaddr, failure::Failure)> = None;
                for (addr, e) in errors {
                    let f = failure::classify(e);
                    if best
                        .as_ref()
                        .is_none_or(|(_, b)| f.probable_key_mismatch && !b.probable_key_mismatch)
                    {
                        best = Some((addr.clone(), f));
                    }
                }
                match best {
                    Some((addr, f)) => (Some(addr), f),
                    None => (
                        explicit,
                        plain("connection failed: no address could be dialed"),
                    ),
                }
            }
            DialError::DialPeerConditionFalse(_) | DialError::Aborted => {
                debug!(?peer_id, %error, "dial not needed or aborted");
                return;
            }
            DialError::LocalPeerId { address } => (
                Some(address.clone()),
                plain("the address is this node's own: not dialed again"),
            ),
            DialError::WrongPeerId { obtained, address } => (
                Some(address.clone()),
                plain(&format!(
                    "the peer at this address is {obtained}, not the one expected"
                )),
            ),
            DialError::Denied { cause } => {
                (explicit, plain(&format!("connection denied: {cause}")))
            }
            DialError::NoAddresses => (explicit, plain("no known address for the peer")),
        };
        Counters::inc(&self.counters.connection_failures);
        warn!(?peer_id, address = ?address, reason = %failure.reason, "outgoing connection failed");
        self.emit(Event::ConnectionFailed {
            peer_id,
            address,
            reason: failure.reason,
            probable_key_mismatch: failure.probable_key_mismatch,
        });
    }

    fn on_incoming_error(
        &mut self,
        send_back_addr: Multiaddr,
        peer_id: Option<PeerId>,
        error: ListenError,
    ) {
        let failure = match &error {
            ListenError::Transport(e) => failure::classify(e),
            ListenError::Aborted => return,
            other => plain(&format!("inbound connection refused: {other}")),
        };
        Counters::inc(&self.counters.connection_failures);
        warn!(address = %send_back_addr, reason = %failure.reason, "incoming connection failed");
        self.emit(Event::ConnectionFailed {
            peer_id,
            address: Some(send_back_addr),
            reason: failure.reason,
            probable_key_mismatch: failure.probable_key_mismatch,
        });
    }

    fn handle_gossipsub(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => self.on_gossip(propagation_source, message_id, message),
            gossipsub::Event::Subscribed { peer_id, topic } if topic == self.topic_hash => {
                debug!(%peer_id, "peer subscribed");
                self.emit(Event::Subscribed { peer_id });
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } if topic == self.topic_hash => {
                self.emit(Event::Unsubscribed { peer_id });
            }
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                debug!(%peer_id, "peer does not speak gossipsub");
            }
            other => trace!(?other, "gossipsub"),
        }
    }

    fn on_gossip(
        &mut self,
        propagation_source: PeerId,
        message_id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        Counters::inc(&self.counters.gossip_received);
        Counters::add(&self.counters.gossip_bytes_in, message.data.len());
        let refusal = if message.topic != self.topic_hash {
            Some(("foreign topic", Acceptance::Ignore))
        } else if message.data.len() > self.max_gossip_bytes {
            Some(("oversized", Acceptance::Reject))
        } else {
            None
        };
        let (why, acceptance) = match (refusal, message.source) {
            (None, Some(source)) => {
                self.emit(Event::Gossip {
                    source,
                    propagation_source,
                    message_id,
                    data: message.data,
                });
                return;
            }
            (Some(refusal), _) => refusal,
            (None, None) => ("unsigned", Acceptance::Reject),
        };
        warn!(%propagation_source, why, "gossip message refused");
        self.report_validation(&message_id, &propagation_source, acceptance);
    }

    fn handle_request_response(&mut self, event: request_response::Event<Req, Resp>) {
        use request_response::{Event as E, Message};
        match event {
            E::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                Counters::inc(&self.counters.requests_in);
                let responder = Responder {
                    channel,
                    responses: self.responses_tx.clone(),
                };
                self.emit(Event::InboundRequest {
                    peer_id: peer,
                    request,
                    responder,
                });
            }
            E::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            E::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                Counters::inc(&self.counters.request_failures);
                let error = request_error(error);
                debug!(%peer, %error, "request failed");
                if let Some(reply) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Err(error));
                }
            }
            E::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "inbound request failed");
            }
            E::ResponseSent { .. } => {}
        }
    }

    fn handle_mdns(&mut self, event: mdns::Event) {
        match event {
            mdns::Event::Discovered(found) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in found {
                    by_peer.entry(peer).or_default().push(addr);
                }
                let local = *self.swarm.local_peer_id();
                for (peer, addrs) in by_peer {
                    debug!(%peer, ?addrs, "mdns discovered");
                    self.mdns_peers.insert(peer);
                    self.superseded.remove(&peer);
                    for addr in &addrs {
                        self.swarm.add_peer_address(peer, addr.clone());
                    }
                    // Only the side with the smaller id dials, so a pair makes one connection.
                    if local < peer && !self.swarm.is_connected(&peer) {
                        let opts = DialOpts::peer_id(peer)
                            .addresses(addrs)
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        let connection = opts.connection_id();
                        match self.swarm.dial(opts) {
                            Ok(()) => {
                                self.dial_origin.insert(connection, Discovery::Mdns);
                            }
                            Err(e) => debug!(%peer, error = %e, "mdns dial not started"),
                        }
                    }
                }
            }
            mdns::Event::Expired(gone) => {
                let mut peers = HashSet::new();
                for (peer, addr) in gone {
                    debug!(%peer, %addr, "mdns record expired");
                    peers.insert(peer);
                }
                let Some(mdns) = self.swarm.behaviour().mdns.as_ref() else {
                    return;
                };
                let still: HashSet<PeerId> = mdns.discovered_nodes().copied().collect();
                for peer in peers.difference(&still) {
                    self.mdns_peers.remove(peer);
                    self.superseded.remove(peer);
                }
            }
        }
    }
}

fn plain(reason: &str) -> failure::Failure {
    failure::Failure {
        reason: reason.to_owned(),
        probable_key_mismatch: false,
    }
}

/// Maps a libp2p request failure to the crate's error, recovering codec errors.
fn request_error(error: request_response::OutboundFailure) -> RequestError {
    use request_response::OutboundFailure as F;
    match error {
        F::DialFailure => RequestError::DialFailure,
        F::Timeout => RequestError::Timeout,
        F::ConnectionClosed => RequestError::ConnectionClosed,
        F::UnsupportedProtocols => RequestError::UnsupportedProtocol,
        F::Io(e) => match CodecError::from_io(&e) {
            Some(CodecError::TooLarge(s)) => RequestError::TooLarge(s.clone()),
            Some(CodecError::Malformed(s)) => RequestError::Malformed(s.clone()),
            None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                RequestError::Io("the peer closed the stream without a response".into())
            }
            None => RequestError::Io(e.to_string()),
        },
    }
}
