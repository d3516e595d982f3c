//! Several swarms in one process over loopback TCP (pnet + noise + yamux), mDNS off.

mod common;

use common::{
    Node, Req, Resp, Seen, config, init_tracing, start, wait_for, wait_gossip, wait_subscribed,
};
use murmur_p2p::{Acceptance, Discovery, P2pError, PublishOutcome, RequestError};

const SECRET: [u8; 32] = [7; 32];

/// n1 ← n2 ← n3: a chain, so n3's messages reach n1 only through n2's validation.
async fn chain() -> (Node, Node, Node) {
    let mut n1 = start(config(SECRET, vec![])).await;
    let mut n2 = start(config(SECRET, vec![n1.addr.clone()])).await;
    let mut n3 = start(config(SECRET, vec![n2.addr.clone()])).await;
    let (p1, p2, p3) = (n1.peer_id, n2.peer_id, n3.peer_id);
    wait_subscribed(&mut n1, &[p2]).await;
    wait_subscribed(&mut n2, &[p1, p3]).await;
    wait_subscribed(&mut n3, &[p2]).await;
    (n1, n2, n3)
}

#[tokio::test]
async fn gossip_reaches_every_peer_with_its_verified_source() {
    init_tracing();
    let (mut n1, mut n2, mut n3) = chain().await;
    let peers = n2.handle.connected_peers().await.expect("running");
    assert_eq!(peers.len(), 2, "n2 is connected to n1 and n3: {peers:?}");
    let from_n1 = peers
        .iter()
        .find(|p| p.peer_id == n1.peer_id)
        .expect("n1 listed");
    assert_eq!(from_n1.discovery, Discovery::Configured);
    assert!(!from_n1.addresses.is_empty());

    for (i, author) in [n1.peer_id, n2.peer_id, n3.peer_id].into_iter().enumerate() {
        let data = format!("hello from node {}", i + 1).into_bytes();
        let publisher = [&n1, &n2, &n3][i].handle.clone();
        assert_eq!(
            publisher.publish(data.clone()).await.expect("publish"),
            PublishOutcome::Published
        );
        for node in [&mut n1, &mut n2, &mut n3] {
            if node.peer_id != author {
                assert_eq!(wait_gossip(node, author, &data).await, Acceptance::Accept);
            }
        }
    }
    // n3's message reached n1 through n2: the source is the author, not the relay.
    assert!(n1.handle.stats().gossip_received >= 2);
    assert!(n3.handle.stats().gossip_published == 1);

    // The same payload again is a duplicate, not an error; an oversized one is an error.
    assert_eq!(
        n1.handle
            .publish(b"hello from node 1".to_vec())
            .await
            .expect("publish"),
        PublishOutcome::Duplicate
    );
    let too_big = vec![1u8; murmur_p2p::config::DEFAULT_MAX_GOSSIP_BYTES + 1];
    assert!(matches!(
        n1.handle.publish(too_big).await,
        Err(P2pError::MessageTooLarge { .. })
    ));

    n1.handle.shutdown().await;
    assert!(matches!(
        n1.handle.publish(b"x".to_vec()).await,
        Err(P2pError::Shutdown)
    ));
    assert!(matches!(
        n1.handle.listen_addrs().await,
        Err(P2pError::Shutdown)
    ));
    wait_for(&mut n2.seen, "n1 disconnects", |s| {
        matches!(s, Seen::Disconnected(p) if *p == n1.peer_id).then_some(())
    })
    .await;
}

#[tokio::test]
async fn publishing_alone_is_not_an_error() {
    init_tracing();
    let n1 = start(config(SECRET, vec![])).await;
    assert_eq!(
        n1.handle
            .publish(b"anyone?".to_vec())
            .await
            .expect("publish"),
        PublishOutcome::NoPeers
    );
    assert_eq!(n1.handle.listen_addrs().await.expect("running").len(), 1);
}

#[tokio::test]
async fn request_response_limits() {
    init_tracing();
    const LIMIT: usize = 64 * 1024;
    let mut c1 = config(SECRET, vec![]);
    c1.max_response_bytes = LIMIT;
    c1.max_request_bytes = LIMIT;
    let n1 = start(c1).await;
    // n2 accepts bigger responses than n1 is willing to send, and sends bigger ones than
    // n1 is willing to read.
    let mut c2 = config(SECRET, vec![n1.addr.clone()]);
    c2.max_response_bytes = 4 * LIMIT;
    let mut n2 = start(c2).await;
    wait_for(&mut n2.seen, "n2 connects", |s| {
        matches!(s, Seen::Connected(..)).then_some(())
    })
    .await;

    // Round trip.
    let echo = n1
        .handle
        .request(n2.peer_id, Req::Echo(b"ping".to_vec()))
        .await;
    assert_eq!(echo, Ok(Resp(b"ping".to_vec())));

    // Near the limit (CBOR adds a few bytes of framing to the byte string).
    let near = (LIMIT - 16) as u64;
    let resp = n2
        .handle
        .request(n1.peer_id, Req::Size(near))
        .await
        .expect("fits");
    assert_eq!(resp.0.len() as u64, near);

    // Over the responder's limit: it refuses to send, the requester gets TooLarge at once.
    let over = n2
        .handle
        .request(n1.peer_id, Req::Size(LIMIT as u64 + 1))
        .await;
    assert!(matches!(over, Err(RequestError::TooLarge(_))), "{over:?}");
    assert!(n1.handle.stats().rejected_responses >= 1);

    // Over the requester's limit: n2 sends it, n1 refuses it on reading the length.
    let over = n1
        .handle
        .request(n2.peer_id, Req::Size(2 * LIMIT as u64))
        .await;
    assert!(matches!(over, Err(RequestError::TooLarge(_))), "{over:?}");

    // A request over our own limit is not sent.
    let over = n1
        .handle
        .request(n2.peer_id, Req::Echo(vec![0; LIMIT + 1]))
        .await;
    assert!(matches!(over, Err(RequestError::TooLarge(_))), "{over:?}");

    // A request the responder drops unanswered fails cleanly.
    let dropped = n1
        .handle
        .request(n2.peer_id, Req::Echo(b"DROP".to_vec()))
        .await;
    assert!(matches!(dropped, Err(RequestError::Io(_))), "{dropped:?}");

    // Both keep working.
    let echo = n2
        .handle
        .request(n1.peer_id, Req::Echo(b"still here".to_vec()))
        .await;
    assert_eq!(echo, Ok(Resp(b"still here".to_vec())));
    let echo = n1
        .handle
        .request(n2.peer_id, Req::Echo(b"me too".to_vec()))
        .await;
    assert_eq!(echo, Ok(Resp(b"me too".to_vec())));
    let stats = n1.handle.stats();
    assert!(
        stats.requests_out >= 4 && stats.request_failures >= 2,
        "{stats:?}"
    );
}

#[tokio::test]
async fn malformed_request_is_refused_by_the_codec() {
    init_tracing();
    let n1 = start(config(SECRET, vec![])).await;
    // A peer speaking the same protocol name with another request type: its requests do
    // not decode on n1.
    let (odd, _odd_events) =
        murmur_p2p::spawn::<String, Resp>(config(SECRET, vec![n1.addr.clone()])).expect("spawn");
    let result = odd.request(n1.peer_id, "not a Req".to_owned()).await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(n1.handle.stats().rejected_requests, 1);
    assert_eq!(n1.handle.stats().requests_in, 0);
    // n1 still answers well-formed requests.
    let mut n3 = start(config(SECRET, vec![n1.addr.clone()])).await;
    wait_for(&mut n3.seen, "n3 connects", |s| {
        matches!(s, Seen::Connected(..)).then_some(())
    })
    .await;
    let echo = n3
        .handle
        .request(n1.peer_id, Req::Echo(b"ok".to_vec()))
        .await;
    assert_eq!(echo, Ok(Resp(b"ok".to_vec())));
}

#[tokio::test]
async fn another_library_secret_cannot_connect() {
    init_tracing();
    let mut n1 = start(config(SECRET, vec![])).await;
    let mut stranger = start(config([9; 32], vec![n1.addr.clone()])).await;
    let (reason, mismatch) = wait_for(&mut stranger.seen, "a connection failure", |s| match s {
        Seen::Connected(p, _) => panic!("connected to {p} with another secret"),
        Seen::Failed {
            reason,
            probable_key_mismatch,
        } => Some((reason.clone(), *probable_key_mismatch)),
        _ => None,
    })
    .await;
    assert!(mismatch, "{reason}");
    assert!(reason.contains("probable library key mismatch"), "{reason}");
    assert!(stranger.handle.stats().connection_failures >= 1);

    // Same secret: connects.
    let mut friend = start(config(SECRET, vec![n1.addr.clone()])).await;
    let friend_id = friend.peer_id;
    wait_for(&mut friend.seen, "friend connects", |s| {
        matches!(s, Seen::Connected(p, Discovery::Configured) if *p == n1.peer_id).then_some(())
    })
    .await;
    // n1 only ever connects to the friend.
    wait_for(&mut n1.seen, "n1 sees the friend", |s| match s {
        Seen::Connected(p, _) if *p == friend_id => Some(()),
        Seen::Connected(p, _) => panic!("n1 connected to {p}"),
        _ => None,
    })
    .await;
    let peers = n1.handle.connected_peers().await.expect("running");
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].discovery, Discovery::Inbound);
}

#[tokio::test]
async fn rejected_gossip_does_not_stop_the_receiver() {
    init_tracing();
    let (mut n1, mut n2, mut n3) = chain().await;
    let (p1, p2, p3) = (n1.peer_id, n2.peer_id, n3.peer_id);

    // Malformed (the driver rejects it): n2 rejects and so does not forward it to n3.
    let bad = b"BAD: not an operation".to_vec();
    assert_eq!(
        n1.handle.publish(bad.clone()).await.expect("publish"),
        PublishOutcome::Published
    );
    assert_eq!(wait_gossip(&mut n2, p1, &bad).await, Acceptance::Reject);
    assert_eq!(n2.handle.stats().gossip_rejected, 1);

    // Valid messages still flow everywhere, from the offender too.
    let good = b"a valid batch".to_vec();
    assert_eq!(
        n2.handle.publish(good.clone()).await.expect("publish"),
        PublishOutcome::Published
    );
    assert_eq!(wait_gossip(&mut n1, p2, &good).await, Acceptance::Accept);
    assert_eq!(wait_gossip(&mut n3, p2, &good).await, Acceptance::Accept);
    let later = b"n1 again, valid".to_vec();
    assert_eq!(
        n1.handle.publish(later.clone()).await.expect("publish"),
        PublishOutcome::Published
    );
    assert_eq!(wait_gossip(&mut n2, p1, &later).await, Acceptance::Accept);
    assert_eq!(wait_gossip(&mut n3, p1, &later).await, Acceptance::Accept);
    let from3 = b"n3 says hi".to_vec();
    assert_eq!(
        n3.handle.publish(from3.clone()).await.expect("publish"),
        PublishOutcome::Published
    );
    assert_eq!(wait_gossip(&mut n1, p3, &from3).await, Acceptance::Accept);
    // n3 never saw the rejected message: the relay dropped it.
    assert_eq!(n3.handle.stats().gossip_rejected, 0);
}

#[tokio::test]
async fn oversized_gossip_is_rejected_by_the_receiver() {
    init_tracing();
    let mut n1 = start(config(SECRET, vec![])).await;
    let mut c2 = config(SECRET, vec![n1.addr.clone()]);
    c2.max_gossip_bytes = 1024;
    let mut n2 = start(c2).await;
    wait_subscribed(&mut n1, &[n2.peer_id]).await;
    wait_subscribed(&mut n2, &[n1.peer_id]).await;
    let big = vec![b'x'; 4096];
    assert_eq!(
        n1.handle.publish(big).await.expect("publish"),
        PublishOutcome::Published
    );
    let small = b"small".to_vec();
    assert_eq!(
        n1.handle.publish(small.clone()).await.expect("publish"),
        PublishOutcome::Published
    );
    // The big one never surfaces; the small one does.
    wait_for(&mut n2.seen, "the small message", |s| match s {
        Seen::Gossip { data, .. } if data.len() > 1024 => panic!("oversized gossip delivered"),
        Seen::Gossip { data, .. } if *data == small => Some(()),
        _ => None,
    })
    .await;
    let stats = n2.handle.stats();
    assert_eq!(stats.gossip_rejected, 1, "{stats:?}");
}

/// A free loopback port (bound then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("bound").port()
}

#[tokio::test]
async fn explicit_peers_are_redialed_after_failure_and_after_loss() {
    init_tracing();
    let port = free_port();
    let target: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("valid");
    // Nothing listens there yet: the dial fails, and it is not a key mismatch.
    let mut n2 = start(config(SECRET, vec![target.clone()])).await;
    let (reason, mismatch) = wait_for(&mut n2.seen, "a refused dial", |s| match s {
        Seen::Failed {
            reason,
            probable_key_mismatch,
        } => Some((reason.clone(), *probable_key_mismatch)),
        _ => None,
    })
    .await;
    assert!(!mismatch, "{reason}");

    // The peer appears: the backoff redial finds it.
    let mut c1 = config(SECRET, vec![]);
    c1.listen = vec![target.clone()];
    let n1 = start(c1).await;
    let first = n1.peer_id;
    wait_for(&mut n2.seen, "connection to the new peer", |s| {
        matches!(s, Seen::Connected(p, Discovery::Configured) if *p == first).then_some(())
    })
    .await;

    // The peer goes away and another one takes its address: n2 reconnects by itself.
    n1.handle.shutdown().await;
    wait_for(&mut n2.seen, "the loss", |s| {
        matches!(s, Seen::Disconnected(p) if *p == first).then_some(())
    })
    .await;
    let mut c1 = config(SECRET, vec![]);
    c1.listen = vec![target];
    let n1b = start(c1).await;
    let second = n1b.peer_id;
    wait_for(&mut n2.seen, "reconnection", |s| {
        matches!(s, Seen::Connected(p, Discovery::Configured) if *p == second).then_some(())
    })
    .await;
}
