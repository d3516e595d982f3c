//! Swarm integration tests of the harder paths: a node offline during 10k writes, lost
//! gossip, a stale client that needs a snapshot, a 100k-row owned batch, clock drift.

use std::time::{Duration, Instant};

use murmur::store::{ManualClock, PhysicalClock};
use murmur_testkit::*;
use serde_json::{Value as J, json};

const CONVERGE: Duration = Duration::from_secs(60);

/// Writes `n` tags on `node` through `/v1/batch`, 500 per request.
async fn bulk_tags(node: &TestNode, n: usize, prefix: &str) {
    for start in (0..n).step_by(500) {
        let items: Vec<J> = (start..(start + 500).min(n))
            .map(|i| json!({"op": "create", "resource": "tags", "fields": {"name": format!("{prefix}{i}")}}))
            .collect();
        let (status, body) = node.post("/v1/batch", J::Array(items)).await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn tag_count(n: &TestNode) -> u64 {
    n.node().store().count_rows("tags").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_node_catches_up_on_10k_writes() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let a = TestNode::new(&secret).await;
    let b = TestNode::new(&secret).await;
    let mut c = TestNode::new(&secret).await;
    b.connect(&a).await;
    c.connect(&a).await;
    wait_peers(&a, 2).await;
    a.create_tag("before").await;
    converged(&[&a, &b, &c], CONVERGE).await;
    c.stop().await;
    bulk_tags(&a, 5_000, "a").await;
    bulk_tags(&b, 5_000, "b").await;
    converged(&[&a, &b], CONVERGE).await;
    assert_eq!(tag_count(&a).await, 10_001);
    let a_addr = a.addr().await;
    let started = Instant::now();
    c.restart_with(|cfg| cfg.peers = vec![a_addr]).await;
    converged(&[&a, &b, &c], CONVERGE).await;
    let took = started.elapsed();
    assert_eq!(tag_count(&c).await, 10_001);
    println!(
        "10k missed writes caught up in {} ms (restart included)",
        took.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_gossip_is_made_up_by_catch_up() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let lossy = |c: &mut murmur::node::Config| c.gossip_drop_rate = 0.6;
    let a = TestNode::new_with(&secret, lossy).await;
    let b = TestNode::new_with(&secret, lossy).await;
    let c = TestNode::new_with(&secret, lossy).await;
    b.connect(&a).await;
    c.connect(&b).await;
    wait_peers(&b, 2).await;
    for i in 0..60 {
        let n = [&a, &b, &c][i % 3];
        n.create_tag(&format!("t{i}")).await;
    }
    converged(&[&a, &b, &c], CONVERGE).await;
    for n in [&a, &b, &c] {
        assert_eq!(tag_count(n).await, 60);
    }
    let dropped: u64 = [&a, &b, &c]
        .iter()
        .map(|n| n.node().metrics().gossip_dropped.get())
        .sum();
    assert!(dropped > 0, "the test must actually drop gossip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_client_returns_through_a_snapshot() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let stale = |c: &mut murmur::node::Config| c.stale_after = Duration::from_secs(1);
    let a = TestNode::new_with(&secret, stale).await;
    let b = TestNode::new_with(&secret, stale).await;
    let mut c = TestNode::new_with(&secret, stale).await;
    b.connect(&a).await;
    c.connect(&a).await;
    wait_peers(&a, 2).await;
    c.create_tag("from c").await;
    a.create_tag("from a").await;
    converged(&[&a, &b, &c], CONVERGE).await;
    c.stop().await;
    let u = a.create_tag("while c was away").await;
    b.post(
        "/v1/owned/file_paths",
        json!([{"name": "x", "cas_id": "cas1", "size_bytes": 3}]),
    )
    .await;
    let del = format!("/v1/shared/tags/{u}");
    assert_eq!(a.delete(&del).await.0, 200);
    // With c stale, a and b prune everything both hold.
    eventually(CONVERGE, "a and b prune their logs", || async {
        a.node().store().pending_operations().await.unwrap() == 0
            && b.node().store().pending_operations().await.unwrap() == 0
    })
    .await;
    let a_addr = a.addr().await;
    c.restart_with(|cfg| {
        cfg.peers = vec![a_addr];
        cfg.stale_after = Duration::from_secs(1);
    })
    .await;
    converged(&[&a, &b, &c], CONVERGE).await;
    // c must have taken a snapshot (its rows are in before the import ends).
    eventually(CONVERGE, "c's snapshot import ends", || async {
        c.node().metrics().snapshots_imported.get() >= 1
    })
    .await;
    assert_eq!(c.get(&del).await.0, 404);
    assert_eq!(
        c.get("/v1/files").await.1["rows"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_batch_of_100k_file_paths_reaches_the_peers() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let a = TestNode::new(&secret).await;
    let b = TestNode::new(&secret).await;
    let c = TestNode::new(&secret).await;
    b.connect(&a).await;
    c.connect(&a).await;
    wait_peers(&a, 2).await;
    let rows: Vec<J> = (0..100_000)
        .map(|i| {
            json!({"materialized_path": "/photos/", "name": format!("img{i}"), "extension": "jpg",
                   "size_bytes": i, "cas_id": format!("cas{}", i / 2), "date_modified": "2026-11-26T00:00:00Z"})
        })
        .collect();
    let started = Instant::now();
    let (status, body) = a.post("/v1/owned/file_paths", J::Array(rows)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["count"], 100_000);
    let written = started.elapsed();
    converged(&[&a, &b, &c], CONVERGE).await;
    let took = started.elapsed();
    for n in [&a, &b, &c] {
        assert_eq!(
            n.node().store().count_rows("file_paths").await.unwrap(),
            100_000
        );
        assert_eq!(
            n.node().store().count_rows("files").await.unwrap_or(0),
            0,
            "files is not a resource"
        );
    }
    for n in [&b, &c] {
        let files = n.get("/v1/files?limit=3").await.1;
        assert_eq!(files["rows"][0]["path_count"], 2, "{files}");
    }
    println!(
        "100k owned rows: written in {} ms, on all 3 nodes in {} ms",
        written.as_millis(),
        took.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drifted_op_is_rejected_then_accepted_once_within_bounds() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let slow = ManualClock::new().expect("clock slot");
    slow.rewind(Duration::from_secs(3));
    let a = TestNode::new(&secret).await;
    let clock = slow.clone();
    let b = TestNode::new_with(&secret, move |c| c.clock = PhysicalClock::Manual(clock)).await;
    b.connect(&a).await;
    wait_peers(&a, 1).await;
    let u = a.create_tag("from the future").await;
    let path = format!("/v1/shared/tags/{u}");
    eventually(CONVERGE, "b rejects the drifted op", || async {
        b.rejected("drift") > 0
    })
    .await;
    assert_eq!(b.get(&path).await.0, 404);
    slow.advance(Duration::from_secs(3));
    eventually(CONVERGE, "b accepts it once within bounds", || async {
        b.get(&path).await.0 == 200
    })
    .await;
    converged(&[&a, &b], CONVERGE).await;
    slow.release();
}
