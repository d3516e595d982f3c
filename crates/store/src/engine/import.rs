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
