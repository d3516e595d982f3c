//! Checks of ops that arrive from the network against the registry: everything an op needs
//! to be applied safely, before any of it touches SQLite.

use crate::op::{Change, Method, Op, RejectReason, Rejection, SnapshotRow, VersionVector};
use crate::registry::{Kind, Registry};

/// The largest sequence number SQLite can store (it is an i64 there).
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// Checks one change; the error says why it is refused.
pub fn validate_change(registry: &Registry, change: &Change) -> Result<(), Rejection> {
    let op = change.op();
    validate_op(registry, op)?;
    match change {
        Change::Op(op) if op.method == Method::OwnedBatchCreate => Ok(()),
        Change::Op(_) => Ok(()),
        Change::OwnedRows { header, rows, .. } => {
            if header.method != Method::OwnedBatchCreate {
                return Err(Rejection::new(
                    RejectReason::Malformed,
                    "owned rows without an OwnedBatchCreate header".into(),
                ));
            }
            let def = registry
                .get(&header.resource)
                .map_err(|e| Rejection::new(RejectReason::UnknownResource, e.to_string()))?;
            for row in rows {
                if row.values.len() != def.columns.len() {
                    return Err(Rejection::new(
                        RejectReason::Malformed,
                        format!(
                            "row {} of {} has {} values, expected {}",
                            row.uuid,
                            def.name,
                            row.values.len(),
                            def.columns.len()
                        ),
                    ));
                }
                for (v, col) in row.values.iter().zip(&def.columns) {
                    if !v.check_type(col.ty) {
                        return Err(Rejection::new(
                            RejectReason::WrongType,
                            format!(
                                "field `{}` of `{}` must be {}",
                                col.name,
                                def.name,
                                col.ty.name()
                            ),
                        ));
                    }
                }
            }
            Ok(())
        }
    }
}

/// Checks one op.
pub fn validate_op(registry: &Registry, op: &Op) -> Result<(), Rejection> {
    let malformed = |why: &str| {
        Err(Rejection::new(
            RejectReason::Malformed,
            format!("{} {}: {why}", op.method.as_str(), op.id()),
        ))
    };
    if op.seq == 0 || op.seq > MAX_SEQ {
        return malformed("sequence number out of range");
    }
    if op.author.is_nil() {
        return malformed("nil author");
    }
    let def = registry
        .get(&op.resource)
        .map_err(|e| Rejection::new(RejectReason::UnknownResource, e.to_string()))?;
    let kind_ok = match op.method {
        Method::SharedCreate | Method::SharedUpdate | Method::SharedDelete => {
            def.kind == Kind::Shared
        }
        Method::OwnedBatchCreate | Method::OwnedDelete => def.kind == Kind::Owned,
    };
    if !kind_ok {
        return malformed(&format!("method does not apply to resource `{}`", def.name));
    }
    if op.method != Method::OwnedBatchCreate && !op.groups.is_empty() {
        return malformed("only a batch has groups of rows");
    }
    match op.method {
        Method::OwnedBatchCreate => {
            if op.uuid.is_some() || op.property.is_some() || op.value.is_some() {
                return malformed("a batch names no row, property or value");
            }
            if !op.groups.is_empty() {
                let total = op
                    .groups
                    .iter()
                    .try_fold(0u64, |n, g| (g.rows > 0).then(|| n + u64::from(g.rows)));
                if total != op.count {
                    return malformed("the batch's groups do not add up to its row count");
                }
            }
        }
        Method::SharedDelete | Method::OwnedDelete => {
            if op.uuid.is_none() {
                return malformed("missing row uuid");
            }
        }
        Method::SharedCreate => {
            if op.uuid.is_none() {
                return malformed("missing row uuid");
            }
            for (name, v) in &op.fields {
                let col = def
                    .column(name)
                    .map_err(|e| Rejection::new(RejectReason::UnknownField, e.to_string()))?;
                if !v.check_type(col.ty) {
                    return Err(Rejection::new(
                        RejectReason::WrongType,
                        format!("field `{name}` of `{}` must be {}", def.name, col.ty.name()),
                    ));
                }
            }
        }
        Method::SharedUpdate => {
            let (Some(_), Some(prop), Some(v)) = (&op.uuid, &op.property, &op.value) else {
                return malformed("an update needs a row, a property and a value");
            };
            let col = def
                .column(prop)
                .map_err(|e| Rejection::new(RejectReason::UnknownField, e.to_string()))?;
            if !v.check_type(col.ty) {
                return Err(Rejection::new(
                    RejectReason::WrongType,
                    format!("field `{prop}` of `{}` must be {}", def.name, col.ty.name()),
                ));
            }
        }
    }
    Ok(())
}

/// Checks one snapshot row against the registry.
pub fn validate_snapshot_row(registry: &Registry, row: &SnapshotRow) -> Result<(), Rejection> {
    let (resource, kind) = match row {
        SnapshotRow::Shared { resource, .. } => (resource, Kind::Shared),
        SnapshotRow::Owned { resource, .. } | SnapshotRow::OwnedTombstone { resource, .. } => {
            (resource, Kind::Owned)
        }
    };
    let def = registry
        .get(resource)
        .map_err(|e| Rejection::new(RejectReason::UnknownResource, e.to_string()))?;
    if def.kind != kind {
        return Err(Rejection::new(
            RejectReason::Malformed,
            format!("snapshot row of the wrong kind for `{resource}`"),
        ));
    }
    match row {
        SnapshotRow::Shared { props, .. } => {
            for (name, _, v) in props {
                let col = def
                    .column(name)
                    .map_err(|e| Rejection::new(RejectReason::UnknownField, e.to_string()))?;
                if !v.check_type(col.ty) {
                    return Err(Rejection::new(
                        RejectReason::WrongType,
                        format!("field `{name}` of `{resource}` must be {}", col.ty.name()),
                    ));
                }
            }
        }
        SnapshotRow::Owned {
            values,
            seq,
            ts,
            claim,
            ..
        } => {
            if *seq == 0 || *seq > MAX_SEQ || ts.author.is_nil() || !claim_fits(*claim, *ts) {
                return Err(Rejection::new(
                    RejectReason::Malformed,
                    "owned snapshot row with a bad seq or owner".into(),
                ));
            }
            if values.len() != def.columns.len() {
                return Err(Rejection::new(
                    RejectReason::Malformed,
                    format!("row of `{resource}` with {} values", values.len()),
                ));
            }
            for (v, col) in values.iter().zip(&def.columns) {
                if !v.check_type(col.ty) {
                    return Err(Rejection::new(
                        RejectReason::WrongType,
                        format!(
                            "field `{}` of `{resource}` must be {}",
                            col.name,
                            col.ty.name()
                        ),
                    ));
                }
            }
        }
        SnapshotRow::OwnedTombstone { ts, claim, .. } => {
            if ts.author.is_nil() || !claim_fits(*claim, *ts) {
                return Err(Rejection::new(
                    RejectReason::Malformed,
                    "tombstone without an owner".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Checks a version vector that came from a peer (the `covers` of a snapshot): every seq
/// within what SQLite stores, so that raising this replica's vector to it cannot overflow.
pub fn validate_version_vector(vv: &VersionVector) -> Result<(), Rejection> {
    for (author, v) in &vv.authors {
        let top = v.extra.last().copied().unwrap_or(0).max(v.contiguous);
        if top > MAX_SEQ {
            return Err(Rejection::new(
                RejectReason::Malformed,
                format!("version vector with seq {top} for {author}, above {MAX_SEQ}"),
            ));
        }
    }
    Ok(())
}

/// Whether an owned snapshot row's claim (its owner's lowest create) can be: no later than
/// the row. (Its author may be another incarnation of the owner's device, which only the
/// engine knows.)
fn claim_fits(claim: Option<crate::clock::Hlc>, ts: crate::clock::Hlc) -> bool {
    claim.is_none_or(|c| c <= ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    /// Regression: a snapshot's `covers` of `u64::MAX` overflowed `AuthorVersion::raise`
    /// (`to + 1`) in `finish_snapshot`.
    #[test]
    fn version_vectors_beyond_max_seq_are_refused() {
        let mut vv = VersionVector::default();
        vv.authors.entry(Uuid::from_u128(1)).or_default().contiguous = MAX_SEQ;
        assert!(validate_version_vector(&vv).is_ok());
        vv.authors.entry(Uuid::from_u128(2)).or_default().contiguous = u64::MAX;
        assert!(validate_version_vector(&vv).is_err());
        let mut extra = VersionVector::default();
        extra
            .authors
            .entry(Uuid::from_u128(3))
            .or_default()
            .extra
            .insert(MAX_SEQ + 1);
        assert!(validate_version_vector(&extra).is_err());
    }
}
