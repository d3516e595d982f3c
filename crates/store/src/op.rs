//! Operations, the unit of replication, and the sync types built from them: version vectors,
//! pages of ops, snapshot rows. All of them are serde types: JSON on the API, CBOR on the
//! wire (see [`crate::wire`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Hlc;
use crate::hash::Hash;
use crate::value::Value;

/// The kind of change an operation makes (the seed's `OperationMethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// A batch of owned rows: the log entry stands for every row the author wrote in it.
    OwnedBatchCreate,
    /// Delete one owned row.
    OwnedDelete,
    /// Create a shared row, with its initial fields.
    SharedCreate,
    /// Set one property of a shared row.
    SharedUpdate,
    /// Delete a shared row.
    SharedDelete,
}

impl Method {
    /// The name stored in the log's `method` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::OwnedBatchCreate => "OwnedBatchCreate",
            Method::OwnedDelete => "OwnedDelete",
            Method::SharedCreate => "SharedCreate",
            Method::SharedUpdate => "SharedUpdate",
            Method::SharedDelete => "SharedDelete",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "OwnedBatchCreate" => Method::OwnedBatchCreate,
            "OwnedDelete" => Method::OwnedDelete,
            "SharedCreate" => Method::SharedCreate,
            "SharedUpdate" => Method::SharedUpdate,
            "SharedDelete" => Method::SharedDelete,
            _ => return None,
        })
    }
}

/// One operation of the log: the seed's `Operation` plus the author's sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// The author (the seed's `client_uuid`); also the author half of `ts`.
    pub author: Uuid,
    /// The author's contiguous sequence number, from 1.
    pub seq: u64,
    /// HLC time of the op (NTP64); with `author` it forms the op's [`Hlc`].
    pub time: u64,
    /// What the op does.
    pub method: Method,
    /// The resource (table) name.
    pub resource: String,
    /// The row, except for `OwnedBatchCreate`.
    pub uuid: Option<Uuid>,
    /// The property of a `SharedUpdate`.
    pub property: Option<String>,
    /// The new value of a `SharedUpdate`; the fields of a `SharedCreate` are in `fields`.
    pub value: Option<Value>,
    /// The initial fields of a `SharedCreate`; the row count of an `OwnedBatchCreate` is in
    /// `count`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Value>,
    /// For `OwnedBatchCreate`: how many rows the batch wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// For `OwnedBatchCreate`: what its rows are, so that the header, which the author's
    /// chain proves, proves them too. The rows in UUID order are cut into groups; each
    /// entry is one group's row count and hash ([`crate::proof::group_hash`]). Empty for
    /// other ops (and for batches written before rows were committed to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<RowGroup>,
}

/// One group of an owned batch's rows, as its header commits to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowGroup {
    /// How many rows the group has (at least one).
    pub rows: u32,
    /// The hash of the group's rows ([`crate::proof::group_hash`]).
    pub hash: Hash,
}

/// An upper bound of the CBOR size of a text field.
fn str_size(s: &str) -> usize {
    9 + s.len()
}

/// An upper bound of the CBOR size of a UUID (bytes or text, whichever serde picks).
const UUID_SIZE: usize = 40;
/// An upper bound of the CBOR size of an [`Hlc`] (a map of its time and author).
const HLC_SIZE: usize = 16 + 9 + UUID_SIZE;

impl Op {
    /// An upper bound of the op's encoded size on the wire (CBOR, as a map with its field
    /// names), from which sync pages are cut by bytes. Unit tests check it against the
    /// encoder.
    pub fn wire_size(&self) -> usize {
        // The map, the field names, author, seq, time, method, uuid and count.
        const FIXED: usize = 256;
        FIXED
            + str_size(&self.resource)
            + self.property.as_deref().map_or(1, str_size)
            + self.value.as_ref().map_or(1, Value::wire_size)
            + self
                .fields
                .iter()
                .map(|(k, v)| str_size(k) + v.wire_size())
                .sum::<usize>()
            // The field's name and array header, then per group its count and hash.
            + 16
            + self.groups.len() * (9 + 2 + 32 + 4)
    }

    /// The op's timestamp.
    pub fn ts(&self) -> Hlc {
        Hlc {
            time: self.time,
            author: self.author,
        }
    }

    /// Its identity: (author, seq).
    pub fn id(&self) -> OpId {
        OpId {
            author: self.author,
            seq: self.seq,
        }
    }
}

/// The identity of an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId {
    /// Author.
    pub author: Uuid,
    /// Sequence number.
    pub seq: u64,
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.author, self.seq)
    }
}

/// A row of an owned resource, as it travels expanded from an `OwnedBatchCreate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnedRow {
    /// The row's UUID.
    pub uuid: Uuid,
    /// Column values, in the registry's column order.
    pub values: Vec<Value>,
}

impl OwnedRow {
    /// An upper bound of the row's encoded size on the wire (see [`Op::wire_size`]).
    pub fn wire_size(&self) -> usize {
        16 + UUID_SIZE + 9 + self.values.iter().map(Value::wire_size).sum::<usize>()
    }
}

/// One item of a sync page: an op, or a page of the rows of an `OwnedBatchCreate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// A whole op (never an `OwnedBatchCreate`, whose rows come as `OwnedRows`).
    Op(Op),
    /// Rows of an owned batch: whole groups of the header's [`Op::groups`], from
    /// `first_group` on, each row with the values the batch wrote (a receiver checks them
    /// against the groups' hashes before it applies any). The batch's op counts as applied
    /// once the page with `last` set has been applied.
    OwnedRows {
        /// The `OwnedBatchCreate` op.
        header: Op,
        /// Some of its rows, in UUID order.
        rows: Vec<OwnedRow>,
        /// Whether this page ends the batch.
        last: bool,
        /// The index of the header's group the first row is in (rows of a batch whose
        /// header has no groups: 0).
        #[serde(default, skip_serializing_if = "is_zero")]
        first_group: u32,
    },
}

impl Change {
    /// The op this change belongs to.
    pub fn op(&self) -> &Op {
        match self {
            Change::Op(op) => op,
            Change::OwnedRows { header, .. } => header,
        }
    }

    /// The op this change belongs to, by value (an owned batch's rows are dropped).
    pub fn into_op(self) -> Op {
        match self {
            Change::Op(op) => op,
            Change::OwnedRows { header, .. } => header,
        }
    }

    /// An upper bound of its encoded size on the wire (see [`Op::wire_size`]).
    pub fn wire_size(&self) -> usize {
        match self {
            Change::Op(op) => 16 + op.wire_size(),
            Change::OwnedRows { header, rows, .. } => {
                // The `first_group` field with its name: 20.
                68 + header.wire_size() + rows.iter().map(OwnedRow::wire_size).sum::<usize>()
            }
        }
    }

    /// How many items it weighs in a page: one per op or row.
    pub fn weight(&self) -> usize {
        match self {
            Change::Op(_) => 1,
            Change::OwnedRows { rows, .. } => rows.len().max(1),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a replica holds of one author's log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorVersion {
    /// Every op with `seq <= contiguous` has been applied.
    pub contiguous: u64,
    /// Sequence numbers above `contiguous` that have been applied too (the rest above it,
    /// up to the highest of these, are gaps).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub extra: BTreeSet<u64>,
}

impl AuthorVersion {
    /// Whether `seq` has been applied.
    pub fn has(&self, seq: u64) -> bool {
        seq <= self.contiguous || self.extra.contains(&seq)
    }

    /// Marks `seq` applied, advancing `contiguous` over what is now contiguous.
    pub fn add(&mut self, seq: u64) {
        if seq <= self.contiguous {
            return;
        }
        // The usual case, an author's next op: no set to touch.
        if seq == self.contiguous + 1 && self.extra.is_empty() {
            self.contiguous = seq;
            return;
        }
        self.extra.insert(seq);
        while self.extra.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
    }

    /// Raises `contiguous` to at least `to` (after a snapshot import).
    pub fn raise(&mut self, to: u64) {
        if to > self.contiguous {
            self.contiguous = to;
            self.extra = self.extra.split_off(&(to + 1));
            while self.extra.remove(&(self.contiguous + 1)) {
                self.contiguous += 1;
            }
        }
    }

    /// The highest sequence number applied.
    pub fn max(&self) -> u64 {
        self.extra.last().copied().unwrap_or(self.contiguous)
    }

    /// The missing ranges (inclusive) between `contiguous` and the highest applied seq.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut next = self.contiguous + 1;
        for &s in &self.extra {
            if s > next {
                out.push((next, s - 1));
            }
            next = s + 1;
        }
        out
    }
}

/// A version vector: per author, what a replica has applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector {
    /// Per author.
    pub authors: BTreeMap<Uuid, AuthorVersion>,
}

impl VersionVector {
    /// Whether the op has been applied.
    pub fn has(&self, id: OpId) -> bool {
        self.authors.get(&id.author).is_some_and(|v| v.has(id.seq))
    }

    /// The contiguous sequence of an author (0 when unknown).
    pub fn contiguous(&self, author: &Uuid) -> u64 {
        self.authors.get(author).map_or(0, |v| v.contiguous)
    }

    /// Marks an op applied.
    pub fn add(&mut self, id: OpId) {
        self.authors.entry(id.author).or_default().add(id.seq);
    }

    /// Whether any author has a gap.
    pub fn has_gaps(&self) -> bool {
        self.authors.values().any(|v| !v.extra.is_empty())
    }

    /// Whether `self` has applied every op `other` has.
    pub fn covers(&self, other: &VersionVector) -> bool {
        other.authors.iter().all(|(a, v)| {
            let mine = self.authors.get(a);
            mine.is_some_and(|m| m.contiguous >= v.contiguous)
                && v.extra.iter().all(|s| mine.is_some_and(|m| m.has(*s)))
                || (v.contiguous == 0 && v.extra.is_empty())
        })
    }

    /// Only the contiguous part, per author, as the pruning horizon uses it.
    pub fn contiguous_map(&self) -> BTreeMap<Uuid, u64> {
        self.authors
            .iter()
            .map(|(a, v)| (*a, v.contiguous))
            .collect()
    }

    /// Bounds the `extra` sets (a request must stay small): keeps at most `cap` per author.
    /// The sender then sends some ops twice, which the receiver ignores.
    pub fn truncated(&self, cap: usize) -> VersionVector {
        VersionVector {
            authors: self
                .authors
                .iter()
                .map(|(a, v)| {
                    (
                        *a,
                        AuthorVersion {
                            contiguous: v.contiguous,
                            extra: v.extra.iter().take(cap).copied().collect(),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One record of a state snapshot: a row with its merge state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SnapshotRow {
    /// A shared row: its existence register and every property register.
    Shared {
        /// Resource.
        resource: String,
        /// Row.
        uuid: Uuid,
        /// Existence register: timestamp of the create or delete that set it.
        exists_ts: Hlc,
        /// Existence register: alive or deleted.
        alive: bool,
        /// Property registers: name, timestamp, value.
        props: Vec<(String, Hlc, Value)>,
    },
    /// A live owned row.
    Owned {
        /// Resource.
        resource: String,
        /// Row.
        uuid: Uuid,
        /// Timestamp of the batch that wrote it (its author is the owner).
        ts: Hlc,
        /// Sequence number of that batch.
        seq: u64,
        /// Values in column order.
        values: Vec<Value>,
        /// The owner's claim (its lowest create), when it is not `ts`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<Hlc>,
    },
    /// The tombstone of a deleted owned row.
    OwnedTombstone {
        /// Resource.
        resource: String,
        /// Row.
        uuid: Uuid,
        /// Timestamp of the delete (its author is the owner).
        ts: Hlc,
        /// The owner's claim (its lowest create), which the tombstone keeps so that a later
        /// create of another device is refused. `None` from older versions: taken as `ts`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<Hlc>,
    },
}

/// An upper bound of the CBOR size of an owned row's claim (its field name and its
/// timestamp; nothing when it is not sent).
fn claim_size(claim: &Option<Hlc>) -> usize {
    claim.map_or(0, |_| str_size("claim") + HLC_SIZE)
}

impl SnapshotRow {
    /// The resource of the row.
    pub fn resource(&self) -> &str {
        match self {
            SnapshotRow::Shared { resource, .. }
            | SnapshotRow::Owned { resource, .. }
            | SnapshotRow::OwnedTombstone { resource, .. } => resource,
        }
    }

    /// An upper bound of its encoded size on the wire (see [`Op::wire_size`]).
    pub fn wire_size(&self) -> usize {
        const FIXED: usize = 64 + UUID_SIZE + HLC_SIZE + 9;
        match self {
            SnapshotRow::Shared {
                resource, props, ..
            } => {
                FIXED
                    + str_size(resource)
                    + props
                        .iter()
                        .map(|(name, _, v)| 2 + str_size(name) + HLC_SIZE + v.wire_size())
                        .sum::<usize>()
            }
            SnapshotRow::Owned {
                resource,
                values,
                claim,
                ..
            } => {
                FIXED
                    + str_size(resource)
                    + 9
                    + values.iter().map(Value::wire_size).sum::<usize>()
                    + claim_size(claim)
            }
            SnapshotRow::OwnedTombstone {
                resource, claim, ..
            } => FIXED + str_size(resource) + claim_size(claim),
        }
    }

    /// Every timestamp the row carries (an owned row's claim included).
    pub fn timestamps(&self) -> Vec<Hlc> {
        match self {
            SnapshotRow::Shared {
                exists_ts, props, ..
            } => std::iter::once(*exists_ts)
                .chain(props.iter().map(|(_, ts, _)| *ts))
                .collect(),
            SnapshotRow::Owned { ts, claim, .. }
            | SnapshotRow::OwnedTombstone { ts, claim, .. } => {
                std::iter::once(*ts).chain(*claim).collect()
            }
        }
    }
}

/// Why a remote op was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectReason {
    /// Its timestamp is too far ahead of this clock; a later catch-up fetches it again.
    Drift,
    /// Unknown resource.
    UnknownResource,
    /// Unknown field of a known resource.
    UnknownField,
    /// A value of the wrong type.
    WrongType,
    /// An op on an owned row by a client that does not own it.
    NotOwner,
    /// A method on a resource of the other kind, or missing parts.
    Malformed,
    /// No proof of authorship covers it.
    Unproven,
    /// Its proof of authorship does not hold (forged, altered, or another author's).
    BadProof,
    /// It names this replica's own author, which wrote every op of its own.
    OwnAuthor,
    /// Its device is not a member of the library ([`crate::members`]).
    NotMember,
    /// Its device was removed before it was stamped.
    Removed,
}

impl RejectReason {
    /// A short label, for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::Drift => "drift",
            RejectReason::UnknownResource => "unknown_resource",
            RejectReason::UnknownField => "unknown_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::NotOwner => "not_owner",
            RejectReason::Malformed => "malformed",
            RejectReason::Unproven => "unproven",
            RejectReason::BadProof => "bad_proof",
            RejectReason::OwnAuthor => "own_author",
            RejectReason::NotMember => "not_member",
            RejectReason::Removed => "removed",
        }
    }
}

/// Why an op, a row or a version vector from the network was refused, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Rejection {
    /// The rule it broke (also its metric label, [`RejectReason::label`]).
    pub reason: RejectReason,
    /// What was wrong, for the log.
    pub detail: String,
}

impl Rejection {
    /// A rejection for `reason`, saying `detail`.
    pub fn new(reason: RejectReason, detail: String) -> Rejection {
        Rejection { reason, detail }
    }

    /// The metric label of its reason.
    pub fn label(&self) -> &'static str {
        self.reason.label()
    }
}

/// A row-level change made by a write or an applied batch, for `/v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowEvent {
    /// Resource.
    pub resource: String,
    /// Row (`None` for a whole owned batch).
    pub uuid: Option<Uuid>,
    /// The method that changed it.
    pub method: Method,
    /// The op's author.
    pub author: Uuid,
    /// Whether the change came from another client.
    pub remote: bool,
    /// For an owned batch: how many rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl RowEvent {
    /// The change `op` made to its one row.
    pub(crate) fn of(op: &Op, remote: bool) -> RowEvent {
        RowEvent {
            resource: op.resource.clone(),
            uuid: op.uuid,
            method: op.method,
            author: op.author,
            remote,
            count: None,
        }
    }
}

/// What [`crate::Store::import_snapshot_page`] did with a page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotImport {
    /// Rows merged.
    pub imported: usize,
    /// Rows set aside, not imported: one of their registers is more than `max_drift`
    /// ahead of this clock.
    pub set_aside: usize,
    /// Rows of a resource or with fields this registry does not know: kept (their known
    /// fields merged) for a build that knows them.
    pub kept: usize,
    /// The authors of every register of the rows set aside. The snapshot must not claim to
    /// cover their ops (see [`crate::Store::finish_snapshot`]), so that they are fetched
    /// again: from the log, or from a later snapshot.
    pub uncovered: BTreeSet<Uuid>,
}

/// What [`crate::Store::apply`] did with a batch.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Ops applied (each counts once; owned rows are counted in `rows`).
    pub applied: usize,
    /// Owned rows written.
    pub rows: usize,
    /// Ops already applied before: no-ops.
    pub duplicates: usize,
    /// Ops refused, with why.
    pub rejected: Vec<(OpId, Rejection)>,
    /// Ops of a resource or field this registry does not know: logged (received) and kept,
    /// not applied (but for a create's known fields), with why.
    pub kept: Vec<(OpId, RejectReason)>,
    /// `OwnedBatchCreate` headers whose rows must be pulled from a peer.
    pub needs_rows: Vec<Op>,
    /// What changed, for subscribers.
    pub events: Vec<RowEvent>,
    /// Of `applied`, the ops SQLite applied in place: creates of rows unknown here, and
    /// updates of rows live here newer than their register. The others took the general
    /// path (reading the rows' registers into the merge).
    pub in_place: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::to_cbor;

    fn op(method: Method, value: Option<Value>, fields: &[(&str, Value)]) -> Op {
        Op {
            author: Uuid::from_u128(u128::MAX - 7),
            seq: u64::MAX / 2,
            time: u64::MAX - 1,
            method,
            resource: "tags_on_files".into(),
            uuid: Some(Uuid::from_u128(u128::MAX - 1)),
            property: value.as_ref().map(|_| "materialized_path".into()),
            value,
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            count: Some(u64::MAX),
            // Two groups with the largest count: the estimate must cover them.
            groups: vec![
                RowGroup {
                    rows: u32::MAX,
                    hash: Hash([0xff; 32]),
                };
                2
            ],
        }
    }

    fn values() -> Vec<Value> {
        vec![
            Value::Null,
            Value::Int(i64::MIN),
            Value::Real(f64::MIN_POSITIVE / 3.0),
            Value::Text(String::new()),
            Value::Text("é".repeat(300)),
            Value::Text("x".repeat(70_000)),
        ]
    }

    /// The estimates pages are cut by are upper bounds of what the encoder writes.
    #[test]
    fn wire_size_estimates_are_upper_bounds() {
        let ts = Hlc {
            time: u64::MAX,
            author: Uuid::from_u128(u128::MAX),
        };
        for v in values() {
            assert!(v.wire_size() >= to_cbor(&v).len(), "{v:?}");
            let all: Vec<(&str, Value)> = vec![("content", v.clone()), ("cas_id", v.clone())];
            for o in [
                op(Method::SharedUpdate, Some(v.clone()), &[]),
                op(Method::OwnedBatchCreate, None, &all),
                op(Method::SharedCreate, Some(v.clone()), &all),
            ] {
                assert!(o.wire_size() >= to_cbor(&o).len(), "{o:?}");
                let c = Change::Op(o.clone());
                assert!(c.wire_size() >= to_cbor(&c).len());
                let row = OwnedRow {
                    uuid: Uuid::from_u128(u128::MAX),
                    values: vec![v.clone(), v.clone(), Value::Int(-1)],
                };
                assert!(row.wire_size() >= to_cbor(&row).len());
                let c = Change::OwnedRows {
                    header: o,
                    rows: vec![row.clone(), row],
                    last: true,
                    first_group: u32::MAX,
                };
                assert!(c.wire_size() >= to_cbor(&c).len());
            }
            for r in [
                SnapshotRow::Shared {
                    resource: "comments".into(),
                    uuid: ts.author,
                    exists_ts: ts,
                    alive: true,
                    props: vec![
                        ("content".into(), ts, v.clone()),
                        ("x".into(), ts, v.clone()),
                    ],
                },
                SnapshotRow::Owned {
                    resource: "file_paths".into(),
                    uuid: ts.author,
                    ts,
                    seq: u64::MAX,
                    values: vec![v.clone(), v.clone()],
                    claim: Some(ts),
                },
                SnapshotRow::OwnedTombstone {
                    resource: "file_paths".into(),
                    uuid: ts.author,
                    ts,
                    claim: Some(ts),
                },
            ] {
                assert!(r.wire_size() >= to_cbor(&r).len(), "{r:?}");
            }
        }
    }
}
