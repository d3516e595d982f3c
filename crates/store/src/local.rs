//! Local writes: this node's shared writes (one op per create, per updated field, per
//! delete) and owned batches, each checked against the registry before the write lock is
//! taken, then stamped, merged and logged in one transaction of the [`Writer`].

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use crate::clock::Clock;
use crate::commit::{Commit, Origin};
use crate::engine::{self, Mode};
use crate::error::StoreError;
use crate::op::{Change, Method, Op, OwnedRow, RowEvent};
use crate::proof::{Chain, HEAD_EVERY, Hash, Head, Proof, Signer, chain_next, op_hash, row_groups};
use crate::registry::{Kind, Registry, ResourceDef};
use crate::sql::rows::parse_uuid;
use crate::sql::{in_list, query, rows_per_statement};
use crate::value::{MAX_ROW_BYTES, Value};
use crate::writer::{WriteTx, Writer};

/// What a local write did.
#[derive(Debug, Clone, Default)]
pub struct WriteOutcome {
    /// The rows created (or named), in order.
    pub uuids: Vec<Uuid>,
    /// The ops committed, to publish.
    pub ops: Vec<Op>,
    /// The row-level changes, for subscribers.
    pub events: Vec<RowEvent>,
    /// The rows of an `OwnedBatchCreate` (its header is `ops[0]`), in UUID order; empty for
    /// other writes.
    pub owned_rows: Vec<OwnedRow>,
    /// The proofs of `ops`: one per signed head, in order.
    pub proofs: Vec<Proof>,
}

impl WriteOutcome {
    /// The commit this write makes, for the commit feed.
    fn commit(&self) -> Commit {
        Commit {
            applied: self.ops.len(),
            rows: self.owned_rows.len(),
            ops: self.ops.clone(),
            proofs: self.proofs.clone(),
            events: self.events.clone(),
            ..Commit::new(Origin::Local)
        }
    }

    /// The write as a peer applies it: the ops, with an owned batch's rows under its header,
    /// and their proofs.
    pub fn into_signed(self) -> (Vec<Change>, Vec<Proof>) {
        let proofs = self.proofs.clone();
        (self.into_changes(), proofs)
    }

    /// The write as a peer applies it: the ops, with an owned batch's rows under its header.
    pub fn into_changes(self) -> Vec<Change> {
        let mut ops = self.ops;
        match ops.first() {
            Some(op) if op.method == Method::OwnedBatchCreate && ops.len() == 1 => {
                vec![Change::OwnedRows {
                    header: ops.remove(0),
                    rows: self.owned_rows,
                    last: true,
                    first_group: 0,
                }]
            }
            _ => ops.into_iter().map(Change::Op).collect(),
        }
    }
}

/// One entry of an atomic batch of shared writes.
#[derive(Debug, Clone)]
pub enum BatchEntry {
    /// Create a row.
    Create {
        /// Resource.
        resource: String,
        /// Its UUID, or a new one.
        uuid: Option<Uuid>,
        /// Fields.
        fields: serde_json::Map<String, serde_json::Value>,
    },
    /// Update fields of a row.
    Update {
        /// Resource.
        resource: String,
        /// Row.
        uuid: Uuid,
        /// Fields.
        fields: serde_json::Map<String, serde_json::Value>,
    },
    /// Delete a row.
    Delete {
        /// Resource.
        resource: String,
        /// Row.
        uuid: Uuid,
    },
}

/// Tag for the UUIDv5 of rows whose UUID derives from their fields.
const UUID_NAMESPACE: Uuid = Uuid::from_u128(0x6d75726d_7572_4000_8000_726f77696473);

/// What a local write needs: the writer, the registry, the clock and this author's key.
pub(crate) struct Local<'a> {
    /// The one writer.
    pub writer: &'a Writer,
    /// The synced resources.
    pub registry: &'a Registry,
    /// Stamps the ops.
    pub clock: &'a Clock,
    /// The author of the ops (this store's incarnation).
    pub client: Uuid,
    /// Signs the ops' heads.
    pub signer: &'a Signer,
}

/// Chains and signs this author's new ops, in seq order: a head at least every
/// [`HEAD_EVERY`] ops and at the last op of the write.
struct Signing<'s> {
    signer: &'s Signer,
    /// The chain hash after the last op added.
    at: Hash,
    /// The segment since the last head: its first seq, the chain before it, its length.
    segment: (u64, Hash, u64),
    chain: Chain,
    proofs: Vec<Proof>,
}

impl<'s> Signing<'s> {
    fn new(signer: &'s Signer, tip: Hash, next_seq: u64) -> Signing<'s> {
        let mut chain = Chain::default();
        // The author's key is recorded with its first op (an incarnation that writes
        // nothing leaves no trace).
        if tip == Hash::ZERO {
            chain.keys.push(signer.key());
        }
        Signing {
            signer,
            at: tip,
            segment: (next_seq, tip, 0),
            chain,
            proofs: Vec::new(),
        }
    }

    fn add(&mut self, op: &Op) {
        self.chain.push_prev(op.author, op.seq, self.at);
        self.at = chain_next(&self.at, &op_hash(op));
        self.segment.2 += 1;
        if self.segment.2 >= HEAD_EVERY {
            self.head();
        }
    }

    fn head(&mut self) {
        let (first, prev, len) = self.segment;
        if len == 0 {
            return;
        }
        let seq = first + len - 1;
        let sig = self.signer.sign_head(seq, &self.at);
        self.chain.heads.push(Head {
            author: self.signer.author(),
            seq,
            hash: self.at,
            sig,
            tail: Vec::new(),
        });
        self.proofs.push(Proof {
            key: self.signer.key(),
            first,
            len,
            prev,
            tail: Vec::new(),
            sig,
        });
        self.segment = (seq + 1, self.at, 0);
    }

    /// Signs the last head; returns the chain and proofs, and the new tip.
    fn finish(mut self) -> (Chain, Vec<Proof>, Hash) {
        self.head();
        self.chain.seal();
        (self.chain, self.proofs, self.at)
    }
}

impl Local<'_> {
    /// Applies shared writes atomically: all of them in one transaction, or none (the
    /// error names the first bad entry).
    pub(crate) async fn batch(&self, entries: Vec<BatchEntry>) -> Result<WriteOutcome, StoreError> {
        // Check what needs no database first, so bad input never takes the lock.
        let mut prepared = Vec::with_capacity(entries.len());
        for (index, e) in entries.into_iter().enumerate() {
            prepared.push(
                self.prepare_entry(e)
                    .map_err(|source| StoreError::BatchEntry {
                        index,
                        source: Box::new(source),
                    })?,
            );
        }
        let mut tx = self.writer.begin().await?;
        let mut out = WriteOutcome::default();
        // Creates only, each of another row: insert them without reading a row first.
        // When one row is known here after all, start over on the general path.
        let prepared = match self.try_new_rows(&mut tx, prepared).await? {
            NewRows::Done(out) => {
                tx.commit(|| out.commit()).await?;
                return Ok(out);
            }
            NewRows::NotTried(prepared) => prepared,
            NewRows::Known(prepared) => {
                tx = tx.restart().await?;
                prepared
            }
        };
        let mut next_seq = tx.vv().contiguous(&self.client);
        // Whether each named row is alive, read in bulk, then followed through the batch:
        // a local op's timestamp is newer than every one stored, so a create makes its row
        // alive and a delete makes it dead.
        let mut states = load_named_rows(tx.conn(), self.registry, &prepared).await?;
        // (`states` has an entry for every resource the batch names.)
        let mut alive: std::collections::HashMap<String, std::collections::HashMap<Uuid, bool>> =
            states
                .iter()
                .map(|(res, rows)| {
                    let rows = rows.iter().map(|(u, (row, _))| (*u, row.alive)).collect();
                    (res.clone(), rows)
                })
                .collect();
        // Consecutive entries on one resource go through the engine in one call (the same
        // merge as one call per entry, with the same events in the same order).
        let mut all: Vec<Change> = Vec::with_capacity(prepared.len());
        let mut runs: Vec<usize> = vec![0];
        for (index, p) in prepared.into_iter().enumerate() {
            let at = |source| StoreError::BatchEntry {
                index,
                source: Box::new(source),
            };
            let is_alive = alive
                .get(p.resource.as_str())
                .and_then(|rows| rows.get(&p.uuid))
                .copied()
                .unwrap_or(false);
            let before = all.len();
            match p.method {
                Method::SharedCreate => {
                    if is_alive {
                        return Err(at(StoreError::AlreadyExists {
                            resource: p.resource,
                            uuid: p.uuid,
                        }));
                    }
                    next_seq += 1;
                    all.push(Change::Op(self.create_op(
                        next_seq,
                        &p.resource,
                        p.uuid,
                        p.fields,
                    )));
                    if let Some(rows) = alive.get_mut(p.resource.as_str()) {
                        rows.insert(p.uuid, true);
                    }
                }
                Method::SharedUpdate => {
                    if !is_alive {
                        return Err(at(StoreError::NotFound {
                            resource: p.resource,
                            uuid: p.uuid,
                        }));
                    }
                    // The row as this update leaves it must stay within the bound too.
                    if let Some((row, _)) = states
                        .get(p.resource.as_str())
                        .and_then(|rows| rows.get(&p.uuid))
                    {
                        let kept = row
                            .props
                            .iter()
                            .filter(|(name, _)| !p.fields.contains_key(*name))
                            .map(|(_, (_, v))| v);
                        check_row_size(&p.resource, kept.chain(p.fields.values())).map_err(at)?;
                    }
                    for (prop, value) in p.fields {
                        next_seq += 1;
                        all.push(Change::Op(self.new_op(
                            next_seq,
                            Method::SharedUpdate,
                            &p.resource,
                            Some(p.uuid),
                            Some(prop),
                            Some(value),
                            BTreeMap::new(),
                        )));
                    }
                }
                _ => {
                    if !is_alive {
                        return Err(at(StoreError::NotFound {
                            resource: p.resource,
                            uuid: p.uuid,
                        }));
                    }
                    next_seq += 1;
                    all.push(Change::Op(self.new_op(
                        next_seq,
                        Method::SharedDelete,
                        &p.resource,
                        Some(p.uuid),
                        None,
                        None,
                        BTreeMap::new(),
                    )));
                    if let Some(rows) = alive.get_mut(p.resource.as_str()) {
                        rows.insert(p.uuid, false);
                    }
                }
            }
            // This entry's ops start a new run when the resource changes.
            let run_start = *runs.last().unwrap_or(&0);
            if before > run_start
                && before < all.len()
                && all[run_start].op().resource != all[before].op().resource
            {
                runs.push(before);
            }
            out.uuids.push(p.uuid);
        }
        runs.push(all.len());
        let (chain, proofs) = self.sign(&mut tx, all.iter().map(Change::op));
        for run in runs.windows(2) {
            if run[0] == run[1] {
                continue;
            }
            let (conn, vv) = tx.parts();
            let mode = Mode::Local {
                preloaded: Some(&mut states),
            };
            let res =
                engine::apply(conn, self.registry, &all[run[0]..run[1]], mode, vv, &chain).await?;
            out.events.extend(res.events);
        }
        out.proofs = proofs;
        out.ops = all
            .into_iter()
            .filter_map(|c| match c {
                Change::Op(op) => Some(op),
                Change::OwnedRows { .. } => None,
            })
            .collect();
        tx.commit(|| out.commit()).await?;
        Ok(out)
    }

    /// The fast path of [`Store::batch`] for a batch of creates of distinct rows: the rows
    /// are inserted where none of them is known here (live, dead, or from updates), with no
    /// read. Not tried for any other batch.
    async fn try_new_rows(
        &self,
        tx: &mut WriteTx<'_>,
        prepared: Vec<Prepared>,
    ) -> Result<NewRows, StoreError> {
        let mut seen = std::collections::HashSet::with_capacity(prepared.len());
        let creates_of_distinct_rows = prepared.iter().all(|p| {
            p.method == Method::SharedCreate && seen.insert((p.resource.as_str(), p.uuid))
        });
        if prepared.is_empty() || !creates_of_distinct_rows {
            return Ok(NewRows::NotTried(prepared));
        }
        let mut seq = tx.vv().contiguous(&self.client);
        let changes: Vec<Change> = prepared
            .into_iter()
            .map(|p| {
                seq += 1;
                Change::Op(self.create_op(seq, &p.resource, p.uuid, p.fields))
            })
            .collect();
        let tip = tx.tip();
        let (chain, proofs) = self.sign(tx, changes.iter().map(Change::op));
        let (conn, vv) = tx.parts();
        match engine::insert_new_rows(conn, self.registry, &changes, vv, &chain).await? {
            Some(res) => {
                let ops: Vec<Op> = changes.into_iter().map(Change::into_op).collect();
                Ok(NewRows::Done(WriteOutcome {
                    uuids: ops.iter().filter_map(|op| op.uuid).collect(),
                    ops,
                    events: res.events,
                    owned_rows: Vec::new(),
                    proofs,
                }))
            }
            None => {
                tx.set_tip(tip);
                Ok(NewRows::Known(
                    changes
                        .into_iter()
                        .map(|c| {
                            let op = c.into_op();
                            Prepared {
                                uuid: op.uuid.unwrap_or_default(),
                                resource: op.resource,
                                fields: op.fields,
                                method: op.method,
                            }
                        })
                        .collect(),
                ))
            }
        }
    }

    /// Chains and signs `ops` (this author's next ops, in seq order) from the
    /// transaction's tip, and moves the tip past them.
    fn sign<'o>(
        &self,
        tx: &mut WriteTx<'_>,
        ops: impl Iterator<Item = &'o Op>,
    ) -> (Chain, Vec<Proof>) {
        let mut ops = ops.peekable();
        let first = ops.peek().map_or(1, |op| op.seq);
        let mut signing = Signing::new(self.signer, tx.tip(), first);
        let mut owned = false;
        for op in ops {
            owned |= matches!(op.method, Method::OwnedBatchCreate | Method::OwnedDelete);
            signing.add(op);
        }
        let (mut chain, proofs, tip) = signing.finish();
        tx.set_tip(tip);
        // Only owned rows need authors' devices (their owners).
        if owned {
            chain.devices = tx.devices();
        }
        (chain, proofs)
    }

    fn prepare_entry(&self, e: BatchEntry) -> Result<Prepared, StoreError> {
        let (resource, uuid, fields, method) = match e {
            BatchEntry::Create {
                resource,
                uuid,
                fields,
            } => (resource, uuid, Some(fields), Method::SharedCreate),
            BatchEntry::Update {
                resource,
                uuid,
                fields,
            } => (resource, Some(uuid), Some(fields), Method::SharedUpdate),
            BatchEntry::Delete { resource, uuid } => {
                (resource, Some(uuid), None, Method::SharedDelete)
            }
        };
        let def = self.shared_def(&resource)?;
        let fields = match fields {
            Some(f) => convert_fields(def, &f)?,
            None => BTreeMap::new(),
        };
        check_row_size(&resource, fields.values())?;
        if method != Method::SharedDelete && fields.is_empty() {
            return Err(StoreError::Invalid(format!(
                "a create or update needs at least one field of `{resource}`"
            )));
        }
        let uuid = match (uuid, &def.uuid_from) {
            (Some(u), _) => u,
            (None, Some(cols)) => derive_uuid(def, cols, &fields)?,
            (None, None) => Uuid::now_v7(),
        };
        let mut fields = fields;
        if method == Method::SharedCreate {
            // A create sets every column: the engine gives those it does not name Null at
            // its time. The op names them all, so that a build that does not know a column
            // keeps the op, and sets the column when it is upgraded.
            for c in &def.columns {
                fields.entry(c.name.clone()).or_insert(Value::Null);
            }
        }
        Ok(Prepared {
            resource,
            uuid,
            fields,
            method,
        })
    }

    fn shared_def(&self, resource: &str) -> Result<&ResourceDef, StoreError> {
        let def = self.registry.get(resource)?;
        if def.kind != Kind::Shared {
            return Err(StoreError::WrongKind {
                resource: resource.to_owned(),
                expected: "shared",
                actual: "owned",
            });
        }
        Ok(def)
    }

    fn owned_def(&self, resource: &str) -> Result<&ResourceDef, StoreError> {
        let def = self.registry.get(resource)?;
        if def.kind != Kind::Owned {
            return Err(StoreError::WrongKind {
                resource: resource.to_owned(),
                expected: "owned",
                actual: "shared",
            });
        }
        Ok(def)
    }

    fn create_op(
        &self,
        seq: u64,
        resource: &str,
        uuid: Uuid,
        fields: BTreeMap<String, Value>,
    ) -> Op {
        self.new_op(
            seq,
            Method::SharedCreate,
            resource,
            Some(uuid),
            None,
            None,
            fields,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn new_op(
        &self,
        seq: u64,
        method: Method,
        resource: &str,
        uuid: Option<Uuid>,
        property: Option<String>,
        value: Option<Value>,
        fields: BTreeMap<String, Value>,
    ) -> Op {
        let ts = self.clock.now();
        Op {
            author: self.client,
            seq,
            time: ts.time,
            method,
            resource: resource.to_owned(),
            uuid,
            property,
            value,
            fields,
            count: None,
            groups: Vec::new(),
        }
    }

    /// Checks owned rows to write (new or this client's own): each an object of fields with
    /// an optional `uuid`.
    pub(crate) fn owned_rows(
        &self,
        resource: &str,
        rows: Vec<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<(ResourceDef, Vec<OwnedRow>), StoreError> {
        let def = self.owned_def(resource)?.clone();
        let mut owned = Vec::with_capacity(rows.len());
        for (index, mut r) in rows.into_iter().enumerate() {
            let at = |source| StoreError::BatchEntry {
                index,
                source: Box::new(source),
            };
            let uuid = match r.remove("uuid") {
                None | Some(serde_json::Value::Null) => Uuid::now_v7(),
                Some(serde_json::Value::String(s)) => Uuid::parse_str(&s).map_err(|_| {
                    at(StoreError::WrongType {
                        resource: def.name.clone(),
                        field: "uuid".into(),
                        expected: "uuid",
                    })
                })?,
                Some(_) => {
                    return Err(at(StoreError::WrongType {
                        resource: def.name.clone(),
                        field: "uuid".into(),
                        expected: "uuid",
                    }));
                }
            };
            let fields = convert_fields(&def, &r).map_err(at)?;
            if fields.is_empty() {
                return Err(at(StoreError::Invalid(format!(
                    "a row needs at least one field of `{}`",
                    def.name
                ))));
            }
            let values: Vec<Value> = def
                .columns
                .iter()
                .map(|c| fields.get(&c.name).cloned().unwrap_or(Value::Null))
                .collect();
            check_row_size(&def.name, values.iter()).map_err(at)?;
            owned.push(OwnedRow { uuid, values });
        }
        if owned.is_empty() {
            return Err(StoreError::Invalid(
                "an owned batch needs at least one row".into(),
            ));
        }
        // The header commits to the rows in UUID order, each UUID once.
        let mut sorted: Vec<Uuid> = owned.iter().map(|r| r.uuid).collect();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(StoreError::Invalid(format!(
                "row {} appears twice in one batch of `{}`",
                w[0], def.name
            )));
        }
        Ok((def, owned))
    }

    /// Writes owned rows checked by [`Local::owned_rows`] (each UUID once) with ONE
    /// `OwnedBatchCreate` op, whose groups commit to the rows.
    pub(crate) async fn write_owned(
        &self,
        def: ResourceDef,
        mut rows: Vec<OwnedRow>,
    ) -> Result<WriteOutcome, StoreError> {
        let uuids: Vec<Uuid> = rows.iter().map(|r| r.uuid).collect();
        // Hashing needs no lock.
        rows.sort_by_key(|r| r.uuid);
        let groups = row_groups(&rows);
        let mut tx = self.writer.begin().await?;
        let mut op = self.new_op(
            tx.vv().contiguous(&self.client) + 1,
            Method::OwnedBatchCreate,
            &def.name,
            None,
            None,
            None,
            BTreeMap::new(),
        );
        op.count = Some(rows.len() as u64);
        op.groups = groups;
        let change = Change::OwnedRows {
            header: op.clone(),
            rows,
            last: true,
            first_group: 0,
        };
        let (chain, proofs) = self.sign(&mut tx, std::iter::once(&op));
        let (conn, vv) = tx.parts();
        let local = Mode::Local { preloaded: None };
        let res = engine::apply(
            conn,
            self.registry,
            std::slice::from_ref(&change),
            local,
            vv,
            &chain,
        )
        .await?;
        // Rows that exist must be ours: the engine refused the batch otherwise, and the
        // transaction is dropped (rolled back) with this error.
        if let Some((uuid, owner)) = res.not_owner {
            return Err(StoreError::NotOwner {
                resource: def.name.clone(),
                uuid,
                owner,
                author: self.client,
            });
        }
        let owned_rows = match change {
            Change::OwnedRows { rows, .. } => rows,
            Change::Op(_) => Vec::new(),
        };
        let out = WriteOutcome {
            uuids,
            ops: vec![op],
            events: res.events,
            owned_rows,
            proofs,
        };
        tx.commit(|| out.commit()).await?;
        Ok(out)
    }

    /// Deletes one of this client's owned rows.
    pub(crate) async fn delete_owned(
        &self,
        resource: &str,
        uuid: Uuid,
    ) -> Result<WriteOutcome, StoreError> {
        let def = self.owned_def(resource)?;
        {
            let mut tx = self.writer.begin().await?;
            let owners = owned_owners(tx.conn(), &def.name, &[uuid]).await?;
            match owners.first() {
                None => {
                    return Err(StoreError::NotFound {
                        resource: def.name.clone(),
                        uuid,
                    });
                }
                Some((_, owner)) if *owner != self.signer.device() => {
                    return Err(StoreError::NotOwner {
                        resource: def.name.clone(),
                        uuid,
                        owner: *owner,
                        author: self.client,
                    });
                }
                Some(_) => {}
            }
            let op = self.new_op(
                tx.vv().contiguous(&self.client) + 1,
                Method::OwnedDelete,
                &def.name,
                Some(uuid),
                None,
                None,
                BTreeMap::new(),
            );
            let changes = vec![Change::Op(op.clone())];
            let (chain, proofs) = self.sign(&mut tx, std::iter::once(&op));
            let (conn, vv) = tx.parts();
            let local = Mode::Local { preloaded: None };
            let res = engine::apply(conn, self.registry, &changes, local, vv, &chain).await?;
            let out = WriteOutcome {
                uuids: vec![uuid],
                ops: vec![op],
                events: res.events,
                owned_rows: Vec::new(),
                proofs,
            };
            tx.commit(|| out.commit()).await?;
            Ok(out)
        }
    }
}

/// What [`Local::try_new_rows`] did.
enum NewRows {
    /// The batch is written (not yet committed).
    Done(WriteOutcome),
    /// Not a batch of new rows: the entries, untouched.
    NotTried(Vec<Prepared>),
    /// A row is known here: the entries back, and the transaction must be rolled back.
    Known(Vec<Prepared>),
}

struct Prepared {
    resource: String,
    uuid: Uuid,
    fields: BTreeMap<String, Value>,
    method: Method,
}

pub(crate) fn unwrap_single(e: StoreError) -> StoreError {
    match e {
        StoreError::BatchEntry { source, .. } => *source,
        other => other,
    }
}

/// Refuses a row whose values take more than [`MAX_ROW_BYTES`] (by [`Value::wire_size`]).
fn check_row_size<'a>(
    resource: &str,
    values: impl Iterator<Item = &'a Value>,
) -> Result<(), StoreError> {
    let size: usize = values.map(Value::wire_size).sum();
    if size > MAX_ROW_BYTES {
        return Err(StoreError::TooLarge {
            resource: resource.to_owned(),
            size,
            limit: MAX_ROW_BYTES,
        });
    }
    Ok(())
}

/// Converts API fields to column values, refusing unknown fields and wrong types.
fn convert_fields(
    def: &ResourceDef,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<BTreeMap<String, Value>, StoreError> {
    let mut out = BTreeMap::new();
    for (name, json) in fields {
        let col = def.column(name)?;
        out.insert(
            name.clone(),
            Value::from_json(&def.name, name, col.ty, json)?,
        );
    }
    Ok(out)
}

fn derive_uuid(
    def: &ResourceDef,
    cols: &[String],
    fields: &BTreeMap<String, Value>,
) -> Result<Uuid, StoreError> {
    let mut key = String::new();
    for c in cols {
        let v = fields.get(c).and_then(Value::as_text).ok_or_else(|| {
            StoreError::Invalid(format!("`{}` needs `{c}` to derive its row UUID", def.name))
        })?;
        key.push_str(v);
        key.push('\u{1f}');
    }
    Ok(Uuid::new_v5(
        &UUID_NAMESPACE,
        format!("{}\u{1e}{key}", def.name).as_bytes(),
    ))
}

/// The registers of every row `entries` name, per resource (rows stored nowhere are absent).
/// Resource names were checked against the registry.
async fn load_named_rows(
    conn: &mut SqliteConnection,
    registry: &Registry,
    entries: &[Prepared],
) -> Result<engine::Preloaded, StoreError> {
    let mut by_resource: BTreeMap<&str, std::collections::BTreeSet<Uuid>> = BTreeMap::new();
    for p in entries {
        by_resource.entry(&p.resource).or_default().insert(p.uuid);
    }
    let mut out = engine::Preloaded::new();
    for (resource, uuids) in by_resource {
        let def = registry.get(resource)?;
        let uuids: Vec<Uuid> = uuids.into_iter().collect();
        out.insert(
            resource.to_owned(),
            engine::load_shared(conn, def, &uuids).await?,
        );
    }
    Ok(out)
}

async fn owned_owners(
    conn: &mut SqliteConnection,
    table: &str,
    uuids: &[Uuid],
) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
    let mut out = Vec::new();
    for chunk in uuids.chunks(rows_per_statement(1)) {
        let sql = format!(
            "SELECT uuid, owner FROM {table} WHERE uuid IN ({})",
            in_list(chunk.len())
        );
        let mut q = query(sql);
        for u in chunk {
            q = q.bind(u.hyphenated().to_string());
        }
        for r in q.fetch_all(&mut *conn).await? {
            out.push((
                parse_uuid(&r.try_get::<String, _>(0)?)?,
                parse_uuid(&r.try_get::<String, _>(1)?)?,
            ));
        }
    }
    Ok(out)
}
