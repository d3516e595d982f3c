//! Configuration of a swarm: identity, library key, topic, addresses and limits.

use std::{net::Ipv4Addr, time::Duration};

use libp2p::{Multiaddr, identity::Keypair, multiaddr::Protocol};

/// Default cap on the payload of one gossip message (1 MiB).
pub const DEFAULT_MAX_GOSSIP_BYTES: usize = 1024 * 1024;
/// Default cap on one encoded request (64 KiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Default cap on one encoded response (16 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Everything [`spawn`](crate::spawn) needs to start a swarm.
///
/// Build it with [`Config::new`], which fills in defaults suited to a LAN cluster, then
/// adjust the public fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's identity; its public key is the [`PeerId`](libp2p::PeerId).
    pub keypair: Keypair,
    /// The library's 32-byte secret, used as the private-network (pnet) pre-shared key. A
    /// peer without it cannot finish a handshake.
    pub library_secret: [u8; 32],
    /// The gossipsub topic of the library.
    pub topic: String,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/0`. Only TCP is supported (pnet does
    /// not cover QUIC).
    pub listen: Vec<Multiaddr>,
    /// Explicit peers, dialed at start and redialed with backoff after a failure or a lost
    /// connection. With or without a trailing `/p2p/<id>`; `/dns4/<name>/tcp/<port>` works.
    pub peers: Vec<Multiaddr>,
    /// Whether to discover peers by mDNS on the local network.
    pub mdns: bool,
    /// How often mDNS queries the network (the libp2p default of 5 minutes is too slow to
    /// notice a newcomer on a LAN).
    pub mdns_query_interval: Duration,
    /// Largest gossip payload accepted or published, in bytes.
    pub max_gossip_bytes: usize,
    /// Largest encoded request accepted or sent, in bytes.
    pub max_request_bytes: usize,
    /// Largest encoded response accepted or sent, in bytes.
    pub max_response_bytes: usize,
    /// How long a request may wait for its response.
    pub request_timeout: Duration,
    /// How long a connection with no active protocol stays open. Gossipsub keeps its mesh
    /// connections alive anyway; this covers the others.
    pub idle_timeout: Duration,
    /// Deadline for the whole connection upgrade (pnet, noise, yamux). Kept short: with a
    /// wrong library key the pnet handshake may hang instead of failing.
    pub handshake_timeout: Duration,
    /// gossipsub heartbeat (mesh maintenance and lazy gossip).
    pub heartbeat_interval: Duration,
    /// First delay before redialing an explicit peer; doubles on each failure.
    pub redial_initial: Duration,
    /// Cap of the redial backoff.
    pub redial_max: Duration,
    /// Maximum number of established connections, all peers together.
    pub max_connections: u32,
    /// Maximum number of concurrent request-response streams per connection.
    pub max_concurrent_streams: usize,
}

impl Config {
    /// A configuration with defaults: listen on all IPv4 interfaces on a random port, no
    /// explicit peers, mDNS on, 1 MiB gossip, 64 KiB requests, 16 MiB responses, 30 s
    /// request timeout, 10 min idle timeout, 5 s handshake timeout.
    pub fn new(keypair: Keypair, library_secret: [u8; 32], topic: impl Into<String>) -> Self {
        Self {
            keypair,
            library_secret,
            topic: topic.into(),
            listen: vec![
                Multiaddr::empty()
                    .with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED))
                    .with(Protocol::Tcp(0)),
            ],
            peers: Vec::new(),
            mdns: true,
            mdns_query_interval: Duration::from_secs(5),
            max_gossip_bytes: DEFAULT_MAX_GOSSIP_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            handshake_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_millis(500),
            redial_initial: Duration::from_millis(500),
            redial_max: Duration::from_secs(30),
            max_connections: 256,
            max_concurrent_streams: 64,
        }
    }
}
