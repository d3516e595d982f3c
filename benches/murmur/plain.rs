//! The plain-SQL baselines: the same rows written by hand through the same driver (sqlx)
//! with the same pragmas as a store (WAL, synchronous=FULL), with no merge state (the
//! baseline), plus an op log in murmur's chunked layout (the floor), plus a per-property
//! last-writer-wins merge (`PlainMerge`, the merge floors of the apply scenario).

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use murmur_store::{Hlc, Registry, statements};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Executor};
use uuid::Uuid;

use crate::Res;

/// Rows per multi-row statement in the plain-SQL baselines.
pub const SQL_ROWS: usize = 500;
/// Log entries per log row, as in murmur's op log.
const LOG_CHUNK: usize = 1_000;
/// Rows per transaction in the plain-SQL baselines (and ops per remote batch).
pub const TX_ROWS: usize = 5_000;

/// A plain SQLite database with the same pragmas as a store (WAL, synchronous=FULL).
pub async fn plain_pool(path: &Path) -> Res<SqlitePool> {
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
pub async fn plain_tags_logged(
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
pub struct PlainMerge {
    /// The table's name.
    table: &'static str,
    /// `CREATE TABLE` of `(uuid, name, color, <timestamps>)` (and any index it needs).
    create: String,
    /// One row of the initial insert: `(uuid, name, color, <timestamps of a create>)`, with
    /// `?` for the uuid, name, color and the create's timestamp.
    insert_row: String,
    /// The merge of `n` rows bound as `(uuid, name, timestamp)`: changes a row only where
    /// it is live and the op is newer than its `name` register.
    merge: Box<dyn Fn(usize) -> String>,
    /// Run once per transaction after the merges: must return 0 (no row was inserted).
    check: Option<String>,
}

impl PlainMerge {
    /// murmur's design: the timestamps in one clock blob, merged by murmur's own in-place
    /// statement for a table with its unborn index, as the engine builds it
    /// (`murmur_store::statements`): an unchecked `INSERT … VALUES … ON CONFLICT DO UPDATE`
    /// that splices the slot into the clock where the layout matches and the op is newer,
    /// then one look at the partial index of rows it would have inserted (none). The table
    /// is `tags` under another name, so a change to the row clock or to the statement
    /// changes this baseline with it.
    pub fn clock_blob() -> Self {
        let mut def = Registry::default_library()
            .get("tags")
            .expect("the default library has tags")
            .clone();
        def.name = "tags_merged".into();
        let name = def.column_index("name").expect("tags have a name column");
        // The clock of a created row is the layout's prefix and the create's timestamp.
        let created = statements::created_clock(&def, Hlc::ZERO);
        let prefix: String = created[..created.len() - 24]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        let (unborn_index, any_unborn) = statements::unborn_index(&def);
        PlainMerge {
            table: "tags_merged",
            create: format!(
                "CREATE TABLE IF NOT EXISTS tags_merged (uuid TEXT PRIMARY KEY NOT NULL, \
                 name TEXT, color TEXT, crdt_clock BLOB NOT NULL) WITHOUT ROWID; {unborn_index}"
            ),
            insert_row: format!("(?, ?, ?, CAST(X'{prefix}' || ? AS BLOB))"),
            merge: Box::new(move |n| statements::shared_update(&def, name, n, true)),
            check: Some(any_unborn),
        }
    }

    /// The least any per-property last-writer-wins merge in SQLite must do: a timestamp
    /// column per property beside the row's existence timestamp (no blob to parse or
    /// splice, no layout to check), a check that the row is live (so that no update
    /// inserts a row), and one comparison with the register's timestamp.
    pub fn lww_columns() -> Self {
        Self::lww("tags_lww", true)
    }

    /// [`Self::lww_columns`] with murmur's cheaper live-row check instead of the `EXISTS`:
    /// the update does not look for its row, a row it does not find is inserted with an
    /// empty existence timestamp, and one look at a partial index of such rows after the
    /// statements finds any (none here). A correct merge, and the cheapest of this family.
    pub fn lww_unborn() -> Self {
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
            insert_row: "(?, ?, ?, ?, NULL, NULL)".into(),
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
    pub async fn setup(&self, pool: &SqlitePool, created: &[(String, String, String)]) -> Res<()> {
        pool.execute(AssertSqlSafe(self.create.clone())).await?;
        let mut conn = pool.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        for chunk in created.chunks(SQL_ROWS) {
            let sql = format!(
                "INSERT INTO {} VALUES {}",
                self.table,
                vec![self.insert_row.as_str(); chunk.len()].join(",")
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
    pub async fn round(
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
pub async fn plain_tags(
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
