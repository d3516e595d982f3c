//! murmur's benchmark harness: every scenario of issue 6 with its baseline, in one run.
//!
//! ```text
//! cargo bench --bench murmur -- [--scale 0.1 | --quick] [--rounds 5] [--json target/bench.json] [--only NAME,...]
//! ```
//!
//! Each scenario measures its baseline in the same run, so ratios hold on a noisy machine;
//! the apply and local scenarios interleave several rounds of murmur and of each baseline
//! (`--rounds`, 5 by default) and report the median of the per-round ratios.
//! Stores use the node default, `Durability::Full` (fsync on each commit); the plain-SQL
//! baselines use the same pragmas (WAL, synchronous=FULL) through the same driver (sqlx).
//! Nodes whose peak RSS is reported run in a child process: this binary re-executed with
//! `--child`.
//!
//! # Layout
//!
//! - this file: the arguments, the run of the scenarios, the table, the JSON, the machine,
//!   and the statistics they share (rates, medians, percentiles);
//! - [`plain`]: the plain-SQL baselines and floors (`PlainLog`, `PlainMerge`, `plain_tags…`);
//! - [`nodes`]: the in-process nodes of the scenarios (murmur-testkit's cluster, with the
//!   bench's config) and a published write;
//! - one module per scenario: [`apply`] (1), [`local`] (2), [`latency`] (3), [`owned`] (5),
//!   [`catchup`] (4 and 6, in child processes), [`library`] (issue 20; opt-in with
//!   `--only library`).

mod apply;
mod catchup;
mod latency;
mod library;
mod local;
mod nodes;
mod owned;
mod plain;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use murmur::store::{Durability, Store, StoreOptions};
use serde_json::{Value as J, json};
use uuid::Uuid;

use crate::apply::bench_apply;
use crate::catchup::{bench_catchup_and_snapshot, child};
use crate::latency::bench_latency;
use crate::local::bench_local;
use crate::owned::bench_owned_batch;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What `--help` prints.
const USAGE: &str = "\
usage: cargo bench --bench murmur -- [--scale F | --quick] [--rounds N] [--json PATH] [--only NAMES]

  --scale F      multiply every size by F (default 1.0)
  --quick        --scale 0.1 and 3 rounds
  --rounds N     interleaved rounds of the apply and local scenarios (default 5)
  --json PATH    write the table and every figure to PATH
  --only NAMES   comma-separated scenarios: apply, local, latency, owned, catchup, snapshot,
                 library (10M file_paths at --scale 1; only when named)";

struct Args {
    scale: f64,
    /// Interleaved rounds of murmur and its baselines in the apply and local scenarios.
    rounds: usize,
    json: Option<PathBuf>,
    only: Option<Vec<String>>,
}

fn parse_args() -> Args {
    let mut a = Args {
        scale: 1.0,
        rounds: 5,
        json: None,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {
                a.scale = 0.1;
                a.rounds = 3;
            }
            "--rounds" => a.rounds = it.next().and_then(|s| s.parse().ok()).unwrap_or(5).max(1),
            "--scale" => a.scale = it.next().and_then(|s| s.parse().ok()).unwrap_or(1.0),
            "--json" => a.json = it.next().map(PathBuf::from),
            "--only" => a.only = it.next().map(|s| s.split(',').map(str::to_owned).collect()),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            // `cargo bench` passes `--bench`; anything else unknown is ignored too.
            _ => {}
        }
    }
    a
}

fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale).round() as usize).max(1)
}

/// One line of the results table.
struct Row {
    scenario: String,
    figure: String,
    murmur: String,
    baseline: String,
    goal: String,
    pass: Option<bool>,
}

fn main() -> Res<()> {
    let raw: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The child's logs go to the same stderr (its own timings: the snapshot's pages, the
    // indexes built after them).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MURMUR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    if raw.iter().any(|a| a == "--child") {
        return rt.block_on(child(&raw));
    }
    let args = parse_args();
    rt.block_on(run(args))
}

async fn run(args: Args) -> Res<()> {
    let s = args.scale;
    let want = |name: &str| {
        args.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == name))
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut figures = serde_json::Map::new();
    let started = Instant::now();
    eprintln!(
        "murmur-bench: scale {s}, durability Full (fsync per commit) for murmur and baselines"
    );

    if want("apply") {
        let (r, j) = bench_apply(scaled(100_000, s), args.rounds).await?;
        rows.extend(r);
        figures.insert("apply_remote_updates".into(), j);
    }
    if want("local") {
        let (r, j) = bench_local(scaled(100_000, s), scaled(2_000, s), args.rounds).await?;
        rows.extend(r);
        figures.insert("local_writes".into(), j);
    }
    if want("latency") {
        let samples = scaled(200, s).max(20);
        for n in [3usize, 10] {
            let (r, j) = bench_latency(n, samples).await?;
            rows.extend(r);
            figures.insert(format!("latency_{n}_nodes"), j);
        }
    }
    if want("owned") {
        let (r, j) = bench_owned_batch(scaled(100_000, s)).await?;
        rows.extend(r);
        figures.insert("owned_batch_to_2_peers".into(), j);
    }
    if want("catchup") || want("snapshot") {
        let (r, j) = bench_catchup_and_snapshot(scaled(1_000_000, s), want("snapshot")).await?;
        rows.extend(r);
        for (k, v) in j {
            figures.insert(k, v);
        }
    }

    // Minutes long: only when asked for by name.
    if args
        .only
        .as_ref()
        .is_some_and(|o| o.iter().any(|x| x == "library"))
    {
        let (r, j) = crate::library::bench_library(scaled(10_000_000, s)).await?;
        rows.extend(r);
        figures.insert("library".into(), j);
    }

    print_table(&rows);
    let total = started.elapsed().as_secs_f64();
    eprintln!("total {total:.1} s");
    if let Some(path) = args.json {
        let doc = json!({
            "scale": s,
            "durability": "Full",
            "machine": machine(),
            "total_seconds": total,
            "table": rows.iter().map(|r| json!({
                "scenario": r.scenario, "figure": r.figure, "murmur": r.murmur,
                "baseline": r.baseline, "goal": r.goal, "pass": r.pass,
            })).collect::<Vec<_>>(),
            "figures": figures,
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    let head = ["scenario", "figure", "murmur", "baseline", "goal", "ok"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.figure.clone(),
                r.murmur.clone(),
                r.baseline.clone(),
                r.goal.clone(),
                match r.pass {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let mut w = head.map(str::len);
    for c in &cells {
        for (wi, ci) in w.iter_mut().zip(c) {
            *wi = (*wi).max(ci.len());
        }
    }
    let line = |c: &[String]| {
        let parts: Vec<String> = c
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<width$}", width = w[i]))
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(&head.map(String::from));
    println!(
        "|{}|",
        w.iter()
            .map(|n| "-".repeat(n + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for c in &cells {
        line(c);
    }
}

fn machine() -> J {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_gb": mem_kb / 1024 / 1024,
    })
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn fmt_rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.0}k/s", r / 1000.0)
    } else {
        format!("{r:.0}/s")
    }
}

async fn open_store(path: &Path, client: Uuid) -> Res<Store> {
    let mut o = StoreOptions::new(path, murmur_testkit::device_key(client.as_u128()));
    o.durability = Durability::Full;
    Ok(Store::open(o).await?)
}

/// The median of `v` (the mean of the middle two for an even length); 0 when empty.
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
