//! Sync that never stalls: rows of any size up to the maximum reach a new device, through
//! catch-up and, once the log is pruned, through a snapshot; a node that wrote while it was
//! offline keeps those writes in its log until another device has them.

use std::time::{Duration, Instant};

use murmur_store::{BatchEntry, Store};
use murmur_testkit::*;
use serde_json::json;

const JOIN: Duration = Duration::from_secs(300);

/// Writes `n` comments of `size` bytes on `store`, in batches under the API's body limit.
async fn comments(store: &Store, n: usize, size: usize) {
    let per_batch = (8 * 1024 * 1024 / size).clamp(1, 500);
    let mut written = 0;
    while written < n {
        let batch: Vec<BatchEntry> = (written..n.min(written + per_batch))
            .map(|i| {
                let mut fields = serde_json::Map::new();
                let text = format!("{i:08}").repeat(size / 8);
                fields.insert("content".into(), json!(text));
                BatchEntry::Create {
                    resource: "comments".into(),
                    uuid: None,
                    fields,
                }
            })
            .collect();
        written += batch.len();
        store.batch(batch).await.expect("write comments");
    }
}

async fn has_all(n: &TestNode, rows: u64) -> bool {
    n.node().store().count_rows("comments").await.unwrap() == rows
}

/// A new device joins `a` and gets its `rows` comments; returns how long it took.
async fn join(
    secret: &std::path::Path,
    a: &TestNode,
    rows: u64,
    what: &str,
) -> (TestNode, Duration) {
    let b = TestNode::new(secret).await;
    let started = Instant::now();
    b.connect(a).await;
    eventually(JOIN, what, || has_all(&b, rows)).await;
    let took = started.elapsed();
    converged(&[a, &b], JOIN).await;
    (b, took)
}

/// Regression: pages were counted in items only (5,000), so a page of big rows passed the
/// 16 MiB response cap, was refused every time, and a new device never got them.
async fn big_rows_reach_new_devices(rows: usize, size: usize) {
    init_tracing();
    let (_sd, secret) = secret_file();
    let a = TestNode::new(&secret).await;
    comments(a.node().store(), rows, size).await;
    let rows = rows as u64;

    let (b, took) = join(&secret, &a, rows, "the new device has every row (catch-up)").await;
    eprintln!("join through catch-up of {rows} rows of {size} bytes: {took:?}");
    assert_eq!(b.node().metrics().snapshots_imported.get(), 0);

    // b holds everything: a prunes its log, and the next device joins through a snapshot.
    eventually(JOIN, "a prunes its log", || async {
        a.node().store().pending_operations().await.unwrap() == 0
    })
    .await;
    let (c, took) = join(&secret, &a, rows, "the new device has every row (snapshot)").await;
    eprintln!("join through a snapshot of {rows} rows of {size} bytes: {took:?}");
    // Its rows are in before the snapshot ends (the pages commit one by one, and the
    // indexes left out are built before it counts as imported).
    eventually(JOIN, "the new device's snapshot import ends", || async {
        c.node().metrics().snapshots_imported.get() >= 1
    })
    .await;
    converged(&[&a, &b, &c], JOIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_8_kb_reach_a_new_device() {
    big_rows_reach_new_devices(3_000, 8 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_1_mib_reach_a_new_device() {
    big_rows_reach_new_devices(50, 1024 * 1024).await;
}

/// Regression: a node back from being offline took every other device for stale, and its
/// first prune removed the writes it made offline, which no one else had: the others then
/// needed a full snapshot to get them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_offline_reach_the_others_through_the_log() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let stale = Duration::from_secs(1);
    let mut a = TestNode::new_with(&secret, |c| c.stale_after = stale).await;
    let mut l = TestNode::new_with(&secret, |c| c.stale_after = stale).await;
    l.connect(&a).await;
    wait_peers(&a, 1).await;
    a.create_tag("before").await;
    converged(&[&a, &l], JOIN).await;

    // a goes away; l writes alone, for longer than stale_after, then restarts (its first
    // prune tick runs at start-up) while a is still away.
    a.stop().await;
    let mut tags = Vec::new();
    for i in 0..3 {
        tags.push(l.create_tag(&format!("offline {i}")).await);
    }
    let away = Instant::now();
    let runs = |l: &TestNode| l.node().metrics().prune_runs.get();
    eventually(
        JOIN,
        "l prunes (or tries to) for longer than stale_after",
        || async {
            runs(&l) >= 3 && away.elapsed() > stale * 2
                || l.node().store().pending_operations().await.unwrap() == 0
        },
    )
    .await;
    l.restart_with(|c| c.stale_after = stale).await;
    eventually(JOIN, "l prunes (or tries to) after its restart", || async {
        runs(&l) >= 2 || l.node().store().pending_operations().await.unwrap() == 0
    })
    .await;

    // a comes back: l's writes reach it through the log, with no snapshot.
    let l_addr = l.addr().await;
    a.restart_with(|c| {
        c.stale_after = stale;
        c.peers = vec![l_addr];
    })
    .await;
    converged(&[&a, &l], JOIN).await;
    for t in &tags {
        assert_eq!(a.get(&format!("/v1/shared/tags/{t}")).await.0, 200);
    }
    assert_eq!(
        a.node().metrics().snapshots_imported.get(),
        0,
        "a needed a snapshot to get l's offline writes"
    );
}
