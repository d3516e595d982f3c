//! Joins resume (issue 20, item 5), with the built binary: a new device killed with SIGKILL
//! in the middle of importing a snapshot continues where it stopped when it starts again,
//! instead of from the beginning. Pages imported before the kill are not imported again
//! (read from the joiner's metrics: counters start at zero in each run).
//!
//! A holds the library (tens of thousands of file_paths, many snapshot pages) and C keeps it
//! company: an op is pruned only once another device holds it, and a device new to a
//! pruned log joins by snapshot. B is the new device; it dials A only.

use murmur_testkit::procs::*;
use reqwest::Method;
use serde_json::{Value as J, json};

const BIN: &str = env!("CARGO_BIN_EXE_murmur");
const A: usize = 0;
const C: usize = 1;
const B: usize = 2;
/// File paths on A: 12 snapshot pages of 5,000 rows.
const ROWS: usize = 60_000;

async fn metric(c: &Cluster, i: usize, name: &str) -> f64 {
    let Ok(r) = c.request(Method::GET, i, "/metrics").send().await else {
        return -1.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Writes `n` file_paths on node `i` through the owned API, 5,000 rows a request.
async fn write_file_paths(c: &Cluster, i: usize, n: usize) {
    for start in (0..n).step_by(5_000) {
        let rows: Vec<J> = (start..(start + 5_000).min(n))
            .map(|k| {
                json!({
                    "materialized_path": format!("/photos/{}/", k / 1000),
                    "name": format!("img-{k}"),
                    "extension": "jpg",
                    "size_bytes": k,
                    "cas_id": format!("cas-{}", k / 2),
                })
            })
            .collect();
        let (s, b) = c.post(i, "/v1/owned/file_paths", J::Array(rows)).await;
        assert_eq!(s, 201, "file_paths not acknowledged: {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_killed_midway_resumes_without_importing_finished_pages_again() {
    let args = || {
        ["--prune-interval", "300ms", "--announce-interval", "200ms"]
            .map(String::from)
            .to_vec()
    };
    let mut c = Cluster::start_with(BIN, 2, |_| args()).await;
    poll("A and C connected", || async {
        c.connected(A).await == 1 && c.connected(C).await == 1
    })
    .await;
    write_file_paths(&c, A, ROWS).await;
    eventually_long("C holds A's rows and A pruned its log", || async {
        c.digests_equal().await && metric(&c, A, "murmur_pending_operations").await == 0.0
    })
    .await;

    // B: a new device (a fresh data dir) that dials A.
    let dir = c.dir.path().to_owned();
    let a_port = c.procs[A].p2p;
    let token_file = c.procs[A].token_file.clone();
    let secret = c.procs[A].secret.clone();
    c.procs.push(Proc {
        bin: BIN.into(),
        child: None,
        data: dir.join("b"),
        api: free_port(),
        p2p: free_port(),
        peers: vec![a_port],
        secret,
        log: dir.join("b.log"),
        args: args(),
        token_file,
    });
    c.procs[B].spawn();
    c.wait_healthy(B).await;

    // Killed once a few pages are in, the snapshot not finished.
    eventually_long("B imported some snapshot pages", || async {
        let finished = metric(&c, B, "murmur_snapshots_imported_total").await;
        assert!(
            finished <= 0.0,
            "B finished its join before it could be killed: raise ROWS"
        );
        metric(&c, B, "murmur_snapshot_pages_imported_total").await >= 2.0
    })
    .await;
    c.procs[B].kill9();
    println!("B killed during its join");

    c.procs[B].spawn();
    c.wait_healthy(B).await;
    eventually_long("B finished its join", || async {
        metric(&c, B, "murmur_snapshots_imported_total").await >= 1.0
    })
    .await;
    eventually_long("A, B and C have one digest", || c.digests_equal()).await;
    let (_, digest) = c.get(B, "/v1/digest").await;
    let again = metric(&c, B, "murmur_snapshot_rows_imported_total").await;
    let resumed = metric(&c, B, "murmur_snapshots_resumed_total").await;
    println!(
        "after the restart: {again} rows imported, {resumed} import(s) resumed; digest {digest}"
    );
    assert_eq!(resumed, 1.0, "the restarted join did not resume");
    assert!(
        again > 0.0 && again < ROWS as f64,
        "the restarted join imported {again} rows of {ROWS}: pages imported before the kill \
         were imported again"
    );
}

/// Polls `check` for up to three minutes (the rows' writes, sync and import of a debug
/// build take tens of seconds).
async fn eventually_long<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    murmur_testkit::wait::eventually(std::time::Duration::from_secs(180), what, check).await
}
