//! Measures publish-to-receive latency across 3 swarms and request-response round trips,
//! over loopback TCP with the full stack (pnet + noise + yamux), mDNS off.
//!
//! ```sh
//! cargo run --release -p murmur-p2p --example latency -- [messages] [payload bytes]
//! ```

use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use murmur_p2p::{Acceptance, Config, Event, Handle, Keypair, Multiaddr, PublishOutcome};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Serialize, Deserialize)]
struct Ping(#[serde(with = "serde_bytes")] Vec<u8>);

type Node = (
    Handle<Ping, Ping>,
    mpsc::Receiver<Event<Ping, Ping>>,
    Multiaddr,
);

async fn node(peers: Vec<Multiaddr>) -> Node {
    let mut config = Config::new(Keypair::generate_ed25519(), [1; 32], "latency");
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")];
    config.peers = peers;
    config.mdns = false;
    config.heartbeat_interval = Duration::from_millis(100);
    let (handle, mut events) = murmur_p2p::spawn(config).expect("spawn");
    let addr = loop {
        if let Some(Event::Listening { address }) = events.recv().await {
            break address.with(Protocol::P2p(handle.local_peer_id()));
        }
    };
    (handle, events, addr)
}

/// Accepts gossip (forwarding the arrival time of each message), answers requests.
fn drive(
    handle: Handle<Ping, Ping>,
    mut events: mpsc::Receiver<Event<Ping, Ping>>,
) -> mpsc::Receiver<(Vec<u8>, Instant)> {
    let (tx, rx) = mpsc::channel(4096);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::Gossip {
                    propagation_source,
                    message_id,
                    data,
                    ..
                } => {
                    let at = Instant::now();
                    handle
                        .report_validation(message_id, propagation_source, Acceptance::Accept)
                        .await;
                    let _ = tx.send((data, at)).await;
                }
                Event::InboundRequest {
                    request, responder, ..
                } => {
                    let _ = responder.respond(request).await;
                }
                _ => {}
            }
        }
    });
    rx
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms  (n={})",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
        samples.len()
    )
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);

    let (h1, e1, a1) = node(vec![]).await;
    let (h2, e2, a2) = node(vec![a1.clone()]).await;
    let (h3, e3, _) = node(vec![a1, a2]).await;
    let _r1 = drive(h1.clone(), e1);
    let mut r2 = drive(h2.clone(), e2);
    let mut r3 = drive(h3.clone(), e3);

    // Wait until publishing reaches both peers.
    let warmup = Instant::now();
    loop {
        if h1
            .publish(format!("warmup {:?}", Instant::now()).into_bytes())
            .await
            .expect("publish")
            == PublishOutcome::Published
            && h1.connected_peers().await.expect("running").len() == 2
        {
            break;
        }
        assert!(
            warmup.elapsed() < Duration::from_secs(10),
            "swarms did not connect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    while r2.try_recv().is_ok() || r3.try_recv().is_ok() {}

    let mut gossip = Vec::with_capacity(2 * count);
    for i in 0..count {
        let mut data = vec![0u8; size.max(8)];
        data[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let sent = Instant::now();
        assert_eq!(
            h1.publish(data.clone()).await.expect("publish"),
            PublishOutcome::Published
        );
        for rx in [&mut r2, &mut r3] {
            loop {
                let (got, at) = rx.recv().await.expect("driver running");
                if got == data {
                    gossip.push(at - sent);
                    break;
                }
            }
        }
    }
    println!(
        "gossip {size} B, 1 -> 2 and 1 -> 3: {}",
        percentiles(gossip)
    );

    let mut rtt = Vec::with_capacity(count);
    for _ in 0..count {
        let sent = Instant::now();
        h1.request(h2.local_peer_id(), Ping(vec![0; size]))
            .await
            .expect("round trip");
        rtt.push(sent.elapsed());
    }
    println!(
        "request-response {size} B round trip:  {}",
        percentiles(rtt)
    );
    for h in [h1, h2, h3] {
        h.shutdown().await;
    }
}
