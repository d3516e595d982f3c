//! Shared rows: registers loaded, merged by the rules of [`crate::merge`], stored back.
//!
//! A live row's registers are its data row plus its `crdt_clock` (see [`crate::rowclock`]);
//! a dead row's, or one known only from updates, are in `crdt_rows` and `crdt_props` (the
//! "side" tables). A row's state is in exactly one of the two places.

use std::collections::{BTreeSet, HashMap};

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use super::EngineOutcome;
use super::in_place::{Unborn, in_place};
use crate::error::StoreError;
use crate::merge::SharedRow;
use crate::op::{Change, Method, RowEvent};
use crate::registry::{Kind, Registry, ResourceDef};
use crate::rowclock;
use crate::sql::rows::{column_list, live_row_from, parse_uuid, side_head_from, side_prop_from};
use crate::sql::{exec, in_list, owned_chunks, query, rows_per_statement, values_list};
use crate::value::Value;

/// Shared rows' registers already read in this transaction, per resource.
pub(crate) type Preloaded = HashMap<String, SharedState>;

/// How [`apply`] gets the registers of the rows it merges.
pub(super) enum Loading<'a> {
    /// Already read in this transaction (`None`: read them now).
    Preloaded(Option<&'a mut SharedState>),
    /// Not read: first let SQLite apply what it can [`in_place`], then read the rest.
    InPlaceFirst(&'a Unborn),
}

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

/// The keys of the UUIDs of `chunk` (`keys[i]` is `chunk[i]`'s) that `found` lacks.
pub(super) fn not_found<'k, V>(
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
pub(super) struct SideTables(Option<bool>);

impl SideTables {
    pub(super) async fn holds(
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
    let cols = column_list(def);
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

/// Merges `items`, changes of shared rows of `def` in order, and stores what moved.
pub(super) async fn apply(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    items: &[&Change],
    local: bool,
    out: &mut EngineOutcome,
    loading: Loading<'_>,
) -> Result<(), StoreError> {
    let mut loaded;
    let mut items = items;
    let rest;
    let (preloaded, try_in_place) = match loading {
        Loading::Preloaded(p) => (p, None),
        Loading::InPlaceFirst(unborn) => (None, Some(unborn)),
    };
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

/// Stores the registers of the `dirty` rows: live rows into the data table with their
/// clocks, the others into the side tables, and removes each from where it no longer is.
pub(super) async fn write_shared(
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
pub(super) async fn delete_side(
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

pub(super) async fn delete_data(
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
