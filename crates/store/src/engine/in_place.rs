//! The fast path of remote batches: ops SQLite can apply by itself, without reading rows
//! into Rust (creates of rows unknown here, updates newer than their register of rows live
//! here), tried in a savepoint and rolled back to it when an op would not change its row
//! that way. Its statements are what the general path would write, checked by
//! `tests/in_place.rs` byte for byte.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use super::EngineOutcome;
use crate::error::StoreError;
use crate::op::{Change, Method, Op, OpId, RowEvent};
use crate::registry::{Kind, Registry, ResourceDef};
use crate::rowclock;
use crate::sql::rows::key_of;
use crate::sql::{Query, exec, query, rows_per_statement, values_list};
use crate::value::Value;

/// Rows per in-place update statement: larger than [`rows_per_statement`]'s, as this
/// statement runs once per chunk of a remote batch (BENCHMARKS.md has the measured cost per
/// row) and its three parameters per row stay far below SQLite's limit.
const IN_PLACE_ROWS: usize = 2_000;

/// The fast path: ops SQLite can apply by itself, without reading rows into Rust.
///
/// - A `SharedCreate` of a row that no other op of `items` names is inserted as a new live
///   row (its clock in the compact form), where neither the data table nor the side tables
///   know the row: exactly what the merge makes of a create of an unknown row.
/// - A `SharedUpdate` of a row that no create or delete of `items` names writes its value
///   and its slot of the row's clock (see [`crate::rowclock`]) where the row is live, its
///   clock has the registry's current layout, and the op is newer than the register:
///   exactly the rows [`SharedRow::update`] would change.
///
/// When every such op changed its row, they are done, and the other items are returned for
/// the general path. Otherwise (a row already known, not live, an older op, a clock of an
/// earlier layout) the attempt is rolled back to its savepoint and run again, its
/// statements now naming the rows they change: the ops that changed theirs are done, and
/// the others are returned with the rest. `None` (the general path applies all of
/// `items`) when no op could go in place, or SQLite refused a statement.
pub(super) async fn in_place<'c>(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    items: &[&'c Change],
    local: bool,
    out: &mut EngineOutcome,
    unborn: &Unborn,
) -> Result<Option<Vec<&'c Change>>, StoreError> {
    let column_of = |op: &Op| op.property.as_deref().and_then(|p| def.column_index(p));
    let plain_update = |c: &Change| {
        let op = c.op();
        matches!(c, Change::Op(_))
            && op.method == Method::SharedUpdate
            && op.uuid.is_some()
            && op.value.is_some()
            && column_of(op).is_some()
    };
    // The rows of ops other than plain updates; a create goes in place only when it is the
    // one op of the batch naming its row. A batch of updates alone has none of either.
    let others: HashSet<Uuid> = items
        .iter()
        .filter(|c| !plain_update(c))
        .filter_map(|c| c.op().uuid)
        .collect();
    let mut named: HashMap<Uuid, usize> = HashMap::new();
    if !others.is_empty() {
        for u in items.iter().filter_map(|c| c.op().uuid) {
            if others.contains(&u) {
                *named.entry(u).or_default() += 1;
            }
        }
    }
    let mut creates: Vec<&Op> = Vec::new();
    // Per column, in item order: each update with its row's key.
    let mut by_column: BTreeMap<usize, Vec<(&Op, String)>> = BTreeMap::new();
    let mut rest = Vec::new();
    let mut fast: Vec<&'c Change> = Vec::new();
    for c in items {
        let op = c.op();
        match (c, op.uuid, column_of(op)) {
            (Change::Op(op), Some(u), _)
                if op.method == Method::SharedCreate && named.get(&u) == Some(&1) =>
            {
                creates.push(op);
                fast.push(*c);
            }
            (_, Some(u), Some(col)) if plain_update(c) && !others.contains(&u) => {
                by_column.entry(col).or_default().push((op, key_of(u)));
                fast.push(*c);
            }
            _ => rest.push(*c),
        }
    }
    if fast.is_empty() {
        return Ok(None);
    }

    // With the table's unborn index, an update does not check that its row is live: it
    // inserts the row it does not find, and one look at the index afterwards finds any.
    let unchecked = !by_column.is_empty() && unborn.contains(&def.name);
    exec(conn, "SAVEPOINT murmur_in_place".to_owned(), |q| q).await?;
    let mut done = statements(conn, def, &creates, &by_column, unchecked, None).await?;
    if done && unchecked {
        done = !any_unborn(conn, &def.name).await?;
    }
    if done {
        exec(conn, "RELEASE murmur_in_place".to_owned(), |q| q).await?;
        out.in_place += fast.len();
        out.events
            .extend(fast.into_iter().map(|c| RowEvent::of(c.op(), !local)));
        return Ok(Some(rest));
    }

    // A miss: an op SQLite did not apply (older than its register, a row not live here or
    // with a clock of another layout, a row named twice in one statement). Tried again,
    // the statements now name the rows they change; the ops that changed nothing are left
    // to the general path, instead of the whole batch. Rows named more than once for one
    // column are left to it at once (which of their ops changed the row is not known).
    exec(conn, "ROLLBACK TO murmur_in_place".to_owned(), |q| q).await?;
    let mut retry: BTreeMap<usize, Vec<(&Op, String)>> = BTreeMap::new();
    for (col, ops) in by_column {
        let mut count: HashMap<&str, usize> = HashMap::with_capacity(ops.len());
        for (_, key) in &ops {
            *count.entry(key.as_str()).or_default() += 1;
        }
        let once: Vec<(&Op, String)> = ops
            .iter()
            .filter(|(_, key)| count.get(key.as_str()) == Some(&1))
            .cloned()
            .collect();
        retry.insert(col, once);
    }
    let mut changed = Changed::default();
    if !statements(conn, def, &creates, &retry, unchecked, Some(&mut changed)).await? {
        // A statement SQLite refused: the general path takes everything.
        exec(conn, "ROLLBACK TO murmur_in_place".to_owned(), |q| q).await?;
        exec(conn, "RELEASE murmur_in_place".to_owned(), |q| q).await?;
        return Ok(None);
    }
    // Rows an unchecked update inserted were not live here: removed, and their ops left to
    // the general path.
    let unborn_keys = if unchecked {
        delete_unborn(conn, &def.name).await?
    } else {
        HashSet::new()
    };
    exec(conn, "RELEASE murmur_in_place".to_owned(), |q| q).await?;
    let mut applied: HashSet<OpId> = HashSet::with_capacity(fast.len());
    for c in &fast {
        let op = c.op();
        let Some(u) = op.uuid else { continue };
        let key = key_of(u);
        let done = match column_of(op) {
            _ if op.method == Method::SharedCreate => changed.creates.contains(&key),
            Some(col) => {
                !unborn_keys.contains(&key)
                    && changed.columns.get(&col).is_some_and(|k| k.contains(&key))
            }
            None => false,
        };
        if done {
            applied.insert(op.id());
            out.events.push(RowEvent::of(op, !local));
        }
    }
    out.in_place += applied.len();
    // The rest in item order: what the general path would have seen of the batch.
    let rest = items
        .iter()
        .copied()
        .filter(|c| !applied.contains(&c.op().id()))
        .collect();
    Ok(Some(rest))
}

/// The keys of the rows an in-place attempt changed: by its creates, and per column by its
/// updates.
#[derive(Default)]
struct Changed {
    creates: HashSet<String>,
    columns: BTreeMap<usize, HashSet<String>>,
}

/// Runs the in-place statements of an attempt: the creates, then each column's updates.
/// Without `changed`, whether every op changed its row; with it, the keys of the rows
/// changed are put there, and false means only that SQLite refused a statement.
async fn statements(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    creates: &[&Op],
    by_column: &BTreeMap<usize, Vec<(&Op, String)>>,
    unchecked: bool,
    mut changed: Option<&mut Changed>,
) -> Result<bool, StoreError> {
    let keys = changed.as_deref_mut().map(|c| &mut c.creates);
    if !insert_new(conn, def, creates, keys).await? {
        return Ok(false);
    }
    for (col, ops) in by_column {
        let keys = changed
            .as_deref_mut()
            .map(|c| c.columns.entry(*col).or_default());
        if !update_column(conn, def, *col, ops, unchecked, keys).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs one in-place statement: without `keys`, whether it changed `expected` rows; with
/// them, adds the keys of the rows it changed (`RETURNING uuid`), and true unless SQLite
/// refused it.
async fn in_place_statement<F>(
    conn: &mut SqliteConnection,
    sql: String,
    bind: F,
    expected: usize,
    table: &str,
    keys: Option<&mut HashSet<String>>,
) -> Result<bool, StoreError>
where
    F: FnOnce(Query) -> Query,
{
    let Some(keys) = keys else {
        return Ok(all_changed(exec(conn, sql, bind).await, expected, table));
    };
    match bind(query(format!("{sql} RETURNING uuid")))
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => {
            for r in rows {
                keys.insert(r.try_get::<String, _>(0)?);
            }
            Ok(true)
        }
        Err(e) => Ok(all_changed(Err(e.into()), expected, table)),
    }
}

/// Whether an in-place statement changed all `expected` rows. A statement SQLite refused
/// (a constraint of a custom table, say) only means "not in place": the general path then
/// does the work, and reports the error if it is real.
fn all_changed(res: Result<u64, StoreError>, expected: usize, table: &str) -> bool {
    match res {
        Ok(n) => n == expected as u64,
        Err(e) => {
            tracing::debug!(resource = %table, error = %e, "in-place statement refused; taking the general path");
            false
        }
    }
}

/// The partial index of a shared table's rows whose clock is a bare timestamp: rows an
/// unchecked in-place update inserted because it did not find them live (see [`in_place`]).
/// No stored clock has that length (version 1 takes at least 25 bytes, version 2 at least
/// 27, and the column's default is empty), so the index is empty outside an attempt.
fn unborn_index(table: &str) -> String {
    format!("{table}_murmur_unborn")
}

/// The `WHERE` of [`unborn_index`]; a query must repeat it as is to use the index.
const UNBORN: &str = "length(crdt_clock) = 24";

/// The `CREATE INDEX` of `table`'s [`unborn_index`].
pub(crate) fn create_unborn_index(table: &str) -> String {
    let index = unborn_index(table);
    format!("CREATE INDEX IF NOT EXISTS {index} ON {table} (uuid) WHERE {UNBORN}")
}

/// Whether `table` holds a row an unchecked in-place update inserted (one look at its
/// [`unborn_index`]).
pub(crate) fn any_unborn_statement(table: &str) -> String {
    format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE {UNBORN})")
}

/// The shared tables with their [`unborn_index`] (made by [`ensure_unborn_indexes`] when
/// the store opens). Should one be dropped while the store runs, its in-place updates stay
/// right: the look for unborn rows then scans the table.
pub(crate) type Unborn = BTreeSet<String>;

/// Whether an unchecked in-place update inserted a row of `table` (one look at its index).
async fn any_unborn(conn: &mut SqliteConnection, table: &str) -> Result<bool, StoreError> {
    let sql = any_unborn_statement(table);
    Ok(sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await?
        != 0)
}

/// Removes the rows unchecked in-place updates of `table` inserted (see [`in_place`]);
/// returns their keys.
async fn delete_unborn(
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<HashSet<String>, StoreError> {
    let sql = format!("DELETE FROM {table} WHERE {UNBORN} RETURNING uuid");
    let mut keys = HashSet::new();
    for r in query(sql).fetch_all(&mut *conn).await? {
        keys.insert(r.try_get::<String, _>(0)?);
    }
    Ok(keys)
}

/// Gives each shared table whose rows an update can insert with only its uuid, one column
/// and its clock (no other `NOT NULL` column without a default, no `CHECK`) its
/// [`unborn_index`], so that in-place updates need not check that their rows are live;
/// drops it from any other. Runs when the store opens; returns the tables indexed.
pub(crate) async fn ensure_unborn_indexes(
    conn: &mut SqliteConnection,
    registry: &Registry,
) -> Result<Unborn, StoreError> {
    let mut indexed = Unborn::new();
    for def in registry.iter().filter(|d| d.kind == Kind::Shared) {
        let t = &def.name;
        let required: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pragma_table_info(?) WHERE \"notnull\" = 1 AND pk = 0 \
             AND dflt_value IS NULL",
        )
        .bind(t.clone())
        .fetch_one(&mut *conn)
        .await?;
        let sql: String =
            sqlx::query_scalar("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?")
                .bind(t.clone())
                .fetch_optional(&mut *conn)
                .await?
                .unwrap_or_default();
        let index = unborn_index(t);
        // Table names are the registry's, checked against the schema: never input.
        let ddl = if required == 0 && !sql.to_ascii_uppercase().contains("CHECK") {
            indexed.insert(t.clone());
            create_unborn_index(t)
        } else {
            format!("DROP INDEX IF EXISTS {index}")
        };
        exec(conn, ddl, |q| q).await?;
    }
    Ok(indexed)
}

/// Inserts the rows `creates` make, where no row of theirs is known here (live, dead, or
/// known from updates). Whether every one was inserted.
pub(super) async fn insert_new(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    creates: &[&Op],
    mut keys: Option<&mut HashSet<String>>,
) -> Result<bool, StoreError> {
    let columns = || def.columns.iter().map(|c| c.name.as_str());
    let layout = rowclock::layout(columns());
    let ncols = def.columns.len() + 2;
    let names = columns().collect::<Vec<_>>().join(", ");
    let t = &def.name;
    for chunk in creates.chunks(rows_per_statement(ncols)) {
        // The resource's name is the registry's, like the table's: never input.
        let sql = format!(
            "INSERT INTO {t} (uuid, crdt_clock, {names}) \
             SELECT * FROM (VALUES {values}) AS v \
             WHERE NOT EXISTS (SELECT 1 FROM crdt_rows WHERE resource = '{t}' AND uuid = v.column1) \
             ON CONFLICT (uuid) DO NOTHING",
            values = values_list(chunk.len(), ncols),
        );
        let bind = |mut q: Query| {
            for op in chunk {
                let ts = op.ts();
                let key = key_of(op.uuid.unwrap_or_default());
                let clock = rowclock::encode(ts, &layout, columns().map(|_| Some(ts)));
                q = q.bind(key).bind(clock);
                for c in columns() {
                    q = q.bind(op.fields.get(c).cloned().unwrap_or(Value::Null));
                }
            }
            q
        };
        let keys = keys.as_deref_mut();
        if !in_place_statement(conn, sql, bind, chunk.len(), t, keys).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Sets column `col` from `ops` (updates with their rows' keys) where each op is newer than
/// the register and the row is live here. Whether every op changed its row.
async fn update_column(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    col: usize,
    ops: &[(&Op, String)],
    unchecked: bool,
    mut keys: Option<&mut HashSet<String>>,
) -> Result<bool, StoreError> {
    // The statement for a chunk of `n` rows, kept while the chunks are that long.
    let mut statement: Option<(usize, String)> = None;
    for chunk in ops.chunks(IN_PLACE_ROWS) {
        let sql = match &statement {
            Some((n, sql)) if *n == chunk.len() => sql.clone(),
            _ => {
                let sql = update_statement(def, col, chunk.len(), unchecked);
                statement.insert((chunk.len(), sql)).1.clone()
            }
        };
        let bind = |mut q: Query| {
            for (op, key) in chunk {
                q = q
                    .bind(key.clone())
                    .bind(op.value.clone())
                    .bind(op.ts().to_bytes().to_vec());
            }
            q
        };
        let keys = keys.as_deref_mut();
        if !in_place_statement(conn, sql, bind, chunk.len(), &def.name, keys).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The in-place update of column `col` of `def` for `rows` ops, each bound as `(uuid,
/// value, timestamp)`: it writes the value and splices the timestamp into the row's clock
/// where the row is live, its clock has the registry's current layout, and the op is newer
/// than the register. `unchecked` (a table with its [`unborn_index`]): an upsert that
/// inserts a row it does not find, for the caller to find in that index; otherwise an
/// `UPDATE … FROM` that changes only rows it finds.
pub(crate) fn update_statement(
    def: &ResourceDef,
    col: usize,
    rows: usize,
    unchecked: bool,
) -> String {
    let layout = rowclock::layout(def.columns.iter().map(|c| c.name.as_str()));
    let at = rowclock::offsets(&layout, def.columns.len());
    // Constants of the registry, never input: inlined as blob literals.
    // The version byte and the layout: the start of every current clock of the resource.
    let prefix: Vec<u8> = std::iter::once(rowclock::VERSION)
        .chain(layout.iter().copied())
        .collect();
    let prefix_hex = hex::encode_upper(&prefix);
    let same_hex = hex::encode_upper(rowclock::SLOT_SAME);
    let ts = rowclock::TS;
    let t = &def.name;
    let name = &def.columns[col].name;
    // 1-based positions, as substr counts.
    let pos = at.slots + col * ts + 1;
    let exists = at.exists + 1;
    let slot = format!("substr({t}.crdt_clock, {pos}, {ts})");
    // The op's value and timestamp: the upsert's `excluded` row, or the joined `v`.
    let (value, op_ts) = if unchecked {
        (format!("excluded.{name}"), "excluded.crdt_clock")
    } else {
        ("v.column2".to_owned(), "v.column3")
    };
    // A clock of another layout (or a text value) never equals the prefix literal.
    // A compact clock (no slots: every register at the existence timestamp) gets its
    // slots; `substr` past its end is an empty blob, read as "existence".
    // `||` makes text of blobs: the new clock is cast back to a blob (same bytes).
    let set = format!(
        "{name} = {value}, \
         crdt_clock = CAST(CASE length({t}.crdt_clock) \
         WHEN {len} THEN substr({t}.crdt_clock, 1, {before}) || {op_ts} \
         || substr({t}.crdt_clock, {after}) \
         ELSE {t}.crdt_clock || X'{same_before}' || {op_ts} || X'{same_after}' \
         END AS BLOB)",
        before = pos - 1,
        after = pos + ts,
        len = at.len,
        same_before = same_hex.repeat(col),
        same_after = same_hex.repeat(def.columns.len() - col - 1),
    );
    // The layout check compares the clock with the prefix and its successor (no `substr`,
    // so no copy of the clock's start for each row): a clock starts with the prefix exactly
    // when it sorts between them.
    let layout_check = match rowclock::successor(&prefix) {
        Some(upper) => format!(
            "{t}.crdt_clock >= X'{prefix_hex}' AND {t}.crdt_clock < X'{}'",
            hex::encode_upper(upper)
        ),
        None => format!(
            "substr({t}.crdt_clock, 1, {prefix}) = X'{prefix_hex}'",
            prefix = at.prefix
        ),
    };
    let newer = format!(
        "length({t}.crdt_clock) IN ({len}, {compact}) \
         AND {layout_check} \
         AND {op_ts} > CASE {slot} WHEN X'{same_hex}' THEN {exists_ts} \
         WHEN X'' THEN {exists_ts} ELSE {slot} END",
        len = at.len,
        compact = at.slots,
        exists_ts = format!("substr({t}.crdt_clock, {exists}, {ts})"),
    );
    let values = values_list(rows, 3);
    if unchecked {
        // A row not found is inserted: `in_place` then finds it in the unborn index.
        format!(
            "INSERT INTO {t} (uuid, {name}, crdt_clock) VALUES {values} \
             ON CONFLICT (uuid) DO UPDATE SET {set} WHERE {newer}"
        )
    } else {
        // Only rows found are changed, whatever the table's constraints. A row named twice
        // in the chunk is changed once (by either op): one change short, a miss (see
        // `in_place`).
        format!(
            "UPDATE {t} SET {set} FROM (VALUES {values}) AS v \
             WHERE {t}.uuid = v.column1 AND {newer}"
        )
    }
}
