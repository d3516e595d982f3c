//! Snapshot rows, merged register by register as if their ops arrived (an owned row as its
//! owner's latest op and its claim, under the same rule as the ops).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use super::EngineOutcome;
use super::shared::{Place, load_shared, write_shared};
use crate::clock::Hlc;
use crate::error::StoreError;
use crate::merge::SharedRow;
use crate::op::{Change, Method, Op, OwnedRow, SnapshotRow};
use crate::registry::Registry;
use crate::value::Value;

/// Merges snapshot rows into the store: every register is merged as if its op arrived.
/// `devices` maps authors to their devices, for owned rows.
pub(crate) async fn import_rows(
    conn: &mut SqliteConnection,
    registry: &Registry,
    rows: Vec<SnapshotRow>,
    devices: &std::collections::HashMap<Uuid, Uuid>,
) -> Result<(), StoreError> {
    let rows = insert_new_owned(conn, registry, rows, devices).await?;
    let mut shared: BTreeMap<String, Vec<SnapshotRow>> = BTreeMap::new();
    let mut owned: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for r in rows {
        match r {
            SnapshotRow::Shared { ref resource, .. } => {
                shared.entry(resource.clone()).or_default().push(r)
            }
            // An owned row or tombstone is its owner's latest op; its claim, when it is not
            // that op, is merged as the owner's create at the claim after it (older, so it
            // never becomes the row; at the same time as a tombstone it keeps the delete).
            SnapshotRow::Owned {
                resource,
                uuid,
                ts,
                seq,
                values,
                claim,
            } => {
                let changes = owned.entry(resource.clone()).or_default();
                let marker = claim.filter(|c| *c != ts).map(|c| (c, values.clone()));
                let header = synthetic(ts, seq, Method::OwnedBatchCreate, &resource, None);
                changes.push(Change::OwnedRows {
                    header,
                    rows: vec![OwnedRow { uuid, values }],
                    last: false,
                    first_group: 0,
                });
                if let Some((c, values)) = marker {
                    changes.push(claim_marker(c, seq, &resource, uuid, values));
                }
            }
            SnapshotRow::OwnedTombstone {
                resource,
                uuid,
                ts,
                claim,
            } => {
                let nulls = vec![Value::Null; registry.get(&resource)?.columns.len()];
                let op = synthetic(ts, 1, Method::OwnedDelete, &resource, Some(uuid));
                let changes = owned.entry(resource.clone()).or_default();
                changes.push(Change::Op(op));
                let c = claim.unwrap_or(ts);
                changes.push(claim_marker(c, 1, &resource, uuid, nulls));
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
        let owners = super::owned::Owners::with(devices);
        super::owned::apply(
            conn,
            def,
            &refs,
            &owners,
            super::owned::Source::Snapshot,
            &mut out,
            &mut rejected,
        )
        .await?;
    }
    Ok(())
}

/// The owned rows among `rows` that are new here, inserted as they are, without the
/// general merge: a row no replica here has seen is its owner's latest op and its claim
/// as the snapshot carries them, whatever the rules (a snapshot into an empty table, a
/// new device's join, is all such rows). Their leaves of the digest move by their hashes
/// in the same transaction (the triggers' marks held meanwhile), and `files` counts them,
/// as a fold and the general path would. Returns the rows left for the general merge:
/// shared rows, tombstones, rows whose claim is another op, values SQLite would store as
/// another type, and rows this replica already holds in any form.
async fn insert_new_owned(
    conn: &mut SqliteConnection,
    registry: &Registry,
    rows: Vec<SnapshotRow>,
    devices: &HashMap<Uuid, Uuid>,
) -> Result<Vec<SnapshotRow>, StoreError> {
    let owners = super::owned::Owners::with(devices);
    let mut rest = Vec::new();
    let mut fresh: BTreeMap<String, Vec<SnapshotRow>> = BTreeMap::new();
    for r in rows {
        let plain = match &r {
            SnapshotRow::Owned {
                resource,
                ts,
                values,
                claim,
                ..
            } => {
                claim.is_none_or(|c| c == *ts)
                    && registry.get(resource).is_ok_and(|def| {
                        def.columns.len() == values.len()
                            && def
                                .columns
                                .iter()
                                .zip(values)
                                .all(|(c, v)| v.check_type(c.ty))
                    })
            }
            _ => false,
        };
        match (&r, plain) {
            (SnapshotRow::Owned { resource, .. }, true) => {
                fresh.entry(resource.clone()).or_default().push(r)
            }
            _ => rest.push(r),
        }
    }
    for (resource, rows) in fresh {
        let def = registry.get(&resource)?;
        let files = if crate::sql::derived::tracks(def) {
            Some(crate::sql::derived::Files::load(conn).await?)
        } else {
            None
        };
        let mut new = Vec::with_capacity(rows.len());
        for r in &rows {
            if let SnapshotRow::Owned {
                uuid,
                ts,
                seq,
                values,
                ..
            } = r
            {
                new.push((
                    crate::sql::rows::key_of(*uuid),
                    crate::sql::rows::key_of(owners.owner_of(ts.author)),
                    *ts,
                    *seq,
                    values.clone(),
                ));
            }
        }
        crate::sql::digest::hold_marks(conn, &resource).await?;
        let went_in = crate::sql::rows::insert_new_owned(conn, def, new).await?;
        crate::sql::digest::release_marks(conn, &resource).await?;
        let mut hashes = Vec::with_capacity(rows.len());
        let mut added: BTreeMap<String, (i64, Option<i64>)> = BTreeMap::new();
        let (cas_at, size_at) = (def.column_index("cas_id"), def.column_index("size_bytes"));
        for (r, went_in) in rows.into_iter().zip(went_in) {
            let SnapshotRow::Owned { uuid, values, .. } = &r else {
                continue;
            };
            let key = crate::sql::rows::key_of(*uuid);
            if !went_in {
                rest.push(r);
                continue;
            }
            if let (Some(files), Some(Value::Text(cas))) =
                (&files, cas_at.and_then(|i| values.get(i)))
                && files.keeps(cas)
            {
                let size = match size_at.and_then(|i| values.get(i)) {
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
            hashes.push((key, crate::digest::row_hash(&r), true));
        }
        crate::sql::digest::add_rows(conn, &resource, &hashes).await?;
        crate::sql::derived::add_files(conn, added.into_iter().collect()).await?;
    }
    Ok(rest)
}

/// The owner's create at its claim `c`, as a snapshot row implies it.
fn claim_marker(c: Hlc, seq: u64, resource: &str, uuid: Uuid, values: Vec<Value>) -> Change {
    Change::OwnedRows {
        header: synthetic(c, seq, Method::OwnedBatchCreate, resource, None),
        rows: vec![OwnedRow { uuid, values }],
        last: false,
        first_group: 0,
    }
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
        groups: Vec::new(),
    }
}

/// Who wins a tie in a repair: two registers of the same timestamp (so of the same op)
/// that hold different values, which the merge rules never produce (one op writes one
/// value), so one of them was changed behind murmur's back. The value held by the device
/// that wrote the op is taken as the op's: the remote value wins only when the rows come
/// from that device.
pub(crate) struct Ties<'a> {
    /// The device the repair rows come from.
    pub peer: Uuid,
    /// Authors' devices known here.
    pub devices: &'a HashMap<Uuid, Uuid>,
}

impl Ties<'_> {
    /// Whether the register written by `author` is the peer's own (its device wrote it).
    pub(crate) fn peers_own(&self, author: Uuid) -> bool {
        self.devices.get(&author) == Some(&self.peer)
    }

    /// Whether the remote value wins a tie of a register written by `author`.
    fn remote_wins(&self, author: Uuid, _local: &[u8; 32], _remote: &[u8; 32]) -> bool {
        self.peers_own(author)
    }
}

fn value_hash(values: &[&Value]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for v in values {
        v.hash_into(&mut h);
    }
    *h.finalize().as_bytes()
}

/// Merges rows a peer sent to repair a divergence: first the ties ([`Ties`]) the
/// remote side wins are taken (a register of the same timestamp with another value), then
/// every row is merged as a snapshot row ([`import_rows`]), so a newer register wins as
/// always and an older one changes nothing.
pub(crate) async fn repair_rows(
    conn: &mut SqliteConnection,
    registry: &Registry,
    rows: Vec<SnapshotRow>,
    ties: &Ties<'_>,
) -> Result<(), StoreError> {
    let mut shared: BTreeMap<String, Vec<&SnapshotRow>> = BTreeMap::new();
    for r in &rows {
        match r {
            SnapshotRow::Shared { resource, .. } => {
                shared.entry(resource.clone()).or_default().push(r)
            }
            SnapshotRow::Owned {
                resource,
                uuid,
                ts,
                seq,
                values,
                ..
            } => {
                let def = registry.get(resource)?;
                repair_owned_tie(conn, def, *uuid, *ts, *seq, values, ties).await?;
            }
            SnapshotRow::OwnedTombstone { .. } => {}
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
            let Some((row, place)) = state.get_mut(uuid) else {
                continue;
            };
            if *place == Place::New {
                continue;
            }
            if *exists_ts == row.exists_ts
                && *alive != row.alive
                && ties.remote_wins(
                    exists_ts.author,
                    &[row.alive as u8; 32],
                    &[*alive as u8; 32],
                )
            {
                row.alive = *alive;
                dirty.insert(*uuid);
            }
            for (name, ts, v) in props {
                if let Some((cur_ts, cur)) = row.props.get_mut(name)
                    && *cur_ts == *ts
                    && cur != v
                    && ties.remote_wins(ts.author, &value_hash(&[cur]), &value_hash(&[v]))
                {
                    *cur = v.clone();
                    dirty.insert(*uuid);
                }
            }
        }
        write_shared(conn, def, &state, &dirty).await?;
    }
    import_rows(conn, registry, rows, ties.devices).await
}

/// An owned row of the same op (timestamp and seq) here and in the repair, with other
/// values: the remote values replace these when the remote side wins the tie.
async fn repair_owned_tie(
    conn: &mut SqliteConnection,
    def: &crate::registry::ResourceDef,
    uuid: Uuid,
    ts: Hlc,
    seq: u64,
    values: &[Value],
    ties: &Ties<'_>,
) -> Result<(), StoreError> {
    let key = crate::sql::rows::key_of(uuid);
    let hi = format!("{key}0");
    let here = crate::sql::digest::rows_between(conn, def, &key, &hi, 1).await?;
    let Some(SnapshotRow::Owned {
        ts: local_ts,
        seq: local_seq,
        values: local,
        ..
    }) = here.into_iter().next()
    else {
        return Ok(());
    };
    if local_ts != ts || local_seq != seq || local == values || values.len() != def.columns.len() {
        return Ok(());
    }
    let l: Vec<&Value> = local.iter().collect();
    let r: Vec<&Value> = values.iter().collect();
    if !ties.remote_wins(ts.author, &value_hash(&l), &value_hash(&r)) {
        return Ok(());
    }
    let sets: Vec<String> = def
        .columns
        .iter()
        .map(|c| format!("{} = ?", c.name))
        .collect();
    let mut q = crate::sql::query(format!(
        "UPDATE {} SET {} WHERE uuid = ?",
        def.name,
        sets.join(", ")
    ));
    for v in values {
        q = q.bind(v.clone());
    }
    q.bind(key).execute(&mut *conn).await?;
    if crate::sql::derived::tracks(def)
        && let Some(i) = def.column_index("cas_id")
    {
        let cas: Vec<String> = [&local[i], &values[i]]
            .iter()
            .filter_map(|v| v.as_text().map(str::to_owned))
            .collect();
        let cas = crate::sql::derived::Files::load(conn).await?.kept(cas);
        crate::sql::derived::rebuild_files(conn, &cas).await?;
    }
    Ok(())
}
