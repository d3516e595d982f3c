//! Scenario 3, write-to-visible latency: a write on one node until every other node has it,
//! in a star of 3 and of 10 in-process nodes, against bare gossipsub over swarms of the
//! same stack and topology.

use std::time::{Duration, Instant};

use murmur::p2p::{self, Acceptance, Event, Keypair, Multiaddr};
use murmur_testkit::cluster::wait_seen;
use serde_json::{Value as J, json};
use uuid::Uuid;

use crate::nodes::{start_cluster, write_tag};
use crate::{Res, Row, percentile};

pub async fn bench_latency(n: usize, samples: usize) -> Res<(Vec<Row>, J)> {
    eprintln!("[latency] {n} nodes, {samples} writes");
    let cluster = start_cluster(n).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Uuid, Instant)>();
    let mut watchers = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut sub = node.node().subscribe();
        let tx = tx.clone();
        watchers.push(tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(ev) => {
                        if ev.remote
                            && let Some(u) = ev.uuid
                        {
                            let _ = tx.send((i, u, Instant::now()));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
        }));
    }
    // Warm up until a write from every node reaches every other (mesh formed).
    let mut ready = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready && Instant::now() < deadline {
        ready = true;
        for w in 0..n {
            let u = write_tag(cluster.nodes[w].node(), "warm-up").await?;
            let seen = wait_seen(&mut rx, u, n - 1, Duration::from_secs(2)).await;
            if seen.is_none() {
                ready = false;
            }
        }
    }
    if !ready {
        return Err("the cluster never formed a gossip mesh".into());
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut lat = Vec::with_capacity(samples);
    let mut missed = 0;
    for s in 0..samples {
        let w = s % n;
        let t0 = Instant::now();
        let u = write_tag(cluster.nodes[w].node(), &format!("sample {s}")).await?;
        match wait_seen(&mut rx, u, n - 1, Duration::from_secs(5)).await {
            Some(last) => lat.push((last - t0).as_secs_f64() * 1000.0),
            None => missed += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in watchers {
        w.abort();
    }
    cluster.shutdown().await;
    lat.sort_by(f64::total_cmp);

    // Baseline: bare gossipsub over swarms of the same stack and topology.
    let mut base = bare_gossip(n, samples).await?;
    base.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let (b50, b99) = (percentile(&base, 0.5), percentile(&base, 0.99));
    let goal = if n <= 3 { 10.0 } else { 50.0 };
    eprintln!(
        "  murmur p50 {p50:.2} ms p99 {p99:.2} ms (missed {missed}); bare gossip p50 {b50:.2} p99 {b99:.2}"
    );
    Ok((
        vec![Row {
            scenario: format!("write to visible on all, {n} nodes ({samples} writes)"),
            figure: "p50 / p99 ms".into(),
            murmur: format!("{p50:.2} / {p99:.2}"),
            baseline: format!("{b50:.2} / {b99:.2} bare gossip"),
            goal: format!("p99 < {goal:.0} ms"),
            pass: Some(p99 < goal && missed == 0),
        }],
        json!({"nodes": n, "samples": samples, "missed": missed, "p50_ms": p50, "p99_ms": p99,
               "max_ms": lat.last(), "baseline_p50_ms": b50, "baseline_p99_ms": b99,
               "baseline_max_ms": base.last()}),
    ))
}

/// Publish-to-received-by-all over `n` bare swarms (star), `samples` times: ms each.
async fn bare_gossip(n: usize, samples: usize) -> Res<Vec<f64>> {
    let secret: [u8; 32] = rand::random();
    let mut handles = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Vec<u8>, Instant)>();
    for i in 0..n {
        let mut cfg = p2p::Config::new(Keypair::generate_ed25519(), secret, "bench/bare");
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
        cfg.mdns = false;
        let (h, mut events) = p2p::spawn::<String, String>(cfg)?;
        let tx = tx.clone();
        let h2 = h.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let Event::Gossip {
                    propagation_source,
                    message_id,
                    data,
                    ..
                } = ev
                {
                    let at = Instant::now();
                    h2.report_validation(message_id, propagation_source, Acceptance::Accept)
                        .await;
                    let _ = tx.send((i, data, at));
                }
            }
        });
        handles.push(h);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let hub = loop {
        if let Some(a) = handles[0].listen_addrs().await?.into_iter().next() {
            break format!("{a}/p2p/{}", handles[0].local_peer_id()).parse::<Multiaddr>()?;
        }
        if Instant::now() > deadline {
            return Err("bare swarm never listened".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    for h in &handles[1..] {
        h.dial(hub.clone()).await?;
    }
    let payload = |tag: &str| {
        let mut v = tag.as_bytes().to_vec();
        v.resize(200, b'.');
        v
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut k = 0;
    loop {
        let mut ok = true;
        for (w, h) in handles.iter().enumerate() {
            k += 1;
            let body = payload(&format!("warm {w} {k}"));
            let _ = h.publish(body.clone()).await;
            ok &= wait_seen(&mut rx, body, n - 1, Duration::from_secs(2))
                .await
                .is_some();
        }
        if ok {
            break;
        }
        if Instant::now() > deadline {
            return Err("bare swarms never formed a mesh".into());
        }
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut out = Vec::with_capacity(samples);
    for s in 0..samples {
        let body = payload(&format!("sample {s}"));
        let t0 = Instant::now();
        let _ = handles[s % n].publish(body.clone()).await;
        if let Some(last) = wait_seen(&mut rx, body, n - 1, Duration::from_secs(5)).await {
            out.push((last - t0).as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for h in handles {
        h.shutdown().await;
    }
    Ok(out)
}
