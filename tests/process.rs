//! Process tests of the built `murmur` binary: three `murmur run` processes on 127.0.0.1
//! with `--no-mdns` and `--peer`, driven over HTTP; one is killed with SIGKILL right after
//! an acknowledged write and restarted on its data dir.

use std::time::Instant;

use murmur_testkit::http::request;
use murmur_testkit::procs::*;
use serde_json::{Value as J, json};

const BIN: &str = env!("CARGO_BIN_EXE_murmur");

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Reads `/v1/events` of a node and sends each changed row's uuid with its arrival time.
fn follow_events(
    http: reqwest::Client,
    url: String,
    tx: tokio::sync::mpsc::UnboundedSender<(String, Instant)>,
) {
    tokio::spawn(async move {
        // A client of its own (the cluster's has a timeout, and this stream lasts the
        // test), with the node's token.
        let events = request(&http, reqwest::Method::GET, &url);
        let Ok(mut resp) = events.send().await else {
            return;
        };
        let mut buf = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let now = Instant::now();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find('\n') {
                let line: String = buf.drain(..=end).collect();
                if let Some(data) = line.strip_prefix("data: ")
                    && let Ok(ev) = serde_json::from_str::<J>(data.trim())
                    && let Some(u) = ev["uuid"].as_str()
                    && tx.send((u.to_owned(), now)).is_err()
                {
                    return;
                }
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_converge_and_survive_sigkill() {
    let mut c = Cluster::start(BIN, 3).await;
    for i in 0..3 {
        poll("full mesh", || async { c.connected(i).await >= 2 }).await;
    }

    // Writes on every node converge.
    let mut uuids = Vec::new();
    for i in 0..3 {
        let (s, b) = c
            .post(i, "/v1/shared/tags", json!({"name": format!("from {i}")}))
            .await;
        assert_eq!(s, 201, "{b}");
        uuids.push(b["uuid"].as_str().expect("uuid").to_owned());
    }
    poll("writes converge", || c.digests_equal()).await;
    for i in 0..3 {
        for u in &uuids {
            assert_eq!(c.get(i, &format!("/v1/shared/tags/{u}")).await.0, 200);
        }
    }

    // Write-to-visible latency across the 3 processes, from /v1/events of nodes 1 and 2.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    follow_events(
        c.procs[1].streaming_client(),
        c.procs[1].url("/v1/events"),
        tx.clone(),
    );
    follow_events(
        c.procs[2].streaming_client(),
        c.procs[2].url("/v1/events"),
        tx,
    );
    // Let both streams attach before measuring (the first event proves it).
    let (_, warm) = c
        .post(0, "/v1/shared/tags", json!({"name": "warm-up"}))
        .await;
    let warm = warm["uuid"].as_str().unwrap_or_default().to_owned();
    let mut seen_warm = 0;
    while seen_warm < 2 {
        let (u, _) = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("events")
            .expect("stream");
        if u == warm {
            seen_warm += 1;
        }
    }
    let mut latencies = Vec::new();
    for k in 0..100 {
        let sent = Instant::now();
        let (s, b) = c
            .post(0, "/v1/shared/tags", json!({"name": format!("lat {k}")}))
            .await;
        assert_eq!(s, 201);
        let u = b["uuid"].as_str().expect("uuid").to_owned();
        let mut got = 0;
        let mut last = sent;
        while got < 2 {
            let (eu, at) = tokio::time::timeout(DEADLINE, rx.recv())
                .await
                .expect("event in time")
                .expect("stream");
            if eu == u {
                got += 1;
                last = at;
            }
        }
        latencies.push(last.duration_since(sent).as_secs_f64() * 1000.0);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "write-to-visible on all 3 processes (HTTP write included), n={}: p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    // SIGKILL right after an acknowledged write; the write survives and reaches the others.
    let (s, b) = c
        .post(1, "/v1/shared/tags", json!({"name": "acked then killed"}))
        .await;
    assert_eq!(s, 201, "{b}");
    c.procs[1].kill9();
    let u = b["uuid"].as_str().expect("uuid").to_owned();
    let path = format!("/v1/shared/tags/{u}");
    // Writes while node 1 is down reach it when it is back.
    let (s, _) = c
        .post(2, "/v1/shared/tags", json!({"name": "while 1 was down"}))
        .await;
    assert_eq!(s, 201);
    c.procs[1].spawn();
    c.wait_healthy(1).await;
    assert_eq!(
        c.get(1, &path).await.0,
        200,
        "the acknowledged write survived SIGKILL"
    );
    poll("the killed node's write reaches the others", || async {
        c.get(0, &path).await.0 == 200 && c.get(2, &path).await.0 == 200
    })
    .await;
    poll("all converge after the restart", || c.digests_equal()).await;
}
