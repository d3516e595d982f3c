//! Finding where this node and a peer differ, and repairing it.
//!
//! Both nodes keep fingerprints of key ranges of every resource (the maintained digest,
//! [`murmur_store::digest`]). [`find_differences`] compares each resource's fingerprint
//! with the peer's, then descends only into the ranges whose fingerprints differ, one
//! request per range, down to rows: at 10M rows one differing row is found in about four
//! round trips per resource that differs. [`repair_with`] then asks the peer for those rows
//! and merges them here ([`Store::repair`]: the snapshot import's rules, plus ties of one
//! op with two values, which the op's own device settles). Each node repairs itself from
//! each peer, so both ends of a difference heal.
//!
//! The sync loop runs a repair round with one settled peer (whose last announcement holds
//! exactly the ops this node holds) every `repair_interval`; the digest's fold runs in the
//! background ([`fold_in_background`]). Everything a peer answers is bounded: at most
//! [`DIFF_ROWS_CAP`] rows and [`DIFF_REQUESTS_CAP`] range requests per round, and a range
//! it names must lie inside the range asked for.

use std::collections::BTreeMap;
use std::time::Duration;

use libp2p::PeerId;
use murmur_store::digest::{Fingerprint, Ranges, compare, valid_prefix};
use murmur_store::{SnapshotRow, Store};
use serde::{Deserialize, Serialize};
use tracing::warn;
use uuid::Uuid;

use super::pull::PullError;
use crate::protocol::{Net, Request, Response};

/// The most differing rows one round finds (a larger divergence is repaired over several
/// rounds).
pub const DIFF_ROWS_CAP: usize = 10_000;
/// The most range requests one round sends.
pub const DIFF_REQUESTS_CAP: usize = 4_096;
/// UUIDs one request for rows names: its CBOR stays well under the request frame
/// (`murmur_p2p::config::DEFAULT_MAX_REQUEST_BYTES`, checked in a unit test).
pub const ROWS_PER_REQUEST: usize = 1_000;
/// How long the background fold rests once nothing is dirty.
const FOLD_REST: Duration = Duration::from_secs(1);

/// A row where two nodes differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffRow {
    /// Its resource.
    pub resource: String,
    /// Its UUID.
    pub uuid: Uuid,
}

/// Where this node and a peer differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Differences {
    /// The rows that differ (held by one side only, or with other content).
    pub rows: Vec<DiffRow>,
    /// Requests sent to the peer.
    pub requests: u64,
    /// Whether a bound stopped the search (there may be more).
    pub truncated: bool,
}

/// What a repair round did.
#[derive(Debug, Clone, Default)]
pub struct RepairSummary {
    /// Where the nodes differed.
    pub differences: Differences,
    /// Rows received from the peer.
    pub received: usize,
    /// Rows that changed here.
    pub repaired: Vec<DiffRow>,
    /// Rows refused (malformed, too far ahead, not asked for).
    pub refused: usize,
}

async fn ask(net: &Net, peer: PeerId, req: Request) -> Result<Response, PullError> {
    match net.request(peer, req).await {
        Ok(Response::Error(e)) => Err(PullError::Refused(e)),
        Ok(r) => Ok(r),
        Err(e) => Err(PullError::Request(e.to_string())),
    }
}

/// Finds the rows where this node and `peer` differ (see the module docs).
pub async fn find_differences(
    store: &Store,
    net: &Net,
    peer: PeerId,
) -> Result<Differences, PullError> {
    let mut out = Differences::default();
    let Response::Fingerprints(theirs) = ask(net, peer, Request::Fingerprints).await? else {
        return Err(PullError::Unexpected);
    };
    out.requests += 1;
    let theirs: BTreeMap<String, Fingerprint> = theirs.into_iter().collect();
    for (resource, ours) in store.resource_fingerprints().await? {
        if theirs.get(&resource).copied().unwrap_or_default() == ours {
            continue;
        }
        let mut todo = vec![String::new()];
        while let Some(prefix) = todo.pop() {
            if out.requests as usize >= DIFF_REQUESTS_CAP || out.rows.len() >= DIFF_ROWS_CAP {
                out.truncated = true;
                return Ok(out);
            }
            let mine = store.range(&resource, &prefix).await?;
            let req = Request::Range {
                resource: resource.clone(),
                prefix: prefix.clone(),
            };
            let Response::Range(other) = ask(net, peer, req).await? else {
                return Err(PullError::Unexpected);
            };
            out.requests += 1;
            let c = compare(&mine, &other);
            // Ranges the peer named must lie inside this one, one level down at least, so
            // that a peer cannot keep the search going forever.
            todo.extend(c.descend.into_iter().rev().filter(|p| {
                p.len() > prefix.len() && p.starts_with(prefix.as_str()) && valid_prefix(p)
            }));
            let room = DIFF_ROWS_CAP - out.rows.len();
            if c.rows.len() > room {
                out.truncated = true;
            }
            out.rows
                .extend(c.rows.into_iter().take(room).map(|uuid| DiffRow {
                    resource: resource.clone(),
                    uuid,
                }));
            if matches!(other, Ranges::Rows(ref r) if r.len() >= murmur_store::digest::MAX_RANGE_ROWS)
            {
                // The peer's listing was cut: what lies beyond it waits for another round.
                out.truncated = true;
            }
        }
    }
    Ok(out)
}

/// Finds where this node and `peer` (a run of the device `device`) differ, asks the peer
/// for those rows and merges them here.
pub async fn repair_with(
    store: &Store,
    net: &Net,
    peer: PeerId,
    device: Uuid,
) -> Result<RepairSummary, PullError> {
    let differences = find_differences(store, net, peer).await?;
    let mut summary = RepairSummary::default();
    let mut by_resource: BTreeMap<&str, Vec<Uuid>> = BTreeMap::new();
    for r in &differences.rows {
        by_resource.entry(&r.resource).or_default().push(r.uuid);
    }
    for (resource, uuids) in by_resource {
        let mut at = 0;
        while at < uuids.len() {
            let asked = &uuids[at..(at + ROWS_PER_REQUEST).min(uuids.len())];
            let req = Request::Rows {
                resource: resource.to_owned(),
                uuids: asked.to_vec(),
            };
            let Response::Rows { rows, looked } = ask(net, peer, req).await? else {
                return Err(PullError::Unexpected);
            };
            let looked = (looked as usize).min(asked.len());
            if looked == 0 {
                return Err(PullError::Unexpected);
            }
            let wanted: std::collections::HashSet<&Uuid> = asked[..looked].iter().collect();
            let (rows, stray): (Vec<SnapshotRow>, Vec<SnapshotRow>) =
                rows.into_iter().partition(|r| {
                    let (res, uuid) = row_key(r);
                    res == resource && wanted.contains(&uuid)
                });
            summary.refused += stray.len();
            summary.received += rows.len();
            if !rows.is_empty() {
                let report = store.repair(rows, device).await?;
                summary.refused += report.refused;
                summary.repaired.extend(
                    report
                        .repaired
                        .into_iter()
                        .map(|(resource, uuid)| DiffRow { resource, uuid }),
                );
            }
            at += looked;
        }
    }
    summary.differences = differences;
    Ok(summary)
}

fn row_key(r: &SnapshotRow) -> (&str, Uuid) {
    match r {
        SnapshotRow::Shared { resource, uuid, .. }
        | SnapshotRow::Owned { resource, uuid, .. }
        | SnapshotRow::OwnedTombstone { resource, uuid, .. } => (resource, *uuid),
    }
}

/// Keeps the digest folded: folds dirty leaves in short transactions while there are any,
/// then rests for [`FOLD_REST`]. Runs until aborted.
pub(super) async fn fold_in_background(store: Store) {
    let mut rest = tokio::time::interval(FOLD_REST);
    rest.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        match store.fold_digest(murmur_store::FOLD_LEAVES).await {
            Ok(0) => {
                rest.tick().await;
            }
            // More may be dirty: go on, after letting other tasks (and writers) run.
            Ok(_) => tokio::task::yield_now().await,
            Err(e) => {
                warn!("folding the digest failed: {e}");
                rest.tick().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_for_rows_fits_the_request_frame() {
        const _: () = assert!(ROWS_PER_REQUEST <= murmur_store::MAX_ROWS_ASKED);
        let req = Request::Rows {
            resource: "x".repeat(64),
            uuids: (0..ROWS_PER_REQUEST as u128).map(Uuid::from_u128).collect(),
        };
        let bytes = murmur_store::wire::to_cbor(&req).len();
        assert!(
            bytes * 2 <= murmur_p2p::config::DEFAULT_MAX_REQUEST_BYTES,
            "{bytes} bytes"
        );
    }
}
