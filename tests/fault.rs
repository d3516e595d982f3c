//! A randomized fault test: random writes (creates, updates, deletes, relations, owned
//! batches and deletes) on random nodes while the test partitions the nodes into random
//! groups, heals them, restarts nodes on their data, and drops gossip. After the faults
//! stop, every node must converge within a deadline to the digest of a reference replica
//! that applied every acknowledged write in timestamp order: so every acknowledged write is
//! present, or correctly superseded or deleted.
//!
//! The short run is part of `cargo test`. Longer runs, and replays:
//!
//! ```sh
//! MURMUR_FAULT_SEEDS=20 MURMUR_FAULT_NODES=7 MURMUR_FAULT_ROUNDS=40 cargo test --release --test fault -- --nocapture
//! MURMUR_FAULT_SEED=<seed> cargo test --test fault -- --nocapture      # replay one seed
//! ```

use std::time::{Duration, Instant};

use murmur::store::{Change, Origin, Store, StoreOptions};
use murmur_testkit::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn heal(nodes: &[TestNode]) {
    for a in nodes {
        if a.node.is_none() {
            continue;
        }
        a.node().set_gossip_drop_rate(0.0);
        for b in nodes {
            if b.node.is_some() && a.node().peer_id() != b.node().peer_id() {
                let _ = a.node().unblock(b.node().peer_id()).await;
            }
        }
    }
    // Dial every pair again (blocked dials failed; the redialer is for configured peers).
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            if a.node.is_some() && b.node.is_some() {
                let _ = a.node().dial(b.addr().await).await;
            }
        }
    }
}

async fn run(seed: u64, n: usize, rounds: u64) {
    println!(
        "fault test: seed {seed}, {n} nodes, {rounds} rounds (replay with MURMUR_FAULT_SEED={seed})"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let (_sd, secret) = secret_file();
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(TestNode::new(&secret).await);
    }
    heal(&nodes).await;
    let mut acked: Vec<(Vec<Change>, Vec<murmur::store::proof::Proof>)> = Vec::new();
    let mut log = Vec::new();
    for round in 0..rounds {
        // A fault.
        match rng.random_range(0..5) {
            0 | 1 => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut rng);
                let groups = rng.random_range(2..=3usize);
                let group_of: Vec<usize> = (0..n)
                    .map(|i| order.iter().position(|&o| o == i).unwrap_or(0) % groups)
                    .collect();
                for i in 0..n {
                    for j in 0..n {
                        if i != j
                            && group_of[i] != group_of[j]
                            && nodes[i].node.is_some()
                            && nodes[j].node.is_some()
                        {
                            let peer = nodes[j].node().peer_id();
                            let _ = nodes[i].node().block(peer).await;
                        }
                    }
                }
                log.push(format!("round {round}: partition {group_of:?}"));
            }
            2 => {
                heal(&nodes).await;
                log.push(format!("round {round}: heal"));
            }
            3 => {
                let i = rng.random_range(0..n);
                let stopped = nodes[i].node.is_none();
                nodes[i].restart_with(|_| {}).await;
                // Blocks live in memory: a restarted node starts unpartitioned and dials all.
                for j in 0..n {
                    if j != i && nodes[j].node.is_some() {
                        let addr = nodes[j].addr().await;
                        let _ = nodes[i].node().dial(addr).await;
                    }
                }
                log.push(format!(
                    "round {round}: restart node {i}{}",
                    if stopped { " (was stopped)" } else { "" }
                ));
            }
            _ => {
                let i = rng.random_range(0..n);
                let rate = if rng.random_bool(0.3) {
                    0.0
                } else {
                    rng.random_range(0.3..0.9)
                };
                if nodes[i].node.is_some() {
                    nodes[i].node().set_gossip_drop_rate(rate);
                }
                log.push(format!(
                    "round {round}: node {i} drops {:.0}% of gossip",
                    rate * 100.0
                ));
            }
        }
        // Sometimes a node is down for a while.
        if rng.random_bool(0.15) {
            let i = rng.random_range(0..n);
            nodes[i].stop().await;
            log.push(format!("round {round}: stop node {i}"));
        }
        // Writes on running nodes, each acknowledged (committed) before it is published.
        for _ in 0..rng.random_range(5..25) {
            let i = rng.random_range(0..n);
            let Some(node) = nodes[i].node.as_ref() else {
                continue;
            };
            // Published by the node's commit feed, as every commit is.
            let signed = random_write_signed(node.store(), &mut rng).await;
            if !signed.0.is_empty() {
                acked.push(signed);
            }
        }
        // Let sync run into the next fault: wait for a few changes to be applied on some
        // running node, with a random deadline, so faults land while sync is under way.
        if let Some(t) = nodes
            .iter()
            .filter(|t| t.node.is_some())
            .nth(rng.random_range(0..n))
        {
            let mut events = t.node().subscribe();
            let wait = Duration::from_millis(rng.random_range(5..200));
            let _ = tokio::time::timeout(wait, async {
                for _ in 0..rng.random_range(1..20) {
                    if events.recv().await.is_err() {
                        break;
                    }
                }
            })
            .await;
        }
    }
    // The faults stop: start stopped nodes, heal everything.
    for t in nodes.iter_mut() {
        if t.node.is_none() {
            t.restart_with(|_| {}).await;
        }
    }
    heal(&nodes).await;

    // The reference: every acknowledged write, with its proofs (which also tell the
    // reference each author's device, the owner of its owned rows), on a fresh store. The
    // merges do not depend on the order.
    let dir = tempfile::tempdir().expect("temp dir");
    let reference = Store::open(StoreOptions::new(
        dir.path().join("ref.db"),
        murmur_testkit::device_key(u128::MAX),
    ))
    .await
    .expect("reference store");
    for (changes, proofs) in acked.clone() {
        reference
            .apply_signed(changes, proofs, Origin::CatchUp)
            .await
            .expect("reference apply");
    }
    let want = reference.digest().await.expect("digest");
    let started = Instant::now();
    let deadline = Duration::from_secs(90);
    loop {
        let mut digests = Vec::new();
        for t in &nodes {
            digests.push(t.digest().await);
        }
        if digests.iter().all(|d| *d == want.digest) {
            break;
        }
        if started.elapsed() > deadline {
            panic!(
                "seed {seed}: no convergence within {deadline:?}: want {} ({} rows), got {digests:?}\n{}",
                want.digest,
                want.rows,
                log.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "fault test: seed {seed}: {} acknowledged writes, {} live rows, converged {} ms after healing",
        acked.len(),
        want.rows,
        started.elapsed().as_millis()
    );
    for t in nodes.iter_mut() {
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_converge_after_random_faults() {
    init_tracing();
    let n = env_or("MURMUR_FAULT_NODES", 5) as usize;
    let rounds = env_or("MURMUR_FAULT_ROUNDS", 8);
    if let Ok(seed) = std::env::var("MURMUR_FAULT_SEED") {
        run(seed.parse().expect("MURMUR_FAULT_SEED is a u64"), n, rounds).await;
        return;
    }
    let seeds = env_or("MURMUR_FAULT_SEEDS", 2);
    for _ in 0..seeds {
        run(rand::random(), n, rounds).await;
    }
}
