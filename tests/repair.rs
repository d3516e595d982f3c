//! Divergence found and repaired: a row changed directly in one node's SQLite file (as a
//! bug or a bad disk would change it: no op, no register moved) heals by the background
//! repair; `/v1/diff` names the row; `/v1/digest` answers per resource and key range; a
//! write by another program to a synced table fails in SQLite itself.

use std::time::Duration;

use murmur_testkit::behind::{corrupt, foreign_write};
use murmur_testkit::*;
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(30);

async fn pair(secret: &std::path::Path, repair: Duration) -> (TestNode, TestNode) {
    let a = TestNode::new_with(secret, |c| c.repair_interval = repair).await;
    let b = TestNode::new_with(secret, |c| c.repair_interval = repair).await;
    b.connect(&a).await;
    wait_peers(&a, 1).await;
    wait_peers(&b, 1).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_changed_in_one_nodes_sqlite_file_heals() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let (a, b) = pair(&secret, Duration::from_millis(300)).await;
    let tag = a.create_tag("right").await;
    let (status, body) = a
        .post(
            "/v1/owned/file_paths",
            json!([{"name": "right", "cas_id": "c1", "size_bytes": 1}]),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    converged(&[&a, &b], CONVERGE).await;
    let file = a.get("/v1/owned/file_paths").await.1["rows"][0]["uuid"]
        .as_str()
        .expect("a file path")
        .to_owned();
    // b's copies change behind murmur's back: values only, registers untouched.
    assert_eq!(
        corrupt(
            &b.database(),
            &format!("UPDATE tags SET name = 'wrong' WHERE uuid = '{tag}'")
        )
        .await,
        1
    );
    assert_eq!(
        corrupt(
            &b.database(),
            &format!("UPDATE file_paths SET name = 'wrong' WHERE uuid = '{file}'")
        )
        .await,
        1
    );
    assert_eq!(
        b.get(&format!("/v1/shared/tags/{tag}")).await.1["name"],
        "wrong"
    );
    eventually(CONVERGE, "b repairs both rows", || async {
        b.get(&format!("/v1/shared/tags/{tag}")).await.1["name"] == "right"
            && b.get(&format!("/v1/owned/file_paths/{file}")).await.1["name"] == "right"
    })
    .await;
    converged(&[&a, &b], CONVERGE).await;
    assert_eq!(b.node().metrics().repaired_rows.get(), 2);
    // a compares with b too, and wrote both ops: nothing of b's changes it.
    eventually(CONVERGE, "a runs a repair round", || async {
        a.node().metrics().repair_rounds.get() > 0
    })
    .await;
    assert_eq!(a.node().metrics().repaired_rows.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_names_the_rows_and_digest_answers_per_range() {
    init_tracing();
    let (_sd, secret) = secret_file();
    // No background repair here: the difference stays for `/v1/diff` to find.
    let (a, b) = pair(&secret, Duration::from_secs(3600)).await;
    let mut tags = Vec::new();
    for i in 0..50 {
        tags.push(a.create_tag(&format!("t{i}")).await);
    }
    converged(&[&a, &b], CONVERGE).await;
    let peer = a.node().peer_id().to_string();
    let (status, none) = b.get(&format!("/v1/diff?peer={peer}")).await;
    assert_eq!(status, 200, "{none}");
    assert_eq!(none["rows"], json!([]));
    assert_eq!(none["requests"], 1);
    let odd = &tags[17];
    corrupt(
        &b.database(),
        &format!("UPDATE tags SET color = 'x' WHERE uuid = '{odd}'"),
    )
    .await;
    let (status, d) = b.get(&format!("/v1/diff?peer={peer}")).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["rows"], json!([{"resource": "tags", "uuid": odd}]));
    assert_eq!(d["truncated"], false);
    // By client UUID too; an unknown peer is a 404.
    let client = a.get("/v1/status").await.1["client_uuid"].clone();
    let (status, by_client) = b
        .get(&format!("/v1/diff?peer={}", client.as_str().unwrap()))
        .await;
    assert_eq!((status, &by_client["rows"]), (200, &d["rows"]));
    assert_eq!(b.get("/v1/diff?peer=nobody").await.0, 404);
    // The digest per resource and per range.
    let (status, whole) = b.get("/v1/digest").await;
    assert_eq!(status, 200);
    assert_eq!(whole["resources"]["tags"]["live"], 50);
    let (status, top) = b.get("/v1/digest?resource=tags").await;
    assert_eq!(status, 200, "{top}");
    assert_eq!(top["fingerprint"], whole["resources"]["tags"]);
    let prefix = &odd[..2];
    let (_, theirs) = a
        .get(&format!("/v1/digest?resource=tags&prefix={prefix}"))
        .await;
    let (_, ours) = b
        .get(&format!("/v1/digest?resource=tags&prefix={prefix}"))
        .await;
    assert_ne!(theirs["fingerprint"], ours["fingerprint"]);
    for bad in [
        "?resource=tags&prefix=A",
        "?resource=tags&prefix=abc",
        "?prefix=ab",
    ] {
        assert_eq!(b.get(&format!("/v1/digest{bad}")).await.0, 400, "{bad}");
    }
    assert_eq!(b.get("/v1/digest?resource=nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_program_cannot_write_a_synced_table_of_a_running_node() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let a = TestNode::new(&secret).await;
    let tag = a.create_tag("kept").await;
    let before = a.digest().await;
    let err = foreign_write(
        &a.database(),
        &format!("UPDATE tags SET name = 'other' WHERE uuid = '{tag}'"),
    )
    .await
    .expect_err("refused");
    assert!(
        err.contains("no such collation sequence: murmur_writer"),
        "{err}"
    );
    assert_eq!(
        a.get(&format!("/v1/shared/tags/{tag}")).await.1["name"],
        "kept"
    );
    assert_eq!(a.digest().await, before);
}
