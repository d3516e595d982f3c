//! Two builds of one library: a "newer" node whose registry has one more resource
//! (`albums`) and one more column (`tags.color`) than the "older" ones. What the newer node
//! writes there is received by the older nodes (acknowledged, relayed, served), kept, not
//! applied and not penalised; status and metrics show it waiting; a restart on the newer
//! registry applies it, and every digest agrees. Devices new to the library join by
//! snapshot through either kind of node.

use std::time::Duration;

use murmur::store::Registry;
use murmur_testkit::*;
use serde_json::{Value as J, json};

const WAIT: Duration = Duration::from_secs(60);

/// The registry of a build that knows neither `albums` nor `tags.color`.
fn older() -> Registry {
    Registry::default_library()
        .without("albums")
        .without_column("tags", "color")
}

async fn status(n: &TestNode) -> J {
    let (code, body) = n.get("/v1/status").await;
    assert_eq!(code, 200, "{body}");
    body
}

fn waiting(st: &J, reason: &str) -> u64 {
    st["waiting"][reason].as_u64().unwrap_or(0)
}

fn waiting_metric(n: &TestNode, reason: &str) -> i64 {
    n.node()
        .metrics()
        .waiting
        .get_or_create(&murmur::node::metrics::Reason {
            reason: reason.to_owned(),
        })
        .get()
}

/// The schema `of` says the peer `peer` runs, once it is connected and announced.
async fn peer_schema(of: &TestNode, peer: &TestNode) -> Option<String> {
    let st = status(of).await;
    let client = peer.node().client_uuid().to_string();
    st["peers"]
        .as_array()?
        .iter()
        .find(|p| p["client_uuid"] == client.as_str() && p["connected"] == true)
        .and_then(|p| p["schema"].as_str().map(str::to_owned))
}

async fn create(n: &TestNode, resource: &str, body: J) -> String {
    let (code, body) = n.post(&format!("/v1/shared/{resource}"), body).await;
    assert_eq!(code, 201, "{body}");
    body["uuid"].as_str().expect("uuid").to_owned()
}

/// Nobody refused anything, or penalised anybody.
fn nobody_refused(nodes: &[&TestNode]) {
    for n in nodes {
        for reason in ["unknown_resource", "unknown_field", "malformed", "decode"] {
            assert_eq!(n.rejected(reason), 0, "{reason}");
        }
        assert_eq!(n.node().net_stats().gossip_rejected, 0);
        assert_eq!(n.node().metrics().peers_refused.get(), 0);
    }
}

async fn pruned_own_ops_of(n: &TestNode, author_of: &TestNode) {
    let author = author_of.node().store().author();
    eventually(WAIT, "the log is pruned", || async {
        n.node()
            .store()
            .horizon()
            .get(&author)
            .copied()
            .unwrap_or(0)
            > 0
    })
    .await;
}

async fn snapshot_taken(n: &TestNode) {
    eventually(WAIT, "a snapshot imported", || async {
        n.node().metrics().snapshots_imported.get() >= 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_build_keeps_what_a_newer_one_writes_and_applies_it_once_upgraded() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let newer = TestNode::new(&secret).await;
    let mut old = TestNode::new_with(&secret, |c| c.registry = older()).await;
    old.connect(&newer).await;
    wait_peers(&newer, 1).await;
    wait_peers(&old, 1).await;

    // The newer node writes to shared tags (a known column and an unknown one) and to a
    // resource the older one does not know.
    let red = create(&newer, "tags", json!({"name": "red one", "color": "red"})).await;
    let plain = create(&newer, "tags", json!({"name": "plain"})).await;
    let (code, _) = newer
        .patch(&format!("/v1/shared/tags/{red}"), json!({"color": "blue"}))
        .await;
    assert_eq!(code, 200);
    let (code, _) = newer
        .patch(
            &format!("/v1/shared/tags/{plain}"),
            json!({"name": "renamed"}),
        )
        .await;
    assert_eq!(code, 200);
    let album = create(
        &newer,
        "albums",
        json!({"name": "holiday", "is_hidden": false}),
    )
    .await;
    let (code, _) = newer
        .patch(
            &format!("/v1/shared/albums/{album}"),
            json!({"name": "summer"}),
        )
        .await;
    assert_eq!(code, 200);
    let gone = create(&newer, "albums", json!({"name": "gone", "is_hidden": true})).await;
    let (code, _) = newer.delete(&format!("/v1/shared/albums/{gone}")).await;
    assert_eq!(code, 200);

    // The older node gets the tags (their known fields), keeps the rest, and says so.
    eventually(WAIT, "the older node has the tags", || async {
        old.get(&format!("/v1/shared/tags/{red}")).await.1["name"] == "red one"
            && old.get(&format!("/v1/shared/tags/{plain}")).await.1["name"] == "renamed"
    })
    .await;
    // Three ops name `color` (both creates, one update), four are of albums.
    eventually(WAIT, "status shows what waits, and why", || async {
        let st = status(&old).await;
        waiting(&st, "unknown_field") == 3 && waiting(&st, "unknown_resource") == 4
    })
    .await;
    eventually(WAIT, "the metric shows it", || async {
        waiting_metric(&old, "unknown_field") == 3 && waiting_metric(&old, "unknown_resource") == 4
    })
    .await;
    let (code, _) = old.get(&format!("/v1/shared/albums/{album}")).await;
    assert_eq!(code, 404, "not applied");
    // Received: the older node's version vector covers every op of the newer one, so
    // nobody sends them again.
    let author = newer.node().store().author();
    let written = newer.node().store().version_vector().contiguous(&author);
    eventually(WAIT, "the older node holds every op", || async {
        old.node().store().version_vector().contiguous(&author) == written
    })
    .await;
    eventually(
        WAIT,
        "each says how the other's schema compares",
        || async {
            peer_schema(&old, &newer).await.as_deref() == Some("newer")
                && peer_schema(&newer, &old).await.as_deref() == Some("older")
        },
    )
    .await;
    nobody_refused(&[&newer, &old]);

    // Both prune the newer node's ops: a device new to the library then needs a snapshot.
    pruned_own_ops_of(&newer, &newer).await;
    pruned_own_ops_of(&old, &newer).await;

    // An older new device joins through the newer node: the rows it does not know are
    // kept (the tag's known fields applied).
    let mut via_newer = TestNode::new_with(&secret, |c| c.registry = older()).await;
    via_newer.connect(&newer).await;
    snapshot_taken(&via_newer).await;
    eventually(WAIT, "the tags, and what waits", || async {
        let st = status(&via_newer).await;
        via_newer.get(&format!("/v1/shared/tags/{red}")).await.1["name"] == "red one"
            && waiting(&st, "unknown_field") >= 1
            && waiting(&st, "unknown_resource") >= 2
    })
    .await;
    // Another joins through the older node, which serves what it keeps.
    let mut via_old = TestNode::new_with(&secret, |c| c.registry = older()).await;
    via_old.connect(&old).await;
    snapshot_taken(&via_old).await;
    eventually(WAIT, "the tags, and what waits", || async {
        let st = status(&via_old).await;
        via_old.get(&format!("/v1/shared/tags/{plain}")).await.1["name"] == "renamed"
            && waiting(&st, "unknown_field") >= 1
            && waiting(&st, "unknown_resource") >= 2
    })
    .await;
    nobody_refused(&[&newer, &old, &via_newer, &via_old]);

    // Each restarts on the newer build: what waited is applied, and every digest agrees.
    for n in [&mut old, &mut via_newer, &mut via_old] {
        n.restart_with(|_| {}).await;
        let st = status(n).await;
        assert_eq!(st["waiting"], J::Null, "{st}");
        assert_eq!(
            n.get(&format!("/v1/shared/tags/{red}")).await.1["color"],
            "blue"
        );
        assert_eq!(
            n.get(&format!("/v1/shared/albums/{album}")).await.1["name"],
            "summer"
        );
        assert_eq!(n.get(&format!("/v1/shared/albums/{gone}")).await.0, 404);
    }
    converged(&[&newer, &old, &via_newer, &via_old], WAIT).await;
}
