//! Swarm integration tests: several nodes in one process, loopback, mDNS off.

use std::time::Duration;

use murmur_testkit::*;
use serde_json::{Value as J, json};

const CONVERGE: Duration = Duration::from_secs(30);

async fn three(secret: &std::path::Path) -> (TestNode, TestNode, TestNode) {
    let a = TestNode::new(secret).await;
    let b = TestNode::new(secret).await;
    let c = TestNode::new(secret).await;
    b.connect(&a).await;
    c.connect(&a).await;
    c.connect(&b).await;
    wait_peers(&a, 2).await;
    wait_peers(&b, 2).await;
    wait_peers(&c, 2).await;
    (a, b, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_any_node_shows_on_all() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let (a, b, c) = three(&secret).await;
    let mut uuids = Vec::new();
    for (i, n) in [&a, &b, &c].iter().enumerate() {
        uuids.push(n.create_tag(&format!("tag {i}")).await);
    }
    for n in [&a, &b, &c] {
        for u in &uuids {
            let path = format!("/v1/shared/tags/{u}");
            eventually(CONVERGE, "the tag shows", || async {
                n.get(&path).await.0 == 200
            })
            .await;
        }
    }
    converged(&[&a, &b, &c], CONVERGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_pick_one_winner_everywhere() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let (a, b, c) = three(&secret).await;
    let u = a.create_tag("x").await;
    let path = format!("/v1/shared/tags/{u}");
    eventually(CONVERGE, "b has the tag", || async {
        b.get(&path).await.0 == 200
    })
    .await;
    let (ra, rb) = tokio::join!(
        a.patch(&path, json!({"name": "from a"})),
        b.patch(&path, json!({"name": "from b"}))
    );
    assert_eq!((ra.0, rb.0), (200, 200));
    converged(&[&a, &b, &c], CONVERGE).await;
    let name = a.get(&path).await.1["name"].clone();
    assert!(name == "from a" || name == "from b");
    for n in [&b, &c] {
        assert_eq!(n.get(&path).await.1["name"], name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_against_concurrent_update_deletes_everywhere() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let (a, b, c) = three(&secret).await;
    let u = a.create_tag("x").await;
    let path = format!("/v1/shared/tags/{u}");
    eventually(CONVERGE, "b has the tag", || async {
        b.get(&path).await.0 == 200
    })
    .await;
    let (ru, rd) = tokio::join!(b.patch(&path, json!({"name": "update"})), a.delete(&path));
    assert_eq!(rd.0, 200, "{:?}", rd.1);
    assert!(ru.0 == 200 || ru.0 == 404, "{:?}", ru);
    converged(&[&a, &b, &c], CONVERGE).await;
    for n in [&a, &b, &c] {
        assert_eq!(n.get(&path).await.0, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitive_sync_reaches_nodes_that_never_meet() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let a = TestNode::new(&secret).await;
    let b = TestNode::new(&secret).await;
    let c = TestNode::new(&secret).await;
    a.connect(&b).await;
    c.connect(&b).await;
    wait_peers(&b, 2).await;
    // Writes made while connected, and some before c joined b.
    let u = a.create_tag("from a").await;
    let path = format!("/v1/shared/tags/{u}");
    eventually(CONVERGE, "c has a's tag", || async {
        c.get(&path).await.0 == 200
    })
    .await;
    converged(&[&a, &b, &c], CONVERGE).await;
    // a and c never connected.
    let (_, st) = a.get("/v1/status").await;
    let c_client = c.node().client_uuid().to_string();
    assert!(
        st["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["client_uuid"] != J::String(c_client.clone())
                || p["connected"] == J::Bool(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_receives_nothing() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let (_sd2, other) = secret_file();
    let a = TestNode::new(&secret).await;
    let b = TestNode::new(&secret).await;
    let x = TestNode::new(&other).await;
    b.connect(&a).await;
    let _ = x.connect(&a).await;
    let _ = x.node().dial(b.addr().await).await;
    wait_peers(&a, 1).await;
    let u = a.create_tag("secret stuff").await;
    let path = format!("/v1/shared/tags/{u}");
    eventually(CONVERGE, "b has the tag", || async {
        b.get(&path).await.0 == 200
    })
    .await;
    // b has it; give x the same time again, then check it has nothing and no peers.
    let (_, st) = x.get("/v1/status").await;
    assert!(
        st["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["connected"] == J::Bool(false)),
        "{st}"
    );
    assert_eq!(x.get(&path).await.0, 404);
    assert_eq!(x.get("/v1/digest").await.1["rows"], 0);
}

fn applied(n: &TestNode, source: &str) -> u64 {
    n.node()
        .metrics()
        .ops_applied
        .get_or_create(&murmur::node::metrics::Source {
            source: source.to_owned(),
        })
        .get()
}

/// Every commit leaves the store through its commit feed, which the node consumes in one
/// place: a write an embedder makes through `Node::store` (not the API) is published on
/// gossip, counted, and streamed to row-event subscribers on both nodes, like the API's.
/// Announcements are slowed down so that only gossip can carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_the_store_is_published_counted_and_streamed() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let slow = |c: &mut murmur::node::Config| c.versions_interval = Duration::from_secs(3600);
    let a = TestNode::new_with(&secret, slow).await;
    let b = TestNode::new_with(&secret, slow).await;
    b.connect(&a).await;
    wait_peers(&a, 1).await;
    wait_peers(&b, 1).await;
    // The mesh is up once an API write arrives on gossip.
    let first = a.create_tag("through the API").await;
    eventually(CONVERGE, "the API's write arrives on gossip", || async {
        b.get(&format!("/v1/shared/tags/{first}")).await.0 == 200 && applied(&b, "gossip") >= 1
    })
    .await;
    let (local_before, gossip_before) =
        (a.node().metrics().local_writes.get(), applied(&b, "gossip"));
    let mut a_events = a.node().subscribe();
    let mut b_events = b.node().subscribe();

    let out = a
        .node()
        .store()
        .create_shared(
            "tags",
            None,
            json!({"name": "through the store"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .await
        .expect("write");
    let uuid = out.uuids[0];
    let event = tokio::time::timeout(CONVERGE, a_events.recv())
        .await
        .expect("a local row event")
        .expect("events open");
    assert_eq!((event.uuid, event.remote), (Some(uuid), false));
    assert_eq!(a.node().metrics().local_writes.get(), local_before + 1);
    let event = tokio::time::timeout(CONVERGE, b_events.recv())
        .await
        .expect("a remote row event")
        .expect("events open");
    assert_eq!((event.uuid, event.remote), (Some(uuid), true));
    assert_eq!(b.get(&format!("/v1/shared/tags/{uuid}")).await.0, 200);
    assert_eq!(applied(&b, "gossip"), gossip_before + 1);
}
