//! The apply engine: loads the registers an ordered list of changes touches, merges them with
//! the pure rules of [`crate::merge`], and stores what moved with multi-row statements, all
//! inside the caller's transaction. Local writes, remote batches and snapshot imports all
//! come through here.
//!
//! - this module: the entry points ([`apply`] with its [`Mode`], [`insert_new_rows`],
//!   [`import_rows`]) and the log of what was applied;
//! - [`shared`]: shared rows, merged per property through the rules of [`crate::merge`];
//! - [`in_place`]: the fast path of remote batches, where SQLite applies ops by itself;
//! - [`owned`]: owned rows, changed only by their owner (the device of the lowest create);
//! - [`import`]: snapshot rows, merged register by register.

mod import;
mod in_place;
mod owned;
mod shared;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use crate::error::StoreError;
use crate::op::{Change, Method, Op, OpId, Rejection, RowEvent, VersionVector};
use crate::proof::Chain;
use crate::registry::{Kind, Registry};
use crate::sql::oplog;

pub(crate) use import::{Ties, import_rows, repair_rows};
pub(crate) use in_place::{
    Unborn, any_unborn_statement, create_unborn_index, ensure_unborn_indexes, update_statement,
};
pub(crate) use shared::{Preloaded, load_shared, move_live_registers};

/// What the engine did.
#[derive(Debug, Default)]
pub(crate) struct EngineOutcome {
    /// Row-level changes, for subscribers.
    pub events: Vec<RowEvent>,
    /// Owned rows written.
    pub rows: usize,
    /// Ops refused by a merge rule (still logged, so no replica sees a gap).
    pub rejected: Vec<(OpId, Rejection)>,
    /// Ops now complete and recorded in the log (owned batches only with their last page).
    pub logged: Vec<OpId>,
    /// The first owned row an op could not change, with its owner (a local write turns it
    /// into an error).
    pub not_owner: Option<(Uuid, Uuid)>,
    /// Ops applied in place by SQLite (see [`in_place`]).
    pub in_place: usize,
}

/// Whose changes the engine applies, and what it may assume about them.
pub(crate) enum Mode<'a> {
    /// This node's own writes. `preloaded`, when given, holds the registers of every shared
    /// row the changes name, per resource, as stored in this transaction (a local batch
    /// reads them once to check its entries; the engine then uses and updates them).
    Local {
        /// Registers already read.
        preloaded: Option<&'a mut Preloaded>,
    },
    /// Changes from peers: what SQLite can apply by itself goes [`in_place`] first.
    Remote {
        /// The tables whose in-place updates need not check that their rows are live.
        unborn: &'a Unborn,
    },
}

impl Mode<'_> {
    /// Whether the changes are this node's (row events say `remote: false`).
    fn is_local(&self) -> bool {
        matches!(self, Mode::Local { .. })
    }
}

/// Applies validated, not yet applied changes in order. The ops logged are added to `vv`,
/// the caller's copy of the version vector, and the new contiguous seqs of their authors
/// are stored in the same statement as the log; `chain` is what proves them.
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    registry: &Registry,
    changes: &[Change],
    mode: Mode<'_>,
    vv: &mut VersionVector,
    chain: &Chain,
) -> Result<EngineOutcome, StoreError> {
    apply_keeping(conn, registry, changes, &Instead::new(), mode, vv, chain).await
}

/// What to merge instead of some ops of a batch, by op: an op for what this registry does
/// not know (kept in quarantine) merges only its known part, or nothing. It is logged whole
/// all the same.
pub(crate) type Instead = HashMap<OpId, Option<Change>>;

/// [`apply`], merging `instead`'s part (or nothing) for the ops it names, and logging every
/// op of `changes` whole.
pub(crate) async fn apply_keeping(
    conn: &mut SqliteConnection,
    registry: &Registry,
    changes: &[Change],
    instead: &Instead,
    mode: Mode<'_>,
    vv: &mut VersionVector,
    chain: &Chain,
) -> Result<EngineOutcome, StoreError> {
    let mut out = EngineOutcome::default();
    let mut rejected_ops: HashMap<OpId, String> = HashMap::new();
    let merged: Vec<&Change> = changes
        .iter()
        .filter_map(|c| match instead.get(&c.op().id()) {
            None => Some(c),
            Some(part) => part.as_ref(),
        })
        .collect();
    merge(
        conn,
        registry,
        &merged,
        mode,
        chain,
        &mut out,
        &mut rejected_ops,
    )
    .await?;
    log_changes(conn, changes, &rejected_ops, &mut out, vv, chain).await?;
    Ok(out)
}

/// Merges changes that are already in the log (kept in quarantine by a build that did not
/// know their resource or field): nothing is logged, no version vector moves.
pub(crate) async fn apply_logged(
    conn: &mut SqliteConnection,
    registry: &Registry,
    changes: &[Change],
    mode: Mode<'_>,
    chain: &Chain,
) -> Result<EngineOutcome, StoreError> {
    let mut out = EngineOutcome::default();
    let mut rejected_ops: HashMap<OpId, String> = HashMap::new();
    let refs: Vec<&Change> = changes.iter().collect();
    merge(
        conn,
        registry,
        &refs,
        mode,
        chain,
        &mut out,
        &mut rejected_ops,
    )
    .await?;
    out.rejected.extend(
        rejected_ops
            .into_iter()
            .map(|(id, why)| (id, Rejection::new(crate::op::RejectReason::NotOwner, why))),
    );
    Ok(out)
}

/// Merges `changes` into the rows, resource by resource (order kept within each).
async fn merge(
    conn: &mut SqliteConnection,
    registry: &Registry,
    changes: &[&Change],
    mut mode: Mode<'_>,
    chain: &Chain,
    out: &mut EngineOutcome,
    rejected_ops: &mut HashMap<OpId, String>,
) -> Result<(), StoreError> {
    let local = mode.is_local();
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
                let how = match &mut mode {
                    Mode::Local { preloaded } => shared::Loading::Preloaded(
                        preloaded.as_deref_mut().and_then(|m| m.get_mut(resource)),
                    ),
                    Mode::Remote { unborn } => shared::Loading::InPlaceFirst(unborn),
                };
                shared::apply(conn, def, &items, local, out, how).await?
            }
            Kind::Owned => {
                let owners = owned::Owners::with(&chain.devices);
                let source = if local {
                    owned::Source::Local
                } else {
                    owned::Source::Peer
                };
                owned::apply(conn, def, &items, &owners, source, out, rejected_ops).await?
            }
        }
    }
    Ok(())
}

/// Local creates of rows that are all new, inserted in place (see [`in_place`]) and
/// logged, without reading any row. `None` when one row is already known here: the
/// transaction then holds some of the inserts, and the caller must roll it back (and take
/// the general path, which tells an existing row from a dead one).
pub(crate) async fn insert_new_rows(
    conn: &mut SqliteConnection,
    registry: &Registry,
    changes: &[Change],
    vv: &mut VersionVector,
    chain: &Chain,
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
        if def.kind != Kind::Shared || !in_place::insert_new(conn, def, &ops, None).await? {
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
    log_changes(conn, changes, &HashMap::new(), &mut out, vv, chain).await?;
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
    chain: &Chain,
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
    oplog::append(conn, &mut log, &contiguous, chain).await?;
    Ok(())
}
