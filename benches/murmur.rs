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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use murmur::node::{Config, Node};
use murmur::p2p::{self, Acceptance, Event, Keypair, Multiaddr};
use murmur::store::{
    BatchEntry, Change, Clock, Durability, Method, Op, PhysicalClock, Store, StoreOptions, Value,
};
use serde_json::{Value as J, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Executor};
use uuid::Uuid;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Rows per multi-row statement in the plain-SQL baselines.
const SQL_ROWS: usize = 500;
/// Log entries per log row, as in murmur's op log.
const LOG_CHUNK: usize = 1_000;
/// Rows per transaction in the plain-SQL baselines (and ops per remote batch).
const TX_ROWS: usize = 5_000;

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
    if raw.iter().any(|a| a == "--child") {
        return rt.block_on(child(&raw));
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MURMUR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
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

// ---------------------------------------------------------------------------------------
// Plain SQL baselines

/// A plain SQLite database with the same pragmas as a store (WAL, synchronous=FULL).
async fn plain_pool(path: &Path) -> Res<SqlitePool> {
    let opts = SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?;
    pool.execute(
        "CREATE TABLE IF NOT EXISTS tags (uuid TEXT PRIMARY KEY NOT NULL, name TEXT, color TEXT) WITHOUT ROWID",
    )
    .await?;
    pool.execute(
        "CREATE TABLE IF NOT EXISTS file_paths (uuid TEXT PRIMARY KEY NOT NULL, owner TEXT NOT NULL, \
         crdt_ts BLOB NOT NULL, crdt_seq INTEGER NOT NULL, materialized_path TEXT, name TEXT, \
         extension TEXT, size_bytes INTEGER, cas_id TEXT, date_modified TEXT) WITHOUT ROWID",
    )
    .await?;
    // The op log, as murmur's migration creates it (for the "floor" figures).
    pool.execute(
        "CREATE TABLE IF NOT EXISTS op_chunks (client_uuid TEXT NOT NULL, first_seq INTEGER NOT NULL, \
         last_seq INTEGER NOT NULL, ops BLOB NOT NULL, PRIMARY KEY (client_uuid, last_seq)) WITHOUT ROWID",
    )
    .await?;
    Ok(pool)
}

/// The least a durable op log costs on top of the rows: each transaction of [`plain_tags`]
/// also appends its rows as log entries (time, method, resource, row uuid, property, value),
/// CBOR-encoded in chunks of [`LOG_CHUNK`] entries, one log row per chunk, as murmur's log
/// stores them. No reads, no merge state: the floor murmur's writes cannot go below.
async fn plain_tags_logged(
    pool: &SqlitePool,
    rows: &[(String, String, String)],
    per_tx: usize,
    upsert: bool,
    method: &'static str,
) -> Res<()> {
    let mut log = PlainLog::new();
    let mut conn = pool.acquire().await?;
    for tx_rows in rows.chunks(per_tx) {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        for chunk in tx_rows.chunks(SQL_ROWS) {
            tags_statement(chunk, upsert).execute(&mut *tx).await?;
        }
        log.append(&mut tx, tx_rows, upsert, method).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// A plain op log in murmur's chunked layout, for the floors.
struct PlainLog {
    author: String,
    seq: i64,
}

impl PlainLog {
    fn new() -> Self {
        PlainLog {
            author: Uuid::new_v4().hyphenated().to_string(),
            seq: 0,
        }
    }

    /// Appends `rows` as log entries of `method` (setting `name` when `update`).
    async fn append(
        &mut self,
        conn: &mut sqlx::SqliteConnection,
        rows: &[(String, String, String)],
        update: bool,
        method: &'static str,
    ) -> Res<()> {
        for chunk in rows.chunks(LOG_CHUNK) {
            let entries: Vec<_> = chunk
                .iter()
                .map(|(u, n, _)| {
                    (
                        0u64,
                        method,
                        "tags",
                        u.as_str(),
                        update.then_some("name"),
                        n,
                    )
                })
                .collect();
            let mut blob = vec![1u8];
            ciborium::into_writer(&entries, &mut blob)?;
            sqlx::query(
                "INSERT INTO op_chunks (client_uuid, first_seq, last_seq, ops) VALUES (?, ?, ?, ?)",
            )
            .bind(self.author.as_str())
            .bind(self.seq + 1)
            .bind(self.seq + chunk.len() as i64)
            .bind(blob)
            .execute(&mut *conn)
            .await?;
            self.seq += chunk.len() as i64;
        }
        Ok(())
    }
}

/// A per-property last-writer-wins merge written in plain SQL, for the floors of the apply
/// scenario: how a table keeps its registers' timestamps, and the statement that merges
/// one `SharedUpdate` of `name` into each of up to 2,000 rows.
struct PlainMerge {
    /// The table's name.
    table: &'static str,
    /// `CREATE TABLE` of `(uuid, name, color, <timestamps>)` (and any index it needs).
    create: String,
    /// One row of the initial insert: `(uuid, name, color, <timestamps of a create>)`, with
    /// `?` for the uuid, name, color and the create's timestamp.
    insert_row: &'static str,
    /// The merge of `n` rows bound as `(uuid, name, timestamp)`: changes a row only where
    /// it is live and the op is newer than its `name` register.
    merge: Box<dyn Fn(usize) -> String>,
    /// Run once per transaction after the merges: must return 0 (no row was inserted).
    check: Option<String>,
}

impl PlainMerge {
    /// murmur's design: the timestamps in one clock blob of murmur's size (version 2, 40
    /// bytes compact, 88 with slots), merged by murmur's in-place statement
    /// (`engine::update_column`, for a table with its unborn index): an unchecked
    /// `INSERT … VALUES … ON CONFLICT DO UPDATE` that splices the slot into the clock where
    /// the layout matches and the op is newer, then one look at the partial index of rows
    /// it would have inserted (none).
    fn clock_blob() -> Self {
        // version 2, then the names ("name", "color"), as murmur's clocks start.
        const PREFIX: &str = "02000200046E616D650005636F6C6F72";
        // The least string above every string that starts with PREFIX (its last byte + 1).
        const UPPER: &str = "02000200046E616D650005636F6C6F73";
        let prefix_len = PREFIX.len() / 2;
        let (exists, slots) = (prefix_len + 1, prefix_len + 25);
        let full = slots - 1 + 48;
        let same = "FF".repeat(24);
        PlainMerge {
            table: "tags_merged",
            create: "CREATE TABLE IF NOT EXISTS tags_merged (uuid TEXT PRIMARY KEY NOT NULL, \
                     name TEXT, color TEXT, crdt_clock BLOB NOT NULL) WITHOUT ROWID; \
                     CREATE INDEX IF NOT EXISTS tags_merged_unborn ON tags_merged (uuid) \
                     WHERE length(crdt_clock) = 24"
                .into(),
            insert_row: "(?, ?, ?, CAST(X'02000200046E616D650005636F6C6F72' || ? AS BLOB))",
            merge: Box::new(move |n| {
                format!(
                    "INSERT INTO tags_merged (uuid, name, crdt_clock) VALUES {values} \
                     ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, \
                     crdt_clock = CAST(CASE length(crdt_clock) \
                     WHEN {full} THEN substr(crdt_clock, 1, {before}) || excluded.crdt_clock \
                     || substr(crdt_clock, {after}) \
                     ELSE crdt_clock || excluded.crdt_clock || X'{same}' END AS BLOB) \
                     WHERE length(crdt_clock) IN ({full}, {compact}) \
                     AND crdt_clock >= X'{PREFIX}' AND crdt_clock < X'{UPPER}' \
                     AND excluded.crdt_clock > CASE substr(crdt_clock, {slots}, 24) \
                     WHEN X'{same}' THEN substr(crdt_clock, {exists}, 24) \
                     WHEN X'' THEN substr(crdt_clock, {exists}, 24) \
                     ELSE substr(crdt_clock, {slots}, 24) END",
                    values = vec!["(?,?,?)"; n].join(","),
                    before = slots - 1,
                    after = slots + 24,
                    compact = slots - 1,
                )
            }),
            check: Some(
                "SELECT EXISTS (SELECT 1 FROM tags_merged WHERE length(crdt_clock) = 24)".into(),
            ),
        }
    }

    /// The least any per-property last-writer-wins merge in SQLite must do: a timestamp
    /// column per property beside the row's existence timestamp (no blob to parse or
    /// splice, no layout to check), a check that the row is live (so that no update
    /// inserts a row), and one comparison with the register's timestamp.
    fn lww_columns() -> Self {
        Self::lww("tags_lww", true)
    }

    /// [`Self::lww_columns`] with murmur's cheaper live-row check instead of the `EXISTS`:
    /// the update does not look for its row, a row it does not find is inserted with an
    /// empty existence timestamp, and one look at a partial index of such rows after the
    /// statements finds any (none here). A correct merge, and the cheapest of this family.
    fn lww_unborn() -> Self {
        Self::lww("tags_lww_unborn", false)
    }

    fn lww(table: &'static str, checked: bool) -> Self {
        PlainMerge {
            table,
            create: format!(
                "CREATE TABLE IF NOT EXISTS {table} (uuid TEXT PRIMARY KEY NOT NULL, name TEXT, \
                 color TEXT, exists_ts BLOB NOT NULL, name_ts BLOB, color_ts BLOB) WITHOUT ROWID{}",
                if checked {
                    String::new()
                } else {
                    format!(
                        "; CREATE INDEX IF NOT EXISTS {table}_unborn ON {table} (uuid) \
                         WHERE length(exists_ts) = 0"
                    )
                }
            ),
            insert_row: "(?, ?, ?, ?, NULL, NULL)",
            merge: Box::new(move |n| {
                let values = vec!["(?,?,?)"; n].join(",");
                let rows = if checked {
                    format!(
                        "SELECT column1, column2, X'', column3 FROM (VALUES {values}) AS v \
                         WHERE EXISTS (SELECT 1 FROM {table} AS cur WHERE cur.uuid = v.column1)"
                    )
                } else {
                    // `WHERE true`: without it, SQLite would read `ON CONFLICT` as a join's `ON`.
                    format!(
                        "SELECT column1, column2, X'', column3 FROM (VALUES {values}) WHERE true"
                    )
                };
                format!(
                    "INSERT INTO {table} (uuid, name, exists_ts, name_ts) {rows} \
                     ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, name_ts = excluded.name_ts \
                     WHERE excluded.name_ts > coalesce(name_ts, exists_ts)"
                )
            }),
            check: (!checked).then(|| {
                format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE length(exists_ts) = 0)")
            }),
        }
    }

    /// Creates the table and its `created` rows (not timed).
    async fn setup(&self, pool: &SqlitePool, created: &[(String, String, String)]) -> Res<()> {
        pool.execute(AssertSqlSafe(self.create.clone())).await?;
        let mut conn = pool.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        for chunk in created.chunks(SQL_ROWS) {
            let sql = format!(
                "INSERT INTO {} VALUES {}",
                self.table,
                vec![self.insert_row; chunk.len()].join(",")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (u, n, c) in chunk {
                q = q
                    .bind(u.as_str())
                    .bind(n.as_str())
                    .bind(c.as_str())
                    .bind(plain_ts(0, 0));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Merges `updates` (one per row, [`TX_ROWS`] per transaction, each with its log
    /// entries in chunks, as murmur's log stores them), newer than those of every earlier
    /// `round`: the time of the merges, with no Rust between the statements.
    async fn round(
        &self,
        pool: &SqlitePool,
        updates: &[(String, String, String)],
        round: u64,
    ) -> Res<Duration> {
        let mut log = PlainLog::new();
        let mut conn = pool.acquire().await?;
        let t = Instant::now();
        for (i, tx_rows) in updates.chunks(TX_ROWS).enumerate() {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            let now = plain_ts(round + 1, i as u64);
            for chunk in tx_rows.chunks(2_000) {
                let mut q = sqlx::query(AssertSqlSafe((self.merge)(chunk.len())));
                for (u, n, _) in chunk {
                    q = q.bind(u.as_str()).bind(n.as_str()).bind(now.clone());
                }
                let done = q.execute(&mut *tx).await?.rows_affected();
                assert_eq!(done as usize, chunk.len(), "every plain merge applies");
            }
            if let Some(check) = &self.check {
                let inserted: i64 = sqlx::query_scalar(AssertSqlSafe(check.clone()))
                    .fetch_one(&mut *tx)
                    .await?;
                assert_eq!(inserted, 0, "no plain merge inserts a row");
            }
            log.append(&mut tx, tx_rows, true, "SharedUpdate").await?;
            tx.commit().await?;
        }
        Ok(t.elapsed())
    }
}

/// A 24-byte timestamp as murmur's clocks store them (time, then the author), for the
/// plain merges: later `round`s and later `tx`s of a round are newer.
fn plain_ts(round: u64, tx: u64) -> Vec<u8> {
    let mut b = (round << 32 | tx).to_be_bytes().to_vec();
    b.extend_from_slice(&[7u8; 16]);
    b
}

/// One multi-row insert (or upsert) of `(uuid, name, color)` rows into `tags`.
fn tags_statement(
    chunk: &[(String, String, String)],
    upsert: bool,
) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let sql = format!(
        "INSERT INTO tags (uuid, name, color) VALUES {}{}",
        vec!["(?,?,?)"; chunk.len()].join(","),
        if upsert {
            " ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, color = excluded.color"
        } else {
            ""
        }
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for (u, n, c) in chunk {
        q = q.bind(u.as_str()).bind(n.as_str()).bind(c.as_str());
    }
    q
}

/// Writes `(uuid, name, color)` rows into `tags`: `per_tx` rows per transaction, multi-row
/// statements of up to [`SQL_ROWS`] rows; `upsert` adds `ON CONFLICT DO UPDATE`.
async fn plain_tags(
    pool: &SqlitePool,
    rows: &[(String, String, String)],
    per_tx: usize,
    upsert: bool,
) -> Res<()> {
    let mut conn = pool.acquire().await?;
    for tx_rows in rows.chunks(per_tx) {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        for chunk in tx_rows.chunks(SQL_ROWS) {
            tags_statement(chunk, upsert).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
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
    let mut o = StoreOptions::new(path, client);
    o.durability = Durability::Full;
    Ok(Store::open(o).await?)
}

// ---------------------------------------------------------------------------------------
// 1. Remote apply

async fn bench_apply(n: usize, rounds: usize) -> Res<(Vec<Row>, J)> {
    eprintln!(
        "[apply] {n} remote SharedUpdate ops in batches of {TX_ROWS}, {rounds} rounds of murmur and its baselines, interleaved"
    );
    let dir = tempfile::tempdir()?;
    let store = open_store(&dir.path().join("r.db"), Uuid::new_v4()).await?;
    let author = Uuid::new_v4();
    let clock = Clock::new(author, Duration::from_millis(100), PhysicalClock::System);
    let uuids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let op = |seq: u64, method, uuid, property: Option<&str>, value: Option<Value>, fields| Op {
        author,
        seq,
        time: clock.now().time,
        method,
        resource: "tags".into(),
        uuid: Some(uuid),
        property: property.map(str::to_owned),
        value,
        fields,
        count: None,
    };
    // The rows exist first (not timed), here and in each baseline's table.
    let mut seq = 0u64;
    let t = Instant::now();
    for chunk in uuids.chunks(TX_ROWS) {
        let changes: Vec<Change> = chunk
            .iter()
            .map(|u| {
                seq += 1;
                let fields = BTreeMap::from([
                    ("name".to_owned(), Value::Text(format!("tag {seq}"))),
                    ("color".to_owned(), Value::Text("red".into())),
                ]);
                Change::Op(op(seq, Method::SharedCreate, *u, None, None, fields))
            })
            .collect();
        let rep = store.apply(changes).await?;
        assert_eq!(rep.applied, chunk.len(), "creates applied");
    }
    let creates = t.elapsed();
    let pool = plain_pool(&dir.path().join("plain.db")).await?;
    let base: Vec<(String, String, String)> = uuids
        .iter()
        .enumerate()
        .map(|(i, u)| (u.hyphenated().to_string(), format!("tag {i}"), "red".into()))
        .collect();
    plain_tags(&pool, &base, TX_ROWS, true).await?;
    let (blob, lww, unborn) = (
        PlainMerge::clock_blob(),
        PlainMerge::lww_columns(),
        PlainMerge::lww_unborn(),
    );
    blob.setup(&pool, &base).await?;
    lww.setup(&pool, &base).await?;
    unborn.setup(&pool, &base).await?;

    // Each round times murmur and every baseline once, in an order rotated per round, on
    // the same rows: one SharedUpdate of `name` per row, newer than the last round's.
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut ratios = Vec::with_capacity(rounds);
    let mut in_place = 0usize;
    // One SharedUpdate of `name` per row, in batches, newer than those made before.
    let mut updates_of_every_row = || -> Vec<Vec<Change>> {
        uuids
            .chunks(TX_ROWS)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|u| {
                        seq += 1;
                        Change::Op(op(
                            seq,
                            Method::SharedUpdate,
                            *u,
                            Some("name"),
                            Some(Value::Text(format!("renamed {seq}"))),
                            BTreeMap::new(),
                        ))
                    })
                    .collect()
            })
            .collect()
    };
    for round in 0..rounds {
        let updates = updates_of_every_row();
        let upd: Vec<(String, String, String)> = base
            .iter()
            .enumerate()
            .map(|(i, (u, _, c))| (u.clone(), format!("renamed {round} {i}"), c.clone()))
            .collect();
        let mut round_times: BTreeMap<&str, f64> = BTreeMap::new();
        let mut updates = Some(updates);
        for k in 0..6 {
            let (name, took) = match (k + round) % 6 {
                0 => {
                    let t = Instant::now();
                    for batch in updates.take().unwrap_or_default() {
                        let len = batch.len();
                        let rep = store.apply(batch).await?;
                        assert_eq!(rep.applied, len, "updates applied");
                        in_place += rep.in_place;
                    }
                    ("murmur", t.elapsed())
                }
                1 => {
                    let t = Instant::now();
                    plain_tags(&pool, &upd, TX_ROWS, true).await?;
                    ("baseline", t.elapsed())
                }
                2 => {
                    let t = Instant::now();
                    plain_tags_logged(&pool, &upd, TX_ROWS, true, "SharedUpdate").await?;
                    ("floor", t.elapsed())
                }
                3 => ("merge_floor", blob.round(&pool, &upd, round as u64).await?),
                4 => ("lww_floor", lww.round(&pool, &upd, round as u64).await?),
                _ => ("lww_unborn", unborn.round(&pool, &upd, round as u64).await?),
            };
            round_times.insert(name, rate(n, took));
        }
        let ratio = round_times["murmur"] / round_times["baseline"];
        eprintln!(
            "  round {}: murmur {}, plain upserts {}, ratio {ratio:.2}; floors: log {:.2}, merge {:.2}, LWW {:.2}, LWW with the unborn check {:.2}",
            round + 1,
            fmt_rate(round_times["murmur"]),
            fmt_rate(round_times["baseline"]),
            round_times["floor"] / round_times["baseline"],
            round_times["merge_floor"] / round_times["baseline"],
            round_times["lww_floor"] / round_times["baseline"],
            round_times["lww_unborn"] / round_times["baseline"],
        );
        ratios.push(ratio);
        for (k, v) in round_times {
            times.entry(k).or_default().push(v);
        }
    }
    // Not in the ratio: the same pass where each batch holds one update older than this
    // replica's own later write of its register. The in-place attempt then misses, is
    // rolled back and run again naming the rows its statements change, and the stale op
    // takes the general path (the cost of a miss, measured here).
    let stale_batches = updates_of_every_row();
    for chunk in uuids.chunks(TX_ROWS) {
        let newer = json!({"name": "written here, later"});
        let fields = newer.as_object().cloned().unwrap_or_default();
        store.update_shared("tags", chunk[0], fields).await?;
    }
    let (t, mut stale_in_place) = (Instant::now(), 0);
    for batch in stale_batches {
        let len = batch.len();
        let rep = store.apply(batch).await?;
        assert_eq!(rep.applied, len, "updates applied");
        stale_in_place += rep.in_place;
    }
    let stale = rate(n, t.elapsed());
    store.close().await;
    pool.close().await;

    let med = |k: &str| median(&times[k]);
    let (m, b) = (med("murmur"), med("baseline"));
    eprintln!(
        "  with one stale update per batch (a missed attempt, run again naming the rows it changes; {stale_in_place} ops in place): murmur {} ({:.2} of the in-place median)",
        fmt_rate(stale),
        stale / m
    );
    let ratio = median(&ratios);
    let (lo, hi) = min_max(&ratios);
    let (floor, merged, lww) = (med("floor"), med("merge_floor"), med("lww_floor"));
    let unborn = med("lww_unborn");
    eprintln!(
        "  medians: murmur {} ({:.0}% in place), plain upserts {}, ratio {ratio:.2} ({lo:.2} to {hi:.2} over rounds)",
        fmt_rate(m),
        100.0 * in_place as f64 / (n * rounds) as f64,
        fmt_rate(b),
    );
    eprintln!(
        "  floors, of the baseline: upserts + log {:.2}; murmur's merge statement + log (merge floor) {:.2}, murmur is {:.2} of it; \
         a timestamp column per property + log (LWW floor) {:.2}, murmur is {:.2} of it; \
         the same with murmur's unborn check instead of the EXISTS (LWW unborn floor) {:.2}, murmur is {:.2} of it",
        floor / b,
        merged / b,
        m / merged,
        lww / b,
        m / lww,
        unborn / b,
        m / unborn
    );
    Ok((
        vec![Row {
            scenario: format!("apply {n} remote SharedUpdate ops, {TX_ROWS}/batch"),
            figure: "ops/s (median ratio)".into(),
            murmur: format!("{} ({ratio:.2}; {lo:.2}-{hi:.2})", fmt_rate(m)),
            baseline: format!(
                "{} plain upserts (+log: {:.2}; merge floor: {:.2}; LWW floor: {:.2}, LWW unborn floor {:.2})",
                fmt_rate(b),
                floor / b,
                merged / b,
                lww / b,
                unborn / b
            ),
            goal: "ratio >= 0.5".into(),
            pass: Some(ratio >= 0.5),
        }],
        json!({"ops": n, "batch": TX_ROWS, "rounds": rounds, "ops_per_s": m,
               "in_place_ops": in_place, "create_seconds": creates.as_secs_f64(),
               "baseline_per_s": b, "ratio": ratio, "ratio_min": lo, "ratio_max": hi,
               "ratios": ratios,
               "floor_per_s": floor, "floor_ratio": floor / b, "murmur_of_floor": m / floor,
               "merge_floor_per_s": merged, "merge_floor_ratio": merged / b,
               "murmur_of_merge_floor": m / merged,
               "lww_floor_per_s": lww, "lww_floor_ratio": lww / b, "murmur_of_lww_floor": m / lww,
               "lww_unborn_per_s": unborn, "lww_unborn_ratio": unborn / b,
               "murmur_of_lww_unborn_floor": m / unborn,
               "one_stale_per_batch_per_s": stale, "one_stale_per_batch_in_place": stale_in_place,
               "per_round_per_s": times}),
    ))
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

// ---------------------------------------------------------------------------------------
// 2. Local writes

async fn bench_local(n_batched: usize, n_single: usize, rounds: usize) -> Res<(Vec<Row>, J)> {
    const PER_BATCH: usize = 500;
    eprintln!(
        "[local] {n_batched} creates via Store::batch ({PER_BATCH}/tx), {n_single} single create_shared; {rounds} rounds of murmur and its baselines, interleaved"
    );
    let dir = tempfile::tempdir()?;
    let store = open_store(&dir.path().join("l.db"), Uuid::new_v4()).await?;
    let pool = plain_pool(&dir.path().join("plain.db")).await?;
    let new_rows = |n: usize, prefix: &str| -> Vec<(String, String, String)> {
        (0..n)
            .map(|i| {
                (
                    Uuid::now_v7().hyphenated().to_string(),
                    format!("{prefix} {i}"),
                    "blue".into(),
                )
            })
            .collect()
    };
    let entry = |(u, name, color): &(String, String, String)| BatchEntry::Create {
        resource: "tags".into(),
        uuid: Uuid::parse_str(u).ok(),
        fields: json!({"name": name, "color": color})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    // Each round writes new rows (murmur's, the baseline's and the floor's each their own),
    // so every table grows alike; the API's input is built before timing, as the rows are.
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let (mut batched_ratios, mut single_ratios) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let rows = new_rows(n_batched, "tag");
        let floor_rows = new_rows(n_batched, "tag");
        let singles = new_rows(n_single, "single");
        let mut batches: Option<Vec<Vec<BatchEntry>>> = Some(
            rows.chunks(PER_BATCH)
                .map(|chunk| chunk.iter().map(entry).collect())
                .collect(),
        );
        let mut single_entries: Option<Vec<BatchEntry>> = Some(singles.iter().map(entry).collect());
        let mut round_times: BTreeMap<&str, f64> = BTreeMap::new();
        for k in 0..5 {
            let t = Instant::now();
            let (name, n) = match (k + round) % 5 {
                0 => {
                    for batch in batches.take().unwrap_or_default() {
                        store.batch(batch).await?;
                    }
                    ("murmur_batched", n_batched)
                }
                1 => {
                    for e in single_entries.take().unwrap_or_default() {
                        if let BatchEntry::Create { uuid, fields, .. } = e {
                            store.create_shared("tags", uuid, fields).await?;
                        }
                    }
                    ("murmur_single", n_single)
                }
                2 => {
                    plain_tags(&pool, &rows, PER_BATCH, false).await?;
                    ("baseline_batched", n_batched)
                }
                3 => {
                    plain_tags(&pool, &singles, 1, false).await?;
                    ("baseline_single", n_single)
                }
                _ => {
                    plain_tags_logged(&pool, &floor_rows, PER_BATCH, false, "SharedCreate").await?;
                    ("floor_batched", n_batched)
                }
            };
            round_times.insert(name, rate(n, t.elapsed()));
        }
        let rb = round_times["murmur_batched"] / round_times["baseline_batched"];
        let rs = round_times["murmur_single"] / round_times["baseline_single"];
        eprintln!(
            "  round {}: batched murmur {} vs plain {} ({rb:.2}); single murmur {} vs plain {} ({rs:.2})",
            round + 1,
            fmt_rate(round_times["murmur_batched"]),
            fmt_rate(round_times["baseline_batched"]),
            fmt_rate(round_times["murmur_single"]),
            fmt_rate(round_times["baseline_single"]),
        );
        batched_ratios.push(rb);
        single_ratios.push(rs);
        for (k, v) in round_times {
            times.entry(k).or_default().push(v);
        }
    }
    store.close().await;
    pool.close().await;

    let med = |k: &str| median(&times[k]);
    let (mb, bb, fb) = (
        med("murmur_batched"),
        med("baseline_batched"),
        med("floor_batched"),
    );
    let (ms, bs) = (med("murmur_single"), med("baseline_single"));
    let (rb, rs) = (median(&batched_ratios), median(&single_ratios));
    let ((blo, bhi), (slo, shi)) = (min_max(&batched_ratios), min_max(&single_ratios));
    eprintln!(
        "  medians: batched murmur {} vs plain {} ({rb:.2}; {blo:.2} to {bhi:.2}); single murmur {} vs plain {} ({rs:.2}; {slo:.2} to {shi:.2}); \
         floor (plain inserts + log) {:.2} of the baseline, murmur is {:.2} of it",
        fmt_rate(mb),
        fmt_rate(bb),
        fmt_rate(ms),
        fmt_rate(bs),
        fb / bb,
        mb / fb
    );
    Ok((
        vec![
            Row {
                scenario: format!("local creates, Store::batch of {PER_BATCH} ({n_batched})"),
                figure: "writes/s (median ratio)".into(),
                murmur: format!("{} ({rb:.2}; {blo:.2}-{bhi:.2})", fmt_rate(mb)),
                baseline: format!(
                    "{} plain inserts, {PER_BATCH}/tx (+log: {:.2})",
                    fmt_rate(bb),
                    fb / bb
                ),
                goal: "ratio >= 0.3".into(),
                pass: Some(rb >= 0.3),
            },
            Row {
                scenario: format!("local creates, one create_shared per tx ({n_single})"),
                figure: "writes/s (median ratio)".into(),
                murmur: format!("{} ({rs:.2}; {slo:.2}-{shi:.2})", fmt_rate(ms)),
                baseline: format!("{} plain inserts, 1/tx", fmt_rate(bs)),
                goal: "ratio >= 0.3".into(),
                pass: Some(rs >= 0.3),
            },
        ],
        json!({
            "rounds": rounds,
            "batched": {"writes": n_batched, "per_tx": PER_BATCH, "per_s": mb, "baseline_per_s": bb,
                        "ratio": rb, "ratio_min": blo, "ratio_max": bhi, "ratios": batched_ratios,
                        "floor_per_s": fb, "floor_ratio": fb / bb, "murmur_of_floor": mb / fb},
            "single": {"writes": n_single, "per_s": ms, "baseline_per_s": bs,
                       "ratio": rs, "ratio_min": slo, "ratio_max": shi, "ratios": single_ratios},
            "per_round_per_s": times,
        }),
    ))
}

// ---------------------------------------------------------------------------------------
// Nodes in this process

struct Cluster {
    _secret_dir: tempfile::TempDir,
    secret: PathBuf,
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Node>,
}

fn secret_file() -> Res<(tempfile::TempDir, PathBuf, [u8; 32])> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("library.key");
    let secret: [u8; 32] = rand::random();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, hex)?;
    // The node refuses a secret file that others may read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok((dir, path, secret))
}

fn node_config(data: &Path, secret: &Path) -> Config {
    let mut c = Config::local(data);
    c.library_secret_file = Some(secret.to_path_buf());
    c.versions_interval = Duration::from_millis(500);
    // Pruning is driven by the benchmark itself (the snapshot scenario).
    c.prune_interval = Duration::from_secs(3600);
    c.durability = Durability::Full;
    c
}

async fn addr_of(node: &Node) -> Res<Multiaddr> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(a) = node.listen_addrs().await.into_iter().next() {
            return Ok(a);
        }
        if Instant::now() > deadline {
            return Err("node never listened".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Cluster {
    /// `n` nodes; every other node dials the first (a star, as on a LAN with one hub).
    async fn start(n: usize) -> Res<Cluster> {
        let (sd, secret, _) = secret_file()?;
        let mut c = Cluster {
            _secret_dir: sd,
            secret,
            dirs: Vec::new(),
            nodes: Vec::new(),
        };
        for _ in 0..n {
            c.add().await?;
        }
        let hub = addr_of(&c.nodes[0]).await?;
        for node in &c.nodes[1..] {
            node.dial(hub.clone()).await?;
        }
        Ok(c)
    }

    async fn add(&mut self) -> Res<()> {
        let dir = tempfile::tempdir()?;
        let node = Node::start(node_config(&dir.path().join("data"), &self.secret)).await?;
        self.dirs.push(dir);
        self.nodes.push(node);
        Ok(())
    }

    async fn shutdown(self) {
        for n in self.nodes {
            n.shutdown().await;
        }
    }
}

async fn write_tag(node: &Node, name: &str) -> Res<Uuid> {
    let out = node
        .store()
        .create_shared(
            "tags",
            None,
            json!({"name": name, "color": "red"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .await?;
    node.publish(out.ops).await;
    Ok(out.uuids[0])
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---------------------------------------------------------------------------------------
// 3. Write-to-visible latency

async fn bench_latency(n: usize, samples: usize) -> Res<(Vec<Row>, J)> {
    eprintln!("[latency] {n} nodes, {samples} writes");
    let cluster = Cluster::start(n).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Uuid, Instant)>();
    let mut watchers = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut sub = node.subscribe();
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
            let u = write_tag(&cluster.nodes[w], "warm-up").await?;
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
        let u = write_tag(&cluster.nodes[w], &format!("sample {s}")).await?;
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

/// Waits until `want` distinct nodes received `item`; returns when the last one did.
async fn wait_seen<T: PartialEq>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, T, Instant)>,
    item: T,
    want: usize,
    timeout: Duration,
) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = HashSet::new();
    let mut last = None;
    while seen.len() < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((i, got, at))) if got == item => {
                if seen.insert(i) {
                    last = Some(at);
                }
            }
            Ok(Some(_)) => {}
            _ => return None,
        }
    }
    last
}

/// Publish-to-received-by-all over `n` bare swarms (star), `samples` times: ms each.
async fn bare_gossip(n: usize, samples: usize) -> Res<Vec<f64>> {
    let (_d, _p, secret) = secret_file()?;
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

// ---------------------------------------------------------------------------------------
// 5. One owned batch to two peers

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

async fn bench_owned_batch(n: usize) -> Res<(Vec<Row>, J)> {
    eprintln!("[owned] one OwnedBatchCreate of {n} file_paths to 2 peers");
    let cluster = Cluster::start(3).await?;
    // The mesh is formed once a tag written on the hub reached both peers.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Uuid, Instant)>();
    let mut counts = Vec::new();
    let (ctx, mut crx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64, Instant)>();
    for (i, node) in cluster.nodes.iter().enumerate().skip(1) {
        let mut sub = node.subscribe();
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
        let u = write_tag(&cluster.nodes[0], "warm-up").await?;
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
        .store()
        .write_owned("file_paths", rows)
        .await?;
    let local = t0.elapsed();
    cluster.nodes[0].publish(out.ops).await;
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
        assert_eq!(node.store().count_rows("file_paths").await?, n as u64);
    }
    for c in counts {
        c.abort();
    }
    let served = cluster.nodes[0].metrics().requests_served.get();
    let reused = cluster.nodes[0].metrics().pages_reused.get();
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

// ---------------------------------------------------------------------------------------
// 4 and 6. Catch-up of an offline node, then a snapshot for a new device (child processes)

async fn run_child(
    data: &Path,
    secret: &Path,
    peer: &Multiaddr,
    author: Uuid,
    want_seq: u64,
    want_rows: u64,
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
        .stderr(std::process::Stdio::inherit())
        .output()
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
async fn child(raw: &[String]) -> Res<()> {
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
    let t0 = Instant::now();
    let mut cfg = node_config(&data, &secret);
    cfg.peers = vec![peer];
    let node = Node::start(cfg).await?;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let vv = node.store().version_vector();
        if vv.contiguous(&author) >= want_seq && node.store().count_rows("tags").await? >= want_rows
        {
            break;
        }
        if Instant::now() > deadline {
            return Err("child timed out".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
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
        })
    );
    Ok(())
}

async fn bench_catchup_and_snapshot(n: usize, snapshot: bool) -> Res<(Vec<Row>, Vec<(String, J)>)> {
    const PER_BATCH: usize = 1_000;
    eprintln!("[catch-up] a node offline while {n} ops are written, then caught up");
    let mut cluster = Cluster::start(1).await?;
    let a = &cluster.nodes[0];
    let a_addr = addr_of(a).await?;
    let author = a.client_uuid();
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
        let a = &cluster.nodes[0];
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
    let nodes = std::mem::take(&mut cluster.nodes);
    for node in nodes {
        node.shutdown().await;
    }
    Ok((rows, figures))
}
