//! The apply engine: loads the registers an ordered list of changes touches, merges them with
//! the pure rules of [`crate::merge`], and stores what moved with multi-row statements, all
//! inside the caller's transaction. Local writes and remote batches both come through here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use crate::clock::Hlc;
use crate::derived;
use crate::error::StoreError;
use crate::merge::{OwnedOutcome, OwnedRowState, SharedRow, merge_owned};
use crate::op::{
    Change, Method, Op, OpId, OwnedRow, RejectReason, RowEvent, SnapshotRow, VersionVector,
};
use crate::oplog;
use crate::registry::{Kind, Registry, ResourceDef};
use crate::rowclock;
use crate::sql::{Query, exec, in_list, owned_chunks, query, rows_per_statement, values_list};
use crate::value::Value;

/// What the engine did.
#[derive(Debug, Default)]
pub(crate) struct EngineOutcome {
    /// Row-level changes, for subscribers.
    pub events: Vec<RowEvent>,
    /// Owned rows written.
    pub rows: usize,
    /// Ops refused by a merge rule (still logged, so no replica sees a gap).
    pub rejected: Vec<(OpId, RejectReason, String)>,
    /// Ops now complete and recorded in the log (owned batches only with their last page).
    pub logged: Vec<OpId>,
    /// The first owned row an op could not change, with its owner (a local write turns it
    /// into an error).
    pub not_owner: Option<(Uuid, Uuid)>,
    /// Ops applied in place by SQLite (see [`in_place`]).
    pub in_place: usize,
}

/// Applies validated, not yet applied changes in order. `local` marks the events. The ops
/// logged are added to `vv`, the caller's copy of the version vector, and the new
/// contiguous seqs of their authors are stored in the same statement as the log.
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    registry: &Registry,
    changes: &[Change],
    local: bool,
    vv: &mut VersionVector,
) -> Result<EngineOutcome, StoreError> {
    apply_with(conn, registry, changes, local, vv, None).await
}

/// Remote changes, as [`apply`] does, but first [`in_place`] where SQLite can apply them by
/// itself; `unborn` names the tables whose updates need not check that their rows are live.
pub(crate) async fn apply_remote(
    conn: &mut SqliteConnection,
    registry: &Registry,
    unborn: &Unborn,
    changes: &[Change],
    vv: &mut VersionVector,
) -> Result<EngineOutcome, StoreError> {
    run(conn, registry, changes, false, vv, None, Some(unborn)).await
}

/// Shared rows' registers already read in this transaction, per resource (a local batch
/// reads them once to check its entries, and the engine then uses and updates them).
pub(crate) type Preloaded = HashMap<String, SharedState>;

/// [`apply`], with the registers of some shared rows already loaded: `preloaded` must hold
/// every row the changes name of each resource it has, as stored in this transaction.
pub(crate) async fn apply_with(
    conn: &mut SqliteConnection,
    registry: &Registry,
    changes: &[Change],
    local: bool,
    vv: &mut VersionVector,
    preloaded: Option<&mut Preloaded>,
) -> Result<EngineOutcome, StoreError> {
    run(conn, registry, changes, local, vv, preloaded, None).await
}

/// [`apply_with`], and with `in_place` [`apply_remote`]'s attempt first.
async fn run(
    conn: &mut SqliteConnection,
    registry: &Registry,
    changes: &[Change],
    local: bool,
    vv: &mut VersionVector,
    mut preloaded: Option<&mut Preloaded>,
    in_place: Option<&Unborn>,
) -> Result<EngineOutcome, StoreError> {
    let mut out = EngineOutcome::default();
    let mut rejected_ops: HashMap<OpId, String> = HashMap::new();

    // Group by resource, keeping order within each resource.
    let mut by_resource: BTreeMap<&str, Vec<&Change>> = BTreeMap::new();
    for c in changes {
        by_resource
            .entry(c.op().resource.as_str())
            .or_default()
            .push(c);
    }
    for (resource, items) in by_resource {
        let def = registry.get(resource)?;
        match def.kind {
            Kind::Shared => {
                let state = preloaded.as_deref_mut().and_then(|m| m.get_mut(resource));
                apply_shared(conn, def, &items, local, &mut out, state, in_place).await?
            }
            Kind::Owned => {
                apply_owned(conn, def, &items, local, &mut out, &mut rejected_ops).await?
            }
        }
    }

    log_changes(conn, changes, &rejected_ops, &mut out, vv).await?;
    Ok(out)
}

/// Local creates of rows that are all new, inserted in place (see [`insert_new`]) and
/// logged, without reading any row. `None` when one row is already known here: the
/// transaction then holds some of the inserts, and the caller must roll it back (and take
/// the general path, which tells an existing row from a dead one).
pub(crate) async fn apply_new(
    conn: &mut SqliteConnection,
    registry: &Registry,
    changes: &[Change],
    vv: &mut VersionVector,
) -> Result<Option<EngineOutcome>, StoreError> {
    let mut by_resource: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for c in changes {
        match c {
            Change::Op(op) if op.method == Method::SharedCreate && op.uuid.is_some() => by_resource
                .entry(op.resource.as_str())
                .or_default()
                .push(op),
            _ => return Ok(None),
        }
    }
    for (resource, ops) in by_resource {
        let def = registry.get(resource)?;
        if def.kind != Kind::Shared || !insert_new(conn, def, &ops, None).await? {
            return Ok(None);
        }
    }
    let mut out = EngineOutcome {
        events: changes
            .iter()
            .map(|c| RowEvent::of(c.op(), false))
            .collect(),
        in_place: changes.len(),
        ..EngineOutcome::default()
    };
    log_changes(conn, changes, &HashMap::new(), &mut out, vv).await?;
    Ok(Some(out))
}

/// Logs every complete op of `changes`, with the rule that refused it if one did, adds
/// them to `vv` and stores their authors' new contiguous seqs with the log.
async fn log_changes(
    conn: &mut SqliteConnection,
    changes: &[Change],
    rejected_ops: &HashMap<OpId, String>,
    out: &mut EngineOutcome,
    vv: &mut VersionVector,
) -> Result<(), StoreError> {
    let mut log: Vec<(&Op, Option<String>)> = Vec::new();
    for c in changes {
        let complete = match c {
            Change::Op(_) => true,
            Change::OwnedRows { last, .. } => *last,
        };
        if complete {
            let op = c.op();
            log.push((op, rejected_ops.get(&op.id()).cloned()));
            out.logged.push(op.id());
        }
    }
    for id in &out.logged {
        vv.add(*id);
    }
    let authors: BTreeSet<Uuid> = out.logged.iter().map(|id| id.author).collect();
    let contiguous: Vec<(Uuid, u64)> = authors
        .into_iter()
        .map(|a| (a, vv.contiguous(&a)))
        .collect();
    oplog::append(conn, &mut log, &contiguous).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Shared resources
//
// A live row's registers are its data row plus its `crdt_clock` (see [`crate::rowclock`]);
// a dead row's, or one known only from updates, are in `crdt_rows` and `crdt_props` (the
// "side" tables). A row's state is in exactly one of the two places.

/// Where a shared row's registers are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Nowhere yet.
    New,
    /// The data table (a live row).
    Data,
    /// `crdt_rows` and `crdt_props` (a dead or not yet created row).
    Side,
}

/// The registers of shared rows, with where each is stored.
pub(crate) type SharedState = HashMap<Uuid, (SharedRow, Place)>;

/// A live row of `def` read as `uuid, crdt_clock, <columns>`, with its registers; `None`
/// for a row written before the row clock (its registers are still in the side tables
/// until [`move_live_registers`] has run).
pub(crate) fn live_row_from(
    def: &ResourceDef,
    r: &sqlx::sqlite::SqliteRow,
) -> Result<Option<(Uuid, SharedRow)>, StoreError> {
    let uuid = parse_uuid(r.try_get::<&str, _>(0)?)?;
    let raw: &[u8] = r.try_get(1)?;
    if raw.is_empty() {
        return Ok(None);
    }
    let clock = rowclock::decode(raw)?;
    let mut row = SharedRow {
        exists_ts: clock.exists,
        alive: true,
        props: BTreeMap::new(),
    };
    for (name, ts) in clock.props {
        // A name the registry no longer has is ignored (its column is gone).
        if let Some(i) = def.column_index(name) {
            let v: Value = r.try_get(2 + i)?;
            row.props.insert(name.to_owned(), (ts, v));
        }
    }
    Ok(Some((uuid, row)))
}

/// A side row read as `uuid, ts, alive` from `crdt_rows`: its existence register, no
/// properties yet.
pub(crate) fn side_head_from(r: &sqlx::sqlite::SqliteRow) -> Result<(Uuid, SharedRow), StoreError> {
    Ok((
        parse_uuid(r.try_get::<&str, _>(0)?)?,
        SharedRow {
            exists_ts: Hlc::from_bytes(r.try_get::<&[u8], _>(1)?)?,
            alive: r.try_get::<i64, _>(2)? != 0,
            props: BTreeMap::new(),
        },
    ))
}

/// A property register read as `uuid, property, ts, value` from `crdt_props`.
pub(crate) fn side_prop_from(
    r: &sqlx::sqlite::SqliteRow,
) -> Result<(Uuid, String, (Hlc, Value)), StoreError> {
    Ok((
        parse_uuid(r.try_get::<&str, _>(0)?)?,
        r.try_get(1)?,
        (Hlc::from_bytes(r.try_get::<&[u8], _>(2)?)?, r.try_get(3)?),
    ))
}

/// The keys of the UUIDs of `chunk` (`keys[i]` is `chunk[i]`'s) that `found` lacks.
fn not_found<'k, V>(
    chunk: &[Uuid],
    keys: &'k [String],
    found: &HashMap<Uuid, V>,
) -> Vec<&'k String> {
    chunk
        .iter()
        .zip(keys)
        .filter(|(u, _)| !found.contains_key(u))
        .map(|(_, k)| k)
        .collect()
}

/// Whether `crdt_rows` holds any row of a resource, asked once per load: a library without
/// tombstones (or a resource without) skips the per-row probes.
#[derive(Default)]
struct SideTables(Option<bool>);

impl SideTables {
    async fn holds(
        &mut self,
        conn: &mut SqliteConnection,
        resource: &str,
    ) -> Result<bool, StoreError> {
        if let Some(b) = self.0 {
            return Ok(b);
        }
        let b: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM crdt_rows WHERE resource = ?)")
                .bind(resource.to_owned())
                .fetch_one(&mut *conn)
                .await?;
        self.0 = Some(b);
        Ok(b)
    }
}

pub(crate) async fn load_shared(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    uuids: &[Uuid],
) -> Result<SharedState, StoreError> {
    let mut rows: SharedState = HashMap::with_capacity(uuids.len());
    let cols = crate::sync::column_list(def);
    let mut side = SideTables::default();
    for chunk in uuids.chunks(rows_per_statement(1)) {
        let keys: Vec<String> = chunk.iter().map(|u| u.hyphenated().to_string()).collect();
        // The first read also asks whether the side tables hold any row of the resource,
        // as one extra row with a NULL uuid (saves a round trip per load).
        let ask_side = side.0.is_none();
        let sql = format!(
            "SELECT uuid, crdt_clock{cols} FROM {name} WHERE uuid IN ({keys}){marker}",
            name = def.name,
            keys = in_list(keys.len()),
            marker = if ask_side {
                format!(
                    " UNION ALL SELECT NULL, NULL{nulls} WHERE EXISTS \
                     (SELECT 1 FROM crdt_rows WHERE resource = ?)",
                    nulls = ", NULL".repeat(def.columns.len())
                )
            } else {
                String::new()
            }
        );
        let mut q = query(sql);
        for k in &keys {
            q = q.bind(k.as_str());
        }
        if ask_side {
            q = q.bind(def.name.as_str());
            side.0 = Some(false);
        }
        for r in q.fetch_all(&mut *conn).await? {
            if r.try_get::<Option<&str>, _>(0)?.is_none() {
                side.0 = Some(true);
            } else if let Some((uuid, row)) = live_row_from(def, &r)? {
                rows.insert(uuid, (row, Place::Data));
            }
        }
        // A row's registers are in one place: only rows not live can be in the side tables.
        let missing = not_found(chunk, &keys, &rows);
        if missing.is_empty() || !side.holds(conn, &def.name).await? {
            continue;
        }
        let sql = format!(
            "SELECT uuid, ts, alive FROM crdt_rows WHERE resource = ? AND uuid IN ({})",
            in_list(missing.len())
        );
        let mut q = query(sql).bind(def.name.clone());
        for k in missing {
            q = q.bind(k.clone());
        }
        let found = q.fetch_all(&mut *conn).await?;
        if found.is_empty() {
            continue;
        }
        let mut side_keys = Vec::with_capacity(found.len());
        for r in &found {
            let (uuid, row) = side_head_from(r)?;
            rows.insert(uuid, (row, Place::Side));
            side_keys.push(uuid.hyphenated().to_string());
        }
        let sql = format!(
            "SELECT uuid, property, ts, value FROM crdt_props WHERE resource = ? AND uuid IN ({})",
            in_list(side_keys.len())
        );
        let mut q = query(sql).bind(def.name.clone());
        for k in side_keys {
            q = q.bind(k);
        }
        for r in q.fetch_all(&mut *conn).await? {
            let (uuid, prop, register) = side_prop_from(&r)?;
            if let Some((row, _)) = rows.get_mut(&uuid) {
                row.props.insert(prop, register);
            }
        }
    }
    Ok(rows)
}

/// A row's key as its table stores it (hyphenated, lower case), without the formatting
/// machinery of `to_string`.
fn key_of(u: Uuid) -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    u.hyphenated().encode_lower(&mut buf).to_owned()
}

pub(crate) fn parse_uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("bad uuid {s:?} in store: {e}")))
}

async fn apply_shared(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    items: &[&Change],
    local: bool,
    out: &mut EngineOutcome,
    preloaded: Option<&mut SharedState>,
    try_in_place: Option<&Unborn>,
) -> Result<(), StoreError> {
    let mut loaded;
    let mut items = items;
    let rest;
    let state = match preloaded {
        Some(s) => s,
        None => {
            if let Some(unborn) = try_in_place
                && let Some(left) = in_place(conn, def, items, local, out, unborn).await?
            {
                rest = left;
                items = &rest;
            }
            if items.is_empty() {
                return Ok(());
            }
            let uuids: Vec<Uuid> = items
                .iter()
                .filter_map(|c| c.op().uuid)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            loaded = load_shared(conn, def, &uuids).await?;
            &mut loaded
        }
    };
    let mut dirty: BTreeSet<Uuid> = BTreeSet::new();
    let columns = || def.columns.iter().map(|c| c.name.as_str());
    for c in items {
        let op = c.op();
        // Validation guarantees a uuid on shared ops.
        let Some(uuid) = op.uuid else { continue };
        let (row, place) = state
            .entry(uuid)
            .or_insert_with(|| (SharedRow::default(), Place::New));
        if *place == Place::New {
            // Even an op that moves nothing leaves the row's (empty) registers stored.
            dirty.insert(uuid);
        }
        let changed = match op.method {
            Method::SharedCreate => row.create(op.ts(), columns(), &op.fields),
            Method::SharedUpdate => {
                let (Some(p), Some(v)) = (&op.property, &op.value) else {
                    continue;
                };
                row.update(op.ts(), p, v)
            }
            Method::SharedDelete => row.delete(op.ts()),
            _ => continue,
        };
        if changed.any() {
            dirty.insert(uuid);
            out.events.push(RowEvent::of(op, !local));
        }
    }

    write_shared(conn, def, state, &dirty).await?;
    // The rows written are now where their state says.
    for u in &dirty {
        if let Some((row, place)) = state.get_mut(u) {
            *place = if row.alive { Place::Data } else { Place::Side };
        }
    }
    Ok(())
}

/// Rows per in-place update statement: larger than [`rows_per_statement`]'s, as this
/// statement is run once per chunk of a remote batch (measured: 2.51 µs per row at 500
/// rows, 2.41 at 2,500) and its three parameters per row stay far below SQLite's limit.
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
async fn in_place<'c>(
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

/// The shared tables with their [`unborn_index`] (made by [`ensure_unborn_indexes`] when
/// the store opens). Should one be dropped while the store runs, its in-place updates stay
/// right: the look for unborn rows then scans the table.
pub(crate) type Unborn = BTreeSet<String>;

/// Whether an unchecked in-place update inserted a row of `table` (one look at its index).
async fn any_unborn(conn: &mut SqliteConnection, table: &str) -> Result<bool, StoreError> {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE {UNBORN})");
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
            format!("CREATE INDEX IF NOT EXISTS {index} ON {t} (uuid) WHERE {UNBORN}")
        } else {
            format!("DROP INDEX IF EXISTS {index}")
        };
        exec(conn, ddl, |q| q).await?;
    }
    Ok(indexed)
}

/// Inserts the rows `creates` make, where no row of theirs is known here (live, dead, or
/// known from updates). Whether every one was inserted.
async fn insert_new(
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
    // Built once: the chunks' statements differ only in their number of rows.
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
    // The statement for a chunk of `n` rows, kept while the chunks are that long.
    let mut statement: Option<(usize, String)> = None;
    for chunk in ops.chunks(IN_PLACE_ROWS) {
        let sql = match &statement {
            Some((n, sql)) if *n == chunk.len() => sql.clone(),
            _ => {
                let values = values_list(chunk.len(), 3);
                let sql = if unchecked {
                    // A row not found is inserted: `in_place` then finds it in the unborn
                    // index.
                    format!(
                        "INSERT INTO {t} (uuid, {name}, crdt_clock) VALUES {values} \
                         ON CONFLICT (uuid) DO UPDATE SET {set} WHERE {newer}"
                    )
                } else {
                    // Only rows found are changed, whatever the table's constraints. A row
                    // named twice in the chunk is changed once (by either op): one change
                    // short, a miss (see `in_place`).
                    format!(
                        "UPDATE {t} SET {set} FROM (VALUES {values}) AS v \
                         WHERE {t}.uuid = v.column1 AND {newer}"
                    )
                };
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
        if !in_place_statement(conn, sql, bind, chunk.len(), t, keys).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Stores the registers of the `dirty` rows: live rows into the data table with their
/// clocks, the others into the side tables, and removes each from where it no longer is.
async fn write_shared(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    state: &SharedState,
    dirty: &BTreeSet<Uuid>,
) -> Result<(), StoreError> {
    let columns = || def.columns.iter().map(|c| c.name.as_str());
    let layout = rowclock::layout(columns());
    let mut live: Vec<(Uuid, Vec<u8>, Vec<Value>)> = Vec::new();
    let mut dead: Vec<(Uuid, &SharedRow)> = Vec::new();
    let mut leave_data: Vec<Uuid> = Vec::new();
    let mut leave_side: Vec<Uuid> = Vec::new();
    for u in dirty {
        let Some((row, place)) = state.get(u) else {
            continue;
        };
        if row.alive {
            let clock = rowclock::encode(
                row.exists_ts,
                &layout,
                columns().map(|c| row.props.get(c).map(|(ts, _)| *ts)),
            );
            live.push((*u, clock, row.values(columns())));
            if *place == Place::Side {
                leave_side.push(*u);
            }
        } else {
            dead.push((*u, row));
            if *place == Place::Data {
                leave_data.push(*u);
            }
        }
    }
    upsert_data(conn, def, live).await?;
    delete_data(conn, &def.name, &leave_data).await?;
    // Their registers now live in the data table.
    delete_side(conn, &def.name, &leave_side, &["crdt_rows", "crdt_props"]).await?;

    // Side tables: existence registers, then every property register of those rows.
    for chunk in dead.chunks(rows_per_statement(4)) {
        let sql = format!(
            "INSERT INTO crdt_rows (resource, uuid, ts, alive, owner) VALUES {} \
             ON CONFLICT (resource, uuid) DO UPDATE SET ts = excluded.ts, alive = excluded.alive",
            values_list_with_null(chunk.len(), 4)
        );
        let name = def.name.clone();
        let rows: Vec<(String, Vec<u8>)> = chunk
            .iter()
            .map(|(u, r)| (u.hyphenated().to_string(), r.exists_ts.to_bytes().to_vec()))
            .collect();
        exec(conn, sql, |mut q| {
            for (u, ts) in rows {
                q = q.bind(name.clone()).bind(u).bind(ts).bind(0i64);
            }
            q
        })
        .await?;
    }
    let props: Vec<(String, String, Vec<u8>, Value)> = dead
        .iter()
        .flat_map(|(u, r)| {
            r.props.iter().map(move |(p, (ts, v))| {
                (
                    u.hyphenated().to_string(),
                    p.clone(),
                    ts.to_bytes().to_vec(),
                    v.clone(),
                )
            })
        })
        .collect();
    for chunk in owned_chunks(props, rows_per_statement(5)) {
        let sql = format!(
            "INSERT INTO crdt_props (resource, uuid, property, ts, value) VALUES {} \
             ON CONFLICT (resource, uuid, property) DO UPDATE SET ts = excluded.ts, value = excluded.value",
            values_list(chunk.len(), 5)
        );
        let name = def.name.clone();
        exec(conn, sql, |mut q| {
            for (u, p, ts, v) in chunk {
                q = q.bind(name.clone()).bind(u).bind(p).bind(ts).bind(v);
            }
            q
        })
        .await?;
    }
    Ok(())
}

/// Removes rows of `resource` from side `tables` (`crdt_rows`, `crdt_props`).
async fn delete_side(
    conn: &mut SqliteConnection,
    resource: &str,
    uuids: &[Uuid],
    tables: &[&str],
) -> Result<(), StoreError> {
    for chunk in uuids.chunks(rows_per_statement(1)) {
        for table in tables {
            let sql = format!(
                "DELETE FROM {table} WHERE resource = ? AND uuid IN ({})",
                in_list(chunk.len())
            );
            let name = resource.to_owned();
            let keys: Vec<String> = chunk.iter().map(|u| u.hyphenated().to_string()).collect();
            exec(conn, sql, |mut q| {
                q = q.bind(name);
                for k in keys {
                    q = q.bind(k);
                }
                q
            })
            .await?;
        }
    }
    Ok(())
}

/// Moves the registers of live shared rows written by a version before the row clock
/// (kept in the side tables, with an empty `crdt_clock`) into their data rows. Runs once,
/// when the store opens; returns how many rows moved.
pub(crate) async fn move_live_registers(
    conn: &mut SqliteConnection,
    registry: &Registry,
) -> Result<u64, StoreError> {
    let mut moved = 0u64;
    for def in registry.iter().filter(|d| d.kind == Kind::Shared) {
        loop {
            let keys: Vec<String> = sqlx::query_scalar(
                "SELECT uuid FROM crdt_rows WHERE resource = ? AND alive = 1 LIMIT 500",
            )
            .bind(def.name.clone())
            .fetch_all(&mut *conn)
            .await?;
            if keys.is_empty() {
                break;
            }
            let uuids = keys
                .iter()
                .map(|k| parse_uuid(k))
                .collect::<Result<Vec<_>, _>>()?;
            let state = load_shared(conn, def, &uuids).await?;
            let dirty: BTreeSet<Uuid> = uuids.iter().copied().collect();
            write_shared(conn, def, &state, &dirty).await?;
            moved += uuids.len() as u64;
        }
    }
    Ok(moved)
}

fn values_list_with_null(rows: usize, cols: usize) -> String {
    let one = format!("({},NULL)", vec!["?"; cols].join(","));
    vec![one; rows].join(",")
}

async fn upsert_data(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    rows: Vec<(Uuid, Vec<u8>, Vec<Value>)>,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ncols = def.columns.len() + 2;
    let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
    let set = std::iter::once("crdt_clock")
        .chain(names.iter().copied())
        .map(|n| format!("{n} = excluded.{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    for chunk in owned_chunks(rows, rows_per_statement(ncols)) {
        let sql = format!(
            "INSERT INTO {} (uuid, crdt_clock, {}) VALUES {} ON CONFLICT (uuid) DO UPDATE SET {}",
            def.name,
            names.join(", "),
            values_list(chunk.len(), ncols),
            set
        );
        exec(conn, sql, |mut q| {
            for (u, clock, vals) in chunk {
                q = q.bind(u.hyphenated().to_string()).bind(clock);
                for v in vals {
                    q = q.bind(v);
                }
            }
            q
        })
        .await?;
    }
    Ok(())
}

async fn delete_data(
    conn: &mut SqliteConnection,
    table: &str,
    uuids: &[Uuid],
) -> Result<(), StoreError> {
    for chunk in uuids.chunks(rows_per_statement(1)) {
        let sql = format!(
            "DELETE FROM {table} WHERE uuid IN ({})",
            in_list(chunk.len())
        );
        let keys: Vec<String> = chunk.iter().map(|u| u.hyphenated().to_string()).collect();
        exec(conn, sql, |mut q| {
            for k in keys {
                q = q.bind(k);
            }
            q
        })
        .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Owned resources

/// What is stored for an owned row: its state and, for derived data, its old `cas_id`.
struct OwnedCurrent {
    state: OwnedRowState,
    cas_id: Option<String>,
}

async fn load_owned(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    uuids: &[Uuid],
) -> Result<HashMap<Uuid, OwnedCurrent>, StoreError> {
    let cas = derived::tracks(def);
    let mut out = HashMap::new();
    let mut side = SideTables::default();
    for chunk in uuids.chunks(rows_per_statement(1)) {
        let keys: Vec<String> = chunk.iter().map(|u| u.hyphenated().to_string()).collect();
        let sql = format!(
            "SELECT uuid, owner, crdt_ts{} FROM {} WHERE uuid IN ({})",
            if cas { ", cas_id" } else { "" },
            def.name,
            in_list(keys.len())
        );
        let mut q = query(sql);
        for k in &keys {
            q = q.bind(k.clone());
        }
        for r in q.fetch_all(&mut *conn).await? {
            let uuid = parse_uuid(&r.try_get::<String, _>(0)?)?;
            let owner = parse_uuid(&r.try_get::<String, _>(1)?)?;
            let ts = Hlc::from_bytes(&r.try_get::<Vec<u8>, _>(2)?)?;
            let cas_id = if cas {
                r.try_get::<Option<String>, _>(3)?
            } else {
                None
            };
            out.insert(
                uuid,
                OwnedCurrent {
                    state: OwnedRowState {
                        owner,
                        ts,
                        alive: true,
                    },
                    cas_id,
                },
            );
        }
        // A live owned row has no tombstone: only look for the others'.
        let missing = not_found(chunk, &keys, &out);
        if missing.is_empty() || !side.holds(conn, &def.name).await? {
            continue;
        }
        let sql = format!(
            "SELECT uuid, owner, ts FROM crdt_rows WHERE resource = ? AND alive = 0 AND uuid IN ({})",
            in_list(missing.len())
        );
        let mut q = query(sql).bind(def.name.clone());
        for k in missing {
            q = q.bind(k.clone());
        }
        for r in q.fetch_all(&mut *conn).await? {
            let uuid = parse_uuid(&r.try_get::<String, _>(0)?)?;
            let owner = r
                .try_get::<Option<String>, _>(1)?
                .map(|s| parse_uuid(&s))
                .transpose()?
                .unwrap_or_default();
            let ts = Hlc::from_bytes(&r.try_get::<Vec<u8>, _>(2)?)?;
            out.entry(uuid).or_insert(OwnedCurrent {
                state: OwnedRowState {
                    owner,
                    ts,
                    alive: false,
                },
                cas_id: None,
            });
        }
    }
    Ok(out)
}

/// The final decision for one owned row within a batch.
enum OwnedFinal {
    Row {
        owner: Uuid,
        ts: Hlc,
        seq: u64,
        values: Vec<Value>,
    },
    Tombstone {
        owner: Uuid,
        ts: Hlc,
    },
}

async fn apply_owned(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    items: &[&Change],
    local: bool,
    out: &mut EngineOutcome,
    rejected_ops: &mut HashMap<OpId, String>,
) -> Result<(), StoreError> {
    let mut uuids: BTreeSet<Uuid> = BTreeSet::new();
    for c in items {
        match c {
            Change::Op(op) => uuids.extend(op.uuid),
            Change::OwnedRows { rows, .. } => uuids.extend(rows.iter().map(|r| r.uuid)),
        }
    }
    let uuids: Vec<Uuid> = uuids.into_iter().collect();
    let current = load_owned(conn, def, &uuids).await?;
    let cas_idx = if derived::tracks(def) {
        def.column_index("cas_id")
    } else {
        None
    };
    let mut finals: BTreeMap<Uuid, OwnedFinal> = BTreeMap::new();

    let state_of = |u: &Uuid, finals: &BTreeMap<Uuid, OwnedFinal>| -> Option<OwnedRowState> {
        match finals.get(u) {
            Some(OwnedFinal::Row { owner, ts, .. }) => Some(OwnedRowState {
                owner: *owner,
                ts: *ts,
                alive: true,
            }),
            Some(OwnedFinal::Tombstone { owner, ts }) => Some(OwnedRowState {
                owner: *owner,
                ts: *ts,
                alive: false,
            }),
            None => current.get(u).map(|c| c.state),
        }
    };

    for c in items {
        let op = c.op();
        match c {
            Change::OwnedRows { header, rows, last } => {
                let mut written = 0usize;
                for OwnedRow { uuid, values } in rows {
                    match merge_owned(state_of(uuid, &finals), header.author, header.ts()) {
                        OwnedOutcome::Apply => {
                            finals.insert(
                                *uuid,
                                OwnedFinal::Row {
                                    owner: header.author,
                                    ts: header.ts(),
                                    seq: header.seq,
                                    values: values.clone(),
                                },
                            );
                            written += 1;
                        }
                        OwnedOutcome::Ignore => {}
                        OwnedOutcome::NotOwner(owner) => {
                            let why = format!("row {uuid} of {} is owned by {owner}", def.name);
                            out.not_owner.get_or_insert((*uuid, owner));
                            out.rejected
                                .push((header.id(), RejectReason::NotOwner, why.clone()));
                            rejected_ops.insert(header.id(), why);
                        }
                    }
                }
                out.rows += written;
                if *last || written > 0 {
                    out.events.push(RowEvent {
                        resource: def.name.clone(),
                        uuid: None,
                        method: Method::OwnedBatchCreate,
                        author: header.author,
                        remote: !local,
                        count: Some(written as u64),
                    });
                }
            }
            Change::Op(op) if op.method == Method::OwnedDelete => {
                let Some(uuid) = op.uuid else { continue };
                match merge_owned(state_of(&uuid, &finals), op.author, op.ts()) {
                    OwnedOutcome::Apply => {
                        finals.insert(
                            uuid,
                            OwnedFinal::Tombstone {
                                owner: op.author,
                                ts: op.ts(),
                            },
                        );
                        out.events.push(RowEvent::of(op, !local));
                    }
                    OwnedOutcome::Ignore => {}
                    OwnedOutcome::NotOwner(owner) => {
                        let why = format!("row {uuid} of {} is owned by {owner}", def.name);
                        out.not_owner.get_or_insert((uuid, owner));
                        out.rejected
                            .push((op.id(), RejectReason::NotOwner, why.clone()));
                        rejected_ops.insert(op.id(), why);
                    }
                }
            }
            Change::Op(_) => {
                // Validation keeps other methods away from owned resources.
                let _ = op;
            }
        }
    }

    // The derived `files`: a row new here only adds to its file's count and size; a row
    // replaced or deleted has its old and new files recounted from file_paths.
    let mut recount: BTreeSet<String> = BTreeSet::new();
    let mut added: BTreeMap<String, (i64, Option<i64>)> = BTreeMap::new();
    if let Some(ci) = cas_idx {
        let size_idx = def.column_index("size_bytes");
        for (u, f) in &finals {
            let old = current.get(u).filter(|c| c.state.alive);
            if let Some(OwnedCurrent {
                cas_id: Some(cas), ..
            }) = old
            {
                recount.insert(cas.clone());
            }
            let OwnedFinal::Row { values, .. } = f else {
                continue;
            };
            let Some(Value::Text(cas)) = values.get(ci) else {
                continue;
            };
            if old.is_some() {
                recount.insert(cas.clone());
                continue;
            }
            let size = match size_idx.and_then(|i| values.get(i)) {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            };
            let e = added.entry(cas.clone()).or_insert((0, None));
            e.0 += 1;
            e.1 = match (e.1, size) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        added.retain(|cas, _| !recount.contains(cas));
    }

    let mut upserts: Vec<(Uuid, Uuid, Hlc, u64, Vec<Value>)> = Vec::new();
    let mut tombstones: Vec<(Uuid, Uuid, Hlc)> = Vec::new();
    let mut drop_rows: Vec<Uuid> = Vec::new();
    let mut drop_tombstones: Vec<Uuid> = Vec::new();
    for (u, f) in finals {
        let was = current.get(&u).map(|c| c.state.alive);
        match f {
            OwnedFinal::Row {
                owner,
                ts,
                seq,
                values,
            } => {
                if was == Some(false) {
                    drop_tombstones.push(u);
                }
                upserts.push((u, owner, ts, seq, values));
            }
            OwnedFinal::Tombstone { owner, ts } => {
                if was == Some(true) {
                    drop_rows.push(u);
                }
                tombstones.push((u, owner, ts));
            }
        }
    }

    let ncols = def.columns.len() + 4;
    let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
    let set = ["owner", "crdt_ts", "crdt_seq"]
        .iter()
        .chain(names.iter())
        .map(|n| format!("{n} = excluded.{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    for chunk in owned_chunks(upserts, rows_per_statement(ncols)) {
        let sql = format!(
            "INSERT INTO {} (uuid, owner, crdt_ts, crdt_seq, {}) VALUES {} ON CONFLICT (uuid) DO UPDATE SET {}",
            def.name,
            names.join(", "),
            values_list(chunk.len(), ncols),
            set
        );
        exec(conn, sql, |mut q| {
            for (u, owner, ts, seq, values) in chunk {
                q = q
                    .bind(u.hyphenated().to_string())
                    .bind(owner.hyphenated().to_string())
                    .bind(ts.to_bytes().to_vec())
                    .bind(seq as i64);
                for v in values {
                    q = q.bind(v);
                }
            }
            q
        })
        .await?;
    }
    delete_data(conn, &def.name, &drop_rows).await?;
    for chunk in owned_chunks(tombstones, rows_per_statement(5)) {
        let sql = format!(
            "INSERT INTO crdt_rows (resource, uuid, ts, alive, owner) VALUES {} \
             ON CONFLICT (resource, uuid) DO UPDATE SET ts = excluded.ts, alive = 0, owner = excluded.owner",
            values_list(chunk.len(), 5)
        );
        let name = def.name.clone();
        exec(conn, sql, |mut q| {
            for (u, owner, ts) in chunk {
                q = q
                    .bind(name.clone())
                    .bind(u.hyphenated().to_string())
                    .bind(ts.to_bytes().to_vec())
                    .bind(0i64)
                    .bind(owner.hyphenated().to_string());
            }
            q
        })
        .await?;
    }
    delete_side(conn, &def.name, &drop_tombstones, &["crdt_rows"]).await?;
    if !recount.is_empty() {
        derived::rebuild_files(conn, &recount.into_iter().collect::<Vec<_>>()).await?;
    }
    derived::add_files(conn, added.into_iter().collect()).await?;
    Ok(())
}

/// Merges snapshot rows into the store: every register is merged as if its op arrived.
pub(crate) async fn import_rows(
    conn: &mut SqliteConnection,
    registry: &Registry,
    rows: Vec<SnapshotRow>,
) -> Result<(), StoreError> {
    let mut shared: BTreeMap<String, Vec<SnapshotRow>> = BTreeMap::new();
    let mut owned: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for r in rows {
        match r {
            SnapshotRow::Shared { ref resource, .. } => {
                shared.entry(resource.clone()).or_default().push(r)
            }
            SnapshotRow::Owned {
                resource,
                uuid,
                ts,
                seq,
                values,
            } => {
                let header = synthetic(ts, seq, Method::OwnedBatchCreate, &resource, None);
                owned.entry(resource).or_default().push(Change::OwnedRows {
                    header,
                    rows: vec![OwnedRow { uuid, values }],
                    last: false,
                });
            }
            SnapshotRow::OwnedTombstone { resource, uuid, ts } => {
                let op = synthetic(ts, 1, Method::OwnedDelete, &resource, Some(uuid));
                owned.entry(resource).or_default().push(Change::Op(op));
            }
        }
    }
    for (resource, rows) in shared {
        let def = registry.get(&resource)?;
        let uuids: Vec<Uuid> = rows
            .iter()
            .filter_map(|r| match r {
                SnapshotRow::Shared { uuid, .. } => Some(*uuid),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut state = load_shared(conn, def, &uuids).await?;
        let mut dirty = BTreeSet::new();
        for r in rows {
            let SnapshotRow::Shared {
                uuid,
                exists_ts,
                alive,
                props,
                ..
            } = r
            else {
                continue;
            };
            let (row, place) = state
                .entry(uuid)
                .or_insert_with(|| (SharedRow::default(), Place::New));
            if *place == Place::New {
                dirty.insert(uuid);
            }
            if exists_ts > row.exists_ts {
                row.exists_ts = exists_ts;
                row.alive = alive;
                dirty.insert(uuid);
            }
            for (name, ts, v) in props {
                if row.update(ts, &name, &v).props {
                    dirty.insert(uuid);
                }
            }
        }
        write_shared(conn, def, &state, &dirty).await?;
    }
    for (resource, changes) in owned {
        let def = registry.get(&resource)?;
        let refs: Vec<&Change> = changes.iter().collect();
        let mut out = EngineOutcome::default();
        let mut rejected = HashMap::new();
        apply_owned(conn, def, &refs, false, &mut out, &mut rejected).await?;
    }
    Ok(())
}

fn synthetic(ts: Hlc, seq: u64, method: Method, resource: &str, uuid: Option<Uuid>) -> Op {
    Op {
        author: ts.author,
        seq,
        time: ts.time,
        method,
        resource: resource.to_owned(),
        uuid,
        property: None,
        value: None,
        fields: BTreeMap::new(),
        count: None,
    }
}
