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

/// What of an op or a snapshot row this registry does not know: why it is kept in
/// quarantine, and the part of it that can be applied now (a create's or a row's known
/// fields), if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Unknown<T> {
    /// [`RejectReason::UnknownResource`] or [`RejectReason::UnknownField`].
    pub reason: RejectReason,
    /// What this registry knows of it, to apply now.
    pub known: Option<T>,
}

/// Checks an op like [`validate_op`], but an op of a resource or field this registry does
/// not know (a peer that runs a newer schema wrote it) is not an error: it is returned as
/// [`Unknown`], to keep. Its other parts must be well formed. An owned batch of an unknown
/// resource is still refused: its rows are read from a table this node does not have.
pub fn split_unknown_op(registry: &Registry, op: &Op) -> Result<Option<Unknown<Op>>, Rejection> {
    let rejection = match validate_op(registry, op) {
        Ok(()) => return Ok(None),
        Err(r) => r,
    };
    match rejection.reason {
        RejectReason::UnknownResource => {
            if op.method == Method::OwnedBatchCreate || op.uuid.is_none() {
                return Err(rejection);
            }
            Ok(Some(Unknown {
                reason: RejectReason::UnknownResource,
                known: None,
            }))
        }
        RejectReason::UnknownField => {
            let known = match op.method {
                Method::SharedCreate => {
                    let def = registry.get(&op.resource).map_err(|e| {
                        Rejection::new(RejectReason::UnknownResource, e.to_string())
                    })?;
                    let mut known = op.clone();
                    known.fields.retain(|k, _| def.column_index(k).is_some());
                    validate_op(registry, &known)?;
                    Some(known)
                }
                _ => None,
            };
            Ok(Some(Unknown {
                reason: RejectReason::UnknownField,
                known,
            }))
        }
        _ => Err(rejection),
    }
}

/// [`split_unknown_op`] for a snapshot row: a row of an unknown resource is kept whole; a
/// shared row with unknown properties is kept, and its known properties applied; an owned
/// row with more values than its resource's columns is kept whole (its values are in the
/// column order of a schema this node does not have).
pub fn split_unknown_row(
    registry: &Registry,
    row: &SnapshotRow,
) -> Result<Option<Unknown<SnapshotRow>>, Rejection> {
    let rejection = match validate_snapshot_row(registry, row) {
        Ok(()) => return Ok(None),
        Err(r) => r,
    };
    let keep = |reason, known| Ok(Some(Unknown { reason, known }));
    match (&rejection.reason, row) {
        (RejectReason::UnknownResource, _) => keep(RejectReason::UnknownResource, None),
        (
            RejectReason::UnknownField,
            SnapshotRow::Shared {
                resource,
                uuid,
                exists_ts,
                alive,
                props,
            },
        ) => {
            let def = registry
                .get(resource)
                .map_err(|e| Rejection::new(RejectReason::UnknownResource, e.to_string()))?;
            let known = SnapshotRow::Shared {
                resource: resource.clone(),
                uuid: *uuid,
                exists_ts: *exists_ts,
                alive: *alive,
                props: props
                    .iter()
                    .filter(|(n, _, _)| def.column_index(n).is_some())
                    .cloned()
                    .collect(),
            };
            validate_snapshot_row(registry, &known)?;
            keep(RejectReason::UnknownField, Some(known))
        }
        (
            RejectReason::Malformed,
            SnapshotRow::Owned {
                resource, values, ..
            },
        ) if registry
            .get(resource)
            .is_ok_and(|d| d.kind == Kind::Owned && values.len() > d.columns.len()) =>
        {
            keep(RejectReason::UnknownField, None)
        }
        _ => Err(rejection),
    }
}

#[cfg(test)]
mod unknown_tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::clock::Hlc;
    use crate::value::Value;

    fn create(resource: &str, fields: &[(&str, &str)]) -> Op {
        Op {
            author: Uuid::from_u128(1),
            seq: 1,
            time: 5,
            method: Method::SharedCreate,
            resource: resource.into(),
            uuid: Some(Uuid::from_u128(2)),
            property: None,
            value: None,
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), Value::Text(v.to_string())))
                .collect::<BTreeMap<_, _>>(),
            count: None,
            groups: Vec::new(),
        }
    }

    #[test]
    fn what_the_registry_does_not_know_is_kept_and_its_known_part_applied() {
        let older = Registry::default_library()
            .without("albums")
            .without_column("tags", "color");
        let tag = create("tags", &[("name", "n"), ("color", "red")]);
        let u = split_unknown_op(&older, &tag).unwrap().unwrap();
        assert_eq!(u.reason, RejectReason::UnknownField);
        assert_eq!(u.known.unwrap().fields.len(), 1);
        assert_eq!(
            split_unknown_op(&Registry::default_library(), &tag).unwrap(),
            None
        );
        let album = create("albums", &[("name", "a")]);
        let u = split_unknown_op(&older, &album).unwrap().unwrap();
        assert_eq!((u.reason, u.known), (RejectReason::UnknownResource, None));
        // A known field of the wrong type is still refused.
        let mut bad = tag.clone();
        bad.fields.insert("name".into(), Value::Int(3));
        assert_eq!(
            split_unknown_op(&older, &bad).unwrap_err().reason,
            RejectReason::WrongType
        );
        let ts = Hlc {
            time: 5,
            author: Uuid::from_u128(1),
        };
        let row = SnapshotRow::Shared {
            resource: "tags".into(),
            uuid: Uuid::from_u128(2),
            exists_ts: ts,
            alive: true,
            props: vec![
                ("color".into(), ts, Value::Text("red".into())),
                ("name".into(), ts, Value::Text("n".into())),
            ],
        };
        let u = split_unknown_row(&older, &row).unwrap().unwrap();
        let Some(SnapshotRow::Shared { props, .. }) = u.known else {
            panic!()
        };
        assert_eq!(props.len(), 1);
        let owned = SnapshotRow::Owned {
            resource: "media_data".into(),
            uuid: Uuid::from_u128(3),
            ts,
            seq: 1,
            values: vec![Value::Null; 5],
            claim: None,
        };
        let u = split_unknown_row(&older, &owned).unwrap().unwrap();
        assert_eq!((u.reason, u.known), (RejectReason::UnknownField, None));
    }
}
