//! Scenario 5, one owned batch to two peers: an `OwnedBatchCreate` of many `file_paths` on
//! the hub until both peers hold every row, against one plain insert of the same rows.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use murmur::store::Method;
use murmur_testkit::cluster::wait_seen;
use serde_json::{Value as J, json};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::nodes::{start_cluster, write_tag};
use crate::plain::{SQL_ROWS, plain_pool};
use crate::{Res, Row};

fn file_path_row(i: usize) -> serde_json::Map<String, J> {
    json!({
        "materialized_path": format!("/photos/{}/", i / 1000),
        "name": format!("IMG_{i:07}"),
        "extension": "jpg",
        "size_bytes": 1_000_000 + i as i64,
        "cas_id": format!("cas{:012x}", i),
        "date_modified": "2026-11-01T12:00:00Z",
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

pub async fn bench_owned_batch(n: usize) -> Res<(Vec<Row>, J)> {
    eprintln!("[owned] one OwnedBatchCreate of {n} file_paths to 2 peers");
    let cluster = start_cluster(3).await;
    // The mesh is formed once a tag written on the hub reached both peers.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Uuid, Instant)>();
    let mut counts = Vec::new();
    let (ctx, mut crx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64, Instant)>();
    for (i, node) in cluster.nodes.iter().enumerate().skip(1) {
        let mut sub = node.node().subscribe();
        let tx = tx.clone();
        let ctx = ctx.clone();
        counts.push(tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(ev) => {
                        let at = Instant::now();
                        if ev.method == Method::OwnedBatchCreate {
                            let _ = ctx.send((i, ev.count.unwrap_or(0), at));
                        } else if let Some(u) = ev.uuid {
                            let _ = tx.send((i, u, at));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let u = write_tag(cluster.nodes[0].node(), "warm-up").await?;
        if wait_seen(&mut rx, u, 2, Duration::from_secs(2))
            .await
            .is_some()
        {
            break;
        }
        if Instant::now() > deadline {
            return Err("no mesh".into());
        }
    }
    let rows: Vec<_> = (0..n).map(file_path_row).collect();
    let base_rows = rows.clone();
    let t0 = Instant::now();
    let out = cluster.nodes[0]
        .node()
        .store()
        .write_owned("file_paths", rows)
        .await?;
    let local = t0.elapsed();
    // Published by the node's commit feed.
    drop(out);
    let mut got: HashMap<usize, u64> = HashMap::new();
    let mut done_at: HashMap<usize, Instant> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while done_at.len() < 2 {
        match tokio::time::timeout_at(deadline, crx.recv()).await {
            Ok(Some((i, c, at))) => {
                let g = got.entry(i).or_default();
                *g += c;
                if *g >= n as u64 {
                    done_at.entry(i).or_insert(at);
                }
            }
            _ => return Err(format!("owned batch never arrived: {got:?}").into()),
        }
    }
    let took = done_at.values().max().copied().unwrap_or(t0) - t0;
    for node in &cluster.nodes[1..] {
        assert_eq!(
            node.node().store().count_rows("file_paths").await?,
            n as u64
        );
    }
    for c in counts {
        c.abort();
    }
    let served = cluster.nodes[0].node().metrics().requests_served.get();
    let reused = cluster.nodes[0].node().metrics().pages_reused.get();
    cluster.shutdown().await;

    let dir = tempfile::tempdir()?;
    let pool = plain_pool(&dir.path().join("plain.db")).await?;
    let owner = Uuid::new_v4().hyphenated().to_string();
    let ts = vec![0u8; 24];
    let t = Instant::now();
    {
        let mut tx = pool.begin().await?;
        for chunk in base_rows.chunks(SQL_ROWS) {
            let sql = format!(
                "INSERT INTO file_paths (uuid, owner, crdt_ts, crdt_seq, materialized_path, name, \
                 extension, size_bytes, cas_id, date_modified) VALUES {}",
                vec!["(?,?,?,?,?,?,?,?,?,?)"; chunk.len()].join(",")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(Uuid::now_v7().hyphenated().to_string())
                    .bind(owner.clone())
                    .bind(ts.clone())
                    .bind(1i64);
                for k in [
                    "materialized_path",
                    "name",
                    "extension",
                    "size_bytes",
                    "cas_id",
                    "date_modified",
                ] {
                    q = match &r[k] {
                        J::Number(x) => q.bind(x.as_i64()),
                        v => q.bind(v.as_str().map(str::to_owned)),
                    };
                }
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    let base = t.elapsed();
    pool.close().await;
    let secs = took.as_secs_f64();
    eprintln!(
        "  reached both peers in {secs:.2} s (local write {:.2} s); plain insert {:.2} s; \
         the writer served {served} requests, {reused} of them from the page read before",
        local.as_secs_f64(),
        base.as_secs_f64()
    );
    Ok((
        vec![Row {
            scenario: format!("one OwnedBatchCreate of {n} file_paths to 2 peers"),
            figure: "seconds".into(),
            murmur: format!("{secs:.2} s (local {:.2} s)", local.as_secs_f64()),
            baseline: format!("{:.2} s plain insert", base.as_secs_f64()),
            goal: "< 3 s".into(),
            pass: Some(secs < 3.0),
        }],
        json!({"rows": n, "seconds": secs, "requests_served": served, "pages_reused": reused, "local_write_seconds": local.as_secs_f64(),
               "baseline_seconds": base.as_secs_f64()}),
    ))
}
