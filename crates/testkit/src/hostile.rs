//! A hostile peer: a raw `murmur_p2p` swarm that holds the library secret (so it passes
//! pnet) but sends what an honest node never would: any bytes on the library topic, any
//! CBOR as a request or a response. Also the pair of honest nodes it attacks and the checks
//! that the node under attack kept its state.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use libp2p_identity::ed25519;
use murmur_node::device::DeviceBinding;
use murmur_node::identity::LibrarySecret;
use murmur_node::protocol::Gossip;
use murmur_p2p::{self as p2p, Event, Keypair};
use murmur_store::proof::{Hash, Signer};
use murmur_store::{Change, Op, OpsPage};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value as J, json};
use uuid::Uuid;

use crate::node::{TestNode, converged, wait_peers};
use crate::wait::eventually;

/// How long each wait of a hostile test lasts.
pub const WAIT: Duration = Duration::from_secs(20);

/// What the hostile peer puts on the wire: any well-formed CBOR, or CBOR that announces a
/// map of three entries and carries one (a truncated message inside a complete frame).
#[derive(Debug, Clone)]
pub enum Wire {
    /// Any CBOR value.
    Value(ciborium::Value),
    /// A map announced with three entries that carries one.
    Truncated,
}

impl Serialize for Wire {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Wire::Value(v) => v.serialize(s),
            Wire::Truncated => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("OpsSince", &0u8)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Wire {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ciborium::Value::deserialize(d).map(Wire::Value)
    }
}

impl Wire {
    /// `v` as CBOR.
    pub fn of<T: Serialize>(v: &T) -> Wire {
        Wire::Value(ciborium::Value::serialized(v).expect("serialisable"))
    }

    /// A CBOR byte string.
    pub fn bytes(b: &[u8]) -> Wire {
        Wire::Value(ciborium::Value::Bytes(b.to_vec()))
    }

    /// The value as a `T`, if it is one.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        match self {
            Wire::Value(v) => v.deserialized().ok(),
            Wire::Truncated => None,
        }
    }
}

/// How the hostile peer answers a request of the node (`None`: the request fails).
pub type Answer = Arc<dyn Fn(&Wire) -> Option<Wire> + Send + Sync>;

/// A hostile peer connected to one node.
pub struct Hostile {
    /// Its network handle.
    pub net: p2p::Handle<Wire, Wire>,
    /// The author it signs its ops as (an incarnation of its key).
    pub author: Uuid,
    /// Its signer.
    pub signer: Signer,
    /// Requests the node sent it.
    pub requests: Arc<AtomicUsize>,
    drain: tokio::task::JoinHandle<()>,
}

impl Hostile {
    /// Connects to `target`, waits until the target is subscribed to the topic (so what we
    /// publish reaches it), then answers the target's requests with `answer` (none: the
    /// request fails).
    pub async fn connect(
        secret: &Path,
        target: &TestNode,
        tweak: impl FnOnce(&mut p2p::Config),
        answer: Answer,
    ) -> Hostile {
        let secret = LibrarySecret::read(secret).expect("secret");
        let topic = format!("murmur/{}/ops", target.node().library_id());
        let keypair = Keypair::generate_ed25519();
        let signer =
            Signer::new_incarnation(keypair.clone().try_into_ed25519().expect("an ed25519 key"));
        let mut c = p2p::Config::new(keypair.clone(), secret.0, topic);
        c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
        c.mdns = false;
        c.peers = vec![target.addr().await];
        tweak(&mut c);
        let (net, mut events) = p2p::spawn::<Wire, Wire>(c).expect("hostile swarm");
        let target_id = target.node().peer_id();
        tokio::time::timeout(WAIT, async {
            while let Some(ev) = events.recv().await {
                match ev {
                    Event::Subscribed { peer_id } if peer_id == target_id => return,
                    // The node's pull may start before it subscribes: welcome it.
                    Event::InboundRequest {
                        request, responder, ..
                    } if matches!(
                        request.decode::<murmur_node::protocol::Request>(),
                        Some(murmur_node::protocol::Request::Hello { .. })
                    ) =>
                    {
                        let _ = responder
                            .respond(Wire::of(&murmur_node::protocol::Response::Welcome))
                            .await;
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("the node subscribes with the hostile peer");
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        let handle = net.clone();
        // Says which device it is, as every node does before asking anything (the node
        // answers a member's requests only). Its events are drained below.
        let hello = murmur_node::protocol::Request::Hello {
            device: murmur_node::device::DeviceBinding::sign(
                &keypair.clone().try_into_ed25519().expect("an ed25519 key"),
                &net.local_peer_id(),
            ),
        };
        let answer_hello = {
            let net = net.clone();
            let w = Wire::of(&hello);
            tokio::spawn(async move { net.request(target_id, w).await })
        };
        let drain = tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    Event::InboundRequest {
                        request, responder, ..
                    } => {
                        // A node's pull starts with its Hello: welcomed, not counted.
                        if matches!(
                            request.decode::<murmur_node::protocol::Request>(),
                            Some(murmur_node::protocol::Request::Hello { .. })
                        ) {
                            let _ = responder
                                .respond(Wire::of(&murmur_node::protocol::Response::Welcome))
                                .await;
                            continue;
                        }
                        seen.fetch_add(1, Ordering::SeqCst);
                        if let Some(resp) = answer(&request) {
                            let _ = responder.respond(resp).await;
                        }
                    }
                    Event::Gossip {
                        propagation_source,
                        message_id,
                        ..
                    } => {
                        handle
                            .report_validation(
                                message_id,
                                propagation_source,
                                p2p::Acceptance::Ignore,
                            )
                            .await
                    }
                    _ => {}
                }
            }
        });
        let _ = answer_hello.await;
        // Gossip from a peer that has not welcomed the node yet is left to catch-up: wait
        // for the node's Hello to be answered, so that what the test publishes is taken.
        // (A request past the Hello means the node was welcomed: it may have refused the
        // hostile peer since, which forgets it.)
        let me = net.local_peer_id();
        crate::wait::eventually(WAIT, "the node is welcomed by the hostile peer", || async {
            target.node().welcomed(&me) || requests.load(Ordering::SeqCst) > 0
        })
        .await;
        Hostile {
            net,
            author: signer.author(),
            signer,
            requests,
            drain,
        }
    }

    /// A hostile peer with the default network config that answers no request.
    pub async fn plain(secret: &Path, target: &TestNode) -> Hostile {
        Self::connect(secret, target, |_| {}, Arc::new(|_| None)).await
    }

    /// Shuts its swarm down.
    pub async fn stop(self) {
        self.net.shutdown().await;
        self.drain.abort();
    }
}

/// Sends `request` from `h` to `n` and returns what came back.
pub async fn ask(h: &Hostile, n: &TestNode, request: Wire) -> Result<Wire, p2p::RequestError> {
    h.net.request(n.node().peer_id(), request).await
}

/// A gossip message as a node publishes it.
pub fn gossip(msg: &Gossip) -> Vec<u8> {
    murmur_store::wire::to_cbor(msg)
}

/// A device binding for announcements refused before it is looked at: a fresh key's, for a
/// random peer id (it binds no one).
pub fn any_binding() -> DeviceBinding {
    DeviceBinding::sign(&ed25519::Keypair::generate(), &p2p::PeerId::random())
}

/// A gossip message of `ops` (consecutive, of `s`'s author) with their proof.
pub fn signed_ops(s: &Signer, ops: Vec<Op>) -> Vec<u8> {
    let proofs = vec![s.prove(Hash::ZERO, &ops)];
    gossip(&Gossip::Ops { ops, proofs })
}

/// Two honest nodes: `n`, the one under attack, and `a`, the honest peer, in sync.
pub async fn pair(secret: &Path) -> (TestNode, TestNode) {
    pair_with(secret, |_| {}).await
}

/// [`pair`] with `n` configured by `tweak`.
pub async fn pair_with(
    secret: &Path,
    tweak: impl FnOnce(&mut murmur_node::Config),
) -> (TestNode, TestNode) {
    let n = TestNode::new_with(secret, tweak).await;
    let a = TestNode::new(secret).await;
    a.connect(&n).await;
    wait_peers(&n, 1).await;
    a.create_tag("before").await;
    converged(&[&n, &a], WAIT).await;
    (n, a)
}

/// The node is responsive and its state is the honest peer's: an honest write on `a`
/// reaches `n`, both digests agree, and none of `hostile` authors left an op in `n`'s log.
pub async fn honest_write_still_syncs(n: &TestNode, a: &TestNode, hostile: &[Uuid], label: &str) {
    let u = a.create_tag(&format!("after {label}")).await;
    let path = format!("/v1/shared/tags/{u}");
    eventually(WAIT, "the honest write reaches the node", || async {
        n.get(&path).await.0 == 200
    })
    .await;
    converged(&[n, a], WAIT).await;
    let vv = n.node().store().version_vector();
    for h in hostile {
        assert!(
            !vv.authors.contains_key(h),
            "{label}: hostile author {h} has ops in the node's log"
        );
    }
}

/// Publishes `data` from a fresh hostile peer and waits until the node counted it under
/// `reason` and reported the message `Reject` to gossipsub; returns the peer's author.
pub async fn refused_gossip(
    secret: &Path,
    n: &TestNode,
    reason: &str,
    data: impl FnOnce(&Signer) -> Vec<u8>,
) -> Uuid {
    let h = Hostile::plain(secret, n).await;
    let before = n.rejected(reason);
    let net_before = n.node().net_stats().gossip_rejected;
    let outcome = h.net.publish(data(&h.signer)).await.expect("publish");
    assert_eq!(outcome, p2p::PublishOutcome::Published, "{reason}");
    eventually(WAIT, &format!("gossip counted as {reason}"), || async {
        n.rejected(reason) > before
    })
    .await;
    eventually(WAIT, "gossip reported Reject", || async {
        n.node().net_stats().gossip_rejected > net_before
    })
    .await;
    let author = h.author;
    h.stop().await;
    author
}

/// A page's items, as the server counts them (ops plus owned rows).
pub fn items(page: &OpsPage) -> usize {
    page.changes.iter().map(Change::weight).sum()
}

/// A config tweak: the node keeps its log for an hour (a pruned log answers an empty
/// version vector with `SnapshotRequired`).
pub fn keep_log(c: &mut murmur_node::Config) {
    c.prune_interval = Duration::from_secs(3600);
}

/// Writes `n` owned `file_paths` rows on `a`, 2,000 per request.
pub async fn many_owned_rows(a: &TestNode, n: usize) {
    for start in (0..n).step_by(2_000) {
        let rows: Vec<J> = (start..(start + 2_000).min(n))
            .map(|i| json!({"materialized_path": "/m", "name": format!("f{i}"), "size_bytes": i}))
            .collect();
        let (status, body) = a.post("/v1/owned/file_paths", J::Array(rows)).await;
        assert_eq!(status, 201, "{body}");
    }
}

/// This process's resident memory in KiB (0 where `/proc` does not say).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
