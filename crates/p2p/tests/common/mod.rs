//! Shared helpers: start nodes on loopback, drive their events, wait with deadlines.
#![allow(dead_code)]

use std::time::Duration;

use libp2p::multiaddr::Protocol;
use murmur_p2p::{Acceptance, Config, Discovery, Event, Handle, Keypair, Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::{sync::mpsc, time::timeout};

/// Requests of the test protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Req {
    /// Answer with the same bytes.
    Echo(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Answer with this many bytes.
    Size(u64),
}

/// Responses of the test protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resp(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// What a node's driver saw, forwarded to the test.
#[derive(Debug, Clone)]
pub enum Seen {
    Listening(Multiaddr),
    Connected(PeerId, Discovery),
    Disconnected(PeerId),
    Subscribed(PeerId),
    Gossip {
        source: PeerId,
        propagation_source: PeerId,
        data: Vec<u8>,
        verdict: Acceptance,
    },
    Request(PeerId),
    Failed {
        reason: String,
        probable_key_mismatch: bool,
    },
}

pub const DEADLINE: Duration = Duration::from_secs(15);

pub struct Node {
    pub handle: Handle<Req, Resp>,
    pub seen: mpsc::Receiver<Seen>,
    pub peer_id: PeerId,
    /// The loopback listen address, with `/p2p/<id>`.
    pub addr: Multiaddr,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A loopback config: mDNS off, fast heartbeat, short handshake timeout.
pub fn config(secret: [u8; 32], peers: Vec<Multiaddr>) -> Config {
    let mut config = Config::new(Keypair::generate_ed25519(), secret, "murmur-test");
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
    config.peers = peers;
    config.mdns = false;
    config.heartbeat_interval = Duration::from_millis(100);
    config.handshake_timeout = Duration::from_secs(1);
    config.redial_initial = Duration::from_millis(100);
    config
}

/// Starts a node whose driver rejects gossip starting with `BAD` and accepts the rest,
/// and answers requests (`Echo` echoes, except `DROP`, which it drops unanswered;
/// `Size(n)` returns `n` bytes).
pub async fn start(config: Config) -> Node {
    let (handle, mut events) = murmur_p2p::spawn::<Req, Resp>(config).expect("spawn");
    let (tx, mut seen) = mpsc::channel(1024);
    let driver = handle.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let record = match event {
                Event::Listening { address } => Seen::Listening(address),
                Event::PeerConnected {
                    peer_id, discovery, ..
                } => Seen::Connected(peer_id, discovery),
                Event::PeerDisconnected { peer_id } => Seen::Disconnected(peer_id),
                Event::Subscribed { peer_id } => Seen::Subscribed(peer_id),
                Event::Unsubscribed { .. } => continue,
                Event::Gossip {
                    source,
                    propagation_source,
                    message_id,
                    data,
                } => {
                    let verdict = if data.starts_with(b"BAD") {
                        Acceptance::Reject
                    } else {
                        Acceptance::Accept
                    };
                    driver
                        .report_validation(message_id, propagation_source, verdict)
                        .await;
                    Seen::Gossip {
                        source,
                        propagation_source,
                        data,
                        verdict,
                    }
                }
                Event::InboundRequest {
                    peer_id,
                    request,
                    responder,
                } => {
                    let response = match request {
                        // Dropping the responder must only fail the requester's call.
                        Req::Echo(bytes) if bytes == b"DROP" => None,
                        Req::Echo(bytes) => Some(Resp(bytes)),
                        Req::Size(n) => Some(Resp(vec![0xab; usize::try_from(n).unwrap_or(0)])),
                    };
                    match response {
                        Some(response) => {
                            let _ = responder.respond(response).await;
                        }
                        None => drop(responder),
                    }
                    Seen::Request(peer_id)
                }
                Event::ConnectionFailed {
                    reason,
                    probable_key_mismatch,
                    ..
                } => Seen::Failed {
                    reason,
                    probable_key_mismatch,
                },
            };
            if tx.send(record).await.is_err() {
                // The test stopped listening; keep driving the node.
            }
        }
    });
    let peer_id = handle.local_peer_id();
    let listening = wait_for(&mut seen, "listening", |s| match s {
        Seen::Listening(a) => Some(a.clone()),
        _ => None,
    })
    .await;
    Node {
        addr: listening.with(Protocol::P2p(peer_id)),
        handle,
        seen,
        peer_id,
    }
}

/// Consumes `seen` until `pick` returns a value, failing the test after [`DEADLINE`].
pub async fn wait_for<T>(
    seen: &mut mpsc::Receiver<Seen>,
    what: &str,
    mut pick: impl FnMut(&Seen) -> Option<T>,
) -> T {
    let found = timeout(DEADLINE, async {
        while let Some(s) = seen.recv().await {
            if let Some(v) = pick(&s) {
                return Some(v);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(v)) => v,
        Ok(None) => panic!("event stream ended while waiting for {what}"),
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// Waits until `node` has seen every peer of `peers` subscribe to the topic.
pub async fn wait_subscribed(node: &mut Node, peers: &[PeerId]) {
    let mut missing: Vec<PeerId> = peers.to_vec();
    let me = node.peer_id;
    while !missing.is_empty() {
        let got = wait_for(
            &mut node.seen,
            &format!("{me}: subscriptions of {missing:?}"),
            |s| match s {
                Seen::Subscribed(p) => Some(*p),
                _ => None,
            },
        )
        .await;
        missing.retain(|p| *p != got);
    }
}

/// Waits until `node` receives gossip `data` authored by `source`; returns the verdict.
pub async fn wait_gossip(node: &mut Node, source: PeerId, data: &[u8]) -> Acceptance {
    let me = node.peer_id;
    wait_for(
        &mut node.seen,
        &format!(
            "{me}: gossip {:?} from {source}",
            String::from_utf8_lossy(data)
        ),
        |s| match s {
            Seen::Gossip {
                source: got,
                data: d,
                verdict,
                ..
            } if *got == source && d.as_slice() == data => Some(*verdict),
            _ => None,
        },
    )
    .await
}
