//! Scenarios 4 and 6: a node offline while ops are written, then caught up; then, after the
//! writer prunes its log, a new device that receives a snapshot. The receiving nodes run in
//! child processes (this binary re-executed with `--child`) so that their peak RSS is theirs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use murmur::node::Node;
use murmur::p2p::Multiaddr;
use murmur::store::BatchEntry;
use murmur_testkit::node::config_at;
use serde_json::{Value as J, json};
use uuid::Uuid;

use crate::nodes::{bench_config, start_cluster, write_tag};
use crate::plain::{TX_ROWS, plain_pool, plain_tags};
use crate::{Res, Row};

async fn run_child(
    data: &Path,
    secret: &Path,
    peer: &Multiaddr,
    author: Uuid,
    want_seq: u64,
    want_rows: u64,
) -> Res<J> {
    run_child_with(data, secret, peer, author, want_seq, want_rows, &[]).await
}

/// [`run_child`] with more arguments: the resource whose rows it counts (default `tags`),
/// then `load` to run digest calls and app reads during the join and sample its WAL.
pub async fn run_child_with(
    data: &Path,
    secret: &Path,
    peer: &Multiaddr,
    author: Uuid,
    want_seq: u64,
    want_rows: u64,
    more: &[&str],
) -> Res<J> {
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new(exe)
        .arg("--child")
        .arg(data)
        .arg(secret)
        .arg(peer.to_string())
        .arg(author.to_string())
        .arg(want_seq.to_string())
        .arg(want_rows.to_string())
        .args(more)
        // `output()` would pipe stderr too, and the child's logs would be lost.
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?
        .wait_with_output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("child failed ({}): {text}", out.status))?;
    Ok(serde_json::from_str(line)?)
}

/// The child: starts a node on `data`, dials `peer`, waits until it holds `author`'s ops up
/// to `want_seq` and `want_rows` tags, prints one JSON line and exits.
pub async fn child(raw: &[String]) -> Res<()> {
    let i = raw
        .iter()
        .position(|a| a == "--child")
        .ok_or("no --child")?;
    let arg = |k: usize| raw.get(i + k).cloned().ok_or("missing child argument");
    let data = PathBuf::from(arg(1)?);
    let secret = PathBuf::from(arg(2)?);
    let peer: Multiaddr = arg(3)?.parse()?;
    let author: Uuid = arg(4)?.parse()?;
    let want_seq: u64 = arg(5)?.parse()?;
    let want_rows: u64 = arg(6)?.parse()?;
    let resource = arg(7).unwrap_or_else(|_| "tags".into());
    let with_load = arg(8).is_ok_and(|a| a == "load");
    let t0 = Instant::now();
    let mut cfg = config_at(&data, &secret);
    bench_config(&mut cfg);
    cfg.peers = vec![peer];
    let node = Node::start(cfg).await?;
    // Digest calls and app reads during the join, and the WAL's size sampled.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wal_peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let side = with_load.then(|| {
        (
            crate::library::sample_wal(data.join("library.db-wal"), stop.clone(), wal_peak.clone()),
            crate::library::load(node.store().clone(), stop.clone()),
        )
    });
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let vv = node.store().version_vector();
        if vv.contiguous(&author) >= want_seq
            && node.store().count_rows(&resource).await? >= want_rows
        {
            break;
        }
        if Instant::now() > deadline {
            return Err("child timed out".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut digests, mut slowest) = (0, 0.0);
    if let Some((sampler, loader)) = side {
        sampler.await?;
        (digests, slowest) = loader.await?;
    }
    let wal = node.store().wal_stats();
    let stats = node.net_stats();
    let hwm_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    node.shutdown().await;
    println!(
        "{}",
        json!({
            "seconds": secs,
            "request_bytes_in": stats.request_bytes_in,
            "request_bytes_out": stats.request_bytes_out,
            "requests_out": stats.requests_out,
            "gossip_bytes_in": stats.gossip_bytes_in,
            "peak_rss_kb": hwm_kb,
            "peak_wal_bytes": wal_peak.load(std::sync::atomic::Ordering::Relaxed).max(wal.peak_bytes),
            "wal_checkpoints": wal.checkpoints,
            "wal_checkpoints_gave_up": wal.gave_up,
            "digests_during_join": digests,
            "slowest_digest_ms": slowest,
        })
    );
    Ok(())
}

pub async fn bench_catchup_and_snapshot(
    n: usize,
    snapshot: bool,
) -> Res<(Vec<Row>, Vec<(String, J)>)> {
    const PER_BATCH: usize = 1_000;
    eprintln!("[catch-up] a node offline while {n} ops are written, then caught up");
    let cluster = start_cluster(1).await;
    let a_addr = cluster.nodes[0].addr().await;
    let a = cluster.nodes[0].node();
    let author = a.store().author();
    // The offline node joins first (so the writer knows it), then goes away.
    write_tag(a, "before").await?;
    let c_dir = tempfile::tempdir()?;
    let c_data = c_dir.path().join("data");
    let first = run_child(&c_data, &cluster.secret, &a_addr, author, 1, 1).await?;
    eprintln!("  offline node joined in {:.2} s", first["seconds"]);
    let base_seq = a.store().version_vector().contiguous(&author);

    // n ops on the writer (SharedCreate of tags, PER_BATCH per transaction).
    let mut cbor_bytes = 0u64;
    let mut names = Vec::with_capacity(n);
    let t = Instant::now();
    let mut written = 0;
    while written < n {
        let k = PER_BATCH.min(n - written);
        let entries: Vec<BatchEntry> = (written..written + k)
            .map(|i| BatchEntry::Create {
                resource: "tags".into(),
                uuid: None,
                fields: json!({"name": format!("tag {i}"), "color": "red"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        let out = a.store().batch(entries).await?;
        for op in &out.ops {
            cbor_bytes += murmur::store::wire::to_cbor(op).len() as u64;
        }
        names.extend(out.uuids.iter().map(|u| u.hyphenated().to_string()));
        written += k;
    }
    let write_secs = t.elapsed().as_secs_f64();
    let want_seq = base_seq + n as u64;
    let want_rows = 1 + n as u64;
    eprintln!("  wrote {n} ops in {write_secs:.1} s; catching up");
    let c = run_child(
        &c_data,
        &cluster.secret,
        &a_addr,
        author,
        want_seq,
        want_rows,
    )
    .await?;
    let secs = c["seconds"].as_f64().unwrap_or(f64::NAN);
    let wire =
        c["request_bytes_in"].as_u64().unwrap_or(0) + c["request_bytes_out"].as_u64().unwrap_or(0);
    let per_op = wire as f64 / n as f64;
    let cbor_per_op = cbor_bytes as f64 / n as f64;
    let rss_mb = c["peak_rss_kb"].as_u64().unwrap_or(0) as f64 / 1024.0;
    eprintln!(
        "  caught up in {secs:.2} s, {per_op:.0} B/op on the wire (CBOR {cbor_per_op:.0} B/op), peak RSS {rss_mb:.0} MB"
    );
    let mut rows = vec![Row {
        scenario: format!("offline node catches up on {n} ops"),
        figure: "s; wire B/op; peak RSS".into(),
        murmur: format!(
            "{secs:.1} s; {per_op:.0} B/op ({:.2}x); {rss_mb:.0} MB",
            per_op / cbor_per_op
        ),
        baseline: format!("CBOR {cbor_per_op:.0} B/op"),
        goal: "< 20 s; < 1.5x; < 200 MB".into(),
        pass: Some(secs < 20.0 && per_op < 1.5 * cbor_per_op && rss_mb < 200.0),
    }];
    let mut figures = vec![(
        "catch_up".to_owned(),
        json!({"ops": n, "write_seconds": write_secs, "seconds": secs, "wire_bytes": wire,
               "wire_bytes_per_op": per_op, "cbor_bytes_per_op": cbor_per_op,
               "ratio": per_op / cbor_per_op, "peak_rss_mb": rss_mb, "child": c}),
    )];

    if snapshot {
        eprintln!("[snapshot] a new device receives a {n}-row snapshot");
        let a = cluster.nodes[0].node();
        let horizon = a.store().version_vector().contiguous_map();
        let pruned = a.store().prune(&horizon).await?;
        eprintln!("  pruned {pruned} ops from the writer's log");
        let d_dir = tempfile::tempdir()?;
        let d = run_child(
            &d_dir.path().join("data"),
            &cluster.secret,
            &a_addr,
            author,
            want_seq,
            want_rows,
        )
        .await?;
        let secs = d["seconds"].as_f64().unwrap_or(f64::NAN);
        let rss_mb = d["peak_rss_kb"].as_u64().unwrap_or(0) as f64 / 1024.0;

        let pool = plain_pool(&d_dir.path().join("plain.db")).await?;
        let base_rows: Vec<(String, String, String)> = names
            .iter()
            .enumerate()
            .map(|(i, u)| (u.clone(), format!("tag {i}"), "red".into()))
            .collect();
        let t = Instant::now();
        plain_tags(&pool, &base_rows, TX_ROWS, false).await?;
        let base = t.elapsed().as_secs_f64();
        pool.close().await;
        eprintln!(
            "  snapshot imported in {secs:.2} s, peak RSS {rss_mb:.0} MB; plain insert {base:.2} s"
        );
        rows.push(Row {
            scenario: format!("new device receives a {}-row snapshot", want_rows),
            figure: "s; peak RSS".into(),
            murmur: format!("{secs:.1} s; {rss_mb:.0} MB"),
            baseline: format!("{base:.1} s plain insert"),
            goal: "< 20 s; < 200 MB".into(),
            pass: Some(secs < 20.0 && rss_mb < 200.0),
        });
        figures.push((
            "snapshot".to_owned(),
            json!({"rows": want_rows, "seconds": secs, "peak_rss_mb": rss_mb,
                   "baseline_seconds": base, "child": d}),
        ));
    }
    cluster.shutdown().await;
    Ok((rows, figures))
}
