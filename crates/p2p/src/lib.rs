//! murmur's network layer: a libp2p swarm that moves opaque messages between the members
//! of one library. It knows nothing of SQL or CRDTs.
//!
//! # Layout
//!
//! - [`config`]: [`Config`], the identity, library key, topic, addresses and limits.
//! - `behaviour`: the composed libp2p behaviour and the transport stack — TCP (with DNS for
//!   `/dns4` peers) → private network (pnet, keyed by the library secret) → noise → yamux;
//!   gossipsub (signed, strict, manually validated, content-hash ids, peer scoring),
//!   request-response, identify, ping, mDNS (optional) and connection limits. No QUIC:
//!   pnet does not cover it.
//! - `codec`: the request-response codec, length-prefixed CBOR with hard size limits.
//! - `event_loop`: the one task that owns the `Swarm`.
//! - [`handle`]: [`Handle`] (commands with oneshot replies), [`Event`] and [`Responder`].
//! - `redial`: the backoff schedule of explicit peers; `failure`: classification of
//!   connection failures (a wrong library key shows up as a failed or hung handshake).
//! - [`error`] and [`stats`]: typed errors and counters.
//!
//! # Use
//!
//! [`spawn`] starts the task and returns a [`Handle`] and the receiver of [`Event`]s. The
//! node must drain the receiver, answer each [`Event::InboundRequest`] (or drop its
//! responder) and report a validation verdict for each [`Event::Gossip`]: with manual
//! validation, a message is forwarded to other peers only once accepted.
//!
//! # Discovery
//!
//! Explicit peers ([`Config::peers`]) are dialed at start and redialed with capped
//! exponential backoff after a failed dial or a lost connection. Peers found by mDNS are
//! dialed only by the side with the smaller peer id, so a pair makes one connection.
#![deny(missing_docs)]

mod behaviour;
mod codec;
pub mod config;
pub mod error;
mod event_loop;
mod failure;
pub mod handle;
mod redial;
pub mod stats;

use std::{fmt::Debug, sync::Arc};

use libp2p::gossipsub::IdentTopic;
use serde::{Serialize, de::DeserializeOwned};
use tokio::{sync::mpsc, time::Instant};
use tracing::Instrument;

pub use codec::SYNC_PROTOCOL;
#[doc(hidden)]
pub use codec::decode_frame;
pub use config::Config;
pub use error::{P2pError, RequestError};
pub use handle::{Acceptance, Discovery, Event, Handle, PeerInfo, PublishOutcome, Responder};
pub use libp2p::{Multiaddr, PeerId, gossipsub::MessageId, identity::Keypair};
pub use stats::Stats;

/// Capacity of the command channel from handles to the swarm task.
pub const COMMAND_CAP: usize = 256;
/// Capacity of the event channel from the swarm task to the node.
pub const EVENT_CAP: usize = 1024;

/// The receiver of a swarm's [`Event`]s. The node must keep draining it: when it falls
/// behind, gossip and inbound requests are dropped first (and counted in
/// [`Stats::events_dropped`]).
pub type Events<Req, Resp> = mpsc::Receiver<Event<Req, Resp>>;

/// Builds the swarm, starts listening, and spawns the task that owns it.
///
/// Returns the handle and the event receiver. Must be called within a tokio runtime.
/// Fails if the swarm cannot be built or an address of [`Config::listen`] is refused.
// The (handle, receiver) pair is the shape the node codes against; an alias would hide it.
#[allow(clippy::type_complexity)]
pub fn spawn<Req, Resp>(config: Config) -> Result<(Handle<Req, Resp>, Events<Req, Resp>), P2pError>
where
    Req: Serialize + DeserializeOwned + Send + Sync + Debug + 'static,
    Resp: Serialize + DeserializeOwned + Send + Sync + Debug + 'static,
{
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| P2pError::Build("spawn must be called within a tokio runtime".into()))?;
    let counters = Arc::new(stats::Counters::default());
    let topic = IdentTopic::new(config.topic.clone());
    let mut swarm = behaviour::build_swarm::<Req, Resp>(&config, &topic, Arc::clone(&counters))?;
    for address in &config.listen {
        swarm
            .listen_on(address.clone())
            .map_err(|e| P2pError::Listen {
                address: address.to_string(),
                reason: failure::chain(&e),
            })?;
    }
    let local_peer_id = *swarm.local_peer_id();
    let (command_tx, command_rx) = mpsc::channel(COMMAND_CAP);
    let (event_tx, event_rx) = mpsc::channel(EVENT_CAP);
    let redialer = redial::Redialer::new(
        &config.peers,
        config.redial_initial,
        config.redial_max,
        Instant::now(),
    );
    let event_loop = event_loop::EventLoop::new(
        swarm,
        command_rx,
        event_tx,
        topic,
        Arc::clone(&counters),
        config.max_gossip_bytes,
        redialer,
    );
    runtime.spawn(
        event_loop
            .run()
            .instrument(tracing::info_span!("p2p", peer = %local_peer_id)),
    );
    let handle = Handle {
        commands: command_tx,
        local_peer_id,
        counters,
    };
    Ok((handle, event_rx))
}
