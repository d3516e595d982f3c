//! The public face of the swarm task: [`Handle`] (commands), [`Event`] (what happened) and
//! [`Responder`] (the way to answer an inbound request).

use std::{fmt, sync::Arc};

use libp2p::{Multiaddr, PeerId, gossipsub::MessageId, request_response::ResponseChannel};
use tokio::sync::{mpsc, oneshot};

use crate::{
    error::{P2pError, RequestError},
    stats::{Counters, Stats},
};

/// How a connected peer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Discovery {
    /// Discovered by mDNS on the local network.
    Mdns,
    /// An explicit peer from [`Config::peers`](crate::Config::peers) or
    /// [`Handle::dial`].
    Configured,
    /// The peer connected to us and we did not know it beforehand.
    Inbound,
}

impl fmt::Display for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Discovery::Mdns => "mdns",
            Discovery::Configured => "configured",
            Discovery::Inbound => "inbound",
        })
    }
}

/// A connected peer, from [`Handle::connected_peers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's verified id.
    pub peer_id: PeerId,
    /// Remote addresses of the open connections to it.
    pub addresses: Vec<Multiaddr>,
    /// How it was found (that of the first connection).
    pub discovery: Discovery,
}

/// What became of a [`Handle::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Sent to at least one subscribed peer.
    Published,
    /// No connected peer is subscribed to the topic: nothing was sent. An ordinary outcome;
    /// murmur's catch-up delivers the data later.
    NoPeers,
    /// The same payload was published (or received) recently, so gossipsub, whose message
    /// id is the content hash, dropped it as a duplicate.
    Duplicate,
}

/// The verdict of the node on a received gossip message, for
/// [`Handle::report_validation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Valid: deliver and forward it.
    Accept,
    /// Invalid (malformed, oversized, forged): drop it and penalise the peer that sent it.
    Reject,
    /// Drop it without penalty (e.g. not interesting right now).
    Ignore,
}

impl From<Acceptance> for libp2p::gossipsub::MessageAcceptance {
    fn from(a: Acceptance) -> Self {
        match a {
            Acceptance::Accept => Self::Accept,
            Acceptance::Reject => Self::Reject,
            Acceptance::Ignore => Self::Ignore,
        }
    }
}

/// Something that happened in the swarm, delivered on the receiver returned by
/// [`spawn`](crate::spawn).
#[derive(Debug)]
pub enum Event<Req, Resp> {
    /// The swarm listens on a new address.
    Listening {
        /// The address.
        address: Multiaddr,
    },
    /// The first connection to a peer is up.
    PeerConnected {
        /// The peer's verified id.
        peer_id: PeerId,
        /// The remote address of the connection.
        address: Multiaddr,
        /// How the peer was found.
        discovery: Discovery,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer_id: PeerId,
    },
    /// A connected peer subscribed to the library topic: from now on it receives what we
    /// publish.
    Subscribed {
        /// The peer.
        peer_id: PeerId,
    },
    /// A peer unsubscribed from the library topic.
    Unsubscribed {
        /// The peer.
        peer_id: PeerId,
    },
    /// A gossip message on the library topic. The node must call
    /// [`Handle::report_validation`] for every one: until then it is not forwarded.
    Gossip {
        /// The verified author (the message is signed).
        source: PeerId,
        /// The peer that forwarded it to us (pass to `report_validation`).
        propagation_source: PeerId,
        /// The message id (pass to `report_validation`).
        message_id: MessageId,
        /// The payload.
        data: Vec<u8>,
    },
    /// A peer sent a request; answer it with [`Responder::respond`]. Dropping the responder
    /// makes the requester's call fail with an I/O error.
    InboundRequest {
        /// The requesting peer.
        peer_id: PeerId,
        /// The decoded request.
        request: Req,
        /// The way to answer.
        responder: Responder<Resp>,
    },
    /// A connection attempt (outbound or inbound) failed.
    ConnectionFailed {
        /// The peer, when known.
        peer_id: Option<PeerId>,
        /// The remote address, when known.
        address: Option<Multiaddr>,
        /// What went wrong, for logs and status.
        reason: String,
        /// The connection was made but its handshake failed: most likely the other side has
        /// another library secret.
        probable_key_mismatch: bool,
    },
}

/// A command for the swarm task.
pub(crate) enum Command<Req, Resp> {
    Publish {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<PublishOutcome, P2pError>>,
    },
    ReportValidation {
        id: MessageId,
        propagation_source: PeerId,
        acceptance: Acceptance,
    },
    Request {
        peer: PeerId,
        request: Req,
        reply: oneshot::Sender<Result<Resp, RequestError>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), P2pError>>,
    },
    ConnectedPeers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Mute {
        peer: PeerId,
    },
    Unmute {
        peer: PeerId,
    },
    Block {
        peer: PeerId,
    },
    Unblock {
        peer: PeerId,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A cloneable handle on the swarm task. Every method sends a command over a bounded
/// channel; those that return a value wait for the task's reply.
///
/// Dropping every handle (and every pending [`Responder`]) stops the task, as does
/// [`Handle::shutdown`].
///
/// ## Cancellation safety
///
/// All async methods are cancellation safe in the sense that dropping the future never
/// corrupts the task; a command already sent still runs (a publish may still go out).
pub struct Handle<Req, Resp> {
    pub(crate) commands: mpsc::Sender<Command<Req, Resp>>,
    pub(crate) local_peer_id: PeerId,
    pub(crate) counters: Arc<Counters>,
}

impl<Req, Resp> Clone for Handle<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            local_peer_id: self.local_peer_id,
            counters: Arc::clone(&self.counters),
        }
    }
}

impl<Req, Resp> fmt::Debug for Handle<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("local_peer_id", &self.local_peer_id)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> Handle<Req, Resp> {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command<Req, Resp>,
    ) -> Result<T, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| P2pError::Shutdown)?;
        rx.await.map_err(|_| P2pError::Shutdown)
    }

    /// Publishes `data` on the library topic.
    ///
    /// Returns [`PublishOutcome::NoPeers`] when no peer is subscribed (not an error), and
    /// [`P2pError::MessageTooLarge`] when `data` exceeds
    /// [`Config::max_gossip_bytes`](crate::Config::max_gossip_bytes).
    pub async fn publish(&self, data: Vec<u8>) -> Result<PublishOutcome, P2pError> {
        self.call(|reply| Command::Publish { data, reply }).await?
    }

    /// Reports the node's verdict on a gossip message received as [`Event::Gossip`].
    /// `Accept` forwards it to the mesh; `Reject` drops it and penalises
    /// `propagation_source` in the peer score; `Ignore` just drops it.
    pub async fn report_validation(
        &self,
        id: MessageId,
        propagation_source: PeerId,
        acceptance: Acceptance,
    ) {
        // After shutdown there is nothing left to validate for.
        let _ = self
            .commands
            .send(Command::ReportValidation {
                id,
                propagation_source,
                acceptance,
            })
            .await;
    }

    /// Sends `request` to `peer` (dialing it if needed and its address is known) and waits
    /// for the response, at most [`Config::request_timeout`](crate::Config::request_timeout).
    pub async fn request(&self, peer: PeerId, request: Req) -> Result<Resp, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Request {
                peer,
                request,
                reply,
            })
            .await
            .map_err(|_| RequestError::Shutdown)?;
        rx.await.map_err(|_| RequestError::Shutdown)?
    }

    /// Refuses a peer: its connections are closed and new ones (either way) are denied
    /// until [`Handle::unblock`]. Tests use it to partition a library.
    pub async fn block(&self, peer: PeerId) -> Result<(), P2pError> {
        self.commands
            .send(Command::Block { peer })
            .await
            .map_err(|_| P2pError::Shutdown)
    }

    /// Accepts a blocked peer again (the caller dials it if it wants a connection now).
    pub async fn unblock(&self, peer: PeerId) -> Result<(), P2pError> {
        self.commands
            .send(Command::Unblock { peer })
            .await
            .map_err(|_| P2pError::Shutdown)
    }

    /// Mutes a peer on gossip: none of its messages are taken and none are sent to it.
    /// gossipsub keeps sending to a peer whose subscription it already has, so the peer's
    /// connections are closed too; on a new connection (it may redial, and its requests are
    /// answered) gossipsub ignores it. The node mutes a peer whose device is not a member of
    /// the library.
    pub async fn mute(&self, peer: PeerId) -> Result<(), P2pError> {
        self.commands
            .send(Command::Mute { peer })
            .await
            .map_err(|_| P2pError::Shutdown)
    }

    /// Takes a muted peer's gossip again. gossipsub forgot its subscriptions while it was
    /// muted, so its connections are closed too: it is heard again once it reconnects.
    pub async fn unmute(&self, peer: PeerId) -> Result<(), P2pError> {
        self.commands
            .send(Command::Unmute { peer })
            .await
            .map_err(|_| P2pError::Shutdown)
    }

    /// Dials `addr` (with or without `/p2p/<id>`). Returns once the dial has started; the
    /// outcome arrives as [`Event::PeerConnected`] or [`Event::ConnectionFailed`].
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), P2pError> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// The peers with at least one open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerInfo>, P2pError> {
        self.call(|reply| Command::ConnectedPeers { reply }).await
    }

    /// The addresses the swarm listens on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, P2pError> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// Stops the swarm task and waits until the swarm is dropped (its connections closed
    /// and listeners released). Later commands fail with [`P2pError::Shutdown`]. Calling it
    /// twice is harmless.
    pub async fn shutdown(&self) {
        let _ = self.call(|reply| Command::Shutdown { reply }).await;
    }
}

/// The way to answer one inbound request, from [`Event::InboundRequest`].
///
/// Dropping it without answering is fine: the requester gets an error and nothing leaks.
pub struct Responder<Resp> {
    pub(crate) channel: ResponseChannel<Resp>,
    pub(crate) responses: mpsc::Sender<RespondCommand<Resp>>,
}

/// A response travelling back to the swarm task.
pub(crate) struct RespondCommand<Resp> {
    pub(crate) channel: ResponseChannel<Resp>,
    pub(crate) response: Resp,
}

impl<Resp> fmt::Debug for Responder<Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder").finish_non_exhaustive()
    }
}

impl<Resp> Responder<Resp> {
    /// Sends `response` to the requester. Fails with [`P2pError::Shutdown`] when the swarm
    /// task is gone; a requester that already gave up (timeout, closed connection) is not an
    /// error here, it is only logged by the swarm task.
    pub async fn respond(self, response: Resp) -> Result<(), P2pError> {
        self.responses
            .send(RespondCommand {
                channel: self.channel,
                response,
            })
            .await
            .map_err(|_| P2pError::Shutdown)
    }
}
