//! Repairing a divergence: rows a peer sent for the key ranges where the two digests
//! differ ([`crate::digest`]), merged through the [`Writer`] by the snapshot import's
//! rules, plus the one case those rules leave open: a register of the same op holding
//! another value here than there (one side was changed behind murmur's back), settled as
//! [`engine::Ties`] says.
//!
//! What a repaired row can change: only registers of the sending device's own writes
//! (their author is one of its incarnations, proven here). The others are dropped before
//! the merge (a row whose existence register is another device's is dropped whole, an
//! owned row of another owner too), so a member cannot change another device's writes by
//! a repair, where a snapshot would let it. What is left merges as a snapshot row's
//! registers (a register only moves to a newer one) or, on a tie of one op's two values,
//! takes the sender's value (it wrote that op). It cannot move the version vector, log an
//! op, or give an owned row to another device; a register too far ahead is set aside as
//! in a snapshot. A row whose registers are of several devices heals as the node repairs
//! with each of them.

use uuid::Uuid;

use crate::clock::Clock;
use crate::commit::{Commit, Origin};
use crate::digest::row_hash;
use crate::engine;
use crate::error::StoreError;
use crate::op::SnapshotRow;
use crate::registry::Registry;
use crate::sql::digest::rows_between;
use crate::sql::rows::key_of;
use crate::validate::validate_snapshot_row;
use crate::writer::Writer;

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Rows received.
    pub received: usize,
    /// Rows that changed here, by resource and UUID.
    pub repaired: Vec<(String, Uuid)>,
    /// Rows refused (malformed, a register too far ahead, or another device's).
    pub refused: usize,
}

/// Merges `rows` sent by the device `peer` (see the module docs).
pub(crate) async fn repair(
    writer: &Writer,
    registry: &Registry,
    clock: &Clock,
    rows: Vec<SnapshotRow>,
    peer: Uuid,
) -> Result<RepairReport, StoreError> {
    let mut report = RepairReport {
        received: rows.len(),
        ..RepairReport::default()
    };
    let mut accepted = Vec::with_capacity(rows.len());
    for r in rows {
        if validate_snapshot_row(registry, &r).is_err()
            || r.timestamps().iter().any(|ts| clock.check(*ts).is_err())
        {
            report.refused += 1;
            continue;
        }
        accepted.push(r);
    }
    if let Some(latest) = accepted.iter().flat_map(|r| r.timestamps()).max() {
        clock.observe(latest)?;
    }
    if accepted.is_empty() {
        return Ok(report);
    }
    let mut tx = writer.begin().await?;
    let devices = tx.devices();
    let ties = engine::Ties {
        peer,
        devices: &devices,
    };
    let sent = accepted.len();
    let accepted: Vec<SnapshotRow> = accepted
        .into_iter()
        .filter_map(|r| peers_own(r, &ties))
        .collect();
    report.refused += sent - accepted.len();
    let keys: Vec<(String, Uuid)> = accepted.iter().map(row_key).collect();
    let before = hashes(tx.conn(), registry, &keys).await?;
    engine::repair_rows(tx.conn(), registry, accepted, &ties).await?;
    let after = hashes(tx.conn(), registry, &keys).await?;
    report.repaired = keys
        .into_iter()
        .zip(before.iter().zip(after.iter()))
        .filter(|(_, (b, a))| b != a)
        .map(|(k, _)| k)
        .collect();
    report.repaired.dedup();
    let n = report.repaired.len();
    tx.commit(|| Commit {
        imported: n,
        ..Commit::new(Origin::Snapshot)
    })
    .await?;
    Ok(report)
}

fn row_key(r: &SnapshotRow) -> (String, Uuid) {
    match r {
        SnapshotRow::Shared { resource, uuid, .. }
        | SnapshotRow::Owned { resource, uuid, .. }
        | SnapshotRow::OwnedTombstone { resource, uuid, .. } => (resource.clone(), *uuid),
    }
}

/// `r` with only the registers of the sending device's own writes, or `None` when its
/// existence (or, for an owned row, the row itself) is another device's.
fn peers_own(r: SnapshotRow, ties: &engine::Ties<'_>) -> Option<SnapshotRow> {
    match r {
        SnapshotRow::Shared {
            resource,
            uuid,
            exists_ts,
            alive,
            props,
        } => {
            if !ties.peers_own(exists_ts.author) {
                return None;
            }
            let props = props
                .into_iter()
                .filter(|(_, ts, _)| ties.peers_own(ts.author))
                .collect();
            Some(SnapshotRow::Shared {
                resource,
                uuid,
                exists_ts,
                alive,
                props,
            })
        }
        SnapshotRow::Owned { ts, claim, .. } | SnapshotRow::OwnedTombstone { ts, claim, .. }
            if !ties.peers_own(ts.author) || claim.is_some_and(|c| !ties.peers_own(c.author)) =>
        {
            None
        }
        r => Some(r),
    }
}

/// The hash of each row here (`None`: no such row).
async fn hashes(
    conn: &mut sqlx::sqlite::SqliteConnection,
    registry: &Registry,
    keys: &[(String, Uuid)],
) -> Result<Vec<Option<crate::hash::Hash>>, StoreError> {
    let mut out = Vec::with_capacity(keys.len());
    for (resource, uuid) in keys {
        let def = registry.get(resource)?;
        let key = key_of(*uuid);
        let hi = format!("{key}0");
        let rows = rows_between(conn, def, &key, &hi, 1).await?;
        out.push(rows.first().map(row_hash));
    }
    Ok(out)
}
