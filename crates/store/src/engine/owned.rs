//! Owned rows: written only by their owner, in batches, last writer wins per row.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use super::EngineOutcome;
use super::shared::{SideTables, delete_data, delete_side, not_found};
use crate::clock::Hlc;
use crate::error::StoreError;
use crate::merge::{OwnedOutcome, OwnedRowState, merge_owned};
use crate::op::{Change, Method, OpId, OwnedRow, RejectReason, Rejection, RowEvent};
use crate::registry::ResourceDef;
use crate::sql::derived;
use crate::sql::rows::parse_uuid;
use crate::sql::{exec, in_list, owned_chunks, query, rows_per_statement, values_list};
use crate::value::Value;

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

/// Merges `items`, changes of owned rows of `def` in order, and stores what moved.
pub(super) async fn apply(
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
                            out.rejected.push((
                                header.id(),
                                Rejection::new(RejectReason::NotOwner, why.clone()),
                            ));
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
                            .push((op.id(), Rejection::new(RejectReason::NotOwner, why.clone())));
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
