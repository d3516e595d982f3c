//! The library scenario (issue 20): a library of 10M file_paths (scaled by `--scale`) as an
//! app writes it: app-chosen random UUIDv4 keys, about half as many distinct `cas_id`s as
//! rows, owned batches of 10,000 rows. It reports the owned write rate, the digest's time
//! once writes settled, local write latency (a tag's create) at full size against empty,
//! and a new device's join by snapshot: its time to hold every row and its peak RSS (in a
//! child process), with the peak WAL size of both sides sampled during the join while
//! digest calls and app reads run on both. Beside each, SQLite's own bulk insert of the
//! same rows in key order (and a plain single-row insert) in the same run. Opt-in:
//! `--only library` (it takes minutes). `MURMUR_BENCH_LIBRARY=DIR` keeps the written library
//! in DIR, or reuses the one kept there (the write phase then is not measured).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value as J, json};
use sqlx::SqlitePool;
use uuid::Uuid;

use murmur_testkit::node::TestNode;

use crate::nodes::{bench_config, write_tag};
use crate::plain::{SQL_ROWS, TX_ROWS, plain_pool};
use crate::{Res, Row, fmt_rate, percentile};

/// The most rows the baseline that keeps the indexes up row by row runs for.
const KEPT_UP_MAX: usize = 2_000_000;
/// Rows per owned batch, as an app indexing a folder would send them.
const BATCH: usize = 10_000;
/// Tag creates timed at each size.
const LATENCY_SAMPLES: usize = 200;

/// Row `k` of the library, the same whenever it is asked for (seeded): its UUIDv4 and
/// its fields.
fn row(seed: u64, k: usize) -> (Uuid, String, String, i64, String, String) {
    let mut rng = StdRng::seed_from_u64(seed ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let uuid = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
    // Two rows per content (a file copied once), so about half as many cas_ids as rows.
    let mut crng = StdRng::seed_from_u64(seed.wrapping_add(1) ^ (k as u64 / 2));
    let cas: u128 = crng.random();
    (
        uuid,
        format!("/photos/{}/{}/", k / 100_000, (k / 1000) % 100),
        format!("IMG_{k:08}"),
        rng.random_range(10_000..20_000_000),
        format!("{:032x}", cas),
        format!("2026-{:02}-{:02}T12:00:00Z", 1 + k % 12, 1 + k % 28),
    )
}

fn row_fields(seed: u64, k: usize) -> serde_json::Map<String, J> {
    let (uuid, path, name, size, cas, date) = row(seed, k);
    json!({"uuid": uuid.to_string(), "materialized_path": path, "name": name,
           "extension": "jpg", "size_bytes": size, "cas_id": cas, "date_modified": date})
    .as_object()
    .cloned()
    .unwrap_or_default()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Samples the size of `wal` every 50 ms until `stop`, keeping the largest in `peak`.
pub fn sample_wal(
    wal: PathBuf,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            peak.fetch_max(file_len(&wal), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Digest calls and app reads (a page of file_paths after a random key) on `store`, one of
/// each every 200 ms, until `stop`. Returns how many digest calls ran and the slowest.
pub fn load(
    store: murmur::store::Store,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, f64)> {
    tokio::spawn(async move {
        let (mut calls, mut slowest) = (0u64, 0f64);
        let mut rng = StdRng::seed_from_u64(7);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            if store.digest().await.is_ok() {
                calls += 1;
                slowest = slowest.max(t.elapsed().as_secs_f64() * 1000.0);
            }
            let after = Uuid::from_u128(rng.random()).hyphenated().to_string();
            let _ = sqlx::query("SELECT * FROM file_paths WHERE uuid > ? ORDER BY uuid LIMIT 100")
                .bind(after)
                .fetch_all(store.pool())
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (calls, slowest)
    })
}

/// The p50 of `LATENCY_SAMPLES` tag creates on `node`, in ms.
async fn tag_p50(node: &murmur::node::Node, label: &str) -> Res<f64> {
    let mut ms = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        write_tag(node, &format!("{label} {i}")).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok(percentile(&ms, 0.5))
}

/// The p50 of `LATENCY_SAMPLES` single-row inserts into the plain database, in ms.
async fn plain_p50(pool: &SqlitePool) -> Res<f64> {
    let mut ms = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        sqlx::query("INSERT INTO tags (uuid, name, color) VALUES (?, 'tag', 'red')")
            .bind(Uuid::now_v7().to_string())
            .execute(pool)
            .await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok(percentile(&ms, 0.5))
}

/// SQLite's own bulk insert of the library's rows in key order (multi-row statements,
/// [`TX_ROWS`] rows a transaction, the store's pragmas). Returns seconds and the peak WAL.
async fn plain_bulk(
    pool: &SqlitePool,
    seed: u64,
    order: &[(Uuid, u32)],
    wal: &Path,
) -> Res<(f64, u64)> {
    let mut conn = pool.acquire().await?;
    let t = Instant::now();
    let mut peak = 0;
    let ts = vec![0u8; 24];
    for tx_rows in order.chunks(TX_ROWS) {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        for chunk in tx_rows.chunks(SQL_ROWS) {
            let sql = format!(
                "INSERT INTO file_paths (uuid, owner, crdt_ts, crdt_seq, materialized_path, name, \
                 extension, size_bytes, cas_id, date_modified) VALUES {}",
                vec!["(?,?,?,?,?,?,?,?,?,?)"; chunk.len()].join(",")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (_, k) in chunk {
                let (uuid, path, name, size, cas, date) = row(seed, *k as usize);
                q = q
                    .bind(uuid.to_string())
                    .bind("owner")
                    .bind(ts.clone())
                    .bind(1i64)
                    .bind(path)
                    .bind(name)
                    .bind("jpg")
                    .bind(size)
                    .bind(cas)
                    .bind(date);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        peak = peak.max(file_len(wal));
    }
    Ok((t.elapsed().as_secs_f64(), peak))
}

/// The library's secondary indexes on `file_paths`, as its migration creates them.
const LIBRARY_INDEXES: [&str; 2] = [
    "CREATE INDEX file_paths_batch ON file_paths (owner, crdt_seq, uuid)",
    "CREATE INDEX file_paths_cas_id ON file_paths (cas_id)",
];

/// SQLite's own bulk insert of the rows in key order into a table with the library's
/// indexes: `before` true, the indexes exist first and are kept up row by row; false, they
/// are built after the rows (`CREATE INDEX`, a sort). Returns seconds and the peak WAL
/// (sampled every 50 ms, so the index build's own WAL is seen too).
async fn plain_indexed(seed: u64, order: &[(Uuid, u32)], before: bool) -> Res<(f64, u64)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("plain.db");
    let pool = plain_pool(&path).await?;
    if before {
        for sql in LIBRARY_INDEXES {
            sqlx::query(sql).execute(&pool).await?;
        }
    }
    let wal = dir.path().join("plain.db-wal");
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = sample_wal(wal.clone(), stop.clone(), peak.clone());
    let t = Instant::now();
    plain_bulk(&pool, seed, order, &wal).await?;
    if !before {
        for sql in LIBRARY_INDEXES {
            sqlx::query(sql).execute(&pool).await?;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    pool.close().await;
    Ok((secs, peak.load(Ordering::Relaxed)))
}

/// The environment variable naming where a written library is kept for later runs.
const CACHE_ENV: &str = "MURMUR_BENCH_LIBRARY";

/// What the write phase measured.
struct Written {
    /// A tag's create p50 on the empty node, ms.
    empty_p50: f64,
    secs: f64,
    wal_peak: u64,
    /// The first digest once writes settled (it folds what the writes left), ms.
    first_digest_ms: f64,
}

/// Writes the library to `node` as the app would, in owned batches, then asks for the
/// digest once (which folds what is left).
async fn write_library(node: &TestNode, seed: u64, n: usize) -> Res<Written> {
    let a = node.node();
    let wal = node.dir.path().join("data").join("library.db-wal");
    let empty_p50 = tag_p50(a, "empty").await?;
    let t = Instant::now();
    let mut wal_peak = 0;
    for start in (0..n).step_by(BATCH) {
        let rows = (start..(start + BATCH).min(n))
            .map(|k| row_fields(seed, k))
            .collect();
        a.store().write_owned("file_paths", rows).await?;
        wal_peak = wal_peak.max(file_len(&wal));
        if start % (BATCH * 50) == 0 && start > 0 {
            eprintln!("  {start} rows in {:.0} s", t.elapsed().as_secs_f64());
        }
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "  wrote {n} rows in {secs:.1} s ({}), WAL peak {} MB",
        fmt_rate(n as f64 / secs),
        wal_peak >> 20
    );
    let t = Instant::now();
    a.store().digest().await?;
    Ok(Written {
        empty_p50,
        secs,
        wal_peak,
        first_digest_ms: t.elapsed().as_secs_f64() * 1000.0,
    })
}

pub async fn bench_library(n: usize) -> Res<(Vec<Row>, J)> {
    let seed = 20;
    eprintln!(
        "[library] {n} file_paths (random UUIDv4, ~{} cas_ids), a new device joins",
        n / 2
    );
    // A library written by an earlier run may stand in for the write phase (to measure
    // the join again without writing 10M rows for half an hour): `MURMUR_BENCH_LIBRARY`
    // names a directory; a run that writes keeps its library there, one that finds it
    // copies it in and reports the write phase as not measured.
    let cache = std::env::var_os(CACHE_ENV).map(PathBuf::from);
    let cached = cache.as_deref().filter(|c| {
        std::fs::read_to_string(c.join("rows")).is_ok_and(|s| s.trim() == n.to_string())
    });
    let (_secret_dir, secret) = murmur_testkit::node::secret_file();
    let (mut server, written) = match cached {
        Some(c) => {
            eprintln!(
                "  the library is the one kept in {} ({CACHE_ENV}): the write phase is not measured",
                c.display()
            );
            std::fs::copy(c.join("secret"), &secret)?;
            let dir = tempfile::tempdir()?;
            let data = dir.path().join("data");
            murmur_testkit::datadir::copy_data_dir(&c.join("data"), &data);
            let mut config = murmur_testkit::node::config_at(&data, &secret);
            bench_config(&mut config);
            (TestNode::start(config, dir, secret.clone()).await, None)
        }
        None => {
            let mut node = TestNode::new_with(&secret, bench_config).await;
            let w = write_library(&node, seed, n).await?;
            if let Some(c) = &cache {
                node.stop().await;
                let _ = std::fs::remove_dir_all(c);
                std::fs::create_dir_all(c)?;
                murmur_testkit::datadir::copy_data_dir(
                    &node.dir.path().join("data"),
                    &c.join("data"),
                );
                std::fs::copy(&secret, c.join("secret"))?;
                std::fs::write(c.join("rows"), n.to_string())?;
                node.restart_with(bench_config).await;
                eprintln!("  kept the library in {}", c.display());
            }
            (node, Some(w))
        }
    };
    let a_addr = server.addr().await;
    let a = server.node();
    let a_wal = server.dir.path().join("data").join("library.db-wal");
    let author = a.store().author();
    let nan = f64::NAN;
    let (empty_p50, write_secs, write_rate, write_wal_peak, first_digest_ms) = match &written {
        Some(w) => (
            w.empty_p50,
            w.secs,
            n as f64 / w.secs,
            w.wal_peak,
            w.first_digest_ms,
        ),
        None => (nan, nan, nan, 0, nan),
    };
    let mut digest_ms = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        a.store().digest().await?;
        digest_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    digest_ms.sort_by(f64::total_cmp);
    let digest_p50 = percentile(&digest_ms, 0.5);
    eprintln!("  digest: first {first_digest_ms:.1} ms (folds), then p50 {digest_p50:.2} ms");
    let full_p50 = tag_p50(a, "full").await?;
    eprintln!("  tag create p50: {empty_p50:.2} ms empty, {full_p50:.2} ms at {n} rows");

    // A new device joins: the writer's log pruned, so it takes the snapshot.
    let horizon = a.store().version_vector().contiguous_map();
    a.store().prune(&horizon).await?;
    let want_seq = a.store().version_vector().contiguous(&author);
    let want_rows = a.store().count_rows("file_paths").await?;
    let stop = Arc::new(AtomicBool::new(false));
    let a_peak = Arc::new(AtomicU64::new(0));
    let sampler = sample_wal(a_wal.clone(), stop.clone(), a_peak.clone());
    let loader = load(a.store().clone(), stop.clone());
    let d_dir = tempfile::tempdir()?;
    let d = crate::catchup::run_child_with(
        &d_dir.path().join("data"),
        &secret,
        &a_addr,
        author,
        want_seq,
        want_rows,
        &["file_paths", "load"],
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    let (a_digests, a_slowest) = loader.await?;
    let join_secs = d["seconds"].as_f64().unwrap_or(f64::NAN);
    let rss_mb = d["peak_rss_kb"].as_u64().unwrap_or(0) as f64 / 1024.0;
    let d_wal_mb = d["peak_wal_bytes"].as_u64().unwrap_or(0) as f64 / 1048576.0;
    let a_wal_mb = a_peak.load(Ordering::Relaxed) as f64 / 1048576.0;
    let a_stats = a.store().wal_stats();
    eprintln!(
        "  joined in {join_secs:.1} s, peak RSS {rss_mb:.0} MB; peak WAL {a_wal_mb:.0} MB (server) / {d_wal_mb:.0} MB (joiner); server digests during the join {a_digests} (slowest {a_slowest:.0} ms)"
    );
    server.stop().await;

    // SQLite's own: the same rows in key order, then single-row inserts.
    let mut order: Vec<(Uuid, u32)> = (0..n).map(|k| (row(seed, k).0, k as u32)).collect();
    order.sort_unstable();
    let p_dir = tempfile::tempdir()?;
    let p_path = p_dir.path().join("plain.db");
    let pool = plain_pool(&p_path).await?;
    let plain_empty_p50 = plain_p50(&pool).await?;
    let p_wal = p_dir.path().join("plain.db-wal");
    let (bulk_secs, bulk_wal) = plain_bulk(&pool, seed, &order, &p_wal).await?;
    let plain_full_p50 = plain_p50(&pool).await?;
    let t = Instant::now();
    let _: (i64,) = sqlx::query_as("SELECT count(*) FROM file_paths")
        .fetch_one(&pool)
        .await?;
    let count_ms = t.elapsed().as_secs_f64() * 1000.0;
    pool.close().await;
    let bulk_rate = n as f64 / bulk_secs;
    // Kept up row by row, the cas_id index takes a random page write per row: 36 s for 1M
    // rows on 2026-12-03, and more per row as it grows, so past 2M rows it is not run.
    let (kept_secs, kept_wal) = if n <= KEPT_UP_MAX {
        plain_indexed(seed, &order, true).await?
    } else {
        (f64::NAN, 0)
    };
    let (after_secs, after_wal) = plain_indexed(seed, &order, false).await?;
    eprintln!(
        "  plain bulk insert with the library's indexes: kept up {kept_secs:.1} s (WAL peak {} MB), built after {after_secs:.1} s (WAL peak {} MB)",
        kept_wal >> 20,
        after_wal >> 20
    );
    eprintln!(
        "  plain bulk insert (key order) {bulk_secs:.1} s ({}), WAL peak {} MB; plain insert p50 {plain_empty_p50:.2} / {plain_full_p50:.2} ms; count(*) {count_ms:.0} ms",
        fmt_rate(bulk_rate),
        bulk_wal >> 20
    );

    let goal_join = 180.0 * n as f64 / 10_000_000.0;
    let rows = vec![
        Row {
            scenario: format!("library: owned writes of {n} file_paths (UUIDv4)"),
            figure: "rows/s".into(),
            murmur: if written.is_some() {
                fmt_rate(write_rate)
            } else {
                format!("not measured (the library kept in ${CACHE_ENV})")
            },
            baseline: format!("{} plain bulk insert, key order", fmt_rate(bulk_rate)),
            goal: "-".into(),
            pass: None,
        },
        Row {
            scenario: format!("library: digest at {n} rows, writes settled"),
            figure: "ms (p50 of 5)".into(),
            murmur: format!("{digest_p50:.2} ms"),
            baseline: format!("{count_ms:.0} ms plain count(*)"),
            goal: "< 100 ms".into(),
            pass: Some(digest_p50 < 100.0),
        },
        Row {
            scenario: format!("library: new device holds {want_rows} rows"),
            figure: "s; peak RSS".into(),
            murmur: format!("{join_secs:.1} s; {rss_mb:.0} MB"),
            baseline: format!(
                "{bulk_secs:.1} s plain bulk insert; {after_secs:.1} s with the indexes built after, {}",
                if kept_secs.is_nan() {
                    "kept up: not run past 2M rows".to_owned()
                } else {
                    format!("{kept_secs:.1} s kept up")
                }
            ),
            goal: format!("< {goal_join:.0} s (3 min at 10M); < 300 MB"),
            pass: Some(join_secs < goal_join && rss_mb < 300.0),
        },
        Row {
            scenario: "library: peak WAL during the join (server; joiner)".into(),
            figure: "MB".into(),
            murmur: format!("{a_wal_mb:.0} MB; {d_wal_mb:.0} MB"),
            baseline: format!(
                "{} MB plain bulk insert; {} MB with the indexes built after{}",
                bulk_wal >> 20,
                after_wal >> 20,
                if kept_secs.is_nan() {
                    String::new()
                } else {
                    format!(", {} MB kept up", kept_wal >> 20)
                }
            ),
            goal: "< 256 MB".into(),
            pass: Some(a_wal_mb < 256.0 && d_wal_mb < 256.0),
        },
        Row {
            scenario: format!("library: tag create p50, empty vs {n} rows"),
            figure: "ms".into(),
            murmur: format!("{empty_p50:.2} / {full_p50:.2} ms"),
            baseline: format!("{plain_empty_p50:.2} / {plain_full_p50:.2} ms plain insert"),
            goal: "-".into(),
            pass: None,
        },
    ];
    let figures = json!({
        "rows": n, "write_seconds": write_secs, "write_rows_per_s": write_rate,
        "write_wal_peak_bytes": write_wal_peak,
        "digest_first_ms": first_digest_ms, "digest_p50_ms": digest_p50,
        "tag_p50_empty_ms": empty_p50, "tag_p50_full_ms": full_p50,
        "join_seconds": join_secs, "join_peak_rss_mb": rss_mb,
        "server_wal_peak_mb": a_wal_mb, "joiner_wal_peak_mb": d_wal_mb,
        "server_wal_checkpoints": a_stats.checkpoints, "server_wal_gave_up": a_stats.gave_up,
        "server_digests_during_join": a_digests, "server_slowest_digest_ms": a_slowest,
        "plain_bulk_seconds": bulk_secs, "plain_bulk_rows_per_s": bulk_rate,
        "plain_bulk_wal_peak_bytes": bulk_wal, "plain_count_ms": count_ms,
        "plain_indexes_kept_seconds": kept_secs, "plain_indexes_kept_wal_peak_bytes": kept_wal,
        "plain_indexes_after_seconds": after_secs, "plain_indexes_after_wal_peak_bytes": after_wal,
        "write_phase_measured": written.is_some(),
        "plain_insert_p50_empty_ms": plain_empty_p50, "plain_insert_p50_full_ms": plain_full_p50,
        "child": d,
    });
    Ok((rows, figures))
}
